//===- MpiLauncher.cpp - A context's ranks and groups over MPI ------------===//

#include "MpiLauncher.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>

using namespace tamoe_rt;

namespace {

std::string mpiErrorString(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS)
    return str("MPI error ", rc);
  return std::string(text, length);
}

} // namespace

Status MpiLauncher::checkIn(Clock::time_point deadline) {
  // Zero-byte messages on MPI_COMM_WORLD under a tag of ours: nothing else
  // can be used before every rank is there, since creating a communicator
  // is collective. (A program receiving with MPI_ANY_TAG on MPI_COMM_WORLD
  // while its peers start the runtime could take one of them.)
  constexpr int kCheckInTag = 0x74616d; // "tam"
  std::vector<MPI_Request> requests(2 * worldSize, MPI_REQUEST_NULL);
  std::string what = "the check-in of every rank at tamoe_rt_init";
  for (int peer = 0; peer < int(worldSize); ++peer) {
    if (peer == worldRank)
      continue;
    Status status = check(MPI_Irecv(nullptr, 0, MPI_BYTE, peer, kCheckInTag,
                                    MPI_COMM_WORLD, &requests[peer]),
                          what);
    if (status.ok())
      status = check(MPI_Isend(nullptr, 0, MPI_BYTE, peer, kCheckInTag,
                               MPI_COMM_WORLD, &requests[worldSize + peer]),
                     what);
    if (!status.ok())
      return status;
  }
  Status status =
      waitUntil(requests.data(), int(requests.size()), what, deadline);
  if (status.code != TAMOE_RT_ERROR_TIMEOUT)
    return status;
  // The first rank not heard from (MPI_Testall leaves every request in
  // place when one is pending; MPI_Test frees a completed one). Requests
  // stay posted (MPI may still complete them), so the launcher is never
  // freed.
  for (int peer = 0; peer < int(worldSize); ++peer) {
    int heard = 1;
    if (peer != worldRank)
      MPI_Test(&requests[peer], &heard, MPI_STATUS_IGNORE);
    if (!heard)
      return fail(TAMOE_RT_ERROR_TIMEOUT,
                  str("rank ", peer, " did not reach tamoe_rt_init within ",
                      timeout,
                      " s (it stopped, died or is still busy "
                      "before it)"));
  }
  return status;
}

Status MpiLauncher::create(Status local, int64_t ranksPerNode,
                           double timeoutSeconds, int64_t backendKind,
                           std::unique_ptr<MpiLauncher> &launcher) {
  std::unique_ptr<MpiLauncher> self(new MpiLauncher());
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  self->worldRank = rank;
  self->worldSize = size;
  std::string problem = resolveTimeout(timeoutSeconds, self->timeout);

  // Every step until the agreement is bounded by one deadline: MPI's own
  // collectives would wait for a missing rank forever. First every rank
  // checks in with every other (naming one that does not), then the world
  // is duplicated, so that the program's own messages on MPI_COMM_WORLD
  // never match ours, without blocking.
  Clock::time_point deadline = deadlineAfter(self->timeout);
  Status status = self->checkIn(deadline);
  MPI_Request request = MPI_REQUEST_NULL;
  if (status.ok())
    status = self->check(MPI_Comm_idup(MPI_COMM_WORLD, &self->world, &request),
                         "MPI_Comm_idup of the world");
  if (status.ok())
    status =
        self->waitUntil(&request, 1, "MPI_Comm_idup of the world", deadline);
  if (!status.ok()) {
    // MPI may still complete the requests of a broken launcher.
    if (!self->brokenBy.ok())
      self.release();
    return status;
  }
  MPI_Comm_set_errhandler(self->world, MPI_ERRORS_RETURN);

  int64_t perNode = size;
  std::string nodeProblem = resolveRanksPerNode(ranksPerNode, size, perNode);
  if (problem.empty())
    problem = nodeProblem;
  if (nodeProblem.empty())
    self->nodeSize = perNode;
  if (local.ok() && !problem.empty())
    local = Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT, problem);
  Status agreed = self->agreeOn(
      TAMOE_RT_GROUP_WORLD, local,
      {{"ranks_per_node", self->nodeSize}, {"backend", backendKind}});
  if (!agreed.ok()) {
    // MPI may still write into a broken launcher's buffers.
    if (!self->brokenBy.ok())
      self.release();
    return agreed;
  }

  // Every rank took part in the agreement, so the splits cannot wait for a
  // missing one.
  int node = rank / self->nodeSize, index = rank % self->nodeSize;
  int rc = MPI_Comm_split(self->world, node, index, &self->nodeComm);
  if (rc == MPI_SUCCESS)
    rc = MPI_Comm_split(self->world, index, node, &self->peersComm);
  for (auto group :
       {TAMOE_RT_GROUP_WORLD, TAMOE_RT_GROUP_NODE, TAMOE_RT_GROUP_PEERS})
    if (rc == MPI_SUCCESS)
      rc = MPI_Comm_dup(self->comm(group), &self->transfer[group]);
  if (rc != MPI_SUCCESS)
    return Status::error(
        TAMOE_RT_ERROR_COMMUNICATION,
        str("creating the group communicators failed: ", mpiErrorString(rc)));
  for (MPI_Comm c : {self->nodeComm, self->peersComm, self->transfer[0],
                     self->transfer[1], self->transfer[2]})
    MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
  launcher = std::move(self);
  return Status::success();
}

