//===- GradientKernels.cu - Backward and training ops of the cuda backend -===//
//
// gate_grad is a warp per token and combine_grad's weights a warp per
// assignment; combine_grad's expert rows, dedup_pack_grad and
// dedup_expand_grad run the pipelines of Pipelines.h (index steps, then a
// gather in the order tamoe_rt.h gives); grouped_matmul_grad is a cuBLAS
// GEMM per chunk; aux_loss_grad, sgd and adam are element-wise. Nothing
// adds floats with atomics, so every result is the same from run to run.
//
//===----------------------------------------------------------------------===//

#include "Exec.cuh"
#include "Optimizers.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace tamoe_rt {
namespace cuda {
namespace {

constexpr int kWarps = 4;

/// A grid of whole warps for `items` warps of work, a few per SM at most.
unsigned warpBlocks(int64_t items, int smCount) {
  int64_t blocks = (items + kWarps - 1) / kWarps;
  int64_t most = int64_t(smCount) * 16;
  return static_cast<unsigned>(blocks < most ? blocks : most);
}

/// An expert id in [0, experts): gate_grad's check of its ids.
struct ExpertIdInRange {
  const int32_t *ids;
  int64_t experts;
  DeviceStatus *status;
  __device__ void operator()(int64_t a) const {
    if (ids[a] < 0 || ids[a] >= experts)
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT, kExpertOutOfRange, a,
                  ids[a], experts);
  }
};

//===----------------------------------------------------------------------===//
// gate_grad
//===----------------------------------------------------------------------===//

struct GateGradParams {
  const float *probs;
  const int32_t *ids;
  int64_t tokens;
  int64_t experts, k;
  bool sigmoid, renormalize;
  const float *dWeights, *dProbs;
  float *dLogits;
};

/// One warp per token: g = d_probs plus each chosen weight's term, then
/// through the score's Jacobian. The renormalisation's sums run in slot
/// order on every lane, as on the host.
__global__ void __launch_bounds__(kWarps * 32)
    gateGradKernel(GateGradParams p, const DeviceStatus *status) {
  if (hasFailed(status))
    return;
  const int lane = threadIdx.x & 31;
  const int64_t E = p.experts, k = p.k;
  for (int64_t t = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
       t < p.tokens; t += int64_t(gridDim.x) * kWarps) {
    const float *probs = p.probs + t * E;
    const int32_t *ids = p.dWeights ? p.ids + t * k : nullptr;
    const float *dw = p.dWeights ? p.dWeights + t * k : nullptr;
    // w_j = p_j / s gives dp_m = (dw_m - sum_j dw_j w_j) / s.
    float s = 1.0f, dot = 0.0f;
    if (dw && p.renormalize) {
      // As the gate divided by: the sum, then the epsilon.
      s = 0.0f;
      for (int64_t j = 0; j < k; ++j)
        s += probs[ids[j]];
      s += TAMOE_RT_RENORMALIZE_EPSILON;
      for (int64_t j = 0; j < k; ++j)
        dot += dw[j] * (probs[ids[j]] / s);
    }
    auto g = [&](int64_t e) {
      float value = p.dProbs ? p.dProbs[t * E + e] : 0.0f;
      if (dw)
        for (int64_t j = 0; j < k; ++j)
          if (ids[j] == e)
            value += p.renormalize ? (dw[j] - dot) / s : dw[j];
      return value;
    };
    float *dx = p.dLogits + t * E;
    if (p.sigmoid) {
      for (int64_t e = lane; e < E; e += 32)
        dx[e] = g(e) * (probs[e] * (1.0f - probs[e]));
      continue;
    }
    float partial = 0.0f;
    for (int64_t e = lane; e < E; e += 32)
      partial += probs[e] * g(e);
    float total = warpSum(partial);
    for (int64_t e = lane; e < E; e += 32)
      dx[e] = probs[e] * (g(e) - total);
  }
}

//===----------------------------------------------------------------------===//
// combine_grad's weights
//===----------------------------------------------------------------------===//

/// One warp per assignment: d_weights[a] = d_combined[t] . the row it
/// named, 0 when it was dropped.
__global__ void __launch_bounds__(kWarps * 32) combineWeightsGradKernel(
    const float *__restrict__ outputs, const int32_t *__restrict__ positions,
    const float *__restrict__ dCombined, int64_t n, int64_t k, int64_t hidden,
    float *__restrict__ dWeights, const DeviceStatus *status) {
  if (hasFailed(status))
    return;
  const int lane = threadIdx.x & 31;
  for (int64_t a = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5); a < n;
       a += int64_t(gridDim.x) * kWarps) {
    int32_t position = positions[a];
    float partial = 0.0f;
    if (position >= 0) {
      const float *in = dCombined + a / k * hidden;
      const float *out = outputs + int64_t(position) * hidden;
      for (int64_t h = lane; h < hidden; h += 32)
        partial += in[h] * out[h];
    }
    float sum = warpSum(partial);
    if (lane == 0)
      dWeights[a] = sum;
  }
}

