//===- tamoe-reference.cpp - Serial reference for the example programs ----===//
//
// Recomputes, in one process and with plain loops, what the examples of
// examples/ compute on P ranks, and compares it with the files the ranks
// wrote (tamoeOutput*, $TAMOE_RT_OUTPUT_DIR). The inputs are regenerated
// from the seeds the examples use (tamoe_rt_program_random_f32):
//
//   layer l (from 0), rank r: tokens 1000 + r (layer 0 only), router
//   1 + 10000 l, first expert weights 2000 + r + 10000 l, second expert
//   weights 3000 + r + 10000 l.
//
// Each layer: logits = x router, softmax, top-k (ties to the lower id; with
// --max-nodes, among the experts of the token's best nodes, as the gate's
// groups keep them),
// renormalised; each rank keeps at most `capacity` assignments per expert
// (its earliest tokens); expert e (on rank e / n, n experts per rank) computes
// relu(x W1[e]) W2[e]; the output sums the kept assignments' weighted
// results. With more than one layer each adds its output to its input
// (residual). The loss is the one the tamoe pipeline leaves: the topology
// loss E sum_e w_e f_e P_e over the dispatched assignments, with the weights
// of the plan for --topology and --policy (all 1 without a topology: the
// switch loss). Outputs per rank: out0 the result, out1 the summed losses,
// out2 the rows received per source and local expert in the last layer,
// out3 the dropped assignments of the last layer.
//
// With --backward (examples/moe_layer_grad.mlir, one layer), also the
// gradients for the result's gradient (seed 4000 + r) and the loss's (1):
// out4 of the tokens, out5 of the router (this rank's part), out6 and out7
// of this rank's expert weights (every rank's rows included).
//
//===----------------------------------------------------------------------===//

#include "tamoe/Planner/Policies.h"
#include "tamoe/Support/Version.h"
#include "tamoe_rt/program.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

using namespace llvm;

static cl::OptionCategory category("tamoe-reference options");
static cl::opt<std::string>
    outputs("outputs", cl::Required,
            cl::desc("Directory of the ranks' files "
                     "($TAMOE_RT_OUTPUT_DIR of the run)"),
            cl::cat(category));
static cl::opt<int> ranks("ranks", cl::init(8),
                          cl::desc("Ranks (default: those of --topology, "
                                   "else 8)"),
                          cl::cat(category));
static cl::opt<int>
    ranksPerNode("ranks-per-node", cl::init(4),
                 cl::desc("Ranks per node, for the report (default: the "
                          "first level's fanout of --topology, else 4)"),
                 cl::cat(category));
static cl::opt<int> tokens("tokens", cl::init(16),
                           cl::desc("Tokens per rank (default 16)"),
                           cl::cat(category));
static cl::opt<int> hidden("hidden", cl::init(32),
                           cl::desc("Hidden size (default 32)"),
                           cl::cat(category));
static cl::opt<int> ffn("ffn", cl::init(64),
                        cl::desc("Expert FFN size (default 64)"),
                        cl::cat(category));
static cl::opt<int> experts("experts", cl::init(16),
                            cl::desc("Experts (default 16)"),
                            cl::cat(category));
static cl::opt<int> topK("top-k", cl::init(2),
                         cl::desc("Experts per token (default 2)"),
                         cl::cat(category));
static cl::opt<int>
    capacity("capacity", cl::init(-1),
             cl::desc("Rows per expert per rank (default -1: none)"),
             cl::cat(category));
static cl::opt<int> maxNodes(
    "max-nodes", cl::init(0),
    cl::desc("Nodes a token may reach: its gate keeps the best M nodes' "
             "experts (groups = the nodes, as --tamoe-pipeline="
             "\"policy=node-limited max-nodes=M\" writes it; default 0: "
             "every node)"),
    cl::cat(category));
static cl::opt<int> layers("layers", cl::init(1),
                           cl::desc("MoE layers (default 1)"),
                           cl::cat(category));
static cl::opt<std::string> topologyFile(
    "topology",
    cl::desc("Cluster the program was planned for (JSON): the "
             "loss weights of its plan, its ranks and ranks per node"),
    cl::cat(category));
static cl::opt<std::string>
    policyName("policy", cl::init("tamoe"),
               cl::desc("Policy of the plan (default tamoe)"),
               cl::cat(category));
