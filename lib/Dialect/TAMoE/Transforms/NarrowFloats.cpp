//===- NarrowFloats.cpp - bf16 and f16 arithmetic in f32 ------------------===//

#include "NarrowFloats.h"
#include "tamoe/Dialect/TAMoE/Autodiff/Autodiff.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"

using namespace mlir;
using namespace mlir::tamoe;

/// The element type of `value` if it is a tensor of bf16 or f16, else null.
static FloatType narrowElementType(Value value) {
  auto type = dyn_cast<RankedTensorType>(value.getType());
  if (!type || !isa<BFloat16Type, Float16Type>(type.getElementType()))
    return {};
  return cast<FloatType>(type.getElementType());
}

/// `value` (a tensor or a scalar) extended to f32.
static Value extendToF32(OpBuilder &b, Location loc, Value value) {
  Type f32 = b.getF32Type();
  Type type = value.getType();
  if (auto tensor = dyn_cast<RankedTensorType>(type))
    type = tensor.clone(f32);
  else
    type = f32;
  return arith::ExtFOp::create(b, loc, type, value);
}

/// A sum into bf16 or f16: a linalg.matmul, or a linalg.reduce of
/// arith.addf. Upstream's loops add up in the result type, one rounding per
/// term, so a weight or bias gradient summed over thousands of tokens would
/// keep few of its bits.
static bool isNarrowSum(linalg::LinalgOp op) {
  if (!op.hasPureTensorSemantics() || op->getNumResults() != 1 ||
      !narrowElementType(op->getResult(0)))
    return false;
  auto reduce = dyn_cast<linalg::ReduceOp>(op.getOperation());
  return isa<linalg::MatmulOp>(op) ||
         (reduce && reduce.getInputs().size() == 1 &&
          isSumCombiner(reduce.getCombiner().front()));
}

static void sumInF32(linalg::LinalgOp op) {
  OpBuilder b(op);
  Location loc = op->getLoc();
  auto type = cast<RankedTensorType>(op->getResult(0).getType());
  RankedTensorType wide = type.clone(b.getF32Type());
  Value init = extendToF32(b, loc, op.getDpsInits()[0]);
  Value sum;
  if (auto matmul = dyn_cast<linalg::MatmulOp>(op.getOperation())) {
    // The same maps and operand casts; the payload is built for f32.
    sum =
        linalg::MatmulOp::create(b, loc, TypeRange{wide}, matmul.getDpsInputs(),
                                 ValueRange{init}, op->getAttrs())
            ->getResult(0);
  } else {
    auto reduce = cast<linalg::ReduceOp>(op.getOperation());
    sum = linalg::ReduceOp::create(
              b, loc, extendToF32(b, loc, reduce.getInputs()[0]), init,
              reduce.getDimensions(),
              [](OpBuilder &body, Location at, ValueRange args) {
                linalg::YieldOp::create(
                    body, at,
                    Value(arith::AddFOp::create(body, at, args[0], args[1])));
              })
              ->getResult(0);
  }
  op->getResult(0).replaceAllUsesWith(
      arith::TruncFOp::create(b, loc, type, sum));
  op->erase();
}

/// Whether `generic` is elementwise on tensors of one narrow float type and
/// rounds more than once per element: its body is arith and math ops on that
/// type (no cast between float types, which asks for a rounding of its own),
/// more than one of which computes a value of it, and none of which compares
/// or classifies a value it computed. One such op rounds once
/// either way: f32 keeps enough of a sum, product or quotient of two bf16 or
/// f16 values that rounding it again to the narrow type changes nothing.
static bool roundsRepeatedly(linalg::GenericOp generic) {
  if (!generic.hasPureTensorSemantics() || generic.getNumResults() == 0 ||
      generic.getNumParallelLoops() != generic.getNumLoops())
    return false;
  FloatType narrow = narrowElementType(generic->getResult(0));
  if (!narrow || llvm::any_of(generic->getOperands(), [&](Value operand) {
        return narrowElementType(operand) != narrow;
      }))
    return false;
  // Scalars of the narrow type, integers and indices only: an op of
  // another float type or of vectors would not fit among f32 values.
  auto isForeign = [&](Type type) {
    return !type.isIntOrIndexOrFloat() ||
           (isa<FloatType>(type) && type != narrow);
  };
  // A comparison or classification of a value the body computed observes
  // how that value was rounded, overflow included: an f16 product past
  // 65504 is inf, which a loss-scaling guard tests for and replaces, while
  // in f32 it stays finite, passes the test and becomes inf only when the
  // result is truncated.
  Block *body = generic.getBody();
  auto observesRounding = [&](Operation &op) {
    return isa<arith::CmpFOp, math::IsInfOp, math::IsNaNOp, math::IsFiniteOp,
               math::IsNormalOp>(op) &&
           llvm::any_of(op.getOperands(), [&](Value operand) {
             Operation *def = operand.getDefiningOp();
             return def && def->getBlock() == body &&
                    !isa<arith::ConstantOp>(def);
           });
  };
  int roundings = 0;
  for (Operation &op : body->without_terminator()) {
    if (!isa<arith::ArithDialect, math::MathDialect>(op.getDialect()) ||
        observesRounding(op) || op.getNumRegions() != 0 ||
        isa<arith::ExtFOp, arith::TruncFOp, arith::BitcastOp>(op) ||
        llvm::any_of(op.getOperandTypes(), isForeign) ||
        llvm::any_of(op.getResultTypes(), isForeign))
      return false;
    if (!isa<arith::ConstantOp>(op) &&
        llvm::is_contained(op.getResultTypes(), narrow))
      ++roundings;
  }
  return roundings > 1;
}

