//===- FinalizeDeviceResident.cpp - Host bookkeeping off backend memory ---===//
//
// After bufferization and deallocation of a device-resident program every
// memref.alloc is backend memory. The deallocation lowering's alias checks
// are the host's own bookkeeping (index and i1 buffers it writes): they move
// to the stack. Whatever else would still touch a buffer on the host is an
// error.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOEFINALIZEDEVICERESIDENTPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;
using namespace mlir::tamoe;

namespace {
struct FinalizeDeviceResidentPass
    : public mlir::tamoe::impl::TAMoEFinalizeDeviceResidentPassBase<
          FinalizeDeviceResidentPass> {
  void runOnOperation() override;
};
} // namespace

/// Bookkeeping the host writes: a static index or i1 buffer that is read,
/// written and freed where it is allocated, or passed to a call as an
/// unranked or dynamic view (the deallocation helper). Anything that could
/// let it outlive the call (a return, a yield) keeps it a heap buffer.
static bool isHostBookkeeping(memref::AllocOp alloc) {
  MemRefType type = alloc.getType();
  Type element = type.getElementType();
  if (!type.hasStaticShape() || !type.getLayout().isIdentity() ||
      !(element.isIndex() || element.isInteger(1)))
    return false;
  return llvm::all_of(alloc->getUsers(), [&](Operation *user) {
    if (isa<memref::LoadOp, memref::StoreOp, memref::DeallocOp,
            memref::ExtractAlignedPointerAsIndexOp>(user))
      return true;
    // The shape of a memref.reshape (a tensor.reshape's sizes), which the
    // host reads to build the view.
    if (auto reshape = dyn_cast<memref::ReshapeOp>(user))
      return reshape.getShape() == alloc.getResult() &&
             reshape.getSource() != alloc.getResult();
    auto cast = dyn_cast<memref::CastOp>(user);
    return cast && llvm::all_of(cast->getUsers(), [](Operation *castUser) {
             return isa<func::CallOp>(castUser);
           });
  });
}

void FinalizeDeviceResidentPass::runOnOperation() {
  getOperation().walk([](func::FuncOp function) {
    if (function.isExternal())
      return;
    SmallVector<memref::AllocOp> allocs;
    function.walk([&](memref::AllocOp alloc) {
      if (isHostBookkeeping(alloc))
        allocs.push_back(alloc);
    });
    // At the entry, so that a loop does not grow the stack.
    OpBuilder builder = OpBuilder::atBlockBegin(&function.front());
    for (memref::AllocOp alloc : allocs) {
      for (Operation *user : llvm::make_early_inc_range(alloc->getUsers()))
        if (isa<memref::DeallocOp>(user))
          user->erase();
      auto alloca = memref::AllocaOp::create(builder, alloc.getLoc(),
                                             alloc.getType(),
                                             alloc.getAlignmentAttr());
      alloc.replaceAllUsesWith(alloca.getResult());
      alloc.erase();
    }
  });
  WalkResult left = getOperation().walk([](Operation *op) {
    // A function that returns an argument gets a copy of it for its result.
    auto copy = dyn_cast<memref::CopyOp>(op);
    auto argument =
        copy ? dyn_cast<BlockArgument>(copy.getSource()) : BlockArgument();
    if (argument && argument.getOwner()->isEntryBlock() &&
        isa<func::FuncOp>(argument.getOwner()->getParentOp()) &&
        llvm::any_of(copy.getTarget().getUsers(),
                     llvm::IsaPred<func::ReturnOp>))
      op->emitOpError() << "copies argument #" << argument.getArgNumber()
                        << " on the host to return it, which a "
                           "device-resident program cannot do: return "
                           "values the function computes";
    else if (isa<memref::CopyOp, bufferization::CloneOp>(op))
      op->emitOpError() << "copies a buffer on the host, which a "
                           "device-resident program cannot do (a tensor "
                           "written in place while still read?)";
    else if (isa<linalg::LinalgOp>(op))
      op->emitOpError() << "would run on the host in a device-resident "
                           "program";
    else
      return WalkResult::advance();
    return WalkResult::interrupt();
  });
  if (left.wasInterrupted())
    signalPassFailure();
}
