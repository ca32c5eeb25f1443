// The MoE layer and its parts on the configurations of benchmarks/common.hpp, beside a dense
// feed-forward of the same active FLOPs and the plain Eigen GEMMs the experts run (the GEMM reference).
//
// Names: <what>/<mode>/<config>, mode fwd or fwd_bwd where both exist. All benchmarks use real time
// (several threads run).
//
// gemm/<mode>/<config> is the reference: per expert, exactly T*K/N rows, its own weights, the products
// of Linear with the bias and the activation left out, single-threaded per expert, experts spread over
// the threads by moe::parallel_for(dynamic) as backends::cpu::for_each_expert does:
//   fwd:     H = X W1^T [r x h], Y = H W2^T [r x d]
//   fwd_bwd: fwd, then dW2 += dY^T H, dH = dY W2, dW1 += dH^T X, dX = dH W1
// gemm_square/<n> is one n x n x n product per thread on every thread: the peak of Eigen's GEMM here;
// stream_copy, the memory bandwidth; fma_peak, the machine's floating-point peak on every thread.
// moe_layer and gemm report allocs_per_call and faults_per_call (benchmarks/call_counters.hpp) of their
// timed calls; moe_layer's come after one untimed call on each of its batches, so they are steady state.
// expert/<mode>/<config> and expert_gemm/<mode>/<config>: one expert's FeedForward, and its products
// alone, on T*K/N rows and one thread (tokens_per_s counts those rows).

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>

#include "call_counters.hpp"
#include "common.hpp"
#include "moe/balancing/balancer.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/routing.hpp"
#include "moe/routing/softmax_top_k.hpp"

