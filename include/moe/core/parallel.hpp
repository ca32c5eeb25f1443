#pragma once
// Loops over independent items on moe's threads (std::thread: detail::ThreadPool). Callers split work into
// items whose results do not depend on how items are assigned to threads, so any thread count gives
// the same bits.
//
// Each item's exception is caught on the thread that ran it, and the one of the lowest item index is
// rethrown on the calling thread after the loop, so the error, like the result, is the same for any
// thread count. A moe::Error passes unchanged; any other exception becomes a moe::Error
// "<where>: <what()>", at one thread too.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if __has_include(<sched.h>)
#include <sched.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

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

/// The exception of the lowest item index that threw in a parallel loop. A thread stops at the first item
/// of its own that throws; items below the lowest failed index must still run, since one of them may throw
/// too and must win, as it would on one thread.
class LoopError {
 public:
  explicit LoopError(Index count) : first_(count) {}

  bool skips(Index i) const { return i > first_.load(std::memory_order_relaxed); }

  /// Called from the catch block of item i.
  void record(Index i) noexcept {
    const std::lock_guard lock(mutex_);
    if (i < first_.load(std::memory_order_relaxed)) {
      first_.store(i, std::memory_order_relaxed);
      error_ = std::current_exception();
    }
  }

  /// After the loop, whose end makes the threads' records visible.
  void rethrow_if_any(const char* where) const {
    if (error_) rethrow_from(where, error_);
  }

 private:
  std::atomic<Index> first_;
  std::mutex mutex_;
  std::exception_ptr error_;
};

/// Tells the CPU that the thread is waiting in a loop (lets the other hyperthread of the core run).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("pause");  // not _mm_pause: nvcc compiles this header too
#elif defined(__aarch64__)
  asm volatile("yield");
#else
  std::this_thread::yield();
#endif
}

/// Waits until done(): spins for a moment, then yields the CPU between checks until `patience` has passed,
/// then blocks in value.wait(old). The next loop of a layer usually comes within the spin or the yields,
/// so a worker is there at once (waking a blocked thread takes tens of microseconds); a yielding waiter
/// lets another process on its CPU run; and a long wait takes no CPU at all.
template <class T, class Done>
void spin_then_wait(const std::atomic<T>& value, Done&& done, std::chrono::microseconds patience) {
  const auto until = std::chrono::steady_clock::now() + patience;
  for (unsigned round = 1; !done(); ++round) {
    if (round < 256) {
      cpu_relax();
      continue;
    }
    std::this_thread::yield();
    if (round % 16 == 0 && std::chrono::steady_clock::now() > until) {
      for (T old = value.load(); !done(); old = value.load()) value.wait(old);
      return;
    }
  }
}

/// moe's thread count when the program sets none: the first number of OMP_NUM_THREADS, the convention
/// of OpenMP programs, else the CPUs this process may run on.
inline int default_thread_count() {
  if (const char* variable = std::getenv("OMP_NUM_THREADS")) {
    char* end = nullptr;
    const long threads = std::strtol(variable, &end, 10);
    const bool number = end != variable && (*end == '\0' || *end == ',');
    if (number && threads > 0) return static_cast<int>(std::min(threads, 1024L));
  }
#if defined(__linux__) && __has_include(<sched.h>)
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) > 0) return CPU_COUNT(&cpus);
#endif
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

/// True on moe's worker threads and on a thread inside parallel_for: a loop there runs on that thread.
inline thread_local bool in_parallel_loop = false;

/// The threads of moe's parallel loops: the calling thread and (thread count - 1) workers, started on
/// first use and kept. Items are handed out from one counter in blocks, so a thread that the system
/// deschedules (another process on its core) holds up at most the block it is running, and the others
/// take the rest; the bits do not depend on who ran what, since callers make items independent. Idle
/// workers wait for the next loop of a layer by spinning briefly, then yielding their CPU to any other
/// thread that wants it, then (after 2 ms) sleeping (spin_then_wait); OpenMP's default spins without
/// yielding, and fights another process on the same CPU.
class ThreadPool {
 public:
  /// The one pool of the process. Never destroyed: a loop run from a static object's destructor still
  /// finds it, and the workers, asleep, end with the process.
  static ThreadPool& instance() {
    static ThreadPool& pool = *new ThreadPool(default_thread_count());
    return pool;
  }

  int threads() const { return threads_.load(std::memory_order_relaxed); }
  int set_threads(int threads) { return threads_.exchange(std::max(1, threads)); }

