//===- runtime_bench.cpp - The runtime's exchanges against raw MPI --------===//
//
// Run by bench/runtime.sh under mpirun (8 ranks, 2 nodes x 4 from
// TAMOE_RANKS_PER_NODE); rank 0 prints markdown tables:
//
// 1. tamoe_rt_all_to_all against the MPI calls a program would make for the
//    same variable-count exchange (MPI_Alltoall of the counts, then
//    MPI_Alltoallv of the rows), and MPI_Alltoallv alone.
// 2. The flat, hierarchical and de-duplicated schedules of one MoE
//    dispatch, with the bytes each sent within and between nodes.
//
// A time is the slowest rank's, between two barriers; the tables give the
// median over the repetitions.
//
//   tamoe-rt-bench [--sizes 1K,64K,4M] [--reps 21] [--row-bytes 128] [--k 4]
//
//===----------------------------------------------------------------------===//

#include "tamoe_rt/tamoe_rt.h"

#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

struct Options {
  std::vector<int64_t> sizes = {1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20};
  int reps = 21;
  int64_t rowBytes = 128, k = 4, expertsPerRank = 2;
};

int64_t parseSize(const std::string &text) {
  char *end = nullptr;
  int64_t value = std::strtoll(text.c_str(), &end, 10);
  if (*end == 'K' || *end == 'k')
    value <<= 10;
  else if (*end == 'M' || *end == 'm')
    value <<= 20;
  return value;
}

bool parse(int argc, char **argv, Options &options) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--sizes") {
      options.sizes.clear();
      size_t start = 0;
      while (start <= value.size()) {
        size_t comma = value.find(',', start);
        if (comma == std::string::npos)
          comma = value.size();
        options.sizes.push_back(parseSize(value.substr(start, comma - start)));
        start = comma + 1;
      }
    } else if (flag == "--reps") {
      options.reps = std::atoi(value.c_str());
    } else if (flag == "--row-bytes") {
      options.rowBytes = std::atoll(value.c_str());
    } else if (flag == "--k") {
      options.k = std::atoll(value.c_str());
    } else {
      return false;
    }
  }
  return argc % 2 == 1 && options.reps > 0 && options.rowBytes > 0 &&
         options.k > 0;
}

void require(tamoe_rt_status_t status, tamoe_rt_context_t *ctx,
             const char *what) {
  if (status == TAMOE_RT_SUCCESS)
    return;
  std::fprintf(stderr, "%s failed: %s\n", what, tamoe_rt_last_error(ctx));
  MPI_Abort(MPI_COMM_WORLD, 1);
}

/// Calls per timed repetition: back-to-back calls, as in a training loop,
/// and less weight on the barrier before them.
constexpr int kBatch = 5;

