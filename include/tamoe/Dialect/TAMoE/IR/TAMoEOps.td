//===- TAMoEOps.td - tamoe operations ----------------------*- tablegen -*-===//

#ifndef TAMOE_DIALECT_TAMOE_IR_TAMOEOPS_TD
#define TAMOE_DIALECT_TAMOE_IR_TAMOEOPS_TD

include "tamoe/Dialect/TAMoE/IR/TAMoEDialect.td"
include "tamoe/Dialect/TAMoE/IR/TAMoEAttrs.td"
include "tamoe/Dialect/TAMoE/IR/VJPOpInterface.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

class TAMoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<TAMoE_Dialect, mnemonic, traits>;

def TAMoE_GateOp : TAMoE_Op<"gate", [Pure, DeclareOpInterfaceMethods<TAMoE_VJPOpInterface>]> {
  let summary = "Router: scores, top-k experts and combine weights per token";
  let description = [{
    Turns router logits `[S, E]` (S tokens of this rank, E experts) into
    scores with the score function (`softmax` over the experts, or an
    element-wise `sigmoid` as in DeepSeek-V3), and picks the `k` experts
    with the highest scores for each token.

    Results: `expert_ids` `[S, k]` (ordered by descending score),
    `weights` `[S, k]` (the chosen scores, divided by their sum per token
    plus 1e-20 when `renormalize` is set: a token whose chosen sigmoid
    scores all underflow to 0 gets weights 0, as in DeepSeek-V3) and `probs` `[S, E]` (all scores, used by the
    auxiliary loss).

    Group-limited routing (`groups G keep M`, DeepSeek-V3's node-limited
    routing when the groups are the nodes): the experts form G equal groups
    of consecutive ids; each token first keeps the M groups with the
    highest group score (sum of the group's top-2 scores, or its top score
    when a group holds one expert) and picks its k experts among them.

    A planned layer carries its `#tamoe.dispatch_plan` as `plan`.

    Lowers to linalg/tensor/math (softmax, top-k) or to the runtime's gate.

    ```mlir
    %ids, %weights, %probs = tamoe.gate %logits top 2 softmax renormalize
        : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    %ids2, %w2, %p2 = tamoe.gate %logits top 2 sigmoid groups 4 keep 2
        : tensor<16x8xf32> -> tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyFloat]>:$logits,
    I64Attr:$k,
    TAMoE_ScoreFunction:$score,
    UnitAttr:$renormalize,
    OptionalAttr<I64Attr>:$num_groups,
    OptionalAttr<I64Attr>:$groups_kept,
    OptionalAttr<TAMoE_DispatchPlanAttr>:$plan
  );
  let results = (outs
    2DTensorOf<[AnySignlessInteger]>:$expert_ids,
    2DTensorOf<[AnyFloat]>:$weights,
    2DTensorOf<[AnyFloat]>:$probs
  );
  let assemblyFormat = [{
    $logits `top` $k $score (`renormalize` $renormalize^)?
    (`groups` $num_groups^ `keep` $groups_kept)? attr-dict
    `:` type($logits) `->` type($expert_ids) `,` type($weights) `,`
    type($probs)
  }];
  let hasVerifier = 1;
}

def TAMoE_DispatchOp : TAMoE_Op<"dispatch", [Pure, DeclareOpInterfaceMethods<TAMoE_VJPOpInterface>]> {
  let summary = "Lay tokens out by destination expert";
  let description = [{
    Copies each (token, expert) assignment's row of `tokens` `[S, H]` into
    `dispatched`, grouped by expert id in increasing order (so by
    destination rank too, since experts are numbered rank-major), and
    within one expert by token index. `expert_counts` `[E]` holds the rows
    of each expert; valid rows are packed at the front of `dispatched`,
    any rows past their sum are padding. `positions` `[S, k]` gives the row
    of each assignment in `dispatched`, or -1 when it was dropped;
    `num_dropped` counts the dropped assignments. Nothing is dropped
    silently: every assignment is either in `dispatched` or marked -1.

    Capacity bounds the rows this rank sends to one expert: `capacity C`
    explicitly, or `capacity_factor f` for C = ceil(f * S * k / E). Without
    either the layer is dropless. Over capacity, `drop position` (the
    default) keeps the earliest tokens; `drop probability` keeps the
    assignments with the highest `weights` `[S, k]`, which it then needs.

    The rows of `dispatched` are S * k when dropless and min(S * k, E * C)
    with a capacity.

    ```mlir
    %rows, %counts, %positions, %dropped = tamoe.dispatch %tokens, %ids
        capacity_factor 1.250000e+00
        : tensor<16x64xf32>, tensor<16x2xi32>
        -> tensor<32x64xf32>, tensor<8xi32>, tensor<16x2xi32>, tensor<i64>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyType]>:$tokens,
    2DTensorOf<[AnySignlessInteger]>:$expert_ids,
    Optional<2DTensorOf<[AnyFloat]>>:$weights,
    OptionalAttr<I64Attr>:$capacity,
    OptionalAttr<F64Attr>:$capacity_factor,
    OptionalAttr<TAMoE_DropPolicy>:$drop_policy,
    OptionalAttr<TAMoE_DispatchPlanAttr>:$plan
  );
  let results = (outs
    2DTensorOf<[AnyType]>:$dispatched,
    1DTensorOf<[AnySignlessInteger]>:$expert_counts,
    2DTensorOf<[AnySignlessInteger]>:$positions,
    0DTensorOf<[I64]>:$num_dropped
  );
  let assemblyFormat = [{
    $tokens `,` $expert_ids (`weights` $weights^)?
    (`capacity` $capacity^)? (`capacity_factor` $capacity_factor^)?
    (`drop` $drop_policy^)? attr-dict
    `:` type($tokens) `,` type($expert_ids) (`,` type($weights)^)?
    `->` type($dispatched) `,` type($expert_counts) `,` type($positions) `,`
    type($num_dropped)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The per-expert capacity for `numTokens` tokens, if the op has one.
    std::optional<int64_t> getCapacityFor(int64_t numTokens);
  }];
}

