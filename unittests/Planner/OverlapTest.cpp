//===- OverlapTest.cpp - Predicted time of a chunked layer ----------------===//

#include "tamoe/Planner/Overlap.h"

#include "gtest/gtest.h"

#include <limits>
#include <string>

using namespace tamoe::planner;

namespace {

/// Exchanges of 40 us of bytes and 5 us of start-up each, 100 us of
/// compute, 2 us per chunk of compute.
LayerTimes balanced() {
  LayerTimes times;
  times.dispatchBandwidthUs = 40;
  times.dispatchLatencyUs = 5;
  times.returnBandwidthUs = 40;
  times.returnLatencyUs = 5;
  times.computeUs = 100;
  times.chunkOverheadUs = 2;
  return times;
}

TEST(Overlap, OneChunkIsTheSequence) {
  EXPECT_DOUBLE_EQ(chunkedLayerUs(balanced(), 1), 45 + 102 + 45);
}

TEST(Overlap, FurtherChunksAddTheirBottleneckStage) {
  // C = 2: out = 25, back = 25, compute = 52; 25 + 52 + 25 + 1 * 52.
  EXPECT_DOUBLE_EQ(chunkedLayerUs(balanced(), 2), 154);
  // C = 4: out = back = 15, compute = 27; 57 + 3 * max(30, 27).
  EXPECT_DOUBLE_EQ(chunkedLayerUs(balanced(), 4), 57 + 3 * 30);
}

TEST(Overlap, BestChunkCountTradesHiddenTimeForStartUps) {
  // C: 1 -> 192, 2 -> 154, 3 -> 145.3, 4 -> 147, 5 -> 152.
  EXPECT_EQ(bestChunkCount(balanced(), 8), 3);
  EXPECT_EQ(bestChunkCount(balanced(), 2), 2);
  EXPECT_EQ(bestChunkCount(balanced(), 1), 1);
}

TEST(Overlap, NothingToHideKeepsOneChunk) {
  // No compute: chunking only repeats the start-ups.
  LayerTimes times = balanced();
  times.computeUs = 0;
  EXPECT_EQ(bestChunkCount(times, 8), 1);
  // Start-ups that dwarf the bytes: every chunk costs more than it hides.
  times = balanced();
  times.dispatchLatencyUs = times.returnLatencyUs = 500;
  EXPECT_EQ(bestChunkCount(times, 8), 1);
}

TEST(Overlap, ComputeTime) {
  // 2 GFLOP at 100 GFLOP/s: 20 ms.
  EXPECT_DOUBLE_EQ(computeUs(2e9, 100), 20000);
  EXPECT_DOUBLE_EQ(computeUs(2e9, 0), 0);
}

/// verify's message, or "" when the times are valid.
std::string problem(const LayerTimes &times) {
  llvm::Error error = verify(times);
  return error ? llvm::toString(std::move(error)) : std::string();
}

TEST(Overlap, VerifyNamesTheField) {
  LayerTimes times = balanced();
  times.computeUs = -1;
  EXPECT_EQ(problem(times), "computeUs: expected a finite time >= 0, got -1");
  times = balanced();
  times.returnLatencyUs = std::numeric_limits<double>::infinity();
  EXPECT_EQ(problem(times),
            "returnLatencyUs: expected a finite time >= 0, got inf");
  EXPECT_EQ(problem(balanced()), "");
}

} // namespace
