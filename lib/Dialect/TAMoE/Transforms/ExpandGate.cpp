//===- ExpandGate.cpp - tamoe.gate and tamoe.aux_loss in linalg -----------===//

#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include <limits>

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOEEXPANDGATEPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;

namespace {
/// Builds linalg.generic ops over tensors whose leading dimensions are the
/// tokens (and which may be dynamic).
class Builder {
public:
  Builder(OpBuilder &builder, Location loc) : b(builder), loc(loc) {}

  Value constantFloat(Type type, double value) {
    return arith::ConstantOp::create(b, loc, b.getFloatAttr(type, value));
  }
  Value constantIndex(int64_t value) {
    return arith::ConstantIndexOp::create(b, loc, value);
  }

  /// An empty tensor of `shape` (kDynamic entries take `dynamicSizes` in
  /// order).
  Value empty(ArrayRef<int64_t> shape, Type element, ValueRange dynamicSizes) {
    return tensor::EmptyOp::create(b, loc, shape, element, dynamicSizes);
  }
  /// `empty` filled with `value`.
  Value filled(ArrayRef<int64_t> shape, Type element, ValueRange dynamicSizes,
               Value value) {
    return linalg::FillOp::create(b, loc, value,
                                  empty(shape, element, dynamicSizes))
        .getResult(0);
  }

  /// A linalg.generic with identity-like maps given as dimension lists.
  SmallVector<Value>
  generic(unsigned rank, ArrayRef<SmallVector<unsigned>> inputDims,
          ArrayRef<Value> inputs, ArrayRef<SmallVector<unsigned>> outputDims,
          ArrayRef<Value> outputs, ArrayRef<utils::IteratorType> iterators,
          function_ref<void(OpBuilder &, Location, ValueRange)> body) {
    SmallVector<AffineMap> maps;
    auto mapOf = [&](ArrayRef<unsigned> dims) {
      SmallVector<AffineExpr> exprs;
      for (unsigned dim : dims)
        exprs.push_back(b.getAffineDimExpr(dim));
      return AffineMap::get(rank, 0, exprs, b.getContext());
    };
    for (ArrayRef<unsigned> dims : inputDims)
      maps.push_back(mapOf(dims));
    for (ArrayRef<unsigned> dims : outputDims)
      maps.push_back(mapOf(dims));
    SmallVector<Type> types;
    for (Value output : outputs)
      types.push_back(output.getType());
    auto op = linalg::GenericOp::create(b, loc, types, inputs, outputs, maps,
                                        iterators, body);
    return SmallVector<Value>(op.getResults());
  }

