// Expert-choice routing (Zhou et al. 2022): the selection against its definition, a hand-computed case with
// ties, the layer's output against the experts' mixture, gradients against finite differences, the same bits
// at 1 and 2 threads, padding rows never chosen, and the errors.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gradient_check.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/core/parallel.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/linear.hpp"
#include "moe/routing/expert_choice.hpp"

using moe::Index;
using moe::IndexMatrix;
using moe::MatrixX;

namespace {

template <int K>
using ExpertChoiceLinearMoE = moe::MoELayer<moe::Linear<double>, moe::ExpertChoice, K, moe::NoBalancing>;
template <class Scalar>
using ExpertChoiceGeluMoE =
    moe::MoELayer<moe::FeedForward<moe::GELU, Scalar>, moe::ExpertChoice, moe::Dynamic, moe::NoBalancing>;

MatrixX<double> expert_choice_input(Index rows, Index cols, std::uint64_t seed) {
  moe::Rng rng(seed);
  MatrixX<double> x(rows, cols);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  return x;
}

/// Expert e's choice by its definition: every token ranked by (score descending, token ascending), the first
/// `capacity`, in token order.
std::vector<Index> expert_choice_by_definition(const MatrixX<double>& scores, Index e, Index capacity) {
  std::vector<Index> tokens(static_cast<std::size_t>(scores.rows()));
  std::iota(tokens.begin(), tokens.end(), Index{0});
  std::stable_sort(tokens.begin(), tokens.end(), [&](Index a, Index b) { return scores(a, e) > scores(b, e); });
  tokens.resize(static_cast<std::size_t>(capacity));
  std::sort(tokens.begin(), tokens.end());
  return tokens;
}

/// Checks `chosen` [N x C] and `experts` [T x W] against the definition for these scores.
void check_expert_choice(const MatrixX<double>& scores, Index capacity, const IndexMatrix& chosen,
                         const IndexMatrix& experts) {
  const Index tokens = scores.rows(), n = scores.cols();
  REQUIRE(chosen.rows() == n);
  REQUIRE(chosen.cols() == capacity);
  std::vector<std::vector<Index>> by_token(static_cast<std::size_t>(tokens));
  for (Index e = 0; e < n; ++e) {
    INFO("expert " << e);
    const std::vector<Index> expected = expert_choice_by_definition(scores, e, capacity);
    const std::vector<Index> actual(chosen.row(e).begin(), chosen.row(e).end());
    CHECK(actual == expected);
    for (const Index t : expected) by_token[static_cast<std::size_t>(t)].push_back(e);
  }
  std::size_t widest = 1;
  for (const auto& row : by_token) widest = std::max(widest, row.size());
  REQUIRE(experts.rows() == tokens);
  CHECK(experts.cols() == static_cast<Index>(widest));
  for (Index t = 0; t < tokens; ++t) {
    INFO("token " << t);
    auto expected = by_token[static_cast<std::size_t>(t)];  // expert order; best score first, ties keep it
    std::stable_sort(expected.begin(), expected.end(), [&](Index a, Index b) { return scores(t, a) > scores(t, b); });
    expected.resize(static_cast<std::size_t>(experts.cols()), -1);
    const std::vector<Index> actual(experts.row(t).begin(), experts.row(t).end());
    CHECK(actual == expected);
  }
}

}  // namespace

TEST_CASE("select_by_expert_choice takes each expert's C best tokens, ties to the lower token index",
          "[routing][expert_choice]") {
  std::mt19937 rng(5);
  // Scores in eighths: many ties between tokens and between experts.
  std::uniform_int_distribution<int> level(0, 8);
  IndexMatrix order, chosen, experts;
  moe::IndexVector count;
  for (const Index tokens : {Index(1), Index(5), Index(17), Index(40)})
    for (const Index n : {Index(1), Index(3), Index(8)})
      for (const Index capacity : {Index(0), Index(1), tokens / 2, tokens}) {
        INFO("T = " << tokens << ", N = " << n << ", C = " << capacity);
        MatrixX<double> scores(tokens, n);
        for (Index i = 0; i < scores.size(); ++i) scores.data()[i] = level(rng) / 8.0;
        moe::select_by_expert_choice(scores, capacity, order, count, chosen, experts);
        check_expert_choice(scores, capacity, chosen, experts);
      }
  MatrixX<double> with_nan(3, 1);
  with_nan << std::numeric_limits<double>::quiet_NaN(), 0.1, 0.2;
  moe::select_by_expert_choice(with_nan, 2, order, count, chosen, experts);
  CHECK(chosen == (IndexMatrix(1, 2) << 1, 2).finished());  // a NaN score ranks below every number
  CHECK_THROWS_WITH(moe::select_by_expert_choice(with_nan, 4, order, count, chosen, experts),
                    "select_by_expert_choice: capacity must be in [0, 3] (the number of tokens), got 4");
}

