// The helpers of the CNN examples of "Do Experts Specialize?" (examples/common/cnn_*.hpp): the model's
// shapes, expert alignment across trials and the routing statistics the reports rest on.

#include <catch2/catch.hpp>

#include <cmath>
#include <numeric>

#include "common/cnn_analysis.hpp"
#include "common/cnn_moe.hpp"
#include "common/cnn_training.hpp"

using moe::ImageDataset;
using moe::ImageShape;
using moe::Index;
using moe::IndexMatrix;
using moe::Matrix;
using moe::MatrixX;
using moe::Rng;
using moe::examples::align_experts;
using moe::examples::busiest_expert_share;
using moe::examples::class_spread;
using moe::examples::CnnDepth;
using moe::examples::CnnMoEModel;
using moe::examples::experts_in_use;
using moe::examples::fashion_mnist_groups;
using moe::examples::group_majority_expert;
using moe::examples::group_majority_share;
using moe::examples::group_correlation;
using moe::examples::group_of_class;
using moe::examples::GroupCorrelation;
using moe::examples::off_diagonal_norm;
using moe::examples::random_subset;
using moe::examples::renumber_experts;
using moe::examples::upper_triangle_correlation;

TEST_CASE("CnnMoEModel: the MoE sees 512 x width features at both depths, on 28x28 and 32x32 images") {
  for (const ImageShape input : {ImageShape{1, 28, 28}, ImageShape{3, 32, 32}}) {
    for (const CnnDepth depth : {CnnDepth::base, CnnDepth::short_model}) {
      Rng rng(3);
      CnnMoEModel model({.input = input, .classes = 10, .experts = 3, .depth = depth, .width = 1.0 / 16}, rng);
      CHECK(model.moe_features() == 32);
      CHECK(model.blocks().size() == (depth == CnnDepth::base ? 4u : 1u));
      Matrix x = Matrix::Random(5, input.size());
      const Matrix& logits = model.forward(x);
      CHECK(logits.rows() == 5);
      CHECK(logits.cols() == 10);
      model.backward(Matrix::Ones(5, 10));
    }
  }
}

TEST_CASE("CnnMoEModel: the document's filter counts at width 1") {
  Rng rng(1);
  CnnMoEModel model({.input = {3, 32, 32}, .experts = 2}, rng);
  CHECK(model.moe_features() == 512);
  CHECK(model.expert_hidden() == 1024);
  const auto params = model.named_parameters();
  CHECK(params.front().name == "conv1.weight");
  CHECK(params.front().parameter->value.rows() == 128);
  // 128 x 3 x 9 + 256 x 128 x 9 + 256 x 256 x 9 + 512 x 256 x 9 multiply-accumulates per output pixel,
  // on 32x32, 16x16, 16x16 and 8x8 maps.
  const double convs = 32.0 * 32 * 128 * 27 + 16.0 * 16 * 256 * 128 * 9 + 16.0 * 16 * 256 * 256 * 9 +
                       8.0 * 8 * 512 * 256 * 9;
  CHECK(model.forward_macs_per_image() == Approx(convs + 512.0 * 2 + 2.0 * 512 * 1024 + 512.0 * 10));
}

TEST_CASE("align_experts recovers the permutation that relabelled a trial's experts") {
  // Three experts with distinct class profiles over four classes.
  MatrixX<double> reference(4, 3);
  reference << 0.9, 0.1, 0.0,  //
      0.8, 0.1, 0.1,           //
      0.1, 0.7, 0.2,           //
      0.0, 0.2, 0.8;
  const std::vector<Index> relabel = {2, 0, 1};  // trial expert e is reference expert relabel[e]
  MatrixX<double> trial(4, 3);
  for (Index e = 0; e < 3; ++e) trial.col(e) = reference.col(relabel[static_cast<std::size_t>(e)]);
  trial(0, 1) -= 0.05;  // a little noise
  trial(2, 1) += 0.05;
  CHECK(align_experts(reference, trial) == relabel);
  CHECK(align_experts(reference, reference) == std::vector<Index>{0, 1, 2});

  const std::vector<Index> images = {0, 1, 2, 2, 1};
  CHECK(renumber_experts(images, relabel) == std::vector<Index>{2, 0, 1, 1, 0});
  CHECK_THROWS_AS(renumber_experts({3}, relabel), moe::Error);
  CHECK_THROWS_AS(align_experts(reference, MatrixX<double>::Zero(4, 2)), moe::Error);
}