static void computeInF32(linalg::GenericOp generic) {
  OpBuilder b(generic);
  Location loc = generic.getLoc();
  Type f32 = b.getF32Type();
  Block *body = generic.getBody();
  FloatType narrow = narrowElementType(generic->getResult(0));
  // Narrow values the body takes from outside (constants that folding
  // hoisted, say) enter it extended.
  IRMapping mapping;
  body->walk([&](Operation *op) {
    for (Value operand : op->getOperands())
      if (operand.getType() == narrow && operand.getParentBlock() != body &&
          !mapping.contains(operand))
        mapping.map(operand, extendToF32(b, loc, operand));
  });
  auto inputs = llvm::map_to_vector(generic.getInputs(), [&](Value input) {
    return extendToF32(b, loc, input);
  });
  // An output the body only writes starts empty, as it did.
  SmallVector<Value> inits;
  for (OpOperand &init : generic.getDpsInitsMutable())
    inits.push_back(
        generic.payloadUsesValueFromOperand(&init)
            ? extendToF32(b, loc, init.get())
            : tensor::EmptyOp::create(
                  b, loc, tensor::getMixedSizes(b, loc, init.get()), f32)
                  .getResult());
  auto wideTypes = llvm::map_to_vector(generic->getResultTypes(), [&](Type t) {
    return Type(cast<RankedTensorType>(t).clone(f32));
  });
  auto wide = linalg::GenericOp::create(
      b, loc, wideTypes, inputs, inits, generic.getIndexingMapsArray(),
      generic.getIteratorTypesArray(),
      [&](OpBuilder &nested, Location at, ValueRange arguments) {
        mapping.map(body->getArguments(), arguments);
        for (Operation &op : body->without_terminator()) {
          Operation *copy = nested.clone(op, mapping);
          if (isa<arith::ConstantOp>(copy) &&
              copy->getResult(0).getType() == narrow) {
            mapping.map(op.getResult(0),
                        extendToF32(nested, at, copy->getResult(0)));
            continue;
          }
          for (Value result : copy->getResults())
            if (result.getType() == narrow)
              result.setType(f32);
        }
        linalg::YieldOp::create(
            nested, at,
            llvm::map_to_vector(body->getTerminator()->getOperands(),
                                [&](Value yielded) {
                                  return mapping.lookupOrDefault(yielded);
                                }));
      });
  for (auto [result, computed] :
       llvm::zip_equal(generic->getResults(), wide->getResults()))
    result.replaceAllUsesWith(
        arith::TruncFOp::create(b, loc, result.getType(), computed));
  generic.erase();
}

void mlir::tamoe::computeNarrowFloatsInF32(ModuleOp module) {
  SmallVector<linalg::LinalgOp> sums;
  SmallVector<linalg::GenericOp> elementwise;
  module.walk([&](linalg::LinalgOp op) {
    if (isNarrowSum(op))
      sums.push_back(op);
    else if (auto generic = dyn_cast<linalg::GenericOp>(op.getOperation());
             generic && roundsRepeatedly(generic))
      elementwise.push_back(generic);
  });
  for (linalg::LinalgOp op : sums)
    sumInF32(op);
  for (linalg::GenericOp generic : elementwise)
    computeInF32(generic);
}
