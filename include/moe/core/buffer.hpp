#pragma once
// Matrices whose storage only grows, for the caches of modules whose row counts change from call to call
// (an MoE expert gets another number of rows with every batch). An Eigen matrix resized to another size
// frees its memory and allocates anew, and the fresh pages fault in on first write (about 10 us per 4 KiB
// page on a VM); a Buffer keeps the largest storage it was asked for and maps the current shape onto it.

#include <new>
#include <utility>

#include "moe/core/types.hpp"

namespace moe {

/// A row-major matrix over storage someone else keeps (a Buffer's): Eigen's Map, aligned as Eigen's own
/// matrices are, so that Eigen picks the same vectorised code, and rounds the same, as on a MatrixX.
template <class Scalar>
using MatrixView = Eigen::Map<MatrixX<Scalar>, Eigen::AlignedMax>;

template <class Scalar>
class Buffer {
 public:
  Buffer() = default;
  /// A copy holds the same shape and values in storage of its own.
  Buffer(const Buffer& other) { *this = other; }
  Buffer& operator=(const Buffer& other) {
    if (this != &other) resize(other.rows(), other.cols()) = other.view_;
    return *this;
  }
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    storage_.swap(other.storage_);
    point(view_, storage_.data(), other.rows(), other.cols());
    point(other.view_, other.storage_.data(), 0, 0);
    return *this;
  }

  /// The matrix as rows x cols, values unspecified; allocates only when rows * cols is more than any size
  /// asked for before.
  MatrixView<Scalar>& resize(Index rows, Index cols) {
    if (rows * cols > storage_.size()) storage_.resize(rows * cols);
    point(view_, storage_.data(), rows, cols);
    return view_;
  }

  MatrixView<Scalar>& view() { return view_; }
  const MatrixView<Scalar>& view() const { return view_; }
  Index rows() const { return view_.rows(); }
  Index cols() const { return view_.cols(); }
  /// The most elements the buffer holds without allocating.
  Index capacity() const { return storage_.size(); }

 private:
  /// Eigen's way to make a Map look at other memory: construct it again in place.
  static void point(MatrixView<Scalar>& view, Scalar* data, Index rows, Index cols) {
    new (&view) MatrixView<Scalar>(data, rows, cols);
  }

  VectorX<Scalar> storage_;
  MatrixView<Scalar> view_{nullptr, 0, 0};
};

}  // namespace moe
