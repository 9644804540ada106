//===- ConvertToRuntime.cpp - tamoe ops as calls of the runtime's C ABI ---===//
//
// Each tamoe op becomes a call of its tamoe_rt_* function
// (runtime/include/tamoe_rt/tamoe_rt.h) on raw pointers: its tensor operands
// are taken as buffers (bufferization.to_buffer), its results are fresh
// memrefs handed back as tensors (bufferization.to_tensor restrict), so
// One-Shot Bufferize lowers the rest of the program around them. The shard
// ops that name this rank become runtime queries, and the grids go.
//
//===----------------------------------------------------------------------===//

#include "NarrowFloats.h"
#include "tamoe/Dialect/TAMoE/Autodiff/Autodiff.h"
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"
#include "tamoe_rt/tamoe_rt.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/Iterators.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/TypeSwitch.h"

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOECONVERTTORUNTIMEPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;

namespace {
tamoe_rt_map_t toMapKind(ElementwiseKind kind) {
  switch (kind) {
  case ElementwiseKind::Add:
    return TAMOE_RT_MAP_ADD;
  case ElementwiseKind::Sub:
    return TAMOE_RT_MAP_SUB;
  case ElementwiseKind::Mul:
    return TAMOE_RT_MAP_MUL;
  case ElementwiseKind::Relu:
    return TAMOE_RT_MAP_RELU;
  case ElementwiseKind::Neg:
    return TAMOE_RT_MAP_NEG;
  case ElementwiseKind::ReluGrad:
    return TAMOE_RT_MAP_RELU_GRAD;
  case ElementwiseKind::Silu:
    return TAMOE_RT_MAP_SILU;
  case ElementwiseKind::SiluGrad:
    return TAMOE_RT_MAP_SILU_GRAD;
  }
  llvm_unreachable("unknown elementwise kind");
}

/// A contiguous piece of a dense constant: the constant and the index of the
/// piece's first element in it (null for 0).
struct ConstantPiece {
  arith::ConstantOp constant;
  Value offset;
};

/// `tensor` as a piece of a dense constant: the constant itself, or a
/// unit-stride tensor.extract_slice of it that is contiguous in row-major
/// order (unit sizes, then one dimension of any size, then whole ones).
static std::optional<ConstantPiece> constantPiece(OpBuilder &b, Location loc,
                                                  Value tensor) {
  if (auto constant = tensor.getDefiningOp<arith::ConstantOp>();
      constant && isa<DenseElementsAttr>(constant.getValue()))
    return ConstantPiece{constant, Value()};
  auto slice = tensor.getDefiningOp<tensor::ExtractSliceOp>();
  if (!slice || !slice.hasUnitStride())
    return std::nullopt;
  auto constant = slice.getSource().getDefiningOp<arith::ConstantOp>();
  if (!constant || !isa<DenseElementsAttr>(constant.getValue()))
    return std::nullopt;
  ArrayRef<int64_t> shape = slice.getSourceType().getShape();
  ArrayRef<int64_t> sizes = slice.getStaticSizes();
  ArrayRef<int64_t> offsets = slice.getStaticOffsets();
  size_t first = 0;
  while (first < sizes.size() && sizes[first] == 1)
    ++first;
  for (size_t dim = first + 1; dim < sizes.size(); ++dim)
    if (sizes[dim] != shape[dim] || offsets[dim] != 0)
      return std::nullopt;
  if (first < sizes.size() && ShapedType::isDynamic(sizes[first]))
    return std::nullopt;
  // The sum of offset[d] * stride[d] over the dimensions up to `first`.
  int64_t last = std::min<int64_t>(first, int64_t(sizes.size()) - 1);
  int64_t stride = 1;
  for (int64_t dim = last + 1; dim < int64_t(shape.size()); ++dim)
    stride *= shape[dim];
  Value offset;
  for (int64_t dim = last; dim >= 0; stride *= shape[dim--]) {
    Value term = getValueOrCreateConstantIndexOp(
        b, loc, slice.getMixedOffsets()[dim]);
    term = arith::MulIOp::create(
        b, loc, term, arith::ConstantIndexOp::create(b, loc, stride));
    offset = offset ? arith::AddIOp::create(b, loc, offset, term).getResult()
                    : term;
  }
  return ConstantPiece{constant, offset};
}

/// The runtime's code of a row element type (tamoe_rt_dtype_t), if it has
/// one.
static std::optional<int32_t> runtimeDtype(Type element) {
  if (element.isF32())
    return TAMOE_RT_F32;
  if (element.isBF16())
    return TAMOE_RT_BF16;
  if (element.isF16())
    return TAMOE_RT_F16;
  return std::nullopt;
}

/// Emits the calls for one op, before it.
class Lowering {
public:
  Lowering(Operation *op, ModuleOp module)
      : b(op), loc(op->getLoc()), module(module) {
    ptrType = LLVM::LLVMPointerType::get(b.getContext());
  }

  OpBuilder b;
  Location loc;
  /// The context the calls go through (ConvertToRuntimePass::lowering).
  Value context;

  /// Asks for the process's context, at the insertion point. `hostLoops`:
  /// the program's other compute stays host loops (see
  /// tamoe_rt_program_enter).
  Value programContext(bool hostLoops) {
    return call("tamoe_rt_program_enter",
                {i32(hostLoops ? 1 : 0), i32(TAMOE_RT_ABI_VERSION)}, ptrType);
  }

  Value index(int64_t value) {
    return arith::ConstantIndexOp::create(b, loc, value);
  }
  Value i32(int64_t value) {
    return arith::ConstantIntOp::create(b, loc, value, 32);
  }
  Value null() { return LLVM::ZeroOp::create(b, loc, ptrType); }
  /// The tamoe_rt_dtype_t of a tensor's elements (checkElements has
  /// checked that it has one).
  Value dtype(Value tensor) {
    return i32(*runtimeDtype(getElementTypeOrSelf(tensor.getType())));
  }

  /// Size of dimension `dim` of a tensor or memref.
  Value dim(Value shaped, int64_t dim) {
    auto type = cast<ShapedType>(shaped.getType());
    if (!type.isDynamicDim(dim))
      return index(type.getDimSize(dim));
    if (isa<MemRefType>(type))
      return memref::DimOp::create(b, loc, shaped, dim);
    return tensor::DimOp::create(b, loc, shaped, dim);
  }

  /// The fewest rows (first dimension) of `shaped`: the capacity of buffers
  /// that the runtime fills or reads up to one count of rows.
  Value minDim(ArrayRef<Value> shaped) {
    int64_t fewest = ShapedType::kDynamic;
    SmallVector<Value> dynamic;
    for (Value value : shaped) {
      int64_t rows = cast<ShapedType>(value.getType()).getDimSize(0);
      if (ShapedType::isDynamic(rows))
        dynamic.push_back(dim(value, 0));
      else if (ShapedType::isDynamic(fewest) || rows < fewest)
        fewest = rows;
    }
    Value result = ShapedType::isDynamic(fewest) ? Value() : index(fewest);
    for (Value rows : dynamic)
      result = result ? arith::MinSIOp::create(b, loc, result, rows).getResult()
                      : rows;
    return result;
  }

  /// The buffer of a tensor operand, only read by the runtime.
  Value input(Value tensor) {
    auto type = cast<RankedTensorType>(tensor.getType());
    auto memref = MemRefType::get(type.getShape(), type.getElementType());
    auto buffer = bufferization::ToBufferOp::create(b, loc, memref, tensor);
    buffer.setReadOnly(true);
    return buffer;
  }

  /// A fresh buffer for a result of `type`; `rows` gives a dynamic first
  /// dimension (the only one a tamoe op's result may have).
  Value output(RankedTensorType type, Value rows = {}) {
    auto memref = MemRefType::get(type.getShape(), type.getElementType());
    SmallVector<Value> sizes;
    if (type.getRank() > 0 && type.isDynamicDim(0))
      sizes.push_back(rows);
    return memref::AllocOp::create(b, loc, memref, sizes);
  }

  /// A fresh buffer for a result of `type` whose dimension i is that of
  /// `shapes[i]` dimension `dims[i]`.
  Value output(RankedTensorType type, ArrayRef<std::pair<Value, int64_t>> of) {
    auto memref = MemRefType::get(type.getShape(), type.getElementType());
    SmallVector<Value> sizes;
    for (auto [i, source] : llvm::enumerate(of))
      if (type.isDynamicDim(i))
        sizes.push_back(dim(source.first, source.second));
    return memref::AllocOp::create(b, loc, memref, sizes);
  }

  /// The pointer the runtime reads a tensor operand through: a dense
  /// constant (or a contiguous piece of one) as the backend's copy of it,
  /// anything else as its buffer.
  Value data(Value tensor) {
    std::optional<ConstantPiece> piece = constantPiece(b, loc, tensor);
    if (!piece)
      return pointer(input(tensor));
    auto type = cast<RankedTensorType>(tensor.getType());
    int64_t elementBytes = type.getElementTypeBitWidth() / 8;
    Value host = pointer(input(piece->constant));
    if (piece->offset) {
      Value offset = arith::IndexCastOp::create(
          b, loc, b.getI64Type(),
          arith::MulIOp::create(b, loc, piece->offset, index(elementBytes)));
      host = LLVM::GEPOp::create(b, loc, ptrType, b.getI8Type(), host,
                                 ValueRange{offset});
    }
    return call("tamoe_rt_program_constant",
                {host, index(type.getNumElements() * elementBytes)}, ptrType);
  }

  /// data(tensor), or a null pointer for an absent optional operand.
  Value optionalData(Value tensor) { return tensor ? data(tensor) : null(); }

  /// The buffer of a tensor operand that the runtime updates in place (an
  /// optimizer's state, a reduction): One-Shot Bufferize copies the tensor
  /// first if its old value is still read.
  Value inPlace(Value tensor) {
    auto type = cast<RankedTensorType>(tensor.getType());
    auto memref = MemRefType::get(type.getShape(), type.getElementType());
    return bufferization::ToBufferOp::create(b, loc, memref, tensor);
  }

  /// A fresh buffer for a result that some op reads, or null (the runtime
  /// then skips computing it) for one without uses.
  Value outputIfUsed(Value result, Value rows = {}) {
    if (result.use_empty())
      return Value();
    return output(cast<RankedTensorType>(result.getType()), rows);
  }

  /// The pointer of a buffer from outputIfUsed (null stays null).
  Value pointerOrNull(Value buffer) { return buffer ? pointer(buffer) : null(); }

  /// Replaces `op`'s results, in order, by the tensors its result buffers
  /// hold once the runtime has filled them, and erases it. A null buffer
  /// stands for a result without uses.
  void replace(Operation *op, ArrayRef<Value> buffers) {
    for (auto [result, buffer] : llvm::zip_equal(op->getResults(), buffers))
      if (buffer)
        result.replaceAllUsesWith(bufferization::ToTensorOp::create(
            b, loc, result.getType(), buffer, /*restrict=*/true,
            /*writable=*/true));
    op->erase();
  }

