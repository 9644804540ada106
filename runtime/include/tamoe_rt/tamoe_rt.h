/*===- tamoe_rt.h - The tamoe runtime's C ABI -------------------*- C -*-===*\
 *
 * Executes the operations of a lowered MoE layer: gate, dispatch layout,
 * variable-count all-to-all (flat, per node, between same-index ranks),
 * regroup, per-node de-duplication, combine and the auxiliary losses.
 *
 * Conventions (docs/runtime.md has the details):
 * - Every entry point returns a tamoe_rt_status_t; on failure the context's
 *   message (tamoe_rt_last_error) says what went wrong. Collectives fail on
 *   every rank of the group alike, never on some ranks only.
 * - Sizes and counts of elements are intptr_t, so lowered MLIR (index type)
 *   can call the functions directly. Per-row counts are int32_t, as in IR.
 * - Buffers are host memory on the cpu backend and device memory on the cuda
 *   backend; tamoe_rt_alloc returns memory of the right kind. Every output
 *   buffer has an explicit capacity and is never written past it.
 * - Outputs overlap neither inputs nor each other ("X and Y overlap"),
 *   except the exact aliases a function allows (tamoe_rt_map,
 *   tamoe_rt_add_counts and tamoe_rt_convert in place, c_init = c).
 * - The semantics of each function are those of the tamoe dialect op of the
 *   same name (docs/design.md, docs/Dialects/TAMoEDialect.md).
 *
\*===----------------------------------------------------------------------===*/

#ifndef TAMOE_RT_TAMOE_RT_H
#define TAMOE_RT_TAMOE_RT_H

#include <stdint.h>

/* The version of this interface that compiled code is built against:
 * raised whenever a function, struct or enumerator that code lowered by
 * convert-tamoe-to-runtime relies on changes. tamoe-opt writes it into
 * every program (tamoe_rt_program_enter), and a library of another
 * version ends the program with a message instead of running it. */
#define TAMOE_RT_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tamoe_rt_status_t {
  TAMOE_RT_SUCCESS = 0,
  /* A null pointer, a negative size, an expert id out of range, ... */
  TAMOE_RT_ERROR_INVALID_ARGUMENT = 1,
  /* The backend was not built, its library is missing, or no GPU. */
  TAMOE_RT_ERROR_BACKEND_UNAVAILABLE = 2,
  /* Ranks of a collective disagree (row size, count shape, group). */
  TAMOE_RT_ERROR_MISMATCH = 3,
  /* Rows to receive or produce exceed the output buffer's capacity. */
  TAMOE_RT_ERROR_CAPACITY_EXCEEDED = 4,
  /* A collective did not complete within the context's timeout. */
  TAMOE_RT_ERROR_TIMEOUT = 5,
  /* The communication library reported an error. */
  TAMOE_RT_ERROR_COMMUNICATION = 6,
  TAMOE_RT_ERROR_OUT_OF_MEMORY = 7,
  TAMOE_RT_ERROR_INTERNAL = 8,
} tamoe_rt_status_t;

/* "TAMOE_RT_ERROR_TIMEOUT", ...; never null. */
const char *tamoe_rt_status_name(tamoe_rt_status_t status);

typedef enum tamoe_rt_backend_t {
  TAMOE_RT_BACKEND_CPU = 0,  /* host memory, MPI (one rank without mpirun) */
  TAMOE_RT_BACKEND_CUDA = 1, /* device memory, CUDA kernels, NCCL */
} tamoe_rt_backend_t;

/* The groups a collective runs over. Ranks are numbered node-major:
 * rank = node * ranks_per_node + local index. */
typedef enum tamoe_rt_group_t {
  TAMOE_RT_GROUP_WORLD = 0, /* every rank, in rank order */
  TAMOE_RT_GROUP_NODE = 1,  /* the ranks of this node, by local index */
  TAMOE_RT_GROUP_PEERS = 2, /* the ranks with this local index, by node */
} tamoe_rt_group_t;

typedef struct tamoe_rt_options_t {
  tamoe_rt_backend_t backend;
  /* Ranks per node; 0 takes TAMOE_RANKS_PER_NODE from the environment, else
   * the launcher's local size (OMPI_COMM_WORLD_LOCAL_SIZE, LOCAL_WORLD_SIZE),
   * else every rank on one node. Must divide the number of ranks. */
  intptr_t ranks_per_node;
  /* Bound on the wait of one collective, seconds; 0 takes TAMOE_RT_TIMEOUT
   * from the environment, else 60. */
  double timeout_seconds;
} tamoe_rt_options_t;

typedef struct tamoe_rt_context_t tamoe_rt_context_t;

/* Options with every field at its default (cpu backend). */
tamoe_rt_options_t tamoe_rt_default_options(void);

/* Creates a context: meets the other ranks, then creates the backend. The
 * ranks meet over MPI (initialised here if nobody did; under mpirun) or,
 * when the process carries torchrun's variables (RANK, WORLD_SIZE,
 * MASTER_ADDR, MASTER_PORT, LOCAL_RANK, LOCAL_WORLD_SIZE) and no MPI
 * launcher's, or TAMOE_RT_LAUNCHER=tcp, or the runtime was built without
 * MPI, over TCP (rank 0 listens on MASTER_PORT + 1, MASTER_PORT being
 * torch's store's, or on TAMOE_RT_MASTER_PORT; docs/runtime.md). The cpu
 * backend needs MPI; the cuda backend runs with either. On failure
 * *context is null and tamoe_rt_last_error(NULL) has the message, the same
 * on every rank. */
