#pragma once
// Loops over independent items on OpenMP threads when moe is built with OpenMP. Callers split work into
// items whose results do not depend on how items are assigned to threads, so any thread count gives
// the same bits.
//
// Nothing escapes an OpenMP region (a throw out of one ends the process): each item's exception is
// caught in the region, and the one of the lowest item index is rethrown on the calling thread after
// the region, so the error, like the result, is the same for any thread count. A moe::Error passes
// unchanged; any other exception becomes a moe::Error "<where>: <what()>", at one thread too.

#include <algorithm>
#include <atomic>
#include <exception>
#include <utility>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace moe {
namespace detail {

/// Rethrows `error` as a moe::Error that says where it came from; a moe::Error as it is.
[[noreturn]] inline void rethrow_from(const char* where, const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(concat(where, ": ", e.what()));
  } catch (...) {
    throw Error(concat(where, ": unknown exception"));
  }
}

#ifdef _OPENMP
/// The exception of the lowest item index that threw in a parallel region. A thread stops at the first
/// item of its own that throws; items below the lowest failed index must still run, since one of them
/// may throw too and must win, as it would on one thread.
class RegionError {
 public:
  explicit RegionError(Index count) : first_(count) {}

  bool skips(Index i) const { return i > first_.load(std::memory_order_relaxed); }

  /// Called from the catch block of item i.
  void record(Index i) noexcept {
#pragma omp critical(moe_parallel_region_error)
    if (i < first_.load(std::memory_order_relaxed)) {
      first_.store(i, std::memory_order_relaxed);
      error_ = std::current_exception();
    }
  }

  /// After the region, whose end makes the threads' records visible.
  void rethrow_if_any(const char* where) const {
    if (error_) rethrow_from(where, error_);
  }

 private:
  std::atomic<Index> first_;
  std::exception_ptr error_;
};
#endif

}  // namespace detail

/// Calls body(i) for i in [0, count), items possibly on different threads; `dynamic` suits uneven items.
/// `where` names the loop in the message of an error that is not already a moe::Error.
template <class Body>
void parallel_for(const char* where, Index count, Body&& body, bool dynamic = false) {
#ifdef _OPENMP
  if (count > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
    detail::RegionError error(count);
    std::atomic<Index> next{0};  // the dynamic schedule's
#pragma omp parallel
    {
      Index i = 0;
      try {
        if (dynamic) {
          // Self-scheduled through one counter: LLVM's libomp allocates for every chunk of schedule(dynamic).
          // The counter only grows, so once an item has failed, a thread past it has nothing left to do.
          for (i = next++; i < count && !error.skips(i); i = next++) body(i);
        } else {
          // One block of consecutive items per thread, as schedule(static) makes, in a plain loop: the flag
          // is not checked here, so a body that cannot throw compiles as it would without this guard.
          const Index threads = omp_get_num_threads(), thread = omp_get_thread_num();
          const Index size = count / threads, extra = count % threads;
          i = thread * size + std::min(thread, extra);
          const Index end = i + size + (thread < extra ? 1 : 0);
          for (; i < end; ++i) body(i);
        }
      } catch (...) {
        error.record(i);
      }
    }
    error.rethrow_if_any(where);
    return;
  }
#endif
  static_cast<void>(dynamic);
  try {
    for (Index i = 0; i < count; ++i) body(i);
  } catch (...) {
    detail::rethrow_from(where, std::current_exception());
  }
}

/// parallel_for for a loop that needs no name of its own.
template <class Body>
void parallel_for(Index count, Body&& body, bool dynamic = false) {
  parallel_for("moe::parallel_for", count, std::forward<Body>(body), dynamic);
}

/// Calls body(first, count) for the consecutive chunks of `chunk` items (the last one shorter) that cover
/// [0, total), chunks possibly on different threads. The chunks depend on total and chunk only, so a
/// caller that computes each chunk on its own gets the same bits for any number of threads.
template <class Body>
void parallel_for_chunks(const char* where, Index total, Index chunk, Body&& body) {
  const Index chunks = (total + chunk - 1) / chunk;
  parallel_for(where, chunks, [&](Index c) { body(c * chunk, std::min(chunk, total - c * chunk)); });
}

template <class Body>
void parallel_for_chunks(Index total, Index chunk, Body&& body) {
  parallel_for_chunks("moe::parallel_for_chunks", total, chunk, std::forward<Body>(body));
}

/// Sets the number of threads moe uses (OpenMP); returns the previous number. 1 without OpenMP.
inline int set_num_threads(int threads) {
#ifdef _OPENMP
  const int previous = omp_get_max_threads();
  omp_set_num_threads(threads);
  return previous;
#else
  static_cast<void>(threads);
  return 1;
#endif
}

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace moe
