//===- Backend.h - What a runtime backend implements ------------*- C++ -*-===//
//
// The C entry points (tamoe_rt.h) check their arguments, keep the context's
// error message and traffic counters, and compose the multi-stage schedules
// (hierarchical, de-duplicated) out of the primitives below. A backend
// implements the primitives for one kind of memory: the cpu backend on host
// memory over MPI, the cuda backend (a separate library, loaded on demand)
// on device memory over NCCL.
//
// Pointer arguments live in the backend's memory unless named `host...`.
// Each primitive has the semantics of the C function of the same name; the
// core has checked the arguments it can see (pointers, sizes), the backend
// checks the contents (ids, counts). Messages name the argument but not the
// function ("expert_ids[3, 1] = 9 is out of range [0, 8)"): the core
// prefixes "tamoe_rt_dispatch: ".
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_BACKEND_H
#define TAMOE_RT_LIB_BACKEND_H

#include "Timeline.h"
#include "tamoe_rt/tamoe_rt.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tamoe_rt {

/// A status code with its message ("" on success).
struct Status {
  tamoe_rt_status_t code = TAMOE_RT_SUCCESS;
  std::string message;

  static Status success() { return {}; }
  static Status error(tamoe_rt_status_t code, std::string message) {
    return {code, std::move(message)};
  }
  bool ok() const { return code == TAMOE_RT_SUCCESS; }
};

/// The ranks of the job as the launcher sees them, and host-side
/// collectives a backend uses to bootstrap its own communicators (the NCCL
/// unique ids) and to agree on errors. Implemented over MPI (MpiLauncher,
/// under mpirun) and over TCP (TcpLauncher, under torchrun). Ranks are
/// numbered node-major; the groups are tamoe_rt_group_t's. Every wait is
/// bounded by timeoutSeconds(); a timeout or a communication error leaves
/// the launcher broken (a collective is half done), and every later
/// collective fails with that first failure (brokenStatus).
class Launcher {
public:
  /// A value every rank of a group must pass alike (agreeOn).
  struct Value {
    const char *name;
    int64_t value;
  };

  virtual ~Launcher() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t numRanks() const = 0;
  virtual int64_t ranksPerNode() const = 0;
  /// Seconds a collective may wait before it fails with a timeout.
  virtual double timeoutSeconds() const = 0;
  /// Broadcasts `bytes` of host memory from the group's first rank to the
  /// rest of `group`.
  virtual Status broadcast(tamoe_rt_group_t group, void *hostData,
                           size_t bytes) = 0;
  /// Every rank of `group` learns the status of the first failing rank
  /// (lowest in the group), with that rank's message prefixed by its world
  /// rank ("rank 3: send is null"), identical everywhere: how collectives
  /// fail everywhere alike. Then, when every rank is in order, that every
  /// rank has the same `values`: MISMATCH naming the first rank that
  /// differs from the group's first (disagreement()).
  virtual Status agreeOn(tamoe_rt_group_t group, Status local,
                         const std::vector<Value> &values) = 0;
  Status agree(tamoe_rt_group_t group, Status local) {
    return agreeOn(group, std::move(local), {});
  }
  /// Exchanges `perPeer` int32 with every member of `group` (host memory):
  /// recv[i * perPeer ...] is what member i sent here. `what` names the
  /// operation in a failure's message.
  virtual Status allToAllInts(tamoe_rt_group_t group,
                              const std::vector<int32_t> &send, int perPeer,
                              std::vector<int32_t> &recv,
                              const std::string &what) = 0;
  /// The failure that broke the launcher (success while it is usable).
  virtual const Status &broken() const = 0;

