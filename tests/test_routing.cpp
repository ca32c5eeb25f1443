#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gradient_check.hpp"
#include "moe/analysis/load.hpp"
#include "moe/routing/random_router.hpp"
#include "moe/routing/routing.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"

using moe::Index;
using moe::IndexMatrix;
using moe::MatrixX;

static_assert(moe::Router<moe::SoftmaxTopK<float>>);
static_assert(moe::Router<moe::SigmoidTopK<float>>);
static_assert(moe::Router<moe::SigmoidTopK<double>>);
static_assert(moe::Router<moe::RandomRouter<float>>);
static_assert(moe::Router<moe::RandomRouter<double>>);

namespace {

/// Top-K by sorting each row: value desc, then index asc.
template <class Scalar>
IndexMatrix brute_force_top_k(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* bias, Index k) {
  IndexMatrix experts(scores.rows(), k);
  std::vector<Index> order(static_cast<std::size_t>(scores.cols()));
  for (Index t = 0; t < scores.rows(); ++t) {
    auto value = [&](Index e) { return bias ? Scalar(scores(t, e) + (*bias)(0, e)) : scores(t, e); };
    std::iota(order.begin(), order.end(), Index{0});
    std::sort(order.begin(), order.end(), [&](Index a, Index b) {
      if (value(a) != value(b)) return value(a) > value(b);
      return a < b;
    });
    for (Index j = 0; j < k; ++j) experts(t, j) = order[static_cast<std::size_t>(j)];
  }
  return experts;
}

template <class Scalar>
void fill_ties(MatrixX<Scalar>& m, moe::Rng& rng) {
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j) m(i, j) = static_cast<Scalar>(0.5 * static_cast<double>(moe::uniform_index(rng, 3)));
}

template <class Scalar>
void check_top_k_against_brute_force() {
  moe::Rng rng(7);
  int compared = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const Index n = 1 + moe::uniform_index(rng, 9);
    const Index tokens = 1 + moe::uniform_index(rng, 40);
    const bool ties = trial % 2 == 1;
    MatrixX<Scalar> scores(tokens, n), bias(1, n);
    if (ties) {
      fill_ties(scores, rng);
      fill_ties(bias, rng);
    } else {
      moe::fill_uniform(scores, rng, 0.0, 1.0);
      moe::fill_uniform(bias, rng, -0.3, 0.3);
    }
    for (Index k : {Index{1}, Index{2}, n}) {
      if (k > n) continue;
      const MatrixX<Scalar>* biases[] = {nullptr, &bias};
      for (const MatrixX<Scalar>* b : biases) {
        IndexMatrix experts;
        moe::select_top_k(scores, b, k, experts);
        INFO("trial " << trial << ", n " << n << ", k " << k << ", bias " << (b != nullptr) << ", ties " << ties);
        REQUIRE(experts.rows() == tokens);
        REQUIRE(experts.cols() == k);
        CHECK(experts == brute_force_top_k(scores, b, k));
        ++compared;
      }
    }
  }
  CHECK(compared >= 300);
}

/// Group-limited top-K by its definition: group scores (sum of the two best values with a bias, else the
/// best score), the top_groups best groups by sorting, then the k best of their experts by sorting.
template <class Scalar>
IndexMatrix brute_force_grouped(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* bias, Index k, Index groups,
                                Index top_groups) {
  const Index n = scores.cols(), size = n / groups;
  IndexMatrix experts(scores.rows(), k);
  for (Index t = 0; t < scores.rows(); ++t) {
    std::vector<Scalar> values;
    for (Index e = 0; e < n; ++e) values.push_back(bias ? Scalar(scores(t, e) + (*bias)(0, e)) : scores(t, e));
    std::vector<Scalar> group_score;
    for (Index g = 0; g < groups; ++g) {
      std::vector<Scalar> members(values.begin() + g * size, values.begin() + (g + 1) * size);
      std::sort(members.rbegin(), members.rend());
      group_score.push_back(bias ? Scalar(members[0] + members[1]) : members[0]);
    }
    std::vector<Index> group_order(static_cast<std::size_t>(groups));
    std::iota(group_order.begin(), group_order.end(), Index{0});
    std::stable_sort(group_order.begin(), group_order.end(), [&](Index a, Index b) {
      return group_score[static_cast<std::size_t>(a)] > group_score[static_cast<std::size_t>(b)];
    });
    std::vector<Index> allowed;
    for (Index e = 0; e < n; ++e)
      if (std::find(group_order.begin(), group_order.begin() + top_groups, e / size) != group_order.begin() + top_groups)
        allowed.push_back(e);
    std::stable_sort(allowed.begin(), allowed.end(), [&](Index a, Index b) {
      return values[static_cast<std::size_t>(a)] > values[static_cast<std::size_t>(b)];
    });
    for (Index j = 0; j < k; ++j) experts(t, j) = allowed[static_cast<std::size_t>(j)];
  }
  return experts;
}

}  // namespace

