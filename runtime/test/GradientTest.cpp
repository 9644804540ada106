//===- GradientTest.cpp - The backward ops and training steps on one rank -===//
//
// Every gradient of the cpu backend against central finite differences of
// the serial reference's forward ops in f64 (Reference.h), over seeded
// random shapes; the reference's own gradients (which the GPU harness holds
// the cuda backend to) against the same differences; the optimizer steps
// against PyTorch's formulas in double; all_reduce on a world of one; and
// every message of the new entry points that one rank can trigger.
//
// The error of a gradient g (the runtime's, f32) against finite differences
// d (f64) is relative, two ways, both asserted <= 1e-4:
//   normwise:    max_i |g_i - d_i| / s,   s = max(max_i |d_i|, 1e-8)
//   per element: max_i |g_i - d_i| / max(|d_i|, 1e-2 s)
// (the floor 1e-8 makes a gradient that is zero everywhere, such as that of
// a renormalised top-1 weight, an absolute check).
// Where a perturbation changes the top-k choice (the gate is piecewise
// smooth), the coordinate is skipped; skips are counted and must be rare.
//
//===----------------------------------------------------------------------===//

#include "Fixture.h"
#include "Reference.h"
#include "tamoe_rt/tamoe_rt.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <vector>

using reference::Bytes;
using reference::Random;
using runtime_test::peakMiB;
using runtime_test::Runtime;

namespace {

constexpr double kTolerance = 1e-4;
const double kNaN = std::numeric_limits<double>::quiet_NaN();

//===----------------------------------------------------------------------===//
// Finite differences and errors
//===----------------------------------------------------------------------===//

struct Error {
  double normwise = 0, elementwise = 0;
};

/// The relative errors of `got` against `want` (defined above); NaN
/// entries of `want` are coordinates that were skipped.
template <typename G>
Error relativeError(const std::vector<G> &got,
                    const std::vector<double> &want) {
  double scale = 1e-8;
  for (double w : want)
    if (!std::isnan(w))
      scale = std::max(scale, std::fabs(w));
  Error error;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i]))
      continue;
    double difference = std::fabs(double(got[i]) - want[i]);
    error.normwise = std::max(error.normwise, difference / scale);
    error.elementwise =
        std::max(error.elementwise,
                 difference / std::max(std::fabs(want[i]), 1e-2 * scale));
  }
  return error;
}

/// The worst errors per gradient over the whole run, printed at the end.
struct Summary {
  Error runtime, reference;
  int64_t coordinates = 0, skipped = 0;
};
std::map<std::string, Summary> summaries;

class SummaryPrinter : public ::testing::Environment {
public:
  void TearDown() override {
    for (const auto &[name, s] : summaries)
      std::printf("[ finite differences ] %s: runtime %.2e normwise, %.2e per "
                  "element; reference %.2e, %.2e; %lld coordinates, %lld "
                  "skipped\n",
                  name.c_str(), s.runtime.normwise, s.runtime.elementwise,
                  s.reference.normwise, s.reference.elementwise,
                  (long long)s.coordinates, (long long)s.skipped);
  }
};
const ::testing::Environment *const summaryPrinter =
    ::testing::AddGlobalTestEnvironment(new SummaryPrinter);

/// Asserts the runtime's gradient `got` and the reference's `reference`
/// against the finite differences `want`, and records the errors.
template <typename G>
void expectGradient(const std::string &name, const std::vector<G> &got,
                    const std::vector<double> &reference,
                    const std::vector<double> &want) {
  ASSERT_EQ(got.size(), want.size()) << name;
  Error runtime = relativeError(got, want);
  Error ofReference = relativeError(reference, want);
  EXPECT_LE(runtime.normwise, kTolerance) << name;
  EXPECT_LE(runtime.elementwise, kTolerance) << name;
  EXPECT_LE(ofReference.normwise, kTolerance) << name << " (reference)";
  EXPECT_LE(ofReference.elementwise, kTolerance) << name << " (reference)";
  Summary &s = summaries[name];
  s.runtime.normwise = std::max(s.runtime.normwise, runtime.normwise);
  s.runtime.elementwise = std::max(s.runtime.elementwise, runtime.elementwise);
  s.reference.normwise = std::max(s.reference.normwise, ofReference.normwise);
  s.reference.elementwise =
      std::max(s.reference.elementwise, ofReference.elementwise);
  for (double w : want) {
    ++s.coordinates;
    s.skipped += std::isnan(w);
  }
}

/// f at a point, or false where it is not smooth there (a top-k choice
/// changed).
using Function = std::function<bool(const std::vector<double> &, double &)>;

/// Central differences of `f` at `x`, one coordinate at a time, with steps
/// of 1e-5 max(1, |x_i|); NaN where `f` declined.
std::vector<double> finiteDifferences(std::vector<double> x,
                                      const Function &f) {
  std::vector<double> gradient(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double center = x[i], h = 1e-5 * std::max(1.0, std::fabs(center));
    double up = 0, down = 0;
    x[i] = center + h;
    double above = x[i];
    bool ok = f(x, up);
    x[i] = center - h;
    double below = x[i];
    ok = f(x, down) && ok;
    x[i] = center;
    gradient[i] = ok ? (up - down) / (above - below) : kNaN;
  }
  return gradient;
}

/// Finite differences of a function that is smooth everywhere.
std::vector<double>
finiteDifferences(const std::vector<double> &x,
                  const std::function<double(const std::vector<double> &)> &f) {
  return finiteDifferences(x, [&](const std::vector<double> &at, double &y) {
    y = f(at);
    return true;
  });
}

std::vector<double> widen(const std::vector<float> &values) {
  return std::vector<double>(values.begin(), values.end());
}

template <typename A, typename B>
double dot(const std::vector<A> &a, const std::vector<B> &b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i)
    sum += double(a[i]) * double(b[i]);
  return sum;
}

double norm(const std::vector<double> &a) { return std::sqrt(dot(a, a)); }

/// f64 rows as the bytes the byte-moving reference ops take, and back.
Bytes bytesOf(const std::vector<double> &rows) {
  const auto *begin = reinterpret_cast<const unsigned char *>(rows.data());
  return Bytes(begin, begin + rows.size() * sizeof(double));
}
std::vector<double> doublesOf(const Bytes &bytes) {
  std::vector<double> rows(bytes.size() / sizeof(double));
  std::copy(bytes.begin(), bytes.end(),
            reinterpret_cast<unsigned char *>(rows.data()));
  return rows;
}

/// <A x, y> against <x, A^T y> for a linear op A, relative to |A x| |y|
/// (Cauchy-Schwarz's bound of both).
void expectAdjoint(const std::string &name, const std::vector<double> &x,
                   const std::vector<float> &transposeOfY,
                   const std::vector<double> &ax,
                   const std::vector<double> &y) {
  double left = dot(ax, y), right = dot(x, transposeOfY);
  double scale = std::max(norm(ax) * norm(y), 1e-300);
  EXPECT_LE(std::fabs(left - right) / scale, 1e-6)
      << name << ": <A x, y> = " << left << ", <x, A^T y> = " << right;
}

