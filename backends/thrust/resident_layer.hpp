#pragma once
// A MoE layer resident on a Thrust device. `ResidentMoE<Layer> device(layer)` copies a host MoELayer's
// parameters and balancer state to the device; from then on forward, backward, the optimizer step
// (device::AdamW) and the aux-loss-free bias update run on the device, on device::Matrix inputs and outputs:
// no activation, gradient or parameter crosses to the host. What reaches the host during a step is the plan's
// N + 1 row offsets (they size the expert GEMMs) and, when asked for, the aux loss. `download(layer)` copies
// parameters, gradients and the balancer's bias back to the host layer (to save a checkpoint, evaluate or
// analyse it there); `upload(layer)` copies them to the device again (after loading a checkpoint).
//
// It computes what the host layer computes (moe/layer/moe_layer.hpp): the router's softmax or sigmoid scores
// (SoftmaxTopK, SigmoidTopK), top-K on score + selection bias, gates, the Switch and sequence-wise aux losses
// (Fedus et al. 2021; DeepSeek-AI 2024) with either LoadCount and LoadFraction and their gradients, the
// aux-loss-free bias (Wang et al. 2024), capacity drops in either DropPolicy, shared experts and feed-forward
// experts as grouped GEMMs. Not on the device, refused when it is built: SigmoidTopK's routed scaling factor
// and group-limited routing; it takes no token mask (MoELayer::forward(x, padding) is host-only). Every output element is written by
// one thread summing in a fixed order (no atomics): identical run to run and for any number of threads. It
// agrees with the host layer to rounding, not bit for bit (the GEMMs sum in another order).

#include "backends/thrust/config.hpp"

#include <array>
#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <cuda/std/cmath>
#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform.h>
#include <thrust/transform_reduce.h>

#include "backends/thrust/dispatch.hpp"
#include "backends/thrust/feed_forward_bank.hpp"
#include "backends/thrust/grouped_gemm.hpp"
#include "backends/thrust/tensor.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"

namespace moe::backends::device {

/// What a host balancer asks of the device: its aux losses (alpha N sum_i f_i P_i over sequences of
/// `sequence_length` rows, 0 meaning the whole batch, with f_i as LoadCount and LoadFraction say) and whether it
/// biases the selection (aux-loss-free).
struct Balancing {
  struct AuxLoss {
    double alpha = 0;
    Index sequence_length = 0;
    LoadCount count = LoadCount::dispatched;
    LoadFraction fraction = LoadFraction::of_assignments;
  };
  std::vector<AuxLoss> aux_losses;
  bool selection_bias = false;
  double gamma = 0;
  bool zero_mean = false;
};

/// How the balancer B runs on the device; `supported` is false for the others (the router z-loss, entropy).
template <class B>
struct BalancerOnDevice {
  static constexpr bool supported = false;
};
template <class S>
struct BalancerOnDevice<NoBalancing<S>> {
  static constexpr bool supported = true;
  static void describe(const typename NoBalancing<S>::Options& /*options*/, Balancing& /*balancing*/) {}
};
template <class S>
struct BalancerOnDevice<SwitchAuxLoss<S>> {
  static constexpr bool supported = true;
  static void describe(const typename SwitchAuxLoss<S>::Options& options, Balancing& balancing) {
    balancing.aux_losses.push_back({options.alpha, 0, options.count, options.fraction});
  }
};
template <class S>
struct BalancerOnDevice<SequenceAuxLoss<S>> {
  static constexpr bool supported = true;
  static void describe(const typename SequenceAuxLoss<S>::Options& options, Balancing& balancing) {
    moe::detail::require(options.sequence_length > 0, "SequenceAuxLoss: sequence_length must be positive, got ",
                         options.sequence_length);
    balancing.aux_losses.push_back(
        {options.alpha, options.sequence_length, options.count, LoadFraction::of_assignments});
  }
};
template <class S>
struct BalancerOnDevice<AuxLossFree<S>> {
  static constexpr bool supported = true;
  static void describe(const typename AuxLossFree<S>::Options& options, Balancing& balancing) {
    balancing.selection_bias = true;
    balancing.gamma = options.gamma;
    balancing.zero_mean = options.zero_mean;
  }
};
template <class S, template <class> class... Members>
struct BalancerOnDevice<Combine<S, Members...>> {
  static constexpr bool supported = (BalancerOnDevice<Members<S>>::supported && ...);
  static void describe(const typename Combine<S, Members...>::Options& options, Balancing& balancing) {
    describe_members(options, balancing, std::index_sequence_for<Members<S>...>{});
  }

