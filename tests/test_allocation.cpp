// Steady state allocates nothing: forward and backward, once every buffer has seen the shapes, make no heap
// allocation and take no page fault, also when the routing (and with it every expert's number of rows)
// changes from batch to batch; and a second optimizer step allocates nothing. Counts every malloc-family call
// in this executable (Eigen allocates with malloc, operator new ends in it, BLAS libraries use the aligned
// ones) while a flag is up.
//
// The one allocation moe cannot avoid is the GEMM engine's own: oneDNN's dnnl_sgemm allocates a packing
// workspace inside most calls, and oneDNN 2.x has no public way to hand it one (its matmul primitive builds an
// argument map on every execute). Allocations made from within the engine's library are counted apart, by
// the address they were called from, and reported; everything else must be zero.

#include <catch2/catch.hpp>

#include <dlfcn.h>
#include <sys/resource.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/core/gemm.hpp"
#include "moe/core/parallel.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/deepseek_v3.hpp"
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
extern "C" void* __libc_memalign(std::size_t alignment, std::size_t size);

namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};         // everything but the GEMM engine's
std::atomic<long> engine_allocations{0};  // made from within the GEMM engine's library (libdnnl)
thread_local bool in_count = false;       // dladdr below must not count itself

/// Whether `caller` (a return address) lies in oneDNN's shared library.
bool called_from_engine(void* caller) {
  Dl_info info{};
  return dladdr(caller, &info) != 0 && info.dli_fname != nullptr && std::strstr(info.dli_fname, "libdnnl") != nullptr;
}

void count(void* caller) {
  if (!counting.load(std::memory_order_relaxed) || in_count) return;
  in_count = true;
  (called_from_engine(caller) ? engine_allocations : allocations).fetch_add(1, std::memory_order_relaxed);
  in_count = false;
}

template <class Body>
long allocations_during(Body&& body) {
  allocations = 0;
  engine_allocations = 0;
  counting = true;
  body();
  counting = false;
  return allocations.load();
}

long minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}
}  // namespace

// noexcept as glibc declares these for C++, which a later #include of <malloc.h> or <stdlib.h> in the same
// translation unit (a unity build) checks.
extern "C" void* malloc(std::size_t size) noexcept {
  count(__builtin_return_address(0));
  return __libc_malloc(size);
}
extern "C" void* calloc(std::size_t count_, std::size_t size) noexcept {
  count(__builtin_return_address(0));
  return __libc_calloc(count_, size);
}
extern "C" void* realloc(void* pointer, std::size_t size) noexcept {
  count(__builtin_return_address(0));
  return __libc_realloc(pointer, size);
}
extern "C" void* memalign(std::size_t alignment, std::size_t size) noexcept {
  count(__builtin_return_address(0));
  return __libc_memalign(alignment, size);
}
extern "C" void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
  count(__builtin_return_address(0));
  return __libc_memalign(alignment, size);
}
extern "C" int posix_memalign(void** out, std::size_t alignment, std::size_t size) noexcept {
  count(__builtin_return_address(0));
  if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* pointer = __libc_memalign(alignment, size);
  if (pointer == nullptr) return ENOMEM;
  *out = pointer;
  return 0;
}

TEST_CASE("The allocation counter sees Eigen's allocations", "[allocation]") {
  CHECK(allocations_during([] {
          moe::Matrix m(100, 100);
          m.setZero();
        }) > 0);
}

/// Starts moe's threads (the first loop does) and checks that a loop allocates nothing.
void start_threads() {
  auto empty_loop = [] { moe::parallel_for(2, [](moe::Index) {}); };
  empty_loop();
  CHECK(allocations_during(empty_loop) == 0);
}

TEST_CASE("Forward, backward and the optimizer step allocate nothing in steady state", "[moe][allocation]") {
  start_threads();
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
}

TEST_CASE("The language model's MoE layer allocates nothing in steady state", "[moe][allocation]") {
  // examples/expert_load_heatmaps' MoE block: SwiGLU experts and shared experts, DeepSeek-V3's sigmoid
  // router and sequence-wise balance loss.
  start_threads();
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
}

