#pragma once
// MpiComm: the communicator policy of ExpertParallel on MPI (OpenMPI here), the collectives expert and data
// parallelism need, typed for moe's scalars and indices. It does not own the MPI communicator (the program
// calls MPI_Init and MPI_Finalize). A failed MPI call is a moe::Error naming the call and the rank.

#include <mpi.h>

#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe::backends {

namespace mpi_detail {

template <class T>
MPI_Datatype datatype() {
  if constexpr (std::is_same_v<T, float>)
    return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>)
    return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int64_t> || (std::is_integral_v<T> && sizeof(T) == 8))
    return MPI_INT64_T;
  else if constexpr (std::is_same_v<T, unsigned char>)
    return MPI_UNSIGNED_CHAR;
  else
    static_assert(sizeof(T) == 0, "MpiComm: no MPI datatype for this type (float, double, Index, bytes)");
}

/// An element count as MPI takes it (int).
inline int count(Index n, const char* what) {
  detail::require(n >= 0 && n <= INT_MAX, "MpiComm: ", what, " of ", n, " elements is more than MPI's int counts "
                  "can address");
  return static_cast<int>(n);
}

}  // namespace mpi_detail

class MpiComm {
 public:
  explicit MpiComm(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm handle() const { return comm_; }

  /// all[r * n + i] = rank r's mine[i], on every rank; every rank gives as many (n) elements.
  template <class T>
  void allgather(const std::vector<T>& mine, std::vector<T>& all) const {
    const int n = mpi_detail::count(static_cast<Index>(mine.size()), "allgather");
    all.resize(mine.size() * static_cast<std::size_t>(size_));
    check(MPI_Allgather(mine.data(), n, mpi_detail::datatype<T>(), all.data(), n, mpi_detail::datatype<T>(), comm_),
          "MPI_Allgather");
  }

  /// received[r * n + i] = what rank r sent this rank as its send[rank * n + i], n = send.size() / size().
  template <class T>
  void alltoall(const std::vector<T>& send, std::vector<T>& received) const {
    const int n = mpi_detail::count(static_cast<Index>(send.size()) / size_, "alltoall");
    received.resize(send.size());
    check(MPI_Alltoall(send.data(), n, mpi_detail::datatype<T>(), received.data(), n, mpi_detail::datatype<T>(),
                       comm_),
          "MPI_Alltoall");
  }

  /// One message per destination: send_counts[r] elements of `send` (in rank order) go to rank r, and
  /// receive_counts[r] from rank r land in `received`, in rank order.
  template <class T>
  void alltoallv(const T* send, const std::vector<Index>& send_counts, T* received,
                 const std::vector<Index>& receive_counts) const {
    offsets(send_counts, send_counts_, send_offsets_);
    offsets(receive_counts, receive_counts_, receive_offsets_);
    check(MPI_Alltoallv(send, send_counts_.data(), send_offsets_.data(), mpi_detail::datatype<T>(), received,
                        receive_counts_.data(), receive_offsets_.data(), mpi_detail::datatype<T>(), comm_),
          "MPI_Alltoallv");
  }

  /// values summed element-wise over the ranks, in place. For integers, whose sum has no order.
  void sum(IndexVector& values) const {
    const int n = mpi_detail::count(values.size(), "sum");
    check(MPI_Allreduce(MPI_IN_PLACE, values.data(), n, mpi_detail::datatype<Index>(), MPI_SUM, comm_),
          "MPI_Allreduce");
  }

  /// Every rank's `mine` gathered to rank `root` (rank order, concatenated); empty elsewhere.
  template <class T>
  std::vector<T> gather_to(int root, const std::vector<T>& mine) const {
    std::vector<Index> sizes;
    allgather(std::vector<Index>{static_cast<Index>(mine.size())}, sizes);
    std::vector<int> counts(sizes.size()), displacements(sizes.size());
    Index total = 0;
    for (std::size_t r = 0; r < sizes.size(); ++r) {
      counts[r] = mpi_detail::count(sizes[r], "gather");
      displacements[r] = mpi_detail::count(total, "gather");
      total += sizes[r];
    }
    std::vector<T> all(rank_ == root ? static_cast<std::size_t>(total) : 0);
    check(MPI_Gatherv(mine.data(), counts[static_cast<std::size_t>(rank_)], mpi_detail::datatype<T>(), all.data(),
                      counts.data(), displacements.data(), mpi_detail::datatype<T>(), root, comm_),
          "MPI_Gatherv");
    return all;
  }

 private:
  void check(int code, const char* call) const {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    detail::fail("MpiComm: ", call, " failed on rank ", rank_, ": ", std::string(text, static_cast<std::size_t>(length)));
  }

  static void offsets(const std::vector<Index>& counts, std::vector<int>& as_int, std::vector<int>& offsets) {
    as_int.resize(counts.size());
    offsets.resize(counts.size());
    Index total = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      as_int[r] = mpi_detail::count(counts[r], "alltoallv");
      offsets[r] = mpi_detail::count(total, "alltoallv");
      total += counts[r];
    }
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  // Scratch of alltoallv, kept between calls.
  mutable std::vector<int> send_counts_, send_offsets_, receive_counts_, receive_offsets_;
};

}  // namespace moe::backends
