#pragma once
// The usual learned router (Shazeer et al. 2017; Switch, Mixtral): scores = softmax(x W^T), top-K
// selection, gates = the chosen scores, optionally renormalised over the K. DeepSeek-V2's options (DeepSeek-AI
// 2024, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model", sec. 2.2; its
// config.json): top-K within the topk_group best of n_group groups of consecutive experts, a group scored by its
// highest softmax score (topk_method "group_limited_greedy"), and the gates times routed_scaling_factor.

#include "moe/core/parameter.hpp"
#include "moe/nn/softmax.hpp"
#include "moe/nn/linear.hpp"
#include "moe/routing/group_limit.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

template <class ScalarT = float>
class SoftmaxTopK {
 public:
  using Scalar = ScalarT;

  struct Options {
    bool renormalize = false;  // divide the K gates by their sum (Mixtral); off in Switch (K = 1)
    bool bias = false;         // a bias in the router's linear map
    double routed_scaling_factor = 1.0;  // gates multiplied by it, after renormalisation if any
    Index n_group = 1;                   // groups of consecutive experts (1: no group limit)
    Index topk_group = 1;                // groups each token may choose its experts from
  };

  /// The weight drawn from `init` (an Rng) as PyTorch's nn.Linear draws it, or zero (ZeroInit).
  template <ParameterInit Init>
  SoftmaxTopK(Index d_model, Index num_experts, const Options& options, Init&& init)
      : linear_(d_model, num_experts, init, options.bias),
        options_(options),
        group_limit_(options, num_experts, "SoftmaxTopK") {}

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

  /// Top-K on score + bias (bias may be null), within the topk_group best groups when n_group > 1.
  void select(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* bias, Index k, IndexMatrix& experts) {
    group_limit_.select(scores, bias, k, experts);
  }

  bool renormalize() const { return options_.renormalize; }
  double routed_scaling_factor() const { return options_.routed_scaling_factor; }
  const Options& options() const { return options_; }

  ParameterList<Scalar> named_parameters() { return linear_.named_parameters(); }

 private:
  Linear<Scalar> linear_;
  Options options_;
  detail::GroupLimit<Scalar> group_limit_;
  MatrixX<Scalar> logits_, scores_, d_logits_;
};

}  // namespace moe
