//===- NoGpuTest.cpp - The cuda backend's library without a GPU -----------===//
//
// Loads libtamoe_rt_cuda.so the way the core does (dlopen + dlsym) and asks
// it for a backend with a single-rank launcher. Without a GPU (or driver) the
// factory must return null with TAMOE_RT_ERROR_BACKEND_UNAVAILABLE and a
// message starting "no GPU: ", and must not crash. With a GPU it must return
// a backend whose memory round trip works.
//
//   NoGpuTest <path to libtamoe_rt_cuda.so> [--expect-no-gpu | --expect-gpu]
//
// Prints one line saying which case it saw; exits 0 when the expectation (if
// any) holds and the case behaved, 1 otherwise.
//
//===----------------------------------------------------------------------===//

#include "Backend.h"
#include "SingleRankLauncher.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Factory = tamoe_rt::Backend *(*)(tamoe_rt::Launcher *,
                                       tamoe_rt::Status *);

int smokeTest(tamoe_rt::Backend &backend) {
  std::vector<int32_t> host(1000), back(1000);
  for (size_t i = 0; i < host.size(); ++i)
    host[i] = static_cast<int32_t>(i * 7);
  void *device = nullptr;
  tamoe_rt::Status s = backend.alloc(4000, &device);
  if (s.ok())
    s = backend.copyToBackend(device, host.data(), 4000);
  if (s.ok())
    s = backend.copyToHost(back.data(), device, 4000);
  if (s.ok())
    s = backend.free(device);
  if (!s.ok()) {
    std::printf("FAIL: memory round trip: %s\n", s.message.c_str());
    return 1;
  }
  if (back != host) {
    std::printf("FAIL: memory round trip returned different data\n");
    return 1;
  }
  // A host pointer must be refused, not crash the process.
  std::vector<char> rows(64);
  std::vector<int32_t> counts(1, 1);
  void *out = nullptr;
  backend.alloc(64, &out);
  s = backend.regroup(rows.data(), 1, 64, counts.data(), 1, 1, 1, out, nullptr);
  backend.free(out);
  if (s.code != TAMOE_RT_ERROR_INVALID_ARGUMENT) {
    std::printf("FAIL: a host pointer was not refused (%s)\n",
                s.message.c_str());
    return 1;
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: %s libtamoe_rt_cuda.so [--expect-no-gpu|"
                 "--expect-gpu]\n",
                 argv[0]);
    return 2;
  }
  bool expectNoGpu = argc > 2 && std::strcmp(argv[2], "--expect-no-gpu") == 0;
  bool expectGpu = argc > 2 && std::strcmp(argv[2], "--expect-gpu") == 0;

  void *library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    std::printf("FAIL: dlopen: %s\n", dlerror());
    return 1;
  }
  auto factory =
      reinterpret_cast<Factory>(dlsym(library, "tamoe_rt_create_cuda_backend"));
  if (!factory) {
    std::printf("FAIL: dlsym tamoe_rt_create_cuda_backend: %s\n", dlerror());
    return 1;
  }
  // The interface's version, which the core compares with its own.
  auto abi = reinterpret_cast<const char *(*)()>(
      dlsym(library, "tamoe_rt_cuda_backend_abi"));
  if (!abi || !abi() || std::strcmp(abi(), TAMOE_RT_BACKEND_ABI) != 0) {
    std::printf("FAIL: tamoe_rt_cuda_backend_abi: %s, want %s\n",
                abi && abi() ? abi() : "missing", TAMOE_RT_BACKEND_ABI);
    return 1;
  }

  tamoe_rt::SingleRankLauncher launcher(30);
  tamoe_rt::Status error;
  tamoe_rt::Backend *backend = factory(&launcher, &error);
  if (!backend) {
    bool wellFormed = error.code == TAMOE_RT_ERROR_BACKEND_UNAVAILABLE &&
                      error.message.rfind("no GPU: ", 0) == 0;
    std::printf("no backend: %s\n", error.message.c_str());
    if (!wellFormed) {
      std::printf("FAIL: expected BACKEND_UNAVAILABLE with \"no GPU: ...\", "
                  "got status %d\n",
                  static_cast<int>(error.code));
      return 1;
    }
    if (expectGpu) {
      std::printf("FAIL: expected a GPU\n");
      return 1;
    }
    std::printf("PASS\n");
    return 0;
  }
  std::printf("backend created (kind %d)\n", static_cast<int>(backend->kind()));
  int result = smokeTest(*backend);
  delete backend;
  if (expectNoGpu) {
    std::printf("FAIL: expected no GPU\n");
    return 1;
  }
  if (result == 0)
    std::printf("PASS\n");
  return result;
}
