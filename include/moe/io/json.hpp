#pragma once
// A small strict JSON (RFC 8259) reader and writer, enough for safetensors headers and config files:
// objects, arrays, strings (UTF-8, every escape including \uXXXX surrogate pairs), integers, numbers,
// true, false, null. Parse errors give the byte offset. Strict: no trailing commas, comments, NaN,
// leading zeros, duplicate keys or invalid UTF-8.

#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/utf8.hpp"

namespace moe::json {

class Value;
using Array = std::vector<Value>;
/// Members in document order (a writer controls the order; safetensors readers rely on none); keys unique.
using Object = std::vector<std::pair<std::string, Value>>;

/// null, a boolean, an integer (a number written without fraction or exponent that fits 64 bits), a
/// number, a string, an array or an object.
class Value {
 public:
  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : data_(b) {}
  template <std::integral I>
    requires(!std::same_as<I, bool>)
  Value(I i) : data_(checked_integer(i)) {}
  Value(double d) : data_(d) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(std::string_view s) : data_(std::string(s)) {}
  Value(const char* s) : data_(std::string(s)) {}
  Value(Array a) : data_(std::move(a)) {}
  Value(Object o) : data_(std::move(o)) {}

  bool is_null() const { return std::holds_alternative<std::nullptr_t>(data_); }
  bool is_bool() const { return std::holds_alternative<bool>(data_); }
  bool is_integer() const { return std::holds_alternative<std::int64_t>(data_); }
  bool is_number() const { return is_integer() || std::holds_alternative<double>(data_); }  // integers too
  bool is_string() const { return std::holds_alternative<std::string>(data_); }
  bool is_array() const { return std::holds_alternative<Array>(data_); }
  bool is_object() const { return std::holds_alternative<Object>(data_); }

  bool as_bool() const { return get<bool>("a boolean"); }
  std::int64_t as_integer() const { return get<std::int64_t>("an integer"); }
  double as_number() const {
    return is_integer() ? static_cast<double>(as_integer()) : get<double>("a number");
  }
  const std::string& as_string() const { return get<std::string>("a string"); }
  const Array& as_array() const { return get<Array>("an array"); }
  const Object& as_object() const { return get<Object>("an object"); }

  /// The member `key` of an object, or nullptr (also when this is not an object).
  const Value* find(std::string_view key) const {
    if (const Object* object = std::get_if<Object>(&data_))
      for (const auto& [name, value] : *object)
        if (name == key) return &value;
    return nullptr;
  }

  /// "null", "boolean", "integer", "number", "string", "array" or "object", for error messages.
  std::string_view type_name() const {
    constexpr std::string_view names[] = {"null", "boolean", "integer", "number", "string", "array", "object"};
    return names[data_.index()];
  }

  bool operator==(const Value&) const = default;

 private:
  template <class I>
  static std::int64_t checked_integer(I i) {
    if constexpr (std::is_unsigned_v<I> && sizeof(I) >= sizeof(std::int64_t))
      moe::detail::require(i <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()),
                           "JSON: integer ", i, " does not fit in 64 signed bits");
    return static_cast<std::int64_t>(i);
  }

  template <class T>
  const T& get(const char* expected) const {
    const T* value = std::get_if<T>(&data_);
    if (!value) {
      const bool vowel = std::string_view("aeiou").find(type_name().front()) != std::string_view::npos;
      moe::detail::fail("JSON: expected ", expected, ", got ", vowel ? "an " : "a ", type_name());
    }
    return *value;
  }

  std::variant<std::nullptr_t, bool, std::int64_t, double, std::string, Array, Object> data_;
};

/// A document that is not valid JSON: what is wrong, and the byte offset where it was found.
class ParseError : public Error {
 public:
  ParseError(std::string reason, std::size_t offset)
      : Error(moe::detail::concat("JSON: ", reason, " at byte ", offset)),
        reason_(std::move(reason)),
        offset_(offset) {}
  const std::string& reason() const { return reason_; }
  std::size_t offset() const { return offset_; }

 private:
  std::string reason_;
  std::size_t offset_;
};

namespace detail {

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Value document() {
    skip_whitespace();
    Value value = parse_value(0);
    skip_whitespace();
    if (pos_ < text_.size()) fail("unexpected " + describe_byte() + " after the JSON value");
    return value;
  }

 private:
  static constexpr int max_depth = 512;  // deeper documents would risk the stack; no header nests beyond 3

  [[noreturn]] void fail(const std::string& reason) const { fail_at(reason, pos_); }
  [[noreturn]] static void fail_at(const std::string& reason, std::size_t offset) { throw ParseError(reason, offset); }

  bool at_end() const { return pos_ >= text_.size(); }
  unsigned char byte() const { return static_cast<unsigned char>(text_[pos_]); }

