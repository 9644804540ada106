//===- TAMoEAttrs.td - tamoe attributes --------------------*- tablegen -*-===//

#ifndef TAMOE_DIALECT_TAMOE_IR_TAMOEATTRS_TD
#define TAMOE_DIALECT_TAMOE_IR_TAMOEATTRS_TD

include "tamoe/Dialect/TAMoE/IR/TAMoEDialect.td"
include "tamoe/Dialect/TAMoE/IR/TAMoEEnums.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/BuiltinAttributes.td"

// An IEEE double. Printed in MLIR's round-trippable float syntax
// (`3.000000e+02`), so an attribute reprints exactly what it holds.
class TAMoE_F64 : APFloatParameter<"IEEE double"> {
  let parser = "::mlir::tamoe::parseF64Parameter($_parser)";
  let printer = "$_printer.printFloat($_self)";
}
def TAMoE_F64Parameter : TAMoE_F64;

// An IEEE double that is 0 unless written (and is not printed when 0).
def TAMoE_F64ParameterDefaultZero : TAMoE_F64 {
  let defaultValue = "::llvm::APFloat(0.0)";
  let comparator = "$_lhs.bitwiseIsEqual($_rhs)";
}

class TAMoE_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<TAMoE_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

def TAMoE_TopologyLevelAttr : TAMoE_Attr<"TopologyLevel", "level"> {
  let summary = "One level of a cluster's interconnect tree";
  let description = [{
    A level groups `fanout` children of the level below (level 0 groups
    ranks into nodes). The link of a level connects each child to the
    level's switch: `up_bandwidth` (child to switch) and `down_bandwidth`
    (switch to child) in GB/s (1e9 bytes per second), `latency` the
    start-up latency of an exchange that reaches the level and
    `per_message` the sender's overhead for every message it posts over it,
    in microseconds (`per_message` is 0 when not written). With `uplink = per_rank` the bandwidth is available to
    every rank below the link (one NIC per GPU); with `shared` it is the
    bandwidth of the child subtree as a whole (one NIC per node).
    Invariants are checked by the enclosing `#tamoe.topology`.

    ```mlir
    #tamoe.level<"node", fanout = 8, up_bandwidth = 3.000000e+02,
                 down_bandwidth = 3.000000e+02, latency = 3.000000e+00,
                 uplink = per_rank>
    ```
  }];
  let parameters = (ins
    StringRefParameter<"level name">:$name,
    "int64_t":$fanout,
    TAMoE_F64Parameter:$up_bandwidth,
    TAMoE_F64Parameter:$down_bandwidth,
    TAMoE_F64Parameter:$latency,
    TAMoE_F64ParameterDefaultZero:$per_message,
    EnumParameter<TAMoE_LinkSharing>:$uplink
  );
  let assemblyFormat = [{
    `<` $name `,` struct($fanout, $up_bandwidth, $down_bandwidth, $latency,
                         $per_message, $uplink) `>`
  }];
}

def TAMoE_TopologyAttr : TAMoE_Attr<"Topology", "topology"> {
  let summary = "A cluster's interconnect as a tree of levels";
  let description = [{
    The levels are listed innermost first; the number of ranks is the
    product of their fanouts. Ranks are numbered so that the ranks of one
    subtree are contiguous (rank = node * ranks_per_node + local index).
    The attribute is the in-IR form of a topology file
    (`configs/clusters/*.json`, see `docs/topology.md`); the two convert into
    each other without loss. A module names its cluster with the
    `tamoe.topology` attribute.

    ```mlir
    module attributes {tamoe.topology = #tamoe.topology<"cpu-2x4", [
        <"node", fanout = 4, up_bandwidth = 2.000000e+01,
         down_bandwidth = 2.000000e+01, latency = 1.000000e+00,
         uplink = per_rank>,
        <"cluster", fanout = 2, up_bandwidth = 5.000000e+00,
         down_bandwidth = 5.000000e+00, latency = 1.000000e+01,
         uplink = shared>]>} {}
    ```
  }];
  let parameters = (ins
    StringRefParameter<"cluster name">:$name,
    ArrayRefParameter<"TopologyLevelAttr", "levels, innermost first">:$levels,
    StringRefParameter<"where the figures come from", "\"\"">:$description
  );
  let assemblyFormat = [{
    `<` $name `,` `[` $levels `]` (`,` $description^)? `>`
  }];
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Builds the attribute from the library form of a topology.
    static TopologyAttr get(::mlir::MLIRContext *context,
                            const ::tamoe::topology::Topology &topology);
    /// The library form, used by the cost model and the planner.
    ::tamoe::topology::Topology toTopology() const;
    /// The `tamoe.topology` attribute of the module that holds `op`, or null.
    static TopologyAttr lookup(::mlir::Operation *op);
  }];
}

def TAMoE_DispatchPlanAttr : TAMoE_Attr<"DispatchPlan", "dispatch_plan"> {
  let summary = "Target dispatch pattern of an MoE layer";
  let description = [{
    The pattern p̂ gives, for every sending rank i and destination rank j,
    the fraction of i's (token, expert) assignments that should go to the
    experts on j; each row sums to 1.

    On a symmetric tree p̂[i][j] depends only on the level of the lowest
    common ancestor of i and j, so the plan stores one share per
    destination at each distance: `shares[0]` for i itself, `shares[l + 1]`
    for each rank whose lowest common ancestor with i is level l. That is
    L + 1 numbers for an L-level tree, whatever the number of ranks. Only an
    asymmetric pattern is stored densely, as `matrix` (P × P, row-major).
    `predicted_us` is the all-to-all time the cost model predicts for the
    pattern, in microseconds; `policy` names the policy that made it.

    ```mlir
    #tamoe.dispatch_plan<tamoe, shares = [0.25, 0.125, 0.0625],
                         predicted_us = 4.120000e+02>
    ```
  }];
  let parameters = (ins
    EnumParameter<TAMoE_PlanPolicy>:$policy,
    OptionalParameter<"::mlir::DenseF64ArrayAttr", "share per level">:$shares,
    OptionalParameter<"::mlir::DenseF64ArrayAttr", "dense P x P pattern">:$matrix,
    TAMoE_F64Parameter:$predicted_us
  );
  let assemblyFormat = [{
    `<` $policy `,` struct($shares, $matrix, $predicted_us) `>`
  }];
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Checks the plan against a topology: the number of shares or the size
    /// of the matrix, and that each row sums to 1. `emitError` reports.
    ::llvm::LogicalResult
    verifyAgainst(TopologyAttr topology,
                  ::llvm::function_ref<::mlir::InFlightDiagnostic()> emitError)
        const;
  }];
}

#endif // TAMOE_DIALECT_TAMOE_IR_TAMOEATTRS_TD
