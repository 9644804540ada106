//===- CudaBackend.cpp - Device, memory and NCCL parts of the cuda backend ===//
//
// Everything here is host code: the factory the core finds with dlsym, device
// selection, memory, the bracket around each local operation (clear the
// device status, wait, report), and the all-to-all over NCCL.
//
// Collectives follow the contract of Backend.h: they fail on every rank of
// the group alike (the core has already agreed on row_bytes and split).
// Each exchange therefore (1) checks its send counts locally and agrees over
// the launcher before NCCL moves anything, (2) exchanges the counts, (3)
// agrees on whether the rows fit before moving them, and (4) agrees on the
// outcome. Every wait on NCCL is bounded by the launcher's timeout; on a
// timeout or an asynchronous NCCL error the communicator is aborted, and
// later exchanges over it fail at step (1) on every rank.
//
//===----------------------------------------------------------------------===//

#include "CudaBackend.h"
#include "Pipelines.h"

#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace tamoe_rt {
namespace cuda {
namespace {

double now() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Yields for the first polls (latency of a fast exchange), then sleeps
/// briefly so a long wait does not burn a core.
void pause(int poll) {
  if (poll < 2000)
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(50));
}

Status invalid(const std::string &message) {
  return Status::error(TAMOE_RT_ERROR_INVALID_ARGUMENT, message);
}

std::string ncclMessage(ncclResult_t result, ncclComm_t comm) {
  std::string message = ncclGetErrorString(result);
  const char *last = ncclGetLastError(comm);
  if (last && *last)
    message += std::string(" (") + last + ")";
  return message;
}

const char *groupName(tamoe_rt_group_t group) {
  switch (group) {
  case TAMOE_RT_GROUP_WORLD:
    return "world";
  case TAMOE_RT_GROUP_NODE:
    return "node";
  case TAMOE_RT_GROUP_PEERS:
    return "peers";
  }
  return "?";
}

/// Fails once the group's communicator was aborted.
Status usable(const Communicator &c, tamoe_rt_group_t group) {
  if (c.broken.empty())
    return Status::success();
  return Status::error(TAMOE_RT_ERROR_COMMUNICATION,
                       std::string("the ") + groupName(group) +
                           " communicator is unusable after an earlier "
                           "failure: " +
                           c.broken);
}

/// The node-local index of this process as its launcher reports it, or -1.
/// Device selection prefers it to rank % ranks_per_node: when the job's
/// logical nodes are smaller than the machine (ranks_per_node set to model
/// a topology), two processes of one machine must still use two devices.
int64_t launcherLocalRank() {
  for (const char *name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                           "LOCAL_RANK", "SLURM_LOCALID"}) {
    const char *value = std::getenv(name);
    if (!value || !*value)
      continue;
    char *end = nullptr;
    long long parsed = std::strtoll(value, &end, 10);
    if (end && *end == '\0' && parsed >= 0)
      return parsed;
  }
  return -1;
}

} // namespace

Status cudaFailure(cudaError_t error, const std::string &what) {
  tamoe_rt_status_t code = TAMOE_RT_ERROR_INTERNAL;
  if (error == cudaErrorMemoryAllocation)
    code = TAMOE_RT_ERROR_OUT_OF_MEMORY;
  else if (error == cudaErrorInvalidValue ||
           error == cudaErrorInvalidDevicePointer)
    code = TAMOE_RT_ERROR_INVALID_ARGUMENT;
  return Status::error(code, what + ": " + cudaGetErrorName(error) + " (" +
                                 cudaGetErrorString(error) + ")");
}

DeviceScope::DeviceScope(int device) {
  if (cudaGetDevice(&previous_) != cudaSuccess) {
    cudaGetLastError();
    previous_ = -1;
  }
  if (previous_ == device) {
    previous_ = -1; // nothing to restore
    return;
  }
  cudaError_t error = cudaSetDevice(device);
  if (error != cudaSuccess) {
    cudaGetLastError();
    status_ = cudaFailure(error, "selecting device " + std::to_string(device));
    previous_ = -1;
  }
}

DeviceScope::~DeviceScope() {
  if (previous_ >= 0 && cudaSetDevice(previous_) != cudaSuccess)
    cudaGetLastError();
}

//===----------------------------------------------------------------------===//
// Creation and destruction
//===----------------------------------------------------------------------===//

Backend *CudaBackend::create(Launcher *launcher, Status *error) {
  Status ignored;
  if (!error)
    error = &ignored;
  if (!launcher) {
    *error = invalid("the cuda backend needs a launcher");
    return nullptr;
  }
  const int64_t rank = launcher->rank(), ranks = launcher->numRanks(),
                perNode = launcher->ranksPerNode();
  if (ranks < 1 || rank < 0 || rank >= ranks || perNode < 1 ||
      ranks % perNode != 0 || ranks > INT_MAX) {
    *error = invalid("cuda backend: rank " + std::to_string(rank) + " of " +
                     std::to_string(ranks) + " with " +
                     std::to_string(perNode) + " ranks per node");
    return nullptr;
  }

  // Pick the device; decide together whether every rank has one, before
  // any rank starts the collective set-up.
  Status local;
  int count = 0;
  cudaError_t probe = cudaGetDeviceCount(&count);
  if (probe != cudaSuccess) {
    cudaGetLastError();
    local = Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                          std::string("no GPU: ") + cudaGetErrorString(probe));
  } else if (count < 1) {
    local = Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                          "no GPU: no CUDA device is visible");
  }
  int device = 0;
  if (local.ok()) {
    int64_t localRank = launcherLocalRank();
    if (localRank < 0)
      localRank = rank % perNode;
    device = static_cast<int>(localRank % count);
    if (const char *forced = std::getenv("TAMOE_RT_DEVICE");
        forced && *forced) {
      char *end = nullptr;
      long parsed = std::strtol(forced, &end, 10);
      if (!end || *end != '\0' || parsed < 0 || parsed >= count)
        local = invalid("TAMOE_RT_DEVICE=" + std::string(forced) +
                        " is not one of the " + std::to_string(count) +
                        " visible devices");
      else
        device = static_cast<int>(parsed);
    }
  }
  Status agreed = launcher->agree(TAMOE_RT_GROUP_WORLD, local);
  if (!agreed.ok()) {
    // Our own message when we failed: the core agrees on the outcome of
    // backend creation again and names the rank itself.
    *error = local.ok() ? agreed : local;
    return nullptr;
  }

  std::unique_ptr<CudaBackend> backend(new CudaBackend(launcher));
  backend->comms_[TAMOE_RT_GROUP_WORLD].size = static_cast<int>(ranks);
  backend->comms_[TAMOE_RT_GROUP_WORLD].index = static_cast<int>(rank);
  backend->comms_[TAMOE_RT_GROUP_NODE].size = static_cast<int>(perNode);
  backend->comms_[TAMOE_RT_GROUP_NODE].index = static_cast<int>(rank % perNode);
  backend->comms_[TAMOE_RT_GROUP_PEERS].size =
      static_cast<int>(ranks / perNode);
  backend->comms_[TAMOE_RT_GROUP_PEERS].index =
      static_cast<int>(rank / perNode);

  Status status = backend->initDevice(device);
  Status agreedInit = launcher->agree(TAMOE_RT_GROUP_WORLD, status);
  if (!agreedInit.ok()) {
    *error = status.ok() ? agreedInit : status;
    return nullptr;
  }
  status = backend->initCommunicators();
  if (!status.ok()) {
    *error = status;
    return nullptr;
  }
  *error = Status::success();
  return backend.release();
}

