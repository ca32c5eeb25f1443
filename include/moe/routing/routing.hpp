#pragma once
// The Routing a router's scores turn into, top-K selection, and the gate gradient.
//
// Router contract (checked by moe::Router):
//   Router(Index d_model, Index num_experts, const Options&, Rng&);
//   const MatrixX<Scalar>& forward(ConstRef<Scalar> x);   // scores [T x N]: gates are read from them
//   const MatrixX<Scalar>& logits() const;                // [T x N]: what the scores are a function of
//   const MatrixX<Scalar>& backward(ConstRef<Scalar> d_scores, ConstRef<Scalar> d_logits);  // dx
//   bool renormalize() const;                             // gates divided by their sum over the K
//   ParameterList<Scalar> named_parameters();
// optional:
//   void select(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* bias, Index k, IndexMatrix& experts);
//        replaces top-K selection (RandomRouter, SigmoidTopK's group-limited routing, ExpertChoice)
//   static constexpr bool expert_choice = true;           // the experts choose the tokens (ExpertChoiceRouter)
//   double routed_scaling_factor() const;                 // gates multiplied by it after renormalisation
//   void train(bool on);

#include <algorithm>
#include <cmath>
#include <concepts>
#include <limits>
#include <type_traits>

#include "moe/core/error.hpp"
#include "moe/core/module.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe {

template <class R>
concept Router = requires { typename R::Scalar; typename R::Options; } &&
                 std::constructible_from<R, Index, Index, const typename R::Options&, Rng&> &&
                 HasForward<R> && HasNamedParameters<R> &&
                 requires(R r, const R cr, ConstRef<typename R::Scalar> d) {
                   { r.backward(d, d) } -> std::convertible_to<const MatrixX<typename R::Scalar>&>;
                   { cr.logits() } -> std::convertible_to<const MatrixX<typename R::Scalar>&>;
                   { cr.renormalize() } -> std::convertible_to<bool>;
                 };

/// A router whose experts choose their tokens (expert-choice routing, Zhou et al. 2022) instead of each token
/// choosing K experts: a token gets 0..N experts, so its rows of Routing::experts hold empty slots (-1).
template <class R>
concept ExpertChoiceRouter = requires {
  requires R::expert_choice;
};

/// A layer (an MoELayer) routed by an ExpertChoiceRouter: what causal models refuse (moe/nn/transformer.hpp).
template <class L>
concept ExpertChoiceLayer = requires { typename L::RouterType; } && ExpertChoiceRouter<typename L::RouterType>;

/// The processes one batch is spread over, each routing its own share of the tokens (expert parallelism,
/// backends/mpi): what balancers sum their statistics over, so that every process sees the global load and
/// takes the same balancing step. A backend spread over processes provides one; the layer does not know
/// how many there are.
class ReplicaGroup {
 public:
  virtual ~ReplicaGroup() = default;
  virtual Index size() const = 0;
  /// values[i] summed over the processes, in place: the same result on every one.
  virtual void sum(IndexVector& values) const = 0;
};

/// The rows of a batch that a token mask keeps (padding left out), in order.
struct MaskedRows {
  IndexVector rows;      // the batch row of each kept row
  Index batch_rows = 0;  // the rows of the batch, padding included
};

/// Where each token goes: experts [T x K] (best first), gates [T x K], and the router's scores and
/// logits [T x N] they came from. An expert of -1 is an empty slot (gate 0, not dispatched): expert-choice
/// routing gives a token 0..N experts, so K is the most any token got and the shorter rows end in -1. With a token mask the T rows are the batch's unmasked rows, and `masked`
/// says which; balancers that group rows into sequences read the batch layout from batch_row();
/// `replicas`, when not null, the processes whose tokens make up the batch together with these.
template <class Scalar>
struct Routing {
  IndexMatrix experts;
  MatrixX<Scalar> gates;
  const MatrixX<Scalar>* scores = nullptr;
  const MatrixX<Scalar>* logits = nullptr;
  const MaskedRows* masked = nullptr;  // null: every row of the batch is routed
  const ReplicaGroup* replicas = nullptr;

