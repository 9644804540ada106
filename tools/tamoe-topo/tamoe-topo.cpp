//===- tamoe-topo.cpp - Topologies, cost model and dispatch plans ---------===//
//
// tamoe-topo check FILE.json       validate a topology file, summarise it
// tamoe-topo to-attr FILE.json     print it as a module's #tamoe.topology
// tamoe-topo to-json FILE.mlir     print a module's tamoe.topology as JSON
// tamoe-topo to-json FILE.json --top-fanout N   a cluster, rescaled
// tamoe-topo plan FILE.json        every policy's pattern and predicted times
// tamoe-topo compare FILE.json...  policies x clusters, ratio to uniform
// tamoe-topo overlap FILE.json...  one MoE layer's exchanges and experts, in
//                                  one chunk and cut into overlapped chunks
// tamoe-topo explain FILE.json     per-link loads and the bottleneck
// tamoe-topo evaluate FILE.json --level-fractions F0,F1,...
//                                  predicted time of a measured pattern
// tamoe-topo import-nccl DUMP.xml --nodes N
//                                  a topology file from NCCL's topology dump
// mpirun -np P tamoe-topo calibrate -o FILE.json
//                                  fit a topology to measured exchanges
// mpirun -np P tamoe-topo validate FILE.json
//                                  predicted / measured over a size sweep
//
// Only to-attr and to-json of a module touch MLIR; tamoe-topo-mlir does them,
// so that this executable links no MLIR and LLVM's support library
// statically, and a plan answers in milliseconds. Likewise calibrate and
// validate, which need the runtime and MPI, are tamoe-topo-measure's.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Planner/Overlap.h"
#include "tamoe/Planner/Policies.h"
#include "tamoe/Support/Messages.h"
#include "tamoe/Support/Version.h"
#include "tamoe/Topology/NCCLImport.h"
#include "tamoe/Topology/Topology.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

#include <cmath>
#include <cstring>
#include <unistd.h>

using namespace llvm;
using namespace tamoe::planner;
namespace topo = tamoe::topology;

static cl::SubCommand checkCommand("check",
                                   "Validate a topology file and summarise it");
static cl::SubCommand
    toAttrCommand("to-attr",
                  "Print a topology file as a module's #tamoe.topology");
static cl::SubCommand toJSONCommand(
    "to-json",
    "Print the tamoe.topology attribute of an MLIR module as JSON, or a "
    "cluster file rescaled with --top-fanout");
static cl::SubCommand
    planCommand("plan", "Print every policy's target pattern, deviation and "
                        "predicted all-to-all time");
static cl::SubCommand compareCommand("compare",
                                     "Table of policies x clusters: predicted "
                                     "all-to-all time and ratio to uniform");
static cl::SubCommand
    overlapCommand("overlap",
                   "Table of clusters: predicted time of one MoE layer's "
                   "exchanges and experts in one chunk and cut into the "
                   "overlapped chunks the model picks (tamoe pattern)");
static cl::SubCommand
    explainCommand("explain", "Per-link loads of one policy and schedule, "
                              "and which link is the bottleneck");

static cl::SubCommand evaluateCommand(
    "evaluate", "Predicted all-to-all time of a given pattern (a measured "
                "one: the fraction of assignments sent to each level)");

static cl::SubCommand importNCCLCommand(
    "import-nccl", "Print a topology file for N nodes like the one of an "
                   "NCCL topology dump (NCCL_TOPO_DUMP_FILE)");

// Listed in --help; tamoe-topo-measure parses their options.
static cl::SubCommand
    calibrateCommand("calibrate",
                     "Fit a topology to exchanges timed on the launched "
                     "ranks (mpirun; tamoe-topo-measure)");
static cl::SubCommand
    validateCommand("validate", "Predicted against measured dispatch times "
                                "over a sweep of sizes (mpirun; "
                                "tamoe-topo-measure)");

static cl::opt<std::string>
    inputPath(cl::Positional, cl::Required, cl::desc("<input file>"),
              cl::sub(checkCommand), cl::sub(toAttrCommand),
              cl::sub(toJSONCommand), cl::sub(planCommand),
              cl::sub(explainCommand), cl::sub(evaluateCommand),
              cl::sub(importNCCLCommand));
static cl::OptionCategory importOptions("import-nccl options");
static cl::opt<int64_t>
    importNodes("nodes",
                cl::desc("import-nccl: nodes of the cluster (default 1)"),
                cl::init(1), cl::sub(importNCCLCommand),
                cl::cat(importOptions));
static cl::opt<std::string>
    importName("name",
               cl::desc("import-nccl: the cluster's name (default "
                        "nccl-node)"),
               cl::init("nccl-node"), cl::sub(importNCCLCommand),
               cl::cat(importOptions));
static cl::list<std::string> clusterPaths(cl::Positional, cl::OneOrMore,
                                          cl::desc("<topology files>"),
                                          cl::sub(compareCommand),
                                          cl::sub(overlapCommand));

// Workload options, shared by plan, compare, overlap, explain and evaluate;
// policy options by the commands that plan a pattern (evaluate is given
// one).
static cl::OptionCategory plannerOptions("Workload and policy options");
#define POLICY_SUBCOMMANDS                                                     \
  cl::sub(planCommand), cl::sub(compareCommand), cl::sub(overlapCommand),      \
      cl::sub(explainCommand), cl::cat(plannerOptions)
#define PLANNER_SUBCOMMANDS POLICY_SUBCOMMANDS, cl::sub(evaluateCommand)
static cl::opt<int64_t> tokens("tokens",
                               cl::desc("Tokens per rank (default 4096)"),
                               cl::init(4096), PLANNER_SUBCOMMANDS);
static cl::opt<int64_t> hidden("hidden", cl::desc("Hidden size (default 4096)"),
                               cl::init(4096), PLANNER_SUBCOMMANDS);
static cl::opt<std::string>
    dtype("dtype",
          cl::desc("Element type of a token row: fp8, bf16, fp16 or "
                   "fp32 (default bf16)"),
          cl::init("bf16"), PLANNER_SUBCOMMANDS);
static cl::opt<int64_t> topK("topk", cl::desc("Experts per token (default 2)"),
                             cl::init(2), PLANNER_SUBCOMMANDS);
static cl::opt<int64_t>
    experts("experts",
            cl::desc("Experts of the layer, E / P on every rank: caps every "
                     "share at min(k, E / P) / k, what routing can realise "
                     "(default: not given, no cap)"),
            POLICY_SUBCOMMANDS);
static cl::opt<double>
    klBudget("kl-budget",
             cl::desc("optimal: largest KL divergence from uniform routing "
                      "(default: the tamoe pattern's)"),
             POLICY_SUBCOMMANDS);
static cl::opt<double> rho("rho",
                           cl::desc("box: least fraction of the uniform "
                                    "share kept for every destination "
                                    "(default 0.25)"),
                           cl::init(PolicyOptions().rho), POLICY_SUBCOMMANDS);
