//===- tamoe-fuzz.cpp - Mutation fuzzer for tamoe-opt and topology files --===//
//
// tamoe-fuzz ir DIR...    IR mutated from the .mlir files under DIR, through
//                         tamoe-opt's pipeline and lowering
// tamoe-fuzz json DIR...  topology files mutated from the .json files under
//                         DIR, through the loader, the planner and tamoe-topo
//
// Each input is derived from a seed input by one to three mutations (a
// number replaced by an extreme one, a line deleted, repeated, swapped or
// taken from another seed, a word replaced, bytes changed) with a generator
// seeded by --seed, so that a run is reproducible. Inputs run in child
// processes (fork), so that a crash or a hang is caught and the campaign
// goes on; the input is then saved under --crashes. Besides crashes, each
// target checks what must hold of every accepted input:
//
// - ir: the output of the pipeline parses back, as does the lowered module;
// - json: every predicted time is finite and >= 0, the JSON and attribute
//   forms of the topology read back equal, and tamoe-topo (every
//   --tool-every-th input) exits 0 or 1 with no nan or inf in its output.
//
// The exit status is 1 when any input crashed, hung or broke an invariant.
// libFuzzer is not used: its coverage would need the whole project built a
// second time with clang, which doubles the CI's build.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Dialect/TAMoE/IR/TAMoE.h"
#include "tamoe/InitAll.h"
#include "tamoe/Planner/Policies.h"
#include "tamoe/Topology/Topology.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/Regex.h"
#include "llvm/Support/xxhash.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <random>

using namespace llvm;
namespace topo = tamoe::topology;
namespace planner = tamoe::planner;

static cl::OptionCategory category("tamoe-fuzz options");
static cl::SubCommand irCommand("ir", "Fuzz tamoe-opt's pipeline and lowering "
                                      "with IR mutated from .mlir files");
static cl::SubCommand jsonCommand("json",
                                  "Fuzz the topology loader, the planner and "
                                  "tamoe-topo with mutated .json files");
static cl::list<std::string> corpusDirs(cl::Positional, cl::OneOrMore,
                                        cl::desc("<directories of seeds>"),
                                        cl::sub(irCommand),
                                        cl::sub(jsonCommand));
#define BOTH cl::sub(irCommand), cl::sub(jsonCommand), cl::cat(category)
static cl::opt<uint64_t> seed("seed", cl::desc("Seed of the mutations (1)"),
                              cl::init(1), BOTH);
static cl::opt<uint64_t> maxRuns("max-runs",
                                 cl::desc("Inputs to run (0: no limit)"),
                                 cl::init(0), BOTH);
static cl::opt<double> maxSeconds("max-seconds",
                                  cl::desc("Stop after this long (0: no "
                                           "limit)"),
                                  cl::init(0), BOTH);
static cl::opt<unsigned> inputTimeout("input-timeout",
                                      cl::desc("Seconds one input may take "
                                               "before it counts as a hang "
                                               "(30)"),
                                      cl::init(30), BOTH);
static cl::opt<std::string>
    replayFile("replay",
               cl::desc("Run one saved input in this process (as the "
                        "campaign would), instead of a campaign"),
               cl::init(""), BOTH);
static cl::opt<std::string> crashesDir("crashes",
                                       cl::desc("Where failing inputs are "
                                                "saved (default: none)"),
                                       cl::init(""), BOTH);
static cl::opt<std::string>
    topologyFile("topology",
                 cl::desc("ir: a cluster file the pipeline also runs with"),
                 cl::init(""), cl::sub(irCommand), cl::cat(category));
static cl::opt<std::string>
    loweredDir("save-lowered",
               cl::desc("ir: save lowered programs with a @main here, to run "
                        "them (default: none)"),
               cl::init(""), cl::sub(irCommand), cl::cat(category));
static cl::opt<unsigned> maxLowered("max-lowered",
                                    cl::desc("ir: at most this many saved "
                                             "programs (100)"),
                                    cl::init(100), cl::sub(irCommand),
                                    cl::cat(category));
static cl::opt<std::string> topoTool("tamoe-topo",
                                     cl::desc("json: the tamoe-topo to run "
                                              "(default: none)"),
                                     cl::init(""), cl::sub(jsonCommand),
                                     cl::cat(category));