 private:
  template <std::size_t... I>
  static void describe_members(const typename Combine<S, Members...>::Options& options, Balancing& balancing,
                               std::index_sequence<I...>) {
    (BalancerOnDevice<Members<S>>::describe(std::get<I>(options), balancing), ...);
  }
};

/// The routers whose scores the device computes.
enum class RouterScores { unsupported, softmax, sigmoid };
template <class R>
inline constexpr RouterScores router_scores = RouterScores::unsupported;
template <class S>
inline constexpr RouterScores router_scores<SoftmaxTopK<S>> = RouterScores::softmax;
template <class S>
inline constexpr RouterScores router_scores<SigmoidTopK<S>> = RouterScores::sigmoid;

namespace detail {

/// scores[t] = softmax(logits[t]), as moe::detail::softmax_rows: exp(l - max) over the sum.
template <class Scalar>
struct SoftmaxRow {
  const Scalar* logits;
  Scalar* scores;
  Index n;
  MOE_HOST_DEVICE void operator()(Index t) const {
    const Scalar* l = logits + t * n;
    Scalar* s = scores + t * n;
    Scalar max = l[0];
    for (Index e = 1; e < n; ++e) max = l[e] > max ? l[e] : max;
    Scalar sum = 0;
    for (Index e = 0; e < n; ++e) {
      s[e] = cuda::std::exp(l[e] - max);
      sum += s[e];
    }
    for (Index e = 0; e < n; ++e) s[e] /= sum;
  }
};

/// d logits[t] = p[t] .* (d p[t] - <d p[t], p[t]>).
template <class Scalar>
struct SoftmaxRowBackward {
  const Scalar* probabilities;
  const Scalar* d_probabilities;
  Scalar* d_logits;
  Index n;
  MOE_HOST_DEVICE void operator()(Index t) const {
    const Scalar* p = probabilities + t * n;
    const Scalar* dp = d_probabilities + t * n;
    Scalar dot = 0;
    for (Index e = 0; e < n; ++e) dot += dp[e] * p[e];
    for (Index e = 0; e < n; ++e) d_logits[t * n + e] = p[e] * (dp[e] - dot);
  }
};

template <class Scalar>
struct Sigmoid {
  MOE_HOST_DEVICE Scalar operator()(Scalar logit) const { return Scalar(1) / (cuda::std::exp(-logit) + Scalar(1)); }
};

/// d logit = d s . s (1 - s).
template <class Scalar>
struct SigmoidBackward {
  MOE_HOST_DEVICE Scalar operator()(Scalar d_score, Scalar score) const {
    return d_score * score * (Scalar(1) - score);
  }
};

/// Row t of d scores from d gates, as moe::gates_backward, over a zeroed row.
template <class Scalar>
struct GatesBackwardRow {
  const Scalar* scores;
  const Index* experts;
  const Scalar* gates;
  const Scalar* d_gates;
  Index n, k;
  bool renormalize;
  Scalar* d_scores;
  MOE_HOST_DEVICE void operator()(Index t) const {
    Scalar* row = d_scores + t * n;
    for (Index e = 0; e < n; ++e) row[e] = Scalar(0);
    const Index* chosen = experts + t * k;
    const Scalar* dg = d_gates + t * k;
    if (!renormalize) {
      for (Index j = 0; j < k; ++j) row[chosen[j]] += dg[j];
      return;
    }
    Scalar sum = 0, dot = 0;
    for (Index j = 0; j < k; ++j) sum += scores[t * n + chosen[j]];
    for (Index j = 0; j < k; ++j) dot += dg[j] * gates[t * k + j];
    for (Index j = 0; j < k; ++j) row[chosen[j]] += (dg[j] - dot) / sum;
  }
};

/// p[t] = s[t] / sum_e s[t, e] and that sum, as moe::detail::NormalizedScores.
template <class Scalar>
struct NormalizeRow {
  const Scalar* scores;
  Index n;
  Scalar* normalized;
  Scalar* sums;
  MOE_HOST_DEVICE void operator()(Index t) const {
    Scalar sum = 0;
    for (Index e = 0; e < n; ++e) sum += scores[t * n + e];
    sums[t] = sum;
    const Scalar inverse = Scalar(1) / sum;
    for (Index e = 0; e < n; ++e) normalized[t * n + e] = inverse * scores[t * n + e];
  }
};

/// w[s, e] = count[s, e] * factor: the balance loss's weight of p[t, e] for the tokens t of sequence s.
template <class Scalar>
struct BalanceWeight {
  Scalar factor;
  MOE_HOST_DEVICE Scalar operator()(Index count) const { return static_cast<Scalar>(count) * factor; }
};

/// terms[t] = <w[s(t)], p[t]>: token t's share of the balance loss.
template <class Scalar>
struct BalanceTerm {
  const Scalar* weights;
  const Scalar* normalized;
  Index n, sequence_length;
  MOE_HOST_DEVICE Scalar operator()(Index t) const {
    const Scalar* w = weights + t / sequence_length * n;
    Scalar dot = 0;
    for (Index e = 0; e < n; ++e) dot += w[e] * normalized[t * n + e];
    return dot;
  }
};

/// d s[t] += (w[s(t)] - <w[s(t)], p[t]>) / sum_e s[t, e]: the balance loss through the normalisation.
template <class Scalar>
struct BalanceBackwardRow {
  const Scalar* weights;
  const Scalar* normalized;
  const Scalar* sums;
  Index n, sequence_length;
  Scalar* d_scores;
  MOE_HOST_DEVICE void operator()(Index t) const {
    const Scalar* w = weights + t / sequence_length * n;
    Scalar dot = 0;
    for (Index e = 0; e < n; ++e) dot += w[e] * normalized[t * n + e];
    for (Index e = 0; e < n; ++e) d_scores[t * n + e] += (w[e] - dot) / sums[t];
  }
};

/// *out = the sum of values[0 .. count) in order, by one thread: a scalar that does not depend on threads.
template <class Scalar>
struct SumInOrder {
  const Scalar* values;
  Index count;
  Scalar* out;
  MOE_HOST_DEVICE void operator()(Index /*unused*/) const {
    Scalar sum = 0;
    for (Index i = 0; i < count; ++i) sum += values[i];
    *out = sum;
  }
};

/// y[i] += blocks[b * size + i] for b = 0, 1, ..., in order: the shared experts' outputs (or input
/// gradients) added one expert after the other, as the host layer adds them.
template <class Scalar>
struct AddBlocks {
  const Scalar* blocks;
  Index count, size;
  Scalar* y;
  MOE_HOST_DEVICE void operator()(Index i) const {
    Scalar sum = y[i];
    for (Index b = 0; b < count; ++b) sum += blocks[b * size + i];
    y[i] = sum;
  }
};

/// b_e += gamma sign(mean load - load_e), then b -= mean(b) with zero_mean; load zeroed: AuxLossFree::update.
template <class Scalar>
struct UpdateSelectionBias {
  Index* load;
  Scalar* bias;
  Index n;
  double gamma;
  bool zero_mean;
  MOE_HOST_DEVICE void operator()(Index /*unused*/) const {
    double total = 0;
    for (Index e = 0; e < n; ++e) total += static_cast<double>(load[e]);
    const double mean = total / static_cast<double>(n);
    for (Index e = 0; e < n; ++e) {
      const double error = mean - static_cast<double>(load[e]);
      bias[e] += static_cast<Scalar>(gamma * static_cast<double>((error > 0) - (error < 0)));
      load[e] = 0;
    }
    if (!zero_mean) return;
    Scalar sum = 0;
    for (Index e = 0; e < n; ++e) sum += bias[e];
    const Scalar bias_mean = sum / static_cast<Scalar>(n);
    for (Index e = 0; e < n; ++e) bias[e] -= bias_mean;
  }
};

/// The squared errors of row r, summed in column order; writes the row's gradient 2 (y - target) / count.
template <class Scalar>
struct SquaredErrorRow {
  const Scalar* y;
  const Scalar* target;
  Index cols;
  Scalar count;
  Scalar* grad;
  MOE_HOST_DEVICE Scalar operator()(Index r) const {
    Scalar sum = 0;
    for (Index c = r * cols; c < (r + 1) * cols; ++c) {
      const Scalar error = y[c] - target[c];
      sum += error * error;
      grad[c] = Scalar(2) * error / count;
    }
    return sum;
  }
};

template <class Scalar>
struct IsFinite {
  MOE_HOST_DEVICE bool operator()(Scalar value) const { return cuda::std::isfinite(value); }
};

template <class Scalar>
bool all_finite(const thrust::device_vector<Scalar>& values) {
  return thrust::transform_reduce(thrust::device, values.begin(), values.end(), IsFinite<Scalar>{}, true,
                                  thrust::logical_and<bool>());
}

}  // namespace detail

template <class Layer>
class ResidentMoE;

/// The host layer MoELayer<Expert, Router, K, Balancer, Backend> on the device (any Backend: the host layer
/// only hands over its parameters and state).
template <class Expert, template <class> class RouterT, int K, template <class> class BalancerT, class Backend>
class ResidentMoE<MoELayer<Expert, RouterT, K, BalancerT, Backend>> {
 public:
  using HostLayer = MoELayer<Expert, RouterT, K, BalancerT, Backend>;
  using Scalar = typename Expert::Scalar;

