#pragma once
// The code_expert example's data: the four synthetic domains (common/corpora/text_domains.hpp) as GPT-2 BPE
// tokens in a compact vocabulary, split into train and validation per domain, and padded batches of them for
// next-token prediction.

#include <algorithm>
#include <array>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/corpora/text_domains.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/data/gpt2_tokenizer.hpp"
#include "moe/data/vocabulary_map.hpp"
#include "moe/nn/attention.hpp"
#include "moe/nn/transformer.hpp"

namespace moe::examples {

inline constexpr Index num_text_domains = static_cast<Index>(text_domains.size());

/// One sample: its domain, its index among that domain's generated samples, and its compact token ids
/// (at most max_len).
struct TextSample {
  TextDomain domain;
  Index index;
  std::vector<Index> ids;
};

struct CodeExpertData {
  std::array<std::vector<std::string>, 4> texts;  // every generated sample, by domain
  VocabularyMap vocabulary;
  Index pad_id = 0;               // compact id of <|endoftext|>, which no sample contains
  std::vector<TextSample> train;  // domain by domain, in generation order
  std::vector<TextSample> validation;
  Index truncated = 0;                    // samples longer than max_len tokens, cut to max_len
  std::array<Index, 4> tokens{};          // GPT-2 tokens per domain, before truncation
  double validation_unk_share = 0.0;      // validation tokens the training vocabulary does not hold
  std::size_t distinct_train_tokens = 0;  // GPT-2 ids in the training split
};

/// The samples of `split` in `domain`, in order.
inline std::vector<Index> samples_of(const std::vector<TextSample>& split, TextDomain domain) {
  std::vector<Index> picked;
  for (std::size_t i = 0; i < split.size(); ++i)
    if (split[i].domain == domain) picked.push_back(static_cast<Index>(i));
  return picked;
}

/// Generates `per_domain` samples of each domain, keeps the last `validation_per_domain` of each for
/// validation, tokenizes with GPT-2's BPE (truncating to max_len tokens), and maps the tokens to a compact
/// vocabulary of every GPT-2 id the training split uses plus <unk> and <|endoftext|> (the padding id).
inline CodeExpertData prepare_code_expert_data(GPT2Tokenizer& tokenizer, Index per_domain, Index validation_per_domain,
                                               Index max_len, Rng& rng) {
  require(validation_per_domain > 0 && validation_per_domain < per_domain,
          "code_expert: validation_per_domain must be in [1, per_domain = ", per_domain, "), got ",
          validation_per_domain);
  require(max_len >= 2, "code_expert: max_len must be at least 2 (one token and the next), got ", max_len);
  std::array<std::vector<std::string>, 4> texts = generate_text_domains(per_domain, rng);
  std::vector<TextSample> train, validation;
  Index truncated = 0;
  std::array<Index, 4> tokens{};
  for (const TextDomain domain : text_domains) {
    const auto d = static_cast<std::size_t>(domain);
    for (Index i = 0; i < per_domain; ++i) {
      std::vector<Index> ids = tokenizer.encode(texts[d][static_cast<std::size_t>(i)]);
      require(ids.size() >= 2, "code_expert: ", text_domain_name(domain), " sample ", i, " has ", ids.size(),
              " tokens; a sample needs at least 2 (one to read, one to predict)");
      tokens[d] += static_cast<Index>(ids.size());
      if (static_cast<Index>(ids.size()) > max_len) {
        ids.resize(static_cast<std::size_t>(max_len));
        ++truncated;
      }
      (i < per_domain - validation_per_domain ? train : validation).push_back({domain, i, std::move(ids)});
    }
  }
  std::vector<Index> train_tokens{tokenizer.end_of_text()};  // the padding id is in the vocabulary
  for (const TextSample& s : train) train_tokens.insert(train_tokens.end(), s.ids.begin(), s.ids.end());
  VocabularyMap vocabulary = VocabularyMap::from_corpus(train_tokens, tokenizer.vocab_size());
  const Index pad_id = vocabulary.to_compact(tokenizer.end_of_text());

  std::size_t validation_tokens = 0, unknown = 0;
  for (TextSample& s : validation) {
    s.ids = vocabulary.to_compact(s.ids);
    validation_tokens += s.ids.size();
    unknown += static_cast<std::size_t>(std::count(s.ids.begin(), s.ids.end(), VocabularyMap::unk));
  }
  for (TextSample& s : train) s.ids = vocabulary.to_compact(s.ids);
  const std::size_t distinct = vocabulary.source_ids().size() - 1;  // not <|endoftext|>
  return CodeExpertData{std::move(texts),
                        std::move(vocabulary),
                        pad_id,
                        std::move(train),
                        std::move(validation),
                        truncated,
                        tokens,
                        static_cast<double>(unknown) / static_cast<double>(validation_tokens),
                        distinct};
}

/// Writes every generated sample of each domain to `dir`/{domain}.txt, each under a header line that gives
/// its index and split, for a person to read.
inline void write_samples(const std::filesystem::path& dir, const CodeExpertData& data, Index validation_per_domain) {
  std::filesystem::create_directories(dir);
  for (const TextDomain domain : text_domains) {
    const auto& texts = data.texts[static_cast<std::size_t>(domain)];
    const std::filesystem::path path = dir / (std::string(text_domain_name(domain)) + ".txt");
    std::ofstream file(path, std::ios::binary);
    const auto first_validation = static_cast<std::size_t>(static_cast<Index>(texts.size()) - validation_per_domain);
    for (std::size_t i = 0; i < texts.size(); ++i)
      file << "=== " << text_domain_name(domain) << " sample " << i << " ("
           << (i < first_validation ? "train" : "validation") << ") ===\n"
           << texts[i] << (texts[i].ends_with('\n') ? "\n" : "\n\n");
    file.close();
    require(static_cast<bool>(file), "code_expert: could not write ", path.string());
  }
}

/// A batch for next-token prediction: ids [batch x seq_len] sequence-major, padded with pad_id to the
/// longest sample of the batch; the layout marking the padding; and the targets (the next id, or
/// ignore_index at padding and at each sample's last token).
struct TokenBatch {
  std::vector<Index> ids;
  SequenceLayout layout;
  std::vector<Index> targets;
  Index tokens = 0;       // non-padding tokens
  Index predictions = 0;  // targets that count
};

inline constexpr Index ignore_index = -100;

inline TokenBatch make_batch(const std::vector<TextSample>& samples, std::span<const Index> picked, Index pad_id) {
  require(!picked.empty(), "make_batch: no samples");
  std::size_t seq_len = 0;
  for (const Index i : picked) seq_len = std::max(seq_len, samples.at(static_cast<std::size_t>(i)).ids.size());
  const auto batch = static_cast<Index>(picked.size());
  TokenBatch out;
  out.ids.assign(picked.size() * seq_len, pad_id);
  std::vector<Index> lengths;
  for (std::size_t b = 0; b < picked.size(); ++b) {
    const std::vector<Index>& ids = samples[static_cast<std::size_t>(picked[b])].ids;
    std::copy(ids.begin(), ids.end(), out.ids.begin() + static_cast<std::ptrdiff_t>(b * seq_len));
    lengths.push_back(static_cast<Index>(ids.size()));
    out.tokens += static_cast<Index>(ids.size());
  }
  out.layout.assign(batch, static_cast<Index>(seq_len), lengths);
  out.targets = next_token_targets(out.ids, batch, static_cast<Index>(seq_len), pad_id, ignore_index);
  out.predictions = static_cast<Index>(
      std::count_if(out.targets.begin(), out.targets.end(), [](Index t) { return t != ignore_index; }));
  return out;
}

}  // namespace moe::examples
