#pragma once
// ST-MoE's router z-loss (Zoph et al. 2022): loss = coef mean_t (logsumexp_i logits_ti)^2, which keeps
// the router's logits small and its softmax numerically stable.

#include <cmath>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"
#include "moe/nn/softmax.hpp"

namespace moe {

template <class ScalarT = float>
class RouterZLoss {
 public:
  using Scalar = ScalarT;

  struct Options {
    double coef = 1e-3;
  };

  RouterZLoss(Index /*num_experts*/, const Options& options) : coef_(options.coef) {}

  Scalar forward(const Routing<Scalar>& routing) {
    detail::require(routing.logits != nullptr, "RouterZLoss: the routing has no logits");
    const MatrixX<Scalar>& logits = *routing.logits;
    detail::softmax_rows(logits, probabilities_);
    // p_tm = exp(l_tm - lse_t) at the row's maximum m, where p_tm >= 1/N keeps the log accurate.
    log_sum_exp_.resize(logits.rows());
    for (Index t = 0; t < logits.rows(); ++t)
      log_sum_exp_(t) = logits.row(t).maxCoeff() - std::log(probabilities_.row(t).maxCoeff());
    return static_cast<Scalar>(coef_) * log_sum_exp_.squaredNorm() / static_cast<Scalar>(logits.rows());
  }

  /// d logits_t += coef 2 lse_t softmax(logits_t) / T.
  void backward(MatrixX<Scalar>& /*d_scores*/, MatrixX<Scalar>& d_logits) {
    const Scalar scale = static_cast<Scalar>(2 * coef_ / static_cast<double>(probabilities_.rows()));
    for (Index t = 0; t < probabilities_.rows(); ++t)
      d_logits.row(t) += (scale * log_sum_exp_(t)) * probabilities_.row(t);
  }

 private:
  double coef_;
  MatrixX<Scalar> probabilities_;
  VectorX<Scalar> log_sum_exp_;
};

}  // namespace moe