 private:
  static_assert(ExpertBank<Expert>::stacked,
                "moe::backends::device::ResidentMoE runs experts of the feed-forward kinds only "
                "(FeedForward<ReLU|GELU|SiLU>, SwiGLUFeedForward); run other expert modules on the host layer");
  static_assert(!ExpertChoiceRouter<RouterT<Scalar>>,
                "moe::backends::device::ResidentMoE does not run expert-choice routing (moe::ExpertChoice): its "
                "selection (each expert's top-C tokens) is not on the device; run the host layer with "
                "moe::backends::Thrust, which takes it");
  static_assert(ExpertChoiceRouter<RouterT<Scalar>> || router_scores<RouterT<Scalar>> != RouterScores::unsupported,
                "moe::backends::device::ResidentMoE computes the scores of SoftmaxTopK and SigmoidTopK only; run "
                "other routers on the host layer");
  static_assert(BalancerOnDevice<BalancerT<Scalar>>::supported,
                "moe::backends::device::ResidentMoE balances with NoBalancing, SwitchAuxLoss, SequenceAuxLoss, "
                "AuxLossFree and Combine of them only; run other balancers on the host layer");
  using Bank = typename DeviceBankOf<Expert>::type;
  static constexpr RouterScores scores_kind = router_scores<RouterT<Scalar>>;

