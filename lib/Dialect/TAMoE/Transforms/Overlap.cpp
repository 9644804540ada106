//===- Overlap.cpp - Cut a layer into chunks that overlap -----------------===//
//
// A layer's exchange out, expert computation and exchange back, cut along
// the tokens into C chunks that tamoe-schedule-exchanges then overlaps.
// docs/passes.md explains the choices; docs/cost-model.md the prediction.
//
//===----------------------------------------------------------------------===//

#include "Layer.h"
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"
#include "tamoe/Planner/Overlap.h"
#include "tamoe/Support/Messages.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"

#include "llvm/ADT/TypeSwitch.h"

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOEOVERLAPPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;

namespace {
/// One layer's chain between its two exchanges.
struct Chain {
  DispatchOp dispatch;
  AllToAllOp out, back;
  /// The expert computation, in block order.
  SmallVector<Operation *> body;
  /// Ops outside the chain that read the counts `out` received.
  bool countsUsedOutside = false;
  /// FLOPs of the expert GEMMs for the whole batch.
  double flops = 0;
};

struct OverlapPass
    : public mlir::tamoe::impl::TAMoEOverlapPassBase<OverlapPass> {
  using Base::Base;
  void runOnOperation() override;

private:
  /// The chain that starts at `out`, or failure (with a remark saying why
  /// when `out` sends a dispatch's rows).
  FailureOr<Chain> analyse(AllToAllOp out);
  /// The chunk count for `chain`: `chunks`, checked against the rows, or
  /// the cost model's choice; a remark gives the prediction. Failure after
  /// an error.
  FailureOr<int64_t> choose(const Chain &chain);
  void rewrite(const Chain &chain, int64_t count);
};
} // namespace

/// Whether `op` computes each row from the same row of its operands alone:
/// an element-wise linalg op on tensors (a linalg.generic, or a named op
/// such as SwiGLU's linalg.mul) that does not read its position.
static bool isRowwise(linalg::LinalgOp op) {
  return op.hasPureTensorSemantics() &&
         op.getNumLoops() == op.getNumParallelLoops() &&
         !op.hasIndexSemantics() &&
         llvm::all_of(op.getIndexingMapsArray(),
                      [](AffineMap map) { return map.isIdentity(); });
}

