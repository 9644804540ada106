//===- CpuBackend.h - Host memory, plain loops and MPI ----------*- C++ -*-===//
//
// The cpu backend: buffers are host memory, the local operations are plain
// serial loops (the reference the cuda backend is tested against), and the
// exchanges are MPI_Ialltoallv on the launcher's communicators.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_CPUBACKEND_H
#define TAMOE_RT_LIB_CPUBACKEND_H

#include "Backend.h"
#include "MpiLauncher.h"

#include <memory>
#include <unordered_map>
#include <vector>

namespace tamoe_rt {

/// A member's failure as the settle shares it: its status code and
/// message, the message cut to what fits (the messages are a line).
struct SharedFailure {
  int64_t code = 0, length = 0;
  char text[4080] = {};
};

/// An exchange in flight: both of its rounds and everything they use, which
/// must outlive their requests (several exchanges may be in flight, so none
/// of it can be the backend's).
///
/// Round 1, the settle, is posted at start on the group's communicator, in
/// program order like every other collective there: each member's failure
/// code, recv_capacity, row_bytes, split and row counts. Once it is in,
/// every member reaches the same verdict from the same numbers, and round 2
/// follows on the group's transfer communicator: the rows (with the split's
/// counts), or, when a member failed, that member's message. Rounds 2 are
/// posted in start order, which is the same on every rank however far each
/// has got, but not program order (a later blocking collective may complete
/// first), hence a communicator of their own.
struct CpuExchange final : PendingExchange {
  ~CpuExchange() override {
    if (row != MPI_DATATYPE_NULL)
      MPI_Type_free(&row);
  }
  enum class Phase {
    Settling, ///< round 1 in flight
    Moving,   ///< the rows in flight
    Sharing,  ///< a member's failure message in flight
    Refused,  ///< a verdict every member reached alone (`verdict`)
  };
  Phase phase = Phase::Settling;
  tamoe_rt_group_t group = TAMOE_RT_GROUP_WORLD;
  /// What round 2 needs of the arguments.
  const void *send = nullptr;
  void *received = nullptr;
  int64_t rowBytes = 0, split = 1;
  /// This rank's own verdict on its arguments, shared if round 1 names it.
  Status local;
  /// Round 1's buffers: this rank's part and every member's (an allgather;
  /// in a large group a SUM allreduce of per-member slots and an alltoall
  /// of the row counts, see allToAllStart).
  bool gathered = true;
  std::vector<int64_t> settleIn, settleOut;
  std::vector<int32_t> rowsIn, rowsOut;
  /// The requests of the current round; `posted` of them were started.
  MPI_Request requests[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  int posted = 0;
  Status verdict;
  SharedFailure failure;
  int failedMember = -1;
  /// The row type, kept until the requests complete (some MPI versions
  /// mishandle a type freed under a pending nonblocking collective).
  MPI_Datatype row = MPI_DATATYPE_NULL;
  std::vector<int> sendRows, sendOffsets, recvRows, recvOffsets;
  std::vector<int32_t> countsIn, countsOut;
  /// Where countsOut goes once the rows are in.
  int32_t *recvCounts = nullptr;
  /// An error that progress() met, reported by the wait.
  int error = MPI_SUCCESS;
  /// When the rows were posted (timeline microseconds; -1 when no timeline
  /// is recorded), until the rank saw them in (progress() or the wait).
  double rowsPostedUs = -1;
};

class CpuBackend final : public Backend {
public:
  explicit CpuBackend(MpiLauncher &launcher) : launcher(launcher) {}
  ~CpuBackend() override;

  tamoe_rt_backend_t kind() const override { return TAMOE_RT_BACKEND_CPU; }

  Status alloc(intptr_t bytes, void **pointer) override;
  Status free(void *pointer) override;
  Status copyToBackend(void *destination, const void *hostSource,
                       intptr_t bytes) override;
  Status copyToHost(void *hostDestination, const void *source,
                    intptr_t bytes) override;
  Status synchronize() override { return Status::success(); }
  Status convert(tamoe_rt_dtype_t srcType, const void *src,
                 tamoe_rt_dtype_t dstType, void *dst, intptr_t n) override;