Status CudaBackend::initDevice(int device) {
  device_ = device;
  DeviceScope scope(device_);
  if (!scope.status().ok())
    return scope.status();
  std::string where = " on device " + std::to_string(device_);
  cudaError_t error = cudaDeviceGetAttribute(
      &smCount_, cudaDevAttrMultiProcessorCount, device_);
  if (error != cudaSuccess)
    return cudaFailure(error, "querying the device" + where);
  int pools = 0;
  error =
      cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device_);
  if (error != cudaSuccess || !pools)
    return Status::error(TAMOE_RT_ERROR_BACKEND_UNAVAILABLE,
                         "the device has no stream-ordered memory pools" +
                             where);
  // A blocking stream: ordered with work on the legacy default stream.
  error = cudaStreamCreate(&stream_);
  if (error != cudaSuccess)
    return cudaFailure(error, "creating a stream" + where);
  error = cudaStreamCreateWithFlags(&commStream_, cudaStreamNonBlocking);
  if (error != cudaSuccess) {
    commStream_ = nullptr;
    return cudaFailure(error, "creating the communication stream" + where);
  }
  for (cudaEvent_t *event : {&computeDone_, &commDone_}) {
    error = cudaEventCreateWithFlags(event, cudaEventDisableTiming);
    if (error != cudaSuccess) {
      *event = nullptr;
      return cudaFailure(error, "creating an event" + where);
    }
  }
  // Temporaries come from a pool of our own that keeps its memory between
  // operations (the default pool would return it at every synchronisation).
  cudaMemPoolProps props;
  std::memset(&props, 0, sizeof props);
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypeNone;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device_;
  error = cudaMemPoolCreate(&pool_, &props);
  if (error != cudaSuccess) {
    pool_ = nullptr;
    return cudaFailure(error, "creating a memory pool" + where);
  }
  uint64_t threshold = UINT64_MAX;
  error = cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold,
                                  &threshold);
  if (error != cudaSuccess)
    return cudaFailure(error, "configuring the memory pool" + where);
  error = cudaMalloc(reinterpret_cast<void **>(&deviceStatus_),
                     sizeof(DeviceStatus));
  if (error != cudaSuccess) {
    deviceStatus_ = nullptr;
    return cudaFailure(error, "allocating the status word" + where);
  }
  error = cudaMallocHost(reinterpret_cast<void **>(&hostStatus_),
                         sizeof(DeviceStatus));
  if (error != cudaSuccess) {
    hostStatus_ = nullptr;
    return cudaFailure(error, "allocating pinned memory");
  }
  return Status::success();
}

Status CudaBackend::initCommunicators() {
  for (tamoe_rt_group_t group :
       {TAMOE_RT_GROUP_WORLD, TAMOE_RT_GROUP_NODE, TAMOE_RT_GROUP_PEERS}) {
    Status status = initCommunicator(group);
    if (!status.ok())
      return status;
  }
  return Status::success();
}

Status CudaBackend::initCommunicator(tamoe_rt_group_t group) {
  Communicator &c = comms_[group];
  // A group of one exchanges with itself only, by device copies: it needs
  // no communicator (and so a single GPU does not depend on NCCL working).
  if (c.size == 1)
    return Status::success();
  std::string what =
      std::string("NCCL set-up of the ") + groupName(group) + " group";
  DeviceScope scope(device_);
  Status local = scope.status();
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (local.ok() && c.index == 0) {
    ncclResult_t result = ncclGetUniqueId(&id);
    if (result != ncclSuccess)
      local = Status::error(
          TAMOE_RT_ERROR_COMMUNICATION,
          what + ": ncclGetUniqueId: " + ncclGetErrorString(result));
  }
  Status status = launcher_->agree(group, local);
  if (!status.ok())
    return status;
  status = launcher_->broadcast(group, &id, sizeof id);
  if (!status.ok())
    return status;

  // Non-blocking, so that a peer that never arrives costs a timeout, not a
  // hang.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  double deadline = now() + launcher_->timeoutSeconds();
  ncclResult_t result =
      ncclCommInitRankConfig(&c.comm, c.size, id, c.index, &config);
  if (result != ncclSuccess && result != ncclInProgress) {
    local = Status::error(
        TAMOE_RT_ERROR_COMMUNICATION,
        what + ": ncclCommInitRankConfig: " + ncclMessage(result, c.comm));
    if (c.comm)
      ncclCommAbort(c.comm);
    c.comm = nullptr;
    c.broken = local.message;
  } else {
    local = waitCommunicator(c, deadline, what.c_str());
  }
  return launcher_->agree(group, local);
}

