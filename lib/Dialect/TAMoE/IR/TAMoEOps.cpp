//===- TAMoEOps.cpp - tamoe operations ------------------------------------===//

#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"
#include "tamoe/Support/Messages.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/Support/CheckedArithmetic.h"

#include <cmath>

using namespace mlir;
using namespace mlir::tamoe;

/// The types of trailing optional operands, in order, each after a comma
/// when its operand is there: `tamoe.aux_loss`'s weights and positions,
/// which may appear independently.
static ParseResult parseOptionalOperandTypes(
    OpAsmParser &parser,
    std::optional<OpAsmParser::UnresolvedOperand> first, Type &firstType,
    std::optional<OpAsmParser::UnresolvedOperand> second, Type &secondType) {
  if (first && (parser.parseComma() || parser.parseType(firstType)))
    return failure();
  if (second && (parser.parseComma() || parser.parseType(secondType)))
    return failure();
  return success();
}

static void printOptionalOperandTypes(OpAsmPrinter &printer, Operation *,
                                      Value first, Type firstType,
                                      Value second, Type secondType) {
  if (first)
    printer << ", " << firstType;
  if (second)
    printer << ", " << secondType;
}

/// A list of types in parentheses, possibly empty: `tamoe.vjp`'s groups
/// (a function without float arguments has no gradients).
static ParseResult parseParenTypes(OpAsmParser &parser,
                                   SmallVectorImpl<Type> &types) {
  if (parser.parseLParen())
    return failure();
  if (succeeded(parser.parseOptionalRParen()))
    return success();
  if (parser.parseTypeList(types))
    return failure();
  return parser.parseRParen();
}

static void printParenTypes(OpAsmPrinter &printer, Operation *,
                            TypeRange types) {
  printer << "(";
  llvm::interleaveComma(types, printer);
  printer << ")";
}

#define GET_OP_CLASSES
#include "tamoe/Dialect/TAMoE/IR/TAMoEOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

static bool isDynamic(int64_t dim) { return ShapedType::isDynamic(dim); }

/// Two dimensions agree unless both are static and differ.
static bool compatible(int64_t lhs, int64_t rhs) {
  return isDynamic(lhs) || isDynamic(rhs) || lhs == rhs;
}

/// Prints a shape as "[16, ?]" for diagnostics.
static std::string formatShape(ArrayRef<int64_t> shape) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "[";
  llvm::interleaveComma(shape, os, [&](int64_t dim) {
    if (isDynamic(dim))
      os << "?";
    else
      os << dim;
  });
  os << "]";
  return text;
}

/// Checks that `type` has the 2-D shape [rows, cols] (dynamic sizes agree
/// with anything).
static LogicalResult verifyShape2D(Operation *op, StringRef name,
                                   RankedTensorType type, int64_t rows,
                                   int64_t cols, StringRef expectation) {
  if (compatible(type.getDimSize(0), rows) &&
      compatible(type.getDimSize(1), cols))
    return success();
  return op->emitOpError() << name << " must have shape " << expectation
                           << " = " << formatShape({rows, cols}) << ", got "
                           << formatShape(type.getShape());
}

/// A plan on an op must fit the module's topology, when the module has one.
static LogicalResult verifyPlan(Operation *op,
                                std::optional<DispatchPlanAttr> plan) {
  if (!plan)
    return success();
  TopologyAttr topology = TopologyAttr::lookup(op);
  if (!topology)
    return success();
  return plan->verifyAgainst(topology, [op] { return op->emitOpError(); });
}

/// Grid axes of a collective's group must be unique and non-negative.
static LogicalResult verifyGridAxes(Operation *op,
                                    std::optional<ArrayRef<int16_t>> axes) {
  if (!axes)
    return success();
  llvm::SmallDenseSet<int16_t> seen;
  for (int16_t axis : *axes)
    if (axis < 0 || !seen.insert(axis).second)
      return op->emitOpError() << "grid axes must be unique and non-negative";
  return success();
}

/// The grid axes of a collective's group: `axes`, or every axis of a grid of
/// `gridRank` axes when the op names none.
static SmallVector<int16_t> groupAxes(std::optional<ArrayRef<int16_t>> axes,
                                      int64_t gridRank) {
  if (axes)
    return SmallVector<int16_t>(*axes);
  return llvm::to_vector(llvm::seq<int16_t>(0, gridRank));
}

/// That `grid` names a shard.grid with the group's axes; the group's size
/// (dynamic when an axis is).
static FailureOr<int64_t>
verifyGroup(Operation *op, FlatSymbolRefAttr gridName,
            std::optional<ArrayRef<int16_t>> axes,
            SymbolTableCollection &symbolTable) {
  shard::GridOp grid = shard::getGridOrNull(op, gridName, symbolTable);
  if (!grid)
    return op->emitOpError()
           << "'" << gridName << "' does not name a shard.grid";
  ArrayRef<int64_t> shape = grid.getShape();
  int64_t size = 1;
  for (int16_t axis : groupAxes(axes, shape.size())) {
    if (axis >= static_cast<int64_t>(shape.size()))
      return op->emitOpError()
             << "grid axis " << axis << " is out of range for grid "
             << gridName << " of rank " << shape.size();
    if (isDynamic(shape[axis]) || isDynamic(size))
      size = ShapedType::kDynamic;
    else
      size *= shape[axis];
  }
  return size;
}

//===----------------------------------------------------------------------===//
// GateOp
//===----------------------------------------------------------------------===//

