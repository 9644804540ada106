//===- Kernels.cu - Local operations of the cuda backend ------------------===//
//
// gate, combine and aux_loss have kernels of their own; dispatch, regroup,
// dedup_pack and dedup_expand run the pipelines of Pipelines.h on CudaExec,
// which maps them onto grid-stride kernels, CUB sorts and scans, and a
// vectorised row copy.
//
//===----------------------------------------------------------------------===//

#include "Exec.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace tamoe_rt {
namespace cuda {
namespace {

//===----------------------------------------------------------------------===//
// gate
//===----------------------------------------------------------------------===//

struct GateParams {
  const float *logits;
  int64_t tokens;
  int experts;
  int k;
  tamoe_rt_score_t score;
  bool renormalize;
  int groups; // 0: no group limit
  int groupsKept;
  int32_t *ids;
  float *weights;
  float *probs;
};

constexpr int kGateWarps = 4;

/// Whether (v, i) beats the best so far (bv, bi): the higher rank
/// (rankOf), the lower index on ties; bi < 0 means nothing yet.
__device__ inline bool beats(float v, int i, float bv, int bi) {
  float rank = rankOf(v), best = rankOf(bv);
  return bi < 0 || rank > best || (rank == best && i < bi);
}

/// Every lane ends with the warp's best (value, index).
__device__ inline void warpArgMax(float &value, int &index) {
  for (int offset = 16; offset > 0; offset /= 2) {
    float otherValue = __shfl_xor_sync(0xffffffffu, value, offset);
    int otherIndex = __shfl_xor_sync(0xffffffffu, index, offset);
    if (otherIndex >= 0 && beats(otherValue, otherIndex, value, index)) {
      value = otherValue;
      index = otherIndex;
    }
  }
}

__device__ inline float warpMax(float value) {
  for (int offset = 16; offset > 0; offset /= 2)
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

/// One warp per token. The token's scores, group scores and "taken" flags
/// live in a per-warp workspace (shared memory, or global memory when the
/// experts do not fit): scores [experts] floats, group scores [groups]
/// floats, then experts + groups flag bytes.
__global__ void __launch_bounds__(kGateWarps * 32)
    gateKernel(GateParams p, float *globalWorkspace, int64_t workspaceFloats,
               const DeviceStatus *status) {
  extern __shared__ float sharedWorkspace[];
  if (hasFailed(status))
    return;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int64_t slot = int64_t(blockIdx.x) * kGateWarps + warp;
  float *scores = globalWorkspace
                      ? globalWorkspace + slot * workspaceFloats
                      : sharedWorkspace + int64_t(warp) * workspaceFloats;
  const int E = p.experts, G = p.groups;
  float *groupScores = scores + E;
  unsigned char *taken = reinterpret_cast<unsigned char *>(groupScores + G);

  for (int64_t t = slot; t < p.tokens; t += int64_t(gridDim.x) * kGateWarps) {
    const float *logits = p.logits + t * E;
    float *probs = p.probs + t * E;
    if (p.score == TAMOE_RT_SCORE_SOFTMAX) {
      // Subtract the row maximum so exp cannot overflow.
      float maximum = -INFINITY;
      for (int e = lane; e < E; e += 32)
        maximum = fmaxf(maximum, logits[e]);
      maximum = warpMax(maximum);
      float sum = 0.0f;
      for (int e = lane; e < E; e += 32) {
        float x = expf(logits[e] - maximum);
        scores[e] = x;
        sum += x;
      }
      sum = warpSum(sum);
      for (int e = lane; e < E; e += 32) {
        float prob = scores[e] / sum;
        scores[e] = prob;
        probs[e] = prob;
      }
    } else {
      for (int e = lane; e < E; e += 32) {
        float prob = 1.0f / (1.0f + expf(-logits[e]));
        scores[e] = prob;
        probs[e] = prob;
      }
    }
    for (int e = lane; e < E + G; e += 32)
      taken[e] = 0;
    __syncwarp();

    if (G > 0) {
      // Group score: the sum of the group's two best scores (its best for
      // groups of one), as in DeepSeek-V3.
      const int perGroup = E / G;
      for (int g = lane; g < G; g += 32) {
        float first = -INFINITY, second = -INFINITY;
        for (int i = 0; i < perGroup; ++i) {
          float v = scores[g * perGroup + i];
          if (v > first) {
            second = first;
            first = v;
          } else if (v > second) {
            second = v;
          }
        }
        groupScores[g] = perGroup > 1 ? first + second : first;
      }
      __syncwarp();
      for (int round = 0; round < p.groupsKept; ++round) {
        float best = -INFINITY;
        int bestIndex = -1;
        for (int g = lane; g < G; g += 32)
          if (!taken[E + g] && beats(groupScores[g], g, best, bestIndex)) {
            best = groupScores[g];
            bestIndex = g;
          }
        warpArgMax(best, bestIndex);
        if (lane == 0 && bestIndex >= 0)
          taken[E + bestIndex] = 1;
        __syncwarp();
      }
      // Experts of the groups not kept cannot be chosen (marked taken:
      // a score of -inf would still beat a NaN).
      for (int e = lane; e < E; e += 32)
        if (!taken[E + e / perGroup])
          taken[e] = 1;
      __syncwarp();
    }

    int32_t *ids = p.ids + t * p.k;
    float *weights = p.weights + t * p.k;
    for (int j = 0; j < p.k; ++j) {
      float best = -INFINITY;
      int bestIndex = -1;
      for (int e = lane; e < E; e += 32)
        if (!taken[e] && beats(scores[e], e, best, bestIndex)) {
          best = scores[e];
          bestIndex = e;
        }
      warpArgMax(best, bestIndex);
      if (lane == 0) {
        // k is at most the experts allowed (the core checks), so every
        // round finds one.
        ids[j] = bestIndex;
        weights[j] = best;
        taken[bestIndex] = 1;
      }
      __syncwarp();
    }
    if (p.renormalize && lane == 0) {
      // In slot order, as the host does.
      float sum = 0.0f;
      for (int j = 0; j < p.k; ++j)
        sum += weights[j];
      for (int j = 0; j < p.k; ++j)
        weights[j] = weights[j] / (sum + TAMOE_RT_RENORMALIZE_EPSILON);
    }
    __syncwarp();
  }
}

//===----------------------------------------------------------------------===//
// combine
//===----------------------------------------------------------------------===//

/// A block per token (grid-stride); threads across the hidden dimension,
/// four floats at a time when f32 rows are 16-byte aligned. Sums in slot
/// order, in f32: a 16-bit T is widened on load and rounded once on store.
/// Null weights are all 1.
template <typename T, bool Vectorized>
__global__ void __launch_bounds__(kThreads)
    combineKernel(const T *__restrict__ outputs, int64_t rows, int64_t hidden,
                  const int32_t *__restrict__ positions,
                  const float *__restrict__ weights, int64_t tokens, int64_t k,
                  T *__restrict__ combined, DeviceStatus *status) {
  if (hasFailed(status))
    return;
  const int64_t columns = Vectorized ? hidden / 4 : hidden;
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const int32_t *tokenPositions = positions + t * k;
    const float *tokenWeights = weights ? weights + t * k : nullptr;
    for (int64_t c = threadIdx.x; c < columns; c += blockDim.x) {
      if constexpr (Vectorized) {
        float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int64_t j = 0; j < k; ++j) {
          int32_t position = tokenPositions[j];
          if (position < 0)
            continue;
          if (position >= rows) {
            reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                        kPositionOutOfRange, t * k + j, position, rows);
            continue;
          }
          float w = tokenWeights ? tokenWeights[j] : 1.0f;
          float4 v = reinterpret_cast<const float4 *>(
              outputs + int64_t(position) * hidden)[c];
          sum.x += w * v.x;
          sum.y += w * v.y;
          sum.z += w * v.z;
          sum.w += w * v.w;
        }
        reinterpret_cast<float4 *>(combined + t * hidden)[c] = sum;
      } else {
        float sum = 0.0f;
        for (int64_t j = 0; j < k; ++j) {
          int32_t position = tokenPositions[j];
          if (position < 0)
            continue;
          if (position >= rows) {
            reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                        kPositionOutOfRange, t * k + j, position, rows);
            continue;
          }
          sum += (tokenWeights ? tokenWeights[j] : 1.0f) *
                 widen(outputs[int64_t(position) * hidden + c]);
        }
        combined[t * hidden + c] = narrow<T>(sum);
      }
    }
    // Tokens whose every assignment was dropped still get their zero row
    // above; a block with no columns has nothing to write.
  }
}

