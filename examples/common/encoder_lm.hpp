#pragma once
// The language model of the documents' Transformer-expert experiments (seeds/003, methods 1 and 3): GPT-2
// style token and learned position embeddings, then a body, then a linear LM head predicting the next token.
// The body is one causal TransformerEncoder (a single expert, pretrained alone in phase 1) or a dense MoE of
// such encoders mixed per token by a 2-layer ReLU MLP router (phase 2): "each expert processes the input in
// parallel, and their outputs are combined as a weighted sum according to the routing weights".
//
// Both are trained for next-token prediction, so every encoder layer carries the causal mask: a token's
// logits depend on that token and the ones before it only, never on the token it predicts.

#include <concepts>
#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "common/check.hpp"
#include "moe/balancing/entropy_regularization.hpp"
#include "moe/core/module.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/attention.hpp"
#include "moe/nn/embedding.hpp"
#include "moe/nn/encoder.hpp"
#include "moe/nn/linear.hpp"
#include "moe/routing/mlp_router.hpp"

namespace moe::examples {

/// The dense MoE body: N encoder experts, every token weighted over all of them (k = N) by the MLP router's
/// softmax, the router's entropy regularised (beta 0: none).
template <class Scalar = float>
using DenseEncoderMoE = MoELayer<TransformerEncoder<Scalar>, MLPRouter, Dynamic, EntropyRegularization>;

/// Sizes of an EncoderLM. num_experts and router_hidden are the MoE body's; the single-encoder body ignores them.
struct EncoderLMOptions {
  Index vocab_size = 0;
  Index max_len = 0;  // rows of the position embedding: the longest sequence the model takes
  Index d_model = 0;
  Index num_heads = 0;
  Index num_layers = 0;     // encoder layers of each expert
  Index ffn_hidden = 0;     // each encoder layer's feed-forward width (dim_feedforward)
  bool norm_first = false;  // false: post-norm (nn.TransformerEncoderLayer's default); true: pre-norm + final norm
  Index num_experts = 1;
  Index router_hidden = 0;                                 // the router MLP's hidden width
  double entropy_beta = 0.0;                               // weight of the router's entropy regularisation; 0: none
  EncoderActivation activation = EncoderActivation::relu;  // nn.TransformerEncoderLayer's default
};

/// The encoder (one expert) of an EncoderLM with these options: causal in every layer.
template <class Scalar = float>
typename TransformerEncoder<Scalar>::Options encoder_options(const EncoderLMOptions& o) {
  typename TransformerEncoder<Scalar>::Options encoder;
  encoder.num_layers = o.num_layers;
  encoder.layer.num_heads = o.num_heads;
  encoder.layer.dim_feedforward = o.ffn_hidden;
  encoder.layer.activation = o.activation;
  encoder.layer.norm_first = o.norm_first;
  encoder.layer.causal = true;
  encoder.final_norm = o.norm_first;  // pre-norm leaves the residual stream unnormalised: norm it once at the end
  return encoder;
}

/// embed_tokens [vocab x d] + embed_positions [max_len x d] -> Body -> lm_head [vocab x d] (+ bias): logits
/// [batch * seq_len x vocab] for ids laid out sequence-major (row b * seq_len + i is position i of sequence b),
/// as CausalLM. Body is TransformerEncoder<Scalar> (state-dict prefix `encoder.`) or DenseEncoderMoE<Scalar>
/// (prefix `moe.`: `moe.router.net.0.weight`, `moe.experts.{e}.layers.0...`). Embeddings are initialised as
/// nn.Embedding (N(0, 1)), the head as nn.Linear; drawn in the order embed_tokens, embed_positions, body,
/// lm_head. Positions count from the first row of each sequence; padding is marked by the layout, is never
/// attended to, and its rows' logits are left to the loss to ignore (next_token_targets).
///
/// The entropy term of the MoE body (aux_loss) averages over every row it routes, padding rows included:
/// EntropyRegularization does not see the layout.
template <class Body>
class EncoderLM {
 public:
  using Scalar = typename Body::Scalar;
  using BodyType = Body;
  using Options = EncoderLMOptions;
  /// Whether the body is the dense MoE (it has experts and a router) rather than one encoder.
  static constexpr bool is_moe = requires(Body & b) { b.router(); };
  static_assert(is_moe ? std::same_as<Body, DenseEncoderMoE<Scalar>> : std::same_as<Body, TransformerEncoder<Scalar>>,
                "moe::examples::EncoderLM: Body must be TransformerEncoder<Scalar> or DenseEncoderMoE<Scalar>");
  /// The state-dict prefix of the body.
  static constexpr const char* body_prefix = is_moe ? "moe." : "encoder.";

