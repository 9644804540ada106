//===- Policies.cpp - Target dispatch patterns ----------------------------===//

#include "tamoe/Planner/Policies.h"

#include "tamoe/Support/Messages.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>
#include <numeric>

using namespace llvm;
using namespace tamoe::planner;
using tamoe::fieldError;

StringRef tamoe::planner::stringifyPolicy(Policy policy) {
  switch (policy) {
  case Policy::Uniform:
    return "uniform";
  case Policy::TAMoE:
    return "tamoe";
  case Policy::Optimal:
    return "optimal";
  case Policy::Box:
    return "box";
  case Policy::FasterMoE:
    return "fastermoe";
  case Policy::NodeLimited:
    return "node-limited";
  }
  llvm_unreachable("unknown policy");
}

ArrayRef<Policy> tamoe::planner::allPolicies() {
  static const Policy policies[] = {Policy::Uniform, Policy::TAMoE,
                                    Policy::Optimal, Policy::Box,
                                    Policy::FasterMoE, Policy::NodeLimited};
  return policies;
}

std::optional<Policy> tamoe::planner::parsePolicy(StringRef text) {
  for (Policy policy : allPolicies())
    if (stringifyPolicy(policy) == text)
      return policy;
  return std::nullopt;
}

Error tamoe::planner::verify(const PolicyOptions &options) {
  if (!(options.rho >= 0 && options.rho <= 1))
    return fieldError("rho", "expected a number in [0, 1], got " +
                                 tamoe::formatNumber(options.rho));
  if (!(options.beta >= 1) || !std::isfinite(options.beta))
    return fieldError("beta", "expected a finite number >= 1, got " +
                                  tamoe::formatNumber(options.beta));
  if (!(options.crossNodeCap >= 0 && options.crossNodeCap <= 1))
    return fieldError("cross-node-cap",
                      "expected a number in [0, 1], got " +
                          tamoe::formatNumber(options.crossNodeCap));
  if (options.klBudget &&
      !(*options.klBudget >= 0 && std::isfinite(*options.klBudget)))
    return fieldError("kl-budget", "expected a finite number >= 0, got " +
                                       tamoe::formatNumber(*options.klBudget));
  if (options.placement) {
    const ExpertPlacement &placement = *options.placement;
    if (placement.experts < 1)
      return fieldError("experts", formatv("expected >= 1, got {0}",
                                           placement.experts));
    if (placement.topK < 1 || placement.topK > placement.experts)
      return fieldError("topk",
                        formatv("expected 1 to the number of experts ({0}), "
                                "got {1}",
                                placement.experts, placement.topK));
  }
  if (options.maxNodes < 1)
    return fieldError("max-nodes",
                      formatv("expected >= 1, got {0}", options.maxNodes));
  return Error::success();
}

/// Destinations at each distance: [0] the sender, [l + 1] level l.
static std::vector<double> destinationCounts(const Topology &topology) {
  std::vector<double> counts;
  for (int level = -1; level < int(topology.levels.size()); ++level)
    counts.push_back(double(ranksAtDistance(topology, level)));
  return counts;
}

/// The bandwidth one rank has over a level's link: the whole bandwidth when
/// it is per rank, its part of it when the subtree below shares it.
static double perRankGBps(const Topology &topology, size_t level) {
  const tamoe::topology::Level &info = topology.levels[level];
  double gbps = std::min(info.upBandwidthGBps, info.downBandwidthGBps);
  if (info.sharing == tamoe::topology::LinkSharing::PerRank || level == 0)
    return gbps;
  return gbps / double(topology.ranksPerSubtree(level - 1));
}

static Pattern uniformPattern(const Topology &topology) {
  return Pattern{std::vector<double>(topology.levels.size() + 1,
                                     1.0 / double(topology.numRanks())),
                 std::nullopt};
}

/// Share of each destination proportional to the slowest link on the path
/// to it; the sender counts as a destination of the innermost level.
static Pattern bandwidthProportional(const Topology &topology) {
  std::vector<double> weights{perRankGBps(topology, 0)};
  for (size_t level = 0; level < topology.levels.size(); ++level)
    weights.push_back(std::min(level == 0 ? weights[0] : weights.back(),
                               perRankGBps(topology, level)));
  std::vector<double> counts = destinationCounts(topology);
  double total = 0;
  for (auto [weight, count] : zip(weights, counts))
    total += weight * count;
  for (double &weight : weights)
    weight /= total;
  return Pattern{weights, std::nullopt};
}