/// Microseconds of one call of each of `runs` (kBatch calls timed, the
/// slowest rank's), median over the repetitions (every rank gets the same
/// numbers). The runs take turns within a repetition, so that a slow spell
/// of the machine hits them alike.
std::vector<double>
medianMicros(int reps, const std::vector<std::function<void()>> &runs) {
  std::vector<std::vector<double>> times(runs.size());
  for (const auto &run : runs)
    run(); // warm-up: connections, first touch of the buffers
  // Each repetition starts with another run, so that none is always the
  // one after a particular other.
  for (int rep = 0; rep < reps; ++rep)
    for (size_t turn = 0; turn < runs.size(); ++turn) {
      size_t i = (turn + size_t(rep)) % runs.size();
      MPI_Barrier(MPI_COMM_WORLD);
      double start = MPI_Wtime();
      for (int call = 0; call < kBatch; ++call)
        runs[i]();
      double local = (MPI_Wtime() - start) / kBatch, slowest = 0;
      MPI_Allreduce(&local, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      times[i].push_back(slowest * 1e6);
    }
  std::vector<double> medians;
  for (std::vector<double> &series : times) {
    std::nth_element(series.begin(), series.begin() + reps / 2, series.end());
    medians.push_back(series[reps / 2]);
  }
  return medians;
}

std::string size(int64_t bytes) {
  char text[32];
  if (bytes >= (1 << 20) && bytes % (1 << 20) == 0)
    std::snprintf(text, sizeof(text), "%lld MiB", (long long)(bytes >> 20));
  else if (bytes >= 1024 && bytes % 1024 == 0)
    std::snprintf(text, sizeof(text), "%lld KiB", (long long)(bytes >> 10));
  else
    std::snprintf(text, sizeof(text), "%lld B", (long long)bytes);
  return text;
}

std::string mib(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3f", double(bytes) / (1 << 20));
  return text;
}

/// Bytes sent by all ranks (within, between nodes) during `run`.
tamoe_rt_traffic_t worldTraffic(tamoe_rt_context_t *ctx,
                                const std::function<void()> &run) {
  tamoe_rt_reset_traffic(ctx);
  run();
  tamoe_rt_traffic_t local, total;
  tamoe_rt_traffic(ctx, &local);
  int64_t in[2] = {local.intra_node_bytes, local.inter_node_bytes}, out[2];
  MPI_Allreduce(in, out, 2, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  total.intra_node_bytes = out[0];
  total.inter_node_bytes = out[1];
  return total;
}

/// Table 1: the same uniform exchange through MPI and through the runtime.
void overhead(tamoe_rt_context_t *ctx, const Options &o) {
  int64_t ranks = tamoe_rt_num_ranks(ctx), me = tamoe_rt_rank(ctx);
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  if (me == 0) {
    std::printf("| bytes per rank | MPI_Alltoall + MPI_Alltoallv (us) | "
                "MPI_Alltoallv alone (us) | MPI_Ialltoall + MPI_Ialltoallv, "
                "polled (us) | tamoe_rt_all_to_all (us) | tamoe / blocking | "
                "tamoe / polled |\n");
    std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  }
  for (int64_t bytes : o.sizes) {
    int rowsPerPeer = int(std::max<int64_t>(bytes / (ranks * o.rowBytes), 1));
    int64_t rows = rowsPerPeer * ranks;
    std::vector<unsigned char> send(rows * o.rowBytes), received(send.size());
    std::mt19937 random(static_cast<unsigned>(me));
    for (unsigned char &byte : send)
      byte = static_cast<unsigned char>(random());
    std::vector<int32_t> counts(ranks, rowsPerPeer), recvCounts(ranks);
    std::vector<int> byteCounts(ranks), offsets(ranks), recvBytes(ranks),
        recvOffsets(ranks);
    // Nonblocking calls polled to completion, as the runtime must to bound
    // every wait with its timeout.
    auto complete = [](MPI_Request *request) {
      int done = 0;
      while (!done) {
        MPI_Test(request, &done, MPI_STATUS_IGNORE);
        if (!done)
          sched_yield();
      }
    };
    auto raw = [&](bool exchangeCounts, bool nonblocking) {
      MPI_Request request;
      if (!exchangeCounts) {
        recvCounts = counts;
      } else if (nonblocking) {
        MPI_Ialltoall(counts.data(), 1, MPI_INT32_T, recvCounts.data(), 1,
                      MPI_INT32_T, comm, &request);
        complete(&request);
      } else {
        MPI_Alltoall(counts.data(), 1, MPI_INT32_T, recvCounts.data(), 1,
                     MPI_INT32_T, comm);
      }
      for (int64_t p = 0, offset = 0, recvOffset = 0; p < ranks; ++p) {
        byteCounts[p] = int(counts[p] * o.rowBytes);
        offsets[p] = int(offset);
        offset += byteCounts[p];
        recvBytes[p] = int(recvCounts[p] * o.rowBytes);
        recvOffsets[p] = int(recvOffset);
        recvOffset += recvBytes[p];
      }
      if (nonblocking) {
        MPI_Ialltoallv(send.data(), byteCounts.data(), offsets.data(), MPI_BYTE,
                       received.data(), recvBytes.data(), recvOffsets.data(),
                       MPI_BYTE, comm, &request);
        complete(&request);
      } else {
        MPI_Alltoallv(send.data(), byteCounts.data(), offsets.data(), MPI_BYTE,
                      received.data(), recvBytes.data(), recvOffsets.data(),
                      MPI_BYTE, comm);
      }
    };
    auto runtimeCall = [&] {
      require(tamoe_rt_all_to_all(ctx, TAMOE_RT_GROUP_WORLD, send.data(), rows,
                                  o.rowBytes, counts.data(), ranks, 1,
                                  received.data(), rows, recvCounts.data()),
              ctx, "tamoe_rt_all_to_all");
    };
    // The MPI baselines against each other, then the runtime against the
    // polled calls it makes, in pairs that take turns (one four-way rotation
    // disturbs the small times more than it measures them).
    std::vector<double> mpi = medianMicros(
        o.reps, {[&] { raw(true, false); }, [&] { raw(false, false); }});
    std::vector<double> pair =
        medianMicros(o.reps, {[&] { raw(true, true); }, runtimeCall});
    double blocking = mpi[0], alone = mpi[1];
    double polled = pair[0], runtime = pair[1];
    if (me == 0)
      std::printf("| %s | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx |\n",
                  size(rows * o.rowBytes).c_str(), blocking, alone, polled,
                  runtime, runtime / blocking, runtime / polled);
  }
  MPI_Comm_free(&comm);
}

/// Table 2 and 3: one dispatch of top-k routed tokens, three schedules.
void schedules(tamoe_rt_context_t *ctx, const Options &o) {
  int64_t ranks = tamoe_rt_num_ranks(ctx), me = tamoe_rt_rank(ctx);
  int64_t experts = o.expertsPerRank * ranks, k = std::min(o.k, experts);
  struct Row {
    int64_t bytes, tokens;
    double flat, hierarchical, dedup;
    tamoe_rt_traffic_t flatBytes, hierarchicalBytes, dedupBytes;
  };
  std::vector<Row> table;
  for (int64_t bytes : o.sizes) {
    int64_t tokens = std::max<int64_t>(bytes / (k * o.rowBytes), 1);
    std::mt19937 random(static_cast<unsigned>(1000 + me));
    std::uniform_real_distribution<float> uniform(-2, 2);
    std::vector<float> logits(tokens * experts), weights(tokens * k),
        probs(tokens * experts);
    for (float &logit : logits)
      logit = uniform(random);
    std::vector<unsigned char> data(tokens * o.rowBytes);
    for (unsigned char &byte : data)
      byte = static_cast<unsigned char>(random());
    std::vector<int32_t> ids(tokens * k), positions(tokens * k),
        counts(experts);
    std::vector<unsigned char> dispatched(tokens * k * o.rowBytes);
    int64_t dropped = 0;
    require(tamoe_rt_gate(ctx, logits.data(), tokens, experts, k,
                          TAMOE_RT_SCORE_SOFTMAX, 1, 0, 0, ids.data(),
                          weights.data(), probs.data()),
            ctx, "tamoe_rt_gate");
    require(tamoe_rt_dispatch(ctx, data.data(), tokens, o.rowBytes, ids.data(),
                              k, experts, nullptr, -1, TAMOE_RT_DROP_POSITION,
                              dispatched.data(), tokens * k, counts.data(),
                              positions.data(), &dropped),
            ctx, "tamoe_rt_dispatch");
    // Routing is random: a rank may receive up to min(k, experts per rank)
    // rows of every token of every rank.
    int64_t capacity = ranks * tokens * std::min(k, o.expertsPerRank);
    std::vector<unsigned char> received(capacity * o.rowBytes);
    std::vector<int32_t> recvCounts(ranks * o.expertsPerRank);
    auto flat = [&] {
      require(tamoe_rt_all_to_all(ctx, TAMOE_RT_GROUP_WORLD, dispatched.data(),
                                  tokens * k, o.rowBytes, counts.data(), ranks,
                                  o.expertsPerRank, received.data(), capacity,
                                  recvCounts.data()),
              ctx, "tamoe_rt_all_to_all");
    };
    auto hierarchical = [&] {
      require(tamoe_rt_all_to_all_hierarchical(
                  ctx, dispatched.data(), tokens * k, o.rowBytes, counts.data(),
                  o.expertsPerRank, received.data(), capacity,
                  recvCounts.data()),
              ctx, "tamoe_rt_all_to_all_hierarchical");
    };
    auto dedup = [&] {
      require(tamoe_rt_dispatch_dedup(ctx, data.data(), tokens, o.rowBytes,
                                      ids.data(), positions.data(), k, experts,
                                      received.data(), capacity,
                                      recvCounts.data()),
              ctx, "tamoe_rt_dispatch_dedup");
    };
    Row row{tokens * k * o.rowBytes, tokens, 0, 0, 0, {}, {}, {}};
    std::vector<double> medians =
        medianMicros(o.reps, {flat, hierarchical, dedup});
    row.flat = medians[0];
    row.hierarchical = medians[1];
    row.dedup = medians[2];
    row.flatBytes = worldTraffic(ctx, flat);
    row.hierarchicalBytes = worldTraffic(ctx, hierarchical);
    row.dedupBytes = worldTraffic(ctx, dedup);
    table.push_back(row);
  }
  if (me != 0)
    return;
  std::printf("| bytes per rank | tokens per rank | flat (us) | hierarchical "
              "(us) | dedup (us) | hierarchical / flat | dedup / flat |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row &r : table)
    std::printf("| %s | %lld | %.1f | %.1f | %.1f | %.2fx | %.2fx |\n",
                size(r.bytes).c_str(), (long long)r.tokens, r.flat,
                r.hierarchical, r.dedup, r.hierarchical / r.flat,
                r.dedup / r.flat);
  std::printf("\nMeasured bytes (MiB, all ranks, one exchange; a rank's rows "
              "to itself are not counted):\n\n");
  std::printf("| bytes per rank | intra flat | intra hierarchical | intra "
              "dedup | inter flat | inter hierarchical | inter dedup | "
              "inter dedup / flat |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row &r : table)
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %.2f |\n",
                size(r.bytes).c_str(),
                mib(r.flatBytes.intra_node_bytes).c_str(),
                mib(r.hierarchicalBytes.intra_node_bytes).c_str(),
                mib(r.dedupBytes.intra_node_bytes).c_str(),
                mib(r.flatBytes.inter_node_bytes).c_str(),
                mib(r.hierarchicalBytes.inter_node_bytes).c_str(),
                mib(r.dedupBytes.inter_node_bytes).c_str(),
                double(r.dedupBytes.inter_node_bytes) /
                    double(std::max<int64_t>(r.flatBytes.inter_node_bytes, 1)));
}

} // namespace

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  Options options;
  tamoe_rt_context_t *ctx = nullptr;
  if (!parse(argc, argv, options)) {
    std::fprintf(stderr, "usage: tamoe-rt-bench [--sizes 1K,64K,4M] [--reps "
                         "N] [--row-bytes B] [--k K]\n");
    MPI_Finalize();
    return 2;
  }
  if (tamoe_rt_init(nullptr, &ctx) != TAMOE_RT_SUCCESS) {
    std::fprintf(stderr, "%s\n", tamoe_rt_last_error(nullptr));
    MPI_Finalize();
    return 1;
  }
  int64_t ranks = tamoe_rt_num_ranks(ctx),
          perNode = tamoe_rt_ranks_per_node(ctx);
  if (tamoe_rt_rank(ctx) == 0) {
    std::printf("%lld ranks (%lld nodes x %lld), %lld-byte rows, median of "
                "%d repetitions\n\n",
                (long long)ranks, (long long)(ranks / perNode),
                (long long)perNode, (long long)options.rowBytes, options.reps);
    std::printf("### Runtime overhead: one flat exchange, the same rows to "
                "every rank\n\n");
  }
  overhead(ctx, options);
  if (tamoe_rt_rank(ctx) == 0)
    std::printf("\n### Schedules: dispatch of top-%lld routed tokens over %lld "
                "experts (dropless)\n\n",
                (long long)std::min(options.k, options.expertsPerRank * ranks),
                (long long)(options.expertsPerRank * ranks));
  schedules(ctx, options);
  std::fflush(stdout);
  tamoe_rt_finalize(ctx);
  MPI_Finalize();
  return 0;
}