//===----------------------------------------------------------------------===//
// aux_loss
//===----------------------------------------------------------------------===//

constexpr int kAuxRows = 8;

/// partial[chunk, e] = sum of probs[t, e] over the chunk's tokens, in a
/// fixed order (so the loss is deterministic).
__global__ void auxColumnSumsKernel(const float *__restrict__ probs,
                                    int64_t tokens, int64_t experts,
                                    int64_t rowsPerChunk,
                                    float *__restrict__ partial) {
  __shared__ float sums[kAuxRows][33];
  const int64_t e = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int64_t begin = int64_t(blockIdx.y) * rowsPerChunk;
  int64_t end = begin + rowsPerChunk;
  if (end > tokens)
    end = tokens;
  float sum = 0.0f;
  if (e < experts)
    for (int64_t t = begin + threadIdx.y; t < end; t += kAuxRows)
      sum += probs[t * experts + e];
  sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && e < experts) {
    float total = 0.0f;
    for (int y = 0; y < kAuxRows; ++y)
      total += sums[y][threadIdx.x];
    partial[int64_t(blockIdx.y) * experts + e] = total;
  }
}

/// loss = scale * sum_e count_e * P_e (* w_e), scale = E / (k S^2), the
/// formula and operation order of the compiler's expansion (ExpandGate.cpp).
__global__ void __launch_bounds__(kThreads)
    auxFinishKernel(const float *__restrict__ partial, int64_t chunks,
                    const int32_t *__restrict__ counts,
                    const float *__restrict__ expertWeights, int64_t experts,
                    float scale, float *loss, const DeviceStatus *status) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  float local = 0.0f;
  for (int64_t e = threadIdx.x; e < experts; e += kThreads) {
    float probSum = 0.0f;
    for (int64_t c = 0; c < chunks; ++c)
      probSum += partial[c * experts + e];
    float term = static_cast<float>(counts[e]) * probSum;
    if (expertWeights)
      term *= expertWeights[e];
    local += term;
  }
  float total = Reduce(storage).Sum(local);
  if (threadIdx.x == 0 && !hasFailed(status))
    *loss = total * scale;
}

__global__ void storeFloatKernel(float *target, float value,
                                 const DeviceStatus *status) {
  if (!hasFailed(status))
    *target = value;
}

//===----------------------------------------------------------------------===//
// grouped_matmul
//===----------------------------------------------------------------------===//

constexpr int kTileRows = 64, kTileColumns = 64, kTileDepth = 16;

/// tiles[c] = row tiles of chunk c (kTileRows rows each, never spanning
/// two chunks, so a tile has one expert); tiles[numCounts] = 0.
struct ChunkTiles {
  const int64_t *chunkRows;
  int64_t numCounts;
  int64_t *tiles;
  __host__ __device__ void operator()(int64_t c) const {
    tiles[c] = c == numCounts ? 0 : (chunkRows[c] + kTileRows - 1) / kTileRows;
  }
};

/// result rows past the counts' sum are zero.
/// Elements of the rows past *total are zero (T: float, or uint16_t bits
/// of a 16-bit type).
template <typename T> struct ZeroTail {
  const int64_t *total;
  int64_t outFeatures;
  T *result;
  const DeviceStatus *status;
  __device__ void operator()(int64_t i) const {
    if (!hasFailed(status) && i / outFeatures >= *total)
      result[i] = T(0);
  }
};

/// Writes the recorded operation's index into a status word that holds a
/// failure without one: the failure is that operation's (the operations
/// after it see it and do nothing).
__global__ void stampKernel(DeviceStatus *status, int64_t operation) {
  if (status->code != 0 && status->operation == 0)
    status->operation = operation;
}

/// One block per (row tile, 64 output features): 256 threads, 4 x 4
/// outputs each, over the hidden dimension in slices of 16 staged in shared
/// memory. Each output sums over h in increasing order, as the host does.
__global__ void __launch_bounds__(256)
    groupedMatmulKernel(const float *__restrict__ rows, int64_t hidden,
                        const int64_t *__restrict__ chunkStart,
                        const int64_t *__restrict__ tileStart,
                        int64_t numCounts, int64_t experts,
                        const float *__restrict__ weights, int64_t outFeatures,
                        float *__restrict__ result,
                        const DeviceStatus *status) {
  __shared__ float a[kTileDepth][kTileRows + 4];
  __shared__ float b[kTileDepth][kTileColumns];
  if (hasFailed(status))
    return;
  const int64_t tiles = tileStart[numCounts];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t column0 = int64_t(blockIdx.y) * kTileColumns;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t chunk = upperBound(tileStart, numCounts + 1, tile) - 1;
    int64_t row0 = chunkStart[chunk] + (tile - tileStart[chunk]) * kTileRows;
    int64_t rowEnd = chunkStart[chunk + 1];
    const float *w = weights + (chunk % experts) * hidden * outFeatures;
    float sum[4][4] = {};
    for (int64_t h0 = 0; h0 < hidden; h0 += kTileDepth) {
      // Stage rows [row0, +64) x [h0, +16) transposed, and W [h0, +16) x
      // [column0, +64); zeros outside the chunk and the matrices.
      for (int i = tid; i < kTileRows * kTileDepth; i += 256) {
        int r = i / kTileDepth, d = i % kTileDepth;
        int64_t row = row0 + r, h = h0 + d;
        a[d][r] = row < rowEnd && h < hidden ? rows[row * hidden + h] : 0.0f;
      }
      for (int i = tid; i < kTileDepth * kTileColumns; i += 256) {
        int d = i / kTileColumns, f = i % kTileColumns;
        int64_t h = h0 + d, column = column0 + f;
        b[d][f] = h < hidden && column < outFeatures
                      ? w[h * outFeatures + column]
                      : 0.0f;
      }
      __syncthreads();
      for (int d = 0; d < kTileDepth; ++d) {
        float x[4], y[4];
        for (int i = 0; i < 4; ++i) {
          x[i] = a[d][ty * 4 + i];
          y[i] = b[d][tx * 4 + i];
        }
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j)
            sum[i][j] += x[i] * y[j];
      }
      __syncthreads();
    }
    for (int i = 0; i < 4; ++i) {
      int64_t row = row0 + ty * 4 + i;
      if (row >= rowEnd)
        continue;
      for (int j = 0; j < 4; ++j) {
        int64_t column = column0 + tx * 4 + j;
        if (column < outFeatures)
          result[row * outFeatures + column] = sum[i][j];
      }
    }
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Backend methods
//===----------------------------------------------------------------------===//

