#pragma once
// What the benchmark programs share: the configurations of the Performance issue, the FLOP counts the
// counters report, and a main() that fixes the thread count before Google Benchmark runs.

#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/core/memory.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/softmax_top_k.hpp"

namespace moe_bench {

using moe::Index;
using Matrix = moe::MatrixX<float>;

/// One MoE layer shape: T tokens of width d, N experts of hidden width h, K experts per token.
struct Config {
  const char* name;
  Index tokens, d, h, experts, k;

  /// Rows each expert gets when the load is perfectly balanced (the GEMM reference uses exactly this).
  Index rows_per_expert() const { return tokens * k / experts; }
  /// Active expert FLOPs of one forward: two GEMMs of 2*d*h per routed row (biases and GELU not counted).
  double forward_flops() const { return 4.0 * static_cast<double>(tokens * k) * static_cast<double>(d * h); }
  /// Forward + backward: the backward does twice the forward's GEMMs (dx and dW of each Linear).
  double forward_backward_flops() const { return 3.0 * forward_flops(); }
};

/// C1-C4 of the issue, and the scaling pair N8 / N256 (same T, d, h, K; 32x more, 32x smaller experts).
inline const std::vector<Config>& configs() {
  static const std::vector<Config> list{
      {"C1", 4096, 512, 1024, 8, 2},  {"C2", 4096, 256, 128, 64, 6}, {"C3", 256, 512, 512, 2, 1},
      {"C4", 4096, 768, 3072, 4, 4},  {"N8", 4096, 256, 256, 8, 2},  {"N256", 4096, 256, 256, 256, 2},
  };
  return list;
}

/// The benchmarked MoE layer: GELU feed-forward experts behind a softmax top-K router, no balancing.
template <int K>
using Layer = moe::MoELayer<moe::FeedForward<moe::GELU>, moe::SoftmaxTopK, K, moe::NoBalancing>;

/// The layer of a configuration, with the weights every benchmark program gives it.
template <int K>
Layer<K> make_layer(const Config& c) {
  moe::Rng rng(11);
  typename Layer<K>::Options options;
  options.d_model = c.d;
  options.num_experts = c.experts;
  options.k = c.k;
  options.expert.hidden = c.h;
  return Layer<K>(options, rng);
}

/// body.template operator()<K>() with the configuration's K as a template argument where one is
/// instantiated, moe::Dynamic otherwise.
template <class Body>
decltype(auto) with_k(const Config& c, Body&& body) {
  switch (c.k) {
    case 1: return body.template operator()<1>();
    case 2: return body.template operator()<2>();
    case 4: return body.template operator()<4>();
    case 6: return body.template operator()<6>();
    default: return body.template operator()<moe::Dynamic>();
  }
}

/// The FP32 FMA peak of `threads` threads at once in GFLOP/s (fma_peak.hpp, built for this machine by
/// benchmarks/machine_peak.cpp).
double machine_fma_peak_gflops(int threads);

inline Matrix random_matrix(Index rows, Index cols, std::uint64_t seed, double stddev = 1.0) {
  moe::Rng rng(seed);
  Matrix m(rows, cols);
  moe::fill_normal(m, rng, 0.0, stddev);
  return m;
}

/// tokens_per_s and gflops as rates over the benchmark's (real) time: the value of a kIsRate counter is
/// divided by the measured seconds, so it is the total over all iterations.
inline void set_rates(benchmark::State& state, double tokens_per_iteration, double flops_per_iteration) {
  const double iterations = static_cast<double>(state.iterations());
  state.counters["tokens_per_s"] = benchmark::Counter(iterations * tokens_per_iteration, benchmark::Counter::kIsRate);
  state.counters["gflops"] =
      benchmark::Counter(iterations * flops_per_iteration * 1e-9, benchmark::Counter::kIsRate);
}

inline int run_main(int argc, char** argv) {
  // MOE_BENCH_THREADS (default 2, the setting) threads for moe's parallel_for.
  const char* env = std::getenv("MOE_BENCH_THREADS");
  const int threads = env != nullptr ? std::atoi(env) : 2;
  moe::set_num_threads(threads > 0 ? threads : 2);
  benchmark::AddCustomContext("moe_threads", std::to_string(moe::num_threads()));
  // As a training program would: buffers whose sizes change between calls keep their memory.
  benchmark::AddCustomContext("retain_freed_memory", moe::retain_freed_memory() ? "yes" : "no");
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
#ifdef MOE_BENCH_VARIANT
  benchmark::AddCustomContext("moe_variant", MOE_BENCH_VARIANT);
#endif
#if defined(__clang__)
  benchmark::AddCustomContext("compiler", std::string("clang++ ") + __clang_version__);
#elif defined(__GNUC__)
  benchmark::AddCustomContext("compiler", std::string("g++ ") + __VERSION__);
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace moe_bench
