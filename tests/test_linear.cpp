#include "gradient_check.hpp"
#include "moe/nn/linear.hpp"

using moe::Index;
using moe::MatrixX;

TEST_CASE("Linear gradients match finite differences", "[nn][linear]") {
  moe::Rng rng(1);
  moe::Linear<double> layer(5, 3, rng);
  MatrixX<double> x(4, 5);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  moe::test::check_module_gradients(layer, x, 2);
}

TEST_CASE("Linear without bias has only a weight", "[nn][linear]") {
  moe::Rng rng(1);
  moe::Linear<float> layer(5, 3, rng, false);
  const auto params = layer.named_parameters();
  REQUIRE(params.size() == 1);
  CHECK(params[0].name == "weight");
  CHECK(params[0].parameter->value.rows() == 3);
  CHECK(params[0].parameter->value.cols() == 5);
}

TEST_CASE("Linear initialises within PyTorch's bound", "[nn][linear]") {
  moe::Rng rng(3);
  moe::Linear<float> layer(64, 32, rng);
  const float bound = 1.0f / 8.0f;
  CHECK(layer.weight().value.cwiseAbs().maxCoeff() <= bound);
  CHECK(layer.weight().value.cwiseAbs().maxCoeff() > 0.9f * bound);
  CHECK(layer.bias().value.cwiseAbs().maxCoeff() <= bound);
  CHECK(layer.bias().shape == moe::Shape{32});
  CHECK(layer.weight().shape == moe::Shape{32, 64});
}

TEST_CASE("Linear rejects an input of the wrong width", "[nn][linear][errors]") {
  moe::Rng rng(1);
  moe::Linear<float> layer(5, 3, rng);
  moe::Matrix x(2, 4);
  CHECK_THROWS_WITH(layer.forward(x), Catch::Contains("input has 4 columns, in_features is 5"));
}
