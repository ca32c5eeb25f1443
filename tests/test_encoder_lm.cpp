// The examples' encoder language model (examples/common/encoder_lm.hpp): gradients of the whole model with
// padding for both bodies, causality, state-dict names, and the transfer of a pretrained single-encoder LM
// into an expert slot of the MoE LM.

#include <cstdint>
#include <string>
#include <vector>

#include "common/encoder_lm.hpp"
#include "gradient_check.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/nn/loss.hpp"
#include "moe/nn/transformer.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/train/trainer.hpp"
#include "temp_dir.hpp"

using moe::Index;
using moe::MatrixX;
using moe::SequenceLayout;
using moe::examples::EncoderLMOptions;

namespace {

using SingleLM = moe::examples::SingleEncoderLMOf<double>;
using MoELM = moe::examples::DenseEncoderMoELMOf<double>;

EncoderLMOptions tiny_options(bool norm_first, Index num_experts = 1, double entropy_beta = 0.0) {
  return {.vocab_size = 7,
          .max_len = 6,
          .d_model = 8,
          .num_heads = 2,
          .num_layers = num_experts > 1 ? 1 : 2,
          .ffn_hidden = 12,
          .norm_first = norm_first,
          .num_experts = num_experts,
          .router_hidden = 6,
          .entropy_beta = entropy_beta};
}

/// Two sequences of 5: the first full, the second 3 tokens and 2 of padding (pad id 0).
SequenceLayout padded_lm_layout() {
  const std::vector<Index> lengths{5, 3};
  return SequenceLayout(2, 5, lengths);
}

std::vector<Index> padded_ids() { return {3, 1, 4, 1, 5, 2, 6, 5, 0, 0}; }

/// loss = sum(logits .* R) + aux_loss against finite differences, for every parameter. Padding rows are in
/// R too: their logits are computed, and the check covers that no gradient of theirs is lost either.
template <class LM>
void check_lm_gradients(LM& lm, std::uint64_t seed) {
  const std::vector<Index> ids = padded_ids();
  const SequenceLayout layout = padded_lm_layout();
  moe::Rng rng(seed);
  MatrixX<double> weights(static_cast<Index>(ids.size()), lm.vocab_size());
  moe::fill_uniform(weights, rng, -1.0, 1.0);
  auto loss = [&] {
    const double task = (lm.forward(ids, layout).array() * weights.array()).sum();
    return task + lm.aux_loss();
  };
  const auto parameters = lm.named_parameters();
  moe::zero_grad(parameters);
  lm.forward(ids, layout);
  lm.backward(weights);
  for (const auto& p : parameters) {
    const MatrixX<double> analytic = p.parameter->grad;
    const moe::test::GradientError e = moe::test::compare_gradient(loss, p.parameter->value, analytic, p.name);
    INFO(e.where);
    CHECK(e.worst <= 1.0);
  }
}

bool same_tensor(const moe::Tensor<double>& a, const moe::Tensor<double>& b) {
  return a.shape == b.shape && a.data == b.data;
}

}  // namespace

TEST_CASE("EncoderLM gradients match finite differences with padding, for both bodies", "[encoder_lm][gradient]") {
  SECTION("one encoder, post-norm") {
    moe::Rng rng(1);
    SingleLM lm(tiny_options(false), rng);
    check_lm_gradients(lm, 2);
  }
  SECTION("one encoder, pre-norm") {
    moe::Rng rng(3);
    SingleLM lm(tiny_options(true), rng);
    check_lm_gradients(lm, 4);
  }
  SECTION("dense MoE of three encoders with the router's entropy term") {
    moe::Rng rng(5);
    MoELM lm(tiny_options(false, 3, 0.5), rng);
    lm.forward(padded_ids(), padded_lm_layout());
    REQUIRE(lm.aux_loss() != 0.0);
    check_lm_gradients(lm, 6);
  }
}

