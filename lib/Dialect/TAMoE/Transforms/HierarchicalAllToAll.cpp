//===- HierarchicalAllToAll.cpp - Two-stage all-to-all --------------------===//

#include "Layer.h"
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"
#include "tamoe/Support/Messages.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOEHIERARCHICALALLTOALLPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;
namespace topo = ::tamoe::topology;

namespace {
/// What the rewrite needs to know about one flat all-to-all.
struct Candidate {
  AllToAllOp exchange;
  topo::Topology tree;
  /// Grid shape; the last axis is the node.
  SmallVector<int64_t> shape;
};

struct HierarchicalAllToAllPass
    : public mlir::tamoe::impl::TAMoEHierarchicalAllToAllPassBase<
          HierarchicalAllToAllPass> {
  using Base::Base;

  void runOnOperation() override;

private:
  /// Why `exchange` cannot be rewritten, or the candidate.
  FailureOr<Candidate> analyse(AllToAllOp exchange,
                               SymbolTableCollection &symbols);
  /// Whether the cost model prefers the hierarchical form; says why.
  bool prefersHierarchical(const Candidate &candidate);
  void rewrite(const Candidate &candidate);
};
} // namespace

FailureOr<Candidate>
HierarchicalAllToAllPass::analyse(AllToAllOp exchange,
                                  SymbolTableCollection &symbols) {
  auto keepFlat = [&](const Twine &why) {
    exchange.emitRemark() << "kept flat: " << why;
    ++numKeptFlat;
    return failure();
  };
  TopologyAttr topology = TopologyAttr::lookup(exchange);
  if (!topology)
    return keepFlat("the module has no tamoe.topology");
  Candidate candidate{exchange, topology.toTopology(), {}};
  const topo::Topology &tree = candidate.tree;
  if (tree.levels.size() < 2)
    return keepFlat("topology '" + tree.name +
                    "' has a single level, so there is no inter-node stage");
  shard::GridOp grid =
      shard::getGridOrNull(exchange, exchange.getGridAttr(), symbols);
  if (!grid)
    return failure();
  candidate.shape.assign(grid.getShape().begin(), grid.getShape().end());
  ArrayRef<int64_t> shape = candidate.shape;
  if (std::optional<ArrayRef<int16_t>> axes = exchange.getGridAxes())
    if (!llvm::equal(*axes, llvm::seq<int16_t>(0, shape.size())))
      return keepFlat("it runs over part of grid @" + exchange.getGrid().str());
  int64_t nodeSize = tree.levels[0].fanout;
  if (shape.size() < 2 || ShapedType::isDynamic(shape.back()) ||
      shape.back() != nodeSize)
    return keepFlat("the last axis of grid @" + exchange.getGrid().str() +
                    " is not the " + std::to_string(nodeSize) +
                    " ranks of a '" + tree.levels[0].name + "' of topology '" +
                    tree.name + "'");
  if (groupSize(exchange, symbols) != tree.numRanks())
    return keepFlat("grid @" + exchange.getGrid().str() +
                    " does not have the " + std::to_string(tree.numRanks()) +
                    " ranks of topology '" + tree.name + "'");
  if (exchange.getSendCounts().getType().getRank() != 1)
    return keepFlat("counts split per expert are not rewritten");
  return candidate;
}

bool HierarchicalAllToAllPass::prefersHierarchical(const Candidate &candidate) {
  AllToAllOp exchange = candidate.exchange;
  if (mode == "flat") {
    exchange.emitRemark() << "kept flat: mode=flat";
    return false;
  }
  if (mode == "hierarchical") {
    exchange.emitRemark() << "made hierarchical: mode=hierarchical";
    return true;
  }
  // The layer's dispatch gives the row capacity and the plan; the return
  // trip moves the same rows back.
  DispatchOp dispatch = findLayerDispatch(exchange);
  RankedTensorType send = exchange.getSend().getType();
  int64_t rows = dispatch ? dispatch.getDispatched().getType().getDimSize(0)
                          : send.getDimSize(0);
  std::optional<int64_t> bytes = elementBytes(send.getElementType());
  int64_t rowElements = 1;
  for (int64_t dim : send.getShape().drop_front())
    rowElements =
        ShapedType::isDynamic(dim) || rowElements < 0 ? -1 : rowElements * dim;
  if (ShapedType::isDynamic(rows) || rowElements < 0 || !bytes) {
    exchange.emitRemark() << "kept flat: its size is unknown at compile time "
                             "(mode=hierarchical forces the rewrite)";
    return false;
  }
  planner::Workload workload{rows, rowElements, *bytes, 1};
  planner::Pattern pattern = patternOf(
      dispatch ? dispatch.getPlanAttr() : DispatchPlanAttr(), candidate.tree);
  double flat = planner::evaluate(candidate.tree, pattern, workload,
                                  planner::Schedule::Flat)
                    .totalUs();
  double hierarchical = planner::evaluate(candidate.tree, pattern, workload,
                                          planner::Schedule::Hierarchical)
                            .totalUs();
  bool better = planner::fasterThan(hierarchical, flat);
  exchange.emitRemark() << (better ? "made hierarchical: " : "kept flat: ")
                        << ::tamoe::formatFixed(hierarchical, 1)
                        << " us predicted hierarchical vs "
                        << ::tamoe::formatFixed(flat, 1) << " us flat for "
                        << rows << " rows of " << rowElements * *bytes
                        << " bytes";
  return better;
}

