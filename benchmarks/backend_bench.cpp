// The MoE layer on backends::Thrust and resident on the device (device::ResidentMoE) beside backends::Cpu,
// forward and forward + backward, on the configs C1, C2 and C4 of common.hpp (GELU experts, softmax top-K, no
// balancing). Built by nvcc with MOE_CUDA (backend_bench_cuda: Thrust on the GPU) and by the host compiler
// with moe::thrust (backend_bench: Thrust on OpenMP, the code path CI tests). As a MoELayer backend Thrust
// has host matrices as its interface, so its timings include the uploads of x, the routing and the weights
// and the downloads of y, dx and the gradients; the resident layer's include no transfer but the plan's
// offsets, and each iteration waits for the device to finish.
//
// Names: layer/<backend>/<mode>/<config>, backend cpu, thrust or resident, mode fwd or fwd_bwd.

#include <string>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/thrust/resident_layer.hpp"
#include "backends/thrust/thrust_backend.hpp"
#include "common.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/softmax_top_k.hpp"

namespace moe_bench {
namespace {

template <int K, class Backend>
using Layer = moe::MoELayer<moe::FeedForward<moe::GELU>, moe::SoftmaxTopK, K, moe::NoBalancing, Backend>;

template <int K, class Backend>
void layer(benchmark::State& state, const Config& c, bool backward) {
  moe::Rng rng(11);
  Layer<K, Backend> layer({.d_model = c.d, .num_experts = c.experts, .expert = {.hidden = c.h}}, rng);
  const Matrix x = random_matrix(c.tokens, c.d, 1);
  const Matrix dy = random_matrix(c.tokens, c.d, 2);
  for (auto _ : state) {
    benchmark::DoNotOptimize(layer.forward(x).data());
    if (backward) benchmark::DoNotOptimize(layer.backward(dy).data());
  }
  set_rates(state, double(c.tokens), backward ? c.forward_backward_flops() : c.forward_flops());
}

/// Waits until the device has finished what was queued (the GEMMs run on their own streams).
void synchronize() {
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
  moe::backends::gpu::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
#endif
}

template <int K>
void resident_layer(benchmark::State& state, const Config& c, bool backward) {
  namespace device = moe::backends::device;
  moe::Rng rng(11);
  Layer<K, moe::backends::Cpu> host({.d_model = c.d, .num_experts = c.experts, .expert = {.hidden = c.h}}, rng);
  device::ResidentMoE<Layer<K, moe::backends::Cpu>> layer(host);
  const device::Matrix<float> x = device::to_device(random_matrix(c.tokens, c.d, 1));
  const device::Matrix<float> dy = device::to_device(random_matrix(c.tokens, c.d, 2));
  for (auto _ : state) {
    layer.forward(x);
    if (backward) layer.backward(dy);
    synchronize();
  }
  set_rates(state, double(c.tokens), backward ? c.forward_backward_flops() : c.forward_flops());
}

template <int K>
void register_config(const Config& c) {
  for (const bool backward : {false, true}) {
    const std::string mode = backward ? "fwd_bwd" : "fwd";
    benchmark::RegisterBenchmark(("layer/cpu/" + mode + "/" + c.name).c_str(),
                                 [c, backward](benchmark::State& s) { layer<K, moe::backends::Cpu>(s, c, backward); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(
        ("layer/thrust/" + mode + "/" + c.name).c_str(),
        [c, backward](benchmark::State& s) { layer<K, moe::backends::Thrust>(s, c, backward); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("layer/resident/" + mode + "/" + c.name).c_str(),
                                 [c, backward](benchmark::State& s) { resident_layer<K>(s, c, backward); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace
}  // namespace moe_bench

int main(int argc, char** argv) {
  using namespace moe_bench;
  for (const Config& c : configs()) {
    const std::string name = c.name;
    if (name == "C1") register_config<2>(c);
    if (name == "C2") register_config<6>(c);
    if (name == "C4") register_config<4>(c);
  }
  return run_main(argc, argv);
}
