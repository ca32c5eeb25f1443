#pragma once
// 2-D convolution on images stored as rows (moe/core/image_shape.hpp), with PyTorch's nn.Conv2d layout,
// output size and default initialisation. Square kernel, zero padding, no dilation or groups.
//
// Each image is unfolded into columns (im2col: one column per output position, one row per weight of a
// filter) and convolved by one GEMM, weight [out x in*k*k] times columns [in*k*k x out_h*out_w], whose
// result is already the image's output row in NCHW order. Backward folds W^T dy back (col2im).

#include <algorithm>
#include <cmath>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/image_shape.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe {

struct Conv2dOptions {
  Index stride = 1;
  Index padding = 0;  // zeros on every side
  bool bias = true;
};

namespace detail {

/// PyTorch's output size of a convolution or pooling window without dilation:
/// floor((size + 2 padding - kernel) / stride) + 1 (nn.Conv2d and nn.MaxPool2d docs).
inline Index window_output_size(Index size, Index kernel, Index stride, Index padding) {
  return (size + 2 * padding - kernel) / stride + 1;
}

}  // namespace detail

template <class ScalarT = float>
class Conv2d {
 public:
  using Scalar = ScalarT;
  using Options = Conv2dOptions;

  /// PyTorch's nn.Conv2d initialisation: weight and bias uniform in +-1/sqrt(fan_in), fan_in = in*k*k
  /// (kaiming_uniform with a = sqrt(5)). `input.channels` is in_channels; output_shape() gives the next
  /// layer's input.
  Conv2d(ImageShape input, Index out_channels, Index kernel, Rng& rng, const Options& options = {})
      : input_(input), kernel_(kernel), stride_(options.stride), padding_(options.padding), has_bias_(options.bias) {
    detail::require(input.channels > 0 && input.height > 0 && input.width > 0,
                    "Conv2d: input shape must be positive, got ", input);
    detail::require(out_channels > 0, "Conv2d: out_channels must be positive, got ", out_channels);
    detail::require(kernel > 0, "Conv2d: kernel must be positive, got ", kernel);
    detail::require(stride_ > 0, "Conv2d: stride must be positive, got ", stride_);
    detail::require(padding_ >= 0, "Conv2d: padding must be non-negative, got ", padding_);
    detail::require(kernel <= std::min(input.height, input.width) + 2 * padding_, "Conv2d: kernel ", kernel,
                    " is larger than the padded input ", input.height + 2 * padding_, "x", input.width + 2 * padding_);
    output_ = {out_channels, detail::window_output_size(input.height, kernel, stride_, padding_),
               detail::window_output_size(input.width, kernel, stride_, padding_)};

    const Index fan_in = input.channels * kernel * kernel;
    weight_ = Parameter<Scalar>(out_channels, fan_in);
    weight_.shape = {out_channels, input.channels, kernel, kernel};
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    fill_uniform(weight_.value, rng, -bound, bound);
    if (has_bias_) {
      bias_ = Parameter<Scalar>::vector(out_channels);
      fill_uniform(bias_.value, rng, -bound, bound);
    }
  }

  const ImageShape& input_shape() const { return input_; }
  const ImageShape& output_shape() const { return output_; }
  Index in_channels() const { return input_.channels; }
  Index out_channels() const { return output_.channels; }
  Index kernel_size() const { return kernel_; }
  Index stride() const { return stride_; }
  Index padding() const { return padding_; }

