#pragma once
// Hugging Face checkpoint directories: model.safetensors.index.json, {"metadata": {...}, "weight_map": {tensor
// name: shard file name}}, beside the shards it names (model-00001-of-00002.safetensors, ...), or a single
// model.safetensors. Read lazily: opening reads the index only, a shard's header is read the first time one of
// its tensors is asked for, and of the data only the bytes of the tensors asked for are read. Written by
// save_sharded_safetensors as transformers' save_pretrained writes them. Needs nlohmann/json, as
// moe/io/safetensors.hpp.

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/io/atomic_file.hpp"
#include "moe/io/input_file.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/io/strict_json.hpp"
#include "moe/io/tensor.hpp"

namespace moe {

namespace detail {

/// The text of the file at `path`, or an error opening with `context`.
inline std::string read_text_file(const std::filesystem::path& path, const std::string& context) {
  InputFile input = open_input_file(path, concat(context, ": ", path.string()));
  std::ifstream& in = input.stream;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  require(!in.bad(), context, ": reading ", path.string(), " failed");
  return text;
}

/// The JSON document in the file at `path`; errors name the file, the reason and the byte.
inline nlohmann::json read_json_file(const std::filesystem::path& path, const std::string& context) {
  try {
    return parse_json(read_text_file(path, context));
  } catch (const JsonError& e) {
    fail(context, ": ", path.string(), " is not valid JSON: ", e.what());
  }
}

}  // namespace detail

/// What a checkpoint's header says of one tensor.
struct TensorInfo {
  DType dtype;
  Shape shape;
  std::string shard;  // the file that holds it
};

/// A checkpoint directory, read lazily (see the top of this file). Errors name the tensor, the shard and
/// what was wrong.
class ShardedSafetensors {
 public:
  static constexpr const char* index_file = "model.safetensors.index.json";
  static constexpr const char* single_file = "model.safetensors";

  explicit ShardedSafetensors(std::filesystem::path dir) : dir_(std::move(dir)) {
    const std::string context = "ShardedSafetensors: " + dir_.string();
    const std::filesystem::path index = dir_ / index_file;
    if (!std::filesystem::exists(index)) {
      detail::require(std::filesystem::exists(dir_ / single_file), context, ": holds neither ", index_file, " nor ",
                      single_file);
      for (const auto& entry : open(single_file).entries) weight_map_.emplace(entry.first, single_file);
      return;
    }
    const nlohmann::json json = detail::read_json_file(index, context);
    const auto map = json.is_object() ? json.find("weight_map") : json.end();
    if (map == json.end() || !map->is_object())
      detail::fail(context, ": ", index_file, " needs an object \"weight_map\" {tensor name: shard file}");
    for (const auto& [name, shard] : map->items()) {
      if (!shard.is_string())
        detail::fail(context, ": ", index_file, ": tensor ", name, " maps to ", detail::json_text(shard),
                     ", not a shard file name");
      const std::string& file = shard.get_ref<const std::string&>();
      if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos ||
          file == "." || file == "..")
        detail::fail(context, ": ", index_file, ": tensor ", name, " maps to \"", file,
                     "\", which is not a file name in the directory");
      weight_map_.emplace(name, file);
    }
  }

  const std::filesystem::path& directory() const { return dir_; }

  /// Every tensor name of the checkpoint, sorted, with the shard file that holds it.
  const std::map<std::string, std::string>& weight_map() const { return weight_map_; }
  bool contains(const std::string& name) const { return weight_map_.contains(name); }

  /// The dtype, shape and shard of tensor `name` (reads its shard's header the first time).
  TensorInfo info(const std::string& name) {
    const auto& [shard, entry] = find(name);
    return {entry.dtype, entry.shape, shard};
  }

  /// Tensor `name` as Scalar (from F16, BF16, F32 or F64), reading only its bytes.
  template <class Scalar>
  Tensor<Scalar> load(const std::string& name) {
    const auto& [shard, entry] = find(name);
    const std::filesystem::path path = dir_ / shard;
    InputFile input = open_input_file(path, context(shard));
    std::ifstream& in = input.stream;
    in.seekg(static_cast<std::streamoff>(shards_.at(shard).data_start + entry.begin));
    std::vector<unsigned char> bytes(entry.end - entry.begin);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    detail::require(static_cast<bool>(in), context(shard), ": reading tensor ", name, " failed");
    return {entry.shape, detail::decode<Scalar>(entry.dtype, bytes)};
  }

  /// load(name), checked to have `shape`; the error names the tensor, its shard and both shapes.
  template <class Scalar>
  Tensor<Scalar> load(const std::string& name, const Shape& shape) {
    const TensorInfo found = info(name);
    if (found.shape != shape)
      detail::fail(context(found.shard), ": tensor ", name, " has shape ", shape_to_string(found.shape),
                   ", expected ", shape_to_string(shape));
    return load<Scalar>(name);
  }

  /// The shards whose headers were read so far, sorted: what the loads touched.
  std::vector<std::string> opened_shards() const {
    std::vector<std::string> names;
    for (const auto& entry : shards_) names.push_back(entry.first);
    return names;
  }

 private:
  struct Shard {
    std::uint64_t data_start = 0;
    std::map<std::string, detail::TensorEntry> entries;
  };

