//===- CostModel.cpp - All-to-all cost on a tree topology -----------------===//
//
// Two evaluators share one model (docs/cost-model.md): a closed form for the
// symmetric patterns the planner produces, whose cost does not grow with the
// number of ranks, and a router of explicit traffic that serves any pattern
// (and checks the closed form in the tests).
//
//===----------------------------------------------------------------------===//

#include "tamoe/Planner/CostModel.h"

#include "tamoe/Support/Messages.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>
#include <numeric>

using namespace llvm;
using namespace tamoe::planner;
using tamoe::fieldError;

/// Row sums of a pattern are 1 up to this tolerance.
static constexpr double kRowSumTolerance = 1e-9;

Error tamoe::planner::verify(const Workload &workload) {
  // A rank may have no tokens (or a capacity of 0); rows need a size.
  if (workload.tokensPerRank < 0)
    return fieldError("tokensPerRank", formatv("expected >= 0, got {0}",
                                               workload.tokensPerRank));
  for (auto [name, value] :
       {std::pair<StringRef, int64_t>{"hidden", workload.hidden},
        {"bytesPerElement", workload.bytesPerElement},
        {"topK", workload.topK}})
    if (value < 1)
      return fieldError(name, formatv("expected >= 1, got {0}", value));
  // Far above any layer, and small enough that products of the fields
  // (rows, row bytes, FLOPs) stay exact in int64.
  for (auto [name, value, limit] :
       {std::tuple<StringRef, int64_t, int64_t>{
            "tokensPerRank", workload.tokensPerRank, int64_t(1) << 31},
        {"hidden", workload.hidden, int64_t(1) << 31},
        {"bytesPerElement", workload.bytesPerElement, 64},
        {"topK", workload.topK, int64_t(1) << 16}})
    if (value > limit)
      return fieldError(name,
                        formatv("expected <= {0}, got {1}", limit, value));
  return Error::success();
}

/// Ranks under one subtree of `level`; 1 for level -1 (a rank).
static int64_t subtreeRanks(const Topology &topology, int level) {
  return level < 0 ? 1 : topology.ranksPerSubtree(level);
}

int64_t tamoe::planner::ranksAtDistance(const Topology &topology, int level) {
  if (level < 0)
    return 1;
  return subtreeRanks(topology, level) - subtreeRanks(topology, level - 1);
}

int64_t tamoe::planner::ranksAtShare(const Topology &topology, size_t share) {
  return ranksAtDistance(topology, int(share) - 1);
}

double Pattern::at(const Topology &topology, int64_t i, int64_t j) const {
  return shares[topology.lowestCommonLevel(i, j) + 1];
}

double Pattern::rowSum(const Topology &topology) const {
  double sum = 0;
  for (auto [index, share] : enumerate(shares))
    sum += share * static_cast<double>(ranksAtShare(topology, index));
  return sum;
}

Error tamoe::planner::verify(const Topology &topology, const Pattern &pattern) {
  if (pattern.shares.size() != topology.levels.size() + 1)
    return fieldError(
        "shares", formatv("expected {0} (one per level and one for the "
                          "sender), got {1}",
                          topology.levels.size() + 1, pattern.shares.size()));
  for (auto [index, share] : enumerate(pattern.shares))
    if (!std::isfinite(share) || share < 0 || share > 1)
      return fieldError(formatv("shares[{0}]", index),
                        "expected a fraction in [0, 1], got " +
                            tamoe::formatNumber(share));
  double sum = pattern.rowSum(topology);
  if (std::abs(sum - 1) > kRowSumTolerance)
    return fieldError("shares", "rows sum to " + tamoe::formatNumber(sum) +
                                    ", expected 1");
  if (pattern.maxNodesPerToken && *pattern.maxNodesPerToken < 1)
    return fieldError("maxNodesPerToken", formatv("expected >= 1, got {0}",
                                                  *pattern.maxNodesPerToken));
  return Error::success();
}