Status CudaBackend::gate(const float *logits, intptr_t tokens, intptr_t experts,
                         intptr_t k, tamoe_rt_score_t score, bool renormalize,
                         intptr_t numGroups, intptr_t groupsKept,
                         int32_t *expertIds, float *weights, float *probs) {
  if (tokens < 0 || experts < 0 || k < 0 || numGroups < 0 || groupsKept < 0)
    return invalid("negative size");
  if (score != TAMOE_RT_SCORE_SOFTMAX && score != TAMOE_RT_SCORE_SIGMOID)
    return invalid("unknown score function " + std::to_string(score));
  if (experts > INT_MAX / 8)
    return invalid("too many experts (" + std::to_string(experts) + ")");
  if (k > experts)
    return invalid("k = " + std::to_string(k) + " exceeds the " +
                   std::to_string(experts) + " experts");
  if (numGroups > 0) {
    if (experts % numGroups != 0)
      return invalid(std::to_string(experts) + " experts do not form " +
                     std::to_string(numGroups) + " equal groups");
    if (groupsKept < 1 || groupsKept > numGroups)
      return invalid("groups_kept = " + std::to_string(groupsKept) +
                     " must be in [1, " + std::to_string(numGroups) + "]");
    if (k > groupsKept * (experts / numGroups))
      return invalid("k = " + std::to_string(k) +
                     " exceeds the experts of the " +
                     std::to_string(groupsKept) + " kept groups");
  }
  if (tokens == 0 || experts == 0)
    return Status::success();
  int64_t cells, picks;
  if (!multiply(tokens, experts, cells) || !multiply(tokens, k, picks) ||
      !multiply(cells, 4, cells) || !multiply(picks, 4, picks))
    return invalid("sizes overflow");
  // Its kernel checks nothing, so gate returns once it is queued: the
  // frame without run(). It still begins an operation: eagerly, a failure
  // an earlier operation left in the status word would stop its kernel.
  Frame frame(*this, {{logits, cells, "logits"},
                      {probs, cells, "probs"},
                      {expertIds, picks, "expert_ids"},
                      {weights, picks, "weights"}});
  if (!frame.ok())
    return frame.status();
  if (Status begun = beginOperation(); !begun.ok())
    return begun;

  GateParams params{logits,
                    tokens,
                    static_cast<int>(experts),
                    static_cast<int>(k),
                    score,
                    renormalize,
                    static_cast<int>(numGroups),
                    static_cast<int>(groupsKept),
                    expertIds,
                    weights,
                    probs};
  // Workspace per warp: E + G floats and E + G flag bytes, in 16-byte units.
  int64_t workspaceBytes = (experts + numGroups) * 5;
  int64_t workspaceFloats = (workspaceBytes + 15) / 16 * 4;
  int64_t sharedBytes = workspaceFloats * 4 * kGateWarps;
  int64_t blocks = (tokens + kGateWarps - 1) / kGateWarps;
  int64_t most = int64_t(smCount_) * 16;
  if (blocks > most)
    blocks = most;
  float *globalWorkspace = nullptr;
  if (sharedBytes > 48 * 1024) {
    // Too many experts for shared memory: each warp slot of the grid gets
    // its workspace in global memory instead (still L2-resident).
    cudaError_t error = cudaMallocFromPoolAsync(
        reinterpret_cast<void **>(&globalWorkspace),
        static_cast<size_t>(blocks * kGateWarps * workspaceFloats * 4), pool_,
        stream_);
    if (error != cudaSuccess) {
      cudaGetLastError();
      return cudaFailure(error, "allocating the workspace");
    }
    sharedBytes = 0;
  }
  gateKernel<<<static_cast<unsigned>(blocks), kGateWarps * 32,
               static_cast<size_t>(sharedBytes), stream_>>>(
      params, globalWorkspace, workspaceFloats, deviceStatus_);
  cudaError_t launch = cudaGetLastError();
  if (globalWorkspace)
    cudaFreeAsync(globalWorkspace, stream_);
  if (launch != cudaSuccess)
    return cudaFailure(launch, "launching the kernel");
  return Status::success();
}

Status CudaBackend::dispatch(const void *tokens, intptr_t numTokens,
                             intptr_t rowBytes, const int32_t *expertIds,
                             intptr_t k, intptr_t experts, const float *weights,
                             intptr_t capacity, tamoe_rt_drop_t drop,
                             void *dispatched, intptr_t dispatchedCapacity,
                             int32_t *expertCounts, int32_t *positions,
                             int64_t *numDropped) {
  if (numTokens < 0 || rowBytes < 0 || k < 0 || experts < 0 ||
      dispatchedCapacity < 0)
    return invalid("negative size");
  if (drop != TAMOE_RT_DROP_POSITION && drop != TAMOE_RT_DROP_PROBABILITY)
    return invalid("unknown drop policy " + std::to_string(drop));
  int64_t n;
  if (!multiply(numTokens, k, n) || n > INT_MAX - 1)
    return invalid("tokens * k exceeds 2^31 - 2 assignments");
  if (experts > INT_MAX - 1)
    return invalid("too many experts");
  bool byWeight = capacity >= 0 && drop == TAMOE_RT_DROP_PROBABILITY;
  if (byWeight && n > 0 && !weights)
    return invalid("dropping by probability needs the weights");
  int64_t tokenBytes, dispatchedBytes;
  if (!multiply(numTokens, rowBytes, tokenBytes) ||
      !multiply(dispatchedCapacity, rowBytes, dispatchedBytes))
    return invalid("sizes overflow");
  Frame frame(*this,
              {{tokens, tokenBytes, "tokens"},
               {expertIds, n * 4, "expert_ids"},
               {byWeight ? weights : nullptr, byWeight ? n * 4 : 0, "weights"},
               {dispatched, dispatchedBytes, "dispatched"},
               {expertCounts, experts * 4, "expert_counts"},
               {positions, n * 4, "positions"},
               {numDropped, 8, "num_dropped"}});
  if (!frame.ok())
    return frame.status();
  if (overlap(tokens, tokenBytes, dispatched, dispatchedBytes))
    return invalid("tokens and dispatched overlap");

  return frame.run(
      [&](CudaExec &x) {
        runDispatch(x, DispatchParams{tokens, numTokens, rowBytes, expertIds, k,
                                      experts, weights, capacity, drop,
                                      dispatched, dispatchedCapacity,
                                      expertCounts, positions, numDropped});
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kExpertOutOfRange)
          return expertIdOutOfRange(e, k);
        if (e.kind == kRowsExceedCapacity)
          return num(e.a) + " rows to write exceed dispatched_capacity " +
                 num(e.b);
        return std::string();
      });
}

Status CudaBackend::combine(const float *expertOutputs, intptr_t rows,
                            intptr_t hidden, const int32_t *positions,
                            const float *weights, intptr_t tokens, intptr_t k,
                            float *combined) {
  return combineElements(TAMOE_RT_F32, expertOutputs, rows, hidden, positions,
                         weights, tokens, k, combined);
}

Status CudaBackend::combineRows(tamoe_rt_dtype_t dtype,
                                const void *expertOutputs, intptr_t rows,
                                intptr_t hidden, const int32_t *positions,
                                const float *weights, intptr_t tokens,
                                intptr_t k, void *combined) {
  if (!takesRows(dtype))
    return invalid("combine of 16-bit rows takes bf16 or f16");
  return combineElements(dtype, expertOutputs, rows, hidden, positions,
                         weights, tokens, k, combined);
}

Status CudaBackend::combineElements(tamoe_rt_dtype_t dtype,
                                    const void *expertOutputs, intptr_t rows,
                                    intptr_t hidden, const int32_t *positions,
                                    const float *weights, intptr_t tokens,
                                    intptr_t k, void *combined) {
  if (rows < 0 || hidden < 0 || tokens < 0 || k < 0)
    return invalid("negative size");
  int64_t element = dtype == TAMOE_RT_F32 ? 4 : 2;
  int64_t outputBytes, combinedBytes, picks;
  if (!multiply(rows, hidden, outputBytes) ||
      !multiply(outputBytes, element, outputBytes) ||
      !multiply(tokens, hidden, combinedBytes) ||
      !multiply(combinedBytes, element, combinedBytes) ||
      !multiply(tokens, k, picks) || !multiply(picks, 4, picks))
    return invalid("sizes overflow");
  Frame frame(*this, {{expertOutputs, outputBytes, "expert_outputs"},
                      {positions, picks, "positions"},
                      {weights, weights ? picks : 0, "weights"},
                      {combined, combinedBytes, "combined"}});
  if (!frame.ok())
    return frame.status();
  if (overlap(expertOutputs, outputBytes, combined, combinedBytes))
    return invalid("expert_outputs and combined overlap");
  if (tokens == 0 || hidden == 0)
    return Status::success();

  bool vectorized = dtype == TAMOE_RT_F32 && hidden % 4 == 0 &&
                    reinterpret_cast<uintptr_t>(expertOutputs) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(combined) % 16 == 0;
  int64_t columns = vectorized ? hidden / 4 : hidden;
  int64_t threads = (columns + 31) / 32 * 32;
  if (threads > kThreads)
    threads = kThreads;
  int64_t most = int64_t(smCount_) * (2048 / threads);
  auto grid = static_cast<unsigned>(tokens < most ? tokens : most);
  auto block = static_cast<unsigned>(threads);
  auto launch = [&](auto typed, auto vector) {
    using T = decltype(typed);
    combineKernel<T, decltype(vector)::value><<<grid, block, 0, stream_>>>(
        static_cast<const T *>(expertOutputs), rows, hidden, positions,
        weights, tokens, k, static_cast<T *>(combined), deviceStatus_);
  };
  return frame.run(
      [&](CudaExec &x) {
        if (dtype == TAMOE_RT_BF16)
          launch(__nv_bfloat16(), std::false_type());
        else if (dtype == TAMOE_RT_F16)
          launch(__half(), std::false_type());
        else if (vectorized)
          launch(float(), std::true_type());
        else
          launch(float(), std::false_type());
        if (cudaError_t error = cudaGetLastError(); error != cudaSuccess)
          x.fail(cudaFailure(error, "launching the kernel"));
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kPositionOutOfRange)
          return positionPastRows(e, k);
        return std::string();
      });
}

