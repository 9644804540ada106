//===- TAMoEOps.td - tamoe operations ----------------------*- tablegen -*-===//

#ifndef TAMOE_DIALECT_TAMOE_IR_TAMOEOPS_TD
#define TAMOE_DIALECT_TAMOE_IR_TAMOEOPS_TD

include "tamoe/Dialect/TAMoE/IR/TAMoEDialect.td"
include "tamoe/Dialect/TAMoE/IR/TAMoEAttrs.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

class TAMoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<TAMoE_Dialect, mnemonic, traits>;

def TAMoE_GateOp : TAMoE_Op<"gate", [Pure]> {
  let summary = "Router: scores, top-k experts and combine weights per token";
  let description = [{
    Turns router logits `[S, E]` (S tokens of this rank, E experts) into
    scores with the score function (`softmax` over the experts, or an
    element-wise `sigmoid` as in DeepSeek-V3), and picks the `k` experts
    with the highest scores for each token.

    Results: `expert_ids` `[S, k]` (ordered by descending score),
    `weights` `[S, k]` (the chosen scores, divided by their sum per token
    when `renormalize` is set) and `probs` `[S, E]` (all scores, used by the
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

def TAMoE_DispatchOp : TAMoE_Op<"dispatch", [Pure]> {
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
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
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
    FlatSymbolRefAttr:$grid,
    OptionalAttr<DenseI16ArrayAttr>:$grid_axes,
    OptionalAttr<StrAttr>:$level
  );
  let results = (outs
    AnyRankedTensor:$received,
    AnyRankedTensor:$recv_counts
  );
  let assemblyFormat = [{
    $send `,` $send_counts `on` $grid (`axes` `=` $grid_axes^)?
    (`level` $level^)? attr-dict
    `:` type($send) `,` type($send_counts) `->` type($received)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The grid axes of the group: `axes`, or every axis of a grid of
    /// `gridRank` axes when the op names none.
    ::llvm::SmallVector<int16_t> getGroupAxes(int64_t gridRank);
  }];
}

def TAMoE_RegroupOp : TAMoE_Op<"regroup", [Pure]> {
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

def TAMoE_DedupPackOp : TAMoE_Op<"dedup_pack", [Pure]> {
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

    The row capacity R is S * min(k, N) (valid rows first).

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

def TAMoE_DedupExpandOp : TAMoE_Op<"dedup_expand", [Pure]> {
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

def TAMoE_GroupedMatmulOp : TAMoE_Op<"grouped_matmul", [Pure]> {
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

def TAMoE_CombineOp : TAMoE_Op<"combine", [Pure]> {
  let summary = "Weighted un-permutation of expert outputs into token order";
  let description = [{
    The inverse of `tamoe.dispatch`: row t of the result is
    sum over j of `weights[t, j] * expert_outputs[positions[t, j]]`,
    skipping the assignments whose position is -1 (dropped); a token with
    every assignment dropped gets a zero row (the residual connection
    around the layer carries it).

    ```mlir
    %out = tamoe.combine %expert_rows, %positions, %weights
        : tensor<32x64xf32>, tensor<16x2xi32>, tensor<16x2xf32>
        -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins
    2DTensorOf<[AnyFloat]>:$expert_outputs,
    2DTensorOf<[AnySignlessInteger]>:$positions,
    2DTensorOf<[AnyFloat]>:$weights
  );
  let results = (outs 2DTensorOf<[AnyFloat]>:$combined);
  let assemblyFormat = [{
    $expert_outputs `,` $positions `,` $weights attr-dict
    `:` type($expert_outputs) `,` type($positions) `,` type($weights)
    `->` type($combined)
  }];
  let hasVerifier = 1;
}

def TAMoE_AuxLossOp : TAMoE_Op<"aux_loss", [Pure, AttrSizedOperandSegments]> {
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
    was sent.

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

#endif // TAMOE_DIALECT_TAMOE_IR_TAMOEOPS_TD