StringRef tamoe::planner::stringifySchedule(Schedule schedule) {
  switch (schedule) {
  case Schedule::Flat:
    return "flat";
  case Schedule::Hierarchical:
    return "hierarchical";
  case Schedule::HierarchicalDedup:
    return "hierarchical+dedup";
  }
  llvm_unreachable("unknown schedule");
}

ArrayRef<Schedule> tamoe::planner::allSchedules() {
  static const Schedule schedules[] = {Schedule::Flat, Schedule::Hierarchical,
                                       Schedule::HierarchicalDedup};
  return schedules;
}

ArrayRef<Schedule> tamoe::planner::defaultSchedules() {
  return allSchedules().drop_back();
}

double Cost::totalUs() const {
  double total = 0;
  for (const StageCost &stage : stages)
    total += stage.totalUs();
  return total;
}

const StageCost &Cost::slowestStage() const {
  return *std::max_element(stages.begin(), stages.end(),
                           [](const StageCost &a, const StageCost &b) {
                             return a.totalUs() < b.totalUs();
                           });
}

//===----------------------------------------------------------------------===//
// Shared pieces
//===----------------------------------------------------------------------===//

/// Bandwidth of one level-`level` link (the link of one child subtree), GB/s.
static double linkGBps(const Topology &topology, size_t level, bool up) {
  const tamoe::topology::Level &info = topology.levels[level];
  double perRank = up ? info.upBandwidthGBps : info.downBandwidthGBps;
  if (info.sharing == tamoe::topology::LinkSharing::Shared)
    return perRank;
  return perRank * static_cast<double>(subtreeRanks(topology, int(level) - 1));
}

/// Probability that a token reaches one given node, when a fraction `q` of
/// its assignments goes there and each of its k choices is independent.
static double touchProbability(double q, int64_t k) {
  return 1 - std::pow(1 - q, static_cast<double>(k));
}

/// What node-limited routing does to the touch probabilities of a token
/// that would reach `nodesReached` nodes on average unlimited: at most M
/// of them. The gate keeps the M nodes whose best experts score highest,
/// so with k > M its top k nearly always reach every node kept (a
/// simulation of the gate on i.i.d. scores, 16 nodes of 8 experts, top-8,
/// M = 4: 3.99 nodes); the probabilities are scaled to M in all, keeping
/// their proportions. The limit binds only below k: a token's k experts
/// lie on at most k nodes anyway, and with M >= k the nodes kept hold its
/// top k (up to the group score).
static double nodeLimitScale(double nodesReached, int64_t k, int64_t nodes,
                             std::optional<int64_t> maxNodes) {
  if (!maxNodes || *maxNodes >= std::min(k, nodes) ||
      nodesReached <= double(*maxNodes))
    return 1;
  return double(*maxNodes) / nodesReached;
}

/// Time of `bytes` over a link of `gbps` GB/s, in microseconds.
static double transferUs(double bytes, double gbps) {
  return bytes / (gbps * 1e3);
}

namespace {
/// Collects a stage's busiest link per level and direction.
class StageBuilder {
public:
  StageBuilder(const Topology &topology, StringRef name) : topology(topology) {
    stage.name = name.str();
    for (size_t level = 0; level < topology.levels.size(); ++level)
      for (bool up : {true, false}) {
        LinkLoad load;
        load.level = level;
        load.up = up;
        load.linkGBps = linkGBps(topology, level, up);
        stage.levels.push_back(load);
      }
  }

  /// Records `bytes` on link `subtree` of `level`, keeping the busiest.
  void addLoad(size_t level, bool up, int64_t subtree, double bytes) {
    LinkLoad &load = stage.levels[2 * level + (up ? 0 : 1)];
    if (bytes <= load.bytes)
      return;
    load.bytes = bytes;
    load.subtree = subtree;
    load.microseconds = transferUs(bytes, load.linkGBps);
  }

