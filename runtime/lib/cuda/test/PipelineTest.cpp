//===- PipelineTest.cpp - The cuda backend's index pipelines on the host --===//
//
// Runs runDispatch, runRegroup, runDedupPack and runDedupExpand, and the
// gradients' runCombineGrad, runDedupPackGrad and runDedupExpandGrad (the
// code the cuda backend runs with kernels and CUB) on a host executor, and
// compares them with direct implementations of the semantics in tamoe_rt.h
// on random inputs, including ties, duplicates, drops, empty sizes and
// invalid data. The gradients' gathers add in the order tamoe_rt.h gives,
// so their floats must equal the direct loops' exactly.
// The host executor visits elements in a shuffled order, so a step that
// depended on the order of a parallel loop would show.
//
// Needs no GPU and no CUDA: build with any C++17 compiler,
//   c++ -std=c++17 -O2 -I runtime/include -I runtime/lib/cuda
//       runtime/lib/cuda/test/PipelineTest.cpp -o PipelineTest
// and run without arguments (exit status 0 on success).
//
//===----------------------------------------------------------------------===//

#include "Pipelines.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

using namespace tamoe_rt::cuda;

namespace {

std::mt19937_64 rng(12345);

int64_t uniform(int64_t lo, int64_t hi) { // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

/// Runs the pipelines sequentially, in a shuffled element order.
class HostExec {
public:
  HostExec() { std::memset(&status_, 0, sizeof status_); }
  bool ok() const { return true; }
  DeviceStatus *status() { return &status_; }

  template <typename T> T *scratch(int64_t count) {
    if (count < 1)
      count = 1;
    size_t bytes = static_cast<size_t>(count) * sizeof(T);
    blocks_.emplace_back(new unsigned char[bytes]);
    // Garbage, so that reading what no step wrote shows up.
    std::memset(blocks_.back().get(), 0xA5, bytes);
    return reinterpret_cast<T *>(blocks_.back().get());
  }
  void zero(void *pointer, int64_t bytes) {
    std::memset(pointer, 0, static_cast<size_t>(bytes));
  }
  template <typename F> void forEach(int64_t n, const F &f) {
    std::vector<int64_t> order(static_cast<size_t>(n > 0 ? n : 0));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t i : order)
      f(i);
  }
  void sortPairs(const uint32_t *keysIn, uint32_t *keysOut,
                 const int32_t *valuesIn, int32_t *valuesOut, int64_t n,
                 int bits) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    for (int64_t i = 0; i < n; ++i)
      if (bits < 32 && keysIn[i] >> bits)
        fail("sort key " + std::to_string(keysIn[i]) + " needs more than " +
             std::to_string(bits) + " bits");
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return keysIn[a] < keysIn[b];
    });
    for (int64_t i = 0; i < n; ++i) {
      keysOut[i] = keysIn[order[i]];
      valuesOut[i] = valuesIn[order[i]];
    }
  }
  /// As CUB's radix sort orders floats: by their bits, made unsigned
  /// (negative ones flipped), so -0 < +0 and +NaN above +inf.
  void sortPairsDescending(const float *keysIn, float *keysOut,
                           const int32_t *valuesIn, int32_t *valuesOut,
                           int64_t n) {
    auto radixKey = [](float key) {
      uint32_t bits;
      std::memcpy(&bits, &key, sizeof bits);
      return bits ^ (bits >> 31 ? 0xffffffffu : 0x80000000u);
    };
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return radixKey(keysIn[a]) > radixKey(keysIn[b]);
    });
    for (int64_t i = 0; i < n; ++i) {
      keysOut[i] = keysIn[order[i]];
      valuesOut[i] = valuesIn[order[i]];
    }
  }
  template <typename T> void exclusiveSum(const T *in, T *out, int64_t n) {
    T sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      T value = in[i];
      out[i] = sum;
      sum += value;
    }
  }
  void copyRows(void *dst, const void *src, int64_t rowBytes,
                const int64_t *srcRows, const int64_t *numRows, int64_t bound) {
    if (hasFailed(&status_) || bound <= 0 || rowBytes <= 0)
      return;
    int64_t rows = std::min(*numRows, bound);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<char *>(dst) + r * rowBytes,
                  static_cast<const char *>(src) +
                      (srcRows ? srcRows[r] : r) * rowBytes,
                  static_cast<size_t>(rowBytes));
  }

  void scatterRows(void *dst, const void *src, int64_t rowBytes,
                   const int64_t *dstRows, const int64_t *numRows,
                   int64_t bound) {
    if (hasFailed(&status_) || bound <= 0 || rowBytes <= 0)
      return;
    int64_t rows = std::min(*numRows, bound);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<char *>(dst) + dstRows[r] * rowBytes,
                  static_cast<const char *>(src) + r * rowBytes,
                  static_cast<size_t>(rowBytes));
  }

  static void fail(const std::string &message);

private:
  DeviceStatus status_;
  std::vector<std::unique_ptr<unsigned char[]>> blocks_;
};

int failures = 0;
int checks = 0;
std::string currentCase;

void HostExec::fail(const std::string &message) {
  ++failures;
  std::printf("FAIL [%s]: %s\n", currentCase.c_str(), message.c_str());
}

void expect(bool condition, const std::string &what) {
  ++checks;
  if (!condition)
    HostExec::fail(what);
}

std::vector<unsigned char> randomRows(int64_t rows, int64_t rowBytes) {
  std::vector<unsigned char> data(static_cast<size_t>(rows * rowBytes));
  for (auto &byte : data)
    byte = static_cast<unsigned char>(uniform(0, 255));
  return data;
}

std::vector<float> randomFloats(int64_t n) {
  std::vector<float> values(static_cast<size_t>(n > 0 ? n : 0));
  for (auto &value : values)
    value = static_cast<float>(uniform(-1000, 1000)) / 337.0f;
  return values;
}

/// `values` still all NaN (nothing written), compared bit for bit.
bool untouched(const std::vector<float> &values) {
  return std::all_of(values.begin(), values.end(),
                     [](float v) { return v != v; });
}

//===----------------------------------------------------------------------===//
// dispatch
//===----------------------------------------------------------------------===//

struct DispatchResult {
  int32_t code = 0;
  std::vector<unsigned char> dispatched;
  std::vector<int32_t> counts, positions;
  int64_t dropped = -7;
};

DispatchResult referenceDispatch(const std::vector<unsigned char> &tokens,
                                 int64_t numTokens, int64_t rowBytes,
                                 const std::vector<int32_t> &ids, int64_t k,
                                 int64_t experts,
                                 const std::vector<float> &weights,
                                 int64_t capacity, tamoe_rt_drop_t drop,
                                 int64_t dispatchedCapacity) {
  DispatchResult r;
  int64_t n = numTokens * k;
  for (int64_t a = 0; a < n; ++a)
    if (ids[a] < 0 || ids[a] >= experts) {
      r.code = TAMOE_RT_ERROR_INVALID_ARGUMENT;
      return r;
    }
  std::vector<std::vector<int64_t>> byExpert(experts);
  for (int64_t a = 0; a < n; ++a)
    byExpert[ids[a]].push_back(a); // token order, then slot
  std::vector<char> kept(n, 1);
  if (capacity >= 0)
    for (auto &list : byExpert) {
      std::vector<int64_t> ranked = list;
      if (drop == TAMOE_RT_DROP_PROBABILITY) {
        // As tamoe_rt.h ranks them: NaN as -inf.
        auto rank = [&](int64_t a) {
          return std::isnan(weights[a]) ? -INFINITY : weights[a];
        };
        std::stable_sort(
            ranked.begin(), ranked.end(),
            [&](int64_t a, int64_t b) { return rank(a) > rank(b); });
      }
      for (size_t i = static_cast<size_t>(capacity); i < ranked.size(); ++i)
        kept[ranked[i]] = 0;
    }
  r.positions.assign(n, -1);
  r.counts.assign(experts, 0);
  int64_t row = 0;
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t a : byExpert[e])
      if (kept[a]) {
        r.positions[a] = static_cast<int32_t>(row++);
        ++r.counts[e];
      }
  if (row > dispatchedCapacity) {
    r.code = TAMOE_RT_ERROR_CAPACITY_EXCEEDED;
    return r;
  }
  r.dropped = n - row;
  r.dispatched.resize(static_cast<size_t>(row * rowBytes));
  for (int64_t a = 0; a < n && rowBytes > 0; ++a)
    if (r.positions[a] >= 0)
      std::memcpy(&r.dispatched[r.positions[a] * rowBytes],
                  &tokens[(a / k) * rowBytes], static_cast<size_t>(rowBytes));
  return r;
}

