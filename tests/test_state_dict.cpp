#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/io/state_dict.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/softmax_top_k.hpp"
#include "random_matrix.hpp"
#include "state_dict_fixtures.hpp"

using moe::Index;
using moe::MatrixX;
using moe::Shape;

namespace {

using moe::test::BiasMoE;
using moe::test::identical;
using moe::test::make_feed_forward;
using moe::test::make_moe;
using moe::test::random_matrix;
using moe::test::ReluExpert;
using moe::test::ReluMoE;
using moe::test::SwitchMoE;

std::vector<std::string> keys(const moe::StateDict<float>& dict) {
  std::vector<std::string> names;
  for (const auto& entry : dict) names.push_back(entry.first);
  return names;
}

}  // namespace

TEST_CASE("state_dict names and shapes follow PyTorch", "[io][state_dict]") {
  auto ff = make_feed_forward<float>(1);
  const auto ff_dict = moe::state_dict(ff);
  CHECK(keys(ff_dict) == std::vector<std::string>{"fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"});
  CHECK(ff_dict.at("fc1.weight").shape == Shape{7, 5});
  CHECK(ff_dict.at("fc1.bias").shape == Shape{7});
  CHECK(ff_dict.at("fc2.weight").shape == Shape{5, 7});
  CHECK(ff_dict.at("fc2.bias").shape == Shape{5});

  auto layer = make_moe<SwitchMoE<float>>(1);
  const auto dict = moe::state_dict(layer);
  CHECK(dict.size() == 1 + 3 * 4 + 4);  // router (no bias), 3 experts, 1 shared expert
  CHECK(dict.at("router.weight").shape == Shape{3, 5});
  CHECK(dict.at("experts.0.fc1.weight").shape == Shape{7, 5});
  CHECK(dict.at("experts.2.fc2.bias").shape == Shape{5});
  CHECK(dict.at("shared_experts.0.fc1.weight").shape == Shape{4, 5});
  CHECK(dict.at("shared_experts.0.fc2.bias").shape == Shape{5});
  // Values in C order: element (i, j) of a weight is data[i * cols + j].
  const auto& w = layer.expert(1).named_parameters()[0].parameter->value;
  CHECK(dict.at("experts.1.fc1.weight").data(2 * 5 + 3) == w(2, 3));

  auto biased = make_moe<BiasMoE<float>>(1);
  const auto biased_dict = moe::state_dict(biased);
  REQUIRE(biased_dict.contains("balancer.expert_bias"));
  CHECK(biased_dict.at("balancer.expert_bias").shape == Shape{3});
}