  int64_t numNodes() const { return numRanks() / ranksPerNode(); }
  int64_t node() const { return rank() / ranksPerNode(); }
  int64_t localIndex() const { return rank() % ranksPerNode(); }
  int groupSize(tamoe_rt_group_t group) const {
    switch (group) {
    case TAMOE_RT_GROUP_NODE:
      return int(ranksPerNode());
    case TAMOE_RT_GROUP_PEERS:
      return int(numNodes());
    default:
      return int(numRanks());
    }
  }
  /// This rank's index in `group`; or world rank `of`'s in its own.
  int groupRank(tamoe_rt_group_t group) const {
    return int(groupRank(group, rank()));
  }
  int64_t groupRank(tamoe_rt_group_t group, int64_t of) const {
    switch (group) {
    case TAMOE_RT_GROUP_NODE:
      return of % ranksPerNode();
    case TAMOE_RT_GROUP_PEERS:
      return of / ranksPerNode();
    default:
      return of;
    }
  }
  /// The world rank of member `index` of this rank's `group`; or of world
  /// rank `of`'s.
  int64_t worldRankOf(tamoe_rt_group_t group, int64_t index) const {
    return worldRankOf(group, index, rank());
  }
  int64_t worldRankOf(tamoe_rt_group_t group, int64_t index, int64_t of) const {
    switch (group) {
    case TAMOE_RT_GROUP_NODE:
      return of / ranksPerNode() * ranksPerNode() + index;
    case TAMOE_RT_GROUP_PEERS:
      return index * ranksPerNode() + of % ranksPerNode();
    default:
      return index;
    }
  }
  /// "world", "node" or "peers", for messages.
  static const char *groupName(tamoe_rt_group_t group) {
    switch (group) {
    case TAMOE_RT_GROUP_NODE:
      return "node";
    case TAMOE_RT_GROUP_PEERS:
      return "peers";
    default:
      return "world";
    }
  }
  /// What agreeOn returns when member ranks disagree on a value.
  static Status disagreement(const char *name, int64_t firstRank, int64_t first,
                             int64_t otherRank, int64_t other) {
    return Status::error(TAMOE_RT_ERROR_MISMATCH,
                         "ranks disagree on " + std::string(name) + ": rank " +
                             std::to_string(firstRank) + " has " +
                             std::to_string(first) + ", rank " +
                             std::to_string(otherRank) + " has " +
                             std::to_string(other));
  }
  /// What a collective returns on a broken launcher.
  Status brokenStatus() const {
    return Status::error(broken().code,
                         "the context is unusable after an earlier failure (" +
                             broken().message + "); finalize it");
  }
};

/// Bytes of rows one exchange sent from this rank to other ranks, by where
/// the receiver is. Rows a rank sends to itself cross no link and are not
/// counted; neither are counts and agreements.
struct Traffic {
  int64_t intraNodeBytes = 0;
  int64_t interNodeBytes = 0;
};

/// Where part `index` of `parts` of a block of `rows` rows begins (and part
/// index - 1 ends): floor(index * rows / parts), in int64 (index <= parts
/// and rows are int32, so the product fits).
inline int64_t partBegin(int64_t rows, int64_t index, int64_t parts) {
  return index * rows / parts;
}

/// An exchange between Backend::allToAllStart and allToAllWait. A backend
/// that overlaps the rows' transfer keeps its requests and the buffers they
/// use in a subclass.
struct PendingExchange {
  virtual ~PendingExchange() = default;
  /// What the exchange sends, added to the context's counters when it
  /// completes.
  Traffic traffic;
  /// Completed at teardown, never waited for: the program's recv_counts
  /// may be freed already, so the wait must not write them.
  bool abandoned = false;
};

class Backend {
public:
  virtual ~Backend() = default;
  virtual tamoe_rt_backend_t kind() const = 0;

  virtual Status alloc(intptr_t bytes, void **pointer) = 0;
  virtual Status free(void *pointer) = 0;
  virtual Status copyToBackend(void *destination, const void *hostSource,
                               intptr_t bytes) = 0;
  virtual Status copyToHost(void *hostDestination, const void *source,
                            intptr_t bytes) = 0;
  virtual Status synchronize() = 0;

