#pragma once
// What the Thrust tests compare device results with host ones by: seeded random matrices, device vectors
// copied to the host, bitwise equality, the error relative to a tensor's scale, and the tolerances of the
// backend contract (1e-6 in float, 1e-12 in double).

#include <catch2/catch.hpp>

#include <thrust/copy.h>
#include <thrust/device_vector.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/core/types.hpp"

#include "../random_matrix.hpp"

namespace moe_test {

template <class S>
using SequenceAuxLossFree = moe::Combine<S, moe::SequenceAuxLoss, moe::AuxLossFree>;

using moe::test::random_matrix;

template <class T>
std::vector<T> to_host(const thrust::device_vector<T>& values) {
  std::vector<T> host(values.size());
  if (!host.empty()) thrust::copy(values.begin(), values.end(), host.begin());  // no iterator into an empty vector
  return host;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
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