tamoe_rt_status_t tamoe_rt_init(const tamoe_rt_options_t *options,
                                tamoe_rt_context_t **context);
/* Releases the context (and finalises MPI if tamoe_rt_init initialised it
 * and no other context is alive). Null is allowed. Once released, the
 * context is refused by every call, this one included
 * (TAMOE_RT_ERROR_INVALID_ARGUMENT, "context is not live"); its accessors
 * answer as for null. */
tamoe_rt_status_t tamoe_rt_finalize(tamoe_rt_context_t *context);

/* The message of the last failing call on `context`, or of the last failing
 * tamoe_rt_init on this thread when `context` is null; "" when none. */
const char *tamoe_rt_last_error(const tamoe_rt_context_t *context);

intptr_t tamoe_rt_rank(const tamoe_rt_context_t *context);
intptr_t tamoe_rt_num_ranks(const tamoe_rt_context_t *context);
intptr_t tamoe_rt_ranks_per_node(const tamoe_rt_context_t *context);
tamoe_rt_backend_t tamoe_rt_backend(const tamoe_rt_context_t *context);

/* Bytes this rank has sent since the context was created (or the last
 * reset), split by whether the receiver is on this node. */
typedef struct tamoe_rt_traffic_t {
  int64_t intra_node_bytes;
  int64_t inter_node_bytes;
} tamoe_rt_traffic_t;
tamoe_rt_status_t tamoe_rt_traffic(const tamoe_rt_context_t *context,
                                   tamoe_rt_traffic_t *traffic);
tamoe_rt_status_t tamoe_rt_reset_traffic(tamoe_rt_context_t *context);

/*===------------------------------------------------------------------===*
 * Memory
 *===------------------------------------------------------------------===*/

/* Memory of the backend's kind (device memory on cuda), 256-byte aligned.
 * Both backends keep freed memory for reuse (a layer allocates the same
 * buffers at every step). On cuda, allocation and free are ordered on the
 * backend's stream, which is ordered with the legacy default stream; work
 * of the caller's own non-blocking streams must be synchronised first. */
tamoe_rt_status_t tamoe_rt_alloc(tamoe_rt_context_t *context, intptr_t bytes,
                                 void **pointer);
tamoe_rt_status_t tamoe_rt_free(tamoe_rt_context_t *context, void *pointer);
/* Copies between host memory and the backend's memory. */
tamoe_rt_status_t tamoe_rt_copy_to_backend(tamoe_rt_context_t *context,
                                           void *destination,
                                           const void *host_source,
                                           intptr_t bytes);
tamoe_rt_status_t tamoe_rt_copy_to_host(tamoe_rt_context_t *context,
                                        void *host_destination,
                                        const void *source, intptr_t bytes);
/* Waits for the work queued on the context (a no-op on cpu). */
tamoe_rt_status_t tamoe_rt_synchronize(tamoe_rt_context_t *context);

/*===------------------------------------------------------------------===*
 * Element types
 *===------------------------------------------------------------------===*/

/* The element type of the rows that an operation computes on (tokens,
 * expert inputs and outputs, expert weights, their gradients). Routing
 * stays f32: logits, probabilities, combine weights, losses and optimizer
 * state. Every backend accumulates in f32 and rounds once per output
 * element (to nearest, ties to even); bf16 and f16 are IEEE 754-style
 * (8 and 5 exponent bits). */
typedef enum tamoe_rt_dtype_t {
  TAMOE_RT_F32 = 0,
  TAMOE_RT_BF16 = 1,
  TAMOE_RT_F16 = 2,
} tamoe_rt_dtype_t;

/* dst[i] = src[i] converted from src_type to dst_type, for i < n (what
 * arith.extf and arith.truncf do elementwise): exact when widening; when
 * narrowing, rounded to nearest even, NaN stays NaN and a finite value past
 * the largest finite one becomes infinity of its sign, as IEEE 754 rounds.
 * dst may be src when the types have the same size. */
tamoe_rt_status_t tamoe_rt_convert(tamoe_rt_context_t *context,
                                   tamoe_rt_dtype_t src_type, const void *src,
                                   tamoe_rt_dtype_t dst_type, void *dst,
                                   intptr_t n);

/*===------------------------------------------------------------------===*
 * Routing (local to the rank)
 *===------------------------------------------------------------------===*/

typedef enum tamoe_rt_score_t {
  TAMOE_RT_SCORE_SOFTMAX = 0,
  TAMOE_RT_SCORE_SIGMOID = 1,
} tamoe_rt_score_t;

/* tamoe.gate: logits [tokens, experts] -> expert_ids [tokens, k] by
 * descending score (the lower id first on ties), weights [tokens, k] and
 * probs [tokens, experts]. num_groups = 0 disables group-limited routing;
 * otherwise the experts form num_groups groups and each token keeps the
 * groups_kept groups with the highest group score (sum of the group's top-2
 * scores, its top score for groups of one expert). A NaN score ranks as -inf
 * (below every probability), so a token whose logits overflowed still gets k
 * experts (the lower ids) and its NaN weights carry on to the loss, where a
 * loss scaler sees them, rather than failing the layer. */
/* Renormalised weights are the chosen scores over (their sum + this), as in
 * DeepSeek-V3's reference: sigmoid scores of logits below about -88 are 0
 * in f32, and a token whose chosen scores all are gets weights 0, not
 * 0 / 0. Sums of representable size are unchanged. */
