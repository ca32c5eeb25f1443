#include <algorithm>
#include <cmath>
#include <vector>

#include "gradient_check.hpp"
#include "moe/analysis/load.hpp"
#include "moe/core/parallel.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/deepseek_v3.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/layer/upcycle.hpp"
#include "moe/nn/linear.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/random_router.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"
#include "random_matrix.hpp"

using moe::Index;
using moe::IndexMatrix;
using moe::MatrixX;

namespace {

using moe::test::random_matrix;

template <class S>
using SequenceAuxLossFree = moe::Combine<S, moe::SequenceAuxLoss, moe::AuxLossFree>;

template <int K>
using LinearMoE = moe::MoELayer<moe::Linear<double>, moe::SoftmaxTopK, K, moe::NoBalancing>;

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

/// A layer whose forward takes a padding mask, as a module with forward(x), for check_module_gradients.
template <class Layer>
struct PaddedLayer {
  using Scalar = typename Layer::Scalar;
  Layer& layer;
  moe::PaddingMask padding;
  const MatrixX<Scalar>& forward(moe::ConstRef<Scalar> x) { return layer.forward(x, padding); }
  const MatrixX<Scalar>& backward(moe::ConstRef<Scalar> dy) { return layer.backward(dy); }
  moe::ParameterList<Scalar> named_parameters() { return layer.named_parameters(); }
  Scalar aux_loss() const { return layer.aux_loss(); }
};

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

/// run() (a layer's forward, backward and gradients) at 1 and at 2 threads: the same bits.
template <class Run>
void check_same_bits_at_1_and_2_threads(Run run) {
  std::vector<std::vector<moe::Matrix>> results;
  for (const int threads : {1, 2}) {
    const int previous = moe::set_num_threads(threads);
    results.push_back(run());
    moe::set_num_threads(previous);
  }
  REQUIRE(results[0].size() == results[1].size());
  for (std::size_t i = 0; i < results[0].size(); ++i) {
    INFO("result " << i);
    CHECK(results[0][i] == results[1][i]);
  }
}

}  // namespace

TEST_CASE("MoELayer output equals the token-by-token mixture", "[moe][layer]") {
  moe::Rng rng(7);
  LinearMoE<2> layer({.d_model = 6, .num_experts = 4, .num_shared_experts = 1, .expert = {.out_features = 5},
                      .shared_expert = {.out_features = 5}, .router = {.renormalize = true}},
                     rng);
  const MatrixX<double> x = random_matrix(33, 6, 1);
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
    moe::test::check_module_gradients(layer, random_matrix(9, 5, 2), 3);
  }
  SECTION("K = 2, renormalised, with shared experts") {
    LinearMoE<2> layer({.d_model = 5, .num_experts = 4, .num_shared_experts = 2, .router = {.renormalize = true}},
                       rng);
    moe::test::check_module_gradients(layer, random_matrix(9, 5, 4), 5);
  }
  SECTION("K = N (dense), run-time K") {
    LinearMoE<moe::Dynamic> layer({.d_model = 4, .num_experts = 3, .k = 3}, rng);
    moe::test::check_module_gradients(layer, random_matrix(7, 4, 6), 7);
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
  moe::test::check_module_gradients(layer, random_matrix(10, 4, 8) + x, 9);
}

TEST_CASE("MoELayer gives the same bits for 1 and 2 threads", "[moe][layer][determinism]") {
  check_same_bits_at_1_and_2_threads([] {
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
    return results;
  });
}

