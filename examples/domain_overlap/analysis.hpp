#pragma once
// What the domain_overlap report reads from each seed's runs, and how it judges them: the representative
// samples, the routing tables of each MoE variant, their means and spread over seeds, and the two tests of
// "the matching expert attracts its domain".

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "domain_overlap/experiment.hpp"
#include "moe/core/types.hpp"

namespace moe::examples {

struct RepresentativeSample {
  Index index = 0;   // in the validation set
  Index tokens = 0;  // GPT-2 tokens
  std::string text;
};

using RepresentativeSamples = std::array<std::vector<RepresentativeSample>, english_domains.size()>;

/// Per domain, the `per_domain` validation samples whose token counts lie nearest the domain's median count
/// (ties: the earlier sample): typical samples, chosen without looking at any model.
inline RepresentativeSamples representative_samples(const PreparedCorpus& data, Index per_domain) {
  RepresentativeSamples chosen;
  for (const EnglishDomain domain : english_domains) {
    std::vector<Index> samples = data.validation.of_domain(domain);
    require(static_cast<Index>(samples.size()) >= per_domain, "representative_samples: the ", domain_name(domain),
            " domain has ", samples.size(), " validation samples, need at least ", per_domain);
    std::vector<Index> lengths;
    for (const Index s : samples) lengths.push_back(data.validation.length(s));
    std::sort(lengths.begin(), lengths.end());
    const std::size_t middle = lengths.size() / 2;
    const double median = lengths.size() % 2 == 1 ? static_cast<double>(lengths[middle])
                                                  : 0.5 * static_cast<double>(lengths[middle - 1] + lengths[middle]);
    std::stable_sort(samples.begin(), samples.end(), [&](Index a, Index b) {
      return std::abs(static_cast<double>(data.validation.length(a)) - median) <
             std::abs(static_cast<double>(data.validation.length(b)) - median);
    });
    for (Index i = 0; i < per_domain; ++i) {
      const Index s = samples[static_cast<std::size_t>(i)];
      chosen[static_cast<std::size_t>(domain)].push_back(
          {s, data.validation.length(s), data.text.validation[static_cast<std::size_t>(s)].text});
    }
  }
  return chosen;
}

/// The corpus figures the report states.
struct DataSummary {
  Index vocabulary = 0;  // compact ids, <unk> and the pad token included
  Index truncated = 0;
  Index longest = 0;
  double mean_length = 0;
  Index validation_unk = 0;
  Index validation_tokens = 0;
};

inline DataSummary summarize(const PreparedCorpus& data) {
  return {data.vocabulary.size(), data.truncated,        data.longest,
          data.mean_length,       data.validation_unk,   data.validation_tokens};
}

struct ExpertSummary {
  Index best_epoch = 0;
  double best_val_loss = 0;
  std::vector<EpochRecord> epochs;
};

/// One MoE run (one entropy weight) of one seed, measured on the validation samples.
struct VariantResult {
  double entropy_beta = 0;
  std::vector<EpochRecord> epochs;
  std::array<double, english_domains.size()> domain_loss{};
  MatrixX<double> mean_weights;            // [domain x expert]: mean of the samples' mean weights, all samples
  MatrixX<double> top_share;               // [domain x expert]: share of the domain's tokens whose top expert is e
  MatrixX<double> representative_weights;  // [domain x expert]: mean over the representative samples
  MatrixX<double> sample_weights;          // [domain * per_domain + j x expert]: each representative sample
  double mean_entropy = 0;                 // of a token's routing weights, nats

