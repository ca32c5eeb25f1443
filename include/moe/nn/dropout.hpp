#pragma once
// Inverted dropout (Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from
// Overfitting"), as PyTorch's nn.Dropout: in training each element is zeroed with probability p and the
// kept ones are scaled by 1/(1-p), so evaluation is the identity.

#include "moe/core/buffer.hpp"
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
    output_.resize(x.rows(), x.cols());
    apply(x, output_);
    return output_;
  }

  /// Applies the mask and scale of the last forward.
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == output_.rows() && dy.cols() == output_.cols(), "Dropout: gradient has shape ",
                    dy.rows(), "x", dy.cols(), ", expected ", output_.rows(), "x", output_.cols());
    grad_input_.resize(dy.rows(), dy.cols());
    apply_backward(dy, grad_input_);
    return grad_input_;
  }

  /// Whether forward zeroes anything: in training with p > 0. Otherwise it is the identity.
  bool active() const { return training_ && p_ > 0.0; }

  /// forward into y, which has x's shape, for a module that keeps the output itself (FeedForward); the
  /// mask is kept for apply_backward.
  template <class Y>
  void apply(ConstRef<Scalar> x, Y& y) {
    masked_ = active();
    if (!masked_) {
      y = x;
      return;
    }
    const auto scale = static_cast<Scalar>(1.0 / (1.0 - p_));
    auto& mask = mask_.resize(x.rows(), x.cols());
    for (Index i = 0; i < x.rows(); ++i)
      for (Index j = 0; j < x.cols(); ++j) mask(i, j) = uniform01(rng_) < p_ ? Scalar(0) : scale;
    y = x.cwiseProduct(mask);
  }

  /// backward into dx, which has dy's shape, for the mask of the last apply.
  template <class DX>
  void apply_backward(ConstRef<Scalar> dy, DX& dx) const {
    if (masked_)
      dx = dy.cwiseProduct(mask_.view());
    else
      dx = dy;
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
  Buffer<Scalar> mask_;
  MatrixX<Scalar> output_, grad_input_;
};

}  // namespace moe
