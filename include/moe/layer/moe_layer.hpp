#pragma once
// MoELayer<Expert, Router, K, Balancer, Backend>: routes each row of x to K of N experts and mixes their
// outputs with the router's gates (Shazeer et al. 2017), with optional always-on shared experts
// (DeepSeekMoE, Dai et al. 2024), each optionally scaled per token by a sigmoid gate (Qwen Team 2024,
// "Qwen1.5-MoE: Matching 7B Model Performance with 1/3 Activated Parameters"; transformers' Qwen2MoeSparseMoeBlock),
// an optional capacity (Fedus et al. 2021) and an optional padding mask.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <optional>
#include <string>
#include <vector>

#include "moe/backend.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/core/error.hpp"
#include "moe/core/module.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/layer/expert_bank.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/softmax.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

namespace backends {
struct Cpu;  // the default backend, defined in backends/cpu/cpu_backend.hpp (moe/moe.hpp includes it)
}

/// An expert is a module built from (d_model, Options, Rng&) that reports its output width.
template <class E>
concept Expert = Module<E> && requires { typename E::Options; } &&
                 std::constructible_from<E, Index, const typename E::Options&, Rng&> &&
                 requires(const E e) {
                   { e.out_features() } -> std::convertible_to<Index>;
                 };

/// An expert that needs whole sequences in order (TransformerEncoder declares `static constexpr bool
/// sequence_expert = true`). The layer hands experts their rows without a layout, so such experts get
/// theirs from MoELayer::set_layout, and every expert must see every token in token order: the layer
/// accepts them only with dense routing (k = num_experts) and no capacity.
template <class E>
concept SequenceExpert = requires {
  requires E::sequence_expert;
};

/// Which rows go where, and the per-token load, of every forward; accumulated until reset().
struct LoadTracker {
  IndexVector counts;  // assignments per expert (before capacity drops)
  Index tokens = 0;
  Index dropped = 0;

  void reset(Index num_experts) {
    counts.setZero(num_experts);
    tokens = 0;
    dropped = 0;
  }
  void add(const IndexVector& routed, Index batch_dropped, Index batch_tokens) {
    counts += routed;
    tokens += batch_tokens;
    dropped += batch_dropped;
  }
};

template <class ExpertT, template <class> class RouterT, int K, template <class> class BalancerT,
          class Backend = backends::Cpu>
class MoELayer {
  static_assert(requires { typename ExpertT::Scalar; },
                "moe::MoELayer: the Expert type must declare `using Scalar = float;` (or double)");
  static_assert(HasForward<ExpertT>,
                "moe::MoELayer: the Expert type must provide `const MatrixX<Scalar>& forward(ConstRef<Scalar> x)`");
  static_assert(HasBackward<ExpertT>,
                "moe::MoELayer: the Expert type must provide `const MatrixX<Scalar>& backward(ConstRef<Scalar> dy)` "
                "(returns dx, adds parameter gradients)");
  static_assert(HasNamedParameters<ExpertT>,
                "moe::MoELayer: the Expert type must provide `ParameterList<Scalar> named_parameters()`");
  static_assert(Expert<ExpertT>,
                "moe::MoELayer: the Expert type must have `struct Options`, a constructor "
                "`Expert(Index d_model, const Options&, Rng&)` and `Index out_features() const`");
  static_assert(Router<RouterT<typename ExpertT::Scalar>>,
                "moe::MoELayer: the Router must satisfy moe::Router (see moe/routing/routing.hpp)");
  static_assert(Balancer<BalancerT<typename ExpertT::Scalar>>,
                "moe::MoELayer: the Balancer must satisfy moe::Balancer (see moe/balancing/balancer.hpp)");
  static_assert(K == Dynamic || K >= 1, "moe::MoELayer: K must be at least 1, or moe::Dynamic");
  static_assert(detail::check_backend<Backend, ExpertBank<ExpertT>>());
  static_assert(!ExpertChoiceRouter<RouterT<typename ExpertT::Scalar>> ||
                    std::same_as<BalancerT<typename ExpertT::Scalar>, NoBalancing<typename ExpertT::Scalar>>,
                "moe::MoELayer: expert-choice routing gives every expert exactly C tokens, balanced by construction: "
                "aux losses have no imbalance to penalise and the aux-loss-free bias none to correct; use "
                "moe::NoBalancing");
  static_assert(!ExpertChoiceRouter<RouterT<typename ExpertT::Scalar>> || !SequenceExpert<ExpertT>,
                "moe::MoELayer: expert-choice routing gives each expert only the tokens it chose, and sequence "
                "experts need every token of each sequence in order");
  static_assert(!ExpertChoiceRouter<RouterT<typename ExpertT::Scalar>> ||
                    !requires(const typename Backend::template Runner<ExpertBank<ExpertT>>& r) { r.replicas(); },
                "moe::MoELayer: expert-choice routing picks each expert's top-C tokens over the whole batch; a backend "
                "that spreads the batch over processes routes each process's share alone and would choose otherwise");