CudaBackend::~CudaBackend() {
  DeviceScope scope(device_);
  for (cudaStream_t stream : {stream_, commStream_})
    if (stream && cudaStreamSynchronize(stream) != cudaSuccess)
      cudaGetLastError();
  double timeout = launcher_ ? launcher_->timeoutSeconds() : 60.0;
  for (Communicator &c : comms_) {
    if (!c.comm)
      continue;
    // Finalize flushes outstanding work and may wait for peers: bounded,
    // then abort (which never waits) when it does not finish.
    double deadline = now() + timeout;
    ncclResult_t result = ncclCommFinalize(c.comm);
    bool finished = result == ncclSuccess || result == ncclInProgress;
    for (int poll = 0; finished; ++poll) {
      ncclResult_t state = ncclSuccess;
      if (ncclCommGetAsyncError(c.comm, &state) != ncclSuccess ||
          (state != ncclSuccess && state != ncclInProgress)) {
        finished = false;
        break;
      }
      if (state == ncclSuccess)
        break;
      if (now() > deadline) {
        finished = false;
        break;
      }
      pause(poll);
    }
    if (finished)
      ncclCommDestroy(c.comm);
    else
      ncclCommAbort(c.comm);
    c.comm = nullptr;
  }
  for (const EventInterval &interval : timeline_)
    for (cudaEvent_t event : {interval.begin, interval.end})
      if (event)
        cudaEventDestroy(event);
  for (cudaEvent_t event : {timelineEpoch_, computeDone_, commDone_})
    if (event)
      cudaEventDestroy(event);
  if (blas_)
    cublasDestroy(blas_);
  if (deviceStatus_)
    cudaFree(deviceStatus_);
  if (hostStatus_)
    cudaFreeHost(hostStatus_);
  if (pool_)
    cudaMemPoolDestroy(pool_);
  for (cudaStream_t stream : {stream_, commStream_})
    if (stream)
      cudaStreamDestroy(stream);
  cudaGetLastError();
}

//===----------------------------------------------------------------------===//
// Memory
//===----------------------------------------------------------------------===//

Status CudaBackend::alloc(intptr_t bytes, void **pointer) {
  if (!pointer)
    return invalid("alloc: null result pointer");
  *pointer = nullptr;
  // The core refuses its callers' allocations while recording; this keeps
  // any other path from handing out memory a graph would own.
  if (Status s = recordable("allocates"); !s.ok())
    return s;
  if (bytes < 0)
    return invalid("alloc: negative size");
  DeviceScope scope(device_);
  if (!scope.status().ok())
    return scope.status();
  // From the backend's pool, in the order of its stream: a compiled layer
  // allocates and frees its buffers at every step, and cudaMalloc/cudaFree
  // would synchronise the device each time; the pool keeps its memory. Zero
  // bytes still get a distinct, freeable pointer, as on the host.
  cudaError_t error = cudaMallocFromPoolAsync(
      pointer, static_cast<size_t>(bytes > 0 ? bytes : 1), pool_, stream_);
  if (error != cudaSuccess) {
    cudaGetLastError();
    *pointer = nullptr;
    return cudaFailure(error, "alloc: " + std::to_string(bytes) +
                                  " bytes of device memory");
  }
  if (reinterpret_cast<uintptr_t>(*pointer) % 256 != 0) {
    cudaFreeAsync(*pointer, stream_);
    *pointer = nullptr;
    return Status::error(TAMOE_RT_ERROR_INTERNAL,
                         "alloc: the memory pool returned memory aligned to "
                         "less than 256 bytes");
  }
  return Status::success();
}

Status CudaBackend::free(void *pointer) {
  if (!pointer)
    return Status::success();
  if (Status s = recordable("frees"); !s.ok())
    return s;
  DeviceScope scope(device_);
  if (!scope.status().ok())
    return scope.status();
  // After the work queued on the stream (and, the stream being blocking,
  // on the legacy default stream) that may still use the memory.
  cudaError_t error = cudaFreeAsync(pointer, stream_);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, "free");
  }
  return Status::success();
}

Status CudaBackend::copyToBackend(void *destination, const void *hostSource,
                                  intptr_t bytes) {
  if (bytes < 0)
    return invalid("copy_to_backend: negative size");
  if (bytes == 0)
    return Status::success();
  if (!destination || !hostSource)
    return invalid("copy_to_backend: null pointer");
  if (Status s = recordable("copies from host memory (write a step's "
                            "inputs before tamoe_rt_graph_launch)");
      !s.ok())
    return s;
  DeviceScope scope(device_);
  if (!scope.status().ok())
    return scope.status();
  Status check = checkPointer(destination, bytes, "the destination");
  if (!check.ok())
    return Status::error(check.code, "copy_to_backend: " + check.message);
  cudaError_t error =
      cudaMemcpyAsync(destination, hostSource, static_cast<size_t>(bytes),
                      cudaMemcpyHostToDevice, stream_);
  if (error == cudaSuccess)
    error = cudaStreamSynchronize(stream_);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, "copy_to_backend");
  }
  return Status::success();
}

Status CudaBackend::copyToHost(void *hostDestination, const void *source,
                               intptr_t bytes) {
  if (bytes < 0)
    return invalid("copy_to_host: negative size");
  if (bytes == 0)
    return Status::success();
  if (!hostDestination || !source)
    return invalid("copy_to_host: null pointer");
  if (Status s = recordable("reads device memory on the host"); !s.ok())
    return s;
  DeviceScope scope(device_);
  if (!scope.status().ok())
    return scope.status();
  Status check = checkPointer(source, bytes, "the source");
  if (!check.ok())
    return Status::error(check.code, "copy_to_host: " + check.message);
  cudaError_t error =
      cudaMemcpyAsync(hostDestination, source, static_cast<size_t>(bytes),
                      cudaMemcpyDeviceToHost, stream_);
  if (error == cudaSuccess)
    error = cudaStreamSynchronize(stream_);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, "copy_to_host");
  }
  return Status::success();
}

Status CudaBackend::synchronize() {
  if (Status s = recordable("waits for the device on the host"); !s.ok())
    return s;
  DeviceScope scope(device_);
  if (!scope.status().ok())
    return scope.status();
  cudaError_t error = cudaStreamSynchronize(stream_);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, "synchronize");
  }
  return Status::success();
}

//===----------------------------------------------------------------------===//
// Timeline
//===----------------------------------------------------------------------===//

