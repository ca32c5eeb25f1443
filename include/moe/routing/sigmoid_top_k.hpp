#pragma once
// DeepSeek-V3's router (DeepSeek-AI 2024): scores = sigmoid(x W^T), top-K selection on score + the
// balancer's bias, optionally limited to the experts of the best groups (group-limited routing, as
// released: n_group 8, topk_group 4), gates = the chosen scores divided by their sum, times the routed
// scaling factor (2.5 in DeepSeek-V3).

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/softmax.hpp"
#include "moe/routing/group_limit.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

template <class ScalarT = float>
class SigmoidTopK {
 public:
  using Scalar = ScalarT;

  struct Options {
    bool bias = false;                   // a bias in the router's linear map
    double routed_scaling_factor = 1.0;  // gates multiplied by it after renormalisation
    Index n_group = 1;                   // groups of consecutive experts (1: no group limit)
    Index topk_group = 1;                // groups each token may choose its experts from
  };

  /// The weight drawn from `init` (an Rng) as PyTorch's nn.Linear draws it, or zero (ZeroInit).
  template <ParameterInit Init>
  SigmoidTopK(Index d_model, Index num_experts, const Options& options, Init&& init)
      : linear_(d_model, num_experts, init, options.bias),
        options_(options),
        group_limit_(options, num_experts, "SigmoidTopK") {}

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    logits_ = linear_.forward(x);
    detail::sigmoid(logits_, scores_);
    return scores_;
  }

  const MatrixX<Scalar>& logits() const { return logits_; }

  /// d logits = d scores .* s .* (1 - s), plus the balancer's d logits (may be empty).
  const MatrixX<Scalar>& backward(ConstRef<Scalar> d_scores, ConstRef<Scalar> d_logits) {
    detail::require(d_scores.rows() == scores_.rows() && d_scores.cols() == scores_.cols(),
                    "SigmoidTopK: d_scores has shape ", d_scores.rows(), "x", d_scores.cols(), ", expected ",
                    scores_.rows(), "x", scores_.cols());
    d_logits_.resize(scores_.rows(), scores_.cols());
    d_logits_.array() = d_scores.array() * scores_.array() * (Scalar(1) - scores_.array());
    if (d_logits.size() > 0) d_logits_ += d_logits;
    return linear_.backward(d_logits_);
  }

  /// Top-K on score + bias, within the topk_group best groups when n_group > 1 (select_top_k_in_groups).
  void select(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* bias, Index k, IndexMatrix& experts) {
    group_limit_.select(scores, bias, k, experts);
  }

  /// Sigmoid scores do not sum to 1, so the K gates are always renormalised.
  bool renormalize() const { return true; }
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
