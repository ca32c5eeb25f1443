// ResidentMoE (a MoE layer resident on the device) against the host layer on backends::Cpu: same routing,
// outputs, aux loss, input gradients and every parameter gradient within 1e-6 of the tensor's scale in float
// (1e-12 in double); the device optimizers against the host ones; a 20-step training run on the device
// (forward, backward, device::AdamW, the aux-loss-free update) following the host's loss curve to 1e-4.

#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "agreement.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "backends/thrust/optimizer.hpp"
#include "backends/thrust/resident_layer.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"

using moe::Index;
using moe::MatrixX;
namespace device = moe::backends::device;

namespace {

using moe_test::random_matrix;
using moe_test::scaled_error;
using moe_test::SequenceAuxLossFree;
using moe_test::tolerance;

/// The host layer, and a resident copy of a twin built from the same seed, run forward and backward twice (the
/// second time after an aux-loss-free update); the device gradients come back through download().
template <class Expert, template <class> class Router, int K, template <class> class Balancer>
void compare_with_host(const typename moe::MoELayer<Expert, Router, K, Balancer>::Options& options, Index tokens) {
  using S = typename Expert::Scalar;
  using Layer = moe::MoELayer<Expert, Router, K, Balancer>;
  moe::Rng host_rng(3), twin_rng(3);
  Layer host(options, host_rng), twin(options, twin_rng);
  device::ResidentMoE<Layer> resident(twin);

  for (int pass = 0; pass < 2; ++pass) {
    INFO("pass " << pass);
    const MatrixX<S> x = random_matrix<S>(tokens, options.d_model, 10 + pass);
    const MatrixX<S> dy = random_matrix<S>(tokens, host.out_features(), 20 + pass);
    const device::Matrix<S> x_device = device::to_device(x), dy_device = device::to_device(dy);

    const MatrixX<S> y = host.forward(x);
    const MatrixX<S> y_device = device::to_host(resident.forward(x_device));
    CHECK(resident.routed_experts() == host.routing().experts);
    CHECK(resident.batch_load() == host.batch_load());
    CHECK(resident.dropped() == host.backend().dropped());
    CHECK(scaled_error(y_device, y) <= tolerance<S>);
    CHECK(std::abs(double(resident.aux_loss()) - double(host.aux_loss())) <=
          tolerance<S> * std::max(1.0, std::abs(double(host.aux_loss()))));

    for (auto& p : host.named_parameters()) p.parameter->zero_grad();
    resident.zero_grad();
    const MatrixX<S> dx = host.backward(dy);
    CHECK(scaled_error(device::to_host(resident.backward(dy_device)), dx) <= tolerance<S>);
    resident.download(twin);
    const auto expected = host.named_parameters();
    const auto actual = twin.named_parameters();
    REQUIRE(expected.size() == actual.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      INFO(expected[i].name);
      CHECK(scaled_error(MatrixX<S>(actual[i].parameter->grad), MatrixX<S>(expected[i].parameter->grad)) <=
            tolerance<S>);
      CHECK(MatrixX<S>(actual[i].parameter->value) == MatrixX<S>(expected[i].parameter->value));
    }
    host.update_balancing();
    resident.update_balancing();
    resident.download(twin);
    for (auto& buffer : host.named_buffers()) {
      INFO(buffer.name);
      for (auto& other : twin.named_buffers())
        if (other.name == buffer.name) CHECK(*other.value == *buffer.value);
    }
  }
}

}  // namespace

TEST_CASE("ResidentMoE: softmax top-1, Switch aux loss, float", "[thrust][resident]") {
  compare_with_host<moe::FeedForward<moe::GELU, float>, moe::SoftmaxTopK, 1, moe::SwitchAuxLoss>(
      {.d_model = 16, .num_experts = 4, .expert = {.hidden = 32}, .balancer = {.alpha = 1e-2}}, 96);
}

