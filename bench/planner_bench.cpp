//===- planner_bench.cpp - Planner run time versus cluster size -----------===//
//
// How long planning takes as the cluster grows: nodes of 8 ranks (300 GB/s)
// under one 25 GB/s-per-rank network, 8 to 4096 ranks. `plan` builds all five
// policies' patterns and costs every schedule in closed form; `routed`
// costs the explicit P x P traffic of one pattern, the path for asymmetric
// patterns.
//
//===----------------------------------------------------------------------===//

#include "tamoe/Planner/Policies.h"

#include <benchmark/benchmark.h>

using namespace tamoe::planner;
using tamoe::topology::LinkSharing;

static Topology cluster(int64_t ranks) {
  Topology topology;
  topology.name = "bench";
  topology.levels = {{"node", 8, 300, 300, 3, LinkSharing::PerRank},
                     {"cluster", ranks / 8, 25, 25, 7, LinkSharing::PerRank}};
  return topology;
}

static void plan(benchmark::State &state) {
  Topology topology = cluster(state.range(0));
  for (auto _ : state)
    for (Policy policy : allPolicies())
      benchmark::DoNotOptimize(llvm::cantFail(
          makePlan(topology, policy, PolicyOptions(), Workload())));
  state.counters["ranks"] = double(topology.numRanks());
}
BENCHMARK(plan)->Arg(8)->Arg(64)->Arg(512)->Arg(4096)->Unit(
    benchmark::kMicrosecond);

static void routed(benchmark::State &state) {
  Topology topology = cluster(state.range(0));
  Pattern pattern =
      llvm::cantFail(makePattern(topology, Policy::TAMoE, PolicyOptions()));
  Traffic traffic = expectedTraffic(topology, pattern, Workload());
  for (auto _ : state)
    benchmark::DoNotOptimize(
        evaluate(topology, traffic, Workload(), Schedule::Flat));
  state.counters["ranks"] = double(topology.numRanks());
}
BENCHMARK(routed)->Arg(8)->Arg(64)->Arg(512)->Arg(4096)->Unit(
    benchmark::kMillisecond);

BENCHMARK_MAIN();
