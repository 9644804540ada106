//===- tamoe_gpu_bench.cpp - Checks and times the cuda backend ------------===//
//
//   tamoe_gpu_bench check [--engines cpu,cuda]
//       Runs every operation (the gradients and training steps too) on
//       random data on each engine and compares it with the serial
//       reference of runtime/test/Reference.h (and so the engines with each
//       other): one PASS/FAIL line per case. Under mpirun the exchanges and
//       all_reduce run over all ranks.
//   tamoe_gpu_bench bench --csv FILE [--quick]
//       Medians (CUDA events) of gate, dispatch (permute) and combine
//       (un-permute + weighted sum) on the cuda engine at a few shapes, and of
//       a device-to-device cudaMemcpy moving the same bytes (read + write);
//       of the bf16 expert stage against cuBLAS (per expert, grouped, and a
//       dense GEMM pair of the same FLOPs); of a layer step, eager and as a
//       graph.
//   tamoe_gpu_bench exchange --csv FILE
//       Under mpirun on several GPUs: times the flat and hierarchical
//       all_to_all and dispatch_dedup (after `check` has verified them).
//
// Engines: "cpu" and "cuda" are contexts of libtamoe_rt.so (the public C
// API). Built with -DTAMOE_GPU_BENCH_DIRECT the program instead loads
// libtamoe_rt_cuda.so alone (dlopen, the internal Backend.h, one rank, no
// MPI) as engine "cuda-direct": for GPU machines where the core cannot be
// built; the composed schedules (hierarchical, dispatch_dedup) need the core
// and are skipped there.
//
// Exit status: 0 when every case passed, 1 otherwise, 2 on usage errors or
// when an engine cannot be created (no GPU).
//
//===----------------------------------------------------------------------===//

#include "tamoe_rt/tamoe_rt.h"

#include "Reference.h" // runtime/test: the serial semantics

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#ifdef TAMOE_GPU_BENCH_DIRECT
#include "Backend.h"            // runtime/lib
#include "SingleRankLauncher.h" // runtime/lib
#include <dlfcn.h>
#endif

namespace {

using reference::Bytes;

//===----------------------------------------------------------------------===//
// Engines
//===----------------------------------------------------------------------===//

/// The names of tamoe_rt_status_t (the direct build has no core library).
const char *statusName(int code) {
  static const char *const names[] = {"TAMOE_RT_SUCCESS",
                                      "TAMOE_RT_ERROR_INVALID_ARGUMENT",
                                      "TAMOE_RT_ERROR_BACKEND_UNAVAILABLE",
                                      "TAMOE_RT_ERROR_MISMATCH",
                                      "TAMOE_RT_ERROR_CAPACITY_EXCEEDED",
                                      "TAMOE_RT_ERROR_TIMEOUT",
                                      "TAMOE_RT_ERROR_COMMUNICATION",
                                      "TAMOE_RT_ERROR_OUT_OF_MEMORY",
                                      "TAMOE_RT_ERROR_INTERNAL"};
  return code >= 0 && code <= 8 ? names[code] : "unknown status";
}

struct Result {
  int code = 0;
  std::string message;
  bool ok() const { return code == 0; }
};

/// The operations of tamoe_rt.h on one backend, pointer for pointer.
class Engine {
public:
  virtual ~Engine() = default;
  virtual std::string name() const = 0;
  virtual bool onDevice() const = 0;
  virtual int64_t rank() const { return 0; }
  virtual int64_t numRanks() const { return 1; }
  virtual int64_t ranksPerNode() const { return 1; }
  virtual bool hasSchedules() const { return false; }

  virtual Result alloc(int64_t bytes, void **pointer) = 0;
  virtual Result free(void *pointer) = 0;
  virtual Result toBackend(void *dst, const void *src, int64_t bytes) = 0;
  virtual Result toHost(void *dst, const void *src, int64_t bytes) = 0;
  virtual Result synchronize() = 0;
  virtual Result gate(const float *logits, int64_t tokens, int64_t experts,
                      int64_t k, bool sigmoid, bool renormalize, int64_t groups,
                      int64_t kept, int32_t *ids, float *weights,
                      float *probs) = 0;
  virtual Result dispatch(const void *tokens, int64_t numTokens,
                          int64_t rowBytes, const int32_t *ids, int64_t k,
                          int64_t experts, const float *weights,
                          int64_t capacity, bool byProbability,
                          void *dispatched, int64_t dispatchedCapacity,
                          int32_t *counts, int32_t *positions,
                          int64_t *dropped) = 0;
  virtual Result combine(const float *outputs, int64_t rows, int64_t hidden,
                         const int32_t *positions, const float *weights,
                         int64_t tokens, int64_t k, float *combined) = 0;
  /// combine on expert outputs and a result of a 16-bit `dtype`.
  virtual Result combineRows(tamoe_rt_dtype_t dtype, const void *outputs,
                             int64_t rows, int64_t hidden,
                             const int32_t *positions, const float *weights,
                             int64_t tokens, int64_t k, void *combined) = 0;
  virtual Result auxLoss(const float *probs, const int32_t *ids, int64_t tokens,
                         int64_t experts, int64_t k, const float *expertWeights,
                         float *loss) = 0;
  virtual Result regroup(const void *rows, int64_t rowsCapacity,
                         int64_t rowBytes, const int32_t *counts, int64_t a,
                         int64_t b, int64_t inner, void *regrouped,
                         int32_t *regroupedCounts) = 0;
  virtual Result chunk(const void *rows, int64_t rowsCapacity, int64_t rowBytes,
                       const int32_t *counts, int64_t numCounts, int64_t index,
                       int64_t chunks, void *chunkRows, int64_t chunkCapacity,
                       int32_t *chunkCounts) = 0;
  virtual Result unchunk(const void *chunkRows, int64_t chunkCapacity,
                         int64_t rowBytes, const int32_t *counts,
                         int64_t numCounts, int64_t index, int64_t chunks,
                         void *rows, int64_t rowsCapacity) = 0;
  virtual Result addCounts(const int32_t *a, const int32_t *b, int64_t n,
                           int32_t *out) = 0;
  virtual Result chunkPositions(const int32_t *positions, const int32_t *ids,
                                int64_t tokens, int64_t k,
                                const int32_t *expertCounts, int64_t experts,
                                int64_t index, int64_t chunks,
                                int32_t *chunkPositions) = 0;
  virtual Result dedupPack(const void *tokens, int64_t numTokens,
                           int64_t rowBytes, const int32_t *ids,
                           const int32_t *positions, int64_t k,
                           int64_t expertsPerNode, int64_t nodes, void *unique,
                           int32_t *routes, int64_t uniqueCapacity,
                           int32_t *nodeCounts) = 0;
  virtual Result dedupExpand(const void *unique, const int32_t *routes,
                             int64_t uniqueCapacity, int64_t rowBytes,
                             int64_t k, const int32_t *recvCounts,
                             int64_t nodes, int64_t ranksPerNode,
                             int64_t expertsPerRank, void *expanded,
                             int64_t expandedCapacity,
                             int32_t *expandedCounts) = 0;
  virtual Result groupedMatmul(const float *rows, int64_t rowsCapacity,
                               int64_t hidden, const int32_t *counts,
                               int64_t numCounts, int64_t experts,
                               const float *weights, int64_t outFeatures,
                               float *result) = 0;
  /// grouped_matmul on rows, weights and result of a 16-bit `dtype`.
  virtual Result groupedMatmulRows(tamoe_rt_dtype_t dtype, const void *rows,
                                   int64_t rowsCapacity, int64_t hidden,
                                   const int32_t *counts, int64_t numCounts,
                                   int64_t experts, const void *weights,
                                   int64_t outFeatures, void *result) = 0;
  /// `peers`: the group's size (the public API checks it).
  virtual Result allToAll(tamoe_rt_group_t group, const void *send,
                          int64_t sendCapacity, int64_t rowBytes,
                          const int32_t *sendCounts, int64_t peers,
                          int64_t split, void *received, int64_t recvCapacity,
                          int32_t *recvCounts) = 0;
  /// allToAll as start, `between` (work while the rows travel), wait.
  virtual Result allToAllAround(tamoe_rt_group_t group, const void *send,
                                int64_t sendCapacity, int64_t rowBytes,
                                const int32_t *sendCounts, int64_t peers,
                                int64_t split, void *received,
                                int64_t recvCapacity, int32_t *recvCounts,
                                const std::function<Result()> &between) = 0;
  virtual Result allToAllCounts(tamoe_rt_group_t, const int32_t *, int64_t,
                                int64_t, int32_t *, int64_t *) {
    return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE, "needs the core"};
  }
  virtual Result allToAllTotals(tamoe_rt_group_t, const int32_t *, int64_t,
                                const std::vector<int64_t> &,
                                std::vector<int64_t> &) {
    return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE, "needs the core"};
  }
  virtual Result countsTotal(const int32_t *, int64_t, int64_t *) {
    return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE, "needs the core"};
  }
  virtual Result hierarchical(const void *, int64_t, int64_t, const int32_t *,
                              int64_t, void *, int64_t, int32_t *) {
    return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE, "needs the core"};
  }
  virtual Result dispatchDedup(const void *, int64_t, int64_t, const int32_t *,
                               const int32_t *, int64_t, int64_t, void *,
                               int64_t, int32_t *) {
    return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE, "needs the core"};
  }
  virtual Result traffic(int64_t &intra, int64_t &inter) = 0;
  virtual Result resetTraffic() = 0;
  /// tamoe_rt_graph_*: the handle is a tamoe_rt_graph_t.
  virtual Result graphBegin() {
    return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE, "needs the core"};
  }
  virtual Result graphEnd(void **) {
    return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE, "needs the core"};
  }
  virtual Result graphLaunch(void *) {
    return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE, "needs the core"};
  }
  virtual Result graphDestroy(void *) { return {}; }

  // The dense compute, the gradients and the training steps.
  virtual Result matmul(const float *a, const float *b, int64_t m, int64_t k,
                        int64_t n, bool transposeA, bool transposeB,
                        const float *cInit, float *c) = 0;
  /// matmul with a type per operand.
  virtual Result matmulRows(tamoe_rt_dtype_t aType, tamoe_rt_dtype_t bType,
                            tamoe_rt_dtype_t cType, const void *a,
                            const void *b, int64_t m, int64_t k, int64_t n,
                            bool transposeA, bool transposeB, const void *cInit,
                            void *c) = 0;
  virtual Result map(tamoe_rt_map_t op, const float *a, const float *b,
                     int64_t n, float *out) = 0;
  /// map on elements of a 16-bit `dtype`.
  virtual Result mapRows(tamoe_rt_map_t op, tamoe_rt_dtype_t dtype,
                         const void *a, const void *b, int64_t n,
                         void *out) = 0;
  virtual Result convert(tamoe_rt_dtype_t from, const void *src,
                         tamoe_rt_dtype_t to, void *dst, int64_t n) = 0;
  virtual Result gateGrad(const float *probs, const int32_t *ids,
                          int64_t tokens, int64_t experts, int64_t k,
                          bool sigmoid, bool renormalize, const float *dWeights,
                          const float *dProbs, float *dLogits) = 0;
  virtual Result combineGrad(const float *outputs, int64_t rows, int64_t hidden,
                             const int32_t *positions, const float *weights,
                             int64_t tokens, int64_t k, const float *dCombined,
                             float *dOutputs, float *dWeights) = 0;
  virtual Result groupedMatmulGrad(const float *rows, int64_t rowsCapacity,
                                   int64_t hidden, const int32_t *counts,
                                   int64_t numCounts, int64_t experts,
                                   const float *weights, int64_t outFeatures,
                                   const float *dResult, float *dRows,
                                   float *dWeights) = 0;
  /// grouped_matmul_grad on buffers of a 16-bit `dtype`.
  virtual Result groupedMatmulGradRows(tamoe_rt_dtype_t dtype, const void *rows,
                                       int64_t rowsCapacity, int64_t hidden,
                                       const int32_t *counts, int64_t numCounts,
                                       int64_t experts, const void *weights,
                                       int64_t outFeatures, const void *dResult,
                                       void *dRows, void *dWeights) = 0;
  virtual Result auxLossGrad(const int32_t *ids, const int32_t *positions,
                             int64_t tokens, int64_t experts, int64_t k,
                             const float *expertWeights, const float *dLoss,
                             float *dProbs) = 0;
  virtual Result dedupPackGrad(const float *dUnique, int64_t uniqueCapacity,
                               int64_t hidden, const int32_t *ids,
                               const int32_t *positions, int64_t numTokens,
                               int64_t k, int64_t expertsPerNode, int64_t nodes,
                               float *dTokens) = 0;
  virtual Result dedupExpandGrad(const float *dExpanded,
                                 int64_t expandedCapacity, int64_t hidden,
                                 const int32_t *routes, int64_t uniqueCapacity,
                                 int64_t k, const int32_t *recvCounts,
                                 int64_t nodes, int64_t ranksPerNode,
                                 int64_t expertsPerRank, float *dUnique) = 0;
  virtual Result allReduce(tamoe_rt_group_t group, float *data, int64_t n,
                           bool average) = 0;
  virtual Result sgd(float *params, const float *grads, float *velocity,
                     int64_t n, float lr, float momentum,
                     float weightDecay) = 0;
  virtual Result adam(float *params, const float *grads, float *m, float *v,
                      int64_t n, int64_t step, float lr, float beta1,
                      float beta2, float eps, float weightDecay) = 0;
};

#ifndef TAMOE_GPU_BENCH_DIRECT
/// A context of libtamoe_rt.so.
class ApiEngine final : public Engine {
public:
  static std::unique_ptr<Engine> create(tamoe_rt_backend_t backend,
                                        std::string &error) {
    tamoe_rt_options_t options = tamoe_rt_default_options();
    options.backend = backend;
    tamoe_rt_context_t *context = nullptr;
    tamoe_rt_status_t status = tamoe_rt_init(&options, &context);
    if (status != TAMOE_RT_SUCCESS) {
      error =
          std::string(statusName(status)) + ": " + tamoe_rt_last_error(nullptr);
      return nullptr;
    }
    return std::unique_ptr<Engine>(new ApiEngine(context, backend));
  }
  ~ApiEngine() override { tamoe_rt_finalize(context_); }

  std::string name() const override {
    return backend_ == TAMOE_RT_BACKEND_CUDA ? "cuda" : "cpu";
  }
  bool onDevice() const override { return backend_ == TAMOE_RT_BACKEND_CUDA; }
  int64_t rank() const override { return tamoe_rt_rank(context_); }
  int64_t numRanks() const override { return tamoe_rt_num_ranks(context_); }
  int64_t ranksPerNode() const override {
    return tamoe_rt_ranks_per_node(context_);
  }
  bool hasSchedules() const override { return true; }

  Result alloc(int64_t bytes, void **pointer) override {
    return wrap(tamoe_rt_alloc(context_, bytes, pointer));
  }
  Result free(void *pointer) override {
    return wrap(tamoe_rt_free(context_, pointer));
  }
  Result toBackend(void *dst, const void *src, int64_t bytes) override {
    return wrap(tamoe_rt_copy_to_backend(context_, dst, src, bytes));
  }
  Result toHost(void *dst, const void *src, int64_t bytes) override {
    return wrap(tamoe_rt_copy_to_host(context_, dst, src, bytes));
  }
  Result synchronize() override { return wrap(tamoe_rt_synchronize(context_)); }
  Result gate(const float *logits, int64_t tokens, int64_t experts, int64_t k,
              bool sigmoid, bool renormalize, int64_t groups, int64_t kept,
              int32_t *ids, float *weights, float *probs) override {
    return wrap(
        tamoe_rt_gate(context_, logits, tokens, experts, k,
                      sigmoid ? TAMOE_RT_SCORE_SIGMOID : TAMOE_RT_SCORE_SOFTMAX,
                      renormalize, groups, kept, ids, weights, probs));
  }
  Result dispatch(const void *tokens, int64_t numTokens, int64_t rowBytes,
                  const int32_t *ids, int64_t k, int64_t experts,
                  const float *weights, int64_t capacity, bool byProbability,
                  void *dispatched, int64_t dispatchedCapacity, int32_t *counts,
                  int32_t *positions, int64_t *dropped) override {
    return wrap(tamoe_rt_dispatch(
        context_, tokens, numTokens, rowBytes, ids, k, experts, weights,
        capacity,
        byProbability ? TAMOE_RT_DROP_PROBABILITY : TAMOE_RT_DROP_POSITION,
        dispatched, dispatchedCapacity, counts, positions, dropped));
  }
  Result combine(const float *outputs, int64_t rows, int64_t hidden,
                 const int32_t *positions, const float *weights, int64_t tokens,
                 int64_t k, float *combined) override {
    return wrap(tamoe_rt_combine(context_, TAMOE_RT_F32, outputs, rows, hidden,
                                 positions, weights, tokens, k, combined));
  }
  Result combineRows(tamoe_rt_dtype_t dtype, const void *outputs, int64_t rows,
                     int64_t hidden, const int32_t *positions,
                     const float *weights, int64_t tokens, int64_t k,
                     void *combined) override {
    return wrap(tamoe_rt_combine(context_, dtype, outputs, rows, hidden,
                                 positions, weights, tokens, k, combined));
  }
  Result auxLoss(const float *probs, const int32_t *ids, int64_t tokens,
                 int64_t experts, int64_t k, const float *expertWeights,
                 float *loss) override {
    return wrap(tamoe_rt_aux_loss(context_, probs, ids, nullptr, tokens,
                                  experts, k, expertWeights, loss));
  }
  Result regroup(const void *rows, int64_t rowsCapacity, int64_t rowBytes,
                 const int32_t *counts, int64_t a, int64_t b, int64_t inner,
                 void *regrouped, int32_t *regroupedCounts) override {
    return wrap(tamoe_rt_regroup(context_, rows, rowsCapacity, rowBytes, counts,
                                 a, b, inner, regrouped, regroupedCounts));
  }
  Result chunk(const void *rows, int64_t rowsCapacity, int64_t rowBytes,
               const int32_t *counts, int64_t numCounts, int64_t index,
               int64_t chunks, void *chunkRows, int64_t chunkCapacity,
               int32_t *chunkCounts) override {
    return wrap(tamoe_rt_chunk(context_, rows, rowsCapacity, rowBytes, counts,
                               numCounts, index, chunks, chunkRows,
                               chunkCapacity, chunkCounts));
  }
  Result unchunk(const void *chunkRows, int64_t chunkCapacity, int64_t rowBytes,
                 const int32_t *counts, int64_t numCounts, int64_t index,
                 int64_t chunks, void *rows, int64_t rowsCapacity) override {
    return wrap(tamoe_rt_unchunk(context_, chunkRows, chunkCapacity, rowBytes,
                                 counts, numCounts, index, chunks, rows,
                                 rowsCapacity));
  }
  Result addCounts(const int32_t *a, const int32_t *b, int64_t n,
                   int32_t *out) override {
    return wrap(tamoe_rt_add_counts(context_, a, b, n, out));
  }
  Result chunkPositions(const int32_t *positions, const int32_t *ids,
                        int64_t tokens, int64_t k, const int32_t *expertCounts,
                        int64_t experts, int64_t index, int64_t chunks,
                        int32_t *chunkPositions) override {
    return wrap(tamoe_rt_chunk_positions(context_, positions, ids, tokens, k,
                                         expertCounts, experts, index, chunks,
                                         chunkPositions));
  }
  Result dedupPack(const void *tokens, int64_t numTokens, int64_t rowBytes,
                   const int32_t *ids, const int32_t *positions, int64_t k,
                   int64_t expertsPerNode, int64_t nodes, void *unique,
                   int32_t *routes, int64_t uniqueCapacity,
                   int32_t *nodeCounts) override {
    return wrap(tamoe_rt_dedup_pack(context_, tokens, numTokens, rowBytes, ids,
                                    positions, k, expertsPerNode, nodes, unique,
                                    routes, uniqueCapacity, nodeCounts));
  }
  Result dedupExpand(const void *unique, const int32_t *routes,
                     int64_t uniqueCapacity, int64_t rowBytes, int64_t k,
                     const int32_t *recvCounts, int64_t nodes,
                     int64_t ranksPerNode, int64_t expertsPerRank,
                     void *expanded, int64_t expandedCapacity,
                     int32_t *expandedCounts) override {
    return wrap(tamoe_rt_dedup_expand(context_, unique, routes, uniqueCapacity,
                                      rowBytes, k, recvCounts, nodes,
                                      ranksPerNode, expertsPerRank, expanded,
                                      expandedCapacity, expandedCounts));
  }
  Result groupedMatmul(const float *rows, int64_t rowsCapacity, int64_t hidden,
                       const int32_t *counts, int64_t numCounts,
                       int64_t experts, const float *weights,
                       int64_t outFeatures, float *result) override {
    return wrap(tamoe_rt_grouped_matmul(context_, TAMOE_RT_F32, rows,
                                        rowsCapacity, hidden, counts, numCounts,
                                        experts, weights, outFeatures, result));
  }
  Result groupedMatmulRows(tamoe_rt_dtype_t dtype, const void *rows,
                           int64_t rowsCapacity, int64_t hidden,
                           const int32_t *counts, int64_t numCounts,
                           int64_t experts, const void *weights,
                           int64_t outFeatures, void *result) override {
    return wrap(tamoe_rt_grouped_matmul(context_, dtype, rows, rowsCapacity,
                                        hidden, counts, numCounts, experts,
                                        weights, outFeatures, result));
  }
  Result allToAll(tamoe_rt_group_t group, const void *send,
                  int64_t sendCapacity, int64_t rowBytes,
                  const int32_t *sendCounts, int64_t peers, int64_t split,
                  void *received, int64_t recvCapacity,
                  int32_t *recvCounts) override {
    return wrap(tamoe_rt_all_to_all(context_, group, send, sendCapacity,
                                    rowBytes, sendCounts, peers, split,
                                    received, recvCapacity, recvCounts));
  }
  Result allToAllAround(tamoe_rt_group_t group, const void *send,
                        int64_t sendCapacity, int64_t rowBytes,
                        const int32_t *sendCounts, int64_t peers, int64_t split,
                        void *received, int64_t recvCapacity,
                        int32_t *recvCounts,
                        const std::function<Result()> &between) override {
    tamoe_rt_exchange_t *exchange = nullptr;
    Result r = wrap(tamoe_rt_all_to_all_start(
        context_, group, send, sendCapacity, rowBytes, sendCounts, peers, split,
        received, recvCapacity, recvCounts, &exchange));
    if (!r.ok())
      return r;
    Result work = between();
    r = wrap(tamoe_rt_all_to_all_wait(context_, exchange, send));
    return work.ok() ? r : work;
  }
  Result allToAllCounts(tamoe_rt_group_t group, const int32_t *sendCounts,
                        int64_t peers, int64_t split, int32_t *recvCounts,
                        int64_t *total) override {
    intptr_t sum = 0;
    Result r = wrap(tamoe_rt_all_to_all_counts(context_, group, sendCounts,
                                               peers, split, recvCounts, &sum));
    *total = sum;
    return r;
  }
  Result allToAllTotals(tamoe_rt_group_t group, const int32_t *counts,
                        int64_t entries, const std::vector<int64_t> &steps,
                        std::vector<int64_t> &totals) override {
    std::vector<intptr_t> out(steps.size() / 5, -1);
    Result r = wrap(tamoe_rt_all_to_all_totals(
        context_, group, counts, entries, steps.data(),
        intptr_t(steps.size() / 5), out.data()));
    totals.assign(out.begin(), out.end());
    return r;
  }
  Result countsTotal(const int32_t *counts, int64_t n,
                     int64_t *total) override {
    intptr_t sum = -1;
    Result r = wrap(tamoe_rt_counts_total(context_, counts, n, &sum));
    *total = sum;
    return r;
  }
  Result hierarchical(const void *send, int64_t sendCapacity, int64_t rowBytes,
                      const int32_t *sendCounts, int64_t split, void *received,
                      int64_t recvCapacity, int32_t *recvCounts) override {
    return wrap(tamoe_rt_all_to_all_hierarchical(
        context_, send, sendCapacity, rowBytes, sendCounts, split, received,
        recvCapacity, recvCounts));
  }
  Result dispatchDedup(const void *tokens, int64_t numTokens, int64_t rowBytes,
                       const int32_t *ids, const int32_t *positions, int64_t k,
                       int64_t experts, void *received, int64_t recvCapacity,
                       int32_t *recvCounts) override {
    return wrap(tamoe_rt_dispatch_dedup(context_, tokens, numTokens, rowBytes,
                                        ids, positions, k, experts, received,
                                        recvCapacity, recvCounts));
  }
  Result traffic(int64_t &intra, int64_t &inter) override {
    tamoe_rt_traffic_t t{};
    Result r = wrap(tamoe_rt_traffic(context_, &t));
    intra = t.intra_node_bytes;
    inter = t.inter_node_bytes;
    return r;
  }
  Result resetTraffic() override {
    return wrap(tamoe_rt_reset_traffic(context_));
  }
  Result matmul(const float *a, const float *b, int64_t m, int64_t k, int64_t n,
                bool transposeA, bool transposeB, const float *cInit,
                float *c) override {
    return wrap(tamoe_rt_matmul(context_, TAMOE_RT_F32, TAMOE_RT_F32,
                                TAMOE_RT_F32, a, b, m, k, n, transposeA,
                                transposeB, cInit, c));
  }
  Result matmulRows(tamoe_rt_dtype_t aType, tamoe_rt_dtype_t bType,
                    tamoe_rt_dtype_t cType, const void *a, const void *b,
                    int64_t m, int64_t k, int64_t n, bool transposeA,
                    bool transposeB, const void *cInit, void *c) override {
    return wrap(tamoe_rt_matmul(context_, aType, bType, cType, a, b, m, k, n,
                                transposeA, transposeB, cInit, c));
  }
  Result map(tamoe_rt_map_t op, const float *a, const float *b, int64_t n,
             float *out) override {
    return wrap(tamoe_rt_map(context_, op, TAMOE_RT_F32, a, b, n, out));
  }
  Result mapRows(tamoe_rt_map_t op, tamoe_rt_dtype_t dtype, const void *a,
                 const void *b, int64_t n, void *out) override {
    return wrap(tamoe_rt_map(context_, op, dtype, a, b, n, out));
  }
  Result convert(tamoe_rt_dtype_t from, const void *src, tamoe_rt_dtype_t to,
                 void *dst, int64_t n) override {
    return wrap(tamoe_rt_convert(context_, from, src, to, dst, n));
  }
  Result gateGrad(const float *probs, const int32_t *ids, int64_t tokens,
                  int64_t experts, int64_t k, bool sigmoid, bool renormalize,
                  const float *dWeights, const float *dProbs,
                  float *dLogits) override {
    return wrap(tamoe_rt_gate_grad(context_, probs, ids, tokens, experts, k,
                                   sigmoid ? TAMOE_RT_SCORE_SIGMOID
                                           : TAMOE_RT_SCORE_SOFTMAX,
                                   renormalize, dWeights, dProbs, dLogits));
  }
  Result combineGrad(const float *outputs, int64_t rows, int64_t hidden,
                     const int32_t *positions, const float *weights,
                     int64_t tokens, int64_t k, const float *dCombined,
                     float *dOutputs, float *dWeights) override {
    return wrap(tamoe_rt_combine_grad(context_, TAMOE_RT_F32, outputs, rows,
                                      hidden, positions, weights, tokens, k,
                                      dCombined, dOutputs, dWeights));
  }
  Result groupedMatmulGrad(const float *rows, int64_t rowsCapacity,
                           int64_t hidden, const int32_t *counts,
                           int64_t numCounts, int64_t experts,
                           const float *weights, int64_t outFeatures,
                           const float *dResult, float *dRows,
                           float *dWeights) override {
    return wrap(tamoe_rt_grouped_matmul_grad(
        context_, TAMOE_RT_F32, rows, rowsCapacity, hidden, counts, numCounts,
        experts, weights, outFeatures, dResult, dRows, dWeights));
  }
  Result groupedMatmulGradRows(tamoe_rt_dtype_t dtype, const void *rows,
                               int64_t rowsCapacity, int64_t hidden,
                               const int32_t *counts, int64_t numCounts,
                               int64_t experts, const void *weights,
                               int64_t outFeatures, const void *dResult,
                               void *dRows, void *dWeights) override {
    return wrap(tamoe_rt_grouped_matmul_grad(
        context_, dtype, rows, rowsCapacity, hidden, counts, numCounts, experts,
        weights, outFeatures, dResult, dRows, dWeights));
  }
  Result auxLossGrad(const int32_t *ids, const int32_t *positions,
                     int64_t tokens, int64_t experts, int64_t k,
                     const float *expertWeights, const float *dLoss,
                     float *dProbs) override {
    return wrap(tamoe_rt_aux_loss_grad(context_, ids, positions, tokens,
                                       experts, k, expertWeights, dLoss,
                                       dProbs));
  }
  Result dedupPackGrad(const float *dUnique, int64_t uniqueCapacity,
                       int64_t hidden, const int32_t *ids,
                       const int32_t *positions, int64_t numTokens, int64_t k,
                       int64_t expertsPerNode, int64_t nodes,
                       float *dTokens) override {
    return wrap(tamoe_rt_dedup_pack_grad(
        context_, TAMOE_RT_F32, dUnique, uniqueCapacity, hidden, ids, positions,
        numTokens, k, expertsPerNode, nodes, dTokens));
  }
  Result dedupExpandGrad(const float *dExpanded, int64_t expandedCapacity,
                         int64_t hidden, const int32_t *routes,
                         int64_t uniqueCapacity, int64_t k,
                         const int32_t *recvCounts, int64_t nodes,
                         int64_t ranksPerNode, int64_t expertsPerRank,
                         float *dUnique) override {
    return wrap(tamoe_rt_dedup_expand_grad(
        context_, TAMOE_RT_F32, dExpanded, expandedCapacity, hidden, routes,
        uniqueCapacity, k, recvCounts, nodes, ranksPerNode, expertsPerRank,
        dUnique));
  }
  Result allReduce(tamoe_rt_group_t group, float *data, int64_t n,
                   bool average) override {
    return wrap(tamoe_rt_all_reduce(context_, group, data, n, average));
  }
  Result sgd(float *params, const float *grads, float *velocity, int64_t n,
             float lr, float momentum, float weightDecay) override {
    return wrap(tamoe_rt_sgd(context_, params, grads, velocity, n, lr, momentum,
                             weightDecay));
  }
  Result adam(float *params, const float *grads, float *m, float *v, int64_t n,
              int64_t step, float lr, float beta1, float beta2, float eps,
              float weightDecay) override {
    return wrap(tamoe_rt_adam(context_, params, grads, m, v, n, step, lr, beta1,
                              beta2, eps, weightDecay));
  }

private:
  ApiEngine(tamoe_rt_context_t *context, tamoe_rt_backend_t backend)
      : context_(context), backend_(backend) {}
  Result graphBegin() override { return wrap(tamoe_rt_graph_begin(context_)); }
  Result graphEnd(void **graph) override {
    tamoe_rt_graph_t *recorded = nullptr;
    Result r = wrap(tamoe_rt_graph_end(context_, &recorded));
    *graph = recorded;
    return r;
  }
  Result graphLaunch(void *graph) override {
    return wrap(tamoe_rt_graph_launch(context_,
                                      static_cast<tamoe_rt_graph_t *>(graph)));
  }
  Result graphDestroy(void *graph) override {
    return wrap(tamoe_rt_graph_destroy(context_,
                                       static_cast<tamoe_rt_graph_t *>(graph)));
  }