  OpBuilder &b;
  Location loc;
};

constexpr auto kParallel = utils::IteratorType::parallel;
constexpr auto kReduction = utils::IteratorType::reduction;

Value negativeInfinity(OpBuilder &b, Location loc, Type type) {
  return arith::ConstantOp::create(
      b, loc, b.getFloatAttr(type, -std::numeric_limits<double>::infinity()));
}

Value notANumber(OpBuilder &b, Location loc, Type type) {
  return arith::ConstantOp::create(
      b, loc, b.getFloatAttr(type, std::numeric_limits<double>::quiet_NaN()));
}

/// Router scores: softmax over the experts, or the element-wise sigmoid.
Value scores(Builder &g, Value logits, ScoreFunction function,
             ValueRange rowDynamic, ValueRange fullDynamic) {
  auto type = cast<RankedTensorType>(logits.getType());
  Type element = type.getElementType();
  ArrayRef<int64_t> shape = type.getShape();
  if (function == ScoreFunction::Sigmoid)
    return g.generic(
        2, {{0, 1}}, {logits}, {{0, 1}}, {g.empty(shape, element, fullDynamic)},
        {kParallel, kParallel}, [&](OpBuilder &b, Location l, ValueRange args) {
          Value one =
              arith::ConstantOp::create(b, l, b.getFloatAttr(element, 1.0));
          Value e =
              math::ExpOp::create(b, l, arith::NegFOp::create(b, l, args[0]));
          linalg::YieldOp::create(
              b, l,
              Value(arith::DivFOp::create(
                  b, l, one, arith::AddFOp::create(b, l, one, e))));
        })[0];
  // Softmax, with the row maximum subtracted so exp cannot overflow.
  SmallVector<int64_t> rowShape{shape[0]};
  Value rowMax = g.generic(
      2, {{0, 1}}, {logits}, {{0}},
      {g.filled(rowShape, element, rowDynamic,
                negativeInfinity(g.b, g.loc, element))},
      {kParallel, kReduction}, [&](OpBuilder &b, Location l, ValueRange args) {
        linalg::YieldOp::create(
            b, l, Value(arith::MaximumFOp::create(b, l, args[0], args[1])));
      })[0];
  Value exps = g.generic(
      2, {{0, 1}, {0}}, {logits, rowMax}, {{0, 1}},
      {g.empty(shape, element, fullDynamic)}, {kParallel, kParallel},
      [&](OpBuilder &b, Location l, ValueRange args) {
        linalg::YieldOp::create(
            b, l,
            Value(math::ExpOp::create(
                b, l, arith::SubFOp::create(b, l, args[0], args[1]))));
      })[0];
  Value rowSum = g.generic(
      2, {{0, 1}}, {exps}, {{0}},
      {g.filled(rowShape, element, rowDynamic, g.constantFloat(element, 0))},
      {kParallel, kReduction}, [&](OpBuilder &b, Location l, ValueRange args) {
        linalg::YieldOp::create(
            b, l, Value(arith::AddFOp::create(b, l, args[0], args[1])));
      })[0];
  return g.generic(
      2, {{0, 1}, {0}}, {exps, rowSum}, {{0, 1}},
      {g.empty(shape, element, fullDynamic)}, {kParallel, kParallel},
      [&](OpBuilder &b, Location l, ValueRange args) {
        linalg::YieldOp::create(
            b, l, Value(arith::DivFOp::create(b, l, args[0], args[1])));
      })[0];
}

/// NaN marks the entries the arg-max rounds below may not choose (chosen
/// already, or in a group not kept); a score that is NaN itself ranks as
/// -inf, as the runtime's gate ranks it (tamoe_rt.h), so it stays a
/// candidate: `ranks` maps it there before the rounds.
Value ranks(Builder &g, Value scores, ValueRange dynamic) {
  auto type = cast<RankedTensorType>(scores.getType());
  return g.generic(
      2, {{0, 1}}, {scores}, {{0, 1}},
      {g.empty(type.getShape(), type.getElementType(), dynamic)},
      {kParallel, kParallel}, [&](OpBuilder &b, Location l, ValueRange args) {
        Value isNaN = arith::CmpFOp::create(b, l, arith::CmpFPredicate::UNO,
                                            args[0], args[0]);
        linalg::YieldOp::create(
            b, l,
            Value(arith::SelectOp::create(
                b, l, isNaN, negativeInfinity(b, l, args[0].getType()),
                args[0])));
      })[0];
}

/// Along the last of `rank` dimensions: the index of the largest value
/// that is not NaN (the first on ties; 0 when every value is NaN: a row with
/// no candidate left, which expandGate marks as no pick). The result has the
/// leading dimensions.
Value argMax(Builder &g, Value values, unsigned rank,
             ArrayRef<int64_t> leadingShape, ValueRange dynamic) {
  Type element = cast<RankedTensorType>(values.getType()).getElementType();
  SmallVector<unsigned> all, leading;
  for (unsigned dim = 0; dim < rank; ++dim) {
    all.push_back(dim);
    if (dim + 1 < rank)
      leading.push_back(dim);
  }
  SmallVector<utils::IteratorType> iterators(rank - 1, kParallel);
  iterators.push_back(kReduction);
  // The best so far starts as NaN, nothing yet: the first value that is not
  // NaN takes it (-inf included, which stays a candidate).
  SmallVector<Value> results = g.generic(
      rank, {all}, {values}, {leading, leading},
      {g.filled(leadingShape, element, dynamic,
                notANumber(g.b, g.loc, element)),
       g.filled(leadingShape, g.b.getIndexType(), dynamic, g.constantIndex(0))},
      iterators, [&](OpBuilder &b, Location l, ValueRange args) {
        Value index = linalg::IndexOp::create(b, l, rank - 1);
        // Not NaN, and above the best so far or the first such (UGT: the
        // best is NaN, or below).
        Value better = arith::AndIOp::create(
            b, l,
            arith::CmpFOp::create(b, l, arith::CmpFPredicate::ORD, args[0],
                                  args[0]),
            arith::CmpFOp::create(b, l, arith::CmpFPredicate::UGT, args[0],
                                  args[1]));
        linalg::YieldOp::create(
            b, l,
            ValueRange{arith::SelectOp::create(b, l, better, args[0], args[1]),
                       arith::SelectOp::create(b, l, better, index, args[2])});
      });
  return results[1];
}

/// `values` with entry [s, chosen[s]] of the last dimension set to NaN.
Value maskChosen(Builder &g, Value values, Value chosen, unsigned rank,
                 ValueRange dynamic) {
  auto type = cast<RankedTensorType>(values.getType());
  SmallVector<unsigned> all, leading;
  for (unsigned dim = 0; dim < rank; ++dim) {
    all.push_back(dim);
    if (dim + 1 < rank)
      leading.push_back(dim);
  }
  return g.generic(
      rank, {all, leading}, {values, chosen}, {all},
      {g.empty(type.getShape(), type.getElementType(), dynamic)},
      SmallVector<utils::IteratorType>(rank, kParallel),
      [&](OpBuilder &b, Location l, ValueRange args) {
        Value index = linalg::IndexOp::create(b, l, rank - 1);
        Value hit = arith::CmpIOp::create(b, l, arith::CmpIPredicate::eq, index,
                                          args[1]);
        linalg::YieldOp::create(
            b, l,
            Value(arith::SelectOp::create(
                b, l, hit, notANumber(b, l, args[0].getType()), args[0])));
      })[0];
}

/// The ranked scores (no NaN) with every expert outside the token's `kept`
/// best groups marked NaN. A group scores the sum of its two best experts
/// (its best when it has one), as in DeepSeek-V3.
Value limitGroups(Builder &g, Value probs, int64_t groups, int64_t kept,
                  ValueRange dynamic) {
  auto type = cast<RankedTensorType>(probs.getType());
  Type element = type.getElementType();
  int64_t tokens = type.getDimSize(0), experts = type.getDimSize(1);
  int64_t perGroup = experts / groups;
  SmallVector<ReassociationIndices> split{{0}, {1, 2}};
  SmallVector<OpFoldResult> outputShape;
  if (ShapedType::isDynamic(tokens))
    outputShape.push_back(dynamic[0]);
  else
    outputShape.push_back(g.b.getIndexAttr(tokens));
  outputShape.push_back(g.b.getIndexAttr(groups));
  outputShape.push_back(g.b.getIndexAttr(perGroup));
  Value grouped = tensor::ExpandShapeOp::create(
      g.b, g.loc, RankedTensorType::get({tokens, groups, perGroup}, element),
      probs, split, outputShape);
  SmallVector<int64_t> groupShape{tokens, groups};
  Value minusInf = negativeInfinity(g.b, g.loc, element);
  SmallVector<Value> best = g.generic(
      3, {{0, 1, 2}}, {grouped}, {{0, 1}, {0, 1}},
      {g.filled(groupShape, element, dynamic, minusInf),
       g.filled(groupShape, element, dynamic, minusInf)},
      {kParallel, kParallel, kReduction},
      [&](OpBuilder &b, Location l, ValueRange args) {
        // Running first and second largest.
        Value first = arith::MaximumFOp::create(b, l, args[0], args[1]);
        Value above = arith::CmpFOp::create(b, l, arith::CmpFPredicate::OGT,
                                            args[0], args[1]);
        Value second = arith::SelectOp::create(
            b, l, above, args[1],
            arith::MaximumFOp::create(b, l, args[0], args[2]));
        linalg::YieldOp::create(b, l, ValueRange{first, second});
      });
  Value groupScores = best[0];
  if (perGroup > 1)
    groupScores = g.generic(
        2, {{0, 1}, {0, 1}}, {best[0], best[1]}, {{0, 1}},
        {g.empty(groupShape, element, dynamic)}, {kParallel, kParallel},
        [&](OpBuilder &b, Location l, ValueRange args) {
          linalg::YieldOp::create(
              b, l, Value(arith::AddFOp::create(b, l, args[0], args[1])));
        })[0];
  // Choose the kept groups one at a time; chosen ones are marked NaN.
  SmallVector<int64_t> tokenShape{tokens};
  Value chosenGroups = groupScores;
  for (int64_t round = 0; round < kept; ++round) {
    Value pick = argMax(g, chosenGroups, 2, tokenShape, dynamic);
    chosenGroups = maskChosen(g, chosenGroups, pick, 2, dynamic);
  }
  // A group is kept when a round marked it (group scores of ranked scores
  // are never NaN themselves).
  return g.generic(
      2, {{0, 1}}, {probs}, {{0, 1}},
      {g.empty(type.getShape(), element, dynamic)}, {kParallel, kParallel},
      [&](OpBuilder &b, Location l, ValueRange args) {
        Value token = linalg::IndexOp::create(b, l, 0);
        Value expert = linalg::IndexOp::create(b, l, 1);
        Value group = arith::DivUIOp::create(
            b, l, expert, arith::ConstantIndexOp::create(b, l, perGroup));
        Value mark = tensor::ExtractOp::create(b, l, chosenGroups,
                                               ValueRange{token, group});
        Value isKept = arith::CmpFOp::create(
            b, l, arith::CmpFPredicate::UNO, mark, mark);
        linalg::YieldOp::create(
            b, l,
            Value(arith::SelectOp::create(b, l, isKept, args[0],
                                          notANumber(b, l, element))));
      })[0];
}

/// `values` converted element-wise to `element` (extf or truncf).
Value convert(Builder &g, Value values, Type element, ValueRange dynamic) {
  auto type = cast<RankedTensorType>(values.getType());
  bool widen = element.getIntOrFloatBitWidth() >
               type.getElementType().getIntOrFloatBitWidth();
  return g.generic(
      2, {{0, 1}}, {values}, {{0, 1}},
      {g.empty(type.getShape(), element, dynamic)}, {kParallel, kParallel},
      [&](OpBuilder &b, Location l, ValueRange args) {
        Value converted =
            widen ? Value(arith::ExtFOp::create(b, l, element, args[0]))
                  : Value(arith::TruncFOp::create(b, l, element, args[0]));
        linalg::YieldOp::create(b, l, converted);
      })[0];
}

/// tamoe.gate: scores, optional group limit, k rounds of arg-max, weights.
void expandGate(GateOp gate) {
  OpBuilder builder(gate);
  Builder g(builder, gate.getLoc());
  Value logits = gate.getLogits();
  auto type = cast<RankedTensorType>(logits.getType());
  Type element = type.getElementType();
  // Scores, ranks and sums in at least f32, rounded once to the logits' type
  // at the end: a bf16 row sum stops growing at 256 (a softmax over 512
  // equal logits gave every expert 1/256), and the f8 and f4 types have no
  // infinity, some no NaN, for the ranks to mark entries with (-inf became
  // NaN, or 0). f32 is the type the runtime's gate computes in, and f32
  // gates expand as they did.
  Type acc =
      element.getIntOrFloatBitWidth() < 32 ? builder.getF32Type() : element;
  int64_t k = gate.getK();
  // Dynamic sizes of the [S] and [S, E] tensors built below, and the value
  // of each dimension for the [S, k] results.
  Value tokens = tensor::DimOp::create(builder, g.loc, logits, 0);
  Value experts = tensor::DimOp::create(builder, g.loc, logits, 1);
  SmallVector<Value> dynamic, fullDynamic;
  if (type.isDynamicDim(0))
    dynamic.push_back(tokens);
  fullDynamic = dynamic;
  if (type.isDynamicDim(1))
    fullDynamic.push_back(experts);
  auto resultDynamic = [&](RankedTensorType result) {
    SmallVector<Value> sizes;
    if (result.isDynamicDim(0))
      sizes.push_back(tokens);
    if (result.isDynamicDim(1))
      sizes.push_back(g.constantIndex(k));
    return sizes;
  };
  Value wideLogits =
      acc == element ? logits : convert(g, logits, acc, fullDynamic);
  Value probs = scores(g, wideLogits, gate.getScore(), dynamic, fullDynamic);
  Value candidates = ranks(g, probs, fullDynamic);
  if (std::optional<int64_t> groups = gate.getNumGroups())
    candidates =
        limitGroups(g, candidates, *groups, *gate.getGroupsKept(), dynamic);

  auto idsType = gate.getExpertIds().getType();
  auto weightsType = gate.getWeights().getType();
  SmallVector<int64_t> tokenShape{type.getDimSize(0)};
  Value ids = g.empty(idsType.getShape(), idsType.getElementType(),
                      resultDynamic(idsType));
  Value weights =
      g.empty(weightsType.getShape(), acc, resultDynamic(weightsType));
  OpFoldResult rows =
      type.isDynamicDim(0)
          ? OpFoldResult(tokens)
          : OpFoldResult(builder.getIndexAttr(type.getDimSize(0)));
  // No rounds for no tokens: the empty results are complete, and a column
  // of a tensor with 0 rows is no slice the verifier takes.
  int64_t rounds = type.getDimSize(0) == 0 ? 0 : k;
  for (int64_t round = 0; round < rounds; ++round) {
    Value index = argMax(g, candidates, 2, tokenShape, dynamic);
    candidates = maskChosen(g, candidates, index, 2, fullDynamic);
    // With a dynamic number of experts, fewer than k at run time (the
    // verifier refuses it when static, the runtime's gate at run time), the
    // rounds past the last expert have no pick: id -1, which the loss does
    // not count and the runtime's dispatch refuses as no expert, and weight
    // 0, so that renormalisation spreads over the real picks. The arg-max
    // of such a round is 0, no expert of a row of none (E = 0): it is never
    // read.
    Value picked;
    if (type.isDynamicDim(1))
      picked = arith::CmpIOp::create(builder, g.loc, arith::CmpIPredicate::ult,
                                     g.constantIndex(round), experts);
    Value value;
    if (!picked) {
      // The chosen score itself (a NaN one too, for the loss to show).
      value = g.generic(1, {{0}}, {index}, {{0}},
                        {g.empty(tokenShape, acc, dynamic)}, {kParallel},
                        [&](OpBuilder &b, Location l, ValueRange args) {
                          Value token = linalg::IndexOp::create(b, l, 0);
                          linalg::YieldOp::create(
                              b, l,
                              Value(tensor::ExtractOp::create(
                                  b, l, probs, ValueRange{token, args[0]})));
                        })[0];
    } else {
      // The chosen score, read along the row (0 where there is no pick).
      value = g.generic(
          2, {{0, 1}, {0}}, {probs, index}, {{0}},
          {g.filled(tokenShape, acc, dynamic, g.constantFloat(acc, 0))},
          {kParallel, kReduction},
          [&](OpBuilder &b, Location l, ValueRange args) {
            Value expert = linalg::IndexOp::create(b, l, 1);
            Value hit = arith::AndIOp::create(
                b, l, picked,
                arith::CmpIOp::create(b, l, arith::CmpIPredicate::eq, expert,
                                      args[1]));
            linalg::YieldOp::create(
                b, l,
                Value(arith::SelectOp::create(b, l, hit, args[0], args[2])));
          })[0];
    }
    Value id = g.generic(
        1, {{0}}, {index}, {{0}},
        {g.empty(tokenShape, idsType.getElementType(), dynamic)}, {kParallel},
        [&](OpBuilder &b, Location l, ValueRange args) {
          Type idType = idsType.getElementType();
          Value id = arith::IndexCastOp::create(b, l, idType, args[0]);
          if (picked)
            id = arith::SelectOp::create(
                b, l, picked, id,
                arith::ConstantOp::create(b, l, b.getIntegerAttr(idType, -1)));
          linalg::YieldOp::create(b, l, id);
        })[0];
    // Column `round` of the [S, k] results.
    SmallVector<OpFoldResult> offsets{builder.getIndexAttr(0),
                                      builder.getIndexAttr(round)};
    SmallVector<OpFoldResult> sizes{rows, builder.getIndexAttr(1)};
    SmallVector<OpFoldResult> strides(2, builder.getIndexAttr(1));
    ids = tensor::InsertSliceOp::create(builder, g.loc, id, ids, offsets, sizes,
                                        strides);
    weights = tensor::InsertSliceOp::create(builder, g.loc, value, weights,
                                            offsets, sizes, strides);
  }
  if (gate.getRenormalize()) {
    // Over (sum + 1e-20), the sum first, as the runtime's gate divides
    // (TAMOE_RT_RENORMALIZE_EPSILON): weights 0, not 0 / 0, where every
    // chosen sigmoid score underflowed.
    Value sum = g.generic(
        2, {{0, 1}}, {weights}, {{0}},
        {g.filled(tokenShape, acc, dynamic, g.constantFloat(acc, 0))},
        {kParallel, kReduction},
        [&](OpBuilder &b, Location l, ValueRange args) {
          linalg::YieldOp::create(
              b, l, Value(arith::AddFOp::create(b, l, args[0], args[1])));
        })[0];
    weights = g.generic(
        2, {{0, 1}, {0}}, {weights, sum}, {{0, 1}},
        {g.empty(weightsType.getShape(), acc, resultDynamic(weightsType))},
        {kParallel, kParallel}, [&](OpBuilder &b, Location l, ValueRange args) {
          Value divisor = arith::AddFOp::create(
              b, l, args[1],
              arith::ConstantOp::create(b, l, b.getFloatAttr(acc, 1e-20)));
          linalg::YieldOp::create(
              b, l, Value(arith::DivFOp::create(b, l, args[0], divisor)));
        })[0];
  }
  if (acc != element) {
    probs = convert(g, probs, element, fullDynamic);
    weights = convert(g, weights, element, resultDynamic(weightsType));
  }
  gate.replaceAllUsesWith(ValueRange{ids, weights, probs});
  gate.erase();
}

/// tamoe.aux_loss: E * sum_e w_e f_e P_e, with f_e = count_e / (k S) and
/// P_e = sum_s probs[s, e] / S.
void expandAuxLoss(AuxLossOp loss) {
  OpBuilder builder(loss);
  Builder g(builder, loss.getLoc());
  Value probs = loss.getProbs();
  auto type = cast<RankedTensorType>(probs.getType());
  Type element = type.getElementType();
  // Counts, sums and S^2 in at least f32: f16 overflows S^2 from S = 256
  // (the loss was 0, or NaN) and bf16 stops counting at 256 (1 + 256 rounds
  // back to 256), so a half-precision loss was wrong at ordinary sizes.
  // f32 is the type the runtime computes in, and keeps f32 losses as they
  // were.
  Type acc =
      element.getIntOrFloatBitWidth() < 32 ? builder.getF32Type() : element;
  auto widen = [&](OpBuilder &b, Location l, Value value) -> Value {
    return value.getType() == acc ? value
                                  : arith::ExtFOp::create(b, l, acc, value);
  };
  Value ids = loss.getExpertIds();
  SmallVector<Value> dynamicExperts;
  if (type.isDynamicDim(1))
    dynamicExperts.push_back(tensor::DimOp::create(builder, g.loc, probs, 1));
  SmallVector<int64_t> expertShape{type.getDimSize(1)};
  Value zero = g.constantFloat(acc, 0);
  // Assignments to each expert, without those the dispatch dropped.
  SmallVector<Value> countInputs{ids};
  if (Value positions = loss.getPositions())
    countInputs.push_back(positions);
  SmallVector<SmallVector<unsigned>> countDims(countInputs.size(), {0, 1});
  Value counts = g.generic(
      3, countDims, countInputs, {{2}},
      {g.filled(expertShape, acc, dynamicExperts, zero)},
      {kReduction, kReduction, kParallel},
      [&](OpBuilder &b, Location l, ValueRange args) {
        Value sum = args.back();
        Value expert = arith::IndexCastOp::create(
            b, l, args[0].getType(), linalg::IndexOp::create(b, l, 2));
        Value match = arith::CmpIOp::create(b, l, arith::CmpIPredicate::eq,
                                            args[0], expert);
        if (args.size() == 3) {
          Value none = arith::ConstantOp::create(
              b, l, b.getIntegerAttr(args[1].getType(), 0));
          match = arith::AndIOp::create(
              b, l, match,
              arith::CmpIOp::create(b, l, arith::CmpIPredicate::sge, args[1],
                                    none));
        }
        Value one =
            arith::ConstantOp::create(b, l, b.getFloatAttr(sum.getType(), 1.0));
        linalg::YieldOp::create(
            b, l,
            Value(arith::SelectOp::create(
                b, l, match, arith::AddFOp::create(b, l, sum, one), sum)));
      })[0];
  Value probSums = g.generic(
      2, {{0, 1}}, {probs}, {{1}},
      {g.filled(expertShape, acc, dynamicExperts, zero)},
      {kReduction, kParallel}, [&](OpBuilder &b, Location l, ValueRange args) {
        linalg::YieldOp::create(
            b, l,
            Value(arith::AddFOp::create(b, l, widen(b, l, args[0]), args[1])));
      })[0];
  // E / (k S^2): f and P are both per-token averages.
  auto asFloat = [&](Value index) -> Value {
    return arith::UIToFPOp::create(
        builder, g.loc, acc,
        arith::IndexCastOp::create(builder, g.loc, builder.getI64Type(),
                                   index));
  };
  Value tokens = asFloat(tensor::DimOp::create(builder, g.loc, probs, 0));
  Value experts = asFloat(tensor::DimOp::create(builder, g.loc, probs, 1));
  Value scale = arith::DivFOp::create(
      builder, g.loc, experts,
      arith::MulFOp::create(
          builder, g.loc,
          asFloat(tensor::DimOp::create(builder, g.loc, ids, 1)),
          arith::MulFOp::create(builder, g.loc, tokens, tokens)));
  // No tokens, no assignments and no imbalance: 0, as the runtime has it,
  // where the scale would be E / 0 and the loss 0 * inf.
  Value noTokens =
      arith::CmpFOp::create(builder, g.loc, arith::CmpFPredicate::OEQ, tokens,
                            g.constantFloat(acc, 0));
  scale = arith::SelectOp::create(builder, g.loc, noTokens,
                                  g.constantFloat(acc, 0), scale);
  SmallVector<Value> inputs{counts, probSums};
  if (Value weights = loss.getExpertWeights())
    inputs.push_back(weights);
  SmallVector<SmallVector<unsigned>> inputDims(inputs.size(), {0});
  Value total = g.generic(
      1, inputDims, inputs, {{}}, {g.filled({}, acc, {}, zero)}, {kReduction},
      [&](OpBuilder &b, Location l, ValueRange args) {
        Value term = arith::MulFOp::create(b, l, args[0], args[1]);
        if (args.size() == 4)
          term = arith::MulFOp::create(b, l, term, widen(b, l, args[2]));
        linalg::YieldOp::create(
            b, l, Value(arith::AddFOp::create(b, l, args.back(), term)));
      })[0];
  Value scaled =
      g.generic(0, {{}}, {total}, {{}}, {g.empty({}, element, {})}, {},
                [&](OpBuilder &b, Location l, ValueRange args) {
                  Value product = arith::MulFOp::create(b, l, args[0], scale);
                  if (acc != element)
                    product = arith::TruncFOp::create(b, l, element, product);
                  linalg::YieldOp::create(b, l, product);
                })[0];
  loss.replaceAllUsesWith(scaled);
  loss.erase();
}

struct ExpandGatePass
    : public mlir::tamoe::impl::TAMoEExpandGatePassBase<ExpandGatePass> {
  using Base::Base;

  void runOnOperation() override {
    SmallVector<GateOp> gates;
    SmallVector<AuxLossOp> losses;
    getOperation().walk([&](Operation *op) {
      if (auto gate = dyn_cast<GateOp>(op))
        gates.push_back(gate);
      else if (auto loss = dyn_cast<AuxLossOp>(op))
        losses.push_back(loss);
    });
    // Losses first: they use the gates' results.
    for (AuxLossOp loss : losses)
      expandAuxLoss(loss);
    for (GateOp gate : gates)
      expandGate(gate);
  }
};
} // namespace
