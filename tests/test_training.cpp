// End to end: an MoE learns a task whose input regions need different experts (the demo's run).

#include <catch2/catch.hpp>

#include <set>

#include "synthetic_mixture/synthetic_training.hpp"

TEST_CASE("An MoE of linear experts learns the synthetic mixture and splits its regions", "[training]") {
  const auto result = moe::examples::train_synthetic_mixture({});
  const auto& last = result.epochs.back();
  INFO("test accuracy " << last.test_accuracy);
  CHECK(last.test_accuracy >= 0.95);
  CHECK(result.epochs.front().train_loss > last.train_loss);

  const Eigen::MatrixXd fractions = result.region_by_expert.fractions();
  INFO("region-by-expert fractions\n" << fractions);
  std::set<moe::Index> dominant;
  for (moe::Index region = 0; region < fractions.rows(); ++region) {
    moe::Index expert = 0;
    CHECK(fractions.row(region).maxCoeff(&expert) > 0.8);
    dominant.insert(expert);
  }
  CHECK(dominant.size() == 4);
}
