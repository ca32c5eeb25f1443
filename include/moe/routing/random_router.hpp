#pragma once
// The random-routing ablation of "Do Experts Specialize?": each row goes to K distinct experts drawn
// uniformly at random, with equal gates 1/K. Nothing is learned, so no gradient reaches the input.

#include <cstdint>
#include <utility>

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

template <class ScalarT = float>
class RandomRouter {
 public:
  using Scalar = ScalarT;

  struct Options {
    std::uint64_t seed = 0;  // 0: drawn from the rng passed to the constructor
  };

  RandomRouter(Index d_model, Index num_experts, const Options& options, Rng& rng)
      : d_model_(d_model), num_experts_(num_experts), generator_(options.seed != 0 ? options.seed : rng()) {
    detail::require(d_model > 0, "RandomRouter: d_model must be positive, got ", d_model);
    detail::require(num_experts > 0, "RandomRouter: num_experts must be positive, got ", num_experts);
  }

  /// Scores 1/N and logits 0 for every row: the gates come out 1/K once renormalised.
  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    detail::require(x.cols() == d_model_, "RandomRouter: input has ", x.cols(), " columns, d_model is ", d_model_);
    scores_.setConstant(x.rows(), num_experts_, Scalar(1) / static_cast<Scalar>(num_experts_));
    logits_.setZero(x.rows(), num_experts_);
    return scores_;
  }

  const MatrixX<Scalar>& logits() const { return logits_; }

  /// K distinct experts per row by a partial Fisher-Yates shuffle, rows in order from the router's own
  /// generator; the scores and the bias play no part.
  void select(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* /*bias*/, Index k, IndexMatrix& experts) {
    detail::require(scores.cols() == num_experts_, "RandomRouter: scores have ", scores.cols(),
                    " columns, num_experts is ", num_experts_);
    detail::require(k >= 1 && k <= num_experts_, "RandomRouter: k must be in [1, ", num_experts_,
                    "] (the number of experts), got ", k);
    experts.resize(scores.rows(), k);
    order_.resize(num_experts_);
    for (Index t = 0; t < scores.rows(); ++t) {
      for (Index e = 0; e < num_experts_; ++e) order_(e) = e;
      for (Index j = 0; j < k; ++j) {
        std::swap(order_(j), order_(j + uniform_index(generator_, num_experts_ - j)));
        experts(t, j) = order_(j);
      }
    }
  }

  /// A zero dx [T x d_model].
  const MatrixX<Scalar>& backward(ConstRef<Scalar> d_scores, ConstRef<Scalar> /*d_logits*/) {
    detail::require(d_scores.rows() == scores_.rows() && d_scores.cols() == num_experts_,
                    "RandomRouter: d_scores has shape ", d_scores.rows(), "x", d_scores.cols(), ", expected ",
                    scores_.rows(), "x", num_experts_);
    grad_input_.setZero(scores_.rows(), d_model_);
    return grad_input_;
  }

  bool renormalize() const { return true; }

  ParameterList<Scalar> named_parameters() { return {}; }

  GeneratorList named_generators() { return {{"generator", &generator_}}; }

 private:
  Index d_model_;
  Index num_experts_;
  Rng generator_;
  IndexVector order_;
  MatrixX<Scalar> scores_, logits_, grad_input_;
};

}  // namespace moe
