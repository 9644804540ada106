//===- Precision.h - Rows of bf16 and f16 on f32 primitives -----*- C++ -*-===//
//
// The backends' compute primitives take f32 rows. An entry point given rows
// of another tamoe_rt_dtype_t stages them: F32Staging converts each input
// into f32 scratch memory of the backend (Backend::convert), hands the
// primitive f32 buffers for its outputs and converts those back once it
// succeeded. So every backend computes bf16 and f16 with f32 accumulation
// and one rounding per output element, and an f32 buffer passes through
// untouched (no scratch, no copy). A backend with native low-precision
// kernels takes its buffers before the staging does.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_PRECISION_H
#define TAMOE_RT_LIB_PRECISION_H

#include "Backend.h"

#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

namespace tamoe_rt {

/// Bytes of one element of `type`, 0 when it is not a tamoe_rt_dtype_t.
intptr_t dtypeBytes(int type);

/// bf16 is the high half of an f32: rounding adds half an ulp of the kept
/// half (less one when the kept half is even, so ties go to even); a carry
/// out of the mantissa rounds up the exponent, to infinity past the largest
/// finite value. NaNs are kept quiet.
inline uint16_t floatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}
inline float bf16ToFloat(uint16_t half) {
  uint32_t bits = uint32_t(half) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}
/// The compiler's IEEE binary16 conversions (round to nearest even).
inline uint16_t floatToF16(float value) {
  _Float16 half = static_cast<_Float16>(value);
  uint16_t bits;
  std::memcpy(&bits, &half, sizeof(bits));
  return bits;
}
inline float f16ToFloat(uint16_t bits) {
  _Float16 half;
  std::memcpy(&half, &bits, sizeof(half));
  return static_cast<float>(half);
}

class F32Staging {
public:
  explicit F32Staging(Backend &backend) : backend(backend) {}
  ~F32Staging();
  F32Staging(const F32Staging &) = delete;
  F32Staging &operator=(const F32Staging &) = delete;

  /// An f32 view of `elements` elements of `type` at `data` (null stays
  /// null).
  const float *in(tamoe_rt_dtype_t type, const void *data, intptr_t elements);
  /// An f32 buffer for an output of `elements` of `type` at `data`, written
  /// back there by `run` (null stays null).
  float *out(tamoe_rt_dtype_t type, void *data, intptr_t elements);
  /// Runs `primitive` on the staged buffers, unless staging failed, then
  /// converts the outputs back.
  Status run(const std::function<Status()> &primitive);

private:
  float *scratch(intptr_t elements);

  struct Output {
    const float *staged;
    void *data;
    tamoe_rt_dtype_t type;
    intptr_t elements;
  };
  Backend &backend;
  Status failure;
  std::vector<void *> buffers;
  std::vector<Output> outputs;
};

} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_PRECISION_H
