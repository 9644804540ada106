//===- Layer.cpp - Finding the parts of an MoE layer ----------------------===//

#include "Layer.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/Support/CheckedArithmetic.h"

using namespace mlir;
using namespace mlir::tamoe;

/// Counts per expert reach an all-to-all as they are (one expert per rank) or
/// reshaped to [ranks, experts per rank].
static Value throughExpandShape(Value counts) {
  if (auto expand = counts.getDefiningOp<tensor::ExpandShapeOp>())
    return expand.getSrc();
  return counts;
}

AllToAllOp mlir::tamoe::findSendingAllToAll(DispatchOp dispatch) {
  Value counts = dispatch.getExpertCounts();
  for (Operation *user : counts.getUsers()) {
    if (auto expand = dyn_cast<tensor::ExpandShapeOp>(user))
      for (Operation *reshapedUser : expand.getResult().getUsers())
        if (auto exchange = dyn_cast<AllToAllOp>(reshapedUser);
            exchange && exchange.getSendCounts() == expand.getResult())
          return exchange;
    if (auto exchange = dyn_cast<AllToAllOp>(user))
      if (exchange.getSendCounts() == counts)
        return exchange;
  }
  return {};
}

DispatchOp mlir::tamoe::findLayerDispatch(AllToAllOp exchange, int64_t *parts) {
  int64_t cut = 1;
  if (parts)
    *parts = 1;
  Value counts = throughExpandShape(exchange.getSendCounts());
  while (Operation *producer = counts.getDefiningOp()) {
    if (auto dispatch = dyn_cast<DispatchOp>(producer)) {
      if (parts)
        *parts = cut;
      return dispatch;
    }
    // A chunk of the layer (tamoe-overlap) sends part of its rows.
    if (auto chunk = dyn_cast<ChunkOp>(producer)) {
      cut = llvm::checkedMul(cut, int64_t(chunk.getChunks()))
                .value_or(std::numeric_limits<int64_t>::max());
      counts = throughExpandShape(chunk.getCounts());
      continue;
    }
    auto earlier = dyn_cast<AllToAllOp>(producer);
    if (!earlier || counts != earlier.getRecvCounts())
      return {};
    counts = throughExpandShape(earlier.getSendCounts());
  }
  return {};
}

LogicalResult mlir::tamoe::verifyExchangeMode(Operation *module, StringRef pass,
                                              StringRef mode) {
  if (mode == "auto" || mode == "flat" || mode == "hierarchical")
    return success();
  return module->emitError() << pass << ": unknown mode '" << mode
                             << "' (auto, flat, hierarchical)";
}

std::optional<int64_t> mlir::tamoe::groupSize(AllToAllOp exchange,
                                              SymbolTableCollection &symbols) {
  shard::GridOp grid =
      shard::getGridOrNull(exchange, exchange.getGridAttr(), symbols);
  if (!grid)
    return std::nullopt;
  ArrayRef<int64_t> shape = grid.getShape();
  std::optional<int64_t> size = 1;
  for (int16_t axis : exchange.getGroupAxes(shape.size())) {
    if (axis < 0 || axis >= int64_t(shape.size()) ||
        ShapedType::isDynamic(shape[axis]))
      return std::nullopt;
    // A grid may be larger than any machine; no group of it exists then.
    size = llvm::checkedMul(*size, shape[axis]);
    if (!size)
      return std::nullopt;
  }
  return size;
}

