//===- TAMoEDialect.cpp - tamoe dialect -----------------------------------===//

#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"

#include "mlir/IR/BuiltinOps.h"

using namespace mlir;
using namespace mlir::tamoe;

#include "tamoe/Dialect/TAMoE/IR/TAMoEOpsDialect.cpp.inc"

void TAMoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "tamoe/Dialect/TAMoE/IR/TAMoEOps.cpp.inc"
      >();
  registerAttributes();
}

LogicalResult TAMoEDialect::verifyOperationAttribute(Operation *op,
                                                     NamedAttribute attr) {
  if (attr.getName() != getTopologyAttrName())
    return op->emitError() << "unknown tamoe attribute '"
                           << attr.getName().getValue() << "'";
  if (!isa<TopologyAttr>(attr.getValue()))
    return op->emitError() << "'" << getTopologyAttrName()
                           << "' must be a #tamoe.topology attribute";
  if (!isa<ModuleOp>(op))
    return op->emitError() << "'" << getTopologyAttrName()
                           << "' belongs on a builtin.module";
  return success();
}
