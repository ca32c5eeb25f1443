#pragma once
// A three-domain text corpus standing in for the Pile domains of DeepSeek-V3's Figure 10 (expert load per
// domain): prose from the GCIDE dictionary for Wikipedia (en), the Python standard library's sources for
// Github, generated DeepMind-Mathematics-style problems for DM Mathematics. Each document comes from one
// domain; the corpus is split into train and validation by document. Needs zlib (-lz) for GCIDE.
//
//   moe::Rng rng(seed);
//   const moe::examples::Corpus corpus = moe::examples::build_corpus({}, rng);
//   auto stats = moe::examples::corpus_stats(corpus, [&](const std::string& text) { return tokenizer.encode(text); });
//   std::cout << moe::examples::format_corpus_stats(stats);

#include <array>
#include <concepts>
#include <cstddef>
#include <limits>
#include <ranges>
#include <string>
#include <type_traits>
#include <vector>

#include "common/check.hpp"
#include "common/corpora/gcide.hpp"
#include "common/corpora/math_generator.hpp"
#include "common/corpora/python_sources.hpp"
#include "moe/core/random.hpp"

namespace moe::examples {

enum class Domain { prose, code, math };

inline constexpr std::array<Domain, 3> domains{Domain::prose, Domain::code, Domain::math};

inline const char* domain_name(Domain domain) {
  switch (domain) {
    case Domain::prose: return "prose";
    case Domain::code: return "code";
    case Domain::math: return "math";
  }
  fail("domain_name: unknown domain ", static_cast<int>(domain));
}

/// The Pile domain of DeepSeek-V3's Figure 10 that `domain` stands in for.
inline const char* domain_stands_for(Domain domain) {
  switch (domain) {
    case Domain::prose: return "Wikipedia (en)";
    case Domain::code: return "Github";
    case Domain::math: return "DM Mathematics";
  }
  fail("domain_stands_for: unknown domain ", static_cast<int>(domain));
}

/// Where the documents of `domain` come from.
inline const char* domain_source(Domain domain) {
  switch (domain) {
    case Domain::prose: return "GCIDE dictionary entries";
    case Domain::code: return "Python 3.11 standard library";
    case Domain::math: return "generated DM Mathematics-style problems";
  }
  fail("domain_source: unknown domain ", static_cast<int>(domain));
}

struct Document {
  Domain domain;
  std::string text;  // UTF-8
};

struct CorpusOptions {
  GcideOptions gcide{};
  PythonSourceOptions python{};
  MathOptions math{};
  /// Caps per domain, applied to the documents in a random order: documents are taken until either cap
  /// is reached (the last one may cross the character cap). Math is generated up to the caps, so at
  /// least one of them must be finite.
  std::size_t max_documents_per_domain = std::numeric_limits<std::size_t>::max();
  std::size_t max_chars_per_domain = 2'000'000;
  /// The share of each domain's documents (rounded to nearest) held out for validation.
  double validation_fraction = 0.1;
};

struct Corpus {
  std::vector<Document> train;       // domains mixed in a random order
  std::vector<Document> validation;  // domains mixed in a random order
};

/// Characters are UTF-8 code units (std::string::size()); tokens are 0 until counted by a tokenizer.
struct DomainStats {
  std::size_t documents = 0;
  std::size_t chars = 0;
  std::size_t tokens = 0;
};

struct CorpusStats {
  std::array<DomainStats, 3> train{};       // indexed by Domain
  std::array<DomainStats, 3> validation{};  // indexed by Domain
  bool has_tokens = false;
};

/// `documents` after a shuffle, cut at the caps.
inline std::vector<std::string> capped_sample(std::vector<std::string> documents, const CorpusOptions& options,
                                              Rng& rng) {
  shuffle(documents, rng);
  std::size_t taken = 0, chars = 0;
  while (taken < documents.size() && taken < options.max_documents_per_domain &&
         chars < options.max_chars_per_domain)
    chars += documents[taken++].size();
  documents.resize(taken);
  return documents;
}

inline std::vector<std::string> generated_math(const CorpusOptions& options, Rng& rng) {
  std::vector<std::string> documents;
  std::size_t chars = 0;
  while (documents.size() < options.max_documents_per_domain && chars < options.max_chars_per_domain) {
    documents.push_back(generate_math_document(options.math, rng));
    chars += documents.back().size();
  }
  return documents;
}

/// Reads and generates the three domains, caps each, and splits each domain's documents into validation
/// (the first round(validation_fraction * n) of its random order) and train. The same sources, options
/// and generator state give the same corpus. A missing source is an error naming its path and
/// scripts/fetch-data.sh.
inline Corpus build_corpus(const CorpusOptions& options, Rng& rng) {
  require(options.validation_fraction >= 0.0 && options.validation_fraction < 1.0,
          "build_corpus: validation_fraction must be in [0, 1), got ", options.validation_fraction);
  require(options.max_documents_per_domain > 0 && options.max_chars_per_domain > 0,
          "build_corpus: max_documents_per_domain and max_chars_per_domain must be positive");
  require(options.max_documents_per_domain != std::numeric_limits<std::size_t>::max() ||
              options.max_chars_per_domain != std::numeric_limits<std::size_t>::max(),
          "build_corpus: math problems are generated up to the caps, so max_documents_per_domain or "
          "max_chars_per_domain must be finite");
  std::array<std::vector<std::string>, 3> sources;
  sources[static_cast<std::size_t>(Domain::prose)] = capped_sample(read_gcide(options.gcide), options, rng);
  sources[static_cast<std::size_t>(Domain::code)] =
      capped_sample(read_python_sources(options.python), options, rng);
  sources[static_cast<std::size_t>(Domain::math)] = generated_math(options, rng);

  Corpus corpus;
  for (const Domain domain : domains) {
    std::vector<std::string>& documents = sources[static_cast<std::size_t>(domain)];
    require(!documents.empty(), "build_corpus: the ", domain_name(domain), " domain (",
            domain_source(domain), ") has no documents");
    const auto held_out =
        static_cast<std::size_t>(options.validation_fraction * static_cast<double>(documents.size()) + 0.5);
    for (std::size_t i = 0; i < documents.size(); ++i)
      (i < held_out ? corpus.validation : corpus.train).push_back({domain, std::move(documents[i])});
  }
  shuffle(corpus.train, rng);
  shuffle(corpus.validation, rng);
  return corpus;
}

/// Documents and characters per domain and split.
inline CorpusStats corpus_stats(const Corpus& corpus) {
  CorpusStats stats;
  const auto count = [](const std::vector<Document>& split, std::array<DomainStats, 3>& out) {
    for (const Document& d : split) {
      ++out[static_cast<std::size_t>(d.domain)].documents;
      out[static_cast<std::size_t>(d.domain)].chars += d.text.size();
    }
  };
  count(corpus.train, stats.train);
  count(corpus.validation, stats.validation);
  return stats;
}

/// The same with tokens counted: `tokenize(text)` returns the tokens (anything with a size, as
/// GPT2Tokenizer::encode's ids) or their number.
template <class Tokenize>
  requires std::invocable<Tokenize&, const std::string&>
CorpusStats corpus_stats(const Corpus& corpus, Tokenize&& tokenize) {
  CorpusStats stats = corpus_stats(corpus);
  const auto count = [&](const std::vector<Document>& split, std::array<DomainStats, 3>& out) {
    for (const Document& d : split) {
      const auto tokens = tokenize(d.text);
      std::size_t n = 0;
      if constexpr (std::integral<std::remove_cvref_t<decltype(tokens)>>) n = static_cast<std::size_t>(tokens);
      else n = static_cast<std::size_t>(std::ranges::size(tokens));
      out[static_cast<std::size_t>(d.domain)].tokens += n;
    }
  };
  count(corpus.train, stats.train);
  count(corpus.validation, stats.validation);
  stats.has_tokens = true;
  return stats;
}

/// A Markdown table: one row per domain, documents / characters (/ tokens) per split.
inline std::string format_corpus_stats(const CorpusStats& stats) {
  std::string out = "| domain | stands for | source | train docs | train chars |";
  out += stats.has_tokens ? " train tokens | validation docs | validation chars | validation tokens |\n"
                          : " validation docs | validation chars |\n";
  out += stats.has_tokens ? "|---|---|---|---:|---:|---:|---:|---:|---:|\n" : "|---|---|---|---:|---:|---:|---:|\n";
  for (const Domain domain : domains) {
    const DomainStats& t = stats.train[static_cast<std::size_t>(domain)];
    const DomainStats& v = stats.validation[static_cast<std::size_t>(domain)];
    out += concat("| ", domain_name(domain), " | ", domain_stands_for(domain), " | ", domain_source(domain),
                  " | ", t.documents, " | ", t.chars, " | ");
    if (stats.has_tokens) out += concat(t.tokens, " | ");
    out += concat(v.documents, " | ", v.chars, " |");
    if (stats.has_tokens) out += concat(" ", v.tokens, " |");
    out += "\n";
  }
  return out;
}

}  // namespace moe::examples
