//===- Differentiate.cpp - Forward and backward functions of a layer ------===//
//
// Reverse-mode differentiation of a function of one block: the function is
// cloned as `<f>_forward`, which also returns what the backward reads, and
// `<f>_backward` is built by walking the function's ops in reverse and
// asking each for its vector-Jacobian product (VJPOpInterface). What the
// backward reads of the forward is saved explicitly, as results of the
// forward and arguments of the backward, unless it is free to rebuild
// (constants, this rank's index). tamoe.vjp ops become calls of the two.
// docs/autodiff.md has the signatures and the rules.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/Autodiff/Autodiff.h"
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/RegionUtils.h"

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOEDIFFERENTIATEPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;

namespace {

/// The values gradients are taken of and for: ranked tensors of floats.
bool isDifferentiable(Type type) {
  auto tensor = dyn_cast<RankedTensorType>(type);
  return tensor && isa<FloatType>(tensor.getElementType());
}

/// Whether values of `type` carry no gradient at all: integers and
/// indices, alone or in a shaped type (ids, counts, sizes).
bool isIntegral(Type type) {
  return isa<IntegerType, IndexType>(getElementTypeOrSelf(type));
}

/// What an op's regions use from above.
SmallVector<Value> capturedValues(Operation *op) {
  llvm::SetVector<Value> captured;
  getUsedValuesDefinedAbove(op->getRegions(), captured);
  return SmallVector<Value>(captured.begin(), captured.end());
}

/// The values an op reads: its operands (but the inits a linalg op
/// overwrites without reading) and what its regions use from above.
SmallVector<Value> readOperands(Operation *op) {
  auto linalgOp = dyn_cast<linalg::LinalgOp>(op);
  if (!linalgOp) {
    SmallVector<Value> read(op->getOperands());
    llvm::append_range(read, capturedValues(op));
    return read;
  }
  SmallVector<Value> read(linalgOp.getDpsInputs());
  for (OpOperand &init : linalgOp.getDpsInitsMutable())
    if (linalgOp.payloadUsesValueFromOperand(&init))
      read.push_back(init.get());
  llvm::append_range(read, capturedValues(op));
  return read;
}

/// Bytes of a tensor, or of one row (its first dimension) when only that is
/// known at run time; nullopt when more is dynamic or the elements are not
/// whole bytes.
struct Size {
  int64_t bytes = 0;
  bool perRow = false;
};
std::optional<Size> sizeOf(Type type) {
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor)
    return Size{8, false}; // an index or a scalar
  Type element = tensor.getElementType();
  if (!element.isIntOrFloat())
    return std::nullopt;
  int64_t bytes = (int64_t(element.getIntOrFloatBitWidth()) + 7) / 8;
  bool perRow = false;
  for (auto [dim, size] : llvm::enumerate(tensor.getShape())) {
    if (!ShapedType::isDynamic(size))
      bytes *= size;
    else if (dim == 0)
      perRow = true;
    else
      return std::nullopt;
  }
  return Size{bytes, perRow};
}

/// The reverse pass over one function: the VJPContext the rules see.
class Reverse : public VJPContext {
public:
  /// The backward's entry block starts with the forward's arguments
  /// (`arguments`), which the rules read as they are.
  Reverse(func::FuncOp backward, Block::BlockArgListType arguments,
          const DenseSet<Value> &active)
      : builder(backward.getContext()), block(&backward.getBody().front()),
        numArguments(arguments.size()), active(active) {
    builder.setInsertionPointToEnd(block);
    for (auto [argument, backwardArgument] :
         llvm::zip(arguments, block->getArguments()))
      mapped[argument] = backwardArgument;
  }

