//===- tamoe-topo-measure.cpp - Calibrate and validate by measurement -----===//
//
// tamoe-topo calibrate -o FILE.json    time exchanges per level, fit the
//                                      cost model's parameters, write them
// tamoe-topo validate FILE.json        predicted against measured times of
//                                      flat, hierarchical and de-duplicated
//                                      dispatches over a sweep of sizes
//
// tamoe-topo runs this executable for those two commands, so that it can
// link the runtime (and MPI) without slowing down the planning commands.
// Both run on the ranks they are launched on (mpirun -np 8 tamoe-topo
// calibrate ...), through the runtime's own exchanges, and rank 0 reports.
// Times are the slowest rank's mean over a loop of exchanges, the median of
// several trials: the machines are shared and a single trial is noisy.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Planner/Calibration.h"
#include "tamoe/Planner/CostModel.h"
#include "tamoe/Support/Messages.h"
#include "tamoe/Support/Version.h"
#include "tamoe_rt/tamoe_rt.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <set>

using namespace llvm;
using namespace tamoe::planner;
namespace topo = tamoe::topology;
using tamoe::formatFixed;

static cl::SubCommand calibrateCommand(
    "calibrate", "Time exchanges that reach each level of the tree over a "
                 "sweep of sizes, fit the cost model's latency, per-message "
                 "overhead and bandwidth per level, and write a topology");
static cl::SubCommand validateCommand(
    "validate", "Compare the predicted with the measured time of flat, "
                "hierarchical and de-duplicated dispatches over a sweep of "
                "sizes, and print their ratio per size");

static cl::OptionCategory options("Measurement options");
#define BOTH cl::sub(calibrateCommand), cl::sub(validateCommand), cl::cat(options)
static cl::opt<std::string>
    backendName("backend", cl::desc("cpu (MPI) or cuda (NCCL) (default cpu)"),
                cl::init("cpu"), BOTH);
static cl::opt<int64_t>
    minBytes("min-bytes",
             cl::desc("Smallest size of the sweep, bytes per rank (default "
                      "1024)"),
             cl::init(1024), BOTH);
static cl::opt<int64_t>
    maxBytes("max-bytes",
             cl::desc("Largest size, bytes per rank (default 16777216)"),
             cl::init(16 << 20), BOTH);
static cl::opt<int64_t> factor("factor",
                               cl::desc("Ratio of consecutive sizes (default "
                                        "4)"),
                               cl::init(4), BOTH);
static cl::opt<int64_t> rowBytes("row-bytes",
                                 cl::desc("Bytes of one row (default 64)"),
                                 cl::init(64), BOTH);
static cl::opt<int64_t>
    trials("trials",
           cl::desc("Trials per size; the median is kept (default 5)"),
           cl::init(5), BOTH);
static cl::opt<std::string> outputPath("o", cl::desc("calibrate: output file"),
                                       cl::value_desc("file"),
                                       cl::sub(calibrateCommand),
                                       cl::cat(options));
static cl::opt<std::string>
    clusterName("name",
                cl::desc("calibrate: the topology's name (default "
                         "calibrated)"),
                cl::init("calibrated"), cl::sub(calibrateCommand),
                cl::cat(options));
static cl::list<int64_t>
    fanouts("fanouts",
            cl::desc("calibrate: the tree's fanouts, innermost first "
                     "(default: ranks per node, then nodes)"),
            cl::CommaSeparated, cl::value_desc("f0,f1,..."),
            cl::sub(calibrateCommand), cl::cat(options));
static cl::opt<std::string> topologyPath(cl::Positional,
                                         cl::desc("<topology file>"),
                                         cl::sub(validateCommand));
static cl::opt<int64_t> topK("topk",
                             cl::desc("validate: experts per token (default "
                                      "2)"),
                             cl::init(2), cl::sub(validateCommand),
                             cl::cat(options));
static cl::opt<int64_t>
    expertsPerRank("experts-per-rank",
                   cl::desc("validate: experts on each rank (default 2)"),
                   cl::init(2), cl::sub(validateCommand), cl::cat(options));
