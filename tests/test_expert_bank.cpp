#include <catch2/catch.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "backends/cpu/cpu_backend.hpp"
#include "gradient_check.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/core/parallel.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/layer/expert_bank.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"
#include "random_matrix.hpp"

using moe::Index;
using moe::MatrixX;

namespace {

using moe::test::random_matrix;

using GeluExpert = moe::FeedForward<moe::GELU, double>;
using SwiGLUExpert = moe::SwiGLUFeedForward<double>;

/// The same module as Inner, but not one of the stacked kinds: its bank keeps one module per expert.
template <class Inner>
struct Unstacked : Inner {
  using Inner::Inner;
};

template <class Expert>
using SwitchLayer = moe::MoELayer<Expert, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss>;

/// Forward and backward of a layer on fixed data: the output, dx and every gradient, in parameter order.
template <class Layer>
std::vector<MatrixX<double>> run(Layer& layer, const MatrixX<double>& x, const MatrixX<double>& dy) {
  std::vector<MatrixX<double>> results{layer.forward(x)};
  results.push_back(layer.backward(dy));
  for (const auto& p : layer.named_parameters()) results.push_back(p.parameter->grad);
  return results;
}

}  // namespace

TEST_CASE("Feed-forward experts are stacked; other modules are not", "[moe][expert_bank]") {
  STATIC_REQUIRE(moe::ExpertBank<GeluExpert>::stacked);
  STATIC_REQUIRE(moe::ExpertBank<SwiGLUExpert>::stacked);
  STATIC_REQUIRE(moe::ExpertBank<moe::FeedForward<moe::ReLU, float>>::stacked);
  STATIC_REQUIRE_FALSE(moe::ExpertBank<moe::Linear<double>>::stacked);
  STATIC_REQUIRE_FALSE(moe::ExpertBank<Unstacked<GeluExpert>>::stacked);
}

TEST_CASE("A stacked bank's experts are views into one tensor per parameter", "[moe][expert_bank]") {
  moe::Rng rng(5);
  moe::ExpertBank<GeluExpert> bank(3, 4, {.hidden = 6}, rng);
  auto& stacks = bank.stacks();
  REQUIRE(stacks.size() == 4);
  CHECK(stacks[0].name == "fc1.weight");
  CHECK(stacks[0].shape == moe::Shape{6, 4});
  CHECK(stacks[0].value.rows() == 3);
  CHECK(stacks[0].stride() == 6 * 4);  // 192 bytes: no padding
  CHECK(stacks[3].name == "fc2.bias");
  CHECK(stacks[3].shape == moe::Shape{4});
  CHECK(stacks[3].value.rows() == 3);
  CHECK(stacks[1].stride() == 8);  // fc1.bias, 6 doubles, padded to 64 bytes

  for (Index e = 0; e < 3; ++e) {
    auto parameters = bank.expert(e).named_parameters();
    REQUIRE(parameters.size() == stacks.size());
    for (std::size_t i = 0; i < parameters.size(); ++i) {
      auto& p = *parameters[i].parameter;
      CHECK(p.is_view());
      CHECK(p.value.data() == stacks[i].value.data() + e * stacks[i].stride());
      CHECK(p.grad.data() == stacks[i].grad.data() + e * stacks[i].stride());
    }
  }
  // Writing the stack is writing the expert, and the other way round.
  stacks[0].value(1, 0) = 42.0;  // expert 1's fc1.weight(0, 0)
  CHECK(bank.expert(1).named_parameters()[0].parameter->value(0, 0) == 42.0);
  bank.expert(2).named_parameters()[3].parameter->grad(0, 1) = -7.0;
  CHECK(stacks[3].grad(2, 1) == -7.0);

  // Names within the bank are "{e}.{expert's name}".
  const auto names = bank.named_parameters();
  REQUIRE(names.size() == 12);
  CHECK(names[0].name == "0.fc1.weight");
  CHECK(names[11].name == "2.fc2.bias");
}

