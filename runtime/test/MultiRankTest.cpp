//===- MultiRankTest.cpp - The runtime's collectives on many ranks --------===//
//
// Run under mpirun (test/Runtime/*.test: 8 ranks as 2 nodes x 4 and as 4
// nodes x 2, from TAMOE_RANKS_PER_NODE):
//
//   tamoe-rt-mpi-test [exchange] [dedup] [layer] [errors] [all_reduce]
//                     [timeout] [async]
//
// (exchange includes async, the checks of all_to_all_start and _wait.)
//
// Every rank generates every rank's inputs from seed + rank, so each can
// compute the whole job serially (Reference.h) and check what it got,
// including the bytes it sent within and between nodes. Rank 0 prints one
// PASS or FAIL line per scenario; the exit status is 1 when any check
// failed on any rank.
//
//===----------------------------------------------------------------------===//

#include "Reference.h"
#include "tamoe_rt/tamoe_rt.h"

#include <mpi.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using reference::Bytes;
using reference::Random;

namespace {

template <typename... Args> std::string str(const Args &...args) {
  std::ostringstream stream;
  (stream << ... << args);
  return stream.str();
}

/// Counts the checks and failures of this rank; rank 0 reports per
/// scenario.
struct Tester {
  int rank = 0, ranks = 1;
  int64_t checks = 0, failures = 0, scenarioFailures = 0;

