// The code_expert example's data: the four synthetic text domains (examples/common/corpora/text_domains.hpp),
// the computed numbers in their samples, and the tokenized, padded batches (examples/code_expert/data.hpp).

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "code_expert/data.hpp"
#include "common/corpora/text_domains.hpp"
#include "moe/data/gpt2_tokenizer.hpp"

using moe::Index;
using moe::examples::TextDomain;

namespace {

std::array<std::vector<std::string>, 4> generate(std::uint64_t seed, Index per_domain = 500) {
  moe::Rng rng(seed);
  return moe::examples::generate_text_domains(per_domain, rng);
}

const std::vector<std::string>& of(const std::array<std::vector<std::string>, 4>& samples, TextDomain domain) {
  return samples[static_cast<std::size_t>(domain)];
}

std::int64_t number(const std::smatch& match, std::size_t group) { return std::stoll(match[group].str()); }

/// A byte-level GPT-2 tokenizer without merges, so one token per byte; then <|endoftext|>. The encoder's
/// order matters (ids are read in the file's order), hence ordered_json.
moe::GPT2Tokenizer byte_tokenizer() {
  const auto to_unicode = moe::detail::gpt2::byte_to_unicode();
  nlohmann::ordered_json::object_t encoder;
  for (int byte = 0; byte < 256; ++byte) {
    std::string spelt;
    moe::detail::append_utf8(spelt, to_unicode[static_cast<std::size_t>(byte)]);
    encoder.emplace_back(spelt, byte);
  }
  encoder.emplace_back("<|endoftext|>", 256);
  return moe::GPT2Tokenizer::from_strings(nlohmann::ordered_json(std::move(encoder)).dump(), "#version: 0.2\n");
}

}  // namespace

TEST_CASE("text domains: the same seed gives the same distinct samples, another seed others", "[code_expert][data]") {
  const auto samples = generate(5);
  CHECK(samples == generate(5));
  const auto other = generate(6);
  for (const TextDomain domain : moe::examples::text_domains) {
    INFO(moe::examples::text_domain_name(domain));
    const auto& texts = of(samples, domain);
    REQUIRE(texts.size() == 500);
    CHECK(std::set<std::string>(texts.begin(), texts.end()).size() == 500);
    CHECK(texts != of(other, domain));
  }
}

TEST_CASE("text domains vary in more than their numbers and keep to their kind of text", "[code_expert][data]") {
  const auto samples = generate(7);
  const std::regex digits("[0-9]+");
  for (const TextDomain domain : moe::examples::text_domains) {
    INFO(moe::examples::text_domain_name(domain));
    std::set<std::string> shapes, openings;
    for (const std::string& text : of(samples, domain)) {
      shapes.insert(std::regex_replace(text, digits, "#"));
      openings.insert(text.substr(0, text.find_first_of(" \n(")));
      switch (domain) {
        case TextDomain::code:
          CHECK(text.find("    ") != std::string::npos);  // an indented block
          CHECK(text.ends_with("\n"));
          break;
        case TextDomain::math:
          CHECK((text.find(" = ") != std::string::npos || text.find("\nAnswer: ") != std::string::npos));
          CHECK(std::regex_search(text, digits));
          break;
        case TextDomain::story:
          CHECK(text.find('=') == std::string::npos);
          CHECK(text.ends_with("."));
          break;
        case TextDomain::science:  // statements, and measurements worked out with "="
          CHECK(text.find("def ") == std::string::npos);
          CHECK(text.find('\n') == std::string::npos);
          CHECK(text.ends_with("."));
          break;
      }
    }
    CHECK(shapes.size() >= 100);   // of 500: the templates and words vary, not only the numbers
    CHECK(openings.size() >= 10);  // many ways to begin
  }
}

