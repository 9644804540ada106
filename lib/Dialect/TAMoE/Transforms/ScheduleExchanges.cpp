//===- ScheduleExchanges.cpp - Start early, wait late ---------------------===//
//
// Every tamoe.all_to_all becomes a start, placed as early as its operands
// allow (the side-effect-free ops that compute them move up with it), and a
// wait, placed as late as its users allow (those that reorder what it
// yields move down with it), so that the ops in between run while the rows
// travel. The later stages of a staged exchange (hierarchical, or
// de-duplicated) start from an earlier stage's wait: that wait, the ops
// that rearrange its rows and the next stage's start move down together,
// past the compute that does not need them, so that the first stage's rows
// travel meanwhile.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
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

/// Ops that only compute on their operands, and so may move across others:
/// no regions (those are the experts' work, which the exchanges are meant
/// to overlap), no memory effects, not a collective or a terminator.
static bool isMovable(Operation *op) {
  return op->getNumRegions() == 0 && !op->hasTrait<OpTrait::IsTerminator>() &&
         isMemoryEffectFree(op) && !isa<AllToAllOp, AllReduceOp>(op);
}

/// Movable ops that only rearrange rows or counts between the stages of a
/// staged exchange (no compute to overlap).
static bool isRelayOp(Operation *op) {
  return isMovable(op) && (isa<RegroupOp, DedupExpandOp>(op) ||
                           isa<tensor::TensorDialect>(op->getDialect()));
}

