//===- RuntimeTest.cpp - Every entry point of tamoe_rt.h on one rank ------===//
//
// Each operation against the serial reference (Reference.h) on random inputs
// with fixed seeds and on the edge cases, and every message a caller can
// trigger on one rank. The collectives run as a world of one; the
// multi-rank behaviour is MultiRankTest.cpp's.
//
//===----------------------------------------------------------------------===//

#include "Fixture.h"
#include "Reference.h"
#include "tamoe_rt/tamoe_rt.h"

#include "gtest/gtest.h"
#include <mpi.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using reference::Bytes;
using reference::Random;

using runtime_test::clearEnvironment;
using runtime_test::peakMiB;
using runtime_test::Runtime;

namespace {

//===----------------------------------------------------------------------===//
// Context
//===----------------------------------------------------------------------===//

TEST(Status, Names) {
  EXPECT_STREQ(tamoe_rt_status_name(TAMOE_RT_SUCCESS), "TAMOE_RT_SUCCESS");
  EXPECT_STREQ(tamoe_rt_status_name(TAMOE_RT_ERROR_INVALID_ARGUMENT),
               "TAMOE_RT_ERROR_INVALID_ARGUMENT");
  EXPECT_STREQ(tamoe_rt_status_name(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE),
               "TAMOE_RT_ERROR_BACKEND_UNAVAILABLE");
  EXPECT_STREQ(tamoe_rt_status_name(TAMOE_RT_ERROR_MISMATCH),
               "TAMOE_RT_ERROR_MISMATCH");
  EXPECT_STREQ(tamoe_rt_status_name(TAMOE_RT_ERROR_CAPACITY_EXCEEDED),
               "TAMOE_RT_ERROR_CAPACITY_EXCEEDED");
  EXPECT_STREQ(tamoe_rt_status_name(TAMOE_RT_ERROR_TIMEOUT),
               "TAMOE_RT_ERROR_TIMEOUT");
  EXPECT_STREQ(tamoe_rt_status_name(TAMOE_RT_ERROR_COMMUNICATION),
               "TAMOE_RT_ERROR_COMMUNICATION");
  EXPECT_STREQ(tamoe_rt_status_name(TAMOE_RT_ERROR_OUT_OF_MEMORY),
               "TAMOE_RT_ERROR_OUT_OF_MEMORY");
  EXPECT_STREQ(tamoe_rt_status_name(TAMOE_RT_ERROR_INTERNAL),
               "TAMOE_RT_ERROR_INTERNAL");
  EXPECT_STREQ(tamoe_rt_status_name(tamoe_rt_status_t(42)),
               "TAMOE_RT_UNKNOWN_STATUS");
}

TEST(Init, DefaultsAndAccessors) {
  clearEnvironment();
  tamoe_rt_options_t options = tamoe_rt_default_options();
  EXPECT_EQ(options.backend, TAMOE_RT_BACKEND_CPU);
  EXPECT_EQ(options.ranks_per_node, 0);
  EXPECT_EQ(options.timeout_seconds, 0);
  tamoe_rt_context_t *ctx = nullptr;
  ASSERT_EQ(tamoe_rt_init(&options, &ctx), TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_rank(ctx), 0);
  EXPECT_EQ(tamoe_rt_num_ranks(ctx), 1);
  EXPECT_EQ(tamoe_rt_ranks_per_node(ctx), 1);
  EXPECT_EQ(tamoe_rt_backend(ctx), TAMOE_RT_BACKEND_CPU);
  EXPECT_STREQ(tamoe_rt_last_error(ctx), "");
  EXPECT_EQ(tamoe_rt_synchronize(ctx), TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_finalize(ctx), TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_finalize(nullptr), TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_rank(nullptr), -1);
  EXPECT_EQ(tamoe_rt_num_ranks(nullptr), -1);
  EXPECT_EQ(tamoe_rt_ranks_per_node(nullptr), -1);
  // MPI stays up: the test's main initialised it, not tamoe_rt_init.
  int finalised = 1;
  MPI_Finalized(&finalised);
  EXPECT_FALSE(finalised);
}

/// The message of a tamoe_rt_init that must fail with `code`.
std::string initError(const tamoe_rt_options_t *options,
                      tamoe_rt_status_t code) {
  tamoe_rt_context_t *ctx = reinterpret_cast<tamoe_rt_context_t *>(1);
  tamoe_rt_status_t status = tamoe_rt_init(options, &ctx);
  EXPECT_EQ(status, code) << tamoe_rt_status_name(status);
  EXPECT_EQ(ctx, nullptr);
  if (status == TAMOE_RT_SUCCESS)
    tamoe_rt_finalize(ctx);
  return tamoe_rt_last_error(nullptr);
}

TEST(Init, BadOptions) {
  clearEnvironment();
  tamoe_rt_options_t options = tamoe_rt_default_options();
  EXPECT_EQ(tamoe_rt_init(&options, nullptr), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(tamoe_rt_last_error(nullptr), "tamoe_rt_init: context is null");

  options.ranks_per_node = -1;
  EXPECT_EQ(initError(&options, TAMOE_RT_ERROR_INVALID_ARGUMENT),
            "tamoe_rt_init: rank 0: options->ranks_per_node must be >= 0, "
            "got -1");
  options.ranks_per_node = 2;
  EXPECT_EQ(initError(&options, TAMOE_RT_ERROR_INVALID_ARGUMENT),
            "tamoe_rt_init: rank 0: ranks_per_node = 2 (from "
            "options->ranks_per_node) does not divide the 1 ranks");
  options = tamoe_rt_default_options();
  options.timeout_seconds = -1;
  EXPECT_EQ(initError(&options, TAMOE_RT_ERROR_INVALID_ARGUMENT),
            "tamoe_rt_init: rank 0: options->timeout_seconds must be >= 0 "
            "and finite, got -1");
  options.timeout_seconds = NAN;
  EXPECT_EQ(initError(&options, TAMOE_RT_ERROR_INVALID_ARGUMENT),
            "tamoe_rt_init: rank 0: options->timeout_seconds must be >= 0 "
            "and finite, got nan");
  options = tamoe_rt_default_options();
  options.backend = tamoe_rt_backend_t(7);
  EXPECT_EQ(initError(&options, TAMOE_RT_ERROR_INVALID_ARGUMENT),
            "tamoe_rt_init: rank 0: options->backend = 7 is not a "
            "tamoe_rt_backend_t");
}

TEST(Init, Environment) {
  clearEnvironment();
  setenv("TAMOE_RANKS_PER_NODE", "abc", 1);
  EXPECT_EQ(initError(nullptr, TAMOE_RT_ERROR_INVALID_ARGUMENT),
            "tamoe_rt_init: rank 0: TAMOE_RANKS_PER_NODE='abc' is not a "
            "positive integer");
  setenv("TAMOE_RANKS_PER_NODE", "3", 1);
  EXPECT_EQ(initError(nullptr, TAMOE_RT_ERROR_INVALID_ARGUMENT),
            "tamoe_rt_init: rank 0: ranks_per_node = 3 (from "
            "TAMOE_RANKS_PER_NODE) does not divide the 1 ranks");
  // The options win over the environment.
  tamoe_rt_options_t options = tamoe_rt_default_options();
  options.ranks_per_node = 1;
  tamoe_rt_context_t *ctx = nullptr;
  ASSERT_EQ(tamoe_rt_init(&options, &ctx), TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_ranks_per_node(ctx), 1);
  tamoe_rt_finalize(ctx);
  setenv("TAMOE_RANKS_PER_NODE", "1", 1);
  ASSERT_EQ(tamoe_rt_init(nullptr, &ctx), TAMOE_RT_SUCCESS);
  tamoe_rt_finalize(ctx);
  unsetenv("TAMOE_RANKS_PER_NODE");

  setenv("TAMOE_RT_TIMEOUT", "-3", 1);
  EXPECT_EQ(initError(nullptr, TAMOE_RT_ERROR_INVALID_ARGUMENT),
            "tamoe_rt_init: rank 0: TAMOE_RT_TIMEOUT='-3' is not a positive "
            "number of seconds");
  setenv("TAMOE_RT_TIMEOUT", "0.5", 1);
  ASSERT_EQ(tamoe_rt_init(nullptr, &ctx), TAMOE_RT_SUCCESS);
  tamoe_rt_finalize(ctx);
  clearEnvironment();
}

TEST(Init, LastErrorIsPerThread) {
  clearEnvironment();
  tamoe_rt_options_t options = tamoe_rt_default_options();
  options.ranks_per_node = -5;
  initError(&options, TAMOE_RT_ERROR_INVALID_ARGUMENT);
  std::string other = "unset";
  std::thread([&] { other = tamoe_rt_last_error(nullptr); }).join();
  EXPECT_EQ(other, "");
  EXPECT_NE(std::string(tamoe_rt_last_error(nullptr)), "");
}

TEST(Init, CudaBackendLibrary) {
  clearEnvironment();
  tamoe_rt_options_t options = tamoe_rt_default_options();
  options.backend = TAMOE_RT_BACKEND_CUDA;
  setenv("TAMOE_RT_CUDA_LIBRARY", "/nonexistent/libtamoe_rt_cuda.so", 1);
  EXPECT_EQ(initError(&options, TAMOE_RT_ERROR_BACKEND_UNAVAILABLE),
            "tamoe_rt_init: rank 0: cuda backend: libtamoe_rt_cuda.so not "
            "found (built without CUDA?): no "
            "/nonexistent/libtamoe_rt_cuda.so");
  setenv("TAMOE_RT_CUDA_LIBRARY", TAMOE_RT_FAKE_CUDA_NO_GPU, 1);
  EXPECT_EQ(initError(&options, TAMOE_RT_ERROR_BACKEND_UNAVAILABLE),
            "tamoe_rt_init: rank 0: cuda backend: no GPU: fake device for the "
            "tests (1 ranks)");
  setenv("TAMOE_RT_CUDA_LIBRARY", TAMOE_RT_FAKE_CUDA_NO_ENTRY, 1);
  EXPECT_EQ(initError(&options, TAMOE_RT_ERROR_BACKEND_UNAVAILABLE),
            std::string("tamoe_rt_init: rank 0: cuda backend: ") +
                TAMOE_RT_FAKE_CUDA_NO_ENTRY +
                " has no tamoe_rt_create_cuda_backend");
  // Built from another version of Backend.h, or before the check.
  setenv("TAMOE_RT_CUDA_LIBRARY", TAMOE_RT_FAKE_CUDA_OLD_ABI, 1);
  EXPECT_EQ(initError(&options, TAMOE_RT_ERROR_BACKEND_UNAVAILABLE),
            std::string("tamoe_rt_init: rank 0: cuda backend: ") +
                TAMOE_RT_FAKE_CUDA_OLD_ABI +
                " was built for another version of the runtime (backend "
                "interface 0123456789abcdef, this runtime's " +
                TAMOE_RT_BACKEND_ABI +
                "): rebuild libtamoe_rt.so and libtamoe_rt_cuda.so from one "
                "tree");
  setenv("TAMOE_RT_CUDA_LIBRARY", TAMOE_RT_FAKE_CUDA_NO_ABI, 1);
  EXPECT_EQ(initError(&options, TAMOE_RT_ERROR_BACKEND_UNAVAILABLE),
            std::string("tamoe_rt_init: rank 0: cuda backend: ") +
                TAMOE_RT_FAKE_CUDA_NO_ABI +
                " has no tamoe_rt_cuda_backend_abi: it is not a cuda backend "
                "of this runtime (or one older than the check); rebuild it "
                "with this runtime");
  setenv("TAMOE_RT_CUDA_LIBRARY", TAMOE_RT_TEST_SOURCE, 1);
  std::string message = initError(&options, TAMOE_RT_ERROR_BACKEND_UNAVAILABLE);
  EXPECT_EQ(message.rfind(std::string("tamoe_rt_init: rank 0: cuda backend: "
                                      "cannot load ") +
                              TAMOE_RT_TEST_SOURCE + ": ",
                          0),
            0u)
      << message;
  // Next to libtamoe_rt.so: the real library when it was built (it may
  // find a GPU or not), "not found" otherwise.
  unsetenv("TAMOE_RT_CUDA_LIBRARY");
  tamoe_rt_context_t *ctx = nullptr;
  tamoe_rt_status_t status = tamoe_rt_init(&options, &ctx);
  if (status == TAMOE_RT_SUCCESS) {
    EXPECT_EQ(tamoe_rt_backend(ctx), TAMOE_RT_BACKEND_CUDA);
    tamoe_rt_finalize(ctx);
  } else {
    EXPECT_EQ(status, TAMOE_RT_ERROR_BACKEND_UNAVAILABLE);
    EXPECT_EQ(std::string(tamoe_rt_last_error(nullptr))
                  .rfind("tamoe_rt_init: rank 0: cuda backend: ", 0),
              0u)
        << tamoe_rt_last_error(nullptr);
  }
}

TEST_F(Runtime, LastErrorIsPerContext) {
  tamoe_rt_context_t *other = nullptr;
  ASSERT_EQ(tamoe_rt_init(nullptr, &other), TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_alloc(ctx, -1, nullptr), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_alloc: pointer is null");
  EXPECT_STREQ(tamoe_rt_last_error(other), "");
  // A later success keeps the last failure's message.
  void *pointer = nullptr;
  EXPECT_EQ(tamoe_rt_alloc(ctx, 8, &pointer), TAMOE_RT_SUCCESS);
  EXPECT_EQ(error(), "tamoe_rt_alloc: pointer is null");
  tamoe_rt_finalize(other);
}

TEST(DeadContext, EveryEntryPoint) {
  // A null context, and one finalized already (its memory is gone: it is
  // refused, not read).
  clearEnvironment();
  tamoe_rt_context_t *finalized = nullptr;
  ASSERT_EQ(tamoe_rt_init(nullptr, &finalized), TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_finalize(finalized), TAMOE_RT_SUCCESS);
  using Call = std::function<tamoe_rt_status_t(tamoe_rt_context_t *)>;
  std::vector<std::pair<const char *, Call>> calls = {
      {"tamoe_rt_traffic",
       [](tamoe_rt_context_t *c) {
         tamoe_rt_traffic_t traffic;
         return tamoe_rt_traffic(c, &traffic);
       }},
      {"tamoe_rt_reset_traffic",
       [](tamoe_rt_context_t *c) { return tamoe_rt_reset_traffic(c); }},
      {"tamoe_rt_alloc",
       [](tamoe_rt_context_t *c) {
         void *p;
         return tamoe_rt_alloc(c, 8, &p);
       }},
      {"tamoe_rt_free",
       [](tamoe_rt_context_t *c) { return tamoe_rt_free(c, nullptr); }},
      {"tamoe_rt_copy_to_backend",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_copy_to_backend(c, nullptr, nullptr, 0);
       }},
      {"tamoe_rt_copy_to_host",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_copy_to_host(c, nullptr, nullptr, 0);
       }},
      {"tamoe_rt_synchronize",
       [](tamoe_rt_context_t *c) { return tamoe_rt_synchronize(c); }},
      {"tamoe_rt_graph_begin",
       [](tamoe_rt_context_t *c) { return tamoe_rt_graph_begin(c); }},
      {"tamoe_rt_graph_end",
       [](tamoe_rt_context_t *c) {
         tamoe_rt_graph_t *graph;
         return tamoe_rt_graph_end(c, &graph);
       }},
      {"tamoe_rt_graph_launch",
       [](tamoe_rt_context_t *c) { return tamoe_rt_graph_launch(c, nullptr); }},
      {"tamoe_rt_graph_destroy",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_graph_destroy(c, nullptr);
       }},
      {"tamoe_rt_gate",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_gate(c, nullptr, 0, 8, 2, TAMOE_RT_SCORE_SOFTMAX, 0, 0,
                              0, nullptr, nullptr, nullptr);
       }},
      {"tamoe_rt_dispatch",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_dispatch(c, nullptr, 0, 4, nullptr, 1, 1, nullptr, -1,
                                  TAMOE_RT_DROP_POSITION, nullptr, 0, nullptr,
                                  nullptr, nullptr);
       }},
      {"tamoe_rt_combine",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_combine(c, TAMOE_RT_F32, nullptr, 0, 1, nullptr,
                                 nullptr, 0, 1, nullptr);
       }},
      {"tamoe_rt_aux_loss",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_aux_loss(c, nullptr, nullptr, nullptr, 0, 1, 1,
                                  nullptr, nullptr);
       }},
      {"tamoe_rt_regroup",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_regroup(c, nullptr, 0, 1, nullptr, 1, 1, 1, nullptr,
                                 nullptr);
       }},
      {"tamoe_rt_chunk",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_chunk(c, nullptr, 0, 1, nullptr, 1, 0, 1, nullptr, 0,
                               nullptr);
       }},
      {"tamoe_rt_chunk_positions",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_chunk_positions(c, nullptr, nullptr, 0, 1, nullptr, 1,
                                         0, 1, nullptr);
       }},
      {"tamoe_rt_unchunk",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_unchunk(c, nullptr, 0, 1, nullptr, 1, 0, 1, nullptr,
                                 0);
       }},
      {"tamoe_rt_dedup_pack",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_dedup_pack(c, nullptr, 0, 1, nullptr, nullptr, 1, 1, 1,
                                    nullptr, nullptr, 0, nullptr);
       }},
      {"tamoe_rt_dedup_expand",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_dedup_expand(c, nullptr, nullptr, 0, 1, 1, nullptr, 1,
                                      1, 1, nullptr, 0, nullptr);
       }},
      {"tamoe_rt_all_to_all",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_all_to_all(c, TAMOE_RT_GROUP_WORLD, nullptr, 0, 1,
                                    nullptr, 1, 1, nullptr, 0, nullptr);
       }},
      {"tamoe_rt_all_to_all_start",
       [](tamoe_rt_context_t *c) {
         tamoe_rt_exchange_t *exchange;
         return tamoe_rt_all_to_all_start(c, TAMOE_RT_GROUP_WORLD, nullptr, 0,
                                          1, nullptr, 1, 1, nullptr, 0, nullptr,
                                          &exchange);
       }},
      {"tamoe_rt_all_to_all_wait",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_all_to_all_wait(c, nullptr, nullptr);
       }},
      {"tamoe_rt_all_to_all_totals",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_all_to_all_totals(c, TAMOE_RT_GROUP_WORLD, nullptr, 1,
                                           nullptr, 1, nullptr);
       }},
      {"tamoe_rt_all_to_all_counts",
       [](tamoe_rt_context_t *c) {
         intptr_t total;
         return tamoe_rt_all_to_all_counts(c, TAMOE_RT_GROUP_WORLD, nullptr, 1,
                                           1, nullptr, &total);
       }},
      {"tamoe_rt_grouped_matmul",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_grouped_matmul(c, TAMOE_RT_F32, nullptr, 0, 1, nullptr,
                                        0, 1, nullptr, 1, nullptr);
       }},
      {"tamoe_rt_matmul",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_matmul(c, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                                nullptr, nullptr, 0, 0, 0, 0, 0, nullptr,
                                nullptr);
       }},
      {"tamoe_rt_convert",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_convert(c, TAMOE_RT_F32, nullptr, TAMOE_RT_BF16,
                                 nullptr, 0);
       }},
      {"tamoe_rt_map",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_map(c, TAMOE_RT_MAP_ADD, TAMOE_RT_F32, nullptr,
                             nullptr, 0, nullptr);
       }},
      {"tamoe_rt_add_counts",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_add_counts(c, nullptr, nullptr, 0, nullptr);
       }},
      {"tamoe_rt_counts_total",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_counts_total(c, nullptr, 0, nullptr);
       }},
      {"tamoe_rt_all_to_all_hierarchical",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_all_to_all_hierarchical(
             c, nullptr, 0, 1, nullptr, 1, nullptr, 0, nullptr);
       }},
      {"tamoe_rt_dispatch_dedup",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_dispatch_dedup(c, nullptr, 0, 1, nullptr, nullptr, 1,
                                        1, nullptr, 0, nullptr);
       }},
      {"tamoe_rt_gate_grad",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_gate_grad(c, nullptr, nullptr, 0, 8, 2,
                                   TAMOE_RT_SCORE_SOFTMAX, 0, nullptr, nullptr,
                                   nullptr);
       }},
      {"tamoe_rt_combine_grad",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_combine_grad(c, TAMOE_RT_F32, nullptr, 0, 1, nullptr,
                                      nullptr, 0, 1, nullptr, nullptr, nullptr);
       }},
      {"tamoe_rt_grouped_matmul_grad",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_grouped_matmul_grad(c, TAMOE_RT_F32, nullptr, 0, 1,
                                             nullptr, 0, 1, nullptr, 1, nullptr,
                                             nullptr, nullptr);
       }},
      {"tamoe_rt_aux_loss_grad",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_aux_loss_grad(c, nullptr, nullptr, 0, 1, 1, nullptr,
                                       nullptr, nullptr);
       }},
      {"tamoe_rt_dedup_pack_grad",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_dedup_pack_grad(c, TAMOE_RT_F32, nullptr, 0, 1,
                                         nullptr, nullptr, 0, 1, 1, 1, nullptr);
       }},
      {"tamoe_rt_dedup_expand_grad",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_dedup_expand_grad(c, TAMOE_RT_F32, nullptr, 0, 1,
                                           nullptr, 0, 1, nullptr, 1, 1, 1,
                                           nullptr);
       }},
      {"tamoe_rt_all_reduce",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_all_reduce(c, TAMOE_RT_GROUP_WORLD, nullptr, 0, 0);
       }},
      {"tamoe_rt_sgd",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_sgd(c, nullptr, nullptr, nullptr, 0, 0.1f, 0, 0);
       }},
      {"tamoe_rt_adam",
       [](tamoe_rt_context_t *c) {
         return tamoe_rt_adam(c, nullptr, nullptr, nullptr, nullptr, 0, 1, 0.1f,
                              0.9f, 0.999f, 1e-8f, 0);
       }},
  };
  const std::string dead = ": context is not live: tamoe_rt_finalize "
                           "released it (or tamoe_rt_init never returned it)";
  for (auto &[name, call] : calls) {
    EXPECT_EQ(call(nullptr), TAMOE_RT_ERROR_INVALID_ARGUMENT) << name;
    EXPECT_EQ(std::string(tamoe_rt_last_error(nullptr)),
              std::string(name) + ": context is null");
    EXPECT_EQ(call(finalized), TAMOE_RT_ERROR_INVALID_ARGUMENT) << name;
    EXPECT_EQ(std::string(tamoe_rt_last_error(nullptr)), name + dead);
  }
  EXPECT_EQ(tamoe_rt_backend(nullptr), TAMOE_RT_BACKEND_CPU);
  // Finalized twice: refused the same way; its accessors answer as for null.
  EXPECT_EQ(tamoe_rt_finalize(finalized), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(tamoe_rt_last_error(nullptr)),
            "tamoe_rt_finalize" + dead);
  EXPECT_EQ(tamoe_rt_last_error(finalized), tamoe_rt_last_error(nullptr));
  EXPECT_EQ(tamoe_rt_rank(finalized), -1);
  EXPECT_EQ(tamoe_rt_num_ranks(finalized), -1);
  EXPECT_EQ(tamoe_rt_ranks_per_node(finalized), -1);
  // A later context never takes a finalized one's address, so the stale
  // handle cannot finalize the newcomer.
  tamoe_rt_context_t *later = nullptr;
  ASSERT_EQ(tamoe_rt_init(nullptr, &later), TAMOE_RT_SUCCESS);
  EXPECT_NE(later, finalized);
  EXPECT_EQ(tamoe_rt_finalize(finalized), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(tamoe_rt_rank(later), 0);
  EXPECT_EQ(tamoe_rt_finalize(later), TAMOE_RT_SUCCESS);
}

