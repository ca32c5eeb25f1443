#pragma once
// Keeping freed memory in the process for the next batch.
//
// Training allocates buffers whose sizes change with every batch: each expert's rows, and with them its
// activations and gradients. glibc by default returns large freed blocks to the kernel (munmap above
// M_MMAP_THRESHOLD, heap trimming above M_TRIM_THRESHOLD), so the next batch page-faults the same amount
// of memory back in. On the benchmark configurations that is 3-11% of an MoE layer's forward or
// forward+backward on two threads (benchmarks/perf_notes.md).

#include <climits>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace moe {

/// Asks the C library's allocator to keep freed memory for reuse instead of returning it to the kernel:
/// blocks up to 32 MiB (glibc's largest M_MMAP_THRESHOLD on 64-bit) come from the heap, and the heap is
/// not trimmed, so the process keeps its peak memory. It changes the whole process's allocator, so moe
/// never calls it by itself: a training program calls it once at start (the examples and benchmarks do).
/// Returns false where the allocator has no such settings (not glibc) or refuses them.
inline bool retain_freed_memory() {
#if defined(__GLIBC__)
  constexpr int largest_mmap_threshold = 32 * 1024 * 1024;
  return mallopt(M_MMAP_THRESHOLD, largest_mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
#else
  return false;
#endif
}

}  // namespace moe