TEST_CASE("DeepSeekV3MoE with a padding mask and capacity gives the same bits for 1 and 2 threads",
          "[moe][layer][determinism][deepseek_v3]") {
  check_same_bits_at_1_and_2_threads([] {
    moe::Rng rng(6);
    auto options = moe::deepseek_v3_options(16, 8, 32);
    options.capacity_factor = 1.5;
    options.drop_policy = moe::DropPolicy::choice_order;
    moe::DeepSeekV3MoE<> layer(options, rng);
    moe::Matrix x(256, 16), dy(256, 16);
    moe::fill_uniform(x, rng, -1.0, 1.0);
    moe::fill_uniform(dy, rng, -1.0, 1.0);
    moe::PaddingMask padding = moe::PaddingMask::Constant(8, 32, false);
    for (Index b = 0; b < 8; ++b) padding.row(b).tail(b * 3).setConstant(true);
    layer.forward(x);  // an aux-loss-free bias for the next forward
    layer.update_balancing();
    std::vector<moe::Matrix> results{layer.forward(x, padding), layer.backward(dy),
                                     moe::Matrix::Constant(1, 1, layer.aux_loss())};
    for (const auto& p : layer.named_parameters()) results.push_back(p.parameter->grad);
    return results;
  });
}

TEST_CASE("MoELayer with fewer than 4 busy experts splits their products over the threads, with the same results",
          "[moe][layer][determinism]") {
  // Two feed-forward experts wider than the backend's 256-feature chunks: each product runs in chunks.
  moe::Rng rng(7);
  moe::MoELayer<moe::FeedForward<moe::GELU, double>, moe::SoftmaxTopK, 1, moe::NoBalancing> layer(
      {.d_model = 300, .num_experts = 2, .expert = {.hidden = 600}}, rng);
  const MatrixX<double> x = random_matrix(45, 300, 8);
  const MatrixX<double> y = layer.forward(x);
  CHECK((y - reference_output(layer, x)).cwiseAbs().maxCoeff() < 1e-12);

  check_same_bits_at_1_and_2_threads([] {
    moe::Rng rng(9);
    moe::MoELayer<moe::FeedForward<moe::GELU>, moe::SoftmaxTopK, 1, moe::NoBalancing> layer(
        {.d_model = 300, .num_experts = 2, .expert = {.hidden = 600}}, rng);
    moe::Matrix x(45, 300), dy(45, 300);
    moe::fill_uniform(x, rng, -1.0, 1.0);
    moe::fill_uniform(dy, rng, -1.0, 1.0);
    std::vector<moe::Matrix> results{layer.forward(x), layer.backward(dy)};
    for (const auto& p : layer.named_parameters()) results.push_back(p.parameter->grad);
    return results;
  });
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
  layer.forward(random_matrix(20, 4, 1));
  CHECK(layer.batch_load().sum() == 40);
  layer.forward(random_matrix(10, 4, 2));
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
    moe::test::check_module_gradients<decltype(layer)>(layer, random_matrix(8, 5, 22), 23,
                                                       [](auto& l) { return double(l.aux_loss()); });
  }
  SECTION("sigmoid top-2, sequence aux loss with the aux-loss-free bias") {
    moe::MoELayer<Expert, moe::SigmoidTopK, 2, SequenceAuxLossFree> layer(
        {.d_model = 5, .num_experts = 4, .expert = {.hidden = 6}, .balancer = {{0.5, 4}, {1e-2}}}, rng);
    layer.forward(random_matrix(8, 5, 24));
    layer.update_balancing();  // a non-zero bias, so selection and gates differ
    moe::test::check_module_gradients<decltype(layer)>(layer, random_matrix(8, 5, 24), 25,
                                                       [](auto& l) { return double(l.aux_loss()); });
  }
}