/// Routing of a layer: a gate's ids and weights, and a dispatch's positions,
/// dropless or with a capacity that drops some assignments.
struct Routing {
  std::vector<int32_t> ids, positions;
  std::vector<float> weights;
  int64_t capacity = -1;
  int64_t rows = 0; // dispatched
};

enum class Drop { None, ByPosition, ByProbability };
const char *dropName(Drop drop) {
  return drop == Drop::None         ? "dropless"
         : drop == Drop::ByPosition ? "drop by position"
                                    : "drop by probability";
}

/// Tokens enough for drops: more assignments than experts.
int64_t tokensFor(Random &random, int64_t experts, int64_t k) {
  return random.integer(experts / k + 1, experts / k + 6);
}

Routing route(Random &random, int64_t tokens, int64_t experts, int64_t k,
              Drop drop) {
  reference::Gate gate = reference::gate(random.floats(tokens * experts),
                                         tokens, experts, k, false, true);
  Routing r{gate.ids, {}, gate.weights};
  if (drop != Drop::None) {
    // Half the busiest expert's assignments (it has at least 2).
    reference::Dispatch all =
        reference::dispatch(Bytes(tokens), 1, gate.ids, k, experts);
    r.capacity =
        (*std::max_element(all.counts.begin(), all.counts.end()) + 1) / 2;
  }
  reference::Dispatch dispatch =
      reference::dispatch(Bytes(tokens), 1, gate.ids, k, experts, r.capacity,
                          drop == Drop::ByProbability, gate.weights);
  if (drop != Drop::None) {
    EXPECT_GT(dispatch.dropped, 0) << "no drops to test";
  }
  r.positions = dispatch.positions;
  r.rows = int64_t(dispatch.rows.size());
  return r;
}

//===----------------------------------------------------------------------===//
// gate
//===----------------------------------------------------------------------===//

struct GateCase {
  int64_t tokens, experts, k;
  bool sigmoid, renormalize;
  int64_t groups, kept;
};

std::string describe(const GateCase &c) {
  return std::string(c.sigmoid ? "sigmoid" : "softmax") +
         (c.renormalize ? "+renormalize" : "") +
         " T=" + std::to_string(c.tokens) + " E=" + std::to_string(c.experts) +
         " k=" + std::to_string(c.k) +
         (c.groups ? " groups=" + std::to_string(c.groups) + "/" +
                         std::to_string(c.kept)
                   : "");
}

TEST_F(Runtime, GateGradMatchesFiniteDifferences) {
  Random random(1401);
  std::vector<GateCase> cases;
  for (int round = 0; round < 3; ++round)
    for (int64_t k : {1, 2, 8})
      for (bool sigmoid : {false, true})
        for (bool renormalize : {false, true})
          for (bool grouped : {false, true}) {
            GateCase c{random.integer(2, 6), 0, k, sigmoid, renormalize, 0, 0};
            if (grouped) {
              // Groups of 4; enough kept groups for k.
              c.groups = k == 8 ? 4 : 3;
              c.experts = 4 * c.groups;
              c.kept = k == 8 ? 2 : random.integer(1, 2);
            } else {
              c.experts = random.integer(std::max<int64_t>(k + 1, 2), k + 8);
            }
            cases.push_back(c);
          }
  int64_t coordinates = 0, skipped = 0;
  for (const GateCase &c : cases) {
    SCOPED_TRACE(describe(c));
    int64_t T = c.tokens, E = c.experts, k = c.k;
    std::vector<float> logits = random.floats(T * E);
    std::vector<int32_t> ids(T * k);
    std::vector<float> weights(T * k), probs(T * E);
    ASSERT_EQ(tamoe_rt_gate(ctx, logits.data(), T, E, k,
                            c.sigmoid ? TAMOE_RT_SCORE_SIGMOID
                                      : TAMOE_RT_SCORE_SOFTMAX,
                            c.renormalize, c.groups, c.kept, ids.data(),
                            weights.data(), probs.data()),
              TAMOE_RT_SUCCESS)
        << error();
    std::vector<double> x = widen(logits);
    reference::GateOf<double> base =
        reference::gate(x, T, E, k, c.sigmoid, c.renormalize, c.groups, c.kept);
    std::vector<float> dWeights = random.floats(T * k, -1, 1);
    std::vector<float> dProbs = random.floats(T * E, -1, 1);
    // The gradients of the weights, of the probabilities, and of both.
    for (int variant = 0; variant < 3; ++variant) {
      bool withWeights = variant != 1, withProbs = variant != 0;
      std::vector<float> dLogits(T * E, NAN);
      ASSERT_EQ(tamoe_rt_gate_grad(
                    ctx, probs.data(), ids.data(), T, E, k,
                    c.sigmoid ? TAMOE_RT_SCORE_SIGMOID : TAMOE_RT_SCORE_SOFTMAX,
                    c.renormalize, withWeights ? dWeights.data() : nullptr,
                    withProbs ? dProbs.data() : nullptr, dLogits.data()),
                TAMOE_RT_SUCCESS)
          << error();
      std::vector<double> dW = withWeights ? widen(dWeights)
                                           : std::vector<double>(),
                          dP =
                              withProbs ? widen(dProbs) : std::vector<double>();
      std::vector<double> want =
          finiteDifferences(x, [&](const std::vector<double> &at, double &y) {
            reference::GateOf<double> g = reference::gate(
                at, T, E, k, c.sigmoid, c.renormalize, c.groups, c.kept);
            if (g.ids != base.ids)
              return false;
            y = (withWeights ? dot(dW, g.weights) : 0) +
                (withProbs ? dot(dP, g.probs) : 0);
            return true;
          });
      // A token whose f64 choice differs from the runtime's (a tie within
      // f32 rounding) has another gradient: skip it.
      for (int64_t t = 0; t < T; ++t)
        if (!std::equal(ids.begin() + t * k, ids.begin() + (t + 1) * k,
                        base.ids.begin() + t * k))
          std::fill(want.begin() + t * E, want.begin() + (t + 1) * E, kNaN);
      std::vector<double> ofReference = reference::gateGrad(
          base.probs, base.ids, E, k, c.sigmoid, c.renormalize, dW, dP);
      expectGradient("gate_grad", dLogits, ofReference, want);
      for (double w : want) {
        ++coordinates;
        skipped += std::isnan(w);
      }
    }
  }
  // Ties within a step of 1e-5 are rare among random logits.
  EXPECT_LE(skipped * 100, coordinates)
      << skipped << " of " << coordinates << " coordinates skipped";
}

//===----------------------------------------------------------------------===//
// combine, and dispatch's gradient (combine without weights)
//===----------------------------------------------------------------------===//