  /// The aligned pointer of a buffer, as the C ABI takes it.
  Value pointer(Value buffer) {
    Value address =
        memref::ExtractAlignedPointerAsIndexOp::create(b, loc, buffer);
    Value integer =
        arith::IndexCastOp::create(b, loc, b.getI64Type(), address);
    return LLVM::IntToPtrOp::create(b, loc, ptrType, integer);
  }

  /// Bytes of one row (every dimension but the first) of a shaped type.
  Value rowBytes(ShapedType type) {
    int64_t bytes = type.getElementTypeBitWidth() / 8;
    for (int64_t size : type.getShape().drop_front())
      bytes *= size;
    return index(bytes);
  }

  /// Calls `tamoe_rt_<name>(context, args...)` and checks its status: a
  /// failure ends the program on every rank with the runtime's message.
  void runtime(StringRef name, ArrayRef<Value> args) {
    SmallVector<Value> operands{context};
    llvm::append_range(operands, args);
    Value status =
        call(("tamoe_rt_" + name).str(), operands, b.getI32Type());
    call("tamoe_rt_program_check", {status}, {});
  }

  /// Ends the program on every rank, before the op runs, when the extents
  /// `got` and `want` differ (tamoe_rt_program_check_extent, which adds
  /// both to `message`): for buffers that a runtime call reads or writes up
  /// to an extent taken from another buffer. Nothing when both are the
  /// same constant; different static sizes are refused by the verifiers
  /// already.
  void requireEqual(Value got, Value want, const Twine &message) {
    APInt gotSize, wantSize;
    if (matchPattern(got, m_ConstantInt(&gotSize)) &&
        matchPattern(want, m_ConstantInt(&wantSize)) && gotSize == wantSize)
      return;
    // The message as bytes of a dense constant, which bufferizes to a
    // global that the call reads on the host.
    std::string text = message.str();
    auto type =
        RankedTensorType::get({int64_t(text.size())}, b.getIntegerType(8));
    Value bytes = arith::ConstantOp::create(
        b, loc,
        DenseElementsAttr::getFromRawBuffer(
            type, ArrayRef(text.data(), text.size())));
    call("tamoe_rt_program_check_extent",
         {pointer(input(bytes)), index(int64_t(text.size())), got, want}, {});
  }

  /// requireEqual with the message every such check gives: "<op>: <name>
  /// and <reference> have different numbers of <what>".
  void requireSame(Operation *op, StringRef what, StringRef name, Value got,
                   StringRef reference, Value want) {
    requireEqual(got, want,
                 op->getName().getStringRef() + ": " + name + " and " +
                     reference + " have different numbers of " + what);
  }

  /// An operand that a check names: its name in the op's syntax and its
  /// value (null for an absent optional operand, which is not checked).
  using Named = std::pair<StringRef, Value>;

  /// requireEqual for the rows (first dimension) of each of `others` and
  /// those of `reference`, the operand whose rows the runtime call is given:
  /// "tamoe.combine: weights and positions have different numbers of rows".
  void requireSameRows(Operation *op, Named reference, ArrayRef<Named> others) {
    auto staticRows = [](Value value) {
      auto type = cast<ShapedType>(value.getType());
      return type.getRank() == 0 || !type.isDynamicDim(0);
    };
    Value want;
    for (auto [name, value] : others) {
      if (!value || value == reference.second ||
          (staticRows(value) && staticRows(reference.second)))
        continue;
      if (!want)
        want = dim(reference.second, 0);
      requireSame(op, "rows", name, dim(value, 0), reference.first, want);
    }
  }

  /// Calls `name`, declaring it (private, C ABI types) on first use.
  Value call(StringRef name, ValueRange args, TypeRange results) {
    auto function = module.lookupSymbol<func::FuncOp>(name);
    if (!function) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToEnd(module.getBody());
      function = func::FuncOp::create(
          b, loc, name, b.getFunctionType(TypeRange(args), results));
      function.setPrivate();
    }
    auto op = func::CallOp::create(b, loc, function, args);
    return results.empty() ? Value() : op.getResult(0);
  }

private:
  ModuleOp module;
  Type ptrType;
};

struct ConvertToRuntimePass
    : public mlir::tamoe::impl::TAMoEConvertToRuntimePassBase<
          ConvertToRuntimePass> {
  using Base::Base;
  void runOnOperation() override;

private:
  LogicalResult lower(GateOp op);
  LogicalResult lower(DispatchOp op);
  LogicalResult lower(AllToAllOp op, SymbolTableCollection &symbols);
  /// An exchange's operands and result buffers, and the first arguments of
  /// tamoe_rt_all_to_all and tamoe_rt_all_to_all_start.
  struct Exchange {
    Value send, recvCounts, received;
    SmallVector<Value> arguments;
    /// The slot that holds a started exchange's runtime handle.
    Value handle;
  };
  FailureOr<Exchange> prepareExchange(Lowering &l, Operation *op,
                                      SymbolTableCollection &symbols);
  LogicalResult lower(AllToAllStartOp op, SymbolTableCollection &symbols);
  LogicalResult lower(AllToAllWaitOp op);
  /// The exchanges started and not yet waited for.
  DenseMap<Operation *, Exchange> started;
  LogicalResult lower(ChunkOp op);
  LogicalResult lower(UnchunkOp op);
  LogicalResult lower(ChunkPositionsOp op);
  LogicalResult lower(RegroupOp op);
  /// static-capacity: the rows one counts entry of each exchange stands for
  /// at most (rowsPerCountsEntry), found before the ops it traces through
  /// are lowered.
  DenseMap<Operation *, int64_t> rowsPerEntry;
  /// The receive sizes of exchanges whose send counts follow from one
  /// counts tensor (planExchangeTotals): the host slot that one
  /// tamoe_rt_all_to_all_totals call fills, and this exchange's step in it.
  struct ExchangeTotal {
    Value totals;
    int64_t step;
  };
  DenseMap<Operation *, ExchangeTotal> exchangeTotals;
  LogicalResult planExchangeTotals(ArrayRef<Operation *> ops,
                                   SymbolTableCollection &symbols);
  LogicalResult lower(DedupPackOp op);
  LogicalResult lower(DedupExpandOp op);
  LogicalResult lower(GroupedMatmulOp op);
  LogicalResult lower(CombineOp op);
  LogicalResult lower(AuxLossOp op);
  LogicalResult lower(GateGradOp op);
  LogicalResult lower(CombineGradOp op);
  LogicalResult lower(GroupedMatmulGradOp op);
  LogicalResult lower(AuxLossGradOp op);
  LogicalResult lower(DedupPackGradOp op);
  LogicalResult lower(DedupExpandGradOp op);
  LogicalResult lower(AllReduceOp op, SymbolTableCollection &symbols);
  LogicalResult lower(SGDOp op);
  LogicalResult lower(AdamOp op);
  LogicalResult lower(linalg::MatmulOp op);
  LogicalResult lowerMap(Operation *op, tamoe_rt_map_t kind, Value a, Value b);
  /// A conversion between row types (matchConversion) as tamoe_rt_convert.
  LogicalResult lowerConversion(linalg::GenericOp op, Value input);
  LogicalResult lowerAddCounts(linalg::AddOp op);
  LogicalResult lower(shard::ProcessLinearIndexOp op,
                      SymbolTableCollection &symbols);
  LogicalResult lower(shard::ProcessMultiIndexOp op,
                      SymbolTableCollection &symbols);
  /// Lowers the tensor compute that device-resident programs run through
  /// the runtime, then fails on any that is left.
  LogicalResult lowerDenseCompute();
  /// A Lowering before `op` whose calls use the context of `op`'s function,
  /// asked for once at the function's entry.
  Lowering lowering(Operation *op);

  /// The context of each function that has asked for it.
  DenseMap<Operation *, Value> contexts;
};
} // namespace

/// A collective's grid and the runtime's group for its axes.
struct Collective {
  shard::GridOp grid;
  tamoe_rt_group_t group;
};

/// The runtime's group for a collective over `op`'s grid and axes: the
/// whole grid, its last axis (the ranks of a node) and the other axes
/// (same-index ranks of every node).
template <typename OpTy>
static FailureOr<Collective> runtimeGroup(OpTy op,
                                          SymbolTableCollection &symbols) {
  shard::GridOp grid = shard::getGridOrNull(op, op.getGridAttr(), symbols);
  if (!grid)
    return op.emitOpError() << "'@" << op.getGrid()
                            << "' does not name a shard.grid";
  int64_t rank = grid.getRank();
  SmallVector<int16_t> axes = op.getGroupAxes(rank);
  if (llvm::equal(axes, llvm::seq<int16_t>(0, rank)))
    return Collective{grid, TAMOE_RT_GROUP_WORLD};
  if (rank >= 2 && axes == SmallVector<int16_t>{int16_t(rank - 1)})
    return Collective{grid, TAMOE_RT_GROUP_NODE};
  if (rank >= 2 && llvm::equal(axes, llvm::seq<int16_t>(0, rank - 1)))
    return Collective{grid, TAMOE_RT_GROUP_PEERS};
  return op.emitOpError()
         << "cannot be lowered to the runtime: its groups are the whole "
            "grid, its last axis (a node) or the axes before it";
}

/// The runtime takes rows (tokens, expert activations and weights, their
/// gradients) of f32, bf16 or f16; routing (logits, probabilities, combine
/// weights, losses) in f32; ids, positions and counts as i32.
static LogicalResult checkElements(Operation *op, ArrayRef<Value> rows,
                                   ArrayRef<Value> floats,
                                   ArrayRef<Value> integers) {
  for (Value value : rows)
    if (!runtimeDtype(getElementTypeOrSelf(value.getType())))
      return op->emitOpError() << "cannot be lowered to the runtime: rows "
                                  "are f32, bf16 or f16, got "
                               << value.getType();
  for (Value value : floats)
    if (!getElementTypeOrSelf(value.getType()).isF32())
      return op->emitOpError()
             << "cannot be lowered to the runtime: routing (logits, "
                "probabilities, weights, losses) is f32, got "
             << value.getType();
  for (Value value : integers)
    if (!getElementTypeOrSelf(value.getType()).isInteger(32))
      return op->emitOpError() << "cannot be lowered to the runtime: ids, "
                                  "positions and counts must be i32, got "
                               << value.getType();
  return success();
}

/// The runtime's buffers are rows of bytes: only the first dimension (the
/// rows) may be dynamic, and elements are whole bytes.
static LogicalResult checkShapes(Operation *op) {
  for (Type type : llvm::concat<const Type>(op->getOperandTypes(),
                                            op->getResultTypes())) {
    auto tensor = dyn_cast<RankedTensorType>(type);
    if (!tensor)
      continue;
    Type element = tensor.getElementType();
    if (!element.isIntOrFloat() || element.getIntOrFloatBitWidth() % 8 != 0)
      return op->emitOpError() << "cannot be lowered to the runtime: its "
                                  "elements must be whole bytes, got "
                               << type;
    if (llvm::any_of(tensor.getShape().drop_front(), ShapedType::isDynamic))
      return op->emitOpError() << "cannot be lowered to the runtime: only the "
                                  "first dimension (the rows) may be "
                                  "dynamic, got "
                               << type;
  }
  return success();
}

