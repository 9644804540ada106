//===- Pipelines.h - Index pipelines of the cuda backend ----------*- C++
//-*-===//
//
// dispatch, regroup, dedup_pack and dedup_expand are, on the GPU, a few
// data-parallel steps (element-wise maps, stable radix sorts on small integer
// keys, exclusive scans) followed by one row copy; the gradients of combine
// (its expert rows), dedup_pack and dedup_expand are the same index steps
// followed by a gather of f32 rows in a fixed order (no float atomics). This
// header writes each operation once as such a sequence over an abstract
// executor:
//
//   Exec::scratch<T>(n)         n elements of temporary memory (never null
//                               unless the executor has failed)
//   Exec::zero(p, bytes)
//   Exec::forEach(n, f)         f(i) for every i in [0, n), in any order
//   Exec::sortPairs(...)        stable sort of (uint32 key, int32 value)
//   Exec::sortPairsDescending   stable sort of (float key, int32 value), desc
//   Exec::exclusiveSum(in, out, n)  int32 or int64
//   Exec::copyRows(...)         dst row r = src row srcRows[r] (or r when
//                               srcRows is null), r < *numRows
//   Exec::scatterRows(...)      dst row dstRows[r] = src row r, r < *numRows
//   Exec::status()              the DeviceStatus the element functions report
//   to Exec::ok()                  false once a host-side step failed
//
// The cuda backend runs it with kernels and CUB; a host test
// (test/PipelineTest.cpp) runs the very same code with loops and std
// algorithms and compares it with a direct implementation of the semantics,
// so the index logic is tested on machines without a GPU.
//
// Errors found in the data are reported to a DeviceStatus (first error wins)
// and every step that writes an output checks it first: an invalid input
// never causes a write out of bounds, and outputs stay untouched where
// possible.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_CUDA_PIPELINES_H
#define TAMOE_RT_LIB_CUDA_PIPELINES_H

#include "tamoe_rt/tamoe_rt.h"

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define TAMOE_HD __host__ __device__
#else
#define TAMOE_HD
#endif

namespace tamoe_rt {
namespace cuda {

/// What went wrong, for the host to turn into a message.
enum ErrorKind : int32_t {
  kNoError = 0,
  kExpertOutOfRange,        // a = assignment, b = expert id, c = bound
  kRowsExceedCapacity,      // a = rows, b = capacity
  kNegativeCount,           // a = index, b = count
  kPositionOutOfRange,      // a = assignment, b = position, c = rows
  kRouteInvalid,            // a = route entry, b = value, c = experts
  kInputRowsExceedCapacity, // a = rows the counts describe, b = capacity
  kGradientRowsExceed,      // a = rows the routing makes, b = the capacity
                            // of the gradient that holds them
  kPartRowsExceedCapacity,  // a = rows of the part, b = chunk capacity
  kPositionOutsideBlock,    // a = assignment, b = position, c = expert
  kCountSumOverflows,       // a = index, b = a[index], c = b[index]
  kCountExceedsSlot,        // a = index, b = count, c = rows per slot
};

/// The first error an operation found in its data. Lives in device memory;
/// the host reads it once the operation's work has finished.
struct DeviceStatus {
  int32_t code; // a tamoe_rt_status_t, 0 while fine
  int32_t kind; // an ErrorKind
  int64_t a, b, c;
  /// In a recorded graph, which operation failed (1-based; 0 until the
  /// host's stamp after the failing operation writes it).
  int64_t operation;
};

TAMOE_HD inline void reportError(DeviceStatus *status, int32_t code,
                                 int32_t kind, int64_t a, int64_t b,
                                 int64_t c) {
#ifdef __CUDA_ARCH__
  // Only the first reporter writes the details, so they stay consistent.
  if (atomicCAS(reinterpret_cast<int *>(&status->code), 0, code) != 0)
    return;
#else
  if (status->code != 0)
    return;
  status->code = code;
#endif
  status->kind = kind;
  status->a = a;
  status->b = b;
  status->c = c;
}

TAMOE_HD inline bool hasFailed(const DeviceStatus *status) {
  return *static_cast<const volatile int32_t *>(&status->code) != 0;
}

/// A score's or weight's rank, as the cpu backend's (tamoe_rt.h): NaN as
/// -inf, so a row of NaN scores (overflowed logits) still picks k experts
/// and its NaN reaches the loss for the host to see.
TAMOE_HD inline float rankOf(float v) { return v != v ? -INFINITY : v; }

/// First index in sorted a[0, n) whose value is not below v.
template <typename T>
TAMOE_HD inline int64_t lowerBound(const T *a, int64_t n, T v) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (a[mid] < v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/// First index in sorted a[0, n) whose value is above v.
template <typename T>
TAMOE_HD inline int64_t upperBound(const T *a, int64_t n, T v) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    if (a[mid] <= v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/// Bits a radix sort needs for keys in [0, maxKey].
inline int keyBits(int64_t maxKey) {
  int bits = 1;
  while (bits < 32 && (int64_t(1) << bits) <= maxKey)
    ++bits;
  return bits;
}

inline int64_t minOf(int64_t a, int64_t b) { return a < b ? a : b; }

//===----------------------------------------------------------------------===//
// Element functions shared by the pipelines
//===----------------------------------------------------------------------===//

/// start[key] = first position of `key` in the sorted keys, for every key in
/// [0, numKeys]; with the sentinel numKeys sorted last, start[numKeys] is the
/// number of real keys and start[key + 1] - start[key] the count of key.
struct SegmentStarts {
  const uint32_t *sortedKeys;
  int64_t n;
  int32_t *start;
  TAMOE_HD void operator()(int64_t key) const {
    start[key] = static_cast<int32_t>(
        lowerBound(sortedKeys, n, static_cast<uint32_t>(key)));
  }
};

/// Checks that `*rows` fits `capacity` and publishes the rows to copy.
struct RowsCheck {
  const int64_t *rows;
  int64_t capacity;
  int32_t code;
  int32_t kind;
  int64_t *numRows;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t) const {
    *numRows = 0;
    if (hasFailed(status))
      return;
    int64_t value = *rows;
    if (value > capacity) {
      reportError(status, code, kind, value, capacity, 0);
      return;
    }
    *numRows = value;
  }
};

/// The same for an int32 total.
struct RowsCheck32 {
  const int32_t *rows;
  int64_t capacity;
  int32_t code;
  int32_t kind;
  int64_t *numRows;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t) const {
    *numRows = 0;
    if (hasFailed(status))
      return;
    int64_t value = *rows;
    if (value > capacity) {
      reportError(status, code, kind, value, capacity, 0);
      return;
    }
    *numRows = value;
  }
};

/// counts[e] += 1 for every assignment that aux_loss counts: an expert id
/// >= 0 (one past the experts is an error) that the dispatch kept. The
/// counts are integers, so the order of the additions does not matter.
struct CountAssignments {
  const int32_t *ids;
  const int32_t *positions; // null: every assignment was kept
  int64_t experts;
  int32_t *counts;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    int32_t expert = ids[i];
    if (expert < 0)
      return;
    if (expert >= experts) {
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT, kExpertOutOfRange, i,
                  expert, experts);
      return;
    }
    if (positions && positions[i] < 0)
      return;
#ifdef __CUDA_ARCH__
    atomicAdd(counts + expert, 1);
#else
    ++counts[expert];
#endif
  }
};

