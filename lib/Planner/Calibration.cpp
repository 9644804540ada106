//===- Calibration.cpp - Fit a topology's parameters to measurements ------===//
//
// A level's samples are exchanges whose messages all reach that level, so
// the model predicts each as latency + messages * perMessage + bytes * c
// with c the inverse bandwidth (docs/cost-model.md). The fit minimises the
// squared relative error over a sweep that spans four orders of magnitude:
// absolute errors would let the largest sizes decide everything.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Planner/Calibration.h"

#include "tamoe/Planner/CostModel.h"
#include "tamoe/Support/Messages.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <array>
#include <cmath>
#include <limits>
#include <set>

using namespace llvm;
using namespace tamoe::planner;

/// GB/s from microseconds per byte: 1 byte/us is 1e6 bytes/s, 1e-3 GB/s.
static double gigabytesPerSecond(double usPerByte) { return 1e-3 / usPerByte; }

double LevelFit::predictUs(int64_t messages, double bytes) const {
  return latencyUs + double(messages) * perMessageUs +
         bytes / (bandwidthGBps * 1e3);
}

static std::string levelName(const Topology &shape, size_t level) {
  return formatv("level {0} ({1})", level, shape.levels[level].name).str();
}

namespace {
/// The parameters (latency, per message, microseconds per byte) in the
/// order of a sample's features (1, messages, bytes).
using Parameters = std::array<double, 3>;

/// Least squares of sum_i (f_i . theta / t_i - 1)^2 over the parameters in
/// `free` (the others 0), by the normal equations on columns scaled to 1.
/// Empty when the free columns are (nearly) dependent.
std::optional<Parameters> solve(ArrayRef<ExchangeSample> samples,
                                ArrayRef<int> free) {
  // At most the three parameters (which also tells the compiler the sizes
  // below are small).
  size_t n = free.size();
  if (n == 0 || n > 3)
    return std::nullopt;
  auto feature = [](const ExchangeSample &s, int j) {
    double f = j == 0 ? 1.0 : j == 1 ? double(s.messages) : s.bytesPerRank;
    return f / s.microseconds;
  };
  std::vector<double> scale(n, 0);
  for (const ExchangeSample &s : samples)
    for (size_t a = 0; a < n; ++a)
      scale[a] = std::max(scale[a], std::fabs(feature(s, free[a])));
  if (llvm::is_contained(scale, 0.0))
    return std::nullopt;
  // [A | b] with A = X^T X and b = X^T 1 on the scaled columns.
  std::vector<std::vector<double>> m(n, std::vector<double>(n + 1, 0));
  for (const ExchangeSample &s : samples)
    for (size_t a = 0; a < n; ++a) {
      double xa = feature(s, free[a]) / scale[a];
      for (size_t b = 0; b < n; ++b)
        m[a][b] += xa * feature(s, free[b]) / scale[b];
      m[a][n] += xa;
    }
  // Gaussian elimination with partial pivoting; the scaled diagonal is at
  // most the sample count, so a relative pivot test finds dependence.
  double tolerance = 1e-10 * double(samples.size());
  for (size_t col = 0; col < n; ++col) {
    size_t pivot = col;
    for (size_t row = col + 1; row < n; ++row)
      if (std::fabs(m[row][col]) > std::fabs(m[pivot][col]))
        pivot = row;
    if (std::fabs(m[pivot][col]) < tolerance)
      return std::nullopt;
    std::swap(m[col], m[pivot]);
    for (size_t row = 0; row < n; ++row) {
      if (row == col)
        continue;
      double factor = m[row][col] / m[col][col];
      for (size_t k = col; k <= n; ++k)
        m[row][k] -= factor * m[col][k];
    }
  }
  Parameters theta = {0, 0, 0};
  for (size_t a = 0; a < n; ++a)
    theta[free[a]] = m[a][n] / m[a][a] / scale[a];
  return theta;
}

double sumOfSquares(ArrayRef<ExchangeSample> samples, const Parameters &p) {
  double sum = 0;
  for (const ExchangeSample &s : samples) {
    double r = (p[0] + double(s.messages) * p[1] + s.bytesPerRank * p[2]) /
                   s.microseconds -
               1;
    sum += r * r;
  }
  return sum;
}
} // namespace