TEST_CASE("select_top_k_in_groups matches group-limited routing by its definition", "[routing][top_k][groups]") {
  moe::Rng rng(17);
  MatrixX<double> group_scores;
  IndexMatrix chosen;
  int compared = 0;
  for (int trial = 0; trial < 40; ++trial) {
    const Index groups = 1 + moe::uniform_index(rng, 4), size = 2 + moe::uniform_index(rng, 4);
    const Index n = groups * size, top_groups = 1 + moe::uniform_index(rng, groups);
    const Index tokens = 1 + moe::uniform_index(rng, 20);
    MatrixX<double> scores(tokens, n), bias(1, n);
    if (trial % 2 == 1) {  // ties, in values and in group scores
      fill_ties(scores, rng);
      fill_ties(bias, rng);
    } else {
      moe::fill_uniform(scores, rng, 0.0, 1.0);
      moe::fill_uniform(bias, rng, -0.6, 0.3);
    }
    for (Index k : {Index{1}, top_groups * size}) {
      const MatrixX<double>* biases[] = {nullptr, &bias};
      for (const MatrixX<double>* b : biases) {
        IndexMatrix experts;
        moe::select_top_k_in_groups(scores, b, k, groups, top_groups, group_scores, chosen, experts);
        INFO("trial " << trial << ", groups " << groups << " of " << size << ", top " << top_groups << ", k " << k
                      << ", bias " << (b != nullptr));
        CHECK(experts == brute_force_grouped(scores, b, k, groups, top_groups));
        ++compared;
      }
    }
  }
  CHECK(compared == 160);
}

TEST_CASE("select_top_k_in_groups masks excluded groups with -infinity, not 0", "[routing][top_k][groups]") {
  // 2 groups of 2; selection values (score + bias) all negative: group 0 {-0.2, -0.3} sums to -0.5 and wins
  // over group 1 {-0.5, -0.6} (-1.1). Masked with 0, group 1's experts would get 0 > -0.2 and be chosen.
  MatrixX<double> scores(1, 4), bias(1, 4);
  scores << 0.3, 0.2, 0.4, 0.3;
  bias << -0.5, -0.5, -0.9, -0.9;
  MatrixX<double> group_scores;
  IndexMatrix chosen, experts;
  moe::select_top_k_in_groups(scores, &bias, 2, 2, 1, group_scores, chosen, experts);
  CHECK(group_scores(0, 0) == Approx(-0.5));
  CHECK(group_scores(0, 1) == Approx(-1.1));
  CHECK(experts(0, 0) == 0);
  CHECK(experts(0, 1) == 1);
  // What masking with 0 would choose: the top-2 of {-0.2, -0.3, 0, 0}.
  MatrixX<double> zero_masked(1, 4);
  zero_masked << -0.2, -0.3, 0.0, 0.0;
  IndexMatrix zero_choice;
  moe::select_top_k(zero_masked, static_cast<const MatrixX<double>*>(nullptr), 2, zero_choice);
  CHECK(zero_choice(0, 0) == 2);
  CHECK(zero_choice(0, 1) == 3);
  // Without a bias a group's score is its best score: group 1 (0.4) wins.
  moe::select_top_k_in_groups(scores, static_cast<const MatrixX<double>*>(nullptr), 2, 2, 1, group_scores, chosen,
                              experts);
  CHECK(experts(0, 0) == 2);
  CHECK(experts(0, 1) == 3);
}