  /// A device tensor under its host name; an expert stack holds all N experts' tensors, packed.
  struct Stored {
    std::string name;
    thrust::device_vector<Scalar> value, grad;
  };

 public:
  /// Copies the host layer's parameters (with their gradients) and balancer state to the device.
  explicit ResidentMoE(HostLayer& host)
      : options_(host.options()),
        width_(host.out_features()),
        renormalize_(host.router().renormalize()),
        bank_(options_.num_experts, options_.d_model, options_.expert) {
    BalancerOnDevice<BalancerT<Scalar>>::describe(options_.balancer, balancing_);
    moe::detail::require(routed_scaling_factor(host.router()) == 1.0,
                         "ResidentMoE: the router's routed_scaling_factor is ", routed_scaling_factor(host.router()),
                         "; the device computes gates without it (1): run this router on the host layer (any "
                         "backend)");
    moe::detail::require(host.router().options().n_group == 1, "ResidentMoE: the router has n_group ",
                         host.router().options().n_group, "; the device has no group-limited routing: run it on the "
                         "host layer (any backend)");
    moe::detail::require(!options_.shared_expert_gate, "ResidentMoE: the layer's shared experts are gated "
                         "(Options::shared_expert_gate, Qwen2-MoE); the device has no shared-expert gate: run it on "
                         "the host layer (any backend)");
    for (const auto& p : host.router().named_parameters()) router_.push_back({"router." + p.name, {}, {}});
    for (const auto& stack : host.experts().stacks()) experts_.push_back({"experts." + stack.name, {}, {}});
    if (options_.num_shared_experts > 0) {
      shared_bank_.emplace(options_.num_shared_experts, options_.d_model, options_.shared_expert);
      for (const auto& p : host.shared_expert(0).named_parameters())
        shared_.push_back({"shared_experts." + p.name, {}, {}});
    }
    transfer(host, Direction::to_device);
    for (auto& stored : experts_) expert_parameters_.push_back({detail::raw(stored.value), detail::raw(stored.grad)});
    for (auto& stored : shared_) shared_parameters_.push_back({detail::raw(stored.value), detail::raw(stored.grad)});
    step_load_.assign(static_cast<std::size_t>(options_.num_experts), Index(0));
    aux_values_.assign(balancing_.aux_losses.size(), Scalar(0));
    aux_weights_.resize(balancing_.aux_losses.size());
    aux_counts_.resize(balancing_.aux_losses.size());
  }

  /// Copies the host layer's parameters, gradients and balancer state to the device again (after loading a
  /// checkpoint into it). The host layer must have this layer's configuration.
  void upload(HostLayer& host) { transfer(host, Direction::to_device); }

  /// Copies parameters, gradients and the balancer's selection bias to the host layer.
  void download(HostLayer& host) { transfer(host, Direction::to_host); }

