//===- FakeCudaBackend.cpp - Stand-ins for libtamoe_rt_cuda.so ------------===//
//
// Lets the unit tests drive tamoe_rt_init's loading of the cuda backend on
// machines without CUDA: one library that finds "no GPU", one that lacks
// the entry point.
//
//===----------------------------------------------------------------------===//

#include "Backend.h"

#ifndef TAMOE_RT_FAKE_WITHOUT_ENTRY_POINT
extern "C" __attribute__((visibility("default"))) tamoe_rt::Backend *
tamoe_rt_create_cuda_backend(tamoe_rt::Launcher *launcher,
                             tamoe_rt::Status *error) {
  *error = tamoe_rt::Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                                   "no GPU: fake device for the tests (" +
                                       std::to_string(launcher->numRanks()) +
                                       " ranks)");
  return nullptr;
}
#else
extern "C" __attribute__((visibility("default"))) int tamoe_rt_fake(void) {
  return 0;
}
#endif
