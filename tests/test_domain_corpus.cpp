// The domain_overlap example's corpus (examples/domain_overlap/domain_corpus.hpp): four plain-English domains
// from templates, deterministic by seed, with the document's counts, distinct samples, each domain's own
// vocabulary and the plain English they share.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "domain_overlap/domain_corpus.hpp"

using moe::Index;
using moe::examples::DomainCorpus;
using moe::examples::DomainSample;
using moe::examples::EnglishDomain;
using moe::examples::english_domains;

namespace {

DomainCorpus small_corpus(std::uint64_t seed) {
  moe::Rng rng(seed);
  return moe::examples::generate_domain_corpus({.pretrain_per_domain = 40, .moe_per_domain = 80,
                                                .validation_per_domain = 20},
                                               rng);
}

/// Lower-case words, punctuation stripped.
std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    std::string clean;
    for (const char c : word)
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '-')
        clean += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!clean.empty()) words.push_back(clean);
  }
  return words;
}

bool contains_any(const std::string& text, const std::vector<std::string>& needles) {
  return std::any_of(needles.begin(), needles.end(),
                     [&](const std::string& needle) { return text.find(needle) != std::string::npos; });
}

/// Words only a text about the domain uses (checked here independently of the generator's lists).
const std::map<EnglishDomain, std::vector<std::string>>& subject_words() {
  static const std::map<EnglishDomain, std::vector<std::string>> words{
      {EnglishDomain::psychology,
       {"therap", "anxiety", "depression", "bias", "heuristic", "fallacy", "effect", "cognitive", "psycholog",
        "counselor", "phobia", "disorder", "insomnia", "burnout", "aversion", "overconfidence", "emotion", "habits",
        "memory", "sessions", "task", "fear", "sadness", "anger", "guilt", "shame", "loneliness", "worry"}},
      {EnglishDomain::history,
       {"empire", "treaty", "peace of", "dynasty", "archaeolog", "excavat", "historian", "chronicle", "congress of",
        "kingdom", "republic", "revolution", "war", "ancient", "medieval", "site", "settlement", "villa", "tomb",
        "shards", "tablets", "the king", "emperor", "sultan", "pharaoh", "regent", "the queen", "doge", "khan",
        "nobles", "plague", "black death", "reformation", "ruler", "scholars", "archivists", "epigraphers"}},
      {EnglishDomain::medicine,
       {"patient", "trial", "treatment", "symptom", "placebo", "physician", "cardiolog", "nurse", "pharmac", "doctor",
        "disease", "diabetes", "hypertension", "asthma", "pneumonia", "migraine", "arthritis", "heart", "sepsis",
        "influenza", "osteoporosis", "psoriasis", "fever", "cough", "pain", "cancer", "vaccine", "surgeon",
        "antibiotic", "practitioner", "epidemiolog", "clinical researchers", "investigators", "endpoint", "blood",
        "dizziness", "nausea", "fatigue", "breath", "rash", "swelling", "sweats", "vision", "weakness", "study"}},
      {EnglishDomain::business,
       {"revenue", "market", "company", "retailer", "firm", "startup", "profit", "margin", "share", "analyst",
        "investor", "executive", "manager", "consultant", "cost", "customer", "sales", "quarter", "price", "brand",
        "airline", "bakery", "chain", "operator", "manufactur", "insurance", "supply", "funding", "loyalty",
        "governance", "remote work", "streaming", "demand", "board members", "financial officers"}},
  };
  return words;
}

}  // namespace

TEST_CASE("domain corpus: the document's counts, each domain in turn", "[domain_overlap][data]") {
  moe::Rng rng(3);
  const DomainCorpus corpus = moe::examples::generate_domain_corpus({}, rng);
  REQUIRE(corpus.pretrain.size() == 4 * 300);
  REQUIRE(corpus.moe.size() == 4 * 600);
  REQUIRE(corpus.validation.size() == 4 * 60);
  for (const auto* set : {&corpus.pretrain, &corpus.moe, &corpus.validation}) {
    const std::size_t per_domain = set->size() / 4;
    for (std::size_t i = 0; i < set->size(); ++i)
      CHECK((*set)[i].domain == english_domains[i / per_domain]);
  }
}

TEST_CASE("domain corpus: every text is distinct, so the three sets are disjoint", "[domain_overlap][data]") {
  moe::Rng rng(5);
  const DomainCorpus corpus = moe::examples::generate_domain_corpus({}, rng);
  std::unordered_set<std::string> texts;
  std::size_t total = 0;
  for (const auto* set : {&corpus.pretrain, &corpus.moe, &corpus.validation})
    for (const DomainSample& sample : *set) {
      texts.insert(sample.text);
      ++total;
    }
  CHECK(texts.size() == total);
}

