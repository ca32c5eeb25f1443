#pragma once
// A reader of cereal's portable binary format (what cereal::PortableBinaryOutputArchive writes: a byte 1 for
// little-endian data or 0 for big-endian, then every number in that order, every length as a 64-bit count)
// that trusts nothing in the file. cereal's own PortableBinaryInputArchive resizes a vector or string to
// the length the file claims before it reads a byte of it, so a 7 KB file that claims 2^40 floats allocates
// 4 TiB; and it copies a stored byte into a bool whatever its value. This archive refuses a length larger
// than the bytes left in the stream and a bool that is not 0 or 1, naming the field it was reading.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <cereal/archives/portable_binary.hpp>
#include <cereal/cereal.hpp>

#include "moe/core/error.hpp"

namespace moe {

/// A cereal input archive for what cereal::PortableBinaryOutputArchive writes, checking every length and bool
/// against the file as it reads (see above): for reading binary state files that may be truncated or forged.
class CheckedBinaryInputArchive
    : public cereal::InputArchive<CheckedBinaryInputArchive, cereal::AllowEmptyClassElision> {
 public:
  /// Reads from `in`, of which `size` bytes are left: a length must fit in what is left.
  CheckedBinaryInputArchive(std::istream& in, std::uint64_t size)
      : cereal::InputArchive<CheckedBinaryInputArchive, cereal::AllowEmptyClassElision>(this), in_(in), left_(size) {
    std::uint8_t little_endian = 0;
    read(&little_endian, 1, 1);
    detail::require(little_endian <= 1, "the first byte (the byte order) is ", int{little_endian}, ", expected 0 or 1");
    swap_ = (little_endian == 1) != (std::endian::native == std::endian::little);
  }

  /// Reads `bytes` bytes of values of `value_size` bytes each, in the host's byte order.
  void read(void* data, std::uint64_t bytes, std::size_t value_size) {
    detail::require(bytes <= left_, "truncated: ", field(), " needs ", bytes, " bytes, ", left_, " are left");
    const auto got = in_.rdbuf()->sgetn(static_cast<char*>(data), static_cast<std::streamsize>(bytes));
    detail::require(static_cast<std::uint64_t>(got) == bytes, "truncated: ", field(), " needs ", bytes, " bytes, the stream ",
            "gave ", got);
    left_ -= bytes;
    if (swap_ && value_size > 1) {
      auto* p = static_cast<unsigned char*>(data);
      for (std::uint64_t i = 0; i < bytes; i += value_size)
        for (std::size_t j = 0; j < value_size / 2; ++j) std::swap(p[i + j], p[i + value_size - 1 - j]);
    }
  }

  /// A count of elements that each take at least one byte must fit in the bytes left.
  void check_length(std::uint64_t length) const {
    detail::require(length <= left_, "truncated or corrupt: ", field(), ": a length of ", length, ", but only ", left_,
            " bytes are left in the file");
  }

  std::uint64_t bytes_left() const { return left_; }

  /// The names of the fields being read, outermost first, for error messages: "optimizer.exp_avg".
  void enter(const char* name) { fields_.push_back(name); }
  void leave() { fields_.pop_back(); }
  std::string field() const {
    if (fields_.empty()) return "the file";
    std::string path;
    for (const char* name : fields_) path.append(path.empty() ? "" : ".").append(name);
    return path;
  }

 private:
  std::istream& in_;
  std::uint64_t left_;
  bool swap_ = false;
  std::vector<const char*> fields_;
};

template <class T>
  requires std::is_arithmetic_v<T>
void CEREAL_LOAD_FUNCTION_NAME(CheckedBinaryInputArchive& archive, T& value) {
  static_assert(!std::is_floating_point_v<T> || std::numeric_limits<T>::is_iec559,
                "the portable binary format holds IEEE 754 floating point only");
  if constexpr (std::is_same_v<T, bool>) {
    std::uint8_t byte = 0;
    archive.read(&byte, 1, 1);
    detail::require(byte <= 1, archive.field(), ": a bool stored as byte ", int{byte}, ", expected 0 or 1");
    value = byte == 1;
  } else {
    archive.read(&value, sizeof(T), sizeof(T));
  }
}

template <class T>
void CEREAL_LOAD_FUNCTION_NAME(CheckedBinaryInputArchive& archive, cereal::NameValuePair<T>& pair) {
  archive.enter(pair.name);
  archive(pair.value);
  archive.leave();
}

template <class T>
void CEREAL_LOAD_FUNCTION_NAME(CheckedBinaryInputArchive& archive, cereal::SizeTag<T>& tag) {
  archive(tag.size);
  archive.check_length(static_cast<std::uint64_t>(tag.size));
}

template <class T>
void CEREAL_LOAD_FUNCTION_NAME(CheckedBinaryInputArchive& archive, cereal::BinaryData<T>& data) {
  using Value = std::remove_pointer_t<T>;
  static_assert(!std::is_floating_point_v<Value> || std::numeric_limits<Value>::is_iec559,
                "the portable binary format holds IEEE 754 floating point only");
  archive.read(data.data, static_cast<std::uint64_t>(data.size), sizeof(Value));
}

}  // namespace moe

CEREAL_REGISTER_ARCHIVE(moe::CheckedBinaryInputArchive)

// What CEREAL_SETUP_ARCHIVE_TRAITS does for one direction only (the writer is cereal's, already paired with
// its own reader): load_minimal types such as enums find the type their save_minimal wrote.
namespace cereal::traits::detail {
template <>
struct get_output_from_input<moe::CheckedBinaryInputArchive> {
  using type = cereal::PortableBinaryOutputArchive;
};
}  // namespace cereal::traits::detail