TEST_CASE("EncoderLM with CrossEntropyLoss and next_token_targets: padding contributes nothing",
          "[encoder_lm][gradient]") {
  moe::Rng rng(7);
  MoELM lm(tiny_options(false, 2), rng);
  const SequenceLayout layout = padded_lm_layout();
  std::vector<Index> ids = padded_ids();
  moe::CrossEntropyLoss<double> loss(-100);
  const std::vector<Index> targets = moe::next_token_targets(ids, 2, 5, 0);
  const double before = loss.forward(lm.forward(ids, layout), targets);
  const auto parameters = lm.named_parameters();
  moe::zero_grad(parameters);
  lm.backward(loss.backward());
  const MatrixX<double> embedding_grad = lm.embed_tokens().weight().grad;
  CHECK(embedding_grad.row(0).isZero());  // the pad id reaches no counted prediction
  ids[8] = 4;                             // a padding position's id changes: nothing counted changes
  ids[9] = 2;
  CHECK(loss.forward(lm.forward(ids, layout), targets) == before);
}

TEST_CASE("EncoderLM is causal: a token's logits do not depend on later tokens", "[encoder_lm]") {
  const auto check = [](auto& lm) {
    const SequenceLayout layout = padded_lm_layout();
    std::vector<Index> ids = padded_ids();
    const MatrixX<double> before = lm.forward(ids, layout);
    ids[2] = 6;  // position 2 of sequence 0
    const MatrixX<double> after = lm.forward(ids, layout);
    CHECK(after.topRows(2) == before.topRows(2));
    for (Index row = 2; row < 5; ++row) CHECK((after.row(row) - before.row(row)).norm() > 1e-9);
    CHECK(after.bottomRows(5) == before.bottomRows(5));  // the other sequence
  };
  SECTION("one encoder") {
    moe::Rng rng(11);
    SingleLM lm(tiny_options(false), rng);
    check(lm);
  }
  SECTION("dense MoE") {
    moe::Rng rng(12);
    MoELM lm(tiny_options(true, 3), rng);
    check(lm);
  }
}

TEST_CASE("EncoderLM state dicts use the library's names", "[encoder_lm]") {
  moe::Rng rng(13);
  SingleLM single(tiny_options(false), rng);
  MoELM moe_lm(tiny_options(false, 3), rng);
  const auto single_dict = moe::state_dict(single);
  const auto moe_dict = moe::state_dict(moe_lm);
  CHECK(single_dict.at("embed_tokens.weight").shape == moe::Shape{7, 8});
  CHECK(single_dict.at("embed_positions.weight").shape == moe::Shape{6, 8});
  CHECK(single_dict.at("encoder.layers.1.self_attn.in_proj_weight").shape == moe::Shape{24, 8});
  CHECK(single_dict.at("lm_head.weight").shape == moe::Shape{7, 8});
  CHECK(single_dict.at("lm_head.bias").shape == moe::Shape{7});
  CHECK(moe_dict.at("moe.router.net.0.weight").shape == moe::Shape{6, 8});
  CHECK(moe_dict.at("moe.router.net.2.weight").shape == moe::Shape{3, 6});
  CHECK(moe_dict.at("moe.experts.2.layers.0.linear1.weight").shape == moe::Shape{12, 8});
  CHECK_FALSE(single_dict.contains("encoder.norm.weight"));  // post-norm: no final norm
  CHECK(moe_dict.size() == 2 + 4 + 3 * 12 + 2);

  MoELM copy(tiny_options(false, 3), rng);
  moe::load_state_dict(copy, moe_dict);
  const std::vector<Index> ids = padded_ids();
  CHECK(copy.forward(ids, padded_lm_layout()) == moe_lm.forward(ids, padded_lm_layout()));
}

