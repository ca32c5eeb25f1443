#pragma once
// The MoE dispatch on a Thrust device: plan, gather, combine, the gradients of the combine, scatter, top-K
// selection and load statistics, written once for any device system (CUDA under nvcc, OpenMP or the
// sequential CPP system under a host compiler). The semantics are those of backends::Cpu (plan,
// gather_expert, combine, expert_output_grads, scatter) and of moe::select_top_k / moe::gather_gates.
//
// Every output element is written by one thread, and every sum runs in a fixed order inside that thread: no
// atomics, so the results are identical run to run and for any number of threads.
//
// Matrices are row-major arrays in device memory, given by raw pointers (thrust::raw_pointer_cast of a
// thrust::device_vector's data(), or memory from cudaMalloc). `policy` is the Thrust execution policy the
// work runs on: thrust::device, or thrust::cuda::par.on(stream) for a blocking stream (the few reads the
// plan makes on the host go through the default stream, which waits for blocking streams).

#include "backends/thrust/config.hpp"

#include <cstddef>
#include <limits>
#include <type_traits>
#include <vector>

#include <thrust/binary_search.h>
#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/gather.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/scan.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>
#include <thrust/transform.h>
#include <thrust/transform_reduce.h>

#include "moe/backend.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe::backends::device {

/// Where each (token, slot) assignment goes, in device memory; the device counterpart of
/// backends::DispatchPlan. Rows of expert e in the gathered buffer are [offsets[e], offsets[e + 1]), in
/// token order. IndexT is moe::Index by default, as the grouped GEMM's offsets; std::int32_t halves the
/// plan's memory traffic. A plan object can be reused: its buffers keep their capacity.
template <class IndexT = Index>
struct DevicePlan {
  static_assert(std::is_integral_v<IndexT> && std::is_signed_v<IndexT>,
                "DevicePlan<IndexT>: IndexT must be a signed integer type (std::int32_t or std::int64_t)");

  thrust::device_vector<IndexT> routed;    // [N]: assignments per expert before any capacity drop
  thrust::device_vector<IndexT> offsets;   // [N + 1]
  thrust::device_vector<IndexT> slot;      // [rows]: t * K + j of the assignment each gathered row holds
  thrust::device_vector<IndexT> position;  // [T * K]: gathered row of assignment (t, j), -1 if dropped or empty
  std::vector<IndexT> host_offsets;        // offsets, on the host: the row counts of the experts' GEMMs
  Index tokens = 0, k = 0, num_experts = 0, dropped = 0;

  Index rows() const { return static_cast<Index>(slot.size()); }
  Index count(Index expert) const {
    const auto e = static_cast<std::size_t>(expert);
    return static_cast<Index>(host_offsets[e + 1] - host_offsets[e]);
  }

  // Scratch of the sort: assignments ordered by expert, and where each expert's run starts in that order.
  thrust::device_vector<IndexT> sorted_experts, order, first_of;
};