TEST_CASE("select_top_k_in_groups, SigmoidTopK and SoftmaxTopK reject bad group settings",
          "[routing][groups][errors]") {
  MatrixX<double> scores = MatrixX<double>::Constant(2, 6, 0.5), group_scores;
  IndexMatrix chosen, experts;
  const MatrixX<double>* none = nullptr;
  CHECK_THROWS_WITH(moe::select_top_k_in_groups(scores, none, 2, 4, 1, group_scores, chosen, experts),
                    Catch::Contains("groups must divide the 6 experts, got 4"));
  CHECK_THROWS_WITH(moe::select_top_k_in_groups(scores, none, 2, 3, 4, group_scores, chosen, experts),
                    Catch::Contains("top_groups must be in [1, 3]"));
  CHECK_THROWS_WITH(moe::select_top_k_in_groups(scores, none, 5, 3, 2, group_scores, chosen, experts),
                    Catch::Contains("k must be in [1, 4]"));
  const MatrixX<double> bias = MatrixX<double>::Zero(1, 6);
  CHECK_THROWS_WITH(moe::select_top_k_in_groups(scores, &bias, 1, 6, 2, group_scores, chosen, experts),
                    Catch::Contains("groups need at least 2 experts"));
  moe::Rng rng(1);
  CHECK_THROWS_WITH(moe::SigmoidTopK<double>(3, 6, {.n_group = 4}, rng),
                    Catch::Contains("n_group must divide num_experts = 6, got 4"));
  CHECK_THROWS_WITH(moe::SigmoidTopK<double>(3, 6, {.n_group = 3, .topk_group = 4}, rng),
                    Catch::Contains("topk_group must be in [1, n_group = 3], got 4"));
  CHECK_THROWS_WITH(moe::SigmoidTopK<double>(3, 6, {.routed_scaling_factor = 0.0}, rng),
                    Catch::Contains("routed_scaling_factor must be positive"));
  CHECK_THROWS_WITH(moe::SoftmaxTopK<double>(3, 6, {.n_group = 4}, rng),
                    Catch::Contains("SoftmaxTopK: n_group must divide num_experts = 6, got 4"));
  CHECK_THROWS_WITH(moe::SoftmaxTopK<double>(3, 6, {.n_group = 3, .topk_group = 0}, rng),
                    Catch::Contains("SoftmaxTopK: topk_group must be in [1, n_group = 3], got 0"));
  CHECK_THROWS_WITH(moe::SoftmaxTopK<double>(3, 6, {.routed_scaling_factor = -1.0}, rng),
                    Catch::Contains("SoftmaxTopK: routed_scaling_factor must be positive"));
}

TEST_CASE("select_top_k matches sorting by value then index", "[routing][top_k]") {
  SECTION("float") { check_top_k_against_brute_force<float>(); }
  SECTION("double") { check_top_k_against_brute_force<double>(); }
}

TEST_CASE("select_top_k breaks ties towards the lower expert", "[routing][top_k]") {
  MatrixX<double> scores(2, 4);
  scores << 0.5, 1.0, 1.0, 0.5,  //
      0.0, 0.0, 0.0, 0.0;
  IndexMatrix experts;
  moe::select_top_k(scores, static_cast<const MatrixX<double>*>(nullptr), 3, experts);
  CHECK(experts.row(0) == (IndexMatrix(1, 3) << 1, 2, 0).finished());
  CHECK(experts.row(1) == (IndexMatrix(1, 3) << 0, 1, 2).finished());

  MatrixX<double> bias(1, 4);
  bias << 0.0, 0.0, 0.0, 0.75;  // expert 3 overtakes: 1.25 in row 0, 0.75 in row 1
  moe::select_top_k(scores, &bias, 2, experts);
  CHECK(experts.row(0) == (IndexMatrix(1, 2) << 3, 1).finished());
  CHECK(experts.row(1) == (IndexMatrix(1, 2) << 3, 0).finished());
}

