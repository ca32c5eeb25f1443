#pragma once
// A failure on one process of an MPI program must end all of them: the others would wait forever in their
// next collective for the one that threw.

#include <mpi.h>

#include <cstdio>
#include <exception>

namespace moe::backends {

/// Returns body()'s exit code. Whatever body throws is reported on stderr as "rank R: <what>" and ends
/// every process of `comm` (MPI_Abort with exit code 1, which mpirun reports for the whole job).
template <class Body>
int run_or_abort(MPI_Comm comm, Body&& body) {
  try {
    return body();
  } catch (const std::exception& error) {
    int rank = -1;
    MPI_Comm_rank(comm, &rank);
    std::fprintf(stderr, "rank %d: %s\n", rank, error.what());
    std::fflush(stderr);
    MPI_Abort(comm, 1);
  }
  return 1;
}

}  // namespace moe::backends
