//===- TcpLauncherTest.cpp - Ranks that meet over TCP ---------------------===//
//
// Several processes on this machine, forked with torchrun's variables, meet
// through TcpLauncher: the collectives over every group, a rank that exits
// or never starts (the others fail with a message, in bounded time), bad
// variables, and a peer (played by the test, as rank 0 or as another rank)
// that sends malformed, truncated or oversized messages at the rendezvous
// and afterwards, says the wrong things in its hello, vanishes, or leaves a
// collective or the mesh of connections unfinished. Last, tamoe_rt_init
// itself over TCP: every rank fails alike, with the cpu backend (which
// needs MPI) and with a cuda backend that finds no GPU.
//
//===----------------------------------------------------------------------===//

#include "TcpLauncher.h"
#include "tamoe_rt/tamoe_rt.h"

#include "gtest/gtest.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

using namespace tamoe_rt;

namespace {

/// A socket bound to `port` (0: the kernel's pick), or -1.
int bindTo(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(uint16_t(port));
  if (bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int portOf(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length);
  return ntohs(address.sin_port);
}

/// A MASTER_PORT whose rendezvous port (the one above it) nobody listens
/// on now.
int freePort() {
  while (true) {
    int fd = bindTo(0);
    int port = portOf(fd);
    close(fd);
    if (port == 65535)
      continue;
    int above = bindTo(port + 1);
    if (above < 0)
      continue;
    close(above);
    return port;
  }
}

/// The port rank 0 listens on for MASTER_PORT=`port`.
int rendezvousPort(int port) { return port + 1; }

void clearLaunchEnvironment() {
  for (const char *name :
       {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
        "MASTER_PORT", "TAMOE_RT_MASTER_PORT", "TAMOE_RANKS_PER_NODE",
        "TAMOE_RT_TIMEOUT", "TAMOE_RT_LAUNCHER", "TAMOE_RT_CUDA_LIBRARY",
        "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_SIZE",
        "PMIX_RANK"})
    unsetenv(name);
}

/// torchrun's variables for `rank` of `world` (`perNode` per node).
void setLaunchEnvironment(int rank, int world, int perNode, int port) {
  clearLaunchEnvironment();
  setenv("RANK", std::to_string(rank).c_str(), 1);
  setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
  setenv("LOCAL_RANK", std::to_string(rank % perNode).c_str(), 1);
  setenv("LOCAL_WORLD_SIZE", std::to_string(perNode).c_str(), 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
}

struct Outcome {
  int exitCode = -1;
  std::string text;
  double seconds = 0;
};

/// Runs body(rank, text) in a forked process per rank in `ranks` with
/// torchrun's variables; each process's text and exit code, and how long it
/// ran. A process still running after `limit` seconds is killed (exit code
/// -1): a hang fails the test instead of stalling it.
std::vector<Outcome>
runRanks(const std::vector<int> &ranks, int world, int perNode, int port,
         const std::function<int(int, std::string &)> &body,
         double limit = 20) {
  struct Child {
    pid_t pid;
    int pipe;
  };
  std::vector<Child> children;
  auto start = std::chrono::steady_clock::now();
  for (int rank : ranks) {
    int fds[2];
    // Close-on-exec: a program a rank starts does not hold the pipe open.
    if (pipe2(fds, O_CLOEXEC) != 0)
      return {};
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      setLaunchEnvironment(rank, world, perNode, port);
      std::string text;
      int code = body(rank, text);
      (void)!write(fds[1], text.data(), text.size());
      close(fds[1]);
      _exit(code);
    }
    close(fds[1]);
    children.push_back({pid, fds[0]});
  }
  std::vector<Outcome> outcomes(children.size());
  for (size_t i = 0; i < children.size(); ++i) {
    int status = 0;
    while (waitpid(children[i].pid, &status, WNOHANG) == 0) {
      double elapsed = std::chrono::duration<double>(
                           std::chrono::steady_clock::now() - start)
                           .count();
      if (elapsed > limit) {
        kill(children[i].pid, SIGKILL);
        waitpid(children[i].pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    outcomes[i].seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    outcomes[i].exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    char buffer[4096];
    for (ssize_t n; (n = read(children[i].pipe, buffer, sizeof buffer)) > 0;)
      outcomes[i].text.append(buffer, size_t(n));
    close(children[i].pipe);
  }
  return outcomes;
}

std::string describe(const Status &status) {
  return std::string(tamoe_rt_status_name(status.code)) + ": " + status.message;
}

/// Creates a launcher as tamoe_rt_init does (backend kind 1).
Status create(std::unique_ptr<TcpLauncher> &launcher, double timeout) {
  return TcpLauncher::create(Status::success(), 0, timeout, 1, launcher);
}

/// A connection to the launcher listening on `port` at `ip` (network
/// order; the test as a peer), tried for up to 10 s with a fresh socket
/// each time (a socket whose connect failed is not tried again).
int connectToPort(int port, uint32_t ip = htonl(INADDR_LOOPBACK)) {
  for (int attempt = 0; attempt < 1000; ++attempt) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = ip;
    address.sin_port = htons(uint16_t(port));
    if (connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) ==
        0)
      return fd;
    close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

void sendBytes(int fd, const std::string &bytes) {
  ASSERT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
            ssize_t(bytes.size()));
}

/// Reads what the launcher sends until it closes, `seconds` pass or
/// `enough` bytes have come.
std::string receiveAll(int fd, double seconds, size_t enough = SIZE_MAX) {
  std::string bytes;
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (bytes.size() < enough && std::chrono::steady_clock::now() < deadline) {
    pollfd waiting{fd, POLLIN, 0};
    if (poll(&waiting, 1, 50) <= 0)
      continue;
    char buffer[4096];
    ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0)
      break;
    bytes.append(buffer, size_t(n));
  }
  return bytes;
}

std::string u32(uint32_t value) {
  std::string out;
  for (int i = 0; i < 4; ++i)
    out.push_back(char((value >> (8 * i)) & 0xff));
  return out;
}

std::string u64(uint64_t value) {
  return u32(uint32_t(value)) + u32(uint32_t(value >> 32));
}

/// What a rank does with its launcher once created: the outcome's status.
using Then = std::function<Status(TcpLauncher &)>;

/// Creates a launcher, then runs `then` on it if given; the status.
std::string createThen(double timeout, const Then &then) {
  std::unique_ptr<TcpLauncher> launcher;
  Status status = create(launcher, timeout);
  if (status.ok() && then)
    status = then(*launcher);
  return describe(status);
}

/// Rank 0 of a world of three creating its launcher (MASTER_PORT=`port`)
/// while the test plays the other ranks with `peers`; rank 0's outcome.
Outcome rankZeroOfThree(int port, const std::function<void()> &peers) {
  std::thread fake(peers);
  std::vector<Outcome> outcomes =
      runRanks({0}, 3, 3, port, [](int, std::string &text) {
        text = createThen(10, {});
        return 0;
      });
  fake.join();
  return outcomes.at(0);
}

/// Rank 0 of a world of two creating its launcher (with MASTER_PORT=`port`)
/// and running `then`, while the test plays rank 1 with `peer` (given the
/// connected socket); rank 0's outcome.
Outcome rankZeroAgainst(const std::function<void(int)> &peer,
                        double timeout = 3, int port = freePort(),
                        const Then &then = {}) {
  std::thread fake([&] {
    int fd = connectToPort(rendezvousPort(port));
    ASSERT_GE(fd, 0);
    peer(fd);
    close(fd);
  });
  std::vector<Outcome> outcomes =
      runRanks({0}, 2, 2, port, [&](int, std::string &text) {
        text = createThen(timeout, then);
        return 0;
      });
  fake.join();
  return outcomes.at(0);
}

/// Rank `rank` of a world of `world` (one node) creating its launcher and
/// running `then`, while the test plays rank 0 with `peer` (given the
/// accepted socket, once the rank's hello is read, and the port the hello
/// says the rank listens on); the rank's outcome.
Outcome againstFakeRankZero(int rank, int world, int port,
                            const std::function<void(int, int)> &peer,
                            double timeout = 2, const Then &then = {}) {
  int listener = bindTo(rendezvousPort(port));
  EXPECT_GE(listener, 0);
  EXPECT_EQ(listen(listener, 4), 0);
  std::thread fake([&] {
    // Bounded: a rank that never connects fails the test, not hangs it.
    pollfd waiting{listener, POLLIN, 0};
    ASSERT_EQ(poll(&waiting, 1, 20000), 1) << "the rank did not connect";
    int fd = accept(listener, nullptr, nullptr);
    ASSERT_GE(fd, 0);
    std::string hello = receiveAll(fd, 10, tcp::kHelloBytes);
    if (hello.size() == tcp::kHelloBytes) {
      int listens = 0;
      for (int i = 3; i >= 0; --i)
        listens = listens << 8 | uint8_t(hello[16 + i]);
      peer(fd, listens);
    }
    EXPECT_EQ(hello.size(), tcp::kHelloBytes) << "no hello from the rank";
    close(fd);
  });
  std::vector<Outcome> outcomes =
      runRanks({rank}, world, world, port, [&](int, std::string &text) {
        text = createThen(timeout, then);
        return 0;
      });
  fake.join();
  close(listener);
  return outcomes.at(0);
}

/// The table of a rendezvous that succeeded (session 1): each rank's
/// (ip, port), the ips in network order.
std::string tableOf(const std::vector<std::pair<uint32_t, uint32_t>> &ranks) {
  std::string payload = u32(TAMOE_RT_SUCCESS) + u32(0) + u64(1);
  for (auto [ip, port] : ranks)
    payload += u32(ip) + u32(port);
  return tcp::encodeFrame(tcp::kTable << 8, payload);
}

/// The agreement TcpLauncher::create makes in a world of two on one node
/// (2 ranks per node, backend kind 1), as a peer that agrees sends it.
std::string createsAgreement() {
  return tcp::encodeFrame(tcp::kAgree << 8 | TAMOE_RT_GROUP_WORLD,
                          u32(TAMOE_RT_SUCCESS) + u32(2) + u64(2) + u64(1) +
                              u32(0));
}

/// The valid start of rank 1: its hello, then rank 0's table read.
void joinAsRankOne(int fd) {
  sendBytes(fd, tcp::encodeHello(1, 2, 9));
  // Generous: a loaded machine may take seconds to schedule rank 0.
  std::string table = receiveAll(fd, 10, tcp::kHeaderBytes);
  ASSERT_GE(table.size(), tcp::kHeaderBytes) << "no table from rank 0";
}

} // namespace

TEST(TcpLauncher, CollectivesOverEveryGroup) {
  // 4 ranks as 2 nodes of 2.
  int port = freePort();
  std::vector<Outcome> outcomes =
      runRanks({0, 1, 2, 3}, 4, 2, port, [](int rank, std::string &text) {
        std::unique_ptr<TcpLauncher> launcher;
        Status status = create(launcher, 10);
        if (!status.ok()) {
          text = describe(status);
          return 1;
        }
        text +=
            describe(launcher->agree(TAMOE_RT_GROUP_WORLD, Status::success())) +
            "\n";
        // Node 1 (ranks 2, 3) learns rank 2's failure; node 0 does not.
        Status local =
            rank == 2 ? Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT, "boom")
                      : Status::success();
        text += describe(launcher->agree(TAMOE_RT_GROUP_NODE, local)) + "\n";
        text +=
            describe(launcher->agreeOn(TAMOE_RT_GROUP_WORLD, Status::success(),
                                       {{"split", rank == 3 ? 5 : 4}})) +
            "\n";
        // The peers group of local index i is ranks {i, i + 2}: rank i's
        // value reaches rank i + 2.
        int value = rank * 100 + 7;
        Status broadcast =
            launcher->broadcast(TAMOE_RT_GROUP_PEERS, &value, sizeof value);
        text += describe(broadcast) + " " + std::to_string(value) + "\n";
        std::vector<int32_t> send(4), recv;
        for (int m = 0; m < 4; ++m)
          send[m] = rank * 10 + m;
        text += describe(launcher->allToAllInts(TAMOE_RT_GROUP_WORLD, send, 1,
                                                recv, "counts"));
        for (int32_t v : recv)
          text += " " + std::to_string(v);
        return 0;
      });
  ASSERT_EQ(outcomes.size(), 4u);
  for (int rank = 0; rank < 4; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    EXPECT_EQ(outcomes[rank].exitCode, 0) << outcomes[rank].text;
    std::string node = rank >= 2
                           ? "TAMOE_RT_ERROR_INVALID_ARGUMENT: rank 2: boom"
                           : "TAMOE_RT_SUCCESS: ";
    std::string all;
    for (int m = 0; m < 4; ++m)
      all += " " + std::to_string(m * 10 + rank);
    EXPECT_EQ(outcomes[rank].text,
              "TAMOE_RT_SUCCESS: \n" + node +
                  "\nTAMOE_RT_ERROR_MISMATCH: ranks disagree on split: rank 0 "
                  "has 4, rank 3 has 5\nTAMOE_RT_SUCCESS:  " +
                  std::to_string((rank % 2) * 100 + 7) +
                  "\nTAMOE_RT_SUCCESS: " + all);
  }
}

TEST(TcpLauncher, AVeryLongTimeoutIsAWaitNotAnExpiry) {
  // Past about 9.2e9 s a deadline's nanoseconds would overflow the clock and
  // land in the past: every rank then timed out at once (TAMOE_RT_TIMEOUT=
  // 1e10 under mpirun).
  // Parsed at run time, as TAMOE_RT_TIMEOUT is (a constant would let the
  // compiler fold the conversion).
  Clock::time_point now = Clock::now();
  for (const char *text : {"9e9", "1e10", "1e300"}) {
    SCOPED_TRACE(std::string("timeout ") + text);
    double timeout = 0;
    ASSERT_TRUE(parsePositive(text, timeout));
    Clock::time_point deadline = deadlineAfter(timeout);
    EXPECT_GT(deadline, now + std::chrono::hours(24 * 365 * 30));
    // The rendezvous adds a second to a deadline: that must not overflow.
    EXPECT_GT(deadline + std::chrono::seconds(1), deadline);
  }
}

TEST(TcpLauncher, ARankThatExitsFailsTheOthersAtOnce) {
  // Rank 2 leaves after the rendezvous; the others' next agreement fails
  // when its sockets close, long before their 30 s timeout. It started a
  // program first, which outlives it: its sockets are close-on-exec, so the
  // program does not hold them open.
  int port = freePort();
  std::vector<Outcome> outcomes =
      runRanks({0, 1, 2}, 3, 3, port, [](int rank, std::string &text) {
        std::unique_ptr<TcpLauncher> launcher;
        Status status = create(launcher, 30);
        if (status.ok() && rank == 2)
          (void)!std::system("sleep 8 </dev/null >/dev/null 2>&1 &");
        if (!status.ok() || rank == 2) {
          text = describe(status);
          return 0;
        }
        text =
            describe(launcher->agree(TAMOE_RT_GROUP_WORLD, Status::success()));
        // A broken launcher refuses what follows.
        int value = 0;
        text += "\n" + describe(launcher->broadcast(TAMOE_RT_GROUP_WORLD,
                                                    &value, sizeof value));
        return 0;
      });
  ASSERT_EQ(outcomes.size(), 3u);
  for (int rank = 0; rank < 2; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    EXPECT_EQ(outcomes[rank].exitCode, 0);
    EXPECT_LT(outcomes[rank].seconds, 5);
    std::string failure =
        "the agreement on arguments and status over the world group: rank 2 "
        "closed its connection (it exited or failed)";
    EXPECT_EQ(outcomes[rank].text,
              "TAMOE_RT_ERROR_COMMUNICATION: " + failure +
                  "\nTAMOE_RT_ERROR_COMMUNICATION: the context is unusable "
                  "after an earlier failure (" +
                  failure + "); finalize it");
  }
}

TEST(TcpLauncher, ARankThatFailsButLivesFailsTheOthersAtOnce) {
  // Rank 2 calls a broadcast where the others agree: it hears rank 0's
  // agreement, fails, and stays alive. Its broken launcher closes its
  // sockets, so the others' agreement fails long before their 30 s timeout.
  int port = freePort();
  std::vector<Outcome> outcomes =
      runRanks({0, 1, 2}, 3, 3, port, [](int rank, std::string &text) {
        std::unique_ptr<TcpLauncher> launcher;
        Status status = create(launcher, 30);
        if (!status.ok()) {
          text = describe(status);
          return 1;
        }
        if (rank == 2) {
          int value = 0;
          text = describe(
              launcher->broadcast(TAMOE_RT_GROUP_WORLD, &value, sizeof value));
          std::this_thread::sleep_for(std::chrono::seconds(6));
          return 0;
        }
        text =
            describe(launcher->agree(TAMOE_RT_GROUP_WORLD, Status::success()));
        return 0;
      });
  ASSERT_EQ(outcomes.size(), 3u);
  EXPECT_EQ(outcomes[2].text,
            "TAMOE_RT_ERROR_MISMATCH: a broadcast over the world group: rank 0 "
            "is in another collective (op 768, this rank's 1024): the ranks "
            "called different operations");
  for (int rank = 0; rank < 2; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    EXPECT_EQ(outcomes[rank].exitCode, 0);
    EXPECT_LT(outcomes[rank].seconds, 5);
    EXPECT_EQ(outcomes[rank].text,
              "TAMOE_RT_ERROR_COMMUNICATION: the agreement on arguments and "
              "status over the world group: rank 2 closed its connection (it "
              "exited or failed)");
  }
}

TEST(TcpLauncher, AMissingRankTimesOutEverywhere) {
  // Rank 2 of 3 never starts: rank 0 names it after the timeout (3 s, time
  // for rank 1 to start on a loaded machine) and tells rank 1, which fails
  // with the same message.
  int port = freePort();
  std::vector<Outcome> outcomes =
      runRanks({0, 1}, 3, 3, port, [](int, std::string &text) {
        std::unique_ptr<TcpLauncher> launcher;
        text = describe(create(launcher, 3));
        return 0;
      });
  ASSERT_EQ(outcomes.size(), 2u);
  std::string expected =
      "TAMOE_RT_ERROR_TIMEOUT: rank(s) 2 did not join the rendezvous at "
      "127.0.0.1:" +
      std::to_string(rendezvousPort(port)) +
      " (MASTER_PORT + 1) within 3 s (not started, crashed, or a wrong "
      "MASTER_ADDR/MASTER_PORT)";
  EXPECT_EQ(outcomes[0].text, expected);
  EXPECT_EQ(outcomes[1].text, expected);
  EXPECT_LT(outcomes[1].seconds, 10);

  // Rank 0 never starts: rank 1 says it could not reach it.
  outcomes = runRanks({1}, 2, 2, port, [](int, std::string &text) {
    std::unique_ptr<TcpLauncher> launcher;
    text = describe(create(launcher, 1));
    return 0;
  });
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].text.rfind("TAMOE_RT_ERROR_TIMEOUT: could not reach "
                                   "rank 0 at 127.0.0.1:" +
                                       std::to_string(rendezvousPort(port)) +
                                       " (MASTER_PORT + 1) within 1 s (",
                                   0),
            0u)
      << outcomes[0].text;
}