static cl::opt<unsigned> toolEvery("tool-every",
                                   cl::desc("json: run tamoe-topo on every "
                                            "n-th input (25)"),
                                   cl::init(25), cl::sub(jsonCommand),
                                   cl::cat(category));

/// A child's exit status when an input broke an invariant.
static constexpr int kInvariantBroken = 3;
/// What an evaluation returns when the child must not go on: MLIR 22's
/// parser may have corrupted the heap (below), so the next input runs in a
/// fresh child.
static constexpr int kRestart = 4;

namespace {
/// What the children count, in memory shared with the parent.
struct Shared {
  /// The input a child is at.
  size_t current = 0;
  /// Inputs the parser (or loader) accepted, and those that then passed the
  /// whole target (the pipeline, the lowering; the planner, the tools).
  uint64_t accepted = 0, passed = 0;
};
Shared *shared = nullptr;
} // namespace

//===----------------------------------------------------------------------===//
// Seeds and mutations
//===----------------------------------------------------------------------===//

/// The seed inputs: every file with `extension` under the directories,
/// split at "// -----" (split-input-file tests) for IR.
static std::vector<std::string> loadSeeds(StringRef extension) {
  std::vector<std::string> seeds;
  for (const std::string &dir : corpusDirs) {
    std::error_code ec;
    std::vector<std::string> paths;
    for (sys::fs::recursive_directory_iterator it(dir, ec), end;
         it != end && !ec; it.increment(ec))
      if (sys::path::extension(it->path()) == extension)
        paths.push_back(it->path());
    // Directory order is the file system's; sorted, a run is reproducible.
    llvm::sort(paths);
    for (const std::string &path : paths) {
      ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
          MemoryBuffer::getFile(path);
      if (!buffer)
        continue;
      SmallVector<StringRef> pieces;
      (*buffer)->getBuffer().split(pieces, "// -----");
      for (StringRef piece : pieces)
        if (!piece.trim().empty())
          seeds.push_back(piece.str());
    }
  }
  return seeds;
}

namespace {
class Mutator {
public:
  /// Inputs start from one of `bases` (the valid seeds, so that most
  /// inputs get past the parser); lines and words come from any of `seeds`.
  Mutator(uint64_t seed, std::vector<std::string> bases,
          const std::vector<std::string> &seeds)
      : random(seed), bases(std::move(bases)), seeds(seeds) {}

  /// The next input: a seed with one mutation (half of the time), two or
  /// three: each one makes the input likelier to be rejected early.
  std::string next() {
    std::string text;
    do {
      text = bases[pick(bases.size())];
      for (size_t count = pick(2) ? 1 : 2 + pick(2); count > 0; --count)
        mutate(text);
    } while (hasMalformedDimensions(text) || hasEmptyReassociation(text) ||
             hasRepeatedBlockLabel(text));
    return text;
  }

private:
  size_t pick(size_t n) { return n ? random() % n : 0; }

  void mutate(std::string &text) {
    switch (pick(7)) {
    case 0:
    case 1:
      return replaceNumber(text);
    case 2:
      return editLine(text);
    case 3:
      return spliceLine(text);
    case 4:
      return replaceWord(text);
    default:
      return editBytes(text);
    }
  }

  /// Numbers at the edges of every range the inputs check.
  void replaceNumber(std::string &text) {
    static const char *const interesting[] = {"0",
                                              "1",
                                              "-1",
                                              "2",
                                              "3",
                                              "7",
                                              "64",
                                              "1048576",
                                              "1048577",
                                              "2147483647",
                                              "-2147483648",
                                              "4294967296",
                                              "9223372036854775807",
                                              "-9223372036854775808",
                                              "18446744073709551616",
                                              "1152921504606846978",
                                              "0.0",
                                              "-0.0",
                                              "0.5",
                                              "1e-300",
                                              "1e308",
                                              "1e999",
                                              "0x7FF8000000000000",
                                              "0x7FF0000000000000",
                                              "1.0e-3",
                                              "100000",
                                              "1000000",
                                              "1000001"};
    std::vector<std::pair<size_t, size_t>> numbers;
    for (size_t i = 0; i < text.size();) {
      // Not a result number (%x#2): MLIR 22's parser allocates that many
      // results and aborts on a large one, in mlir-opt too.
      if (isDigit(text[i]) && (i == 0 || !isAlnum(text[i - 1])) &&
          (i == 0 || text[i - 1] != '#')) {
        size_t end = i;
        while (end < text.size() &&
               (isAlnum(text[end]) || text[end] == '.' ||
                ((text[end] == '-' || text[end] == '+') &&
                 (text[end - 1] == 'e' || text[end - 1] == 'E'))))
          ++end;
        numbers.emplace_back(i, end - i);
        i = end;
      } else {
        ++i;
      }
    }
    if (numbers.empty())
      return editBytes(text);
    auto [at, length] = numbers[pick(numbers.size())];
    text.replace(at, length, interesting[pick(std::size(interesting))]);
  }

