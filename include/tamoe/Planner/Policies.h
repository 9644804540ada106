//===- Policies.h - Target dispatch patterns --------------------*- C++ -*-===//
//
// The dispatch policies that tamoe compares: each turns a topology into a
// target pattern p̂ (see CostModel.h), and `makePlan` adds the pattern's
// deviation from uniform and its predicted time under every schedule.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_PLANNER_POLICIES_H
#define TAMOE_PLANNER_POLICIES_H

#include "tamoe/Planner/CostModel.h"

namespace tamoe::planner {

enum class Policy {
  /// 1/P everywhere: what GShard / DeepSpeed-MoE balancing drives toward.
  Uniform,
  /// TA-MoE's approximate pattern: shares proportional to the bandwidth a
  /// sender has toward each destination's level.
  TAMoE,
  /// Least predicted flat all-to-all time among the patterns whose KL
  /// divergence from uniform routing is at most a budget (by default the
  /// `tamoe` pattern's own), solved exactly on the tree.
  Optimal,
  /// Least predicted flat all-to-all time within the box of shares
  /// rho / P <= p̂ <= beta / P, solved exactly on the tree.
  Box,
  /// FasterMoE's hir gate: at most `crossNodeCap` of the assignments leave
  /// the node.
  FasterMoE,
  /// DeepSeek-V3: each token reaches at most `maxNodes` nodes.
  NodeLimited,
};

llvm::StringRef stringifyPolicy(Policy policy);
std::optional<Policy> parsePolicy(llvm::StringRef text);
/// Every policy, in the order reports list them.
llvm::ArrayRef<Policy> allPolicies();

/// Where a layer's experts are: E experts, E / P on every rank, each token
/// picking k of them. A token can send at most min(k, E / P) of its k
/// assignments to one rank, so no destination's share can exceed
/// min(k, E / P) / k, whatever the router learns.
struct ExpertPlacement {
  int64_t experts = 0;
  int64_t topK = 0;
};

struct PolicyOptions {
  /// Every destination keeps at least rho of its uniform share (box).
  double rho = 0.25;
  /// No destination gets more than beta times its uniform share (box).
  double beta = 4.0;
  /// Largest fraction of assignments leaving the node (fastermoe).
  double crossNodeCap = 0.14;
  /// Nodes a token may reach (node-limited).
  int64_t maxNodes = 4;
  /// Largest KL(p̂ || uniform) the optimal pattern may take; unset: the KL
  /// of the `tamoe` pattern on the same topology.
  std::optional<double> klBudget;
  /// When given, every policy's shares are capped at what routing can
  /// realise with these experts.
  std::optional<ExpertPlacement> placement;
};

/// Checks the options ("rho: expected a number in [0, 1], got 1.5").
llvm::Error verify(const PolicyOptions &options);

/// The largest share one rank can receive under a placement on a topology,
/// or an error when the experts do not spread evenly over its ranks.
llvm::Expected<double> largestRealisableShare(const Topology &topology,
                                              const ExpertPlacement &placement);

/// The target pattern of a policy on a topology (capped by
/// `options.placement` when given).
llvm::Expected<Pattern> makePattern(const Topology &topology, Policy policy,
                                    const PolicyOptions &options);

/// How far a pattern is from uniform: KL divergence sum_j p_j ln(P p_j),
/// and the smallest and largest ratio P * p_j.
struct Deviation {
  double kl = 0;
  double minRatio = 1;
  double maxRatio = 1;
};
Deviation deviation(const Topology &topology, const Pattern &pattern);

/// Options that give the optimal and box patterns the freedom another
/// pattern uses: its KL as the budget, its smallest and largest ratio as rho
/// and beta.
PolicyOptions sameFreedomAs(const Deviation &deviation, PolicyOptions base);

/// Whether a time is shorter than another by more than rounding; ties go to
/// the simpler (flat) schedule.
inline bool fasterThan(double us, double otherUs) {
  return us < otherUs * (1 - 1e-9);
}

struct Plan {
  Policy policy = Policy::Uniform;
  Pattern pattern;
  Deviation deviation;
  Cost flat, hierarchical, dedup;
  /// The schedule with the least predicted time.
  Schedule best = Schedule::Flat;
  const Cost &cost(Schedule schedule) const;
};

llvm::Expected<Plan> makePlan(const Topology &topology, Policy policy,
                              const PolicyOptions &options,
                              const Workload &workload);

/// The fastest of `schedules` (which include the flat one) for a plan; ties
/// go to the earlier, simpler schedule.
Schedule fastest(const Plan &plan, llvm::ArrayRef<Schedule> schedules);

/// The predicted speed-up of `plan` over uniform routing: the time of the
/// `uniform` plan under its fastest schedule among `schedules`, divided by
/// that of `plan` under its fastest among the same. 1 when neither moves a
/// byte (a single rank); std::nullopt when only uniform routing does (the
/// speed-up has no bound). Every report and remark prints this definition,
/// with formatSpeedup.
std::optional<double> speedupOverUniform(const Plan &plan, const Plan &uniform,
                                         llvm::ArrayRef<Schedule> schedules);

/// "3.09x", or "unbounded" for std::nullopt.
std::string formatSpeedup(std::optional<double> speedup);

/// Tokens per rank at which `schedule` and the flat one take equal time
/// (both are affine in the tokens per rank for a fixed pattern); std::nullopt
/// when one is faster at every size of at least one token per rank.
/// `schedule` is faster below it when its fixed (latency) part is smaller.
std::optional<double> crossoverTokens(const Topology &topology,
                                      const Pattern &pattern,
                                      const Workload &workload,
                                      Schedule schedule);

} // namespace tamoe::planner

#endif // TAMOE_PLANNER_POLICIES_H
