//===- tamoe-opt.cpp - tamoe optimizer driver -----------------------------===//

#include "tamoe/InitAll.h"
#include "tamoe/Support/Version.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"

/// What --help prints first: tamoe's pipelines and passes, whose options
/// follow with the upstream passes further down.
static std::string overview() {
  std::string text = "tamoe optimizer driver\n\ntamoe's pipelines and passes "
                     "(docs/passes.md; their options are listed below, "
                     "among every upstream pass):\n";
  for (llvm::StringRef name : {"tamoe-pipeline", "tamoe-to-llvm"})
    if (const mlir::PassPipelineInfo *info =
            mlir::PassPipelineInfo::lookup(name))
      text +=
          llvm::formatv("  --{0,-34} {1}\n", name, info->getPassDescription());
  for (llvm::StringRef name :
       {"tamoe-plan-dispatch", "tamoe-inject-topology-aux-loss",
        "tamoe-overlap", "tamoe-hierarchical-all-to-all", "tamoe-differentiate",
        "tamoe-schedule-exchanges", "tamoe-expand-gate",
        "convert-tamoe-to-runtime", "tamoe-finalize-device-resident",
        "tamoe-check-lowered"})
    if (const mlir::PassInfo *info = mlir::PassInfo::lookup(name))
      text +=
          llvm::formatv("  --{0,-34} {1}\n", name, info->getPassDescription());
  return text;
}

int main(int argc, char **argv) {
  // LLVM registers hundreds of options for its code generators as it loads;
  // --help leaves them out (--help-hidden lists them) and shows those that
  // the driver, MLIR and the passes register from here on.
  static llvm::cl::OptionCategory category("tamoe-opt options");
  llvm::cl::HideUnrelatedOptions(category);
  llvm::cl::AddExtraVersionPrinter(tamoe::printVersion);
  // Programs leave tamoe's passes for upstream ones (bufferization, lowering
  // to LLVM), so the driver offers every upstream dialect, interface model
  // and pass, as mlir-opt does: tamoe's registration includes them.
  mlir::DialectRegistry registry;
  tamoe::registerAll(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, overview(), registry));
}