  /// Whether a linalg op's `dimensions = [...]` (reduce, broadcast) or
  /// `permutation = [...]` (transpose) is anything but a list of small
  /// integers. MLIR 22's parsers of those ops use the attribute without
  /// checking that it parsed, and crash (in mlir-opt too) on `[1e308]`,
  /// `[0}]` or an overflowing integer: an upstream bug, so such inputs are
  /// not generated.
  static bool hasMalformedDimensions(StringRef text) {
    static const llvm::Regex attribute("^(dimensions|permutation) *="),
        wellFormed("^(dimensions|permutation) = "
                   "\\[([0-9]{1,9}(, *[0-9]{1,9})*)?\\]");
    for (StringRef keyword : {"dimensions", "permutation"})
      for (size_t at = text.find(keyword); at != StringRef::npos;
           at = text.find(keyword, at + 1))
        if (attribute.match(text.substr(at)) &&
            !wellFormed.match(text.substr(at)))
          return true;
    return false;
  }

  /// Whether a tensor.expand_shape or collapse_shape has an empty group in
  /// its reassociation (`[[]]`, `[[0], []]`; a rank-0 result's `[]` is not
  /// one). MLIR 22's verifier of those ops crashes on it (in mlir-opt
  /// too): an upstream bug, so such inputs are not generated.
  static bool hasEmptyReassociation(StringRef text) {
    static const llvm::Regex emptyGroup(
        "(expand|collapse)_shape[^\n]*[[,] *\\[ *\\]");
    return emptyGroup.match(text);
  }

  /// Whether a block label is defined twice with no region boundary (a line
  /// with a brace) between them: when a region's block is defined again,
  /// MLIR 22's parser frees the region's operations while they are still
  /// in use and corrupts the heap (valgrind: an invalid write in
  /// Operation::dropAllReferences after linalg.generic's parse fails), so
  /// a later input crashes somewhere unrelated: an upstream bug, so such
  /// inputs are not generated.
  static bool hasRepeatedBlockLabel(StringRef text) {
    llvm::StringSet<> labels;
    for (StringRef line : split(text, '\n')) {
      line = line.trim();
      if (line.starts_with("//"))
        continue;
      if (line.contains('{') || line.contains('}')) {
        labels.clear();
        continue;
      }
      if (!line.starts_with("^"))
        continue;
      StringRef label = line.take_until(
          [](char c) { return c == '(' || c == ':' || c == ' '; });
      if (!labels.insert(label).second)
        return true;
    }
    return false;
  }

  static std::vector<std::string> lines(const std::string &text) {
    std::vector<std::string> result;
    for (StringRef line : split(text, '\n'))
      result.push_back(line.str());
    return result;
  }

  static std::string join(const std::vector<std::string> &lines) {
    return llvm::join(lines, "\n");
  }

  void editLine(std::string &text) {
    std::vector<std::string> all = lines(text);
    size_t a = pick(all.size()), b = pick(all.size());
    switch (pick(3)) {
    case 0:
      all.erase(all.begin() + a);
      break;
    case 1:
      all.insert(all.begin() + a, all[b]);
      break;
    default:
      std::swap(all[a], all[b]);
    }
    text = join(all);
  }

  void spliceLine(std::string &text) {
    std::vector<std::string> donor = lines(seeds[pick(seeds.size())]);
    std::vector<std::string> all = lines(text);
    all.insert(all.begin() + pick(all.size() + 1), donor[pick(donor.size())]);
    text = join(all);
  }

