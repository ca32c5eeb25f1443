#pragma once
// Layer normalisation over the last dimension (Ba et al. 2016, "Layer Normalization"), as PyTorch's
// nn.LayerNorm: y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance.

#include <cmath>

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"

namespace moe {

template <class ScalarT = float>
class LayerNorm {
 public:
  using Scalar = ScalarT;

  /// weight ones and bias zeros, as PyTorch.
  explicit LayerNorm(Index features, double eps = 1e-5)
      : weight_(Parameter<Scalar>::vector(checked_features(features))),
        bias_(Parameter<Scalar>::vector(features)),
        eps_(eps) {
    detail::require(eps >= 0.0, "LayerNorm: eps must be non-negative, got ", eps);
    weight_.value.setOnes();
  }

  Index features() const { return weight_.value.cols(); }
  double eps() const { return eps_; }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    detail::require(x.cols() == features(), "LayerNorm: input has ", x.cols(), " columns, features is ",
                    features());
    normalized_.resize(x.rows(), x.cols());
    inv_std_.resize(x.rows());
    for (Index t = 0; t < x.rows(); ++t) {
      const Scalar mean = x.row(t).mean();
      normalized_.row(t) = x.row(t).array() - mean;
      const Scalar variance = normalized_.row(t).squaredNorm() / static_cast<Scalar>(features());
      inv_std_(t) = Scalar(1) / std::sqrt(variance + static_cast<Scalar>(eps_));
      normalized_.row(t) *= inv_std_(t);
    }
    output_ = (normalized_.array().rowwise() * weight_.value.row(0).array()).rowwise() + bias_.value.row(0).array();
    return output_;
  }

  /// With g = dy * weight and xhat the normalised input: dx = inv_std (g - mean(g) - xhat mean(g xhat)).
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == normalized_.rows() && dy.cols() == features(), "LayerNorm: gradient has shape ",
                    dy.rows(), "x", dy.cols(), ", expected ", normalized_.rows(), "x", features());
    weight_.grad.row(0) += dy.cwiseProduct(normalized_).colwise().sum();
    bias_.grad.row(0) += dy.colwise().sum();
    grad_input_ = dy.array().rowwise() * weight_.value.row(0).array();
    for (Index t = 0; t < dy.rows(); ++t) {
      const Scalar mean_g = grad_input_.row(t).mean();
      const Scalar mean_gx = grad_input_.row(t).dot(normalized_.row(t)) / static_cast<Scalar>(features());
      grad_input_.row(t) = inv_std_(t) * (grad_input_.row(t).array() - mean_g - normalized_.row(t).array() * mean_gx);
    }
    return grad_input_;
  }

  ParameterList<Scalar> named_parameters() { return {{"weight", &weight_}, {"bias", &bias_}}; }

  Parameter<Scalar>& weight() { return weight_; }
  Parameter<Scalar>& bias() { return bias_; }

 private:
  /// Checked before the parameters are sized, so a negative count is an Error, not an Eigen assertion.
  static Index checked_features(Index features) {
    detail::require(features > 0, "LayerNorm: features must be positive, got ", features);
    return features;
  }

  Parameter<Scalar> weight_, bias_;
  double eps_;
  MatrixX<Scalar> normalized_, output_, grad_input_;
  VectorX<Scalar> inv_std_;
};

}  // namespace moe
