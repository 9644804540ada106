//===- Elementwise.cpp - Elementwise building blocks of gradients ---------===//

#include "tamoe/Dialect/TAMoE/Autodiff/Autodiff.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Matchers.h"

using namespace mlir;
using namespace mlir::tamoe;

std::optional<Elementwise> mlir::tamoe::matchElementwise(linalg::GenericOp op) {
  if (!op.hasPureTensorSemantics() || op.getNumDpsInits() != 1 ||
      op.getNumDpsInputs() < 1 || op.getNumDpsInputs() > 2 ||
      op.getNumLoops() != op.getNumParallelLoops() ||
      !llvm::all_of(op.getIndexingMapsArray(),
                    [](AffineMap map) { return map.isIdentity(); }))
    return std::nullopt;
  Block *body = op.getBlock();
  if (!body->getArguments().back().use_empty())
    return std::nullopt;
  auto yield = cast<linalg::YieldOp>(body->getTerminator());
  Operation *compute = yield.getValues()[0].getDefiningOp();
  if (!compute || compute->getBlock() != body)
    return std::nullopt;
  // The input a value of the body reads, or null.
  auto input = [&](Value value) -> Value {
    auto argument = dyn_cast<BlockArgument>(value);
    if (!argument || argument.getOwner() != body ||
        argument.getArgNumber() >= op.getNumDpsInputs())
      return Value();
    return op.getDpsInputs()[argument.getArgNumber()];
  };
  auto zero = [](Value value) {
    return matchPattern(value, m_AnyZeroFloat());
  };
  // What relu and its gradient produce for the inputs they drop: +0, which
  // is what the runtime writes (max(x, -0.0) is -0.0 for a negative x).
  auto positiveZero = [](Value value) {
    return matchPattern(value, m_PosZeroFloat());
  };
  // Anything in the body besides `ops` and constants would be dropped.
  auto only = [&](ArrayRef<Operation *> ops) {
    return llvm::all_of(body->without_terminator(), [&](Operation &inner) {
      return llvm::is_contained(ops, &inner) || isa<arith::ConstantOp>(inner);
    });
  };
  unsigned inputs = op.getNumDpsInputs();
  auto one = [](Value value) { return matchPattern(value, m_OneFloat()); };
  // The ops of the body that a pattern used, for `only`.
  SmallVector<Operation *> used;
  // `value` = op(lhs, rhs) of OpTy, either operand order when `commutes`:
  // the operands, lhs first (as matched).
  auto binary = [&](auto tag, Value value, bool commutes, auto lhs,
                    auto rhs) -> bool {
    using OpTy = decltype(tag);
    auto op = value.getDefiningOp<OpTy>();
    if (!op || op->getBlock() != body)
      return false;
    used.push_back(op);
    if (lhs(op.getLhs()) && rhs(op.getRhs()))
      return true;
    return commutes && lhs(op.getRhs()) && rhs(op.getLhs());
  };
  // 1 / (1 + exp(-x)) (the sigmoid), binding its x.
  Value sigmoidOf;
  auto exponent = [&](Value value) {
    auto exp = value.getDefiningOp<math::ExpOp>();
    auto neg = exp ? exp.getOperand().getDefiningOp<arith::NegFOp>() : nullptr;
    if (!neg || exp->getBlock() != body || neg->getBlock() != body)
      return false;
    used.append({exp, neg});
    sigmoidOf = neg.getOperand();
    return true;
  };
  auto denominator = [&](Value value) {
    return binary(arith::AddFOp(), value, true, exponent, one);
  };
  auto sigmoid = [&](Value value) {
    return binary(arith::DivFOp(), value, false, one, denominator);
  };
  Value yielded = yield.getValues()[0];

  // silu: x / (1 + exp(-x)), as buildElementwise writes it.
  Value silu;
  if (binary(
          arith::DivFOp(), yielded, false,
          [&](Value v) { return (silu = v), true; }, denominator) &&
      silu == sigmoidOf && input(silu) && inputs == 1 && only(used))
    return Elementwise{ElementwiseKind::Silu, input(silu), Value()};
  used.clear();
  // silu's gradient: b * (s * (1 + x * (1 - s))), s the sigmoid of x.
  Value gradient, s, again;
  auto oneMinusS = [&](Value v) {
    return binary(arith::SubFOp(), v, false, one,
                  [&](Value w) { return w == s; });
  };
  auto xTimes = [&](Value v) {
    return binary(
        arith::MulFOp(), v, true, [&](Value w) { return (again = w), true; },
        oneMinusS);
  };
  auto onePlus = [&](Value v) {
    return binary(arith::AddFOp(), v, true, one, xTimes);
  };
  auto derivative = [&](Value v) {
    return binary(
        arith::MulFOp(), v, true,
        [&](Value w) { return sigmoid(w) && (s = w); }, onePlus);
  };
  if (inputs == 2 &&
      binary(
          arith::MulFOp(), yielded, true,
          [&](Value v) { return (gradient = v), true; }, derivative) &&
      again == sigmoidOf && input(again) && input(gradient) && only(used))
    return Elementwise{ElementwiseKind::SiluGrad, input(again),
                       input(gradient)};

  // relu's gradient: select(a > 0, b, 0).
  if (auto select = dyn_cast<arith::SelectOp>(compute)) {
    auto compare = select.getCondition().getDefiningOp<arith::CmpFOp>();
    if (inputs != 2 || !compare || compare->getBlock() != body ||
        compare.getPredicate() != arith::CmpFPredicate::OGT ||
        !zero(compare.getRhs()) || !positiveZero(select.getFalseValue()) ||
        !only({select, compare}))
      return std::nullopt;
    Value a = input(compare.getLhs()), b = input(select.getTrueValue());
    if (!a || !b)
      return std::nullopt;
    return Elementwise{ElementwiseKind::ReluGrad, a, b};
  }
  if (!only({compute}))
    return std::nullopt;
  if (auto negate = dyn_cast<arith::NegFOp>(compute)) {
    Value a = input(negate.getOperand());
    if (inputs != 1 || !a)
      return std::nullopt;
    return Elementwise{ElementwiseKind::Neg, a, Value()};
  }
  if (compute->getNumOperands() != 2)
    return std::nullopt;
  Value x = input(compute->getOperand(0)), y = input(compute->getOperand(1));
  if (isa<arith::MaximumFOp>(compute) && inputs == 1) {
    if (x && positiveZero(compute->getOperand(1)))
      return Elementwise{ElementwiseKind::Relu, x, Value()};
    if (y && positiveZero(compute->getOperand(0)))
      return Elementwise{ElementwiseKind::Relu, y, Value()};
    return std::nullopt;
  }
  if (!x || !y)
    return std::nullopt;
  if (isa<arith::AddFOp>(compute))
    return Elementwise{ElementwiseKind::Add, x, y};
  if (isa<arith::SubFOp>(compute))
    return Elementwise{ElementwiseKind::Sub, x, y};
  if (isa<arith::MulFOp>(compute))
    return Elementwise{ElementwiseKind::Mul, x, y};
  return std::nullopt;
}