def TAMoE_AllToAllOp : TAMoE_Op<"all_to_all", [
    Pure, AllTypesMatch<["send_counts", "recv_counts"]>,
    OptionalTypesMatchWith<"expected counts have the type of send_counts",
                           "send_counts", "expected_counts", "$_self">,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>, DeclareOpInterfaceMethods<TAMoE_VJPOpInterface>]> {
  let summary = "Variable-count exchange among the ranks of a group";
  let description = [{
    Every rank of the group sends `send_counts[j]` rows of `send` to rank j
    (rows for rank 0 first, then rank 1, ...) and receives `recv_counts[i]`
    rows from rank i into `received`, in the same order. Counts may split
    each peer's rows further, in row-major order (`[P, n]`: rows for each of
    peer j's n experts; `[P, N, n]` in the de-duplicated dispatch); the
    received counts then have the same split, by source rank.

    The group is the set of ranks of the `shard.grid` named by `on`, over
    the grid axes `axes` (all axes when absent): the same notation the
    upstream `shard` dialect uses, so compilers that partition with `shard`
    name the expert-parallel group the same way. Upstream
    `shard.all_to_all` splits a tensor into equal parts and cannot express
    counts known only at run time, hence this op.

    The first dimension of `send` and `received` is a row capacity: valid
    rows are packed at the front, the rest is padding. After the
    hierarchical rewrite each stage names the topology `level` it runs over.

    `expecting` gives the counts this rank will receive when the program
    already knows them: the exchange back of an earlier one receives what
    that one sent (its send counts), so the reverse exchange that
    tamoe-differentiate builds names them. A receive buffer of dynamic size
    is then sized from their sum on this rank, without a counts round with
    the peers. They must have the type of `send_counts`; were more rows to
    arrive than they promise, the exchange fails on every rank rather than
    write past the buffer.

    ```mlir
    shard.grid @ep(shape = 2x4)
    %recv, %recv_counts = tamoe.all_to_all %rows, %counts on @ep
        : tensor<32x64xf32>, tensor<8xi32> -> tensor<?x64xf32>
    %intra, %intra_counts = tamoe.all_to_all %rows, %node_counts on @ep
        axes = [1] level "node"
        : tensor<32x64xf32>, tensor<4xi32> -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins
    AnyRankedTensor:$send,
    AnyRankedTensor:$send_counts,
    Optional<AnyRankedTensor>:$expected_counts,
    FlatSymbolRefAttr:$grid,
    OptionalAttr<DenseI16ArrayAttr>:$grid_axes,
    OptionalAttr<StrAttr>:$level
  );
  let results = (outs
    AnyRankedTensor:$received,
    AnyRankedTensor:$recv_counts
  );
  let assemblyFormat = [{
    $send `,` $send_counts (`expecting` $expected_counts^)? `on` $grid
    (`axes` `=` $grid_axes^)? (`level` $level^)? attr-dict
    `:` type($send) `,` type($send_counts) `->` type($received)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The grid axes of the group: `axes`, or every axis of a grid of
    /// `gridRank` axes when the op names none.
    ::llvm::SmallVector<int16_t> getGroupAxes(int64_t gridRank);
  }];
}

def TAMoE_RegroupOp : TAMoE_Op<"regroup", [Pure, DeclareOpInterfaceMethods<TAMoE_VJPOpInterface>]> {
  let summary = "Reorder chunks of rows by transposing their grid";
  let description = [{
    `rows` holds chunks of rows in the row-major order of `counts`
    `[A, B, ...]`: chunk (a, b) holds the sub-chunks `counts[a, b, ...]` in
    row-major order. The result holds the same chunks in the row-major order
    of `[B, A, ...]` (the first two dimensions transposed), each chunk's rows
    in their original order, and `regrouped_counts` is `counts` with its
    first two dimensions transposed. The first dimension of the rows is a
    row capacity, as for `tamoe.all_to_all`.

    The hierarchical all-to-all uses it between its stages: rows grouped by
    destination (node, index) become grouped by (index, node).

    ```mlir
    %r, %c = tamoe.regroup %rows, %counts
        : tensor<32x64xf32>, tensor<2x4xi32> -> tensor<32x64xf32>, tensor<4x2xi32>
    ```
  }];
  let arguments = (ins
    AnyRankedTensor:$rows,
    RankedTensorOf<[AnySignlessInteger]>:$counts
  );
  let results = (outs
    AnyRankedTensor:$regrouped,
    RankedTensorOf<[AnySignlessInteger]>:$regrouped_counts
  );
  let assemblyFormat = [{
    $rows `,` $counts attr-dict `:` type($rows) `,` type($counts) `->`
    type($regrouped) `,` type($regrouped_counts)
  }];
  let hasVerifier = 1;
}

def TAMoE_DedupPackOp : TAMoE_Op<"dedup_pack", [Pure, DeclareOpInterfaceMethods<TAMoE_VJPOpInterface>]> {
  let summary = "One row per token and destination node";
  let description = [{
    The first step of the de-duplicated dispatch (as in DeepEP): a token
    routed to several experts on one node crosses to that node once. For
    each node m in order and each token t in order, `unique` gets one copy
    of row t of `tokens` `[S, H]` when at least one of t's dispatched
    assignments (`positions[t, j]` >= 0, as `tamoe.dispatch` returned them)
    goes to an expert on node m. Row i of `routes` `[R, k]` lists those
    experts (global ids, in t's top-k order, then -1). `node_counts` `[N]`
    counts the rows for each node. Experts are numbered node-major: expert
    e lives on node e / `experts_per_node`.

    The row capacity R is at most S * min(k, N), which always suffices
    (valid rows first). A smaller one suits positions that keep fewer
    assignments, such as one part's of `tamoe.chunk_positions` (at most one
    row per kept assignment); the runtime refuses rows that do not fit.

    ```mlir
    %unique, %routes, %node_counts = tamoe.dedup_pack %tokens, %ids,
        %positions experts_per_node 4
        : tensor<16x64xf32>, tensor<16x2xi32>, tensor<16x2xi32>
        -> tensor<32x64xf32>, tensor<32x2xi32>, tensor<2xi32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyType]>:$tokens,
    2DTensorOf<[AnySignlessInteger]>:$expert_ids,
    2DTensorOf<[AnySignlessInteger]>:$positions,
    I64Attr:$experts_per_node
  );
  let results = (outs
    2DTensorOf<[AnyType]>:$unique,
    2DTensorOf<[AnySignlessInteger]>:$routes,
    1DTensorOf<[AnySignlessInteger]>:$node_counts
  );
  let assemblyFormat = [{
    $tokens `,` $expert_ids `,` $positions `experts_per_node`
    $experts_per_node attr-dict `:` type($tokens) `,` type($expert_ids) `,`
    type($positions) `->` type($unique) `,` type($routes) `,`
    type($node_counts)
  }];
  let hasVerifier = 1;
}

