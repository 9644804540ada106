//===- Exec.cuh - The executor of the cuda backend's kernels ---*- CUDA -*-===//
//
// What the files of local operations share: grid-stride kernels over an
// element function, CUB sorts and scans, a vectorised row copy and
// temporaries from the backend's pool, behind CudaExec, which runs the
// pipelines of Pipelines.h; the operations' frame (Frame::run); and the
// helpers of their messages.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_CUDA_EXEC_CUH
#define TAMOE_RT_LIB_CUDA_EXEC_CUH

#include "CudaBackend.h"
#include "Pipelines.h"

#include <cub/cub.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

namespace tamoe_rt {
namespace cuda {

constexpr int kThreads = 256;

inline Status invalid(const std::string &message) {
  return Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT, message);
}

inline std::string num(int64_t value) { return std::to_string(value); }

/// "name[i, j]" of entry `flat` of a [rows, columns] array, as the cpu
/// backend names entries.
inline std::string entry(const char *name, int64_t flat, int64_t columns) {
  if (columns <= 0)
    columns = 1;
  return std::string(name) + "[" + num(flat / columns) + ", " +
         num(flat % columns) + "]";
}

/// a * b, or false when it overflows int64 (sizes come from the caller).
inline bool multiply(int64_t a, int64_t b, int64_t &result) {
  return !__builtin_mul_overflow(a, b, &result);
}

inline bool overlap(const void *a, int64_t aBytes, const void *b,
                    int64_t bBytes) {
  if (!a || !b || aBytes <= 0 || bBytes <= 0)
    return false;
  auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + static_cast<uint64_t>(bBytes) &&
         y < x + static_cast<uint64_t>(aBytes);
}

/// The bytes of aux_loss's probs [tokens, experts] and expert ids [tokens,
/// k] (forward and gradient), after checking the sizes.
inline Status auxBytes(int64_t tokens, int64_t experts, int64_t k,
                       int64_t &probBytes, int64_t &idBytes) {
  if (tokens < 0 || experts < 0 || k < 0)
    return invalid("negative size");
  if (!multiply(tokens, experts, probBytes) ||
      !multiply(probBytes, 4, probBytes) || !multiply(tokens, k, idBytes) ||
      !multiply(idBytes, 4, idBytes) || experts > INT_MAX)
    return invalid("sizes overflow");
  return Status::success();
}

/// The byte sizes of grouped_matmul's buffers (forward and gradient), after
/// checking that its sizes are in range: chunks counted in int (CUB), GEMM
/// dimensions in int (cuBLAS).
struct GroupedBytes {
  int64_t rows = 0, result = 0, weights = 0;
};
inline Status groupedBytes(int64_t rowsCapacity, int64_t hidden,
                           int64_t numCounts, int64_t experts,
                           int64_t outFeatures, GroupedBytes &bytes) {
  if (rowsCapacity < 0 || hidden < 1 || numCounts < 0 || experts < 1 ||
      outFeatures < 1)
    return invalid("rows_capacity and num_counts must be >= 0; hidden, "
                   "experts and out_features >= 1");
  if (numCounts > INT_MAX - 1 || hidden > INT_MAX || outFeatures > INT_MAX ||
      !multiply(rowsCapacity, hidden * 4, bytes.rows) ||
      !multiply(rowsCapacity, outFeatures * 4, bytes.result) ||
      !multiply(hidden, outFeatures, bytes.weights) ||
      !multiply(bytes.weights, experts * 4, bytes.weights))
    return invalid("sizes exceed what the cuda backend takes");
  return Status::success();
}

/// That dedup_pack's index steps fit the device's int sorts and scans
/// (forward and gradient): `n` = tokens * k assignments and nodes * tokens
/// cells below 2^31 - 1, the experts an int.
inline bool packFits(int64_t numTokens, int64_t k, int64_t expertsPerNode,
                     int64_t nodes, int64_t &n) {
  int64_t cells, experts;
  return multiply(numTokens, k, n) && n <= INT_MAX - 1 &&
         multiply(nodes, numTokens, cells) && cells <= INT_MAX - 1 &&
         multiply(expertsPerNode, nodes, experts) && experts <= INT_MAX;
}
inline const char *packTooLarge() {
  return "sizes exceed what the cuda backend takes (tokens * k and nodes * "
         "tokens below 2^31 - 1)";
}

/// The same for dedup_expand: `m` = unique_capacity * k route entries and
/// the [ranks_per_node, nodes, experts_per_rank] keys below 2^31 - 1.
inline bool expandFits(int64_t uniqueCapacity, int64_t k, int64_t ranksPerNode,
                       int64_t nodes, int64_t expertsPerRank, int64_t &m,
                       int64_t &keys) {
  return multiply(uniqueCapacity, k, m) && m <= INT_MAX - 1 &&
         multiply(ranksPerNode, nodes, keys) &&
         multiply(keys, expertsPerRank, keys) && keys <= INT_MAX - 1;
}
inline const char *expandTooLarge() {
  return "sizes exceed what the cuda backend takes (unique_capacity * k and "
         "the experts below 2^31 - 1)";
}

/// The message of an error that dedup_pack's index steps find (the
/// forward op's and the gradient's alike); "" for another kind.
inline std::string packError(const DeviceStatus &e, int64_t k,
                             int64_t expertsPerNode, int64_t nodes) {
  if (e.kind != kExpertOutOfRange)
    return std::string();
  return entry("expert_ids", e.a, k) + " = " + num(e.b) +
         " is out of range [0, " + num(e.c) + ") (" + num(expertsPerNode) +
         " experts on each of " + num(nodes) + " nodes)";
}

/// The message of a negative count or of counts past rows_capacity, the
/// checks of every operation on rows described by `counts`; "" for another
/// kind.
inline std::string countsError(const DeviceStatus &e) {
  if (e.kind == kNegativeCount)
    return "counts[" + num(e.a) + "] = " + num(e.b) + " is negative";
  if (e.kind == kInputRowsExceedCapacity)
    return "counts sum to " + num(e.a) + " rows but rows_capacity is " +
           num(e.b);
  return std::string();
}

/// The same for dedup_expand's.
inline std::string expandError(const DeviceStatus &e, int64_t k) {
  if (e.kind == kNegativeCount)
    return "recv_counts[" + num(e.a) + "] = " + num(e.b) + " is negative";
  if (e.kind == kInputRowsExceedCapacity)
    return "recv_counts sum to " + num(e.a) + " rows but unique_capacity is " +
           num(e.b);
  if (e.kind == kRouteInvalid)
    return entry("routes", e.a, k) + " = " + num(e.b) +
           " is neither an expert id in [0, " + num(e.c) + ") nor -1";
  return std::string();
}

/// An element of a row type as f32 (exact), and an f32 rounded to it (to
/// nearest even, as tamoe_rt_convert rounds).
__device__ inline float widen(float v) { return v; }
__device__ inline float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ inline float widen(__half v) { return __half2float(v); }
template <typename T> __device__ T narrow(float v);
template <> __device__ inline float narrow<float>(float v) { return v; }
template <> __device__ inline __nv_bfloat16 narrow<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ inline __half narrow<__half>(float v) {
  return __float2half_rn(v);
}

/// Every lane ends with the warp's sum (a fixed tree: deterministic).
__device__ inline float warpSum(float value) {
  for (int offset = 16; offset > 0; offset /= 2)
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

//===----------------------------------------------------------------------===//
// The executor of the pipelines
//===----------------------------------------------------------------------===//

/// f(i) for i < n, unless an operation before has failed: in a graph launch
/// the failure stops the kernels of the operations after it (tamoe_rt.h).
template <typename F>
__global__ void __launch_bounds__(kThreads)
    forEachKernel(int64_t n, F f, const DeviceStatus *status) {
  if (hasFailed(status))
    return;
  int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride)
    f(i);
}

/// dst row dstRows[r] = src row srcRows[r] for r < min(*numRows, bound)
/// (a null index list: row r itself), in units of V (the widest type the
/// row size and both pointers are aligned to). A block copies a row; four
/// loads are in flight per thread before the stores.
template <typename V>
__global__ void copyRowsKernel(V *__restrict__ dst, const V *__restrict__ src,
                               int64_t vectorsPerRow,
                               const int64_t *__restrict__ srcRows,
                               const int64_t *__restrict__ dstRows,
                               const int64_t *numRowsPointer, int64_t bound,
                               const DeviceStatus *status) {
  if (hasFailed(status))
    return;
  int64_t numRows = *numRowsPointer;
  if (numRows > bound)
    numRows = bound;
  const int64_t step = blockDim.x;
  for (int64_t r = blockIdx.x; r < numRows; r += gridDim.x) {
    const V *in = src + (srcRows ? srcRows[r] : r) * vectorsPerRow;
    V *out = dst + (dstRows ? dstRows[r] : r) * vectorsPerRow;
    int64_t c = threadIdx.x;
    for (; c + 3 * step < vectorsPerRow; c += 4 * step) {
      V v0 = in[c], v1 = in[c + step], v2 = in[c + 2 * step],
        v3 = in[c + 3 * step];
      out[c] = v0;
      out[c + step] = v1;
      out[c + 2 * step] = v2;
      out[c + 3 * step] = v3;
    }
    for (; c < vectorsPerRow; c += step)
      out[c] = in[c];
  }
}

class CudaExec {
public:
  CudaExec(const CudaBackend &backend, DeviceStatus *status)
      : stream_(backend.stream()), pool_(backend.pool()),
        smCount_(backend.smCount()), status_(status) {}
  CudaExec(const CudaExec &) = delete;
  CudaExec &operator=(const CudaExec &) = delete;
  ~CudaExec() { release(); }