/// Moves the movable ops that read `wait`'s results, directly or through
/// each other (the reshapes and the tamoe.regroup that put a staged
/// exchange's rows back in the flat order, for instance), down to their
/// first users, so that they do not pin the wait right after its start.
/// Each op moves after those that read it, last first.
static void sinkMovableUsers(Operation *wait) {
  Block *block = wait->getBlock();
  llvm::SetVector<Operation *> slice;
  SmallVector<Operation *> worklist{wait};
  while (!worklist.empty())
    for (Operation *user : worklist.pop_back_val()->getUsers())
      if (user->getBlock() == block && isMovable(user) && slice.insert(user))
        worklist.push_back(user);
  SmallVector<Operation *> ordered(slice.begin(), slice.end());
  llvm::sort(ordered,
             [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
  for (Operation *op : llvm::reverse(ordered)) {
    if (Operation *first = firstUser(block, op))
      op->moveBefore(first);
    else if (op->use_empty())
      op->erase(); // nothing reads it
    else if (block->mightHaveTerminator())
      op->moveBefore(block->getTerminator()); // read in later blocks only
  }
}

/// Moves `op` up to right after the last definition of its operands in its
/// block, but not above `floor`; never down.
static void hoistOne(Operation *op, Operation *floor) {
  Block *block = op->getBlock();
  Operation *after = lastDefinition(block, op->getOperands());
  if (floor && (!after || after->isBeforeInBlock(floor)))
    after = floor;
  if (!after)
    op->moveBefore(&block->front());
  else if (after->isBeforeInBlock(op))
    op->moveAfter(after);
}

/// Whether an exchange's start or wait must not move past `op`: an op with
/// side effects other than the exchanges' own.
static bool isBarrier(Operation *op) {
  return !isa<AllToAllStartOp, AllToAllWaitOp>(op) && !isMemoryEffectFree(op);
}

/// The last op before `op` in its block that a start must not rise above:
/// a barrier (a cf.assert, a call), which may stop this rank while the
/// others' collective waits for it.
static Operation *lastBarrier(Operation *op) {
  for (Operation *previous = op->getPrevNode(); previous;
       previous = previous->getPrevNode())
    if (isBarrier(previous))
      return previous;
  return nullptr;
}

/// The first op after `op` in its block that a wait must not sink below:
/// a barrier (a call, a store), which may write the memory of the rows the
/// runtime is still sending (a tensor from bufferization.to_tensor), or stop
/// this rank.
static Operation *nextBarrier(Operation *op) {
  for (Operation *next = op->getNextNode(); next; next = next->getNextNode())
    if (isBarrier(next))
      return next;
  return nullptr;
}

/// hoistOne for `op`, after the movable ops of its block that compute its
/// operands, directly or through each other, each once and in block order
/// (a walk per path would take exponential time on shared operands). Only
/// pure ones move: one that may trap (arith.divsi) must not rise above a
/// check that guards it.
static void hoist(Operation *op, Operation *floor) {
  Block *block = op->getBlock();
  llvm::SetVector<Operation *> defs;
  SmallVector<Operation *> worklist{op};
  while (!worklist.empty())
    for (Value operand : worklist.pop_back_val()->getOperands())
      if (Operation *def = operand.getDefiningOp();
          def && def->getBlock() == block && isMovable(def) && isPure(def) &&
          defs.insert(def))
        worklist.push_back(def);
  SmallVector<Operation *> ordered(defs.begin(), defs.end());
  llvm::sort(ordered,
             [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
  for (Operation *def : ordered)
    hoistOne(def, floor);
  hoistOne(op, floor);
}

/// When `start` begins a later stage of a staged exchange, the earlier
/// stage that feeds it: the waits whose rows reach it only through relay
/// ops, and those ops, in `relay` (block order); false when its operands
/// come from no wait, or the waits' rows also go elsewhere.
static bool relayInto(AllToAllStartOp start,
                      SmallVectorImpl<Operation *> &relay) {
  Block *block = start->getBlock();
  llvm::SetVector<Operation *> found;
  bool fromWait = false;
  SmallVector<Operation *> worklist{start};
  while (!worklist.empty())
    for (Value operand : worklist.pop_back_val()->getOperands()) {
      Operation *def = operand.getDefiningOp();
      if (!def || def->getBlock() != block)
        continue;
      if (isa<AllToAllWaitOp>(def)) {
        fromWait = true;
        found.insert(def);
      } else if (isRelayOp(def) && found.insert(def)) {
        worklist.push_back(def);
      }
    }
  if (!fromWait)
    return false;
  for (Operation *op : found)
    for (Operation *user : op->getUsers())
      if (user != start.getOperation() && !found.contains(user))
        return false;
  relay.assign(found.begin(), found.end());
  llvm::sort(relay,
             [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
  return true;
}

/// Moves a later stage's `start` and its `relay` (relayInto) down, past the
/// ops after the start that do not need them: up to the next start (so the
/// stages enter the network in the order of the exchanges), the start's own
/// wait, or the wait of an exchange started after the relay's first stage
/// (which that stage's rows would otherwise overtake). The ops passed run
/// while the first stage's rows travel; a wait right after its start would
/// hide nothing.
static void sinkRelay(AllToAllStartOp start, ArrayRef<Operation *> relay) {
  Operation *firstStage = nullptr;
  for (Operation *op : relay)
    if (auto wait = dyn_cast<AllToAllWaitOp>(op);
        wait && (!firstStage || wait.getStart()->isBeforeInBlock(firstStage)))
      firstStage = wait.getStart();
  Operation *target = start->getNextNode();
  for (; target; target = target->getNextNode()) {
    if (isa<AllToAllStartOp>(target) || target == start.getWait() ||
        target->hasTrait<OpTrait::IsTerminator>() || isBarrier(target))
      break;
    if (auto wait = dyn_cast<AllToAllWaitOp>(target))
      if (wait.getStart()->getBlock() != start->getBlock() ||
          firstStage->isBeforeInBlock(wait.getStart()))
        break;
  }
  if (!target)
    return;
  // Nor past an op with side effects: the earlier stage's rows are read
  // until its wait.
  for (Operation *op : relay)
    if (isa<AllToAllWaitOp>(op))
      if (Operation *barrier = nextBarrier(op);
          barrier && barrier->isBeforeInBlock(target))
        return;
  for (Operation *op : relay)
    op->moveBefore(target);
  start->moveBefore(target);
}

void ScheduleExchangesPass::runOnOperation() {
  SmallVector<AllToAllOp> exchanges;
  getOperation().walk([&](AllToAllOp op) { exchanges.push_back(op); });
  // Each exchange becomes a start and a wait in its place.
  SmallVector<AllToAllWaitOp> waits;
  for (AllToAllOp exchange : exchanges) {
    OpBuilder b(exchange);
    auto start = AllToAllStartOp::create(
        b, exchange.getLoc(), ExchangeType::get(b.getContext()),
        exchange.getSend(), exchange.getSendCounts(),
        exchange.getExpectedCounts(), exchange.getGridAttr(),
        exchange.getGridAxesAttr(), exchange.getLevelAttr());
    auto wait = AllToAllWaitOp::create(
        b, exchange.getLoc(), exchange.getReceived().getType(),
        exchange.getRecvCounts().getType(), start.getExchange());
    exchange.replaceAllUsesWith(wait.getResults());
    exchange.erase();
    waits.push_back(wait);
    ++numSplit;
  }
  // The first stages' starts move up, in the program's order: never above
  // the one before, so that the exchanges still enter the network in that
  // order (any order would do for correctness: every rank runs the same
  // program, so the starts come in the same order on every rank, which is
  // what MPI and NCCL need of a group's collectives), and never above an op
  // with side effects.
  SmallVector<std::pair<AllToAllStartOp, SmallVector<Operation *>>> relays;
  DenseMap<Block *, Operation *> lastStart;
  for (AllToAllWaitOp wait : waits) {
    AllToAllStartOp start = wait.getStart();
    SmallVector<Operation *> relay;
    if (relayInto(start, relay)) {
      relays.emplace_back(start, std::move(relay));
      continue;
    }
    Operation *floor = lastStart.lookup(start->getBlock());
    if (Operation *barrier = lastBarrier(start);
        barrier && (!floor || floor->isBeforeInBlock(barrier)))
      floor = barrier;
    hoist(start, floor);
    lastStart[start->getBlock()] = start;
  }
  // The waits move down to their first users, but not below an op with
  // side effects: the rows in flight are read until the wait.
  for (AllToAllWaitOp wait : waits) {
    sinkMovableUsers(wait);
    if (Operation *user = firstUser(wait->getBlock(), wait)) {
      if (Operation *barrier = nextBarrier(wait);
          barrier && barrier->isBeforeInBlock(user))
        user = barrier;
      wait->moveBefore(user);
    }
  }
  // The later stages move down with their relays.
  for (auto &[start, relay] : relays)
    sinkRelay(start, relay);
}
