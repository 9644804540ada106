//===- CpuBackend.cpp - Host memory, plain loops and MPI ------------------===//
//
// Messages name the argument and the offending entry, without the function
// name: the core prefixes it.
//
//===----------------------------------------------------------------------===//

#include "CpuBackend.h"
#include "Optimizers.h"
#include "Precision.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>

using namespace tamoe_rt;

namespace {

constexpr size_t kAlignment = 256;

Status invalid(std::string message) {
  return Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT, std::move(message));
}
Status exceeded(std::string message) {
  return Status::error(TAMOE_RT_ERROR_CAPACITY_EXCEEDED, std::move(message));
}

/// "name[i, j]" of entry `flat` of a [rows, columns] array.
std::string entry(const char *name, intptr_t flat, intptr_t columns) {
  return str(name, "[", flat / columns, ", ", flat % columns, "]");
}

/// A key that orders NaN below every number, so sorts stay well defined.
float orderKey(float value) {
  return std::isnan(value) ? -std::numeric_limits<float>::infinity() : value;
}

/// "the exchange of counts over the node group" and the like, built once:
/// the messages of a failed wait, on every call's path. Stage 0 is an
/// exchange's settle, 1 its rows, 2 a failing member's message.
const std::string &stageName(int stage, tamoe_rt_group_t group) {
  static const std::string names[3][3] = {
      {"the exchange of counts over the world group",
       "the exchange of counts over the node group",
       "the exchange of counts over the peers group"},
      {"the exchange of rows over the world group",
       "the exchange of rows over the node group",
       "the exchange of rows over the peers group"},
      {"sharing a failure's message over the world group",
       "sharing a failure's message over the node group",
       "sharing a failure's message over the peers group"}};
  return names[stage][group];
}

/// The fields before the row counts in an exchange's round 1 (a gathered
/// block): failure code, recv_capacity, row_bytes, split.
constexpr int kSettleHeader = 4;

const char *rowOf(const void *base, intptr_t row, intptr_t rowBytes) {
  return static_cast<const char *>(base) + row * rowBytes;
}
char *rowOf(void *base, intptr_t row, intptr_t rowBytes) {
  return static_cast<char *>(base) + row * rowBytes;
}

/// out[h] += weight * in[h]: how combine and the gradients add up rows.
void addRow(float *out, float weight, const float *in, intptr_t hidden) {
  for (intptr_t h = 0; h < hidden; ++h)
    out[h] += weight * in[h];
}

/// Row r of `out` (of `rows`) = the sum, in order, of the rows of `in`
/// that sources[r * rowStride + j * entryStride] names for j < count (-1:
/// none).
void gatherRows(const float *in, intptr_t hidden,
                const std::vector<intptr_t> &sources, intptr_t rows,
                intptr_t count, intptr_t rowStride, intptr_t entryStride,
                float *out) {
  for (intptr_t r = 0; r < rows; ++r) {
    float *row = out + r * hidden;
    std::fill(row, row + hidden, 0.0f);
    for (intptr_t j = 0; j < count; ++j)
      if (intptr_t source = sources[r * rowStride + j * entryStride];
          source >= 0)
        addRow(row, 1.0f, in + source * hidden, hidden);
  }
}

/// That every dispatched position (>= 0) is a row of expert_outputs.
Status checkPositions(const int32_t *positions, intptr_t tokens, intptr_t k,
                      intptr_t rows) {
  for (intptr_t a = 0; a < tokens * k; ++a)
    if (positions[a] >= rows)
      return invalid(str(entry("positions", a, k), " = ", positions[a],
                         " is past the ", rows, " rows of expert_outputs"));
  return Status::success();
}

/// That the chunks' counts are non-negative and their rows fit in
/// rows_capacity; `total` gets their sum.
Status checkCounts(const int32_t *counts, intptr_t numCounts,
                   intptr_t rowsCapacity, intptr_t &total) {
  total = 0;
  for (intptr_t c = 0; c < numCounts; ++c) {
    if (counts[c] < 0)
      return invalid(str("counts[", c, "] = ", counts[c], " is negative"));
    total += counts[c];
  }
  if (total > rowsCapacity)
    return invalid(str("counts sum to ", total, " rows but rows_capacity is ",
                       rowsCapacity));
  return Status::success();
}

/// The assignments aux_loss counts, per expert: ids >= 0 (ids past the
/// experts are an error) that the dispatch kept.
Status countAssignments(const int32_t *expertIds, const int32_t *positions,
                        intptr_t tokens, intptr_t experts, intptr_t k,
                        std::vector<float> &counts) {
  for (intptr_t a = 0; a < tokens * k; ++a)
    if (expertIds[a] >= experts)
      return invalid(str(entry("expert_ids", a, k), " = ", expertIds[a],
                         " is out of range [0, ", experts,
                         ") (negative ids are not counted)"));
  counts.assign(experts, 0.0f);
  for (intptr_t a = 0; a < tokens * k; ++a)
    if (expertIds[a] >= 0 && (!positions || positions[a] >= 0))
      counts[expertIds[a]] += 1.0f;
  return Status::success();
}

/// dedup_pack's layout: rows[a] is the row that assignment a (t * k + j)
/// goes out in, one row per token and node it reaches, numbered by node,
/// then token; -1 when it was dropped. `total` counts the rows. The kept
/// assignments are sorted (in `order`) rather than laid out in a table per
/// node and token: that would grow with nodes x tokens, while the buffers
/// grow with nodes + tokens.
Status packRows(const int32_t *expertIds, const int32_t *positions,
                intptr_t numTokens, intptr_t k, intptr_t expertsPerNode,
                intptr_t nodes, std::vector<intptr_t> &order,
                std::vector<intptr_t> &rows, intptr_t &total) {
  intptr_t experts = expertsPerNode * nodes;
  for (intptr_t a = 0; a < numTokens * k; ++a)
    if (positions[a] >= 0 && (expertIds[a] < 0 || expertIds[a] >= experts))
      return invalid(str(entry("expert_ids", a, k), " = ", expertIds[a],
                         " is out of range [0, ", experts, ") (",
                         expertsPerNode, " experts on each of ", nodes,
                         " nodes)"));
  auto node = [&](intptr_t a) { return expertIds[a] / expertsPerNode; };
  order.clear();
  for (intptr_t a = 0; a < numTokens * k; ++a)
    if (positions[a] >= 0)
      order.push_back(a);
  // By node, then token (assignments ascend within a token).
  std::sort(order.begin(), order.end(), [&](intptr_t x, intptr_t y) {
    return node(x) != node(y) ? node(x) < node(y) : x < y;
  });
  rows.assign(numTokens * k, -1);
  total = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    intptr_t a = order[i];
    if (i > 0 && node(order[i - 1]) == node(a) && order[i - 1] / k == a / k)
      rows[a] = total - 1;
    else
      rows[a] = total++;
  }
  return Status::success();
}

} // namespace

//===----------------------------------------------------------------------===//
// Memory
//===----------------------------------------------------------------------===//

#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kCacheBytes = 0;
#else
constexpr size_t kCacheBytes = size_t(1) << 30;
#endif

CpuBackend::~CpuBackend() {
  for (auto &[bytes, blocks] : cache)
    for (void *block : blocks)
      std::free(block);
}

Status CpuBackend::alloc(intptr_t bytes, void **pointer) {
  *pointer = nullptr;
  if (bytes == 0)
    return Status::success();
  // aligned_alloc wants a multiple of the alignment.
  size_t rounded = (size_t(bytes) + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded < size_t(bytes))
    return Status::error(
        TAMOE_RT_ERROR_OUT_OF_MEMORY,
        str("cannot allocate ", bytes, " bytes of host memory"));
  if (auto found = cache.find(rounded);
      found != cache.end() && !found->second.empty()) {
    *pointer = found->second.back();
    found->second.pop_back();
    cachedBytes -= rounded;
  } else if (!(*pointer = std::aligned_alloc(kAlignment, rounded))) {
    return Status::error(
        TAMOE_RT_ERROR_OUT_OF_MEMORY,
        str("cannot allocate ", bytes, " bytes of host memory"));
  }
  blockBytes[*pointer] = rounded;
  return Status::success();
}