//===----------------------------------------------------------------------===//
// Memory
//===----------------------------------------------------------------------===//

TEST_F(Runtime, FreedMemoryIsReused) {
  // A layer's step allocates what the previous step freed: same size, same
  // block (fresh pages would fault again). Sizes round up to 256 bytes.
  void *first = nullptr, *second = nullptr, *other = nullptr;
  ASSERT_EQ(tamoe_rt_alloc(ctx, 1 << 20, &first), TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_free(ctx, first), TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_alloc(ctx, 4096, &other), TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_alloc(ctx, (1 << 20) - 100, &second), TAMOE_RT_SUCCESS);
#if !defined(__SANITIZE_ADDRESS__)
  EXPECT_EQ(second, first);
#endif
  EXPECT_NE(other, second);
  // A reused block is a live allocation again: freeing it twice is an error.
  EXPECT_EQ(tamoe_rt_free(ctx, second), TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_free(ctx, second), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(tamoe_rt_free(ctx, other), TAMOE_RT_SUCCESS);
}

TEST_F(Runtime, Memory) {
  void *empty = reinterpret_cast<void *>(1);
  ASSERT_EQ(tamoe_rt_alloc(ctx, 0, &empty), TAMOE_RT_SUCCESS);
  EXPECT_EQ(empty, nullptr);
  EXPECT_EQ(tamoe_rt_free(ctx, nullptr), TAMOE_RT_SUCCESS);

  void *buffer = nullptr;
  ASSERT_EQ(tamoe_rt_alloc(ctx, 1000, &buffer), TAMOE_RT_SUCCESS);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer) % 256, 0u);
  std::vector<unsigned char> data = Random(1).bytes(1000), back(1000, 0);
  ASSERT_EQ(tamoe_rt_copy_to_backend(ctx, buffer, data.data(), 1000),
            TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_copy_to_host(ctx, back.data(), buffer, 1000),
            TAMOE_RT_SUCCESS);
  EXPECT_EQ(back, data);
  EXPECT_EQ(tamoe_rt_copy_to_host(ctx, nullptr, nullptr, 0), TAMOE_RT_SUCCESS);

  EXPECT_EQ(tamoe_rt_copy_to_backend(ctx, buffer, data.data(), -1),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_copy_to_backend: bytes must be >= 0, got -1");
  EXPECT_EQ(tamoe_rt_copy_to_backend(ctx, nullptr, data.data(), 4),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_copy_to_backend: destination is null");
  EXPECT_EQ(tamoe_rt_copy_to_host(ctx, back.data(), nullptr, 4),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_copy_to_host: source is null");

  EXPECT_EQ(tamoe_rt_free(ctx, buffer), TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_free(ctx, buffer), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  std::string message = error();
  EXPECT_EQ(message.rfind("tamoe_rt_free: pointer 0x", 0), 0u) << message;
  EXPECT_NE(message.find(" was not allocated by tamoe_rt_alloc on this "
                         "context (or was freed already)"),
            std::string::npos)
      << message;

  EXPECT_EQ(tamoe_rt_alloc(ctx, -4, &buffer), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_alloc: bytes must be >= 0, got -4");
  EXPECT_EQ(tamoe_rt_alloc(ctx, intptr_t(1) << 62, &buffer),
            TAMOE_RT_ERROR_OUT_OF_MEMORY);
  EXPECT_EQ(error(), "tamoe_rt_alloc: cannot allocate 4611686018427387904 "
                     "bytes of host memory");
  // Left allocated on purpose: tamoe_rt_finalize releases it.
  ASSERT_EQ(tamoe_rt_alloc(ctx, 64, &buffer), TAMOE_RT_SUCCESS);
}

// The cuda backend's graphs are checked by bench/gpu/tamoe_gpu_bench
// ("graph ..." cases); the cpu backend has none, and the handles are
// checked before any backend sees them.
TEST_F(Runtime, Graphs) {
  EXPECT_EQ(tamoe_rt_graph_begin(ctx), TAMOE_RT_ERROR_BACKEND_UNAVAILABLE);
  EXPECT_EQ(error(), "tamoe_rt_graph_begin: the cpu backend computes on the "
                     "host, where there is nothing to record; graphs need the "
                     "cuda backend");
  // Nothing is recording, so nothing was refused meanwhile.
  void *buffer = nullptr;
  ASSERT_EQ(tamoe_rt_alloc(ctx, 64, &buffer), TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_free(ctx, buffer), TAMOE_RT_SUCCESS);

  tamoe_rt_graph_t *graph = reinterpret_cast<tamoe_rt_graph_t *>(1);
  EXPECT_EQ(tamoe_rt_graph_end(ctx, &graph), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_graph_end: no graph is being recorded "
                     "(tamoe_rt_graph_begin)");
  EXPECT_EQ(graph, nullptr);
  EXPECT_EQ(tamoe_rt_graph_launch(ctx, nullptr),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_graph_launch: graph is null");
  auto *stranger = reinterpret_cast<tamoe_rt_graph_t *>(0x1234);
  EXPECT_EQ(tamoe_rt_graph_launch(ctx, stranger),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_graph_launch: graph 0x1234 is not a graph of "
                     "this context (destroyed already?)");
  EXPECT_EQ(tamoe_rt_graph_destroy(ctx, stranger),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_graph_destroy: graph 0x1234 is not a graph of "
                     "this context (destroyed already?)");
  EXPECT_EQ(tamoe_rt_graph_destroy(ctx, nullptr), TAMOE_RT_SUCCESS);
}

TEST_F(Runtime, Traffic) {
  tamoe_rt_traffic_t traffic{-1, -1};
  ASSERT_EQ(tamoe_rt_traffic(ctx, &traffic), TAMOE_RT_SUCCESS);
  EXPECT_EQ(traffic.intra_node_bytes, 0);
  EXPECT_EQ(traffic.inter_node_bytes, 0);
  EXPECT_EQ(tamoe_rt_traffic(ctx, nullptr), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_traffic: traffic is null");
  EXPECT_EQ(tamoe_rt_reset_traffic(ctx), TAMOE_RT_SUCCESS);
}

//===----------------------------------------------------------------------===//
// Gate
//===----------------------------------------------------------------------===//

struct GateResult {
  tamoe_rt_status_t status;
  reference::Gate out;
};

GateResult runGate(tamoe_rt_context_t *ctx, const std::vector<float> &logits,
                   int64_t tokens, int64_t experts, int64_t k, bool sigmoid,
                   bool renormalize, int64_t groups = 0, int64_t kept = 0) {
  GateResult result;
  result.out.ids.assign(tokens * k, -7);
  result.out.weights.assign(tokens * k, -7);
  result.out.probs.assign(tokens * experts, -7);
  result.status =
      tamoe_rt_gate(ctx, logits.data(), tokens, experts, k,
                    sigmoid ? TAMOE_RT_SCORE_SIGMOID : TAMOE_RT_SCORE_SOFTMAX,
                    renormalize, groups, kept, result.out.ids.data(),
                    result.out.weights.data(), result.out.probs.data());
  return result;
}

void expectFloats(const std::vector<float> &actual,
                  const std::vector<float> &expected, const char *what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i)
    EXPECT_FLOAT_EQ(actual[i], expected[i]) << what << "[" << i << "]";
}

TEST_F(Runtime, GateMatchesTheCompilersLowering) {
  // test/Integration/expand-gate.mlir runs tamoe-expand-gate's lowering on
  // these logits; the runtime must print the same numbers.
  std::vector<float> logits = {1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 5, 0};
  GateResult softmax = runGate(ctx, logits, 3, 4, 2, false, true);
  ASSERT_EQ(softmax.status, TAMOE_RT_SUCCESS) << error();
  EXPECT_EQ(softmax.out.ids, (std::vector<int32_t>{3, 2, 0, 1, 2, 0}));
  std::vector<float> weights = {0.731059f, 0.268941f, 0.731059f,
                                0.268941f, 0.993307f, 0.00669285f};
  for (size_t i = 0; i < weights.size(); ++i)
    EXPECT_NEAR(softmax.out.weights[i], weights[i], 1e-6) << i;
  std::vector<float> probs = {0.0320586f, 0.0871443f, 0.236883f, 0.643914f};
  for (size_t i = 0; i < probs.size(); ++i)
    EXPECT_NEAR(softmax.out.probs[i], probs[i], 1e-6) << i;

  float loss = 0;
  ASSERT_EQ(tamoe_rt_aux_loss(ctx, softmax.out.probs.data(),
                              softmax.out.ids.data(), nullptr, 3, 4, 2, nullptr,
                              &loss),
            TAMOE_RT_SUCCESS);
  EXPECT_NEAR(loss, 1.10818f, 1e-5);
  std::vector<float> ones(4, 1.0f), plan = {2, 1, 1, 0.5f};
  float same = 0;
  ASSERT_EQ(tamoe_rt_aux_loss(ctx, softmax.out.probs.data(),
                              softmax.out.ids.data(), nullptr, 3, 4, 2,
                              ones.data(), &same),
            TAMOE_RT_SUCCESS);
  EXPECT_EQ(same, loss);
  std::vector<int32_t> dropped = {3, -1, 0, 1, 2, 0};
  ASSERT_EQ(tamoe_rt_aux_loss(ctx, softmax.out.probs.data(), dropped.data(),
                              nullptr, 3, 4, 2, nullptr, &loss),
            TAMOE_RT_SUCCESS);
  EXPECT_NEAR(loss, 0.818351f, 1e-5);
  // An assignment the dispatch dropped (position -1) counts as a negative id.
  std::vector<int32_t> masked = softmax.out.ids, positions(6, 0);
  masked[1] = -1;
  positions[1] = -1;
  float byId = 0, byPosition = 0;
  ASSERT_EQ(tamoe_rt_aux_loss(ctx, softmax.out.probs.data(), masked.data(),
                              nullptr, 3, 4, 2, nullptr, &byId),
            TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_aux_loss(ctx, softmax.out.probs.data(),
                              softmax.out.ids.data(), positions.data(), 3, 4,
                              2, nullptr, &byPosition),
            TAMOE_RT_SUCCESS);
  EXPECT_EQ(byPosition, byId);
  EXPECT_NE(byPosition, 0.0f);
  ASSERT_EQ(tamoe_rt_aux_loss(ctx, softmax.out.probs.data(),
                              softmax.out.ids.data(), nullptr, 3, 4, 2,
                              plan.data(), &loss),
            TAMOE_RT_SUCCESS);
  EXPECT_NEAR(loss, 1.3357f, 1e-4);

  GateResult grouped = runGate(ctx, logits, 3, 4, 2, true, false, 2, 1);
  ASSERT_EQ(grouped.status, TAMOE_RT_SUCCESS) << error();
  EXPECT_EQ(grouped.out.ids, (std::vector<int32_t>{3, 2, 0, 1, 2, 3}));
  EXPECT_NEAR(grouped.out.weights[0], 0.982014f, 1e-6);
  EXPECT_NEAR(grouped.out.weights[1], 0.952574f, 1e-6);
}

TEST_F(Runtime, GateAgainstReference) {
  struct Case {
    int64_t tokens, experts, k;
    bool sigmoid, renormalize;
    int64_t groups, kept;
  };
  std::vector<Case> cases = {
      {37, 8, 2, false, true, 0, 0},  {64, 16, 4, true, false, 4, 2},
      {20, 6, 6, false, false, 0, 0}, {33, 5, 3, true, true, 5, 3},
      {0, 8, 2, false, true, 0, 0},   {50, 12, 1, false, false, 3, 1},
      {41, 32, 8, true, true, 8, 4},
  };
  Random random(7);
  for (const Case &c : cases) {
    SCOPED_TRACE(testing::Message()
                 << c.tokens << " tokens, " << c.experts << " experts, top-"
                 << c.k << ", groups " << c.groups << " keep " << c.kept);
    std::vector<float> logits = random.floats(c.tokens * c.experts, -4, 4);
    GateResult got = runGate(ctx, logits, c.tokens, c.experts, c.k, c.sigmoid,
                             c.renormalize, c.groups, c.kept);
    ASSERT_EQ(got.status, TAMOE_RT_SUCCESS) << error();
    reference::Gate want =
        reference::gate(logits, c.tokens, c.experts, c.k, c.sigmoid,
                        c.renormalize, c.groups, c.kept);
    EXPECT_EQ(got.out.ids, want.ids);
    expectFloats(got.out.weights, want.weights, "weights");
    expectFloats(got.out.probs, want.probs, "probs");
    if (c.groups) {
      // Every pick lies in one of the kept groups.
      int64_t size = c.experts / c.groups;
      for (int64_t t = 0; t < c.tokens; ++t) {
        std::vector<int64_t> groups;
        for (int64_t j = 0; j < c.k; ++j) {
          int64_t g = got.out.ids[t * c.k + j] / size;
          if (std::find(groups.begin(), groups.end(), g) == groups.end())
            groups.push_back(g);
        }
        EXPECT_LE(int64_t(groups.size()), c.kept);
      }
    }
  }
}

TEST_F(Runtime, GateTiesGoToTheLowerId) {
  std::vector<float> logits(2 * 6, 0.5f);
  GateResult got = runGate(ctx, logits, 2, 6, 3, false, true);
  ASSERT_EQ(got.status, TAMOE_RT_SUCCESS);
  EXPECT_EQ(got.out.ids, (std::vector<int32_t>{0, 1, 2, 0, 1, 2}));
  for (float w : got.out.weights)
    EXPECT_FLOAT_EQ(w, 1.0f / 3);
  // Tied groups: the lower group.
  got = runGate(ctx, logits, 2, 6, 2, true, false, 3, 1);
  ASSERT_EQ(got.status, TAMOE_RT_SUCCESS);
  EXPECT_EQ(got.out.ids, (std::vector<int32_t>{0, 1, 0, 1}));
}

TEST_F(Runtime, GateRenormalizesScoresThatUnderflowed) {
  // sigmoid(-100) is 0 in f32: the chosen scores sum to 0, and the weights
  // are 0 over (0 + TAMOE_RT_RENORMALIZE_EPSILON) rather than NaN; so are
  // the logits' gradients. The second token is unchanged by the epsilon.
  std::vector<float> logits = {-100.0f, -101.0f, -102.0f, -103.0f,
                               1.0f,    -1.0f,   2.0f,    0.0f};
  GateResult got = runGate(ctx, logits, 2, 4, 2, true, true);
  ASSERT_EQ(got.status, TAMOE_RT_SUCCESS) << error();
  EXPECT_EQ(got.out.ids, (std::vector<int32_t>{0, 1, 2, 0}));
  EXPECT_EQ(got.out.weights[0], 0.0f);
  EXPECT_EQ(got.out.weights[1], 0.0f);
  float a = 1 / (1 + std::exp(-2.0f)), b = 1 / (1 + std::exp(-1.0f));
  EXPECT_FLOAT_EQ(got.out.weights[2], a / (a + b));
  std::vector<float> dWeights = {1.0f, -2.0f, 0.5f, 0.25f},
                     dLogits(8, NAN);
  ASSERT_EQ(tamoe_rt_gate_grad(ctx, got.out.probs.data(), got.out.ids.data(),
                               2, 4, 2, TAMOE_RT_SCORE_SIGMOID, 1,
                               dWeights.data(), nullptr, dLogits.data()),
            TAMOE_RT_SUCCESS)
      << error();
  for (float d : dLogits)
    EXPECT_TRUE(std::isfinite(d)) << d;
  EXPECT_EQ(dLogits[0], 0.0f);
}

TEST_F(Runtime, GateRanksNaNAsMinusInfinity) {
  // Sigmoid scores, 4 groups of 2, 2 groups kept, top-2. Token 0: groups 0
  // and 2 hold a NaN, so they score -inf and groups 1 and 3 stay. Token 1:
  // NaN everywhere; the lower groups and ids stay, their weights NaN (for a
  // loss scaler to see), where choosing only among numbers would pick
  // experts of the groups not kept.
  const float nan = NAN;
  std::vector<float> logits = {nan, nan, 1.0f, 0.5f, nan, 3.0f, -1.0f, -2.0f,
                               nan, nan, nan,  nan,  nan, nan,  nan,   nan};
  GateResult got = runGate(ctx, logits, 2, 8, 2, true, false, 4, 2);
  ASSERT_EQ(got.status, TAMOE_RT_SUCCESS) << error();
  EXPECT_EQ(got.out.ids, (std::vector<int32_t>{2, 3, 0, 1}));
  EXPECT_NEAR(got.out.weights[0], 0.731059f, 1e-6);
  EXPECT_TRUE(std::isnan(got.out.weights[2]) && std::isnan(got.out.weights[3]));
  reference::Gate want = reference::gate(logits, 2, 8, 2, true, false, 4, 2);
  EXPECT_EQ(got.out.ids, want.ids);
  // Softmax: one NaN logit makes the whole row NaN: the first k ids.
  std::vector<float> row = {0.5f, 2.0f, nan, 1.0f, 3.0f, -1.0f};
  got = runGate(ctx, row, 1, 6, 3, false, true);
  ASSERT_EQ(got.status, TAMOE_RT_SUCCESS) << error();
  EXPECT_EQ(got.out.ids, (std::vector<int32_t>{0, 1, 2}));
}

TEST_F(Runtime, GateErrors) {
  std::vector<float> logits(4 * 8, 0), weights(4 * 8), probs(4 * 8);
  std::vector<int32_t> ids(4 * 8);
  auto gate = [&](intptr_t tokens, intptr_t experts, intptr_t k, int score,
                  intptr_t groups, intptr_t kept, const float *in = nullptr,
                  float *w = nullptr) {
    return tamoe_rt_gate(ctx, in ? in : logits.data(), tokens, experts, k,
                         tamoe_rt_score_t(score), 1, groups, kept, ids.data(),
                         w ? w : weights.data(), probs.data());
  };
  auto expect = [&](tamoe_rt_status_t status, const std::string &message) {
    EXPECT_EQ(status, TAMOE_RT_ERROR_INVALID_ARGUMENT) << message;
    EXPECT_EQ(error(), "tamoe_rt_gate: " + message);
  };
  expect(gate(4, 8, 9, 0, 0, 0), "k must be in [1, experts], got 9 for 8 "
                                 "experts");
  expect(gate(4, 8, 0, 0, 0, 0), "k must be in [1, experts], got 0 for 8 "
                                 "experts");
  expect(gate(-1, 8, 2, 0, 0, 0), "tokens must be >= 0, got -1");
  expect(gate(4, 0, 1, 0, 0, 0), "experts must be >= 1, got 0");
  expect(gate(4, 8, 2, 5, 0, 0), "score = 5 is not a tamoe_rt_score_t");
  expect(gate(4, 8, 2, 0, 3, 1), "num_groups (3) must divide experts (8)");
  expect(gate(4, 8, 2, 0, 4, 5), "groups_kept must be in [1, num_groups], got "
                                 "5 for 4 groups");
  expect(gate(4, 8, 2, 0, 4, 0), "groups_kept must be in [1, num_groups], got "
                                 "0 for 4 groups");
  expect(gate(4, 8, 3, 0, 4, 1), "k = 3 exceeds the 2 experts of the 1 kept "
                                 "groups");
  expect(gate(4, 8, 2, 0, 0, 2), "groups_kept must be 0 without groups "
                                 "(num_groups = 0), got 2");
  expect(gate(4, 8, 2, 0, -2, 0), "num_groups must be >= 0, got -2");
  expect(tamoe_rt_gate(ctx, nullptr, 4, 8, 2, TAMOE_RT_SCORE_SOFTMAX, 0, 0, 0,
                       ids.data(), weights.data(), probs.data()),
         "logits is null");
  expect(tamoe_rt_gate(ctx, logits.data(), 4, 8, 2, TAMOE_RT_SCORE_SOFTMAX, 0,
                       0, 0, ids.data(), nullptr, probs.data()),
         "weights is null");
  expect(tamoe_rt_gate(ctx, logits.data(), 4, intptr_t(1) << 31, 2,
                       TAMOE_RT_SCORE_SOFTMAX, 0, 0, 0, ids.data(),
                       weights.data(), probs.data()),
         "experts = 2147483648 exceeds the int32 expert ids");
  expect(tamoe_rt_gate(ctx, logits.data(), intptr_t(1) << 40, 1 << 30, 2,
                       TAMOE_RT_SCORE_SOFTMAX, 0, 0, 0, ids.data(),
                       weights.data(), probs.data()),
         "tokens * experts = 1099511627776 * 1073741824 overflows");
  // No tokens: no buffers needed.
  EXPECT_EQ(tamoe_rt_gate(ctx, nullptr, 0, 8, 2, TAMOE_RT_SCORE_SOFTMAX, 0, 0,
                          0, nullptr, nullptr, nullptr),
            TAMOE_RT_SUCCESS);
}

//===----------------------------------------------------------------------===//
// Dispatch and combine
//===----------------------------------------------------------------------===//

struct DispatchResult {
  tamoe_rt_status_t status;
  reference::Dispatch out;
};

DispatchResult runDispatch(tamoe_rt_context_t *ctx, const Bytes &tokens,
                           int64_t rowBytes, const std::vector<int32_t> &ids,
                           int64_t k, int64_t experts, int64_t capacity,
                           bool byProbability,
                           const std::vector<float> &weights,
                           int64_t dispatchedCapacity = -1) {
  int64_t numTokens = int64_t(ids.size()) / k;
  if (dispatchedCapacity < 0)
    dispatchedCapacity = numTokens * k;
  DispatchResult result;
  // One canary row past the capacity must stay untouched.
  result.out.rows.assign((dispatchedCapacity + 1) * rowBytes, 0xAB);
  result.out.counts.assign(experts, -7);
  result.out.positions.assign(numTokens * k, -7);
  result.out.dropped = -7;
  result.status = tamoe_rt_dispatch(
      ctx, tokens.data(), numTokens, rowBytes, ids.data(), k, experts,
      weights.empty() ? nullptr : weights.data(), capacity,
      byProbability ? TAMOE_RT_DROP_PROBABILITY : TAMOE_RT_DROP_POSITION,
      result.out.rows.data(), dispatchedCapacity, result.out.counts.data(),
      result.out.positions.data(), &result.out.dropped);
  for (int64_t i = dispatchedCapacity * rowBytes;
       i < int64_t(result.out.rows.size()); ++i)
    EXPECT_EQ(result.out.rows[i], 0xAB) << "written past the capacity";
  int64_t rows = 0;
  for (int32_t count : result.out.counts)
    rows += std::max(count, 0);
  if (result.status == TAMOE_RT_SUCCESS)
    result.out.rows.resize(rows * rowBytes);
  return result;
}

void expectDispatch(const DispatchResult &got,
                    const reference::Dispatch &want) {
  ASSERT_EQ(got.status, TAMOE_RT_SUCCESS);
  EXPECT_EQ(got.out.counts, want.counts);
  EXPECT_EQ(got.out.positions, want.positions);
  EXPECT_EQ(got.out.dropped, want.dropped);
  EXPECT_TRUE(got.out.rows == want.rows) << "dispatched rows differ";
}

TEST_F(Runtime, DispatchAgainstReference) {
  Random random(11);
  int64_t tokens = 50, rowBytes = 24, experts = 8, k = 2;
  Bytes data = random.bytes(tokens * rowBytes);
  std::vector<float> logits = random.floats(tokens * experts);
  reference::Gate gate =
      reference::gate(logits, tokens, experts, k, false, true);
  for (int64_t capacity :
       {int64_t(-1), int64_t(5), int64_t(0), int64_t(13), int64_t(100)})
    for (bool byProbability : {false, true}) {
      SCOPED_TRACE(testing::Message()
                   << "capacity " << capacity
                   << (byProbability ? " by probability" : " by position"));
      DispatchResult got = runDispatch(
          ctx, data, rowBytes, gate.ids, k, experts, capacity, byProbability,
          byProbability ? gate.weights : std::vector<float>{});
      expectDispatch(got, reference::dispatch(data, rowBytes, gate.ids, k,
                                              experts, capacity, byProbability,
                                              gate.weights));
    }
}

TEST_F(Runtime, DispatchEdgeCases) {
  Random random(12);
  int64_t rowBytes = 8;
  // Every token to one expert, over capacity: the earliest stay.
  Bytes data = random.bytes(10 * rowBytes);
  std::vector<int32_t> one(10, 3);
  DispatchResult got =
      runDispatch(ctx, data, rowBytes, one, 1, 4, 4, false, {}, 4);
  expectDispatch(got, reference::dispatch(data, rowBytes, one, 1, 4, 4));
  EXPECT_EQ(got.out.counts, (std::vector<int32_t>{0, 0, 0, 4}));
  EXPECT_EQ(got.out.positions,
            (std::vector<int32_t>{0, 1, 2, 3, -1, -1, -1, -1, -1, -1}));
  EXPECT_EQ(got.out.dropped, 6);
  // By probability: the highest weights, the earlier on ties.
  std::vector<float> weights = {0.1f, 0.9f, 0.5f, 0.9f, 0.2f,
                                0.7f, 0.1f, 0.5f, 0.0f, 0.3f};
  got = runDispatch(ctx, data, rowBytes, one, 1, 4, 3, true, weights, 3);
  EXPECT_EQ(got.out.positions,
            (std::vector<int32_t>{-1, 0, -1, 1, -1, 2, -1, -1, -1, -1}));
  // NaN of either sign ranks as -inf: below every number, tied with -inf
  // (the earlier token first).
  weights = {0.4f, 0.1f, -NAN, -INFINITY, 0.2f, NAN, -1.0f, 0.0f, 0.3f, NAN};
  got = runDispatch(ctx, data, rowBytes, one, 1, 4, 8, true, weights, 8);
  EXPECT_EQ(got.out.positions,
            (std::vector<int32_t>{0, 1, 2, 3, 4, -1, 5, 6, 7, -1}));
  expectDispatch(
      got, reference::dispatch(data, rowBytes, one, 1, 4, 8, true, weights));
  // Capacity 0 drops everything.
  got = runDispatch(ctx, data, rowBytes, one, 1, 4, 0, false, {}, 0);
  ASSERT_EQ(got.status, TAMOE_RT_SUCCESS) << error();
  EXPECT_EQ(got.out.dropped, 10);
  EXPECT_EQ(got.out.counts, (std::vector<int32_t>{0, 0, 0, 0}));
  // k = E: every token to every expert.
  std::vector<int32_t> all;
  for (int t = 0; t < 10; ++t)
    for (int e : {2, 0, 3, 1})
      all.push_back(e);
  got = runDispatch(ctx, data, rowBytes, all, 4, 4, -1, false, {});
  expectDispatch(got, reference::dispatch(data, rowBytes, all, 4, 4));
  EXPECT_EQ(got.out.counts, (std::vector<int32_t>{10, 10, 10, 10}));
  EXPECT_EQ(got.out.positions[0], 20); // token 0 -> expert 2: row 2 * 10
  // No tokens.
  int32_t counts[4] = {-1, -1, -1, -1};
  int64_t dropped = -1;
  ASSERT_EQ(tamoe_rt_dispatch(ctx, nullptr, 0, rowBytes, nullptr, 2, 4, nullptr,
                              3, TAMOE_RT_DROP_PROBABILITY, nullptr, 0, counts,
                              nullptr, &dropped),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(dropped, 0);
  EXPECT_EQ(counts[3], 0);
}

TEST_F(Runtime, DispatchErrors) {
  Random random(13);
  int64_t rowBytes = 4;
  Bytes data = random.bytes(5 * rowBytes);
  std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 9, 1, 2};
  DispatchResult got =
      runDispatch(ctx, data, rowBytes, ids, 2, 8, -1, false, {});
  EXPECT_EQ(got.status, TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(),
            "tamoe_rt_dispatch: expert_ids[3, 1] = 9 is out of range [0, 8)");
  ids[7] = -1;
  got = runDispatch(ctx, data, rowBytes, ids, 2, 8, -1, false, {});
  EXPECT_EQ(error(),
            "tamoe_rt_dispatch: expert_ids[3, 1] = -1 is out of range [0, 8)");
  ids[7] = 7;
  // Nothing is written when the rows do not fit.
  got = runDispatch(ctx, data, rowBytes, ids, 2, 8, -1, false, {}, 9);
  EXPECT_EQ(got.status, TAMOE_RT_ERROR_CAPACITY_EXCEEDED);
  EXPECT_EQ(error(),
            "tamoe_rt_dispatch: 10 rows to write exceed dispatched_capacity 9");
  for (unsigned char byte : got.out.rows)
    EXPECT_EQ(byte, 0xAB);
  EXPECT_EQ(got.out.dropped, -7);

  std::vector<unsigned char> out(10 * rowBytes);
  std::vector<int32_t> counts(8), positions(10);
  int64_t dropped;
  auto dispatch = [&](intptr_t k, intptr_t experts, tamoe_rt_drop_t drop,
                      const float *weights, intptr_t rb = 4,
                      int64_t *droppedOut = nullptr) {
    return tamoe_rt_dispatch(ctx, data.data(), 5, rb, ids.data(), k, experts,
                             weights, 3, drop, out.data(), 10, counts.data(),
                             positions.data(),
                             droppedOut ? droppedOut : &dropped);
  };
  auto expect = [&](tamoe_rt_status_t status, const std::string &message) {
    EXPECT_EQ(status, TAMOE_RT_ERROR_INVALID_ARGUMENT) << message;
    EXPECT_EQ(error(), "tamoe_rt_dispatch: " + message);
  };
  expect(dispatch(9, 8, TAMOE_RT_DROP_POSITION, nullptr),
         "k must be in [1, experts], got 9 for 8 experts");
  expect(dispatch(2, 8, TAMOE_RT_DROP_PROBABILITY, nullptr),
         "weights is null, but TAMOE_RT_DROP_PROBABILITY needs them");
  expect(dispatch(2, 8, tamoe_rt_drop_t(7), nullptr),
         "drop = 7 is not a tamoe_rt_drop_t");
  expect(dispatch(2, 8, TAMOE_RT_DROP_POSITION, nullptr, 0),
         "row_bytes must be >= 1, got 0");
  expect(tamoe_rt_dispatch(ctx, data.data(), 5, 4, ids.data(), 2, 8, nullptr, 3,
                           TAMOE_RT_DROP_POSITION, out.data(), 10,
                           counts.data(), positions.data(), nullptr),
         "num_dropped is null");
  expect(tamoe_rt_dispatch(ctx, data.data(), 5, 4, ids.data(), 2, 8, nullptr, 3,
                           TAMOE_RT_DROP_POSITION, nullptr, 10, counts.data(),
                           positions.data(), &dropped),
         "dispatched is null");
  expect(tamoe_rt_dispatch(ctx, data.data(), 5, 4, ids.data(), 2, 8, nullptr, 3,
                           TAMOE_RT_DROP_POSITION, out.data(), -1,
                           counts.data(), positions.data(), &dropped),
         "dispatched_capacity must be >= 0, got -1");
  expect(tamoe_rt_dispatch(ctx, data.data(), intptr_t(1) << 31, 4, ids.data(),
                           2, 8, nullptr, 3, TAMOE_RT_DROP_POSITION, out.data(),
                           10, counts.data(), positions.data(), &dropped),
         "num_tokens * k = 4294967296 exceeds the int32 positions");
}

TEST_F(Runtime, CombineAgainstReference) {
  Random random(21);
  int64_t tokens = 40, experts = 8, k = 2, hidden = 16;
  std::vector<float> logits = random.floats(tokens * experts);
  reference::Gate gate =
      reference::gate(logits, tokens, experts, k, false, true);
  // Positions of a dispatch that drops some assignments.
  reference::Dispatch layout =
      reference::dispatch(Bytes(tokens * 4), 4, gate.ids, k, experts, 6);
  ASSERT_GT(layout.dropped, 0);
  int64_t rows = int64_t(layout.rows.size()) / 4;
  std::vector<float> outputs = random.floats(rows * hidden);
  // A token whose every assignment was dropped.
  layout.positions[5 * k] = layout.positions[5 * k + 1] = -1;
  std::vector<float> combined(tokens * hidden, -7.0f);
  ASSERT_EQ(tamoe_rt_combine(ctx, TAMOE_RT_F32, outputs.data(), rows, hidden,
                             layout.positions.data(), gate.weights.data(),
                             tokens, k, combined.data()),
            TAMOE_RT_SUCCESS)
      << error();
  expectFloats(
      combined,
      reference::combine(outputs, hidden, layout.positions, gate.weights, k),
      "combined");
  for (int64_t h = 0; h < hidden; ++h)
    EXPECT_EQ(combined[5 * hidden + h], 0.0f);
  // Null weights are all 1 (dispatch's gradient): the plain sums.
  ASSERT_EQ(tamoe_rt_combine(ctx, TAMOE_RT_F32, outputs.data(), rows, hidden,
                             layout.positions.data(), nullptr, tokens, k,
                             combined.data()),
            TAMOE_RT_SUCCESS)
      << error();
  expectFloats(combined,
               reference::combine(outputs, hidden, layout.positions,
                                  std::vector<float>(), k),
               "combined (null weights)");

  layout.positions[2 * k] = int32_t(rows);
  EXPECT_EQ(tamoe_rt_combine(ctx, TAMOE_RT_F32, outputs.data(), rows, hidden,
                             layout.positions.data(), gate.weights.data(),
                             tokens, k, combined.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_combine: positions[2, 0] = " +
                         std::to_string(rows) + " is past the " +
                         std::to_string(rows) + " rows of expert_outputs");
  EXPECT_EQ(tamoe_rt_combine(ctx, TAMOE_RT_F32, outputs.data(), rows, 0,
                             layout.positions.data(), gate.weights.data(),
                             tokens, k, combined.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_combine: hidden must be >= 1, got 0");
  EXPECT_EQ(tamoe_rt_combine(ctx, TAMOE_RT_F32, outputs.data(), rows, hidden,
                             layout.positions.data(), gate.weights.data(),
                             tokens, k, nullptr),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_combine: combined is null");
  EXPECT_EQ(tamoe_rt_combine(ctx, TAMOE_RT_F32, nullptr, 0, hidden, nullptr,
                             nullptr, 0, k, nullptr),
            TAMOE_RT_SUCCESS);
}

//===----------------------------------------------------------------------===//
// Auxiliary loss
//===----------------------------------------------------------------------===//

TEST_F(Runtime, AuxLossAgainstReference) {
  Random random(31);
  for (auto [tokens, experts, k] :
       {std::tuple<int64_t, int64_t, int64_t>{64, 8, 2},
        {17, 16, 4},
        {5, 3, 3}}) {
    std::vector<float> logits = random.floats(tokens * experts);
    reference::Gate gate =
        reference::gate(logits, tokens, experts, k, false, false);
    // Some assignments dropped (-1), and per-expert weights.
    for (size_t i = 0; i < gate.ids.size(); i += 3)
      gate.ids[i] = -1;
    std::vector<float> weights = random.floats(experts, 0.5f, 2.0f);
    float loss = -1;
    ASSERT_EQ(tamoe_rt_aux_loss(ctx, gate.probs.data(), gate.ids.data(),
                                nullptr, tokens, experts, k, nullptr, &loss),
              TAMOE_RT_SUCCESS);
    EXPECT_NEAR(loss, reference::auxLoss(gate.probs, gate.ids, experts, k),
                1e-5);
    ASSERT_EQ(tamoe_rt_aux_loss(ctx, gate.probs.data(), gate.ids.data(),
                                nullptr, tokens, experts, k, weights.data(),
                                &loss),
              TAMOE_RT_SUCCESS);
    EXPECT_NEAR(loss,
                reference::auxLoss(gate.probs, gate.ids, experts, k, weights),
                1e-5);
  }
  // Uniform routing with uniform probabilities: exactly 1.
  std::vector<float> probs(4 * 4, 0.25f);
  std::vector<int32_t> ids = {0, 1, 2, 3, 0, 1, 2, 3};
  float loss = 0;
  ASSERT_EQ(
      tamoe_rt_aux_loss(ctx, probs.data(), ids.data(), nullptr, 4, 4, 2,
                        nullptr, &loss),
      TAMOE_RT_SUCCESS);
  EXPECT_FLOAT_EQ(loss, 1.0f);
  // No tokens: no loss.
  loss = -1;
  ASSERT_EQ(tamoe_rt_aux_loss(ctx, nullptr, nullptr, nullptr, 0, 4, 2, nullptr,
                              &loss),
            TAMOE_RT_SUCCESS);
  EXPECT_EQ(loss, 0.0f);

  ids[1] = 4;
  EXPECT_EQ(
      tamoe_rt_aux_loss(ctx, probs.data(), ids.data(), nullptr, 4, 4, 2,
                        nullptr, &loss),
      TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_aux_loss: expert_ids[0, 1] = 4 is out of range "
                     "[0, 4) (negative ids are not counted)");
  EXPECT_EQ(
      tamoe_rt_aux_loss(ctx, probs.data(), ids.data(), nullptr, 4, 4, 5,
                        nullptr, &loss),
      TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(
      error(),
      "tamoe_rt_aux_loss: k must be in [1, experts], got 5 for 4 experts");
  EXPECT_EQ(tamoe_rt_aux_loss(ctx, probs.data(), ids.data(), nullptr, 4, 4, 2,
                              nullptr, nullptr),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_aux_loss: loss is null");
}

//===----------------------------------------------------------------------===//
// Regroup and de-duplication
//===----------------------------------------------------------------------===//

TEST_F(Runtime, RegroupAgainstReference) {
  Random random(41);
  for (auto [a, b, inner] : {std::tuple<int64_t, int64_t, int64_t>{3, 4, 2},
                             {2, 4, 1},
                             {1, 5, 3},
                             {4, 1, 1}}) {
    int64_t rowBytes = 12;
    std::vector<int32_t> counts(a * b * inner);
    for (int32_t &count : counts)
      count = int32_t(random.integer(0, 4));
    counts[0] = 0;
    int64_t rows = std::accumulate(counts.begin(), counts.end(), int64_t(0));
    // Both buffers hold the capacity (rows + 2) that the call states.
    Bytes data = random.bytes((rows + 2) * rowBytes);
    Bytes out((rows + 2) * rowBytes, 0xCD);
    std::vector<int32_t> outCounts(counts.size(), -1);
    ASSERT_EQ(tamoe_rt_regroup(ctx, data.data(), rows + 2, rowBytes,
                               counts.data(), a, b, inner, out.data(),
                               outCounts.data()),
              TAMOE_RT_SUCCESS)
        << error();
    Bytes want;
    std::vector<int32_t> wantCounts;
    reference::regroup(data, rowBytes, counts, a, b, inner, want, wantCounts);
    EXPECT_EQ(outCounts, wantCounts);
    EXPECT_TRUE(Bytes(out.begin(), out.begin() + rows * rowBytes) == want);
    for (int64_t i = rows * rowBytes; i < int64_t(out.size()); ++i)
      EXPECT_EQ(out[i], 0xCD);
  }
}

TEST_F(Runtime, RegroupErrors) {
  std::vector<int32_t> counts = {1, 2, 3, 0, 1, 2}, out(6);
  Bytes rows(10 * 4), regrouped(10 * 4);
  auto regroup = [&](intptr_t capacity, intptr_t a) {
    return tamoe_rt_regroup(ctx, rows.data(), capacity, 4, counts.data(), a, 3,
                            1, regrouped.data(), out.data());
  };
  EXPECT_EQ(regroup(8, 2), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(),
            "tamoe_rt_regroup: counts sum to 9 rows but rows_capacity is 8");
  counts[5] = -1;
  EXPECT_EQ(regroup(10, 2), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_regroup: counts[1, 2, 0] = -1 is negative");
  EXPECT_EQ(regroup(10, 0), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_regroup: a must be >= 1, got 0");
  EXPECT_EQ(tamoe_rt_regroup(ctx, rows.data(), 10, 4, counts.data(), 2, 3, 1,
                             rows.data() + 4, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_regroup: regrouped and rows overlap");
  EXPECT_EQ(tamoe_rt_regroup(ctx, rows.data(), 10, 4, counts.data(), 2, 3, 1,
                             regrouped.data(), counts.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_regroup: regrouped_counts and counts overlap");
}

//===----------------------------------------------------------------------===//
// Chunks
//===----------------------------------------------------------------------===//

TEST_F(Runtime, ChunkPartsFollowTheFloorFormula) {
  // Rows 0..7 in blocks of 5, 0 and 3 rows; part c of an entry of n rows is
  // its rows [c n / 2, (c + 1) n / 2).
  std::vector<int32_t> counts = {5, 0, 3};
  Bytes rows = {0, 1, 2, 3, 4, 5, 6, 7};
  std::vector<Bytes> wantRows = {{0, 1, 5}, {2, 3, 4, 6, 7}};
  std::vector<std::vector<int32_t>> wantCounts = {{2, 0, 1}, {3, 0, 2}};
  Bytes back(8, 0xEE);
  for (int64_t c = 0; c < 2; ++c) {
    Bytes part(6, 0xCD);
    std::vector<int32_t> partCounts(3, -1);
    ASSERT_EQ(tamoe_rt_chunk(ctx, rows.data(), 8, 1, counts.data(), 3, c, 2,
                             part.data(), 6, partCounts.data()),
              TAMOE_RT_SUCCESS)
        << error();
    EXPECT_EQ(partCounts, wantCounts[c]);
    EXPECT_TRUE(Bytes(part.begin(), part.begin() + wantRows[c].size()) ==
                wantRows[c]);
    for (size_t i = wantRows[c].size(); i < part.size(); ++i)
      EXPECT_EQ(part[i], 0xCD) << "chunk wrote past its rows";
    // Each part goes back to its rows only.
    ASSERT_EQ(tamoe_rt_unchunk(ctx, part.data(), 6, 1, counts.data(), 3, c, 2,
                               back.data(), 8),
              TAMOE_RT_SUCCESS)
        << error();
  }
  EXPECT_TRUE(back == rows);

  // More chunks than rows: empty parts. n = 1 in 3: {0, 0, 1}; n = 2: {0,
  // 1, 1}.
  counts = {1, 2};
  std::vector<std::vector<int32_t>> sizes = {{0, 0}, {0, 1}, {1, 1}};
  for (int64_t c = 0; c < 3; ++c) {
    Bytes part(3, 0xCD);
    std::vector<int32_t> partCounts(2, -1);
    ASSERT_EQ(tamoe_rt_chunk(ctx, rows.data(), 3, 1, counts.data(), 2, c, 3,
                             part.data(), 3, partCounts.data()),
              TAMOE_RT_SUCCESS)
        << error();
    EXPECT_EQ(partCounts, sizes[c]) << "chunk " << c;
  }
  // An empty part needs no buffer.
  std::vector<int32_t> partCounts(2, -1);
  ASSERT_EQ(tamoe_rt_chunk(ctx, rows.data(), 3, 1, counts.data(), 2, 0, 3,
                           nullptr, 0, partCounts.data()),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(partCounts, (std::vector<int32_t>{0, 0}));
  ASSERT_EQ(tamoe_rt_unchunk(ctx, nullptr, 0, 1, counts.data(), 2, 0, 3,
                             rows.data(), 3),
            TAMOE_RT_SUCCESS)
      << error();
}

TEST_F(Runtime, ChunkRoundTrip) {
  Random random(43);
  for (int64_t rowBytes : {1, 12, 40})
    for (int64_t chunks : {1, 2, 3, 7, 50}) {
      SCOPED_TRACE(testing::Message()
                   << "row_bytes " << rowBytes << ", chunks " << chunks);
      // Entries with no rows among them, and 2 spare rows past the counts.
      std::vector<int32_t> counts(9);
      for (int32_t &count : counts)
        count = int32_t(random.integer(0, 1) ? random.integer(0, 30) : 0);
      counts[0] = 0;
      counts[3] = 17;
      int64_t rows = std::accumulate(counts.begin(), counts.end(), int64_t(0));
      Bytes data = random.bytes((rows + 2) * rowBytes);
      Bytes back((rows + 2) * rowBytes, 0xEE);
      std::vector<int32_t> total(counts.size(), 0);
      for (int64_t c = 0; c < chunks; ++c) {
        Bytes want;
        std::vector<int32_t> wantCounts;
        reference::chunk(data, rowBytes, counts, c, chunks, want, wantCounts);
        int64_t partRows = int64_t(want.size()) / rowBytes;
        Bytes part((partRows + 1) * rowBytes, 0xCD);
        std::vector<int32_t> partCounts(counts.size(), -1);
        ASSERT_EQ(tamoe_rt_chunk(ctx, data.data(), rows + 2, rowBytes,
                                 counts.data(), intptr_t(counts.size()), c,
                                 chunks, part.data(), partRows,
                                 partCounts.data()),
                  TAMOE_RT_SUCCESS)
            << error();
        EXPECT_EQ(partCounts, wantCounts) << "chunk " << c;
        EXPECT_TRUE(Bytes(part.begin(), part.begin() + partRows * rowBytes) ==
                    want)
            << "chunk " << c;
        for (int64_t i = partRows * rowBytes; i < int64_t(part.size()); ++i)
          EXPECT_EQ(part[i], 0xCD) << "chunk wrote past its rows";
        for (size_t i = 0; i < counts.size(); ++i) {
          // Near-equal: within one row of n / chunks.
          EXPECT_LE(std::abs(partCounts[i] * chunks - counts[i]), chunks);
          total[i] += partCounts[i];
        }

        // Only this part's rows change in `back`.
        Bytes before = back;
        ASSERT_EQ(tamoe_rt_unchunk(ctx, part.data(), partRows, rowBytes,
                                   counts.data(), intptr_t(counts.size()), c,
                                   chunks, back.data(), rows + 2),
                  TAMOE_RT_SUCCESS)
            << error();
        Bytes alone((rows + 2) * rowBytes, 0xEE), mine;
        std::vector<int32_t> mineCounts;
        ASSERT_EQ(tamoe_rt_unchunk(ctx, part.data(), partRows, rowBytes,
                                   counts.data(), intptr_t(counts.size()), c,
                                   chunks, alone.data(), rows + 2),
                  TAMOE_RT_SUCCESS)
            << error();
        for (int64_t i = 0; i < int64_t(alone.size()); ++i)
          EXPECT_TRUE(alone[i] == 0xEE || alone[i] == data[i]) << "byte " << i;
        reference::chunk(alone, rowBytes, counts, c, chunks, mine, mineCounts);
        EXPECT_TRUE(mine == want) << "unchunk put chunk " << c << " elsewhere";
        for (int64_t i = 0; i < int64_t(back.size()); ++i)
          EXPECT_TRUE(back[i] == before[i] || back[i] == alone[i])
              << "unchunk touched another part at byte " << i;
      }
      EXPECT_EQ(total, counts);
      // Every part back: the rows exactly, the spare rows untouched.
      EXPECT_TRUE(Bytes(back.begin(), back.begin() + rows * rowBytes) ==
                  Bytes(data.begin(), data.begin() + rows * rowBytes));
      for (int64_t i = rows * rowBytes; i < int64_t(back.size()); ++i)
        EXPECT_EQ(back[i], 0xEE) << "unchunk wrote past the counts";
    }
}

TEST_F(Runtime, ChunkErrors) {
  std::vector<int32_t> counts = {5, 0, 3}, partCounts(3);
  Bytes rows(10 * 4), part(10 * 4);
  auto chunk = [&](intptr_t index, intptr_t chunks, intptr_t capacity,
                   intptr_t partCapacity, intptr_t rowBytes = 4,
                   intptr_t numCounts = 3) {
    return tamoe_rt_chunk(ctx, rows.data(), capacity, rowBytes, counts.data(),
                          numCounts, index, chunks, part.data(), partCapacity,
                          partCounts.data());
  };
  auto unchunk = [&](intptr_t index, intptr_t chunks, intptr_t capacity,
                     intptr_t partCapacity, intptr_t rowBytes = 4,
                     intptr_t numCounts = 3) {
    return tamoe_rt_unchunk(ctx, part.data(), partCapacity, rowBytes,
                            counts.data(), numCounts, index, chunks,
                            rows.data(), capacity);
  };
  for (bool forward : {true, false}) {
    std::string fn = forward ? "tamoe_rt_chunk: " : "tamoe_rt_unchunk: ";
    SCOPED_TRACE(fn);
    auto call = forward ? std::function(chunk) : std::function(unchunk);
    auto expect = [&](tamoe_rt_status_t got, tamoe_rt_status_t code,
                      const std::string &message) {
      EXPECT_EQ(got, code) << tamoe_rt_status_name(got);
      EXPECT_EQ(error(), fn + message);
    };
    expect(call(0, 0, 10, 10, 4, 3), TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "chunks must be in [1, 2147483647], got 0");
    expect(call(0, intptr_t(1) << 31, 10, 10, 4, 3),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "chunks must be in [1, 2147483647], got 2147483648");
    expect(call(2, 2, 10, 10, 4, 3), TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "chunk must be in [0, chunks), got 2 for 2 chunks");
    expect(call(-1, 2, 10, 10, 4, 3), TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "chunk must be in [0, chunks), got -1 for 2 chunks");
    expect(call(0, 2, 10, 10, 0, 3), TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "row_bytes must be >= 1, got 0");
    expect(call(0, 2, 10, 10, 4, 0), TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "num_counts must be >= 1, got 0");
    expect(call(0, 2, -1, 10, 4, 3), TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rows_capacity must be >= 0, got -1");
    expect(call(0, 2, 10, -1, 4, 3), TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "chunk_capacity must be >= 0, got -1");
    expect(call(0, 2, 7, 10, 4, 3), TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "counts sum to 8 rows but rows_capacity is 7");
    counts[2] = -1;
    expect(call(0, 2, 10, 10, 4, 3), TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "counts[2] = -1 is negative");
    counts[2] = 3;
    // Part 1 of {5, 0, 3} has 3 + 2 rows.
    if (forward)
      expect(call(1, 2, 10, 4, 4, 3), TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
             "5 rows of chunk 1 of 2 exceed chunk_capacity 4");
    else
      expect(call(1, 2, 10, 4, 4, 3), TAMOE_RT_ERROR_INVALID_ARGUMENT,
             "counts make 5 rows in chunk 1 of 2 but chunk_capacity is 4");
  }
  // Null buffers, allowed only when empty.
  auto nullChunk = [&](const void *from, const int32_t *c, void *to,
                       int32_t *toCounts, intptr_t capacity = 10) {
    return tamoe_rt_chunk(ctx, from, capacity, 4, c, 3, 0, 2, to, capacity,
                          toCounts);
  };
  std::vector<int32_t> zeros = {0, 0, 0};
  EXPECT_EQ(nullChunk(nullptr, counts.data(), part.data(), partCounts.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk: rows is null");
  EXPECT_EQ(nullChunk(rows.data(), nullptr, part.data(), partCounts.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk: counts is null");
  EXPECT_EQ(nullChunk(rows.data(), counts.data(), nullptr, partCounts.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk: chunk_rows is null");
  EXPECT_EQ(nullChunk(rows.data(), counts.data(), part.data(), nullptr),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk: chunk_counts is null");
  EXPECT_EQ(nullChunk(nullptr, zeros.data(), nullptr, partCounts.data(), 0),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(tamoe_rt_unchunk(ctx, nullptr, 10, 4, counts.data(), 3, 0, 2,
                             rows.data(), 10),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_unchunk: chunk_rows is null");
  EXPECT_EQ(tamoe_rt_unchunk(ctx, part.data(), 10, 4, nullptr, 3, 0, 2,
                             rows.data(), 10),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_unchunk: counts is null");
  EXPECT_EQ(tamoe_rt_unchunk(ctx, part.data(), 10, 4, counts.data(), 3, 0, 2,
                             nullptr, 10),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_unchunk: rows is null");
  // What a call writes may not overlap the counts it reads.
  std::vector<int32_t> inRows(10, 0);
  inRows[0] = 5, inRows[1] = 0, inRows[2] = 3;
  EXPECT_EQ(tamoe_rt_unchunk(ctx, part.data(), 10, 4, inRows.data(), 3, 0, 2,
                             inRows.data(), 10),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_unchunk: counts and rows overlap");
  EXPECT_EQ(tamoe_rt_chunk(ctx, rows.data(), 10, 4, inRows.data(), 3, 0, 2,
                           inRows.data(), 10, partCounts.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk: counts and chunk_rows overlap");
  EXPECT_EQ(tamoe_rt_chunk(ctx, rows.data(), 10, 4, counts.data(), 3, 0, 2,
                           inRows.data(), 10, inRows.data() + 4),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk: chunk_counts and chunk_rows overlap");
  // Overlaps.
  EXPECT_EQ(tamoe_rt_chunk(ctx, rows.data(), 10, 4, counts.data(), 3, 0, 2,
                           rows.data() + 4, 4, partCounts.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk: rows and chunk_rows overlap");
  EXPECT_EQ(tamoe_rt_chunk(ctx, rows.data(), 10, 4, counts.data(), 3, 0, 2,
                           part.data(), 10, counts.data() + 2),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk: counts and chunk_counts overlap");
  EXPECT_EQ(tamoe_rt_unchunk(ctx, rows.data() + 36, 1, 4, counts.data(), 3, 0,
                             2, rows.data(), 10),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_unchunk: rows and chunk_rows overlap");
  // Adjacent buffers do not overlap.
  EXPECT_EQ(tamoe_rt_unchunk(ctx, rows.data() + 32, 2, 4, zeros.data(), 3, 0, 2,
                             rows.data(), 8),
            TAMOE_RT_SUCCESS)
      << error();
}

TEST_F(Runtime, ChunkPositionsFindEachAssignmentInItsPart) {
  // A dispatch with drops: 20 tokens, top-3 over 6 experts, capacity 7.
  // Each token's row holds its index, so a part's rows say which token
  // they carry.
  Random random(44);
  const int64_t tokens = 20, k = 3, experts = 6;
  std::vector<int32_t> ids(tokens * k);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < k; ++j)
      ids[t * k + j] = int32_t((t + j * (1 + random.integer(0, 1))) % experts);
  std::vector<int32_t> data(tokens);
  std::iota(data.begin(), data.end(), 0);
  std::vector<int32_t> dispatched(tokens * k, -1), counts(experts),
      positions(tokens * k);
  int64_t dropped = 0;
  ASSERT_EQ(tamoe_rt_dispatch(ctx, data.data(), tokens, 4, ids.data(), k,
                              experts, nullptr, 7, TAMOE_RT_DROP_POSITION,
                              dispatched.data(), tokens * k, counts.data(),
                              positions.data(), &dropped),
            TAMOE_RT_SUCCESS)
      << error();
  ASSERT_GT(dropped, 0);
  for (int64_t chunks : {1, 2, 3, 8}) {
    SCOPED_TRACE(testing::Message() << chunks << " chunks");
    std::vector<int> seen(tokens * k, 0);
    for (int64_t c = 0; c < chunks; ++c) {
      std::vector<int32_t> part(tokens * k, -1), partCounts(experts),
          partPositions(tokens * k, -7);
      ASSERT_EQ(tamoe_rt_chunk(ctx, dispatched.data(), tokens * k, 4,
                               counts.data(), experts, c, chunks, part.data(),
                               tokens * k, partCounts.data()),
                TAMOE_RT_SUCCESS)
          << error();
      ASSERT_EQ(tamoe_rt_chunk_positions(ctx, positions.data(), ids.data(),
                                         tokens, k, counts.data(), experts, c,
                                         chunks, partPositions.data()),
                TAMOE_RT_SUCCESS)
          << error();
      int64_t partRows =
          std::accumulate(partCounts.begin(), partCounts.end(), int64_t(0));
      int64_t listed = 0;
      for (int64_t a = 0; a < tokens * k; ++a) {
        int32_t row = partPositions[a];
        if (row == -1)
          continue;
        ASSERT_GE(row, 0);
        ASSERT_LT(row, partRows);
        // The part's row carries the assignment's token, and the dispatch
        // kept the assignment.
        EXPECT_EQ(part[row], a / k) << "assignment " << a << ", chunk " << c;
        EXPECT_GE(positions[a], 0);
        ++seen[a];
        ++listed;
      }
      EXPECT_EQ(listed, partRows) << "chunk " << c;
    }
    // Every kept assignment in exactly one part; a dropped one in none.
    for (int64_t a = 0; a < tokens * k; ++a)
      EXPECT_EQ(seen[a], positions[a] >= 0 ? 1 : 0) << "assignment " << a;
  }
}

TEST_F(Runtime, ChunkPositionsErrors) {
  // Two tokens, top-2, three experts of 2, 1 and 0 rows.
  std::vector<int32_t> ids = {0, 1, 0, 2}, positions = {0, 2, 1, -1},
                       counts = {2, 1, 0}, out(4);
  auto call = [&](intptr_t chunk, intptr_t chunks, intptr_t tokens = 2,
                  intptr_t k = 2, intptr_t experts = 3) {
    return tamoe_rt_chunk_positions(ctx, positions.data(), ids.data(), tokens,
                                    k, counts.data(), experts, chunk, chunks,
                                    out.data());
  };
  auto expect = [&](tamoe_rt_status_t got, const std::string &message) {
    EXPECT_EQ(got, TAMOE_RT_ERROR_INVALID_ARGUMENT)
        << tamoe_rt_status_name(got);
    EXPECT_EQ(error(), "tamoe_rt_chunk_positions: " + message);
  };
  ASSERT_EQ(call(1, 2), TAMOE_RT_SUCCESS) << error();
  // Part 1 of 2: expert 0's second row (token 1), expert 1's only row.
  EXPECT_EQ(out, (std::vector<int32_t>{-1, 1, 0, -1}));
  expect(call(0, 0), "chunks must be in [1, 2147483647], got 0");
  expect(call(2, 2), "chunk must be in [0, chunks), got 2 for 2 chunks");
  expect(call(0, 2, -1), "tokens must be >= 0, got -1");
  expect(call(0, 2, 2, 0), "k must be >= 1, got 0");
  expect(call(0, 2, 2, 2, 0), "experts must be >= 1, got 0");
  expect(call(0, 2, 2, 2, intptr_t(1) << 31),
         "experts = 2147483648 exceeds the int32 expert ids");
  counts[2] = -1;
  expect(call(0, 2), "counts[2] = -1 is negative");
  counts[2] = 0;
  ids[1] = 3;
  expect(call(0, 2), "expert_ids[0, 1] = 3 is out of range [0, 3)");
  ids[1] = 1;
  positions[2] = 2;
  expect(call(0, 2), "positions[1, 0] = 2 is not a row of expert 0's block "
                     "[0, 2) of the dispatched rows");
  positions[2] = 1;
  EXPECT_EQ(tamoe_rt_chunk_positions(ctx, nullptr, ids.data(), 2, 2,
                                     counts.data(), 3, 0, 1, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk_positions: positions is null");
  EXPECT_EQ(tamoe_rt_chunk_positions(ctx, positions.data(), ids.data(), 2, 2,
                                     nullptr, 3, 0, 1, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk_positions: expert_counts is null");
  EXPECT_EQ(tamoe_rt_chunk_positions(ctx, positions.data(), nullptr, 2, 2,
                                     counts.data(), 3, 0, 1, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk_positions: expert_ids is null");
  EXPECT_EQ(tamoe_rt_chunk_positions(ctx, positions.data(), ids.data(), 2, 2,
                                     counts.data(), 3, 0, 1, nullptr),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk_positions: chunk_positions is null");
  expect(call(0, 2, intptr_t(1) << 62, 2),
         "tokens * k * 4 = 4611686018427387904 * 2 * 4 overflows");
  // What it writes may not overlap what it reads.
  EXPECT_EQ(tamoe_rt_chunk_positions(ctx, positions.data(), ids.data(), 2, 2,
                                     counts.data(), 3, 0, 1, positions.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(),
            "tamoe_rt_chunk_positions: positions and chunk_positions overlap");
  EXPECT_EQ(tamoe_rt_chunk_positions(ctx, positions.data(), ids.data(), 2, 2,
                                     counts.data(), 3, 0, 1, ids.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(),
            "tamoe_rt_chunk_positions: expert_ids and chunk_positions overlap");
  std::vector<int32_t> shared = {2, 1, 0, 0};
  EXPECT_EQ(tamoe_rt_chunk_positions(ctx, positions.data(), ids.data(), 2, 2,
                                     shared.data(), 3, 0, 1, shared.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_chunk_positions: expert_counts and "
                     "chunk_positions overlap");
  // No tokens: nothing to read or write.
  EXPECT_EQ(tamoe_rt_chunk_positions(ctx, nullptr, nullptr, 0, 2, counts.data(),
                                     3, 0, 1, nullptr),
            TAMOE_RT_SUCCESS)
      << error();
}

/// Random top-k routing of `tokens` tokens over `experts` experts with a
/// capacity, so that some positions are -1.
reference::Dispatch routed(Random &random, const Bytes &data, int64_t rowBytes,
                           int64_t tokens, int64_t experts, int64_t k,
                           int64_t capacity, std::vector<int32_t> &ids) {
  reference::Gate gate = reference::gate(random.floats(tokens * experts),
                                         tokens, experts, k, false, true);
  ids = gate.ids;
  return reference::dispatch(data, rowBytes, ids, k, experts, capacity);
}

TEST_F(Runtime, DedupPackAgainstReference) {
  Random random(51);
  int64_t tokens = 30, rowBytes = 20, nodes = 3, perNode = 4, k = 3;
  Bytes data = random.bytes(tokens * rowBytes);
  std::vector<int32_t> ids;
  reference::Dispatch layout =
      routed(random, data, rowBytes, tokens, nodes * perNode, k, 6, ids);
  ASSERT_GT(layout.dropped, 0);
  int64_t capacity = tokens * std::min(k, nodes);
  Bytes unique(capacity * rowBytes);
  std::vector<int32_t> routes(capacity * k, -9), counts(nodes, -9);
  ASSERT_EQ(tamoe_rt_dedup_pack(ctx, data.data(), tokens, rowBytes, ids.data(),
                                layout.positions.data(), k, perNode, nodes,
                                unique.data(), routes.data(), capacity,
                                counts.data()),
            TAMOE_RT_SUCCESS)
      << error();
  reference::Pack want = reference::dedupPack(
      data, rowBytes, ids, layout.positions, k, perNode, nodes);
  EXPECT_EQ(counts, want.nodeCounts);
  int64_t rows = int64_t(want.unique.size()) / rowBytes;
  EXPECT_TRUE(Bytes(unique.begin(), unique.begin() + rows * rowBytes) ==
              want.unique);
  EXPECT_EQ(std::vector<int32_t>(routes.begin(), routes.begin() + rows * k),
            want.routes);

  // Too small a capacity; an id out of range (only dispatched ones count).
  EXPECT_EQ(tamoe_rt_dedup_pack(ctx, data.data(), tokens, rowBytes, ids.data(),
                                layout.positions.data(), k, perNode, nodes,
                                unique.data(), routes.data(), rows - 1,
                                counts.data()),
            TAMOE_RT_ERROR_CAPACITY_EXCEEDED);
  EXPECT_EQ(error(), "tamoe_rt_dedup_pack: " + std::to_string(rows) +
                         " unique rows exceed unique_capacity " +
                         std::to_string(rows - 1));
  std::vector<int32_t> positions = layout.positions;
  ids[4] = 12;
  positions[4] = 0;
  EXPECT_EQ(tamoe_rt_dedup_pack(ctx, data.data(), tokens, rowBytes, ids.data(),
                                positions.data(), k, perNode, nodes,
                                unique.data(), routes.data(), capacity,
                                counts.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_dedup_pack: expert_ids[1, 1] = 12 is out of "
                     "range [0, 12) (4 experts on each of 3 nodes)");
  positions[4] = -1;
  EXPECT_EQ(tamoe_rt_dedup_pack(ctx, data.data(), tokens, rowBytes, ids.data(),
                                positions.data(), k, perNode, nodes,
                                unique.data(), routes.data(), capacity,
                                counts.data()),
            TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_dedup_pack(ctx, data.data(), tokens, rowBytes, ids.data(),
                                positions.data(), k, 0, nodes, unique.data(),
                                routes.data(), capacity, counts.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_dedup_pack: experts_per_node must be >= 1, "
                     "got 0");
}

TEST_F(Runtime, DedupExpandAgainstReference) {
  Random random(52);
  int64_t rowBytes = 16, nodes = 3, perNode = 2, perRank = 2, k = 3;
  int64_t experts = nodes * perNode * perRank;
  // What relay node 1 receives: each source node's rows for node 1.
  Bytes unique;
  std::vector<int32_t> routes, recvCounts;
  for (int64_t source = 0; source < nodes; ++source) {
    int64_t tokens = 12 + source;
    Bytes data = random.bytes(tokens * rowBytes);
    std::vector<int32_t> ids;
    reference::Dispatch layout =
        routed(random, data, rowBytes, tokens, experts, k, -1, ids);
    reference::Pack pack = reference::dedupPack(
        data, rowBytes, ids, layout.positions, k, perNode * perRank, nodes);
    int64_t first = pack.nodeCounts[0], rows = pack.nodeCounts[1];
    unique.insert(unique.end(), pack.unique.begin() + first * rowBytes,
                  pack.unique.begin() + (first + rows) * rowBytes);
    routes.insert(routes.end(), pack.routes.begin() + first * k,
                  pack.routes.begin() + (first + rows) * k);
    recvCounts.push_back(int32_t(rows));
  }
  int64_t rows = int64_t(unique.size()) / rowBytes;
  reference::Expand want = reference::dedupExpand(unique, routes, rowBytes, k,
                                                  recvCounts, perNode, perRank);
  int64_t expandedRows = int64_t(want.expanded.size()) / rowBytes;
  ASSERT_GT(expandedRows, rows);
  Bytes expanded((expandedRows + 1) * rowBytes, 0xEE);
  std::vector<int32_t> counts(perNode * nodes * perRank, -1);
  ASSERT_EQ(tamoe_rt_dedup_expand(ctx, unique.data(), routes.data(), rows,
                                  rowBytes, k, recvCounts.data(), nodes,
                                  perNode, perRank, expanded.data(),
                                  expandedRows, counts.data()),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(counts, want.counts);
  EXPECT_TRUE(
      Bytes(expanded.begin(), expanded.begin() + expandedRows * rowBytes) ==
      want.expanded);
  for (int64_t i = expandedRows * rowBytes; i < int64_t(expanded.size()); ++i)
    EXPECT_EQ(expanded[i], 0xEE);

  auto expand = [&](intptr_t uniqueCapacity, intptr_t expandedCapacity) {
    return tamoe_rt_dedup_expand(ctx, unique.data(), routes.data(),
                                 uniqueCapacity, rowBytes, k, recvCounts.data(),
                                 nodes, perNode, perRank, expanded.data(),
                                 expandedCapacity, counts.data());
  };
  EXPECT_EQ(expand(rows, expandedRows - 1), TAMOE_RT_ERROR_CAPACITY_EXCEEDED);
  EXPECT_EQ(error(), "tamoe_rt_dedup_expand: " + std::to_string(expandedRows) +
                         " expanded rows exceed expanded_capacity " +
                         std::to_string(expandedRows - 1));
  EXPECT_EQ(expand(rows - 1, expandedRows), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_dedup_expand: recv_counts sum to " +
                         std::to_string(rows) +
                         " rows but unique_capacity is " +
                         std::to_string(rows - 1));
  // An id that is no expert (of nodes * perNode * perRank) or -1 padding.
  for (int32_t id : {-2, int32_t(experts), 1000}) {
    routes[4] = id;
    EXPECT_EQ(expand(rows, expandedRows), TAMOE_RT_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(error(),
              "tamoe_rt_dedup_expand: routes[1, 1] = " + std::to_string(id) +
                  " is neither an expert id in [0, 12) nor -1");
  }
  recvCounts[1] = -3;
  EXPECT_EQ(expand(rows, expandedRows), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_dedup_expand: recv_counts[1] = -3 is negative");
}

/// The scratch of dedup_pack grows with its buffers (nodes + tokens), not
/// with nodes x tokens: a million nodes and 65536 tokens once needed a
/// 512 GiB table, and the allocation's failure ended the process.
TEST_F(Runtime, DedupPackScratchGrowsWithTheBuffers) {
  int64_t nodes = int64_t(1) << 20, tokens = int64_t(1) << 16, k = 2;
  Bytes data(tokens), unique(tokens * k);
  std::vector<int32_t> ids(tokens * k), positions(tokens * k, 0),
      routes(tokens * k * k, -9), counts(nodes, -9);
  // Token t to nodes t and t + 1 (one expert per node); token 3 twice to
  // node 3; token 5's second assignment dropped.
  for (int64_t t = 0; t < tokens; ++t) {
    data[t] = uint8_t(t);
    ids[t * k] = int32_t(t);
    ids[t * k + 1] = int32_t(t + 1);
  }
  ids[3 * k + 1] = 3;
  positions[5 * k + 1] = -1;
  ASSERT_EQ(tamoe_rt_dedup_pack(ctx, data.data(), tokens, 1, ids.data(),
                                positions.data(), k, 1, nodes, unique.data(),
                                routes.data(), tokens * k, counts.data()),
            TAMOE_RT_SUCCESS)
      << error();
  // Node n gets token n - 1 and token n, except that token 3 reaches node 4
  // no longer and token 5 does not reach node 6.
  EXPECT_EQ(counts[0], 1);
  EXPECT_EQ(counts[3], 2);
  EXPECT_EQ(counts[4], 1);
  EXPECT_EQ(counts[6], 1);
  EXPECT_EQ(counts[tokens], 1);
  EXPECT_EQ(counts[tokens + 1], 0);
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), int64_t(0)),
            2 * tokens - 2);
  // Rows by node, then token: node 0 {0}, node 1 {0, 1}, node 2 {1, 2},
  // node 3 {2, 3 (routed to expert 3 twice)}, node 4 {4}.
  std::vector<uint8_t> wantTokens = {0, 0, 1, 1, 2, 2, 3, 4};
  std::vector<int32_t> wantRoutes = {0, -1, 1, -1, 1, -1, 2, -1,
                                     2, -1, 3, -1, 3, 3,  4, -1};
  EXPECT_EQ(Bytes(unique.begin(), unique.begin() + 8), Bytes(wantTokens));
  EXPECT_EQ(std::vector<int32_t>(routes.begin(), routes.begin() + 16),
            wantRoutes);
}

/// An empty call of the routing ops allocates nothing per expert: no
/// buffer of one backs `experts`, which may be as large as the int32 ids.
TEST_F(Runtime, EmptyRoutingCallsAllocateNothingPerExpert) {
  long before = peakMiB();
  int32_t ids = -9;
  float weights = -9, probs = -9, loss = -1;
  EXPECT_EQ(tamoe_rt_gate(ctx, nullptr, 0, INT32_MAX, 1, TAMOE_RT_SCORE_SOFTMAX,
                          0, 0, 0, &ids, &weights, &probs),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(tamoe_rt_aux_loss(ctx, nullptr, nullptr, nullptr, 0, INT32_MAX, 1,
                              nullptr, &loss),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(loss, 0.0f);
  EXPECT_LT(peakMiB() - before, 256) << "MiB of scratch for empty calls";
  // Past the int32 ids, aux_loss refuses the count (it once ended the
  // process allocating a table of them), as the other routing ops do.
  EXPECT_EQ(tamoe_rt_aux_loss(ctx, nullptr, nullptr, nullptr, 0,
                              intptr_t(1) << 40, 1, nullptr, &loss),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_aux_loss: experts = 1099511627776 exceeds the "
                     "int32 expert ids");
}

/// The de-duplicated schedule of tamoe_rt_dispatch_dedup with the exchanges
/// done in memory: pack on every rank, across nodes, expand at the relays,
/// within the node, regroup. It must deliver what dispatch + a flat
/// exchange delivers, for every rank.
TEST_F(Runtime, DedupScheduleEqualsTheFlatExchange) {
  Random random(53);
  int64_t nodes = 3, perNode = 2, perRank = 2, k = 4, rowBytes = 8;
  int64_t ranks = nodes * perNode, experts = ranks * perRank;
  std::vector<Bytes> dispatched(ranks);
  std::vector<std::vector<int32_t>> flatCounts(ranks);
  std::vector<reference::Pack> packs(ranks);
  for (int64_t r = 0; r < ranks; ++r) {
    int64_t tokens = 10 + 3 * r;
    Bytes data = random.bytes(tokens * rowBytes);
    std::vector<int32_t> ids;
    reference::Dispatch layout =
        routed(random, data, rowBytes, tokens, experts, k, 5, ids);
    dispatched[r] = layout.rows;
    flatCounts[r] = layout.counts;
    // The runtime's pack.
    int64_t capacity = tokens * std::min(k, nodes);
    packs[r].unique.resize(capacity * rowBytes);
    packs[r].routes.resize(capacity * k);
    packs[r].nodeCounts.resize(nodes);
    ASSERT_EQ(tamoe_rt_dedup_pack(
                  ctx, data.data(), tokens, rowBytes, ids.data(),
                  layout.positions.data(), k, perNode * perRank, nodes,
                  packs[r].unique.data(), packs[r].routes.data(), capacity,
                  packs[r].nodeCounts.data()),
              TAMOE_RT_SUCCESS)
        << error();
  }
  // Across nodes: relay (n, i) gets from (s, i) its rows for node n.
  std::vector<reference::Expand> relays(ranks);
  for (int64_t relay = 0; relay < ranks; ++relay) {
    int64_t n = relay / perNode, i = relay % perNode;
    Bytes unique;
    std::vector<int32_t> routes, counts;
    for (int64_t s = 0; s < nodes; ++s) {
      const reference::Pack &pack = packs[s * perNode + i];
      int64_t first = std::accumulate(pack.nodeCounts.begin(),
                                      pack.nodeCounts.begin() + n, int64_t(0));
      int64_t rows = pack.nodeCounts[n];
      unique.insert(unique.end(), pack.unique.begin() + first * rowBytes,
                    pack.unique.begin() + (first + rows) * rowBytes);
      routes.insert(routes.end(), pack.routes.begin() + first * k,
                    pack.routes.begin() + (first + rows) * k);
      counts.push_back(int32_t(rows));
    }
    int64_t rows = int64_t(unique.size()) / rowBytes;
    int64_t capacity = rows * k;
    relays[relay].expanded.resize(std::max<int64_t>(capacity, 1) * rowBytes);
    relays[relay].counts.resize(perNode * nodes * perRank);
    ASSERT_EQ(tamoe_rt_dedup_expand(ctx, unique.data(), routes.data(), rows,
                                    rowBytes, k, counts.data(), nodes, perNode,
                                    perRank, relays[relay].expanded.data(),
                                    capacity, relays[relay].counts.data()),
              TAMOE_RT_SUCCESS)
        << error();
  }
  // Within the node, then regrouped by source rank.
  for (int64_t r = 0; r < ranks; ++r) {
    int64_t n = r / perNode;
    std::vector<Bytes> send;
    std::vector<std::vector<int32_t>> counts;
    for (int64_t i = 0; i < perNode; ++i) {
      send.push_back(relays[n * perNode + i].expanded);
      counts.push_back(relays[n * perNode + i].counts);
    }
    Bytes bySource;
    std::vector<int32_t> bySourceCounts;
    reference::allToAll(send, counts, rowBytes, nodes * perRank, r % perNode,
                        bySource, bySourceCounts);
    int64_t rows = int64_t(bySource.size()) / rowBytes;
    Bytes received(std::max<int64_t>(rows, 1) * rowBytes);
    std::vector<int32_t> recvCounts(ranks * perRank);
    ASSERT_EQ(tamoe_rt_regroup(ctx, bySource.data(), rows, rowBytes,
                               bySourceCounts.data(), perNode, nodes, perRank,
                               received.data(), recvCounts.data()),
              TAMOE_RT_SUCCESS);
    Bytes flat;
    std::vector<int32_t> flatReceived;
    reference::allToAll(dispatched, flatCounts, rowBytes, perRank, r, flat,
                        flatReceived);
    EXPECT_EQ(recvCounts, flatReceived) << "rank " << r;
    EXPECT_TRUE(Bytes(received.begin(), received.begin() + rows * rowBytes) ==
                flat)
        << "rank " << r;
  }
}

//===----------------------------------------------------------------------===//
// Collectives on a world of one
//===----------------------------------------------------------------------===//

TEST_F(Runtime, GroupedMatmulAgainstReference) {
  Random random(81);
  int64_t hidden = 6, out = 5, experts = 2;
  std::vector<int32_t> counts = {3, 0, 2, 4, 0, 1}; // [3 peers, 2 experts]
  int64_t rows = 10, capacity = 13;
  // Rows past the counts are padding: their results are zero.
  std::vector<float> in = random.floats(capacity * hidden);
  std::vector<float> weights = random.floats(experts * hidden * out);
  std::vector<float> result(capacity * out, -7.0f);
  ASSERT_EQ(tamoe_rt_grouped_matmul(ctx, TAMOE_RT_F32, in.data(), capacity,
                                    hidden, counts.data(), 6, experts,
                                    weights.data(), out, result.data()),
            TAMOE_RT_SUCCESS)
      << error();
  expectFloats(
      result,
      reference::groupedMatmul(in, hidden, counts, experts, weights, out),
      "result");
  for (int64_t i = rows * out; i < capacity * out; ++i)
    EXPECT_EQ(result[i], 0.0f);

  auto matmul = [&](intptr_t cap, intptr_t numCounts, intptr_t e,
                    const float *w) {
    return tamoe_rt_grouped_matmul(ctx, TAMOE_RT_F32, in.data(), cap, hidden,
                                   counts.data(), numCounts, e, w, out,
                                   result.data());
  };
  auto expect = [&](tamoe_rt_status_t status, const std::string &message) {
    EXPECT_EQ(status, TAMOE_RT_ERROR_INVALID_ARGUMENT) << message;
    EXPECT_EQ(error(), "tamoe_rt_grouped_matmul: " + message);
  };
  expect(matmul(9, 6, experts, weights.data()),
         "counts sum to 10 rows but rows_capacity is 9");
  expect(matmul(capacity, 5, experts, weights.data()),
         "num_counts (5) must be a multiple of experts (2)");
  expect(matmul(capacity, 6, experts, nullptr), "weights is null");
  expect(matmul(capacity, 6, 0, weights.data()), "experts must be >= 1, got 0");
  counts[2] = -2;
  expect(matmul(capacity, 6, experts, weights.data()),
         "counts[2] = -2 is negative");
}

TEST_F(Runtime, MatmulAgainstReference) {
  Random random(82);
  int64_t m = 7, k = 9, n = 5;
  std::vector<float> a = random.floats(m * k), b = random.floats(k * n);
  std::vector<float> c(m * n, -7.0f);
  // Each layout of the operands: a as [m, k] or, transposed, [k, m]; b as
  // [k, n] or [n, k] (the same buffers read the other way).
  for (bool transposeA : {false, true})
    for (bool transposeB : {false, true}) {
      SCOPED_TRACE(testing::Message() << "transpose_a " << transposeA
                                      << ", transpose_b " << transposeB);
      std::vector<float> product =
          reference::matmul(a, b, m, k, n, transposeA, transposeB);
      ASSERT_EQ(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                                a.data(), b.data(), m, k, n, transposeA,
                                transposeB, nullptr, c.data()),
                TAMOE_RT_SUCCESS)
          << error();
      expectFloats(c, product, "c");
      // With an init, accumulated into it, in place too.
      std::vector<float> init = random.floats(m * n), accumulated(m * n);
      for (int64_t i = 0; i < m * n; ++i)
        accumulated[i] = init[i] + product[i];
      ASSERT_EQ(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                                a.data(), b.data(), m, k, n, transposeA,
                                transposeB, init.data(), init.data()),
                TAMOE_RT_SUCCESS)
          << error();
      // The products add up onto the init, not the init onto their sum.
      for (int64_t i = 0; i < m * n; ++i)
        EXPECT_NEAR(init[i], accumulated[i], 1e-5)
            << "c (in place)[" << i << "]";
    }
  // Any nonzero transpose flag is "transposed".
  ASSERT_EQ(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                            a.data(), b.data(), m, k, n, 7, 0, nullptr,
                            c.data()),
            TAMOE_RT_SUCCESS);
  expectFloats(c, reference::matmul(a, b, m, k, n, true, false), "c (7)");
  // k = 0: c is the init, or zero.
  ASSERT_EQ(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                            nullptr, nullptr, m, 0, n, 0, 0, nullptr, c.data()),
            TAMOE_RT_SUCCESS)
      << error();
  expectFloats(c, std::vector<float>(m * n, 0.0f), "c (k = 0)");

  auto expect = [&](tamoe_rt_status_t status, const std::string &message) {
    EXPECT_EQ(status, TAMOE_RT_ERROR_INVALID_ARGUMENT) << message;
    EXPECT_EQ(error(), "tamoe_rt_matmul: " + message);
  };
  expect(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                         a.data(), b.data(), -1, k, n, 0, 0, nullptr, c.data()),
         "m must be >= 0, got -1");
  expect(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                         a.data(), nullptr, m, k, n, 0, 1, nullptr, c.data()),
         "b is null");
  expect(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                         a.data(), b.data(), m, k, n, 1, 0, nullptr, a.data()),
         "a and c overlap");
  // c_init may be c (an accumulation), not a part of it.
  std::vector<float> big(m * n + 1, 1.0f);
  expect(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                         a.data(), b.data(), m, k, n, 0, 0, big.data() + 1,
                         big.data()),
         "c_init and c overlap");
  expect(tamoe_rt_matmul(ctx, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                         a.data(), b.data(), INTPTR_MAX / 2, 4, n, 0, 0,
                         nullptr, c.data()),
         "m = " + std::to_string(INTPTR_MAX / 2) +
             ", k = 4, n = 5: the matrices' bytes overflow");
}

TEST(Profile, TableAtFinalize) {
  clearEnvironment();
  setenv("TAMOE_RT_PROFILE", "1", 1);
  tamoe_rt_context_t *context = nullptr;
  ASSERT_EQ(tamoe_rt_init(nullptr, &context), TAMOE_RT_SUCCESS);
  unsetenv("TAMOE_RT_PROFILE");
  std::vector<float> a(6, 1.0f), b(6, 2.0f), c(4);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(tamoe_rt_matmul(context, TAMOE_RT_F32, TAMOE_RT_F32, TAMOE_RT_F32,
                              a.data(), b.data(), 2, 3, 2, 0, 0, nullptr,
                              c.data()),
              TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_map(context, TAMOE_RT_MAP_RELU, TAMOE_RT_F32, a.data(),
                         nullptr, 6, a.data()),
            TAMOE_RT_SUCCESS);
  testing::internal::CaptureStderr();
  EXPECT_EQ(tamoe_rt_finalize(context), TAMOE_RT_SUCCESS);
  std::string table = testing::internal::GetCapturedStderr();
  EXPECT_NE(table.find("tamoe_rt profile, rank 0 of 1, cpu backend"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("| tamoe_rt_matmul | 3 | "), std::string::npos)
      << table;
  EXPECT_NE(table.find("| tamoe_rt_map | 1 | "), std::string::npos) << table;
  EXPECT_EQ(table.find("tamoe_rt_gate"), std::string::npos) << table;
}

// The counts a chunked layer's parts received, summed: in place too; a sum
// past int32 is refused before anything is written.
TEST_F(Runtime, AddCounts) {
  std::vector<int32_t> a = {0, 5, 7, INT32_MAX - 1}, b = {3, 0, -2, 1};
  std::vector<int32_t> out(4, -99);
  ASSERT_EQ(tamoe_rt_add_counts(ctx, a.data(), b.data(), 4, out.data()),
            TAMOE_RT_SUCCESS);
  EXPECT_EQ(out, (std::vector<int32_t>{3, 5, 5, INT32_MAX}));
  ASSERT_EQ(tamoe_rt_add_counts(ctx, a.data(), b.data(), 4, a.data()),
            TAMOE_RT_SUCCESS);
  EXPECT_EQ(a, out);
  ASSERT_EQ(tamoe_rt_add_counts(ctx, nullptr, nullptr, 0, nullptr),
            TAMOE_RT_SUCCESS);

  std::vector<int32_t> before = out;
  EXPECT_EQ(tamoe_rt_add_counts(ctx, out.data(), b.data(), 4, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_add_counts: a[3] + b[3] = 2147483647 + 1 does "
                     "not fit in int32");
  EXPECT_EQ(out, before) << "nothing written";
  std::vector<int32_t> low = {INT32_MIN}, minusOne = {-1};
  EXPECT_EQ(
      tamoe_rt_add_counts(ctx, low.data(), minusOne.data(), 1, out.data()),
      TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_add_counts: a[0] + b[0] = -2147483648 + -1 "
                     "does not fit in int32");
  EXPECT_EQ(tamoe_rt_add_counts(ctx, a.data(), nullptr, 4, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_add_counts: b is null");
  EXPECT_EQ(tamoe_rt_add_counts(ctx, a.data(), b.data(), -1, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_add_counts: n must be >= 0, got -1");
  // In place is fine (above); a shifted overlap would read sums already
  // written.
  std::vector<int32_t> both = {1, 2, 3, 4, 5};
  EXPECT_EQ(tamoe_rt_add_counts(ctx, both.data(), b.data(), 4, both.data() + 1),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_add_counts: out and a overlap");
  EXPECT_EQ(tamoe_rt_add_counts(ctx, a.data(), both.data() + 1, 4, both.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_add_counts: out and b overlap");
  EXPECT_EQ(both, (std::vector<int32_t>{1, 2, 3, 4, 5})) << "nothing written";
}

TEST_F(Runtime, CountsTotal) {
  // Summed in int64: counts near INT32_MAX add past it.
  std::vector<int32_t> counts = {3, 0, INT32_MAX, INT32_MAX};
  intptr_t total = -1;
  ASSERT_EQ(tamoe_rt_counts_total(ctx, counts.data(), 4, &total),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(total, intptr_t(3) + 2 * intptr_t(INT32_MAX));
  ASSERT_EQ(tamoe_rt_counts_total(ctx, nullptr, 0, &total), TAMOE_RT_SUCCESS);
  EXPECT_EQ(total, 0);

  // A negative count counts as none: the exchange it sizes checks, on
  // every rank, that what arrives fits.
  std::vector<int32_t> negative = {4, -2};
  ASSERT_EQ(tamoe_rt_counts_total(ctx, negative.data(), 2, &total),
            TAMOE_RT_SUCCESS);
  EXPECT_EQ(total, 4);
  total = -1;
  EXPECT_EQ(
      tamoe_rt_counts_total(ctx, counts.data(), intptr_t(1) << 62, &total),
      TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_counts_total: n * 4 = 4611686018427387904 * 4 "
                     "overflows");
  EXPECT_EQ(total, -1) << "nothing written";
  EXPECT_EQ(tamoe_rt_counts_total(ctx, counts.data(), -1, &total),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_counts_total: n must be >= 0, got -1");
  EXPECT_EQ(tamoe_rt_counts_total(ctx, nullptr, 2, &total),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_counts_total: counts is null");
  EXPECT_EQ(tamoe_rt_counts_total(ctx, counts.data(), 4, nullptr),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_counts_total: total is null");
}

TEST_F(Runtime, MapAgainstReference) {
  std::vector<float> a = {1.5f, -2.0f, 0.0f, -0.0f, 3.0f, NAN};
  std::vector<float> b = {0.5f, 4.0f, -1.0f, 2.0f, -3.0f, 1.0f};
  int64_t n = int64_t(a.size());
  std::vector<float> out(n);
  // The unary ops get no b.
  auto run = [&](tamoe_rt_map_t op) {
    bool unary = op == TAMOE_RT_MAP_RELU || op == TAMOE_RT_MAP_NEG;
    EXPECT_EQ(tamoe_rt_map(ctx, op, TAMOE_RT_F32, a.data(),
                           unary ? nullptr : b.data(), n, out.data()),
              TAMOE_RT_SUCCESS)
        << error();
    return out;
  };
  std::vector<float> add = run(TAMOE_RT_MAP_ADD), sub = run(TAMOE_RT_MAP_SUB),
                     mul = run(TAMOE_RT_MAP_MUL), relu = run(TAMOE_RT_MAP_RELU),
                     neg = run(TAMOE_RT_MAP_NEG),
                     reluGrad = run(TAMOE_RT_MAP_RELU_GRAD);
  for (int64_t i = 0; i + 1 < n; ++i) {
    EXPECT_EQ(add[i], a[i] + b[i]) << i;
    EXPECT_EQ(sub[i], a[i] - b[i]) << i;
    EXPECT_EQ(mul[i], a[i] * b[i]) << i;
    EXPECT_EQ(relu[i], a[i] > 0 ? a[i] : 0.0f) << i;
    EXPECT_EQ(neg[i], -a[i]) << i;
    EXPECT_EQ(reluGrad[i], a[i] > 0 ? b[i] : 0.0f) << i;
  }
  EXPECT_FALSE(std::signbit(relu[3])) << "relu(-0) is +0";
  EXPECT_TRUE(std::isnan(relu[n - 1])) << "relu(NaN) is NaN";
  EXPECT_TRUE(std::signbit(neg[2]) && !std::signbit(neg[3])) << "-(+-0)";
  EXPECT_TRUE(std::isnan(neg[n - 1])) << "-NaN is NaN";
  // relu's gradient: none through an input of 0 or NaN; a NaN gradient
  // where the input is positive passes.
  EXPECT_EQ(reluGrad[2], 0.0f);
  EXPECT_EQ(reluGrad[n - 1], 0.0f) << "a NaN input passes no gradient";
  std::vector<float> nanGrad = {NAN, NAN};
  ASSERT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_RELU_GRAD, TAMOE_RT_F32, a.data(),
                         nanGrad.data(), 2, out.data()),
            TAMOE_RT_SUCCESS);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_EQ(out[1], 0.0f);
  // In place.
  ASSERT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_ADD, TAMOE_RT_F32, a.data(),
                         b.data(), n, a.data()),
            TAMOE_RT_SUCCESS);
  EXPECT_EQ(a[0], 2.0f);

  EXPECT_EQ(tamoe_rt_map(ctx, tamoe_rt_map_t(9), TAMOE_RT_F32, a.data(),
                         b.data(), n, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_map: op 9 is not a tamoe_rt_map_t");
  EXPECT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_MUL, TAMOE_RT_F32, a.data(), nullptr,
                         n, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_map: b is null");
  EXPECT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_RELU_GRAD, TAMOE_RT_F32, a.data(),
                         nullptr, n, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_map: b is null");
  EXPECT_EQ(tamoe_rt_map(ctx, tamoe_rt_map_t(8), TAMOE_RT_F32, a.data(),
                         b.data(), n, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_map: op 8 is not a tamoe_rt_map_t");
  EXPECT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_SILU_GRAD, TAMOE_RT_F32, a.data(),
                         nullptr, n, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_map: b is null");
  EXPECT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_RELU, TAMOE_RT_F32, a.data(),
                         nullptr, -3, out.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_map: n must be >= 0, got -3");
}

TEST_F(Runtime, SiluAndItsGradient) {
  // silu(x) = x / (1 + exp(-x)), against a double computation, and at the
  // ends of the range: no overflow to NaN, -0 far left, x far right.
  std::vector<float> x = {-3.0f, -0.5f, 0.0f,    0.25f,
                          2.0f,  7.5f,  -120.0f, 120.0f};
  int64_t n = int64_t(x.size());
  std::vector<float> silu(n), grad(n), ones(n, 1.0f);
  ASSERT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_SILU, TAMOE_RT_F32, x.data(),
                         nullptr, n, silu.data()),
            TAMOE_RT_SUCCESS)
      << error();
  ASSERT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_SILU_GRAD, TAMOE_RT_F32, x.data(),
                         ones.data(), n, grad.data()),
            TAMOE_RT_SUCCESS)
      << error();
  for (int64_t i = 0; i < n; ++i) {
    double s = 1.0 / (1.0 + std::exp(-double(x[i])));
    EXPECT_NEAR(silu[i], x[i] * s, 1e-6 * std::max(1.0, std::fabs(x[i] * s)))
        << x[i];
    EXPECT_NEAR(grad[i], s * (1 + x[i] * (1 - s)), 1e-6) << x[i];
    EXPECT_TRUE(std::isfinite(silu[i]) && std::isfinite(grad[i])) << x[i];
  }
  EXPECT_EQ(silu[6], 0.0f);
  EXPECT_EQ(silu[7], 120.0f);

  // The gradient against central finite differences of the runtime's own
  // silu, times an upstream gradient b.
  Random random(97);
  std::vector<float> a = random.floats(64, -4, 4), b = random.floats(64);
  float h = 1e-2f;
  std::vector<float> plus(a), minus(a), fPlus(64), fMinus(64), dA(64);
  for (int i = 0; i < 64; ++i) {
    plus[i] += h;
    minus[i] -= h;
  }
  ASSERT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_SILU, TAMOE_RT_F32, plus.data(),
                         nullptr, 64, fPlus.data()),
            TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_SILU, TAMOE_RT_F32, minus.data(),
                         nullptr, 64, fMinus.data()),
            TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_SILU_GRAD, TAMOE_RT_F32, a.data(),
                         b.data(), 64, dA.data()),
            TAMOE_RT_SUCCESS);
  for (int i = 0; i < 64; ++i) {
    double fd =
        b[i] * (double(fPlus[i]) - fMinus[i]) / (double(plus[i]) - minus[i]);
    EXPECT_NEAR(dA[i], fd, 2e-3 * std::max(1.0, std::fabs(fd))) << a[i];
  }
}

TEST_F(Runtime, AllToAllOnOneRank) {
  Random random(61);
  int64_t rowBytes = 40, split = 3;
  std::vector<int32_t> counts = {4, 0, 7};
  Bytes send = random.bytes(11 * rowBytes);
  for (int schedule = 0; schedule < 2; ++schedule) {
    Bytes received(12 * rowBytes, 0);
    std::vector<int32_t> recvCounts(3, -1);
    tamoe_rt_status_t status =
        schedule == 0
            ? tamoe_rt_all_to_all(ctx, TAMOE_RT_GROUP_WORLD, send.data(), 11,
                                  rowBytes, counts.data(), 1, split,
                                  received.data(), 12, recvCounts.data())
            : tamoe_rt_all_to_all_hierarchical(
                  ctx, send.data(), 11, rowBytes, counts.data(), split,
                  received.data(), 12, recvCounts.data());
    ASSERT_EQ(status, TAMOE_RT_SUCCESS) << error();
    EXPECT_EQ(recvCounts, counts);
    EXPECT_TRUE(Bytes(received.begin(), received.begin() + 11 * rowBytes) ==
                send);
  }
  for (tamoe_rt_group_t group : {TAMOE_RT_GROUP_NODE, TAMOE_RT_GROUP_PEERS}) {
    Bytes received(11 * rowBytes);
    std::vector<int32_t> recvCounts(3);
    ASSERT_EQ(tamoe_rt_all_to_all(ctx, group, send.data(), 11, rowBytes,
                                  counts.data(), 1, split, received.data(), 11,
                                  recvCounts.data()),
              TAMOE_RT_SUCCESS)
        << error();
    EXPECT_TRUE(received == send);
  }
  // The counts alone.
  std::vector<int32_t> countsOnly(3, -1);
  intptr_t total = -1;
  ASSERT_EQ(tamoe_rt_all_to_all_counts(ctx, TAMOE_RT_GROUP_WORLD, counts.data(),
                                       1, split, countsOnly.data(), &total),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(countsOnly, counts);
  EXPECT_EQ(total, 11);
  // Nothing is sent to another rank.
  tamoe_rt_traffic_t traffic;
  tamoe_rt_traffic(ctx, &traffic);
  EXPECT_EQ(traffic.intra_node_bytes + traffic.inter_node_bytes, 0);
  // An empty exchange with no buffers at all.
  std::vector<int32_t> zero = {0}, recvZero = {-1};
  ASSERT_EQ(tamoe_rt_all_to_all(ctx, TAMOE_RT_GROUP_WORLD, nullptr, 0, 8,
                                zero.data(), 1, 1, nullptr, 0, recvZero.data()),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(recvZero[0], 0);
}

/// An output laid over an input would rewrite the ids, positions or counts
/// the backend reads again after checking them (out-of-range reads and
/// writes), or inputs not yet read: every such call is refused, in place
/// maps excepted.
TEST_F(Runtime, OutputsOverlappingInputsAreRefused) {
  std::vector<float> buffer(64, 0.0f);
  float *f = buffer.data();
  auto *i = reinterpret_cast<int32_t *>(buffer.data());
  int64_t dropped = 0;
  auto expect = [&](tamoe_rt_status_t status, const std::string &message) {
    EXPECT_EQ(status, TAMOE_RT_ERROR_INVALID_ARGUMENT) << message;
    EXPECT_EQ(error(), message);
  };
  expect(tamoe_rt_gate(ctx, f, 2, 4, 2, TAMOE_RT_SCORE_SOFTMAX, 0, 0, 0, i + 1,
                       f + 32, f + 40),
         "tamoe_rt_gate: expert_ids and logits overlap");
  expect(tamoe_rt_dispatch(ctx, f, 4, 4, i + 32, 1, 2, nullptr, -1,
                           TAMOE_RT_DROP_POSITION, f + 2, 4, i + 40, i + 48,
                           &dropped),
         "tamoe_rt_dispatch: dispatched and tokens overlap");
  expect(tamoe_rt_combine(ctx, TAMOE_RT_F32, f + 32, 2, 2, i, nullptr, 2, 1, f),
         "tamoe_rt_combine: combined and positions overlap");
  expect(tamoe_rt_grouped_matmul(ctx, TAMOE_RT_F32, f + 32, 4, 1, i, 2, 1,
                                 f + 40, 1, f),
         "tamoe_rt_grouped_matmul: result and counts overlap");
  expect(tamoe_rt_map(ctx, TAMOE_RT_MAP_ADD, TAMOE_RT_F32, f, f + 32, 4, f + 1),
         "tamoe_rt_map: out and a overlap");
  expect(tamoe_rt_gate_grad(ctx, f + 32, i, 2, 4, 1, TAMOE_RT_SCORE_SOFTMAX, 0,
                            f + 48, nullptr, f),
         "tamoe_rt_gate_grad: d_logits and expert_ids overlap");
  expect(tamoe_rt_combine_grad(ctx, TAMOE_RT_F32, nullptr, 2, 2, i, nullptr, 2,
                               1, f + 32, f, nullptr),
         "tamoe_rt_combine_grad: d_expert_outputs and positions overlap");
  expect(tamoe_rt_grouped_matmul_grad(ctx, TAMOE_RT_F32, f + 32, 4, 1, i, 2, 1,
                                      f + 40, 1, f + 48, f, nullptr),
         "tamoe_rt_grouped_matmul_grad: d_rows and counts overlap");
  expect(tamoe_rt_regroup(ctx, f + 32, 4, 4, i, 2, 1, 1, f, i + 48),
         "tamoe_rt_regroup: regrouped and counts overlap");
  expect(tamoe_rt_chunk(ctx, f, 4, 4, i + 32, 2, 0, 2, f + 40, 4, i + 2),
         "tamoe_rt_chunk: rows and chunk_counts overlap");
  expect(tamoe_rt_dedup_pack_grad(ctx, TAMOE_RT_F32, f + 32, 2, 2, i + 48,
                                  i + 56, 2, 1, 2, 1, f + 55),
         "tamoe_rt_dedup_pack_grad: d_tokens and positions overlap");
  expect(tamoe_rt_dedup_expand_grad(ctx, TAMOE_RT_F32, f + 32, 2, 2, i, 2, 1,
                                    i + 48, 1, 1, 2, f),
         "tamoe_rt_dedup_expand_grad: d_unique and routes overlap");
  expect(tamoe_rt_dispatch_dedup(ctx, f, 2, 4, i + 48, i + 56, 1, 2, f + 1, 4,
                                 i + 40),
         "tamoe_rt_dispatch_dedup: rank 0: received and tokens overlap");
  // In place is an exact alias, which maps take.
  std::vector<float> a = {1, 2, 3, 4}, b = {1, 1, 1, 1};
  ASSERT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_ADD, TAMOE_RT_F32, a.data(),
                         b.data(), 4, a.data()),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(a, (std::vector<float>{2, 3, 4, 5}));
}

TEST_F(Runtime, AllToAllErrorsOnOneRank) {
  Bytes send(10 * 8), received(10 * 8, 0x5A);
  std::vector<int32_t> counts = {6, 4}, recvCounts(2, -1);
  using Exchange = std::function<tamoe_rt_status_t(
      const void *, intptr_t, intptr_t, const int32_t *, intptr_t, void *,
      intptr_t, int32_t *)>;
  std::vector<std::pair<std::string, Exchange>> schedules = {
      {"tamoe_rt_all_to_all",
       [&](const void *s, intptr_t sc, intptr_t rb, const int32_t *c,
           intptr_t split, void *r, intptr_t rc, int32_t *rcounts) {
         return tamoe_rt_all_to_all(ctx, TAMOE_RT_GROUP_WORLD, s, sc, rb, c, 1,
                                    split, r, rc, rcounts);
       }},
      {"tamoe_rt_all_to_all_hierarchical",
       [&](const void *s, intptr_t sc, intptr_t rb, const int32_t *c,
           intptr_t split, void *r, intptr_t rc, int32_t *rcounts) {
         return tamoe_rt_all_to_all_hierarchical(ctx, s, sc, rb, c, split, r,
                                                 rc, rcounts);
       }},
  };
  for (auto &[name, exchange] : schedules) {
    SCOPED_TRACE(name);
    std::fill(received.begin(), received.end(), 0x5A);
    std::fill(recvCounts.begin(), recvCounts.end(), -1);
    auto expect = [&](tamoe_rt_status_t got, tamoe_rt_status_t code,
                      const std::string &message) {
      EXPECT_EQ(got, code) << tamoe_rt_status_name(got);
      EXPECT_EQ(error(), name + ": " + message);
    };
    expect(exchange(send.data(), 10, 8, counts.data(), 2, received.data(), 9,
                    recvCounts.data()),
           TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
           "rank 0: 10 rows to receive exceed recv_capacity 9");
    for (unsigned char byte : received)
      EXPECT_EQ(byte, 0x5A) << "a row moved";
    EXPECT_EQ(recvCounts, (std::vector<int32_t>{-1, -1}));
    expect(exchange(send.data(), 9, 8, counts.data(), 2, received.data(), 10,
                    recvCounts.data()),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rank 0: send_counts sum to 10 rows but send_capacity is 9");
    std::vector<int32_t> negative = {6, -3};
    expect(exchange(send.data(), 10, 8, negative.data(), 2, received.data(), 10,
                    recvCounts.data()),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rank 0: send_counts[0, 1] = -3 is negative");
    expect(exchange(nullptr, 10, 8, counts.data(), 2, received.data(), 10,
                    recvCounts.data()),
           TAMOE_RT_ERROR_INVALID_ARGUMENT, "rank 0: send is null");
    expect(exchange(send.data(), 10, 8, counts.data(), 0, received.data(), 10,
                    recvCounts.data()),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rank 0: split must be in [1, 2147483647], got 0");
    for (intptr_t split : {intptr_t(-1), intptr_t(1) << 40})
      expect(exchange(send.data(), 10, 8, counts.data(), split, received.data(),
                      10, recvCounts.data()),
             TAMOE_RT_ERROR_INVALID_ARGUMENT,
             "rank 0: split must be in [1, 2147483647], got " +
                 std::to_string(split));
    expect(exchange(send.data(), 10, 0, counts.data(), 2, received.data(), 10,
                    recvCounts.data()),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rank 0: row_bytes must be in [1, 2147483647], got 0");
    expect(exchange(send.data(), 10, 8, counts.data(), 2, send.data() + 8, 10,
                    recvCounts.data()),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rank 0: received and send overlap");
    // What is written overlaps nothing else: the counts in a row buffer
    // (send_counts valid there, so that only the overlap is wrong).
    auto *countsInSend = reinterpret_cast<int32_t *>(send.data());
    auto *countsInReceived = reinterpret_cast<int32_t *>(received.data());
    std::memcpy(received.data(), counts.data(), 8);
    expect(exchange(send.data(), 10, 8, countsInReceived, 2, received.data(),
                    10, recvCounts.data()),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rank 0: received and send_counts overlap");
    expect(exchange(send.data(), 10, 8, counts.data(), 2, received.data(), 10,
                    countsInSend),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rank 0: recv_counts and send overlap");
    expect(exchange(send.data(), 10, 8, counts.data(), 2, received.data(), 10,
                    counts.data()),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rank 0: recv_counts and send_counts overlap");
    expect(exchange(send.data(), 10, 8, counts.data(), 2, received.data(), 10,
                    countsInReceived),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rank 0: received and recv_counts overlap");
    std::fill(received.begin(), received.end(), 0x5A);
    expect(exchange(send.data(), 10, 8, counts.data(), 2, received.data(), 10,
                    nullptr),
           TAMOE_RT_ERROR_INVALID_ARGUMENT, "rank 0: recv_counts is null");
    expect(exchange(send.data(), -1, 8, counts.data(), 2, received.data(), 10,
                    recvCounts.data()),
           TAMOE_RT_ERROR_INVALID_ARGUMENT,
           "rank 0: send_capacity must be >= 0, got -1");
    // The context stays usable after every one of these.
    ASSERT_EQ(exchange(send.data(), 10, 8, counts.data(), 2, received.data(),
                       10, recvCounts.data()),
              TAMOE_RT_SUCCESS);
  }
  EXPECT_EQ(tamoe_rt_all_to_all(ctx, tamoe_rt_group_t(5), send.data(), 10, 8,
                                counts.data(), 1, 2, received.data(), 10,
                                recvCounts.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all: group = 5 is not a "
                     "tamoe_rt_group_t");
  // Counts for a layout of another size.
  EXPECT_EQ(tamoe_rt_all_to_all(ctx, TAMOE_RT_GROUP_WORLD, send.data(), 10, 8,
                                counts.data(), 2, 1, received.data(), 10,
                                recvCounts.data()),
            TAMOE_RT_ERROR_MISMATCH);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all: rank 0: send_counts are for 2 "
                     "peers but the world group has 1 ranks (1 ranks, 1 per "
                     "node)");

  intptr_t total = -1;
  auto counts2 = [&](const int32_t *c, intptr_t peers, intptr_t split,
                     intptr_t *t, int group = TAMOE_RT_GROUP_WORLD) {
    return tamoe_rt_all_to_all_counts(ctx, tamoe_rt_group_t(group), c, peers,
                                      split, recvCounts.data(), t);
  };
  EXPECT_EQ(counts2(counts.data(), 1, 2, nullptr),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all_counts: rank 0: total is null");
  std::vector<int32_t> negative = {6, -3};
  EXPECT_EQ(counts2(negative.data(), 1, 2, &total),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all_counts: rank 0: send_counts[0, 1] "
                     "= -3 is negative");
  EXPECT_EQ(counts2(counts.data(), 3, 2, &total), TAMOE_RT_ERROR_MISMATCH);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all_counts: rank 0: send_counts are for "
                     "3 peers but the world group has 1 ranks (1 ranks, 1 per "
                     "node)");
  // The counts' shape is checked before the outputs.
  EXPECT_EQ(counts2(counts.data(), 3, 2, nullptr), TAMOE_RT_ERROR_MISMATCH);
  EXPECT_EQ(counts2(counts.data(), 1, 0, &total),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all_counts: rank 0: split must be in "
                     "[1, 2147483647], got 0");
  EXPECT_EQ(counts2(counts.data(), 1, 2, &total, 9),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all_counts: group = 9 is not a "
                     "tamoe_rt_group_t");
  EXPECT_EQ(counts2(counts.data(), 1, 2, &total), TAMOE_RT_SUCCESS);
  EXPECT_EQ(total, 10);
}

TEST_F(Runtime, AllToAllTotalsFollowCountsThroughSteps) {
  // One rank: every group is this rank alone, so an exchange gives back
  // what it sends and the totals are the sums of the steps' counts (the
  // order of entries through regroups and exchanges across ranks is
  // checked in tamoe-rt-mpi-test). Part c of n rows is
  // floor((c + 1) n / C) - floor(c n / C).
  std::vector<int32_t> whole = {0, 5, 7, 3};
  using Step = std::array<int64_t, 5>;
  constexpr int64_t kChunk = TAMOE_RT_COUNTS_CHUNK,
                    kRegroup = TAMOE_RT_COUNTS_REGROUP,
                    kExchange = TAMOE_RT_COUNTS_EXCHANGE;
  std::vector<intptr_t> totals;
  auto totalsOf = [&](const std::vector<Step> &steps,
                      tamoe_rt_group_t group = TAMOE_RT_GROUP_WORLD,
                      const int32_t *counts = nullptr) {
    std::vector<int64_t> words;
    for (const Step &step : steps)
      words.insert(words.end(), step.begin(), step.end());
    totals.assign(steps.size(), -1);
    return tamoe_rt_all_to_all_totals(
        ctx, group, counts ? counts : whole.data(), intptr_t(whole.size()),
        words.data(), intptr_t(steps.size()), totals.data());
  };
  // A hierarchical part's way there and back: chunk 1 of 3 (step 0),
  // regroup, node stage, regroup, peers stage; and part 0 from the same
  // counts, over the world.
  ASSERT_EQ(totalsOf({{kChunk, 0, 1, 3, 0},
                      {kRegroup, 1, 1, 1, 4},
                      {kExchange, 2, TAMOE_RT_GROUP_NODE, 1, 0},
                      {kRegroup, 3, 1, 1, 4},
                      {kExchange, 4, TAMOE_RT_GROUP_PEERS, 1, 0},
                      {kChunk, 0, 0, 3, 0},
                      {kExchange, 6, TAMOE_RT_GROUP_WORLD, 1, 0}}),
            TAMOE_RT_SUCCESS)
      << error();
  intptr_t part1 = 0 + 2 + 2 + 1, part0 = 0 + 1 + 2 + 1;
  EXPECT_EQ(totals, (std::vector<intptr_t>{part1, part1, part1, part1, part1,
                                           part0, part0}));
  // Over the node group, exchanges within it.
  ASSERT_EQ(totalsOf({{kChunk, 0, 1, 3, 0},
                      {kExchange, 1, TAMOE_RT_GROUP_NODE, 1, 0}},
                     TAMOE_RT_GROUP_NODE),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(totals, (std::vector<intptr_t>{part1, part1}));
  // More chunks than an entry has rows, up to many.
  for (int64_t chunks : {int64_t(10), int64_t(2147483647)}) {
    for (int64_t c : {int64_t(0), int64_t(3), chunks - 1}) {
      intptr_t want = 0;
      for (int64_t n : whole)
        want += intptr_t((c + 1) * n / chunks - c * n / chunks);
      ASSERT_EQ(totalsOf({{kChunk, 0, c, chunks, 0}}), TAMOE_RT_SUCCESS);
      EXPECT_EQ(totals[0], want) << "part " << c << " of " << chunks;
    }
  }

  // Every message, before any rank sends.
  auto expectInvalid = [&](tamoe_rt_status_t status, const std::string &want) {
    EXPECT_EQ(status, TAMOE_RT_ERROR_INVALID_ARGUMENT) << want;
    EXPECT_EQ(error(), "tamoe_rt_all_to_all_totals: rank 0: " + want);
  };
  auto call = [&](const int32_t *counts, intptr_t entries, const int64_t *steps,
                  intptr_t numSteps, intptr_t *out) {
    return tamoe_rt_all_to_all_totals(ctx, TAMOE_RT_GROUP_WORLD, counts,
                                      entries, steps, numSteps, out);
  };
  std::vector<int64_t> one = {kChunk, 0, 0, 1, 0};
  totals.assign(1, -1);
  expectInvalid(call(whole.data(), 0, one.data(), 1, totals.data()),
                "entries must be in [1, 2147483647] (int32 for every rank of "
                "the world group of 1), got 0");
  expectInvalid(
      call(whole.data(), intptr_t(1) << 31, one.data(), 1, totals.data()),
      "entries must be in [1, 2147483647] (int32 for every rank of "
      "the world group of 1), got 2147483648");
  expectInvalid(call(whole.data(), 4, one.data(), 0, totals.data()),
                "num_steps must be in [1, 65536], got 0");
  expectInvalid(call(whole.data(), 4, one.data(), 65537, totals.data()),
                "num_steps must be in [1, 65536], got 65537");
  expectInvalid(call(whole.data(), 1 << 20, one.data(), 65, totals.data()),
                "num_steps x ranks x entries = 65 x 1 x 1048576 counts exceed "
                "67108864");
  expectInvalid(call(nullptr, 4, one.data(), 1, totals.data()),
                "counts is null");
  expectInvalid(call(whole.data(), 4, nullptr, 1, totals.data()),
                "steps is null");
  expectInvalid(call(whole.data(), 4, one.data(), 1, nullptr),
                "totals is null");
  expectInvalid(totalsOf({{kChunk, 0, 0, 1, 0}, {kChunk, 2, 0, 1, 0}}),
                "steps[1]: source 2 is not the counts or an earlier step's (0 "
                "to 1)");
  expectInvalid(totalsOf({{kChunk, -1, 0, 1, 0}}),
                "steps[0]: source -1 is not the counts or an earlier step's (0 "
                "to 0)");
  expectInvalid(totalsOf({{kChunk, 0, 3, 3, 0}}),
                "steps[0]: a chunk takes {chunk, chunks, 0} with 0 <= chunk < "
                "chunks <= 2147483647, got {3, 3, 0}");
  expectInvalid(totalsOf({{kChunk, 0, 0, 0, 0}}),
                "steps[0]: a chunk takes {chunk, chunks, 0} with 0 <= chunk < "
                "chunks <= 2147483647, got {0, 0, 0}");
  expectInvalid(totalsOf({{kRegroup, 0, 2, 1, 1}}),
                "steps[0]: a regroup of [2, 1, 1] does not fit the 4 counts "
                "of its source");
  expectInvalid(totalsOf({{kRegroup, 0, int64_t(1) << 62, 4, 1}}),
                "steps[0]: a regroup of [4611686018427387904, 4, 1] does not "
                "fit the 4 counts of its source");
  expectInvalid(totalsOf({{kExchange, 0, 7, 1, 0}}),
                "steps[0]: group = 7 is not a tamoe_rt_group_t");
  expectInvalid(totalsOf({{kExchange, 0, int64_t(1) << 32, 1, 0}}),
                "steps[0]: group = 4294967296 is not a tamoe_rt_group_t");
  expectInvalid(totalsOf({{kExchange, 0, TAMOE_RT_GROUP_NODE, 2, 0}}),
                "steps[0]: an exchange over the node group takes {group, 1, "
                "0} and counts in rows of 1, got {1, 2, 0} for 4 counts");
  expectInvalid(totalsOf({{kExchange, 0, TAMOE_RT_GROUP_NODE, 1, 5}}),
                "steps[0]: an exchange over the node group takes {group, 1, "
                "0} and counts in rows of 1, got {1, 1, 5} for 4 counts");
  expectInvalid(totalsOf({{kExchange, 0, TAMOE_RT_GROUP_WORLD, 1, 0}},
                         TAMOE_RT_GROUP_NODE),
                "steps[0]: an exchange over the world group reads counts from "
                "outside the node group");
  expectInvalid(totalsOf({{9, 0, 0, 0, 0}}),
                "steps[0]: kind 9 is not a tamoe_rt_counts_step_t");
  std::vector<int32_t> negative = {1, 2, -3, 4};
  expectInvalid(
      totalsOf({{kChunk, 0, 0, 1, 0}}, TAMOE_RT_GROUP_WORLD, negative.data()),
      "counts[2] = -3 is negative");
  EXPECT_EQ(totalsOf({{kChunk, 0, 0, 1, 0}}, tamoe_rt_group_t(5)),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(),
            "tamoe_rt_all_to_all_totals: group = 5 is not a tamoe_rt_group_t");
  // The context stays usable after every one of these.
  ASSERT_EQ(totalsOf({{kChunk, 0, 0, 1, 0}}), TAMOE_RT_SUCCESS);
  EXPECT_EQ(totals[0], 15);
}

TEST_F(Runtime, AllToAllStartAndWaitOnOneRank) {
  Random random(67);
  int64_t rowBytes = 24;
  std::vector<int32_t> counts = {4, 0, 7};
  // Three in flight at once, waited in start order, each with its own
  // buffers: what tamoe_rt_all_to_all delivers.
  std::vector<Bytes> sends, receiveds;
  std::vector<std::vector<int32_t>> recvCounts;
  std::vector<tamoe_rt_exchange_t *> exchanges;
  for (int i = 0; i < 3; ++i) {
    sends.push_back(random.bytes(11 * rowBytes));
    receiveds.push_back(Bytes(12 * rowBytes, 0xAB));
    recvCounts.push_back(std::vector<int32_t>(3, -1));
  }
  for (int i = 0; i < 3; ++i) {
    tamoe_rt_exchange_t *exchange = nullptr;
    ASSERT_EQ(tamoe_rt_all_to_all_start(
                  ctx, TAMOE_RT_GROUP_WORLD, sends[i].data(), 11, rowBytes,
                  counts.data(), 1, 3, receiveds[i].data(), 12,
                  recvCounts[i].data(), &exchange),
              TAMOE_RT_SUCCESS)
        << error();
    ASSERT_NE(exchange, nullptr);
    exchanges.push_back(exchange);
  }
  // Compute while they are in flight.
  std::vector<float> a(64, 1.0f), b(64, 2.0f), out(64);
  ASSERT_EQ(tamoe_rt_map(ctx, TAMOE_RT_MAP_ADD, TAMOE_RT_F32, a.data(),
                         b.data(), 64, out.data()),
            TAMOE_RT_SUCCESS);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(tamoe_rt_all_to_all_wait(ctx, exchanges[i], sends[i].data()),
              TAMOE_RT_SUCCESS)
        << error();
    EXPECT_EQ(recvCounts[i], counts);
    EXPECT_TRUE(Bytes(receiveds[i].begin(),
                      receiveds[i].begin() + 11 * rowBytes) == sends[i]);
    for (int64_t j = 11 * rowBytes; j < 12 * rowBytes; ++j)
      EXPECT_EQ(receiveds[i][j], 0xAB) << "wrote past the rows";
  }
  // The node and peers groups, split 1.
  for (tamoe_rt_group_t group : {TAMOE_RT_GROUP_NODE, TAMOE_RT_GROUP_PEERS}) {
    std::vector<int32_t> one = {11}, oneBack = {-1};
    Bytes received(11 * rowBytes);
    tamoe_rt_exchange_t *exchange = nullptr;
    ASSERT_EQ(tamoe_rt_all_to_all_start(
                  ctx, group, sends[0].data(), 11, rowBytes, one.data(), 1, 1,
                  received.data(), 11, oneBack.data(), &exchange),
              TAMOE_RT_SUCCESS)
        << error();
    ASSERT_EQ(tamoe_rt_all_to_all_wait(ctx, exchange, sends[0].data()),
              TAMOE_RT_SUCCESS)
        << error();
    EXPECT_EQ(oneBack, one);
    EXPECT_TRUE(received == sends[0]);
  }
  tamoe_rt_traffic_t traffic;
  tamoe_rt_traffic(ctx, &traffic);
  EXPECT_EQ(traffic.intra_node_bytes + traffic.inter_node_bytes, 0);
}

/// One line of a TAMOE_RT_TIMELINE file.
struct Interval {
  std::string stream, name;
  double begin = 0, end = 0;
};

std::vector<Interval> readTimeline(const std::string &path,
                                   std::string &header) {
  std::ifstream in(path);
  std::vector<Interval> intervals;
  std::getline(in, header);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string rank, begin, end;
    Interval interval;
    std::getline(fields, rank, ',');
    std::getline(fields, interval.stream, ',');
    std::getline(fields, interval.name, ',');
    std::getline(fields, begin, ',');
    std::getline(fields, end, ',');
    interval.begin = std::stod(begin);
    interval.end = std::stod(end);
    intervals.push_back(interval);
  }
  return intervals;
}

TEST_F(Runtime, TimelineHasTheOperationsAndTheRowsBetweenStartAndWait) {
  // Per process: unit.test and unit-asan.test run this test at once.
  std::string prefix =
      testing::TempDir() + "tamoe-timeline." + std::to_string(getpid());
  setenv("TAMOE_RT_TIMELINE", prefix.c_str(), 1);
  tamoe_rt_context_t *traced = nullptr;
  tamoe_rt_status_t initialised = tamoe_rt_init(nullptr, &traced);
  unsetenv("TAMOE_RT_TIMELINE");
  ASSERT_EQ(initialised, TAMOE_RT_SUCCESS);
  int64_t rowBytes = 16;
  Bytes send(11 * rowBytes, 0x3C), received(11 * rowBytes);
  std::vector<int32_t> counts = {11}, recvCounts = {-1};
  tamoe_rt_exchange_t *exchange = nullptr;
  ASSERT_EQ(tamoe_rt_all_to_all_start(traced, TAMOE_RT_GROUP_WORLD, send.data(),
                                      11, rowBytes, counts.data(), 1, 1,
                                      received.data(), 11, recvCounts.data(),
                                      &exchange),
            TAMOE_RT_SUCCESS);
  std::vector<float> a(1 << 18, 1.0f), out(a.size());
  ASSERT_EQ(tamoe_rt_map(traced, TAMOE_RT_MAP_ADD, TAMOE_RT_F32, a.data(),
                         a.data(), intptr_t(a.size()), out.data()),
            TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_all_to_all_wait(traced, exchange, send.data()),
            TAMOE_RT_SUCCESS);
  ASSERT_EQ(tamoe_rt_finalize(traced), TAMOE_RT_SUCCESS)
      << tamoe_rt_last_error(nullptr);

  std::string header;
  std::vector<Interval> intervals = readTimeline(prefix + ".rank0.csv", header);
  std::remove((prefix + ".rank0.csv").c_str());
  EXPECT_EQ(header, "rank,stream,name,begin_us,end_us");
  std::vector<Interval> compute, comm;
  for (const Interval &interval : intervals) {
    EXPECT_LE(interval.begin, interval.end) << interval.name;
    (interval.stream == "compute" ? compute : comm).push_back(interval);
  }
  ASSERT_EQ(compute.size(), 3u);
  EXPECT_EQ(compute[0].name, "tamoe_rt_all_to_all_start");
  EXPECT_EQ(compute[1].name, "tamoe_rt_map");
  EXPECT_EQ(compute[2].name, "tamoe_rt_all_to_all_wait");
  for (size_t i = 1; i < compute.size(); ++i)
    EXPECT_LE(compute[i - 1].end, compute[i].begin) << compute[i].name;
  // The rows travel between the start's entry and the wait's return.
  ASSERT_EQ(comm.size(), 1u);
  EXPECT_EQ(comm[0].stream, "comm");
  EXPECT_EQ(comm[0].name, "rows over the world group");
  EXPECT_GE(comm[0].begin, compute[0].begin);
  EXPECT_LE(comm[0].end, compute[2].end);

  // A file that cannot be written fails finalize, which still releases
  // the context.
  setenv("TAMOE_RT_TIMELINE", "/nonexistent-dir/timeline", 1);
  initialised = tamoe_rt_init(nullptr, &traced);
  unsetenv("TAMOE_RT_TIMELINE");
  ASSERT_EQ(initialised, TAMOE_RT_SUCCESS);
  EXPECT_EQ(tamoe_rt_finalize(traced), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(tamoe_rt_last_error(nullptr)),
            "tamoe_rt_finalize: cannot write the timeline (TAMOE_RT_TIMELINE) "
            "to /nonexistent-dir/timeline.rank0.csv: No such file or "
            "directory");
}

TEST_F(Runtime, AllToAllStartAndWaitErrors) {
  int64_t rowBytes = 8;
  Bytes send(10 * rowBytes, 0x11), other(10 * rowBytes),
      received(10 * rowBytes, 0x5A);
  std::vector<int32_t> counts = {6, 4}, recvCounts(2, -1);
  auto start = [&](const void *from, intptr_t capacity,
                   tamoe_rt_exchange_t **exchange) {
    return tamoe_rt_all_to_all_start(
        ctx, TAMOE_RT_GROUP_WORLD, from, 10, rowBytes, counts.data(), 1, 2,
        received.data(), capacity, recvCounts.data(), exchange);
  };
  // The cpu backend settles in the background: a bad argument starts, and
  // the wait reports it with tamoe_rt_all_to_all's message (the rank that
  // knows why shares it), nothing moved. With no handle to give, the start
  // waits itself.
  auto failingWait = [&](const void *from, intptr_t capacity) {
    tamoe_rt_exchange_t *exchange = nullptr;
    EXPECT_EQ(start(from, capacity, &exchange), TAMOE_RT_SUCCESS) << error();
    EXPECT_NE(exchange, nullptr);
    return tamoe_rt_all_to_all_wait(ctx, exchange, from);
  };
  EXPECT_EQ(failingWait(send.data(), 9), TAMOE_RT_ERROR_CAPACITY_EXCEEDED);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all_wait: rank 0: 10 rows to receive "
                     "exceed recv_capacity 9");
  EXPECT_EQ(failingWait(nullptr, 10), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all_wait: rank 0: send is null");
  EXPECT_EQ(start(send.data(), 10, nullptr), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all_start: rank 0: exchange is null");
  // Failures before the settle are the start's, with no handle.
  tamoe_rt_exchange_t *exchange = reinterpret_cast<tamoe_rt_exchange_t *>(1);
  EXPECT_EQ(tamoe_rt_all_to_all_start(ctx, tamoe_rt_group_t(5), send.data(), 10,
                                      rowBytes, counts.data(), 1, 2,
                                      received.data(), 10, recvCounts.data(),
                                      &exchange),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all_start: group = 5 is not a "
                     "tamoe_rt_group_t");
  EXPECT_EQ(exchange, nullptr);
  for (unsigned char byte : received)
    EXPECT_EQ(byte, 0x5A) << "a row moved";
  EXPECT_EQ(recvCounts, (std::vector<int32_t>{-1, -1}));

  // Bad waits leave the exchange pending; the right one completes it.
  ASSERT_EQ(start(send.data(), 10, &exchange), TAMOE_RT_SUCCESS) << error();
  EXPECT_EQ(tamoe_rt_all_to_all_wait(ctx, nullptr, send.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_all_to_all_wait: exchange is null");
  std::ostringstream message;
  message << "tamoe_rt_all_to_all_wait: send = "
          << static_cast<const void *>(other.data())
          << " is not the buffer the exchange started with ("
          << static_cast<const void *>(send.data()) << ")";
  EXPECT_EQ(tamoe_rt_all_to_all_wait(ctx, exchange, other.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), message.str());
  // Another context does not know the handle.
  tamoe_rt_context_t *second = nullptr;
  ASSERT_EQ(tamoe_rt_init(nullptr, &second), TAMOE_RT_SUCCESS);
  std::ostringstream foreign;
  foreign << "tamoe_rt_all_to_all_wait: exchange "
          << static_cast<const void *>(exchange)
          << " is not a pending exchange of this context (waited twice?)";
  EXPECT_EQ(tamoe_rt_all_to_all_wait(second, exchange, send.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(tamoe_rt_last_error(second)), foreign.str());
  ASSERT_EQ(tamoe_rt_all_to_all_wait(ctx, exchange, send.data()),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(recvCounts, counts);
  EXPECT_TRUE(received == send);
  // Waited twice: the handle is gone, and is not touched.
  std::ostringstream twice;
  twice << "tamoe_rt_all_to_all_wait: exchange "
        << static_cast<const void *>(exchange)
        << " is not a pending exchange of this context (waited twice?)";
  EXPECT_EQ(tamoe_rt_all_to_all_wait(ctx, exchange, send.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), twice.str());
  // Nor once a later exchange is pending (whose bookkeeping may well reuse
  // the first one's memory): a handle is never given out twice.
  tamoe_rt_exchange_t *later = nullptr;
  ASSERT_EQ(start(send.data(), 10, &later), TAMOE_RT_SUCCESS) << error();
  EXPECT_NE(later, exchange);
  EXPECT_EQ(tamoe_rt_all_to_all_wait(ctx, exchange, send.data()),
            TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), twice.str());
  ASSERT_EQ(tamoe_rt_all_to_all_wait(ctx, later, send.data()), TAMOE_RT_SUCCESS)
      << error();

  // Finalizing with an exchange in flight completes it, without writing its
  // recv_counts (a program that never waited may have freed them).
  std::fill(received.begin(), received.end(), 0x5A);
  std::fill(recvCounts.begin(), recvCounts.end(), -1);
  ASSERT_EQ(tamoe_rt_all_to_all_start(second, TAMOE_RT_GROUP_WORLD, send.data(),
                                      10, rowBytes, counts.data(), 1, 2,
                                      received.data(), 10, recvCounts.data(),
                                      &exchange),
            TAMOE_RT_SUCCESS)
      << tamoe_rt_last_error(second);
  EXPECT_EQ(tamoe_rt_finalize(second), TAMOE_RT_SUCCESS);
  EXPECT_EQ(recvCounts, std::vector<int32_t>(recvCounts.size(), -1));
  EXPECT_TRUE(received == send);
}

TEST_F(Runtime, DispatchDedupOnOneRank) {
  Random random(71);
  int64_t tokens = 25, rowBytes = 12, experts = 4, k = 2;
  Bytes data = random.bytes(tokens * rowBytes);
  std::vector<int32_t> ids;
  reference::Dispatch layout =
      routed(random, data, rowBytes, tokens, experts, k, 8, ids);
  int64_t rows = int64_t(layout.rows.size()) / rowBytes;
  Bytes received(rows * rowBytes);
  std::vector<int32_t> recvCounts(experts, -1);
  ASSERT_EQ(tamoe_rt_dispatch_dedup(ctx, data.data(), tokens, rowBytes,
                                    ids.data(), layout.positions.data(), k,
                                    experts, received.data(), rows,
                                    recvCounts.data()),
            TAMOE_RT_SUCCESS)
      << error();
  EXPECT_EQ(recvCounts, layout.counts);
  EXPECT_TRUE(received == layout.rows);

  auto dedup = [&](intptr_t k2, intptr_t experts2, intptr_t capacity) {
    return tamoe_rt_dispatch_dedup(
        ctx, data.data(), tokens, rowBytes, ids.data(), layout.positions.data(),
        k2, experts2, received.data(), capacity, recvCounts.data());
  };
  EXPECT_EQ(dedup(k, experts, rows - 1), TAMOE_RT_ERROR_CAPACITY_EXCEEDED);
  EXPECT_EQ(error(),
            "tamoe_rt_dispatch_dedup: rank 0: " + std::to_string(rows) +
                " rows to receive exceed recv_capacity " +
                std::to_string(rows - 1));
  EXPECT_EQ(dedup(5, experts, rows), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_dispatch_dedup: rank 0: k must be in [1, "
                     "experts], got 5 for 4 experts");
  ids[3] = 4;
  layout.positions[3] = 0;
  EXPECT_EQ(dedup(k, experts, rows), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(error(), "tamoe_rt_dispatch_dedup: rank 0: expert_ids[1, 1] = 4 "
                     "is out of range [0, 4) (4 experts on each of 1 nodes)");
}

} // namespace

int main(int argc, char **argv) {
  // MPI outlives every context here, so that contexts can come and go (MPI
  // cannot be initialised twice).
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int result = RUN_ALL_TESTS();
  MPI_Finalize();
  return result;
}