//===----------------------------------------------------------------------===//
// Element-wise steps
//===----------------------------------------------------------------------===//

/// aux_loss_grad: every token's row is counts[e] (* w_e) * scale * d_loss,
/// in the host's order of operations.
struct AuxLossGradElement {
  const int32_t *counts;
  const float *expertWeights;
  const float *dLoss;
  float scale;
  int64_t experts;
  float *dProbs;
  const DeviceStatus *status;
  __device__ void operator()(int64_t i) const {
    if (hasFailed(status))
      return;
    int64_t e = i % experts;
    float g = static_cast<float>(counts[e]);
    if (expertWeights)
      g = g * expertWeights[e];
    dProbs[i] = g * scale * *dLoss;
  }
};

struct SgdElement {
  float *params;
  const float *grads;
  float *velocity;
  float lr, momentum, weightDecay;
  __device__ void operator()(int64_t i) const {
    sgdStep(params[i], grads[i], velocity ? velocity + i : nullptr, lr,
            momentum, weightDecay);
  }
};

struct AdamElement {
  float *params;
  const float *grads;
  float *m, *v;
  AdamStep update;
  __device__ void operator()(int64_t i) const {
    update(params[i], grads[i], m[i], v[i]);
  }
};

struct DivideElement {
  float *data;
  float divisor;
  __device__ void operator()(int64_t i) const { data[i] /= divisor; }
};

} // namespace

//===----------------------------------------------------------------------===//
// Backend methods
//===----------------------------------------------------------------------===//

Status CudaBackend::gateGrad(const float *probs, const int32_t *expertIds,
                             intptr_t tokens, intptr_t experts, intptr_t k,
                             tamoe_rt_score_t score, bool renormalize,
                             const float *dWeights, const float *dProbs,
                             float *dLogits) {
  if (tokens < 0 || experts < 1 || k < 1 || k > experts)
    return invalid("tokens must be >= 0 and k in [1, experts]");
  int64_t cells, picks;
  if (!multiply(tokens, experts, cells) || !multiply(tokens, k, picks) ||
      !multiply(cells, 4, cells) || !multiply(picks, 4, picks))
    return invalid("sizes overflow");
  Frame frame(*this, {{probs, cells, "probs"},
                      {expertIds, dWeights ? picks : 0, "expert_ids"},
                      {dWeights, dWeights ? picks : 0, "d_weights"},
                      {dProbs, dProbs ? cells : 0, "d_probs"},
                      {dLogits, cells, "d_logits"}});
  if (!frame.ok())
    return frame.status();
  if (tokens == 0)
    return Status::success();
  return frame.run(
      [&](CudaExec &x) {
        if (dWeights)
          x.forEach(tokens * k,
                    ExpertIdInRange{expertIds, experts, deviceStatus_});
        if (x.ok()) {
          gateGradKernel<<<warpBlocks(tokens, smCount_), kWarps * 32, 0,
                           stream_>>>(
              GateGradParams{probs, expertIds, tokens, experts, k,
                             score == TAMOE_RT_SCORE_SIGMOID, renormalize,
                             dWeights, dProbs, dLogits},
              deviceStatus_);
          if (cudaError_t error = cudaGetLastError(); error != cudaSuccess)
            x.fail(cudaFailure(error, "launching the kernel"));
        }
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kExpertOutOfRange)
          return expertIdOutOfRange(e, k);
        return std::string();
      });
}