Status CudaBackend::auxLoss(const float *probs, const int32_t *expertIds,
                            const int32_t *positions, intptr_t tokens,
                            intptr_t experts, intptr_t k,
                            const float *expertWeights, float *loss) {
  int64_t probBytes, idBytes;
  if (Status sizes = auxBytes(tokens, experts, k, probBytes, idBytes);
      !sizes.ok())
    return sizes;
  Frame frame(*this, {{probs, probBytes, "probs"},
                      {expertIds, idBytes, "expert_ids"},
                      {positions, positions ? idBytes : 0, "positions"},
                      {expertWeights, expertWeights ? experts * 4 : 0,
                       "expert_weights"},
                      {loss, 4, "loss"}});
  if (!frame.ok())
    return frame.status();

  // The compiler computes E / (k * (S * S)) in f32; so do we (and so does
  // the cpu backend): k = 0 gives 0 * inf = NaN there too.
  float tokensF = static_cast<float>(tokens);
  float scale = static_cast<float>(experts) /
                (static_cast<float>(k) * (tokensF * tokensF));
  return frame.run(
      [&](CudaExec &x) {
        if (tokens == 0 || experts == 0) {
          // No tokens: no imbalance (the formula would be 0 / 0). No experts:
          // an empty sum.
          storeFloatKernel<<<1, 1, 0, stream_>>>(loss, 0.0f, deviceStatus_);
        } else {
          // Chunks of tokens per column block: enough blocks to fill the
          // device, few enough partial sums for the final single-block
          // reduction.
          int64_t columnBlocks = (experts + 31) / 32;
          int64_t chunks =
              (int64_t(smCount_) * 4 + columnBlocks - 1) / columnBlocks;
          int64_t byRows = (tokens + 255) / 256;
          if (chunks > byRows)
            chunks = byRows;
          if (chunks > 65535)
            chunks = 65535;
          if (chunks < 1)
            chunks = 1;
          int64_t rowsPerChunk = (tokens + chunks - 1) / chunks;
          chunks = (tokens + rowsPerChunk - 1) / rowsPerChunk;
          float *partial = x.scratch<float>(chunks * experts);
          int32_t *counts = x.scratch<int32_t>(experts);
          x.zero(counts, experts * 4);
          if (x.ok()) {
            auxColumnSumsKernel<<<dim3(static_cast<unsigned>(columnBlocks),
                                       static_cast<unsigned>(chunks)),
                                  dim3(32, kAuxRows), 0, stream_>>>(
                probs, tokens, experts, rowsPerChunk, partial);
            x.forEach(tokens * k,
                      CountAssignments{expertIds, positions, experts, counts,
                                       deviceStatus_});
            auxFinishKernel<<<1, kThreads, 0, stream_>>>(
                partial, chunks, counts, expertWeights, experts, scale, loss,
                deviceStatus_);
          }
        }
        if (cudaError_t error = cudaGetLastError(); error != cudaSuccess)
          x.fail(cudaFailure(error, "launching a kernel"));
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kExpertOutOfRange)
          return expertIdOutOfRange(e, k) + " (negative ids are not counted)";
        return std::string();
      });
}

Status CudaBackend::groupedMatmul(const float *rows, intptr_t rowsCapacity,
                                  intptr_t hidden, const int32_t *counts,
                                  intptr_t numCounts, intptr_t experts,
                                  const float *weights, intptr_t outFeatures,
                                  float *result) {
  GroupedBytes bytes;
  if (Status sizes = groupedBytes(rowsCapacity, hidden, numCounts, experts,
                                  outFeatures, bytes);
      !sizes.ok())
    return sizes;
  int64_t rowBytes = bytes.rows, resultBytes = bytes.result;
  Frame frame(*this, {{rows, rowBytes, "rows"},
                      {counts, numCounts * 4, "counts"},
                      {weights, bytes.weights, "weights"},
                      {result, resultBytes, "result"}});
  if (!frame.ok())
    return frame.status();
  if (overlap(rows, rowBytes, result, resultBytes))
    return invalid("rows and result overlap");

  return frame.run(
      [&](CudaExec &x) {
        DeviceStatus *status = deviceStatus_;
        int64_t *chunkRows = x.scratch<int64_t>(numCounts + 1);
        int64_t *chunkStart = x.scratch<int64_t>(numCounts + 1);
        int64_t *tiles = x.scratch<int64_t>(numCounts + 1);
        int64_t *tileStart = x.scratch<int64_t>(numCounts + 1);
        int64_t *total = x.scratch<int64_t>(1);
        if (x.ok()) {
          x.forEach(numCounts + 1,
                    SourceCounts{counts, numCounts, chunkRows, status});
          x.exclusiveSum(chunkRows, chunkStart, numCounts + 1);
          x.forEach(1, RowsCheck{chunkStart + numCounts, rowsCapacity,
                                 TAMOE_RT_ERROR_INVALID_ARGUMENT,
                                 kInputRowsExceedCapacity, total, status});
          x.forEach(numCounts + 1, ChunkTiles{chunkRows, numCounts, tiles});
          x.exclusiveSum(tiles, tileStart, numCounts + 1);
        }
        // At most one partial tile per chunk beyond the full ones.
        int64_t mostTiles =
            (rowsCapacity + kTileRows - 1) / kTileRows + numCounts;
        int64_t columnTiles = (outFeatures + kTileColumns - 1) / kTileColumns;
        if (x.ok() && mostTiles > 0) {
          // Row tiles in a grid-stride loop: the bound can far exceed the tiles
          // the counts make.
          int64_t blocks = mostTiles < int64_t(smCount_) * 16
                               ? mostTiles
                               : int64_t(smCount_) * 16;
          if (columnTiles > 65535)
            x.fail(invalid("out_features above " +
                           std::to_string(65535 * kTileColumns)));
          else
            groupedMatmulKernel<<<dim3(static_cast<unsigned>(blocks),
                                       static_cast<unsigned>(columnTiles)),
                                  256, 0, stream_>>>(
                rows, hidden, chunkStart, tileStart, numCounts, experts,
                weights, outFeatures, result, status);
          if (cudaError_t error = cudaGetLastError(); error != cudaSuccess)
            x.fail(cudaFailure(error, "launching the grouped matmul"));
        }
        x.forEach(rowsCapacity * outFeatures,
                  ZeroTail<float>{total, outFeatures, result, status});
      },
      countsError);
}

//===----------------------------------------------------------------------===//
// matmul and map
//===----------------------------------------------------------------------===//

