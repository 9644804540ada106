//===- PlanDispatch.cpp - Plan each layer's dispatch pattern --------------===//

#include "Layer.h"
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"
#include "tamoe/Support/Messages.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"

#include <algorithm>
#include <cmath>

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOEPLANDISPATCHPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;
namespace topo = ::tamoe::topology;

namespace {
/// The dispatches planned so far in one run, by the tamoe.gate that routes
/// them, with the plan the gate carries.
using GatePlans =
    llvm::DenseMap<Operation *, std::pair<DispatchOp, DispatchPlanAttr>>;

struct PlanDispatchPass
    : public mlir::tamoe::impl::TAMoEPlanDispatchPassBase<PlanDispatchPass> {
  using Base::Base;

  void runOnOperation() override;

private:
  /// The topology: from the `topology` file (recorded on the module) or the
  /// module's attribute.
  FailureOr<TopologyAttr> resolveTopology();
  LogicalResult plan(DispatchOp dispatch, const topo::Topology &tree,
                     planner::Policy policy,
                     const planner::PolicyOptions &options,
                     SymbolTableCollection &symbols, GatePlans &gatePlans);
  /// Node-limited routing is the gate's to do: its groups become the
  /// topology's nodes, of which each token keeps `maxNodes`.
  LogicalResult limitGateToNodes(DispatchOp dispatch,
                                 const topo::Topology &tree, int64_t maxNodes);
};
} // namespace

FailureOr<TopologyAttr> PlanDispatchPass::resolveTopology() {
  ModuleOp module = getOperation();
  if (topologyFile.empty()) {
    if (TopologyAttr attr = TopologyAttr::lookup(module))
      return attr;
    return module.emitError()
           << "tamoe-plan-dispatch: no topology: give the pass topology=FILE "
              "or the module a 'tamoe.topology' attribute";
  }
  llvm::Expected<topo::Topology> tree = topo::loadTopologyFile(topologyFile);
  if (!tree)
    return module.emitError()
           << "tamoe-plan-dispatch: " << llvm::toString(tree.takeError());
  auto attr = TopologyAttr::get(module.getContext(), *tree);
  module->setAttr(TAMoEDialect::getTopologyAttrName(), attr);
  return attr;
}

LogicalResult PlanDispatchPass::limitGateToNodes(DispatchOp dispatch,
                                                 const topo::Topology &tree,
                                                 int64_t maxNodes) {
  int64_t nodes = tree.numNodes();
  // A limit of every node limits nothing.
  int64_t kept = std::min(maxNodes, nodes);
  auto gate = dispatch.getExpertIds().getDefiningOp<GateOp>();
  if (!gate) {
    if (kept == nodes)
      return success();
    return dispatch.emitError()
           << "node-limited routing is the gate's, but this layer's expert "
              "ids do not come from a tamoe.gate";
  }
  // Its groups are the nodes only if its experts are the dispatch's, which
  // sit node by node (the caller checked that they divide over the ranks).
  int64_t experts = dispatch.getExpertCounts().getType().getDimSize(0);
  if (int64_t scored = gate.getLogits().getType().getDimSize(1);
      scored != experts) {
    InFlightDiagnostic error = gate.emitError() << "node-limited: the gate "
                                                   "scores ";
    if (ShapedType::isDynamic(scored))
      error << "a dynamic number of";
    else
      error << scored;
    return error << " experts but its dispatch has " << experts;
  }
  if (std::optional<uint64_t> groups = gate.getNumGroups()) {
    // Planned before, or grouped by its author: it must be this limit (or
    // none, keeping every group, when the limit is every node).
    int64_t keep = int64_t(*gate.getGroupsKept());
    if ((int64_t(*groups) == nodes && keep == kept) ||
        (kept == nodes && keep == int64_t(*groups)))
      return success();
    return gate.emitError()
           << "node-limited with max-nodes=" << maxNodes << " keeps " << kept
           << " of the " << nodes << " nodes of topology '" << tree.name
           << "', but the gate already keeps " << keep << " of its " << *groups
           << " groups";
  }
  if (kept == nodes)
    return success();
  int64_t k = int64_t(gate.getK());
  int64_t reachable = kept * (experts / nodes);
  if (k > reachable)
    return gate.emitError()
           << "node-limited with max-nodes=" << maxNodes << " leaves a token "
           << reachable << " experts (" << experts / nodes
           << " per node), fewer than its top " << k;
  OpBuilder builder(gate);
  gate.setNumGroupsAttr(builder.getI64IntegerAttr(nodes));
  gate.setGroupsKeptAttr(builder.getI64IntegerAttr(kept));
  return success();
}

