// GPT-2's encoder.json (token -> id), read with a vocab.bpe of no merges: every check of the encoder runs
// before the merges are read.
#include "fuzz_common.hpp"
#include "moe/data/gpt2_tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  moe::fuzz::refusals_allowed([&] { moe::GPT2Tokenizer::from_strings(moe::fuzz::as_text(data, size), "#version: 0.2\n"); });
  return 0;
}
