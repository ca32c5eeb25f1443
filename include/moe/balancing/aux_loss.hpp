#pragma once
// Auxiliary load-balancing losses on the fraction of assignments and the mean score per expert:
// the Switch Transformer's over the batch (Fedus et al. 2021) and DeepSeek-V3's complementary
// sequence-wise one (DeepSeek-AI 2024), both  alpha N sum_i f_i P_i.

#include "moe/balancing/normalized_scores.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

namespace detail {

/// alpha N sum_i f_i P_i over each sequence of `length` consecutive rows, averaged over the sequences.
/// f_i: share of the sequence's L K assignments that went to expert i (a constant); P_i: mean over the
/// sequence of the normalised score p_ti. The loss is sum_t <w_s(t), p_t> with
/// w_si = alpha N c_si / (K L^2 S), c_si the assignments to i in sequence s, S the number of sequences.
///
/// With `whole_batch` (one sequence: the batch) over R replicas (routing.replicas), the batch is every
/// process's tokens together: c_i and L are summed over the processes, and each returns R times its share
/// of the sum, so that the mean over the processes (what data parallelism averages, losses and gradients
/// alike) is the loss of the whole batch. Sequences of a sequence-wise loss lie on one process each, so
/// their loss is local as it is.
template <class Scalar>
class BalanceLoss {
 public:
  Scalar forward(const Routing<Scalar>& routing, Index length, double alpha, bool whole_batch) {
    require(routing.scores != nullptr, "BalanceLoss: the routing has no scores");
    const MatrixX<Scalar>& scores = *routing.scores;
    const Index tokens = routing.tokens(), n = scores.cols(), k = routing.k();
    require(scores.rows() == tokens, "BalanceLoss: scores have ", scores.rows(), " rows, the routing has ", tokens,
            " tokens");
    const Index sequences = tokens / length;
    counts_.setZero(sequences * n + 1);  // c_si at s * n + i, then the number of tokens
    for (Index t = 0; t < tokens; ++t)
      for (Index j = 0; j < k; ++j) ++counts_(t / length * n + routing.experts(t, j));
    counts_(sequences * n) = tokens;
    double replicas = 1.0;
    if (whole_batch && routing.replicas != nullptr) {
      routing.replicas->sum(counts_);
      replicas = static_cast<double>(routing.replicas->size());
    }
    const double l = static_cast<double>(whole_batch ? counts_(sequences * n) : length);
    weights_ = Eigen::Map<const IndexMatrix>(counts_.data(), sequences, n).template cast<Scalar>();
    weights_ *= static_cast<Scalar>(alpha * static_cast<double>(n) * replicas /
                                    (static_cast<double>(k) * l * l * static_cast<double>(sequences)));

    normalized_.forward(scores);
    Scalar loss = 0;
    for (Index t = 0; t < tokens; ++t) {
      normalized_.grad.row(t) = weights_.row(t / length);
      loss += weights_.row(t / length).dot(normalized_.value.row(t));
    }
    return loss;
  }

  void backward(MatrixX<Scalar>& d_scores) const { normalized_.backward(d_scores); }

 private:
  IndexVector counts_;
  MatrixX<Scalar> weights_;  // w [S x N]
  NormalizedScores<Scalar> normalized_;
};

}  // namespace detail

/// Switch Transformer's aux loss (Fedus et al. 2021): alpha N sum_i f_i P_i over the batch; alpha when
/// the assignments are balanced, larger when the experts that get more tokens also score higher.
template <class ScalarT = float>
class SwitchAuxLoss {
 public:
  using Scalar = ScalarT;

  struct Options {
    double alpha = 1e-2;
  };

  SwitchAuxLoss(Index /*num_experts*/, const Options& options) : alpha_(options.alpha) {}

  Scalar forward(const Routing<Scalar>& routing) { return loss_.forward(routing, routing.tokens(), alpha_, true); }

  void backward(MatrixX<Scalar>& d_scores, MatrixX<Scalar>& /*d_logits*/) { loss_.backward(d_scores); }

 private:
  double alpha_;
  detail::BalanceLoss<Scalar> loss_;
};

/// DeepSeek-V3's complementary sequence-wise balance loss (DeepSeek-AI 2024): the same loss over each
/// sequence of `sequence_length` consecutive rows, averaged over the sequences.
template <class ScalarT = float>
class SequenceAuxLoss {
 public:
  using Scalar = ScalarT;

  struct Options {
    double alpha = 1e-4;
    Index sequence_length = 0;  // rows per sequence; must divide the number of rows
  };

  SequenceAuxLoss(Index /*num_experts*/, const Options& options)
      : alpha_(options.alpha), sequence_length_(options.sequence_length) {
    detail::require(sequence_length_ > 0, "SequenceAuxLoss: sequence_length must be positive, got ",
                    sequence_length_);
  }

  Scalar forward(const Routing<Scalar>& routing) {
    detail::require(routing.tokens() % sequence_length_ == 0, "SequenceAuxLoss: the batch has ", routing.tokens(),
                    " rows, expected a multiple of sequence_length ", sequence_length_);
    return loss_.forward(routing, sequence_length_, alpha_, false);
  }

  void backward(MatrixX<Scalar>& d_scores, MatrixX<Scalar>& /*d_logits*/) { loss_.backward(d_scores); }

 private:
  double alpha_;
  Index sequence_length_;
  detail::BalanceLoss<Scalar> loss_;
};

}  // namespace moe