  bool ok() const { return failure_.ok(); }
  const Status &failure() const { return failure_; }
  /// Records a failure found by the caller (the first one wins).
  void fail(const Status &status) {
    if (ok())
      failure_ = status;
  }
  DeviceStatus *status() const { return status_; }

  /// Returns the temporaries to the pool, in stream order (after the work
  /// that uses them).
  void release() {
    for (void *pointer : allocations_)
      cudaFreeAsync(pointer, stream_);
    allocations_.clear();
  }

  template <typename T> T *scratch(int64_t count) {
    if (!ok())
      return nullptr;
    if (count < 1)
      count = 1;
    if (static_cast<uint64_t>(count) > SIZE_MAX / sizeof(T)) {
      failure_ = Status::error(TAMOE_RT_ERROR_OUT_OF_MEMORY,
                               "temporary buffer size overflows");
      return nullptr;
    }
    size_t bytes = static_cast<size_t>(count) * sizeof(T);
    void *pointer = nullptr;
    cudaError_t error =
        cudaMallocFromPoolAsync(&pointer, bytes, pool_, stream_);
    if (error != cudaSuccess) {
      fail(error, "allocating " + std::to_string(bytes) +
                      " bytes of temporary device memory");
      return nullptr;
    }
    allocations_.push_back(pointer);
    return static_cast<T *>(pointer);
  }

