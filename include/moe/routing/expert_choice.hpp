#pragma once
// Expert-choice routing (Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing"): the token-to-expert
// scores S = softmax(x W^T) over the experts (the paper's S = Softmax(X W_g)), then each expert takes the C
// tokens with the highest scores in its column of S (TopK(S^T, C)); a token's gates are the scores of the
// experts that took it, not renormalised. C = capacity_factor T K / N (the paper's k = n c / e, with c = the
// capacity factor times K), rounded up, at least 1 and at most T. A token gets 0..N experts, and every expert
// exactly C tokens: balanced by construction.
//
// What follows from the expert choosing:
// - No balancer: the load is balanced by construction, so the aux losses have nothing to push toward and the
//   aux-loss-free bias nothing to correct. MoELayer accepts ExpertChoice with NoBalancing only (a compile
//   error otherwise), and with its own capacity_factor 0 (C is the router's).
// - Not for causal models: an expert's top-C over the batch depends on every token's score, the later
//   tokens of a sequence included, so whether token i is processed (and by which experts) depends on tokens
//   after i, and a next-token predictor trained this way sees the future through its routing. The decoder
//   blocks of moe/nn/transformer.hpp (causal attention) refuse it at compile time.
// - The batch is one routing problem: the same token may get other experts in another batch, at evaluation
//   as well as in training (the paper's own setting), and a backend that splits the batch over processes
//   (ExpertParallel) would choose within each process's share, so MoELayer refuses that combination.
// - Padding rows (MoELayer::forward(x, padding)) are never chosen: the layer routes the other rows only, and
//   C counts only them.
//
// Ties go to the lower token index; each expert's choice and each token's row are computed by one thread,
// so the routing has the same bits for any number of threads.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "moe/core/error.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/parameter.hpp"
#include "moe/routing/routing.hpp"
#include "moe/routing/softmax_top_k.hpp"

namespace moe {

/// Each expert's C best tokens by score, and each token's experts. scores is [T x N]; `chosen` becomes [N x C],
/// the tokens expert e took in row e, in token order; `experts` becomes [T x W] (W the most experts a token
/// got, at least 1): token t's experts best score first (ties to the lower expert index), then -1. Ties between
/// tokens go to the lower token index; a NaN score ranks below every number. `order` [N x T] and `count` [T]
/// are scratch that keeps its capacity.
template <class Scalar>
void select_by_expert_choice(const MatrixX<Scalar>& scores, Index capacity, IndexMatrix& order, IndexVector& count,
                             IndexMatrix& chosen, IndexMatrix& experts) {
  const Index tokens = scores.rows(), n = scores.cols();
  detail::require(capacity >= 0 && capacity <= tokens, "select_by_expert_choice: capacity must be in [0, ", tokens,
                  "] (the number of tokens), got ", capacity);
  order.resize(n, tokens);
  chosen.resize(n, capacity);
  parallel_for("select_by_expert_choice", n, [&](Index e) {
    auto key = [&](Index t) {
      const Scalar s = scores(t, e);
      return std::isnan(s) ? -std::numeric_limits<Scalar>::infinity() : s;
    };
    auto better = [&](Index a, Index b) { return key(a) > key(b) || (key(a) == key(b) && a < b); };
    Index* first = order.data() + e * tokens;
    std::iota(first, first + tokens, Index{0});
    if (capacity < tokens) std::nth_element(first, first + capacity, first + tokens, better);
    std::sort(first, first + capacity);
    for (Index i = 0; i < capacity; ++i) chosen(e, i) = first[i];
  });

  count.setZero(tokens);
  for (Index e = 0; e < n; ++e)
    for (Index i = 0; i < capacity; ++i) ++count(chosen(e, i));
  experts.setConstant(tokens, std::max<Index>(1, tokens > 0 ? count.maxCoeff() : 0), -1);
  count.setZero();
  for (Index e = 0; e < n; ++e)  // expert order: ties in score keep the lower expert first
    for (Index i = 0; i < capacity; ++i) {
      const Index t = chosen(e, i);
      experts(t, count(t)++) = e;
    }
  parallel_for("select_by_expert_choice", tokens, [&](Index t) {
    for (Index j = 1; j < count(t); ++j)  // insertion sort, stable: best score first
      for (Index i = j; i > 0 && scores(t, experts(t, i)) > scores(t, experts(t, i - 1)); --i)
        std::swap(experts(t, i), experts(t, i - 1));
  });
}

/// The expert-choice router: scores as SoftmaxTopK's (softmax(x W^T), parameters `weight` and optionally
/// `bias`), selection by select_by_expert_choice with C = min(T, expert_capacity(capacity_factor, T, K, N)).
/// The layer's K is the number of experts a token gets on average when capacity_factor is 1; the paper's
/// EC-CF2 (each token processed by 2 experts on average) is K = 1 with capacity_factor 2, or K = 2 with 1.
template <class ScalarT = float>
class ExpertChoice {
 public:
  using Scalar = ScalarT;
  static constexpr bool expert_choice = true;

  struct Options {
    double capacity_factor = 1.0;  // C = capacity_factor T K / N, rounded up
    bool bias = false;             // a bias in the router's linear map
  };

  /// The weight drawn from `init` (an Rng) as SoftmaxTopK draws it, or zero (ZeroInit).
  template <ParameterInit Init>
  ExpertChoice(Index d_model, Index num_experts, const Options& options, Init&& init)
      : capacity_factor_(validated(options).capacity_factor),
        scores_(d_model, num_experts, {.renormalize = false, .bias = options.bias}, init) {}

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) { return scores_.forward(x); }
  const MatrixX<Scalar>& logits() const { return scores_.logits(); }
  const MatrixX<Scalar>& backward(ConstRef<Scalar> d_scores, ConstRef<Scalar> d_logits) {
    return scores_.backward(d_scores, d_logits);
  }

  /// The tokens each expert takes from a batch of `tokens` rows: C above.
  Index capacity(Index tokens, Index k, Index num_experts) const {
    return std::min(tokens, expert_capacity(capacity_factor_, tokens, k, num_experts));
  }

  /// Each expert's top-C tokens; `experts` gets each token's experts, -1 in the empty slots. MoELayer passes
  /// no bias (ExpertChoice takes NoBalancing only).
  void select(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* bias, Index k, IndexMatrix& experts) {
    detail::require(bias == nullptr, "ExpertChoice: a selection bias was given; expert-choice routing is balanced by "
                    "construction and takes no balancer's bias");
    select_by_expert_choice(scores, capacity(scores.rows(), k, scores.cols()), order_, count_, chosen_, experts);
  }

  /// The tokens each expert took in the last select(), [N x C], each row in token order.
  const IndexMatrix& chosen_tokens() const { return chosen_; }

  /// The gates are the chosen scores as they are (Zhou et al. 2022, eq. 2).
  bool renormalize() const { return false; }
  double capacity_factor() const { return capacity_factor_; }

  ParameterList<Scalar> named_parameters() { return scores_.named_parameters(); }

 private:
  static const Options& validated(const Options& o) {
    detail::require(o.capacity_factor > 0.0 && std::isfinite(o.capacity_factor),
                    "ExpertChoice: capacity_factor must be positive and finite, got ", o.capacity_factor);
    return o;
  }

  double capacity_factor_;
  SoftmaxTopK<Scalar> scores_;  // the same scores, backward and parameters
  IndexMatrix order_, chosen_;
  IndexVector count_;
};

}  // namespace moe