//===----------------------------------------------------------------------===//
// dispatch
//===----------------------------------------------------------------------===//

struct DispatchParams {
  const void *tokens;
  int64_t numTokens;
  int64_t rowBytes;
  const int32_t *expertIds;
  int64_t k;
  int64_t experts;
  const float *weights;
  int64_t capacity; // < 0: dropless
  tamoe_rt_drop_t drop;
  void *dispatched;
  int64_t dispatchedCapacity;
  int32_t *expertCounts;
  int32_t *positions;
  int64_t *numDropped;
};

/// keys[i] = expert of assignment i (the sentinel `experts` when invalid),
/// values[i] = i.
struct DispatchKeys {
  const int32_t *ids;
  int64_t experts;
  uint32_t *keys;
  int32_t *values;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    int32_t expert = ids[i];
    values[i] = static_cast<int32_t>(i);
    if (expert < 0 || expert >= experts) {
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT, kExpertOutOfRange, i,
                  expert, experts);
      keys[i] = static_cast<uint32_t>(experts);
      return;
    }
    keys[i] = static_cast<uint32_t>(expert);
  }
};

/// kept[e]: the rows expert e keeps (all when dropless); kept[experts] = 0
/// so that an exclusive sum over experts + 1 entries ends with the total.
struct KeptCounts {
  const int32_t *start;
  int64_t experts;
  int64_t capacity;
  int32_t *kept;
  TAMOE_HD void operator()(int64_t e) const {
    if (e == experts) {
      kept[e] = 0;
      return;
    }
    int64_t count = start[e + 1] - start[e];
    kept[e] = static_cast<int32_t>(
        capacity < 0 ? count : (count < capacity ? count : capacity));
  }
};

/// Keep flags in expert-then-assignment order when the earliest assignments
/// of each expert stay (dropless: all). flags[n] = 0 ends the scan input.
struct KeptByPosition {
  const uint32_t *sortedKeys;
  const int32_t *start;
  int64_t experts;
  int64_t capacity;
  int64_t n;
  int32_t *flags;
  TAMOE_HD void operator()(int64_t p) const {
    if (p == n) {
      flags[p] = 0;
      return;
    }
    uint32_t expert = sortedKeys[p];
    if (expert >= experts) {
      flags[p] = 0;
      return;
    }
    flags[p] = capacity < 0 || p - start[expert] < capacity;
  }
};

/// Sort keys for "highest weight first", ranked as on the host: -0 and +0
/// compare equal and NaN ranks as -inf, while a radix sort orders
/// their bits (-0 below +0, +NaN above +inf).
struct WeightKeys {
  const float *weights;
  float *keys;
  int32_t *values;
  TAMOE_HD void operator()(int64_t i) const {
    float w = weights[i];
    keys[i] = w == 0.0f ? 0.0f : rankOf(w);
    values[i] = static_cast<int32_t>(i);
  }
};

struct GatherKeys {
  const uint32_t *keys;
  const int32_t *order;
  uint32_t *out;
  TAMOE_HD void operator()(int64_t p) const { out[p] = keys[order[p]]; }
};

/// In an order that is expert, then weight descending, then assignment:
/// an assignment is kept when it is among its expert's first `capacity`.
struct KeptByRank {
  const uint32_t *sortedKeys;
  const int32_t *sequence;
  const int32_t *start;
  int64_t experts;
  int64_t capacity;
  int32_t *keptByAssignment;
  TAMOE_HD void operator()(int64_t p) const {
    uint32_t expert = sortedKeys[p];
    keptByAssignment[sequence[p]] =
        expert < experts && p - start[expert] < capacity;
  }
};

struct GatherFlags {
  const int32_t *keptByAssignment;
  const int32_t *sortedAssignments;
  int64_t n;
  int32_t *flags;
  TAMOE_HD void operator()(int64_t p) const {
    flags[p] = p == n ? 0 : keptByAssignment[sortedAssignments[p]];
  }
};

struct DispatchFinish {
  const int32_t *keptStart; // [experts + 1]
  int64_t experts;
  int64_t n;
  int64_t dispatchedCapacity;
  int64_t *numRows;
  int64_t *numDropped;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t) const {
    *numRows = 0;
    if (hasFailed(status))
      return;
    int64_t total = keptStart[experts];
    if (total > dispatchedCapacity) {
      reportError(status, TAMOE_RT_ERROR_CAPACITY_EXCEEDED, kRowsExceedCapacity,
                  total, dispatchedCapacity, 0);
      return;
    }
    *numRows = total;
    *numDropped = n - total;
  }
};

struct CopyCounts {
  const int32_t *source;
  int32_t *destination;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    if (!hasFailed(status))
      destination[i] = source[i];
  }
};

/// positions of every assignment, and the source token of each output row.
struct DispatchScatter {
  const int32_t *sortedAssignments;
  const int32_t *flags;
  const int32_t *outRow;
  int64_t k;
  int64_t bound;
  int32_t *positions;
  int64_t *srcRows;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t p) const {
    if (hasFailed(status))
      return;
    int32_t assignment = sortedAssignments[p];
    if (!flags[p]) {
      positions[assignment] = -1;
      return;
    }
    int32_t row = outRow[p];
    if (row >= bound)
      return; // unreachable: DispatchFinish checked the total
    positions[assignment] = row;
    srcRows[row] = assignment / k;
  }
};

