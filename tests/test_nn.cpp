#include <cmath>
#include <string>
#include <type_traits>

#include "gradient_check.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/dropout.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/layer_norm.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/sequential.hpp"
#include "random_matrix.hpp"

using moe::Index;
using moe::MatrixX;

static_assert(moe::Module<moe::ReLU<float>>);
static_assert(moe::Module<moe::GELU<double>>);
static_assert(moe::Module<moe::SiLU<float>>);
static_assert(moe::Module<moe::Dropout<float>>);
static_assert(moe::Module<moe::LayerNorm<double>>);
static_assert(moe::Module<moe::FeedForward<moe::GELU>>);
static_assert(moe::Module<moe::FeedForward<moe::ReLU, double>>);
static_assert(moe::Module<moe::SwiGLUFeedForward<float>>);
static_assert(moe::Module<moe::Sequential<moe::Linear<float>, moe::ReLU<float>>>);
static_assert(std::is_same_v<moe::FeedForward<moe::GELU>::Scalar, float>);

namespace {

using moe::test::random_matrix;

/// Checks names and shapes of a module's parameters, in order.
struct Expected {
  std::string name;
  Index rows, cols;
  bool is_vector;
};

template <class Scalar>
void check_parameters(const moe::ParameterList<Scalar>& params, const std::vector<Expected>& expected) {
  REQUIRE(params.size() == expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    INFO(expected[i].name);
    CHECK(params[i].name == expected[i].name);
    CHECK(params[i].parameter->value.rows() == expected[i].rows);
    CHECK(params[i].parameter->value.cols() == expected[i].cols);
    const moe::Shape shape = expected[i].is_vector ? moe::Shape{expected[i].cols} : moe::Shape{expected[i].rows, expected[i].cols};
    CHECK(params[i].parameter->shape == shape);
  }
}

}  // namespace

TEST_CASE("ReLU zeroes negatives and its gradient matches finite differences", "[nn][activation]") {
  moe::Rng rng(1);
  MatrixX<double> x = random_matrix(4, 6, rng);
  x = x.unaryExpr([](double v) { return v < 0 ? v - 0.1 : v + 0.1; });  // away from the kink at 0
  moe::ReLU<double> relu;
  CHECK(relu.named_parameters().empty());
  moe::test::check_module_gradients(relu, x, 2);

  moe::ReLU<float> relu_f;
  moe::Matrix xf(1, 3);
  xf << -2.0f, 0.0f, 3.0f;
  const moe::Matrix& y = relu_f.forward(xf);
  CHECK(y(0, 0) == 0.0f);
  CHECK(y(0, 1) == 0.0f);
  CHECK(y(0, 2) == 3.0f);
  const moe::Matrix& dx = relu_f.backward(moe::Matrix::Ones(1, 3));
  CHECK(dx(0, 0) == 0.0f);
  CHECK(dx(0, 1) == 0.0f);  // PyTorch's choice at 0
  CHECK(dx(0, 2) == 1.0f);
}

TEST_CASE("GELU is the exact erf form", "[nn][activation]") {
  moe::GELU<double> gelu;
  MatrixX<double> x(1, 3);
  x << 1.0, -1.0, 0.0;
  const MatrixX<double>& y = gelu.forward(x);
  CHECK(y(0, 0) == Approx(0.8413447460685429).epsilon(1e-14));
  CHECK(y(0, 1) == Approx(-0.15865525393145707).epsilon(1e-14));
  CHECK(y(0, 2) == 0.0);

  moe::GELU<float> gelu_f;
  moe::Matrix xf(1, 1);
  xf << 1.0f;
  CHECK(gelu_f.forward(xf)(0, 0) == Approx(0.8413447f).epsilon(1e-6));
}

TEST_CASE("GELU gradients match finite differences", "[nn][activation]") {
  moe::Rng rng(3);
  moe::GELU<double> gelu;
  moe::test::check_module_gradients(gelu, random_matrix(5, 4, rng, -3.0, 3.0), 4);
}

