#pragma once
// Causal multi-head self-attention (Vaswani et al. 2017, "Attention Is All You Need") with rotary
// position embeddings on q and k (Su et al. 2021, "RoFormer"), as in the LLaMA and DeepSeek decoders,
// over a batch of sequences stored sequence-major in the rows of one matrix, with a padding mask.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

#include "moe/core/error.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/nn/linear.hpp"

namespace moe {

/// How the rows of a [batch * seq_len x d] matrix form sequences: row b * seq_len + i is position i of
/// sequence b. Padding positions are never attended to; their own rows are still computed (the loss
/// ignores them). Positions count from the start of the row block, padding included: with rotary
/// embeddings the scores depend only on j - i, so left padding does not change them.
class SequenceLayout {
 public:
  /// One sequence of one token; assign() before use.
  SequenceLayout() : SequenceLayout(1, 1) {}

  /// `batch` sequences of `seq_len` positions; lengths[b] (if given) real tokens followed by padding.
  SequenceLayout(Index batch, Index seq_len, std::span<const Index> lengths = {}) { assign(batch, seq_len, lengths); }

  /// Any padding pattern (left padding, gaps): one row per sequence, true at padding.
  explicit SequenceLayout(const PaddingMask& padding) {
    require_shape(padding.rows(), padding.cols());
    padding_ = padding;
  }

  /// Padding wherever ids equals pad_id.
  static SequenceLayout from_pad_id(std::span<const Index> ids, Index batch, Index seq_len, Index pad_id) {
    require_shape(batch, seq_len);
    detail::require(static_cast<Index>(ids.size()) == batch * seq_len, "SequenceLayout: got ", ids.size(),
                    " ids, expected batch * seq_len = ", batch, " * ", seq_len, " = ", batch * seq_len);
    PaddingMask padding(batch, seq_len);
    for (Index b = 0; b < batch; ++b)
      for (Index i = 0; i < seq_len; ++i) padding(b, i) = ids[static_cast<std::size_t>(b * seq_len + i)] == pad_id;
    return SequenceLayout(padding);
  }

  /// Reuses the mask's memory when the shape does not change.
  void assign(Index batch, Index seq_len, std::span<const Index> lengths = {}) {
    require_shape(batch, seq_len);
    detail::require(lengths.empty() || static_cast<Index>(lengths.size()) == batch, "SequenceLayout: got ",
                    lengths.size(), " lengths, expected none or batch = ", batch);
    padding_.resize(batch, seq_len);
    padding_.setConstant(false);
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      detail::require(lengths[b] >= 0 && lengths[b] <= seq_len, "SequenceLayout: length of sequence ", b, " is ",
                      lengths[b], ", expected a length in [0, seq_len = ", seq_len, "]");
      padding_.row(static_cast<Index>(b)).tail(seq_len - lengths[b]).setConstant(true);
    }
  }

  Index batch() const { return padding_.rows(); }
  Index seq_len() const { return padding_.cols(); }
  Index tokens() const { return padding_.size(); }
  bool is_padding(Index b, Index i) const { return padding_(b, i); }
  const PaddingMask& padding() const { return padding_; }

 private:
  static void require_shape(Index batch, Index seq_len) {
    detail::require(batch > 0, "SequenceLayout: batch must be positive, got ", batch);
    detail::require(seq_len > 0, "SequenceLayout: seq_len must be positive, got ", seq_len);
  }

  PaddingMask padding_;
};

/// y = o_proj(concat_h softmax(q_h k_h^T / sqrt(head_dim) + mask) v_h), q = RoPE(q_proj(x)),
/// k = RoPE(k_proj(x)), v = v_proj(x). Query i of sequence b attends to the keys j <= i that are not
/// padding; a query with no such key (left padding) gets a zero context instead of PyTorch's NaN.
///
/// Module contract: forward(x) takes x as one sequence without padding; forward(x, layout) and
/// forward(x, batch, seq_len, lengths) take a batch. backward uses the layout of the last forward.
/// Each (sequence, head) pair is an independent item for parallel_for, so any thread count gives the
/// same bits.
template <class ScalarT = float>
class CausalSelfAttention {
 public:
  using Scalar = ScalarT;

  struct Options {
    Index num_heads = 1;
    bool bias = false;           // biases in q_proj, k_proj, v_proj and o_proj
    bool rotary = true;          // RoPE on q and k; false: no positional encoding
    double rope_theta = 10000.0; // RoPE base: pair i turns by position * rope_theta^(-2i / head_dim)
  };