template <typename Exec> void runDispatch(Exec &x, const DispatchParams &p) {
  DeviceStatus *status = x.status();
  const int64_t n = p.numTokens * p.k;
  const int64_t experts = p.experts;
  const int bits = keyBits(experts);

  uint32_t *keys = x.template scratch<uint32_t>(n);
  int32_t *values = x.template scratch<int32_t>(n);
  uint32_t *sortedKeys = x.template scratch<uint32_t>(n);
  int32_t *sortedAssignments = x.template scratch<int32_t>(n);
  int32_t *start = x.template scratch<int32_t>(experts + 1);
  int32_t *kept = x.template scratch<int32_t>(experts + 1);
  int32_t *keptStart = x.template scratch<int32_t>(experts + 1);
  int32_t *flags = x.template scratch<int32_t>(n + 1);
  int32_t *outRow = x.template scratch<int32_t>(n + 1);
  int64_t *numRows = x.template scratch<int64_t>(1);
  const int64_t bound = minOf(n, p.dispatchedCapacity);
  int64_t *srcRows = x.template scratch<int64_t>(bound);
  if (!x.ok())
    return;

  // Stable by expert, so within an expert by token, then slot.
  x.forEach(n, DispatchKeys{p.expertIds, experts, keys, values, status});
  x.sortPairs(keys, sortedKeys, values, sortedAssignments, n, bits);
  x.forEach(experts + 1, SegmentStarts{sortedKeys, n, start});
  x.forEach(experts + 1, KeptCounts{start, experts, p.capacity, kept});
  x.exclusiveSum(kept, keptStart, experts + 1);

  if (p.capacity >= 0 && p.drop == TAMOE_RT_DROP_PROBABILITY) {
    // Rank each expert's assignments by weight (descending), ties by
    // assignment: a stable sort by weight of the assignments in order, then
    // a stable sort of that sequence by expert.
    float *weightKeys = x.template scratch<float>(n);
    float *sortedWeights = x.template scratch<float>(n);
    int32_t *iota = x.template scratch<int32_t>(n);
    int32_t *byWeight = x.template scratch<int32_t>(n);
    uint32_t *expertsByWeight = x.template scratch<uint32_t>(n);
    uint32_t *rankedKeys = x.template scratch<uint32_t>(n);
    int32_t *ranked = x.template scratch<int32_t>(n);
    int32_t *keptByAssignment = x.template scratch<int32_t>(n);
    if (!x.ok())
      return;
    x.forEach(n, WeightKeys{p.weights, weightKeys, iota});
    x.sortPairsDescending(weightKeys, sortedWeights, iota, byWeight, n);
    x.forEach(n, GatherKeys{keys, byWeight, expertsByWeight});
    x.sortPairs(expertsByWeight, rankedKeys, byWeight, ranked, n, bits);
    x.forEach(n, KeptByRank{rankedKeys, ranked, start, experts, p.capacity,
                            keptByAssignment});
    x.forEach(n + 1,
              GatherFlags{keptByAssignment, sortedAssignments, n, flags});
  } else {
    x.forEach(n + 1,
              KeptByPosition{sortedKeys, start, experts, p.capacity, n, flags});
  }
  // Kept rows stay in expert-then-token order: the output row of a kept
  // assignment is the number of kept assignments before it.
  x.exclusiveSum(flags, outRow, n + 1);
  x.forEach(1, DispatchFinish{keptStart, experts, n, p.dispatchedCapacity,
                              numRows, p.numDropped, status});
  x.forEach(experts, CopyCounts{kept, p.expertCounts, status});
  x.forEach(n, DispatchScatter{sortedAssignments, flags, outRow, p.k, bound,
                               p.positions, srcRows, status});
  x.copyRows(p.dispatched, p.tokens, p.rowBytes, srcRows, numRows, bound);
}

//===----------------------------------------------------------------------===//
// regroup
//===----------------------------------------------------------------------===//

struct RegroupParams {
  const void *rows;
  int64_t rowsCapacity;
  int64_t rowBytes;
  const int32_t *counts;
  int64_t a, b, inner;
  void *regrouped;
  int32_t *regroupedCounts;
};

/// The index of chunk (x, y, s) of an [a, b, inner] grid in the [b, a, inner]
/// grid, and back.
TAMOE_HD inline int64_t transposedIndex(int64_t i, int64_t a, int64_t b,
                                        int64_t inner) {
  int64_t x = i / (b * inner), y = (i / inner) % b, s = i % inner;
  return (y * a + x) * inner + s;
}

struct RegroupCounts {
  const int32_t *counts;
  int64_t a, b, inner, n;
  int64_t *inCounts;
  int64_t *outCounts;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    if (i == n) {
      inCounts[n] = 0;
      outCounts[n] = 0;
      return;
    }
    int64_t count = counts[i];
    if (count < 0) {
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT, kNegativeCount, i,
                  count, 0);
      count = 0;
    }
    inCounts[i] = count;
    outCounts[transposedIndex(i, a, b, inner)] = count;
  }
};

struct RegroupWriteCounts {
  const int32_t *counts;
  int64_t a, b, inner;
  int32_t *out;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    if (!hasFailed(status))
      out[transposedIndex(i, a, b, inner)] = counts[i];
  }
};

struct RegroupSources {
  const int64_t *inOffsets;  // [n + 1], input order
  const int64_t *outOffsets; // [n + 1], output order
  int64_t a, b, inner, n;
  const int64_t *numRows;
  int64_t *srcRows;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t r) const {
    if (hasFailed(status) || r >= *numRows)
      return;
    // The output chunk holding row r: the last one starting at or before r
    // (empty chunks start where the next begins, so it is never empty).
    int64_t o = upperBound(outOffsets, n + 1, r) - 1;
    // Output chunk o = (y, x, s) of the [b, a, inner] grid.
    int64_t y = o / (a * inner), x = (o / inner) % a, s = o % inner;
    int64_t i = (x * b + y) * inner + s;
    srcRows[r] = inOffsets[i] + (r - outOffsets[o]);
  }
};

template <typename Exec> void runRegroup(Exec &x, const RegroupParams &p) {
  DeviceStatus *status = x.status();
  const int64_t n = p.a * p.b * p.inner;
  int64_t *inCounts = x.template scratch<int64_t>(n + 1);
  int64_t *outCounts = x.template scratch<int64_t>(n + 1);
  int64_t *inOffsets = x.template scratch<int64_t>(n + 1);
  int64_t *outOffsets = x.template scratch<int64_t>(n + 1);
  int64_t *numRows = x.template scratch<int64_t>(1);
  int64_t *srcRows = x.template scratch<int64_t>(p.rowsCapacity);
  if (!x.ok())
    return;
  x.forEach(n + 1, RegroupCounts{p.counts, p.a, p.b, p.inner, n, inCounts,
                                 outCounts, status});
  x.exclusiveSum(inCounts, inOffsets, n + 1);
  x.exclusiveSum(outCounts, outOffsets, n + 1);
  // Counts beyond the rows there are: bad input, not a full output.
  x.forEach(1, RowsCheck{inOffsets + n, p.rowsCapacity,
                         TAMOE_RT_ERROR_INVALID_ARGUMENT,
                         kInputRowsExceedCapacity, numRows, status});
  x.forEach(n, RegroupWriteCounts{p.counts, p.a, p.b, p.inner,
                                  p.regroupedCounts, status});
  x.forEach(p.rowsCapacity,
            RegroupSources{inOffsets, outOffsets, p.a, p.b, p.inner, n, numRows,
                           srcRows, status});
  x.copyRows(p.regrouped, p.rows, p.rowBytes, srcRows, numRows, p.rowsCapacity);
}

