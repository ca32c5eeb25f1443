#pragma once
// safetensors files, the format PyTorch and the Hugging Face hub exchange weights in
// (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes of JSON
// {"__metadata__": {string: string}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}, then
// the tensors' little-endian bytes back to back, offsets counted from the end of the header.
// Needs nlohmann/json (CMake: nlohmann_json::nlohmann_json, which moe::moe links when CMake finds it).

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/module.hpp"
#include "moe/core/types.hpp"
#include "moe/io/atomic_file.hpp"
#include "moe/io/input_file.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/io/strict_json.hpp"
#include "moe/io/tensor.hpp"

namespace moe {

/// Free-form string pairs saved with the tensors (the model's configuration).
using Metadata = std::map<std::string, std::string>;

template <class Scalar>
struct SafetensorsFile {
  StateDict<Scalar> tensors;
  Metadata metadata;
};

/// Longer headers are refused before they are read, as the reference implementation does.
inline constexpr std::uint64_t safetensors_max_header_bytes = 100'000'000;

/// IEEE 754 binary16 to float. Exact: every half is a float, subnormals, infinities and NaN payloads too.
inline float half_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1Fu;
  const std::uint32_t mantissa = bits & 0x3FFu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, a normal float
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));  // inf, nan
  return std::bit_cast<float>(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

/// bfloat16 to float: bfloat16 is the upper half of a float.
inline float bfloat16_to_float(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

/// float to bfloat16, rounded to nearest, ties to even (as PyTorch's Tensor.to(torch.bfloat16)): past the
/// largest bfloat16 that is infinity; NaN stays a (quiet) NaN of the same sign.
inline std::uint16_t float_to_bfloat16(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  if (std::isnan(value)) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  const std::uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

namespace detail {

template <class UInt>
UInt read_little_endian(const unsigned char* bytes) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < sizeof(UInt); ++i) value |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
  return static_cast<UInt>(value);
}

template <class UInt>
void write_little_endian(unsigned char* bytes, UInt value) {
  for (std::size_t i = 0; i < sizeof(UInt); ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
}

template <class Scalar, class Decode>
VectorX<Scalar> decode_each(const std::vector<unsigned char>& bytes, std::size_t size, Decode decode) {
  VectorX<Scalar> values(static_cast<Index>(bytes.size() / size));
  for (Index i = 0; i < values.size(); ++i)
    values(i) = static_cast<Scalar>(decode(bytes.data() + static_cast<std::size_t>(i) * size));
  return values;
}

template <class Scalar>
VectorX<Scalar> decode(DType dtype, const std::vector<unsigned char>& bytes) {
  const std::size_t size = dtype_size(dtype);
  if (dtype == DType::F16)
    return decode_each<Scalar>(bytes, size, [](const unsigned char* b) {
      return half_to_float(read_little_endian<std::uint16_t>(b));
    });
  if (dtype == DType::BF16)
    return decode_each<Scalar>(bytes, size, [](const unsigned char* b) {
      return bfloat16_to_float(read_little_endian<std::uint16_t>(b));
    });
  if (dtype == DType::F32)
    return decode_each<Scalar>(bytes, size, [](const unsigned char* b) {
      return std::bit_cast<float>(read_little_endian<std::uint32_t>(b));
    });
  return decode_each<Scalar>(bytes, size, [](const unsigned char* b) {  // F64
    return std::bit_cast<double>(read_little_endian<std::uint64_t>(b));
  });
}

/// BF16 (rounded to nearest even, from float), F32 or F64 little-endian bytes of `values`.
template <class Scalar>
std::vector<unsigned char> encode(DType dtype, const VectorX<Scalar>& values) {
  const std::size_t size = dtype_size(dtype);
  std::vector<unsigned char> bytes(static_cast<std::size_t>(values.size()) * size);
  for (Index i = 0; i < values.size(); ++i) {
    unsigned char* at = bytes.data() + static_cast<std::size_t>(i) * size;
    if (dtype == DType::BF16)
      write_little_endian(at, float_to_bfloat16(static_cast<float>(values(i))));
    else if (dtype == DType::F32)
      write_little_endian(at, std::bit_cast<std::uint32_t>(static_cast<float>(values(i))));
    else
      write_little_endian(at, std::bit_cast<std::uint64_t>(static_cast<double>(values(i))));
  }
  return bytes;
}

struct TensorEntry {
  std::string name;
  DType dtype;
  Shape shape;
  std::uint64_t begin, end;  // offsets from the end of the header
};

/// A non-negative integer of a header, or an error naming the tensor and the field.
inline std::uint64_t header_count(const nlohmann::json& value, const std::string& context, const std::string& name,
                                  const char* field) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  fail(context, ": tensor ", name, ": ", field, " must hold non-negative integers, found ", json_text(value));
}

/// The entry of tensor `name`, checked against itself and against the `data_bytes` the file holds.
inline TensorEntry tensor_entry(const std::string& name, const nlohmann::json& info, std::uint64_t data_bytes,
                                const std::string& context) {
  if (!info.is_object())
    fail(context, ": tensor ", name, ": expected an object {dtype, shape, data_offsets}, found ", json_text(info));
  for (const auto& [key, value] : info.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail(context, ": tensor ", name, ": unknown field \"", key, "\" (expected dtype, shape, data_offsets)");
  const auto dtype = info.find("dtype");
  const auto shape = info.find("shape");
  const auto offsets = info.find("data_offsets");
  if (dtype == info.end() || shape == info.end() || offsets == info.end())
    fail(context, ": tensor ", name, ": needs dtype, shape and data_offsets");

  TensorEntry entry{name, DType::F32, {}, 0, 0};
  if (!dtype->is_string()) fail(context, ": tensor ", name, ": dtype must be a string, found ", json_text(*dtype));
  const std::string& dtype_text = dtype->get_ref<const std::string&>();
  const std::optional<DType> known = dtype_from_name(dtype_text);
  if (!known) fail(context, ": tensor ", name, ": unsupported dtype ", dtype_text, " (moe reads F16, BF16, F32, F64)");
  entry.dtype = *known;

  if (!shape->is_array()) fail(context, ": tensor ", name, ": shape must be an array, found ", json_text(*shape));
  // The product of the non-zero dimensions must fit an Index, even when a 0 makes the count 0: the shape
  // is kept, and a writer multiplies it out.
  std::uint64_t elements = 1, nonzero = 1;
  for (const nlohmann::json& dim : *shape) {
    const std::uint64_t d = header_count(dim, context, name, "shape");
    elements = saturating_multiply(elements, d);
    nonzero = saturating_multiply(nonzero, std::max<std::uint64_t>(d, 1));
    if (nonzero > static_cast<std::uint64_t>(std::numeric_limits<Index>::max()))
      fail(context, ": tensor ", name, ": shape ", json_text(*shape), " has more elements than a 64-bit count holds");
    entry.shape.push_back(static_cast<Index>(d));
  }

  if (!offsets->is_array() || offsets->size() != 2)
    fail(context, ": tensor ", name, ": data_offsets must be [begin, end], found ", json_text(*offsets));
  entry.begin = header_count((*offsets)[0], context, name, "data_offsets");
  entry.end = header_count((*offsets)[1], context, name, "data_offsets");
  if (entry.begin > entry.end)
    fail(context, ": tensor ", name, ": data_offsets [", entry.begin, ", ", entry.end, "] end before they begin");
  if (entry.end > data_bytes)
    fail(context, ": truncated: tensor ", name, ": data_offsets [", entry.begin, ", ", entry.end,
         "] run past the end of the file, which holds ", data_bytes, " bytes of tensor data");
  const std::uint64_t needed = saturating_multiply(elements, dtype_size(entry.dtype));
  if (entry.end - entry.begin != needed)
    fail(context, ": tensor ", name, ": data_offsets [", entry.begin, ", ", entry.end, "] hold ",
         entry.end - entry.begin, " bytes, shape ", shape_to_string(entry.shape), " of ", dtype_name(entry.dtype),
         " needs ", needed);
  return entry;
}

/// Checks that the tensors tile the data exactly: no overlap, no gap, nothing after the last one.
inline void check_layout(std::vector<TensorEntry>& entries, std::uint64_t data_bytes, const std::string& context) {
  std::ranges::sort(entries, [](const TensorEntry& a, const TensorEntry& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  std::uint64_t covered = 0;
  const TensorEntry* previous = nullptr;
  for (const TensorEntry& e : entries) {
    if (e.begin < covered)
      fail(context, ": tensors ", previous->name, " [", previous->begin, ", ", previous->end, "] and ", e.name, " [",
           e.begin, ", ", e.end, "] overlap");
    if (e.begin > covered)
      fail(context, ": data bytes [", covered, ", ", e.begin, ") before tensor ", e.name,
           " belong to no tensor (the data must be contiguous)");
    covered = e.end;
    previous = &e;
  }
  if (covered != data_bytes)
    fail(context, ": the last ", data_bytes - covered, " bytes of the file belong to no tensor");
}

}  // namespace detail

/// Writes `tensors` (in name order, contiguous) and `metadata` to `path` as F32, F64 or BF16 (rounded to
/// nearest even, as PyTorch rounds), replacing the file atomically.
template <class Scalar>
void save_safetensors(const std::filesystem::path& path, const StateDict<Scalar>& tensors,
                      const Metadata& metadata = {}, DType dtype = dtype_of<Scalar>()) {
  const std::string context = "save_safetensors: " + path.string();
  if (dtype != DType::F32 && dtype != DType::F64 && dtype != DType::BF16)
    detail::fail(context, ": writes F32, F64 or BF16, not ", dtype_name(dtype));
  // The header's members in the order safetensors' own writer uses: __metadata__ first, then the tensors in
  // name order, each {"dtype", "shape", "data_offsets"}. ordered_json keeps that order; its operator[]
  // searches the members one by one, so members (unique: a std::map's keys) are appended to its vector.
  using Json = nlohmann::ordered_json;
  Json::object_t header;
  if (!metadata.empty()) {
    Json::object_t entries;
    for (const auto& [key, value] : metadata) entries.emplace_back(key, value);
    header.emplace_back("__metadata__", std::move(entries));
  }
  std::uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") detail::fail(context, ": a tensor cannot be named __metadata__");
    Index elements = 0;
    try {
      elements = numel(tensor.shape);  // refuses negative dimensions and counts beyond 64 bits
    } catch (const Error& e) {
      detail::fail(context, ": tensor ", name, ": ", e.what());
    }
    Json shape = Json::array();
    for (const Index dim : tensor.shape) shape.push_back(static_cast<std::uint64_t>(dim));
    if (elements != tensor.data.size())
      detail::fail(context, ": tensor ", name, " has shape ", shape_to_string(tensor.shape), " but holds ",
                   tensor.data.size(), " values");
    const std::uint64_t end = offset + static_cast<std::uint64_t>(tensor.data.size()) * dtype_size(dtype);
    Json::object_t entry;
    entry.emplace_back("dtype", std::string(dtype_name(dtype)));
    entry.emplace_back("shape", std::move(shape));
    entry.emplace_back("data_offsets", Json::array({offset, end}));
    header.emplace_back(name, std::move(entry));
    offset = end;
  }
  // Compact, numbers as integers; a name or metadata that is not UTF-8 is an error (no reader would take it).
  std::string text;
  try {
    text = Json(std::move(header)).dump();
  } catch (const Json::exception& e) {
    detail::fail(context, ": ", detail::json_error_reason(e), " (names and metadata must be UTF-8)");
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned, as the reference pads it

  write_file_atomically(path, context, [&](std::ostream& out) {
    unsigned char length[8];
    detail::write_little_endian(length, static_cast<std::uint64_t>(text.size()));
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& entry : tensors) {
      const std::vector<unsigned char> bytes = detail::encode(dtype, entry.second.data);
      out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
  });
}

namespace detail {

/// A safetensors file's header, checked in full: its tensors sorted by offset (tiling the data exactly),
/// its metadata, and where the data starts.
struct SafetensorsHeader {
  std::vector<TensorEntry> entries;
  Metadata metadata;
  std::uint64_t data_start = 0;  // 8 + the header length
};

/// Reads `in`'s header; `file_bytes` is the file's size. Errors open with `context`.
inline SafetensorsHeader read_safetensors_header(std::istream& in, std::uint64_t file_bytes,
                                                 const std::string& context) {
  const auto read = [&](void* to, std::uint64_t bytes) {
    in.read(static_cast<char*>(to), static_cast<std::streamsize>(bytes));
    require(static_cast<bool>(in), context, ": reading the file failed");
  };
  if (file_bytes < 8) fail(context, ": truncated: ", file_bytes, " bytes, fewer than the 8 of the header length");
  unsigned char length_bytes[8];
  read(length_bytes, 8);
  const auto header_bytes = read_little_endian<std::uint64_t>(length_bytes);
  if (header_bytes > safetensors_max_header_bytes)
    fail(context, ": header length ", header_bytes, " is over the limit of ", safetensors_max_header_bytes, " bytes");
  if (header_bytes > file_bytes - 8)
    fail(context, ": truncated: the header length ", header_bytes, " runs past the end of the file (",
         file_bytes - 8, " bytes follow it)");
  std::string text(header_bytes, '\0');
  read(text.data(), header_bytes);
  nlohmann::json header;
  try {
    header = parse_json(text);
  } catch (const JsonError& e) {
    fail(context, ": the header is not valid JSON: ", e.reason(),
         e.offset() ? concat(" at byte ", *e.offset(), " of the header") : std::string());
  }
  if (!header.is_object()) fail(context, ": the header is a JSON ", header.type_name(), ", not an object");

  SafetensorsHeader result;
  result.data_start = 8 + header_bytes;
  const std::uint64_t data_bytes = file_bytes - result.data_start;
  for (const auto& [name, info] : header.items()) {
    if (name != "__metadata__") {
      result.entries.push_back(tensor_entry(name, info, data_bytes, context));
      continue;
    }
    if (!info.is_object()) fail(context, ": __metadata__ must be an object, found ", json_text(info));
    for (const auto& [key, value] : info.items()) {
      if (!value.is_string()) fail(context, ": __metadata__ maps strings to strings; ", key, " is ", json_text(value));
      result.metadata.emplace(key, value.template get<std::string>());
    }
  }
  check_layout(result.entries, data_bytes, context);
  return result;
}

}  // namespace detail

/// Reads a safetensors file, converting F16, BF16, F32 and F64 tensors to Scalar. Every inconsistency
/// of the file is an error naming it (and the tensor).
template <class Scalar>
SafetensorsFile<Scalar> load_safetensors(const std::filesystem::path& path) {
  const std::string context = "load_safetensors: " + path.string();
  InputFile input = open_input_file(path, context);
  std::ifstream& in = input.stream;
  detail::SafetensorsHeader header = detail::read_safetensors_header(in, input.size, context);

  SafetensorsFile<Scalar> file{{}, std::move(header.metadata)};
  std::vector<unsigned char> bytes;
  for (const detail::TensorEntry& entry : header.entries) {  // in file order: one pass, no seeks
    bytes.resize(entry.end - entry.begin);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    detail::require(static_cast<bool>(in), context, ": reading the file failed");
    file.tensors[entry.name] = {entry.shape, detail::decode<Scalar>(entry.dtype, bytes)};
  }
  return file;
}

/// save_safetensors of state_dict(module).
template <HasNamedParameters M>
void save_module(const std::filesystem::path& path, M& module, const Metadata& metadata = {},
                 DType dtype = dtype_of<typename M::Scalar>()) {
  save_safetensors(path, state_dict(module), metadata, dtype);
}

/// load_state_dict from a safetensors file; errors name the file. Read the metadata with load_safetensors.
template <HasNamedParameters M>
LoadReport load_module(const std::filesystem::path& path, M& module, const LoadOptions& options = {}) {
  const auto file = load_safetensors<typename M::Scalar>(path);
  return detail::load_state_dict(module, file.tensors, options, "load_module: " + path.string());
}

}  // namespace moe
