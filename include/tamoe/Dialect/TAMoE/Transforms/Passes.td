//===- Passes.td - tamoe passes ----------------------------*- tablegen -*-===//

#ifndef TAMOE_DIALECT_TAMOE_TRANSFORMS_PASSES_TD
#define TAMOE_DIALECT_TAMOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def TAMoEPlanDispatchPass : Pass<"tamoe-plan-dispatch", "mlir::ModuleOp"> {
  let summary = "Plan each MoE layer's dispatch pattern for the topology";
  let description = [{
    Reads the cluster from the `topology` file (which then becomes the
    module's `tamoe.topology`) or from the module's `tamoe.topology`, and the
    sizes of each layer from its `tamoe.dispatch` (tokens, hidden size,
    element type, k). Runs the planner (`docs/cost-model.md`) with the chosen
    policy and attaches the resulting `#tamoe.dispatch_plan` to the dispatch
    and to the `tamoe.gate` that produced its expert ids. A remark gives the
    predicted all-to-all time against uniform routing. A gate whose ids
    several dispatches send (a router shared by layers, a forward computed
    again) carries their common plan with the predicted times added up;
    layers of one gate planned for different patterns are an error.

    `node-limited` routing is the gate's to do: the gate's groups become the
    topology's nodes, of which each token keeps `max-nodes`
    (`groups N keep M`; nothing when M is every node). A gate grouped
    otherwise, a limit that leaves a token fewer than k experts, or expert
    ids that no `tamoe.gate` chose are errors. Every prediction of the
    de-duplicated schedule counts the nodes a gate grouped by node lets a
    token reach.

    A module without layers needs no topology.

    The layer's expert-parallel group (the grid of the `tamoe.all_to_all`
    that sends its rows) must have as many ranks as the topology.
  }];
  let options = [
    Option<"topologyFile", "topology", "std::string", /*default=*/"\"\"",
           "Topology JSON file (default: the module's tamoe.topology)">,
    Option<"policy", "policy", "std::string", /*default=*/"\"tamoe\"",
           "uniform, tamoe, optimal, box, fastermoe or node-limited "
           "(default tamoe)">,
    Option<"klBudget", "kl-budget", "double", /*default=*/"-1.0",
           "optimal: largest KL divergence from uniform routing (default: "
           "the tamoe pattern's)">,
    Option<"rho", "rho", "double", /*default=*/"0.25",
           "box: least fraction of the uniform share per destination "
           "(default 0.25)">,
    Option<"beta", "beta", "double", /*default=*/"4.0",
           "box: largest multiple of the uniform share per destination "
           "(default 4)">,
    Option<"crossNodeCap", "cross-node-cap", "double", /*default=*/"0.14",
           "fastermoe: largest fraction of assignments leaving the node "
           "(default 0.14)">,
    Option<"maxNodes", "max-nodes", "int64_t", /*default=*/"4",
           "node-limited: nodes a token may reach; the gate keeps them "
           "(default 4)">
  ];
  let statistics = [
    Statistic<"numPlanned", "planned-layers", "MoE layers planned">
  ];
  // The module's #tamoe.topology is created even when no tamoe op was parsed.
  let dependentDialects = ["mlir::tamoe::TAMoEDialect"];
}

