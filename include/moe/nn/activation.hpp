#pragma once
// Element-wise activations: ReLU, GELU (exact erf form, PyTorch's default) and SiLU.

#include <cmath>
#include <numbers>

#include <unsupported/Eigen/SpecialFunctions>

#include "moe/core/buffer.hpp"
#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"

namespace moe {

namespace detail {

/// An activation applied element by element. `Function` provides its name, forward(x, y) (y = f(x)) and
/// backward(x, dy, dx) (dx = dy f'(x)) on matrices of x's shape that the caller sized (MatrixX or the
/// MatrixView of a Buffer); it may keep what forward computed for backward. forward caches the input.
template <class ScalarT, class FunctionT>
class Elementwise {
 public:
  using Scalar = ScalarT;
  /// For a module that keeps the activation's input and output itself (FeedForward).
  using Function = FunctionT;

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    input_ = x;
    output_.resize(x.rows(), x.cols());
    function_.forward(input_, output_);
    return output_;
  }

  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    require(dy.rows() == input_.rows() && dy.cols() == input_.cols(), Function::name, ": gradient has shape ",
            dy.rows(), "x", dy.cols(), ", expected ", input_.rows(), "x", input_.cols());
    grad_input_.resize(dy.rows(), dy.cols());
    function_.backward(input_, dy, grad_input_);
    return grad_input_;
  }

  /// The output of the last forward.
  const MatrixX<Scalar>& output() const { return output_; }

  ParameterList<Scalar> named_parameters() { return {}; }

 private:
  Function function_;
  MatrixX<Scalar> input_, output_, grad_input_;
};

template <class Scalar>
struct ReLUFunction {
  static constexpr const char* name = "ReLU";
  template <class X, class Y>
  void forward(const X& x, Y& y) const {
    y = (x.array() > Scalar(0)).select(x, Scalar(0));
  }
  /// 0 at x = 0, as PyTorch.
  template <class X, class DX>
  void backward(const X& x, ConstRef<Scalar> dy, DX& dx) const {
    dx = dy.binaryExpr(x, [](Scalar g, Scalar v) { return g * (v > Scalar(0) ? Scalar(1) : Scalar(0)); });
  }
};

/// Elfwing et al. 2018, "Sigmoid-Weighted Linear Units" (Swish with beta = 1): x sigmoid(x).
template <class Scalar>
struct SiLUFunction {
  static constexpr const char* name = "SiLU";
  /// exp(-x) may overflow to inf for very negative x, which still gives the right limit 0.
  static Scalar sigmoid(Scalar x) { return Scalar(1) / (Scalar(1) + std::exp(-x)); }
  template <class X, class Y>
  void forward(const X& x, Y& y) const {
    y = x.unaryExpr([](Scalar v) { return v * sigmoid(v); });
  }
  /// s (1 + x (1 - s)) with s = sigmoid(x).
  template <class X, class DX>
  void backward(const X& x, ConstRef<Scalar> dy, DX& dx) const {
    dx = dy.binaryExpr(x, [](Scalar g, Scalar v) {
      const Scalar s = sigmoid(v);
      return g * (s * (Scalar(1) + v * (Scalar(1) - s)));
    });
  }
};

/// Hendrycks & Gimpel 2016, "Gaussian Error Linear Units": x Phi(x), Phi the standard normal CDF, in the
/// exact erf form (PyTorch's default, approximate='none'). Evaluated with Eigen's vectorised erf (float: a
/// rational approximation within a few ulp of erf; double: std::erf); forward keeps Phi, so backward
/// needs one exp per element, where the scalar std::erf form cost more than the expert's GEMMs.
template <class Scalar>
struct GELUFunction {
  static constexpr const char* name = "GELU";
  static constexpr Scalar inv_sqrt2 = Scalar(1) / std::numbers::sqrt2_v<Scalar>;
  static constexpr Scalar inv_sqrt_2pi = std::numbers::inv_sqrtpi_v<Scalar> / std::numbers::sqrt2_v<Scalar>;

  template <class X, class Y>
  void forward(const X& x, Y& y) {
    auto& phi = cdf.resize(x.rows(), x.cols());
    phi = (Scalar(0.5) * ((x.array() * inv_sqrt2).erf() + Scalar(1))).matrix();
    y = x.cwiseProduct(phi);
  }
  /// dy (Phi(x) + x phi(x)), phi the standard normal density.
  template <class X, class DX>
  void backward(const X& x, ConstRef<Scalar> dy, DX& dx) const {
    const auto v = x.array();
    dx = (dy.array() * (cdf.view().array() + v * inv_sqrt_2pi * (Scalar(-0.5) * v.square()).exp())).matrix();
  }

  Buffer<Scalar> cdf;  // Phi(x) of the last forward
};

}  // namespace detail

template <class ScalarT = float>
class ReLU : public detail::Elementwise<ScalarT, detail::ReLUFunction<ScalarT>> {};

template <class ScalarT = float>
class GELU : public detail::Elementwise<ScalarT, detail::GELUFunction<ScalarT>> {};

template <class ScalarT = float>
class SiLU : public detail::Elementwise<ScalarT, detail::SiLUFunction<ScalarT>> {};

}  // namespace moe
