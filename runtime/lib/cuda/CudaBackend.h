//===- CudaBackend.h - The cuda backend of the tamoe runtime ------*- C++
//-*-===//
//
// Device memory, CUDA kernels and NCCL. One backend owns one device (the
// rank's local index modulo the devices it sees), one stream, a stream-ordered
// memory pool for temporaries, and a communicator for each group of
// tamoe_rt_group_t.
//
// Every operation runs on the backend's stream. Operations that validate
// their data on the device (all but gate) wait for the stream at the end so
// that they can return the error they found as a Status; gate returns as soon
// as its kernel is queued. They share one frame (CudaBackend::Frame): the
// device made current, the operands checked, the status word cleared, the
// work queued through an executor, its temporaries returned, the outcome
// read. The stream is a blocking stream, so work that a caller queues on the
// legacy default stream (plain cudaMemcpy, events recorded on stream 0) is
// ordered with the backend's work. NCCL runs on a
// second stream, the communication stream: an exchange's rows travel there
// between tamoe_rt_all_to_all_start and _wait, so that the operations in
// between compute while they move; events order the two.
//
// The implementation is split by what needs nvcc: Kernels.cu has the local
// operations, CudaBackend.cpp the device, memory and communication parts.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_CUDA_CUDABACKEND_H
#define TAMOE_RT_LIB_CUDA_CUDABACKEND_H

#include "../Backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

namespace tamoe_rt {
namespace cuda {

struct DeviceStatus;

/// A Status for a failed CUDA call: what was attempted, the CUDA error.
Status cudaFailure(cudaError_t error, const std::string &what);

/// Makes the backend's device current for a scope and restores the caller's.
class DeviceScope {
public:
  explicit DeviceScope(int device);
  DeviceScope(const DeviceScope &) = delete;
  DeviceScope &operator=(const DeviceScope &) = delete;
  ~DeviceScope();
  const Status &status() const { return status_; }

private:
  int previous_ = -1;
  Status status_;
};

/// An exchange whose rows are on the communication stream.
struct CudaExchange final : PendingExchange {
  ~CudaExchange() override {
    for (cudaEvent_t event : {ready, done})
      if (event)
        cudaEventDestroy(event);
  }
  tamoe_rt_group_t group = TAMOE_RT_GROUP_WORLD;
  /// Recorded on the compute stream before the rows (the communication
  /// stream waits for it) and on the communication stream after them.
  cudaEvent_t ready = nullptr, done = nullptr;
  /// A failure while posting the rows, or while writing recv_counts after
  /// the verdict (the rows are posted all the same, so that the peers'
  /// exchange completes); the wait agrees on them.
  Status posted, countsWritten;
  /// A group of one rank: the rows were copied on the compute stream at
  /// the start (selfExchange), so there is nothing to wait for.
  bool local = false;
};

/// One NCCL communicator and where this rank sits in its group.
struct Communicator {
  ncclComm_t comm = nullptr;
  int size = 1;
  int index = 0;
  /// Why the communicator is unusable (it was aborted), "" while usable.
  std::string broken;
};

class CudaBackend final : public Backend {
public:
  /// Selects the device and builds the stream, pool and communicators; the
  /// collective parts run over every rank, so all ranks call it together.
  static Backend *create(Launcher *launcher, Status *error);
  ~CudaBackend() override;

  tamoe_rt_backend_t kind() const override { return TAMOE_RT_BACKEND_CUDA; }