#define TAMOE_RT_RENORMALIZE_EPSILON 1e-20f

tamoe_rt_status_t tamoe_rt_gate(tamoe_rt_context_t *context,
                                const float *logits, intptr_t tokens,
                                intptr_t experts, intptr_t k,
                                tamoe_rt_score_t score, int32_t renormalize,
                                intptr_t num_groups, intptr_t groups_kept,
                                int32_t *expert_ids, float *weights,
                                float *probs);

typedef enum tamoe_rt_drop_t {
  TAMOE_RT_DROP_POSITION = 0,    /* keep each expert's earliest tokens */
  TAMOE_RT_DROP_PROBABILITY = 1, /* keep the highest weights (then earliest;
                                    NaN ranks as -inf) */
} tamoe_rt_drop_t;

/* tamoe.dispatch: rows of `tokens` [tokens, row_bytes] copied into
 * `dispatched` grouped by expert id, within an expert by token index.
 * capacity < 0 is dropless; otherwise at most `capacity` rows per expert.
 * Dropped assignments get position -1. `weights` is required for
 * TAMOE_RT_DROP_PROBABILITY only. dispatched_capacity bounds the rows
 * written. Outputs: expert_counts [experts], positions [tokens, k],
 * num_dropped (one int64). */
tamoe_rt_status_t tamoe_rt_dispatch(
    tamoe_rt_context_t *context, const void *tokens, intptr_t num_tokens,
    intptr_t row_bytes, const int32_t *expert_ids, intptr_t k,
    intptr_t experts, const float *weights, intptr_t capacity,
    tamoe_rt_drop_t drop, void *dispatched, intptr_t dispatched_capacity,
    int32_t *expert_counts, int32_t *positions, int64_t *num_dropped);

/* tamoe.combine: combined[t] = sum_j weights[t, j] *
 * expert_outputs[positions[t, j]] over positions >= 0 (rows of `hidden`
 * elements of `dtype`, weights f32), in the order of j. `rows` bounds the
 * positions. Null `weights` are all 1: the unweighted sum is the gradient
 * of tamoe_rt_dispatch. */
tamoe_rt_status_t tamoe_rt_combine(tamoe_rt_context_t *context,
                                   tamoe_rt_dtype_t dtype,
                                   const void *expert_outputs, intptr_t rows,
                                   intptr_t hidden, const int32_t *positions,
                                   const float *weights, intptr_t tokens,
                                   intptr_t k, void *combined);

/* tamoe.aux_loss: switch when expert_weights is null, topology otherwise.
 * Negative expert ids are not counted, nor, when `positions` [tokens, k]
 * (a dispatch's) is not null, assignments at a negative position (dropped
 * by the capacity). `loss` is one float. */
tamoe_rt_status_t tamoe_rt_aux_loss(tamoe_rt_context_t *context,
                                    const float *probs,
                                    const int32_t *expert_ids,
                                    const int32_t *positions, intptr_t tokens,
                                    intptr_t experts, intptr_t k,
                                    const float *expert_weights, float *loss);

/* tamoe.regroup: rows in chunks ordered by counts [a, b, inner] (row-major,
 * chunk (x, y) holds the inner sub-chunks of (x, y) in order) reordered to
 * [b, a, inner]. rows_capacity bounds both buffers. */
tamoe_rt_status_t tamoe_rt_regroup(tamoe_rt_context_t *context,
                                   const void *rows, intptr_t rows_capacity,
                                   intptr_t row_bytes, const int32_t *counts,
                                   intptr_t a, intptr_t b, intptr_t inner,
                                   void *regrouped, int32_t *regrouped_counts);

/* Rows in blocks, one per counts entry (entry i has counts[i] rows; blocks
 * in entry order, packed at the front of `rows` [rows_capacity, row_bytes]),
 * split into `chunks` parts so that a schedule can exchange part c while it
 * computes on part c - 1: part c of an entry of n rows is its rows
 * [floor(c n / chunks), floor((c + 1) n / chunks)), so parts differ by at
 * most one row and a part is empty when n < chunks.
 * tamoe_rt_chunk: part `chunk` (0 <= chunk < chunks) of every entry, packed
 * at the front of chunk_rows in entry order; chunk_counts [num_counts] its
 * rows of each entry. counts live in the backend's memory. */
tamoe_rt_status_t tamoe_rt_chunk(tamoe_rt_context_t *context, const void *rows,
                                 intptr_t rows_capacity, intptr_t row_bytes,
                                 const int32_t *counts, intptr_t num_counts,
                                 intptr_t chunk, intptr_t chunks,
                                 void *chunk_rows, intptr_t chunk_capacity,
                                 int32_t *chunk_counts);

/* The inverse for one part: chunk_rows holds part `chunk` of every entry (as
 * tamoe_rt_chunk lays it out, for the same counts); each goes back to its
 * place in `rows`. Rows of other parts are left as they are, so calling it for
 * every chunk fills `rows`. */
tamoe_rt_status_t tamoe_rt_unchunk(tamoe_rt_context_t *context,
                                   const void *chunk_rows,
                                   intptr_t chunk_capacity, intptr_t row_bytes,
                                   const int32_t *counts, intptr_t num_counts,
                                   intptr_t chunk, intptr_t chunks, void *rows,
                                   intptr_t rows_capacity);