Status CudaBackend::blasHandle() {
  if (blas_)
    return Status::success();
  if (cublasStatus_t error = cublasCreate(&blas_);
      error != CUBLAS_STATUS_SUCCESS) {
    blas_ = nullptr;
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         std::string("cuBLAS: ") +
                             cublasGetStatusString(error));
  }
  cublasSetStream(blas_, stream_);
  // A 16-bit GEMM sums in f32 and rounds its result once: no split-K
  // partial sums reduced in the output's type.
  cublasSetMathMode(blas_, cublasMath_t(CUBLAS_DEFAULT_MATH |
                                        CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
  return Status::success();
}

namespace {
/// One element through f32 (exact for bf16 and f16), rounded to nearest
/// even when narrowed; read before written, so same-sized types convert in
/// place.
struct ConvertElement {
  tamoe_rt_dtype_t from, to;
  const void *src;
  void *dst;
  __device__ void operator()(int64_t i) const {
    float value;
    if (from == TAMOE_RT_F32)
      value = static_cast<const float *>(src)[i];
    else if (from == TAMOE_RT_BF16)
      value = __bfloat162float(static_cast<const __nv_bfloat16 *>(src)[i]);
    else
      value = __half2float(static_cast<const __half *>(src)[i]);
    if (to == TAMOE_RT_F32)
      static_cast<float *>(dst)[i] = value;
    else if (to == TAMOE_RT_BF16)
      static_cast<__nv_bfloat16 *>(dst)[i] = __float2bfloat16_rn(value);
    else
      static_cast<__half *>(dst)[i] = __float2half_rn(value);
  }
};

int64_t elementBytes(tamoe_rt_dtype_t type) {
  return type == TAMOE_RT_F32 ? 4 : 2;
}
} // namespace

Status CudaBackend::gemmEx(bool transposeA, bool transposeB, int64_t m,
                           int64_t n, int64_t k, const void *a,
                           cudaDataType_t aType, const void *b,
                           cudaDataType_t bType, float beta, void *c,
                           cudaDataType_t cType) {
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a
  // row-major matrix read column-major is its transpose: so B goes first,
  // each operand transposed when the caller's is, with its row length as
  // the leading dimension.
  const float alpha = 1.0f;
  cublasStatus_t error = cublasGemmEx(
      blas_, transposeB ? CUBLAS_OP_T : CUBLAS_OP_N,
      transposeA ? CUBLAS_OP_T : CUBLAS_OP_N, int(n), int(m), int(k), &alpha, b,
      bType, int(transposeB ? k : n), a, aType, int(transposeA ? m : k), &beta,
      c, cType, int(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (error != CUBLAS_STATUS_SUCCESS)
    return Status::error(TAMOE_RT_ERROR_INTERNAL,
                         std::string("cublasGemmEx: ") +
                             cublasGetStatusString(error));
  return Status::success();
}

Status CudaBackend::gemmStridedBatched(int64_t m, int64_t n, int64_t k,
                                       const void *a, int64_t strideA,
                                       const void *b, int64_t strideB, void *c,
                                       int64_t strideC, cudaDataType_t type,
                                       int64_t batch) {
  // Row-major as in gemmEx: column-major C^T = B^T A^T, B first.
  const float alpha = 1.0f, beta = 0.0f;
  cublasStatus_t error = cublasGemmStridedBatchedEx(
      blas_, CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(m), int(k), &alpha, b, type,
      int(n), strideB, a, type, int(k), strideA, &beta, c, type, int(n),
      strideC, int(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (error != CUBLAS_STATUS_SUCCESS)
    return Status::error(TAMOE_RT_ERROR_INTERNAL,
                         std::string("cublasGemmStridedBatchedEx: ") +
                             cublasGetStatusString(error));
  return Status::success();
}

Status CudaBackend::stampOperation(int64_t operation) {
  stampKernel<<<1, 1, 0, stream_>>>(deviceStatus_, operation);
  if (cudaError_t error = cudaGetLastError(); error != cudaSuccess)
    return cudaFailure(error, "recording the operation's stamp");
  return Status::success();
}

Status CudaBackend::hostCounts(const int32_t *counts, intptr_t numCounts,
                               intptr_t rowsCapacity,
                               std::vector<int32_t> &host, int64_t &total) {
  if (Status s = recordable("reads its counts on the host (cuBLAS takes "
                            "each GEMM's size from there)");
      !s.ok())
    return s;
  host.assign(static_cast<size_t>(numCounts), 0);
  if (numCounts > 0) {
    cudaError_t error = cudaMemcpyAsync(host.data(), counts, host.size() * 4,
                                        cudaMemcpyDeviceToHost, stream_);
    if (error == cudaSuccess)
      error = cudaStreamSynchronize(stream_);
    if (error != cudaSuccess) {
      cudaGetLastError();
      return cudaFailure(error, "reading the counts");
    }
  }
  total = 0;
  for (intptr_t c = 0; c < numCounts; ++c) {
    if (host[size_t(c)] < 0)
      return invalid("counts[" + num(c) + "] = " + num(host[size_t(c)]) +
                     " is negative");
    total += host[size_t(c)];
  }
  if (total > rowsCapacity)
    return invalid("counts sum to " + num(total) +
                   " rows but rows_capacity is " + num(rowsCapacity));
  return Status::success();
}

namespace {
cudaDataType_t cudaType(tamoe_rt_dtype_t dtype) {
  return dtype == TAMOE_RT_BF16  ? CUDA_R_16BF
         : dtype == TAMOE_RT_F16 ? CUDA_R_16F
                                 : CUDA_R_32F;
}
} // namespace

Status CudaBackend::matmulRows(tamoe_rt_dtype_t aType, tamoe_rt_dtype_t bType,
                               tamoe_rt_dtype_t cType, const void *a,
                               const void *b, intptr_t m, intptr_t k,
                               intptr_t n, bool transposeA, bool transposeB,
                               const void *cInit, void *c) {
  if (!matmulTakes(aType, bType, cType))
    return invalid("matmul of 16-bit operands takes a and b of one 16-bit "
                   "type and c of it or f32");
  return matmulElements(aType, bType, cType, a, b, m, k, n, transposeA,
                        transposeB, cInit, c);
}

Status CudaBackend::matmulElements(tamoe_rt_dtype_t aType,
                                   tamoe_rt_dtype_t bType,
                                   tamoe_rt_dtype_t cType, const void *a,
                                   const void *b, intptr_t m, intptr_t k,
                                   intptr_t n, bool transposeA, bool transposeB,
                                   const void *cInit, void *c) {
  // The core checked that the sizes fit; cuBLAS takes int dimensions.
  if (m > INT_MAX || k > INT_MAX || n > INT_MAX)
    return invalid("m, k and n must fit in int for cuBLAS");
  auto bytesOf = [](tamoe_rt_dtype_t type) -> int64_t {
    return type == TAMOE_RT_F32 ? 4 : 2;
  };
  int64_t cBytes = int64_t(m) * n * bytesOf(cType);
  Frame frame(*this, {{a, int64_t(m) * k * bytesOf(aType), "a"},
                      {b, int64_t(k) * n * bytesOf(bType), "b"},
                      {cInit, cInit ? cBytes : 0, "c_init"},
                      {c, cBytes, "c"}});
  if (!frame.ok())
    return frame.status();
  if (Status blas = blasHandle(); !blas.ok())
    return blas;
  return frame.run(
      [&](CudaExec &x) {
        if (cInit && cInit != c)
          x.copy(c, cInit, cBytes);
        if (k == 0) {
          if (!cInit)
            x.zero(c, cBytes);
        } else if (x.ok()) {
          // cuBLAS adds c_init (beta = 1) in f32 and rounds c once.
          x.fail(gemmEx(transposeA, transposeB, m, n, k, a, cudaType(aType), b,
                        cudaType(bType), cInit ? 1.0f : 0.0f, c,
                        cudaType(cType)));
        }
      },
      noMessage);
}

Status CudaBackend::groupedMatmulRows(tamoe_rt_dtype_t dtype, const void *rows,
                                      intptr_t rowsCapacity, intptr_t hidden,
                                      const int32_t *counts, intptr_t numCounts,
                                      intptr_t experts, const void *weights,
                                      intptr_t outFeatures, void *result) {
  if (!takesRows(dtype))
    return invalid("grouped_matmul of 16-bit rows takes bf16 or f16");
  GroupedBytes bytes; // f32 sizes: twice these operands', so they fit
  if (Status sizes = groupedBytes(rowsCapacity, hidden, numCounts, experts,
                                  outFeatures, bytes);
      !sizes.ok())
    return sizes;
  int64_t rowBytes = bytes.rows / 2, resultBytes = bytes.result / 2;
  Frame frame(*this, {{rows, rowBytes, "rows"},
                      {counts, numCounts * 4, "counts"},
                      {weights, bytes.weights / 2, "weights"},
                      {result, resultBytes, "result"}});
  if (!frame.ok())
    return frame.status();
  if (overlap(rows, rowBytes, result, resultBytes))
    return invalid("rows and result overlap");
  if (Status blas = blasHandle(); !blas.ok())
    return blas;
  if (recording_)
    return groupedMatmulSlots(frame, dtype, rows, rowsCapacity, hidden, counts,
                              numCounts, experts, weights, outFeatures, result);
  std::vector<int32_t> chunkRows;
  int64_t total = 0;
  if (Status s = hostCounts(counts, numCounts, rowsCapacity, chunkRows, total);
      !s.ok())
    return s;

  return frame.run(
      [&](CudaExec &x) {
        cudaDataType_t type = cudaType(dtype);
        auto *x16 = static_cast<const uint16_t *>(rows);
        auto *w16 = static_cast<const uint16_t *>(weights);
        auto *y16 = static_cast<uint16_t *>(result);
        const int64_t weightElements = hidden * outFeatures;
        // Chunk c of the result = chunk c of the rows x weights[c % experts] on
        // the tensor cores; hidden and out_features are >= 1 (groupedBytes).
        int64_t row = 0;
        for (intptr_t c = 0; c < numCounts && x.ok();
             row += chunkRows[size_t(c++)])
          if (chunkRows[size_t(c)] > 0)
            x.fail(gemmEx(false, false, chunkRows[size_t(c)], outFeatures,
                          hidden, x16 + row * hidden, type,
                          w16 + (c % experts) * weightElements, type, 0.0f,
                          y16 + row * outFeatures, type));
        // Rows past the valid ones are zero, as the f32 path leaves them.
        x.zero(y16 + total * outFeatures,
               (rowsCapacity - total) * outFeatures * 2);
      },
      noMessage);
}

Status CudaBackend::groupedMatmulSlots(Frame &frame, tamoe_rt_dtype_t dtype,
                                       const void *rows, intptr_t rowsCapacity,
                                       intptr_t hidden, const int32_t *counts,
                                       intptr_t numCounts, intptr_t experts,
                                       const void *weights,
                                       intptr_t outFeatures, void *result) {
  // A static-capacity program's receive buffer gives each count its
  // capacity, so the slots waste only the rows the capacity leaves empty.
  const int64_t slot = numCounts > 0 ? rowsCapacity / numCounts : 0;
  if (slot > INT_MAX || hidden > INT_MAX || outFeatures > INT_MAX ||
      experts > INT_MAX)
    return invalid("sizes must fit in int for cuBLAS");
  return frame.run(
      [&](CudaExec &x) {
        DeviceStatus *status = deviceStatus_;
        const int64_t slotRows = numCounts * slot;
        int64_t *slotOf = x.scratch<int64_t>(rowsCapacity);
        int64_t *numRows = x.scratch<int64_t>(1);
        auto *padded = x.scratch<uint16_t>(slotRows * hidden);
        auto *paddedOut = x.scratch<uint16_t>(slotRows * outFeatures);
        if (x.ok())
          runSlotRows(x, SlotRowsParams{counts, numCounts, rowsCapacity, slot,
                                        slotOf, numRows});
        // Zero rows past each count, so that their products are zero too.
        x.zero(padded, slotRows * hidden * 2);
        x.scatterRows(padded, rows, hidden * 2, slotOf, numRows, rowsCapacity);
        cudaDataType_t type = cudaType(dtype);
        auto *w16 = static_cast<const uint16_t *>(weights);
        for (int64_t first = 0; first < numCounts && slot > 0 && x.ok();
             first += experts) {
          // Slot first + j takes weights[j]: chunk c's expert is c % experts.
          int64_t batch = minOf(experts, numCounts - first);
          x.fail(gemmStridedBatched(slot, outFeatures, hidden,
                                    padded + first * slot * hidden,
                                    slot * hidden, w16, hidden * outFeatures,
                                    paddedOut + first * slot * outFeatures,
                                    slot * outFeatures, type, batch));
        }
        auto *y16 = static_cast<uint16_t *>(result);
        x.copyRows(y16, paddedOut, outFeatures * 2, slotOf, numRows,
                   rowsCapacity);
        x.forEach(rowsCapacity * outFeatures,
                  ZeroTail<uint16_t>{numRows, outFeatures, y16, status});
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kCountExceedsSlot)
          return "counts[" + num(e.a) + "] = " + num(e.b) + " exceeds the " +
                 num(e.c) +
                 " rows a recorded grouped_matmul gives each count "
                 "(rows_capacity / the number of counts, as a static-capacity "
                 "program sizes its buffers)";
        return countsError(e);
      });
}

Status CudaBackend::selfExchange(const void *send, intptr_t sendCapacity,
                                 intptr_t rowBytes, const int32_t *sendCounts,
                                 intptr_t entries, void *received,
                                 intptr_t recvCapacity, int32_t *recvCounts) {
  Frame frame(*this, {});        // startRows checked the operands
  const int64_t split = entries; // one peer: its split sub-chunks
  return frame.run(
      [&](CudaExec &x) {
        runSelfExchange(x, SelfExchangeParams{send, sendCapacity, rowBytes,
                                              sendCounts, entries, received,
                                              recvCapacity, recvCounts});
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kNegativeCount)
          return (split == 1 ? "send_counts[" + num(e.a) + "]"
                             : "send_counts[0, " + num(e.a) + "]") +
                 " = " + num(e.b) + " is negative";
        if (e.kind == kInputRowsExceedCapacity)
          return "send_counts sum to " + num(e.a) +
                 " rows but send_capacity is " + num(e.b);
        if (e.kind == kRowsExceedCapacity)
          return num(e.a) + " rows to receive exceed recv_capacity " + num(e.b);
        return std::string();
      });
}

Status CudaBackend::groupedMatmulGradRows(
    tamoe_rt_dtype_t dtype, const void *rows, intptr_t rowsCapacity,
    intptr_t hidden, const int32_t *counts, intptr_t numCounts,
    intptr_t experts, const void *weights, intptr_t outFeatures,
    const void *dResult, void *dRows, void *dWeights) {
  if (!takesRows(dtype))
    return invalid("grouped_matmul_grad of 16-bit rows takes bf16 or f16");
  return groupedMatmulGradElements(dtype, rows, rowsCapacity, hidden, counts,
                                   numCounts, experts, weights, outFeatures,
                                   dResult, dRows, dWeights);
}

Status CudaBackend::groupedMatmulGradElements(
    tamoe_rt_dtype_t dtype, const void *rows, intptr_t rowsCapacity,
    intptr_t hidden, const int32_t *counts, intptr_t numCounts,
    intptr_t experts, const void *weights, intptr_t outFeatures,
    const void *dResult, void *dRows, void *dWeights) {
  GroupedBytes bytes; // f32 sizes
  if (Status sizes = groupedBytes(rowsCapacity, hidden, numCounts, experts,
                                  outFeatures, bytes);
      !sizes.ok())
    return sizes;
  const int64_t element = dtype == TAMOE_RT_F32 ? 4 : 2, shrink = 4 / element;
  Frame frame(*this,
              {{rows, dWeights ? bytes.rows / shrink : 0, "rows"},
               {counts, numCounts * 4, "counts"},
               {weights, dRows ? bytes.weights / shrink : 0, "weights"},
               {dResult, bytes.result / shrink, "d_result"},
               {dRows, dRows ? bytes.rows / shrink : 0, "d_rows"},
               {dWeights, dWeights ? bytes.weights / shrink : 0, "d_weights"}});
  if (!frame.ok())
    return frame.status();
  if (Status blas = blasHandle(); !blas.ok())
    return blas;
  // Each chunk is a GEMM of its own, so its size is needed on the host.
  std::vector<int32_t> chunkRows;
  int64_t total = 0;
  if (Status s = hostCounts(counts, numCounts, rowsCapacity, chunkRows, total);
      !s.ok())
    return s;

  return frame.run(
      [&](CudaExec &x) {
        cudaDataType_t type = cudaType(dtype);
        auto *x8 = static_cast<const char *>(rows);
        auto *w8 = static_cast<const char *>(weights);
        auto *dy8 = static_cast<const char *>(dResult);
        const int64_t weightElements = hidden * outFeatures;
        if (dRows) {
          // Chunk c of d_rows = chunk c of d_result x weights[c % experts]^T,
          // rounded once.
          auto *dx8 = static_cast<char *>(dRows);
          int64_t row = 0;
          for (intptr_t c = 0; c < numCounts && x.ok();
               row += chunkRows[size_t(c++)])
            if (chunkRows[size_t(c)] > 0)
              x.fail(gemmEx(false, true, chunkRows[size_t(c)], hidden,
                            outFeatures, dy8 + row * outFeatures * element,
                            type, w8 + (c % experts) * weightElements * element,
                            type, 0.0f, dx8 + row * hidden * element, type));
          x.zero(dx8 + total * hidden * element,
                 (rowsCapacity - total) * hidden * element);
        }
        if (dWeights) {
          // Each expert sums rows^T x d_result over its blocks, in order, in
          // f32 (16-bit gradients in scratch, rounded once at the end).
          int64_t elements = experts * weightElements;
          float *sum = dtype == TAMOE_RT_F32 ? static_cast<float *>(dWeights)
                                             : x.scratch<float>(elements);
          x.zero(sum, elements * 4);
          int64_t row = 0;
          for (intptr_t c = 0; c < numCounts && x.ok();
               row += chunkRows[size_t(c++)])
            if (chunkRows[size_t(c)] > 0)
              x.fail(gemmEx(true, false, hidden, outFeatures,
                            chunkRows[size_t(c)], x8 + row * hidden * element,
                            type, dy8 + row * outFeatures * element, type, 1.0f,
                            sum + (c % experts) * weightElements, CUDA_R_32F));
          if (dtype != TAMOE_RT_F32)
            x.forEach(elements,
                      ConvertElement{TAMOE_RT_F32, dtype, sum, dWeights});
        }
      },
      noMessage);
}

Status CudaBackend::matmul(const float *a, const float *b, intptr_t m,
                           intptr_t k, intptr_t n, bool transposeA,
                           bool transposeB, const float *cInit, float *c) {
  return matmulElements(TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32, a, b, m, k,
                        n, transposeA, transposeB, cInit, c);
}

namespace {

/// One element of tamoe_rt_map in f32, its inputs widened from T and its
/// output rounded once to T: for bf16 and f16 the staged path's result,
/// without its copies.
template <typename T> struct MapElement {
  tamoe_rt_map_t op;
  const T *a, *b;
  T *out;
  __device__ void operator()(int64_t i) const {
    float x = widen(a[i]), r = 0.0f;
    switch (op) {
    case TAMOE_RT_MAP_ADD:
      r = x + widen(b[i]);
      break;
    case TAMOE_RT_MAP_SUB:
      r = x - widen(b[i]);
      break;
    case TAMOE_RT_MAP_MUL:
      r = x * widen(b[i]);
      break;
    case TAMOE_RT_MAP_RELU:
      r = isnan(x) || x > 0.0f ? x : 0.0f;
      break;
    case TAMOE_RT_MAP_NEG:
      r = -x;
      break;
    case TAMOE_RT_MAP_RELU_GRAD:
      // NaN > 0 is false: a NaN input passes no gradient.
      r = x > 0.0f ? widen(b[i]) : 0.0f;
      break;
    case TAMOE_RT_MAP_SILU:
      r = x / (1.0f + expf(-x));
      break;
    case TAMOE_RT_MAP_SILU_GRAD: {
      float s = 1.0f / (1.0f + expf(-x));
      r = widen(b[i]) * (s * (1.0f + x * (1.0f - s)));
      break;
    }
    }
    out[i] = narrow<T>(r);
  }
};
} // namespace

Status CudaBackend::map(tamoe_rt_map_t op, const float *a, const float *b,
                        intptr_t n, float *out) {
  return mapElements(op, TAMOE_RT_F32, a, b, n, out);
}

Status CudaBackend::mapRows(tamoe_rt_map_t op, tamoe_rt_dtype_t dtype,
                            const void *a, const void *b, intptr_t n,
                            void *out) {
  if (!takesRows(dtype))
    return invalid("map of 16-bit rows takes bf16 or f16");
  return mapElements(op, dtype, a, b, n, out);
}

Status CudaBackend::mapElements(tamoe_rt_map_t op, tamoe_rt_dtype_t dtype,
                                const void *a, const void *b, intptr_t n,
                                void *out) {
  int64_t bytes = int64_t(n) * (dtype == TAMOE_RT_F32 ? 4 : 2);
  bool unary = op == TAMOE_RT_MAP_RELU || op == TAMOE_RT_MAP_NEG ||
               op == TAMOE_RT_MAP_SILU;
  Frame frame(*this, {{a, bytes, "a"},
                      {unary ? nullptr : b, unary ? 0 : bytes, "b"},
                      {out, bytes, "out"}});
  if (!frame.ok())
    return frame.status();
  return frame.run(
      [&](CudaExec &x) {
        auto run = [&](auto typed) {
          using T = decltype(typed);
          x.forEach(n, MapElement<T>{op, static_cast<const T *>(a),
                                     static_cast<const T *>(b),
                                     static_cast<T *>(out)});
        };
        if (dtype == TAMOE_RT_BF16)
          run(__nv_bfloat16());
        else if (dtype == TAMOE_RT_F16)
          run(__half());
        else
          run(float());
      },
      noMessage);
}

Status CudaBackend::addCounts(const int32_t *a, const int32_t *b, intptr_t n,
                              int32_t *out) {
  if (n < 0 || n > INT64_MAX / 4)
    return invalid("n must be in [0, 2^61)");
  int64_t bytes = int64_t(n) * 4;
  Frame frame(*this, {{a, bytes, "a"}, {b, bytes, "b"}, {out, bytes, "out"}});
  if (!frame.ok())
    return frame.status();
  return frame.run([&](CudaExec &x) { runAddCounts(x, a, b, n, out); },
                   [](const DeviceStatus &e) {
                     if (e.kind == kCountSumOverflows)
                       return "a[" + num(e.a) + "] + b[" + num(e.a) +
                              "] = " + num(e.b) + " + " + num(e.c) +
                              " does not fit in int32";
                     return std::string();
                   });
}

Status CudaBackend::convert(tamoe_rt_dtype_t srcType, const void *src,
                            tamoe_rt_dtype_t dstType, void *dst, intptr_t n) {
  int64_t srcBytes = int64_t(n) * elementBytes(srcType);
  int64_t dstBytes = int64_t(n) * elementBytes(dstType);
  Frame frame(*this, {{src, srcBytes, "src"}, {dst, dstBytes, "dst"}});
  if (!frame.ok())
    return frame.status();
  return frame.run(
      [&](CudaExec &x) {
        if (srcType != dstType)
          x.forEach(n, ConvertElement{srcType, dstType, src, dst});
        else if (src != dst)
          x.copy(dst, src, srcBytes);
      },
      noMessage);
}

Status CudaBackend::regroup(const void *rows, intptr_t rowsCapacity,
                            intptr_t rowBytes, const int32_t *counts,
                            intptr_t a, intptr_t b, intptr_t inner,
                            void *regrouped, int32_t *regroupedCounts) {
  if (rowsCapacity < 0 || rowBytes < 0 || a < 0 || b < 0 || inner < 0)
    return invalid("negative size");
  int64_t n, rowsBytes;
  if (!multiply(a, b, n) || !multiply(n, inner, n) || n > INT_MAX - 1)
    return invalid("the count grid has more than 2^31 - 2 entries");
  if (!multiply(rowsCapacity, rowBytes, rowsBytes))
    return invalid("sizes overflow");
  Frame frame(*this, {{rows, rowsBytes, "rows"},
                      {counts, n * 4, "counts"},
                      {regrouped, rowsBytes, "regrouped"},
                      {regroupedCounts, n * 4, "regrouped_counts"}});
  if (!frame.ok())
    return frame.status();
  if (overlap(rows, rowsBytes, regrouped, rowsBytes))
    return invalid("rows and regrouped overlap");

  return frame.run(
      [&](CudaExec &x) {
        runRegroup(x, RegroupParams{rows, rowsCapacity, rowBytes, counts, a, b,
                                    inner, regrouped, regroupedCounts});
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kNegativeCount)
          return "counts[" + num(e.a / (b * inner)) + ", " +
                 num(e.a / inner % b) + ", " + num(e.a % inner) +
                 "] = " + num(e.b) + " is negative";
        if (e.kind == kInputRowsExceedCapacity)
          return "counts sum to " + num(e.a) + " rows but rows_capacity is " +
                 num(e.b);
        return std::string();
      });
}

namespace {
/// The messages of chunk and unchunk for what their pipeline found, as the
/// cpu backend words them.
std::string describePart(const DeviceStatus &e, bool chunk, int64_t index,
                         int64_t chunks) {
  if (e.kind == kPartRowsExceedCapacity)
    return chunk ? num(e.a) + " rows of chunk " + num(index) + " of " +
                       num(chunks) + " exceed chunk_capacity " + num(e.b)
                 : "counts make " + num(e.a) + " rows in chunk " + num(index) +
                       " of " + num(chunks) + " but chunk_capacity is " +
                       num(e.b);
  return countsError(e);
}

} // namespace

Status CudaBackend::checkPart(const void *rows, int64_t rowsCapacity,
                              int64_t rowBytes, const int32_t *counts,
                              int64_t numCounts, const void *chunkRows,
                              int64_t chunkCapacity) const {
  if (rowsCapacity < 0 || rowBytes < 0 || numCounts < 0 || chunkCapacity < 0)
    return invalid("negative size");
  int64_t rowsBytes, chunkBytes;
  if (!multiply(rowsCapacity, rowBytes, rowsBytes) ||
      !multiply(chunkCapacity, rowBytes, chunkBytes) ||
      numCounts > INT_MAX - 1)
    return invalid("sizes overflow");
  if (Status s = checkOperands({{rows, rowsBytes, "rows"},
                                {counts, numCounts * 4, "counts"},
                                {chunkRows, chunkBytes, "chunk_rows"}});
      !s.ok())
    return s;
  if (overlap(rows, rowsBytes, chunkRows, chunkBytes))
    return invalid("rows and chunk_rows overlap");
  return Status::success();
}

Status CudaBackend::chunk(const void *rows, intptr_t rowsCapacity,
                          intptr_t rowBytes, const int32_t *counts,
                          intptr_t numCounts, intptr_t index, intptr_t chunks,
                          void *chunkRows, intptr_t chunkCapacity,
                          int32_t *chunkCounts) {
  // The parts' checks in the frame's device scope, chunk_counts last.
  Frame frame(*this, {});
  if (!frame.ok())
    return frame.status();
  if (Status s = checkPart(rows, rowsCapacity, rowBytes, counts, numCounts,
                           chunkRows, chunkCapacity);
      !s.ok())
    return s;
  if (Status s = checkOperands({{chunkCounts, numCounts * 4, "chunk_counts"}});
      !s.ok())
    return s;
  return frame.run(
      [&](CudaExec &x) {
        runChunk(x,
                 ChunkLayout{rowsCapacity, rowBytes, counts, numCounts, index,
                             chunks, chunkCapacity},
                 rows, chunkRows, chunkCounts);
      },
      [=](const DeviceStatus &e) {
        return describePart(e, true, index, chunks);
      });
}

Status CudaBackend::unchunk(const void *chunkRows, intptr_t chunkCapacity,
                            intptr_t rowBytes, const int32_t *counts,
                            intptr_t numCounts, intptr_t index,
                            intptr_t chunks, void *rows,
                            intptr_t rowsCapacity) {
  Frame frame(*this, {});
  if (!frame.ok())
    return frame.status();
  if (Status s = checkPart(rows, rowsCapacity, rowBytes, counts, numCounts,
                           chunkRows, chunkCapacity);
      !s.ok())
    return s;
  return frame.run(
      [&](CudaExec &x) {
        runUnchunk(x,
                   ChunkLayout{rowsCapacity, rowBytes, counts, numCounts, index,
                               chunks, chunkCapacity},
                   chunkRows, rows);
      },
      [=](const DeviceStatus &e) {
        return describePart(e, false, index, chunks);
      });
}

Status CudaBackend::chunkPositions(const int32_t *positions,
                                   const int32_t *expertIds, intptr_t tokens,
                                   intptr_t k, const int32_t *expertCounts,
                                   intptr_t experts, intptr_t index,
                                   intptr_t chunks, int32_t *chunkPositions) {
  if (tokens < 0 || k < 0 || experts < 0)
    return invalid("negative size");
  int64_t assignments;
  if (!multiply(tokens, k, assignments) || assignments > INT64_MAX / 4 ||
      experts > INT_MAX - 1)
    return invalid("sizes overflow");
  Frame frame(*this, {{positions, assignments * 4, "positions"},
                      {expertIds, assignments * 4, "expert_ids"},
                      {expertCounts, int64_t(experts) * 4, "expert_counts"},
                      {chunkPositions, assignments * 4, "chunk_positions"}});
  if (!frame.ok())
    return frame.status();
  return frame.run(
      [&](CudaExec &x) {
        runChunkPositions(x, ChunkPositionsParams{
                                 positions, expertIds, tokens, k, expertCounts,
                                 experts, index, chunks, chunkPositions});
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kNegativeCount)
          return "counts[" + num(e.a) + "] = " + num(e.b) + " is negative";
        if (e.kind == kExpertOutOfRange)
          return expertIdOutOfRange(e, k);
        if (e.kind == kPositionOutsideBlock) {
          // The block's bounds, for the message: the counts are small, and this
          // is the failure path.
          std::vector<int32_t> counts(static_cast<size_t>(experts));
          int64_t begin = 0;
          if (cudaMemcpy(counts.data(), expertCounts, counts.size() * 4,
                         cudaMemcpyDeviceToHost) != cudaSuccess) {
            cudaGetLastError();
            return entry("positions", e.a, k) + " = " + num(e.b) +
                   " is not a row of expert " + num(e.c) +
                   "'s block of the dispatched rows";
          }
          for (int64_t i = 0; i < e.c; ++i)
            begin += counts[static_cast<size_t>(i)];
          return entry("positions", e.a, k) + " = " + num(e.b) +
                 " is not a row of expert " + num(e.c) + "'s block [" +
                 num(begin) + ", " + num(begin + counts[size_t(e.c)]) +
                 ") of the dispatched rows";
        }
        return std::string();
      });
}

Status CudaBackend::dedupPack(const void *tokens, intptr_t numTokens,
                              intptr_t rowBytes, const int32_t *expertIds,
                              const int32_t *positions, intptr_t k,
                              intptr_t expertsPerNode, intptr_t nodes,
                              void *unique, int32_t *routes,
                              intptr_t uniqueCapacity, int32_t *nodeCounts) {
  if (numTokens < 0 || rowBytes < 0 || k < 0 || expertsPerNode < 0 ||
      nodes < 0 || uniqueCapacity < 0)
    return invalid("negative size");
  if (nodes > 0 && expertsPerNode < 1)
    return invalid("experts_per_node must be positive");
  int64_t n, tokenBytes, uniqueBytes, routeEntries;
  if (!packFits(numTokens, k, expertsPerNode, nodes, n) ||
      !multiply(numTokens, rowBytes, tokenBytes) ||
      !multiply(uniqueCapacity, rowBytes, uniqueBytes) ||
      !multiply(uniqueCapacity, k, routeEntries) ||
      routeEntries > INT64_MAX / 4)
    return invalid(packTooLarge());
  Frame frame(*this, {{tokens, tokenBytes, "tokens"},
                      {expertIds, n * 4, "expert_ids"},
                      {positions, n * 4, "positions"},
                      {unique, uniqueBytes, "unique"},
                      {routes, routeEntries * 4, "routes"},
                      {nodeCounts, nodes * 4, "node_counts"}});
  if (!frame.ok())
    return frame.status();
  if (overlap(tokens, tokenBytes, unique, uniqueBytes))
    return invalid("tokens and unique overlap");

  return frame.run(
      [&](CudaExec &x) {
        runDedupPack(x, DedupPackParams{tokens, numTokens, rowBytes, expertIds,
                                        positions, k, expertsPerNode, nodes,
                                        unique, routes, uniqueCapacity,
                                        nodeCounts});
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kRowsExceedCapacity)
          return num(e.a) + " unique rows exceed unique_capacity " + num(e.b);
        return packError(e, k, expertsPerNode, nodes);
      });
}