/// Every destination starts at rho / P; the rest of the row goes to the
/// nearest destinations first, each up to beta / P. Moving a share inward
/// lowers the traffic on every link it no longer crosses and raises none, so
/// this fill minimises every link's load at once, hence the flat time
/// (docs/cost-model.md).
static Pattern boxPattern(const Topology &topology,
                              const PolicyOptions &options) {
  double ranks = double(topology.numRanks());
  double lower = options.rho / ranks, upper = options.beta / ranks;
  std::vector<double> counts = destinationCounts(topology);
  std::vector<double> shares(counts.size(), lower);
  double remaining = 1 - lower * ranks;
  for (auto [share, count] : zip(shares, counts)) {
    // A level of fanout 1 adds no destinations.
    if (count == 0)
      continue;
    double extra = std::min(remaining / count, upper - lower);
    share += extra;
    remaining -= extra * count;
  }
  return Pattern{shares, std::nullopt};
}


/// The KL-budgeted optimal pattern (docs/cost-model.md, "The optimal
/// policy"). A symmetric pattern is fixed by the mass m_d it sends to each
/// distance d (the sender is d = 0, level l is d = l + 1); uniform routing
/// sends q_d = n_d / P. The flat schedule's time is max_l T_l / g_l, where
/// T_l = sum_{d > l} m_d is the share of a rank's assignments that leaves
/// its level-l subtree and g_l the bandwidth one rank has there, and the
/// freedom it takes is KL(m || q). Both are convex in m, so the least time
/// under KL(m || q) <= budget is found exactly by bisection on the time tau:
/// tau is reachable iff the least divergence with every T_l <= tau g_l (and
/// every m_d <= u_d, what the experts let routing realise) is within the
/// budget. That inner problem is an information projection onto nested caps
/// and a box, solved exactly by `leastDivergence`.
namespace {
class DivergenceBudgetSolver {
public:
  /// `largestShare` bounds every destination's share (1: no bound).
  DivergenceBudgetSolver(const Topology &topology, double largestShare)
      : uniform(destinationCounts(topology)) {
    double ranks = double(topology.numRanks());
    for (double count : uniform)
      massCaps.push_back(count * largestShare);
    for (double &mass : uniform)
      mass /= ranks;
    for (size_t level = 0; level < topology.levels.size(); ++level)
      rankGBps.push_back(perRankGBps(topology, level));
  }

  /// Masses per distance with the least flat time within `budget`.
  std::vector<double> solve(double budget) const {
    double slowest = 0;
    for (size_t level = 0; level < rankGBps.size(); ++level)
      slowest = std::max(slowest, tail(uniform, level) / rankGBps[level]);
    double low = 0, high = slowest;
    // Uniform routing meets every cap (largestShare * P >= 1).
    std::vector<double> best = uniform;
    if (std::optional<Candidate> all = leastDivergence(0);
        all && all->divergence <= budget)
      return all->masses;
    // 200 halvings take any double interval down to adjacent values.
    for (int step = 0; step < 200 && low < high; ++step) {
      double middle = low + (high - low) / 2;
      if (middle <= low || middle >= high)
        break;
      std::optional<Candidate> candidate = leastDivergence(middle);
      if (candidate && candidate->divergence <= budget) {
        high = middle;
        best = candidate->masses;
      } else {
        low = middle;
      }
    }
    return best;
  }

  /// Share of the assignments beyond the level-`level` subtree.
  static double tail(const std::vector<double> &masses, size_t level) {
    double sum = 0;
    for (size_t distance = level + 1; distance < masses.size(); ++distance)
      sum += masses[distance];
    return sum;
  }

  /// KL(masses || q), with 0 ln 0 = 0.
  double divergence(const std::vector<double> &masses) const {
    double sum = 0;
    for (auto [mass, reference] : zip(masses, uniform))
      if (mass > 0)
        sum += mass * std::log(mass / reference);
    return sum;
  }

private:
  struct Candidate {
    std::vector<double> masses;
    double divergence;
  };