/* tamoe.chunk_positions: where a dispatch's assignments land in part
 * `chunk` of `chunks` of its rows. positions and expert_ids [tokens, k] are
 * as tamoe_rt_dispatch returned them (the row of each assignment among
 * blocks of rows per expert, expert_counts [experts]; -1 when dropped).
 * chunk_positions [tokens, k] gets each assignment's row among part `chunk`
 * of every block, packed as tamoe_rt_chunk lays them out, or -1 when it was
 * dropped or belongs to another part. The de-duplicated exchange of one
 * part packs its tokens from them. All live in the backend's memory. */
tamoe_rt_status_t
tamoe_rt_chunk_positions(tamoe_rt_context_t *context, const int32_t *positions,
                         const int32_t *expert_ids, intptr_t tokens, intptr_t k,
                         const int32_t *expert_counts, intptr_t experts,
                         intptr_t chunk, intptr_t chunks,
                         int32_t *chunk_positions);

/* tamoe.grouped_matmul: the experts of this rank on the rows it received.
 * rows [rows_capacity, hidden] hold chunks in the order of counts
 * [num_counts] (row-major [peers, experts] after an exchange, or
 * [experts]); chunk c belongs to local expert c % experts and is multiplied
 * by weights[c % experts] [hidden, out_features]. result [rows_capacity,
 * out_features] keeps the row order; rows past the counts' sum are zero.
 * rows, weights and result are of `dtype`. */
tamoe_rt_status_t tamoe_rt_grouped_matmul(
    tamoe_rt_context_t *context, tamoe_rt_dtype_t dtype, const void *rows,
    intptr_t rows_capacity, intptr_t hidden, const int32_t *counts,
    intptr_t num_counts, intptr_t experts, const void *weights,
    intptr_t out_features, void *result);

/* The dense compute around a layer, so that a device-resident program
 * (tamoe-to-llvm{device-resident}) leaves no loop on the host: row-major,
 * contiguous, of the element types given. */

/* c [m, n] = op(a) x op(b), plus c_init [m, n] when it is not null
 * (linalg.matmul accumulates into its init). op(a) [m, k] is a as stored
 * ([m, k]) or, with transpose_a, the transpose of a stored as [k, m]; op(b)
 * [k, n] likewise ([k, n], or [n, k] with transpose_b). The gradients of a
 * matmul are matmuls with one transposed operand. c may be c_init, but
 * not a part of it. a, b and c (with c_init) have their own element types,
 * as in linalg.matmul: bf16 tokens times a bf16 router give f32 logits. */
tamoe_rt_status_t
tamoe_rt_matmul(tamoe_rt_context_t *context, tamoe_rt_dtype_t a_type,
                tamoe_rt_dtype_t b_type, tamoe_rt_dtype_t c_type, const void *a,
                const void *b, intptr_t m, intptr_t k, intptr_t n,
                int32_t transpose_a, int32_t transpose_b, const void *c_init,
                void *c);

typedef enum tamoe_rt_map_t {
  TAMOE_RT_MAP_ADD = 0,  /* a + b */
  TAMOE_RT_MAP_SUB = 1,  /* a - b */
  TAMOE_RT_MAP_MUL = 2,  /* a * b */
  TAMOE_RT_MAP_RELU = 3, /* max(a, 0) (NaN stays NaN); b unused */
  TAMOE_RT_MAP_NEG = 4,  /* -a; b unused */
  /* relu's gradient: b where a > 0, else 0 (a = relu's input, b = the
   * gradient of its output; NaN in a gives 0) */
  TAMOE_RT_MAP_RELU_GRAD = 5,
  /* silu (swish), a / (1 + exp(-a)): the gate of SwiGLU experts, whose
   * hidden activation is silu(x W1) * (x W3); b unused */
  TAMOE_RT_MAP_SILU = 6,
  /* silu's gradient: b * s * (1 + a * (1 - s)) with s = 1 / (1 + exp(-a))
   * (a = silu's input, b = the gradient of its output) */
  TAMOE_RT_MAP_SILU_GRAD = 7,
} tamoe_rt_map_t;

/* out[i] = op(a[i], b[i]) for i < n, a, b and out of `dtype`. out may be
 * a or b. */
tamoe_rt_status_t tamoe_rt_map(tamoe_rt_context_t *context, tamoe_rt_map_t op,
                               tamoe_rt_dtype_t dtype, const void *a,
                               const void *b, intptr_t n, void *out);

/* out[i] = a[i] + b[i] for i < n, int32 counts in the backend's memory:
 * what a chunked layer computes when its program reads the counts its
 * exchanges received in all (the sum of its parts'). A sum past INT32_MAX
 * or below INT32_MIN fails with TAMOE_RT_ERROR_INVALID_ARGUMENT (counts
 * that large are corrupt) and leaves out as it was. out may be a or b;
 * otherwise it must not overlap them. */
tamoe_rt_status_t tamoe_rt_add_counts(tamoe_rt_context_t *context,
                                      const int32_t *a, const int32_t *b,
                                      intptr_t n, int32_t *out);

/* *total (host memory) = the sum of n int32 counts in the backend's
 * memory, a negative one counted as 0: the receive size of an exchange
 * whose counts the program knows already (the exchange back of an earlier
 * one receives what that one sent), read on this rank alone, with no
 * counts round. Nothing here fails on the counts' values: the exchange it
 * sizes fails on every rank alike if more rows arrive than the total. */
