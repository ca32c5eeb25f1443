#pragma once
// The usual learned router (Shazeer et al. 2017; Switch, Mixtral): scores = softmax(x W^T), top-K
// selection, gates = the chosen scores, optionally renormalised over the K.

#include "moe/core/parameter.hpp"
#include "moe/nn/softmax.hpp"
#include "moe/nn/linear.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

template <class ScalarT = float>
class SoftmaxTopK {
 public:
  using Scalar = ScalarT;

  struct Options {
    bool renormalize = false;  // divide the K gates by their sum (Mixtral); off in Switch (K = 1)
    bool bias = false;         // a bias in the router's linear map
  };

  SoftmaxTopK(Index d_model, Index num_experts, const Options& options, Rng& rng)
      : linear_(d_model, num_experts, rng, options.bias), renormalize_(options.renormalize) {}

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    logits_ = linear_.forward(x);
    detail::softmax_rows(logits_, scores_);
    return scores_;
  }

  const MatrixX<Scalar>& logits() const { return logits_; }

  const MatrixX<Scalar>& backward(ConstRef<Scalar> d_scores, ConstRef<Scalar> d_logits) {
    detail::softmax_rows_backward(scores_, d_scores, d_logits_);
    if (d_logits.size() > 0) d_logits_ += d_logits;
    return linear_.backward(d_logits_);
  }

  bool renormalize() const { return renormalize_; }

  ParameterList<Scalar> named_parameters() { return linear_.named_parameters(); }

 private:
  Linear<Scalar> linear_;
  bool renormalize_;
  MatrixX<Scalar> logits_, scores_, d_logits_;
};

}  // namespace moe