  /// q_proj, k_proj, v_proj, o_proj: d_model -> d_model, drawn in that order with nn.Linear's init.
  CausalSelfAttention(Index d_model, const Options& options, Rng& rng)
      : options_(validated(d_model, options)),
        head_dim_(d_model / options.num_heads),
        q_proj_(d_model, d_model, rng, options.bias),
        k_proj_(d_model, d_model, rng, options.bias),
        v_proj_(d_model, d_model, rng, options.bias),
        o_proj_(d_model, d_model, rng, options.bias) {}

  Index d_model() const { return q_proj_.in_features(); }
  Index num_heads() const { return options_.num_heads; }
  Index head_dim() const { return head_dim_; }
  const Options& options() const { return options_; }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    layout_.assign(1, x.rows());
    return forward(x, layout_);
  }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x, Index batch, Index seq_len, std::span<const Index> lengths = {}) {
    layout_.assign(batch, seq_len, lengths);
    return forward(x, layout_);
  }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x, const SequenceLayout& layout) {
    detail::require(x.cols() == d_model(), "CausalSelfAttention: input has ", x.cols(), " columns, d_model is ",
                    d_model());
    detail::require(x.rows() == layout.tokens(), "CausalSelfAttention: input has ", x.rows(),
                    " rows, the layout has batch * seq_len = ", layout.batch(), " * ", layout.seq_len(), " = ",
                    layout.tokens());
    if (&layout != &layout_) layout_ = layout;
    const Index seq_len = layout.seq_len();
    q_ = q_proj_.forward(x);
    k_ = k_proj_.forward(x);
    v_ = v_proj_.forward(x);
    if (options_.rotary) {
      update_rotary_table(seq_len);
      rotate(q_, false);
      rotate(k_, false);
    }
    probs_.resize(layout.batch() * num_heads() * seq_len, seq_len);
    context_.resize(x.rows(), d_model());
    parallel_for(layout.batch() * num_heads(), [&](Index item) { attend(item); });
    return o_proj_.forward(context_);
  }

  /// dx for dy = d loss / d output, with the layout of the last forward.
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == context_.rows() && dy.cols() == d_model(), "CausalSelfAttention: gradient has shape ",
                    dy.rows(), "x", dy.cols(), ", expected ", context_.rows(), "x", d_model());
    const MatrixX<Scalar>& d_context = o_proj_.backward(dy);
    d_probs_.resize(probs_.rows(), probs_.cols());
    dq_.resize(q_.rows(), q_.cols());
    dk_.resize(k_.rows(), k_.cols());
    dv_.resize(v_.rows(), v_.cols());
    parallel_for(layout_.batch() * num_heads(), [&](Index item) { attend_backward(item, d_context); });
    if (options_.rotary) {
      rotate(dq_, true);
      rotate(dk_, true);
    }
    grad_input_ = q_proj_.backward(dq_);
    grad_input_ += k_proj_.backward(dk_);
    grad_input_ += v_proj_.backward(dv_);
    return grad_input_;
  }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    append_prefixed(list, q_proj_.named_parameters(), "q_proj.");
    append_prefixed(list, k_proj_.named_parameters(), "k_proj.");
    append_prefixed(list, v_proj_.named_parameters(), "v_proj.");
    append_prefixed(list, o_proj_.named_parameters(), "o_proj.");
    return list;
  }

  /// Attention weights of the last forward: rows (b * num_heads + h) * seq_len + i, columns the keys.
  const MatrixX<Scalar>& attention_weights() const { return probs_; }
  const SequenceLayout& layout() const { return layout_; }

  Linear<Scalar>& q_proj() { return q_proj_; }
  Linear<Scalar>& k_proj() { return k_proj_; }
  Linear<Scalar>& v_proj() { return v_proj_; }
  Linear<Scalar>& o_proj() { return o_proj_; }

 private:
  static const Options& validated(Index d_model, const Options& o) {
    detail::require(d_model > 0, "CausalSelfAttention: d_model must be positive, got ", d_model);
    detail::require(o.num_heads > 0, "CausalSelfAttention: num_heads must be positive, got ", o.num_heads);
    detail::require(d_model % o.num_heads == 0, "CausalSelfAttention: d_model ", d_model,
                    " must be a multiple of num_heads ", o.num_heads);
    detail::require(!o.rotary || (d_model / o.num_heads) % 2 == 0,
                    "CausalSelfAttention: rotary embeddings need an even head_dim, got ", d_model / o.num_heads);
    detail::require(!o.rotary || o.rope_theta > 0.0, "CausalSelfAttention: rope_theta must be positive, got ",
                    o.rope_theta);
    return o;
  }

  /// cos and sin of position * rope_theta^(-2i / head_dim) for i < head_dim / 2 (RoFormer, eq. 15).
  void update_rotary_table(Index seq_len) {
    if (cos_.rows() == seq_len) return;
    const Index pairs = head_dim_ / 2;
    cos_.resize(seq_len, pairs);
    sin_.resize(seq_len, pairs);
    for (Index i = 0; i < pairs; ++i) {
      const double frequency =
          std::pow(options_.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim_));
      for (Index p = 0; p < seq_len; ++p) {
        const double angle = static_cast<double>(p) * frequency;
        cos_(p, i) = static_cast<Scalar>(std::cos(angle));
        sin_(p, i) = static_cast<Scalar>(std::sin(angle));
      }
    }
  }

  /// Turns each pair of columns (2i, 2i + 1) of every head by its angle at the row's position (the
  /// interleaved pairs of RoFormer and of Meta's LLaMA and DeepSeek code); `inverse` turns back, which is
  /// also the backward of the turn.
  void rotate(MatrixX<Scalar>& m, bool inverse) const {
    const Index seq_len = layout_.seq_len();
    const Index pairs = head_dim_ / 2;
    for (Index t = 0; t < m.rows(); ++t) {
      const Index position = t % seq_len;
      for (Index h = 0; h < num_heads(); ++h) {
        for (Index i = 0; i < pairs; ++i) {
          const Scalar c = cos_(position, i);
          const Scalar s = inverse ? -sin_(position, i) : sin_(position, i);
          Scalar& a = m(t, h * head_dim_ + 2 * i);
          Scalar& b = m(t, h * head_dim_ + 2 * i + 1);
          const Scalar a0 = a;
          a = a0 * c - b * s;
          b = a0 * s + b * c;
        }
      }
    }
  }

  /// Softmax of the scaled scores over the allowed keys of each query, for item = b * num_heads + h.
  void attend(Index item) {
    const Index seq_len = layout_.seq_len();
    const Index b = item / num_heads(), first = b * seq_len, column = (item % num_heads()) * head_dim_;
    const auto q = q_.block(first, column, seq_len, head_dim_);
    const auto k = k_.block(first, column, seq_len, head_dim_);
    auto p = probs_.middleRows(item * seq_len, seq_len);
    p.noalias() = q * k.transpose();
    const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(head_dim_));
    for (Index i = 0; i < seq_len; ++i) {
      Scalar max = 0;
      bool any = false;
      for (Index j = 0; j <= i; ++j) {
        if (layout_.is_padding(b, j)) continue;
        max = any ? std::max(max, p(i, j)) : p(i, j);
        any = true;
      }
      Scalar sum = 0;
      for (Index j = 0; j < seq_len; ++j) {
        const bool allowed = j <= i && !layout_.is_padding(b, j);
        p(i, j) = allowed ? std::exp(scale * (p(i, j) - max)) : Scalar(0);
        sum += p(i, j);
      }
      if (any) p.row(i) /= sum;
    }
    context_.block(first, column, seq_len, head_dim_).noalias() = p * v_.block(first, column, seq_len, head_dim_);
  }

  /// With P the weights and dP = dC V^T: dV = P^T dC, dS = P .* (dP - rowsum(P .* dP)), dQ = dS K scale,
  /// dK = dS^T Q scale. Masked weights are 0, so their scores get no gradient.
  void attend_backward(Index item, const MatrixX<Scalar>& d_context) {
    const Index seq_len = layout_.seq_len();
    const Index first = (item / num_heads()) * seq_len, column = (item % num_heads()) * head_dim_;
    const auto p = probs_.middleRows(item * seq_len, seq_len);
    auto dp = d_probs_.middleRows(item * seq_len, seq_len);
    const auto dc = d_context.block(first, column, seq_len, head_dim_);
    dp.noalias() = dc * v_.block(first, column, seq_len, head_dim_).transpose();
    dv_.block(first, column, seq_len, head_dim_).noalias() = p.transpose() * dc;
    const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(head_dim_));
    for (Index i = 0; i < seq_len; ++i) {
      const Scalar dot = p.row(i).dot(dp.row(i));
      dp.row(i) = scale * p.row(i).cwiseProduct((dp.row(i).array() - dot).matrix());
    }
    dq_.block(first, column, seq_len, head_dim_).noalias() = dp * k_.block(first, column, seq_len, head_dim_);
    dk_.block(first, column, seq_len, head_dim_).noalias() = dp.transpose() * q_.block(first, column, seq_len, head_dim_);
  }

  Options options_;
  Index head_dim_;
  Linear<Scalar> q_proj_, k_proj_, v_proj_, o_proj_;
  SequenceLayout layout_;
  MatrixX<Scalar> cos_, sin_;  // [seq_len x head_dim / 2]
  MatrixX<Scalar> q_, k_, v_, probs_, context_;
  MatrixX<Scalar> d_probs_, dq_, dk_, dv_, grad_input_;
};

}  // namespace moe
