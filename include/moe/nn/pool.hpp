#pragma once
// Max pooling on images stored as rows (moe/core/image_shape.hpp): MaxPool2d and AdaptiveMaxPool2d with
// PyTorch's windows, tie and NaN rules; backward routes each output's gradient to its argmax.
//
// No Flatten layer is needed: an image row is already what torch.flatten(x, 1) gives, so a Linear or an
// MoE layer takes the pooled rows as they are.

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/image_shape.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"

namespace moe {
namespace detail {

/// Half-open input ranges [begin, end) that output rows or columns take their maximum over.
struct PoolWindows {
  std::vector<Index> begin, end;
};

/// Max over per-output windows, as PyTorch's CPU kernels (aten/src/ATen/native/cpu/MaxPoolKernel.cpp and
/// AdaptiveMaxPoolKernel.cpp): the maximum starts at -infinity and is replaced when `value > max ||
/// isnan(value)`, so ties go to the first maximum in row-major window order and a NaN propagates.
template <class ScalarT>
class WindowMaxPool {
 public:
  using Scalar = ScalarT;

  const ImageShape& input_shape() const { return input_; }
  const ImageShape& output_shape() const { return output_; }

  /// x: [N x C*H*W]; returns [N x C*out_h*out_w].
  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    require(x.cols() == input_.size(), name_, ": input has ", x.cols(), " columns, expected ", input_, " = ",
            input_.size());
    const Index images = x.rows();
    output_cache_.resize(images, output_.size());
    argmax_.resize(images, output_.size());
    parallel_for(images, [&](Index i) {
      const Scalar* image = x.row(i).data();
      for (Index c = 0; c < input_.channels; ++c) {
        const Scalar* plane = image + c * input_.pixels();
        for (Index oy = 0; oy < output_.height; ++oy)
          for (Index ox = 0; ox < output_.width; ++ox) {
            Index best = rows_.begin[oy] * input_.width + columns_.begin[ox];
            Scalar max = -std::numeric_limits<Scalar>::infinity();
            for (Index iy = rows_.begin[oy]; iy < rows_.end[oy]; ++iy)
              for (Index ix = columns_.begin[ox]; ix < columns_.end[ox]; ++ix) {
                const Scalar value = plane[iy * input_.width + ix];
                if (value > max || std::isnan(value)) {
                  max = value;
                  best = iy * input_.width + ix;
                }
              }
            const Index out = (c * output_.height + oy) * output_.width + ox;
            output_cache_(i, out) = max;
            argmax_(i, out) = c * input_.pixels() + best;
          }
      }
    });
    return output_cache_;
  }

  /// dx is zero except at each output's argmax, which receives (sums, where windows overlap) its gradient.
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    const Index images = argmax_.rows();
    require(dy.rows() == images && dy.cols() == output_.size(), name_, ": gradient has shape ", dy.rows(), "x",
            dy.cols(), ", expected ", images, "x", output_.size());
    grad_input_.resize(images, input_.size());
    parallel_for(images, [&](Index i) {
      grad_input_.row(i).setZero();
      for (Index out = 0; out < output_.size(); ++out) grad_input_(i, argmax_(i, out)) += dy(i, out);
    });
    return grad_input_;
  }

  ParameterList<Scalar> named_parameters() { return {}; }

 protected:
  WindowMaxPool(const char* name, ImageShape input) : name_(name), input_(input) {
    require(input.channels > 0 && input.height > 0 && input.width > 0, name, ": input shape must be positive, got ",
            input);
  }

  void set_windows(PoolWindows rows, PoolWindows columns) {
    rows_ = std::move(rows);
    columns_ = std::move(columns);
    output_ = {input_.channels, static_cast<Index>(rows_.begin.size()), static_cast<Index>(columns_.begin.size())};
  }

 private:
  const char* name_;
  ImageShape input_;
  ImageShape output_;
  PoolWindows rows_, columns_;
  MatrixX<Scalar> output_cache_, grad_input_;
  IndexMatrix argmax_;  // per output, the index of its maximum in the input row
};

}  // namespace detail

/// nn.MaxPool2d(kernel, stride) without padding or dilation: out = floor((size - kernel) / stride) + 1,
/// window o covers [o*stride, o*stride + kernel).
template <class ScalarT = float>
class MaxPool2d : public detail::WindowMaxPool<ScalarT> {
 public:
  /// stride = kernel, PyTorch's default.
  MaxPool2d(ImageShape input, Index kernel) : MaxPool2d(input, kernel, kernel) {}

  MaxPool2d(ImageShape input, Index kernel, Index stride)
      : detail::WindowMaxPool<ScalarT>("MaxPool2d", input), kernel_(kernel), stride_(stride) {
    detail::require(kernel > 0, "MaxPool2d: kernel must be positive, got ", kernel);
    detail::require(stride > 0, "MaxPool2d: stride must be positive, got ", stride);
    detail::require(kernel <= input.height && kernel <= input.width, "MaxPool2d: kernel ", kernel,
                    " does not fit the input ", input, " (an AdaptiveMaxPool2d takes any size)");
    this->set_windows(windows(input.height), windows(input.width));
  }

  Index kernel_size() const { return kernel_; }
  Index stride() const { return stride_; }

 private:
  detail::PoolWindows windows(Index size) const {
    detail::PoolWindows w;
    for (Index o = 0; o < (size - kernel_) / stride_ + 1; ++o) {
      w.begin.push_back(o * stride_);
      w.end.push_back(o * stride_ + kernel_);
    }
    return w;
  }

  Index kernel_;
  Index stride_;
};

/// nn.AdaptiveMaxPool2d(output size): output o of `out` over an input of `size` takes the window
/// [floor(o*size/out), ceil((o+1)*size/out)) (start_index / end_index in PyTorch's AdaptivePooling.h),
/// so windows may overlap when out does not divide size (7 -> 2: [0, 4) and [3, 7)).
template <class ScalarT = float>
class AdaptiveMaxPool2d : public detail::WindowMaxPool<ScalarT> {
 public:
  AdaptiveMaxPool2d(ImageShape input, Index output_size) : AdaptiveMaxPool2d(input, output_size, output_size) {}

  AdaptiveMaxPool2d(ImageShape input, Index output_height, Index output_width)
      : detail::WindowMaxPool<ScalarT>("AdaptiveMaxPool2d", input) {
    detail::require(output_height > 0 && output_width > 0, "AdaptiveMaxPool2d: output size must be positive, got ",
                    output_height, "x", output_width);
    this->set_windows(windows(input.height, output_height), windows(input.width, output_width));
  }

 private:
  static detail::PoolWindows windows(Index size, Index out) {
    detail::PoolWindows w;
    for (Index o = 0; o < out; ++o) {
      w.begin.push_back(o * size / out);
      w.end.push_back(((o + 1) * size + out - 1) / out);
    }
    return w;
  }
};

}  // namespace moe