static cl::opt<double> beta("beta",
                            cl::desc("box: largest multiple of the uniform "
                                     "share for any destination (default 4)"),
                            cl::init(PolicyOptions().beta), POLICY_SUBCOMMANDS);
static cl::opt<double>
    crossNodeCap("cross-node-cap",
                 cl::desc("fastermoe: largest fraction leaving the node "
                          "(default 0.14)"),
                 cl::init(PolicyOptions().crossNodeCap), POLICY_SUBCOMMANDS);
static cl::opt<int64_t>
    maxNodes("max-nodes", cl::desc("node-limited: nodes per token (default 4)"),
             cl::init(PolicyOptions().maxNodes), POLICY_SUBCOMMANDS);
static cl::opt<int64_t>
    topFanout("top-fanout",
              cl::desc("Replace the outermost level's fanout (scale the "
                       "cluster out or in; default: keep it)"),
              cl::init(0), cl::sub(toJSONCommand), PLANNER_SUBCOMMANDS);
static cl::opt<std::string>
    policyName("policy",
               cl::desc("explain, --svg: the policy: uniform, tamoe, optimal, "
                        "box, fastermoe or node-limited (default tamoe)"),
               cl::init("tamoe"), cl::sub(explainCommand), cl::sub(planCommand),
               cl::cat(plannerOptions));
static cl::opt<std::string>
    scheduleName("schedule",
                 cl::desc("explain: flat, hierarchical or hierarchical+dedup "
                          "(default: the fastest)"),
                 cl::init(""), cl::sub(explainCommand),
                 cl::cat(plannerOptions));
static cl::opt<std::string>
    svgPath("svg", cl::desc("plan: draw the --policy pattern as a heat map"),
            cl::value_desc("file"), cl::sub(planCommand),
            cl::cat(plannerOptions));

static cl::opt<int64_t>
    ffn("ffn",
        cl::desc("overlap: width of an expert's FFN, hidden -> ffn -> hidden "
                 "(default 4 x --hidden)"),
        cl::sub(overlapCommand), cl::cat(plannerOptions));
static cl::opt<double> deviceTFLOPs(
    "device-tflops",
    cl::desc("overlap: TFLOP/s one rank achieves on the experts' GEMMs, for "
             "every cluster (default: a figure for each reference cluster, "
             "60% of its GPU's dense bf16 peak)"),
    cl::sub(overlapCommand), cl::cat(plannerOptions));
static cl::opt<double> chunkOverheadUs(
    "chunk-overhead-us",
    cl::desc("overlap: what each chunk of compute adds, us (default 10, "
             "tamoe-overlap's)"),
    cl::init(10), cl::sub(overlapCommand), cl::cat(plannerOptions));
static cl::opt<int64_t>
    maxChunks("max-chunks",
              cl::desc("overlap: most chunks the model may pick (default 8, "
                       "tamoe-overlap's)"),
              cl::init(8), cl::sub(overlapCommand), cl::cat(plannerOptions));

static cl::list<double> levelFractions(
    "level-fractions",
    cl::desc("evaluate: fraction of each rank's assignments that stays on it, "
             "then that goes to each level (the ranks whose lowest common "
             "ancestor with it is that level), summing to 1"),
    cl::CommaSeparated, cl::value_desc("f0,f1,..."), cl::sub(evaluateCommand),
    cl::cat(plannerOptions));

static cl::opt<std::string> trafficPath(
    "traffic",
    cl::desc("evaluate: a JSON file of measured dispatch counts (row_bytes, "
             "topk, assignments [P][P], unique_tokens [P][nodes], and "
             "optionally the runtime's counters per schedule, measured): "
             "prints the bytes each rank sends within and across nodes, "
             "and fails where they differ from the counters"),
    cl::value_desc("file"), cl::sub(evaluateCommand), cl::cat(plannerOptions));

static int fail(const Twine &message) {
  WithColor::error(errs(), "tamoe-topo") << message << "\n";
  return 1;
}

//===----------------------------------------------------------------------===//
// Inputs
//===----------------------------------------------------------------------===//

static Expected<topo::Topology> loadTopology(StringRef path) {
  Expected<topo::Topology> topology = topo::loadTopologyFile(path);
  if (!topology || topFanout.getNumOccurrences() == 0)
    return topology;
  topology->levels.back().fanout = topFanout;
  if (Error error = topo::verify(*topology))
    return createStringError(inconvertibleErrorCode(),
                             "--top-fanout: " + toString(std::move(error)));
  return topology;
}

static Expected<Workload> workloadFromOptions() {
  std::optional<int64_t> bytes = StringSwitch<std::optional<int64_t>>(dtype)
                                     .Case("fp8", 1)
                                     .Cases({"bf16", "fp16"}, 2)
                                     .Case("fp32", 4)
                                     .Default(std::nullopt);
  if (!bytes)
    return createStringError(
        inconvertibleErrorCode(),
        "--dtype: expected fp8, bf16, fp16 or fp32, got '" + dtype + "'");
  Workload workload{tokens, hidden, *bytes, topK};
  if (Error error = verify(workload)) {
    // verify() names the fields (--dtype cannot be wrong here); the user
    // gave flags.
    std::string message = toString(std::move(error));
    for (auto [field, flag] :
         {std::pair<StringRef, StringRef>{"tokensPerRank: ", "--tokens: "},
          {"hidden: ", "--hidden: "},
          {"topK: ", "--topk: "}})
      if (StringRef(message).starts_with(field)) {
        message = (flag + StringRef(message).drop_front(field.size())).str();
        break;
      }
    return createStringError(inconvertibleErrorCode(), message);
  }
  return workload;
}

static Expected<PolicyOptions> policyOptionsFromFlags() {
  PolicyOptions options{rho, beta, crossNodeCap, maxNodes};
  if (klBudget.getNumOccurrences())
    options.klBudget = klBudget;
  if (experts.getNumOccurrences())
    options.placement = ExpertPlacement{experts, topK};
  if (Error error = verify(options))
    return createStringError(inconvertibleErrorCode(),
                             "--" + toString(std::move(error)));
  return options;
}

static Expected<Policy> policyFromFlag() {
  if (std::optional<Policy> policy = parsePolicy(policyName))
    return *policy;
  return createStringError(inconvertibleErrorCode(),
                           "--policy: unknown policy '" + policyName +
                               "' (uniform, tamoe, optimal, box, "
                               "fastermoe, node-limited)");
}

//===----------------------------------------------------------------------===//
// Reports
//===----------------------------------------------------------------------===//

static std::string describeTree(const topo::Topology &topology) {
  std::string text = formatv("{0} ranks (", topology.numRanks());
  for (auto [index, level] : enumerate(topology.levels))
    text += formatv("{0}{1} x{2}", index ? ", " : "", level.name, level.fanout);
  return text + ")";
}

/// The workload on one line; `more` goes before its end.
static void printWorkload(const Workload &workload, StringRef more = "") {
  outs() << formatv("workload: {0} tokens x {1} hidden x {2} B, top-{3} per "
                    "rank: {4} MiB of assignments{5}\n",
                    workload.tokensPerRank, workload.hidden,
                    workload.bytesPerElement, workload.topK,
                    format("%.1f", workload.assignmentsPerRank() *
                                       workload.rowBytes() / (1 << 20)),
                    more);
}

