#pragma once
// y = x W^T + b, with PyTorch's layout (weight [out x in]) and default initialisation.

#include <cmath>
#include <string>

#include "moe/core/error.hpp"
#include "moe/core/gemm.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe {

template <class ScalarT = float>
class Linear {
 public:
  using Scalar = ScalarT;

  /// As an MoE expert: `out_features` 0 means d_model.
  struct Options {
    Index out_features = 0;
    bool bias = true;
  };

  /// PyTorch's nn.Linear initialisation: weight and bias uniform in +-1/sqrt(in_features)
  /// (kaiming_uniform with a = sqrt(5)).
  Linear(Index in_features, Index out_features, Rng& rng, bool bias = true)
      : Linear(in_features, out_features, zero_init, bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    fill_uniform(weight_.value, rng, -bound, bound);
    if (has_bias_) fill_uniform(bias_.value, rng, -bound, bound);
  }

  /// Weight and bias zero, nothing drawn.
  Linear(Index in_features, Index out_features, ZeroInit, bool bias = true)
      : weight_(checked(out_features, "out_features"), checked(in_features, "in_features")), has_bias_(bias) {
    if (has_bias_) bias_ = Parameter<Scalar>::vector(out_features);
  }

  Linear(Index d_model, const Options& options, Rng& rng)
      : Linear(d_model, options.out_features > 0 ? options.out_features : d_model, rng, options.bias) {}

  Index in_features() const { return weight_.value.cols(); }
  Index out_features() const { return weight_.value.rows(); }

  /// Rows in chunks of row_chunk, over the threads when not already inside a parallel loop; each chunk's
  /// rows are copied into the input cache by the thread that then multiplies them.
  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    input_.resize(x.rows(), x.cols());
    return apply_in_chunks([&](Index first, Index count) {
      input_.middleRows(first, count) = x.middleRows(first, count);
    });
  }

  /// For a caller that builds x anyway (MoELayer gathers each expert's rows): filling input_buffer(rows,
  /// cols) and then calling forward_in_place() is forward(x) without the copy.
  MatrixX<Scalar>& input_buffer(Index rows, Index cols) {
    input_.resize(rows, cols);
    return input_;
  }
  const MatrixX<Scalar>& forward_in_place() {
    return apply_in_chunks([](Index, Index) {});
  }

  /// The parameter gradients in chunks of feature_chunk output features, dx in chunks of row_chunk rows.
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == input_.rows() && dy.cols() == out_features(), "Linear: gradient has shape ",
                    dy.rows(), "x", dy.cols(), ", expected ", input_.rows(), "x", out_features());
    parallel_for_chunks(out_features(), feature_chunk,
                        [&](Index first, Index count) { accumulate_grads(dy, input_, first, count); });
    grad_input_.resize(dy.rows(), in_features());
    parallel_for_chunks(dy.rows(), row_chunk, [&](Index first, Index count) {
      input_grad(dy.middleRows(first, count), grad_input_.middleRows(first, count), 0, in_features());
    });
    return grad_input_;
  }

  // The three products of forward and backward, for a caller that keeps the input itself and so skips
  // the copy forward makes (FeedForward: its hidden activations are cached once, by the activation).

  /// Output features [first, first + count) of out = x W^T + b (those columns of out); out has x.rows() rows.
  void apply(ConstRef<Scalar> x, Eigen::Ref<MatrixX<Scalar>> out, Index first, Index count) const {
    auto features = out.middleCols(first, count);
    gemm<Scalar>(x, Op::none, weight_.value.middleRows(first, count), Op::transpose, features);
    if (has_bias_) features.rowwise() += bias_.value.row(0).segment(first, count);
  }

  /// Adds the gradients of W and b for output features [first, first + count) of out = x W^T + b.
  void accumulate_grads(ConstRef<Scalar> dy, ConstRef<Scalar> x, Index first, Index count) {
    gemm<Scalar>(dy.middleCols(first, count), Op::transpose, x, Op::none, weight_.grad.middleRows(first, count),
                 /*accumulate=*/true);
    if (has_bias_) bias_.grad.row(0).segment(first, count) += dy.middleCols(first, count).colwise().sum();
  }

  /// Input features [first, first + count) of dx = dy W (those columns of dx); dx has dy.rows() rows.
  void input_grad(ConstRef<Scalar> dy, Eigen::Ref<MatrixX<Scalar>> dx, Index first, Index count) const {
    gemm<Scalar>(dy, Op::none, weight_.value.middleCols(first, count), Op::none, dx.middleCols(first, count));
  }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list{{"weight", &weight_}};
    if (has_bias_) list.push_back({"bias", &bias_});
    return list;
  }

  Parameter<Scalar>& weight() { return weight_; }
  Parameter<Scalar>& bias() { return bias_; }

 private:
  // Work items of forward and backward, of fixed sizes so that results do not depend on the thread count,
  // and large enough that repacking the other operand for each chunk costs little next to the product.
  static constexpr Index row_chunk = 256;
  static constexpr Index feature_chunk = 64;

  /// output = input_ W^T + b in chunks of row_chunk rows, running fill(first, count) on each chunk first.
  template <class Fill>
  const MatrixX<Scalar>& apply_in_chunks(Fill&& fill) {
    detail::require(input_.cols() == in_features(), "Linear: input has ", input_.cols(), " columns, in_features is ",
                    in_features());
    output_.resize(input_.rows(), out_features());
    parallel_for_chunks(input_.rows(), row_chunk, [&](Index first, Index count) {
      fill(first, count);
      apply(input_.middleRows(first, count), output_.middleRows(first, count), 0, out_features());
    });
    return output_;
  }

  static Index checked(Index features, const char* name) {
    detail::require(features > 0, "Linear: ", name, " must be positive, got ", features);
    return features;
  }

  Parameter<Scalar> weight_;
  Parameter<Scalar> bias_;
  bool has_bias_;
  MatrixX<Scalar> input_, output_, grad_input_;
};

}  // namespace moe