static cl::opt<bool> backward("backward",
                              cl::desc("Check the gradients too (out4..out7)"),
                              cl::cat(category));
static cl::opt<tamoe_rt_dtype_t> rowType(
    "dtype", cl::init(TAMOE_RT_F32),
    cl::desc("Element type of the program's rows (tokens, expert weights "
             "and activations); the reference rounds where the runtime does"),
    cl::values(clEnumValN(TAMOE_RT_F32, "f32", "f32 (default)"),
               clEnumValN(TAMOE_RT_BF16, "bf16", "bfloat16"),
               clEnumValN(TAMOE_RT_F16, "f16", "IEEE half")),
    cl::cat(category));
enum class Activation { Relu, SwiGlu };
static cl::opt<Activation> activation(
    "activation", cl::init(Activation::Relu),
    cl::desc("The experts' hidden activation"),
    cl::values(clEnumValN(Activation::Relu, "relu",
                          "relu(x W1) W2 (default, examples/moe_layer.mlir)"),
               clEnumValN(Activation::SwiGlu, "swiglu",
                          "silu(x W1) * (x W3) W2, W3 from seeds 5000 + rank "
                          "(examples/moe_layer_swiglu.mlir)")),
    cl::cat(category));
static cl::opt<double> tolerance("tolerance", cl::init(1e-4),
                                 cl::desc("Largest accepted |difference|, "
                                          "relative to the largest |value| "
                                          "(default 1e-4)"),
                                 cl::cat(category));

