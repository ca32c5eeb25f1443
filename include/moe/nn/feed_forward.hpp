#pragma once
// The Transformer's position-wise feed-forward block, the usual MoE expert: fc2(dropout(act(fc1(x)))),
// and its gated variant SwiGLU.

#include <concepts>
#include <optional>
#include <type_traits>

#include "moe/core/buffer.hpp"
#include "moe/core/error.hpp"
#include "moe/core/module.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/dropout.hpp"
#include "moe/nn/linear.hpp"

namespace moe {

namespace detail {

/// Checked before the layers are built, so the error names `hidden` rather than a Linear's width.
inline Index require_hidden(const char* layer, Index hidden) {
  require(hidden > 0, layer, ": Options::hidden must be positive, got ", hidden);
  return hidden;
}

}  // namespace detail

/// fc1 (d_model -> hidden), Activation, Dropout (only when dropout > 0), fc2 (hidden -> out_features).
/// Activation is one of moe's activations (it names the element-wise Function this module runs).
/// Parameter names fc1.weight, fc1.bias, fc2.weight, fc2.bias, as a PyTorch module with those attributes.
template <template <class> class Activation, class ScalarT = float>
class FeedForward {
 public:
  using Scalar = ScalarT;

  struct Options {
    Index hidden = 0;
    Index out_features = 0;  // 0 means d_model
    double dropout = 0.0;
    bool bias = true;
  };

  /// fc1 and fc2 are initialised first, so their weights do not depend on whether dropout is on. With
  /// ZeroInit the dropout's generator starts from a fixed seed (a loaded checkpoint restores its state).
  template <ParameterInit Init>
  FeedForward(Index d_model, const Options& options, Init&& init)
      : fc1_(d_model, detail::require_hidden("FeedForward", options.hidden), init, options.bias),
        fc2_(options.hidden, options.out_features > 0 ? options.out_features : d_model, init, options.bias) {
    if (options.dropout <= 0.0) return;
    if constexpr (std::same_as<std::remove_cvref_t<Init>, Rng>) {
      dropout_.emplace(options.dropout, init);
    } else {
      Rng fixed;
      dropout_.emplace(options.dropout, fixed);
    }
  }

  Index in_features() const { return fc1_.in_features(); }
  Index out_features() const { return fc2_.out_features(); }

  /// The products run here on fc1's and fc2's parameters rather than through Linear::forward, so the
  /// hidden activations are cached once (by this module, not also by fc2), the pre-activations are written
  /// straight into their cache, and every cache is a Buffer: a new number of rows allocates nothing once a
  /// batch as large has been seen.
  const MatrixView<Scalar>& forward(ConstRef<Scalar> x) {
    input_.resize(x.rows(), x.cols()) = x;
    return forward_in_place();
  }

  /// For a caller that builds x anyway (MoELayer gathers each expert's rows): filling input_buffer(rows,
  /// cols) and then calling forward_in_place() is forward(x) without the copy.
  MatrixView<Scalar>& input_buffer(Index rows, Index cols) { return input_.resize(rows, cols); }

  const MatrixView<Scalar>& forward_in_place() {
    const MatrixView<Scalar>& x = input_.view();
    detail::require(x.cols() == in_features(), "FeedForward: input has ", x.cols(), " columns, d_model is ",
                    in_features());
    MatrixView<Scalar>& pre_activation = pre_activation_.resize(x.rows(), fc1_.out_features());
    for_feature_chunks(fc1_.out_features(), [&](Index first, Index count) { fc1_.apply(x, pre_activation, first, count); });
    MatrixView<Scalar>& activated = activated_.resize(x.rows(), fc1_.out_features());
    activation_.forward(pre_activation, activated);
    dropout_applied_ = dropout_ && dropout_->active();
    if (dropout_applied_) dropout_->apply(activated, dropped_.resize(activated.rows(), activated.cols()));
    const MatrixView<Scalar>& hidden = this->hidden();
    MatrixView<Scalar>& output = output_.resize(x.rows(), fc2_.out_features());
    for_feature_chunks(fc2_.out_features(), [&](Index first, Index count) { fc2_.apply(hidden, output, first, count); });
    return output;
  }

