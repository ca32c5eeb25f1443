#pragma once
// Pre-norm Transformer decoder blocks (Xiong et al. 2020, "On Layer Normalization in the Transformer
// Architecture"; the LLaMA / DeepSeek layout with RMSNorm) whose feed-forward part is dense or an
// MoELayer, and a causal language model built from them.

#include <concepts>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/module.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/nn/attention.hpp"
#include "moe/nn/embedding.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/rms_norm.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

/// h = x + attn(attn_norm(x)), y = h + ffn(ffn_norm(h)). FFN is a Module from d_model to d_model: a dense
/// FeedForward / SwiGLUFeedForward, built from (d_model, Options, Rng&), or an MoELayer, built from
/// (Options, Rng&) with Options::d_model filled in by the block when left 0. Parameter names
/// attn_norm.weight, attn.q_proj.weight, ..., ffn_norm.weight, ffn.*.
///
/// Module contract as CausalSelfAttention: forward(x) is one sequence; forward(x, layout) and
/// forward(x, batch, seq_len, lengths) a batch.
template <class FFN>
class DecoderBlock {
  static_assert(Module<FFN>,
                "moe::DecoderBlock: the FFN type must be a moe::Module: `using Scalar`, `const MatrixX<Scalar>& "
                "forward(ConstRef<Scalar> x)`, `const MatrixX<Scalar>& backward(ConstRef<Scalar> dy)` and "
                "`ParameterList<Scalar> named_parameters()`");
  static_assert(!ExpertChoiceLayer<FFN>,
                "moe::DecoderBlock: its attention is causal, and expert-choice routing (moe::ExpertChoice) is not: "
                "each expert takes its top-C tokens over the whole batch, so whether a token is processed depends on "
                "the scores of the tokens after it; route a decoder's MoE by token choice (SoftmaxTopK, "
                "SigmoidTopK)");

 public:
  using Scalar = typename FFN::Scalar;
  using Attention = CausalSelfAttention<Scalar>;
  using FFNType = FFN;
  /// Whether the FFN has an aux loss (an MoELayer).
  static constexpr bool has_aux_loss = requires(const FFN& f) {
    { f.aux_loss() } -> std::convertible_to<Scalar>;
  };

  struct Options {
    typename Attention::Options attn{};
    typename FFN::Options ffn{};
    double norm_eps = 1e-6;
  };

  /// Draws the attention's weights, then the FFN's.
  DecoderBlock(Index d_model, const Options& options, Rng& rng)
      : attn_norm_(d_model, options.norm_eps),
        attn_(d_model, options.attn, rng),
        ffn_norm_(d_model, options.norm_eps),
        ffn_(make_ffn(d_model, options.ffn, rng)) {
    if constexpr (requires { ffn_.out_features(); })
      detail::require(ffn_.out_features() == d_model, "DecoderBlock: the FFN outputs ", ffn_.out_features(),
                      " features, expected d_model = ", d_model, " for the residual connection");
  }

