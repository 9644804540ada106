//===- Overlap.cpp - Predicted time of a chunked, overlapped layer --------===//

#include "tamoe/Planner/Overlap.h"
#include "tamoe/Planner/Policies.h"
#include "tamoe/Support/Messages.h"

#include <algorithm>
#include <cmath>

using namespace tamoe;
using namespace tamoe::planner;
using llvm::Error;

Error tamoe::planner::verify(const LayerTimes &times) {
  std::pair<const char *, double> fields[] = {
      {"dispatchBandwidthUs", times.dispatchBandwidthUs},
      {"dispatchLatencyUs", times.dispatchLatencyUs},
      {"returnBandwidthUs", times.returnBandwidthUs},
      {"returnLatencyUs", times.returnLatencyUs},
      {"computeUs", times.computeUs},
      {"chunkOverheadUs", times.chunkOverheadUs}};
  for (auto [name, value] : fields)
    if (!std::isfinite(value) || value < 0)
      return llvm::createStringError(
          std::string(name) + ": expected a finite time >= 0, got " +
          formatNumber(value));
  return Error::success();
}

Error tamoe::planner::verifyOverlapOptions(int64_t chunks, int64_t maxChunks,
                                           double deviceGflops,
                                           double chunkOverheadUs) {
  if (chunks < 0 || chunks > kMaxChunks || maxChunks < 1 ||
      maxChunks > kMaxChunks)
    return llvm::createStringError(
        "chunks must be in [0, " + std::to_string(kMaxChunks) +
        "] and max-chunks in [1, " + std::to_string(kMaxChunks) + "], got " +
        std::to_string(chunks) + " and " + std::to_string(maxChunks));
  for (auto [name, value] : {std::pair{"device-gflops", deviceGflops},
                             {"chunk-overhead-us", chunkOverheadUs}})
    if (!std::isfinite(value) || value < 0)
      return llvm::createStringError(std::string(name) +
                                     ": expected a finite number >= 0, got " +
                                     formatNumber(value));
  // Past these a device or an overhead is no longer one: a typo, named
  // here rather than as a prediction that cannot be made.
  if (deviceGflops != 0 &&
      (deviceGflops < kMinDeviceGflops || deviceGflops > kMaxDeviceGflops))
    return llvm::createStringError(
        "device-gflops: expected 0 (unknown) or a rate in [" +
        formatNumber(kMinDeviceGflops) + ", " + formatNumber(kMaxDeviceGflops) +
        "] GFLOP/s, got " + formatNumber(deviceGflops));
  if (chunkOverheadUs > kMaxChunkOverheadUs)
    return llvm::createStringError("chunk-overhead-us: expected at most " +
                                   formatNumber(kMaxChunkOverheadUs) +
                                   " us (a second), got " +
                                   formatNumber(chunkOverheadUs));
  return Error::success();
}

double tamoe::planner::chunkedLayerUs(const LayerTimes &times,
                                      int64_t chunks) {
  double c = double(std::max<int64_t>(chunks, 1));
  // One chunk's stages: the bandwidth parts shrink with the chunk, the
  // start-up parts do not.
  double out = times.dispatchBandwidthUs / c + times.dispatchLatencyUs;
  double back = times.returnBandwidthUs / c + times.returnLatencyUs;
  double compute = times.computeUs / c + times.chunkOverheadUs;
  // Both exchanges share the links, so the links' stage is out + back; the
  // first chunk fills the pipeline, every other adds its bottleneck stage.
  return out + compute + back + (c - 1) * std::max(out + back, compute);
}

int64_t tamoe::planner::bestChunkCount(const LayerTimes &times,
                                       int64_t maxChunks) {
  int64_t best = 1;
  double bestUs = chunkedLayerUs(times, 1);
  for (int64_t chunks = 2; chunks <= maxChunks; ++chunks)
    if (double us = chunkedLayerUs(times, chunks); fasterThan(us, bestUs)) {
      best = chunks;
      bestUs = us;
    }
  return best;
}

double tamoe::planner::computeUs(double flops, double gflops) {
  return gflops > 0 ? flops / (gflops * 1e3) : 0.0;
}
