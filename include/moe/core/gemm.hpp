#pragma once
// The matrix product of moe's layers: Linear (and through it every feed-forward expert and router) multiplies
// here. Eigen's GEMM always works; with MOE_WITH_ONEDNN defined (CMake defines it when it finds oneDNN, option
// MOE_ONEDNN) float products go to oneDNN's dnnl_sgemm instead, which the GEMM bake-off measured at 1.3-1.5x
// Eigen's rate on the MoE layer's shapes (scripts/gemm-bakeoff.sh, benchmarks/perf_notes.md).
//
// Every product runs on the calling thread alone. moe splits work over threads itself, in pieces fixed by
// the shapes, so that results have the same bits for any thread count; oneDNN (built for OpenMP) would
// otherwise spread each call over an OpenMP team of its own and split by the team's size.

#include <type_traits>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

#if defined(MOE_WITH_ONEDNN) && defined(_OPENMP)
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#endif

namespace moe {

/// Whether gemm reads an operand as it is stored or transposed.
enum class Op : bool { none, transpose };

/// The engine gemm runs float products on: "onednn" or "eigen"; double products always run on Eigen.
inline const char* gemm_engine() {
#if defined(MOE_WITH_ONEDNN) && defined(_OPENMP)
  return "onednn";
#else
  return "eigen";
#endif
}

namespace detail {

template <class Scalar, Op op>
auto op_of(const ConstRef<Scalar>& m) {
  if constexpr (op == Op::transpose)
    return m.transpose();
  else
    return m;
}

template <class Scalar, Op op_a, Op op_b>
void eigen_gemm(const ConstRef<Scalar>& a, const ConstRef<Scalar>& b, Eigen::Ref<MatrixX<Scalar>>& out,
                bool accumulate) {
  if (accumulate)
    out.noalias() += op_of<Scalar, op_a>(a) * op_of<Scalar, op_b>(b);
  else
    out.noalias() = op_of<Scalar, op_a>(a) * op_of<Scalar, op_b>(b);
}

#if defined(MOE_WITH_ONEDNN) && defined(_OPENMP)
/// One OpenMP thread for the regions the calling thread opens while this lives (the setting is the calling
/// thread's own, so moe's other threads keep theirs).
class OneOpenMpThread {
 public:
  OneOpenMpThread() : previous_(omp_get_max_threads()) {
    if (previous_ != 1) omp_set_num_threads(1);
  }
  ~OneOpenMpThread() {
    if (previous_ != 1) omp_set_num_threads(previous_);
  }
  OneOpenMpThread(const OneOpenMpThread&) = delete;
  OneOpenMpThread& operator=(const OneOpenMpThread&) = delete;

 private:
  int previous_;
};
#endif

}  // namespace detail

/// out = op_a(a) op_b(b), or out += op_a(a) op_b(b) with `accumulate`. Operands are row-major with unit
/// inner stride (matrices, maps, blocks of consecutive rows or columns), `out` not overlapping a or b.
template <class Scalar>
void gemm(ConstRef<Scalar> a, Op op_a, ConstRef<Scalar> b, Op op_b, Eigen::Ref<MatrixX<Scalar>> out,
          bool accumulate = false) {
  const bool ta = op_a == Op::transpose, tb = op_b == Op::transpose;
  const Index m = ta ? a.cols() : a.rows(), k = ta ? a.rows() : a.cols(), n = tb ? b.rows() : b.cols();
  detail::require((tb ? b.cols() : b.rows()) == k && out.rows() == m && out.cols() == n, "gemm: op(a) is ", m, "x",
                  k, ", op(b) is ", tb ? b.cols() : b.rows(), "x", n, ", out is ", out.rows(), "x", out.cols());
  if (m == 0 || n == 0) return;
#if defined(MOE_WITH_ONEDNN) && defined(_OPENMP)
  if constexpr (std::is_same_v<Scalar, float>) {
    if (k == 0) {
      if (!accumulate) out.setZero();
      return;
    }
    detail::OneOpenMpThread one_thread;
    const dnnl_status_t status = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a.data(), a.outerStride(),
                                            b.data(), b.outerStride(), accumulate ? 1.0f : 0.0f, out.data(),
                                            out.outerStride());
    detail::require(status == dnnl_success, "gemm: dnnl_sgemm failed (status ", static_cast<int>(status), ") on ",
                    m, "x", n, "x", k);
    return;
  }
#endif
  if (ta)
    tb ? detail::eigen_gemm<Scalar, Op::transpose, Op::transpose>(a, b, out, accumulate)
       : detail::eigen_gemm<Scalar, Op::transpose, Op::none>(a, b, out, accumulate);
  else
    tb ? detail::eigen_gemm<Scalar, Op::none, Op::transpose>(a, b, out, accumulate)
       : detail::eigen_gemm<Scalar, Op::none, Op::none>(a, b, out, accumulate);
}

}  // namespace moe