static StringRef scheduleLetter(Schedule schedule) {
  switch (schedule) {
  case Schedule::Flat:
    return "F";
  case Schedule::Hierarchical:
    return "H";
  case Schedule::HierarchicalDedup:
    return "D";
  }
  llvm_unreachable("unknown schedule");
}

static int printSummary(const topo::Topology &topology) {
  outs() << topology.name << ": " << topology.numRanks() << " ranks, "
         << topology.levels.size() << " levels\n";
  for (auto [index, level] : enumerate(topology.levels))
    outs() << formatv("  level {0} '{1}': fanout {2}, ", index, level.name,
                      level.fanout)
           << format("up %g GB/s, down %g GB/s, latency %g us, %g us per "
                     "message, ",
                     level.upBandwidthGBps, level.downBandwidthGBps,
                     level.latencyUs, level.perMessageUs)
           << topo::stringifyLinkSharing(level.sharing) << "\n";
  return 0;
}

/// The file --svg draws to, opened before anything is printed: a bad
/// --svg prints no tables.
static Expected<std::unique_ptr<ToolOutputFile>>
openSVG(const topo::Topology &topology) {
  if (svgPath.empty())
    return createStringError(inconvertibleErrorCode(),
                             "--svg: expected a file name");
  // A cell per pair of ranks: past a thousand ranks the drawing is
  // megabytes no viewer shows.
  if (int64_t ranks = topology.numRanks(); ranks > 1024)
    return createStringError(inconvertibleErrorCode(),
                             formatv("--svg: {0} ranks are too many to draw "
                                     "(at most 1024)",
                                     ranks));
  std::error_code ec;
  auto file = std::make_unique<ToolOutputFile>(svgPath, ec, sys::fs::OF_Text);
  if (ec)
    return createStringError(ec, "--svg: cannot write " + svgPath + ": " +
                                     ec.message());
  return std::move(file);
}

/// `text` as XML character data: a cluster name such as "a<b & c" would
/// otherwise leave a file that no SVG viewer opens.
static std::string escapeXML(StringRef text) {
  std::string escaped;
  raw_string_ostream os(escaped);
  printHTMLEscaped(text, os);
  return escaped;
}

/// Draws p̂ as a P x P heat map (log colour scale), with the node and
/// higher-level blocks outlined.
static void writeSVG(ToolOutputFile &file, const topo::Topology &topology,
                     const Plan &plan) {
  int64_t ranks = topology.numRanks();
  raw_ostream &os = file.os();
  const double cell = std::max(1.0, 640.0 / double(ranks));
  const double size = cell * double(ranks), margin = 40;
  // Over the distances that have ranks: a level of fanout 1 has none, and
  // its share (no cell shows it) must not stretch the scale.
  double lo = INFINITY, hi = 0;
  for (auto [distance, share] : enumerate(plan.pattern.shares))
    if (share > 0 && ranksAtShare(topology, distance) > 0) {
      lo = std::min(lo, share);
      hi = std::max(hi, share);
    }
  auto colour = [&](double share) {
    // Zero is white; positive shares run from light to dark blue on a log
    // scale, so the smallest share stays visible.
    double t = 0;
    if (share > 0)
      t = hi == lo ? 1.0
                   : 0.15 + 0.85 * std::log(share / lo) / std::log(hi / lo);
    int r = int(255 * (1 - t) + 8 * t), g = int(255 * (1 - t) + 48 * t),
        b = int(255 * (1 - t) + 107 * t);
    return formatv("rgb({0},{1},{2})", r, g, b).str();
  };
  os << formatv("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" "
                "height=\"{1}\" font-family=\"sans-serif\" font-size=\"12\">\n",
                size + 2 * margin, size + 2 * margin + 20);
  os << formatv("<text x=\"{0}\" y=\"20\">{1}: {2} target pattern (row: "
                "sender, column: destination), {3}</text>\n",
                margin, escapeXML(topology.name), stringifyPolicy(plan.policy),
                format("share %.3g .. %.3g", lo, hi));
  for (int64_t i = 0; i < ranks; ++i)
    for (int64_t j = 0; j < ranks; ++j)
      os << formatv("<rect x=\"{0}\" y=\"{1}\" width=\"{2}\" height=\"{2}\" "
                    "fill=\"{3}\"/>\n",
                    margin + cell * double(j), margin + cell * double(i), cell,
                    colour(plan.pattern.at(topology, i, j)));
  for (size_t level = 0; level + 1 < topology.levels.size(); ++level) {
    double block = cell * double(topology.ranksPerSubtree(level));
    for (int64_t k = 0; k * topology.ranksPerSubtree(level) < ranks; ++k)
      os << formatv("<rect x=\"{0}\" y=\"{0}\" width=\"{1}\" height=\"{1}\" "
                    "fill=\"none\" stroke=\"{2}\" stroke-width=\"{3}\"/>\n",
                    margin + block * double(k), block,
                    level == 0 ? "orange" : "red", level + 1);
  }
  os << "</svg>\n";
  file.keep();
}

