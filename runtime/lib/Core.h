//===- Core.h - What the C entry points share -------------------*- C++ -*-===//
//
// The context behind tamoe_rt_context_t and the helpers of every entry
// point: argument checks whose messages name the argument, the recording of
// a failure's message, and the profile's timer. Core.cpp has the forward
// operations and the schedules, Gradients.cpp the backward operations and
// the training steps.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_CORE_H
#define TAMOE_RT_LIB_CORE_H

#include "Backend.h"
#include "LaunchOptions.h"
#include "Precision.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

/// An exchange of tamoe_rt_all_to_all_start: the backend's exchange in
/// flight and the send buffer the wait must be given back. The caller's
/// handle is its `id`, not its address: ids are never reused in a process,
/// so a handle waited already (or another context's) is never mistaken for
/// a later exchange that happens to live at the same address.
struct tamoe_rt_exchange {
  std::unique_ptr<tamoe_rt::PendingExchange> pending;
  const void *send = nullptr;
  uintptr_t id = 0;
};

struct tamoe_rt_context_t {
  std::unique_ptr<tamoe_rt::Launcher> launcher;
  std::unique_ptr<tamoe_rt::Backend> backend;
  std::string lastError;
  tamoe_rt::Traffic traffic;
  /// What tamoe_rt_alloc handed out and tamoe_rt_free has not taken back.
  std::unordered_map<void *, intptr_t> allocations;
  /// TAMOE_RT_PROFILE: seconds of each call of each operation, in order.
  bool profile = false;
  /// TAMOE_RT_TIMELINE: where tamoe_rt_finalize writes the timeline
  /// (PREFIX.rank<R>.csv); empty when it is not recorded.
  std::string timeline;
  std::map<std::string, std::vector<double>> samples;
  /// The composite schedules' temporary buffers (pointer, bytes), kept
  /// between calls so that a layer's exchanges do not allocate and fault in
  /// fresh memory every time.
  std::vector<std::pair<void *, intptr_t>> workspace;
  /// The exchanges started and not yet waited, in start order. The wait
  /// finds its handle's id here, so a stale or foreign handle is an error,
  /// not a use after free or another exchange's wait.
  std::vector<std::unique_ptr<tamoe_rt_exchange_t>> exchanges;
  /// Between tamoe_rt_graph_begin and _end: the backend records the
  /// operations instead of running them.
  bool recording = false;
  /// The first operation that failed while recording (its message with
  /// the function's name), which tamoe_rt_graph_end reports.
  tamoe_rt::Status recordingFailure;
  /// The calls recorded so far (the operations a launch's message counts).
  int64_t recordedCalls = 0;
  /// The graphs handed out and not destroyed, by id (the handle, as the
  /// exchanges': a stale or foreign one is not found).
  std::vector<
      std::pair<uintptr_t, std::unique_ptr<tamoe_rt::Backend::RecordedGraph>>>
      graphs;
};

namespace tamoe_rt {

inline Status invalid(std::string message) {
  return Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT, std::move(message));
}

/// Whether `context` is one that tamoe_rt_init returned and tamoe_rt_finalize
/// has not released.
bool isLive(const tamoe_rt_context_t *context);
/// Success for a live context; else why it cannot be used (null, or
/// finalized already), for the entry points to refuse it before reading it.
Status contextStatus(const tamoe_rt_context_t *context);

/// Records a failure where tamoe_rt_last_error finds it: on the context, or
/// per thread when there is none.
tamoe_rt_status_t finish(tamoe_rt_context_t *context, const char *function,
                         const Status &status);