/// The gate's plan is the pattern its router realises, so every dispatch of
/// its ids (a router shared by layers, a forward computed again) must have
/// been planned for the same one; it is recorded once, with the predicted
/// times of all of those exchanges added up. A gate planned in an earlier
/// run is planned afresh.
static LogicalResult recordOnGate(DispatchOp dispatch, DispatchPlanAttr plan,
                                  GatePlans &gatePlans) {
  auto gate = dispatch.getExpertIds().getDefiningOp<GateOp>();
  if (!gate)
    return success();
  auto [entry, first] = gatePlans.try_emplace(gate, dispatch, plan);
  if (first) {
    gate.setPlanAttr(plan);
    return success();
  }
  auto [earlier, recorded] = entry->second;
  if (failed(verifySharedRouter(gate, dispatch, plan, earlier, recorded)))
    return failure();
  // Tenths of a microsecond, as each prediction is.
  double total = std::round((recorded.getPredictedUs().convertToDouble() +
                             plan.getPredictedUs().convertToDouble()) *
                            10) /
                 10;
  auto summed = DispatchPlanAttr::get(
      dispatch.getContext(), recorded.getPolicy(), recorded.getShares(),
      recorded.getMatrix(), llvm::APFloat(total));
  entry->second.second = summed;
  gate.setPlanAttr(summed);
  return success();
}

LogicalResult PlanDispatchPass::plan(DispatchOp dispatch,
                                     const topo::Topology &tree,
                                     planner::Policy policy,
                                     const planner::PolicyOptions &options,
                                     SymbolTableCollection &symbols,
                                     GatePlans &gatePlans) {
  int64_t ranks = tree.numRanks();
  AllToAllOp exchange = findSendingAllToAll(dispatch);
  // A layer planned before whose exchange was since rewritten (hierarchical,
  // de-duplicated, chunked): the pipeline run again keeps its plan.
  if (!exchange && dispatch.getPlanAttr())
    return recordOnGate(dispatch, dispatch.getPlanAttr(), gatePlans);
  if (!exchange && llvm::any_of(dispatch.getDispatched().getUsers(),
                                llvm::IsaPred<ChunkOp>)) {
    // Cut by tamoe-overlap first: its parts' exchanges are not the layer's.
    const char *why = "its rows were cut into chunks (tamoe-overlap) before "
                      "it was planned; plan first, as --tamoe-pipeline does";
    if (policy == planner::Policy::NodeLimited)
      return dispatch.emitError()
             << "node-limited routing not applied: " << why;
    dispatch.emitRemark() << "not planned: " << why;
    return success();
  }
  if (!exchange) {
    // Every expert is on this rank (a local layer, or a teacher model):
    // no row crosses a link, so there is nothing to plan.
    dispatch.emitRemark() << "not planned: no tamoe.all_to_all sends its "
                             "rows, so its experts are local";
    return success();
  }
  std::optional<int64_t> group = groupSize(exchange, symbols);
  if (group && *group != ranks)
    return dispatch.emitError()
           << "expert-parallel group @" << exchange.getGrid() << " has "
           << *group << " ranks but topology '" << tree.name << "' has "
           << ranks;
  // The schedules the compiler can emit for this layer: flat, and
  // hierarchical unless tamoe-hierarchical-all-to-all must keep the
  // exchange that sends its rows flat (de-duplication is that pass's
  // choice, and its remark's). An exchange with a level is already a stage
  // of a hierarchical one.
  SmallVector<planner::Schedule, 2> schedules{planner::Schedule::Flat};
  std::optional<std::string> whyFlatOnly;
  shard::GridOp grid =
      shard::getGridOrNull(exchange, exchange.getGridAttr(), symbols);
  if (grid && !exchange.getLevel())
    whyFlatOnly = whyFlat(exchange, grid, tree, symbols);
  if (!whyFlatOnly)
    schedules.push_back(planner::Schedule::Hierarchical);
  int64_t experts = dispatch.getExpertCounts().getType().getDimSize(0);
  if (experts % ranks != 0)
    return dispatch.emitError() << experts << " experts do not divide evenly "
                                << "over the " << ranks
                                << " ranks of topology '" << tree.name << "'";
  RankedTensorType tokens = dispatch.getTokens().getType();
  int64_t k = dispatch.getExpertIds().getType().getDimSize(1);
  std::optional<int64_t> bytes = elementBytes(tokens.getElementType());
  if (!bytes)
    return dispatch.emitError()
           << "cannot size token rows of " << tokens.getElementType();
  if (policy == planner::Policy::NodeLimited &&
      failed(limitGateToNodes(dispatch, tree, options.maxNodes)))
    return failure();
  // The rows the exchange moves: all k * S assignments, or fewer when a
  // capacity caps them (the hierarchical rewrite sizes them the same way).
  // A size the program leaves dynamic is the cost model's default one
  // (4096 tokens of 4096, top-2): the pattern hardly depends on it, and the
  // remark says what the prediction is for.
  planner::Workload nominal;
  int64_t rows = dispatch.getDispatched().getType().getDimSize(0);
  int64_t hidden = tokens.getDimSize(1);
  bool dynamic = ShapedType::isDynamic(rows) || ShapedType::isDynamic(hidden);
  if (ShapedType::isDynamic(rows)) {
    int64_t numTokens = tokens.getDimSize(0);
    if (ShapedType::isDynamic(numTokens))
      numTokens = nominal.tokensPerRank;
    rows = numTokens * (ShapedType::isDynamic(k) ? nominal.topK : k);
    // A capacity caps them as it would the static rows.
    std::optional<int64_t> capacity =
        dispatch.getCapacity() || !ShapedType::isDynamic(k)
            ? dispatch.getCapacityFor(numTokens)
            : std::nullopt;
    if (capacity && *capacity >= 0)
      rows = std::min(rows, experts * *capacity);
  }
  if (ShapedType::isDynamic(hidden))
    hidden = nominal.hidden;
  planner::Workload workload{rows, hidden, *bytes, 1};
  // Shares no router can realise with these experts are capped.
  planner::PolicyOptions layerOptions = options;
  if (!ShapedType::isDynamic(k))
    layerOptions.placement = planner::ExpertPlacement{experts, k};
  llvm::Expected<planner::Plan> planned =
      planner::makePlan(tree, policy, layerOptions, workload);
  if (!planned)
    return dispatch.emitError() << llvm::toString(planned.takeError());
  // The same inputs just passed every check.
  planner::Plan uniform = llvm::cantFail(
      planner::makePlan(tree, planner::Policy::Uniform, options, workload));
  planner::Schedule schedule = planner::fastest(*planned, schedules);
  // Tenths of a microsecond are all a model of this kind can claim.
  double predicted = std::round(planned->cost(schedule).totalUs() * 10) / 10;
  double baseline =
      uniform.cost(planner::fastest(uniform, schedules)).totalUs();
  // Checked, so that the module is never left with a plan it cannot read
  // back.
  MLIRContext *context = dispatch.getContext();
  auto attr = DispatchPlanAttr::getChecked(
      [&] { return dispatch.emitError(); }, context, toPlanPolicy(policy),
      DenseF64ArrayAttr::get(context, planned->pattern.shares),
      DenseF64ArrayAttr(), llvm::APFloat(predicted));
  if (!attr)
    return failure();
  dispatch.setPlanAttr(attr);
  if (failed(recordOnGate(dispatch, attr, gatePlans)))
    return failure();
  InFlightDiagnostic remark = dispatch.emitRemark();
  remark << "planned '" << planner::stringifyPolicy(policy) << "' dispatch on '"
         << tree.name << "': " << ::tamoe::formatFixed(predicted, 1) << " us ("
         << planner::stringifySchedule(schedule);
  if (whyFlatOnly)
    remark << ": " << *whyFlatOnly;
  remark << ") vs " << ::tamoe::formatFixed(baseline, 1)
         << " us with uniform routing ("
         << planner::formatSpeedup(
                planner::speedupOverUniform(*planned, uniform, schedules))
         << ")";
  if (dynamic)
    remark << ", predicted for " << rows << " rows of " << hidden
           << " elements: the layer's sizes are dynamic";
  ++numPlanned;
  return success();
}