void testDispatch(int64_t numTokens, int64_t rowBytes, int64_t k,
                  int64_t experts, int64_t capacity, tamoe_rt_drop_t drop,
                  int64_t dispatchedCapacity, int weightLevels,
                  bool injectBadId) {
  currentCase = "dispatch T=" + std::to_string(numTokens) +
                " rb=" + std::to_string(rowBytes) + " k=" + std::to_string(k) +
                " E=" + std::to_string(experts) +
                " C=" + std::to_string(capacity) +
                " drop=" + std::to_string(drop) +
                " cap=" + std::to_string(dispatchedCapacity) +
                (injectBadId ? " bad-id" : "");
  int64_t n = numTokens * k;
  auto tokens = randomRows(numTokens, rowBytes);
  std::vector<int32_t> ids(n);
  std::vector<float> weights(n);
  for (int64_t a = 0; a < n; ++a) {
    ids[a] = static_cast<int32_t>(uniform(0, experts - 1));
    // Few distinct weights: many ties, which must go to the earlier token.
    weights[a] =
        weightLevels > 0
            ? static_cast<float>(uniform(0, weightLevels - 1)) / weightLevels
            : static_cast<float>(uniform(0, 1 << 20)) / (1 << 20);
    if (weights[a] == 0.0f && uniform(0, 1))
      weights[a] = -0.0f; // equal to +0 for the ranking
    // NaN (either sign; overflowed logits) ranks as -inf.
    if (uniform(0, 15) == 0)
      weights[a] = uniform(0, 1) ? NAN : -NAN;
  }
  if (injectBadId && n > 0)
    ids[uniform(0, n - 1)] = uniform(0, 1) ? -1 : static_cast<int32_t>(experts);

  DispatchResult want =
      referenceDispatch(tokens, numTokens, rowBytes, ids, k, experts, weights,
                        capacity, drop, dispatchedCapacity);

  const unsigned char kUntouched = 0xEE;
  std::vector<unsigned char> dispatched(
      static_cast<size_t>(std::max<int64_t>(dispatchedCapacity, 0) * rowBytes),
      kUntouched);
  std::vector<int32_t> counts(experts, -99), positions(n, -99);
  int64_t dropped = -7;
  HostExec x;
  runDispatch(x, DispatchParams{tokens.data(), numTokens, rowBytes, ids.data(),
                                k, experts, weights.data(), capacity, drop,
                                dispatched.data(), dispatchedCapacity,
                                counts.data(), positions.data(), &dropped});
  int32_t code = x.status()->code;
  expect(code == want.code, "status " + std::to_string(code) + ", want " +
                                std::to_string(want.code));
  if (code != 0) {
    // Nothing written on failure.
    expect(std::all_of(dispatched.begin(), dispatched.end(),
                       [&](unsigned char c) { return c == kUntouched; }),
           "dispatched written on failure");
    expect(std::all_of(counts.begin(), counts.end(),
                       [](int32_t c) { return c == -99; }),
           "counts written on failure");
    expect(std::all_of(positions.begin(), positions.end(),
                       [](int32_t c) { return c == -99; }),
           "positions written on failure");
    expect(dropped == -7, "num_dropped written on failure");
    return;
  }
  if (want.code != 0)
    return;
  expect(counts == want.counts, "expert counts differ");
  expect(positions == want.positions, "positions differ");
  expect(dropped == want.dropped, "num_dropped " + std::to_string(dropped) +
                                      ", want " + std::to_string(want.dropped));
  expect(std::equal(want.dispatched.begin(), want.dispatched.end(),
                    dispatched.begin()),
         "dispatched rows differ");
  expect(std::all_of(dispatched.begin() + want.dispatched.size(),
                     dispatched.end(),
                     [&](unsigned char c) { return c == kUntouched; }),
         "padding rows written");
}

//===----------------------------------------------------------------------===//
// regroup
//===----------------------------------------------------------------------===//

void testRegroup(int64_t a, int64_t b, int64_t inner, int64_t maxCount,
                 int64_t rowBytes, int64_t slack, bool negative) {
  currentCase = "regroup " + std::to_string(a) + "x" + std::to_string(b) + "x" +
                std::to_string(inner) + " rb=" + std::to_string(rowBytes) +
                " slack=" + std::to_string(slack) +
                (negative ? " negative" : "");
  int64_t n = a * b * inner;
  std::vector<int32_t> counts(n);
  int64_t total = 0;
  for (auto &c : counts) {
    c = static_cast<int32_t>(uniform(0, 3) == 0 ? 0 : uniform(0, maxCount));
    total += c;
  }
  if (negative && n > 0)
    counts[uniform(0, n - 1)] = -2;
  int64_t capacity = std::max<int64_t>(total + slack, 0);
  auto rows = randomRows(capacity, rowBytes);

  // Reference.
  int32_t wantCode = 0;
  std::vector<unsigned char> want;
  std::vector<int32_t> wantCounts(n);
  if (negative && n > 0)
    wantCode = TAMOE_RT_ERROR_INVALID_ARGUMENT;
  else if (total > capacity)
    wantCode = TAMOE_RT_ERROR_INVALID_ARGUMENT;
  else {
    std::vector<int64_t> offsets(n + 1, 0);
    for (int64_t i = 0; i < n; ++i)
      offsets[i + 1] = offsets[i] + counts[i];
    for (int64_t y = 0; y < b; ++y)
      for (int64_t x = 0; x < a; ++x)
        for (int64_t s = 0; s < inner; ++s) {
          int64_t i = (x * b + y) * inner + s;
          wantCounts[(y * a + x) * inner + s] = counts[i];
          want.insert(want.end(), rows.begin() + offsets[i] * rowBytes,
                      rows.begin() + offsets[i + 1] * rowBytes);
        }
  }

  const unsigned char kUntouched = 0xEE;
  std::vector<unsigned char> regrouped(rows.size(), kUntouched);
  std::vector<int32_t> regroupedCounts(n, -99);
  HostExec x;
  runRegroup(x,
             RegroupParams{rows.data(), capacity, rowBytes, counts.data(), a, b,
                           inner, regrouped.data(), regroupedCounts.data()});
  int32_t code = x.status()->code;
  expect(code == wantCode, "status " + std::to_string(code) + ", want " +
                               std::to_string(wantCode));
  if (code != 0 || wantCode != 0) {
    expect(std::all_of(regrouped.begin(), regrouped.end(),
                       [&](unsigned char c) { return c == kUntouched; }),
           "rows written on failure");
    return;
  }
  expect(regroupedCounts == wantCounts, "regrouped counts differ");
  expect(std::equal(want.begin(), want.end(), regrouped.begin()),
         "regrouped rows differ");
}

//===----------------------------------------------------------------------===//
// dedup_pack and dedup_expand
//===----------------------------------------------------------------------===//

struct PackResult {
  int32_t code = 0;
  std::vector<unsigned char> unique;
  std::vector<int32_t> routes, nodeCounts;
};

PackResult referencePack(const std::vector<unsigned char> &tokens,
                         int64_t numTokens, int64_t rowBytes,
                         const std::vector<int32_t> &ids,
                         const std::vector<int32_t> &positions, int64_t k,
                         int64_t expertsPerNode, int64_t nodes,
                         int64_t uniqueCapacity) {
  PackResult r;
  for (int64_t a = 0; a < numTokens * k; ++a)
    if (positions[a] >= 0 && (ids[a] < 0 || ids[a] >= expertsPerNode * nodes)) {
      r.code = TAMOE_RT_ERROR_INVALID_ARGUMENT;
      return r;
    }
  r.nodeCounts.assign(nodes, 0);
  for (int64_t node = 0; node < nodes; ++node)
    for (int64_t t = 0; t < numTokens; ++t) {
      std::vector<int32_t> route;
      for (int64_t j = 0; j < k; ++j) {
        int64_t a = t * k + j;
        if (positions[a] >= 0 && ids[a] / expertsPerNode == node)
          route.push_back(ids[a]);
      }
      if (route.empty())
        continue;
      route.resize(k, -1);
      r.routes.insert(r.routes.end(), route.begin(), route.end());
      r.unique.insert(r.unique.end(), tokens.begin() + t * rowBytes,
                      tokens.begin() + (t + 1) * rowBytes);
      ++r.nodeCounts[node];
    }
  int64_t rows =
      std::accumulate(r.nodeCounts.begin(), r.nodeCounts.end(), int64_t(0));
  if (rows > uniqueCapacity)
    r.code = TAMOE_RT_ERROR_CAPACITY_EXCEEDED;
  return r;
}