def TAMoEInjectTopologyAuxLossPass
    : Pass<"tamoe-inject-topology-aux-loss", "mlir::ModuleOp"> {
  let summary = "Make each layer's load-balancing loss topology-aware";
  let description = [{
    For each planned layer, builds every rank's expert weights
    w_e = 1 / (E * q_e), q_e = p̂[rank][owner(e)] / (E / P), as a `[P, E]`
    constant, selects this rank's row with a `tensor.extract_slice` at its
    index from `shard.process_multi_index` over the grid axes of the layer's
    all-to-all (the program is SPMD, and the expert-parallel group may be
    part of a larger grid), and turns the layer's `switch`
    `tamoe.aux_loss` into a `topology` one with these weights. With a uniform
    plan every weight is 1 and the loss is the `switch` loss exactly.

    The loss counts the assignments that were dispatched: when the dispatch
    has a capacity, it gets the dispatch's positions (`dispatched`), and
    dropped assignments (position -1) do not count.

    A layer without a loss gets one, scaled by `coefficient` and added to
    the function's scalar loss result (a 0-d float tensor result), or
    returned as a new result when the function has none and nothing calls
    or names it (otherwise an error asks for the loss result).

    A gate whose ids several layers dispatch gets one topology loss, from
    the first of them: their plans must be the same pattern, as
    tamoe-plan-dispatch makes them, or the pass names both.
  }];
  let options = [
    Option<"coefficient", "coefficient", "double", /*default=*/"0.01",
           "Weight of an inserted loss in the function's loss (default "
           "0.01)">
  ];
  let statistics = [
    Statistic<"numRewritten", "rewritten-losses",
              "switch losses made topology-aware">,
    Statistic<"numInserted", "inserted-losses", "losses inserted">
  ];
  let dependentDialects = [
    "mlir::arith::ArithDialect", "mlir::linalg::LinalgDialect",
    "mlir::shard::ShardDialect", "mlir::tamoe::TAMoEDialect",
    "mlir::tensor::TensorDialect"
  ];
}

def TAMoEHierarchicalAllToAllPass
    : Pass<"tamoe-hierarchical-all-to-all", "mlir::ModuleOp"> {
  let summary = "Rewrite flat all-to-alls into intra- and inter-node stages";
  let description = [{
    For each flat `tamoe.all_to_all` over a whole grid whose last axis is the
    topology's node (level 0), predicts the time of the flat exchange and of
    the hierarchical one with the layer's plan (uniform without one) and the
    layer's sizes, and rewrites where the hierarchical one is faster:

    1. `tamoe.regroup` orders the rows by destination index within the node;
    2. an all-to-all over the node axis hands each rank the rows bound for its
       index on every node (`level` = the node level);
    3. `tamoe.regroup` orders them by destination node;
    4. an all-to-all over the other axes delivers them between same-index
       ranks (`level` = the outermost level).

    Rows arrive in the flat exchange's order (by source rank), so the result
    and its counts replace the flat ones unchanged, and counts the flat
    exchange was promised (`expecting`) are stage 2's, by source node and
    index. A remark says which form
    was kept and why. `mode=flat|hierarchical` forces the choice.

    With `dedup`, the exchange that sends a `tamoe.dispatch`'s rows (top-k
    with k > 1), or one `tamoe.chunk` of them (tamoe-overlap's parts, each
    de-duplicated alone through `tamoe.chunk_positions`), may instead take
    the de-duplicated schedule, which the cost
    model then weighs too: a token crosses to each node it needs once
    (`tamoe.dedup_pack`, then the inter-node stage for the rows and their
    routes), the relay of that node expands it into one row per expert
    (`tamoe.dedup_expand`) and the intra-node stage delivers them; a
    `tamoe.regroup` restores the flat exchange's order. The return trip
    stays per expert (hierarchical or flat), since the combine weights are
    applied where the tokens live.
  }];
  let options = [
    Option<"mode", "mode", "std::string", /*default=*/"\"auto\"",
           "auto (cost model, the default), flat or hierarchical">,
    Option<"dedup", "dedup", "bool", /*default=*/"false",
           "Consider per-node de-duplication of top-k tokens for the "
           "dispatch exchange (default false)">
  ];
  let statistics = [
    Statistic<"numRewritten", "rewritten", "all-to-alls made hierarchical">,
    Statistic<"numDeduplicated", "deduplicated",
              "dispatch all-to-alls given per-node de-duplication">,
    Statistic<"numKeptFlat", "kept-flat", "all-to-alls left flat">
  ];
  let dependentDialects = [
    "mlir::tamoe::TAMoEDialect", "mlir::tensor::TensorDialect"
  ];
}