TEST_CASE("EncoderLM rejects bad sizes and inputs with a named reason", "[encoder_lm][errors]") {
  moe::Rng rng(14);
  EncoderLMOptions options = tiny_options(false, 3);
  options.router_hidden = 0;
  CHECK_THROWS_WITH(MoELM(options, rng), "EncoderLM: router_hidden must be positive, got 0");
  SingleLM single(tiny_options(false), rng);  // the single encoder ignores the router's size
  const std::vector<Index> ids(14, 1);
  CHECK_THROWS_WITH(single.forward(ids, SequenceLayout(2, 7)),
                    "EncoderLM: sequences of 7 positions, the position embedding has max_len = 6");
  CHECK_THROWS_WITH(single.forward(ids, SequenceLayout(3, 5)),
                    "EncoderLM: got 14 ids, the layout has batch * seq_len = 3 * 5 = 15");
}

TEST_CASE("load_pretrained_expert copies exactly the named tensors into one slot", "[encoder_lm][transfer]") {
  moe::Rng rng(21);
  MoELM moe_lm(tiny_options(false, 3), rng);
  EncoderLMOptions expert_options = tiny_options(false, 3);
  expert_options.num_layers = 1;  // the MoE's experts have one layer
  SingleLM expert(expert_options, rng);
  const auto before = moe::state_dict(moe_lm);
  const auto source = moe::state_dict(expert);

  const auto copied_from = [&](const std::string& name, bool embedding, bool head) -> std::string {
    if (name.starts_with("moe.experts.1.")) return "encoder." + name.substr(14);
    if (embedding && name.starts_with("embed_")) return name;
    if (head && name.starts_with("lm_head.")) return name;
    return "";
  };
  for (const bool embedding : {false, true}) {
    for (const bool head : {false, true}) {
      MoELM target = moe_lm;
      const moe::LoadReport report = moe::examples::load_pretrained_expert(target, expert, 1, embedding, head);
      CHECK(report.loaded.size() == 12 + (embedding ? 2u : 0u) + (head ? 2u : 0u));
      for (const auto& [name, tensor] : moe::state_dict(target)) {
        INFO(name << " embedding " << embedding << " head " << head);
        const std::string from = copied_from(name, embedding, head);
        CHECK(same_tensor(tensor, from.empty() ? before.at(name) : source.at(from)));
      }
    }
  }

  SECTION("a shape mismatch names both shapes and leaves the model unchanged") {
    EncoderLMOptions wider = expert_options;
    wider.ffn_hidden = 16;
    SingleLM other(wider, rng);
    CHECK_THROWS_WITH(moe::examples::load_pretrained_expert(moe_lm, other, 0, true, true),
                      "transfer_state_dict: tensor encoder.layers.0.linear1.bias (as "
                      "moe.experts.0.layers.0.linear1.bias) has shape [16], the module expects [12]");
    EncoderLMOptions bigger_vocabulary = expert_options;
    bigger_vocabulary.vocab_size = 9;
    SingleLM third(bigger_vocabulary, rng);
    CHECK_THROWS_WITH(moe::examples::load_pretrained_expert(moe_lm, third, 0, true, false),
                      "transfer_state_dict: tensor embed_tokens.weight has shape [9, 8], the module expects [7, 8]");
    for (const auto& [name, tensor] : moe::state_dict(moe_lm)) CHECK(same_tensor(tensor, before.at(name)));
  }
  SECTION("a slot out of range is an error") {
    CHECK_THROWS_WITH(moe::examples::load_pretrained_expert(moe_lm, expert, 3, false, false),
                      "load_pretrained_expert: slot 3, expected [0, 3)");
  }
}