void testDedupPack(int64_t numTokens, int64_t rowBytes, int64_t k,
                   int64_t expertsPerNode, int64_t nodes, int64_t slack,
                   bool injectBad) {
  currentCase =
      "dedup_pack T=" + std::to_string(numTokens) + " k=" + std::to_string(k) +
      " epn=" + std::to_string(expertsPerNode) +
      " nodes=" + std::to_string(nodes) + " slack=" + std::to_string(slack) +
      (injectBad ? " bad-id" : "");
  int64_t n = numTokens * k;
  auto tokens = randomRows(numTokens, rowBytes);
  std::vector<int32_t> ids(n), positions(n);
  for (int64_t a = 0; a < n; ++a) {
    ids[a] = static_cast<int32_t>(uniform(0, expertsPerNode * nodes - 1));
    positions[a] = uniform(0, 4) == 0 ? -1 : static_cast<int32_t>(a);
    if (positions[a] < 0 && uniform(0, 1))
      ids[a] = -1; // ids of dropped assignments do not matter
  }
  if (injectBad && n > 0) {
    int64_t a = uniform(0, n - 1);
    positions[a] = 0;
    ids[a] = static_cast<int32_t>(expertsPerNode * nodes);
  }
  // Capacity: the rows needed plus slack (negative slack: too small).
  PackResult sizing = referencePack(tokens, numTokens, rowBytes, ids, positions,
                                    k, expertsPerNode, nodes, INT64_MAX);
  int64_t needed =
      static_cast<int64_t>(sizing.routes.size()) / std::max<int64_t>(k, 1);
  int64_t uniqueCapacity = std::max<int64_t>(needed + slack, 0);
  PackResult want = referencePack(tokens, numTokens, rowBytes, ids, positions,
                                  k, expertsPerNode, nodes, uniqueCapacity);

  const unsigned char kUntouched = 0xEE;
  std::vector<unsigned char> unique(
      static_cast<size_t>(uniqueCapacity * rowBytes), kUntouched);
  std::vector<int32_t> routes(uniqueCapacity * k, -99), nodeCounts(nodes, -99);
  HostExec x;
  runDedupPack(x, DedupPackParams{
                      tokens.data(), numTokens, rowBytes, ids.data(),
                      positions.data(), k, expertsPerNode, nodes, unique.data(),
                      routes.data(), uniqueCapacity, nodeCounts.data()});
  int32_t code = x.status()->code;
  expect(code == want.code, "status " + std::to_string(code) + ", want " +
                                std::to_string(want.code));
  if (code != 0 || want.code != 0) {
    expect(std::all_of(unique.begin(), unique.end(),
                       [&](unsigned char c) { return c == kUntouched; }),
           "rows written on failure");
    expect(std::all_of(routes.begin(), routes.end(),
                       [](int32_t c) { return c == -99; }),
           "routes written on failure");
    return;
  }
  expect(nodeCounts == want.nodeCounts, "node counts differ");
  expect(std::equal(want.routes.begin(), want.routes.end(), routes.begin()),
         "routes differ");
  expect(std::equal(want.unique.begin(), want.unique.end(), unique.begin()),
         "unique rows differ");
}

struct ExpandResult {
  int32_t code = 0;
  std::vector<unsigned char> expanded;
  std::vector<int32_t> counts;
};

ExpandResult referenceExpand(const std::vector<unsigned char> &unique,
                             const std::vector<int32_t> &routes,
                             int64_t uniqueCapacity, int64_t rowBytes,
                             int64_t k, const std::vector<int32_t> &recvCounts,
                             int64_t nodes, int64_t ranksPerNode,
                             int64_t expertsPerRank, int64_t expandedCapacity) {
  ExpandResult r;
  int64_t rows = 0;
  for (int32_t c : recvCounts) {
    if (c < 0) {
      r.code = TAMOE_RT_ERROR_INVALID_ARGUMENT;
      return r;
    }
    rows += c;
  }
  if (rows > uniqueCapacity) {
    r.code = TAMOE_RT_ERROR_INVALID_ARGUMENT;
    return r;
  }
  struct Entry {
    int64_t local, source, expert, row, slot;
  };
  std::vector<Entry> entries;
  int64_t row = 0;
  for (int64_t s = 0; s < nodes; ++s)
    for (int32_t i = 0; i < recvCounts[s]; ++i, ++row)
      for (int64_t j = 0; j < k; ++j) {
        int32_t e = routes[row * k + j];
        if (e < -1) {
          r.code = TAMOE_RT_ERROR_INVALID_ARGUMENT;
          return r;
        }
        if (e < 0)
          continue;
        entries.push_back({(e / expertsPerRank) % ranksPerNode, s, e, row, j});
      }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry &a, const Entry &b) {
                     if (a.local != b.local)
                       return a.local < b.local;
                     if (a.source != b.source)
                       return a.source < b.source;
                     return a.expert < b.expert;
                   });
  if (static_cast<int64_t>(entries.size()) > expandedCapacity) {
    r.code = TAMOE_RT_ERROR_CAPACITY_EXCEEDED;
    return r;
  }
  r.counts.assign(ranksPerNode * nodes * expertsPerRank, 0);
  for (const Entry &entry : entries) {
    ++r.counts[(entry.local * nodes + entry.source) * expertsPerRank +
               entry.expert % expertsPerRank];
    r.expanded.insert(r.expanded.end(), unique.begin() + entry.row * rowBytes,
                      unique.begin() + (entry.row + 1) * rowBytes);
  }
  return r;
}

void testDedupExpand(int64_t nodes, int64_t ranksPerNode,
                     int64_t expertsPerRank, int64_t k, int64_t maxRows,
                     int64_t rowBytes, int64_t slack, int injectError) {
  currentCase = "dedup_expand nodes=" + std::to_string(nodes) +
                " rpn=" + std::to_string(ranksPerNode) +
                " epr=" + std::to_string(expertsPerRank) +
                " k=" + std::to_string(k) + " slack=" + std::to_string(slack) +
                " error=" + std::to_string(injectError);
  std::vector<int32_t> recvCounts(nodes);
  int64_t rows = 0;
  for (auto &c : recvCounts) {
    c = static_cast<int32_t>(uniform(0, maxRows));
    rows += c;
  }
  int64_t uniqueCapacity = rows + uniform(0, 3);
  // This relay's node: routes name experts of it (as dedup_pack makes them),
  // distinct within a row, then -1 padding.
  int64_t relayNode = nodes > 0 ? uniform(0, nodes - 1) : 0;
  int64_t perNode = ranksPerNode * expertsPerRank;
  std::vector<int32_t> routes(uniqueCapacity * k, -1);
  for (int64_t r = 0; r < uniqueCapacity; ++r) {
    int64_t listed = uniform(1, std::min<int64_t>(k, perNode));
    std::vector<int32_t> pool(perNode);
    std::iota(pool.begin(), pool.end(),
              static_cast<int32_t>(relayNode * perNode));
    std::shuffle(pool.begin(), pool.end(), rng);
    for (int64_t j = 0; j < listed; ++j)
      routes[r * k + j] = pool[j];
  }
  if (injectError == 1 && nodes > 0)
    recvCounts[uniform(0, nodes - 1)] = -1;
  if (injectError == 2)
    uniqueCapacity = std::max<int64_t>(rows - 1, 0),
    routes.resize(uniqueCapacity * k);
  if (injectError == 3 && rows > 0)
    routes[uniform(0, rows - 1) * k] = -2;

  auto unique = randomRows(uniqueCapacity, rowBytes);

  ExpandResult sizing =
      referenceExpand(unique, routes, uniqueCapacity, rowBytes, k, recvCounts,
                      nodes, ranksPerNode, expertsPerRank, INT64_MAX);
  int64_t needed =
      rowBytes ? static_cast<int64_t>(sizing.expanded.size()) / rowBytes : 0;
  int64_t expandedCapacity = std::max<int64_t>(needed + slack, 0);
  ExpandResult want =
      referenceExpand(unique, routes, uniqueCapacity, rowBytes, k, recvCounts,
                      nodes, ranksPerNode, expertsPerRank, expandedCapacity);

  const unsigned char kUntouched = 0xEE;
  std::vector<unsigned char> expanded(
      static_cast<size_t>(expandedCapacity * rowBytes), kUntouched);
  std::vector<int32_t> counts(ranksPerNode * nodes * expertsPerRank, -99);
  HostExec x;
  runDedupExpand(x, DedupExpandParams{unique.data(), routes.data(),
                                      uniqueCapacity, rowBytes, k,
                                      recvCounts.data(), nodes, ranksPerNode,
                                      expertsPerRank, expanded.data(),
                                      expandedCapacity, counts.data()});
  int32_t code = x.status()->code;
  expect(code == want.code, "status " + std::to_string(code) + ", want " +
                                std::to_string(want.code));
  if (code != 0 || want.code != 0) {
    expect(std::all_of(expanded.begin(), expanded.end(),
                       [&](unsigned char c) { return c == kUntouched; }),
           "rows written on failure");
    expect(std::all_of(counts.begin(), counts.end(),
                       [](int32_t c) { return c == -99; }),
           "counts written on failure");
    return;
  }
  expect(counts == want.counts, "expanded counts differ");
  expect(
      std::equal(want.expanded.begin(), want.expanded.end(), expanded.begin()),
      "expanded rows differ");
}