namespace {
using Matrix = std::vector<float>;

/// A value of the rows' type (--dtype), as the runtime rounds an f32 result
/// into a row.
float rounded(double value) {
  float result = float(value);
  tamoe_rt_program_round_f32(&result, 1, rowType);
  return result;
}

/// A row input: uniform numbers, rounded to the rows' type.
Matrix random(size_t size, uint64_t seed) {
  Matrix values(size);
  tamoe_rt_program_random_f32(values.data(), intptr_t(size), seed);
  tamoe_rt_program_round_f32(values.data(), intptr_t(size), rowType);
  return values;
}

/// What every rank computes in one layer.
struct LayerResult {
  std::vector<Matrix> outputs;      // [rank] S x H
  std::vector<float> losses;        // [rank]
  std::vector<int64_t> dropped;     // [rank]
  std::vector<int64_t> assignments; // [source][expert] kept rows
  /// With --backward, per rank: the gradients of the tokens (S x H), of
  /// the router (H x E) and of the rank's experts (n x H x F, n x F x H).
  std::vector<std::vector<double>> dTokens, dRouter, dW1, dW2;
};

/// Loss weights w[r][e] of the plan (1 without a topology).
std::vector<std::vector<double>> lossWeights;

/// The gradients through one kept assignment (token t of rank r to expert
/// e, its j-th choice, with combine weight `weight`): into the expert's
/// weights, the token (through the expert) and the combine weight.
void expertBackward(LayerResult &result, int r, int t, int e, int j,
                    double weight, const Matrix &x, const Matrix &dOut,
                    const std::vector<double> &inner,
                    const std::vector<double> &expertOut, const float *first,
                    const float *second, std::vector<double> &dWeights) {
  int H = hidden, F = ffn, perRank = experts / ranks;
  int owner = e / perRank, local = e % perRank;
  double *dFirst = &result.dW1[owner][size_t(local) * H * F];
  double *dSecond = &result.dW2[owner][size_t(local) * F * H];
  // out[t] += weight * relu(x W1) W2.
  std::vector<double> dInner(F, 0.0);
  for (int h = 0; h < H; ++h) {
    double dy = weight * dOut[t * H + h];
    dWeights[j] += dOut[t * H + h] * expertOut[h];
    for (int f = 0; f < F; ++f) {
      dSecond[f * H + h] += inner[f] * dy;
      dInner[f] += second[f * H + h] * dy;
    }
  }
  for (int f = 0; f < F; ++f) {
    if (inner[f] <= 0)
      continue; // relu
    for (int h = 0; h < H; ++h) {
      dFirst[h * F + f] += double(x[t * H + h]) * dInner[f];
      result.dTokens[r][t * H + h] += first[h * F + f] * dInner[f];
    }
  }
}

/// The gradients through the gate of rank r: the combine weights'
/// (renormalised top-k scores) and the loss's (gradient 1, the counts held
/// constant) reach the logits through the softmax, then the tokens and the
/// router.
void routerBackward(LayerResult &result, int r, const Matrix &x,
                    const Matrix &router,
                    const std::vector<std::vector<double>> &scores,
                    const std::vector<std::vector<int>> &chosenIds,
                    const std::vector<std::vector<double>> &dWeights,
                    const std::vector<double> &counts) {
  int S = tokens, H = hidden, E = experts, k = topK;
  for (int t = 0; t < S; ++t) {
    const std::vector<double> &p = scores[t];
    std::vector<double> dScores(E);
    for (int e = 0; e < E; ++e)
      dScores[e] = E * lossWeights[r][e] * counts[e] / (double(k) * S * S);
    // w_j = p_j / Z over the chosen: dp_m += (dw_m - sum_j dw_j w_j) / Z.
    double z = 0, weighted = 0;
    for (int j = 0; j < k; ++j)
      z += p[chosenIds[t][j]];
    for (int j = 0; j < k; ++j)
      weighted += dWeights[t][j] * p[chosenIds[t][j]] / z;
    for (int j = 0; j < k; ++j)
      dScores[chosenIds[t][j]] += (dWeights[t][j] - weighted) / z;
    double dot = 0;
    for (int e = 0; e < E; ++e)
      dot += p[e] * dScores[e];
    for (int e = 0; e < E; ++e) {
      double dLogit = p[e] * (dScores[e] - dot);
      for (int h = 0; h < H; ++h) {
        result.dRouter[r][h * E + e] += double(x[t * H + h]) * dLogit;
        result.dTokens[r][t * H + h] += router[h * E + e] * dLogit;
      }
    }
  }
}

LayerResult runLayer(int layer, const std::vector<Matrix> &inputs) {
  int S = tokens, H = hidden, F = ffn, E = experts, k = topK;
  int perRank = E / ranks;
  uint64_t offset = 10000ull * layer;
  Matrix router = random(size_t(H) * E, 1 + offset);
  std::vector<Matrix> w1(ranks), w2(ranks), w3(ranks);
  for (int r = 0; r < ranks; ++r) {
    w1[r] = random(size_t(perRank) * H * F, 2000 + r + offset);
    w2[r] = random(size_t(perRank) * F * H, 3000 + r + offset);
    if (activation == Activation::SwiGlu)
      w3[r] = random(size_t(perRank) * H * F, 5000 + r + offset);
  }
  LayerResult result;
  result.outputs.assign(ranks, Matrix(size_t(S) * H, 0.0f));
  result.losses.assign(ranks, 0.0f);
  result.dropped.assign(ranks, 0);
  result.assignments.assign(size_t(ranks) * E, 0);
  if (backward) {
    result.dTokens.assign(ranks, std::vector<double>(size_t(S) * H, 0.0));
    result.dRouter.assign(ranks, std::vector<double>(size_t(H) * E, 0.0));
    result.dW1.assign(ranks, std::vector<double>(size_t(perRank) * H * F, 0.0));
    result.dW2.assign(ranks, std::vector<double>(size_t(perRank) * F * H, 0.0));
  }
  for (int r = 0; r < ranks; ++r) {
    const Matrix &x = inputs[r];
    std::vector<int> kept(E, 0);
    std::vector<double> probSums(E, 0.0), counts(E, 0.0);
    // The output's gradient (as the example draws it) and, per token, the
    // softmax scores and the weights' gradients for the router's backward.
    Matrix dOut = backward ? random(size_t(S) * H, 4000 + r) : Matrix();
    std::vector<std::vector<double>> scores(S);
    std::vector<std::vector<int>> chosenIds(S);
    std::vector<std::vector<double>> dWeights(S);
    for (int t = 0; t < S; ++t) {
      std::vector<double> probs(E);
      for (int e = 0; e < E; ++e) {
        double sum = 0;
        for (int h = 0; h < H; ++h)
          sum += double(x[t * H + h]) * router[h * E + e];
        probs[e] = sum;
      }
      double top = *std::max_element(probs.begin(), probs.end());
      double norm = 0;
      for (double &p : probs)
        norm += p = std::exp(p - top);
      for (int e = 0; e < E; ++e)
        probSums[e] += probs[e] /= norm;
      std::vector<int> order(E);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int a, int b) { return probs[a] > probs[b]; });
      if (maxNodes > 0) {
        // A node scores its two best experts' sum (its best when it has
        // one); the best maxNodes nodes stay, the lower node first on ties.
        int nodes = ranks / ranksPerNode, perNode = E / nodes;
        std::vector<double> nodeScores(nodes);
        for (int n = 0; n < nodes; ++n) {
          std::vector<double> own(probs.begin() + n * perNode,
                                  probs.begin() + (n + 1) * perNode);
          std::sort(own.rbegin(), own.rend());
          nodeScores[n] = perNode > 1 ? own[0] + own[1] : own[0];
        }
        std::vector<int> byScore(nodes);
        std::iota(byScore.begin(), byScore.end(), 0);
        std::stable_sort(byScore.begin(), byScore.end(), [&](int a, int b) {
          return nodeScores[a] > nodeScores[b];
        });
        std::vector<bool> nodeKept(nodes, false);
        for (int n = 0; n < std::min(int(maxNodes), nodes); ++n)
          nodeKept[byScore[n]] = true;
        std::stable_partition(order.begin(), order.end(),
                              [&](int e) { return nodeKept[e / perNode]; });
      }
      double chosen = 0;
      for (int j = 0; j < k; ++j)
        chosen += probs[order[j]];
      scores[t] = probs;
      chosenIds[t].assign(order.begin(), order.begin() + k);
      dWeights[t].assign(k, 0.0);
      for (int j = 0; j < k; ++j) {
        int e = order[j];
        // Tokens come in order, so the first `capacity` of an expert stay.
        if (capacity >= 0 && kept[e] >= capacity) {
          ++result.dropped[r];
          continue;
        }
        counts[e] += 1;
        ++kept[e];
        ++result.assignments[size_t(r) * E + e];
        const float *first = &w1[e / perRank][size_t(e % perRank) * H * F];
        const float *second = &w2[e / perRank][size_t(e % perRank) * F * H];
        std::vector<double> inner(F, 0.0);
        for (int f = 0; f < F; ++f) {
          for (int h = 0; h < H; ++h)
            inner[f] += double(x[t * H + h]) * first[h * F + f];
          double gate = rounded(inner[f]);
          if (activation == Activation::Relu) {
            inner[f] = std::max(gate, 0.0);
            continue;
          }
          // silu(x W1) * (x W3), each op's result rounded to the rows' type.
          const float *third = &w3[e / perRank][size_t(e % perRank) * H * F];
          double up = 0;
          for (int h = 0; h < H; ++h)
            up += double(x[t * H + h]) * third[h * F + f];
          double silu = rounded(gate / (1 + std::exp(-gate)));
          inner[f] = rounded(silu * double(rounded(up)));
        }
        double weight = probs[e] / chosen;
        std::vector<double> expertOut(H, 0.0);
        for (int h = 0; h < H; ++h) {
          double sum = 0;
          for (int f = 0; f < F; ++f)
            sum += inner[f] * second[f * H + h];
          expertOut[h] = sum = rounded(sum);
          result.outputs[r][t * H + h] += float(weight * sum);
        }
        if (backward)
          expertBackward(result, r, t, e, j, weight, x, dOut, inner, expertOut,
                         first, second, dWeights[t]);
      }
    }
    for (float &value : result.outputs[r])
      value = rounded(value);
    // f_e counts the dispatched assignments, out of k S.
    double loss = 0;
    for (int e = 0; e < E; ++e)
      loss += lossWeights[r][e] * (counts[e] / (double(k) * S)) *
              (probSums[e] / S);
    result.losses[r] = float(E * loss);
    if (backward)
      routerBackward(result, r, x, router, scores, chosenIds, dWeights, counts);
  }
  return result;
}

