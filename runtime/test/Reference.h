//===- Reference.h - Serial reference of the runtime's operations -*- C++
//-*-===//
//
// The semantics of tamoe_rt.h written as directly as possible (sorts and
// nested loops, no counting sorts or offsets), for the unit tests and the
// multi-rank tests to compare the runtime against. Nothing here calls the
// runtime.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_TEST_REFERENCE_H
#define TAMOE_RT_TEST_REFERENCE_H

#include "tamoe_rt/tamoe_rt.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

namespace reference {

using Bytes = std::vector<unsigned char>;

/// Deterministic inputs: every rank can regenerate every rank's data.
struct Random {
  explicit Random(uint64_t seed) : engine(seed) {}
  float uniform(float low, float high) {
    return std::uniform_real_distribution<float>(low, high)(engine);
  }
  int64_t integer(int64_t low, int64_t high) { // [low, high]
    return std::uniform_int_distribution<int64_t>(low, high)(engine);
  }
  std::vector<float> floats(size_t n, float low = -2, float high = 2) {
    std::vector<float> values(n);
    for (float &value : values)
      value = uniform(low, high);
    return values;
  }
  Bytes bytes(size_t n) {
    Bytes values(n);
    for (unsigned char &value : values)
      value = static_cast<unsigned char>(integer(0, 255));
    return values;
  }
  std::mt19937_64 engine;
};

/// The ranking of scores and weights: NaN as -inf (tamoe_rt.h).
template <typename T> T rankOf(T value) {
  return std::isnan(value) ? -INFINITY : value;
}

template <typename T> struct GateOf {
  std::vector<int32_t> ids;
  std::vector<T> weights, probs;
};
using Gate = GateOf<float>;

/// tamoe.gate: softmax (maximum subtracted) or sigmoid; top-k by
/// descending score, lower id first; optional group limit. In f32 as the
/// runtime, or in f64 for finite differences.
template <typename T>
GateOf<T> gate(const std::vector<T> &logits, int64_t tokens, int64_t experts,
               int64_t k, bool sigmoid, bool renormalize, int64_t groups = 0,
               int64_t kept = 0) {
  GateOf<T> out;
  out.probs.resize(tokens * experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const T *x = &logits[t * experts];
    T *p = &out.probs[t * experts];
    if (sigmoid) {
      for (int64_t e = 0; e < experts; ++e)
        p[e] = T(1) / (T(1) + std::exp(-x[e]));
    } else {
      T max = *std::max_element(x, x + experts);
      T sum = 0;
      for (int64_t e = 0; e < experts; ++e)
        sum += (p[e] = std::exp(x[e] - max));
      for (int64_t e = 0; e < experts; ++e)
        p[e] /= sum;
    }
    std::vector<int64_t> candidates(experts);
    std::iota(candidates.begin(), candidates.end(), 0);
    if (groups > 0) {
      int64_t size = experts / groups;
      std::vector<std::pair<T, int64_t>> scored; // (-rank, group)
      for (int64_t g = 0; g < groups; ++g) {
        // The two best of the group's numbers (NaN members count for none).
        std::vector<T> members(2, -INFINITY);
        for (int64_t e = g * size; e < (g + 1) * size; ++e)
          members.push_back(rankOf(p[e]));
        std::sort(members.rbegin(), members.rend());
        scored.push_back(
            {-(size > 1 ? members[0] + members[1] : members[0]), g});
      }
      std::sort(scored.begin(), scored.end());
      candidates.clear();
      for (int64_t i = 0; i < kept; ++i)
        for (int64_t e = 0; e < size; ++e)
          candidates.push_back(scored[i].second * size + e);
    }
    std::stable_sort(candidates.begin(), candidates.end(),
                     [&](int64_t a, int64_t b) {
                       T x = rankOf(p[a]), y = rankOf(p[b]);
                       return x > y || (x == y && a < b);
                     });
    T sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      out.ids.push_back(int32_t(candidates[j]));
      out.weights.push_back(p[candidates[j]]);
      sum += p[candidates[j]];
    }
    if (renormalize)
      for (int64_t j = 0; j < k; ++j)
        out.weights[t * k + j] /= sum + T(TAMOE_RT_RENORMALIZE_EPSILON);
  }
  return out;
}

