//===- Core.cpp - The C entry points of the tamoe runtime -----------------===//
//
// Every entry point checks its arguments (naming the argument in the
// message), runs the backend's primitive and records a failure's message on
// the context. Collectives first agree across their group on the arguments'
// verdict and on the values every rank must share, so that they fail on
// every rank alike and before any row moves; the hierarchical and
// de-duplicated schedules are composed here out of the backend's
// primitives.
//
//===----------------------------------------------------------------------===//

#include "Core.h"
#include "TcpLauncher.h"
#if TAMOE_RT_HAVE_MPI
#include "CpuBackend.h"
#include "MpiLauncher.h"
#endif

#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <sstream>
#include <unordered_map>
#include <vector>

using namespace tamoe_rt;

namespace {

/// Guards MPI's initialisation and the count of live contexts.
std::mutex globalMutex;
int liveContexts = 0;
/// The live contexts themselves: a handle used after its finalize is
/// refused rather than read (its memory is gone).
std::mutex liveMutex;
std::unordered_set<const tamoe_rt_context_t *> liveSet;
/// The finalized contexts' memory (see destroy).
std::vector<std::unique_ptr<tamoe_rt_context_t>> retired;
#if TAMOE_RT_HAVE_MPI
/// Whether tamoe_rt_init initialised MPI (and the last finalize ends it).
bool mpiInitialisedHere = false;
#endif
thread_local std::string threadError;

} // namespace

bool tamoe_rt::isLive(const tamoe_rt_context_t *context) {
  std::lock_guard<std::mutex> live(liveMutex);
  return liveSet.count(context) != 0;
}

Status tamoe_rt::contextStatus(const tamoe_rt_context_t *context) {
  if (!context)
    return invalid("context is null");
  if (!isLive(context))
    return invalid("context is not live: tamoe_rt_finalize released it "
                   "(or tamoe_rt_init never returned it)");
  return Status::success();
}

tamoe_rt_status_t tamoe_rt::finish(tamoe_rt_context_t *context,
                                   const char *function, const Status &status) {
  if (status.ok())
    return TAMOE_RT_SUCCESS;
  std::string message = str(function, ": ", status.message);
  if (context && context->recording && context->recordingFailure.ok())
    context->recordingFailure = Status::error(status.code, message);
  if (context)
    context->lastError = std::move(message);
  else
    threadError = std::move(message);
  return status.code;
}

namespace {

/// TAMOE_RT_TIMELINE's file for this rank, PREFIX.rank<R>.csv: a header,
/// then one line per interval (rank, stream, name, begin and end in
/// microseconds), and a comment with the count left out past the limit.
Status writeTimeline(const tamoe_rt_context_t &context) {
  std::vector<TimelineInterval> intervals;
  int64_t dropped = 0;
  Status status = context.backend->timeline(intervals, dropped);
  if (!status.ok())
    return status;
  int64_t rank = context.launcher->rank();
  std::string path = str(context.timeline, ".rank", rank, ".csv");
  std::FILE *file = std::fopen(path.c_str(), "w");
  if (!file)
    return invalid(str("cannot write the timeline (TAMOE_RT_TIMELINE) to ",
                       path, ": ", std::strerror(errno)));
  std::fputs("rank,stream,name,begin_us,end_us\n", file);
  for (const TimelineInterval &interval : intervals)
    std::fprintf(file, "%lld,%s,%s,%.3f,%.3f\n", static_cast<long long>(rank),
                 interval.stream.c_str(), interval.name.c_str(),
                 interval.beginUs, interval.endUs);
  if (dropped)
    std::fprintf(file, "# %lld intervals past the first %zu left out\n",
                 static_cast<long long>(dropped), kTimelineLimit);
  bool failed = std::ferror(file) != 0;
  failed = std::fclose(file) != 0 || failed;
  if (failed)
    return invalid(
        str("cannot write the timeline (TAMOE_RT_TIMELINE) to ", path));
  return Status::success();
}

/// The profile table of TAMOE_RT_PROFILE, as markdown.
std::string profileTable(const tamoe_rt_context_t &context) {
  std::ostringstream table;
  table << "tamoe_rt profile, rank " << context.launcher->rank() << " of "
        << context.launcher->numRanks() << ", "
        << (context.backend->kind() == TAMOE_RT_BACKEND_CUDA ? "cuda" : "cpu")
        << " backend (each call until its work finished):\n"
        << "| operation | calls | median us | total ms |\n"
        << "|---|---:|---:|---:|\n";
  for (const auto &[name, samples] : context.samples) {
    std::vector<double> sorted = samples;
    std::sort(sorted.begin(), sorted.end());
    size_t n = sorted.size();
    double median = n % 2 ? sorted[n / 2]
                          : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    double total = std::accumulate(sorted.begin(), sorted.end(), 0.0);
    table << "| " << name << " | " << n << " | " << std::fixed
          << std::setprecision(1) << median * 1e6 << " | "
          << std::setprecision(3) << total * 1e3 << " |\n";
  }
  return table.str();
}

/// A temporary buffer of a composite schedule: a slot of the context's
/// workspace.
struct Slot {
  void *pointer = nullptr;
  template <typename T = void> T *get() const {
    return static_cast<T *>(pointer);
  }
};

/// Hands out the workspace's slots in order, growing those that are too
/// small (at least one byte each, so that every slot is a valid pointer).
class Scratch {
public:
  explicit Scratch(tamoe_rt_context_t *context) : context(context) {}
  Status take(std::initializer_list<std::pair<Slot *, intptr_t>> requests) {
    // Growing the workspace allocates; a graph would own the new block and
    // the workspace would keep its address past the graph.
    if (context->recording)
      return invalid("a composite schedule's workspace cannot be recorded "
                     "in a graph (it allocates and waits on the host)");
    for (auto [slot, bytes] : requests) {
      auto &workspace = context->workspace;
      if (next == workspace.size())
        workspace.push_back({nullptr, 0});
      auto &[pointer, size] = workspace[next++];
      bytes = std::max<intptr_t>(bytes, 1);
      if (size < bytes) {
        if (pointer)
          context->backend->free(pointer);
        pointer = nullptr;
        size = 0;
        Status status = context->backend->alloc(bytes, &pointer);
        if (!status.ok())
          return status;
        size = bytes;
      }
      slot->pointer = pointer;
    }
    return Status::success();
  }

private:
  tamoe_rt_context_t *context;
  size_t next = 0;
};

int64_t sum(const std::vector<int32_t> &values) {
  int64_t total = 0;
  for (int32_t value : values)
    total += value;
  return total;
}

/// Host copies of counts [groups, split] validated as send counts: "" when
/// they are non-negative and sum to at most `capacity` (and an int).
std::string checkSendCounts(const std::vector<int32_t> &counts, intptr_t split,
                            intptr_t capacity, int64_t &total) {
  total = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] < 0)
      return split == 1
                 ? str("send_counts[", i, "] = ", counts[i], " is negative")
                 : str("send_counts[", i / split, ", ", i % split,
                       "] = ", counts[i], " is negative");
    total += counts[i];
  }
  if (total > capacity)
    return str("send_counts sum to ", total, " rows but send_capacity is ",
               capacity);
  if (total > INT_MAX)
    return str("send_counts sum to ", total, " rows, more than ", INT_MAX,
               " (MPI counts are int)");
  return "";
}

Status receiveCheck(int64_t rows, intptr_t capacity) {
  if (rows > capacity)
    return Status::error(
        TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
        str(rows, " rows to receive exceed recv_capacity ", capacity));
  if (rows > INT_MAX)
    return invalid(str(rows, " rows to receive, more than ", INT_MAX,
                       " (MPI counts are int)"));
  return Status::success();
}

/// counts [a, b, inner] (host) transposed to [b, a, inner].
std::vector<int32_t> transpose(const std::vector<int32_t> &counts, int64_t a,
                               int64_t b, int64_t inner) {
  std::vector<int32_t> result(counts.size());
  for (int64_t x = 0; x < a; ++x)
    for (int64_t y = 0; y < b; ++y)
      for (int64_t i = 0; i < inner; ++i)
        result[(y * a + x) * inner + i] = counts[(x * b + y) * inner + i];
  return result;
}

//===----------------------------------------------------------------------===//
// Launchers
//===----------------------------------------------------------------------===//

#if TAMOE_RT_HAVE_MPI
constexpr bool kHaveMpi = true;
#else
constexpr bool kHaveMpi = false;
#endif
const char *const kCpuNeedsMpiLauncher =
    "the cpu backend exchanges rows over MPI, but this process was started "
    "with torchrun's variables and no MPI launcher, so ranks meet over TCP: "
    "start the ranks with mpirun (or set TAMOE_RT_LAUNCHER=mpi), or use the "
    "cuda backend";
const char *const kCpuForcedOverTcp =
    "the cpu backend exchanges rows over MPI, but TAMOE_RT_LAUNCHER=tcp makes "
    "the ranks meet over TCP: unset it (or set TAMOE_RT_LAUNCHER=mpi) and "
    "start the ranks with mpirun, or use the cuda backend";
const char *const kCpuNeedsMpiBuild =
    "the cpu backend exchanges rows over MPI, and this runtime was built "
    "without MPI (TAMOE_RUNTIME_MPI=OFF): use the cuda backend, or build the "
    "runtime with MPI";

/// Whether ranks meet over TCP (TcpLauncher) rather than MPI: as the
/// environment asks (requestedLauncher), except that a process that has
/// initialised MPI itself stays on MPI unless TAMOE_RT_LAUNCHER says tcp,
/// and a runtime without MPI meets over TCP unless it says mpi. `forced`:
/// whether TAMOE_RT_LAUNCHER named the launcher.
Status chooseLauncher(bool &overTcp, bool &forced) {
  LauncherKind kind;
  std::string problem = requestedLauncher(kind, forced);
  if (!problem.empty())
    return invalid(problem);
  overTcp = kind == LauncherKind::Tcp;
  if (!kHaveMpi && !overTcp && forced)
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "TAMOE_RT_LAUNCHER=mpi, but this runtime was built "
                         "without MPI (TAMOE_RUNTIME_MPI=OFF)");
  if (!kHaveMpi)
    overTcp = true;
#if TAMOE_RT_HAVE_MPI
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (initialised && !forced)
    overTcp = false;
#endif
  return Status::success();
}

#if TAMOE_RT_HAVE_MPI
/// Initialises MPI unless someone did; it cannot be initialised again once
/// finalised.
Status initialiseMpi() {
  int initialised = 0, finalised = 0;
  MPI_Finalized(&finalised);
  if (finalised)
    return Status::error(TAMOE_RT_ERROR_COMMUNICATION,
                         "MPI has been finalized (by the program, by "
                         "tamoe_rt_finalize of the last context, or by a "
                         "failed tamoe_rt_init, which finalizes the MPI it "
                         "initialised so that the program can exit) and "
                         "cannot be initialised again");
  MPI_Initialized(&initialised);
  if (initialised)
    return Status::success();
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) !=
      MPI_SUCCESS)
    return Status::error(TAMOE_RT_ERROR_COMMUNICATION,
                         "MPI_Init_thread failed");
  mpiInitialisedHere = true;
  // Open MPI raises the errors of nonblocking collectives on MPI_COMM_WORLD,
  // not on the runtime's communicators: fatal there by default, two ranks
  // calling different collectives would end the job without a status. The
  // runtime owns MPI here, so no caller's own MPI calls change.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  return Status::success();
}
#endif