/// Times an operation's call when the context profiles: from the entry to
/// the end of the backend's work for it (the backend is synchronized, so
/// asynchronous work is not attributed to a later call). When it records a
/// timeline, brackets the call's interval there (the backend's clock; no
/// synchronization, so an exchange's rows can travel meanwhile).
class Timed {
public:
  Timed(tamoe_rt_context_t *context, const char *name)
      : context(context && (context->profile || !context->timeline.empty())
                    ? context
                    : nullptr),
        name(name) {
    if (context) {
      context->backend->operationName = name;
      if (context->recording)
        context->backend->operationCall = ++context->recordedCalls;
    }
    if (!this->context)
      return;
    if (!context->timeline.empty())
      context->backend->timelineBegin(name);
    if (context->profile)
      start = std::chrono::steady_clock::now();
  }
  ~Timed() {
    if (!context)
      return;
    if (!context->timeline.empty())
      context->backend->timelineEnd();
    if (!context->profile)
      return;
    (void)context->backend->synchronize();
    context->samples[name].push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count());
  }

private:
  tamoe_rt_context_t *context;
  const char *name;
  std::chrono::steady_clock::time_point start;
};

/// An enum argument as the C caller passed it: C allows any int in an
/// enum, while reading one outside the enumerators through the enum type is
/// undefined in C++.
template <typename Enum> int raw(const Enum &value) {
  static_assert(sizeof(Enum) == sizeof(int), "enums of the C ABI are ints");
  int result;
  std::memcpy(&result, &value, sizeof(result));
  return result;
}

/// a * b, or -1 when a factor is negative or the product overflows.
inline intptr_t product(intptr_t a, intptr_t b) {
  intptr_t result;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &result))
    return -1;
  return result;
}

/// Bytes of `a * b` floats, -1 as `product`.
inline intptr_t floatBytes(intptr_t a, intptr_t b) {
  return product(product(a, b), intptr_t(sizeof(float)));
}

/// Bytes of `a * b` elements of `type` (a valid tamoe_rt_dtype_t), -1 as
/// `product`.
inline intptr_t typedBytes(const tamoe_rt_dtype_t &type, intptr_t a,
                           intptr_t b) {
  return product(product(a, b), dtypeBytes(raw(type)));
}