namespace {

/// `batches` random inputs of `rows` x d_model (and gradients): each routes differently, so every expert's
/// row count changes from call to call.
struct AllocationBatches {
  std::vector<moe::MatrixX<float>> x, dy;
  AllocationBatches(moe::Index count, moe::Index rows, moe::Index d_model, moe::Rng& rng) {
    for (moe::Index b = 0; b < count; ++b) {
      x.emplace_back(rows, d_model);
      dy.emplace_back(rows, d_model);
      moe::fill_normal(x.back(), rng, 0.0, 1.0);
      moe::fill_normal(dy.back(), rng, 0.0, 1.0);
    }
  }
};

/// After one forward and backward on every batch, forwards alone and forwards with backward on the same
/// batches, in turn, allocate nothing outside the GEMM engine, and then 20 calls in a row take no minor page fault.
template <class Layer>
void check_steady_state(Layer& layer, const AllocationBatches& batches) {
  start_threads();
  const std::size_t count = batches.x.size();
  std::size_t next = 0;
  auto call = [&](bool backward) {
    layer.forward(batches.x[next]);
    if (backward) layer.backward(batches.dy[next]);
    next = (next + 1) % count;
  };
  for (std::size_t b = 0; b < count; ++b) call(true);  // sizes every buffer
  // The routing must differ between batches, or the check would not see row counts change.
  layer.forward(batches.x[0]);
  const moe::IndexVector first_load = layer.batch_load();
  layer.forward(batches.x[1]);
  REQUIRE(layer.batch_load() != first_load);
  next = 0;

  for (const bool backward : {false, true})
    for (std::size_t b = 0; b < count; ++b) {
      const std::size_t batch = next;
      const long library_allocations = allocations_during([&] { call(backward); });
      INFO((backward ? "forward and backward" : "forward") << " on batch " << batch << "; the GEMM engine ("
           << moe::gemm_engine() << ") allocated " << engine_allocations.load() << " times");
      CHECK(library_allocations == 0);
    }
  // Which thread runs which expert changes from call to call, so each thread's stack (Eigen's GEMM keeps its
  // blocks there) and its allocator arena (oneDNN's workspace) reach their high-water marks over a few calls,
  // not by a fixed one. Steady state: 20 calls in a row, within the next 100, take no page fault; a buffer
  // that is made afresh on every call faults in every round.
  bool quiet_round = false;
  for (int round = 0; round < 5 && !quiet_round; ++round) {
    const long faults_before = minor_faults();
    for (int i = 0; i < 20; ++i) call(true);
    quiet_round = minor_faults() == faults_before;
  }
  CHECK(quiet_round);
}

}  // namespace

TEST_CASE("A layer whose routing changes every batch allocates nothing and takes no page fault in steady state",
          "[moe][allocation]") {
  moe::Rng rng(5);
  const AllocationBatches batches(3, 96, 16, rng);
  SECTION("softmax top-2, renormalised, experts with dropout, Switch aux loss") {
    moe::MoELayer<moe::FeedForward<moe::GELU>, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss> layer(
        {.d_model = 16, .num_experts = 8, .expert = {.hidden = 32, .dropout = 0.1}, .router = {.renormalize = true}},
        rng);
    check_steady_state(layer, batches);
  }
  SECTION("sigmoid top-4 with the aux-loss-free bias and a sequence-wise aux loss, two shared experts") {
    moe::MoELayer<moe::FeedForward<moe::SiLU>, moe::SigmoidTopK, 4, moe::DeepSeekV3Balancing> layer(
        {.d_model = 16, .num_experts = 16, .num_shared_experts = 2, .expert = {.hidden = 8},
         .shared_expert = {.hidden = 16}, .router = {.bias = true},
         .balancer = {{.alpha = 1e-3, .sequence_length = 32}, {.gamma = 1e-2}}},
        rng);
    layer.forward(batches.x[0]);
    layer.update_balancing();  // a bias that is not all zeros
    check_steady_state(layer, batches);
  }
  SECTION("capacity drops, GShard's choice order") {
    moe::MoELayer<moe::FeedForward<moe::ReLU>, moe::SoftmaxTopK, 2, moe::NoBalancing> layer(
        {.d_model = 16, .num_experts = 8, .capacity_factor = 1.0, .drop_policy = moe::DropPolicy::choice_order,
         .expert = {.hidden = 24}},
        rng);
    check_steady_state(layer, batches);
    CHECK(layer.backend().dropped() > 0);
  }
}