/// Finalises MPI when tamoe_rt_init initialised it and no context is left.
Status finaliseMpiIfLast() {
#if TAMOE_RT_HAVE_MPI
  if (liveContexts == 0 && mpiInitialisedHere) {
    mpiInitialisedHere = false;
    if (MPI_Finalize() != MPI_SUCCESS)
      return Status::error(TAMOE_RT_ERROR_COMMUNICATION, "MPI_Finalize failed");
  }
#endif
  return Status::success();
}

//===----------------------------------------------------------------------===//
// The cuda backend's library
//===----------------------------------------------------------------------===//

/// Finds the cuda backend's library and its entry point (no collectives).
Status findCudaBackend(decltype(&tamoe_rt_create_cuda_backend) &create) {
  auto unavailable = [](std::string message) {
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         str("cuda backend: ", message));
  };
  const char *name = "libtamoe_rt_cuda.so";
  std::string path = name;
  const char *override = std::getenv("TAMOE_RT_CUDA_LIBRARY");
  Dl_info info;
  if (override && *override) {
    path = override;
  } else if (dladdr(reinterpret_cast<void *>(&tamoe_rt_init), &info) &&
             info.dli_fname) {
    // Next to this library, where the build and an install put it.
    std::string self = info.dli_fname;
    size_t slash = self.rfind('/');
    path = (slash == std::string::npos ? std::string(".")
                                       : self.substr(0, slash)) +
           "/" + name;
  }
  struct stat file;
  if (stat(path.c_str(), &file) != 0)
    return unavailable(
        str(name, " not found (built without CUDA?): no ", path));
  // Never closed: the backend's code must outlive every context.
  void *library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library)
    return unavailable(str("cannot load ", path, ": ", dlerror()));
  // The classes of Backend.h cross this boundary: a library built from
  // other versions of them would call through the wrong virtual slots.
  auto abi = reinterpret_cast<decltype(&tamoe_rt_cuda_backend_abi)>(
      dlsym(library, "tamoe_rt_cuda_backend_abi"));
  if (!abi)
    return unavailable(str(path,
                           " has no tamoe_rt_cuda_backend_abi: it is not a "
                           "cuda backend of this runtime (or one older than "
                           "the check); rebuild it with this runtime"));
  const char *built = abi();
  if (!built || std::strcmp(built, TAMOE_RT_BACKEND_ABI) != 0)
    return unavailable(str(path,
                           " was built for another version of the "
                           "runtime (backend interface ",
                           built ? built : "(null)", ", this runtime's ",
                           TAMOE_RT_BACKEND_ABI,
                           "): rebuild libtamoe_rt.so and "
                           "libtamoe_rt_cuda.so from one tree"));
  create = reinterpret_cast<decltype(&tamoe_rt_create_cuda_backend)>(
      dlsym(library, "tamoe_rt_create_cuda_backend"));
  if (!create)
    return unavailable(str(path, " has no tamoe_rt_create_cuda_backend"));
  return Status::success();
}

Status loadCudaBackend(Launcher &launcher, std::unique_ptr<Backend> &backend) {
  decltype(&tamoe_rt_create_cuda_backend) create = nullptr;
  Status local = findCudaBackend(create);
  // Every rank runs the library's collectives or none does: a rank that
  // cannot load it would answer the library's first agreement with init's
  // last, then leave, and the others would report that it left, not why.
  Status agreed = launcher.agree(TAMOE_RT_GROUP_WORLD, local);
  if (!agreed.ok())
    return local.ok() ? agreed : local;
  Status error;
  Backend *created = create(&launcher, &error);
  if (!created)
    return Status::error(
        TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
        str("cuda backend: ", error.message.empty()
                                  ? "the library returned no backend"
                                  : error.message));
  backend.reset(created);
  return Status::success();
}

/// Ends a recording still open, dropping what it recorded.
void endRecording(tamoe_rt_context_t *context) {
  if (!context->recording || !context->backend)
    return;
  std::unique_ptr<Backend::RecordedGraph> unfinished;
  (void)context->backend->endGraph(unfinished);
  context->recording = false;
}

/// Releases what a context holds. Exchanges still in flight are completed
/// first, in start order and each bounded by the timeout, rather than
/// dropped: MPI can neither cancel a nonblocking collective nor free its
/// request, and the peers of an SPMD program complete theirs as they
/// finalize too. After a timeout or an MPI error, MPI may still write into
/// the buffers of the operation that failed (the launcher's, the backend's,
/// the exchanges' and the program's), so a broken context leaks them. An
/// exchange completed here does not write its recv_counts: the program that
/// never waited for it may have freed them.
void destroy(tamoe_rt_context_t *context) {
  // tamoe_rt_finalize has ended a recording left open.
  context->graphs.clear();
  for (auto &exchange : context->exchanges) {
    exchange->pending->abandoned = true;
    (void)context->backend->allToAllWait(std::move(exchange->pending),
                                         context->traffic);
  }
  context->exchanges.clear();
  bool broken = context->launcher && !context->launcher->broken().ok();
  if (broken) {
    (void)context->backend.release();
    (void)context->launcher.release();
  } else {
    if (context->backend) {
      for (auto [pointer, bytes] : context->allocations)
        context->backend->free(pointer);
      for (auto [pointer, bytes] : context->workspace)
        if (pointer)
          context->backend->free(pointer);
    }
    context->backend.reset();
    context->launcher.reset();
  }
  // The context's own few hundred bytes are kept, emptied, for the rest of
  // the process: a later context never gets its address, so the handle
  // stays refused (isLive) instead of naming the newcomer.
  *context = tamoe_rt_context_t();
  std::lock_guard<std::mutex> live(liveMutex);
  retired.emplace_back(context);
}

//===----------------------------------------------------------------------===//
// Collective schedules
//===----------------------------------------------------------------------===//

/// That a caller's counts [peers, ...] are for this group's size.
Status peersCheck(const Launcher &launcher, tamoe_rt_group_t group,
                  intptr_t peers) {
  int size = launcher.groupSize(group);
  if (peers == size)
    return Status::success();
  return Status::error(TAMOE_RT_ERROR_MISMATCH,
                       str("send_counts are for ", peers, " peers but the ",
                           Launcher::groupName(group), " group has ", size,
                           " ranks (", launcher.numRanks(), " ranks, ",
                           launcher.ranksPerNode(), " per node)"));
}

Check allToAllArguments(const void *send, intptr_t sendCapacity,
                        intptr_t rowBytes, const int32_t *sendCounts,
                        intptr_t split, intptr_t groupSize,
                        const void *received, intptr_t recvCapacity,
                        const int32_t *recvCounts) {
  Check check;
  check.atLeast(sendCapacity, 0, "send_capacity")
      .atLeast(recvCapacity, 0, "recv_capacity")
      .that(rowBytes >= 1 && rowBytes <= INT_MAX,
            [&] {
              return str("row_bytes must be in [1, ", INT_MAX, "], got ",
                         rowBytes);
            })
      .that(split >= 1 && split <= INT_MAX / groupSize,
            [&] {
              return str("split must be in [1, ", INT_MAX / groupSize,
                         "], got ", split);
            })
      .fits(sendCapacity, rowBytes, "send_capacity * row_bytes")
      .fits(recvCapacity, rowBytes, "recv_capacity * row_bytes")
      .notNull(send, "send", sendCapacity > 0)
      .notNull(sendCounts, "send_counts")
      .notNull(received, "received", recvCapacity > 0)
      .notNull(recvCounts, "recv_counts");
  // The counts are [group size, split] each.
  if (check.status.ok()) {
    intptr_t countCells = groupSize * split;
    check.apart({{received, recvCapacity, rowBytes, "received"},
                 {recvCounts, countCells, 4, "recv_counts"}},
                {{send, sendCapacity, rowBytes, "send"},
                 {sendCounts, countCells, 4, "send_counts"}});
  }
  return check;
}

/// tamoe_rt_all_to_all_start without the handle, which tamoe_rt_all_to_all
/// shares (start, then wait at once): this rank's argument checks (after the
/// entry point's own, `local`), then the backend settles them with the
/// group and starts the rows.
Status startExchange(tamoe_rt_context_t *context, Status local,
                     tamoe_rt_group_t group, const void *send,
                     intptr_t sendCapacity, intptr_t rowBytes,
                     const int32_t *sendCounts, intptr_t peers, intptr_t split,
                     void *received, intptr_t recvCapacity, int32_t *recvCounts,
                     std::unique_ptr<PendingExchange> &pending) {
  if (Status bad = groupCheck(group); !bad.ok())
    return bad;
  Launcher &launcher = *context->launcher;
  if (local.ok())
    local = peersCheck(launcher, group, peers);
  if (local.ok())
    local = allToAllArguments(send, sendCapacity, rowBytes, sendCounts, split,
                              launcher.groupSize(group), received, recvCapacity,
                              recvCounts)
                .status;
  return context->backend->allToAllStart(
      launcher, std::move(local), group, send, sendCapacity, rowBytes,
      sendCounts, split, received, recvCapacity, recvCounts, pending);
}

/// The checks of tamoe_rt_chunk and tamoe_rt_unchunk: `rows` in blocks by
/// counts, `chunkRows` part `chunk` of `chunks` of them.
Check chunkArguments(const void *rows, intptr_t rowsCapacity, intptr_t rowBytes,
                     const int32_t *counts, intptr_t numCounts, intptr_t chunk,
                     intptr_t chunks, const void *chunkRows,
                     intptr_t chunkCapacity) {
  Check check;
  check.part(chunk, chunks)
      .atLeast(rowBytes, 1, "row_bytes")
      .atLeast(numCounts, 1, "num_counts")
      .atLeast(rowsCapacity, 0, "rows_capacity")
      .atLeast(chunkCapacity, 0, "chunk_capacity")
      .fits(rowsCapacity, rowBytes, "rows_capacity * row_bytes")
      .fits(chunkCapacity, rowBytes, "chunk_capacity * row_bytes")
      .fits(numCounts, intptr_t(sizeof(int32_t)), "num_counts * 4")
      .notNull(rows, "rows", rowsCapacity > 0)
      .notNull(counts, "counts")
      .notNull(chunkRows, "chunk_rows", chunkCapacity > 0);
  if (check.status.ok())
    check.disjoint(rows, rowsCapacity * rowBytes, "rows", chunkRows,
                   chunkCapacity * rowBytes, "chunk_rows");
  return check;
}

