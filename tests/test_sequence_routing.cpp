// Padding-aware routing statistics (moe/analysis/sequence_routing.hpp) against values computed by hand.

#include <catch2/catch.hpp>
#include <vector>

#include "moe/analysis/sequence_routing.hpp"

using moe::Index;
using moe::MatrixX;
using moe::SequenceLayout;

namespace {

/// Two samples of 3 positions, 3 experts: sample 0 has 2 tokens and 1 padding, sample 1 is full. The
/// padding row holds weights that would change every figure if it were counted.
MatrixX<double> batch_weights() {
  MatrixX<double> w(6, 3);
  w << 0.5, 0.3, 0.2,  // sample 0, token 0: top 0
      0.1, 0.6, 0.3,   // sample 0, token 1: top 1
      0.0, 0.0, 1.0,   // sample 0, padding
      0.2, 0.2, 0.6,   // sample 1, token 0: top 2
      0.4, 0.4, 0.2,   // sample 1, token 1: a tie of 0 and 1, top 0
      0.3, 0.5, 0.2;   // sample 1, token 2: top 1
  return w;
}

SequenceLayout batch_layout() {
  const std::vector<Index> lengths{2, 3};
  return SequenceLayout(2, 3, lengths);
}

}  // namespace

TEST_CASE("sample_routing_weights averages each sample's non-padding tokens only", "[analysis][sequence_routing]") {
  const MatrixX<double> means = moe::sample_routing_weights(batch_weights(), batch_layout());
  MatrixX<double> expected(2, 3);
  expected << 0.3, 0.45, 0.25,  // (0.5 + 0.1) / 2, (0.3 + 0.6) / 2, (0.2 + 0.3) / 2
      0.3, 1.1 / 3, 1.0 / 3;    // (0.2 + 0.4 + 0.3) / 3, (0.2 + 0.4 + 0.5) / 3, (0.6 + 0.2 + 0.2) / 3
  CHECK((means - expected).cwiseAbs().maxCoeff() < 1e-15);

  SECTION("left padding and gaps are skipped too") {
    moe::PaddingMask padding(1, 3);
    padding << true, false, true;
    const MatrixX<double> one =
        moe::sample_routing_weights(MatrixX<double>(batch_weights().topRows(3)), SequenceLayout(padding));
    CHECK((one.row(0) - batch_weights().row(1)).cwiseAbs().maxCoeff() == 0.0);
  }
  SECTION("float weights are averaged in double") {
    const MatrixX<float> single = batch_weights().cast<float>();
    CHECK((moe::sample_routing_weights(single, batch_layout()) - expected).cwiseAbs().maxCoeff() < 1e-7);
  }
}

TEST_CASE("token_top_experts takes the largest weight, the lowest index on ties, none at padding",
          "[analysis][sequence_routing]") {
  const moe::IndexVector top = moe::token_top_experts(batch_weights(), batch_layout());
  REQUIRE(top.size() == 6);
  CHECK(top(0) == 0);
  CHECK(top(1) == 1);
  CHECK(top(2) == moe::no_expert);
  CHECK(top(3) == 2);
  CHECK(top(4) == 0);
  CHECK(top(5) == 1);
}

TEST_CASE("GroupRouting: per-group mean of the sample rows and the share of tokens per top expert",
          "[analysis][sequence_routing]") {
  moe::GroupRouting groups(2, 3);
  const std::vector<Index> first{1, 0};  // sample 0 in group 1, sample 1 in group 0
  groups.add(batch_weights(), batch_layout(), first);
  MatrixX<double> second_weights(3, 3);  // one more sample for group 1: 3 positions, 1 token
  second_weights << 0.1, 0.1, 0.8, 0.9, 0.05, 0.05, 0.9, 0.05, 0.05;
  const std::vector<Index> length{1}, second{1};
  groups.add(second_weights, SequenceLayout(1, 3, length), second);

  CHECK(groups.samples() == (moe::IndexVector(2) << 1, 2).finished());
  CHECK(groups.tokens() == (moe::IndexVector(2) << 3, 3).finished());
  MatrixX<double> mean(2, 3), share(2, 3);
  // group 0: sample 1's row; group 1: the mean of sample 0's row (0.3, 0.45, 0.25) and (0.1, 0.1, 0.8), not
  // weighted by tokens.
  mean << 0.3, 1.1 / 3, 1.0 / 3, 0.2, 0.275, 0.525;
  // group 0's top experts 2, 0, 1; group 1's 0, 1 (sample 0) and 2 (the new sample's one token).
  share << 1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0 / 3;
  CHECK((groups.mean_weights() - mean).cwiseAbs().maxCoeff() < 1e-15);
  CHECK((groups.top_share() - share).cwiseAbs().maxCoeff() < 1e-15);
  CHECK(groups.top_counts() == (moe::IndexMatrix(2, 3) << 1, 1, 1, 1, 1, 1).finished());

  SECTION("a batch with a token whose top expert differs moves only its group's share") {
    MatrixX<double> third(2, 3);
    third << 0.0, 0.0, 1.0, 0.3, 0.3, 0.4;
    const std::vector<Index> one_token{1}, group0{0};
    groups.add(third, SequenceLayout(1, 2, one_token), group0);
    CHECK(groups.top_counts().row(0) == (moe::IndexMatrix(1, 3) << 1, 1, 2).finished());
    CHECK(groups.top_counts().row(1) == (moe::IndexMatrix(1, 3) << 1, 1, 1).finished());
    CHECK(groups.top_share()(0, 2) == 0.5);
  }
}

TEST_CASE("sequence routing statistics reject all-padding samples and shapes that do not fit",
          "[analysis][sequence_routing][errors]") {
  const std::vector<Index> lengths{2, 0};
  CHECK_THROWS_WITH(moe::sample_routing_weights(batch_weights(), SequenceLayout(2, 3, lengths)),
                    "sample_routing_weights: sample 1 is all padding (3 positions): it has no token to average over");
  CHECK_THROWS_WITH(moe::token_top_experts(batch_weights(), SequenceLayout(2, 2)),
                    "token_top_experts: weights have 6 rows, the layout has batch * seq_len = 2 * 2 = 4");

  moe::GroupRouting groups(2, 3);
  CHECK_THROWS_WITH(groups.mean_weights(), "GroupRouting::mean_weights: group 0 has no samples");
  const std::vector<Index> bad_group{0, 2}, one_group{0};
  CHECK_THROWS_WITH(groups.add(batch_weights(), batch_layout(), bad_group),
                    "GroupRouting: sample 1 has group 2, expected [0, 2)");
  CHECK_THROWS_WITH(groups.add(batch_weights(), batch_layout(), one_group),
                    "GroupRouting: got 1 groups for a batch of 2 samples");
  CHECK_THROWS_WITH(groups.add(batch_weights(), SequenceLayout(2, 3, lengths), std::vector<Index>{0, 1}),
                    Catch::Contains("sample 1 is all padding"));
  CHECK(groups.samples().sum() == 0);  // nothing of a rejected batch was added
  CHECK(groups.tokens().sum() == 0);
  CHECK_THROWS_WITH(groups.add(MatrixX<double>(6, 2), batch_layout(), std::vector<Index>{0, 1}),
                    "GroupRouting: weights have 2 experts (columns), expected 3");
}
