// VocabularyMap::parse, which reads what to_string wrote into a safetensors file's metadata: what it
// accepts writes back to the same text.
#include "fuzz_common.hpp"
#include "moe/data/vocabulary_map.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  moe::fuzz::refusals_allowed([&] {
    const moe::VocabularyMap map = moe::VocabularyMap::parse(moe::fuzz::as_text(data, size));
    moe::fuzz::require(moe::VocabularyMap::parse(map.to_string()).to_string() == map.to_string());
  });
  return 0;
}
