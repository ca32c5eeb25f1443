#pragma once
// Routing statistics of a dense MoE layer over padded sequences: how much weight each sample and each group of
// samples (a domain) gives each expert, counting real tokens only, and which expert weighs most for each token.
// The analyses of seeds/003 (methods 1 and 3): "for each sample, the average routing weights assigned to each
// expert (excluding padding tokens)", per-domain expert usage, and the share of a domain's tokens whose top
// expert is a given one (the "matching expert").
//
// `weights` are the per-token routing weights over all N experts, [batch * seq_len x N] laid out as the
// SequenceLayout says (MoELayer::routing().scores of a layer with k = N). Padding rows are skipped wherever
// they appear. A sample that is all padding has no mean and is an error.

#include <cstddef>
#include <span>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/nn/attention.hpp"

namespace moe {

/// What token_top_experts gives a padding token.
inline constexpr Index no_expert = -1;

namespace detail {

template <class Scalar>
void check_routing_shape(const MatrixX<Scalar>& weights, const SequenceLayout& layout, const char* context) {
  require(weights.rows() == layout.tokens(), context, ": weights have ", weights.rows(),
          " rows, the layout has batch * seq_len = ", layout.batch(), " * ", layout.seq_len(), " = ", layout.tokens());
  require(weights.cols() > 0, context, ": weights have no experts (0 columns)");
}

}  // namespace detail

/// [batch x N]: row b is the mean of the weights of sample b's non-padding tokens. Summed in token order.
template <class Scalar>
MatrixX<double> sample_routing_weights(const MatrixX<Scalar>& weights, const SequenceLayout& layout) {
  detail::check_routing_shape(weights, layout, "sample_routing_weights");
  MatrixX<double> means = MatrixX<double>::Zero(layout.batch(), weights.cols());
  for (Index b = 0; b < layout.batch(); ++b) {
    Index tokens = 0;
    for (Index i = 0; i < layout.seq_len(); ++i) {
      if (layout.is_padding(b, i)) continue;
      means.row(b) += weights.row(b * layout.seq_len() + i).template cast<double>();
      ++tokens;
    }
    detail::require(tokens > 0, "sample_routing_weights: sample ", b, " is all padding (", layout.seq_len(),
                    " positions): it has no token to average over");
    means.row(b) /= static_cast<double>(tokens);
  }
  return means;
}

/// [batch * seq_len]: the expert with the largest weight for each token (ties: the lowest index), no_expert (-1)
/// at padding.
template <class Scalar>
IndexVector token_top_experts(const MatrixX<Scalar>& weights, const SequenceLayout& layout) {
  detail::check_routing_shape(weights, layout, "token_top_experts");
  IndexVector top = IndexVector::Constant(weights.rows(), no_expert);
  for (Index b = 0; b < layout.batch(); ++b)
    for (Index i = 0; i < layout.seq_len(); ++i) {
      if (layout.is_padding(b, i)) continue;
      const Index t = b * layout.seq_len() + i;
      Index best = 0;
      for (Index e = 1; e < weights.cols(); ++e)
        if (weights(t, e) > weights(t, best)) best = e;
      top(t) = best;
    }
  return top;
}

/// Expert usage per group of samples (a domain), accumulated batch by batch:
///   mean_weights()(g, e): the mean over group g's samples of sample_routing_weights(...)(b, e);
///   top_share()(g, e):    the fraction of group g's non-padding tokens whose top expert is e.
/// Each row sums to 1. Sums run in the order samples were added, so results do not depend on threads.
class GroupRouting {
 public:
  GroupRouting(Index num_groups, Index num_experts)
      : weight_sums_(MatrixX<double>::Zero(num_groups, num_experts)),
        top_counts_(IndexMatrix::Zero(num_groups, num_experts)),
        samples_(IndexVector::Zero(num_groups)),
        tokens_(IndexVector::Zero(num_groups)) {
    detail::require(num_groups > 0, "GroupRouting: num_groups must be positive, got ", num_groups);
    detail::require(num_experts > 0, "GroupRouting: num_experts must be positive, got ", num_experts);
  }

  Index num_groups() const { return weight_sums_.rows(); }
  Index num_experts() const { return weight_sums_.cols(); }

  /// Adds one batch: groups[b] is sample b's group. Everything is checked before anything is added.
  template <class Scalar>
  void add(const MatrixX<Scalar>& weights, const SequenceLayout& layout, std::span<const Index> groups) {
    detail::require(weights.cols() == num_experts(), "GroupRouting: weights have ", weights.cols(),
                    " experts (columns), expected ", num_experts());
    detail::require(static_cast<Index>(groups.size()) == layout.batch(), "GroupRouting: got ", groups.size(),
                    " groups for a batch of ", layout.batch(), " samples");
    for (std::size_t b = 0; b < groups.size(); ++b)
      detail::require(groups[b] >= 0 && groups[b] < num_groups(), "GroupRouting: sample ", b, " has group ", groups[b],
                      ", expected [0, ", num_groups(), ")");
    const MatrixX<double> means = sample_routing_weights(weights, layout);
    const IndexVector top = token_top_experts(weights, layout);
    for (Index b = 0; b < layout.batch(); ++b) {
      const Index g = groups[static_cast<std::size_t>(b)];
      weight_sums_.row(g) += means.row(b);
      ++samples_(g);
      for (Index i = 0; i < layout.seq_len(); ++i) {
        const Index expert = top(b * layout.seq_len() + i);
        if (expert == no_expert) continue;
        ++top_counts_(g, expert);
        ++tokens_(g);
      }
    }
  }

  /// [groups x N]; a group without samples is an error.
  MatrixX<double> mean_weights() const {
    require_samples("mean_weights");
    return weight_sums_.array().colwise() / samples_.cast<double>().array();
  }

  /// [groups x N]; a group without samples is an error.
  MatrixX<double> top_share() const {
    require_samples("top_share");
    return top_counts_.cast<double>().array().colwise() / tokens_.cast<double>().array();
  }

  /// Samples and non-padding tokens added per group.
  const IndexVector& samples() const { return samples_; }
  const IndexVector& tokens() const { return tokens_; }
  /// Non-padding tokens per group and top expert.
  const IndexMatrix& top_counts() const { return top_counts_; }

 private:
  void require_samples(const char* what) const {
    for (Index g = 0; g < num_groups(); ++g)
      detail::require(samples_(g) > 0, "GroupRouting::", what, ": group ", g, " has no samples");
  }

  MatrixX<double> weight_sums_;  // sums of the per-sample means
  IndexMatrix top_counts_;
  IndexVector samples_, tokens_;
};

}  // namespace moe
