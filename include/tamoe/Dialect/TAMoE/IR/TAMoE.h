//===- TAMoE.h - tamoe dialect, attributes and ops --------------*- C++ -*-===//

#ifndef TAMOE_DIALECT_TAMOE_IR_TAMOE_H
#define TAMOE_DIALECT_TAMOE_IR_TAMOE_H

#include "tamoe/Dialect/TAMoE/IR/VJPOpInterface.h"
#include "tamoe/Topology/Topology.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace mlir::tamoe {
/// Parses an attribute parameter written as a float literal.
FailureOr<llvm::APFloat> parseF64Parameter(AsmParser &parser);
} // namespace mlir::tamoe

#include "tamoe/Dialect/TAMoE/IR/TAMoEEnums.h.inc"

#include "tamoe/Dialect/TAMoE/IR/TAMoEOpsDialect.h.inc"

#define GET_ATTRDEF_CLASSES
#include "tamoe/Dialect/TAMoE/IR/TAMoEAttrs.h.inc"

#define GET_TYPEDEF_CLASSES
#include "tamoe/Dialect/TAMoE/IR/TAMoEOpsTypes.h.inc"

#define GET_OP_CLASSES
#include "tamoe/Dialect/TAMoE/IR/TAMoEOps.h.inc"

#endif // TAMOE_DIALECT_TAMOE_IR_TAMOE_H