TEST_CASE("select_top_k rejects k outside 1..N and a misshapen bias", "[routing][top_k][errors]") {
  MatrixX<float> scores = MatrixX<float>::Random(3, 4);
  IndexMatrix experts;
  const MatrixX<float>* none = nullptr;
  CHECK_THROWS_AS(moe::select_top_k(scores, none, 0, experts), moe::Error);
  CHECK_THROWS_WITH(moe::select_top_k(scores, none, 0, experts), Catch::Contains("k must be in [1, 4]") &&
                                                                     Catch::Contains("got 0"));
  CHECK_THROWS_WITH(moe::select_top_k(scores, none, 5, experts), Catch::Contains("got 5"));
  const MatrixX<float> bias = MatrixX<float>::Zero(1, 3);
  CHECK_THROWS_WITH(moe::select_top_k(scores, &bias, 2, experts), Catch::Contains("bias has shape 1x3, expected 1x4"));
}

TEST_CASE("gates_backward matches finite differences", "[routing][gates]") {
  const bool renormalize = GENERATE(false, true);
  const double scaling = GENERATE(1.0, 2.5);
  INFO("renormalize " << renormalize << ", scaling " << scaling);
  moe::Rng rng(11);
  const Index tokens = 6, n = 5, k = 3;
  MatrixX<double> scores(tokens, n), d_gates(tokens, k);
  moe::fill_uniform(scores, rng, 0.1, 1.0);
  moe::fill_uniform(d_gates, rng, -1.0, 1.0);
  IndexMatrix experts;
  moe::select_top_k(scores, static_cast<const MatrixX<double>*>(nullptr), k, experts);  // held fixed below

  MatrixX<double> gates;
  auto loss = [&] {
    moe::gather_gates(scores, experts, renormalize, scaling, gates);
    return (gates.array() * d_gates.array()).sum();
  };
  loss();
  MatrixX<double> d_scores = MatrixX<double>::Zero(tokens, n);
  moe::gates_backward(scores, experts, gates, renormalize, scaling, d_gates, d_scores);
  if (renormalize) CHECK(gates.rowwise().sum().isApproxToConstant(scaling, 1e-12));

  const auto e = moe::test::compare_gradient(loss, scores, d_scores, "scores");
  INFO(e.where);
  CHECK(e.worst <= 1.0);
  // Scores of experts that were not chosen get no gradient.
  for (Index t = 0; t < tokens; ++t)
    for (Index i = 0; i < n; ++i)
      if ((experts.row(t).array() != i).all()) CHECK(d_scores(t, i) == 0.0);
}

TEST_CASE("SoftmaxTopK gradients match finite differences", "[routing][softmax]") {
  const bool bias = GENERATE(false, true);
  moe::Rng rng(3);
  moe::SoftmaxTopK<double> router(5, 4, {.renormalize = false, .bias = bias}, rng);
  CHECK(router.named_parameters().size() == (bias ? 2u : 1u));
  MatrixX<double> x(7, 5);
  moe::fill_normal(x, rng, 0.0, 1.0);
  moe::test::check_router_gradients(router, x, 4);
}

TEST_CASE("SigmoidTopK gradients match finite differences", "[routing][sigmoid]") {
  const bool bias = GENERATE(false, true);
  moe::Rng rng(5);
  moe::SigmoidTopK<double> router(5, 4, {.bias = bias}, rng);
  CHECK(router.named_parameters().size() == (bias ? 2u : 1u));
  MatrixX<double> x(7, 5);
  moe::fill_normal(x, rng, 0.0, 2.0);
  moe::test::check_router_gradients(router, x, 6);
}

TEST_CASE("SigmoidTopK backward accepts empty d_logits", "[routing][sigmoid]") {
  moe::Rng rng(5);
  moe::SigmoidTopK<double> router(3, 4, {}, rng);
  const MatrixX<double> x = MatrixX<double>::Random(2, 3);
  router.forward(x);
  const MatrixX<double> d_scores = MatrixX<double>::Random(2, 4);
  const MatrixX<double> dx_empty = router.backward(d_scores, MatrixX<double>());
  const MatrixX<double> dx_zero = router.backward(d_scores, MatrixX<double>::Zero(2, 4));
  CHECK(dx_empty.isApprox(dx_zero));
  CHECK_THROWS_WITH(router.backward(MatrixX<double>::Zero(2, 3), MatrixX<double>()),
                    Catch::Contains("d_scores has shape 2x3, expected 2x4"));
}

