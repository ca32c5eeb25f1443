#pragma once
// Random inputs for the tests: matrices of uniform values, from a caller's generator or a seed.

#include <cstdint>

#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe::test {

/// A rows x cols matrix of values drawn uniformly from [low, high) by `rng`.
template <class Scalar = double>
MatrixX<Scalar> random_matrix(Index rows, Index cols, Rng& rng, double low = -1.0, double high = 1.0) {
  MatrixX<Scalar> m(rows, cols);
  fill_uniform(m, rng, low, high);
  return m;
}

/// The same in [-1, 1), from a generator of its own seeded with `seed`.
template <class Scalar = double>
MatrixX<Scalar> random_matrix(Index rows, Index cols, std::uint64_t seed) {
  Rng rng(seed);
  return random_matrix<Scalar>(rows, cols, rng);
}

}  // namespace moe::test
