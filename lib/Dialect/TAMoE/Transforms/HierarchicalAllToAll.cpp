//===- HierarchicalAllToAll.cpp - Two-stage all-to-all --------------------===//

#include "Layer.h"
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"
#include "tamoe/Support/Messages.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "llvm/Support/CheckedArithmetic.h"

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOEHIERARCHICALALLTOALLPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;
namespace topo = ::tamoe::topology;

namespace {
enum class Form { Flat, Hierarchical, Deduplicated };

/// What the rewrite needs to know about one flat all-to-all.
struct Candidate {
  AllToAllOp exchange;
  topo::Topology tree;
  /// Grid shape; the last axis is the node.
  SmallVector<int64_t> shape;
  /// The dispatch whose rows the exchange sends, when the de-duplicated
  /// schedule may replace it.
  DispatchOp dedupSource;
  /// The part of those rows it sends, when tamoe-overlap cut them.
  ChunkOp dedupPart;
  Form form = Form::Flat;
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
  /// The dispatch whose rows (or one part of them, `part`) `exchange`
  /// sends, if `dedup` is on and the de-duplicated schedule can replace the
  /// exchange.
  DispatchOp findDedupSource(AllToAllOp exchange, ChunkOp &part);
  /// The form the cost model (or `mode`) chooses; a remark says why.
  Form choose(const Candidate &candidate);
  void rewriteHierarchical(const Candidate &candidate);
  void rewriteDeduplicated(const Candidate &candidate);
};
} // namespace

/// Reassociation that merges the first two of `rank` dimensions.
static SmallVector<ReassociationIndices> mergeFirstTwo(int64_t rank) {
  SmallVector<ReassociationIndices> groups{{0, 1}};
  for (int64_t dim = 2; dim < rank; ++dim)
    groups.push_back({dim});
  return groups;
}

/// `shape` with its first dimension replaced by `head`.
static SmallVector<int64_t> withHead(ArrayRef<int64_t> head,
                                     ArrayRef<int64_t> shape) {
  SmallVector<int64_t> result(head);
  llvm::append_range(result, shape.drop_front());
  return result;
}

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
  shard::GridOp grid =
      shard::getGridOrNull(exchange, exchange.getGridAttr(), symbols);
  if (!grid)
    return failure();
  if (std::optional<std::string> why =
          whyFlat(exchange, grid, candidate.tree, symbols))
    return keepFlat(*why);
  candidate.shape.assign(grid.getShape().begin(), grid.getShape().end());
  candidate.dedupSource = findDedupSource(exchange, candidate.dedupPart);
  return candidate;
}

DispatchOp HierarchicalAllToAllPass::findDedupSource(AllToAllOp exchange,
                                                     ChunkOp &part) {
  if (!dedup)
    return {};
  // The dispatch's rows, or one part of them cut by tamoe-overlap: the
  // part's assignments are de-duplicated alone.
  Value rows = exchange.getSend();
  Value counts = exchange.getSendCounts();
  part = rows.getDefiningOp<ChunkOp>();
  if (part) {
    if (counts != part.getChunkCounts())
      return {};
    rows = part.getRows();
    counts = part.getCounts();
  }
  auto dispatch = rows.getDefiningOp<DispatchOp>();
  if (!dispatch || rows != dispatch.getDispatched())
    return {};
  // Counts per expert, as they are (one expert per rank) or as
  // [ranks, experts per rank].
  if (auto expand = counts.getDefiningOp<tensor::ExpandShapeOp>())
    counts = expand.getSrc();
  if (counts != dispatch.getExpertCounts() ||
      exchange.getSendCounts().getType().getRank() > 2)
    return {};
  // One expert per token has nothing to de-duplicate.
  int64_t k = dispatch.getExpertIds().getType().getDimSize(1);
  if (ShapedType::isDynamic(k) || k < 2)
    return {};
  return dispatch;
}