TEST_CASE("align_experts with five experts matches each to its own profile") {
  const Index n = 5, classes = 10;
  MatrixX<double> reference = MatrixX<double>::Constant(classes, n, 0.02);
  for (Index c = 0; c < classes; ++c) reference(c, c % n) = 0.92;
  std::vector<Index> relabel = {3, 4, 0, 2, 1};
  MatrixX<double> trial(classes, n);
  for (Index e = 0; e < n; ++e) trial.col(e) = reference.col(relabel[static_cast<std::size_t>(e)]);
  CHECK(align_experts(reference, trial) == relabel);
}

TEST_CASE("Routing statistics: spread, load, group shares, correlations, off-diagonal norm") {
  MatrixX<double> even = MatrixX<double>::Constant(3, 2, 0.5);
  MatrixX<double> split(3, 2);
  split << 1, 0, 0, 1, 1, 0;
  CHECK(class_spread(even) == Approx(0.0));
  MatrixX<double> collapsed(3, 2);
  collapsed << 1, 0, 1, 0, 1, 0;
  CHECK(class_spread(collapsed) == Approx(0.0));
  MatrixX<double> halves(4, 2);
  halves << 1, 0, 1, 0, 0, 1, 0, 1;
  CHECK(class_spread(halves) == Approx(0.5));
  CHECK(class_spread(split) == Approx(std::sqrt(2.0 / 9.0)));

  IndexMatrix counts(3, 2);
  counts << 90, 10,  //
      80, 20,        //
      5, 95;
  CHECK(group_majority_share(counts, {0, 1}) == Approx(170.0 / 200.0));
  CHECK(group_majority_expert(counts, {0, 1}) == 0);
  CHECK(group_majority_expert(counts, {2}) == 1);
  CHECK(busiest_expert_share(counts) == Approx(175.0 / 300.0));
  IndexMatrix collapsed_counts(2, 3);
  collapsed_counts << 100, 0, 1, 50, 0, 0;
  CHECK(experts_in_use(collapsed_counts) == 1);
  CHECK(experts_in_use(collapsed_counts, 0.005) == 2);

  MatrixX<double> corr(3, 3);
  corr << 1, 0.8, -0.6,  //
      0.8, 1, -0.4,      //
      -0.6, -0.4, 1;
  const GroupCorrelation g = group_correlation(corr, {0, 0, 1});
  CHECK(g.within == Approx(0.8));
  CHECK(g.between == Approx(-0.5));
  CHECK(off_diagonal_norm(corr) == Approx(std::sqrt(2 * (0.64 + 0.36 + 0.16))));
  CHECK(upper_triangle_correlation(corr, corr) == Approx(1.0));
  CHECK(std::isnan(upper_triangle_correlation(MatrixX<double>::Identity(3, 3), corr)));
}

TEST_CASE("random_subset draws distinct images in their original order, the same for one seed") {
  ImageDataset<float> data;
  data.shape = {1, 1, 1};
  data.images.resize(20, 1);
  for (Index i = 0; i < 20; ++i) {
    data.images(i, 0) = static_cast<float>(i);
    data.labels.push_back(i % 10);
  }
  const auto a = random_subset(data, 8, 5), b = random_subset(data, 8, 5);
  CHECK(a.images == b.images);
  for (Index i = 1; i < a.size(); ++i) CHECK(a.images(i, 0) > a.images(i - 1, 0));
  CHECK_THROWS_AS(random_subset(data, 21, 5), moe::Error);
}

TEST_CASE("group_of_class follows the Fashion-MNIST groups") {
  const auto group = group_of_class(fashion_mnist_groups(), 10);
  CHECK(group == std::vector<Index>{1, 2, 1, 2, 1, 0, 1, 0, 2, 0});
}
