#pragma once
// The Transformer encoder of Vaswani et al. 2017 ("Attention Is All You Need") as PyTorch's
// nn.TransformerEncoder / nn.TransformerEncoderLayer (batch_first) has it: multi-head self-attention with
// a packed in_proj, a padding mask and an optional causal mask, LayerNorm, a ReLU or GELU feed-forward,
// post-norm (PyTorch's default, norm_first = false) or pre-norm (norm_first = true, Xiong et al. 2020,
// "On Layer Normalization in the Transformer Architecture"). No dropout (PyTorch's with dropout = 0).
//
// TransformerEncoder is a moe::Expert: a whole encoder as one expert of an MoELayer (the `code_expert`
// and `domain_overlap` experiments), run on the CPU backend's per-module path.

#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/attention.hpp"
#include "moe/nn/layer_norm.hpp"
#include "moe/nn/linear.hpp"

namespace moe {

/// y = out_proj(concat_h softmax(q_h k_h^T / sqrt(head_dim) + mask) v_h) with [q k v] = x in_proj_weight^T +
/// in_proj_bias: nn.MultiheadAttention(batch_first=True) called as self-attention, with parameters
/// in_proj_weight [3d x d], in_proj_bias [3d], out_proj.weight, out_proj.bias (no biases with bias = false).
/// Query i of sequence b attends to the keys j that are not padding (PyTorch's key_padding_mask) and, when causal, j <= i (the
/// mask of nn.Transformer.generate_square_subsequent_mask). A query with no such key (causal with left
/// padding) gets a zero context where PyTorch gives NaN. No positional encoding: the embedding adds one.
///
/// Module contract as CausalSelfAttention: forward(x) is one sequence; forward(x, layout) a batch;
/// backward uses the layout of the last forward. Items (sequence, head) run on parallel_for, so any thread
/// count gives the same bits.
template <class ScalarT = float>
class MultiheadSelfAttention {
 public:
  using Scalar = ScalarT;

  struct Options {
    Index num_heads = 1;
    bool bias = true;     // in_proj_bias and out_proj.bias
    bool causal = false;  // token i sees tokens j <= i only (next-token prediction)
  };

  /// PyTorch's initialisation: in_proj_weight xavier_uniform, out_proj.weight as nn.Linear, biases zero.
  MultiheadSelfAttention(Index d_model, const Options& options, Rng& rng)
      : options_(validated(d_model, options)),
        head_dim_(d_model / options.num_heads),
        in_proj_(d_model, 3 * d_model, rng, options.bias),
        out_proj_(d_model, d_model, rng, options.bias) {
    const double bound = std::sqrt(6.0 / static_cast<double>(d_model + 3 * d_model));
    fill_uniform(in_proj_.weight().value, rng, -bound, bound);
    if (options.bias) {
      in_proj_.bias().value.setZero();
      out_proj_.bias().value.setZero();
    }
  }