LogicalResult GateOp::verify() {
  RankedTensorType logits = getLogits().getType();
  int64_t tokens = logits.getDimSize(0);
  int64_t experts = logits.getDimSize(1);
  int64_t k = getK();
  if (k < 1)
    return emitOpError() << "k must be >= 1, got " << k;
  if (!isDynamic(experts) && k > experts)
    return emitOpError() << "k = " << k << " exceeds the number of experts ("
                         << experts << ")";
  if (failed(verifyShape2D(*this, "expert_ids", getExpertIds().getType(),
                           tokens, k, "[S, k]")) ||
      failed(verifyShape2D(*this, "weights", getWeights().getType(), tokens, k,
                           "[S, k]")))
    return failure();
  if (getWeights().getType().getElementType() != logits.getElementType())
    return emitOpError() << "weights must have the logits' element type "
                         << logits.getElementType();
  if (getProbs().getType() != logits)
    return emitOpError() << "probs must have the logits' type " << logits;
  // Ids are signed (-1 marks a dropped assignment downstream): an id past
  // the type's largest would wrap to a negative one, and the expert's
  // tokens would count as dropped.
  unsigned idBits = getExpertIds().getType().getElementTypeBitWidth();
  if (!isDynamic(experts) && idBits < 64 &&
      experts - 1 > (int64_t(1) << (idBits - 1)) - 1)
    return emitOpError() << "expert_ids of "
                         << getExpertIds().getType().getElementType()
                         << " cannot hold the ids of " << experts << " experts";

  std::optional<int64_t> groups = getNumGroups();
  std::optional<int64_t> kept = getGroupsKept();
  if (groups.has_value() != kept.has_value())
    return emitOpError() << "num_groups and groups_kept must be given together";
  if (groups) {
    if (*groups < 1)
      return emitOpError() << "num_groups must be >= 1, got " << *groups;
    if (*kept < 1 || *kept > *groups)
      return emitOpError() << "groups_kept must be in [1, " << *groups
                           << "], got " << *kept;
    if (isDynamic(experts))
      return emitOpError() << "group-limited routing needs a static number "
                              "of experts";
    if (experts % *groups != 0)
      return emitOpError() << "num_groups (" << *groups
                           << ") must divide the number of experts (" << experts
                           << ")";
    int64_t reachable = *kept * (experts / *groups);
    if (k > reachable)
      return emitOpError() << "k = " << k << " exceeds the " << reachable
                           << " experts of the " << *kept << " kept groups";
  }
  return verifyPlan(*this, getPlan());
}

//===----------------------------------------------------------------------===//
// DispatchOp
//===----------------------------------------------------------------------===//

std::optional<int64_t> DispatchOp::getCapacityFor(int64_t numTokens) {
  if (std::optional<int64_t> capacity = getCapacity())
    return *capacity;
  std::optional<APFloat> factor = getCapacityFactor();
  if (!factor)
    return std::nullopt;
  int64_t k = getExpertIds().getType().getDimSize(1);
  int64_t experts = getExpertCounts().getType().getDimSize(0);
  // In doubles, so that no product overflows. An expert gets at most S * k
  // rows, so a larger capacity means the same and S * k bounds it (and the
  // conversion back to int64).
  double assignments = static_cast<double>(numTokens) * static_cast<double>(k);
  double capacity = std::ceil(factor->convertToDouble() * assignments /
                              static_cast<double>(experts));
  return static_cast<int64_t>(std::min(capacity, assignments));
}

LogicalResult DispatchOp::verify() {
  RankedTensorType tokens = getTokens().getType();
  RankedTensorType ids = getExpertIds().getType();
  int64_t numTokens = tokens.getDimSize(0);
  int64_t k = ids.getDimSize(1);
  if (!compatible(ids.getDimSize(0), numTokens))
    return emitOpError() << "expert_ids must have one row per token: "
                         << formatShape(ids.getShape()) << " for " << numTokens
                         << " tokens";
  RankedTensorType counts = getExpertCounts().getType();
  int64_t experts = counts.getDimSize(0);
  if (isDynamic(experts) || experts < 1)
    return emitOpError() << "expert_counts must have a static size >= 1 (the "
                            "number of experts)";
  if (getPositions().getType().getShape() != ids.getShape())
    return emitOpError() << "positions must have the shape of expert_ids "
                         << formatShape(ids.getShape());
  RankedTensorType dispatched = getDispatched().getType();
  if (dispatched.getElementType() != tokens.getElementType() ||
      !compatible(dispatched.getDimSize(1), tokens.getDimSize(1)))
    return emitOpError() << "dispatched rows must have the tokens' row type "
                         << formatShape(
                                {ShapedType::kDynamic, tokens.getDimSize(1)})
                         << " of " << tokens.getElementType();

  std::optional<int64_t> capacity = getCapacity();
  std::optional<APFloat> factor = getCapacityFactor();
  if (capacity && factor)
    return emitOpError()
           << "capacity and capacity_factor are mutually exclusive";
  if (capacity && *capacity < 0)
    return emitOpError() << "capacity must be >= 0, got " << *capacity;
  if (factor) {
    double value = factor->convertToDouble();
    if (!std::isfinite(value) || value <= 0)
      return emitOpError() << "capacity_factor must be a finite number > 0, "
                              "got "
                           << ::tamoe::formatNumber(value);
  }
  std::optional<DropPolicy> policy = getDropPolicy();
  if (policy && !capacity && !factor)
    return emitOpError() << "a drop policy needs a capacity (without one the "
                            "layer is dropless)";
  bool byProbability = policy == DropPolicy::Probability;
  if (byProbability && !getWeights())
    return emitOpError() << "'drop probability' needs the weights operand";
  if (!byProbability && getWeights())
    return emitOpError() << "weights are only used by 'drop probability'";
  if (getWeights() && getWeights().getType().getShape() != ids.getShape())
    return emitOpError() << "weights must have the shape of expert_ids "
                         << formatShape(ids.getShape());

  // The row count is a capacity: S * k dropless, min(S * k, E * C) capped.
  int64_t rows = dispatched.getDimSize(0);
  if (isDynamic(numTokens) || isDynamic(k)) {
    if (!isDynamic(rows))
      return emitOpError() << "dispatched must have a dynamic row count when "
                              "the number of tokens or k is dynamic";
  } else if (!isDynamic(rows)) {
    std::optional<int64_t> assignments = llvm::checkedMul(numTokens, k);
    if (!assignments)
      return emitOpError() << "has more assignments than int64 holds: "
                           << numTokens << " tokens x " << k;
    int64_t expected = *assignments;
    StringRef formula = "S * k";
    if (std::optional<int64_t> perExpert = getCapacityFor(numTokens)) {
      // E * capacity past int64 caps nothing.
      std::optional<int64_t> capped = llvm::checkedMul(experts, *perExpert);
      expected = std::min(expected, capped.value_or(expected));
      formula = "min(S * k, E * capacity)";
    }
    if (rows != expected)
      return emitOpError() << "dispatched must have " << expected << " rows ("
                           << formula << "), got " << rows;
  }
  return verifyPlan(*this, getPlan());
}

