//===- ScheduleExchanges.cpp - Start early, wait late ---------------------===//
//
// Every tamoe.all_to_all becomes a start, placed as early as its operands
// allow, and a wait, placed as late as its users allow (the side-effect-free
// ops that reorder what it yields move down with it), so that the ops in
// between run while the rows travel.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOESCHEDULEEXCHANGESPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;

namespace {
struct ScheduleExchangesPass
    : public mlir::tamoe::impl::TAMoEScheduleExchangesPassBase<
          ScheduleExchangesPass> {
  using Base::Base;
  void runOnOperation() override;
};
} // namespace

/// The last op of `block` (or an ancestor in it) that defines one of
/// `operands`; null when all come from outside the block or its arguments.
static Operation *lastDefinition(Block *block, ValueRange operands) {
  Operation *last = nullptr;
  for (Value operand : operands) {
    Operation *def = operand.getDefiningOp();
    if (!def)
      continue;
    Operation *inBlock = block->findAncestorOpInBlock(*def);
    if (inBlock && (!last || last->isBeforeInBlock(inBlock)))
      last = inBlock;
  }
  return last;
}

/// The first op of `block` (or an ancestor in it) that uses a result of
/// `op`; null when none does.
static Operation *firstUser(Block *block, Operation *op) {
  Operation *first = nullptr;
  for (Operation *user : op->getUsers()) {
    Operation *inBlock = block->findAncestorOpInBlock(*user);
    if (inBlock && (!first || inBlock->isBeforeInBlock(first)))
      first = inBlock;
  }
  return first;
}

/// Moves the side-effect-free ops that read `wait`'s results, directly or
/// through each other (the reshapes and the tamoe.regroup that put a staged
/// exchange's rows back in the flat order, for instance), down to their
/// first users, so that they do not pin the wait right after its start.
/// Ops with regions stay: they are the experts' work, which a wait is meant
/// to precede; so do the collectives, which are placed in program order.
/// Each op moves after those that read it, last first.
static void sinkPureUsers(Operation *wait) {
  Block *block = wait->getBlock();
  llvm::SetVector<Operation *> slice;
  SmallVector<Operation *> worklist{wait};
  while (!worklist.empty())
    for (Operation *user : worklist.pop_back_val()->getUsers())
      if (user->getBlock() == block && user->getNumRegions() == 0 &&
          !user->hasTrait<OpTrait::IsTerminator>() &&
          isMemoryEffectFree(user) && !isa<AllToAllOp, AllReduceOp>(user) &&
          slice.insert(user))
        worklist.push_back(user);
  SmallVector<Operation *> ordered(slice.begin(), slice.end());
  llvm::sort(ordered,
             [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
  for (Operation *op : llvm::reverse(ordered)) {
    if (Operation *first = firstUser(block, op))
      op->moveBefore(first);
    else
      op->erase(); // nothing reads it
  }
}

void ScheduleExchangesPass::runOnOperation() {
  SmallVector<AllToAllOp> exchanges;
  getOperation().walk([&](AllToAllOp op) { exchanges.push_back(op); });
  // The latest start placed in each block: a start never goes above it, so
  // that every rank starts the collectives in the program's order.
  DenseMap<Block *, Operation *> lastStart;
  for (AllToAllOp exchange : exchanges) {
    Block *block = exchange->getBlock();
    Operation *after = lastDefinition(block, exchange->getOperands());
    if (Operation *previous = lastStart.lookup(block);
        previous && (!after || after->isBeforeInBlock(previous)))
      after = previous;
    OpBuilder b(exchange);
    if (after)
      b.setInsertionPointAfter(after);
    else
      b.setInsertionPointToStart(block);
    auto start = AllToAllStartOp::create(
        b, exchange.getLoc(), ExchangeType::get(b.getContext()),
        exchange.getSend(), exchange.getSendCounts(), exchange.getGridAttr(),
        exchange.getGridAxesAttr(), exchange.getLevelAttr());
    lastStart[block] = start;
    b.setInsertionPoint(exchange);
    auto wait = AllToAllWaitOp::create(
        b, exchange.getLoc(), exchange.getReceived().getType(),
        exchange.getRecvCounts().getType(), start.getExchange());
    exchange.replaceAllUsesWith(wait.getResults());
    exchange.erase();
    sinkPureUsers(wait);
    if (Operation *user = firstUser(block, wait))
      wait->moveBefore(user);
    ++numSplit;
  }
}