Value mlir::tamoe::buildEmptyLike(OpBuilder &builder, Location loc,
                                  Value like) {
  auto type = cast<RankedTensorType>(like.getType());
  SmallVector<Value> sizes;
  for (int64_t dim = 0; dim < type.getRank(); ++dim)
    if (type.isDynamicDim(dim))
      sizes.push_back(tensor::DimOp::create(builder, loc, like, dim));
  return tensor::EmptyOp::create(builder, loc, type, sizes);
}

Value mlir::tamoe::buildZeros(OpBuilder &builder, Location loc,
                              RankedTensorType type,
                              ArrayRef<std::pair<Value, int64_t>> sizes) {
  SmallVector<Value> dynamic;
  for (auto [dim, size] : llvm::enumerate(sizes))
    if (type.isDynamicDim(dim))
      dynamic.push_back(
          tensor::DimOp::create(builder, loc, size.first, size.second));
  Value empty = tensor::EmptyOp::create(builder, loc, type, dynamic);
  Value zero = arith::ConstantOp::create(
      builder, loc, builder.getZeroAttr(type.getElementType()));
  return linalg::FillOp::create(builder, loc, zero, empty).getResult(0);
}

Value mlir::tamoe::buildZerosLike(OpBuilder &builder, Location loc,
                                  Value like) {
  auto type = cast<RankedTensorType>(like.getType());
  SmallVector<std::pair<Value, int64_t>> sizes;
  for (int64_t dim = 0; dim < type.getRank(); ++dim)
    sizes.push_back({like, dim});
  return buildZeros(builder, loc, type, sizes);
}

void mlir::tamoe::registerVJPExternalModels(DialectRegistry &registry) {
  registerArithVJPExternalModels(registry);
  registerLinalgVJPExternalModels(registry);
  registerTensorVJPExternalModels(registry);
  registerSchedulingVJPExternalModels(registry);
}

