//===- Timeline.h - When operations ran and when rows travelled -*- C++ -*-===//
//
// TAMOE_RT_TIMELINE=PREFIX records, per rank, the interval of every
// operation on the compute stream and of every exchange's rows on the
// communication side, and tamoe_rt_finalize writes them to
// PREFIX.rank<R>.csv: the evidence that a chunked layer's exchanges overlap
// its experts (bench/timeline.py summarises the files). The cpu backend
// keeps the host clock (HostTimeline); the cuda backend times its two
// streams with CUDA events.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_TIMELINE_H
#define TAMOE_RT_LIB_TIMELINE_H

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tamoe_rt {

/// One interval of the timeline, in microseconds since recording began.
struct TimelineInterval {
  /// "compute" (the operations, in call order) or "comm" (an exchange's
  /// rows, from when they were posted until they were in).
  std::string stream;
  /// The operation ("tamoe_rt_grouped_matmul") or the transfer ("rows over
  /// the world group").
  std::string name;
  double beginUs = 0, endUs = 0;
};

/// At most this many intervals are kept (a long run keeps its first ones
/// and counts the rest), so recording has bounded memory.
constexpr size_t kTimelineLimit = size_t(1) << 20;

/// Intervals on the host's steady clock.
class HostTimeline {
public:
  void start() {
    epoch = std::chrono::steady_clock::now();
    on = true;
  }
  bool recording() const { return on; }
  double nowUs() const {
    return std::chrono::duration<double, std::micro>(
               std::chrono::steady_clock::now() - epoch)
        .count();
  }
  void add(TimelineInterval interval) {
    if (intervals.size() < kTimelineLimit)
      intervals.push_back(std::move(interval));
    else
      ++dropped;
  }
  /// Opens an operation's interval; end() closes the innermost one open.
  void begin(const char *name) {
    if (on)
      open.emplace_back(name, nowUs());
  }
  void end() {
    if (!on || open.empty())
      return;
    auto [name, beginUs] = open.back();
    open.pop_back();
    add({"compute", name, beginUs, nowUs()});
  }
  const std::vector<TimelineInterval> &all() const { return intervals; }
  int64_t droppedCount() const { return dropped; }

private:
  bool on = false;
  std::chrono::steady_clock::time_point epoch;
  std::vector<std::pair<const char *, double>> open;
  std::vector<TimelineInterval> intervals;
  int64_t dropped = 0;
};

} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_TIMELINE_H