/// Product of the dimensions of `type` from `first` on.
static int64_t product(ShapedType type, int64_t first) {
  int64_t result = 1;
  for (int64_t size : type.getShape().drop_front(first))
    result *= size;
  return result;
}

LogicalResult ConvertToRuntimePass::lower(GateOp op) {
  if (failed(checkElements(op, {}, {op.getLogits(), op.getWeights()},
                           {op.getExpertIds()})))
    return failure();
  Lowering l = lowering(op);
  Value logits = op.getLogits();
  Value tokens = l.dim(logits, 0);
  Value ids = l.output(op.getExpertIds().getType(), tokens);
  Value weights = l.output(op.getWeights().getType(), tokens);
  Value probs = l.output(op.getProbs().getType(), tokens);
  l.runtime(
      "gate",
      {l.data(logits), tokens, l.dim(logits, 1), l.index(op.getK()),
       l.i32(op.getScore() == ScoreFunction::Sigmoid ? TAMOE_RT_SCORE_SIGMOID
                                                     : TAMOE_RT_SCORE_SOFTMAX),
       l.i32(op.getRenormalize() ? 1 : 0),
       l.index(op.getNumGroups().value_or(0)),
       l.index(op.getGroupsKept().value_or(0)), l.pointer(ids),
       l.pointer(weights), l.pointer(probs)});
  l.replace(op, {ids, weights, probs});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(DispatchOp op) {
  SmallVector<Value> floats;
  if (op.getWeights())
    floats.push_back(op.getWeights());
  if (failed(checkElements(
          op, {}, floats,
          {op.getExpertIds(), op.getExpertCounts(), op.getPositions()})))
    return failure();
  RankedTensorType tokensType = op.getTokens().getType();
  if (ShapedType::isDynamic(tokensType.getDimSize(0)) &&
      op.getCapacityFactor())
    return op.emitOpError() << "cannot be lowered to the runtime: a "
                               "capacity_factor needs a static token count";
  std::optional<int64_t> capacity =
      op.getCapacityFor(tokensType.getDimSize(0));
  Lowering l = lowering(op);
  Value tokens = op.getTokens();
  Value ids = op.getExpertIds();
  // The ids (and weights) are read for the tokens' rows.
  l.requireSameRows(op, {"tokens", tokens},
                    {{"expert_ids", ids}, {"weights", op.getWeights()}});
  Value numTokens = l.dim(tokens, 0);
  RankedTensorType rowsType = op.getDispatched().getType();
  // Dynamic only with a dynamic token count and no capacity: S * k rows.
  Value rows = ShapedType::isDynamic(rowsType.getDimSize(0))
                   ? arith::MulIOp::create(l.b, l.loc, numTokens,
                                           l.dim(ids, 1))
                         .getResult()
                   : Value();
  Value dispatched = l.output(rowsType, rows);
  Value counts = l.output(op.getExpertCounts().getType());
  Value positions = l.output(op.getPositions().getType(), numTokens);
  Value dropped = l.output(op.getNumDropped().getType());
  Value weights = op.getWeights() ? l.data(op.getWeights())
                                  : l.null();
  bool byProbability =
      op.getDropPolicy().value_or(DropPolicy::Position) ==
      DropPolicy::Probability;
  l.runtime("dispatch",
            {l.data(tokens), numTokens, l.rowBytes(tokensType), l.data(ids),
             l.dim(ids, 1),
             l.index(op.getExpertCounts().getType().getDimSize(0)), weights,
             l.index(capacity.value_or(-1)),
             l.i32(byProbability ? TAMOE_RT_DROP_PROBABILITY
                                 : TAMOE_RT_DROP_POSITION),
             l.pointer(dispatched), l.dim(dispatched, 0), l.pointer(counts),
             l.pointer(positions), l.pointer(dropped)});
  l.replace(op, {dispatched, counts, positions, dropped});
  return success();
}

/// Ends the program, before the op at `l` runs and on every rank, when the
/// ranks it was launched on are not `grid`'s (tamoe_rt_program_check_grid):
/// a message that names both, rather than a failed exchange. `nodes`: the
/// op splits the grid at its last axis, which must then be a node.
static void checkGrid(Lowering &l, shard::GridOp grid, bool nodes) {
  ArrayRef<int64_t> shape = grid.getShape();
  if (llvm::any_of(shape, ShapedType::isDynamic))
    return;
  auto type = RankedTensorType::get({int64_t(shape.size())}, l.b.getI64Type());
  Value constant = arith::ConstantOp::create(
      l.b, l.loc, DenseElementsAttr::get(type, shape));
  l.call("tamoe_rt_program_check_grid",
         {l.pointer(l.input(constant)), l.index(int64_t(shape.size())),
          l.i32(nodes ? 1 : 0)},
         {});
}

/// The counts that `counts` follow from one op back, when that op only
/// moves their entries or takes a part of each: a reshape or cast, a
/// regroup, a chunk, an exchange (its received counts are the peers' send
/// counts); null for any other.
static Value countsBefore(Value counts) {
  Operation *def = counts.getDefiningOp();
  if (auto expand = dyn_cast_or_null<tensor::ExpandShapeOp>(def))
    return expand.getSrc();
  if (auto collapse = dyn_cast_or_null<tensor::CollapseShapeOp>(def))
    return collapse.getSrc();
  if (auto cast = dyn_cast_or_null<tensor::CastOp>(def))
    return cast.getSource();
  if (auto regroup = dyn_cast_or_null<RegroupOp>(def);
      regroup && counts == regroup.getRegroupedCounts())
    return regroup.getCounts();
  if (auto exchange = dyn_cast_or_null<AllToAllOp>(def);
      exchange && counts == exchange.getRecvCounts())
    return exchange.getSendCounts();
  if (auto wait = dyn_cast_or_null<AllToAllWaitOp>(def);
      wait && counts == wait.getRecvCounts() && wait.getStart())
    return wait.getStart().getSendCounts();
  if (auto chunk = dyn_cast_or_null<ChunkOp>(def);
      chunk && counts == chunk.getChunkCounts())
    return chunk.getCounts();
  return {};
}

/// The most rows one entry of an exchange's counts can stand for: the
/// capacity of the dispatch the entries come from, through reshapes,
/// regroups, earlier exchanges and chunks (which move entries or take a part
/// of them, never merge them);
/// none when they are not bounded so. Every rank runs the same program, so
/// a peer's entries have the same bound; and were one larger, the exchange
/// would fail on every rank with CAPACITY_EXCEEDED, never overrun a buffer.
///
/// Counts that a function takes as an argument are traced to what every
/// call passes there, when that is a value another function returns: a
/// backward's saved counts are its forward's, so its exchanges get the
/// forward's bound (and the gradients they deliver have as many rows as the
/// saved rows they meet).
static std::optional<int64_t> rowsPerCountsEntry(Value counts, int depth = 0);

/// The bound of counts a function takes as argument `argument`: the one
/// every call passes, each a result of a call whose callee returns it.
static std::optional<int64_t> rowsPerArgumentEntry(BlockArgument argument,
                                                   int depth) {
  auto function = dyn_cast<func::FuncOp>(argument.getOwner()->getParentOp());
  auto module = function ? function->getParentOfType<ModuleOp>() : ModuleOp();
  if (!function || !module || !argument.getOwner()->isEntryBlock() || depth > 4)
    return std::nullopt;
  std::optional<SymbolTable::UseRange> uses =
      SymbolTable::getSymbolUses(function, module);
  if (!uses)
    return std::nullopt;
  std::optional<int64_t> bound;
  for (const SymbolTable::SymbolUse &use : *uses) {
    auto call = dyn_cast<func::CallOp>(use.getUser());
    if (!call)
      return std::nullopt;
    auto passed = dyn_cast<OpResult>(call.getOperand(argument.getArgNumber()));
    auto producer =
        passed ? dyn_cast<func::CallOp>(passed.getOwner()) : func::CallOp();
    auto callee =
        producer ? module.lookupSymbol<func::FuncOp>(producer.getCalleeAttr())
                 : func::FuncOp();
    if (!callee || callee.isExternal() || !callee.getBody().hasOneBlock())
      return std::nullopt;
    auto ret = cast<func::ReturnOp>(callee.getBody().front().getTerminator());
    std::optional<int64_t> here =
        rowsPerCountsEntry(ret.getOperand(passed.getResultNumber()), depth + 1);
    if (!here || (bound && here != bound))
      return std::nullopt;
    bound = here;
  }
  return bound;
}

static std::optional<int64_t> rowsPerCountsEntry(Value counts, int depth) {
  // A chunk's part of an entry of n rows has at most ceil(n / chunks); parts
  // of parts, ceil(n / (the product)).
  int64_t parts = 1;
  auto partOf = [&](std::optional<int64_t> rows) -> std::optional<int64_t> {
    if (!rows || *rows < 0)
      return rows;
    return (*rows + parts - 1) / parts;
  };
  while (true) {
    if (auto argument = dyn_cast<BlockArgument>(counts))
      return partOf(rowsPerArgumentEntry(argument, depth));
    Operation *def = counts.getDefiningOp();
    if (auto dispatch = dyn_cast<DispatchOp>(def)) {
      if (counts != dispatch.getExpertCounts())
        return std::nullopt;
      return partOf(dispatch.getCapacityFor(
          dispatch.getTokens().getType().getDimSize(0)));
    }
    if (auto chunk = dyn_cast<ChunkOp>(def);
        chunk && counts == chunk.getChunkCounts() &&
        __builtin_mul_overflow(parts, int64_t(chunk.getChunks()), &parts))
      return std::nullopt;
    counts = countsBefore(counts);
    if (!counts)
      return std::nullopt;
  }
}

/// The group of an exchange, blocking (tamoe.all_to_all) or started
/// (tamoe.all_to_all_start).
static FailureOr<Collective> exchangeGroup(Operation *op,
                                           SymbolTableCollection &symbols) {
  return isa<AllToAllOp>(op) ? runtimeGroup(cast<AllToAllOp>(op), symbols)
                             : runtimeGroup(cast<AllToAllStartOp>(op), symbols);
}

/// The counts an exchange expects to receive, when the program names them
/// (`expecting`); null otherwise.
static Value exchangeExpectedCounts(Operation *op) {
  return isa<AllToAllOp>(op) ? cast<AllToAllOp>(op).getExpectedCounts()
                             : cast<AllToAllStartOp>(op).getExpectedCounts();
}

/// The rows an exchange receives (a started one's, at its wait).
static RankedTensorType exchangeReceivedType(Operation *op) {
  return isa<AllToAllOp>(op)
             ? cast<AllToAllOp>(op).getReceived().getType()
             : cast<AllToAllStartOp>(op).getWait().getReceived().getType();
}

/// A slot in the entry block of `op`'s function (so that an op in a loop
/// does not grow the stack) for values the runtime writes back: one, or
/// `shape` of them.
static Value entrySlot(Lowering &l, Operation *op, Type type,
                       ArrayRef<int64_t> shape = {}) {
  OpBuilder::InsertionGuard guard(l.b);
  if (auto function = op->getParentOfType<func::FuncOp>())
    l.b.setInsertionPointToStart(&function.front());
  return memref::AllocaOp::create(l.b, l.loc, MemRefType::get(shape, type));
}

namespace {
/// The steps of one tamoe_rt_all_to_all_totals call: how each counts value
/// between `root` and the exchanges it sizes follows from the root, five
/// words a step (tamoe_rt_counts_step_t), a step made once however many
/// exchanges it leads to.
struct CountsSteps {
  Value root;
  SmallVector<int64_t> words;
  /// Each traced counts value's source index: 0 the root, i + 1 step i's.
  DenseMap<Value, int64_t> sources;
  /// The grids of the exchange steps, each with whether an exchange on it
  /// splits it at nodes; and the groups of the exchange steps.
  llvm::MapVector<Operation *, bool> grids;
  llvm::SetVector<tamoe_rt_group_t> groups;
  /// An exchange on the way has no group the runtime knows (its error was
  /// emitted).
  bool invalid = false;
  /// The ops on the ways to the exchanges (the round comes before the
  /// first of them; some may be listed twice, or lie on a way that failed).
  SmallVector<Operation *> ops;

  int64_t add(tamoe_rt_counts_step_t kind, int64_t source, int64_t x, int64_t y,
              int64_t z) {
    std::array<int64_t, 5> step = {int64_t(kind), source, x, y, z};
    for (size_t i = 0; i < words.size(); i += 5)
      if (std::equal(step.begin(), step.end(), words.begin() + i))
        return int64_t(i / 5) + 1;
    words.append(step.begin(), step.end());
    return int64_t(words.size() / 5);
  }

  /// The source index of `counts`, adding the steps that lead to it; a
  /// failure when the way leaves counts of static shape or ops that only
  /// move entries (a step added before that stays, unused).
  FailureOr<int64_t> source(Value counts, SymbolTableCollection &symbols) {
    if (counts == root)
      return 0;
    if (auto found = sources.find(counts); found != sources.end())
      return found->second;
    auto type = dyn_cast<RankedTensorType>(counts.getType());
    Value before = countsBefore(counts);
    if (!type || !type.hasStaticShape() || !before)
      return failure();
    Operation *def = counts.getDefiningOp();
    ops.push_back(def);
    FailureOr<int64_t> index = failure();
    if (auto regroup = dyn_cast<RegroupOp>(def)) {
      RankedTensorType from = regroup.getCounts().getType();
      if (FailureOr<int64_t> in = source(before, symbols); succeeded(in))
        index = add(TAMOE_RT_COUNTS_REGROUP, *in, from.getDimSize(0),
                    from.getDimSize(1), product(from, 2));
    } else if (auto chunk = dyn_cast<ChunkOp>(def)) {
      if (FailureOr<int64_t> in = source(before, symbols); succeeded(in))
        index = add(TAMOE_RT_COUNTS_CHUNK, *in, int64_t(chunk.getChunk()),
                    int64_t(chunk.getChunks()), 0);
    } else if (auto exchange = dyn_cast<AllToAllOp>(def)) {
      index = exchangeStep(exchange, symbols);
    } else if (auto wait = dyn_cast<AllToAllWaitOp>(def)) {
      index = exchangeStep(wait.getStart(), symbols);
    } else {
      // Reshapes and casts move no entry.
      index = source(before, symbols);
    }
    if (succeeded(index))
      sources[counts] = *index;
    return index;
  }

  /// The step of the exchange `op` (tamoe.all_to_all or a start): the
  /// counts it receives.
  FailureOr<int64_t> exchangeStep(Operation *op,
                                  SymbolTableCollection &symbols) {
    auto sendCounts = cast<TypedValue<RankedTensorType>>(op->getOperand(1));
    FailureOr<int64_t> in = source(sendCounts, symbols);
    FailureOr<Collective> collective = exchangeGroup(op, symbols);
    invalid |= failed(collective);
    if (failed(in) || failed(collective))
      return failure();
    grids[collective->grid] |= collective->group != TAMOE_RT_GROUP_WORLD;
    groups.insert(collective->group);
    ops.push_back(op);
    return add(TAMOE_RT_COUNTS_EXCHANGE, *in, int64_t(collective->group),
               sendCounts.getType().getDimSize(0), 0);
  }
};
} // namespace

/// The exchanges whose receive buffers are sized on the host and whose
/// send counts follow from one counts tensor (the parts of a cut layer,
/// a hierarchical schedule's stages, the way back) share one round: every
/// rank's counts gathered once and followed on the host
/// (tamoe_rt_all_to_all_totals), placed where the counts exist. Without it
/// each exchange waits for a counts round of its own, every rank in step.
/// An exchange alone on its counts keeps a round of its own
/// (tamoe_rt_all_to_all_counts moves its entries, not the world's).
LogicalResult
ConvertToRuntimePass::planExchangeTotals(ArrayRef<Operation *> ops,
                                         SymbolTableCollection &symbols) {
  // Per root and block (exchanges elsewhere, say in a branch, get a round
  // of their own, placed where it runs whenever they do).
  llvm::MapVector<std::pair<Value, Block *>, SmallVector<Operation *>> users;
  for (Operation *op : ops) {
    if (!isa<AllToAllOp, AllToAllStartOp>(op) ||
        exchangeReceivedType(op).hasStaticShape() || exchangeExpectedCounts(op))
      continue;
    // static-capacity sizes it (prepareExchange), no counts round at all.
    if (auto entry = rowsPerEntry.find(op);
        entry != rowsPerEntry.end() && entry->second >= 0)
      continue;
    // The counts they follow from: back through the ops that only move
    // entries or take parts of them, as far as they go.
    Value root = op->getOperand(1);
    while (Value before = countsBefore(root))
      root = before;
    auto rootType = dyn_cast<RankedTensorType>(root.getType());
    if (!rootType || !rootType.hasStaticShape() ||
        !rootType.getElementType().isInteger(32) ||
        rootType.getNumElements() < 1)
      continue;
    users[{root, op->getBlock()}].push_back(op);
  }
  for (auto &[key, exchanges] : users) {
    auto [root, block] = key;
    CountsSteps steps;
    steps.root = root;
    DenseMap<Operation *, int64_t> stepOf;
    for (Operation *op : exchanges) {
      FailureOr<int64_t> step = steps.exchangeStep(op, symbols);
      if (steps.invalid)
        return failure();
      if (succeeded(step))
        stepOf[op] = *step - 1;
    }
    if (stepOf.size() < 2)
      continue;
    // Before the first op of the block that the steps stand for (or that
    // holds one), where the counts exist and whenever the exchanges run.
    Operation *at = nullptr;
    for (Operation *op : steps.ops)
      if (Operation *ancestor = block->findAncestorOpInBlock(*op);
          ancestor && (!at || ancestor->isBeforeInBlock(at)))
        at = ancestor;
    Lowering l = lowering(at);
    for (auto [grid, nodes] : steps.grids)
      checkGrid(l, cast<shard::GridOp>(grid), nodes);
    // Over the one group every exchange on the way is over (a node's
    // exchanges in a branch that only that node takes must not wait for
    // the rest of the world), else over the world.
    tamoe_rt_group_t group =
        steps.groups.size() == 1 ? steps.groups.front() : TAMOE_RT_GROUP_WORLD;
    int64_t numSteps = int64_t(steps.words.size() / 5);
    auto wordsType = RankedTensorType::get({numSteps, 5}, l.b.getI64Type());
    Value words = arith::ConstantOp::create(
        l.b, l.loc, DenseElementsAttr::get(wordsType, ArrayRef(steps.words)));
    Value totals = entrySlot(l, at, l.b.getIndexType(), {numSteps});
    auto rootValue = cast<TypedValue<RankedTensorType>>(root);
    l.runtime("all_to_all_totals",
              {l.i32(int32_t(group)), l.data(rootValue),
               l.index(rootValue.getType().getNumElements()),
               l.pointer(l.input(words)), l.index(numSteps),
               l.pointer(totals)});
    for (auto [op, step] : stepOf)
      exchangeTotals[op] = {totals, step};
  }
  return success();
}

FailureOr<ConvertToRuntimePass::Exchange>
ConvertToRuntimePass::prepareExchange(Lowering &l, Operation *op,
                                      SymbolTableCollection &symbols) {
  auto send = cast<TypedValue<RankedTensorType>>(op->getOperand(0));
  auto sendCountsTensor = cast<TypedValue<RankedTensorType>>(op->getOperand(1));
  if (failed(checkElements(op, {}, {}, {sendCountsTensor})))
    return failure();
  FailureOr<Collective> collective = exchangeGroup(op, symbols);
  if (failed(collective))
    return failure();
  tamoe_rt_group_t group = collective->group;
  RankedTensorType countsType = sendCountsTensor.getType();
  int64_t peers = countsType.getDimSize(0);
  int64_t split = product(countsType, 1);
  checkGrid(l, collective->grid, /*nodes=*/group != TAMOE_RT_GROUP_WORLD);
  Value sendCounts = l.data(sendCountsTensor);
  Value recvCounts = l.output(countsType);
  RankedTensorType receivedType = exchangeReceivedType(op);
  std::optional<int64_t> perEntry;
  if (auto found = rowsPerEntry.find(op); found != rowsPerEntry.end())
    perEntry = found->second;
  Value received;
  if (receivedType.hasStaticShape()) {
    // The buffer's size is known: the exchange sends the counts once, and
    // fails on every rank if more rows would arrive than it holds.
    received = l.output(receivedType);
  } else if (int64_t rows; perEntry && *perEntry >= 0 &&
                           !__builtin_mul_overflow(countsType.getNumElements(),
                                                   *perEntry, &rows)) {
    // static-capacity: as many rows as the counts' entries can stand for.
    received = l.output(receivedType, l.index(rows));
  } else if (auto expected = dyn_cast_or_null<TypedValue<RankedTensorType>>(
                 exchangeExpectedCounts(op))) {
    // It receives what the program knows it will (the exchange back of an
    // earlier one): their sum on this rank, no round with the peers.
    Value total = entrySlot(l, op, l.b.getIndexType());
    l.runtime("counts_total",
              {l.data(expected), l.index(expected.getType().getNumElements()),
               l.pointer(total)});
    received =
        l.output(receivedType, memref::LoadOp::create(l.b, l.loc, total));
  } else if (auto traced = exchangeTotals.find(op);
             traced != exchangeTotals.end()) {
    // Its total from the one round of the counts it follows from.
    received = l.output(
        receivedType,
        memref::LoadOp::create(l.b, l.loc, traced->second.totals,
                               ValueRange{l.index(traced->second.step)}));
  } else {
    // Size the receive buffer by what the peers will send (the counts
    // first, their total read on the host).
    Value total = entrySlot(l, op, l.b.getIndexType());
    l.runtime("all_to_all_counts",
              {l.i32(int32_t(group)), sendCounts, l.index(peers),
               l.index(split), l.pointer(recvCounts), l.pointer(total)});
    received =
        l.output(receivedType, memref::LoadOp::create(l.b, l.loc, total));
  }
  Value sendData = l.data(send);
  Exchange exchange{send, recvCounts, received, {}};
  exchange.arguments = {l.i32(int32_t(group)), sendData, l.dim(send, 0),
                        l.rowBytes(send.getType()), sendCounts,
                        l.index(peers), l.index(split), l.pointer(received),
                        l.dim(received, 0), l.pointer(recvCounts)};
  return exchange;
}

LogicalResult ConvertToRuntimePass::lower(AllToAllOp op,
                                          SymbolTableCollection &symbols) {
  Lowering l = lowering(op);
  FailureOr<Exchange> exchange = prepareExchange(l, op, symbols);
  if (failed(exchange))
    return failure();
  l.runtime("all_to_all", exchange->arguments);
  l.replace(op, {exchange->received, exchange->recvCounts});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(AllToAllStartOp op,
                                          SymbolTableCollection &symbols) {
  Lowering l = lowering(op);
  FailureOr<Exchange> exchange = prepareExchange(l, op, symbols);
  if (failed(exchange))
    return failure();
  // The runtime's handle for the exchange in flight, read back at the wait.
  Value handle = entrySlot(l, op, l.b.getI64Type());
  SmallVector<Value> arguments(exchange->arguments);
  arguments.push_back(l.pointer(handle));
  l.runtime("all_to_all_start", arguments);
  exchange->handle = handle;
  started[op] = *exchange;
  return success();
}

LogicalResult ConvertToRuntimePass::lower(AllToAllWaitOp op) {
  AllToAllStartOp start = op.getStart();
  auto found = started.find(start);
  if (found == started.end())
    return op.emitOpError() << "cannot be lowered before its start";
  Exchange exchange = found->second;
  started.erase(found);
  Lowering l = lowering(op);
  Value handle = LLVM::IntToPtrOp::create(
      l.b, l.loc, LLVM::LLVMPointerType::get(l.b.getContext()),
      memref::LoadOp::create(l.b, l.loc, exchange.handle).getResult());
  // Reading `send` here as well keeps its buffer alive and unchanged until
  // the rows have left: bufferization sees a read at the wait.
  l.runtime("all_to_all_wait", {handle, l.data(exchange.send)});
  l.replace(op, {exchange.received, exchange.recvCounts});
  start.erase();
  return success();
}

LogicalResult ConvertToRuntimePass::lower(ChunkOp op) {
  if (failed(checkElements(op, {}, {}, {op.getCounts()})))
    return failure();
  Lowering l = lowering(op);
  Value rows = op.getRows();
  // A part holds at most all the rows.
  Value part = l.output(op.getChunkRows().getType(), l.dim(rows, 0));
  Value partCounts = l.output(op.getChunkCounts().getType());
  l.runtime("chunk",
            {l.data(rows), l.dim(rows, 0), l.rowBytes(op.getRows().getType()),
             l.data(op.getCounts()),
             l.index(op.getCounts().getType().getNumElements()),
             l.index(op.getChunk()), l.index(op.getChunks()),
             l.pointer(part), l.dim(part, 0), l.pointer(partCounts)});
  l.replace(op, {part, partCounts});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(UnchunkOp op) {
  if (failed(checkElements(op, {}, {}, {op.getCounts()})))
    return failure();
  Lowering l = lowering(op);
  // The parts' rows add up to the whole's.
  Value capacity;
  for (Value part : op.getParts()) {
    Value rows = l.dim(part, 0);
    capacity = capacity ? arith::AddIOp::create(l.b, l.loc, capacity, rows)
                              .getResult()
                        : rows;
  }
  Value whole = l.output(op.getRows().getType(), capacity);
  Value counts = l.data(op.getCounts());
  Value numCounts = l.index(op.getCounts().getType().getNumElements());
  Value rowBytes = l.rowBytes(op.getRows().getType());
  int64_t chunks = op.getParts().size();
  for (auto [chunk, part] : llvm::enumerate(op.getParts()))
    l.runtime("unchunk", {l.data(part), l.dim(part, 0), rowBytes, counts,
                          numCounts, l.index(chunk), l.index(chunks),
                          l.pointer(whole), l.dim(whole, 0)});
  l.replace(op, {whole});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(RegroupOp op) {
  if (failed(checkElements(op, {}, {}, {op.getCounts()})))
    return failure();
  RankedTensorType countsType = op.getCounts().getType();
  Lowering l = lowering(op);
  Value rows = op.getRows();
  Value regrouped = l.output(op.getRegrouped().getType(), l.dim(rows, 0));
  Value regroupedCounts = l.output(op.getRegroupedCounts().getType());
  // The runtime takes one capacity for both buffers: the smaller, so that a
  // result of fewer static rows than the input refuses rows that do not fit
  // rather than be overrun.
  l.runtime("regroup",
            {l.data(rows), l.minDim({rows, regrouped}),
             l.rowBytes(op.getRows().getType()), l.data(op.getCounts()),
             l.index(countsType.getDimSize(0)),
             l.index(countsType.getDimSize(1)), l.index(product(countsType, 2)),
             l.pointer(regrouped), l.pointer(regroupedCounts)});
  l.replace(op, {regrouped, regroupedCounts});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(ChunkPositionsOp op) {
  if (failed(checkElements(op, {}, {},
                           {op.getPositions(), op.getExpertIds(),
                            op.getExpertCounts(), op.getChunkPositions()})))
    return failure();
  Lowering l = lowering(op);
  Value positions = op.getPositions();
  // The ids are read for the positions' rows.
  l.requireSameRows(op, {"positions", positions},
                    {{"expert_ids", op.getExpertIds()}});
  Value partPositions = l.output(op.getChunkPositions().getType(),
                                 {{positions, 0}, {positions, 1}});
  l.runtime("chunk_positions",
            {l.data(positions), l.data(op.getExpertIds()), l.dim(positions, 0),
             l.dim(positions, 1), l.data(op.getExpertCounts()),
             l.dim(op.getExpertCounts(), 0), l.index(op.getChunk()),
             l.index(op.getChunks()), l.pointer(partPositions)});
  l.replace(op, {partPositions});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(DedupPackOp op) {
  if (failed(checkElements(op, {}, {},
                           {op.getExpertIds(), op.getPositions(),
                            op.getRoutes(), op.getNodeCounts()})))
    return failure();
  RankedTensorType nodeCountsType = op.getNodeCounts().getType();
  Lowering l = lowering(op);
  Value tokens = op.getTokens();
  Value ids = op.getExpertIds();
  // The ids and positions are read for the tokens' rows.
  l.requireSameRows(op, {"tokens", tokens},
                    {{"expert_ids", ids}, {"positions", op.getPositions()}});
  Value numTokens = l.dim(tokens, 0);
  Value k = l.dim(ids, 1);
  int64_t nodes = nodeCountsType.getDimSize(0);
  // Dynamic only with a dynamic token count: S * min(k, nodes) rows.
  Value capacity =
      arith::MulIOp::create(
          l.b, l.loc, numTokens,
          arith::MinSIOp::create(l.b, l.loc, k, l.index(nodes)))
          .getResult();
  Value unique = l.output(op.getUnique().getType(), capacity);
  Value routes = l.output(op.getRoutes().getType(), capacity);
  Value nodeCounts = l.output(nodeCountsType);
  // Both buffers hold the unique rows, up to one capacity: the smaller (a
  // static routes type may have fewer rows than unique's).
  Value uniqueCapacity = l.minDim({unique, routes});
  l.runtime("dedup_pack",
            {l.data(tokens), numTokens, l.rowBytes(op.getTokens().getType()),
             l.data(ids), l.data(op.getPositions()), k,
             l.index(op.getExpertsPerNode()), l.index(nodes), l.pointer(unique),
             l.pointer(routes), uniqueCapacity, l.pointer(nodeCounts)});
  l.replace(op, {unique, routes, nodeCounts});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(DedupExpandOp op) {
  if (failed(checkElements(
          op, {}, {},
          {op.getRoutes(), op.getCounts(), op.getExpandedCounts()})))
    return failure();
  RankedTensorType countsType = op.getExpandedCounts().getType();
  Lowering l = lowering(op);
  Value unique = op.getUnique();
  Value routes = op.getRoutes();
  Value k = l.dim(routes, 1);
  // Each unique row expands to at most k rows.
  Value capacity =
      arith::MulIOp::create(l.b, l.loc, l.dim(unique, 0), k).getResult();
  Value expanded = l.output(op.getExpanded().getType(), capacity);
  Value expandedCounts = l.output(countsType);
  // The unique rows and their routes are read up to one capacity: the
  // smaller of the two buffers'.
  l.runtime("dedup_expand",
            {l.data(unique), l.data(routes), l.minDim({unique, routes}),
             l.rowBytes(op.getUnique().getType()), k, l.data(op.getCounts()),
             l.index(countsType.getDimSize(1)),
             l.index(countsType.getDimSize(0)), l.index(op.getExpertsPerRank()),
             l.pointer(expanded), l.dim(expanded, 0),
             l.pointer(expandedCounts)});
  l.replace(op, {expanded, expandedCounts});
  return success();
}

/// tamoe_rt_grouped_matmul and its gradient read one matrix of `weights`
/// per expert of `counts` (its last dimension): a dynamic number of
/// matrices must be that many.
static void requireExperts(Lowering &l, Operation *op, Value weights,
                           RankedTensorType counts) {
  l.requireSame(op, "experts", "weights", l.dim(weights, 0), "counts",
                l.index(counts.getShape().back()));
}

LogicalResult ConvertToRuntimePass::lower(GroupedMatmulOp op) {
  if (failed(checkElements(op, {op.getRows(), op.getWeights()}, {},
                           {op.getCounts()})))
    return failure();
  RankedTensorType countsType = op.getCounts().getType();
  Lowering l = lowering(op);
  Value rows = op.getRows();
  Value weights = op.getWeights();
  requireExperts(l, op, weights, countsType);
  Value result = l.output(op.getResult().getType(), l.dim(rows, 0));
  l.runtime("grouped_matmul",
            {l.dtype(rows), l.data(rows), l.dim(rows, 0), l.dim(rows, 1),
             l.data(op.getCounts()), l.index(countsType.getNumElements()),
             l.index(countsType.getShape().back()), l.data(weights),
             l.dim(weights, 2), l.pointer(result)});
  l.replace(op, {result});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(CombineOp op) {
  SmallVector<Value> floats;
  if (op.getWeights())
    floats.push_back(op.getWeights());
  if (failed(checkElements(op, {op.getExpertOutputs()}, floats,
                           {op.getPositions()})))
    return failure();
  Lowering l = lowering(op);
  Value outputs = op.getExpertOutputs();
  Value positions = op.getPositions();
  // The weights are read for the positions' rows.
  l.requireSameRows(op, {"positions", positions},
                    {{"weights", op.getWeights()}});
  Value tokens = l.dim(positions, 0);
  Value combined = l.output(op.getCombined().getType(), tokens);
  l.runtime("combine", {l.dtype(outputs), l.data(outputs), l.dim(outputs, 0),
                        l.dim(outputs, 1), l.data(positions),
                        l.optionalData(op.getWeights()), tokens,
                        l.dim(positions, 1), l.pointer(combined)});
  l.replace(op, {combined});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(AuxLossOp op) {
  SmallVector<Value> floats{op.getProbs(), op.getLoss()};
  if (op.getExpertWeights())
    floats.push_back(op.getExpertWeights());
  SmallVector<Value> integers{op.getExpertIds()};
  if (op.getPositions())
    integers.push_back(op.getPositions());
  if (failed(checkElements(op, {}, floats, integers)))
    return failure();
  Lowering l = lowering(op);
  Value probs = op.getProbs();
  Value ids = op.getExpertIds();
  // The ids and positions are read for the probs' rows, the weights for
  // their experts.
  l.requireSameRows(op, {"probs", probs},
                    {{"expert_ids", ids}, {"positions", op.getPositions()}});
  Value loss = l.output(op.getLoss().getType());
  bool topology = op.getKind() == AuxLossKind::Topology;
  if (topology && op.getExpertWeights())
    l.requireSame(op, "experts", "expert_weights",
                  l.dim(op.getExpertWeights(), 0), "probs", l.dim(probs, 1));
  Value weights = topology && op.getExpertWeights()
                      ? l.data(op.getExpertWeights())
                      : l.null();
  Value positions =
      op.getPositions() ? l.data(op.getPositions()) : l.null();
  l.runtime("aux_loss", {l.data(probs), l.data(ids), positions,
                         l.dim(probs, 0), l.dim(probs, 1), l.dim(ids, 1),
                         weights, l.pointer(loss)});
  l.replace(op, {loss});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(GateGradOp op) {
  SmallVector<Value> floats{op.getProbs(), op.getDLogits()};
  for (Value gradient : {op.getDWeights(), op.getDProbs()})
    if (gradient)
      floats.push_back(gradient);
  if (failed(checkElements(op, {}, floats, {op.getExpertIds()})))
    return failure();
  Lowering l = lowering(op);
  Value probs = op.getProbs();
  // Every operand is read for the probs' rows; the ids only with d_weights.
  l.requireSameRows(
      op, {"probs", probs},
      {{"expert_ids", op.getDWeights() ? op.getExpertIds() : Value()},
       {"d_weights", op.getDWeights()},
       {"d_probs", op.getDProbs()}});
  Value tokens = l.dim(probs, 0);
  Value dLogits = l.output(op.getDLogits().getType(), tokens);
  l.runtime(
      "gate_grad",
      {l.data(probs), l.data(op.getExpertIds()), tokens, l.dim(probs, 1),
       l.dim(op.getExpertIds(), 1),
       l.i32(op.getScore() == ScoreFunction::Sigmoid ? TAMOE_RT_SCORE_SIGMOID
                                                     : TAMOE_RT_SCORE_SOFTMAX),
       l.i32(op.getRenormalize() ? 1 : 0), l.optionalData(op.getDWeights()),
       l.optionalData(op.getDProbs()), l.pointer(dLogits)});
  l.replace(op, {dLogits});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(CombineGradOp op) {
  SmallVector<Value> floats;
  if (op.getWeights())
    floats.push_back(op.getWeights());
  if (failed(checkElements(op, {op.getExpertOutputs(), op.getDCombined()},
                           floats, {op.getPositions()})))
    return failure();
  Lowering l = lowering(op);
  Value outputs = op.getExpertOutputs();
  Value positions = op.getPositions();
  // The weights and d_combined are read for the positions' rows.
  l.requireSameRows(
      op, {"positions", positions},
      {{"weights", op.getWeights()}, {"d_combined", op.getDCombined()}});
  Value dOutputs =
      l.output(op.getDExpertOutputs().getType(), l.dim(outputs, 0));
  Value dWeights = op.getDWeights()
                       ? l.outputIfUsed(op.getDWeights(), l.dim(positions, 0))
                       : Value();
  l.runtime("combine_grad",
            {l.dtype(outputs), l.data(outputs), l.dim(outputs, 0),
             l.dim(outputs, 1), l.data(positions),
             l.optionalData(op.getWeights()), l.dim(positions, 0),
             l.dim(positions, 1), l.data(op.getDCombined()),
             l.pointer(dOutputs), l.pointerOrNull(dWeights)});
  SmallVector<Value> buffers{dOutputs};
  if (op.getDWeights())
    buffers.push_back(dWeights);
  l.replace(op, buffers);
  return success();
}

LogicalResult ConvertToRuntimePass::lower(GroupedMatmulGradOp op) {
  if (failed(checkElements(op, {op.getRows(), op.getWeights(), op.getDResult()},
                           {}, {op.getCounts()})))
    return failure();
  RankedTensorType countsType = op.getCounts().getType();
  Lowering l = lowering(op);
  Value rows = op.getRows();
  Value weights = op.getWeights();
  Value dRows = l.outputIfUsed(op.getDRows(), l.dim(rows, 0));
  // d_weights has the experts of counts (requireExperts).
  Value dWeights =
      l.outputIfUsed(op.getDWeights(), l.index(countsType.getShape().back()));
  if (!dRows && !dWeights) {
    op.erase();
    return success();
  }
  // The weights are read only for d_rows.
  if (dRows)
    requireExperts(l, op, weights, countsType);
  // The rows both tensors hold. They are one size but where static-capacity
  // could not trace a backward's counts to its forward's (rowsPerCountsEntry):
  // then the forward's rows (saved) have the receive buffer's bound, while
  // the gradient that the exchange back delivers has only the rows sent.
  // Rows past the counts are unspecified either way.
  Value rowsCapacity = l.dim(rows, 0);
  if (op.getRows().getType().isDynamicDim(0) ||
      op.getDResult().getType().isDynamicDim(0))
    rowsCapacity = arith::MinUIOp::create(l.b, l.loc, rowsCapacity,
                                          l.dim(op.getDResult(), 0));
  l.runtime("grouped_matmul_grad",
            {l.dtype(rows), l.data(rows), rowsCapacity, l.dim(rows, 1),
             l.data(op.getCounts()), l.index(countsType.getNumElements()),
             l.index(countsType.getShape().back()), l.data(weights),
             l.dim(weights, 2), l.data(op.getDResult()), l.pointerOrNull(dRows),
             l.pointerOrNull(dWeights)});
  l.replace(op, {dRows, dWeights});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(AuxLossGradOp op) {
  SmallVector<Value> floats{op.getDLoss(), op.getDProbs()};
  if (op.getExpertWeights())
    floats.push_back(op.getExpertWeights());
  SmallVector<Value> integers{op.getExpertIds()};
  if (op.getPositions())
    integers.push_back(op.getPositions());
  if (failed(checkElements(op, {}, floats, integers)))
    return failure();
  Lowering l = lowering(op);
  Value ids = op.getExpertIds();
  // The positions are read for the ids' rows, the weights for the experts
  // of d_probs.
  l.requireSameRows(op, {"expert_ids", ids},
                    {{"positions", op.getPositions()}});
  if (Value weights = op.getExpertWeights())
    l.requireSame(op, "experts", "expert_weights", l.dim(weights, 0), "d_probs",
                  l.dim(op.getDProbs(), 1));
  Value tokens = l.dim(ids, 0);
  Value dProbs = l.output(op.getDProbs().getType(), tokens);
  l.runtime("aux_loss_grad",
            {l.data(ids), l.optionalData(op.getPositions()), tokens,
             l.dim(op.getDProbs(), 1), l.dim(ids, 1),
             l.optionalData(op.getExpertWeights()), l.data(op.getDLoss()),
             l.pointer(dProbs)});
  l.replace(op, {dProbs});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(DedupPackGradOp op) {
  if (failed(checkElements(op, {op.getDUnique(), op.getDTokens()}, {},
                           {op.getExpertIds(), op.getPositions()})))
    return failure();
  Lowering l = lowering(op);
  Value dUnique = op.getDUnique();
  Value ids = op.getExpertIds();
  // The positions are read for the ids' rows.
  l.requireSameRows(op, {"expert_ids", ids},
                    {{"positions", op.getPositions()}});
  Value tokens = l.dim(ids, 0);
  Value dTokens = l.output(op.getDTokens().getType(), tokens);
  l.runtime("dedup_pack_grad",
            {l.dtype(dUnique), l.data(dUnique), l.dim(dUnique, 0),
             l.dim(dUnique, 1), l.data(ids), l.data(op.getPositions()), tokens,
             l.dim(ids, 1), l.index(op.getExpertsPerNode()),
             l.index(op.getNodes()), l.pointer(dTokens)});
  l.replace(op, {dTokens});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(DedupExpandGradOp op) {
  if (failed(checkElements(op, {op.getDExpanded(), op.getDUnique()}, {},
                           {op.getRoutes(), op.getCounts()})))
    return failure();
  Lowering l = lowering(op);
  Value dExpanded = op.getDExpanded();
  Value routes = op.getRoutes();
  Value dUnique = l.output(op.getDUnique().getType(), l.dim(routes, 0));
  l.runtime("dedup_expand_grad",
            {l.dtype(dExpanded), l.data(dExpanded), l.dim(dExpanded, 0),
             l.dim(dExpanded, 1), l.data(routes), l.dim(routes, 0),
             l.dim(routes, 1), l.data(op.getCounts()),
             l.index(op.getCounts().getType().getDimSize(0)),
             l.index(op.getRanksPerNode()), l.index(op.getExpertsPerRank()),
             l.pointer(dUnique)});
  l.replace(op, {dUnique});
  return success();
}

/// The dimensions of a tensor, as Lowering::output takes a shape like it.
static SmallVector<std::pair<Value, int64_t>> dimsOf(Value tensor) {
  SmallVector<std::pair<Value, int64_t>> dims;
  for (int64_t dim = 0; dim < cast<ShapedType>(tensor.getType()).getRank();
       ++dim)
    dims.push_back({tensor, dim});
  return dims;
}

/// Elements of a tensor or memref (a product of its sizes, dynamic ones
/// included).
static Value numElements(Lowering &l, Value tensor) {
  auto type = cast<ShapedType>(tensor.getType());
  Value elements = l.index(1);
  for (int64_t dim = 0; dim < type.getRank(); ++dim)
    elements = arith::MulIOp::create(l.b, l.loc, elements, l.dim(tensor, dim));
  return elements;
}

LogicalResult ConvertToRuntimePass::lower(AllReduceOp op,
                                          SymbolTableCollection &symbols) {
  FailureOr<Collective> collective = runtimeGroup(op, symbols);
  if (failed(collective))
    return failure();
  Lowering l = lowering(op);
  checkGrid(l, collective->grid,
            /*nodes=*/collective->group != TAMOE_RT_GROUP_WORLD);
  Value input = op.getInput();
  Value buffer = l.inPlace(input);
  l.runtime("all_reduce", {l.i32(int32_t(collective->group)), l.pointer(buffer),
                           numElements(l, input),
                           l.i32(op.getAverage() ? 1 : 0)});
  l.replace(op, {buffer});
  return success();
}

/// tamoe_rt_sgd and tamoe_rt_adam take one element count for every
/// buffer, the parameters'. The operands' types match, but dynamic sizes
/// may still differ at run time: a step with dynamic sizes first checks
/// each operand's elements against the parameters'.
static void requireSameElements(Lowering &l, Operation *op,
                                Lowering::Named params,
                                ArrayRef<Lowering::Named> others) {
  if (cast<ShapedType>(params.second.getType()).hasStaticShape())
    return;
  Value want = numElements(l, params.second);
  for (auto [name, value] : others)
    if (value != params.second)
      l.requireSame(op, "elements", name, numElements(l, value), params.first,
                    want);
}

LogicalResult ConvertToRuntimePass::lower(SGDOp op) {
  Lowering l = lowering(op);
  requireSameElements(
      l, op, {"params", op.getParams()},
      {{"grads", op.getGrads()}, {"velocity", op.getVelocity()}});
  Value params = l.inPlace(op.getParams());
  Value velocity = l.inPlace(op.getVelocity());
  l.runtime("sgd",
            {l.pointer(params), l.data(op.getGrads()), l.pointer(velocity),
             numElements(l, op.getParams()), op.getLr(),
             arith::ConstantOp::create(l.b, l.loc, op.getMomentumAttr()),
             arith::ConstantOp::create(l.b, l.loc, op.getWeightDecayAttr())});
  l.replace(op, {params, velocity});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(AdamOp op) {
  Lowering l = lowering(op);
  requireSameElements(
      l, op, {"params", op.getParams()},
      {{"grads", op.getGrads()}, {"m", op.getM()}, {"v", op.getV()}});
  Value params = l.inPlace(op.getParams());
  Value m = l.inPlace(op.getM());
  Value v = l.inPlace(op.getV());
  auto constant = [&](FloatAttr value) -> Value {
    return arith::ConstantOp::create(l.b, l.loc, value);
  };
  l.runtime("adam",
            {l.pointer(params), l.data(op.getGrads()), l.pointer(m),
             l.pointer(v), numElements(l, op.getParams()), op.getStep(),
             op.getLr(), constant(op.getBeta1Attr()),
             constant(op.getBeta2Attr()), constant(op.getEpsAttr()),
             constant(op.getWeightDecayAttr())});
  l.replace(op, {params, m, v});
  return success();
}

/// A tensor of rows the runtime computes on: f32, bf16 or f16.
static bool isRowTensor(Value value) {
  auto type = dyn_cast<RankedTensorType>(value.getType());
  return type && runtimeDtype(type.getElementType());
}

/// A conversion between row element types (arith.extf or arith.truncf in a
/// linalg.generic of identity maps, as a host compiler writes a cast): its
/// input.
static Value matchConversion(linalg::GenericOp op) {
  if (!op.hasPureTensorSemantics() || op.getNumDpsInputs() != 1 ||
      op.getNumDpsInits() != 1 ||
      op.getNumLoops() != op.getNumParallelLoops() ||
      !llvm::all_of(op.getIndexingMapsArray(),
                    [](AffineMap map) { return map.isIdentity(); }))
    return Value();
  Block *body = op.getBlock();
  auto yield = cast<linalg::YieldOp>(body->getTerminator());
  Operation *cast = yield.getValues()[0].getDefiningOp();
  if (!cast || !isa<arith::ExtFOp, arith::TruncFOp>(cast) ||
      body->getOperations().size() != 2 ||
      cast->getOperand(0) != body->getArgument(0))
    return Value();
  // truncf's rounding mode or fast-math flags would ask for more than the
  // runtime's rounding to nearest even.
  if (auto trunc = dyn_cast<arith::TruncFOp>(cast);
      trunc && trunc.getRoundingmodeAttr())
    return Value();
  Value input = op.getDpsInputs()[0];
  if (!isRowTensor(input) || !isRowTensor(op->getResult(0)))
    return Value();
  return input;
}

/// Whether a matmul reads its operands transposed: (a, b), for the default
/// maps and for the two forms gradients take (one operand transposed).
static std::optional<std::pair<bool, bool>>
matmulTransposes(linalg::MatmulOp op) {
  if (!op.hasUserDefinedMaps())
    return std::make_pair(false, false);
  MLIRContext *context = op.getContext();
  AffineExpr m, n, k;
  bindDims(context, m, n, k);
  auto map = [&](AffineExpr row, AffineExpr col) {
    return AffineMap::get(3, 0, {row, col}, context);
  };
  SmallVector<AffineMap> maps = op.getIndexingMapsArray();
  if (maps.size() != 3 || maps[2] != map(m, n))
    return std::nullopt;
  if (maps[0] == map(k, m) && maps[1] == map(k, n))
    return std::make_pair(true, false);
  if (maps[0] == map(m, k) && maps[1] == map(n, k))
    return std::make_pair(false, true);
  if (maps[0] == map(m, k) && maps[1] == map(k, n))
    return std::make_pair(false, false);
  return std::nullopt;
}

LogicalResult ConvertToRuntimePass::lower(linalg::MatmulOp op) {
  std::optional<std::pair<bool, bool>> transposes = matmulTransposes(op);
  if (!transposes || !op.hasPureTensorSemantics() ||
      !llvm::all_of(op->getOperands(), isRowTensor))
    return op.emitOpError()
           << "cannot be lowered to the runtime: it takes a matmul of f32, "
              "bf16 or f16 tensors with the default indexing maps or one "
              "operand transposed";
  Value a = op.getDpsInputs()[0], b = op.getDpsInputs()[1];
  Value init = op.getDpsInits()[0];
  Lowering l = lowering(op);
  // A zero init (linalg.fill of 0.0) is what a plain product starts from;
  // -0.0 is not (-0.0 + -0.0 stays -0.0, as an empty sum does), so it is
  // accumulated into.
  Value initPointer = l.null();
  auto fill = init.getDefiningOp<linalg::FillOp>();
  if (!fill || !matchPattern(fill.getInputs()[0], m_PosZeroFloat()))
    initPointer = l.data(init);
  auto resultType = cast<RankedTensorType>(op->getResult(0).getType());
  auto [transposeA, transposeB] = *transposes;
  // op(a) is [m, k] and op(b) [k, n] whichever way they are stored.
  std::pair<Value, int64_t> m{a, transposeA ? 1 : 0};
  std::pair<Value, int64_t> k{a, transposeA ? 0 : 1};
  std::pair<Value, int64_t> n{b, transposeB ? 0 : 1};
  Value c = l.output(resultType, {m, n});
  l.runtime("matmul",
            {l.dtype(a), l.dtype(b), l.dtype(init), l.data(a), l.data(b),
             l.dim(m.first, m.second), l.dim(k.first, k.second),
             l.dim(n.first, n.second), l.i32(transposeA), l.i32(transposeB),
             initPointer, l.pointer(c)});
  l.replace(op, {c});
  return success();
}

LogicalResult ConvertToRuntimePass::lowerMap(Operation *op, tamoe_rt_map_t kind,
                                             Value a, Value b) {
  auto type = cast<RankedTensorType>(op->getResult(0).getType());
  if (b && (a.getType() != b.getType() || a.getType() != type))
    return op->emitOpError()
           << "cannot be lowered to the runtime: an elementwise op takes "
              "operands and a result of one type, got "
           << a.getType() << ", " << b.getType() << " -> " << type;
  Lowering l = lowering(op);
  Value out = l.output(type, dimsOf(a));
  l.runtime("map",
            {l.i32(int32_t(kind)), l.dtype(a), l.data(a),
             b ? l.data(b) : l.null(), numElements(l, out), l.pointer(out)});
  l.replace(op, {out});
  return success();
}

LogicalResult ConvertToRuntimePass::lowerConversion(linalg::GenericOp op,
                                                    Value input) {
  auto type = cast<RankedTensorType>(op->getResult(0).getType());
  Lowering l = lowering(op);
  Value out = l.output(type, dimsOf(input));
  l.runtime("convert", {l.dtype(input), l.data(input), l.dtype(out),
                        l.pointer(out), numElements(l, out)});
  l.replace(op, {out});
  return success();
}

/// A tensor of int32 counts, such as an exchange's.
static bool isCountsTensor(Value value) {
  auto type = dyn_cast<RankedTensorType>(value.getType());
  return type && type.getElementType().isSignlessInteger(32);
}

LogicalResult ConvertToRuntimePass::lowerAddCounts(linalg::AddOp op) {
  Value a = op.getDpsInputs()[0], b = op.getDpsInputs()[1];
  auto type = cast<RankedTensorType>(op->getResult(0).getType());
  if (a.getType() != type || b.getType() != type)
    return op->emitOpError()
           << "cannot be lowered to the runtime: a sum of counts takes "
              "operands and a result of one type, got "
           << a.getType() << ", " << b.getType() << " -> " << type;
  Lowering l = lowering(op);
  Value out = l.output(type, dimsOf(a));
  l.runtime("add_counts",
            {l.data(a), l.data(b), numElements(l, out), l.pointer(out)});
  l.replace(op, {out});
  return success();
}

/// Ops that may keep tensor types in a device-resident program: they move
/// or describe buffers, and compute nothing on the host.
static bool keepsTensorsOffTheHost(Operation *op) {
  if (isa<scf::SCFDialect>(op->getDialect()))
    return true;
  // The shape of a tensor.reshape (collapse_shape's gradient where a group
  // has two dynamic sizes): host scalars, which
  // tamoe-finalize-device-resident puts on the stack.
  if (auto shape = dyn_cast<tensor::FromElementsOp>(op))
    return shape.getType().getElementType().isIndex() &&
           llvm::all_of(shape->getUses(), [](OpOperand &use) {
             auto reshape = dyn_cast<tensor::ReshapeOp>(use.getOwner());
             return reshape && use.get() == reshape.getShape();
           });
  return isa<func::FuncOp, func::CallOp, func::ReturnOp, tensor::EmptyOp,
             tensor::DimOp, tensor::CastOp, tensor::ExpandShapeOp,
             tensor::CollapseShapeOp, tensor::ReshapeOp,
             bufferization::ToTensorOp, bufferization::ToBufferOp>(op);
}

LogicalResult ConvertToRuntimePass::lowerDenseCompute() {
  ModuleOp module = getOperation();
  SmallVector<Operation *> ops;
  module.walk([&](Operation *op) {
    if (isa<linalg::MatmulOp, linalg::GenericOp, linalg::AddOp, linalg::SubOp,
            linalg::MulOp, arith::AddFOp, arith::SubFOp, arith::MulFOp>(op))
      ops.push_back(op);
  });
  for (Operation *op : ops) {
    auto named = [&](auto op, tamoe_rt_map_t kind) -> LogicalResult {
      // Others are reported below (tensors) or by
      // tamoe-finalize-device-resident (buffers).
      if (!op.hasPureTensorSemantics() ||
          !llvm::all_of(op->getOperands(), isRowTensor))
        return success();
      return lowerMap(op, kind, op.getDpsInputs()[0], op.getDpsInputs()[1]);
    };
    auto arith = [&](Operation *op, tamoe_rt_map_t kind) -> LogicalResult {
      if (!isRowTensor(op->getResult(0)))
        return success(); // scalar arithmetic stays
      return lowerMap(op, kind, op->getOperand(0), op->getOperand(1));
    };
    LogicalResult lowered =
        TypeSwitch<Operation *, LogicalResult>(op)
            .Case([&](linalg::MatmulOp op) { return lower(op); })
            .Case([&](linalg::GenericOp op) -> LogicalResult {
              if (Value input = matchConversion(op))
                return lowerConversion(op, input);
              std::optional<Elementwise> map = matchElementwise(op);
              if (!map || !llvm::all_of(op->getOperands(), isRowTensor))
                return success(); // reported below
              return lowerMap(op, toMapKind(map->kind), map->a, map->b);
            })
            .Case([&](linalg::AddOp op) -> LogicalResult {
              // The counts a chunked layer's parts received, summed
              // (tamoe-overlap).
              if (op.hasPureTensorSemantics() &&
                  llvm::all_of(op->getOperands(), isCountsTensor))
                return lowerAddCounts(op);
              return named(op, TAMOE_RT_MAP_ADD);
            })
            .Case([&](linalg::SubOp op) { return named(op, TAMOE_RT_MAP_SUB); })
            .Case([&](linalg::MulOp op) { return named(op, TAMOE_RT_MAP_MUL); })
            .Case([&](arith::AddFOp op) { return arith(op, TAMOE_RT_MAP_ADD); })
            .Case([&](arith::SubFOp op) { return arith(op, TAMOE_RT_MAP_SUB); })
            .Case(
                [&](arith::MulFOp op) { return arith(op, TAMOE_RT_MAP_MUL); });
    if (failed(lowered))
      return failure();
  }
  // What fed only the lowered ops (zero fills, slices of constants) goes.
  module.walk<WalkOrder::PostOrder, ReverseIterator>([](Operation *op) {
    if (isOpTriviallyDead(op))
      op->erase();
  });
  WalkResult left = module.walk([&](Operation *op) {
    bool tensors = llvm::any_of(
        llvm::concat<const Type>(op->getOperandTypes(), op->getResultTypes()),
        [](Type type) { return isa<TensorType>(type); });
    if (!tensors || keepsTensorsOffTheHost(op) ||
        (isa<arith::ConstantOp>(op) &&
         llvm::all_of(op->getUsers(), [](Operation *user) {
           return isa<bufferization::ToBufferOp>(user);
         })))
      return WalkResult::advance();
    if (isa<arith::ConstantOp>(op)) {
      Operation *user = *llvm::find_if(op->getUsers(), [](Operation *user) {
        return !isa<bufferization::ToBufferOp>(user);
      });
      op->emitOpError()
          << "would run on the host: a dense constant becomes device memory "
             "(tamoe_rt_program_constant) where runtime calls read it, but '"
          << user->getName()
          << "' takes it as a tensor (a loop's initial value or a call's "
             "argument is copied on the host); compute it with a runtime "
             "op, or pass it in";
      return WalkResult::interrupt();
    }
    if (isa<BranchOpInterface>(op)) {
      op->emitOpError()
          << "passes tensors between blocks, which bufferization does not "
             "handle: write the branch or loop with scf.if, scf.for or "
             "scf.while, whose tensors stay in the backend's memory";
      return WalkResult::interrupt();
    }
    op->emitOpError()
        << "would run on the host: a device-resident program lowers only "
           "tamoe ops, linalg.matmul, elementwise add, sub, mul, neg, relu, "
           "silu and their gradients, and extf/truncf, on f32, bf16 or f16 "
           "tensors, and linalg.add of i32 counts to the runtime";
    return WalkResult::interrupt();
  });
  return failure(left.wasInterrupted());
}

Lowering ConvertToRuntimePass::lowering(Operation *op) {
  Lowering l(op, getOperation());
  auto function = op->getParentOfType<func::FuncOp>();
  if (!function) {
    l.context = l.programContext(!deviceResident);
    return l;
  }
  Value &context = contexts[function];
  if (!context) {
    OpBuilder::InsertionGuard guard(l.b);
    l.b.setInsertionPointToStart(&function.front());
    context = l.programContext(!deviceResident);
  }
  l.context = context;
  return l;
}

/// This rank's index on a grid: its rank in the runtime's world, which
/// numbers ranks node-major as the grid's row-major order does.
static Value worldRank(Lowering &l) {
  return l.call("tamoe_rt_program_rank", {}, l.b.getIndexType());
}

LogicalResult ConvertToRuntimePass::lower(shard::ProcessLinearIndexOp op,
                                          SymbolTableCollection &symbols) {
  // Only a rank query: no context needed.
  Lowering l(op, getOperation());
  if (shard::GridOp grid = shard::getGridOrNull(op, op.getGridAttr(), symbols))
    checkGrid(l, grid, /*nodes=*/false);
  op.getResult().replaceAllUsesWith(worldRank(l));
  op.erase();
  return success();
}

LogicalResult
ConvertToRuntimePass::lower(shard::ProcessMultiIndexOp op,
                            SymbolTableCollection &symbols) {
  shard::GridOp grid = shard::getGridOrNull(op, op.getGridAttr(), symbols);
  if (!grid || llvm::any_of(grid.getShape(), ShapedType::isDynamic))
    return op.emitOpError() << "cannot be lowered to the runtime: it needs a "
                               "grid of static shape";
  // Only a rank query: no context needed.
  Lowering l(op, getOperation());
  checkGrid(l, grid, /*nodes=*/false);
  SmallVector<OpFoldResult> basis;
  for (int64_t size : grid.getShape())
    basis.push_back(l.b.getIndexAttr(size));
  auto index = affine::AffineDelinearizeIndexOp::create(
      l.b, l.loc, worldRank(l), basis, /*hasOuterBound=*/true);
  ArrayRef<int16_t> axes = op.getAxes();
  for (auto [i, result] : llvm::enumerate(op.getResults()))
    result.replaceAllUsesWith(
        index.getResult(axes.empty() ? i : axes[i]));
  op.erase();
  return success();
}

/// A dimension index that is a constant outside [0, rank): undefined
/// behaviour that MLIR 22's own rewrites crash on (a negative index), so
/// the lowering refuses it first.
static LogicalResult checkDimIndices(ModuleOp module) {
  WalkResult walk = module.walk([](Operation *op) {
    Value source, index;
    if (auto dim = dyn_cast<tensor::DimOp>(op))
      source = dim.getSource(), index = dim.getIndex();
    else if (auto dim = dyn_cast<memref::DimOp>(op))
      source = dim.getSource(), index = dim.getIndex();
    else
      return WalkResult::advance();
    auto shaped = dyn_cast<ShapedType>(source.getType());
    APInt value;
    if (!shaped || !shaped.hasRank() ||
        !matchPattern(index, m_ConstantInt(&value)))
      return WalkResult::advance();
    int64_t at = value.getSExtValue();
    if (at >= 0 && at < shaped.getRank())
      return WalkResult::advance();
    op->emitOpError() << "cannot be lowered: its index " << at
                      << " is not a dimension of its rank-" << shaped.getRank()
                      << " operand";
    return WalkResult::interrupt();
  });
  return failure(walk.wasInterrupted());
}

void ConvertToRuntimePass::runOnOperation() {
  ModuleOp module = getOperation();
  if (!deviceResident)
    computeNarrowFloatsInF32(module);
  if (failed(checkDimIndices(module)))
    return signalPassFailure();
  SymbolTableCollection symbols;
  contexts.clear();
  SmallVector<Operation *> ops;
  module.walk([&](Operation *op) {
    if (isa<TAMoEDialect>(op->getDialect()) ||
        isa<shard::ProcessLinearIndexOp, shard::ProcessMultiIndexOp>(op))
      ops.push_back(op);
  });
  rowsPerEntry.clear();
  if (staticCapacity)
    for (Operation *op : ops)
      if (isa<AllToAllOp, AllToAllStartOp>(op))
        if (std::optional<int64_t> rows = rowsPerCountsEntry(op->getOperand(1)))
          rowsPerEntry[op] = *rows;
  exchangeTotals.clear();
  if (failed(planExchangeTotals(ops, symbols)))
    return signalPassFailure();
  started.clear();
  for (Operation *op : ops) {
    if (isa<TAMoEDialect>(op->getDialect()) && failed(checkShapes(op)))
      return signalPassFailure();
    LogicalResult lowered =
        TypeSwitch<Operation *, LogicalResult>(op)
            .Case<AllToAllOp, AllToAllStartOp>(
                [&](auto op) { return lower(op, symbols); })
            .Case<shard::ProcessMultiIndexOp, shard::ProcessLinearIndexOp,
                  AllReduceOp>([&](auto op) { return lower(op, symbols); })
            .Case<GateOp, DispatchOp, RegroupOp, ChunkOp, UnchunkOp,
                  ChunkPositionsOp, AllToAllWaitOp, DedupPackOp, DedupExpandOp,
                  GroupedMatmulOp, CombineOp, AuxLossOp, GateGradOp,
                  CombineGradOp, GroupedMatmulGradOp, AuxLossGradOp,
                  DedupPackGradOp, DedupExpandGradOp, SGDOp, AdamOp>(
                [&](auto op) { return lower(op); })
            .Case([](VJPOp op) {
              return op.emitOpError()
                     << "has no lowering to the runtime: run "
                        "tamoe-differentiate (or --tamoe-pipeline) first";
            })
            .Default([](Operation *op) {
              return op->emitOpError()
                     << "has no lowering to the runtime";
            });
    if (failed(lowered))
      return signalPassFailure();
  }
  if (deviceResident && failed(lowerDenseCompute()))
    return signalPassFailure();
  // With host loops, every function asks for its context on entry, so that
  // a backend they cannot run on is refused before anything is allocated.
  if (!deviceResident && !ops.empty())
    for (auto function : module.getOps<func::FuncOp>())
      if (!function.isExternal())
        (void)lowering(&function.front().front());
  // The grids only named the groups; the runtime knows them now.
  for (auto grid : llvm::make_early_inc_range(module.getOps<shard::GridOp>()))
    grid.erase();
  module->removeAttr("tamoe.topology");
}