//===----------------------------------------------------------------------===//
// dedup_pack
//===----------------------------------------------------------------------===//

struct DedupPackParams {
  const void *tokens;
  int64_t numTokens;
  int64_t rowBytes;
  const int32_t *expertIds;
  const int32_t *positions;
  int64_t k;
  int64_t expertsPerNode;
  int64_t nodes;
  void *unique;
  int32_t *routes;
  int64_t uniqueCapacity;
  int32_t *nodeCounts;
};

/// flags[node * tokens + token] = 1 when the token has a dispatched
/// assignment to an expert of the node.
struct PackMark {
  const int32_t *ids;
  const int32_t *positions;
  int64_t k, tokens, expertsPerNode, nodes;
  int32_t *flags;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    if (positions[i] < 0)
      return;
    int32_t expert = ids[i];
    int64_t bound = expertsPerNode * nodes;
    if (expert < 0 || expert >= bound) {
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT, kExpertOutOfRange, i,
                  expert, bound);
      return;
    }
    flags[(expert / expertsPerNode) * tokens + i / k] = 1;
  }
};

struct PackNodeCounts {
  const int32_t *offsets;
  int64_t tokens;
  int32_t *nodeCounts;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t node) const {
    if (!hasFailed(status))
      nodeCounts[node] = offsets[(node + 1) * tokens] - offsets[node * tokens];
  }
};

struct PackEmit {
  const int32_t *flags;
  const int32_t *offsets;
  const int32_t *ids;
  const int32_t *positions;
  int64_t k, tokens, expertsPerNode, bound;
  int32_t *routes;
  int64_t *srcRows;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t q) const {
    if (hasFailed(status) || !flags[q])
      return;
    int64_t row = offsets[q];
    if (row >= bound)
      return; // unreachable: the total was checked
    int64_t node = q / tokens, token = q % tokens;
    srcRows[row] = token;
    int32_t *route = routes + row * k;
    int64_t slot = 0;
    // ids are valid wherever the position is: PackMark checked them.
    for (int64_t j = 0; j < k; ++j) {
      int64_t a = token * k + j;
      if (positions[a] >= 0 && ids[a] / expertsPerNode == node)
        route[slot++] = ids[a];
    }
    for (; slot < k; ++slot)
      route[slot] = -1;
  }
};

/// The pack's layout: flags[node * tokens + t] when token t makes a row for
/// the node, offsets[...] that row (node, then token order); offsets[cells]
/// counts the rows. Both have nodes * tokens + 1 entries.
template <typename Exec>
void packLayout(Exec &x, const int32_t *expertIds, const int32_t *positions,
                int64_t numTokens, int64_t k, int64_t expertsPerNode,
                int64_t nodes, int32_t *flags, int32_t *offsets) {
  const int64_t cells = nodes * numTokens;
  x.zero(flags, (cells + 1) * sizeof(int32_t));
  x.forEach(numTokens * k, PackMark{expertIds, positions, k, numTokens,
                                    expertsPerNode, nodes, flags, x.status()});
  // A row's index is the flags before it.
  x.exclusiveSum(flags, offsets, cells + 1);
}

template <typename Exec> void runDedupPack(Exec &x, const DedupPackParams &p) {
  DeviceStatus *status = x.status();
  const int64_t cells = p.nodes * p.numTokens;
  const int64_t bound = minOf(cells, p.uniqueCapacity);
  int32_t *flags = x.template scratch<int32_t>(cells + 1);
  int32_t *offsets = x.template scratch<int32_t>(cells + 1);
  int64_t *numRows = x.template scratch<int64_t>(1);
  int64_t *srcRows = x.template scratch<int64_t>(bound);
  if (!x.ok())
    return;
  packLayout(x, p.expertIds, p.positions, p.numTokens, p.k, p.expertsPerNode,
             p.nodes, flags, offsets);
  x.forEach(1, RowsCheck32{offsets + cells, p.uniqueCapacity,
                           TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
                           kRowsExceedCapacity, numRows, status});
  x.forEach(p.nodes,
            PackNodeCounts{offsets, p.numTokens, p.nodeCounts, status});
  x.forEach(cells,
            PackEmit{flags, offsets, p.expertIds, p.positions, p.k, p.numTokens,
                     p.expertsPerNode, bound, p.routes, srcRows, status});
  x.copyRows(p.unique, p.tokens, p.rowBytes, srcRows, numRows, bound);
}

//===----------------------------------------------------------------------===//
// dedup_expand
//===----------------------------------------------------------------------===//

struct DedupExpandParams {
  const void *unique;
  const int32_t *routes;
  int64_t uniqueCapacity;
  int64_t rowBytes;
  int64_t k;
  const int32_t *recvCounts;
  int64_t nodes;
  int64_t ranksPerNode;
  int64_t expertsPerRank;
  void *expanded;
  int64_t expandedCapacity;
  int32_t *expandedCounts;
};

struct SourceCounts {
  const int32_t *counts;
  int64_t n;
  int64_t *out;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    if (i == n) {
      out[n] = 0;
      return;
    }
    int64_t count = counts[i];
    if (count < 0) {
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT, kNegativeCount, i,
                  count, 0);
      count = 0;
    }
    out[i] = count;
  }
};

/// key of route entry q = (row, slot): (destination local index, source
/// node, expert within its rank); the sentinel for -1 padding and rows past
/// the received ones. values keep the entry, so a stable sort orders equal
/// keys by arrival. As on the cpu, an id that is neither one of the
/// nodes * ranks_per_node * experts_per_rank experts nor -1 is an error.
struct ExpandKeys {
  const int32_t *routes;
  const int64_t *sourceOffsets; // [nodes + 1]
  int64_t k, nodes, ranksPerNode, expertsPerRank;
  uint32_t sentinel;
  uint32_t *keys;
  int32_t *values;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t q) const {
    values[q] = static_cast<int32_t>(q);
    keys[q] = sentinel;
    if (hasFailed(status))
      return;
    int64_t row = q / k;
    if (row >= sourceOffsets[nodes])
      return;
    int32_t expert = routes[q];
    const int64_t experts = nodes * ranksPerNode * expertsPerRank;
    if (expert < -1 || expert >= experts) {
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT, kRouteInvalid, q,
                  expert, experts);
      return;
    }
    if (expert < 0)
      return;
    int64_t source = upperBound(sourceOffsets, nodes + 1, row) - 1;
    int64_t local = (expert / expertsPerRank) % ranksPerNode;
    keys[q] = static_cast<uint32_t>((local * nodes + source) * expertsPerRank +
                                    expert % expertsPerRank);
  }
};

