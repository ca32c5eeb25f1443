#pragma once
// Layers applied one after another, fixed at compile time, with torch.nn.Sequential's parameter names
// ("0.weight", "2.bias").

#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "moe/core/module.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"

namespace moe {

template <class... Layers>
class Sequential {
  static_assert(sizeof...(Layers) > 0, "Sequential needs at least one layer");

 public:
  using Scalar = typename std::tuple_element_t<0, std::tuple<Layers...>>::Scalar;
  static_assert((std::is_same_v<typename Layers::Scalar, Scalar> && ...),
                "Sequential: every layer must have the same Scalar type");

  explicit Sequential(Layers... layers) : layers_(std::move(layers)...) {}

  static constexpr std::size_t size() { return sizeof...(Layers); }

  template <std::size_t I>
  auto& get() {
    return std::get<I>(layers_);
  }
  template <std::size_t I>
  const auto& get() const {
    return std::get<I>(layers_);
  }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) { return forward_from<0>(x); }

  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) { return backward_from<sizeof...(Layers) - 1>(dy); }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    for_each_layer([&](auto& layer, std::size_t i) {
      append_prefixed(list, layer.named_parameters(), std::to_string(i) + ".");
    });
    return list;
  }

  BufferList<Scalar> named_buffers() {
    BufferList<Scalar> list;
    for_each_layer([&](auto& layer, std::size_t i) {
      append_prefixed(list, buffers_of(layer), std::to_string(i) + ".");
    });
    return list;
  }

  GeneratorList named_generators() {
    GeneratorList list;
    for_each_layer([&](auto& layer, std::size_t i) {
      append_prefixed(list, generators_of(layer), std::to_string(i) + ".");
    });
    return list;
  }

  void train(bool on) {
    for_each_layer([&](auto& layer, std::size_t) { set_training(layer, on); });
  }

 private:
  template <std::size_t I>
  const MatrixX<Scalar>& forward_from(ConstRef<Scalar> x) {
    const MatrixX<Scalar>& y = std::get<I>(layers_).forward(x);
    if constexpr (I + 1 == sizeof...(Layers))
      return y;
    else
      return forward_from<I + 1>(y);
  }

  template <std::size_t I>
  const MatrixX<Scalar>& backward_from(ConstRef<Scalar> dy) {
    const MatrixX<Scalar>& dx = std::get<I>(layers_).backward(dy);
    if constexpr (I == 0)
      return dx;
    else
      return backward_from<I - 1>(dx);
  }

  /// Calls f(layer, index) for each layer in order.
  template <class F>
  void for_each_layer(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (f(std::get<I>(layers_), I), ...);
    }(std::index_sequence_for<Layers...>{});
  }

  std::tuple<Layers...> layers_;
};

}  // namespace moe