  Result wrap(tamoe_rt_status_t status) {
    if (status == TAMOE_RT_SUCCESS)
      return {};
    return {int(status), tamoe_rt_last_error(context_)};
  }
  tamoe_rt_context_t *context_;
  tamoe_rt_backend_t backend_;
};

#else // TAMOE_GPU_BENCH_DIRECT

/// libtamoe_rt_cuda.so's backend, called directly.
class DirectEngine final : public Engine {
public:
  static std::unique_ptr<Engine> create(const std::string &library,
                                        std::string &error) {
    void *handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      error = std::string("dlopen: ") + dlerror();
      return nullptr;
    }
    using Factory =
        tamoe_rt::Backend *(*)(tamoe_rt::Launcher *, tamoe_rt::Status *);
    auto factory = reinterpret_cast<Factory>(
        dlsym(handle, "tamoe_rt_create_cuda_backend"));
    if (!factory) {
      error = "no tamoe_rt_create_cuda_backend in " + library;
      return nullptr;
    }
    auto engine = std::unique_ptr<DirectEngine>(new DirectEngine());
    tamoe_rt::Status status;
    engine->backend_.reset(factory(&engine->launcher_, &status));
    if (!engine->backend_) {
      error = status.message;
      return nullptr;
    }
    return engine;
  }
  std::string name() const override { return "cuda-direct"; }
  bool onDevice() const override { return true; }

  Result alloc(int64_t bytes, void **pointer) override {
    if (bytes == 0) {
      *pointer = nullptr;
      return {};
    }
    return wrap(backend_->alloc(bytes, pointer));
  }
  Result free(void *pointer) override { return wrap(backend_->free(pointer)); }
  Result toBackend(void *dst, const void *src, int64_t bytes) override {
    return wrap(backend_->copyToBackend(dst, src, bytes));
  }
  Result toHost(void *dst, const void *src, int64_t bytes) override {
    return wrap(backend_->copyToHost(dst, src, bytes));
  }
  Result synchronize() override { return wrap(backend_->synchronize()); }
  Result gate(const float *logits, int64_t tokens, int64_t experts, int64_t k,
              bool sigmoid, bool renormalize, int64_t groups, int64_t kept,
              int32_t *ids, float *weights, float *probs) override {
    return wrap(backend_->gate(logits, tokens, experts, k,
                               sigmoid ? TAMOE_RT_SCORE_SIGMOID
                                       : TAMOE_RT_SCORE_SOFTMAX,
                               renormalize, groups, kept, ids, weights, probs));
  }
  Result dispatch(const void *tokens, int64_t numTokens, int64_t rowBytes,
                  const int32_t *ids, int64_t k, int64_t experts,
                  const float *weights, int64_t capacity, bool byProbability,
                  void *dispatched, int64_t dispatchedCapacity, int32_t *counts,
                  int32_t *positions, int64_t *dropped) override {
    return wrap(backend_->dispatch(
        tokens, numTokens, rowBytes, ids, k, experts, weights, capacity,
        byProbability ? TAMOE_RT_DROP_PROBABILITY : TAMOE_RT_DROP_POSITION,
        dispatched, dispatchedCapacity, counts, positions, dropped));
  }
  Result combine(const float *outputs, int64_t rows, int64_t hidden,
                 const int32_t *positions, const float *weights, int64_t tokens,
                 int64_t k, float *combined) override {
    return wrap(backend_->combine(outputs, rows, hidden, positions, weights,
                                  tokens, k, combined));
  }
  Result combineRows(tamoe_rt_dtype_t dtype, const void *outputs, int64_t rows,
                     int64_t hidden, const int32_t *positions,
                     const float *weights, int64_t tokens, int64_t k,
                     void *combined) override {
    // No core here to stage through f32: the backend's own 16-bit path.
    if (!backend_->takesRows(dtype))
      return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
              "this backend stages 16-bit rows in the core"};
    return wrap(backend_->combineRows(dtype, outputs, rows, hidden, positions,
                                      weights, tokens, k, combined));
  }
  Result auxLoss(const float *probs, const int32_t *ids, int64_t tokens,
                 int64_t experts, int64_t k, const float *expertWeights,
                 float *loss) override {
    return wrap(
        backend_->auxLoss(probs, ids, nullptr, tokens, experts, k,
                          expertWeights, loss));
  }
  Result regroup(const void *rows, int64_t rowsCapacity, int64_t rowBytes,
                 const int32_t *counts, int64_t a, int64_t b, int64_t inner,
                 void *regrouped, int32_t *regroupedCounts) override {
    return wrap(backend_->regroup(rows, rowsCapacity, rowBytes, counts, a, b,
                                  inner, regrouped, regroupedCounts));
  }
  Result chunk(const void *rows, int64_t rowsCapacity, int64_t rowBytes,
               const int32_t *counts, int64_t numCounts, int64_t index,
               int64_t chunks, void *chunkRows, int64_t chunkCapacity,
               int32_t *chunkCounts) override {
    return wrap(backend_->chunk(rows, rowsCapacity, rowBytes, counts, numCounts,
                                index, chunks, chunkRows, chunkCapacity,
                                chunkCounts));
  }
  Result unchunk(const void *chunkRows, int64_t chunkCapacity, int64_t rowBytes,
                 const int32_t *counts, int64_t numCounts, int64_t index,
                 int64_t chunks, void *rows, int64_t rowsCapacity) override {
    return wrap(backend_->unchunk(chunkRows, chunkCapacity, rowBytes, counts,
                                  numCounts, index, chunks, rows,
                                  rowsCapacity));
  }
  Result addCounts(const int32_t *a, const int32_t *b, int64_t n,
                   int32_t *out) override {
    return wrap(backend_->addCounts(a, b, n, out));
  }
  Result chunkPositions(const int32_t *positions, const int32_t *ids,
                        int64_t tokens, int64_t k, const int32_t *expertCounts,
                        int64_t experts, int64_t index, int64_t chunks,
                        int32_t *chunkPositions) override {
    return wrap(backend_->chunkPositions(positions, ids, tokens, k,
                                         expertCounts, experts, index, chunks,
                                         chunkPositions));
  }
  Result dedupPack(const void *tokens, int64_t numTokens, int64_t rowBytes,
                   const int32_t *ids, const int32_t *positions, int64_t k,
                   int64_t expertsPerNode, int64_t nodes, void *unique,
                   int32_t *routes, int64_t uniqueCapacity,
                   int32_t *nodeCounts) override {
    return wrap(backend_->dedupPack(tokens, numTokens, rowBytes, ids, positions,
                                    k, expertsPerNode, nodes, unique, routes,
                                    uniqueCapacity, nodeCounts));
  }
  Result dedupExpand(const void *unique, const int32_t *routes,
                     int64_t uniqueCapacity, int64_t rowBytes, int64_t k,
                     const int32_t *recvCounts, int64_t nodes,
                     int64_t ranksPerNode, int64_t expertsPerRank,
                     void *expanded, int64_t expandedCapacity,
                     int32_t *expandedCounts) override {
    return wrap(backend_->dedupExpand(unique, routes, uniqueCapacity, rowBytes,
                                      k, recvCounts, nodes, ranksPerNode,
                                      expertsPerRank, expanded,
                                      expandedCapacity, expandedCounts));
  }
  Result groupedMatmul(const float *rows, int64_t rowsCapacity, int64_t hidden,
                       const int32_t *counts, int64_t numCounts,
                       int64_t experts, const float *weights,
                       int64_t outFeatures, float *result) override {
    return wrap(backend_->groupedMatmul(rows, rowsCapacity, hidden, counts,
                                        numCounts, experts, weights,
                                        outFeatures, result));
  }
  Result groupedMatmulRows(tamoe_rt_dtype_t dtype, const void *rows,
                           int64_t rowsCapacity, int64_t hidden,
                           const int32_t *counts, int64_t numCounts,
                           int64_t experts, const void *weights,
                           int64_t outFeatures, void *result) override {
    // No core here to stage through f32: the backend's own 16-bit path.
    if (!backend_->takesRows(dtype))
      return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
              "this backend stages 16-bit rows in the core"};
    return wrap(backend_->groupedMatmulRows(dtype, rows, rowsCapacity, hidden,
                                            counts, numCounts, experts, weights,
                                            outFeatures, result));
  }
  Result allToAll(tamoe_rt_group_t group, const void *send,
                  int64_t sendCapacity, int64_t rowBytes,
                  const int32_t *sendCounts, int64_t /*peers*/, int64_t split,
                  void *received, int64_t recvCapacity,
                  int32_t *recvCounts) override {
    return wrap(backend_->allToAll(group, send, sendCapacity, rowBytes,
                                   sendCounts, split, received, recvCapacity,
                                   recvCounts, traffic_));
  }
  Result allToAllAround(tamoe_rt_group_t group, const void *send,
                        int64_t sendCapacity, int64_t rowBytes,
                        const int32_t *sendCounts, int64_t /*peers*/,
                        int64_t split, void *received, int64_t recvCapacity,
                        int32_t *recvCounts,
                        const std::function<Result()> &between) override {
    std::unique_ptr<tamoe_rt::PendingExchange> pending;
    Result r = wrap(
        backend_->allToAllStart(launcher_, tamoe_rt::Status::success(), group,
                                send, sendCapacity, rowBytes, sendCounts, split,
                                received, recvCapacity, recvCounts, pending));
    if (!r.ok())
      return r;
    Result work = between();
    r = wrap(backend_->allToAllWait(std::move(pending), traffic_));
    return work.ok() ? r : work;
  }
  Result traffic(int64_t &intra, int64_t &inter) override {
    intra = traffic_.intraNodeBytes;
    inter = traffic_.interNodeBytes;
    return {};
  }
  Result resetTraffic() override {
    traffic_ = tamoe_rt::Traffic();
    return {};
  }
  Result matmul(const float *a, const float *b, int64_t m, int64_t k, int64_t n,
                bool transposeA, bool transposeB, const float *cInit,
                float *c) override {
    return wrap(
        backend_->matmul(a, b, m, k, n, transposeA, transposeB, cInit, c));
  }
  Result matmulRows(tamoe_rt_dtype_t aType, tamoe_rt_dtype_t bType,
                    tamoe_rt_dtype_t cType, const void *a, const void *b,
                    int64_t m, int64_t k, int64_t n, bool transposeA,
                    bool transposeB, const void *cInit, void *c) override {
    // No core here to stage through f32: the backend's own 16-bit path.
    if (!backend_->matmulTakes(aType, bType, cType))
      return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
              "this backend stages these types in the core"};
    return wrap(backend_->matmulRows(aType, bType, cType, a, b, m, k, n,
                                     transposeA, transposeB, cInit, c));
  }
  Result map(tamoe_rt_map_t op, const float *a, const float *b, int64_t n,
             float *out) override {
    return wrap(backend_->map(op, a, b, n, out));
  }
  Result mapRows(tamoe_rt_map_t op, tamoe_rt_dtype_t dtype, const void *a,
                 const void *b, int64_t n, void *out) override {
    // No core here to stage through f32: the backend's own 16-bit path.
    if (!backend_->takesRows(dtype))
      return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
              "this backend stages 16-bit elements in the core"};
    return wrap(backend_->mapRows(op, dtype, a, b, n, out));
  }
  Result convert(tamoe_rt_dtype_t from, const void *src, tamoe_rt_dtype_t to,
                 void *dst, int64_t n) override {
    return wrap(backend_->convert(from, src, to, dst, n));
  }
  Result gateGrad(const float *probs, const int32_t *ids, int64_t tokens,
                  int64_t experts, int64_t k, bool sigmoid, bool renormalize,
                  const float *dWeights, const float *dProbs,
                  float *dLogits) override {
    return wrap(backend_->gateGrad(probs, ids, tokens, experts, k,
                                   sigmoid ? TAMOE_RT_SCORE_SIGMOID
                                           : TAMOE_RT_SCORE_SOFTMAX,
                                   renormalize, dWeights, dProbs, dLogits));
  }
  Result combineGrad(const float *outputs, int64_t rows, int64_t hidden,
                     const int32_t *positions, const float *weights,
                     int64_t tokens, int64_t k, const float *dCombined,
                     float *dOutputs, float *dWeights) override {
    return wrap(backend_->combineGrad(outputs, rows, hidden, positions, weights,
                                      tokens, k, dCombined, dOutputs,
                                      dWeights));
  }
  Result groupedMatmulGrad(const float *rows, int64_t rowsCapacity,
                           int64_t hidden, const int32_t *counts,
                           int64_t numCounts, int64_t experts,
                           const float *weights, int64_t outFeatures,
                           const float *dResult, float *dRows,
                           float *dWeights) override {
    return wrap(backend_->groupedMatmulGrad(
        rows, rowsCapacity, hidden, counts, numCounts, experts, weights,
        outFeatures, dResult, dRows, dWeights));
  }
  Result groupedMatmulGradRows(tamoe_rt_dtype_t dtype, const void *rows,
                               int64_t rowsCapacity, int64_t hidden,
                               const int32_t *counts, int64_t numCounts,
                               int64_t experts, const void *weights,
                               int64_t outFeatures, const void *dResult,
                               void *dRows, void *dWeights) override {
    // No core here to stage through f32: the backend's own 16-bit path.
    if (!backend_->takesRows(dtype))
      return {TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
              "this backend stages 16-bit rows in the core"};
    return wrap(backend_->groupedMatmulGradRows(
        dtype, rows, rowsCapacity, hidden, counts, numCounts, experts, weights,
        outFeatures, dResult, dRows, dWeights));
  }
  Result auxLossGrad(const int32_t *ids, const int32_t *positions,
                     int64_t tokens, int64_t experts, int64_t k,
                     const float *expertWeights, const float *dLoss,
                     float *dProbs) override {
    return wrap(backend_->auxLossGrad(ids, positions, tokens, experts, k,
                                      expertWeights, dLoss, dProbs));
  }
  Result dedupPackGrad(const float *dUnique, int64_t uniqueCapacity,
                       int64_t hidden, const int32_t *ids,
                       const int32_t *positions, int64_t numTokens, int64_t k,
                       int64_t expertsPerNode, int64_t nodes,
                       float *dTokens) override {
    return wrap(backend_->dedupPackGrad(dUnique, uniqueCapacity, hidden, ids,
                                        positions, numTokens, k, expertsPerNode,
                                        nodes, dTokens));
  }
  Result dedupExpandGrad(const float *dExpanded, int64_t expandedCapacity,
                         int64_t hidden, const int32_t *routes,
                         int64_t uniqueCapacity, int64_t k,
                         const int32_t *recvCounts, int64_t nodes,
                         int64_t ranksPerNode, int64_t expertsPerRank,
                         float *dUnique) override {
    return wrap(backend_->dedupExpandGrad(
        dExpanded, expandedCapacity, hidden, routes, uniqueCapacity, k,
        recvCounts, nodes, ranksPerNode, expertsPerRank, dUnique));
  }
  Result allReduce(tamoe_rt_group_t group, float *data, int64_t n,
                   bool average) override {
    return wrap(backend_->allReduce(group, data, n, average));
  }
  Result sgd(float *params, const float *grads, float *velocity, int64_t n,
             float lr, float momentum, float weightDecay) override {
    return wrap(
        backend_->sgd(params, grads, velocity, n, lr, momentum, weightDecay));
  }
  Result adam(float *params, const float *grads, float *m, float *v, int64_t n,
              int64_t step, float lr, float beta1, float beta2, float eps,
              float weightDecay) override {
    return wrap(backend_->adam(params, grads, m, v, n, step, lr, beta1, beta2,
                               eps, weightDecay));
  }

private:
  static Result wrap(const tamoe_rt::Status &status) {
    return {int(status.code), status.message};
  }
  tamoe_rt::SingleRankLauncher launcher_;
  std::unique_ptr<tamoe_rt::Backend> backend_;
  tamoe_rt::Traffic traffic_;
};
#endif

//===----------------------------------------------------------------------===//
// Buffers and cases
//===----------------------------------------------------------------------===//

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void require(const Result &r, const std::string &what) {
  if (!r.ok())
    throw Failure(what + " failed: " + statusName(r.code) + ": " + r.message);
}

/// Allocations on one engine, freed when the scope ends.
class Scope {
public:
  /// `fill`: pattern-fill new buffers (checks); timing skips it, its
  /// buffers are gigabytes.
  explicit Scope(Engine &engine, bool fill = true)
      : engine_(engine), fill_(fill) {}
  ~Scope() {
    for (void *pointer : pointers_)
      engine_.free(pointer);
  }
  /// `bytes` of backend memory, filled with 0xEE so that a value nobody
  /// wrote shows.
  void *raw(int64_t bytes) {
    void *pointer = nullptr;
    require(engine_.alloc(bytes, &pointer),
            engine_.name() + " alloc(" + std::to_string(bytes) + ")");
    if (pointer)
      pointers_.push_back(pointer);
    if (pointer && fill_) {
      std::vector<unsigned char> pattern(size_t(bytes), 0xEE);
      require(engine_.toBackend(pointer, pattern.data(), bytes),
              engine_.name() + " copy_to_backend");
    }
    return pointer;
  }
  template <typename T> T *make(int64_t count) {
    return static_cast<T *>(raw(count * int64_t(sizeof(T))));
  }
  template <typename T> T *put(const std::vector<T> &host) {
    T *pointer = make<T>(int64_t(host.size()));
    if (!host.empty())
      require(engine_.toBackend(pointer, host.data(),
                                int64_t(host.size() * sizeof(T))),
              engine_.name() + " copy_to_backend");
    return pointer;
  }
  template <typename T> std::vector<T> get(const T *pointer, int64_t count) {
    std::vector<T> host(size_t(std::max<int64_t>(count, 0)));
    if (count > 0)
      require(engine_.toHost(host.data(), pointer, count * int64_t(sizeof(T))),
              engine_.name() + " copy_to_host");
    return host;
  }
  Engine &engine() { return engine_; }

private:
  Engine &engine_;
  bool fill_;
  std::vector<void *> pointers_;
};

