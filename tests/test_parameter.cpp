// Parameter as a view into memory someone else owns (an expert bank's stacked tensors), and every use of
// a parameter giving the same bits through a view (aligned as the bank aligns it) as through its own
// storage.

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "moe/io/state_dict.hpp"
#include "moe/nn/layer_norm.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/rms_norm.hpp"
#include "moe/optim/optimizer.hpp"
#include "random_matrix.hpp"

using moe::Index;
using moe::MatrixX;
using moe::Parameter;

namespace {

using moe::test::random_matrix;

template <class A, class B>
bool same_bits(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.derived().data(), b.derived().data(),
                     sizeof(typename A::Scalar) * static_cast<std::size_t>(a.size())) == 0;
}

/// Two experts' worth of one parameter stacked as moe::ExpertBank stacks them: row e of value and grad
/// holds expert e's rows * cols elements, each row starting on a multiple of 64 bytes.
template <class Scalar>
struct Stack {
  static constexpr Index per_slice = 64 / static_cast<Index>(sizeof(Scalar));
  Index rows, cols;
  MatrixX<Scalar> value, grad;
  Stack(Index rows_, Index cols_)
      : rows(rows_),
        cols(cols_),
        value(MatrixX<Scalar>::Zero(2, (rows_ * cols_ + per_slice - 1) / per_slice * per_slice)),
        grad(MatrixX<Scalar>::Zero(2, value.cols())) {}
  void bind_second(Parameter<Scalar>& p) { p.bind(value.row(1).data(), grad.row(1).data()); }
  Eigen::Map<MatrixX<Scalar>> first_value() { return {value.row(0).data(), rows, cols}; }
  Eigen::Map<MatrixX<Scalar>> second_value() { return {value.row(1).data(), rows, cols}; }
  Eigen::Map<MatrixX<Scalar>> second_grad() { return {grad.row(1).data(), rows, cols}; }
};

}  // namespace

TEST_CASE("Parameter bind copies value and grad into external memory and views it", "[parameter]") {
  Parameter<double> p(2, 3);
  p.value << 1, 2, 3, 4, 5, 6;
  p.grad << -1, -2, -3, -4, -5, -6;
  CHECK_FALSE(p.is_view());
  std::vector<double> value_memory(6), grad_memory(6);
  p.bind(value_memory.data(), grad_memory.data());

  CHECK(p.is_view());
  CHECK(p.shape == moe::Shape{2, 3});
  CHECK(value_memory == std::vector<double>{1, 2, 3, 4, 5, 6});  // row-major, as PyTorch stores it
  CHECK(grad_memory == std::vector<double>{-1, -2, -3, -4, -5, -6});
  p.value(1, 2) = 42;
  CHECK(value_memory[5] == 42);
  value_memory[0] = -7;
  CHECK(p.value(0, 0) == -7);
  p.grad(0, 1) = 9;
  CHECK(grad_memory[1] == 9);
  p.zero_grad();
  CHECK(grad_memory == std::vector<double>(6, 0.0));

  Parameter<double> q(1, 2);
  CHECK_THROWS_WITH(q.bind(nullptr, grad_memory.data()),
                    "Parameter::bind: null memory for a parameter of shape 1x2");
}

TEST_CASE("A bound parameter takes the same AdamW steps as an owning twin, bit for bit", "[parameter][optim]") {
  moe::Rng rng(7);
  Parameter<float> owning(3, 5);
  owning.value = random_matrix<float>(3, 5, rng);
  const MatrixX<float> initial = owning.value;
  Parameter<float> bound = owning;
  Stack<float> stack(3, 5);
  stack.bind_second(bound);

  moe::AdamW<float> owning_adamw({{"w", &owning}}, {.lr = 0.01, .weight_decay = 0.1});
  moe::AdamW<float> bound_adamw({{"w", &bound}}, {.lr = 0.01, .weight_decay = 0.1});
  for (int step = 0; step < 3; ++step) {
    const MatrixX<float> g = random_matrix<float>(3, 5, rng);
    owning.grad = g;
    bound.grad = g;
    owning_adamw.step();
    bound_adamw.step();
  }
  CHECK(same_bits(bound.value, owning.value));
  CHECK(same_bits(stack.second_value(), owning.value));
  CHECK(stack.first_value().isZero(0.0f));
  CHECK_FALSE(same_bits(owning.value, initial));
}

TEST_CASE("A copy of a bound parameter owns its data and a move keeps the view", "[parameter]") {
  Parameter<double> p(2, 2);
  p.value << 1, 2, 3, 4;
  std::vector<double> value_memory(4), grad_memory(4);
  p.bind(value_memory.data(), grad_memory.data());

  Parameter<double> copy(p);
  CHECK_FALSE(copy.is_view());
  CHECK(copy.value == p.value);
  CHECK(copy.shape == p.shape);
  copy.value(0, 0) = 99;
  copy.grad(0, 0) = 99;
  CHECK(value_memory[0] == 1);
  CHECK(grad_memory[0] == 0);

  Parameter<double> assigned(5, 5);
  assigned = p;
  CHECK_FALSE(assigned.is_view());
  CHECK(assigned.value == p.value);
  assigned.value(1, 1) = -1;
  CHECK(value_memory[3] == 4);

  Parameter<double> moved(std::move(p));
  CHECK(moved.is_view());
  CHECK(moved.value.data() == value_memory.data());
  CHECK(moved.grad.data() == grad_memory.data());
  CHECK(moved.shape == moe::Shape{2, 2});
  Parameter<double> move_assigned(3, 1);
  move_assigned = std::move(moved);
  CHECK(move_assigned.is_view());
  CHECK(move_assigned.value.data() == value_memory.data());
  move_assigned.value(0, 1) = 20;
  CHECK(value_memory[1] == 20);

  // An owning parameter moves its storage: no copy, the maps follow it.
  Parameter<double> owner(2, 3);
  const double* storage = owner.value.data();
  Parameter<double> taken(std::move(owner));
  CHECK_FALSE(taken.is_view());
  CHECK(taken.value.data() == storage);

  // A copied module does not alias the original either.
  moe::Rng rng(3);
  moe::Linear<double> layer(3, 2, rng);
  Stack<double> weight_stack(2, 3);
  weight_stack.bind_second(layer.weight());
  moe::Linear<double> layer_copy = layer;
  CHECK_FALSE(layer_copy.weight().is_view());
  layer_copy.weight().value.setZero();
  CHECK(!weight_stack.second_value().isZero(0.0));
}