  /// The timeline of TAMOE_RT_TIMELINE (Timeline.h). The core brackets
  /// every operation it times with timelineBegin / timelineEnd, and a
  /// backend adds its exchanges' transfers ("comm"). This default keeps the
  /// host clock, where a synchronous backend's work happens; the cuda
  /// backend times its streams with events instead.
  virtual void startTimeline() { hostTimeline.start(); }
  virtual void timelineBegin(const char *name) { hostTimeline.begin(name); }
  virtual void timelineEnd() { hostTimeline.end(); }
  /// What was recorded, and how many intervals past kTimelineLimit were
  /// left out.
  virtual Status timeline(std::vector<TimelineInterval> &intervals,
                          int64_t &dropped) {
    intervals = hostTimeline.all();
    dropped = hostTimeline.droppedCount();
    return Status::success();
  }
  /// tamoe_rt_convert (the core has checked the types, sizes and overlap).
  virtual Status convert(tamoe_rt_dtype_t srcType, const void *src,
                         tamoe_rt_dtype_t dstType, void *dst, intptr_t n) = 0;

  virtual Status gate(const float *logits, intptr_t tokens, intptr_t experts,
                      intptr_t k, tamoe_rt_score_t score, bool renormalize,
                      intptr_t numGroups, intptr_t groupsKept,
                      int32_t *expertIds, float *weights, float *probs) = 0;
  virtual Status dispatch(const void *tokens, intptr_t numTokens,
                          intptr_t rowBytes, const int32_t *expertIds,
                          intptr_t k, intptr_t experts, const float *weights,
                          intptr_t capacity, tamoe_rt_drop_t drop,
                          void *dispatched, intptr_t dispatchedCapacity,
                          int32_t *expertCounts, int32_t *positions,
                          int64_t *numDropped) = 0;
  virtual Status combine(const float *expertOutputs, intptr_t rows,
                         intptr_t hidden, const int32_t *positions,
                         const float *weights, intptr_t tokens, intptr_t k,
                         float *combined) = 0;
  virtual Status auxLoss(const float *probs, const int32_t *expertIds,
                         const int32_t *positions,
                         intptr_t tokens, intptr_t experts, intptr_t k,
                         const float *expertWeights, float *loss) = 0;
  virtual Status regroup(const void *rows, intptr_t rowsCapacity,
                         intptr_t rowBytes, const int32_t *counts, intptr_t a,
                         intptr_t b, intptr_t inner, void *regrouped,
                         int32_t *regroupedCounts) = 0;
  virtual Status dedupPack(const void *tokens, intptr_t numTokens,
                           intptr_t rowBytes, const int32_t *expertIds,
                           const int32_t *positions, intptr_t k,
                           intptr_t expertsPerNode, intptr_t nodes,
                           void *unique, int32_t *routes,
                           intptr_t uniqueCapacity, int32_t *nodeCounts) = 0;
  virtual Status dedupExpand(const void *unique, const int32_t *routes,
                             intptr_t uniqueCapacity, intptr_t rowBytes,
                             intptr_t k, const int32_t *recvCounts,
                             intptr_t nodes, intptr_t ranksPerNode,
                             intptr_t expertsPerRank, void *expanded,
                             intptr_t expandedCapacity,
                             int32_t *expandedCounts) = 0;
  /// One variable-count exchange over `group`; adds what it sent to
  /// `traffic`. Fails on every rank of the group alike. The core calls it
  /// once every rank of the group has passed the core's argument checks and
  /// agreed on rowBytes and split.
  virtual Status allToAll(tamoe_rt_group_t group, const void *send,
                          intptr_t sendCapacity, intptr_t rowBytes,
                          const int32_t *sendCounts, intptr_t split,
                          void *received, intptr_t recvCapacity,
                          int32_t *recvCounts, Traffic &traffic) = 0;
  /// tamoe_rt_all_to_all_start: settles the core's verdict on this rank's
  /// arguments (`local`; the pointers are not touched when it failed) and
  /// the agreement on rowBytes and split with the group, failing on every
  /// rank alike (at once, or at the wait when the settle runs in the
  /// background), and starts moving the rows; `pending` gets what
  /// allToAllWait needs.
  virtual Status allToAllStart(Launcher &launcher, Status local,
                               tamoe_rt_group_t group, const void *send,
                               intptr_t sendCapacity, intptr_t rowBytes,
                               const int32_t *sendCounts, intptr_t split,
                               void *received, intptr_t recvCapacity,
                               int32_t *recvCounts,
                               std::unique_ptr<PendingExchange> &pending) = 0;
  /// Completes `pending` (bounded by the launcher's timeout), fills its
  /// recvCounts, adds its traffic to `traffic` and releases it (or, when MPI
  /// may still write into its buffers after a failure, leaks it).
  virtual Status allToAllWait(std::unique_ptr<PendingExchange> pending,
                              Traffic &traffic) = 0;
  /// Lets the exchanges in flight move. The core calls it at the entry of
  /// every operation that computes, and a backend whose transfers progress
  /// only inside its communication library's calls (MPI) calls it inside
  /// long computations too; a no-op where transfers progress by themselves
  /// or nothing is in flight.
  virtual void progress() {}

