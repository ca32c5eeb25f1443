#include <cmath>

#include "gradient_check.hpp"
#include "moe/core/image_shape.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/module.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/conv2d.hpp"
#include "moe/nn/pool.hpp"
#include "moe/nn/sequential.hpp"

using moe::ImageShape;
using moe::Index;
using moe::MatrixX;

static_assert(moe::Module<moe::Conv2d<float>>);
static_assert(moe::Module<moe::MaxPool2d<double>>);
static_assert(moe::Module<moe::AdaptiveMaxPool2d<float>>);

namespace {

/// The definition of a convolution (cross-correlation, as PyTorch), one output value at a time.
template <class Scalar>
MatrixX<Scalar> direct_conv(const MatrixX<Scalar>& x, ImageShape in, moe::Conv2d<Scalar>& conv, bool bias) {
  const ImageShape out = conv.output_shape();
  const Index k = conv.kernel_size(), s = conv.stride(), p = conv.padding();
  const auto& w = conv.weight().value;
  MatrixX<Scalar> y(x.rows(), out.size());
  for (Index n = 0; n < x.rows(); ++n)
    for (Index o = 0; o < out.channels; ++o)
      for (Index oy = 0; oy < out.height; ++oy)
        for (Index ox = 0; ox < out.width; ++ox) {
          double sum = bias ? static_cast<double>(conv.bias().value(0, o)) : 0.0;
          for (Index c = 0; c < in.channels; ++c)
            for (Index ki = 0; ki < k; ++ki)
              for (Index kj = 0; kj < k; ++kj) {
                const Index iy = oy * s - p + ki, ix = ox * s - p + kj;
                if (iy < 0 || iy >= in.height || ix < 0 || ix >= in.width) continue;
                sum += static_cast<double>(w(o, (c * k + ki) * k + kj)) *
                       static_cast<double>(x(n, (c * in.height + iy) * in.width + ix));
              }
          y(n, (o * out.height + oy) * out.width + ox) = static_cast<Scalar>(sum);
        }
  return y;
}

template <class Scalar>
MatrixX<Scalar> random_images(Index n, ImageShape shape, std::uint64_t seed) {
  moe::Rng rng(seed);
  MatrixX<Scalar> x(n, shape.size());
  moe::fill_uniform(x, rng, -1.0, 1.0);
  return x;
}

/// One image whose single channel is `values`, row by row.
MatrixX<double> image_of(std::initializer_list<double> values) {
  return MatrixX<double>::Map(values.begin(), 1, values.size());
}

}  // namespace

TEST_CASE("Conv2d gradients match finite differences", "[nn][conv]") {
  struct Case {
    Index stride, padding;
    bool bias;
    Index kernel;
  };
  const Case cases[] = {{1, 0, true, 3},  {1, 1, true, 3},  {2, 0, true, 3},
                        {2, 1, false, 3}, {1, 1, false, 2}, {2, 1, true, 2}};
  const ImageShape in{2, 5, 6};
  for (const Case& c : cases) {
    INFO("stride " << c.stride << ", padding " << c.padding << ", bias " << c.bias << ", kernel " << c.kernel);
    moe::Rng rng(7);
    moe::Conv2d<double> conv(in, 3, c.kernel, rng, {.stride = c.stride, .padding = c.padding, .bias = c.bias});
    moe::test::check_module_gradients(conv, random_images<double>(3, in, 11), 12);
  }
}

TEST_CASE("Conv2d forward equals the nested-loop definition", "[nn][conv]") {
  const ImageShape in{3, 7, 6};
  for (Index stride : {1, 2})
    for (Index padding : {0, 1, 2})
      for (bool bias : {true, false}) {
        INFO("stride " << stride << ", padding " << padding << ", bias " << bias);
        moe::Rng rng(3);
        moe::Conv2d<double> conv(in, 4, 3, rng, {.stride = stride, .padding = padding, .bias = bias});
        const MatrixX<double> x = random_images<double>(5, in, 4);
        const MatrixX<double> y = conv.forward(x);
        CHECK((y - direct_conv(x, in, conv, bias)).cwiseAbs().maxCoeff() < 1e-12);

        moe::Rng rng_float(3);
        moe::Conv2d<float> conv_float(in, 4, 3, rng_float, {.stride = stride, .padding = padding, .bias = bias});
        const MatrixX<float> x_float = x.cast<float>();
        CHECK((conv_float.forward(x_float) - direct_conv(x_float, in, conv_float, bias)).cwiseAbs().maxCoeff() < 1e-5f);
      }
}