int passes = 0, failures = 0;
int64_t worldRank = 0;

/// Runs one case: `body` returns "" when it passed, else what went wrong.
void runCase(const std::string &name,
             const std::function<std::string()> &body) {
  std::string problem;
  try {
    problem = body();
  } catch (const std::exception &e) {
    problem = e.what();
  }
  if (problem.empty()) {
    ++passes;
    std::printf("[rank %lld] PASS %s\n", (long long)worldRank, name.c_str());
  } else {
    ++failures;
    std::printf("[rank %lld] FAIL %s: %s\n", (long long)worldRank, name.c_str(),
                problem.c_str());
  }
  std::fflush(stdout);
}

bool close(float a, float b, float rtol, float atol) {
  if (std::isnan(a) || std::isnan(b))
    return std::isnan(a) && std::isnan(b);
  return std::fabs(a - b) <= atol + rtol * std::fabs(b);
}

template <typename T>
std::string firstDifference(const std::vector<T> &got,
                            const std::vector<T> &want, const char *what) {
  if (got.size() != want.size())
    return std::string(what) + ": size " + std::to_string(got.size()) +
           ", want " + std::to_string(want.size());
  for (size_t i = 0; i < got.size(); ++i)
    if (!(got[i] == want[i])) {
      std::ostringstream s;
      s << what << "[" << i << "] = " << +got[i] << ", want " << +want[i];
      return s.str();
    }
  return "";
}

std::string floatsDiffer(const std::vector<float> &got,
                         const std::vector<float> &want, const char *what,
                         float rtol, float atol) {
  if (got.size() != want.size())
    return std::string(what) + ": size differs";
  for (size_t i = 0; i < got.size(); ++i)
    if (!close(got[i], want[i], rtol, atol)) {
      std::ostringstream s;
      s.precision(9);
      s << what << "[" << i << "] = " << got[i] << ", want " << want[i];
      return s.str();
    }
  return "";
}

std::string bytesDiffer(const Bytes &got, const Bytes &want, int64_t rowBytes,
                        const char *what) {
  if (got.size() != want.size())
    return std::string(what) + ": " + std::to_string(got.size()) +
           " bytes, want " + std::to_string(want.size());
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i])
      return std::string(what) + ": first difference in row " +
             std::to_string(rowBytes ? int64_t(i) / rowBytes : 0);
  return "";
}

std::vector<Engine *> engines;

//===----------------------------------------------------------------------===//
// Local operations
//===----------------------------------------------------------------------===//

/// With `withNaN`, every third token's logits are NaN from its first expert
/// on through a random count: overflowed logits, which rank as -inf.
void checkGate(int64_t tokens, int64_t experts, int64_t k, bool sigmoid,
               bool renormalize, int64_t groups, int64_t kept, uint64_t seed,
               bool withNaN = false) {
  std::string name =
      std::string("gate ") + (sigmoid ? "sigmoid" : "softmax") +
      (renormalize ? "+renorm" : "") + " T=" + std::to_string(tokens) +
      " E=" + std::to_string(experts) + " k=" + std::to_string(k) +
      (groups ? " groups=" + std::to_string(groups) + "/" + std::to_string(kept)
              : "") +
      (withNaN ? " NaN logits" : "");
  reference::Random random(seed);
  std::vector<float> logits = random.floats(size_t(tokens * experts), -4, 4);
  for (int64_t t = 0; withNaN && t < tokens; t += 3)
    std::fill_n(logits.begin() + t * experts, random.integer(1, experts), NAN);
  reference::Gate want = reference::gate(logits, tokens, experts, k, sigmoid,
                                         renormalize, groups, kept);
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dLogits = s.put(logits);
      int32_t *dIds = s.make<int32_t>(tokens * k);
      float *dWeights = s.make<float>(tokens * k);
      float *dProbs = s.make<float>(tokens * experts);
      require(engine->gate(dLogits, tokens, experts, k, sigmoid, renormalize,
                           groups, kept, dIds, dWeights, dProbs),
              "gate");
      auto ids = s.get(dIds, tokens * k);
      auto weights = s.get(dWeights, tokens * k);
      auto probs = s.get(dProbs, tokens * experts);
      std::string problem =
          floatsDiffer(probs, want.probs, "probs", 1e-5f, 1e-7f);
      if (!problem.empty())
        return problem;
      // exp and the reductions may round differently on the device, which
      // can swap two experts whose scores tie to within an ulp or two.
      int64_t nearTies = 0;
      for (int64_t i = 0; i < tokens * k; ++i) {
        if (ids[i] != want.ids[i]) {
          int64_t t = i / k;
          if (ids[i] < 0 || ids[i] >= experts)
            return "ids[" + std::to_string(i) +
                   "] = " + std::to_string(ids[i]) + " out of range";
          float a = want.probs[t * experts + ids[i]],
                b = want.probs[t * experts + want.ids[i]];
          if (std::isnan(a) || std::isnan(b) || !close(a, b, 2e-6f, 1e-9f))
            return "ids[" + std::to_string(i) +
                   "] = " + std::to_string(ids[i]) + ", want " +
                   std::to_string(want.ids[i]) + " (no tie)";
          ++nearTies;
        }
        if (!close(weights[i], want.weights[i], 1e-5f, 1e-7f))
          return "weights[" + std::to_string(i) +
                 "] = " + std::to_string(weights[i]) + ", want " +
                 std::to_string(want.weights[i]);
      }
      if (nearTies > std::max<int64_t>(2, tokens * k / 1000))
        return std::to_string(nearTies) + " near-tie swaps";
      return "";
    });
}

void checkDispatch(int64_t tokens, int64_t rowBytes, int64_t k, int64_t experts,
                   int64_t capacity, bool byProbability, uint64_t seed) {
  std::string name = "dispatch T=" + std::to_string(tokens) +
                     " row_bytes=" + std::to_string(rowBytes) +
                     " k=" + std::to_string(k) +
                     " E=" + std::to_string(experts) +
                     " capacity=" + std::to_string(capacity) +
                     (byProbability ? " by probability" : "");
  reference::Random random(seed);
  Bytes rows = random.bytes(size_t(tokens * rowBytes));
  std::vector<int32_t> ids(size_t(tokens * k));
  std::vector<float> weights(ids.size());
  for (size_t a = 0; a < ids.size(); ++a) {
    ids[a] = int32_t(random.integer(0, experts - 1));
    // Eight levels: plenty of ties, which must go to the earlier token;
    // and NaN of either sign, which ranks as -inf.
    int64_t level = random.integer(0, 8);
    weights[a] = level < 8 ? float(level) / 8.0f : a % 2 ? NAN : -NAN;
  }
  reference::Dispatch want = reference::dispatch(
      rows, rowBytes, ids, k, experts, capacity, byProbability, weights);
  int64_t outRows = int64_t(want.rows.size()) / rowBytes;
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      void *dRows = s.put(rows);
      int32_t *dIds = s.put(ids);
      float *dWeights = s.put(weights);
      int64_t capacityRows = tokens * k;
      void *dOut = s.raw(capacityRows * rowBytes);
      int32_t *dCounts = s.make<int32_t>(experts);
      int32_t *dPositions = s.make<int32_t>(tokens * k);
      int64_t *dDropped = s.make<int64_t>(1);
      require(engine->dispatch(dRows, tokens, rowBytes, dIds, k, experts,
                               dWeights, capacity, byProbability, dOut,
                               capacityRows, dCounts, dPositions, dDropped),
              "dispatch");
      auto out = s.get(static_cast<unsigned char *>(dOut), outRows * rowBytes);
      std::string problem;
      if (!(problem = firstDifference(s.get(dCounts, experts), want.counts,
                                      "expert_counts"))
               .empty() ||
          !(problem = firstDifference(s.get(dPositions, tokens * k),
                                      want.positions, "positions"))
               .empty() ||
          !(problem = bytesDiffer(out, want.rows, rowBytes, "dispatched"))
               .empty())
        return problem;
      int64_t dropped = s.get(dDropped, 1)[0];
      if (dropped != want.dropped)
        return "num_dropped = " + std::to_string(dropped) + ", want " +
               std::to_string(want.dropped);
      return "";
    });
}

/// Without weights: the plain sums that are dispatch's gradient.
void checkCombine(int64_t tokens, int64_t hidden, int64_t k, int64_t rows,
                  uint64_t seed, bool weighted = true) {
  std::string name =
      "combine T=" + std::to_string(tokens) + " H=" + std::to_string(hidden) +
      " k=" + std::to_string(k) + " rows=" + std::to_string(rows) +
      (weighted ? "" : " without weights");
  reference::Random random(seed);
  std::vector<float> outputs = random.floats(size_t(rows * hidden));
  std::vector<float> weights =
      weighted ? random.floats(size_t(tokens * k), 0, 1) : std::vector<float>();
  std::vector<int32_t> positions(size_t(tokens * k));
  for (auto &p : positions)
    p = random.integer(0, 5) == 0 ? -1 : int32_t(random.integer(0, rows - 1));
  // One token with every assignment dropped: a zero row.
  if (tokens > 0)
    std::fill(positions.begin(), positions.begin() + k, -1);
  std::vector<float> want =
      reference::combine(outputs, hidden, positions, weights, k);
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dOutputs = s.put(outputs);
      int32_t *dPositions = s.put(positions);
      float *dWeights = weighted ? s.put(weights) : nullptr;
      float *dCombined = s.make<float>(tokens * hidden);
      require(engine->combine(dOutputs, rows, hidden, dPositions, dWeights,
                              tokens, k, dCombined),
              "combine");
      return floatsDiffer(s.get(dCombined, tokens * hidden), want, "combined",
                          1e-5f, 1e-5f);
    });
}

void checkAuxLoss(int64_t tokens, int64_t experts, int64_t k, bool weighted,
                  uint64_t seed) {
  std::string name =
      std::string("aux_loss ") + (weighted ? "topology" : "switch") +
      " T=" + std::to_string(tokens) + " E=" + std::to_string(experts) +
      " k=" + std::to_string(k);
  reference::Random random(seed);
  std::vector<float> logits = random.floats(size_t(tokens * experts), -3, 3);
  reference::Gate g = reference::gate(logits, tokens, experts, k, false, false);
  std::vector<int32_t> ids = g.ids;
  for (auto &id : ids)
    if (random.integer(0, 9) == 0)
      id = -1; // dropped: not counted
  std::vector<float> expertWeights =
      weighted ? random.floats(size_t(experts), 0.5f, 2.0f)
               : std::vector<float>();
  double want = reference::auxLoss(g.probs, ids, experts, k, expertWeights);
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dProbs = s.put(g.probs);
      int32_t *dIds = s.put(ids);
      float *dWeights = weighted ? s.put(expertWeights) : nullptr;
      float *dLoss = s.make<float>(1);
      require(
          engine->auxLoss(dProbs, dIds, tokens, experts, k, dWeights, dLoss),
          "aux_loss");
      float loss = s.get(dLoss, 1)[0];
      if (!close(loss, float(want), 1e-4f, 1e-7f))
        return "loss = " + std::to_string(loss) + ", want " +
               std::to_string(want);
      return "";
    });
}

/// A grouped matmul's inputs: counts [peers, experts] (some chunks empty),
/// `slack` rows past their sum, and the experts' weights.
struct GroupedCase {
  std::string shape;
  std::vector<int32_t> counts;
  int64_t total = 0, capacity = 0;
  std::vector<float> rows, weights;
};

GroupedCase groupedCase(reference::Random &random, int64_t peers,
                        int64_t experts, int64_t hidden, int64_t outFeatures,
                        int64_t slack) {
  GroupedCase c;
  c.shape = "counts [" + std::to_string(peers) + ", " +
            std::to_string(experts) + "] hidden=" + std::to_string(hidden) +
            " out=" + std::to_string(outFeatures);
  c.counts.resize(static_cast<size_t>(peers * experts));
  for (auto &count : c.counts)
    c.total += count =
        random.integer(0, 4) == 0 ? 0 : int32_t(random.integer(0, 90));
  c.capacity = c.total + slack;
  c.rows = random.floats(size_t(c.capacity * hidden), -1, 1);
  c.weights = random.floats(size_t(experts * hidden * outFeatures), -1, 1);
  return c;
}

void checkGroupedMatmul(int64_t peers, int64_t experts, int64_t hidden,
                        int64_t outFeatures, int64_t slack, uint64_t seed) {
  reference::Random random(seed);
  GroupedCase c =
      groupedCase(random, peers, experts, hidden, outFeatures, slack);
  std::string name = "grouped_matmul " + c.shape;
  const std::vector<int32_t> &counts = c.counts;
  const std::vector<float> &rows = c.rows, &weights = c.weights;
  int64_t capacity = c.capacity;
  std::vector<float> want = reference::groupedMatmul(
      rows, hidden, counts, experts, weights, outFeatures);
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dRows = s.put(rows);
      int32_t *dCounts = s.put(counts);
      float *dWeights = s.put(weights);
      float *dResult = s.make<float>(capacity * outFeatures);
      require(engine->groupedMatmul(dRows, capacity, hidden, dCounts,
                                    peers * experts, experts, dWeights,
                                    outFeatures, dResult),
              "grouped_matmul");
      // Sums of `hidden` products: FMA on the device rounds differently.
      return floatsDiffer(s.get(dResult, capacity * outFeatures), want,
                          "result", 1e-4f, 1e-4f * float(hidden) / 64);
    });
}

/// grouped_matmul on bf16 or f16 rows and weights (the cuda backend's
/// tensor-core path; the cpu backend stages them in f32): against the f32
/// reference on the rounded inputs, within the result's own rounding.
void checkGroupedMatmulRows(tamoe_rt_dtype_t dtype, int64_t peers,
                            int64_t experts, int64_t hidden,
                            int64_t outFeatures, int64_t slack, uint64_t seed) {
  reference::Random random(seed);
  GroupedCase c =
      groupedCase(random, peers, experts, hidden, outFeatures, slack);
  const char *type = dtype == TAMOE_RT_BF16 ? "bf16" : "f16";
  std::string name = std::string("grouped_matmul ") + type + " " + c.shape;
  int64_t capacity = c.capacity, weightCount = int64_t(c.weights.size());
  // Half an ulp of the result's type, relative.
  float halfUlp = dtype == TAMOE_RT_BF16 ? 0x1p-8f : 0x1p-11f;
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      int64_t rowCount = capacity * hidden;
      // The inputs in the 16-bit type, and what they are exactly in f32.
      uint16_t *dRows = s.make<uint16_t>(rowCount);
      uint16_t *dWeights = s.make<uint16_t>(weightCount);
      float *wideRows = s.make<float>(rowCount);
      float *wideWeights = s.make<float>(weightCount);
      require(
          engine->convert(TAMOE_RT_F32, s.put(c.rows), dtype, dRows, rowCount),
          "convert");
      require(engine->convert(TAMOE_RT_F32, s.put(c.weights), dtype, dWeights,
                              weightCount),
              "convert");
      require(engine->convert(dtype, dRows, TAMOE_RT_F32, wideRows, rowCount),
              "convert");
      require(engine->convert(dtype, dWeights, TAMOE_RT_F32, wideWeights,
                              weightCount),
              "convert");
      std::vector<double> rows, weights;
      for (float v : s.get(wideRows, rowCount))
        rows.push_back(v);
      for (float v : s.get(wideWeights, weightCount))
        weights.push_back(v);
      std::vector<double> exact = reference::groupedMatmul(
          rows, hidden, c.counts, experts, weights, outFeatures);
      std::vector<float> want(exact.begin(), exact.end());

      uint16_t *dResult = s.make<uint16_t>(capacity * outFeatures);
      require(engine->groupedMatmulRows(
                  dtype, dRows, capacity, hidden, s.put(c.counts),
                  peers * experts, experts, dWeights, outFeatures, dResult),
              "grouped_matmul");
      float *got = s.make<float>(capacity * outFeatures);
      require(engine->convert(dtype, dResult, TAMOE_RT_F32, got,
                              capacity * outFeatures),
              "convert");
      // One rounding of the result, plus f32 sums of `hidden` products.
      return floatsDiffer(s.get(got, capacity * outFeatures), want, "result",
                          halfUlp, 1e-5f * float(hidden));
    });
}

void checkRegroup(int64_t a, int64_t b, int64_t inner, int64_t rowBytes,
                  uint64_t seed) {
  std::string name = "regroup [" + std::to_string(a) + ", " +
                     std::to_string(b) + ", " + std::to_string(inner) +
                     "] row_bytes=" + std::to_string(rowBytes);
  reference::Random random(seed);
  std::vector<int32_t> counts(size_t(a * b * inner));
  int64_t total = 0;
  for (auto &c : counts)
    total += c = random.integer(0, 3) == 0 ? 0 : int32_t(random.integer(0, 9));
  int64_t capacity = total + 3;
  Bytes rows = random.bytes(size_t(capacity * rowBytes));
  Bytes want;
  std::vector<int32_t> wantCounts;
  reference::regroup(rows, rowBytes, counts, a, b, inner, want, wantCounts);
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      void *dRows = s.put(rows);
      int32_t *dCounts = s.put(counts);
      void *dOut = s.raw(capacity * rowBytes);
      int32_t *dOutCounts = s.make<int32_t>(a * b * inner);
      require(engine->regroup(dRows, capacity, rowBytes, dCounts, a, b, inner,
                              dOut, dOutCounts),
              "regroup");
      std::string problem = firstDifference(s.get(dOutCounts, a * b * inner),
                                            wantCounts, "regrouped_counts");
      if (problem.empty())
        problem = bytesDiffer(
            s.get(static_cast<unsigned char *>(dOut), total * rowBytes), want,
            rowBytes, "regrouped");
      return problem;
    });
}

/// Every part of `chunks` through chunk (against the reference) and back
/// through unchunk (the parts together give the rows back).
void checkChunk(int64_t numCounts, int64_t rowBytes, int64_t chunks,
                uint64_t seed) {
  std::string name = "chunk + unchunk " + std::to_string(numCounts) +
                     " blocks, " + std::to_string(chunks) +
                     " chunks, row_bytes=" + std::to_string(rowBytes);
  reference::Random random(seed);
  std::vector<int32_t> counts(static_cast<size_t>(numCounts));
  int64_t total = 0;
  for (auto &c : counts)
    total += c = random.integer(0, 4) == 0 ? 0 : int32_t(random.integer(0, 40));
  int64_t capacity = total + 2;
  Bytes rows = random.bytes(size_t(capacity * rowBytes));
  // Each part fits in (total + blocks (C - 1)) / C rows.
  int64_t chunkCapacity = (total + numCounts * (chunks - 1)) / chunks;
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      void *dRows = s.put(rows);
      int32_t *dCounts = s.put(counts);
      void *dPart = s.raw(chunkCapacity * rowBytes);
      int32_t *dPartCounts = s.make<int32_t>(numCounts);
      void *dWhole = s.raw(capacity * rowBytes);
      for (int64_t c = 0; c < chunks; ++c) {
        Bytes want;
        std::vector<int32_t> wantCounts;
        reference::chunk(rows, rowBytes, counts, c, chunks, want, wantCounts);
        require(engine->chunk(dRows, capacity, rowBytes, dCounts, numCounts, c,
                              chunks, dPart, chunkCapacity, dPartCounts),
                "chunk");
        std::string problem = firstDifference(s.get(dPartCounts, numCounts),
                                              wantCounts, "chunk_counts");
        if (problem.empty())
          problem = bytesDiffer(
              s.get(static_cast<unsigned char *>(dPart), int64_t(want.size())),
              want, rowBytes, "chunk_rows");
        if (!problem.empty())
          return "part " + std::to_string(c) + ": " + problem;
        require(engine->unchunk(dPart, chunkCapacity, rowBytes, dCounts,
                                numCounts, c, chunks, dWhole, capacity),
                "unchunk");
      }
      return bytesDiffer(
          s.get(static_cast<unsigned char *>(dWhole), total * rowBytes),
          Bytes(rows.begin(), rows.begin() + total * rowBytes), rowBytes,
          "unchunked rows");
    });
}

/// The parts' received counts summed, in place.
void checkAddCounts(int64_t n, uint64_t seed) {
  std::string name = "add_counts n=" + std::to_string(n);
  reference::Random random(seed);
  std::vector<int32_t> a(static_cast<size_t>(n)), b(a.size()), want(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = int32_t(random.integer(0, 100000));
    b[i] = int32_t(random.integer(0, 100000));
    want[i] = a[i] + b[i];
  }
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      int32_t *dA = s.put(a);
      require(engine->addCounts(dA, s.put(b), n, dA), "add_counts");
      return firstDifference(s.get(dA, n), want, "sums");
    });
}

/// chunk_positions of a dispatch layout with drops, every part, against
/// its definition.
void checkChunkPositions(int64_t tokens, int64_t k, int64_t experts,
                         int64_t chunks, uint64_t seed) {
  std::string name = "chunk_positions T=" + std::to_string(tokens) +
                     " k=" + std::to_string(k) +
                     " E=" + std::to_string(experts) +
                     " chunks=" + std::to_string(chunks);
  reference::Random random(seed);
  int64_t n = tokens * k;
  std::vector<int32_t> ids(static_cast<size_t>(n)),
      positions(static_cast<size_t>(n), -1),
      counts(static_cast<size_t>(experts), 0);
  for (auto &id : ids)
    id = int32_t(random.integer(0, experts - 1));
  // The dispatch's layout: by expert, then assignment; about one in five
  // dropped.
  std::vector<std::vector<int64_t>> byExpert(static_cast<size_t>(experts));
  for (int64_t a = 0; a < n; ++a)
    if (random.integer(0, 4) != 0)
      byExpert[size_t(ids[size_t(a)])].push_back(a);
  std::vector<int64_t> blockBegin(static_cast<size_t>(experts));
  int32_t row = 0;
  for (int64_t e = 0; e < experts; ++e) {
    blockBegin[size_t(e)] = row;
    for (int64_t a : byExpert[size_t(e)])
      positions[size_t(a)] = row++;
    counts[size_t(e)] = int32_t(byExpert[size_t(e)].size());
  }
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      int32_t *dPositions = s.put(positions);
      int32_t *dIds = s.put(ids);
      int32_t *dCounts = s.put(counts);
      int32_t *dOut = s.make<int32_t>(n);
      for (int64_t c = 0; c < chunks; ++c) {
        std::vector<int32_t> want(size_t(n), -1);
        std::vector<int64_t> packed(static_cast<size_t>(experts));
        for (int64_t e = 0, at = 0; e < experts; ++e) {
          packed[size_t(e)] = at;
          int64_t m = counts[size_t(e)];
          at += (c + 1) * m / chunks - c * m / chunks;
        }
        for (int64_t a = 0; a < n; ++a) {
          if (positions[size_t(a)] < 0)
            continue;
          auto e = size_t(ids[size_t(a)]);
          int64_t m = counts[e], local = positions[size_t(a)] - blockBegin[e];
          if (c * m / chunks <= local && local < (c + 1) * m / chunks)
            want[size_t(a)] = int32_t(packed[e] + local - c * m / chunks);
        }
        require(engine->chunkPositions(dPositions, dIds, tokens, k, dCounts,
                                       experts, c, chunks, dOut),
                "chunk_positions");
        std::string problem =
            firstDifference(s.get(dOut, n), want, "chunk_positions");
        if (!problem.empty())
          return "part " + std::to_string(c) + ": " + problem;
      }
      return std::string();
    });
}