namespace detail {

template <class T>
T* raw(thrust::device_vector<T>& vector) {
  return thrust::raw_pointer_cast(vector.data());
}
template <class T>
const T* raw(const thrust::device_vector<T>& vector) {
  return thrust::raw_pointer_cast(vector.data());
}

inline thrust::counting_iterator<Index> count_from(Index first) { return thrust::counting_iterator<Index>(first); }

/// The assignment with an invalid expert id that comes first, or `at` = the number of assignments when none.
template <class ExpertId>
struct InvalidExpert {
  Index at;
  ExpertId id;
};

template <class ExpertId>
struct FindInvalidExpert {
  const ExpertId* experts;
  Index num_experts, assignments;
  MOE_HOST_DEVICE InvalidExpert<ExpertId> operator()(Index i) const {
    const ExpertId e = experts[i];
    if (e >= -1 && static_cast<Index>(e) < num_experts) return {assignments, ExpertId(0)};
    return {i, e};
  }
};

template <class ExpertId>
struct FirstInvalidExpert {
  MOE_HOST_DEVICE InvalidExpert<ExpertId> operator()(const InvalidExpert<ExpertId>& a,
                                                     const InvalidExpert<ExpertId>& b) const {
    return a.at <= b.at ? a : b;
  }
};

/// The sort key of an expert id: the id, or num_experts for an empty slot (-1), whose run then comes last.
template <class ExpertId, class IndexT>
struct ToIndex {
  Index num_experts;
  MOE_HOST_DEVICE IndexT operator()(ExpertId e) const { return static_cast<IndexT>(e < 0 ? num_experts : e); }
};

/// The assignment t * k + j at position i of the choice-major order (every token's choice j before any
/// choice j + 1): j = i / tokens, t = i % tokens.
template <class IndexT>
struct ChoiceMajorAssignment {
  Index tokens, k;
  MOE_HOST_DEVICE IndexT operator()(Index i) const { return static_cast<IndexT>(i % tokens * k + i / tokens); }
};

/// The sort key (ToIndex) of an assignment's expert.
template <class ExpertId, class IndexT>
struct ExpertOf {
  const ExpertId* experts;
  Index num_experts;
  MOE_HOST_DEVICE IndexT operator()(IndexT assignment) const {
    return ToIndex<ExpertId, IndexT>{num_experts}(experts[assignment]);
  }
};

/// routed[e] = first_of[e + 1] - first_of[e]: the length of expert e's run in the sorted assignments.
template <class IndexT>
struct RunLength {
  const IndexT* first_of;
  MOE_HOST_DEVICE IndexT operator()(Index e) const { return first_of[e + 1] - first_of[e]; }
};

/// The rows an expert keeps: its first `capacity` assignments, or all with capacity 0.
template <class IndexT>
struct KeptRows {
  IndexT capacity;
  MOE_HOST_DEVICE IndexT operator()(IndexT routed) const {
    return capacity > 0 && routed > capacity ? capacity : routed;
  }
};

/// For the i-th assignment in expert order: its rank in its expert's run decides its row, or its drop; the
/// empty slots (key num_experts) get no row.
template <class IndexT>
struct AssignRow {
  const IndexT* sorted_experts;
  const IndexT* order;
  const IndexT* first_of;
  const IndexT* offsets;
  IndexT* slot;
  IndexT* position;
  Index num_experts;
  MOE_HOST_DEVICE void operator()(Index i) const {
    const IndexT e = sorted_experts[i], assignment = order[i];
    if (static_cast<Index>(e) == num_experts) {
      position[assignment] = -1;
      return;
    }
    const IndexT row = offsets[e] + (static_cast<IndexT>(i) - first_of[e]);
    if (row < offsets[e + 1]) {
      slot[row] = assignment;
      position[assignment] = row;
    } else {
      position[assignment] = -1;
    }
  }
};

/// Element i of the gathered rows comes from element source(i) of x.
template <class IndexT>
struct GatherSource {
  const IndexT* slot;
  Index k, width;
  MOE_HOST_DEVICE Index operator()(Index i) const {
    return static_cast<Index>(slot[i / width]) / k * width + i % width;
  }
};

/// Element (t, column) of the sum over token t's kept slots j, in slot order, of gates(t, j) * rows[position(t,
/// j)]: the combine; with no gates (null) each weight is 1: the scatter of input gradients.
template <class Scalar, class IndexT>
struct CombineElement {
  const Scalar* rows;
  const Scalar* gates;
  const IndexT* position;
  Index k, width;
  MOE_HOST_DEVICE Scalar operator()(Index i) const {
    const Index t = i / width, column = i % width;
    Scalar sum = 0;
    for (Index j = 0; j < k; ++j) {
      const IndexT row = position[t * k + j];
      if (row < 0) continue;
      const Scalar value = rows[static_cast<Index>(row) * width + column];
      sum += gates ? gates[t * k + j] * value : value;
    }
    return sum;
  }
};

/// d_rows[r] = gate of r's assignment * dy[token of r], element by element.
template <class Scalar, class IndexT>
struct OutputGradElement {
  const Scalar* dy;
  const Scalar* gates;
  const IndexT* slot;
  Index k, width;
  MOE_HOST_DEVICE Scalar operator()(Index i) const {
    const Index assignment = slot[i / width];
    return gates[assignment] * dy[assignment / k * width + i % width];
  }
};

/// d_gates(t, j) = dy[t] . out[row of (t, j)], 0 for a dropped assignment.
template <class Scalar, class IndexT>
struct GateGrad {
  const Scalar* dy;
  const Scalar* out;
  const IndexT* position;
  Index k, width;
  MOE_HOST_DEVICE Scalar operator()(Index assignment) const {
    const IndexT row = position[assignment];
    if (row < 0) return Scalar(0);
    const Scalar* dy_row = dy + assignment / k * width;
    const Scalar* out_row = out + static_cast<Index>(row) * width;
    Scalar dot = 0;
    for (Index column = 0; column < width; ++column) dot += dy_row[column] * out_row[column];
    return dot;
  }
};

/// One row of moe::select_top_k followed by moe::gather_gates, in the same order of operations.
template <class Scalar, class ExpertId>
struct SelectTopKRow {
  const Scalar* scores;
  const Scalar* bias;  // null or [N]
  Index num_experts, k;
  bool renormalize;
  ExpertId* experts;
  Scalar* gates;