Form HierarchicalAllToAllPass::choose(const Candidate &candidate) {
  AllToAllOp exchange = candidate.exchange;
  DispatchOp source = candidate.dedupSource;
  if (mode == "flat") {
    exchange.emitRemark() << "kept flat: mode=flat";
    return Form::Flat;
  }
  if (mode == "hierarchical") {
    if (source) {
      exchange.emitRemark() << "made hierarchical with per-node "
                               "de-duplication: mode=hierarchical, dedup";
      return Form::Deduplicated;
    }
    exchange.emitRemark() << "made hierarchical: mode=hierarchical";
    return Form::Hierarchical;
  }
  // The layer's dispatch gives the row capacity and the plan; the return
  // trip moves the same rows back.
  // A chunk of a layer (tamoe-overlap) moves about its share of the rows.
  int64_t parts = 1;
  DispatchOp dispatch = findLayerDispatch(exchange, &parts);
  RankedTensorType send = exchange.getSend().getType();
  int64_t rows = dispatch ? dispatch.getDispatched().getType().getDimSize(0)
                          : send.getDimSize(0);
  if (!ShapedType::isDynamic(rows))
    rows = llvm::divideCeil(rows, parts);
  std::optional<int64_t> bytes = elementBytes(send.getElementType());
  int64_t rowElements = 1;
  for (int64_t dim : send.getShape().drop_front())
    rowElements =
        ShapedType::isDynamic(dim) || rowElements < 0 ? -1 : rowElements * dim;
  if (ShapedType::isDynamic(rows) || rowElements < 0 || !bytes) {
    exchange.emitRemark() << "kept flat: its size is unknown at compile time "
                             "(mode=hierarchical forces the rewrite)";
    return Form::Flat;
  }
  planner::Pattern pattern = patternOf(dispatch, candidate.tree);
  auto predict = [&](const planner::Workload &workload,
                     planner::Schedule schedule) {
    return planner::evaluate(candidate.tree, pattern, workload, schedule)
        .totalUs();
  };
  planner::Workload perRow{rows, rowElements, *bytes, 1};
  double flat = predict(perRow, planner::Schedule::Flat);
  double hierarchical = predict(perRow, planner::Schedule::Hierarchical);
  Form best = planner::fasterThan(hierarchical, flat) ? Form::Hierarchical
                                                      : Form::Flat;
  int64_t tokens = source ? source.getTokens().getType().getDimSize(0)
                          : ShapedType::kDynamic;
  if (!ShapedType::isDynamic(tokens))
    tokens = llvm::divideCeil(tokens, parts);
  if (ShapedType::isDynamic(tokens)) {
    exchange.emitRemark() << (best == Form::Hierarchical ? "made hierarchical: "
                                                         : "kept flat: ")
                          << ::tamoe::formatFixed(hierarchical, 1)
                          << " us predicted hierarchical vs "
                          << ::tamoe::formatFixed(flat, 1) << " us flat for "
                          << rows << " rows of " << rowElements * *bytes
                          << " bytes";
    return best;
  }
  // De-duplication sends each token to a node once, whatever its k experts
  // there: the cost model needs the tokens and k rather than the rows.
  int64_t k = source.getExpertIds().getType().getDimSize(1);
  double deduplicated = predict(
      planner::Workload{tokens, rowElements, *bytes, k},
      planner::Schedule::HierarchicalDedup);
  if (planner::fasterThan(deduplicated, std::min(flat, hierarchical)))
    best = Form::Deduplicated;
  StringRef verdict[] = {"kept flat", "made hierarchical",
                         "made hierarchical with per-node de-duplication"};
  exchange.emitRemark() << verdict[static_cast<int>(best)] << ": "
                        << ::tamoe::formatFixed(deduplicated, 1)
                        << " us predicted de-duplicated vs "
                        << ::tamoe::formatFixed(hierarchical, 1)
                        << " us hierarchical vs "
                        << ::tamoe::formatFixed(flat, 1) << " us flat for "
                        << tokens << " tokens (top-" << k << ") of "
                        << rowElements * *bytes << " bytes";
  return best;
}