void checkDedup(int64_t tokens, int64_t rowBytes, int64_t k, int64_t nodes,
                int64_t ranksPerNode, int64_t expertsPerRank, uint64_t seed) {
  std::string shape = "T=" + std::to_string(tokens) +
                      " k=" + std::to_string(k) +
                      " nodes=" + std::to_string(nodes) +
                      " rpn=" + std::to_string(ranksPerNode) +
                      " epr=" + std::to_string(expertsPerRank);
  reference::Random random(seed);
  int64_t perNode = ranksPerNode * expertsPerRank;
  int64_t experts = nodes * perNode;
  Bytes rows = random.bytes(size_t(tokens * rowBytes));
  std::vector<int32_t> ids(size_t(tokens * k)), positions(ids.size());
  for (size_t a = 0; a < ids.size(); ++a) {
    ids[a] = int32_t(random.integer(0, experts - 1));
    positions[a] = random.integer(0, 4) == 0 ? -1 : int32_t(a);
  }
  reference::Pack pack =
      reference::dedupPack(rows, rowBytes, ids, positions, k, perNode, nodes);
  int64_t uniqueRows = int64_t(pack.unique.size()) / rowBytes;
  for (Engine *engine : engines)
    runCase("dedup_pack " + shape + " [" + engine->name() + "]",
            [&]() -> std::string {
              Scope s(*engine);
              int64_t capacity = tokens * std::min(k, nodes);
              void *dRows = s.put(rows);
              int32_t *dIds = s.put(ids);
              int32_t *dPositions = s.put(positions);
              void *dUnique = s.raw(capacity * rowBytes);
              int32_t *dRoutes = s.make<int32_t>(capacity * k);
              int32_t *dNodeCounts = s.make<int32_t>(nodes);
              require(engine->dedupPack(dRows, tokens, rowBytes, dIds,
                                        dPositions, k, perNode, nodes, dUnique,
                                        dRoutes, capacity, dNodeCounts),
                      "dedup_pack");
              std::string problem;
              if (!(problem = firstDifference(s.get(dNodeCounts, nodes),
                                              pack.nodeCounts, "node_counts"))
                       .empty() ||
                  !(problem = firstDifference(s.get(dRoutes, uniqueRows * k),
                                              pack.routes, "routes"))
                       .empty())
                return problem;
              return bytesDiffer(s.get(static_cast<unsigned char *>(dUnique),
                                       uniqueRows * rowBytes),
                                 pack.unique, rowBytes, "unique");
            });

  // The relay of node 0 receives, from every node, rows whose routes name
  // experts of node 0 (distinct within a row, -1 padded).
  std::vector<int32_t> recvCounts(static_cast<size_t>(nodes));
  int64_t received = 0;
  for (auto &c : recvCounts)
    received += c = int32_t(random.integer(0, tokens));
  Bytes unique = random.bytes(size_t(received * rowBytes));
  std::vector<int32_t> routes(size_t(received * k), -1);
  for (int64_t r = 0; r < received; ++r) {
    std::vector<int32_t> pool(static_cast<size_t>(perNode));
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), random.engine);
    int64_t listed = random.integer(1, std::min(k, perNode));
    for (int64_t j = 0; j < listed; ++j)
      routes[size_t(r * k + j)] = pool[size_t(j)];
  }
  reference::Expand expand = reference::dedupExpand(
      unique, routes, rowBytes, k, recvCounts, ranksPerNode, expertsPerRank);
  int64_t expandedRows = int64_t(expand.expanded.size()) / rowBytes;
  for (Engine *engine : engines)
    runCase("dedup_expand " + shape + " [" + engine->name() + "]",
            [&]() -> std::string {
              Scope s(*engine);
              int64_t capacity = received * k;
              void *dUnique = s.put(unique);
              int32_t *dRoutes = s.put(routes);
              int32_t *dRecv = s.put(recvCounts);
              void *dExpanded = s.raw(capacity * rowBytes);
              int32_t *dCounts = s.make<int32_t>(perNode * nodes);
              require(engine->dedupExpand(dUnique, dRoutes, received, rowBytes,
                                          k, dRecv, nodes, ranksPerNode,
                                          expertsPerRank, dExpanded, capacity,
                                          dCounts),
                      "dedup_expand");
              std::string problem =
                  firstDifference(s.get(dCounts, perNode * nodes),
                                  expand.counts, "expanded_counts");
              if (problem.empty())
                problem =
                    bytesDiffer(s.get(static_cast<unsigned char *>(dExpanded),
                                      expandedRows * rowBytes),
                                expand.expanded, rowBytes, "expanded");
              return problem;
            });
}

//===----------------------------------------------------------------------===//
// Dense compute, gradients and training steps, against the reference's
// f64 gradients (which GradientTest holds to finite differences)
//===----------------------------------------------------------------------===//

std::vector<double> widen(const std::vector<float> &values) {
  return std::vector<double>(values.begin(), values.end());
}
std::vector<float> narrow(const std::vector<double> &values) {
  return std::vector<float>(values.begin(), values.end());
}

void checkMatmul(int64_t m, int64_t k, int64_t n, bool transposeA,
                 bool transposeB, bool withInit, uint64_t seed) {
  std::string name =
      "matmul m=" + std::to_string(m) + " k=" + std::to_string(k) +
      " n=" + std::to_string(n) + (transposeA ? " transpose_a" : "") +
      (transposeB ? " transpose_b" : "") + (withInit ? " +c_init" : "");
  reference::Random random(seed);
  std::vector<float> a = random.floats(size_t(m * k), -1, 1),
                     b = random.floats(size_t(k * n), -1, 1),
                     init = random.floats(size_t(m * n), -1, 1);
  std::vector<double> want =
      reference::matmul(widen(a), widen(b), m, k, n, transposeA, transposeB);
  if (withInit)
    for (size_t i = 0; i < want.size(); ++i)
      want[i] += init[i];
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dC = s.make<float>(m * n);
      require(engine->matmul(s.put(a), s.put(b), m, k, n, transposeA,
                             transposeB, withInit ? s.put(init) : nullptr, dC),
              "matmul");
      return floatsDiffer(s.get(dC, m * n), narrow(want), "c", 1e-4f,
                          1e-6f * float(k));
    });
}

/// Host rounding of f32 to a 16-bit type, to nearest even (NaN stays NaN),
/// and back: what the maps' host reference computes with.
uint16_t hostNarrow(float value, tamoe_rt_dtype_t dtype) {
  if (dtype == TAMOE_RT_F16) {
    _Float16 half = static_cast<_Float16>(value);
    uint16_t bits;
    std::memcpy(&bits, &half, sizeof bits);
    return bits;
  }
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}
float hostWiden(uint16_t bits, tamoe_rt_dtype_t dtype) {
  if (dtype == TAMOE_RT_F16) {
    _Float16 half;
    std::memcpy(&half, &bits, sizeof half);
    return static_cast<float>(half);
  }
  uint32_t wide = uint32_t(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

/// matmul of 16-bit operands (bf16 tokens times a bf16 router give f32
/// logits; or a 16-bit result), with and without c_init: against the
/// reference on the rounded inputs, within one rounding of the result.
void checkMatmulRows(tamoe_rt_dtype_t type, tamoe_rt_dtype_t cType,
                     bool transposeA, bool transposeB, bool withInit,
                     uint64_t seed) {
  const int64_t m = 300, k = 257, n = 64;
  const char *name16 = type == TAMOE_RT_BF16 ? "bf16" : "f16";
  std::string name = std::string("matmul ") + name16 + " -> " +
                     (cType == TAMOE_RT_F32 ? "f32" : name16) +
                     (transposeA ? " transpose_a" : "") +
                     (transposeB ? " transpose_b" : "") +
                     (withInit ? " +c_init" : "");
  reference::Random random(seed);
  auto rounded = [&](size_t count, std::vector<uint16_t> &bits,
                     std::vector<double> &exact) {
    for (float v : random.floats(count, -1, 1)) {
      bits.push_back(hostNarrow(v, type));
      exact.push_back(hostWiden(bits.back(), type));
    }
  };
  std::vector<uint16_t> a16, b16, init16;
  std::vector<double> a, b, init;
  rounded(size_t(m * k), a16, a);
  rounded(size_t(k * n), b16, b);
  rounded(size_t(m * n), init16, init);
  std::vector<float> initF32(init.begin(), init.end());
  std::vector<double> want =
      reference::matmul(a, b, m, k, n, transposeA, transposeB);
  if (withInit)
    for (size_t i = 0; i < want.size(); ++i)
      want[i] += init[i];
  bool wide = cType == TAMOE_RT_F32;
  float halfUlp = wide ? 1e-5f : type == TAMOE_RT_BF16 ? 0x1p-8f : 0x1p-11f;
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      void *dC = s.raw(m * n * (wide ? 4 : 2));
      const void *dInit = !withInit ? nullptr
                          : wide    ? static_cast<const void *>(s.put(initF32))
                                    : static_cast<const void *>(s.put(init16));
      require(engine->matmulRows(type, type, cType, s.put(a16), s.put(b16), m,
                                 k, n, transposeA, transposeB, dInit, dC),
              "matmul");
      std::vector<float> got;
      if (wide) {
        got = s.get(static_cast<float *>(dC), m * n);
      } else {
        for (uint16_t bits : s.get(static_cast<uint16_t *>(dC), m * n))
          got.push_back(hostWiden(bits, type));
      }
      return floatsDiffer(got, narrow(want), "c", halfUlp, 1e-6f * float(k));
    });
}

/// NEG and RELU_GRAD on the values where they are subtle (signed zeros,
/// NaN, infinities), then random ones; SILU and SILU_GRAD.
void checkMaps(uint64_t seed) {
  reference::Random random(seed);
  std::vector<float> a = {1.5f, -2.0f,    0.0f,      -0.0f,
                          NAN,  INFINITY, -INFINITY, 3.0f};
  std::vector<float> b = {0.5f, 4.0f, -1.0f, 2.0f, 1.0f, NAN, 5.0f, NAN};
  for (float value : random.floats(10000))
    a.push_back(value);
  for (float value : random.floats(10000))
    b.push_back(value);
  int64_t n = int64_t(a.size());
  for (tamoe_rt_map_t op : {TAMOE_RT_MAP_NEG, TAMOE_RT_MAP_RELU_GRAD}) {
    bool neg = op == TAMOE_RT_MAP_NEG;
    std::vector<float> want(a.size());
    for (size_t i = 0; i < a.size(); ++i)
      want[i] = neg ? -a[i] : a[i] > 0.0f ? b[i] : 0.0f;
    for (Engine *engine : engines)
      runCase(std::string("map ") + (neg ? "NEG" : "RELU_GRAD") +
                  " n=" + std::to_string(n) + " [" + engine->name() + "]",
              [&]() -> std::string {
                Scope s(*engine);
                float *dOut = s.make<float>(n);
                require(engine->map(op, s.put(a), neg ? nullptr : s.put(b), n,
                                    dOut),
                        "map");
                std::vector<float> got = s.get(dOut, n);
                for (size_t i = 0; i < got.size(); ++i)
                  if (std::memcmp(&got[i], &want[i], 4) != 0 &&
                      !(std::isnan(got[i]) && std::isnan(want[i])))
                    return "out[" + std::to_string(i) +
                           "] = " + std::to_string(got[i]) + ", want " +
                           std::to_string(want[i]);
                return std::string();
              });
  }
  // silu and its gradient against a double computation (the device's expf
  // may differ from the host's in the last bits); finite everywhere.
  for (tamoe_rt_map_t op : {TAMOE_RT_MAP_SILU, TAMOE_RT_MAP_SILU_GRAD}) {
    bool grad = op == TAMOE_RT_MAP_SILU_GRAD;
    std::vector<float> x = {-120.0f, -3.0f, -0.0f, 0.0f, 2.5f, 120.0f};
    for (float value : random.floats(10000, -8, 8))
      x.push_back(value);
    std::vector<float> g(b.begin() + 8, b.begin() + 8 + x.size());
    std::vector<double> want(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      double sig = 1.0 / (1.0 + std::exp(-double(x[i])));
      want[i] = grad ? g[i] * sig * (1 + x[i] * (1 - sig)) : x[i] * sig;
    }
    int64_t count = int64_t(x.size());
    for (Engine *engine : engines)
      runCase(std::string("map ") + (grad ? "SILU_GRAD" : "SILU") +
                  " n=" + std::to_string(count) + " [" + engine->name() + "]",
              [&]() -> std::string {
                Scope s(*engine);
                float *dOut = s.make<float>(count);
                require(engine->map(op, s.put(x), grad ? s.put(g) : nullptr,
                                    count, dOut),
                        "map");
                return floatsDiffer(s.get(dOut, count), narrow(want), "out",
                                    1e-5f, 1e-6f);
              });
  }
}

/// combine on bf16 and f16 expert outputs: the weighted sum in f32, in slot
/// order, rounded once, against a host computation (within one ulp of the
/// type: the device may fuse the multiply-adds).
void checkCombineRows(uint64_t seed) {
  const int64_t tokens = 333, hidden = 1001, k = 4, rows = 900;
  reference::Random random(seed);
  std::vector<float> outputs = random.floats(size_t(rows * hidden));
  std::vector<float> weights = random.floats(size_t(tokens * k), 0, 1);
  std::vector<int32_t> positions(size_t(tokens * k));
  for (auto &p : positions)
    p = random.integer(0, 5) == 0 ? -1 : int32_t(random.integer(0, rows - 1));
  for (tamoe_rt_dtype_t dtype : {TAMOE_RT_BF16, TAMOE_RT_F16}) {
    std::vector<uint16_t> outputs16;
    for (float v : outputs)
      outputs16.push_back(hostNarrow(v, dtype));
    std::vector<float> want(size_t(tokens * hidden));
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t h = 0; h < hidden; ++h) {
        float sum = 0.0f;
        for (int64_t j = 0; j < k; ++j)
          if (int32_t p = positions[size_t(t * k + j)]; p >= 0)
            sum += weights[size_t(t * k + j)] *
                   hostWiden(outputs16[size_t(p * hidden + h)], dtype);
        want[size_t(t * hidden + h)] = hostWiden(hostNarrow(sum, dtype), dtype);
      }
    float ulp = dtype == TAMOE_RT_BF16 ? 0x1p-7f : 0x1p-10f;
    for (Engine *engine : engines)
      runCase(
          std::string("combine ") + (dtype == TAMOE_RT_BF16 ? "bf16" : "f16") +
              " T=" + std::to_string(tokens) + " H=" + std::to_string(hidden) +
              " [" + engine->name() + "]",
          [&]() -> std::string {
            Scope s(*engine);
            uint16_t *dCombined = s.make<uint16_t>(tokens * hidden);
            require(engine->combineRows(dtype, s.put(outputs16), rows, hidden,
                                        s.put(positions), s.put(weights),
                                        tokens, k, dCombined),
                    "combine");
            std::vector<float> got;
            for (uint16_t bits : s.get(dCombined, tokens * hidden))
              got.push_back(hostWiden(bits, dtype));
            return floatsDiffer(got, want, "combined", ulp, 1e-6f);
          });
  }
}

/// Every map on bf16 and f16 elements against a host computation of its
/// definition on the rounded inputs, rounded once (within one ulp of the
/// type: the device's expf may round differently from the host's).
void checkMapRows(uint64_t seed) {
  reference::Random random(seed);
  std::vector<float> a = random.floats(50000, -6, 6),
                     b = random.floats(50000, -6, 6);
  a[0] = NAN;
  a[1] = 0.0f;
  b[2] = NAN;
  int64_t n = int64_t(a.size());
  for (tamoe_rt_dtype_t dtype : {TAMOE_RT_BF16, TAMOE_RT_F16}) {
    std::vector<uint16_t> a16(a.size()), b16(b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      a16[i] = hostNarrow(a[i], dtype);
      b16[i] = hostNarrow(b[i], dtype);
    }
    float ulp = dtype == TAMOE_RT_BF16 ? 0x1p-7f : 0x1p-10f;
    for (Engine *engine : engines)
      runCase(std::string("map ") + (dtype == TAMOE_RT_BF16 ? "bf16" : "f16") +
                  " every op n=" + std::to_string(n) + " [" + engine->name() +
                  "]",
              [&]() -> std::string {
                Scope s(*engine);
                uint16_t *dA = s.put(a16), *dB = s.put(b16),
                         *dOut = s.make<uint16_t>(n);
                for (int op = TAMOE_RT_MAP_ADD; op <= TAMOE_RT_MAP_SILU_GRAD;
                     ++op) {
                  auto kind = tamoe_rt_map_t(op);
                  require(engine->mapRows(kind, dtype, dA, dB, n, dOut), "map");
                  std::vector<uint16_t> got = s.get(dOut, n);
                  for (int64_t i = 0; i < n; ++i) {
                    float x = hostWiden(a16[size_t(i)], dtype),
                          y = hostWiden(b16[size_t(i)], dtype), r = 0.0f;
                    float sig = 1.0f / (1.0f + std::exp(-x));
                    switch (kind) {
                    case TAMOE_RT_MAP_ADD:
                      r = x + y;
                      break;
                    case TAMOE_RT_MAP_SUB:
                      r = x - y;
                      break;
                    case TAMOE_RT_MAP_MUL:
                      r = x * y;
                      break;
                    case TAMOE_RT_MAP_RELU:
                      r = std::isnan(x) || x > 0.0f ? x : 0.0f;
                      break;
                    case TAMOE_RT_MAP_NEG:
                      r = -x;
                      break;
                    case TAMOE_RT_MAP_RELU_GRAD:
                      r = x > 0.0f ? y : 0.0f;
                      break;
                    case TAMOE_RT_MAP_SILU:
                      r = x * sig;
                      break;
                    case TAMOE_RT_MAP_SILU_GRAD:
                      r = y * (sig * (1.0f + x * (1.0f - sig)));
                      break;
                    }
                    float want = hostWiden(hostNarrow(r, dtype), dtype);
                    float have = hostWiden(got[size_t(i)], dtype);
                    bool same = (std::isnan(want) && std::isnan(have)) ||
                                want == have ||
                                std::fabs(have - want) <= ulp * std::fabs(want);
                    if (!same)
                      return "op " + std::to_string(op) + ", element " +
                             std::to_string(i) + ": " + std::to_string(have) +
                             ", want " + std::to_string(want);
                  }
                }
                return std::string();
              });
  }
}

/// f32 -> bf16 and f16 against hand-computed bits (ties to even, overflow
/// to infinity, subnormals), and round trips of random values: narrowing
/// what was widened is exact, widening what was narrowed is within half an
/// ulp. What the core's staging of bf16 rows runs on (docs/runtime.md).
void checkConvert(uint64_t seed) {
  struct Case {
    tamoe_rt_dtype_t type;
    const char *name;
    std::vector<float> values;
    std::vector<uint16_t> bits;
    float halfUlp;
  };
  std::vector<Case> cases = {
      {TAMOE_RT_BF16,
       "bf16",
       {1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f,
        -2.5f, FLT_MAX, 0.0f, -0.0f},
       {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc020, 0x7f80, 0x0000, 0x8000},
       0x1p-8f},
      {TAMOE_RT_F16,
       "f16",
       {1.0f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65504.0f, 65520.0f,
        0x1p-24f, 0x1p-25f, 0.1f},
       {0x3c00, 0x3c00, 0x3c02, 0x7bff, 0x7c00, 0x0001, 0x0000, 0x2e66},
       0x1p-11f},
  };
  reference::Random random(seed);
  std::vector<float> values = random.floats(100000, -4, 4);
  int64_t n = int64_t(values.size());
  for (const Case &c : cases)
    for (Engine *engine : engines)
      runCase(std::string("convert f32 <-> ") + c.name + " [" + engine->name() +
                  "]",
              [&]() -> std::string {
                Scope s(*engine);
                int64_t count = int64_t(c.values.size());
                uint16_t *bits = s.make<uint16_t>(count);
                require(engine->convert(TAMOE_RT_F32, s.put(c.values), c.type,
                                        bits, count),
                        "convert");
                std::vector<uint16_t> got = s.get(bits, count);
                for (size_t i = 0; i < got.size(); ++i)
                  if (got[i] != c.bits[i])
                    return "value " + std::to_string(c.values[i]) + " gave " +
                           std::to_string(got[i]) + ", want " +
                           std::to_string(c.bits[i]);
                uint16_t *narrow = s.make<uint16_t>(n),
                         *again = s.make<uint16_t>(n);
                float *wide = s.make<float>(n);
                require(engine->convert(TAMOE_RT_F32, s.put(values), c.type,
                                        narrow, n),
                        "convert");
                require(engine->convert(c.type, narrow, TAMOE_RT_F32, wide, n),
                        "convert");
                require(engine->convert(TAMOE_RT_F32, wide, c.type, again, n),
                        "convert");
                std::vector<float> back = s.get(wide, n);
                if (s.get(narrow, n) != s.get(again, n))
                  return std::string("narrowing a widened value changed it");
                for (int64_t i = 0; i < n; ++i)
                  if (std::fabs(back[i] - values[i]) >
                      c.halfUlp * std::fabs(values[i]) + 0x1p-24f)
                    return "value " + std::to_string(values[i]) +
                           " came back as " + std::to_string(back[i]);
                return std::string();
              });
}

void checkGateGrad(int64_t tokens, int64_t experts, int64_t k, bool sigmoid,
                   bool renormalize, int64_t groups, int64_t kept,
                   uint64_t seed) {
  std::string name =
      std::string("gate_grad ") + (sigmoid ? "sigmoid" : "softmax") +
      (renormalize ? "+renorm" : "") + " T=" + std::to_string(tokens) +
      " E=" + std::to_string(experts) + " k=" + std::to_string(k) +
      (groups ? " groups=" + std::to_string(groups) + "/" + std::to_string(kept)
              : "");
  reference::Random random(seed);
  reference::Gate g =
      reference::gate(random.floats(size_t(tokens * experts), -4, 4), tokens,
                      experts, k, sigmoid, renormalize, groups, kept);
  std::vector<float> dWeights = random.floats(size_t(tokens * k), -1, 1);
  std::vector<float> dProbs = random.floats(size_t(tokens * experts), -1, 1);
  std::vector<float> want =
      narrow(reference::gateGrad(widen(g.probs), g.ids, experts, k, sigmoid,
                                 renormalize, widen(dWeights), widen(dProbs)));
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dLogits = s.make<float>(tokens * experts);
      require(engine->gateGrad(s.put(g.probs), s.put(g.ids), tokens, experts, k,
                               sigmoid, renormalize, s.put(dWeights),
                               s.put(dProbs), dLogits),
              "gate_grad");
      return floatsDiffer(s.get(dLogits, tokens * experts), want, "d_logits",
                          1e-4f, 1e-6f);
    });
}

/// The positions of a dispatch of a gate's choice with a capacity that
/// drops some assignments, and the gate's weights.
void routing(reference::Random &random, int64_t tokens, int64_t experts,
             int64_t k, bool byProbability, std::vector<int32_t> &ids,
             std::vector<float> &weights, std::vector<int32_t> &positions,
             int64_t &rows) {
  reference::Gate g =
      reference::gate(random.floats(size_t(tokens * experts), -3, 3), tokens,
                      experts, k, false, true);
  int64_t capacity = std::max<int64_t>(1, tokens * k / experts * 3 / 4);
  reference::Dispatch d =
      reference::dispatch(Bytes(size_t(tokens)), 1, g.ids, k, experts, capacity,
                          byProbability, g.weights);
  ids = g.ids;
  weights = g.weights;
  positions = d.positions;
  rows = int64_t(d.rows.size());
}

void checkCombineGrad(int64_t tokens, int64_t hidden, int64_t k,
                      int64_t experts, bool weighted, uint64_t seed) {
  std::string name =
      "combine_grad T=" + std::to_string(tokens) +
      " H=" + std::to_string(hidden) + " k=" + std::to_string(k) +
      " E=" + std::to_string(experts) + (weighted ? "" : " without weights");
  reference::Random random(seed);
  std::vector<int32_t> ids, positions;
  std::vector<float> weights;
  int64_t dispatched = 0;
  routing(random, tokens, experts, k, weighted, ids, weights, positions,
          dispatched);
  if (!weighted)
    weights.clear();
  // Rows past the dispatched ones: no assignment names them.
  int64_t rows = dispatched + 3;
  std::vector<float> outputs = random.floats(size_t(rows * hidden));
  std::vector<float> dCombined = random.floats(size_t(tokens * hidden));
  reference::CombineGradOf<double> want =
      reference::combineGrad(widen(outputs), rows, hidden, positions,
                             widen(weights), k, widen(dCombined));
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dOutputs = s.make<float>(rows * hidden);
      float *dWeights = weighted ? s.make<float>(tokens * k) : nullptr;
      require(engine->combineGrad(s.put(outputs), rows, hidden,
                                  s.put(positions),
                                  weighted ? s.put(weights) : nullptr, tokens,
                                  k, s.put(dCombined), dOutputs, dWeights),
              "combine_grad");
      std::string problem =
          floatsDiffer(s.get(dOutputs, rows * hidden), narrow(want.dOutputs),
                       "d_expert_outputs", 1e-5f, 1e-5f);
      if (problem.empty() && weighted)
        problem =
            floatsDiffer(s.get(dWeights, tokens * k), narrow(want.dWeights),
                         "d_weights", 1e-4f, 1e-6f * float(hidden));
      return problem;
    });
}