/// tamoe_rt_all_to_all_hierarchical after the argument checks (`local`).
Status hierarchical(tamoe_rt_context_t *context, Status local, const void *send,
                    intptr_t sendCapacity, intptr_t rowBytes,
                    const int32_t *sendCounts, intptr_t split, void *received,
                    intptr_t recvCapacity, int32_t *recvCounts) {
  Launcher &launcher = *context->launcher;
  Backend &backend = *context->backend;
  int64_t ranks = launcher.numRanks(), perNode = launcher.ranksPerNode();
  int64_t nodes = ranks / perNode;

  // Sized from `split` only once it passed its check.
  std::vector<int32_t> counts(local.ok() ? ranks * split : 0, 0);
  int64_t sendTotal = 0;
  if (local.ok())
    local = backend.copyToHost(counts.data(), sendCounts,
                               intptr_t(counts.size() * sizeof(int32_t)));
  if (local.ok()) {
    std::string problem =
        checkSendCounts(counts, split, sendCapacity, sendTotal);
    if (!problem.empty())
      local = invalid(problem);
  }
  if (!local.ok())
    std::fill(counts.begin(), counts.end(), 0);
  Status status = launcher.agreeOn(TAMOE_RT_GROUP_WORLD, local,
                                   {{"row_bytes", rowBytes}, {"split", split}});
  if (!status.ok())
    return status;

  // The counts of both stages, so that the buffers in between can be sized
  // and the final receive checked before any row moves. Stage 1 sends to
  // local index d the rows for (m, d) of every node m.
  std::vector<int32_t> stage1Counts, stage2Counts;
  status = launcher.allToAllInts(
      TAMOE_RT_GROUP_NODE, transpose(counts, nodes, perNode, split),
      int(nodes * split), stage1Counts, "the exchange of counts in the node");
  if (!status.ok())
    return status;
  // Received [source index, destination node, split]; stage 2 sends by node.
  status = launcher.allToAllInts(TAMOE_RT_GROUP_PEERS,
                                 transpose(stage1Counts, perNode, nodes, split),
                                 int(perNode * split), stage2Counts,
                                 "the exchange of counts between nodes");
  if (!status.ok())
    return status;
  int64_t stage1Rows = sum(stage1Counts);
  local = receiveCheck(sum(stage2Counts), recvCapacity);
  if (local.ok())
    local = receiveCheck(stage1Rows, INT_MAX);
  intptr_t countBytes = intptr_t(ranks * split * sizeof(int32_t));
  Scratch scratch(context);
  Slot byIndex, byIndexCounts, stage1, stage1CountsBuffer, byNode, byNodeCounts;
  if (local.ok())
    local = scratch.take({{&byIndex, sendTotal * rowBytes},
                          {&byIndexCounts, countBytes},
                          {&stage1, stage1Rows * rowBytes},
                          {&stage1CountsBuffer, countBytes},
                          {&byNode, stage1Rows * rowBytes},
                          {&byNodeCounts, countBytes}});
  status = launcher.agree(TAMOE_RT_GROUP_WORLD, local);
  if (!status.ok())
    return status;

  // Rows by destination (node, index) -> by (index, node); within the node;
  // by (source index, node) -> by (node, source index); between nodes.
  Traffic &traffic = context->traffic;
  status =
      backend.regroup(send, sendTotal, rowBytes, sendCounts, nodes, perNode,
                      split, byIndex.get(), byIndexCounts.get<int32_t>());
  if (status.ok())
    status = backend.allToAll(TAMOE_RT_GROUP_NODE, byIndex.get(), sendTotal,
                              rowBytes, byIndexCounts.get<int32_t>(),
                              nodes * split, stage1.get(), stage1Rows,
                              stage1CountsBuffer.get<int32_t>(), traffic);
  if (status.ok())
    status = backend.regroup(stage1.get(), stage1Rows, rowBytes,
                             stage1CountsBuffer.get<int32_t>(), perNode, nodes,
                             split, byNode.get(), byNodeCounts.get<int32_t>());
  if (status.ok())
    status =
        backend.allToAll(TAMOE_RT_GROUP_PEERS, byNode.get(), stage1Rows,
                         rowBytes, byNodeCounts.get<int32_t>(), perNode * split,
                         received, recvCapacity, recvCounts, traffic);
  return status;
}

/// tamoe_rt_dispatch_dedup after the argument checks (`local`).
Status dispatchDedup(tamoe_rt_context_t *context, Status local,
                     const void *tokens, intptr_t numTokens, intptr_t rowBytes,
                     const int32_t *expertIds, const int32_t *positions,
                     intptr_t k, intptr_t experts, void *received,
                     intptr_t recvCapacity, int32_t *recvCounts) {
  Launcher &launcher = *context->launcher;
  Backend &backend = *context->backend;
  int64_t ranks = launcher.numRanks(), perNode = launcher.ranksPerNode();
  int64_t nodes = ranks / perNode;
  // Sizes from arguments that failed their checks must not allocate.
  int64_t perRank = local.ok() ? experts / ranks : 1;
  int64_t perNodeExperts = perRank * perNode;
  intptr_t routeBytes = k * intptr_t(sizeof(int32_t));

  // Each token once per node it needs, with the experts it needs there.
  intptr_t uniqueCapacity = numTokens * std::min<intptr_t>(k, nodes);
  Scratch scratch(context);
  Slot unique, routes, nodeCounts;
  if (local.ok())
    local = scratch.take({{&unique, uniqueCapacity * rowBytes},
                          {&routes, uniqueCapacity * routeBytes},
                          {&nodeCounts, nodes * intptr_t(sizeof(int32_t))}});
  if (local.ok())
    local = backend.dedupPack(tokens, numTokens, rowBytes, expertIds, positions,
                              k, perNodeExperts, nodes, unique.get(),
                              routes.get<int32_t>(), uniqueCapacity,
                              nodeCounts.get<int32_t>());
  std::vector<int32_t> toNodes(nodes, 0), fromNodes;
  if (local.ok())
    local = backend.copyToHost(toNodes.data(), nodeCounts.get(),
                               nodes * intptr_t(sizeof(int32_t)));
  if (!local.ok())
    std::fill(toNodes.begin(), toNodes.end(), 0);
  // One int per peer whatever the arguments, so this exchange is safe
  // before the agreement, which then covers the buffers it sizes.
  Status status =
      launcher.allToAllInts(TAMOE_RT_GROUP_PEERS, toNodes, 1, fromNodes,
                            "the exchange of counts between nodes");
  if (!status.ok())
    return status;
  int64_t uniqueRows = sum(toNodes), arrivedRows = sum(fromNodes);
  // Every route lists at most k experts (of this node).
  intptr_t expandedCapacity = arrivedRows * k;
  intptr_t expandedCountBytes =
      intptr_t(perNode * nodes * perRank * sizeof(int32_t));
  Slot arrived, arrivedRoutes, arrivedCounts, arrivedRouteCounts, expanded,
      expandedCounts;
  if (local.ok())
    local =
        scratch.take({{&arrived, arrivedRows * rowBytes},
                      {&arrivedRoutes, arrivedRows * routeBytes},
                      {&arrivedCounts, nodes * intptr_t(sizeof(int32_t))},
                      {&arrivedRouteCounts, nodes * intptr_t(sizeof(int32_t))},
                      {&expanded, expandedCapacity * rowBytes},
                      {&expandedCounts, expandedCountBytes}});
  status = launcher.agreeOn(
      TAMOE_RT_GROUP_WORLD, local,
      {{"row_bytes", rowBytes}, {"k", k}, {"experts", experts}});
  if (!status.ok())
    return status;

  // Across nodes to the rank of the same local index (the relay), rows and
  // routes alike; the relay expands them per expert.
  Traffic &traffic = context->traffic;
  status =
      backend.allToAll(TAMOE_RT_GROUP_PEERS, unique.get(), uniqueRows, rowBytes,
                       nodeCounts.get<int32_t>(), 1, arrived.get(), arrivedRows,
                       arrivedCounts.get<int32_t>(), traffic);
  if (status.ok())
    status = backend.allToAll(TAMOE_RT_GROUP_PEERS, routes.get(), uniqueRows,
                              routeBytes, nodeCounts.get<int32_t>(), 1,
                              arrivedRoutes.get(), arrivedRows,
                              arrivedRouteCounts.get<int32_t>(), traffic);
  if (!status.ok())
    return status;
  local = backend.dedupExpand(
      arrived.get(), arrivedRoutes.get<int32_t>(), arrivedRows, rowBytes, k,
      arrivedCounts.get<int32_t>(), nodes, perNode, perRank, expanded.get(),
      expandedCapacity, expandedCounts.get<int32_t>());
  std::vector<int32_t> toIndices(perNode * nodes * perRank, 0), fromIndices;
  if (local.ok())
    local = backend.copyToHost(toIndices.data(), expandedCounts.get(),
                               expandedCountBytes);
  if (!local.ok())
    std::fill(toIndices.begin(), toIndices.end(), 0);
  status = launcher.allToAllInts(TAMOE_RT_GROUP_NODE, toIndices,
                                 int(nodes * perRank), fromIndices,
                                 "the exchange of counts in the node");
  if (!status.ok())
    return status;
  int64_t expandedRows = sum(toIndices), finalRows = sum(fromIndices);
  if (local.ok())
    local = receiveCheck(finalRows, recvCapacity);
  Slot bySource, bySourceCounts;
  if (local.ok())
    local = scratch.take(
        {{&bySource, finalRows * rowBytes},
         {&bySourceCounts, intptr_t(ranks * perRank * sizeof(int32_t))}});
  status = launcher.agree(TAMOE_RT_GROUP_WORLD, local);
  if (!status.ok())
    return status;

  // Within the node from every relay; received by (relay index, source
  // node), i.e. by source rank once regrouped.
  status = backend.allToAll(TAMOE_RT_GROUP_NODE, expanded.get(), expandedRows,
                            rowBytes, expandedCounts.get<int32_t>(),
                            nodes * perRank, bySource.get(), finalRows,
                            bySourceCounts.get<int32_t>(), traffic);
  if (status.ok())
    status = backend.regroup(bySource.get(), finalRows, rowBytes,
                             bySourceCounts.get<int32_t>(), perNode, nodes,
                             perRank, received, recvCounts);
  return status;
}

} // namespace

//===----------------------------------------------------------------------===//
// Context
//===----------------------------------------------------------------------===//

extern "C" {

const char *tamoe_rt_status_name(tamoe_rt_status_t status) {
  switch (raw(status)) {
  case TAMOE_RT_SUCCESS:
    return "TAMOE_RT_SUCCESS";
  case TAMOE_RT_ERROR_INVALID_ARGUMENT:
    return "TAMOE_RT_ERROR_INVALID_ARGUMENT";
  case TAMOE_RT_ERROR_BACKEND_UNAVAILABLE:
    return "TAMOE_RT_ERROR_BACKEND_UNAVAILABLE";
  case TAMOE_RT_ERROR_MISMATCH:
    return "TAMOE_RT_ERROR_MISMATCH";
  case TAMOE_RT_ERROR_CAPACITY_EXCEEDED:
    return "TAMOE_RT_ERROR_CAPACITY_EXCEEDED";
  case TAMOE_RT_ERROR_TIMEOUT:
    return "TAMOE_RT_ERROR_TIMEOUT";
  case TAMOE_RT_ERROR_COMMUNICATION:
    return "TAMOE_RT_ERROR_COMMUNICATION";
  case TAMOE_RT_ERROR_OUT_OF_MEMORY:
    return "TAMOE_RT_ERROR_OUT_OF_MEMORY";
  case TAMOE_RT_ERROR_INTERNAL:
    return "TAMOE_RT_ERROR_INTERNAL";
  }
  return "TAMOE_RT_UNKNOWN_STATUS";
}

tamoe_rt_options_t tamoe_rt_default_options(void) {
  tamoe_rt_options_t options;
  options.backend = TAMOE_RT_BACKEND_CPU;
  options.ranks_per_node = 0;
  options.timeout_seconds = 0;
  return options;
}

tamoe_rt_status_t tamoe_rt_init(const tamoe_rt_options_t *options,
                                tamoe_rt_context_t **context) {
  const char *fn = "tamoe_rt_init";
  if (!context)
    return finish(nullptr, fn, invalid("context is null"));
  *context = nullptr;
  tamoe_rt_options_t chosen = options ? *options : tamoe_rt_default_options();
  int backend = raw(chosen.backend);
  Status local =
      Check()
          .that(backend == TAMOE_RT_BACKEND_CPU ||
                    backend == TAMOE_RT_BACKEND_CUDA,
                [&] {
                  return str("options->backend = ", backend,
                             " is not a tamoe_rt_backend_t");
                })
          .atLeast(chosen.ranks_per_node, 0, "options->ranks_per_node")
          .that(chosen.timeout_seconds >= 0 &&
                    std::isfinite(chosen.timeout_seconds),
                [&] {
                  return str("options->timeout_seconds must be >= 0 and "
                             "finite, got ",
                             chosen.timeout_seconds);
                })
          .status;

  std::lock_guard<std::mutex> lock(globalMutex);
  bool overTcp = false, forced = false;
  Status launcherChoice = chooseLauncher(overTcp, forced);
  if (!launcherChoice.ok())
    return finish(nullptr, fn, launcherChoice);

  auto *created = new tamoe_rt_context_t();
  const char *profile = std::getenv("TAMOE_RT_PROFILE");
  created->profile = profile && *profile && std::strcmp(profile, "0") != 0;
  if (const char *timeline = std::getenv("TAMOE_RT_TIMELINE"))
    created->timeline = timeline;
  Status status;
  if (overTcp) {
    // The cpu backend's exchanges are MPI's: every rank learns why not.
    if (local.ok() && backend == TAMOE_RT_BACKEND_CPU)
      local = Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                            !kHaveMpi ? kCpuNeedsMpiBuild
                            : forced  ? kCpuForcedOverTcp
                                      : kCpuNeedsMpiLauncher);
    std::unique_ptr<TcpLauncher> tcp;
    status = TcpLauncher::create(local, chosen.ranks_per_node,
                                 chosen.timeout_seconds, backend, tcp);
    created->launcher = std::move(tcp);
  } else {
#if TAMOE_RT_HAVE_MPI
    status = initialiseMpi();
    std::unique_ptr<MpiLauncher> mpi;
    if (status.ok())
      status = MpiLauncher::create(local, chosen.ranks_per_node,
                                   chosen.timeout_seconds, backend, mpi);
    if (status.ok() && backend == TAMOE_RT_BACKEND_CPU)
      created->backend = std::make_unique<CpuBackend>(*mpi);
    created->launcher = std::move(mpi);
#endif
  }
  if (status.ok()) {
    if (backend == TAMOE_RT_BACKEND_CUDA)
      local = loadCudaBackend(*created->launcher, created->backend);
    status = created->launcher->agree(TAMOE_RT_GROUP_WORLD, local);
  }
  if (!status.ok()) {
    destroy(created);
    // As tamoe_rt_finalize would: the program cannot exit cleanly under
    // mpirun without MPI_Finalize. Not after a timeout: MPI_Finalize waits
    // for the rank that did not answer.
    if (status.code != TAMOE_RT_ERROR_TIMEOUT)
      finaliseMpiIfLast();
    return finish(nullptr, fn, status);
  }
  if (!created->timeline.empty())
    created->backend->startTimeline();
  ++liveContexts;
  {
    std::lock_guard<std::mutex> live(liveMutex);
    liveSet.insert(created);
  }
  *context = created;
  return TAMOE_RT_SUCCESS;
}

