/*===- StopAfterMpiInit.c - A rank that stops at start-up (LD_PRELOAD) ----===*\
 *
 * Preloaded into the ranks of a test (mpirun -x LD_PRELOAD=...), this
 * stands in for MPI_Init_thread through MPI's profiling interface: rank
 * $TAMOE_TEST_STOP_RANK raises SIGSTOP right after MPI's own initialisation
 * returns, as a rank would that hangs or is descheduled there, or, with
 * TAMOE_TEST_STOP_BEFORE_INIT=1, right before it (a rank that never reaches
 * MPI_Init). Every other rank is unaffected.
 *
\*===----------------------------------------------------------------------===*/

#include <mpi.h>

#include <signal.h>
#include <stdlib.h>

static int isStoppedRank(int rank) {
  const char *stop = getenv("TAMOE_TEST_STOP_RANK");
  return stop && *stop && atoi(stop) == rank;
}

int MPI_Init_thread(int *argc, char ***argv, int required, int *provided) {
  const char *before = getenv("TAMOE_TEST_STOP_BEFORE_INIT");
  const char *launcherRank = getenv("OMPI_COMM_WORLD_RANK");
  if (before && *before == '1' && launcherRank &&
      isStoppedRank(atoi(launcherRank)))
    raise(SIGSTOP);
  int rc = PMPI_Init_thread(argc, argv, required, provided);
  int rank = -1;
  PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (isStoppedRank(rank))
    raise(SIGSTOP);
  return rc;
}
