#pragma once
// A gating network that is a small MLP instead of one linear map: "a two-layer feedforward network with
// ReLU mapping each token to a softmax distribution over experts", or the 784-256-128-4 gating MLP with
// dropout 0.2 of the MNIST experiments. scores = softmax(MLP(x)), then top-K as SoftmaxTopK.

#include <cstddef>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/dropout.hpp"
#include "moe/nn/linear.hpp"
#include "moe/routing/routing.hpp"
#include "moe/nn/softmax.hpp"

namespace moe {

template <class ScalarT = float>
class MLPRouter {
 public:
  using Scalar = ScalarT;

  struct Options {
    std::vector<Index> hidden;  // widths of the hidden layers, each followed by ReLU [and Dropout]
    double dropout = 0.0;       // after each hidden ReLU when > 0
    bool renormalize = false;   // divide the K gates by their sum
  };

  /// The Linears are initialised first, in order, so their weights do not depend on whether dropout is on.
  MLPRouter(Index d_model, Index num_experts, const Options& options, Rng& rng) : renormalize_(options.renormalize) {
    for (std::size_t i = 0; i < options.hidden.size(); ++i)
      detail::require(options.hidden[i] > 0, "MLPRouter: hidden[", i, "] must be positive, got ", options.hidden[i]);
    detail::require(options.dropout >= 0.0 && options.dropout < 1.0, "MLPRouter: dropout must be in [0, 1), got ",
                    options.dropout);
    linears_.reserve(options.hidden.size() + 1);
    Index in = d_model;
    for (const Index width : options.hidden) {
      linears_.emplace_back(in, width, rng);
      in = width;
    }
    linears_.emplace_back(in, num_experts, rng);
    relus_.resize(options.hidden.size());
    if (options.dropout > 0.0)
      for (std::size_t i = 0; i < options.hidden.size(); ++i) dropouts_.emplace_back(options.dropout, rng);
  }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    const MatrixX<Scalar>* h = &linears_.front().forward(x);
    for (std::size_t i = 0; i < relus_.size(); ++i) {
      h = &relus_[i].forward(*h);
      if (!dropouts_.empty()) h = &dropouts_[i].forward(*h);
      h = &linears_[i + 1].forward(*h);
    }
    logits_ = *h;
    detail::softmax_rows(logits_, scores_);
    return scores_;
  }

  const MatrixX<Scalar>& logits() const { return logits_; }

  /// `d_logits` may be empty (no gradient reaches the logits directly).
  const MatrixX<Scalar>& backward(ConstRef<Scalar> d_scores, ConstRef<Scalar> d_logits) {
    detail::require(d_scores.rows() == scores_.rows() && d_scores.cols() == scores_.cols(),
                    "MLPRouter: d_scores has shape ", d_scores.rows(), "x", d_scores.cols(), ", expected ",
                    scores_.rows(), "x", scores_.cols());
    detail::require(d_logits.size() == 0 || (d_logits.rows() == logits_.rows() && d_logits.cols() == logits_.cols()),
                    "MLPRouter: d_logits has shape ", d_logits.rows(), "x", d_logits.cols(), ", expected ",
                    logits_.rows(), "x", logits_.cols(), " or empty");
    detail::softmax_rows_backward(scores_, d_scores, d_logits_);
    if (d_logits.size() > 0) d_logits_ += d_logits;
    const MatrixX<Scalar>* g = &linears_.back().backward(d_logits_);
    for (std::size_t i = relus_.size(); i-- > 0;) {
      if (!dropouts_.empty()) g = &dropouts_[i].backward(*g);
      g = &relus_[i].backward(*g);
      g = &linears_[i].backward(*g);
    }
    return *g;
  }

  bool renormalize() const { return renormalize_; }

  /// Each Linear under the index it has in the equivalent torch.nn.Sequential(Linear, ReLU, [Dropout,] ...,
  /// Linear) named `net`: net.0, net.2, net.4 without dropout, net.0, net.3, net.6 with it.
  ParameterList<Scalar> named_parameters() {
    const std::size_t stride = dropouts_.empty() ? 2 : 3;
    ParameterList<Scalar> list;
    for (std::size_t i = 0; i < linears_.size(); ++i)
      append_prefixed(list, linears_[i].named_parameters(), "net." + std::to_string(i * stride) + ".");
    return list;
  }

  /// Each Dropout under its index in the same `net`: net.2, net.5, ...
  GeneratorList named_generators() {
    GeneratorList list;
    for (std::size_t i = 0; i < dropouts_.size(); ++i)
      append_prefixed(list, dropouts_[i].named_generators(), "net." + std::to_string(i * 3 + 2) + ".");
    return list;
  }

  void train(bool on) {
    for (auto& dropout : dropouts_) dropout.train(on);
  }

 private:
  std::vector<Linear<Scalar>> linears_;  // hidden.size() + 1: the last maps to the experts
  std::vector<ReLU<Scalar>> relus_;
  std::vector<Dropout<Scalar>> dropouts_;  // empty when dropout is 0
  bool renormalize_;
  MatrixX<Scalar> logits_, scores_, d_logits_;
};

}  // namespace moe