  void check(bool ok, int line, const std::string &what) {
    ++checks;
    if (ok)
      return;
    ++failures;
    std::fprintf(stderr, "rank %d: FAIL line %d: %s\n", rank, line,
                 what.c_str());
  }
  /// Rank 0 prints the scenario's verdict once every rank is done.
  void end(const std::string &name, const std::string &summary) {
    int64_t local = failures - scenarioFailures, total = 0;
    scenarioFailures = failures;
    MPI_Allreduce(&local, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
      if (total == 0)
        std::printf("PASS %s: %s\n", name.c_str(), summary.c_str());
      else
        std::printf("FAIL %s: %lld failed checks\n", name.c_str(),
                    (long long)total);
      std::fflush(stdout);
    }
  }
};

Tester tester;

#define EXPECT(condition, ...)                                                 \
  tester.check((condition), __LINE__, str(#condition, ": ", __VA_ARGS__))
#define EXPECT_OK(call, ctx)                                                   \
  do {                                                                         \
    tamoe_rt_status_t status_ = (call);                                        \
    EXPECT(status_ == TAMOE_RT_SUCCESS, tamoe_rt_status_name(status_), " ",    \
           tamoe_rt_last_error(ctx));                                          \
  } while (0)

struct World {
  tamoe_rt_context_t *ctx;
  int64_t me, ranks, perNode, nodes;
  int64_t node(int64_t rank) const { return rank / perNode; }
  int64_t index(int64_t rank) const { return rank % perNode; }
};

tamoe_rt_traffic_t traffic(tamoe_rt_context_t *ctx) {
  tamoe_rt_traffic_t t;
  tamoe_rt_traffic(ctx, &t);
  return t;
}

tamoe_rt_traffic_t operator-(tamoe_rt_traffic_t a, tamoe_rt_traffic_t b) {
  return {a.intra_node_bytes - b.intra_node_bytes,
          a.inter_node_bytes - b.inter_node_bytes};
}

int64_t sumOver(int64_t value) {
  int64_t total = 0;
  MPI_Allreduce(&value, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  return total;
}

//===----------------------------------------------------------------------===//
// exchange: flat and hierarchical deliver the same bytes
//===----------------------------------------------------------------------===//

/// Every rank's send counts [ranks, split] and rows for one configuration.
struct Exchange {
  std::vector<std::vector<int32_t>> counts;
  std::vector<Bytes> rows;
};

Exchange makeExchange(const World &w, uint64_t seed, int64_t rowBytes,
                      int64_t split, int64_t groupSize) {
  Exchange x;
  for (int64_t r = 0; r < w.ranks; ++r) {
    Random random(seed * 1000 + r);
    std::vector<int32_t> counts(groupSize * split);
    int64_t rows = 0;
    for (int32_t &count : counts)
      rows += (count = int32_t(random.integer(0, 5)));
    // A rank that sends nothing, and one that nobody sends to.
    if (r == 1) {
      std::fill(counts.begin(), counts.end(), 0);
      rows = 0;
    }
    if (groupSize > 2)
      for (int64_t i = 0; i < split; ++i) {
        rows -= counts[2 * split + i];
        counts[2 * split + i] = 0;
      }
    x.counts.push_back(counts);
    x.rows.push_back(random.bytes(rows * rowBytes));
  }
  return x;
}

//===----------------------------------------------------------------------===//
// async: all_to_all_start + all_to_all_wait == all_to_all (part of exchange)
//===----------------------------------------------------------------------===//

/// World ranks of the members of this rank's `group` in group order, and
/// this rank's index among them.
std::vector<int64_t> groupOf(const World &w, tamoe_rt_group_t group,
                             int64_t &me) {
  std::vector<int64_t> members;
  for (int64_t r = 0; r < w.ranks; ++r)
    if (group == TAMOE_RT_GROUP_WORLD ||
        (group == TAMOE_RT_GROUP_NODE && w.node(r) == w.node(w.me)) ||
        (group == TAMOE_RT_GROUP_PEERS && w.index(r) == w.index(w.me))) {
      if (r == w.me)
        me = int64_t(members.size());
      members.push_back(r);
    }
  return members;
}

/// An exchange over `group`, its buffers (which must live until its wait)
/// and what it must deliver here.
struct InFlight {
  std::string name;
  tamoe_rt_group_t group;
  int64_t rowBytes, split, peers, recvRows;
  std::vector<int64_t> members;
  Exchange x;
  Bytes want, received;
  std::vector<int32_t> wantCounts, recvCounts;
  tamoe_rt_exchange_t *handle = nullptr;

  const Bytes &send(const World &w) const { return x.rows[w.me]; }
  int64_t sendRows(const World &w) const {
    return int64_t(send(w).size()) / rowBytes;
  }
};

InFlight inFlight(const World &w, tamoe_rt_group_t group, int64_t rowBytes,
                  int64_t split, uint64_t seed) {
  const char *groups[] = {"world", "node", "peers"};
  InFlight e;
  e.name = str(groups[group], " split ", split, " row_bytes ", rowBytes);
  e.group = group;
  e.rowBytes = rowBytes;
  e.split = split;
  int64_t me = 0;
  e.members = groupOf(w, group, me);
  e.peers = int64_t(e.members.size());
  e.x = makeExchange(w, seed, rowBytes, split, e.peers);
  std::vector<Bytes> rows;
  std::vector<std::vector<int32_t>> counts;
  for (int64_t member : e.members) {
    rows.push_back(e.x.rows[member]);
    counts.push_back(e.x.counts[member]);
  }
  reference::allToAll(rows, counts, rowBytes, split, me, e.want, e.wantCounts);
  e.recvRows = int64_t(e.want.size()) / rowBytes;
  e.received.assign((e.recvRows + 1) * rowBytes, 0xAA);
  e.recvCounts.assign(e.peers * split, -1);
  return e;
}

tamoe_rt_status_t startInFlight(const World &w, InFlight &e) {
  return tamoe_rt_all_to_all_start(
      w.ctx, e.group, e.send(w).data(), e.sendRows(w), e.rowBytes,
      e.x.counts[w.me].data(), e.peers, e.split, e.received.data(), e.recvRows,
      e.recvCounts.data(), &e.handle);
}

/// Waits for `e` and checks what arrived and the bytes it counted.
void waitAndCheck(const World &w, InFlight &e) {
  tamoe_rt_traffic_t before = traffic(w.ctx);
  EXPECT_OK(tamoe_rt_all_to_all_wait(w.ctx, e.handle, e.send(w).data()), w.ctx);
  tamoe_rt_traffic_t moved = traffic(w.ctx) - before;
  EXPECT(e.recvCounts == e.wantCounts, e.name, ": counts");
  EXPECT(Bytes(e.received.begin(),
               e.received.begin() + e.recvRows * e.rowBytes) == e.want,
         e.name, ": rows");
  EXPECT(e.received[e.recvRows * e.rowBytes] == 0xAA, e.name,
         ": wrote past the rows");
  int64_t intra = 0, inter = 0;
  for (size_t p = 0; p < e.members.size(); ++p) {
    if (e.members[p] == w.me)
      continue;
    int64_t rows = 0;
    for (int64_t i = 0; i < e.split; ++i)
      rows += e.x.counts[w.me][p * e.split + i];
    (w.node(e.members[p]) == w.node(w.me) ? intra : inter) += rows * e.rowBytes;
  }
  EXPECT(moved.intra_node_bytes == intra && moved.inter_node_bytes == inter,
         e.name, ": traffic ", moved.intra_node_bytes, " + ",
         moved.inter_node_bytes, " != ", intra, " + ", inter);
}

/// Compute while exchanges are in flight: a grouped matmul long enough to
/// progress them from inside (every 256 rows), then a map.
void computeWhileInFlight(const World &w) {
  int64_t rows = 600, hidden = 4;
  std::vector<float> x(rows * hidden, 1.0f), weights(hidden * hidden, 0.5f),
      y(rows * hidden);
  std::vector<int32_t> counts = {int32_t(rows)};
  EXPECT_OK(tamoe_rt_grouped_matmul(w.ctx, TAMOE_RT_F32, x.data(), rows, hidden,
                                    counts.data(), 1, 1, weights.data(), hidden,
                                    y.data()),
            w.ctx);
  EXPECT(y == std::vector<float>(rows * hidden, 2.0f), "grouped_matmul");
  EXPECT_OK(tamoe_rt_map(w.ctx, TAMOE_RT_MAP_ADD, TAMOE_RT_F32, x.data(),
                         y.data(), rows * hidden, y.data()),
            w.ctx);
  EXPECT(y == std::vector<float>(rows * hidden, 3.0f), "map");
}

void expectFailure(const World &w, tamoe_rt_status_t got,
                   tamoe_rt_status_t code, const std::string &message);

void asyncChecks(const World &w) {
  // Every group, split 1 and 2: what tamoe_rt_all_to_all delivers.
  for (tamoe_rt_group_t group :
       {TAMOE_RT_GROUP_WORLD, TAMOE_RT_GROUP_NODE, TAMOE_RT_GROUP_PEERS})
    for (int64_t split : {1, 2}) {
      int64_t rowBytes = split == 1 ? 16 : 12;
      InFlight e =
          inFlight(w, group, rowBytes, split, 500 + 10 * group + split);
      Bytes blocking(e.received.size(), 0xAA);
      std::vector<int32_t> blockingCounts(e.recvCounts.size(), -1);
      EXPECT_OK(tamoe_rt_all_to_all(
                    w.ctx, group, e.send(w).data(), e.sendRows(w), rowBytes,
                    e.x.counts[w.me].data(), e.peers, split, blocking.data(),
                    e.recvRows, blockingCounts.data()),
                w.ctx);
      EXPECT_OK(startInFlight(w, e), w.ctx);
      EXPECT(e.handle != nullptr, e.name, ": no handle");
      computeWhileInFlight(w);
      waitAndCheck(w, e);
      EXPECT(e.received == blocking && e.recvCounts == blockingCounts, e.name,
             ": start/wait and all_to_all differ");
    }

  // Three in flight at once over different groups, a blocking exchange and
  // compute among them, waited last first: a wait settles the exchanges
  // started before its own (round 2 goes in start order on every rank).
  std::vector<InFlight> started;
  started.push_back(inFlight(w, TAMOE_RT_GROUP_WORLD, 24, 2, 601));
  started.push_back(inFlight(w, TAMOE_RT_GROUP_NODE, 8, 1, 602));
  started.push_back(inFlight(w, TAMOE_RT_GROUP_PEERS, 40, 3, 603));
  InFlight between = inFlight(w, TAMOE_RT_GROUP_WORLD, 4, 1, 604);
  EXPECT_OK(startInFlight(w, started[0]), w.ctx);
  EXPECT_OK(startInFlight(w, started[1]), w.ctx);
  EXPECT_OK(tamoe_rt_all_to_all(w.ctx, between.group, between.send(w).data(),
                                between.sendRows(w), between.rowBytes,
                                between.x.counts[w.me].data(), between.peers, 1,
                                between.received.data(), between.recvRows,
                                between.recvCounts.data()),
            w.ctx);
  EXPECT(between.recvCounts == between.wantCounts &&
             Bytes(between.received.begin(),
                   between.received.begin() + between.recvRows * 4) ==
                 between.want,
         "the blocking exchange among those in flight");
  computeWhileInFlight(w);
  EXPECT_OK(startInFlight(w, started[2]), w.ctx);
  computeWhileInFlight(w);
  for (int i : {2, 0, 1})
    waitAndCheck(w, started[i]);

  // An exchange whose arguments are bad on one rank fails on every rank,
  // with that rank's message, and moves nothing. The settle runs in the
  // background, so the start succeeds and the wait reports the verdict;
  // the failed exchanges wait in start order, behind compute.
  int64_t rowBytes = 16;
  std::vector<int32_t> ones(w.ranks, 1), recvCounts(w.ranks, -1);
  Bytes send(2 * w.ranks * rowBytes, 0x11), received(w.ranks * rowBytes);
  struct Failing {
    const void *from;
    intptr_t rowBytes, capacity;
    tamoe_rt_exchange_t *handle = nullptr;
  };
  std::vector<Failing> failing = {
      {w.me == 3 ? nullptr : send.data(), rowBytes, w.ranks},
      {send.data(), rowBytes, w.me == 5 ? w.ranks - 1 : w.ranks},
      {send.data(), w.me == 3 ? 32 : rowBytes, w.ranks}};
  std::fill(received.begin(), received.end(), 0x5A);
  for (Failing &f : failing) {
    EXPECT_OK(tamoe_rt_all_to_all_start(w.ctx, TAMOE_RT_GROUP_WORLD, f.from,
                                        w.ranks, f.rowBytes, ones.data(),
                                        w.ranks, 1, received.data(), f.capacity,
                                        recvCounts.data(), &f.handle),
              w.ctx);
    EXPECT(f.handle != nullptr,
           "a start that posted its settle gave no handle");
  }
  computeWhileInFlight(w);
  auto untouched = [&] {
    for (unsigned char byte : received)
      if (byte != 0x5A)
        return false;
    return recvCounts == std::vector<int32_t>(w.ranks, -1);
  };
  expectFailure(
      w, tamoe_rt_all_to_all_wait(w.ctx, failing[0].handle, failing[0].from),
      TAMOE_RT_ERROR_INVALID_ARGUMENT,
      "tamoe_rt_all_to_all_wait: rank 3: send is null");
  expectFailure(
      w, tamoe_rt_all_to_all_wait(w.ctx, failing[1].handle, failing[1].from),
      TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
      str("tamoe_rt_all_to_all_wait: rank 5: ", w.ranks,
          " rows to receive exceed recv_capacity ", w.ranks - 1));
  expectFailure(
      w, tamoe_rt_all_to_all_wait(w.ctx, failing[2].handle, failing[2].from),
      TAMOE_RT_ERROR_MISMATCH,
      "tamoe_rt_all_to_all_wait: ranks disagree on row_bytes: rank "
      "0 has 16, rank 3 has 32");
  // A missing handle: that rank's start fails at once (its settle stays in
  // flight, unreachable, until finalize), a blocking collective among them
  // still completes, and the others' waits report the failure.
  tamoe_rt_exchange_t *handle = nullptr;
  tamoe_rt_status_t nullStart = tamoe_rt_all_to_all_start(
      w.ctx, TAMOE_RT_GROUP_WORLD, send.data(), w.ranks, rowBytes, ones.data(),
      w.ranks, 1, received.data(), w.ranks, recvCounts.data(),
      w.me == 6 ? nullptr : &handle);
  if (w.me == 6)
    expectFailure(w, nullStart, TAMOE_RT_ERROR_INVALID_ARGUMENT,
                  "tamoe_rt_all_to_all_start: rank 6: exchange is null");
  else
    EXPECT_OK(nullStart, w.ctx);
  std::vector<float> one(4, 1.0f);
  EXPECT_OK(tamoe_rt_all_reduce(w.ctx, TAMOE_RT_GROUP_WORLD, one.data(), 4, 0),
            w.ctx);
  EXPECT(one == std::vector<float>(4, float(w.ranks)),
         "the all_reduce after a start without a handle");
  if (w.me != 6)
    expectFailure(w, tamoe_rt_all_to_all_wait(w.ctx, handle, send.data()),
                  TAMOE_RT_ERROR_INVALID_ARGUMENT,
                  "tamoe_rt_all_to_all_wait: rank 6: exchange is null");
  EXPECT(untouched(), "rows moved despite a failed start");

  // Bad waits name the problem and leave the exchange pending; the right
  // wait completes it; a second wait finds no handle.
  InFlight e = inFlight(w, TAMOE_RT_GROUP_WORLD, 8, 1, 605);
  EXPECT_OK(startInFlight(w, e), w.ctx);
  expectFailure(w, tamoe_rt_all_to_all_wait(w.ctx, e.handle, send.data()),
                TAMOE_RT_ERROR_INVALID_ARGUMENT,
                str("tamoe_rt_all_to_all_wait: send = ",
                    static_cast<const void *>(send.data()),
                    " is not the buffer the exchange started with (",
                    static_cast<const void *>(e.send(w).data()), ")"));
  waitAndCheck(w, e);
  expectFailure(w, tamoe_rt_all_to_all_wait(w.ctx, e.handle, e.send(w).data()),
                TAMOE_RT_ERROR_INVALID_ARGUMENT,
                str("tamoe_rt_all_to_all_wait: exchange ",
                    static_cast<const void *>(e.handle),
                    " is not a pending exchange of this context (waited "
                    "twice?)"));
}

/// asyncChecks on their own (exchange runs them too).
void asyncScenario(const World &w) {
  asyncChecks(w);
  tester.end("async", "all_to_all_start + wait == all_to_all, 3 in flight at "
                      "once; failed starts and bad waits");
}

/// tamoe_rt_all_to_all_totals against the counts rounds it replaces: part 1
/// of 3 of `counts` ([ranks, split]) through the hierarchical stages (the
/// steps convert-tamoe-to-runtime emits for a cut hierarchical layer), each
/// stage's total against tamoe_rt_all_to_all_counts of the same counts, and
/// the last against the flat part of what arrives (`wantCounts`).
void totalsChecks(const World &w, const std::vector<int32_t> &counts,
                  const std::vector<int32_t> &wantCounts, int64_t split) {
  int64_t nodes = w.nodes, perNode = w.perNode;
  std::vector<int64_t> steps;
  for (std::array<int64_t, 5> step :
       {std::array<int64_t, 5>{TAMOE_RT_COUNTS_CHUNK, 0, 1, 3, 0},
        {TAMOE_RT_COUNTS_REGROUP, 1, nodes, perNode, split},
        {TAMOE_RT_COUNTS_EXCHANGE, 2, TAMOE_RT_GROUP_NODE, perNode, 0},
        {TAMOE_RT_COUNTS_REGROUP, 3, perNode, nodes, split},
        {TAMOE_RT_COUNTS_EXCHANGE, 4, TAMOE_RT_GROUP_PEERS, nodes, 0}})
    steps.insert(steps.end(), step.begin(), step.end());
  std::vector<intptr_t> totals(5, -1);
  EXPECT_OK(tamoe_rt_all_to_all_totals(w.ctx, TAMOE_RT_GROUP_WORLD,
                                       counts.data(), intptr_t(counts.size()),
                                       steps.data(), 5, totals.data()),
            w.ctx);
  // The same stages with a counts round each, chunked and regrouped by the
  // reference (counts only: no rows).
  Bytes noRows;
  auto regroup = [&](const std::vector<int32_t> &in, int64_t a, int64_t b) {
    std::vector<int32_t> out;
    reference::regroup(Bytes(), 0, in, a, b, split, noRows, out);
    return out;
  };
  std::vector<int32_t> part, wantPart;
  reference::chunk(Bytes(), 0, counts, 1, 3, noRows, part);
  reference::chunk(Bytes(), 0, wantCounts, 1, 3, noRows, wantPart);
  int64_t partRows = std::accumulate(part.begin(), part.end(), int64_t(0));
  int64_t wantRows =
      std::accumulate(wantPart.begin(), wantPart.end(), int64_t(0));
  std::vector<int32_t> inNode(counts.size(), -1), inPeers(counts.size(), -1);
  intptr_t nodeRows = -1, peersRows = -1;
  EXPECT_OK(tamoe_rt_all_to_all_counts(w.ctx, TAMOE_RT_GROUP_NODE,
                                       regroup(part, nodes, perNode).data(),
                                       perNode, nodes * split, inNode.data(),
                                       &nodeRows),
            w.ctx);
  EXPECT_OK(tamoe_rt_all_to_all_counts(w.ctx, TAMOE_RT_GROUP_PEERS,
                                       regroup(inNode, perNode, nodes).data(),
                                       nodes, perNode * split, inPeers.data(),
                                       &peersRows),
            w.ctx);
  EXPECT(totals == (std::vector<intptr_t>{partRows, partRows, nodeRows,
                                          nodeRows, peersRows}) &&
             peersRows == wantRows,
         "all_to_all_totals: ", totals[0], " ", totals[2], " ", totals[4],
         " against ", partRows, " ", nodeRows, " ", peersRows, " (flat part ",
         wantRows, "), split ", split);

  // The node stage alone, its round over the node group only: node 0's
  // ranks alone call it (a branch that only node 0 takes), the rest wait
  // for them at the next world collective.
  if (w.node(w.me) == 0) {
    std::vector<intptr_t> nodeTotals(3, -1);
    EXPECT_OK(tamoe_rt_all_to_all_totals(w.ctx, TAMOE_RT_GROUP_NODE,
                                         counts.data(), intptr_t(counts.size()),
                                         steps.data(), 3, nodeTotals.data()),
              w.ctx);
    EXPECT(nodeTotals[2] == nodeRows,
           "all_to_all_totals over the node: ", nodeTotals[2], " against ",
           nodeRows);
  }
  // One rank's negative count fails every rank alike, with its message.
  std::vector<int32_t> bad = counts;
  if (w.me == 3)
    bad[1] = -1;
  tamoe_rt_status_t status = tamoe_rt_all_to_all_totals(
      w.ctx, TAMOE_RT_GROUP_WORLD, bad.data(), intptr_t(bad.size()),
      steps.data(), 5, totals.data());
  EXPECT(status == TAMOE_RT_ERROR_INVALID_ARGUMENT &&
             std::string(tamoe_rt_last_error(w.ctx)) ==
                 "tamoe_rt_all_to_all_totals: rank 3: counts[1] = -1 is "
                 "negative",
         "all_to_all_totals with rank 3's count negative: ",
         tamoe_rt_last_error(w.ctx));
  // Different steps on one rank: every rank fails alike too.
  std::vector<int64_t> other = steps;
  if (w.me == 5)
    other[3] = 2;
  status = tamoe_rt_all_to_all_totals(w.ctx, TAMOE_RT_GROUP_WORLD,
                                      counts.data(), intptr_t(counts.size()),
                                      other.data(), 5, totals.data());
  EXPECT(status == TAMOE_RT_ERROR_MISMATCH &&
             std::string(tamoe_rt_last_error(w.ctx))
                     .find("tamoe_rt_all_to_all_totals: ") == 0 &&
             std::string(tamoe_rt_last_error(w.ctx)).find("steps") !=
                 std::string::npos,
         "all_to_all_totals with rank 5's steps different: ",
         tamoe_rt_last_error(w.ctx));
}

void exchangeScenario(const World &w) {
  int64_t flatInterTotal = 0, hierInterTotal = 0;
  for (auto [rowBytes, split] :
       {std::pair<int64_t, int64_t>{1, 1}, {24, 3}, {100, 1}, {8, 2}}) {
    uint64_t seed = rowBytes * 10 + split;
    Exchange x = makeExchange(w, seed, rowBytes, split, w.ranks);
    Bytes want;
    std::vector<int32_t> wantCounts;
    reference::allToAll(x.rows, x.counts, rowBytes, split, w.me, want,
                        wantCounts);
    int64_t rows = int64_t(want.size()) / rowBytes;
    const Bytes &send = x.rows[w.me];
    int64_t sendRows = int64_t(send.size()) / rowBytes;

    // Flat.
    Bytes flat((rows + 1) * rowBytes, 0xAA);
    std::vector<int32_t> flatCounts(w.ranks * split, -1);
    tamoe_rt_traffic_t before = traffic(w.ctx);
    EXPECT_OK(tamoe_rt_all_to_all(w.ctx, TAMOE_RT_GROUP_WORLD, send.data(),
                                  sendRows, rowBytes, x.counts[w.me].data(),
                                  w.ranks, split, flat.data(), rows + 1,
                                  flatCounts.data()),
              w.ctx);
    tamoe_rt_traffic_t flatTraffic = traffic(w.ctx) - before;
    EXPECT(flatCounts == wantCounts, "flat counts, row_bytes ", rowBytes);
    // The counts alone, as a caller that sizes `received` first gets them.
    std::vector<int32_t> countsOnly(w.ranks * split, -1);
    intptr_t total = -1;
    EXPECT_OK(tamoe_rt_all_to_all_counts(w.ctx, TAMOE_RT_GROUP_WORLD,
                                         x.counts[w.me].data(), w.ranks, split,
                                         countsOnly.data(), &total),
              w.ctx);
    EXPECT(countsOnly == wantCounts && total == rows, "all_to_all_counts");
    totalsChecks(w, x.counts[w.me], wantCounts, split);
    EXPECT(Bytes(flat.begin(), flat.begin() + rows * rowBytes) == want,
           "flat rows, row_bytes ", rowBytes);
    EXPECT(flat[rows * rowBytes] == 0xAA, "flat wrote past the rows");

    // Hierarchical: byte-identical.
    Bytes hier((rows + 1) * rowBytes, 0xBB);
    std::vector<int32_t> hierCounts(w.ranks * split, -1);
    before = traffic(w.ctx);
    EXPECT_OK(tamoe_rt_all_to_all_hierarchical(
                  w.ctx, send.data(), sendRows, rowBytes, x.counts[w.me].data(),
                  split, hier.data(), rows, hierCounts.data()),
              w.ctx);
    tamoe_rt_traffic_t hierTraffic = traffic(w.ctx) - before;
    EXPECT(hierCounts == flatCounts, "hierarchical counts differ");
    EXPECT(Bytes(hier.begin(), hier.begin() + rows * rowBytes) ==
               Bytes(flat.begin(), flat.begin() + rows * rowBytes),
           "hierarchical rows differ, row_bytes ", rowBytes);
    EXPECT(hier[rows * rowBytes] == 0xBB, "hierarchical wrote past the rows");

    // The bytes each schedule sends, from the counts of every rank.
    auto rowsTo = [&](int64_t from, int64_t to) {
      int64_t n = 0;
      for (int64_t i = 0; i < split; ++i)
        n += x.counts[from][to * split + i];
      return n;
    };
    int64_t flatIntra = 0, flatInter = 0, stage1 = 0, stage2 = 0;
    for (int64_t p = 0; p < w.ranks; ++p) {
      if (p == w.me)
        continue;
      (w.node(p) == w.node(w.me) ? flatIntra : flatInter) +=
          rowsTo(w.me, p) * rowBytes;
    }
    // Stage 1: to each other local index d, the rows for (m, d), any m.
    // Stage 2: to each other node m, what the node's ranks sent here for
    // (m, my index).
    for (int64_t m = 0; m < w.nodes; ++m)
      for (int64_t d = 0; d < w.perNode; ++d) {
        if (d != w.index(w.me))
          stage1 += rowsTo(w.me, m * w.perNode + d) * rowBytes;
        if (m != w.node(w.me))
          stage2 += rowsTo(w.node(w.me) * w.perNode + d,
                           m * w.perNode + w.index(w.me)) *
                    rowBytes;
      }
    EXPECT(flatTraffic.intra_node_bytes == flatIntra, "flat intra ",
           flatTraffic.intra_node_bytes, " != ", flatIntra);
    EXPECT(flatTraffic.inter_node_bytes == flatInter, "flat inter ",
           flatTraffic.inter_node_bytes, " != ", flatInter);
    EXPECT(hierTraffic.intra_node_bytes == stage1, "hierarchical intra ",
           hierTraffic.intra_node_bytes, " != ", stage1);
    EXPECT(hierTraffic.inter_node_bytes == stage2, "hierarchical inter ",
           hierTraffic.inter_node_bytes, " != ", stage2);
    flatInterTotal += flatInter;
    hierInterTotal += stage2;
  }
  // Both schedules move the same rows between nodes, only by other ranks.
  flatInterTotal = sumOver(flatInterTotal);
  hierInterTotal = sumOver(hierInterTotal);
  EXPECT(flatInterTotal == hierInterTotal, "inter-node bytes ", flatInterTotal,
         " vs ", hierInterTotal);

  // The node and peer groups on their own.
  for (tamoe_rt_group_t group : {TAMOE_RT_GROUP_NODE, TAMOE_RT_GROUP_PEERS}) {
    bool byNode = group == TAMOE_RT_GROUP_NODE;
    int64_t size = byNode ? w.perNode : w.nodes;
    int64_t split = 2, rowBytes = 12;
    Exchange x = makeExchange(w, 77 + group, rowBytes, split, size);
    // Members of this rank's group, in group order.
    std::vector<Bytes> rows;
    std::vector<std::vector<int32_t>> counts;
    for (int64_t i = 0; i < size; ++i) {
      int64_t member =
          byNode ? w.node(w.me) * w.perNode + i : i * w.perNode + w.index(w.me);
      rows.push_back(x.rows[member]);
      counts.push_back(x.counts[member]);
    }
    int64_t me = byNode ? w.index(w.me) : w.node(w.me);
    Bytes want;
    std::vector<int32_t> wantCounts;
    reference::allToAll(rows, counts, rowBytes, split, me, want, wantCounts);
    int64_t recvRows = int64_t(want.size()) / rowBytes;
    Bytes got(std::max<int64_t>(recvRows, 1) * rowBytes);
    std::vector<int32_t> gotCounts(size * split);
    tamoe_rt_traffic_t before = traffic(w.ctx);
    EXPECT_OK(tamoe_rt_all_to_all(w.ctx, group, x.rows[w.me].data(),
                                  int64_t(x.rows[w.me].size()) / rowBytes,
                                  rowBytes, x.counts[w.me].data(), size, split,
                                  got.data(), recvRows, gotCounts.data()),
              w.ctx);
    tamoe_rt_traffic_t moved = traffic(w.ctx) - before;
    EXPECT(gotCounts == wantCounts, "group ", group, " counts");
    EXPECT(Bytes(got.begin(), got.begin() + recvRows * rowBytes) == want,
           "group ", group, " rows");
    EXPECT((byNode ? moved.inter_node_bytes : moved.intra_node_bytes) == 0,
           "group ", group, " traffic on the wrong level");
  }
  asyncChecks(w);
  tester.end("exchange",
             str("flat == hierarchical on ", w.ranks, " ranks (", w.nodes,
                 " nodes x ", w.perNode, "), inter-node bytes ", flatInterTotal,
                 " both; all_to_all_start + wait == all_to_all, "
                 "3 in flight at once"));
}

//===----------------------------------------------------------------------===//
// dedup: dispatch_dedup == dispatch + flat all_to_all, with fewer bytes
//===----------------------------------------------------------------------===//

/// One rank's routed tokens.
struct Routed {
  int64_t tokens;
  Bytes data;
  reference::Gate gate;
  reference::Dispatch layout;
};

Routed route(uint64_t seed, int64_t rank, int64_t rowBytes, int64_t experts,
             int64_t k, int64_t capacity) {
  Random random(seed * 1000 + rank);
  Routed r;
  r.tokens = rank == 2 ? 0 : 20 + 5 * rank;
  r.data = random.bytes(r.tokens * rowBytes);
  r.gate = reference::gate(random.floats(r.tokens * experts), r.tokens, experts,
                           k, false, true);
  r.layout = reference::dispatch(r.data, rowBytes, r.gate.ids, k, experts,
                                 capacity, true, r.gate.weights);
  return r;
}

/// The nodes that token `t` of `r` has a kept (undropped) assignment on.
std::set<int64_t> nodesOfToken(const Routed &r, int64_t t, int64_t k,
                               int64_t perNodeExperts) {
  std::set<int64_t> nodes;
  for (int64_t j = 0; j < k; ++j)
    if (r.layout.positions[t * k + j] >= 0)
      nodes.insert(r.gate.ids[t * k + j] / perNodeExperts);
  return nodes;
}

/// With TAMOE_TEST_TRAFFIC_JSON set, rank 0 writes there what every rank
/// dispatched (kept assignments per destination rank, tokens per destination
/// node) and the traffic counters each rank measured, for `tamoe-topo
/// evaluate --traffic` to predict the same bytes from the counts
/// (test/Runtime/traffic-vs-model.test).
void writeTraffic(const World &w, const std::vector<Routed> &all,
                  int64_t rowBytes, int64_t k, int64_t perRank,
                  tamoe_rt_traffic_t flat, tamoe_rt_traffic_t dedup) {
  const char *path = std::getenv("TAMOE_TEST_TRAFFIC_JSON");
  int64_t mine[4] = {flat.intra_node_bytes, flat.inter_node_bytes,
                     dedup.intra_node_bytes, dedup.inter_node_bytes};
  std::vector<int64_t> measured(4 * w.ranks);
  MPI_Gather(mine, 4, MPI_INT64_T, measured.data(), 4, MPI_INT64_T, 0,
             MPI_COMM_WORLD);
  if (!path || w.me != 0)
    return;
  std::FILE *file = std::fopen(path, "w");
  EXPECT(file != nullptr, "cannot write ", path);
  if (!file)
    return;
  int64_t perNodeExperts = perRank * w.perNode;
  std::fprintf(file, "{\"row_bytes\": %lld, \"topk\": %lld,\n",
               (long long)rowBytes, (long long)k);
  std::fprintf(file, " \"assignments\": [");
  for (int64_t i = 0; i < w.ranks; ++i) {
    std::vector<int64_t> toRank(w.ranks, 0);
    for (int64_t a = 0; a < all[i].tokens * k; ++a)
      if (all[i].layout.positions[a] >= 0)
        ++toRank[all[i].gate.ids[a] / perRank];
    for (int64_t j = 0; j < w.ranks; ++j)
      std::fprintf(file, "%s%s%lld%s", j ? "" : (i ? ",\n  [" : "\n  ["),
                   j ? ", " : "", (long long)toRank[j],
                   j + 1 == w.ranks ? "]" : "");
  }
  std::fprintf(file, "],\n \"unique_tokens\": [");
  for (int64_t i = 0; i < w.ranks; ++i) {
    std::vector<int64_t> toNode(w.nodes, 0);
    for (int64_t t = 0; t < all[i].tokens; ++t)
      for (int64_t node : nodesOfToken(all[i], t, k, perNodeExperts))
        ++toNode[node];
    for (int64_t n = 0; n < w.nodes; ++n)
      std::fprintf(file, "%s%s%lld%s", n ? "" : (i ? ",\n  [" : "\n  ["),
                   n ? ", " : "", (long long)toNode[n],
                   n + 1 == w.nodes ? "]" : "");
  }
  std::fprintf(file, "],\n \"measured\": {");
  const char *schedules[2] = {"flat", "hierarchical+dedup"};
  for (int s = 0; s < 2; ++s) {
    std::fprintf(file, "%s\"%s\": [", s ? ",\n  " : "\n  ", schedules[s]);
    for (int64_t r = 0; r < w.ranks; ++r)
      std::fprintf(file, "%s[%lld, %lld]", r ? ", " : "",
                   (long long)measured[4 * r + 2 * s],
                   (long long)measured[4 * r + 2 * s + 1]);
    std::fprintf(file, "]");
  }
  std::fprintf(file, "}}\n");
  std::fclose(file);
}

void dedupScenario(const World &w) {
  int64_t flatInterWorld = 0, dedupInterWorld = 0, flatInterRows = 0,
          dedupInterRows = 0;
  struct Config {
    int64_t k, perRank, capacity;
  };
  for (Config config : {Config{4, 2, -1}, Config{2, 1, 6}, Config{8, 2, 5}}) {
    int64_t k = config.k, perRank = config.perRank;
    int64_t capacity = config.capacity;
    int64_t rowBytes = 64, experts = perRank * w.ranks;
    int64_t perNodeExperts = perRank * w.perNode;
    uint64_t seed = 31 + k;
    std::vector<Routed> all;
    for (int64_t r = 0; r < w.ranks; ++r)
      all.push_back(route(seed, r, rowBytes, experts, k, capacity));
    const Routed &mine = all[w.me];

    // The runtime's own routing of this rank's tokens.
    std::vector<int32_t> ids(mine.tokens * k), positions(mine.tokens * k),
        counts(experts);
    std::vector<float> weights(mine.tokens * k), probs(mine.tokens * experts);
    Bytes dispatched(std::max<int64_t>(mine.tokens * k, 1) * rowBytes);
    int64_t dropped = 0;
    // The logits that route() drew after the tokens.
    Random random(seed * 1000 + w.me);
    random.bytes(mine.tokens * rowBytes);
    std::vector<float> logits = random.floats(mine.tokens * experts);
    EXPECT_OK(tamoe_rt_gate(w.ctx, logits.data(), mine.tokens, experts, k,
                            TAMOE_RT_SCORE_SOFTMAX, 1, 0, 0, ids.data(),
                            weights.data(), probs.data()),
              w.ctx);
    EXPECT(ids == mine.gate.ids, "gate ids differ from the reference");
    EXPECT_OK(tamoe_rt_dispatch(w.ctx, mine.data.data(), mine.tokens, rowBytes,
                                ids.data(), k, experts, weights.data(),
                                capacity, TAMOE_RT_DROP_PROBABILITY,
                                dispatched.data(), mine.tokens * k,
                                counts.data(), positions.data(), &dropped),
              w.ctx);
    EXPECT(positions == mine.layout.positions, "dispatch positions");

    // What the flat exchange delivers here.
    std::vector<Bytes> rows;
    std::vector<std::vector<int32_t>> allCounts;
    for (const Routed &r : all) {
      rows.push_back(r.layout.rows);
      allCounts.push_back(r.layout.counts);
    }
    Bytes want;
    std::vector<int32_t> wantCounts;
    reference::allToAll(rows, allCounts, rowBytes, perRank, w.me, want,
                        wantCounts);
    int64_t recvRows = int64_t(want.size()) / rowBytes;

    Bytes flat(std::max<int64_t>(recvRows, 1) * rowBytes);
    std::vector<int32_t> flatCounts(w.ranks * perRank);
    int64_t sent = int64_t(mine.layout.rows.size()) / rowBytes;
    tamoe_rt_traffic_t before = traffic(w.ctx);
    EXPECT_OK(tamoe_rt_all_to_all(w.ctx, TAMOE_RT_GROUP_WORLD,
                                  dispatched.data(), sent, rowBytes,
                                  counts.data(), w.ranks, perRank, flat.data(),
                                  recvRows, flatCounts.data()),
              w.ctx);
    tamoe_rt_traffic_t flatTraffic = traffic(w.ctx) - before;
    Bytes deduped((recvRows + 1) * rowBytes, 0xCC);
    std::vector<int32_t> dedupCounts(w.ranks * perRank, -1);
    before = traffic(w.ctx);
    EXPECT_OK(tamoe_rt_dispatch_dedup(w.ctx, mine.data.data(), mine.tokens,
                                      rowBytes, ids.data(), positions.data(), k,
                                      experts, deduped.data(), recvRows,
                                      dedupCounts.data()),
              w.ctx);
    tamoe_rt_traffic_t dedupTraffic = traffic(w.ctx) - before;
    EXPECT(flatCounts == wantCounts, "flat counts");
    EXPECT(Bytes(flat.begin(), flat.begin() + recvRows * rowBytes) == want,
           "flat rows");
    EXPECT(dedupCounts == flatCounts, "dedup counts, k ", k);
    EXPECT(Bytes(deduped.begin(), deduped.begin() + recvRows * rowBytes) ==
               want,
           "dedup rows, k ", k);
    EXPECT(deduped[recvRows * rowBytes] == 0xCC, "dedup wrote past the rows");

    // Expected bytes. Flat: every dispatched row to another rank. Dedup,
    // between nodes: one row and one route of k ids per (token, other
    // node); within the node: the relay's expanded rows for other indices.
    auto nodeOf = [&](int32_t expert) { return expert / perNodeExperts; };
    auto indexOf = [&](int32_t expert) {
      return (expert / perRank) % w.perNode;
    };
    int64_t flatIntra = 0, flatInter = 0, pairs = 0, expanded = 0;
    for (int64_t a = 0; a < mine.tokens * k; ++a) {
      if (mine.layout.positions[a] < 0)
        continue;
      int64_t to = mine.gate.ids[a] / perRank;
      if (to != w.me)
        (w.node(to) == w.node(w.me) ? flatIntra : flatInter) += rowBytes;
    }
    for (int64_t t = 0; t < mine.tokens; ++t) {
      std::set<int64_t> nodes = nodesOfToken(mine, t, k, perNodeExperts);
      pairs += int64_t(nodes.size()) - int64_t(nodes.count(w.node(w.me)));
    }
    for (int64_t s = 0; s < w.nodes; ++s) {
      const Routed &source = all[s * w.perNode + w.index(w.me)];
      for (int64_t a = 0; a < source.tokens * k; ++a) {
        int32_t expert = source.gate.ids[a];
        if (source.layout.positions[a] >= 0 && nodeOf(expert) == w.node(w.me) &&
            indexOf(expert) != w.index(w.me))
          ++expanded;
      }
    }
    int64_t dedupInter = pairs * (rowBytes + k * int64_t(sizeof(int32_t)));
    EXPECT(flatTraffic.intra_node_bytes == flatIntra, "flat intra ",
           flatTraffic.intra_node_bytes, " != ", flatIntra);
    EXPECT(flatTraffic.inter_node_bytes == flatInter, "flat inter ",
           flatTraffic.inter_node_bytes, " != ", flatInter);
    EXPECT(dedupTraffic.inter_node_bytes == dedupInter, "dedup inter ",
           dedupTraffic.inter_node_bytes, " != ", dedupInter, " (", pairs,
           " (token, node) pairs)");
    EXPECT(dedupTraffic.intra_node_bytes == expanded * rowBytes, "dedup intra ",
           dedupTraffic.intra_node_bytes, " != ", expanded * rowBytes);
    if (config.k == 4)
      writeTraffic(w, all, rowBytes, k, perRank, flatTraffic, dedupTraffic);
    flatInterWorld += flatInter;
    dedupInterWorld += dedupInter;
    flatInterRows += flatInter / rowBytes;
    dedupInterRows += pairs;
  }
  flatInterWorld = sumOver(flatInterWorld);
  dedupInterWorld = sumOver(dedupInterWorld);
  flatInterRows = sumOver(flatInterRows);
  dedupInterRows = sumOver(dedupInterRows);
  // A row crosses to a node at most once (the routes may cost more than
  // the duplicates saved when rows are small and k large).
  EXPECT(dedupInterRows <= flatInterRows, "dedup sent ", dedupInterRows,
         " rows between nodes, flat ", flatInterRows);
  tester.end("dedup",
             str("dispatch_dedup == dispatch + all_to_all; inter-node rows ",
                 flatInterRows, " flat, ", dedupInterRows,
                 " dedup; inter-node bytes ", flatInterWorld, " flat, ",
                 dedupInterWorld, " dedup (rows + routes)"));
}

//===----------------------------------------------------------------------===//
// layer: a whole MoE layer against the serial reference
//===----------------------------------------------------------------------===//

constexpr int64_t kHidden = 16;

/// Expert e's weights [kHidden, kHidden], the same on every rank.
std::vector<float> expertWeights(int64_t expert) {
  return Random(5000 + expert).floats(kHidden * kHidden, -0.5f, 0.5f);
}

/// y = x W with W [kHidden (in), kHidden (out)], as tamoe_rt_grouped_matmul
/// computes it.
void expertForward(const std::vector<float> &w, const float *x, float *y) {
  for (int64_t o = 0; o < kHidden; ++o) {
    float sum = 0;
    for (int64_t i = 0; i < kHidden; ++i)
      sum += x[i] * w[i * kHidden + o];
    y[o] = sum;
  }
}

Bytes asBytes(const std::vector<float> &values) {
  Bytes bytes(values.size() * sizeof(float));
  if (!values.empty())
    std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

struct LayerInput {
  int64_t tokens;
  std::vector<float> x, logits;
};

LayerInput layerInput(int64_t rank, int64_t experts) {
  Random random(900 + rank);
  LayerInput in;
  in.tokens = rank == 2 ? 0 : 24 + 3 * rank;
  in.x = random.floats(in.tokens * kHidden);
  in.logits = random.floats(in.tokens * experts, -3, 3);
  return in;
}

void layerScenario(const World &w) {
  int64_t perRank = 2, experts = perRank * w.ranks, k = 2;
  int64_t rowBytes = kHidden * int64_t(sizeof(float));
  std::vector<std::vector<float>> weightsOf;
  for (int64_t e = 0; e < experts; ++e)
    weightsOf.push_back(expertWeights(e));
  // This rank's experts' weights [perRank, kHidden, kHidden].
  std::vector<float> localWeights;
  for (int64_t local = 0; local < perRank; ++local)
    localWeights.insert(localWeights.end(),
                        weightsOf[w.me * perRank + local].begin(),
                        weightsOf[w.me * perRank + local].end());
  LayerInput in = layerInput(w.me, experts);
  int64_t tokens = in.tokens;
  int64_t capacity = (5 * tokens * k / 4 + experts - 1) / experts; // f = 1.25

  // The serial reference of this rank's output from its inputs; the
  // experts that process the rows are on other ranks, but they apply the
  // same weights.
  reference::Gate gate =
      reference::gate(in.logits, tokens, experts, k, false, true);
  Bytes xBytes = asBytes(in.x);
  reference::Dispatch layout = reference::dispatch(
      xBytes, rowBytes, gate.ids, k, experts, capacity, true, gate.weights);
  int64_t sent = int64_t(layout.rows.size()) / rowBytes;
  std::vector<float> outputs(sent * kHidden);
  for (int64_t e = 0, row = 0; e < experts; ++e)
    for (int32_t i = 0; i < layout.counts[e]; ++i, ++row)
      expertForward(weightsOf[e],
                    reinterpret_cast<const float *>(layout.rows.data()) +
                        row * kHidden,
                    &outputs[row * kHidden]);
  std::vector<float> want =
      reference::combine(outputs, kHidden, layout.positions, gate.weights, k);
  double wantLoss = reference::auxLoss(gate.probs, gate.ids, experts, k);

  // What this rank's experts receive, from every rank's inputs.
  std::vector<Bytes> allRows;
  std::vector<std::vector<int32_t>> allCounts;
  for (int64_t r = 0; r < w.ranks; ++r) {
    LayerInput other = layerInput(r, experts);
    reference::Gate g =
        reference::gate(other.logits, other.tokens, experts, k, false, true);
    Bytes bytes = asBytes(other.x);
    int64_t c = (5 * other.tokens * k / 4 + experts - 1) / experts;
    reference::Dispatch d = reference::dispatch(bytes, rowBytes, g.ids, k,
                                                experts, c, true, g.weights);
    allRows.push_back(d.rows);
    allCounts.push_back(d.counts);
  }
  Bytes expertRows;
  std::vector<int32_t> expertCounts;
  reference::allToAll(allRows, allCounts, rowBytes, perRank, w.me, expertRows,
                      expertCounts);
  int64_t recvRows = int64_t(expertRows.size()) / rowBytes;

  std::vector<std::vector<float>> results;
  for (int schedule = 0; schedule < 3; ++schedule) {
    const char *name[] = {"flat", "hierarchical", "dedup"};
    std::vector<int32_t> ids(tokens * k), positions(tokens * k),
        counts(experts);
    std::vector<float> weights(tokens * k), probs(tokens * experts);
    std::vector<float> dispatched(std::max<int64_t>(tokens * k, 1) * kHidden);
    int64_t dropped = 0;
    float loss = -1;
    EXPECT_OK(tamoe_rt_gate(w.ctx, in.logits.data(), tokens, experts, k,
                            TAMOE_RT_SCORE_SOFTMAX, 1, 0, 0, ids.data(),
                            weights.data(), probs.data()),
              w.ctx);
    EXPECT_OK(tamoe_rt_aux_loss(w.ctx, probs.data(), ids.data(), nullptr,
                                tokens, experts, k, nullptr, &loss),
              w.ctx);
    EXPECT(std::fabs(loss - wantLoss) <= 1e-5 * std::max(1.0, wantLoss),
           "aux loss ", loss, " != ", wantLoss);
    EXPECT_OK(tamoe_rt_dispatch(w.ctx, in.x.data(), tokens, rowBytes,
                                ids.data(), k, experts, weights.data(),
                                capacity, TAMOE_RT_DROP_PROBABILITY,
                                dispatched.data(), tokens * k, counts.data(),
                                positions.data(), &dropped),
              w.ctx);
    EXPECT(dropped == layout.dropped, "dropped ", dropped);

    // To the experts.
    std::vector<float> received(std::max<int64_t>(recvRows, 1) * kHidden);
    std::vector<int32_t> recvCounts(w.ranks * perRank);
    if (schedule == 0)
      EXPECT_OK(
          tamoe_rt_all_to_all(w.ctx, TAMOE_RT_GROUP_WORLD, dispatched.data(),
                              sent, rowBytes, counts.data(), w.ranks, perRank,
                              received.data(), recvRows, recvCounts.data()),
          w.ctx);
    else if (schedule == 1)
      EXPECT_OK(tamoe_rt_all_to_all_hierarchical(
                    w.ctx, dispatched.data(), sent, rowBytes, counts.data(),
                    perRank, received.data(), recvRows, recvCounts.data()),
                w.ctx);
    else
      EXPECT_OK(tamoe_rt_dispatch_dedup(w.ctx, in.x.data(), tokens, rowBytes,
                                        ids.data(), positions.data(), k,
                                        experts, received.data(), recvRows,
                                        recvCounts.data()),
                w.ctx);
    EXPECT(recvCounts == expertCounts, name[schedule], " expert counts");
    EXPECT(recvRows == 0 || std::memcmp(received.data(), expertRows.data(),
                                        expertRows.size()) == 0,
           name[schedule], " expert rows");

    // The experts of this rank, one grouped matmul over the rows by source
    // rank, then local expert.
    std::vector<float> processed(received.size(), -1.0f);
    EXPECT_OK(tamoe_rt_grouped_matmul(
                  w.ctx, TAMOE_RT_F32, received.data(), recvRows, kHidden,
                  recvCounts.data(), w.ranks * perRank, perRank,
                  localWeights.data(), kHidden, processed.data()),
              w.ctx);

    // Back to the senders, in their dispatch order, and combined.
    std::vector<float> back(std::max<int64_t>(sent, 1) * kHidden);
    std::vector<int32_t> backCounts(w.ranks * perRank);
    EXPECT_OK(tamoe_rt_all_to_all(w.ctx, TAMOE_RT_GROUP_WORLD, processed.data(),
                                  recvRows, rowBytes, recvCounts.data(),
                                  w.ranks, perRank, back.data(), sent,
                                  backCounts.data()),
              w.ctx);
    EXPECT(backCounts == counts, name[schedule], " return counts");
    std::vector<float> combined(tokens * kHidden, -1);
    EXPECT_OK(tamoe_rt_combine(w.ctx, TAMOE_RT_F32, back.data(), sent, kHidden,
                               positions.data(), weights.data(), tokens, k,
                               combined.data()),
              w.ctx);
    double worst = 0;
    for (size_t i = 0; i < combined.size(); ++i)
      worst = std::max(worst, double(std::fabs(combined[i] - want[i])));
    EXPECT(worst <= 1e-5, name[schedule], " output differs by ", worst);
    results.push_back(combined);
  }
  EXPECT(results[0] == results[1] && results[0] == results[2],
         "the schedules' outputs differ");
  int64_t totalTokens = sumOver(tokens);
  tester.end("layer", str("gate, dispatch, exchange, experts, exchange, "
                          "combine == serial reference for ",
                          totalTokens,
                          " tokens; flat, hierarchical and dedup identical"));
}

//===----------------------------------------------------------------------===//
// errors: every rank fails alike, before any row moves
//===----------------------------------------------------------------------===//

/// That a collective failed with `code` and `message`, which every rank of
/// the group must see alike.
void expectFailure(const World &w, tamoe_rt_status_t got,
                   tamoe_rt_status_t code, const std::string &message) {
  EXPECT(got == code, tamoe_rt_status_name(got), " ",
         tamoe_rt_last_error(w.ctx));
  EXPECT(tamoe_rt_last_error(w.ctx) == message, "message '",
         tamoe_rt_last_error(w.ctx), "' != '", message, "'");
}

void errorsScenario(const World &w) {
  int64_t rowBytes = 16;
  // One row from every rank to every rank.
  std::vector<int32_t> ones(w.ranks, 1), twos(2 * w.ranks, 1),
      recvCounts(2 * w.ranks, -1);
  // Room for the rank that passes twice the row size.
  Bytes send(4 * w.ranks * rowBytes, 0x11), received(2 * w.ranks * rowBytes);
  auto untouched = [&] {
    for (unsigned char byte : received)
      if (byte != 0x5A)
        return false;
    return true;
  };
  auto flat = [&](intptr_t rb, const int32_t *counts, intptr_t split,
                  const void *from, intptr_t capacity) {
    std::fill(received.begin(), received.end(), 0x5A);
    return tamoe_rt_all_to_all(w.ctx, TAMOE_RT_GROUP_WORLD, from, 2 * w.ranks,
                               rb, counts, w.ranks, split, received.data(),
                               capacity, recvCounts.data());
  };
  int64_t last = w.ranks - 1;

  expectFailure(
      w, flat(w.me == 3 ? 32 : rowBytes, ones.data(), 1, send.data(), w.ranks),
      TAMOE_RT_ERROR_MISMATCH,
      "tamoe_rt_all_to_all: ranks disagree on row_bytes: rank 0 has 16, "
      "rank 3 has 32");
  expectFailure(w,
                flat(rowBytes, w.me == 1 ? twos.data() : ones.data(),
                     w.me == 1 ? 2 : 1, send.data(), w.ranks),
                TAMOE_RT_ERROR_MISMATCH,
                "tamoe_rt_all_to_all: ranks disagree on split: rank 0 has 1, "
                "rank 1 has 2");
  expectFailure(w,
                flat(rowBytes, ones.data(), 1, send.data(),
                     w.me == 5 ? w.ranks - 1 : w.ranks),
                TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
                str("tamoe_rt_all_to_all: rank 5: ", w.ranks,
                    " rows to receive exceed recv_capacity ", w.ranks - 1));
  EXPECT(untouched(), "rows moved despite the capacity error");
  expectFailure(w,
                flat(rowBytes, ones.data(), 1,
                     w.me == 2 ? nullptr : send.data(), w.ranks),
                TAMOE_RT_ERROR_INVALID_ARGUMENT,
                "tamoe_rt_all_to_all: rank 2: send is null");
  std::vector<int32_t> negative = ones;
  negative[1] = -1;
  expectFailure(w,
                flat(rowBytes, w.me == 6 ? negative.data() : ones.data(), 1,
                     send.data(), w.ranks),
                TAMOE_RT_ERROR_INVALID_ARGUMENT,
                "tamoe_rt_all_to_all: rank 6: send_counts[1] = -1 is negative");
  EXPECT(untouched(), "rows moved despite the invalid counts");

  // Within one node only: the other nodes carry on.
  std::fill(received.begin(), received.end(), 0x5A);
  int64_t odd = w.node(w.me) == 1 && w.index(w.me) == w.perNode - 1;
  tamoe_rt_status_t status =
      tamoe_rt_all_to_all(w.ctx, TAMOE_RT_GROUP_NODE, send.data(), w.perNode,
                          odd ? 2 * rowBytes : rowBytes, ones.data(), w.perNode,
                          1, received.data(), w.perNode, recvCounts.data());
  if (w.node(w.me) == 1 && w.perNode > 1)
    expectFailure(w, status, TAMOE_RT_ERROR_MISMATCH,
                  str("tamoe_rt_all_to_all: ranks disagree on row_bytes: rank ",
                      w.perNode, " has 16, rank ", 2 * w.perNode - 1,
                      " has 32"));
  else
    EXPECT(status == TAMOE_RT_SUCCESS, tamoe_rt_last_error(w.ctx));

  // Counts for a layout other than the run's: every rank of the group.
  status = tamoe_rt_all_to_all(w.ctx, TAMOE_RT_GROUP_NODE, send.data(), w.ranks,
                               rowBytes, ones.data(), w.ranks, 1,
                               received.data(), w.ranks, recvCounts.data());
  if (w.perNode != w.ranks)
    expectFailure(w, status, TAMOE_RT_ERROR_MISMATCH,
                  str("tamoe_rt_all_to_all: rank ", w.node(w.me) * w.perNode,
                      ": send_counts are for ", w.ranks,
                      " peers but the node group has ", w.perNode, " ranks (",
                      w.ranks, " ranks, ", w.perNode, " per node)"));
  intptr_t total = 0;
  status =
      tamoe_rt_all_to_all_counts(w.ctx, TAMOE_RT_GROUP_PEERS, ones.data(),
                                 w.nodes + 1, 1, recvCounts.data(), &total);
  expectFailure(w, status, TAMOE_RT_ERROR_MISMATCH,
                str("tamoe_rt_all_to_all_counts: rank ", w.index(w.me),
                    ": send_counts are for ", w.nodes + 1,
                    " peers but the peers group has ", w.nodes, " ranks (",
                    w.ranks, " ranks, ", w.perNode, " per node)"));

  // The composite schedules fail alike on the whole world too.
  std::fill(received.begin(), received.end(), 0x5A);
  status = tamoe_rt_all_to_all_hierarchical(
      w.ctx, send.data(), w.ranks, rowBytes, ones.data(), 1, received.data(),
      w.me == last ? w.ranks - 2 : w.ranks, recvCounts.data());
  expectFailure(w, status, TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
                str("tamoe_rt_all_to_all_hierarchical: rank ", last, ": ",
                    w.ranks, " rows to receive exceed recv_capacity ",
                    w.ranks - 2));
  EXPECT(untouched(), "hierarchical moved rows despite the capacity error");
  status = tamoe_rt_all_to_all_hierarchical(
      w.ctx, send.data(), w.ranks, w.me == 4 ? 8 : rowBytes, ones.data(), 1,
      received.data(), w.ranks, recvCounts.data());
  expectFailure(
      w, status, TAMOE_RT_ERROR_MISMATCH,
      "tamoe_rt_all_to_all_hierarchical: ranks disagree on row_bytes: "
      "rank 0 has 16, rank 4 has 8");

  // Every token of every rank to expert 0 of every rank (k = ranks).
  int64_t tokens = 3, k = w.ranks, experts = w.ranks;
  std::vector<int32_t> ids, positions;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t e = 0; e < experts; ++e) {
      ids.push_back(int32_t(e));
      positions.push_back(int32_t(e * tokens + t));
    }
  Bytes tokensData(tokens * rowBytes, 0x22),
      dedupReceived(w.ranks * tokens * rowBytes);
  // Room for the experts rank 7 claims below: its recv_counts must pass
  // the local checks (a shorter buffer could overlap another, depending on
  // where the heap put them) so that the disagreement is what fails.
  std::vector<int32_t> dedupCounts(2 * experts);
  status = tamoe_rt_dispatch_dedup(
      w.ctx, tokensData.data(), tokens, rowBytes, ids.data(), positions.data(),
      k, experts, dedupReceived.data(),
      w.me == 4 ? w.ranks * tokens - 1 : w.ranks * tokens, dedupCounts.data());
  expectFailure(w, status, TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
                str("tamoe_rt_dispatch_dedup: rank 4: ", w.ranks * tokens,
                    " rows to receive exceed recv_capacity ",
                    w.ranks * tokens - 1));
  status = tamoe_rt_dispatch_dedup(
      w.ctx, tokensData.data(), tokens, rowBytes, ids.data(), positions.data(),
      k, w.me == 7 ? 2 * experts : experts, dedupReceived.data(),
      w.ranks * tokens, dedupCounts.data());
  expectFailure(
      w, status, TAMOE_RT_ERROR_MISMATCH,
      str("tamoe_rt_dispatch_dedup: ranks disagree on experts: rank 0 "
          "has ",
          experts, ", rank 7 has ", 2 * experts));
  status = tamoe_rt_dispatch_dedup(
      w.ctx, tokensData.data(), tokens, rowBytes, ids.data(), positions.data(),
      k, experts, dedupReceived.data(), w.ranks * tokens, dedupCounts.data());
  EXPECT(status == TAMOE_RT_SUCCESS, tamoe_rt_last_error(w.ctx));
  dedupCounts.resize(experts);
  EXPECT(dedupCounts == std::vector<int32_t>(w.ranks, int32_t(tokens)),
         "dedup counts after the errors");

  // Still usable.
  EXPECT(flat(rowBytes, ones.data(), 1, send.data(), w.ranks) ==
             TAMOE_RT_SUCCESS,
         tamoe_rt_last_error(w.ctx));
  EXPECT(recvCounts[0] == 1 && received[0] == 0x11, "exchange after errors");
  tester.end("errors", "mismatch, capacity, invalid arguments and negative "
                       "counts fail on every rank alike");
}

//===----------------------------------------------------------------------===//
// all_reduce: every group's sum, the same floats on every member
//===----------------------------------------------------------------------===//

/// World ranks of the members of `group` of rank `me`, in group order.
std::vector<int64_t> membersOf(const World &w, tamoe_rt_group_t group) {
  std::vector<int64_t> members;
  for (int64_t r = 0; r < w.ranks; ++r)
    if (group == TAMOE_RT_GROUP_WORLD ||
        (group == TAMOE_RT_GROUP_NODE && w.node(r) == w.node(w.me)) ||
        (group == TAMOE_RT_GROUP_PEERS && w.index(r) == w.index(w.me)))
      members.push_back(r);
  return members;
}

void allReduceScenario(const World &w) {
  const int64_t n = 1001;
  const char *names[] = {"world", "node", "peers"};
  tamoe_rt_traffic_t before = traffic(w.ctx);
  for (tamoe_rt_group_t group :
       {TAMOE_RT_GROUP_WORLD, TAMOE_RT_GROUP_NODE, TAMOE_RT_GROUP_PEERS}) {
    std::vector<int64_t> members = membersOf(w, group);
    double size = double(members.size());
    for (int32_t average : {0, 1}) {
      std::string what = str(names[group], average ? " average" : " sum");
      // Multiples of 1/64: every order of the sum is exact, and so is the
      // division by a group size that is a power of two.
      auto exact = [&](int64_t rank) {
        Random random(7000 + rank);
        std::vector<float> data(n);
        for (float &value : data)
          value = float(random.integer(-4096, 4096)) / 64;
        return data;
      };
      std::vector<float> data = exact(w.me), want(n, 0.0f);
      for (int64_t r : members) {
        std::vector<float> theirs = exact(r);
        for (int64_t i = 0; i < n; ++i)
          want[i] += theirs[i];
      }
      if (average)
        for (float &value : want)
          value /= float(size);
      EXPECT_OK(tamoe_rt_all_reduce(w.ctx, group, data.data(), n, average),
                w.ctx);
      EXPECT(data == want, what, ": exact sums differ");

      // Random floats: close to the sum in double, and the same floats on
      // every member of the group (replicas stay identical).
      std::vector<float> mine = Random(8000 + w.me).floats(n);
      std::vector<double> sum(n, 0.0);
      for (int64_t r : members) {
        std::vector<float> theirs = Random(8000 + r).floats(n);
        for (int64_t i = 0; i < n; ++i)
          sum[i] += theirs[i];
      }
      EXPECT_OK(tamoe_rt_all_reduce(w.ctx, group, mine.data(), n, average),
                w.ctx);
      double worst = 0;
      for (int64_t i = 0; i < n; ++i)
        worst =
            std::max(worst, std::fabs(mine[i] - sum[i] / (average ? size : 1)));
      EXPECT(worst <= 1e-5, what, ": differs from the sum by ", worst);
      std::vector<float> everyone(n * w.ranks);
      MPI_Allgather(mine.data(), int(n), MPI_FLOAT, everyone.data(), int(n),
                    MPI_FLOAT, MPI_COMM_WORLD);
      for (int64_t r : members)
        EXPECT(std::memcmp(everyone.data() + r * n, mine.data(), n * 4) == 0,
               what, ": rank ", r, " got other floats");
    }
  }
  tamoe_rt_traffic_t after = traffic(w.ctx) - before;
  EXPECT(after.intra_node_bytes == 0 && after.inter_node_bytes == 0,
         "all_reduce counted as traffic");

  // Failures on every rank of the group alike, and the data untouched.
  std::vector<float> data(n, 1.0f);
  expectFailure(w,
                tamoe_rt_all_reduce(w.ctx, TAMOE_RT_GROUP_WORLD, data.data(),
                                    w.me == 3 ? n - 1 : n, 0),
                TAMOE_RT_ERROR_MISMATCH,
                str("tamoe_rt_all_reduce: ranks disagree on n: rank 0 has ", n,
                    ", rank 3 has ", n - 1));
  expectFailure(w,
                tamoe_rt_all_reduce(w.ctx, TAMOE_RT_GROUP_WORLD,
                                    w.me == 5 ? nullptr : data.data(), n, 1),
                TAMOE_RT_ERROR_INVALID_ARGUMENT,
                "tamoe_rt_all_reduce: rank 5: data is null");
  EXPECT(data == std::vector<float>(n, 1.0f), "data changed by a failure");
  // Within one node only: the other nodes carry on.
  bool odd = w.node(w.me) == 1 && w.index(w.me) == w.perNode - 1;
  tamoe_rt_status_t status = tamoe_rt_all_reduce(w.ctx, TAMOE_RT_GROUP_NODE,
                                                 data.data(), n, odd ? 1 : 0);
  if (w.node(w.me) == 1 && w.perNode > 1)
    expectFailure(w, status, TAMOE_RT_ERROR_MISMATCH,
                  str("tamoe_rt_all_reduce: ranks disagree on average: rank ",
                      w.perNode, " has 0, rank ", 2 * w.perNode - 1, " has 1"));
  else
    EXPECT(status == TAMOE_RT_SUCCESS, tamoe_rt_last_error(w.ctx));
  // Still usable.
  data.assign(n, 1.0f);
  EXPECT_OK(tamoe_rt_all_reduce(w.ctx, TAMOE_RT_GROUP_WORLD, data.data(), n, 0),
            w.ctx);
  EXPECT(data == std::vector<float>(n, float(w.ranks)), "sum after errors");
  tester.end("all_reduce",
             "world, node and peers groups, summed and averaged, the same "
             "floats on every member; a mismatched n or average fails on "
             "every rank of the group alike");
}

//===----------------------------------------------------------------------===//
// timeout: a rank that does not call the collective
//===----------------------------------------------------------------------===//

void timeoutScenario(const World &w) {
  // TAMOE_RT_TIMEOUT from the environment (the lit test sets 2 s).
  tamoe_rt_options_t options = tamoe_rt_default_options();
  const char *env = std::getenv("TAMOE_RT_TIMEOUT");
  if (!env || !*env)
    options.timeout_seconds = 2;
  // The 2 s bound covers the init too: ranks that left the previous
  // scenario seconds apart on a loaded machine start it together.
  MPI_Barrier(MPI_COMM_WORLD);
  tamoe_rt_context_t *ctx = nullptr;
  EXPECT_OK(tamoe_rt_init(&options, &ctx), nullptr);
  int64_t absent = w.ranks - 1, rowBytes = 8;
  std::vector<int32_t> ones(w.ranks, 1), recvCounts(w.ranks);
  Bytes send(w.ranks * rowBytes), received(w.ranks * rowBytes);
  double seconds = 0;
  if (w.me != absent) {
    auto start = std::chrono::steady_clock::now();
    tamoe_rt_status_t status = tamoe_rt_all_to_all(
        ctx, TAMOE_RT_GROUP_WORLD, send.data(), w.ranks, rowBytes, ones.data(),
        w.ranks, 1, received.data(), w.ranks, recvCounts.data());
    seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    std::string expected =
        "tamoe_rt_all_to_all: the exchange of counts over the world group did "
        "not complete within 2 s (a peer died or did not call it)";
    EXPECT(status == TAMOE_RT_ERROR_TIMEOUT, tamoe_rt_status_name(status));
    EXPECT(tamoe_rt_last_error(ctx) == expected, "'", tamoe_rt_last_error(ctx),
           "'");
    EXPECT(seconds >= 2 && seconds < 30, "timed out after ", seconds, " s");
    // The context's communicators are in an unknown state now.
    status = tamoe_rt_all_to_all_hierarchical(
        ctx, send.data(), w.ranks, rowBytes, ones.data(), 1, received.data(),
        w.ranks, recvCounts.data());
    EXPECT(status == TAMOE_RT_ERROR_TIMEOUT, tamoe_rt_status_name(status));
    EXPECT(tamoe_rt_last_error(ctx) ==
               "tamoe_rt_all_to_all_hierarchical: the context is unusable "
               "after an earlier failure (" +
                   expected.substr(std::strlen("tamoe_rt_all_to_all: ")) +
                   "); finalize it",
           "'", tamoe_rt_last_error(ctx), "'");
    // Local operations still work.
    std::vector<int32_t> counts = {1, 1}, regroupedCounts(2);
    Bytes regrouped(2 * rowBytes);
    EXPECT_OK(tamoe_rt_regroup(ctx, send.data(), 2, rowBytes, counts.data(), 2,
                               1, 1, regrouped.data(), regroupedCounts.data()),
              ctx);
  }
  EXPECT_OK(tamoe_rt_finalize(ctx), nullptr);
  // The other contexts are unaffected: everyone exchanges once more.
  EXPECT_OK(tamoe_rt_all_to_all(w.ctx, TAMOE_RT_GROUP_WORLD, send.data(),
                                w.ranks, rowBytes, ones.data(), w.ranks, 1,
                                received.data(), w.ranks, recvCounts.data()),
            w.ctx);
  tester.end("timeout", str(w.ranks - 1,
                            " ranks got TAMOE_RT_ERROR_TIMEOUT "
                            "when rank ",
                            absent, " stayed away"));
}

//===----------------------------------------------------------------------===//
// mismatch: ranks that call different collectives
//===----------------------------------------------------------------------===//

void mismatchScenario(const World &w) {
  // Rank 0 all-reduces while the others exchange, over one group: their
  // agreements are different collectives on one communicator. Each rank
  // gets a status (the message MPI truncated, or a timeout) instead of MPI
  // aborting the job, and only that context is lost.
  tamoe_rt_options_t options = tamoe_rt_default_options();
  options.timeout_seconds = 2;
  MPI_Barrier(MPI_COMM_WORLD);
  tamoe_rt_context_t *ctx = nullptr;
  EXPECT_OK(tamoe_rt_init(&options, &ctx), nullptr);
  int64_t rowBytes = 8;
  std::vector<int32_t> ones(w.ranks, 1), recvCounts(w.ranks);
  Bytes send(w.ranks * rowBytes), received(w.ranks * rowBytes);
  std::vector<float> data(16, 1.0f);
  auto start = std::chrono::steady_clock::now();
  tamoe_rt_status_t status =
      w.me == 0
          ? tamoe_rt_all_reduce(ctx, TAMOE_RT_GROUP_WORLD, data.data(),
                                int64_t(data.size()), 0)
          : tamoe_rt_all_to_all(ctx, TAMOE_RT_GROUP_WORLD, send.data(), w.ranks,
                                rowBytes, ones.data(), w.ranks, 1,
                                received.data(), w.ranks, recvCounts.data());
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  EXPECT(status == TAMOE_RT_ERROR_COMMUNICATION ||
             status == TAMOE_RT_ERROR_TIMEOUT,
         tamoe_rt_status_name(status), ": ", tamoe_rt_last_error(ctx));
  EXPECT(seconds < 30, "failed after ", seconds, " s");
  EXPECT_OK(tamoe_rt_finalize(ctx), nullptr);
  EXPECT_OK(tamoe_rt_all_to_all(w.ctx, TAMOE_RT_GROUP_WORLD, send.data(),
                                w.ranks, rowBytes, ones.data(), w.ranks, 1,
                                received.data(), w.ranks, recvCounts.data()),
            w.ctx);
  tester.end("mismatch", "a status on every rank when rank 0 called "
                         "all_reduce and the others all_to_all");
}

} // namespace

int main(int argc, char **argv) {
  // tamoe_rt_init initialises MPI here (and the last finalize ends it).
  tamoe_rt_options_t options = tamoe_rt_default_options();
  options.timeout_seconds = 120;
  tamoe_rt_context_t *ctx = nullptr;
  if (tamoe_rt_init(&options, &ctx) != TAMOE_RT_SUCCESS) {
    std::fprintf(stderr, "tamoe_rt_init failed: %s\n",
                 tamoe_rt_last_error(nullptr));
    return 1;
  }
  World w{ctx, tamoe_rt_rank(ctx), tamoe_rt_num_ranks(ctx),
          tamoe_rt_ranks_per_node(ctx), 0};
  w.nodes = w.ranks / w.perNode;
  tester.rank = int(w.me);
  tester.ranks = int(w.ranks);
  if (w.me == 0)
    std::printf("%lld ranks, %lld nodes x %lld\n", (long long)w.ranks,
                (long long)w.nodes, (long long)w.perNode);

  std::vector<std::string> scenarios(argv + 1, argv + argc);
  if (scenarios.empty())
    scenarios = {"exchange",   "dedup",   "layer",   "errors",
                 "all_reduce", "timeout", "mismatch"};
  for (const std::string &name : scenarios) {
    if (name == "exchange")
      exchangeScenario(w);
    else if (name == "dedup")
      dedupScenario(w);
    else if (name == "layer")
      layerScenario(w);
    else if (name == "errors")
      errorsScenario(w);
    else if (name == "all_reduce")
      allReduceScenario(w);
    else if (name == "timeout")
      timeoutScenario(w);
    else if (name == "mismatch")
      mismatchScenario(w);
    else if (name == "async")
      asyncScenario(w);
    else
      tester.check(false, __LINE__, "unknown scenario " + name);
  }

  int64_t failures = 0, checks = 0;
  MPI_Allreduce(&tester.failures, &failures, 1, MPI_INT64_T, MPI_SUM,
                MPI_COMM_WORLD);
  MPI_Allreduce(&tester.checks, &checks, 1, MPI_INT64_T, MPI_SUM,
                MPI_COMM_WORLD);
  if (w.me == 0)
    std::printf("%s: %lld checks, %lld failed\n", failures ? "FAIL" : "PASS",
                (long long)checks, (long long)failures);
  tamoe_rt_finalize(ctx);
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (!finalised) {
    std::fprintf(stderr, "rank %lld: MPI is still initialised\n",
                 (long long)w.me);
    return 1;
  }
  // MPI cannot come back.
  std::string expected =
      "tamoe_rt_init: MPI has been finalized (by the program, by "
      "tamoe_rt_finalize of the last context, or by a failed tamoe_rt_init, "
      "which finalizes the MPI it initialised so that the program can exit) "
      "and cannot be initialised again";
  if (tamoe_rt_init(nullptr, &ctx) != TAMOE_RT_ERROR_COMMUNICATION || ctx ||
      tamoe_rt_last_error(nullptr) != expected) {
    std::fprintf(stderr, "rank %lld: init after finalize: '%s'\n",
                 (long long)w.me, tamoe_rt_last_error(nullptr));
    return 1;
  }
  return failures ? 1 : 0;
}