  /// y [T x out] for x [T x d_model]. x is kept, not copied, for backward: it must not change until then.
  const Matrix<Scalar>& forward(const Matrix<Scalar>& x) {
    moe::detail::require(x.cols() == options_.d_model, "ResidentMoE: input has ", x.cols(), " columns, d_model is ",
                         options_.d_model);
    const Index tokens = x.rows(), n = options_.num_experts, k = options_.k, d = options_.d_model;
    input_ = &x;

    logits_.resize(tokens, n);
    scores_.resize(tokens, n);
    router_gemm_.set_rows(std::array<Index, 2>{0, tokens});
    router_gemm_.forward(router_stack(), x.data(), logits_.data());
    if constexpr (scores_kind == RouterScores::softmax) {
      thrust::for_each(thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(tokens),
                       detail::SoftmaxRow<Scalar>{logits_.data(), scores_.data(), n});
    } else {
      thrust::transform(thrust::device, logits_.values().begin(), logits_.values().end(), scores_.values().begin(),
                        detail::Sigmoid<Scalar>{});
    }
    experts_ids_.resize(static_cast<std::size_t>(tokens * k));
    gates_.resize(tokens, k);
    select_top_k(thrust::device, scores_.data(), balancing_.selection_bias ? detail::raw(selection_bias_) : nullptr,
                 tokens, n, k, renormalize_, detail::raw(experts_ids_), gates_.data());
    balance_forward(tokens);

    plan(thrust::device, detail::raw(experts_ids_), tokens, k, n,
         expert_capacity(options_.capacity_factor, tokens, k, n), options_.drop_policy, plan_);
    if (training_)
      thrust::transform(thrust::device, step_load_.begin(), step_load_.end(), plan_.routed.begin(), step_load_.begin(),
                        thrust::plus<Index>());
    rows_.resize(static_cast<std::size_t>(plan_.rows() * d));
    gather(thrust::device, x.data(), d, plan_, detail::raw(rows_));
    expert_output_ = &bank_.forward(plan_.host_offsets, detail::raw(rows_), expert_parameters_);
    output_.resize(tokens, width_);
    combine(thrust::device, detail::raw(*expert_output_), gates_.data(), width_, plan_, output_.data());

    if (shared_bank_) {
      shared_rows_.resize(static_cast<std::size_t>(options_.num_shared_experts * tokens * d));
      for (Index s = 0; s < options_.num_shared_experts; ++s)
        thrust::copy(thrust::device, x.values().begin(), x.values().end(), shared_rows_.begin() + s * tokens * d);
      const auto& shared_output =
          shared_bank_->forward(shared_offsets(tokens), detail::raw(shared_rows_), shared_parameters_);
      add_blocks(shared_output, output_);
    }

    if (options_.check_finite) {
      moe::detail::require(detail::all_finite(output_.values()), "ResidentMoE: output is not finite");
      const Scalar aux = aux_loss();
      moe::detail::require(std::isfinite(static_cast<double>(aux)), "ResidentMoE: aux loss is not finite (", aux, ")");
    }
    return output_;
  }

  /// dx [T x d_model] for dy = d loss / d output; adds the gradients of the experts, the router and the aux loss.
  const Matrix<Scalar>& backward(const Matrix<Scalar>& dy) {
    moe::detail::require(input_ != nullptr, "ResidentMoE: backward before forward");
    const Index tokens = input_->rows(), n = options_.num_experts, k = options_.k, d = options_.d_model;
    moe::detail::require(dy.rows() == tokens && dy.cols() == width_, "ResidentMoE: gradient has shape ", dy.rows(), "x",
                         dy.cols(), ", expected ", tokens, "x", width_);
    d_rows_.resize(static_cast<std::size_t>(plan_.rows() * width_));
    d_gates_.resize(static_cast<std::size_t>(tokens * k));
    expert_output_grads(thrust::device, dy.data(), detail::raw(*expert_output_), gates_.data(), width_, plan_,
                        detail::raw(d_rows_), detail::raw(d_gates_));
    const auto& input_grads = bank_.backward(detail::raw(d_rows_), expert_parameters_);
    grad_input_.resize(tokens, d);
    scatter(thrust::device, detail::raw(input_grads), d, plan_, grad_input_.data());

    d_scores_.resize(tokens, n);
    thrust::for_each(thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(tokens),
                     detail::GatesBackwardRow<Scalar>{scores_.data(), detail::raw(experts_ids_), gates_.data(),
                                                      detail::raw(d_gates_), n, k, renormalize_, d_scores_.data()});
    balance_backward(tokens);
    d_logits_.resize(tokens, n);
    if constexpr (scores_kind == RouterScores::softmax) {
      thrust::for_each(thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(tokens),
                       detail::SoftmaxRowBackward<Scalar>{scores_.data(), d_scores_.data(), d_logits_.data(), n});
    } else {
      thrust::transform(thrust::device, d_scores_.values().begin(), d_scores_.values().end(), scores_.values().begin(),
                        d_logits_.values().begin(), detail::SigmoidBackward<Scalar>{});
    }
    router_gemm_.accumulate_grads(router_stack(), d_logits_.data(), input_->data());
    router_gemm_.input_grad(router_stack(), d_logits_.data(), grad_input_.data(), /*accumulate=*/true);

    if (shared_bank_) {
      shared_d_rows_.resize(static_cast<std::size_t>(options_.num_shared_experts * tokens * width_));
      for (Index s = 0; s < options_.num_shared_experts; ++s)
        thrust::copy(thrust::device, dy.values().begin(), dy.values().end(),
                     shared_d_rows_.begin() + s * tokens * width_);
      add_blocks(shared_bank_->backward(detail::raw(shared_d_rows_), shared_parameters_), grad_input_);
    }
    return grad_input_;
  }