  Status alloc(intptr_t bytes, void **pointer) override;
  Status free(void *pointer) override;
  Status copyToBackend(void *destination, const void *hostSource,
                       intptr_t bytes) override;
  Status copyToHost(void *hostDestination, const void *source,
                    intptr_t bytes) override;
  Status synchronize() override;
  /// A CUDA graph captured from the compute stream. Each
  /// recorded operation is followed by a one-thread stamp that writes its
  /// index into the status word if it failed; the launch reads the word
  /// once, at the end, and describes the failure as that operation would
  /// have eagerly.
  Status beginGraph() override;
  Status endGraph(std::unique_ptr<RecordedGraph> &graph) override;
  Status launchGraph(RecordedGraph &graph) override;
  /// The timeline on the device's clock: an event pair on the compute
  /// stream around each operation, and on the communication stream around
  /// each exchange's rows, all measured from an event recorded when
  /// recording began.
  void startTimeline() override;
  void timelineBegin(const char *name) override;
  void timelineEnd() override;
  /// Waits for the compute stream, then reads the event pairs that have
  /// completed (an exchange never waited may still be in flight: left out).
  Status timeline(std::vector<TimelineInterval> &intervals,
                  int64_t &dropped) override;
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
  Status combineRows(tamoe_rt_dtype_t dtype, const void *expertOutputs,
                     intptr_t rows, intptr_t hidden, const int32_t *positions,
                     const float *weights, intptr_t tokens, intptr_t k,
                     void *combined) override;
  Status auxLoss(const float *probs, const int32_t *expertIds,
                 const int32_t *positions, intptr_t tokens,
                 intptr_t experts, intptr_t k, const float *expertWeights,
                 float *loss) override;
  Status regroup(const void *rows, intptr_t rowsCapacity, intptr_t rowBytes,
                 const int32_t *counts, intptr_t a, intptr_t b, intptr_t inner,
                 void *regrouped, int32_t *regroupedCounts) override;
  Status chunk(const void *rows, intptr_t rowsCapacity, intptr_t rowBytes,
               const int32_t *counts, intptr_t numCounts, intptr_t index,
               intptr_t chunks, void *chunkRows, intptr_t chunkCapacity,
               int32_t *chunkCounts) override;
  Status unchunk(const void *chunkRows, intptr_t chunkCapacity,
                 intptr_t rowBytes, const int32_t *counts, intptr_t numCounts,
                 intptr_t index, intptr_t chunks, void *rows,
                 intptr_t rowsCapacity) override;
  Status chunkPositions(const int32_t *positions, const int32_t *expertIds,
                        intptr_t tokens, intptr_t k,
                        const int32_t *expertCounts, intptr_t experts,
                        intptr_t index, intptr_t chunks,
                        int32_t *chunkPositions) override;
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
  Status matmul(const float *a, const float *b, intptr_t m, intptr_t k,
                intptr_t n, bool transposeA, bool transposeB,
                const float *cInit, float *c) override;
  /// cuBLAS's mixed GEMMs: a and b of one 16-bit type, c of that type or
  /// f32 (as bf16 tokens times a bf16 router give f32 logits).
  bool matmulTakes(tamoe_rt_dtype_t aType, tamoe_rt_dtype_t bType,
                   tamoe_rt_dtype_t cType) const override {
    return aType == bType && takesRows(aType) &&
           (cType == aType || cType == TAMOE_RT_F32);
  }
  Status matmulRows(tamoe_rt_dtype_t aType, tamoe_rt_dtype_t bType,
                    tamoe_rt_dtype_t cType, const void *a, const void *b,
                    intptr_t m, intptr_t k, intptr_t n, bool transposeA,
                    bool transposeB, const void *cInit, void *c) override;
  Status map(tamoe_rt_map_t op, const float *a, const float *b, intptr_t n,
             float *out) override;
  Status mapRows(tamoe_rt_map_t op, tamoe_rt_dtype_t dtype, const void *a,
                 const void *b, intptr_t n, void *out) override;
  Status addCounts(const int32_t *a, const int32_t *b, intptr_t n,
                   int32_t *out) override;
  Status groupedMatmul(const float *rows, intptr_t rowsCapacity,
                       intptr_t hidden, const int32_t *counts,
                       intptr_t numCounts, intptr_t experts,
                       const float *weights, intptr_t outFeatures,
                       float *result) override;
  /// bf16 and f16 rows as they are: the GEMMs on cuBLAS (tensor cores,
  /// f32 sums), maps and combine widening in their kernels; each result
  /// rounded once.
  bool takesRows(tamoe_rt_dtype_t dtype) const override {
    return dtype == TAMOE_RT_BF16 || dtype == TAMOE_RT_F16;
  }
  Status groupedMatmulRows(tamoe_rt_dtype_t dtype, const void *rows,
                           intptr_t rowsCapacity, intptr_t hidden,
                           const int32_t *counts, intptr_t numCounts,
                           intptr_t experts, const void *weights,
                           intptr_t outFeatures, void *result) override;
  Status groupedMatmulGradRows(tamoe_rt_dtype_t dtype, const void *rows,
                               intptr_t rowsCapacity, intptr_t hidden,
                               const int32_t *counts, intptr_t numCounts,
                               intptr_t experts, const void *weights,
                               intptr_t outFeatures, const void *dResult,
                               void *dRows, void *dWeights) override;
  /// startRows, then finishRows.
  Status allToAll(tamoe_rt_group_t group, const void *send,
                  intptr_t sendCapacity, intptr_t rowBytes,
                  const int32_t *sendCounts, intptr_t split, void *received,
                  intptr_t recvCapacity, int32_t *recvCounts,
                  Traffic &traffic) override;
  /// The agreement on row_bytes and split, then startRows: the counts and
  /// the verdict before it returns, the rows on the communication stream.
  Status allToAllStart(Launcher &launcher, Status local, tamoe_rt_group_t group,
                       const void *send, intptr_t sendCapacity,
                       intptr_t rowBytes, const int32_t *sendCounts,
                       intptr_t split, void *received, intptr_t recvCapacity,
                       int32_t *recvCounts,
                       std::unique_ptr<PendingExchange> &pending) override;
  /// finishRows.
  Status allToAllWait(std::unique_ptr<PendingExchange> pending,
                      Traffic &traffic) override;