  std::string context(const std::string& shard) const {
    return "ShardedSafetensors: " + (dir_ / shard).string();
  }

  const Shard& open(const std::string& shard) {
    if (const auto found = shards_.find(shard); found != shards_.end()) return found->second;
    const std::filesystem::path path = dir_ / shard;
    const std::string where = context(shard);
    InputFile input = open_input_file(path, where);
    detail::SafetensorsHeader header = detail::read_safetensors_header(input.stream, input.size, where);
    Shard result{header.data_start, {}};
    for (detail::TensorEntry& entry : header.entries) result.entries.emplace(entry.name, std::move(entry));
    return shards_.emplace(shard, std::move(result)).first->second;
  }

  std::pair<const std::string&, const detail::TensorEntry&> find(const std::string& name) {
    const auto mapped = weight_map_.find(name);
    if (mapped == weight_map_.end())
      detail::fail("ShardedSafetensors: ", dir_.string(), ": no tensor ", name, " in the checkpoint");
    const Shard& shard = open(mapped->second);
    const auto entry = shard.entries.find(name);
    if (entry == shard.entries.end())
      detail::fail(context(mapped->second), ": tensor ", name, " is not in this shard, where ", index_file,
                   " puts it");
    return {mapped->second, entry->second};
  }

  std::filesystem::path dir_;
  std::map<std::string, std::string> weight_map_;  // tensor name -> shard file
  std::map<std::string, Shard> shards_;            // the shards opened so far
};

namespace detail {

/// "model-00002-of-00005.safetensors" for shard 2 of 5, transformers' name.
inline std::string shard_file_name(std::size_t shard, std::size_t shards) {
  char name[64];
  std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", shard, shards);
  return name;
}

/// Whether `name` has the form of a shard's name, "model-NNNNN-of-NNNNN.safetensors".
inline bool is_shard_file_name(const std::string& name) {
  constexpr std::string_view digits = "0123456789";
  return name.size() == 32 && name.starts_with("model-") && name.ends_with(".safetensors") &&
         name.substr(11, 4) == "-of-" && name.substr(6, 5).find_first_not_of(digits) == std::string::npos &&
         name.substr(15, 5).find_first_not_of(digits) == std::string::npos;
}

}  // namespace detail

/// Writes `tensors` into directory `dir` (made if missing) as a checkpoint ShardedSafetensors and
/// transformers read, in `dtype` (F32, F64 or BF16) with metadata {"format": "pt"}, which transformers asks
/// for: with max_shard_bytes 0 one model.safetensors; else shards model-0000i-of-0000n.safetensors, the
/// tensors in name order, a shard closed before the tensor that would take its data past max_shard_bytes (a
/// larger tensor gets a shard of its own), and model.safetensors.index.json {"metadata": {"total_size":
/// bytes of tensor data}, "weight_map": {tensor: shard}} written last. Files of the other layout or shards
/// a previous save left are removed, so that the directory holds this checkpoint only.
template <class Scalar>
void save_sharded_safetensors(const std::filesystem::path& dir, const StateDict<Scalar>& tensors, DType dtype,
                              std::uint64_t max_shard_bytes = 0) {
  namespace fs = std::filesystem;
  const std::string context = "save_sharded_safetensors: " + dir.string();
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) detail::fail(context, ": cannot create the directory: ", error.message());
  const Metadata metadata{{"format", "pt"}};

  std::set<std::string> written;
  if (max_shard_bytes == 0) {
    save_safetensors(dir / ShardedSafetensors::single_file, tensors, metadata, dtype);
    written.insert(ShardedSafetensors::single_file);
  } else {
    std::vector<StateDict<Scalar>> shards(1);
    std::uint64_t shard_bytes = 0, total_bytes = 0;
    for (const auto& [name, tensor] : tensors) {
      const std::uint64_t bytes = static_cast<std::uint64_t>(tensor.data.size()) * dtype_size(dtype);
      if (shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
        shards.emplace_back();
        shard_bytes = 0;
      }
      shards.back().emplace(name, tensor);
      shard_bytes += bytes;
      total_bytes += bytes;
    }
    nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
    for (std::size_t s = 0; s < shards.size(); ++s) {
      const std::string file = detail::shard_file_name(s + 1, shards.size());
      save_safetensors(dir / file, shards[s], metadata, dtype);
      written.insert(file);
      for (const auto& entry : shards[s]) weight_map[entry.first] = file;
    }
    const nlohmann::ordered_json index{{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    write_file_atomically(dir / ShardedSafetensors::index_file, context,
                                  [&](std::ostream& out) { out << index.dump(2) << '\n'; });
    written.insert(ShardedSafetensors::index_file);
  }
  std::vector<std::string> stale;
  for (const std::string name : {ShardedSafetensors::single_file, ShardedSafetensors::index_file})
    if (!written.contains(name) && fs::exists(dir / name)) stale.push_back(name);
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (detail::is_shard_file_name(name) && !written.contains(name)) stale.push_back(name);
  }
  for (const std::string& name : stale)
    if (!fs::remove(dir / name, error)) detail::fail(context, ": cannot remove the stale ", name, ": ", error.message());
}

}  // namespace moe