FailureOr<Chain> OverlapPass::analyse(AllToAllOp out) {
  DispatchOp dispatch = out.getSend().getDefiningOp<DispatchOp>();
  if (!dispatch || findLayerDispatch(out) != dispatch)
    return failure();
  auto keep = [&](const Twine &why) {
    out.emitRemark() << "kept in one chunk: " << why;
    ++numKept;
    return failure();
  };
  Chain chain{dispatch, out, {}, {}, false, 0};
  Value recvCounts = out.getRecvCounts();
  for (Operation *user : recvCounts.getUsers())
    if (auto back = dyn_cast<AllToAllOp>(user);
        back && back.getSendCounts() == recvCounts) {
      if (chain.back)
        return keep("two exchanges send back with its counts");
      chain.back = back;
    }
  if (!chain.back || chain.back->getBlock() != out->getBlock())
    return keep("no exchange in its block sends the results back with the "
                "counts it received");

  // The ops that compute on the received rows, up to the exchange back.
  // Each must compute a row from that row alone, so that any cut of the
  // rows gives the same bytes; and nothing else may read what they compute
  // (only the exchange back), since the chunks replace them.
  AllToAllOp back = chain.back;
  DenseSet<Value> inChain{out.getReceived(), recvCounts};
  DenseSet<Operation *> members;
  SmallVector<Value> worklist{out.getReceived(), recvCounts};
  while (!worklist.empty()) {
    Value value = worklist.pop_back_val();
    for (OpOperand &use : value.getUses()) {
      Operation *user = use.getOwner();
      if (user == back.getOperation() && use.get() == back.getSend())
        continue;
      if (user == back.getOperation())
        continue; // the counts
      Operation *ancestor = out->getBlock()->findAncestorOpInBlock(*user);
      // Only ops of the exchanges' block are cloned per chunk: one in a
      // nested region keeps the layer whole.
      bool between = ancestor == user && out->isBeforeInBlock(user) &&
                     user->isBeforeInBlock(back);
      auto linalgOp = dyn_cast<linalg::LinalgOp>(user);
      bool rowwise =
          isa<GroupedMatmulOp, tensor::DimOp, tensor::EmptyOp>(user) ||
          (linalgOp && isRowwise(linalgOp));
      if (value == recvCounts && !isa<GroupedMatmulOp>(user)) {
        // Counts read after the exchange back get the chunks' sum.
        if (!ancestor || !back->isBeforeInBlock(ancestor))
          return keep(Twine("the counts it received are read by '") +
                      user->getName().getStringRef() +
                      "' before the exchange back");
        chain.countsUsedOutside = true;
        continue;
      }
      if (!between || !rowwise)
        return keep(Twine("'") + user->getName().getStringRef() +
                    "' reads what it received but is not a row-wise step "
                    "of the experts before the exchange back (grouped_matmul, "
                    "element-wise linalg ops)");
      if (!members.insert(user).second)
        continue;
      for (Value result : user->getResults())
        if (inChain.insert(result).second)
          worklist.push_back(result);
    }
  }
  // Once the whole chain is known: each step reads only the received rows
  // (and, for a GEMM, weights from outside).
  auto notRowwise = [&](Operation *op) {
    return keep(Twine("'") + op->getName().getStringRef() +
                "' reads rows that did not arrive with the exchange");
  };
  for (Operation *op : members) {
    if (auto matmul = dyn_cast<GroupedMatmulOp>(op);
        matmul && (matmul.getCounts() != recvCounts ||
                   !inChain.contains(matmul.getRows()) ||
                   inChain.contains(matmul.getWeights())))
      return notRowwise(op);
    if (auto linalgOp = dyn_cast<linalg::LinalgOp>(op)) {
      for (Value input : linalgOp.getDpsInputs())
        if (!inChain.contains(input))
          return notRowwise(op);
      for (Value init : linalgOp.getDpsInits())
        if (!inChain.contains(init) && !init.getDefiningOp<tensor::EmptyOp>())
          return notRowwise(op);
    }
  }
  if (!inChain.contains(back.getSend()))
    return keep("the exchange back does not send what the experts computed");
  for (Operation &op : *out->getBlock())
    if (members.contains(&op))
      chain.body.push_back(&op);
  // GEMM FLOPs: each received row goes through every grouped_matmul; on
  // average a rank receives as many rows as it sends.
  int64_t rows = dispatch.getDispatched().getType().getDimSize(0);
  for (Operation *op : chain.body)
    if (auto matmul = dyn_cast<GroupedMatmulOp>(op)) {
      ArrayRef<int64_t> weights = matmul.getWeights().getType().getShape();
      if (!ShapedType::isDynamic(rows) &&
          !ShapedType::isDynamic(weights[1]) &&
          !ShapedType::isDynamic(weights[2]))
        chain.flops += 2.0 * double(rows) * double(weights[1]) *
                       double(weights[2]);
    }
  return chain;
}