  /// Sets the messages and latency of the busiest sender.
  void setLatency(int64_t messages, double latencyUs) {
    stage.messages = messages;
    stage.latencyUs = latencyUs;
  }

  StageCost finish() {
    stage.bottleneck =
        *std::max_element(stage.levels.begin(), stage.levels.end(),
                          [](const LinkLoad &a, const LinkLoad &b) {
                            return a.microseconds < b.microseconds;
                          });
    stage.bandwidthUs = stage.bottleneck.microseconds;
    return stage;
  }

private:
  const Topology &topology;
  StageCost stage;
};
} // namespace

/// The latency of an exchange in which a sender posts `messages[l]` messages
/// over level l: they are issued at once, so their wire latencies overlap
/// and the exchange pays the start-up of the farthest level it reaches once,
/// plus the sender's overhead for every message (docs/cost-model.md,
/// "Latency").
static double exchangeLatencyUs(const Topology &topology,
                                ArrayRef<double> messages) {
  double startup = 0, overhead = 0;
  for (auto [level, count] : enumerate(messages)) {
    if (count <= 0)
      continue;
    startup = std::max(startup, topology.levels[level].latencyUs);
    overhead += count * topology.levels[level].perMessageUs;
  }
  return startup + overhead;
}

//===----------------------------------------------------------------------===//
// Closed form (symmetric patterns)
//===----------------------------------------------------------------------===//

namespace {
/// The quantities of docs/cost-model.md for one symmetric pattern.
class SymmetricModel {
public:
  SymmetricModel(const Topology &topology, const Pattern &pattern,
                 const Workload &workload)
      : topology(topology), pattern(pattern), workload(workload),
        levels(topology.levels.size()), ranksPerNode(topology.levels[0].fanout),
        nodes(topology.numNodes()) {
    // The nodes a token reaches: its own, and those at each distance.
    double own = pattern.shares[0] + count(0) * pattern.shares[1];
    double reached = touchProbability(own, workload.topK);
    for (size_t level = 1; level < levels; ++level)
      reached += nodesAt(level) *
                 touchProbability(shareOfNodeAt(level), workload.topK);
    limitScale =
        nodeLimitScale(reached, workload.topK, nodes, pattern.maxNodesPerToken);
  }

  /// Fraction of a rank's assignments that leave its level-(l-1) subtree.
  double tail(size_t level) const {
    double sum = 0;
    for (size_t m = level; m < levels; ++m)
      sum += count(m) * pattern.shares[m + 1];
    return sum;
  }

  /// Ranks at distance `level` from a rank.
  double count(size_t level) const {
    return static_cast<double>(ranksAtDistance(topology, int(level)));
  }

  /// Nodes at distance `level` >= 1 from a rank's node.
  double nodesAt(size_t level) const {
    return count(level) / static_cast<double>(ranksPerNode);
  }

  /// Distinct tokens a rank sends to one node at distance `level` >= 1.
  double uniqueTokensTo(size_t level) const {
    return static_cast<double>(workload.tokensPerRank) * limitScale *
           touchProbability(shareOfNodeAt(level), workload.topK);
  }

  /// The share of a rank's assignments that goes to one node at distance
  /// `level` >= 1.
  double shareOfNodeAt(size_t level) const {
    return static_cast<double>(ranksPerNode) * pattern.shares[level + 1];
  }

  /// Bytes a level-l link carries when every rank sends `perRank(m)` bytes
  /// to each node (or rank) at distance m.
  double subtreeBytes(size_t level, double outgoingPerRank) const {
    return static_cast<double>(subtreeRanks(topology, int(level) - 1)) *
           outgoingPerRank;
  }

  StageCost flat() const {
    StageBuilder stage(topology, "flat");
    double bytes = workload.assignmentsPerRank() * workload.rowBytes();
    for (size_t level = 0; level < levels; ++level)
      addBoth(stage, level, subtreeBytes(level, bytes * tail(level)));
    latency(stage, 0, [&](size_t m) { return count(m); });
    return stage.finish();
  }

