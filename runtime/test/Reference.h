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

struct Gate {
  std::vector<int32_t> ids;
  std::vector<float> weights, probs;
};

/// tamoe.gate: softmax (maximum subtracted) or sigmoid; top-k by
/// descending score, lower id first; optional group limit.
inline Gate gate(const std::vector<float> &logits, int64_t tokens,
                 int64_t experts, int64_t k, bool sigmoid, bool renormalize,
                 int64_t groups = 0, int64_t kept = 0) {
  Gate out;
  out.probs.resize(tokens * experts);
  for (int64_t t = 0; t < tokens; ++t) {
    const float *x = &logits[t * experts];
    float *p = &out.probs[t * experts];
    if (sigmoid) {
      for (int64_t e = 0; e < experts; ++e)
        p[e] = 1.0f / (1.0f + std::exp(-x[e]));
    } else {
      float max = *std::max_element(x, x + experts);
      float sum = 0;
      for (int64_t e = 0; e < experts; ++e)
        sum += (p[e] = std::exp(x[e] - max));
      for (int64_t e = 0; e < experts; ++e)
        p[e] /= sum;
    }
    std::vector<int64_t> candidates(experts);
    std::iota(candidates.begin(), candidates.end(), 0);
    if (groups > 0) {
      int64_t size = experts / groups;
      std::vector<std::pair<float, int64_t>> scored; // (-score, group)
      for (int64_t g = 0; g < groups; ++g) {
        std::vector<float> members(p + g * size, p + (g + 1) * size);
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
                       return p[a] > p[b] || (p[a] == p[b] && a < b);
                     });
    float sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      out.ids.push_back(int32_t(candidates[j]));
      out.weights.push_back(p[candidates[j]]);
      sum += p[candidates[j]];
    }
    if (renormalize)
      for (int64_t j = 0; j < k; ++j)
        out.weights[t * k + j] /= sum;
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
          return weights[a] > weights[b];
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

/// tamoe.combine.
inline std::vector<float> combine(const std::vector<float> &outputs,
                                  int64_t hidden,
                                  const std::vector<int32_t> &positions,
                                  const std::vector<float> &weights,
                                  int64_t k) {
  int64_t tokens = int64_t(positions.size()) / k;
  std::vector<float> combined(tokens * hidden, 0.0f);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < k; ++j)
      if (positions[t * k + j] >= 0)
        for (int64_t h = 0; h < hidden; ++h)
          combined[t * hidden + h] +=
              weights[t * k + j] * outputs[positions[t * k + j] * hidden + h];
  return combined;
}

/// tamoe.grouped_matmul: chunk c of the rows (counts in order) times
/// weights[c % experts] [hidden, out].
inline std::vector<float>
groupedMatmul(const std::vector<float> &rows, int64_t hidden,
              const std::vector<int32_t> &counts, int64_t experts,
              const std::vector<float> &weights, int64_t out) {
  int64_t capacity = int64_t(rows.size()) / hidden;
  std::vector<float> result(capacity * out, 0.0f);
  int64_t row = 0;
  for (size_t c = 0; c < counts.size(); ++c)
    for (int32_t i = 0; i < counts[c]; ++i, ++row)
      for (int64_t f = 0; f < out; ++f) {
        float sum = 0;
        for (int64_t h = 0; h < hidden; ++h)
          sum += rows[row * hidden + h] *
                 weights[((c % experts) * hidden + h) * out + f];
        result[row * out + f] = sum;
      }
  return result;
}

/// tamoe.aux_loss, in double: E sum_e w_e f_e P_e with f_e over all k S
/// assignments (negative ids not counted) and P_e the mean probability.
inline double auxLoss(const std::vector<float> &probs,
                      const std::vector<int32_t> &ids, int64_t experts,
                      int64_t k, const std::vector<float> &weights = {}) {
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

} // namespace reference

#endif // TAMOE_RT_TEST_REFERENCE_H