  Index d_model() const { return attn_.d_model(); }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) { return forward_with(x); }
  const MatrixX<Scalar>& forward(ConstRef<Scalar> x, const SequenceLayout& layout) { return forward_with(x, layout); }
  const MatrixX<Scalar>& forward(ConstRef<Scalar> x, Index batch, Index seq_len, std::span<const Index> lengths = {}) {
    return forward_with(x, batch, seq_len, lengths);
  }

  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == output_.rows() && dy.cols() == output_.cols(), "DecoderBlock: gradient has shape ",
                    dy.rows(), "x", dy.cols(), ", expected ", output_.rows(), "x", output_.cols());
    d_hidden_ = dy;
    d_hidden_ += ffn_norm_.backward(ffn_.backward(dy));
    grad_input_ = d_hidden_;
    grad_input_ += attn_norm_.backward(attn_.backward(d_hidden_));
    return grad_input_;
  }

  /// The FFN's aux loss of the last forward (its gradient is already in backward), 0 for a dense FFN.
  Scalar aux_loss() const {
    if constexpr (has_aux_loss)
      return ffn_.aux_loss();
    else
      return Scalar(0);
  }

  /// Forwards MoELayer::update_balancing (aux-loss-free bias update); nothing for a dense FFN.
  void update_balancing() {
    if constexpr (requires { ffn_.update_balancing(); }) ffn_.update_balancing();
  }

  void train(bool on = true) {
    training_ = on;
    set_training(attn_, on);
    set_training(ffn_, on);
  }
  void eval() { train(false); }
  bool training() const { return training_; }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    append_prefixed(list, attn_norm_.named_parameters(), "attn_norm.");
    append_prefixed(list, attn_.named_parameters(), "attn.");
    append_prefixed(list, ffn_norm_.named_parameters(), "ffn_norm.");
    append_prefixed(list, ffn_.named_parameters(), "ffn.");
    return list;
  }

  BufferList<Scalar> named_buffers() {
    BufferList<Scalar> list;
    append_prefixed(list, buffers_of(ffn_), "ffn.");
    return list;
  }

  GeneratorList named_generators() {
    GeneratorList list;
    append_prefixed(list, generators_of(ffn_), "ffn.");
    return list;
  }

  RMSNorm<Scalar>& attn_norm() { return attn_norm_; }
  Attention& attn() { return attn_; }
  RMSNorm<Scalar>& ffn_norm() { return ffn_norm_; }
  FFN& ffn() { return ffn_; }

 private:
  static FFN make_ffn(Index d_model, const typename FFN::Options& options, Rng& rng) {
    if constexpr (std::constructible_from<FFN, Index, const typename FFN::Options&, Rng&>) {
      return FFN(d_model, options, rng);
    } else {
      static_assert(std::constructible_from<FFN, const typename FFN::Options&, Rng&> &&
                        requires { options.d_model; },
                    "moe::DecoderBlock: the FFN type must be constructible as `FFN(Index d_model, const Options&, "
                    "Rng&)` or as `FFN(const Options&, Rng&)` with an `Options::d_model`");
      typename FFN::Options sized = options;
      if (sized.d_model == 0) sized.d_model = d_model;
      detail::require(sized.d_model == d_model, "DecoderBlock: Options::ffn.d_model is ", sized.d_model,
                      ", expected 0 or the block's d_model = ", d_model);
      return FFN(sized, rng);
    }
  }

  /// `layout` is empty (one sequence), a SequenceLayout, or (batch, seq_len, lengths).
  template <class... Layout>
  const MatrixX<Scalar>& forward_with(ConstRef<Scalar> x, const Layout&... layout) {
    hidden_ = x;
    hidden_ += attn_.forward(attn_norm_.forward(x), layout...);
    output_ = hidden_;
    output_ += ffn_.forward(ffn_norm_.forward(hidden_));
    return output_;
  }

  RMSNorm<Scalar> attn_norm_;
  Attention attn_;
  RMSNorm<Scalar> ffn_norm_;
  FFN ffn_;
  bool training_ = true;
  MatrixX<Scalar> hidden_, output_, d_hidden_, grad_input_;
};

/// A decoder-only language model: embed_tokens, num_layers decoder blocks named layers.0, layers.1, ...,
/// a final RMSNorm named norm and lm_head (Linear without bias): logits [batch * seq_len x vocab_size]
/// for ids laid out sequence-major. The first num_dense_layers blocks are DecoderBlock<DenseFFN> built
/// from Options::dense_block, the others DecoderBlock<FFN> built from Options::block: DeepSeekMoE's layout
/// (Dai et al. 2024; DeepSeek-V2/V3 "first_k_dense_replace"), whose first block keeps a dense FFN and the
/// rest are MoE. CausalLM<FFN> has one kind of block. Its input is ids, so it is not a moe::Module;
/// backward takes d loss / d logits and returns nothing. Add aux_loss() to the task loss; its gradient is
/// part of backward.
template <class DenseFFN, class FFN = DenseFFN>
class CausalLM {
 public:
  using Scalar = typename FFN::Scalar;
  using DenseBlock = DecoderBlock<DenseFFN>;
  using Block = DecoderBlock<FFN>;
  static_assert(std::same_as<typename DenseFFN::Scalar, Scalar>,
                "moe::CausalLM: DenseFFN and FFN must have the same Scalar");