static cl::opt<double> maxRatio(
    "max-ratio",
    cl::desc("validate: fail when a predicted/measured ratio is above this "
             "or below its inverse (default: report only)"),
    cl::init(0), cl::sub(validateCommand), cl::cat(options));

namespace {

/// The run: a runtime context over the launched ranks. Only rank 0 prints.
struct Run {
  tamoe_rt_context_t *context = nullptr;
  int64_t rank = 0, ranks = 1, perNode = 1;

  ~Run() { tamoe_rt_finalize(context); }
  bool reports() const { return rank == 0; }
  Error check(tamoe_rt_status_t status, StringRef what) const {
    if (status == TAMOE_RT_SUCCESS)
      return Error::success();
    return createStringError(inconvertibleErrorCode(),
                             what + ": " + tamoe_rt_status_name(status) +
                                 ": " + tamoe_rt_last_error(context));
  }
};

/// Memory of the run's backend, filled from the host.
class Buffer {
public:
  Buffer(const Run &run) : run(run) {}
  Buffer(const Buffer &) = delete;
  ~Buffer() { tamoe_rt_free(run.context, pointer); }

  template <typename T>
  Error assign(const std::vector<T> &values, StringRef what) {
    return assignBytes(values.data(), values.size() * sizeof(T), what);
  }
  Error reserve(size_t bytes, StringRef what) {
    if (bytes <= size)
      return Error::success();
    tamoe_rt_free(run.context, pointer);
    pointer = nullptr;
    size = 0;
    if (Error error = run.check(
            tamoe_rt_alloc(run.context, intptr_t(bytes), &pointer), what))
      return error;
    size = bytes;
    return Error::success();
  }
  template <typename T> T *as() const { return static_cast<T *>(pointer); }

private:
  Error assignBytes(const void *host, size_t bytes, StringRef what) {
    if (Error error = reserve(std::max<size_t>(bytes, 1), what))
      return error;
    return run.check(
        tamoe_rt_copy_to_backend(run.context, pointer, host, intptr_t(bytes)),
        what);
  }

  const Run &run;
  void *pointer = nullptr;
  size_t size = 0;
};

/// Times one collective operation on every rank: the slowest rank's mean
/// over `iterations`, the median over the trials.
class Timer {
public:
  explicit Timer(const Run &run) : run(run), scratch(run), flag(run) {}

  Expected<double> time(function_ref<Error()> exchange, int64_t bytes) {
    // Enough iterations that a loop of small exchanges outlasts the timer's
    // and the barrier's noise, few for large ones.
    int64_t iterations =
        std::clamp<int64_t>((int64_t(8) << 20) / std::max<int64_t>(bytes, 1),
                            2, 50);
    if (Error error = exchange()) // warm-up: connections, pools, caches
      return std::move(error);
    std::vector<double> slowest;
    for (int64_t t = 0; t < trials; ++t) {
      if (Error error = barrier())
        return std::move(error);
      auto start = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < iterations; ++i)
        if (Error error = exchange())
          return std::move(error);
      if (Error error = run.check(tamoe_rt_synchronize(run.context),
                                  "synchronize"))
        return std::move(error);
      std::chrono::duration<double, std::micro> elapsed =
          std::chrono::steady_clock::now() - start;
      Expected<double> most = maxOverRanks(elapsed.count() / iterations);
      if (!most)
        return most.takeError();
      slowest.push_back(*most);
    }
    std::sort(slowest.begin(), slowest.end());
    return slowest[slowest.size() / 2];
  }

private:
  Error barrier() {
    if (Error error = flag.assign(std::vector<float>{1}, "barrier"))
      return error;
    return run.check(tamoe_rt_all_reduce(run.context, TAMOE_RT_GROUP_WORLD,
                                         flag.as<float>(), 1, 0),
                     "barrier");
  }

  /// Every rank's value in its own slot of a sum.
  Expected<double> maxOverRanks(double value) {
    std::vector<float> slots(run.ranks, 0);
    slots[run.rank] = float(value);
    if (Error error = scratch.assign(slots, "timer"))
      return std::move(error);
    if (Error error = run.check(
            tamoe_rt_all_reduce(run.context, TAMOE_RT_GROUP_WORLD,
                                scratch.as<float>(), run.ranks, 0),
            "timer"))
      return std::move(error);
    if (Error error = run.check(
            tamoe_rt_copy_to_host(run.context, slots.data(),
                                  scratch.as<float>(),
                                  intptr_t(slots.size() * sizeof(float))),
            "timer"))
      return std::move(error);
    return *std::max_element(slots.begin(), slots.end());
  }