void PlanDispatchPass::runOnOperation() {
  std::optional<planner::Policy> policyKind = planner::parsePolicy(policy);
  if (!policyKind) {
    getOperation().emitError()
        << "tamoe-plan-dispatch: unknown policy '" << policy
        << "' (uniform, tamoe, optimal, box, fastermoe, node-limited)";
    return signalPassFailure();
  }
  planner::PolicyOptions options{rho, beta, crossNodeCap, maxNodes};
  // -1, the option's default, stands for the tamoe pattern's KL.
  if (klBudget != -1.0)
    options.klBudget = klBudget;
  if (llvm::Error error = planner::verify(options)) {
    getOperation().emitError()
        << "tamoe-plan-dispatch: " << llvm::toString(std::move(error));
    return signalPassFailure();
  }
  // A module without layers has nothing to plan, and needs no topology
  // (one given as a file is still read and recorded).
  bool hasLayers = getOperation()
                       .walk([](DispatchOp) { return WalkResult::interrupt(); })
                       .wasInterrupted();
  if (!hasLayers && topologyFile.empty())
    return;
  FailureOr<TopologyAttr> topology = resolveTopology();
  if (failed(topology))
    return signalPassFailure();
  topo::Topology tree = topology->toTopology();
  SymbolTableCollection symbols;
  GatePlans gatePlans;
  WalkResult result = getOperation().walk([&](DispatchOp dispatch) {
    return failed(
               plan(dispatch, tree, *policyKind, options, symbols, gatePlans))
               ? WalkResult::interrupt()
               : WalkResult::advance();
  });
  if (result.wasInterrupted())
    signalPassFailure();
}