  EncoderLM(const Options& options, Rng& rng)
      : options_(validated(options)),
        embed_tokens_(options.vocab_size, options.d_model, rng),
        embed_positions_(options.max_len, options.d_model, rng),
        body_(make_body(options, rng)),
        lm_head_(options.d_model, options.vocab_size, rng) {}

  const Options& options() const { return options_; }
  Index vocab_size() const { return options_.vocab_size; }
  Index max_len() const { return options_.max_len; }
  Index d_model() const { return options_.d_model; }
  Index num_experts() const { return is_moe ? options_.num_experts : 1; }

  const MatrixX<Scalar>& forward(std::span<const Index> ids, const SequenceLayout& layout) {
    require(static_cast<Index>(ids.size()) == layout.tokens(), "EncoderLM: got ", ids.size(),
            " ids, the layout has batch * seq_len = ", layout.batch(), " * ", layout.seq_len(), " = ", layout.tokens());
    require(layout.seq_len() <= max_len(), "EncoderLM: sequences of ", layout.seq_len(),
            " positions, the position embedding has max_len = ", max_len());
    positions_.resize(ids.size());
    for (Index b = 0; b < layout.batch(); ++b)
      for (Index i = 0; i < layout.seq_len(); ++i) positions_[static_cast<std::size_t>(b * layout.seq_len() + i)] = i;
    input_ = embed_tokens_.forward(ids);
    input_ += embed_positions_.forward(positions_);
    if constexpr (is_moe) {
      body_.set_layout(layout);
      return lm_head_.forward(body_.forward(input_));
    } else {
      return lm_head_.forward(body_.forward(input_, layout));
    }
  }

  /// Adds every parameter's gradient for d_logits = d loss / d logits of the last forward, and the gradient of
  /// aux_loss() (the router's entropy term) with it.
  void backward(ConstRef<Scalar> d_logits) {
    const MatrixX<Scalar>& d_input = body_.backward(lm_head_.backward(d_logits));
    embed_tokens_.backward(d_input);
    embed_positions_.backward(d_input);
  }

  /// The body's aux loss of the last forward (0 for one encoder): add it to the task loss.
  Scalar aux_loss() const {
    if constexpr (is_moe)
      return body_.aux_loss();
    else
      return Scalar(0);
  }

  void update_balancing() {
    if constexpr (requires { body_.update_balancing(); }) body_.update_balancing();
  }

  void train(bool on = true) {
    training_ = on;
    set_training(body_, on);
  }
  void eval() { train(false); }
  bool training() const { return training_; }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    append_prefixed(list, embed_tokens_.named_parameters(), "embed_tokens.");
    append_prefixed(list, embed_positions_.named_parameters(), "embed_positions.");
    append_prefixed(list, body_.named_parameters(), body_prefix);
    append_prefixed(list, lm_head_.named_parameters(), "lm_head.");
    return list;
  }

  BufferList<Scalar> named_buffers() {
    BufferList<Scalar> list;
    append_prefixed(list, buffers_of(body_), body_prefix);
    return list;
  }

  GeneratorList named_generators() {
    GeneratorList list;
    append_prefixed(list, generators_of(body_), body_prefix);
    return list;
  }

  Embedding<Scalar>& embed_tokens() { return embed_tokens_; }
  Embedding<Scalar>& embed_positions() { return embed_positions_; }
  Body& body() { return body_; }
  const Body& body() const { return body_; }
  Linear<Scalar>& lm_head() { return lm_head_; }

 private:
  static const Options& validated(const Options& o) {
    for (const auto& [value, name] : {std::pair{o.vocab_size, "vocab_size"}, std::pair{o.max_len, "max_len"},
                                      std::pair{o.d_model, "d_model"}, std::pair{o.num_heads, "num_heads"},
                                      std::pair{o.num_layers, "num_layers"}, std::pair{o.ffn_hidden, "ffn_hidden"}})
      require(value > 0, "EncoderLM: ", name, " must be positive, got ", value);
    if constexpr (is_moe) {
      require(o.num_experts > 0, "EncoderLM: num_experts must be positive, got ", o.num_experts);
      require(o.router_hidden > 0, "EncoderLM: router_hidden must be positive, got ", o.router_hidden);
      require(o.entropy_beta >= 0.0, "EncoderLM: entropy_beta must be non-negative (0: none), got ", o.entropy_beta);
    }
    return o;
  }