  Index d_model() const { return out_proj_.in_features(); }
  Index num_heads() const { return options_.num_heads; }
  Index head_dim() const { return head_dim_; }
  bool causal() const { return options_.causal; }
  const Options& options() const { return options_; }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    layout_.assign(1, x.rows());
    return forward(x, layout_);
  }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x, const SequenceLayout& layout) {
    detail::require(x.cols() == d_model(), "MultiheadSelfAttention: input has ", x.cols(), " columns, d_model is ",
                    d_model());
    detail::require(x.rows() == layout.tokens(), "MultiheadSelfAttention: input has ", x.rows(),
                    " rows, the layout has batch * seq_len = ", layout.batch(), " * ", layout.seq_len(), " = ",
                    layout.tokens());
    if (&layout != &layout_) layout_ = layout;
    qkv_ = in_proj_.forward(x);
    probs_.resize(layout.batch() * num_heads() * layout.seq_len(), layout.seq_len());
    context_.resize(x.rows(), d_model());
    parallel_for(layout.batch() * num_heads(), [&](Index item) { attend(item); });
    return out_proj_.forward(context_);
  }

  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == context_.rows() && dy.cols() == d_model(),
                    "MultiheadSelfAttention: gradient has shape ", dy.rows(), "x", dy.cols(), ", expected ",
                    context_.rows(), "x", d_model());
    const MatrixX<Scalar>& d_context = out_proj_.backward(dy);
    d_probs_.resize(probs_.rows(), probs_.cols());
    d_qkv_.resize(qkv_.rows(), qkv_.cols());
    parallel_for(layout_.batch() * num_heads(), [&](Index item) { attend_backward(item, d_context); });
    return in_proj_.backward(d_qkv_);
  }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list{{"in_proj_weight", &in_proj_.weight()}};
    if (options_.bias) list.push_back({"in_proj_bias", &in_proj_.bias()});
    append_prefixed(list, out_proj_.named_parameters(), "out_proj.");
    return list;
  }

  /// Attention weights of the last forward: rows (b * num_heads + h) * seq_len + i, columns the keys.
  const MatrixX<Scalar>& attention_weights() const { return probs_; }
  const SequenceLayout& layout() const { return layout_; }

 private:
  static const Options& validated(Index d_model, const Options& o) {
    detail::require(d_model > 0, "MultiheadSelfAttention: d_model must be positive, got ", d_model);
    detail::require(o.num_heads > 0, "MultiheadSelfAttention: num_heads must be positive, got ", o.num_heads);
    detail::require(d_model % o.num_heads == 0, "MultiheadSelfAttention: d_model ", d_model,
                    " must be a multiple of num_heads ", o.num_heads);
    return o;
  }

  bool allowed(Index b, Index i, Index j) const { return !layout_.is_padding(b, j) && (!options_.causal || j <= i); }

  /// Softmax of the scaled scores over the allowed keys of each query, for item = b * num_heads + h.
  void attend(Index item) {
    const Index seq_len = layout_.seq_len(), d = d_model();
    const Index b = item / num_heads(), first = b * seq_len, column = (item % num_heads()) * head_dim_;
    const auto q = qkv_.block(first, column, seq_len, head_dim_);
    const auto k = qkv_.block(first, d + column, seq_len, head_dim_);
    auto p = probs_.middleRows(item * seq_len, seq_len);
    p.noalias() = q * k.transpose();
    const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(head_dim_));
    for (Index i = 0; i < seq_len; ++i) {
      Scalar max = 0;
      bool any = false;
      for (Index j = 0; j < seq_len; ++j) {
        if (!allowed(b, i, j)) continue;
        max = any ? std::max(max, p(i, j)) : p(i, j);
        any = true;
      }
      Scalar sum = 0;
      for (Index j = 0; j < seq_len; ++j) {
        p(i, j) = allowed(b, i, j) ? std::exp(scale * (p(i, j) - max)) : Scalar(0);
        sum += p(i, j);
      }
      if (any) p.row(i) /= sum;
    }
    context_.block(first, column, seq_len, head_dim_).noalias() =
        p * qkv_.block(first, 2 * d + column, seq_len, head_dim_);
  }

  /// With P the weights and dP = dC V^T: dV = P^T dC, dS = P .* (dP - rowsum(P .* dP)), dQ = dS K scale,
  /// dK = dS^T Q scale, written into the q, k and v columns of d_qkv.
  void attend_backward(Index item, const MatrixX<Scalar>& d_context) {
    const Index seq_len = layout_.seq_len(), d = d_model();
    const Index first = (item / num_heads()) * seq_len, column = (item % num_heads()) * head_dim_;
    const auto p = probs_.middleRows(item * seq_len, seq_len);
    auto dp = d_probs_.middleRows(item * seq_len, seq_len);
    const auto dc = d_context.block(first, column, seq_len, head_dim_);
    dp.noalias() = dc * qkv_.block(first, 2 * d + column, seq_len, head_dim_).transpose();
    d_qkv_.block(first, 2 * d + column, seq_len, head_dim_).noalias() = p.transpose() * dc;
    const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(head_dim_));
    for (Index i = 0; i < seq_len; ++i) {
      const Scalar dot = p.row(i).dot(dp.row(i));
      dp.row(i) = scale * p.row(i).cwiseProduct((dp.row(i).array() - dot).matrix());
    }
    d_qkv_.block(first, column, seq_len, head_dim_).noalias() = dp * qkv_.block(first, d + column, seq_len, head_dim_);
    d_qkv_.block(first, d + column, seq_len, head_dim_).noalias() =
        dp.transpose() * qkv_.block(first, column, seq_len, head_dim_);
  }

  Options options_;
  Index head_dim_;
  Linear<Scalar> in_proj_, out_proj_;
  SequenceLayout layout_;
  MatrixX<Scalar> qkv_, probs_, context_, d_probs_, d_qkv_;
};

/// The feed-forward activation of an encoder layer (nn.TransformerEncoderLayer's `activation`).
enum class EncoderActivation { relu, gelu };