def TAMoEOverlapPass : Pass<"tamoe-overlap", "mlir::ModuleOp"> {
  let summary = "Cut each MoE layer into chunks whose exchanges overlap "
                "the experts' compute";
  let description = [{
    Finds each layer's chain: the `tamoe.all_to_all` that sends a
    `tamoe.dispatch`'s rows, the expert computation on what it received
    (`tamoe.grouped_matmul`, element-wise linalg ops such as a
    `linalg.generic` or SwiGLU's `linalg.mul`, the
    `tensor.dim`/`tensor.empty` that size them) and the `tamoe.all_to_all`
    that brings the results back. It rewrites the chain into C chunks along
    the tokens: `tamoe.chunk` takes part c of every (peer, expert) block of
    the dispatched rows (the rows of one expert are in token order), each
    part has its own exchange out, expert computation and exchange back,
    and `tamoe.unchunk` puts the returned parts back in the dispatch's
    layout. Cutting along tokens rather than along local experts works with
    one expert per rank too, and the dispatch (with its capacity drops) is
    computed once for the whole batch, so every chunk count gives the same
    bytes and drops the same assignments.

    C is `chunks`, or with `chunks=0` what the cost model predicts fastest
    in [1, max-chunks]: the exchanges' times (docs/cost-model.md) split into
    a part that shrinks with the chunk and a start-up that every chunk pays
    again, the experts' GEMM FLOPs at `device-gflops`, and
    `chunk-overhead-us` per chunk of compute, as a pipeline of the links
    and the compute. The exchanges are priced in the schedule that
    `tamoe-hierarchical-all-to-all` will give them under the same `mode`:
    flat where the exchange must stay flat, else the `mode`'s; with `auto`
    the cheaper of flat and hierarchical for the whole layer's rows (that
    pass then decides per chunk, on its part of the rows, and does not
    price de-duplication here). A remark gives the prediction for one
    chunk and for C.

    The chunks overlap once `tamoe-schedule-exchanges` splits every
    exchange into a start and a wait.
  }];
  let options = [
    Option<"chunks", "chunks", "int64_t", /*default=*/"0",
           "Chunks per layer, at most 1024; 0 lets the cost model choose "
           "(default 0)">,
    Option<"maxChunks", "max-chunks", "int64_t", /*default=*/"8",
           "Most chunks the cost model considers, in [1, 1024] (default 8)">,
    Option<"deviceGflops", "device-gflops", "double", /*default=*/"0.0",
           "GFLOP/s of one rank's expert GEMMs, in [0.001, 1e9]; 0: unknown, "
           "which the cost model cannot weigh (default 0)">,
    Option<"chunkOverheadUs", "chunk-overhead-us", "double",
           /*default=*/"10.0",
           "Microseconds each chunk of compute adds, at most 1e6 (default "
           "10)">,
    Option<"mode", "mode", "std::string", /*default=*/"\"auto\"",
           "The exchanges' schedule, as tamoe-hierarchical-all-to-all's "
           "mode: auto (the cheaper, the default), flat or hierarchical">
  ];
  let statistics = [
    Statistic<"numChunked", "chunked-layers", "layers cut into chunks">,
    Statistic<"numKept", "kept-layers", "layers left in one chunk">
  ];
  let dependentDialects = [
    "mlir::linalg::LinalgDialect", "mlir::tamoe::TAMoEDialect",
    "mlir::tensor::TensorDialect"
  ];
}

