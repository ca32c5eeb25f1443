#pragma once
// Row-wise softmax and its backward, shared by the routers and the z-loss; the element-wise sigmoid of the
// sigmoid router and the gated shared experts.

#include "moe/core/parallel.hpp"
#include "moe/core/types.hpp"

namespace moe {

namespace detail {

/// Row-wise softmax, shifted by the row maximum for stability; rows over the threads.
template <class Scalar>
void softmax_rows(const MatrixX<Scalar>& logits, MatrixX<Scalar>& out) {
  out.resize(logits.rows(), logits.cols());
  parallel_for(logits.rows(), [&](Index t) {
    out.row(t) = (logits.row(t).array() - logits.row(t).maxCoeff()).exp();
    out.row(t) /= out.row(t).sum();
  });
}

/// d logits = p .* (d p - <d p, p>) for p = softmax(logits), row by row.
template <class Scalar>
void softmax_rows_backward(const MatrixX<Scalar>& probabilities, ConstRef<Scalar> d_probabilities,
                           MatrixX<Scalar>& d_logits) {
  d_logits.resize(probabilities.rows(), probabilities.cols());
  parallel_for(probabilities.rows(), [&](Index t) {
    const Scalar dot = d_probabilities.row(t).dot(probabilities.row(t));
    d_logits.row(t) = probabilities.row(t).array() * (d_probabilities.row(t).array() - dot);
  });
}

/// out = 1 / (1 + exp(-logits)), element by element.
template <class Scalar>
void sigmoid(const MatrixX<Scalar>& logits, MatrixX<Scalar>& out) {
  out.resize(logits.rows(), logits.cols());
  out.array() = ((-logits.array()).exp() + Scalar(1)).inverse();
}

}  // namespace detail

}  // namespace moe