/// counts[key] = entries with that key, from SegmentStarts.
struct SegmentCounts {
  const int32_t *start;
  int32_t *counts;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t key) const {
    if (!hasFailed(status))
      counts[key] = start[key + 1] - start[key];
  }
};

struct ExpandSources {
  const int32_t *sortedValues;
  int64_t k;
  const int64_t *numRows;
  int64_t *srcRows;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t p) const {
    if (hasFailed(status) || p >= *numRows)
      return;
    srcRows[p] = sortedValues[p] / k;
  }
};

/// The expansion's order: sortedValues[p] is the route entry (row * k +
/// slot) that expanded row p comes from; start [numKeys + 1] gives each
/// key's first row, start[numKeys] the number of rows. Null when a
/// temporary could not be had.
struct ExpandOrder {
  int32_t *sortedValues = nullptr, *start = nullptr;
  int64_t numKeys = 0;
};

template <typename Exec>
ExpandOrder expandOrder(Exec &x, const int32_t *routes, int64_t uniqueCapacity,
                        int64_t k, const int32_t *recvCounts, int64_t nodes,
                        int64_t ranksPerNode, int64_t expertsPerRank) {
  DeviceStatus *status = x.status();
  const int64_t m = uniqueCapacity * k;
  ExpandOrder order;
  order.numKeys = ranksPerNode * nodes * expertsPerRank;
  int64_t *sourceCounts = x.template scratch<int64_t>(nodes + 1);
  int64_t *sourceOffsets = x.template scratch<int64_t>(nodes + 1);
  int64_t *receivedRows = x.template scratch<int64_t>(1);
  uint32_t *keys = x.template scratch<uint32_t>(m);
  int32_t *values = x.template scratch<int32_t>(m);
  uint32_t *sortedKeys = x.template scratch<uint32_t>(m);
  int32_t *sortedValues = x.template scratch<int32_t>(m);
  int32_t *start = x.template scratch<int32_t>(order.numKeys + 1);
  if (!x.ok())
    return order;
  x.forEach(nodes + 1, SourceCounts{recvCounts, nodes, sourceCounts, status});
  x.exclusiveSum(sourceCounts, sourceOffsets, nodes + 1);
  x.forEach(1, RowsCheck{sourceOffsets + nodes, uniqueCapacity,
                         TAMOE_RT_ERROR_INVALID_ARGUMENT,
                         kInputRowsExceedCapacity, receivedRows, status});
  x.forEach(m, ExpandKeys{routes, sourceOffsets, k, nodes, ranksPerNode,
                          expertsPerRank, static_cast<uint32_t>(order.numKeys),
                          keys, values, status});
  x.sortPairs(keys, sortedKeys, values, sortedValues, m,
              keyBits(order.numKeys));
  x.forEach(order.numKeys + 1, SegmentStarts{sortedKeys, m, start});
  order.sortedValues = sortedValues;
  order.start = start;
  return order;
}

template <typename Exec>
void runDedupExpand(Exec &x, const DedupExpandParams &p) {
  DeviceStatus *status = x.status();
  const int64_t m = p.uniqueCapacity * p.k;
  const int64_t bound = minOf(m, p.expandedCapacity);
  ExpandOrder order =
      expandOrder(x, p.routes, p.uniqueCapacity, p.k, p.recvCounts, p.nodes,
                  p.ranksPerNode, p.expertsPerRank);
  int64_t *numRows = x.template scratch<int64_t>(1);
  int64_t *srcRows = x.template scratch<int64_t>(bound);
  if (!x.ok())
    return;
  const int64_t numKeys = order.numKeys;
  int32_t *start = order.start, *sortedValues = order.sortedValues;
  x.forEach(1, RowsCheck32{start + numKeys, p.expandedCapacity,
                           TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
                           kRowsExceedCapacity, numRows, status});
  x.forEach(numKeys, SegmentCounts{start, p.expandedCounts, status});
  x.forEach(bound, ExpandSources{sortedValues, p.k, numRows, srcRows, status});
  x.copyRows(p.expanded, p.unique, p.rowBytes, srcRows, numRows, bound);
}

//===----------------------------------------------------------------------===//
// Gradients: combine_grad's expert rows, dedup_pack_grad, dedup_expand_grad
//
// Each output element gathers its terms in the order tamoe_rt.h gives, the
// same order as the cpu backend's loops (which add the same floats in the
// same order, so where no product is involved the results are identical).
//===----------------------------------------------------------------------===//

struct CombineGradParams {
  int64_t rows;
  int64_t hidden;
  const int32_t *positions;
  const float *weights; // null: all 1
  int64_t tokens;
  int64_t k;
  const float *dCombined;
  float *dExpertOutputs; // null: only the positions are checked
};

/// keys[a] = the row assignment a names (the sentinel `rows` when it was
/// dropped), values[a] = a; a position past the rows is an error.
struct PositionKeys {
  const int32_t *positions;
  int64_t rows;
  uint32_t *keys;
  int32_t *values;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t a) const {
    int32_t position = positions[a];
    values[a] = static_cast<int32_t>(a);
    keys[a] = static_cast<uint32_t>(rows);
    if (position >= rows)
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT, kPositionOutOfRange,
                  a, position, rows);
    else if (position >= 0)
      keys[a] = static_cast<uint32_t>(position);
  }
};

/// d_expert_outputs[r, h]: the terms of the assignments that name row r,
/// in assignment order (the stable sort kept it); zero for no assignment.
struct GatherAssignments {
  const int32_t *start;
  const int32_t *assignments;
  const float *weights;
  const float *dCombined;
  int64_t hidden, k;
  float *out;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    if (hasFailed(status))
      return;
    int64_t r = i / hidden, h = i % hidden;
    float sum = 0.0f;
    for (int32_t s = start[r]; s < start[r + 1]; ++s) {
      int32_t a = assignments[s];
      sum += (weights ? weights[a] : 1.0f) * dCombined[a / k * hidden + h];
    }
    out[i] = sum;
  }
};