cudaEvent_t CudaBackend::recordTimed(cudaStream_t stream) {
  cudaEvent_t event = nullptr;
  if (cudaEventCreate(&event) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  if (cudaEventRecord(event, stream) != cudaSuccess) {
    cudaGetLastError();
    cudaEventDestroy(event);
    return nullptr;
  }
  return event;
}

void CudaBackend::startTimeline() {
  DeviceScope scope(device_);
  timelineEpoch_ = recordTimed(stream_);
}

int64_t CudaBackend::openInterval(const char *streamName, std::string name,
                                  cudaStream_t stream) {
  if (timeline_.size() >= kTimelineLimit) {
    ++timelineDropped_;
    return -1;
  }
  timeline_.push_back({streamName, std::move(name), recordTimed(stream)});
  return int64_t(timeline_.size()) - 1;
}

// A recorded operation runs at the launches, which the core times as a
// whole; its events here would be capture dependencies, not timings.
void CudaBackend::timelineBegin(const char *name) {
  if (!timelineEpoch_ || recording_)
    return;
  DeviceScope scope(device_);
  openOperations_.push_back(openInterval("compute", name, stream_));
}

void CudaBackend::timelineEnd() {
  if (!timelineEpoch_ || recording_ || openOperations_.empty())
    return;
  DeviceScope scope(device_);
  int64_t index = openOperations_.back();
  openOperations_.pop_back();
  if (index >= 0)
    timeline_[size_t(index)].end = recordTimed(stream_);
}

Status CudaBackend::timeline(std::vector<TimelineInterval> &intervals,
                             int64_t &dropped) {
  intervals.clear();
  dropped = timelineDropped_;
  if (!timelineEpoch_)
    return Status::success();
  // The compute stream's events must be in to be read.
  if (Status status = synchronize(); !status.ok())
    return status;
  DeviceScope scope(device_);
  // Milliseconds between two completed events, as a float: measured from
  // the epoch, a late event loses precision (about 8 us two minutes in), so
  // each interval's length is measured from its own begin.
  auto between = [](cudaEvent_t from, cudaEvent_t to, double &us) {
    float ms = 0;
    if (!from || !to || cudaEventQuery(to) != cudaSuccess ||
        cudaEventElapsedTime(&ms, from, to) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    us = double(ms) * 1000.0;
    return true;
  };
  for (const EventInterval &interval : timeline_) {
    TimelineInterval read{interval.stream, interval.name, 0, 0};
    double length = 0;
    if (between(timelineEpoch_, interval.begin, read.beginUs) &&
        between(interval.begin, interval.end, length)) {
      read.endUs = read.beginUs + length;
      intervals.push_back(std::move(read));
    }
  }
  return Status::success();
}

Status CudaBackend::checkPointer(const void *pointer, int64_t bytes,
                                 const char *name) const {
  if (bytes <= 0)
    return Status::success();
  if (!pointer)
    return invalid(std::string(name) + " is null");
  // A host pointer handed to the cuda backend would fault in a kernel and
  // poison the CUDA context for the whole process; catch it here.
  cudaPointerAttributes attributes;
  std::memset(&attributes, 0, sizeof attributes);
  cudaError_t error = cudaPointerGetAttributes(&attributes, pointer);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, std::string("inspecting ") + name);
  }
  switch (attributes.type) {
  case cudaMemoryTypeUnregistered:
    return invalid(std::string(name) +
                   " is host memory; the cuda backend works on device "
                   "memory (tamoe_rt_alloc)");
  case cudaMemoryTypeDevice:
    if (attributes.device != device_)
      return invalid(std::string(name) + " is memory of device " +
                     std::to_string(attributes.device) +
                     "; this context uses device " + std::to_string(device_));
    break;
  default: // managed, or registered host memory the device can address
    break;
  }
  return Status::success();
}

Status
CudaBackend::checkOperands(std::initializer_list<Operand> operands) const {
  for (const Operand &operand : operands)
    if (Status s = checkPointer(operand.pointer, operand.bytes, operand.name);
        !s.ok())
      return s;
  return Status::success();
}

CudaBackend::Frame::Frame(CudaBackend &backend,
                          std::initializer_list<Operand> operands)
    : backend_(backend), scope_(backend.device_), status_(scope_.status()) {
  if (status_.ok())
    status_ = backend.checkOperands(operands);
}

Status CudaBackend::beginOperation() {
  if (recording_)
    return Status::success();
  cudaError_t error =
      cudaMemsetAsync(deviceStatus_, 0, sizeof(DeviceStatus), stream_);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, "clearing the status word");
  }
  return Status::success();
}

Status CudaBackend::endOperation(Status hostFailure, const Describe &describe) {
  if (recording_) {
    cudaError_t last = cudaGetLastError();
    if (!hostFailure.ok())
      return hostFailure;
    if (last != cudaSuccess)
      return cudaFailure(last, "recording the kernels");
    recorded_.push_back({operationCall, operationName, describe});
    return stampOperation(int64_t(recorded_.size()));
  }
  cudaError_t copy =
      cudaMemcpyAsync(hostStatus_, deviceStatus_, sizeof(DeviceStatus),
                      cudaMemcpyDeviceToHost, stream_);
  cudaError_t wait = cudaStreamSynchronize(stream_);
  cudaError_t last = cudaGetLastError();
  if (!hostFailure.ok())
    return hostFailure;
  if (copy != cudaSuccess)
    return cudaFailure(copy, "reading the status word");
  if (wait != cudaSuccess)
    return cudaFailure(wait, "waiting for the kernels");
  if (last != cudaSuccess)
    return cudaFailure(last, "running the kernels");
  const DeviceStatus &status = *hostStatus_;
  if (status.code == 0)
    return Status::success();
  return Status::error(static_cast<tamoe_rt_status_t>(status.code),
                       failureMessage(status, describe));
}

std::string CudaBackend::failureMessage(const DeviceStatus &status,
                                        const Describe &describe) {
  std::string message = describe ? describe(status) : std::string();
  if (message.empty())
    message = "invalid data (error kind " + std::to_string(status.kind) + ": " +
              std::to_string(status.a) + ", " + std::to_string(status.b) +
              ", " + std::to_string(status.c) + ")";
  return message;
}

//===----------------------------------------------------------------------===//
// Graphs
//===----------------------------------------------------------------------===//