TEST_CASE("load_state_dict writes a bound parameter's memory in place and checks its shape", "[parameter][io]") {
  moe::Rng rng(11);
  moe::Linear<double> layer(3, 2, rng);
  Stack<double> weight_stack(2, 3), bias_stack(1, 2);
  weight_stack.bind_second(layer.weight());
  bias_stack.bind_second(layer.bias());

  moe::StateDict<double> dict = moe::state_dict(layer);
  dict["weight"].data = Eigen::VectorXd::LinSpaced(6, 1.0, 6.0);
  dict["bias"].data = Eigen::VectorXd::LinSpaced(2, -1.0, -2.0);
  moe::load_state_dict(layer, dict);
  CHECK(layer.weight().is_view());
  CHECK(layer.weight().value.data() == weight_stack.second_value().data());
  MatrixX<double> expected(2, 3);
  expected << 1, 2, 3, 4, 5, 6;
  CHECK(weight_stack.second_value() == expected);
  CHECK(bias_stack.second_value()(0, 0) == -1.0);
  CHECK(bias_stack.second_value()(0, 1) == -2.0);

  const MatrixX<double> weights_before = weight_stack.value, biases_before = bias_stack.value;
  moe::StateDict<double> wrong = dict;
  wrong["weight"].shape = {3, 2};
  wrong["bias"].data.setConstant(5.0);
  CHECK_THROWS_AS(moe::load_state_dict(layer, wrong), moe::Error);
  CHECK_THROWS_WITH(moe::load_state_dict(layer, wrong),
                    "load_state_dict: tensor weight has shape [3, 2], the module expects [2, 3]");
  CHECK(weight_stack.value == weights_before);
  CHECK(bias_stack.value == biases_before);
}

TEST_CASE("A Linear bound to external memory computes as an unbound twin, bit for bit", "[parameter][nn][linear]") {
  // Small shapes take Eigen's coefficient-wise products, large ones its blocked GEMM, and more than 256
  // rows split forward into chunks.
  using Sizes = std::tuple<Index, Index, Index>;  // in_features, out_features, rows
  const auto [in, out, rows] = GENERATE(Sizes{5, 3, 4}, Sizes{37, 19, 300});
  moe::Rng rng(static_cast<std::uint64_t>(in));
  moe::Linear<float> plain(in, out, rng);
  moe::Linear<float> bound = plain;
  Stack<float> weight_stack(out, in), bias_stack(1, out);
  weight_stack.bind_second(bound.weight());
  bias_stack.bind_second(bound.bias());
  REQUIRE(same_bits(bound.weight().value, plain.weight().value));

  const MatrixX<float> x = random_matrix<float>(rows, in, rng);
  CHECK(same_bits(bound.forward(x), plain.forward(x)));
  for (int pass = 0; pass < 2; ++pass) {  // the second pass accumulates into the gradients
    const MatrixX<float> dy = random_matrix<float>(rows, out, rng);
    CHECK(same_bits(bound.backward(dy), plain.backward(dy)));
  }
  CHECK(same_bits(bound.weight().grad, plain.weight().grad));
  CHECK(same_bits(bound.bias().grad, plain.bias().grad));
  CHECK(same_bits(weight_stack.second_grad(), plain.weight().grad));
  CHECK(same_bits(bias_stack.second_grad(), plain.bias().grad));
  CHECK(!plain.weight().grad.isZero(0.0f));
}

TEST_CASE("LayerNorm and RMSNorm bound to external memory compute as unbound twins, bit for bit",
          "[parameter][nn][norm]") {
  moe::Rng rng(5);
  const Index rows = 9, features = 70;
  moe::LayerNorm<float> layer_norm(features);
  moe::RMSNorm<float> rms_norm(features);
  moe::fill_uniform(layer_norm.weight().value, rng, 0.5, 1.5);
  moe::fill_uniform(layer_norm.bias().value, rng, -0.5, 0.5);
  moe::fill_uniform(rms_norm.weight().value, rng, 0.5, 1.5);
  const MatrixX<float> x = random_matrix<float>(rows, features, rng);
  const MatrixX<float> dy = random_matrix<float>(rows, features, rng);
  const auto check = [&](auto plain) {
    auto bound = plain;
    std::vector<Stack<float>> stacks;
    stacks.reserve(2);
    for (const auto& p : bound.named_parameters()) stacks.emplace_back(1, features).bind_second(*p.parameter);
    CHECK(same_bits(bound.forward(x), plain.forward(x)));
    CHECK(same_bits(bound.backward(dy), plain.backward(dy)));
    const auto bound_parameters = bound.named_parameters(), plain_parameters = plain.named_parameters();
    for (std::size_t i = 0; i < plain_parameters.size(); ++i) {
      REQUIRE(bound_parameters[i].parameter->is_view());
      CHECK(same_bits(bound_parameters[i].parameter->grad, plain_parameters[i].parameter->grad));
    }
  };
  check(layer_norm);
  check(rms_norm);
}
