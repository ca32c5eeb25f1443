#pragma once
// The contract every layer keeps, written once.
//
//   using Scalar = float or double;
//   const MatrixX<Scalar>& forward(ConstRef<Scalar> x);   // caches what backward needs
//   const MatrixX<Scalar>& backward(ConstRef<Scalar> dy); // returns dx, adds parameter gradients into grad
// (or const MatrixView<Scalar>&, the view of a Buffer, from a module whose row counts change: FeedForward)
//   ParameterList<Scalar> named_parameters();
// optional:
//   void train(bool on);                                  // training (default) or evaluation mode
//   BufferList<Scalar> named_buffers();
//   GeneratorList named_generators();                     // the generators it owns, named like parameters
//
// forward and backward return a reference to a buffer the module owns: it stays valid until the next
// call, and repeated calls with the same shapes allocate nothing (with fewer rows than seen before
// neither, where the module keeps Buffers). Bind the result with `const auto&` or take it as a ConstRef:
// binding a MatrixView to `const MatrixX&` compiles into a copy.

#include <concepts>
#include <string>

#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"

namespace moe {

template <class M>
concept HasForward = requires(M m, ConstRef<typename M::Scalar> x) {
  { m.forward(x) } -> std::convertible_to<ConstRef<typename M::Scalar>>;
};

template <class M>
concept HasBackward = requires(M m, ConstRef<typename M::Scalar> dy) {
  { m.backward(dy) } -> std::convertible_to<ConstRef<typename M::Scalar>>;
};

template <class M>
concept HasNamedParameters = requires(M m) {
  { m.named_parameters() } -> std::same_as<ParameterList<typename M::Scalar>>;
};

template <class M>
concept Module = requires { typename M::Scalar; } && HasForward<M> && HasBackward<M> && HasNamedParameters<M>;

/// Switches a module between training and evaluation mode, if it has one.
template <class M>
void set_training(M& module, bool on) {
  if constexpr (requires { module.train(on); }) module.train(on);
}

/// A module's buffers, or none.
template <class M>
BufferList<typename M::Scalar> buffers_of(M& module) {
  if constexpr (requires { module.named_buffers(); })
    return module.named_buffers();
  else
    return {};
}

/// A module's generators, or none.
template <class M>
GeneratorList generators_of(M& module) {
  if constexpr (requires { module.named_generators(); })
    return module.named_generators();
  else
    return {};
}

}  // namespace moe