TEST_CASE("text domains state only numbers that follow from the ones drawn", "[code_expert][data]") {
  const auto samples = generate(11);
  const std::regex product(R"(Calculate (\d+) \* (\d+)\.\n[^\n]*\nAdding them: (\d+) \+ (\d+) = (\d+)\.)");
  const std::regex rectangle(R"(is (\d+) cm wide and (\d+) cm tall\.\nIts area is \d+ \* \d+ = (\d+) square cm\.\n)"
                             R"(Its perimeter is 2 \* \(\d+ \+ \d+\) = (\d+) cm\.)");
  const std::regex equation(R"(Check: (\d+) \* (-?\d+) ([+-]) (\d+) = (-?\d+)\.)");
  const std::regex speed(
      R"(speed of (\d+) metres per second for (\d+) seconds\. .* travels \d+ \* \d+ = (\d+) metres)");
  std::array<int, 4> checked{};
  for (const std::string& text : of(samples, TextDomain::math)) {
    std::smatch m;
    if (std::regex_search(text, m, product)) {
      CHECK(number(m, 1) * number(m, 2) == number(m, 5));
      CHECK(number(m, 3) + number(m, 4) == number(m, 5));
      ++checked[0];
    } else if (std::regex_search(text, m, rectangle)) {
      CHECK(number(m, 1) * number(m, 2) == number(m, 3));
      CHECK(2 * (number(m, 1) + number(m, 2)) == number(m, 4));
      ++checked[1];
    } else if (std::regex_search(text, m, equation)) {
      const std::int64_t b = m[3].str() == "+" ? number(m, 4) : -number(m, 4);
      CHECK(number(m, 1) * number(m, 2) + b == number(m, 5));
      ++checked[2];
    }
  }
  for (const std::string& text : of(samples, TextDomain::science)) {
    std::smatch m;
    if (std::regex_search(text, m, speed)) {
      CHECK(number(m, 1) * number(m, 2) == number(m, 3));
      ++checked[3];
    }
  }
  for (const int count : checked) CHECK(count >= 10);
}

TEST_CASE("make_batch pads to the longest sample and ignores padding and each sample's last token",
          "[code_expert][data]") {
  using moe::examples::TextSample;
  const std::vector<TextSample> samples{
      {TextDomain::code, 0, {5, 6, 7}}, {TextDomain::math, 0, {8, 9}}, {TextDomain::story, 0, {4, 3, 2, 1}}};
  const std::vector<Index> picked{0, 1};
  const auto batch = moe::examples::make_batch(samples, picked, 0);
  CHECK(batch.ids == std::vector<Index>{5, 6, 7, 8, 9, 0});
  CHECK(batch.layout.batch() == 2);
  CHECK(batch.layout.seq_len() == 3);
  CHECK_FALSE(batch.layout.is_padding(1, 1));
  CHECK(batch.layout.is_padding(1, 2));
  constexpr Index x = moe::examples::ignore_index;
  CHECK(batch.targets == std::vector<Index>{6, 7, x, 9, x, x});
  CHECK(batch.tokens == 5);
  CHECK(batch.predictions == 3);
  const std::vector<Index> longest{2, 1};
  CHECK(moe::examples::make_batch(samples, longest, 0).layout.seq_len() == 4);
}

TEST_CASE("prepare_code_expert_data splits, truncates and maps to a vocabulary with a padding id",
          "[code_expert][data]") {
  moe::GPT2Tokenizer tokenizer = byte_tokenizer();
  moe::Rng rng(13);
  const auto data = moe::examples::prepare_code_expert_data(tokenizer, 10, 2, 40, rng);
  moe::Rng same(13);
  const auto texts = moe::examples::generate_text_domains(10, same);
  REQUIRE(data.train.size() == 32);
  REQUIRE(data.validation.size() == 8);
  Index longer = 0;
  for (const auto& domain_texts : texts)
    for (const std::string& text : domain_texts) longer += static_cast<Index>(text.size()) > 40;
  CHECK(data.truncated == longer);
  CHECK(data.vocabulary.to_source(data.pad_id) == tokenizer.end_of_text());
  std::size_t unknown = 0, validation_tokens = 0;
  for (const auto& split : {&data.train, &data.validation})
    for (const auto& sample : *split) {
      CHECK(
          static_cast<Index>(sample.ids.size()) ==
          std::min<Index>(
              40, static_cast<Index>(
                      texts[static_cast<std::size_t>(sample.domain)][static_cast<std::size_t>(sample.index)].size())));
      CHECK(std::find(sample.ids.begin(), sample.ids.end(), data.pad_id) == sample.ids.end());
      if (split == &data.train) CHECK(std::find(sample.ids.begin(), sample.ids.end(), 0) == sample.ids.end());
      if (split == &data.validation) {
        unknown += static_cast<std::size_t>(std::count(sample.ids.begin(), sample.ids.end(), 0));
        validation_tokens += sample.ids.size();
      }
    }
  CHECK(data.validation_unk_share == Approx(static_cast<double>(unknown) / static_cast<double>(validation_tokens)));
  // The last two samples of each domain are the validation split, in order.
  CHECK(data.validation[0].domain == TextDomain::code);
  CHECK(data.validation[0].index == 8);
  CHECK(data.validation[7].domain == TextDomain::science);
  CHECK(data.validation[7].index == 9);
  CHECK(moe::examples::samples_of(data.validation, TextDomain::story) == std::vector<Index>{4, 5});
  CHECK_THROWS_WITH(moe::examples::prepare_code_expert_data(tokenizer, 10, 10, 40, rng),
                    "code_expert: validation_per_domain must be in [1, per_domain = 10), got 10");
}
