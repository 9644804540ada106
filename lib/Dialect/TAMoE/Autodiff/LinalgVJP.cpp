//===- LinalgVJP.cpp - Gradient rules of linalg ops -----------------------===//
//
// linalg.matmul (default maps), the elementwise named ops and generics that
// a layer's dense part is written with, and sums (linalg.reduce of addf)
// with their transposes (linalg.broadcast). Only ops on tensors have
// gradients (ops on buffers have no results to differentiate). Gradients are built from the
// same ops, so that the device-resident lowering runs them too (matmuls
// with a transposed operand, tamoe_rt_map).
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/Autodiff/Autodiff.h"
#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Matchers.h"

using namespace mlir;
using namespace mlir::tamoe;

namespace {

/// Whether an op's init is accumulated into (read by the payload) rather
/// than overwritten; only then does its gradient reach the init.
bool readsInit(linalg::LinalgOp op) {
  return op.payloadUsesValueFromOperand(op.getDpsInitOperand(0));
}

/// x [m, k] times y [k, n], either operand read transposed from storage.
Value buildMatmul(OpBuilder &b, Location loc, RankedTensorType resultType,
             Value x, bool transposeX, Value y, bool transposeY,
             ArrayRef<std::pair<Value, int64_t>> resultSizes) {
  Value init = buildZeros(b, loc, resultType, resultSizes);
  auto op = linalg::MatmulOp::create(b, loc, TypeRange{resultType},
                                     ValueRange{x, y}, ValueRange{init});
  if (transposeX || transposeY) {
    MLIRContext *context = b.getContext();
    AffineExpr m, n, k;
    bindDims(context, m, n, k);
    auto map = [&](AffineExpr row, AffineExpr col) {
      return AffineMapAttr::get(AffineMap::get(3, 0, {row, col}, context));
    };
    op.setIndexingMapsAttr(b.getArrayAttr(
        {transposeX ? map(k, m) : map(m, k), transposeY ? map(n, k) : map(k, n),
         map(m, n)}));
  }
  return op.getResult(0);
}

struct MatmulVJP
    : public VJPOpInterface::ExternalModel<MatmulVJP, linalg::MatmulOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto matmul = cast<linalg::MatmulOp>(op);
    if (matmul.hasUserDefinedMaps())
      return op->emitOpError() << "cannot be differentiated: tamoe "
                                  "differentiates linalg.matmul with the "
                                  "default indexing maps";
    Value dC = context.cotangent(op->getResult(0));
    if (!dC)
      return success();
    Location loc = op->getLoc();
    Value a = matmul.getDpsInputs()[0], bMatrix = matmul.getDpsInputs()[1];
    // C [m, n] = A [m, k] B [k, n] (+ init): dA = dC B^T, dB = A^T dC.
    if (context.needsCotangent(a)) {
      Value primalB = context.primal(bMatrix);
      auto type = cast<RankedTensorType>(a.getType());
      context.addCotangent(a, buildMatmul(b, loc, type, dC, false, primalB, true,
                                     {{dC, 0}, {primalB, 0}}));
    }
    if (context.needsCotangent(bMatrix)) {
      Value primalA = context.primal(a);
      auto type = cast<RankedTensorType>(bMatrix.getType());
      context.addCotangent(bMatrix, buildMatmul(b, loc, type, primalA, true, dC,
                                           false, {{primalA, 1}, {dC, 1}}));
    }
    Value init = matmul.getDpsInits()[0];
    if (readsInit(matmul))
      context.addCotangent(init, dC);
    return success();
  }
};

template <typename OpTy, ElementwiseKind Kind>
struct NamedElementwiseVJP
    : public VJPOpInterface::ExternalModel<NamedElementwiseVJP<OpTy, Kind>,
                                           OpTy> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto named = cast<OpTy>(op);
    Value d = context.cotangent(op->getResult(0));
    if (!d)
      return success();
    Value x = named.getDpsInputs()[0], y = named.getDpsInputs()[1];
    if (x.getType() != op->getResult(0).getType() ||
        y.getType() != op->getResult(0).getType())
      return op->emitOpError() << "cannot be differentiated: tamoe "
                                  "differentiates elementwise ops whose "
                                  "operands and result have one type";
    return addElementwiseVJP(b, op->getLoc(), context, Kind, x, y,
                             op->getResult(0), d);
  }
};

