#pragma once
// Adam and AdamW on a Thrust device: the update rules of moe::Adam and moe::AdamW (torch.optim's; Kingma & Ba
// 2015, Loshchilov & Hutter 2019) on tensors in device memory, one thread per element, so a training step on
// a device-resident model sends nothing to the host.

#include "backends/thrust/config.hpp"

#include <cmath>
#include <cstddef>
#include <unordered_set>
#include <utility>
#include <vector>

#include <cuda/std/cmath>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "backends/thrust/tensor.hpp"
#include "moe/core/error.hpp"
#include "moe/optim/optimizer.hpp"

namespace moe::backends::device {

namespace detail {

/// One element of AdamBase::step, in its order of operations.
template <class Scalar, bool Decoupled>
struct AdamElement {
  Scalar* value;
  const Scalar* grad;
  Scalar* exp_avg;
  Scalar* exp_avg_sq;
  Scalar beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt, decay;

  MOE_HOST_DEVICE void operator()(Index i) const {
    Scalar g = grad[i];
    if constexpr (Decoupled) {
      if (weight_decay != Scalar(0)) value[i] *= decay;
    } else {
      if (weight_decay != Scalar(0)) g = g + weight_decay * value[i];
    }
    exp_avg[i] = beta1 * exp_avg[i] + (Scalar(1) - beta1) * g;
    exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (Scalar(1) - beta2) * (g * g);
    value[i] -= step_size * exp_avg[i] / (cuda::std::sqrt(exp_avg_sq[i]) / bias_correction2_sqrt + eps);
  }
};

}  // namespace detail

/// moe::AdamBase on device tensors, with the same Options and the same rule. The tensors must outlive the
/// optimizer; their moments live on the device beside them.
template <class ScalarT, bool Decoupled>
class AdamBase {
 public:
  using Scalar = ScalarT;
  using Options = typename moe::AdamBase<Scalar, Decoupled>::Options;
  static constexpr const char* name = Decoupled ? "device::AdamW" : "device::Adam";

  AdamBase(std::vector<Tensor<Scalar>> tensors, const Options& options)
      : tensors_(std::move(tensors)), options_(options) {
    moe::detail::require(!tensors_.empty(), name, ": empty tensor list, expected at least one tensor");
    std::unordered_set<const Scalar*> seen;
    for (const auto& t : tensors_) {
      moe::detail::require(t.value != nullptr && t.grad != nullptr && t.size > 0, name, ": tensor '", t.name,
                           "' is null or empty");
      moe::detail::require(seen.insert(t.value).second, name, ": tensor '", t.name,
                           "' appears more than once, expected each tensor once");
    }
    moe::detail::require(options_.lr >= 0.0, name, ": lr must be non-negative, got ", options_.lr);
    check_beta(options_.beta1, "beta1");
    check_beta(options_.beta2, "beta2");
    moe::detail::require(options_.eps >= 0.0, name, ": eps must be non-negative, got ", options_.eps);
    moe::detail::require(options_.weight_decay >= 0.0, name, ": weight_decay must be non-negative, got ",
                         options_.weight_decay);
    exp_avg_.resize(tensors_.size());
    exp_avg_sq_.resize(tensors_.size());
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      exp_avg_[i].assign(static_cast<std::size_t>(tensors_[i].size), Scalar(0));
      exp_avg_sq_[i].assign(static_cast<std::size_t>(tensors_[i].size), Scalar(0));
    }
  }

  explicit AdamBase(std::vector<Tensor<Scalar>> tensors) : AdamBase(std::move(tensors), Options{}) {}

  void step() {
    ++step_;
    const auto t = static_cast<double>(step_);
    const auto step_size = static_cast<Scalar>(options_.lr / (1.0 - std::pow(options_.beta1, t)));
    const auto bias_correction2_sqrt = static_cast<Scalar>(std::sqrt(1.0 - std::pow(options_.beta2, t)));
    const auto decay = static_cast<Scalar>(1.0 - options_.lr * options_.weight_decay);
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const Tensor<Scalar>& tensor = tensors_[i];
      thrust::for_each(thrust::device, thrust::counting_iterator<Index>(0),
                       thrust::counting_iterator<Index>(tensor.size),
                       detail::AdamElement<Scalar, Decoupled>{
                           tensor.value, tensor.grad, thrust::raw_pointer_cast(exp_avg_[i].data()),
                           thrust::raw_pointer_cast(exp_avg_sq_[i].data()), static_cast<Scalar>(options_.beta1),
                           static_cast<Scalar>(options_.beta2), static_cast<Scalar>(options_.eps),
                           static_cast<Scalar>(options_.weight_decay), step_size, bias_correction2_sqrt, decay});
    }
  }

  void zero_grad() {
    for (const auto& tensor : tensors_) thrust::fill_n(thrust::device, tensor.grad, tensor.size, Scalar(0));
  }

  double lr() const { return options_.lr; }
  void set_lr(double lr) {
    moe::detail::require(lr >= 0.0, name, ": lr must be non-negative, got ", lr);
    options_.lr = lr;
  }
  /// Sets beta1, which OneCycleLR cycles as PyTorch does.
  void set_momentum(double beta1) {
    check_beta(beta1, "beta1");
    options_.beta1 = beta1;
  }

  Index steps() const { return step_; }
  const Options& options() const { return options_; }
  const std::vector<Tensor<Scalar>>& tensors() const { return tensors_; }

 private:
  static void check_beta(double beta, const char* which) {
    moe::detail::require(beta >= 0.0 && beta < 1.0, name, ": ", which, " must lie in [0, 1), got ", beta);
  }

  std::vector<Tensor<Scalar>> tensors_;
  Options options_;
  Index step_ = 0;
  std::vector<thrust::device_vector<Scalar>> exp_avg_, exp_avg_sq_;
};

template <class Scalar = float>
using Adam = AdamBase<Scalar, false>;
template <class Scalar = float>
using AdamW = AdamBase<Scalar, true>;

}  // namespace moe::backends::device
