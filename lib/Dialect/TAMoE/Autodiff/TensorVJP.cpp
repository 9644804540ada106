//===- TensorVJP.cpp - Gradient rules of tensor ops -----------------------===//
//
// Reshapes, casts and slices move elements without computing: their
// gradients move the gradient's elements back.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/Autodiff/Autodiff.h"
#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace mlir::tamoe;

namespace {

/// Offsets, sizes or strides of a slice as the backward can use them.
SmallVector<OpFoldResult> primals(VJPContext &context,
                                  ArrayRef<OpFoldResult> values) {
  return llvm::map_to_vector(values, [&](OpFoldResult value) {
    if (auto dynamic = dyn_cast<Value>(value))
      return OpFoldResult(context.primal(dynamic));
    return value;
  });
}

struct ExpandShapeVJP
    : public VJPOpInterface::ExternalModel<ExpandShapeVJP,
                                           tensor::ExpandShapeOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto expand = cast<tensor::ExpandShapeOp>(op);
    Value d = context.cotangent(expand.getResult());
    if (!d || !context.needsCotangent(expand.getSrc()))
      return success();
    context.addCotangent(expand.getSrc(),
                         tensor::CollapseShapeOp::create(
                             b, op->getLoc(), expand.getSrcType(), d,
                             expand.getReassociationIndices()));
    return success();
  }
};

struct CollapseShapeVJP
    : public VJPOpInterface::ExternalModel<CollapseShapeVJP,
                                           tensor::CollapseShapeOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto collapse = cast<tensor::CollapseShapeOp>(op);
    Value d = context.cotangent(collapse.getResult());
    Value source = collapse.getSrc();
    if (!d || !context.needsCotangent(source))
      return success();
    // The sizes of the collapsed groups come from the source.
    SmallVector<OpFoldResult> sizes;
    RankedTensorType type = collapse.getSrcType();
    Value primalSource =
        type.hasStaticShape() ? Value() : context.primal(source);
    for (int64_t dim = 0; dim < type.getRank(); ++dim)
      sizes.push_back(
          type.isDynamicDim(dim)
              ? OpFoldResult(tensor::DimOp::create(b, op->getLoc(),
                                                   primalSource, dim)
                                 .getResult())
              : OpFoldResult(b.getIndexAttr(type.getDimSize(dim))));
    // MLIR 22's expand-strided-metadata crashes on an expand_shape whose
    // group has two dynamic sizes or more (batch x sequence flattened into
    // rows): such a gradient is a tensor.reshape to the sizes instead.
    bool twoDynamicInAGroup = llvm::any_of(
        collapse.getReassociationIndices(), [&](ReassociationIndices group) {
          return llvm::count_if(group, [&](int64_t dim) {
                   return type.isDynamicDim(dim);
                 }) > 1;
        });
    if (!twoDynamicInAGroup) {
      context.addCotangent(source,
                           tensor::ExpandShapeOp::create(
                               b, op->getLoc(), type, d,
                               collapse.getReassociationIndices(), sizes));
      return success();
    }
    SmallVector<Value> shape;
    for (auto [dim, size] : llvm::enumerate(sizes))
      shape.push_back(type.isDynamicDim(dim)
                          ? cast<Value>(size)
                          : arith::ConstantIndexOp::create(
                                b, op->getLoc(), type.getDimSize(dim)));
    Value shapeTensor = tensor::FromElementsOp::create(b, op->getLoc(), shape);
    context.addCotangent(source, tensor::ReshapeOp::create(
                                     b, op->getLoc(), type, d, shapeTensor));
    return success();
  }
};

struct CastVJP : public VJPOpInterface::ExternalModel<CastVJP, tensor::CastOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto cast = llvm::cast<tensor::CastOp>(op);
    Value d = context.cotangent(cast.getResult());
    if (d)
      context.addCotangent(cast.getSource(),
                           tensor::CastOp::create(b, op->getLoc(),
                                                  cast.getSource().getType(),
                                                  d));
    return success();
  }
};

struct ExtractSliceVJP
    : public VJPOpInterface::ExternalModel<ExtractSliceVJP,
                                           tensor::ExtractSliceOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto slice = cast<tensor::ExtractSliceOp>(op);
    Value d = context.cotangent(slice.getResult());
    Value source = slice.getSource();
    if (!d || !context.needsCotangent(source))
      return success();
    Location loc = op->getLoc();
    // The slice's gradient in place, zeros elsewhere.
    RankedTensorType type = slice.getSourceType();
    Value primalSource =
        type.hasStaticShape() ? Value() : context.primal(source);
    SmallVector<std::pair<Value, int64_t>> sizes;
    for (int64_t dim = 0; dim < type.getRank(); ++dim)
      sizes.push_back({primalSource, dim});
    Value zeros = buildZeros(b, loc, type, sizes);
    context.addCotangent(
        source, tensor::InsertSliceOp::create(
                    b, loc, d, zeros, primals(context, slice.getMixedOffsets()),
                    primals(context, slice.getMixedSizes()),
                    primals(context, slice.getMixedStrides())));
    return success();
  }
};

struct InsertSliceVJP
    : public VJPOpInterface::ExternalModel<InsertSliceVJP,
                                           tensor::InsertSliceOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto insert = cast<tensor::InsertSliceOp>(op);
    Value d = context.cotangent(insert.getResult());
    if (!d)
      return success();
    Location loc = op->getLoc();
    SmallVector<OpFoldResult> offsets =
        primals(context, insert.getMixedOffsets());
    SmallVector<OpFoldResult> sizes = primals(context, insert.getMixedSizes());
    SmallVector<OpFoldResult> strides =
        primals(context, insert.getMixedStrides());
    // The inserted tensor's gradient is the gradient's slice; the
    // destination's is the gradient with that slice overwritten by zeros.
    Value source = insert.getSource();
    if (context.needsCotangent(source))
      context.addCotangent(source, tensor::ExtractSliceOp::create(
                                       b, loc, insert.getSourceType(), d,
                                       offsets, sizes, strides));
    Value dest = insert.getDest();
    if (context.needsCotangent(dest)) {
      RankedTensorType type = insert.getSourceType();
      Value zeros = type.hasStaticShape()
                        ? buildZeros(b, loc, type, {})
                        : buildZerosLike(b, loc, context.primal(source));
      context.addCotangent(dest, tensor::InsertSliceOp::create(
                                     b, loc, zeros, d, offsets, sizes,
                                     strides));
    }
    return success();
  }
};

} // namespace

void mlir::tamoe::registerTensorVJPExternalModels(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *context, tensor::TensorDialect *) {
    tensor::ExpandShapeOp::attachInterface<ExpandShapeVJP>(*context);
    tensor::CollapseShapeOp::attachInterface<CollapseShapeVJP>(*context);
    tensor::CastOp::attachInterface<CastVJP>(*context);
    tensor::ExtractSliceOp::attachInterface<ExtractSliceVJP>(*context);
    tensor::InsertSliceOp::attachInterface<InsertSliceVJP>(*context);
  });
}