TEST_CASE("A layer built with moe::zero_init is all zero, draws nothing and computes the drawn layer's bits once "
          "loaded", "[moe][expert_bank][zero_init]") {
  using Layer = moe::MoELayer<SwiGLUExpert, moe::SigmoidTopK, 2, moe::SwitchAuxLoss>;
  const Layer::Options options{.d_model = 5, .num_experts = 4, .num_shared_experts = 1, .shared_expert_gate = true,
                               .expert = {.hidden = 6}, .shared_expert = {.hidden = 3},
                               .router = {.routed_scaling_factor = 2.0, .n_group = 2, .topk_group = 1}};
  moe::Rng rng(8);
  Layer drawn(options, rng);
  Layer zero(options, moe::zero_init);
  const auto drawn_parameters = drawn.named_parameters(), zero_parameters = zero.named_parameters();
  REQUIRE(zero_parameters.size() == drawn_parameters.size());
  for (std::size_t i = 0; i < zero_parameters.size(); ++i) {
    INFO(zero_parameters[i].name);
    CHECK(zero_parameters[i].name == drawn_parameters[i].name);
    CHECK(zero_parameters[i].parameter->shape == drawn_parameters[i].parameter->shape);
    CHECK(zero_parameters[i].parameter->value.isZero(0.0));
    CHECK(zero_parameters[i].parameter->grad.isZero(0.0));
  }
  for (const auto& stack : zero.experts().stacks())
    CHECK(reinterpret_cast<std::uintptr_t>(stack.value.data()) % moe::ExpertBank<SwiGLUExpert>::slice_alignment == 0);

  moe::load_state_dict(zero, moe::state_dict(drawn));
  const MatrixX<double> x = random_matrix(12, 5, 9), dy = random_matrix(12, 5, 10);
  CHECK(run(zero, x, dy) == run(drawn, x, dy));
}

TEST_CASE("Stacking changes no initial weight and no bit of forward or backward", "[moe][expert_bank]") {
  const MatrixX<double> x = random_matrix(40, 5, 1), dy = random_matrix(40, 5, 2);
  const auto compare = [&]<class Expert>(typename Expert::Options expert) {
    moe::Rng rng_stacked(9), rng_modules(9);
    SwitchLayer<Expert> stacked({.d_model = 5, .num_experts = 4, .expert = expert}, rng_stacked);
    SwitchLayer<Unstacked<Expert>> modules({.d_model = 5, .num_experts = 4, .expert = expert}, rng_modules);
    STATIC_REQUIRE(decltype(stacked)::BankType::stacked);
    STATIC_REQUIRE_FALSE(decltype(modules)::BankType::stacked);
    const auto a = run(stacked, x, dy);
    const auto b = run(modules, x, dy);
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO("result " << i);
      CHECK(a[i] == b[i]);
    }
  };
  compare.operator()<GeluExpert>({.hidden = 7});
  compare.operator()<SwiGLUExpert>({.hidden = 7});
}

TEST_CASE("A copied layer owns its stacks", "[moe][expert_bank]") {
  moe::Rng rng(11);
  SwitchLayer<GeluExpert> layer({.d_model = 4, .num_experts = 3, .expert = {.hidden = 5}}, rng);
  SwitchLayer<GeluExpert> copy = layer;
  const MatrixX<double> x = random_matrix(12, 4, 3);
  const MatrixX<double> before = layer.forward(x);
  CHECK(copy.forward(x) == before);

  auto copied = copy.named_parameters();
  CHECK(copied[1].parameter->is_view());
  CHECK(copied[1].parameter->value.data() != layer.named_parameters()[1].parameter->value.data());
  copy.experts().stacks()[0].value.setZero();
  CHECK(copied[1].parameter->value.isZero());  // experts.0.fc1.weight of the copy
  CHECK(layer.forward(x) == before);
  CHECK(copy.forward(x) != before);

  // Assignment rebinds too.
  copy = layer;
  CHECK(copy.forward(x) == before);
  copy.experts().stacks()[2].value.setZero();
  CHECK(layer.forward(x) == before);
}

TEST_CASE("An optimizer step and a state dict load reach the stacks", "[moe][expert_bank]") {
  moe::Rng rng(13);
  SwitchLayer<SwiGLUExpert> layer({.d_model = 4, .num_experts = 3, .expert = {.hidden = 5}}, rng);
  const MatrixX<double> x = random_matrix(16, 4, 4);
  layer.forward(x);
  layer.backward(random_matrix(16, 4, 5));
  const MatrixX<double> stack_before = layer.experts().stacks()[0].value;
  CHECK(!layer.experts().stacks()[0].grad.isZero());
  moe::AdamW<double> optimizer(layer.named_parameters(), {.lr = 1e-2});
  optimizer.step();
  CHECK(layer.experts().stacks()[0].value != stack_before);

  moe::Rng other_rng(14);
  SwitchLayer<SwiGLUExpert> other({.d_model = 4, .num_experts = 3, .expert = {.hidden = 5}}, other_rng);
  moe::load_state_dict(other, moe::state_dict(layer));
  for (std::size_t i = 0; i < layer.experts().stacks().size(); ++i)
    CHECK(other.experts().stacks()[i].value == layer.experts().stacks()[i].value);
  CHECK(other.forward(x) == layer.forward(x));
}