  /// The aux loss of the last forward (a few scalars copied from the device): add it to the task loss.
  Scalar aux_loss() const {
    std::vector<Scalar> values(aux_values_.size());
    if (!values.empty()) thrust::copy(aux_values_.begin(), aux_values_.end(), values.begin());
    Scalar sum = 0;
    for (Scalar v : values) sum += v;
    return sum;
  }

  /// Call after each optimizer step: the aux-loss-free bias update from the load of the training-mode
  /// forwards since the last call, on the device.
  void update_balancing() {
    if (balancing_.selection_bias)
      thrust::for_each(
          thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(1),
          detail::UpdateSelectionBias<Scalar>{detail::raw(step_load_), detail::raw(selection_bias_),
                                              options_.num_experts, balancing_.gamma, balancing_.zero_mean});
    else
      thrust::fill(thrust::device, step_load_.begin(), step_load_.end(), Index(0));
  }

  /// Every trainable tensor, for a device optimizer: the router's, each stacked expert parameter (all N
  /// experts), each stacked shared-expert parameter.
  std::vector<Tensor<Scalar>> parameters() {
    std::vector<Tensor<Scalar>> list;
    for (auto* group : {&router_, &experts_, &shared_})
      for (auto& stored : *group)
        list.push_back({stored.name, detail::raw(stored.value), detail::raw(stored.grad),
                        static_cast<Index>(stored.value.size())});
    return list;
  }

  void zero_grad() {
    for (auto* group : {&router_, &experts_, &shared_})
      for (auto& stored : *group) thrust::fill(thrust::device, stored.grad.begin(), stored.grad.end(), Scalar(0));
  }

  void train(bool on = true) { training_ = on; }
  void eval() { training_ = false; }
  bool training() const { return training_; }

  Index d_model() const { return options_.d_model; }
  Index num_experts() const { return options_.num_experts; }
  Index k() const { return options_.k; }
  Index out_features() const { return width_; }

  /// The experts [T x K] each token of the last forward went to, best first (copied to the host).
  IndexMatrix routed_experts() const {
    IndexMatrix experts(plan_.tokens, options_.k);
    if (experts.size() > 0) thrust::copy(experts_ids_.begin(), experts_ids_.end(), experts.data());
    return experts;
  }
  /// Assignments per expert in the last forward, before capacity drops (copied to the host).
  IndexVector batch_load() const {
    IndexVector load(options_.num_experts);
    thrust::copy(plan_.routed.begin(), plan_.routed.end(), load.data());
    return load;
  }
  Index dropped() const { return plan_.dropped; }

 private:
  enum class Direction { to_device, to_host };

  /// Copies `size` values between host memory and device memory at `offset`, in `direction`; the device
  /// vector takes the size on its first upload.
  static void copy(Scalar* host, thrust::device_vector<Scalar>& device, Index offset, Index size, Direction direction) {
    if (size == 0) return;
    if (direction == Direction::to_device) {
      thrust::copy(host, host + size, device.begin() + offset);
    } else {
      thrust::copy(device.begin() + offset, device.begin() + offset + size, host);
    }
  }