TEST_CASE("A trained layer takes a RandomRouter without retraining", "[moe][layer][random_router]") {
  moe::Rng rng(31);
  LinearMoE<1> learned({.d_model = 4, .num_experts = 3, .num_shared_experts = 1}, rng);
  const MatrixX<double> x = random_matrix(300, 4, 32);
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

TEST_CASE("MoELayer DropPolicy: token order or first choices first (GShard)", "[moe][layer][capacity]") {
  // N = 2, K = 2, T = 4, capacity ceil(0.5 * 4 * 2 / 2) = 2. Tokens 0, 1 prefer expert 1, tokens 2, 3 expert 0.
  // Expert 0 gets second choices from 0, 1 and first choices from 2, 3: in token order it keeps 0 and 1 (and
  // tokens 2, 3 lose both experts); first choices first, it keeps 2 and 3. Expert 1 keeps 0 and 1 either way.
  const auto policy = GENERATE(moe::DropPolicy::token_order, moe::DropPolicy::choice_order);
  const bool token_order = policy == moe::DropPolicy::token_order;
  INFO((token_order ? "token_order" : "choice_order"));
  moe::Rng rng(4);
  LinearMoE<2> layer({.d_model = 2, .num_experts = 2, .capacity_factor = 0.5, .drop_policy = policy}, rng);
  layer.router().named_parameters()[0].parameter->value = 5.0 * MatrixX<double>::Identity(2, 2);
  MatrixX<double> x(4, 2);
  x << 0, 1, 0, 1, 1, 0, 1, 0;
  const MatrixX<double> y = layer.forward(x);
  const auto& position = layer.backend().plan().position;
  CHECK(layer.backend().dropped() == 4);
  for (Index t = 0; t < 4; ++t) {
    INFO("token " << t);
    const bool first_kept = token_order ? t < 2 : true, second_kept = token_order ? t < 2 : false;
    CHECK((position(t, 0) >= 0) == first_kept);
    CHECK((position(t, 1) >= 0) == second_kept);
    CHECK(y.row(t).isZero() == (!first_kept && !second_kept));
  }
  moe::test::check_module_gradients(layer, x + random_matrix(4, 2, 5) * 0.1, 6);
}

TEST_CASE("MoELayer with a padding mask gives the unpadded batch's numbers", "[moe][layer][padding]") {
  // Two sequences of 4 tokens, padded to 6 on the right or on the left, against the 8 tokens alone: outputs,
  // input and parameter gradients, aux loss, load, capacity drops and the aux-loss-free bias update agree bit
  // for bit, and padded rows get 0.
  using Expert = moe::FeedForward<moe::GELU, double>;
  using Layer = moe::MoELayer<Expert, moe::SigmoidTopK, 2, SequenceAuxLossFree>;
  const bool right = GENERATE(true, false);
  INFO((right ? "right padding" : "left padding"));
  auto options = [](Index sequence_length) {
    return Layer::Options{.d_model = 5, .num_experts = 4, .num_shared_experts = 1, .capacity_factor = 1.0,
                          .expert = {.hidden = 6}, .shared_expert = {.hidden = 3},
                          .balancer = {{.alpha = 0.5, .sequence_length = sequence_length}, {.gamma = 0.05}}};
  };
  moe::Rng rng_a(8), rng_b(8);
  Layer unpadded(options(4), rng_a), padded(options(6), rng_b);
  moe::PaddingMask padding = moe::PaddingMask::Constant(2, 6, false);
  std::vector<Index> rows;  // the padded batch's row of each token
  for (Index b = 0; b < 2; ++b)
    for (Index i = 0; i < 4; ++i) rows.push_back(b * 6 + (right ? i : i + 2));
  for (Index b = 0; b < 2; ++b) padding.row(b).segment(right ? 4 : 0, 2).setConstant(true);

  for (int step = 0; step < 2; ++step) {
    INFO("step " << step);
    const MatrixX<double> x = random_matrix(8, 5, 10 + static_cast<std::uint64_t>(step));
    const MatrixX<double> dy = random_matrix(8, 5, 20 + static_cast<std::uint64_t>(step));
    MatrixX<double> x_padded = random_matrix(12, 5, 30) * 100.0, dy_padded = random_matrix(12, 5, 31);
    for (Index t = 0; t < 8; ++t) {
      x_padded.row(rows[static_cast<std::size_t>(t)]) = x.row(t);
      dy_padded.row(rows[static_cast<std::size_t>(t)]) = dy.row(t);
    }
    moe::zero_grad(unpadded.named_parameters());
    moe::zero_grad(padded.named_parameters());
    const MatrixX<double> y = unpadded.forward(x), y_padded = padded.forward(x_padded, padding);
    const MatrixX<double> dx = unpadded.backward(dy), dx_padded = padded.backward(dy_padded);
    CHECK(padded.aux_loss() == unpadded.aux_loss());
    CHECK(padded.batch_load() == unpadded.batch_load());
    CHECK(padded.backend().dropped() == unpadded.backend().dropped());
    for (Index t = 0, real = 0; t < 12; ++t) {
      if (padding.data()[t]) {
        CHECK(y_padded.row(t).isZero());
        CHECK(dx_padded.row(t).isZero());
        continue;
      }
      CHECK(y_padded.row(t) == y.row(real));
      CHECK(dx_padded.row(t) == dx.row(real));
      ++real;
    }
    const auto a = unpadded.named_parameters(), b = padded.named_parameters();
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO(a[i].name);
      CHECK(b[i].parameter->grad == a[i].parameter->grad);
    }
    unpadded.update_balancing();
    padded.update_balancing();
    CHECK(padded.balancer().get<1>().bias() == unpadded.balancer().get<1>().bias());
  }
  CHECK(padded.load().tokens == 16);
  CHECK(padded.load().counts == unpadded.load().counts);
  CHECK(!padded.balancer().get<1>().bias().isZero());

  PaddedLayer<Layer> module{padded, padding};
  moe::test::check_module_gradients<PaddedLayer<Layer>>(module, random_matrix(12, 5, 40), 41,
                                                        [](auto& l) { return double(l.aux_loss()); });
  CHECK_THROWS_WITH(padded.forward(random_matrix(10, 5, 1), padding),
                    Catch::Contains("padding mask has 2x6 = 12 entries, the input has 10 rows"));
}

