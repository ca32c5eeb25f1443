// GPT-2's tokenizer, with GPT-2's own encoder.json and vocab.bpe (data/gpt2, or $MOE_DATA_DIR/gpt2), on
// arbitrary bytes: encode never throws, and decode gives back the text with invalid UTF-8 replaced.
#include <cstdlib>

#include "fuzz_common.hpp"
#include "moe/core/utf8.hpp"
#include "moe/data/gpt2_tokenizer.hpp"

#ifndef MOE_FUZZ_DATA_DIR
#error "MOE_FUZZ_DATA_DIR: the data/ folder scripts/fetch-data.sh fills"
#endif

namespace {

moe::GPT2Tokenizer& gpt2() {
  static moe::GPT2Tokenizer tokenizer = [] {
    const char* dir = std::getenv("MOE_DATA_DIR");
    return moe::GPT2Tokenizer::from_directory(std::filesystem::path(dir != nullptr ? dir : MOE_FUZZ_DATA_DIR) / "gpt2");
  }();
  return tokenizer;
}

}  // namespace

// Loading the 50,257 tokens takes seconds under the sanitizers: before the first input's timeout starts.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  gpt2();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  moe::GPT2Tokenizer& tokenizer = gpt2();
  const std::string_view text = moe::fuzz::as_text(data, size);
  const std::vector<moe::Index> ids = tokenizer.encode(text);
  std::string storage;
  moe::fuzz::require(tokenizer.decode(ids) == moe::detail::replace_invalid_utf8(text, storage));
  return 0;
}
