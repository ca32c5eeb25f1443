#pragma once
// What the text corpora's readers share: the error for a missing source (which says how to get it) and
// reading a whole file.

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>

#include "common/check.hpp"

namespace moe::examples {

/// Throws unless `path` exists: "<who>: <path> not found (<what>); run scripts/fetch-data.sh".
inline void require_source(const std::filesystem::path& path, std::string_view who, std::string_view what) {
  std::error_code error;
  require(std::filesystem::exists(path, error), who, ": ", path.string(), " not found (", what,
          "); run scripts/fetch-data.sh");
}

inline std::string read_text_file(const std::filesystem::path& path, std::string_view who) {
  std::ifstream file(path, std::ios::binary);
  require(file.is_open(), who, ": cannot open ", path.string());
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  require(!file.bad(), who, ": read error in ", path.string());
  return text;
}

}  // namespace moe::examples