  const Run &run;
  Buffer scratch, flag;
};

std::vector<int64_t> sweepSizes() {
  std::vector<int64_t> sizes;
  for (int64_t bytes = minBytes; bytes <= maxBytes; bytes *= factor)
    sizes.push_back(bytes);
  return sizes;
}

Error checkSweep() {
  auto field = [](StringRef name, const Twine &reason) {
    return tamoe::fieldError("--" + name, reason);
  };
  if (minBytes < 1)
    return field("min-bytes", formatv("expected >= 1, got {0}", minBytes));
  if (maxBytes < minBytes || maxBytes > (int64_t(1) << 32))
    return field("max-bytes", formatv("expected in [--min-bytes, 2^32], got "
                                      "{0}",
                                      maxBytes));
  if (factor < 2)
    return field("factor", formatv("expected >= 2, got {0}", factor));
  if (rowBytes < 1 || rowBytes > minBytes)
    return field("row-bytes", formatv("expected in [1, --min-bytes], got {0}",
                                      rowBytes));
  if (trials < 1 || trials > 1000)
    return field("trials", formatv("expected in [1, 1000], got {0}", trials));
  return Error::success();
}

//===----------------------------------------------------------------------===//
// calibrate
//===----------------------------------------------------------------------===//

Expected<Topology> calibrationShape(const Run &run) {
  std::vector<int64_t> shape(fanouts.begin(), fanouts.end());
  if (shape.empty()) {
    shape = {run.perNode};
    if (run.ranks > run.perNode)
      shape.push_back(run.ranks / run.perNode);
  }
  Topology topology;
  topology.name = clusterName;
  int64_t product = 1;
  for (auto [l, fanout] : llvm::enumerate(shape)) {
    if (fanout < 1)
      return tamoe::fieldError(formatv("--fanouts[{0}]", l),
                               formatv("expected >= 1, got {0}", fanout));
    // Saturated: a product that wrapped around could equal the ranks
    // launched and let fanouts past the world pick peers outside it.
    product = llvm::checkedMul(product, fanout)
                  .value_or(std::numeric_limits<int64_t>::max());
    topo::Level level;
    level.name = l == 0                  ? "node"
                 : l + 1 == shape.size() ? "cluster"
                                         : formatv("level{0}", l).str();
    level.fanout = fanout;
    level.upBandwidthGBps = level.downBandwidthGBps = 1; // fitted below
    topology.levels.push_back(level);
  }
  if (product > run.ranks)
    return tamoe::fieldError("--fanouts",
                             formatv("their product is more than the {0} ranks "
                                     "launched",
                                     run.ranks));
  if (product != run.ranks)
    return tamoe::fieldError(
        "--fanouts", formatv("their product, {0}, is not the {1} ranks "
                             "launched",
                             product, run.ranks));
  if (run.ranks < 2)
    return createStringError(inconvertibleErrorCode(),
                             "calibration needs at least 2 ranks to time "
                             "exchanges: launch it with mpirun -np N");
  // What only the fitted file's check would refuse (a bad --name, too many
  // levels), refused before minutes of timing.
  if (Error error = topo::verify(topology)) {
    std::string message = toString(std::move(error));
    return createStringError(inconvertibleErrorCode(),
                             (StringRef(message).starts_with("name: ")
                                  ? "--" + message
                                  : "--fanouts: " + message));
  }
  return topology;
}

