#pragma once
// Auxiliary load-balancing losses on the fraction of assignments and the mean score per expert:
// the Switch Transformer's over the batch (Fedus et al. 2021) and DeepSeek-V3's complementary
// sequence-wise one (DeepSeek-AI 2024), both  alpha N sum_i f_i P_i, over the rows a token mask keeps.

#include <algorithm>

#include "moe/balancing/normalized_scores.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

/// Which assignments f_i counts.
enum class LoadCount {
  dispatched,   // the experts the layer chose (with a selection bias and a group limit, if any)
  score_top_k,  // the top-K of the scores alone, without the bias or the group limit (DeepSeek-V3 eq. 18)
};

/// What f_i divides expert i's count of assignments c_i by, for K > 1.
enum class LoadFraction {
  of_assignments,  // c_i / (K T): sums to 1 over the experts (Megatron-Core)
  of_tokens,       // c_i / T: K times larger (Switch Transformer's definition; Hugging Face's Mixtral loss)
};

namespace detail {

/// alpha N sum_i f_i P_i over each sequence, averaged over the sequences that have routed rows. A sequence
/// is `length` consecutive rows of the batch (0: the whole batch); with a token mask (routing.masked) it
/// holds only its unmasked rows, L_s of them. f_i: c_si / (K L_s) or c_si / L_s (LoadFraction), c_si the
/// assignments to i that `count` counts (constants); P_i: mean over the sequence of the normalised score
/// p_ti. The loss is sum_t <w_s(t), p_t> with w_si = alpha N f_si / (L_s S), S the number of sequences.
///
/// The whole batch (length 0) spread over R replicas (routing.replicas) is every process's rows together:
/// c_i and L are summed over the processes, and each returns R times its share of the sum, so that the mean
/// over the processes (what data parallelism averages, losses and gradients alike) is the loss of the whole
/// batch. Sequences of a sequence-wise loss lie on one process each, so their loss is local as it is.
template <class Scalar>
class BalanceLoss {
 public:
  Scalar forward(const Routing<Scalar>& routing, Index length, double alpha, LoadCount count, LoadFraction fraction) {
    require(routing.scores != nullptr, "BalanceLoss: the routing has no scores");
    const MatrixX<Scalar>& scores = *routing.scores;
    const Index tokens = routing.tokens(), n = scores.cols(), k = routing.k();
    require(scores.rows() == tokens, "BalanceLoss: scores have ", scores.rows(), " rows, the routing has ", tokens,
            " tokens");
    const Index batch_rows = routing.batch_rows();
    const bool whole_batch = length == 0;
    if (whole_batch) length = std::max<Index>(batch_rows, 1);
    sequence_.resize(tokens);
    for (Index t = 0; t < tokens; ++t) sequence_(t) = routing.batch_row(t) / length;
    const IndexMatrix* counted = &routing.experts;
    if (count == LoadCount::score_top_k) {
      select_top_k(scores, static_cast<const MatrixX<Scalar>*>(nullptr), k, top_k_);
      counted = &top_k_;
    }
    const Index sequences = (batch_rows + length - 1) / length;
    counts_.setZero(sequences * n + sequences);  // c_si at s * n + i, then L_s at S * n + s
    for (Index t = 0; t < tokens; ++t) {
      ++counts_(sequences * n + sequence_(t));
      for (Index j = 0; j < k; ++j) ++counts_(sequence_(t) * n + (*counted)(t, j));
    }
    double replicas = 1.0;
    if (whole_batch && routing.replicas != nullptr) {
      routing.replicas->sum(counts_);
      replicas = static_cast<double>(routing.replicas->size());
    }
    weights_ = Eigen::Map<const IndexMatrix>(counts_.data(), sequences, n).template cast<Scalar>();
    const auto rows = counts_.tail(sequences);
    const Index present = (rows.array() > 0).count();
    const double assignments_per_row = fraction == LoadFraction::of_assignments ? static_cast<double>(k) : 1.0;
    for (Index s = 0; s < sequences; ++s)
      if (rows(s) > 0) {
        const double l = static_cast<double>(rows(s));
        weights_.row(s) *= static_cast<Scalar>(alpha * static_cast<double>(n) * replicas /
                                               (assignments_per_row * l * l * static_cast<double>(present)));
      }

    normalized_.forward(scores);
    Scalar loss = 0;
    for (Index t = 0; t < tokens; ++t) {
      normalized_.grad.row(t) = weights_.row(sequence_(t));
      loss += weights_.row(sequence_(t)).dot(normalized_.value.row(t));
    }
    return loss;
  }