/// dedup_pack, then (on one relay) dedup_expand of what a node receives,
/// equals dispatch's rows for that node's experts regrouped by rank: the
/// property tamoe_rt_dispatch_dedup relies on.
void testPackExpandRoundTrip(int64_t numTokens, int64_t k, int64_t nodes,
                             int64_t ranksPerNode, int64_t expertsPerRank) {
  currentCase = "pack+expand round trip T=" + std::to_string(numTokens) +
                " k=" + std::to_string(k) + " nodes=" + std::to_string(nodes);
  const int64_t rowBytes = 12;
  int64_t perNode = ranksPerNode * expertsPerRank;
  int64_t experts = nodes * perNode;
  k = std::min(k, experts); // distinct experts per token
  int64_t n = numTokens * k;
  auto tokens = randomRows(numTokens, rowBytes);
  std::vector<int32_t> ids(n);
  for (int64_t t = 0; t < numTokens; ++t) {
    std::vector<int32_t> pool(experts);
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    for (int64_t j = 0; j < k; ++j)
      ids[t * k + j] = pool[j];
  }
  std::vector<float> weights(n, 1.0f);
  // Dispatch with a capacity, so some assignments are dropped.
  int64_t capacity = std::max<int64_t>(1, n / experts);
  std::vector<unsigned char> dispatched(n * rowBytes);
  std::vector<int32_t> expertCounts(experts), positions(n);
  int64_t dropped = 0;
  {
    HostExec x;
    runDispatch(x, DispatchParams{tokens.data(), numTokens, rowBytes,
                                  ids.data(), k, experts, weights.data(),
                                  capacity, TAMOE_RT_DROP_POSITION,
                                  dispatched.data(), n, expertCounts.data(),
                                  positions.data(), &dropped});
    expect(x.status()->code == 0, "dispatch failed");
  }
  std::vector<unsigned char> unique(nodes * numTokens * rowBytes);
  std::vector<int32_t> routes(nodes * numTokens * k), nodeCounts(nodes);
  {
    HostExec x;
    runDedupPack(x, DedupPackParams{tokens.data(), numTokens, rowBytes,
                                    ids.data(), positions.data(), k, perNode,
                                    nodes, unique.data(), routes.data(),
                                    nodes * numTokens, nodeCounts.data()});
    expect(x.status()->code == 0, "dedup_pack failed");
  }
  // Each node's rows, as the relay of that node receives them from this
  // single sender (recv_counts: this node is source 0 of 1).
  int64_t rowAt = 0, dispatchedAt = 0;
  for (int64_t node = 0; node < nodes; ++node) {
    std::vector<unsigned char> part(unique.begin() + rowAt * rowBytes,
                                    unique.begin() +
                                        (rowAt + nodeCounts[node]) * rowBytes);
    std::vector<int32_t> partRoutes(routes.begin() + rowAt * k,
                                    routes.begin() +
                                        (rowAt + nodeCounts[node]) * k);
    // The relay sees global expert ids of its node; with one source node the
    // key space is [ranks_per_node, 1, experts_per_rank].
    std::vector<int32_t> recv{nodeCounts[node]};
    for (auto &e : partRoutes)
      if (e >= 0)
        e = static_cast<int32_t>(e - node * perNode);
    std::vector<unsigned char> expanded(n * rowBytes);
    std::vector<int32_t> counts(perNode);
    HostExec x;
    runDedupExpand(x, DedupExpandParams{
                          part.data(), partRoutes.data(), nodeCounts[node],
                          rowBytes, k, recv.data(), 1, ranksPerNode,
                          expertsPerRank, expanded.data(), n, counts.data()});
    expect(x.status()->code == 0, "dedup_expand failed");
    int64_t total = 0;
    for (int64_t e = 0; e < perNode; ++e) {
      expect(counts[e] == expertCounts[node * perNode + e],
             "expanded count of expert " + std::to_string(node * perNode + e));
      total += counts[e];
    }
    expect(std::equal(expanded.begin(), expanded.begin() + total * rowBytes,
                      dispatched.begin() + dispatchedAt * rowBytes),
           "expanded rows of node " + std::to_string(node) +
               " differ from dispatch");
    dispatchedAt += total;
    rowAt += nodeCounts[node];
  }
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

void testCombineGrad(int64_t tokens, int64_t k, int64_t rows, int64_t hidden,
                     bool weighted, bool injectBad) {
  currentCase =
      "combine_grad T=" + std::to_string(tokens) + " k=" + std::to_string(k) +
      " rows=" + std::to_string(rows) + " H=" + std::to_string(hidden) +
      (weighted ? "" : " unweighted") + (injectBad ? " bad-position" : "");
  int64_t n = tokens * k;
  std::vector<int32_t> positions(n);
  for (auto &p : positions) // repeats: rows named by several assignments
    p = uniform(0, 3) == 0 || rows == 0
            ? -1
            : static_cast<int32_t>(uniform(0, rows - 1));
  if (injectBad && n > 0)
    positions[uniform(0, n - 1)] = static_cast<int32_t>(rows);
  std::vector<float> weights = randomFloats(weighted ? n : 0);
  std::vector<float> dCombined = randomFloats(tokens * hidden);
  std::vector<float> want(rows * hidden, 0.0f);
  bool bad = false;
  for (int64_t a = 0; a < n; ++a) {
    bad = bad || positions[a] >= rows;
    if (positions[a] < 0 || positions[a] >= rows)
      continue;
    for (int64_t h = 0; h < hidden; ++h)
      want[positions[a] * hidden + h] +=
          (weighted ? weights[a] : 1.0f) * dCombined[a / k * hidden + h];
  }
  std::vector<float> got(rows * hidden, NAN);
  HostExec x;
  runCombineGrad(x, CombineGradParams{rows, hidden, positions.data(),
                                      weighted ? weights.data() : nullptr,
                                      tokens, k, dCombined.data(), got.data()});
  int32_t code = x.status()->code;
  expect(code == (bad ? TAMOE_RT_ERROR_INVALID_ARGUMENT : 0),
         "status " + std::to_string(code));
  if (bad) {
    expect(x.status()->kind == kPositionOutOfRange, "error kind");
    expect(untouched(got), "d_expert_outputs written on failure");
    return;
  }
  expect(got.empty() ||
             std::memcmp(got.data(), want.data(), want.size() * 4) == 0,
         "d_expert_outputs differ");
}

void testCountAssignments(int64_t tokens, int64_t k, int64_t experts,
                          bool withPositions) {
  currentCase = "aux counts T=" + std::to_string(tokens) +
                " k=" + std::to_string(k) + " E=" + std::to_string(experts);
  int64_t n = tokens * k;
  std::vector<int32_t> ids(n), positions(n);
  std::vector<int32_t> want(experts, 0), got(experts, 0);
  for (int64_t a = 0; a < n; ++a) {
    ids[a] = static_cast<int32_t>(uniform(-1, experts - 1));
    positions[a] = uniform(0, 3) == 0 ? -1 : 0;
    if (ids[a] >= 0 && (!withPositions || positions[a] >= 0))
      ++want[ids[a]];
  }
  HostExec x;
  x.forEach(n, CountAssignments{ids.data(),
                                withPositions ? positions.data() : nullptr,
                                experts, got.data(), x.status()});
  expect(x.status()->code == 0 && got == want, "counts differ");
  if (n == 0)
    return;
  ids[uniform(0, n - 1)] = static_cast<int32_t>(experts);
  HostExec bad;
  bad.forEach(n, CountAssignments{ids.data(), nullptr, experts, got.data(),
                                  bad.status()});
  expect(bad.status()->code == TAMOE_RT_ERROR_INVALID_ARGUMENT &&
             bad.status()->kind == kExpertOutOfRange,
         "an id past the experts is not an error");
}

void testDedupPackGrad(int64_t numTokens, int64_t k, int64_t expertsPerNode,
                       int64_t nodes, int64_t hidden, int64_t slack,
                       bool injectBad) {
  injectBad = injectBad && numTokens * k > 0; // no id to make bad otherwise
  currentCase =
      "dedup_pack_grad T=" + std::to_string(numTokens) +
      " k=" + std::to_string(k) + " epn=" + std::to_string(expertsPerNode) +
      " nodes=" + std::to_string(nodes) + " slack=" + std::to_string(slack) +
      (injectBad ? " bad-id" : "");
  int64_t n = numTokens * k, experts = expertsPerNode * nodes;
  std::vector<int32_t> ids(n), positions(n);
  for (int64_t a = 0; a < n; ++a) {
    ids[a] = static_cast<int32_t>(uniform(0, experts - 1));
    positions[a] = uniform(0, 4) == 0 ? -1 : static_cast<int32_t>(a);
  }
  if (injectBad && n > 0) {
    int64_t a = uniform(0, n - 1);
    positions[a] = 0;
    ids[a] = static_cast<int32_t>(experts);
  }
  // The pack's rows: (node, token) in order.
  std::vector<int64_t> rowOf(nodes * numTokens, -1);
  int64_t rows = 0;
  for (int64_t node = 0; node < nodes; ++node)
    for (int64_t t = 0; t < numTokens; ++t)
      for (int64_t j = 0; j < k; ++j)
        if (positions[t * k + j] >= 0 && !injectBad &&
            ids[t * k + j] / expertsPerNode == node &&
            rowOf[node * numTokens + t] < 0)
          rowOf[node * numTokens + t] = rows++;
  int64_t capacity = std::max<int64_t>(rows + slack, 0);
  std::vector<float> dUnique = randomFloats(capacity * hidden);
  std::vector<float> want(numTokens * hidden, 0.0f);
  for (int64_t t = 0; t < numTokens && rows <= capacity; ++t)
    for (int64_t node = 0; node < nodes; ++node)
      if (rowOf[node * numTokens + t] >= 0)
        for (int64_t h = 0; h < hidden; ++h)
          want[t * hidden + h] +=
              dUnique[rowOf[node * numTokens + t] * hidden + h];
  int32_t wantCode =
      injectBad || rows > capacity ? TAMOE_RT_ERROR_INVALID_ARGUMENT : 0;
  std::vector<float> got(numTokens * hidden, NAN);
  HostExec x;
  runDedupPackGrad(x,
                   DedupPackGradParams{dUnique.data(), capacity, hidden,
                                       ids.data(), positions.data(), numTokens,
                                       k, expertsPerNode, nodes, got.data()});
  int32_t code = x.status()->code;
  expect(code == wantCode, "status " + std::to_string(code) + ", want " +
                               std::to_string(wantCode));
  if (code != 0 || wantCode != 0) {
    expect(x.status()->kind ==
               (injectBad ? kExpertOutOfRange : kGradientRowsExceed),
           "error kind");
    expect(untouched(got), "d_tokens written on failure");
    return;
  }
  expect(got.empty() ||
             std::memcmp(got.data(), want.data(), want.size() * 4) == 0,
         "d_tokens differ");
}

void testDedupExpandGrad(int64_t nodes, int64_t ranksPerNode,
                         int64_t expertsPerRank, int64_t k, int64_t maxRows,
                         int64_t hidden, int64_t slack, int injectError) {
  currentCase = "dedup_expand_grad nodes=" + std::to_string(nodes) +
                " rpn=" + std::to_string(ranksPerNode) +
                " epr=" + std::to_string(expertsPerRank) +
                " k=" + std::to_string(k) + " slack=" + std::to_string(slack) +
                " error=" + std::to_string(injectError);
  std::vector<int32_t> recvCounts(nodes);
  int64_t received = 0;
  for (auto &c : recvCounts)
    received += c = static_cast<int32_t>(uniform(0, maxRows));
  int64_t uniqueCapacity = received + uniform(0, 3);
  int64_t perNode = ranksPerNode * expertsPerRank;
  std::vector<int32_t> routes(uniqueCapacity * k, -1);
  for (int64_t r = 0; r < uniqueCapacity; ++r) {
    std::vector<int32_t> pool(perNode);
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    int64_t listed = uniform(1, std::min<int64_t>(k, perNode));
    for (int64_t j = 0; j < listed; ++j)
      routes[r * k + j] = pool[j];
  }
  if (injectError == 1)
    recvCounts[uniform(0, nodes - 1)] = -1;
  if (injectError == 2 && received > 0)
    uniqueCapacity = received - 1;
  if (injectError == 3 && received > 0)
    routes[uniform(0, received - 1) * k] = -2;
  routes.resize(uniqueCapacity * k);

  // The expansion's rows: route entries by (destination, source, expert),
  // then arrival.
  struct Entry {
    int64_t local, source, expert, entry;
  };
  std::vector<Entry> entries;
  for (int64_t s = 0, row = 0; s < nodes && injectError == 0; ++s)
    for (int32_t i = 0; i < recvCounts[s]; ++i, ++row)
      for (int64_t j = 0; j < k; ++j)
        if (routes[row * k + j] >= 0)
          entries.push_back(
              {(routes[row * k + j] / expertsPerRank) % ranksPerNode, s,
               routes[row * k + j], row * k + j});
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry &a, const Entry &b) {
                     if (a.local != b.local)
                       return a.local < b.local;
                     if (a.source != b.source)
                       return a.source < b.source;
                     return a.expert < b.expert;
                   });
  int64_t expandedRows = static_cast<int64_t>(entries.size());
  int64_t expandedCapacity = std::max<int64_t>(expandedRows + slack, 0);
  std::vector<float> dExpanded = randomFloats(expandedCapacity * hidden);
  std::vector<int64_t> rowOf(uniqueCapacity * k, -1);
  for (int64_t p = 0; p < std::min(expandedRows, expandedCapacity); ++p)
    rowOf[entries[p].entry] = p;
  std::vector<float> want(uniqueCapacity * hidden, 0.0f);
  for (int64_t u = 0; u < uniqueCapacity; ++u)
    for (int64_t j = 0; j < k; ++j)
      if (rowOf[u * k + j] >= 0)
        for (int64_t h = 0; h < hidden; ++h)
          want[u * hidden + h] += dExpanded[rowOf[u * k + j] * hidden + h];
  bool errorInjected = injectError != 0 && !(injectError >= 2 && received == 0);
  int32_t wantCode = errorInjected || expandedRows > expandedCapacity
                         ? TAMOE_RT_ERROR_INVALID_ARGUMENT
                         : 0;

  std::vector<float> got(uniqueCapacity * hidden, NAN);
  HostExec x;
  runDedupExpandGrad(x, DedupExpandGradParams{
                            dExpanded.data(), expandedCapacity, hidden,
                            routes.data(), uniqueCapacity, k, recvCounts.data(),
                            nodes, ranksPerNode, expertsPerRank, got.data()});
  int32_t code = x.status()->code;
  expect(code == wantCode, "status " + std::to_string(code) + ", want " +
                               std::to_string(wantCode));
  if (code != 0 || wantCode != 0) {
    expect(untouched(got), "d_unique written on failure");
    return;
  }
  expect(got.empty() ||
             std::memcmp(got.data(), want.data(), want.size() * 4) == 0,
         "d_unique differs");
}

} // namespace