Status CudaBackend::combineGrad(const float *expertOutputs, intptr_t rows,
                                intptr_t hidden, const int32_t *positions,
                                const float *weights, intptr_t tokens,
                                intptr_t k, const float *dCombined,
                                float *dExpertOutputs, float *dWeights) {
  if (rows < 0 || hidden < 1 || tokens < 0 || k < 1)
    return invalid("rows and tokens must be >= 0; hidden and k >= 1");
  int64_t n, outputBytes, combinedBytes;
  if (!multiply(tokens, k, n) || n > INT_MAX - 1 || rows > INT_MAX - 1 ||
      !multiply(rows, hidden * 4, outputBytes) ||
      !multiply(tokens, hidden * 4, combinedBytes))
    return invalid("sizes exceed what the cuda backend takes (tokens * k "
                   "and rows below 2^31 - 1)");
  Frame frame(
      *this,
      {{expertOutputs, dWeights ? outputBytes : 0, "expert_outputs"},
       {positions, n * 4, "positions"},
       {weights, weights ? n * 4 : 0, "weights"},
       {dCombined, combinedBytes, "d_combined"},
       {dExpertOutputs, dExpertOutputs ? outputBytes : 0, "d_expert_outputs"},
       {dWeights, dWeights ? n * 4 : 0, "d_weights"}});
  if (!frame.ok())
    return frame.status();
  return frame.run(
      [&](CudaExec &x) {
        runCombineGrad(x,
                       CombineGradParams{rows, hidden, positions, weights,
                                         tokens, k, dCombined, dExpertOutputs});
        if (dWeights && n > 0 && x.ok()) {
          combineWeightsGradKernel<<<warpBlocks(n, smCount_), kWarps * 32, 0,
                                     stream_>>>(expertOutputs, positions,
                                                dCombined, n, k, hidden,
                                                dWeights, deviceStatus_);
          if (cudaError_t error = cudaGetLastError(); error != cudaSuccess)
            x.fail(cudaFailure(error, "launching the kernel"));
        }
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kPositionOutOfRange)
          return positionPastRows(e, k);
        return std::string();
      });
}

Status CudaBackend::groupedMatmulGrad(const float *rows, intptr_t rowsCapacity,
                                      intptr_t hidden, const int32_t *counts,
                                      intptr_t numCounts, intptr_t experts,
                                      const float *weights,
                                      intptr_t outFeatures,
                                      const float *dResult, float *dRows,
                                      float *dWeights) {
  return groupedMatmulGradElements(TAMOE_RT_F32, rows, rowsCapacity, hidden,
                                   counts, numCounts, experts, weights,
                                   outFeatures, dResult, dRows, dWeights);
}

Status CudaBackend::auxLossGrad(const int32_t *expertIds,
                                const int32_t *positions, intptr_t tokens,
                                intptr_t experts, intptr_t k,
                                const float *expertWeights, const float *dLoss,
                                float *dProbs) {
  int64_t probBytes, idBytes;
  if (Status sizes = auxBytes(tokens, experts, k, probBytes, idBytes);
      !sizes.ok())
    return sizes;
  Frame frame(*this, {{expertIds, idBytes, "expert_ids"},
                      {positions, positions ? idBytes : 0, "positions"},
                      {expertWeights, expertWeights ? experts * 4 : 0,
                       "expert_weights"},
                      {dLoss, 4, "d_loss"},
                      {dProbs, probBytes, "d_probs"}});
  if (!frame.ok())
    return frame.status();
  return frame.run(
      [&](CudaExec &x) {
        int32_t *counts = x.scratch<int32_t>(experts);
        x.zero(counts, experts * 4);
        x.forEach(tokens * k, CountAssignments{expertIds, positions, experts,
                                               counts, deviceStatus_});
        // The scale of aux_loss (E / (k S^2) in f32), so that the gradient is
        // the cpu backend's to the bit.
        float tokensF = static_cast<float>(tokens);
        float scale = static_cast<float>(experts) /
                      (static_cast<float>(k) * (tokensF * tokensF));
        x.forEach(tokens * experts,
                  AuxLossGradElement{counts, expertWeights, dLoss, scale,
                                     experts, dProbs, deviceStatus_});
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kExpertOutOfRange)
          return expertIdOutOfRange(e, k) + " (negative ids are not counted)";
        return std::string();
      });
}