struct Dispatch {
  Bytes rows;
  std::vector<int32_t> counts, positions;
  int64_t dropped = 0;
};

/// tamoe.dispatch: by expert, then token (then slot); `capacity` < 0 is
/// dropless; by probability keeps the highest weights, earlier first.
inline Dispatch dispatch(const Bytes &tokens, int64_t rowBytes,
                         const std::vector<int32_t> &ids, int64_t k,
                         int64_t experts, int64_t capacity = -1,
                         bool byProbability = false,
                         const std::vector<float> &weights = {}) {
  int64_t tokenCount = int64_t(ids.size()) / k;
  Dispatch out;
  out.positions.assign(ids.size(), -1);
  for (int64_t e = 0; e < experts; ++e) {
    std::vector<int64_t> assigned; // t * k + j, in token order
    for (int64_t t = 0; t < tokenCount; ++t)
      for (int64_t j = 0; j < k; ++j)
        if (ids[t * k + j] == e)
          assigned.push_back(t * k + j);
    std::vector<int64_t> keep = assigned;
    if (capacity >= 0 && int64_t(keep.size()) > capacity) {
      if (byProbability)
        std::stable_sort(keep.begin(), keep.end(), [&](int64_t a, int64_t b) {
          return rankOf(weights[a]) > rankOf(weights[b]);
        });
      keep.resize(capacity);
      std::sort(keep.begin(), keep.end());
    }
    out.counts.push_back(int32_t(keep.size()));
    for (int64_t a : keep) {
      out.positions[a] = int32_t(out.rows.size() / rowBytes);
      out.rows.insert(out.rows.end(), tokens.begin() + (a / k) * rowBytes,
                      tokens.begin() + (a / k + 1) * rowBytes);
    }
    out.dropped += int64_t(assigned.size() - keep.size());
  }
  return out;
}

/// tamoe.combine; empty `weights` are all 1 (the gradient of dispatch).
template <typename T>
std::vector<T> combine(const std::vector<T> &outputs, int64_t hidden,
                       const std::vector<int32_t> &positions,
                       const std::vector<T> &weights, int64_t k) {
  int64_t tokens = int64_t(positions.size()) / k;
  std::vector<T> combined(tokens * hidden, T(0));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < k; ++j)
      if (positions[t * k + j] >= 0)
        for (int64_t h = 0; h < hidden; ++h)
          combined[t * hidden + h] +=
              (weights.empty() ? T(1) : weights[t * k + j]) *
              outputs[positions[t * k + j] * hidden + h];
  return combined;
}

/// tamoe.grouped_matmul: chunk c of the rows (counts in order) times
/// weights[c % experts] [hidden, out].
template <typename T>
std::vector<T> groupedMatmul(const std::vector<T> &rows, int64_t hidden,
                             const std::vector<int32_t> &counts,
                             int64_t experts, const std::vector<T> &weights,
                             int64_t out) {
  int64_t capacity = int64_t(rows.size()) / hidden;
  std::vector<T> result(capacity * out, T(0));
  int64_t row = 0;
  for (size_t c = 0; c < counts.size(); ++c)
    for (int32_t i = 0; i < counts[c]; ++i, ++row)
      for (int64_t f = 0; f < out; ++f) {
        T sum = 0;
        for (int64_t h = 0; h < hidden; ++h)
          sum += rows[row * hidden + h] *
                 weights[((c % experts) * hidden + h) * out + f];
        result[row * out + f] = sum;
      }
  return result;
}

/// tamoe.aux_loss, in double: E sum_e w_e f_e P_e with f_e over all k S
/// assignments (negative ids not counted) and P_e the mean probability.
template <typename T>
double auxLoss(const std::vector<T> &probs, const std::vector<int32_t> &ids,
               int64_t experts, int64_t k, const std::vector<T> &weights = {}) {
  int64_t tokens = int64_t(ids.size()) / k;
  if (tokens == 0)
    return 0;
  double loss = 0;
  for (int64_t e = 0; e < experts; ++e) {
    double count = 0, prob = 0;
    for (int32_t id : ids)
      count += id == e;
    for (int64_t t = 0; t < tokens; ++t)
      prob += probs[t * experts + e];
    double f = count / double(k * tokens), mean = prob / double(tokens);
    loss += (weights.empty() ? 1.0 : weights[e]) * f * mean;
  }
  return double(experts) * loss;
}

