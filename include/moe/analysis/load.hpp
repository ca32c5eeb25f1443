#pragma once
// Expert load figures from counts of assignments per expert.

#include <cmath>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// load_i / (T K / N): 1 everywhere when balanced. `tokens` T, `k` K, counts has N entries summing to T K
/// (less what a capacity dropped).
inline Eigen::VectorXd relative_load(const IndexVector& counts, Index tokens, Index k) {
  detail::require(counts.size() > 0, "relative_load: no experts");
  detail::require(tokens > 0 && k > 0, "relative_load: tokens and k must be positive, got ", tokens, " and ", k);
  const double balanced = static_cast<double>(tokens) * static_cast<double>(k) / static_cast<double>(counts.size());
  return counts.cast<double>() / balanced;
}

/// MaxVio (DeepSeek-V3, Wang et al. 2024): (max load - mean load) / mean load; 0 when balanced.
inline double max_violation(const IndexVector& counts) {
  detail::require(counts.size() > 0, "max_violation: no experts");
  const double mean = counts.cast<double>().mean();
  if (mean == 0.0) return 0.0;
  return (static_cast<double>(counts.maxCoeff()) - mean) / mean;
}

/// Entropy in nats of the share of assignments each expert got: log N when balanced, 0 when one expert
/// takes everything.
inline double load_entropy(const IndexVector& counts) {
  detail::require(counts.size() > 0, "load_entropy: no experts");
  const double total = static_cast<double>(counts.sum());
  if (total == 0.0) return 0.0;
  double entropy = 0.0;
  for (Index i = 0; i < counts.size(); ++i) {
    if (counts(i) == 0) continue;
    const double p = static_cast<double>(counts(i)) / total;
    entropy -= p * std::log(p);
  }
  return entropy;
}

/// Assignments per expert in a [T x K] table of expert indices; slots holding -1 (dropped) are skipped.
inline IndexVector count_assignments(const IndexMatrix& experts, Index num_experts) {
  IndexVector counts = IndexVector::Zero(num_experts);
  for (Index t = 0; t < experts.rows(); ++t)
    for (Index j = 0; j < experts.cols(); ++j) {
      const Index e = experts(t, j);
      if (e < 0) continue;
      detail::require(e < num_experts, "count_assignments: expert index ", e, " at row ", t, ", expected < ",
                      num_experts);
      ++counts(e);
    }
  return counts;
}

}  // namespace moe
