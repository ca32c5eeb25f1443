#pragma once
// Element-wise activations: ReLU, GELU (exact erf form, PyTorch's default) and SiLU.

#include <cmath>
#include <numbers>

#include <unsupported/Eigen/SpecialFunctions>

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"

namespace moe {

namespace detail {

/// An activation applied element by element. `Function` provides its name, value(x) and derivative(x);
/// forward caches the input, from which backward takes the derivative.
template <class ScalarT, class Function>
class Elementwise {
 public:
  using Scalar = ScalarT;

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    input_ = x;
    return activate();
  }

  /// For a caller that computes x anyway: writing x into input_buffer() and then calling
  /// forward_in_place() is forward(x) without the copy.
  MatrixX<Scalar>& input_buffer() { return input_; }
  const MatrixX<Scalar>& forward_in_place() { return activate(); }

  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    require(dy.rows() == input_.rows() && dy.cols() == input_.cols(), Function::name, ": gradient has shape ",
            dy.rows(), "x", dy.cols(), ", expected ", input_.rows(), "x", input_.cols());
    grad_input_ = dy.binaryExpr(input_, [](Scalar g, Scalar v) { return g * Function::derivative(v); });
    return grad_input_;
  }

  /// The output of the last forward.
  const MatrixX<Scalar>& output() const { return output_; }

  ParameterList<Scalar> named_parameters() { return {}; }

 private:
  const MatrixX<Scalar>& activate() {
    output_ = input_.unaryExpr([](Scalar v) { return Function::value(v); });
    return output_;
  }

  MatrixX<Scalar> input_, output_, grad_input_;
};

struct ReLUFunction {
  static constexpr const char* name = "ReLU";
  template <class Scalar>
  static Scalar value(Scalar x) {
    return x > Scalar(0) ? x : Scalar(0);
  }
  /// 0 at x = 0, as PyTorch.
  template <class Scalar>
  static Scalar derivative(Scalar x) {
    return x > Scalar(0) ? Scalar(1) : Scalar(0);
  }
};

/// Elfwing et al. 2018, "Sigmoid-Weighted Linear Units" (Swish with beta = 1): x sigmoid(x).
struct SiLUFunction {
  static constexpr const char* name = "SiLU";
  /// exp(-x) may overflow to inf for very negative x, which still gives the right limit 0.
  template <class Scalar>
  static Scalar sigmoid(Scalar x) {
    return Scalar(1) / (Scalar(1) + std::exp(-x));
  }
  template <class Scalar>
  static Scalar value(Scalar x) {
    return x * sigmoid(x);
  }
  /// s (1 + x (1 - s)) with s = sigmoid(x).
  template <class Scalar>
  static Scalar derivative(Scalar x) {
    const Scalar s = sigmoid(x);
    return s * (Scalar(1) + x * (Scalar(1) - s));
  }
};

}  // namespace detail

template <class ScalarT = float>
class ReLU : public detail::Elementwise<ScalarT, detail::ReLUFunction> {};

/// Hendrycks & Gimpel 2016, "Gaussian Error Linear Units": x Phi(x), Phi the standard normal CDF, in the
/// exact erf form (PyTorch's default, approximate='none'). Evaluated with Eigen's vectorised erf (float: a
/// rational approximation within a few ulp of erf; double: std::erf); forward keeps Phi, so backward
/// needs one exp per element, where the scalar std::erf form cost more than the expert's GEMMs.
template <class ScalarT = float>
class GELU {
 public:
  using Scalar = ScalarT;

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    input_ = x;
    return activate();
  }

  /// For a caller that computes x anyway: writing x into input_buffer() and then calling
  /// forward_in_place() is forward(x) without the copy.
  MatrixX<Scalar>& input_buffer() { return input_; }
  const MatrixX<Scalar>& forward_in_place() { return activate(); }

  /// dy (Phi(x) + x phi(x)), phi the standard normal density.
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == input_.rows() && dy.cols() == input_.cols(), "GELU: gradient has shape ",
                    dy.rows(), "x", dy.cols(), ", expected ", input_.rows(), "x", input_.cols());
    const auto x = input_.array();
    grad_input_ = (dy.array() * (cdf_.array() + x * inv_sqrt_2pi * (Scalar(-0.5) * x.square()).exp())).matrix();
    return grad_input_;
  }

  /// The output of the last forward.
  const MatrixX<Scalar>& output() const { return output_; }

  ParameterList<Scalar> named_parameters() { return {}; }

 private:
  static constexpr Scalar inv_sqrt2 = Scalar(1) / std::numbers::sqrt2_v<Scalar>;
  static constexpr Scalar inv_sqrt_2pi = std::numbers::inv_sqrtpi_v<Scalar> / std::numbers::sqrt2_v<Scalar>;

  const MatrixX<Scalar>& activate() {
    cdf_ = (Scalar(0.5) * ((input_.array() * inv_sqrt2).erf() + Scalar(1))).matrix();
    output_ = input_.cwiseProduct(cdf_);
    return output_;
  }

  MatrixX<Scalar> input_, cdf_, output_, grad_input_;
};

template <class ScalarT = float>
class SiLU : public detail::Elementwise<ScalarT, detail::SiLUFunction> {};

}  // namespace moe