//===----------------------------------------------------------------------===//
// AllToAllOp
//===----------------------------------------------------------------------===//

/// Received rows have the row shape and element type of the sent ones.
static LogicalResult verifyReceivedRows(Operation *op, RankedTensorType send,
                                        RankedTensorType received) {
  if (received.getRank() != send.getRank() ||
      received.getElementType() != send.getElementType() ||
      !llvm::all_of(llvm::seq<int64_t>(1, send.getRank()), [&](int64_t dim) {
        return compatible(send.getDimSize(dim), received.getDimSize(dim));
      }))
    return op->emitOpError() << "received rows must have the shape and "
                                "element type of send rows";
  return success();
}

/// What an exchange (tamoe.all_to_all or its start) needs of its operands
/// and attributes.
template <typename ExchangeOp>
static LogicalResult verifyExchange(ExchangeOp op) {
  if (op.getSend().getType().getRank() < 1)
    return op.emitOpError() << "send must have at least one dimension (rows)";
  RankedTensorType counts = op.getSendCounts().getType();
  if (counts.getRank() < 1 || !counts.getElementType().isSignlessInteger())
    return op.emitOpError() << "send_counts must be a tensor of integers with "
                               "one row per peer ([P] or [P, ...])";
  if (!counts.hasStaticShape())
    return op.emitOpError() << "send_counts must have a static shape";
  if (failed(verifyGridAxes(op, op.getGridAxes())))
    return failure();
  if (std::optional<StringRef> level = op.getLevel())
    if (TopologyAttr topology = TopologyAttr::lookup(op))
      if (llvm::none_of(topology.getLevels(), [&](TopologyLevelAttr l) {
            return l.getName() == *level;
          }))
        return op.emitOpError()
               << "level '" << *level << "' is not a level of topology '"
               << topology.getName() << "'";
  return success();
}

/// An exchange's group must exist and have one rank per send_counts row.
template <typename ExchangeOp>
static LogicalResult verifyExchangeGroup(ExchangeOp op,
                                         SymbolTableCollection &symbolTable) {
  FailureOr<int64_t> groupSize =
      verifyGroup(op, op.getGridAttr(), op.getGridAxes(), symbolTable);
  if (failed(groupSize))
    return failure();
  if (isDynamic(*groupSize))
    return success();
  int64_t peers = op.getSendCounts().getType().getDimSize(0);
  if (peers != *groupSize)
    return op.emitOpError() << "send_counts has " << peers
                            << " peers but the group on @" << op.getGrid()
                            << " has " << *groupSize << " ranks";
  return success();
}

LogicalResult AllToAllOp::verify() {
  if (getSend().getType().getRank() < 1)
    return emitOpError() << "send must have at least one dimension (rows)";
  if (failed(verifyReceivedRows(*this, getSend().getType(),
                                getReceived().getType())))
    return failure();
  return verifyExchange(*this);
}

SmallVector<int16_t> AllToAllOp::getGroupAxes(int64_t gridRank) {
  return groupAxes(getGridAxes(), gridRank);
}

LogicalResult AllToAllOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  return verifyExchangeGroup(*this, symbolTable);
}

//===----------------------------------------------------------------------===//
// RegroupOp
//===----------------------------------------------------------------------===//

LogicalResult RegroupOp::verify() {
  RankedTensorType rows = getRows().getType();
  RankedTensorType regrouped = getRegrouped().getType();
  if (rows.getRank() < 1)
    return emitOpError() << "rows must have at least one dimension";
  if (regrouped.getRank() != rows.getRank() ||
      regrouped.getElementType() != rows.getElementType() ||
      !llvm::all_of(llvm::seq<int64_t>(0, rows.getRank()), [&](int64_t dim) {
        return compatible(rows.getDimSize(dim), regrouped.getDimSize(dim));
      }))
    return emitOpError() << "regrouped must have the type of rows";
  RankedTensorType counts = getCounts().getType();
  RankedTensorType transposed = getRegroupedCounts().getType();
  if (counts.getRank() < 2 || !counts.hasStaticShape())
    return emitOpError() << "counts must have a static shape [A, B, ...]";
  SmallVector<int64_t> expected(counts.getShape());
  std::swap(expected[0], expected[1]);
  if (transposed.getElementType() != counts.getElementType() ||
      transposed.getShape() != ArrayRef<int64_t>(expected))
    return emitOpError() << "regrouped_counts must be counts with its first "
                            "two dimensions transposed: "
                         << formatShape(expected) << " of "
                         << counts.getElementType();
  return success();
}

