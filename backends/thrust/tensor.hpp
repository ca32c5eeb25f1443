#pragma once
// Matrices and parameters in a Thrust device's memory, and the explicit transfers between host and device.
// Under nvcc device memory is the GPU's; under a host compiler (Thrust's OpenMP or CPP system) it is host
// memory, and the same code runs.

#include "backends/thrust/config.hpp"

#include <cstddef>
#include <string>

#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/fill.h>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe::backends::device {

/// A row-major [rows x cols] matrix in device memory; the device counterpart of moe::MatrixX.
template <class ScalarT>
class Matrix {
 public:
  using Scalar = ScalarT;

  Matrix() = default;
  Matrix(Index rows, Index cols) { resize(rows, cols); }

  /// Keeps the values' capacity; the values are unspecified after a change of size.
  void resize(Index rows, Index cols) {
    moe::detail::require(rows >= 0 && cols >= 0, "device::Matrix: shape ", rows, "x", cols,
                         ", expected non-negative sizes");
    rows_ = rows;
    cols_ = cols;
    values_.resize(static_cast<std::size_t>(rows * cols));
  }
  void set_zero() { thrust::fill(values_.begin(), values_.end(), Scalar(0)); }

  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  Index size() const { return rows_ * cols_; }
  Scalar* data() { return thrust::raw_pointer_cast(values_.data()); }
  const Scalar* data() const { return thrust::raw_pointer_cast(values_.data()); }
  thrust::device_vector<Scalar>& values() { return values_; }
  const thrust::device_vector<Scalar>& values() const { return values_; }

 private:
  Index rows_ = 0, cols_ = 0;
  thrust::device_vector<Scalar> values_;
};

/// Copies a host matrix to the device.
template <class Scalar>
Matrix<Scalar> to_device(const MatrixX<Scalar>& host) {
  Matrix<Scalar> device(host.rows(), host.cols());
  if (host.size() > 0) thrust::copy(host.data(), host.data() + host.size(), device.values().begin());
  return device;
}

/// Copies a device matrix to the host.
template <class Scalar>
MatrixX<Scalar> to_host(const Matrix<Scalar>& device) {
  MatrixX<Scalar> host(device.rows(), device.cols());
  if (host.size() > 0) thrust::copy(device.values().begin(), device.values().end(), host.data());
  return host;
}

/// A trainable tensor in device memory: its value and its accumulated gradient, `size` elements each, under
/// the name its host parameter (or stack of parameters) has. What device optimizers step.
template <class Scalar>
struct Tensor {
  std::string name;
  Scalar* value = nullptr;
  Scalar* grad = nullptr;
  Index size = 0;
};

}  // namespace moe::backends::device
