#pragma once
// Forward and backward of a stacked bank of feed-forward experts on a Thrust device: FeedForwardBank
// (y = fc2(act(fc1(x))), as moe::FeedForward) and SwiGLUBank (as moe::SwiGLUFeedForward). Each Linear stack
// runs as one grouped GEMM over all experts (grouped_gemm.hpp); the activations are Thrust transforms with
// the formulas of moe/nn/activation.hpp. Every element is computed by one thread in a fixed order, so for
// fixed inputs the bits are the same run to run and for any number of threads.
//
// Parameters live where the caller keeps them (device memory, stacked as ExpertBank stacks them) and are
// passed to forward and backward; the banks own only what they compute, in buffers that keep their capacity.

#include "backends/thrust/config.hpp"

#include <array>
#include <cstddef>
#include <numbers>
#include <ranges>
#include <span>

#include <cuda/std/cmath>
#include <thrust/device_vector.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform.h>

#include "backends/thrust/grouped_gemm.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"

namespace moe::backends::device {

/// One stacked parameter of a bank in device memory: its value and its accumulated gradient, same shape.
template <class Scalar>
struct DeviceParameter {
  Scalar* value = nullptr;
  Scalar* grad = nullptr;
};

/// moe's activation on the device: value(x) = f(x) and gradient(dy, x) = dy f'(x), the formulas (and order
/// of operations) of moe/nn/activation.hpp.
template <template <class> class Activation>
struct DeviceActivation;

template <>
struct DeviceActivation<ReLU> {
  template <class S>
  MOE_HOST_DEVICE static S value(S x) {
    return x > S(0) ? x : S(0);
  }
  /// 0 at x = 0, as PyTorch.
  template <class S>
  MOE_HOST_DEVICE static S gradient(S dy, S x) {
    return dy * (x > S(0) ? S(1) : S(0));
  }
};

/// Hendrycks & Gimpel 2016, "Gaussian Error Linear Units": x Phi(x), Phi the standard normal CDF, in the
/// exact erf form (PyTorch's approximate='none').
template <>
struct DeviceActivation<GELU> {
  template <class S>
  MOE_HOST_DEVICE static S cdf(S x) {
    constexpr S inv_sqrt2 = S(1) / std::numbers::sqrt2_v<S>;
    return S(0.5) * (::cuda::std::erf(x * inv_sqrt2) + S(1));
  }
  template <class S>
  MOE_HOST_DEVICE static S value(S x) {
    return x * cdf(x);
  }
  /// dy (Phi(x) + x phi(x)), phi the standard normal density.
  template <class S>
  MOE_HOST_DEVICE static S gradient(S dy, S x) {
    constexpr S inv_sqrt_2pi = std::numbers::inv_sqrtpi_v<S> / std::numbers::sqrt2_v<S>;
    return dy * (cdf(x) + x * inv_sqrt_2pi * ::cuda::std::exp(S(-0.5) * (x * x)));
  }
};

/// Elfwing et al. 2018, "Sigmoid-Weighted Linear Units": x sigmoid(x).
template <>
struct DeviceActivation<SiLU> {
  /// exp(-x) may overflow to inf for very negative x, which still gives the right limit 0.
  template <class S>
  MOE_HOST_DEVICE static S sigmoid(S x) {
    return S(1) / (S(1) + ::cuda::std::exp(-x));
  }
  template <class S>
  MOE_HOST_DEVICE static S value(S x) {
    return x * sigmoid(x);
  }
  /// dy s (1 + x (1 - s)) with s = sigmoid(x).
  template <class S>
  MOE_HOST_DEVICE static S gradient(S dy, S x) {
    const S s = sigmoid(x);
    return dy * (s * (S(1) + x * (S(1) - s)));
  }
};

namespace detail {

template <class Function, class Scalar>
struct ActivationValue {
  MOE_HOST_DEVICE Scalar operator()(Scalar x) const { return Function::value(x); }
};

template <class Function, class Scalar>
struct ActivationGradient {
  MOE_HOST_DEVICE Scalar operator()(Scalar dy, Scalar x) const { return Function::gradient(dy, x); }
};

/// SwiGLU's hidden product silu(gate) * up.
template <class Scalar>
struct SwiGLUProduct {
  MOE_HOST_DEVICE Scalar operator()(Scalar gate, Scalar up) const { return DeviceActivation<SiLU>::value(gate) * up; }
};

/// With h = s * u (s = silu(gate), u = up): d gate = silu'(gate) (dh u) and d up = dh s, in one pass.
template <class Scalar>
struct SwiGLUGradients {
  const Scalar* d_product;
  const Scalar* gate;
  const Scalar* up;
  Scalar* d_gate;
  Scalar* d_up;
  MOE_HOST_DEVICE void operator()(Index i) const {
    d_gate[i] = DeviceActivation<SiLU>::gradient(d_product[i] * up[i], gate[i]);
    d_up[i] = d_product[i] * DeviceActivation<SiLU>::value(gate[i]);
  }
};

template <class Scalar>
Scalar* device_data(thrust::device_vector<Scalar>& buffer) {
  return thrust::raw_pointer_cast(buffer.data());
}

/// The Linear stacks of a bank from its parameters in the expert's named_parameters() order: each
/// Linear's weight, then its bias when the bank has biases. `shapes` holds each Linear's {in, out}.
template <std::size_t Count, class Scalar>
std::array<LinearStack<Scalar>, Count> linear_stacks(const char* bank,
                                                     std::span<const DeviceParameter<Scalar>> parameters, bool bias,
                                                     const std::array<std::array<Index, 2>, Count>& shapes) {
  const std::size_t per_linear = bias ? 2 : 1;
  moe::detail::require(parameters.size() == Count * per_linear, bank, ": expected ", Count * per_linear,
                       " parameters (the expert's named_parameters() order), got ", parameters.size());
  for (std::size_t i = 0; i < parameters.size(); ++i)
    moe::detail::require(parameters[i].value != nullptr && parameters[i].grad != nullptr, bank, ": parameter ", i,
                         " has a null value or gradient");
  std::array<LinearStack<Scalar>, Count> stacks;
  for (std::size_t i = 0; i < Count; ++i) {
    const DeviceParameter<Scalar>& weight = parameters[i * per_linear];
    stacks[i] = {shapes[i][0], shapes[i][1], weight.value, nullptr, weight.grad, nullptr};
    if (bias) {
      stacks[i].bias = parameters[i * per_linear + 1].value;
      stacks[i].bias_grad = parameters[i * per_linear + 1].grad;
    }
  }
  return stacks;
}

/// gemm.set_rows(offsets) once offsets are known to hold one row range per expert of the bank.
template <class Scalar, class Offsets>
void set_expert_rows(const char* bank, GroupedGemm<Scalar>& gemm, const Offsets& offsets, Index num_experts) {
  const auto count = static_cast<Index>(std::ranges::size(offsets));
  moe::detail::require(count == num_experts + 1, bank, ": offsets has ", count,
                       " values, expected num_experts + 1 = ", num_experts + 1);
  gemm.set_rows(offsets);
}

/// The sizes of a bank: N experts of d_model inputs, `hidden` units and out_features outputs (d_model when
/// Options::out_features is 0), with or without biases. Its constructor checks them, so a bank's GroupedGemm
/// (a CUDA context under nvcc) is built only for valid ones.
class BankShape {
 public:
  Index num_experts() const { return num_experts_; }
  Index in_features() const { return d_model_; }
  Index hidden() const { return hidden_; }
  Index out_features() const { return out_features_; }

