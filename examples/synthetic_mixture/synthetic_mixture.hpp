#pragma once
// A task that needs experts: points fall in `regions` well-separated clusters, and inside each region the
// class is decided by a different linear rule (the side of a region-specific hyperplane through the
// centre). No single linear classifier fits all rules; a router that finds the region plus one linear
// expert per region does.

#include <vector>

#include "common/check.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe::examples {

struct SyntheticMixtureOptions {
  Index samples = 2048;
  Index features = 8;
  Index regions = 4;
  double separation = 6.0;  // distance of each region's centre from the origin
  double spread = 1.0;      // standard deviation of the points around their centre
};

template <class Scalar = float>
struct SyntheticMixture {
  MatrixX<Scalar> inputs;     // [samples x features]
  std::vector<Index> labels;  // 0 or 1
  std::vector<Index> regions; // which cluster each sample came from
};

/// Draws a data set; the same seed gives the same centres and rules, so train and test sets share them
/// when drawn with the same `task_seed` and different `sample_seed`s.
template <class Scalar = float>
SyntheticMixture<Scalar> make_synthetic_mixture(const SyntheticMixtureOptions& options, std::uint64_t task_seed,
                                                std::uint64_t sample_seed) {
  require(options.samples > 0, "make_synthetic_mixture: samples must be positive, got ", options.samples);
  require(options.regions >= 1 && options.regions <= options.features,
          "make_synthetic_mixture: regions must be in [1, features = ", options.features, "], got ",
          options.regions);
  Rng task(task_seed);
  // Centre r sits on axis r, so the regions are linearly separable by the router.
  Eigen::MatrixXd centres = Eigen::MatrixXd::Zero(options.regions, options.features);
  for (Index r = 0; r < options.regions; ++r) centres(r, r) = options.separation;
  Eigen::MatrixXd rules(options.regions, options.features);
  fill_normal(rules, task, 0.0, 1.0);
  rules.rowwise().normalize();

  Rng rng(sample_seed);
  SyntheticMixture<Scalar> data;
  data.inputs.resize(options.samples, options.features);
  data.labels.resize(static_cast<std::size_t>(options.samples));
  data.regions.resize(static_cast<std::size_t>(options.samples));
  Eigen::RowVectorXd offset(options.features);
  for (Index i = 0; i < options.samples; ++i) {
    const Index region = uniform_index(rng, options.regions);
    fill_normal(offset, rng, 0.0, options.spread);
    data.inputs.row(i) = (centres.row(region) + offset).template cast<Scalar>();
    data.labels[static_cast<std::size_t>(i)] = offset.dot(rules.row(region)) > 0.0 ? 1 : 0;
    data.regions[static_cast<std::size_t>(i)] = region;
  }
  return data;
}

}  // namespace moe::examples