TEST_CASE("Gradients of a stacked SwiGLU layer with a sigmoid router", "[moe][expert_bank][gradient]") {
  moe::Rng rng(17);
  moe::MoELayer<SwiGLUExpert, moe::SigmoidTopK, 2, moe::SequenceAuxLoss> layer(
      {.d_model = 5, .num_experts = 4, .num_shared_experts = 1, .expert = {.hidden = 6}, .shared_expert = {.hidden = 3},
       .balancer = {0.5, 4}},
      rng);
  moe::test::check_module_gradients<decltype(layer)>(layer, random_matrix(8, 5, 18), 19,
                                                     [](auto& l) { return double(l.aux_loss()); });
}

namespace {

/// An expert that throws from forward once it is given more than `limit` rows.
struct ThrowingExpert {
  using Scalar = double;
  struct Options {
    Index limit = 0;
  };
  ThrowingExpert(Index d_model, const Options& options, moe::Rng& rng) : linear(d_model, d_model, rng), limit(options.limit) {}
  const MatrixX<double>& forward(moe::ConstRef<double> x) {
    if (x.rows() > limit) throw std::runtime_error("too many rows: " + std::to_string(x.rows()));
    return linear.forward(x);
  }
  const MatrixX<double>& backward(moe::ConstRef<double> dy) { return linear.backward(dy); }
  moe::ParameterList<double> named_parameters() { return linear.named_parameters(); }
  Index out_features() const { return linear.out_features(); }

  moe::Linear<double> linear;
  Index limit;
};

}  // namespace

TEST_CASE("An expert's exception names the expert at any thread count", "[moe][expert_bank][errors]") {
  const MatrixX<double> x = random_matrix(64, 3, 22);
  std::vector<std::string> messages;
  for (const int threads : {1, 2}) {
    const int previous = moe::set_num_threads(threads);
    moe::Rng rng(21);
    moe::MoELayer<ThrowingExpert, moe::SoftmaxTopK, 1, moe::NoBalancing> layer(
        {.d_model = 3, .num_experts = 4, .expert = {.limit = 2}}, rng);
    try {
      layer.forward(x);
    } catch (const moe::Error& error) {
      messages.push_back(error.what());
    }
    moe::set_num_threads(previous);
  }
  REQUIRE(messages.size() == 2);
  // Several experts throw; the one handed out first (the most rows) is reported, whatever the threads.
  CHECK_THAT(messages[0], Catch::Matchers::StartsWith("MoELayer: expert ") &&
                              Catch::Matchers::Contains(" failed in forward: too many rows: "));
  CHECK(messages[1] == messages[0]);
}

TEMPLATE_TEST_CASE("A bank holding a block of the experts has their weights and names", "[moe][expert_bank]",
                   GeluExpert, Unstacked<GeluExpert>) {
  moe::Rng whole_rng(8), part_rng(8);
  moe::ExpertBank<TestType> whole(4, 5, {.hidden = 3}, whole_rng);
  moe::ExpertBank<TestType> part(4, 5, {.hidden = 3}, part_rng, {.first = 2, .count = 2});
  CHECK(part.size() == 2);
  CHECK(part.first() == 2);
  CHECK(whole_rng() == part_rng());  // every expert was drawn, held or not
  const auto whole_parameters = whole.named_parameters();
  const auto part_parameters = part.named_parameters();
  REQUIRE(part_parameters.size() == whole_parameters.size() / 2);
  for (std::size_t i = 0; i < part_parameters.size(); ++i) {
    const auto& held = whole_parameters[whole_parameters.size() / 2 + i];
    CHECK(part_parameters[i].name == held.name);  // "2.fc1.weight", ...: the layer's numbering
    CHECK(part_parameters[i].parameter->value == held.parameter->value);
  }
  CHECK_THROWS_WITH((moe::ExpertBank<TestType>(4, 5, {.hidden = 3}, part_rng, {.first = 3, .count = 2})),
                    "ExpertBank: held experts [3, 5) are not a part of [0, 4)");
}