TEST_CASE("SiLU values, gradients and extreme inputs", "[nn][activation]") {
  moe::SiLU<double> silu;
  MatrixX<double> x(1, 3);
  x << 1.0, -1000.0, 1000.0;
  const MatrixX<double>& y = silu.forward(x);
  CHECK(y(0, 0) == Approx(0.7310585786300049).epsilon(1e-14));
  CHECK(y(0, 1) == 0.0);
  CHECK(y(0, 2) == 1000.0);
  const MatrixX<double>& dx = silu.backward(MatrixX<double>::Ones(1, 3));
  CHECK(std::isfinite(dx(0, 1)));
  CHECK(dx(0, 2) == Approx(1.0));

  moe::Rng rng(5);
  moe::test::check_module_gradients(silu, random_matrix(5, 4, rng, -4.0, 4.0), 6);

  moe::SiLU<float> silu_f;
  moe::Matrix xf(1, 1);
  xf << 1.0f;
  CHECK(silu_f.forward(xf)(0, 0) == Approx(0.7310586f).epsilon(1e-6));
}

TEST_CASE("Activations reject a gradient of the wrong shape", "[nn][activation][errors]") {
  moe::GELU<float> gelu;
  gelu.forward(moe::Matrix::Zero(2, 3));
  CHECK_THROWS_WITH(gelu.backward(moe::Matrix::Zero(2, 4)),
                    Catch::Contains("GELU: gradient has shape 2x4, expected 2x3"));
}

TEST_CASE("Dropout in eval mode is the identity", "[nn][dropout]") {
  moe::Rng rng(7);
  moe::Dropout<double> dropout(0.5, rng);
  CHECK(dropout.training());
  dropout.train(false);
  const MatrixX<double> x = random_matrix(4, 5, rng);
  CHECK(dropout.forward(x) == x);
  moe::test::check_module_gradients(dropout, x, 8);
}

TEST_CASE("Dropout in train mode drops a fraction p and scales the rest", "[nn][dropout]") {
  moe::Rng rng(9);
  const double p = 0.3;
  moe::Dropout<float> dropout(p, rng);
  moe::Matrix x(200, 500);
  moe::fill_uniform(x, rng, 1.0, 2.0);  // never 0, so a 0 in the output is a dropped element
  const moe::Matrix y = dropout.forward(x);

  const auto dropped = static_cast<double>((y.array() == 0.0f).count());
  CHECK(dropped / static_cast<double>(x.size()) == Approx(p).margin(0.01));
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  bool kept_scaled = true;
  for (Index i = 0; i < x.rows(); ++i)
    for (Index j = 0; j < x.cols(); ++j)
      if (y(i, j) != 0.0f && std::abs(y(i, j) - x(i, j) * scale) > 1e-6f) kept_scaled = false;
  CHECK(kept_scaled);

  // backward applies the same mask and scale: with dy = x it reproduces y.
  const moe::Matrix& dx = dropout.backward(x);
  CHECK(dx == y);

  // the next forward draws a new mask.
  CHECK(dropout.forward(x) != y);
}

TEST_CASE("Dropout owns its stream: the same seed gives the same mask", "[nn][dropout]") {
  moe::Rng a(11), b(11);
  moe::Dropout<double> first(0.5, a);
  moe::Dropout<double> second(0.5, b);
  a();  // later draws from the parent generator do not change the masks
  const MatrixX<double> x = MatrixX<double>::Ones(8, 16);
  CHECK(first.forward(x) == second.forward(x));

  moe::Rng c(12);
  moe::Dropout<double> other(0.5, c);
  CHECK(other.forward(x) != first.forward(x));
}

TEST_CASE("Dropout rejects p outside 0 <= p < 1", "[nn][dropout][errors]") {
  moe::Rng rng(1);
  CHECK_THROWS_WITH(moe::Dropout<float>(1.0, rng), Catch::Contains("Dropout: p must be in [0, 1), got 1"));
  CHECK_THROWS_AS(moe::Dropout<float>(-0.1, rng), moe::Error);
  CHECK_NOTHROW(moe::Dropout<float>(0.0, rng));
}

