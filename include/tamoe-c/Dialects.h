/*===- Dialects.h - tamoe's MLIR C API ----------------------------*- C -*-===*\
 *
 * For compilers driven from C or from Python bindings: the tamoe dialect's
 * handle (the upstream MLIR_DECLARE_CAPI_DIALECT_REGISTRATION pattern), the
 * dialects a tamoe program uses, and tamoe's passes and pipelines.
 *
\*===----------------------------------------------------------------------===*/

#ifndef TAMOE_C_DIALECTS_H
#define TAMOE_C_DIALECTS_H

#include "mlir-c/IR.h"
#include "mlir-c/Support.h"

#ifdef __cplusplus
extern "C" {
#endif

MLIR_DECLARE_CAPI_DIALECT_REGISTRATION(TAMoE, tamoe);

/// Inserts the tamoe dialect and every upstream dialect, with the external
/// models and extensions that tamoe-to-llvm's passes need, into `registry`.
MLIR_CAPI_EXPORTED void tamoeRegisterAllDialects(MlirDialectRegistry registry);

/// Registers tamoe's passes and pipelines (tamoe-pipeline, tamoe-to-llvm)
/// and the upstream passes with the global pass registry, so that
/// mlirParsePassPipeline finds them and tamoe-to-llvm's own.
MLIR_CAPI_EXPORTED void tamoeRegisterPasses(void);

#ifdef __cplusplus
}
#endif

#endif /* TAMOE_C_DIALECTS_H */