  // GradientKernels.cu.
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
  Status sgd(float *params, const float *grads, float *velocity, intptr_t n,
             float lr, float momentum, float weightDecay) override;
  Status adam(float *params, const float *grads, float *m, float *v, intptr_t n,
              int64_t step, float lr, float beta1, float beta2, float eps,
              float weightDecay) override;
  /// ncclAllReduce in place (the same floats on every rank, in NCCL's
  /// order), then the division by the group's size; CudaBackend.cpp.
  Status allReduce(tamoe_rt_group_t group, float *data, intptr_t n,
                   bool average) override;

  /// How an operation turns the device status into its message.
  using Describe = std::function<std::string(const DeviceStatus &)>;
  /// A recorded operation, for a launch's message: what its stamp's index
  /// stands for.
  struct RecordedOperation {
    int64_t call; // the program's call it belongs to (operationCall)
    std::string name;
    Describe describe;
  };

  // Used by the executor of Kernels.cu.
  cudaStream_t stream() const { return stream_; }
  cudaMemPool_t pool() const { return pool_; }
  int smCount() const { return smCount_; }

private:
  explicit CudaBackend(Launcher *launcher) : launcher_(launcher) {}

  Status initDevice(int device);
  Status initCommunicators();
  Status initCommunicator(tamoe_rt_group_t group);

  /// Fails unless `pointer` (of `bytes`, null allowed when 0) is memory the
  /// device can address.
  Status checkPointer(const void *pointer, int64_t bytes,
                      const char *name) const;
  /// A buffer an operation uses: the bytes it reads or writes there (0 when
  /// it uses none; the pointer may then be null) and its name in messages.
  struct Operand {
    const void *pointer;
    int64_t bytes;
    const char *name;
  };
  /// checkPointer on each operand in turn: the first failure.
  Status checkOperands(std::initializer_list<Operand> operands) const;
  /// The frame every operation on the compute stream shares, entered once
  /// its sizes are checked on the host. While it lives the backend's device
  /// is current; it checks the operands (status()). run() clears the device
  /// status (beginOperation), lets `queue` put the work on the stream
  /// through an executor, returns the executor's temporaries in stream
  /// order and reads the outcome through `describe` (endOperation).
  class Frame {
  public:
    Frame(CudaBackend &backend, std::initializer_list<Operand> operands);
    bool ok() const { return status_.ok(); }
    const Status &status() const { return status_; }
    /// In Exec.cuh, with the executor.
    template <typename Queue>
    Status run(Queue &&queue, const Describe &describe);