  Value primal(Value value) override {
    if (Value known = mapped.lookup(value))
      return known;
    if (Operation *producer = value.getDefiningOp();
        producer && canRebuild(producer)) {
      IRMapping mapping;
      for (Value operand : producer->getOperands())
        mapping.map(operand, primal(operand));
      Operation *clone = builder.clone(*producer, mapping);
      for (auto [result, rebuilt] :
           llvm::zip_equal(producer->getResults(), clone->getResults()))
        mapped[result] = rebuilt;
      return mapped.lookup(value);
    }
    // Saved values follow the forward's arguments, in the order the rules
    // asked for them.
    BlockArgument argument = block->insertArgument(
        numArguments + saved.size(), value.getType(), value.getLoc());
    saved.push_back(value);
    mapped[value] = argument;
    return argument;
  }

  Value cotangent(Value value) override { return cotangents.lookup(value); }

  bool needsCotangent(Value value) override { return active.contains(value); }

  void addCotangent(Value value, Value gradient) override {
    if (!gradient || !active.contains(value))
      return;
    Location loc = value.getLoc();
    if (gradient.getType() != value.getType())
      gradient = tensor::CastOp::create(builder, loc, value.getType(), gradient);
    Value &sum = cotangents[value];
    if (!sum) {
      sum = gradient;
    } else if (Value merged = mergeDisjointUnchunks(builder, sum, gradient)) {
      // The two may still be another value's gradient (a rule adds one
      // gradient to several operands): erased at the end if dead.
      for (Value part : {sum, gradient})
        if (!llvm::is_contained(mergedUnchunks, part.getDefiningOp()))
          mergedUnchunks.push_back(part.getDefiningOp());
      sum = merged;
    } else {
      sum = buildElementwise(builder, loc, ElementwiseKind::Add, sum, gradient);
    }
  }

  /// Erases the unchunks that merges replaced and nothing reads any more
  /// (one may be a part of another), once the backward is built.
  void eraseMergedUnchunks() {
    for (bool erased = true; erased;) {
      erased = false;
      for (Operation *&op : mergedUnchunks)
        if (op && op->use_empty()) {
          eraseDeadUnchunk(op);
          op = nullptr;
          erased = true;
        }
    }
    mergedUnchunks.clear();
  }

  OpBuilder builder;
  /// The forward values the backward reads as arguments, in order.
  SmallVector<Value> saved;

private:
  /// Ops the backward rebuilds instead of saving their results: free,
  /// without side effects, from values that are themselves rebuilt.
  bool canRebuild(Operation *op) {
    auto [it, inserted] = rebuildable.try_emplace(op, false);
    if (!inserted)
      return it->second;
    bool cheap =
        op->getNumRegions() == 0 && isMemoryEffectFree(op) &&
        (isa<arith::ConstantOp, shard::ProcessLinearIndexOp,
             shard::ProcessMultiIndexOp, tensor::ExtractSliceOp,
             tensor::ExpandShapeOp, tensor::CollapseShapeOp, tensor::CastOp>(
             op) ||
         (isa<arith::ArithDialect>(op->getDialect()) &&
          llvm::none_of(op->getResultTypes(), llvm::IsaPred<ShapedType>)));
    bool result = cheap && llvm::all_of(op->getOperands(), [&](Value operand) {
      Operation *producer = operand.getDefiningOp();
      return producer && canRebuild(producer);
    });
    rebuildable[op] = result;
    return result;
  }

  Block *block;
  unsigned numArguments;
  const DenseSet<Value> &active;
  DenseMap<Value, Value> mapped;
  DenseMap<Value, Value> cotangents;
  DenseMap<Operation *, bool> rebuildable;
  /// Unchunks that mergeDisjointUnchunks replaced in a sum.
  SmallVector<Operation *> mergedUnchunks;
};

struct DifferentiatePass
    : public mlir::tamoe::impl::TAMoEDifferentiatePassBase<DifferentiatePass> {
  using Base::Base;
  void runOnOperation() override;

private:
  /// The forward and backward functions of `function`.
  FailureOr<std::pair<func::FuncOp, func::FuncOp>>
  differentiate(func::FuncOp function);
};

} // namespace