  MOE_HOST_DEVICE Scalar value(Index t, Index e) const {
    return bias ? scores[t * num_experts + e] + bias[e] : scores[t * num_experts + e];
  }

  MOE_HOST_DEVICE void operator()(Index t) const {
    ExpertId* row = experts + t * k;
    Index filled = 0;
    Scalar kth = 0;  // value(row[k - 1]) once the row is full: most experts fail this one comparison
    for (Index e = 0; e < num_experts; ++e) {
      const Scalar v = value(t, e);
      if (filled == k && !(v > kth)) continue;  // strict: an equal later index loses
      Index pos = filled < k ? filled++ : k - 1;
      while (pos > 0 && v > value(t, row[pos - 1])) {
        row[pos] = row[pos - 1];
        --pos;
      }
      row[pos] = static_cast<ExpertId>(e);
      if (filled == k) kth = value(t, row[k - 1]);
    }
    Scalar* gate = gates + t * k;
    Scalar sum = 0;
    for (Index j = 0; j < k; ++j) {
      gate[j] = scores[t * num_experts + row[j]];
      sum += gate[j];
    }
    if (renormalize)
      for (Index j = 0; j < k; ++j) gate[j] /= sum;
  }
};

/// Element (s, e) of [S x N]: the assignments to expert e in sequence s.
template <class ExpertId, class IndexT>
struct SequenceExpertCount {
  const ExpertId* experts;
  Index k, num_experts, sequence_length;
  MOE_HOST_DEVICE IndexT operator()(Index i) const {
    const Index s = i / num_experts;
    const auto e = static_cast<ExpertId>(i % num_experts);
    IndexT count = 0;
    for (Index a = s * sequence_length * k; a < (s + 1) * sequence_length * k; ++a) count += experts[a] == e;
    return count;
  }
};

/// Element (s, e) of [S x N]: the sum of expert e's scores over the tokens of sequence s, in token order.
template <class Scalar>
struct SequenceScoreSum {
  const Scalar* scores;
  Index num_experts, sequence_length;
  MOE_HOST_DEVICE Scalar operator()(Index i) const {
    const Index s = i / num_experts, e = i % num_experts;
    Scalar sum = 0;
    for (Index t = s * sequence_length; t < (s + 1) * sequence_length; ++t) sum += scores[t * num_experts + e];
    return sum;
  }
};

inline void require_sequences(const char* where, Index tokens, Index sequence_length) {
  moe::detail::require(sequence_length > 0 && tokens % sequence_length == 0, where, ": sequence_length must be ",
                       "positive and divide the ", tokens, " tokens, got ", sequence_length);
}

}  // namespace detail

