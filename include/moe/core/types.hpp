#pragma once
// Matrix aliases shared by every header: rows are tokens (or images), columns are features.

#include <Eigen/Core>

#include <cstdint>
#include <limits>

namespace moe {

using Index = Eigen::Index;

/// Marks a run-time value where a template expects a compile-time one (as K in MoELayer).
inline constexpr int Dynamic = -1;

template <class Scalar>
using MatrixX = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class Scalar>
using VectorX = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
template <class Scalar>
using RowVectorX = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

/// What layers take as input: a matrix, or a block of consecutive rows of one, without a copy.
template <class Scalar>
using ConstRef = Eigen::Ref<const MatrixX<Scalar>>;

using Matrix = MatrixX<float>;
using IndexMatrix = Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using IndexVector = Eigen::Matrix<Index, Eigen::Dynamic, 1>;

/// [batch x seq_len] for the rows b * seq_len + i of a batch of sequences; true marks padding, as PyTorch's
/// key_padding_mask.
using PaddingMask = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace detail {

/// a * b, or the largest value when that overflows: for sizes read from files, where a size too large for
/// 64 bits matches no file anyway.
inline std::uint64_t saturating_multiply(std::uint64_t a, std::uint64_t b) {
  constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  return b != 0 && a > max / b ? max : a * b;
}

}  // namespace detail

}  // namespace moe
