#pragma once
// The files of a small GPT-2 byte-level vocabulary, for the tokenizer's tests and the fuzz targets' seeds.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/core/utf8.hpp"
#include "moe/data/gpt2_tokenizer.hpp"

namespace moe::test {

struct ToyFiles {
  std::string encoder;  // encoder.json
  std::string vocab;    // vocab.bpe
};

/// The files of a small byte-level vocabulary: ids 0-255 the bytes, then one token per merge (a pair of
/// byte strings), then <|endoftext|>.
ToyFiles toy_files(const std::vector<std::pair<std::string, std::string>>& merges) {
  const auto to_unicode = moe::detail::gpt2::byte_to_unicode();
  const auto spell = [&](std::string_view bytes) {
    std::string spelt;
    for (const char byte : bytes) moe::detail::append_utf8(spelt, to_unicode[static_cast<unsigned char>(byte)]);
    return spelt;
  };
  nlohmann::ordered_json::object_t encoder;  // in this order: bytes, merges, <|endoftext|>
  for (int byte = 0; byte < 256; ++byte) encoder.emplace_back(spell(std::string(1, static_cast<char>(byte))), byte);
  std::string vocab = "#version: 0.2\n";
  for (const auto& [first, second] : merges) {
    encoder.emplace_back(spell(first + second), encoder.size());
    vocab += spell(first) + " " + spell(second) + "\n";
  }
  encoder.emplace_back("<|endoftext|>", encoder.size());
  return {nlohmann::ordered_json(std::move(encoder)).dump(), vocab};
}

}  // namespace moe::test
