//===- InjectTopologyAuxLoss.cpp - Topology-aware load-balancing loss -----===//

#include "Layer.h"
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"
#include "tamoe/Support/Messages.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Dominance.h"

#include <cmath>

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOEINJECTTOPOLOGYAUXLOSSPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;
namespace topo = ::tamoe::topology;

namespace {
/// The first planned dispatch of each tamoe.gate seen in one run.
using GateLayers = llvm::DenseMap<Operation *, DispatchOp>;

struct InjectTopologyAuxLossPass
    : public mlir::tamoe::impl::TAMoEInjectTopologyAuxLossPassBase<
          InjectTopologyAuxLossPass> {
  using Base::Base;

  void runOnOperation() override;

private:
  LogicalResult inject(DispatchOp dispatch, SymbolTableCollection &symbols,
                       DominanceInfo &dominance, GateLayers &gateLayers);
  /// Adds `coefficient * loss` to the function's scalar loss result, or
  /// returns it as a new result.
  LogicalResult addToFunctionLoss(DispatchOp dispatch, Value loss);
};
} // namespace

/// The weight of an expert on a rank at each distance, w = 1 / (E q) with
/// q = share / (experts per rank): index 0 for this rank's own experts,
/// l + 1 for a rank whose lowest common ancestor with it is at level l; 0
/// at a distance without ranks.
static SmallVector<double> weightsByDistance(const topo::Topology &tree,
                                             ArrayRef<double> shares,
                                             int64_t experts) {
  int64_t ranks = tree.numRanks();
  SmallVector<double> weights;
  for (auto [distance, share] : llvm::enumerate(shares))
    weights.push_back(::tamoe::planner::ranksAtShare(tree, distance) > 0
                          ? double(experts / ranks) / (double(experts) * share)
                          : 0.0);
  return weights;
}

/// This rank's weight for every expert, w_e = 1 / (E q_e): row `rank` of a
/// [P, E] table computed here. Expert e lives on rank e / (E / P), and the
/// plan's share for that rank depends only on the level of the lowest
/// common ancestor of the two ranks. A constant table and a row select keep
/// the weights out of the layer's run-time compute: a device-resident
/// lowering uploads the table once and does no host work per step.
/// `weightByDistance` holds one weight per distance (weightsByDistance).
static Value buildExpertWeights(OpBuilder &builder, Location loc,
                                const topo::Topology &tree,
                                ArrayRef<double> weightByDistance,
                                int64_t experts, FloatType floatType,
                                Value rank) {
  int64_t ranks = tree.numRanks();
  int64_t perRank = experts / ranks;
  SmallVector<Attribute> byDistance;
  for (double weight : weightByDistance)
    byDistance.push_back(builder.getFloatAttr(floatType, weight));
  SmallVector<Attribute> table;
  table.reserve(ranks * experts);
  for (int64_t self = 0; self < ranks; ++self)
    for (int64_t owner = 0; owner < ranks; ++owner)
      table.append(perRank,
                   byDistance[tree.lowestCommonLevel(self, owner) + 1]);
  auto tableType = RankedTensorType::get({ranks, experts}, floatType);
  Value weights = arith::ConstantOp::create(
      builder, loc, DenseElementsAttr::get(tableType, table));
  auto rowType = RankedTensorType::get({experts}, floatType);
  SmallVector<OpFoldResult> offsets{rank, builder.getIndexAttr(0)};
  SmallVector<OpFoldResult> sizes{builder.getIndexAttr(1),
                                  builder.getIndexAttr(experts)};
  SmallVector<OpFoldResult> strides(2, builder.getIndexAttr(1));
  return tensor::ExtractSliceOp::create(builder, loc, rowType, weights,
                                        offsets, sizes, strides);
}