 protected:
  template <class Options>
  BankShape(const char* bank, Index num_experts, Index d_model, const Options& options)
      : num_experts_(num_experts),
        d_model_(d_model),
        hidden_(options.hidden),
        out_features_(options.out_features > 0 ? options.out_features : d_model),
        bias_(options.bias) {
    moe::detail::require(num_experts > 0 && d_model > 0, bank, ": num_experts and d_model must be positive, got ",
                         num_experts, " and ", d_model);
    moe::detail::require_hidden(bank, options.hidden);
  }

  Index num_experts_, d_model_, hidden_, out_features_;
  bool bias_;
};

}  // namespace detail

/// The N experts of one MoE layer of FeedForward<Activation, Scalar> experts, stacked: fc1.weight
/// [N x hidden x d], fc1.bias [N x hidden], fc2.weight [N x out x hidden], fc2.bias [N x out] (biases only
/// with Options::bias), passed in that order (the expert's named_parameters()). Dropout is not supported:
/// a bank with dropout runs on backends::Cpu.
template <template <class> class Activation, class ScalarT = float>
class FeedForwardBank : public detail::BankShape {
 public:
  using Scalar = ScalarT;
  using Options = typename FeedForward<Activation, Scalar>::Options;

  FeedForwardBank(Index num_experts, Index d_model, const Options& options)
      : BankShape("FeedForwardBank", num_experts, d_model, without_dropout(options)) {}