//===----------------------------------------------------------------------===//
// add_counts
//===----------------------------------------------------------------------===//

/// Sums of random counts, in place or not; `overflow` puts one sum past
/// int32, which must be refused with nothing written.
void testAddCounts(int64_t n, bool inPlace, bool overflow) {
  currentCase = "add_counts n=" + std::to_string(n) +
                (inPlace ? " in place" : "") + (overflow ? " overflow" : "");
  std::vector<int32_t> a(static_cast<size_t>(n)), b(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<int32_t>(uniform(-1000, 100000));
    b[i] = static_cast<int32_t>(uniform(-1000, 100000));
  }
  if (overflow) {
    if (n == 0)
      return;
    size_t at = static_cast<size_t>(uniform(0, n - 1));
    a[at] = INT32_MAX - 5;
    b[at] = 6;
  }
  std::vector<int32_t> want(a.size());
  for (size_t i = 0; i < a.size(); ++i)
    want[i] = a[i] + (overflow ? 0 : b[i]);
  std::vector<int32_t> out(a.size(), -99);
  int32_t *target = inPlace ? a.data() : out.data();
  std::vector<int32_t> before(target, target + n);
  HostExec x;
  runAddCounts(x, a.data(), b.data(), n, target);
  int32_t code = x.status()->code;
  if (overflow) {
    expect(code == TAMOE_RT_ERROR_INVALID_ARGUMENT &&
               x.status()->kind == kCountSumOverflows,
           "status " + std::to_string(code));
    expect(std::equal(before.begin(), before.end(), target),
           "written on failure");
    return;
  }
  expect(code == 0, "status " + std::to_string(code));
  expect(std::equal(want.begin(), want.end(), target), "sums differ");
}