  struct Options {
    Index vocab_size = 0;
    Index d_model = 0;
    Index num_layers = 1;                // every block, the dense ones included
    std::optional<Index> padding_idx{};  // the embedding row that gets no gradient
    typename Block::Options block{};     // block.norm_eps is also the final norm's
    Index num_dense_layers = 0;          // the first ones, DecoderBlock<DenseFFN>
    typename DenseBlock::Options dense_block{};
  };

  /// Draws embed_tokens, then the blocks in order, then lm_head.
  CausalLM(const Options& options, Rng& rng)
      : embed_tokens_(options.vocab_size, options.d_model, rng, options.padding_idx),
        dense_layers_(make_layers<DenseBlock>(validated(options).num_dense_layers, options.dense_block, options, rng)),
        layers_(make_layers<Block>(options.num_layers - options.num_dense_layers, options.block, options, rng)),
        norm_(options.d_model, options.block.norm_eps),
        lm_head_(options.d_model, options.vocab_size, rng, false) {}

  Index vocab_size() const { return embed_tokens_.num_embeddings(); }
  Index d_model() const { return embed_tokens_.dim(); }
  Index num_layers() const { return num_dense_layers() + static_cast<Index>(layers_.size()); }
  Index num_dense_layers() const { return static_cast<Index>(dense_layers_.size()); }

  const MatrixX<Scalar>& forward(std::span<const Index> ids, const SequenceLayout& layout) {
    detail::require(static_cast<Index>(ids.size()) == layout.tokens(), "CausalLM: got ", ids.size(),
                    " ids, the layout has batch * seq_len = ", layout.batch(), " * ", layout.seq_len(), " = ",
                    layout.tokens());
    const MatrixX<Scalar>* h = &embed_tokens_.forward(ids);
    for (auto& layer : dense_layers_) h = &layer.forward(*h, layout);
    for (auto& layer : layers_) h = &layer.forward(*h, layout);
    return lm_head_.forward(norm_.forward(*h));
  }

  const MatrixX<Scalar>& forward(std::span<const Index> ids, Index batch, Index seq_len,
                                 std::span<const Index> lengths = {}) {
    layout_.assign(batch, seq_len, lengths);
    return forward(ids, layout_);
  }

  /// Adds every parameter's gradient for d_logits = d loss / d logits of the last forward.
  void backward(ConstRef<Scalar> d_logits) {
    const MatrixX<Scalar>* g = &norm_.backward(lm_head_.backward(d_logits));
    for (auto layer = layers_.rbegin(); layer != layers_.rend(); ++layer) g = &layer->backward(*g);
    for (auto layer = dense_layers_.rbegin(); layer != dense_layers_.rend(); ++layer) g = &layer->backward(*g);
    embed_tokens_.backward(*g);
  }

  /// Sum of the blocks' aux losses of the last forward.
  Scalar aux_loss() const {
    Scalar total = 0;
    for (const auto& layer : dense_layers_) total += layer.aux_loss();
    for (const auto& layer : layers_) total += layer.aux_loss();
    return total;
  }

  void update_balancing() {
    for (auto& layer : dense_layers_) layer.update_balancing();
    for (auto& layer : layers_) layer.update_balancing();
  }

