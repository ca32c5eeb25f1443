#pragma once
// The Thrust backend: the MoE layer's hot path on Thrust's device system (CUDA under nvcc with the target
// moe::cuda, OpenMP under a host compiler with moe::thrust). Dispatch with a stable sort by expert, gather,
// one grouped GEMM per stacked Linear of the experts (cuBLAS on CUDA, Eigen on the host), combine in slot
// order: no atomics, so results are identical run to run and do not depend on the number of threads. They
// agree with backends::Cpu to rounding (the GEMMs sum in another order), not bit for bit.
//
// It runs experts of the feed-forward kinds only (an ExpertBank that is `stacked`); other modules run on
// backends::Cpu. The layer's interface is host Eigen matrices, so each forward uploads x, the routing and
// the experts' weights, and downloads y; backward uploads dy and downloads dx, the gate gradients and the
// experts' parameter gradients (added to theirs). Everything between stays on the device.

#include "backends/thrust/config.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/fill.h>

#include "backends/thrust/dispatch.hpp"
#include "backends/thrust/feed_forward_bank.hpp"
#include "moe/backend.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/layer/expert_bank.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/routing.hpp"

namespace moe::backends {

/// What the user names: MoELayer<..., backends::Thrust>. It has no options; Runner is what the layer owns.
struct Thrust {
  template <class Bank>
  class Runner;
};

template <class Bank>
class Thrust::Runner {
  static_assert(Bank::stacked,
                "moe::backends::Thrust runs experts of the feed-forward kinds only (FeedForward<ReLU|GELU|SiLU>, "
                "SwiGLUFeedForward), whose weights an ExpertBank stacks; run other expert modules on "
                "moe::backends::Cpu");

 public:
  using Scalar = typename Bank::Scalar;
  using DeviceBank = typename device::DeviceBankOf<typename Bank::ExpertType>::type;

  explicit Runner(const Thrust& /*options*/) {}

  MatrixX<Scalar>& forward(Bank& bank, ConstRef<Scalar> x, const Routing<Scalar>& routing, Capacity capacity) {
    using device::detail::raw;
    if (!device_bank_) device_bank_.emplace(bank.size(), bank.d_model(), bank.options());
    upload_parameters(bank);
    const Index tokens = x.rows(), k = routing.experts.cols();
    d_model_ = x.cols();
    upload(x, x_);
    experts_.resize(static_cast<std::size_t>(tokens * k));
    if (tokens > 0) thrust::copy(routing.experts.data(), routing.experts.data() + tokens * k, experts_.begin());
    upload(routing.gates, gates_);

    device::plan(thrust::device, raw(experts_), tokens, k, bank.size(), capacity.limit, capacity.policy, plan_);
    rows_.resize(static_cast<std::size_t>(plan_.rows() * d_model_));
    device::gather(thrust::device, raw(x_), d_model_, plan_, raw(rows_));
    expert_output_ = &device_bank_->forward(plan_.host_offsets, raw(rows_), parameters_);
    const Index width = device_bank_->out_features();
    y_.resize(static_cast<std::size_t>(tokens * width));
    device::combine(thrust::device, raw(*expert_output_), raw(gates_), width, plan_, raw(y_));

    routed_.resize(bank.size());
    thrust::copy(plan_.routed.begin(), plan_.routed.end(), routed_.data());
    download(y_, tokens, width, output_);
    return output_;
  }

  MatrixX<Scalar>& backward(Bank& bank, ConstRef<Scalar> dy, const Routing<Scalar>& routing) {
    using device::detail::raw;
    moe::detail::require(expert_output_ != nullptr, "backends::Thrust: backward before forward");
    const Index tokens = dy.rows(), width = dy.cols(), k = routing.experts.cols();
    upload(dy, dy_);
    for (auto& grad : grads_) thrust::fill(grad.begin(), grad.end(), Scalar(0));
    d_rows_.resize(static_cast<std::size_t>(plan_.rows() * width));
    d_gates_device_.resize(static_cast<std::size_t>(tokens * k));
    device::expert_output_grads(thrust::device, raw(dy_), raw(*expert_output_), raw(gates_), width, plan_, raw(d_rows_),
                                raw(d_gates_device_));
    const thrust::device_vector<Scalar>& input_grads = device_bank_->backward(raw(d_rows_), parameters_);
    dx_.resize(static_cast<std::size_t>(tokens * d_model_));
    device::scatter(thrust::device, raw(input_grads), d_model_, plan_, raw(dx_));

    download(d_gates_device_, tokens, k, d_gates_);
    add_parameter_grads(bank);
    download(dx_, tokens, d_model_, grad_input_);
    return grad_input_;
  }