def TAMoE_DedupExpandOp : TAMoE_Op<"dedup_expand", [Pure, DeclareOpInterfaceMethods<TAMoE_VJPOpInterface>]> {
  let summary = "Expand de-duplicated rows into one row per expert at a relay";
  let description = [{
    Runs on the relay rank of a node after the inter-node stage of the
    de-duplicated dispatch: `unique` rows and their `routes` arrived from
    each node (`counts` `[N]` rows per source node, in node order). The
    result has one row per listed expert, ordered by the expert's local
    index d on this node, then source node s, then expert id, then arrival
    order; `expanded_counts[d, s, e mod n]` `[L, N, n]` counts them (L ranks
    per node, n = `experts_per_rank`; expert e lives on local index
    (e / n) mod L). The intra-node all-to-all that follows hands every
    rank its rows; regrouped by source rank they are exactly the rows that a
    flat exchange of `tamoe.dispatch`'s layout delivers.

    ```mlir
    %rows, %counts = tamoe.dedup_expand %unique, %routes, %node_counts
        experts_per_rank 1
        : tensor<?x64xf32>, tensor<?x2xi32>, tensor<2xi32>
        -> tensor<?x64xf32>, tensor<4x2x1xi32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyType]>:$unique,
    2DTensorOf<[AnySignlessInteger]>:$routes,
    1DTensorOf<[AnySignlessInteger]>:$counts,
    I64Attr:$experts_per_rank
  );
  let results = (outs
    2DTensorOf<[AnyType]>:$expanded,
    3DTensorOf<[AnySignlessInteger]>:$expanded_counts
  );
  let assemblyFormat = [{
    $unique `,` $routes `,` $counts `experts_per_rank` $experts_per_rank
    attr-dict `:` type($unique) `,` type($routes) `,` type($counts) `->`
    type($expanded) `,` type($expanded_counts)
  }];
  let hasVerifier = 1;
}

def TAMoE_GroupedMatmulOp : TAMoE_Op<"grouped_matmul", [Pure, DeclareOpInterfaceMethods<TAMoE_VJPOpInterface>]> {
  let summary = "Each chunk of rows times its expert's weight matrix";
  let description = [{
    The experts of a rank applied to the rows it received: `rows` `[R, H]`
    holds chunks in the row-major order of `counts` (`[P, n]` after an
    all-to-all with counts per peer and local expert, or `[n]`), and a
    chunk of local expert l is multiplied by `weights[l]` `[H, F]`. The
    result `[R, F]` keeps the row order; rows past the counts' sum (the
    capacity's padding) are zero. One op rather than a loop of matmuls so
    that a runtime can run it as one grouped GEMM, on the device that holds
    the rows.

    ```mlir
    %h = tamoe.grouped_matmul %recv, %recv_counts, %w1
        : tensor<?x32xf32>, tensor<8x2xi32>, tensor<2x32x64xf32>
        -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyFloat]>:$rows,
    RankedTensorOf<[AnySignlessInteger]>:$counts,
    3DTensorOf<[AnyFloat]>:$weights
  );
  let results = (outs 2DTensorOf<[AnyFloat]>:$result);
  let assemblyFormat = [{
    $rows `,` $counts `,` $weights attr-dict `:` type($rows) `,`
    type($counts) `,` type($weights) `->` type($result)
  }];
  let hasVerifier = 1;
}