/// Reads out<index>.rank<r>.bin with `count` elements of T.
template <typename T>
Expected<std::vector<T>> readOutput(int index, int rank, size_t count) {
  std::string path = outputs + "/out" + std::to_string(index) + ".rank" +
                     std::to_string(rank) + ".bin";
  ErrorOr<std::unique_ptr<MemoryBuffer>> file = MemoryBuffer::getFile(path);
  if (!file)
    return createStringError(file.getError(),
                             "cannot read " + path + ": " +
                                 file.getError().message());
  if ((*file)->getBufferSize() != count * sizeof(T))
    return createStringError(
        std::errc::invalid_argument,
        "%s: expected %zu bytes, got %zu", path.c_str(), count * sizeof(T),
        (*file)->getBufferSize());
  std::vector<T> values(count);
  std::memcpy(values.data(), (*file)->getBufferStart(), count * sizeof(T));
  return values;
}

/// Prints the realised dispatch pattern: the share of each rank's rows that
/// went to each rank, and how much crossed nodes.
void printPattern(const std::vector<std::vector<int32_t>> &received) {
  int perRank = experts / ranks;
  // received[q][source * perRank + l]: rows rank q got from `source`.
  outs() << "realised dispatch pattern (rows from rank i to rank j):\n     ";
  for (int j = 0; j < ranks; ++j)
    outs() << format("%5d", j);
  outs() << "\n";
  int64_t intra = 0, total = 0;
  for (int i = 0; i < ranks; ++i) {
    outs() << format("%5d", i);
    for (int j = 0; j < ranks; ++j) {
      int64_t rows = 0;
      for (int l = 0; l < perRank; ++l)
        rows += received[j][i * perRank + l];
      outs() << format("%5lld", (long long)rows);
      total += rows;
      if (i / ranksPerNode == j / ranksPerNode)
        intra += rows;
    }
    outs() << "\n";
  }
  outs() << format("rows within a node: %lld of %lld (%.1f%%), across nodes: "
                   "%lld\n",
                   (long long)intra, (long long)total,
                   total ? 100.0 * double(intra) / double(total) : 0.0,
                   (long long)(total - intra));
}