  /// Runs items(first, end) over blocks of `grain` consecutive items that cover [0, count), on the
  /// calling thread and (threads - 1) workers; false, having run nothing, when another thread's loop holds
  /// the pool (the caller then runs the loop itself).
  template <class Items>
  bool run(Index count, Index grain, int threads, Items& items) {
    const std::unique_lock lock(busy_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    const int workers = start_workers(threads - 1);
    job_.items = [](void* context, Index first, Index end) { (*static_cast<Items*>(context))(first, end); };
    job_.context = &items;
    job_.count = count;
    job_.grain = grain;
    job_.workers = workers;
    job_.next.store(0, std::memory_order_relaxed);
    open_.store(true);  // publishes the job (seq_cst, as every access to open_ and active_)
    generation_.fetch_add(1);
    generation_.notify_all();
    take_blocks();
    // No block is left to take; close the job, then wait for the workers that joined it to finish theirs.
    // A worker counts itself in active_ before it looks at open_, so either it sees the job closed or this
    // thread sees it counted.
    open_.store(false);
    spin_then_wait(active_, [&] { return active_.load() == 0; }, std::chrono::milliseconds(2));
    return true;
  }

 private:
  struct Job {
    void (*items)(void*, Index, Index) = nullptr;
    void* context = nullptr;
    Index count = 0, grain = 1;
    int workers = 0;  // workers [0, workers) may join
    std::atomic<Index> next{0};
  };

  explicit ThreadPool(int threads) : threads_(std::max(1, threads)) {}

  void take_blocks() {
    for (Index first = job_.next.fetch_add(job_.grain); first < job_.count; first = job_.next.fetch_add(job_.grain))
      job_.items(job_.context, first, std::min(first + job_.grain, job_.count));
  }

  /// Starts workers up to `count` and waits until they are ready; returns how many there are, fewer where
  /// the system refuses a thread.
  int start_workers(int count) {
    try {
      while (static_cast<int>(workers_.size()) < count) {
        const int index = static_cast<int>(workers_.size());
        // The job about to be published is the first a new worker waits for.
        workers_.emplace_back([this, index, seen = generation_.load()] { work(index, seen); });
      }
    } catch (const std::system_error&) {  // the loop runs on the workers there are
    }
    const int started = static_cast<int>(workers_.size());
    spin_then_wait(ready_, [&] { return ready_.load() >= started; }, std::chrono::milliseconds(2));
    return std::min(count, started);
  }

  [[noreturn]] void work(int index, std::uint32_t seen) {
    in_parallel_loop = true;
#ifdef _OPENMP
    // A library built on OpenMP (oneDNN: moe/core/gemm.hpp) called from this thread runs on it alone; and
    // the runtime's per-thread state is made now, not during a loop.
    omp_set_num_threads(1);
#endif
    ready_.fetch_add(1);
    ready_.notify_all();
    for (;;) {
      spin_then_wait(generation_, [&] { return generation_.load() != seen; }, std::chrono::milliseconds(2));
      seen = generation_.load();
      active_.fetch_add(1);
      // The job's fields are read only while it is open: they are written while it is closed and no
      // worker is counted in active_.
      if (open_.load() && index < job_.workers) take_blocks();
      if (active_.fetch_sub(1) == 1) active_.notify_all();
    }
  }

  std::mutex busy_;  // one loop at a time
  std::atomic<int> threads_;
  std::atomic<std::uint32_t> generation_{0};  // counts the jobs; workers wait for it to change
  std::atomic<bool> open_{false};
  std::atomic<int> active_{0};  // workers inside the current job
  std::atomic<int> ready_{0};   // workers that have started
  Job job_;
  std::vector<std::thread> workers_;
};

}  // namespace detail

/// Calls body(i) for i in [0, count), items possibly on different threads; `dynamic` hands them out one
/// at a time (uneven items, such as experts), else in a few blocks of consecutive items per thread.
/// `where` names the loop in the message of an error that is not already a moe::Error. A loop inside a
/// loop's body runs on the thread of that body.
template <class Body>
void parallel_for(const char* where, Index count, Body&& body, bool dynamic = false) {
  detail::ThreadPool& pool = detail::ThreadPool::instance();
  const int threads = pool.threads();
  if (count > 1 && threads > 1 && !detail::in_parallel_loop) {
    detail::LoopError error(count);
    auto items = [&](Index first, Index end) {
      const bool was_in_loop = std::exchange(detail::in_parallel_loop, true);
      Index i = first;
      try {
        // The counter only grows, so once an item has failed, a block past it has nothing to do.
        for (; i < end && !error.skips(i); ++i) body(i);
      } catch (...) {
        error.record(i);
      }
      detail::in_parallel_loop = was_in_loop;
    };
    // Four blocks per thread: a descheduled thread leaves the others most of the loop.
    const Index grain = dynamic ? 1 : std::max<Index>(1, count / (4 * threads));
    if (pool.run(count, grain, threads, items)) {
      error.rethrow_if_any(where);
      return;
    }
  }
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

/// Sets the number of threads moe's loops use (at least 1); returns the previous number. Without a call,
/// the first number of OMP_NUM_THREADS, else the CPUs the process may run on.
inline int set_num_threads(int threads) { return detail::ThreadPool::instance().set_threads(threads); }

inline int num_threads() { return detail::ThreadPool::instance().threads(); }

}  // namespace moe