TEST_CASE("average_embeddings sets the MoE's embeddings to the experts' mean", "[encoder_lm][transfer]") {
  moe::Rng rng(31);
  MoELM moe_lm(tiny_options(false, 3), rng);
  EncoderLMOptions expert_options = tiny_options(false);
  std::vector<SingleLM> experts;
  for (int e = 0; e < 3; ++e) experts.emplace_back(expert_options, rng);
  const std::vector<const SingleLM*> pointers{&experts[0], &experts[1], &experts[2]};
  const auto before = moe::state_dict(moe_lm);
  moe::examples::average_embeddings(moe_lm, pointers);
  MatrixX<double> tokens = MatrixX<double>::Zero(7, 8), positions = MatrixX<double>::Zero(6, 8);
  for (auto& expert : experts) {
    tokens += expert.embed_tokens().weight().value;
    positions += expert.embed_positions().weight().value;
  }
  CHECK((moe_lm.embed_tokens().weight().value - tokens / 3.0).cwiseAbs().maxCoeff() < 1e-15);
  CHECK((moe_lm.embed_positions().weight().value - positions / 3.0).cwiseAbs().maxCoeff() < 1e-15);
  for (const auto& [name, tensor] : moe::state_dict(moe_lm))
    if (!name.starts_with("embed_")) CHECK(same_tensor(tensor, before.at(name)));

  SECTION("a shape mismatch is an error naming both shapes, the model unchanged") {
    const auto averaged = moe::state_dict(moe_lm);
    expert_options.max_len = 4;
    SingleLM shorter(expert_options, rng);
    const std::vector<const SingleLM*> mixed{&experts[0], &shorter};
    CHECK_THROWS_WITH(moe::examples::average_embeddings(moe_lm, mixed),
                      "average_embeddings: expert 1's embed_positions.weight has shape [4, 8], the MoE's is [6, 8]");
    for (const auto& [name, tensor] : moe::state_dict(moe_lm)) CHECK(same_tensor(tensor, averaged.at(name)));
    CHECK_THROWS_WITH(moe::examples::average_embeddings(moe_lm, std::vector<const SingleLM*>{}),
                      "average_embeddings: no experts to average");
  }
}

TEST_CASE("the MoE LM trains with moe::Trainer and Adam, and round-trips through safetensors",
          "[encoder_lm][training]") {
  using LM = moe::examples::DenseEncoderMoELM;
  moe::Rng rng(41);
  LM lm({.vocab_size = 6,
         .max_len = 8,
         .d_model = 16,
         .num_heads = 2,
         .num_layers = 1,
         .ffn_hidden = 32,
         .num_experts = 2,
         .router_hidden = 8,
         .entropy_beta = 1e-2},
        rng);
  // Eight sequences that each count up from a different start, modulo 5, then pad (id 5) to length 8.
  std::vector<Index> ids;
  std::vector<Index> lengths;
  for (Index s = 0; s < 8; ++s) {
    const Index length = 5 + s % 4;
    lengths.push_back(length);
    for (Index i = 0; i < 8; ++i) ids.push_back(i < length ? (s + i) % 5 : 5);
  }
  const SequenceLayout layout(8, 8, lengths);
  const std::vector<Index> targets = moe::next_token_targets(ids, 8, 8, 5);
  moe::CrossEntropyLoss<float> cross_entropy;
  const auto evaluate = [&] {
    lm.eval();
    return cross_entropy.forward(lm.forward(ids, layout), targets);
  };
  const float initial = evaluate();
  moe::Adam<float> optimizer(lm.named_parameters(), {.lr = 1e-2});
  moe::Rng order(42);
  moe::Trainer trainer(lm, optimizer, order, {.batch_size = 8, .epochs = 40, .shuffle = moe::Shuffle::None});
  trainer.fit(1, [&](std::span<const Index>) {
    const float loss = cross_entropy.forward(lm.forward(ids, layout), targets) + lm.aux_loss();
    lm.backward(cross_entropy.backward());
    return loss;
  });
  const float trained = evaluate();
  INFO("loss " << initial << " -> " << trained);
  CHECK(trained < 0.25f * initial);

  moe::test::TempDir dir("encoder_lm");
  moe::save_module(dir / "lm.safetensors", lm);
  moe::Rng other(43);
  LM loaded(lm.options(), other);
  moe::load_module(dir / "lm.safetensors", loaded);
  loaded.eval();
  CHECK(loaded.forward(ids, layout) == lm.forward(ids, layout));
}
