//===- tamoe-topo-mlir.cpp - tamoe-topo's conversions to and from MLIR ----===//
//
// tamoe-topo-mlir to-attr FILE.json   print it as a module's #tamoe.topology
// tamoe-topo-mlir to-json FILE.mlir   print a module's tamoe.topology as JSON
//
// tamoe-topo runs this for its to-attr and to-json commands, the only ones
// that read or write MLIR: it links neither libMLIR.so nor libLLVM.so, whose
// loading alone took 80 ms of every plan. Users call tamoe-topo.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"
#include "tamoe/InitAll.h"
#include "tamoe/Topology/Topology.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/WithColor.h"

using namespace llvm;
namespace topo = tamoe::topology;

static int fail(const Twine &message) {
  WithColor::error(errs(), "tamoe-topo") << message << "\n";
  return 1;
}

static int printAsJSON(mlir::MLIRContext &context, StringRef path) {
  SourceMgr sourceMgr;
  mlir::SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(path, sourceMgr, &context);
  if (!module)
    return 1;
  auto attr = (*module)->getAttrOfType<mlir::tamoe::TopologyAttr>(
      mlir::tamoe::TAMoEDialect::getTopologyAttrName());
  if (!attr)
    return fail(path + ": module has no '" +
                mlir::tamoe::TAMoEDialect::getTopologyAttrName() +
                "' attribute");
  topo::writeTopologyJSON(attr.toTopology(), outs());
  outs() << "\n";
  return 0;
}

static int printAsAttribute(mlir::MLIRContext &context, StringRef path) {
  Expected<topo::Topology> topology = topo::loadTopologyFile(path);
  if (!topology)
    return fail(toString(topology.takeError()));
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::ModuleOp::create(mlir::UnknownLoc::get(&context));
  (*module)->setAttr(mlir::tamoe::TAMoEDialect::getTopologyAttrName(),
                     mlir::tamoe::TopologyAttr::get(&context, *topology));
  module->print(outs());
  outs() << "\n";
  return 0;
}

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  if (argc != 3 || (StringRef(argv[1]) != "to-attr" &&
                    StringRef(argv[1]) != "to-json"))
    return fail("usage: tamoe-topo-mlir to-attr FILE.json | to-json "
                "FILE.mlir (run by tamoe-topo)");
  // A module to read the cluster from is a whole tamoe program.
  mlir::DialectRegistry registry;
  tamoe::registerAllDialects(registry);
  mlir::MLIRContext context(registry);
  context.loadDialect<mlir::tamoe::TAMoEDialect>();
  if (StringRef(argv[1]) == "to-json")
    return printAsJSON(context, argv[2]);
  return printAsAttribute(context, argv[2]);
}
