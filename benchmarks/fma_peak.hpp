#pragma once
// The machine's FP32 FMA peak, measured: a loop of independent fused multiply-adds on registers only, at the
// widest vector the build targets (build with -march=native to measure the machine's), on every thread of
// an OpenMP team at once. What "share of peak" in the benchmarks divides by.

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>

namespace moe_bench {

namespace detail {

#if defined(__AVX512F__)
using FmaVector = __m512;
inline FmaVector fma_splat(float v) { return _mm512_set1_ps(v); }
inline FmaVector fma(FmaVector a, FmaVector b, FmaVector c) { return _mm512_fmadd_ps(a, b, c); }
inline void fma_store(float* to, FmaVector v) { _mm512_store_ps(to, v); }
#elif defined(__FMA__)
using FmaVector = __m256;
inline FmaVector fma_splat(float v) { return _mm256_set1_ps(v); }
inline FmaVector fma(FmaVector a, FmaVector b, FmaVector c) { return _mm256_fmadd_ps(a, b, c); }
inline void fma_store(float* to, FmaVector v) { _mm256_store_ps(to, v); }
#else
#error "fma_peak.hpp needs FMA instructions: build with -march=native (or -mfma)"
#endif

inline float fma_sum(FmaVector v) {
  alignas(64) float lanes[sizeof(FmaVector) / sizeof(float)];
  fma_store(lanes, v);
  float sum = 0;
  for (float lane : lanes) sum += lane;
  return sum;
}

/// 16 independent chains cover the FMA latency times the FMA ports of current x86 cores (4 x 2 on Zen 4/5,
/// 4 x 2 on Intel since Skylake). a < 1 keeps the values away from overflow and denormals.
[[gnu::noinline]] inline float fma_chains(long iterations, float seed) {
  constexpr int chains = 16;
  FmaVector acc[chains];
  for (int j = 0; j < chains; ++j) acc[j] = fma_splat(seed + static_cast<float>(j));
  const FmaVector a = fma_splat(0.999f), b = fma_splat(seed * 1e-3f);
  for (long i = 0; i < iterations; ++i)
    for (int j = 0; j < chains; ++j) acc[j] = fma(acc[j], a, b);
  float sum = 0;
  for (int j = 0; j < chains; ++j) sum += fma_sum(acc[j]);
  return sum;
}

}  // namespace detail

/// GFLOP/s of `threads` threads running FMA chains at once (2 FLOPs per lane per FMA): the best of `runs`
/// runs of about `seconds` each, so that a moment of contention on a shared machine does not lower it.
inline double fma_peak_gflops(int threads, double seconds = 0.2, int runs = 3) {
  using Clock = std::chrono::steady_clock;
  constexpr double flops_per_iteration = 16.0 * 2.0 * sizeof(detail::FmaVector) / sizeof(float);
  // Calibrate on one thread: iterations for about `seconds`.
  long iterations = 1 << 20;
  const auto start = Clock::now();
  volatile float sink = detail::fma_chains(iterations, 1.0f);
  const double calibration = std::chrono::duration<double>(Clock::now() - start).count();
  iterations = std::max(1L, static_cast<long>(static_cast<double>(iterations) * seconds / calibration));
  double best = 0;
  for (int run = 0; run < runs; ++run) {
    double elapsed = 0;
#pragma omp parallel num_threads(threads)
    {
#pragma omp barrier
      const auto begin = Clock::now();
      sink = detail::fma_chains(iterations, 1.0f + static_cast<float>(omp_get_thread_num()));
#pragma omp barrier
#pragma omp master
      elapsed = std::chrono::duration<double>(Clock::now() - begin).count();
    }
    best = std::max(best, static_cast<double>(threads) * static_cast<double>(iterations) * flops_per_iteration /
                              elapsed * 1e-9);
  }
  static_cast<void>(sink);
  return best;
}

}  // namespace moe_bench