void HierarchicalAllToAllPass::rewrite(const Candidate &candidate) {
  AllToAllOp exchange = candidate.exchange;
  OpBuilder builder(exchange);
  Location loc = exchange.getLoc();
  MLIRContext *context = builder.getContext();
  int64_t nodeSize = candidate.shape.back();
  int64_t nodes = candidate.tree.numRanks() / nodeSize;
  RankedTensorType countsType = exchange.getSendCounts().getType();
  Type countType = countsType.getElementType();
  auto counts = [&](int64_t a, int64_t b) {
    return RankedTensorType::get({a, b}, countType);
  };
  RankedTensorType sendType = exchange.getSend().getType();
  SmallVector<int64_t> rowsShape(sendType.getShape());
  rowsShape[0] = ShapedType::kDynamic;
  auto rowsType = RankedTensorType::get(rowsShape, sendType.getElementType());
  int16_t nodeAxis = int16_t(candidate.shape.size() - 1);
  auto outerAxes = llvm::to_vector(llvm::seq<int16_t>(0, nodeAxis));
  SmallVector<ReassociationIndices> bothDims{{0, 1}};

  // Rows for rank (node, index) become rows for (index, node): stage 1
  // hands each local index its rows for every node.
  Value byDestination =
      tensor::ExpandShapeOp::create(builder, loc, counts(nodes, nodeSize),
                                    exchange.getSendCounts(), bothDims);
  auto byIndex =
      RegroupOp::create(builder, loc, sendType, counts(nodeSize, nodes),
                        exchange.getSend(), byDestination);
  auto intra = AllToAllOp::create(
      builder, loc, rowsType, counts(nodeSize, nodes), byIndex.getRegrouped(),
      byIndex.getRegroupedCounts(), exchange.getGridAttr(),
      DenseI16ArrayAttr::get(context, {nodeAxis}),
      builder.getStringAttr(candidate.tree.levels.front().name));
  // Received by source index a, per destination node: regroup by node, and
  // stage 2 sends them between same-index ranks.
  auto byNode =
      RegroupOp::create(builder, loc, rowsType, counts(nodes, nodeSize),
                        intra.getReceived(), intra.getRecvCounts());
  auto inter = AllToAllOp::create(
      builder, loc, exchange.getReceived().getType(), counts(nodes, nodeSize),
      byNode.getRegrouped(), byNode.getRegroupedCounts(),
      exchange.getGridAttr(), DenseI16ArrayAttr::get(context, outerAxes),
      builder.getStringAttr(candidate.tree.levels.back().name));
  // Rows arrive by source (node, index), i.e. by source rank, as the flat
  // exchange delivers them.
  Value received = tensor::CollapseShapeOp::create(
      builder, loc, countsType, inter.getRecvCounts(), bothDims);
  exchange.getReceived().replaceAllUsesWith(inter.getReceived());
  exchange.getRecvCounts().replaceAllUsesWith(received);
  exchange.erase();
  ++numRewritten;
}

void HierarchicalAllToAllPass::runOnOperation() {
  if (mode != "auto" && mode != "flat" && mode != "hierarchical") {
    getOperation().emitError() << "tamoe-hierarchical-all-to-all: unknown "
                                  "mode '"
                               << mode << "' (auto, flat, hierarchical)";
    return signalPassFailure();
  }
  SymbolTableCollection symbols;
  SmallVector<AllToAllOp> flat;
  // Stages of an earlier rewrite name their level: leave them alone.
  getOperation().walk([&](AllToAllOp exchange) {
    if (!exchange.getLevel())
      flat.push_back(exchange);
  });
  // Decide every exchange before rewriting any: the return trip finds its
  // layer through the counts the forward exchange received.
  SmallVector<Candidate> chosen;
  for (AllToAllOp exchange : flat) {
    FailureOr<Candidate> candidate = analyse(exchange, symbols);
    if (failed(candidate))
      continue;
    if (prefersHierarchical(*candidate))
      chosen.push_back(std::move(*candidate));
    else
      ++numKeptFlat;
  }
  for (const Candidate &candidate : chosen)
    rewrite(candidate);
}
