//===- TAMoEDialect.cpp - tamoe dialect -----------------------------------===//

#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"

#include "mlir/IR/BuiltinOps.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::tamoe;

#include "tamoe/Dialect/TAMoE/IR/TAMoEOpsDialect.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "tamoe/Dialect/TAMoE/IR/TAMoEOpsTypes.cpp.inc"

void TAMoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "tamoe/Dialect/TAMoE/IR/TAMoEOps.cpp.inc"
      >();
  registerAttributes();
  addTypes<
#define GET_TYPEDEF_LIST
#include "tamoe/Dialect/TAMoE/IR/TAMoEOpsTypes.cpp.inc"
      >();
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