def TAMoE_CombineOp : TAMoE_Op<"combine", [Pure, DeclareOpInterfaceMethods<TAMoE_VJPOpInterface>]> {
  let summary = "Weighted un-permutation of expert outputs into token order";
  let description = [{
    The inverse of `tamoe.dispatch`: row t of the result is
    sum over j of `weights[t, j] * expert_outputs[positions[t, j]]`,
    skipping the assignments whose position is -1 (dropped); a token with
    every assignment dropped gets a zero row (the residual connection
    around the layer carries it).

    Without `weights` every weight is 1: the sum of a token's rows, which
    is the gradient of `tamoe.dispatch` (the transpose of its row gather).

    ```mlir
    %out = tamoe.combine %expert_rows, %positions, %weights
        : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32>
        -> tensor<16x64xf32>
    %d_tokens = tamoe.combine %d_rows, %positions
        : tensor<32x64xf32>, tensor<16x2xi32> -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyFloat]>:$expert_outputs,
    2DTensorOf<[AnySignlessInteger]>:$positions,
    Optional<2DTensorOf<[AnyFloat]>>:$weights
  );
  let results = (outs 2DTensorOf<[AnyFloat]>:$combined);
  let assemblyFormat = [{
    $expert_outputs `,` $positions (`,` $weights^)? attr-dict
    `:` type($expert_outputs) `,` type($positions) (`,` type($weights)^)?
    `->` type($combined)
  }];
  let hasVerifier = 1;
}

def TAMoE_AuxLossOp : TAMoE_Op<"aux_loss", [Pure, AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<TAMoE_VJPOpInterface>]> {
  let summary = "Load-balancing auxiliary loss of a router";
  let description = [{
    With `probs` `[S, E]` and `expert_ids` `[S, k]` of this rank, f_e the
    fraction of the k * S assignments routed to expert e and P_e the mean
    of `probs[:, e]`:

    - `switch`: L = E * sum_e f_e * P_e (Switch Transformer / GShard),
      minimised by the uniform pattern;
    - `topology`: L = E * sum_e w_e * f_e * P_e with this rank's
      `weights` `[E]`, w_e = 1 / (E * q_e) where q_e is the target share of
      expert e in this rank's plan row. With a uniform plan w = 1 and the
      loss equals `switch` exactly; otherwise the router is stationary when
      f matches the plan (see `docs/design.md`).

    Assignments whose expert id is negative are not counted, nor, with
    `dispatched` (a `tamoe.dispatch`'s `positions` `[S, k]`), those the
    dispatch dropped (position -1): with a capacity the loss then sees what
    was sent. k is at least 1, `weights` have the element type of `probs`,
    and without tokens (S = 0) the loss is 0. f is held constant in the
    gradient (counts are not differentiable); `probs` and, where they are
    computed rather than the plan's constants, `weights` get one.

    ```mlir
    %l = tamoe.aux_loss switch %probs, %ids
        : tensor<16x8xf32>, tensor<16x2xi32> -> tensor<f32>
    %t = tamoe.aux_loss topology %probs, %ids weights %w dispatched %pos
        : tensor<16x8xf32>, tensor<16x2xi32>, tensor<8xf32>, tensor<16x2xi32>
        -> tensor<f32>
    ```
  }];
  let arguments = (ins
    TAMoE_AuxLossKind:$kind,
    2DTensorOf<[AnyFloat]>:$probs,
    2DTensorOf<[AnySignlessInteger]>:$expert_ids,
    Optional<1DTensorOf<[AnyFloat]>>:$expert_weights,
    Optional<2DTensorOf<[AnySignlessInteger]>>:$positions
  );
  let results = (outs 0DTensorOf<[AnyFloat]>:$loss);
  let assemblyFormat = [{
    $kind $probs `,` $expert_ids (`weights` $expert_weights^)?
    (`dispatched` $positions^)? attr-dict
    `:` type($probs) `,` type($expert_ids) ``
    custom<OptionalOperandTypes>(ref($expert_weights), type($expert_weights),
                                 ref($positions), type($positions))
    `->` type($loss)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//
//
// What the gradient rules of the ops above emit, besides forward ops (the
// gradient of a dispatch is an unweighted combine, that of an all-to-all the
// reverse all-to-all, that of a regroup the reverse regroup). Each takes the
// forward values its gradient needs and the gradients of the forward op's
// results. docs/autodiff.md derives them.

def TAMoE_GateGradOp : TAMoE_Op<"gate_grad", [Pure, AttrSizedOperandSegments]> {
  let summary = "Gradient of tamoe.gate with respect to the router logits";
  let description = [{
    From the gate's results `probs` `[S, E]` and `expert_ids` `[S, k]` and
    the gradients of its `weights` (`d_weights` `[S, k]`) and `probs`
    (`d_probs` `[S, E]`), at least one of them: the gradient of the logits.
    Top-k selection and group limits are piecewise constant, so a weight's
    gradient reaches its chosen score only (through the renormalisation when
    `renormalize` is set), then the logits through the softmax (over all
    experts) or the sigmoid (elementwise). Expert ids get no gradient.

    ```mlir
    %d_logits = tamoe.gate_grad %probs, %ids softmax renormalize
        d_weights %d_w d_probs %d_p
        : tensor<16x8xf32>, tensor<16x2xi32>, tensor<16x2xf32>,
          tensor<16x8xf32> -> tensor<16x8xf32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyFloat]>:$probs,
    2DTensorOf<[AnySignlessInteger]>:$expert_ids,
    TAMoE_ScoreFunction:$score,
    UnitAttr:$renormalize,
    Optional<2DTensorOf<[AnyFloat]>>:$d_weights,
    Optional<2DTensorOf<[AnyFloat]>>:$d_probs
  );
  let results = (outs 2DTensorOf<[AnyFloat]>:$d_logits);
  let assemblyFormat = [{
    $probs `,` $expert_ids $score (`renormalize` $renormalize^)?
    (`d_weights` $d_weights^)? (`d_probs` $d_probs^)? attr-dict
    `:` type($probs) `,` type($expert_ids) ``
    custom<OptionalOperandTypes>(ref($d_weights), type($d_weights),
                                 ref($d_probs), type($d_probs))
    `->` type($d_logits)
  }];
  let hasVerifier = 1;
}