TEST_CASE("ExpertChoice capacity is ceil(capacity_factor T K / N), at least 1, at most T",
          "[routing][expert_choice]") {
  moe::Rng rng(1);
  const moe::ExpertChoice<double> one(4, 8, {.capacity_factor = 1.0}, rng);
  CHECK(one.capacity(64, 2, 8) == 16);
  CHECK(one.capacity(63, 1, 8) == 8);  // 7.875 rounded up
  CHECK(one.capacity(3, 1, 8) == 1);   // at least 1
  CHECK(one.capacity(0, 1, 8) == 0);   // an empty batch
  const moe::ExpertChoice<double> four(4, 4, {.capacity_factor = 4.0}, rng);
  CHECK(four.capacity(10, 2, 4) == 10);  // 20, at most T
  CHECK(!one.renormalize());
  for (const double bad : {0.0, -1.0, std::numeric_limits<double>::infinity()})
    CHECK_THROWS_WITH(moe::ExpertChoice<double>(4, 8, {.capacity_factor = bad}, rng),
                      Catch::StartsWith("ExpertChoice: capacity_factor must be positive and finite, got "));
}

TEST_CASE("ExpertChoice reproduces hand-computed routing with ties", "[routing][expert_choice]") {
  // Identity router weights, so the logits are x: t0 (2, 0), t1 (0, 2), t2 = t3 = (1, 0). K = 1 of 2 experts,
  // capacity factor 1: C = 4 * 1 / 2 = 2. Expert 0's scores 0.881, 0.119, 0.731, 0.731: t0 and t2 (t2 wins the
  // tie with t3); expert 1's 0.119, 0.881, 0.269, 0.269: t1 and t2. So t2 gets both experts (expert 0 first,
  // its score is higher), t3 none.
  moe::Rng rng(3);
  ExpertChoiceLinearMoE<1> layer({.d_model = 2, .num_experts = 2, .expert = {.out_features = 3}}, rng);
  for (auto& p : layer.named_parameters())
    if (p.name == "router.weight") p.parameter->value = MatrixX<double>::Identity(2, 2);
  MatrixX<double> x(4, 2);
  x << 2, 0, 0, 2, 1, 0, 1, 0;
  const MatrixX<double> y = layer.forward(x);
  const auto& routing = layer.routing();
  CHECK(routing.experts == (IndexMatrix(4, 2) << 0, -1, 1, -1, 0, 1, -1, -1).finished());
  CHECK(layer.router().chosen_tokens() == (IndexMatrix(2, 2) << 0, 2, 1, 2).finished());
  const double s = 1.0 / (1.0 + std::exp(-2.0)), u = 1.0 / (1.0 + std::exp(-1.0));
  MatrixX<double> gates(4, 2);
  gates << s, 0, s, 0, u, 1 - u, 0, 0;
  CHECK((routing.gates - gates).cwiseAbs().maxCoeff() < 1e-15);
  CHECK(layer.batch_load() == (moe::IndexVector(2) << 2, 2).finished());
  CHECK(layer.backend().dropped() == 0);
  CHECK(y.row(3).isZero());  // no expert took t3
  const MatrixX<double> expected_t2 = u * layer.expert(0).forward(x.row(2)) + (1 - u) * layer.expert(1).forward(x.row(2));
  CHECK((y.row(2) - expected_t2).cwiseAbs().maxCoeff() < 1e-14);
}

