//===- tamoe-opt.cpp - tamoe optimizer driver -----------------------------===//

#include "tamoe/InitAll.h"

#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  // Programs leave tamoe's passes for upstream ones (bufferization, lowering
  // to LLVM), so the driver offers every upstream dialect, interface model
  // and pass, as mlir-opt does.
  mlir::registerAllPasses();
  tamoe::registerAllPasses();
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  tamoe::registerAllDialects(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "tamoe optimizer driver\n", registry));
}