//===----------------------------------------------------------------------===//
// DedupPackOp
//===----------------------------------------------------------------------===//

/// Rows of `result` have the row shape and element type of `source`.
static LogicalResult verifySameRows(Operation *op, StringRef resultName,
                                    RankedTensorType result,
                                    StringRef sourceName,
                                    RankedTensorType source) {
  if (result.getElementType() == source.getElementType() &&
      compatible(result.getDimSize(1), source.getDimSize(1)))
    return success();
  return op->emitOpError() << resultName << " must have the rows of "
                           << sourceName << ": "
                           << formatShape({ShapedType::kDynamic,
                                           source.getDimSize(1)})
                           << " of " << source.getElementType();
}

LogicalResult DedupPackOp::verify() {
  int64_t perNode = getExpertsPerNode();
  if (perNode < 1)
    return emitOpError() << "experts_per_node must be >= 1, got " << perNode;
  RankedTensorType ids = getExpertIds().getType();
  RankedTensorType positions = getPositions().getType();
  int64_t tokens = ids.getDimSize(0);
  int64_t k = ids.getDimSize(1);
  if (failed(verifyShape2D(*this, "positions", positions, tokens, k,
                           "[S, k] (the shape of expert_ids)")) ||
      failed(verifyShape2D(*this, "expert_ids", ids,
                           getTokens().getType().getDimSize(0), k, "[S, k]")))
    return failure();
  RankedTensorType unique = getUnique().getType();
  if (failed(verifySameRows(*this, "unique", unique, "tokens",
                            getTokens().getType())))
    return failure();
  RankedTensorType routes = getRoutes().getType();
  if (routes.getElementType() != ids.getElementType())
    return emitOpError() << "routes must have the element type of expert_ids "
                         << ids.getElementType();
  if (failed(verifyShape2D(*this, "routes", routes, unique.getDimSize(0), k,
                           "[R, k] (one row per unique row)")))
    return failure();
  RankedTensorType nodeCounts = getNodeCounts().getType();
  int64_t nodes = nodeCounts.getDimSize(0);
  if (isDynamic(nodes) || nodes < 1)
    return emitOpError() << "node_counts must have a static size >= 1 (the "
                            "number of nodes)";
  // S * min(k, nodes) past int64 bounds no capacity.
  std::optional<int64_t> most;
  if (!isDynamic(tokens) && !isDynamic(k))
    most = llvm::checkedMul(tokens, std::min(k, nodes));
  if (most && !isDynamic(unique.getDimSize(0)) && unique.getDimSize(0) > *most)
    return emitOpError() << "unique must have at most " << *most
                         << " rows (S * min(k, nodes)), got "
                         << unique.getDimSize(0);
  return success();
}

//===----------------------------------------------------------------------===//
// DedupExpandOp
//===----------------------------------------------------------------------===//

LogicalResult DedupExpandOp::verify() {
  int64_t perRank = getExpertsPerRank();
  if (perRank < 1)
    return emitOpError() << "experts_per_rank must be >= 1, got " << perRank;
  RankedTensorType unique = getUnique().getType();
  if (!compatible(getRoutes().getType().getDimSize(0), unique.getDimSize(0)))
    return emitOpError() << "routes must have one row per unique row, got "
                         << formatShape(getRoutes().getType().getShape())
                         << " for " << formatShape(unique.getShape());
  if (failed(verifySameRows(*this, "expanded", getExpanded().getType(),
                            "unique", unique)))
    return failure();
  int64_t nodes = getCounts().getType().getDimSize(0);
  if (isDynamic(nodes))
    return emitOpError() << "counts must have a static size (the number of "
                            "nodes)";
  RankedTensorType expanded = getExpandedCounts().getType();
  if (!expanded.hasStaticShape() || expanded.getDimSize(1) != nodes ||
      expanded.getDimSize(2) != perRank ||
      expanded.getElementType() != getCounts().getType().getElementType())
    return emitOpError() << "expanded_counts must be [ranks per node, " << nodes
                         << ", " << perRank << "] of "
                         << getCounts().getType().getElementType()
                         << ", got " << expanded;
  return success();
}

//===----------------------------------------------------------------------===//
// GroupedMatmulOp
//===----------------------------------------------------------------------===//

LogicalResult GroupedMatmulOp::verify() {
  RankedTensorType rows = getRows().getType();
  RankedTensorType weights = getWeights().getType();
  RankedTensorType counts = getCounts().getType();
  RankedTensorType result = getResult().getType();
  if (counts.getRank() < 1 || !counts.hasStaticShape())
    return emitOpError() << "counts must have a static shape ([n] or [P, n])";
  int64_t experts = counts.getShape().back();
  if (!compatible(weights.getDimSize(0), experts))
    return emitOpError() << "weights must hold one matrix per local expert: "
                         << experts << " (the last dimension of counts), got "
                         << weights.getDimSize(0);
  if (!compatible(weights.getDimSize(1), rows.getDimSize(1)))
    return emitOpError() << "weights must be [n, H, F] with H = "
                         << rows.getDimSize(1) << " (the row size), got "
                         << formatShape(weights.getShape());
  if (rows.getElementType() != weights.getElementType() ||
      result.getElementType() != rows.getElementType())
    return emitOpError() << "rows, weights and result must have one element "
                            "type, got "
                         << rows.getElementType() << ", "
                         << weights.getElementType() << " and "
                         << result.getElementType();
  return verifyShape2D(*this, "result", result, rows.getDimSize(0),
                       weights.getDimSize(2), "[R, F]");
}