static int plan(const topo::Topology &topology, const Workload &workload,
                const PolicyOptions &options) {
  // --policy only picks the pattern --svg draws, but a bad one is an error
  // with or without it.
  Expected<Policy> drawnPolicy = policyFromFlag();
  if (!drawnPolicy)
    return fail(toString(drawnPolicy.takeError()));
  std::unique_ptr<ToolOutputFile> svg;
  if (svgPath.getNumOccurrences()) {
    Expected<std::unique_ptr<ToolOutputFile>> opened = openSVG(topology);
    if (!opened)
      return fail(toString(opened.takeError()));
    svg = std::move(*opened);
  }
  outs() << topology.name << ": " << describeTree(topology) << "\n";
  printWorkload(workload);
  if (options.placement) {
    Expected<double> cap =
        largestRealisableShare(topology, *options.placement);
    if (!cap)
      return fail(toString(cap.takeError()));
    outs() << formatv("experts: {0}, {1} per rank, top-{2}: no rank can take "
                      "more than {3} of a token's assignments (x P = {4})\n",
                      options.placement->experts,
                      options.placement->experts / topology.numRanks(),
                      options.placement->topK, format("%.4f", *cap),
                      format("%.2f", *cap * double(topology.numRanks())));
  }
  int64_t nodes = topology.numNodes();
  outs() << formatv("optimal: KL budget {0}; box bounds: rho = {1}, beta = "
                    "{2}; fastermoe cap {3}; node-limited to {4} of the {5} "
                    "nodes\n\n",
                    // formatFixed, not formatv's own double style: that
                    // cuts a number past 31 characters (a budget or beta
                    // of 1e300 read as 1.00000000000000005e30).
                    options.klBudget
                        ? tamoe::formatFixed(*options.klBudget, 4)
                        : std::string("of the tamoe pattern"),
                    tamoe::formatFixed(options.rho, 2),
                    tamoe::formatFixed(options.beta, 2),
                    tamoe::formatFixed(options.crossNodeCap, 2),
                    std::min(options.maxNodes, nodes), nodes);
  outs() << "share of each destination (x P: times its uniform share)\n";
  outs() << formatv("{0,-14}{1,10}", "policy", "self");
  for (const topo::Level &level : topology.levels)
    outs() << formatv("{0,10}", level.name);
  outs() << formatv("{0,8}{1,14}\n", "KL", "ratio range");
  std::vector<Plan> plans;
  for (Policy policy : allPolicies()) {
    Expected<Plan> result = makePlan(topology, policy, options, workload);
    if (!result)
      return fail(toString(result.takeError()));
    plans.push_back(std::move(*result));
    const Plan &p = plans.back();
    outs() << formatv("{0,-14}", stringifyPolicy(policy));
    for (auto [index, share] : enumerate(p.pattern.shares)) {
      // A level of fanout 1 adds no destination: its share goes nowhere.
      if (ranksAtShare(topology, index) == 0)
        outs() << formatv("{0,10}", "-");
      else
        // A space of its own: a value wider than the column stays apart.
        outs() << format(" %9.4f", share * double(topology.numRanks()));
    }
    outs() << format("%8.3f   %5.2f .. %-5.2f\n", p.deviation.kl,
                     p.deviation.minRatio, p.deviation.maxRatio);
  }
  outs() << "\npredicted all-to-all time, us (dispatch; combine is the "
            "reverse)\n";
  outs() << formatv("{0,-14}{1,10}{2,14}{3,20}{4,22}{5,12}{6,16}\n", "policy",
                    "flat", "hierarchical", "hierarchical+dedup", "best",
                    "vs uniform", "optimal, same");
  for (const Plan &p : plans) {
    // The optimal pattern at this policy's own KL from uniform: comparing
    // patterns means comparing them at equal routing freedom.
    Expected<Pattern> optimal = makePattern(
        topology, Policy::Optimal, sameFreedomAs(p.deviation, options));
    if (!optimal)
      return fail(toString(optimal.takeError()));
    outs() << formatv("{0,-14}", stringifyPolicy(p.policy))
           << format(" %9.1f %13.1f %19.1f", p.flat.totalUs(),
                     p.hierarchical.totalUs(), p.dedup.totalUs())
           << formatv("{0,22}{1,12}", stringifySchedule(p.best),
                      formatSpeedup(speedupOverUniform(p, plans.front(),
                                                       defaultSchedules())))
           << format(" %15.1f\n",
                     evaluate(topology, *optimal, workload, Schedule::Flat)
                         .totalUs());
  }
  outs() << "(vs uniform: speed-up over uniform routing, both flat or "
            "hierarchical, whichever is faster, as tamoe-opt emits them by "
            "default and its remark states it; optimal, same: flat time of "
            "the optimal pattern at the policy's KL)\n";
  outs() << "\nflat or hierarchical (uniform pattern):\n";
  for (Schedule schedule :
       {Schedule::Hierarchical, Schedule::HierarchicalDedup}) {
    std::optional<double> crossover =
        crossoverTokens(topology, plans.front().pattern, workload, schedule);
    double us = plans.front().cost(schedule).totalUs();
    double flatUs = plans.front().flat.totalUs();
    StringRef verdict = fasterThan(us, flatUs)   ? "faster than"
                        : fasterThan(flatUs, us) ? "slower than"
                                                 : "as fast as";
    outs() << formatv("  {0}: {1} flat at {2} tokens per rank",
                      stringifySchedule(schedule), verdict,
                      workload.tokensPerRank);
    if (crossover)
      outs() << formatv("; the two cross at {0} tokens per rank",
                        format("%.0f", *crossover));
    else
      outs() << "; at every size";
    outs() << "\n";
  }
  if (svg) {
    const Plan &drawn = plans[std::find(allPolicies().begin(),
                                        allPolicies().end(), *drawnPolicy) -
                              allPolicies().begin()];
    writeSVG(*svg, topology, drawn);
    outs() << "wrote " << svgPath << "\n";
  }
  return 0;
}

static int compare(const Workload &workload, const PolicyOptions &options) {
  // Every file first, so that a bad one prints no table (as overlap).
  std::vector<topo::Topology> topologies;
  for (const std::string &path : clusterPaths) {
    Expected<topo::Topology> topology = loadTopology(path);
    if (!topology)
      return fail(toString(topology.takeError()));
    topologies.push_back(std::move(*topology));
  }
  printWorkload(workload);
  outs() << "\nPredicted dispatch all-to-all time in us with the fastest "
            "schedule (F flat, H hierarchical, D hierarchical+dedup), and "
            "speed-up over uniform routing with flat or hierarchical "
            "schedules (as tamoe-opt emits them by default); KL: the "
            "pattern's divergence from uniform routing, the freedom it takes "
            "from the router.\n\n";
  outs() << "| cluster | ranks |";
  for (Policy policy : allPolicies())
    outs() << " " << stringifyPolicy(policy) << " |";
  outs() << "\n|---|---:|";
  for (size_t i = 0; i < allPolicies().size(); ++i)
    outs() << "---:|";
  outs() << "\n";
  for (const topo::Topology &topology : topologies) {
    outs() << "| " << topology.name << " | " << topology.numRanks() << " |";
    std::optional<Plan> uniform;
    for (Policy policy : allPolicies()) {
      Expected<Plan> result = makePlan(topology, policy, options, workload);
      if (!result)
        return fail(toString(result.takeError()));
      if (!uniform)
        uniform = *result;
      outs() << format(" %.0f %s", result->cost(result->best).totalUs(),
                       scheduleLetter(result->best).data());
      if (policy != Policy::Uniform)
        outs() << " ("
               << formatSpeedup(
                      speedupOverUniform(*result, *uniform, defaultSchedules()))
               << format(", KL %.3f)", result->deviation.kl);
      outs() << " |";
    }
    outs() << "\n";
  }
  return 0;
}

namespace {
/// The expert throughput overlap assumes for a reference cluster when
/// --device-tflops is not given: `achievedFraction` of its GPU's dense
/// bf16 peak (fp16 on V100, which has no bf16), what large GEMMs reach.
struct DeviceRate {
  StringRef cluster;
  StringRef gpu;
  double peakTFLOPs;
  /// The cluster file's description names no GPU: the figure is assumed.
  bool assumed;
};
} // namespace

static constexpr double achievedFraction = 0.6;
static const DeviceRate deviceRates[] = {
    {"dgx-a100", "A100", 312, false},
    {"dgx-h100", "H100", 989, false},
    {"h800-deepseek", "H800", 989, false},
    {"dgx1-v100", "V100, fp16", 125, false},
    {"gb200-nvl72", "B200", 2500, false},
    // Their descriptions name no GPU (two-tier-oversubscribed's nodes of 8
    // on NVSwitch at 300 GB/s per GPU read like A100's, but do not say so).
    {"pcie-ethernet", "A100", 312, true},
    {"two-tier-oversubscribed", "A100", 312, true},
};

