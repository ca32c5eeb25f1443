#pragma once
// The CPU backend's parts: counting-sort dispatch, a gather into one contiguous block per expert (by the
// thread that runs it), and a combine that sums each token's K contributions in slot order (no atomics), so
// the result has the same bits for any number of threads.

#include <algorithm>
#include <cmath>
#include <vector>

#include "moe/backend.hpp"
#include "moe/core/error.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/types.hpp"

namespace moe::backends::cpu {

/// Where each (token, slot) assignment goes. Rows of expert e in the gathered buffer are
/// [offsets(e), offsets(e + 1)), in the order plan() kept them.
struct DispatchPlan {
  IndexVector offsets;  // N + 1
  IndexVector slot;     // per gathered row: t * K + j of the assignment it holds; T * K long, so that drops
                        // do not resize it: only the first rows() are used
  IndexMatrix position; // [T x K]: gathered row of each assignment, -1 if dropped by the capacity or empty
  IndexVector routed;   // assignments per expert before any capacity drop
  IndexVector cursor;   // scratch: next free row of each expert while the plan is built
  IndexVector largest_first;  // experts with rows, most rows first (ties by index): the order work is handed out
  Index dropped = 0;

  Index rows() const { return offsets(offsets.size() - 1); }
  Index count(Index expert) const { return offsets(expert + 1) - offsets(expert); }
};

/// Stable counting sort of the assignments by expert. With a capacity limit an expert keeps `limit`
/// assignments, chosen by the DropPolicy, and the rest are dropped (Fedus et al. 2021; Lepikhin et al. 2020);
/// each expert's rows are in the order its assignments were kept: token order, or with
/// DropPolicy::choice_order every first choice (in token order), then every second choice, and so on.
/// An empty slot (expert -1, expert-choice routing) is no assignment: not routed, not dropped.
inline void plan(const IndexMatrix& experts, Index num_experts, Capacity capacity, DispatchPlan& plan) {
  const Index tokens = experts.rows(), k = experts.cols();
  detail::require(capacity.limit >= 0, "plan: capacity limit must be >= 0 (0 keeps every assignment), got ",
                  capacity.limit);
  plan.routed.setZero(num_experts);
  for (Index t = 0; t < tokens; ++t)
    for (Index j = 0; j < k; ++j) {
      const Index e = experts(t, j);
      detail::require(e >= -1 && e < num_experts, "plan: expert index ", e, " at token ", t, ", expected [0, ",
                      num_experts, ") or -1 (an empty slot)");
      if (e >= 0) ++plan.routed(e);
    }
  plan.offsets.resize(num_experts + 1);
  plan.offsets(0) = 0;
  for (Index e = 0; e < num_experts; ++e) {
    const Index kept = capacity.limit > 0 ? std::min(plan.routed(e), capacity.limit) : plan.routed(e);
    plan.offsets(e + 1) = plan.offsets(e) + kept;
  }
  plan.dropped = plan.routed.sum() - plan.offsets(num_experts);
  plan.slot.resize(tokens * k);
  plan.position.resize(tokens, k);
  plan.cursor = plan.offsets.head(num_experts);
  auto assign = [&](Index t, Index j) {
    const Index e = experts(t, j);
    if (e < 0) {
      plan.position(t, j) = -1;
      return;
    }
    Index& next = plan.cursor(e);
    if (next == plan.offsets(e + 1)) {
      plan.position(t, j) = -1;
      return;
    }
    plan.position(t, j) = next;
    plan.slot(next++) = t * k + j;
  };
  if (capacity.policy == DropPolicy::token_order) {
    for (Index t = 0; t < tokens; ++t)
      for (Index j = 0; j < k; ++j) assign(t, j);
  } else {
    for (Index j = 0; j < k; ++j)
      for (Index t = 0; t < tokens; ++t) assign(t, j);
  }
  const Index busy = (plan.offsets.tail(num_experts) - plan.offsets.head(num_experts)).count();
  plan.largest_first.resize(busy);
  for (Index e = 0, i = 0; e < num_experts; ++e)
    if (plan.count(e) > 0) plan.largest_first(i++) = e;
  std::sort(plan.largest_first.begin(), plan.largest_first.end(), [&](Index a, Index b) {
    return plan.count(a) != plan.count(b) ? plan.count(a) > plan.count(b) : a < b;
  });
}

/// rows = x[token of each row of `expert`], in plan order: one expert's block (count(expert) x x.cols(),
/// sized by the caller), gathered by the thread that then runs the expert.
template <class Scalar>
void gather_expert(ConstRef<Scalar> x, const DispatchPlan& plan, Index expert, Eigen::Ref<MatrixX<Scalar>> rows) {
  const Index k = plan.position.cols(), first = plan.offsets(expert);
  detail::require(rows.rows() == plan.count(expert) && rows.cols() == x.cols(), "gather_expert: expert ", expert,
                  " has ", plan.count(expert), "x", x.cols(), " rows, the block is ", rows.rows(), "x", rows.cols());
  for (Index r = 0; r < rows.rows(); ++r) rows.row(r) = x.row(plan.slot(first + r) / k);
}

/// Where each expert's block of rows (outputs or input gradients) lies: row-major, `width` columns, its
/// rows in plan order. The blocks stay where the experts keep them, so nothing is copied into one buffer.
template <class Scalar>
using ExpertBlocks = std::vector<const Scalar*>;

/// The row of assignment (t, j) in blocks[e], e its expert: blocks[e] holds the rows expert e was given,
/// in plan order, so its row position(t, j) - offsets(e).
template <class Scalar>
auto expert_row(const ExpertBlocks<Scalar>& blocks, Index width, const IndexMatrix& experts, const DispatchPlan& plan,
                Index t, Index j) {
  const Index e = experts(t, j);
  return Eigen::Map<const RowVectorX<Scalar>>(
      blocks[static_cast<std::size_t>(e)] + (plan.position(t, j) - plan.offsets(e)) * width, width);
}

/// y[t] = sum over kept slots j, in order, of gates(t, j) * the output of assignment (t, j), read where
/// its expert left it (see expert_row), so the experts' outputs are not copied into one block first.
template <class Scalar>
void combine(const ExpertBlocks<Scalar>& outputs, const IndexMatrix& experts, const MatrixX<Scalar>& gates,
             const DispatchPlan& plan, Index width, MatrixX<Scalar>& y) {
  y.resize(plan.position.rows(), width);
  parallel_for(plan.position.rows(), [&](Index t) {
    y.row(t).setZero();
    for (Index j = 0; j < plan.position.cols(); ++j)
      if (plan.position(t, j) >= 0) y.row(t) += gates(t, j) * expert_row(outputs, width, experts, plan, t, j);
  });
}

/// For the rows of `expert`, whose forward output is `output`: d_rows[r] = gate of r's assignment *
/// dy[token of r] (the gradient the expert's output receives; rows [offsets(expert), offsets(expert + 1))
/// of d_rows) and d_gates(t, j) = dy[t] . output[r] (the gradient of that gate), reading dy[t] once for
/// both while the thread that runs the expert's backward next has them in cache. Each assignment has one
/// expert, so experts on different threads write different entries; a dropped slot's entry is untouched.
template <class Scalar>
void expert_output_grads(ConstRef<Scalar> dy, ConstRef<Scalar> output, const MatrixX<Scalar>& gates,
                         const DispatchPlan& plan, Index expert, Eigen::Ref<MatrixX<Scalar>> d_rows,
                         MatrixX<Scalar>& d_gates) {
  const Index k = plan.position.cols(), first = plan.offsets(expert);
  for (Index r = 0; r < plan.count(expert); ++r) {
    const Index s = plan.slot(first + r), t = s / k, j = s % k;
    d_gates(t, j) = dy.row(t).dot(output.row(r));
    d_rows.row(first + r) = gates(t, j) * dy.row(t);
  }
}

/// dx[t] = sum over kept slots j, in order, of the input gradient of assignment (t, j).
template <class Scalar>
void scatter(const ExpertBlocks<Scalar>& input_grads, const IndexMatrix& experts, const DispatchPlan& plan,
             Index width, MatrixX<Scalar>& dx) {
  dx.resize(plan.position.rows(), width);
  parallel_for(plan.position.rows(), [&](Index t) {
    dx.row(t).setZero();
    for (Index j = 0; j < plan.position.cols(); ++j)
      if (plan.position(t, j) >= 0) dx.row(t) += expert_row(input_grads, width, experts, plan, t, j);
  });
}

/// Runs body(e) for every expert with rows, experts spread over threads; each expert's work is
/// single-threaded, so its result does not depend on the thread count. Handing out the largest experts
/// first keeps a thread from being left with a big one at the end (LPT scheduling).
template <class Body>
void for_each_expert(const DispatchPlan& plan, Body&& body) {
  parallel_for(plan.largest_first.size(), [&](Index i) { body(plan.largest_first(i)); }, /*dynamic=*/true);
}

}  // namespace moe::backends::cpu