tamoe_rt_status_t tamoe_rt_counts_total(tamoe_rt_context_t *context,
                                        const int32_t *counts, intptr_t n,
                                        intptr_t *total);

/*===------------------------------------------------------------------===*
 * Per-node de-duplication of top-k tokens
 *===------------------------------------------------------------------===*/

/* tamoe.dedup_pack: for every node n and token t with at least one
 * dispatched assignment (position >= 0) to an expert on node n, one row of
 * t, ordered by node, then token. routes [unique_capacity, k] lists those
 * experts (global ids, in the token's top-k order, then -1 padding).
 * node_counts [nodes] counts the rows per node. Experts are numbered
 * node-major: expert e lives on node e / experts_per_node. */
tamoe_rt_status_t tamoe_rt_dedup_pack(
    tamoe_rt_context_t *context, const void *tokens, intptr_t num_tokens,
    intptr_t row_bytes, const int32_t *expert_ids, const int32_t *positions,
    intptr_t k, intptr_t experts_per_node, intptr_t nodes, void *unique,
    int32_t *routes, intptr_t unique_capacity, int32_t *node_counts);

/* tamoe.dedup_expand, run by the relay: `unique` rows with their routes,
 * received from each node (recv_counts [nodes] rows per source node), are
 * expanded into one row per listed expert, ordered by destination local
 * index, source node, expert, then arrival order. expanded_counts
 * [ranks_per_node, nodes, experts_per_rank]. Expert e lives on local index
 * (e / experts_per_rank) % ranks_per_node. */
tamoe_rt_status_t tamoe_rt_dedup_expand(
    tamoe_rt_context_t *context, const void *unique, const int32_t *routes,
    intptr_t unique_capacity, intptr_t row_bytes, intptr_t k,
    const int32_t *recv_counts, intptr_t nodes, intptr_t ranks_per_node,
    intptr_t experts_per_rank, void *expanded, intptr_t expanded_capacity,
    int32_t *expanded_counts);

/*===------------------------------------------------------------------===*
 * Collectives
 *===------------------------------------------------------------------===*/

/* tamoe.all_to_all over `group` (G ranks): send_counts [peers, split] rows
 * for each peer (and its split sub-chunks), rows for peer 0 first;
 * recv_counts [peers, split] is filled with what each peer sent here, and
 * `received` holds those rows by source. `peers` must be G (a program
 * compiled for another layout fails with TAMOE_RT_ERROR_MISMATCH). The
 * capacities bound the rows read and written; a receive that would exceed
 * recv_capacity fails on every rank before any row moves. What is written,
 * received and recv_counts, overlaps neither the other nor send or
 * send_counts. */
tamoe_rt_status_t tamoe_rt_all_to_all(
    tamoe_rt_context_t *context, tamoe_rt_group_t group, const void *send,
    intptr_t send_capacity, intptr_t row_bytes, const int32_t *send_counts,
    intptr_t peers, intptr_t split, void *received, intptr_t recv_capacity,
    int32_t *recv_counts);

/* An exchange in flight between tamoe_rt_all_to_all_start and
 * tamoe_rt_all_to_all_wait: an opaque handle (not an address the caller may
 * read), never given out twice in a process. */
typedef struct tamoe_rt_exchange tamoe_rt_exchange_t;

/* tamoe_rt_all_to_all in two halves, so that a rank computes while its rows
 * travel. start takes the same arguments and settles them collectively
 * with the same checks as tamoe_rt_all_to_all (the same verdict on every
 * rank, the same messages), then the rows move; *exchange is set (NULL on
 * failure). On the cpu backend neither round blocks: start posts the settle
 * and returns, and the wait reports its verdict (a bad argument on any rank
 * fails every rank's wait, the rank that knows why sharing its message; a
 * failure before the settle, such as a bad group, is start's). A call with
 * exchange NULL fails at once on that rank ("rank R: exchange is null",
 * which the peers' waits report too), its settle left in flight until
 * finalize. On the cuda backend start settles (blocking) and reports any
 * failure itself, then queues the rows on the backend's communication
 * stream, so the operations until the wait compute while they move.
 * Until the wait, `send` must not change and `received` / `recv_counts`
 * must not be read. Several exchanges may be in flight on a context; every
 * rank of a group must start its exchanges (and call the other collectives)
 * in the same order, as an SPMD program does: MPI matches a communicator's
 * collectives by that order. On the cpu backend the exchange moves while
 * the rank is inside the runtime: each entry point that computes
 * (grouped_matmul, matmul, map, chunk, ...) first lets the exchanges in
 * flight progress (docs/runtime.md, "How progress is made"). */
tamoe_rt_status_t tamoe_rt_all_to_all_start(
    tamoe_rt_context_t *context, tamoe_rt_group_t group, const void *send,
    intptr_t send_capacity, intptr_t row_bytes, const int32_t *send_counts,
    intptr_t peers, intptr_t split, void *received, intptr_t recv_capacity,
    int32_t *recv_counts, tamoe_rt_exchange_t **exchange);

/* Completes an exchange (bounded by the context's timeout, failing like
 * tamoe_rt_all_to_all does), fills recv_counts and frees the handle: each
 * started exchange is waited exactly once. `send` must be the pointer it
 * started with (the program passes it to keep that buffer alive until
 * here). A handle that is not pending on `context`, or another `send`,
 * fails with TAMOE_RT_ERROR_INVALID_ARGUMENT and leaves the exchanges as
 * they are. tamoe_rt_finalize completes the exchanges still in flight
 * (so `send` and `received` of one never waited must live until then),
 * without writing their recv_counts (the caller may have freed them). */
