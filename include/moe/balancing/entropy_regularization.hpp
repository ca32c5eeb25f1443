#pragma once
// Entropy regularisation of the router: loss = -beta mean_t H(p_t), H(p) = -sum_i p_i log p_i over the
// normalised scores (0 log 0 = 0). Minimising it raises the entropy of each token's routing
// distribution, which keeps the router from collapsing onto a few experts early in training.

#include <cmath>

#include "moe/balancing/normalized_scores.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

template <class ScalarT = float>
class EntropyRegularization {
 public:
  using Scalar = ScalarT;

  struct Options {
    double beta = 1e-2;
  };

  EntropyRegularization(Index /*num_experts*/, const Options& options) : beta_(options.beta) {}

  /// loss = beta / T sum_t sum_i p_ti log p_ti; d loss / d p_ti = beta / T (log p_ti + 1), 0 where p_ti = 0.
  Scalar forward(const Routing<Scalar>& routing) {
    detail::require(routing.scores != nullptr, "EntropyRegularization: the routing has no scores");
    normalized_.forward(*routing.scores);
    const Scalar scale = static_cast<Scalar>(beta_ / static_cast<double>(routing.scores->rows()));
    Scalar loss = 0;
    for (Index t = 0; t < normalized_.value.rows(); ++t)
      for (Index i = 0; i < normalized_.value.cols(); ++i) {
        const Scalar p = normalized_.value(t, i);
        const Scalar log_p = p > Scalar(0) ? std::log(p) : Scalar(0);
        loss += scale * p * log_p;
        normalized_.grad(t, i) = p > Scalar(0) ? scale * (log_p + Scalar(1)) : Scalar(0);
      }
    return loss;
  }

  void backward(MatrixX<Scalar>& d_scores, MatrixX<Scalar>& /*d_logits*/) { normalized_.backward(d_scores); }

 private:
  double beta_;
  detail::NormalizedScores<Scalar> normalized_;
};

}  // namespace moe