  /// x: [N x C*H*W]; returns [N x out*out_h*out_w].
  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    detail::require(x.cols() == input_.size(), "Conv2d: input has ", x.cols(), " columns, expected ", input_, " = ",
                    input_.size());
    input_cache_ = x;
    const Index images = x.rows();
    output_cache_.resize(images, output_.size());
    const Index items = prepare_items(images);
    parallel_for(items, [&](Index item) {
      MatrixX<Scalar>& columns = scratch_[static_cast<std::size_t>(item)].columns;
      for (Index i = item_begin(item, items, images); i < item_begin(item + 1, items, images); ++i) {
        im2col(input_cache_.row(i).data(), columns);
        Eigen::Map<MatrixX<Scalar>> y(output_cache_.row(i).data(), output_.channels, output_.pixels());
        y.noalias() = weight_.value * columns;
        if (has_bias_) y.colwise() += bias_.value.row(0).transpose();
      }
    });
    return output_cache_;
  }

  /// Returns dx and adds dL/dweight = sum over images of dy_n columns_n^T and dL/dbias into grad.
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) {
    const Index images = input_cache_.rows();
    detail::require(dy.rows() == images && dy.cols() == output_.size(), "Conv2d: gradient has shape ", dy.rows(), "x",
                    dy.cols(), ", expected ", images, "x", output_.size());
    grad_input_.resize(images, input_.size());
    const Index items = prepare_items(images);
    parallel_for(items, [&](Index item) {
      Scratch& s = scratch_[static_cast<std::size_t>(item)];
      s.weight_grad.setZero(weight_.value.rows(), weight_.value.cols());
      s.bias_grad.setZero(output_.channels);
      for (Index i = item_begin(item, items, images); i < item_begin(item + 1, items, images); ++i) {
        const Eigen::Map<const MatrixX<Scalar>> g(dy.row(i).data(), output_.channels, output_.pixels());
        im2col(input_cache_.row(i).data(), s.columns);
        s.weight_grad.noalias() += g * s.columns.transpose();
        if (has_bias_) s.bias_grad += g.rowwise().sum();
        s.columns.noalias() = weight_.value.transpose() * g;
        col2im(s.columns, grad_input_.row(i).data());
      }
    });
    // Partial sums are added in item order, and items depend on the batch size only.
    for (Index item = 0; item < items; ++item) {
      const Scratch& s = scratch_[static_cast<std::size_t>(item)];
      weight_.grad += s.weight_grad;
      if (has_bias_) bias_.grad.row(0) += s.bias_grad.transpose();
    }
    return grad_input_;
  }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list{{"weight", &weight_}};
    if (has_bias_) list.push_back({"bias", &bias_});
    return list;
  }

  Parameter<Scalar>& weight() { return weight_; }
  Parameter<Scalar>& bias() { return bias_; }

 private:
  /// Images are split into at most this many items of consecutive images, each with its own buffers.
  static constexpr Index max_items = 8;

  struct Scratch {
    MatrixX<Scalar> columns;      // [in*k*k x out_h*out_w]: im2col of one image, then W^T dy
    MatrixX<Scalar> weight_grad;  // this item's partial sum
    VectorX<Scalar> bias_grad;
  };

  Index prepare_items(Index images) {
    const Index items = std::min(images, max_items);
    if (scratch_.size() < static_cast<std::size_t>(items)) scratch_.resize(static_cast<std::size_t>(items));
    for (Index item = 0; item < items; ++item)
      scratch_[static_cast<std::size_t>(item)].columns.resize(weight_.value.cols(), output_.pixels());
    return items;
  }

  static Index item_begin(Index item, Index items, Index images) { return item * images / items; }

  /// columns((c*k + ki)*k + kj, oy*out_w + ox) = image(c, oy*stride - padding + ki, ox*stride - padding + kj),
  /// zero outside the image.
  void im2col(const Scalar* image, MatrixX<Scalar>& columns) const {
    for (Index c = 0; c < input_.channels; ++c)
      for (Index ki = 0; ki < kernel_; ++ki)
        for (Index kj = 0; kj < kernel_; ++kj) {
          Scalar* out = columns.row((c * kernel_ + ki) * kernel_ + kj).data();
          for (Index oy = 0; oy < output_.height; ++oy) {
            const Index iy = oy * stride_ - padding_ + ki;
            Scalar* out_row = out + oy * output_.width;
            if (iy < 0 || iy >= input_.height) {
              std::fill(out_row, out_row + output_.width, Scalar(0));
              continue;
            }
            const Scalar* in_row = image + (c * input_.height + iy) * input_.width;
            for (Index ox = 0; ox < output_.width; ++ox) {
              const Index ix = ox * stride_ - padding_ + kj;
              out_row[ox] = ix >= 0 && ix < input_.width ? in_row[ix] : Scalar(0);
            }
          }
        }
  }

  /// The adjoint of im2col: image = 0, then every column entry is added back where im2col took it from.
  void col2im(const MatrixX<Scalar>& columns, Scalar* image) const {
    std::fill(image, image + input_.size(), Scalar(0));
    for (Index c = 0; c < input_.channels; ++c)
      for (Index ki = 0; ki < kernel_; ++ki)
        for (Index kj = 0; kj < kernel_; ++kj) {
          const Scalar* in = columns.row((c * kernel_ + ki) * kernel_ + kj).data();
          for (Index oy = 0; oy < output_.height; ++oy) {
            const Index iy = oy * stride_ - padding_ + ki;
            if (iy < 0 || iy >= input_.height) continue;
            const Scalar* in_row = in + oy * output_.width;
            Scalar* out_row = image + (c * input_.height + iy) * input_.width;
            for (Index ox = 0; ox < output_.width; ++ox) {
              const Index ix = ox * stride_ - padding_ + kj;
              if (ix >= 0 && ix < input_.width) out_row[ix] += in_row[ox];
            }
          }
        }
  }

  ImageShape input_;
  ImageShape output_;
  Index kernel_;
  Index stride_;
  Index padding_;
  bool has_bias_;
  Parameter<Scalar> weight_;
  Parameter<Scalar> bias_;
  MatrixX<Scalar> input_cache_, output_cache_, grad_input_;
  std::vector<Scratch> scratch_;
};

}  // namespace moe