void HierarchicalAllToAllPass::rewriteHierarchical(
    const Candidate &candidate) {
  AllToAllOp exchange = candidate.exchange;
  OpBuilder builder(exchange);
  Location loc = exchange.getLoc();
  MLIRContext *context = builder.getContext();
  int64_t nodeSize = candidate.shape.back();
  int64_t nodes = candidate.tree.numRanks() / nodeSize;
  RankedTensorType countsType = exchange.getSendCounts().getType();
  // Counts [P, ...] become [nodes, nodeSize, ...] and back; any split of a
  // peer's rows (per expert) travels along unchanged.
  auto counts = [&](int64_t a, int64_t b) {
    return RankedTensorType::get(withHead({a, b}, countsType.getShape()),
                                 countsType.getElementType());
  };
  SmallVector<ReassociationIndices> merged =
      mergeFirstTwo(countsType.getRank() + 1);
  RankedTensorType sendType = exchange.getSend().getType();
  auto rowsType = RankedTensorType::get(
      withHead({ShapedType::kDynamic}, sendType.getShape()),
      sendType.getElementType());
  int16_t nodeAxis = int16_t(candidate.shape.size() - 1);
  auto outerAxes = llvm::to_vector(llvm::seq<int16_t>(0, nodeAxis));

  // Rows for rank (node, index) become rows for (index, node): stage 1
  // hands each local index its rows for every node.
  Value byDestination =
      tensor::ExpandShapeOp::create(builder, loc, counts(nodes, nodeSize),
                                    exchange.getSendCounts(), merged);
  auto byIndex =
      RegroupOp::create(builder, loc, sendType, counts(nodeSize, nodes),
                        exchange.getSend(), byDestination);
  auto intra = AllToAllOp::create(
      builder, loc, rowsType, counts(nodeSize, nodes), byIndex.getRegrouped(),
      byIndex.getRegroupedCounts(), /*expected_counts=*/Value(),
      exchange.getGridAttr(), DenseI16ArrayAttr::get(context, {nodeAxis}),
      builder.getStringAttr(candidate.tree.levels.front().name));
  // Received by source index a, per destination node: regroup by node, and
  // stage 2 sends them between same-index ranks.
  auto byNode =
      RegroupOp::create(builder, loc, rowsType, counts(nodes, nodeSize),
                        intra.getReceived(), intra.getRecvCounts());
  // Stage 2 delivers what the flat exchange would, by source (node, index),
  // so counts it was promised (`expecting`) still size it without a round.
  // Stage 1's depend on the node peers' routes, which no rank knows alone.
  Value expected;
  if (Value flatExpected = exchange.getExpectedCounts())
    expected = tensor::ExpandShapeOp::create(
        builder, loc, counts(nodes, nodeSize), flatExpected, merged);
  auto inter = AllToAllOp::create(
      builder, loc, exchange.getReceived().getType(), counts(nodes, nodeSize),
      byNode.getRegrouped(), byNode.getRegroupedCounts(), expected,
      exchange.getGridAttr(), DenseI16ArrayAttr::get(context, outerAxes),
      builder.getStringAttr(candidate.tree.levels.back().name));
  // Rows arrive by source (node, index), i.e. by source rank, as the flat
  // exchange delivers them.
  Value received = tensor::CollapseShapeOp::create(
      builder, loc, countsType, inter.getRecvCounts(), merged);
  exchange.getReceived().replaceAllUsesWith(inter.getReceived());
  exchange.getRecvCounts().replaceAllUsesWith(received);
  exchange.erase();
  ++numRewritten;
}

