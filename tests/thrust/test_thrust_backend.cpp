// MoE layers on backends::Thrust against the same layers on backends::Cpu: same routing, outputs and every
// gradient within 1e-6 of the tensor's scale in float (1e-12 in double), on configs that cover K = 1..6,
// capacity drops, shared experts, the sigmoid router with the aux-loss-free bias, both aux losses and
// expert-choice routing (tokens with 0..N experts: empty slots in the plan); and
// a 20-step training run whose loss curve matches the CPU's to 1e-4.

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "agreement.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "backends/thrust/thrust_backend.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/routing/expert_choice.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"

using moe::Index;
using moe::MatrixX;

namespace {

using moe_test::random_matrix;
using moe_test::scaled_error;
using moe_test::SequenceAuxLossFree;
using moe_test::tolerance;

/// Builds the layer on both backends from the same seed, runs forward and backward twice (the second time
/// after an aux-loss-free update, when the balancer has one) and compares everything.
template <class Expert, template <class> class Router, int K, template <class> class Balancer>
void compare_with_cpu(const typename moe::MoELayer<Expert, Router, K, Balancer>::Options& options, Index tokens) {
  using S = typename Expert::Scalar;
  using CpuLayer = moe::MoELayer<Expert, Router, K, Balancer, moe::backends::Cpu>;
  using ThrustLayer = moe::MoELayer<Expert, Router, K, Balancer, moe::backends::Thrust>;
  const typename ThrustLayer::Options thrust_options{
      options.d_model,      options.num_experts, options.k,      options.num_shared_experts,
      options.shared_expert_gate, options.capacity_factor, options.drop_policy, options.check_finite, options.expert,
      options.shared_expert, options.router,      options.balancer, moe::backends::Thrust{}};
  moe::Rng cpu_rng(3), thrust_rng(3);
  CpuLayer cpu(options, cpu_rng);
  ThrustLayer device(thrust_options, thrust_rng);

  for (int pass = 0; pass < 2; ++pass) {
    INFO("pass " << pass);
    const MatrixX<S> x = random_matrix<S>(tokens, options.d_model, 10 + pass);
    const MatrixX<S> dy = random_matrix<S>(tokens, cpu.out_features(), 20 + pass);
    const MatrixX<S> y_cpu = cpu.forward(x);
    const MatrixX<S> y_device = device.forward(x);
    CHECK(device.routing().experts == cpu.routing().experts);
    CHECK(scaled_error(device.routing().gates, cpu.routing().gates) <= tolerance<S>);
    CHECK(device.batch_load() == cpu.batch_load());
    CHECK(device.backend().dropped() == cpu.backend().dropped());
    CHECK(scaled_error(y_device, y_cpu) <= tolerance<S>);
    CHECK(std::abs(double(device.aux_loss()) - double(cpu.aux_loss())) <=
          tolerance<S> * std::max(1.0, std::abs(double(cpu.aux_loss()))));

    for (auto& p : cpu.named_parameters()) p.parameter->zero_grad();
    for (auto& p : device.named_parameters()) p.parameter->zero_grad();
    const MatrixX<S> dx_cpu = cpu.backward(dy);
    const MatrixX<S> dx_device = device.backward(dy);
    CHECK(scaled_error(dx_device, dx_cpu) <= tolerance<S>);
    const auto cpu_parameters = cpu.named_parameters();
    const auto device_parameters = device.named_parameters();
    REQUIRE(cpu_parameters.size() == device_parameters.size());
    for (std::size_t i = 0; i < cpu_parameters.size(); ++i) {
      INFO(cpu_parameters[i].name);
      CHECK(device_parameters[i].name == cpu_parameters[i].name);
      CHECK(scaled_error(MatrixX<S>(device_parameters[i].parameter->grad),
                         MatrixX<S>(cpu_parameters[i].parameter->grad)) <= tolerance<S>);
    }
    cpu.update_balancing();
    device.update_balancing();
  }
}

}  // namespace

TEST_CASE("Thrust backend: softmax top-1, Switch aux loss, float", "[thrust][backend]") {
  compare_with_cpu<moe::FeedForward<moe::GELU, float>, moe::SoftmaxTopK, 1, moe::SwitchAuxLoss>(
      {.d_model = 16, .num_experts = 4, .expert = {.hidden = 32}, .balancer = {.alpha = 1e-2}}, 96);
}

TEST_CASE("Thrust backend: softmax top-2 renormalised, shared expert, capacity drops, double",
          "[thrust][backend]") {
  compare_with_cpu<moe::FeedForward<moe::ReLU, double>, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss>(
      {.d_model = 8, .num_experts = 6, .num_shared_experts = 1, .capacity_factor = 0.75, .expert = {.hidden = 12},
       .shared_expert = {.hidden = 5}, .router = {.renormalize = true}, .balancer = {.alpha = 1e-2}},
      50);
}

TEST_CASE("Thrust backend: sigmoid top-3, sequence aux loss with the aux-loss-free bias, SwiGLU, float",
          "[thrust][backend]") {
  compare_with_cpu<moe::SwiGLUFeedForward<float>, moe::SigmoidTopK, 3, SequenceAuxLossFree>(
      {.d_model = 16, .num_experts = 8, .num_shared_experts = 2, .expert = {.hidden = 24},
       .shared_expert = {.hidden = 24}, .balancer = {{1e-2, 16}, {1e-2}}},
      64);
}