namespace moe_bench {
namespace {

using Dense = moe::FeedForward<moe::GELU>;

/// The routing of one batch of random tokens by a freshly initialised softmax router, with its dispatch
/// plan and one random output block per expert to combine; shared by the micro-benchmarks of one config.
struct RoutedBatch {
  Matrix x, dy, scores, gates;
  moe::IndexMatrix experts;
  moe::backends::cpu::DispatchPlan plan;
  std::vector<Matrix> expert_out;
  moe::backends::cpu::ExpertBlocks<float> expert_out_blocks;
};

const RoutedBatch& routed_batch(const Config& c) {
  static std::map<std::string, std::unique_ptr<RoutedBatch>> cache;
  auto& slot = cache[c.name];
  if (slot) return *slot;
  slot = std::make_unique<RoutedBatch>();
  RoutedBatch& b = *slot;
  moe::Rng rng(7);
  moe::SoftmaxTopK<float> router(c.d, c.experts, {}, rng);
  b.x = random_matrix(c.tokens, c.d, 1);
  b.dy = random_matrix(c.tokens, c.d, 2);
  b.scores = router.forward(b.x);
  moe::select_top_k<float>(b.scores, nullptr, c.k, b.experts);
  moe::gather_gates(b.scores, b.experts, false, 1.0, b.gates);
  moe::backends::cpu::plan(b.experts, c.experts, moe::Capacity{}, b.plan);
  for (Index e = 0; e < c.experts; ++e)
    b.expert_out.push_back(random_matrix(b.plan.count(e), c.d, 3 + std::uint64_t(e)));
  for (const Matrix& m : b.expert_out) b.expert_out_blocks.push_back(m.data());
  return b;
}

void router_forward(benchmark::State& state, const Config& c) {
  moe::Rng rng(7);
  moe::SoftmaxTopK<float> router(c.d, c.experts, {}, rng);
  const Matrix x = random_matrix(c.tokens, c.d, 1);
  for (auto _ : state) benchmark::DoNotOptimize(router.forward(x).data());
  set_rates(state, double(c.tokens), 2.0 * double(c.tokens) * double(c.d) * double(c.experts));
}

void top_k(benchmark::State& state, const Config& c) {
  const RoutedBatch& b = routed_batch(c);
  moe::IndexMatrix experts;
  for (auto _ : state) {
    moe::select_top_k<float>(b.scores, nullptr, c.k, experts);
    benchmark::DoNotOptimize(experts.data());
  }
  set_rates(state, double(c.tokens), 0.0);
}

void plan(benchmark::State& state, const Config& c) {
  const RoutedBatch& b = routed_batch(c);
  moe::backends::cpu::DispatchPlan p;
  for (auto _ : state) {
    moe::backends::cpu::plan(b.experts, c.experts, moe::Capacity{}, p);
    benchmark::DoNotOptimize(p.slot.data());
  }
  set_rates(state, double(c.tokens), 0.0);
}

/// Every expert's rows gathered into its own block, as MoELayer does before running each expert.
void gather(benchmark::State& state, const Config& c) {
  const RoutedBatch& b = routed_batch(c);
  std::vector<Matrix> rows;
  for (Index e = 0; e < c.experts; ++e) rows.emplace_back(b.plan.count(e), c.d);
  for (auto _ : state) {
    moe::backends::cpu::for_each_expert(b.plan, [&](Index e) {
      moe::backends::cpu::gather_expert<float>(b.x, b.plan, e, rows[static_cast<std::size_t>(e)]);
    });
    benchmark::ClobberMemory();
  }
  set_rates(state, double(c.tokens), 0.0);
  state.SetBytesProcessed(state.iterations() * 2 * c.tokens * c.k * c.d * Index(sizeof(float)));
}

void combine(benchmark::State& state, const Config& c) {
  const RoutedBatch& b = routed_batch(c);
  Matrix y;
  for (auto _ : state) {
    moe::backends::cpu::combine<float>(b.expert_out_blocks, b.experts, b.gates, b.plan, c.d, y);
    benchmark::DoNotOptimize(y.data());
  }
  set_rates(state, double(c.tokens), 2.0 * double(c.tokens * c.k * c.d));
  state.SetBytesProcessed(state.iterations() * (c.k + 1) * c.tokens * c.d * Index(sizeof(float)));
}

void output_grads(benchmark::State& state, const Config& c) {
  const RoutedBatch& b = routed_batch(c);
  Matrix d_rows(b.plan.rows(), c.d), d_gates = Matrix::Zero(c.tokens, c.k);
  for (auto _ : state) {
    moe::backends::cpu::for_each_expert(b.plan, [&](Index e) {
      moe::backends::cpu::expert_output_grads<float>(b.dy, b.expert_out[static_cast<std::size_t>(e)], b.gates,
                                                     b.plan, e, d_rows, d_gates);
    });
    benchmark::DoNotOptimize(d_rows.data());
    benchmark::DoNotOptimize(d_gates.data());
  }
  set_rates(state, double(c.tokens), 3.0 * double(c.tokens * c.k * c.d));
}

void scatter(benchmark::State& state, const Config& c) {
  const RoutedBatch& b = routed_batch(c);
  Matrix dx;
  for (auto _ : state) {
    moe::backends::cpu::scatter<float>(b.expert_out_blocks, b.experts, b.plan, c.d, dx);
    benchmark::DoNotOptimize(dx.data());
  }
  set_rates(state, double(c.tokens), double(c.tokens * c.k * c.d));
}

void set_call_counters(benchmark::State& state, const CallCounters& counters) {
  const CallCounters::PerCall per_call = counters.per_call(static_cast<long>(state.iterations()));
  state.counters["allocs_per_call"] = per_call.allocations;
  state.counters["faults_per_call"] = per_call.faults;
}

/// Distinct input batches the layer benchmarks cycle through.
constexpr std::uint64_t batches = 3;

template <int K>
void moe_layer(benchmark::State& state, const Config& c, bool backward) {
  Layer<K> layer = make_layer<K>(c);
  // Batches in turn, so that the routing (and every expert's row count) changes between calls as in
  // training: buffers are resized, not just reused.
  std::vector<Matrix> xs;
  for (std::uint64_t b = 0; b < batches; ++b) xs.push_back(random_matrix(c.tokens, c.d, 1 + 10 * b));
  const Matrix dy = random_matrix(c.tokens, c.d, 2);
  std::size_t next = 0;
  auto call = [&] {
    benchmark::DoNotOptimize(layer.forward(xs[next]).data());
    if (backward) benchmark::DoNotOptimize(layer.backward(dy).data());
    next = (next + 1) % xs.size();
  };
  for (std::uint64_t b = 0; b < batches; ++b) call();  // untimed: each batch once, so the counts are steady state
  const CallCounters counters;
  for (auto _ : state) call();
  set_call_counters(state, counters);
  set_rates(state, double(c.tokens), backward ? c.forward_backward_flops() : c.forward_flops());
  const moe::IndexVector& load = layer.batch_load();
  state.counters["load_max_over_mean"] =
      double(load.maxCoeff()) * double(c.experts) / double(c.tokens * c.k);
}

/// A dense feed-forward with hidden = K*h on all T tokens: the same active FLOPs as the MoE layer. With
/// `split` the tokens are cut in `threads` consecutive blocks, one module each, run by parallel_for
/// (a module's GEMMs are single-threaded: moe builds Eigen with EIGEN_DONT_PARALLELIZE).
void dense(benchmark::State& state, const Config& c, bool backward, bool split) {
  const Index parts = split ? Index(moe::num_threads()) : 1;
  moe::Rng rng(11);
  std::vector<Dense> modules;
  modules.reserve(static_cast<std::size_t>(parts));
  modules.emplace_back(c.d, Dense::Options{c.k * c.h}, rng);
  for (Index p = 1; p < parts; ++p) modules.push_back(modules.front());
  const Matrix x = random_matrix(c.tokens, c.d, 1);
  const Matrix dy = random_matrix(c.tokens, c.d, 2);
  auto block = [&](Index p) { return std::pair{p * c.tokens / parts, (p + 1) * c.tokens / parts - p * c.tokens / parts}; };
  for (auto _ : state) {
    moe::parallel_for(parts, [&](Index p) {
      const auto [first, count] = block(p);
      Dense& m = modules[static_cast<std::size_t>(p)];
      benchmark::DoNotOptimize(m.forward(x.middleRows(first, count)).data());
      if (backward) benchmark::DoNotOptimize(m.backward(dy.middleRows(first, count)).data());
    });
  }
  set_rates(state, double(c.tokens), backward ? c.forward_backward_flops() : c.forward_flops());
}

struct ExpertGemm {
  Matrix x, w1, w2, hidden, y, dy, dhidden, dw1, dw2, dx;
};

void gemm(benchmark::State& state, const Config& c, bool backward) {
  const Index r = c.rows_per_expert();
  std::vector<ExpertGemm> experts(static_cast<std::size_t>(c.experts));
  std::uint64_t seed = 100;
  for (auto& e : experts) {
    e.x = random_matrix(r, c.d, seed++);
    e.dy = random_matrix(r, c.d, seed++);
    e.w1 = random_matrix(c.h, c.d, seed++, 1.0 / std::sqrt(double(c.d)));
    e.w2 = random_matrix(c.d, c.h, seed++, 1.0 / std::sqrt(double(c.h)));
    e.hidden.resize(r, c.h);
    e.y.resize(r, c.d);
    e.dhidden.resize(r, c.h);
    e.dx.resize(r, c.d);
    e.dw1.setZero(c.h, c.d);
    e.dw2.setZero(c.d, c.h);
  }
  const CallCounters counters;
  for (auto _ : state) {
    moe::parallel_for(
        c.experts,
        [&](Index i) {
          ExpertGemm& e = experts[static_cast<std::size_t>(i)];
          e.hidden.noalias() = e.x * e.w1.transpose();
          e.y.noalias() = e.hidden * e.w2.transpose();
          if (!backward) return;
          e.dw2.noalias() += e.dy.transpose() * e.hidden;
          e.dhidden.noalias() = e.dy * e.w2;
          e.dw1.noalias() += e.dhidden.transpose() * e.x;
          e.dx.noalias() = e.dhidden * e.w1;
        },
        /*dynamic=*/true);
    benchmark::ClobberMemory();
  }
  const double rows = double(r * c.experts);
  const double flops = 4.0 * rows * double(c.d) * double(c.h) * (backward ? 3.0 : 1.0);
  set_call_counters(state, counters);
  set_rates(state, double(c.tokens), flops);
  state.counters["rows_per_expert"] = double(r);
}

/// One expert on its T*K/N rows, on the calling thread only: FeedForward<GELU> (`expert`) against the
/// same two products without bias and activation (`expert_gemm`): the per-expert overhead apart from
/// threading, routing and dispatch.
void expert(benchmark::State& state, const Config& c, bool backward, bool gemm_only) {
  const Index r = c.rows_per_expert();
  moe::Rng rng(11);
  Dense module(c.d, Dense::Options{c.h}, rng);
  ExpertGemm e;
  e.x = random_matrix(r, c.d, 1);
  e.dy = random_matrix(r, c.d, 2);
  e.w1 = random_matrix(c.h, c.d, 3, 1.0 / std::sqrt(double(c.d)));
  e.w2 = random_matrix(c.d, c.h, 4, 1.0 / std::sqrt(double(c.h)));
  e.dw1.setZero(c.h, c.d);
  e.dw2.setZero(c.d, c.h);
  for (auto _ : state) {
    if (!gemm_only) {
      benchmark::DoNotOptimize(module.forward(e.x).data());
      if (backward) benchmark::DoNotOptimize(module.backward(e.dy).data());
      continue;
    }
    e.hidden.noalias() = e.x * e.w1.transpose();
    e.y.noalias() = e.hidden * e.w2.transpose();
    if (backward) {
      e.dw2.noalias() += e.dy.transpose() * e.hidden;
      e.dhidden.noalias() = e.dy * e.w2;
      e.dw1.noalias() += e.dhidden.transpose() * e.x;
      e.dx.noalias() = e.dhidden * e.w1;
    }
    benchmark::ClobberMemory();
  }
  const double flops = 4.0 * double(r) * double(c.d) * double(c.h) * (backward ? 3.0 : 1.0);
  set_rates(state, double(r), flops);
}

/// Memory bandwidth: every thread copies its own 128 MiB buffer (far past the caches); bytes_per_second
/// counts bytes read plus bytes written. What streaming expert weights from memory costs.
void stream_copy(benchmark::State& state) {
  const Index threads = moe::num_threads(), floats = Index(32) << 20;
  std::vector<Eigen::VectorXf> from, to;
  for (Index t = 0; t < threads; ++t) {
    from.push_back(Eigen::VectorXf::Constant(floats, 1.0f));
    to.push_back(Eigen::VectorXf::Zero(floats));
  }
  for (auto _ : state) {
    moe::parallel_for(threads, [&](Index t) { to[std::size_t(t)] = from[std::size_t(t)]; });
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * threads * floats * Index(2 * sizeof(float)));
}

void gemm_square(benchmark::State& state) {
  const Index n = state.range(0), threads = moe::num_threads();
  std::vector<Matrix> a, b, out;
  for (Index t = 0; t < threads; ++t) {
    a.push_back(random_matrix(n, n, 1 + std::uint64_t(t)));
    b.push_back(random_matrix(n, n, 50 + std::uint64_t(t)));
    out.emplace_back(n, n);
  }
  for (auto _ : state) {
    moe::parallel_for(threads, [&](Index t) {
      const auto i = static_cast<std::size_t>(t);
      out[i].noalias() = a[i] * b[i];
    });
    benchmark::ClobberMemory();
  }
  set_rates(state, double(n * threads), 2.0 * double(n) * double(n) * double(n) * double(threads));
}

/// The machine's FP32 FMA peak on every thread at once (one run: the best of fma_peak.hpp's own runs).
void fma_peak(benchmark::State& state) {
  double gflops = 0;
  for (auto _ : state) gflops = std::max(gflops, machine_fma_peak_gflops(moe::num_threads()));
  state.counters["gflops"] = gflops;
}

/// moe::GELU on the [T·K x h] hidden activations, split in row blocks over the threads as the experts are.
void gelu(benchmark::State& state, const Config& c, bool backward) {
  const Matrix x = random_matrix(c.tokens * c.k, c.h, 5);
  const Matrix dy = random_matrix(c.tokens * c.k, c.h, 6);
  const Index parts = moe::num_threads();
  std::vector<moe::GELU<float>> modules(static_cast<std::size_t>(parts));
  for (auto _ : state) {
    moe::parallel_for(parts, [&](Index p) {
      const Index first = p * x.rows() / parts, count = (p + 1) * x.rows() / parts - first;
      moe::GELU<float>& gelu = modules[static_cast<std::size_t>(p)];
      benchmark::DoNotOptimize(gelu.forward(x.middleRows(first, count)).data());
      if (backward) benchmark::DoNotOptimize(gelu.backward(dy.middleRows(first, count)).data());
    });
  }
  set_rates(state, double(c.tokens), double(x.size()) * (backward ? 2.0 : 1.0));
}

void register_layer(const Config& c) {
  for (bool backward : {false, true}) {
    const std::string mode = backward ? "fwd_bwd/" : "fwd/";
    benchmark::RegisterBenchmark(("moe_layer/" + mode + c.name).c_str(), [c, backward](benchmark::State& s) {
      with_k(c, [&]<int K>() { moe_layer<K>(s, c, backward); });
    })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
}

void register_all() {
  for (const Config& c : configs()) {
    auto add = [&](const std::string& name, auto body) {
      return benchmark::RegisterBenchmark(name.c_str(), body)->UseRealTime()->Unit(benchmark::kMicrosecond);
    };
    add(std::string("router/") + c.name, [c](benchmark::State& s) { router_forward(s, c); });
    add(std::string("top_k/") + c.name, [c](benchmark::State& s) { top_k(s, c); });
    add(std::string("plan/") + c.name, [c](benchmark::State& s) { plan(s, c); });
    add(std::string("gather/") + c.name, [c](benchmark::State& s) { gather(s, c); });
    add(std::string("combine/") + c.name, [c](benchmark::State& s) { combine(s, c); });
    add(std::string("output_grads/") + c.name, [c](benchmark::State& s) { output_grads(s, c); });
    add(std::string("scatter/") + c.name, [c](benchmark::State& s) { scatter(s, c); });
    for (bool backward : {false, true}) {
      const std::string mode = backward ? "fwd_bwd/" : "fwd/";
      add("gelu/" + mode + c.name, [c, backward](benchmark::State& s) { gelu(s, c, backward); });
    }
    register_layer(c);
    for (bool backward : {false, true}) {
      const std::string mode = backward ? "fwd_bwd/" : "fwd/";
      add("gemm/" + mode + c.name, [c, backward](benchmark::State& s) { gemm(s, c, backward); })
          ->Unit(benchmark::kMillisecond);
      add("dense/" + mode + c.name, [c, backward](benchmark::State& s) { dense(s, c, backward, false); })
          ->Unit(benchmark::kMillisecond);
      add("dense_split/" + mode + c.name, [c, backward](benchmark::State& s) { dense(s, c, backward, true); })
          ->Unit(benchmark::kMillisecond);
      add("expert/" + mode + c.name, [c, backward](benchmark::State& s) { expert(s, c, backward, false); })
          ->Unit(benchmark::kMillisecond);
      add("expert_gemm/" + mode + c.name, [c, backward](benchmark::State& s) { expert(s, c, backward, true); })
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RegisterBenchmark("gemm_square", gemm_square)->Arg(1024)->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("fma_peak", fma_peak)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("stream_copy", stream_copy)->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace
}  // namespace moe_bench

int main(int argc, char** argv) {
  moe_bench::register_all();
  return moe_bench::run_main(argc, argv);
}
