//===- NarrowFloats.h - bf16 and f16 arithmetic in f32 ----------*- C++ -*-===//
//
// With host loops, upstream's lowering computes bf16 and f16 arithmetic in
// the narrow type, rounding after every operation. The runtime (and cuBLAS,
// and PyTorch) computes in f32 and rounds each result once. convert-tamoe-
// to-runtime rewrites such arithmetic to do the same, so that the host-loop
// and device-resident lowerings of one program agree.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_LIB_DIALECT_TAMOE_TRANSFORMS_NARROWFLOATS_H
#define TAMOE_LIB_DIALECT_TAMOE_TRANSFORMS_NARROWFLOATS_H

#include "mlir/IR/BuiltinOps.h"

namespace mlir::tamoe {

/// Rewrites, in `module`, the linalg ops on bf16 or f16 tensors that would
/// round more than once per result element to compute in f32 between one
/// arith.extf of their operands and one arith.truncf of their results: a
/// linalg.matmul and a linalg.reduce of arith.addf (sums), and an
/// elementwise linalg.generic whose body takes more than one rounding step
/// (silu, its gradient).
void computeNarrowFloatsInF32(ModuleOp module);

} // namespace mlir::tamoe

#endif // TAMOE_LIB_DIALECT_TAMOE_TRANSFORMS_NARROWFLOATS_H