  void zero(void *pointer, int64_t bytes) {
    if (ok() && bytes > 0)
      check(cudaMemsetAsync(pointer, 0, static_cast<size_t>(bytes), stream_),
            "cudaMemsetAsync");
  }

  void copy(void *destination, const void *source, int64_t bytes) {
    if (ok() && bytes > 0)
      check(cudaMemcpyAsync(destination, source, static_cast<size_t>(bytes),
                            cudaMemcpyDeviceToDevice, stream_),
            "cudaMemcpyAsync");
  }

  template <typename F> void forEach(int64_t n, const F &f) {
    if (!ok() || n <= 0)
      return;
    int64_t blocks = (n + kThreads - 1) / kThreads;
    int64_t most = int64_t(smCount_) * 8;
    forEachKernel<<<static_cast<unsigned>(blocks < most ? blocks : most),
                    kThreads, 0, stream_>>>(n, f, status_);
    check(cudaGetLastError(), "launching a kernel");
  }

  void sortPairs(const uint32_t *keysIn, uint32_t *keysOut,
                 const int32_t *valuesIn, int32_t *valuesOut, int64_t n,
                 int bits) {
    if (!ok() || n <= 0 || !fitsInt(n))
      return;
    size_t bytes = 0;
    if (!check(cub::DeviceRadixSort::SortPairs(
                   nullptr, bytes, keysIn, keysOut, valuesIn, valuesOut,
                   static_cast<int>(n), 0, bits, stream_),
               "cub::DeviceRadixSort::SortPairs"))
      return;
    void *temp = scratch<char>(static_cast<int64_t>(bytes));
    if (!temp)
      return;
    check(cub::DeviceRadixSort::SortPairs(
              temp, bytes, keysIn, keysOut, valuesIn, valuesOut,
              static_cast<int>(n), 0, bits, stream_),
          "cub::DeviceRadixSort::SortPairs");
  }

