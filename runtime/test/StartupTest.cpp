//===- StartupTest.cpp - tamoe_rt_init when a rank does not come ----------===//
//
// Run under mpirun with StopAfterMpiInit.c preloaded (test/Runtime/
// mpi-startup-timeout.test): one rank stops right after MPI's
// initialisation, and every other rank's tamoe_rt_init must fail with
// TAMOE_RT_ERROR_TIMEOUT naming it, within TAMOE_RT_TIMEOUT. Each of those
// ranks prints one line; the lowest of them collects the others' (point to
// point, since no collective can complete) and ends the job with MPI_Abort,
// which also ends the stopped rank.
//
//===----------------------------------------------------------------------===//

#include "tamoe_rt/tamoe_rt.h"

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

int main() {
  const char *timeoutText = std::getenv("TAMOE_RT_TIMEOUT");
  const char *stopText = std::getenv("TAMOE_TEST_STOP_RANK");
  double timeout = timeoutText ? std::atof(timeoutText) : 60;
  int stopped = stopText ? std::atoi(stopText) : -1;

  auto start = std::chrono::steady_clock::now();
  tamoe_rt_context_t *context = nullptr;
  tamoe_rt_status_t status = tamoe_rt_init(nullptr, &context);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // Within the timeout, plus what starting MPI and a busy machine take
  // (8 ranks on 2 loaded cores: seconds); an init that waited for the
  // stopped rank would never return.
  bool inTime = seconds < timeout + 20;
  std::printf("rank %d: %s %s: %s\n", rank, tamoe_rt_status_name(status),
              inTime ? "in time" : "too late", tamoe_rt_last_error(nullptr));
  std::fflush(stdout);

  int collector = stopped == 0 ? 1 : 0;
  if (rank != collector) {
    MPI_Send(nullptr, 0, MPI_BYTE, collector, 1, MPI_COMM_WORLD);
  } else {
    for (int peer = 0; peer < size; ++peer)
      if (peer != collector && peer != stopped)
        MPI_Recv(nullptr, 0, MPI_BYTE, peer, 1, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  // The collector ends the job.
  while (true)
    MPI_Recv(nullptr, 0, MPI_BYTE, collector, 2, MPI_COMM_WORLD,
             MPI_STATUS_IGNORE);
}