  /// The intra-node stage of both hierarchical schedules. Hierarchical:
  /// rank (n, a) hands (n, b) the rows for every rank (m, b), b != a.
  /// De-duplicated: relay (m, a) forwards what it received for (m, b), b != a,
  /// and sends its own rows for its node. Both move, per rank, everything
  /// but its own rows and the remote rows of its own index.
  StageCost intraNode(StringRef name) const {
    StageBuilder stage(topology, name);
    double remote = tail(1);
    double perPeer = pattern.shares[1] + remote / double(ranksPerNode);
    double bytes = workload.assignmentsPerRank() * workload.rowBytes() *
                   (1 - pattern.shares[0] - remote / double(ranksPerNode));
    addBoth(stage, 0, bytes);
    intraLatency(stage, perPeer);
    return stage.finish();
  }

  /// Inter-node stage: (n, b) sends node n's rows for (m, b) to (m, b).
  StageCost hierarchicalInter() const {
    StageBuilder stage(topology, "inter-node");
    double bytes = workload.assignmentsPerRank() * workload.rowBytes();
    addBoth(stage, 0, bytes * tail(1));
    for (size_t level = 1; level < levels; ++level)
      addBoth(stage, level, subtreeBytes(level, bytes * tail(level)));
    latency(stage, 1, [&](size_t m) { return nodesAt(m); });
    return stage.finish();
  }

  /// De-duplicated inter-node stage: (n, a) sends each token once to
  /// (m, a) for every node m it has an expert on.
  StageCost dedupInter() const {
    StageBuilder stage(topology, "inter-node (dedup)");
    auto outgoing = [&](size_t from) {
      double rows = 0;
      for (size_t m = from; m < levels; ++m)
        rows += nodesAt(m) * uniqueTokensTo(m);
      return rows * (workload.rowBytes() + workload.routeBytes());
    };
    addBoth(stage, 0, outgoing(1));
    for (size_t level = 1; level < levels; ++level)
      addBoth(stage, level, subtreeBytes(level, outgoing(level)));
    latency(stage, 1, [&](size_t m) { return nodesAt(m); });
    return stage.finish();
  }

private:
  /// Symmetric patterns load a link equally in both directions.
  static void addBoth(StageBuilder &stage, size_t level, double bytes) {
    stage.addLoad(level, /*up=*/true, 0, bytes);
    stage.addLoad(level, /*up=*/false, 0, bytes);
  }

  /// A sender posts `destinations(m)` messages at distance m >= `from` when
  /// the pattern sends anything there.
  template <typename Destinations>
  void latency(StageBuilder &stage, size_t from,
               Destinations destinations) const {
    std::vector<double> messages(levels, 0);
    for (size_t m = from; m < levels; ++m)
      if (pattern.shares[m + 1] > 0)
        messages[m] = destinations(m);
    stage.setLatency(std::llround(std::accumulate(messages.begin(),
                                                  messages.end(), 0.0)),
                     exchangeLatencyUs(topology, messages));
  }

  void intraLatency(StageBuilder &stage, double perPeer) const {
    if (perPeer <= 0 || ranksPerNode < 2)
      return;
    std::vector<double> messages(levels, 0);
    messages[0] = double(ranksPerNode - 1);
    stage.setLatency(ranksPerNode - 1, exchangeLatencyUs(topology, messages));
  }

  const Topology &topology;
  const Pattern &pattern;
  const Workload &workload;
  size_t levels;
  int64_t ranksPerNode;
  int64_t nodes;
  /// nodeLimitScale for this pattern's tokens.
  double limitScale = 1;
};
} // namespace

