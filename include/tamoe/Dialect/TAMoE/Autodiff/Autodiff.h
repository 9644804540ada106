//===- Autodiff.h - Gradient rules of upstream ops --------------*- C++ -*-===//
//
// External models of tamoe's VJPOpInterface for the upstream ops a layer is
// written with (linalg, arith, tensor), and the elementwise building blocks
// that the rules, tamoe-differentiate and the runtime lowering share.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_DIALECT_TAMOE_AUTODIFF_AUTODIFF_H
#define TAMOE_DIALECT_TAMOE_AUTODIFF_AUTODIFF_H

#include "tamoe/Dialect/TAMoE/IR/VJPOpInterface.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectRegistry.h"

#include <optional>

namespace mlir::tamoe {

/// Gives linalg.matmul, the elementwise linalg and arith ops, linalg.reduce
/// and linalg.broadcast (sums), and tensor reshapes, slices and casts their
/// gradient rules, and tamoe.chunk and tamoe.unchunk theirs (tamoe::
/// registerAllDialects calls it).
void registerVJPExternalModels(DialectRegistry &registry);
void registerArithVJPExternalModels(DialectRegistry &registry);
void registerLinalgVJPExternalModels(DialectRegistry &registry);
void registerTensorVJPExternalModels(DialectRegistry &registry);
void registerSchedulingVJPExternalModels(DialectRegistry &registry);

/// The elementwise computations that gradients are built from and that the
/// device-resident lowering runs as tamoe_rt_map.
enum class ElementwiseKind {
  Add,      // a + b
  Sub,      // a - b
  Mul,      // a * b
  Relu,     // max(a, 0)
  Neg,      // -a
  ReluGrad, // b where a > 0, else 0 (a: relu's input or output, b: gradient)
  Silu,     // a / (1 + exp(-a)), SwiGLU's gate
  SiluGrad  // b * s * (1 + a * (1 - s)), s = 1 / (1 + exp(-a)) (a: silu's
            // input, b: gradient)
};

/// One elementwise computation of a linalg.generic: its kind and its
/// operands in order (`b` null for unary kinds).
struct Elementwise {
  ElementwiseKind kind;
  Value a, b;
};

/// The elementwise computation a linalg.generic on tensors performs, when
/// it is one of ElementwiseKind: identity indexing maps, parallel loops, an
/// unread init and a body of that one op (as buildElementwise writes it).
std::optional<Elementwise> matchElementwise(linalg::GenericOp op);

/// Emits `kind` on tensors of one type: the named linalg op for add, sub
/// and mul, a linalg.generic for the others.
Value buildElementwise(OpBuilder &builder, Location loc, ElementwiseKind kind,
                       Value a, Value b = {});

/// Adds to `context` the gradients of the elementwise `kind` with operands
/// a and b (null for unary kinds) and `result`, for the result's gradient d.
LogicalResult addElementwiseVJP(OpBuilder &builder, Location loc,
                                VJPContext &context, ElementwiseKind kind,
                                Value a, Value b, Value result, Value d);

/// Whether a linalg.reduce's combiner is a sum: one arith.addf of its two
/// arguments.
bool isSumCombiner(Block &body);

/// A tensor.empty of `like`'s type and sizes.
Value buildEmptyLike(OpBuilder &builder, Location loc, Value like);

/// Zeros of `type` (tensor.empty filled with 0); dynamic dimension i has the
/// size of dimension sizes[i].second of the tensor sizes[i].first.
Value buildZeros(OpBuilder &builder, Location loc, RankedTensorType type,
                 ArrayRef<std::pair<Value, int64_t>> sizes);

/// Zeros of `like`'s type and sizes.
Value buildZerosLike(OpBuilder &builder, Location loc, Value like);

/// The sum of two tamoe.unchunk results of the same counts whose parts are,
/// index by index, zeros (buildZeros) on one side at least: one unchunk of
/// the other sides' parts. Null when they are not such a pair. How the
/// gradients of a whole's chunks add up without C full-size additions. The
/// two are left in place: the caller may still hold them (a rule adds one
/// gradient to several operands), and erases them with eraseDeadUnchunk
/// once it does not.
Value mergeDisjointUnchunks(OpBuilder &builder, Value a, Value b);

/// Erases the tamoe.unchunk `op` if nothing reads it, then the zero fills
/// (and their empties) it read that nothing else reads.
void eraseDeadUnchunk(Operation *op);

} // namespace mlir::tamoe

#endif // TAMOE_DIALECT_TAMOE_AUTODIFF_AUTODIFF_H
