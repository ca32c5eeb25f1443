#pragma once
// What SoftmaxTopK (DeepSeek-V2) and SigmoidTopK (DeepSeek-V3) share: the routed scaling factor and
// group-limited top-K selection, checked and run in one place.

#include <cmath>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe::detail {

/// A router's routed_scaling_factor, n_group and topk_group (fields of its Options), checked against the
/// number of experts, and top-K selection within the topk_group best of n_group groups
/// (select_top_k_in_groups; plain select_top_k when n_group is 1). Keeps the selection's scratch.
template <class Scalar>
class GroupLimit {
 public:
  template <class Options>
  GroupLimit(const Options& o, Index num_experts, const char* router)
      : n_group_(o.n_group), topk_group_(o.topk_group) {
    require(o.routed_scaling_factor > 0.0 && std::isfinite(o.routed_scaling_factor), router,
            ": routed_scaling_factor must be positive and finite, got ", o.routed_scaling_factor);
    require(o.n_group >= 1 && num_experts % o.n_group == 0, router, ": n_group must divide num_experts = ",
            num_experts, ", got ", o.n_group);
    require(o.topk_group >= 1 && o.topk_group <= o.n_group, router, ": topk_group must be in [1, n_group = ",
            o.n_group, "], got ", o.topk_group);
  }

  /// Top-K on score + bias (bias may be null), within the topk_group best groups when n_group > 1.
  void select(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* bias, Index k, IndexMatrix& experts) {
    if (n_group_ == 1)
      select_top_k(scores, bias, k, experts);
    else
      select_top_k_in_groups(scores, bias, k, n_group_, topk_group_, group_scores_, chosen_groups_, experts);
  }

 private:
  Index n_group_, topk_group_;
  MatrixX<Scalar> group_scores_;
  IndexMatrix chosen_groups_;
};

}  // namespace moe::detail
