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

void mlir::tamoe::registerPasses() {
  registerTAMoEPasses();
  PassPipelineRegistration<PipelineOptions>(
      "tamoe-pipeline",
      "Plan each MoE layer for the topology, make its loss topology-aware "
      "and its all-to-alls hierarchical where that pays",
      buildPipeline);
}
