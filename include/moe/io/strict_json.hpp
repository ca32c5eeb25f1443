#pragma once
// What moe's file readers add to nlohmann/json (https://github.com/nlohmann/json; Debian's
// nlohmann-json3-dev, CMake target nlohmann_json::nlohmann_json): strict parsing that also refuses a key
// given twice in one object (nlohmann/json keeps one of them silently), errors as a moe::Error with the
// reason and the byte offset instead of nlohmann's exceptions, and text for error messages that never
// throws. Not part of moe/moe.hpp, which needs only Eigen.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/core/error.hpp"

namespace moe {

/// A document that is not valid JSON: what is wrong and, when known, the byte offset where it was found.
class JsonError : public Error {
 public:
  JsonError(std::string reason, std::optional<std::size_t> offset)
      : Error(offset ? detail::concat(reason, " at byte ", *offset) : reason),
        reason_(std::move(reason)),
        offset_(offset) {}
  const std::string& reason() const { return reason_; }
  std::optional<std::size_t> offset() const { return offset_; }

 private:
  std::string reason_;
  std::optional<std::size_t> offset_;
};

namespace detail {

/// nlohmann's message without its "[json.exception.parse_error.101] parse error at line 1, column 7: "
/// prefix, e.g. "syntax error while parsing value - unexpected '}'; expected '[', '{', or a literal".
inline std::string json_error_reason(const nlohmann::json::exception& e) {
  std::string_view text = e.what();
  if (text.starts_with("[json.exception.")) {
    const std::size_t end = text.find("] ");
    if (end != std::string_view::npos) text.remove_prefix(end + 2);
  }
  if (text.starts_with("parse error")) {
    const std::size_t colon = text.find(": ");
    if (colon != std::string_view::npos) text.remove_prefix(colon + 2);
  }
  return std::string(text);
}

/// The 0-based offset of the byte a parse error is about (nlohmann counts the bytes read, that one too;
/// at the end of the input, the input's length).
inline std::size_t json_error_offset(std::size_t bytes_read) { return bytes_read == 0 ? 0 : bytes_read - 1; }

/// `value` as compact JSON for an error message; bytes that are not UTF-8 are shown as U+FFFD.
template <class Json>
std::string json_text(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

/// `text` as a JSON string for an error message, such as "a\"b"; bytes that are not UTF-8 show as U+FFFD.
inline std::string json_quote(std::string_view text) { return json_text(nlohmann::json(std::string(text))); }

}  // namespace detail

/// How deep parse_json lets arrays and objects nest: nlohmann/json writes and compares values recursively,
/// so a header of a million '[' would overflow the stack in the first error message that quotes it.
inline constexpr int json_max_depth = 64;

/// Parses a whole JSON document (RFC 8259: no comments, no trailing commas, UTF-8) into `Json`
/// (nlohmann::json, whose objects are sorted by key, or nlohmann::ordered_json, which keeps the document's
/// order). Throws JsonError, never a nlohmann exception; a key given twice in one object is an error, and
/// so is nesting deeper than json_max_depth.
template <class Json = nlohmann::json>
Json parse_json(std::string_view text) {
  std::vector<std::unordered_set<std::string>> keys;  // of each object being read, innermost last
  const auto check_keys = [&keys](int depth, typename Json::parse_event_t event, Json& parsed) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= json_max_depth)
      throw JsonError(detail::concat("arrays and objects nested deeper than ", json_max_depth, " levels"),
                      std::nullopt);
    if (event == Json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      keys.pop_back();
    } else if (event == Json::parse_event_t::key) {
      const std::string& key = parsed.template get_ref<const std::string&>();
      if (!keys.back().insert(key).second)
        throw JsonError("duplicate key " + detail::json_quote(key), std::nullopt);
    }
    return true;
  };
  try {
    return Json::parse(text, check_keys, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const typename Json::parse_error& e) {
    throw JsonError(detail::json_error_reason(e), detail::json_error_offset(e.byte));
  } catch (const typename Json::exception& e) {
    throw JsonError(detail::json_error_reason(e), std::nullopt);
  }
}

}  // namespace moe
