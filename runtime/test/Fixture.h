//===- Fixture.h - The fixture of the runtime's unit tests ------*- C++ -*-===//
//
// A context on the cpu backend per test, for the test files of
// TAMoERuntimeTests (RuntimeTest.cpp, GradientTest.cpp), which share one
// main and one MPI.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_TEST_FIXTURE_H
#define TAMOE_RT_TEST_FIXTURE_H

#include "tamoe_rt/tamoe_rt.h"

#include "gtest/gtest.h"

#include <cstdlib>
#include <string>
#include <sys/resource.h>

namespace runtime_test {

/// The variables tamoe_rt_init reads, unset.
inline void clearEnvironment() {
  for (const char *name :
       {"TAMOE_RANKS_PER_NODE", "TAMOE_RT_TIMEOUT", "TAMOE_RT_CUDA_LIBRARY"})
    unsetenv(name);
}

/// The peak resident memory of the process so far, in MiB: a test of
/// scratch that must not grow with a count no buffer backs compares it
/// before and after.
inline long peakMiB() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;
}

class Runtime : public ::testing::Test {
protected:
  void SetUp() override {
    clearEnvironment();
    ASSERT_EQ(tamoe_rt_init(nullptr, &ctx), TAMOE_RT_SUCCESS)
        << tamoe_rt_last_error(nullptr);
  }
  void TearDown() override {
    EXPECT_EQ(tamoe_rt_finalize(ctx), TAMOE_RT_SUCCESS);
  }
  std::string error() const { return tamoe_rt_last_error(ctx); }

  tamoe_rt_context_t *ctx = nullptr;
};

} // namespace runtime_test

#endif // TAMOE_RT_TEST_FIXTURE_H
