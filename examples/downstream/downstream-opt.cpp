//===- downstream-opt.cpp - A downstream optimizer that links tamoe -------===//
//
// What a compiler built on upstream MLIR does to use tamoe: one call
// registers the tamoe dialect, the dialects tamoe programs use, and tamoe's
// passes and pipelines.
//
//===----------------------------------------------------------------------===//

#include "tamoe/InitAll.h"

#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  tamoe::registerAll(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "downstream optimizer with tamoe\n",
                        registry));
}