tamoe_rt_status_t tamoe_rt_all_to_all_wait(tamoe_rt_context_t *context,
                                           tamoe_rt_exchange_t *exchange,
                                           const void *send);

/* The counts half of tamoe_rt_all_to_all, for a caller that sizes
 * `received` first: recv_counts [peers, split] as tamoe_rt_all_to_all would
 * fill them, and *total (host memory) their sum. */
tamoe_rt_status_t tamoe_rt_all_to_all_counts(tamoe_rt_context_t *context,
                                             tamoe_rt_group_t group,
                                             const int32_t *send_counts,
                                             intptr_t peers, intptr_t split,
                                             int32_t *recv_counts,
                                             intptr_t *total);

/* The steps of tamoe_rt_all_to_all_totals, each five int64:
 * {kind, source, x, y, z}. `source` names the counts a step reads: 0 the
 * call's `counts`, i + 1 those step i makes (so source <= i). */
typedef enum tamoe_rt_counts_step_t {
  /* {.., chunk, chunks, 0}: part `chunk` of `chunks` of every entry, as
   * tamoe_rt_chunk cuts it (floor((c + 1) n / C) - floor(c n / C) of n). */
  TAMOE_RT_COUNTS_CHUNK = 0,
  /* {.., a, b, inner}: [a, b, inner] reordered to [b, a, inner], as
   * tamoe_rt_regroup reorders its counts. */
  TAMOE_RT_COUNTS_REGROUP = 1,
  /* {.., group, peers, 0}: the recv_counts [peers, ...] of
   * tamoe_rt_all_to_all over `group` with these as send_counts. */
  TAMOE_RT_COUNTS_EXCHANGE = 2,
} tamoe_rt_counts_step_t;

/* The receive sizes of a layer's exchanges whose send counts all follow
 * from one counts tensor, in one round instead of a counts round per
 * exchange: a layer cut into parts (tamoe.chunk), a hierarchical schedule's
 * stages, the way back. `counts` ([entries], int32, on the backend) are this
 * rank's; they are gathered from every rank of `group` (ranks x entries
 * int32 on the host, as Megatron-Core gathers its token counts), and every
 * member's counts are followed through `steps` ([num_steps, 5], host
 * memory) on the host; an exchange step is over `group`, or over any group
 * when `group` is the world. totals[i] (host memory, num_steps of them)
 * gets the sum of what step i makes on this rank: for an exchange, the rows
 * it receives. Fails on every rank of `group` alike (the steps too must be
 * the same everywhere), as tamoe_rt_all_to_all_counts, and before any rank
 * sends when a step does not fit the counts it reads. */
tamoe_rt_status_t
tamoe_rt_all_to_all_totals(tamoe_rt_context_t *context, tamoe_rt_group_t group,
                           const int32_t *counts, intptr_t entries,
                           const int64_t *steps, intptr_t num_steps,
                           intptr_t *totals);

/* The same exchange as tamoe_rt_all_to_all over the world, in the
 * hierarchical schedule: regroup, exchange within the node, regroup,
 * exchange between same-index ranks. Identical results. */
tamoe_rt_status_t tamoe_rt_all_to_all_hierarchical(
    tamoe_rt_context_t *context, const void *send, intptr_t send_capacity,
    intptr_t row_bytes, const int32_t *send_counts, intptr_t split,
    void *received, intptr_t recv_capacity, int32_t *recv_counts);

/* Dispatch and exchange with per-node de-duplication: each token crosses
 * to a node once (dedup_pack, exchange between same-index ranks, dedup_expand,
 * exchange within the node, regroup). `received` and recv_counts
 * [ranks, experts_per_rank] equal what tamoe_rt_dispatch followed by a flat
 * tamoe_rt_all_to_all (split = experts_per_rank) delivers. */
tamoe_rt_status_t tamoe_rt_dispatch_dedup(
    tamoe_rt_context_t *context, const void *tokens, intptr_t num_tokens,
    intptr_t row_bytes, const int32_t *expert_ids, const int32_t *positions,
    intptr_t k, intptr_t experts, void *received, intptr_t recv_capacity,
    int32_t *recv_counts);

/*===------------------------------------------------------------------===*
 * Gradients (vector-Jacobian products) of the layer's ops
 *===------------------------------------------------------------------===*/

/* What tamoe-differentiate emits for a layer's backward (docs/autodiff.md).
 * Each function takes the forward op's inputs or results that its gradient
 * needs and the gradients of the op's results, and writes the gradients of
 * its float operands. A gradient has its operand's element type (routing's
 * are f32) and accumulates in f32. The gradient
 * of tamoe_rt_dispatch is tamoe_rt_combine with null weights; that of an
 * all-to-all is the reverse all-to-all (the counts that were received sent
 * back); that of a regroup is the reverse regroup: those reuse the forward
 * entry points. Like every output, rows past the valid rows of a row
 * capacity are zero where a gradient below says so and unspecified
 * otherwise; nothing reads them. Where an output "may be null (not
 * computed)", a null pointer for an empty buffer is an empty output, not a
 * missing one (tamoe_rt_alloc returns null for 0 bytes). Sums whose order
 * is given ("in order") keep it on every backend (within one GEMM of the
 * cuda backend, cuBLAS's fixed order) and use no atomics: a result does not
 * vary from run to run, though the backends may round differently. */