  Index tokens() const { return experts.rows(); }
  Index k() const { return experts.cols(); }
  Index num_experts() const { return scores->cols(); }
  Index batch_rows() const { return masked ? masked->batch_rows : tokens(); }
  Index batch_row(Index t) const { return masked ? masked->rows(t) : t; }
};

namespace detail {

/// row = the k largest value(e), e in [0, n), best first; ties go to the lower index.
template <class Value, class Row>
void top_k_row(Index n, Index k, const Value& value, Row&& row) {
  Index filled = 0;
  std::decay_t<decltype(value(Index{0}))> kth{};  // value(row(k - 1)) once the row is full: most entries fail this one comparison
  for (Index e = 0; e < n; ++e) {
    const auto v = value(e);
    if (filled == k && !(v > kth)) continue;  // strict: an equal later index loses
    Index pos = filled < k ? filled++ : k - 1;
    while (pos > 0 && v > value(row(pos - 1))) {
      row(pos) = row(pos - 1);
      --pos;
    }
    row(pos) = e;
    if (filled == k) kth = value(row(k - 1));
  }
}

template <class Scalar>
void require_bias_shape(const MatrixX<Scalar>* bias, Index n, const char* caller) {
  require(bias == nullptr || (bias->rows() == 1 && bias->cols() == n), caller, ": bias has shape ",
          bias ? bias->rows() : 0, "x", bias ? bias->cols() : 0, ", expected 1x", n);
}

}  // namespace detail

/// The k largest of scores + bias in each row, best first; ties go to the lower expert index.
/// `bias` is null or one row of N values.
template <class Scalar>
void select_top_k(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* bias, Index k, IndexMatrix& experts) {
  const Index n = scores.cols();
  detail::require(k >= 1 && k <= n, "select_top_k: k must be in [1, ", n, "] (the number of experts), got ", k);
  detail::require_bias_shape(bias, n, "select_top_k");
  experts.resize(scores.rows(), k);
  parallel_for(scores.rows(), [&](Index t) {
    auto value = [&](Index e) { return bias ? scores(t, e) + (*bias)(0, e) : scores(t, e); };
    detail::top_k_row(n, k, value, experts.row(t));
  });
}

/// Group-limited routing (DeepSeek-V2, DeepSeek-AI 2024; DeepSeek-V3's node-limited routing): the N experts
/// form `groups` groups of N / groups consecutive indices; a group's score is the sum of its two highest
/// selection values (score + bias) when there is a bias, else its highest score; each row chooses its
/// `top_groups` best groups (ties to the lower group) and then its k best experts among theirs, ties to the
/// lower index. The experts of the other groups are masked with -infinity, not 0: with 0 an excluded group
/// would win whenever the chosen groups' values are negative (sigmoid scores plus a negative bias).
/// `group_scores` [T x groups] and `chosen_groups` [T x top_groups] are scratch that keeps its capacity.
template <class Scalar>
void select_top_k_in_groups(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* bias, Index k, Index groups,
                            Index top_groups, MatrixX<Scalar>& group_scores, IndexMatrix& chosen_groups,
                            IndexMatrix& experts) {
  const Index n = scores.cols();
  detail::require(groups >= 1 && n % groups == 0, "select_top_k_in_groups: groups must divide the ", n,
                  " experts, got ", groups);
  const Index size = n / groups;
  detail::require(!bias || size >= 2, "select_top_k_in_groups: with a bias a group's score is the sum of its two "
                  "best values, so groups need at least 2 experts; ", groups, " groups of ", n, " have ", size);
  detail::require(top_groups >= 1 && top_groups <= groups, "select_top_k_in_groups: top_groups must be in [1, ",
                  groups, "] (the number of groups), got ", top_groups);
  detail::require(k >= 1 && k <= top_groups * size, "select_top_k_in_groups: k must be in [1, ", top_groups * size,
                  "] (top_groups ", top_groups, " x ", size, " experts per group), got ", k);
  detail::require_bias_shape(bias, n, "select_top_k_in_groups");
  group_scores.resize(scores.rows(), groups);
  chosen_groups.resize(scores.rows(), top_groups);
  experts.resize(scores.rows(), k);
  constexpr Scalar excluded = -std::numeric_limits<Scalar>::infinity();
  parallel_for(scores.rows(), [&](Index t) {
    auto value = [&](Index e) { return bias ? scores(t, e) + (*bias)(0, e) : scores(t, e); };
    for (Index g = 0; g < groups; ++g) {
      Scalar best = excluded, second = excluded;
      for (Index e = g * size; e < (g + 1) * size; ++e) {
        const Scalar v = value(e);
        if (v > best) {
          second = best;
          best = v;
        } else if (v > second) {
          second = v;
        }
      }
      group_scores(t, g) = bias ? best + second : best;
    }
    auto chosen = chosen_groups.row(t);
    detail::top_k_row(groups, top_groups, [&](Index g) { return group_scores(t, g); }, chosen);
    auto masked = [&](Index e) {
      for (Index i = 0; i < top_groups; ++i)
        if (chosen(i) == e / size) return value(e);
      return excluded;
    };
    detail::top_k_row(n, k, masked, experts.row(t));
  });
}