def TAMoE_CombineGradOp : TAMoE_Op<"combine_grad", [Pure]> {
  let summary = "Gradients of tamoe.combine";
  let description = [{
    For `tamoe.combine %expert_outputs, %positions, %weights` and the
    gradient `d_combined` `[S, H]` of its result:

    - `d_expert_outputs` `[R, H]`: row `positions[t, j]` gets
      `weights[t, j] * d_combined[t]` (`d_combined[t]` without weights),
      summed over the assignments naming it; other rows are zero. The
      gradient of a combine is a dispatch of the tokens' gradients to the
      rows they came from.
    - `d_weights` `[S, k]` (with weights only): the dot product of
      `d_combined[t]` and `expert_outputs[positions[t, j]]`, 0 for a dropped
      assignment.

    ```mlir
    %d_rows, %d_w = tamoe.combine_grad %d_out, %rows, %positions
        weights %weights
        : tensor<16x64xf32>, tensor<32x64xf32>, tensor<16x2xi32>,
          tensor<16x2xf32> -> tensor<32x64xf32>, tensor<16x2xf32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyFloat]>:$d_combined,
    2DTensorOf<[AnyFloat]>:$expert_outputs,
    2DTensorOf<[AnySignlessInteger]>:$positions,
    Optional<2DTensorOf<[AnyFloat]>>:$weights
  );
  let results = (outs
    2DTensorOf<[AnyFloat]>:$d_expert_outputs,
    Optional<2DTensorOf<[AnyFloat]>>:$d_weights
  );
  let assemblyFormat = [{
    $d_combined `,` $expert_outputs `,` $positions (`weights` $weights^)?
    attr-dict `:` type($d_combined) `,` type($expert_outputs) `,`
    type($positions) (`,` type($weights)^)? `->` type($d_expert_outputs)
    (`,` type($d_weights)^)?
  }];
  let hasVerifier = 1;
}

def TAMoE_GroupedMatmulGradOp : TAMoE_Op<"grouped_matmul_grad", [Pure]> {
  let summary = "Gradients of tamoe.grouped_matmul";
  let description = [{
    For `tamoe.grouped_matmul %rows, %counts, %weights` and the gradient
    `d_result` `[R, F]` of its result: `d_rows` `[R, H]`, each chunk of
    `d_result` times its expert's weights transposed (padding rows zero),
    and `d_weights` `[n, H, F]`, for each local expert the sum over its
    chunks of the chunk's rows transposed times its gradient. A result
    without uses is not computed by the runtime.

    ```mlir
    %d_rows, %d_w = tamoe.grouped_matmul_grad %rows, %counts, %w, %d_h
        : tensor<?x32xf32>, tensor<8x2xi32>, tensor<2x32x64xf32>,
          tensor<?x64xf32> -> tensor<?x32xf32>, tensor<2x32x64xf32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyFloat]>:$rows,
    RankedTensorOf<[AnySignlessInteger]>:$counts,
    3DTensorOf<[AnyFloat]>:$weights,
    2DTensorOf<[AnyFloat]>:$d_result
  );
  let results = (outs
    2DTensorOf<[AnyFloat]>:$d_rows,
    3DTensorOf<[AnyFloat]>:$d_weights
  );
  let assemblyFormat = [{
    $rows `,` $counts `,` $weights `,` $d_result attr-dict `:` type($rows)
    `,` type($counts) `,` type($weights) `,` type($d_result) `->`
    type($d_rows) `,` type($d_weights)
  }];
  let hasVerifier = 1;
}

def TAMoE_AuxLossGradOp : TAMoE_Op<"aux_loss_grad",
    [Pure, AttrSizedOperandSegments]> {
  let summary = "Gradient of tamoe.aux_loss with respect to the router "
                "probabilities";
  let description = [{
    The gradient of `tamoe.aux_loss` (same kind, `expert_ids`, `weights`
    and `dispatched` positions) times `d_loss`, with respect to `probs`
    `[S, E]`: the dispatch fractions f are piecewise constant, so every
    token's row is `d_loss * E / (k S^2) * count_e * w_e` (w = 1 for
    `switch`), with `count_e` the assignments the loss counts (dispatched
    ones only, given positions). It needs no forward probabilities.

    ```mlir
    %d_probs = tamoe.aux_loss_grad topology %ids, %d_loss weights %w
        dispatched %pos
        : tensor<16x2xi32>, tensor<f32>, tensor<8xf32>, tensor<16x2xi32>
        -> tensor<16x8xf32>
    ```
  }];
  let arguments = (ins
    TAMoE_AuxLossKind:$kind,
    2DTensorOf<[AnySignlessInteger]>:$expert_ids,
    0DTensorOf<[AnyFloat]>:$d_loss,
    Optional<1DTensorOf<[AnyFloat]>>:$expert_weights,
    Optional<2DTensorOf<[AnySignlessInteger]>>:$positions
  );
  let results = (outs 2DTensorOf<[AnyFloat]>:$d_probs);
  let assemblyFormat = [{
    $kind $expert_ids `,` $d_loss (`weights` $expert_weights^)?
    (`dispatched` $positions^)? attr-dict
    `:` type($expert_ids) `,` type($d_loss) ``
    custom<OptionalOperandTypes>(ref($expert_weights), type($expert_weights),
                                 ref($positions), type($positions))
    `->` type($d_probs)
  }];
  let hasVerifier = 1;
}