void checkGroupedMatmulGrad(int64_t peers, int64_t experts, int64_t hidden,
                            int64_t outFeatures, int64_t slack, uint64_t seed) {
  reference::Random random(seed);
  GroupedCase c =
      groupedCase(random, peers, experts, hidden, outFeatures, slack);
  std::string name = "grouped_matmul_grad " + c.shape;
  const std::vector<int32_t> &counts = c.counts;
  const std::vector<float> &rows = c.rows, &weights = c.weights;
  int64_t capacity = c.capacity, total = c.total;
  std::vector<float> dResult =
      random.floats(size_t(capacity * outFeatures), -1, 1);
  reference::GroupedMatmulGradOf<double> want =
      reference::groupedMatmulGrad(widen(rows), hidden, counts, experts,
                                   widen(weights), outFeatures, widen(dResult));
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dRows = s.make<float>(capacity * hidden);
      float *dWeights = s.make<float>(experts * hidden * outFeatures);
      require(engine->groupedMatmulGrad(s.put(rows), capacity, hidden,
                                        s.put(counts), peers * experts, experts,
                                        s.put(weights), outFeatures,
                                        s.put(dResult), dRows, dWeights),
              "grouped_matmul_grad");
      // Sums of out_features (d_rows) and of up to all rows (d_weights)
      // products: FMA on the device rounds differently.
      std::string problem =
          floatsDiffer(s.get(dRows, capacity * hidden), narrow(want.dRows),
                       "d_rows", 1e-4f, 1e-6f * float(outFeatures));
      if (problem.empty())
        problem = floatsDiffer(s.get(dWeights, experts * hidden * outFeatures),
                               narrow(want.dWeights), "d_weights", 1e-4f,
                               1e-6f * float(std::max<int64_t>(total, 1)));
      return problem;
    });
}

/// grouped_matmul_grad on bf16 or f16 buffers (the cuda backend's
/// tensor-core path; the cpu backend stages them in f32): against the
/// reference on the rounded inputs, within one rounding of each gradient.
void checkGroupedMatmulGradRows(tamoe_rt_dtype_t dtype, int64_t peers,
                                int64_t experts, int64_t hidden,
                                int64_t outFeatures, int64_t slack,
                                uint64_t seed) {
  reference::Random random(seed);
  GroupedCase c =
      groupedCase(random, peers, experts, hidden, outFeatures, slack);
  const char *type = dtype == TAMOE_RT_BF16 ? "bf16" : "f16";
  std::string name = std::string("grouped_matmul_grad ") + type + " " + c.shape;
  int64_t capacity = c.capacity;
  std::vector<float> dResult =
      random.floats(size_t(capacity * outFeatures), -1, 1);
  float halfUlp = dtype == TAMOE_RT_BF16 ? 0x1p-8f : 0x1p-11f;
  // An input in the 16-bit type on the engine, and its exact f32 value.
  auto rounded = [&](Scope &s, Engine &engine, const std::vector<float> &in,
                     std::vector<double> &exact) {
    int64_t n = int64_t(in.size());
    uint16_t *narrowed = s.make<uint16_t>(n);
    float *wide = s.make<float>(n);
    require(engine.convert(TAMOE_RT_F32, s.put(in), dtype, narrowed, n),
            "convert");
    require(engine.convert(dtype, narrowed, TAMOE_RT_F32, wide, n), "convert");
    exact.clear();
    for (float v : s.get(wide, n))
      exact.push_back(v);
    return narrowed;
  };
  auto widened = [&](Scope &s, Engine &engine, const uint16_t *narrowed,
                     int64_t n) {
    float *wide = s.make<float>(n);
    require(engine.convert(dtype, narrowed, TAMOE_RT_F32, wide, n), "convert");
    return s.get(wide, n);
  };
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      std::vector<double> rows, weights, dY;
      uint16_t *dRowsIn = rounded(s, *engine, c.rows, rows);
      uint16_t *dWeightsIn = rounded(s, *engine, c.weights, weights);
      uint16_t *dYIn = rounded(s, *engine, dResult, dY);
      reference::GroupedMatmulGradOf<double> want =
          reference::groupedMatmulGrad(rows, hidden, c.counts, experts, weights,
                                       outFeatures, dY);
      int64_t rowElements = capacity * hidden,
              weightElements = experts * hidden * outFeatures;
      uint16_t *dRows = s.make<uint16_t>(rowElements);
      uint16_t *dWeights = s.make<uint16_t>(weightElements);
      require(engine->groupedMatmulGradRows(dtype, dRowsIn, capacity, hidden,
                                            s.put(c.counts), peers * experts,
                                            experts, dWeightsIn, outFeatures,
                                            dYIn, dRows, dWeights),
              "grouped_matmul_grad");
      // One rounding of each gradient, plus f32 sums.
      std::string problem = floatsDiffer(
          widened(s, *engine, dRows, rowElements), narrow(want.dRows), "d_rows",
          halfUlp, 1e-5f * float(outFeatures));
      if (problem.empty())
        problem = floatsDiffer(widened(s, *engine, dWeights, weightElements),
                               narrow(want.dWeights), "d_weights", halfUlp,
                               1e-5f * float(std::max<int64_t>(c.total, 1)));
      return problem;
    });
}

void checkAuxLossGrad(int64_t tokens, int64_t experts, int64_t k, bool weighted,
                      uint64_t seed) {
  std::string name =
      std::string("aux_loss_grad ") + (weighted ? "topology" : "switch") +
      " T=" + std::to_string(tokens) + " E=" + std::to_string(experts) +
      " k=" + std::to_string(k) + " with drops";
  reference::Random random(seed);
  std::vector<int32_t> ids, positions;
  std::vector<float> gateWeights;
  int64_t rows = 0;
  routing(random, tokens, experts, k, true, ids, gateWeights, positions, rows);
  std::vector<float> expertWeights =
      weighted ? random.floats(size_t(experts), 0.5f, 2.0f)
               : std::vector<float>();
  float dLoss = random.uniform(0.5f, 2.0f);
  std::vector<int32_t> counted = ids;
  for (size_t a = 0; a < ids.size(); ++a)
    if (positions[a] < 0)
      counted[a] = -1;
  std::vector<float> want = narrow(reference::auxLossGrad(
      counted, tokens, experts, k, widen(expertWeights), dLoss));
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dProbs = s.make<float>(tokens * experts);
      require(engine->auxLossGrad(s.put(ids), s.put(positions), tokens, experts,
                                  k, weighted ? s.put(expertWeights) : nullptr,
                                  s.put(std::vector<float>{dLoss}), dProbs),
              "aux_loss_grad");
      return floatsDiffer(s.get(dProbs, tokens * experts), want, "d_probs",
                          1e-5f, 0.0f);
    });
}

void checkDedupGrad(int64_t tokens, int64_t hidden, int64_t k, int64_t nodes,
                    int64_t ranksPerNode, int64_t expertsPerRank,
                    uint64_t seed) {
  std::string shape =
      "T=" + std::to_string(tokens) + " H=" + std::to_string(hidden) +
      " k=" + std::to_string(k) + " nodes=" + std::to_string(nodes) +
      " rpn=" + std::to_string(ranksPerNode) +
      " epr=" + std::to_string(expertsPerRank);
  reference::Random random(seed);
  int64_t perNode = ranksPerNode * expertsPerRank;
  int64_t experts = nodes * perNode;
  std::vector<int32_t> ids(size_t(tokens * k)), positions(ids.size());
  for (size_t a = 0; a < ids.size(); ++a) {
    ids[a] = int32_t(random.integer(0, experts - 1));
    positions[a] = random.integer(0, 4) == 0 ? -1 : int32_t(a);
  }
  int64_t uniqueRows =
      int64_t(reference::dedupPack(Bytes(size_t(tokens)), 1, ids, positions, k,
                                   perNode, nodes)
                  .unique.size());
  int64_t capacity = tokens * std::min(k, nodes);
  std::vector<float> dUnique = random.floats(size_t(capacity * hidden));
  std::vector<float> wantTokens = narrow(reference::dedupPackGrad(
      std::vector<double>(dUnique.begin(),
                          dUnique.begin() + uniqueRows * hidden),
      hidden, ids, positions, k, perNode, nodes));
  for (Engine *engine : engines)
    runCase("dedup_pack_grad " + shape + " [" + engine->name() + "]",
            [&]() -> std::string {
              Scope s(*engine);
              float *dTokens = s.make<float>(tokens * hidden);
              require(engine->dedupPackGrad(s.put(dUnique), capacity, hidden,
                                            s.put(ids), s.put(positions),
                                            tokens, k, perNode, nodes, dTokens),
                      "dedup_pack_grad");
              return floatsDiffer(s.get(dTokens, tokens * hidden), wantTokens,
                                  "d_tokens", 1e-5f, 1e-6f);
            });

  // The relay of node 0, as checkDedup builds it.
  std::vector<int32_t> recvCounts(static_cast<size_t>(nodes));
  int64_t received = 0;
  for (auto &c : recvCounts)
    received += c = int32_t(random.integer(0, tokens));
  int64_t uniqueCapacity = received + 2;
  std::vector<int32_t> routes(size_t(uniqueCapacity * k), -1);
  for (int64_t r = 0; r < uniqueCapacity; ++r) {
    std::vector<int32_t> pool(static_cast<size_t>(perNode));
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), random.engine);
    int64_t listed = random.integer(1, std::min(k, perNode));
    for (int64_t j = 0; j < listed; ++j)
      routes[size_t(r * k + j)] = pool[size_t(j)];
  }
  std::vector<int32_t> receivedRoutes(routes.begin(),
                                      routes.begin() + received * k);
  int64_t expandedRows = int64_t(
      reference::dedupExpand(Bytes(size_t(received)), receivedRoutes, 1, k,
                             recvCounts, ranksPerNode, expertsPerRank)
          .expanded.size());
  int64_t expandedCapacity = expandedRows + 3;
  std::vector<float> dExpanded =
      random.floats(size_t(expandedCapacity * hidden));
  std::vector<float> wantUnique = narrow(reference::dedupExpandGrad(
      std::vector<double>(dExpanded.begin(),
                          dExpanded.begin() + expandedRows * hidden),
      hidden, receivedRoutes, k, recvCounts, ranksPerNode, expertsPerRank,
      uniqueCapacity));
  for (Engine *engine : engines)
    runCase("dedup_expand_grad " + shape + " [" + engine->name() + "]",
            [&]() -> std::string {
              Scope s(*engine);
              float *dUniqueOut = s.make<float>(uniqueCapacity * hidden);
              require(engine->dedupExpandGrad(
                          s.put(dExpanded), expandedCapacity, hidden,
                          s.put(routes), uniqueCapacity, k, s.put(recvCounts),
                          nodes, ranksPerNode, expertsPerRank, dUniqueOut),
                      "dedup_expand_grad");
              return floatsDiffer(s.get(dUniqueOut, uniqueCapacity * hidden),
                                  wantUnique, "d_unique", 1e-5f, 1e-6f);
            });
}

void checkSgd(int64_t n, float lr, float momentum, float weightDecay,
              uint64_t seed) {
  std::string name =
      "sgd n=" + std::to_string(n) + " momentum=" + std::to_string(momentum) +
      " weight_decay=" + std::to_string(weightDecay) + ", 5 steps";
  reference::Random random(seed);
  std::vector<float> params = random.floats(size_t(n));
  std::vector<std::vector<float>> grads;
  std::vector<double> want = widen(params), buffer;
  for (int step = 0; step < 5; ++step) {
    grads.push_back(random.floats(size_t(n)));
    reference::sgd(want, widen(grads.back()), buffer, lr, momentum,
                   weightDecay);
  }
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dParams = s.put(params);
      float *velocity =
          momentum != 0 ? s.put(std::vector<float>(size_t(n), 0.0f)) : nullptr;
      for (const std::vector<float> &g : grads)
        require(engine->sgd(dParams, s.put(g), velocity, n, lr, momentum,
                            weightDecay),
                "sgd");
      std::string problem =
          floatsDiffer(s.get(dParams, n), narrow(want), "params", 1e-5f, 1e-6f);
      if (problem.empty() && velocity)
        problem = floatsDiffer(s.get(velocity, n), narrow(buffer), "velocity",
                               1e-5f, 1e-6f);
      return problem;
    });
}

void checkAdam(int64_t n, float lr, float beta1, float beta2, float eps,
               float weightDecay, uint64_t seed) {
  std::string name =
      "adam n=" + std::to_string(n) + " lr=" + std::to_string(lr) +
      " betas=" + std::to_string(beta1) + "," + std::to_string(beta2) +
      " weight_decay=" + std::to_string(weightDecay) + ", 6 steps";
  reference::Random random(seed);
  std::vector<float> params = random.floats(size_t(n));
  std::vector<std::vector<float>> grads;
  std::vector<double> want = widen(params), m(size_t(n), 0.0),
                      v(size_t(n), 0.0);
  for (int64_t step = 1; step <= 6; ++step) {
    grads.push_back(random.floats(size_t(n)));
    reference::adamW(want, widen(grads.back()), m, v, step, lr, beta1, beta2,
                     eps, weightDecay);
  }
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dParams = s.put(params);
      float *dM = s.put(std::vector<float>(size_t(n), 0.0f));
      float *dV = s.put(std::vector<float>(size_t(n), 0.0f));
      for (size_t step = 0; step < grads.size(); ++step)
        require(engine->adam(dParams, s.put(grads[step]), dM, dV, n,
                             int64_t(step) + 1, lr, beta1, beta2, eps,
                             weightDecay),
                "adam");
      std::string problem =
          floatsDiffer(s.get(dParams, n), narrow(want), "params", 1e-5f, 1e-6f);
      if (problem.empty())
        problem = floatsDiffer(s.get(dM, n), narrow(m), "m", 1e-5f, 1e-6f);
      if (problem.empty())
        problem = floatsDiffer(s.get(dV, n), narrow(v), "v", 1e-5f, 1e-6f);
      return problem;
    });
}

/// Invalid data must come back as the same status from every engine, and
/// leave the engine usable.
void checkErrors(uint64_t seed) {
  reference::Random random(seed);
  const int64_t tokens = 64, k = 2, experts = 8, rowBytes = 16;
  Bytes rows = random.bytes(size_t(tokens * rowBytes));
  std::vector<int32_t> ids(size_t(tokens * k));
  for (auto &id : ids)
    id = int32_t(random.integer(0, experts - 1));
  // `sameMessage`: every engine must also give the first one's message,
  // word for word.
  auto checkStatus = [&](const std::string &what, int wantCode,
                         const std::function<Result(Scope &)> &call,
                         bool sameMessage) {
    std::string first;
    bool seen = false;
    for (Engine *engine : engines)
      runCase(
          "error: " + what + " [" + engine->name() + "]", [&]() -> std::string {
            Scope s(*engine);
            Result r = call(s);
            if (r.code != wantCode)
              return std::string("status ") + statusName(r.code) + " (" +
                     r.message + "), want " + statusName(wantCode);
            std::printf("    %s: %s\n", engine->name().c_str(),
                        r.message.c_str());
            if (sameMessage && seen && r.message != first)
              return "message differs from the first engine's (" + first + ")";
            first = seen ? first : r.message;
            seen = true;
            return "";
          });
  };
  auto expectStatus = [&](const std::string &what, int wantCode,
                          const std::function<Result(Scope &)> &call) {
    checkStatus(what, wantCode, call, false);
  };
  auto expectSameStatus = [&](const std::string &what, int wantCode,
                              const std::function<Result(Scope &)> &call) {
    checkStatus(what, wantCode, call, true);
  };
  std::vector<int32_t> badIds = ids;
  badIds[37] = int32_t(experts);
  auto dispatchWith = [&](Scope &s, const std::vector<int32_t> &use,
                          int64_t outCapacity) {
    return s.engine().dispatch(
        s.put(rows), tokens, rowBytes, s.put(use), k, experts, nullptr, -1,
        false, s.raw(std::max<int64_t>(outCapacity, 1) * rowBytes), outCapacity,
        s.make<int32_t>(experts), s.make<int32_t>(tokens * k),
        s.make<int64_t>(1));
  };
  expectStatus("dispatch with an expert id out of range",
               TAMOE_RT_ERROR_INVALID_ARGUMENT,
               [&](Scope &s) { return dispatchWith(s, badIds, tokens * k); });
  expectStatus("dispatch into too small a buffer",
               TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
               [&](Scope &s) { return dispatchWith(s, ids, tokens * k - 1); });
  expectStatus("combine with a position past the rows",
               TAMOE_RT_ERROR_INVALID_ARGUMENT, [&](Scope &s) {
                 std::vector<int32_t> positions(size_t(tokens * k), 0);
                 positions[5] = 100;
                 return s.engine().combine(
                     s.make<float>(100 * 4), 100, 4, s.put(positions),
                     s.put(std::vector<float>(size_t(tokens * k), 1.0f)),
                     tokens, k, s.make<float>(tokens * 4));
               });
  expectStatus("regroup with a negative count", TAMOE_RT_ERROR_INVALID_ARGUMENT,
               [&](Scope &s) {
                 std::vector<int32_t> counts{1, 2, -1, 3};
                 return s.engine().regroup(s.raw(16 * 8), 16, 8, s.put(counts),
                                           2, 2, 1, s.raw(16 * 8),
                                           s.make<int32_t>(4));
               });
  // Part 1 of 2 of blocks of 3 and 5 rows has 2 + 3 rows.
  expectSameStatus("chunk into too small a part",
                   TAMOE_RT_ERROR_CAPACITY_EXCEEDED, [&](Scope &s) {
                     std::vector<int32_t> counts{3, 5};
                     return s.engine().chunk(s.raw(8 * 8), 8, 8, s.put(counts),
                                             2, 1, 2, s.raw(4 * 8), 4,
                                             s.make<int32_t>(2));
                   });
  expectSameStatus("unchunk from too small a part",
                   TAMOE_RT_ERROR_INVALID_ARGUMENT, [&](Scope &s) {
                     std::vector<int32_t> counts{3, 5};
                     return s.engine().unchunk(s.raw(4 * 8), 4, 8,
                                               s.put(counts), 2, 1, 2,
                                               s.raw(8 * 8), 8);
                   });
  expectSameStatus("chunk_positions with a position outside its expert's block",
                   TAMOE_RT_ERROR_INVALID_ARGUMENT, [&](Scope &s) {
                     // Expert 1's block is rows [2, 3).
                     std::vector<int32_t> positions{0, 3, 1, 2};
                     std::vector<int32_t> experts{0, 1, 0, 1};
                     std::vector<int32_t> counts{2, 1};
                     return s.engine().chunkPositions(
                         s.put(positions), s.put(experts), 2, 2, s.put(counts),
                         2, 0, 2, s.make<int32_t>(4));
                   });
  expectSameStatus(
      "add_counts past int32", TAMOE_RT_ERROR_INVALID_ARGUMENT, [&](Scope &s) {
        std::vector<int32_t> a{1, INT32_MAX}, b{2, 1};
        return s.engine().addCounts(s.put(a), s.put(b), 2, s.make<int32_t>(2));
      });
  expectStatus("dedup_expand with a route below -1",
               TAMOE_RT_ERROR_INVALID_ARGUMENT, [&](Scope &s) {
                 std::vector<int32_t> routes{0, -1, -2, 1};
                 std::vector<int32_t> recv{2};
                 return s.engine().dedupExpand(
                     s.raw(2 * 8), s.put(routes), 2, 8, 2, s.put(recv), 1, 1, 2,
                     s.raw(4 * 8), 4, s.make<int32_t>(2));
               });
  expectStatus("grouped_matmul with counts past rows_capacity",
               TAMOE_RT_ERROR_INVALID_ARGUMENT, [&](Scope &s) {
                 std::vector<int32_t> counts{3, 4};
                 return s.engine().groupedMatmul(
                     s.make<float>(6 * 8), 6, 8, s.put(counts), 2, 2,
                     s.make<float>(2 * 8 * 4), 4, s.make<float>(6 * 4));
               });
  expectStatus("combine_grad with a position past the rows",
               TAMOE_RT_ERROR_INVALID_ARGUMENT, [&](Scope &s) {
                 std::vector<int32_t> positions(size_t(tokens * k), 0);
                 positions[7] = 100;
                 return s.engine().combineGrad(
                     s.make<float>(100 * 4), 100, 4, s.put(positions), nullptr,
                     tokens, k, s.make<float>(tokens * 4),
                     s.make<float>(100 * 4), nullptr);
               });
  expectStatus("gate_grad with an expert id out of range",
               TAMOE_RT_ERROR_INVALID_ARGUMENT, [&](Scope &s) {
                 return s.engine().gateGrad(
                     s.make<float>(tokens * experts), s.put(badIds), tokens,
                     experts, k, false, true, s.make<float>(tokens * k),
                     nullptr, s.make<float>(tokens * experts));
               });
  expectStatus("grouped_matmul_grad with counts past rows_capacity",
               TAMOE_RT_ERROR_INVALID_ARGUMENT, [&](Scope &s) {
                 std::vector<int32_t> counts{3, 4};
                 return s.engine().groupedMatmulGrad(
                     s.make<float>(6 * 8), 6, 8, s.put(counts), 2, 2,
                     s.make<float>(2 * 8 * 4), 4, s.make<float>(6 * 4),
                     s.make<float>(6 * 8), s.make<float>(2 * 8 * 4));
               });
  expectStatus("dedup_expand_grad with routes past expanded_capacity",
               TAMOE_RT_ERROR_INVALID_ARGUMENT, [&](Scope &s) {
                 std::vector<int32_t> routes{0, 1, 1, -1}, recv{2};
                 return s.engine().dedupExpandGrad(
                     s.make<float>(2 * 8), 2, 8, s.put(routes), 2, 2,
                     s.put(recv), 1, 1, 2, s.make<float>(2 * 8));
               });
  if (engines.front()->numRanks() == 1)
    expectStatus("all_to_all receiving past recv_capacity",
                 TAMOE_RT_ERROR_CAPACITY_EXCEEDED, [&](Scope &s) {
                   std::vector<int32_t> counts{3};
                   return s.engine().allToAll(
                       TAMOE_RT_GROUP_WORLD, s.raw(3 * 8), 3, 8, s.put(counts),
                       1, 1, s.raw(2 * 8), 2, s.make<int32_t>(1));
                 });
  // And the engine still works afterwards.
  checkDispatch(tokens, rowBytes, k, experts, -1, false, seed + 1);
}

//===----------------------------------------------------------------------===//
// Exchanges
//===----------------------------------------------------------------------===//

/// World ranks of the members of `group` of world rank `rank`.
std::vector<int64_t> members(tamoe_rt_group_t group, int64_t rank,
                             int64_t ranks, int64_t perNode) {
  std::vector<int64_t> out;
  if (group == TAMOE_RT_GROUP_WORLD)
    for (int64_t r = 0; r < ranks; ++r)
      out.push_back(r);
  else if (group == TAMOE_RT_GROUP_NODE)
    for (int64_t i = 0; i < perNode; ++i)
      out.push_back(rank / perNode * perNode + i);
  else
    for (int64_t n = 0; n < ranks / perNode; ++n)
      out.push_back(n * perNode + rank % perNode);
  return out;
}

/// What rank `rank` sends in exchange case `seed`: counts [size, split] and
/// rows. Every rank can regenerate every rank's data.
void exchangeData(uint64_t seed, int64_t rank, int64_t size, int64_t split,
                  int64_t rowBytes, std::vector<int32_t> &counts, Bytes &rows) {
  reference::Random random(seed * 7919 + uint64_t(rank));
  counts.resize(size_t(size * split));
  int64_t total = 0;
  for (auto &c : counts)
    total += c = random.integer(0, 4) == 0 ? 0 : int32_t(random.integer(0, 6));
  rows = random.bytes(size_t(total * rowBytes));
}

/// One rank's side of an exchange check on an engine: its rows (one zero
/// row when it sends none, so that the pointer is valid) and counts, and
/// room for two rows more than should arrive; mismatch() compares what did.
struct ExchangeCase {
  ExchangeCase(Scope &s, const Bytes &mine,
               const std::vector<int32_t> &myCounts, int64_t rowBytes,
               int64_t wantRows)
      : scope(s), rowBytes(rowBytes),
        sendCapacity(std::max<int64_t>(int64_t(mine.size()) / rowBytes, 1)),
        recvCapacity(wantRows + 2),
        send(s.put(mine.empty() ? Bytes(size_t(rowBytes)) : mine)),
        counts(s.put(myCounts)), received(s.raw(recvCapacity * rowBytes)),
        recvCounts(s.make<int32_t>(int64_t(myCounts.size()))),
        entries(int64_t(myCounts.size())) {}