std::optional<std::string>
mlir::tamoe::whyFlat(AllToAllOp exchange, shard::GridOp grid,
                     const ::tamoe::topology::Topology &tree,
                     SymbolTableCollection &symbols) {
  if (tree.levels.size() < 2)
    return "topology '" + tree.name +
           "' has a single level, so there is no inter-node stage";
  std::string name = exchange.getGrid().str();
  ArrayRef<int64_t> shape = grid.getShape();
  if (std::optional<ArrayRef<int16_t>> axes = exchange.getGridAxes())
    if (!llvm::equal(*axes, llvm::seq<int16_t>(0, shape.size())))
      return "it runs over part of grid @" + name;
  int64_t nodeSize = tree.levels[0].fanout;
  if (shape.size() < 2)
    return "grid @" + name + " has one axis; the stages need a last axis of " +
           "the " + std::to_string(nodeSize) + " ranks of a '" +
           tree.levels[0].name + "' of topology '" + tree.name +
           "' (shape " + std::to_string(tree.numRanks() / nodeSize) + "x" +
           std::to_string(nodeSize) + ")";
  if (ShapedType::isDynamic(shape.back()) || shape.back() != nodeSize)
    return "the last axis of grid @" + name + " is not the " +
           std::to_string(nodeSize) + " ranks of a '" + tree.levels[0].name +
           "' of topology '" + tree.name + "'";
  if (groupSize(exchange, symbols) != tree.numRanks())
    return "grid @" + name + " does not have the " +
           std::to_string(tree.numRanks()) + " ranks of topology '" +
           tree.name + "'";
  return std::nullopt;
}

std::optional<int64_t> mlir::tamoe::elementBytes(Type type) {
  if (!type.isIntOrFloat())
    return std::nullopt;
  return (int64_t(type.getIntOrFloatBitWidth()) + 7) / 8;
}

std::optional<int64_t>
mlir::tamoe::nodesPerToken(DispatchOp dispatch,
                           const ::tamoe::topology::Topology &topology) {
  auto gate =
      dispatch ? dispatch.getExpertIds().getDefiningOp<GateOp>() : GateOp();
  // The groups are the nodes only when the gate's experts are the
  // dispatch's (which sit node by node).
  if (!gate || !gate.getNumGroups() || !gate.getGroupsKept() ||
      int64_t(*gate.getNumGroups()) != topology.numNodes() ||
      gate.getLogits().getType().getDimSize(1) !=
          dispatch.getExpertCounts().getType().getDimSize(0))
    return std::nullopt;
  return int64_t(*gate.getGroupsKept());
}

planner::Pattern
mlir::tamoe::patternOf(DispatchOp dispatch,
                       const ::tamoe::topology::Topology &topology) {
  DispatchPlanAttr plan =
      dispatch ? dispatch.getPlanAttr() : DispatchPlanAttr();
  planner::Pattern pattern;
  if (plan && plan.getShares()) {
    ArrayRef<double> shares = plan.getShares().asArrayRef();
    pattern.shares.assign(shares.begin(), shares.end());
  } else {
    // The topology comes from a verified attribute: the uniform policy
    // cannot fail on it.
    pattern = llvm::cantFail(planner::makePattern(
        topology, planner::Policy::Uniform, planner::PolicyOptions()));
  }
  pattern.maxNodesPerToken = nodesPerToken(dispatch, topology);
  return pattern;
}

PlanPolicy mlir::tamoe::toPlanPolicy(planner::Policy policy) {
  switch (policy) {
  case planner::Policy::Uniform:
    return PlanPolicy::Uniform;
  case planner::Policy::TAMoE:
    return PlanPolicy::TAMoE;
  case planner::Policy::Optimal:
    return PlanPolicy::Optimal;
  case planner::Policy::Box:
    return PlanPolicy::Box;
  case planner::Policy::FasterMoE:
    return PlanPolicy::FasterMoE;
  case planner::Policy::NodeLimited:
    return PlanPolicy::NodeLimited;
  }
  llvm_unreachable("unknown policy");
}

LogicalResult mlir::tamoe::verifySharedRouter(GateOp gate, DispatchOp dispatch,
                                              DispatchPlanAttr plan,
                                              DispatchOp other,
                                              DispatchPlanAttr otherPlan) {
  if (plan.getPolicy() == otherPlan.getPolicy() &&
      plan.getShares() == otherPlan.getShares() &&
      plan.getMatrix() == otherPlan.getMatrix())
    return success();
  InFlightDiagnostic error =
      dispatch.emitError()
      << "the tamoe.gate that routes this layer also routes another, planned "
         "for another pattern: one router realises one dispatch pattern, and "
         "its topology loss weighs the experts by one plan (this layer's "
      << plan << ", the other's " << otherPlan << ")";
  error.attachNote(other.getLoc()) << "the other layer";
  error.attachNote(gate.getLoc()) << "the shared tamoe.gate";
  return failure();
}
