//===- InitAll.h - Register everything tamoe provides -----------*- C++ -*-===//
//
// One entry point for a compiler that links tamoe: the tamoe dialect plus the
// upstream dialects a tamoe program is written with.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_INITALL_H
#define TAMOE_INITALL_H

#include "tamoe/Dialect/TAMoE/Autodiff/Autodiff.h"
#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/Extensions/AllExtensions.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Tensor/Extensions/AllExtensions.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"

namespace tamoe {

/// Registers the tamoe dialect and the upstream dialects (with their
/// extensions) that tamoe programs use, the extensions `tamoe-to-llvm`
/// needs, and the gradient rules of the upstream ops.
inline void registerAllDialects(mlir::DialectRegistry &registry) {
  registry.insert<mlir::tamoe::TAMoEDialect, mlir::arith::ArithDialect,
                  mlir::bufferization::BufferizationDialect,
                  mlir::func::FuncDialect, mlir::linalg::LinalgDialect,
                  mlir::math::MathDialect, mlir::memref::MemRefDialect,
                  mlir::scf::SCFDialect, mlir::shard::ShardDialect,
                  mlir::tensor::TensorDialect>();
  mlir::func::registerAllExtensions(registry);
  mlir::tensor::registerAllExtensions(registry);
  // What tamoe-to-llvm's upstream passes need of the ops a program holds (a
  // host's own functions pass through it too): the dialects' bufferization
  // and other external models, and the ConvertToLLVM interfaces. Without
  // them it fails ("op was not bufferized") or leaves ops it cannot
  // convert.
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