  private:
    CudaBackend &backend_;
    DeviceScope scope_;
    Status status_;
  };
  /// tamoe_rt_matmul on operands of these types (f32, bf16 or f16).
  Status matmulElements(tamoe_rt_dtype_t aType, tamoe_rt_dtype_t bType,
                        tamoe_rt_dtype_t cType, const void *a, const void *b,
                        intptr_t m, intptr_t k, intptr_t n, bool transposeA,
                        bool transposeB, const void *cInit, void *c);
  /// tamoe_rt_grouped_matmul_grad on buffers of `dtype` (f32, bf16 or f16).
  Status groupedMatmulGradElements(tamoe_rt_dtype_t dtype, const void *rows,
                                   intptr_t rowsCapacity, intptr_t hidden,
                                   const int32_t *counts, intptr_t numCounts,
                                   intptr_t experts, const void *weights,
                                   intptr_t outFeatures, const void *dResult,
                                   void *dRows, void *dWeights);
  /// tamoe_rt_combine on rows of `dtype` (f32, bf16 or f16).
  Status combineElements(tamoe_rt_dtype_t dtype, const void *expertOutputs,
                         intptr_t rows, intptr_t hidden,
                         const int32_t *positions, const float *weights,
                         intptr_t tokens, intptr_t k, void *combined);
  /// The sizes, pointers and overlap chunk and unchunk share (in a frame).
  Status checkPart(const void *rows, int64_t rowsCapacity, int64_t rowBytes,
                   const int32_t *counts, int64_t numCounts,
                   const void *chunkRows, int64_t chunkCapacity) const;
  /// tamoe_rt_map on elements of `dtype` (f32, bf16 or f16).
  Status mapElements(tamoe_rt_map_t op, tamoe_rt_dtype_t dtype, const void *a,
                     const void *b, intptr_t n, void *out);
  /// Clears the device status before an operation (not while recording: a
  /// launch clears it once, first).
  Status beginOperation();
  /// Waits for the operation's work and turns a host-side failure, a CUDA
  /// error or the device status (through `describe`) into its Status.
  /// While recording, keeps `describe` for the launch (so it captures by
  /// value) and queues the stamp instead.
  Status endOperation(Status hostFailure, const Describe &describe);
  /// A failure the device status holds, in `describe`'s words (its raw
  /// fields where it has none): for the eager wait and a graph's launch.
  static std::string failureMessage(const DeviceStatus &status,
                                    const Describe &describe);
  /// Status::success(), or while recording the failure of `what`, which
  /// needs the host mid-step ("reads device memory on the host").
  Status recordable(const std::string &what) const;
  /// Writes `operation` into the status word if it holds a failure without
  /// one (Kernels.cu).
  Status stampOperation(int64_t operation);
  /// An exchange over a group of one rank (runSelfExchange) as an
  /// operation of the compute stream, in a frame of its own inside
  /// startRows' device scope (which checked the operands); messages as the
  /// exchange between ranks gives them, but for the launcher's "rank R: ".
  Status selfExchange(const void *send, intptr_t sendCapacity,
                      intptr_t rowBytes, const int32_t *sendCounts,
                      intptr_t entries, void *received, intptr_t recvCapacity,
                      int32_t *recvCounts);
  /// groupedMatmulRows without the counts on the host: every count gets a
  /// slot of rowsCapacity / numCounts rows (runSlotRows), and one strided
  /// batched GEMM per round of `experts` slots multiplies them; in the
  /// caller's frame, whose operands are checked.
  Status groupedMatmulSlots(Frame &frame, tamoe_rt_dtype_t dtype,
                            const void *rows, intptr_t rowsCapacity,
                            intptr_t hidden, const int32_t *counts,
                            intptr_t numCounts, intptr_t experts,
                            const void *weights, intptr_t outFeatures,
                            void *result);

  /// cuBLAS on stream_, created by the first operation that needs it.
  Status blasHandle();
  /// Row-major c [m, n] = op(a) op(b) + beta c on stream_, where op(a) is a
  /// stored [m, k], or with transposeA [k, m] read transposed (b likewise:
  /// [k, n] or [n, k]). Sizes fit int and are positive. Operands of any
  /// cuBLAS type, c of `cType`, f32 sums (cublasGemmEx).
  Status gemmEx(bool transposeA, bool transposeB, int64_t m, int64_t n,
                int64_t k, const void *a, cudaDataType_t aType, const void *b,
                cudaDataType_t bType, float beta, void *c,
                cudaDataType_t cType);
  /// gemmEx over `batch` problems at fixed strides (elements) apart.
  Status gemmStridedBatched(int64_t m, int64_t n, int64_t k, const void *a,
                            int64_t strideA, const void *b, int64_t strideB,
                            void *c, int64_t strideC, cudaDataType_t type,
                            int64_t batch);
  /// The counts of a grouped GEMM on the host (cuBLAS takes each GEMM's
  /// size from there), checked as the f32 kernels check them: `total` their
  /// sum.
  Status hostCounts(const int32_t *counts, intptr_t numCounts,
                    intptr_t rowsCapacity, std::vector<int32_t> &host,
                    int64_t &total);
  /// data[i] /= divisor on stream_ (all_reduce's average).
  Status divide(float *data, int64_t n, float divisor);