/// tamoe.regroup of counts [a, b, inner] to [b, a, inner].
inline void regroup(const Bytes &rows, int64_t rowBytes,
                    const std::vector<int32_t> &counts, int64_t a, int64_t b,
                    int64_t inner, Bytes &regrouped,
                    std::vector<int32_t> &regroupedCounts) {
  auto chunkRows = [&](int64_t x, int64_t y) {
    int64_t n = 0;
    for (int64_t i = 0; i < inner; ++i)
      n += counts[(x * b + y) * inner + i];
    return n;
  };
  regrouped.clear();
  regroupedCounts.assign(counts.size(), 0);
  for (int64_t y = 0; y < b; ++y)
    for (int64_t x = 0; x < a; ++x) {
      int64_t start = 0;
      for (int64_t before = 0; before < x * b + y; ++before)
        start += chunkRows(before / b, before % b);
      regrouped.insert(regrouped.end(), rows.begin() + start * rowBytes,
                       rows.begin() + (start + chunkRows(x, y)) * rowBytes);
      for (int64_t i = 0; i < inner; ++i)
        regroupedCounts[(y * a + x) * inner + i] =
            counts[(x * b + y) * inner + i];
    }
}

/// tamoe.chunk: part c of `chunks` of every entry of counts, row by row:
/// row j of an entry of n rows is in part c when c n / chunks <= j <
/// (c + 1) n / chunks (floor division).
inline void chunk(const Bytes &rows, int64_t rowBytes,
                  const std::vector<int32_t> &counts, int64_t c, int64_t chunks,
                  Bytes &part, std::vector<int32_t> &partCounts) {
  part.clear();
  partCounts.assign(counts.size(), 0);
  int64_t start = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    int64_t n = counts[i];
    for (int64_t j = 0; j < n; ++j)
      if (c * n / chunks <= j && j < (c + 1) * n / chunks) {
        part.insert(part.end(), rows.begin() + (start + j) * rowBytes,
                    rows.begin() + (start + j + 1) * rowBytes);
        ++partCounts[i];
      }
    start += n;
  }
}

struct Pack {
  Bytes unique;
  std::vector<int32_t> routes, nodeCounts;
};

/// tamoe.dedup_pack.
inline Pack dedupPack(const Bytes &tokens, int64_t rowBytes,
                      const std::vector<int32_t> &ids,
                      const std::vector<int32_t> &positions, int64_t k,
                      int64_t expertsPerNode, int64_t nodes) {
  int64_t tokenCount = int64_t(ids.size()) / k;
  Pack out;
  for (int64_t n = 0; n < nodes; ++n) {
    int32_t count = 0;
    for (int64_t t = 0; t < tokenCount; ++t) {
      std::vector<int32_t> route;
      for (int64_t j = 0; j < k; ++j)
        if (positions[t * k + j] >= 0 && ids[t * k + j] / expertsPerNode == n)
          route.push_back(ids[t * k + j]);
      if (route.empty())
        continue;
      route.resize(k, -1);
      out.routes.insert(out.routes.end(), route.begin(), route.end());
      out.unique.insert(out.unique.end(), tokens.begin() + t * rowBytes,
                        tokens.begin() + (t + 1) * rowBytes);
      ++count;
    }
    out.nodeCounts.push_back(count);
  }
  return out;
}

struct Expand {
  Bytes expanded;
  std::vector<int32_t> counts;
};

/// tamoe.dedup_expand: one row per listed expert, ordered by destination
/// local index, source node, expert, then arrival.
inline Expand dedupExpand(const Bytes &unique,
                          const std::vector<int32_t> &routes, int64_t rowBytes,
                          int64_t k, const std::vector<int32_t> &recvCounts,
                          int64_t ranksPerNode, int64_t expertsPerRank) {
  int64_t nodes = int64_t(recvCounts.size());
  Expand out;
  out.counts.assign(ranksPerNode * nodes * expertsPerRank, 0);
  int64_t maxExpert = 0;
  for (int32_t e : routes)
    maxExpert = std::max<int64_t>(maxExpert, e);
  for (int64_t d = 0; d < ranksPerNode; ++d)
    for (int64_t s = 0, first = 0; s < nodes; first += recvCounts[s++])
      for (int64_t e = 0; e <= maxExpert; ++e) {
        if ((e / expertsPerRank) % ranksPerNode != d)
          continue;
        for (int64_t r = first; r < first + recvCounts[s]; ++r)
          for (int64_t j = 0; j < k; ++j)
            if (routes[r * k + j] == e) {
              out.expanded.insert(out.expanded.end(),
                                  unique.begin() + r * rowBytes,
                                  unique.begin() + (r + 1) * rowBytes);
              ++out.counts[(d * nodes + s) * expertsPerRank +
                           e % expertsPerRank];
            }
      }
  return out;
}