namespace {
struct CudaGraph final : Backend::RecordedGraph {
  ~CudaGraph() override {
    if (exec)
      cudaGraphExecDestroy(exec);
    if (graph)
      cudaGraphDestroy(graph);
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  /// By stamp index - 1.
  std::vector<CudaBackend::RecordedOperation> operations;
};
} // namespace

Status CudaBackend::recordable(const std::string &what) const {
  if (!recording_)
    return Status::success();
  return invalid(what + ", which a graph cannot record: run it before "
                        "tamoe_rt_graph_begin or after tamoe_rt_graph_end");
}

Status CudaBackend::beginGraph() {
  DeviceScope scope(device_);
  if (!scope.status().ok())
    return scope.status();
  // cuBLAS's handle is created outside the capture, where it may allocate.
  if (Status blas = blasHandle(); !blas.ok())
    return blas;
  // Relaxed: the pointer checks' queries (cudaPointerGetAttributes) must
  // not end the capture. What would wait for the device mid-step is
  // refused before CUDA sees it (recordable), and cudaStreamSynchronize on
  // a capturing stream fails in every mode.
  cudaError_t error =
      cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, "beginning to capture the compute stream");
  }
  recording_ = true;
  recorded_.clear();
  // The graph's first node: every launch starts with a clean status word.
  error = cudaMemsetAsync(deviceStatus_, 0, sizeof(DeviceStatus), stream_);
  if (error != cudaSuccess) {
    cudaGetLastError();
    std::unique_ptr<RecordedGraph> dropped;
    (void)endGraph(dropped);
    return cudaFailure(error, "clearing the status word");
  }
  return Status::success();
}

Status CudaBackend::endGraph(std::unique_ptr<RecordedGraph> &graph) {
  DeviceScope scope(device_);
  auto recorded = std::make_unique<CudaGraph>();
  cudaError_t error = cudaStreamEndCapture(stream_, &recorded->graph);
  recording_ = false;
  recorded->operations = std::move(recorded_);
  recorded_.clear();
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, "ending the capture of the compute stream");
  }
  error = cudaGraphInstantiate(&recorded->exec, recorded->graph, 0);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, "instantiating the recorded graph");
  }
  graph = std::move(recorded);
  return Status::success();
}

Status CudaBackend::launchGraph(RecordedGraph &recorded) {
  auto &graph = static_cast<CudaGraph &>(recorded);
  DeviceScope scope(device_);
  if (!scope.status().ok())
    return scope.status();
  cudaError_t error = cudaGraphLaunch(graph.exec, stream_);
  if (error == cudaSuccess)
    error = cudaMemcpyAsync(hostStatus_, deviceStatus_, sizeof(DeviceStatus),
                            cudaMemcpyDeviceToHost, stream_);
  if (error == cudaSuccess)
    error = cudaStreamSynchronize(stream_);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, "running the graph");
  }
  const DeviceStatus &status = *hostStatus_;
  if (status.code == 0)
    return Status::success();
  std::string which = "an operation";
  Describe describe;
  if (status.operation >= 1 &&
      status.operation <= int64_t(graph.operations.size())) {
    const RecordedOperation &stamped =
        graph.operations[size_t(status.operation - 1)];
    which = "operation " + std::to_string(stamped.call) + " of " +
            std::to_string(graph.calls) + " (" + stamped.name + ")";
    describe = stamped.describe;
  }
  return Status::error(static_cast<tamoe_rt_status_t>(status.code),
                       which + ": " + failureMessage(status, describe));
}

//===----------------------------------------------------------------------===//
// all_to_all
//===----------------------------------------------------------------------===//

int64_t CudaBackend::globalRank(tamoe_rt_group_t group, int64_t peer) const {
  const int64_t perNode = comms_[TAMOE_RT_GROUP_NODE].size;
  const int64_t rank = comms_[TAMOE_RT_GROUP_WORLD].index;
  switch (group) {
  case TAMOE_RT_GROUP_WORLD:
    return peer;
  case TAMOE_RT_GROUP_NODE:
    return rank / perNode * perNode + peer;
  case TAMOE_RT_GROUP_PEERS:
    return peer * perNode + rank % perNode;
  }
  return -1;
}

void CudaBackend::abortCommunicator(Communicator &c, const std::string &why) {
  if (c.comm)
    ncclCommAbort(c.comm);
  c.comm = nullptr;
  c.broken = why;
}

Status CudaBackend::waitCommunicator(Communicator &c, double deadline,
                                     const char *what) {
  for (int poll = 0;; ++poll) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t result = ncclCommGetAsyncError(c.comm, &state);
    if (result != ncclSuccess)
      state = result;
    if (state == ncclSuccess)
      return Status::success();
    if (state != ncclInProgress) {
      std::string message =
          std::string(what) + ": " + ncclMessage(state, c.comm);
      abortCommunicator(c, message);
      return Status::error(TAMOE_RT_ERROR_COMMUNICATION, message);
    }
    if (now() > deadline) {
      std::string message = std::string(what) +
                            ": NCCL did not finish within " +
                            std::to_string(launcher_->timeoutSeconds()) +
                            " s; the communicator was aborted";
      abortCommunicator(c, message);
      return Status::error(TAMOE_RT_ERROR_TIMEOUT, message);
    }
    pause(poll);
  }
}

Status CudaBackend::waitStream(double deadline, const char *what) {
  return pollUntilDone([this] { return cudaStreamQuery(stream_); }, deadline,
                       what);
}

Status CudaBackend::waitEvent(cudaEvent_t event, double deadline,
                              const char *what) {
  return pollUntilDone([event] { return cudaEventQuery(event); }, deadline,
                       what);
}

void CudaBackend::abortCommunicators(const std::string &why) {
  for (Communicator &c : comms_)
    if (c.comm)
      abortCommunicator(c, why);
}