/// Compares out4..out7 of every rank with the reference's gradients, one
/// line per gradient, each within `tolerance` of its largest |value|.
Expected<bool> checkGradients(const LayerResult &reference) {
  int S = tokens, H = hidden, F = ffn, E = experts, perRank = E / ranks;
  struct Gradient {
    const char *name;
    int index;
    size_t size;
    const std::vector<std::vector<double>> &values;
  } gradients[] = {
      {"tokens", 4, size_t(S) * H, reference.dTokens},
      {"router", 5, size_t(H) * E, reference.dRouter},
      {"first expert weights", 6, size_t(perRank) * H * F, reference.dW1},
      {"second expert weights", 7, size_t(perRank) * F * H, reference.dW2}};
  bool ok = true;
  for (const Gradient &gradient : gradients) {
    double worst = 0, largest = 0;
    for (int r = 0; r < ranks; ++r) {
      Expected<std::vector<float>> values =
          readOutput<float>(gradient.index, r, gradient.size);
      if (!values)
        return values.takeError();
      for (size_t i = 0; i < gradient.size; ++i) {
        double diff = std::fabs(double((*values)[i]) - gradient.values[r][i]);
        // A NaN difference counts as the worst.
        if (!(diff <= worst))
          worst = std::isnan(diff) ? INFINITY : diff;
        largest = std::max(largest, std::fabs(gradient.values[r][i]));
      }
    }
    double bound = tolerance * std::max(largest, 1.0);
    outs() << format("check: gradient of the %s vs the serial reference: %s "
                     "(max |diff| %.3g, bound %.3g)\n",
                     gradient.name, worst <= bound ? "PASS" : "FAIL", worst,
                     bound);
    ok &= worst <= bound;
  }
  return ok;
}

/// Takes the ranks and ranks per node from the topology; a flag given as
/// well must agree with it. "" or the problem.
std::string takeShapeFrom(const tamoe::topology::Topology &tree) {
  for (auto [flag, value] :
       {std::pair<cl::opt<int> *, int64_t>{&ranks, tree.numRanks()},
        {&ranksPerNode, tree.levels[0].fanout}}) {
    if (flag->getNumOccurrences() && *flag != value)
      return formatv("--{0}={1} but topology '{2}' has {3}", flag->ArgStr,
                     int(*flag), tree.name, value)
          .str();
    *flag = int(value);
  }
  return "";
}