/// The most rows an expert takes from a batch of `tokens` rows routed to k of num_experts experts:
/// ceil(capacity_factor T K / N), at least 1 (Fedus et al. 2021); 0, meaning no limit, for capacity_factor 0.
/// Expert-choice routing gives each expert exactly this many (at most T).
inline Index expert_capacity(double capacity_factor, Index tokens, Index k, Index num_experts) {
  if (capacity_factor == 0.0) return 0;
  const double balanced = static_cast<double>(tokens * k) / static_cast<double>(num_experts);
  return std::max<Index>(1, static_cast<Index>(std::ceil(capacity_factor * balanced)));
}

/// The router's routed scaling factor (DeepSeek-V3's 2.5), 1 for routers without one.
template <class R>
double routed_scaling_factor(const R& router) {
  if constexpr (requires { router.routed_scaling_factor(); })
    return router.routed_scaling_factor();
  else
    return 1.0;
}

/// gates[t, j] = c scores[t, experts[t, j]], divided by the row's sum when `renormalize`; c is `scaling`,
/// DeepSeek-V3's routed scaling factor (1 elsewhere). An empty slot (-1) gets 0.
template <class Scalar>
void gather_gates(const MatrixX<Scalar>& scores, const IndexMatrix& experts, bool renormalize, double scaling,
                  MatrixX<Scalar>& gates) {
  gates.resize(experts.rows(), experts.cols());
  const auto c = static_cast<Scalar>(scaling);
  for (Index t = 0; t < experts.rows(); ++t) {
    for (Index j = 0; j < experts.cols(); ++j) gates(t, j) = experts(t, j) >= 0 ? scores(t, experts(t, j)) : Scalar(0);
    if (renormalize) gates.row(t) /= gates.row(t).sum();
    if (scaling != 1.0) gates.row(t) *= c;
  }
}

/// Adds the gradient of the gates with respect to the scores: d_scores += (d gates / d scores)^T d_gates.
/// With renormalisation g_j = c s_j / Z, so d s_j = (c d g_j - sum_i d g_i g_i) / Z; without, d s_j = c d g_j.
/// Empty slots (-1) have no score.
template <class Scalar>
void gates_backward(const MatrixX<Scalar>& scores, const IndexMatrix& experts, const MatrixX<Scalar>& gates,
                    bool renormalize, double scaling, const MatrixX<Scalar>& d_gates, MatrixX<Scalar>& d_scores) {
  const auto c = static_cast<Scalar>(scaling);
  for (Index t = 0; t < experts.rows(); ++t) {
    if (!renormalize) {
      for (Index j = 0; j < experts.cols(); ++j)
        if (experts(t, j) >= 0) d_scores(t, experts(t, j)) += c * d_gates(t, j);
      continue;
    }
    Scalar sum = 0;
    for (Index j = 0; j < experts.cols(); ++j)
      if (experts(t, j) >= 0) sum += scores(t, experts(t, j));
    const Scalar dot = d_gates.row(t).dot(gates.row(t));
    for (Index j = 0; j < experts.cols(); ++j)
      if (experts(t, j) >= 0) d_scores(t, experts(t, j)) += (c * d_gates(t, j) - dot) / sum;
  }
}

}  // namespace moe