TEST_CASE("MoELayer with ExpertChoice: every expert takes exactly C tokens, outputs are the experts' mixture",
          "[moe][layer][expert_choice]") {
  moe::Rng rng(7);
  ExpertChoiceLinearMoE<1> layer({.d_model = 6, .num_experts = 4, .num_shared_experts = 1,
                                  .expert = {.out_features = 5}, .shared_expert = {.out_features = 5},
                                  .router = {.capacity_factor = 1.0}},
                                 rng);
  const MatrixX<double> x = expert_choice_input(30, 6, 1);
  const MatrixX<double> y = layer.forward(x);
  const auto& routing = layer.routing();
  const MatrixX<double>& scores = *routing.scores;
  const Index capacity = 8;  // ceil(30 * 1 / 4)
  check_expert_choice(scores, capacity, layer.router().chosen_tokens(), routing.experts);
  CHECK(layer.batch_load() == moe::IndexVector::Constant(4, capacity));
  CHECK(layer.backend().dropped() == 0);
  CHECK(layer.load().tokens == 30);

  MatrixX<double> expected = MatrixX<double>::Zero(30, 5);
  Index without = 0, several = 0;
  for (Index t = 0; t < 30; ++t) {
    Index count = 0;
    for (Index j = 0; j < routing.k(); ++j) {
      const Index e = routing.experts(t, j);
      if (e < 0) {
        CHECK(routing.gates(t, j) == 0.0);
        continue;
      }
      ++count;
      CHECK(routing.gates(t, j) == scores(t, e));  // the score itself, not renormalised
      expected.row(t) += scores(t, e) * layer.expert(e).forward(x.row(t)).row(0);
    }
    expected.row(t) += layer.shared_expert(0).forward(x.row(t)).row(0);
    without += count == 0;
    several += count >= 2;
  }
  CHECK((y - expected).cwiseAbs().maxCoeff() < 1e-12);
  // The case the routing is for: some tokens get no routed expert, others several.
  CHECK(without > 0);
  CHECK(several > 0);
}

TEST_CASE("MoELayer with ExpertChoice: gradients match finite differences", "[moe][layer][expert_choice][gradient]") {
  moe::Rng rng(11);
  SECTION("K = 1, capacity factor 2, linear experts") {
    ExpertChoiceLinearMoE<1> layer({.d_model = 5, .num_experts = 3, .router = {.capacity_factor = 2.0}}, rng);
    moe::test::check_module_gradients(layer, expert_choice_input(9, 5, 2), 3);
  }
  SECTION("K = 2, GELU experts, a shared expert and a router bias") {
    ExpertChoiceGeluMoE<double> layer({.d_model = 5, .num_experts = 4, .k = 2, .num_shared_experts = 1,
                                       .expert = {.hidden = 6}, .shared_expert = {.hidden = 3},
                                       .router = {.capacity_factor = 1.0, .bias = true}},
                                      rng);
    moe::test::check_module_gradients(layer, expert_choice_input(11, 5, 4), 5);
  }
  SECTION("C = T: every expert takes every token") {
    ExpertChoiceLinearMoE<1> layer({.d_model = 4, .num_experts = 3, .router = {.capacity_factor = 3.0}}, rng);
    const MatrixX<double> x = expert_choice_input(7, 4, 6);
    layer.forward(x);
    CHECK(layer.batch_load() == moe::IndexVector::Constant(3, 7));
    moe::test::check_module_gradients(layer, x, 7);
  }
}

TEST_CASE("MoELayer with ExpertChoice gives the same bits for 1 and 2 threads", "[moe][layer][expert_choice]") {
  std::vector<std::vector<moe::Matrix>> results;
  std::vector<IndexMatrix> routings;
  for (const int threads : {1, 2}) {
    const int previous = moe::set_num_threads(threads);
    moe::Rng rng(5);
    ExpertChoiceGeluMoE<float> layer({.d_model = 12, .num_experts = 8, .k = 2, .num_shared_experts = 1,
                                      .expert = {.hidden = 16}, .shared_expert = {.hidden = 8},
                                      .router = {.capacity_factor = 1.25}},
                                     rng);
    moe::Matrix x(256, 12), dy(256, 12);
    moe::fill_normal(x, rng, 0.0, 1.0);
    moe::fill_normal(dy, rng, 0.0, 1.0);
    std::vector<moe::Matrix> run{layer.forward(x), layer.backward(dy)};
    for (const auto& p : layer.named_parameters()) run.push_back(p.parameter->grad);
    results.push_back(run);
    routings.push_back(layer.routing().experts);
    moe::set_num_threads(previous);
  }
  CHECK(routings[0] == routings[1]);
  REQUIRE(results[0].size() == results[1].size());
  for (std::size_t i = 0; i < results[0].size(); ++i) {
    INFO("result " << i);
    CHECK(results[0][i] == results[1][i]);
  }
}