  /// The least divergence from uniform with every tail T_l <= tau g_l and
  /// every mass m_d <= u_d; nullopt when no pattern meets them.
  ///
  /// At the optimum m_d = min(u_d, s_d q_d), where the scale s_d does not
  /// grow with d and changes only where a tail cap binds (the KKT
  /// conditions). So the outermost run of distances shares the smallest
  /// scale any tail cap allows: for every boundary b the scale at which the
  /// distances beyond b fill their cap, and the least of them wins. Fixing
  /// that run and repeating inward solves the problem in O(levels^2) steps,
  /// however deep the tree (pool-adjacent-violators on a chain).
  std::optional<Candidate> leastDivergence(double tau) const {
    size_t levels = rankGBps.size();
    // T_l <= T_j for j < l, so a cap also bounds every tail further out.
    std::vector<double> caps(levels);
    for (size_t level = 0; level < levels; ++level)
      caps[level] = std::min({1.0, tau * rankGBps[level],
                              level ? caps[level - 1] : 1.0});
    std::vector<double> masses(uniform.size(), 0);
    size_t end = uniform.size(); // distances [0, end) are still open
    double placed = 0;           // mass at distances >= end
    while (end > 0) {
      // Boundary b = -1 is the whole open range, which takes what is left.
      double bestScale = INFINITY;
      int64_t bestBoundary = -1;
      for (int64_t boundary = -1; boundary + 1 < int64_t(end); ++boundary) {
        double room = boundary < 0 ? 1 - placed : caps[boundary] - placed;
        double scale = fillScale(size_t(boundary + 1), end, room);
        if (scale < bestScale) {
          bestScale = scale;
          bestBoundary = boundary;
        }
      }
      size_t first = size_t(bestBoundary + 1);
      if (bestScale == INFINITY) {
        // Every open distance can be at its cap within the room left: the
        // row is short of 1 unless that exactly fills it.
        double atCaps = 0;
        for (size_t distance = 0; distance < end; ++distance)
          atCaps += masses[distance] = massCaps[distance];
        if (placed + atCaps < 1 - 1e-12)
          return std::nullopt;
        break;
      }
      for (size_t distance = first; distance < end; ++distance) {
        masses[distance] =
            std::min(massCaps[distance], bestScale * uniform[distance]);
        placed += masses[distance];
      }
      end = first;
    }
    // Rounding can leave the row a few ulps off 1; it must sum to 1.
    double total = std::accumulate(masses.begin(), masses.end(), 0.0);
    for (double &mass : masses)
      mass /= total;
    for (size_t level = 0; level < levels; ++level)
      if (tail(masses, level) > caps[level] * (1 + 1e-12) + 1e-300)
        return std::nullopt;
    return Candidate{masses, divergence(masses)};
  }

  /// The scale s at which sum over [first, end) of min(u_d, s q_d) equals
  /// `room`; infinite when every distance there fits at its cap.
  double fillScale(size_t first, size_t end, double room) const {
    room = std::max(room, 0.0);
    std::vector<size_t> byBreak;
    double capacity = 0;
    for (size_t distance = first; distance < end; ++distance) {
      capacity += massCaps[distance];
      if (uniform[distance] > 0)
        byBreak.push_back(distance);
    }
    if (capacity <= room)
      return INFINITY;
    // Distance d reaches its cap at s = u_d / q_d: walk those in order.
    llvm::sort(byBreak, [&](size_t a, size_t b) {
      return massCaps[a] / uniform[a] < massCaps[b] / uniform[b];
    });
    double clipped = 0, slope = 0;
    for (size_t distance : byBreak)
      slope += uniform[distance];
    for (size_t distance : byBreak) {
      double breakScale = massCaps[distance] / uniform[distance];
      if (clipped + breakScale * slope >= room)
        return (room - clipped) / slope;
      clipped += massCaps[distance];
      slope -= uniform[distance];
    }
    return INFINITY; // unreachable: capacity > room
  }

  std::vector<double> uniform;
  std::vector<double> massCaps;
  std::vector<double> rankGBps;
};
} // namespace

static Pattern optimalPattern(const Topology &topology, double budget,
                              double largestShare) {
  std::vector<double> masses =
      DivergenceBudgetSolver(topology, largestShare).solve(budget);
  std::vector<double> counts = destinationCounts(topology);
  Pattern pattern{std::vector<double>(masses.size(), 0), std::nullopt};
  for (size_t distance = 0; distance < masses.size(); ++distance)
    pattern.shares[distance] =
        counts[distance] ? masses[distance] / counts[distance]
                         : 1.0 / double(topology.numRanks());
  return pattern;
}