  /// y [rows x out] of x [rows x d] in device memory, expert e's rows at [offsets[e], offsets[e + 1])
  /// (num_experts + 1 host values). x is kept, not copied, for backward: it must not change until then.
  template <class Offsets>
  const thrust::device_vector<Scalar>& forward(const Offsets& offsets, const Scalar* x,
                                               std::span<const DeviceParameter<Scalar>> parameters) {
    const auto [fc1, fc2] = stacks(parameters);
    detail::set_expert_rows("FeedForwardBank", gemm_, offsets, num_experts_);
    const Index rows = gemm_.rows();
    input_ = x;
    has_input_ = true;
    pre_activation_.resize(static_cast<std::size_t>(rows * hidden_));
    activation_.resize(pre_activation_.size());
    output_.resize(static_cast<std::size_t>(rows * out_features_));
    gemm_.forward(fc1, x, detail::device_data(pre_activation_));
    thrust::transform(gemm_.policy(), pre_activation_.begin(), pre_activation_.end(), activation_.begin(),
                      detail::ActivationValue<DeviceActivation<Activation>, Scalar>{});
    gemm_.forward(fc2, detail::device_data(activation_), detail::device_data(output_));
    return output_;
  }

  /// dx [rows x d] of dy [rows x out] (device memory) for the last forward; adds every parameter's gradient.
  const thrust::device_vector<Scalar>& backward(const Scalar* dy, std::span<const DeviceParameter<Scalar>> parameters) {
    moe::detail::require(has_input_, "FeedForwardBank: backward before forward");
    const auto [fc1, fc2] = stacks(parameters);
    d_hidden_.resize(pre_activation_.size());
    grad_input_.resize(static_cast<std::size_t>(gemm_.rows() * d_model_));
    gemm_.accumulate_grads(fc2, dy, detail::device_data(activation_));
    gemm_.input_grad(fc2, dy, detail::device_data(d_hidden_));
    thrust::transform(gemm_.policy(), d_hidden_.begin(), d_hidden_.end(), pre_activation_.begin(), d_hidden_.begin(),
                      detail::ActivationGradient<DeviceActivation<Activation>, Scalar>{});
    gemm_.accumulate_grads(fc1, detail::device_data(d_hidden_), input_);
    gemm_.input_grad(fc1, detail::device_data(d_hidden_), detail::device_data(grad_input_));
    return grad_input_;
  }

  /// The products' context: its policy (and, under nvcc, its stream) orders other work with the bank's.
  const GroupedGemm<Scalar>& gemm() const { return gemm_; }

 private:
  static const Options& without_dropout(const Options& options) {
    moe::detail::require(options.dropout == 0.0, "FeedForwardBank: Options::dropout is ", options.dropout,
                         ", the Thrust backend runs no dropout; a bank with dropout runs on backends::Cpu");
    return options;
  }

  std::array<LinearStack<Scalar>, 2> stacks(std::span<const DeviceParameter<Scalar>> parameters) const {
    return detail::linear_stacks<2>("FeedForwardBank", parameters, bias_,
                                    {{{d_model_, hidden_}, {hidden_, out_features_}}});
  }

  GroupedGemm<Scalar> gemm_;
  const Scalar* input_ = nullptr;  // null for an empty block
  bool has_input_ = false;
  thrust::device_vector<Scalar> pre_activation_, activation_, output_, d_hidden_, grad_input_;
};

/// The N experts of one MoE layer of SwiGLUFeedForward<Scalar> experts (Shazeer 2020, "GLU Variants Improve
/// Transformer": y = down_proj(silu(gate_proj(x)) * up_proj(x))), stacked: gate_proj.weight [N x hidden x d],
/// gate_proj.bias [N x hidden], up_proj.weight [N x hidden x d], up_proj.bias [N x hidden], down_proj.weight
/// [N x out x hidden], down_proj.bias [N x out] (biases only with Options::bias), passed in that order (the
/// expert's named_parameters()).
template <class ScalarT = float>
class SwiGLUBank : public detail::BankShape {
 public:
  using Scalar = ScalarT;
  using Options = typename SwiGLUFeedForward<Scalar>::Options;

