//===- Policies.cpp - Target dispatch patterns ----------------------------===//

#include "tamoe/Planner/Policies.h"

#include "tamoe/Support/Messages.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>

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
/// tau is reachable iff the least divergence with every T_l <= tau g_l is
/// within the budget. That inner problem is an information projection onto
/// nested caps; its solution is q scaled by a constant on each run of
/// distances between caps that bind, so it is the best of the 2^levels
/// choices of binding caps that respect every cap.
namespace {
class DivergenceBudgetSolver {
public:
  explicit DivergenceBudgetSolver(const Topology &topology)
      : uniform(destinationCounts(topology)) {
    double ranks = double(topology.numRanks());
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

  /// The least divergence from uniform with every tail T_l <= tau g_l.
  std::optional<Candidate> leastDivergence(double tau) const {
    size_t levels = rankGBps.size();
    // T_l <= T_j for j < l, so a cap also bounds every tail further out.
    std::vector<double> caps(levels);
    for (size_t level = 0; level < levels; ++level)
      caps[level] = std::min({1.0, tau * rankGBps[level],
                              level ? caps[level - 1] : 1.0});
    std::optional<Candidate> best;
    for (uint64_t binding = 0; binding < (uint64_t(1) << levels); ++binding) {
      std::vector<double> masses(uniform.size(), 0);
      // Distances [first, level] share what lies between two binding caps.
      size_t first = 0;
      double outside = 1; // mass at distances >= first
      bool feasible = true;
      for (size_t level = 0; level <= levels && feasible; ++level) {
        bool cut = level < levels && (binding >> level & 1);
        if (!cut && level < levels)
          continue;
        double beyond = level < levels ? caps[level] : 0;
        feasible = spread(masses, first, level, outside - beyond);
        first = level + 1;
        outside = beyond;
      }
      if (!feasible)
        continue;
      for (size_t level = 0; level < levels && feasible; ++level)
        feasible = tail(masses, level) <= caps[level] * (1 + 1e-12) + 1e-300;
      if (!feasible)
        continue;
      double value = divergence(masses);
      if (!best || value < best->divergence)
        best = Candidate{masses, value};
    }
    return best;
  }

  /// Spreads `mass` over distances [first, last] in proportion to uniform
  /// routing; false when they have no destinations to take it.
  bool spread(std::vector<double> &masses, size_t first, size_t last,
              double mass) const {
    double reference = 0;
    for (size_t distance = first; distance <= last; ++distance)
      reference += uniform[distance];
    if (reference == 0)
      return mass <= 0;
    for (size_t distance = first; distance <= last; ++distance)
      masses[distance] = std::max(0.0, mass) * uniform[distance] / reference;
    return mass >= -1e-15;
  }

  std::vector<double> uniform;
  std::vector<double> rankGBps;
};
} // namespace

static Pattern optimalPattern(const Topology &topology,
                              const PolicyOptions &options) {
  double budget = options.klBudget
                      ? *options.klBudget
                      : deviation(topology, bandwidthProportional(topology)).kl;
  std::vector<double> masses =
      DivergenceBudgetSolver(topology).solve(budget);
  std::vector<double> counts = destinationCounts(topology);
  Pattern pattern{std::vector<double>(masses.size(), 0), std::nullopt};
  for (size_t distance = 0; distance < masses.size(); ++distance)
    pattern.shares[distance] =
        counts[distance] ? masses[distance] / counts[distance]
                         : 1.0 / double(topology.numRanks());
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

Expected<Pattern> tamoe::planner::makePattern(const Topology &topology,
                                              Policy policy,
                                              const PolicyOptions &options) {
  if (Error error = tamoe::topology::verify(topology))
    return std::move(error);
  if (Error error = verify(options))
    return std::move(error);
  switch (policy) {
  case Policy::Uniform:
    return uniformPattern(topology);
  case Policy::TAMoE:
    return bandwidthProportional(topology);
  case Policy::Optimal:
    return optimalPattern(topology, options);
  case Policy::Box:
    return boxPattern(topology, options);
  case Policy::FasterMoE:
    return crossNodeCapped(topology, options.crossNodeCap);
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
  if (!(tokens > 0) || !std::isfinite(tokens))
    return std::nullopt;
  return tokens;
}
