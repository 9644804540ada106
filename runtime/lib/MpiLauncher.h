//===- MpiLauncher.h - A context's ranks and groups over MPI ----*- C++ -*-===//
//
// The Launcher of every context: the world, node and peer communicators,
// the rank -> node mapping, and the host-side collectives that the core and
// the cpu backend build on. Every wait is bounded by the context's timeout;
// a timeout or an MPI error leaves the communicators in an unknown state (a
// collective is half done), so the launcher is then "broken" and fails every
// later collective with the first failure's status.
//
//===----------------------------------------------------------------------===//

#ifndef TAMOE_RT_LIB_MPILAUNCHER_H
#define TAMOE_RT_LIB_MPILAUNCHER_H

#include "Backend.h"
#include "LaunchOptions.h"

#include <mpi.h>

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace tamoe_rt {

class MpiLauncher final : public Launcher {
public:
  /// Sets up the communicators (collective over MPI_COMM_WORLD, which must
  /// be initialised). `ranksPerNode` and `timeoutSeconds` are the options'
  /// values (0: from the environment); the resolved values must agree on
  /// every rank. `local` is the caller's own verdict on the options, agreed
  /// on with the rest so that init fails everywhere alike.
  static Status create(Status local, int64_t ranksPerNode,
                       double timeoutSeconds, int64_t backendKind,
                       std::unique_ptr<MpiLauncher> &launcher);
  ~MpiLauncher() override;

  int64_t rank() const override { return worldRank; }
  int64_t numRanks() const override { return worldSize; }
  int64_t ranksPerNode() const override { return nodeSize; }
  double timeoutSeconds() const override { return timeout; }
  Status broadcast(tamoe_rt_group_t group, void *hostData,
                   size_t bytes) override;
  /// One allreduce when everything is in order.
  Status agreeOn(tamoe_rt_group_t group, Status local,
                 const std::vector<Value> &values) override;
  Status allToAllInts(tamoe_rt_group_t group, const std::vector<int32_t> &send,
                      int perPeer, std::vector<int32_t> &recv,
                      const std::string &what) override;
  const Status &broken() const override { return brokenBy; }

  MPI_Comm comm(tamoe_rt_group_t group) const;
  /// A duplicate of comm(group) for collectives posted in another order than
  /// the program's: an exchange's second round (see CpuExchange). MPI
  /// matches a communicator's collectives by the order they are posted.
  MPI_Comm transferComm(tamoe_rt_group_t group) const;

  /// Waits for `requests` within the timeout. `what` names the operation in
  /// the message ("the exchange of counts over the node group").
  Status wait(MPI_Request *requests, int count, const std::string &what);
  /// `wait` until a given time.
  Status waitUntil(MPI_Request *requests, int count, const std::string &what,
                   Clock::time_point deadline);
  /// The status of an MPI call that starts an operation.
  Status check(int rc, const std::string &what);

  /// Every member learns member `root`'s failure (`local` there), its
  /// message prefixed with "rank R: ", as agree reports it.
  Status shareFailure(tamoe_rt_group_t group, int root, const Status &local);

private:
  MpiLauncher() = default;
  /// Hears from every other rank of MPI_COMM_WORLD before `deadline`, or
  /// fails with TAMOE_RT_ERROR_TIMEOUT naming the first one missing.
  Status checkIn(Clock::time_point deadline);
  Status fail(tamoe_rt_status_t code, std::string message);

  MPI_Comm world = MPI_COMM_NULL, nodeComm = MPI_COMM_NULL,
           peersComm = MPI_COMM_NULL;
  /// transferComm's, by group.
  MPI_Comm transfer[3] = {MPI_COMM_NULL, MPI_COMM_NULL, MPI_COMM_NULL};
  int64_t worldRank = 0, worldSize = 1, nodeSize = 1;
  double timeout = 60;
  Status brokenBy;
  // Buffers of operations in flight. Members rather than locals: after a
  // timeout MPI may still write into them (a late peer), so a broken
  // launcher is never freed (see tamoe_rt_finalize).
  std::vector<int64_t> reduceIn, reduceOut, gathered;
  std::vector<int32_t> intsIn, intsOut;
  std::string message;
};

} // namespace tamoe_rt

#endif // TAMOE_RT_LIB_MPILAUNCHER_H