TEST_CASE("Group-limited sigmoid routing with a scaling factor: gradients match finite differences",
          "[moe][layer][gradient][groups]") {
  using Expert = moe::FeedForward<moe::GELU, double>;
  moe::Rng rng(13);
  moe::MoELayer<Expert, moe::SigmoidTopK, 3, SequenceAuxLossFree> layer(
      {.d_model = 5, .num_experts = 8, .num_shared_experts = 1, .expert = {.hidden = 4},
       .shared_expert = {.hidden = 3},
       .router = {.routed_scaling_factor = 2.5, .n_group = 4, .topk_group = 2},
       .balancer = {{.alpha = 0.5, .sequence_length = 4}, {.gamma = 0.05}}},
      rng);
  layer.forward(random_matrix(8, 5, 14));
  layer.update_balancing();  // a non-zero bias: selection, group scores and f_i's count differ from the scores'
  const MatrixX<double> x = random_matrix(8, 5, 15);
  layer.forward(x);
  CHECK(layer.routing().gates.rowwise().sum().isApproxToConstant(2.5, 1e-12));
  for (Index t = 0; t < 8; ++t) {  // every token's experts lie in at most 2 groups of 2
    std::vector<Index> groups;
    for (Index j = 0; j < 3; ++j) groups.push_back(layer.routing().experts(t, j) / 2);
    std::sort(groups.begin(), groups.end());
    CHECK(std::unique(groups.begin(), groups.end()) - groups.begin() <= 2);
  }
  moe::test::check_module_gradients<decltype(layer)>(layer, x, 16, [](auto& l) { return double(l.aux_loss()); });
}