/// Every rank sends `messages` messages of `bytes / messages` bytes (whole
/// rows) to its calibration peers at distance `level`, over the world.
Expected<ExchangeSample> timeLevel(const Run &run, Timer &timer,
                                   const Topology &shape, size_t level,
                                   int64_t messages, int64_t bytes) {
  int64_t rowsPerMessage = std::max<int64_t>(1, bytes / messages / rowBytes);
  std::vector<int32_t> counts(run.ranks, 0);
  for (int64_t peer : calibrationPeers(shape, run.rank, level, messages))
    counts[peer] = int32_t(rowsPerMessage);
  int64_t rows = rowsPerMessage * messages;
  Buffer send(run), received(run), sendCounts(run), recvCounts(run);
  if (Error error = send.reserve(rows * rowBytes, "calibrate"))
    return std::move(error);
  if (Error error = received.reserve(rows * rowBytes, "calibrate"))
    return std::move(error);
  if (Error error = sendCounts.assign(counts, "calibrate"))
    return std::move(error);
  if (Error error = recvCounts.reserve(run.ranks * sizeof(int32_t),
                                       "calibrate"))
    return std::move(error);
  Expected<double> us = timer.time(
      [&] {
        return run.check(tamoe_rt_all_to_all(
                             run.context, TAMOE_RT_GROUP_WORLD, send.as<void>(),
                             rows, rowBytes, sendCounts.as<int32_t>(),
                             run.ranks, 1, received.as<void>(), rows,
                             recvCounts.as<int32_t>()),
                         "tamoe_rt_all_to_all");
      },
      rows * rowBytes);
  if (!us)
    return us.takeError();
  return ExchangeSample{level, messages, double(rows * rowBytes), *us};
}

Error calibrateCluster(const Run &run) {
  if (outputPath.empty())
    return tamoe::fieldError("-o", "expected the output file");
  Expected<Topology> shape = calibrationShape(run);
  if (!shape)
    return shape.takeError();
  Timer timer(run);
  std::vector<ExchangeSample> samples;
  for (size_t level = 0; level < shape->levels.size(); ++level)
    for (int64_t messages : calibrationMessageCounts(*shape, level))
      for (int64_t bytes : sweepSizes()) {
        Expected<ExchangeSample> sample =
            timeLevel(run, timer, *shape, level, messages, bytes);
        if (!sample)
          return sample.takeError();
        samples.push_back(*sample);
      }
  if (!run.reports())
    return Error::success();

  std::string how = formatv("calibrated by tamoe-topo calibrate on {0} {1} "
                            "ranks, {2} to {3} bytes per rank",
                            run.ranks, backendName, minBytes, maxBytes);
  Expected<Calibration> calibration = calibrate(*shape, samples, how);
  if (!calibration)
    return calibration.takeError();
  const Topology &fitted = calibration->topology;
  std::error_code ec;
  raw_fd_ostream file(outputPath, ec);
  if (ec)
    return tamoe::fieldError(outputPath, "cannot write file: " + ec.message());
  topo::writeTopologyJSON(fitted, file);
  file << "\n";

  raw_ostream &os = outs();
  os << formatv("Calibrated {0} ({1} ranks) -> {2}\n\n", fitted.name,
                run.ranks, outputPath);
  os << "| level | latency us | per message us | GB/s per rank | worst "
        "error |\n|---|---:|---:|---:|---:|\n";
  for (auto [index, level, fit] :
       llvm::enumerate(fitted.levels, calibration->fits))
    os << formatv("| {0} | {1} | {2} | {3} | {4} |\n", level.name,
                  formatFixed(fit.latencyUs, 2),
                  formatFixed(fit.perMessageUs, 2),
                  formatFixed(fit.bandwidthGBps, 3),
                  ranksAtDistance(fitted, int(index)) == 0
                      ? std::string("not timed (fanout 1)")
                      : formatFixed(100 * fit.worstRelativeError, 0) + "%");
  os << "\n| level | messages | bytes per rank | measured us | fitted us | "
        "fitted / measured |\n|---|---:|---:|---:|---:|---:|\n";
  for (const ExchangeSample &s : samples) {
    double predicted =
        calibration->fits[s.level].predictUs(s.messages, s.bytesPerRank);
    os << formatv("| {0} | {1} | {2} | {3} | {4} | {5} |\n",
                  fitted.levels[s.level].name,
                  s.messages, int64_t(s.bytesPerRank),
                  formatFixed(s.microseconds, 1), formatFixed(predicted, 1),
                  formatFixed(predicted / s.microseconds, 2));
  }
  return Error::success();
}

