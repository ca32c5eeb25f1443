#include <algorithm>

#include "gradient_check.hpp"
#include "moe/analysis/load.hpp"
#include "moe/core/parallel.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/linear.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/random_router.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"

using moe::Index;
using moe::MatrixX;

namespace {

template <class S>
using SequenceAuxLossFree = moe::Combine<S, moe::SequenceAuxLoss, moe::AuxLossFree>;

template <int K>
using LinearMoE = moe::MoELayer<moe::Linear<double>, moe::SoftmaxTopK, K, moe::NoBalancing>;

MatrixX<double> random_input(Index rows, Index cols, std::uint64_t seed) {
  moe::Rng rng(seed);
  MatrixX<double> x(rows, cols);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  return x;
}

/// y[t] = sum_j gate(t, j) * expert_j(x[t]) + shared(x[t]), one token at a time.
template <class Layer>
MatrixX<double> reference_output(Layer& layer, const MatrixX<double>& x) {
  const auto& routing = layer.routing();
  MatrixX<double> y = MatrixX<double>::Zero(x.rows(), layer.out_features());
  for (Index t = 0; t < x.rows(); ++t) {
    for (Index j = 0; j < routing.k(); ++j)
      y.row(t) += routing.gates(t, j) * layer.expert(routing.experts(t, j)).forward(x.row(t)).row(0);
    for (Index s = 0; s < layer.options().num_shared_experts; ++s)
      y.row(t) += layer.shared_expert(s).forward(x.row(t)).row(0);
  }
  return y;
}

}  // namespace

TEST_CASE("MoELayer output equals the token-by-token mixture", "[moe][layer]") {
  moe::Rng rng(7);
  LinearMoE<2> layer({.d_model = 6, .num_experts = 4, .num_shared_experts = 1, .expert = {.out_features = 5},
                      .shared_expert = {.out_features = 5}, .router = {.renormalize = true}},
                     rng);
  const MatrixX<double> x = random_input(33, 6, 1);
  const MatrixX<double> y = layer.forward(x);
  CHECK(y.rows() == 33);
  CHECK(y.cols() == 5);
  const MatrixX<double> expected = reference_output(layer, x);
  CHECK((y - expected).cwiseAbs().maxCoeff() < 1e-12);
  CHECK(layer.routing().gates.rowwise().sum().isOnes(1e-12));
}

TEST_CASE("MoELayer gradients match finite differences", "[moe][layer][gradient]") {
  moe::Rng rng(11);
  SECTION("K = 1") {
    LinearMoE<1> layer({.d_model = 5, .num_experts = 3}, rng);
    moe::test::check_module_gradients(layer, random_input(9, 5, 2), 3);
  }
  SECTION("K = 2, renormalised, with shared experts") {
    LinearMoE<2> layer({.d_model = 5, .num_experts = 4, .num_shared_experts = 2, .router = {.renormalize = true}},
                       rng);
    moe::test::check_module_gradients(layer, random_input(9, 5, 4), 5);
  }
  SECTION("K = N (dense), run-time K") {
    LinearMoE<moe::Dynamic> layer({.d_model = 4, .num_experts = 3, .k = 3}, rng);
    moe::test::check_module_gradients(layer, random_input(7, 4, 6), 7);
  }
}

TEST_CASE("MoELayer names its parameters like PyTorch", "[moe][layer]") {
  moe::Rng rng(1);
  LinearMoE<1> layer({.d_model = 3, .num_experts = 2, .num_shared_experts = 1}, rng);
  std::vector<std::string> names;
  for (const auto& p : layer.named_parameters()) names.push_back(p.name);
  const std::vector<std::string> expected{"router.weight",    "experts.0.weight",        "experts.0.bias",
                                          "experts.1.weight", "experts.1.bias",          "shared_experts.0.weight",
                                          "shared_experts.0.bias"};
  CHECK(names == expected);
}

TEST_CASE("MoELayer capacity drops the overflow in token order and counts it", "[moe][layer][capacity]") {
  moe::Rng rng(3);
  LinearMoE<1> layer({.d_model = 4, .num_experts = 2, .capacity_factor = 1.0}, rng);
  // Make expert 0 win every token: its router row dominates.
  auto& w = layer.router().named_parameters()[0].parameter->value;
  w.row(0).setConstant(5.0);
  w.row(1).setConstant(-5.0);
  MatrixX<double> x = MatrixX<double>::Constant(10, 4, 1.0);
  const MatrixX<double> y = layer.forward(x);
  // capacity = ceil(1.0 * 10 * 1 / 2) = 5: tokens 0-4 kept, 5-9 dropped (zero output).
  CHECK(layer.backend().dropped() == 5);
  CHECK(layer.load().dropped == 5);
  CHECK(layer.batch_load()(0) == 10);
  for (Index t = 0; t < 5; ++t) CHECK(y.row(t).cwiseAbs().sum() > 0);
  for (Index t = 5; t < 10; ++t) CHECK(y.row(t).isZero());
  // The gradient check holds with drops too.
  moe::test::check_module_gradients(layer, random_input(10, 4, 8) + x, 9);
}

