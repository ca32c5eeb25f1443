#pragma once
// Labelled images as rows (moe/core/image_shape.hpp), per-channel normalisation with statistics from the
// training split, and a seeded train/validation split.
//
// The order the CIFAR-10 study ("Do Experts Specialize?", section 4) implies: split the 50,000 training
// images into 49,000 / 1,000, take the statistics of the 49,000, and normalise all three splits with them:
//
//   auto [train, validation] = split_train_validation(read_cifar10_batches(train_files), 1000, seed);
//   const ChannelStatistics stats = channel_statistics(train);
//   normalize(train, stats); normalize(validation, stats); normalize(test, stats);

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/image_shape.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe {

template <class Scalar = float>
struct ImageDataset {
  MatrixX<Scalar> images;     // [N x C*H*W], one image per row in CHW order
  std::vector<Index> labels;  // N class indices
  ImageShape shape;

  Index size() const { return images.rows(); }
};

/// Per-channel mean and population standard deviation (divided by the number of values), in double.
struct ChannelStatistics {
  std::vector<double> mean;
  std::vector<double> stddev;
};

namespace detail {

template <class Scalar>
void check_dataset(const ImageDataset<Scalar>& data, const char* who) {
  require(data.images.cols() == data.shape.size(), who, ": images have ", data.images.cols(), " columns, the shape ",
          data.shape, " needs ", data.shape.size());
  require(static_cast<Index>(data.labels.size()) == data.images.rows(), who, ": ", data.images.rows(), " images but ",
          data.labels.size(), " labels");
}

}  // namespace detail

/// Mean and standard deviation of each channel over every pixel of every image (two passes, so a large
/// mean does not cost precision).
template <class Scalar>
ChannelStatistics channel_statistics(const ImageDataset<Scalar>& data) {
  detail::check_dataset(data, "channel_statistics");
  detail::require(data.size() > 0, "channel_statistics: the data set is empty");
  const Index channels = data.shape.channels, pixels = data.shape.pixels();
  const double count = static_cast<double>(data.size() * pixels);
  ChannelStatistics stats;
  for (Index c = 0; c < channels; ++c) {
    const auto block = data.images.middleCols(c * pixels, pixels).template cast<double>();
    const double mean = block.sum() / count;
    stats.mean.push_back(mean);
    stats.stddev.push_back(std::sqrt((block.array() - mean).square().sum() / count));
  }
  return stats;
}

/// x <- (x - mean[c]) / stddev[c] for each value of channel c, as torchvision's Normalize.
template <class Scalar>
void normalize(ImageDataset<Scalar>& data, const ChannelStatistics& stats) {
  detail::check_dataset(data, "normalize");
  const Index channels = data.shape.channels, pixels = data.shape.pixels();
  detail::require(
      static_cast<Index>(stats.mean.size()) == channels && static_cast<Index>(stats.stddev.size()) == channels,
      "normalize: statistics for ", stats.mean.size(), " channels, the images have ", channels);
  for (Index c = 0; c < channels; ++c) {
    const double stddev = stats.stddev[static_cast<std::size_t>(c)];
    detail::require(stddev > 0.0, "normalize: channel ", c, " has standard deviation ", stddev,
                    ", expected a positive value");
    const auto mean = static_cast<Scalar>(stats.mean[static_cast<std::size_t>(c)]);
    const auto scale = static_cast<Scalar>(1.0 / stddev);
    auto block = data.images.middleCols(c * pixels, pixels);
    block.array() = (block.array() - mean) * scale;
  }
}

/// The images at `indices`, in that order.
template <class Scalar>
ImageDataset<Scalar> select(const ImageDataset<Scalar>& data, const std::vector<Index>& indices) {
  detail::check_dataset(data, "select");
  ImageDataset<Scalar> out;
  out.shape = data.shape;
  out.images.resize(static_cast<Index>(indices.size()), data.images.cols());
  out.labels.reserve(indices.size());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const Index index = indices[i];
    detail::require(index >= 0 && index < data.size(), "select: index ", index, " at position ", i, " is outside [0, ",
                    data.size(), ")");
    out.images.row(static_cast<Index>(i)) = data.images.row(index);
    out.labels.push_back(data.labels[static_cast<std::size_t>(index)]);
  }
  return out;
}

template <class Scalar = float>
struct TrainValidationSplit {
  ImageDataset<Scalar> train;
  ImageDataset<Scalar> validation;
};

/// A uniformly random `validation_size` images form the validation split, the rest the training split;
/// both keep the original order. The same seed gives the same split.
template <class Scalar>
TrainValidationSplit<Scalar> split_train_validation(const ImageDataset<Scalar>& data, Index validation_size,
                                                    std::uint64_t seed) {
  detail::check_dataset(data, "split_train_validation");
  detail::require(validation_size >= 0 && validation_size <= data.size(),
                  "split_train_validation: validation_size must be in [0, ", data.size(), "], got ", validation_size);
  // Fisher-Yates with moe's own uniform_index, so the split is the same with any standard library.
  std::vector<Index> order(static_cast<std::size_t>(data.size()));
  std::iota(order.begin(), order.end(), Index{0});
  Rng rng(seed);
  for (Index i = data.size() - 1; i > 0; --i)
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(uniform_index(rng, i + 1))]);
  const auto cut = order.begin() + validation_size;
  std::vector<Index> validation(order.begin(), cut), train(cut, order.end());
  std::sort(validation.begin(), validation.end());
  std::sort(train.begin(), train.end());
  return {select(data, train), select(data, validation)};
}

}  // namespace moe
