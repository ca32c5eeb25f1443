#pragma once
// Scores normalised to sum to 1 over the experts, p_t = s_t / sum_j s_tj, for the balancers whose
// formulas assume a distribution: a no-op for softmax scores, needed for sigmoid ones (DeepSeek-V3).

#include "moe/core/types.hpp"

namespace moe::detail {

template <class Scalar>
struct NormalizedScores {
  MatrixX<Scalar> value;  // p [T x N]
  VectorX<Scalar> sums;   // sum_j s_tj [T]
  MatrixX<Scalar> grad;   // d loss / d p [T x N], filled by the balancer after forward

  void forward(const MatrixX<Scalar>& scores) {
    sums = scores.rowwise().sum();
    value.resize(scores.rows(), scores.cols());
    value = sums.cwiseInverse().asDiagonal() * scores;
    grad.resize(scores.rows(), scores.cols());
  }

  /// d s_t += (d p_t - <d p_t, p_t>) / sum_j s_tj.
  void backward(MatrixX<Scalar>& d_scores) const {
    for (Index t = 0; t < value.rows(); ++t)
      d_scores.row(t).array() += (grad.row(t).array() - grad.row(t).dot(value.row(t))) / sums(t);
  }
};

}  // namespace moe::detail