TEST_CASE("MoELayer gives the same bits for 1 and 2 threads", "[moe][layer][determinism]") {
  auto run = [](int threads) {
    const int previous = moe::set_num_threads(threads);
    moe::Rng rng(5);
    moe::MoELayer<moe::Linear<float>, moe::SoftmaxTopK, 2, moe::NoBalancing> layer(
        {.d_model = 32, .num_experts = 8, .num_shared_experts = 1, .expert = {.out_features = 32},
         .shared_expert = {.out_features = 32}, .router = {.renormalize = true}},
        rng);
    moe::Matrix x(257, 32);
    moe::fill_uniform(x, rng, -1.0, 1.0);
    moe::Matrix dy(257, 32);
    moe::fill_uniform(dy, rng, -1.0, 1.0);
    std::vector<moe::Matrix> results{layer.forward(x), layer.backward(dy)};
    for (const auto& p : layer.named_parameters()) results.push_back(p.parameter->grad);
    moe::set_num_threads(previous);
    return results;
  };
  const auto one = run(1);
  const auto two = run(2);
  REQUIRE(one.size() == two.size());
  for (std::size_t i = 0; i < one.size(); ++i) {
    INFO("result " << i);
    CHECK(one[i] == two[i]);
  }
}

TEST_CASE("MoELayer with fewer than 4 busy experts splits their products over the threads, with the same results",
          "[moe][layer][determinism]") {
  // Two feed-forward experts wider than the backend's 256-feature chunks: each product runs in chunks.
  moe::Rng rng(7);
  moe::MoELayer<moe::FeedForward<moe::GELU, double>, moe::SoftmaxTopK, 1, moe::NoBalancing> layer(
      {.d_model = 300, .num_experts = 2, .expert = {.hidden = 600}}, rng);
  const MatrixX<double> x = random_input(45, 300, 8);
  const MatrixX<double> y = layer.forward(x);
  CHECK((y - reference_output(layer, x)).cwiseAbs().maxCoeff() < 1e-12);

  auto run = [](int threads) {
    const int previous = moe::set_num_threads(threads);
    moe::Rng rng(9);
    moe::MoELayer<moe::FeedForward<moe::GELU>, moe::SoftmaxTopK, 1, moe::NoBalancing> layer(
        {.d_model = 300, .num_experts = 2, .expert = {.hidden = 600}}, rng);
    moe::Matrix x(45, 300), dy(45, 300);
    moe::fill_uniform(x, rng, -1.0, 1.0);
    moe::fill_uniform(dy, rng, -1.0, 1.0);
    std::vector<moe::Matrix> results{layer.forward(x), layer.backward(dy)};
    for (const auto& p : layer.named_parameters()) results.push_back(p.parameter->grad);
    moe::set_num_threads(previous);
    return results;
  };
  const auto one = run(1);
  const auto two = run(2);
  REQUIRE(one.size() == two.size());
  for (std::size_t i = 0; i < one.size(); ++i) {
    INFO("result " << i);
    CHECK(one[i] == two[i]);
  }
}

TEST_CASE("MoELayer rejects bad configurations and inputs with a named reason", "[moe][layer][errors]") {
  moe::Rng rng(1);
  using Layer = moe::MoELayer<moe::Linear<float>, moe::SoftmaxTopK, moe::Dynamic, moe::NoBalancing>;
  CHECK_THROWS_WITH(Layer({.d_model = 4, .num_experts = 0, .k = 1}, rng),
                    Catch::Contains("num_experts must be positive, got 0"));
  CHECK_THROWS_WITH(Layer({.d_model = 4, .num_experts = 2, .k = 3}, rng),
                    Catch::Contains("k must be in [1, num_experts = 2], got 3"));
  CHECK_THROWS_WITH((moe::MoELayer<moe::Linear<float>, moe::SoftmaxTopK, 2, moe::NoBalancing>(
                        {.d_model = 4, .num_experts = 4, .k = 3}, rng)),
                    Catch::Contains("k is fixed to 2 by the template argument, got 3"));
  CHECK_THROWS_WITH(Layer({.d_model = 4, .num_experts = 2, .k = 1, .capacity_factor = -1}, rng),
                    Catch::Contains("capacity_factor must be >= 0"));
  Layer layer({.d_model = 4, .num_experts = 2, .k = 1}, rng);
  moe::Matrix x(3, 5);
  x.setZero();
  CHECK_THROWS_WITH(layer.forward(x), Catch::Contains("MoELayer: input has 5 columns, d_model is 4"));
  moe::Matrix good = moe::Matrix::Zero(3, 4);
  layer.forward(good);
  CHECK_THROWS_WITH(layer.backward(moe::Matrix::Zero(2, 4)), Catch::Contains("gradient has shape 2x4, expected 3x4"));
}

