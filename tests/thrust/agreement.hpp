#pragma once
// What the Thrust tests compare device results with host ones by: seeded random matrices, the error relative
// to a tensor's scale, and the tolerances of the backend contract (1e-6 in float, 1e-12 in double).

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe_test {

template <class S>
using SequenceAuxLossFree = moe::Combine<S, moe::SequenceAuxLoss, moe::AuxLossFree>;

template <class S>
moe::MatrixX<S> random_matrix(moe::Index rows, moe::Index cols, std::uint64_t seed) {
  moe::Rng rng(seed);
  moe::MatrixX<S> m(rows, cols);
  moe::fill_uniform(m, rng, -1.0, 1.0);
  return m;
}

/// max |a - b| over max |b|: the error relative to the tensor's scale (entries near 0 have no relative error
/// of their own).
template <class S>
double scaled_error(const moe::MatrixX<S>& a, const moe::MatrixX<S>& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  if (a.size() == 0) return 0.0;
  const double scale = std::max(1e-30, static_cast<double>(b.cwiseAbs().maxCoeff()));
  return static_cast<double>((a - b).cwiseAbs().maxCoeff()) / scale;
}

template <class S>
constexpr double tolerance = std::is_same_v<S, float> ? 1e-6 : 1e-12;

}  // namespace moe_test
