// Steady state allocates nothing: a second forward/backward with the same shapes (same input, so the
// same expert blocks) and a second optimizer step make no heap allocation. Counts every malloc in this
// executable (Eigen allocates with malloc, operator new ends in it too) while a flag is up.

#include <catch2/catch.hpp>

#include <atomic>

#include "moe/balancing/aux_loss.hpp"
#include "moe/core/parallel.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/loss.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"

extern "C" void* __libc_malloc(std::size_t size);
extern "C" void* __libc_calloc(std::size_t count, std::size_t size);
extern "C" void* __libc_realloc(void* pointer, std::size_t size);

namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
void count() {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
}

template <class Body>
long allocations_during(Body&& body) {
  allocations = 0;
  counting = true;
  body();
  counting = false;
  return allocations.load();
}
}  // namespace

// noexcept as glibc declares malloc, calloc and realloc for C++, which a later #include of <malloc.h> in the
// same translation unit (a unity build) checks.
extern "C" void* malloc(std::size_t size) noexcept {
  count();
  return __libc_malloc(size);
}
extern "C" void* calloc(std::size_t count_, std::size_t size) noexcept {
  count();
  return __libc_calloc(count_, size);
}
extern "C" void* realloc(void* pointer, std::size_t size) noexcept {
  count();
  return __libc_realloc(pointer, size);
}

TEST_CASE("The allocation counter sees Eigen's allocations", "[allocation]") {
  CHECK(allocations_during([] {
          moe::Matrix m(100, 100);
          m.setZero();
        }) > 0);
}

/// LLVM's libomp allocates a few blocks in every parallel region (libgomp does not); that is the runtime's,
/// so with such a runtime the checks run on one thread and say so. Returns the thread count to restore.
int threads_for_counting() {
  auto empty_region = [] { moe::parallel_for(2, [](moe::Index) {}); };
  empty_region();  // the first region starts the threads
  const long runtime_allocations = allocations_during(empty_region);
  if (runtime_allocations == 0) return moe::num_threads();
  WARN("the OpenMP runtime allocated " << runtime_allocations << " blocks in an empty parallel region; checking on 1 thread");
  return moe::set_num_threads(1);
}

TEST_CASE("Forward, backward and the optimizer step allocate nothing in steady state", "[moe][allocation]") {
  const int previous_threads = threads_for_counting();
  moe::Rng rng(1);
  moe::MoELayer<moe::FeedForward<moe::GELU>, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss> layer(
      {.d_model = 16, .num_experts = 8, .num_shared_experts = 1, .expert = {.hidden = 32, .dropout = 0.1},
       .shared_expert = {.hidden = 16}, .router = {.renormalize = true}},
      rng);
  moe::AdamW<float> optimizer(layer.named_parameters(), {.lr = 1e-3});
  moe::CrossEntropyLoss<float> loss;
  moe::Matrix x(64, 16);
  moe::fill_normal(x, rng, 0.0, 1.0);
  std::vector<moe::Index> targets(64);
  for (std::size_t i = 0; i < targets.size(); ++i) targets[i] = static_cast<moe::Index>(i % 16);

  auto forward_backward = [&] {
    loss.forward(layer.forward(x), targets);
    layer.backward(loss.backward());
  };
  forward_backward();  // sizes every buffer
  CHECK(allocations_during(forward_backward) == 0);
  optimizer.step();
  CHECK(allocations_during([&] {
          optimizer.step();
          optimizer.zero_grad();
          layer.update_balancing();
        }) == 0);
  moe::set_num_threads(previous_threads);
}

TEST_CASE("The language model's MoE layer allocates nothing in steady state", "[moe][allocation]") {
  // examples/expert_load_heatmaps' MoE block: SwiGLU experts and shared experts, DeepSeek-V3's sigmoid
  // router and sequence-wise balance loss.
  const int previous_threads = threads_for_counting();
  moe::Rng rng(2);
  moe::MoELayer<moe::SwiGLUFeedForward<float>, moe::SigmoidTopK, 6, moe::SequenceAuxLoss> layer(
      {.d_model = 16, .num_experts = 16, .num_shared_experts = 2, .expert = {.hidden = 8},
       .shared_expert = {.hidden = 8}, .balancer = {.alpha = 1e-2, .sequence_length = 16}},
      rng);
  moe::Matrix x(64, 16), dy(64, 16);
  moe::fill_normal(x, rng, 0.0, 1.0);
  moe::fill_normal(dy, rng, 0.0, 1.0);
  auto forward_backward = [&] {
    layer.forward(x);
    layer.backward(dy);
  };
  forward_backward();
  CHECK(allocations_during(forward_backward) == 0);
  moe::set_num_threads(previous_threads);
}