template <typename Exec>
void runCombineGrad(Exec &x, const CombineGradParams &p) {
  DeviceStatus *status = x.status();
  const int64_t n = p.tokens * p.k;
  uint32_t *keys = x.template scratch<uint32_t>(n);
  int32_t *values = x.template scratch<int32_t>(n);
  uint32_t *sortedKeys = x.template scratch<uint32_t>(n);
  int32_t *sortedValues = x.template scratch<int32_t>(n);
  int32_t *start = x.template scratch<int32_t>(p.rows + 1);
  if (!x.ok())
    return;
  x.forEach(n, PositionKeys{p.positions, p.rows, keys, values, status});
  if (!p.dExpertOutputs)
    return;
  x.sortPairs(keys, sortedKeys, values, sortedValues, n, keyBits(p.rows));
  x.forEach(p.rows + 1, SegmentStarts{sortedKeys, n, start});
  x.forEach(p.rows * p.hidden,
            GatherAssignments{start, sortedValues, p.weights, p.dCombined,
                              p.hidden, p.k, p.dExpertOutputs, status});
}

struct DedupPackGradParams {
  const float *dUnique;
  int64_t uniqueCapacity;
  int64_t hidden;
  const int32_t *expertIds;
  const int32_t *positions;
  int64_t numTokens;
  int64_t k;
  int64_t expertsPerNode;
  int64_t nodes;
  float *dTokens;
};

/// d_tokens[t, h]: the rows token t made, in node order; zero for none.
struct PackGather {
  const int32_t *flags;
  const int32_t *offsets;
  const float *dUnique;
  int64_t tokens, nodes, hidden;
  float *dTokens;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    if (hasFailed(status))
      return;
    int64_t t = i / hidden, h = i % hidden;
    float sum = 0.0f;
    for (int64_t node = 0; node < nodes; ++node) {
      int64_t q = node * tokens + t;
      if (flags[q])
        sum += dUnique[offsets[q] * hidden + h];
    }
    dTokens[i] = sum;
  }
};

template <typename Exec>
void runDedupPackGrad(Exec &x, const DedupPackGradParams &p) {
  DeviceStatus *status = x.status();
  const int64_t cells = p.nodes * p.numTokens;
  int32_t *flags = x.template scratch<int32_t>(cells + 1);
  int32_t *offsets = x.template scratch<int32_t>(cells + 1);
  int64_t *numRows = x.template scratch<int64_t>(1);
  if (!x.ok())
    return;
  packLayout(x, p.expertIds, p.positions, p.numTokens, p.k, p.expertsPerNode,
             p.nodes, flags, offsets);
  // The rows the pack made must all be in d_unique.
  x.forEach(1, RowsCheck32{offsets + cells, p.uniqueCapacity,
                           TAMOE_RT_ERROR_INVALID_ARGUMENT, kGradientRowsExceed,
                           numRows, status});
  x.forEach(p.numTokens * p.hidden,
            PackGather{flags, offsets, p.dUnique, p.numTokens, p.nodes,
                       p.hidden, p.dTokens, status});
}

struct DedupExpandGradParams {
  const float *dExpanded;
  int64_t expandedCapacity;
  int64_t hidden;
  const int32_t *routes;
  int64_t uniqueCapacity;
  int64_t k;
  const int32_t *recvCounts;
  int64_t nodes;
  int64_t ranksPerNode;
  int64_t expertsPerRank;
  float *dUnique;
};

struct Fill32 {
  int32_t *out;
  int32_t value;
  TAMOE_HD void operator()(int64_t i) const { out[i] = value; }
};

/// rowOf[entry] = the expanded row made of that route entry.
struct ExpandedRowOf {
  const int32_t *sortedValues;
  const int64_t *numRows;
  int32_t *rowOf;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t p) const {
    if (!hasFailed(status) && p < *numRows)
      rowOf[sortedValues[p]] = static_cast<int32_t>(p);
  }
};

/// d_unique[u, h]: the expanded rows made of unique row u, in route order;
/// zero past the received rows.
struct ExpandGather {
  const int32_t *rowOf;
  const float *dExpanded;
  int64_t k, hidden;
  float *dUnique;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    if (hasFailed(status))
      return;
    int64_t u = i / hidden, h = i % hidden;
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      int32_t row = rowOf[u * k + j];
      if (row >= 0)
        sum += dExpanded[int64_t(row) * hidden + h];
    }
    dUnique[i] = sum;
  }
};

template <typename Exec>
void runDedupExpandGrad(Exec &x, const DedupExpandGradParams &p) {
  DeviceStatus *status = x.status();
  const int64_t m = p.uniqueCapacity * p.k;
  ExpandOrder order =
      expandOrder(x, p.routes, p.uniqueCapacity, p.k, p.recvCounts, p.nodes,
                  p.ranksPerNode, p.expertsPerRank);
  int64_t *numRows = x.template scratch<int64_t>(1);
  int32_t *rowOf = x.template scratch<int32_t>(m);
  if (!x.ok())
    return;
  // The rows the routes make must all be in d_expanded.
  x.forEach(1, RowsCheck32{order.start + order.numKeys, p.expandedCapacity,
                           TAMOE_RT_ERROR_INVALID_ARGUMENT, kGradientRowsExceed,
                           numRows, status});
  x.forEach(m, Fill32{rowOf, -1});
  x.forEach(m, ExpandedRowOf{order.sortedValues, numRows, rowOf, status});
  x.forEach(p.uniqueCapacity * p.hidden,
            ExpandGather{rowOf, p.dExpanded, p.k, p.hidden, p.dUnique, status});
}

//===----------------------------------------------------------------------===//
// add_counts
//===----------------------------------------------------------------------===//

/// Reports a sum of two counts that leaves int32.
struct CheckCountSums {
  const int32_t *a, *b;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    int64_t sum = int64_t(a[i]) + b[i];
    if (sum > INT32_MAX || sum < INT32_MIN)
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT, kCountSumOverflows,
                  i, a[i], b[i]);
  }
};

struct AddCounts {
  const int32_t *a, *b;
  int32_t *out;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    if (!hasFailed(status))
      out[i] = a[i] + b[i];
  }
};

/// tamoe_rt_add_counts: every sum checked before out (which may be a or b)
/// is written.
template <typename Exec>
void runAddCounts(Exec &x, const int32_t *a, const int32_t *b, int64_t n,
                  int32_t *out) {
  x.forEach(n, CheckCountSums{a, b, x.status()});
  x.forEach(n, AddCounts{a, b, out, x.status()});
}

//===----------------------------------------------------------------------===//
// chunk, unchunk and chunk_positions
//===----------------------------------------------------------------------===//

/// Where part `index` of `chunks` of an entry of `rows` rows begins (part
/// index - 1 ends), as partBegin of Backend.h: floor(index * rows / chunks).
TAMOE_HD inline int64_t partStart(int64_t rows, int64_t index, int64_t chunks) {
  return index * rows / chunks;
}