Status CudaBackend::pollUntilDone(const std::function<cudaError_t()> &query,
                                  double deadline, const char *what) {
  for (int poll = 0;; ++poll) {
    cudaError_t done = query();
    if (done == cudaSuccess)
      return Status::success();
    if (done != cudaErrorNotReady) {
      cudaGetLastError();
      return cudaFailure(done, what);
    }
    // Every communicator's operations share the communication stream, so
    // the work waited for may sit behind any of them: a failure of one
    // stalls the stream, and only aborting them all releases it.
    for (Communicator &c : comms_) {
      if (!c.comm)
        continue;
      ncclResult_t state = ncclSuccess;
      ncclResult_t result = ncclCommGetAsyncError(c.comm, &state);
      if (result != ncclSuccess)
        state = result;
      if (state != ncclSuccess && state != ncclInProgress) {
        std::string message =
            std::string(what) + ": " + ncclMessage(state, c.comm);
        abortCommunicators(message);
        return Status::error(TAMOE_RT_ERROR_COMMUNICATION, message);
      }
    }
    if (now() > deadline) {
      std::string message = std::string(what) + ": did not complete within " +
                            std::to_string(launcher_->timeoutSeconds()) + " s";
      bool communicators = false;
      for (const Communicator &c : comms_)
        communicators = communicators || c.comm;
      if (communicators) {
        message += "; the communicators were aborted";
        abortCommunicators(message);
      }
      return Status::error(TAMOE_RT_ERROR_TIMEOUT, message);
    }
    pause(poll);
  }
}

Status CudaBackend::orderStreams(cudaStream_t first, cudaEvent_t event,
                                 cudaStream_t then, const char *what) {
  cudaError_t error = cudaEventRecord(event, first);
  if (error == cudaSuccess)
    error = cudaStreamWaitEvent(then, event, 0);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return cudaFailure(error, what);
  }
  return Status::success();
}

Status CudaBackend::exchange(Communicator &c, cudaStream_t stream,
                             const char *send, const int64_t *sendOffsets,
                             const int64_t *sendBytes, char *recv,
                             const int64_t *recvOffsets,
                             const int64_t *recvBytes, double deadline,
                             const char *what) {
  const int size = c.size, me = c.index;
  // Our own rows: a device copy, no NCCL.
  if (sendBytes[me] != recvBytes[me])
    return Status::error(TAMOE_RT_ERROR_INTERNAL,
                         std::string(what) + ": self exchange sizes differ");
  if (sendBytes[me] > 0) {
    cudaError_t error = cudaMemcpyAsync(
        recv + recvOffsets[me], send + sendOffsets[me],
        static_cast<size_t>(sendBytes[me]), cudaMemcpyDeviceToDevice, stream);
    if (error != cudaSuccess) {
      cudaGetLastError();
      return cudaFailure(error, what);
    }
  }
  if (size > 1 && !c.comm)
    return Status::error(TAMOE_RT_ERROR_COMMUNICATION,
                         std::string(what) + ": no communicator");
  // Round i sends to me + i and receives from me - i: the peer of a send
  // posts the matching receive in the same round, so batching rounds into
  // NCCL groups keeps every group self-contained (no cross-group waits).
  // Messages go in chunks of at most 1 GiB, far from any 2^31 limit of the
  // library or transport; both sides cut the same byte count the same way.
  constexpr int kRoundsPerGroup = 128;
  constexpr int64_t kChunk = int64_t(1) << 30;
  for (int first = 1; first < size; first += kRoundsPerGroup) {
    int last = first + kRoundsPerGroup < size ? first + kRoundsPerGroup : size;
    ncclResult_t failed = ncclSuccess;
    auto note = [&](ncclResult_t result) {
      if (result != ncclSuccess && result != ncclInProgress &&
          failed == ncclSuccess)
        failed = result;
    };
    note(ncclGroupStart());
    for (int i = first; i < last; ++i) {
      int to = (me + i) % size, from = (me - i + size) % size;
      for (int64_t done = 0; done < sendBytes[to]; done += kChunk) {
        int64_t bytes =
            sendBytes[to] - done < kChunk ? sendBytes[to] - done : kChunk;
        note(ncclSend(send + sendOffsets[to] + done, static_cast<size_t>(bytes),
                      ncclUint8, to, c.comm, stream));
      }
      for (int64_t done = 0; done < recvBytes[from]; done += kChunk) {
        int64_t bytes =
            recvBytes[from] - done < kChunk ? recvBytes[from] - done : kChunk;
        note(ncclRecv(recv + recvOffsets[from] + done,
                      static_cast<size_t>(bytes), ncclUint8, from, c.comm,
                      stream));
      }
    }
    ncclResult_t end = ncclGroupEnd();
    note(end);
    if (failed != ncclSuccess) {
      std::string message =
          std::string(what) + ": " + ncclMessage(failed, c.comm);
      abortCommunicator(c, message);
      return Status::error(TAMOE_RT_ERROR_COMMUNICATION, message);
    }
    if (end == ncclInProgress) {
      Status status = waitCommunicator(c, deadline, what);
      if (!status.ok())
        return status;
    }
  }
  return Status::success();
}

Status CudaBackend::allToAll(tamoe_rt_group_t group, const void *send,
                             intptr_t sendCapacity, intptr_t rowBytes,
                             const int32_t *sendCounts, intptr_t split,
                             void *received, intptr_t recvCapacity,
                             int32_t *recvCounts, Traffic &traffic) {
  CudaExchange x;
  Status status = startRows(group, send, sendCapacity, rowBytes, sendCounts,
                            split, received, recvCapacity, recvCounts, x);
  return status.ok() ? finishRows(x, traffic) : status;
}

Status CudaBackend::allToAllStart(Launcher &launcher, Status local,
                                  tamoe_rt_group_t group, const void *send,
                                  intptr_t sendCapacity, intptr_t rowBytes,
                                  const int32_t *sendCounts, intptr_t split,
                                  void *received, intptr_t recvCapacity,
                                  int32_t *recvCounts,
                                  std::unique_ptr<PendingExchange> &pending) {
  Status status = launcher.agreeOn(group, std::move(local),
                                   {{"row_bytes", rowBytes}, {"split", split}});
  if (!status.ok())
    return status;
  auto x = std::make_unique<CudaExchange>();
  status = startRows(group, send, sendCapacity, rowBytes, sendCounts, split,
                     received, recvCapacity, recvCounts, *x);
  if (status.ok())
    pending = std::move(x);
  return status;
}

Status CudaBackend::allToAllWait(std::unique_ptr<PendingExchange> pending,
                                 Traffic &traffic) {
  return finishRows(static_cast<CudaExchange &>(*pending), traffic);
}