TEST_CASE("ExpertChoice with a padding mask never chooses a padded row", "[moe][layer][expert_choice][padding]") {
  // Two sequences of 5 tokens padded to 8 (left and right), padded rows 100 times larger than the tokens, so
  // that they would win every expert's choice if they were in it: routing, outputs and gradients are the
  // unpadded batch's, bit for bit.
  using Layer = ExpertChoiceGeluMoE<double>;
  const Layer::Options options{.d_model = 4, .num_experts = 4, .k = 1, .expert = {.hidden = 5},
                               .router = {.capacity_factor = 2.0}};
  moe::Rng rng_a(9), rng_b(9);
  Layer unpadded(options, rng_a), padded(options, rng_b);
  moe::PaddingMask padding = moe::PaddingMask::Constant(2, 8, false);
  padding.row(0).tail(3).setConstant(true);
  padding.row(1).head(3).setConstant(true);
  const MatrixX<double> x = expert_choice_input(10, 4, 1), dy = expert_choice_input(10, 4, 2);
  MatrixX<double> x_padded = expert_choice_input(16, 4, 3) * 100.0, dy_padded = expert_choice_input(16, 4, 4);
  for (Index t = 0, real = 0; t < 16; ++t)
    if (!padding.data()[t]) {
      x_padded.row(t) = x.row(real);
      dy_padded.row(t) = dy.row(real++);
    }
  const MatrixX<double> y = unpadded.forward(x), y_padded = padded.forward(x_padded, padding);
  CHECK(padded.routing().experts == unpadded.routing().experts);
  CHECK(padded.router().chosen_tokens() == unpadded.router().chosen_tokens());
  CHECK(padded.batch_load() == moe::IndexVector::Constant(4, 5));  // C = ceil(2 * 10 / 4) over the 10 tokens
  moe::zero_grad(unpadded.named_parameters());
  moe::zero_grad(padded.named_parameters());
  const MatrixX<double> dx = unpadded.backward(dy), dx_padded = padded.backward(dy_padded);
  for (Index t = 0, real = 0; t < 16; ++t) {
    INFO("row " << t);
    if (padding.data()[t]) {
      CHECK(y_padded.row(t).isZero());
      CHECK(dx_padded.row(t).isZero());
      continue;
    }
    CHECK(y_padded.row(t) == y.row(real));
    CHECK(dx_padded.row(t) == dx.row(real++));
  }
  const auto a = unpadded.named_parameters(), b = padded.named_parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    CHECK(b[i].parameter->grad == a[i].parameter->grad);
  }
}

TEST_CASE("ExpertChoice refuses a layer capacity and a selection bias with a named reason",
          "[moe][layer][expert_choice][errors]") {
  moe::Rng rng(1);
  CHECK_THROWS_WITH(ExpertChoiceLinearMoE<1>({.d_model = 3, .num_experts = 2, .capacity_factor = 1.0}, rng),
                    "MoELayer: the expert-choice router sets each expert's capacity (its Options::capacity_factor), "
                    "so the layer's capacity_factor must be 0, got 1");
  moe::ExpertChoice<double> router(3, 2, {}, rng);
  const MatrixX<double> scores = MatrixX<double>::Constant(4, 2, 0.5), bias = MatrixX<double>::Zero(1, 2);
  IndexMatrix experts;
  CHECK_THROWS_WITH(router.select(scores, &bias, 1, experts),
                    Catch::StartsWith("ExpertChoice: a selection bias was given"));
}

TEST_CASE("An expert-choice layer built with moe::zero_init is all zero and draws nothing", "[moe][expert_choice]") {
  const ExpertChoiceGeluMoE<double>::Options options{.d_model = 5, .num_experts = 4, .k = 2,
                                                      .expert = {.hidden = 6, .dropout = 0.1}};
  ExpertChoiceGeluMoE<double> zero(options, moe::zero_init);
  for (const auto& p : zero.named_parameters()) {
    INFO(p.name);
    CHECK(p.parameter->value.isZero(0.0));
  }
  moe::Rng rng(5);
  ExpertChoiceGeluMoE<double> drawn(options, rng);
  bool any_nonzero = false;
  for (const auto& p : drawn.named_parameters()) any_nonzero = any_nonzero || !p.parameter->value.isZero(0.0);
  CHECK(any_nonzero);
}