  Status gate(const float *logits, intptr_t tokens, intptr_t experts,
              intptr_t k, tamoe_rt_score_t score, bool renormalize,
              intptr_t numGroups, intptr_t groupsKept, int32_t *expertIds,
              float *weights, float *probs) override;
  Status dispatch(const void *tokens, intptr_t numTokens, intptr_t rowBytes,
                  const int32_t *expertIds, intptr_t k, intptr_t experts,
                  const float *weights, intptr_t capacity, tamoe_rt_drop_t drop,
                  void *dispatched, intptr_t dispatchedCapacity,
                  int32_t *expertCounts, int32_t *positions,
                  int64_t *numDropped) override;
  Status combine(const float *expertOutputs, intptr_t rows, intptr_t hidden,
                 const int32_t *positions, const float *weights,
                 intptr_t tokens, intptr_t k, float *combined) override;
  Status groupedMatmul(const float *rows, intptr_t rowsCapacity,
                       intptr_t hidden, const int32_t *counts,
                       intptr_t numCounts, intptr_t experts,
                       const float *weights, intptr_t outFeatures,
                       float *result) override;
  Status matmul(const float *a, const float *b, intptr_t m, intptr_t k,
                intptr_t n, bool transposeA, bool transposeB,
                const float *cInit, float *c) override;
  Status map(tamoe_rt_map_t op, const float *a, const float *b, intptr_t n,
             float *out) override;
  Status addCounts(const int32_t *a, const int32_t *b, intptr_t n,
                   int32_t *out) override;
  Status auxLoss(const float *probs, const int32_t *expertIds,
                 const int32_t *positions, intptr_t tokens,
                 intptr_t experts, intptr_t k, const float *expertWeights,
                 float *loss) override;
  Status regroup(const void *rows, intptr_t rowsCapacity, intptr_t rowBytes,
                 const int32_t *counts, intptr_t a, intptr_t b, intptr_t inner,
                 void *regrouped, int32_t *regroupedCounts) override;
  Status dedupPack(const void *tokens, intptr_t numTokens, intptr_t rowBytes,
                   const int32_t *expertIds, const int32_t *positions,
                   intptr_t k, intptr_t expertsPerNode, intptr_t nodes,
                   void *unique, int32_t *routes, intptr_t uniqueCapacity,
                   int32_t *nodeCounts) override;
  Status dedupExpand(const void *unique, const int32_t *routes,
                     intptr_t uniqueCapacity, intptr_t rowBytes, intptr_t k,
                     const int32_t *recvCounts, intptr_t nodes,
                     intptr_t ranksPerNode, intptr_t expertsPerRank,
                     void *expanded, intptr_t expandedCapacity,
                     int32_t *expandedCounts) override;
  /// allToAllStart on arguments that every rank agreed on, then the wait.
  Status allToAll(tamoe_rt_group_t group, const void *send,
                  intptr_t sendCapacity, intptr_t rowBytes,
                  const int32_t *sendCounts, intptr_t split, void *received,
                  intptr_t recvCapacity, int32_t *recvCounts,
                  Traffic &traffic) override;
  /// Posts the settle of this rank's arguments with the group (`local`,
  /// the core's verdict on them; the pointers are not touched when it
  /// failed) and returns: the verdict, the same on every member, is
  /// reached when round 1 is in (progress() or the wait), and the wait
  /// reports it. A checked exchange costs two rounds, as MPI_Alltoall +
  /// MPI_Alltoallv do, and neither blocks. `launcher` is this backend's.
  Status allToAllStart(Launcher &launcher, Status local, tamoe_rt_group_t group,
                       const void *send, intptr_t sendCapacity,
                       intptr_t rowBytes, const int32_t *sendCounts,
                       intptr_t split, void *received, intptr_t recvCapacity,
                       int32_t *recvCounts,
                       std::unique_ptr<PendingExchange> &pending) override;
  /// Settles the exchanges started before `pending` and `pending` itself
  /// (blocking, within the timeout), then completes it and reports its
  /// verdict.
  Status allToAllWait(std::unique_ptr<PendingExchange> pending,
                      Traffic &traffic) override;
  /// Tests every exchange in flight: a settle that is in posts its round 2
  /// (in start order: an exchange still settling holds back those after
  /// it), and the rounds 2 move.
  void progress() override;
  Status chunk(const void *rows, intptr_t rowsCapacity, intptr_t rowBytes,
               const int32_t *counts, intptr_t numCounts, intptr_t index,
               intptr_t chunks, void *chunkRows, intptr_t chunkCapacity,
               int32_t *chunkCounts) override;
  Status chunkPositions(const int32_t *positions, const int32_t *expertIds,
                        intptr_t tokens, intptr_t k,
                        const int32_t *expertCounts, intptr_t experts,
                        intptr_t index, intptr_t chunks,
                        int32_t *chunkPositions) override;
  Status unchunk(const void *chunkRows, intptr_t chunkCapacity,
                 intptr_t rowBytes, const int32_t *counts, intptr_t numCounts,
                 intptr_t index, intptr_t chunks, void *rows,
                 intptr_t rowsCapacity) override;
  Status gateGrad(const float *probs, const int32_t *expertIds, intptr_t tokens,
                  intptr_t experts, intptr_t k, tamoe_rt_score_t score,
                  bool renormalize, const float *dWeights, const float *dProbs,
                  float *dLogits) override;
  Status combineGrad(const float *expertOutputs, intptr_t rows, intptr_t hidden,
                     const int32_t *positions, const float *weights,
                     intptr_t tokens, intptr_t k, const float *dCombined,
                     float *dExpertOutputs, float *dWeights) override;
  Status groupedMatmulGrad(const float *rows, intptr_t rowsCapacity,
                           intptr_t hidden, const int32_t *counts,
                           intptr_t numCounts, intptr_t experts,
                           const float *weights, intptr_t outFeatures,
                           const float *dResult, float *dRows,
                           float *dWeights) override;
  Status auxLossGrad(const int32_t *expertIds, const int32_t *positions,
                     intptr_t tokens, intptr_t experts, intptr_t k,
                     const float *expertWeights, const float *dLoss,
                     float *dProbs) override;
  Status dedupPackGrad(const float *dUnique, intptr_t uniqueCapacity,
                       intptr_t hidden, const int32_t *expertIds,
                       const int32_t *positions, intptr_t numTokens, intptr_t k,
                       intptr_t expertsPerNode, intptr_t nodes,
                       float *dTokens) override;
  Status dedupExpandGrad(const float *dExpanded, intptr_t expandedCapacity,
                         intptr_t hidden, const int32_t *routes,
                         intptr_t uniqueCapacity, intptr_t k,
                         const int32_t *recvCounts, intptr_t nodes,
                         intptr_t ranksPerNode, intptr_t expertsPerRank,
                         float *dUnique) override;
  /// MPI_Iallreduce in place (rank-identical sums in MPI's order), then the
  /// division by the group's size.
  Status allReduce(tamoe_rt_group_t group, float *data, intptr_t n,
                   bool average) override;
  Status sgd(float *params, const float *grads, float *velocity, intptr_t n,
             float lr, float momentum, float weightDecay) override;
  Status adam(float *params, const float *grads, float *m, float *v, intptr_t n,
              int64_t step, float lr, float beta1, float beta2, float eps,
              float weightDecay) override;