  static std::vector<std::pair<size_t, size_t>> words(const std::string &t) {
    std::vector<std::pair<size_t, size_t>> result;
    for (size_t i = 0; i < t.size();) {
      if (isAlpha(t[i]) || t[i] == '_') {
        size_t end = i;
        while (end < t.size() && (isAlnum(t[end]) || t[end] == '_'))
          ++end;
        result.emplace_back(i, end - i);
        i = end;
      } else {
        ++i;
      }
    }
    return result;
  }

  void replaceWord(std::string &text) {
    const std::string &donor = seeds[pick(seeds.size())];
    auto targets = words(text), sources = words(donor);
    if (targets.empty() || sources.empty())
      return editBytes(text);
    auto [at, length] = targets[pick(targets.size())];
    auto [from, fromLength] = sources[pick(sources.size())];
    text.replace(at, length, donor.substr(from, fromLength));
  }

  void editBytes(std::string &text) {
    static const char bytes[] = "{}[]<>(),:\"'0-9x.e %@#\n\\";
    size_t at = pick(text.size() + 1);
    switch (pick(3)) {
    case 0:
      if (at < text.size())
        text.erase(at, 1 + pick(8));
      break;
    case 1:
      text.insert(at, 1, bytes[pick(sizeof(bytes) - 1)]);
      break;
    default:
      if (at < text.size())
        text[at] = char(random());
    }
  }

  std::mt19937_64 random;
  std::vector<std::string> bases;
  const std::vector<std::string> &seeds;
};
} // namespace

//===----------------------------------------------------------------------===//
// Targets (run in the child)
//===----------------------------------------------------------------------===//

namespace {
/// What the IR target shares with its children: a context with every
/// dialect loaded before the fork, so that a child only parses and runs.
struct IRTarget {
  mlir::MLIRContext context;

  explicit IRTarget(mlir::DialectRegistry &registry) : context(registry) {
    context.disableMultithreading();
    context.loadAllAvailableDialects();
    // Diagnostics are the expected outcome of most mutants; only crashes,
    // hangs and broken invariants are findings.
    context.getDiagEngine().registerHandler(
        [](mlir::Diagnostic &) { return mlir::success(); });
  }

  /// The module, or null when the text is not valid IR.
  mlir::OwningOpRef<mlir::ModuleOp> parse(StringRef text) {
    mlir::OwningOpRef<mlir::ModuleOp> module =
        mlir::parseSourceString<mlir::ModuleOp>(text, &context);
    if (module && failed(mlir::verify(*module)))
      return nullptr;
    return module;
  }

  mlir::LogicalResult run(mlir::ModuleOp module, StringRef pipeline) {
    // On the module itself, as tamoe-opt's: `pipeline` lists passes on it.
    mlir::PassManager pm(&context, mlir::ModuleOp::getOperationName());
    if (failed(mlir::parsePassPipeline(pipeline, pm)))
      return mlir::failure();
    return pm.run(module);
  }

  static std::string print(mlir::ModuleOp module) {
    std::string text;
    raw_string_ostream os(text);
    module.print(os);
    return text;
  }

  /// 0, or kInvariantBroken. `variant` picks the pipeline's options.
  int evaluate(StringRef text, uint64_t variant, uint64_t index) {
    mlir::OwningOpRef<mlir::ModuleOp> module = parse(text);
    // When the parse of an op with a region fails (linalg.generic: a block
    // defined twice, a value used before a definition that then fails),
    // MLIR 22's parser frees the region's operations while they are still
    // in use (valgrind: an invalid write in Operation::dropAllReferences),
    // and a later input in the same process crashes somewhere unrelated: an
    // upstream bug, so the child ends there and the next input runs in a
    // fresh one.
    if (!module)
      return text.contains("^bb") ? kRestart : 0;
    ++shared->accepted;
    std::string options[] = {"",
                             "mode=hierarchical dedup=true",
                             "policy=optimal mode=flat",
                             topologyFile.empty()
                                 ? std::string("policy=fastermoe")
                                 : "topology=" + topologyFile,
                             "mode=flat chunks=2",
                             "chunks=0 device-gflops=1000",
                             "mode=hierarchical dedup=true chunks=2"};
    std::string pipeline =
        "tamoe-pipeline{" + options[variant % std::size(options)] + "}";
    if (succeeded(run(*module, pipeline))) {
      // What tamoe-opt writes must read back.
      if (!parse(print(*module))) {
        errs() << "pipeline output does not parse back\n";
        return kInvariantBroken;
      }
    }
    mlir::OwningOpRef<mlir::ModuleOp> lowered = parse(text);
    if (!lowered || failed(run(*lowered, "tamoe-to-llvm")))
      return 0;
    std::string output = print(*lowered);
    if (!parse(output)) {
      errs() << "lowered output does not parse back\n";
      return kInvariantBroken;
    }
    ++shared->passed;
    if (!loweredDir.empty() && StringRef(output).contains("@main") &&
        countFiles(loweredDir) < maxLowered)
      writeFile(formatv("{0}/lowered-{1}.mlir", loweredDir, index).str(),
                output);
    return 0;
  }

