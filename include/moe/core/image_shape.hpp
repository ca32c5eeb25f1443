#pragma once
// The layout of images stored as rows: one image per row, its C*H*W values in PyTorch's NCHW order
// (channel, then row, then column), which is also what torch.flatten(x, 1) gives.

#include <ostream>

#include "moe/core/types.hpp"

namespace moe {

struct ImageShape {
  Index channels = 0;
  Index height = 0;
  Index width = 0;

  constexpr Index pixels() const { return height * width; }
  /// Columns of the row that holds one image.
  constexpr Index size() const { return channels * height * width; }

  friend constexpr bool operator==(const ImageShape&, const ImageShape&) = default;
};

/// Prints "CxHxW", as in error messages.
inline std::ostream& operator<<(std::ostream& out, const ImageShape& shape) {
  return out << shape.channels << "x" << shape.height << "x" << shape.width;
}

}  // namespace moe
