//===- Dialects.cpp - tamoe's MLIR C API ----------------------------------===//

#include "tamoe-c/Dialects.h"
#include "tamoe/InitAll.h"

#include "mlir/CAPI/IR.h"
#include "mlir/CAPI/Registration.h"

MLIR_DEFINE_CAPI_DIALECT_REGISTRATION(TAMoE, tamoe, mlir::tamoe::TAMoEDialect)

void tamoeRegisterAllDialects(MlirDialectRegistry registry) {
  ::tamoe::registerAllDialects(*unwrap(registry));
}

void tamoeRegisterPasses(void) { ::tamoe::registerAllPasses(); }