Cost tamoe::planner::evaluate(const Topology &topology, const Pattern &pattern,
                              const Workload &workload, Schedule schedule) {
  SymmetricModel model(topology, pattern, workload);
  Cost cost;
  cost.schedule = schedule;
  if (schedule == Schedule::Flat || topology.levels.size() < 2) {
    cost.stages.push_back(model.flat());
    return cost;
  }
  if (schedule == Schedule::Hierarchical) {
    cost.stages.push_back(model.intraNode("intra-node"));
    cost.stages.push_back(model.hierarchicalInter());
  } else {
    cost.stages.push_back(model.dedupInter());
    cost.stages.push_back(model.intraNode("intra-node scatter"));
  }
  return cost;
}

//===----------------------------------------------------------------------===//
// Explicit traffic
//===----------------------------------------------------------------------===//

Traffic tamoe::planner::expectedTraffic(const Topology &topology,
                                        const Pattern &pattern,
                                        const Workload &workload) {
  Traffic traffic;
  traffic.ranks = topology.numRanks();
  int64_t ranksPerNode = topology.levels[0].fanout;
  traffic.nodes = traffic.ranks / ranksPerNode;
  traffic.assignments.resize(traffic.ranks * traffic.ranks);
  traffic.uniqueTokens.resize(traffic.ranks * traffic.nodes);
  for (int64_t i = 0; i < traffic.ranks; ++i)
    for (int64_t j = 0; j < traffic.ranks; ++j) {
      double share = pattern.at(topology, i, j);
      traffic.assignments[i * traffic.ranks + j] =
          workload.assignmentsPerRank() * share;
      // Accumulate q, the share of node j / ranksPerNode, then convert.
      traffic.uniqueTokens[i * traffic.nodes + j / ranksPerNode] += share;
    }
  for (int64_t i = 0; i < traffic.ranks; ++i) {
    double *row = &traffic.uniqueTokens[i * traffic.nodes];
    double reached = 0;
    for (int64_t node = 0; node < traffic.nodes; ++node)
      reached += row[node] = touchProbability(row[node], workload.topK);
    double scale = nodeLimitScale(reached, workload.topK, traffic.nodes,
                                  pattern.maxNodesPerToken);
    for (int64_t node = 0; node < traffic.nodes; ++node)
      row[node] *= double(workload.tokensPerRank) * scale;
  }
  return traffic;
}

namespace {
/// Routes messages over the tree and accumulates every link's load.
class Router {
public:
  Router(const Topology &topology, StringRef name)
      : topology(topology), name(name.str()), ranks(topology.numRanks()),
        messages(ranks, std::vector<double>(topology.levels.size(), 0)),
        withinNode(ranks, 0), acrossNodes(ranks, 0) {
    for (size_t level = 0; level < topology.levels.size(); ++level) {
      int64_t links = ranks / subtreeRanks(topology, int(level) - 1);
      up.emplace_back(links, 0);
      down.emplace_back(links, 0);
    }
  }

  void send(int64_t from, int64_t to, double bytes) {
    if (bytes <= 0 || from == to)
      return;
    int lca = topology.lowestCommonLevel(from, to);
    for (int level = 0; level <= lca; ++level) {
      int64_t below = subtreeRanks(topology, level - 1);
      up[level][from / below] += bytes;
      down[level][to / below] += bytes;
    }
    messages[from][lca] += 1;
    (lca == 0 ? withinNode : acrossNodes)[from] += bytes;
  }

  StageCost finish() const {
    StageBuilder stage(topology, name);
    for (size_t level = 0; level < up.size(); ++level)
      for (size_t link = 0; link < up[level].size(); ++link) {
        stage.addLoad(level, true, int64_t(link), up[level][link]);
        stage.addLoad(level, false, int64_t(link), down[level][link]);
      }
    // The sender whose messages take longest sets the stage's latency.
    double slowest = -1;
    int64_t posted = 0;
    for (const std::vector<double> &sent : messages) {
      double us = exchangeLatencyUs(topology, sent);
      if (us > slowest) {
        slowest = us;
        posted = std::llround(std::accumulate(sent.begin(), sent.end(), 0.0));
      }
    }
    stage.setLatency(posted, slowest);
    StageCost cost = stage.finish();
    cost.sentWithinNode = withinNode;
    cost.sentAcrossNodes = acrossNodes;
    return cost;
  }

private:
  const Topology &topology;
  std::string name;
  int64_t ranks;
  std::vector<std::vector<double>> up, down;
  /// Messages each sender posts over each level.
  std::vector<std::vector<double>> messages;
  /// Bytes each sender sends inside its node and out of it.
  std::vector<double> withinNode, acrossNodes;
};
} // namespace