TEST_F(Runtime, CombineGradMatchesFiniteDifferences) {
  Random random(1402);
  for (int round = 0; round < 3; ++round)
    for (int64_t k : {1, 2, 8})
      for (Drop drop : {Drop::None, Drop::ByPosition, Drop::ByProbability})
        for (bool weighted : {true, false}) {
          int64_t E = random.integer(k + 1, k + 9), T = tokensFor(random, E, k);
          int64_t H = random.integer(1, 5);
          SCOPED_TRACE(testing::Message()
                       << "T=" << T << " E=" << E << " k=" << k << " H=" << H
                       << " " << dropName(drop)
                       << (weighted ? "" : " without weights"));
          Routing r = route(random, T, E, k, drop);
          // Rows past the dispatched ones: nobody names them.
          int64_t rows = r.rows + 2;
          std::vector<float> outputs = random.floats(rows * H);
          std::vector<float> dCombined = random.floats(T * H, -1, 1);
          std::vector<float> weights =
              weighted ? r.weights : std::vector<float>();
          std::vector<float> dOutputs(rows * H, NAN), dWeights(T * k, NAN);
          ASSERT_EQ(tamoe_rt_combine_grad(
                        ctx, TAMOE_RT_F32, outputs.data(), rows, H,
                        r.positions.data(), weighted ? weights.data() : nullptr,
                        T, k, dCombined.data(), dOutputs.data(),
                        weighted ? dWeights.data() : nullptr),
                    TAMOE_RT_SUCCESS)
              << error();
          std::vector<double> outputs64 = widen(outputs),
                              weights64 = widen(weights),
                              dCombined64 = widen(dCombined);
          reference::CombineGradOf<double> ofReference = reference::combineGrad(
              outputs64, rows, H, r.positions, weights64, k, dCombined64);
          expectGradient(
              "combine_grad d_expert_outputs", dOutputs, ofReference.dOutputs,
              finiteDifferences(outputs64, [&](const std::vector<double> &at) {
                return dot(dCombined64, reference::combine(at, H, r.positions,
                                                           weights64, k));
              }));
          for (int64_t i = r.rows * H; i < rows * H; ++i)
            EXPECT_EQ(dOutputs[i], 0.0f) << "a row nobody names";
          if (!weighted)
            continue;
          expectGradient(
              "combine_grad d_weights", dWeights, ofReference.dWeights,
              finiteDifferences(weights64, [&](const std::vector<double> &at) {
                return dot(dCombined64, reference::combine(outputs64, H,
                                                           r.positions, at, k));
              }));
          for (int64_t a = 0; a < T * k; ++a)
            if (r.positions[a] < 0) {
              EXPECT_EQ(dWeights[a], 0.0f) << "dropped assignment " << a;
            }
        }
}

TEST_F(Runtime, DispatchGradIsCombineWithoutWeights) {
  Random random(1403);
  for (int round = 0; round < 3; ++round)
    for (int64_t k : {1, 2, 8})
      for (Drop drop : {Drop::None, Drop::ByPosition, Drop::ByProbability}) {
        int64_t E = random.integer(k + 1, k + 9), T = tokensFor(random, E, k);
        int64_t H = random.integer(1, 5);
        SCOPED_TRACE(testing::Message() << "T=" << T << " E=" << E << " k=" << k
                                        << " H=" << H << " " << dropName(drop));
        Routing r = route(random, T, E, k, drop);
        // dispatch moves rows of f64 as bytes; its gradient takes f32 rows.
        auto dispatch = [&](const std::vector<double> &tokens) {
          return doublesOf(
              reference::dispatch(bytesOf(tokens), H * int64_t(sizeof(double)),
                                  r.ids, k, E, r.capacity,
                                  drop == Drop::ByProbability, r.weights)
                  .rows);
        };
        std::vector<double> tokens = widen(random.floats(T * H));
        std::vector<float> dDispatched = random.floats(r.rows * H, -1, 1);
        std::vector<float> dTokens(T * H, NAN);
        ASSERT_EQ(tamoe_rt_combine(ctx, TAMOE_RT_F32, dDispatched.data(),
                                   r.rows, H, r.positions.data(), nullptr, T, k,
                                   dTokens.data()),
                  TAMOE_RT_SUCCESS)
            << error();
        std::vector<double> y = widen(dDispatched);
        expectGradient("dispatch (combine without weights)", dTokens,
                       widen(reference::combine(dDispatched, H, r.positions,
                                                std::vector<float>(), k)),
                       finiteDifferences(tokens, [&](const auto &at) {
                         return dot(y, dispatch(at));
                       }));
        expectAdjoint("dispatch", tokens, dTokens, dispatch(tokens), y);
      }
}

//===----------------------------------------------------------------------===//
// grouped_matmul
//===----------------------------------------------------------------------===//

TEST_F(Runtime, GroupedMatmulGradMatchesFiniteDifferences) {
  Random random(1404);
  for (int round = 0; round < 30; ++round) {
    // Several experts per rank (chunks [peers, experts]), empty chunks, a
    // tail of rows past the counts.
    int64_t peers = random.integer(1, 3), E = random.integer(1, 3);
    int64_t H = random.integer(1, 6), O = random.integer(1, 5);
    std::vector<int32_t> counts(peers * E);
    int64_t total = 0;
    for (int32_t &count : counts)
      total += count = int32_t(random.integer(0, 4));
    int64_t capacity = total + random.integer(0, 3);
    SCOPED_TRACE(testing::Message() << "counts [" << peers << ", " << E
                                    << "] with " << total << " rows, capacity "
                                    << capacity << ", H=" << H << " O=" << O);
    std::vector<float> rows = random.floats(capacity * H);
    std::vector<float> weights = random.floats(E * H * O);
    std::vector<float> dResult = random.floats(capacity * O, -1, 1);
    std::vector<float> dRows(capacity * H, NAN), dWeights(E * H * O, NAN);
    ASSERT_EQ(tamoe_rt_grouped_matmul_grad(
                  ctx, TAMOE_RT_F32, rows.data(), capacity, H, counts.data(),
                  peers * E, E, weights.data(), O, dResult.data(), dRows.data(),
                  dWeights.data()),
              TAMOE_RT_SUCCESS)
        << error();
    std::vector<double> rows64 = widen(rows), weights64 = widen(weights),
                        dResult64 = widen(dResult);
    reference::GroupedMatmulGradOf<double> ofReference =
        reference::groupedMatmulGrad(rows64, H, counts, E, weights64, O,
                                     dResult64);
    expectGradient(
        "grouped_matmul_grad d_rows", dRows, ofReference.dRows,
        finiteDifferences(rows64, [&](const std::vector<double> &at) {
          return dot(dResult64,
                     reference::groupedMatmul(at, H, counts, E, weights64, O));
        }));
    expectGradient(
        "grouped_matmul_grad d_weights", dWeights, ofReference.dWeights,
        finiteDifferences(weights64, [&](const std::vector<double> &at) {
          return dot(dResult64,
                     reference::groupedMatmul(rows64, H, counts, E, at, O));
        }));
    for (int64_t i = total * H; i < capacity * H; ++i)
      EXPECT_EQ(dRows[i], 0.0f) << "a row past the counts";
    // Either gradient alone is the same.
    std::vector<float> alone(capacity * H, NAN);
    ASSERT_EQ(tamoe_rt_grouped_matmul_grad(ctx, TAMOE_RT_F32, nullptr, capacity,
                                           H, counts.data(), peers * E, E,
                                           weights.data(), O, dResult.data(),
                                           alone.data(), nullptr),
              TAMOE_RT_SUCCESS)
        << error();
    EXPECT_EQ(alone, dRows);
    alone.assign(E * H * O, NAN);
    ASSERT_EQ(
        tamoe_rt_grouped_matmul_grad(ctx, TAMOE_RT_F32, rows.data(), capacity,
                                     H, counts.data(), peers * E, E, nullptr, O,
                                     dResult.data(), nullptr, alone.data()),
        TAMOE_RT_SUCCESS)
        << error();
    EXPECT_EQ(alone, dWeights);
  }
}