//===----------------------------------------------------------------------===//
// validate
//===----------------------------------------------------------------------===//

/// One rank's tokens and their experts: k distinct experts per token,
/// uniformly, from a seed per rank, so that every rank can regenerate the
/// others' routing and the prediction needs no communication.
std::vector<int32_t> routing(int64_t rank, int64_t tokens, int64_t experts) {
  std::mt19937_64 random(1000 + uint64_t(rank));
  std::uniform_int_distribution<int32_t> pick(0, int32_t(experts - 1));
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < tokens; ++t) {
    std::set<int32_t> chosen;
    while (int64_t(chosen.size()) < topK) {
      int32_t e = pick(random);
      if (chosen.insert(e).second)
        ids.push_back(e);
    }
  }
  return ids;
}

struct Dispatch {
  int64_t tokens = 0, experts = 0;
  Traffic traffic;
  int64_t receivedRows = 0; // by this rank
};

Dispatch plannedDispatch(const Run &run, int64_t bytes) {
  Dispatch d;
  d.tokens = std::max<int64_t>(1, bytes / (topK * rowBytes));
  d.experts = expertsPerRank * run.ranks;
  int64_t nodes = run.ranks / run.perNode;
  d.traffic.ranks = run.ranks;
  d.traffic.nodes = nodes;
  d.traffic.assignments.assign(run.ranks * run.ranks, 0);
  d.traffic.uniqueTokens.assign(run.ranks * nodes, 0);
  for (int64_t i = 0; i < run.ranks; ++i) {
    std::vector<int32_t> ids = routing(i, d.tokens, d.experts);
    for (int64_t t = 0; t < d.tokens; ++t) {
      std::set<int64_t> reached;
      for (int64_t j = 0; j < topK; ++j) {
        int64_t to = ids[t * topK + j] / expertsPerRank;
        d.traffic.assignments[i * run.ranks + to] += 1;
        reached.insert(to / run.perNode);
      }
      for (int64_t node : reached)
        d.traffic.uniqueTokens[i * nodes + node] += 1;
    }
  }
  for (int64_t i = 0; i < run.ranks; ++i)
    d.receivedRows += int64_t(d.traffic.assignments[i * run.ranks + run.rank]);
  return d;
}

Expected<Topology> validationTopology(const Run &run) {
  if (topologyPath.empty())
    return createStringError(inconvertibleErrorCode(),
                             "validate: expected a topology file");
  Expected<Topology> topology = topo::loadTopologyFile(topologyPath);
  if (!topology)
    return topology.takeError();
  if (topology->numRanks() != run.ranks ||
      topology->levels[0].fanout != run.perNode)
    return createStringError(
        inconvertibleErrorCode(),
        formatv("{0}: describes {1} ranks, {2} per node, but {3} ranks were "
                "launched, {4} per node",
                topologyPath, topology->numRanks(), topology->levels[0].fanout,
                run.ranks, run.perNode));
  // Expert ids are int32; the bound also keeps the products below exact.
  int64_t mostPerRank = INT32_MAX / run.ranks;
  if (expertsPerRank < 1 || expertsPerRank > mostPerRank)
    return tamoe::fieldError(
        "--experts-per-rank",
        formatv("expected in [1, {0}] (expert ids are int32), got {1}",
                mostPerRank, expertsPerRank));
  if (topK < 1 || topK > expertsPerRank * run.ranks)
    return tamoe::fieldError("--topk",
                             formatv("expected in [1, experts], got {0}", topK));
  // 0, the default, only reports; a ratio below 1 would fail every exact
  // prediction.
  if (maxRatio.getNumOccurrences() &&
      (!std::isfinite(maxRatio) || maxRatio < 1))
    return tamoe::fieldError("--max-ratio",
                             "expected a finite number >= 1, got " +
                                 tamoe::formatNumber(maxRatio));
  return topology;
}

