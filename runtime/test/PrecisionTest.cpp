//===- PrecisionTest.cpp - bf16 and f16 rows in the runtime ---------------===//
//
// tamoe_rt_convert against hand-computed bit patterns (rounding to nearest
// even, overflow, NaN, in place), its argument errors, and every operation
// that takes a tamoe_rt_dtype_t: at bf16 and f16 its result must be,
// bit for bit, the f32 operation on the same (rounded) inputs, rounded once.
// A backend that read the half-precision buffers as f32, or rounded
// intermediate sums, would fail these.
//
//===----------------------------------------------------------------------===//

#include "Fixture.h"
#include "Reference.h"
#include "tamoe_rt/tamoe_rt.h"

#include "gtest/gtest.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

using namespace runtime_test;
using reference::Random;

namespace {

using Halves = std::vector<uint16_t>;

float fromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

class Precision : public Runtime {
protected:
  /// `values` converted to `type` (bf16 or f16) by the runtime.
  Halves narrow(tamoe_rt_dtype_t type, const std::vector<float> &values) {
    Halves out(values.size());
    EXPECT_EQ(tamoe_rt_convert(ctx, TAMOE_RT_F32, values.data(), type,
                               out.data(), intptr_t(values.size())),
              TAMOE_RT_SUCCESS)
        << error();
    return out;
  }
  std::vector<float> widen(tamoe_rt_dtype_t type, const Halves &values) {
    std::vector<float> out(values.size());
    EXPECT_EQ(tamoe_rt_convert(ctx, type, values.data(), TAMOE_RT_F32,
                               out.data(), intptr_t(values.size())),
              TAMOE_RT_SUCCESS)
        << error();
    return out;
  }
  /// The values `type` can hold nearest to `values`: the f32 inputs of the
  /// operation that a half-precision one must match.
  std::vector<float> rounded(tamoe_rt_dtype_t type,
                             const std::vector<float> &values) {
    return widen(type, narrow(type, values));
  }
  /// That a half-precision result is the f32 result rounded once.
  void expectRounded(tamoe_rt_dtype_t type, const Halves &got,
                     const std::vector<float> &f32, const char *what) {
    Halves expected = narrow(type, f32);
    ASSERT_EQ(got.size(), expected.size()) << what;
    int mismatches = 0;
    for (size_t i = 0; i < got.size() && mismatches < 5; ++i)
      if (got[i] != expected[i]) {
        ++mismatches;
        ADD_FAILURE() << what << "[" << i << "] = 0x" << std::hex << got[i]
                      << ", the rounded f32 result is 0x" << expected[i];
      }
  }
};

const tamoe_rt_dtype_t kHalfTypes[] = {TAMOE_RT_BF16, TAMOE_RT_F16};

} // namespace

TEST_F(Precision, ConvertRoundsToNearestEven) {
  // 1 + 2^-8 lies halfway between bf16's 1 and 1 + 2^-7: ties go to the
  // even one (1); 1 + 3 * 2^-8 to 1 + 2^-6; just above a tie rounds up.
  std::vector<float> values = {
      1.0f,  1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f,
      -2.5f, FLT_MAX,        -FLT_MAX,           INFINITY,
      0.0f,  -0.0f};
  EXPECT_EQ(narrow(TAMOE_RT_BF16, values),
            (Halves{0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc020, 0x7f80, 0xff80,
                    0x7f80, 0x0000, 0x8000}));
  // f16: 1 + 2^-11 is a tie (to 1), 65504 the largest finite, 65520 the
  // first value that rounds past it, 2^-25 a tie with zero.
  std::vector<float> halfValues = {
      1.0f,     1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f,
      65504.0f, 65520.0f,        -1e6f,
      0x1p-24f, 0x1p-25f,        0.1f};
  EXPECT_EQ(narrow(TAMOE_RT_F16, halfValues),
            (Halves{0x3c00, 0x3c00, 0x3c02, 0x7bff, 0x7c00, 0xfc00, 0x0001,
                    0x0000, 0x2e66}));
  // Widening is exact.
  EXPECT_EQ(widen(TAMOE_RT_BF16, {0x3f81, 0xc020, 0x0001}),
            (std::vector<float>{1.0078125f, -2.5f, fromBits(0x00010000)}));
  EXPECT_EQ(widen(TAMOE_RT_F16, {0x3c01, 0x7bff, 0x0001}),
            (std::vector<float>{1.0f + 0x1p-10f, 65504.0f, 0x1p-24f}));
  // NaN stays NaN, whatever its payload.
  for (tamoe_rt_dtype_t type : kHalfTypes) {
    Halves nan = narrow(type, {NAN, fromBits(0x7f800001), -NAN});
    for (float value : widen(type, nan))
      EXPECT_TRUE(std::isnan(value)) << "type " << type;
  }
}