  static Body make_body(const Options& o, Rng& rng) {
    if constexpr (is_moe) {
      typename Body::Options moe;
      moe.d_model = o.d_model;
      moe.num_experts = o.num_experts;
      moe.k = o.num_experts;  // dense: every expert sees every token, weighted by the router
      moe.expert = encoder_options<Scalar>(o);
      moe.router.hidden = {o.router_hidden};
      moe.balancer.beta = o.entropy_beta;
      return Body(moe, rng);
    } else {
      return Body(o.d_model, encoder_options<Scalar>(o), rng);
    }
  }

  Options options_;
  Embedding<Scalar> embed_tokens_, embed_positions_;
  Body body_;
  Linear<Scalar> lm_head_;
  bool training_ = true;
  std::vector<Index> positions_;
  MatrixX<Scalar> input_;
};

/// Phase 1's model: one causal encoder between the embeddings and the head.
template <class Scalar = float>
using SingleEncoderLMOf = EncoderLM<TransformerEncoder<Scalar>>;
/// Phase 2's model: the dense MoE of encoders.
template <class Scalar = float>
using DenseEncoderMoELMOf = EncoderLM<DenseEncoderMoE<Scalar>>;
using SingleEncoderLM = SingleEncoderLMOf<float>;
using DenseEncoderMoELM = DenseEncoderMoELMOf<float>;

/// Copies a pretrained single-encoder LM into expert `slot` of an MoE LM (`encoder.*` -> `moe.experts.{slot}.*`)
/// by state-dict names, with its token and position embeddings when `embedding` and its head when `head`. A
/// tensor whose shape differs is an error naming both shapes (moe::transfer_state_dict); on any error `moe` is
/// unchanged. Returns what was copied.
template <class Scalar>
LoadReport load_pretrained_expert(DenseEncoderMoELMOf<Scalar>& moe, const SingleEncoderLMOf<Scalar>& expert, Index slot,
                                  bool embedding, bool head) {
  require(slot >= 0 && slot < moe.num_experts(), "load_pretrained_expert: slot ", slot, ", expected [0, ",
          moe.num_experts(), ")");
  std::map<std::string, std::string> prefix_map{{"encoder.", "moe.experts." + std::to_string(slot) + "."}};
  if (embedding) {
    prefix_map.emplace("embed_tokens.", "embed_tokens.");
    prefix_map.emplace("embed_positions.", "embed_positions.");
  }
  if (head) prefix_map.emplace("lm_head.", "lm_head.");
  // state_dict only reads, but takes the module as named_parameters() does: non-const.
  auto& source = const_cast<SingleEncoderLMOf<Scalar>&>(expert);
  return transfer_state_dict(moe, state_dict(source), prefix_map);
}

/// Sets the MoE LM's token and position embeddings to the element-wise mean of the experts' (seeds/003
/// method 3: the MoE's embedding averaged from the pretrained experts'). Every expert's embeddings must have
/// the MoE's shapes; on an error `moe` is unchanged.
template <class Scalar>
void average_embeddings(DenseEncoderMoELMOf<Scalar>& moe,
                        std::span<const SingleEncoderLMOf<std::type_identity_t<Scalar>>* const> experts) {
  require(!experts.empty(), "average_embeddings: no experts to average");
  const auto average = [&](Parameter<Scalar>& target, auto embedding_of, const char* name) {
    MatrixX<Scalar> sum = MatrixX<Scalar>::Zero(target.value.rows(), target.value.cols());
    for (std::size_t e = 0; e < experts.size(); ++e) {
      require(experts[e] != nullptr, "average_embeddings: expert ", e, " is null");
      auto& expert = const_cast<SingleEncoderLMOf<Scalar>&>(*experts[e]);  // read only; the accessor is non-const
      const auto& value = embedding_of(expert).weight().value;
      require(value.rows() == sum.rows() && value.cols() == sum.cols(), "average_embeddings: expert ", e, "'s ", name,
              " has shape [", value.rows(), ", ", value.cols(), "], the MoE's is [", sum.rows(), ", ", sum.cols(), "]");
      sum += value;
    }
    return MatrixX<Scalar>(sum / static_cast<Scalar>(experts.size()));
  };
  const MatrixX<Scalar> tokens = average(
      moe.embed_tokens().weight(), [](auto& lm) -> auto& { return lm.embed_tokens(); }, "embed_tokens.weight");
  const MatrixX<Scalar> positions = average(
      moe.embed_positions().weight(), [](auto& lm) -> auto& { return lm.embed_positions(); }, "embed_positions.weight");
  moe.embed_tokens().weight().value = tokens;
  moe.embed_positions().weight().value = positions;
}

}  // namespace moe::examples