Error validateCluster(const Run &run) {
  Expected<Topology> topology = validationTopology(run);
  if (!topology)
    return topology.takeError();
  Timer timer(run);
  ArrayRef<Schedule> schedules = allSchedules();
  struct Row {
    int64_t bytes;
    std::vector<double> measured, predicted;
  };
  std::vector<Row> rows;
  for (int64_t bytes : sweepSizes()) {
    Dispatch d = plannedDispatch(run, bytes);
    int64_t assignments = d.tokens * topK;
    Buffer tokens(run), ids(run), positions(run), dispatched(run),
        counts(run), received(run), recvCounts(run);
    std::vector<uint8_t> tokenBytes(d.tokens * rowBytes);
    for (size_t i = 0; i < tokenBytes.size(); ++i)
      tokenBytes[i] = uint8_t(i * 131 + run.rank);
    std::vector<int32_t> routes = routing(run.rank, d.tokens, d.experts);
    if (Error error = tokens.assign(tokenBytes, "validate"))
      return error;
    if (Error error = ids.assign(routes, "validate"))
      return error;
    if (Error error =
            positions.reserve(assignments * sizeof(int32_t), "validate"))
      return error;
    if (Error error = dispatched.reserve(assignments * rowBytes, "validate"))
      return error;
    if (Error error = counts.reserve(d.experts * sizeof(int32_t), "validate"))
      return error;
    if (Error error = received.reserve(
            std::max<int64_t>(d.receivedRows, 1) * rowBytes, "validate"))
      return error;
    if (Error error =
            recvCounts.reserve(d.experts * sizeof(int32_t), "validate"))
      return error;
    Buffer dropped(run);
    if (Error error = dropped.reserve(sizeof(int64_t), "validate"))
      return error;
    if (Error error = run.check(
            tamoe_rt_dispatch(run.context, tokens.as<void>(), d.tokens,
                              rowBytes, ids.as<int32_t>(), topK, d.experts,
                              nullptr, -1, TAMOE_RT_DROP_POSITION,
                              dispatched.as<void>(), assignments,
                              counts.as<int32_t>(), positions.as<int32_t>(),
                              dropped.as<int64_t>()),
            "tamoe_rt_dispatch"))
      return error;

    Workload workload;
    workload.tokensPerRank = d.tokens;
    workload.hidden = rowBytes;
    workload.bytesPerElement = 1;
    workload.topK = topK;
    Row row{assignments * rowBytes, {}, {}};
    for (Schedule schedule : schedules) {
      auto exchange = [&]() -> Error {
        switch (schedule) {
        case Schedule::Flat:
          return run.check(
              tamoe_rt_all_to_all(run.context, TAMOE_RT_GROUP_WORLD,
                                  dispatched.as<void>(), assignments, rowBytes,
                                  counts.as<int32_t>(), run.ranks,
                                  expertsPerRank, received.as<void>(),
                                  d.receivedRows, recvCounts.as<int32_t>()),
              "tamoe_rt_all_to_all");
        case Schedule::Hierarchical:
          return run.check(tamoe_rt_all_to_all_hierarchical(
                               run.context, dispatched.as<void>(), assignments,
                               rowBytes, counts.as<int32_t>(), expertsPerRank,
                               received.as<void>(), d.receivedRows,
                               recvCounts.as<int32_t>()),
                           "tamoe_rt_all_to_all_hierarchical");
        case Schedule::HierarchicalDedup:
          return run.check(tamoe_rt_dispatch_dedup(
                               run.context, tokens.as<void>(), d.tokens,
                               rowBytes, ids.as<int32_t>(),
                               positions.as<int32_t>(), topK, d.experts,
                               received.as<void>(), d.receivedRows,
                               recvCounts.as<int32_t>()),
                           "tamoe_rt_dispatch_dedup");
        }
        llvm_unreachable("every schedule is handled");
      };
      Expected<double> us = timer.time(exchange, row.bytes);
      if (!us)
        return us.takeError();
      row.measured.push_back(*us);
      row.predicted.push_back(
          evaluate(*topology, d.traffic, workload, schedule).totalUs());
    }
    rows.push_back(std::move(row));
  }
  if (!run.reports())
    return Error::success();

  raw_ostream &os = outs();
  os << formatv("Predicted ({0}) against measured dispatch times on {1} "
                "ranks, {2} per node: uniform top-{3} routing over {4} "
                "experts, rows of {5} bytes; times in us, ratio = predicted "
                "/ measured\n\n",
                topologyPath, run.ranks, run.perNode, topK,
                expertsPerRank * run.ranks, rowBytes);
  os << "| bytes per rank |";
  for (Schedule schedule : schedules)
    os << formatv(" {0} measured | predicted | ratio |",
                  stringifySchedule(schedule));
  os << "\n|---:|";
  for (size_t s = 0; s < schedules.size(); ++s)
    os << "---:|---:|---:|";
  os << "\n";
  double worst = 0;
  std::string worstAt;
  for (const Row &row : rows) {
    os << "| " << row.bytes << " |";
    for (size_t s = 0; s < schedules.size(); ++s) {
      // Nothing predicted (no row leaves a rank of a single-rank cluster):
      // no ratio to take.
      bool comparable = row.predicted[s] > 0 && row.measured[s] > 0;
      double ratio = comparable ? row.predicted[s] / row.measured[s] : 0;
      os << formatv(" {0} | {1} | {2} |", formatFixed(row.measured[s], 1),
                    formatFixed(row.predicted[s], 1),
                    comparable ? formatFixed(ratio, 2) : std::string("-"));
      if (!comparable)
        continue;
      double off = std::max(ratio, 1 / ratio);
      if (off > worst) {
        worst = off;
        worstAt = formatv("{0} at {1} bytes per rank, ratio {2}",
                          stringifySchedule(schedules[s]), row.bytes,
                          formatFixed(ratio, 2));
      }
    }
    os << "\n";
  }
  if (worstAt.empty())
    os << "\nWorst: none (no prediction to compare: nothing crosses a link)\n";
  else
    os << formatv("\nWorst: {0} ({1}x off)\n", worstAt, formatFixed(worst, 2));
  if (maxRatio > 0 && worst > maxRatio)
    return createStringError(inconvertibleErrorCode(),
                             formatv("a prediction is {0}x off the "
                                     "measurement, more than --max-ratio {1}",
                                     formatFixed(worst, 2),
                                     tamoe::formatNumber(maxRatio)));
  return Error::success();
}

} // namespace

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(options);
  cl::AddExtraVersionPrinter(tamoe::printVersion);
  cl::ParseCommandLineOptions(argc, argv,
                              "tamoe-topo calibrate and validate\n");

  Run run;
  auto fail = [&](Error error) {
    // Every rank reaches the same verdict (arguments and collectives fail
    // alike everywhere); one of them says so.
    if (!run.reports()) {
      consumeError(std::move(error));
      return 1;
    }
    // mpirun forwards stdout and stderr through separate pipes and may
    // splice a piece of one into a line of the other: the table goes out
    // first and the diagnostic leaves in a single write, so neither line
    // is cut.
    outs().flush();
    std::string line;
    raw_string_ostream lineStream(line);
    WithColor::error(lineStream, "tamoe-topo")
        << toString(std::move(error)) << "\n";
    errs() << line;
    return 1;
  };
  if (!calibrateCommand && !validateCommand)
    return fail(createStringError(inconvertibleErrorCode(),
                                  "expected calibrate or validate"));
  tamoe_rt_options_t rtOptions = tamoe_rt_default_options();
  if (backendName == "cuda")
    rtOptions.backend = TAMOE_RT_BACKEND_CUDA;
  else if (backendName != "cpu")
    return fail(tamoe::fieldError(
        "--backend", "expected cpu or cuda, got '" + backendName + "'"));
  if (tamoe_rt_init(&rtOptions, &run.context) != TAMOE_RT_SUCCESS)
    return fail(createStringError(inconvertibleErrorCode(),
                                  Twine("tamoe_rt_init: ") +
                                      tamoe_rt_last_error(nullptr)));
  run.rank = tamoe_rt_rank(run.context);
  run.ranks = tamoe_rt_num_ranks(run.context);
  run.perNode = tamoe_rt_ranks_per_node(run.context);
  if (Error error = checkSweep())
    return fail(std::move(error));
  Error error = calibrateCommand ? calibrateCluster(run) : validateCluster(run);
  if (error)
    return fail(std::move(error));
  return 0;
}
