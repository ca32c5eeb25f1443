#pragma once
// What a benchmarked call costs besides its arithmetic: heap allocations (every malloc, calloc and realloc
// of the process, counted by this program's own definitions of them: Eigen allocates with malloc and
// operator new ends in it; BLAS libraries use the aligned ones, counted too) and minor page faults (getrusage: first touches of fresh memory, about 10 us per
// 4 KiB page on a VM). Include this header in one translation unit of a program only: it defines malloc and its kin.

#include <malloc.h>
#include <sys/resource.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>

extern "C" void* __libc_malloc(std::size_t size);
extern "C" void* __libc_calloc(std::size_t count, std::size_t size);
extern "C" void* __libc_realloc(void* pointer, std::size_t size);
extern "C" void* __libc_memalign(std::size_t alignment, std::size_t size);

namespace moe_bench {

inline std::atomic<long> heap_allocations{0};

inline long minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

/// Allocations and minor faults of the whole process from construction to per_call(calls).
class CallCounters {
 public:
  CallCounters() : allocations_(heap_allocations.load()), faults_(minor_faults()) {}

  struct PerCall {
    double allocations, faults;
  };
  PerCall per_call(long calls) const {
    const double n = calls > 0 ? static_cast<double>(calls) : 1.0;
    return {static_cast<double>(heap_allocations.load() - allocations_) / n,
            static_cast<double>(minor_faults() - faults_) / n};
  }

 private:
  long allocations_, faults_;
};

}  // namespace moe_bench

extern "C" void* malloc(std::size_t size) noexcept {
  moe_bench::heap_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(size);
}
extern "C" void* calloc(std::size_t count, std::size_t size) noexcept {
  moe_bench::heap_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(count, size);
}
extern "C" void* realloc(void* pointer, std::size_t size) noexcept {
  moe_bench::heap_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(pointer, size);
}
extern "C" void* memalign(std::size_t alignment, std::size_t size) noexcept {
  moe_bench::heap_allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(alignment, size);
}
extern "C" void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept { return memalign(alignment, size); }
extern "C" int posix_memalign(void** out, std::size_t alignment, std::size_t size) noexcept {
  if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* pointer = memalign(alignment, size);
  if (pointer == nullptr) return ENOMEM;
  *out = pointer;
  return 0;
}