/// One nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0, activation, layer_norm_eps,
/// batch_first=True, norm_first):
///   post-norm (norm_first = false, PyTorch's default): h = norm1(x + sa(x)),  y = norm2(h + ff(h))
///   pre-norm  (norm_first = true, Xiong et al. 2020):  h = x + sa(norm1(x)),  y = h + ff(norm2(h))
/// with ff(h) = linear2(activation(linear1(h))). Parameter names are PyTorch's: self_attn.in_proj_weight,
/// self_attn.in_proj_bias, self_attn.out_proj.{weight,bias}, linear1.*, linear2.*, norm1.*, norm2.*.
template <class ScalarT = float>
class TransformerEncoderLayer {
 public:
  using Scalar = ScalarT;
  using Attention = MultiheadSelfAttention<Scalar>;

  struct Options {
    Index num_heads = 1;
    Index dim_feedforward = 2048;
    EncoderActivation activation = EncoderActivation::relu;
    bool norm_first = false;  // false: post-norm (PyTorch's default); true: pre-norm (Xiong et al. 2020)
    bool causal = false;      // the causal mask in every layer: next-token prediction
    double layer_norm_eps = 1e-5;
  };

  /// Draws self_attn's weights, then linear1's, then linear2's.
  TransformerEncoderLayer(Index d_model, const Options& options, Rng& rng)
      : options_(validated(options)),
        self_attn_(d_model, {options.num_heads, true, options.causal}, rng),
        linear1_(d_model, options.dim_feedforward, rng),
        linear2_(options.dim_feedforward, d_model, rng),
        norm1_(d_model, options.layer_norm_eps),
        norm2_(d_model, options.layer_norm_eps) {}

  Index d_model() const { return self_attn_.d_model(); }
  const Options& options() const { return options_; }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    layout_.assign(1, x.rows());
    return forward(x, layout_);
  }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x, const SequenceLayout& layout) {
    if (options_.norm_first) {
      hidden_ = x;
      hidden_ += self_attn_.forward(norm1_.forward(x), layout);
      output_ = hidden_;
      output_ += feed_forward(norm2_.forward(hidden_));
    } else {
      sum_ = x;
      sum_ += self_attn_.forward(x, layout);
      hidden_ = norm1_.forward(sum_);
      sum_ = hidden_;
      sum_ += feed_forward(hidden_);
      output_ = norm2_.forward(sum_);
    }
    return output_;
  }

  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == output_.rows() && dy.cols() == output_.cols(),
                    "TransformerEncoderLayer: gradient has shape ", dy.rows(), "x", dy.cols(), ", expected ",
                    output_.rows(), "x", output_.cols());
    if (options_.norm_first) {
      d_hidden_ = dy;
      d_hidden_ += norm2_.backward(feed_forward_backward(dy));
      grad_input_ = d_hidden_;
      grad_input_ += norm1_.backward(self_attn_.backward(d_hidden_));
    } else {
      const MatrixX<Scalar>& d_sum2 = norm2_.backward(dy);
      d_hidden_ = d_sum2;
      d_hidden_ += feed_forward_backward(d_sum2);
      const MatrixX<Scalar>& d_sum1 = norm1_.backward(d_hidden_);
      grad_input_ = d_sum1;
      grad_input_ += self_attn_.backward(d_sum1);
    }
    return grad_input_;
  }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    append_prefixed(list, self_attn_.named_parameters(), "self_attn.");
    append_prefixed(list, linear1_.named_parameters(), "linear1.");
    append_prefixed(list, linear2_.named_parameters(), "linear2.");
    append_prefixed(list, norm1_.named_parameters(), "norm1.");
    append_prefixed(list, norm2_.named_parameters(), "norm2.");
    return list;
  }

  Attention& self_attn() { return self_attn_; }
  Linear<Scalar>& linear1() { return linear1_; }
  Linear<Scalar>& linear2() { return linear2_; }
  LayerNorm<Scalar>& norm1() { return norm1_; }
  LayerNorm<Scalar>& norm2() { return norm2_; }

 private:
  static const Options& validated(const Options& o) {
    detail::require(o.dim_feedforward > 0, "TransformerEncoderLayer: dim_feedforward must be positive, got ",
                    o.dim_feedforward);
    return o;
  }

  const MatrixX<Scalar>& feed_forward(ConstRef<Scalar> h) {
    const MatrixX<Scalar>& a = linear1_.forward(h);
    return linear2_.forward(options_.activation == EncoderActivation::relu ? relu_.forward(a) : gelu_.forward(a));
  }

  const MatrixX<Scalar>& feed_forward_backward(ConstRef<Scalar> dy) {
    const MatrixX<Scalar>& da = linear2_.backward(dy);
    return linear1_.backward(options_.activation == EncoderActivation::relu ? relu_.backward(da) : gelu_.backward(da));
  }

  Options options_;
  Attention self_attn_;
  Linear<Scalar> linear1_, linear2_;
  LayerNorm<Scalar> norm1_, norm2_;
  ReLU<Scalar> relu_;
  GELU<Scalar> gelu_;
  SequenceLayout layout_;
  MatrixX<Scalar> sum_, hidden_, output_, d_hidden_, grad_input_;
};