int check() {
  std::optional<tamoe::topology::Topology> tree;
  if (!topologyFile.empty()) {
    Expected<tamoe::topology::Topology> loaded =
        tamoe::topology::loadTopologyFile(topologyFile);
    std::string problem =
        loaded ? takeShapeFrom(*loaded) : toString(loaded.takeError());
    if (!problem.empty()) {
      errs() << "tamoe-reference: " << problem << "\n";
      return 2;
    }
    tree = std::move(*loaded);
  }
  if (ranks < 1 || experts % ranks != 0 || topK < 1 || topK > experts ||
      layers < 1 || ranksPerNode < 1 || ranks % ranksPerNode != 0) {
    errs() << "tamoe-reference: need ranks >= 1 dividing experts and "
              "ranks-per-node dividing ranks, 1 <= top-k <= experts, "
              "layers >= 1\n";
    return 2;
  }
  // The reference indexes its arrays with int: each must stay below 2^31
  // elements (the experts' weights are the largest).
  auto fitsInt = [](std::initializer_list<int64_t> factors) {
    int64_t product = 1;
    for (int64_t factor : factors)
      if (__builtin_mul_overflow(product, factor, &product))
        return false;
    return product <= INT32_MAX;
  };
  if (tokens < 1 || hidden < 1 || ffn < 1 || capacity < -1 ||
      !fitsInt({tokens, hidden}) || !fitsInt({tokens, experts}) ||
      !fitsInt({experts, hidden, ffn}) ||
      !fitsInt({ranks, tokens, topK, hidden})) {
    errs() << "tamoe-reference: need --tokens, --hidden and --ffn >= 1, "
              "--capacity >= -1, and the layer's arrays below 2^31 elements "
              "(tokens x hidden, tokens x experts, experts x hidden x ffn, "
              "the exchanged rows)\n";
    return 2;
  }
  if (maxNodes < 0 ||
      (maxNodes > 0 && topK > maxNodes * (experts / (ranks / ranksPerNode)))) {
    errs() << "tamoe-reference: --max-nodes must be >= 0 and leave a token "
              "at least top-k experts\n";
    return 2;
  }
  if (activation == Activation::SwiGlu && backward) {
    errs() << "tamoe-reference: --backward checks relu experts "
              "(examples/moe_layer_grad.mlir), not swiglu\n";
    return 2;
  }
  if (rowType != TAMOE_RT_F32 && (backward || layers != 1)) {
    errs() << "tamoe-reference: --dtype other than f32 checks the forward "
              "of one layer\n";
    return 2;
  }
  if (backward && layers != 1) {
    errs() << "tamoe-reference: --backward checks one layer "
              "(examples/moe_layer_grad.mlir), not "
           << layers << "\n";
    return 2;
  }
  int S = tokens, H = hidden, E = experts;
  lossWeights.assign(ranks, std::vector<double>(E, 1.0));
  if (tree) {
    using namespace tamoe;
    std::optional<planner::Policy> policy = planner::parsePolicy(policyName);
    if (!policy) {
      errs() << "tamoe-reference: unknown policy '" << policyName << "'\n";
      return 2;
    }
    // As tamoe-plan-dispatch: shares no router can realise with these
    // experts and k are capped (with k = E, routing is uniform).
    planner::PolicyOptions options;
    options.placement = planner::ExpertPlacement{E, topK};
    Expected<planner::Pattern> pattern =
        planner::makePattern(*tree, *policy, options);
    if (!pattern) {
      errs() << "tamoe-reference: " << toString(pattern.takeError()) << "\n";
      return 2;
    }
    // w_e = 1 / (E q_e), q_e = p[r][rank of e] / (experts per rank).
    for (int r = 0; r < ranks; ++r)
      for (int e = 0; e < E; ++e)
        lossWeights[r][e] = 1.0 / (double(ranks) *
                                   pattern->at(*tree, r, e / (E / ranks)));
  }
  std::vector<Matrix> x(ranks);
  for (int r = 0; r < ranks; ++r)
    x[r] = random(size_t(S) * H, 1000 + r);
  std::vector<float> losses(ranks, 0.0f);
  LayerResult last;
  for (int layer = 0; layer < layers; ++layer) {
    last = runLayer(layer, x);
    for (int r = 0; r < ranks; ++r) {
      losses[r] += last.losses[r];
      if (layers == 1)
        x[r] = last.outputs[r];
      else
        for (size_t i = 0; i < x[r].size(); ++i)
          x[r][i] += last.outputs[r][i];
    }
  }

  bool ok = true;
  double worst = 0, largest = 0, worstLoss = 0;
  bool countsMatch = true, droppedMatch = true;
  int64_t dropped = 0, droppedReference = 0;
  std::vector<std::vector<int32_t>> received(ranks);
  int perRank = E / ranks;
  for (int r = 0; r < ranks; ++r) {
    auto out = readOutput<float>(0, r, size_t(S) * H);
    auto loss = readOutput<float>(1, r, 1);
    auto counts = readOutput<int32_t>(2, r, size_t(ranks) * perRank);
    auto drops = readOutput<int64_t>(3, r, 1);
    Error error = joinErrors(
        joinErrors(out.takeError(), loss.takeError()),
        joinErrors(counts.takeError(), drops.takeError()));
    if (error) {
      errs() << "tamoe-reference: " << toString(std::move(error)) << "\n";
      return 1;
    }
    // A NaN difference must count as the worst: std::max would skip it.
    auto worse = [](double &worst, double diff) {
      if (!(diff <= worst))
        worst = std::isnan(diff) ? INFINITY : diff;
    };
    // Both round to the row type at the same points, but the runtime sums
    // in f32 and the reference in double: a sum near a rounding boundary of
    // a 16-bit type may round to its neighbour, one unit in the last place
    // of that value (f16's 10 bits make it common). That much of each
    // difference is allowed.
    auto lastPlace = [](double value) {
      if (rowType == TAMOE_RT_F32 || value == 0 || !std::isfinite(value))
        return 0.0;
      return std::ldexp(1.0, int(std::floor(std::log2(value))) -
                                 (rowType == TAMOE_RT_F16 ? 10 : 7));
    };
    for (size_t i = 0; i < out->size(); ++i) {
      double got = double((*out)[i]), want = x[r][i];
      double ulp = lastPlace(std::max(std::fabs(got), std::fabs(want)));
      // Not std::max(0.0, ...): it returns 0 for a NaN, which then passed.
      double excess = std::fabs(got - want) - ulp;
      worse(worst, std::isnan(excess) || excess > 0 ? excess : 0.0);
      largest = std::max(largest, std::fabs(want));
    }
    worse(worstLoss, std::fabs(double((*loss)[0]) - losses[r]));
    for (int source = 0; source < ranks; ++source)
      for (int l = 0; l < perRank; ++l)
        if ((*counts)[source * perRank + l] !=
            last.assignments[size_t(source) * E + r * perRank + l])
          countsMatch = false;
    received[r] = std::move(*counts);
    dropped += (*drops)[0];
    droppedReference += last.dropped[r];
    droppedMatch &= (*drops)[0] == last.dropped[r];
  }
  double bound = tolerance * std::max(largest, 1.0);
  auto verdict = [&](bool pass) { return pass ? "PASS" : "FAIL"; };
  outs() << format("check: output of %d ranks vs the serial reference: %s "
                   "(max |diff|%s %.3g, bound %.3g)\n",
                   int(ranks), verdict(worst <= bound),
                   rowType == TAMOE_RT_F32   ? ""
                   : rowType == TAMOE_RT_F16 ? " past one f16 ulp"
                                             : " past one bf16 ulp",
                   worst, bound);
  outs() << format("check: aux loss on every rank: %s (max |diff| %.3g)\n",
                   verdict(worstLoss <= tolerance), worstLoss);
  if (worstLoss > tolerance && topologyFile.empty())
    outs() << "  (checked as the switch loss, all weights 1: a program "
              "planned for a cluster needs --topology with its file, e.g. "
              "from tamoe-topo to-json)\n";
  outs() << "check: realised dispatch counts equal the gate's choice: "
         << verdict(countsMatch) << "\n";
  outs() << "check: dropped assignments " << dropped << " (reference "
         << droppedReference << "): " << verdict(droppedMatch) << "\n";
  ok = worst <= bound && worstLoss <= tolerance && countsMatch && droppedMatch;
  if (backward) {
    Expected<bool> gradients = checkGradients(last);
    if (!gradients) {
      errs() << "tamoe-reference: " << toString(gradients.takeError()) << "\n";
      return 1;
    }
    ok &= *gradients;
  }
  printPattern(received);
  return ok ? 0 : 1;
}
} // namespace

int main(int argc, char **argv) {
  cl::HideUnrelatedOptions(category);
  cl::AddExtraVersionPrinter(tamoe::printVersion);
  cl::ParseCommandLineOptions(
      argc, argv,
      "Checks the outputs of an example run on several ranks against a "
      "serial reference\n");
  return check();
}
