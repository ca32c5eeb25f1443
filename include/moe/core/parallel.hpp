#pragma once
// Loops over independent items on OpenMP threads when moe is built with OpenMP. Callers split work into
// items whose results do not depend on how items are assigned to threads, so any thread count gives
// the same bits.

#include <algorithm>
#include <atomic>

#include "moe/core/types.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace moe {

/// Calls body(i) for i in [0, count), items possibly on different threads; `dynamic` suits uneven items.
template <class Body>
void parallel_for(Index count, Body&& body, bool dynamic = false) {
#ifdef _OPENMP
  if (count > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
    if (dynamic) {
      // Self-scheduled through one counter: LLVM's libomp allocates for every chunk of schedule(dynamic).
      std::atomic<Index> next{0};
#pragma omp parallel
      for (Index i = next++; i < count; i = next++) body(i);
    } else {
#pragma omp parallel for schedule(static)
      for (Index i = 0; i < count; ++i) body(i);
    }
    return;
  }
#endif
  static_cast<void>(dynamic);
  for (Index i = 0; i < count; ++i) body(i);
}

/// Calls body(first, count) for the consecutive chunks of `chunk` items (the last one shorter) that cover
/// [0, total), chunks possibly on different threads. The chunks depend on total and chunk only, so a
/// caller that computes each chunk on its own gets the same bits for any number of threads.
template <class Body>
void parallel_for_chunks(Index total, Index chunk, Body&& body) {
  const Index chunks = (total + chunk - 1) / chunk;
  parallel_for(chunks, [&](Index c) { body(c * chunk, std::min(chunk, total - c * chunk)); });
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