/// One MoE layer per cluster: its dispatch exchange, experts and return
/// exchange in one chunk and cut into the chunks the overlap model picks,
/// predicted as tamoe-overlap predicts them for the tamoe pattern.
static int overlap(const Workload &workload, const PolicyOptions &options) {
  // --hidden's bounds (planner::verify(Workload)): far above any layer.
  constexpr int64_t kMaxFfn = int64_t(1) << 31;
  if (ffn.getNumOccurrences() && (ffn < 1 || ffn > kMaxFfn))
    return fail(formatv("--ffn: expected in [1, {0}], got {1}", kMaxFfn, ffn));
  // tamoe-overlap's bounds (planner::verifyOverlapOptions), in this
  // command's units.
  if (maxChunks < 1 || maxChunks > kMaxChunks)
    return fail(formatv("--max-chunks: expected in [1, {0}], got {1}",
                        kMaxChunks, maxChunks));
  if (!(chunkOverheadUs >= 0 && chunkOverheadUs <= kMaxChunkOverheadUs))
    return fail(formatv("--chunk-overhead-us: expected in [0, {0}], got {1}",
                        tamoe::formatNumber(kMaxChunkOverheadUs),
                        tamoe::formatNumber(chunkOverheadUs)));
  bool given = deviceTFLOPs.getNumOccurrences();
  if (given && !(deviceTFLOPs >= kMinDeviceGflops / 1e3 &&
                 deviceTFLOPs <= kMaxDeviceGflops / 1e3))
    return fail(formatv("--device-tflops: expected a rate in [{0}, {1}] "
                        "TFLOP/s, got {2}",
                        tamoe::formatNumber(kMinDeviceGflops / 1e3),
                        tamoe::formatNumber(kMaxDeviceGflops / 1e3),
                        tamoe::formatNumber(deviceTFLOPs)));
  // The workload's bounds keep these products far from overflow.
  int64_t width = ffn.getNumOccurrences() ? int64_t(ffn) : 4 * workload.hidden;
  // Dropless: every assignment is a row, and on average a rank's experts
  // receive as many rows as it sends. Two GEMMs, hidden -> ffn -> hidden.
  int64_t rows = workload.tokensPerRank * workload.topK;
  // No more chunks than rows, as the pass.
  int64_t limit = std::min<int64_t>(maxChunks, std::max<int64_t>(rows, 1));
  double flops =
      2 * 2.0 * double(rows) * double(workload.hidden) * double(width);

  // Every file and its throughput first, so that an error prints no table.
  struct Cluster {
    topo::Topology topology;
    double tflops;
    std::string figure;
  };
  std::vector<Cluster> clusters;
  bool anyAssumed = false;
  for (const std::string &path : clusterPaths) {
    Expected<topo::Topology> topology = loadTopology(path);
    if (!topology)
      return fail(toString(topology.takeError()));
    if (given) {
      clusters.push_back(
          {std::move(*topology), deviceTFLOPs,
           formatv("{0} (--device-tflops)", format("%g", double(deviceTFLOPs)))
               .str()});
      continue;
    }
    const DeviceRate *rate = find_if(deviceRates, [&](const DeviceRate &r) {
      return r.cluster == topology->name;
    });
    if (rate == std::end(deviceRates)) {
      std::string known;
      for (const DeviceRate &r : deviceRates)
        known += (known.empty() ? "" : ", ") + r.cluster.str();
      return fail(path + ": no built-in device throughput for cluster '" +
                  topology->name + "' (only for " + known +
                  "): give --device-tflops");
    }
    double tflops = std::round(achievedFraction * rate->peakTFLOPs);
    anyAssumed |= rate->assumed;
    clusters.push_back({std::move(*topology), tflops,
                        formatv("{0} ({1}{2})", format("%g", tflops), rate->gpu,
                                rate->assumed ? ", assumed" : "")
                            .str()});
  }

  // Every prediction before the table too.
  struct Row {
    const Cluster *cluster;
    Cost best;
    LayerTimes times;
    int64_t chosen;
  };
  std::vector<Row> table;
  for (const Cluster &cluster : clusters) {
    const topo::Topology &topology = cluster.topology;
    Expected<Pattern> pattern = makePattern(topology, Policy::TAMoE, options);
    if (!pattern)
      return fail(toString(pattern.takeError()));
    // As tamoe-overlap: the fastest default schedule for the layer's rows,
    // its bandwidth and start-up parts, the exchange back the same.
    Workload perRow{rows, workload.hidden, workload.bytesPerElement, 1};
    std::optional<Cost> best;
    for (Schedule schedule : defaultSchedules()) {
      Cost cost = evaluate(topology, *pattern, perRow, schedule);
      if (!best || fasterThan(cost.totalUs(), best->totalUs()))
        best = std::move(cost);
    }
    LayerTimes times;
    for (const StageCost &stage : best->stages) {
      times.dispatchBandwidthUs += stage.bandwidthUs;
      times.dispatchLatencyUs += stage.latencyUs;
    }
    times.returnBandwidthUs = times.dispatchBandwidthUs;
    times.returnLatencyUs = times.dispatchLatencyUs;
    times.computeUs = computeUs(flops, cluster.tflops * 1e3);
    times.chunkOverheadUs = chunkOverheadUs;
    if (Error error = verify(times))
      return fail(topology.name + ": cannot predict the overlap: " +
                  toString(std::move(error)));
    table.push_back(
        {&cluster, std::move(*best), times, bestChunkCount(times, limit)});
  }

  printWorkload(workload,
                formatv("; experts {0} -> {1} -> {0}: {2} GFLOP per rank",
                        workload.hidden, width, format("%.1f", flops / 1e9))
                    .str());
  outs() << formatv(
      "\nPredicted time in us of one MoE layer on a rank. exchange out: the "
      "tamoe pattern's dispatch all-to-all with the faster of the flat (F) "
      "and hierarchical (H) schedules; the exchange back takes as long. "
      "experts: their two GEMMs at the device's TFLOP/s ({0}). one chunk: "
      "exchange out, experts and exchange back in sequence, plus {1} us. "
      "overlapped: cut along the tokens into the chosen chunks (the count "
      "in 1-{2} with the least predicted time), one chunk's exchanges "
      "overlapping another's experts, each chunk adding {1} us. gain: one "
      "chunk / overlapped.\n\n",
      given ? "--device-tflops"
            : formatv("{0}% of the named GPU's dense bf16 peak, fp16 on "
                      "V100",
                      format("%.0f", achievedFraction * 100))
                  .str(),
      format("%g", double(chunkOverheadUs)), limit);
  outs() << "| cluster | ranks | device TFLOP/s | exchange out (us) | "
            "experts (us) | one chunk (us) | chosen chunks | overlapped (us) "
            "| gain |\n";
  outs() << "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto &[cluster, best, times, chosen] : table) {
    double one = chunkedLayerUs(times, 1);
    double cut = chunkedLayerUs(times, chosen);
    outs() << formatv("| {0} | {1} | {2} | ", cluster->topology.name,
                      cluster->topology.numRanks(), cluster->figure)
           << format("%.1f %s | %.1f | %.1f | ", best.totalUs(),
                     scheduleLetter(best.schedule).data(), times.computeUs, one)
           << chosen << format(" | %.1f | ", cut)
           << formatSpeedup(cut > 0 ? std::optional<double>(one / cut)
                                    : std::nullopt)
           << " |\n";
  }
  if (anyAssumed)
    outs() << "\nassumed: the cluster file's description names no GPU; "
              "the A100's figure stands in.\n";
  return 0;
}