/* tamoe.gate_grad: d_logits [tokens, experts] from the gate's results
 * probs [tokens, experts] and expert_ids [tokens, k] and the gradients of
 * its weights (d_weights [tokens, k]) and probs (d_probs [tokens, experts]);
 * either gradient may be null (zero), not both; expert_ids may be null
 * without d_weights. Top-k selection and group limits are piecewise
 * constant: a weight's gradient reaches its chosen score only, through the
 * renormalisation when `renormalize` is set, then through the softmax (over
 * all experts) or the sigmoid (elementwise). */
tamoe_rt_status_t tamoe_rt_gate_grad(tamoe_rt_context_t *context,
                                     const float *probs,
                                     const int32_t *expert_ids,
                                     intptr_t tokens, intptr_t experts,
                                     intptr_t k, tamoe_rt_score_t score,
                                     int32_t renormalize,
                                     const float *d_weights,
                                     const float *d_probs, float *d_logits);

/* tamoe.combine_grad, for tamoe_rt_combine(expert_outputs, positions,
 * weights) and its result's gradient d_combined [tokens, hidden]:
 * - d_expert_outputs [rows, hidden]: row positions[t, j] >= 0 gets
 *   weights[t, j] * d_combined[t] (d_combined[t] when weights is null),
 *   summed over the assignments that name it; rows no assignment names are
 *   zero;
 * - d_weights [tokens, k] (null: not computed; needs weights): the dot
 *   product of d_combined[t] and expert_outputs[positions[t, j]], 0 for a
 *   dropped assignment. expert_outputs may be null when d_weights is.
 * Either output may be null (not computed), not both. Rows add up their
 * assignments' terms in assignment order (t, then j). expert_outputs,
 * d_combined and d_expert_outputs are of `dtype`; weights and d_weights
 * f32. */
tamoe_rt_status_t tamoe_rt_combine_grad(
    tamoe_rt_context_t *context, tamoe_rt_dtype_t dtype,
    const void *expert_outputs, intptr_t rows, intptr_t hidden,
    const int32_t *positions, const float *weights, intptr_t tokens, intptr_t k,
    const void *d_combined, void *d_expert_outputs, float *d_weights);

/* tamoe.grouped_matmul_grad, for tamoe_rt_grouped_matmul(rows, counts,
 * weights) and its result's gradient d_result [rows_capacity,
 * out_features] (same sizes as the forward call):
 * - d_rows [rows_capacity, hidden]: chunk c of d_result times the
 *   transpose of weights[c % experts]; rows past the counts' sum are zero;
 * - d_weights [experts, hidden, out_features]: for each local expert l, the
 *   sum over its chunks c (c % experts == l, in order) of the transpose of
 *   chunk c of rows times chunk c of d_result; zero for an expert without
 *   rows.
 * Either output may be null (not computed), not both; rows may be null
 * without d_weights, weights without d_rows. Every buffer is of `dtype`. */
tamoe_rt_status_t tamoe_rt_grouped_matmul_grad(
    tamoe_rt_context_t *context, tamoe_rt_dtype_t dtype, const void *rows,
    intptr_t rows_capacity, intptr_t hidden, const int32_t *counts,
    intptr_t num_counts, intptr_t experts, const void *weights,
    intptr_t out_features, const void *d_result, void *d_rows, void *d_weights);

/* tamoe.aux_loss_grad: d_probs [tokens, experts] = d_loss * the gradient of
 * tamoe_rt_aux_loss (same expert_ids, positions and expert_weights) with
 * respect to probs, the dispatch fractions held constant: every token's row
 * is E / (k S^2) * count_e * w_e (w_e = 1 for the switch loss, null
 * expert_weights), with count_e the assignments the loss counts. d_loss is
 * one float in the backend's memory. */
tamoe_rt_status_t tamoe_rt_aux_loss_grad(tamoe_rt_context_t *context,
                                         const int32_t *expert_ids,
                                         const int32_t *positions,
                                         intptr_t tokens, intptr_t experts,
                                         intptr_t k,
                                         const float *expert_weights,
                                         const float *d_loss, float *d_probs);

/* tamoe.dedup_pack_grad, the transpose of tamoe_rt_dedup_pack on rows of
 * `hidden` elements of `dtype`: d_tokens [num_tokens, hidden] row t is the sum
 * of the rows of d_unique [unique_capacity, hidden] that the pack made of token
 * t (in node order; zero for a token it did not send). expert_ids, positions,
 * k, experts_per_node and nodes are the forward call's. */
tamoe_rt_status_t tamoe_rt_dedup_pack_grad(
    tamoe_rt_context_t *context, tamoe_rt_dtype_t dtype, const void *d_unique,
    intptr_t unique_capacity, intptr_t hidden, const int32_t *expert_ids,
    const int32_t *positions, intptr_t num_tokens, intptr_t k,
    intptr_t experts_per_node, intptr_t nodes, void *d_tokens);

/* tamoe.dedup_expand_grad, the reduction at the relay (the transpose of
 * tamoe_rt_dedup_expand on rows of `hidden` elements of `dtype`): d_unique
 * [unique_capacity, hidden] row i is the sum of the rows of d_expanded
 * [expanded_capacity, hidden] that the expansion made of unique row i (in
 * its route's order); rows past the recv_counts' sum are zero. routes,
 * recv_counts, nodes, ranks_per_node and experts_per_rank are the forward
 * call's. */