/// Builds `plan` from experts [tokens x k] (row-major, int32 or int64 ids in [0, num_experts), or -1 for an empty
/// slot, which is neither routed nor dropped: expert-choice routing): a stable sort
/// of the tokens * k assignments by expert, so each expert's rows are in token order (with
/// DropPolicy::choice_order: first choices in token order, then second choices, ...). With capacity > 0 an
/// expert keeps its first `capacity` assignments in that order and the rest are dropped (Fedus et al. 2021;
/// Lepikhin et al. 2020); capacity 0 keeps all. Ids are checked on the device; an invalid one is a moe::Error
/// naming it. The result is identical run to run, and the plan is backends::cpu::plan's.
template <class Policy, class ExpertId, class IndexT>
void plan(const Policy& policy, const ExpertId* experts, Index tokens, Index k, Index num_experts, Index capacity,
          DropPolicy drop_policy, DevicePlan<IndexT>& plan) {
  static_assert(std::is_integral_v<ExpertId>,
                "device::plan: expert ids must be integers (std::int32_t or std::int64_t)");
  moe::detail::require(tokens >= 0, "device::plan: tokens must be >= 0, got ", tokens);
  moe::detail::require(k >= 1, "device::plan: k must be >= 1, got ", k);
  moe::detail::require(num_experts >= 1, "device::plan: num_experts must be >= 1, got ", num_experts);
  moe::detail::require(capacity >= 0, "device::plan: capacity must be >= 0 (0 keeps every assignment), got ",
                       capacity);
  const Index assignments = tokens * k;
  moe::detail::require(assignments <= static_cast<Index>(std::numeric_limits<IndexT>::max()) &&
                           num_experts < static_cast<Index>(std::numeric_limits<IndexT>::max()),
                       "device::plan: ", assignments, " assignments and ", num_experts,
                       " experts, expected both to fit the plan's index type (at most ",
                       static_cast<Index>(std::numeric_limits<IndexT>::max()), ")");

  using Invalid = detail::InvalidExpert<ExpertId>;
  const Invalid invalid = thrust::transform_reduce(
      policy, detail::count_from(0), detail::count_from(assignments),
      detail::FindInvalidExpert<ExpertId>{experts, num_experts, assignments}, Invalid{assignments, ExpertId(0)},
      detail::FirstInvalidExpert<ExpertId>{});
  moe::detail::require(invalid.at == assignments, "device::plan: expert index ", invalid.id, " at token ",
                       invalid.at / k, ", slot ", invalid.at % k, ", expected [0, ", num_experts,
                       ") or -1 (an empty slot)");

  plan.tokens = tokens;
  plan.k = k;
  plan.num_experts = num_experts;
  plan.sorted_experts.resize(static_cast<std::size_t>(assignments));
  plan.order.resize(static_cast<std::size_t>(assignments));
  if (drop_policy == DropPolicy::token_order) {
    thrust::transform(policy, experts, experts + assignments, plan.sorted_experts.begin(),
                      detail::ToIndex<ExpertId, IndexT>{num_experts});
    thrust::sequence(policy, plan.order.begin(), plan.order.end());
  } else {
    thrust::transform(policy, detail::count_from(0), detail::count_from(assignments), plan.order.begin(),
                      detail::ChoiceMajorAssignment<IndexT>{tokens, k});
    thrust::transform(policy, plan.order.begin(), plan.order.end(), plan.sorted_experts.begin(),
                      detail::ExpertOf<ExpertId, IndexT>{experts, num_experts});
  }
  thrust::stable_sort_by_key(policy, plan.sorted_experts.begin(), plan.sorted_experts.end(), plan.order.begin());

  // first_of[e]: where expert e's run starts in the sorted order (first_of[N]: where the empty slots start).
  plan.first_of.resize(static_cast<std::size_t>(num_experts + 1));
  thrust::lower_bound(policy, plan.sorted_experts.begin(), plan.sorted_experts.end(),
                      thrust::counting_iterator<IndexT>(0),
                      thrust::counting_iterator<IndexT>(static_cast<IndexT>(num_experts + 1)), plan.first_of.begin());
  plan.routed.resize(static_cast<std::size_t>(num_experts));
  thrust::transform(policy, detail::count_from(0), detail::count_from(num_experts), plan.routed.begin(),
                    detail::RunLength<IndexT>{detail::raw(plan.first_of)});

  plan.offsets.resize(static_cast<std::size_t>(num_experts + 1));
  thrust::fill_n(policy, plan.offsets.begin(), 1, IndexT(0));
  // A capacity above the number of assignments drops nothing, and then fits IndexT.
  const detail::KeptRows<IndexT> kept{static_cast<IndexT>(capacity < assignments ? capacity : assignments)};
  thrust::inclusive_scan(policy, thrust::make_transform_iterator(plan.routed.begin(), kept),
                         thrust::make_transform_iterator(plan.routed.end(), kept), plan.offsets.begin() + 1);
  plan.host_offsets.resize(static_cast<std::size_t>(num_experts + 1));
  thrust::copy(plan.offsets.begin(), plan.offsets.end(), plan.host_offsets.begin());
  const Index rows = static_cast<Index>(plan.host_offsets.back());
  plan.dropped = static_cast<Index>(plan.first_of[static_cast<std::size_t>(num_experts)]) - rows;

  plan.slot.resize(static_cast<std::size_t>(rows));
  plan.position.resize(static_cast<std::size_t>(assignments));
  thrust::for_each(policy, detail::count_from(0), detail::count_from(assignments),
                   detail::AssignRow<IndexT>{detail::raw(plan.sorted_experts), detail::raw(plan.order),
                                             detail::raw(plan.first_of), detail::raw(plan.offsets),
                                             detail::raw(plan.slot), detail::raw(plan.position), num_experts});
}

