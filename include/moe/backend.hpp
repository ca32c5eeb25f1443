#pragma once
// The backend contract: what runs the hot path of one MoE layer.
//
// A backend is two types, as ensmallen's optimizers are: the one the user names in
// MoELayer<Expert, Router, K, Balancer, Backend> holds options (moe::backends::Cpu), and its nested
// `Runner<Bank>` is the object the layer owns, holding the state of its runs: the dispatch plan and every
// scratch buffer (kept between calls, so a steady state allocates nothing), or device memory and a stream.
//
//   template <class Bank> class Runner {
//     explicit Runner(const Backend& options);
//     // Plan (sort the T*K assignments by expert, capacity drops), gather, run every expert of the bank on
//     // its rows, combine each token's K contributions in slot order. Returns y [T x out], which the
//     // caller may add to in place (shared experts) until the next forward.
//     MatrixX<Scalar>& forward(Bank& bank, ConstRef<Scalar> x, const Routing<Scalar>& routing, Capacity capacity);
//     // The same plan in reverse: returns dx [T x d] of the routed experts (the caller may add to it) and
//     // leaves d loss / d gates [T x K] in d_gates(); the experts' parameter gradients are accumulated.
//     MatrixX<Scalar>& backward(Bank& bank, ConstRef<Scalar> dy, const Routing<Scalar>& routing);
//     const MatrixX<Scalar>& d_gates() const;
//     const IndexVector& routed() const;  // assignments per expert in the last forward, before drops
//     Index dropped() const;              // assignments dropped by the capacity in the last forward
//   };
//
// Optional, for a backend that spreads the experts over processes (backends/mpi, ExpertParallel):
//   ExpertRange held_experts(Index num_experts) const;  // on the options: the block this process holds;
//                                                       // the layer's bank is built with those alone
//   const ReplicaGroup* replicas() const;               // on the runner: what balancers sum their load over
// Its runner then takes routings over all the layer's experts, and the bank of the held ones.
//
// The layer keeps what the layer means: routing, balancing, shared experts, parameter names. A backend
// gives the same bits for fixed inputs whatever the number of threads, and says so in its doc comment.
// An exception thrown while a backend runs (an expert's, on any thread) reaches the caller as a moe::Error
// that names the expert.

#include <concepts>

#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

/// Which assignments an expert over its capacity keeps.
enum class DropPolicy {
  token_order,   // its first assignments in token order (Switch Transformer; Fedus et al. 2021)
  choice_order,  // every token's first choice before any second choice, then token order (GShard; Lepikhin
                 // et al. 2020): a token loses its first choice only to other first choices
};

/// The most rows each expert takes in one forward (0: no limit) and which it keeps.
struct Capacity {
  Index limit = 0;
  DropPolicy policy = DropPolicy::token_order;
};

template <class R, class Bank>
concept BackendRunner =
    requires(R r, const R cr, Bank& bank, ConstRef<typename Bank::Scalar> x,
             const Routing<typename Bank::Scalar>& routing, Capacity capacity) {
      { r.forward(bank, x, routing, capacity) } -> std::same_as<MatrixX<typename Bank::Scalar>&>;
      { r.backward(bank, x, routing) } -> std::same_as<MatrixX<typename Bank::Scalar>&>;
      { cr.d_gates() } -> std::convertible_to<const MatrixX<typename Bank::Scalar>&>;
      { cr.routed() } -> std::convertible_to<const IndexVector&>;
      { cr.dropped() } -> std::convertible_to<Index>;
    };

/// B is a backend for expert banks of type Bank: it names its runner `B::Runner<Bank>`, built from a B.
template <class B, class Bank>
concept Backend = requires { typename B::template Runner<Bank>; } &&
                  std::constructible_from<typename B::template Runner<Bank>, const B&> &&
                  BackendRunner<typename B::template Runner<Bank>, Bank>;

namespace detail {

/// The static_asserts MoELayer makes, one per requirement, so that the message names what is missing.
template <class B, class Bank>
constexpr bool check_backend() {
  static_assert(requires { sizeof(B); },
                "moe::MoELayer: the Backend is an incomplete type: include its header (moe/moe.hpp, or "
                "backends/cpu/cpu_backend.hpp for the default moe::backends::Cpu)");
  static_assert(requires { typename B::template Runner<Bank>; },
                "moe::MoELayer: the Backend must declare `template <class Bank> class Runner;` (the object the "
                "layer owns; see moe/backend.hpp)");
  if constexpr (requires { typename B::template Runner<Bank>; }) {
    using R = typename B::template Runner<Bank>;
    using S = typename Bank::Scalar;
    static_assert(std::constructible_from<R, const B&>,
                  "moe::MoELayer: Backend::Runner<Bank> must be constructible from `const Backend& options`");
    static_assert(requires(R r, Bank& bank, ConstRef<S> x, const Routing<S>& routing, Capacity capacity) {
      { r.forward(bank, x, routing, capacity) } -> std::same_as<MatrixX<S>&>;
    }, "moe::MoELayer: Backend::Runner<Bank> must provide `MatrixX<Scalar>& forward(Bank&, ConstRef<Scalar> x, "
       "const Routing<Scalar>&, Capacity capacity)`");
    static_assert(requires(R r, Bank& bank, ConstRef<S> dy, const Routing<S>& routing) {
      { r.backward(bank, dy, routing) } -> std::same_as<MatrixX<S>&>;
    }, "moe::MoELayer: Backend::Runner<Bank> must provide `MatrixX<Scalar>& backward(Bank&, ConstRef<Scalar> dy, "
       "const Routing<Scalar>&)`");
    static_assert(requires(const R r) {
      { r.d_gates() } -> std::convertible_to<const MatrixX<S>&>;
    }, "moe::MoELayer: Backend::Runner<Bank> must provide `const MatrixX<Scalar>& d_gates() const`");
    static_assert(requires(const R r) {
      { r.routed() } -> std::convertible_to<const IndexVector&>;
      { r.dropped() } -> std::convertible_to<Index>;
    }, "moe::MoELayer: Backend::Runner<Bank> must provide `const IndexVector& routed() const` and "
       "`Index dropped() const`");
  }
  return true;
}

}  // namespace detail
}  // namespace moe