TEST_CASE("Softmax scores are distributions, sigmoid scores lie in (0, 1)", "[routing][softmax][sigmoid]") {
  moe::Rng rng(9);
  moe::Matrix x(64, 16);
  moe::fill_normal(x, rng, 0.0, 3.0);

  moe::SoftmaxTopK<float> softmax(16, 8, {}, rng);
  const moe::Matrix& p = softmax.forward(x);
  CHECK(p.rows() == 64);
  CHECK(p.cols() == 8);
  CHECK((p.rowwise().sum().array() - 1.0f).abs().maxCoeff() < 1e-5f);
  CHECK(p.minCoeff() > 0.0f);
  CHECK_FALSE(softmax.renormalize());

  moe::SigmoidTopK<float> sigmoid(16, 8, {}, rng);
  const moe::Matrix& s = sigmoid.forward(x);
  CHECK(s.minCoeff() > 0.0f);
  CHECK(s.maxCoeff() < 1.0f);
  CHECK(s.isApprox(((-sigmoid.logits().array()).exp() + 1.0f).inverse().matrix()));
  CHECK(sigmoid.renormalize());
  // Not distributions: the row sums vary, so the gates have to be renormalised.
  CHECK((s.rowwise().sum().array() - 4.0f).abs().maxCoeff() > 0.01f);

  IndexMatrix experts;
  moe::select_top_k(s, static_cast<const moe::Matrix*>(nullptr), 2, experts);
  moe::Matrix gates;
  moe::gather_gates(s, experts, sigmoid.renormalize(), 1.0, gates);
  CHECK((gates.rowwise().sum().array() - 1.0f).abs().maxCoeff() < 1e-6f);
}

TEST_CASE("SigmoidTopK saturates without overflow", "[routing][sigmoid]") {
  moe::Rng rng(1);
  moe::SigmoidTopK<float> router(2, 3, {}, rng);
  moe::Matrix x(2, 2);
  x << 1e4f, -1e4f,  //
      -1e4f, 1e4f;
  const moe::Matrix& s = router.forward(x);
  CHECK(s.allFinite());
  CHECK(s.minCoeff() >= 0.0f);
  CHECK(s.maxCoeff() <= 1.0f);
  CHECK(router.backward(moe::Matrix::Ones(2, 3), moe::Matrix()).allFinite());
}

TEST_CASE("RandomRouter draws K distinct experts uniformly", "[routing][random]") {
  moe::Rng rng(1);
  const Index tokens = 20000, n = 8, k = 2;
  moe::RandomRouter<float> router(4, n, {.seed = 123}, rng);
  moe::Matrix x = moe::Matrix::Zero(tokens, 4);
  const moe::Matrix& scores = router.forward(x);
  IndexMatrix experts;
  router.select(scores, static_cast<const moe::Matrix*>(nullptr), k, experts);
  REQUIRE(experts.rows() == tokens);
  REQUIRE(experts.cols() == k);
  CHECK(experts.minCoeff() >= 0);
  CHECK(experts.maxCoeff() < n);
  Index repeated = 0;
  for (Index t = 0; t < tokens; ++t) repeated += experts(t, 0) == experts(t, 1);
  CHECK(repeated == 0);

  // Each row picks a given expert with probability p = K/N independently, so its count is
  // Binomial(T, p): sd = sqrt(T p (1 - p)) = sqrt(20000 * 0.25 * 0.75) ~ 61, i.e. 0.0031 in frequency.
  // 5 sd (0.0153) is exceeded by any of the 8 experts with probability ~ 8 * 6e-7; a bias that would
  // matter (an expert favoured by 10%, 0.025 in frequency) is 8 sd away.
  const Eigen::VectorXd frequency = moe::count_assignments(experts, n).cast<double>() / static_cast<double>(tokens);
  const double p = static_cast<double>(k) / static_cast<double>(n);
  const double tolerance = 5.0 * std::sqrt(p * (1.0 - p) / static_cast<double>(tokens));
  INFO("frequencies " << frequency.transpose());
  CHECK((frequency.array() - p).abs().maxCoeff() < tolerance);
  // Both slots are uniform too (the first draw is uniform over all N).
  const Eigen::VectorXd first = moe::count_assignments(experts.col(0), n).cast<double>() / static_cast<double>(tokens);
  CHECK((first.array() - 1.0 / static_cast<double>(n)).abs().maxCoeff() < 5.0 * std::sqrt(0.125 * 0.875 / 20000.0));
}

