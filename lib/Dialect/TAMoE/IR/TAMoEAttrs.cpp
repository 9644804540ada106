//===- TAMoEAttrs.cpp - tamoe attributes ----------------------------------===//

#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"
#include "tamoe/Support/Messages.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::tamoe;

#include "tamoe/Dialect/TAMoE/IR/TAMoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "tamoe/Dialect/TAMoE/IR/TAMoEAttrs.cpp.inc"

void TAMoEDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "tamoe/Dialect/TAMoE/IR/TAMoEAttrs.cpp.inc"
      >();
}

FailureOr<llvm::APFloat> mlir::tamoe::parseF64Parameter(AsmParser &parser) {
  double value;
  if (parser.parseFloat(value))
    return failure();
  return llvm::APFloat(value);
}

//===----------------------------------------------------------------------===//
// TopologyAttr
//===----------------------------------------------------------------------===//

namespace topo = ::tamoe::topology;

static topo::LinkSharing toLibrary(LinkSharing sharing) {
  return sharing == LinkSharing::Shared ? topo::LinkSharing::Shared
                                        : topo::LinkSharing::PerRank;
}

static LinkSharing fromLibrary(topo::LinkSharing sharing) {
  return sharing == topo::LinkSharing::Shared ? LinkSharing::Shared
                                              : LinkSharing::PerRank;
}

static topo::Topology toLibrary(StringRef name,
                                ArrayRef<TopologyLevelAttr> levels,
                                StringRef description) {
  topo::Topology topology;
  topology.name = name.str();
  topology.description = description.str();
  for (TopologyLevelAttr level : levels) {
    topo::Level &out = topology.levels.emplace_back();
    out.name = level.getName().str();
    out.fanout = level.getFanout();
    out.upBandwidthGBps = level.getUpBandwidth().convertToDouble();
    out.downBandwidthGBps = level.getDownBandwidth().convertToDouble();
    out.latencyUs = level.getLatency().convertToDouble();
    out.perMessageUs = level.getPerMessage().convertToDouble();
    out.sharing = toLibrary(level.getUplink());
  }
  return topology;
}

LogicalResult TopologyAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                   StringRef name,
                                   ArrayRef<TopologyLevelAttr> levels,
                                   StringRef description) {
  // One set of rules for files and IR: the library's.
  if (llvm::Error error = topo::verify(toLibrary(name, levels, description)))
    return emitError() << "invalid topology: "
                       << llvm::toString(std::move(error));
  return success();
}

TopologyAttr TopologyAttr::get(MLIRContext *context,
                               const topo::Topology &topology) {
  SmallVector<TopologyLevelAttr> levels;
  for (const topo::Level &level : topology.levels)
    levels.push_back(TopologyLevelAttr::get(
        context, level.name, level.fanout, llvm::APFloat(level.upBandwidthGBps),
        llvm::APFloat(level.downBandwidthGBps), llvm::APFloat(level.latencyUs),
        llvm::APFloat(level.perMessageUs), fromLibrary(level.sharing)));
  return TopologyAttr::get(context, topology.name, levels,
                           topology.description);
}

topo::Topology TopologyAttr::toTopology() const {
  return toLibrary(getName(), getLevels(), getDescription());
}

TopologyAttr TopologyAttr::lookup(Operation *op) {
  ModuleOp module =
      isa<ModuleOp>(op) ? cast<ModuleOp>(op) : op->getParentOfType<ModuleOp>();
  if (!module)
    return {};
  return module->getAttrOfType<TopologyAttr>(
      TAMoEDialect::getTopologyAttrName());
}

//===----------------------------------------------------------------------===//
// DispatchPlanAttr
//===----------------------------------------------------------------------===//

/// Rows of a plan sum to 1 up to this tolerance (the planner's arithmetic).
static constexpr double kRowSumTolerance = 1e-6;

LogicalResult
DispatchPlanAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                         PlanPolicy policy, DenseF64ArrayAttr shares,
                         DenseF64ArrayAttr matrix, llvm::APFloat predictedUs) {
  if (static_cast<bool>(shares) == static_cast<bool>(matrix))
    return emitError() << "dispatch plan needs exactly one of 'shares' and "
                          "'matrix'";
  DenseF64ArrayAttr values = shares ? shares : matrix;
  StringRef field = shares ? "shares" : "matrix";
  if (values.empty())
    return emitError() << "dispatch plan '" << field << "' is empty";
  for (double value : values.asArrayRef())
    if (!std::isfinite(value) || value < 0 || value > 1)
      return emitError() << "dispatch plan '" << field
                         << "' entries must be fractions in [0, 1], got "
                         << ::tamoe::formatNumber(value);
  if (matrix) {
    auto size = static_cast<int64_t>(matrix.size());
    auto ranks = static_cast<int64_t>(std::llround(std::sqrt(size)));
    if (ranks * ranks != size)
      return emitError() << "dispatch plan 'matrix' must hold P x P entries, "
                            "got "
                         << size;
    ArrayRef<double> entries = matrix.asArrayRef();
    for (int64_t row = 0; row < ranks; ++row) {
      double sum = 0;
      for (double value : entries.slice(row * ranks, ranks))
        sum += value;
      if (std::abs(sum - 1) > kRowSumTolerance)
        return emitError() << "dispatch plan 'matrix' row " << row
                           << " sums to " << ::tamoe::formatNumber(sum)
                           << ", expected 1";
    }
  }
  double predicted = predictedUs.convertToDouble();
  if (!std::isfinite(predicted) || predicted < 0)
    return emitError() << "dispatch plan 'predicted_us' must be >= 0, got "
                       << ::tamoe::formatNumber(predicted);
  return success();
}

LogicalResult DispatchPlanAttr::verifyAgainst(
    TopologyAttr topology, function_ref<InFlightDiagnostic()> emitError) const {
  topo::Topology tree = topology.toTopology();
  if (DenseF64ArrayAttr matrix = getMatrix()) {
    int64_t ranks = tree.numRanks();
    if (static_cast<int64_t>(matrix.size()) != ranks * ranks)
      return emitError() << "dispatch plan 'matrix' has " << matrix.size()
                         << " entries but topology '" << topology.getName()
                         << "' has " << ranks << " ranks (expected "
                         << ranks * ranks << ")";
    return success();
  }
  ArrayRef<double> shares = getShares().asArrayRef();
  if (shares.size() != tree.levels.size() + 1)
    return emitError() << "dispatch plan has " << shares.size()
                       << " shares but topology '" << topology.getName()
                       << "' has " << tree.levels.size() << " levels (expected "
                       << tree.levels.size() + 1 << ")";
  // A sender reaches ranksPerSubtree(l) - ranksPerSubtree(l - 1) ranks whose
  // lowest common ancestor with it is level l, each with shares[l + 1].
  double sum = shares[0];
  int64_t inner = 1;
  for (size_t level = 0; level < tree.levels.size(); ++level) {
    int64_t outer = tree.ranksPerSubtree(level);
    sum += shares[level + 1] * static_cast<double>(outer - inner);
    inner = outer;
  }
  if (!std::isfinite(sum) || std::abs(sum - 1) > kRowSumTolerance)
    return emitError() << "dispatch plan row sums to "
                       << ::tamoe::formatNumber(sum) << " on topology '"
                       << topology.getName() << "', expected 1";
  return success();
}
