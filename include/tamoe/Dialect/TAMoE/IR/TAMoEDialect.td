//===- TAMoEDialect.td - tamoe dialect definition ----------*- tablegen -*-===//

#ifndef TAMOE_DIALECT_TAMOE_IR_TAMOEDIALECT_TD
#define TAMOE_DIALECT_TAMOE_IR_TAMOEDIALECT_TD

include "mlir/IR/OpBase.td"

def TAMoE_Dialect : Dialect {
  let name = "tamoe";
  let cppNamespace = "::mlir::tamoe";
  let summary = "Topology-aware Mixture-of-Experts routing and communication";
  let description = [{
    The `tamoe` dialect describes one Mixture-of-Experts layer of a per-rank
    SPMD program at the tensor level: the router (`tamoe.gate`), the layout
    of tokens by destination expert (`tamoe.dispatch`), the variable-count
    exchange among the ranks of the expert-parallel group
    (`tamoe.all_to_all`), the weighted un-permutation (`tamoe.combine`) and
    the load-balancing loss (`tamoe.aux_loss`).

    The interconnect is described by a `#tamoe.topology` attached to the
    module as `tamoe.topology`; the expert-parallel group is an upstream
    `shard.grid` whose axes are the topology's levels, outermost first.
    A `#tamoe.dispatch_plan` records the target dispatch pattern that the
    planner chose for a layer.
  }];
  let useDefaultAttributePrinterParser = 1;
  let useDefaultTypePrinterParser = 1;
  let hasOperationAttrVerify = 1;
  let extraClassDeclaration = [{
    /// Name of the module attribute that holds the `#tamoe.topology`.
    static constexpr ::llvm::StringLiteral getTopologyAttrName() {
      return ::llvm::StringLiteral("tamoe.topology");
    }

  private:
    void registerAttributes();
  public:
  }];
}

#endif // TAMOE_DIALECT_TAMOE_IR_TAMOEDIALECT_TD