TEST_CASE("ResidentMoE: softmax top-2 renormalised, shared expert, capacity drops, double", "[thrust][resident]") {
  compare_with_host<moe::FeedForward<moe::ReLU, double>, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss>(
      {.d_model = 8,
       .num_experts = 6,
       .num_shared_experts = 1,
       .capacity_factor = 0.75,
       .expert = {.hidden = 12},
       .shared_expert = {.hidden = 5},
       .router = {.renormalize = true, .bias = true},
       .balancer = {.alpha = 1e-2}},
      50);
}

TEST_CASE("ResidentMoE: sigmoid top-3, sequence aux loss with the aux-loss-free bias, two shared SwiGLU experts",
          "[thrust][resident]") {
  compare_with_host<moe::SwiGLUFeedForward<float>, moe::SigmoidTopK, 3, SequenceAuxLossFree>(
      {.d_model = 16,
       .num_experts = 8,
       .num_shared_experts = 2,
       .expert = {.hidden = 24},
       .shared_expert = {.hidden = 24},
       .balancer = {{1e-2, 16}, {1e-2, true}}},
      64);
}

TEST_CASE("ResidentMoE: capacity drops first choices first, Switch loss with f_i = c_i / T, double",
          "[thrust][resident]") {
  compare_with_host<moe::FeedForward<moe::ReLU, double>, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss>(
      {.d_model = 8,
       .num_experts = 6,
       .capacity_factor = 0.75,
       .drop_policy = moe::DropPolicy::choice_order,
       .expert = {.hidden = 12},
       .router = {.renormalize = true},
       .balancer = {.alpha = 1e-2, .fraction = moe::LoadFraction::of_tokens}},
      50);
}

TEST_CASE("ResidentMoE refuses the routed scaling factor, group-limited routing and gated shared experts",
          "[thrust][resident]") {
  using Layer = moe::MoELayer<moe::FeedForward<moe::GELU, float>, moe::SigmoidTopK, 2, moe::NoBalancing>;
  moe::Rng rng(1);
  Layer scaled({.d_model = 4, .num_experts = 4, .expert = {.hidden = 4}, .router = {.routed_scaling_factor = 2.5}},
               rng);
  CHECK_THROWS_WITH(device::ResidentMoE<Layer>(scaled), Catch::Contains("routed_scaling_factor is 2.5"));
  Layer grouped({.d_model = 4, .num_experts = 4, .expert = {.hidden = 4}, .router = {.n_group = 2, .topk_group = 1}},
                rng);
  CHECK_THROWS_WITH(device::ResidentMoE<Layer>(grouped), Catch::Contains("the router has n_group 2"));
  using SoftmaxLayer = moe::MoELayer<moe::SwiGLUFeedForward<float>, moe::SoftmaxTopK, 2, moe::NoBalancing>;
  SoftmaxLayer softmax_grouped(
      {.d_model = 4, .num_experts = 4, .expert = {.hidden = 4}, .router = {.n_group = 2, .topk_group = 1}}, rng);
  CHECK_THROWS_WITH(device::ResidentMoE<SoftmaxLayer>(softmax_grouped), Catch::Contains("the router has n_group 2"));
  SoftmaxLayer gated({.d_model = 4, .num_experts = 4, .num_shared_experts = 1, .shared_expert_gate = true,
                      .expert = {.hidden = 4}, .shared_expert = {.hidden = 4}},
                     rng);
  CHECK_THROWS_WITH(device::ResidentMoE<SoftmaxLayer>(gated), Catch::Contains("no shared-expert gate"));
}

TEST_CASE("ResidentMoE: softmax top-4, SiLU experts with capacity, no balancing, double", "[thrust][resident]") {
  compare_with_host<moe::FeedForward<moe::SiLU, double>, moe::SoftmaxTopK, 4, moe::NoBalancing>(
      {.d_model = 6, .num_experts = 8, .capacity_factor = 1.0, .expert = {.hidden = 10, .bias = true}}, 40);
}

TEST_CASE("ResidentMoE: sigmoid top-5 with the aux-loss-free bias, no expert biases, float", "[thrust][resident]") {
  compare_with_host<moe::FeedForward<moe::GELU, float>, moe::SigmoidTopK, 5, moe::AuxLossFree>(
      {.d_model = 12, .num_experts = 10, .expert = {.hidden = 20, .bias = false}, .balancer = {.gamma = 1e-2}}, 70);
}

