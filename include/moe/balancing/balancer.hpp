#pragma once
// Balancer contract (checked by moe::Balancer). A balancer is constructed with the number of experts and
// its Options (the hyper-parameters); it keeps the state of one run (aux-loss-free biases) itself.
//
//   Balancer(Index num_experts, const Options&);
//   Scalar forward(const Routing<Scalar>& routing);          // the aux loss of this batch (0 if none);
//                                                            // caches what backward needs
//   void backward(MatrixX<Scalar>& d_scores, MatrixX<Scalar>& d_logits);  // adds d aux / d scores, d logits
// optional:
//   const MatrixX<Scalar>* selection_bias() const;           // 1 x N, added to the scores for top-K only
//   void update(const IndexVector& load);                    // after an optimizer step: assignments per expert
//   BufferList<Scalar> named_buffers();
//
// The aux loss is added by the user to the task loss; MoELayer::backward already includes its gradient.

#include <concepts>

#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

template <class B>
concept Balancer = requires { typename B::Scalar; typename B::Options; } &&
                   std::constructible_from<B, Index, const typename B::Options&> &&
                   requires(B b, const Routing<typename B::Scalar>& routing, MatrixX<typename B::Scalar>& grad) {
                     { b.forward(routing) } -> std::convertible_to<typename B::Scalar>;
                     b.backward(grad, grad);
                   };

/// No balancing: no aux loss, plain top-K.
template <class ScalarT = float>
class NoBalancing {
 public:
  using Scalar = ScalarT;
  struct Options {};

  NoBalancing(Index /*num_experts*/, const Options& /*options*/) {}
  Scalar forward(const Routing<Scalar>& /*routing*/) { return Scalar(0); }
  void backward(MatrixX<Scalar>& /*d_scores*/, MatrixX<Scalar>& /*d_logits*/) {}
};

}  // namespace moe