tamoe_rt_status_t tamoe_rt_finalize(tamoe_rt_context_t *context) {
  if (!context)
    return TAMOE_RT_SUCCESS;
  // Released once: a second finalize finds it gone.
  bool released;
  {
    std::lock_guard<std::mutex> live(liveMutex);
    released = liveSet.erase(context) != 0;
  }
  if (!released)
    return finish(nullptr, "tamoe_rt_finalize", contextStatus(context));
  // A recording left open ends unused, so that the profile and the
  // timeline can wait for the device.
  endRecording(context);
  if (context->profile && context->launcher->rank() == 0) {
    std::fputs(profileTable(*context).c_str(), stderr);
    std::fflush(stderr);
  }
  Status timeline =
      context->timeline.empty() ? Status::success() : writeTimeline(*context);
  std::lock_guard<std::mutex> lock(globalMutex);
  destroy(context);
  --liveContexts;
  Status mpi = finaliseMpiIfLast();
  return finish(nullptr, "tamoe_rt_finalize", timeline.ok() ? mpi : timeline);
}

const char *tamoe_rt_last_error(const tamoe_rt_context_t *context) {
  return isLive(context) ? context->lastError.c_str() : threadError.c_str();
}

intptr_t tamoe_rt_rank(const tamoe_rt_context_t *context) {
  return isLive(context) ? intptr_t(context->launcher->rank()) : -1;
}

intptr_t tamoe_rt_num_ranks(const tamoe_rt_context_t *context) {
  return isLive(context) ? intptr_t(context->launcher->numRanks()) : -1;
}

intptr_t tamoe_rt_ranks_per_node(const tamoe_rt_context_t *context) {
  return isLive(context) ? intptr_t(context->launcher->ranksPerNode()) : -1;
}

tamoe_rt_backend_t tamoe_rt_backend(const tamoe_rt_context_t *context) {
  return isLive(context) ? context->backend->kind() : TAMOE_RT_BACKEND_CPU;
}

tamoe_rt_status_t tamoe_rt_traffic(const tamoe_rt_context_t *context,
                                   tamoe_rt_traffic_t *traffic) {
  const char *fn = "tamoe_rt_traffic";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  if (!traffic)
    return finish(const_cast<tamoe_rt_context_t *>(context), fn,
                  invalid("traffic is null"));
  traffic->intra_node_bytes = context->traffic.intraNodeBytes;
  traffic->inter_node_bytes = context->traffic.interNodeBytes;
  return TAMOE_RT_SUCCESS;
}

tamoe_rt_status_t tamoe_rt_reset_traffic(tamoe_rt_context_t *context) {
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, "tamoe_rt_reset_traffic", usable);
  context->traffic = Traffic();
  return TAMOE_RT_SUCCESS;
}

//===----------------------------------------------------------------------===//
// Memory
//===----------------------------------------------------------------------===//