  void train(bool on = true) {
    training_ = on;
    for (auto& layer : dense_layers_) layer.train(on);
    for (auto& layer : layers_) layer.train(on);
  }
  void eval() { train(false); }
  bool training() const { return training_; }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    append_prefixed(list, embed_tokens_.named_parameters(), "embed_tokens.");
    for_each_layer([&](Index i, auto& layer) {
      append_prefixed(list, layer.named_parameters(), "layers." + std::to_string(i) + ".");
    });
    append_prefixed(list, norm_.named_parameters(), "norm.");
    append_prefixed(list, lm_head_.named_parameters(), "lm_head.");
    return list;
  }

  BufferList<Scalar> named_buffers() {
    BufferList<Scalar> list;
    for_each_layer([&](Index i, auto& layer) {
      append_prefixed(list, layer.named_buffers(), "layers." + std::to_string(i) + ".");
    });
    return list;
  }

  GeneratorList named_generators() {
    GeneratorList list;
    for_each_layer([&](Index i, auto& layer) {
      append_prefixed(list, layer.named_generators(), "layers." + std::to_string(i) + ".");
    });
    return list;
  }

  /// Calls visit(i, block) for every block in order, i counting from 0 over all of them.
  template <class Visit>
  void for_each_layer(Visit&& visit) {
    Index i = 0;
    for (auto& layer : dense_layers_) visit(i++, layer);
    for (auto& layer : layers_) visit(i++, layer);
  }

  Embedding<Scalar>& embed_tokens() { return embed_tokens_; }
  /// Block i of the whole stack; it must be a DecoderBlock<FFN> (any i when DenseFFN is FFN).
  Block& layer(Index i) {
    if constexpr (std::same_as<DenseFFN, FFN>)
      if (i >= 0 && i < num_dense_layers()) return dense_layers_[static_cast<std::size_t>(i)];
    detail::require(i >= num_dense_layers() && i < num_layers(), "CausalLM: layer ", i,
                    " is not a DecoderBlock<FFN>; those are layers ", num_dense_layers(), " to ", num_layers() - 1);
    return layers_[static_cast<std::size_t>(i - num_dense_layers())];
  }
  /// Block i < num_dense_layers(), a DecoderBlock<DenseFFN>.
  DenseBlock& dense_layer(Index i) {
    detail::require(i >= 0 && i < num_dense_layers(), "CausalLM: dense layer ", i, " does not exist; there are ",
                    num_dense_layers());
    return dense_layers_[static_cast<std::size_t>(i)];
  }
  RMSNorm<Scalar>& norm() { return norm_; }
  Linear<Scalar>& lm_head() { return lm_head_; }

 private:
  static const Options& validated(const Options& options) {
    detail::require(options.num_layers >= 0, "CausalLM: num_layers must be non-negative, got ", options.num_layers);
    detail::require(options.num_dense_layers >= 0 && options.num_dense_layers <= options.num_layers,
                    "CausalLM: num_dense_layers must lie in [0, num_layers = ", options.num_layers, "], got ",
                    options.num_dense_layers);
    return options;
  }

  template <class B>
  static std::vector<B> make_layers(Index count, const typename B::Options& block, const Options& options, Rng& rng) {
    std::vector<B> layers;
    layers.reserve(static_cast<std::size_t>(count));
    for (Index i = 0; i < count; ++i) layers.emplace_back(options.d_model, block, rng);
    return layers;
  }

  Embedding<Scalar> embed_tokens_;
  std::vector<DenseBlock> dense_layers_;
  std::vector<Block> layers_;
  RMSNorm<Scalar> norm_;
  Linear<Scalar> lm_head_;
  SequenceLayout layout_;
  bool training_ = true;
};

/// Next-token targets for ids [batch * seq_len], sequence-major: targets[b L + i] = ids[b L + i + 1], and
/// ignore_index at the last position of each sequence and wherever the token or the next one is pad_id
/// (a negative pad_id means no padding), so CrossEntropyLoss(ignore_index) skips them.
inline std::vector<Index> next_token_targets(std::span<const Index> ids, Index batch, Index seq_len, Index pad_id,
                                             Index ignore_index = -100) {
  detail::require(batch > 0 && seq_len > 0, "next_token_targets: batch and seq_len must be positive, got ", batch,
                  " and ", seq_len);
  detail::require(static_cast<Index>(ids.size()) == batch * seq_len, "next_token_targets: got ", ids.size(),
                  " ids, expected batch * seq_len = ", batch, " * ", seq_len, " = ", batch * seq_len);
  std::vector<Index> targets(ids.size(), ignore_index);
  for (Index b = 0; b < batch; ++b) {
    for (Index i = 0; i + 1 < seq_len; ++i) {
      const auto t = static_cast<std::size_t>(b * seq_len + i);
      if (ids[t] != pad_id && ids[t + 1] != pad_id) targets[t] = ids[t + 1];
    }
  }
  return targets;
}

}  // namespace moe