Expected<LevelFit> tamoe::planner::fitLevel(const Topology &shape,
                                            ArrayRef<ExchangeSample> all,
                                            size_t level) {
  std::string name = levelName(shape, level);
  auto failure = [&](const Twine &reason) {
    return createStringError(inconvertibleErrorCode(), name + ": " + reason);
  };
  std::vector<ExchangeSample> samples;
  std::set<double> sizes;
  std::set<int64_t> counts;
  for (auto [index, s] : llvm::enumerate(all)) {
    if (s.level != level)
      continue;
    if (!std::isfinite(s.microseconds) || s.microseconds <= 0)
      return failure(formatv("sample {0}: expected a finite time > 0 us, got "
                             "{1}",
                             index, formatNumber(s.microseconds)));
    if (!std::isfinite(s.bytesPerRank) || s.bytesPerRank < 0)
      return failure(formatv("sample {0}: expected a finite size >= 0 bytes, "
                             "got {1}",
                             index, formatNumber(s.bytesPerRank)));
    if (s.messages < 1)
      return failure(
          formatv("sample {0}: expected >= 1 messages, got {1}", index,
                  s.messages));
    samples.push_back(s);
    sizes.insert(s.bytesPerRank);
    counts.insert(s.messages);
  }
  if (sizes.size() < 2)
    return failure(formatv("{0} sizes measured: at least two are needed to "
                           "tell the latency from the bandwidth",
                           sizes.size()));

  // Times must grow with the bytes, or every bandwidth fits as well as an
  // infinite one; compare the mean times at the smallest and largest size.
  auto meanAt = [&](double bytes) {
    double sum = 0;
    int n = 0;
    for (const ExchangeSample &s : samples)
      if (s.bytesPerRank == bytes) {
        sum += s.microseconds;
        ++n;
      }
    return sum / n;
  };
  double smallest = *sizes.begin(), largest = *sizes.rbegin();
  if (meanAt(largest) <= meanAt(smallest))
    return failure(formatv(
        "times do not grow with the bytes sent ({0} us at {1} bytes, {2} us "
        "at {3} bytes): no bandwidth fits; sweep larger sizes",
        formatFixed(meanAt(smallest), 1), formatNumber(smallest),
        formatFixed(meanAt(largest), 1), formatNumber(largest)));

  // Exact non-negative least squares over three parameters: the best
  // unconstrained solution among the subsets of free parameters that is
  // feasible. The bandwidth term is always free: without it nothing grows,
  // and alone it always fits (some size is > 0), so a best exists.
  std::optional<Parameters> best;
  double bestError = std::numeric_limits<double>::infinity();
  static const std::vector<int> kSubsets[] = {{0, 1, 2}, {0, 2}, {1, 2}, {2}};
  for (ArrayRef<int> free : kSubsets) {
    if (counts.size() < 2 && llvm::is_contained(free, 1) &&
        llvm::is_contained(free, 0))
      continue; // one message count: the overhead is the start-up's
    std::optional<Parameters> theta = solve(samples, free);
    if (!theta || (*theta)[0] < 0 || (*theta)[1] < 0 || (*theta)[2] <= 0)
      continue;
    double error = sumOfSquares(samples, *theta);
    if (error < bestError) {
      best = theta;
      bestError = error;
    }
  }
  assert(best && "the bandwidth alone always fits");

  LevelFit fit;
  fit.latencyUs = (*best)[0];
  fit.perMessageUs = (*best)[1];
  fit.bandwidthGBps = gigabytesPerSecond((*best)[2]);
  for (const ExchangeSample &s : samples)
    fit.worstRelativeError =
        std::max(fit.worstRelativeError,
                 std::fabs(fit.predictUs(s.messages, s.bytesPerRank) /
                               s.microseconds -
                           1));
  return fit;
}