tamoe_rt_status_t tamoe_rt_dedup_expand_grad(
    tamoe_rt_context_t *context, tamoe_rt_dtype_t dtype, const void *d_expanded,
    intptr_t expanded_capacity, intptr_t hidden, const int32_t *routes,
    intptr_t unique_capacity, intptr_t k, const int32_t *recv_counts,
    intptr_t nodes, intptr_t ranks_per_node, intptr_t experts_per_rank,
    void *d_unique);

/*===------------------------------------------------------------------===*
 * Training: gradient reduction and optimizer steps
 *===------------------------------------------------------------------===*/

/* tamoe.all_reduce: data [n] f32 (backend memory) replaced in place by its
 * sum over the ranks of `group`, divided by the group's size when
 * `average` is set: how replicated (data-parallel) parameters' gradients
 * are combined. Fails on every rank alike (n must agree). Not counted in
 * tamoe_rt_traffic, which counts the exchanges' rows. */
tamoe_rt_status_t tamoe_rt_all_reduce(tamoe_rt_context_t *context,
                                      tamoe_rt_group_t group, float *data,
                                      intptr_t n, int32_t average);

/* tamoe.sgd, in place on n f32 parameters (PyTorch's SGD): g = grads +
 * weight_decay * params; velocity = momentum * velocity + g (velocity may
 * be null when momentum is 0: then it is g); params -= lr * velocity. */
tamoe_rt_status_t tamoe_rt_sgd(tamoe_rt_context_t *context, float *params,
                               const float *grads, float *velocity,
                               intptr_t n, float lr, float momentum,
                               float weight_decay);

/* tamoe.adam, in place on n f32 parameters (Adam with bias correction,
 * decoupled weight decay as AdamW): step >= 1 counts the updates, this one
 * included; m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
 * params -= lr * (weight_decay * params + (m / (1 - beta1^step)) /
 * (sqrt(v / (1 - beta2^step)) + eps)), eps > 0. */
tamoe_rt_status_t tamoe_rt_adam(tamoe_rt_context_t *context, float *params,
                                const float *grads, float *m, float *v,
                                intptr_t n, int64_t step, float lr,
                                float beta1, float beta2, float eps,
                                float weight_decay);

/*===------------------------------------------------------------------===*
 * Graphs: a step recorded once, replayed without the host
 *===------------------------------------------------------------------===*/

/* A recorded sequence of a context's operations: an opaque handle (not an
 * address the caller may read), never given out twice in a process. */
typedef struct tamoe_rt_graph tamoe_rt_graph_t;

/* Until tamoe_rt_graph_end, the context's operations are recorded, not
 * run: each checks its arguments and queues its work into the graph (on
 * the cuda backend, a CUDA graph captured from the compute stream), so a
 * step of many operations later runs with one launch and one wait instead
 * of a launch and a wait each. What needs the host in the middle of a step
 * cannot be recorded and fails (the recording with it): allocating or
 * freeing (allocate the step's buffers first), copies to or from the host,
 * tamoe_rt_synchronize, an exchange's counts read on the host
 * (tamoe_rt_all_to_all_counts), and collectives over more than one rank
 * (their counts travel through the launcher on the host). Exchanges over a
 * group of one rank are device copies and are recorded. No exchange may be
 * in flight when recording begins or ends. A recorded 16-bit
 * tamoe_rt_grouped_matmul gives each count rows_capacity / num_counts rows
 * (what a static-capacity program's buffers give it); a count above that
 * fails the launch. A graph keeps the addresses it was recorded with: its
 * buffers must outlive it (tamoe_rt_graph_destroy first). The cpu backend
 * computes on the host and has no graphs: TAMOE_RT_ERROR_BACKEND_UNAVAILABLE.
 */
tamoe_rt_status_t tamoe_rt_graph_begin(tamoe_rt_context_t *context);

/* Ends the recording. *graph gets the graph, or NULL when an operation
 * failed while recording: then this fails with that first failure
 * ("the recording failed: tamoe_rt_copy_to_host: ..."). */
tamoe_rt_status_t tamoe_rt_graph_end(tamoe_rt_context_t *context,
                                     tamoe_rt_graph_t **graph);

/* Runs the recorded operations on the buffers they were recorded with
 * (their contents as they are now) and waits for them. The checks that
 * need the data (expert ids in range, counts within capacity, ...) run on
 * the device as they do eagerly; the first one that fails stops the
 * kernels of the operations after it and fails the launch with the message
 * its operation would have given, naming it among the calls recorded:
 * "tamoe_rt_graph_launch: operation 3 of 9 (tamoe_rt_dispatch):
 * expert_ids[3, 1] = 9 is out of range [0, 8)". Only cuBLAS's GEMMs and
 * plain device copies and fills, which cannot read the status, still run:
 * a matmul into c_init = c still changes c, while tamoe_rt_sgd and
 * tamoe_rt_adam change nothing. */
tamoe_rt_status_t tamoe_rt_graph_launch(tamoe_rt_context_t *context,
                                        tamoe_rt_graph_t *graph);

/* Frees a graph of this context (NULL: nothing to do). tamoe_rt_finalize
 * frees those left, and ends a recording still open. */
tamoe_rt_status_t tamoe_rt_graph_destroy(tamoe_rt_context_t *context,
                                         tamoe_rt_graph_t *graph);

#ifdef __cplusplus
}
#endif

#endif /* TAMOE_RT_TAMOE_RT_H */
