//===- Program.cpp - Support for programs compiled by tamoe ---------------===//
//
// The process-wide context, status checks, memref allocation and test I/O
// of tamoe_rt/program.h.
//
//===----------------------------------------------------------------------===//

#include "tamoe_rt/program.h"
#include "Precision.h"

#include "LaunchOptions.h"

#if TAMOE_RT_HAVE_MPI
#include <mpi.h>
#endif

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace {
tamoe_rt_context_t *programContext = nullptr;
std::once_flag created;
/// Backend copies of constant host data, by (address, bytes): a constant is
/// uploaded on first use and kept until exit.
std::map<std::pair<const void *, intptr_t>, void *> constants;
std::mutex constantsMutex;

#if TAMOE_RT_HAVE_MPI
/// Whether create() initialised MPI (and exit finalises it).
bool mpiInitialisedHere = false;
#endif
/// The outputs (indices) this process wrote or was asked to write, for
/// the summary at exit; the first append to an index replaces its file.
std::mutex outputsMutex;
std::set<int64_t> outputIndices;

/// Rank 0 says where the outputs went, or that none were written: a run
/// without TAMOE_RT_OUTPUT_DIR exits 0 and would leave no trace otherwise.
void reportOutputs() {
  size_t outputs = outputIndices.size();
  if (!outputs || tamoe_rt_rank(programContext) != 0)
    return;
  if (const char *directory = std::getenv("TAMOE_RT_OUTPUT_DIR"))
    std::fprintf(stderr,
                 "tamoe_rt: wrote %lld outputs per rank to %s "
                 "(out<index>.rank<rank>.bin)\n",
                 (long long)outputs, directory);
  else
    std::fprintf(stderr,
                 "tamoe_rt: %lld outputs per rank not written: no output "
                 "was requested (set TAMOE_RT_OUTPUT_DIR to a directory)\n",
                 (long long)outputs);
  std::fflush(stderr);
}

void finalizeAtExit() {
  reportOutputs();
  for (auto &[key, copy] : constants)
    tamoe_rt_free(programContext, copy);
  constants.clear();
  intptr_t rank = tamoe_rt_rank(programContext);
  tamoe_rt_status_t status = tamoe_rt_finalize(programContext);
  programContext = nullptr;
#if TAMOE_RT_HAVE_MPI
  if (mpiInitialisedHere)
    MPI_Finalize();
#endif
  if (status == TAMOE_RT_SUCCESS)
    return;
  // What finalize could not do (write the timeline) fails the program.
  std::fprintf(stderr, "tamoe_rt: rank %lld: %s: %s\n", (long long)rank,
               tamoe_rt_status_name(status), tamoe_rt_last_error(nullptr));
  std::fflush(stdout);
  std::fflush(stderr);
  // In an exit handler, exit() again would be undefined.
  std::_Exit(1);
}

[[noreturn]] void fail(const std::string &message) {
  int64_t rank = programContext ? tamoe_rt_rank(programContext) : -1;
#if TAMOE_RT_HAVE_MPI
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  // MPI is finalized once the program has exited.
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    int mpiRank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &mpiRank);
    rank = mpiRank;
  }
#endif
  if (rank >= 0)
    std::fprintf(stderr, "tamoe_rt: rank %lld: %s\n", (long long)rank,
                 message.c_str());
  else
    std::fprintf(stderr, "tamoe_rt: %s\n", message.c_str());
  std::fflush(stderr);
  // Peers blocked in a collective with this rank would wait for their
  // timeout otherwise. (Over TCP, exiting closes this rank's sockets, which
  // fails the peers' next collective.)
#if TAMOE_RT_HAVE_MPI
  if (initialized && !finalized)
    MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  std::exit(1);
}

