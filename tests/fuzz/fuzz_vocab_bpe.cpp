// GPT-2's vocab.bpe (merges) against a fixed encoder.json of the 256 bytes, a few merged tokens and
// <|endoftext|>; what loads then encodes and decodes.
#include "fuzz_common.hpp"
#include "moe/data/gpt2_tokenizer.hpp"

namespace {

/// encoder.json of the bytes (spelt as GPT-2 spells them), then the tokens of `merged`, then <|endoftext|>.
std::string encoder_json(const std::vector<std::string>& merged) {
  const auto to_unicode = moe::detail::gpt2::byte_to_unicode();
  const auto spell = [&](std::string_view bytes) {
    std::string spelt;
    for (const char byte : bytes) moe::detail::append_utf8(spelt, to_unicode[static_cast<unsigned char>(byte)]);
    return spelt;
  };
  nlohmann::ordered_json::object_t encoder;
  for (int byte = 0; byte < 256; ++byte) encoder.emplace_back(spell(std::string(1, static_cast<char>(byte))), byte);
  for (const std::string& token : merged) encoder.emplace_back(spell(token), encoder.size());
  encoder.emplace_back("<|endoftext|>", encoder.size());
  return nlohmann::ordered_json(std::move(encoder)).dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string encoder = encoder_json({"ab", "abc", " a", "#,", ",$", "#,$", "\xc4\xa0"});
  moe::fuzz::refusals_allowed([&] {
    moe::GPT2Tokenizer tokenizer = moe::GPT2Tokenizer::from_strings(encoder, moe::fuzz::as_text(data, size));
    const std::string text = "abc ab #,$ \xc4\xa0";
    moe::fuzz::require(tokenizer.decode(tokenizer.encode(text)) == text);
  });
  return 0;
}
