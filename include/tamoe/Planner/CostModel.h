//===- CostModel.h - All-to-all cost on a tree topology ---------*- C++ -*-===//
//
// Predicts the time of an MoE dispatch all-to-all on a cluster tree for three
// schedules: flat, hierarchical (intra-node stage, then inter-node exchange
// between same-index ranks) and hierarchical with per-node de-duplication of
// top-k tokens. docs/cost-model.md derives every formula used here.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_PLANNER_COSTMODEL_H
#define TAMOE_PLANNER_COSTMODEL_H

#include "tamoe/Topology/Topology.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tamoe::planner {

using topology::Topology;

/// The sizes of one MoE layer's dispatch, per rank.
struct Workload {
  int64_t tokensPerRank = 4096;
  int64_t hidden = 4096;
  int64_t bytesPerElement = 2;
  int64_t topK = 2;

  /// Bytes of one token row.
  double rowBytes() const {
    return static_cast<double>(hidden) * static_cast<double>(bytesPerElement);
  }
  /// Bytes of the route a de-duplicated token carries across nodes: its k
  /// expert ids as int32, which the relay needs to expand it per expert.
  double routeBytes() const {
    return 4.0 * static_cast<double>(topK);
  }
  /// (token, expert) assignments a rank dispatches.
  double assignmentsPerRank() const {
    return static_cast<double>(tokensPerRank) * static_cast<double>(topK);
  }
};

/// Checks the workload's fields ("topK: expected >= 1, got 0").
llvm::Error verify(const Workload &workload);

/// A target dispatch pattern p̂ on a symmetric tree. p̂[i][j] depends only on
/// the level of the lowest common ancestor of i and j: `shares[0]` is the
/// share a rank keeps, `shares[l + 1]` the share of each rank whose lowest
/// common ancestor with it is level l.
struct Pattern {
  std::vector<double> shares;
  /// Node-limited routing: each token reaches at most this many nodes.
  std::optional<int64_t> maxNodesPerToken;

  /// p̂[i][j].
  double at(const Topology &topology, int64_t i, int64_t j) const;
  /// Sum of one row (1 for a valid pattern).
  double rowSum(const Topology &topology) const;
};

/// Ranks whose lowest common ancestor with a given rank is `level`
/// (-1: the rank itself).
int64_t ranksAtDistance(const Topology &topology, int level);

/// The same by a pattern's share index: 0 the rank itself, l + 1 level l.
/// 0 where level l has fanout 1, whose share goes nowhere.
int64_t ranksAtShare(const Topology &topology, size_t share);

/// Checks that a pattern fits the topology: one share per distance, shares
/// in [0, 1], rows summing to 1.
llvm::Error verify(const Topology &topology, const Pattern &pattern);

enum class Schedule { Flat, Hierarchical, HierarchicalDedup };
llvm::StringRef stringifySchedule(Schedule schedule);
/// Every schedule, the simplest first.
llvm::ArrayRef<Schedule> allSchedules();
/// The schedules the compiler chooses from by default: flat and
/// hierarchical (per-node de-duplication is opt-in).
llvm::ArrayRef<Schedule> defaultSchedules();

/// Traffic of one dispatch in explicit form, for any (also asymmetric)
/// pattern: `assignments[i * P + j]` rows from rank i to rank j, and
/// `uniqueTokens[i * N + m]` distinct tokens of rank i bound for node m
/// (N = P / ranks per node), which is what crosses to node m once tokens are
/// de-duplicated per node.
struct Traffic {
  int64_t ranks = 0;
  int64_t nodes = 0;
  std::vector<double> assignments;
  std::vector<double> uniqueTokens;
};

/// The expected traffic of a pattern: assignments = k * S * p̂, unique tokens
/// from the independent-choice model (docs/cost-model.md).
Traffic expectedTraffic(const Topology &topology, const Pattern &pattern,
                        const Workload &workload);

/// The busiest link of a level in one direction.
struct LinkLoad {
  size_t level = 0;
  bool up = true;
  /// The child subtree whose link this is (its index among the level's
  /// children, counting across the whole tree).
  int64_t subtree = 0;
  double bytes = 0;
  /// Bandwidth of the whole link (a per-rank bandwidth times the ranks under
  /// it), GB/s.
  double linkGBps = 0;
  double microseconds = 0;
};

/// One stage of a schedule. Its time is the busiest link's time plus the
/// latency of the messages the busiest sender posts.
struct StageCost {
  std::string name;
  /// Busiest link of each level and direction: [2 * level + (up ? 0 : 1)].
  std::vector<LinkLoad> levels;
  LinkLoad bottleneck;
  double bandwidthUs = 0;
  double latencyUs = 0;
  /// Messages the busiest sender posts.
  int64_t messages = 0;
  /// Bytes each rank sends to the other ranks of its node and to other
  /// nodes: what the runtime's traffic counters measure. Only the routed
  /// evaluator fills them.
  std::vector<double> sentWithinNode, sentAcrossNodes;
  double totalUs() const { return bandwidthUs + latencyUs; }
};

struct Cost {
  Schedule schedule = Schedule::Flat;
  std::vector<StageCost> stages;
  double totalUs() const;
  /// The stage and link that take longest.
  const StageCost &slowestStage() const;
};

/// Closed-form cost of a symmetric pattern: O(levels^2), independent of the
/// number of ranks. A one-level tree has no inter-node stage, so all three
/// schedules are the flat one there.
Cost evaluate(const Topology &topology, const Pattern &pattern,
              const Workload &workload, Schedule schedule);

/// Cost of explicit traffic, by routing every message over the tree:
/// O(P^2 * levels). Agrees with `evaluate` on symmetric patterns.
Cost evaluate(const Topology &topology, const Traffic &traffic,
              const Workload &workload, Schedule schedule);

} // namespace tamoe::planner

#endif // TAMOE_PLANNER_COSTMODEL_H