/// The layout tamoe_rt_chunk and tamoe_rt_unchunk share: `rows` of the
/// whole in blocks by `counts`, part `index` of `chunks` of them in rows of
/// `chunkCapacity`.
struct ChunkLayout {
  int64_t rowsCapacity;
  int64_t rowBytes;
  const int32_t *counts;
  int64_t numCounts;
  int64_t index, chunks;
  int64_t chunkCapacity;
};

/// partCounts[i] = the size of the part of an entry of blockCounts[i] rows
/// (0 at the scans' sentinel, whose block is empty).
struct PartCounts {
  const int64_t *blockCounts;
  int64_t index, chunks;
  int64_t *partCounts;
  TAMOE_HD void operator()(int64_t i) const {
    int64_t count = blockCounts[i];
    partCounts[i] =
        partStart(count, index + 1, chunks) - partStart(count, index, chunks);
  }
};

/// wholeRows[r] = the row of the whole that row r of the part is.
struct PartRows {
  const int64_t *blockCounts;  // [n + 1]
  const int64_t *blockOffsets; // [n + 1]
  const int64_t *partOffsets;  // [n + 1]
  int64_t n, index, chunks;
  const int64_t *numRows;
  int64_t *wholeRows;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t r) const {
    if (hasFailed(status) || r >= *numRows)
      return;
    // The entry whose part holds row r: the last one starting at or before
    // r (an empty part starts where the next begins, so it is never empty).
    int64_t i = upperBound(partOffsets, n + 1, r) - 1;
    wholeRows[r] = blockOffsets[i] + partStart(blockCounts[i], index, chunks) +
                   (r - partOffsets[i]);
  }
};

struct WritePartCounts {
  const int64_t *partCounts;
  int32_t *out;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t i) const {
    if (!hasFailed(status))
      out[i] = static_cast<int32_t>(partCounts[i]);
  }
};

/// The part's rows as chunk and unchunk find them: the counts checked
/// (negative, more rows than rowsCapacity, then a part larger than
/// chunkCapacity, failing with `partCode`), *numRows the part's rows and
/// wholeRows[r] where row r of the part is in the whole.
struct PartRowsOf {
  int64_t *partCounts = nullptr;
  int64_t *numRows = nullptr;
  int64_t *wholeRows = nullptr;
};

template <typename Exec>
PartRowsOf partRowsOf(Exec &x, const ChunkLayout &p, int32_t partCode) {
  DeviceStatus *status = x.status();
  const int64_t n = p.numCounts;
  PartRowsOf part;
  int64_t *blockCounts = x.template scratch<int64_t>(n + 1);
  int64_t *blockOffsets = x.template scratch<int64_t>(n + 1);
  int64_t *partOffsets = x.template scratch<int64_t>(n + 1);
  int64_t *wholeTotal = x.template scratch<int64_t>(1);
  part.partCounts = x.template scratch<int64_t>(n + 1);
  part.numRows = x.template scratch<int64_t>(1);
  part.wholeRows = x.template scratch<int64_t>(p.chunkCapacity);
  if (!x.ok())
    return part;
  x.forEach(n + 1, SourceCounts{p.counts, n, blockCounts, status});
  x.forEach(n + 1, PartCounts{blockCounts, p.index, p.chunks, part.partCounts});
  x.exclusiveSum(blockCounts, blockOffsets, n + 1);
  x.exclusiveSum(part.partCounts, partOffsets, n + 1);
  // As the cpu backend checks: the whole first, then the part.
  x.forEach(1, RowsCheck{blockOffsets + n, p.rowsCapacity,
                         TAMOE_RT_ERROR_INVALID_ARGUMENT,
                         kInputRowsExceedCapacity, wholeTotal, status});
  x.forEach(1, RowsCheck{partOffsets + n, p.chunkCapacity, partCode,
                         kPartRowsExceedCapacity, part.numRows, status});
  x.forEach(p.chunkCapacity,
            PartRows{blockCounts, blockOffsets, partOffsets, n, p.index,
                     p.chunks, part.numRows, part.wholeRows, status});
  return part;
}

/// tamoe_rt_chunk: part `index` of `rows` into `chunkRows`, its sizes into
/// `chunkCounts`.
template <typename Exec>
void runChunk(Exec &x, const ChunkLayout &p, const void *rows, void *chunkRows,
              int32_t *chunkCounts) {
  PartRowsOf part = partRowsOf(x, p, TAMOE_RT_ERROR_CAPACITY_EXCEEDED);
  if (!x.ok())
    return;
  x.forEach(p.numCounts,
            WritePartCounts{part.partCounts, chunkCounts, x.status()});
  x.copyRows(chunkRows, rows, p.rowBytes, part.wholeRows, part.numRows,
             p.chunkCapacity);
}

/// tamoe_rt_unchunk: the rows of part `index` back to their places in
/// `rows`; the other parts' rows untouched.
template <typename Exec>
void runUnchunk(Exec &x, const ChunkLayout &p, const void *chunkRows,
                void *rows) {
  PartRowsOf part = partRowsOf(x, p, TAMOE_RT_ERROR_INVALID_ARGUMENT);
  if (!x.ok())
    return;
  x.scatterRows(rows, chunkRows, p.rowBytes, part.wholeRows, part.numRows,
                p.chunkCapacity);
}

struct ChunkPositionsParams {
  const int32_t *positions;
  const int32_t *expertIds;
  int64_t tokens, k;
  const int32_t *expertCounts;
  int64_t experts;
  int64_t index, chunks;
  int32_t *chunkPositions;
};

/// Every kept assignment's expert must exist and its position lie in that
/// expert's block of the dispatched rows.
struct CheckKeptPositions {
  const int32_t *positions;
  const int32_t *expertIds;
  const int64_t *blockCounts;
  const int64_t *blockOffsets;
  int64_t experts;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t a) const {
    if (hasFailed(status) || positions[a] < 0)
      return;
    int32_t e = expertIds[a];
    if (e < 0 || e >= experts) {
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT, kExpertOutOfRange, a,
                  e, experts);
      return;
    }
    int64_t begin = blockOffsets[e];
    if (positions[a] < begin || positions[a] >= begin + blockCounts[e])
      reportError(status, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                  kPositionOutsideBlock, a, positions[a], e);
  }
};

