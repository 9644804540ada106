//===- VJPOpInterface.h - Reverse-mode gradient rules -----------*- C++ -*-===//
//
// The interface through which an op builds its vector-Jacobian product, and
// the context a reverse pass gives it (docs/autodiff.md).
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_DIALECT_TAMOE_IR_VJPOPINTERFACE_H
#define TAMOE_DIALECT_TAMOE_IR_VJPOPINTERFACE_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpDefinition.h"

namespace mlir::tamoe {

/// What a gradient rule sees of the reverse pass that calls it. Values are
/// those of the forward op being differentiated (its operands and
/// results); the context maps them to the reverse function.
class VJPContext {
public:
  virtual ~VJPContext() = default;

  /// `value` of the forward computation as the reverse code may use it at
  /// the builder's insertion point: a value the forward saved for the
  /// backward, or rebuilt there when that is free (constants, this rank's
  /// index). Every call can add to what the forward saves, so a rule asks
  /// only for what it uses.
  virtual Value primal(Value value) = 0;

  /// The gradient accumulated for the op's result `value`, or null when it
  /// has none (it is zero).
  virtual Value cotangent(Value value) = 0;

  /// Whether the operand `value` needs a gradient (it depends on a
  /// differentiated input); a rule may skip the work for those that do not.
  virtual bool needsCotangent(Value value) = 0;

  /// Adds `gradient` (of `value`'s type, or a cast-compatible one) to the
  /// gradient of the operand `value`. Ignored when the operand needs none.
  virtual void addCotangent(Value value, Value gradient) = 0;
};

} // namespace mlir::tamoe

#include "tamoe/Dialect/TAMoE/IR/VJPOpInterface.h.inc"

#endif // TAMOE_DIALECT_TAMOE_IR_VJPOPINTERFACE_H