  /// The activation's and dropout's backward run in place on d_hidden_ (element by element).
  const MatrixView<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == output_.rows() && dy.cols() == output_.cols(), "FeedForward: gradient has shape ",
                    dy.rows(), "x", dy.cols(), ", expected ", output_.rows(), "x", output_.cols());
    MatrixView<Scalar>& d_hidden = linear_backward(fc2_, dy, hidden(), d_hidden_);
    if (dropout_applied_) dropout_->apply_backward(d_hidden, d_hidden);
    activation_.backward(pre_activation_.view(), d_hidden, d_hidden);
    return linear_backward(fc1_, d_hidden, input_.view(), grad_input_);
  }

  /// Splits every product of forward and backward into chunks of `features` output features (columns of its
  /// result), run over moe's threads: for a caller that has fewer experts than threads to keep busy (the CPU
  /// backend). 0, the default, runs each product whole on the calling thread. A chunk's numbers depend on the
  /// widths and this setting, never on the thread count.
  void split_products(Index features) {
    detail::require(features >= 0, "FeedForward::split_products: features must not be negative, got ", features);
    feature_chunk_ = features;
  }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    append_prefixed(list, fc1_.named_parameters(), "fc1.");
    append_prefixed(list, fc2_.named_parameters(), "fc2.");
    return list;
  }

  GeneratorList named_generators() {
    GeneratorList list;
    if (dropout_) append_prefixed(list, dropout_->named_generators(), "dropout.");
    return list;
  }

  void train(bool on) {
    if (dropout_) dropout_->train(on);
  }

 private:
  /// fc2's input of the last forward: the activations, after dropout where it was applied.
  const MatrixView<Scalar>& hidden() const { return dropout_applied_ ? dropped_.view() : activated_.view(); }

  /// Backward of `layer` for the input x this module kept: adds its parameter gradients, returns dx.
  MatrixView<Scalar>& linear_backward(Linear<Scalar>& layer, ConstRef<Scalar> dy, ConstRef<Scalar> x,
                                      Buffer<Scalar>& dx_buffer) {
    for_feature_chunks(layer.out_features(),
                       [&](Index first, Index count) { layer.accumulate_grads(dy, x, first, count); });
    MatrixView<Scalar>& dx = dx_buffer.resize(dy.rows(), layer.in_features());
    for_feature_chunks(layer.in_features(), [&](Index first, Index count) { layer.input_grad(dy, dx, first, count); });
    return dx;
  }

  /// body(first, count) on the chunks split_products asked for, or once on all `features`.
  template <class Body>
  void for_feature_chunks(Index features, Body&& body) {
    if (feature_chunk_ == 0)
      body(0, features);
    else
      parallel_for_chunks("FeedForward", features, feature_chunk_, body);
  }

  Linear<Scalar> fc1_;
  Linear<Scalar> fc2_;
  typename Activation<Scalar>::Function activation_;
  std::optional<Dropout<Scalar>> dropout_;
  bool dropout_applied_ = false;  // by the last forward
  // dropped_: the activations after dropout; d_hidden_: fc2's input gradient, then the activation's.
  Buffer<Scalar> input_, pre_activation_, activated_, dropped_, output_, d_hidden_, grad_input_;
  Index feature_chunk_ = 0;
};

/// Shazeer 2020, "GLU Variants Improve Transformer": y = down_proj(silu(gate_proj(x)) * up_proj(x)), with
/// LLaMA's parameter names gate_proj, up_proj, down_proj (no biases by default).
template <class ScalarT = float>
class SwiGLUFeedForward {
 public:
  using Scalar = ScalarT;

  struct Options {
    Index hidden = 0;
    Index out_features = 0;  // 0 means d_model
    bool bias = false;
  };

  /// Parameters drawn from `init` (an Rng) as PyTorch's nn.Linear draws them, or zero (ZeroInit).
  template <ParameterInit Init>
  SwiGLUFeedForward(Index d_model, const Options& options, Init&& init)
      : gate_proj_(d_model, detail::require_hidden("SwiGLUFeedForward", options.hidden), init, options.bias),
        up_proj_(d_model, options.hidden, init, options.bias),
        down_proj_(options.hidden, options.out_features > 0 ? options.out_features : d_model, init, options.bias) {}

  Index in_features() const { return gate_proj_.in_features(); }
  Index out_features() const { return down_proj_.out_features(); }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    gate_ = silu_.forward(gate_proj_.forward(x));
    up_ = up_proj_.forward(x);
    product_ = gate_.cwiseProduct(up_);
    return down_proj_.forward(product_);
  }

  /// With h = s * u (s = silu(gate), u = up): dh/du = s and dh/ds = u; dx sums both branches.
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    const MatrixX<Scalar>& d_product = down_proj_.backward(dy);
    d_branch_ = d_product.cwiseProduct(up_);
    grad_input_ = gate_proj_.backward(silu_.backward(d_branch_));
    d_branch_ = d_product.cwiseProduct(gate_);
    grad_input_ += up_proj_.backward(d_branch_);
    return grad_input_;
  }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    append_prefixed(list, gate_proj_.named_parameters(), "gate_proj.");
    append_prefixed(list, up_proj_.named_parameters(), "up_proj.");
    append_prefixed(list, down_proj_.named_parameters(), "down_proj.");
    return list;
  }

 private:
  Linear<Scalar> gate_proj_, up_proj_, down_proj_;
  SiLU<Scalar> silu_;
  MatrixX<Scalar> gate_, up_, product_, d_branch_, grad_input_;  // gate_ = silu(gate_proj(x))
};

}  // namespace moe
