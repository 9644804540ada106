//===- TcpLauncher.h - A context's ranks and groups over TCP ----*- C++ -*-===//
//
// The launcher of processes started without MPI, by torchrun or anything
// that sets its variables: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT (ranks node-major, as torchrun numbers them).
//
// Rendezvous: rank 0 listens on the port above MASTER_PORT (MASTER_PORT is
// torch's store's) or on TAMOE_RT_MASTER_PORT; every other rank opens a
// listening socket of its own, connects to rank 0 there and says
// who it is and where it listens (a hello). Rank 0 checks the hellos and
// sends every rank the table of addresses, or the reason the job cannot
// start, so that a bad configuration fails everywhere with one message.
// Then every rank connects to each lower rank (rank 0's connections are the
// rendezvous's), so that a collective over a group is messages between its
// members on these sockets: an agreement is an all-gather of statuses and
// values, a broadcast goes from the group's first member, an all-to-all is
// one message per pair.
//
// Everything read from a socket is untrusted: every message has a magic, a
// version (hellos), the collective it belongs to and a length bounded by
// what that collective can carry, and is checked before it is used; a
// connection that does not speak the protocol at the rendezvous, or sends
// no full greeting within 5 s, is closed and ignored (its reason named if
// the rendezvous then times out), and so is the oldest of too many waiting.
// Every wait is bounded by the timeout; a peer that exits closes its
// sockets (close-on-exec, so that a program it started does not hold them),
// which fails the other ranks' next collective at once. A rank that
// reached rank 0 over loopback is listed in the table at the address each
// other rank reached rank 0 at.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_TCPLAUNCHER_H
#define TAMOE_RT_LIB_TCPLAUNCHER_H

#include "Backend.h"
#include "LaunchOptions.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tamoe_rt {

/// The wire format (little-endian), for the launcher and for the tests that
/// play a malformed peer.
namespace tcp {
constexpr uint32_t kMagic = 0x454f4d54; // "TMOE"
constexpr uint32_t kVersion = 2;
/// Bytes of a frame's header: magic, op, length (u32 each).
constexpr size_t kHeaderBytes = 12;
/// Bytes of a hello: magic, version, rank, world size, listening port.
constexpr size_t kHelloBytes = 20;
/// A failure's message is cut to this many bytes on the wire.
constexpr size_t kMaxMessageBytes = 4096;

/// The collectives' ops; a frame's op is kind << 8 | tamoe_rt_group_t.
enum Kind : uint32_t {
  kTable = 1, // rank 0 -> every rank: the addresses, or why not
  kJoin = 2,  // rank -> lower rank: who connects (rank, session)
  kAgree = 3,
  kBroadcast = 4,
  kAllToAll = 5,
};

std::string encodeHello(uint32_t rank, uint32_t worldSize, uint32_t port);
std::string encodeFrame(uint32_t op, const std::string &payload);
} // namespace tcp

class TcpLauncher final : public Launcher {
public:
  /// Reads torchrun's variables, meets the other ranks and agrees with them
  /// on the options (ranks per node, backend kind), as MpiLauncher::create
  /// does; `local` is the caller's verdict on its options.
  static Status create(Status local, int64_t ranksPerNode,
                       double timeoutSeconds, int64_t backendKind,
                       std::unique_ptr<TcpLauncher> &launcher);
  ~TcpLauncher() override;

  int64_t rank() const override { return worldRank; }
  int64_t numRanks() const override { return worldSize; }
  int64_t ranksPerNode() const override { return nodeSize; }
  double timeoutSeconds() const override { return timeout; }
  Status broadcast(tamoe_rt_group_t group, void *hostData,
                   size_t bytes) override;
  Status agreeOn(tamoe_rt_group_t group, Status local,
                 const std::vector<Value> &values) override;
  Status allToAllInts(tamoe_rt_group_t group, const std::vector<int32_t> &send,
                      int perPeer, std::vector<int32_t> &recv,
                      const std::string &what) override;
  const Status &broken() const override { return brokenBy; }

private:
  TcpLauncher() = default;
  /// Meets the other ranks at address:port; fills `sockets`. `portOrigin`
  /// says in messages where the port came from.
  Status rendezvous(const std::string &address, uint16_t port,
                    const std::string &portOrigin);
  Status rendezvousAsRoot(int listener, const std::string &where,
                          Clock::time_point deadline);
  Status rendezvousAsWorker(const std::string &address, uint16_t port,
                            const std::string &where,
                            Clock::time_point deadline);
  /// Sends out[m] to each member m of `group` in `sendTo` and receives
  /// in[m] from each member m in `receiveFrom`, concurrently (no size
  /// deadlocks): frames of `kind`, received ones of at most `maxBytes`,
  /// within the timeout. `what` names the collective in messages.
  Status exchange(tamoe_rt_group_t group, uint32_t kind,
                  const std::vector<std::string> &out,
                  const std::vector<int> &sendTo, std::vector<std::string> &in,
                  const std::vector<int> &receiveFrom, size_t maxBytes,
                  const std::string &what);
  Status fail(tamoe_rt_status_t code, std::string message);

  int64_t worldRank = 0, worldSize = 1, nodeSize = 1;
  double timeout = 60;
  /// The connected socket to each world rank (-1 for this one).
  std::vector<int> sockets;
  Status brokenBy;
};

} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_TCPLAUNCHER_H
