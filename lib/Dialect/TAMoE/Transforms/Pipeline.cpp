//===- Pipeline.cpp - The tamoe pipeline and pass registration ------------===//

#include "tamoe/Dialect/TAMoE/Transforms/Passes.h"
#include "tamoe/Planner/Overlap.h"

#include "mlir/InitAllPasses.h"
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
  plan.klBudget = options.klBudget;
  plan.rho = options.rho;
  plan.beta = options.beta;
  plan.crossNodeCap = options.crossNodeCap;
  plan.maxNodes = options.maxNodes;
  pm.addPass(createTAMoEPlanDispatchPass(plan));
  TAMoEInjectTopologyAuxLossPassOptions loss;
  loss.coefficient = options.coefficient;
  pm.addPass(createTAMoEInjectTopologyAuxLossPass(loss));
  // Chunks before the hierarchical rewrite, which then rewrites each
  // chunk's exchanges.
  bool overlap = options.chunks != 1;
  if (overlap) {
    TAMoEOverlapPassOptions chunking;
    chunking.chunks = options.chunks;
    chunking.maxChunks = options.maxChunks;
    chunking.deviceGflops = options.deviceGflops;
    chunking.chunkOverheadUs = options.chunkOverheadUs;
    chunking.mode = options.mode;
    pm.addPass(createTAMoEOverlapPass(chunking));
  }
  TAMoEHierarchicalAllToAllPassOptions hierarchical;
  hierarchical.mode = options.mode;
  hierarchical.dedup = options.dedup;
  pm.addPass(createTAMoEHierarchicalAllToAllPass(hierarchical));
  // Last, so that the backward exchanges reverse the forward's stages.
  TAMoEDifferentiatePassOptions differentiate;
  differentiate.functions.assign(options.differentiate.begin(),
                                 options.differentiate.end());
  pm.addPass(createTAMoEDifferentiatePass(differentiate));
  // Every exchange, the backward's too, as a start and a wait.
  if (overlap)
    pm.addPass(createTAMoEScheduleExchangesPass());
}

/// Upstream passes after convert-tamoe-to-runtime: buffers for the tensors
/// (function results as plain memrefs, freed where ownership says; a
/// training loop's parameters carried through scf.for), loops for
/// the remaining linalg ops and element-wise arith on tensors (none when
/// device-resident: the runtime maps them), and the LLVM
/// dialect, with every memref allocation through the runtime
/// (use-generic-functions); then tamoe-check-lowered names what the partial
/// conversions left.
LogicalResult mlir::tamoe::buildLowering(OpPassManager &pm,
                                         const LoweringOptions &options) {
  bool device = options.deviceResident;
  std::string pipeline =
      (llvm::Twine("convert-tamoe-to-runtime{device-resident=") +
       (device ? "true" : "false") +
       " static-capacity=" + (options.staticCapacity ? "true" : "false") +
       "},convert-elementwise-to-linalg,one-shot-bufferize{bufferize-function-"
       "boundaries "
       "function-boundary-type-conversion=identity-layout-map "
       "allow-return-allocs-from-loops},"
       "buffer-deallocation-pipeline,convert-bufferization-to-memref," +
       (device ? "tamoe-finalize-device-resident," : "") +
       "convert-linalg-to-loops,expand-strided-metadata,lower-affine,"
       "convert-scf-to-cf,finalize-memref-to-llvm{use-generic-functions},"
       "convert-to-llvm,reconcile-unrealized-casts,tamoe-check-lowered")
          .str();
  return parsePassPipeline(pipeline, pm, llvm::errs());
}

/// Reads pipeline `name`'s options from `text`, failing through
/// `errorHandler` with the text when they do not parse (the option parser
/// names a bad value on stderr itself).
static LogicalResult
parseOptions(StringRef name, mlir::detail::PassOptions &options, StringRef text,
             function_ref<LogicalResult(const Twine &)> errorHandler) {
  std::string message;
  llvm::raw_string_ostream stream(message);
  if (succeeded(options.parseFromString(text, stream)))
    return success();
  return errorHandler(name + ": cannot read the options '" + text + "'" +
                      (message.empty() ? "" : ": " + message));
}

void mlir::tamoe::registerPasses() {
  // tamoe-to-llvm parses its upstream passes by name; a compiler that
  // registered only tamoe's would get "does not refer to a registered
  // pass". Upstream's pipelines may be registered only once (an MLIR built
  // with assertions aborts on the second), so not where the host (mlir-opt
  // with the plugin, the Python bindings) registered them already.
  if (!PassPipelineInfo::lookup("buffer-deallocation-pipeline"))
    registerAllPasses();
  registerTAMoEPasses();
  registerPassPipeline(
      "tamoe-pipeline",
      "Plan each MoE layer for the topology, make its loss topology-aware "
      "and its all-to-alls hierarchical where that pays",
      [](OpPassManager &pm, StringRef text,
         function_ref<LogicalResult(const Twine &)> errorHandler) {
        PipelineOptions options;
        if (failed(parseOptions("tamoe-pipeline", options, text, errorHandler)))
          return failure();
        // With chunks=1 tamoe-overlap is left out, and would not see a
        // mistake in its options.
        if (llvm::Error error = ::tamoe::planner::verifyOverlapOptions(
                options.chunks, options.maxChunks, options.deviceGflops,
                options.chunkOverheadUs))
          return errorHandler("tamoe-pipeline: " +
                              llvm::toString(std::move(error)));
        buildPipeline(pm, options);
        return success();
      },
      [](function_ref<void(const mlir::detail::PassOptions &)> print) {
        print(PipelineOptions());
      });
  // The upstream passes are looked up by name, so a tool that did not
  // register them gets an error rather than a crash.
  registerPassPipeline(
      "tamoe-to-llvm",
      "Lower a tamoe program to the LLVM dialect: tamoe ops as runtime "
      "calls, the rest with upstream passes",
      [](OpPassManager &pm, StringRef text,
         function_ref<LogicalResult(const Twine &)> errorHandler) {
        LoweringOptions options;
        if (failed(parseOptions("tamoe-to-llvm", options, text, errorHandler)))
          return failure();
        return buildLowering(pm, options);
      },
      [](function_ref<void(const mlir::detail::PassOptions &)> print) {
        print(LoweringOptions());
      });
}