/// A description of a saved value (an op's result) for the `tamoe.saved`
/// attributes: the op and the result's name where the op gives one.
static std::string describe(Value value) {
  auto result = cast<OpResult>(value);
  Operation *op = result.getOwner();
  std::string name;
  if (auto asm_ = dyn_cast<OpAsmOpInterface>(op))
    asm_.getAsmResultNames([&](Value named, StringRef text) {
      if (named == value)
        name = text.str();
    });
  if (name.empty())
    name = "result #" + std::to_string(result.getResultNumber());
  return (op->getName().getStringRef() + " " + name).str();
}

FailureOr<std::pair<func::FuncOp, func::FuncOp>>
DifferentiatePass::differentiate(func::FuncOp function) {
  ModuleOp module = getOperation();
  if (function.isExternal())
    return function.emitOpError()
           << "cannot be differentiated: it is a declaration, with no body";
  if (!function.getBody().hasOneBlock())
    return function.emitOpError()
           << "cannot be differentiated: tamoe-differentiate takes a "
              "function with a body of one block";
  std::string forwardName = (function.getSymName() + "_forward").str();
  std::string backwardName = (function.getSymName() + "_backward").str();
  for (StringRef name : {StringRef(forwardName), StringRef(backwardName)})
    if (module.lookupSymbol(name))
      return function.emitOpError() << "cannot be differentiated: @" << name
                                    << " already exists";
  Block &body = function.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  // An exchange in flight carries its rows through a token that has no
  // gradient, so activity would stop at it and gradients would silently be
  // lost: the exchanges are split after differentiation.
  for (Operation &op : body)
    if (isa<AllToAllStartOp, AllToAllWaitOp>(op))
      return op.emitOpError()
             << "cannot be differentiated: run tamoe-schedule-exchanges "
                "after tamoe-differentiate (as --tamoe-pipeline does)";

  // Which values depend on a differentiated argument: the ranked float
  // tensors gradients are taken through, and any other value that can carry
  // a float (a scalar, a vector, an unranked tensor, a memref), which no
  // rule takes: a gradient that would cross one is an error rather than a
  // silent zero.
  DenseSet<Value> active, activeOther;
  for (BlockArgument argument : body.getArguments())
    if (isDifferentiable(argument.getType()))
      active.insert(argument);
  auto isActive = [&](Value value) {
    return active.contains(value) || activeOther.contains(value);
  };
  for (Operation &op : body.without_terminator()) {
    if (llvm::none_of(readOperands(&op), isActive))
      continue;
    if (op.getNumRegions() > 0 && !isa<linalg::LinalgOp>(op))
      return op.emitOpError()
             << "cannot be differentiated: tamoe-differentiate takes "
                "straight-line code (no regions, loops or branches)";
    // Activity follows values: one written to memory (a store, a copy, a
    // linalg op on buffers) and read back later would lose its gradient.
    // (An op of unknown effects with results is named where a gradient
    // reaches them: it has no rule.)
    auto effects = dyn_cast<MemoryEffectOpInterface>(&op);
    bool writes = effects ? effects.hasEffect<MemoryEffects::Write>()
                          : op.getNumResults() == 0 && !isMemoryEffectFree(&op);
    if (writes)
      return op.emitOpError()
             << "cannot be differentiated: it writes a value that depends on "
                "the arguments to memory, where tamoe-differentiate cannot "
                "follow it";
    for (Value result : op.getResults())
      if (isDifferentiable(result.getType()))
        active.insert(result);
      else if (!isIntegral(result.getType()))
        activeOther.insert(result);
  }
  FunctionType signature = function.getFunctionType();
  for (auto [i, result] : llvm::enumerate(ret.getOperands()))
    if (activeOther.contains(result)) {
      std::string type;
      llvm::raw_string_ostream(type) << result.getType();
      InFlightDiagnostic error =
          function.emitOpError()
          << "cannot be differentiated: result " << i << " is a " << type
          << " that depends on the arguments, and tamoe-differentiate takes "
             "gradients of ranked float tensors";
      if (isa<FloatType>(result.getType()))
        error << " (return it as tensor<" << type << ">)";
      return error;
    }
  if (llvm::none_of(signature.getResults(), isDifferentiable))
    return function.emitOpError()
           << "cannot be differentiated: it returns no ranked float tensor "
              "to take the gradient of";
  if (llvm::none_of(signature.getInputs(), isDifferentiable))
    return function.emitOpError()
           << "cannot be differentiated: it takes no ranked float tensor to "
              "take a gradient for";

  OpBuilder builder(function);
  builder.setInsertionPointAfter(function);
  // The forward: the function, which will also return what the backward
  // saves.
  IRMapping mapping;
  auto forward = cast<func::FuncOp>(builder.clone(*function, mapping));
  forward.setSymName(forwardName);
  FunctionType type = function.getFunctionType();
  SmallVector<Type> cotangentTypes, gradientTypes;
  llvm::copy_if(type.getResults(), std::back_inserter(cotangentTypes),
                isDifferentiable);
  llvm::copy_if(type.getInputs(), std::back_inserter(gradientTypes),
                isDifferentiable);
  SmallVector<Type> backwardInputs(type.getInputs());
  llvm::append_range(backwardInputs, cotangentTypes);
  auto backward = func::FuncOp::create(
      builder, function.getLoc(), backwardName,
      builder.getFunctionType(backwardInputs, gradientTypes));
  backward.setVisibility(function.getVisibility());
  // What the function's discardable attributes ask of it, the backward
  // gets as the forward (a clone) does: llvm.emit_c_interface, say.
  backward->setDiscardableAttrs(function->getDiscardableAttrDictionary());
  Block *backwardBody = backward.addEntryBlock();
  Reverse reverse(backward, body.getArguments(), active);
  auto fail = [&] {
    forward.erase();
    backward.erase();
    return failure();
  };

  // The results' gradients are the backward's arguments; a value returned
  // twice gets both.
  unsigned next = type.getNumInputs();
  for (Value result : ret.getOperands())
    if (isDifferentiable(result.getType()))
      reverse.addCotangent(result, backwardBody->getArgument(next++));
  for (Operation &op : llvm::reverse(body.without_terminator())) {
    if (llvm::none_of(op.getResults(),
                      [&](Value result) { return reverse.cotangent(result); }))
      continue;
    auto rule = dyn_cast<VJPOpInterface>(&op);
    if (!rule) {
      op.emitOpError()
          << "has no gradient rule: tamoe-differentiate covers the tamoe "
             "ops, linalg.matmul, elementwise add, sub, mul, neg, relu and "
             "silu, "
             "sums (linalg.reduce, linalg.broadcast), reshapes, casts, "
             "slices and constants";
      return fail();
    }
    // A rule differentiates an op through its operands: a gradient that
    // would reach another carrier, or a value its region reads from above
    // (a captured scalar, a gather), would be lost.
    for (Value operand : readOperands(&op)) {
      bool captured = llvm::is_contained(capturedValues(&op), operand);
      if (!activeOther.contains(operand) &&
          !(captured && active.contains(operand)))
        continue;
      std::string type;
      llvm::raw_string_ostream(type) << operand.getType();
      op.emitOpError() << "cannot be differentiated: it reads a " << type
                       << (captured ? " inside its region" : "")
                       << " that depends on the arguments, and "
                          "tamoe-differentiate takes gradients through the "
                          "ranked float tensors an op takes as operands only";
      return fail();
    }
    if (failed(rule.buildVJP(reverse.builder, reverse)))
      return fail();
  }
  SmallVector<Value> gradients;
  for (BlockArgument argument : body.getArguments()) {
    if (!isDifferentiable(argument.getType()))
      continue;
    Value gradient = reverse.cotangent(argument);
    if (!gradient) {
      // Zeros, for an argument the results do not depend on.
      gradient = buildZerosLike(reverse.builder, argument.getLoc(),
                                reverse.primal(argument));
    }
    gradients.push_back(gradient);
  }
  func::ReturnOp::create(reverse.builder, ret.getLoc(), gradients);
  reverse.eraseMergedUnchunks();
  backward.setType(builder.getFunctionType(backwardBody->getArgumentTypes(),
                                           gradientTypes));

  auto forwardReturn =
      cast<func::ReturnOp>(forward.getBody().front().getTerminator());
  SmallVector<Value> results(forwardReturn.getOperands());
  for (Value value : reverse.saved)
    results.push_back(mapping.lookup(value));
  OpBuilder atReturn(forwardReturn);
  func::ReturnOp::create(atReturn, forwardReturn.getLoc(), results);
  forwardReturn.erase();
  forward.setType(builder.getFunctionType(type.getInputs(),
                                          TypeRange(ValueRange(results))));
  int64_t bytes = 0, rowBytes = 0, rowTensors = 0;
  for (auto [i, value] : llvm::enumerate(reverse.saved)) {
    StringAttr what = builder.getStringAttr(describe(value));
    forward.setResultAttr(type.getNumResults() + i, "tamoe.saved", what);
    backward.setArgAttr(type.getNumInputs() + i, "tamoe.saved", what);
    if (std::optional<Size> size = sizeOf(value.getType())) {
      (size->perRow ? rowBytes : bytes) += size->bytes;
      rowTensors += size->perRow;
    }
  }
  numSaved += reverse.saved.size();
  InFlightDiagnostic remark = function.emitRemark();
  remark << "@" << forwardName << " saves " << reverse.saved.size()
         << " values for @" << backwardName << ": " << bytes << " bytes";
  if (rowTensors)
    remark << ", plus " << rowBytes << " bytes per row of " << rowTensors
           << " tensors whose rows are known at run time";
  return std::make_pair(forward, backward);
}