Cost tamoe::planner::evaluate(const Topology &topology, const Traffic &traffic,
                              const Workload &workload, Schedule schedule) {
  const int64_t ranks = traffic.ranks;
  const int64_t ranksPerNode = topology.levels[0].fanout;
  const int64_t nodes = traffic.nodes;
  const double rowBytes = workload.rowBytes();
  auto rows = [&](int64_t i, int64_t j) {
    return traffic.assignments[i * ranks + j];
  };
  auto rank = [&](int64_t node, int64_t index) {
    return node * ranksPerNode + index;
  };
  Cost cost;
  cost.schedule = schedule;
  if (schedule == Schedule::Flat || topology.levels.size() < 2) {
    Router flat(topology, "flat");
    for (int64_t i = 0; i < ranks; ++i)
      for (int64_t j = 0; j < ranks; ++j)
        flat.send(i, j, rows(i, j) * rowBytes);
    cost.stages.push_back(flat.finish());
    return cost;
  }
  if (schedule == Schedule::Hierarchical) {
    Router intra(topology, "intra-node"), inter(topology, "inter-node");
    for (int64_t n = 0; n < nodes; ++n)
      for (int64_t a = 0; a < ranksPerNode; ++a)
        for (int64_t b = 0; b < ranksPerNode; ++b) {
          // Stage 1: (n, a) hands (n, b) every row bound for index b.
          double toIndex = 0;
          for (int64_t m = 0; m < nodes; ++m)
            toIndex += rows(rank(n, a), rank(m, b));
          intra.send(rank(n, a), rank(n, b), toIndex * rowBytes);
        }
    for (int64_t n = 0; n < nodes; ++n)
      for (int64_t b = 0; b < ranksPerNode; ++b)
        for (int64_t m = 0; m < nodes; ++m) {
          if (m == n)
            continue;
          // Stage 2: (n, b) forwards node n's rows for (m, b).
          double fromNode = 0;
          for (int64_t a = 0; a < ranksPerNode; ++a)
            fromNode += rows(rank(n, a), rank(m, b));
          inter.send(rank(n, b), rank(m, b), fromNode * rowBytes);
        }
    cost.stages.push_back(intra.finish());
    cost.stages.push_back(inter.finish());
    return cost;
  }
  Router inter(topology, "inter-node (dedup)"),
      scatter(topology, "intra-node scatter");
  for (int64_t n = 0; n < nodes; ++n)
    for (int64_t a = 0; a < ranksPerNode; ++a)
      for (int64_t m = 0; m < nodes; ++m)
        if (m != n)
          inter.send(rank(n, a), rank(m, a),
                     traffic.uniqueTokens[rank(n, a) * nodes + m] *
                         (rowBytes + workload.routeBytes()));
  for (int64_t m = 0; m < nodes; ++m)
    for (int64_t a = 0; a < ranksPerNode; ++a)
      for (int64_t b = 0; b < ranksPerNode; ++b) {
        // (m, a) delivers what index a of every node sent to (m, b).
        double delivered = 0;
        for (int64_t n = 0; n < nodes; ++n)
          delivered += rows(rank(n, a), rank(m, b));
        scatter.send(rank(m, a), rank(m, b), delivered * rowBytes);
      }
  cost.stages.push_back(inter.finish());
  cost.stages.push_back(scatter.finish());
  return cost;
}