//===----------------------------------------------------------------------===//
// CombineOp
//===----------------------------------------------------------------------===//

/// Optional `weights` of a combine must have the positions' shape [S, k].
static LogicalResult verifyCombineWeights(Operation *op,
                                          RankedTensorType positions,
                                          Value weights) {
  if (!weights)
    return success();
  auto type = cast<RankedTensorType>(weights.getType());
  if (compatible(positions.getDimSize(0), type.getDimSize(0)) &&
      compatible(positions.getDimSize(1), type.getDimSize(1)))
    return success();
  return op->emitOpError() << "positions and weights must have the same "
                              "shape [S, k], got "
                           << formatShape(positions.getShape()) << " and "
                           << formatShape(type.getShape());
}

LogicalResult CombineOp::verify() {
  RankedTensorType outputs = getExpertOutputs().getType();
  RankedTensorType positions = getPositions().getType();
  if (failed(verifyCombineWeights(*this, positions, getWeights())))
    return failure();
  RankedTensorType combined = getCombined().getType();
  if (combined.getElementType() != outputs.getElementType())
    return emitOpError() << "combined must have the expert outputs' element "
                            "type "
                         << outputs.getElementType();
  return verifyShape2D(*this, "combined", combined, positions.getDimSize(0),
                       outputs.getDimSize(1), "[S, H]");
}

//===----------------------------------------------------------------------===//
// AuxLossOp
//===----------------------------------------------------------------------===//

/// The expert weights of aux_loss and aux_loss_grad: given exactly for the
/// topology loss, one per expert of `probs` (named `probsName`), in its
/// element type, since the loss multiplies them into the probabilities'
/// terms.
static LogicalResult verifyLossWeights(Operation *op, AuxLossKind kind,
                                       Value weights, RankedTensorType probs,
                                       StringRef probsName) {
  bool topologyAware = kind == AuxLossKind::Topology;
  if (topologyAware != bool(weights))
    return op->emitOpError()
           << (topologyAware ? "'topology' loss needs the per-expert "
                               "weights of this rank"
                             : "'switch' loss takes no weights");
  if (!weights)
    return success();
  auto type = cast<RankedTensorType>(weights.getType());
  int64_t experts = probs.getDimSize(1);
  if (!compatible(type.getDimSize(0), experts))
    return op->emitOpError() << "weights must have one entry per expert ("
                             << experts << "), got " << type.getDimSize(0);
  if (type.getElementType() != probs.getElementType())
    return op->emitOpError()
           << "weights must have the " << probsName << "' element type "
           << probs.getElementType() << ", got " << type.getElementType();
  return success();
}