//===----------------------------------------------------------------------===//
// aux_loss
//===----------------------------------------------------------------------===//

TEST_F(Runtime, AuxLossGradMatchesFiniteDifferences) {
  Random random(1405);
  for (int64_t E : {9, 16, 24})
    for (int64_t k : {1, 2, 8})
      for (Drop drop : {Drop::None, Drop::ByPosition, Drop::ByProbability})
        for (bool topology : {false, true}) {
          int64_t T = tokensFor(random, E, k);
          SCOPED_TRACE(testing::Message()
                       << "T=" << T << " E=" << E << " k=" << k << " "
                       << dropName(drop) << (topology ? " topology" : ""));
          Routing r = route(random, T, E, k, drop);
          // A few unassigned (negative) ids, which nobody counts.
          std::vector<int32_t> ids = r.ids;
          ids[random.integer(0, T * k - 1)] = -1;
          std::vector<float> probs = random.floats(T * E, 0, 1);
          std::vector<float> expertWeights =
              topology ? random.floats(E, 0.5f, 2.0f) : std::vector<float>();
          float dLoss = random.uniform(0.5f, 2.0f);
          const int32_t *positions =
              drop == Drop::None ? nullptr : r.positions.data();
          std::vector<float> dProbs(T * E, NAN);
          ASSERT_EQ(
              tamoe_rt_aux_loss_grad(ctx, ids.data(), positions, T, E, k,
                                     topology ? expertWeights.data() : nullptr,
                                     &dLoss, dProbs.data()),
              TAMOE_RT_SUCCESS)
              << error();
          // The reference counts what its ids say: the dropped ones masked.
          std::vector<int32_t> counted = ids;
          for (int64_t a = 0; a < T * k; ++a)
            if (positions && positions[a] < 0)
              counted[a] = -1;
          std::vector<double> weights64 = widen(expertWeights);
          expectGradient(
              "aux_loss_grad", dProbs,
              reference::auxLossGrad(counted, T, E, k, weights64, dLoss),
              finiteDifferences(
                  widen(probs), [&](const std::vector<double> &at) {
                    return dLoss *
                           reference::auxLoss(at, counted, E, k, weights64);
                  }));
        }
}

