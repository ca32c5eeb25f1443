#pragma once
// SGD, Adam and AdamW with torch.optim's update rules, and gradient clipping by global norm.
//
// An optimizer keeps the ParameterList it was given: the parameters must outlive it. Its state (moments,
// step count) is allocated at construction, so step() allocates nothing, and is public through state()
// so that a checkpoint can save and restore it.

#include <cmath>
#include <concepts>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// What a training loop and apply_schedule use. set_momentum sets SGD's momentum or Adam's beta1, as
/// PyTorch's OneCycleLR does.
template <class O>
concept Optimizer = requires(O o, const O& c, double value) {
  typename O::Scalar;
  o.step();
  o.zero_grad();
  { c.lr() } -> std::convertible_to<double>;
  o.set_lr(value);
  o.set_momentum(value);
  { c.steps() } -> std::convertible_to<Index>;
  o.state();
};

namespace detail {

/// Rejects an empty list, and null, empty and repeated parameters (a repeated one would be stepped twice).
template <class Scalar>
void check_parameters(const ParameterList<Scalar>& parameters, const char* optimizer) {
  require(!parameters.empty(), optimizer, ": empty parameter list, expected at least one parameter");
  std::unordered_set<const Parameter<Scalar>*> seen;
  for (const auto& p : parameters) {
    require(p.parameter != nullptr, optimizer, ": parameter '", p.name, "' is null");
    require(p.parameter->value.size() > 0, optimizer, ": parameter '", p.name,
            "' is empty, expected a value with at least one element");
    require(seen.insert(p.parameter).second, optimizer, ": parameter '", p.name,
            "' appears more than once, expected each parameter once");
  }
}

/// One zero matrix per parameter, shaped like its value.
template <class Scalar>
std::vector<MatrixX<Scalar>> zeros_like(const ParameterList<Scalar>& parameters) {
  std::vector<MatrixX<Scalar>> out;
  out.reserve(parameters.size());
  for (const auto& p : parameters)
    out.push_back(MatrixX<Scalar>::Zero(p.parameter->value.rows(), p.parameter->value.cols()));
  return out;
}

/// Parameters must keep the shapes the state was allocated with (a Parameter assigned anew may not);
/// checked before a step changes anything. A gradient always has its value's shape.
template <class Scalar>
void check_step_shapes(const ParameterList<Scalar>& parameters, const std::vector<MatrixX<Scalar>>& state,
                       const char* optimizer) {
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    const auto& [name, p] = parameters[i];
    const auto& expected = state[i];
    require(p->value.rows() == expected.rows() && p->value.cols() == expected.cols(), optimizer, ": parameter '", name,
            "' has shape ", p->value.rows(), "x", p->value.cols(), ", expected ", expected.rows(), "x", expected.cols(),
            " as at construction");
  }
}

/// A hyper-parameter that must be a finite number >= 0: an infinite lr, say, makes every weight NaN one step later.
inline void check_non_negative(double value, const char* optimizer, const char* name) {
  require(std::isfinite(value) && value >= 0.0, optimizer, ": ", name, " must be finite and non-negative, got ", value);
}

inline void check_lr(double lr, const char* optimizer) { check_non_negative(lr, optimizer, "lr"); }

}  // namespace detail

/// Stochastic gradient descent with torch.optim.SGD's rule (Sutskever et al. 2013 for Nesterov):
///   d = g + weight_decay p
///   b = d on the first step with momentum, else b = momentum b + (1 - dampening) d
///   d = d + momentum b (nesterov) or b;    p -= lr d
template <class ScalarT = float>
class SGD {
 public:
  using Scalar = ScalarT;

  struct Options {
    double lr = 1e-2;
    double momentum = 0;
    double dampening = 0;
    double weight_decay = 0;
    bool nesterov = false;
  };

  /// One momentum buffer per parameter, allocated even when momentum is 0 because set_momentum (as
  /// OneCycleLR does) may turn it on; like PyTorch's, it starts as the first gradient that uses it.
  struct State {
    Index step = 0;
    std::vector<MatrixX<Scalar>> momentum_buffer;
    bool has_momentum_buffer = false;
  };