  std::string describe_byte() const {
    if (at_end()) return "end of input";
    const unsigned char c = byte();
    if (c >= 0x20 && c < 0x7F) return std::string("character '") + static_cast<char>(c) + "'";
    constexpr char hex[] = "0123456789ABCDEF";
    return std::string("byte 0x") + hex[c >> 4] + hex[c & 0xF];
  }

  void skip_whitespace() {
    while (!at_end() && (byte() == ' ' || byte() == '\t' || byte() == '\n' || byte() == '\r')) ++pos_;
  }

  void expect(char c) {
    if (at_end() || text_[pos_] != c) fail(std::string("expected '") + c + "', found " + describe_byte());
    ++pos_;
  }

  Value parse_value(int depth) {
    if (at_end()) fail("unexpected end of input, expected a value");
    switch (text_[pos_]) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return parse_string();
      case 't': return parse_literal("true", true);
      case 'f': return parse_literal("false", false);
      case 'n': return parse_literal("null", nullptr);
      default:
        if (text_[pos_] == '-' || (byte() >= '0' && byte() <= '9')) return parse_number();
        fail("unexpected " + describe_byte() + ", expected a value");
    }
  }

  Value parse_literal(std::string_view word, Value value) {
    if (text_.substr(pos_, word.size()) != word) fail("invalid literal, expected " + std::string(word));
    pos_ += word.size();
    return value;
  }

  void check_depth(int depth) const {
    if (depth > max_depth) fail("nesting deeper than " + std::to_string(max_depth) + " levels");
  }

  Value parse_array(int depth) {
    check_depth(depth);
    ++pos_;  // '['
    Array array;
    skip_whitespace();
    if (!at_end() && text_[pos_] == ']') {
      ++pos_;
      return array;
    }
    while (true) {
      skip_whitespace();
      array.push_back(parse_value(depth));
      skip_whitespace();
      if (!at_end() && text_[pos_] == ']') {
        ++pos_;
        return array;
      }
      if (at_end() || text_[pos_] != ',') fail("expected ',' or ']' in an array, found " + describe_byte());
      ++pos_;
    }
  }

  Value parse_object(int depth) {
    check_depth(depth);
    ++pos_;  // '{'
    Object object;
    std::unordered_set<std::string> keys;  // a linear scan would make encoder.json's 50k keys quadratic
    skip_whitespace();
    if (!at_end() && text_[pos_] == '}') {
      ++pos_;
      return object;
    }
    while (true) {
      skip_whitespace();
      const std::size_t key_offset = pos_;
      if (at_end() || text_[pos_] != '"') fail("expected a string key in an object, found " + describe_byte());
      std::string key = parse_string();
      if (!keys.insert(key).second) fail_at("duplicate key \"" + key + "\"", key_offset);
      skip_whitespace();
      expect(':');
      skip_whitespace();
      object.emplace_back(std::move(key), parse_value(depth));
      skip_whitespace();
      if (!at_end() && text_[pos_] == '}') {
        ++pos_;
        return object;
      }
      if (at_end() || text_[pos_] != ',') fail("expected ',' or '}' in an object, found " + describe_byte());
      ++pos_;
    }
  }

  std::string parse_string() {
    const std::size_t start = pos_;
    ++pos_;  // '"'
    std::string out;
    while (true) {
      if (at_end()) fail_at("unterminated string", start);
      const unsigned char c = byte();
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        parse_escape(out);
      } else if (c < 0x20) {
        fail("control character " + describe_byte() + " in a string (write it as an escape)");
      } else if (c < 0x80) {
        out += static_cast<char>(c);
        ++pos_;
      } else {
        const std::size_t length = utf8_sequence_length();
        out.append(text_.substr(pos_, length));
        pos_ += length;
      }
    }
  }

  /// The length of the valid UTF-8 sequence at pos_ (RFC 3629: no overlong forms, no surrogates).
  std::size_t utf8_sequence_length() const {
    const unsigned char lead = byte();
    if (lead < 0xC2 || lead > 0xF4) fail("invalid UTF-8 lead " + describe_byte());
    const moe::detail::Utf8Char c = moe::detail::decode_utf8(text_, pos_);
    if (!c.valid) fail_at("invalid UTF-8 sequence", pos_);
    return c.length;
  }

  void parse_escape(std::string& out) {
    const std::size_t start = pos_;
    ++pos_;  // '\'
    if (at_end()) fail_at("unterminated escape", start);
    const char c = text_[pos_++];
    switch (c) {
      case '"': out += '"'; return;
      case '\\': out += '\\'; return;
      case '/': out += '/'; return;
      case 'b': out += '\b'; return;
      case 'f': out += '\f'; return;
      case 'n': out += '\n'; return;
      case 'r': out += '\r'; return;
      case 't': out += '\t'; return;
      case 'u': break;
      default: fail_at(std::string("invalid escape \\") + (c >= 0x20 && c < 0x7F ? std::string(1, c) : "?"), start);
    }
    std::uint32_t code = parse_hex4();
    if (code >= 0xDC00 && code <= 0xDFFF) fail_at("lone low surrogate in \\u escape", start);
    if (code >= 0xD800 && code <= 0xDBFF) {
      if (text_.substr(pos_, 2) != "\\u") fail_at("high surrogate not followed by a \\u low surrogate", start);
      pos_ += 2;
      const std::uint32_t low = parse_hex4();
      if (low < 0xDC00 || low > 0xDFFF) fail_at("high surrogate not followed by a low surrogate", start);
      code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    }
    append_utf8(out, code);
  }

  std::uint32_t parse_hex4() {
    std::uint32_t code = 0;
    for (int i = 0; i < 4; ++i) {
      if (at_end()) fail("unterminated \\u escape");
      const char c = text_[pos_];
      std::uint32_t digit = 0;
      if (c >= '0' && c <= '9') digit = static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') digit = static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') digit = static_cast<std::uint32_t>(c - 'A' + 10);
      else fail("expected a hexadecimal digit in a \\u escape, found " + describe_byte());
      code = code * 16 + digit;
      ++pos_;
    }
    return code;
  }

  static void append_utf8(std::string& out, std::uint32_t code) {
    const auto put = [&](std::uint32_t byte) { out += static_cast<char>(byte); };
    if (code < 0x80) {
      put(code);
    } else if (code < 0x800) {
      put(0xC0 | (code >> 6));
      put(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      put(0xE0 | (code >> 12));
      put(0x80 | ((code >> 6) & 0x3F));
      put(0x80 | (code & 0x3F));
    } else {
      put(0xF0 | (code >> 18));
      put(0x80 | ((code >> 12) & 0x3F));
      put(0x80 | ((code >> 6) & 0x3F));
      put(0x80 | (code & 0x3F));
    }
  }

  bool digit() const { return !at_end() && byte() >= '0' && byte() <= '9'; }

  void digits(const char* after) {
    if (!digit()) fail(std::string("expected a digit ") + after + ", found " + describe_byte());
    while (digit()) ++pos_;
  }

  /// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
  Value parse_number() {
    const std::size_t start = pos_;
    if (text_[pos_] == '-') ++pos_;
    if (!at_end() && text_[pos_] == '0') {
      ++pos_;
      if (digit()) fail("leading zero in a number");
    } else {
      digits("in a number");
    }
    bool integer = true;
    if (!at_end() && text_[pos_] == '.') {
      ++pos_;
      digits("after the decimal point");
      integer = false;
    }
    if (!at_end() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
      if (!at_end() && (text_[pos_] == '+' || text_[pos_] == '-')) ++pos_;
      digits("in the exponent");
      integer = false;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (integer) {
      std::int64_t value = 0;
      if (std::from_chars(first, last, value).ec != std::errc{})
        fail_at("integer " + std::string(first, last) + " does not fit in 64 signed bits", start);
      return value;
    }
    double value = 0;
    if (std::from_chars(first, last, value).ec != std::errc{})
      fail_at("number " + std::string(first, last) + " is out of the range of a double", start);
    return value;
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

inline void write_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          constexpr char hex[] = "0123456789abcdef";
          out += "\\u00";
          out += hex[(c >> 4) & 0xF];
          out += hex[c & 0xF];
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

template <class Number>
void write_number(std::string& out, Number number) {
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, number);  // shortest exact form
  out.append(buffer, result.ptr);
}

inline void write(std::string& out, const Value& value) {
  if (value.is_null()) {
    out += "null";
  } else if (value.is_bool()) {
    out += value.as_bool() ? "true" : "false";
  } else if (value.is_integer()) {
    write_number(out, value.as_integer());
  } else if (value.is_number()) {
    const double number = value.as_number();
    moe::detail::require(std::isfinite(number), "JSON: cannot write the number ", number, " (JSON has no inf or nan)");
    const std::size_t start = out.size();
    write_number(out, number);
    // Keep it a number on the way back: "2" would read as an integer.
    if (out.find_first_of(".e", start) == std::string::npos) out += ".0";
  } else if (value.is_string()) {
    write_string(out, value.as_string());
  } else if (value.is_array()) {
    out += '[';
    for (const Value& item : value.as_array()) {
      if (out.back() != '[') out += ',';
      write(out, item);
    }
    out += ']';
  } else {
    out += '{';
    for (const auto& [key, item] : value.as_object()) {
      if (out.back() != '{') out += ',';
      write_string(out, key);
      out += ':';
      write(out, item);
    }
    out += '}';
  }
}

}  // namespace detail

/// The value of a whole JSON document; throws ParseError.
inline Value parse(std::string_view text) { return detail::Parser(text).document(); }

/// Compact JSON (no spaces); numbers in their shortest form that reads back exactly.
inline std::string dump(const Value& value) {
  std::string out;
  detail::write(out, value);
  return out;
}

}  // namespace moe::json
