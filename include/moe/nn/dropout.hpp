#pragma once
// Inverted dropout (Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from
// Overfitting"), as PyTorch's nn.Dropout: in training each element is zeroed with probability p and the
// kept ones are scaled by 1/(1-p), so evaluation is the identity.

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe {

template <class ScalarT = float>
class Dropout {
 public:
  using Scalar = ScalarT;

  /// Seeds its own generator from one draw of `rng`, so its masks do not depend on what else uses `rng`
  /// afterwards.
  Dropout(double p, Rng& rng) : p_(p), rng_(rng()) {
    detail::require(p >= 0.0 && p < 1.0, "Dropout: p must be in [0, 1), got ", p);
  }

  double p() const { return p_; }
  bool training() const { return training_; }
  void train(bool on) { training_ = on; }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    masked_ = training_ && p_ > 0.0;
    if (!masked_) {
      output_ = x;
      return output_;
    }
    const auto scale = static_cast<Scalar>(1.0 / (1.0 - p_));
    mask_.resize(x.rows(), x.cols());
    for (Index i = 0; i < x.rows(); ++i)
      for (Index j = 0; j < x.cols(); ++j) mask_(i, j) = uniform01(rng_) < p_ ? Scalar(0) : scale;
    output_ = x.cwiseProduct(mask_);
    return output_;
  }

  /// Applies the mask and scale of the last forward.
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == output_.rows() && dy.cols() == output_.cols(), "Dropout: gradient has shape ",
                    dy.rows(), "x", dy.cols(), ", expected ", output_.rows(), "x", output_.cols());
    if (masked_)
      grad_input_ = dy.cwiseProduct(mask_);
    else
      grad_input_ = dy;
    return grad_input_;
  }

  /// The output of the last forward.
  const MatrixX<Scalar>& output() const { return output_; }

  ParameterList<Scalar> named_parameters() { return {}; }

  GeneratorList named_generators() { return {{"generator", &rng_}}; }

 private:
  double p_;
  Rng rng_;
  bool training_ = true;
  bool masked_ = false;  // whether the last forward applied mask_
  MatrixX<Scalar> mask_, output_, grad_input_;
};

}  // namespace moe