FailureOr<int64_t> OverlapPass::choose(const Chain &chain) {
  AllToAllOp out = chain.out;
  DispatchOp dispatch = chain.dispatch;
  RankedTensorType tokensType = dispatch.getTokens().getType();
  int64_t rows = dispatch.getDispatched().getType().getDimSize(0);
  std::optional<int64_t> capacity =
      dispatch.getCapacityFor(tokensType.getDimSize(0));
  // A capacity_factor of a dynamic token count (or k) has no capacity
  // until run time (getCapacityFor is negative then).
  if (capacity && *capacity < 0)
    capacity.reset();
  // More chunks than rows, or than an expert's capacity, leave chunks that
  // carry nothing of a full expert: a request for them is a mistake.
  // (An Option streams as a char: read it as a number.)
  int64_t requested = chunks;
  if (requested > 0) {
    if (!ShapedType::isDynamic(rows) && requested > rows) {
      out.emitError() << "chunks=" << requested << " is more than the " << rows
                      << " rows this layer dispatches per rank: a chunk "
                         "would carry no row";
      return failure();
    }
    if (capacity && requested > *capacity) {
      out.emitError() << "chunks=" << requested
                      << " is more than the dispatch's capacity of "
                      << *capacity
                      << " rows per expert: a chunk of a full expert would "
                         "carry no row";
      return failure();
    }
  }
  int64_t limit = requested > 0 ? requested : int64_t(maxChunks);
  if (!ShapedType::isDynamic(rows))
    limit = std::min(limit, std::max<int64_t>(rows, 1));
  if (capacity)
    limit = std::min(limit, std::max<int64_t>(*capacity, 1));

  // The prediction: both exchanges move the dispatch's rows, in the
  // schedule tamoe-hierarchical-all-to-all will give them under `mode`.
  TopologyAttr topology = TopologyAttr::lookup(out);
  RankedTensorType send = out.getSend().getType();
  std::optional<int64_t> bytes = elementBytes(send.getElementType());
  int64_t rowElements = 1;
  for (int64_t dim : send.getShape().drop_front())
    rowElements *= dim;
  auto unpredicted = [&](const Twine &why) -> FailureOr<int64_t> {
    if (requested > 0) {
      out.emitRemark() << "cut into " << requested
                       << " chunks along the tokens (chunks=" << requested
                       << "; no prediction: " << why << ")";
      return requested;
    }
    out.emitRemark() << "kept in one chunk: " << why;
    return 1;
  };
  if (!topology)
    return unpredicted("the module has no tamoe.topology");
  if (ShapedType::isDynamic(rows) || !bytes || send.getNumDynamicDims() > 1 ||
      (send.getRank() > 1 && ShapedType::isDynamic(send.getDimSize(1))))
    return unpredicted("its size is unknown at compile time");
  if (deviceGflops <= 0)
    return unpredicted("the experts' compute time is unknown (device-gflops)");
  ::tamoe::topology::Topology tree = topology.toTopology();
  planner::Pattern pattern = patternOf(dispatch, tree);
  planner::Workload perRow{rows, rowElements, *bytes, 1};
  SmallVector<planner::Schedule> schedules = {planner::Schedule::Flat};
  SymbolTableCollection symbols;
  shard::GridOp grid = shard::getGridOrNull(out, out.getGridAttr(), symbols);
  if (mode != "flat" && grid && !whyFlat(out, grid, tree, symbols))
    schedules.assign(mode == "hierarchical"
                         ? ArrayRef{planner::Schedule::Hierarchical}
                         : planner::defaultSchedules());
  planner::Cost best;
  bool first = true;
  for (planner::Schedule schedule : schedules) {
    planner::Cost cost = planner::evaluate(tree, pattern, perRow, schedule);
    if (first || planner::fasterThan(cost.totalUs(), best.totalUs()))
      best = cost;
    first = false;
  }
  planner::LayerTimes times;
  for (const planner::StageCost &stage : best.stages) {
    times.dispatchBandwidthUs += stage.bandwidthUs;
    times.dispatchLatencyUs += stage.latencyUs;
  }
  times.returnBandwidthUs = times.dispatchBandwidthUs;
  times.returnLatencyUs = times.dispatchLatencyUs;
  times.computeUs = planner::computeUs(chain.flops, deviceGflops);
  times.chunkOverheadUs = chunkOverheadUs;
  if (llvm::Error error = planner::verify(times)) {
    out.emitError() << "cannot predict the overlap: "
                    << llvm::toString(std::move(error));
    return failure();
  }
  int64_t chosen =
      requested > 0 ? requested : planner::bestChunkCount(times, limit);
  double one = planner::chunkedLayerUs(times, 1);
  double cut = planner::chunkedLayerUs(times, chosen);
  InFlightDiagnostic remark = out.emitRemark();
  if (chosen == 1)
    remark << "kept in one chunk: ";
  else
    remark << "cut into " << chosen << " chunks along the tokens: ";
  remark << ::tamoe::formatFixed(cut, 1) << " us predicted";
  if (chosen != 1)
    remark << " vs " << ::tamoe::formatFixed(one, 1) << " us in one chunk";
  remark << " (exchanges 2 x "
         << ::tamoe::formatFixed(times.dispatchBandwidthUs +
                                     times.dispatchLatencyUs,
                                 1)
         << " us " << planner::stringifySchedule(best.schedule) << ", experts "
         << ::tamoe::formatFixed(times.computeUs, 1) << " us at "
         << ::tamoe::formatFixed(deviceGflops, 1) << " GFLOP/s"
         << (requested > 0 ? ", chunks=" + std::to_string(requested)
                           : ", best of 1-" + std::to_string(limit))
         << ")";
  return chosen;
}

