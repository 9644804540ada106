//===- Pipeline.cpp - The tamoe pipeline and pass registration ------------===//

#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

using namespace mlir;
using namespace mlir::tamoe;

namespace {
#define GEN_PASS_REGISTRATION
#include "tamoe/Dialect/TAMoE/Transforms/Passes.h.inc"
} // namespace

void mlir::tamoe::buildPipeline(OpPassManager &pm,
                                const PipelineOptions &options) {
  TAMoEPlanDispatchPassOptions plan;
  plan.topologyFile = options.topology;
  plan.policy = options.policy;
  plan.rho = options.rho;
  plan.beta = options.beta;
  plan.crossNodeCap = options.crossNodeCap;
  plan.maxNodes = options.maxNodes;
  pm.addPass(createTAMoEPlanDispatchPass(plan));
  TAMoEInjectTopologyAuxLossPassOptions loss;
  loss.coefficient = options.coefficient;
  pm.addPass(createTAMoEInjectTopologyAuxLossPass(loss));
  TAMoEHierarchicalAllToAllPassOptions hierarchical;
  hierarchical.mode = options.mode;
  hierarchical.dedup = options.dedup;
  pm.addPass(createTAMoEHierarchicalAllToAllPass(hierarchical));
}

/// Upstream passes after convert-tamoe-to-runtime: buffers for the tensors
/// (function results as plain memrefs, freed where ownership says), loops for
/// the remaining linalg ops, and the LLVM dialect, with every memref
/// allocation through the runtime (use-generic-functions).
static constexpr llvm::StringLiteral kLowering =
    "convert-tamoe-to-runtime,"
    "one-shot-bufferize{bufferize-function-boundaries "
    "function-boundary-type-conversion=identity-layout-map},"
    "buffer-deallocation-pipeline,convert-linalg-to-loops,lower-affine,"
    "expand-strided-metadata,convert-scf-to-cf,"
    "finalize-memref-to-llvm{use-generic-functions},convert-to-llvm,"
    "reconcile-unrealized-casts";

LogicalResult mlir::tamoe::buildLowering(OpPassManager &pm) {
  return parsePassPipeline(kLowering, pm, llvm::errs());
}

void mlir::tamoe::registerPasses() {
  registerTAMoEPasses();
  PassPipelineRegistration<PipelineOptions>(
      "tamoe-pipeline",
      "Plan each MoE layer for the topology, make its loss topology-aware "
      "and its all-to-alls hierarchical where that pays",
      buildPipeline);
  // The upstream passes are looked up by name, so a tool that did not
  // register them gets an error rather than a crash.
  registerPassPipeline(
      "tamoe-to-llvm",
      "Lower a tamoe program to the LLVM dialect: tamoe ops as runtime "
      "calls, the rest with upstream passes",
      [](OpPassManager &pm, StringRef options,
         function_ref<LogicalResult(const Twine &)> errorHandler) {
        if (!options.empty())
          return errorHandler("tamoe-to-llvm takes no options");
        return buildLowering(pm);
      },
      [](function_ref<void(const mlir::detail::PassOptions &)>) {});
}
