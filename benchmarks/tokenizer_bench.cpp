// GPT-2's tokenizer on one long run of letters, the worst case of byte-pair encoding: the run is a single
// piece, every merge happens inside it. Uses GPT-2's own encoder.json and vocab.bpe (data/gpt2, from
// scripts/fetch-data.sh; $MOE_DATA_DIR overrides data/).
//
// encode/letters/KiB: one encode of a run of that many KiB of random lowercase letters, with an empty piece
// cache (a fresh copy of the tokenizer each time); bytes_per_second is the rate.
// encode/scaling: the time per byte at 128 KiB over the time per byte at 16 KiB, both measured in the same
// iteration. The merges take O(n log n) (a heap of candidate pairs over a linked list): the ratio stays
// near 1 (about 1.2 for the log); a rescan of the piece per merge made it about 2.8 (n^1.5).

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "moe/data/gpt2_tokenizer.hpp"

namespace {

const moe::GPT2Tokenizer& gpt2() {
  static const moe::GPT2Tokenizer tokenizer = [] {
    const char* dir = std::getenv("MOE_DATA_DIR");
    return moe::GPT2Tokenizer::from_directory(std::filesystem::path(dir != nullptr ? dir : MOE_BENCH_DATA_DIR) /
                                              "gpt2");
  }();
  return tokenizer;
}

std::string letters(std::size_t bytes) {
  std::mt19937 random(18);
  std::string text(bytes, 'a');
  for (char& c : text) c = static_cast<char>('a' + random() % 26);
  return text;
}

/// Seconds for one encode of `text` by a tokenizer with an empty cache.
double encode_seconds(const std::string& text) {
  moe::GPT2Tokenizer tokenizer = gpt2();
  const auto start = std::chrono::steady_clock::now();
  benchmark::DoNotOptimize(tokenizer.encode(text).data());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void encode_letters(benchmark::State& state) {
  const std::string text = letters(static_cast<std::size_t>(state.range(0)) << 10);
  for (auto _ : state) state.SetIterationTime(encode_seconds(text));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}

void encode_scaling(benchmark::State& state) {
  const std::string small = letters(16 << 10), large = letters(128 << 10);
  double ratio = 0;
  for (auto _ : state) {
    const double small_seconds = encode_seconds(small), large_seconds = encode_seconds(large);
    ratio = (large_seconds / static_cast<double>(large.size())) / (small_seconds / static_cast<double>(small.size()));
    state.SetIterationTime(small_seconds + large_seconds);
  }
  state.counters["per_byte_128k_over_16k"] = ratio;
}

BENCHMARK(encode_letters)->Name("encode/letters")->Arg(16)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(encode_scaling)->Name("encode/scaling")->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
