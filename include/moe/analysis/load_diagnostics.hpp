#pragma once
// How one forward of an MoE layer spread its tokens: the load per expert and how unequal it is, how sure
// the router was, what the capacity dropped, and how close each token came to another expert. The
// Trainer callback that logs these per layer and step is moe/train/load_diagnostics.hpp.

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "moe/analysis/load.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

/// Diagnostics of one routing of T tokens to K of N experts. Load counts assignments per expert, c_e, as
/// the router made them (before capacity drops), as MoELayer::batch_load() does; they sum to T K.
struct LoadDiagnostics {
  Index tokens = 0;  // T: the rows routed (with a padding mask, the unmasked ones)
  double load_min = 0;
  double load_median = 0;  // of the N counts; the mean of the middle two when N is even
  double load_max = 0;
  /// max_e c_e / mean_e c_e: 1 when balanced; equal to 1 + max_violation.
  double overload = 0;
  /// MaxVio (Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts"; also
  /// DeepSeek-V3): (max_e c_e - mean_e c_e) / mean_e c_e, by moe::max_violation; 0 when balanced.
  double max_violation = 0;
  /// Mean over tokens of the entropy of the router's distribution over the experts, in nats:
  /// (1/T) sum_t -sum_e p_te log p_te with p_te = s_te / sum_j s_tj the router's scores normalised per token
  /// (softmax scores as they are; sigmoid scores, DeepSeek-V3's affinities, divided by their sum). log N
  /// when the router cannot tell the experts apart, 0 when it puts everything on one.
  double score_entropy = 0;
  /// Entropy in nats of the load distribution c_e / sum_j c_j (moe::load_entropy): log N when balanced, 0
  /// when one expert takes every assignment. Low score entropy with high load entropy is a confident router
  /// that still spreads the tokens.
  double load_entropy = 0;
  /// Assignments the capacity dropped / the assignments (T K with top-K routing); 0 without a capacity.
  double dropped_fraction = 0;
  /// Mean over tokens of v_t(K-th chosen expert) - max of v_t over the experts not chosen, where v = score +
  /// selection bias is what top-K ranks (Wang et al. 2024's biased selection; the score alone without a
  /// bias). With plain top-K this is the gap between the K-th and the (K+1)-th selection value, >= 0; a
  /// small margin means small changes to the router move tokens between experts. With group-limited routing
  /// or a router that does not rank (RandomRouter) it may be negative. NaN when K = N (no expert is left) and
  /// for expert-choice routing, where tokens get different numbers of experts (no K-th choice to compare).
  double margin = 0;
};

namespace detail {

inline double median_of(const IndexVector& counts) {
  std::vector<Index> sorted(counts.data(), counts.data() + counts.size());
  std::sort(sorted.begin(), sorted.end());
  const std::size_t n = sorted.size();
  return n % 2 == 1 ? static_cast<double>(sorted[n / 2])
                    : (static_cast<double>(sorted[n / 2 - 1]) + static_cast<double>(sorted[n / 2])) / 2.0;
}

}  // namespace detail

/// The diagnostics of `routing` (its experts [T x K] and scores [T x N]), of which the capacity dropped
/// `dropped` assignments, selected on scores + `bias` (null: no bias; else 1 x N, the bias the selection
/// used, which an aux-loss-free balancer moves after each step). T = 0 gives NaN ratios and zero loads.
template <class Scalar>
LoadDiagnostics routing_diagnostics(const Routing<Scalar>& routing, Index dropped,
                                    const std::type_identity_t<MatrixX<Scalar>>* bias) {
  detail::require(routing.scores != nullptr, "routing_diagnostics: the routing has no scores (no forward yet?)");
  const MatrixX<Scalar>& scores = *routing.scores;
  const Index tokens = routing.tokens(), k = routing.k(), n = scores.cols();
  detail::require(scores.rows() == tokens, "routing_diagnostics: scores have ", scores.rows(), " rows, the routing ",
                  tokens, " tokens");
  detail::require(n > 0 && k >= 1 && k <= n, "routing_diagnostics: ", k, " experts per token of ", n);
  detail::require_bias_shape(bias, n, "routing_diagnostics");
  // Expert-choice routing leaves empty slots (-1): the assignments are what the experts took, not T K.
  const IndexVector counts = count_assignments(routing.experts, n);
  const Index assignments = counts.sum();
  const bool empty_slots = assignments < tokens * k;
  detail::require(dropped >= 0 && dropped <= assignments, "routing_diagnostics: ", dropped, " dropped of ",
                  assignments, " assignments");

  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  LoadDiagnostics d;
  d.tokens = tokens;
  d.load_min = static_cast<double>(counts.minCoeff());
  d.load_median = detail::median_of(counts);
  d.load_max = static_cast<double>(counts.maxCoeff());
  if (tokens == 0) {
    d.overload = d.max_violation = d.score_entropy = d.load_entropy = d.dropped_fraction = d.margin = nan;
    return d;
  }
  const double mean = static_cast<double>(assignments) / static_cast<double>(n);
  d.overload = d.load_max / mean;
  d.max_violation = max_violation(counts);
  d.load_entropy = load_entropy(counts);
  d.dropped_fraction = static_cast<double>(dropped) / static_cast<double>(assignments);

  double entropy_sum = 0, margin_sum = 0;
  std::vector<char> chosen(static_cast<std::size_t>(n));
  for (Index t = 0; t < tokens; ++t) {
    const double total = scores.row(t).template cast<double>().sum();
    for (Index e = 0; e < n; ++e) {
      const double p = static_cast<double>(scores(t, e)) / total;
      if (p > 0) entropy_sum -= p * std::log(p);
    }
    if (k == n || empty_slots) continue;
    // The selection value as top-K computed it: in Scalar, score + bias.
    const auto value = [&](Index e) {
      return static_cast<double>(bias ? Scalar(scores(t, e) + (*bias)(0, e)) : scores(t, e));
    };
    std::fill(chosen.begin(), chosen.end(), char{0});
    for (Index j = 0; j < k; ++j) chosen[static_cast<std::size_t>(routing.experts(t, j))] = 1;
    double best_other = -std::numeric_limits<double>::infinity();
    for (Index e = 0; e < n; ++e)
      if (!chosen[static_cast<std::size_t>(e)]) best_other = std::max(best_other, value(e));
    margin_sum += value(routing.experts(t, k - 1)) - best_other;
  }
  d.score_entropy = entropy_sum / static_cast<double>(tokens);
  d.margin = k == n || empty_slots ? nan : margin_sum / static_cast<double>(tokens);
  return d;
}

/// The diagnostics of `layer`'s last forward (an MoELayer, or anything with routing(), backend().dropped()
/// and balancer()), with the selection bias its balancer holds now: right for a forward taken since the
/// last update_balancing(). After the update (a Trainer's on_step_end) pass the bias of the forward to
/// routing_diagnostics, as LoadDiagnosticsLog does.
template <class Layer>
LoadDiagnostics load_diagnostics(Layer& layer) {
  using Scalar = typename Layer::Scalar;
  const MatrixX<Scalar>* bias = nullptr;
  if constexpr (requires { layer.balancer().selection_bias(); }) bias = layer.balancer().selection_bias();
  return routing_diagnostics(layer.routing(), layer.backend().dropped(), bias);
}

}  // namespace moe