/// The backend TAMOE_RT_BACKEND asks for (cpu when unset).
tamoe_rt_backend_t requestedBackend() {
  const char *backend = std::getenv("TAMOE_RT_BACKEND");
  if (!backend || std::strcmp(backend, "cpu") == 0)
    return TAMOE_RT_BACKEND_CPU;
  if (std::strcmp(backend, "cuda") == 0)
    return TAMOE_RT_BACKEND_CUDA;
  fail(std::string("TAMOE_RT_BACKEND: expected cpu or cuda, got '") + backend +
       "'");
}

void create() {
  tamoe_rt_options_t options = tamoe_rt_default_options();
  options.backend = requestedBackend();
  // MPI is the program's rather than the runtime's, so that it is still up
  // when tamoe_rt_init fails: every rank then says which it is, besides the
  // rank that failed, and MPI_Abort ends them all. Not when the ranks meet
  // over TCP (torchrun).
#if TAMOE_RT_HAVE_MPI
  tamoe_rt::LauncherKind kind;
  bool forced;
  int initialised = 0, provided = 0;
  MPI_Initialized(&initialised);
  if (!initialised && tamoe_rt::requestedLauncher(kind, forced).empty() &&
      kind == tamoe_rt::LauncherKind::Mpi) {
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) !=
        MPI_SUCCESS)
      fail("MPI_Init_thread failed");
    mpiInitialisedHere = true;
    // As initialiseMpi (Core.cpp): a mismatched collective returns a status.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
#endif
  std::atexit(finalizeAtExit);
  tamoe_rt_status_t status = tamoe_rt_init(&options, &programContext);
  if (status != TAMOE_RT_SUCCESS)
    fail(std::string(tamoe_rt_status_name(status)) + ": " +
         tamoe_rt_last_error(nullptr));
}

tamoe_rt_context_t *context() {
  std::call_once(created, create);
  return programContext;
}

/// The ranked descriptor behind an unranked memref, checked to be
/// contiguous (what the test programs pass).
template <typename T>
std::pair<T *, int64_t> contiguous(const tamoe_rt_unranked_memref_t *memref,
                                   const char *function) {
  // {allocated, aligned, offset, sizes[rank], strides[rank]}
  auto *fields = static_cast<int64_t *>(memref->descriptor);
  T *aligned = reinterpret_cast<T *>(fields[1]);
  int64_t offset = fields[2];
  const int64_t *sizes = fields + 3;
  const int64_t *strides = sizes + memref->rank;
  int64_t elements = 1;
  for (int64_t dim = memref->rank - 1; dim >= 0; --dim) {
    if (sizes[dim] != 1 && strides[dim] != elements)
      fail(std::string(function) + ": the memref must be contiguous");
    elements *= sizes[dim];
  }
  return {aligned + offset, elements};
}

/// Writes `count` elements of T to $TAMOE_RT_OUTPUT_DIR/out<index>.rank<R>.bin
/// (nothing without the variable): replacing the file, or appending to what
/// this process wrote there before.
template <typename T>
void write(const T *host, size_t count, int64_t index, bool append,
           const char *function) {
  bool first;
  {
    std::lock_guard<std::mutex> lock(outputsMutex);
    first = outputIndices.insert(index).second;
  }
  const char *directory = std::getenv("TAMOE_RT_OUTPUT_DIR");
  if (!directory)
    return;
  std::string path = std::string(directory) + "/out" + std::to_string(index) +
                     ".rank" + std::to_string(tamoe_rt_rank(context())) +
                     ".bin";
  FILE *file = std::fopen(path.c_str(), append && !first ? "ab" : "wb");
  if (!file || std::fwrite(host, sizeof(T), count, file) != count ||
      std::fclose(file) != 0)
    fail(std::string(function) + ": cannot write " + path + ": " +
         std::strerror(errno));
}

/// `elements` of T in backend memory, written as `write` does.
template <typename T>
void writeFromBackend(const T *data, int64_t elements, int64_t index,
                      bool append, const char *function) {
  std::vector<T> host(elements);
  tamoe_rt_program_check(tamoe_rt_copy_to_host(context(), host.data(), data,
                                               elements * intptr_t(sizeof(T))));
  write(host.data(), host.size(), index, append, function);
}