def TAMoE_DedupPackGradOp : TAMoE_Op<"dedup_pack_grad", [Pure]> {
  let summary = "Gradient of tamoe.dedup_pack: the unique rows' gradients "
                "summed onto their tokens";
  let description = [{
    The transpose of `tamoe.dedup_pack %tokens, %expert_ids, %positions`:
    row t of `d_tokens` `[S, H]` is the sum of the rows of `d_unique` that
    the pack made of token t (one per node it reached, in node order); a
    token that was not sent gets a zero row.

    `experts_per_node` and `nodes` are the forward's (its node counts'
    size).

    ```mlir
    %d_tokens = tamoe.dedup_pack_grad %d_unique, %ids, %positions
        experts_per_node 4 nodes 2
        : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xi32>
        -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyFloat]>:$d_unique,
    2DTensorOf<[AnySignlessInteger]>:$expert_ids,
    2DTensorOf<[AnySignlessInteger]>:$positions,
    I64Attr:$experts_per_node,
    I64Attr:$nodes
  );
  let results = (outs 2DTensorOf<[AnyFloat]>:$d_tokens);
  let assemblyFormat = [{
    $d_unique `,` $expert_ids `,` $positions `experts_per_node`
    $experts_per_node `nodes` $nodes attr-dict `:` type($d_unique) `,`
    type($expert_ids) `,` type($positions) `->` type($d_tokens)
  }];
  let hasVerifier = 1;
}

def TAMoE_DedupExpandGradOp : TAMoE_Op<"dedup_expand_grad", [Pure]> {
  let summary = "Gradient of tamoe.dedup_expand: a reduction at the relay";
  let description = [{
    The transpose of `tamoe.dedup_expand %unique, %routes, %counts`: row i
    of `d_unique` is the sum of the rows of `d_expanded` that the expansion
    made of unique row i (one per expert of its route, in route order), so
    the relay sends one gradient row per token back across the slow level,
    as the forward sent one token row. Rows past the counts' sum are zero.
    `d_unique` has one row per unique row (the rows of the forward's
    `unique` operand). `experts_per_rank` and `ranks_per_node` are the
    forward's (the first dimension of its expanded counts).

    ```mlir
    %d_unique = tamoe.dedup_expand_grad %d_rows, %routes, %counts
        experts_per_rank 1 ranks_per_node 4
        : tensor<?x64xf32>, tensor<?x2xi32>, tensor<2xi32>
        -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyFloat]>:$d_expanded,
    2DTensorOf<[AnySignlessInteger]>:$routes,
    1DTensorOf<[AnySignlessInteger]>:$counts,
    I64Attr:$experts_per_rank,
    I64Attr:$ranks_per_node
  );
  let results = (outs 2DTensorOf<[AnyFloat]>:$d_unique);
  let assemblyFormat = [{
    $d_expanded `,` $routes `,` $counts `experts_per_rank` $experts_per_rank
    `ranks_per_node` $ranks_per_node attr-dict `:` type($d_expanded) `,`
    type($routes) `,` type($counts) `->` type($d_unique)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Scheduling: chunked and asynchronous exchanges (tamoe-overlap)
//===----------------------------------------------------------------------===//

def TAMoE_ExchangeType : TypeDef<TAMoE_Dialect, "Exchange"> {
  let mnemonic = "exchange";
  let summary = "An all-to-all in flight";
  let description = [{
    What `tamoe.all_to_all_start` returns and `tamoe.all_to_all_wait`
    completes. A value of this type stands for buffers the runtime is still
    moving, so it has exactly one use, the wait.
  }];
}

def TAMoE_AllToAllStartOp : TAMoE_Op<"all_to_all_start", [
    OptionalTypesMatchWith<"expected counts have the type of send_counts",
                           "send_counts", "expected_counts", "$_self">,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "Start a tamoe.all_to_all and return at once";
  let description = [{
    The first half of `tamoe.all_to_all` (same operands, same group): the
    exchange starts and the program goes on; `tamoe.all_to_all_wait` on the
    returned `!tamoe.exchange` yields what `tamoe.all_to_all` would have
    returned. Ops between the two run while the rows travel. Every start is
    waited on exactly once, later in the same block.

    Not `Pure`: it is a collective that every rank of the group runs in the
    same order, and its buffers are in use until the wait, so it must not be
    moved, merged or dropped by generic rewrites (tamoe-schedule-exchanges
    places it).

    ```mlir
    %x = tamoe.all_to_all_start %rows, %counts on @ep
        : tensor<32x64xf32>, tensor<8x2xi32>
    // ... compute that does not need the exchange ...
    %recv, %recv_counts = tamoe.all_to_all_wait %x
        : tensor<?x64xf32>, tensor<8x2xi32>
    ```
  }];
  let arguments = (ins
    AnyRankedTensor:$send,
    AnyRankedTensor:$send_counts,
    Optional<AnyRankedTensor>:$expected_counts,
    FlatSymbolRefAttr:$grid,
    OptionalAttr<DenseI16ArrayAttr>:$grid_axes,
    OptionalAttr<StrAttr>:$level
  );
  let results = (outs TAMoE_ExchangeType:$exchange);
  let assemblyFormat = [{
    $send `,` $send_counts (`expecting` $expected_counts^)? `on` $grid
    (`axes` `=` $grid_axes^)? (`level` $level^)? attr-dict
    `:` type($send) `,` type($send_counts)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The grid axes of the group (see AllToAllOp::getGroupAxes).
    ::llvm::SmallVector<int16_t> getGroupAxes(int64_t gridRank);
    /// The wait that completes this exchange (the verifier checks there is
    /// exactly one).
    AllToAllWaitOp getWait();
  }];
}

def TAMoE_AllToAllWaitOp : TAMoE_Op<"all_to_all_wait"> {
  let summary = "Wait for a started all-to-all and yield what it received";
  let description = [{
    Completes the exchange of a `tamoe.all_to_all_start` and yields its
    `received` rows and `recv_counts`, as `tamoe.all_to_all` defines them.
    The types follow the start's: rows of `send`'s row shape and element
    type, counts of `send_counts`' type.
  }];
  let arguments = (ins TAMoE_ExchangeType:$exchange);
  let results = (outs
    AnyRankedTensor:$received,
    AnyRankedTensor:$recv_counts
  );
  let assemblyFormat = [{
    $exchange attr-dict `:` type($received) `,` type($recv_counts)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The start this wait completes, or null when the exchange does not
    /// come from one (the verifier rejects that).
    AllToAllStartOp getStart();
  }];
}

def TAMoE_ChunkOp : TAMoE_Op<"chunk", [Pure,
    AllTypesMatch<["counts", "chunk_counts"]>]> {
  let summary = "One part of every counts entry's rows";
  let description = [{
    `rows` holds blocks of rows in the row-major order of `counts` (entry i
    has `counts[i]` rows; the first dimension is a row capacity, as for
    `tamoe.all_to_all`). Every entry's block is cut into `chunks` parts, part
    c of an entry of n rows being its rows [floor(c n / chunks),
    floor((c + 1) n / chunks)). The result holds part `chunk` of every entry,
    in entry order, and `chunk_counts` their sizes. Parts may be empty.

    tamoe-overlap uses it to cut a layer's exchange along its tokens (each
    block holds the rows of one expert, in token order), so that one part's
    rows travel while another's are computed. The dispatch layout, and so
    which assignments a capacity drops, is the same for every chunk count.

    A part of an entry of n rows has at most ceil(n / chunks) of them, so
    the part of R rows in B entries fits in `partCapacity(R, B, chunks)` =
    min(R, floor((R + B (chunks - 1)) / chunks)) rows: the capacity
    tamoe-overlap gives `chunk_rows`, so that C parts take about the memory
    of the whole. A smaller capacity is valid where the counts allow it;
    the runtime refuses a part that does not fit.

    ```mlir
    %part, %part_counts = tamoe.chunk %rows, %counts chunk 1 of 4
        : tensor<32x64xf32>, tensor<8x2xi32> -> tensor<32x64xf32>
    ```
  }];
  let arguments = (ins
    AnyRankedTensor:$rows,
    RankedTensorOf<[AnySignlessInteger]>:$counts,
    I64Attr:$chunk,
    I64Attr:$chunks
  );
  let results = (outs
    AnyRankedTensor:$chunk_rows,
    RankedTensorOf<[AnySignlessInteger]>:$chunk_counts
  );
  let assemblyFormat = [{
    $rows `,` $counts `chunk` $chunk `of` $chunks attr-dict `:` type($rows)
    `,` type($counts) `->` type($chunk_rows)
  }];
  let extraClassDeclaration = [{
    /// The most rows one of `chunks` parts of `rows` rows in `entries`
    /// blocks can hold; dynamic where `rows` is.
    static int64_t partCapacity(int64_t rows, int64_t entries, int64_t chunks);
  }];
  let hasVerifier = 1;
}

def TAMoE_UnchunkOp : TAMoE_Op<"unchunk", [Pure]> {
  let summary = "Put the parts of every counts entry's rows back together";
  let description = [{
    The inverse of `tamoe.chunk`: `parts` are the C results of `tamoe.chunk`
    for chunk 0, ..., C - 1 of `counts` (or rows laid out like them, such as
    what an exchange brings back for each part), and the result holds every
    entry's block whole, in the order of `counts`.

    ```mlir
    %rows = tamoe.unchunk %p0, %p1 counts %counts
        : (tensor<32x64xf32>, tensor<32x64xf32>), tensor<8x2xi32>
        -> tensor<32x64xf32>
    ```
  }];
  let arguments = (ins
    Variadic<AnyRankedTensor>:$parts,
    RankedTensorOf<[AnySignlessInteger]>:$counts
  );
  let results = (outs AnyRankedTensor:$rows);
  let assemblyFormat = [{
    $parts `counts` $counts attr-dict `:` `(` type($parts) `)` `,`
    type($counts) `->` type($rows)
  }];
  let hasVerifier = 1;
}

def TAMoE_ChunkPositionsOp : TAMoE_Op<"chunk_positions", [Pure,
    AllTypesMatch<["positions", "chunk_positions"]>]> {
  let summary = "Where a dispatch's assignments land in one part of its rows";
  let description = [{
    `positions` and `expert_ids` `[S, k]` are a `tamoe.dispatch`'s: the row
    of each assignment among blocks of rows per expert (`expert_counts`
    `[E]`), or -1 when it was dropped. `chunk_positions` gives each
    assignment's row among part `chunk` of `chunks` of every block, as
    `tamoe.chunk` lays them out for the same counts, and -1 when the
    assignment was dropped or belongs to another part.

    tamoe-hierarchical-all-to-all uses it to de-duplicate one part of a
    chunked dispatch: `tamoe.dedup_pack` on these positions packs the
    tokens of exactly the part's assignments, once per node.

    ```mlir
    %part_positions = tamoe.chunk_positions %positions, %ids, %counts
        chunk 1 of 4 : tensor<16x2xi32>, tensor<16x2xi32>, tensor<8xi32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnySignlessInteger]>:$positions,
    2DTensorOf<[AnySignlessInteger]>:$expert_ids,
    1DTensorOf<[AnySignlessInteger]>:$expert_counts,
    I64Attr:$chunk,
    I64Attr:$chunks
  );
  let results = (outs 2DTensorOf<[AnySignlessInteger]>:$chunk_positions);
  let assemblyFormat = [{
    $positions `,` $expert_ids `,` $expert_counts `chunk` $chunk `of` $chunks
    attr-dict `:` type($positions) `,` type($expert_ids) `,`
    type($expert_counts)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

def TAMoE_AllReduceOp : TAMoE_Op<"all_reduce", [
    Pure, AllTypesMatch<["input", "result"]>,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>,
    DeclareOpInterfaceMethods<TAMoE_VJPOpInterface>]> {
  let summary = "Sum (or mean) of a tensor over the ranks of a group";
  let description = [{
    Every rank of the group gets the elementwise sum of `input` over the
    group, divided by the group's size with `average`: how the gradients of
    replicated (data-parallel) parameters are combined. The group is named
    as for `tamoe.all_to_all`. Its gradient is the same reduction of the
    result's gradient.

    ```mlir
    %g = tamoe.all_reduce %grad on @ep average : tensor<32x16xf32>
    ```
  }];
  let arguments = (ins
    RankedTensorOf<[F32]>:$input,
    FlatSymbolRefAttr:$grid,
    OptionalAttr<DenseI16ArrayAttr>:$grid_axes,
    UnitAttr:$average
  );
  let results = (outs RankedTensorOf<[F32]>:$result);
  let assemblyFormat = [{
    $input `on` $grid (`axes` `=` $grid_axes^)? (`average` $average^)?
    attr-dict `:` type($input)
  }];
  let extraClassDeclaration = [{
    /// The grid axes of the group (see AllToAllOp::getGroupAxes).
    ::llvm::SmallVector<int16_t> getGroupAxes(int64_t gridRank);
  }];
}

def TAMoE_SGDOp : TAMoE_Op<"sgd", [Pure, AllTypesMatch<["params", "grads",
    "velocity", "new_params", "new_velocity"]>]> {
  let summary = "One step of SGD with momentum";
  let description = [{
    PyTorch's SGD: g = grads + weight_decay * params, velocity = momentum *
    velocity + g, params - lr * velocity. The learning rate is an operand
    (so a schedule can change it per step). Lowered to the runtime's
    in-place update: the new values reuse the operands' buffers unless
    the old values are still read.

    ```mlir
    %p, %v = tamoe.sgd %params, %grads, %velocity lr %lr momentum 0.9
        : tensor<2x32x64xf32>
    ```
  }];
  let arguments = (ins
    RankedTensorOf<[F32]>:$params,
    RankedTensorOf<[F32]>:$grads,
    RankedTensorOf<[F32]>:$velocity,
    F32:$lr,
    DefaultValuedAttr<F32Attr, "0.0">:$momentum,
    DefaultValuedAttr<F32Attr, "0.0">:$weight_decay
  );
  let results = (outs
    RankedTensorOf<[F32]>:$new_params,
    RankedTensorOf<[F32]>:$new_velocity
  );
  let assemblyFormat = [{
    $params `,` $grads `,` $velocity `lr` $lr (`momentum` $momentum^)?
    (`weight_decay` $weight_decay^)? attr-dict `:` type($params)
  }];
  let hasVerifier = 1;
}

def TAMoE_AdamOp : TAMoE_Op<"adam", [Pure, AllTypesMatch<["params", "grads",
    "m", "v", "new_params", "new_m", "new_v"]>]> {
  let summary = "One step of Adam (AdamW's decoupled weight decay)";
  let description = [{
    m = beta1 m + (1 - beta1) g, v = beta2 v + (1 - beta2) g^2, params -
    lr * (m / (1 - beta1^step) / (sqrt(v / (1 - beta2^step)) + eps) +
    weight_decay * params), with `step` >= 1 the number of this update. The
    learning rate and step are operands. Lowered to the runtime's in-place
    update, as `tamoe.sgd`.

    ```mlir
    %p, %m2, %v2 = tamoe.adam %params, %grads, %m, %v step %step lr %lr
        : tensor<2x32x64xf32>
    ```
  }];
  let arguments = (ins
    RankedTensorOf<[F32]>:$params,
    RankedTensorOf<[F32]>:$grads,
    RankedTensorOf<[F32]>:$m,
    RankedTensorOf<[F32]>:$v,
    I64:$step,
    F32:$lr,
    DefaultValuedAttr<F32Attr, "0.9">:$beta1,
    DefaultValuedAttr<F32Attr, "0.999">:$beta2,
    DefaultValuedAttr<F32Attr, "1.0e-8">:$eps,
    DefaultValuedAttr<F32Attr, "0.0">:$weight_decay
  );
  let results = (outs
    RankedTensorOf<[F32]>:$new_params,
    RankedTensorOf<[F32]>:$new_m,
    RankedTensorOf<[F32]>:$new_v
  );
  let assemblyFormat = [{
    $params `,` $grads `,` $m `,` $v `step` $step `lr` $lr attr-dict `:`
    type($params)
  }];
  let hasVerifier = 1;
}

def TAMoE_VJPOp : TAMoE_Op<"vjp", [AttrSizedOperandSegments,
    AttrSizedResultSegments,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "Call a function and its vector-Jacobian product";
  let description = [{
    Calls `callee` on `arguments`, giving its `results`, and the gradients
    of its float tensor arguments (`gradients`, in order) for the given
    gradients of its float tensor results (`cotangents`, in order):
    forward and backward of one training step. `tamoe-differentiate`
    replaces it by calls of the callee's generated `_forward` and
    `_backward` functions (docs/autodiff.md), which a host compiler can
    also call directly.

    ```mlir
    %out, %loss, %d_x, %d_w = tamoe.vjp @layer(%x, %w)
        cotangents(%d_out, %one)
        : (tensor<16x32xf32>, tensor<32x32xf32>),
          (tensor<16x32xf32>, tensor<f32>)
        -> (tensor<16x32xf32>, tensor<f32>),
           (tensor<16x32xf32>, tensor<32x32xf32>)
    ```
  }];
  let arguments = (ins
    FlatSymbolRefAttr:$callee,
    Variadic<AnyType>:$arguments,
    Variadic<AnyType>:$cotangents
  );
  let results = (outs
    Variadic<AnyType>:$results,
    Variadic<AnyType>:$gradients
  );
  let assemblyFormat = [{
    $callee `(` $arguments `)` `cotangents` `(` $cotangents `)` attr-dict
    `:` custom<ParenTypes>(type($arguments)) `,`
    custom<ParenTypes>(type($cotangents)) `->`
    custom<ParenTypes>(type($results)) `,`
    custom<ParenTypes>(type($gradients))
  }];
}

#endif // TAMOE_DIALECT_TAMOE_IR_TAMOEOPS_TD