  const MatrixX<Scalar>& d_gates() const { return d_gates_; }
  const IndexVector& routed() const { return routed_; }
  Index dropped() const { return plan_.dropped; }

 private:
  static void upload(ConstRef<Scalar> host, thrust::device_vector<Scalar>& device) {
    device.resize(static_cast<std::size_t>(host.size()));
    if (host.size() == 0) return;  // Thrust dereferences the output of an empty copy
    if (host.outerStride() == host.cols()) {
      thrust::copy(host.data(), host.data() + host.size(), device.begin());
      return;
    }
    for (Index r = 0; r < host.rows(); ++r)
      thrust::copy(host.row(r).data(), host.row(r).data() + host.cols(), device.begin() + r * host.cols());
  }

  static void download(const thrust::device_vector<Scalar>& device, Index rows, Index cols, MatrixX<Scalar>& host) {
    host.resize(rows, cols);
    if (host.size() > 0) thrust::copy(device.begin(), device.begin() + host.size(), host.data());
  }

  /// The experts' weights into device stacks packed expert after expert (the host stacks may pad each
  /// expert's slice), and the device gradients sized alike.
  void upload_parameters(Bank& bank) {
    using device::detail::raw;
    auto& stacks = bank.stacks();
    values_.resize(stacks.size());
    grads_.resize(stacks.size());
    parameters_.resize(stacks.size());
    for (std::size_t i = 0; i < stacks.size(); ++i) {
      auto& stack = stacks[i];
      const Index size = stack.rows * stack.cols;
      values_[i].resize(static_cast<std::size_t>(bank.size() * size));
      grads_[i].resize(values_[i].size());
      if (stack.stride() == size) {
        thrust::copy(stack.value.data(), stack.value.data() + bank.size() * size, values_[i].begin());
      } else {
        for (Index e = 0; e < bank.size(); ++e)
          thrust::copy(stack.value_of(e), stack.value_of(e) + size, values_[i].begin() + e * size);
      }
      parameters_[i] = {raw(values_[i]), raw(grads_[i])};
    }
  }

  /// Adds what backward left in the device gradients to the experts' gradients on the host.
  void add_parameter_grads(Bank& bank) {
    auto& stacks = bank.stacks();
    for (std::size_t i = 0; i < stacks.size(); ++i) {
      auto& stack = stacks[i];
      const Index size = stack.rows * stack.cols;
      staging_.resize(static_cast<std::size_t>(bank.size() * size));
      thrust::copy(grads_[i].begin(), grads_[i].end(), staging_.begin());
      for (Index e = 0; e < bank.size(); ++e)
        Eigen::Map<RowVectorX<Scalar>>(stack.grad_of(e), size) +=
            Eigen::Map<const RowVectorX<Scalar>>(staging_.data() + e * size, size);
    }
  }

  std::optional<DeviceBank> device_bank_;
  const thrust::device_vector<Scalar>* expert_output_ = nullptr;  // the bank's, of the last forward
  std::vector<thrust::device_vector<Scalar>> values_, grads_;
  std::vector<device::DeviceParameter<Scalar>> parameters_;
  device::DevicePlan<Index> plan_;
  thrust::device_vector<Index> experts_;
  thrust::device_vector<Scalar> x_, gates_, rows_, y_, dy_, d_rows_, d_gates_device_, dx_;
  std::vector<Scalar> staging_;
  Index d_model_ = 0;
  IndexVector routed_;
  MatrixX<Scalar> output_, d_gates_, grad_input_;
};

}  // namespace moe::backends