Expected<double>
tamoe::planner::largestRealisableShare(const Topology &topology,
                                       const ExpertPlacement &placement) {
  int64_t ranks = topology.numRanks();
  if (placement.experts % ranks != 0)
    return fieldError(
        "experts",
        formatv("{0} experts cannot be placed on {1} ranks: every rank holds "
                "E / P experts, so E must be a multiple of the ranks "
                "(replicate experts, or plan a smaller expert-parallel group)",
                placement.experts, ranks));
  int64_t perRank = placement.experts / ranks;
  return double(std::min(placement.topK, perRank)) / double(placement.topK);
}

/// Caps every destination's share at `cap` and moves what it takes off to
/// the next distance out: the least change that routing can realise, since
/// the outer distances have more destinations to take it. Feasible whenever
/// cap * P >= 1, which k <= E guarantees.
static Pattern capShares(const Topology &topology, Pattern pattern,
                         double cap) {
  std::vector<double> counts = destinationCounts(topology);
  double carried = 0; // mass moved out from nearer distances
  for (size_t distance = 0; distance < counts.size(); ++distance) {
    if (counts[distance] == 0)
      continue;
    double share = pattern.shares[distance] + carried / counts[distance];
    pattern.shares[distance] = std::min(share, cap);
    carried = (share - pattern.shares[distance]) * counts[distance];
  }
  // Rounding aside, nothing is left over: the outermost destinations can
  // take it (cap * P >= 1).
  return pattern;
}

/// FasterMoE caps the fraction of assignments that leave the node; inside
/// and outside it routing stays uniform.
static Pattern crossNodeCapped(const Topology &topology, double cap) {
  Pattern pattern = uniformPattern(topology);
  double ranks = double(topology.numRanks());
  double perNode = double(topology.levels[0].fanout);
  if (topology.levels.size() < 2 || (ranks - perNode) / ranks <= cap)
    return pattern;
  pattern.shares[0] = pattern.shares[1] = (1 - cap) / perNode;
  for (size_t index = 2; index < pattern.shares.size(); ++index)
    pattern.shares[index] = cap / (ranks - perNode);
  return pattern;
}

/// The pattern of a policy whose shares routing can realise when no
/// destination may take more than `largestShare`.
static Pattern patternFor(const Topology &topology, Policy policy,
                          const PolicyOptions &options, double largestShare) {
  switch (policy) {
  case Policy::Uniform:
    return uniformPattern(topology);
  case Policy::TAMoE:
    return capShares(topology, bandwidthProportional(topology), largestShare);
  case Policy::Optimal: {
    // Solved under the cap, so it stays the least time at its budget, and
    // by default it takes no more freedom than the (capped) tamoe pattern.
    double budget =
        options.klBudget
            ? *options.klBudget
            : deviation(topology, patternFor(topology, Policy::TAMoE, options,
                                             largestShare))
                  .kl;
    return optimalPattern(topology, budget, largestShare);
  }
  case Policy::Box:
    return capShares(topology, boxPattern(topology, options), largestShare);
  case Policy::FasterMoE:
    return capShares(topology, crossNodeCapped(topology, options.crossNodeCap),
                     largestShare);
  case Policy::NodeLimited: {
    // Affinity picks the nodes, so on average the pattern stays uniform; the
    // limit shows in how few nodes each token's copies reach.
    Pattern pattern = uniformPattern(topology);
    pattern.maxNodesPerToken = options.maxNodes;
    return pattern;
  }
  }
  llvm_unreachable("unknown policy");
}

Expected<Pattern> tamoe::planner::makePattern(const Topology &topology,
                                              Policy policy,
                                              const PolicyOptions &options) {
  if (Error error = tamoe::topology::verify(topology))
    return std::move(error);
  if (Error error = verify(options))
    return std::move(error);
  double largestShare = 1;
  if (options.placement) {
    Expected<double> cap =
        largestRealisableShare(topology, *options.placement);
    if (!cap)
      return cap.takeError();
    largestShare = *cap;
  }
  return patternFor(topology, policy, options, largestShare);
}