TEST_CASE("Conv2d output shapes follow PyTorch's formula", "[nn][conv]") {
  moe::Rng rng(1);
  CHECK(moe::Conv2d<float>({3, 32, 32}, 8, 3, rng, {.padding = 1}).output_shape() == ImageShape{8, 32, 32});
  CHECK(moe::Conv2d<float>({3, 32, 32}, 8, 3, rng, {.stride = 2, .padding = 1}).output_shape() ==
        ImageShape{8, 16, 16});
  CHECK(moe::Conv2d<float>({1, 28, 28}, 4, 5, rng).output_shape() == ImageShape{4, 24, 24});
  CHECK(moe::Conv2d<float>({1, 7, 8}, 2, 3, rng, {.stride = 2}).output_shape() == ImageShape{2, 3, 3});
  CHECK(moe::Conv2d<float>({1, 2, 2}, 2, 3, rng, {.padding = 1}).output_shape() == ImageShape{2, 2, 2});
}

TEST_CASE("Conv2d initialises within PyTorch's bound with PyTorch's names and shapes", "[nn][conv]") {
  moe::Rng rng(5);
  moe::Conv2d<float> conv({16, 8, 8}, 32, 3, rng);
  const float bound = 1.0f / 12.0f;  // 1 / sqrt(16 * 3 * 3)
  CHECK(conv.weight().value.rows() == 32);
  CHECK(conv.weight().value.cols() == 144);
  CHECK(conv.weight().value.cwiseAbs().maxCoeff() <= bound);
  CHECK(conv.weight().value.cwiseAbs().maxCoeff() > 0.9f * bound);
  CHECK(conv.bias().value.cwiseAbs().maxCoeff() <= bound);
  CHECK(conv.weight().shape == moe::Shape{32, 16, 3, 3});
  CHECK(conv.bias().shape == moe::Shape{32});
  const auto params = conv.named_parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].name == "weight");
  CHECK(params[1].name == "bias");

  moe::Conv2d<float> no_bias({16, 8, 8}, 32, 3, rng, {.bias = false});
  REQUIRE(no_bias.named_parameters().size() == 1);
  CHECK(no_bias.named_parameters()[0].name == "weight");
}

TEST_CASE("Conv2d rejects bad shapes", "[nn][conv][errors]") {
  moe::Rng rng(1);
  CHECK_THROWS_WITH(moe::Conv2d<float>({3, 2, 2}, 4, 3, rng),
                    Catch::Contains("kernel 3 is larger than the padded input 2x2"));
  CHECK_THROWS_WITH(moe::Conv2d<float>({3, 8, 8}, 0, 3, rng), Catch::Contains("out_channels must be positive, got 0"));
  CHECK_THROWS_WITH(moe::Conv2d<float>({3, 8, 8}, 4, 3, rng, {.stride = 0}),
                    Catch::Contains("stride must be positive, got 0"));
  moe::Conv2d<float> conv({3, 8, 8}, 4, 3, rng);
  moe::Matrix x(2, 100);
  CHECK_THROWS_WITH(conv.forward(x), Catch::Contains("input has 100 columns, expected 3x8x8 = 192"));
  conv.forward(moe::Matrix::Zero(2, 192));
  CHECK_THROWS_WITH(conv.backward(moe::Matrix::Zero(2, 5)), Catch::Contains("gradient has shape 2x5, expected 2x144"));
}