template <typename T>
void output(const tamoe_rt_unranked_memref_t *memref, int64_t index,
            bool append, const char *function) {
  if (!std::getenv("TAMOE_RT_OUTPUT_DIR")) {
    write<T>(nullptr, 0, index, append, function);
    return;
  }
  auto [data, elements] = contiguous<T>(memref, function);
  writeFromBackend(data, elements, index, append, function);
}

/// f32 scratch memory of the backend for `elements`, freed with the object:
/// where rows of another type are converted by the backend itself
/// (tamoe_rt_convert), with the runtime's one rounding.
class F32Scratch {
public:
  explicit F32Scratch(int64_t elements) {
    tamoe_rt_program_check(tamoe_rt_alloc(
        context(), elements * intptr_t(sizeof(float)), &pointer));
  }
  ~F32Scratch() {
    if (pointer)
      tamoe_rt_free(context(), pointer);
  }
  float *data() const { return static_cast<float *>(pointer); }

private:
  void *pointer = nullptr;
};
} // namespace

extern "C" {

tamoe_rt_context_t *tamoe_rt_program_enter(int32_t host_loops,
                                           int32_t abi_version) {
  // Checked first: with another version, even host_loops may mean
  // something else.
  if (abi_version != TAMOE_RT_ABI_VERSION)
    fail("this program was compiled for version " +
         std::to_string(abi_version) + " of the runtime's interface, but " +
         "this libtamoe_rt implements version " +
         std::to_string(TAMOE_RT_ABI_VERSION) +
         ": compile it again with the tamoe-opt of this runtime's release");
  // Host loops would read and write device memory. Checked on the request,
  // before a context exists, so that the message does not depend on
  // whether there is a GPU.
  if (host_loops && requestedBackend() != TAMOE_RT_BACKEND_CPU)
    fail("TAMOE_RT_BACKEND=cuda: this program was lowered with host loops "
         "for its non-tamoe ops; lower it with "
         "--tamoe-to-llvm=device-resident to run it on the cuda backend");
  return context();
}

const void *tamoe_rt_program_constant(const void *host, intptr_t bytes) {
  tamoe_rt_context_t *ctx = context();
  if (tamoe_rt_backend(ctx) == TAMOE_RT_BACKEND_CPU)
    return host;
  std::lock_guard<std::mutex> lock(constantsMutex);
  void *&copy = constants[{host, bytes}];
  if (!copy) {
    tamoe_rt_program_check(tamoe_rt_alloc(ctx, bytes, &copy));
    tamoe_rt_program_check(tamoe_rt_copy_to_backend(ctx, copy, host, bytes));
  }
  return copy;
}

void tamoe_rt_program_check(tamoe_rt_status_t status) {
  if (status != TAMOE_RT_SUCCESS)
    fail(std::string(tamoe_rt_status_name(status)) + ": " +
         tamoe_rt_last_error(programContext));
}

intptr_t tamoe_rt_program_rank(void) {
  return tamoe_rt_rank(context());
}

void tamoe_rt_program_check_grid(const int64_t *shape, intptr_t rank,
                                 int32_t nodes) {
  tamoe_rt_context_t *ctx = context();
  // A grid past int64 fits no world: -1 reads as a mismatch.
  int64_t ranks = 1;
  std::string grid;
  for (intptr_t axis = 0; axis < rank; ++axis) {
    if (ranks >= 0 && __builtin_mul_overflow(ranks, shape[axis], &ranks))
      ranks = -1;
    grid += (axis ? "x" : "") + std::to_string(shape[axis]);
  }
  int64_t launched = tamoe_rt_num_ranks(ctx);
  if (ranks != launched)
    fail("this program was compiled for " +
         (ranks < 0 ? std::string("more") : std::to_string(ranks)) +
         " ranks (grid " + grid + ") but was launched on " +
         std::to_string(launched));
  int64_t perNode = tamoe_rt_ranks_per_node(ctx);
  if (nodes && rank >= 2 && shape[rank - 1] != perNode)
    fail("this program was compiled for " + std::to_string(shape[rank - 1]) +
         " ranks per node (the last axis of grid " + grid + ") but runs with " +
         std::to_string(perNode) +
         " per node (set TAMOE_RANKS_PER_NODE, or the launcher's ranks per "
         "node)");
}

void tamoe_rt_program_check_extent(const char *message, intptr_t length,
                                   intptr_t got, intptr_t want) {
  if (got != want)
    fail(std::string(message, message && length > 0 ? size_t(length) : 0) +
         " (" + std::to_string(got) + " vs " + std::to_string(want) + ")");
}

void tamoe_rt_program_random_f32(float *data, intptr_t n, uint64_t seed) {
  for (intptr_t i = 0; i < n; ++i) {
    // splitmix64 of (seed, i): independent of how the input is split.
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + uint64_t(i) + 1;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    data[i] = float(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
  }
}

void tamoe_rt_program_round_f32(float *data, intptr_t n,
                                tamoe_rt_dtype_t type) {
  for (intptr_t i = 0; i < n; ++i) {
    if (type == TAMOE_RT_BF16)
      data[i] = tamoe_rt::bf16ToFloat(tamoe_rt::floatToBf16(data[i]));
    else if (type == TAMOE_RT_F16)
      data[i] = tamoe_rt::f16ToFloat(tamoe_rt::floatToF16(data[i]));
  }
}

void *_mlir_memref_to_llvm_alloc(size_t size) {
  void *pointer = nullptr;
  tamoe_rt_program_check(
      tamoe_rt_alloc(context(), intptr_t(size), &pointer));
  return pointer;
}

void *_mlir_memref_to_llvm_aligned_alloc(size_t alignment, size_t size) {
  // The runtime aligns every allocation to 256 bytes.
  if (alignment > 256)
    fail("memref alignment " + std::to_string(alignment) +
         " exceeds the runtime's 256 bytes");
  return _mlir_memref_to_llvm_alloc(size);
}

void _mlir_memref_to_llvm_free(void *pointer) {
  if (pointer)
    tamoe_rt_program_check(tamoe_rt_free(context(), pointer));
}

// Declared here, not in program.h (see there).
void memrefCopy(int64_t element_bytes, tamoe_rt_unranked_memref_t *source,
                tamoe_rt_unranked_memref_t *target);
void memrefCopy(int64_t element_bytes, tamoe_rt_unranked_memref_t *source,
                tamoe_rt_unranked_memref_t *target) {
  // Host loops only: a device-resident lowering refuses memref.copy on the
  // host, so both are host memory.
  struct View {
    char *data;
    const int64_t *sizes, *strides;
  };
  auto view = [&](const tamoe_rt_unranked_memref_t *memref) {
    // {allocated, aligned, offset, sizes[rank], strides[rank]}
    auto *fields = static_cast<const int64_t *>(memref->descriptor);
    char *aligned = reinterpret_cast<char *>(fields[1]);
    return View{aligned + fields[2] * element_bytes, fields + 3,
                fields + 3 + memref->rank};
  };
  View from = view(source), to = view(target);
  int64_t rank = source->rank;
  for (int64_t d = 0; d < rank; ++d)
    if (from.sizes[d] == 0)
      return;
  // Every index of the outer dimensions in row-major order; the innermost
  // one in a single move where both are contiguous along it (a slice's
  // rows), else element by element.
  bool rows =
      rank > 0 && from.strides[rank - 1] == 1 && to.strides[rank - 1] == 1;
  int64_t outer = rows ? rank - 1 : rank;
  size_t runBytes = size_t((rows ? from.sizes[rank - 1] : 1) * element_bytes);
  std::vector<int64_t> index(size_t(outer), 0);
  for (;;) {
    int64_t fromOffset = 0, toOffset = 0;
    for (int64_t d = 0; d < outer; ++d) {
      fromOffset += index[size_t(d)] * from.strides[d];
      toOffset += index[size_t(d)] * to.strides[d];
    }
    // memmove: views of one buffer may overlap.
    std::memmove(to.data + toOffset * element_bytes,
                 from.data + fromOffset * element_bytes, runBytes);
    int64_t d = outer - 1;
    for (; d >= 0 && ++index[size_t(d)] == from.sizes[d]; --d)
      index[size_t(d)] = 0;
    if (d < 0)
      return;
  }
}

void _mlir_ciface_tamoeRandomF32(tamoe_rt_unranked_memref_t *memref,
                                 int64_t seed) {
  auto [data, elements] = contiguous<float>(memref, "tamoeRandomF32");
  std::vector<float> host(elements);
  tamoe_rt_program_random_f32(host.data(), elements, uint64_t(seed));
  tamoe_rt_program_check(
      tamoe_rt_copy_to_backend(context(), data, host.data(),
                               elements * intptr_t(sizeof(float))));
}

void _mlir_ciface_tamoeRandomBF16(tamoe_rt_unranked_memref_t *memref,
                                  int64_t seed) {
  auto [data, elements] = contiguous<uint16_t>(memref, "tamoeRandomBF16");
  std::vector<float> host(elements);
  tamoe_rt_program_random_f32(host.data(), elements, uint64_t(seed));
  F32Scratch values(elements);
  tamoe_rt_program_check(
      tamoe_rt_copy_to_backend(context(), values.data(), host.data(),
                               elements * intptr_t(sizeof(float))));
  tamoe_rt_program_check(tamoe_rt_convert(
      context(), TAMOE_RT_F32, values.data(), TAMOE_RT_BF16, data, elements));
}

void _mlir_ciface_tamoeOutputBF16(tamoe_rt_unranked_memref_t *memref,
                                  int64_t index) {
  const char *function = "tamoeOutputBF16";
  if (!std::getenv("TAMOE_RT_OUTPUT_DIR")) {
    write<float>(nullptr, 0, index, /*append=*/false, function);
    return;
  }
  auto [data, elements] = contiguous<uint16_t>(memref, function);
  F32Scratch widened(elements);
  tamoe_rt_program_check(tamoe_rt_convert(
      context(), TAMOE_RT_BF16, data, TAMOE_RT_F32, widened.data(), elements));
  writeFromBackend(widened.data(), elements, index, /*append=*/false, function);
}

void _mlir_ciface_tamoeOutputF32(tamoe_rt_unranked_memref_t *memref,
                                 int64_t index) {
  output<float>(memref, index, /*append=*/false, "tamoeOutputF32");
}

void _mlir_ciface_tamoeOutputI32(tamoe_rt_unranked_memref_t *memref,
                                 int64_t index) {
  output<int32_t>(memref, index, /*append=*/false, "tamoeOutputI32");
}

void _mlir_ciface_tamoeOutputI64(tamoe_rt_unranked_memref_t *memref,
                                 int64_t index) {
  output<int64_t>(memref, index, /*append=*/false, "tamoeOutputI64");
}

void _mlir_ciface_tamoeAppendF32(tamoe_rt_unranked_memref_t *memref,
                                 int64_t index) {
  output<float>(memref, index, /*append=*/true, "tamoeAppendF32");
}

void _mlir_ciface_tamoeAppendI32(tamoe_rt_unranked_memref_t *memref,
                                 int64_t index) {
  output<int32_t>(memref, index, /*append=*/true, "tamoeAppendI32");
}

void tamoeAppendTraffic(int64_t index) {
  tamoe_rt_context_t *ctx = context();
  tamoe_rt_traffic_t traffic;
  tamoe_rt_program_check(tamoe_rt_traffic(ctx, &traffic));
  tamoe_rt_program_check(tamoe_rt_reset_traffic(ctx));
  int64_t bytes[2] = {traffic.intra_node_bytes, traffic.inter_node_bytes};
  write(bytes, 2, index, /*append=*/true, "tamoeAppendTraffic");
}

} // extern "C"