  template <class, template <class> class, int, template <class> class, class>
  friend class MoELayer;

 public:
  using Scalar = typename ExpertT::Scalar;
  using ExpertType = ExpertT;
  using RouterType = RouterT<Scalar>;
  using BalancerType = BalancerT<Scalar>;
  using BankType = ExpertBank<ExpertT>;
  using BackendType = Backend;
  using Runner = typename Backend::template Runner<BankType>;

  struct Options {
    Index d_model = 0;
    Index num_experts = 0;
    Index k = K == Dynamic ? 0 : K;  // set it only when K is moe::Dynamic
    Index num_shared_experts = 0;
    /// Qwen1.5/Qwen2-MoE's gated shared expert: shared expert s's output scaled per token by
    /// sigmoid(x . w_s), w = shared_expert_gate.weight [num_shared_experts x d_model], no bias.
    bool shared_expert_gate = false;
    double capacity_factor = 0.0;  // 0: dropless; else each expert takes at most ceil(cf * T K / N) rows
                                   // (0 with an expert-choice router, which sets the capacity itself)
    DropPolicy drop_policy = DropPolicy::token_order;  // which assignments an expert over capacity keeps
    bool check_finite = false;     // throw when the output or the aux loss is not finite
    typename ExpertT::Options expert{};
    typename ExpertT::Options shared_expert{};
    typename RouterType::Options router{};
    typename BalancerType::Options balancer{};
    Backend backend{};
  };

  /// Parameters drawn from `init`, an Rng, in PyTorch's way for each module; or, with moe::zero_init, all zero
  /// and nothing drawn, for a loader that overwrites them (the router, experts and shared experts must take
  /// ZeroInit: SoftmaxTopK, SigmoidTopK; SwiGLUFeedForward).
  template <ParameterInit Init>
  MoELayer(const Options& options, Init&& init)
      : options_(validated(options)),
        router_(options.d_model, options.num_experts, options.router, init),
        balancer_(options.num_experts, options.balancer),
        experts_(options.num_experts, options.d_model, options.expert, init, held_experts(options_)),
        runner_(options_.backend) {
    shared_.reserve(static_cast<std::size_t>(options.num_shared_experts));
    for (Index s = 0; s < options.num_shared_experts; ++s)
      shared_.emplace_back(options.d_model, options.shared_expert, init);
    const Index width = experts_.out_features();
    for (const auto& s : shared_)
      detail::require(s.out_features() == width, "MoELayer: shared experts output ", s.out_features(),
                      " features, routed experts ", width);
    // Drawn after every other parameter, so that the layer without the gate draws exactly what it did before.
    if (options.shared_expert_gate) shared_gate_.emplace(options.d_model, options.num_shared_experts, init, false);
    step_load_.setZero(options.num_experts);
    load_.reset(options.num_experts);
  }