TEST_CASE("Group-limited softmax routing (DeepSeek-V2): groups by their best score, scaled gates, gradients",
          "[moe][layer][gradient][groups]") {
  using Expert = moe::SwiGLUFeedForward<double>;
  moe::Rng rng(17);
  // DeepSeek-V2's router in small: softmax top-3 of 8 experts within the best 2 of 4 groups, gates not
  // renormalised and scaled by 16, two shared experts.
  moe::MoELayer<Expert, moe::SoftmaxTopK, 3, moe::NoBalancing> layer(
      {.d_model = 5, .num_experts = 8, .num_shared_experts = 2, .expert = {.hidden = 4},
       .shared_expert = {.hidden = 3},
       .router = {.renormalize = false, .routed_scaling_factor = 16.0, .n_group = 4, .topk_group = 2}},
      rng);
  const MatrixX<double> x = random_matrix(12, 5, 18);
  const MatrixX<double> y = layer.forward(x);
  const auto& routing = layer.routing();
  const MatrixX<double>& scores = *routing.scores;
  for (Index t = 0; t < x.rows(); ++t) {
    INFO("token " << t);
    // By the definition: a group's score is its best softmax score; the 2 best groups; the 3 best experts in them.
    std::vector<std::pair<double, Index>> groups;
    for (Index g = 0; g < 4; ++g) groups.emplace_back(-scores.row(t).segment(2 * g, 2).maxCoeff(), g);
    std::sort(groups.begin(), groups.end());
    std::vector<std::pair<double, Index>> candidates;
    for (Index e = 0; e < 8; ++e)
      if (e / 2 == groups[0].second || e / 2 == groups[1].second) candidates.emplace_back(-scores(t, e), e);
    std::sort(candidates.begin(), candidates.end());
    for (Index j = 0; j < 3; ++j) {
      const Index expert = candidates[static_cast<std::size_t>(j)].second;
      CHECK(routing.experts(t, j) == expert);
      CHECK(routing.gates(t, j) == Approx(16.0 * scores(t, expert)).epsilon(1e-14));
    }
  }
  CHECK(y.isApprox(reference_output(layer, x), 1e-12));
  moe::test::check_module_gradients(layer, x, 19);
}

TEST_CASE("Gated shared experts (Qwen2-MoE): sigmoid(x . w_s) scales shared expert s", "[moe][layer][shared_gate]") {
  using Expert = moe::SwiGLUFeedForward<double>;
  using Layer = moe::MoELayer<Expert, moe::SoftmaxTopK, 2, moe::NoBalancing>;
  const Layer::Options plain{.d_model = 5, .num_experts = 4, .num_shared_experts = 2, .expert = {.hidden = 4},
                             .shared_expert = {.hidden = 6}, .router = {.renormalize = false}};
  Layer::Options gated_options = plain;
  gated_options.shared_expert_gate = true;
  moe::Rng rng(41), same_rng(41);
  Layer gated(gated_options, rng);
  Layer ungated(plain, same_rng);

  // The gate is drawn after every other parameter: the rest are the ungated layer's, bit for bit.
  const auto parameters = gated.named_parameters(), others = ungated.named_parameters();
  REQUIRE(parameters.size() == others.size() + 1);
  for (std::size_t i = 0; i < others.size(); ++i) {
    CHECK(parameters[i].name == others[i].name);
    CHECK(parameters[i].parameter->value == others[i].parameter->value);
  }
  CHECK(parameters.back().name == "shared_expert_gate.weight");
  CHECK(parameters.back().parameter->shape == moe::Shape{2, 5});

  const MatrixX<double> x = random_matrix(9, 5, 42);
  const MatrixX<double> y = gated.forward(x);
  const MatrixX<double> routed = ungated.forward(x) - ungated.shared_expert(0).forward(x) -
                                 ungated.shared_expert(1).forward(x);
  const MatrixX<double>& w = parameters.back().parameter->value;
  MatrixX<double> expected = routed;
  for (Index t = 0; t < x.rows(); ++t)
    for (Index s = 0; s < 2; ++s)
      expected.row(t) += sigmoid(x.row(t).dot(w.row(s))) * gated.shared_expert(s).forward(x.row(t)).row(0);
  CHECK(y.isApprox(expected, 1e-12));

  moe::test::check_module_gradients(gated, x, 43);
  // with_router keeps the gate.
  moe::Rng other(1);
  auto swapped = gated.with_router<moe::SoftmaxTopK>({.renormalize = false}, other);
  const auto swapped_parameters = swapped.named_parameters();
  CHECK(swapped_parameters.back().name == "shared_expert_gate.weight");
  CHECK(swapped_parameters.back().parameter->value == w);

  Layer::Options no_shared = gated_options;
  no_shared.num_shared_experts = 0;
  CHECK_THROWS_WITH(Layer(no_shared, rng), Catch::Contains("shared_expert_gate needs shared experts to gate"));
}