  static unsigned countFiles(StringRef dir) {
    std::error_code ec;
    unsigned count = 0;
    for (sys::fs::directory_iterator it(dir, ec), end; it != end && !ec;
         it.increment(ec))
      ++count;
    return count;
  }

  static void writeFile(const std::string &path, StringRef text) {
    std::error_code ec;
    raw_fd_ostream os(path, ec);
    if (!ec)
      os << text;
  }
};

/// Whether a tool's output mentions a number that is not one.
bool printsNonNumber(StringRef output) {
  for (StringRef word : {"nan", "inf"}) {
    for (size_t at = output.find(word); at != StringRef::npos;
         at = output.find(word, at + 1)) {
      bool startsWord = at == 0 || !isAlnum(output[at - 1]);
      bool endsWord = at + 3 >= output.size() || !isAlnum(output[at + 3]);
      if (startsWord && endsWord)
        return true;
    }
  }
  return false;
}

struct JSONTarget {
  mlir::MLIRContext context;

  explicit JSONTarget(mlir::DialectRegistry &registry) : context(registry) {
    context.disableMultithreading();
    context.loadAllAvailableDialects();
    context.getDiagEngine().registerHandler(
        [](mlir::Diagnostic &) { return mlir::success(); });
  }

  static int broken(const Twine &what) {
    errs() << what << "\n";
    return kInvariantBroken;
  }

  int evaluate(StringRef text, uint64_t index) {
    Expected<topo::Topology> tree = topo::parseTopologyJSON(text, "fuzz");
    bool valid = static_cast<bool>(tree);
    if (!tree) {
      consumeError(tree.takeError());
    } else if (int status = checkAccepted(*tree)) {
      return status;
    } else {
      ++shared->accepted;
    }
    if (!topoTool.empty() && index % toolEvery == 0)
      return runTool(text, valid);
    return 0;
  }

  /// What must hold of every topology the loader accepts.
  int checkAccepted(const topo::Topology &tree) {
    std::string json;
    raw_string_ostream jsonStream(json);
    topo::writeTopologyJSON(tree, jsonStream, /*indent=*/0);
    Expected<topo::Topology> again =
        topo::parseTopologyJSON(json, "round trip");
    if (!again || !(*again == tree))
      return broken("the JSON form does not read back equal");
    auto attr = mlir::tamoe::TopologyAttr::get(&context, tree);
    std::string printed;
    raw_string_ostream os(printed);
    mlir::Attribute(attr).print(os);
    mlir::Attribute parsed = mlir::parseAttribute(printed, &context);
    auto reread = dyn_cast_or_null<mlir::tamoe::TopologyAttr>(parsed);
    if (!reread || !(reread.toTopology() == tree))
      return broken("the attribute does not read back equal: " + printed);
    // Workloads from one token to a large layer, as the tools take them.
    for (planner::Workload workload :
         {planner::Workload{1, 1, 1, 1}, planner::Workload{},
          planner::Workload{1 << 20, 1 << 14, 4, 8}}) {
      std::optional<planner::Plan> uniform;
      for (planner::Policy policy : planner::allPolicies()) {
        Expected<planner::Plan> plan =
            planner::makePlan(tree, policy, planner::PolicyOptions(), workload);
        if (!plan)
          return broken("makePlan failed on a valid topology: " +
                        toString(plan.takeError()));
        if (!uniform)
          uniform = *plan;
        for (planner::Schedule schedule : planner::allSchedules()) {
          double us = plan->cost(schedule).totalUs();
          if (!std::isfinite(us) || us < 0)
            return broken(formatv("{0} {1}: {2} us",
                                  planner::stringifyPolicy(policy),
                                  planner::stringifySchedule(schedule), us));
        }
        std::optional<double> speedup = planner::speedupOverUniform(
            *plan, *uniform, planner::defaultSchedules());
        if (speedup && (!std::isfinite(*speedup) || *speedup <= 0))
          return broken(formatv("speed-up {0}", *speedup));
      }
    }
    return 0;
  }

