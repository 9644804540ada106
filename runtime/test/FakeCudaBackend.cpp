//===- FakeCudaBackend.cpp - Stand-ins for libtamoe_rt_cuda.so ------------===//
//
// Lets the unit tests drive tamoe_rt_init's loading of the cuda backend on
// machines without CUDA: one library that finds "no GPU", one that lacks
// the entry point, one built for another version of the backend interface
// (TAMOE_RT_FAKE_ABI), one that predates the interface's version, and one
// that finds "no GPU" after agreeing on it with the other ranks, as the real
// library's first collective does (TAMOE_RT_FAKE_AGREES).
//
//===----------------------------------------------------------------------===//

#include "Backend.h"

#ifndef TAMOE_RT_FAKE_WITHOUT_ABI
extern "C" __attribute__((visibility("default"))) const char *
tamoe_rt_cuda_backend_abi(void) {
#ifdef TAMOE_RT_FAKE_ABI
  return TAMOE_RT_FAKE_ABI;
#else
  return TAMOE_RT_BACKEND_ABI;
#endif
}
#endif

#ifndef TAMOE_RT_FAKE_WITHOUT_ENTRY_POINT
extern "C" __attribute__((visibility("default"))) tamoe_rt::Backend *
tamoe_rt_create_cuda_backend(tamoe_rt::Launcher *launcher,
                             tamoe_rt::Status *error) {
#ifdef TAMOE_RT_FAKE_AGREES
  tamoe_rt::Status agreed =
      launcher->agree(TAMOE_RT_GROUP_WORLD, tamoe_rt::Status::success());
  if (!agreed.ok()) {
    *error = agreed;
    return nullptr;
  }
#endif
  *error = tamoe_rt::Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                                   "no GPU: fake device for the tests (" +
                                       std::to_string(launcher->numRanks()) +
                                       " ranks)");
  return nullptr;
}
#endif