  template <class Archive>
  void serialize(Archive& archive) {
    archive(entropy_beta, epochs, domain_loss, mean_weights, top_share, representative_weights, sample_weights,
            mean_entropy);
  }
};

inline std::string variant_name(double entropy_beta) { return entropy_beta == 0 ? "no_entropy" : "entropy"; }

inline VariantResult summarize_variant(double entropy_beta, std::vector<EpochRecord> epochs,
                                       const MoEEvaluation& evaluation, const RepresentativeSamples& representative) {
  VariantResult v;
  v.entropy_beta = entropy_beta;
  v.epochs = std::move(epochs);
  v.domain_loss = evaluation.domain_loss;
  v.mean_weights = evaluation.routing.mean_weights();
  v.top_share = evaluation.routing.top_share();
  v.mean_entropy = evaluation.mean_entropy;
  const auto per_domain = static_cast<Index>(representative.front().size());
  v.representative_weights = MatrixX<double>::Zero(domain_count, domain_count);
  v.sample_weights.resize(domain_count * per_domain, domain_count);
  for (Index d = 0; d < domain_count; ++d)
    for (Index j = 0; j < per_domain; ++j) {
      const RepresentativeSample& sample = representative[static_cast<std::size_t>(d)][static_cast<std::size_t>(j)];
      v.sample_weights.row(d * per_domain + j) = evaluation.sample_weights.row(sample.index);
      v.representative_weights.row(d) += evaluation.sample_weights.row(sample.index) / static_cast<double>(per_domain);
    }
  return v;
}

struct SeedResult {
  std::uint64_t seed = 0;
  DataSummary data;
  std::vector<ExpertSummary> experts;   // phase 1, expert e = domain e
  MatrixX<double> expert_domain_loss;   // [expert x domain], phase 1's best weights
  RepresentativeSamples representative;
  std::vector<VariantResult> variants;  // no entropy term, then with it
};

/// Mean, sample standard deviation (n - 1; 0 for one value), least and greatest of values over seeds.
struct Spread {
  double mean = 0, sd = 0, min = 0, max = 0;
};

inline Spread spread(const std::vector<double>& values) {
  require(!values.empty(), "spread: no values");
  Spread s;
  s.min = *std::min_element(values.begin(), values.end());
  s.max = *std::max_element(values.begin(), values.end());
  for (const double v : values) s.mean += v / static_cast<double>(values.size());
  if (values.size() > 1) {
    double squares = 0;
    for (const double v : values) squares += (v - s.mean) * (v - s.mean);
    s.sd = std::sqrt(squares / static_cast<double>(values.size() - 1));
  }
  return s;
}

/// One number of variant `variant` of every seed.
template <class Get>
std::vector<double> over_seeds(const std::vector<SeedResult>& results, std::size_t variant, Get get) {
  std::vector<double> values;
  for (const SeedResult& r : results) values.push_back(get(r.variants[variant]));
  return values;
}

/// The element-wise mean over seeds of one [domain x expert] table of variant `variant`.
inline MatrixX<double> mean_table(const std::vector<SeedResult>& results, std::size_t variant,
                                  MatrixX<double> VariantResult::*table) {
  MatrixX<double> sum = MatrixX<double>::Zero(domain_count, domain_count);
  for (const SeedResult& r : results) sum += r.variants[variant].*table;
  return sum / static_cast<double>(results.size());
}

/// Test 1: the matching expert is the top expert of more of domain d's tokens than any other expert is.
inline bool matching_is_plurality(const MatrixX<double>& top_share, Index d) {
  for (Index e = 0; e < top_share.cols(); ++e)
    if (e != d && top_share(d, e) >= top_share(d, d)) return false;
  return true;
}

/// Test 2: expert d is the top expert of a larger share of domain d's tokens than of the other domains' tokens
/// on average.
inline bool matching_is_preferred(const MatrixX<double>& top_share, Index d) {
  double others = 0;
  for (Index o = 0; o < top_share.rows(); ++o)
    if (o != d) others += top_share(o, d) / static_cast<double>(top_share.rows() - 1);
  return top_share(d, d) > others;
}

/// The domains that pass each test, and both.
struct MatchingTests {
  std::vector<Index> plurality, preferred, both;
};

inline MatchingTests matching_tests(const MatrixX<double>& top_share) {
  MatchingTests tests;
  for (Index d = 0; d < top_share.rows(); ++d) {
    const bool plurality = matching_is_plurality(top_share, d), preferred = matching_is_preferred(top_share, d);
    if (plurality) tests.plurality.push_back(d);
    if (preferred) tests.preferred.push_back(d);
    if (plurality && preferred) tests.both.push_back(d);
  }
  return tests;
}

}  // namespace moe::examples
