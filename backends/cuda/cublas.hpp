#pragma once
// The CUDA runtime and cuBLAS as the Thrust backend uses them under nvcc: their errors as moe::Error, a
// stream and a cuBLAS handle owned together, and the grouped GEMMs of an expert bank. A plain header (no
// kernels); it needs the toolkit's headers, libcudart and libcublas.
//
// The namespace is gpu, not cuda: a moe::backends::cuda would hide libcu++'s ::cuda from the unqualified
// names (cuda::std::erf) of every header in moe::backends.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstddef>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"

namespace moe::backends::gpu {

/// Throws moe::Error "<call>: <error name>: <error string>" unless `status` is cudaSuccess.
inline void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) moe::detail::fail(call, ": ", cudaGetErrorName(status), ": ", cudaGetErrorString(status));
}

/// Throws moe::Error "<call>: <status name>: <status string>" unless `status` is CUBLAS_STATUS_SUCCESS.
inline void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    moe::detail::fail(call, ": ", cublasGetStatusName(status), ": ", cublasGetStatusString(status));
}

/// A CUDA stream and a cuBLAS handle that queues its work on it, created and destroyed together. The stream
/// is a blocking one (cudaStreamCreate), so work Thrust queues on the legacy default stream (device_vector
/// copies and resizes) and the work queued here wait for each other without explicit synchronisation.
class Blas {
 public:
  Blas() {
    check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    try {
      check(cublasCreate(&handle_), "cublasCreate");
      check(cublasSetStream(handle_, stream_), "cublasSetStream");
    } catch (...) {
      release();
      throw;
    }
  }
  ~Blas() { release(); }

  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  Blas(Blas&& other) noexcept
      : stream_(std::exchange(other.stream_, nullptr)), handle_(std::exchange(other.handle_, nullptr)) {}
  Blas& operator=(Blas&& other) noexcept {
    if (this != &other) {
      release();
      stream_ = std::exchange(other.stream_, nullptr);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }

  cudaStream_t stream() const { return stream_; }
  cublasHandle_t handle() const { return handle_; }

  /// Queues a copy of `count` values from host memory to device memory on the stream. Pageable host memory
  /// is staged before the call returns, so `host` may change right after.
  template <class T>
  void upload(T* device, const T* host, std::size_t count) const {
    check(cudaMemcpyAsync(device, host, count * sizeof(T), cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
  }

 private:
  // A destructor cannot report errors; a sticky one surfaces at the next checked call.
  void release() noexcept {
    if (handle_ != nullptr) cublasDestroy(handle_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    handle_ = nullptr;
    stream_ = nullptr;
  }

  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
};

/// The products of one grouped GEMM call in cuBLAS's column-major terms: problem i is
/// C_i = op_a(A_i) op_b(B_i) + beta C_i, C_i of m_i x n_i, inner size k_i; op_a, op_b and beta are shared.
/// float runs as one cublasGemmGroupedBatchedEx (one group per problem, FP32 compute), double as one
/// cublasDgemm per problem (the grouped Ex call has no FP64). The host arrays and the device array of
/// pointers keep their capacity, so a steady state allocates nothing.
template <class Scalar>
class GemmBatch {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "GemmBatch<Scalar>: cuBLAS products are float or double");

 public:
  void clear() {
    for (auto* sizes : {&m_, &n_, &k_, &lda_, &ldb_, &ldc_}) sizes->clear();
    a_.clear();
    b_.clear();
    c_.clear();
  }

  void add(std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k, const Scalar* a, std::ptrdiff_t lda, const Scalar* b,
           std::ptrdiff_t ldb, Scalar* c, std::ptrdiff_t ldc) {
    m_.push_back(to_int(m));
    n_.push_back(to_int(n));
    k_.push_back(to_int(k));
    lda_.push_back(to_int(lda));
    ldb_.push_back(to_int(ldb));
    ldc_.push_back(to_int(ldc));
    a_.push_back(a);
    b_.push_back(b);
    c_.push_back(c);
  }

  /// Queues every problem added since clear() on the stream of `blas`.
  void run(const Blas& blas, cublasOperation_t op_a, cublasOperation_t op_b, Scalar beta) {
    const Scalar one = 1;
    const int problems = static_cast<int>(m_.size());
    if (problems == 0) return;
    if constexpr (std::is_same_v<Scalar, double>) {
      for (int i = 0; i < problems; ++i)
        check(cublasDgemm(blas.handle(), op_a, op_b, m_[i], n_[i], k_[i], &one, a_[i], lda_[i], b_[i], ldb_[i], &beta,
                          c_[i], ldc_[i]),
              "cublasDgemm");
    } else {
      // One group per problem: each expert has its own row count.
      op_a_.assign(m_.size(), op_a);
      op_b_.assign(m_.size(), op_b);
      alpha_.assign(m_.size(), one);
      beta_.assign(m_.size(), beta);
      group_size_.assign(m_.size(), 1);
      // cuBLAS reads the arrays of pointers from device memory: one upload of A's, then B's, then C's, all
      // typed as C's (void*).
      pointers_.clear();
      for (const Scalar* a : a_) pointers_.push_back(const_cast<Scalar*>(a));
      for (const Scalar* b : b_) pointers_.push_back(const_cast<Scalar*>(b));
      pointers_.insert(pointers_.end(), c_.begin(), c_.end());
      void** device = reserve_device_pointers(pointers_.size());
      blas.upload(device, pointers_.data(), pointers_.size());
      check(cublasGemmGroupedBatchedEx(blas.handle(), op_a_.data(), op_b_.data(), m_.data(), n_.data(), k_.data(),
                                       alpha_.data(), device, CUDA_R_32F, lda_.data(), device + problems, CUDA_R_32F,
                                       ldb_.data(), beta_.data(), device + 2 * problems, CUDA_R_32F, ldc_.data(),
                                       problems, group_size_.data(), CUBLAS_COMPUTE_32F),
            "cublasGemmGroupedBatchedEx");
    }
  }

 private:
  static int to_int(std::ptrdiff_t value) {
    moe::detail::require(value >= 0 && value <= INT_MAX, "GemmBatch: GEMM size or leading dimension ", value,
                         " is outside cuBLAS's int range");
    return static_cast<int>(value);
  }

  // cudaFree waits for the work queued before it, so growing never frees pointers a queued call still reads.
  void** reserve_device_pointers(std::size_t count) {
    if (count > device_capacity_) {
      device_pointers_.reset();
      device_capacity_ = 0;
      void* memory = nullptr;
      check(cudaMalloc(&memory, count * sizeof(void*)), "cudaMalloc");
      device_pointers_.reset(memory);
      device_capacity_ = count;
    }
    return static_cast<void**>(device_pointers_.get());
  }

  struct CudaFree {
    void operator()(void* memory) const noexcept { cudaFree(memory); }
  };

  std::vector<int> m_, n_, k_, lda_, ldb_, ldc_, group_size_;
  std::vector<const Scalar*> a_, b_;
  std::vector<Scalar*> c_;
  std::vector<cublasOperation_t> op_a_, op_b_;
  std::vector<Scalar> alpha_, beta_;
  std::vector<void*> pointers_;
  std::unique_ptr<void, CudaFree> device_pointers_;
  std::size_t device_capacity_ = 0;
};

}  // namespace moe::backends::gpu