LogicalResult AuxLossOp::verify() {
  RankedTensorType probs = getProbs().getType();
  RankedTensorType ids = getExpertIds().getType();
  int64_t experts = probs.getDimSize(1);
  if (!compatible(probs.getDimSize(0), ids.getDimSize(0)))
    return emitOpError() << "probs and expert_ids must have one row per "
                            "token, got "
                         << formatShape(probs.getShape()) << " and "
                         << formatShape(ids.getShape());
  // f_e divides by the k * S assignments: with k = 0 there are none, and
  // the loss would be 0 / 0.
  if (ids.getDimSize(1) == 0)
    return emitOpError() << "k must be >= 1, got 0 (expert_ids "
                         << formatShape(ids.getShape()) << ")";
  if (!isDynamic(experts) && !isDynamic(ids.getDimSize(1)) &&
      ids.getDimSize(1) > experts)
    return emitOpError() << "k = " << ids.getDimSize(1)
                         << " exceeds the number of experts (" << experts
                         << ")";
  if (failed(verifyLossWeights(*this, getKind(), getExpertWeights(), probs,
                               "probs")))
    return failure();
  if (Value positions = getPositions()) {
    auto type = cast<RankedTensorType>(positions.getType());
    if (!compatible(type.getDimSize(0), ids.getDimSize(0)) ||
        !compatible(type.getDimSize(1), ids.getDimSize(1)))
      return emitOpError() << "dispatched positions must have the shape of "
                              "expert_ids "
                           << formatShape(ids.getShape()) << ", got "
                           << formatShape(type.getShape());
  }
  if (getLoss().getType().getElementType() != probs.getElementType())
    return emitOpError() << "loss must have the probs' element type "
                         << probs.getElementType();
  return success();
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

/// `gradient`, when present, has the type of the forward value it is the
/// gradient of (dynamic sizes agree with anything).
static LogicalResult verifyGradientOf(Operation *op, StringRef name,
                                      Value gradient, RankedTensorType of,
                                      StringRef ofName) {
  if (!gradient)
    return success();
  auto type = cast<RankedTensorType>(gradient.getType());
  if (type.getElementType() == of.getElementType() &&
      type.getRank() == of.getRank() &&
      llvm::all_of(llvm::seq<int64_t>(0, type.getRank()), [&](int64_t dim) {
        return compatible(type.getDimSize(dim), of.getDimSize(dim));
      }))
    return success();
  return op->emitOpError() << name << " must have the type of " << ofName
                           << " " << of << ", got " << type;
}

LogicalResult GateGradOp::verify() {
  RankedTensorType probs = getProbs().getType();
  RankedTensorType ids = getExpertIds().getType();
  int64_t tokens = probs.getDimSize(0);
  int64_t k = ids.getDimSize(1);
  if (!getDWeights() && !getDProbs())
    return emitOpError() << "needs the gradient of the weights, of the probs "
                            "or of both";
  if (!compatible(ids.getDimSize(0), tokens))
    return emitOpError() << "probs and expert_ids must have one row per "
                            "token, got "
                         << formatShape(probs.getShape()) << " and "
                         << formatShape(ids.getShape());
  auto weightsType = RankedTensorType::get({tokens, k}, probs.getElementType());
  if (failed(verifyGradientOf(*this, "d_weights", getDWeights(), weightsType,
                              "the weights")) ||
      failed(verifyGradientOf(*this, "d_probs", getDProbs(), probs,
                              "probs")) ||
      failed(verifyGradientOf(*this, "d_logits", getDLogits(), probs,
                              "probs")))
    return failure();
  return success();
}

LogicalResult CombineGradOp::verify() {
  RankedTensorType outputs = getExpertOutputs().getType();
  RankedTensorType positions = getPositions().getType();
  if (failed(verifyCombineWeights(*this, positions, getWeights())))
    return failure();
  if (bool(getWeights()) != bool(getDWeights()))
    return emitOpError() << "has a d_weights result exactly when it has "
                            "weights";
  auto combined =
      RankedTensorType::get({positions.getDimSize(0), outputs.getDimSize(1)},
                            outputs.getElementType());
  if (failed(verifyGradientOf(*this, "d_combined", getDCombined(), combined,
                              "the combined tokens")) ||
      failed(verifyGradientOf(*this, "d_expert_outputs", getDExpertOutputs(),
                              outputs, "expert_outputs")))
    return failure();
  if (Value weights = getWeights())
    return verifyGradientOf(*this, "d_weights", getDWeights(),
                            cast<RankedTensorType>(weights.getType()),
                            "weights");
  return success();
}

LogicalResult GroupedMatmulGradOp::verify() {
  RankedTensorType rows = getRows().getType();
  RankedTensorType weights = getWeights().getType();
  RankedTensorType counts = getCounts().getType();
  if (counts.getRank() < 1 || !counts.hasStaticShape())
    return emitOpError() << "counts must have a static shape ([n] or [P, n])";
  if (!compatible(weights.getDimSize(0), counts.getShape().back()) ||
      !compatible(weights.getDimSize(1), rows.getDimSize(1)))
    return emitOpError() << "weights must be [n, H, F] with n = "
                         << counts.getShape().back() << " and H = "
                         << rows.getDimSize(1) << ", got "
                         << formatShape(weights.getShape());
  if (rows.getElementType() != weights.getElementType())
    return emitOpError() << "rows and weights must have one element type, "
                            "got "
                         << rows.getElementType() << " and "
                         << weights.getElementType();
  auto result = RankedTensorType::get(
      {rows.getDimSize(0), weights.getDimSize(2)}, rows.getElementType());
  if (failed(verifyGradientOf(*this, "d_result", getDResult(), result,
                              "the result")) ||
      failed(verifyGradientOf(*this, "d_rows", getDRows(), rows, "rows")) ||
      failed(verifyGradientOf(*this, "d_weights", getDWeights(), weights,
                              "weights")))
    return failure();
  return success();
}

LogicalResult AuxLossGradOp::verify() {
  RankedTensorType ids = getExpertIds().getType();
  RankedTensorType probs = getDProbs().getType();
  int64_t experts = probs.getDimSize(1);
  if (!compatible(probs.getDimSize(0), ids.getDimSize(0)))
    return emitOpError() << "d_probs and expert_ids must have one row per "
                            "token, got "
                         << formatShape(probs.getShape()) << " and "
                         << formatShape(ids.getShape());
  if (isDynamic(experts))
    return emitOpError() << "d_probs must have a static number of experts";
  if (ids.getDimSize(1) == 0)
    return emitOpError() << "k must be >= 1, got 0 (expert_ids "
                         << formatShape(ids.getShape()) << ")";
  if (failed(verifyLossWeights(*this, getKind(), getExpertWeights(), probs,
                               "d_probs")))
    return failure();
  if (failed(verifyGradientOf(*this, "dispatched positions", getPositions(),
                              ids, "expert_ids")))
    return failure();
  if (getDLoss().getType().getElementType() != probs.getElementType())
    return emitOpError() << "d_loss must have the d_probs' element type "
                         << probs.getElementType();
  return success();
}

LogicalResult DedupPackGradOp::verify() {
  if (getExpertsPerNode() < 1)
    return emitOpError() << "experts_per_node must be >= 1, got "
                         << getExpertsPerNode();
  if (getNodes() < 1)
    return emitOpError() << "nodes must be >= 1, got " << getNodes();
  RankedTensorType ids = getExpertIds().getType();
  if (failed(verifyGradientOf(*this, "positions", getPositions(), ids,
                              "expert_ids")))
    return failure();
  RankedTensorType unique = getDUnique().getType();
  auto tokens = RankedTensorType::get({ids.getDimSize(0), unique.getDimSize(1)},
                                      unique.getElementType());
  return verifyGradientOf(*this, "d_tokens", getDTokens(), tokens,
                          "the tokens");
}

LogicalResult DedupExpandGradOp::verify() {
  if (getExpertsPerRank() < 1)
    return emitOpError() << "experts_per_rank must be >= 1, got "
                         << getExpertsPerRank();
  if (getRanksPerNode() < 1)
    return emitOpError() << "ranks_per_node must be >= 1, got "
                         << getRanksPerNode();
  if (isDynamic(getCounts().getType().getDimSize(0)))
    return emitOpError() << "counts must have a static size (the number of "
                            "nodes)";
  RankedTensorType expanded = getDExpanded().getType();
  auto unique = RankedTensorType::get(
      {getRoutes().getType().getDimSize(0), expanded.getDimSize(1)},
      expanded.getElementType());
  return verifyGradientOf(*this, "d_unique", getDUnique(), unique,
                          "the unique rows");
}

//===----------------------------------------------------------------------===//
// Scheduling
//===----------------------------------------------------------------------===//

LogicalResult AllToAllStartOp::verify() {
  if (failed(verifyExchange(*this)))
    return failure();
  // Buffers in flight must be waited for exactly once, where the start's
  // block still runs: a second wait would complete nothing, a missing one
  // would leave the runtime moving rows into memory that is freed.
  Value exchange = getExchange();
  if (!exchange.hasOneUse())
    return emitOpError() << "must be waited on exactly once, by one "
                            "tamoe.all_to_all_wait; it has "
                         << llvm::range_size(exchange.getUses()) << " uses";
  Operation *user = *exchange.getUsers().begin();
  if (!isa<AllToAllWaitOp>(user))
    return emitOpError() << "its exchange may only be used by "
                            "tamoe.all_to_all_wait, not by '"
                         << user->getName() << "'";
  if (user->getBlock() != (*this)->getBlock())
    return emitOpError() << "must be waited on in its own block";
  return success();
}

SmallVector<int16_t> AllToAllStartOp::getGroupAxes(int64_t gridRank) {
  return groupAxes(getGridAxes(), gridRank);
}

AllToAllWaitOp AllToAllStartOp::getWait() {
  return cast<AllToAllWaitOp>(*getExchange().getUsers().begin());
}

LogicalResult
AllToAllStartOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  return verifyExchangeGroup(*this, symbolTable);
}

