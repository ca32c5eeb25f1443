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
//        replaces top-K selection (RandomRouter)
//   void train(bool on);

#include <concepts>

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

/// Where each token goes: experts [T x K] (best first), gates [T x K], and the router's scores and
/// logits [T x N] they came from; `replicas`, when not null, the processes whose tokens make up the batch
/// together with these.
template <class Scalar>
struct Routing {
  IndexMatrix experts;
  MatrixX<Scalar> gates;
  const MatrixX<Scalar>* scores = nullptr;
  const MatrixX<Scalar>* logits = nullptr;
  const ReplicaGroup* replicas = nullptr;

  Index tokens() const { return experts.rows(); }
  Index k() const { return experts.cols(); }
  Index num_experts() const { return scores->cols(); }
};

/// The k largest of scores + bias in each row, best first; ties go to the lower expert index.
/// `bias` is null or one row of N values.
template <class Scalar>
void select_top_k(const MatrixX<Scalar>& scores, const MatrixX<Scalar>* bias, Index k, IndexMatrix& experts) {
  const Index n = scores.cols();
  detail::require(k >= 1 && k <= n, "select_top_k: k must be in [1, ", n, "] (the number of experts), got ", k);
  detail::require(bias == nullptr || (bias->rows() == 1 && bias->cols() == n), "select_top_k: bias has shape ",
                  bias ? bias->rows() : 0, "x", bias ? bias->cols() : 0, ", expected 1x", n);
  experts.resize(scores.rows(), k);
  parallel_for(scores.rows(), [&](Index t) {
    auto value = [&](Index e) { return bias ? scores(t, e) + (*bias)(0, e) : scores(t, e); };
    auto row = experts.row(t);
    Index filled = 0;
    Scalar kth = 0;  // value(row(k - 1)) once the row is full: most experts fail this one comparison
    for (Index e = 0; e < n; ++e) {
      const Scalar v = value(e);
      if (filled == k && !(v > kth)) continue;  // strict: an equal later index loses
      Index pos = filled < k ? filled++ : k - 1;
      while (pos > 0 && v > value(row(pos - 1))) {
        row(pos) = row(pos - 1);
        --pos;
      }
      row(pos) = e;
      if (filled == k) kth = value(row(k - 1));
    }
  });
}

/// gates[t, j] = scores[t, experts[t, j]], divided by the row's sum when `renormalize`.
template <class Scalar>
void gather_gates(const MatrixX<Scalar>& scores, const IndexMatrix& experts, bool renormalize, MatrixX<Scalar>& gates) {
  gates.resize(experts.rows(), experts.cols());
  for (Index t = 0; t < experts.rows(); ++t) {
    for (Index j = 0; j < experts.cols(); ++j) gates(t, j) = scores(t, experts(t, j));
    if (renormalize) gates.row(t) /= gates.row(t).sum();
  }
}

/// Adds the gradient of the gates with respect to the scores: d_scores += (d gates / d scores)^T d_gates.
/// With renormalisation g_j = s_j / Z, so d s_j = (d g_j - sum_i d g_i g_i) / Z.
template <class Scalar>
void gates_backward(const MatrixX<Scalar>& scores, const IndexMatrix& experts, const MatrixX<Scalar>& gates,
                    bool renormalize, const MatrixX<Scalar>& d_gates, MatrixX<Scalar>& d_scores) {
  for (Index t = 0; t < experts.rows(); ++t) {
    if (!renormalize) {
      for (Index j = 0; j < experts.cols(); ++j) d_scores(t, experts(t, j)) += d_gates(t, j);
      continue;
    }
    Scalar sum = 0;
    for (Index j = 0; j < experts.cols(); ++j) sum += scores(t, experts(t, j));
    const Scalar dot = d_gates.row(t).dot(gates.row(t));
    for (Index j = 0; j < experts.cols(); ++j) d_scores(t, experts(t, j)) += (d_gates(t, j) - dot) / sum;
  }
}

}  // namespace moe
