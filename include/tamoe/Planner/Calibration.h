//===- Calibration.h - Fit a topology's parameters to measurements -*- C++ -*-//
//
// `tamoe-topo calibrate` times exchanges whose messages all reach one level
// of the tree, over a sweep of sizes and message counts, and fits that
// level's parameters of the cost model to them: a start-up latency, a
// per-message overhead and a bandwidth (docs/cost-model.md, Calibration).
// This file is the fitting and the choice of peers; the timing runs through
// the runtime in tools/tamoe-topo-measure.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_PLANNER_CALIBRATION_H
#define TAMOE_PLANNER_CALIBRATION_H

#include "tamoe/Topology/Topology.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <vector>

namespace tamoe::planner {

using topology::Topology;

/// One timed exchange of a calibration sweep: every rank sent `messages`
/// messages, all to ranks whose lowest common ancestor with it is `level`,
/// `bytesPerRank` bytes in all, and the slowest rank took `microseconds`
/// per exchange.
struct ExchangeSample {
  size_t level = 0;
  int64_t messages = 0;
  double bytesPerRank = 0;
  double microseconds = 0;
};

/// One level's parameters fitted to its samples:
/// time = latency + messages * perMessage + bytes / bandwidth.
struct LevelFit {
  double latencyUs = 0;
  double perMessageUs = 0;
  /// Per rank: what each rank gets while every rank sends at once.
  double bandwidthGBps = 0;
  /// The largest |predicted / measured - 1| over the level's samples.
  double worstRelativeError = 0;

  double predictUs(int64_t messages, double bytes) const;
};

/// Fits `level`'s parameters to the samples of that level among `samples`
/// by least squares on the relative error, so that a 1 KiB exchange counts
/// as much as a 16 MiB one, with every parameter >= 0 (the best of the
/// feasible subsets of free parameters). With one message count only, the
/// per-message overhead cannot be told from the start-up and is 0. Fails,
/// naming the level and the reason, without samples of two sizes, on a
/// time that is not finite and positive, or when times do not grow with
/// the bytes.
llvm::Expected<LevelFit> fitLevel(const Topology &shape,
                                  llvm::ArrayRef<ExchangeSample> samples,
                                  size_t level);

/// The `messages` ranks that `rank` sends to when calibrating `level`: the
/// i-th is the rank at offset (1 + i / R, i) in (child of the level,
/// index below it), R = ranks per level-(level - 1) subtree, so the ranks
/// at that distance are used in turn and every rank receives `messages`
/// messages too (each offset is a translation). messages must be in
/// [1, ranksAtDistance(level)].
std::vector<int64_t> calibrationPeers(const Topology &shape, int64_t rank,
                                      size_t level, int64_t messages);

/// The message counts a sweep uses for `level`: 1, about half and all of
/// the ranks at that distance (without repeats); none for a level of
/// fanout 1, which has no rank at its distance.
std::vector<int64_t> calibrationMessageCounts(const Topology &shape,
                                              size_t level);

/// A calibrated topology and the fit of each of its levels.
struct Calibration {
  Topology topology;
  std::vector<LevelFit> fits; // one per level
};

/// `shape` (its names and fanouts) with every level's parameters fitted,
/// per-rank bandwidth in both directions, and a description of the fit. A
/// level of fanout 1 is not timed (no exchange reaches it alone): it gets
/// the widest bandwidth and no latency, so that it adds nothing to the
/// levels whose fits include what crosses it.
/// The result is verified: a fitted value outside the topology's ranges
/// fails with the field's message.
llvm::Expected<Calibration> calibrate(const Topology &shape,
                                      llvm::ArrayRef<ExchangeSample> samples,
                                      llvm::StringRef how);

} // namespace tamoe::planner

#endif // TAMOE_PLANNER_CALIBRATION_H