AllToAllStartOp AllToAllWaitOp::getStart() {
  return getExchange().getDefiningOp<AllToAllStartOp>();
}

LogicalResult AllToAllWaitOp::verify() {
  AllToAllStartOp start = getStart();
  if (!start)
    return emitOpError()
           << "waits on an exchange that no tamoe.all_to_all_start returns";
  if (failed(verifyReceivedRows(*this, start.getSend().getType(),
                                getReceived().getType())))
    return failure();
  if (getRecvCounts().getType() != start.getSendCounts().getType())
    return emitOpError() << "recv_counts must have the type of the start's "
                            "send_counts, "
                         << start.getSendCounts().getType();
  return success();
}

/// Rows of `result` have the row shape and element type of `source` (any
/// row capacity).
static LogicalResult verifySameRowType(Operation *op, StringRef resultName,
                                       RankedTensorType result,
                                       StringRef sourceName,
                                       RankedTensorType source) {
  if (result.getRank() == source.getRank() &&
      result.getElementType() == source.getElementType() &&
      llvm::all_of(llvm::seq<int64_t>(1, source.getRank()), [&](int64_t dim) {
        return compatible(result.getDimSize(dim), source.getDimSize(dim));
      }))
    return success();
  SmallVector<int64_t> shape(source.getShape());
  shape[0] = ShapedType::kDynamic;
  return op->emitOpError() << resultName << " must have the rows of "
                           << sourceName << ": " << formatShape(shape)
                           << " of " << source.getElementType();
}

/// Counts of blocks of rows: integers of a static shape.
static LogicalResult verifyBlockCounts(Operation *op,
                                       RankedTensorType counts) {
  if (counts.getRank() < 1)
    return op->emitOpError() << "counts must have at least one dimension";
  if (!counts.hasStaticShape())
    return op->emitOpError() << "counts must have a static shape";
  return success();
}

/// The checks tamoe.chunk and tamoe.chunk_positions share: part `chunk`
/// of `chunks`.
static LogicalResult verifyPart(Operation *op, int64_t chunk, int64_t chunks) {
  if (chunks < 1)
    return op->emitOpError() << "chunks must be at least 1, got " << chunks;
  if (chunk < 0 || chunk >= chunks)
    return op->emitOpError()
           << "chunk must be in [0, " << chunks << "), got " << chunk;
  return success();
}

LogicalResult ChunkOp::verify() {
  RankedTensorType rows = getRows().getType();
  if (rows.getRank() < 1)
    return emitOpError() << "rows must have at least one dimension";
  // I64Attr reads back unsigned: negative values are large.
  if (failed(verifyPart(*this, int64_t(getChunk()), int64_t(getChunks()))))
    return failure();
  if (failed(verifyBlockCounts(*this, getCounts().getType())))
    return failure();
  return verifySameRowType(*this, "chunk_rows", getChunkRows().getType(),
                           "rows", rows);
}