MpiLauncher::~MpiLauncher() {
  // The owner never destroys a broken launcher (MPI may still write into
  // its buffers); after MPI_Finalize there is nothing left to free.
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (finalised)
    return;
  for (MPI_Comm *comm : {&transfer[2], &transfer[1], &transfer[0], &peersComm,
                         &nodeComm, &world})
    if (*comm != MPI_COMM_NULL)
      MPI_Comm_free(comm);
}

MPI_Comm MpiLauncher::comm(tamoe_rt_group_t group) const {
  switch (group) {
  case TAMOE_RT_GROUP_NODE:
    return nodeComm;
  case TAMOE_RT_GROUP_PEERS:
    return peersComm;
  default:
    return world;
  }
}

MPI_Comm MpiLauncher::transferComm(tamoe_rt_group_t group) const {
  return transfer[group];
}

Status MpiLauncher::fail(tamoe_rt_status_t code, std::string text) {
  brokenBy = Status::error(code, std::move(text));
  return brokenBy;
}

Status MpiLauncher::check(int rc, const std::string &what) {
  if (rc == MPI_SUCCESS)
    return Status::success();
  return fail(TAMOE_RT_ERROR_COMMUNICATION,
              str(what, " failed: ", mpiErrorString(rc)));
}

Status MpiLauncher::wait(MPI_Request *requests, int count,
                         const std::string &what) {
  return waitUntil(requests, count, what, deadlineAfter(timeout));
}

Status MpiLauncher::waitUntil(MPI_Request *requests, int count,
                              const std::string &what,
                              Clock::time_point deadline) {
  while (true) {
    int done = 0;
    int rc = MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS)
      return check(rc, what);
    if (done)
      return Status::success();
    if (Clock::now() > deadline)
      return fail(TAMOE_RT_ERROR_TIMEOUT,
                  str(what, " did not complete within ", timeout,
                      " s (a peer died or did not call it)"));
    // MPI only progresses inside MPI calls, so keep testing; yielding lets
    // the peers run when ranks outnumber cores.
    sched_yield();
  }
}

Status MpiLauncher::shareFailure(tamoe_rt_group_t group, int root,
                                 const Status &local) {
  MPI_Comm c = comm(group);
  std::string what =
      str("sharing a failure's message over the ", groupName(group), " group");
  bool isRoot = groupRank(group) == root;
  reduceIn.assign(2, 0);
  if (isRoot) {
    reduceIn[0] = local.code;
    reduceIn[1] = int64_t(local.message.size());
  }
  MPI_Request request;
  Status status = check(
      MPI_Ibcast(reduceIn.data(), 2, MPI_INT64_T, root, c, &request), what);
  if (status.ok())
    status = wait(&request, 1, what);
  if (!status.ok())
    return status;
  auto code = tamoe_rt_status_t(reduceIn[0]);
  size_t length = std::min<int64_t>(reduceIn[1], 1 << 20);
  message = isRoot ? local.message.substr(0, length) : std::string(length, ' ');
  status = check(
      MPI_Ibcast(message.data(), int(length), MPI_CHAR, root, c, &request),
      what);
  if (status.ok())
    status = wait(&request, 1, what);
  if (!status.ok())
    return status;
  return Status::error(code,
                       str("rank ", worldRankOf(group, root), ": ", message));
}

