//===- VJPOpInterface.td - Reverse-mode gradient rules -----*- tablegen -*-===//

#ifndef TAMOE_DIALECT_TAMOE_IR_VJPOPINTERFACE_TD
#define TAMOE_DIALECT_TAMOE_IR_VJPOPINTERFACE_TD

include "mlir/IR/OpBase.td"

def TAMoE_VJPOpInterface : OpInterface<"VJPOpInterface"> {
  let description = [{
    An op's vector-Jacobian product (its reverse-mode gradient rule), built
    in IR. Given the gradients of the op's results, the rule emits the ops
    that compute the gradients of its operands and hands them to the
    caller's `VJPContext`, which owns the rest of the reverse pass: where
    the forward values come from (saved by the forward function, or rebuilt
    when cheap), how gradients of one value are summed, and which operands
    need one at all.

    tamoe's ops implement the interface; external models give it to the
    upstream ops a layer is written with (`linalg`, `arith`, `tensor`), as
    frameworks attach a custom VJP to an op. `tamoe-differentiate` and a
    host compiler's own reverse pass call the same rules.
  }];
  let cppNamespace = "::mlir::tamoe";
  let methods = [
    InterfaceMethod<[{
        Emits, at the builder's insertion point (in the reverse function),
        the gradients of this op's operands from the gradients of its
        results (`context.cotangent(result)`, null where a result has
        none), and adds them with `context.addCotangent(operand, value)`.
        Forward values are read through `context.primal(value)`, which
        records what the forward must save. Fails with a diagnostic on the
        op when it cannot be differentiated as it is.
      }],
      "::llvm::LogicalResult", "buildVJP",
      (ins "::mlir::OpBuilder &":$builder,
           "::mlir::tamoe::VJPContext &":$context)>
  ];
}

#endif // TAMOE_DIALECT_TAMOE_IR_VJPOPINTERFACE_TD