int64_t ChunkOp::partCapacity(int64_t rows, int64_t entries, int64_t chunks) {
  if (isDynamic(rows) || isDynamic(entries) || chunks < 1)
    return rows;
  // Part c of an entry of n rows is [floor(c n / C), floor((c + 1) n / C)):
  // at most ceil(n / C) <= (n + C - 1) / C rows, summed over the entries.
  int64_t slack, sum;
  if (llvm::MulOverflow(entries, chunks - 1, slack) ||
      llvm::AddOverflow(rows, slack, sum))
    return rows;
  return std::min(rows, sum / chunks);
}

LogicalResult ChunkPositionsOp::verify() {
  // I64Attr reads back unsigned: negative values are large.
  if (failed(verifyPart(*this, int64_t(getChunk()), int64_t(getChunks()))))
    return failure();
  int64_t experts = getExpertCounts().getType().getDimSize(0);
  if (isDynamic(experts) || experts < 1)
    return emitOpError() << "expert_counts must have a static size >= 1 (the "
                            "number of experts)";
  RankedTensorType positions = getPositions().getType();
  return verifyShape2D(*this, "expert_ids", getExpertIds().getType(),
                       positions.getDimSize(0), positions.getDimSize(1),
                       "[S, k] (the shape of positions)");
}

LogicalResult UnchunkOp::verify() {
  RankedTensorType rows = getRows().getType();
  if (rows.getRank() < 1)
    return emitOpError() << "rows must have at least one dimension";
  if (getParts().empty())
    return emitOpError() << "needs at least one part";
  if (failed(verifyBlockCounts(*this, getCounts().getType())))
    return failure();
  for (auto [i, part] : llvm::enumerate(getParts()))
    if (failed(verifySameRowType(*this, ("part " + Twine(i)).str(),
                                 cast<RankedTensorType>(part.getType()),
                                 "rows", rows)))
      return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

SmallVector<int16_t> AllReduceOp::getGroupAxes(int64_t gridRank) {
  return groupAxes(getGridAxes(), gridRank);
}

LogicalResult AllReduceOp::verifySymbolUses(SymbolTableCollection &symbols) {
  if (failed(verifyGridAxes(*this, getGridAxes())))
    return failure();
  return verifyGroup(*this, getGridAttr(), getGridAxes(), symbols);
}

/// A hyperparameter that must be finite and within [low, high].
static LogicalResult verifyInRange(Operation *op, StringRef name,
                                   APFloat value, double low, double high) {
  double x = value.convertToDouble();
  if (std::isfinite(x) && x >= low && x <= high)
    return success();
  return op->emitOpError() << name << " must be in ["
                           << ::tamoe::formatNumber(low) << ", "
                           << ::tamoe::formatNumber(high) << "], got "
                           << ::tamoe::formatNumber(x);
}

LogicalResult SGDOp::verify() {
  if (failed(verifyInRange(*this, "momentum", getMomentum(), 0.0, 1.0)) ||
      failed(verifyInRange(*this, "weight_decay", getWeightDecay(), 0.0, 1.0)))
    return failure();
  return success();
}

LogicalResult AdamOp::verify() {
  // beta = 1 would divide by zero in the bias correction; eps = 0 would
  // divide by zero for a parameter that never had a gradient.
  if (failed(verifyInRange(*this, "beta1", getBeta1(), 0.0, 0.999999)) ||
      failed(verifyInRange(*this, "beta2", getBeta2(), 0.0, 0.999999)) ||
      failed(verifyInRange(*this, "weight_decay", getWeightDecay(), 0.0,
                           1.0)))
    return failure();
  double eps = getEps().convertToDouble();
  if (!std::isfinite(eps) || eps <= 0.0)
    return emitOpError() << "eps must be positive and finite, got "
                         << ::tamoe::formatNumber(eps);
  return success();
}

/// The types of the float tensors among `types`: what a function's
/// gradients are taken of and for.
static SmallVector<Type> floatTensors(TypeRange types) {
  SmallVector<Type> result;
  for (Type type : types)
    if (auto tensor = dyn_cast<RankedTensorType>(type);
        tensor && isa<FloatType>(tensor.getElementType()))
      result.push_back(type);
  return result;
}

LogicalResult VJPOp::verifySymbolUses(SymbolTableCollection &symbols) {
  auto callee =
      symbols.lookupNearestSymbolFrom<func::FuncOp>(*this, getCalleeAttr());
  if (!callee)
    return emitOpError() << "'" << getCallee()
                         << "' does not name a func.func";
  FunctionType type = callee.getFunctionType();
  auto list = [](TypeRange types) {
    std::string text;
    llvm::raw_string_ostream os(text);
    os << "(";
    llvm::interleaveComma(types, os);
    os << ")";
    return text;
  };
  auto mismatch = [&](StringRef what, TypeRange got, TypeRange expected) {
    return emitOpError() << what << " must be " << list(expected) << " for @"
                         << getCallee() << ", got " << list(got);
  };
  if (TypeRange(getArguments().getTypes()) != TypeRange(type.getInputs()))
    return mismatch("arguments", getArguments().getTypes(), type.getInputs());
  if (TypeRange(getResults().getTypes()) != TypeRange(type.getResults()))
    return mismatch("results", getResults().getTypes(), type.getResults());
  SmallVector<Type> cotangents = floatTensors(type.getResults());
  if (TypeRange(getCotangents().getTypes()) != TypeRange(cotangents))
    return mismatch("cotangents (one per float tensor result)",
                    getCotangents().getTypes(), cotangents);
  SmallVector<Type> gradients = floatTensors(type.getInputs());
  if (TypeRange(getGradients().getTypes()) != TypeRange(gradients))
    return mismatch("gradients (one per float tensor argument)",
                    getGradients().getTypes(), gradients);
  return success();
}