  /// A graph a backend recorded (tamoe_rt_graph_*); freed with it.
  struct RecordedGraph {
    virtual ~RecordedGraph() = default;
    /// The program's calls it recorded (the core counts them).
    int64_t calls = 0;
  };
  /// Graphs: between beginGraph and endGraph the backend records the
  /// operations it is called for instead of running them, and refuses
  /// those that need the host mid-step (the core refuses allocation and
  /// exchanges in flight itself). endGraph always ends the recording;
  /// `graph` is what it recorded (the core drops it when an operation
  /// failed meanwhile). launchGraph runs it and waits. This default
  /// records nothing.
  virtual Status beginGraph() {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "the cpu backend computes on the host, where there "
                         "is nothing to record; graphs need the cuda backend");
  }
  virtual Status endGraph(std::unique_ptr<RecordedGraph> & /*graph*/) {
    return Status::success();
  }
  virtual Status launchGraph(RecordedGraph & /*graph*/) {
    return Status::success();
  }
  /// The entry point running now ("tamoe_rt_dispatch"; the core sets it),
  /// so that a recorded operation's failure names it at the launch.
  const char *operationName = "";
  /// While recording, which of the recorded calls is running (1-based; a
  /// composite call's operations share it).
  int64_t operationCall = 0;

  /// tamoe_rt_chunk and tamoe_rt_unchunk (the core has checked the sizes,
  /// pointers and overlaps; the backend checks the counts). Not pure, as
  /// groupedMatmul.
  virtual Status chunk(const void * /*rows*/, intptr_t /*rowsCapacity*/,
                       intptr_t /*rowBytes*/, const int32_t * /*counts*/,
                       intptr_t /*numCounts*/, intptr_t /*index*/,
                       intptr_t /*chunks*/, void * /*chunkRows*/,
                       intptr_t /*chunkCapacity*/, int32_t * /*chunkCounts*/) {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "this backend has no chunk");
  }
  virtual Status unchunk(const void * /*chunkRows*/, intptr_t /*chunkCapacity*/,
                         intptr_t /*rowBytes*/, const int32_t * /*counts*/,
                         intptr_t /*numCounts*/, intptr_t /*index*/,
                         intptr_t /*chunks*/, void * /*rows*/,
                         intptr_t /*rowsCapacity*/) {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "this backend has no unchunk");
  }
  /// tamoe_rt_chunk_positions (the core has checked sizes, pointers and
  /// overlaps; the backend checks the counts, ids and positions).
  virtual Status chunkPositions(const int32_t * /*positions*/,
                                const int32_t * /*expertIds*/,
                                intptr_t /*tokens*/, intptr_t /*k*/,
                                const int32_t * /*expertCounts*/,
                                intptr_t /*experts*/, intptr_t /*index*/,
                                intptr_t /*chunks*/,
                                int32_t * /*chunkPositions*/) {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "this backend has no chunk_positions");
  }
  /// tamoe_rt_matmul and tamoe_rt_map (the core has checked sizes and
  /// pointers; `op` is a valid tamoe_rt_map_t).
  virtual Status matmul(const float *a, const float *b, intptr_t m, intptr_t k,
                        intptr_t n, bool transposeA, bool transposeB,
                        const float *cInit, float *c) = 0;
  virtual Status map(tamoe_rt_map_t op, const float *a, const float *b,
                     intptr_t n, float *out) = 0;
  /// Whether the row operations' 16-bit entry points (combineRows, mapRows,
  /// groupedMatmulRows, groupedMatmulGradRows) take rows of `dtype` (bf16 or
  /// f16) as they are; otherwise the core stages them through f32 for the
  /// f32 primitives.
  virtual bool takesRows(tamoe_rt_dtype_t /*dtype*/) const { return false; }
  /// tamoe_rt_combine on 16-bit rows that takesRows: the weighted sum in
  /// f32, in slot order, rounded once (the staged path's result).
  virtual Status combineRows(tamoe_rt_dtype_t /*dtype*/,
                             const void * /*expertOutputs*/, intptr_t /*rows*/,
                             intptr_t /*hidden*/, const int32_t * /*positions*/,
                             const float * /*weights*/, intptr_t /*tokens*/,
                             intptr_t /*k*/, void * /*combined*/) {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "this backend has no 16-bit combine");
  }
  /// Whether matmulRows takes operands of these types as they are (some
  /// 16-bit); otherwise the core stages them through f32 for matmul.
  virtual bool matmulTakes(tamoe_rt_dtype_t /*aType*/,
                           tamoe_rt_dtype_t /*bType*/,
                           tamoe_rt_dtype_t /*cType*/) const {
    return false;
  }
  /// tamoe_rt_matmul on operands of types that matmulTakes: f32 sums (c_init
  /// added in f32) and c rounded once, the staged path's semantics up to
  /// the order of the sums.
  virtual Status matmulRows(tamoe_rt_dtype_t /*aType*/,
                            tamoe_rt_dtype_t /*bType*/,
                            tamoe_rt_dtype_t /*cType*/, const void * /*a*/,
                            const void * /*b*/, intptr_t /*m*/, intptr_t /*k*/,
                            intptr_t /*n*/, bool /*transposeA*/,
                            bool /*transposeB*/, const void * /*cInit*/,
                            void * /*c*/) {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "this backend has no 16-bit matmul");
  }
  /// tamoe_rt_map on 16-bit elements that takesRows: each computed in f32
  /// and rounded once, the staged path's result.
  virtual Status mapRows(tamoe_rt_map_t /*op*/, tamoe_rt_dtype_t /*dtype*/,
                         const void * /*a*/, const void * /*b*/, intptr_t /*n*/,
                         void * /*out*/) {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "this backend has no 16-bit map");
  }
  /// tamoe_rt_add_counts (the core has checked n and the pointers; the
  /// backend checks the sums).
  virtual Status addCounts(const int32_t *a, const int32_t *b, intptr_t n,
                           int32_t *out) = 0;
  /// tamoe_rt_grouped_matmul. Not pure, so that a backend that lacks it
  /// still builds; it then fails with TAMOE_RT_ERROR_BACKEND_UNAVAILABLE.
  virtual Status groupedMatmul(const float * /*rows*/,
                               intptr_t /*rowsCapacity*/, intptr_t /*hidden*/,
                               const int32_t * /*counts*/,
                               intptr_t /*numCounts*/, intptr_t /*experts*/,
                               const float * /*weights*/,
                               intptr_t /*outFeatures*/, float * /*result*/) {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "this backend has no grouped_matmul");
  }
  /// tamoe_rt_grouped_matmul on rows, weights and result of a 16-bit
  /// `dtype` that takesRows: products summed in f32 and each
  /// result rounded once, as the staged path computes up to the order of
  /// the sums (on the GPU: tensor cores, with no f32 copy of the operands).
  virtual Status
  groupedMatmulRows(tamoe_rt_dtype_t /*dtype*/, const void * /*rows*/,
                    intptr_t /*rowsCapacity*/, intptr_t /*hidden*/,
                    const int32_t * /*counts*/, intptr_t /*numCounts*/,
                    intptr_t /*experts*/, const void * /*weights*/,
                    intptr_t /*outFeatures*/, void * /*result*/) {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "this backend has no 16-bit grouped_matmul");
  }

  /// The gradients of tamoe_rt.h (tamoe_rt_gate_grad, ...). A null output
  /// is not computed; the core has checked that at least one is wanted.
  virtual Status gateGrad(const float *probs, const int32_t *expertIds,
                          intptr_t tokens, intptr_t experts, intptr_t k,
                          tamoe_rt_score_t score, bool renormalize,
                          const float *dWeights, const float *dProbs,
                          float *dLogits) = 0;
  virtual Status combineGrad(const float *expertOutputs, intptr_t rows,
                             intptr_t hidden, const int32_t *positions,
                             const float *weights, intptr_t tokens, intptr_t k,
                             const float *dCombined, float *dExpertOutputs,
                             float *dWeights) = 0;
  virtual Status groupedMatmulGrad(const float *rows, intptr_t rowsCapacity,
                                   intptr_t hidden, const int32_t *counts,
                                   intptr_t numCounts, intptr_t experts,
                                   const float *weights, intptr_t outFeatures,
                                   const float *dResult, float *dRows,
                                   float *dWeights) = 0;
  /// tamoe_rt_grouped_matmul_grad on 16-bit buffers of a `dtype` that
  /// takesRows: each gradient summed in f32 (d_weights across all
  /// of an expert's blocks, in order) and rounded once, as the staged path
  /// computes up to the order of the sums.
  virtual Status
  groupedMatmulGradRows(tamoe_rt_dtype_t /*dtype*/, const void * /*rows*/,
                        intptr_t /*rowsCapacity*/, intptr_t /*hidden*/,
                        const int32_t * /*counts*/, intptr_t /*numCounts*/,
                        intptr_t /*experts*/, const void * /*weights*/,
                        intptr_t /*outFeatures*/, const void * /*dResult*/,
                        void * /*dRows*/, void * /*dWeights*/) {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "this backend has no 16-bit grouped_matmul_grad");
  }
  virtual Status auxLossGrad(const int32_t *expertIds, const int32_t *positions,
                             intptr_t tokens, intptr_t experts, intptr_t k,
                             const float *expertWeights, const float *dLoss,
                             float *dProbs) = 0;
  virtual Status dedupPackGrad(const float *dUnique, intptr_t uniqueCapacity,
                               intptr_t hidden, const int32_t *expertIds,
                               const int32_t *positions, intptr_t numTokens,
                               intptr_t k, intptr_t expertsPerNode,
                               intptr_t nodes, float *dTokens) = 0;
  virtual Status dedupExpandGrad(const float *dExpanded,
                                 intptr_t expandedCapacity, intptr_t hidden,
                                 const int32_t *routes, intptr_t uniqueCapacity,
                                 intptr_t k, const int32_t *recvCounts,
                                 intptr_t nodes, intptr_t ranksPerNode,
                                 intptr_t expertsPerRank, float *dUnique) = 0;

  /// tamoe_rt_all_reduce, once every rank of the group has passed the
  /// core's checks and agreed on n and average. Fails on every rank of the
  /// group alike.
  virtual Status allReduce(tamoe_rt_group_t group, float *data, intptr_t n,
                           bool average) = 0;
  /// tamoe_rt_sgd and tamoe_rt_adam (the hyperparameters are checked).
  virtual Status sgd(float *params, const float *grads, float *velocity,
                     intptr_t n, float lr, float momentum,
                     float weightDecay) = 0;
  virtual Status adam(float *params, const float *grads, float *m, float *v,
                      intptr_t n, int64_t step, float lr, float beta1,
                      float beta2, float eps, float weightDecay) = 0;

protected:
  HostTimeline hostTimeline;
};

} // namespace tamoe_rt

/// The entry point of the cuda backend's library (libtamoe_rt_cuda.so),
/// found with dlsym. Returns null and sets `error` when there is no usable
/// GPU ("no GPU: ...").
extern "C" tamoe_rt::Backend *
tamoe_rt_create_cuda_backend(tamoe_rt::Launcher *launcher,
                             tamoe_rt::Status *error);

/// The TAMOE_RT_BACKEND_ABI the library was built with (BackendAbi.cmake):
/// the core creates no backend from a library built from other versions
/// of this interface.
extern "C" const char *tamoe_rt_cuda_backend_abi(void);

#endif // TAMOE_RT_LIB_BACKEND_H
