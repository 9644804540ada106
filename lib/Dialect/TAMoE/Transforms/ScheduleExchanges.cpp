//===- ScheduleExchanges.cpp - Start early, wait late ---------------------===//
//
// Every tamoe.all_to_all becomes a start, placed as early as its operands
// allow, and a wait, placed as late as its users allow (reshapes of what it
// yields move down with it), so that the ops in between run while the rows
// travel.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"

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

/// Moves the reshapes of `op`'s results (which only rename the rows, as the
/// hierarchical exchange's last stage does) down to their own first users,
/// so that they do not pin a wait right after its start.
static void sinkReshapes(Operation *op) {
  Block *block = op->getBlock();
  for (Operation *user : llvm::make_early_inc_range(op->getUsers())) {
    if (user->getBlock() != block ||
        !isa<tensor::CollapseShapeOp, tensor::ExpandShapeOp, tensor::CastOp>(
            user))
      continue;
    sinkReshapes(user);
    if (Operation *first = firstUser(block, user))
      user->moveBefore(first);
    else
      user->erase(); // nothing reads it
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
    sinkReshapes(wait);
    if (Operation *user = firstUser(block, wait))
      wait->moveBefore(user);
    ++numSplit;
  }
}