Status CpuBackend::free(void *pointer) {
  auto block = blockBytes.find(pointer);
  if (block == blockBytes.end()) {
    std::free(pointer);
    return Status::success();
  }
  size_t bytes = block->second;
  blockBytes.erase(block);
  if (cachedBytes + bytes <= kCacheBytes) {
    cache[bytes].push_back(pointer);
    cachedBytes += bytes;
  } else {
    std::free(pointer);
  }
  return Status::success();
}

Status CpuBackend::copyToBackend(void *destination, const void *hostSource,
                                 intptr_t bytes) {
  if (bytes)
    std::memcpy(destination, hostSource, size_t(bytes));
  return Status::success();
}

Status CpuBackend::copyToHost(void *hostDestination, const void *source,
                              intptr_t bytes) {
  if (bytes)
    std::memcpy(hostDestination, source, size_t(bytes));
  return Status::success();
}

Status CpuBackend::convert(tamoe_rt_dtype_t srcType, const void *src,
                           tamoe_rt_dtype_t dstType, void *dst, intptr_t n) {
  if (srcType == dstType) {
    std::memmove(dst, src, size_t(n * dtypeBytes(srcType)));
    return Status::success();
  }
  // Element by element through f32 (exact for bf16 and f16), reading each
  // element before writing its slot, so that same-sized types convert in
  // place.
  auto load = [&](intptr_t i) {
    if (srcType == TAMOE_RT_F32)
      return static_cast<const float *>(src)[i];
    uint16_t bits = static_cast<const uint16_t *>(src)[i];
    return srcType == TAMOE_RT_BF16 ? bf16ToFloat(bits) : f16ToFloat(bits);
  };
  for (intptr_t i = 0; i < n; ++i) {
    float value = load(i);
    if (dstType == TAMOE_RT_F32)
      static_cast<float *>(dst)[i] = value;
    else
      static_cast<uint16_t *>(dst)[i] =
          dstType == TAMOE_RT_BF16 ? floatToBf16(value) : floatToF16(value);
  }
  return Status::success();
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

Status CpuBackend::gate(const float *logits, intptr_t tokens, intptr_t experts,
                        intptr_t k, tamoe_rt_score_t score, bool renormalize,
                        intptr_t numGroups, intptr_t groupsKept,
                        int32_t *expertIds, float *weights, float *probs) {
  // No token, no work: the tables below are sized by `experts`, which no
  // buffer of an empty call backs.
  if (tokens == 0)
    return Status::success();
  const float minusInf = -std::numeric_limits<float>::infinity();
  intptr_t perGroup = numGroups > 0 ? experts / numGroups : experts;
  std::vector<char> allowed(experts), chosen(experts);
  std::vector<float> groupScores(std::max<intptr_t>(numGroups, 0));
  std::vector<char> groupChosen(groupScores.size());
  for (intptr_t t = 0; t < tokens; ++t) {
    const float *x = logits + t * experts;
    float *p = probs + t * experts;
    // The order of the operations is that of tamoe-expand-gate's lowering,
    // so both give the same floats.
    if (score == TAMOE_RT_SCORE_SIGMOID) {
      for (intptr_t e = 0; e < experts; ++e)
        p[e] = 1.0f / (1.0f + std::exp(-x[e]));
    } else {
      float max = minusInf;
      for (intptr_t e = 0; e < experts; ++e)
        max = std::max(max, x[e]);
      float sum = 0;
      for (intptr_t e = 0; e < experts; ++e) {
        p[e] = std::exp(x[e] - max);
        sum += p[e];
      }
      for (intptr_t e = 0; e < experts; ++e)
        p[e] /= sum;
    }

    std::fill(allowed.begin(), allowed.end(), 1);
    if (numGroups > 0) {
      // A group scores the sum of its two best experts (its best when it
      // has one); the best `groupsKept` groups stay, lower group first on
      // ties.
      for (intptr_t g = 0; g < numGroups; ++g) {
        float first = minusInf, second = minusInf;
        for (intptr_t e = g * perGroup; e < (g + 1) * perGroup; ++e) {
          if (p[e] > first) {
            second = first;
            first = p[e];
          } else if (p[e] > second) {
            second = p[e];
          }
        }
        groupScores[g] = perGroup > 1 ? first + second : first;
        groupChosen[g] = 0;
      }
      for (intptr_t round = 0; round < groupsKept; ++round) {
        intptr_t best = -1;
        for (intptr_t g = 0; g < numGroups; ++g)
          if (!groupChosen[g] && (best < 0 || orderKey(groupScores[g]) >
                                                  orderKey(groupScores[best])))
            best = g;
        groupChosen[best] = 1;
      }
      for (intptr_t e = 0; e < experts; ++e)
        allowed[e] = groupChosen[e / perGroup];
    }

    // k rounds of arg-max: descending score, the lower id first on ties.
    std::fill(chosen.begin(), chosen.end(), 0);
    float sum = 0;
    for (intptr_t j = 0; j < k; ++j) {
      intptr_t best = -1;
      for (intptr_t e = 0; e < experts; ++e)
        if (allowed[e] && !chosen[e] &&
            (best < 0 || orderKey(p[e]) > orderKey(p[best])))
          best = e;
      chosen[best] = 1;
      expertIds[t * k + j] = int32_t(best);
      weights[t * k + j] = p[best];
      sum += p[best];
    }
    if (renormalize)
      for (intptr_t j = 0; j < k; ++j)
        weights[t * k + j] /= sum + TAMOE_RT_RENORMALIZE_EPSILON;
  }
  return Status::success();
}

Status CpuBackend::dispatch(const void *tokens, intptr_t numTokens,
                            intptr_t rowBytes, const int32_t *expertIds,
                            intptr_t k, intptr_t experts, const float *weights,
                            intptr_t capacity, tamoe_rt_drop_t drop,
                            void *dispatched, intptr_t dispatchedCapacity,
                            int32_t *expertCounts, int32_t *positions,
                            int64_t *numDropped) {
  intptr_t assignments = numTokens * k;
  for (intptr_t a = 0; a < assignments; ++a)
    if (expertIds[a] < 0 || expertIds[a] >= experts)
      return invalid(str(entry("expert_ids", a, k), " = ", expertIds[a],
                         " is out of range [0, ", experts, ")"));

  // Counting sort of the assignments (t * k + j) by expert: stable, so each
  // expert's segment is in token order.
  start.assign(experts + 1, 0);
  order.resize(assignments);
  for (intptr_t a = 0; a < assignments; ++a)
    ++start[expertIds[a] + 1];
  std::partial_sum(start.begin(), start.end(), start.begin());
  next.assign(start.begin(), start.end() - 1);
  for (intptr_t a = 0; a < assignments; ++a)
    order[next[expertIds[a]]++] = a;

  kept.assign(assignments, 1);
  if (capacity >= 0) {
    for (intptr_t e = 0; e < experts; ++e) {
      intptr_t begin = start[e], end = start[e + 1];
      if (end - begin <= capacity)
        continue;
      if (drop == TAMOE_RT_DROP_PROBABILITY) {
        // The highest weights stay, the earlier token first on ties.
        byWeight.assign(order.begin() + begin, order.begin() + end);
        std::stable_sort(byWeight.begin(), byWeight.end(),
                         [&](intptr_t x, intptr_t y) {
                           return orderKey(weights[x]) > orderKey(weights[y]);
                         });
        for (size_t i = size_t(capacity); i < byWeight.size(); ++i)
          kept[byWeight[i]] = 0;
      } else {
        for (intptr_t i = begin + capacity; i < end; ++i)
          kept[order[i]] = 0;
      }
    }
  }

  intptr_t total = 0;
  for (intptr_t a = 0; a < assignments; ++a)
    total += kept[a];
  // Fail before writing anything.
  if (total > dispatchedCapacity)
    return exceeded(str(total, " rows to write exceed dispatched_capacity ",
                        dispatchedCapacity));

  intptr_t row = 0;
  for (intptr_t e = 0; e < experts; ++e) {
    int32_t count = 0;
    for (intptr_t i = start[e]; i < start[e + 1]; ++i) {
      intptr_t a = order[i];
      if (!kept[a]) {
        positions[a] = -1;
        continue;
      }
      std::memcpy(rowOf(dispatched, row, rowBytes),
                  rowOf(tokens, a / k, rowBytes), size_t(rowBytes));
      positions[a] = int32_t(row++);
      ++count;
    }
    expertCounts[e] = count;
  }
  *numDropped = int64_t(assignments - total);
  return Status::success();
}

Status CpuBackend::combine(const float *expertOutputs, intptr_t rows,
                           intptr_t hidden, const int32_t *positions,
                           const float *weights, intptr_t tokens, intptr_t k,
                           float *combined) {
  Status status = checkPositions(positions, tokens, k, rows);
  if (!status.ok())
    return status;
  for (intptr_t t = 0; t < tokens; ++t) {
    float *out = combined + t * hidden;
    std::fill(out, out + hidden, 0.0f);
    for (intptr_t j = 0; j < k; ++j) {
      int32_t position = positions[t * k + j];
      if (position < 0)
        continue;
      addRow(out, weights ? weights[t * k + j] : 1.0f,
             expertOutputs + intptr_t(position) * hidden, hidden);
    }
  }
  return Status::success();
}

Status CpuBackend::groupedMatmul(const float *rows, intptr_t rowsCapacity,
                                 intptr_t hidden, const int32_t *counts,
                                 intptr_t numCounts, intptr_t experts,
                                 const float *weights, intptr_t outFeatures,
                                 float *result) {
  intptr_t total = 0;
  Status status = checkCounts(counts, numCounts, rowsCapacity, total);
  if (!status.ok())
    return status;
  // The exchanges in flight move only while this rank calls MPI, so the
  // experts' work, what they overlap with, lets them progress between
  // chunks and every kProgressRows rows of a long one.
  constexpr int32_t kProgressRows = 256;
  intptr_t row = 0;
  for (intptr_t c = 0; c < numCounts; ++c) {
    const float *w = weights + (c % experts) * hidden * outFeatures;
    progress();
    for (int32_t i = 0; i < counts[c]; ++i, ++row) {
      if (i % kProgressRows == kProgressRows - 1)
        progress();
      const float *x = rows + row * hidden;
      float *y = result + row * outFeatures;
      std::fill(y, y + outFeatures, 0.0f);
      for (intptr_t h = 0; h < hidden; ++h)
        for (intptr_t f = 0; f < outFeatures; ++f)
          y[f] += x[h] * w[h * outFeatures + f];
    }
  }
  std::fill(result + row * outFeatures, result + rowsCapacity * outFeatures,
            0.0f);
  return Status::success();
}

Status CpuBackend::matmul(const float *a, const float *b, intptr_t m,
                          intptr_t k, intptr_t n, bool transposeA,
                          bool transposeB, const float *cInit, float *c) {
  // Row by row into a scratch row, so that c may alias c_init; i-k-j order
  // streams b and the row. Every output adds its products over h in
  // increasing order, whatever the layouts.
  std::vector<float> row(n);
  for (intptr_t i = 0; i < m; ++i) {
    if (cInit)
      std::copy(cInit + i * n, cInit + (i + 1) * n, row.begin());
    else
      std::fill(row.begin(), row.end(), 0.0f);
    for (intptr_t h = 0; h < k; ++h) {
      float x = transposeA ? a[h * m + i] : a[i * k + h];
      if (transposeB) {
        for (intptr_t j = 0; j < n; ++j)
          row[j] += x * b[j * k + h];
        continue;
      }
      const float *w = b + h * n;
      for (intptr_t j = 0; j < n; ++j)
        row[j] += x * w[j];
    }
    std::copy(row.begin(), row.end(), c + i * n);
  }
  return Status::success();
}

Status CpuBackend::addCounts(const int32_t *a, const int32_t *b, intptr_t n,
                             int32_t *out) {
  // Every sum checked before out (which may be a or b) is written.
  for (intptr_t i = 0; i < n; ++i) {
    int64_t sum = int64_t(a[i]) + b[i];
    if (sum > INT32_MAX || sum < INT32_MIN)
      return invalid(str("a[", i, "] + b[", i, "] = ", a[i], " + ", b[i],
                         " does not fit in int32"));
  }
  for (intptr_t i = 0; i < n; ++i)
    out[i] = a[i] + b[i];
  return Status::success();
}

Status CpuBackend::map(tamoe_rt_map_t op, const float *a, const float *b,
                       intptr_t n, float *out) {
  // One branch-free loop per op, so that the compiler vectorises it.
  switch (op) {
  case TAMOE_RT_MAP_ADD:
    for (intptr_t i = 0; i < n; ++i)
      out[i] = a[i] + b[i];
    break;
  case TAMOE_RT_MAP_SUB:
    for (intptr_t i = 0; i < n; ++i)
      out[i] = a[i] - b[i];
    break;
  case TAMOE_RT_MAP_MUL:
    for (intptr_t i = 0; i < n; ++i)
      out[i] = a[i] * b[i];
    break;
  case TAMOE_RT_MAP_RELU:
    // arith.maximumf(x, 0): NaN propagates, -0 becomes +0.
    for (intptr_t i = 0; i < n; ++i) {
      float x = a[i];
      out[i] = (x > 0.0f || x != x) ? x : 0.0f;
    }
    break;
  case TAMOE_RT_MAP_NEG:
    for (intptr_t i = 0; i < n; ++i)
      out[i] = -a[i];
    break;
  case TAMOE_RT_MAP_RELU_GRAD:
    // NaN > 0 is false: a NaN input passes no gradient.
    for (intptr_t i = 0; i < n; ++i)
      out[i] = a[i] > 0.0f ? b[i] : 0.0f;
    break;
  case TAMOE_RT_MAP_SILU:
    // exp(-a) overflows to infinity for a < -88: the quotient is then -0.
    for (intptr_t i = 0; i < n; ++i)
      out[i] = a[i] / (1.0f + std::exp(-a[i]));
    break;
  case TAMOE_RT_MAP_SILU_GRAD:
    for (intptr_t i = 0; i < n; ++i) {
      float s = 1.0f / (1.0f + std::exp(-a[i]));
      out[i] = b[i] * (s * (1.0f + a[i] * (1.0f - s)));
    }
    break;
  }
  return Status::success();
}

Status CpuBackend::auxLoss(const float *probs, const int32_t *expertIds,
                           const int32_t *positions, intptr_t tokens,
                           intptr_t experts, intptr_t k,
                           const float *expertWeights, float *loss) {
  if (tokens == 0) {
    // No assignments, no imbalance (the lowering would divide 0 by 0); and
    // no per-expert table, which no buffer of an empty call backs.
    *loss = 0;
    return Status::success();
  }
  std::vector<float> counts;
  Status status =
      countAssignments(expertIds, positions, tokens, experts, k, counts);
  if (!status.ok())
    return status;
  // As tamoe-expand-gate lowers it: E / (k S^2) * sum_e count_e *
  // probSum_e (* w_e), in f32 and in this order. f_e divides by all k S
  // assignments, dropped ones included.
  std::vector<float> probSums(experts, 0.0f);
  for (intptr_t t = 0; t < tokens; ++t)
    for (intptr_t e = 0; e < experts; ++e)
      probSums[e] += probs[t * experts + e];
  float total = 0;
  for (intptr_t e = 0; e < experts; ++e) {
    float term = counts[e] * probSums[e];
    if (expertWeights)
      term = term * expertWeights[e];
    total += term;
  }
  float s = float(tokens);
  float scale = float(experts) / (float(k) * (s * s));
  *loss = total * scale;
  return Status::success();
}

Status CpuBackend::regroup(const void *rows, intptr_t rowsCapacity,
                           intptr_t rowBytes, const int32_t *counts, intptr_t a,
                           intptr_t b, intptr_t inner, void *regrouped,
                           int32_t *regroupedCounts) {
  // Rows of chunk (x, y) and where it starts in `rows`.
  std::vector<intptr_t> chunkRows(a * b, 0), chunkStart(a * b, 0);
  intptr_t total = 0;
  for (intptr_t chunk = 0; chunk < a * b; ++chunk) {
    chunkStart[chunk] = total;
    for (intptr_t i = 0; i < inner; ++i) {
      int32_t count = counts[chunk * inner + i];
      if (count < 0)
        return invalid(str("counts[", chunk / b, ", ", chunk % b, ", ", i,
                           "] = ", count, " is negative"));
      chunkRows[chunk] += count;
    }
    total += chunkRows[chunk];
  }
  if (total > rowsCapacity)
    return invalid(str("counts sum to ", total, " rows but rows_capacity is ",
                       rowsCapacity));
  intptr_t row = 0;
  for (intptr_t y = 0; y < b; ++y)
    for (intptr_t x = 0; x < a; ++x) {
      intptr_t chunk = x * b + y;
      if (chunkRows[chunk])
        std::memcpy(rowOf(regrouped, row, rowBytes),
                    rowOf(rows, chunkStart[chunk], rowBytes),
                    size_t(chunkRows[chunk] * rowBytes));
      row += chunkRows[chunk];
      std::memcpy(regroupedCounts + (y * a + x) * inner, counts + chunk * inner,
                  size_t(inner) * sizeof(int32_t));
    }
  return Status::success();
}

//===----------------------------------------------------------------------===//
// Chunks
//===----------------------------------------------------------------------===//

namespace {

/// Calls copy(entry, block row, chunk row, rows) for part `index` of
/// `chunks` of every entry of counts, in entry order: its first row among
/// the blocks and in the packed part, and its rows. Returns the part's rows.
template <typename Copy>
intptr_t forEachPart(const int32_t *counts, intptr_t numCounts, intptr_t index,
                     intptr_t chunks, Copy copy) {
  intptr_t block = 0, packed = 0;
  for (intptr_t i = 0; i < numCounts; ++i) {
    int64_t begin = partBegin(counts[i], index, chunks);
    int64_t rows = partBegin(counts[i], index + 1, chunks) - begin;
    copy(i, block + begin, packed, rows);
    block += counts[i];
    packed += rows;
  }
  return packed;
}

} // namespace

Status CpuBackend::chunk(const void *rows, intptr_t rowsCapacity,
                         intptr_t rowBytes, const int32_t *counts,
                         intptr_t numCounts, intptr_t index, intptr_t chunks,
                         void *chunkRows, intptr_t chunkCapacity,
                         int32_t *chunkCounts) {
  intptr_t total = 0;
  Status status = checkCounts(counts, numCounts, rowsCapacity, total);
  if (!status.ok())
    return status;
  // Fail before writing anything.
  intptr_t partRows =
      forEachPart(counts, numCounts, index, chunks,
                  [](intptr_t, intptr_t, intptr_t, intptr_t) {});
  if (partRows > chunkCapacity)
    return exceeded(str(partRows, " rows of chunk ", index, " of ", chunks,
                        " exceed chunk_capacity ", chunkCapacity));
  forEachPart(counts, numCounts, index, chunks,
              [&](intptr_t i, intptr_t from, intptr_t to, intptr_t n) {
                if (n)
                  std::memcpy(rowOf(chunkRows, to, rowBytes),
                              rowOf(rows, from, rowBytes),
                              size_t(n * rowBytes));
                chunkCounts[i] = int32_t(n);
              });
  return Status::success();
}

Status CpuBackend::chunkPositions(const int32_t *positions,
                                  const int32_t *expertIds, intptr_t tokens,
                                  intptr_t k, const int32_t *expertCounts,
                                  intptr_t experts, intptr_t index,
                                  intptr_t chunks, int32_t *chunkPositions) {
  intptr_t total = 0;
  Status status = checkCounts(expertCounts, experts, INTPTR_MAX, total);
  if (!status.ok())
    return status;
  // Each expert's block among the dispatched rows, its part's rows
  // [partStart, partEnd) among them, and where the part is packed.
  auto size = static_cast<size_t>(experts);
  std::vector<intptr_t> blockBegin(size), partStart(size), partEnd(size),
      packedRow(size);
  forEachPart(expertCounts, experts, index, chunks,
              [&](intptr_t e, intptr_t from, intptr_t to, intptr_t rows) {
                partStart[size_t(e)] = from;
                partEnd[size_t(e)] = from + rows;
                packedRow[size_t(e)] = to;
              });
  for (intptr_t e = 0, row = 0; e < experts; row += expertCounts[e++])
    blockBegin[size_t(e)] = row;
  // Check every assignment before writing anything.
  for (intptr_t a = 0; a < tokens * k; ++a) {
    if (positions[a] < 0)
      continue;
    int32_t e = expertIds[a];
    if (e < 0 || e >= experts)
      return invalid(str(entry("expert_ids", a, k), " = ", e,
                         " is out of range [0, ", experts, ")"));
    intptr_t begin = blockBegin[size_t(e)];
    if (positions[a] < begin || positions[a] >= begin + expertCounts[e])
      return invalid(str(entry("positions", a, k), " = ", positions[a],
                         " is not a row of expert ", e, "'s block [", begin,
                         ", ", begin + expertCounts[e],
                         ") of the dispatched rows"));
  }
  for (intptr_t a = 0; a < tokens * k; ++a) {
    chunkPositions[a] = -1;
    if (positions[a] < 0)
      continue;
    auto e = size_t(expertIds[a]);
    if (positions[a] >= partStart[e] && positions[a] < partEnd[e])
      chunkPositions[a] = int32_t(packedRow[e] + positions[a] - partStart[e]);
  }
  return Status::success();
}

Status CpuBackend::unchunk(const void *chunkRows, intptr_t chunkCapacity,
                           intptr_t rowBytes, const int32_t *counts,
                           intptr_t numCounts, intptr_t index, intptr_t chunks,
                           void *rows, intptr_t rowsCapacity) {
  intptr_t total = 0;
  Status status = checkCounts(counts, numCounts, rowsCapacity, total);
  if (!status.ok())
    return status;
  intptr_t partRows =
      forEachPart(counts, numCounts, index, chunks,
                  [](intptr_t, intptr_t, intptr_t, intptr_t) {});
  if (partRows > chunkCapacity)
    return invalid(str("counts make ", partRows, " rows in chunk ", index,
                       " of ", chunks, " but chunk_capacity is ",
                       chunkCapacity));
  forEachPart(counts, numCounts, index, chunks,
              [&](intptr_t, intptr_t to, intptr_t from, intptr_t n) {
                if (n)
                  std::memcpy(rowOf(rows, to, rowBytes),
                              rowOf(chunkRows, from, rowBytes),
                              size_t(n * rowBytes));
              });
  return Status::success();
}

//===----------------------------------------------------------------------===//
// De-duplication
//===----------------------------------------------------------------------===//

Status CpuBackend::dedupPack(const void *tokens, intptr_t numTokens,
                             intptr_t rowBytes, const int32_t *expertIds,
                             const int32_t *positions, intptr_t k,
                             intptr_t expertsPerNode, intptr_t nodes,
                             void *unique, int32_t *routes,
                             intptr_t uniqueCapacity, int32_t *nodeCounts) {
  intptr_t total = 0;
  Status status = packRows(expertIds, positions, numTokens, k, expertsPerNode,
                           nodes, order, rowIndex, total);
  if (!status.ok())
    return status;
  if (total > uniqueCapacity)
    return exceeded(
        str(total, " unique rows exceed unique_capacity ", uniqueCapacity));
  std::fill(nodeCounts, nodeCounts + nodes, 0);
  std::fill(routes, routes + total * k, -1);
  // In node, then token order (`order`), so each route lists its experts
  // in the token's top-k order; a row's first assignment makes the row.
  intptr_t listed = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    intptr_t a = order[i], row = rowIndex[size_t(a)];
    if (i == 0 || rowIndex[size_t(order[i - 1])] != row) {
      std::memcpy(rowOf(unique, row, rowBytes), rowOf(tokens, a / k, rowBytes),
                  size_t(rowBytes));
      ++nodeCounts[expertIds[a] / expertsPerNode];
      listed = 0;
    }
    routes[row * k + listed++] = expertIds[a];
  }
  return Status::success();
}