TEST_CASE("ResidentMoE: dense K = 6 of 6, sequence aux loss, out_features != d_model, double", "[thrust][resident]") {
  compare_with_host<moe::SwiGLUFeedForward<double>, moe::SoftmaxTopK, moe::Dynamic, moe::SequenceAuxLoss>(
      {.d_model = 7,
       .num_experts = 6,
       .k = 6,
       .expert = {.hidden = 9, .out_features = 5},
       .shared_expert = {.hidden = 4, .out_features = 5},
       .balancer = {1e-2, 8}},
      32);
}

TEMPLATE_TEST_CASE("device::Adam and device::AdamW step as the host optimizers", "[thrust][resident][optim]",
                   (std::integral_constant<bool, false>), (std::integral_constant<bool, true>)) {
  constexpr bool decoupled = TestType::value;
  moe::Parameter<double> a(3, 4), b(1, 5);
  a.value = random_matrix<double>(3, 4, 1);
  b.value = random_matrix<double>(1, 5, 2);
  moe::ParameterList<double> host_parameters{{"a", &a}, {"b", &b}};
  std::vector<device::Matrix<double>> values, grads;
  std::vector<device::Tensor<double>> tensors;
  for (auto& p : host_parameters) {
    values.push_back(device::to_device(MatrixX<double>(p.parameter->value)));
    grads.emplace_back(p.parameter->value.rows(), p.parameter->value.cols());
  }
  for (std::size_t i = 0; i < values.size(); ++i)
    tensors.push_back({host_parameters[i].name, values[i].data(), grads[i].data(), values[i].size()});
  const typename moe::AdamBase<double, decoupled>::Options options{.lr = 0.1, .weight_decay = 0.05};
  moe::AdamBase<double, decoupled> host(host_parameters, options);
  device::AdamBase<double, decoupled> on_device(tensors, options);
  for (int step = 0; step < 4; ++step) {
    for (std::size_t i = 0; i < host_parameters.size(); ++i) {
      const MatrixX<double> g = random_matrix<double>(values[i].rows(), values[i].cols(), 100 + 7 * step + i);
      host_parameters[i].parameter->grad = g;
      thrust::copy(g.data(), g.data() + g.size(), grads[i].values().begin());
    }
    host.step();
    on_device.step();
  }
  CHECK(on_device.steps() == 4);
  for (std::size_t i = 0; i < host_parameters.size(); ++i) {
    INFO(host_parameters[i].name);
    CHECK(scaled_error(device::to_host(values[i]), MatrixX<double>(host_parameters[i].parameter->value)) <= 1e-14);
  }
  on_device.zero_grad();
  CHECK(device::to_host(grads[0]).isZero(0.0));
  CHECK_THROWS_WITH(device::AdamW<double>(std::vector<device::Tensor<double>>{tensors[0], tensors[0]}),
                    Catch::Contains("device::AdamW: tensor 'a' appears more than once"));
}