def TAMoEScheduleExchangesPass
    : Pass<"tamoe-schedule-exchanges", "mlir::ModuleOp"> {
  let summary = "Start each all-to-all as early and wait for it as late as "
                "its data allow";
  let description = [{
    Splits every `tamoe.all_to_all` into `tamoe.all_to_all_start` and
    `tamoe.all_to_all_wait`. The start goes right after the ops that define
    its operands (pure ones move up with it; never before an
    earlier exchange's start, so that the exchanges enter the network in
    the program's order, nor before an op with side effects, such as an
    assert that may stop the rank); the wait goes right before the first op that uses
    what it yields (reshapes of what it yields move down with it), or
    before an earlier op with side effects, which may write the memory of
    the rows still being sent. Ops in
    between run while the rows travel: in a chunked layer (`tamoe-overlap`),
    chunk i's experts compute while chunk i + 1's rows arrive and chunk
    i - 1's results return. A later stage of a staged exchange
    (hierarchical or de-duplicated) starts from an earlier stage's wait:
    that wait, the ops that only rearrange its rows (`tamoe.regroup`,
    `tamoe.dedup_expand`, reshapes) and the next stage's start move down
    together past the compute that does not need them (up to the next
    start, the stage's own wait, or the wait of an exchange started after
    the first stage), so that both stages travel while experts compute.
    Only pure ops move up with a start: one that may trap stays below the
    check that guards it.
  }];
  let statistics = [
    Statistic<"numSplit", "split-exchanges", "all-to-alls split into start "
              "and wait">
  ];
  let dependentDialects = ["mlir::tamoe::TAMoEDialect"];
}

def TAMoEDifferentiatePass : Pass<"tamoe-differentiate", "mlir::ModuleOp"> {
  let summary = "Generate the forward and backward functions of MoE layers";
  let description = [{
    Reverse-mode differentiation of each function named by a `tamoe.vjp`
    op or by the `functions` option. A function
    `@f(args) -> (results)` of one block gets two siblings:

    - `@f_forward(args) -> (results, saved...)`: `@f`, also returning the
      values its backward reads (results marked `tamoe.saved`, with what
      each one is);
    - `@f_backward(args, saved..., d_results) -> (d_args)`: the gradients
      of the float tensor arguments for the gradients of the float tensor
      results.

    Each op of `@f` contributes its vector-Jacobian product through
    `VJPOpInterface`: the tamoe ops, and through external models
    `linalg.matmul`, elementwise add/sub/mul/neg/relu/silu, sums
    (`linalg.reduce`/`linalg.broadcast`), reshapes, casts and slices of
    `tensor`, and constants. Any other op that a gradient flows through is
    an error naming it. Backward exchanges are ordinary `tamoe.all_to_all`
    ops (the reverse of each forward stage); a de-duplicated dispatch's
    backward sums each token's expert gradients at the relay. Constants and
    this rank's index are rebuilt in the backward rather than saved. A
    remark gives what is saved and its bytes.

    `tamoe.vjp` ops become a call of `_forward` and one of `_backward`. A
    module without either is left unchanged.
  }];
  let options = [
    ListOption<"functions", "functions", "std::string",
               "Functions to differentiate besides those that tamoe.vjp ops "
               "name">
  ];
  let statistics = [
    Statistic<"numDifferentiated", "differentiated",
              "functions differentiated">,
    Statistic<"numSaved", "saved", "values saved for backward functions">
  ];
  let dependentDialects = [
    "mlir::arith::ArithDialect", "mlir::func::FuncDialect",
    "mlir::linalg::LinalgDialect", "mlir::tensor::TensorDialect",
    "mlir::tamoe::TAMoEDialect"
  ];
}

