#pragma once
// The CPU backend (the default): experts spread over OpenMP threads, each expert's rows gathered and run on
// one thread, each token's K contributions combined in slot order. With fewer experts holding rows than
// split_below, experts that can split their products (FeedForward::split_products) run one after another
// instead, each product in chunks over the threads. The choice and the chunks depend on the routing and the
// widths, never on the thread count, so outputs and gradients have the same bits for any number of threads.

#include <exception>
#include <vector>

#include "backends/cpu/dispatch.hpp"
#include "moe/backend.hpp"
#include "moe/core/buffer.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe::backends {

/// What the user names: MoELayer<..., backends::Cpu>. It has no options; Runner is what the layer owns.
struct Cpu {
  template <class Bank>
  class Runner;
};

/// Runs any expert module: one call of its forward and backward per expert with rows, on that expert's
/// block. Experts with input_buffer(rows, cols)/forward_in_place() get their rows gathered straight into
/// their input cache; the others into a block the runner keeps.
template <class Bank>
class Cpu::Runner {
 public:
  using Scalar = typename Bank::Scalar;

  explicit Runner(const Cpu& /*options*/) {}

  MatrixX<Scalar>& forward(Bank& bank, ConstRef<Scalar> x, const Routing<Scalar>& routing, Capacity capacity) {
    cpu::plan(routing.experts, bank.size(), capacity, plan_);
    const auto experts = static_cast<std::size_t>(bank.size());
    inputs_.resize(experts);
    outputs_.resize(experts);
    input_grads_.resize(experts);
    d_model_ = x.cols();
    const Index width = bank.out_features();
    run_experts(bank, "forward", [&](Index e) {
      const auto i = static_cast<std::size_t>(e);
      auto& expert = bank.expert(e);
      if constexpr (requires {
                      expert.input_buffer(Index{}, Index{});
                      expert.forward_in_place();
                    }) {
        cpu::gather_expert<Scalar>(x, plan_, e, expert.input_buffer(plan_.count(e), x.cols()));
        outputs_[i] = block_of(expert.forward_in_place(), e, width, "output");
      } else {
        cpu::gather_expert<Scalar>(x, plan_, e, inputs_[i].resize(plan_.count(e), x.cols()));
        outputs_[i] = block_of(expert.forward(inputs_[i].view()), e, width, "output");
      }
    });
    cpu::combine(outputs_, routing.experts, routing.gates, plan_, width, output_);
    return output_;
  }

  /// Each expert's output gradient and its gates' gradients come from its output, so they are computed by
  /// the thread that runs the expert, before its backward overwrites what forward left (dropped slots
  /// keep 0).
  MatrixX<Scalar>& backward(Bank& bank, ConstRef<Scalar> dy, const Routing<Scalar>& routing) {
    d_gates_.setZero(routing.experts.rows(), routing.experts.cols());
    MatrixView<Scalar>& d_expert_out = d_expert_out_.resize(plan_.rows(), dy.cols());
    const Index width = bank.out_features();
    run_experts(bank, "backward", [&](Index e) {
      const auto i = static_cast<std::size_t>(e);
      const Index rows = plan_.count(e);
      cpu::expert_output_grads<Scalar>(
          dy, Eigen::Map<const MatrixX<Scalar>>(outputs_[i], rows, width), routing.gates, plan_, e, d_expert_out,
          d_gates_);
      input_grads_[i] =
          block_of(bank.expert(e).backward(d_expert_out.middleRows(plan_.offsets(e), rows)), e, d_model_, "input gradient");
    });
    cpu::scatter(input_grads_, routing.experts, plan_, d_model_, grad_input_);
    return grad_input_;
  }

  const MatrixX<Scalar>& d_gates() const { return d_gates_; }
  const IndexVector& routed() const { return plan_.routed; }
  Index dropped() const { return plan_.dropped; }
  const cpu::DispatchPlan& plan() const { return plan_; }

 private:
  /// Fewer experts with rows than this (C3 of the benchmarks: two experts with uneven loads on two threads),
  /// and experts that can split their products run one after another, each product split in chunks of
  /// split_features output features over the threads; else every expert runs whole on one thread.
  static constexpr Index split_below = 4;
  static constexpr Index split_features = 256;

  /// body(e) for every expert with rows; whatever an expert throws, on any thread, reaches the caller as a
  /// moe::Error that names the expert.
  template <class Body>
  void run_experts(Bank& bank, const char* pass, Body&& body) {
    auto checked = [&](Index e) {
      try {
        body(e);
      } catch (const std::exception& error) {
        detail::fail("MoELayer: expert ", e, " failed in ", pass, ": ", error.what());
      }
    };
    if constexpr (requires { bank.expert(0).split_products(Index{}); }) {
      const bool split = plan_.largest_first.size() < split_below;
      for (const Index e : plan_.largest_first) bank.expert(e).split_products(split ? split_features : 0);
      if (split) {
        for (const Index e : plan_.largest_first) checked(e);
        return;
      }
    }
    cpu::for_each_expert(plan_, checked);
  }

  /// Where expert e's result lies, checked to be its count(e) rows of `width`.
  template <class Result>
  const Scalar* block_of(const Result& result, Index e, Index width, const char* what) const {
    detail::require(result.rows() == plan_.count(e) && result.cols() == width, "MoELayer: expert ", e, " returned an ",
                    what, " of shape ", result.rows(), "x", result.cols(), ", expected ", plan_.count(e), "x", width);
    return result.data();
  }

  cpu::DispatchPlan plan_;
  Index d_model_ = 0;
  // output_, d_gates_ and grad_input_ have one row per token; the rows of d_expert_out_ (kept assignments)
  // and of inputs_ (each expert's) change with the routing, so their storage only grows.
  MatrixX<Scalar> output_, d_gates_, grad_input_;
  Buffer<Scalar> d_expert_out_;
  std::vector<Buffer<Scalar>> inputs_;  // rows of experts without an input_buffer()
  // The blocks each expert returned from the last forward and backward (valid until the expert's next
  // call); entries of experts without rows are stale and never read.
  cpu::ExpertBlocks<Scalar> outputs_, input_grads_;
};

}  // namespace moe::backends