/// What rank `me` receives in an all-to-all of `ranks` ranks where rank r
/// sends `send[r]` with counts `counts[r]` [ranks, split].
inline void allToAll(const std::vector<Bytes> &send,
                     const std::vector<std::vector<int32_t>> &counts,
                     int64_t rowBytes, int64_t split, int64_t me,
                     Bytes &received, std::vector<int32_t> &recvCounts) {
  int64_t ranks = int64_t(send.size());
  received.clear();
  recvCounts.clear();
  for (int64_t source = 0; source < ranks; ++source) {
    int64_t start = 0;
    for (int64_t i = 0; i < me * split; ++i)
      start += counts[source][i];
    int64_t rows = 0;
    for (int64_t i = 0; i < split; ++i) {
      rows += counts[source][me * split + i];
      recvCounts.push_back(counts[source][me * split + i]);
    }
    received.insert(received.end(), send[source].begin() + start * rowBytes,
                    send[source].begin() + (start + rows) * rowBytes);
  }
}

//===----------------------------------------------------------------------===//
// Dense compute
//===----------------------------------------------------------------------===//

/// tamoe_rt_matmul without an init: op(a) [m, k] x op(b) [k, n], where a
/// transposed operand is stored as its transpose.
template <typename T>
std::vector<T> matmul(const std::vector<T> &a, const std::vector<T> &b,
                      int64_t m, int64_t k, int64_t n, bool transposeA,
                      bool transposeB) {
  std::vector<T> c(m * n, T(0));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t h = 0; h < k; ++h)
        c[i * n + j] += (transposeA ? a[h * m + i] : a[i * k + h]) *
                        (transposeB ? b[j * k + h] : b[h * n + j]);
  return c;
}

//===----------------------------------------------------------------------===//
// Gradients, from the definitions: each is the transpose of the op's
// Jacobian applied to the gradients of its results
//===----------------------------------------------------------------------===//

/// tamoe_rt_gate_grad: d_logits through the Jacobian of the chosen weights
/// (renormalised or not) with respect to the scores, then the Jacobian of
/// softmax or sigmoid. Empty dWeights or dProbs are zero.
template <typename T>
std::vector<T>
gateGrad(const std::vector<T> &probs, const std::vector<int32_t> &ids,
         int64_t experts, int64_t k, bool sigmoid, bool renormalize,
         const std::vector<T> &dWeights, const std::vector<T> &dProbs) {
  int64_t tokens = int64_t(probs.size()) / experts;
  std::vector<T> dLogits(probs.size(), T(0));
  for (int64_t t = 0; t < tokens; ++t) {
    const T *p = &probs[t * experts];
    T sum = 0;
    for (int64_t j = 0; j < k; ++j)
      sum += p[ids[t * k + j]];
    sum += T(TAMOE_RT_RENORMALIZE_EPSILON);
    std::vector<T> dScores(experts, T(0));
    for (int64_t e = 0; e < experts; ++e) {
      if (!dProbs.empty())
        dScores[e] = dProbs[t * experts + e];
      if (dWeights.empty())
        continue;
      // d weights[j] / d p[e]: [e == ids[j]] (/ sum - p[ids[j]] / sum^2
      // for every chosen e when renormalised).
      bool chosen = false;
      for (int64_t j = 0; j < k; ++j)
        chosen = chosen || ids[t * k + j] == e;
      for (int64_t j = 0; j < k; ++j) {
        int32_t id = ids[t * k + j];
        T derivative = renormalize ? (id == e ? T(1) / sum : T(0)) -
                                         (chosen ? p[id] / (sum * sum) : T(0))
                                   : T(id == e);
        dScores[e] += dWeights[t * k + j] * derivative;
      }
    }
    for (int64_t f = 0; f < experts; ++f)
      for (int64_t e = 0; e < experts; ++e) {
        // d p[e] / d logits[f].
        T derivative = sigmoid ? (e == f ? p[e] * (T(1) - p[e]) : T(0))
                               : p[e] * (T(e == f) - p[f]);
        dLogits[t * experts + f] += dScores[e] * derivative;
      }
  }
  return dLogits;
}