//===----------------------------------------------------------------------===//
// chunk, unchunk and chunk_positions
//===----------------------------------------------------------------------===//

/// Every part of random blocks through chunk, then back through unchunk:
/// each part has the rows [floor(c n / C), floor((c + 1) n / C)) of every
/// block, the parts together give the rows back, rows past the valid ones
/// stay as they were. `error`: 1 a negative count, 2 counts past the rows,
/// 3 a chunk capacity one row short of the largest part.
void testChunk(int64_t numCounts, int64_t maxCount, int64_t chunks,
               int64_t rowBytes, int error) {
  currentCase = "chunk " + std::to_string(numCounts) +
                " blocks of <= " + std::to_string(maxCount) + " rows, " +
                std::to_string(chunks) +
                " chunks, rb=" + std::to_string(rowBytes) +
                " error=" + std::to_string(error);
  std::vector<int32_t> counts(static_cast<size_t>(numCounts));
  int64_t total = 0;
  for (auto &c : counts) {
    c = static_cast<int32_t>(uniform(0, maxCount));
    total += c;
  }
  if (error == 1) {
    if (numCounts == 0)
      return;
    counts[static_cast<size_t>(uniform(0, numCounts - 1))] = -3;
  }
  int64_t capacity = total + (error == 2 ? -1 : uniform(0, 2));
  if (error == 2 && total == 0)
    return;
  auto rows = randomRows(std::max<int64_t>(capacity, 0), rowBytes);
  // The direct semantics: the parts' sizes and rows.
  std::vector<std::vector<int32_t>> wantCounts(static_cast<size_t>(chunks));
  std::vector<std::vector<unsigned char>> wantRows(static_cast<size_t>(chunks));
  int64_t largest = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t offset = 0;
    for (int32_t n : counts) {
      int64_t count = std::max<int32_t>(n, 0);
      int64_t from = c * count / chunks, to = (c + 1) * count / chunks;
      wantCounts[c].push_back(static_cast<int32_t>(to - from));
      if (offset + to <= capacity)
        wantRows[c].insert(wantRows[c].end(),
                           rows.begin() + (offset + from) * rowBytes,
                           rows.begin() + (offset + to) * rowBytes);
      offset += count;
    }
    largest = std::max<int64_t>(largest, int64_t(wantRows[c].size()) /
                                             std::max<int64_t>(rowBytes, 1));
  }
  int64_t chunkCapacity = largest + (error == 3 ? -1 : uniform(0, 2));
  if (error == 3 && largest == 0)
    return;
  int32_t wantCode = error == 0 ? 0 : TAMOE_RT_ERROR_INVALID_ARGUMENT;

  const unsigned char kUntouched = 0xEE;
  std::vector<unsigned char> whole(rows.size(), kUntouched);
  for (int64_t c = 0; c < chunks; ++c) {
    std::vector<unsigned char> part(
        static_cast<size_t>(chunkCapacity * rowBytes), kUntouched);
    std::vector<int32_t> partCounts(static_cast<size_t>(numCounts), -99);
    HostExec x;
    ChunkLayout layout{capacity, rowBytes, counts.data(), numCounts,
                       c,        chunks,   chunkCapacity};
    runChunk(x, layout, rows.data(), part.data(), partCounts.data());
    int32_t code = x.status()->code;
    // Only the largest part is too large for a short capacity.
    int32_t want = wantCode;
    if (error == 3)
      want = int64_t(wantRows[c].size()) > chunkCapacity * rowBytes
                 ? TAMOE_RT_ERROR_CAPACITY_EXCEEDED
                 : 0;
    expect(code == want, "chunk " + std::to_string(c) + ": status " +
                             std::to_string(code) + ", want " +
                             std::to_string(want));
    if (code != 0 || want != 0) {
      expect(std::all_of(part.begin(), part.end(),
                         [&](unsigned char b) { return b == kUntouched; }),
             "part rows written on failure");
      expect(std::all_of(partCounts.begin(), partCounts.end(),
                         [](int32_t v) { return v == -99; }),
             "part counts written on failure");
      if (error == 3)
        continue;
      return;
    }
    expect(partCounts == wantCounts[c],
           "chunk " + std::to_string(c) + ": counts differ");
    expect(std::equal(wantRows[c].begin(), wantRows[c].end(), part.begin()),
           "chunk " + std::to_string(c) + ": rows differ");
    HostExec back;
    runUnchunk(back, layout, part.data(), whole.data());
    expect(back.status()->code == 0, "unchunk " + std::to_string(c) +
                                         ": status " +
                                         std::to_string(back.status()->code));
  }
  if (error != 0)
    return;
  expect(
      std::equal(rows.begin(), rows.begin() + total * rowBytes, whole.begin()),
      "the parts unchunked differ from the rows");
  expect(std::all_of(whole.begin() + total * rowBytes, whole.end(),
                     [&](unsigned char b) { return b == kUntouched; }),
         "unchunk wrote past the valid rows");
}

/// unchunk's own refusals: a part larger than its capacity is bad input
/// (INVALID_ARGUMENT), and nothing is written.
void testUnchunkRefuses(int64_t numCounts, int64_t chunks) {
  currentCase = "unchunk refuses, " + std::to_string(numCounts) + " blocks, " +
                std::to_string(chunks) + " chunks";
  std::vector<int32_t> counts(static_cast<size_t>(numCounts));
  int64_t total = 0;
  for (auto &c : counts) {
    c = static_cast<int32_t>(uniform(1, 9));
    total += c;
  }
  // Part 0 of n rows has floor(n / C) of them.
  int64_t part0 = 0;
  for (int32_t c : counts)
    part0 += c / chunks;
  if (part0 == 0)
    return;
  std::vector<unsigned char> chunkRows(static_cast<size_t>(part0 * 4), 1);
  std::vector<unsigned char> whole(static_cast<size_t>(total * 4), 0xEE);
  HostExec x;
  runUnchunk(
      x, ChunkLayout{total, 4, counts.data(), numCounts, 0, chunks, part0 - 1},
      chunkRows.data(), whole.data());
  expect(x.status()->code == TAMOE_RT_ERROR_INVALID_ARGUMENT &&
             x.status()->kind == kPartRowsExceedCapacity &&
             x.status()->a == part0,
         "status " + std::to_string(x.status()->code) + " kind " +
             std::to_string(x.status()->kind));
  expect(std::all_of(whole.begin(), whole.end(),
                     [](unsigned char b) { return b == 0xEE; }),
         "rows written on failure");
}