/// nn.TransformerEncoder(layer, num_layers, norm = LayerNorm if final_norm): num_layers encoder layers
/// named layers.0, layers.1, ... and, with final_norm (usual with pre-norm), a LayerNorm named norm.
///
/// As an MoELayer expert it is a sequence expert: it needs whole sequences, in order, and the layer hands
/// it x without a layout. set_layout(layout) (or MoELayer::set_layout, which sets it on every expert) gives
/// the batch's layout before forward; forward(x) then requires x.rows() == layout.tokens(). That holds
/// when every expert receives every token in order: dense routing (k = num_experts) without a capacity,
/// which MoELayer requires of sequence experts (`sequence_expert`). Without a layout set, forward(x) takes
/// x as one sequence without padding; forward(x, layout) takes the layout for that call (and keeps it).
template <class ScalarT = float>
class TransformerEncoder {
 public:
  using Scalar = ScalarT;
  using Layer = TransformerEncoderLayer<Scalar>;
  /// MoELayer requires dense routing (k = num_experts, no capacity) of experts that set this.
  static constexpr bool sequence_expert = true;

  struct Options {
    Index num_layers = 1;
    typename Layer::Options layer{};
    bool final_norm = false;  // a LayerNorm after the last layer, named `norm`
  };

  /// Draws the layers' weights in order.
  TransformerEncoder(Index d_model, const Options& options, Rng& rng) {
    detail::require(options.num_layers > 0, "TransformerEncoder: num_layers must be positive, got ",
                    options.num_layers);
    layers_.reserve(static_cast<std::size_t>(options.num_layers));
    for (Index i = 0; i < options.num_layers; ++i) layers_.emplace_back(d_model, options.layer, rng);
    if (options.final_norm) norm_.emplace(d_model, options.layer.layer_norm_eps);
  }

  Index d_model() const { return layers_.front().d_model(); }
  Index out_features() const { return d_model(); }
  Index num_layers() const { return static_cast<Index>(layers_.size()); }

  /// The layout of the rows of the next forward(x) calls.
  void set_layout(const SequenceLayout& layout) { layout_ = layout; }
  /// Back to forward(x) taking x as one sequence.
  void clear_layout() { layout_.reset(); }
  const std::optional<SequenceLayout>& layout() const { return layout_; }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    if (!layout_) {
      single_.assign(1, x.rows());
      return run(x, single_);
    }
    detail::require(x.rows() == layout_->tokens(), "TransformerEncoder: input has ", x.rows(),
                    " rows, the layout set by set_layout has batch * seq_len = ", layout_->batch(), " * ",
                    layout_->seq_len(), " = ", layout_->tokens(),
                    " (a sequence expert needs every token in order: dense routing, k = num_experts, no capacity)");
    return run(x, *layout_);
  }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x, const SequenceLayout& layout) {
    layout_ = layout;
    return forward(x);
  }

  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    auto layer = layers_.rbegin();
    const MatrixX<Scalar>* g = norm_ ? &layer->backward(norm_->backward(dy)) : &layer->backward(dy);
    for (++layer; layer != layers_.rend(); ++layer) g = &layer->backward(*g);
    return *g;
  }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    for (std::size_t i = 0; i < layers_.size(); ++i)
      append_prefixed(list, layers_[i].named_parameters(), "layers." + std::to_string(i) + ".");
    if (norm_) append_prefixed(list, norm_->named_parameters(), "norm.");
    return list;
  }

  Layer& layer(Index i) {
    detail::require(i >= 0 && i < num_layers(), "TransformerEncoder: layer ", i, ", expected [0, ", num_layers(), ")");
    return layers_[static_cast<std::size_t>(i)];
  }

 private:
  const MatrixX<Scalar>& run(ConstRef<Scalar> x, const SequenceLayout& layout) {
    const MatrixX<Scalar>* h = &layers_.front().forward(x, layout);
    for (std::size_t i = 1; i < layers_.size(); ++i) h = &layers_[i].forward(*h, layout);
    return norm_ ? norm_->forward(*h) : *h;
  }

  std::vector<Layer> layers_;
  std::optional<LayerNorm<Scalar>> norm_;
  std::optional<SequenceLayout> layout_;
  SequenceLayout single_;
};

}  // namespace moe
