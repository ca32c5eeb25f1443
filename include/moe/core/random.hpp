#pragma once
// Seeded randomness. Every draw goes through an Rng passed in explicitly; the draws below are written
// here (not std::*_distribution) so the same seed gives the same numbers with any standard library.

#include <cmath>
#include <concepts>
#include <cstdint>
#include <iterator>
#include <numbers>
#include <random>
#include <ranges>
#include <type_traits>

#include "moe/core/types.hpp"

namespace moe {

using Rng = std::mt19937_64;

/// Passed where a module takes the Rng its parameters are drawn from: every parameter stays zero and nothing
/// is drawn, for a loader that overwrites every value (what PyTorch's torch.nn.utils.skip_init is for).
/// Linear, FeedForward, SwiGLUFeedForward, SoftmaxTopK, SigmoidTopK, ExpertChoice, and ExpertBank and MoELayer
/// of those take it.
struct ZeroInit {};
inline constexpr ZeroInit zero_init{};

/// What builds a module's parameters: an Rng to draw them from, or ZeroInit.
template <class Init>
concept ParameterInit = std::same_as<std::remove_cvref_t<Init>, Rng> || std::same_as<std::remove_cvref_t<Init>, ZeroInit>;

/// Uniform in [0, 1) with 53 random bits.
inline double uniform01(Rng& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

inline double uniform(Rng& rng, double low, double high) { return low + (high - low) * uniform01(rng); }

/// Uniform integer in [0, n), without modulo bias.
inline Index uniform_index(Rng& rng, Index n) {
  const auto range = static_cast<std::uint64_t>(n);
  const std::uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  std::uint64_t draw = rng();
  while (draw >= limit) draw = rng();
  return static_cast<Index>(draw % range);
}

/// Standard normal by Box-Muller.
inline double normal(Rng& rng) {
  const double u1 = 1.0 - uniform01(rng);  // in (0, 1], so the log is finite
  const double u2 = uniform01(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

/// Fisher-Yates shuffle drawing through uniform_index, so the order depends on the seed alone (std::shuffle's
/// depends on the standard library).
template <std::ranges::random_access_range Range>
void shuffle(Range&& items, Rng& rng) {
  const auto n = static_cast<Index>(std::ranges::size(items));
  const auto first = std::ranges::begin(items);
  for (Index i = n - 1; i > 0; --i) std::ranges::iter_swap(first + i, first + uniform_index(rng, i + 1));
}

template <class Derived>
void fill_uniform(Eigen::DenseBase<Derived>& m, Rng& rng, double low, double high) {
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j) m(i, j) = static_cast<typename Derived::Scalar>(uniform(rng, low, high));
}

template <class Derived>
void fill_normal(Eigen::DenseBase<Derived>& m, Rng& rng, double mean, double stddev) {
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j) m(i, j) = static_cast<typename Derived::Scalar>(mean + stddev * normal(rng));
}

}  // namespace moe