TEMPLATE_TEST_CASE("load_state_dict restores every parameter and buffer bit for bit", "[io][state_dict]", float,
                   double) {
  using S = TestType;
  const MatrixX<S> x = random_matrix<S>(16, 5, 99);
  SECTION("FeedForward") {
    auto source = make_feed_forward<S>(1);
    auto target = make_feed_forward<S>(2);
    const auto report = moe::load_state_dict(target, moe::state_dict(source));
    CHECK(report.loaded == std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"});
    CHECK(report.skipped.empty());
    CHECK(report.missing.empty());
    CHECK(identical(moe::state_dict(target), moe::state_dict(source)));
    const MatrixX<S> expected = source.forward(x);
    CHECK(target.forward(x) == expected);
  }
  SECTION("MoE with Switch aux loss and a shared expert") {
    auto source = make_moe<SwitchMoE<S>>(1);
    auto target = make_moe<SwitchMoE<S>>(2);
    CHECK_FALSE(identical(moe::state_dict(target), moe::state_dict(source)));
    moe::load_state_dict(target, moe::state_dict(source));
    CHECK(identical(moe::state_dict(target), moe::state_dict(source)));
    const MatrixX<S> expected = source.forward(x);
    CHECK(target.forward(x) == expected);
  }
  SECTION("MoE with aux-loss-free biases") {
    auto source = make_moe<BiasMoE<S>>(1);
    source.forward(x);
    source.update_balancing();
    REQUIRE(source.balancer().bias().cwiseAbs().maxCoeff() > 0);
    auto target = make_moe<BiasMoE<S>>(2);
    moe::load_state_dict(target, moe::state_dict(source));
    CHECK(target.balancer().bias() == source.balancer().bias());
    CHECK(identical(moe::state_dict(target), moe::state_dict(source)));
  }
}

TEST_CASE("state_dict copies the values", "[io][state_dict]") {
  auto ff = make_feed_forward<float>(1);
  auto dict = moe::state_dict(ff);
  dict.at("fc1.bias").data.setZero();
  CHECK(moe::state_dict(ff).at("fc1.bias").data.cwiseAbs().maxCoeff() > 0);
}

TEST_CASE("strict loading names the missing, unexpected or misshapen tensor", "[io][state_dict][errors]") {
  auto ff = make_feed_forward<float>(1);
  auto other = make_feed_forward<float>(2);
  auto dict = moe::state_dict(other);
  SECTION("missing") {
    dict.erase("fc2.bias");
    CHECK_THROWS_WITH(moe::load_state_dict(ff, dict),
                      "load_state_dict: module tensor fc2.bias [5] is missing from the state dict");
  }
  SECTION("unexpected") {
    dict["extra.weight"] = {{2}, moe::VectorX<float>::Zero(2)};
    CHECK_THROWS_WITH(moe::load_state_dict(ff, dict), "load_state_dict: tensor extra.weight is not in the module");
  }
  SECTION("wrong shape, even when not strict") {
    dict.at("fc1.weight").shape = {5, 7};
    const auto message = "load_state_dict: tensor fc1.weight has shape [5, 7], the module expects [7, 5]";
    CHECK_THROWS_WITH(moe::load_state_dict(ff, dict), message);
    CHECK_THROWS_WITH(moe::load_state_dict(ff, dict, {.strict = false}), message);
  }
  SECTION("a 1-D bias is not a 1 x n matrix") {
    dict.at("fc1.bias").shape = {1, 7};
    CHECK_THROWS_WITH(moe::load_state_dict(ff, dict), Catch::Contains("fc1.bias has shape [1, 7]") &&
                                                          Catch::Contains("expects [7]"));
  }
  SECTION("data that does not fill the shape") {
    dict.at("fc2.bias").data.resize(4);
    CHECK_THROWS_WITH(moe::load_state_dict(ff, dict),
                      "load_state_dict: tensor fc2.bias has shape [5] but holds 4 values");
  }
}

TEST_CASE("a failed load leaves the module unchanged", "[io][state_dict][errors]") {
  auto layer = make_moe<SwitchMoE<float>>(1);
  const auto before = moe::state_dict(layer);
  auto other = make_moe<SwitchMoE<float>>(2);
  auto dict = moe::state_dict(other);
  SECTION("a wrong shape in the last tensor") {
    REQUIRE(std::prev(dict.end())->first == "shared_experts.0.fc2.weight");
    std::prev(dict.end())->second.shape = {4, 5};
    CHECK_THROWS(moe::load_state_dict(layer, dict));
  }
  SECTION("a missing tensor") {
    dict.erase("router.weight");
    CHECK_THROWS(moe::load_state_dict(layer, dict));
  }
  CHECK(identical(moe::state_dict(layer), before));
}

TEST_CASE("non-strict loading reports what it loaded, skipped and missed", "[io][state_dict]") {
  auto ff = make_feed_forward<float>(1);
  auto other = make_feed_forward<float>(2);
  auto dict = moe::state_dict(other);
  dict.erase("fc2.weight");
  dict["head.bias"] = {{3}, moe::VectorX<float>::Ones(3)};
  const auto report = moe::load_state_dict(ff, dict, {.strict = false});
  CHECK(report.loaded == std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.bias"});
  CHECK(report.unexpected == std::vector<std::string>{"head.bias"});
  CHECK(report.missing == std::vector<std::string>{"fc2.weight"});
  CHECK(report.skipped.empty());
  CHECK(moe::state_dict(ff).at("fc1.weight").data == dict.at("fc1.weight").data);
}

TEST_CASE("a pretrained network's first layer loads into one expert slot", "[io][state_dict][partial]") {
  // A 12-6-4 network trained alone (784-128-10 in the experiments), and an MoE of three such experts.
  moe::Rng rng(5);
  ReluExpert pretrained(12, {.hidden = 6, .out_features = 4}, rng);
  ReluMoE layer({.d_model = 12, .num_experts = 3, .expert = {.hidden = 6, .out_features = 4}}, rng);
  const auto before = moe::state_dict(layer);
  const auto source = moe::state_dict(pretrained);

  moe::LoadReport report;
  SECTION("patterns") {
    report = moe::load_state_dict(layer, source,
                                  {.strict = false, .prefix_map = {{"", "experts.0."}}, .only = {"fc1.*"}});
  }
  SECTION("predicate") {
    report = moe::load_state_dict(layer, source,
                                  {.strict = false,
                                   .prefix_map = {{"", "experts.0."}},
                                   .only = [](const std::string& name) { return name.starts_with("fc1."); }});
  }
  CHECK(report.loaded == std::vector<std::string>{"experts.0.fc1.weight", "experts.0.fc1.bias"});
  CHECK(report.skipped == std::vector<std::string>{"fc2.bias", "fc2.weight"});
  CHECK(report.unexpected.empty());
  CHECK(report.missing.size() == before.size() - 2);
  CHECK(std::ranges::count(report.missing, "experts.0.fc2.weight") == 1);
  CHECK(std::ranges::count(report.missing, "router.weight") == 1);

  const auto after = moe::state_dict(layer);
  CHECK(after.at("experts.0.fc1.weight").data == source.at("fc1.weight").data);
  CHECK(after.at("experts.0.fc1.bias").data == source.at("fc1.bias").data);
  for (const auto& [name, tensor] : after)
    if (!name.starts_with("experts.0.fc1.")) CHECK(tensor.data == before.at(name).data);
}

TEST_CASE("a selected tensor must exist in the module with its shape", "[io][state_dict][partial][errors]") {
  moe::Rng rng(5);
  ReluExpert pretrained(12, {.hidden = 5, .out_features = 4}, rng);
  ReluMoE layer({.d_model = 12, .num_experts = 3, .expert = {.hidden = 6, .out_features = 4}}, rng);
  const auto before = moe::state_dict(layer);
  const auto source = moe::state_dict(pretrained);
  CHECK_THROWS_WITH(
      moe::load_state_dict(layer, source, {.strict = false, .prefix_map = {{"", "experts.7."}}, .only = {"fc1.*"}}),
      "load_state_dict: tensor fc1.bias (as experts.7.fc1.bias) is not in the module (selected by LoadOptions::only)");
  CHECK_THROWS_WITH(
      moe::load_state_dict(layer, source, {.strict = false, .prefix_map = {{"", "experts.0."}}, .only = {"fc1.*"}}),
      "load_state_dict: tensor fc1.bias (as experts.0.fc1.bias) has shape [5], the module expects [6]");
  CHECK(identical(moe::state_dict(layer), before));
}

TEST_CASE("prefix maps take an expert out, and swap experts", "[io][state_dict][partial]") {
  auto layer = make_moe<SwitchMoE<double>>(1);
  const auto dict = moe::state_dict(layer);
  SECTION("one expert into a standalone network, strictly") {
    auto ff = make_feed_forward<double>(3);
    const auto report = moe::load_state_dict(ff, dict, {.prefix_map = {{"experts.1.", ""}}});
    CHECK(report.loaded.size() == 4);
    CHECK(report.skipped.size() == dict.size() - 4);
    CHECK(moe::state_dict(ff).at("fc2.weight").data == dict.at("experts.1.fc2.weight").data);
  }
  SECTION("the longest matching prefix wins") {
    auto target = make_moe<SwitchMoE<double>>(2);
    moe::load_state_dict(target, dict,
                         {.prefix_map = {{"", ""}, {"experts.0.", "experts.1."}, {"experts.1.", "experts.0."}}});
    const auto loaded = moe::state_dict(target);
    CHECK(loaded.at("experts.0.fc1.weight").data == dict.at("experts.1.fc1.weight").data);
    CHECK(loaded.at("experts.1.fc2.bias").data == dict.at("experts.0.fc2.bias").data);
    CHECK(loaded.at("experts.2.fc2.bias").data == dict.at("experts.2.fc2.bias").data);
    CHECK(loaded.at("router.weight").data == dict.at("router.weight").data);
  }
  SECTION("two sources for one destination") {
    auto ff = make_feed_forward<double>(3);
    CHECK_THROWS_WITH(
        moe::load_state_dict(ff, dict, {.strict = false, .prefix_map = {{"experts.0.", ""}, {"experts.2.", ""}}}),
        "load_state_dict: tensors experts.0.fc1.bias and experts.2.fc1.bias both map to fc1.bias");
  }
}

TEST_CASE("NameFilter patterns", "[io][state_dict]") {
  const moe::NameFilter fc1{"fc1.*"};
  CHECK(fc1("fc1.weight"));
  CHECK_FALSE(fc1("fc2.weight"));
  CHECK_FALSE(fc1("experts.0.fc1.weight"));
  const moe::NameFilter any_fc2_bias{"experts.*.fc2.bias", "*.router.*"};
  CHECK(any_fc2_bias("experts.12.fc2.bias"));
  CHECK(any_fc2_bias("layers.3.router.weight"));
  CHECK_FALSE(any_fc2_bias("experts.1.fc2.weight"));
  CHECK(moe::NameFilter{"fc1.weight"}("fc1.weight"));
  CHECK_FALSE(moe::NameFilter{"fc1.weight"}("fc1.weight2"));
  CHECK(moe::NameFilter{"*"}(""));
  CHECK(moe::NameFilter{"a*b*c"}("a.b.b.c"));
  CHECK_FALSE(moe::NameFilter{"a*b*c"}("a.b.b.c."));
  CHECK(moe::NameFilter{}.selects_all());
  CHECK(moe::NameFilter{}("anything"));
  CHECK_FALSE(moe::NameFilter(std::vector<std::string>{})("anything"));
}