  /// Checks the host layer's configuration against this one's, then copies every parameter, its gradient and
  /// the balancer's bias one way. The device vectors keep their addresses (an optimizer holds them).
  void transfer(HostLayer& host, Direction direction) {
    const auto& o = host.options();
    moe::detail::require(o.d_model == options_.d_model && o.num_experts == options_.num_experts && o.k == options_.k &&
                             o.num_shared_experts == options_.num_shared_experts && host.out_features() == width_,
                         "ResidentMoE: the host layer has d_model ", o.d_model, ", ", o.num_experts, " experts, k ",
                         o.k, ", ", o.num_shared_experts, " shared experts and ", host.out_features(),
                         " outputs; the device layer ", options_.d_model, ", ", options_.num_experts, ", ", options_.k,
                         ", ", options_.num_shared_experts, " and ", width_);
    const auto sized = [&](thrust::device_vector<Scalar>& device, Index size) {
      if (device.empty()) device.resize(static_cast<std::size_t>(size));
      moe::detail::require(static_cast<Index>(device.size()) == size, "ResidentMoE: a host tensor has ", size,
                           " values, its device copy ", device.size());
    };
    const auto transfer_tensor = [&](Stored& stored, Scalar* value, Scalar* grad, Index offset, Index size,
                                     Index total) {
      sized(stored.value, total);
      sized(stored.grad, total);
      copy(value, stored.value, offset, size, direction);
      copy(grad, stored.grad, offset, size, direction);
    };

    auto router = host.router().named_parameters();
    for (std::size_t i = 0; i < router_.size(); ++i) {
      auto& p = *router[i].parameter;
      transfer_tensor(router_[i], p.value.data(), p.grad.data(), 0, p.value.size(), p.value.size());
    }
    auto& stacks = host.experts().stacks();
    for (std::size_t i = 0; i < experts_.size(); ++i) {
      auto& stack = stacks[i];
      const Index size = stack.rows * stack.cols;
      for (Index e = 0; e < options_.num_experts; ++e)
        transfer_tensor(experts_[i], stack.value_of(e), stack.grad_of(e), e * size, size, options_.num_experts * size);
    }
    for (Index s = 0; s < options_.num_shared_experts; ++s) {
      auto shared = host.shared_expert(s).named_parameters();
      for (std::size_t i = 0; i < shared_.size(); ++i) {
        auto& p = *shared[i].parameter;
        transfer_tensor(shared_[i], p.value.data(), p.grad.data(), s * p.value.size(), p.value.size(),
                        options_.num_shared_experts * p.value.size());
      }
    }
    if (balancing_.selection_bias) {
      MatrixX<Scalar>* bias = nullptr;
      for (auto& buffer : host.named_buffers())
        if (buffer.name == "balancer.expert_bias") bias = buffer.value;
      moe::detail::require(bias != nullptr, "ResidentMoE: the host layer's balancer has no expert_bias buffer");
      sized(selection_bias_, bias->size());
      copy(bias->data(), selection_bias_, 0, bias->size(), direction);
    }
  }

  LinearStack<Scalar> router_stack() {
    const bool bias = router_.size() == 2;
    return {options_.d_model,
            options_.num_experts,
            detail::raw(router_[0].value),
            bias ? detail::raw(router_[1].value) : nullptr,
            detail::raw(router_[0].grad),
            bias ? detail::raw(router_[1].grad) : nullptr};
  }

  /// Shared expert s takes all T rows, as the s-th block of the replicated input.
  const std::vector<Index>& shared_offsets(Index tokens) {
    shared_offsets_.resize(static_cast<std::size_t>(options_.num_shared_experts + 1));
    for (std::size_t s = 0; s < shared_offsets_.size(); ++s) shared_offsets_[s] = static_cast<Index>(s) * tokens;
    return shared_offsets_;
  }

  void add_blocks(const thrust::device_vector<Scalar>& blocks, Matrix<Scalar>& y) {
    thrust::for_each(thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(y.size()),
                     detail::AddBlocks<Scalar>{detail::raw(blocks), options_.num_shared_experts, y.size(), y.data()});
  }

  /// Each aux loss alpha N sum_i f_i P_i over its sequences: weights w = alpha N c / (K L^2 S) (c / (L^2 S) with
  /// LoadFraction::of_tokens) from the counts c [S x N], token terms <w_s(t), p_t>, summed in token order into
  /// aux_values_. LoadCount::score_top_k counts the top-K of the scores without the selection bias; without a
  /// bias that is the selection itself.
  void balance_forward(Index tokens) {
    if (balancing_.aux_losses.empty()) return;
    const Index n = options_.num_experts, k = options_.k;
    normalized_.resize(tokens, n);
    score_sums_.resize(static_cast<std::size_t>(tokens));
    thrust::for_each(thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(tokens),
                     detail::NormalizeRow<Scalar>{scores_.data(), n, normalized_.data(), detail::raw(score_sums_)});
    aux_terms_.resize(static_cast<std::size_t>(tokens));
    for (std::size_t i = 0; i < balancing_.aux_losses.size(); ++i) {
      const Index length = sequence_length(i, tokens);
      const Index sequences = tokens / length;
      const auto& aux = balancing_.aux_losses[i];
      const Index* counted = detail::raw(experts_ids_);
      if (aux.count == LoadCount::score_top_k && balancing_.selection_bias) {
        score_top_k_ids_.resize(static_cast<std::size_t>(tokens * k));
        score_top_k_gates_.resize(tokens, k);
        select_top_k(thrust::device, scores_.data(), static_cast<const Scalar*>(nullptr), tokens, n, k, renormalize_,
                     detail::raw(score_top_k_ids_), score_top_k_gates_.data());
        counted = detail::raw(score_top_k_ids_);
      }
      aux_counts_[i].resize(static_cast<std::size_t>(sequences * n));
      expert_counts(thrust::device, counted, tokens, k, n, length, detail::raw(aux_counts_[i]));
      const double l = static_cast<double>(length);
      const double per_row = aux.fraction == LoadFraction::of_assignments ? static_cast<double>(k) : 1.0;
      const auto factor = static_cast<Scalar>(aux.alpha * static_cast<double>(n) /
                                              (per_row * l * l * static_cast<double>(sequences)));
      aux_weights_[i].resize(aux_counts_[i].size());
      thrust::transform(thrust::device, aux_counts_[i].begin(), aux_counts_[i].end(), aux_weights_[i].begin(),
                        detail::BalanceWeight<Scalar>{factor});
      thrust::transform(thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(tokens),
                        aux_terms_.begin(),
                        detail::BalanceTerm<Scalar>{detail::raw(aux_weights_[i]), normalized_.data(), n, length});
      thrust::for_each(thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(1),
                       detail::SumInOrder<Scalar>{detail::raw(aux_terms_), tokens, detail::raw(aux_values_) + i});
    }
  }