Deviation tamoe::planner::deviation(const Topology &topology,
                                    const Pattern &pattern) {
  double ranks = double(topology.numRanks());
  Deviation result{0, INFINITY, 0};
  for (auto [share, count] : zip(pattern.shares, destinationCounts(topology))) {
    if (count == 0)
      continue;
    double ratio = ranks * share;
    if (share > 0)
      result.kl += count * share * std::log(ratio);
    result.minRatio = std::min(result.minRatio, ratio);
    result.maxRatio = std::max(result.maxRatio, ratio);
  }
  // KL is never negative (Gibbs' inequality); a pattern equal to uniform up to
  // rounding sums to about -1e-18, which must read as 0, not as a budget no
  // pattern can meet.
  result.kl = std::max(result.kl, 0.0);
  return result;
}

PolicyOptions tamoe::planner::sameFreedomAs(const Deviation &deviation,
                                            PolicyOptions base) {
  base.klBudget = deviation.kl;
  base.rho = std::clamp(deviation.minRatio, 0.0, 1.0);
  base.beta = std::max(deviation.maxRatio, 1.0);
  return base;
}

const Cost &Plan::cost(Schedule schedule) const {
  switch (schedule) {
  case Schedule::Flat:
    return flat;
  case Schedule::Hierarchical:
    return hierarchical;
  case Schedule::HierarchicalDedup:
    return dedup;
  }
  llvm_unreachable("unknown schedule");
}

Expected<Plan> tamoe::planner::makePlan(const Topology &topology, Policy policy,
                                        const PolicyOptions &options,
                                        const Workload &workload) {
  if (Error error = verify(workload))
    return std::move(error);
  Expected<Pattern> pattern = makePattern(topology, policy, options);
  if (!pattern)
    return pattern.takeError();
  Plan plan;
  plan.policy = policy;
  plan.pattern = std::move(*pattern);
  plan.deviation = deviation(topology, plan.pattern);
  plan.flat = evaluate(topology, plan.pattern, workload, Schedule::Flat);
  plan.hierarchical =
      evaluate(topology, plan.pattern, workload, Schedule::Hierarchical);
  plan.dedup =
      evaluate(topology, plan.pattern, workload, Schedule::HierarchicalDedup);
  plan.best = fastest(plan, allSchedules());
  return plan;
}

Schedule tamoe::planner::fastest(const Plan &plan,
                                 ArrayRef<Schedule> schedules) {
  Schedule best = Schedule::Flat;
  for (Schedule schedule : schedules)
    if (fasterThan(plan.cost(schedule).totalUs(), plan.cost(best).totalUs()))
      best = schedule;
  return best;
}

std::optional<double>
tamoe::planner::speedupOverUniform(const Plan &plan, const Plan &uniform,
                                   ArrayRef<Schedule> schedules) {
  double us = plan.cost(fastest(plan, schedules)).totalUs();
  double uniformUs = uniform.cost(fastest(uniform, schedules)).totalUs();
  if (us > 0)
    return uniformUs / us;
  if (uniformUs > 0)
    return std::nullopt;
  return 1.0;
}

std::string tamoe::planner::formatSpeedup(std::optional<double> speedup) {
  return speedup ? tamoe::formatFixed(*speedup, 2) + "x" : "unbounded";
}

std::optional<double> tamoe::planner::crossoverTokens(const Topology &topology,
                                                      const Pattern &pattern,
                                                      const Workload &workload,
                                                      Schedule schedule) {
  // Both times are a + b * S: two evaluations give a and b exactly.
  auto line = [&](Schedule which) {
    Workload one = workload, two = workload;
    one.tokensPerRank = 1;
    two.tokensPerRank = 2;
    double t1 = evaluate(topology, pattern, one, which).totalUs();
    double t2 = evaluate(topology, pattern, two, which).totalUs();
    return std::pair<double, double>{t1 - (t2 - t1), t2 - t1};
  };
  auto [flatFixed, flatSlope] = line(Schedule::Flat);
  auto [fixed, slope] = line(schedule);
  if (slope == flatSlope)
    return std::nullopt;
  double tokens = (flatFixed - fixed) / (slope - flatSlope);
  // Below one token per rank the order is the same at every size there is
  // (and equal fixed parts leave rounding noise here, not a crossing).
  if (!(tokens >= 1) || !std::isfinite(tokens))
    return std::nullopt;
  return tokens;
}
