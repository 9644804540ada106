//===- SchedulingVJP.cpp - Gradients of tamoe.chunk and tamoe.unchunk -----===//
//
// Both only move rows, so their gradients move the rows' gradients back:
// a part of the whole's gradient for each part, and a part's gradient put in
// its place among zeros for the whole. A chunked layer's backward is then
// chunked too, and tamoe-schedule-exchanges overlaps its exchanges. The C
// parts' gradients of one whole, each among zeros, sum to one unchunk of
// them all (mergeDisjointUnchunks), not C full buffers added.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/Autodiff/Autodiff.h"
#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"
#include "tamoe/Planner/Overlap.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Matchers.h"

using namespace mlir;
using namespace mlir::tamoe;

namespace {
struct ChunkVJP : public VJPOpInterface::ExternalModel<ChunkVJP, ChunkOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto chunk = cast<ChunkOp>(op);
    Value d = context.cotangent(chunk.getChunkRows());
    if (!d || !context.needsCotangent(chunk.getRows()))
      return success();
    // The gradient lists every part, one per operand: a count as large as
    // the attribute allows (2^63) would be built for ever.
    if (chunk.getChunks() > uint64_t(::tamoe::planner::kMaxChunks))
      return op->emitOpError()
             << "cannot be differentiated: its gradient lists all "
             << chunk.getChunks() << " parts, and tamoe differentiates at most "
             << ::tamoe::planner::kMaxChunks
             << " (the most tamoe-overlap makes)";
    // This part's gradient in its place, the other parts' zero.
    SmallVector<Value> parts;
    for (int64_t part = 0; part < int64_t(chunk.getChunks()); ++part)
      parts.push_back(part == int64_t(chunk.getChunk())
                          ? d
                          : buildZerosLike(b, op->getLoc(), d));
    Value dRows = UnchunkOp::create(b, op->getLoc(), chunk.getRows().getType(),
                                    parts, context.primal(chunk.getCounts()));
    context.addCotangent(chunk.getRows(), dRows);
    return success();
  }
};

struct UnchunkVJP
    : public VJPOpInterface::ExternalModel<UnchunkVJP, UnchunkOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto unchunk = cast<UnchunkOp>(op);
    Value d = context.cotangent(unchunk.getRows());
    if (!d)
      return success();
    Value counts = context.primal(unchunk.getCounts());
    int64_t chunks = unchunk.getParts().size();
    for (auto [index, part] : llvm::enumerate(unchunk.getParts())) {
      if (!context.needsCotangent(part))
        continue;
      auto dPart = ChunkOp::create(b, op->getLoc(), part.getType(),
                                   counts.getType(), d, counts,
                                   b.getI64IntegerAttr(index),
                                   b.getI64IntegerAttr(chunks));
      context.addCotangent(part, dPart.getChunkRows());
    }
    return success();
  }
};
} // namespace

void mlir::tamoe::registerSchedulingVJPExternalModels(
    DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *context, TAMoEDialect *) {
    ChunkOp::attachInterface<ChunkVJP>(*context);
    UnchunkOp::attachInterface<UnchunkVJP>(*context);
  });
}

/// Whether `value` is zeros (buildZeros: a linalg.fill of 0).
static bool isZeros(Value value) {
  auto fill = value.getDefiningOp<linalg::FillOp>();
  return fill && matchPattern(fill.getInputs()[0], m_AnyZeroFloat());
}

void mlir::tamoe::eraseDeadUnchunk(Operation *op) {
  if (!op || !op->use_empty())
    return;
  SmallVector<Value> operands(op->getOperands());
  op->erase();
  for (Value operand : operands)
    if (auto fill = operand.getDefiningOp<linalg::FillOp>();
        fill && isZeros(operand) && fill->use_empty()) {
      Value init = fill.getOutputs()[0];
      fill->erase();
      if (auto empty = init.getDefiningOp<tensor::EmptyOp>();
          empty && empty->use_empty())
        empty->erase();
    }
}

Value mlir::tamoe::mergeDisjointUnchunks(OpBuilder &builder, Value a,
                                         Value b) {
  auto x = a.getDefiningOp<UnchunkOp>(), y = b.getDefiningOp<UnchunkOp>();
  if (!x || !y || x.getCounts() != y.getCounts() ||
      x.getType() != y.getType() ||
      x.getParts().size() != y.getParts().size())
    return {};
  SmallVector<Value> parts;
  for (auto [p, q] : llvm::zip_equal(x.getParts(), y.getParts())) {
    if (isZeros(q))
      parts.push_back(p);
    else if (isZeros(p))
      parts.push_back(q);
    else
      return {};
  }
  return UnchunkOp::create(builder, y.getLoc(), y.getType(), parts,
                           y.getCounts());
}