  /// tamoe-topo's commands on the input: exit 0 (1 for an input it
  /// rejects), never a signal, and no nan or inf in what it prints.
  int runTool(StringRef text, bool valid) {
    SmallString<128> input, output;
    if (sys::fs::createTemporaryFile("tamoe-fuzz", "json", input) ||
        sys::fs::createTemporaryFile("tamoe-fuzz", "out", output))
      return 0;
    IRTarget::writeFile(input.str().str(), text);
    int status = 0;
    for (StringRef command :
         {"check", "plan", "explain", "compare", "to-attr", "to-json"}) {
      std::string error;
      std::optional<StringRef> redirects[] = {std::nullopt, output.str(),
                                              output.str()};
      int rc =
          sys::ExecuteAndWait(topoTool, {topoTool, command, input},
                              std::nullopt, redirects, inputTimeout, 0, &error);
      ErrorOr<std::unique_ptr<MemoryBuffer>> printed =
          MemoryBuffer::getFile(output);
      StringRef out = printed ? (*printed)->getBuffer() : "";
      // A message may quote an input's inf; a report may not print one.
      if (rc < 0 || rc > 1 || (valid && rc != 0) || (!valid && rc != 1) ||
          (valid && printsNonNumber(out))) {
        status = broken(formatv("tamoe-topo {0} exited {1} ({2}):\n{3}",
                                command, rc, error, out));
        break;
      }
    }
    sys::fs::remove(input);
    sys::fs::remove(output);
    if (!status)
      ++shared->passed;
    return status;
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// The campaign
//===----------------------------------------------------------------------===//

namespace {
struct Counts {
  uint64_t runs = 0, crashes = 0, hangs = 0, broken = 0;
};
} // namespace

/// Saves a failing input and says so.
static void report(StringRef kind, StringRef input, StringRef extension) {
  std::string name =
      formatv("{0}-{1:x16}{2}", kind, xxh3_64bits(input), extension).str();
  outs() << "tamoe-fuzz: " << kind << ": " << name << "\n";
  if (crashesDir.empty())
    return;
  sys::fs::create_directories(crashesDir);
  IRTarget::writeFile(crashesDir + "/" + name, input);
}

/// Runs inputs from `mutator` through `evaluate` until a limit is reached.
/// A child process runs them a batch at a time, recording in shared memory
/// which one it is at; when it dies or reports a broken invariant, that
/// input is the culprit, and a new child goes on with the next.
template <typename Evaluate>
static Counts campaign(Mutator &mutator, StringRef extension,
                       Evaluate evaluate) {
  constexpr size_t kBatch = 200;
  Counts counts;
  shared = new (mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0)) Shared();
  volatile size_t *current = &shared->current;
  auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                         start)
        .count();
  };
  outs().flush();
  errs().flush();
  while ((!maxRuns || counts.runs < maxRuns) &&
         (!maxSeconds || elapsed() < maxSeconds)) {
    std::vector<std::string> batch;
    uint64_t first = counts.runs;
    while (batch.size() < kBatch && (!maxRuns || counts.runs < maxRuns)) {
      batch.push_back(mutator.next());
      ++counts.runs;
    }
    for (size_t next = 0; next < batch.size();) {
      *current = next;
      pid_t child = fork();
      if (child == 0) {
        for (size_t i = next; i < batch.size(); ++i) {
          *current = i;
          alarm(inputTimeout);
          if (int status = evaluate(batch[i], first + i)) {
            errs().flush();
            _exit(status);
          }
        }
        _exit(0);
      }
      int status = 0;
      if (child < 0 || waitpid(child, &status, 0) != child) {
        errs() << "tamoe-fuzz: cannot run a child process\n";
        return counts;
      }
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        break;
      size_t culprit = *current;
      if (WIFEXITED(status) && WEXITSTATUS(status) == kRestart) {
        next = culprit + 1;
        continue;
      }
      if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
        ++counts.hangs;
        report("hang", batch[culprit], extension);
      } else if (WIFEXITED(status) && WEXITSTATUS(status) == kInvariantBroken) {
        ++counts.broken;
        report("invariant", batch[culprit], extension);
      } else {
        ++counts.crashes;
        report("crash", batch[culprit], extension);
      }
      next = culprit + 1;
    }
  }
  outs() << formatv("tamoe-fuzz: {0} inputs in {1} s (seed {2}; {3} "
                    "accepted, {4} through the whole target): {5} crashes, "
                    "{6} hangs, {7} broken invariants\n",
                    counts.runs, format("%.0f", elapsed()), seed,
                    shared->accepted, shared->passed, counts.crashes,
                    counts.hangs, counts.broken);
  return counts;
}

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(argc, argv,
                              "tamoe's mutation fuzzer: tamoe-opt and "
                              "topology files\n");
  if (!irCommand && !jsonCommand) {
    errs() << "tamoe-fuzz: expected a subcommand: ir or json (see --help)\n";
    return 2;
  }
  StringRef extension = irCommand ? ".mlir" : ".json";
  std::vector<std::string> seeds = loadSeeds(extension);
  if (seeds.empty()) {
    errs() << "tamoe-fuzz: no " << extension << " files under the given "
           << "directories\n";
    return 2;
  }
  if (!loweredDir.empty())
    sys::fs::create_directories(loweredDir);

  Counts counts;
  mlir::DialectRegistry registry;
  tamoe::registerAllDialects(registry);
  /// The seeds that are valid inputs.
  auto bases = [&](function_ref<bool(StringRef)> valid) {
    std::vector<std::string> result;
    llvm::copy_if(seeds, std::back_inserter(result), valid);
    outs() << "tamoe-fuzz: " << seeds.size() << " seed inputs, "
           << result.size() << " of them valid\n";
    return result.empty() ? seeds : result;
  };
  if (irCommand) {
    // As tamoe-opt: programs go on to upstream passes (and dialects, which
    // the registry above holds), which tamoe's registration includes.
    tamoe::registerAllPasses();
    IRTarget target(registry);
    if (!replayFile.empty()) {
      ErrorOr<std::unique_ptr<MemoryBuffer>> file =
          MemoryBuffer::getFile(replayFile);
      if (!file) {
        errs() << "tamoe-fuzz: cannot read " << replayFile << "\n";
        return 2;
      }
      StringRef input = (*file)->getBuffer();
      Shared counts{};
      shared = &counts;
      int verdict = target.evaluate(input, xxh3_64bits(input), 0);
      bool broken = verdict == kInvariantBroken;
      outs() << "tamoe-fuzz: replayed " << replayFile << ": "
             << (broken ? "invariant broken" : "no failure") << "\n";
      return broken ? 1 : 0;
    }
    Mutator mutator(seed, bases([&](StringRef text) {
                      return static_cast<bool>(target.parse(text));
                    }),
                    seeds);
    // The pipeline's variant follows the input, so a saved input replays
    // with the same options.
    counts = campaign(mutator, extension, [&](StringRef input, uint64_t index) {
      return target.evaluate(input, xxh3_64bits(input), index);
    });
  } else {
    JSONTarget target(registry);
    Mutator mutator(seed, bases([](StringRef text) {
                      Expected<topo::Topology> tree =
                          topo::parseTopologyJSON(text, "seed");
                      return static_cast<bool>(tree) ||
                             (consumeError(tree.takeError()), false);
                    }),
                    seeds);
    counts = campaign(mutator, extension, [&](StringRef input, uint64_t index) {
      return target.evaluate(input, index);
    });
  }
  return counts.crashes || counts.hangs || counts.broken ? 1 : 0;
}
