#pragma once
// Element-wise activations: ReLU, GELU (exact erf form, PyTorch's default) and SiLU.

#include <cmath>
#include <numbers>

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
    output_ = x.unaryExpr([](Scalar v) { return Function::value(v); });
    return output_;
  }

  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    require(dy.rows() == input_.rows() && dy.cols() == input_.cols(), Function::name, ": gradient has shape ",
            dy.rows(), "x", dy.cols(), ", expected ", input_.rows(), "x", input_.cols());
    grad_input_ = dy.binaryExpr(input_, [](Scalar g, Scalar v) { return g * Function::derivative(v); });
    return grad_input_;
  }

  ParameterList<Scalar> named_parameters() { return {}; }

 private:
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

/// Hendrycks & Gimpel 2016, "Gaussian Error Linear Units": x Phi(x), Phi the standard normal CDF.
struct GELUFunction {
  static constexpr const char* name = "GELU";
  template <class Scalar>
  static Scalar cdf(Scalar x) {
    return Scalar(0.5) * (Scalar(1) + std::erf(x / std::numbers::sqrt2_v<Scalar>));
  }
  template <class Scalar>
  static Scalar value(Scalar x) {
    return x * cdf(x);
  }
  /// Phi(x) + x phi(x), phi the standard normal density.
  template <class Scalar>
  static Scalar derivative(Scalar x) {
    const Scalar inv_sqrt_2pi = std::numbers::inv_sqrtpi_v<Scalar> / std::numbers::sqrt2_v<Scalar>;
    return cdf(x) + x * inv_sqrt_2pi * std::exp(Scalar(-0.5) * x * x);
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

template <class ScalarT = float>
class GELU : public detail::Elementwise<ScalarT, detail::GELUFunction> {};

template <class ScalarT = float>
class SiLU : public detail::Elementwise<ScalarT, detail::SiLUFunction> {};

}  // namespace moe
