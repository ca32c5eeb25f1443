#pragma once
// A compact vocabulary: the token ids a training corpus uses, renumbered, so that a language model's
// embedding and output layer have one row per token it can learn instead of GPT-2's 50257.

#include <algorithm>
#include <charconv>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// Maps source ids (GPT-2's, in [0, source_size)) to compact ids and back. Compact id 0 is <unk>, which
/// every source id outside the map becomes; compact ids 1, 2, ... are the kept source ids in the order
/// given. from_corpus orders them by frequency, most frequent first (ties by smaller source id), so that
/// keeping the most frequent tokens is keeping a prefix, and compact ids say how common a token is.
///
/// to_string() gives one line, "moe.VocabularyMap/1 source_size=50257 ids=262,13,11", short enough for a
/// safetensors __metadata__ entry; parse() reads it back and checks it.
class VocabularyMap {
 public:
  static constexpr Index unk = 0;

  /// Compact id i + 1 is source_ids[i]; the ids must be distinct and in [0, source_size).
  VocabularyMap(std::vector<Index> source_ids, Index source_size)
      : source_ids_(std::move(source_ids)), source_size_(source_size) {
    detail::require(source_size > 0, "VocabularyMap: source_size must be positive, got ", source_size);
    compact_.reserve(source_ids_.size());
    for (std::size_t i = 0; i < source_ids_.size(); ++i) {
      const Index id = source_ids_[i];
      detail::require(id >= 0 && id < source_size, "VocabularyMap: source id ", id, " at index ", i,
                      " of the list is outside [0, ", source_size, ")");
      const auto [slot, inserted] = compact_.emplace(id, static_cast<Index>(i) + 1);
      detail::require(inserted, "VocabularyMap: source id ", id, " is in the list twice, at indices ",
                      slot->second - 1, " and ", i);
    }
  }

  /// The source ids of `corpus`, most frequent first, at most max_size - 1 of them (<unk> takes one).
  static VocabularyMap from_corpus(std::span<const Index> corpus, Index source_size,
                                   Index max_size = std::numeric_limits<Index>::max()) {
    detail::require(source_size > 0, "VocabularyMap: source_size must be positive, got ", source_size);
    detail::require(max_size >= 1, "VocabularyMap: max_size must be at least 1 (for <unk>), got ", max_size);
    detail::require(!corpus.empty(), "VocabularyMap: the corpus is empty");
    std::vector<std::pair<Index, Index>> counts(static_cast<std::size_t>(source_size));  // (-count, id)
    for (Index id = 0; id < source_size; ++id) counts[static_cast<std::size_t>(id)].second = id;
    for (std::size_t i = 0; i < corpus.size(); ++i) {
      const Index id = corpus[i];
      detail::require(id >= 0 && id < source_size, "VocabularyMap: corpus token ", i, " has id ", id,
                      ", outside [0, ", source_size, ")");
      --counts[static_cast<std::size_t>(id)].first;
    }
    std::sort(counts.begin(), counts.end());
    std::vector<Index> ids;
    for (const auto& [negative_count, id] : counts) {
      if (negative_count == 0 || static_cast<Index>(ids.size()) + 1 >= max_size) break;
      ids.push_back(id);
    }
    return VocabularyMap(std::move(ids), source_size);
  }

  /// Reads what to_string wrote; `origin` (say, "model.safetensors: __metadata__ vocabulary") labels errors.
  static VocabularyMap parse(std::string_view text, std::string_view origin = "VocabularyMap") {
    std::size_t pos = 0;
    const auto fail = [&](const auto&... what) {
      detail::fail(origin, ": character ", pos, ": expected ", what...);
    };
    const auto literal = [&](std::string_view expected) {
      if (!text.substr(pos).starts_with(expected)) fail("\"", expected, "\"");
      pos += expected.size();
    };
    const auto number = [&]() {
      Index value = 0;
      const bool digit = pos < text.size() && text[pos] >= '0' && text[pos] <= '9';
      const auto [end, error] = std::from_chars(text.data() + pos, text.data() + text.size(), value);
      if (!digit || error != std::errc()) fail("a non-negative integer that fits in ", sizeof(Index) * 8, " bits");
      pos = static_cast<std::size_t>(end - text.data());
      return value;
    };
    literal("moe.VocabularyMap/1 source_size=");
    const Index source_size = number();
    if (source_size == 0) fail("a positive source_size");
    literal(" ids=");
    std::vector<Index> ids;
    while (pos < text.size()) {
      if (!ids.empty()) literal(",");
      const std::size_t start = pos;
      const Index id = number();
      if (id >= source_size) {
        pos = start;
        fail("an id below source_size ", source_size, ", got ", id);
      }
      ids.push_back(id);
    }
    try {
      return VocabularyMap(std::move(ids), source_size);
    } catch (const Error& e) {
      detail::fail(origin, ": ", e.what());
    }
  }

  std::string to_string() const {
    std::string text = detail::concat("moe.VocabularyMap/1 source_size=", source_size_, " ids=");
    for (std::size_t i = 0; i < source_ids_.size(); ++i) {
      if (i > 0) text += ',';
      text += std::to_string(source_ids_[i]);
    }
    return text;
  }

  /// The number of compact ids, <unk> included: the rows of the embedding and of the output layer.
  Index size() const { return static_cast<Index>(source_ids_.size()) + 1; }
  Index source_size() const { return source_size_; }
  /// Compact id c >= 1 stands for source_ids()[c - 1].
  const std::vector<Index>& source_ids() const { return source_ids_; }

  /// The compact id of a source id; <unk> for one the map does not keep.
  Index to_compact(Index source_id) const {
    detail::require(source_id >= 0 && source_id < source_size_, "VocabularyMap: source id ", source_id,
                    " is outside [0, ", source_size_, ")");
    const auto compact = compact_.find(source_id);
    return compact == compact_.end() ? unk : compact->second;
  }

  /// The source id of a compact id; <unk> has none and is an error.
  Index to_source(Index compact_id) const {
    detail::require(compact_id != unk, "VocabularyMap: compact id 0 is <unk>, which stands for no source id");
    detail::require(compact_id > 0 && compact_id < size(), "VocabularyMap: compact id ", compact_id,
                    " is outside [0, ", size(), ")");
    return source_ids_[static_cast<std::size_t>(compact_id - 1)];
  }

  std::vector<Index> to_compact(std::span<const Index> source_ids) const {
    std::vector<Index> out(source_ids.size());
    std::transform(source_ids.begin(), source_ids.end(), out.begin(), [&](Index id) { return to_compact(id); });
    return out;
  }

  std::vector<Index> to_source(std::span<const Index> compact_ids) const {
    std::vector<Index> out(compact_ids.size());
    std::transform(compact_ids.begin(), compact_ids.end(), out.begin(), [&](Index id) { return to_source(id); });
    return out;
  }

  bool operator==(const VocabularyMap& other) const {
    return source_size_ == other.source_size_ && source_ids_ == other.source_ids_;
  }

 private:
  std::vector<Index> source_ids_;
  Index source_size_;
  std::unordered_map<Index, Index> compact_;  // source id -> compact id, for the kept ones
};

}  // namespace moe
