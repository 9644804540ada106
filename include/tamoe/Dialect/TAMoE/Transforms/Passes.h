//===- Passes.h - tamoe passes ----------------------------------*- C++ -*-===//

#ifndef TAMOE_DIALECT_TAMOE_TRANSFORMS_PASSES_H
#define TAMOE_DIALECT_TAMOE_TRANSFORMS_PASSES_H

#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir::tamoe {

#define GEN_PASS_DECL
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"

/// Options of the tamoe pipeline: those of its passes.
struct PipelineOptions : public PassPipelineOptions<PipelineOptions> {
  Option<std::string> topology{
      *this, "topology",
      llvm::cl::desc(
          "Topology JSON file (default: the module's tamoe.topology)")};
  Option<std::string> policy{
      *this, "policy",
      llvm::cl::desc(
          "uniform, tamoe, optimal, box, fastermoe or node-limited (default "
          "tamoe)"),
      llvm::cl::init("tamoe")};
  Option<double> klBudget{
      *this, "kl-budget",
      llvm::cl::desc("optimal: KL budget (default: the tamoe pattern's)"),
      llvm::cl::init(-1.0)};
  Option<double> rho{*this, "rho", llvm::cl::desc("box: rho (default 0.25)"),
                     llvm::cl::init(0.25)};
  Option<double> beta{*this, "beta",
                      llvm::cl::desc("box: beta (default 4)"),
                      llvm::cl::init(4.0)};
  Option<double> crossNodeCap{*this, "cross-node-cap",
                              llvm::cl::desc("fastermoe: cap (default 0.14)"),
                              llvm::cl::init(0.14)};
  Option<int64_t> maxNodes{
      *this, "max-nodes",
      llvm::cl::desc("node-limited: nodes per token (default 4)"),
      llvm::cl::init(4)};
  Option<double> coefficient{
      *this, "coefficient",
      llvm::cl::desc("Weight of an inserted loss (default 0.01)"),
      llvm::cl::init(0.01)};
  Option<std::string> mode{
      *this, "mode", llvm::cl::desc("auto (the default), flat or hierarchical"),
      llvm::cl::init("auto")};
  Option<bool> dedup{*this, "dedup",
                     llvm::cl::desc("Consider per-node de-duplication of "
                                    "top-k tokens (default false)"),
                     llvm::cl::init(false)};
  Option<int64_t> chunks{
      *this, "chunks",
      llvm::cl::desc("Chunks per layer whose exchanges overlap the experts' "
                     "compute, at most 1024: 1 keeps layers whole (the "
                     "default), 0 lets the cost model choose (with "
                     "device-gflops)"),
      llvm::cl::init(1)};
  Option<int64_t> maxChunks{
      *this, "max-chunks",
      llvm::cl::desc("Most chunks the cost model considers, in [1, 1024] "
                     "(default 8)"),
      llvm::cl::init(8)};
  Option<double> deviceGflops{
      *this, "device-gflops",
      llvm::cl::desc("GFLOP/s of one rank's expert GEMMs, in [0.001, 1e9], "
                     "for the overlap's prediction (default 0: unknown)"),
      llvm::cl::init(0.0)};
  Option<double> chunkOverheadUs{
      *this, "chunk-overhead-us",
      llvm::cl::desc("Microseconds each chunk of compute adds, at most 1e6 "
                     "(default 10)"),
      llvm::cl::init(10.0)};
  ListOption<std::string> differentiate{
      *this, "differentiate",
      llvm::cl::desc("Functions to differentiate besides those that "
                     "tamoe.vjp ops name")};
};

/// plan-dispatch, inject-topology-aux-loss, overlap (unless chunks=1),
/// hierarchical-all-to-all, differentiate (which has
/// nothing to do without tamoe.vjp ops or `differentiate` functions), then
/// schedule-exchanges (unless chunks=1).
void buildPipeline(OpPassManager &pm, const PipelineOptions &options);

/// Options of `tamoe-to-llvm`.
struct LoweringOptions : public PassPipelineOptions<LoweringOptions> {
  Option<bool> deviceResident{
      *this, "device-resident",
      llvm::cl::desc("Lower the layer's dense compute to runtime calls too, "
                     "so that the program runs on the cuda backend with no "
                     "host loop"),
      llvm::cl::init(false)};
  Option<bool> staticCapacity{
      *this, "static-capacity",
      llvm::cl::desc("Size the receive buffers of capacity-limited exchanges "
                     "by the capacity: no counts round and no host wait for "
                     "totals (convert-tamoe-to-runtime{static-capacity})"),
      llvm::cl::init(false)};
};

/// Adds `tamoe-to-llvm`: convert-tamoe-to-runtime, then upstream passes down
/// to the LLVM dialect (docs/lowering.md).
LogicalResult buildLowering(OpPassManager &pm,
                            const LoweringOptions &options = {});

/// Registers tamoe's passes, `tamoe-pipeline` and `tamoe-to-llvm`, and the
/// upstream passes `tamoe-to-llvm` runs, which it names as text.
void registerPasses();

} // namespace mlir::tamoe

#endif // TAMOE_DIALECT_TAMOE_TRANSFORMS_PASSES_H