/// This rank's index in the exchange's group: the linear index over the
/// grid axes the exchange spans (all of them when it names none). The group
/// must be the topology's `ranks`: the index selects a row of a table with
/// one row per rank of the topology.
static FailureOr<Value> groupRank(OpBuilder &builder, Location loc,
                                  AllToAllOp exchange, int64_t ranks,
                                  StringRef topologyName,
                                  SymbolTableCollection &symbols) {
  shard::GridOp grid =
      shard::getGridOrNull(exchange, exchange.getGridAttr(), symbols);
  if (!grid)
    return exchange.emitError()
           << "'@" << exchange.getGrid() << "' does not name a shard.grid";
  SmallVector<int16_t> axes = exchange.getGroupAxes(grid.getRank());
  // A larger group would read past the table's rows on its last ranks.
  std::optional<int64_t> size = groupSize(exchange, symbols);
  if (size != ranks) {
    InFlightDiagnostic error = exchange.emitError()
                               << "the layer's exchange runs over a group ";
    if (size)
      error << "of " << *size << " ranks on @" << exchange.getGrid();
    else
      error << "on @" << exchange.getGrid()
            << " whose size is known only at run time";
    return error << ", but topology '" << topologyName << "' has " << ranks
                 << " ranks: the topology loss needs a weight row for every "
                    "rank of the group";
  }
  SmallVector<Type> indexTypes(axes.size(), builder.getIndexType());
  auto multi = shard::ProcessMultiIndexOp::create(
      builder, loc, TypeRange(indexTypes), exchange.getGridAttr(),
      builder.getDenseI16ArrayAttr(axes));
  // Row-major over the chosen axes, as the exchange orders its peers.
  Value rank = multi->getResult(0);
  for (auto [axis, index] :
       llvm::drop_begin(llvm::zip(axes, multi->getResults()))) {
    Value size =
        arith::ConstantIndexOp::create(builder, loc, grid.getShape()[axis]);
    rank = arith::AddIOp::create(
        builder, loc, arith::MulIOp::create(builder, loc, rank, size), index);
  }
  return rank;
}

