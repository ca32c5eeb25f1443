#pragma once
// Tensors as files and PyTorch see them: an element type, a shape and the elements in C order.

#include <array>
#include <cstddef>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// The element types moe reads from safetensors files (it writes F32 and F64).
enum class DType { F16, BF16, F32, F64 };

namespace detail {
inline constexpr std::array<std::string_view, 4> dtype_names{"F16", "BF16", "F32", "F64"};
inline constexpr std::array<std::size_t, 4> dtype_sizes{2, 2, 4, 8};
}  // namespace detail

/// The name safetensors headers use ("F16", "BF16", "F32", "F64").
constexpr std::string_view dtype_name(DType dtype) { return detail::dtype_names[static_cast<std::size_t>(dtype)]; }

/// Bytes per element.
constexpr std::size_t dtype_size(DType dtype) { return detail::dtype_sizes[static_cast<std::size_t>(dtype)]; }

/// The DType a safetensors header names, or nothing for a type moe does not read (I64, BOOL, F8_E4M3...).
constexpr std::optional<DType> dtype_from_name(std::string_view name) {
  for (std::size_t i = 0; i < detail::dtype_names.size(); ++i)
    if (detail::dtype_names[i] == name) return static_cast<DType>(i);
  return std::nullopt;
}

/// F32 for float, F64 for double.
template <class Scalar>
constexpr DType dtype_of() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "moe::dtype_of: Scalar must be float or double");
  return std::is_same_v<Scalar, float> ? DType::F32 : DType::F64;
}

/// "[128, 784]", as error messages show shapes.
inline std::string shape_to_string(const Shape& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

/// Number of elements: the product of the dimensions, 1 for a scalar (shape {}). A negative dimension, or
/// non-zero dimensions whose product an Index cannot hold, are an error: a shape read from a file can
/// claim anything, and [0, 2^40, 2^40] has 0 elements but would overflow on the way.
inline Index numel(const Shape& shape) {
  Index count = 1;
  bool empty = false;
  for (const Index dim : shape) {
    detail::require(dim >= 0, "shape ", shape_to_string(shape), " has a negative dimension");
    if (dim == 0) {
      empty = true;
      continue;
    }
    detail::require(count <= std::numeric_limits<Index>::max() / dim, "shape ", shape_to_string(shape),
                    " has more elements than a 64-bit count holds");
    count *= dim;
  }
  return empty ? 0 : count;
}

template <class Scalar>
struct Tensor {
  Shape shape;
  VectorX<Scalar> data;  // numel(shape) elements in C (row-major) order, as PyTorch stores a contiguous tensor
};

/// Tensors by PyTorch name. Sorted by name, which is the order safetensors files hold them in, and names
/// are unique, as in a file.
template <class Scalar>
using StateDict = std::map<std::string, Tensor<Scalar>>;

}  // namespace moe
