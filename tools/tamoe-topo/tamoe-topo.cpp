//===- tamoe-topo.cpp - Inspect and convert cluster topologies ------------===//
//
// tamoe-topo check FILE.json     validate a topology file, print a summary
// tamoe-topo to-attr FILE.json   print it as a module's #tamoe.topology
// tamoe-topo to-json FILE.mlir   print a module's tamoe.topology as JSON
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"
#include "tamoe/Topology/Topology.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/WithColor.h"

using namespace llvm;
namespace topo = tamoe::topology;

static cl::SubCommand checkCommand("check",
                                   "Validate a topology file and summarise it");
static cl::SubCommand
    toAttrCommand("to-attr",
                  "Print a topology file as a module's #tamoe.topology");
static cl::SubCommand toJSONCommand(
    "to-json", "Print the tamoe.topology attribute of an MLIR module as JSON");
static cl::opt<std::string> inputPath(cl::Positional, cl::Required,
                                      cl::desc("<input file>"),
                                      cl::sub(checkCommand),
                                      cl::sub(toAttrCommand),
                                      cl::sub(toJSONCommand));

static int fail(const Twine &message) {
  WithColor::error(errs(), "tamoe-topo") << message << "\n";
  return 1;
}

static void printSummary(const topo::Topology &topology) {
  outs() << topology.name << ": " << topology.numRanks() << " ranks, "
         << topology.levels.size() << " levels\n";
  for (auto [index, level] : llvm::enumerate(topology.levels))
    outs() << formatv("  level {0} '{1}': fanout {2}, ", index, level.name,
                      level.fanout)
           << format("up %g GB/s, down %g GB/s, latency %g us, ",
                     level.upBandwidthGBps, level.downBandwidthGBps,
                     level.latencyUs)
           << topo::stringifyLinkSharing(level.sharing) << "\n";
}

static int printAsJSON(mlir::MLIRContext &context) {
  SourceMgr sourceMgr;
  mlir::SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(inputPath, sourceMgr, &context);
  if (!module)
    return 1;
  auto attr = (*module)->getAttrOfType<mlir::tamoe::TopologyAttr>(
      mlir::tamoe::TAMoEDialect::getTopologyAttrName());
  if (!attr)
    return fail(inputPath + ": module has no '" +
                mlir::tamoe::TAMoEDialect::getTopologyAttrName() +
                "' attribute");
  outs() << formatv("{0:2}", topo::toJSON(attr.toTopology())) << "\n";
  return 0;
}

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  cl::ParseCommandLineOptions(argc, argv, "tamoe topology tool\n");

  if (!checkCommand && !toAttrCommand && !toJSONCommand)
    return fail("expected a subcommand: check, to-attr or to-json (see "
                "--help)");
  mlir::MLIRContext context;
  context.loadDialect<mlir::tamoe::TAMoEDialect>();
  if (toJSONCommand)
    return printAsJSON(context);

  Expected<topo::Topology> topology = topo::loadTopologyFile(inputPath);
  if (!topology)
    return fail(toString(topology.takeError()));
  if (toAttrCommand) {
    mlir::OwningOpRef<mlir::ModuleOp> module =
        mlir::ModuleOp::create(mlir::UnknownLoc::get(&context));
    (*module)->setAttr(mlir::tamoe::TAMoEDialect::getTopologyAttrName(),
                       mlir::tamoe::TopologyAttr::get(&context, *topology));
    module->print(outs());
    outs() << "\n";
    return 0;
  }
  printSummary(*topology);
  return 0;
}