TEST_CASE("domain corpus: the same seed gives the same corpus, another seed another", "[domain_overlap][data]") {
  const DomainCorpus a = small_corpus(11), b = small_corpus(11), c = small_corpus(12);
  const auto texts = [](const DomainCorpus& corpus) {
    std::vector<std::string> all;
    for (const auto* set : {&corpus.pretrain, &corpus.moe, &corpus.validation})
      for (const DomainSample& sample : *set) all.push_back(sample.text);
    return all;
  };
  CHECK(texts(a) == texts(b));
  const std::vector<std::string> ta = texts(a), tc = texts(c);
  std::size_t same = 0;
  for (std::size_t i = 0; i < ta.size(); ++i) same += ta[i] == tc[i];
  CHECK(same == 0);
}

TEST_CASE("domain corpus: samples are sentences of plain English of a bounded length", "[domain_overlap][data]") {
  const DomainCorpus corpus = small_corpus(2);
  for (const DomainSample& sample : corpus.moe) {
    INFO(sample.text);
    CHECK(sample.text.find_first_of("{}") == std::string::npos);  // every slot filled
    CHECK(std::isupper(static_cast<unsigned char>(sample.text.front())));
    CHECK(sample.text.back() == '.');
    const std::size_t words = words_of(sample.text).size();
    CHECK(words >= 10);
    CHECK(words <= 80);  // fits 128 GPT-2 tokens with room
  }
}

TEST_CASE("domain corpus: every template renders, with all its slots filled", "[domain_overlap][data]") {
  moe::Rng rng(9);
  for (const EnglishDomain domain : english_domains) {
    CHECK(moe::examples::domain_template_count(domain) >= 20);
    for (Index t = 0; t < moe::examples::domain_template_count(domain); ++t) {
      const std::string sentence = moe::examples::render_domain_template(domain, t, rng);
      INFO(moe::examples::domain_name(domain) << " template " << t << ": " << sentence);
      CHECK(sentence.find_first_of("{}") == std::string::npos);
      CHECK(std::isupper(static_cast<unsigned char>(sentence.front())));
    }
    for (Index t = 0; t < moe::examples::shared_template_count(); ++t)
      CHECK(moe::examples::render_shared_template(domain, t, rng).find_first_of("{}") == std::string::npos);
  }
  CHECK_THROWS_WITH(moe::examples::render_domain_template(EnglishDomain::history, 1000, rng),
                    Catch::Contains("index 1000 of the history templates"));
}

TEST_CASE("domain corpus: each domain has its own subject words and a varied vocabulary", "[domain_overlap][data]") {
  const DomainCorpus corpus = small_corpus(4);
  std::map<EnglishDomain, std::set<std::string>> vocabulary;
  for (const DomainSample& sample : corpus.moe) {
    std::string lower;
    for (const char c : sample.text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    INFO(moe::examples::domain_name(sample.domain) << ": " << sample.text);
    // Every sample speaks of its subject: it holds a subject word of its domain.
    CHECK(contains_any(lower, subject_words().at(sample.domain)));
    for (const std::string& word : words_of(sample.text)) vocabulary[sample.domain].insert(word);
  }
  for (const EnglishDomain domain : english_domains) {
    INFO(moe::examples::domain_name(domain));
    CHECK(vocabulary[domain].size() >= 250);  // 80 samples: not a handful of strings
  }
  // Words of one domain's subject that another domain's samples never use.
  const auto& psychology = vocabulary[EnglishDomain::psychology];
  const auto& history = vocabulary[EnglishDomain::history];
  const auto& medicine = vocabulary[EnglishDomain::medicine];
  const auto& business = vocabulary[EnglishDomain::business];
  for (const char* word : {"therapy", "bias", "cognitive"}) {
    INFO(word);
    CHECK(psychology.count(word) == 1);
    CHECK(history.count(word) + business.count(word) == 0);
  }
  for (const char* word : {"treaty", "empire", "archaeologists"}) {
    INFO(word);
    CHECK(history.count(word) == 1);
    CHECK(psychology.count(word) + medicine.count(word) + business.count(word) == 0);
  }
  for (const char* word : {"placebo", "symptoms", "trial"}) {
    INFO(word);
    CHECK(medicine.count(word) == 1);
    CHECK(history.count(word) + business.count(word) == 0);
  }
  for (const char* word : {"revenue", "market", "shareholders"}) {
    INFO(word);
    CHECK(business.count(word) == 1);
    CHECK(psychology.count(word) + medicine.count(word) == 0);
  }
}

TEST_CASE("domain corpus: the domains overlap in plain English", "[domain_overlap][data]") {
  const DomainCorpus corpus = small_corpus(6);
  std::map<EnglishDomain, std::set<std::string>> vocabulary;
  for (const DomainSample& sample : corpus.moe)
    for (const std::string& word : words_of(sample.text)) vocabulary[sample.domain].insert(word);
  for (const EnglishDomain a : english_domains)
    for (const EnglishDomain b : english_domains) {
      if (a >= b) continue;
      std::size_t shared = 0;
      for (const std::string& word : vocabulary[a]) shared += vocabulary[b].count(word);
      INFO(moe::examples::domain_name(a) << " and " << moe::examples::domain_name(b) << " share " << shared
                                         << " words");
      CHECK(shared >= 40);
      for (const char* word : {"the", "that", "in", "of"}) {
        CHECK(vocabulary[a].count(word) == 1);
        CHECK(vocabulary[b].count(word) == 1);
      }
    }
}