  /// "" when recv_counts and the rows received are `wantCounts` and `want`.
  std::string mismatch(const Bytes &want,
                       const std::vector<int32_t> &wantCounts) {
    std::string problem = firstDifference(scope.get(recvCounts, entries),
                                          wantCounts, "recv_counts");
    if (problem.empty())
      problem = bytesDiffer(scope.get(static_cast<unsigned char *>(received),
                                      int64_t(want.size())),
                            want, rowBytes, "received");
    return problem;
  }

  Scope &scope;
  int64_t rowBytes, sendCapacity, recvCapacity;
  void *send;
  int32_t *counts;
  void *received;
  int32_t *recvCounts;
  int64_t entries;
};

void checkAllToAll(tamoe_rt_group_t group, int64_t split, int64_t rowBytes,
                   uint64_t seed) {
  const char *groupName = group == TAMOE_RT_GROUP_WORLD  ? "world"
                          : group == TAMOE_RT_GROUP_NODE ? "node"
                                                         : "peers";
  Engine &first = *engines.front();
  int64_t rank = first.rank(), ranks = first.numRanks(),
          perNode = first.ranksPerNode();
  std::vector<int64_t> group_ = members(group, rank, ranks, perNode);
  int64_t size = int64_t(group_.size());
  std::vector<Bytes> sends(static_cast<size_t>(size));
  std::vector<std::vector<int32_t>> counts(static_cast<size_t>(size));
  int64_t me = 0;
  for (int64_t p = 0; p < size; ++p) {
    exchangeData(seed, group_[size_t(p)], size, split, rowBytes,
                 counts[size_t(p)], sends[size_t(p)]);
    if (group_[size_t(p)] == rank)
      me = p;
  }
  Bytes want;
  std::vector<int32_t> wantCounts;
  reference::allToAll(sends, counts, rowBytes, split, me, want, wantCounts);
  int64_t wantRows = int64_t(want.size()) / rowBytes;
  std::string name = std::string("all_to_all ") + groupName + " (" +
                     std::to_string(size) +
                     " ranks) split=" + std::to_string(split) +
                     " row_bytes=" + std::to_string(rowBytes);
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      ExchangeCase x(s, sends[size_t(me)], counts[size_t(me)], rowBytes,
                     wantRows);
      require(engine->allToAll(group, x.send, x.sendCapacity, rowBytes,
                               x.counts, size, split, x.received,
                               x.recvCapacity, x.recvCounts),
              "all_to_all");
      return x.mismatch(want, wantCounts);
    });
  // Start, a map while the rows travel, wait: the same rows, and the map's
  // result (the cuda backend runs them on two streams).
  for (Engine *engine : engines)
    runCase(
        std::string("all_to_all_start + map + wait ") + groupName + " (" +
            std::to_string(size) + " ranks) split=" + std::to_string(split) +
            " [" + engine->name() + "]",
        [&]() -> std::string {
          Scope s(*engine);
          ExchangeCase x(s, sends[size_t(me)], counts[size_t(me)], rowBytes,
                         wantRows);
          const int64_t n = 1 << 16;
          std::vector<float> a(n), b(n), sum(n);
          for (int64_t i = 0; i < n; ++i) {
            a[i] = float(i % 97);
            b[i] = float(i % 89) * 0.5f;
            sum[i] = a[i] + b[i];
          }
          float *dA = s.put(a), *dB = s.put(b), *dSum = s.make<float>(n);
          require(engine->allToAllAround(
                      group, x.send, x.sendCapacity, rowBytes, x.counts, size,
                      split, x.received, x.recvCapacity, x.recvCounts,
                      [&] {
                        return engine->map(TAMOE_RT_MAP_ADD, dA, dB, n, dSum);
                      }),
                  "all_to_all_start + wait");
          std::string problem = x.mismatch(want, wantCounts);
          if (problem.empty())
            problem = firstDifference(s.get(dSum, n), sum, "map");
          return problem;
        });
  for (Engine *engine : engines) {
    if (!engine->hasSchedules())
      continue;
    runCase("all_to_all_counts " + std::string(groupName) + " (" +
                std::to_string(size) + " ranks) split=" +
                std::to_string(split) + " [" + engine->name() + "]",
            [&]() -> std::string {
              Scope s(*engine);
              int32_t *dCounts = s.put(counts[size_t(me)]);
              int32_t *dRecvCounts = s.make<int32_t>(size * split);
              int64_t total = -1;
              require(engine->allToAllCounts(group, dCounts, size, split,
                                             dRecvCounts, &total),
                      "all_to_all_counts");
              std::string problem = firstDifference(
                  s.get(dRecvCounts, size * split), wantCounts, "recv_counts");
              if (problem.empty() && total != wantRows)
                problem = "total = " + std::to_string(total) + ", want " +
                          std::to_string(wantRows);
              return problem;
            });
    // One round for a part of the exchange: part 1 of 3 of every entry
    // (step 0), then the exchange (step 1), as a cut layer's round; and
    // this rank's own counts summed on the host.
    runCase("all_to_all_totals and counts_total " + std::string(groupName) +
                " (" + std::to_string(size) + " ranks) split=" +
                std::to_string(split) + " [" + engine->name() + "]",
            [&]() -> std::string {
              Scope s(*engine);
              const std::vector<int32_t> &mine = counts[size_t(me)];
              int32_t *dCounts = s.put(mine);
              auto part = [](int64_t n) { return 2 * n / 3 - n / 3; };
              int64_t wantPart = 0, wantSent = 0, wantMine = 0;
              for (int32_t n : mine) {
                wantPart += part(n);
                wantMine += n;
              }
              for (int32_t n : wantCounts)
                wantSent += part(n);
              std::vector<int64_t> totals;
              require(engine->allToAllTotals(group, dCounts, size * split,
                                             {TAMOE_RT_COUNTS_CHUNK, 0, 1, 3, 0,
                                              TAMOE_RT_COUNTS_EXCHANGE, 1,
                                              group, size, 0},
                                             totals),
                      "all_to_all_totals");
              int64_t total = -1;
              require(engine->countsTotal(dCounts, size * split, &total),
                      "counts_total");
              if (totals != std::vector<int64_t>{wantPart, wantSent} ||
                  total != wantMine)
                return "totals " + std::to_string(totals[0]) + ", " +
                       std::to_string(totals[1]) + " and " +
                       std::to_string(total) + ", want " +
                       std::to_string(wantPart) + ", " +
                       std::to_string(wantSent) + " and " +
                       std::to_string(wantMine);
              return "";
            });
  }
}

/// Every rank's data regenerated from (seed, rank), so each can sum its
/// group's.
void checkAllReduce(tamoe_rt_group_t group, int64_t n, bool average,
                    uint64_t seed) {
  const char *groupName = group == TAMOE_RT_GROUP_WORLD  ? "world"
                          : group == TAMOE_RT_GROUP_NODE ? "node"
                                                         : "peers";
  Engine &first = *engines.front();
  std::vector<int64_t> group_ =
      members(group, first.rank(), first.numRanks(), first.ranksPerNode());
  auto data = [&](int64_t rank) {
    return reference::Random(seed * 7919 + uint64_t(rank)).floats(size_t(n));
  };
  std::vector<double> want(size_t(n), 0.0);
  for (int64_t rank : group_) {
    std::vector<float> theirs = data(rank);
    for (int64_t i = 0; i < n; ++i)
      want[size_t(i)] += theirs[size_t(i)];
  }
  float size = float(group_.size());
  if (average)
    for (double &value : want)
      value /= size;
  std::string name = std::string("all_reduce ") + groupName + " (" +
                     std::to_string(group_.size()) +
                     " ranks) n=" + std::to_string(n) +
                     (average ? " average" : " sum");
  for (Engine *engine : engines)
    runCase(name + " [" + engine->name() + "]", [&]() -> std::string {
      Scope s(*engine);
      float *dData = s.put(data(first.rank()));
      require(engine->allReduce(group, dData, n, average), "all_reduce");
      return floatsDiffer(s.get(dData, n), narrow(want), "data", 1e-5f,
                          1e-6f * size);
    });
}

void checkHierarchical(int64_t split, int64_t rowBytes, uint64_t seed) {
  Engine &first = *engines.front();
  int64_t rank = first.rank(), ranks = first.numRanks();
  std::vector<Bytes> sends(static_cast<size_t>(ranks));
  std::vector<std::vector<int32_t>> counts(static_cast<size_t>(ranks));
  for (int64_t r = 0; r < ranks; ++r)
    exchangeData(seed, r, ranks, split, rowBytes, counts[size_t(r)],
                 sends[size_t(r)]);
  Bytes want;
  std::vector<int32_t> wantCounts;
  reference::allToAll(sends, counts, rowBytes, split, rank, want, wantCounts);
  int64_t wantRows = int64_t(want.size()) / rowBytes;
  for (Engine *engine : engines) {
    if (!engine->hasSchedules())
      continue;
    runCase(
        "all_to_all_hierarchical (" + std::to_string(ranks) + " ranks) split=" +
            std::to_string(split) + " [" + engine->name() + "]",
        [&]() -> std::string {
          Scope s(*engine);
          ExchangeCase x(s, sends[size_t(rank)], counts[size_t(rank)], rowBytes,
                         wantRows);
          require(engine->hierarchical(x.send, x.sendCapacity, rowBytes,
                                       x.counts, split, x.received,
                                       x.recvCapacity, x.recvCounts),
                  "all_to_all_hierarchical");
          return x.mismatch(want, wantCounts);
        });
  }
}

/// What rank `r` routes in dispatch_dedup case `seed`.
void dedupData(uint64_t seed, int64_t r, int64_t tokens, int64_t k,
               int64_t experts, int64_t rowBytes, Bytes &rows,
               std::vector<int32_t> &ids, std::vector<int32_t> &positions,
               reference::Dispatch &dispatched) {
  reference::Random random(seed * 104729 + uint64_t(r));
  rows = random.bytes(size_t(tokens * rowBytes));
  ids.assign(size_t(tokens * k), 0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int32_t> pool(static_cast<size_t>(experts));
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), random.engine);
    for (int64_t j = 0; j < k; ++j)
      ids[size_t(t * k + j)] = pool[size_t(j)];
  }
  // With a capacity, so that some assignments are dropped.
  int64_t capacity = std::max<int64_t>(1, tokens * k / experts);
  dispatched = reference::dispatch(rows, rowBytes, ids, k, experts, capacity);
  positions = dispatched.positions;
}

void checkDispatchDedup(int64_t tokens, int64_t k, int64_t expertsPerRank,
                        int64_t rowBytes, uint64_t seed) {
  Engine &first = *engines.front();
  int64_t rank = first.rank(), ranks = first.numRanks();
  int64_t experts = ranks * expertsPerRank;
  k = std::min(k, experts);
  // The flat equivalent: dispatch, then all_to_all with split = experts
  // per rank.
  std::vector<Bytes> sends(static_cast<size_t>(ranks));
  std::vector<std::vector<int32_t>> counts(static_cast<size_t>(ranks));
  Bytes myRows;
  std::vector<int32_t> myIds, myPositions;
  for (int64_t r = 0; r < ranks; ++r) {
    Bytes rows;
    std::vector<int32_t> ids, positions;
    reference::Dispatch d;
    dedupData(seed, r, tokens, k, experts, rowBytes, rows, ids, positions, d);
    sends[size_t(r)] = d.rows;
    counts[size_t(r)] = d.counts;
    if (r == rank) {
      myRows = rows;
      myIds = ids;
      myPositions = positions;
    }
  }
  Bytes want;
  std::vector<int32_t> wantCounts;
  reference::allToAll(sends, counts, rowBytes, expertsPerRank, rank, want,
                      wantCounts);
  int64_t wantRows = int64_t(want.size()) / rowBytes;
  for (Engine *engine : engines) {
    if (!engine->hasSchedules())
      continue;
    runCase("dispatch_dedup (" + std::to_string(ranks) +
                " ranks) T=" + std::to_string(tokens) +
                " k=" + std::to_string(k) + " [" + engine->name() + "]",
            [&]() -> std::string {
              Scope s(*engine);
              int64_t capacity = wantRows + 2;
              void *dRecv = s.raw(capacity * rowBytes);
              int32_t *dRecvCounts = s.make<int32_t>(experts);
              require(engine->dispatchDedup(s.put(myRows), tokens, rowBytes,
                                            s.put(myIds), s.put(myPositions), k,
                                            experts, dRecv, capacity,
                                            dRecvCounts),
                      "dispatch_dedup");
              std::string problem = firstDifference(s.get(dRecvCounts, experts),
                                                    wantCounts, "recv_counts");
              if (problem.empty())
                problem = bytesDiffer(s.get(static_cast<unsigned char *>(dRecv),
                                            wantRows * rowBytes),
                                      want, rowBytes, "received");
              return problem;
            });
  }
}

//===----------------------------------------------------------------------===//
// Graphs
//===----------------------------------------------------------------------===//

/// The buffers of a one-rank bf16 layer step: the router's GEMM, the gate,
/// a dispatch with a capacity, the exchange to this rank, the experts
/// (GEMM, relu, GEMM), the exchange back and the combine.
/// n bf16 values drawn uniformly from [-scale, scale] on the engine.
uint16_t *randomBf16(Scope &s, reference::Random &random, int64_t n,
                     float scale) {
  uint16_t *out = s.make<uint16_t>(n);
  require(s.engine().convert(TAMOE_RT_F32,
                             s.put(random.floats(size_t(n), -scale, scale)),
                             TAMOE_RT_BF16, out, n),
          "convert");
  return out;
}

struct LayerStep {
  int64_t tokens, hidden, experts, k, ffn, capacity;
  uint16_t *input, *router, *w1, *w2;
  float *logits, *weights, *probs;
  int32_t *ids, *counts, *positions, *recvCounts, *backCounts;
  int64_t *dropped;
  uint16_t *dispatched, *received, *act, *out, *back, *combined;

  LayerStep(Scope &s, reference::Random &random, int64_t tokens, int64_t hidden,
            int64_t experts, int64_t k, int64_t ffn)
      : tokens(tokens), hidden(hidden), experts(experts), k(k), ffn(ffn),
        // 1.25 times the even share, as a capacity factor of 1.25 gives.
        capacity((tokens * k / experts) * 5 / 4) {
    auto bf16 = [&](int64_t n, float scale) {
      return randomBf16(s, random, n, scale);
    };
    input = bf16(tokens * hidden, 1.0f);
    router = bf16(hidden * experts, 1.0f);
    w1 = bf16(experts * hidden * ffn, 1.0f / std::sqrt(float(hidden)));
    w2 = bf16(experts * ffn * hidden, 1.0f / std::sqrt(float(ffn)));
    int64_t slots = experts * capacity;
    logits = s.make<float>(tokens * experts);
    weights = s.make<float>(tokens * k);
    probs = s.make<float>(tokens * experts);
    ids = s.make<int32_t>(tokens * k);
    positions = s.make<int32_t>(tokens * k);
    counts = s.make<int32_t>(experts);
    recvCounts = s.make<int32_t>(experts);
    backCounts = s.make<int32_t>(experts);
    dropped = s.make<int64_t>(1);
    dispatched = s.make<uint16_t>(slots * hidden);
    received = s.make<uint16_t>(slots * hidden);
    act = s.make<uint16_t>(slots * ffn);
    out = s.make<uint16_t>(slots * hidden);
    back = s.make<uint16_t>(slots * hidden);
    combined = s.make<uint16_t>(tokens * hidden);
  }

  /// The step's operations in order; the first failure.
  Result run(Engine &e) const {
    const int64_t slots = experts * capacity, rowBytes = hidden * 2;
    for (const std::function<Result()> &op :
         std::vector<std::function<Result()>>{
             [&] {
               return e.matmulRows(TAMOE_RT_BF16, TAMOE_RT_BF16, TAMOE_RT_F32,
                                   input, router, tokens, hidden, experts,
                                   false, false, nullptr, logits);
             },
             [&] {
               return e.gate(logits, tokens, experts, k, false, false, 0, 0,
                             ids, weights, probs);
             },
             [&] {
               return e.dispatch(input, tokens, rowBytes, ids, k, experts,
                                 nullptr, capacity, false, dispatched, slots,
                                 counts, positions, dropped);
             },
             [&] {
               return e.allToAll(TAMOE_RT_GROUP_WORLD, dispatched, slots,
                                 rowBytes, counts, 1, experts, received, slots,
                                 recvCounts);
             },
             [&] {
               return e.groupedMatmulRows(TAMOE_RT_BF16, received, slots,
                                          hidden, recvCounts, experts, experts,
                                          w1, ffn, act);
             },
             [&] {
               return e.mapRows(TAMOE_RT_MAP_RELU, TAMOE_RT_BF16, act, nullptr,
                                slots * ffn, act);
             },
             [&] {
               return e.groupedMatmulRows(TAMOE_RT_BF16, act, slots, ffn,
                                          recvCounts, experts, experts, w2,
                                          hidden, out);
             },
             [&] {
               return e.allToAll(TAMOE_RT_GROUP_WORLD, out, slots, rowBytes,
                                 recvCounts, 1, experts, back, slots,
                                 backCounts);
             },
             [&] {
               return e.combineRows(TAMOE_RT_BF16, back, slots, hidden,
                                    positions, weights, tokens, k, combined);
             }}) {
      Result r = op();
      if (!r.ok())
        return r;
    }
    return {};
  }

  /// The combined rows, widened to f32.
  std::vector<float> output(Scope &s) const {
    float *wide = s.make<float>(tokens * hidden);
    require(s.engine().convert(TAMOE_RT_BF16, combined, TAMOE_RT_F32, wide,
                               tokens * hidden),
            "convert");
    return s.get(wide, tokens * hidden);
  }
};

/// Destroys a graph when the case ends, before its buffers go.
struct GraphGuard {
  Engine &engine;
  void *graph = nullptr;
  ~GraphGuard() { engine.graphDestroy(graph); }
};

std::string expectFailure(const Result &r, int code, const std::string &want) {
  if (r.code == code && r.message == want)
    return "";
  return std::string("got ") + statusName(r.code) + ": \"" + r.message +
         "\", want " + statusName(code) + ": \"" + want + "\"";
}