TEST_CASE("LayerNorm normalises each row with default parameters", "[nn][layer_norm]") {
  moe::Rng rng(13);
  moe::LayerNorm<float> norm(64);
  moe::Matrix x(5, 64);
  moe::fill_uniform(x, rng, -3.0, 7.0);
  const moe::Matrix& y = norm.forward(x);
  for (Index t = 0; t < y.rows(); ++t) {
    const float mean = y.row(t).mean();
    const float variance = (y.row(t).array() - mean).square().mean();
    CHECK(mean == Approx(0.0f).margin(1e-5));
    CHECK(variance == Approx(1.0f).epsilon(1e-3));  // biased variance, slightly below 1 by eps
  }
  CHECK((norm.weight().value.array() == 1.0f).all());
  CHECK((norm.bias().value.array() == 0.0f).all());
}

TEST_CASE("LayerNorm gradients match finite differences", "[nn][layer_norm]") {
  moe::Rng rng(14);
  moe::LayerNorm<double> norm(7);
  moe::fill_uniform(norm.weight().value, rng, 0.5, 1.5);
  moe::fill_uniform(norm.bias().value, rng, -0.5, 0.5);
  moe::test::check_module_gradients(norm, random_matrix(4, 7, rng, -2.0, 2.0), 15);
  check_parameters(norm.named_parameters(), {{"weight", 1, 7, true}, {"bias", 1, 7, true}});
}

TEST_CASE("LayerNorm rejects an input of the wrong width", "[nn][layer_norm][errors]") {
  moe::LayerNorm<float> norm(8);
  CHECK_THROWS_WITH(norm.forward(moe::Matrix::Zero(2, 6)), Catch::Contains("input has 6 columns, features is 8"));
  CHECK_THROWS_WITH(moe::LayerNorm<float>(-1), Catch::Contains("features must be positive, got -1"));
}

TEST_CASE("Sequential chains its layers and names them by index", "[nn][sequential]") {
  moe::Rng rng(16);
  moe::Sequential net(moe::Linear<double>(5, 8, rng), moe::GELU<double>(), moe::Linear<double>(8, 3, rng));
  static_assert(std::is_same_v<decltype(net)::Scalar, double>);
  static_assert(std::is_same_v<std::remove_reference_t<decltype(net.get<1>())>, moe::GELU<double>>);
  CHECK(net.size() == 3);
  check_parameters(net.named_parameters(),
                   {{"0.weight", 8, 5, false},
                    {"0.bias", 1, 8, true},
                    {"2.weight", 3, 8, false},
                    {"2.bias", 1, 3, true}});
  moe::test::check_module_gradients(net, random_matrix(4, 5, rng), 17);

  // the same as running the layers by hand
  const MatrixX<double> x = random_matrix(3, 5, rng);
  const MatrixX<double> by_hand = net.get<2>().forward(net.get<1>().forward(net.get<0>().forward(x)));
  CHECK(net.forward(x) == by_hand);
}

TEST_CASE("Sequential forwards train mode to its children", "[nn][sequential]") {
  moe::Rng rng(18);
  moe::Sequential net(moe::Linear<float>(4, 4, rng), moe::Dropout<float>(0.5, rng));
  CHECK(net.get<1>().training());
  net.train(false);
  CHECK_FALSE(net.get<1>().training());
  const moe::Matrix x = moe::Matrix::Ones(2, 4);
  const moe::Matrix first = net.forward(x);
  CHECK(net.forward(x) == first);
  check_parameters(net.named_parameters(), {{"0.weight", 4, 4, false}, {"0.bias", 1, 4, true}});
}