TEST_F(Precision, ConvertInPlaceAndBetweenHalfTypes) {
  // bf16 -> f16 in one buffer: each element is read before its slot is
  // written. 3.0 and 0.5 are exact in both.
  Halves buffer = narrow(TAMOE_RT_BF16, {3.0f, 0.5f, -1.0f, 1.0f + 0x1p-7f});
  ASSERT_EQ(tamoe_rt_convert(ctx, TAMOE_RT_BF16, buffer.data(), TAMOE_RT_F16,
                             buffer.data(), 4),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(widen(TAMOE_RT_F16, buffer),
            (std::vector<float>{3.0f, 0.5f, -1.0f, 1.0f + 0x1p-7f}));
  // f32 -> f32 is a copy.
  std::vector<float> a = {1.5f, -2.0f}, b(2);
  ASSERT_EQ(
      tamoe_rt_convert(ctx, TAMOE_RT_F32, a.data(), TAMOE_RT_F32, b.data(), 2),
      TAMOE_RT_SUCCESS);
  EXPECT_EQ(a, b);
}

TEST_F(Precision, ConvertErrors) {
  std::vector<float> values(8, 1.0f);
  Halves halves(8);
  auto expect = [&](tamoe_rt_status_t status, const std::string &message) {
    EXPECT_EQ(status, TAMOE_RT_ERROR_INVALID_ARGUMENT) << message;
    EXPECT_EQ(error(), "tamoe_rt_convert: " + message);
  };
  expect(tamoe_rt_convert(ctx, tamoe_rt_dtype_t(7), values.data(),
                          TAMOE_RT_BF16, halves.data(), 8),
         "src_type = 7 is not a tamoe_rt_dtype_t");
  expect(tamoe_rt_convert(ctx, TAMOE_RT_F32, values.data(),
                          tamoe_rt_dtype_t(-1), halves.data(), 8),
         "dst_type = -1 is not a tamoe_rt_dtype_t");
  expect(tamoe_rt_convert(ctx, TAMOE_RT_F32, values.data(), TAMOE_RT_BF16,
                          halves.data(), -1),
         "n must be >= 0, got -1");
  expect(tamoe_rt_convert(ctx, TAMOE_RT_F32, nullptr, TAMOE_RT_BF16,
                          halves.data(), 8),
         "src is null");
  expect(tamoe_rt_convert(ctx, TAMOE_RT_F32, values.data(), TAMOE_RT_BF16,
                          nullptr, 8),
         "dst is null");
  // Narrowing in place would overwrite elements not read yet.
  expect(tamoe_rt_convert(ctx, TAMOE_RT_F32, values.data(), TAMOE_RT_BF16,
                          values.data(), 8),
         "src and dst overlap");
  expect(tamoe_rt_convert(ctx, TAMOE_RT_BF16, halves.data() + 1, TAMOE_RT_F16,
                          halves.data(), 4),
         "src and dst overlap");
  EXPECT_EQ(
      tamoe_rt_convert(ctx, TAMOE_RT_F32, nullptr, TAMOE_RT_BF16, nullptr, 0),
      TAMOE_RT_SUCCESS);
  // Every operation that takes a type checks it.
  EXPECT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_RELU, tamoe_rt_dtype_t(3),
                         values.data(), nullptr, 8, values.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_map: dtype = 3 is not a tamoe_rt_dtype_t");
  EXPECT_EQ(tamoe_rt_matmul(ctx, TAMOE_RT_F32, tamoe_rt_dtype_t(9),
                            TAMOE_RT_F32, values.data(), values.data(), 2, 2, 2,
                            0, 0, nullptr, values.data() + 4),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_matmul: b_type = 9 is not a tamoe_rt_dtype_t");
  EXPECT_EQ(tamoe_rt_combine(ctx, tamoe_rt_dtype_t(4), values.data(), 1, 1,
                             nullptr, nullptr, 0, 1, nullptr),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_combine: dtype = 4 is not a tamoe_rt_dtype_t");
  // Overlap is judged by the buffers' own bytes: two adjacent bf16 matrices
  // do not overlap although their f32 sizes would.
  Halves ab = narrow(TAMOE_RT_BF16, std::vector<float>(8, 1.0f));
  EXPECT_EQ(tamoe_rt_matmul(ctx, TAMOE_RT_BF16, TAMOE_RT_BF16, TAMOE_RT_BF16,
                            ab.data(), ab.data(), 2, 2, 2, 0, 0, nullptr,
                            ab.data() + 4),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(widen(TAMOE_RT_BF16, Halves(ab.begin() + 4, ab.end())),
            std::vector<float>(4, 2.0f));
}

TEST_F(Precision, CombineIsTheRoundedF32Combine) {
  Random random(401);
  int64_t rows = 9, hidden = 5, tokens = 4, k = 2;
  std::vector<int32_t> positions = {0, 3, 8, -1, 2, 5, 7, 1};
  std::vector<float> weights = random.floats(tokens * k, 0, 1);
  std::vector<float> outputs = random.floats(rows * hidden);
  for (tamoe_rt_dtype_t type : kHalfTypes) {
    SCOPED_TRACE(testing::Message() << "dtype " << type);
    std::vector<float> f32(tokens * hidden);
    ASSERT_EQ(tamoe_rt_combine(ctx, TAMOE_RT_F32, rounded(type, outputs).data(),
                               rows, hidden, positions.data(), weights.data(),
                               tokens, k, f32.data()),
              TAMOE_RT_SUCCESS)
        << error();
    Halves in = narrow(type, outputs), got(tokens * hidden);
    ASSERT_EQ(tamoe_rt_combine(ctx, type, in.data(), rows, hidden,
                               positions.data(), weights.data(), tokens, k,
                               got.data()),
              TAMOE_RT_SUCCESS)
        << error();
    expectRounded(type, got, f32, "combined");

    // Its gradient: d_expert_outputs of the type, d_weights f32.
    std::vector<float> dCombined = random.floats(tokens * hidden);
    std::vector<float> dOutputs(rows * hidden), dWeights(tokens * k);
    ASSERT_EQ(tamoe_rt_combine_grad(ctx, TAMOE_RT_F32,
                                    rounded(type, outputs).data(), rows, hidden,
                                    positions.data(), weights.data(), tokens, k,
                                    rounded(type, dCombined).data(),
                                    dOutputs.data(), dWeights.data()),
              TAMOE_RT_SUCCESS)
        << error();
    Halves dIn = narrow(type, dCombined), dOut(rows * hidden);
    std::vector<float> dW(tokens * k);
    ASSERT_EQ(tamoe_rt_combine_grad(ctx, type, in.data(), rows, hidden,
                                    positions.data(), weights.data(), tokens, k,
                                    dIn.data(), dOut.data(), dW.data()),
              TAMOE_RT_SUCCESS)
        << error();
    expectRounded(type, dOut, dOutputs, "d_expert_outputs");
    EXPECT_EQ(dW, dWeights);
  }
}

TEST_F(Precision, GroupedMatmulIsTheRoundedF32GroupedMatmul) {
  Random random(402);
  int64_t hidden = 6, out = 5, experts = 2, capacity = 12;
  std::vector<int32_t> counts = {3, 0, 2, 4, 0, 1};
  std::vector<float> rows = random.floats(capacity * hidden);
  std::vector<float> weights = random.floats(experts * hidden * out);
  std::vector<float> dResult = random.floats(capacity * out);
  for (tamoe_rt_dtype_t type : kHalfTypes) {
    SCOPED_TRACE(testing::Message() << "dtype " << type);
    std::vector<float> x = rounded(type, rows), w = rounded(type, weights),
                       dy = rounded(type, dResult);
    std::vector<float> f32(capacity * out);
    ASSERT_EQ(tamoe_rt_grouped_matmul(ctx, TAMOE_RT_F32, x.data(), capacity,
                                      hidden, counts.data(), 6, experts,
                                      w.data(), out, f32.data()),
              TAMOE_RT_SUCCESS)
        << error();
    Halves xh = narrow(type, rows), wh = narrow(type, weights),
           got(capacity * out);
    ASSERT_EQ(tamoe_rt_grouped_matmul(ctx, type, xh.data(), capacity, hidden,
                                      counts.data(), 6, experts, wh.data(), out,
                                      got.data()),
              TAMOE_RT_SUCCESS)
        << error();
    expectRounded(type, got, f32, "result");

    std::vector<float> dx(capacity * hidden), dw(experts * hidden * out);
    ASSERT_EQ(tamoe_rt_grouped_matmul_grad(
                  ctx, TAMOE_RT_F32, x.data(), capacity, hidden, counts.data(),
                  6, experts, w.data(), out, dy.data(), dx.data(), dw.data()),
              TAMOE_RT_SUCCESS)
        << error();
    Halves dyh = narrow(type, dResult), dxh(capacity * hidden),
           dwh(experts * hidden * out);
    ASSERT_EQ(tamoe_rt_grouped_matmul_grad(
                  ctx, type, xh.data(), capacity, hidden, counts.data(), 6,
                  experts, wh.data(), out, dyh.data(), dxh.data(), dwh.data()),
              TAMOE_RT_SUCCESS)
        << error();
    expectRounded(type, dxh, dx, "d_rows");
    expectRounded(type, dwh, dw, "d_weights");
  }
}

TEST_F(Precision, MatmulTakesATypePerOperand) {
  Random random(403);
  int64_t m = 4, k = 7, n = 3;
  std::vector<float> a = random.floats(m * k), b = random.floats(k * n);
  // bf16 tokens times a bf16 router into f32 logits: only the inputs round.
  std::vector<float> logits(m * n), expected(m * n);
  ASSERT_EQ(tamoe_rt_matmul(ctx, TAMOE_RT_BF16, TAMOE_RT_BF16, TAMOE_RT_F32,
                            narrow(TAMOE_RT_BF16, a).data(),
                            narrow(TAMOE_RT_BF16, b).data(), m, k, n, 0, 0,
                            nullptr, logits.data()),
            TAMOE_RT_SUCCESS)
      << error();
  ASSERT_EQ(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                            rounded(TAMOE_RT_BF16, a).data(),
                            rounded(TAMOE_RT_BF16, b).data(), m, k, n, 0, 0,
                            nullptr, expected.data()),
            TAMOE_RT_SUCCESS);
  EXPECT_EQ(logits, expected);
  // An f32 gradient times a transposed f16 operand, accumulated into an f16
  // c_init in place (c may be c_init).
  std::vector<float> dLogits = random.floats(m * n),
                     init = random.floats(m * k);
  std::vector<float> f32 = rounded(TAMOE_RT_F16, init);
  std::vector<float> bRounded = rounded(TAMOE_RT_F16, b);
  ASSERT_EQ(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                            dLogits.data(), bRounded.data(), m, n, k, 0, 1,
                            f32.data(), f32.data()),
            TAMOE_RT_SUCCESS);
  Halves c = narrow(TAMOE_RT_F16, init), bh = narrow(TAMOE_RT_F16, b);
  ASSERT_EQ(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F16, TAMOE_RT_F16,
                            dLogits.data(), bh.data(), m, n, k, 0, 1, c.data(),
                            c.data()),
            TAMOE_RT_SUCCESS)
      << error();
  expectRounded(TAMOE_RT_F16, c, f32, "c");
}

TEST_F(Precision, MapIsTheRoundedF32Map) {
  Random random(404);
  int64_t n = 33;
  std::vector<float> a = random.floats(n), b = random.floats(n);
  for (tamoe_rt_dtype_t type : kHalfTypes)
    for (tamoe_rt_map_t op :
         {TAMOE_RT_MAP_ADD, TAMOE_RT_MAP_SUB, TAMOE_RT_MAP_MUL,
          TAMOE_RT_MAP_RELU, TAMOE_RT_MAP_NEG, TAMOE_RT_MAP_RELU_GRAD,
          TAMOE_RT_MAP_SILU, TAMOE_RT_MAP_SILU_GRAD}) {
      SCOPED_TRACE(testing::Message() << "dtype " << type << ", op " << op);
      std::vector<float> f32 = rounded(type, a), y = rounded(type, b);
      ASSERT_EQ(tamoe_rt_map(ctx, op, TAMOE_RT_F32, f32.data(), y.data(), n,
                             f32.data()),
                TAMOE_RT_SUCCESS);
      // In place, as the f32 map allows: out is a.
      Halves x = narrow(type, a), yh = narrow(type, b);
      ASSERT_EQ(tamoe_rt_map(ctx, op, type, x.data(), yh.data(), n, x.data()),
                TAMOE_RT_SUCCESS)
          << error();
      expectRounded(type, x, f32, "out");
    }
}

TEST_F(Precision, DedupGradientsAreTheRoundedF32Sums) {
  Random random(405);
  int64_t hidden = 3;
  // dedup_pack_grad: 4 tokens, top-2 over 2 nodes of 4 experts: 6 rows.
  std::vector<int32_t> ids = {0, 4, 1, 2, 5, 6, 3, 7};
  std::vector<int32_t> positions = {0, 1, 2, -1, 3, 4, 5, 6};
  std::vector<float> dUnique = random.floats(6 * hidden);
  // dedup_expand_grad: 3 rows from 2 nodes to 2 ranks of 2 experts: 5 rows.
  std::vector<int32_t> routes = {0, 3, 1, -1, 2, 0};
  std::vector<int32_t> recvCounts = {2, 1};
  std::vector<float> dExpanded = random.floats(5 * hidden);
  for (tamoe_rt_dtype_t type : kHalfTypes) {
    SCOPED_TRACE(testing::Message() << "dtype " << type);
    std::vector<float> tokens(4 * hidden);
    ASSERT_EQ(tamoe_rt_dedup_pack_grad(
                  ctx, TAMOE_RT_F32, rounded(type, dUnique).data(), 6, hidden,
                  ids.data(), positions.data(), 4, 2, 4, 2, tokens.data()),
              TAMOE_RT_SUCCESS)
        << error();
    Halves tokensHalf(4 * hidden);
    ASSERT_EQ(tamoe_rt_dedup_pack_grad(ctx, type, narrow(type, dUnique).data(),
                                       6, hidden, ids.data(), positions.data(),
                                       4, 2, 4, 2, tokensHalf.data()),
              TAMOE_RT_SUCCESS)
        << error();
    expectRounded(type, tokensHalf, tokens, "d_tokens");

    std::vector<float> unique(3 * hidden);
    ASSERT_EQ(tamoe_rt_dedup_expand_grad(
                  ctx, TAMOE_RT_F32, rounded(type, dExpanded).data(), 5, hidden,
                  routes.data(), 3, 2, recvCounts.data(), 2, 2, 2,
                  unique.data()),
              TAMOE_RT_SUCCESS)
        << error();
    Halves uniqueHalf(3 * hidden);
    ASSERT_EQ(tamoe_rt_dedup_expand_grad(
                  ctx, type, narrow(type, dExpanded).data(), 5, hidden,
                  routes.data(), 3, 2, recvCounts.data(), 2, 2, 2,
                  uniqueHalf.data()),
              TAMOE_RT_SUCCESS)
        << error();
    expectRounded(type, uniqueHalf, unique, "d_unique");
  }
}