def TAMoEExpandGatePass : Pass<"tamoe-expand-gate", "mlir::ModuleOp"> {
  let summary = "Lower tamoe.gate and tamoe.aux_loss to linalg, tensor, arith "
                "and math";
  let description = [{
    For compilers without the tamoe runtime: `tamoe.gate` becomes the
    softmax (max-subtracted) or sigmoid of the logits, group-limited routing
    (each group scored by the sum of its two best scores, the best groups
    kept) and k rounds of arg-max with masking (ties go to the lower expert
    id), then the optional renormalisation, all in f32 at least (rounded
    once to the logits' type). With a dynamic number of experts that is
    below k at run time (the runtime's gate refuses it), the picks past the
    last expert get id -1 and weight 0: the loss skips them, the runtime's
    dispatch refuses them, and the renormalisation spreads over the real
    picks. `tamoe.aux_loss` becomes the
    per-expert counts of the ids (negative ids skipped), the mean router
    probabilities and the weighted sum E * sum_e w_e f_e P_e.
  }];
  let dependentDialects = [
    "mlir::arith::ArithDialect", "mlir::linalg::LinalgDialect",
    "mlir::math::MathDialect", "mlir::tensor::TensorDialect"
  ];
}

def TAMoEConvertToRuntimePass
    : Pass<"convert-tamoe-to-runtime", "mlir::ModuleOp"> {
  let summary = "Lower tamoe ops to calls of the tamoe runtime's C ABI";
  let description = [{
    Replaces every tamoe op by a call of the runtime function of the same
    name (`runtime/include/tamoe_rt/tamoe_rt.h`) on the aligned pointers of
    its buffers: tensor operands become read-only buffers
    (`bufferization.to_buffer`), results fresh `memref.alloc`s handed back as
    tensors (`bufferization.to_tensor restrict writable`), so that One-Shot
    Bufferize lowers the rest of the program around the calls. An
    all-to-all first exchanges its counts (`tamoe_rt_all_to_all_counts`) to
    size its receive buffer, unless its size is static, it names the counts
    it will receive (`expecting`: their sum on the rank,
    `tamoe_rt_counts_total`, no round), or its send counts follow, through
    chunks, regroups, reshapes and earlier exchanges, from counts that other
    exchanges' follow from too: those share one round of those counts
    (`tamoe_rt_all_to_all_totals`, before the first op of the way), which
    gives every one of them its total (the parts of a cut layer, a
    hierarchical schedule's stages, the way back);
    its grid axes select the runtime's group (the
    whole grid, the last axis = the node, or the axes before it).
    `shard.process_linear_index` / `process_multi_index` become this rank's
    index from the runtime, and the `shard.grid`s are erased.

    Calls go through the process-wide context of
    `tamoe_rt_program_enter(host_loops, abi_version)`, which refuses a
    runtime of another interface version, and every status through
    `tamoe_rt_program_check`, which ends the program on every rank with the
    runtime's message when a call fails (`runtime/include/tamoe_rt/program.h`).
    Rows (tokens, exchanged rows, expert weights and activations, their
    gradients) may be f32, bf16 or f16; routing (logits, gate weights and
    probabilities, losses) is f32; ids, positions and counts are i32. Other
    element types are rejected with an error. Constant operands (a
    dense `arith.constant`, or a contiguous `tensor.extract_slice` of one,
    such as the topology loss's row of weights) are passed through
    `tamoe_rt_program_constant`, which uploads them to the backend once.

    With `device-resident`, the rest of the program's tensor compute becomes
    runtime calls too, so that a layer runs where its buffers are (device
    memory on the cuda backend) and no loop is left on the host. On f32,
    bf16 or f16 tensors (each operand's type passed along):
    `linalg.matmul` (default maps; a zero `linalg.fill` init is dropped,
    any other init accumulated) -> `tamoe_rt_matmul`; elementwise
    add/sub/mul (`linalg.add`/`sub`/`mul`, `arith.addf`/`subf`/`mulf` on
    tensors, or a `linalg.generic` of one such op), relu (a
    `linalg.generic` of `arith.maximumf(x, 0.0)`), neg, silu, and the
    gradients of relu and silu as `tamoe-differentiate` writes them ->
    `tamoe_rt_map`; a `linalg.generic` of one `arith.extf` or
    `arith.truncf` -> `tamoe_rt_convert`; `linalg.add` of i32 counts (a
    chunked layer's parts, summed) -> `tamoe_rt_add_counts`. Any other op that computes on tensors is an error naming it. Without it, such
    ops stay for upstream bufferization and become host loops, which the
    runtime refuses to run on the cuda backend; a `linalg.matmul` into
    bf16 or f16, and a `linalg.reduce` that sums into one, then add up in
    f32 (init and summed input widened with `arith.extf`, the result
    rounded once with `arith.truncf`), as `tamoe_rt_matmul` does, rather
    than in the result type; so does an elementwise `linalg.generic` on
    bf16 or f16 whose body rounds more than once (silu and its gradient),
    as `tamoe_rt_map` does, unless it compares or classifies a value it
    computed (an overflow guard), which would then see the f32 value.
  }];
  let options = [
    Option<"deviceResident", "device-resident", "bool",
           /*default=*/"false",
           "Lower the layer's dense compute to runtime calls as well and "
           "reject any other tensor compute">,
    Option<"staticCapacity", "static-capacity", "bool",
           /*default=*/"false",
           "Size an exchange's receive buffer by the capacity of the "
           "dispatch its counts come from (entries x capacity rows) instead "
           "of exchanging the counts first: they travel once and the host "
           "waits for no total, so a step can be captured as a CUDA graph. "
           "The received tensor then has that many rows, those past the "
           "counts unspecified">
  ];
  let dependentDialects = [
    "mlir::affine::AffineDialect", "mlir::arith::ArithDialect",
    "mlir::bufferization::BufferizationDialect", "mlir::func::FuncDialect",
    "mlir::LLVM::LLVMDialect", "mlir::memref::MemRefDialect",
    "mlir::tensor::TensorDialect"
  ];
}

def TAMoEFinalizeDeviceResidentPass
    : Pass<"tamoe-finalize-device-resident", "mlir::ModuleOp"> {
  let summary = "Keep the host's bookkeeping off backend memory after "
                "bufferization and deallocation";
  let description = [{
    Runs in `tamoe-to-llvm{device-resident}` after buffer deallocation and
    `convert-bufferization-to-memref`, where every `memref.alloc` becomes
    backend memory (device memory on the cuda backend). The deallocation
    lowering's alias checks allocate small `index` and `i1` buffers and
    write them on the host: they move to the stack (at the function's
    entry, so a loop does not grow it). Only buffers that are loaded,
    stored, freed or passed to a call where they are allocated move; tensor
    data is never `index` or `i1` in a device-resident program (the runtime
    takes f32, bf16, f16, i32 and i64).

    It then fails on the host copies and loops that bufferization can leave
    behind: a `memref.copy` (for a conflicting in-place write, or a
    `bufferization.clone` of a buffer with conditional ownership) and any
    `linalg` op on memrefs. It does not look at a program's own
    `memref.load`/`store` or external calls (e.g. a printer of results):
    those are the program's host code.
  }];
  let dependentDialects = ["mlir::memref::MemRefDialect"];
}

def TAMoECheckLoweredPass : Pass<"tamoe-check-lowered", "mlir::ModuleOp"> {
  let summary = "Fail where tamoe-to-llvm left an op it should have lowered";
  let description = [{
    The last pass of `tamoe-to-llvm`. Upstream's `convert-to-llvm` converts
    what it can and leaves the rest, so an op of a dialect without a
    lowering in the pipeline (`vector.transfer_write`, say) or a cast it
    could not reconcile would come out silently, and fail only later in
    `mlir-translate` (``Dialect `vector' not found``). This pass names the
    first such op with its location and counts the rest: ops of the
    dialects the pipeline lowers (builtin casts, func, arith, cf, math,
    index, ub, memref, tensor, linalg, scf, affine, bufferization, vector,
    complex, shard, tamoe), and ops of no registered dialect, which have no
    translation either. Ops of other dialects (`omp`, `nvvm`, ...) are left
    for their own translations.
  }];
}

#endif // TAMOE_DIALECT_TAMOE_TRANSFORMS_PASSES_TD
