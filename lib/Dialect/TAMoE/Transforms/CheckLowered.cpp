//===- CheckLowered.cpp - What tamoe-to-llvm should have lowered ----------===//
//
// Upstream's convert-to-llvm is a partial conversion: what it cannot convert
// stays, and the module fails only in mlir-translate. The last pass of
// tamoe-to-llvm names such an op where it is.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include "llvm/ADT/StringSet.h"

namespace mlir::tamoe {
#define GEN_PASS_DEF_TAMOECHECKLOWEREDPASS
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace mlir::tamoe

using namespace mlir;

namespace {
struct CheckLoweredPass
    : public mlir::tamoe::impl::TAMoECheckLoweredPassBase<CheckLoweredPass> {
  void runOnOperation() override;
};
} // namespace

void CheckLoweredPass::runOnOperation() {
  // The dialects the pipeline lowers; others (omp, nvvm, ...) have their
  // own translations to LLVM IR.
  static const llvm::StringSet<> lowered = {
      "builtin", "func",   "arith",         "cf",     "math",
      "index",   "ub",     "memref",        "tensor", "linalg",
      "scf",     "affine", "bufferization", "vector", "complex",
      "shard",   "tamoe"};
  // The first op left, an unreconciled cast only when nothing else is:
  // casts are left around the op that could not be converted.
  Operation *first = nullptr, *firstCast = nullptr;
  int64_t count = 0;
  getOperation()->walk([&](Operation *op) {
    // An unregistered op has no translation either.
    if (isa<ModuleOp>(op) ||
        (op->getDialect() &&
         !lowered.contains(op->getDialect()->getNamespace())))
      return;
    Operation *&slot =
        isa<UnrealizedConversionCastOp>(op) ? firstCast : first;
    if (!slot)
      slot = op;
    ++count;
  });
  if (!first)
    first = firstCast;
  if (!first)
    return;
  first->emitError() << "tamoe-to-llvm left '" << first->getName()
                     << "' unconverted"
                     << (count > 1 ? " (and " + std::to_string(count - 1) +
                                         " more op(s) left)"
                                   : std::string())
                     << ": lower it before tamoe-to-llvm, or to ops the "
                        "pipeline converts";
  signalPassFailure();
}