void HierarchicalAllToAllPass::rewriteDeduplicated(
    const Candidate &candidate) {
  AllToAllOp exchange = candidate.exchange;
  DispatchOp dispatch = candidate.dedupSource;
  OpBuilder builder(exchange);
  Location loc = exchange.getLoc();
  MLIRContext *context = builder.getContext();
  int64_t nodeSize = candidate.shape.back();
  int64_t ranks = candidate.tree.numRanks();
  int64_t nodes = ranks / nodeSize;
  int64_t experts = dispatch.getExpertCounts().getType().getDimSize(0);
  int64_t expertsPerRank = experts / ranks;
  RankedTensorType countsType = exchange.getSendCounts().getType();
  Type countType = countsType.getElementType();
  RankedTensorType tokensType = dispatch.getTokens().getType();
  RankedTensorType idsType = dispatch.getExpertIds().getType();
  int64_t tokens = tokensType.getDimSize(0);
  int64_t k = idsType.getDimSize(1);
  // S * min(k, nodes) rows, dynamic when S is or the product overflows (a
  // negative size would be no type at all).
  int64_t uniqueRows = ShapedType::kDynamic;
  if (!ShapedType::isDynamic(tokens))
    uniqueRows = llvm::checkedMul(tokens, std::min(k, nodes))
                     .value_or(ShapedType::kDynamic);
  auto rows = [&](int64_t count, RankedTensorType like) {
    return RankedTensorType::get({count, like.getDimSize(1)},
                                 like.getElementType());
  };
  auto nodeCountsType = RankedTensorType::get({nodes}, countType);
  auto countsOf = [&](int64_t a, int64_t b) {
    return RankedTensorType::get({a, b, expertsPerRank}, countType);
  };
  int16_t nodeAxis = int16_t(candidate.shape.size() - 1);
  auto outerAxes = DenseI16ArrayAttr::get(
      context, llvm::to_vector(llvm::seq<int16_t>(0, nodeAxis)));
  StringAttr outerLevel =
      builder.getStringAttr(candidate.tree.levels.back().name);

  // One part of a chunked layer packs only its own assignments: at most one
  // unique row per row of the part.
  Value positions = dispatch.getPositions();
  if (ChunkOp part = candidate.dedupPart) {
    positions = ChunkPositionsOp::create(
        builder, loc, positions.getType(), positions, dispatch.getExpertIds(),
        dispatch.getExpertCounts(), part.getChunkAttr(), part.getChunksAttr());
    int64_t partRows = part.getChunkRows().getType().getDimSize(0);
    if (!ShapedType::isDynamic(partRows))
      uniqueRows = ShapedType::isDynamic(uniqueRows)
                       ? partRows
                       : std::min(uniqueRows, partRows);
  }
  // Each token once per node it needs, with the experts it needs there.
  auto pack = DedupPackOp::create(
      builder, loc, rows(uniqueRows, tokensType), rows(uniqueRows, idsType),
      nodeCountsType, dispatch.getTokens(), dispatch.getExpertIds(), positions,
      builder.getI64IntegerAttr(experts / nodes));
  // Across nodes to the rank with the sender's local index.
  auto interRows = AllToAllOp::create(
      builder, loc, rows(ShapedType::kDynamic, tokensType), nodeCountsType,
      pack.getUnique(), pack.getNodeCounts(), /*expected_counts=*/Value(),
      exchange.getGridAttr(), outerAxes, outerLevel);
  auto interRoutes = AllToAllOp::create(
      builder, loc, rows(ShapedType::kDynamic, idsType), nodeCountsType,
      pack.getRoutes(), pack.getNodeCounts(), /*expected_counts=*/Value(),
      exchange.getGridAttr(), outerAxes, outerLevel);
  // The relay expands them per expert and hands them out within the node.
  auto expand = DedupExpandOp::create(
      builder, loc, rows(ShapedType::kDynamic, tokensType),
      countsOf(nodeSize, nodes), interRows.getReceived(),
      interRoutes.getReceived(), interRows.getRecvCounts(),
      builder.getI64IntegerAttr(expertsPerRank));
  // The node stage delivers every row the flat exchange would, so it
  // receives into the flat exchange's buffer type: a static one keeps its
  // capacity check on every rank, which the regroup after it (which trusts
  // its input's capacity) cannot make.
  auto intra = AllToAllOp::create(
      builder, loc, exchange.getReceived().getType(), countsOf(nodeSize, nodes),
      expand.getExpanded(), expand.getExpandedCounts(),
      /*expected_counts=*/Value(), exchange.getGridAttr(),
      DenseI16ArrayAttr::get(context, {nodeAxis}),
      builder.getStringAttr(candidate.tree.levels.front().name));
  // Received by (relay index, source node): by source rank once regrouped,
  // each source's rows by expert then token, as the flat exchange delivers.
  auto bySource = RegroupOp::create(
      builder, loc, exchange.getReceived().getType(), countsOf(nodes, nodeSize),
      intra.getReceived(), intra.getRecvCounts());
  SmallVector<ReassociationIndices> toFlat =
      countsType.getRank() == 1 ? SmallVector<ReassociationIndices>{{0, 1, 2}}
                                : mergeFirstTwo(3);
  Value received = tensor::CollapseShapeOp::create(
      builder, loc, countsType, bySource.getRegroupedCounts(), toFlat);
  exchange.getReceived().replaceAllUsesWith(bySource.getRegrouped());
  exchange.getRecvCounts().replaceAllUsesWith(received);
  exchange.erase();
  ++numRewritten;
  ++numDeduplicated;
}

void HierarchicalAllToAllPass::runOnOperation() {
  if (failed(verifyExchangeMode(getOperation(), "tamoe-hierarchical-all-to-all",
                                mode)))
    return signalPassFailure();
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
    candidate->form = choose(*candidate);
    if (candidate->form == Form::Flat)
      ++numKeptFlat;
    else
      chosen.push_back(std::move(*candidate));
  }
  for (const Candidate &candidate : chosen) {
    if (candidate.form == Form::Deduplicated)
      rewriteDeduplicated(candidate);
    else
      rewriteHierarchical(candidate);
  }
}