TEST_CASE("RandomRouter scores, gates, gradient and parameters", "[routing][random]") {
  moe::Rng rng(1);
  moe::RandomRouter<double> router(3, 4, {}, rng);
  const MatrixX<double> x = MatrixX<double>::Random(5, 3);
  const MatrixX<double>& scores = router.forward(x);
  CHECK(scores.rows() == 5);
  CHECK(scores.cols() == 4);
  CHECK(scores.isApproxToConstant(0.25));
  CHECK(router.logits().rows() == 5);
  CHECK(router.logits().isZero(0.0));
  CHECK(router.renormalize());
  CHECK(router.named_parameters().empty());

  IndexMatrix experts;
  router.select(scores, static_cast<const MatrixX<double>*>(nullptr), 3, experts);
  MatrixX<double> gates;
  moe::gather_gates(scores, experts, router.renormalize(), 1.0, gates);
  CHECK(gates.isApproxToConstant(1.0 / 3.0));

  // K = N: every row is a permutation of the experts.
  router.select(scores, static_cast<const MatrixX<double>*>(nullptr), 4, experts);
  for (Index t = 0; t < experts.rows(); ++t) {
    IndexMatrix row = experts.row(t);
    std::sort(row.data(), row.data() + row.size());
    CHECK(row == (IndexMatrix(1, 4) << 0, 1, 2, 3).finished());
  }

  const MatrixX<double>& dx = router.backward(MatrixX<double>::Random(5, 4), MatrixX<double>::Random(5, 4));
  CHECK(dx.rows() == 5);
  CHECK(dx.cols() == 3);
  CHECK(dx.isZero(0.0));

  CHECK_THROWS_WITH(router.select(scores, nullptr, 0, experts), Catch::Contains("k must be in [1, 4]"));
  CHECK_THROWS_WITH(router.select(scores, nullptr, 5, experts), Catch::Contains("got 5"));
  CHECK_THROWS_WITH(router.forward(MatrixX<double>::Zero(2, 4)), Catch::Contains("input has 4 columns, d_model is 3"));
}

TEST_CASE("RandomRouter is reproducible from its seed", "[routing][random]") {
  const moe::Matrix x = moe::Matrix::Zero(200, 2);
  auto draw = [&](std::uint64_t seed, std::uint64_t rng_seed) {
    moe::Rng rng(rng_seed);
    moe::RandomRouter<float> router(2, 16, {.seed = seed}, rng);
    IndexMatrix first, second;
    router.select(router.forward(x), nullptr, 3, first);
    router.select(router.forward(x), nullptr, 3, second);
    CHECK(first != second);  // the generator moves on between batches
    IndexMatrix both(400, 3);
    both << first, second;
    return both;
  };
  CHECK(draw(42, 1) == draw(42, 2));  // an explicit seed ignores the constructor's rng
  CHECK(draw(42, 1) != draw(43, 1));
  CHECK(draw(0, 7) == draw(0, 7));  // seed 0: drawn from the rng, which is seeded
  CHECK(draw(0, 7) != draw(0, 8));

  // The bias plays no part in random selection.
  moe::Rng rng(3);
  moe::RandomRouter<float> a(2, 16, {.seed = 5}, rng), b(2, 16, {.seed = 5}, rng);
  moe::Matrix bias = moe::Matrix::Zero(1, 16);
  bias(0, 0) = 100.0f;
  IndexMatrix with_bias, without;
  a.select(a.forward(x), &bias, 2, with_bias);
  b.select(b.forward(x), nullptr, 2, without);
  CHECK(with_bias == without);
}

TEST_CASE("Routers instantiate with float", "[routing][float]") {
  moe::Rng rng(2);
  moe::Matrix x(6, 5);
  moe::fill_normal(x, rng, 0.0, 1.0);
  moe::SigmoidTopK<float> sigmoid(5, 4, {.bias = true}, rng);
  sigmoid.forward(x);
  const moe::Matrix dx = sigmoid.backward(moe::Matrix::Ones(6, 4), moe::Matrix::Zero(6, 4));
  CHECK(dx.rows() == 6);
  CHECK(dx.cols() == 5);
  CHECK(dx.allFinite());
  CHECK(sigmoid.named_parameters()[0].parameter->grad.cwiseAbs().sum() > 0.0f);
}
