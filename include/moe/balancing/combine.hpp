#pragma once
// Several balancers at once, e.g. the Switch aux loss with ST-MoE's router z-loss (Zoph et al. 2022):
// the losses and gradients add up; at most one member may bias the top-K selection.

#include <concepts>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/router_z_loss.hpp"
#include "moe/core/module.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

namespace detail {

template <class B>
concept HasSelectionBias = requires(const B b) {
  { b.selection_bias() } -> std::convertible_to<const MatrixX<typename B::Scalar>*>;
};

template <class B>
concept HasUpdate = requires(B b, const IndexVector& load) { b.update(load); };

}  // namespace detail

/// Options is the tuple of the members' Options, in order: `Combine<S, A, B>::Options{{...}, {...}}`.
template <class ScalarT, template <class> class... Balancers>
class Combine {
 public:
  using Scalar = ScalarT;
  using Options = std::tuple<typename Balancers<Scalar>::Options...>;

 private:
  static constexpr int biased = (0 + ... + int{detail::HasSelectionBias<Balancers<Scalar>>});
  static_assert(biased <= 1,
                "Combine: at most one member may provide `const MatrixX<Scalar>* selection_bias() const`; "
                "the top-K selection takes a single bias");

 public:
  Combine(Index num_experts, const Options& options)
      : Combine(num_experts, options, std::index_sequence_for<Balancers<Scalar>...>{}) {}

  Scalar forward(const Routing<Scalar>& routing) {
    return std::apply([&](auto&... member) { return (Scalar(0) + ... + member.forward(routing)); }, members_);
  }

  void backward(MatrixX<Scalar>& d_scores, MatrixX<Scalar>& d_logits) {
    std::apply([&](auto&... member) { (member.backward(d_scores, d_logits), ...); }, members_);
  }

  /// The one member's selection bias; absent when no member has one.
  const MatrixX<Scalar>* selection_bias() const
    requires(biased == 1)
  {
    const MatrixX<Scalar>* bias = nullptr;
    auto visit = [&](const auto& member) {
      if constexpr (detail::HasSelectionBias<std::decay_t<decltype(member)>>) bias = member.selection_bias();
    };
    std::apply([&](const auto&... member) { (visit(member), ...); }, members_);
    return bias;
  }

  /// Forwards the load to the members that track it; absent when none does.
  void update(const IndexVector& load)
    requires(detail::HasUpdate<Balancers<Scalar>> || ...)
  {
    auto visit = [&](auto& member) {
      if constexpr (detail::HasUpdate<std::decay_t<decltype(member)>>) member.update(load);
    };
    std::apply([&](auto&... member) { (visit(member), ...); }, members_);
  }

  /// The members' buffers, in order, under their own names.
  BufferList<Scalar> named_buffers() {
    BufferList<Scalar> list;
    std::apply([&](auto&... member) { (append_prefixed(list, buffers_of(member), ""), ...); }, members_);
    return list;
  }

  template <std::size_t I>
  auto& get() {
    return std::get<I>(members_);
  }

 private:
  template <std::size_t... I>
  Combine(Index num_experts, const Options& options, std::index_sequence<I...>)
      : members_(Balancers<Scalar>(num_experts, std::get<I>(options))...) {}

  std::tuple<Balancers<Scalar>...> members_;
};

/// The Switch aux loss with the router z-loss, as ST-MoE trains (Zoph et al. 2022).
template <class S = float>
using SwitchWithZLoss = Combine<S, SwitchAuxLoss, RouterZLoss>;

}  // namespace moe
