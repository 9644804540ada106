//===- Overlap.h - Predicted time of a chunked, overlapped layer -*- C++ -*-===//
//
// A layer whose exchanges and expert compute are cut into C chunks runs as
// a two-resource pipeline: the links carry chunk i + 1's rows out and chunk
// i - 1's results back while the ranks compute chunk i. Cutting pays while
// the time it hides exceeds what every extra chunk costs (each exchange's
// start-up latency again, and a fixed overhead per chunk of compute).
// docs/cost-model.md derives the formula.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_PLANNER_OVERLAP_H
#define TAMOE_PLANNER_OVERLAP_H

#include "llvm/Support/Error.h"

#include <cstdint>

namespace tamoe::planner {

/// The bounds of a chunking's options, for tamoe-overlap and tamoe-topo
/// overlap alike. A layer is unrolled into its chunks, and the model's
/// search tries every count: past a thousand chunks neither is reasonable,
/// and no start-up-bound exchange gains from it.
constexpr int64_t kMaxChunks = 1024;
/// A rank's GEMM rate, GFLOP/s: past these a rate is a typo (1e-320 makes
/// any layer's compute time infinite).
constexpr double kMinDeviceGflops = 1e-3, kMaxDeviceGflops = 1e9;
/// What one chunk of compute may add: a second.
constexpr double kMaxChunkOverheadUs = 1e6;

/// One layer's parts, each as the cost model predicts it for the whole
/// batch (one chunk), microseconds.
struct LayerTimes {
  /// The exchange to the experts: the part that scales with the bytes
  /// (the busiest link) and the part every exchange pays whatever its size
  /// (latency and per-message overheads).
  double dispatchBandwidthUs = 0;
  double dispatchLatencyUs = 0;
  /// The exchange back to the tokens.
  double returnBandwidthUs = 0;
  double returnLatencyUs = 0;
  /// The experts' compute: GEMM FLOPs over the device's throughput.
  double computeUs = 0;
  /// What each chunk of compute adds (launches, a smaller GEMM's lower
  /// efficiency, the runtime's bookkeeping).
  double chunkOverheadUs = 0;
};

/// Checks the fields: finite and >= 0 ("computeUs: expected a finite time
/// >= 0, got -1").
llvm::Error verify(const LayerTimes &times);

/// Checks the options of a chunking against the bounds above: `chunks` in
/// [0, kMaxChunks] (0: the model's choice), `maxChunks` in [1, kMaxChunks],
/// the device's GFLOP/s 0 (unknown) or in range, and the overhead per
/// chunk finite and in [0, kMaxChunkOverheadUs] ("device-gflops: expected
/// a finite number >= 0, got -5"; the options' names as tamoe-overlap's).
llvm::Error verifyOverlapOptions(int64_t chunks, int64_t maxChunks,
                                 double deviceGflops, double chunkOverheadUs);

/// Predicted time of the layer cut into `chunks` (>= 1): the first chunk's
/// exchange out, compute and exchange back in sequence, then one
/// bottleneck stage (the links' or the compute's) per further chunk.
double chunkedLayerUs(const LayerTimes &times, int64_t chunks);

/// The chunk count in [1, maxChunks] with the least predicted time; ties go
/// to fewer chunks.
int64_t bestChunkCount(const LayerTimes &times, int64_t maxChunks);

/// Expert compute time: `flops` at `gflops` (GFLOP/s of one rank).
double computeUs(double flops, double gflops);

} // namespace tamoe::planner

#endif // TAMOE_PLANNER_OVERLAP_H