/// Argument checks; the first failure wins.
class Check {
public:
  template <typename Message> Check &that(bool ok, Message message) {
    if (status.ok() && !ok)
      status = invalid(message());
    return *this;
  }
  Check &notNull(const void *pointer, const char *name, bool needed = true) {
    return that(!needed || pointer, [&] { return str(name, " is null"); });
  }
  Check &atLeast(intptr_t value, intptr_t minimum, const char *name) {
    return that(value >= minimum, [&] {
      return str(name, " must be >= ", minimum, ", got ", value);
    });
  }
  /// That `a * b` (both checked non-negative before) fits in intptr_t.
  Check &fits(intptr_t a, intptr_t b, const char *what) {
    intptr_t product;
    return that(a < 0 || b < 0 || !__builtin_mul_overflow(a, b, &product),
                [&] { return str(what, " = ", a, " * ", b, " overflows"); });
  }
  /// That the bytes of `a * b` floats (sizes checked non-negative before)
  /// fit in intptr_t.
  Check &floats(intptr_t a, intptr_t b, const char *what) {
    return that(a < 0 || b < 0 || floatBytes(a, b) >= 0, [&] {
      return str(what, " * 4 = ", a, " * ", b, " * 4 overflows");
    });
  }
  /// That `type` is a tamoe_rt_dtype_t.
  Check &dtype(const tamoe_rt_dtype_t &type, const char *name) {
    return that(dtypeBytes(raw(type)) > 0, [&] {
      return str(name, " = ", raw(type), " is not a tamoe_rt_dtype_t");
    });
  }
  /// That a hyperparameter is a number >= 0.
  Check &nonNegative(double value, const char *name) {
    return that(value >= 0 && std::isfinite(value), [&] {
      return str(name, " must be finite and >= 0, got ", value);
    });
  }
  /// That a hyperparameter is a number > 0 (a divisor).
  Check &positive(double value, const char *name) {
    return that(value > 0 && std::isfinite(value), [&] {
      return str(name, " must be positive and finite, got ", value);
    });
  }
  /// That a decay rate is in [0, 1).
  Check &fraction(double value, const char *name) {
    return that(value >= 0 && value < 1,
                [&] { return str(name, " must be in [0, 1), got ", value); });
  }
  Check &score(tamoe_rt_score_t score) {
    return that(raw(score) == TAMOE_RT_SCORE_SOFTMAX ||
                    raw(score) == TAMOE_RT_SCORE_SIGMOID,
                [&] {
                  return str("score = ", raw(score),
                             " is not a tamoe_rt_score_t");
                });
  }
  /// That `chunk` is one of `chunks` parts (chunks and counts are ints, so
  /// chunk * count fits in int64).
  Check &part(intptr_t chunk, intptr_t chunks) {
    that(chunks >= 1 && chunks <= INT32_MAX, [&] {
      return str("chunks must be in [1, ", INT32_MAX, "], got ", chunks);
    });
    return that(chunk >= 0 && chunk < chunks, [&] {
      return str("chunk must be in [0, chunks), got ", chunk, " for ", chunks,
                 " chunks");
    });
  }
  /// That experts_per_node * nodes experts fit the int32 expert ids.
  Check &nodeExperts(intptr_t expertsPerNode, intptr_t nodes) {
    fits(expertsPerNode, nodes, "experts_per_node * nodes");
    return that(product(expertsPerNode, nodes) <= INT32_MAX, [&] {
      return str("experts_per_node * nodes = ", expertsPerNode * nodes,
                 " exceeds the int32 expert ids");
    });
  }
  /// dedup_pack's routing (and its gradient's): num_tokens tokens of k
  /// assignments over experts_per_node * nodes experts.
  Check &packRouting(intptr_t numTokens, intptr_t k, intptr_t expertsPerNode,
                     intptr_t nodes, const int32_t *expertIds,
                     const int32_t *positions) {
    atLeast(numTokens, 0, "num_tokens")
        .atLeast(k, 1, "k")
        .atLeast(expertsPerNode, 1, "experts_per_node")
        .atLeast(nodes, 1, "nodes")
        .nodeExperts(expertsPerNode, nodes)
        .fits(numTokens, k, "num_tokens * k");
    return notNull(expertIds, "expert_ids", numTokens > 0)
        .notNull(positions, "positions", numTokens > 0);
  }
  /// dedup_expand's routes (and its gradient's): unique_capacity rows of k
  /// entries from `nodes` nodes, for ranks_per_node ranks of
  /// experts_per_rank experts.
  Check &expandRoutes(intptr_t uniqueCapacity, intptr_t k,
                      const int32_t *routes, const int32_t *recvCounts,
                      intptr_t nodes, intptr_t ranksPerNode,
                      intptr_t expertsPerRank) {
    atLeast(uniqueCapacity, 0, "unique_capacity")
        .atLeast(k, 1, "k")
        .atLeast(nodes, 1, "nodes")
        .atLeast(ranksPerNode, 1, "ranks_per_node")
        .atLeast(expertsPerRank, 1, "experts_per_rank")
        .fits(uniqueCapacity, k, "unique_capacity * k")
        .fits(ranksPerNode, nodes, "ranks_per_node * nodes")
        .fits(product(ranksPerNode, nodes), expertsPerRank,
              "ranks_per_node * nodes * experts_per_rank");
    // Routes name experts by int32 id; more experts than that would only
    // size the backend's tables (and expanded_counts) past any route.
    that(product(product(ranksPerNode, nodes), expertsPerRank) <= INT32_MAX,
         [&] {
           return str("ranks_per_node * nodes * experts_per_rank = ",
                      ranksPerNode * nodes * expertsPerRank,
                      " exceeds the int32 expert ids");
         });
    return notNull(routes, "routes", uniqueCapacity > 0)
        .notNull(recvCounts, "recv_counts");
  }
  /// grouped_matmul's sizes (and its gradient's): rows_capacity rows of
  /// `hidden` in num_counts chunks over `experts` local experts of
  /// [hidden, out_features] weights.
  Check &groupedShape(intptr_t rowsCapacity, intptr_t hidden,
                      intptr_t numCounts, intptr_t experts,
                      intptr_t outFeatures) {
    atLeast(rowsCapacity, 0, "rows_capacity")
        .atLeast(hidden, 1, "hidden")
        .atLeast(numCounts, 0, "num_counts")
        .atLeast(experts, 1, "experts")
        .atLeast(outFeatures, 1, "out_features");
    return that(numCounts % std::max<intptr_t>(experts, 1) == 0,
                [&] {
                  return str("num_counts (", numCounts,
                             ") must be a multiple of experts (", experts, ")");
                })
        .floats(rowsCapacity, hidden, "rows_capacity * hidden")
        .floats(rowsCapacity, outFeatures, "rows_capacity * out_features")
        .fits(hidden, outFeatures, "hidden * out_features")
        .floats(experts, product(hidden, outFeatures),
                "experts * hidden * out_features");
  }
  /// That `experts` fit the int32 expert ids.
  Check &expertIds(intptr_t experts) {
    return that(experts <= INT32_MAX, [&] {
      return str("experts = ", experts, " exceeds the int32 expert ids");
    });
  }
  /// That each token picks 1 to `experts` experts.
  Check &topK(intptr_t k, intptr_t experts) {
    return that(k >= 1 && k <= experts, [&] {
      return str("k must be in [1, experts], got ", k, " for ", experts,
                 " experts");
    });
  }
  /// That the byte ranges of two buffers do not overlap.
  Check &disjoint(const void *x, intptr_t xBytes, const char *xName,
                  const void *y, intptr_t yBytes, const char *yName) {
    auto begin = [](const void *p) { return reinterpret_cast<uintptr_t>(p); };
    bool overlap = x && y && xBytes > 0 && yBytes > 0 &&
                   begin(x) < begin(y) + uintptr_t(yBytes) &&
                   begin(y) < begin(x) + uintptr_t(xBytes);
    return that(!overlap,
                [&] { return str(xName, " and ", yName, " overlap"); });
  }
  /// A buffer an entry point reads or writes: `count` elements of `size`
  /// bytes. The byte count saturates, as no buffer reaches INTPTR_MAX; a
  /// size that overflows is refused by the entry point's own checks.
  struct Buffer {
    Buffer(const void *pointer, intptr_t count, intptr_t size, const char *name)
        : pointer(pointer), name(name) {
      if (count <= 0 || size <= 0)
        bytes = 0;
      else if (__builtin_mul_overflow(count, size, &bytes))
        bytes = INTPTR_MAX;
    }
    const void *pointer;
    intptr_t bytes = 0;
    const char *name;
  };
  /// That each buffer `written` overlaps no other written one and nothing
  /// `read`: an output laid over an input (positions, ids, counts) would
  /// change the indices the backend reads after checking them.
  Check &apart(std::initializer_list<Buffer> written,
               std::initializer_list<Buffer> read) {
    for (const Buffer *w = written.begin(); w != written.end(); ++w) {
      for (const Buffer &r : read)
        disjoint(w->pointer, w->bytes, w->name, r.pointer, r.bytes, r.name);
      for (const Buffer *other = w + 1; other != written.end(); ++other)
        disjoint(w->pointer, w->bytes, w->name, other->pointer, other->bytes,
                 other->name);
    }
    return *this;
  }
  Status status;
};

/// That a collective's group is a tamoe_rt_group_t: without one there is
/// nobody to agree with, so this rank fails alone.
inline Status groupCheck(const tamoe_rt_group_t &group) {
  int value = raw(group);
  if (value == TAMOE_RT_GROUP_WORLD || value == TAMOE_RT_GROUP_NODE ||
      value == TAMOE_RT_GROUP_PEERS)
    return Status::success();
  return invalid(str("group = ", value, " is not a tamoe_rt_group_t"));
}

} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_CORE_H
