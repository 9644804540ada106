/*===- tamoe-capi.c - tamoe through the MLIR C API ------------------------===*\
 *
 * Loads a module with the tamoe dialect, runs the tamoe pipeline (or the
 * pipeline given) and prints the result, as a compiler driven from C (or
 * from Python bindings) would.
 * Usage: tamoe-capi-test FILE.mlir [PIPELINE]
 *
\*===----------------------------------------------------------------------===*/

#include "tamoe-c/Dialects.h"

#include "mlir-c/IR.h"
#include "mlir-c/Pass.h"

#include <stdio.h>
#include <stdlib.h>

static void print(MlirStringRef text, void *userData) {
  fwrite(text.data, 1, text.length, (FILE *)userData);
}

static char *readFile(const char *path) {
  FILE *file = fopen(path, "rb");
  if (!file)
    return NULL;
  fseek(file, 0, SEEK_END);
  long size = ftell(file);
  fseek(file, 0, SEEK_SET);
  char *text = malloc(size + 1);
  if (text && fread(text, 1, size, file) == (size_t)size)
    text[size] = '\0';
  fclose(file);
  return text;
}

int main(int argc, char **argv) {
  if (argc != 2 && argc != 3) {
    fprintf(stderr, "usage: tamoe-capi-test FILE.mlir [PIPELINE]\n");
    return 2;
  }
  char *source = readFile(argv[1]);
  if (!source) {
    fprintf(stderr, "tamoe-capi-test: cannot read %s\n", argv[1]);
    return 2;
  }
  MlirDialectRegistry registry = mlirDialectRegistryCreate();
  tamoeRegisterAllDialects(registry);
  MlirContext context = mlirContextCreateWithRegistry(registry, false);
  mlirDialectRegistryDestroy(registry);
  tamoeRegisterPasses();
  /* The dialect handle works as upstream's do. */
  MlirDialect dialect = mlirDialectHandleLoadDialect(mlirGetDialectHandle__tamoe__(), context);
  MlirStringRef namespace_ = mlirDialectGetNamespace(dialect);
  printf("loaded dialect: %.*s\n", (int)namespace_.length, namespace_.data);

  MlirModule module =
      mlirModuleCreateParse(context, mlirStringRefCreateFromCString(source));
  free(source);
  if (mlirModuleIsNull(module)) {
    fprintf(stderr, "tamoe-capi-test: cannot parse %s\n", argv[1]);
    return 1;
  }
  MlirPassManager pm = mlirPassManagerCreate(context);
  MlirOpPassManager opm = mlirPassManagerGetAsOpPassManager(pm);
  MlirLogicalResult parsed = mlirParsePassPipeline(
      opm,
      mlirStringRefCreateFromCString(argc == 3 ? argv[2]
                                               : "builtin.module(tamoe-pipeline)"),
      print, stderr);
  if (mlirLogicalResultIsFailure(parsed))
    return 1;
  if (mlirLogicalResultIsFailure(
          mlirPassManagerRunOnOp(pm, mlirModuleGetOperation(module))))
    return 1;
  mlirOperationPrint(mlirModuleGetOperation(module), print, stdout);
  printf("\n");
  mlirPassManagerDestroy(pm);
  mlirModuleDestroy(module);
  mlirContextDestroy(context);
  return 0;
}