/// chunk_positions against its definition, on a real dispatch layout (with
/// drops); `error`: 1 a negative count, 2 an expert id out of range, 3 a
/// position outside its expert's block.
void testChunkPositions(int64_t tokens, int64_t k, int64_t experts,
                        int64_t chunks, int error) {
  currentCase = "chunk_positions " + std::to_string(tokens) + "x" +
                std::to_string(k) + ", " + std::to_string(experts) +
                " experts, " + std::to_string(chunks) +
                " chunks, error=" + std::to_string(error);
  int64_t n = tokens * k;
  std::vector<int32_t> ids(static_cast<size_t>(n)), positions(ids.size(), -1);
  std::vector<int32_t> counts(static_cast<size_t>(experts), 0);
  for (auto &id : ids)
    id = static_cast<int32_t>(uniform(0, experts - 1));
  // Dispatch order: by expert, then assignment; about one in five dropped.
  std::vector<int64_t> blockBegin(static_cast<size_t>(experts) + 1, 0);
  {
    std::vector<std::vector<int64_t>> byExpert(static_cast<size_t>(experts));
    for (int64_t a = 0; a < n; ++a)
      if (uniform(0, 4) != 0)
        byExpert[ids[a]].push_back(a);
    int32_t row = 0;
    for (int64_t e = 0; e < experts; ++e) {
      blockBegin[e] = row;
      for (int64_t a : byExpert[e])
        positions[a] = row++;
      counts[e] = static_cast<int32_t>(byExpert[e].size());
    }
    blockBegin[experts] = row;
  }
  int64_t kept = -1;
  for (int64_t a = 0; a < n; ++a)
    if (positions[a] >= 0)
      kept = a;
  if (error == 1)
    counts[static_cast<size_t>(uniform(0, experts - 1))] = -1;
  if (error == 2) {
    if (kept < 0)
      return;
    ids[kept] = static_cast<int32_t>(experts);
  }
  if (error == 3) {
    if (kept < 0)
      return;
    // One row past its block.
    positions[kept] = static_cast<int32_t>(blockBegin[ids[kept] + 1]);
  }
  for (int64_t c = 0; c < chunks; ++c) {
    std::vector<int32_t> want(static_cast<size_t>(n), -1);
    if (error == 0) {
      std::vector<int64_t> packed(static_cast<size_t>(experts), 0);
      for (int64_t e = 0, row = 0; e < experts; ++e) {
        packed[e] = row;
        row += (c + 1) * counts[e] / chunks - c * counts[e] / chunks;
      }
      for (int64_t a = 0; a < n; ++a) {
        if (positions[a] < 0)
          continue;
        int64_t e = ids[a], local = positions[a] - blockBegin[e];
        int64_t from = c * counts[e] / chunks,
                to = (c + 1) * counts[e] / chunks;
        if (local >= from && local < to)
          want[a] = static_cast<int32_t>(packed[e] + local - from);
      }
    }
    std::vector<int32_t> out(static_cast<size_t>(n), -99);
    HostExec x;
    runChunkPositions(x, ChunkPositionsParams{positions.data(), ids.data(),
                                              tokens, k, counts.data(), experts,
                                              c, chunks, out.data()});
    int32_t code = x.status()->code;
    int32_t wantCode = error == 0 ? 0 : TAMOE_RT_ERROR_INVALID_ARGUMENT;
    int32_t wantKind = error == 1   ? kNegativeCount
                       : error == 2 ? kExpertOutOfRange
                       : error == 3 ? kPositionOutsideBlock
                                    : kNoError;
    expect(code == wantCode && x.status()->kind == wantKind,
           "chunk " + std::to_string(c) + ": status " + std::to_string(code) +
               " kind " + std::to_string(x.status()->kind) + ", want " +
               std::to_string(wantCode) + " kind " + std::to_string(wantKind));
    if (error != 0) {
      expect(std::all_of(out.begin(), out.end(),
                         [](int32_t v) { return v == -99; }),
             "positions written on failure");
      return;
    }
    expect(out == want, "chunk " + std::to_string(c) + ": positions differ");
  }
}

//===----------------------------------------------------------------------===//
// all_to_all over a group of one rank
//===----------------------------------------------------------------------===//

/// Random counts sent to oneself: the rows and counts arrive as sent.
/// `error`: 1 a negative count, 2 counts past send_capacity, 3 more rows
/// than recv_capacity (CAPACITY_EXCEEDED); nothing is written then.
void testSelfExchange(int64_t entries, int64_t rowBytes, int error) {
  currentCase = "self exchange entries=" + std::to_string(entries) +
                " rb=" + std::to_string(rowBytes) +
                " error=" + std::to_string(error);
  std::vector<int32_t> counts(static_cast<size_t>(entries));
  int64_t total = 0;
  for (auto &c : counts) {
    c = static_cast<int32_t>(uniform(0, 9));
    total += c;
  }
  if ((error == 1 && entries == 0) || (error >= 2 && total == 0))
    return;
  if (error == 1)
    counts[static_cast<size_t>(uniform(0, entries - 1))] = -2;
  int64_t sendCapacity = total + (error == 2 ? -1 : uniform(0, 3));
  int64_t recvCapacity = total + (error == 3 ? -1 : uniform(0, 3));
  auto send = randomRows(sendCapacity, rowBytes);
  const unsigned char kUntouched = 0xEE;
  std::vector<unsigned char> received(
      static_cast<size_t>(recvCapacity * rowBytes), kUntouched);
  std::vector<int32_t> recvCounts(counts.size(), -99);
  HostExec x;
  runSelfExchange(x, SelfExchangeParams{send.data(), sendCapacity, rowBytes,
                                        counts.data(), entries, received.data(),
                                        recvCapacity, recvCounts.data()});
  const DeviceStatus &status = *x.status();
  const int32_t wantCode[] = {0, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                              TAMOE_RT_ERROR_INVALID_ARGUMENT,
                              TAMOE_RT_ERROR_CAPACITY_EXCEEDED};
  const int32_t wantKind[] = {kNoError, kNegativeCount,
                              kInputRowsExceedCapacity, kRowsExceedCapacity};
  expect(status.code == wantCode[error] && status.kind == wantKind[error],
         "status " + std::to_string(status.code) + " kind " +
             std::to_string(status.kind));
  if (error) {
    expect(std::all_of(received.begin(), received.end(),
                       [&](unsigned char b) { return b == kUntouched; }),
           "rows written on failure");
    expect(std::all_of(recvCounts.begin(), recvCounts.end(),
                       [](int32_t v) { return v == -99; }),
           "counts written on failure");
    return;
  }
  expect(recvCounts == counts, "counts differ");
  expect(std::equal(send.begin(), send.begin() + total * rowBytes,
                    received.begin()),
         "rows differ");
  expect(std::all_of(received.begin() + total * rowBytes, received.end(),
                     [&](unsigned char b) { return b == kUntouched; }),
         "rows past the counts written");
}

//===----------------------------------------------------------------------===//
// Slots of a grouped GEMM
//===----------------------------------------------------------------------===//

/// Chunks of random rows scattered into slots, multiplied there (a GEMM per
/// slot, as the strided batch does: rows past a chunk's count are zero) and
/// gathered back, against the packed grouped GEMM. `error`: 1 a negative
/// count, 2 counts past rows_capacity, 3 a count above the slot.
void testSlotRows(int64_t numCounts, int64_t experts, int64_t hidden,
                  int64_t outFeatures, int error) {
  currentCase = "slots counts=" + std::to_string(numCounts) +
                " experts=" + std::to_string(experts) +
                " hidden=" + std::to_string(hidden) +
                " out=" + std::to_string(outFeatures) +
                " error=" + std::to_string(error);
  int64_t slot = uniform(1, 8);
  std::vector<int32_t> counts(static_cast<size_t>(numCounts));
  int64_t total = 0;
  for (auto &c : counts) {
    c = static_cast<int32_t>(uniform(0, slot));
    total += c;
  }
  int64_t rowsCapacity = numCounts * slot;
  if (error == 1)
    counts[static_cast<size_t>(uniform(0, numCounts - 1))] = -1;
  if (error == 2) {
    // Every chunk full, and one row more than the rows hold.
    for (auto &c : counts)
      c = static_cast<int32_t>(slot);
    rowsCapacity = numCounts * slot - 1;
  }
  if (error == 3)
    counts[static_cast<size_t>(uniform(0, numCounts - 1))] =
        static_cast<int32_t>(slot + 1);
  // The slot as the backend derives it, from the capacity.
  int64_t derivedSlot = rowsCapacity / numCounts;
  std::vector<float> rows = randomFloats(rowsCapacity * hidden);
  std::vector<float> weights = randomFloats(experts * hidden * outFeatures);
  std::vector<int64_t> slotOf(static_cast<size_t>(rowsCapacity), -1);
  int64_t numRows = -1;
  HostExec x;
  runSlotRows(x, SlotRowsParams{counts.data(), numCounts, rowsCapacity,
                                derivedSlot, slotOf.data(), &numRows});
  const DeviceStatus &status = *x.status();
  const int32_t wantKind[] = {kNoError, kNegativeCount,
                              kInputRowsExceedCapacity, kCountExceedsSlot};
  // Full chunks past the capacity also exceed the smaller derived slot:
  // either message names a real fault.
  // A count above the slot may also take the sum past the capacity.
  bool kindOk = status.kind == wantKind[error] ||
                (error == 2 && status.kind == kCountExceedsSlot) ||
                (error == 3 && status.kind == kInputRowsExceedCapacity);
  expect(kindOk, "kind " + std::to_string(status.kind));
  if (error)
    return;
  expect(status.code == 0 && numRows == total,
         "rows " + std::to_string(numRows) + ", want " + std::to_string(total));
  // Scatter, multiply each slot by its chunk's expert, gather back.
  int64_t slotRows = numCounts * derivedSlot;
  std::vector<float> padded(static_cast<size_t>(slotRows * hidden), 0.0f);
  x.scatterRows(padded.data(), rows.data(), hidden * 4, slotOf.data(), &numRows,
                rowsCapacity);
  std::vector<float> paddedOut(static_cast<size_t>(slotRows * outFeatures));
  for (int64_t q = 0; q < slotRows; ++q) {
    const float *w =
        weights.data() + (q / derivedSlot % experts) * hidden * outFeatures;
    for (int64_t o = 0; o < outFeatures; ++o) {
      float sum = 0;
      for (int64_t h = 0; h < hidden; ++h)
        sum += padded[size_t(q * hidden + h)] * w[h * outFeatures + o];
      paddedOut[size_t(q * outFeatures + o)] = sum;
    }
  }
  std::vector<float> result(static_cast<size_t>(rowsCapacity * outFeatures),
                            0.0f);
  x.copyRows(result.data(), paddedOut.data(), outFeatures * 4, slotOf.data(),
             &numRows, rowsCapacity);
  // The packed grouped GEMM: chunk c's rows times weights[c % experts].
  int64_t row = 0;
  bool same = true;
  for (int64_t c = 0; c < numCounts; ++c)
    for (int64_t i = 0; i < counts[size_t(c)]; ++i, ++row) {
      const float *w = weights.data() + (c % experts) * hidden * outFeatures;
      for (int64_t o = 0; o < outFeatures; ++o) {
        float sum = 0;
        for (int64_t h = 0; h < hidden; ++h)
          sum += rows[size_t(row * hidden + h)] * w[h * outFeatures + o];
        same = same && sum == result[size_t(row * outFeatures + o)];
      }
    }
  expect(same, "slot products differ from the packed grouped GEMM");
}

