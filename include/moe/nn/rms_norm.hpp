#pragma once
// Root mean square layer normalisation (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization"),
// as PyTorch's nn.RMSNorm and the LLaMA / DeepSeek blocks: y = x / sqrt(mean(x^2) + eps) * weight.

#include <cmath>

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"

namespace moe {

template <class ScalarT = float>
class RMSNorm {
 public:
  using Scalar = ScalarT;

  /// weight ones; eps 1e-6 as DeepSeek's and LLaMA's configurations.
  explicit RMSNorm(Index dim, double eps = 1e-6) : weight_(Parameter<Scalar>::vector(checked_dim(dim))), eps_(eps) {
    detail::require(eps >= 0.0, "RMSNorm: eps must be non-negative, got ", eps);
    weight_.value.setOnes();
  }

  Index dim() const { return weight_.value.cols(); }
  double eps() const { return eps_; }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    detail::require(x.cols() == dim(), "RMSNorm: input has ", x.cols(), " columns, dim is ", dim());
    normalized_.resize(x.rows(), x.cols());
    inv_rms_.resize(x.rows());
    for (Index t = 0; t < x.rows(); ++t) {
      const Scalar mean_square = x.row(t).squaredNorm() / static_cast<Scalar>(dim());
      inv_rms_(t) = Scalar(1) / std::sqrt(mean_square + static_cast<Scalar>(eps_));
      normalized_.row(t) = x.row(t) * inv_rms_(t);
    }
    output_ = normalized_.array().rowwise() * weight_.value.row(0).array();
    return output_;
  }

  /// With g = dy * weight, r = 1 / rms and xhat = x r: dx = r (g - xhat mean(g xhat)).
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == normalized_.rows() && dy.cols() == dim(), "RMSNorm: gradient has shape ", dy.rows(),
                    "x", dy.cols(), ", expected ", normalized_.rows(), "x", dim());
    weight_.grad.row(0) += dy.cwiseProduct(normalized_).colwise().sum();
    grad_input_ = dy.array().rowwise() * weight_.value.row(0).array();
    for (Index t = 0; t < dy.rows(); ++t) {
      const Scalar mean_gx = grad_input_.row(t).dot(normalized_.row(t)) / static_cast<Scalar>(dim());
      grad_input_.row(t) = inv_rms_(t) * (grad_input_.row(t) - mean_gx * normalized_.row(t));
    }
    return grad_input_;
  }

  ParameterList<Scalar> named_parameters() { return {{"weight", &weight_}}; }

  Parameter<Scalar>& weight() { return weight_; }

 private:
  static Index checked_dim(Index dim) {
    detail::require(dim > 0, "RMSNorm: dim must be positive, got ", dim);
    return dim;
  }

  Parameter<Scalar> weight_;
  double eps_;
  MatrixX<Scalar> normalized_, output_, grad_input_;
  VectorX<Scalar> inv_rms_;
};

}  // namespace moe
