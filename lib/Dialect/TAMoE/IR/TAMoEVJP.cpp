//===- TAMoEVJP.cpp - Gradient rules of the tamoe ops ---------------------===//
//
// Each rule emits the gradients of an op's float operands from those of its
// results (docs/autodiff.md derives them). Ids, counts and positions are
// integers: they get no gradient, and selection (top-k, capacity drops,
// group limits) is piecewise constant, so gradients flow only through the
// values that were selected.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace mlir::tamoe;

/// Whether a rule has any work: some operand in `operands` needs a gradient
/// and the result gradient `cotangent` is not zero.
static bool needed(VJPContext &context, Value cotangent, ValueRange operands) {
  return cotangent && llvm::any_of(operands, [&](Value operand) {
           return context.needsCotangent(operand);
         });
}

LogicalResult GateOp::buildVJP(OpBuilder &builder, VJPContext &context) {
  Value dWeights = context.cotangent(getWeights());
  Value dProbs = context.cotangent(getProbs());
  if (!context.needsCotangent(getLogits()) || (!dWeights && !dProbs))
    return success();
  Value dLogits = GateGradOp::create(
      builder, getLoc(), getLogits().getType(), context.primal(getProbs()),
      context.primal(getExpertIds()), getScore(), getRenormalize(), dWeights,
      dProbs);
  context.addCotangent(getLogits(), dLogits);
  return success();
}

LogicalResult DispatchOp::buildVJP(OpBuilder &builder, VJPContext &context) {
  Value dRows = context.cotangent(getDispatched());
  // Tokens that are not floats never need a gradient.
  if (!needed(context, dRows, getTokens()))
    return success();
  // The transpose of the row gather: each token's rows summed back onto it,
  // dropped assignments (position -1) skipped.
  Value dTokens =
      CombineOp::create(builder, getLoc(), getTokens().getType(), dRows,
                        context.primal(getPositions()), Value());
  context.addCotangent(getTokens(), dTokens);
  return success();
}

LogicalResult AllToAllOp::buildVJP(OpBuilder &builder, VJPContext &context) {
  Value dReceived = context.cotangent(getReceived());
  if (!needed(context, dReceived, getSend()))
    return success();
  // The reverse exchange over the same group and level: every rank sends
  // back what it received, by source, and gets what it sent, so a receive
  // of dynamic size expects its own send counts and needs no counts round.
  Value expected = getSend().getType().hasStaticShape()
                       ? Value()
                       : context.primal(getSendCounts());
  auto reverse = AllToAllOp::create(
      builder, getLoc(), getSend().getType(), getSendCounts().getType(),
      dReceived, context.primal(getRecvCounts()), expected, getGridAttr(),
      getGridAxesAttr(), getLevelAttr());
  context.addCotangent(getSend(), reverse.getReceived());
  return success();
}

LogicalResult RegroupOp::buildVJP(OpBuilder &builder, VJPContext &context) {
  Value dRegrouped = context.cotangent(getRegrouped());
  if (!needed(context, dRegrouped, getRows()))
    return success();
  // Transposing the chunk grid back restores the original order.
  auto reverse = RegroupOp::create(builder, getLoc(), getRows().getType(),
                                   getCounts().getType(), dRegrouped,
                                   context.primal(getRegroupedCounts()));
  context.addCotangent(getRows(), reverse.getRegrouped());
  return success();
}

LogicalResult DedupPackOp::buildVJP(OpBuilder &builder, VJPContext &context) {
  Value dUnique = context.cotangent(getUnique());
  if (!needed(context, dUnique, getTokens()))
    return success();
  Value dTokens = DedupPackGradOp::create(
      builder, getLoc(), getTokens().getType(), dUnique,
      context.primal(getExpertIds()), context.primal(getPositions()),
      getExpertsPerNodeAttr(),
      builder.getI64IntegerAttr(getNodeCounts().getType().getDimSize(0)));
  context.addCotangent(getTokens(), dTokens);
  return success();
}

LogicalResult DedupExpandOp::buildVJP(OpBuilder &builder,
                                      VJPContext &context) {
  Value dExpanded = context.cotangent(getExpanded());
  if (!needed(context, dExpanded, getUnique()))
    return success();
  Value dUnique = DedupExpandGradOp::create(
      builder, getLoc(), getUnique().getType(), dExpanded,
      context.primal(getRoutes()), context.primal(getCounts()),
      getExpertsPerRankAttr(),
      builder.getI64IntegerAttr(getExpandedCounts().getType().getDimSize(0)));
  context.addCotangent(getUnique(), dUnique);
  return success();
}