Status CpuBackend::dedupExpand(const void *unique, const int32_t *routes,
                               intptr_t uniqueCapacity, intptr_t rowBytes,
                               intptr_t k, const int32_t *recvCounts,
                               intptr_t nodes, intptr_t ranksPerNode,
                               intptr_t expertsPerRank, void *expanded,
                               intptr_t expandedCapacity,
                               int32_t *expandedCounts) {
  Status status = expand(routes, uniqueCapacity, k, recvCounts, nodes,
                         ranksPerNode, expertsPerRank);
  if (!status.ok())
    return status;
  if (intptr_t(entries.size()) > expandedCapacity)
    return exceeded(str(entries.size(), " expanded rows exceed ",
                        "expanded_capacity ", expandedCapacity));
  std::fill(expandedCounts,
            expandedCounts + ranksPerNode * nodes * expertsPerRank, 0);
  for (size_t i = 0; i < entries.size(); ++i) {
    const Expansion &e = entries[i];
    std::memcpy(rowOf(expanded, intptr_t(i), rowBytes),
                rowOf(unique, e.row, rowBytes), size_t(rowBytes));
    ++expandedCounts[(e.destination * nodes + e.source) * expertsPerRank +
                     e.expert % expertsPerRank];
  }
  return Status::success();
}