  SGD(ParameterList<Scalar> parameters, const Options& options)
      : parameters_(std::move(parameters)), options_(options) {
    detail::check_parameters(parameters_, "SGD");
    detail::check_lr(options_.lr, "SGD");
    detail::check_non_negative(options_.weight_decay, "SGD", "weight_decay");
    detail::check_non_negative(options_.dampening, "SGD", "dampening");
    check_momentum(options_.momentum);
    state_.momentum_buffer = detail::zeros_like(parameters_);
  }
  explicit SGD(ParameterList<Scalar> parameters) : SGD(std::move(parameters), Options{}) {}

  void step() {
    const auto lr = static_cast<Scalar>(options_.lr);
    const auto momentum = static_cast<Scalar>(options_.momentum);
    const auto dampening = static_cast<Scalar>(options_.dampening);
    const auto weight_decay = static_cast<Scalar>(options_.weight_decay);
    detail::check_step_shapes(parameters_, state_.momentum_buffer, "SGD");
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
      auto& p = *parameters_[i].parameter;
      auto& buffer = state_.momentum_buffer[i];
      const auto update = [&](const auto& d) {
        if (momentum == Scalar(0)) {
          p.value -= lr * d;
          return;
        }
        if (state_.has_momentum_buffer)
          buffer = momentum * buffer + (Scalar(1) - dampening) * d;
        else
          buffer = d;
        if (options_.nesterov)
          p.value -= lr * (d + momentum * buffer);
        else
          p.value -= lr * buffer;
      };
      if (weight_decay != Scalar(0))
        update(p.grad + weight_decay * p.value);
      else
        update(p.grad);
    }
    if (momentum != Scalar(0)) state_.has_momentum_buffer = true;
    ++state_.step;
  }

  void zero_grad() { moe::zero_grad(parameters_); }

  double lr() const { return options_.lr; }
  void set_lr(double lr) {
    detail::check_lr(lr, "SGD");
    options_.lr = lr;
  }
  void set_momentum(double momentum) {
    check_momentum(momentum);
    options_.momentum = momentum;
  }

  Index steps() const { return state_.step; }
  const Options& options() const { return options_; }
  const ParameterList<Scalar>& parameters() const { return parameters_; }
  State& state() { return state_; }
  const State& state() const { return state_; }

 private:
  void check_momentum(double momentum) const {
    detail::check_non_negative(momentum, "SGD", "momentum");
    detail::require(!options_.nesterov || (momentum > 0.0 && options_.dampening == 0.0),
                    "SGD: nesterov requires momentum > 0 and dampening 0, got momentum ", momentum, " and dampening ",
                    options_.dampening);
  }

  ParameterList<Scalar> parameters_;
  Options options_;
  State state_;
};

/// Adam (Kingma & Ba 2015) with torch.optim.Adam's bias correction (not amsgrad):
///   m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
///   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// `Decoupled` false: weight decay is L2, g += weight_decay p (Adam). `Decoupled` true: p -= lr
/// weight_decay p before the update (AdamW, Loshchilov & Hutter 2019). Use the aliases Adam and AdamW.
template <class ScalarT, bool Decoupled>
class AdamBase {
 public:
  using Scalar = ScalarT;
  static constexpr const char* name = Decoupled ? "AdamW" : "Adam";

  /// weight_decay defaults to PyTorch's: 0 for Adam, 1e-2 for AdamW.
  struct Options {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = Decoupled ? 1e-2 : 0.0;
  };

  /// PyTorch's names: exp_avg (m), exp_avg_sq (v), and the step count t.
  struct State {
    Index step = 0;
    std::vector<MatrixX<Scalar>> exp_avg;
    std::vector<MatrixX<Scalar>> exp_avg_sq;
  };