std::vector<int64_t> tamoe::planner::calibrationPeers(const Topology &shape,
                                                      int64_t rank,
                                                      size_t level,
                                                      int64_t messages) {
  assert(messages >= 1 && messages <= ranksAtDistance(shape, int(level)) &&
         "more messages than ranks at that distance");
  int64_t below = shape.ranksPerSubtree(level) / shape.levels[level].fanout;
  int64_t fanout = shape.levels[level].fanout;
  int64_t subtree = rank / shape.ranksPerSubtree(level);
  int64_t child = rank / below % fanout, index = rank % below;
  std::vector<int64_t> peers;
  for (int64_t i = 0; i < messages; ++i) {
    int64_t peerChild = (child + 1 + i / below) % fanout;
    int64_t peerIndex = (index + i) % below;
    peers.push_back((subtree * fanout + peerChild) * below + peerIndex);
  }
  return peers;
}

std::vector<int64_t>
tamoe::planner::calibrationMessageCounts(const Topology &shape, size_t level) {
  int64_t most = ranksAtDistance(shape, int(level));
  // A level of fanout 1 has no rank at its distance: nothing to send to.
  if (most == 0)
    return {};
  std::set<int64_t> counts = {1, std::max<int64_t>(1, (most + 1) / 2), most};
  return std::vector<int64_t>(counts.begin(), counts.end());
}

Expected<Calibration>
tamoe::planner::calibrate(const Topology &shape,
                          ArrayRef<ExchangeSample> samples, StringRef how) {
  Calibration result{shape, {}};
  std::string fits, untimed;
  for (size_t l = 0; l < shape.levels.size(); ++l) {
    topology::Level &out = result.topology.levels[l];
    out.sharing = topology::LinkSharing::PerRank;
    if (ranksAtDistance(shape, int(l)) == 0) {
      // A level of fanout 1 joins no two ranks, so no exchange reaches it
      // alone: whatever crosses its links also crosses a level above, whose
      // fit already holds that cost. The widest, instant link leaves the
      // model's predictions those of the levels that were timed.
      LevelFit free;
      free.bandwidthGBps = topology::kMaxBandwidthGBps;
      out.latencyUs = out.perMessageUs = 0;
      out.upBandwidthGBps = out.downBandwidthGBps = free.bandwidthGBps;
      untimed += (untimed.empty() ? "" : ", ") + out.name;
      result.fits.push_back(free);
      continue;
    }
    Expected<LevelFit> fit = fitLevel(shape, samples, l);
    if (!fit)
      return fit.takeError();
    constexpr double kLeast = topology::kMinBandwidthGBps;
    constexpr double kMost = topology::kMaxBandwidthGBps;
    if (fit->bandwidthGBps < kLeast || fit->bandwidthGBps > kMost)
      return createStringError(
          inconvertibleErrorCode(),
          levelName(shape, l) + ": the fitted bandwidth, " +
              formatFixed(fit->bandwidthGBps, 3) + " GB/s, is outside [" +
              formatNumber(kLeast) + ", " + formatFixed(kMost, 0) +
              "]: times barely grow with the bytes; sweep larger sizes");
    out.latencyUs = fit->latencyUs;
    out.perMessageUs = fit->perMessageUs;
    out.upBandwidthGBps = out.downBandwidthGBps = fit->bandwidthGBps;
    fits += formatv("{0}{1} within {2}%", fits.empty() ? "" : ", ", out.name,
                    formatFixed(100 * fit->worstRelativeError, 0))
                .str();
    result.fits.push_back(*fit);
  }
  result.topology.description =
      (how + "; fit to the samples: " + fits + " (worst relative error)" +
       (untimed.empty() ? ""
                        : "; not timed, fanout 1: " + untimed +
                              " (no latency, widest bandwidth)"))
          .str();
  if (Error error = topology::verify(result.topology))
    return std::move(error);
  return result;
}