/// The one-rank layer step recorded as a graph (tamoe_rt_graph_*): its
/// launches give the eager step's output (within bf16 rounding: the
/// recorded expert GEMMs run in slots of the capacity, another cuBLAS
/// kernel), the same bits twice, and follow new inputs. A bad expert id or
/// a count above its slot fails the launch with the operation's message;
/// what needs the host fails the recording. The cpu backend refuses
/// graphs, and an exchange between ranks cannot be recorded.
void checkGraphs(uint64_t seed) {
  const std::string refused =
      ", which a graph cannot record: run it before tamoe_rt_graph_begin or "
      "after tamoe_rt_graph_end";
  for (Engine *engine : engines) {
    if (!engine->hasSchedules())
      continue; // the direct build has no core, whose calls these are
    if (!engine->onDevice()) {
      runCase("graph refused [" + engine->name() + "]", [&]() -> std::string {
        return expectFailure(
            engine->graphBegin(), TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
            "tamoe_rt_graph_begin: the cpu backend computes on the host, "
            "where there is nothing to record; graphs need the cuda backend");
      });
      continue;
    }
    if (engine->numRanks() > 1) {
      runCase(
          "graph refuses an exchange between ranks [" + engine->name() + "]",
          [&]() -> std::string {
            Scope s(*engine);
            int64_t n = engine->numRanks();
            int32_t *counts = s.put(std::vector<int32_t>(size_t(n), 1));
            int32_t *recvCounts = s.make<int32_t>(n);
            void *send = s.raw(n * 16), *received = s.raw(n * 16);
            require(engine->graphBegin(), "graph_begin");
            Result exchange =
                engine->allToAll(TAMOE_RT_GROUP_WORLD, send, n, 16, counts, n,
                                 1, received, n, recvCounts);
            void *graph = nullptr;
            Result end = engine->graphEnd(&graph);
            std::string want = "tamoe_rt_all_to_all: rank 0: an exchange "
                               "between " +
                               std::to_string(n) +
                               " ranks takes its counts through the "
                               "launcher on the host" +
                               refused;
            std::string problem =
                expectFailure(exchange, TAMOE_RT_ERROR_INVALID_ARGUMENT, want);
            if (problem.empty())
              problem = expectFailure(
                  end, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                  "tamoe_rt_graph_end: the recording failed: " + want);
            return problem.empty() && graph ? "a graph was returned" : problem;
          });
      continue;
    }
    std::string device = " [" + engine->name() + "]";
    runCase("graph of a bf16 layer step = eager" + device,
            [&]() -> std::string {
              Scope s(*engine);
              reference::Random random(seed);
              LayerStep step(s, random, 512, 256, 8, 2, 512);
              require(step.run(*engine), "eager step");
              std::vector<float> eager = step.output(s);
              GraphGuard guard{*engine};
              require(engine->graphBegin(), "graph_begin");
              Result recorded = step.run(*engine);
              Result end = engine->graphEnd(&guard.graph);
              require(recorded, "recording the step");
              require(end, "graph_end");
              // Launches write every output: clear one first.
              std::vector<uint16_t> zeros(size_t(step.tokens * step.hidden));
              require(engine->toBackend(step.combined, zeros.data(),
                                        int64_t(zeros.size() * 2)),
                      "clear");
              require(engine->graphLaunch(guard.graph), "graph_launch");
              std::vector<float> first = step.output(s);
              require(engine->graphLaunch(guard.graph), "graph_launch");
              if (std::string d =
                      firstDifference(step.output(s), first, "second launch");
                  !d.empty())
                return d;
              if (std::string d =
                      floatsDiffer(first, eager, "graph", 1.0f / 64, 1.0f / 64);
                  !d.empty())
                return d;
              // New tokens: the launch reads them, as the eager step does.
              std::vector<float> fresh =
                  random.floats(size_t(step.tokens * step.hidden), -1, 1);
              require(engine->convert(TAMOE_RT_F32, s.put(fresh), TAMOE_RT_BF16,
                                      step.input, step.tokens * step.hidden),
                      "convert");
              require(engine->graphLaunch(guard.graph), "graph_launch");
              std::vector<float> replayed = step.output(s);
              require(step.run(*engine), "eager step");
              return floatsDiffer(replayed, step.output(s), "new inputs",
                                  1.0f / 64, 1.0f / 64);
            });
    runCase("graph launch reports a bad expert id" + device,
            [&]() -> std::string {
              Scope s(*engine);
              const int64_t tokens = 64, k = 2, experts = 8, rowBytes = 32;
              reference::Random random(seed + 1);
              void *rows = s.raw(tokens * rowBytes);
              std::vector<int32_t> ids(size_t(tokens * k));
              for (int32_t &id : ids)
                id = int32_t(random.uniform(0, float(experts) - 0.5f));
              int32_t *dIds = s.put(ids);
              void *dispatched = s.raw(tokens * k * rowBytes);
              int32_t *counts = s.make<int32_t>(experts);
              int32_t *positions = s.make<int32_t>(tokens * k);
              int64_t *dropped = s.make<int64_t>(1);
              auto dispatch = [&] {
                return engine->dispatch(rows, tokens, rowBytes, dIds, k,
                                        experts, nullptr, -1, false, dispatched,
                                        tokens * k, counts, positions, dropped);
              };
              // A gate first (of other buffers): a call whose kernels check
              // nothing still counts among the graph's operations.
              float *logits = s.put(random.floats(size_t(tokens * experts)));
              int32_t *gateIds = s.make<int32_t>(tokens * k);
              float *gateWeights = s.make<float>(tokens * k);
              float *probs = s.make<float>(tokens * experts);
              GraphGuard guard{*engine};
              require(engine->graphBegin(), "graph_begin");
              Result recorded =
                  engine->gate(logits, tokens, experts, k, false, false, 0, 0,
                               gateIds, gateWeights, probs);
              if (recorded.ok())
                recorded = dispatch();
              require(engine->graphEnd(&guard.graph), "graph_end");
              require(recorded, "recording the gate and the dispatch");
              require(engine->graphLaunch(guard.graph), "graph_launch");
              ids[7] = int32_t(experts); // token 3, slot 1
              require(engine->toBackend(dIds, ids.data(), tokens * k * 4),
                      "copy_to_backend");
              Result eager = dispatch();
              const std::string prefix = "tamoe_rt_dispatch: ";
              if (eager.ok() || eager.message.rfind(prefix, 0) != 0)
                return "eager dispatch: " + eager.message;
              return expectFailure(engine->graphLaunch(guard.graph), eager.code,
                                   "tamoe_rt_graph_launch: operation 2 of 2 "
                                   "(tamoe_rt_dispatch): " +
                                       eager.message.substr(prefix.size()));
            });
    runCase("graph launch: the operations after a failure change nothing" +
                device,
            [&]() -> std::string {
              Scope s(*engine);
              const int64_t tokens = 64, k = 2, experts = 8, rowBytes = 32,
                            n = 4096;
              reference::Random random(seed + 3);
              void *rows = s.raw(tokens * rowBytes);
              std::vector<int32_t> ids(size_t(tokens * k), 0);
              ids[5] = int32_t(experts); // out of range: the dispatch fails
              int32_t *dIds = s.put(ids);
              void *dispatched = s.raw(tokens * k * rowBytes);
              int32_t *counts = s.make<int32_t>(experts);
              int32_t *positions = s.make<int32_t>(tokens * k);
              int64_t *dropped = s.make<int64_t>(1);
              std::vector<float> params = random.floats(size_t(n));
              float *dParams = s.put(params);
              float *grads = s.put(random.floats(size_t(n)));
              float *velocity = s.put(std::vector<float>(size_t(n), 0.0f));
              float *negated = s.put(params);
              GraphGuard guard{*engine};
              require(engine->graphBegin(), "graph_begin");
              Result recorded = engine->dispatch(
                  rows, tokens, rowBytes, dIds, k, experts, nullptr, -1, false,
                  dispatched, tokens * k, counts, positions, dropped);
              if (recorded.ok())
                recorded =
                    engine->map(TAMOE_RT_MAP_NEG, negated, nullptr, n, negated);
              if (recorded.ok())
                recorded =
                    engine->sgd(dParams, grads, velocity, n, 0.1f, 0.9f, 0.0f);
              require(engine->graphEnd(&guard.graph), "graph_end");
              require(recorded, "recording");
              if (engine->graphLaunch(guard.graph).ok())
                return "the launch passed a bad expert id";
              if (std::string d = firstDifference(s.get(dParams, n), params,
                                                  "sgd's parameters");
                  !d.empty())
                return d;
              return firstDifference(s.get(negated, n), params,
                                     "an in-place map's output");
            });
    runCase(
        "an eager gate after a failed operation" + device,
        [&]() -> std::string {
          // The failure stays in the status word until the next
          // operation begins: gate, which has no frame run, must clear
          // it too, or its kernel does nothing.
          Scope s(*engine);
          const int64_t tokens = 64, k = 2, experts = 8, rowBytes = 32;
          reference::Random random(seed + 4);
          float *logits = s.put(random.floats(size_t(tokens * experts)));
          auto gate = [&](int32_t *ids, float *weights, float *probs) {
            require(engine->gate(logits, tokens, experts, k, false, false, 0, 0,
                                 ids, weights, probs),
                    "gate");
            require(engine->synchronize(), "synchronize");
            return std::make_pair(s.get(ids, tokens * k),
                                  s.get(weights, tokens * k));
          };
          auto before =
              gate(s.make<int32_t>(tokens * k), s.make<float>(tokens * k),
                   s.make<float>(tokens * experts));
          std::vector<int32_t> ids(size_t(tokens * k), int32_t(experts));
          if (engine
                  ->dispatch(s.raw(tokens * rowBytes), tokens, rowBytes,
                             s.put(ids), k, experts, nullptr, -1, false,
                             s.raw(tokens * k * rowBytes), tokens * k,
                             s.make<int32_t>(experts),
                             s.make<int32_t>(tokens * k), s.make<int64_t>(1))
                  .ok())
            return "the dispatch passed bad expert ids";
          auto after =
              gate(s.make<int32_t>(tokens * k), s.make<float>(tokens * k),
                   s.make<float>(tokens * experts));
          if (std::string d = firstDifference(after.first, before.first, "ids");
              !d.empty())
            return d;
          return firstDifference(after.second, before.second, "weights");
        });
    runCase("graph launch reports a count above its slot" + device,
            [&]() -> std::string {
              Scope s(*engine);
              const int64_t experts = 4, slot = 16, hidden = 64, out = 32;
              reference::Random random(seed + 2);
              void *rows = s.raw(experts * slot * hidden * 2);
              void *weights = s.raw(experts * hidden * out * 2);
              require(engine->convert(
                          TAMOE_RT_F32,
                          s.put(random.floats(size_t(experts * slot * hidden))),
                          TAMOE_RT_BF16, rows, experts * slot * hidden),
                      "convert");
              require(engine->convert(
                          TAMOE_RT_F32,
                          s.put(random.floats(size_t(experts * hidden * out))),
                          TAMOE_RT_BF16, weights, experts * hidden * out),
                      "convert");
              int32_t *counts = s.put(std::vector<int32_t>{16, 3, 0, 9});
              void *result = s.raw(experts * slot * out * 2);
              GraphGuard guard{*engine};
              require(engine->graphBegin(), "graph_begin");
              Result recorded = engine->groupedMatmulRows(
                  TAMOE_RT_BF16, rows, experts * slot, hidden, counts, experts,
                  experts, weights, out, result);
              require(engine->graphEnd(&guard.graph), "graph_end");
              require(recorded, "recording the grouped_matmul");
              require(engine->graphLaunch(guard.graph), "graph_launch");
              // Within the rows, but past its slot.
              std::vector<int32_t> over{17, 0, 0, 9};
              require(engine->toBackend(counts, over.data(), 16),
                      "copy_to_backend");
              return expectFailure(
                  engine->graphLaunch(guard.graph),
                  TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
                  "tamoe_rt_graph_launch: operation 1 of 1 "
                  "(tamoe_rt_grouped_matmul): counts[0] = 17 exceeds the 16 "
                  "rows a recorded grouped_matmul gives each count "
                  "(rows_capacity / the number of counts, as a "
                  "static-capacity program sizes its buffers)");
            });
    runCase("graph calls check their state" + device, [&]() -> std::string {
      Scope s(*engine);
      int32_t *counts = s.put(std::vector<int32_t>{2});
      int32_t *recvCounts = s.make<int32_t>(1);
      void *send = s.raw(2 * 16), *received = s.raw(2 * 16);
      void *spare = nullptr;
      require(engine->alloc(16, &spare), "alloc");
      auto around = [&](const std::function<Result()> &between) {
        return engine->allToAllAround(TAMOE_RT_GROUP_WORLD, send, 2, 16, counts,
                                      1, 1, received, 2, recvCounts, between);
      };
      std::vector<std::string> problems;
      problems.push_back(expectFailure(
          around([&] { return engine->graphBegin(); }),
          TAMOE_RT_ERROR_INVALID_ARGUMENT,
          "tamoe_rt_graph_begin: 1 exchange(s) are in flight: wait for them "
          "(tamoe_rt_all_to_all_wait) before recording"));
      // An exchange recorded whole; ending before its wait is refused
      // without failing the recording.
      GraphGuard first{*engine};
      require(engine->graphBegin(), "graph_begin");
      problems.push_back(expectFailure(
          around([&] { return engine->graphEnd(&first.graph); }),
          TAMOE_RT_ERROR_INVALID_ARGUMENT,
          "tamoe_rt_graph_end: 1 exchange(s) started while recording are in "
          "flight: wait for them before tamoe_rt_graph_end"));
      require(engine->graphEnd(&first.graph), "graph_end");
      require(engine->graphLaunch(first.graph), "graph_launch");
      GraphGuard second{*engine};
      require(engine->graphBegin(), "graph_begin");
      problems.push_back(expectFailure(
          engine->graphBegin(), TAMOE_RT_ERROR_INVALID_ARGUMENT,
          "tamoe_rt_graph_begin: a graph is being recorded already (end it "
          "with tamoe_rt_graph_end)"));
      problems.push_back(expectFailure(
          engine->graphLaunch(first.graph), TAMOE_RT_ERROR_INVALID_ARGUMENT,
          "tamoe_rt_graph_launch: cannot launch a graph while "
          "recording one"));
      const std::string freeRefused =
          "tamoe_rt_free: cannot free while recording a graph: the recorded "
          "operations may use the buffer at every launch";
      problems.push_back(expectFailure(
          engine->free(spare), TAMOE_RT_ERROR_INVALID_ARGUMENT, freeRefused));
      problems.push_back(expectFailure(
          engine->graphEnd(&second.graph), TAMOE_RT_ERROR_INVALID_ARGUMENT,
          "tamoe_rt_graph_end: the recording failed: " + freeRefused));
      require(engine->free(spare), "free");
      for (const std::string &problem : problems)
        if (!problem.empty())
          return problem;
      return second.graph ? "a failed recording returned a graph" : "";
    });
    runCase(
        "graph recording refuses what needs the host" + device,
        [&]() -> std::string {
          Scope s(*engine);
          float *buffer = s.make<float>(4);
          float host[4];
          require(engine->graphBegin(), "graph_begin");
          Result read = engine->toHost(host, buffer, 16);
          void *extra = nullptr;
          Result alloc = engine->alloc(64, &extra);
          // Sizes read on the host: what a static-capacity step has none of.
          int64_t total = -1;
          Result counted = engine->countsTotal(
              reinterpret_cast<int32_t *>(buffer), 4, &total);
          std::vector<int64_t> totals;
          Result traced = engine->allToAllTotals(
              TAMOE_RT_GROUP_WORLD, reinterpret_cast<int32_t *>(buffer), 4,
              {TAMOE_RT_COUNTS_CHUNK, 0, 0, 2, 0}, totals);
          void *graph = nullptr;
          Result end = engine->graphEnd(&graph);
          std::string readWant = "tamoe_rt_copy_to_host: reads device "
                                 "memory on the host" +
                                 refused;
          for (std::string problem :
               {expectFailure(read, TAMOE_RT_ERROR_INVALID_ARGUMENT, readWant),
                expectFailure(alloc, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                              "tamoe_rt_alloc: cannot allocate while "
                              "recording a graph: allocate the step's "
                              "buffers before tamoe_rt_graph_begin"),
                expectFailure(counted, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                              "tamoe_rt_counts_total: reads device memory on "
                              "the host" +
                                  refused),
                expectFailure(traced, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                              "tamoe_rt_all_to_all_totals: rank 0: reads "
                              "device memory on the host" +
                                  refused),
                expectFailure(end, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                              "tamoe_rt_graph_end: the recording failed: " +
                                  readWant)})
            if (!problem.empty())
              return problem;
          if (graph || extra)
            return "a graph or an allocation was returned";
          // The stream runs eagerly again.
          require(engine->toHost(host, buffer, 16), "copy_to_host");
          return "";
        });
  }
}

void checkTraffic() {
  if (engines.size() < 2)
    return;
  runCase("traffic counters equal on every engine", [&]() -> std::string {
    int64_t intra0 = 0, inter0 = 0;
    require(engines[0]->traffic(intra0, inter0), "traffic");
    for (size_t i = 1; i < engines.size(); ++i) {
      int64_t intra = 0, inter = 0;
      require(engines[i]->traffic(intra, inter), "traffic");
      if (intra != intra0 || inter != inter0)
        return engines[i]->name() + " counted " + std::to_string(intra) +
               " + " + std::to_string(inter) + " bytes, " + engines[0]->name() +
               " " + std::to_string(intra0) + " + " + std::to_string(inter0);
    }
    std::printf("    intra-node %lld bytes, inter-node %lld bytes\n",
                (long long)intra0, (long long)inter0);
    return "";
  });
}

int runChecks() {
  for (Engine *engine : engines)
    engine->resetTraffic();
  uint64_t seed = 1;
  // gate: the benchmark shapes, odd sizes, sigmoid, group-limited.
  checkGate(4096, 64, 2, false, false, 0, 0, seed++);
  checkGate(4096, 64, 8, false, true, 0, 0, seed++);
  checkGate(1000, 37, 3, true, true, 0, 0, seed++);
  checkGate(777, 256, 8, true, true, 8, 4, seed++);
  checkGate(300, 64, 6, false, false, 16, 3, seed++);
  checkGate(200, 64, 1, true, false, 64, 2, seed++); // groups of one
  checkGate(50, 3000, 4, false, true, 0, 0, seed++); // workspace in global
  checkGate(0, 64, 2, false, false, 0, 0, seed++);
  checkGate(999, 64, 4, false, true, 0, 0, seed++, true);
  checkGate(999, 64, 6, true, false, 8, 3, seed++, true);
  // dispatch: row sizes for each copy width, drops both ways.
  for (int64_t rowBytes : {8192, 6, 12, 24, 1})
    checkDispatch(1000, rowBytes, 2, 64, -1, false, seed++);
  checkDispatch(4096, 64, 8, 64, -1, false, seed++);
  checkDispatch(2000, 32, 4, 16, 100, false, seed++);
  checkDispatch(2000, 32, 4, 16, 100, true, seed++);
  checkDispatch(513, 8, 3, 7, 0, true, seed++);
  checkDispatch(0, 8, 2, 4, -1, false, seed++);
  // combine: vectorised and scalar rows.
  checkCombine(1000, 1024, 2, 1800, seed++);
  checkCombine(333, 1001, 4, 900, seed++);
  checkCombine(64, 3, 8, 100, seed++);
  // aux_loss.
  checkAuxLoss(4096, 64, 2, false, seed++);
  checkAuxLoss(1000, 37, 4, true, seed++);
  // grouped_matmul: partial tiles, several chunks per expert, a tail of
  // rows past the counts (zeroed), sizes off the tile grid.
  checkGroupedMatmul(1, 4, 64, 64, 0, seed++);
  checkGroupedMatmul(3, 5, 100, 70, 7, seed++);
  checkGroupedMatmul(2, 8, 256, 512, 3, seed++);
  checkGroupedMatmul(1, 1, 1, 1, 2, seed++);
  for (tamoe_rt_dtype_t dtype : {TAMOE_RT_BF16, TAMOE_RT_F16}) {
    checkGroupedMatmulRows(dtype, 2, 4, 256, 128, 5, seed++);
    checkGroupedMatmulRows(dtype, 1, 8, 1024, 512, 0, seed++);
  }
  // regroup.
  checkRegroup(3, 4, 2, 40, seed++);
  checkRegroup(8, 2, 4, 8192, seed++);
  checkRegroup(5, 1, 3, 7, seed++);
  // chunk, unchunk and chunk_positions (tamoe-overlap's parts).
  checkChunk(16, 4096, 4, seed++);
  checkChunk(7, 6, 3, seed++);
  checkChunk(64, 2048, 8, seed++);
  checkChunkPositions(4096, 2, 64, 4, seed++);
  checkChunkPositions(300, 8, 7, 3, seed++);
  checkAddCounts(64, seed++);
  checkAddCounts(100000, seed++);
  // dedup.
  checkDedup(500, 24, 4, 4, 2, 8, seed++);
  checkDedup(300, 4096, 8, 2, 4, 4, seed++);
  checkDedup(97, 3, 2, 3, 1, 1, seed++);
  // matmul's operand layouts (with and without an init), the maps of the
  // backward, combine without weights.
  for (bool transposeA : {false, true})
    for (bool transposeB : {false, true})
      checkMatmul(300, 257, 129, transposeA, transposeB,
                  transposeA != transposeB, seed++);
  checkMatmul(1, 1, 1, true, true, false, seed++);
  for (tamoe_rt_dtype_t type : {TAMOE_RT_BF16, TAMOE_RT_F16}) {
    checkMatmulRows(type, TAMOE_RT_F32, false, false, false, seed++);
    checkMatmulRows(type, TAMOE_RT_F32, true, false, true, seed++);
    checkMatmulRows(type, type, false, true, true, seed++);
  }
  checkMaps(seed++);
  checkConvert(seed++);
  checkMapRows(seed++);
  checkCombine(333, 1001, 4, 900, seed++, false);
  checkCombineRows(seed++);
  // The gradients: the shapes of the forward checks.
  checkGateGrad(4096, 64, 2, false, false, 0, 0, seed++);
  checkGateGrad(4096, 64, 8, false, true, 0, 0, seed++);
  checkGateGrad(1000, 37, 3, true, true, 0, 0, seed++);
  checkGateGrad(777, 256, 8, true, true, 8, 4, seed++);
  checkGateGrad(200, 64, 1, false, true, 64, 2, seed++);
  checkCombineGrad(1000, 1024, 2, 64, true, seed++);
  checkCombineGrad(333, 1001, 4, 16, true, seed++);
  checkCombineGrad(500, 256, 8, 32, false, seed++);
  checkGroupedMatmulGrad(1, 4, 64, 64, 0, seed++);
  for (tamoe_rt_dtype_t dtype : {TAMOE_RT_BF16, TAMOE_RT_F16})
    checkGroupedMatmulGradRows(dtype, 2, 4, 128, 96, 3, seed++);
  checkGroupedMatmulGrad(3, 5, 100, 70, 7, seed++);
  checkGroupedMatmulGrad(2, 8, 256, 512, 3, seed++);
  checkAuxLossGrad(4096, 64, 2, false, seed++);
  checkAuxLossGrad(1000, 37, 8, true, seed++);
  checkDedupGrad(500, 64, 4, 4, 2, 8, seed++);
  checkDedupGrad(97, 3, 2, 3, 1, 1, seed++);
  // The training steps.
  checkSgd(100000, 0.05f, 0.0f, 0.0f, seed++);
  checkSgd(100000, 0.05f, 0.9f, 0.01f, seed++);
  checkAdam(100000, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, seed++);
  checkAdam(100000, 1e-3f, 0.5f, 0.9f, 1e-6f, 0.1f, seed++);
  checkErrors(seed++);
  // Exchanges: every group, and (with the core) the composed schedules.
  for (tamoe_rt_group_t group :
       {TAMOE_RT_GROUP_WORLD, TAMOE_RT_GROUP_NODE, TAMOE_RT_GROUP_PEERS}) {
    checkAllToAll(group, 1, 64, seed++);
    checkAllToAll(group, 4, 12, seed++);
    for (bool average : {false, true})
      checkAllReduce(group, 100001, average, seed++);
  }
  checkHierarchical(4, 40, seed++);
  checkDispatchDedup(300, 4, 4, 48, seed++);
  checkGraphs(seed++);
  checkTraffic();
  std::printf("[rank %lld] %d passed, %d failed\n", (long long)worldRank,
              passes, failures);
  return failures ? 1 : 0;
}

//===----------------------------------------------------------------------===//
// Timing
//===----------------------------------------------------------------------===//

void cudaCheck(cudaError_t error, const char *what) {
  if (error != cudaSuccess)
    throw Failure(std::string(what) + ": " + cudaGetErrorString(error));
}