static int explain(const topo::Topology &topology, const Workload &workload,
                   const PolicyOptions &options) {
  Expected<Policy> policy = policyFromFlag();
  if (!policy)
    return fail(toString(policy.takeError()));
  Expected<Plan> result = makePlan(topology, *policy, options, workload);
  if (!result)
    return fail(toString(result.takeError()));
  Schedule schedule = result->best;
  if (!scheduleName.empty()) {
    std::optional<Schedule> named;
    for (Schedule s : allSchedules())
      if (stringifySchedule(s) == scheduleName)
        named = s;
    if (!named)
      return fail("--schedule: expected flat, hierarchical or "
                  "hierarchical+dedup, got '" +
                  scheduleName + "'");
    schedule = *named;
  }
  const Cost &cost = result->cost(schedule);
  outs() << topology.name << ": " << describeTree(topology) << "\n";
  printWorkload(workload);
  outs() << formatv("policy {0}, schedule {1}: {2} us\n",
                    stringifyPolicy(*policy), stringifySchedule(schedule),
                    format("%.1f", cost.totalUs()));
  if (schedule != Schedule::Flat && topology.levels.size() < 2)
    outs() << "(one level: no node boundary to stage at, so the schedule is "
              "the flat one)\n";
  for (const StageCost &stage : cost.stages) {
    outs() << formatv("\nstage '{0}': {1} us = {2} us on the busiest link + "
                      "{3} us latency ({4} messages from the busiest "
                      "sender)\n",
                      stage.name, format("%.1f", stage.totalUs()),
                      format("%.1f", stage.bandwidthUs),
                      format("%.1f", stage.latencyUs), stage.messages);
    outs() << formatv("  {0,-10}{1,-6}{2,12}{3,12}{4,12}\n", "level", "dir",
                      "MiB", "link GB/s", "us");
    for (const LinkLoad &load : stage.levels)
      outs() << formatv("  {0,-10}{1,-6}", topology.levels[load.level].name,
                        load.up ? "up" : "down")
             << format("%12.3f%12.1f%12.1f", load.bytes / (1 << 20),
                       load.linkGBps, load.microseconds)
             << (load.microseconds == stage.bottleneck.microseconds &&
                         load.microseconds > 0
                     ? "  <- bottleneck"
                     : "")
             << "\n";
  }
  if (cost.totalUs() == 0) {
    outs() << "\nwhy: no link carries anything: every rank keeps its "
              "assignments.\n";
    return 0;
  }
  const StageCost &slowest = cost.slowestStage();
  const LinkLoad &neck = slowest.bottleneck;
  const topo::Level &level = topology.levels[neck.level];
  // A level-l link joins a child of level l (a rank for l = 0, else a
  // level-(l-1) subtree) to the level's switch.
  std::string child =
      neck.level == 0
          ? std::string("its rank")
          : formatv("its '{0}'", topology.levels[neck.level - 1].name).str();
  outs() << formatv(
      "\nwhy: the slowest stage is '{0}'. Its busiest link is "
      "a '{1}' {2}-link, {3} GB/s ({4}), carrying {5} MiB: "
      "every byte that {6} {7} crosses it.",
      slowest.name, level.name, neck.up ? "up" : "down",
      format("%g", neck.linkGBps),
      level.sharing == topo::LinkSharing::Shared
          ? "shared by the ranks below it"
          : formatv("{0} GB/s for each of {1} ranks below it",
                    format("%g", neck.up ? level.upBandwidthGBps
                                         : level.downBandwidthGBps),
                    neck.level == 0 ? 1
                                    : topology.ranksPerSubtree(neck.level - 1))
                .str(),
      format("%.3f", neck.bytes / (1 << 20)), neck.up ? "leaves" : "enters",
      child);
  if (slowest.latencyUs > slowest.bandwidthUs)
    outs() << formatv(" Latency dominates: {0} messages cost more than the "
                      "bytes; a hierarchical schedule sends fewer, larger "
                      "ones.",
                      slowest.messages);
  outs() << "\n";
  return 0;
}

/// The per-destination pattern of per-level fractions: a level's fraction
/// is spread evenly over the ranks at that distance.
static Expected<Pattern> patternFromLevelFractions(const topo::Topology &topology) {
  size_t expected = topology.levels.size() + 1;
  if (levelFractions.size() != expected)
    return createStringError(
        inconvertibleErrorCode(),
        formatv("--level-fractions: expected {0} fractions (the rank itself, "
                "then one per level), got {1}",
                expected, levelFractions.size()));
  Pattern pattern;
  double sum = 0;
  for (auto [index, fraction] : enumerate(levelFractions)) {
    if (!std::isfinite(fraction) || fraction < 0 || fraction > 1)
      return createStringError(
          inconvertibleErrorCode(),
          formatv("--level-fractions: fraction {0} must be in [0, 1], got {1}",
                  index, format("%g", fraction)));
    int64_t destinations = ranksAtShare(topology, index);
    if (destinations == 0 && fraction > 0)
      return createStringError(
          inconvertibleErrorCode(),
          formatv("--level-fractions: fraction {0} is {1}, but level '{2}' "
                  "has fanout 1: no rank is at that distance",
                  index, format("%g", fraction), topology.levels[index - 1].name));
    pattern.shares.push_back(destinations ? fraction / double(destinations)
                                          : 0.0);
    sum += fraction;
  }
  if (std::abs(sum - 1) > 1e-3)
    return createStringError(
        inconvertibleErrorCode(),
        formatv("--level-fractions: the fractions sum to {0}, expected 1",
                format("%.6g", sum)));
  // Renormalise the rounding of printed fractions away.
  for (double &share : pattern.shares)
    share /= sum;
  if (Error error = verify(topology, pattern))
    return createStringError(inconvertibleErrorCode(),
                             "--level-fractions: " + toString(std::move(error)));
  return pattern;
}

/// The first word printed is the predicted time in us of the fastest default
/// schedule, so that scripts can read it.
static int evaluatePattern(const topo::Topology &topology,
                           const Workload &workload) {
  Expected<Pattern> pattern = patternFromLevelFractions(topology);
  if (!pattern)
    return fail(toString(pattern.takeError()));
  std::optional<std::pair<Schedule, double>> best;
  for (Schedule schedule : defaultSchedules()) {
    double us = evaluate(topology, *pattern, workload, schedule).totalUs();
    if (!best || fasterThan(us, best->second))
      best = {schedule, us};
  }
  outs() << format("%.1f", best->second) << " us predicted, "
         << stringifySchedule(best->first) << " (the fastest schedule "
         << "tamoe-opt emits by default)\n";
  outs() << topology.name << ": " << describeTree(topology) << "\n";
  printWorkload(workload);
  for (Schedule schedule : allSchedules())
    outs() << formatv("  {0,-20}", stringifySchedule(schedule))
           << format("%10.1f us\n",
                     evaluate(topology, *pattern, workload, schedule)
                         .totalUs());
  return 0;
}