/// rows[r] = x[token of row r], for every row of the plan: x is [tokens x width], rows [plan.rows() x width].
template <class Policy, class Scalar, class IndexT>
void gather(const Policy& policy, const Scalar* x, Index width, const DevicePlan<IndexT>& plan, Scalar* rows) {
  const auto source = thrust::make_transform_iterator(
      detail::count_from(0), detail::GatherSource<IndexT>{detail::raw(plan.slot), plan.k, width});
  thrust::gather(policy, source, source + plan.rows() * width, x, rows);
}

/// y[t] = sum over the kept slots j of token t, in slot order, of gates(t, j) * out[position(t, j)]: out is the
/// experts' outputs [plan.rows() x width] in plan order, gates [tokens x k], y [tokens x width]. One thread
/// per element sums its k terms in order, so y is identical run to run.
template <class Policy, class Scalar, class IndexT>
void combine(const Policy& policy, const Scalar* out, const Scalar* gates, Index width, const DevicePlan<IndexT>& plan,
             Scalar* y) {
  thrust::transform(policy, detail::count_from(0), detail::count_from(plan.tokens * width), y,
                    detail::CombineElement<Scalar, IndexT>{out, gates, detail::raw(plan.position), plan.k, width});
}

/// The backward of combine, given dy [tokens x width] and the experts' outputs out [plan.rows() x width]:
/// d_rows[r] = gates(t, j) * dy[t] for each gathered row r holding assignment (t, j) (the gradient of the
/// experts' outputs, [plan.rows() x width]), and d_gates(t, j) = dy[t] . out[position(t, j)] ([tokens x k],
/// 0 for a dropped assignment). Each dot product runs in column order in one thread: identical run to run.
template <class Policy, class Scalar, class IndexT>
void expert_output_grads(const Policy& policy, const Scalar* dy, const Scalar* out, const Scalar* gates, Index width,
                         const DevicePlan<IndexT>& plan, Scalar* d_rows, Scalar* d_gates) {
  thrust::transform(policy, detail::count_from(0), detail::count_from(plan.rows() * width), d_rows,
                    detail::OutputGradElement<Scalar, IndexT>{dy, gates, detail::raw(plan.slot), plan.k, width});
  thrust::transform(policy, detail::count_from(0), detail::count_from(plan.tokens * plan.k), d_gates,
                    detail::GateGrad<Scalar, IndexT>{dy, out, detail::raw(plan.position), plan.k, width});
}