  void backward(MatrixX<Scalar>& d_scores) const { normalized_.backward(d_scores); }

 private:
  IndexVector counts_;       // c [S x N] row-major, then L_s [S]
  MatrixX<Scalar> weights_;  // w [S x N]
  IndexVector sequence_;     // s(t) [T]
  IndexMatrix top_k_;        // the top-K of the scores, for LoadCount::score_top_k
  NormalizedScores<Scalar> normalized_;
};

}  // namespace detail

/// Switch Transformer's aux loss (Fedus et al. 2021): alpha N sum_i f_i P_i over the batch; alpha when
/// the assignments are balanced (with LoadFraction::of_assignments), larger when the experts that get more
/// tokens also score higher. For K > 1 the peers differ on f_i: Megatron-Core divides the counts by K T
/// (of_assignments, the default here, so the loss does not grow with K), Switch's definition and Hugging
/// Face's Mixtral loss by T (of_tokens: K times the value).
template <class ScalarT = float>
class SwitchAuxLoss {
 public:
  using Scalar = ScalarT;

  struct Options {
    double alpha = 1e-2;
    LoadFraction fraction = LoadFraction::of_assignments;
    LoadCount count = LoadCount::dispatched;  // Switch's f_i: the fraction of tokens dispatched to expert i
  };

  SwitchAuxLoss(Index /*num_experts*/, const Options& options) : options_(options) {}

  Scalar forward(const Routing<Scalar>& routing) {
    return loss_.forward(routing, 0, options_.alpha, options_.count, options_.fraction);
  }

  void backward(MatrixX<Scalar>& d_scores, MatrixX<Scalar>& /*d_logits*/) { loss_.backward(d_scores); }

  const Options& options() const { return options_; }

 private:
  Options options_;
  detail::BalanceLoss<Scalar> loss_;
};

/// DeepSeek-V3's complementary sequence-wise balance loss (DeepSeek-AI 2024, eqs. 17-20): the same loss over
/// each sequence of `sequence_length` consecutive rows, averaged over the sequences. Eq. 18 counts f_i over
/// TopK(s_t, K) of the scores alone, not over the experts chosen with the aux-loss-free bias (and the group
/// limit): LoadCount::score_top_k, the default, as Megatron-Core counts it (compute_routing_scores_for_aux_loss);
/// LoadCount::dispatched counts what the layer chose, as Megatron-Core did before and as this library did.
/// Hugging Face's DeepseekV3 computes no aux loss (it is inference code).
template <class ScalarT = float>
class SequenceAuxLoss {
 public:
  using Scalar = ScalarT;

  struct Options {
    double alpha = 1e-4;
    Index sequence_length = 0;  // rows per sequence; must divide the number of rows
    LoadCount count = LoadCount::score_top_k;
  };

  SequenceAuxLoss(Index /*num_experts*/, const Options& options) : options_(options) {
    detail::require(options_.sequence_length > 0, "SequenceAuxLoss: sequence_length must be positive, got ",
                    options_.sequence_length);
  }

  Scalar forward(const Routing<Scalar>& routing) {
    detail::require(routing.batch_rows() % options_.sequence_length == 0, "SequenceAuxLoss: the batch has ",
                    routing.batch_rows(), " rows, expected a multiple of sequence_length ", options_.sequence_length);
    return loss_.forward(routing, options_.sequence_length, options_.alpha, options_.count,
                         LoadFraction::of_assignments);
  }

  void backward(MatrixX<Scalar>& d_scores, MatrixX<Scalar>& /*d_logits*/) { loss_.backward(d_scores); }

  const Options& options() const { return options_; }

 private:
  Options options_;
  detail::BalanceLoss<Scalar> loss_;
};

}  // namespace moe