TEST(TcpLauncher, BadVariables) {
  auto attempt =
      [](const std::vector<std::pair<const char *, const char *>> &variables) {
        clearLaunchEnvironment();
        for (auto [name, value] : variables)
          setenv(name, value, 1);
        std::unique_ptr<TcpLauncher> launcher;
        std::string text = describe(create(launcher, 1));
        clearLaunchEnvironment();
        return text;
      };
  std::string needs = " is not set: the tcp launcher needs torchrun's RANK, "
                      "WORLD_SIZE, MASTER_ADDR and MASTER_PORT";
  EXPECT_EQ(attempt({{"WORLD_SIZE", "two"}}),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: WORLD_SIZE='two' is not a "
            "positive integer up to 16777216");
  // A positive integer, but more ranks than the launcher takes.
  EXPECT_EQ(attempt({{"WORLD_SIZE", "16777217"}}),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: WORLD_SIZE='16777217' is not a "
            "positive integer up to 16777216");
  EXPECT_EQ(attempt({{"WORLD_SIZE", "4"}}),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: RANK" + needs);
  EXPECT_EQ(attempt({{"WORLD_SIZE", "4"}, {"RANK", "4"}}),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: RANK='4' is not a rank in [0, "
            "WORLD_SIZE=4)");
  EXPECT_EQ(attempt({{"WORLD_SIZE", "4"}, {"RANK", "1"}}),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: MASTER_ADDR" + needs);
  EXPECT_EQ(attempt({{"WORLD_SIZE", "4"},
                     {"RANK", "1"},
                     {"MASTER_ADDR", "127.0.0.1"},
                     {"MASTER_PORT", "70000"}}),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: MASTER_PORT='70000' is not a "
            "port in [1, 65535]");
  // tamoe listens on the port above MASTER_PORT, or on its own.
  EXPECT_EQ(attempt({{"WORLD_SIZE", "4"},
                     {"RANK", "1"},
                     {"MASTER_ADDR", "127.0.0.1"},
                     {"MASTER_PORT", "65535"}}),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: MASTER_PORT=65535 leaves no "
            "port above it for tamoe's rendezvous (MASTER_PORT itself is "
            "torch's store's): set TAMOE_RT_MASTER_PORT");
  EXPECT_EQ(attempt({{"WORLD_SIZE", "4"},
                     {"RANK", "1"},
                     {"MASTER_ADDR", "127.0.0.1"},
                     {"MASTER_PORT", "65535"},
                     {"TAMOE_RT_MASTER_PORT", "0"}}),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: TAMOE_RT_MASTER_PORT='0' is not "
            "a port in [1, 65535]");
  // A world of one needs no rendezvous; its variables are still checked.
  EXPECT_EQ(attempt({}), "TAMOE_RT_SUCCESS: ");
  EXPECT_EQ(attempt({{"LOCAL_RANK", "1"}}),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: rank 0: LOCAL_RANK=1 does not "
            "go with RANK=0 and 1 ranks per node: tamoe numbers ranks "
            "node-major (RANK = node * ranks per node + LOCAL_RANK), as "
            "torchrun does");
  EXPECT_EQ(attempt({{"LOCAL_WORLD_SIZE", "0"}}),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: rank 0: LOCAL_WORLD_SIZE='0' is "
            "not a positive integer");
}

TEST(TcpLauncher, TorchsStoreKeepsMasterPort) {
  // Under torchrun the agent's store listens on MASTER_PORT (played here by
  // a listener the test holds): the ranks meet on the port above it, or on
  // TAMOE_RT_MASTER_PORT.
  int port = freePort();
  int store = bindTo(port);
  ASSERT_GE(store, 0);
  ASSERT_EQ(listen(store, 16), 0);
  auto meet = [](int, std::string &text) {
    std::unique_ptr<TcpLauncher> launcher;
    text = describe(create(launcher, 10));
    return 0;
  };
  for (const Outcome &outcome : runRanks({0, 1}, 2, 2, port, meet))
    EXPECT_EQ(outcome.text, "TAMOE_RT_SUCCESS: ");
  int own = freePort();
  std::vector<Outcome> outcomes =
      runRanks({0, 1}, 2, 2, port, [own, meet](int rank, std::string &text) {
        setenv("TAMOE_RT_MASTER_PORT", std::to_string(own).c_str(), 1);
        return meet(rank, text);
      });
  for (const Outcome &outcome : outcomes)
    EXPECT_EQ(outcome.text, "TAMOE_RT_SUCCESS: ");
  // Rank 0 cannot listen where the store is.
  outcomes = runRanks({0}, 2, 2, port, [port](int, std::string &text) {
    setenv("TAMOE_RT_MASTER_PORT", std::to_string(port).c_str(), 1);
    std::unique_ptr<TcpLauncher> launcher;
    text = describe(create(launcher, 1));
    return 0;
  });
  EXPECT_EQ(outcomes.at(0).text,
            "TAMOE_RT_ERROR_COMMUNICATION: rank 0 cannot listen on port " +
                std::to_string(port) +
                " (TAMOE_RT_MASTER_PORT): Address already in use");
  close(store);
}

TEST(TcpLauncher, ARankWithAnotherWorldSizeHearsWhy) {
  // Rank 0 has WORLD_SIZE=2; rank 1 says 3, or 600 (whose table would be
  // longer than 2's): both sides report rank 0's verdict.
  for (const char *theirs : {"3", "600"}) {
    SCOPED_TRACE(theirs);
    int port = freePort();
    std::vector<Outcome> outcomes =
        runRanks({0, 1}, 2, 2, port, [theirs](int rank, std::string &text) {
          if (rank == 1)
            setenv("WORLD_SIZE", theirs, 1);
          std::unique_ptr<TcpLauncher> launcher;
          text = describe(create(launcher, 5));
          return 0;
        });
    std::string expected = "TAMOE_RT_ERROR_MISMATCH: rendezvous at 127.0.0.1:" +
                           std::to_string(rendezvousPort(port)) +
                           " (MASTER_PORT + 1): rank 1 at 127.0.0.1 has "
                           "WORLD_SIZE=" +
                           theirs + ", rank 0 has 2";
    ASSERT_EQ(outcomes.size(), 2u);
    EXPECT_EQ(outcomes[0].text, expected);
    EXPECT_EQ(outcomes[1].text, expected);
  }
}

TEST(TcpLauncher, APeersMessageIsPrintedSafely) {
  // The test plays rank 0 and fails the rendezvous with a message holding a
  // terminal escape and a NUL: rank 1 reports it with both replaced.
  int port = freePort();
  int listener = bindTo(rendezvousPort(port));
  ASSERT_GE(listener, 0);
  ASSERT_EQ(listen(listener, 4), 0);
  std::thread fake([&] {
    int fd = accept(listener, nullptr, nullptr);
    ASSERT_GE(fd, 0);
    std::string hello;
    while (hello.size() < tcp::kHelloBytes) {
      char c;
      if (recv(fd, &c, 1, 0) != 1)
        break;
      hello += c;
    }
    std::string message("\x1b[31mred\0hidden", 15);
    sendBytes(fd, tcp::encodeFrame(tcp::kTable << 8,
                                   u32(TAMOE_RT_ERROR_MISMATCH) +
                                       u32(uint32_t(message.size())) + message +
                                       std::string(8, '\0')));
    receiveAll(fd, 1);
    close(fd);
  });
  std::vector<Outcome> outcomes =
      runRanks({1}, 2, 2, port, [](int, std::string &text) {
        std::unique_ptr<TcpLauncher> launcher;
        text = describe(create(launcher, 3));
        return 0;
      });
  fake.join();
  close(listener);
  EXPECT_EQ(outcomes.at(0).text, "TAMOE_RT_ERROR_MISMATCH: ?[31mred?hidden");
}

TEST(TcpLauncher, SilentConnectionsDoNotKeepRanksOut) {
  // 100 connections to rank 0 that say nothing, while rank 0 may hold only
  // 40 descriptors: it drops the oldest to make room, and rank 1 joins.
  int port = freePort();
  std::vector<int> silent;
  std::thread flood([&] {
    for (int i = 0; i < 100; ++i) {
      int fd = connectToPort(rendezvousPort(port));
      if (fd >= 0)
        silent.push_back(fd);
    }
  });
  std::vector<Outcome> outcomes =
      runRanks({0, 1}, 2, 2, port, [](int rank, std::string &text) {
        if (rank == 0) {
          rlimit limit{40, 40};
          setrlimit(RLIMIT_NOFILE, &limit);
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(300));
        }
        std::unique_ptr<TcpLauncher> launcher;
        text = describe(create(launcher, 10));
        return 0;
      });
  flood.join();
  for (int fd : silent)
    close(fd);
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_EQ(outcomes[0].text, "TAMOE_RT_SUCCESS: ");
  EXPECT_EQ(outcomes[1].text, "TAMOE_RT_SUCCESS: ");

  // One that stays silent is dropped after 5 s, and named if rank 1 never
  // comes (by rank 0's deadline, 4 s after the drop if it connects at once).
  std::thread quiet([&] {
    int fd = connectToPort(rendezvousPort(port));
    receiveAll(fd, 10);
    close(fd);
  });
  outcomes = runRanks({0}, 2, 2, port, [](int, std::string &text) {
    std::unique_ptr<TcpLauncher> launcher;
    text = describe(create(launcher, 9));
    return 0;
  });
  quiet.join();
  EXPECT_NE(outcomes.at(0).text.find(
                "; closed 1 connection(s) that did not join (first "
                "127.0.0.1: sent 0 of 20 bytes of its hello in 5 s)"),
            std::string::npos)
      << outcomes.at(0).text;
}

TEST(TcpLauncher, ARankQueuedBehindSilentConnectionsIsRead) {
  // Rank 0 is stopped (descheduled) while rank 1's connection and its whole
  // hello, then 200 silent connections, queue at its listener. Running
  // again, it accepts more than WORLD_SIZE + 64 at once: it must read rank
  // 1's hello before closing the oldest to make room (it closed rank 1
  // unread, which then failed, and rank 0 timed out waiting for it).
  int port = freePort();
  int pids[2];
  ASSERT_EQ(pipe2(pids, O_CLOEXEC), 0);
  std::string table;
  std::thread peers([&] {
    pid_t pid = 0;
    ASSERT_EQ(read(pids[0], &pid, sizeof pid), ssize_t(sizeof pid));
    int probe = connectToPort(rendezvousPort(port)); // rank 0 listens
    ASSERT_GE(probe, 0);
    kill(pid, SIGSTOP);
    int fd = connectToPort(rendezvousPort(port));
    sendBytes(fd, tcp::encodeHello(1, 2, 9));
    std::vector<int> silent;
    for (int i = 0; i < 200; ++i)
      silent.push_back(connectToPort(rendezvousPort(port)));
    kill(pid, SIGCONT);
    table = receiveAll(fd, 10, tcp::kHeaderBytes + 4);
    for (int s : silent)
      close(s);
    close(probe);
    close(fd);
  });
  std::vector<Outcome> outcomes =
      runRanks({0}, 2, 2, port, [&](int, std::string &text) {
        pid_t self = getpid();
        (void)!write(pids[1], &self, sizeof self);
        std::unique_ptr<TcpLauncher> launcher;
        text = describe(create(launcher, 3));
        return 0;
      });
  peers.join();
  close(pids[0]);
  close(pids[1]);
  ASSERT_GE(table.size(), tcp::kHeaderBytes + 4)
      << "rank 1 got no table; rank 0: " << outcomes.at(0).text;
  EXPECT_EQ(table.substr(tcp::kHeaderBytes, 4), u32(TAMOE_RT_SUCCESS));
}

TEST(TcpLauncher, RankZeroAtItsDescriptorLimitKeepsItsRanks) {
  // Rank 0 may open exactly two descriptors: its listener and rank 1's
  // connection. Linux then answers the next accept with EMFILE although
  // nothing is queued; that must not close rank 1.
  int port = freePort();
  std::vector<Outcome> outcomes =
      runRanks({0, 1}, 2, 2, port, [](int rank, std::string &text) {
        if (rank == 0) {
          int first = dup(0), second = dup(0);
          close(first);
          close(second);
          rlimit limit{rlim_t(second + 1), rlim_t(second + 1)};
          setrlimit(RLIMIT_NOFILE, &limit);
        }
        std::unique_ptr<TcpLauncher> launcher;
        text = describe(create(launcher, 5));
        return 0;
      });
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_EQ(outcomes[0].text, "TAMOE_RT_SUCCESS: ");
  EXPECT_EQ(outcomes[1].text, "TAMOE_RT_SUCCESS: ");
}

TEST(TcpLauncher, LoopbackRanksAreListedAtAReachableAddress) {
  // Ranks 0 and 1 meet at 127.0.0.1; the test plays rank 2 from another
  // host, reaching rank 0 at this machine's other address. The table gives
  // it rank 1 at that address, not at 127.0.0.1 (which is its own host).
  uint32_t other = 0;
  ifaddrs *interfaces = nullptr;
  if (getifaddrs(&interfaces) == 0)
    for (ifaddrs *i = interfaces; i && !other; i = i->ifa_next)
      if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET &&
          (i->ifa_flags & IFF_UP)) {
        uint32_t ip =
            reinterpret_cast<sockaddr_in *>(i->ifa_addr)->sin_addr.s_addr;
        if (ntohl(ip) >> 24 != 127)
          other = ip;
      }
  freeifaddrs(interfaces);
  if (!other)
    GTEST_SKIP() << "this machine has no IPv4 address but loopback";
  int port = freePort();
  // Header, code, message length (0), session; then (ip, port) per rank.
  const size_t rankOne = tcp::kHeaderBytes + 4 + 4 + 8 + 8;
  std::string table;
  std::thread remote([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    int fd = connectToPort(rendezvousPort(port), other);
    ASSERT_GE(fd, 0);
    sendBytes(fd, tcp::encodeHello(2, 3, 9));
    table = receiveAll(fd, 10, rankOne + 16);
    close(fd);
  });
  runRanks({0, 1}, 3, 3, port, [](int, std::string &text) {
    std::unique_ptr<TcpLauncher> launcher;
    text = describe(create(launcher, 10));
    return 0;
  });
  remote.join();
  ASSERT_GE(table.size(), rankOne + 8) << table.size() << " bytes";
  EXPECT_EQ(table.substr(tcp::kHeaderBytes, 4), u32(TAMOE_RT_SUCCESS));
  EXPECT_EQ(table.substr(rankOne, 4), u32(other));
}

TEST(TcpLauncher, MalformedHellosAreIgnoredAndNamed) {
  std::string timedOut = "TAMOE_RT_ERROR_TIMEOUT: rank(s) 1 did not join the "
                         "rendezvous at 127.0.0.1:";
  // Not tamoe's protocol at all.
  Outcome outcome = rankZeroAgainst(
      [](int fd) { sendBytes(fd, "GET / HTTP/1.0\r\n\r\nxx"); }, 3);
  EXPECT_NE(outcome.text.find(timedOut), std::string::npos) << outcome.text;
  EXPECT_NE(outcome.text.find("; closed 1 connection(s) that did not join "
                              "(first 127.0.0.1: not a tamoe hello (magic "
                              "0x20544547))"),
            std::string::npos)
      << outcome.text;
  // A hello cut short.
  outcome = rankZeroAgainst(
      [](int fd) { sendBytes(fd, tcp::encodeHello(1, 2, 9).substr(0, 7)); }, 3);
  EXPECT_NE(outcome.text.find("(first 127.0.0.1: closed after 7 of 20 bytes "
                              "of its hello)"),
            std::string::npos)
      << outcome.text;
}

TEST(TcpLauncher, WrongHellosFailTheRendezvous) {
  std::string answer;
  Outcome outcome = rankZeroAgainst([&](int fd) {
    sendBytes(fd, tcp::encodeHello(1, 3, 9));
    answer = receiveAll(fd, 10); // until rank 0 closes
  });
  std::string failure = "rendezvous at 127.0.0.1:";
  EXPECT_NE(outcome.text.find("TAMOE_RT_ERROR_MISMATCH: rendezvous at "),
            std::string::npos)
      << outcome.text;
  EXPECT_NE(outcome.text.find(": rank 1 at 127.0.0.1 has WORLD_SIZE=3, rank "
                              "0 has 2"),
            std::string::npos)
      << outcome.text;
  // The peer is told why (the table carries the failure).
  EXPECT_NE(answer.find("has WORLD_SIZE=3, rank 0 has 2"), std::string::npos);
  EXPECT_EQ(answer.substr(tcp::kHeaderBytes, 4), u32(TAMOE_RT_ERROR_MISMATCH));

  outcome =
      rankZeroAgainst([](int fd) { sendBytes(fd, tcp::encodeHello(5, 2, 9)); });
  EXPECT_NE(
      outcome.text.find(": a process at 127.0.0.1 says RANK=5, outside [1, "
                        "WORLD_SIZE=2)"),
      std::string::npos)
      << outcome.text;

  std::string hello = tcp::encodeHello(1, 2, 9);
  hello.replace(4, 4, u32(7));
  outcome = rankZeroAgainst([&](int fd) { sendBytes(fd, hello); });
  EXPECT_NE(outcome.text.find(": a rank at 127.0.0.1 speaks protocol "
                              "version 7, rank 0 version 2"),
            std::string::npos)
      << outcome.text;
}

TEST(TcpLauncher, MalformedMessagesAfterTheRendezvous) {
  // Rank 1 joins properly, then answers rank 0's first agreement (the one
  // in create) with a bad message.
  std::string agreement = "the agreement on arguments and status over the "
                          "world group: rank 1 ";
  auto answer = [&](const std::string &bytes) {
    return rankZeroAgainst([&](int fd) {
             joinAsRankOne(fd);
             sendBytes(fd, bytes);
             receiveAll(fd, 1);
           })
        .text;
  };
  uint32_t agree = tcp::kAgree << 8 | TAMOE_RT_GROUP_WORLD;
  // Larger than any agreement: refused before anything is allocated.
  std::string header = u32(tcp::kMagic) + u32(agree) + u32(0x80000000u);
  EXPECT_EQ(answer(header),
            "TAMOE_RT_ERROR_COMMUNICATION: " + agreement +
                "sent a message of 2147483648 bytes where at most 4124 were "
                "expected");
  EXPECT_EQ(answer(u32(0xdeadbeef) + u32(agree) + u32(4)),
            "TAMOE_RT_ERROR_COMMUNICATION: " + agreement +
                "sent bytes that are not a tamoe message (magic 0xdeadbeef)");
  EXPECT_EQ(answer(u32(tcp::kMagic) + u32(tcp::kBroadcast << 8) + u32(4)),
            "TAMOE_RT_ERROR_MISMATCH: " + agreement +
                "is in another collective (op 1024, this rank's 768): the "
                "ranks called different operations");
  // Cut in the middle of the body.
  EXPECT_EQ(answer(u32(tcp::kMagic) + u32(agree) + u32(40) + "abc"),
            "TAMOE_RT_ERROR_COMMUNICATION: " + agreement +
                "closed its connection in the middle of a message (it exited "
                "or failed)");
  // Well framed, but one value where rank 0 agrees on two.
  std::string body = u32(0) + u32(1) + std::string(8, '\0') + u32(0);
  EXPECT_EQ(
      answer(tcp::encodeFrame(agree, body)),
      "TAMOE_RT_ERROR_MISMATCH: " + agreement.substr(0, agreement.size() - 7) +
          "rank 1 sent a malformed agreement (20 bytes, 1 values where "
          "2 were expected)");
  // A status code that is none of tamoe_rt_status_t's.
  body = u32(99) + u32(2) + std::string(16, '\0') + u32(0);
  EXPECT_EQ(
      answer(tcp::encodeFrame(agree, body)),
      "TAMOE_RT_ERROR_MISMATCH: " + agreement.substr(0, agreement.size() - 7) +
          "rank 1 sent a malformed agreement (28 bytes, 2 values where "
          "2 were expected)");
}

TEST(TcpLauncher, HellosNoRankCanHaveFailTheRendezvous) {
  // A rank that says it listens on no port cannot be reached by the others.
  for (uint32_t listens : {0u, 70000u}) {
    SCOPED_TRACE(listens);
    int port = freePort();
    std::string answer;
    Outcome outcome = rankZeroAgainst(
        [&](int fd) {
          sendBytes(fd, tcp::encodeHello(1, 2, listens));
          answer = receiveAll(fd, 10); // until rank 0 closes
        },
        10, port);
    std::string failure =
        "rendezvous at 127.0.0.1:" + std::to_string(rendezvousPort(port)) +
        " (MASTER_PORT + 1): rank 1 listens on port " +
        std::to_string(listens) + ", which is not a port";
    EXPECT_EQ(outcome.text, "TAMOE_RT_ERROR_MISMATCH: " + failure);
    EXPECT_EQ(answer.substr(tcp::kHeaderBytes, 4),
              u32(TAMOE_RT_ERROR_MISMATCH));
    EXPECT_NE(answer.find(failure), std::string::npos);
  }

  // Two processes of a world of three say they are rank 1: both hear why.
  int port = freePort();
  std::string first, second;
  Outcome outcome = rankZeroOfThree(port, [&] {
    int a = connectToPort(rendezvousPort(port));
    int b = connectToPort(rendezvousPort(port));
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    sendBytes(a, tcp::encodeHello(1, 3, 9));
    sendBytes(b, tcp::encodeHello(1, 3, 10));
    first = receiveAll(a, 10);
    second = receiveAll(b, 10);
    close(a);
    close(b);
  });
  std::string failure =
      "rendezvous at 127.0.0.1:" + std::to_string(rendezvousPort(port)) +
      " (MASTER_PORT + 1): two processes say RANK=1 (at "
      "127.0.0.1 and 127.0.0.1)";
  EXPECT_EQ(outcome.text, "TAMOE_RT_ERROR_MISMATCH: " + failure);
  for (const std::string &answer : {first, second}) {
    EXPECT_EQ(answer.substr(tcp::kHeaderBytes, 4),
              u32(TAMOE_RT_ERROR_MISMATCH));
    EXPECT_NE(answer.find(failure), std::string::npos);
  }
}

TEST(TcpLauncher, ARankThatVanishesBeforeItsTableFailsTheRendezvous) {
  // Rank 1 of 3 says hello and resets its connection; rank 2 joins after:
  // rank 0 cannot send rank 1 the table, and tells rank 2 so.
  int port = freePort();
  std::string answer;
  Outcome outcome = rankZeroOfThree(port, [&] {
    int one = connectToPort(rendezvousPort(port));
    ASSERT_GE(one, 0);
    sendBytes(one, tcp::encodeHello(1, 3, 9));
    // The hello stays readable after the reset; the connection does not.
    linger reset{1, 0};
    setsockopt(one, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    close(one);
    int two = connectToPort(rendezvousPort(port));
    ASSERT_GE(two, 0);
    sendBytes(two, tcp::encodeHello(2, 3, 9));
    answer = receiveAll(two, 10);
    close(two);
  });
  // The errno's text is the kernel's (a reset, or a broken pipe).
  std::string failure =
      "rendezvous at 127.0.0.1:" + std::to_string(rendezvousPort(port)) +
      " (MASTER_PORT + 1): sending rank 1 the table "
      "failed: the connection is closed (";
  const std::string &text = outcome.text;
  EXPECT_EQ(text.rfind("TAMOE_RT_ERROR_COMMUNICATION: " + failure, 0), 0u)
      << text;
  EXPECT_EQ(text.back(), ')') << text;
  EXPECT_EQ(answer.substr(tcp::kHeaderBytes, 4),
            u32(TAMOE_RT_ERROR_COMMUNICATION));
  EXPECT_NE(answer.find(failure), std::string::npos);
}

TEST(TcpLauncher, AnUnresolvableMasterAddrIsNamed) {
  // Not a host name (a space): refused by the resolver without a lookup on
  // the network. The reason is the resolver's.
  const char *host = "not a host";
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo *found = nullptr;
  int rc = getaddrinfo(host, nullptr, &hints, &found);
  ASSERT_NE(rc, 0);
  std::vector<Outcome> outcomes =
      runRanks({1}, 2, 2, freePort(), [host](int, std::string &text) {
        setenv("MASTER_ADDR", host, 1);
        text = createThen(1, {});
        return 0;
      });
  EXPECT_EQ(outcomes.at(0).text,
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: MASTER_ADDR='not a host' does "
            "not resolve to an IPv4 address: " +
                std::string(gai_strerror(rc)));
}

TEST(TcpLauncher, ATableThatIsNotOneFailsTheRank) {
  // The test plays rank 0 (or whatever listens on its port) and answers
  // rank 1's hello with something else than a table. A fresh port each
  // time, which the messages call PORT.
  auto answer = [](const std::string &bytes) {
    int port = freePort();
    std::string text = againstFakeRankZero(
                           1, 2, port,
                           [&](int fd, int) {
                             sendBytes(fd, bytes);
                             receiveAll(fd, 10); // until rank 1 closes
                           },
                           10)
                           .text;
    std::string where = "127.0.0.1:" + std::to_string(rendezvousPort(port));
    if (size_t at = text.find(where); at != std::string::npos)
      text.replace(at, where.size(), "127.0.0.1:PORT");
    return text;
  };
  std::string failure = "TAMOE_RT_ERROR_COMMUNICATION: rendezvous at "
                        "127.0.0.1:PORT (MASTER_PORT + 1): ";
  // Another server on the port: an ssh daemon's greeting.
  EXPECT_EQ(answer("SSH-2.0-OpenSSH_9.2\r\n"),
            failure + "no table from rank 0: it is not a tamoe message "
                      "(magic 0x2d485353)");
  EXPECT_EQ(answer(tcp::encodeFrame(tcp::kJoin << 8, u32(1) + u64(1))),
            failure + "no table from rank 0: it is message 512 where 256 "
                      "was expected");
  // Larger than any table of a world of two: refused before it is read.
  // Status, message length, message, session, then (ip, port) per rank.
  size_t bound = 4 + 4 + tcp::kMaxMessageBytes + 8 + 2 * 8;
  EXPECT_EQ(answer(u32(tcp::kMagic) + u32(tcp::kTable << 8) + u32(0xffffffffu)),
            failure +
                "no table from rank 0: it announces 4294967295 bytes "
                "where at most " +
                std::to_string(bound) + " were expected");
  // Well framed, but rank 1 would listen on no port; or a byte too many.
  uint32_t loopback = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(answer(tableOf({{loopback, 1}, {loopback, 70000}})),
            failure + "rank 0 sent a malformed table (32 bytes)");
  std::string table = tableOf({{loopback, 1}, {loopback, 9}});
  table.replace(8, 4, u32(33));
  EXPECT_EQ(answer(table + "x"),
            failure + "rank 0 sent a malformed table (33 bytes)");
}

TEST(TcpLauncher, TheMeshNamesTheRankThatIsNotThere) {
  // The test plays rank 0 of 3 and lists rank 1 at a port where nothing
  // listens (bound, so that nothing else takes it): rank 2 tries until its
  // timeout, then names rank 1 and the last error. Also when the table
  // comes in the second of grace after rank 2's own timeout (rank 0
  // answers at its deadline): the mesh is a phase of its own, with the
  // whole timeout again (rank 2 made no attempt).
  int closed = bindTo(0);
  ASSERT_GE(closed, 0);
  uint32_t loopback = htonl(INADDR_LOOPBACK);
  for (auto [delayMs, timeout] : {std::pair{0, 3}, std::pair{2300, 2}}) {
    Outcome outcome = againstFakeRankZero(
        2, 3, freePort(),
        [&](int fd, int listens) {
          std::this_thread::sleep_for(std::chrono::milliseconds(delayMs));
          sendBytes(fd, tableOf({{loopback, 1},
                                 {loopback, uint32_t(portOf(closed))},
                                 {loopback, uint32_t(listens)}}));
          receiveAll(fd, 10); // until rank 2 closes
        },
        timeout);
    EXPECT_EQ(outcome.text,
              "TAMOE_RT_ERROR_TIMEOUT: could not connect to rank 1 at "
              "127.0.0.1:" +
                  std::to_string(portOf(closed)) + " within " +
                  std::to_string(timeout) + " s (Connection refused)");
  }
  close(closed);

  // Rank 1 waits for rank 2, which never comes; a connection with a join
  // of another session (an earlier job's rank 2) is closed and named.
  Outcome outcome = againstFakeRankZero(
      1, 3, freePort(),
      [&](int fd, int listens) {
        sendBytes(fd, tableOf({{loopback, 1},
                               {loopback, uint32_t(listens)},
                               {loopback, 1}}));
        int stale = connectToPort(listens);
        ASSERT_GE(stale, 0);
        sendBytes(stale, tcp::encodeFrame(tcp::kJoin << 8, u32(2) + u64(2)));
        receiveAll(fd, 10); // until rank 1 closes
        close(stale);
      },
      3);
  EXPECT_EQ(outcome.text,
            "TAMOE_RT_ERROR_TIMEOUT: rank(s) 2 did not connect to rank 1 "
            "within 3 s; closed 1 connection(s) that did not join (first "
            "127.0.0.1: not a join of a higher rank of this session)");
}

TEST(TcpLauncher, ATableThatDoesNotComeTimesOut) {
  // Rank 0 (the test) reads rank 2's hello and stays silent: rank 2 times
  // out waiting for the table, a TIMEOUT like every other wait.
  int port = freePort();
  Outcome outcome = againstFakeRankZero(
      2, 3, port, [](int fd, int) { receiveAll(fd, 10); }, 1);
  EXPECT_EQ(outcome.text,
            "TAMOE_RT_ERROR_TIMEOUT: rendezvous at 127.0.0.1:" +
                std::to_string(rendezvousPort(port)) +
                " (MASTER_PORT + 1): no table from rank 0: timed out after 0 "
                "of 12 bytes");
}

TEST(TcpLauncher, ACollectiveAPeerDoesNotJoinTimesOut) {
  // Rank 1 (the test) joins and then says nothing: rank 0's agreement in
  // create hears no message.
  Outcome outcome = rankZeroAgainst(
      [](int fd) {
        joinAsRankOne(fd);
        receiveAll(fd, 10); // until rank 0 closes
      },
      2);
  EXPECT_EQ(outcome.text,
            "TAMOE_RT_ERROR_TIMEOUT: the agreement on arguments and status "
            "over the world group did not complete within 2 s: no message "
            "from rank 1 (a peer died or did not call it)");

  // Rank 1 agrees, then reads nothing while rank 0 broadcasts more than
  // the sockets' buffers hold: rank 0 cannot send it all. Rank 1 stays
  // connected until rank 0 has given up (a byte on `done`).
  int done[2];
  ASSERT_EQ(pipe2(done, O_CLOEXEC), 0);
  outcome = rankZeroAgainst(
      [&](int fd) {
        // A small window: whatever the machine's buffer sizes, 64 MiB
        // cannot all be in flight.
        int small = 4096;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        joinAsRankOne(fd);
        sendBytes(fd, createsAgreement());
        pollfd waiting{done[0], POLLIN, 0};
        poll(&waiting, 1, 20000);
      },
      2, freePort(),
      [&](TcpLauncher &launcher) {
        std::string bytes(64 << 20, 'x');
        Status status = launcher.broadcast(TAMOE_RT_GROUP_WORLD, bytes.data(),
                                           bytes.size());
        (void)!write(done[1], "", 1);
        return status;
      });
  close(done[0]);
  close(done[1]);
  EXPECT_EQ(outcome.text,
            "TAMOE_RT_ERROR_TIMEOUT: a broadcast over the world group did not "
            "complete within 2 s: could not send to rank 1 (a peer died or "
            "did not call it)");
}

TEST(TcpLauncher, AMessageOfAnotherSizeIsRefused) {
  // The test plays rank 1 and sends rank 0 half its counts.
  Outcome outcome = rankZeroAgainst(
      [](int fd) {
        joinAsRankOne(fd);
        sendBytes(fd, createsAgreement());
        sendBytes(fd, tcp::encodeFrame(tcp::kAllToAll << 8,
                                       std::string("\x01\x00", 2)));
        receiveAll(fd, 10); // until rank 0 closes
      },
      10, freePort(),
      [](TcpLauncher &launcher) {
        std::vector<int32_t> recv;
        return launcher.allToAllInts(TAMOE_RT_GROUP_WORLD, {7, 8}, 1, recv,
                                     "counts");
      });
  EXPECT_EQ(outcome.text, "TAMOE_RT_ERROR_MISMATCH: counts: rank 1 sent 2 "
                          "bytes, this rank expected 4");

  // The test plays rank 0 and broadcasts 2 bytes where rank 1 expects 4.
  uint32_t loopback = htonl(INADDR_LOOPBACK);
  outcome = againstFakeRankZero(
      1, 2, freePort(),
      [&](int fd, int listens) {
        sendBytes(fd, tableOf({{loopback, 1}, {loopback, uint32_t(listens)}}));
        sendBytes(fd, createsAgreement());
        sendBytes(fd, tcp::encodeFrame(tcp::kBroadcast << 8, "ab"));
        receiveAll(fd, 10); // until rank 1 closes
      },
      10,
      [](TcpLauncher &launcher) {
        int32_t value = 0;
        return launcher.broadcast(TAMOE_RT_GROUP_WORLD, &value, sizeof value);
      });
  EXPECT_EQ(outcome.text,
            "TAMOE_RT_ERROR_MISMATCH: a broadcast over the world group: rank 0 "
            "sent 2 bytes, this rank expected 4");
}

TEST(TcpLauncher, ABroadcastOfBytesFromNowhereIsRefused) {
  clearLaunchEnvironment();
  std::unique_ptr<TcpLauncher> launcher;
  ASSERT_TRUE(create(launcher, 1).ok());
  EXPECT_EQ(describe(launcher->broadcast(TAMOE_RT_GROUP_WORLD, nullptr, 4)),
            "TAMOE_RT_ERROR_INVALID_ARGUMENT: broadcast: hostData is null");
  // Nothing to broadcast needs no buffer.
  EXPECT_EQ(describe(launcher->broadcast(TAMOE_RT_GROUP_WORLD, nullptr, 0)),
            "TAMOE_RT_SUCCESS: ");
}

TEST(TcpLauncher, InitOverTcpFailsEveryRankAlike) {
  // tamoe_rt_init under torchrun's variables meets over TCP: the cpu
  // backend is refused on every rank with one message, and so is a cuda
  // backend that finds no GPU (its library's verdict, agreed over TCP).
  int port = freePort();
  auto init = [](tamoe_rt_backend_t backend, bool forced = false) {
    return [backend, forced](int, std::string &text) {
      if (forced)
        setenv("TAMOE_RT_LAUNCHER", "tcp", 1);
      tamoe_rt_options_t options = tamoe_rt_default_options();
      options.backend = backend;
      options.timeout_seconds = 10;
      if (backend == TAMOE_RT_BACKEND_CUDA)
        setenv("TAMOE_RT_CUDA_LIBRARY", TAMOE_RT_FAKE_CUDA_NO_GPU, 1);
      tamoe_rt_context_t *context = nullptr;
      tamoe_rt_status_t status = tamoe_rt_init(&options, &context);
      text = std::string(tamoe_rt_status_name(status)) + ": " +
             tamoe_rt_last_error(nullptr);
      tamoe_rt_finalize(context);
      return 0;
    };
  };
  // The cpu backend's refusal; `why` says why the ranks met over TCP (a
  // runtime without MPI says that instead).
  auto cpuRefusal = [](const char *why) {
    return std::string("TAMOE_RT_ERROR_BACKEND_UNAVAILABLE: tamoe_rt_init: "
                       "rank 0: the cpu backend exchanges rows over MPI, ") +
           (TAMOE_RT_HAVE_MPI ? why
                              : "and this runtime was built without MPI "
                                "(TAMOE_RUNTIME_MPI=OFF): use the cuda "
                                "backend, or build the runtime with MPI");
  };
  std::vector<Outcome> outcomes =
      runRanks({0, 1}, 2, 1, port, init(TAMOE_RT_BACKEND_CPU));
  ASSERT_EQ(outcomes.size(), 2u);
  for (const Outcome &outcome : outcomes)
    EXPECT_EQ(outcome.text,
              cpuRefusal("but this process was started with torchrun's "
                         "variables and no MPI launcher, so ranks meet over "
                         "TCP: start the ranks with mpirun (or set "
                         "TAMOE_RT_LAUNCHER=mpi), or use the cuda backend"));
  // TCP because TAMOE_RT_LAUNCHER says so: the message names it.
  port = freePort();
  outcomes = runRanks({0, 1}, 2, 1, port, init(TAMOE_RT_BACKEND_CPU, true));
  ASSERT_EQ(outcomes.size(), 2u);
  for (const Outcome &outcome : outcomes)
    EXPECT_EQ(outcome.text,
              cpuRefusal("but TAMOE_RT_LAUNCHER=tcp makes the ranks meet over "
                         "TCP: unset it (or set TAMOE_RT_LAUNCHER=mpi) and "
                         "start the ranks with mpirun, or use the cuda "
                         "backend"));
  port = freePort();
  outcomes = runRanks({0, 1}, 2, 1, port, init(TAMOE_RT_BACKEND_CUDA));
  ASSERT_EQ(outcomes.size(), 2u);
  for (const Outcome &outcome : outcomes)
    EXPECT_EQ(outcome.text,
              "TAMOE_RT_ERROR_BACKEND_UNAVAILABLE: tamoe_rt_init: rank 0: "
              "cuda backend: no GPU: fake device for the tests (2 ranks)");

  // Rank 0 cannot load the library; rank 1's agrees on its device first,
  // as the real one does: rank 1 hears rank 0's reason, not that rank 0
  // left (rank 0's agreement on init's outcome met the library's).
  port = freePort();
  outcomes = runRanks({0, 1}, 2, 1, port, [](int rank, std::string &text) {
    setenv("TAMOE_RT_CUDA_LIBRARY",
           rank == 0 ? "/nonexistent/libtamoe_rt_cuda.so"
                     : TAMOE_RT_FAKE_CUDA_AGREES,
           1);
    tamoe_rt_options_t options = tamoe_rt_default_options();
    options.backend = TAMOE_RT_BACKEND_CUDA;
    options.timeout_seconds = 10;
    tamoe_rt_context_t *context = nullptr;
    tamoe_rt_status_t status = tamoe_rt_init(&options, &context);
    text = std::string(tamoe_rt_status_name(status)) + ": " +
           tamoe_rt_last_error(nullptr);
    return 0;
  });
  ASSERT_EQ(outcomes.size(), 2u);
  for (const Outcome &outcome : outcomes)
    EXPECT_EQ(outcome.text,
              "TAMOE_RT_ERROR_BACKEND_UNAVAILABLE: tamoe_rt_init: rank 0: "
              "cuda backend: libtamoe_rt_cuda.so not found (built without "
              "CUDA?): no /nonexistent/libtamoe_rt_cuda.so");

  clearLaunchEnvironment();
  setenv("TAMOE_RT_LAUNCHER", "carrier-pigeon", 1);
  tamoe_rt_context_t *context = nullptr;
  EXPECT_EQ(tamoe_rt_init(nullptr, &context), TAMOE_RT_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(tamoe_rt_last_error(nullptr),
               "tamoe_rt_init: TAMOE_RT_LAUNCHER='carrier-pigeon' is not mpi "
               "or tcp");
  clearLaunchEnvironment();
}
