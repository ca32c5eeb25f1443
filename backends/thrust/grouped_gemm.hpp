#pragma once
// The products of a stacked expert bank, every expert in one call: forward Y_e = X_e W_e^T + b_e, input
// gradient dX_e = dY_e W_e, parameter gradients dW_e += dY_e^T X_e and db_e += the column sums of dY_e, for
// every expert e with rows of a gathered block. Under nvcc the products run on cuBLAS
// (backends/cuda/cublas.hpp); under a host device system (OpenMP, CPP) on Eigen, experts spread over OpenMP
// threads and each expert's product on one thread. Bias and column sums are Thrust algorithms shared by
// both, each output element summed in a fixed order by one thread (no atomics): for fixed inputs the bits
// are the same run to run and for any number of threads.
//
// Matrices are row-major arrays in device memory given by raw pointers; a stack's expert e is the e-th
// [out x in] block of its weight and the e-th row of its bias, PyTorch's layout per expert.

#include "backends/thrust/config.hpp"

#include <concepts>
#include <cstddef>
#include <ranges>
#include <vector>

#include <thrust/device_vector.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
#include <thrust/system/cuda/execution_policy.h>

#include "backends/cuda/cublas.hpp"
#else
#include <thrust/copy.h>
#include <thrust/execution_policy.h>

#include "moe/core/parallel.hpp"
#if defined(EIGEN_HAS_OPENMP)
// Each expert's product runs on one thread, so that its bits do not depend on the thread count.
#error "backends/thrust/grouped_gemm.hpp needs EIGEN_DONT_PARALLELIZE (moe::moe defines it)"
#endif
#endif

namespace moe::backends::device {

/// One stacked Linear of an expert bank, in device memory: weight [N x out x in], bias [N x out] (null when
/// the Linear has none), and their accumulated gradients of the same shapes.
template <class Scalar>
struct LinearStack {
  Index in_features = 0;
  Index out_features = 0;
  const Scalar* weight = nullptr;
  const Scalar* bias = nullptr;
  Scalar* weight_grad = nullptr;
  Scalar* bias_grad = nullptr;
};

namespace detail {

/// The expert that owns gathered row `row`: the e with offsets[e] <= row < offsets[e + 1].
MOE_HOST_DEVICE inline Index expert_of_row(const Index* offsets, Index num_experts, Index row) {
  Index low = 0, high = num_experts;  // offsets[low] <= row < offsets[high]
  while (high - low > 1) {
    const Index middle = (low + high) / 2;
    if (offsets[middle] <= row) {
      low = middle;
    } else {
      high = middle;
    }
  }
  return low;
}

/// y[r, j] += bias[e, j] for the expert e of row r.
template <class Scalar>
struct AddExpertBias {
  const Index* offsets;
  Index num_experts, width;
  const Scalar* bias;
  Scalar* y;
  MOE_HOST_DEVICE void operator()(Index i) const {
    const Index e = expert_of_row(offsets, num_experts, i / width);
    y[i] += bias[e * width + i % width];
  }
};

/// bias_grad[e, j] += the sum of dy[r, j] over expert e's rows, in row order.
template <class Scalar>
struct AccumulateColumnSums {
  const Index* offsets;
  Index width;
  const Scalar* dy;
  Scalar* bias_grad;
  MOE_HOST_DEVICE void operator()(Index i) const {
    const Index e = i / width, column = i % width;
    Scalar sum = 0;
    for (Index r = offsets[e]; r < offsets[e + 1]; ++r) sum += dy[r * width + column];
    bias_grad[i] += sum;
  }
};

}  // namespace detail

/// The grouped products of expert banks on one gathered block of rows. It holds the rows each expert owns
/// (set by the bank's forward, used again by its backward) and, under nvcc, the stream and cuBLAS handle that
/// all of a bank's work runs on.
template <class ScalarT>
class GroupedGemm {
 public:
  using Scalar = ScalarT;

  /// Expert e owns rows [offsets[e], offsets[e + 1]) of the blocks given to the products below. The
  /// offsets are host values (they size the GEMMs), also copied to the device for the bias and column-sum
  /// kernels.
  template <std::ranges::contiguous_range Offsets>
  requires std::integral<std::ranges::range_value_t<Offsets>>
  void set_rows(const Offsets& offsets) {
    const auto* values = std::ranges::data(offsets);
    const auto count = static_cast<Index>(std::ranges::size(offsets));
    moe::detail::require(count >= 2, "GroupedGemm: offsets need num_experts + 1 >= 2 values, got ", count);
    moe::detail::require(values[0] == 0, "GroupedGemm: offsets[0] must be 0, got ", values[0]);
    for (Index e = 1; e < count; ++e)
      moe::detail::require(values[e] >= values[e - 1], "GroupedGemm: offsets must not decrease, offsets[", e,
                           "] = ", values[e], " after ", values[e - 1]);
    host_offsets_.assign(values, values + count);
    device_offsets_.resize(host_offsets_.size());
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
    blas_.upload(thrust::raw_pointer_cast(device_offsets_.data()), host_offsets_.data(), host_offsets_.size());
#else
    thrust::copy(host_offsets_.begin(), host_offsets_.end(), device_offsets_.begin());
#endif
  }

  Index num_experts() const { return static_cast<Index>(host_offsets_.size()) - 1; }
  Index rows() const { return host_offsets_.back(); }