Value mlir::tamoe::buildElementwise(OpBuilder &builder, Location loc,
                                    ElementwiseKind kind, Value a, Value b) {
  Value init = buildEmptyLike(builder, loc, a);
  switch (kind) {
  case ElementwiseKind::Add:
    return linalg::AddOp::create(builder, loc, ValueRange{a, b}, init)
        .getResult(0);
  case ElementwiseKind::Sub:
    return linalg::SubOp::create(builder, loc, ValueRange{a, b}, init)
        .getResult(0);
  case ElementwiseKind::Mul:
    return linalg::MulOp::create(builder, loc, ValueRange{a, b}, init)
        .getResult(0);
  case ElementwiseKind::Relu:
  case ElementwiseKind::Neg:
  case ElementwiseKind::ReluGrad:
  case ElementwiseKind::Silu:
  case ElementwiseKind::SiluGrad:
    break;
  }
  auto type = cast<RankedTensorType>(a.getType());
  SmallVector<Value> inputs{a};
  if (b)
    inputs.push_back(b);
  SmallVector<AffineMap> maps(
      inputs.size() + 1, builder.getMultiDimIdentityMap(type.getRank()));
  SmallVector<utils::IteratorType> iterators(type.getRank(),
                                             utils::IteratorType::parallel);
  auto generic = linalg::GenericOp::create(
      builder, loc, type, inputs, init, maps, iterators,
      [&](OpBuilder &body, Location loc, ValueRange args) {
        if (kind == ElementwiseKind::Neg) {
          linalg::YieldOp::create(body, loc,
                                  Value(arith::NegFOp::create(body, loc,
                                                              args[0])));
          return;
        }
        Type element = type.getElementType();
        auto one = [&] {
          return arith::ConstantOp::create(body, loc,
                                           body.getFloatAttr(element, 1.0));
        };
        // 1 + exp(-x) and the sigmoid 1 / (1 + exp(-x)).
        auto denominator = [&](Value x) {
          Value e = math::ExpOp::create(body, loc,
                                        arith::NegFOp::create(body, loc, x));
          return arith::AddFOp::create(body, loc, e, one()).getResult();
        };
        if (kind == ElementwiseKind::Silu) {
          linalg::YieldOp::create(
              body, loc,
              Value(arith::DivFOp::create(body, loc, args[0],
                                          denominator(args[0]))));
          return;
        }
        if (kind == ElementwiseKind::SiluGrad) {
          Value x = args[0];
          Value s = arith::DivFOp::create(body, loc, one(), denominator(x));
          Value oneMinusS = arith::SubFOp::create(body, loc, one(), s);
          Value inner = arith::AddFOp::create(
              body, loc, one(), arith::MulFOp::create(body, loc, x, oneMinusS));
          Value derivative = arith::MulFOp::create(body, loc, s, inner);
          linalg::YieldOp::create(
              body, loc,
              Value(arith::MulFOp::create(body, loc, args[1], derivative)));
          return;
        }
        Value zero = arith::ConstantOp::create(
            body, loc, body.getZeroAttr(type.getElementType()));
        Value result;
        if (kind == ElementwiseKind::Relu)
          result = arith::MaximumFOp::create(body, loc, args[0], zero);
        else
          result = arith::SelectOp::create(
              body, loc,
              arith::CmpFOp::create(body, loc, arith::CmpFPredicate::OGT,
                                    args[0], zero),
              args[1], zero);
        linalg::YieldOp::create(body, loc, result);
      });
  return generic.getResult(0);
}

LogicalResult mlir::tamoe::addElementwiseVJP(OpBuilder &b, Location loc,
                                             VJPContext &context,
                                             ElementwiseKind kind, Value x,
                                             Value y, Value result, Value d) {
  switch (kind) {
  case ElementwiseKind::Add:
    context.addCotangent(x, d);
    context.addCotangent(y, d);
    return success();
  case ElementwiseKind::Sub:
    context.addCotangent(x, d);
    if (context.needsCotangent(y))
      context.addCotangent(y, buildElementwise(b, loc, ElementwiseKind::Neg, d));
    return success();
  case ElementwiseKind::Mul:
    if (context.needsCotangent(x))
      context.addCotangent(x, buildElementwise(b, loc, ElementwiseKind::Mul, d,
                                               context.primal(y)));
    if (context.needsCotangent(y))
      context.addCotangent(y, buildElementwise(b, loc, ElementwiseKind::Mul,
                                               context.primal(x), d));
    return success();
  case ElementwiseKind::Neg:
    context.addCotangent(x, buildElementwise(b, loc, ElementwiseKind::Neg, d));
    return success();
  case ElementwiseKind::Relu:
    // relu(x) > 0 exactly where x > 0: the output is the value to keep, as
    // the next layer's gradient usually keeps it anyway.
    context.addCotangent(x, buildElementwise(b, loc, ElementwiseKind::ReluGrad,
                                             context.primal(result), d));
    return success();
  case ElementwiseKind::Silu:
    context.addCotangent(x, buildElementwise(b, loc, ElementwiseKind::SiluGrad,
                                             context.primal(x), d));
    return success();
  case ElementwiseKind::ReluGrad:
  case ElementwiseKind::SiluGrad:
    break;
  }
  return emitError(loc) << "an activation's gradient has no gradient rule: "
                           "tamoe takes first derivatives only";
}