TEST_CASE("FeedForward names its parameters fc1 and fc2", "[nn][feed_forward]") {
  moe::Rng rng(19);
  moe::FeedForward<moe::GELU> ffn(6, {.hidden = 10}, rng);
  CHECK(ffn.in_features() == 6);
  CHECK(ffn.out_features() == 6);
  check_parameters(ffn.named_parameters(), {{"fc1.weight", 10, 6, false},
                                            {"fc1.bias", 1, 10, true},
                                            {"fc2.weight", 6, 10, false},
                                            {"fc2.bias", 1, 6, true}});

  moe::FeedForward<moe::ReLU> narrow(6, {.hidden = 10, .out_features = 3, .bias = false}, rng);
  CHECK(narrow.out_features() == 3);
  check_parameters(narrow.named_parameters(), {{"fc1.weight", 10, 6, false}, {"fc2.weight", 3, 10, false}});
  CHECK(narrow.forward(moe::Matrix::Ones(2, 6)).cols() == 3);
}

TEST_CASE("FeedForward gradients match finite differences", "[nn][feed_forward]") {
  moe::Rng rng(20);
  SECTION("GELU") {
    moe::FeedForward<moe::GELU, double> ffn(5, {.hidden = 7}, rng);
    moe::test::check_module_gradients(ffn, random_matrix(4, 5, rng), 21);
  }
  SECTION("ReLU with bias") {
    moe::FeedForward<moe::ReLU, double> ffn(5, {.hidden = 7, .out_features = 3}, rng);
    moe::test::check_module_gradients(ffn, random_matrix(4, 5, rng), 22);
  }
  SECTION("ReLU without bias") {
    moe::FeedForward<moe::ReLU, double> ffn(5, {.hidden = 7, .bias = false}, rng);
    moe::test::check_module_gradients(ffn, random_matrix(4, 5, rng), 23);
  }
  SECTION("GELU with dropout, in eval mode") {
    moe::FeedForward<moe::GELU, double> ffn(5, {.hidden = 7, .dropout = 0.5}, rng);
    ffn.train(false);
    moe::test::check_module_gradients(ffn, random_matrix(4, 5, rng), 24);
  }
}

TEST_CASE("FeedForward applies dropout only in train mode", "[nn][feed_forward]") {
  moe::Rng rng(25);
  moe::FeedForward<moe::GELU> ffn(8, {.hidden = 32, .dropout = 0.5}, rng);
  moe::Matrix x(4, 8);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  const moe::Matrix first = ffn.forward(x);
  CHECK(ffn.forward(x) != first);
  ffn.train(false);
  const moe::Matrix eval = ffn.forward(x);
  CHECK(ffn.forward(x) == eval);

  // the weights do not depend on whether dropout is on
  moe::Rng a(26), b(26);
  moe::FeedForward<moe::GELU> with(8, {.hidden = 32, .dropout = 0.5}, a);
  moe::FeedForward<moe::GELU> without(8, {.hidden = 32}, b);
  const auto pw = with.named_parameters();
  const auto po = without.named_parameters();
  for (std::size_t i = 0; i < pw.size(); ++i) CHECK(pw[i].parameter->value == po[i].parameter->value);
}

TEST_CASE("FeedForward and SwiGLUFeedForward reject hidden = 0", "[nn][feed_forward][errors]") {
  moe::Rng rng(1);
  CHECK_THROWS_WITH(moe::FeedForward<moe::GELU>(4, {}, rng),
                    Catch::Contains("FeedForward: Options::hidden must be positive, got 0"));
  CHECK_THROWS_WITH(moe::SwiGLUFeedForward<float>(4, {}, rng),
                    Catch::Contains("SwiGLUFeedForward: Options::hidden must be positive, got 0"));
  CHECK_THROWS_WITH(moe::FeedForward<moe::ReLU>(4, {.hidden = 4, .dropout = 1.0}, rng),
                    Catch::Contains("Dropout: p must be in [0, 1)"));
}