  /// y = x W_e^T + b_e on each expert's rows; x is [rows x in], y [rows x out].
  void forward(const LinearStack<Scalar>& linear, const Scalar* x, Scalar* y) {
    const Index in = linear.in_features, out = linear.out_features;
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
    // Row-major Y_e^T = W_e X_e^T, column-major [out x rows].
    batch_.clear();
    for_each_expert([&](Index e, Index first, Index count) {
      batch_.add(out, count, in, linear.weight + e * out * in, in, x + first * in, in, y + first * out, out);
    });
    batch_.run(blas_, CUBLAS_OP_T, CUBLAS_OP_N, Scalar(0));
#else
    for_each_expert_in_parallel("GroupedGemm::forward", [&](Index e, Index first, Index count) {
      map(y, first, count, out).noalias() = map(x, first, count, in) * map(linear.weight, e * out, out, in).transpose();
    });
#endif
    if (linear.bias != nullptr)
      thrust::for_each(policy(), thrust::counting_iterator<Index>(0), thrust::counting_iterator<Index>(rows() * out),
                       detail::AddExpertBias<Scalar>{offsets(), num_experts(), out, linear.bias, y});
  }

  /// dx = dy W_e on each expert's rows (dx += dy W_e with `accumulate`); dy is [rows x out], dx [rows x in].
  void input_grad(const LinearStack<Scalar>& linear, const Scalar* dy, Scalar* dx, bool accumulate = false) {
    const Index in = linear.in_features, out = linear.out_features;
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
    // Row-major dX_e^T = W_e^T dY_e^T, column-major [in x rows].
    batch_.clear();
    for_each_expert([&](Index e, Index first, Index count) {
      batch_.add(in, count, out, linear.weight + e * out * in, in, dy + first * out, out, dx + first * in, in);
    });
    batch_.run(blas_, CUBLAS_OP_N, CUBLAS_OP_N, Scalar(accumulate ? 1 : 0));
#else
    for_each_expert_in_parallel("GroupedGemm::input_grad", [&](Index e, Index first, Index count) {
      if (accumulate) {
        map(dx, first, count, in).noalias() += map(dy, first, count, out) * map(linear.weight, e * out, out, in);
      } else {
        map(dx, first, count, in).noalias() = map(dy, first, count, out) * map(linear.weight, e * out, out, in);
      }
    });
#endif
  }

  /// weight_grad_e += dy_e^T x_e and bias_grad_e += the column sums of dy_e, as PyTorch accumulates
  /// gradients; dy is [rows x out], x [rows x in].
  void accumulate_grads(const LinearStack<Scalar>& linear, const Scalar* dy, const Scalar* x) {
    const Index in = linear.in_features, out = linear.out_features;
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
    // Row-major dW_e^T += X_e^T dY_e, column-major [in x out].
    batch_.clear();
    for_each_expert([&](Index e, Index first, Index count) {
      batch_.add(in, out, count, x + first * in, in, dy + first * out, out, linear.weight_grad + e * out * in, in);
    });
    batch_.run(blas_, CUBLAS_OP_N, CUBLAS_OP_T, Scalar(1));
#else
    for_each_expert_in_parallel("GroupedGemm::accumulate_grads", [&](Index e, Index first, Index count) {
      map(linear.weight_grad, e * out, out, in).noalias() +=
          map(dy, first, count, out).transpose() * map(x, first, count, in);
    });
#endif
    if (linear.bias_grad != nullptr)
      thrust::for_each(policy(), thrust::counting_iterator<Index>(0),
                       thrust::counting_iterator<Index>(num_experts() * out),
                       detail::AccumulateColumnSums<Scalar>{offsets(), out, dy, linear.bias_grad});
  }

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
  /// The Thrust execution policy of the products' stream: work queued with it runs in order with them.
  /// Nothing of the bank's work returns values to the host, so no call needs to wait for the stream.
  auto policy() const { return thrust::cuda::par_nosync.on(blas_.stream()); }
  cudaStream_t stream() const { return blas_.stream(); }
#else
  /// The Thrust execution policy of the device system, for work queued around the products.
  auto policy() const { return thrust::device; }
#endif

 private:
  const Index* offsets() const { return thrust::raw_pointer_cast(device_offsets_.data()); }

  Index first_row(Index e) const { return host_offsets_[static_cast<std::size_t>(e)]; }
  Index row_count(Index e) const { return host_offsets_[static_cast<std::size_t>(e) + 1] - first_row(e); }

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
  /// body(e, first row, row count) for every expert with rows, in expert order.
  template <class Body>
  void for_each_expert(Body&& body) const {
    for (Index e = 0; e < num_experts(); ++e)
      if (row_count(e) > 0) body(e, first_row(e), row_count(e));
  }

  gpu::Blas blas_;
  gpu::GemmBatch<Scalar> batch_;
#else
  using Map = Eigen::Map<MatrixX<Scalar>>;
  using ConstMap = Eigen::Map<const MatrixX<Scalar>>;

  /// Rows [first, first + count) of a row-major matrix of `cols` columns.
  static Map map(Scalar* data, Index first, Index count, Index cols) { return {data + first * cols, count, cols}; }
  static ConstMap map(const Scalar* data, Index first, Index count, Index cols) {
    return {data + first * cols, count, cols};
  }

  /// body(e, first row, row count) for every expert with rows, the experts spread over OpenMP threads and
  /// each expert on one thread.
  template <class Body>
  void for_each_expert_in_parallel(const char* where, Body&& body) const {
    parallel_for(
        where, num_experts(),
        [&](Index e) {
          if (row_count(e) > 0) body(e, first_row(e), row_count(e));
        },
        /*dynamic=*/true);
  }
#endif

  std::vector<Index> host_offsets_{0};
  thrust::device_vector<Index> device_offsets_;
};

}  // namespace moe::backends::device