/// Median of `iterations` runs of `body`, in microseconds, measured with
/// events on the legacy default stream (which the backend's blocking stream
/// is ordered with, so the events bracket the backend's work).
double medianMicros(const std::function<void()> &body, int warmup,
                    int iterations) {
  for (int i = 0; i < warmup; ++i)
    body();
  cudaCheck(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  cudaEvent_t start, stop;
  cudaCheck(cudaEventCreate(&start), "cudaEventCreate");
  cudaCheck(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> samples;
  for (int i = 0; i < iterations; ++i) {
    cudaCheck(cudaEventRecord(start, 0), "cudaEventRecord");
    body();
    cudaCheck(cudaEventRecord(stop, 0), "cudaEventRecord");
    cudaCheck(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    cudaCheck(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    samples.push_back(double(ms) * 1000.0);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

/// A device-to-device copy whose reads plus writes are `bytesMoved`.
double memcpyMicros(int64_t bytesMoved, int warmup, int iterations) {
  size_t bytes = size_t(std::max<int64_t>(bytesMoved / 2, 1));
  void *a = nullptr, *b = nullptr;
  cudaCheck(cudaMalloc(&a, bytes), "cudaMalloc");
  cudaCheck(cudaMalloc(&b, bytes), "cudaMalloc");
  cudaCheck(cudaMemset(a, 1, bytes), "cudaMemset");
  double us = medianMicros(
      [&] {
        cudaCheck(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice),
                  "cudaMemcpy");
      },
      warmup, iterations);
  cudaFree(a);
  cudaFree(b);
  return us;
}

struct CsvWriter {
  std::ofstream file;
  /// `bytes` moved by a memory-bound operation, or the `flops` of a
  /// compute-bound one.
  void row(const std::string &impl, const std::string &op, int64_t tokens,
           int64_t hidden, int64_t experts, int64_t k, double micros,
           int64_t bytes, int64_t flops = 0) {
    file << impl << "," << op << "," << tokens << "," << hidden << ","
         << experts << "," << k << "," << micros << "," << bytes << "," << flops
         << "\n";
    std::printf("%-14s %-18s T=%-6lld H=%-5lld E=%-4lld k=%-2lld %10.1f us "
                "%8.1f %s\n",
                impl.c_str(), op.c_str(), (long long)tokens, (long long)hidden,
                (long long)experts, (long long)k, micros,
                micros <= 0 ? 0.0
                : flops > 0 ? double(flops) / micros / 1e6
                            : double(bytes) / micros / 1e3,
                flops > 0 ? "TFLOP/s" : "GB/s");
    std::fflush(stdout);
  }
};

//===----------------------------------------------------------------------===//
// The expert stage against cuBLAS
//===----------------------------------------------------------------------===//

void blasCheck(cublasStatus_t status, const char *what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Failure(std::string(what) + ": " + cublasGetStatusString(status));
}

/// cuBLAS on the legacy default stream, where the timing events are, in the
/// runtime's math mode (f32 sums, no split-K reduced in bf16).
struct BlasHandle {
  cublasHandle_t handle = nullptr;
  BlasHandle() {
    blasCheck(cublasCreate(&handle), "cublasCreate");
    cublasSetMathMode(
        handle, cublasMath_t(CUBLAS_DEFAULT_MATH |
                             CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
  }
  ~BlasHandle() { cublasDestroy(handle); }
  BlasHandle(const BlasHandle &) = delete;
  BlasHandle &operator=(const BlasHandle &) = delete;
};

/// Row-major bf16 c[m x n] = a[m x k] b[k x n] with f32 sums: column-major
/// c^T = b^T a^T, so b goes first.
void gemmBf16(cublasHandle_t blas, int64_t m, int64_t n, int64_t k,
              const uint16_t *a, const uint16_t *b, uint16_t *c) {
  const float alpha = 1.0f, beta = 0.0f;
  blasCheck(cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(m), int(k),
                         &alpha, b, CUDA_R_16BF, int(n), a, CUDA_R_16BF, int(k),
                         &beta, c, CUDA_R_16BF, int(n), CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx");
}

/// The rows of an expert in a grouped layout: rows [row, row + rows) take
/// the weights of `expert`.
struct ExpertRows {
  int64_t expert, row, rows;
};

/// The experts that have rows, in order, from their counts.
std::vector<ExpertRows> expertRows(const std::vector<int32_t> &counts) {
  std::vector<ExpertRows> groups;
  int64_t row = 0;
  for (size_t e = 0; e < counts.size(); row += counts[e++])
    if (counts[e] > 0)
      groups.push_back({int64_t(e), row, counts[e]});
  return groups;
}

/// One cublasGemmGroupedBatchedEx: group g multiplies expert g's rows by its
/// weights (row-major, as gemmBf16), each group one problem of its own size.
/// Empty groups are left out. The pointer arrays live on the device.
class GroupedGemm {
public:
  GroupedGemm(Scope &s, const std::vector<ExpertRows> &groups, int64_t in,
              int64_t out, const uint16_t *rows, const uint16_t *weights,
              uint16_t *result) {
    std::vector<const void *> a, b;
    std::vector<void *> c;
    for (const ExpertRows &g : groups) {
      // Column-major: c_g^T [out x rows] = w_e^T [out x in] rows_g^T.
      m_.push_back(int(out));
      n_.push_back(int(g.rows));
      k_.push_back(int(in));
      lda_.push_back(int(out));
      ldb_.push_back(int(in));
      ldc_.push_back(int(out));
      a.push_back(weights + g.expert * in * out);
      b.push_back(rows + g.row * in);
      c.push_back(result + g.row * out);
    }
    ops_.assign(groups.size(), CUBLAS_OP_N);
    alpha_.assign(groups.size(), 1.0f);
    beta_.assign(groups.size(), 0.0f);
    sizes_.assign(groups.size(), 1);
    a_ = s.put(a);
    b_ = s.put(b);
    c_ = s.put(c);
  }
  cublasStatus_t run(cublasHandle_t blas) const {
    return cublasGemmGroupedBatchedEx(
        blas, ops_.data(), ops_.data(), m_.data(), n_.data(), k_.data(),
        alpha_.data(), a_, CUDA_R_16BF, lda_.data(), b_, CUDA_R_16BF,
        ldb_.data(), beta_.data(), c_, CUDA_R_16BF, ldc_.data(), int(m_.size()),
        sizes_.data(), CUBLAS_COMPUTE_32F);
  }

private:
  std::vector<int> m_, n_, k_, lda_, ldb_, ldc_, sizes_;
  std::vector<cublasOperation_t> ops_;
  std::vector<float> alpha_, beta_;
  const void *const *a_ = nullptr;
  const void *const *b_ = nullptr;
  void *const *c_ = nullptr;
};

/// Row-major bf16 c = relu(a b) with f32 sums on cuBLASLt, relu in the
/// GEMM's epilogue (CUBLASLT_EPILOGUE_RELU), no workspace, no split-K
/// reduced in bf16. Each shape's descriptors and algorithm are made once.
class LtReluGemm {
public:
  LtReluGemm() { blasCheck(cublasLtCreate(&lt_), "cublasLtCreate"); }
  ~LtReluGemm() {
    for (auto &[shape, plan] : plans_) {
      cublasLtMatrixLayoutDestroy(plan.a);
      cublasLtMatrixLayoutDestroy(plan.b);
      cublasLtMatrixLayoutDestroy(plan.c);
      cublasLtMatmulDescDestroy(plan.desc);
    }
    cublasLtDestroy(lt_);
  }
  LtReluGemm(const LtReluGemm &) = delete;
  LtReluGemm &operator=(const LtReluGemm &) = delete;

  void run(int64_t m, int64_t n, int64_t k, const uint16_t *a,
           const uint16_t *b, uint16_t *c) {
    const Plan &p = plan(m, n, k);
    const float alpha = 1.0f, beta = 0.0f;
    // Column-major c^T = b^T a^T, as gemmBf16.
    blasCheck(cublasLtMatmul(lt_, p.desc, &alpha, b, p.a, a, p.b, &beta, c, p.c,
                             c, p.c, &p.algo, nullptr, 0, 0),
              "cublasLtMatmul");
  }

private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo;
  };
  const Plan &plan(int64_t m, int64_t n, int64_t k) {
    auto [it, fresh] = plans_.try_emplace({m, n, k});
    Plan &p = it->second;
    if (!fresh)
      return p;
    blasCheck(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
              "cublasLtMatmulDescCreate");
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_RELU;
    blasCheck(cublasLtMatmulDescSetAttribute(p.desc,
                                             CUBLASLT_MATMUL_DESC_EPILOGUE,
                                             &epilogue, sizeof(epilogue)),
              "cublasLtMatmulDescSetAttribute");
    blasCheck(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, uint64_t(n),
                                         uint64_t(k), n),
              "cublasLtMatrixLayoutCreate");
    blasCheck(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, uint64_t(k),
                                         uint64_t(m), k),
              "cublasLtMatrixLayoutCreate");
    blasCheck(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_16BF, uint64_t(n),
                                         uint64_t(m), n),
              "cublasLtMatrixLayoutCreate");
    cublasLtMatmulPreference_t preference = nullptr;
    blasCheck(cublasLtMatmulPreferenceCreate(&preference),
              "cublasLtMatmulPreferenceCreate");
    uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    size_t workspace = 0;
    blasCheck(cublasLtMatmulPreferenceSetAttribute(
                  preference, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                  &schemes, sizeof(schemes)),
              "cublasLtMatmulPreferenceSetAttribute");
    blasCheck(cublasLtMatmulPreferenceSetAttribute(
                  preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                  &workspace, sizeof(workspace)),
              "cublasLtMatmulPreferenceSetAttribute");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
        lt_, p.desc, p.a, p.b, p.c, p.c, preference, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(preference);
    blasCheck(status, "cublasLtMatmulAlgoGetHeuristic");
    if (found == 0)
      throw Failure("cublasLtMatmulAlgoGetHeuristic: no algorithm for a bf16 "
                    "GEMM with a relu epilogue");
    p.algo = result.algo;
    return p;
  }
  cublasLtHandle_t lt_ = nullptr;
  std::map<std::tuple<int64_t, int64_t, int64_t>, Plan> plans_;
};

/// What cuBLASLt's relu epilogue makes of a NaN sum: TAMOE_RT_MAP_RELU
/// keeps NaN (arith.maximumf), so fusing relu into the GEMM is exact only
/// where the epilogue does too.
std::string ltReluOfNaN(Scope &s, LtReluGemm &lt) {
  const int64_t n = 16;
  std::vector<uint16_t> ones(size_t(n * n), hostNarrow(1.0f, TAMOE_RT_BF16));
  std::vector<uint16_t> a = ones;
  a[0] = hostNarrow(NAN, TAMOE_RT_BF16);               // row 0's sums are NaN
  a[size_t(n)] = hostNarrow(-INFINITY, TAMOE_RT_BF16); // row 1's are -inf
  uint16_t *c = s.make<uint16_t>(n * n);
  lt.run(n, n, n, s.put(a), s.put(ones), c);
  std::vector<uint16_t> got = s.get(c, n * n);
  float nan = hostWiden(got[0], TAMOE_RT_BF16);
  float negInf = hostWiden(got[size_t(n)], TAMOE_RT_BF16);
  float plain = hostWiden(got[size_t(2 * n)], TAMOE_RT_BF16);
  char text[160];
  std::snprintf(text, sizeof text,
                "relu(NaN) = %g, relu(-inf) = %g, relu(16) = %g: %s", nan,
                negInf, plain,
                std::isnan(nan) && negInf == 0 && plain == 16
                    ? "as TAMOE_RT_MAP_RELU"
                    : "NOT as TAMOE_RT_MAP_RELU (NaN stays NaN)");
  return text;
}

/// Where two bf16 results of the expert stage's first GEMM differ by more
/// than two roundings of bf16 relative to the larger, plus 1e-3 for sums
/// that cancel and that another kernel adds in another order (its terms are
/// below 1/32, the results around 0.3); "" when they agree.
std::string bf16Differ(const std::vector<uint16_t> &got,
                       const std::vector<uint16_t> &want) {
  for (size_t i = 0; i < got.size(); ++i) {
    float x = hostWiden(got[i], TAMOE_RT_BF16);
    float y = hostWiden(want[i], TAMOE_RT_BF16);
    if (!(std::fabs(x - y) <=
          2 * 0x1p-8f * std::max(std::fabs(x), std::fabs(y)) + 1e-3f))
      return "element " + std::to_string(i) + ": " + std::to_string(x) +
             " against " + std::to_string(y);
  }
  return "";
}

/// The expert stage of a layer (rows x W1, relu, x W2 per expert; bf16,
/// f32 sums) with tokens * k rows spread over the experts at random: tamoe's
/// grouped_matmul + map + grouped_matmul, against the same GEMMs as cuBLAS
/// calls per expert, as one cublasGemmGroupedBatchedEx pair, and as a dense
/// pair over all rows with the same FLOPs (the bound), and per expert on
/// cuBLASLt with relu in the first GEMM's epilogue. The other cuBLAS rows
/// are the GEMMs alone (no relu). Each row carries the pair's FLOPs; the report
/// gives TFLOP/s and the ratio to the dense pair.
void benchExpertStage(Engine &engine, CsvWriter &csv, int64_t tokens,
                      int64_t hidden, int64_t ffn, int64_t experts, int64_t k,
                      int warmup, int iterations) {
  Scope s(engine, /*fill=*/false);
  reference::Random random(uint64_t(tokens * 7 + hidden));
  const int64_t rows = tokens * k;
  std::vector<int32_t> counts(size_t(experts), 0);
  for (int64_t r = 0; r < rows; ++r)
    ++counts[size_t(random.integer(0, experts - 1))];
  auto bf16 = [&](int64_t n, float scale) {
    return randomBf16(s, random, n, scale);
  };
  uint16_t *x = bf16(rows * hidden, 1.0f);
  uint16_t *w1 = bf16(experts * hidden * ffn, 1.0f / std::sqrt(float(hidden)));
  uint16_t *w2 = bf16(experts * ffn * hidden, 1.0f / std::sqrt(float(ffn)));
  uint16_t *act = s.make<uint16_t>(rows * ffn);
  uint16_t *y = s.make<uint16_t>(rows * hidden);
  uint16_t *actBlas = s.make<uint16_t>(rows * ffn);
  uint16_t *yBlas = s.make<uint16_t>(rows * hidden);
  int32_t *deviceCounts = s.put(counts);
  const int64_t flops = 2 * 2 * rows * hidden * ffn;
  BlasHandle blas;

  auto stage = [&] {
    require(engine.groupedMatmulRows(TAMOE_RT_BF16, x, rows, hidden,
                                     deviceCounts, experts, experts, w1, ffn,
                                     act),
            "grouped_matmul");
    require(engine.mapRows(TAMOE_RT_MAP_RELU, TAMOE_RT_BF16, act, nullptr,
                           rows * ffn, act),
            "map");
    require(engine.groupedMatmulRows(TAMOE_RT_BF16, act, rows, ffn,
                                     deviceCounts, experts, experts, w2, hidden,
                                     y),
            "grouped_matmul");
  };
  const std::vector<ExpertRows> groups = expertRows(counts);
  auto perExpert = [&](const uint16_t *in, int64_t inFeatures,
                       const uint16_t *weights, int64_t outFeatures,
                       uint16_t *out) {
    for (const ExpertRows &g : groups)
      gemmBf16(blas.handle, g.rows, outFeatures, inFeatures,
               in + g.row * inFeatures,
               weights + g.expert * inFeatures * outFeatures,
               out + g.row * outFeatures);
  };
  auto loop = [&] {
    perExpert(x, hidden, w1, ffn, actBlas);
    perExpert(actBlas, ffn, w2, hidden, yBlas);
  };
  // tamoe's first GEMM against cuBLAS's per expert, before either is timed.
  require(engine.groupedMatmulRows(TAMOE_RT_BF16, x, rows, hidden, deviceCounts,
                                   experts, experts, w1, ffn, act),
          "grouped_matmul");
  perExpert(x, hidden, w1, ffn, actBlas);
  std::vector<uint16_t> firstGemm = s.get(actBlas, rows * ffn);
  if (std::string d = bf16Differ(s.get(act, rows * ffn), firstGemm); !d.empty())
    throw Failure("expert stage: tamoe's first GEMM differs from cuBLAS's "
                  "per expert at " +
                  d);
  // cuBLASLt with relu in the first GEMM's epilogue, against relu applied
  // on the host to the per-expert GEMM's result.
  LtReluGemm lt;
  std::printf("cuBLASLt relu epilogue: %s\n", ltReluOfNaN(s, lt).c_str());
  auto ltFirst = [&](uint16_t *out) {
    for (const ExpertRows &g : groups)
      lt.run(g.rows, ffn, hidden, x + g.row * hidden,
             w1 + g.expert * hidden * ffn, out + g.row * ffn);
  };
  ltFirst(act);
  for (uint16_t &bits : firstGemm)
    if (hostWiden(bits, TAMOE_RT_BF16) <= 0)
      bits = 0; // +0, as TAMOE_RT_MAP_RELU gives for -0 too
  if (std::string d = bf16Differ(s.get(act, rows * ffn), firstGemm); !d.empty())
    throw Failure("expert stage: cuBLASLt's GEMM with a relu epilogue "
                  "differs from relu of the per-expert GEMM at " +
                  d);
  csv.row("tamoe", "expert_stage", tokens, hidden, experts, k,
          medianMicros(stage, warmup, iterations), 0, flops);
  csv.row("cublas_loop", "expert_stage", tokens, hidden, experts, k,
          medianMicros(loop, warmup, iterations), 0, flops);

  GroupedGemm first(s, groups, hidden, ffn, x, w1, actBlas);
  GroupedGemm second(s, groups, ffn, hidden, actBlas, w2, yBlas);
  if (cublasStatus_t status = first.run(blas.handle);
      status == CUBLAS_STATUS_SUCCESS) {
    uint16_t *loopAct = s.make<uint16_t>(rows * ffn);
    perExpert(x, hidden, w1, ffn, loopAct);
    if (std::string d =
            bf16Differ(s.get(actBlas, rows * ffn), s.get(loopAct, rows * ffn));
        !d.empty())
      throw Failure("expert stage: cublasGemmGroupedBatchedEx differs from "
                    "the per-expert GEMMs at " +
                    d);
    auto grouped = [&] {
      blasCheck(first.run(blas.handle), "cublasGemmGroupedBatchedEx");
      blasCheck(second.run(blas.handle), "cublasGemmGroupedBatchedEx");
    };
    csv.row("cublas_grouped", "expert_stage", tokens, hidden, experts, k,
            medianMicros(grouped, warmup, iterations), 0, flops);
  } else {
    std::printf("cublasGemmGroupedBatchedEx: %s (bf16, f32 sums): no "
                "cublas_grouped row\n",
                cublasGetStatusString(status));
  }

  auto fused = [&] {
    ltFirst(actBlas);
    perExpert(actBlas, ffn, w2, hidden, yBlas);
  };
  csv.row("cublaslt_relu", "expert_stage", tokens, hidden, experts, k,
          medianMicros(fused, warmup, iterations), 0, flops);

  auto dense = [&] {
    gemmBf16(blas.handle, rows, ffn, hidden, x, w1, actBlas);
    gemmBf16(blas.handle, rows, hidden, ffn, actBlas, w2, yBlas);
  };
  csv.row("cublas_dense", "expert_stage", tokens, hidden, experts, k,
          medianMicros(dense, warmup, iterations), 0, flops);
}

int runBench(Engine &engine, const std::string &csvPath, bool quick) {
  CsvWriter csv;
  csv.file.open(csvPath);
  if (!csv.file)
    throw Failure("cannot write " + csvPath);
  csv.file << "impl,op,tokens,hidden,experts,k,median_us,bytes,flops\n";
  const int warmup = quick ? 2 : 5, iterations = quick ? 5 : 30;
  const int64_t hidden = 4096, experts = 64;
  const int64_t rowBytes = hidden * 2; // bf16 tokens
  std::vector<int64_t> tokenCounts{4096, 16384};
  for (int64_t tokens : tokenCounts)
    for (int64_t k : {int64_t(2), int64_t(8)}) {
      Scope s(engine, /*fill=*/false);
      reference::Random random(uint64_t(tokens * 31 + k));
      float *logits = s.put(random.floats(size_t(tokens * experts), -4, 4));
      int32_t *ids = s.make<int32_t>(tokens * k);
      float *weights = s.make<float>(tokens * k);
      float *probs = s.make<float>(tokens * experts);
      auto gate = [&] {
        require(engine.gate(logits, tokens, experts, k, false, false, 0, 0, ids,
                            weights, probs),
                "gate");
      };
      int64_t gateBytes = tokens * experts * 8 + tokens * k * 8;
      csv.row("tamoe", "gate", tokens, hidden, experts, k,
              medianMicros(gate, warmup, iterations), gateBytes);
      csv.row("memcpy", "gate", tokens, hidden, experts, k,
              memcpyMicros(gateBytes, warmup, iterations), gateBytes);

      void *rows = s.raw(tokens * rowBytes);
      void *dispatched = s.raw(tokens * k * rowBytes);
      int32_t *counts = s.make<int32_t>(experts);
      int32_t *positions = s.make<int32_t>(tokens * k);
      int64_t *dropped = s.make<int64_t>(1);
      auto permute = [&] {
        require(engine.dispatch(rows, tokens, rowBytes, ids, k, experts,
                                nullptr, -1, false, dispatched, tokens * k,
                                counts, positions, dropped),
                "dispatch");
      };
      int64_t permuteBytes = 2 * tokens * k * rowBytes;
      csv.row("tamoe", "permute", tokens, hidden, experts, k,
              medianMicros(permute, warmup, iterations), permuteBytes);
      csv.row("memcpy", "permute", tokens, hidden, experts, k,
              memcpyMicros(permuteBytes, warmup, iterations), permuteBytes);

      // On one rank, the exchange of the dispatched rows (to itself, by the
      // counts the timed dispatches left): a device copy and its counts,
      // against a copy of the same bytes.
      if (engine.numRanks() == 1) {
        void *received = s.raw(tokens * k * rowBytes);
        int32_t *recvCounts = s.make<int32_t>(experts);
        auto exchange = [&] {
          require(engine.allToAll(TAMOE_RT_GROUP_WORLD, dispatched, tokens * k,
                                  rowBytes, counts, 1, experts, received,
                                  tokens * k, recvCounts),
                  "all_to_all");
        };
        csv.row("tamoe", "all_to_all", tokens, hidden, experts, k,
                medianMicros(exchange, warmup, iterations), permuteBytes);
        csv.row("memcpy", "all_to_all", tokens, hidden, experts, k,
                memcpyMicros(permuteBytes, warmup, iterations), permuteBytes);
      }

      float *outputs = s.make<float>(tokens * k * hidden);
      float *combined = s.make<float>(tokens * hidden);
      auto unpermute = [&] {
        require(engine.combine(outputs, tokens * k, hidden, positions, weights,
                               tokens, k, combined),
                "combine");
      };
      int64_t combineBytes = tokens * k * hidden * 4 + tokens * hidden * 4;
      csv.row("tamoe", "unpermute_combine", tokens, hidden, experts, k,
              medianMicros(unpermute, warmup, iterations), combineBytes);
      csv.row("memcpy", "unpermute_combine", tokens, hidden, experts, k,
              memcpyMicros(combineBytes, warmup, iterations), combineBytes);
    }
  // The expert stage at the compiled layer's shape (4096 tokens x 1024,
  // 8 experts, top-2, FFN 4096), and at a wider one.
  if (engine.onDevice()) {
    benchExpertStage(engine, csv, 4096, 1024, 4096, 8, 2, warmup, iterations);
    if (!quick)
      benchExpertStage(engine, csv, 16384, 4096, 4096, 8, 2, warmup,
                       iterations);
  }
  // A whole bf16 layer step (LayerStep) at the compiled layer's shape, op by
  // op (each waits for its own work, so that a failure is its status) and
  // as one graph (one launch, one wait).
  if (engine.onDevice() && engine.numRanks() == 1 && engine.hasSchedules()) {
    Scope s(engine, /*fill=*/false);
    reference::Random random(7);
    const int64_t tokens = 4096, hidden = 1024, experts = 8, k = 2;
    LayerStep step(s, random, tokens, hidden, experts, k, 4096);
    auto eager = [&] { require(step.run(engine), "layer step"); };
    csv.row("tamoe", "layer_step", tokens, hidden, experts, k,
            medianMicros(eager, warmup, iterations), 0);
    GraphGuard guard{engine};
    require(engine.graphBegin(), "graph_begin");
    Result recorded = step.run(engine);
    require(engine.graphEnd(&guard.graph), "graph_end");
    require(recorded, "recording the layer step");
    auto launch = [&] {
      require(engine.graphLaunch(guard.graph), "graph_launch");
    };
    csv.row("tamoe_graph", "layer_step", tokens, hidden, experts, k,
            medianMicros(launch, warmup, iterations), 0);
  }
  return 0;
}

/// Flat, hierarchical and de-duplicated exchange of a top-k layer's tokens.
int runExchangeBench(Engine &engine, const std::string &csvPath) {
  CsvWriter csv;
  if (engine.rank() == 0) {
    csv.file.open(csvPath);
    csv.file << "impl,op,tokens,hidden,experts,k,median_us,bytes,flops\n";
  }
  const int64_t tokens = 4096, hidden = 4096, rowBytes = hidden * 2, k = 8;
  const int64_t ranks = engine.numRanks(), perRank = 8;
  const int64_t experts = ranks * perRank;
  Scope s(engine, /*fill=*/false);
  Bytes rows;
  std::vector<int32_t> ids, positions;
  reference::Dispatch d;
  dedupData(99, engine.rank(), tokens, k, experts, rowBytes, rows, ids,
            positions, d);
  // Dropless, for the flat and hierarchical exchanges of dispatch's rows.
  reference::Dispatch all =
      reference::dispatch(rows, rowBytes, ids, k, experts);
  int64_t sendRows = tokens * k, capacity = tokens * k * ranks;
  void *dSend = s.put(all.rows);
  int32_t *dCounts = s.put(all.counts);
  void *dRecv = s.raw(capacity * rowBytes);
  int32_t *dRecvCounts = s.make<int32_t>(experts);
  void *dTokens = s.put(rows);
  int32_t *dIds = s.put(ids);
  std::vector<int32_t> keepAll(size_t(tokens * k));
  std::iota(keepAll.begin(), keepAll.end(), 0);
  int32_t *dPositions = s.put(keepAll);
  auto flat = [&] {
    require(engine.allToAll(TAMOE_RT_GROUP_WORLD, dSend, sendRows, rowBytes,
                            dCounts, ranks, perRank, dRecv, capacity,
                            dRecvCounts),
            "all_to_all");
  };
  auto hierarchical = [&] {
    require(engine.hierarchical(dSend, sendRows, rowBytes, dCounts, perRank,
                                dRecv, capacity, dRecvCounts),
            "all_to_all_hierarchical");
  };
  auto dedup = [&] {
    require(engine.dispatchDedup(dTokens, tokens, rowBytes, dIds, dPositions, k,
                                 experts, dRecv, capacity, dRecvCounts),
            "dispatch_dedup");
  };
  int64_t bytes = sendRows * rowBytes;
  double tFlat = medianMicros(flat, 3, 20);
  double tHier = medianMicros(hierarchical, 3, 20);
  double tDedup = medianMicros(dedup, 3, 20);
  if (engine.rank() == 0) {
    csv.row("tamoe", "all_to_all_flat", tokens, hidden, experts, k, tFlat,
            bytes);
    csv.row("tamoe", "all_to_all_hier", tokens, hidden, experts, k, tHier,
            bytes);
    csv.row("tamoe", "dispatch_dedup", tokens, hidden, experts, k, tDedup,
            bytes);
  }
  return 0;
}

//===----------------------------------------------------------------------===//
// Main
//===----------------------------------------------------------------------===//

int usage() {
  std::fprintf(stderr,
               "usage: tamoe_gpu_bench check [--engines cpu,cuda]\n"
               "       tamoe_gpu_bench bench --csv FILE [--quick]\n"
               "       tamoe_gpu_bench exchange --csv FILE\n"
#ifdef TAMOE_GPU_BENCH_DIRECT
               "       (this build: --library PATH/libtamoe_rt_cuda.so)\n"
#endif
  );
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 2)
    return usage();
  std::string mode = argv[1], csvPath, engineList = "cpu,cuda", library;
  bool quick = false;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--csv" && i + 1 < argc)
      csvPath = argv[++i];
    else if (arg == "--engines" && i + 1 < argc)
      engineList = argv[++i];
    else if (arg == "--library" && i + 1 < argc)
      library = argv[++i];
    else if (arg == "--quick")
      quick = true;
    else
      return usage();
  }
  if (mode != "check" && mode != "bench" && mode != "exchange")
    return usage();
  if ((mode == "bench" || mode == "exchange") && csvPath.empty())
    return usage();

  std::vector<std::unique_ptr<Engine>> owned;
  std::string error;
#ifndef TAMOE_GPU_BENCH_DIRECT
  std::vector<std::string> wanted;
  if (mode == "check") {
    std::stringstream list(engineList);
    for (std::string item; std::getline(list, item, ',');)
      wanted.push_back(item);
  } else {
    wanted = {"cuda"};
  }
  for (const std::string &name : wanted) {
    if (name != "cpu" && name != "cuda")
      return usage();
    auto engine = ApiEngine::create(
        name == "cuda" ? TAMOE_RT_BACKEND_CUDA : TAMOE_RT_BACKEND_CPU, error);
    if (!engine) {
      std::fprintf(stderr, "tamoe_gpu_bench: cannot create the %s engine: %s\n",
                   name.c_str(), error.c_str());
      return 2;
    }
    owned.push_back(std::move(engine));
  }
#else
  if (library.empty())
    return usage();
  auto engine = DirectEngine::create(library, error);
  if (!engine) {
    std::fprintf(stderr,
                 "tamoe_gpu_bench: cannot create the cuda backend: %s\n",
                 error.c_str());
    return 2;
  }
  owned.push_back(std::move(engine));
#endif
  for (auto &engine : owned)
    engines.push_back(engine.get());
  worldRank = engines.front()->rank();

  try {
    if (mode == "check")
      return runChecks();
    Engine *device = nullptr;
    for (Engine *engine : engines)
      if (engine->onDevice())
        device = engine;
    if (!device)
      throw Failure("no device engine");
    if (mode == "bench")
      return runBench(*device, csvPath, quick);
    return runExchangeBench(*device, csvPath);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "tamoe_gpu_bench: %s\n", e.what());
    return 1;
  }
}