TEST_CASE("MoELayer with check_finite throws on a non-finite output", "[moe][layer][errors]") {
  moe::Rng rng(1);
  moe::MoELayer<moe::Linear<float>, moe::SoftmaxTopK, 1, moe::NoBalancing> layer(
      {.d_model = 2, .num_experts = 2, .check_finite = true}, rng);
  moe::Matrix x = moe::Matrix::Zero(2, 2);
  layer.expert(0).weight().value(0, 0) = std::numeric_limits<float>::infinity();
  layer.expert(1).weight().value(0, 0) = std::numeric_limits<float>::infinity();
  x(0, 0) = 1.0f;
  CHECK_THROWS_WITH(layer.forward(x), Catch::Contains("output is not finite"));
}

TEST_CASE("MoELayer tracks load per batch and accumulated", "[moe][layer][load]") {
  moe::Rng rng(2);
  LinearMoE<2> layer({.d_model = 4, .num_experts = 4}, rng);
  layer.forward(random_input(20, 4, 1));
  CHECK(layer.batch_load().sum() == 40);
  layer.forward(random_input(10, 4, 2));
  CHECK(layer.batch_load().sum() == 20);
  CHECK(layer.load().counts.sum() == 60);
  CHECK(layer.load().tokens == 30);
  CHECK(moe::relative_load(layer.load().counts, layer.load().tokens, 2).mean() == Approx(1.0));
  layer.reset_load();
  CHECK(layer.load().counts.sum() == 0);
}

TEST_CASE("MoELayer of feed-forward experts with balancers: gradients include the aux loss",
          "[moe][layer][gradient][balancing]") {
  moe::Rng rng(21);
  using Expert = moe::FeedForward<moe::GELU, double>;
  SECTION("softmax top-2, Switch aux loss + z-loss, shared expert") {
    moe::MoELayer<Expert, moe::SoftmaxTopK, 2, moe::SwitchWithZLoss> layer(
        {.d_model = 5, .num_experts = 4, .num_shared_experts = 1, .expert = {.hidden = 6},
         .shared_expert = {.hidden = 3}, .router = {.renormalize = true}, .balancer = {{0.5}, {0.1}}},
        rng);
    moe::test::check_module_gradients<decltype(layer)>(layer, random_input(8, 5, 22), 23,
                                                       [](auto& l) { return double(l.aux_loss()); });
  }
  SECTION("sigmoid top-2, sequence aux loss with the aux-loss-free bias") {
    moe::MoELayer<Expert, moe::SigmoidTopK, 2, SequenceAuxLossFree> layer(
        {.d_model = 5, .num_experts = 4, .expert = {.hidden = 6}, .balancer = {{0.5, 4}, {1e-2}}}, rng);
    layer.forward(random_input(8, 5, 24));
    layer.update_balancing();  // a non-zero bias, so selection and gates differ
    moe::test::check_module_gradients<decltype(layer)>(layer, random_input(8, 5, 24), 25,
                                                       [](auto& l) { return double(l.aux_loss()); });
  }
}

TEST_CASE("A trained layer takes a RandomRouter without retraining", "[moe][layer][random_router]") {
  moe::Rng rng(31);
  LinearMoE<1> learned({.d_model = 4, .num_experts = 3, .num_shared_experts = 1}, rng);
  const MatrixX<double> x = random_input(300, 4, 32);
  const MatrixX<double> learned_output = learned.forward(x);

  auto ablated = learned.with_router<moe::RandomRouter>({.seed = 7}, rng);
  static_assert(std::is_same_v<decltype(ablated)::RouterType, moe::RandomRouter<double>>);
  // Same experts, shared experts and names, minus the learned router's weight.
  auto learned_params = learned.named_parameters();
  auto ablated_params = ablated.named_parameters();
  REQUIRE(ablated_params.size() + 1 == learned_params.size());
  for (std::size_t i = 0; i < ablated_params.size(); ++i) {
    CHECK(ablated_params[i].name == learned_params[i + 1].name);
    CHECK(ablated_params[i].parameter->value == learned_params[i + 1].parameter->value);
    CHECK(ablated_params[i].parameter != learned_params[i + 1].parameter);  // a copy, not shared
  }
  const MatrixX<double> ablated_output = ablated.forward(x);
  // Every expert is used about equally, and each row is its expert's output plus the shared expert's.
  const auto counts = ablated.batch_load();
  CHECK(counts.minCoeff() > 70);
  CHECK(moe::max_violation(counts) < 0.3);
  CHECK(ablated_output.isApprox(reference_output(ablated, x), 1e-12));
  CHECK(!ablated_output.isApprox(learned_output, 1e-3));
  // The learned layer is untouched.
  CHECK(learned.forward(x) == learned_output);
}