struct GenericVJP
    : public VJPOpInterface::ExternalModel<GenericVJP, linalg::GenericOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto generic = cast<linalg::GenericOp>(op);
    // Matched before looking at result 0's gradient: the pass calls a rule
    // when any result has one, and a generic of several results (whose
    // result 0 may have none) has no rule.
    std::optional<Elementwise> match = matchElementwise(generic);
    if (!match)
      return op->emitOpError()
             << "has no gradient rule: tamoe differentiates a linalg.generic "
                "that is one elementwise add, sub, mul, neg, relu "
                "(max(x, 0)) or silu (x / (1 + exp(-x))) on operands of one "
                "shape";
    Value d = context.cotangent(op->getResult(0));
    if (!d)
      return success();
    return addElementwiseVJP(b, op->getLoc(), context, match->kind, match->a,
                             match->b, op->getResult(0), d);
  }
};

struct ReduceVJP
    : public VJPOpInterface::ExternalModel<ReduceVJP, linalg::ReduceOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto reduce = cast<linalg::ReduceOp>(op);
    if (reduce.getInputs().size() != 1 ||
        !isSumCombiner(reduce.getCombiner().front()))
      return op->emitOpError() << "has no gradient rule: tamoe differentiates "
                                  "a linalg.reduce that sums one input "
                                  "(arith.addf)";
    Value d = context.cotangent(op->getResult(0));
    if (!d)
      return success();
    Location loc = op->getLoc();
    Value input = reduce.getInputs()[0];
    // Each input element adds to one output element: the gradient spreads
    // the output's gradient back over the reduced dimensions.
    if (context.needsCotangent(input)) {
      auto type = cast<RankedTensorType>(input.getType());
      SmallVector<Value> dynamic;
      if (!type.hasStaticShape()) {
        Value primalInput = context.primal(input);
        for (int64_t dim = 0; dim < type.getRank(); ++dim)
          if (type.isDynamicDim(dim))
            dynamic.push_back(tensor::DimOp::create(b, loc, primalInput, dim));
      }
      Value init = tensor::EmptyOp::create(b, loc, type, dynamic);
      context.addCotangent(input, linalg::BroadcastOp::create(
                                      b, loc, d, init, reduce.getDimensions())
                                      .getResult()[0]);
    }
    context.addCotangent(reduce.getInits()[0], d);
    return success();
  }
};

struct BroadcastVJP
    : public VJPOpInterface::ExternalModel<BroadcastVJP, linalg::BroadcastOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b,
                         VJPContext &context) const {
    auto broadcast = cast<linalg::BroadcastOp>(op);
    Value d = context.cotangent(op->getResult(0));
    Value input = broadcast.getInput();
    if (!d || !context.needsCotangent(input))
      return success();
    Location loc = op->getLoc();
    auto type = cast<RankedTensorType>(input.getType());
    // The sizes of the input are those of the result's kept dimensions.
    SmallVector<std::pair<Value, int64_t>> sizes;
    ArrayRef<int64_t> added = broadcast.getDimensions();
    for (int64_t dim = 0, rank = cast<RankedTensorType>(d.getType()).getRank();
         dim < rank; ++dim)
      if (!llvm::is_contained(added, dim))
        sizes.push_back({d, dim});
    Value init = buildZeros(b, loc, type, sizes);
    auto sum = linalg::ReduceOp::create(
        b, loc, d, init, added,
        [](OpBuilder &body, Location loc, ValueRange args) {
          linalg::YieldOp::create(
              body, loc,
              Value(arith::AddFOp::create(body, loc, args[0], args[1])));
        });
    context.addCotangent(input, sum.getResult(0));
    return success();
  }
};

} // namespace

bool mlir::tamoe::isSumCombiner(Block &body) {
  auto yield = cast<linalg::YieldOp>(body.getTerminator());
  auto add = yield.getValues()[0].getDefiningOp<arith::AddFOp>();
  return add && add->getBlock() == &body && body.getOperations().size() == 2 &&
         llvm::is_contained(add->getOperands(), body.getArgument(0)) &&
         llvm::is_contained(add->getOperands(), body.getArgument(1));
}

void mlir::tamoe::registerLinalgVJPExternalModels(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *context, linalg::LinalgDialect *) {
    linalg::MatmulOp::attachInterface<MatmulVJP>(*context);
    linalg::AddOp::attachInterface<
        NamedElementwiseVJP<linalg::AddOp, ElementwiseKind::Add>>(*context);
    linalg::SubOp::attachInterface<
        NamedElementwiseVJP<linalg::SubOp, ElementwiseKind::Sub>>(*context);
    linalg::MulOp::attachInterface<
        NamedElementwiseVJP<linalg::MulOp, ElementwiseKind::Mul>>(*context);
    linalg::GenericOp::attachInterface<GenericVJP>(*context);
    linalg::ReduceOp::attachInterface<ReduceVJP>(*context);
    linalg::BroadcastOp::attachInterface<BroadcastVJP>(*context);
  });
}