void DifferentiatePass::runOnOperation() {
  ModuleOp module = getOperation();
  SymbolTableCollection symbols;
  // The functions to differentiate, in order: those named by the option,
  // then those of tamoe.vjp ops.
  SmallVector<func::FuncOp> functions;
  for (const std::string &name : this->functions) {
    auto function = module.lookupSymbol<func::FuncOp>(name);
    if (!function) {
      module.emitError() << "tamoe-differentiate: no function @" << name
                         << " to differentiate";
      return signalPassFailure();
    }
    if (!llvm::is_contained(functions, function))
      functions.push_back(function);
  }
  SmallVector<VJPOp> calls;
  module.walk([&](VJPOp call) {
    calls.push_back(call);
    auto function =
        symbols.lookupNearestSymbolFrom<func::FuncOp>(call, call.getCalleeAttr());
    if (function && !llvm::is_contained(functions, function))
      functions.push_back(function);
  });
  DenseMap<Operation *, std::pair<func::FuncOp, func::FuncOp>> generated;
  for (func::FuncOp function : functions) {
    auto pair = differentiate(function);
    if (failed(pair))
      return signalPassFailure();
    generated[function] = *pair;
    ++numDifferentiated;
  }
  for (VJPOp call : calls) {
    auto function =
        symbols.lookupNearestSymbolFrom<func::FuncOp>(call, call.getCalleeAttr());
    auto [forward, backward] = generated.lookup(function);
    OpBuilder builder(call);
    auto forwardCall = func::CallOp::create(builder, call.getLoc(), forward,
                                            call.getArguments());
    unsigned numResults = call.getResults().size();
    SmallVector<Value> backwardArguments(call.getArguments());
    llvm::append_range(backwardArguments,
                       forwardCall.getResults().drop_front(numResults));
    llvm::append_range(backwardArguments, call.getCotangents());
    auto backwardCall = func::CallOp::create(builder, call.getLoc(), backward,
                                             backwardArguments);
    SmallVector<Value> replacements(
        forwardCall.getResults().take_front(numResults));
    llvm::append_range(replacements, backwardCall.getResults());
    call->replaceAllUsesWith(replacements);
    call.erase();
  }
}