  /// The same experts, shared experts and balancer state behind a different router: how the documents'
  /// ablation swaps a learned router for RandomRouter without retraining.
  template <template <class> class NewRouter>
  MoELayer<ExpertT, NewRouter, K, BalancerT, Backend> with_router(const typename NewRouter<Scalar>::Options& router,
                                                                 Rng& rng) const {
    using Result = MoELayer<ExpertT, NewRouter, K, BalancerT, Backend>;
    typename Result::Options options{options_.d_model, options_.num_experts, options_.k,
                                     options_.num_shared_experts, options_.shared_expert_gate,
                                     options_.capacity_factor, options_.drop_policy,
                                     options_.check_finite,
                                     options_.expert, options_.shared_expert, router, options_.balancer,
                                     options_.backend};
    Result result(options, rng);
    result.experts_ = experts_;
    result.shared_ = shared_;
    result.shared_gate_ = shared_gate_;
    result.balancer_ = balancer_;
    result.set_training(training_);
    return result;
  }

  Index d_model() const { return options_.d_model; }
  Index num_experts() const { return options_.num_experts; }
  Index k() const { return options_.k; }
  Index out_features() const { return experts_.out_features(); }
  const Options& options() const { return options_; }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    routing_.masked = nullptr;
    return route(x);
  }

  /// The forward of the rows that `padding` (true at padding, [batch x seq_len] for the T = batch * seq_len
  /// rows) leaves, as Hugging Face's load-balancing loss takes the attention mask: padded rows are not
  /// dispatched, get a zero output and a zero input gradient, and neither the load statistics, the aux losses,
  /// the capacity nor the aux-loss-free bias update see them. The other rows get what a batch of them alone
  /// would give, bit for bit; sequence-wise aux losses group them by the sequence they sit in.
  const MatrixX<Scalar>& forward(ConstRef<Scalar> x, const PaddingMask& padding) {
    static_assert(!SequenceExpert<ExpertT>,
                  "moe::MoELayer::forward(x, padding): sequence experts need every row of each sequence in order; "
                  "give them the padding through set_layout and call forward(x)");
    detail::require(padding.size() == x.rows(), "MoELayer: padding mask has ", padding.rows(), "x", padding.cols(),
                    " = ", padding.size(), " entries, the input has ", x.rows(), " rows");
    masked_.batch_rows = x.rows();
    masked_.rows.resize((!padding).count());
    for (Index t = 0, kept = 0; t < x.rows(); ++t)
      if (!padding.data()[t]) masked_.rows(kept++) = t;
    kept_x_.resize(masked_.rows.size(), x.cols());
    for (Index i = 0; i < masked_.rows.size(); ++i) kept_x_.row(i) = x.row(masked_.rows(i));
    routing_.masked = &masked_;
    const MatrixX<Scalar>& kept_y = route(kept_x_);
    masked_output_.setZero(x.rows(), kept_y.cols());
    for (Index i = 0; i < masked_.rows.size(); ++i) masked_output_.row(masked_.rows(i)) = kept_y.row(i);
    return masked_output_;
  }

  /// The layout of the rows of the next forwards, for sequence experts (every routed and shared expert).
  template <class Layout>
    requires requires(ExpertT& e, const Layout& layout) { e.set_layout(layout); }
  void set_layout(const Layout& layout) {
    for (Index e = 0; e < experts_.size(); ++e) experts_.expert(e).set_layout(layout);
    for (auto& s : shared_) s.set_layout(layout);
  }

  /// dx for dy = d loss / d output; adds the gradients of every expert, the router and the aux loss.
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    if (routing_.masked == nullptr) return route_backward(dy);
    const Index rows = masked_.batch_rows;
    detail::require(dy.rows() == rows && dy.cols() == out_features(), "MoELayer: gradient has shape ", dy.rows(), "x",
                    dy.cols(), ", expected ", rows, "x", out_features());
    kept_dy_.resize(masked_.rows.size(), dy.cols());
    for (Index i = 0; i < masked_.rows.size(); ++i) kept_dy_.row(i) = dy.row(masked_.rows(i));
    const MatrixX<Scalar>& kept_dx = route_backward(kept_dy_);
    masked_grad_input_.setZero(rows, kept_dx.cols());
    for (Index i = 0; i < masked_.rows.size(); ++i) masked_grad_input_.row(masked_.rows(i)) = kept_dx.row(i);
    return masked_grad_input_;
  }

  /// The aux loss of the last forward: add it to the task loss (its gradient is already in backward).
  Scalar aux_loss() const { return aux_loss_; }

  /// Call after each optimizer step: feeds the load since the last call to the balancer (aux-loss-free
  /// bias update), summed over the processes the batch is spread over, if any, so that all take the same
  /// step. Only training-mode forwards count.
  void update_balancing() {
    if constexpr (requires { balancer_.update(step_load_); }) {
      if constexpr (requires { runner_.replicas(); }) runner_.replicas()->sum(step_load_);
      balancer_.update(step_load_);
    }
    step_load_.setZero();
  }

  /// Assignments per expert, tokens and drops accumulated since the last reset_load().
  const LoadTracker& load() const { return load_; }
  void reset_load() { load_.reset(options_.num_experts); }
  /// Assignments per expert of the last forward.
  const IndexVector& batch_load() const { return runner_.routed(); }
  const Routing<Scalar>& routing() const { return routing_; }
  /// The backend's runner: its dispatch plan and buffers of the last forward and backward.
  const Runner& backend() const { return runner_; }

  void train(bool on = true) { set_training(on); }
  void eval() { set_training(false); }
  bool training() const { return training_; }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    append_prefixed(list, router_.named_parameters(), "router.");
    append_prefixed(list, experts_.named_parameters(), "experts.");
    for (std::size_t s = 0; s < shared_.size(); ++s)
      append_prefixed(list, shared_[s].named_parameters(), "shared_experts." + std::to_string(s) + ".");
    if (shared_gate_) append_prefixed(list, shared_gate_->named_parameters(), "shared_expert_gate.");
    return list;
  }

  BufferList<Scalar> named_buffers() {
    BufferList<Scalar> list;
    append_prefixed(list, buffers_of(router_), "router.");
    append_prefixed(list, buffers_of(balancer_), "balancer.");
    append_prefixed(list, experts_.named_buffers(), "experts.");
    for (std::size_t s = 0; s < shared_.size(); ++s)
      append_prefixed(list, buffers_of(shared_[s]), "shared_experts." + std::to_string(s) + ".");
    return list;
  }

  GeneratorList named_generators() {
    GeneratorList list;
    append_prefixed(list, generators_of(router_), "router.");
    append_prefixed(list, experts_.named_generators(), "experts.");
    for (std::size_t s = 0; s < shared_.size(); ++s)
      append_prefixed(list, generators_of(shared_[s]), "shared_experts." + std::to_string(s) + ".");
    return list;
  }

  RouterType& router() { return router_; }
  BalancerType& balancer() { return balancer_; }
  /// Expert e of the layer, which this process must hold (all of them, unless the backend spreads the
  /// experts over processes).
  ExpertT& expert(Index e) {
    const Index first = experts_.first(), last = first + experts_.size();
    detail::require(e >= 0 && e < options_.num_experts, "MoELayer: expert index ", e, ", expected [0, ",
                    options_.num_experts, ")");
    detail::require(e >= first && e < last, "MoELayer: expert ", e, " is not held by this process, which holds [",
                    first, ", ", last, ")");
    return experts_.expert(e - first);
  }
  BankType& experts() { return experts_; }
  ExpertT& shared_expert(Index s) { return shared_.at(static_cast<std::size_t>(s)); }

 private:
  static const Options& validated(const Options& o) {
    detail::require(o.d_model > 0, "MoELayer: d_model must be positive, got ", o.d_model);
    detail::require(o.num_experts > 0, "MoELayer: num_experts must be positive, got ", o.num_experts);
    if constexpr (K != Dynamic)
      detail::require(o.k == K, "MoELayer: k is fixed to ", K, " by the template argument, got ", o.k);
    detail::require(o.k >= 1 && o.k <= o.num_experts, "MoELayer: k must be in [1, num_experts = ", o.num_experts,
                    "], got ", o.k);
    detail::require(o.num_shared_experts >= 0, "MoELayer: num_shared_experts must be >= 0, got ",
                    o.num_shared_experts);
    detail::require(!o.shared_expert_gate || o.num_shared_experts > 0,
                    "MoELayer: shared_expert_gate needs shared experts to gate, num_shared_experts is 0");
    detail::require(o.capacity_factor >= 0.0 && std::isfinite(o.capacity_factor),
                    "MoELayer: capacity_factor must be >= 0 (0: dropless), got ", o.capacity_factor);
    if constexpr (ExpertChoiceRouter<RouterType>)
      detail::require(o.capacity_factor == 0.0, "MoELayer: the expert-choice router sets each expert's capacity (its "
                      "Options::capacity_factor), so the layer's capacity_factor must be 0, got ", o.capacity_factor);
    if constexpr (SequenceExpert<ExpertT>) {
      detail::require(o.k == o.num_experts, "MoELayer: the experts are sequence experts, which need every token of "
                      "each sequence in order, so routing must be dense: k must be num_experts = ", o.num_experts,
                      ", got ", o.k);
      detail::require(o.capacity_factor == 0.0, "MoELayer: the experts are sequence experts, which need every token "
                      "of each sequence in order, so capacity_factor must be 0 (no drops), got ", o.capacity_factor);
    }
    return o;
  }

  /// The experts this process holds: all, unless the backend spreads them over processes.
  static ExpertRange held_experts(const Options& o) {
    if constexpr (requires { o.backend.held_experts(o.num_experts); })
      return o.backend.held_experts(o.num_experts);
    else
      return {0, o.num_experts};
  }

  /// Router, selection, gates, balancer, experts and shared experts on the rows that are routed.
  const MatrixX<Scalar>& route(ConstRef<Scalar> x) {
    detail::require(x.cols() == options_.d_model, "MoELayer: input has ", x.cols(), " columns, d_model is ",
                    options_.d_model);
    const MatrixX<Scalar>& scores = router_.forward(x);
    const MatrixX<Scalar>* bias = nullptr;
    if constexpr (requires { balancer_.selection_bias(); }) bias = balancer_.selection_bias();
    if constexpr (requires { router_.select(scores, bias, Index{}, routing_.experts); })
      router_.select(scores, bias, options_.k, routing_.experts);
    else
      select_top_k(scores, bias, options_.k, routing_.experts);
    gather_gates(scores, routing_.experts, router_.renormalize(), routed_scaling_factor(router_), routing_.gates);
    routing_.scores = &scores;
    routing_.logits = &router_.logits();
    if constexpr (requires { runner_.replicas(); }) routing_.replicas = runner_.replicas();
    aux_loss_ = balancer_.forward(routing_);

    MatrixX<Scalar>& output = runner_.forward(experts_, x, routing_, capacity(x.rows()));
    load_.add(runner_.routed(), runner_.dropped(), x.rows());
    if (training_) step_load_ += runner_.routed();
    add_shared_experts(x, output);

    if (options_.check_finite) {
      detail::require(std::isfinite(static_cast<double>(aux_loss_)), "MoELayer: aux loss is not finite (",
                      aux_loss_, ")");
      detail::require(output.allFinite(), "MoELayer: output is not finite");
    }
    return output;
  }

  const MatrixX<Scalar>& route_backward(ConstRef<Scalar> dy) {
    const Index tokens = routing_.tokens(), width = out_features();
    detail::require(dy.rows() == tokens && dy.cols() == width, "MoELayer: gradient has shape ", dy.rows(), "x",
                    dy.cols(), ", expected ", tokens, "x", width);
    MatrixX<Scalar>& grad_input = runner_.backward(experts_, dy, routing_);
    const MatrixX<Scalar>& scores = *routing_.scores;
    d_scores_.setZero(scores.rows(), scores.cols());
    d_logits_.setZero(scores.rows(), scores.cols());
    gates_backward(scores, routing_.experts, routing_.gates, router_.renormalize(), routed_scaling_factor(router_),
                   runner_.d_gates(), d_scores_);
    balancer_.backward(d_scores_, d_logits_);
    grad_input += router_.backward(d_scores_, d_logits_);
    shared_experts_backward(dy, grad_input);
    return grad_input;
  }

  /// output += sum over s of shared_s(x), each row scaled by its gate sigmoid(x . w_s) when gated.
  void add_shared_experts(ConstRef<Scalar> x, MatrixX<Scalar>& output) {
    if (!shared_gate_) {
      for (auto& s : shared_) output += s.forward(x);
      return;
    }
    detail::sigmoid(shared_gate_->forward(x), shared_gates_);
    shared_outputs_.resize(shared_.size());
    for (std::size_t s = 0; s < shared_.size(); ++s) {
      shared_outputs_[s] = shared_[s].forward(x);  // backward's d gate needs it
      output.array() += shared_outputs_[s].array().colwise() * shared_gates_.col(static_cast<Index>(s)).array();
    }
  }

  /// With y_s = g_s shared_s(x), g_s = sigmoid(z_s), z_s = x . w_s: d shared_s = g_s dy,
  /// d z_s = (dy . shared_s(x)) g_s (1 - g_s); dx gets both paths.
  void shared_experts_backward(ConstRef<Scalar> dy, MatrixX<Scalar>& grad_input) {
    if (!shared_gate_) {
      for (auto& s : shared_) grad_input += s.backward(dy);
      return;
    }
    d_shared_logits_.resize(dy.rows(), shared_gates_.cols());
    for (std::size_t s = 0; s < shared_.size(); ++s) {
      const auto gate = shared_gates_.col(static_cast<Index>(s)).array();
      d_shared_ = (dy.array().colwise() * gate).matrix();
      grad_input += shared_[s].backward(d_shared_);
      d_shared_logits_.col(static_cast<Index>(s)).array() =
          dy.cwiseProduct(shared_outputs_[s]).rowwise().sum().array() * gate * (Scalar(1) - gate);
    }
    grad_input += shared_gate_->backward(d_shared_logits_);
  }

  Capacity capacity(Index tokens) const {
    return {expert_capacity(options_.capacity_factor, tokens, options_.k, options_.num_experts), options_.drop_policy};
  }

  void set_training(bool on) {
    training_ = on;
    moe::set_training(router_, on);
    experts_.train(on);
    for (auto& s : shared_) moe::set_training(s, on);
  }

  Options options_;
  RouterType router_;
  BalancerType balancer_;
  BankType experts_;
  Runner runner_;
  std::vector<ExpertT> shared_;
  std::optional<Linear<Scalar>> shared_gate_;  // Options::shared_expert_gate
  bool training_ = true;

  Routing<Scalar> routing_;
  MaskedRows masked_;  // the rows of the last forward(x, padding)
  MatrixX<Scalar> kept_x_, kept_dy_, masked_output_, masked_grad_input_;
  Scalar aux_loss_ = 0;
  IndexVector step_load_;
  LoadTracker load_;
  MatrixX<Scalar> d_scores_, d_logits_;
  MatrixX<Scalar> shared_gates_, d_shared_, d_shared_logits_;  // [T x S] gates, [T x width], [T x S]
  std::vector<MatrixX<Scalar>> shared_outputs_;
};

}  // namespace moe