TEST_CASE("DeepSeekV3MoE with DeepSeek-V3's router config reproduces hand-computed routing",
          "[moe][layer][deepseek_v3]") {
  // 256 experts in 8 groups of 32, top-4 groups, K = 8, gates renormalised and scaled by 2.5, 1 shared expert.
  // Token t is the unit vector e_t, so its logits are column t of the router weight, set below; every other
  // logit is -3 (sigmoid 0.047). A group's score is the sum of its two best (score + bias).
  using Expert = moe::SwiGLUFeedForward<double>;
  using Layer = moe::DeepSeekV3MoE<Expert>;
  moe::Rng rng(2024);
  Layer layer(moe::deepseek_v3_options<Expert>(8, 4, 3), rng);
  CHECK(layer.num_experts() == 256);
  CHECK(layer.k() == 8);
  CHECK(layer.router().routed_scaling_factor() == 2.5);
  auto& w = layer.router().named_parameters()[0].parameter->value;  // [256 x 8]
  w.setConstant(-3.0);
  // Token 0: expert 5 has the best score of all (logit 4), but group 0 scores sigmoid(4) + sigmoid(-3) = 1.029;
  // groups g = 1..7 have experts 32g, 32g + 1 at logit 0.5 g - 1, group scores 2 sigmoid(0.5 g - 1) = 0.755,
  // 1.000, 1.245, 1.462, 1.635, 1.762, 1.848: groups 7, 6, 5, 4 win, and their 8 experts, best first.
  w(5, 0) = 4.0;
  for (Index g = 1; g < 8; ++g) w(32 * g, 0) = w(32 * g + 1, 0) = 0.5 * static_cast<double>(g) - 1.0;
  // Token 1: group 3 has experts 96..103 at logits 2.0, 1.9, ..., 1.3 (group score 1.751), group 6 expert 200
  // at 3 (score 1.000); the other groups tie at 2 sigmoid(-3) and the lower ones, 0 and 1, fill the top 4.
  // The best 8: expert 200, then 96..102.
  for (Index i = 0; i < 8; ++i) w(96 + i, 1) = 2.0 - 0.1 * static_cast<double>(i);
  w(200, 1) = 3.0;
  // Token 2: every logit -3: groups 0..3 tie-break to the lowest, and so do experts 0..7.
  MatrixX<double> x = MatrixX<double>::Zero(3, 8);
  for (Index t = 0; t < 3; ++t) x(t, t) = 1.0;

  const std::vector<std::vector<Index>> expected{{224, 225, 192, 193, 160, 161, 128, 129},
                                                 {200, 96, 97, 98, 99, 100, 101, 102},
                                                 {0, 1, 2, 3, 4, 5, 6, 7}};
  auto check_routing = [&](const std::vector<std::vector<Index>>& chosen) {
    const MatrixX<double> y = layer.forward(x);
    const auto& routing = layer.routing();
    for (Index t = 0; t < 3; ++t) {
      INFO("token " << t);
      double sum = 0;
      for (Index j = 0; j < 8; ++j) {
        CHECK(routing.experts(t, j) == chosen[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)]);
        sum += sigmoid(w(routing.experts(t, j), t));
      }
      for (Index j = 0; j < 8; ++j)
        CHECK(routing.gates(t, j) == Approx(2.5 * sigmoid(w(routing.experts(t, j), t)) / sum).epsilon(1e-12));
    }
    CHECK(y.isApprox(reference_output(layer, x), 1e-12));
  };
  check_routing(expected);
  // Plain top-8 would have taken expert 5 for token 0.
  IndexMatrix plain;
  moe::select_top_k(*layer.routing().scores, static_cast<const MatrixX<double>*>(nullptr), 8, plain);
  CHECK(plain(0, 0) == 5);

  // A bias of 0.5 on expert 6 lifts group 0 to sigmoid(4) + sigmoid(-3) + 0.5 = 1.529 > 1.462 (group 4): group 0
  // replaces group 4 for token 0, which takes expert 5 first and expert 6 (0.047 + 0.5) last; the gates stay
  // the scores' (without the bias).
  for (auto& buffer : layer.named_buffers())
    if (buffer.name == "balancer.expert_bias") (*buffer.value)(0, 6) = 0.5;
  auto biased = expected;
  biased[0] = {5, 224, 225, 192, 193, 160, 161, 6};
  biased[2] = {6, 0, 1, 2, 3, 4, 5, 7};
  check_routing(biased);
}