namespace {
/// A --traffic file: counts the runtime dispatched, and the bytes it
/// measured for some schedules.
struct MeasuredTraffic {
  /// [rank] -> bytes {within its node, across nodes}.
  using Counters = std::vector<std::pair<double, double>>;
  Workload workload;
  Traffic traffic;
  std::vector<std::pair<Schedule, Counters>> measured;
};
} // namespace

/// A P x `columns` matrix of numbers >= 0 from field `key`, row-major.
static Expected<std::vector<double>> readMatrix(const json::Object &object,
                                                StringRef key, int64_t rows,
                                                int64_t columns,
                                                StringRef path) {
  auto problem = [&] {
    return createStringError(
        inconvertibleErrorCode(),
        formatv("{0}: {1}: expected {2} rows (one per source rank) of {3} "
                "numbers >= 0",
                path, key, rows, columns));
  };
  const json::Array *array = object.getArray(key);
  if (!array || int64_t(array->size()) != rows)
    return problem();
  std::vector<double> values;
  for (const json::Value &row : *array) {
    const json::Array *cells = row.getAsArray();
    if (!cells || int64_t(cells->size()) != columns)
      return problem();
    for (const json::Value &cell : *cells) {
      std::optional<double> number = cell.getAsNumber();
      if (!number || !(*number >= 0) || !std::isfinite(*number))
        return problem();
      values.push_back(*number);
    }
  }
  return values;
}

static Expected<MeasuredTraffic> readTraffic(const topo::Topology &topology,
                                             StringRef path) {
  auto error = [&](const Twine &message) {
    return createStringError(inconvertibleErrorCode(), path + ": " + message);
  };
  Expected<std::string> text = topo::readTextFile(path);
  if (!text)
    return text.takeError();
  Expected<json::Value> root = topo::parseJSON(*text, path);
  if (!root)
    return root.takeError();
  const json::Object *object = root->getAsObject();
  if (!object)
    return error("expected an object");
  // A misspelt key would leave its part unchecked ("mesured": nothing is
  // compared, and the check passes).
  for (const json::Object::value_type *entry : json::sortedElements(*object))
    if (!is_contained({"row_bytes", "topk", "assignments", "unique_tokens",
                       "measured"},
                      StringRef(entry->first)))
      return error("unknown field '" + entry->first.str() +
                   "' (row_bytes, topk, assignments, unique_tokens, "
                   "measured)");
  MeasuredTraffic result;
  for (auto [key, out] : {std::pair<StringRef, int64_t *>{
                              "row_bytes", &result.workload.hidden},
                          {"topk", &result.workload.topK}}) {
    std::optional<int64_t> value = object->getInteger(key);
    if (!value || *value < 1)
      return error(key + ": expected an integer >= 1");
    *out = *value;
  }
  result.workload.bytesPerElement = 1;
  int64_t ranks = topology.numRanks();
  int64_t nodes = topology.numNodes();
  result.traffic.ranks = ranks;
  result.traffic.nodes = nodes;
  Expected<std::vector<double>> assignments =
      readMatrix(*object, "assignments", ranks, ranks, path);
  if (!assignments)
    return assignments.takeError();
  result.traffic.assignments = std::move(*assignments);
  Expected<std::vector<double>> unique =
      readMatrix(*object, "unique_tokens", ranks, nodes, path);
  if (!unique)
    return unique.takeError();
  result.traffic.uniqueTokens = std::move(*unique);
  // A token sends a node at most k of its assignments, each to one expert:
  // a tokens' count outside [assignments / k, assignments] cannot happen.
  int64_t perNode = topology.levels[0].fanout, k = result.workload.topK;
  for (int64_t rank = 0; rank < ranks; ++rank)
    for (int64_t node = 0; node < nodes; ++node) {
      double sent = 0;
      for (int64_t j = node * perNode; j < (node + 1) * perNode; ++j)
        sent += result.traffic.assignments[rank * ranks + j];
      double tokens = result.traffic.uniqueTokens[rank * nodes + node];
      double slack = 1e-9 * std::max(1.0, sent);
      if (tokens > sent + slack || tokens < sent / double(k) - slack)
        return error(formatv("unique_tokens[{0}][{1}] = {2}, but the {3} "
                             "assignments rank {0} sends to node {1} come "
                             "from {4} to {3} tokens at top-{5}",
                             rank, node, format("%g", tokens),
                             format("%g", sent), format("%g", sent / double(k)),
                             k));
    }
  if (object->get("measured") && !object->getObject("measured"))
    return error("measured: expected an object of schedules");
  if (const json::Object *measured = object->getObject("measured")) {
    // Present but empty would compare nothing and pass.
    if (measured->empty())
      return error("measured: expected the counters of at least one "
                   "schedule (flat, hierarchical, hierarchical+dedup)");
    for (const json::Object::value_type *entry :
         json::sortedElements(*measured))
      if (none_of(allSchedules(), [&](Schedule s) {
            return stringifySchedule(s) == StringRef(entry->first);
          }))
        return error("measured: unknown schedule '" + entry->first.str() +
                     "' (flat, hierarchical, hierarchical+dedup)");
    // In the order reports list the schedules.
    for (Schedule schedule : allSchedules()) {
      StringRef name = stringifySchedule(schedule);
      if (!measured->get(name))
        continue;
      std::string where = (path + ": measured").str();
      Expected<std::vector<double>> pairs =
          readMatrix(*measured, name, ranks, 2, where);
      if (!pairs)
        return pairs.takeError();
      MeasuredTraffic::Counters perRank;
      for (int64_t rank = 0; rank < ranks; ++rank)
        perRank.push_back({(*pairs)[2 * rank], (*pairs)[2 * rank + 1]});
      result.measured.push_back({schedule, std::move(perRank)});
    }
  }
  return result;
}

