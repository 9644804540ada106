//===- TAMoEPlugin.cpp - tamoe as plugins of stock MLIR tools -------------===//
//
// One shared library that is both a dialect plugin and a pass plugin, so
// that the stock tools load tamoe without being rebuilt:
//
//   mlir-opt --load-dialect-plugin=libTAMoEPlugin.so \
//            --load-pass-plugin=libTAMoEPlugin.so --tamoe-pipeline ...
//
// It works because tamoe links the same libMLIR.so as Debian's tools, so the
// dialect and pass registries it fills are theirs.
//
//===----------------------------------------------------------------------===//

#include "tamoe/InitAll.h"

#include "mlir/Tools/Plugins/DialectPlugin.h"
#include "mlir/Tools/Plugins/PassPlugin.h"

#include "llvm/Config/llvm-config.h"
#include "llvm/Support/Compiler.h"

using namespace mlir;

extern "C" LLVM_ATTRIBUTE_WEAK DialectPluginLibraryInfo
mlirGetDialectPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "TAMoE", LLVM_VERSION_STRING,
          [](DialectRegistry *registry) {
            ::tamoe::registerAllDialects(*registry);
          }};
}

extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo mlirGetPassPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "TAMoE", LLVM_VERSION_STRING,
          []() { ::tamoe::registerAllPasses(); }};
}