TEST_CASE("upcycle copies a dense feed-forward block into every expert (sparse upcycling)",
          "[moe][layer][upcycle]") {
  using Expert = moe::FeedForward<moe::GELU, double>;
  using Layer = moe::MoELayer<Expert, moe::SoftmaxTopK, 1, moe::NoBalancing>;
  moe::Rng rng(50);
  Expert dense(6, {.hidden = 5}, rng);
  Layer layer({.d_model = 6, .num_experts = 4, .expert = {.hidden = 5}, .router = {.renormalize = true}}, rng);
  const MatrixX<double> router_before = layer.router().named_parameters()[0].parameter->value;
  moe::upcycle(dense, layer, rng);
  // K = 1 with renormalised gates: every gate is 1, so the layer is the dense block, whichever expert a row
  // goes to; the router keeps its initialisation.
  const MatrixX<double> x = random_matrix(40, 6, 51);
  const MatrixX<double> y = layer.forward(x);
  CHECK(layer.routing().gates.isOnes());
  CHECK(layer.batch_load().minCoeff() > 0);
  CHECK(y.isApprox(dense.forward(x), 1e-14));
  CHECK(layer.router().named_parameters()[0].parameter->value == router_before);

  SECTION("with noise, each copy differs by it") {
    moe::upcycle(dense, layer, rng, {.noise_std = 0.01});
    const auto weight = [&](Index e) -> MatrixX<double> { return layer.expert(e).named_parameters()[0].parameter->value; };
    const MatrixX<double> dense_weight = dense.named_parameters()[0].parameter->value;
    for (Index e = 0; e < 4; ++e) {
      const MatrixX<double> difference = weight(e) - dense_weight;
      CHECK(difference.norm() / std::sqrt(double(difference.size())) == Approx(0.01).epsilon(0.5));
    }
    CHECK(weight(0) != weight(1));
  }
  SECTION("a dense block of another shape or kind is refused by name") {
    Expert wider(6, {.hidden = 7}, rng);
    CHECK_THROWS_WITH(moe::upcycle(wider, layer, rng),
                      Catch::Contains("experts.0.fc1.weight has shape [5, 6], the dense block's fc1.weight [7, 6]"));
    moe::SwiGLUFeedForward<double> swiglu(6, {.hidden = 5}, rng);
    CHECK_THROWS_WITH(moe::upcycle(swiglu, layer, rng), Catch::Contains("has no experts.0."));
    CHECK_THROWS_WITH(moe::upcycle(dense, layer, rng, {.noise_std = -1.0}), Catch::Contains("noise_std must be >= 0"));
  }
}