/// --traffic: the bytes every rank sends, as the routed evaluator predicts
/// them from measured counts, next to the runtime's counters.
static int evaluateTraffic(const topo::Topology &topology) {
  if (!levelFractions.empty())
    return fail("--traffic and --level-fractions: give one of them");
  for (const cl::Option *option : std::initializer_list<const cl::Option *>{
           &tokens, &hidden, &dtype, &topK})
    if (option->getNumOccurrences())
      return fail("--" + option->ArgStr +
                  ": not with --traffic, whose file gives the workload "
                  "(row_bytes, topk, assignments)");
  Expected<MeasuredTraffic> input = readTraffic(topology, trafficPath);
  if (!input)
    return fail(toString(input.takeError()));
  // The measured schedules, or every schedule with nothing to compare.
  std::vector<std::pair<Schedule, const MeasuredTraffic::Counters *>> reports;
  for (const auto &[schedule, counters] : input->measured)
    reports.push_back({schedule, &counters});
  if (reports.empty())
    for (Schedule schedule : allSchedules())
      reports.push_back({schedule, nullptr});
  int failures = 0;
  for (auto [schedule, measured] : reports) {
    Cost cost = evaluate(topology, input->traffic, input->workload, schedule);
    outs() << stringifySchedule(schedule)
           << ": bytes each rank sends within its node and across nodes\n";
    int64_t matching = 0, ranks = input->traffic.ranks;
    for (int64_t rank = 0; rank < ranks; ++rank) {
      double within = 0, across = 0;
      for (const StageCost &stage : cost.stages) {
        within += stage.sentWithinNode[rank];
        across += stage.sentAcrossNodes[rank];
      }
      if (!std::isfinite(within) || !std::isfinite(across)) {
        outs().flush();
        return fail(formatv("{0}: the bytes rank {1} sends overflow: "
                            "row_bytes times the assignments is too large",
                            trafficPath, rank));
      }
      outs() << formatv("  rank {0}: {1} within, {2} across", rank,
                        format("%.0f", within), format("%.0f", across));
      if (measured) {
        auto [measuredWithin, measuredAcross] = (*measured)[rank];
        bool same = within == measuredWithin && across == measuredAcross;
        matching += same;
        outs() << formatv("; measured {0} within, {1} across{2}",
                          format("%.0f", measuredWithin),
                          format("%.0f", measuredAcross),
                          same ? "" : "  <- differs");
      }
      outs() << "\n";
    }
    if (measured) {
      outs() << formatv("{0}: the prediction equals the measured counters "
                        "on {1} of {2} ranks\n",
                        stringifySchedule(schedule), matching, ranks);
      failures += matching != ranks;
    }
  }
  outs().flush();
  return failures ? fail("the prediction differs from the measured "
                         "counters (above)")
                  : 0;
}

//===----------------------------------------------------------------------===//
// Conversions
//===----------------------------------------------------------------------===//

/// The helper executable `name`, installed next to this one, or a message
/// that `command` needs it (`why`) and it is not there.
static Expected<std::string> findHelper(const char *argv0, StringRef name,
                                        StringRef command, StringRef why) {
  std::string self = sys::fs::getMainExecutable(argv0, (void *)&fail);
  SmallString<256> helper(sys::path::parent_path(self));
  sys::path::append(helper, name);
  if (!sys::fs::can_execute(helper))
    return createStringError(inconvertibleErrorCode(),
                             command + " needs " + helper + " (" + why +
                                 "): not found");
  return std::string(helper);
}

/// to-attr, and to-json of a module: tamoe-topo-mlir reads or writes the
/// MLIR.
static int runMLIRConversion(const char *argv0, StringRef command) {
  Expected<std::string> helper =
      findHelper(argv0, "tamoe-topo-mlir", command,
                 "it reads and writes MLIR for tamoe-topo");
  if (!helper)
    return fail(toString(helper.takeError()));
  std::string message;
  int status = sys::ExecuteAndWait(*helper, {*helper, command, inputPath},
                                   std::nullopt, {}, 0, 0, &message);
  if (status < 0)
    return fail(*helper + ": " + message);
  return status;
}

/// calibrate and validate: tamoe-topo-measure takes over the process (the
/// launcher's rank stays this process) with the same arguments.
static int runMeasurement(const char *argv0, char **argv) {
  Expected<std::string> helper =
      findHelper(argv0, "tamoe-topo-measure", argv[1],
                 "it times exchanges through the runtime; it is built with "
                 "TAMOE_BUILD_RUNTIME");
  if (!helper)
    return fail(toString(helper.takeError()));
  argv[0] = helper->data();
  execv(helper->c_str(), argv);
  return fail(*helper + ": " + std::strerror(errno));
}

int main(int argc, char **argv) {
  if (argc > 1 && (StringRef(argv[1]) == "calibrate" ||
                   StringRef(argv[1]) == "validate"))
    return runMeasurement(argv[0], argv);
  InitLLVM init(argc, argv);
  // --help shows the tool's options, not the hundreds that LLVM registers
  // for its code generators (--help-hidden lists those).
  cl::HideUnrelatedOptions({&plannerOptions, &importOptions});
  cl::AddExtraVersionPrinter(tamoe::printVersion);
  cl::ParseCommandLineOptions(argc, argv, "tamoe topology tool\n");

  if (toAttrCommand) {
    // Checked here, so that a bad file reads as it does in every command.
    Expected<topo::Topology> topology = loadTopology(inputPath);
    if (!topology)
      return fail(toString(topology.takeError()));
    return runMLIRConversion(argv[0], "to-attr");
  }
  if (toJSONCommand) {
    if (!StringRef(inputPath).ends_with(".json"))
      return runMLIRConversion(argv[0], "to-json");
    // A cluster file, rescaled by --top-fanout.
    Expected<topo::Topology> topology = loadTopology(inputPath);
    if (!topology)
      return fail(toString(topology.takeError()));
    topo::writeTopologyJSON(*topology, outs());
    outs() << "\n";
    return 0;
  }
  if (importNCCLCommand) {
    if (importNodes < 1)
      return fail(formatv("--nodes: expected >= 1, got {0}", importNodes));
    Expected<std::string> text = topo::readTextFile(inputPath);
    if (!text)
      return fail(toString(text.takeError()));
    Expected<topo::Topology> topology =
        topo::importNCCLTopology(*text, inputPath, importNodes, importName);
    if (!topology)
      return fail(toString(topology.takeError()));
    topo::writeTopologyJSON(*topology, outs());
    outs() << "\n";
    return 0;
  }
  if (checkCommand) {
    Expected<topo::Topology> topology = loadTopology(inputPath);
    if (!topology)
      return fail(toString(topology.takeError()));
    return printSummary(*topology);
  }
  if (!planCommand && !compareCommand && !overlapCommand && !explainCommand &&
      !evaluateCommand)
    return fail("expected a subcommand: check, to-attr, to-json, plan, "
                "compare, overlap, explain, evaluate, import-nccl, calibrate "
                "or validate (see --help)");
  Expected<Workload> workload = workloadFromOptions();
  if (!workload)
    return fail(toString(workload.takeError()));
  Expected<PolicyOptions> options = policyOptionsFromFlags();
  if (!options)
    return fail(toString(options.takeError()));
  if (compareCommand)
    return compare(*workload, *options);
  if (overlapCommand)
    return overlap(*workload, *options);
  Expected<topo::Topology> topology = loadTopology(inputPath);
  if (!topology)
    return fail(toString(topology.takeError()));
  if (planCommand)
    return plan(*topology, *workload, *options);
  if (evaluateCommand)
    return trafficPath.empty() ? evaluatePattern(*topology, *workload)
                               : evaluateTraffic(*topology);
  return explain(*topology, *workload, *options);
}
