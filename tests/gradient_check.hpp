#pragma once
// Central finite differences in double against a module's backward.

#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <string>

#include "moe/core/module.hpp"
#include "moe/core/random.hpp"

namespace moe::test {

struct GradientError {
  double worst = 0.0;  // largest |numeric - analytic| / (atol + rtol * |numeric|); at most 1 passes
  std::string where;
};

/// Compares `analytic` with d loss / d variable by central differences, perturbing `variable` in place.
inline GradientError compare_gradient(const std::function<double()>& loss, Eigen::Ref<MatrixX<double>> variable,
                                      const MatrixX<double>& analytic, const std::string& name,
                                      double step = 1e-6, double atol = 1e-7, double rtol = 1e-5) {
  REQUIRE(analytic.rows() == variable.rows());
  REQUIRE(analytic.cols() == variable.cols());
  GradientError result;
  for (Index i = 0; i < variable.rows(); ++i) {
    for (Index j = 0; j < variable.cols(); ++j) {
      const double saved = variable(i, j);
      variable(i, j) = saved + step;
      const double up = loss();
      variable(i, j) = saved - step;
      const double down = loss();
      variable(i, j) = saved;
      const double numeric = (up - down) / (2 * step);
      const double error = std::abs(numeric - analytic(i, j)) / (atol + rtol * std::abs(numeric));
      if (error > result.worst) {
        result.worst = error;
        result.where = name + "(" + std::to_string(i) + "," + std::to_string(j) + "): numeric " +
                       std::to_string(numeric) + ", analytic " + std::to_string(analytic(i, j));
      }
    }
  }
  return result;
}

/// Checks dx, and each parameter's grad as backward left it, against central differences of `loss`.
inline void check_gradients(const std::function<double()>& loss, MatrixX<double>& x, const MatrixX<double>& dx,
                            const ParameterList<double>& parameters) {
  const GradientError input = compare_gradient(loss, x, dx, "input");
  INFO(input.where);
  CHECK(input.worst <= 1.0);
  for (const auto& p : parameters) {
    const MatrixX<double> analytic = p.parameter->grad;
    const GradientError e = compare_gradient(loss, p.parameter->value, analytic, p.name);
    INFO(e.where);
    CHECK(e.worst <= 1.0);
  }
}

/// Checks dx and every parameter gradient of `module` for loss = sum(forward(x) .* R), R random.
/// `extra_loss` adds a term computed after forward (an MoE layer's aux loss) whose gradient backward
/// is expected to include.
template <class M>
void check_module_gradients(M& module, MatrixX<double> x, std::uint64_t seed,
                            const std::function<double(M&)>& extra_loss = {}) {
  Rng rng(seed);
  const MatrixX<double> first = module.forward(x);
  MatrixX<double> weights(first.rows(), first.cols());
  fill_uniform(weights, rng, -1.0, 1.0);
  auto loss = [&] {
    double value = (module.forward(x).array() * weights.array()).sum();
    if (extra_loss) value += extra_loss(module);
    return value;
  };

  const auto parameters = module.named_parameters();
  zero_grad(parameters);
  module.forward(x);
  const MatrixX<double> dx = module.backward(weights);
  check_gradients(loss, x, dx, parameters);
}

/// A router's backward(A, B) against L = <scores, A> + <logits, B>, A and B random, for x and every
/// parameter.
template <class R>
void check_router_gradients(R& router, MatrixX<double> x, std::uint64_t seed) {
  Rng rng(seed);
  const MatrixX<double> first = router.forward(x);
  MatrixX<double> a(first.rows(), first.cols()), b(first.rows(), first.cols());
  fill_uniform(a, rng, -1.0, 1.0);
  fill_uniform(b, rng, -1.0, 1.0);
  auto loss = [&] {
    const double scores_part = (router.forward(x).array() * a.array()).sum();
    return scores_part + (router.logits().array() * b.array()).sum();
  };

  const auto parameters = router.named_parameters();
  zero_grad(parameters);
  router.forward(x);
  const MatrixX<double> dx = router.backward(a, b);
  check_gradients(loss, x, dx, parameters);
}

}  // namespace moe::test