tamoe_rt_status_t tamoe_rt_alloc(tamoe_rt_context_t *context, intptr_t bytes,
                                 void **pointer) {
  const char *fn = "tamoe_rt_alloc";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Status status =
      Check().notNull(pointer, "pointer").atLeast(bytes, 0, "bytes").status;
  if (!status.ok())
    return finish(context, fn, status);
  *pointer = nullptr;
  if (context->recording)
    return finish(context, fn,
                  invalid("cannot allocate while recording a graph: allocate "
                          "the step's buffers before tamoe_rt_graph_begin"));
  if (bytes == 0)
    return TAMOE_RT_SUCCESS;
  status = context->backend->alloc(bytes, pointer);
  if (status.ok() && *pointer)
    context->allocations[*pointer] = bytes;
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_free(tamoe_rt_context_t *context, void *pointer) {
  const char *fn = "tamoe_rt_free";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  if (!pointer)
    return TAMOE_RT_SUCCESS;
  if (context->recording)
    return finish(context, fn,
                  invalid("cannot free while recording a graph: the recorded "
                          "operations may use the buffer at every launch"));
  auto found = context->allocations.find(pointer);
  if (found == context->allocations.end())
    return finish(context, fn,
                  invalid(str("pointer ", pointer,
                              " was not allocated by tamoe_rt_alloc on this "
                              "context (or was freed already)")));
  context->allocations.erase(found);
  return finish(context, fn, context->backend->free(pointer));
}

tamoe_rt_status_t tamoe_rt_copy_to_backend(tamoe_rt_context_t *context,
                                           void *destination,
                                           const void *host_source,
                                           intptr_t bytes) {
  const char *fn = "tamoe_rt_copy_to_backend";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Status status = Check()
                      .atLeast(bytes, 0, "bytes")
                      .notNull(destination, "destination", bytes > 0)
                      .notNull(host_source, "host_source", bytes > 0)
                      .status;
  if (status.ok())
    status = context->backend->copyToBackend(destination, host_source, bytes);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_copy_to_host(tamoe_rt_context_t *context,
                                        void *host_destination,
                                        const void *source, intptr_t bytes) {
  const char *fn = "tamoe_rt_copy_to_host";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Status status = Check()
                      .atLeast(bytes, 0, "bytes")
                      .notNull(host_destination, "host_destination", bytes > 0)
                      .notNull(source, "source", bytes > 0)
                      .status;
  if (status.ok())
    status = context->backend->copyToHost(host_destination, source, bytes);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_synchronize(tamoe_rt_context_t *context) {
  const char *fn = "tamoe_rt_synchronize";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  return finish(context, fn, context->backend->synchronize());
}

//===----------------------------------------------------------------------===//
// Graphs
//===----------------------------------------------------------------------===//

namespace {
/// finish for the graph calls: their own refusals leave a recording as it
/// was (they recorded nothing, so nothing is missing from it).
tamoe_rt_status_t finishGraphCall(tamoe_rt_context_t *context,
                                  const char *function, const Status &status) {
  Status kept = context ? context->recordingFailure : Status::success();
  tamoe_rt_status_t code = finish(context, function, status);
  if (context)
    context->recordingFailure = kept;
  return code;
}
} // namespace

tamoe_rt_status_t tamoe_rt_graph_begin(tamoe_rt_context_t *context) {
  const char *fn = "tamoe_rt_graph_begin";
  if (Status usable = contextStatus(context); !usable.ok())
    return finishGraphCall(nullptr, fn, usable);
  if (context->recording)
    return finishGraphCall(
        context, fn,
        invalid("a graph is being recorded already (end it with "
                "tamoe_rt_graph_end)"));
  // A graph replays the operations alone; an exchange in flight would be
  // waited in the middle of the recording, or by every launch.
  if (!context->exchanges.empty())
    return finishGraphCall(
        context, fn,
        invalid(str(context->exchanges.size(),
                    " exchange(s) are in flight: wait for them "
                    "(tamoe_rt_all_to_all_wait) before recording")));
  Status status = context->backend->beginGraph();
  if (status.ok()) {
    context->recording = true;
    context->recordingFailure = Status::success();
    context->recordedCalls = 0;
  }
  return finishGraphCall(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_graph_end(tamoe_rt_context_t *context,
                                     tamoe_rt_graph_t **graph) {
  const char *fn = "tamoe_rt_graph_end";
  if (Status usable = contextStatus(context); !usable.ok())
    return finishGraphCall(nullptr, fn, usable);
  if (graph)
    *graph = nullptr;
  if (!context->recording)
    return finishGraphCall(
        context, fn,
        invalid("no graph is being recorded (tamoe_rt_graph_begin)"));
  if (!graph)
    return finishGraphCall(context, fn, invalid("graph is null"));
  if (!context->exchanges.empty())
    return finishGraphCall(
        context, fn,
        invalid(str(context->exchanges.size(),
                    " exchange(s) started while recording are in flight: "
                    "wait for them before tamoe_rt_graph_end")));
  std::unique_ptr<Backend::RecordedGraph> recorded;
  Status status = context->backend->endGraph(recorded);
  context->recording = false;
  if (!context->recordingFailure.ok())
    status = Status::error(context->recordingFailure.code,
                           "the recording failed: " +
                               context->recordingFailure.message);
  if (!status.ok())
    return finishGraphCall(context, fn, status);
  recorded->calls = context->recordedCalls;
  // Process-wide, starting at 1: never null, never reused.
  static std::atomic<uintptr_t> lastId{0};
  uintptr_t id = ++lastId;
  context->graphs.emplace_back(id, std::move(recorded));
  *graph = reinterpret_cast<tamoe_rt_graph_t *>(id);
  return TAMOE_RT_SUCCESS;
}

namespace {
/// Where the graph a handle stands for is in the context's graphs (their
/// end when it is not one of them).
auto findGraph(tamoe_rt_context_t *context, tamoe_rt_graph_t *graph) {
  auto id = reinterpret_cast<uintptr_t>(graph);
  return std::find_if(context->graphs.begin(), context->graphs.end(),
                      [&](const auto &entry) { return entry.first == id; });
}

Status unknownGraph(tamoe_rt_graph_t *graph) {
  return invalid(str("graph ", static_cast<const void *>(graph),
                     " is not a graph of this context (destroyed already?)"));
}
} // namespace

tamoe_rt_status_t tamoe_rt_graph_launch(tamoe_rt_context_t *context,
                                        tamoe_rt_graph_t *graph) {
  const char *fn = "tamoe_rt_graph_launch";
  if (Status usable = contextStatus(context); !usable.ok())
    return finishGraphCall(nullptr, fn, usable);
  if (!graph)
    return finishGraphCall(context, fn, invalid("graph is null"));
  // Before the timing: a refused launch is no recorded call.
  if (context->recording)
    return finishGraphCall(
        context, fn, invalid("cannot launch a graph while recording one"));
  Timed timed(context, fn);
  auto found = findGraph(context, graph);
  if (found == context->graphs.end())
    return finishGraphCall(context, fn, unknownGraph(graph));
  return finishGraphCall(context, fn,
                         context->backend->launchGraph(*found->second));
}

tamoe_rt_status_t tamoe_rt_graph_destroy(tamoe_rt_context_t *context,
                                         tamoe_rt_graph_t *graph) {
  const char *fn = "tamoe_rt_graph_destroy";
  if (Status usable = contextStatus(context); !usable.ok())
    return finishGraphCall(nullptr, fn, usable);
  if (!graph)
    return TAMOE_RT_SUCCESS;
  auto found = findGraph(context, graph);
  if (found == context->graphs.end())
    return finishGraphCall(context, fn, unknownGraph(graph));
  context->graphs.erase(found);
  return TAMOE_RT_SUCCESS;
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

tamoe_rt_status_t
tamoe_rt_gate(tamoe_rt_context_t *context, const float *logits, intptr_t tokens,
              intptr_t experts, intptr_t k, tamoe_rt_score_t score,
              int32_t renormalize, intptr_t num_groups, intptr_t groups_kept,
              int32_t *expert_ids, float *weights, float *probs) {
  const char *fn = "tamoe_rt_gate";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.atLeast(tokens, 0, "tokens")
      .atLeast(experts, 1, "experts")
      .expertIds(experts)
      .topK(k, experts)
      .score(score)
      .atLeast(num_groups, 0, "num_groups");
  if (num_groups == 0) {
    check.that(groups_kept == 0, [&] {
      return str("groups_kept must be 0 without groups (num_groups = 0), got ",
                 groups_kept);
    });
  } else if (num_groups > 0) {
    check
        .that(experts % num_groups == 0,
              [&] {
                return str("num_groups (", num_groups,
                           ") must divide experts (", experts, ")");
              })
        .that(groups_kept >= 1 && groups_kept <= num_groups,
              [&] {
                return str("groups_kept must be in [1, num_groups], got ",
                           groups_kept, " for ", num_groups, " groups");
              })
        .that(k <= groups_kept * (experts / std::max<intptr_t>(num_groups, 1)),
              [&] {
                return str("k = ", k, " exceeds the ",
                           groups_kept * (experts / num_groups),
                           " experts of the ", groups_kept, " kept groups");
              });
  }
  check.fits(tokens, experts, "tokens * experts")
      .notNull(logits, "logits", tokens > 0)
      .notNull(expert_ids, "expert_ids", tokens > 0)
      .notNull(weights, "weights", tokens > 0)
      .notNull(probs, "probs", tokens > 0);
  if (check.status.ok())
    check.apart({{expert_ids, product(tokens, k), 4, "expert_ids"},
                 {weights, product(tokens, k), 4, "weights"},
                 {probs, product(tokens, experts), 4, "probs"}},
                {{logits, product(tokens, experts), 4, "logits"}});
  Status status = check.status;
  if (status.ok())
    status = context->backend->gate(logits, tokens, experts, k, score,
                                    renormalize != 0, num_groups, groups_kept,
                                    expert_ids, weights, probs);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_dispatch(
    tamoe_rt_context_t *context, const void *tokens, intptr_t num_tokens,
    intptr_t row_bytes, const int32_t *expert_ids, intptr_t k, intptr_t experts,
    const float *weights, intptr_t capacity, tamoe_rt_drop_t drop,
    void *dispatched, intptr_t dispatched_capacity, int32_t *expert_counts,
    int32_t *positions, int64_t *num_dropped) {
  const char *fn = "tamoe_rt_dispatch";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  bool byWeight = raw(drop) == TAMOE_RT_DROP_PROBABILITY && capacity >= 0;
  Check check;
  check.atLeast(num_tokens, 0, "num_tokens")
      .atLeast(row_bytes, 1, "row_bytes")
      .atLeast(experts, 1, "experts")
      .expertIds(experts)
      .topK(k, experts)
      .that(raw(drop) == TAMOE_RT_DROP_POSITION ||
                raw(drop) == TAMOE_RT_DROP_PROBABILITY,
            [&] {
              return str("drop = ", raw(drop), " is not a tamoe_rt_drop_t");
            })
      .atLeast(dispatched_capacity, 0, "dispatched_capacity")
      .fits(num_tokens, k, "num_tokens * k")
      .that(product(num_tokens, k) <= INT32_MAX,
            [&] {
              return str("num_tokens * k = ", num_tokens * k,
                         " exceeds the int32 positions");
            })
      .fits(num_tokens, row_bytes, "num_tokens * row_bytes")
      .fits(dispatched_capacity, row_bytes, "dispatched_capacity * row_bytes")
      .notNull(tokens, "tokens", num_tokens > 0)
      .notNull(expert_ids, "expert_ids", num_tokens > 0)
      .that(!byWeight || num_tokens == 0 || weights,
            [] {
              return std::string("weights is null, but "
                                 "TAMOE_RT_DROP_PROBABILITY needs them");
            })
      .notNull(dispatched, "dispatched", dispatched_capacity > 0)
      .notNull(expert_counts, "expert_counts")
      .notNull(positions, "positions", num_tokens > 0)
      .notNull(num_dropped, "num_dropped");
  if (check.status.ok()) {
    intptr_t assignments = product(num_tokens, k);
    check.apart({{dispatched, dispatched_capacity, row_bytes, "dispatched"},
                 {expert_counts, experts, 4, "expert_counts"},
                 {positions, assignments, 4, "positions"},
                 {num_dropped, 1, 8, "num_dropped"}},
                {{tokens, num_tokens, row_bytes, "tokens"},
                 {expert_ids, assignments, 4, "expert_ids"},
                 {weights, assignments, 4, "weights"}});
  }
  Status status = check.status;
  if (status.ok())
    status = context->backend->dispatch(
        tokens, num_tokens, row_bytes, expert_ids, k, experts, weights,
        capacity, drop, dispatched, dispatched_capacity, expert_counts,
        positions, num_dropped);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_combine(tamoe_rt_context_t *context,
                                   tamoe_rt_dtype_t dtype,
                                   const void *expert_outputs, intptr_t rows,
                                   intptr_t hidden, const int32_t *positions,
                                   const float *weights, intptr_t tokens,
                                   intptr_t k, void *combined) {
  const char *fn = "tamoe_rt_combine";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Status status = Check()
                      .dtype(dtype, "dtype")
                      .atLeast(rows, 0, "rows")
                      .atLeast(hidden, 1, "hidden")
                      .atLeast(tokens, 0, "tokens")
                      .atLeast(k, 1, "k")
                      .floats(rows, hidden, "rows * hidden")
                      .floats(tokens, hidden, "tokens * hidden")
                      .fits(tokens, k, "tokens * k")
                      .notNull(expert_outputs, "expert_outputs", rows > 0)
                      .notNull(positions, "positions", tokens > 0)
                      .notNull(combined, "combined", tokens > 0)
                      .status;
  if (status.ok()) {
    intptr_t element = dtypeBytes(raw(dtype));
    status =
        Check()
            .apart({{combined, product(tokens, hidden), element, "combined"}},
                   {{expert_outputs, product(rows, hidden), element,
                     "expert_outputs"},
                    {positions, product(tokens, k), 4, "positions"},
                    {weights, product(tokens, k), 4, "weights"}})
            .status;
  }
  if (status.ok() && context->backend->takesRows(dtype)) {
    status =
        context->backend->combineRows(dtype, expert_outputs, rows, hidden,
                                      positions, weights, tokens, k, combined);
  } else if (status.ok()) {
    F32Staging f32(*context->backend);
    const float *outputs = f32.in(dtype, expert_outputs, rows * hidden);
    float *result = f32.out(dtype, combined, tokens * hidden);
    status = f32.run([&] {
      return context->backend->combine(outputs, rows, hidden, positions,
                                       weights, tokens, k, result);
    });
  }
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_aux_loss(tamoe_rt_context_t *context,
                                    const float *probs,
                                    const int32_t *expert_ids,
                                    const int32_t *positions, intptr_t tokens,
                                    intptr_t experts, intptr_t k,
                                    const float *expert_weights, float *loss) {
  const char *fn = "tamoe_rt_aux_loss";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Status status = Check()
                      .atLeast(tokens, 0, "tokens")
                      .atLeast(experts, 1, "experts")
                      .expertIds(experts)
                      .topK(k, experts)
                      .fits(tokens, experts, "tokens * experts")
                      .notNull(probs, "probs", tokens > 0)
                      .notNull(expert_ids, "expert_ids", tokens > 0)
                      .notNull(loss, "loss")
                      .status;
  if (status.ok())
    status = Check()
                 .apart({{loss, 1, 4, "loss"}},
                        {{probs, product(tokens, experts), 4, "probs"},
                         {expert_ids, product(tokens, k), 4, "expert_ids"},
                         {positions, product(tokens, k), 4, "positions"},
                         {expert_weights, experts, 4, "expert_weights"}})
                 .status;
  if (status.ok())
    status = context->backend->auxLoss(probs, expert_ids, positions, tokens,
                                       experts, k, expert_weights, loss);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_grouped_matmul(
    tamoe_rt_context_t *context, tamoe_rt_dtype_t dtype, const void *rows,
    intptr_t rows_capacity, intptr_t hidden, const int32_t *counts,
    intptr_t num_counts, intptr_t experts, const void *weights,
    intptr_t out_features, void *result) {
  const char *fn = "tamoe_rt_grouped_matmul";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Status status = Check()
                      .dtype(dtype, "dtype")
                      .groupedShape(rows_capacity, hidden, num_counts, experts,
                                    out_features)
                      .notNull(rows, "rows", rows_capacity > 0)
                      .notNull(counts, "counts", num_counts > 0)
                      .notNull(weights, "weights")
                      .notNull(result, "result", rows_capacity > 0)
                      .status;
  if (status.ok()) {
    intptr_t element = dtypeBytes(raw(dtype));
    status =
        Check()
            .apart({{result, product(rows_capacity, out_features), element,
                     "result"}},
                   {{rows, product(rows_capacity, hidden), element, "rows"},
                    {counts, num_counts, 4, "counts"},
                    {weights, product(product(experts, hidden), out_features),
                     element, "weights"}})
            .status;
  }
  if (status.ok() && context->backend->takesRows(dtype)) {
    status = context->backend->groupedMatmulRows(
        dtype, rows, rows_capacity, hidden, counts, num_counts, experts,
        weights, out_features, result);
  } else if (status.ok()) {
    F32Staging f32(*context->backend);
    const float *x = f32.in(dtype, rows, rows_capacity * hidden);
    const float *w = f32.in(dtype, weights, experts * hidden * out_features);
    float *y = f32.out(dtype, result, rows_capacity * out_features);
    status = f32.run([&] {
      return context->backend->groupedMatmul(x, rows_capacity, hidden, counts,
                                             num_counts, experts, w,
                                             out_features, y);
    });
  }
  return finish(context, fn, status);
}

tamoe_rt_status_t
tamoe_rt_matmul(tamoe_rt_context_t *context, tamoe_rt_dtype_t a_type,
                tamoe_rt_dtype_t b_type, tamoe_rt_dtype_t c_type, const void *a,
                const void *b, intptr_t m, intptr_t k, intptr_t n,
                int32_t transpose_a, int32_t transpose_b, const void *c_init,
                void *c) {
  const char *fn = "tamoe_rt_matmul";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  // Bytes of the matrices as f32 (what staging allocates, at least their
  // own bytes), -1 when the size overflows.
  intptr_t aBytes = floatBytes(m, k), bBytes = floatBytes(k, n),
           cBytes = floatBytes(m, n);
  bool any = m > 0 && n > 0;
  Status status = Check()
                      .dtype(a_type, "a_type")
                      .dtype(b_type, "b_type")
                      .dtype(c_type, "c_type")
                      .atLeast(m, 0, "m")
                      .atLeast(k, 0, "k")
                      .atLeast(n, 0, "n")
                      .that(aBytes >= 0 && bBytes >= 0 && cBytes >= 0,
                            [&] {
                              return str("m = ", m, ", k = ", k, ", n = ", n,
                                         ": the matrices' bytes overflow");
                            })
                      .notNull(a, "a", any && k > 0)
                      .notNull(b, "b", any && k > 0)
                      .notNull(c, "c", any)
                      .status;
  if (status.ok())
    status =
        Check()
            .disjoint(a, typedBytes(a_type, m, k), "a", c,
                      typedBytes(c_type, m, n), "c")
            .disjoint(b, typedBytes(b_type, k, n), "b", c,
                      typedBytes(c_type, m, n), "c")
            // c_init = c accumulates; a part of c would be read after
            // the rows before it were written.
            .disjoint(c_init == c ? nullptr : c_init, typedBytes(c_type, m, n),
                      "c_init", c, typedBytes(c_type, m, n), "c")
            .status;
  if (status.ok() && any &&
      context->backend->matmulTakes(a_type, b_type, c_type)) {
    status = context->backend->matmulRows(a_type, b_type, c_type, a, b, m, k, n,
                                          transpose_a != 0, transpose_b != 0,
                                          c_init, c);
  } else if (status.ok() && any) {
    F32Staging f32(*context->backend);
    const float *x = f32.in(a_type, a, m * k);
    const float *w = f32.in(b_type, b, k * n);
    const float *init = f32.in(c_type, c_init, m * n);
    float *y = f32.out(c_type, c, m * n);
    status = f32.run([&] {
      return context->backend->matmul(x, w, m, k, n, transpose_a != 0,
                                      transpose_b != 0, init, y);
    });
  }
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_map(tamoe_rt_context_t *context, tamoe_rt_map_t op,
                               tamoe_rt_dtype_t dtype, const void *a,
                               const void *b, intptr_t n, void *out) {
  const char *fn = "tamoe_rt_map";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  int kind = raw(op);
  bool valid = kind >= TAMOE_RT_MAP_ADD && kind <= TAMOE_RT_MAP_SILU_GRAD;
  bool unary = kind == TAMOE_RT_MAP_RELU || kind == TAMOE_RT_MAP_NEG ||
               kind == TAMOE_RT_MAP_SILU;
  Status status =
      Check()
          .that(valid,
                [&] { return str("op ", kind, " is not a tamoe_rt_map_t"); })
          .dtype(dtype, "dtype")
          .atLeast(n, 0, "n")
          .fits(n, 4, "n * 4")
          .notNull(a, "a", n > 0)
          .notNull(b, "b", n > 0 && !unary)
          .notNull(out, "out", n > 0)
          .status;
  // In place (out = a or b) is fine; a shifted overlap would read results
  // already written.
  if (status.ok()) {
    intptr_t element = dtypeBytes(raw(dtype));
    status = Check()
                 .apart({{out, out == a ? 0 : n, element, "out"}},
                        {{a, n, element, "a"}})
                 .apart({{out, out == b || unary ? 0 : n, element, "out"}},
                        {{b, n, element, "b"}})
                 .status;
  }
  if (status.ok() && n > 0 && context->backend->takesRows(dtype)) {
    status =
        context->backend->mapRows(op, dtype, a, unary ? nullptr : b, n, out);
  } else if (status.ok() && n > 0) {
    F32Staging f32(*context->backend);
    const float *x = f32.in(dtype, a, n);
    const float *y = f32.in(dtype, b, n);
    float *result = f32.out(dtype, out, n);
    status =
        f32.run([&] { return context->backend->map(op, x, y, n, result); });
  }
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_add_counts(tamoe_rt_context_t *context,
                                      const int32_t *a, const int32_t *b,
                                      intptr_t n, int32_t *out) {
  const char *fn = "tamoe_rt_add_counts";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.atLeast(n, 0, "n")
      .fits(n, 4, "n * 4")
      .notNull(a, "a", n > 0)
      .notNull(b, "b", n > 0)
      .notNull(out, "out", n > 0);
  // In place is fine; a shifted overlap would read sums already written.
  if (check.status.ok() && out != a)
    check.disjoint(out, n * 4, "out", a, n * 4, "a");
  if (check.status.ok() && out != b)
    check.disjoint(out, n * 4, "out", b, n * 4, "b");
  Status status = check.status;
  if (status.ok() && n > 0)
    status = context->backend->addCounts(a, b, n, out);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_counts_total(tamoe_rt_context_t *context,
                                        const int32_t *counts, intptr_t n,
                                        intptr_t *total) {
  const char *fn = "tamoe_rt_counts_total";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.atLeast(n, 0, "n")
      .fits(n, 4, "n * 4")
      .notNull(counts, "counts", n > 0)
      .notNull(total, "total");
  std::vector<int32_t> host;
  if (check.status.ok() && n > 0) {
    host.resize(size_t(n));
    check.status = context->backend->copyToHost(host.data(), counts,
                                                intptr_t(n * sizeof(int32_t)));
  }
  // A negative count is counted as none rather than refused here, on one
  // rank: the exchange that this sizes checks on every rank alike that
  // what arrives fits.
  int64_t sum = 0;
  for (intptr_t i = 0; check.status.ok() && i < n; ++i)
    sum += std::max(host[size_t(i)], 0);
  if (check.status.ok())
    *total = intptr_t(sum);
  return finish(context, fn, check.status);
}

tamoe_rt_status_t tamoe_rt_convert(tamoe_rt_context_t *context,
                                   tamoe_rt_dtype_t src_type, const void *src,
                                   tamoe_rt_dtype_t dst_type, void *dst,
                                   intptr_t n) {
  const char *fn = "tamoe_rt_convert";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Status status = Check()
                      .dtype(src_type, "src_type")
                      .dtype(dst_type, "dst_type")
                      .atLeast(n, 0, "n")
                      .fits(n, 4, "n * 4")
                      .notNull(src, "src", n > 0)
                      .notNull(dst, "dst", n > 0)
                      .status;
  // Elements are read before their slot is written, so one buffer may be
  // both when the types have the same size; otherwise they must not overlap.
  if (status.ok() &&
      !(src == dst && dtypeBytes(raw(src_type)) == dtypeBytes(raw(dst_type))))
    status = Check()
                 .disjoint(src, typedBytes(src_type, n, 1), "src", dst,
                           typedBytes(dst_type, n, 1), "dst")
                 .status;
  if (status.ok() && n > 0)
    status = context->backend->convert(src_type, src, dst_type, dst, n);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_regroup(tamoe_rt_context_t *context,
                                   const void *rows, intptr_t rows_capacity,
                                   intptr_t row_bytes, const int32_t *counts,
                                   intptr_t a, intptr_t b, intptr_t inner,
                                   void *regrouped, int32_t *regrouped_counts) {
  const char *fn = "tamoe_rt_regroup";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.atLeast(rows_capacity, 0, "rows_capacity")
      .atLeast(row_bytes, 1, "row_bytes")
      .atLeast(a, 1, "a")
      .atLeast(b, 1, "b")
      .atLeast(inner, 1, "inner")
      .fits(a, b, "a * b")
      .fits(product(a, b), inner, "a * b * inner")
      .fits(rows_capacity, row_bytes, "rows_capacity * row_bytes")
      .notNull(rows, "rows", rows_capacity > 0)
      .notNull(counts, "counts")
      .notNull(regrouped, "regrouped", rows_capacity > 0)
      .notNull(regrouped_counts, "regrouped_counts");
  if (check.status.ok()) {
    intptr_t countCells = a * b * inner;
    check.apart({{regrouped, rows_capacity, row_bytes, "regrouped"},
                 {regrouped_counts, countCells, 4, "regrouped_counts"}},
                {{rows, rows_capacity, row_bytes, "rows"},
                 {counts, countCells, 4, "counts"}});
  }
  Status status = check.status;
  if (status.ok())
    status =
        context->backend->regroup(rows, rows_capacity, row_bytes, counts, a, b,
                                  inner, regrouped, regrouped_counts);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_chunk(tamoe_rt_context_t *context, const void *rows,
                                 intptr_t rows_capacity, intptr_t row_bytes,
                                 const int32_t *counts, intptr_t num_counts,
                                 intptr_t chunk, intptr_t chunks,
                                 void *chunk_rows, intptr_t chunk_capacity,
                                 int32_t *chunk_counts) {
  const char *fn = "tamoe_rt_chunk";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check =
      chunkArguments(rows, rows_capacity, row_bytes, counts, num_counts, chunk,
                     chunks, chunk_rows, chunk_capacity);
  check.notNull(chunk_counts, "chunk_counts");
  if (check.status.ok()) {
    intptr_t countBytes = num_counts * intptr_t(sizeof(int32_t));
    check
        .disjoint(counts, countBytes, "counts", chunk_counts, countBytes,
                  "chunk_counts")
        .disjoint(counts, countBytes, "counts", chunk_rows,
                  chunk_capacity * row_bytes, "chunk_rows")
        .disjoint(chunk_counts, countBytes, "chunk_counts", chunk_rows,
                  chunk_capacity * row_bytes, "chunk_rows")
        .disjoint(rows, rows_capacity * row_bytes, "rows", chunk_counts,
                  countBytes, "chunk_counts");
  }
  Status status = check.status;
  if (status.ok())
    status = context->backend->chunk(rows, rows_capacity, row_bytes, counts,
                                     num_counts, chunk, chunks, chunk_rows,
                                     chunk_capacity, chunk_counts);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_unchunk(tamoe_rt_context_t *context,
                                   const void *chunk_rows,
                                   intptr_t chunk_capacity, intptr_t row_bytes,
                                   const int32_t *counts, intptr_t num_counts,
                                   intptr_t chunk, intptr_t chunks, void *rows,
                                   intptr_t rows_capacity) {
  const char *fn = "tamoe_rt_unchunk";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check = chunkArguments(rows, rows_capacity, row_bytes, counts,
                               num_counts, chunk, chunks, chunk_rows,
                               chunk_capacity);
  if (check.status.ok())
    check.disjoint(counts, num_counts * intptr_t(sizeof(int32_t)), "counts",
                   rows, rows_capacity * row_bytes, "rows");
  Status status = check.status;
  if (status.ok())
    status = context->backend->unchunk(chunk_rows, chunk_capacity, row_bytes,
                                       counts, num_counts, chunk, chunks, rows,
                                       rows_capacity);
  return finish(context, fn, status);
}

tamoe_rt_status_t
tamoe_rt_chunk_positions(tamoe_rt_context_t *context, const int32_t *positions,
                         const int32_t *expert_ids, intptr_t tokens, intptr_t k,
                         const int32_t *expert_counts, intptr_t experts,
                         intptr_t chunk, intptr_t chunks,
                         int32_t *chunk_positions) {
  const char *fn = "tamoe_rt_chunk_positions";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Check check;
  check.part(chunk, chunks)
      .atLeast(tokens, 0, "tokens")
      .atLeast(k, 1, "k")
      .atLeast(experts, 1, "experts")
      .expertIds(experts)
      .floats(tokens, k, "tokens * k")
      .notNull(positions, "positions", tokens > 0)
      .notNull(expert_ids, "expert_ids", tokens > 0)
      .notNull(expert_counts, "expert_counts")
      .notNull(chunk_positions, "chunk_positions", tokens > 0);
  if (check.status.ok()) {
    intptr_t assignmentBytes = tokens * k * intptr_t(sizeof(int32_t));
    check
        .disjoint(positions, assignmentBytes, "positions", chunk_positions,
                  assignmentBytes, "chunk_positions")
        .disjoint(expert_ids, assignmentBytes, "expert_ids", chunk_positions,
                  assignmentBytes, "chunk_positions")
        .disjoint(expert_counts, experts * intptr_t(sizeof(int32_t)),
                  "expert_counts", chunk_positions, assignmentBytes,
                  "chunk_positions");
  }
  Status status = check.status;
  if (status.ok())
    status = context->backend->chunkPositions(positions, expert_ids, tokens, k,
                                              expert_counts, experts, chunk,
                                              chunks, chunk_positions);
  return finish(context, fn, status);
}

//===----------------------------------------------------------------------===//
// De-duplication
//===----------------------------------------------------------------------===//

tamoe_rt_status_t tamoe_rt_dedup_pack(
    tamoe_rt_context_t *context, const void *tokens, intptr_t num_tokens,
    intptr_t row_bytes, const int32_t *expert_ids, const int32_t *positions,
    intptr_t k, intptr_t experts_per_node, intptr_t nodes, void *unique,
    int32_t *routes, intptr_t unique_capacity, int32_t *node_counts) {
  const char *fn = "tamoe_rt_dedup_pack";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Status status =
      Check()
          .packRouting(num_tokens, k, experts_per_node, nodes, expert_ids,
                       positions)
          .atLeast(row_bytes, 1, "row_bytes")
          .atLeast(unique_capacity, 0, "unique_capacity")
          .fits(num_tokens, row_bytes, "num_tokens * row_bytes")
          .fits(unique_capacity, row_bytes, "unique_capacity * row_bytes")
          .fits(unique_capacity, k, "unique_capacity * k")
          .notNull(tokens, "tokens", num_tokens > 0)
          .notNull(unique, "unique", unique_capacity > 0)
          .notNull(routes, "routes", unique_capacity > 0)
          .notNull(node_counts, "node_counts")
          .status;
  if (status.ok()) {
    intptr_t assignments = product(num_tokens, k);
    status = Check()
                 .apart({{unique, unique_capacity, row_bytes, "unique"},
                         {routes, product(unique_capacity, k), 4, "routes"},
                         {node_counts, nodes, 4, "node_counts"}},
                        {{tokens, num_tokens, row_bytes, "tokens"},
                         {expert_ids, assignments, 4, "expert_ids"},
                         {positions, assignments, 4, "positions"}})
                 .status;
  }
  if (status.ok())
    status = context->backend->dedupPack(
        tokens, num_tokens, row_bytes, expert_ids, positions, k,
        experts_per_node, nodes, unique, routes, unique_capacity, node_counts);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_dedup_expand(
    tamoe_rt_context_t *context, const void *unique, const int32_t *routes,
    intptr_t unique_capacity, intptr_t row_bytes, intptr_t k,
    const int32_t *recv_counts, intptr_t nodes, intptr_t ranks_per_node,
    intptr_t experts_per_rank, void *expanded, intptr_t expanded_capacity,
    int32_t *expanded_counts) {
  const char *fn = "tamoe_rt_dedup_expand";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  context->backend->progress();
  Status status =
      Check()
          .expandRoutes(unique_capacity, k, routes, recv_counts, nodes,
                        ranks_per_node, experts_per_rank)
          .atLeast(row_bytes, 1, "row_bytes")
          .atLeast(expanded_capacity, 0, "expanded_capacity")
          .fits(unique_capacity, row_bytes, "unique_capacity * row_bytes")
          .fits(expanded_capacity, row_bytes, "expanded_capacity * row_bytes")
          .notNull(unique, "unique", unique_capacity > 0)
          .notNull(expanded, "expanded", expanded_capacity > 0)
          .notNull(expanded_counts, "expanded_counts")
          .status;
  if (status.ok())
    status =
        Check()
            .apart({{expanded, expanded_capacity, row_bytes, "expanded"},
                    {expanded_counts,
                     product(product(ranks_per_node, nodes), experts_per_rank),
                     4, "expanded_counts"}},
                   {{unique, unique_capacity, row_bytes, "unique"},
                    {routes, product(unique_capacity, k), 4, "routes"},
                    {recv_counts, nodes, 4, "recv_counts"}})
            .status;
  if (status.ok())
    status = context->backend->dedupExpand(
        unique, routes, unique_capacity, row_bytes, k, recv_counts, nodes,
        ranks_per_node, experts_per_rank, expanded, expanded_capacity,
        expanded_counts);
  return finish(context, fn, status);
}

//===----------------------------------------------------------------------===//
// Collectives
//===----------------------------------------------------------------------===//

tamoe_rt_status_t
tamoe_rt_all_to_all(tamoe_rt_context_t *context, tamoe_rt_group_t group,
                    const void *send, intptr_t send_capacity,
                    intptr_t row_bytes, const int32_t *send_counts,
                    intptr_t peers, intptr_t split, void *received,
                    intptr_t recv_capacity, int32_t *recv_counts) {
  const char *fn = "tamoe_rt_all_to_all";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  // The halves of tamoe_rt_all_to_all_start and _wait, back to back: one
  // code path for both.
  std::unique_ptr<PendingExchange> pending;
  Status status = startExchange(
      context, Status::success(), group, send, send_capacity, row_bytes,
      send_counts, peers, split, received, recv_capacity, recv_counts, pending);
  if (status.ok())
    status =
        context->backend->allToAllWait(std::move(pending), context->traffic);
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_all_to_all_start(
    tamoe_rt_context_t *context, tamoe_rt_group_t group, const void *send,
    intptr_t send_capacity, intptr_t row_bytes, const int32_t *send_counts,
    intptr_t peers, intptr_t split, void *received, intptr_t recv_capacity,
    int32_t *recv_counts, tamoe_rt_exchange_t **exchange) {
  const char *fn = "tamoe_rt_all_to_all_start";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  if (exchange)
    *exchange = nullptr;
  context->backend->progress();
  // A missing handle fails with the other arguments, on every rank alike.
  std::unique_ptr<PendingExchange> pending;
  Status status = startExchange(
      context, exchange ? Status::success() : invalid("exchange is null"),
      group, send, send_capacity, row_bytes, send_counts, peers, split,
      received, recv_capacity, recv_counts, pending);
  if (status.ok()) {
    // Process-wide, starting at 1: never null, never reused.
    static std::atomic<uintptr_t> lastId{0};
    auto handle = std::make_unique<tamoe_rt_exchange_t>();
    handle->pending = std::move(pending);
    handle->send = send;
    handle->id = ++lastId;
    if (exchange) {
      *exchange = reinterpret_cast<tamoe_rt_exchange_t *>(handle->id);
    } else {
      // A backend that settles in the background has posted the settle,
      // whose verdict the peers' waits report. Without a handle to give,
      // the exchange stays in flight unreachable, as one never waited
      // (finalize completes it): waiting here could hold up the peers'
      // blocking collectives until the timeout.
      handle->pending->abandoned = true;
      status = invalid(
          str("rank ", context->launcher->rank(), ": exchange is null"));
    }
    context->exchanges.push_back(std::move(handle));
  }
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_all_to_all_wait(tamoe_rt_context_t *context,
                                           tamoe_rt_exchange_t *exchange,
                                           const void *send) {
  const char *fn = "tamoe_rt_all_to_all_wait";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  if (!exchange)
    return finish(context, fn, invalid("exchange is null"));
  // The handle is an id (see tamoe_rt_exchange), never dereferenced: one
  // waited already, or another context's, is not found.
  auto &exchanges = context->exchanges;
  auto id = reinterpret_cast<uintptr_t>(exchange);
  auto found =
      std::find_if(exchanges.begin(), exchanges.end(),
                   [&](const std::unique_ptr<tamoe_rt_exchange_t> &pending) {
                     return pending->id == id;
                   });
  if (found == exchanges.end())
    return finish(context, fn,
                  invalid(str("exchange ", static_cast<const void *>(exchange),
                              " is not a pending exchange of this context "
                              "(waited twice?)")));
  if ((*found)->send != send)
    return finish(context, fn,
                  invalid(str("send = ", send,
                              " is not the buffer the exchange started with (",
                              (*found)->send, ")")));
  std::unique_ptr<tamoe_rt_exchange_t> handle = std::move(*found);
  exchanges.erase(found);
  return finish(context, fn,
                context->backend->allToAllWait(std::move(handle->pending),
                                               context->traffic));
}

tamoe_rt_status_t tamoe_rt_all_to_all_counts(tamoe_rt_context_t *context,
                                             tamoe_rt_group_t group,
                                             const int32_t *send_counts,
                                             intptr_t peers, intptr_t split,
                                             int32_t *recv_counts,
                                             intptr_t *total) {
  const char *fn = "tamoe_rt_all_to_all_counts";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  if (Status bad = groupCheck(group); !bad.ok())
    return finish(context, fn, bad);
  // send_counts [peers, split] checked, then the outputs, then the counts
  // exchanged through the launcher: failing on every rank alike.
  Launcher &launcher = *context->launcher;
  Backend &backend = *context->backend;
  int size = launcher.groupSize(group);
  Status local = peersCheck(launcher, group, peers);
  if (local.ok()) {
    Check check;
    check
        .that(split >= 1 && split <= INT_MAX / size,
              [&] {
                return str("split must be in [1, ", INT_MAX / size, "], got ",
                           split);
              })
        .notNull(send_counts, "send_counts")
        .notNull(recv_counts, "recv_counts")
        .notNull(total, "total");
    local = check.status;
  }
  std::vector<int32_t> counts;
  if (local.ok()) {
    counts.resize(size * split);
    local = backend.copyToHost(counts.data(), send_counts,
                               intptr_t(counts.size() * sizeof(int32_t)));
  }
  for (size_t i = 0; local.ok() && i < counts.size(); ++i)
    if (counts[i] < 0)
      local = invalid(
          split == 1 ? str("send_counts[", i, "] = ", counts[i], " is negative")
                     : str("send_counts[", i / split, ", ", i % split,
                           "] = ", counts[i], " is negative"));
  Status status =
      launcher.agreeOn(group, local, {{"split", local.ok() ? split : 0}});
  std::vector<int32_t> received;
  if (status.ok())
    status = launcher.allToAllInts(group, counts, int(split), received,
                                   str("the exchange of counts over the ",
                                       Launcher::groupName(group), " group"));
  if (status.ok())
    status = backend.copyToBackend(recv_counts, received.data(),
                                   intptr_t(received.size() * sizeof(int32_t)));
  if (status.ok()) {
    int64_t rows = 0;
    for (int32_t count : received)
      rows += count;
    *total = intptr_t(rows);
  }
  return finish(context, fn, status);
}

namespace {
/// The most steps tamoe_rt_all_to_all_totals takes, and the most counts it
/// makes (steps x ranks x entries: a layer's tens of steps over the
/// experts of a thousand ranks fit); these bound the memory and the time a
/// corrupt call costs.
constexpr intptr_t kMaxCountsSteps = 1 << 16;
constexpr int64_t kMaxCountsMade = int64_t(1) << 26;

/// What a step of tamoe_rt_all_to_all_totals makes from its source's
/// counts, for every member of the call's `group` at once: counts[i] are
/// member i's. The step was checked (an exchange's group is `group`, or
/// `group` is the world).
std::vector<std::vector<int32_t>>
countsStep(const Launcher &launcher, tamoe_rt_group_t group,
           const int64_t *step,
           const std::vector<std::vector<int32_t>> &counts) {
  int64_t kind = step[0], x = step[2], y = step[3], z = step[4];
  std::vector<std::vector<int32_t>> made(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    const std::vector<int32_t> &in = counts[i];
    std::vector<int32_t> &out = made[i];
    out.resize(in.size());
    if (kind == TAMOE_RT_COUNTS_CHUNK) {
      for (size_t e = 0; e < in.size(); ++e)
        out[e] = int32_t(partBegin(in[e], x + 1, y) - partBegin(in[e], x, y));
    } else if (kind == TAMOE_RT_COUNTS_REGROUP) {
      // [a, b, inner] -> [b, a, inner].
      for (int64_t u = 0; u < x; ++u)
        for (int64_t v = 0; v < y; ++v)
          std::copy_n(in.begin() + (u * y + v) * z, z,
                      out.begin() + (v * x + u) * z);
    } else {
      // Member p of the exchange's group sends this member the row at its
      // own index there.
      auto over = tamoe_rt_group_t(int32_t(x));
      int64_t rank = launcher.worldRankOf(group, int64_t(i));
      int64_t position = launcher.groupRank(over, rank);
      int64_t row = int64_t(in.size()) / y;
      for (int64_t p = 0; p < y; ++p) {
        int64_t from =
            launcher.groupRank(group, launcher.worldRankOf(over, p, rank));
        std::copy_n(counts[size_t(from)].begin() + position * row, row,
                    out.begin() + p * row);
      }
    }
  }
  return made;
}

/// The steps' words folded into one value that every rank must share
/// (FNV-1a), so that ranks given different steps fail alike.
int64_t stepsDigest(const int64_t *steps, intptr_t words) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (intptr_t i = 0; i < words; ++i) {
    hash ^= uint64_t(steps[i]);
    hash *= 0x100000001b3ull;
  }
  return int64_t(hash >> 1);
}
} // namespace

tamoe_rt_status_t
tamoe_rt_all_to_all_totals(tamoe_rt_context_t *context, tamoe_rt_group_t group,
                           const int32_t *counts, intptr_t entries,
                           const int64_t *steps, intptr_t num_steps,
                           intptr_t *totals) {
  const char *fn = "tamoe_rt_all_to_all_totals";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  if (Status bad = groupCheck(group); !bad.ok())
    return finish(context, fn, bad);
  Launcher &launcher = *context->launcher;
  int64_t size = launcher.groupSize(group);
  Check check;
  check
      .that(entries >= 1 && entries <= INT_MAX / size,
            [&] {
              return str("entries must be in [1, ", INT_MAX / size,
                         "] (int32 for every rank of the ",
                         Launcher::groupName(group), " group of ", size,
                         "), got ", entries);
            })
      .that(num_steps >= 1 && num_steps <= kMaxCountsSteps,
            [&] {
              return str("num_steps must be in [1, ", kMaxCountsSteps,
                         "], got ", num_steps);
            })
      .that(!check.status.ok() || num_steps * size * entries <= kMaxCountsMade,
            [&] {
              return str("num_steps x ranks x entries = ", num_steps, " x ",
                         size, " x ", entries, " counts exceed ",
                         kMaxCountsMade);
            })
      .notNull(counts, "counts")
      .notNull(steps, "steps")
      .notNull(totals, "totals");
  // Every step against the counts it reads, before anything is sent; and
  // the last step that reads each, so that the counts no later step
  // reads are dropped.
  std::vector<int64_t> sizes, lastRead;
  if (check.status.ok()) {
    sizes.assign(size_t(num_steps) + 1, 0);
    lastRead.assign(size_t(num_steps) + 1, -1);
    sizes[0] = entries;
  }
  for (intptr_t i = 0; check.status.ok() && i < num_steps; ++i) {
    const int64_t *step = steps + 5 * i;
    int64_t kind = step[0], source = step[1], x = step[2], y = step[3],
            z = step[4];
    auto fail = [&](auto &&...parts) {
      check.that(false, [&] { return str("steps[", i, "]: ", parts...); });
    };
    if (source < 0 || source > i) {
      fail("source ", source, " is not the counts or an earlier step's (0 to ",
           i, ")");
      break;
    }
    int64_t in = sizes[size_t(source)];
    lastRead[size_t(source)] = i;
    sizes[size_t(i) + 1] = in;
    if (kind == TAMOE_RT_COUNTS_CHUNK) {
      if (y < 1 || y > INT_MAX || x < 0 || x >= y || z != 0)
        fail("a chunk takes {chunk, chunks, 0} with 0 <= chunk < chunks <= ",
             INT_MAX, ", got {", x, ", ", y, ", ", z, "}");
    } else if (kind == TAMOE_RT_COUNTS_REGROUP) {
      int64_t ab, abInner;
      if (x < 1 || y < 1 || z < 1 || __builtin_mul_overflow(x, y, &ab) ||
          __builtin_mul_overflow(ab, z, &abInner) || abInner != in)
        fail("a regroup of [", x, ", ", y, ", ", z, "] does not fit the ", in,
             " counts of its source");
    } else if (kind == TAMOE_RT_COUNTS_EXCHANGE) {
      if (x != TAMOE_RT_GROUP_WORLD && x != TAMOE_RT_GROUP_NODE &&
          x != TAMOE_RT_GROUP_PEERS) {
        fail("group = ", x, " is not a tamoe_rt_group_t");
      } else if (auto over = tamoe_rt_group_t(int32_t(x));
                 group != TAMOE_RT_GROUP_WORLD && over != group) {
        fail("an exchange over the ", Launcher::groupName(over),
             " group reads counts from outside the ",
             Launcher::groupName(group), " group");
      } else {
        int peers = launcher.groupSize(over);
        if (y != peers || z != 0 || in % peers != 0)
          fail("an exchange over the ", Launcher::groupName(over),
               " group takes {group, ", peers, ", 0} and counts in rows of ",
               peers, ", got {", x, ", ", y, ", ", z, "} for ", in, " counts");
      }
    } else {
      fail("kind ", kind, " is not a tamoe_rt_counts_step_t");
    }
  }
  std::vector<int32_t> mine;
  if (check.status.ok()) {
    mine.resize(size_t(entries));
    check.status = context->backend->copyToHost(
        mine.data(), counts, intptr_t(entries * sizeof(int32_t)));
  }
  for (intptr_t e = 0; check.status.ok() && e < entries; ++e)
    check.that(mine[size_t(e)] >= 0, [&] {
      return str("counts[", e, "] = ", mine[size_t(e)], " is negative");
    });
  bool ok = check.status.ok();
  Status status =
      launcher.agreeOn(group, check.status,
                       {{"entries", ok ? entries : 0},
                        {"num_steps", ok ? num_steps : 0},
                        {"steps", ok ? stepsDigest(steps, 5 * num_steps) : 0}});
  // The gather, as the launchers' one collective of ints: this rank's
  // counts to every member.
  std::vector<std::vector<std::vector<int32_t>>> made;
  if (status.ok()) {
    std::vector<int32_t> send, gathered;
    send.reserve(size_t(size * entries));
    for (int64_t r = 0; r < size; ++r)
      send.insert(send.end(), mine.begin(), mine.end());
    status = launcher.allToAllInts(group, send, int(entries), gathered,
                                   str("the gather of counts over the ",
                                       Launcher::groupName(group), " group"));
    if (status.ok()) {
      made.resize(size_t(num_steps) + 1);
      made[0].resize(size_t(size));
      for (int64_t r = 0; r < size; ++r)
        made[0][size_t(r)].assign(gathered.begin() + r * entries,
                                  gathered.begin() + (r + 1) * entries);
    }
  }
  if (status.ok()) {
    int64_t me = launcher.groupRank(group);
    for (intptr_t i = 0; i < num_steps; ++i) {
      const int64_t *step = steps + 5 * i;
      made[size_t(i) + 1] =
          countsStep(launcher, group, step, made[size_t(step[1])]);
      int64_t total = 0;
      for (int32_t count : made[size_t(i) + 1][size_t(me)])
        total += count;
      totals[i] = intptr_t(total);
      if (lastRead[size_t(step[1])] == i)
        made[size_t(step[1])].clear();
      if (lastRead[size_t(i) + 1] < 0)
        made[size_t(i) + 1].clear();
    }
  }
  return finish(context, fn, status);
}

tamoe_rt_status_t tamoe_rt_all_to_all_hierarchical(
    tamoe_rt_context_t *context, const void *send, intptr_t send_capacity,
    intptr_t row_bytes, const int32_t *send_counts, intptr_t split,
    void *received, intptr_t recv_capacity, int32_t *recv_counts) {
  const char *fn = "tamoe_rt_all_to_all_hierarchical";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  Status local = allToAllArguments(send, send_capacity, row_bytes, send_counts,
                                   split, context->launcher->numRanks(),
                                   received, recv_capacity, recv_counts)
                     .status;
  return finish(context, fn,
                hierarchical(context, local, send, send_capacity, row_bytes,
                             send_counts, split, received, recv_capacity,
                             recv_counts));
}

tamoe_rt_status_t
tamoe_rt_dispatch_dedup(tamoe_rt_context_t *context, const void *tokens,
                        intptr_t num_tokens, intptr_t row_bytes,
                        const int32_t *expert_ids, const int32_t *positions,
                        intptr_t k, intptr_t experts, void *received,
                        intptr_t recv_capacity, int32_t *recv_counts) {
  const char *fn = "tamoe_rt_dispatch_dedup";
  if (Status usable = contextStatus(context); !usable.ok())
    return finish(nullptr, fn, usable);
  Timed timed(context, fn);
  intptr_t ranks = context->launcher->numRanks();
  Status local =
      Check()
          .atLeast(num_tokens, 0, "num_tokens")
          .that(row_bytes >= 1 && row_bytes <= INT_MAX,
                [&] {
                  return str("row_bytes must be in [1, ", INT_MAX, "], got ",
                             row_bytes);
                })
          .atLeast(experts, 1, "experts")
          .that(experts % ranks == 0 && experts <= INT32_MAX,
                [&] {
                  return str("experts (", experts,
                             ") must be a multiple of the ", ranks,
                             " ranks (and fit int32)");
                })
          .topK(k, experts)
          .atLeast(recv_capacity, 0, "recv_capacity")
          .fits(num_tokens, k * ranks, "num_tokens * k * ranks")
          .fits(num_tokens, row_bytes * ranks, "num_tokens * row_bytes * ranks")
          .fits(recv_capacity, row_bytes, "recv_capacity * row_bytes")
          .notNull(tokens, "tokens", num_tokens > 0)
          .notNull(expert_ids, "expert_ids", num_tokens > 0)
          .notNull(positions, "positions", num_tokens > 0)
          .notNull(received, "received", recv_capacity > 0)
          .notNull(recv_counts, "recv_counts")
          .status;
  if (local.ok())
    local = Check()
                .apart({{received, recv_capacity, row_bytes, "received"},
                        {recv_counts, experts, 4, "recv_counts"}},
                       {{tokens, num_tokens, row_bytes, "tokens"},
                        {expert_ids, product(num_tokens, k), 4, "expert_ids"},
                        {positions, product(num_tokens, k), 4, "positions"}})
                .status;
  return finish(context, fn,
                dispatchDedup(context, local, tokens, num_tokens, row_bytes,
                              expert_ids, positions, k, experts, received,
                              recv_capacity, recv_counts));
}

} // extern "C"