template <typename T> struct CombineGradOf {
  std::vector<T> dOutputs, dWeights;
};

/// tamoe_rt_combine_grad over `rows` expert outputs; empty `weights` are
/// all 1 (and then there is no dWeights).
template <typename T>
CombineGradOf<T> combineGrad(const std::vector<T> &outputs, int64_t rows,
                             int64_t hidden,
                             const std::vector<int32_t> &positions,
                             const std::vector<T> &weights, int64_t k,
                             const std::vector<T> &dCombined) {
  int64_t tokens = int64_t(positions.size()) / k;
  CombineGradOf<T> out;
  out.dOutputs.assign(rows * hidden, T(0));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t a = 0; a < tokens * k; ++a)
      if (positions[a] == r)
        for (int64_t h = 0; h < hidden; ++h)
          out.dOutputs[r * hidden + h] +=
              (weights.empty() ? T(1) : weights[a]) *
              dCombined[(a / k) * hidden + h];
  if (weights.empty())
    return out;
  out.dWeights.assign(tokens * k, T(0));
  for (int64_t a = 0; a < tokens * k; ++a)
    if (positions[a] >= 0)
      for (int64_t h = 0; h < hidden; ++h)
        out.dWeights[a] += dCombined[(a / k) * hidden + h] *
                           outputs[positions[a] * hidden + h];
  return out;
}

template <typename T> struct GroupedMatmulGradOf {
  std::vector<T> dRows, dWeights;
};

/// tamoe_rt_grouped_matmul_grad: the rows' and the experts' gradients of
/// result = rows x weights[c % experts] chunk by chunk.
template <typename T>
GroupedMatmulGradOf<T>
groupedMatmulGrad(const std::vector<T> &rows, int64_t hidden,
                  const std::vector<int32_t> &counts, int64_t experts,
                  const std::vector<T> &weights, int64_t out,
                  const std::vector<T> &dResult) {
  int64_t capacity = int64_t(rows.size()) / hidden;
  GroupedMatmulGradOf<T> grad;
  grad.dRows.assign(capacity * hidden, T(0));
  grad.dWeights.assign(experts * hidden * out, T(0));
  int64_t row = 0;
  for (size_t c = 0; c < counts.size(); ++c)
    for (int32_t i = 0; i < counts[c]; ++i, ++row) {
      int64_t e = int64_t(c) % experts;
      for (int64_t h = 0; h < hidden; ++h)
        for (int64_t f = 0; f < out; ++f) {
          grad.dRows[row * hidden + h] +=
              dResult[row * out + f] * weights[(e * hidden + h) * out + f];
          grad.dWeights[(e * hidden + h) * out + f] +=
              rows[row * hidden + h] * dResult[row * out + f];
        }
    }
  return grad;
}

/// tamoe_rt_aux_loss_grad with the fractions f_e held constant: d loss / d
/// probs[t, e] = E w_e f_e / S, times dLoss. `ids` as auxLoss takes them
/// (dropped assignments negative).
inline std::vector<double>
auxLossGrad(const std::vector<int32_t> &ids, int64_t tokens, int64_t experts,
            int64_t k, const std::vector<double> &weights, double dLoss) {
  std::vector<double> dProbs(tokens * experts, 0.0);
  for (int64_t e = 0; e < experts; ++e) {
    double count = 0;
    for (int32_t id : ids)
      count += id == e;
    double f = count / double(k * tokens);
    for (int64_t t = 0; t < tokens; ++t)
      dProbs[t * experts + e] = dLoss * double(experts) *
                                (weights.empty() ? 1.0 : weights[e]) * f /
                                double(tokens);
  }
  return dProbs;
}