  void sortPairsDescending(const float *keysIn, float *keysOut,
                           const int32_t *valuesIn, int32_t *valuesOut,
                           int64_t n) {
    if (!ok() || n <= 0 || !fitsInt(n))
      return;
    size_t bytes = 0;
    if (!check(cub::DeviceRadixSort::SortPairsDescending(
                   nullptr, bytes, keysIn, keysOut, valuesIn, valuesOut,
                   static_cast<int>(n), 0, 32, stream_),
               "cub::DeviceRadixSort::SortPairsDescending"))
      return;
    void *temp = scratch<char>(static_cast<int64_t>(bytes));
    if (!temp)
      return;
    check(cub::DeviceRadixSort::SortPairsDescending(
              temp, bytes, keysIn, keysOut, valuesIn, valuesOut,
              static_cast<int>(n), 0, 32, stream_),
          "cub::DeviceRadixSort::SortPairsDescending");
  }

  template <typename T> void exclusiveSum(const T *in, T *out, int64_t n) {
    if (!ok() || n <= 0 || !fitsInt(n))
      return;
    size_t bytes = 0;
    if (!check(cub::DeviceScan::ExclusiveSum(nullptr, bytes, in, out,
                                             static_cast<int>(n), stream_),
               "cub::DeviceScan::ExclusiveSum"))
      return;
    void *temp = scratch<char>(static_cast<int64_t>(bytes));
    if (!temp)
      return;
    check(cub::DeviceScan::ExclusiveSum(temp, bytes, in, out,
                                        static_cast<int>(n), stream_),
          "cub::DeviceScan::ExclusiveSum");
  }

  /// dst row r = src row srcRows[r] (r itself when srcRows is null),
  /// r < *numRows (a gather).
  void copyRows(void *dst, const void *src, int64_t rowBytes,
                const int64_t *srcRows, const int64_t *numRows, int64_t bound) {
    moveRows(dst, src, rowBytes, srcRows, nullptr, numRows, bound);
  }

