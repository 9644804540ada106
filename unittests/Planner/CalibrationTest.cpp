//===- CalibrationTest.cpp - Fitting a topology to measured exchanges ------===//

#include "tamoe/Planner/Calibration.h"
#include "tamoe/Planner/CostModel.h"

#include "gtest/gtest.h"

#include <cmath>
#include <map>
#include <random>
#include <set>

using namespace tamoe::planner;
using tamoe::topology::Level;

namespace {

/// The message of a failed result ("" when it succeeded).
template <typename T> std::string failure(llvm::Expected<T> result) {
  if (result)
    return "";
  return llvm::toString(result.takeError());
}

/// 2 nodes x 4 ranks, names and fanouts only (what calibrate starts from).
Topology twoByFour() {
  Topology shape;
  shape.name = "measured";
  shape.levels = {Level{"node", 4}, Level{"cluster", 2}};
  return shape;
}

/// A sweep like tamoe-topo calibrate's, timed by the model of `truth`
/// itself, each time scaled by 1 + noise * (uniform in [-1, 1]).
std::vector<ExchangeSample> sweep(const Topology &truth, double noise = 0) {
  std::mt19937_64 random(7);
  std::uniform_real_distribution<double> jitter(-1, 1);
  std::vector<ExchangeSample> samples;
  for (size_t level = 0; level < truth.levels.size(); ++level) {
    const Level &l = truth.levels[level];
    for (int64_t messages : calibrationMessageCounts(truth, level))
      for (double bytes = 1024; bytes <= 16 << 20; bytes *= 4) {
        double us = l.latencyUs + messages * l.perMessageUs +
                    bytes / (l.upBandwidthGBps * 1e3);
        samples.push_back(
            {level, messages, bytes, us * (1 + noise * jitter(random))});
      }
  }
  return samples;
}

Topology truthTree(double perMessageUs) {
  Topology truth = twoByFour();
  truth.levels[0].latencyUs = 20;
  truth.levels[0].perMessageUs = perMessageUs;
  truth.levels[0].upBandwidthGBps = truth.levels[0].downBandwidthGBps = 8;
  truth.levels[1].latencyUs = 60;
  truth.levels[1].perMessageUs = 3 * perMessageUs;
  truth.levels[1].upBandwidthGBps = truth.levels[1].downBandwidthGBps = 1.5;
  return truth;
}

TEST(CalibrationTest, RecoversExactParameters) {
  Topology truth = truthTree(2);
  for (size_t level = 0; level < 2; ++level) {
    LevelFit fit = llvm::cantFail(fitLevel(twoByFour(), sweep(truth), level));
    const Level &l = truth.levels[level];
    EXPECT_NEAR(fit.latencyUs, l.latencyUs, 1e-6 * l.latencyUs) << level;
    EXPECT_NEAR(fit.perMessageUs, l.perMessageUs, 1e-6 * l.latencyUs)
        << level;
    EXPECT_NEAR(fit.bandwidthGBps, l.upBandwidthGBps, 1e-6) << level;
    EXPECT_LT(fit.worstRelativeError, 1e-9) << level;
  }
}

TEST(CalibrationTest, NoisyTimesStayClose) {
  // 10% noise on every time: the parameters stay within 25%, and the
  // worst relative error reported is about the noise.
  Topology truth = truthTree(2);
  for (size_t level = 0; level < 2; ++level) {
    LevelFit fit =
        llvm::cantFail(fitLevel(twoByFour(), sweep(truth, 0.1), level));
    const Level &l = truth.levels[level];
    EXPECT_NEAR(fit.bandwidthGBps, l.upBandwidthGBps,
                0.25 * l.upBandwidthGBps);
    EXPECT_NEAR(fit.latencyUs + fit.perMessageUs,
                l.latencyUs + l.perMessageUs, 0.25 * l.latencyUs);
    EXPECT_GT(fit.worstRelativeError, 0.02);
    EXPECT_LT(fit.worstRelativeError, 0.2);
  }
}

TEST(CalibrationTest, ParametersStayNonNegative) {
  // Times that fall with the message count would fit a negative overhead;
  // the fit keeps it at 0 and puts the rest in the start-up.
  std::vector<ExchangeSample> samples;
  for (int64_t messages : {1, 2, 3})
    for (double bytes : {1024.0, 65536.0, 4194304.0})
      samples.push_back(
          {0, messages, bytes, 100 - 10 * messages + bytes / 2e3});
  LevelFit fit = llvm::cantFail(fitLevel(twoByFour(), samples, 0));
  EXPECT_EQ(fit.perMessageUs, 0);
  EXPECT_GT(fit.latencyUs, 0);
  EXPECT_NEAR(fit.bandwidthGBps, 2, 0.1);
}

TEST(CalibrationTest, OneMessageCountPutsOverheadInStartup) {
  std::vector<ExchangeSample> samples;
  for (double bytes : {1024.0, 1048576.0, 16777216.0})
    samples.push_back({0, 1, bytes, 50 + bytes / 4e3});
  LevelFit fit = llvm::cantFail(fitLevel(twoByFour(), samples, 0));
  EXPECT_EQ(fit.perMessageUs, 0);
  EXPECT_NEAR(fit.latencyUs, 50, 1e-6);
  EXPECT_NEAR(fit.bandwidthGBps, 4, 1e-9);
}

TEST(CalibrationTest, CalibrateWritesAVerifiedTopology) {
  Topology truth = truthTree(0.5);
  Calibration calibration = llvm::cantFail(
      calibrate(twoByFour(), sweep(truth), "8 ranks on a test machine"));
  const Topology &fitted = calibration.topology;
  ASSERT_EQ(fitted.levels.size(), 2u);
  ASSERT_EQ(calibration.fits.size(), 2u);
  for (size_t level = 0; level < 2; ++level) {
    EXPECT_EQ(fitted.levels[level].name, truth.levels[level].name);
    EXPECT_EQ(fitted.levels[level].fanout, truth.levels[level].fanout);
    EXPECT_NEAR(fitted.levels[level].upBandwidthGBps,
                truth.levels[level].upBandwidthGBps, 1e-6);
    EXPECT_EQ(fitted.levels[level].downBandwidthGBps,
              fitted.levels[level].upBandwidthGBps);
    // The fits reported beside the file are the file's parameters.
    EXPECT_EQ(calibration.fits[level].latencyUs, fitted.levels[level].latencyUs);
    EXPECT_EQ(calibration.fits[level].bandwidthGBps,
              fitted.levels[level].upBandwidthGBps);
  }
  EXPECT_EQ(fitted.description,
            "8 ranks on a test machine; fit to the samples: node within 0%, "
            "cluster within 0% (worst relative error)");
}

TEST(CalibrationTest, Errors) {
  Topology shape = twoByFour();
  auto fails = [&](std::vector<ExchangeSample> samples, size_t level,
                   const std::string &message) {
    EXPECT_EQ(failure(fitLevel(shape, samples, level)), message);
  };
  fails({{0, 1, 1024, NAN}, {0, 1, 4096, 10}}, 0,
        "level 0 (node): sample 0: expected a finite time > 0 us, got nan");
  fails({{0, 1, 1024, 10}, {0, 1, 4096, 0}}, 0,
        "level 0 (node): sample 1: expected a finite time > 0 us, got 0");
  fails({{0, 1, -1, 10}, {0, 1, 4096, 10}}, 0,
        "level 0 (node): sample 0: expected a finite size >= 0 bytes, got -1");
  fails({{0, 1, 1024, 10}, {0, 0, 4096, 10}}, 0,
        "level 0 (node): sample 1: expected >= 1 messages, got 0");
  fails({{0, 1, 1024, 10}, {0, 2, 1024, 11}}, 0,
        "level 0 (node): 1 sizes measured: at least two are needed to tell "
        "the latency from the bandwidth");
  fails({{0, 1, 1024, 10}}, 1,
        "level 1 (cluster): 0 sizes measured: at least two are needed to "
        "tell the latency from the bandwidth");
  fails({{1, 1, 1024, 30}, {1, 1, 1048576, 20}}, 1,
        "level 1 (cluster): times do not grow with the bytes sent (30.0 us "
        "at 1024 bytes, 20.0 us at 1048576 bytes): no bandwidth fits; sweep "
        "larger sizes");

  // Growing by a nanosecond over 16 MiB: a bandwidth beyond any link's.
  std::vector<ExchangeSample> flat;
  for (size_t level = 0; level < 2; ++level)
    for (double bytes : {1024.0, 16777216.0})
      flat.push_back({level, 1, bytes, 10 + bytes * 1e-10});
  EXPECT_EQ(failure(calibrate(shape, flat, "test")),
            "level 0 (node): the fitted bandwidth, 10000000.000 GB/s, is outside "
            "[0.001, 100000]: times barely grow with the bytes; sweep larger "
            "sizes");
}

TEST(CalibrationTest, PeersAreAtTheLevelAndBalanced) {
  Topology shape = twoByFour();
  for (size_t level = 0; level < 2; ++level)
    for (int64_t messages : calibrationMessageCounts(shape, level)) {
      std::map<int64_t, int64_t> received;
      for (int64_t rank = 0; rank < 8; ++rank) {
        std::vector<int64_t> peers =
            calibrationPeers(shape, rank, level, messages);
        ASSERT_EQ(int64_t(peers.size()), messages);
        EXPECT_EQ(std::set<int64_t>(peers.begin(), peers.end()).size(),
                  peers.size())
            << "rank " << rank << " repeats a peer";
        for (int64_t peer : peers) {
          EXPECT_EQ(shape.lowestCommonLevel(rank, peer), int(level))
              << rank << " -> " << peer;
          ++received[peer];
        }
      }
      // Every rank receives as many messages as it sends.
      ASSERT_EQ(received.size(), 8u);
      for (auto [rank, count] : received)
        EXPECT_EQ(count, messages) << "rank " << rank;
    }
}

TEST(CalibrationTest, MessageCounts) {
  Topology shape = twoByFour();
  EXPECT_EQ(calibrationMessageCounts(shape, 0),
            (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(calibrationMessageCounts(shape, 1),
            (std::vector<int64_t>{1, 2, 4}));
  Topology pairs;
  pairs.levels = {Level{"node", 2}, Level{"cluster", 2}};
  EXPECT_EQ(calibrationMessageCounts(pairs, 0), (std::vector<int64_t>{1}));
  // A level of fanout 1 has no rank at its distance: no message to time (a
  // count of 0 divided the sweep's bytes by zero).
  Topology single;
  single.levels = {Level{"node", 1}, Level{"cluster", 4}};
  EXPECT_EQ(calibrationMessageCounts(single, 0), std::vector<int64_t>{});
  EXPECT_EQ(calibrationMessageCounts(single, 1),
            (std::vector<int64_t>{1, 2, 3}));
}

TEST(CalibrationTest, FanoutOneLevelIsNotTimed) {
  // One rank per node: only the cluster level can be timed; the node's
  // level must add nothing to what the cluster's fit predicts.
  Topology truth;
  truth.name = "measured";
  truth.levels = {Level{"node", 1}, Level{"cluster", 4}};
  truth.levels[1].latencyUs = 30;
  truth.levels[1].perMessageUs = 2;
  truth.levels[1].upBandwidthGBps = truth.levels[1].downBandwidthGBps = 3;
  Topology shape = truth;
  shape.levels[1].latencyUs = shape.levels[1].perMessageUs = 0;
  std::vector<ExchangeSample> samples = sweep(truth);
  for (const ExchangeSample &s : samples)
    EXPECT_EQ(s.level, 1u);
  Calibration calibration =
      llvm::cantFail(calibrate(shape, samples, "4 ranks, one per node"));
  const Level &node = calibration.topology.levels[0];
  EXPECT_EQ(node.latencyUs, 0);
  EXPECT_EQ(node.perMessageUs, 0);
  EXPECT_EQ(node.upBandwidthGBps, tamoe::topology::kMaxBandwidthGBps);
  EXPECT_EQ(node.downBandwidthGBps, tamoe::topology::kMaxBandwidthGBps);
  EXPECT_EQ(calibration.fits[0].bandwidthGBps,
            tamoe::topology::kMaxBandwidthGBps);
  EXPECT_NEAR(calibration.topology.levels[1].latencyUs, 30, 1e-6);
  EXPECT_NEAR(calibration.topology.levels[1].upBandwidthGBps, 3, 1e-6);
  EXPECT_EQ(calibration.topology.description,
            "4 ranks, one per node; fit to the samples: cluster within 0% "
            "(worst relative error); not timed, fanout 1: node (no latency, "
            "widest bandwidth)");
}

} // namespace