  AdamBase(ParameterList<Scalar> parameters, const Options& options)
      : parameters_(std::move(parameters)), options_(options) {
    detail::check_parameters(parameters_, name);
    detail::check_lr(options_.lr, name);
    check_beta(options_.beta1, "beta1");
    check_beta(options_.beta2, "beta2");
    detail::check_non_negative(options_.eps, name, "eps");
    detail::check_non_negative(options_.weight_decay, name, "weight_decay");
    state_.exp_avg = detail::zeros_like(parameters_);
    state_.exp_avg_sq = detail::zeros_like(parameters_);
  }
  explicit AdamBase(ParameterList<Scalar> parameters) : AdamBase(std::move(parameters), Options{}) {}

  void step() {
    detail::check_step_shapes(parameters_, state_.exp_avg, name);
    ++state_.step;
    const auto t = static_cast<double>(state_.step);
    const auto beta1 = static_cast<Scalar>(options_.beta1);
    const auto beta2 = static_cast<Scalar>(options_.beta2);
    const auto eps = static_cast<Scalar>(options_.eps);
    const auto weight_decay = static_cast<Scalar>(options_.weight_decay);
    const auto step_size = static_cast<Scalar>(options_.lr / (1.0 - std::pow(options_.beta1, t)));
    const auto bias_correction2_sqrt = static_cast<Scalar>(std::sqrt(1.0 - std::pow(options_.beta2, t)));
    const auto decay = static_cast<Scalar>(1.0 - options_.lr * options_.weight_decay);
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
      auto& p = *parameters_[i].parameter;
      auto& m = state_.exp_avg[i];
      auto& v = state_.exp_avg_sq[i];
      const auto update = [&](const auto& g) {
        m = beta1 * m + (Scalar(1) - beta1) * g;
        v = beta2 * v + (Scalar(1) - beta2) * g.cwiseAbs2();
        p.value.array() -= step_size * m.array() / (v.array().sqrt() / bias_correction2_sqrt + eps);
      };
      if constexpr (Decoupled) {
        if (weight_decay != Scalar(0)) p.value *= decay;
        update(p.grad);
      } else {
        if (weight_decay != Scalar(0))
          update(p.grad + weight_decay * p.value);
        else
          update(p.grad);
      }
    }
  }

  void zero_grad() { moe::zero_grad(parameters_); }

  double lr() const { return options_.lr; }
  void set_lr(double lr) {
    detail::check_lr(lr, name);
    options_.lr = lr;
  }
  /// Sets beta1, which OneCycleLR cycles as PyTorch does.
  void set_momentum(double beta1) {
    check_beta(beta1, "beta1");
    options_.beta1 = beta1;
  }

  Index steps() const { return state_.step; }
  const Options& options() const { return options_; }
  const ParameterList<Scalar>& parameters() const { return parameters_; }
  State& state() { return state_; }
  const State& state() const { return state_; }

 private:
  static void check_beta(double beta, const char* which) {
    detail::require(beta >= 0.0 && beta < 1.0, name, ": ", which, " must lie in [0, 1), got ", beta);
  }

  ParameterList<Scalar> parameters_;
  Options options_;
  State state_;
};

template <class Scalar = float>
using Adam = AdamBase<Scalar, false>;
template <class Scalar = float>
using AdamW = AdamBase<Scalar, true>;

/// torch.nn.utils.clip_grad_norm_ (Pascanu et al. 2013): scales every gradient by max_norm / (norm + 1e-6) when that is
/// below 1, where norm is the L2 norm of all gradients together. Returns the norm before clipping. A norm that is not
/// finite is returned as is, and the scaling then leaves non-finite gradients, as in PyTorch.
template <class Scalar>
double clip_grad_norm(const ParameterList<Scalar>& parameters, double max_norm) {
  detail::require(max_norm >= 0.0, "clip_grad_norm: max_norm must be non-negative, got ", max_norm);
  double squared = 0.0;
  for (const auto& p : parameters) squared += p.parameter->grad.template cast<double>().squaredNorm();
  const double norm = std::sqrt(squared);
  const double coefficient = max_norm / (norm + 1e-6);
  if (coefficient >= 1.0) return norm;
  for (const auto& p : parameters) p.parameter->grad *= static_cast<Scalar>(coefficient);
  return norm;
}

}  // namespace moe
