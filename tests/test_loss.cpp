#include <cmath>
#include <vector>

#include "gradient_check.hpp"
#include "moe/nn/loss.hpp"

using moe::Index;
using moe::MatrixX;

TEST_CASE("CrossEntropyLoss matches a hand-computed case", "[loss][cross_entropy]") {
  moe::CrossEntropyLoss<double> loss;
  MatrixX<double> logits(2, 3);
  logits << 1, 2, 3,  //
      1, 1, 1;
  const std::vector<Index> targets{2, 0};
  // row 0: log(e + e^2 + e^3) - 3; row 1: log 3
  CHECK(loss.forward(logits, targets) == Approx(0.753109126556245).epsilon(1e-14));

  const MatrixX<double>& grad = loss.backward();
  // (softmax - one-hot) / 2
  CHECK(grad(0, 0) == Approx(0.09003057317038046 / 2).epsilon(1e-12));
  CHECK(grad(0, 1) == Approx(0.24472847105479767 / 2).epsilon(1e-12));
  CHECK(grad(0, 2) == Approx((0.6652409557748219 - 1) / 2).epsilon(1e-12));
  CHECK(grad(1, 0) == Approx((1.0 / 3 - 1) / 2).epsilon(1e-12));
  CHECK(grad(1, 1) == Approx(1.0 / 6).epsilon(1e-12));
}

TEST_CASE("CrossEntropyLoss skips rows with the ignore index", "[loss][cross_entropy]") {
  MatrixX<double> logits(3, 3);
  logits << 1, 2, 3,  //
      1, 1, 1,        //
      5, -2, 0;
  moe::CrossEntropyLoss<double> loss;
  const std::vector<Index> targets{2, -100, -100};
  CHECK(loss.forward(logits, targets) == Approx(0.40760596444438013).epsilon(1e-14));
  CHECK(loss.backward().row(1).isZero(0.0));
  CHECK(loss.backward().row(2).isZero(0.0));
  CHECK(loss.backward()(0, 2) == Approx(0.6652409557748219 - 1).epsilon(1e-12));  // mean over one row

  moe::CrossEntropyLoss<double> custom(1);
  const std::vector<Index> with_one{2, 1, 0};
  const double expected = (0.40760596444438013 + (std::log(std::exp(5) + std::exp(-2) + 1) - 5)) / 2;
  CHECK(custom.forward(logits, with_one) == Approx(expected).epsilon(1e-14));
  CHECK(custom.backward().row(1).isZero(0.0));

  SECTION("every row ignored gives 0 and a zero gradient") {
    const std::vector<Index> none{-100, -100, -100};
    CHECK(loss.forward(logits, none) == 0.0);
    CHECK(loss.backward().isZero(0.0));
  }
}

TEST_CASE("CrossEntropyLoss is stable for large logits", "[loss][cross_entropy]") {
  moe::CrossEntropyLoss<float> loss;
  moe::Matrix logits(2, 2);
  logits << 1000.0f, 0.0f,  //
      -1000.0f, 1000.0f;
  const std::vector<Index> targets{1, 0};
  const float value = loss.forward(logits, targets);
  CHECK(std::isfinite(value));
  CHECK(value == Approx(1500.0f));
  CHECK(loss.backward().allFinite());
}

TEST_CASE("CrossEntropyLoss gradient matches finite differences", "[loss][cross_entropy]") {
  moe::Rng rng(1);
  MatrixX<double> logits(5, 4);
  moe::fill_uniform(logits, rng, -3.0, 3.0);
  const std::vector<Index> targets{0, 3, -100, 2, 1};
  moe::CrossEntropyLoss<double> loss;
  loss.forward(logits, targets);
  const MatrixX<double> analytic = loss.backward();
  const auto error = moe::test::compare_gradient([&] { return loss.forward(logits, targets); }, logits, analytic,
                                                 "logits");
  INFO(error.where);
  CHECK(error.worst <= 1.0);
}