Status CpuBackend::expand(const int32_t *routes, intptr_t uniqueCapacity,
                          intptr_t k, const int32_t *recvCounts, intptr_t nodes,
                          intptr_t ranksPerNode, intptr_t expertsPerRank) {
  intptr_t rows = 0;
  for (intptr_t s = 0; s < nodes; ++s) {
    if (recvCounts[s] < 0)
      return invalid(
          str("recv_counts[", s, "] = ", recvCounts[s], " is negative"));
    rows += recvCounts[s];
  }
  if (rows > uniqueCapacity)
    return invalid(str("recv_counts sum to ", rows,
                       " rows but unique_capacity is ", uniqueCapacity));
  // The core checked that the experts' slots, and so their count, fit.
  const intptr_t experts = nodes * ranksPerNode * expertsPerRank;
  for (intptr_t i = 0; i < rows * k; ++i)
    if (routes[i] < -1 || routes[i] >= experts)
      return invalid(str(entry("routes", i, k), " = ", routes[i],
                         " is neither an expert id in [0, ", experts,
                         ") nor -1"));

  // One entry per listed expert, sorted by (destination index, source
  // node, expert), arrival order breaking ties.
  arrivals.clear();
  intptr_t row = 0;
  bool oneNode = true; // every listed expert on the same node
  intptr_t expertsPerNode = expertsPerRank * ranksPerNode, expertNode = -1;
  for (intptr_t s = 0; s < nodes; ++s)
    for (int32_t i = 0; i < recvCounts[s]; ++i, ++row)
      for (intptr_t j = 0; j < k; ++j) {
        int32_t expert = routes[row * k + j];
        if (expert < 0)
          continue;
        arrivals.push_back(
            {(expert / expertsPerRank) % ranksPerNode, s, expert, row, j});
        if (expertNode < 0)
          expertNode = expert / expertsPerNode;
        oneNode &= expert / expertsPerNode == expertNode;
      }
  // The counting sort's table has a slot per (destination, source, expert
  // index): more slots than rows would cost memory no buffer backs (the
  // gradient has no expanded_counts), so few rows take the comparison sort,
  // which gives the same order (on one node, a destination's experts are
  // one rank's, ordered by their index there).
  intptr_t slots = ranksPerNode * nodes * expertsPerRank;
  if (!oneNode || slots > intptr_t(arrivals.size())) {
    // Only a hand-made call lists other nodes' experts (a relay receives
    // routes to its own): a comparison sort keeps the documented order.
    entries = arrivals;
    std::stable_sort(entries.begin(), entries.end(),
                     [](const Expansion &x, const Expansion &y) {
                       if (x.destination != y.destination)
                         return x.destination < y.destination;
                       if (x.source != y.source)
                         return x.source < y.source;
                       return x.expert < y.expert;
                     });
    return Status::success();
  }
  // On one node the expert's index on its rank orders the experts of a
  // destination, so a counting sort over (destination, source, index),
  // the slots of expanded_counts, gives the order in linear time.
  auto slot = [&](const Expansion &e) {
    return (e.destination * nodes + e.source) * expertsPerRank +
           e.expert % expertsPerRank;
  };
  start.assign(slots + 1, 0);
  for (const Expansion &e : arrivals)
    ++start[slot(e) + 1];
  std::partial_sum(start.begin(), start.end(), start.begin());
  entries.resize(arrivals.size());
  for (const Expansion &e : arrivals)
    entries[start[slot(e)]++] = e;
  return Status::success();
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

Status CpuBackend::gateGrad(const float *probs, const int32_t *expertIds,
                            intptr_t tokens, intptr_t experts, intptr_t k,
                            tamoe_rt_score_t score, bool renormalize,
                            const float *dWeights, const float *dProbs,
                            float *dLogits) {
  if (dWeights)
    for (intptr_t a = 0; a < tokens * k; ++a)
      if (expertIds[a] < 0 || expertIds[a] >= experts)
        return invalid(str(entry("expert_ids", a, k), " = ", expertIds[a],
                           " is out of range [0, ", experts, ")"));
  if (tokens == 0)
    return Status::success();
  std::vector<float> g(experts);
  for (intptr_t t = 0; t < tokens; ++t) {
    const float *p = probs + t * experts;
    // g: the gradient of the scores, from probs and from the chosen weights.
    for (intptr_t e = 0; e < experts; ++e)
      g[e] = dProbs ? dProbs[t * experts + e] : 0.0f;
    if (dWeights) {
      const int32_t *ids = expertIds + t * k;
      const float *dw = dWeights + t * k;
      if (renormalize) {
        // w_j = p_j / s gives dp_m = (dw_m - sum_j dw_j w_j) / s.
        // s as the gate divided by: the sum, then the epsilon.
        float s = 0, dot = 0;
        for (intptr_t j = 0; j < k; ++j)
          s += p[ids[j]];
        s += TAMOE_RT_RENORMALIZE_EPSILON;
        for (intptr_t j = 0; j < k; ++j)
          dot += dw[j] * (p[ids[j]] / s);
        for (intptr_t j = 0; j < k; ++j)
          g[ids[j]] += (dw[j] - dot) / s;
      } else {
        for (intptr_t j = 0; j < k; ++j)
          g[ids[j]] += dw[j];
      }
    }
    float *dx = dLogits + t * experts;
    if (score == TAMOE_RT_SCORE_SIGMOID) {
      for (intptr_t e = 0; e < experts; ++e)
        dx[e] = g[e] * (p[e] * (1.0f - p[e]));
    } else {
      float dot = 0;
      for (intptr_t e = 0; e < experts; ++e)
        dot += p[e] * g[e];
      for (intptr_t e = 0; e < experts; ++e)
        dx[e] = p[e] * (g[e] - dot);
    }
  }
  return Status::success();
}

Status CpuBackend::combineGrad(const float *expertOutputs, intptr_t rows,
                               intptr_t hidden, const int32_t *positions,
                               const float *weights, intptr_t tokens,
                               intptr_t k, const float *dCombined,
                               float *dExpertOutputs, float *dWeights) {
  Status status = checkPositions(positions, tokens, k, rows);
  if (!status.ok())
    return status;
  if (dExpertOutputs) {
    // A row adds up its assignments' terms in assignment order.
    std::fill(dExpertOutputs, dExpertOutputs + rows * hidden, 0.0f);
    for (intptr_t a = 0; a < tokens * k; ++a) {
      if (positions[a] < 0)
        continue;
      addRow(dExpertOutputs + intptr_t(positions[a]) * hidden,
             weights ? weights[a] : 1.0f, dCombined + (a / k) * hidden, hidden);
    }
  }
  if (dWeights)
    for (intptr_t a = 0; a < tokens * k; ++a) {
      float dot = 0;
      if (positions[a] >= 0) {
        const float *in = dCombined + (a / k) * hidden;
        const float *out = expertOutputs + intptr_t(positions[a]) * hidden;
        for (intptr_t h = 0; h < hidden; ++h)
          dot += in[h] * out[h];
      }
      dWeights[a] = dot;
    }
  return Status::success();
}

Status CpuBackend::groupedMatmulGrad(const float *rows, intptr_t rowsCapacity,
                                     intptr_t hidden, const int32_t *counts,
                                     intptr_t numCounts, intptr_t experts,
                                     const float *weights, intptr_t outFeatures,
                                     const float *dResult, float *dRows,
                                     float *dWeights) {
  intptr_t total = 0;
  Status status = checkCounts(counts, numCounts, rowsCapacity, total);
  if (!status.ok())
    return status;
  if (dRows) {
    intptr_t row = 0;
    for (intptr_t c = 0; c < numCounts; ++c) {
      const float *w = weights + (c % experts) * hidden * outFeatures;
      for (int32_t i = 0; i < counts[c]; ++i, ++row) {
        const float *dy = dResult + row * outFeatures;
        for (intptr_t h = 0; h < hidden; ++h) {
          float sum = 0;
          for (intptr_t f = 0; f < outFeatures; ++f)
            sum += dy[f] * w[h * outFeatures + f];
          dRows[row * hidden + h] = sum;
        }
      }
    }
    std::fill(dRows + total * hidden, dRows + rowsCapacity * hidden, 0.0f);
  }
  if (dWeights) {
    // Each weight adds up its expert's rows in order: chunk by chunk, row
    // by row.
    std::fill(dWeights, dWeights + experts * hidden * outFeatures, 0.0f);
    intptr_t row = 0;
    for (intptr_t c = 0; c < numCounts; ++c) {
      float *dw = dWeights + (c % experts) * hidden * outFeatures;
      for (int32_t i = 0; i < counts[c]; ++i, ++row) {
        const float *x = rows + row * hidden;
        const float *dy = dResult + row * outFeatures;
        for (intptr_t h = 0; h < hidden; ++h)
          for (intptr_t f = 0; f < outFeatures; ++f)
            dw[h * outFeatures + f] += x[h] * dy[f];
      }
    }
  }
  return Status::success();
}

Status CpuBackend::auxLossGrad(const int32_t *expertIds,
                               const int32_t *positions, intptr_t tokens,
                               intptr_t experts, intptr_t k,
                               const float *expertWeights, const float *dLoss,
                               float *dProbs) {
  // Nothing to write, and no per-expert table for an empty call.
  if (tokens == 0)
    return Status::success();
  std::vector<float> counts;
  Status status =
      countAssignments(expertIds, positions, tokens, experts, k, counts);
  if (!status.ok())
    return status;
  // The loss's scale as auxLoss computes it; a weight of 1 changes nothing,
  // so a uniform plan's gradient is the switch loss's to the bit.
  float s = float(tokens);
  float scale = float(experts) / (float(k) * (s * s));
  for (intptr_t e = 0; e < experts; ++e) {
    float g = counts[e];
    if (expertWeights)
      g = g * expertWeights[e];
    dProbs[e] = g * scale * *dLoss;
  }
  for (intptr_t t = 1; t < tokens; ++t)
    std::copy(dProbs, dProbs + experts, dProbs + t * experts);
  return Status::success();
}

Status CpuBackend::dedupPackGrad(const float *dUnique, intptr_t uniqueCapacity,
                                 intptr_t hidden, const int32_t *expertIds,
                                 const int32_t *positions, intptr_t numTokens,
                                 intptr_t k, intptr_t expertsPerNode,
                                 intptr_t nodes, float *dTokens) {
  intptr_t total = 0;
  Status status = packRows(expertIds, positions, numTokens, k, expertsPerNode,
                           nodes, order, rowIndex, total);
  if (!status.ok())
    return status;
  if (total > uniqueCapacity)
    return invalid(str("expert_ids and positions make ", total,
                       " unique rows but unique_capacity is ", uniqueCapacity));
  // A token's rows, node by node: its assignments' rows ascending (rows are
  // numbered by node first), each once.
  for (intptr_t t = 0; t < numTokens; ++t) {
    auto first = rowIndex.begin() + t * k, last = first + k;
    std::sort(first, last);
    for (auto row = first + 1; row < last; ++row)
      if (*row == *(row - 1))
        *(row - 1) = -1;
  }
  gatherRows(dUnique, hidden, rowIndex, numTokens, k, k, 1, dTokens);
  return Status::success();
}

Status CpuBackend::dedupExpandGrad(const float *dExpanded,
                                   intptr_t expandedCapacity, intptr_t hidden,
                                   const int32_t *routes,
                                   intptr_t uniqueCapacity, intptr_t k,
                                   const int32_t *recvCounts, intptr_t nodes,
                                   intptr_t ranksPerNode,
                                   intptr_t expertsPerRank, float *dUnique) {
  Status status = expand(routes, uniqueCapacity, k, recvCounts, nodes,
                         ranksPerNode, expertsPerRank);
  if (!status.ok())
    return status;
  if (intptr_t(entries.size()) > expandedCapacity)
    return invalid(str("routes make ", entries.size(),
                       " expanded rows but expanded_capacity is ",
                       expandedCapacity));
  // The expanded row of each route entry, then each unique row gathers
  // its entries' rows in route order.
  rowIndex.assign(uniqueCapacity * k, -1);
  for (size_t p = 0; p < entries.size(); ++p)
    rowIndex[entries[p].row * k + entries[p].slot] = intptr_t(p);
  gatherRows(dExpanded, hidden, rowIndex, uniqueCapacity, k, k, 1, dUnique);
  return Status::success();
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

Status CpuBackend::allReduce(tamoe_rt_group_t group, float *data, intptr_t n,
                             bool average) {
  if (!launcher.broken().ok())
    return launcher.brokenStatus();
  std::string what =
      str("the all-reduce over the ", MpiLauncher::groupName(group), " group");
  // MPI counts are int: in chunks of 2^30 floats.
  constexpr intptr_t kChunk = intptr_t(1) << 30;
  for (intptr_t offset = 0; offset < n; offset += kChunk) {
    MPI_Request request;
    Status status = launcher.check(
        MPI_Iallreduce(MPI_IN_PLACE, data + offset,
                       int(std::min(kChunk, n - offset)), MPI_FLOAT, MPI_SUM,
                       launcher.comm(group), &request),
        what);
    if (status.ok())
      status = launcher.wait(&request, 1, what);
    if (!status.ok())
      return status;
  }
  if (average) {
    float size = float(launcher.groupSize(group));
    for (intptr_t i = 0; i < n; ++i)
      data[i] /= size;
  }
  return Status::success();
}

Status CpuBackend::sgd(float *params, const float *grads, float *velocity,
                       intptr_t n, float lr, float momentum,
                       float weightDecay) {
  for (intptr_t i = 0; i < n; ++i)
    sgdStep(params[i], grads[i], velocity ? velocity + i : nullptr, lr,
            momentum, weightDecay);
  return Status::success();
}

Status CpuBackend::adam(float *params, const float *grads, float *m, float *v,
                        intptr_t n, int64_t step, float lr, float beta1,
                        float beta2, float eps, float weightDecay) {
  AdamStep update(step, lr, beta1, beta2, eps, weightDecay);
  for (intptr_t i = 0; i < n; ++i)
    update(params[i], grads[i], m[i], v[i]);
  return Status::success();
}

//===----------------------------------------------------------------------===//
// Exchange
//===----------------------------------------------------------------------===//

Status CpuBackend::allToAll(tamoe_rt_group_t group, const void *send,
                            intptr_t sendCapacity, intptr_t rowBytes,
                            const int32_t *sendCounts, intptr_t split,
                            void *received, intptr_t recvCapacity,
                            int32_t *recvCounts, Traffic &traffic) {
  std::unique_ptr<PendingExchange> pending;
  Status status = allToAllStart(launcher, Status::success(), group, send,
                                sendCapacity, rowBytes, sendCounts, split,
                                received, recvCapacity, recvCounts, pending);
  if (status.ok())
    status = allToAllWait(std::move(pending), traffic);
  return status;
}

Status CpuBackend::allToAllStart(Launcher & /*launcher*/, Status local,
                                 tamoe_rt_group_t group, const void *send,
                                 intptr_t sendCapacity, intptr_t rowBytes,
                                 const int32_t *sendCounts, intptr_t split,
                                 void *received, intptr_t recvCapacity,
                                 int32_t *recvCounts,
                                 std::unique_ptr<PendingExchange> &pending) {
  if (!launcher.broken().ok())
    return launcher.brokenStatus();
  MPI_Comm comm = launcher.comm(group);
  int size = launcher.groupSize(group), me = launcher.groupRank(group);

  // This rank's counts: they must be non-negative and within `send`. Rows
  // per peer add up in int64.
  std::vector<int64_t> rowsTo(size, 0);
  int64_t sendTotal = 0;
  for (intptr_t i = 0; local.ok() && i < size * split; ++i) {
    if (sendCounts[i] < 0)
      local = invalid(split == 1 ? str("send_counts[", i, "] = ", sendCounts[i],
                                       " is negative")
                                 : str(entry("send_counts", i, split), " = ",
                                       sendCounts[i], " is negative"));
    rowsTo[i / split] += sendCounts[i];
    sendTotal += sendCounts[i];
  }
  if (local.ok() && sendTotal > sendCapacity)
    local = invalid(str("send_counts sum to ", sendTotal,
                        " rows but send_capacity is ", sendCapacity));
  if (local.ok() && sendTotal > INT_MAX)
    local = invalid(str("send_counts sum to ", sendTotal, " rows, more than ",
                        INT_MAX, " (MPI counts are int)"));

  auto exchange = std::make_unique<CpuExchange>();
  CpuExchange &x = *exchange;
  x.group = group;
  x.send = send;
  x.received = received;
  x.rowBytes = rowBytes;
  x.split = split;
  x.recvCounts = recvCounts;
  x.local = local;
  // The split's counts travel in round 2; copied now, as the program may
  // reuse send_counts before then.
  if (local.ok() && split > 1)
    x.countsIn.assign(sendCounts, sendCounts + size * split);

  // Round 1: every member learns each member's failure, capacity,
  // row_bytes, split and receive total, and the rows each peer sends here.
  // The messages have sizes independent of the arguments, so they are safe
  // before the arguments are known to agree. In a small group one allgather
  // of every member's row counts does it; in a large one, where that matrix
  // would be big, a SUM reduction in which every member fills its own slots
  // ([totals | failures | capacities | row_bytes | splits]), alongside an
  // alltoall of the row counts.
  x.rowsIn.assign(size, 0);
  x.rowsOut.assign(size, 0);
  if (local.ok())
    for (int p = 0; p < size; ++p)
      x.rowsIn[p] = int32_t(rowsTo[p]);
  const std::string &what = stageName(0, group);
  Status status;
  constexpr int kGatherLimit = 128;
  x.gathered = size <= kGatherLimit;
  if (x.gathered) {
    int block = kSettleHeader + size;
    x.settleIn.assign(block, 0);
    x.settleIn[0] = local.ok() ? 0 : local.code;
    x.settleIn[1] = recvCapacity;
    x.settleIn[2] = rowBytes;
    x.settleIn[3] = split;
    std::copy(x.rowsIn.begin(), x.rowsIn.end(),
              x.settleIn.begin() + kSettleHeader);
    x.settleOut.assign(size_t(block) * size, 0);
    status =
        launcher.check(MPI_Iallgather(x.settleIn.data(), block, MPI_INT64_T,
                                      x.settleOut.data(), block, MPI_INT64_T,
                                      comm, &x.requests[0]),
                       what);
    if (status.ok())
      x.posted = 1;
  } else {
    x.settleIn.assign(5 * size, 0);
    x.settleOut.assign(5 * size, 0);
    if (local.ok())
      std::copy(rowsTo.begin(), rowsTo.end(), x.settleIn.begin());
    else
      x.settleIn[size + me] = local.code;
    x.settleIn[2 * size + me] = recvCapacity;
    x.settleIn[3 * size + me] = rowBytes;
    x.settleIn[4 * size + me] = split;
    status = launcher.check(
        MPI_Iallreduce(x.settleIn.data(), x.settleOut.data(), 5 * size,
                       MPI_INT64_T, MPI_SUM, comm, &x.requests[0]),
        what);
    if (status.ok()) {
      x.posted = 1;
      status = launcher.check(MPI_Ialltoall(x.rowsIn.data(), 1, MPI_INT32_T,
                                            x.rowsOut.data(), 1, MPI_INT32_T,
                                            comm, &x.requests[1]),
                              what);
    }
    if (status.ok())
      x.posted = 2;
  }
  if (!status.ok()) {
    // The launcher is broken; MPI may still complete a posted request into
    // the exchange's buffers.
    (void)exchange.release();
    return status;
  }
  inFlight.push_back(&x);
  pending = std::move(exchange);
  return Status::success();
}

Status CpuBackend::settle(CpuExchange &x) {
  tamoe_rt_group_t group = x.group;
  int size = launcher.groupSize(group), me = launcher.groupRank(group);
  x.posted = 0;
  x.requests[0] = x.requests[1] = MPI_REQUEST_NULL;

  // Round 1 as [totals | failures | capacities | row_bytes | splits].
  std::vector<int64_t> all;
  if (x.gathered) {
    int block = kSettleHeader + size;
    all.assign(5 * size, 0);
    for (int p = 0; p < size; ++p) {
      const int64_t *from = &x.settleOut[size_t(p) * block];
      for (int field = 0; field < kSettleHeader; ++field)
        all[(1 + field) * size + p] = from[field];
      for (int q = 0; q < size; ++q)
        all[q] += from[kSettleHeader + q];
      x.rowsOut[p] = int32_t(from[kSettleHeader + me]);
    }
  } else {
    all = x.settleOut;
  }

  // The verdict, the same on every member: a failure (only that member
  // knows why, so its message follows in round 2), a disagreement, a
  // receive that does not fit.
  for (int p = 0; p < size; ++p)
    if (all[size + p] != 0) {
      x.failedMember = p;
      x.phase = CpuExchange::Phase::Sharing;
      if (p == me) {
        size_t length = std::min(x.local.message.size(), sizeof x.failure.text);
        x.failure.code = x.local.code;
        x.failure.length = int64_t(length);
        std::memcpy(x.failure.text, x.local.message.data(), length);
      }
      Status status = launcher.check(
          MPI_Ibcast(&x.failure, int(sizeof x.failure), MPI_BYTE, p,
                     launcher.transferComm(group), &x.requests[0]),
          stageName(2, group));
      if (status.ok())
        x.posted = 1;
      return status;
    }
  x.phase = CpuExchange::Phase::Refused;
  for (auto [slot, valueName] :
       {std::pair<int, const char *>{3, "row_bytes"}, {4, "split"}})
    for (int p = 1; p < size; ++p)
      if (all[slot * size + p] != all[slot * size]) {
        x.verdict = Status::error(TAMOE_RT_ERROR_MISMATCH,
                                  str("ranks disagree on ", valueName,
                                      ": rank ", launcher.worldRankOf(group, 0),
                                      " has ", all[slot * size], ", rank ",
                                      launcher.worldRankOf(group, p), " has ",
                                      all[slot * size + p]));
        return Status::success();
      }
  for (int p = 0; p < size; ++p) {
    int64_t rows = all[p], capacity = all[2 * size + p];
    int64_t rank = launcher.worldRankOf(group, p);
    if (rows > capacity)
      x.verdict =
          exceeded(str("rank ", rank, ": ", rows,
                       " rows to receive exceed recv_capacity ", capacity));
    else if (rows > INT_MAX)
      x.verdict = invalid(str("rank ", rank, ": ", rows, " rows to receive, ",
                              "more than ", INT_MAX, " (MPI counts are int)"));
    if (!x.verdict.ok())
      return Status::success();
  }

  // Round 2: the rows, and the counts of the split alongside them.
  x.phase = CpuExchange::Phase::Moving;
  if (hostTimeline.recording())
    x.rowsPostedUs = hostTimeline.nowUs();
  x.sendRows.assign(size, 0);
  x.sendOffsets.assign(size, 0);
  x.recvRows.assign(size, 0);
  x.recvOffsets.assign(size, 0);
  int sendOffset = 0, recvOffset = 0;
  for (int p = 0; p < size; ++p) {
    x.sendRows[p] = x.rowsIn[p];
    x.sendOffsets[p] = sendOffset;
    sendOffset += x.sendRows[p];
    x.recvRows[p] = x.rowsOut[p];
    x.recvOffsets[p] = recvOffset;
    recvOffset += x.recvRows[p];
  }
  // With one count per peer the rows are the counts; otherwise the split
  // travels alongside the rows.
  bool exchangeCounts = x.split > 1;
  if (exchangeCounts)
    x.countsOut.assign(size * x.split, 0);
  else
    x.countsOut.assign(x.rowsOut.begin(), x.rowsOut.end());
  // Counts and offsets in rows: a row type keeps them far from INT_MAX.
  MPI_Comm comm = launcher.transferComm(group);
  const std::string &what = stageName(1, group);
  Status status = launcher.check(
      MPI_Type_contiguous(int(x.rowBytes), MPI_BYTE, &x.row), what);
  if (status.ok()) {
    MPI_Type_commit(&x.row);
    status = launcher.check(
        MPI_Ialltoallv(x.send, x.sendRows.data(), x.sendOffsets.data(), x.row,
                       x.received, x.recvRows.data(), x.recvOffsets.data(),
                       x.row, comm, &x.requests[0]),
        what);
  }
  if (status.ok())
    x.posted = 1;
  if (status.ok() && exchangeCounts)
    status = launcher.check(MPI_Ialltoall(x.countsIn.data(), int(x.split),
                                          MPI_INT32_T, x.countsOut.data(),
                                          int(x.split), MPI_INT32_T, comm,
                                          &x.requests[1]),
                            what);
  if (status.ok() && exchangeCounts)
    x.posted = 2;

  // Bytes a rank keeps are not traffic.
  for (int p = 0; p < size; ++p) {
    if (p == me)
      continue;
    int64_t bytes = int64_t(x.sendRows[p]) * x.rowBytes;
    if (launcher.worldRankOf(group, p) / launcher.ranksPerNode() ==
        launcher.node())
      x.traffic.intraNodeBytes += bytes;
    else
      x.traffic.interNodeBytes += bytes;
  }
  return status;
}

Status CpuBackend::settleInOrder(const CpuExchange *until,
                                 Clock::time_point deadline) {
  bool waiting = until != nullptr;
  for (CpuExchange *x : inFlight) {
    if (x->phase == CpuExchange::Phase::Settling) {
      const std::string &what = stageName(0, x->group);
      // An error that progress() met fails the wait that needs this
      // exchange, not those of exchanges started before it.
      if (x->error != MPI_SUCCESS)
        return waiting ? launcher.check(x->error, what) : Status::success();
      if (waiting) {
        if (Status status =
                launcher.waitUntil(x->requests, x->posted, what, deadline);
            !status.ok())
          return status;
      } else {
        int done = 0;
        x->error =
            MPI_Testall(x->posted, x->requests, &done, MPI_STATUSES_IGNORE);
        if (x->error != MPI_SUCCESS || !done)
          return Status::success();
      }
      if (Status status = settle(*x); !status.ok())
        return status;
    }
    if (x == until)
      waiting = false;
  }
  return Status::success();
}

Status CpuBackend::allToAllWait(std::unique_ptr<PendingExchange> pending,
                                Traffic &traffic) {
  auto &x = static_cast<CpuExchange &>(*pending);
  // One timeout for the whole wait, however many settles it completes.
  Clock::time_point deadline = deadlineAfter(launcher.timeoutSeconds());
  Status status = launcher.broken().ok() ? settleInOrder(&x, deadline)
                                         : launcher.brokenStatus();
  inFlight.erase(std::find(inFlight.begin(), inFlight.end(), &x));
  const std::string &what =
      stageName(x.phase == CpuExchange::Phase::Sharing ? 2 : 1, x.group);
  if (status.ok() && x.error != MPI_SUCCESS)
    status = launcher.check(x.error, what);
  if (status.ok())
    status = launcher.waitUntil(x.requests, x.posted, what, deadline);
  if (!status.ok()) {
    // MPI may still write into the exchange's buffers (and the program's):
    // leaked, as a broken launcher's are.
    (void)pending.release();
    return status;
  }
  timeRows(x);
  switch (x.phase) {
  case CpuExchange::Phase::Sharing: {
    size_t length =
        size_t(std::clamp<int64_t>(x.failure.length, 0, sizeof x.failure.text));
    return Status::error(static_cast<tamoe_rt_status_t>(x.failure.code),
                         str("rank ",
                             launcher.worldRankOf(x.group, x.failedMember),
                             ": ", std::string(x.failure.text, length)));
  }
  case CpuExchange::Phase::Refused:
    return x.verdict;
  default:
    break;
  }
  if (!x.abandoned)
    std::copy(x.countsOut.begin(), x.countsOut.end(), x.recvCounts);
  traffic.intraNodeBytes += x.traffic.intraNodeBytes;
  traffic.interNodeBytes += x.traffic.interNodeBytes;
  return Status::success();
}

void CpuBackend::progress() {
  // MPI moves a nonblocking collective's messages only inside MPI calls (no
  // progress thread by default), so an exchange in flight advances only
  // when this rank calls in: each test runs MPI's progress engine once.
  if (!launcher.broken().ok())
    return;
  (void)settleInOrder(nullptr, Clock::time_point());
  for (CpuExchange *x : inFlight) {
    if (x->phase == CpuExchange::Phase::Settling)
      break;
    if (x->error != MPI_SUCCESS)
      continue;
    int done = 0;
    x->error = MPI_Testall(x->posted, x->requests, &done, MPI_STATUSES_IGNORE);
    if (x->error == MPI_SUCCESS && done)
      timeRows(*x);
  }
}

void CpuBackend::timeRows(CpuExchange &x) {
  if (x.phase != CpuExchange::Phase::Moving || x.rowsPostedUs < 0)
    return;
  hostTimeline.add(
      {"comm", str("rows over the ", MpiLauncher::groupName(x.group), " group"),
       x.rowsPostedUs, hostTimeline.nowUs()});
  x.rowsPostedUs = -1;
}