TEST_CASE("ResidentMoE: a 20-step training run on the device follows the host's loss curve",
          "[thrust][resident][training]") {
  using Expert = moe::FeedForward<moe::GELU, float>;
  using Layer = moe::MoELayer<Expert, moe::SigmoidTopK, 2, SequenceAuxLossFree>;
  constexpr Index d = 16, tokens = 128;
  const typename Layer::Options options{.d_model = d,
                                        .num_experts = 8,
                                        .num_shared_experts = 1,
                                        .expert = {.hidden = 32},
                                        .shared_expert = {.hidden = 16},
                                        .balancer = {{1e-2, 32}, {1e-3, false}}};
  const MatrixX<float> x = random_matrix<float>(tokens, d, 1);
  const MatrixX<float> target = x.array().sin().matrix();

  moe::Rng host_rng(5);
  Layer first(options, host_rng), second(options, host_rng);
  moe::ParameterList<float> parameters = first.named_parameters();
  for (auto& p : second.named_parameters()) parameters.push_back(p);
  moe::AdamW<float> optimizer(parameters, {.lr = 3e-3});
  std::vector<double> host_losses;
  for (int step = 0; step < 20; ++step) {
    optimizer.zero_grad();
    const MatrixX<float> hidden = first.forward(x);
    const MatrixX<float> error = second.forward(hidden) - target;
    host_losses.push_back(double(error.squaredNorm()) / double(error.size()) + first.aux_loss() + second.aux_loss());
    first.backward(second.backward(2.0f * error / float(error.size())));
    optimizer.step();
    first.update_balancing();
    second.update_balancing();
  }

  moe::Rng device_rng(5);
  Layer first_host(options, device_rng), second_host(options, device_rng);
  device::ResidentMoE<Layer> first_device(first_host), second_device(second_host);
  std::vector<device::Tensor<float>> tensors = first_device.parameters();
  for (auto& t : second_device.parameters()) tensors.push_back(t);
  device::AdamW<float> device_optimizer(tensors, {.lr = 3e-3});
  device::MSELoss<float> loss;
  const device::Matrix<float> x_device = device::to_device(x), target_device = device::to_device(target);
  std::vector<double> device_losses;
  for (int step = 0; step < 20; ++step) {
    device_optimizer.zero_grad();
    const device::Matrix<float>& hidden = first_device.forward(x_device);
    const float task = loss.forward(second_device.forward(hidden), target_device);
    device_losses.push_back(double(task) + first_device.aux_loss() + second_device.aux_loss());
    first_device.backward(second_device.backward(loss.backward()));
    device_optimizer.step();
    first_device.update_balancing();
    second_device.update_balancing();
  }
  REQUIRE(device_optimizer.steps() == 20);
  CHECK(host_losses.back() < host_losses.front());  // it trains
  for (std::size_t step = 0; step < host_losses.size(); ++step) {
    INFO("step " << step << ": host " << host_losses[step] << ", device " << device_losses[step]);
    CHECK(std::abs(device_losses[step] - host_losses[step]) <= 1e-4 * std::abs(host_losses[step]));
  }

  // The trained parameters and biases come back to the host.
  first_device.download(first_host);
  second_device.download(second_host);
  const auto expected = parameters;
  moe::ParameterList<float> actual = first_host.named_parameters();
  for (auto& p : second_host.named_parameters()) actual.push_back(p);
  REQUIRE(actual.size() == expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    INFO(expected[i].name);
    CHECK(scaled_error(MatrixX<float>(actual[i].parameter->value), MatrixX<float>(expected[i].parameter->value)) <=
          1e-4);
  }
}

TEST_CASE("ResidentMoE rejects bad shapes and a host layer of another configuration", "[thrust][resident]") {
  using Layer = moe::MoELayer<moe::FeedForward<moe::ReLU, float>, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss>;
  moe::Rng rng(1);
  Layer host({.d_model = 4, .num_experts = 3, .expert = {.hidden = 8}}, rng);
  device::ResidentMoE<Layer> resident(host);
  CHECK_THROWS_WITH(resident.backward(device::Matrix<float>(5, 4)),
                    Catch::Contains("ResidentMoE: backward before forward"));
  CHECK_THROWS_WITH(resident.forward(device::Matrix<float>(5, 3)),
                    Catch::Contains("ResidentMoE: input has 3 columns, d_model is 4"));
  const device::Matrix<float> x = device::to_device(random_matrix<float>(5, 4, 2));
  resident.forward(x);
  CHECK_THROWS_WITH(resident.backward(device::Matrix<float>(4, 4)),
                    Catch::Contains("ResidentMoE: gradient has shape 4x4, expected 5x4"));
  Layer other({.d_model = 4, .num_experts = 4, .expert = {.hidden = 8}}, rng);
  CHECK_THROWS_WITH(resident.upload(other), Catch::Contains("ResidentMoE: the host layer has d_model 4, 4 experts"));
}