TEST_CASE("CrossEntropyLoss rejects bad targets", "[loss][cross_entropy][errors]") {
  moe::CrossEntropyLoss<float> loss;
  const moe::Matrix logits = moe::Matrix::Zero(3, 4);
  const std::vector<Index> too_large{0, 4, 1};
  CHECK_THROWS_WITH(loss.forward(logits, too_large), Catch::Contains("target of row 1 is 4") &&
                                                         Catch::Contains("[0, 4)"));
  const std::vector<Index> negative{0, 1, -1};
  CHECK_THROWS_WITH(loss.forward(logits, negative), Catch::Contains("target of row 2 is -1"));
  const std::vector<Index> too_few{0, 1};
  CHECK_THROWS_WITH(loss.forward(logits, too_few), Catch::Contains("got 2 targets for 3 rows"));
}

TEST_CASE("BCEWithLogitsLoss matches a hand-computed case", "[loss][bce]") {
  moe::BCEWithLogitsLoss<double> loss;
  MatrixX<double> logits(2, 2), targets(2, 2);
  logits << 0, 2,  //
      -1, 3;
  targets << 1, 0,  //
      0.5, 1;
  CHECK(loss.forward(logits, targets) == Approx(0.9204810576737208).epsilon(1e-14));
  // (sigmoid(2) - 0) / 4
  CHECK(loss.backward()(0, 1) == Approx(0.22019926949447058).epsilon(1e-12));
  CHECK(loss.backward()(0, 0) == Approx((0.5 - 1) / 4).epsilon(1e-12));
}

TEST_CASE("BCEWithLogitsLoss is stable for large |x|", "[loss][bce]") {
  moe::BCEWithLogitsLoss<float> loss;
  moe::Matrix logits(1, 4), targets(1, 4);
  logits << 1000.0f, -1000.0f, 1000.0f, -1000.0f;
  targets << 0.0f, 1.0f, 1.0f, 0.0f;
  const float value = loss.forward(logits, targets);
  CHECK(std::isfinite(value));
  CHECK(value == Approx(500.0f));  // (1000 + 1000 + 0 + 0) / 4
  CHECK(loss.backward().allFinite());
  CHECK(loss.backward()(0, 0) == Approx(0.25f));
  CHECK(loss.backward()(0, 1) == Approx(-0.25f));
  CHECK(loss.backward()(0, 2) == Approx(0.0f).margin(1e-12));
}

TEST_CASE("BCEWithLogitsLoss gradient matches finite differences", "[loss][bce]") {
  moe::Rng rng(2);
  MatrixX<double> logits(3, 4), targets(3, 4);
  moe::fill_uniform(logits, rng, -4.0, 4.0);
  moe::fill_uniform(targets, rng, 0.0, 1.0);
  moe::BCEWithLogitsLoss<double> loss;
  loss.forward(logits, targets);
  const MatrixX<double> analytic = loss.backward();
  const auto error = moe::test::compare_gradient([&] { return loss.forward(logits, targets); }, logits, analytic,
                                                 "logits");
  INFO(error.where);
  CHECK(error.worst <= 1.0);
}

TEST_CASE("BCEWithLogitsLoss rejects mismatched shapes", "[loss][bce][errors]") {
  moe::BCEWithLogitsLoss<float> loss;
  CHECK_THROWS_WITH(loss.forward(moe::Matrix::Zero(2, 3), moe::Matrix::Zero(3, 2)),
                    Catch::Contains("logits have shape 2x3, targets have shape 3x2"));
}

TEST_CASE("count_correct takes the first maximum of each row", "[loss][accuracy]") {
  moe::Matrix logits(4, 3);
  logits << 1, 3, 3,  // tie: argmax is 1
      0, 0, 5,        //
      2, 1, 0,        //
      0, 1, 0;
  CHECK(moe::count_correct<float>(logits, std::vector<Index>{1, 2, 0, 1}) == 4);
  CHECK(moe::count_correct<float>(logits, std::vector<Index>{2, 2, 0, 1}) == 3);  // the tie does not go to 2
  CHECK(moe::count_correct<float>(logits, std::vector<Index>{0, 0, 1, -100}) == 0);

  const MatrixX<double> logits_d = logits.cast<double>();
  CHECK(moe::count_correct<double>(logits_d, std::vector<Index>{1, 2, 0, 0}) == 3);
  CHECK_THROWS_WITH(moe::count_correct<float>(logits, std::vector<Index>{1}),
                    Catch::Contains("got 1 targets for 4 rows"));
}