  void balance_backward(Index tokens) {
    for (std::size_t i = 0; i < balancing_.aux_losses.size(); ++i)
      thrust::for_each(
          thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(tokens),
          detail::BalanceBackwardRow<Scalar>{detail::raw(aux_weights_[i]), normalized_.data(), detail::raw(score_sums_),
                                             options_.num_experts, sequence_length(i, tokens), d_scores_.data()});
  }

  Index sequence_length(std::size_t aux_loss, Index tokens) const {
    const Index length = balancing_.aux_losses[aux_loss].sequence_length;
    if (length == 0) return tokens;
    moe::detail::require(tokens % length == 0, "SequenceAuxLoss: the batch has ", tokens,
                         " rows, expected a multiple of sequence_length ", length);
    return length;
  }

  typename HostLayer::Options options_;
  Index width_;
  bool renormalize_;
  Balancing balancing_;
  bool training_ = true;

  std::vector<Stored> router_, experts_, shared_;
  std::vector<DeviceParameter<Scalar>> expert_parameters_, shared_parameters_;
  thrust::device_vector<Scalar> selection_bias_;
  thrust::device_vector<Index> step_load_;

  GroupedGemm<Scalar> router_gemm_;
  Bank bank_;
  std::optional<Bank> shared_bank_;
  std::vector<Index> shared_offsets_;
  DevicePlan<Index> plan_;

  const Matrix<Scalar>* input_ = nullptr;
  const thrust::device_vector<Scalar>* expert_output_ = nullptr;
  Matrix<Scalar> logits_, scores_, gates_, output_, grad_input_, d_scores_, d_logits_, normalized_,
      score_top_k_gates_;
  thrust::device_vector<Index> experts_ids_, score_top_k_ids_;
  thrust::device_vector<Scalar> rows_, shared_rows_, d_rows_, d_gates_, shared_d_rows_, score_sums_, aux_terms_,
      aux_values_;
  std::vector<thrust::device_vector<Index>> aux_counts_;
  std::vector<thrust::device_vector<Scalar>> aux_weights_;
};

/// Mean squared error over all elements (PyTorch's nn.MSELoss) on the device: the loss (one scalar copied to
/// the host) and its gradient 2 (y - target) / count, summed row by row in a fixed order.
template <class ScalarT = float>
class MSELoss {
 public:
  using Scalar = ScalarT;

  Scalar forward(const Matrix<Scalar>& y, const Matrix<Scalar>& target) {
    moe::detail::require(y.rows() == target.rows() && y.cols() == target.cols(), "device::MSELoss: output has shape ",
                         y.rows(), "x", y.cols(), ", target ", target.rows(), "x", target.cols());
    const Index count = y.size();
    grad_.resize(y.rows(), y.cols());
    row_sums_.resize(static_cast<std::size_t>(y.rows()));
    thrust::transform(
        thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(y.rows()),
        row_sums_.begin(),
        detail::SquaredErrorRow<Scalar>{y.data(), target.data(), y.cols(), static_cast<Scalar>(count), grad_.data()});
    total_.resize(1);
    thrust::for_each(thrust::device, thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(1),
                     detail::SumInOrder<Scalar>{thrust::raw_pointer_cast(row_sums_.data()), y.rows(),
                                                thrust::raw_pointer_cast(total_.data())});
    const Scalar sum = total_[0];
    return sum / static_cast<Scalar>(count);
  }

  /// d loss / d y of the last forward.
  const Matrix<Scalar>& backward() const { return grad_; }

 private:
  Matrix<Scalar> grad_;
  thrust::device_vector<Scalar> row_sums_, total_;
};

}  // namespace moe::backends::device