  /// A row of dedupExpand's output before the sort: its key, and the route
  /// entry (unique row, slot) it comes from.
  struct Expansion {
    intptr_t destination, source, expert, row, slot;
  };

private:
  /// dedup_expand's rows in their order, into `entries`, after checking
  /// recv_counts and routes.
  Status expand(const int32_t *routes, intptr_t uniqueCapacity, intptr_t k,
                const int32_t *recvCounts, intptr_t nodes,
                intptr_t ranksPerNode, intptr_t expertsPerRank);

  MpiLauncher &launcher;
  // Freed blocks by size, for reuse: a compiled layer allocates the same
  // buffers at every step, and fresh pages fault on first touch. Up to
  // kCacheBytes; not under AddressSanitizer, which must see every free.
  std::unordered_map<size_t, std::vector<void *>> cache;
  std::unordered_map<void *, size_t> blockBytes;
  size_t cachedBytes = 0;
  // Scratch of the local operations, kept between calls: fresh memory of
  // this size costs page faults on every call.
  std::vector<intptr_t> start, next, order, byWeight;
  // Where the de-duplication puts a (node, token) or a route entry.
  std::vector<intptr_t> rowIndex;
  std::vector<char> kept;
  std::vector<Expansion> arrivals, entries;
  // The exchanges started and not yet waited (owned by their handles), in
  // start order, which progress() tests.
  std::vector<CpuExchange *> inFlight;

  /// Round 1 of `x` is in: reaches the verdict and posts round 2.
  Status settle(CpuExchange &x);
  /// Adds `x`'s rows to the timeline once the rank has seen them in.
  void timeRows(CpuExchange &x);
  /// Settles the exchanges in flight in start order: all of them up to and
  /// including `until` (waiting until `deadline`), then those whose round 1
  /// is in already, stopping at the first that is not.
  Status settleInOrder(const CpuExchange *until, Clock::time_point deadline);
};

} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_CPUBACKEND_H