int main() {
  // dispatch: dropless, position, probability; odd row sizes; ties.
  const tamoe_rt_drop_t drops[] = {TAMOE_RT_DROP_POSITION,
                                   TAMOE_RT_DROP_PROBABILITY};
  for (int round = 0; round < 60; ++round) {
    int64_t tokens = uniform(0, 3) == 0 ? uniform(0, 3) : uniform(1, 300);
    int64_t k = uniform(1, 4), experts = uniform(1, 40);
    int64_t rowBytes = uniform(0, 4) == 0 ? uniform(0, 3) : uniform(1, 40);
    for (tamoe_rt_drop_t drop : drops)
      for (int64_t capacity :
           {int64_t(-1), int64_t(0), uniform(1, 8), tokens * k}) {
        int64_t n = tokens * k;
        testDispatch(tokens, rowBytes, k, experts, capacity, drop, n,
                     uniform(0, 2) ? 4 : 0, false);
      }
    testDispatch(tokens, rowBytes, k, experts, uniform(0, 8), drops[round % 2],
                 tokens * k, 3, true);
    // A dispatched buffer one row too small (when anything is kept).
    int64_t n = tokens * k;
    testDispatch(tokens, rowBytes, k, experts, -1, TAMOE_RT_DROP_POSITION,
                 std::max<int64_t>(n - 1, 0), 0, false);
  }
  // regroup, including empty chunks and grids.
  for (int round = 0; round < 80; ++round) {
    int64_t a = uniform(0, 5), b = uniform(0, 5), inner = uniform(1, 4);
    int64_t rowBytes = uniform(1, 24);
    testRegroup(a, b, inner, uniform(0, 6), rowBytes, uniform(0, 3), false);
    testRegroup(a, b, inner, uniform(1, 6), rowBytes, -uniform(1, 3), false);
    testRegroup(a, b, inner, uniform(0, 6), rowBytes, 0, true);
  }
  // dedup_pack.
  for (int round = 0; round < 60; ++round) {
    int64_t tokens = uniform(0, 120), k = uniform(1, 6);
    int64_t nodes = uniform(1, 5), perNode = uniform(1, 8);
    int64_t rowBytes = uniform(1, 20);
    testDedupPack(tokens, rowBytes, k, perNode, nodes, uniform(0, 3), false);
    testDedupPack(tokens, rowBytes, k, perNode, nodes, -1, false);
    testDedupPack(tokens, rowBytes, k, perNode, nodes, 0, true);
  }
  // dedup_expand.
  for (int round = 0; round < 60; ++round) {
    int64_t nodes = uniform(1, 4), rpn = uniform(1, 4), epr = uniform(1, 4);
    int64_t k = uniform(1, 6), rowBytes = uniform(1, 20);
    for (int error = 0; error <= 3; ++error)
      testDedupExpand(nodes, rpn, epr, k, uniform(0, 20), rowBytes,
                      uniform(0, 2), error);
    testDedupExpand(nodes, rpn, epr, k, uniform(1, 20), rowBytes, -1, 0);
  }
  for (int round = 0; round < 20; ++round)
    testPackExpandRoundTrip(uniform(1, 80), uniform(1, 4), uniform(1, 3),
                            uniform(1, 3), uniform(2, 4));
  // The gradients.
  for (int round = 0; round < 60; ++round) {
    int64_t tokens = uniform(0, 3) == 0 ? uniform(0, 2) : uniform(1, 80);
    int64_t k = uniform(1, 8), rows = uniform(0, 3) == 0 ? 0 : uniform(1, 90);
    int64_t hidden = uniform(1, 9);
    for (bool weighted : {true, false})
      testCombineGrad(tokens, k, rows, hidden, weighted, false);
    testCombineGrad(tokens, k, rows, hidden, true, true);
    testCountAssignments(tokens, k, uniform(1, 40), round % 2 == 0);
  }
  for (int round = 0; round < 60; ++round) {
    int64_t tokens = uniform(0, 60), k = uniform(1, 6);
    int64_t nodes = uniform(1, 5), perNode = uniform(1, 8);
    int64_t hidden = uniform(1, 6);
    testDedupPackGrad(tokens, k, perNode, nodes, hidden, uniform(0, 3), false);
    testDedupPackGrad(tokens, k, perNode, nodes, hidden, -1, false);
    testDedupPackGrad(tokens, k, perNode, nodes, hidden, 0, true);
  }
  for (int round = 0; round < 60; ++round) {
    int64_t nodes = uniform(1, 4), rpn = uniform(1, 4), epr = uniform(1, 4);
    int64_t k = uniform(1, 6), hidden = uniform(1, 6);
    for (int error = 0; error <= 3; ++error)
      testDedupExpandGrad(nodes, rpn, epr, k, uniform(0, 12), hidden,
                          uniform(0, 2), error);
    testDedupExpandGrad(nodes, rpn, epr, k, uniform(1, 12), hidden, -1, 0);
  }

  for (int round = 0; round < 20; ++round)
    for (bool inPlace : {false, true})
      for (bool overflow : {false, true})
        testAddCounts(uniform(0, 3) == 0 ? 0 : uniform(1, 300), inPlace,
                      overflow);
  // chunk, unchunk (every part, back together) and chunk_positions.
  for (int round = 0; round < 60; ++round) {
    int64_t numCounts = uniform(0, 3) == 0 ? uniform(0, 2) : uniform(1, 24);
    int64_t chunks = uniform(1, 9), rowBytes = uniform(1, 20);
    for (int error = 0; error <= 3; ++error)
      testChunk(numCounts, uniform(0, 3) == 0 ? 0 : uniform(1, 30), chunks,
                rowBytes, error);
    testUnchunkRefuses(uniform(1, 10), uniform(1, 4));
    int64_t tokens = uniform(0, 3) == 0 ? uniform(0, 2) : uniform(1, 80);
    for (int error = 0; error <= 3; ++error)
      testChunkPositions(tokens, uniform(1, 4), uniform(1, 12), chunks, error);
  }

  // all_to_all over one rank, and the slots of a grouped GEMM.
  for (int round = 0; round < 40; ++round) {
    int64_t entries = uniform(0, 3) == 0 ? uniform(0, 1) : uniform(1, 16);
    for (int error = 0; error <= 3; ++error)
      testSelfExchange(entries, uniform(1, 20), error);
    int64_t numCounts = uniform(1, 12), experts = uniform(1, 4);
    for (int error = 0; error <= 3; ++error)
      testSlotRows(numCounts, experts, uniform(1, 5), uniform(1, 5), error);
  }

  std::printf("%d checks, %d failures\n", checks, failures);
  std::printf(failures ? "FAIL\n" : "PASS\n");
  return failures ? 1 : 0;
}