  /// dst row dstRows[r] = src row r, r < *numRows (a scatter).
  void scatterRows(void *dst, const void *src, int64_t rowBytes,
                   const int64_t *dstRows, const int64_t *numRows,
                   int64_t bound) {
    moveRows(dst, src, rowBytes, nullptr, dstRows, numRows, bound);
  }

private:
  void moveRows(void *dst, const void *src, int64_t rowBytes,
                const int64_t *srcRows, const int64_t *dstRows,
                const int64_t *numRows, int64_t bound) {
    if (!ok() || bound <= 0 || rowBytes <= 0)
      return;
    uintptr_t alignment = reinterpret_cast<uintptr_t>(dst) |
                          reinterpret_cast<uintptr_t>(src) |
                          static_cast<uintptr_t>(rowBytes);
    if (alignment % 16 == 0)
      launchCopy<uint4>(dst, src, rowBytes / 16, srcRows, dstRows, numRows,
                        bound);
    else if (alignment % 8 == 0)
      launchCopy<uint2>(dst, src, rowBytes / 8, srcRows, dstRows, numRows,
                        bound);
    else if (alignment % 4 == 0)
      launchCopy<uint32_t>(dst, src, rowBytes / 4, srcRows, dstRows, numRows,
                           bound);
    else
      launchCopy<uint8_t>(dst, src, rowBytes, srcRows, dstRows, numRows,
                          bound);
  }

  template <typename V>
  void launchCopy(void *dst, const void *src, int64_t vectors,
                  const int64_t *srcRows, const int64_t *dstRows,
                  const int64_t *numRows, int64_t bound) {
    // Enough threads for four vectors each, in whole warps, at most 256.
    int64_t threads = ((vectors + 3) / 4 + 31) / 32 * 32;
    if (threads > 256)
      threads = 256;
    if (threads < 32)
      threads = 32;
    int64_t most = int64_t(smCount_) * (2048 / threads);
    int64_t blocks = bound < most ? bound : most;
    copyRowsKernel<V>
        <<<static_cast<unsigned>(blocks), static_cast<unsigned>(threads), 0,
           stream_>>>(static_cast<V *>(dst), static_cast<const V *>(src),
                      vectors, srcRows, dstRows, numRows, bound, status_);
    check(cudaGetLastError(), "launching the row copy");
  }

  bool fitsInt(int64_t n) {
    if (n <= INT_MAX)
      return true;
    failure_ = invalid(std::to_string(n) +
                       " elements exceed what one device sort or scan takes");
    return false;
  }

  bool check(cudaError_t error, const char *what) {
    if (error == cudaSuccess)
      return true;
    fail(error, what);
    return false;
  }

  void fail(cudaError_t error, const std::string &what) {
    // Clears the error so that the operation reports it once, as here.
    cudaGetLastError();
    if (ok())
      failure_ = cudaFailure(error, what);
  }

  cudaStream_t stream_;
  cudaMemPool_t pool_;
  int smCount_;
  DeviceStatus *status_;
  Status failure_;
  std::vector<void *> allocations_;
};

template <typename Queue>
Status CudaBackend::Frame::run(Queue &&queue, const Describe &describe) {
  if (!status_.ok())
    return status_;
  if (Status begin = backend_.beginOperation(); !begin.ok())
    return begin;
  CudaExec x(backend_, backend_.deviceStatus_);
  queue(x);
  Status failure = x.failure();
  x.release();
  return backend_.endOperation(failure, describe);
}

/// What a kExpertOutOfRange names: "expert_ids[t, j] = v is out of range
/// [0, E)", of ids [tokens, k].
inline std::string expertIdOutOfRange(const DeviceStatus &e, int64_t k) {
  return entry("expert_ids", e.a, k) + " = " + num(e.b) +
         " is out of range [0, " + num(e.c) + ")";
}

/// What a kPositionOutOfRange names: "positions[t, j] = p is past the R rows
/// of expert_outputs", of positions [tokens, k].
inline std::string positionPastRows(const DeviceStatus &e, int64_t k) {
  return entry("positions", e.a, k) + " = " + num(e.b) + " is past the " +
         num(e.c) + " rows of expert_outputs";
}

/// The describe of an operation whose kernels find nothing wrong in its
/// data (their failures are CUDA's own).
inline std::string noMessage(const DeviceStatus &) { return std::string(); }

} // namespace cuda
} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_CUDA_EXEC_CUH