Status MpiLauncher::agreeOn(tamoe_rt_group_t group, Status local,
                            const std::vector<Value> &values) {
  if (!brokenBy.ok())
    return brokenStatus();
  MPI_Comm c = comm(group);
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  // One MIN reduction gives the first failing member and, negated, the
  // largest of each value.
  size_t n = 1 + 2 * values.size();
  reduceIn.assign(n, 0);
  reduceOut.assign(n, 0);
  reduceIn[0] = local.ok() ? kNone : groupRank(group);
  for (size_t i = 0; i < values.size(); ++i) {
    reduceIn[1 + 2 * i] = values[i].value;
    reduceIn[2 + 2 * i] = -values[i].value;
  }
  std::string what = str("the agreement on arguments and status over the ",
                         groupName(group), " group");
  MPI_Request request;
  Status status =
      check(MPI_Iallreduce(reduceIn.data(), reduceOut.data(), int(n),
                           MPI_INT64_T, MPI_MIN, c, &request),
            what);
  if (status.ok())
    status = wait(&request, 1, what);
  if (!status.ok())
    return status;
  if (reduceOut[0] != kNone)
    return shareFailure(group, int(reduceOut[0]), local);
  bool same = true;
  for (size_t i = 0; i < values.size(); ++i)
    same = same && reduceOut[1 + 2 * i] == -reduceOut[2 + 2 * i];
  if (same)
    return Status::success();

  // Slow path: name the first rank that differs from the first member.
  int size = groupSize(group);
  reduceIn.resize(values.size());
  for (size_t i = 0; i < values.size(); ++i)
    reduceIn[i] = values[i].value;
  gathered.assign(values.size() * size, 0);
  status = check(MPI_Iallgather(reduceIn.data(), int(values.size()),
                                MPI_INT64_T, gathered.data(),
                                int(values.size()), MPI_INT64_T, c, &request),
                 what);
  if (status.ok())
    status = wait(&request, 1, what);
  if (!status.ok())
    return status;
  for (size_t i = 0; i < values.size(); ++i)
    for (int member = 1; member < size; ++member) {
      int64_t first = gathered[i], other = gathered[member * values.size() + i];
      if (other != first)
        return disagreement(values[i].name, worldRankOf(group, 0), first,
                            worldRankOf(group, member), other);
    }
  return Status::error(TAMOE_RT_ERROR_INTERNAL,
                       "ranks disagree on a value that no rank differs in");
}

Status MpiLauncher::broadcast(tamoe_rt_group_t group, void *hostData,
                              size_t bytes) {
  if (!brokenBy.ok())
    return brokenStatus();
  if (bytes && !hostData)
    return Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT,
                         "broadcast: hostData is null");
  // MPI counts are int: move the bytes in chunks of 1 GiB.
  constexpr size_t kChunk = size_t(1) << 30;
  auto *data = static_cast<char *>(hostData);
  for (size_t offset = 0; offset < bytes; offset += kChunk) {
    int count = int(std::min(kChunk, bytes - offset));
    MPI_Request request;
    std::string what = str("a broadcast over the ", groupName(group), " group");
    Status status = check(
        MPI_Ibcast(data + offset, count, MPI_BYTE, 0, comm(group), &request),
        what);
    if (status.ok())
      status = wait(&request, 1, what);
    if (!status.ok())
      return status;
  }
  return Status::success();
}

Status MpiLauncher::allToAllInts(tamoe_rt_group_t group,
                                 const std::vector<int32_t> &send, int perPeer,
                                 std::vector<int32_t> &recv,
                                 const std::string &what) {
  if (!brokenBy.ok())
    return brokenStatus();
  size_t total = size_t(perPeer) * groupSize(group);
  intsIn.assign(send.begin(), send.end());
  intsIn.resize(total, 0);
  intsOut.assign(total, 0);
  MPI_Request request;
  Status status =
      check(MPI_Ialltoall(intsIn.data(), perPeer, MPI_INT32_T, intsOut.data(),
                          perPeer, MPI_INT32_T, comm(group), &request),
            what);
  if (status.ok())
    status = wait(&request, 1, what);
  if (status.ok())
    recv = intsOut;
  return status;
}
