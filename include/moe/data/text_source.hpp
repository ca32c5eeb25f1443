#pragma once
// What the text corpora's readers share: the error for a missing source (which says how to get it), reading
// a whole file, and making text valid UTF-8.

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>

#include "moe/core/error.hpp"

namespace moe::detail {

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

/// Length of the valid UTF-8 sequence starting at text[pos], or 0 if none starts there (a stray
/// continuation byte, an overlong form, a surrogate, a value above U+10FFFF or a truncated sequence).
inline std::size_t utf8_sequence_length(std::string_view text, std::size_t pos) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // the allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (pos + length > text.size()) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    if (byte(pos + i) < low || byte(pos + i) > high) return 0;
    low = 0x80;
    high = 0xBF;
  }
  return length;
}

/// `text` with every byte that starts no valid UTF-8 sequence replaced by U+FFFD.
inline std::string to_valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t pos = 0; pos < text.size();) {
    const std::size_t length = utf8_sequence_length(text, pos);
    if (length == 0) {
      out += "\xEF\xBF\xBD";
      ++pos;
    } else {
      out.append(text.substr(pos, length));
      pos += length;
    }
  }
  return out;
}

}  // namespace moe::detail
