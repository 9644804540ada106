//===- tamoe-opt.cpp - tamoe optimizer driver -----------------------------===//

#include "tamoe/InitAll.h"

#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  // Upstream passes (canonicalize, bufferization, lowering to LLVM) are part
  // of every tamoe pipeline, so the driver offers them all.
  mlir::registerAllPasses();
  tamoe::registerAllPasses();
  mlir::DialectRegistry registry;
  tamoe::registerAllDialects(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "tamoe optimizer driver\n", registry));
}