LogicalResult InjectTopologyAuxLossPass::inject(DispatchOp dispatch,
                                                SymbolTableCollection &symbols,
                                                DominanceInfo &dominance,
                                                GateLayers &gateLayers) {
  DispatchPlanAttr plan = dispatch.getPlanAttr();
  if (!plan)
    return success();
  if (!plan.getShares())
    return dispatch.emitError() << "the topology loss needs a plan with a "
                                   "share per level; dense plans are not "
                                   "supported";
  auto gate = dispatch.getExpertIds().getDefiningOp<GateOp>();
  if (!gate)
    return dispatch.emitError() << "the topology loss needs the tamoe.gate "
                                   "that chose the experts (for the router "
                                   "probabilities)";
  // A gate that routes several layers gets one loss, weighed by the first
  // layer's plan: the others must have been planned for the same pattern,
  // or theirs would be ignored without a word.
  auto [entry, first] = gateLayers.try_emplace(gate, dispatch);
  if (!first && failed(verifySharedRouter(gate, dispatch, plan, entry->second,
                                          entry->second.getPlanAttr())))
    return failure();
  TypedValue<RankedTensorType> probs = gate.getProbs();
  SmallVector<AuxLossOp> losses;
  for (Operation *user : probs.getUsers())
    if (auto loss = dyn_cast<AuxLossOp>(user))
      losses.push_back(loss);
  // A topology loss means an earlier run got here: nothing left to do.
  if (llvm::any_of(losses, [](AuxLossOp loss) {
        return loss.getKind() == AuxLossKind::Topology;
      }))
    return success();

  TopologyAttr topology = TopologyAttr::lookup(dispatch);
  if (!topology)
    return dispatch.emitError() << "the module has no tamoe.topology";
  topo::Topology tree = topology.toTopology();
  ArrayRef<double> shares = plan.getShares().asArrayRef();
  int64_t experts = dispatch.getExpertCounts().getType().getDimSize(0);
  if (shares.size() != tree.levels.size() + 1 || experts % tree.numRanks() != 0)
    return dispatch.emitError()
           << "the plan does not fit topology '" << tree.name << "' and "
           << experts << " experts (run tamoe-plan-dispatch)";
  if (llvm::any_of(llvm::enumerate(shares), [&](auto entry) {
        // A distance without ranks (fanout 1) may have no share.
        return entry.value() == 0 &&
               ::tamoe::planner::ranksAtShare(tree, entry.index()) > 0;
      }))
    return dispatch.emitError()
           << "the plan gives some ranks no share; the topology loss weighs "
              "experts by 1 / share";

  AllToAllOp exchange = findSendingAllToAll(dispatch);
  if (!exchange)
    return dispatch.emitError() << "cannot tell this rank: the layer's "
                                   "counts feed no tamoe.all_to_all";

  // The weights are a row per expert of the dispatch: the gate must route
  // over the dispatch's experts, or the loss would get weights of another
  // size than its probabilities.
  int64_t gateExperts = probs.getType().getDimSize(1);
  if (!ShapedType::isDynamic(gateExperts) && gateExperts != experts)
    return dispatch.emitError()
           << "the layer's tamoe.gate scores " << gateExperts
           << " experts but the dispatch counts " << experts
           << "; the topology loss weighs the gate's experts";

  // The positions are read by the loss: the dispatch must dominate it, in a
  // nested region as well as in its block.
  bool mayDrop = dispatch.getCapacity() || dispatch.getCapacityFactor();
  for (AuxLossOp loss : losses)
    if (mayDrop && !dominance.properlyDominates(dispatch.getPositions(), loss))
      return loss.emitError() << "the loss must follow the layer's "
                                 "tamoe.dispatch: with a capacity it may "
                                 "count only the dispatched assignments";

  // The weights depend on the rank only: right after the gate they dominate
  // the dispatch and every loss of the gate's probabilities.
  OpBuilder builder(dispatch->getContext());
  builder.setInsertionPointAfter(gate);
  Location loc = dispatch.getLoc();
  auto floatType = cast<FloatType>(probs.getType().getElementType());
  // The table is a constant of the module: bounded, as at 4096 ranks of
  // 4096 experts (64 MiB of f32).
  constexpr int64_t kMostWeights = int64_t(1) << 24;
  if (tree.numRanks() > kMostWeights / experts)
    return dispatch.emitError()
           << "the topology loss's weight table would hold "
           << tree.numRanks() << " ranks x " << experts
           << " experts, more than " << kMostWeights
           << " weights in one constant";
  // A share too small for the probabilities' type would make a weight inf.
  SmallVector<double> weightByDistance =
      weightsByDistance(tree, shares, experts);
  for (auto [distance, weight] : llvm::enumerate(weightByDistance)) {
    APFloat converted(weight);
    bool losesInfo = false;
    converted.convert(floatType.getFloatSemantics(),
                      APFloat::rmNearestTiesToEven, &losesInfo);
    if (!std::isfinite(weight) || !converted.isFinite())
      return dispatch.emitError()
             << "the plan's shares[" << distance << "] = " << shares[distance]
             << " gives its experts the weight " << weight << ", which "
             << floatType << " cannot hold; the topology loss weighs experts "
             << "by 1 / share";
  }
  FailureOr<Value> rank =
      groupRank(builder, loc, exchange, tree.numRanks(), tree.name, symbols);
  if (failed(rank))
    return failure();
  Value weights = buildExpertWeights(builder, loc, tree, weightByDistance,
                                     experts, floatType, *rank);
  // With a capacity the loss counts what was dispatched: the dispatch's
  // positions say which assignments it dropped.
  Value positions = mayDrop ? dispatch.getPositions() : Value();
  for (AuxLossOp loss : losses) {
    loss.setKind(AuxLossKind::Topology);
    // The assignments the positions describe.
    loss.getExpertIdsMutable().assign(dispatch.getExpertIds());
    loss.getExpertWeightsMutable().assign(weights);
    if (positions)
      loss.getPositionsMutable().assign(positions);
    ++numRewritten;
  }
  if (!losses.empty())
    return success();

  builder.setInsertionPointAfter(dispatch);
  auto lossType = RankedTensorType::get({}, floatType);
  Value loss =
      AuxLossOp::create(builder, loc, lossType, AuxLossKind::Topology, probs,
                        dispatch.getExpertIds(), weights, positions);
  ++numInserted;
  return addToFunctionLoss(dispatch, loss);
}

