// The whole-model figure: training steps (forward, cross entropy, backward, gradient clipping, AdamW, the
// balancer's update) of expert_load_heatmaps' aux-loss-based DeepSeekMoE decoder at its `quick` preset,
// on random token windows; benchmarks/peers/pytorch_lm.py is the same model and step in PyTorch.
//
//   lm_bench [STEPS]        prints one JSON object: tokens/s over STEPS timed steps (default 20), after
//                           two untimed ones, with allocations and minor page faults per step
//
// Threads: MOE_BENCH_THREADS (default 2).

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "call_counters.hpp"
#include "expert_load_heatmaps/model.hpp"
#include "moe/core/memory.hpp"
#include "moe/core/parallel.hpp"
#include "moe/nn/loss.hpp"
#include "moe/optim/optimizer.hpp"

namespace {

using moe::Index;

// expert_load_heatmaps --preset quick (examples/expert_load_heatmaps/main.cpp): model, vocabulary, batch
// and optimizer settings.
constexpr Index vocabulary = 2048;
constexpr Index batch = 16;
constexpr double lr = 3e-3, weight_decay = 0.1, max_grad_norm = 1.0;

moe::examples::ModelConfig quick_model() {
  return {.d_model = 64, .num_heads = 4, .num_moe_layers = 4, .dense_hidden = 256, .expert_hidden = 32,
          .seq_len = 64, .aux_alpha = 1e-2};
}

}  // namespace

int main(int argc, char** argv) {
  const long steps = argc > 1 ? std::atol(argv[1]) : 20;
  if (steps <= 0) {
    std::fprintf(stderr, "lm_bench: STEPS must be positive\n");
    return 2;
  }
  const char* threads = std::getenv("MOE_BENCH_THREADS");
  moe::set_num_threads(threads != nullptr && std::atoi(threads) > 0 ? std::atoi(threads) : 2);
  moe::retain_freed_memory();

  using LM = moe::examples::AuxLossBasedLM;
  const moe::examples::ModelConfig config = quick_model();
  moe::Rng rng(1);
  LM lm(moe::examples::lm_options<LM>(config, vocabulary), rng);
  moe::AdamW<float> optimizer(lm.named_parameters(), {.lr = lr, .weight_decay = weight_decay});
  const moe::ParameterList<float> parameters = lm.named_parameters();
  moe::CrossEntropyLoss<float> cross_entropy;
  // Distinct windows every step, as in training; drawn before the timing.
  const Index tokens = batch * config.seq_len;
  std::vector<std::vector<Index>> inputs(static_cast<std::size_t>(steps + 2)), targets(inputs.size());
  for (std::size_t s = 0; s < inputs.size(); ++s)
    for (Index t = 0; t < tokens; ++t) {
      inputs[s].push_back(moe::uniform_index(rng, vocabulary));
      targets[s].push_back(moe::uniform_index(rng, vocabulary));
    }

  double loss = 0;
  auto step = [&](std::size_t s) {
    optimizer.zero_grad();
    loss = cross_entropy.forward(lm.forward(inputs[s], batch, config.seq_len), targets[s]);
    lm.backward(cross_entropy.backward());
    moe::clip_grad_norm(parameters, max_grad_norm);
    optimizer.step();
    lm.update_balancing();
  };
  step(0);
  step(1);
  const moe_bench::CallCounters counters;
  const auto start = std::chrono::steady_clock::now();
  for (long s = 0; s < steps; ++s) step(static_cast<std::size_t>(s + 2));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const moe_bench::CallCounters::PerCall per_step = counters.per_call(steps);
  std::printf("{\"model\": \"expert_load_heatmaps AuxLossBasedLM, preset quick\", \"threads\": %d, "
              "\"vocabulary\": %lld, \"batch\": %lld, \"seq_len\": %lld, \"d_model\": %lld, \"moe_layers\": %lld, "
              "\"experts\": %lld, \"steps\": %ld, \"seconds\": %.4f, \"tokens_per_s\": %.2f, "
              "\"allocs_per_step\": %.1f, \"faults_per_step\": %.1f, \"last_loss\": %.5f}\n",
              moe::num_threads(), static_cast<long long>(vocabulary), static_cast<long long>(batch),
              static_cast<long long>(config.seq_len), static_cast<long long>(config.d_model),
              static_cast<long long>(config.num_moe_layers), static_cast<long long>(config.num_experts), steps,
              seconds, static_cast<double>(tokens * steps) / seconds, per_step.allocations, per_step.faults, loss);
  return 0;
}
