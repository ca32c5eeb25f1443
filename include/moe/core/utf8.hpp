#pragma once
// UTF-8 decoding, which the GPT-2 tokenizer uses, and moe::to_valid_utf8 for text that
// may hold bytes that are not UTF-8.

#include <cstddef>
#include <string>
#include <string_view>

namespace moe::detail {

struct Utf8Char {
  char32_t code_point;  // U+FFFD for an invalid sequence
  std::size_t length;   // bytes taken: for an invalid sequence, its maximal subpart (at least 1)
  bool valid;
};

/// Decodes the character at `pos` (< text.size()); an invalid sequence counts as one U+FFFD spanning its
/// maximal subpart, as the WHATWG decoder of TextDecoder and node's Buffer.toString do.
inline Utf8Char decode_utf8(std::string_view text, std::size_t pos) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return {lead, 1, true};
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // the allowed range of the second byte
  char32_t code_point = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    code_point = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    code_point = lead & 0x0Fu;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    code_point = lead & 0x07u;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return {0xFFFD, 1, false};
  }
  for (std::size_t i = 1; i < length; ++i) {
    if (pos + i >= text.size() || byte(pos + i) < low || byte(pos + i) > high) return {0xFFFD, i, false};
    code_point = (code_point << 6) | (byte(pos + i) & 0x3Fu);
    low = 0x80;
    high = 0xBF;
  }
  return {code_point, length, true};
}

inline void append_utf8(std::string& out, char32_t c) {
  const auto put = [&](char32_t byte) { out += static_cast<char>(byte); };
  if (c < 0x80) {
    put(c);
  } else if (c < 0x800) {
    put(0xC0 | (c >> 6));
    put(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    put(0xE0 | (c >> 12));
    put(0x80 | ((c >> 6) & 0x3F));
    put(0x80 | (c & 0x3F));
  } else {
    put(0xF0 | (c >> 18));
    put(0x80 | ((c >> 12) & 0x3F));
    put(0x80 | ((c >> 6) & 0x3F));
    put(0x80 | (c & 0x3F));
  }
}

/// `text` with each invalid UTF-8 sequence replaced by U+FFFD (WHATWG); `text` itself when it is valid.
inline std::string_view replace_invalid_utf8(std::string_view text, std::string& storage) {
  std::size_t pos = 0;
  for (Utf8Char c; pos < text.size() && (c = decode_utf8(text, pos)).valid;) pos += c.length;
  if (pos == text.size()) return text;
  storage.assign(text.substr(0, pos));
  while (pos < text.size()) {
    const Utf8Char c = decode_utf8(text, pos);
    if (c.valid) storage.append(text.substr(pos, c.length));
    else append_utf8(storage, c.code_point);
    pos += c.length;
  }
  return storage;
}

}  // namespace moe::detail

namespace moe {

/// `text` with each invalid UTF-8 sequence replaced by U+FFFD, as a new string: the text GPT2Tokenizer
/// reads (an invalid sequence counts as one U+FFFD spanning its maximal subpart, as the WHATWG decoder
/// of TextDecoder and node's Buffer.toString do). Valid text comes back unchanged.
inline std::string to_valid_utf8(std::string_view text) {
  std::string storage;
  const std::string_view valid = detail::replace_invalid_utf8(text, storage);
  return valid.data() == text.data() ? std::string(text) : storage;
}

}  // namespace moe