TEST_F(Runtime, UniformPlanGradientIsTheSwitchGradient) {
  // A uniform plan's topology weights are all 1: the topology loss is the
  // switch loss, and so are their gradients, to the bit.
  Random random(1406);
  int64_t T = 37, E = 16, k = 2;
  Routing r = route(random, T, E, k, Drop::ByPosition);
  std::vector<float> ones(E, 1.0f), uniform(T * E), none(T * E);
  float dLoss = 0.37f;
  ASSERT_EQ(tamoe_rt_aux_loss_grad(ctx, r.ids.data(), r.positions.data(), T, E,
                                   k, ones.data(), &dLoss, uniform.data()),
            TAMOE_RT_SUCCESS)
      << error();
  ASSERT_EQ(tamoe_rt_aux_loss_grad(ctx, r.ids.data(), r.positions.data(), T, E,
                                   k, nullptr, &dLoss, none.data()),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(std::memcmp(uniform.data(), none.data(), none.size() * 4), 0);
  EXPECT_GT(*std::max_element(none.begin(), none.end()), 0.0f);
}

//===----------------------------------------------------------------------===//
// dedup_pack and dedup_expand: linear, so adjoints as well as differences
//===----------------------------------------------------------------------===//

TEST_F(Runtime, DedupPackGradMatchesFiniteDifferences) {
  Random random(1407);
  for (int round = 0; round < 3; ++round)
    for (int64_t k : {1, 2, 8})
      for (Drop drop : {Drop::None, Drop::ByPosition, Drop::ByProbability}) {
        int64_t nodes = random.integer(1, 4), perNode = random.integer(2, 4);
        // Enough experts for k distinct ones.
        while (nodes * perNode < k + 1)
          ++perNode;
        int64_t E = nodes * perNode, T = tokensFor(random, E, k);
        int64_t H = random.integer(1, 4);
        SCOPED_TRACE(testing::Message()
                     << "T=" << T << " k=" << k << " nodes=" << nodes
                     << " experts per node=" << perNode << " H=" << H << " "
                     << dropName(drop));
        Routing r = route(random, T, E, k, drop);
        int64_t rowBytes = H * int64_t(sizeof(double));
        auto pack = [&](const std::vector<double> &tokens) {
          return doublesOf(reference::dedupPack(bytesOf(tokens), rowBytes,
                                                r.ids, r.positions, k, perNode,
                                                nodes)
                               .unique);
        };
        std::vector<double> tokens = widen(random.floats(T * H));
        int64_t uniqueRows = int64_t(pack(tokens).size()) / H;
        // Rows past the pack's are not read.
        int64_t capacity = uniqueRows + random.integer(0, 2);
        std::vector<float> dUnique = random.floats(capacity * H, -1, 1);
        std::vector<float> dTokens(T * H, NAN);
        ASSERT_EQ(tamoe_rt_dedup_pack_grad(ctx, TAMOE_RT_F32, dUnique.data(),
                                           capacity, H, r.ids.data(),
                                           r.positions.data(), T, k, perNode,
                                           nodes, dTokens.data()),
                  TAMOE_RT_SUCCESS)
            << error();
        std::vector<double> y(dUnique.begin(),
                              dUnique.begin() + uniqueRows * H);
        expectGradient("dedup_pack_grad", dTokens,
                       reference::dedupPackGrad(y, H, r.ids, r.positions, k,
                                                perNode, nodes),
                       finiteDifferences(tokens, [&](const auto &at) {
                         return dot(y, pack(at));
                       }));
        expectAdjoint("dedup_pack", tokens, dTokens, pack(tokens), y);
      }
}

TEST_F(Runtime, DedupExpandGradMatchesFiniteDifferences) {
  Random random(1408);
  for (int round = 0; round < 30; ++round) {
    int64_t nodes = random.integer(1, 4), perNode = random.integer(1, 3);
    int64_t perRank = random.integer(1, 3), H = random.integer(1, 4);
    int64_t experts = perNode * perRank;
    int64_t k = std::vector<int64_t>{1, 2, 8}[round % 3];
    // The relay of node 0 receives rows routed to experts of node 0,
    // distinct within a row, -1 padded (as dedup_pack makes them).
    std::vector<int32_t> recvCounts(nodes);
    int64_t received = 0;
    for (int32_t &count : recvCounts)
      received += count = int32_t(random.integer(0, 4));
    int64_t uniqueCapacity = received + random.integer(0, 2);
    std::vector<int32_t> routes(uniqueCapacity * k, -1);
    for (int64_t row = 0; row < uniqueCapacity; ++row) {
      std::vector<int32_t> pool(experts);
      std::iota(pool.begin(), pool.end(), 0);
      std::shuffle(pool.begin(), pool.end(), random.engine);
      int64_t listed = random.integer(1, std::min(k, experts));
      std::copy(pool.begin(), pool.begin() + listed, routes.begin() + row * k);
    }
    SCOPED_TRACE(testing::Message()
                 << "nodes=" << nodes << " ranks per node=" << perNode
                 << " experts per rank=" << perRank << " k=" << k
                 << " received " << received << " of " << uniqueCapacity
                 << " rows, H=" << H);
    int64_t rowBytes = H * int64_t(sizeof(double));
    std::vector<int32_t> receivedRoutes(routes.begin(),
                                        routes.begin() + received * k);
    auto expand = [&](const std::vector<double> &unique) {
      Bytes rows = bytesOf(unique);
      rows.resize(received * rowBytes);
      return doublesOf(reference::dedupExpand(rows, receivedRoutes, rowBytes, k,
                                              recvCounts, perNode, perRank)
                           .expanded);
    };
    std::vector<double> unique = widen(random.floats(uniqueCapacity * H));
    int64_t expandedRows = int64_t(expand(unique).size()) / H;
    int64_t expandedCapacity = expandedRows + random.integer(0, 2);
    std::vector<float> dExpanded = random.floats(expandedCapacity * H, -1, 1);
    std::vector<float> dUnique(uniqueCapacity * H, NAN);
    ASSERT_EQ(tamoe_rt_dedup_expand_grad(
                  ctx, TAMOE_RT_F32, dExpanded.data(), expandedCapacity, H,
                  routes.data(), uniqueCapacity, k, recvCounts.data(), nodes,
                  perNode, perRank, dUnique.data()),
              TAMOE_RT_SUCCESS)
        << error();
    std::vector<double> y(dExpanded.begin(),
                          dExpanded.begin() + expandedRows * H);
    expectGradient(
        "dedup_expand_grad", dUnique,
        reference::dedupExpandGrad(y, H, receivedRoutes, k, recvCounts, perNode,
                                   perRank, uniqueCapacity),
        finiteDifferences(unique,
                          [&](const auto &at) { return dot(y, expand(at)); }));
    expectAdjoint("dedup_expand", unique, dUnique, expand(unique), y);
    for (int64_t i = received * H; i < uniqueCapacity * H; ++i)
      EXPECT_EQ(dUnique[i], 0.0f) << "a row past the received ones";
  }
}

//===----------------------------------------------------------------------===//
// Optimizer steps against PyTorch's formulas
//===----------------------------------------------------------------------===//

/// max |got - want| / max |want|.
double worstRelative(const std::vector<float> &got,
                     const std::vector<double> &want) {
  return relativeError(got, want).normwise;
}

TEST_F(Runtime, SgdMatchesPyTorch) {
  Random random(1409);
  const int64_t n = 37;
  for (float momentum : {0.0f, 0.9f})
    for (float weightDecay : {0.0f, 0.01f})
      for (bool withVelocity : {false, true}) {
        if (momentum != 0 && !withVelocity)
          continue;
        SCOPED_TRACE(testing::Message()
                     << "momentum " << momentum << ", weight decay "
                     << weightDecay << (withVelocity ? ", velocity" : ""));
        float lr = 0.05f;
        std::vector<float> params = random.floats(n), velocity(n, 0.0f);
        std::vector<double> want = widen(params), buffer;
        for (int step = 1; step <= 5; ++step) {
          std::vector<float> grads = random.floats(n);
          ASSERT_EQ(tamoe_rt_sgd(ctx, params.data(), grads.data(),
                                 withVelocity ? velocity.data() : nullptr, n,
                                 lr, momentum, weightDecay),
                    TAMOE_RT_SUCCESS)
              << error();
          reference::sgd(want, widen(grads), buffer, lr, momentum, weightDecay);
          EXPECT_LE(worstRelative(params, want), 1e-6) << "step " << step;
          if (momentum != 0) {
            EXPECT_LE(worstRelative(velocity, buffer), 1e-6) << "step " << step;
          }
        }
      }
}

TEST_F(Runtime, AdamMatchesPyTorch) {
  Random random(1410);
  const int64_t n = 37;
  struct Case {
    float lr, beta1, beta2, eps, weightDecay;
  };
  for (Case c : {Case{1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f},
                 Case{1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f},
                 Case{5e-2f, 0.5f, 0.9f, 1e-3f, 0.01f},
                 Case{1e-2f, 0.0f, 0.0f, 1e-6f, 0.0f}}) {
    SCOPED_TRACE(testing::Message()
                 << "lr " << c.lr << ", betas " << c.beta1 << ", " << c.beta2
                 << ", eps " << c.eps << ", weight decay " << c.weightDecay);
    std::vector<float> params = random.floats(n), m(n, 0.0f), v(n, 0.0f);
    std::vector<double> want = widen(params), wantM(n, 0.0), wantV(n, 0.0);
    // The first steps, where the bias corrections matter most.
    for (int64_t step = 1; step <= 6; ++step) {
      std::vector<float> grads = random.floats(n);
      ASSERT_EQ(tamoe_rt_adam(ctx, params.data(), grads.data(), m.data(),
                              v.data(), n, step, c.lr, c.beta1, c.beta2, c.eps,
                              c.weightDecay),
                TAMOE_RT_SUCCESS)
          << error();
      reference::adamW(want, widen(grads), wantM, wantV, step, c.lr, c.beta1,
                       c.beta2, c.eps, c.weightDecay);
      EXPECT_LE(worstRelative(params, want), 1e-6) << "step " << step;
      EXPECT_LE(worstRelative(m, wantM), 1e-6) << "step " << step;
      EXPECT_LE(worstRelative(v, wantV), 1e-6) << "step " << step;
    }
  }
}

//===----------------------------------------------------------------------===//
// all_reduce on a world of one
//===----------------------------------------------------------------------===//

TEST_F(Runtime, AllReduceOnOneRank) {
  Random random(1411);
  std::vector<float> data = random.floats(100), original = data;
  for (tamoe_rt_group_t group :
       {TAMOE_RT_GROUP_WORLD, TAMOE_RT_GROUP_NODE, TAMOE_RT_GROUP_PEERS})
    for (int32_t average : {0, 1}) {
      ASSERT_EQ(tamoe_rt_all_reduce(ctx, group, data.data(), 100, average),
                TAMOE_RT_SUCCESS)
          << error();
      // The sum over one rank, divided by 1.
      EXPECT_EQ(data, original);
    }
  EXPECT_EQ(tamoe_rt_all_reduce(ctx, TAMOE_RT_GROUP_WORLD, nullptr, 0, 1),
            TAMOE_RT_SUCCESS)
      << error();
  // Nothing of it is traffic.
  tamoe_rt_traffic_t traffic;
  tamoe_rt_traffic(ctx, &traffic);
  EXPECT_EQ(traffic.intra_node_bytes + traffic.inter_node_bytes, 0);
}

//===----------------------------------------------------------------------===//
// Errors
//===----------------------------------------------------------------------===//

/// Checks that `call` fails with `code` and "<function>: <message>".
class Expect {
public:
  Expect(tamoe_rt_context_t *ctx, std::string function)
      : ctx(ctx), function(std::move(function)) {}
  void operator()(tamoe_rt_status_t got, const std::string &message,
                  tamoe_rt_status_t code = TAMOE_RT_ERROR_INVALID_ARGUMENT) {
    EXPECT_EQ(got, code) << message << ": " << tamoe_rt_status_name(got);
    EXPECT_EQ(tamoe_rt_last_error(ctx), function + ": " + message);
  }

private:
  tamoe_rt_context_t *ctx;
  std::string function;
};

TEST_F(Runtime, GateGradErrors) {
  std::vector<float> probs(4 * 8, 0.125f), dWeights(4 * 2), dProbs(4 * 8),
      dLogits(4 * 8);
  std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7};
  auto grad = [&](intptr_t tokens, intptr_t experts, intptr_t k, int score,
                  const float *dW, const float *dP, float *out,
                  const int32_t *expertIds) {
    return tamoe_rt_gate_grad(ctx, probs.data(), expertIds, tokens, experts, k,
                              tamoe_rt_score_t(score), 1, dW, dP, out);
  };
  auto good = [&](intptr_t tokens, intptr_t experts, intptr_t k, int score) {
    return grad(tokens, experts, k, score, dWeights.data(), dProbs.data(),
                dLogits.data(), ids.data());
  };
  Expect expect(ctx, "tamoe_rt_gate_grad");
  expect(good(-1, 8, 2, 0), "tokens must be >= 0, got -1");
  expect(good(4, 0, 1, 0), "experts must be >= 1, got 0");
  expect(good(4, 8, 9, 0), "k must be in [1, experts], got 9 for 8 experts");
  expect(good(4, 8, 2, 3), "score = 3 is not a tamoe_rt_score_t");
  expect(good(INTPTR_MAX / 8, 8, 2, 0),
         "tokens * experts * 4 = " + std::to_string(INTPTR_MAX / 8) +
             " * 8 * 4 overflows");
  expect(grad(4, 8, 2, 0, nullptr, nullptr, dLogits.data(), ids.data()),
         "d_weights and d_probs are both null: no gradient to take");
  expect(grad(4, 8, 2, 0, dWeights.data(), nullptr, dLogits.data(), nullptr),
         "expert_ids is null");
  expect(grad(4, 8, 2, 0, dWeights.data(), dProbs.data(), nullptr, ids.data()),
         "d_logits is null");
  expect(grad(4, 8, 2, 0, dWeights.data(), dProbs.data(), dProbs.data(),
              ids.data()),
         "d_logits and d_probs overlap");
  expect(grad(4, 8, 2, 0, dWeights.data(), nullptr, probs.data(), ids.data()),
         "d_logits and probs overlap");
  expect(
      grad(4, 8, 2, 0, dLogits.data() + 4, nullptr, dLogits.data(), ids.data()),
      "d_logits and d_weights overlap");
  ids[5] = 8;
  expect(good(4, 8, 2, 1), "expert_ids[2, 1] = 8 is out of range [0, 8)");
  // Without d_weights the ids are not read.
  EXPECT_EQ(grad(4, 8, 2, 1, nullptr, dProbs.data(), dLogits.data(), nullptr),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(grad(0, 8, 2, 0, nullptr, dProbs.data(), nullptr, nullptr),
            TAMOE_RT_SUCCESS)
      << error();
}

TEST_F(Runtime, CombineGradErrors) {
  std::vector<float> outputs(6 * 4), weights(4 * 2, 1.0f), dCombined(4 * 4),
      dOutputs(6 * 4), dWeights(4 * 2);
  std::vector<int32_t> positions = {0, 1, 2, -1, 3, 4, 5, -1};
  auto grad = [&](const float *out, intptr_t rows, const float *w,
                  const float *dC, float *dO, float *dW) {
    return tamoe_rt_combine_grad(ctx, TAMOE_RT_F32, out, rows, 4,
                                 positions.data(), w, 4, 2, dC, dO, dW);
  };
  Expect expect(ctx, "tamoe_rt_combine_grad");
  expect(grad(outputs.data(), -1, weights.data(), dCombined.data(),
              dOutputs.data(), dWeights.data()),
         "rows must be >= 0, got -1");
  expect(grad(outputs.data(), 6, weights.data(), dCombined.data(), nullptr,
              nullptr),
         "d_expert_outputs and d_weights are both null: nothing to compute");
  expect(grad(outputs.data(), 6, nullptr, dCombined.data(), dOutputs.data(),
              dWeights.data()),
         "d_weights needs the forward call's weights (an unweighted sum has "
         "no weights to differentiate), but weights is null");
  expect(grad(nullptr, 6, weights.data(), dCombined.data(), dOutputs.data(),
              dWeights.data()),
         "expert_outputs is null");
  expect(grad(outputs.data(), 6, weights.data(), nullptr, dOutputs.data(),
              dWeights.data()),
         "d_combined is null");
  expect(grad(outputs.data(), 6, weights.data(), dOutputs.data() + 4,
              dOutputs.data(), nullptr),
         "d_expert_outputs and d_combined overlap");
  expect(grad(outputs.data(), 6, weights.data(), dCombined.data(), nullptr,
              weights.data()),
         "d_weights and weights overlap");
  expect(grad(outputs.data(), 6, weights.data(), dCombined.data(),
              dOutputs.data(), dOutputs.data() + 2),
         "d_expert_outputs and d_weights overlap");
  expect(grad(outputs.data(), 5, weights.data(), dCombined.data(),
              dOutputs.data(), dWeights.data()),
         "positions[3, 0] = 5 is past the 5 rows of expert_outputs");
  // Without d_weights neither the outputs nor the weights are read.
  EXPECT_EQ(
      grad(nullptr, 6, nullptr, dCombined.data(), dOutputs.data(), nullptr),
      TAMOE_RT_SUCCESS)
      << error();
}

TEST_F(Runtime, GroupedMatmulGradErrors) {
  std::vector<int32_t> counts = {3, 0, 2, 4, 0, 1};
  std::vector<float> rows(13 * 6), weights(2 * 6 * 5), dResult(13 * 5),
      dRows(13 * 6), dWeights(2 * 6 * 5);
  auto grad = [&](intptr_t capacity, intptr_t numCounts, intptr_t experts,
                  const float *in, const float *w, float *dR, float *dW) {
    return tamoe_rt_grouped_matmul_grad(ctx, TAMOE_RT_F32, in, capacity, 6,
                                        counts.data(), numCounts, experts, w, 5,
                                        dResult.data(), dR, dW);
  };
  Expect expect(ctx, "tamoe_rt_grouped_matmul_grad");
  expect(grad(13, 5, 2, rows.data(), weights.data(), dRows.data(),
              dWeights.data()),
         "num_counts (5) must be a multiple of experts (2)");
  expect(grad(13, 6, 0, rows.data(), weights.data(), dRows.data(),
              dWeights.data()),
         "experts must be >= 1, got 0");
  expect(grad(13, 6, 2, rows.data(), weights.data(), nullptr, nullptr),
         "d_rows and d_weights are both null: nothing to compute");
  expect(grad(13, 6, 2, rows.data(), nullptr, dRows.data(), nullptr),
         "weights is null");
  expect(grad(13, 6, 2, nullptr, weights.data(), nullptr, dWeights.data()),
         "rows is null");
  expect(grad(13, 6, 2, rows.data(), weights.data(), rows.data(), nullptr),
         "d_rows and rows overlap");
  expect(
      grad(13, 6, 2, rows.data(), weights.data(), nullptr, dResult.data() + 5),
      "d_weights and d_result overlap");
  expect(
      grad(9, 6, 2, rows.data(), weights.data(), dRows.data(), dWeights.data()),
      "counts sum to 10 rows but rows_capacity is 9");
  counts[2] = -2;
  expect(grad(13, 6, 2, rows.data(), weights.data(), dRows.data(),
              dWeights.data()),
         "counts[2] = -2 is negative");
}

TEST_F(Runtime, AuxLossGradErrors) {
  std::vector<int32_t> ids = {0, 1, 2, 3, 0, 1, 2, 3};
  std::vector<float> dProbs(4 * 4);
  float dLoss = 1;
  auto grad = [&](intptr_t k, const float *d, float *out) {
    return tamoe_rt_aux_loss_grad(ctx, ids.data(), nullptr, 4, 4, k, nullptr, d,
                                  out);
  };
  Expect expect(ctx, "tamoe_rt_aux_loss_grad");
  expect(grad(5, &dLoss, dProbs.data()),
         "k must be in [1, experts], got 5 for 4 experts");
  expect(grad(2, nullptr, dProbs.data()), "d_loss is null");
  expect(grad(2, &dLoss, nullptr), "d_probs is null");
  expect(grad(2, dProbs.data() + 15, dProbs.data()),
         "d_probs and d_loss overlap");
  ids[1] = 4;
  expect(grad(2, &dLoss, dProbs.data()),
         "expert_ids[0, 1] = 4 is out of range [0, 4) (negative ids are not "
         "counted)");
  // No tokens: nothing to write.
  EXPECT_EQ(tamoe_rt_aux_loss_grad(ctx, nullptr, nullptr, 0, 4, 2, nullptr,
                                   &dLoss, nullptr),
            TAMOE_RT_SUCCESS)
      << error();
}

TEST_F(Runtime, DedupGradErrors) {
  // dedup_pack_grad: 4 tokens, top-2 over 2 nodes of 4 experts.
  std::vector<int32_t> ids = {0, 4, 1, 2, 5, 6, 3, 7};
  std::vector<int32_t> positions = {0, 1, 2, -1, 3, 4, 5, 6};
  std::vector<float> dUnique(8 * 3), dTokens(4 * 3);
  auto pack = [&](intptr_t capacity, intptr_t perNode, intptr_t nodes,
                  float *out) {
    return tamoe_rt_dedup_pack_grad(ctx, TAMOE_RT_F32, dUnique.data(), capacity,
                                    3, ids.data(), positions.data(), 4, 2,
                                    perNode, nodes, out);
  };
  Expect expectPack(ctx, "tamoe_rt_dedup_pack_grad");
  // Token 0 and 3 to both nodes, 1 and 2 to one: 6 rows.
  expectPack(pack(5, 4, 2, dTokens.data()),
             "expert_ids and positions make 6 unique rows but "
             "unique_capacity is 5");
  expectPack(pack(8, 2, 2, dTokens.data()),
             "expert_ids[0, 1] = 4 is out of range [0, 4) (2 experts on each "
             "of 2 nodes)");
  expectPack(pack(8, intptr_t(1) << 31, 2, dTokens.data()),
             "experts_per_node * nodes = 4294967296 exceeds the int32 expert "
             "ids");
  expectPack(pack(8, 4, 0, dTokens.data()), "nodes must be >= 1, got 0");
  expectPack(pack(8, 4, 2, dUnique.data() + 12),
             "d_tokens and d_unique overlap");
  expectPack(pack(8, 4, 2, nullptr), "d_tokens is null");
  EXPECT_EQ(pack(6, 4, 2, dTokens.data()), TAMOE_RT_SUCCESS) << error();

  // dedup_expand_grad: 3 rows from 2 nodes to 2 ranks of 2 experts.
  std::vector<int32_t> routes = {0, 3, 1, -1, 2, 0};
  std::vector<int32_t> recvCounts = {2, 1};
  std::vector<float> dExpanded(5 * 3), dOut(3 * 3);
  auto expand = [&](intptr_t expandedCapacity, intptr_t uniqueCapacity,
                    float *out) {
    return tamoe_rt_dedup_expand_grad(
        ctx, TAMOE_RT_F32, dExpanded.data(), expandedCapacity, 3, routes.data(),
        uniqueCapacity, 2, recvCounts.data(), 2, 2, 2, out);
  };
  Expect expectExpand(ctx, "tamoe_rt_dedup_expand_grad");
  expectExpand(expand(4, 3, dOut.data()),
               "routes make 5 expanded rows but expanded_capacity is 4");
  expectExpand(expand(5, 2, dOut.data()),
               "recv_counts sum to 3 rows but unique_capacity is 2");
  expectExpand(expand(5, 3, dExpanded.data() + 6),
               "d_unique and d_expanded overlap");
  expectExpand(expand(-1, 3, dOut.data()),
               "expanded_capacity must be >= 0, got -1");
  routes[2] = -2;
  expectExpand(expand(5, 3, dOut.data()),
               "routes[1, 0] = -2 is neither an expert id in [0, 8) nor -1");
  routes[2] = 8; // 2 nodes x 2 ranks x 2 experts
  expectExpand(expand(5, 3, dOut.data()),
               "routes[1, 0] = 8 is neither an expert id in [0, 8) nor -1");
  routes[2] = 1;
  recvCounts[1] = -1;
  expectExpand(expand(5, 3, dOut.data()), "recv_counts[1] = -1 is negative");
}

/// The gradients' scratch grows with their buffers: dedup_pack_grad's not
/// with nodes x tokens, an empty call's not with the experts (no buffer
/// backs them), and dedup_expand_grad refuses more experts than int32 ids
/// name. Each of these once allocated gigabytes, or ended the process when
/// the allocation failed.
TEST_F(Runtime, GradientScratchGrowsWithTheBuffers) {
  long before = peakMiB();
  // A million nodes of one expert; token t to experts t and t + 1, each
  // unique row's gradient its row index.
  int64_t nodes = int64_t(1) << 20, tokens = int64_t(1) << 16, k = 2;
  std::vector<int32_t> ids(tokens * k), positions(tokens * k, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    ids[t * k] = int32_t(t);
    ids[t * k + 1] = int32_t(t + 1);
  }
  std::vector<float> dUnique(tokens * k), dTokens(tokens, -1.0f);
  std::iota(dUnique.begin(), dUnique.end(), 0.0f);
  ASSERT_EQ(tamoe_rt_dedup_pack_grad(
                ctx, TAMOE_RT_F32, dUnique.data(), tokens * k, 1, ids.data(),
                positions.data(), tokens, k, 1, nodes, dTokens.data()),
            TAMOE_RT_SUCCESS)
      << error();
  // Node 0 has row 0 (token 0); node n >= 1 rows 2n - 1 (token n - 1) and
  // 2n (token n): token t's rows are 2t and 2t + 1.
  EXPECT_EQ(dTokens[0], 0.0f + 1.0f);
  EXPECT_EQ(dTokens[7], 14.0f + 15.0f);

  float dLoss = 1, dProbs = -9;
  EXPECT_EQ(tamoe_rt_gate_grad(ctx, nullptr, nullptr, 0, INT32_MAX, 1,
                               TAMOE_RT_SCORE_SOFTMAX, 0, nullptr, &dProbs,
                               &dProbs + 1),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(tamoe_rt_aux_loss_grad(ctx, nullptr, nullptr, 0, INT32_MAX, 1,
                                   nullptr, &dLoss, nullptr),
            TAMOE_RT_SUCCESS)
      << error();
  int32_t route = -1, recvCounts = 0;
  float dExpanded = 0, dOut = -9;
  EXPECT_EQ(tamoe_rt_dedup_expand_grad(ctx, TAMOE_RT_F32, &dExpanded, 1, 1,
                                       &route, 1, 1, &recvCounts, 1, 1,
                                       intptr_t(1) << 30, &dOut),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(dOut, 0.0f);
  EXPECT_LT(peakMiB() - before, 256) << "MiB of scratch";

  Expect expectExpand(ctx, "tamoe_rt_dedup_expand_grad");
  expectExpand(tamoe_rt_dedup_expand_grad(ctx, TAMOE_RT_F32, &dExpanded, 1, 1,
                                          &route, 1, 1, &recvCounts, 1, 2,
                                          intptr_t(1) << 40, &dOut),
               "ranks_per_node * nodes * experts_per_rank = 2199023255552 "
               "exceeds the int32 expert ids");
}

TEST_F(Runtime, AllReduceErrors) {
  std::vector<float> data(8);
  Expect expect(ctx, "tamoe_rt_all_reduce");
  expect(tamoe_rt_all_reduce(ctx, tamoe_rt_group_t(5), data.data(), 8, 0),
         "group = 5 is not a tamoe_rt_group_t");
  // The collective's verdict names the failing rank.
  expect(tamoe_rt_all_reduce(ctx, TAMOE_RT_GROUP_WORLD, data.data(), -1, 0),
         "rank 0: n must be >= 0, got -1");
  expect(tamoe_rt_all_reduce(ctx, TAMOE_RT_GROUP_NODE, nullptr, 8, 0),
         "rank 0: data is null");
  expect(tamoe_rt_all_reduce(ctx, TAMOE_RT_GROUP_PEERS, data.data(),
                             INTPTR_MAX / 2, 0),
         "rank 0: n * 4 = " + std::to_string(INTPTR_MAX / 2) +
             " * 4 overflows");
}

TEST_F(Runtime, OptimizerErrors) {
  std::vector<float> params(8), grads(8), velocity(8), m(8), v(8);
  auto sgd = [&](float lr, float momentum, float weightDecay, float *p,
                 const float *g, float *vel) {
    return tamoe_rt_sgd(ctx, p, g, vel, 8, lr, momentum, weightDecay);
  };
  Expect expectSgd(ctx, "tamoe_rt_sgd");
  expectSgd(sgd(-1, 0, 0, params.data(), grads.data(), nullptr),
            "lr must be finite and >= 0, got -1");
  expectSgd(sgd(0.1f, NAN, 0, params.data(), grads.data(), velocity.data()),
            "momentum must be finite and >= 0, got nan");
  expectSgd(sgd(0.1f, 0, INFINITY, params.data(), grads.data(), nullptr),
            "weight_decay must be finite and >= 0, got inf");
  expectSgd(sgd(0.1f, 0.9f, 0, params.data(), grads.data(), nullptr),
            "velocity is null, but momentum = 0.9 needs it");
  expectSgd(sgd(0.1f, 0, 0, nullptr, grads.data(), nullptr), "params is null");
  expectSgd(sgd(0.1f, 0, 0, params.data(), nullptr, nullptr), "grads is null");
  expectSgd(sgd(0.1f, 0, 0, params.data(), params.data(), nullptr),
            "params and grads overlap");
  expectSgd(sgd(0.1f, 0.9f, 0, params.data(), grads.data(), grads.data()),
            "grads and velocity overlap");
  expectSgd(
      tamoe_rt_sgd(ctx, params.data(), grads.data(), nullptr, -2, 0.1f, 0, 0),
      "n must be >= 0, got -2");

  auto adam = [&](int64_t step, float beta1, float beta2, float eps,
                  float *first, float *second) {
    return tamoe_rt_adam(ctx, params.data(), grads.data(), first, second, 8,
                         step, 0.01f, beta1, beta2, eps, 0);
  };
  Expect expectAdam(ctx, "tamoe_rt_adam");
  expectAdam(adam(0, 0.9f, 0.999f, 1e-8f, m.data(), v.data()),
             "step must be >= 1 (the updates so far, this one included), got "
             "0");
  expectAdam(adam(1, 1.0f, 0.999f, 1e-8f, m.data(), v.data()),
             "beta1 must be in [0, 1), got 1");
  expectAdam(adam(1, 0.9f, -0.5f, 1e-8f, m.data(), v.data()),
             "beta2 must be in [0, 1), got -0.5");
  expectAdam(adam(1, 0.9f, 0.999f, -1e-8f, m.data(), v.data()),
             "eps must be positive and finite, got -1e-08");
  expectAdam(adam(1, 0.9f, 0.999f, 0.0f, m.data(), v.data()),
             "eps must be positive and finite, got 0");
  expectAdam(adam(1, 0.9f, 0.999f, 1e-8f, nullptr, v.data()), "m is null");
  expectAdam(adam(1, 0.9f, 0.999f, 1e-8f, m.data(), m.data()),
             "m and v overlap");
  expectAdam(adam(1, 0.9f, 0.999f, 1e-8f, grads.data(), v.data()),
             "grads and m overlap");
  // No parameters: nothing to do, nothing to read.
  EXPECT_EQ(tamoe_rt_adam(ctx, nullptr, nullptr, nullptr, nullptr, 0, 1, 0.01f,
                          0.9f, 0.999f, 1e-8f, 0),
            TAMOE_RT_SUCCESS)
      << error();
}

} // namespace
