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

#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"

#include "llvm/ADT/TypeSwitch.h"

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOECONVERTTORUNTIMEPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;

namespace {
/// The groups of tamoe_rt_group_t.
enum class Group : int32_t { World = 0, Node = 1, Peers = 2 };

/// Emits the calls for one op, before it.
class Lowering {
public:
  Lowering(Operation *op, ModuleOp module)
      : b(op), loc(op->getLoc()), module(module) {
    ptrType = LLVM::LLVMPointerType::get(b.getContext());
    context = call("tamoe_rt_program_context", {}, ptrType);
  }

  OpBuilder b;
  Location loc;

  Value index(int64_t value) {
    return arith::ConstantIndexOp::create(b, loc, value);
  }
  Value i32(int64_t value) {
    return arith::ConstantIntOp::create(b, loc, value, 32);
  }
  Value null() { return LLVM::ZeroOp::create(b, loc, ptrType); }

  /// Size of dimension `dim` of a tensor or memref.
  Value dim(Value shaped, int64_t dim) {
    auto type = cast<ShapedType>(shaped.getType());
    if (!type.isDynamicDim(dim))
      return index(type.getDimSize(dim));
    if (isa<MemRefType>(type))
      return memref::DimOp::create(b, loc, shaped, dim);
    return tensor::DimOp::create(b, loc, shaped, dim);
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
  /// dimension (the only one a result may have).
  Value output(RankedTensorType type, Value rows = {}) {
    auto memref = MemRefType::get(type.getShape(), type.getElementType());
    SmallVector<Value> sizes;
    if (type.getRank() > 0 && type.isDynamicDim(0))
      sizes.push_back(rows);
    return memref::AllocOp::create(b, loc, memref, sizes);
  }

  /// Replaces `op`'s results, in order, by the tensors its result buffers
  /// hold once the runtime has filled them, and erases it.
  void replace(Operation *op, ArrayRef<Value> buffers) {
    for (auto [result, buffer] : llvm::zip_equal(op->getResults(), buffers))
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
  Value context;
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
  LogicalResult lower(RegroupOp op);
  LogicalResult lower(DedupPackOp op);
  LogicalResult lower(DedupExpandOp op);
  LogicalResult lower(GroupedMatmulOp op);
  LogicalResult lower(CombineOp op);
  LogicalResult lower(AuxLossOp op);
  LogicalResult lower(shard::ProcessLinearIndexOp op);
  LogicalResult lower(shard::ProcessMultiIndexOp op,
                      SymbolTableCollection &symbols);
};
} // namespace

/// The runtime computes in f32 and takes ids, positions and counts as i32.
static LogicalResult checkElements(Operation *op, ArrayRef<Value> floats,
                                   ArrayRef<Value> integers) {
  for (Value value : floats)
    if (!getElementTypeOrSelf(value.getType()).isF32())
      return op->emitOpError()
             << "cannot be lowered to the runtime: it computes in f32, got "
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
  if (failed(checkElements(op, {op.getLogits(), op.getWeights()},
                           {op.getExpertIds()})))
    return failure();
  Lowering l(op, getOperation());
  Value logits = l.input(op.getLogits());
  Value tokens = l.dim(logits, 0);
  Value ids = l.output(op.getExpertIds().getType(), tokens);
  Value weights = l.output(op.getWeights().getType(), tokens);
  Value probs = l.output(op.getProbs().getType(), tokens);
  l.runtime("gate",
            {l.pointer(logits), tokens, l.dim(logits, 1),
             l.index(op.getK()),
             l.i32(op.getScore() == ScoreFunction::Sigmoid ? 1 : 0),
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
          op, floats,
          {op.getExpertIds(), op.getExpertCounts(), op.getPositions()})))
    return failure();
  RankedTensorType tokensType = op.getTokens().getType();
  if (ShapedType::isDynamic(tokensType.getDimSize(0)) &&
      op.getCapacityFactor())
    return op.emitOpError() << "cannot be lowered to the runtime: a "
                               "capacity_factor needs a static token count";
  std::optional<int64_t> capacity =
      op.getCapacityFor(tokensType.getDimSize(0));
  Lowering l(op, getOperation());
  Value tokens = l.input(op.getTokens());
  Value ids = l.input(op.getExpertIds());
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
  Value weights = op.getWeights() ? l.pointer(l.input(op.getWeights()))
                                  : l.null();
  bool byProbability =
      op.getDropPolicy().value_or(DropPolicy::Position) ==
      DropPolicy::Probability;
  l.runtime("dispatch",
            {l.pointer(tokens), numTokens, l.rowBytes(tokensType),
             l.pointer(ids), l.dim(ids, 1),
             l.index(op.getExpertCounts().getType().getDimSize(0)), weights,
             l.index(capacity.value_or(-1)), l.i32(byProbability ? 1 : 0),
             l.pointer(dispatched), l.dim(dispatched, 0), l.pointer(counts),
             l.pointer(positions), l.pointer(dropped)});
  l.replace(op, {dispatched, counts, positions, dropped});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(AllToAllOp op,
                                          SymbolTableCollection &symbols) {
  if (failed(checkElements(op, {}, {op.getSendCounts()})))
    return failure();
  shard::GridOp grid = shard::getGridOrNull(op, op.getGridAttr(), symbols);
  if (!grid)
    return op.emitOpError() << "'@" << op.getGrid()
                            << "' does not name a shard.grid";
  // The runtime's groups: the whole grid, its last axis (the ranks of a
  // node) and the other axes (same-index ranks of every node).
  int64_t rank = grid.getRank();
  SmallVector<int16_t> axes = op.getGroupAxes(rank);
  Group group;
  if (llvm::equal(axes, llvm::seq<int16_t>(0, rank)))
    group = Group::World;
  else if (rank >= 2 && axes == SmallVector<int16_t>{int16_t(rank - 1)})
    group = Group::Node;
  else if (rank >= 2 && llvm::equal(axes, llvm::seq<int16_t>(0, rank - 1)))
    group = Group::Peers;
  else
    return op.emitOpError()
           << "cannot be lowered to the runtime: its groups are the whole "
              "grid, its last axis (a node) or the axes before it";
  RankedTensorType countsType = op.getSendCounts().getType();
  int64_t peers = countsType.getDimSize(0);
  int64_t split = product(countsType, 1);
  Lowering l(op, getOperation());
  Value send = l.input(op.getSend());
  Value sendCounts = l.input(op.getSendCounts());
  Value recvCounts = l.output(countsType);
  // Size the receive buffer by what the peers will send; the slot for the
  // total lives in the function's entry block, so that an exchange in a
  // loop does not grow the stack.
  Value total;
  {
    OpBuilder::InsertionGuard guard(l.b);
    if (auto function = op->getParentOfType<func::FuncOp>())
      l.b.setInsertionPointToStart(&function.front());
    total = memref::AllocaOp::create(l.b, l.loc,
                                     MemRefType::get({}, l.b.getIndexType()));
  }
  l.runtime("all_to_all_counts",
            {l.i32(int32_t(group)), l.pointer(sendCounts), l.index(peers),
             l.index(split), l.pointer(recvCounts), l.pointer(total)});
  RankedTensorType receivedType = op.getReceived().getType();
  Value received =
      l.output(receivedType, memref::LoadOp::create(l.b, l.loc, total));
  l.runtime("all_to_all",
            {l.i32(int32_t(group)), l.pointer(send), l.dim(send, 0),
             l.rowBytes(op.getSend().getType()), l.pointer(sendCounts),
             l.index(peers), l.index(split), l.pointer(received),
             l.dim(received, 0), l.pointer(recvCounts)});
  l.replace(op, {received, recvCounts});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(RegroupOp op) {
  if (failed(checkElements(op, {}, {op.getCounts()})))
    return failure();
  RankedTensorType countsType = op.getCounts().getType();
  Lowering l(op, getOperation());
  Value rows = l.input(op.getRows());
  Value counts = l.input(op.getCounts());
  Value regrouped = l.output(op.getRegrouped().getType(), l.dim(rows, 0));
  Value regroupedCounts = l.output(op.getRegroupedCounts().getType());
  l.runtime("regroup", {l.pointer(rows), l.dim(rows, 0),
                        l.rowBytes(op.getRows().getType()), l.pointer(counts),
                        l.index(countsType.getDimSize(0)),
                        l.index(countsType.getDimSize(1)),
                        l.index(product(countsType, 2)),
                        l.pointer(regrouped), l.pointer(regroupedCounts)});
  l.replace(op, {regrouped, regroupedCounts});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(DedupPackOp op) {
  if (failed(checkElements(op, {},
                           {op.getExpertIds(), op.getPositions(),
                            op.getRoutes(), op.getNodeCounts()})))
    return failure();
  RankedTensorType nodeCountsType = op.getNodeCounts().getType();
  Lowering l(op, getOperation());
  Value tokens = l.input(op.getTokens());
  Value ids = l.input(op.getExpertIds());
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
  l.runtime("dedup_pack",
            {l.pointer(tokens), numTokens,
             l.rowBytes(op.getTokens().getType()), l.pointer(ids),
             l.pointer(l.input(op.getPositions())), k,
             l.index(op.getExpertsPerNode()), l.index(nodes),
             l.pointer(unique), l.pointer(routes), l.dim(unique, 0),
             l.pointer(nodeCounts)});
  l.replace(op, {unique, routes, nodeCounts});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(DedupExpandOp op) {
  if (failed(checkElements(op, {},
                           {op.getRoutes(), op.getCounts(),
                            op.getExpandedCounts()})))
    return failure();
  RankedTensorType countsType = op.getExpandedCounts().getType();
  Lowering l(op, getOperation());
  Value unique = l.input(op.getUnique());
  Value routes = l.input(op.getRoutes());
  Value k = l.dim(routes, 1);
  // Each unique row expands to at most k rows.
  Value capacity =
      arith::MulIOp::create(l.b, l.loc, l.dim(unique, 0), k).getResult();
  Value expanded = l.output(op.getExpanded().getType(), capacity);
  Value expandedCounts = l.output(countsType);
  l.runtime("dedup_expand",
            {l.pointer(unique), l.pointer(routes), l.dim(unique, 0),
             l.rowBytes(op.getUnique().getType()), k,
             l.pointer(l.input(op.getCounts())),
             l.index(countsType.getDimSize(1)),
             l.index(countsType.getDimSize(0)),
             l.index(op.getExpertsPerRank()), l.pointer(expanded),
             l.dim(expanded, 0), l.pointer(expandedCounts)});
  l.replace(op, {expanded, expandedCounts});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(GroupedMatmulOp op) {
  if (failed(checkElements(op, {op.getRows(), op.getWeights()},
                           {op.getCounts()})))
    return failure();
  RankedTensorType countsType = op.getCounts().getType();
  RankedTensorType weightsType = op.getWeights().getType();
  Lowering l(op, getOperation());
  Value rows = l.input(op.getRows());
  Value weights = l.input(op.getWeights());
  Value result = l.output(op.getResult().getType(), l.dim(rows, 0));
  l.runtime("grouped_matmul",
            {l.pointer(rows), l.dim(rows, 0), l.dim(rows, 1),
             l.pointer(l.input(op.getCounts())),
             l.index(countsType.getNumElements()),
             l.index(countsType.getShape().back()), l.pointer(weights),
             l.dim(weights, 2), l.pointer(result)});
  l.replace(op, {result});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(CombineOp op) {
  if (failed(checkElements(op, {op.getExpertOutputs(), op.getWeights()},
                           {op.getPositions()})))
    return failure();
  Lowering l(op, getOperation());
  Value outputs = l.input(op.getExpertOutputs());
  Value positions = l.input(op.getPositions());
  Value tokens = l.dim(positions, 0);
  Value combined = l.output(op.getCombined().getType(), tokens);
  l.runtime("combine",
            {l.pointer(outputs), l.dim(outputs, 0), l.dim(outputs, 1),
             l.pointer(positions), l.pointer(l.input(op.getWeights())),
             tokens, l.dim(positions, 1), l.pointer(combined)});
  l.replace(op, {combined});
  return success();
}

LogicalResult ConvertToRuntimePass::lower(AuxLossOp op) {
  SmallVector<Value> floats{op.getProbs(), op.getLoss()};
  if (op.getExpertWeights())
    floats.push_back(op.getExpertWeights());
  if (failed(checkElements(op, floats, {op.getExpertIds()})))
    return failure();
  Lowering l(op, getOperation());
  Value probs = l.input(op.getProbs());
  Value ids = l.input(op.getExpertIds());
  Value loss = l.output(op.getLoss().getType());
  bool topology = op.getKind() == AuxLossKind::Topology;
  Value weights = topology && op.getExpertWeights()
                      ? l.pointer(l.input(op.getExpertWeights()))
                      : l.null();
  l.runtime("aux_loss", {l.pointer(probs), l.pointer(ids), l.dim(probs, 0),
                         l.dim(probs, 1), l.dim(ids, 1), weights,
                         l.pointer(loss)});
  l.replace(op, {loss});
  return success();
}

/// This rank's index on a grid: its rank in the runtime's world, which
/// numbers ranks node-major as the grid's row-major order does.
static Value worldRank(Lowering &l) {
  return l.call("tamoe_rt_program_rank", {}, l.b.getIndexType());
}

LogicalResult ConvertToRuntimePass::lower(shard::ProcessLinearIndexOp op) {
  Lowering l(op, getOperation());
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
  Lowering l(op, getOperation());
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

void ConvertToRuntimePass::runOnOperation() {
  ModuleOp module = getOperation();
  SymbolTableCollection symbols;
  SmallVector<Operation *> ops;
  module.walk([&](Operation *op) {
    if (isa<TAMoEDialect>(op->getDialect()) ||
        isa<shard::ProcessLinearIndexOp, shard::ProcessMultiIndexOp>(op))
      ops.push_back(op);
  });
  for (Operation *op : ops) {
    if (isa<TAMoEDialect>(op->getDialect()) && failed(checkShapes(op)))
      return signalPassFailure();
    LogicalResult lowered =
        TypeSwitch<Operation *, LogicalResult>(op)
            .Case([&](AllToAllOp op) { return lower(op, symbols); })
            .Case([&](shard::ProcessMultiIndexOp op) {
              return lower(op, symbols);
            })
            .Case<GateOp, DispatchOp, RegroupOp, DedupPackOp, DedupExpandOp,
                  GroupedMatmulOp, CombineOp, AuxLossOp,
                  shard::ProcessLinearIndexOp>(
                [&](auto op) { return lower(op); })
            .Default([](Operation *op) {
              return op->emitOpError()
                     << "has no lowering to the runtime";
            });
    if (failed(lowered))
      return signalPassFailure();
  }
  // The grids only named the groups; the runtime knows them now.
  for (auto grid : llvm::make_early_inc_range(module.getOps<shard::GridOp>()))
    grid.erase();
  module->removeAttr("tamoe.topology");
}