TEST_CASE("Conv2d gives the same bits on 1 and 2 threads", "[nn][conv][threads]") {
  const ImageShape in{3, 9, 9};
  for (Index batch : {1, 5, 19}) {
    INFO("batch " << batch);
    const MatrixX<float> x = random_images<float>(batch, in, 8);
    MatrixX<float> y[2], dx[2], dw[2], db[2];
    for (int threads : {1, 2}) {
      const int previous = moe::set_num_threads(threads);
      moe::Rng rng(9);
      moe::Conv2d<float> conv(in, 6, 3, rng, {.stride = 2, .padding = 1});
      const MatrixX<float> dy = random_images<float>(batch, conv.output_shape(), 10);
      const auto t = static_cast<std::size_t>(threads - 1);
      y[t] = conv.forward(x);
      dx[t] = conv.backward(dy);
      dw[t] = conv.weight().grad;
      db[t] = conv.bias().grad;
      moe::set_num_threads(previous);
    }
    CHECK(y[0] == y[1]);
    CHECK(dx[0] == dx[1]);
    CHECK(dw[0] == dw[1]);
    CHECK(db[0] == db[1]);
  }
}

TEST_CASE("MaxPool2d forward and backward on hand-computed cases", "[nn][pool]") {
  SECTION("2x2 windows of a 4x4 image") {
    moe::MaxPool2d<double> pool({1, 4, 4}, 2);
    REQUIRE(pool.output_shape() == ImageShape{1, 2, 2});
    const MatrixX<double> x = image_of({1, 5, 2, 0,  //
                                        3, 4, 8, 1,  //
                                        0, 0, 7, 9,  //
                                        6, 2, 3, 9.5});
    CHECK(pool.forward(x) == image_of({5, 8, 6, 9.5}));
    CHECK(pool.backward(image_of({1, 2, 3, 4})) == image_of({0, 1, 0, 0,  //
                                                             0, 0, 2, 0,  //
                                                             0, 0, 0, 0,  //
                                                             3, 0, 0, 4}));
  }
  SECTION("ties go to the first maximum in row-major order") {
    moe::MaxPool2d<double> pool({1, 2, 2}, 2);
    CHECK(pool.forward(image_of({1, 3, 3, 2})) == image_of({3}));
    CHECK(pool.backward(image_of({1})) == image_of({0, 1, 0, 0}));
  }
  SECTION("overlapping windows (kernel 2, stride 1) sum their gradients at a shared maximum") {
    moe::MaxPool2d<double> pool({1, 3, 3}, 2, 1);
    REQUIRE(pool.output_shape() == ImageShape{1, 2, 2});
    const MatrixX<double> x = image_of({1, 2, 3,  //
                                        4, 9, 5,  //
                                        6, 7, 8});
    CHECK(pool.forward(x) == image_of({9, 9, 9, 9}));
    CHECK(pool.backward(image_of({1, 2, 3, 4})) == image_of({0, 0, 0, 0, 10, 0, 0, 0, 0}));
  }
  SECTION("odd sizes drop the last row and column, channels pool separately") {
    moe::MaxPool2d<double> pool({2, 3, 3}, 2);
    REQUIRE(pool.output_shape() == ImageShape{2, 1, 1});
    CHECK(pool.forward(image_of({1, 2, 99, 3, 4, 99, 99, 99, 99,  //
                                 -1, -2, 99, -3, -4, 99, 99, 99, 99})) == image_of({4, -1}));
  }
  SECTION("NaN propagates, as in PyTorch") {
    moe::MaxPool2d<double> pool({1, 2, 2}, 2);
    CHECK(std::isnan(pool.forward(image_of({1, NAN, 3, 2}))(0, 0)));
  }
}

