#pragma once
// The three-domain corpus as GPT-2 tokens remapped to a compact vocabulary, cut into fixed-length windows
// that each hold one domain only. Every window is full, so no padding reaches the MoE layers (which route
// every row they are given) and the per-domain expert load counts real tokens only.

#include <array>
#include <cstddef>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/corpora/corpus.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/data/gpt2_tokenizer.hpp"
#include "moe/data/vocabulary_map.hpp"

namespace moe::examples {

struct DataConfig {
  std::size_t max_chars_per_domain = 1'000'000;
  double validation_fraction = 0.1;
  Index max_vocabulary = 2048;             // compact ids, <unk> included: the most frequent tokens are kept
  Index max_validation_windows = 96;       // per domain
};

/// Windows of seq_len + 1 compact ids: the model reads the first seq_len, and predicts the last seq_len.
struct TokenWindows {
  Index window_length = 0;
  std::vector<Index> tokens;     // windows one after the other
  std::vector<Domain> domains;   // one per window

  Index count() const { return static_cast<Index>(domains.size()); }
  const Index* window(Index w) const { return tokens.data() + w * window_length; }
};

struct PreparedData {
  VocabularyMap vocabulary;
  TokenWindows train;
  TokenWindows validation;
  CorpusStats stats;                     // documents, characters and GPT-2 tokens per domain and split
  std::size_t distinct_train_tokens = 0;  // GPT-2 ids the training split uses, before the cap
  double train_unk_share = 0.0;           // share of training tokens that became <unk>
};

/// Each domain's documents of one split joined into one stream, <|endoftext|> between documents as
/// GPT-2's training data has it, and cut into windows of `seq_len + 1` tokens that overlap by one (the
/// last token of a window is the first input of the next). A window never crosses domains; the tail of
/// a stream shorter than a window is dropped.
inline TokenWindows cut_windows(const std::array<std::vector<Index>, 3>& streams, Index seq_len,
                                Index max_windows_per_domain) {
  TokenWindows windows;
  windows.window_length = seq_len + 1;
  for (const Domain domain : domains) {
    const std::vector<Index>& stream = streams[static_cast<std::size_t>(domain)];
    Index taken = 0;
    for (std::size_t start = 0; start + static_cast<std::size_t>(seq_len) < stream.size() &&
                                taken < max_windows_per_domain;
         start += static_cast<std::size_t>(seq_len), ++taken) {
      windows.tokens.insert(windows.tokens.end(), stream.begin() + static_cast<std::ptrdiff_t>(start),
                            stream.begin() + static_cast<std::ptrdiff_t>(start + static_cast<std::size_t>(seq_len) + 1));
      windows.domains.push_back(domain);
    }
    require(taken > 0, "expert_load_heatmaps: the ", domain_name(domain), " domain has fewer than ", seq_len + 1,
            " tokens in a split; raise max_chars_per_domain");
  }
  return windows;
}

/// Builds the corpus (GCIDE and the GPT-2 files from `data_dir`, see scripts/fetch-data.sh), tokenizes it,
/// keeps the `config.max_vocabulary - 1` most frequent training tokens (the rest become <unk>) and cuts
/// the windows. The same seed gives the same data.
inline PreparedData prepare_data(const std::filesystem::path& data_dir, const DataConfig& config, Index seq_len,
                                 Rng& rng) {
  const std::filesystem::path gpt2 = data_dir / "gpt2";
  for (const char* name : {"encoder.json", "vocab.bpe"})
    require(std::filesystem::exists(gpt2 / name), "expert_load_heatmaps: ", (gpt2 / name).string(),
            " is missing; scripts/fetch-data.sh puts GPT-2's tokenizer files there");
  CorpusOptions corpus_options;
  corpus_options.gcide.index = data_dir / "gcide" / "gcide.index";
  // The decompressed dictionary reads faster; the packaged dictzip file works too.
  corpus_options.gcide.dict = std::filesystem::exists(data_dir / "gcide" / "gcide.dict")
                                  ? data_dir / "gcide" / "gcide.dict"
                                  : data_dir / "gcide" / "gcide.dict.dz";
  require(std::filesystem::exists(corpus_options.gcide.index), "expert_load_heatmaps: ",
          corpus_options.gcide.index.string(), " is missing; scripts/fetch-data.sh links GCIDE there");
  corpus_options.max_chars_per_domain = config.max_chars_per_domain;
  corpus_options.validation_fraction = config.validation_fraction;
  const Corpus corpus = build_corpus(corpus_options, rng);

  GPT2Tokenizer tokenizer = GPT2Tokenizer::from_directory(gpt2);
  PreparedData data{VocabularyMap({}, tokenizer.vocab_size()), {}, {}, corpus_stats(corpus), 0, 0.0};
  std::array<std::vector<Index>, 3> train_streams, validation_streams;
  const auto tokenize = [&](const std::vector<Document>& split, std::array<std::vector<Index>, 3>& streams,
                            std::array<DomainStats, 3>& stats) {
    for (const Document& document : split) {
      const std::vector<Index> ids = tokenizer.encode(document.text);
      std::vector<Index>& stream = streams[static_cast<std::size_t>(document.domain)];
      if (!stream.empty()) stream.push_back(tokenizer.end_of_text());
      stream.insert(stream.end(), ids.begin(), ids.end());
      stats[static_cast<std::size_t>(document.domain)].tokens += ids.size();
    }
  };
  tokenize(corpus.train, train_streams, data.stats.train);
  tokenize(corpus.validation, validation_streams, data.stats.validation);
  data.stats.has_tokens = true;

  std::vector<Index> all_train;
  for (const auto& stream : train_streams) all_train.insert(all_train.end(), stream.begin(), stream.end());
  data.distinct_train_tokens = VocabularyMap::from_corpus(all_train, tokenizer.vocab_size()).source_ids().size();
  data.vocabulary = VocabularyMap::from_corpus(all_train, tokenizer.vocab_size(), config.max_vocabulary);
  std::size_t unknown = 0;
  for (auto* streams : {&train_streams, &validation_streams})
    for (auto& stream : *streams) {
      stream = data.vocabulary.to_compact(stream);
      if (streams == &train_streams)
        for (const Index id : stream) unknown += id == VocabularyMap::unk;
    }
  data.train_unk_share = static_cast<double>(unknown) / static_cast<double>(all_train.size());

  data.train = cut_windows(train_streams, seq_len, std::numeric_limits<Index>::max());
  data.validation = cut_windows(validation_streams, seq_len, config.max_validation_windows);
  return data;
}

}  // namespace moe::examples