/// dx[t] = sum over the kept slots j of token t, in slot order, of input_grads[position(t, j)]: input_grads is
/// the experts' input gradients [plan.rows() x width] in plan order, dx [tokens x width]. Identical run to run.
template <class Policy, class Scalar, class IndexT>
void scatter(const Policy& policy, const Scalar* input_grads, Index width, const DevicePlan<IndexT>& plan,
             Scalar* dx) {
  thrust::transform(policy, detail::count_from(0), detail::count_from(plan.tokens * width), dx,
                    detail::CombineElement<Scalar, IndexT>{input_grads, nullptr, detail::raw(plan.position), plan.k,
                                                           width});
}

/// moe::select_top_k and moe::gather_gates on the device: per row of scores [tokens x num_experts], experts
/// [tokens x k] gets the k largest of scores + bias, best first, ties to the lower expert index (bias is null
/// or [num_experts]); gates [tokens x k] gets the scores (without bias) at those experts, divided by their sum
/// when `renormalize`. One thread per row, in the CPU's order of operations.
template <class Policy, class Scalar, class ExpertId>
void select_top_k(const Policy& policy, const Scalar* scores, const Scalar* bias, Index tokens, Index num_experts,
                  Index k, bool renormalize, ExpertId* experts, Scalar* gates) {
  moe::detail::require(k >= 1 && k <= num_experts, "device::select_top_k: k must be in [1, ", num_experts,
                       "] (the number of experts), got ", k);
  thrust::for_each(policy, detail::count_from(0), detail::count_from(tokens),
                   detail::SelectTopKRow<Scalar, ExpertId>{scores, bias, num_experts, k, renormalize, experts, gates});
}

/// Load statistics per sequence of `sequence_length` consecutive tokens (sequence_length = tokens for the
/// whole batch, as the Switch loss counts; shorter for the sequence-wise loss): counts [S x num_experts] gets
/// the assignments of experts [tokens x k] to each expert in each sequence, before any capacity drop (over
/// the whole batch, what plan.routed holds). One thread per entry counts in order: identical run to run.
template <class Policy, class ExpertId, class IndexT>
void expert_counts(const Policy& policy, const ExpertId* experts, Index tokens, Index k, Index num_experts,
                   Index sequence_length, IndexT* counts) {
  detail::require_sequences("device::expert_counts", tokens, sequence_length);
  thrust::transform(policy, detail::count_from(0), detail::count_from(tokens / sequence_length * num_experts),
                    counts,
                    detail::SequenceExpertCount<ExpertId, IndexT>{experts, k, num_experts, sequence_length});
}

/// sums [S x num_experts] gets, per sequence of `sequence_length` consecutive tokens, the sum of each expert's
/// scores [tokens x num_experts] over the sequence's tokens, in token order: identical run to run. The balance
/// losses take the mean of normalised scores p_t = s_t / sum_e s_te: pass those where scores are not softmax.
template <class Policy, class Scalar>
void expert_score_sums(const Policy& policy, const Scalar* scores, Index tokens, Index num_experts,
                       Index sequence_length, Scalar* sums) {
  detail::require_sequences("device::expert_score_sums", tokens, sequence_length);
  thrust::transform(policy, detail::count_from(0), detail::count_from(tokens / sequence_length * num_experts), sums,
                    detail::SequenceScoreSum<Scalar>{scores, num_experts, sequence_length});
}

}  // namespace moe::backends::device