TEST_CASE("AdaptiveMaxPool2d uses PyTorch's overlapping windows", "[nn][pool]") {
  SECTION("7x7 -> 2x2: windows [0, 4) and [3, 7) share row and column 3") {
    moe::AdaptiveMaxPool2d<double> pool({1, 7, 7}, 2);
    REQUIRE(pool.output_shape() == ImageShape{1, 2, 2});
    MatrixX<double> x = MatrixX<double>::Zero(1, 49);
    x(0, 3 * 7 + 3) = 4;  // in all four windows
    x(0, 0 * 7 + 6) = 5;  // top right
    x(0, 6 * 7 + 0) = 7;  // bottom left
    x(0, 5 * 7 + 5) = 8;  // bottom right
    CHECK(pool.forward(x) == image_of({4, 5, 7, 8}));
    MatrixX<double> expected = MatrixX<double>::Zero(1, 49);
    expected(0, 3 * 7 + 3) = 1;
    expected(0, 0 * 7 + 6) = 2;
    expected(0, 6 * 7 + 0) = 3;
    expected(0, 5 * 7 + 5) = 4;
    CHECK(pool.backward(image_of({1, 2, 3, 4})) == expected);
  }
  SECTION("5 -> 3 rows, 4 -> 2 columns") {
    // rows: [0, 2), [1, 4), [3, 5); columns: [0, 2), [2, 4)
    moe::AdaptiveMaxPool2d<double> pool({1, 5, 4}, 3, 2);
    MatrixX<double> x(1, 20);
    for (Index i = 0; i < 20; ++i) x(0, i) = static_cast<double>((i * 7) % 20);  // distinct values
    MatrixX<double> expected(1, 6);
    const Index row_begin[] = {0, 1, 3}, row_end[] = {2, 4, 5};
    for (Index oy = 0; oy < 3; ++oy)
      for (Index ox = 0; ox < 2; ++ox) {
        double max = -1;
        for (Index iy = row_begin[oy]; iy < row_end[oy]; ++iy)
          for (Index ix = 2 * ox; ix < 2 * ox + 2; ++ix) max = std::max(max, x(0, iy * 4 + ix));
        expected(0, oy * 2 + ox) = max;
      }
    CHECK(pool.forward(x) == expected);
  }
  SECTION("output 1 is the global maximum of each channel") {
    moe::AdaptiveMaxPool2d<double> pool({2, 3, 3}, 1);
    CHECK(pool.forward(image_of({1, 2, 3, 4, 9, 5, 6, 7, 8,  //
                                 -9, -2, -3, -4, -1, -5, -6, -7, -8})) == image_of({9, -1}));
  }
}

TEST_CASE("Pool gradients match finite differences", "[nn][pool]") {
  // Uniform random inputs have no ties, so every maximum is differentiable.
  const ImageShape in{2, 7, 5};
  const MatrixX<double> x = random_images<double>(3, in, 21);
  SECTION("MaxPool2d 2x2") {
    moe::MaxPool2d<double> pool(in, 2);
    moe::test::check_module_gradients(pool, x, 22);
  }
  SECTION("MaxPool2d kernel 3, stride 2 (overlapping)") {
    moe::MaxPool2d<double> pool(in, 3, 2);
    moe::test::check_module_gradients(pool, x, 23);
  }
  SECTION("AdaptiveMaxPool2d 7x5 -> 3x2") {
    moe::AdaptiveMaxPool2d<double> pool(in, 3, 2);
    moe::test::check_module_gradients(pool, x, 24);
  }
}

TEST_CASE("Pools give the same bits on 1 and 2 threads", "[nn][pool][threads]") {
  const ImageShape in{3, 28, 28};
  const MatrixX<float> x = random_images<float>(9, in, 30);
  MatrixX<float> y[2], dx[2];
  for (int threads : {1, 2}) {
    const int previous = moe::set_num_threads(threads);
    moe::MaxPool2d<float> pool(in, 3, 2);
    const MatrixX<float> dy = random_images<float>(9, pool.output_shape(), 31);
    const auto t = static_cast<std::size_t>(threads - 1);
    y[t] = pool.forward(x);
    dx[t] = pool.backward(dy);
    moe::set_num_threads(previous);
  }
  CHECK(y[0] == y[1]);
  CHECK(dx[0] == dx[1]);
}