TEST_CASE("Thrust backend: DeepSeek-V3's group-limited routing and scaling, capacity first choices first, double",
          "[thrust][backend]") {
  compare_with_cpu<moe::SwiGLUFeedForward<double>, moe::SigmoidTopK, 3, SequenceAuxLossFree>(
      {.d_model = 8, .num_experts = 12, .num_shared_experts = 1, .capacity_factor = 0.75,
       .drop_policy = moe::DropPolicy::choice_order, .expert = {.hidden = 10}, .shared_expert = {.hidden = 6},
       .router = {.routed_scaling_factor = 2.5, .n_group = 4, .topk_group = 2}, .balancer = {{1e-2, 16}, {1e-2}}},
      48);
}

TEST_CASE("Thrust backend: softmax top-4, SiLU experts with capacity, no balancing, double", "[thrust][backend]") {
  compare_with_cpu<moe::FeedForward<moe::SiLU, double>, moe::SoftmaxTopK, 4, moe::NoBalancing>(
      {.d_model = 6, .num_experts = 8, .capacity_factor = 1.0, .expert = {.hidden = 10, .bias = true}}, 40);
}

TEST_CASE("Thrust backend: sigmoid top-5 with the aux-loss-free bias, no expert biases, float", "[thrust][backend]") {
  compare_with_cpu<moe::FeedForward<moe::GELU, float>, moe::SigmoidTopK, 5, moe::AuxLossFree>(
      {.d_model = 12, .num_experts = 10, .expert = {.hidden = 20, .bias = false}, .balancer = {.gamma = 1e-2}},
      70);
}

TEST_CASE("Thrust backend: dense K = 6 of 6, sequence aux loss, out_features != d_model, double",
          "[thrust][backend]") {
  compare_with_cpu<moe::SwiGLUFeedForward<double>, moe::SoftmaxTopK, moe::Dynamic, moe::SequenceAuxLoss>(
      {.d_model = 7, .num_experts = 6, .k = 6, .expert = {.hidden = 9, .out_features = 5},
       .shared_expert = {.hidden = 4, .out_features = 5}, .balancer = {1e-2, 8}},
      32);
}

TEST_CASE("Thrust backend: expert-choice routing, K = 2, shared expert, double", "[thrust][backend][expert_choice]") {
  compare_with_cpu<moe::FeedForward<moe::GELU, double>, moe::ExpertChoice, 2, moe::NoBalancing>(
      {.d_model = 8, .num_experts = 6, .num_shared_experts = 1, .expert = {.hidden = 12},
       .shared_expert = {.hidden = 5}, .router = {.capacity_factor = 1.0}},
      45);
}

TEST_CASE("Thrust backend: expert-choice routing, K = 1 with capacity factor 2, SwiGLU, float",
          "[thrust][backend][expert_choice]") {
  compare_with_cpu<moe::SwiGLUFeedForward<float>, moe::ExpertChoice, 1, moe::NoBalancing>(
      {.d_model = 16, .num_experts = 8, .expert = {.hidden = 24}, .router = {.capacity_factor = 2.0, .bias = true}},
      64);
}

TEST_CASE("Thrust backend: a 20-step training run follows the CPU's loss curve", "[thrust][backend][training]") {
  using Expert = moe::FeedForward<moe::GELU, float>;
  constexpr Index d = 16, tokens = 128;
  const auto train = [&]<class Backend>() {
    using Layer = moe::MoELayer<Expert, moe::SigmoidTopK, 2, SequenceAuxLossFree, Backend>;
    moe::Rng rng(5);
    typename Layer::Options options{.d_model = d, .num_experts = 8, .num_shared_experts = 1,
                                    .expert = {.hidden = 32}, .shared_expert = {.hidden = 16},
                                    .balancer = {{1e-2, 32}, {1e-3}}};
    // Two MoE layers in a row: a small stack.
    Layer first(options, rng), second(options, rng);
    moe::ParameterList<float> parameters = first.named_parameters();
    for (auto& p : second.named_parameters()) parameters.push_back(p);
    moe::AdamW<float> optimizer(parameters, {.lr = 3e-3});
    const moe::Matrix x = random_matrix<float>(tokens, d, 1);
    const moe::Matrix target = x.array().sin().matrix();
    std::vector<double> losses;
    for (int step = 0; step < 20; ++step) {
      optimizer.zero_grad();
      const moe::Matrix hidden = first.forward(x);
      const moe::Matrix error = second.forward(hidden) - target;
      losses.push_back(double(error.squaredNorm()) / double(error.size()) + first.aux_loss() + second.aux_loss());
      first.backward(second.backward(2.0f * error / float(error.size())));
      optimizer.step();
      first.update_balancing();
      second.update_balancing();
    }
    return losses;
  };
  const std::vector<double> cpu = train.operator()<moe::backends::Cpu>();
  const std::vector<double> device = train.operator()<moe::backends::Thrust>();
  REQUIRE(cpu.size() == 20);
  CHECK(cpu.back() < cpu.front());  // it trains
  for (std::size_t step = 0; step < cpu.size(); ++step) {
    INFO("step " << step << ": cpu " << cpu[step] << ", thrust " << device[step]);
    CHECK(std::abs(device[step] - cpu[step]) <= 1e-4 * std::abs(cpu[step]));
  }
}