LogicalResult InjectTopologyAuxLossPass::addToFunctionLoss(DispatchOp dispatch,
                                                           Value loss) {
  auto function = dispatch->getParentOfType<func::FuncOp>();
  if (!function || dispatch->getBlock() != &function.getBody().front() ||
      !function.getBody().hasOneBlock())
    return dispatch.emitError() << "an inserted loss needs the layer in the "
                                   "single block of a func.func";
  auto ret = cast<func::ReturnOp>(function.getBody().front().getTerminator());
  OpBuilder builder(ret);
  Location loc = dispatch.getLoc();
  auto lossType = cast<RankedTensorType>(loss.getType());
  // In the loss's type the coefficient must stay finite and, unless it is
  // 0, not round to 0: inf would make the function's loss inf (NaN where
  // the loss is 0), and 0 would drop the loss without a word.
  auto lossElement = cast<FloatType>(lossType.getElementType());
  APFloat converted(static_cast<double>(coefficient));
  bool losesInfo = false;
  converted.convert(lossElement.getFloatSemantics(),
                    APFloat::rmNearestTiesToEven, &losesInfo);
  if (!converted.isFinite() || (converted.isZero() && coefficient != 0))
    return dispatch.emitError()
           << "tamoe-inject-topology-aux-loss: coefficient "
           << ::tamoe::formatNumber(coefficient) << " becomes "
           << (converted.isZero() ? "0" : "inf") << " in the loss's type "
           << lossElement;
  Value coefficientValue = arith::ConstantOp::create(
      builder, loc,
      DenseElementsAttr::get(lossType,
                             builder.getFloatAttr(lossType.getElementType(),
                                                  double(coefficient))));
  Value scaled = arith::MulFOp::create(builder, loc, loss, coefficientValue);
  for (OpOperand &operand : ret->getOpOperands())
    if (operand.get().getType() == lossType) {
      operand.set(arith::AddFOp::create(builder, loc, operand.get(), scaled));
      dispatch.emitRemark() << "inserted a topology loss, scaled by "
                            << ::tamoe::formatNumber(coefficient)
                            << ", into result #" << operand.getOperandNumber();
      return success();
    }
  // A new result would leave the function's callers (and a tamoe.vjp that
  // names it) with the old signature, and the loss unseen by their loss.
  // From the root, so that a nested reference (@inner::@f) counts too.
  std::optional<SymbolTable::UseRange> uses =
      SymbolTable::getSymbolUses(function, getOperation());
  if (!uses || !uses->empty()) {
    InFlightDiagnostic error =
        dispatch.emitError()
        << "cannot return the inserted topology loss as a new result of @"
        << function.getSymName()
        << (uses ? ", which is used elsewhere"
                 : ", whose uses an unknown op may hide")
        << ": give it a " << lossType
        << " result (its loss) to add the topology loss into";
    if (uses)
      error.attachNote(uses->begin()->getUser()->getLoc()) << "used here";
    return failure();
  }
  ret->insertOperands(ret->getNumOperands(), scaled);
  SmallVector<Type> results(function.getResultTypes());
  results.push_back(lossType);
  function.setType(FunctionType::get(function.getContext(),
                                     function.getArgumentTypes(), results));
  dispatch.emitRemark() << "inserted a topology loss, scaled by "
                        << ::tamoe::formatNumber(coefficient)
                        << ", as new result #" << results.size() - 1;
  return success();
}

void InjectTopologyAuxLossPass::runOnOperation() {
  // A negative weight would reward the imbalance the loss measures.
  if (!std::isfinite(coefficient) || coefficient < 0) {
    getOperation().emitError()
        << "tamoe-inject-topology-aux-loss: coefficient: expected a finite "
           "number >= 0, got "
        << ::tamoe::formatNumber(coefficient);
    return signalPassFailure();
  }
  SymbolTableCollection symbols;
  DominanceInfo dominance(getOperation());
  GateLayers gateLayers;
  WalkResult result = getOperation().walk([&](DispatchOp dispatch) {
    return failed(inject(dispatch, symbols, dominance, gateLayers))
               ? WalkResult::interrupt()
               : WalkResult::advance();
  });
  if (result.wasInterrupted())
    signalPassFailure();
}