Status CudaBackend::dedupExpand(const void *unique, const int32_t *routes,
                                intptr_t uniqueCapacity, intptr_t rowBytes,
                                intptr_t k, const int32_t *recvCounts,
                                intptr_t nodes, intptr_t ranksPerNode,
                                intptr_t expertsPerRank, void *expanded,
                                intptr_t expandedCapacity,
                                int32_t *expandedCounts) {
  if (uniqueCapacity < 0 || rowBytes < 0 || k < 0 || nodes < 0 ||
      ranksPerNode < 0 || expertsPerRank < 0 || expandedCapacity < 0)
    return invalid("negative size");
  if (ranksPerNode < 1 || expertsPerRank < 1)
    return invalid("ranks_per_node and experts_per_rank must "
                   "be positive");
  int64_t m, keys, uniqueBytes, expandedBytes;
  if (!expandFits(uniqueCapacity, k, ranksPerNode, nodes, expertsPerRank, m,
                  keys) ||
      !multiply(uniqueCapacity, rowBytes, uniqueBytes) ||
      !multiply(expandedCapacity, rowBytes, expandedBytes))
    return invalid(expandTooLarge());
  Frame frame(*this, {{unique, uniqueBytes, "unique"},
                      {routes, m * 4, "routes"},
                      {recvCounts, nodes * 4, "recv_counts"},
                      {expanded, expandedBytes, "expanded"},
                      {expandedCounts, keys * 4, "expanded_counts"}});
  if (!frame.ok())
    return frame.status();
  if (overlap(unique, uniqueBytes, expanded, expandedBytes))
    return invalid("unique and expanded overlap");

  return frame.run(
      [&](CudaExec &x) {
        runDedupExpand(x, DedupExpandParams{
                              unique, routes, uniqueCapacity, rowBytes, k,
                              recvCounts, nodes, ranksPerNode, expertsPerRank,
                              expanded, expandedCapacity, expandedCounts});
      },
      [=](const DeviceStatus &e) {
        if (e.kind == kRowsExceedCapacity)
          return num(e.a) + " expanded rows exceed expanded_capacity " +
                 num(e.b);
        return expandError(e, k);
      });
}

} // namespace cuda
} // namespace tamoe_rt