TEST_CASE("Pools reject bad shapes", "[nn][pool][errors]") {
  CHECK_THROWS_WITH(moe::MaxPool2d<float>({512, 3, 3}, 4),
                    Catch::Contains("MaxPool2d: kernel 4 does not fit the input 512x3x3"));
  CHECK_THROWS_WITH(moe::AdaptiveMaxPool2d<float>({1, 3, 3}, 0), Catch::Contains("output size must be positive"));
  moe::MaxPool2d<float> pool({1, 4, 4}, 2);
  CHECK_THROWS_WITH(pool.forward(moe::Matrix::Zero(1, 15)),
                    Catch::Contains("MaxPool2d: input has 15 columns, expected 1x4x4 = 16"));
  pool.forward(moe::Matrix::Zero(2, 16));
  CHECK_THROWS_WITH(pool.backward(moe::Matrix::Zero(2, 5)), Catch::Contains("gradient has shape 2x5, expected 2x4"));
}

TEST_CASE("Conv and pool layers chain in a Sequential", "[nn][conv][pool]") {
  moe::Rng rng(40);
  const ImageShape in{1, 6, 6};
  moe::Conv2d<double> conv1(in, 2, 3, rng, {.padding = 1});
  moe::MaxPool2d<double> pool1(conv1.output_shape(), 2);
  moe::Conv2d<double> conv2(pool1.output_shape(), 3, 3, rng, {.padding = 1});
  moe::AdaptiveMaxPool2d<double> pool2(conv2.output_shape(), 1);
  moe::Sequential net(conv1, moe::ReLU<double>{}, pool1, conv2, pool2);
  const auto params = net.named_parameters();
  REQUIRE(params.size() == 4);
  CHECK(params[0].name == "0.weight");
  CHECK(params[2].name == "3.weight");
  CHECK(params[2].parameter->shape == moe::Shape{3, 2, 3, 3});
  const MatrixX<double> x = random_images<double>(4, in, 41);
  CHECK(net.forward(x).cols() == 3);
  moe::test::check_module_gradients(net, x, 42);
}

TEST_CASE("The CNN of 'Do Experts Specialize?' gives 512 features", "[nn][conv][pool]") {
  // Section 5: conv 3x3 (stride 1, padding 1) with 128, 256, 256, 512 filters, a 2x2 max pool after the
  // 1st, 3rd and 4th, then a 4x4 max pool.
  moe::Rng rng(1);
  const auto stack = [&](ImageShape input, bool adaptive_last) {
    moe::Conv2d<float> conv1(input, 128, 3, rng, {.padding = 1});
    moe::MaxPool2d<float> pool1(conv1.output_shape(), 2);
    moe::Conv2d<float> conv2(pool1.output_shape(), 256, 3, rng, {.padding = 1});
    moe::Conv2d<float> conv3(conv2.output_shape(), 256, 3, rng, {.padding = 1});
    moe::MaxPool2d<float> pool3(conv3.output_shape(), 2);
    moe::Conv2d<float> conv4(pool3.output_shape(), 512, 3, rng, {.padding = 1});
    moe::MaxPool2d<float> pool4(conv4.output_shape(), 2);
    if (adaptive_last) return moe::AdaptiveMaxPool2d<float>(pool4.output_shape(), 1).output_shape();
    return moe::MaxPool2d<float>(pool4.output_shape(), 4).output_shape();
  };
  SECTION("32x32 (CIFAR-10): 32 -> 16 -> 8 -> 4, then the 4x4 pool") {
    CHECK(stack({3, 32, 32}, false) == ImageShape{512, 1, 1});
    CHECK(stack({3, 32, 32}, true) == ImageShape{512, 1, 1});
  }
  SECTION("28x28 (MNIST): 28 -> 14 -> 7 -> 3, where only an adaptive pool fits") {
    CHECK(stack({1, 28, 28}, true).size() == 512);
    CHECK_THROWS_WITH(stack({1, 28, 28}, false), Catch::Contains("kernel 4 does not fit the input 512x3x3"));
  }
  SECTION("the short model of Experiment 3: conv 1 and its pool, then an 8x8 pool") {
    moe::Conv2d<float> conv1({3, 32, 32}, 128, 3, rng, {.padding = 1});
    moe::MaxPool2d<float> pool1(conv1.output_shape(), 2);
    CHECK(moe::MaxPool2d<float>(pool1.output_shape(), 8).output_shape() == ImageShape{128, 2, 2});
    CHECK(moe::MaxPool2d<float>(pool1.output_shape(), 8).output_shape().size() == 512);
  }
}
