#pragma once
// IDX files (the format of MNIST and Fashion-MNIST), gzip or raw: a reader that checks every byte it
// relies on and a writer. Needs zlib: link with -lz (ZLIB::ZLIB in CMake).
//
// Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number 0x0000TTDD, TT the
// element type (0x08 = unsigned byte), DD the number of dimensions; then DD big-endian 32-bit sizes; then
// the elements, last dimension fastest. Images are 0x00000803 (count, rows, columns), labels 0x00000801.

#include <array>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/image_shape.hpp"
#include "moe/core/types.hpp"
#include "moe/data/file_bytes.hpp"
#include "moe/data/image_dataset.hpp"

namespace moe {

/// Fashion-MNIST's classes (Xiao et al. 2017), by label.
inline constexpr std::array<const char*, 10> fashion_mnist_classes{
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

template <class Scalar = float>
struct IdxImages {
  MatrixX<Scalar> pixels;  // [count x rows*columns], byte / 255, row by row
  Index rows = 0;
  Index columns = 0;
};

namespace detail {

inline constexpr std::uint32_t idx_images_magic = 0x00000803;
inline constexpr std::uint32_t idx_labels_magic = 0x00000801;

inline std::string hex32(std::uint32_t value) {
  std::ostringstream out;
  out << "0x" << std::hex << std::setw(8) << std::setfill('0') << value;
  return out.str();
}

/// Checks the magic number of an IDX file of unsigned bytes with one dimension per name, and returns the
/// sizes; the elements start at byte 4 + 4 * sizes.size().
inline std::vector<std::uint32_t> read_idx_header(const FileBytes& file, const char* who, const char* kind,
                                                  const std::vector<const char*>& dimension_names) {
  const auto dims = static_cast<std::uint32_t>(dimension_names.size());
  const std::uint32_t magic = 0x00000800 | dims;
  const std::uint32_t found = read_u32_be(file, 0, who, concat("the magic number ", hex32(magic)));
  require((found >> 8) == (magic >> 8), who, ": ", file.path, ": ", file.at(0), ": magic number is ", hex32(found),
          ", expected ", hex32(magic), " (IDX ", kind, ": unsigned bytes, ", dims, " dimensions)");
  require(found == magic, who, ": ", file.path, ": ", file.at(3), ": IDX file has ", found & 0xff,
          " dimensions (magic number ", hex32(found), "), expected ", dims, " for ", kind, " (magic number ",
          hex32(magic), ")");
  std::vector<std::uint32_t> sizes;
  for (std::uint32_t d = 0; d < dims; ++d) sizes.push_back(read_u32_be(file, 4 + 4 * d, who, dimension_names[d]));
  return sizes;
}

/// The size an IDX header of unsigned bytes with `dims` dimensions promises: the header and the product of
/// its sizes; for a header of another magic number, the header alone (the reader then refuses it).
inline PromisedSize idx_promised_size(std::uint32_t dims) {
  return {4 + 4 * static_cast<std::size_t>(dims), [dims](const unsigned char* header) {
            const auto u32 = [header](std::size_t at) {
              const unsigned char* p = header + at;
              return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
            };
            std::uint64_t total = 4 + 4 * std::uint64_t{dims};
            if (u32(0) != (0x00000800 | dims)) return total;
            std::uint64_t elements = 1;
            for (std::uint32_t d = 0; d < dims; ++d) elements = saturating_multiply(elements, u32(4 + 4 * d));
            return elements > std::numeric_limits<std::uint64_t>::max() - total ? elements : total + elements;
          }};
}

/// Requires exactly `count` elements of `element_bytes` bytes after the header at `offset`.
inline void check_idx_payload(const FileBytes& file, std::size_t offset, std::uint64_t count,
                              std::uint64_t element_bytes, const char* who, const std::string& what) {
  const std::uint64_t available = file.bytes.size() - offset;
  const bool fits = element_bytes == 0 || count <= available / element_bytes;
  require(fits, who, ": ", file.path, ": file ends at ", file.at(file.bytes.size()), ", expected ", what, " (", count,
          " x ", element_bytes, " bytes from ", file.at(offset), ")");
  const std::uint64_t end = offset + count * element_bytes;
  if (file.cut)
    fail(who, ": ", file.path, ": the gzip data go on after ", what, " at ", file.at(end),
         ", expected the end of the file (not inflated further)");
  require(end == file.bytes.size(), who, ": ", file.path, ": ", file.bytes.size() - end, " unexpected bytes after ",
          what, " at ", file.at(end), ", expected the end of the file");
}

}  // namespace detail

/// Reads an IDX image file (magic 0x00000803): pixels scaled from bytes to [0, 1].
template <class Scalar = float>
IdxImages<Scalar> read_idx_images(const std::string& path) {
  const char* who = "read_idx_images";
  const detail::FileBytes file = detail::read_file_bytes(path, who, detail::idx_promised_size(3));
  const std::vector<std::uint32_t> sizes = detail::read_idx_header(
      file, who, "images", {"the number of images", "the number of rows", "the number of columns"});
  const std::size_t offset = 16;
  const std::uint32_t count = sizes[0], rows = sizes[1], columns = sizes[2];
  detail::require(rows > 0 && columns > 0, who, ": ", path, ": ", file.at(8), ": images are ", rows, "x", columns,
                  ", expected positive sizes");
  // Even zero images have rows x columns columns, which must be a count an Index holds.
  detail::require(std::uint64_t{rows} * columns <= static_cast<std::uint64_t>(std::numeric_limits<Index>::max()),
                  who, ": ", path, ": ", file.at(8), ": images of ", rows, "x", columns,
                  " pixels are more than a 64-bit count holds");
  detail::check_idx_payload(file, offset, count, std::uint64_t{rows} * columns, who,
                            detail::concat(count, " images of ", rows, "x", columns, " pixels"));
  IdxImages<Scalar> images;
  images.rows = rows;
  images.columns = columns;
  images.pixels.resize(count, Index{rows} * columns);
  const unsigned char* data = file.bytes.data() + offset;
  for (Index i = 0; i < images.pixels.size(); ++i) images.pixels.data()[i] = static_cast<Scalar>(data[i]) / Scalar(255);
  return images;
}

/// Reads an IDX label file (magic 0x00000801).
inline std::vector<Index> read_idx_labels(const std::string& path) {
  const char* who = "read_idx_labels";
  const detail::FileBytes file = detail::read_file_bytes(path, who, detail::idx_promised_size(1));
  const std::vector<std::uint32_t> sizes = detail::read_idx_header(file, who, "labels", {"the number of labels"});
  const std::size_t offset = 8;
  detail::check_idx_payload(file, offset, sizes[0], 1, who, detail::concat(sizes[0], " labels"));
  return std::vector<Index>(file.bytes.begin() + static_cast<std::ptrdiff_t>(offset), file.bytes.end());
}

/// An image file and its label file as one data set of 1-channel images; the counts must agree.
template <class Scalar = float>
ImageDataset<Scalar> read_idx_dataset(const std::string& images_path, const std::string& labels_path) {
  IdxImages<Scalar> images = read_idx_images<Scalar>(images_path);
  ImageDataset<Scalar> data;
  data.labels = read_idx_labels(labels_path);
  detail::require(static_cast<Index>(data.labels.size()) == images.pixels.rows(), "read_idx_dataset: ", images_path,
                  " has ", images.pixels.rows(), " images but ", labels_path, " has ", data.labels.size(), " labels");
  data.images = std::move(images.pixels);
  data.shape = {1, images.rows, images.columns};
  return data;
}

/// Writes images with values in [0, 1] as an IDX image file of bytes round(255 x).
template <class Scalar>
void write_idx_images(const std::string& path, const MatrixX<Scalar>& pixels, Index rows, Index columns,
                      Compression compression = Compression::none) {
  const char* who = "write_idx_images";
  detail::require(rows > 0 && columns > 0 && pixels.cols() == rows * columns, who, ": images of ", rows, "x", columns,
                  " need ", rows * columns, " columns, got ", pixels.cols());
  std::vector<unsigned char> bytes;
  bytes.reserve(16 + static_cast<std::size_t>(pixels.size()));
  detail::append_u32_be(bytes, detail::idx_images_magic);
  for (const Index size : {pixels.rows(), rows, columns})
    detail::append_u32_be(bytes, static_cast<std::uint32_t>(size));
  for (Index i = 0; i < pixels.rows(); ++i)
    for (Index j = 0; j < pixels.cols(); ++j) {
      const double value = static_cast<double>(pixels(i, j));
      detail::require(value >= 0.0 && value <= 1.0, who, ": pixel (", i, ", ", j, ") is ", value,
                      ", expected a value in [0, 1]");
      bytes.push_back(static_cast<unsigned char>(std::lround(value * 255.0)));
    }
  detail::write_file_bytes(path, bytes, compression, who);
}

/// Writes labels in [0, 255] as an IDX label file.
inline void write_idx_labels(const std::string& path, const std::vector<Index>& labels,
                             Compression compression = Compression::none) {
  const char* who = "write_idx_labels";
  std::vector<unsigned char> bytes;
  bytes.reserve(8 + labels.size());
  detail::append_u32_be(bytes, detail::idx_labels_magic);
  detail::append_u32_be(bytes, static_cast<std::uint32_t>(labels.size()));
  for (std::size_t i = 0; i < labels.size(); ++i) {
    detail::require(labels[i] >= 0 && labels[i] <= 255, who, ": label ", i, " is ", labels[i],
                    ", expected a value in [0, 255]");
    bytes.push_back(static_cast<unsigned char>(labels[i]));
  }
  detail::write_file_bytes(path, bytes, compression, who);
}

}  // namespace moe
