// One MoE layer of a benchmark configuration, run a few times without Google Benchmark: what
// scripts/bench.sh runs under valgrind --tool=callgrind (a reduced run: fewer tokens, same shapes).
//
//   moe_profile CONFIG fwd|fwd_bwd [TOKENS [ITERATIONS]]
//
// TOKENS (default the config's T) scales the rows of every expert with it; one untimed warm-up forward
// (+ backward) runs first, so buffers are allocated before the measured iterations.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common.hpp"

namespace {

using moe_bench::Config;

/// The measured iterations, in a function of their own so that callgrind can collect inside it alone
/// (--toggle-collect='*measured_steps*'), without the set-up and the warm-up.
template <class Step>
[[gnu::noinline]] void measured_steps(Step& step, int iterations) {
  for (int i = 0; i < iterations; ++i) step();
}
using moe_bench::Matrix;

template <int K>
int run(const Config& c, bool backward, int iterations) {
  moe_bench::Layer<K> layer = moe_bench::make_layer<K>(c);
  const Matrix x = moe_bench::random_matrix(c.tokens, c.d, 1);
  const Matrix dy = moe_bench::random_matrix(c.tokens, c.d, 2);
  auto step = [&] {
    layer.forward(x);
    if (backward) layer.backward(dy);
  };
  step();
  const auto start = std::chrono::steady_clock::now();
  measured_steps(step, iterations);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double flops = (backward ? c.forward_backward_flops() : c.forward_flops()) * iterations;
  std::printf("%s %s T=%lld: %.3f s, %.1f tokens/s, %.2f GFLOP/s\n", c.name, backward ? "fwd_bwd" : "fwd",
              static_cast<long long>(c.tokens), seconds, double(c.tokens) * iterations / seconds,
              flops / seconds * 1e-9);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: moe_profile CONFIG fwd|fwd_bwd [TOKENS [ITERATIONS]]\n");
    return 2;
  }
  const std::string name = argv[1], mode = argv[2];
  if (mode != "fwd" && mode != "fwd_bwd") {
    std::fprintf(stderr, "moe_profile: mode must be fwd or fwd_bwd, got %s\n", mode.c_str());
    return 2;
  }
  const char* threads = std::getenv("MOE_BENCH_THREADS");
  moe::set_num_threads(threads != nullptr && std::atoi(threads) > 0 ? std::atoi(threads) : 2);
  moe::retain_freed_memory();
  for (Config c : moe_bench::configs()) {
    if (name != c.name) continue;
    if (argc > 3) c.tokens = std::atoll(argv[3]);
    const int iterations = argc > 4 ? std::atoi(argv[4]) : 1;
    if (c.tokens <= 0 || iterations <= 0) {
      std::fprintf(stderr, "moe_profile: TOKENS and ITERATIONS must be positive\n");
      return 2;
    }
    return moe_bench::with_k(c, [&]<int K>() { return run<K>(c, mode == "fwd_bwd", iterations); });
  }
  std::fprintf(stderr, "moe_profile: unknown config %s\n", name.c_str());
  return 2;
}