TEST_CASE("SwiGLUFeedForward names, shapes and gradients", "[nn][feed_forward][swiglu]") {
  moe::Rng rng(27);
  moe::SwiGLUFeedForward<float> swiglu(6, {.hidden = 16}, rng);
  CHECK(swiglu.in_features() == 6);
  CHECK(swiglu.out_features() == 6);
  check_parameters(swiglu.named_parameters(),
                   {{"gate_proj.weight", 16, 6, false},
                    {"up_proj.weight", 16, 6, false},
                    {"down_proj.weight", 6, 16, false}});
  CHECK(swiglu.forward(moe::Matrix::Ones(3, 6)).rows() == 3);

  SECTION("without bias") {
    moe::SwiGLUFeedForward<double> ffn(5, {.hidden = 8}, rng);
    moe::test::check_module_gradients(ffn, random_matrix(4, 5, rng, -2.0, 2.0), 28);
  }
  SECTION("with bias and a different output width") {
    moe::SwiGLUFeedForward<double> ffn(5, {.hidden = 8, .out_features = 3, .bias = true}, rng);
    CHECK(ffn.named_parameters().size() == 6);
    CHECK(ffn.named_parameters()[5].name == "down_proj.bias");
    moe::test::check_module_gradients(ffn, random_matrix(4, 5, rng, -2.0, 2.0), 29);
  }
}

TEST_CASE("SwiGLUFeedForward computes down(silu(gate x) * up x)", "[nn][feed_forward][swiglu]") {
  moe::Rng rng(30);
  moe::SwiGLUFeedForward<double> ffn(4, {.hidden = 6}, rng);
  const auto params = ffn.named_parameters();
  const auto& gate = params[0].parameter->value;
  const auto& up = params[1].parameter->value;
  const auto& down = params[2].parameter->value;
  const MatrixX<double> x = random_matrix(3, 4, rng);
  const MatrixX<double> g = x * gate.transpose();
  const MatrixX<double> silu = g.unaryExpr([](double v) { return v / (1.0 + std::exp(-v)); });
  const MatrixX<double> expected = silu.cwiseProduct(x * up.transpose()) * down.transpose();
  CHECK((ffn.forward(x) - expected).cwiseAbs().maxCoeff() < 1e-12);
}

namespace {

/// Filling input_buffer(rows, cols) with x and calling forward_in_place() must be forward(x): same output and, after
/// it, the same backward and parameter gradients (MoELayer gathers each expert's rows this way).
template <class M>
void check_forward_in_place(M& by_copy, M& in_place, const MatrixX<float>& x, const MatrixX<float>& dy) {
  const MatrixX<float> y = by_copy.forward(x);
  const MatrixX<float> dx = by_copy.backward(dy);
  in_place.input_buffer(x.rows(), x.cols()) = x;
  CHECK(in_place.forward_in_place() == y);
  CHECK(in_place.backward(dy) == dx);
  const auto a = by_copy.named_parameters(), b = in_place.named_parameters();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i].parameter->grad == b[i].parameter->grad);
}

}  // namespace

TEST_CASE("forward_in_place on input_buffer(rows, cols) is forward", "[nn][in_place]") {
  moe::Rng data_rng(3);
  MatrixX<float> x(300, 6), dy6(300, 6), dy4(300, 4);  // 300 rows: more than one of Linear's row chunks
  moe::fill_uniform(x, data_rng, -2.0, 2.0);
  moe::fill_uniform(dy6, data_rng, -1.0, 1.0);
  moe::fill_uniform(dy4, data_rng, -1.0, 1.0);
  SECTION("Linear") {
    moe::Rng a(1), b(1);
    moe::Linear<float> by_copy(6, 4, a), in_place(6, 4, b);
    check_forward_in_place(by_copy, in_place, x, dy4);
  }
  SECTION("FeedForward<GELU>") {
    moe::Rng a(1), b(1);
    moe::FeedForward<moe::GELU> by_copy(6, {.hidden = 5}, a), in_place(6, {.hidden = 5}, b);
    check_forward_in_place(by_copy, in_place, x, dy6);
  }
  SECTION("the width is checked") {
    moe::Rng rng(1);
    moe::Linear<float> layer(6, 4, rng);
    layer.input_buffer(3, 5);
    CHECK_THROWS_WITH(layer.forward_in_place(), Catch::Contains("input has 5 columns, in_features is 6"));
  }
}
