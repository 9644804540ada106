//===- InitAll.h - Register everything tamoe provides -----------*- C++ -*-===//
//
// One entry point for a compiler that links tamoe: the tamoe dialect plus the
// upstream dialects, extensions and passes its programs and pipelines use.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_INITALL_H
#define TAMOE_INITALL_H

#include "tamoe/Dialect/TAMoE/Autodiff/Autodiff.h"
#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"

namespace tamoe {

/// Registers the tamoe dialect, every upstream dialect with its extensions,
/// and the gradient rules of the upstream ops.
inline void registerAllDialects(mlir::DialectRegistry &registry) {
  registry.insert<mlir::tamoe::TAMoEDialect>();
  // Every upstream dialect, not only those tamoe programs are written with:
  // tamoe-to-llvm's upstream passes need the external models (bufferization)
  // and ConvertToLLVM interfaces of whatever ops a program holds (a host's
  // own functions pass through it too). Without them it fails ("op was not
  // bufferized") or leaves ops it cannot convert.
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::tamoe::registerVJPExternalModels(registry);
}

/// Registers tamoe's passes and pipelines (`tamoe-pipeline`,
/// `tamoe-to-llvm`) and the upstream passes `tamoe-to-llvm` runs.
inline void registerAllPasses() { mlir::tamoe::registerPasses(); }

/// The single entry point for a compiler that links tamoe: the dialects into
/// `registry`, the passes and pipelines into the global registry.
inline void registerAll(mlir::DialectRegistry &registry) {
  tamoe::registerAllDialects(registry);
  tamoe::registerAllPasses();
}

} // namespace tamoe

#endif // TAMOE_INITALL_H