/// Rows that hold their own index (int64): moved by a row-moving op, they
/// say which input row each output row copies.
inline Bytes indexRows(int64_t rows) {
  Bytes bytes(rows * sizeof(int64_t));
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(&bytes[r * sizeof(int64_t)], &r, sizeof(int64_t));
  return bytes;
}

/// The transpose of a row-moving op whose output row p copies input row
/// sources[p] (index rows it moved): every output row's gradient back to
/// its input row.
template <typename T>
std::vector<T> copiedBack(const std::vector<T> &dOutput, int64_t hidden,
                          const Bytes &sources, int64_t inputRows) {
  std::vector<T> dInput(inputRows * hidden, T(0));
  for (size_t p = 0; p < sources.size() / sizeof(int64_t); ++p) {
    int64_t source;
    std::memcpy(&source, &sources[p * sizeof(int64_t)], sizeof(int64_t));
    for (int64_t h = 0; h < hidden; ++h)
      dInput[source * hidden + h] += dOutput[p * hidden + h];
  }
  return dInput;
}

/// tamoe_rt_dedup_pack_grad: every unique row's gradient back to the
/// token it was made of.
template <typename T>
std::vector<T> dedupPackGrad(const std::vector<T> &dUnique, int64_t hidden,
                             const std::vector<int32_t> &ids,
                             const std::vector<int32_t> &positions, int64_t k,
                             int64_t expertsPerNode, int64_t nodes) {
  int64_t tokens = int64_t(ids.size()) / k;
  Pack pack = dedupPack(indexRows(tokens), sizeof(int64_t), ids, positions, k,
                        expertsPerNode, nodes);
  return copiedBack(dUnique, hidden, pack.unique, tokens);
}

/// tamoe_rt_dedup_expand_grad: every expanded row's gradient back to the
/// unique row it was made of; `uniqueRows` rows (received ones first, then
/// zeros).
template <typename T>
std::vector<T> dedupExpandGrad(const std::vector<T> &dExpanded, int64_t hidden,
                               const std::vector<int32_t> &routes, int64_t k,
                               const std::vector<int32_t> &recvCounts,
                               int64_t ranksPerNode, int64_t expertsPerRank,
                               int64_t uniqueRows) {
  int64_t received = std::accumulate(recvCounts.begin(), recvCounts.end(),
                                     int64_t(0));
  Expand expand = dedupExpand(indexRows(received), routes, sizeof(int64_t), k,
                              recvCounts, ranksPerNode, expertsPerRank);
  return copiedBack(dExpanded, hidden, expand.expanded, uniqueRows);
}

//===----------------------------------------------------------------------===//
// Optimizer steps, as PyTorch writes them, in double
//===----------------------------------------------------------------------===//

/// One step of torch.optim.SGD (no dampening, no Nesterov). `buffer` is
/// PyTorch's momentum buffer: empty before the first step, which sets it to
/// the gradient.
inline void sgd(std::vector<double> &params, const std::vector<double> &grads,
                std::vector<double> &buffer, double lr, double momentum,
                double weightDecay) {
  bool first = buffer.empty();
  buffer.resize(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    double d = grads[i] + weightDecay * params[i];
    if (momentum != 0) {
      buffer[i] = first ? d : momentum * buffer[i] + d;
      d = buffer[i];
    }
    params[i] -= lr * d;
  }
}

/// Step `step` (from 1) of torch.optim.AdamW.
inline void adamW(std::vector<double> &params, const std::vector<double> &grads,
                  std::vector<double> &m, std::vector<double> &v, int64_t step,
                  double lr, double beta1, double beta2, double eps,
                  double weightDecay) {
  double correction1 = 1 - std::pow(beta1, double(step));
  double correction2 = 1 - std::pow(beta2, double(step));
  for (size_t i = 0; i < params.size(); ++i) {
    params[i] *= 1 - lr * weightDecay;
    m[i] = beta1 * m[i] + (1 - beta1) * grads[i];
    v[i] = beta2 * v[i] + (1 - beta2) * grads[i] * grads[i];
    double denominator = std::sqrt(v[i]) / std::sqrt(correction2) + eps;
    params[i] -= lr / correction1 * m[i] / denominator;
  }
}

} // namespace reference

#endif // TAMOE_RT_TEST_REFERENCE_H