Status CudaBackend::dedupPackGrad(const float *dUnique, intptr_t uniqueCapacity,
                                  intptr_t hidden, const int32_t *expertIds,
                                  const int32_t *positions, intptr_t numTokens,
                                  intptr_t k, intptr_t expertsPerNode,
                                  intptr_t nodes, float *dTokens) {
  if (uniqueCapacity < 0 || hidden < 1 || numTokens < 0 || k < 1 ||
      expertsPerNode < 1 || nodes < 1)
    return invalid("unique_capacity and num_tokens must be >= 0; the other "
                   "sizes >= 1");
  int64_t n, uniqueBytes, tokenBytes;
  if (!packFits(numTokens, k, expertsPerNode, nodes, n) ||
      !multiply(uniqueCapacity, hidden * 4, uniqueBytes) ||
      !multiply(numTokens, hidden * 4, tokenBytes))
    return invalid(packTooLarge());
  Frame frame(*this, {{dUnique, uniqueBytes, "d_unique"},
                      {expertIds, n * 4, "expert_ids"},
                      {positions, n * 4, "positions"},
                      {dTokens, tokenBytes, "d_tokens"}});
  if (!frame.ok())
    return frame.status();
  return frame.run(
      [&](CudaExec &x) {
        runDedupPackGrad(x,
                         DedupPackGradParams{dUnique, uniqueCapacity, hidden,
                                             expertIds, positions, numTokens, k,
                                             expertsPerNode, nodes, dTokens});
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kGradientRowsExceed)
          return "expert_ids and positions make " + num(e.a) +
                 " unique rows but unique_capacity is " + num(e.b);
        return packError(e, k, expertsPerNode, nodes);
      });
}

Status CudaBackend::dedupExpandGrad(const float *dExpanded,
                                    intptr_t expandedCapacity, intptr_t hidden,
                                    const int32_t *routes,
                                    intptr_t uniqueCapacity, intptr_t k,
                                    const int32_t *recvCounts, intptr_t nodes,
                                    intptr_t ranksPerNode,
                                    intptr_t expertsPerRank, float *dUnique) {
  if (expandedCapacity < 0 || hidden < 1 || uniqueCapacity < 0 || k < 1 ||
      nodes < 1 || ranksPerNode < 1 || expertsPerRank < 1)
    return invalid("expanded_capacity and unique_capacity must be >= 0; the "
                   "other sizes >= 1");
  int64_t m, keys, expandedBytes, uniqueBytes;
  if (!expandFits(uniqueCapacity, k, ranksPerNode, nodes, expertsPerRank, m,
                  keys) ||
      !multiply(expandedCapacity, hidden * 4, expandedBytes) ||
      !multiply(uniqueCapacity, hidden * 4, uniqueBytes))
    return invalid(expandTooLarge());
  Frame frame(*this, {{dExpanded, expandedBytes, "d_expanded"},
                      {routes, m * 4, "routes"},
                      {recvCounts, nodes * 4, "recv_counts"},
                      {dUnique, uniqueBytes, "d_unique"}});
  if (!frame.ok())
    return frame.status();
  return frame.run(
      [&](CudaExec &x) {
        runDedupExpandGrad(x, DedupExpandGradParams{
                                  dExpanded, expandedCapacity, hidden, routes,
                                  uniqueCapacity, k, recvCounts, nodes,
                                  ranksPerNode, expertsPerRank, dUnique});
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kGradientRowsExceed)
          return "routes make " + num(e.a) +
                 " expanded rows but expanded_capacity is " + num(e.b);
        return expandError(e, k);
      });
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

Status CudaBackend::sgd(float *params, const float *grads, float *velocity,
                        intptr_t n, float lr, float momentum,
                        float weightDecay) {
  int64_t bytes = int64_t(n) * 4;
  Frame frame(*this, {{params, bytes, "params"},
                      {grads, bytes, "grads"},
                      {velocity, velocity ? bytes : 0, "velocity"}});
  if (!frame.ok())
    return frame.status();
  return frame.run(
      [&](CudaExec &x) {
        x.forEach(
            n, SgdElement{params, grads, velocity, lr, momentum, weightDecay});
      },
      noMessage);
}

Status CudaBackend::adam(float *params, const float *grads, float *m, float *v,
                         intptr_t n, int64_t step, float lr, float beta1,
                         float beta2, float eps, float weightDecay) {
  int64_t bytes = int64_t(n) * 4;
  Frame frame(*this, {{params, bytes, "params"},
                      {grads, bytes, "grads"},
                      {m, bytes, "m"},
                      {v, bytes, "v"}});
  if (!frame.ok())
    return frame.status();
  return frame.run(
      [&](CudaExec &x) {
        x.forEach(
            n, AdamElement{params, grads, m, v,
                           AdamStep(step, lr, beta1, beta2, eps, weightDecay)});
      },
      noMessage);
}

Status CudaBackend::divide(float *data, int64_t n, float divisor) {
  // all_reduce's last step, outside a frame: a failure an earlier
  // operation left in the status word would stop the division.
  if (Status begun = beginOperation(); !begun.ok())
    return begun;
  CudaExec x(*this, deviceStatus_);
  x.forEach(n, DivideElement{data, divisor});
  return x.failure();
}

} // namespace cuda
} // namespace tamoe_rt