Status CudaBackend::startRows(tamoe_rt_group_t group, const void *send,
                              intptr_t sendCapacity, intptr_t rowBytes,
                              const int32_t *sendCounts, intptr_t split,
                              void *received, intptr_t recvCapacity,
                              int32_t *recvCounts, CudaExchange &x) {
  x.group = group;
  if (group != TAMOE_RT_GROUP_WORLD && group != TAMOE_RT_GROUP_NODE &&
      group != TAMOE_RT_GROUP_PEERS)
    return invalid("group = " + std::to_string(group) +
                   " is not a tamoe_rt_group_t");
  try {
    Communicator &c = comms_[group];
    const int size = c.size, me = c.index;
    DeviceScope scope(device_);
    Status local = scope.status();

    // (1) Local checks: sizes, pointers, our send counts.
    int64_t entries = 0, sendBytesTotal = 0, recvBytesTotal = 0;
    if (local.ok() &&
        (sendCapacity < 0 || rowBytes < 0 || split < 0 || recvCapacity < 0))
      local = invalid("negative size");
    if (local.ok() &&
        (__builtin_mul_overflow(int64_t(size), int64_t(split), &entries) ||
         entries > INT_MAX ||
         __builtin_mul_overflow(int64_t(sendCapacity), int64_t(rowBytes),
                                &sendBytesTotal) ||
         __builtin_mul_overflow(int64_t(recvCapacity), int64_t(rowBytes),
                                &recvBytesTotal)))
      local = invalid("sizes overflow");
    if (local.ok())
      local = checkOperands({{sendCounts, entries * 4, "send_counts"},
                             {recvCounts, entries * 4, "recv_counts"},
                             {send, sendBytesTotal, "send"},
                             {received, recvBytesTotal, "received"}});
    // A group of one rank: a copy on the compute stream, checked there.
    if (size == 1) {
      if (local.ok())
        local = usable(c, group);
      Status status = launcher_->agree(group, local);
      if (!status.ok())
        return status;
      x.local = true;
      // The verdict as the launcher words an exchange's ("rank R: ...").
      return launcher_->agree(group, selfExchange(send, sendCapacity, rowBytes,
                                                  sendCounts, entries, received,
                                                  recvCapacity, recvCounts));
    }
    if (local.ok())
      local = recordable("an exchange between " + std::to_string(size) +
                         " ranks takes its counts through the launcher on "
                         "the host");
    std::vector<int32_t> hostSend(entries), hostRecv(entries);
    std::vector<int64_t> sendRows(size, 0), recvRows(size, 0);
    if (local.ok())
      local = copyToHost(hostSend.data(), sendCounts, entries * 4);
    int64_t sendTotal = 0;
    for (int64_t i = 0; local.ok() && i < entries; ++i) {
      if (hostSend[i] < 0) {
        local =
            invalid((split == 1 ? "send_counts[" + std::to_string(i) + "]"
                                : "send_counts[" + std::to_string(i / split) +
                                      ", " + std::to_string(i % split) + "]") +
                    " = " + std::to_string(hostSend[i]) + " is negative");
        break;
      }
      sendRows[i / split] += hostSend[i];
      sendTotal += hostSend[i];
    }
    if (local.ok() && sendTotal > sendCapacity)
      local =
          invalid("send_counts sum to " + std::to_string(sendTotal) +
                  " rows but send_capacity is " + std::to_string(sendCapacity));
    if (local.ok())
      local = usable(c, group);

    // Agree before NCCL moves anything.
    Status status = launcher_->agree(group, local);
    if (!status.ok())
      return status;

    double deadline = now() + launcher_->timeoutSeconds();
    std::string where = std::string(" over the ") + groupName(group) + " group";
    // (2) The counts, `split` int32 to and from every peer: on the host
    // through the launcher, which has them already, rather than by NCCL
    // behind the rows of the exchanges in flight (the start would wait for
    // those).
    if (entries > 0) {
      status = launcher_->allToAllInts(group, hostSend, int(split), hostRecv,
                                       "the exchange of counts" + where);
      if (!status.ok())
        return status;
    }
    // The rows go on the communication stream, which runs every NCCL
    // operation in the order the host issues them (the same on every rank:
    // the kernels of two communicators never run at once, which NCCL does
    // not allow to be relied on), once the compute stream's work so far,
    // which wrote them, is done.
    cudaError_t error =
        cudaEventCreateWithFlags(&x.ready, cudaEventDisableTiming);
    if (error == cudaSuccess)
      error = cudaEventCreateWithFlags(&x.done, cudaEventDisableTiming);
    if (error != cudaSuccess) {
      cudaGetLastError();
      local = cudaFailure(error, "creating the exchange's events");
    }
    if (local.ok())
      local = orderStreams(stream_, x.ready, commStream_,
                           "ordering the exchange after the compute stream");
    int64_t recvTotal = 0;
    for (int64_t i = 0; local.ok() && i < entries; ++i) {
      recvRows[i / split] += hostRecv[i];
      recvTotal += hostRecv[i];
    }
    // (3) Nothing moves unless every rank's rows fit.
    if (local.ok() && recvTotal > recvCapacity)
      // (agree names the rank)
      local = Status::error(TAMOE_RT_ERROR_CAPACITY_EXCEEDED,
                            std::to_string(recvTotal) +
                                " rows to receive exceed recv_capacity " +
                                std::to_string(recvCapacity));
    status = launcher_->agree(group, local);
    if (!status.ok())
      return status;
    // Only now, so that a failed exchange writes nothing: the counts go to
    // recv_counts on the compute stream (idle since send_counts were read),
    // where the later operations find them. Past the verdict, a failure is
    // the wait's, and the rows still go: the peers' exchange completes, and
    // every rank fails at the wait, at once.
    if (entries > 0)
      x.countsWritten = copyToBackend(recvCounts, hostRecv.data(), entries * 4);

    std::vector<int64_t> sendOffsets(size), sendBytes(size), recvOffsets(size),
        recvBytes(size);
    int64_t sendAt = 0, recvAt = 0;
    for (int p = 0; p < size; ++p) {
      sendOffsets[p] = sendAt * rowBytes;
      sendBytes[p] = sendRows[p] * rowBytes;
      sendAt += sendRows[p];
      recvOffsets[p] = recvAt * rowBytes;
      recvBytes[p] = recvRows[p] * rowBytes;
      recvAt += recvRows[p];
    }
    // (4) The rows, after the counts on the communication stream.
    std::string what = "the exchange of rows" + where;
    int64_t timed = -1;
    if (x.posted.ok() && timelineEpoch_)
      timed = openInterval("comm", "rows" + where, commStream_);
    if (x.posted.ok())
      x.posted = exchange(c, commStream_, static_cast<const char *>(send),
                          sendOffsets.data(), sendBytes.data(),
                          static_cast<char *>(received), recvOffsets.data(),
                          recvBytes.data(), deadline, what.c_str());
    if (timed >= 0)
      timeline_[size_t(timed)].end = recordTimed(commStream_);
    if (x.posted.ok()) {
      cudaError_t error = cudaEventRecord(x.done, commStream_);
      if (error != cudaSuccess) {
        cudaGetLastError();
        x.posted = cudaFailure(error, what);
      }
    }

    const int64_t perNode = comms_[TAMOE_RT_GROUP_NODE].size;
    const int64_t myNode = comms_[TAMOE_RT_GROUP_WORLD].index / perNode;
    for (int p = 0; p < size; ++p) {
      if (p == me)
        continue; // rows kept on this rank cross no link
      if (globalRank(group, p) / perNode == myNode)
        x.traffic.intraNodeBytes += sendBytes[p];
      else
        x.traffic.interNodeBytes += sendBytes[p];
    }
    return Status::success();
  } catch (const std::bad_alloc &) {
    return Status::error(TAMOE_RT_ERROR_OUT_OF_MEMORY, "out of host memory");
  }
}

