// The Transformer-encoder expert (moe/nn/encoder.hpp): gradients with causal and padding masks, the masks
// themselves, dense mixtures of encoders in an MoELayer, and transfer of pretrained tensors into a slot.

#include <vector>

#include "gradient_check.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/encoder.hpp"
#include "moe/routing/mlp_router.hpp"
#include "moe/routing/softmax_top_k.hpp"
#include "random_matrix.hpp"

using moe::Index;
using moe::MatrixX;

namespace {

using moe::test::random_matrix;

using Encoder = moe::TransformerEncoder<double>;
using DenseEncoderMoE = moe::MoELayer<Encoder, moe::SoftmaxTopK, moe::Dynamic, moe::NoBalancing>;

Encoder::Options encoder_options(bool causal, bool norm_first, moe::EncoderActivation activation,
                                 Index num_layers = 2) {
  Encoder::Options o;
  o.num_layers = num_layers;
  o.layer.num_heads = 2;
  o.layer.dim_feedforward = 12;
  o.layer.activation = activation;
  o.layer.norm_first = norm_first;
  o.layer.causal = causal;
  o.final_norm = norm_first;
  return o;
}

/// Two sequences of 4: the first full, the second with 2 tokens and 2 of padding.
moe::SequenceLayout padded_layout() {
  const std::vector<Index> lengths{4, 2};
  return moe::SequenceLayout(2, 4, lengths);
}

bool same_tensors(const moe::StateDict<double>& a, const moe::StateDict<double>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, tensor] : a) {
    const auto it = b.find(name);
    if (it == b.end() || it->second.shape != tensor.shape || it->second.data != tensor.data) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("encoder gradients match finite differences with causal and padding masks") {
  using moe::EncoderActivation;
  struct Case {
    const char* name;
    bool causal, norm_first;
    EncoderActivation activation;
  };
  const std::vector<Case> cases{{"post-norm, padding", false, false, EncoderActivation::gelu},
                                {"post-norm, causal + padding", true, false, EncoderActivation::gelu},
                                {"pre-norm, padding", false, true, EncoderActivation::gelu},
                                {"pre-norm, causal + padding, relu", true, true, EncoderActivation::relu}};
  for (const auto& c : cases) {
    SECTION(c.name) {
      moe::Rng rng(7);
      Encoder encoder(8, encoder_options(c.causal, c.norm_first, c.activation), rng);
      encoder.set_layout(padded_layout());
      moe::test::check_module_gradients(encoder, random_matrix(8, 8, 11), 13);
    }
  }
}

TEST_CASE("encoder attention respects the causal and padding masks") {
  moe::Rng rng(3);
  const moe::SequenceLayout layout = padded_layout();
  MatrixX<double> x = random_matrix(8, 8, 5);

  SECTION("causal: a token does not see later tokens") {
    Encoder encoder(8, encoder_options(true, false, moe::EncoderActivation::relu), rng);
    const MatrixX<double> before = encoder.forward(x, layout);
    x.row(2).setConstant(0.5);  // position 2 of sequence 0
    const MatrixX<double> after = encoder.forward(x, layout);
    CHECK(after.topRows(2) == before.topRows(2));
    CHECK((after.row(2) - before.row(2)).norm() > 1e-6);
    CHECK((after.row(3) - before.row(3)).norm() > 1e-6);
    CHECK(after.bottomRows(4) == before.bottomRows(4));  // the other sequence
  }
  SECTION("padding: no token attends to padded keys") {
    Encoder encoder(8, encoder_options(false, true, moe::EncoderActivation::relu), rng);
    const MatrixX<double> before = encoder.forward(x, layout);
    x.row(6).setConstant(0.5);  // position 2 of sequence 1: padding
    x.row(7).setConstant(-0.5);
    const MatrixX<double> after = encoder.forward(x, layout);
    CHECK(after.topRows(6) == before.topRows(6));
    const auto& weights = encoder.layer(0).self_attn().attention_weights();  // rows (b * heads + h) * 4 + i
    for (Index h = 0; h < 2; ++h)
      for (Index i = 0; i < 4; ++i) {
        CHECK(weights.row((2 + h) * 4 + i).tail(2).isZero());
        CHECK(weights.row((2 + h) * 4 + i).sum() == Approx(1.0));
      }
  }
  SECTION("without a layout, forward(x) is one sequence") {
    Encoder encoder(8, encoder_options(true, false, moe::EncoderActivation::relu), rng);
    const MatrixX<double> one = encoder.forward(x, moe::SequenceLayout(1, 8));
    encoder.clear_layout();
    CHECK(encoder.forward(x) == one);
  }
}

TEST_CASE("encoder parameters have nn.TransformerEncoder's names and shapes") {
  moe::Rng rng(1);
  Encoder encoder(8, encoder_options(false, true, moe::EncoderActivation::relu), rng);
  std::vector<std::string> names;
  std::vector<moe::Shape> shapes;
  for (const auto& p : encoder.named_parameters()) {
    names.push_back(p.name);
    shapes.push_back(p.parameter->shape);
  }
  REQUIRE(names.size() == 2 * 12 + 2);
  CHECK(names[0] == "layers.0.self_attn.in_proj_weight");
  CHECK(shapes[0] == moe::Shape{24, 8});
  CHECK(names[1] == "layers.0.self_attn.in_proj_bias");
  CHECK(shapes[1] == moe::Shape{24});
  CHECK(names[2] == "layers.0.self_attn.out_proj.weight");
  CHECK(names[3] == "layers.0.self_attn.out_proj.bias");
  CHECK(names[4] == "layers.0.linear1.weight");
  CHECK(shapes[4] == moe::Shape{12, 8});
  CHECK(names[6] == "layers.0.linear2.weight");
  CHECK(shapes[6] == moe::Shape{8, 12});
  CHECK(names[8] == "layers.0.norm1.weight");
  CHECK(names[11] == "layers.0.norm2.bias");
  CHECK(names[12] == "layers.1.self_attn.in_proj_weight");
  CHECK(names[24] == "norm.weight");
  // PyTorch's initialisation: the attention's biases start at zero.
  CHECK(encoder.layer(0).self_attn().named_parameters()[1].parameter->value.isZero());
  CHECK(encoder.layer(0).self_attn().named_parameters()[3].parameter->value.isZero());
}

TEST_CASE("MLPRouter with one hidden layer is a two-layer ReLU MLP with a softmax per token") {
  moe::Rng rng(21);
  moe::MLPRouter<double> router(8, 3, {.hidden = {16}}, rng);
  const auto parameters = router.named_parameters();
  REQUIRE(parameters.size() == 4);
  CHECK(parameters[0].name == "net.0.weight");
  CHECK(parameters[0].parameter->shape == moe::Shape{16, 8});
  CHECK(parameters[2].name == "net.2.weight");
  CHECK(parameters[2].parameter->shape == moe::Shape{3, 16});
  const MatrixX<double> x = random_matrix(5, 8, 22);
  const MatrixX<double> scores = router.forward(x);
  for (Index t = 0; t < x.rows(); ++t) {
    const Eigen::VectorXd hidden =
        (parameters[0].parameter->value * x.row(t).transpose() + parameters[1].parameter->value.row(0).transpose())
            .cwiseMax(0.0);
    const Eigen::VectorXd logits =
        parameters[2].parameter->value * hidden + parameters[3].parameter->value.row(0).transpose();
    const Eigen::VectorXd softmax = logits.array().exp() / logits.array().exp().sum();
    CHECK((scores.row(t).transpose() - softmax).cwiseAbs().maxCoeff() < 1e-12);
  }
}

/// y of an MoELayer of encoders with k = num_experts (dense routing, no renormalisation) against
/// sum_e softmax weight(t, e) * encoder_e(x)[t], each encoder run on its own; then the layer's gradients.
template <template <class> class Router>
void check_dense_mixture(const typename Router<double>::Options& router) {
  using Layer = moe::MoELayer<Encoder, Router, moe::Dynamic, moe::NoBalancing>;
  typename Layer::Options options;
  options.d_model = 8;
  options.num_experts = 3;
  options.k = 3;
  options.expert = encoder_options(true, false, moe::EncoderActivation::gelu, 1);
  options.router = router;
  moe::Rng rng(31);
  Layer layer(options, rng);
  REQUIRE_FALSE(layer.router().renormalize());
  const moe::SequenceLayout layout = padded_layout();
  layer.set_layout(layout);
  const MatrixX<double> x = random_matrix(8, 8, 32);
  const MatrixX<double> y = layer.forward(x);

  const MatrixX<double> weights = layer.router().forward(x);
  MatrixX<double> expected = MatrixX<double>::Zero(8, 8);
  for (Index e = 0; e < 3; ++e) {
    Encoder copy = layer.expert(e);
    const MatrixX<double> out = copy.forward(x, layout);
    expected += (out.array().colwise() * weights.col(e).array()).matrix();
  }
  CHECK((y - expected).cwiseAbs().maxCoeff() < 1e-12);
  CHECK((weights.rowwise().sum().array() - 1.0).abs().maxCoeff() < 1e-12);
  moe::test::check_module_gradients(layer, x, 33);
}

TEST_CASE("a dense mixture of encoders is the softmax-weighted sum of every expert's output") {
  SECTION("MLPRouter, one hidden ReLU layer (the documents' token-level router)") {
    check_dense_mixture<moe::MLPRouter>({.hidden = {16}});
  }
  SECTION("SoftmaxTopK") { check_dense_mixture<moe::SoftmaxTopK>({}); }
}

TEST_CASE("sequence experts reject sparse routing, a capacity and a layout that does not fit") {
  DenseEncoderMoE::Options options;
  options.d_model = 8;
  options.num_experts = 3;
  options.k = 2;
  options.expert = encoder_options(false, false, moe::EncoderActivation::relu, 1);
  moe::Rng rng(41);
  CHECK_THROWS_WITH(DenseEncoderMoE(options, rng),
                    Catch::Contains("sequence experts") && Catch::Contains("k must be num_experts = 3, got 2"));
  options.k = 3;
  options.capacity_factor = 1.0;
  CHECK_THROWS_WITH(DenseEncoderMoE(options, rng), Catch::Contains("capacity_factor must be 0"));
  options.capacity_factor = 0.0;
  DenseEncoderMoE layer(options, rng);
  layer.set_layout(padded_layout());
  CHECK_THROWS_WITH(layer.forward(random_matrix(6, 8, 42)),
                    Catch::Contains("input has 6 rows, the layout set by set_layout has batch * seq_len = 2 * 4 = 8"));
}

TEST_CASE("transfer_state_dict puts a pretrained encoder into one expert slot") {
  DenseEncoderMoE::Options options;
  options.d_model = 8;
  options.num_experts = 3;
  options.k = 3;
  options.expert = encoder_options(false, false, moe::EncoderActivation::relu, 2);
  moe::Rng rng(51);
  DenseEncoderMoE layer(options, rng);
  Encoder pretrained(8, options.expert, rng);

  // A pretrained single-expert model: its encoder under "encoder.", beside an embedding.
  moe::StateDict<double> source;
  for (auto& [name, tensor] : moe::state_dict(pretrained)) source["encoder." + name] = tensor;
  source["embed.weight"] = {{4, 8}, Eigen::VectorXd::Ones(32)};

  const auto before = moe::state_dict(layer);
  const moe::LoadReport report = moe::transfer_state_dict(layer, source, {{"encoder.", "experts.2."}});
  CHECK(report.loaded.size() == 24);
  CHECK(report.skipped == std::vector<std::string>{"embed.weight"});
  const auto after = moe::state_dict(layer);
  for (const auto& [name, tensor] : after) {
    if (name.starts_with("experts.2."))
      CHECK(tensor.data == source.at("encoder." + name.substr(10)).data);
    else
      CHECK(tensor.data == before.at(name).data);
  }

  SECTION("from a module, into slot 0") {
    moe::transfer_state_dict(layer, pretrained, {{"", "experts.0."}});
    CHECK(moe::state_dict(layer.expert(0)).at("layers.1.linear2.weight").data ==
          moe::state_dict(pretrained).at("layers.1.linear2.weight").data);
  }
  SECTION("a shape mismatch names both names and both shapes") {
    Encoder::Options wider = options.expert;
    wider.layer.dim_feedforward = 16;
    Encoder other(8, wider, rng);
    CHECK_THROWS_WITH(
        moe::transfer_state_dict(layer, other, {{"", "experts.1."}}),
        "transfer_state_dict: tensor layers.0.linear1.bias (as experts.1.layers.0.linear1.bias) has shape [16], "
        "the module expects [12]");
    CHECK(same_tensors(moe::state_dict(layer), after));
  }
  SECTION("a module tensor without a source is an error") {
    Encoder shallow(8, encoder_options(false, false, moe::EncoderActivation::relu, 1), rng);
    CHECK_THROWS_WITH(moe::transfer_state_dict(layer, shallow, {{"", "experts.1."}}),
                      "transfer_state_dict: module tensor experts.1.layers.1.self_attn.in_proj_weight [24, 8] would "
                      "come from source tensor layers.1.self_attn.in_proj_weight, which the source does not have");
  }
  SECTION("a source tensor the module does not have is an error") {
    source["encoder.layers.2.norm1.weight"] = {{8}, Eigen::VectorXd::Ones(8)};
    CHECK_THROWS_WITH(moe::transfer_state_dict(layer, source, {{"encoder.", "experts.2."}}),
                      "transfer_state_dict: source tensor encoder.layers.2.norm1.weight [8] maps to "
                      "experts.2.layers.2.norm1.weight, which the module does not have");
  }
}