void OverlapPass::rewrite(const Chain &chain, int64_t count) {
  AllToAllOp out = chain.out, back = chain.back;
  OpBuilder b(back);
  // Every part of the dispatch first, so that each part's exchange can
  // start as soon as tamoe-schedule-exchanges lets it.
  // A part holds about 1/count of the rows (ChunkOp::partCapacity), and so
  // does what its exchange back returns: the parts together take about the
  // memory of the whole, not count times it.
  RankedTensorType sendType = out.getSend().getType();
  SmallVector<int64_t> partShape(sendType.getShape());
  partShape[0] = ChunkOp::partCapacity(
      partShape[0], out.getSendCounts().getType().getNumElements(), count);
  auto partType = sendType.clone(partShape);
  RankedTensorType returnedType = back.getReceived().getType();
  SmallVector<int64_t> returnedShape(returnedType.getShape());
  returnedShape[0] = partShape[0];
  SmallVector<ChunkOp> parts;
  for (int64_t c = 0; c < count; ++c)
    parts.push_back(ChunkOp::create(
        b, out.getLoc(), partType, out.getSendCounts().getType(),
        out.getSend(), out.getSendCounts(), b.getI64IntegerAttr(c),
        b.getI64IntegerAttr(count)));
  // Then every part's exchange out, in chunk order: a rank starts its
  // collectives in program order, so chunk 1's rows can travel while chunk
  // 0's experts compute only if chunk 1's exchange comes first.
  SmallVector<AllToAllOp> sent;
  for (ChunkOp part : parts)
    sent.push_back(AllToAllOp::create(
        b, out.getLoc(), out.getReceived().getType(),
        out.getRecvCounts().getType(), part.getChunkRows(),
        part.getChunkCounts(), /*expected_counts=*/Value(), out.getGridAttr(),
        out.getGridAxesAttr(), out.getLevelAttr()));
  SmallVector<Value> returned, received;
  for (AllToAllOp part : sent) {
    IRMapping mapping;
    mapping.map(out.getReceived(), part.getReceived());
    mapping.map(out.getRecvCounts(), part.getRecvCounts());
    for (Operation *op : chain.body)
      b.clone(*op, mapping);
    auto brought = AllToAllOp::create(
        b, back.getLoc(), returnedType.clone(returnedShape),
        back.getRecvCounts().getType(), mapping.lookup(back.getSend()),
        part.getRecvCounts(), /*expected_counts=*/Value(), back.getGridAttr(),
        back.getGridAxesAttr(), back.getLevelAttr());
    returned.push_back(brought.getReceived());
    received.push_back(part.getRecvCounts());
  }
  Value whole = UnchunkOp::create(b, back.getLoc(),
                                  back.getReceived().getType(), returned,
                                  out.getSendCounts());
  back.getReceived().replaceAllUsesWith(whole);
  // What comes back per peer is what was sent to it.
  back.getRecvCounts().replaceAllUsesWith(out.getSendCounts());
  if (chain.countsUsedOutside) {
    // The counts received in all are the sum of the parts'.
    Value total = received.front();
    for (Value part : ArrayRef<Value>(received).drop_front()) {
      auto init = tensor::EmptyOp::create(
          b, out.getLoc(), cast<RankedTensorType>(total.getType()).getShape(),
          getElementTypeOrSelf(total.getType()));
      total = linalg::AddOp::create(b, out.getLoc(), ValueRange{total, part},
                                    ValueRange{init})
                  .getResult(0);
    }
    out.getRecvCounts().replaceAllUsesWith(total);
  }
  back.erase();
  for (Operation *op : llvm::reverse(chain.body))
    op->erase();
  out.erase();
}

void OverlapPass::runOnOperation() {
  if (llvm::Error error = planner::verifyOverlapOptions(
          chunks, maxChunks, deviceGflops, chunkOverheadUs)) {
    getOperation().emitError()
        << "tamoe-overlap: " << llvm::toString(std::move(error));
    return signalPassFailure();
  }
  if (failed(verifyExchangeMode(getOperation(), "tamoe-overlap", mode)))
    return signalPassFailure();
  SmallVector<AllToAllOp> exchanges;
  getOperation().walk([&](AllToAllOp op) { exchanges.push_back(op); });
  // The exchanges back that a rewrite erased.
  DenseSet<Operation *> erased;
  for (AllToAllOp out : exchanges) {
    if (erased.contains(out))
      continue;
    FailureOr<Chain> chain = analyse(out);
    if (failed(chain))
      continue;
    FailureOr<int64_t> count = choose(*chain);
    if (failed(count))
      return signalPassFailure();
    if (*count == 1) {
      ++numKept;
      continue;
    }
    erased.insert(chain->back);
    rewrite(*chain, *count);
    ++numChunked;
  }
}