  SwiGLUBank(Index num_experts, Index d_model, const Options& options)
      : BankShape("SwiGLUBank", num_experts, d_model, options) {}

  /// y [rows x out] of x [rows x d] in device memory, expert e's rows at [offsets[e], offsets[e + 1])
  /// (num_experts + 1 host values). x is kept, not copied, for backward: it must not change until then.
  template <class Offsets>
  const thrust::device_vector<Scalar>& forward(const Offsets& offsets, const Scalar* x,
                                               std::span<const DeviceParameter<Scalar>> parameters) {
    const auto [gate_proj, up_proj, down_proj] = stacks(parameters);
    detail::set_expert_rows("SwiGLUBank", gemm_, offsets, num_experts_);
    const Index rows = gemm_.rows();
    input_ = x;
    has_input_ = true;
    gate_.resize(static_cast<std::size_t>(rows * hidden_));
    up_.resize(gate_.size());
    product_.resize(gate_.size());
    output_.resize(static_cast<std::size_t>(rows * out_features_));
    gemm_.forward(gate_proj, x, detail::device_data(gate_));
    gemm_.forward(up_proj, x, detail::device_data(up_));
    thrust::transform(gemm_.policy(), gate_.begin(), gate_.end(), up_.begin(), product_.begin(),
                      detail::SwiGLUProduct<Scalar>{});
    gemm_.forward(down_proj, detail::device_data(product_), detail::device_data(output_));
    return output_;
  }

  /// dx [rows x d] of dy [rows x out] (device memory) for the last forward; adds every parameter's gradient.
  const thrust::device_vector<Scalar>& backward(const Scalar* dy, std::span<const DeviceParameter<Scalar>> parameters) {
    moe::detail::require(has_input_, "SwiGLUBank: backward before forward");
    const auto [gate_proj, up_proj, down_proj] = stacks(parameters);
    d_product_.resize(gate_.size());
    d_gate_.resize(gate_.size());
    d_up_.resize(gate_.size());
    grad_input_.resize(static_cast<std::size_t>(gemm_.rows() * d_model_));
    gemm_.accumulate_grads(down_proj, dy, detail::device_data(product_));
    gemm_.input_grad(down_proj, dy, detail::device_data(d_product_));
    thrust::for_each(gemm_.policy(), thrust::counting_iterator<Index>(0),
                     thrust::counting_iterator<Index>(static_cast<Index>(gate_.size())),
                     detail::SwiGLUGradients<Scalar>{detail::device_data(d_product_), detail::device_data(gate_),
                                                     detail::device_data(up_), detail::device_data(d_gate_),
                                                     detail::device_data(d_up_)});
    gemm_.accumulate_grads(gate_proj, detail::device_data(d_gate_), input_);
    gemm_.accumulate_grads(up_proj, detail::device_data(d_up_), input_);
    // dx sums both branches: the gate's product, then the up branch's added to it.
    gemm_.input_grad(gate_proj, detail::device_data(d_gate_), detail::device_data(grad_input_));
    gemm_.input_grad(up_proj, detail::device_data(d_up_), detail::device_data(grad_input_), /*accumulate=*/true);
    return grad_input_;
  }

  /// The products' context: its policy (and, under nvcc, its stream) orders other work with the bank's.
  const GroupedGemm<Scalar>& gemm() const { return gemm_; }

 private:
  std::array<LinearStack<Scalar>, 3> stacks(std::span<const DeviceParameter<Scalar>> parameters) const {
    return detail::linear_stacks<3>("SwiGLUBank", parameters, bias_,
                                    {{{d_model_, hidden_}, {d_model_, hidden_}, {hidden_, out_features_}}});
  }

  GroupedGemm<Scalar> gemm_;
  const Scalar* input_ = nullptr;  // null for an empty block
  bool has_input_ = false;
  // gate_ holds gate_proj(x) before the SiLU; backward recomputes silu from it.
  thrust::device_vector<Scalar> gate_, up_, product_, output_, d_product_, d_gate_, d_up_, grad_input_;
};

/// The device bank that computes what ExpertBank<Expert> holds.
template <class Expert>
struct DeviceBankOf;
template <template <class> class Activation, class S>
struct DeviceBankOf<FeedForward<Activation, S>> {
  using type = FeedForwardBank<Activation, S>;
};
template <class S>
struct DeviceBankOf<SwiGLUFeedForward<S>> {
  using type = SwiGLUBank<S>;
};

}  // namespace moe::backends::device