/// An assignment in the part: its row among the part's rows; any other
/// (another part's, or dropped): -1.
struct WriteChunkPositions {
  const int32_t *positions;
  const int32_t *expertIds;
  const int64_t *blockCounts;
  const int64_t *blockOffsets;
  const int64_t *partOffsets;
  int64_t index, chunks;
  int32_t *out;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t a) const {
    if (hasFailed(status))
      return;
    out[a] = -1;
    if (positions[a] < 0)
      return;
    int32_t e = expertIds[a];
    int64_t local = positions[a] - blockOffsets[e];
    int64_t from = partStart(blockCounts[e], index, chunks);
    int64_t to = partStart(blockCounts[e], index + 1, chunks);
    if (local >= from && local < to)
      out[a] = static_cast<int32_t>(partOffsets[e] + local - from);
  }
};

template <typename Exec>
void runChunkPositions(Exec &x, const ChunkPositionsParams &p) {
  DeviceStatus *status = x.status();
  const int64_t n = p.experts, m = p.tokens * p.k;
  int64_t *blockCounts = x.template scratch<int64_t>(n + 1);
  int64_t *partCounts = x.template scratch<int64_t>(n + 1);
  int64_t *blockOffsets = x.template scratch<int64_t>(n + 1);
  int64_t *partOffsets = x.template scratch<int64_t>(n + 1);
  if (!x.ok())
    return;
  x.forEach(n + 1, SourceCounts{p.expertCounts, n, blockCounts, status});
  x.forEach(n + 1, PartCounts{blockCounts, p.index, p.chunks, partCounts});
  x.exclusiveSum(blockCounts, blockOffsets, n + 1);
  x.exclusiveSum(partCounts, partOffsets, n + 1);
  // Every assignment checked before any is written.
  x.forEach(m, CheckKeptPositions{p.positions, p.expertIds, blockCounts,
                                  blockOffsets, n, status});
  x.forEach(m, WriteChunkPositions{p.positions, p.expertIds, blockCounts,
                                   blockOffsets, partOffsets, p.index, p.chunks,
                                   p.chunkPositions, status});
}

//===----------------------------------------------------------------------===//
// all_to_all over a group of one rank
//===----------------------------------------------------------------------===//

/// The exchange of a group of one rank: the rows stay where they are, in
/// order, and recv_counts = send_counts. Checked as an exchange between
/// ranks checks them (a negative count, more rows than send_capacity holds,
/// more than recv_capacity takes: then nothing is written), but on the
/// device, so that no host wait for the counts is needed and a graph can
/// record it.
struct SelfExchangeParams {
  const void *send;
  int64_t sendCapacity;
  int64_t rowBytes;
  const int32_t *sendCounts;
  int64_t entries;
  void *received;
  int64_t recvCapacity;
  int32_t *recvCounts;
};

/// The rows of each of `n` counts as int64 (`rows` [n + 1], 0 last) and
/// where each starts (`start` [n + 1], the total last): a negative count and
/// a total past `capacity` are errors (INVALID_ARGUMENT), *total the rows
/// to copy (0 after an error). Null pointers when scratch memory failed.
struct CountOffsets {
  int64_t *rows = nullptr, *start = nullptr;
};

template <typename Exec>
CountOffsets countOffsets(Exec &x, const int32_t *counts, int64_t n,
                          int64_t capacity, int64_t *total) {
  DeviceStatus *status = x.status();
  CountOffsets o;
  o.rows = x.template scratch<int64_t>(n + 1);
  o.start = x.template scratch<int64_t>(n + 1);
  if (!x.ok())
    return CountOffsets();
  x.forEach(n + 1, SourceCounts{counts, n, o.rows, status});
  x.exclusiveSum(o.rows, o.start, n + 1);
  x.forEach(1, RowsCheck{o.start + n, capacity, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                         kInputRowsExceedCapacity, total, status});
  return o;
}

template <typename Exec>
void runSelfExchange(Exec &x, const SelfExchangeParams &p) {
  DeviceStatus *status = x.status();
  const int64_t bound = minOf(p.sendCapacity, p.recvCapacity);
  int64_t *sent = x.template scratch<int64_t>(1);
  int64_t *numRows = x.template scratch<int64_t>(1);
  if (!x.ok() ||
      !countOffsets(x, p.sendCounts, p.entries, p.sendCapacity, sent).rows)
    return;
  x.forEach(1, RowsCheck{sent, p.recvCapacity, TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
                         kRowsExceedCapacity, numRows, status});
  x.forEach(p.entries, CopyCounts{p.sendCounts, p.recvCounts, status});
  x.copyRows(p.received, p.send, p.rowBytes, /*srcRows=*/nullptr, numRows,
             bound);
}

//===----------------------------------------------------------------------===//
// Slots of a grouped GEMM whose counts stay on the device
//===----------------------------------------------------------------------===//

/// Where each row of a grouped GEMM's input goes when every count gets a
/// slot of `slot` rows: row i of chunk c to slot row c * slot + i. cuBLAS
/// sizes each GEMM from the host; with the counts on the device (a recorded
/// graph), the chunks are multiplied in equal slots instead, and this maps
/// the rows there and back. A count above `slot` is an error, as are a
/// negative count and counts beyond rows_capacity.
struct SlotRowsParams {
  const int32_t *counts;
  int64_t numCounts;
  int64_t rowsCapacity;
  int64_t slot;
  /// [rowsCapacity]: the slot row of each input row, below *numRows.
  int64_t *slotOf;
  /// The rows the counts describe (the copies that use slotOf check the
  /// status first: after an error it is incomplete).
  int64_t *numRows;
};

struct SlotCheck {
  const int64_t *chunkRows;
  int64_t slot;
  DeviceStatus *status;
  TAMOE_HD void operator()(int64_t c) const {
    if (chunkRows[c] > slot)
      reportError(status, TAMOE_RT_ERROR_CAPACITY_EXCEEDED, kCountExceedsSlot,
                  c, chunkRows[c], slot);
  }
};

struct SlotIndex {
  const int64_t *chunkRows;
  const int64_t *chunkStart;
  int64_t slot;
  int64_t *slotOf;
  const DeviceStatus *status;
  TAMOE_HD void operator()(int64_t q) const {
    if (hasFailed(status))
      return;
    int64_t c = q / slot, i = q % slot;
    if (i < chunkRows[c])
      slotOf[chunkStart[c] + i] = q;
  }
};

template <typename Exec> void runSlotRows(Exec &x, const SlotRowsParams &p) {
  DeviceStatus *status = x.status();
  CountOffsets chunks =
      countOffsets(x, p.counts, p.numCounts, p.rowsCapacity, p.numRows);
  if (!chunks.rows)
    return;
  x.forEach(p.numCounts, SlotCheck{chunks.rows, p.slot, status});
  if (p.slot > 0)
    x.forEach(p.numCounts * p.slot,
              SlotIndex{chunks.rows, chunks.start, p.slot, p.slotOf, status});
}

} // namespace cuda
} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_CUDA_PIPELINES_H