Status CudaBackend::finishRows(CudaExchange &x, Traffic &traffic) {
  if (x.local)
    return Status::success(); // rows kept on this rank cross no link
  Communicator &c = comms_[x.group];
  DeviceScope scope(device_);
  Status local = scope.status();
  if (local.ok())
    local = x.posted;
  std::string what = std::string("the exchange of rows over the ") +
                     groupName(x.group) + " group";
  if (local.ok())
    local =
        waitEvent(x.done, now() + launcher_->timeoutSeconds(), what.c_str());
  if (local.ok())
    local = x.countsWritten;
  // An abort since the start (another operation's failure or timeout) may
  // have cut the rows short and still completed the event.
  if (local.ok())
    local = usable(c, x.group);
  // Later work on the compute stream reads what arrived.
  if (local.ok()) {
    cudaError_t error = cudaStreamWaitEvent(stream_, x.done, 0);
    if (error != cudaSuccess) {
      cudaGetLastError();
      local = cudaFailure(error, what);
    }
  }
  // One outcome for the group.
  Status status = launcher_->agree(x.group, local);
  if (!status.ok())
    return status;
  traffic.intraNodeBytes += x.traffic.intraNodeBytes;
  traffic.interNodeBytes += x.traffic.interNodeBytes;
  return Status::success();
}

//===----------------------------------------------------------------------===//
// all_reduce
//===----------------------------------------------------------------------===//

Status CudaBackend::allReduce(tamoe_rt_group_t group, float *data, intptr_t n,
                              bool average) {
  if (group != TAMOE_RT_GROUP_WORLD && group != TAMOE_RT_GROUP_NODE &&
      group != TAMOE_RT_GROUP_PEERS)
    return invalid("group = " + std::to_string(group) +
                   " is not a tamoe_rt_group_t");
  Communicator &c = comms_[group];
  DeviceScope scope(device_);
  Status local = scope.status();
  if (local.ok() && n < 0)
    local = invalid("negative size");
  if (local.ok())
    local = checkPointer(data, int64_t(n) * 4, "data");
  if (local.ok() && c.size > 1)
    local = recordable("an all-reduce between " + std::to_string(c.size) +
                       " ranks waits on the host");
  if (local.ok())
    local = usable(c, group);
  // Agree before NCCL starts, so that no rank waits for one that failed.
  Status status = launcher_->agree(group, local);
  if (!status.ok())
    return status;

  double deadline = now() + launcher_->timeoutSeconds();
  std::string what =
      std::string("the all-reduce over the ") + groupName(group) + " group";
  if (c.size > 1 && n > 0) {
    if (!c.comm) {
      local = Status::error(TAMOE_RT_ERROR_COMMUNICATION,
                            what + ": no communicator");
    } else {
      // In place, on the communication stream like every NCCL operation
      // (see startRows), between the compute stream's work before and after
      // it; NCCL's sum is the same on every rank.
      local = orderStreams(stream_, computeDone_, commStream_, what.c_str());
      ncclResult_t result = ncclSuccess;
      if (local.ok())
        result = ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat,
                               ncclSum, c.comm, commStream_);
      if (result == ncclInProgress)
        local = waitCommunicator(c, deadline, what.c_str());
      else if (result != ncclSuccess) {
        std::string message = what + ": " + ncclMessage(result, c.comm);
        abortCommunicator(c, message);
        local = Status::error(TAMOE_RT_ERROR_COMMUNICATION, message);
      }
      if (local.ok())
        local = orderStreams(commStream_, commDone_, stream_, what.c_str());
    }
  }
  if (local.ok() && average && n > 0)
    local = divide(data, n, static_cast<float>(c.size));
  if (local.ok() && !recording_)
    local = waitStream(deadline, what.c_str());
  // One outcome for the group.
  return launcher_->agree(group, local);
}

} // namespace cuda
} // namespace tamoe_rt

// The exported symbols; the core finds them with dlsym.
#pragma GCC visibility push(default)
extern "C" const char *tamoe_rt_cuda_backend_abi(void) {
  return TAMOE_RT_BACKEND_ABI;
}

extern "C" tamoe_rt::Backend *
tamoe_rt_create_cuda_backend(tamoe_rt::Launcher *launcher,
                             tamoe_rt::Status *error) {
  try {
    return tamoe_rt::cuda::CudaBackend::create(launcher, error);
  } catch (const std::bad_alloc &) {
    if (error)
      *error = tamoe_rt::Status::error(TAMOE_RT_ERROR_OUT_OF_MEMORY,
                                       "cuda backend: out of host memory");
  } catch (const std::exception &e) {
    if (error)
      *error = tamoe_rt::Status::error(
          TAMOE_RT_ERROR_INTERNAL, std::string("cuda backend: ") + e.what());
  }
  return nullptr;
}
#pragma GCC visibility pop