LogicalResult GroupedMatmulOp::buildVJP(OpBuilder &builder,
                                        VJPContext &context) {
  Value dResult = context.cotangent(getResult());
  if (!needed(context, dResult, {getRows(), getWeights()}))
    return success();
  // One op for both gradients; the lowering skips a result nobody reads.
  auto grad = GroupedMatmulGradOp::create(
      builder, getLoc(), getRows().getType(), getWeights().getType(),
      context.primal(getRows()), context.primal(getCounts()),
      context.primal(getWeights()), dResult);
  context.addCotangent(getRows(), grad.getDRows());
  context.addCotangent(getWeights(), grad.getDWeights());
  return success();
}

LogicalResult CombineOp::buildVJP(OpBuilder &builder, VJPContext &context) {
  Value dCombined = context.cotangent(getCombined());
  Value weights = getWeights();
  SmallVector<Value> operands{getExpertOutputs()};
  if (weights)
    operands.push_back(weights);
  if (!needed(context, dCombined, operands))
    return success();
  Type dWeightsType = weights ? weights.getType() : Type();
  auto grad = CombineGradOp::create(
      builder, getLoc(), getExpertOutputs().getType(), dWeightsType,
      dCombined, context.primal(getExpertOutputs()),
      context.primal(getPositions()),
      weights ? context.primal(weights) : Value());
  context.addCotangent(getExpertOutputs(), grad.getDExpertOutputs());
  if (weights)
    context.addCotangent(weights, grad.getDWeights());
  return success();
}

LogicalResult AuxLossOp::buildVJP(OpBuilder &builder, VJPContext &context) {
  Value dLoss = context.cotangent(getLoss());
  Value weights = getExpertWeights();
  SmallVector<Value> operands{getProbs()};
  if (weights)
    operands.push_back(weights);
  if (!needed(context, dLoss, operands))
    return success();
  Value positions = getPositions();
  Value ids = context.primal(getExpertIds());
  Value primalPositions = positions ? context.primal(positions) : Value();
  if (context.needsCotangent(getProbs())) {
    Value dProbs = AuxLossGradOp::create(
        builder, getLoc(), getProbs().getType(), getKind(), ids, dLoss,
        weights ? context.primal(weights) : Value(), primalPositions);
    context.addCotangent(getProbs(), dProbs);
  }
  // The weights tamoe-inject-topology-aux-loss builds are constants, but
  // weights computed from an argument get their gradient, not silently 0:
  // L is linear in w, dL/dw_e = dL * E f_e P_e = sum_t probs[t, e] *
  // (the switch loss's d_probs)[t, e], a column sum of a product.
  if (weights && context.needsCotangent(weights)) {
    auto probsType = getProbs().getType();
    Value dSwitch =
        AuxLossGradOp::create(builder, getLoc(), probsType, AuxLossKind::Switch,
                              ids, dLoss, Value(), primalPositions);
    auto weightsType = cast<RankedTensorType>(weights.getType());
    auto zerosType = RankedTensorType::get(probsType.getDimSize(1),
                                           probsType.getElementType());
    Value zeros = arith::ConstantOp::create(builder, getLoc(),
                                            builder.getZeroAttr(zerosType));
    MLIRContext *ctx = builder.getContext();
    AffineMap all = AffineMap::getMultiDimIdentityMap(2, ctx);
    AffineMap expert = AffineMap::get(2, 0, builder.getAffineDimExpr(1), ctx);
    auto sum = linalg::GenericOp::create(
        builder, getLoc(), TypeRange{zerosType},
        ValueRange{context.primal(getProbs()), dSwitch}, ValueRange{zeros},
        ArrayRef<AffineMap>{all, all, expert},
        ArrayRef<utils::IteratorType>{utils::IteratorType::reduction,
                                      utils::IteratorType::parallel},
        [](OpBuilder &b, Location loc, ValueRange args) {
          Value product = arith::MulFOp::create(b, loc, args[0], args[1]);
          linalg::YieldOp::create(
              b, loc, Value(arith::AddFOp::create(b, loc, args[2], product)));
        });
    Value dWeights = sum.getResult(0);
    if (dWeights.getType() != weightsType)
      dWeights =
          tensor::CastOp::create(builder, getLoc(), weightsType, dWeights);
    context.addCotangent(weights, dWeights);
  }
  return success();
}

LogicalResult AllReduceOp::buildVJP(OpBuilder &builder, VJPContext &context) {
  Value dResult = context.cotangent(getResult());
  if (!needed(context, dResult, getInput()))
    return success();
  // Every rank's result depends on every rank's input with weight 1 (or
  // 1/G): the transpose is the same reduction.
  Value dInput =
      AllReduceOp::create(builder, getLoc(), getInput().getType(), dResult,
                          getGridAttr(), getGridAxesAttr(), getAverageAttr());
  context.addCotangent(getInput(), dInput);
  return success();
}