  /// The global rank of the `peer`-th rank of `group` (this rank's groups).
  int64_t globalRank(tamoe_rt_group_t group, int64_t peer) const;
  /// Waits for the compute stream's work, at most until `deadline` (steady
  /// clock, seconds), watching the communicators for asynchronous errors.
  Status waitStream(double deadline, const char *what);
  /// waitStream for the work before `event` (on either stream).
  Status waitEvent(cudaEvent_t event, double deadline, const char *what);
  /// Polls `query` (cudaStreamQuery or cudaEventQuery). An asynchronous
  /// NCCL error or the deadline aborts every communicator: their operations
  /// share the communication stream, where one stuck operation holds up
  /// the rest.
  Status pollUntilDone(const std::function<cudaError_t()> &query,
                       double deadline, const char *what);
  /// Makes `then` wait for the work queued on `first` so far (through
  /// `event`).
  Status orderStreams(cudaStream_t first, cudaEvent_t event, cudaStream_t then,
                      const char *what);
  /// An exchange's checks, its counts and the verdict on them (every rank
  /// alike), then its rows posted on the communication stream after the
  /// compute stream's work so far; `x` gets their events and traffic.
  Status startRows(tamoe_rt_group_t group, const void *send,
                   intptr_t sendCapacity, intptr_t rowBytes,
                   const int32_t *sendCounts, intptr_t split, void *received,
                   intptr_t recvCapacity, int32_t *recvCounts, CudaExchange &x);
  /// Waits for the rows of `x` within the timeout, orders the compute
  /// stream after them, agrees on the outcome with the group and adds the
  /// traffic.
  Status finishRows(CudaExchange &x, Traffic &traffic);
  /// Waits until a non-blocking NCCL call on `c` has been processed.
  Status waitCommunicator(Communicator &c, double deadline, const char *what);
  /// Aborts the communicator after a failure; later calls fail at once.
  void abortCommunicator(Communicator &c, const std::string &why);
  void abortCommunicators(const std::string &why);
  /// One pairwise exchange queued on `stream`: sendBytes[p] bytes at
  /// sendOffsets[p] of `send` to peer p, recvBytes[p] bytes into `recv` at
  /// recvOffsets[p] from p. The caller waits for the stream.
  Status exchange(Communicator &c, cudaStream_t stream, const char *send,
                  const int64_t *sendOffsets, const int64_t *sendBytes,
                  char *recv, const int64_t *recvOffsets,
                  const int64_t *recvBytes, double deadline, const char *what);

  /// A timed event pair of the timeline, begin recorded, end once closed.
  struct EventInterval {
    const char *stream;
    std::string name;
    cudaEvent_t begin = nullptr, end = nullptr;
  };
  /// A timing event recorded on `stream` now (null if CUDA refused).
  cudaEvent_t recordTimed(cudaStream_t stream);
  /// Adds an interval whose begin is recorded now on `stream`; returns its
  /// index, or -1 past kTimelineLimit.
  int64_t openInterval(const char *streamName, std::string name,
                       cudaStream_t stream);

  Launcher *launcher_;
  int device_ = -1;
  cudaEvent_t timelineEpoch_ = nullptr;
  std::vector<EventInterval> timeline_;
  /// The operations open on the compute stream, innermost last.
  std::vector<int64_t> openOperations_;
  int64_t timelineDropped_ = 0;
  int smCount_ = 1;
  cudaStream_t stream_ = nullptr;
  /// Every NCCL operation, in the order the host issues them: the counts
  /// and rows of the exchanges (those in flight too) and the all-reduces.
  /// Non-blocking: never ordered with the legacy default stream, only by
  /// events.
  cudaStream_t commStream_ = nullptr;
  /// The blocking all-reduce's order between the two streams.
  cudaEvent_t computeDone_ = nullptr, commDone_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  DeviceStatus *deviceStatus_ = nullptr;
  DeviceStatus *hostStatus_ = nullptr; // pinned
  Communicator comms_[3];
  cublasHandle_t blas_ = nullptr;
  /// Between beginGraph and endGraph, and what was recorded so far.
  bool recording_ = false;
  std::vector<RecordedOperation> recorded_;
};

} // namespace cuda
} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_CUDA_CUDABACKEND_H
