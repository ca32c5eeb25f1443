#include <string>

#include "gradient_check.hpp"
#include "moe/routing/mlp_router.hpp"
#include "moe/routing/routing.hpp"
#include "random_matrix.hpp"

using moe::Index;
using moe::MatrixX;

static_assert(moe::Router<moe::MLPRouter<float>>);
static_assert(moe::Router<moe::MLPRouter<double>>);

namespace {

using moe::test::random_matrix;

}  // namespace

TEST_CASE("MLPRouter names its Linears as torch.nn.Sequential would", "[routing][mlp_router]") {
  moe::Rng rng(1);
  SECTION("without dropout: net.0, net.2, net.4") {
    moe::MLPRouter<float> router(6, 3, {.hidden = {5, 4}}, rng);
    const auto params = router.named_parameters();
    REQUIRE(params.size() == 6);
    const std::string names[] = {"net.0.weight", "net.0.bias", "net.2.weight",
                                 "net.2.bias",   "net.4.weight", "net.4.bias"};
    for (std::size_t i = 0; i < 6; ++i) CHECK(params[i].name == names[i]);
    CHECK(params[0].parameter->value.rows() == 5);
    CHECK(params[0].parameter->value.cols() == 6);
    CHECK(params[1].parameter->shape == moe::Shape{5});
    CHECK(params[0].parameter->shape == moe::Shape{5, 6});
    CHECK(params[4].parameter->value.rows() == 3);
    CHECK(params[4].parameter->value.cols() == 4);
  }
  SECTION("the 784-256-128-4 gating MLP with dropout: net.0, net.3, net.6") {
    moe::MLPRouter<float> router(784, 4, {.hidden = {256, 128}, .dropout = 0.2}, rng);
    const auto params = router.named_parameters();
    REQUIRE(params.size() == 6);
    CHECK(params[0].name == "net.0.weight");
    CHECK(params[0].parameter->value.rows() == 256);
    CHECK(params[0].parameter->value.cols() == 784);
    CHECK(params[2].name == "net.3.weight");
    CHECK(params[2].parameter->value.rows() == 128);
    CHECK(params[3].name == "net.3.bias");
    CHECK(params[4].name == "net.6.weight");
    CHECK(params[4].parameter->value.rows() == 4);
    CHECK(params[4].parameter->value.cols() == 128);
    CHECK(params[5].name == "net.6.bias");
    CHECK(params[5].parameter->value.cols() == 4);
  }
  SECTION("no hidden layer: one Linear") {
    moe::MLPRouter<float> router(6, 3, {}, rng);
    const auto params = router.named_parameters();
    REQUIRE(params.size() == 2);
    CHECK(params[0].name == "net.0.weight");
  }
}

TEST_CASE("MLPRouter scores are a softmax over the experts", "[routing][mlp_router]") {
  moe::Rng rng(2);
  moe::MLPRouter<float> router(8, 5, {.hidden = {16}, .dropout = 0.2}, rng);
  moe::Matrix x(10, 8);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  const moe::Matrix& scores = router.forward(x);
  REQUIRE(scores.rows() == 10);
  REQUIRE(scores.cols() == 5);
  CHECK((scores.array() > 0.0f).all());
  for (Index t = 0; t < scores.rows(); ++t) CHECK(scores.row(t).sum() == Approx(1.0f).epsilon(1e-5));

  // softmax of the logits, row by row
  const moe::Matrix& logits = router.logits();
  const Eigen::RowVectorXf expected = (logits.row(3).array() - logits.row(3).maxCoeff()).exp();
  CHECK((scores.row(3) - expected / expected.sum()).cwiseAbs().maxCoeff() < 1e-6f);

  moe::IndexMatrix experts;
  moe::select_top_k<float>(scores, nullptr, 2, experts);
  Index best = 0;
  scores.row(3).maxCoeff(&best);
  CHECK(experts(3, 0) == best);
  CHECK_FALSE(router.renormalize());
}

TEST_CASE("MLPRouter gradients match finite differences", "[routing][mlp_router]") {
  moe::Rng rng(3);
  SECTION("two hidden layers") {
    moe::MLPRouter<double> router(6, 4, {.hidden = {7, 5}}, rng);
    moe::test::check_router_gradients(router, random_matrix(5, 6, rng), 7);
  }
  SECTION("with dropout, in eval mode") {
    moe::MLPRouter<double> router(6, 4, {.hidden = {7, 5}, .dropout = 0.2, .renormalize = true}, rng);
    router.train(false);
    CHECK(router.renormalize());
    moe::test::check_router_gradients(router, random_matrix(5, 6, rng), 7);
  }
  SECTION("no hidden layer") {
    moe::MLPRouter<double> router(6, 4, {}, rng);
    moe::test::check_router_gradients(router, random_matrix(5, 6, rng), 7);
  }
}

TEST_CASE("MLPRouter backward takes an empty d_logits", "[routing][mlp_router]") {
  moe::Rng rng(4);
  moe::MLPRouter<double> router(6, 3, {.hidden = {5}}, rng);
  const MatrixX<double> x = random_matrix(4, 6, rng);
  const MatrixX<double> d_scores = random_matrix(4, 3, rng);
  router.forward(x);
  const MatrixX<double> with_zero = router.backward(d_scores, MatrixX<double>::Zero(4, 3));
  const MatrixX<double> with_empty = router.backward(d_scores, MatrixX<double>());
  CHECK(with_empty == with_zero);
  CHECK_THROWS_WITH(router.backward(MatrixX<double>::Zero(4, 2), MatrixX<double>()),
                    Catch::Contains("d_scores has shape 4x2, expected 4x3"));
  CHECK_THROWS_WITH(router.backward(d_scores, MatrixX<double>::Zero(3, 3)),
                    Catch::Contains("d_logits has shape 3x3, expected 4x3"));
}

TEST_CASE("MLPRouter dropout is active only in train mode", "[routing][mlp_router]") {
  moe::Rng rng(5);
  moe::MLPRouter<float> router(8, 4, {.hidden = {64}, .dropout = 0.5}, rng);
  moe::Matrix x(6, 8);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  const moe::Matrix first = router.forward(x);
  CHECK(router.forward(x) != first);
  router.train(false);
  const moe::Matrix eval = router.forward(x);
  CHECK(router.forward(x) == eval);

  // the weights do not depend on whether dropout is on
  moe::Rng a(6), b(6);
  moe::MLPRouter<float> with(8, 4, {.hidden = {16, 8}, .dropout = 0.5}, a);
  moe::MLPRouter<float> without(8, 4, {.hidden = {16, 8}}, b);
  const auto pw = with.named_parameters();
  const auto po = without.named_parameters();
  REQUIRE(pw.size() == po.size());
  for (std::size_t i = 0; i < pw.size(); ++i) CHECK(pw[i].parameter->value == po[i].parameter->value);
}

TEST_CASE("MLPRouter rejects bad options", "[routing][mlp_router][errors]") {
  moe::Rng rng(7);
  CHECK_THROWS_WITH(moe::MLPRouter<float>(8, 4, {.hidden = {16, 0}}, rng),
                    Catch::Contains("MLPRouter: hidden[1] must be positive, got 0"));
  CHECK_THROWS_WITH(moe::MLPRouter<float>(8, 4, {.hidden = {16}, .dropout = 1.0}, rng),
                    Catch::Contains("MLPRouter: dropout must be in [0, 1), got 1"));
  CHECK_THROWS_AS(moe::MLPRouter<float>(8, 0, {}, rng), moe::Error);
}
