#pragma once
// CIFAR-10's binary version (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html): files
// data_batch_1.bin .. data_batch_5.bin (50,000 training images) and test_batch.bin (10,000), each a
// sequence of 3073-byte records: 1 label byte (0..9), then 1024 red, 1024 green and 1024 blue bytes, each
// plane row by row; that is CHW, the row layout of moe/core/image_shape.hpp. A gzip file is gunzipped
// first, so this needs zlib: link with -lz (ZLIB::ZLIB in CMake).

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/image_shape.hpp"
#include "moe/core/types.hpp"
#include "moe/data/file_bytes.hpp"
#include "moe/data/image_dataset.hpp"

namespace moe {

/// CIFAR-10's classes by label, as in its batches.meta.txt.
inline constexpr std::array<const char*, 10> cifar10_classes{"airplane", "automobile", "bird",  "cat",  "deer",
                                                             "dog",      "frog",       "horse", "ship", "truck"};

inline constexpr ImageShape cifar10_shape{3, 32, 32};

/// Reads the records of the given batch files, in order, into one data set with pixels byte / 255.
template <class Scalar = float>
ImageDataset<Scalar> read_cifar10_batches(const std::vector<std::string>& paths) {
  const char* who = "read_cifar10";
  constexpr std::size_t pixels = cifar10_shape.size(), record = 1 + pixels;
  std::vector<detail::FileBytes> files;
  std::size_t total = 0;
  for (const std::string& path : paths) {
    files.push_back(detail::read_file_bytes(path, who));
    const detail::FileBytes& file = files.back();
    const std::size_t size = file.bytes.size(), whole = size / record;
    detail::require(size > 0, who, ": ", path, ": file is empty, expected records of ", record, " bytes");
    detail::require(size % record == 0, who, ": ", path, ": file ends at ", file.at(size), " inside record ", whole,
                    ", which starts at ", file.at(whole * record), "; expected records of ", record,
                    " bytes (1 label + 3x32x32 pixels)");
    total += whole;
  }
  ImageDataset<Scalar> data;
  data.shape = cifar10_shape;
  data.images.resize(static_cast<Index>(total), cifar10_shape.size());
  data.labels.reserve(total);
  Index row = 0;
  for (const detail::FileBytes& file : files) {
    for (std::size_t offset = 0; offset < file.bytes.size(); offset += record, ++row) {
      const unsigned char label = file.bytes[offset];
      detail::require(label < cifar10_classes.size(), who, ": ", file.path, ": ", file.at(offset), ": label of record ",
                      offset / record, " is ", int{label}, ", expected 0..9");
      data.labels.push_back(label);
      for (std::size_t j = 0; j < pixels; ++j)
        data.images(row, static_cast<Index>(j)) = static_cast<Scalar>(file.bytes[offset + 1 + j]) / Scalar(255);
    }
  }
  return data;
}

template <class Scalar = float>
struct Cifar10 {
  ImageDataset<Scalar> train;  // data_batch_1..5: 50,000 images
  ImageDataset<Scalar> test;   // test_batch: 10,000 images
};

/// Reads data_batch_1.bin .. data_batch_5.bin and test_batch.bin from `directory` (the folder
/// cifar-10-batches-bin of the binary archive).
template <class Scalar = float>
Cifar10<Scalar> read_cifar10(const std::string& directory) {
  std::vector<std::string> train;
  for (int i = 1; i <= 5; ++i) train.push_back(directory + "/data_batch_" + std::to_string(i) + ".bin");
  return {read_cifar10_batches<Scalar>(train), read_cifar10_batches<Scalar>({directory + "/test_batch.bin"})};
}

}  // namespace moe
