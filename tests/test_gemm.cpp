// moe::gemm, the one matrix product of the layers (oneDNN's dnnl_sgemm for float where moe is built with it,
// Eigen's GEMM otherwise): the products Eigen computes, on blocks too, and the same bits whether it is called
// on one thread, outside a parallel region with two threads available, or from two threads at once.

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "moe/core/gemm.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/random.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "random_matrix.hpp"

using moe::Index;
using moe::MatrixX;
using moe::Op;

namespace {

using moe::test::random_matrix;

template <class Scalar>
MatrixX<Scalar> op(const MatrixX<Scalar>& m, Op o) {
  return o == Op::transpose ? MatrixX<Scalar>(m.transpose()) : m;
}

/// Largest |a - b| over the largest |b|.
template <class Scalar>
double scaled_error(const MatrixX<Scalar>& a, const MatrixX<Scalar>& b) {
  return double((a - b).cwiseAbs().maxCoeff()) / std::max(1.0, double(b.cwiseAbs().maxCoeff()));
}

/// One product of each kind of Linear's, with a C2-sized expert (384 rows, d 256, h 128).
struct Case {
  Op op_a, op_b;
  Index m, n, k;
  bool accumulate;
};
const std::vector<Case> cases{
    {Op::none, Op::transpose, 384, 128, 256, false},   // y = x W^T
    {Op::transpose, Op::none, 128, 256, 384, true},    // dW += dy^T x
    {Op::none, Op::none, 384, 256, 128, false},        // dx = dy W
    {Op::transpose, Op::transpose, 7, 5, 3, true},     // and the fourth kind, small
};

/// a, b and the initial out of case c, stored as gemm reads them.
template <class Scalar>
struct Operands {
  MatrixX<Scalar> a, b, out;
  Operands(const Case& c, std::uint64_t seed)
      : a(random_matrix<Scalar>(c.op_a == Op::transpose ? c.k : c.m, c.op_a == Op::transpose ? c.m : c.k, seed)),
        b(random_matrix<Scalar>(c.op_b == Op::transpose ? c.n : c.k, c.op_b == Op::transpose ? c.k : c.n, seed + 1)),
        out(random_matrix<Scalar>(c.m, c.n, seed + 2)) {}
  MatrixX<Scalar> product(const Case& c) const {
    MatrixX<Scalar> result = out;
    moe::gemm<Scalar>(a, c.op_a, b, c.op_b, result, c.accumulate);
    return result;
  }
};

}  // namespace

TEMPLATE_TEST_CASE("gemm computes op(a) op(b), accumulating on request", "[gemm]", float, double) {
  using S = TestType;
  for (const Case& c : cases) {
    INFO("m " << c.m << " n " << c.n << " k " << c.k);
    const Operands<S> o(c, 1);
    MatrixX<S> expected = op(o.a, c.op_a) * op(o.b, c.op_b);
    if (c.accumulate) expected += o.out;
    CHECK(scaled_error<S>(o.product(c), expected) < (std::is_same_v<S, float> ? 1e-5 : 1e-13));
  }
}

TEST_CASE("gemm writes into blocks of rows and reads blocks of columns", "[gemm]") {
  const moe::Matrix dy = random_matrix<float>(40, 24, 1), x = random_matrix<float>(40, 16, 2);
  moe::Matrix grad = random_matrix<float>(24, 16, 3);
  const moe::Matrix before = grad;
  moe::gemm<float>(dy.middleCols(8, 8), Op::transpose, x, Op::none, grad.middleRows(8, 8), /*accumulate=*/true);
  const moe::Matrix expected = before.middleRows(8, 8) + dy.middleCols(8, 8).transpose() * x;
  CHECK(scaled_error<float>(grad.middleRows(8, 8), expected) < 1e-5);
  CHECK(grad.topRows(8) == before.topRows(8));
  CHECK(grad.bottomRows(8) == before.bottomRows(8));
}

TEST_CASE("gemm of an empty inner dimension is zero, or leaves out as it was", "[gemm]") {
  const moe::Matrix a(3, 0), b(0, 4);
  moe::Matrix out = moe::Matrix::Constant(3, 4, 2.0f);
  moe::gemm<float>(a, Op::none, b, Op::none, out, /*accumulate=*/true);
  CHECK(out == moe::Matrix::Constant(3, 4, 2.0f));
  moe::gemm<float>(a, Op::none, b, Op::none, out);
  CHECK(out == moe::Matrix::Zero(3, 4));
}

TEST_CASE("gemm rejects operands whose shapes do not chain, naming them", "[gemm][errors]") {
  const moe::Matrix a(3, 4), b(5, 2);
  moe::Matrix out(3, 2);
  CHECK_THROWS_WITH(moe::gemm<float>(a, Op::none, b, Op::none, out),
                    Catch::Contains("op(a) is 3x4, op(b) is 5x2, out is 3x2"));
}

TEST_CASE("gemm gives the same bits on one thread, with two available, and from two threads at once",
          "[gemm][determinism]") {
  INFO("engine " << moe::gemm_engine());
  const int previous = moe::set_num_threads(1);
  std::vector<Operands<float>> operands;
  std::vector<moe::Matrix> alone;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    operands.emplace_back(cases[i], 10 * i);
    alone.push_back(operands.back().product(cases[i]));
  }
  // Outside a parallel region, with two threads that an engine could split the product over.
  moe::set_num_threads(2);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    CHECK(operands[i].product(cases[i]) == alone[i]);
    CHECK(moe::num_threads() == 2);  // the engine's one-thread setting does not leak out
  }
  // Every product on either thread, both threads busy at once, several times over.
  std::vector<moe::Matrix> concurrent(2 * cases.size());
  for (int round = 0; round < 5; ++round) {
    moe::parallel_for(Index(concurrent.size()), [&](Index item) {
      const auto i = std::size_t(item) % cases.size();
      concurrent[std::size_t(item)] = operands[i].product(cases[i]);
    });
    for (std::size_t item = 0; item < concurrent.size(); ++item) {
      INFO("round " << round << ", item " << item);
      CHECK(concurrent[item] == alone[item % cases.size()]);
    }
  }
  moe::set_num_threads(previous);
}

TEST_CASE("A feed-forward expert gives the same bits run to run and at 1 and 2 threads", "[gemm][determinism]") {
  // Large enough for the engines' blocked kernels (C1's widths), small in rows to stay fast.
  auto run = [](int threads) {
    const int previous = moe::set_num_threads(threads);
    moe::Rng rng(3);
    moe::FeedForward<moe::GELU> expert(512, {.hidden = 1024}, rng);
    const moe::Matrix x = random_matrix<float>(300, 512, 4), dy = random_matrix<float>(300, 512, 5);
    std::vector<moe::Matrix> results{expert.forward(x), expert.backward(dy)};
    for (const auto& p : expert.named_parameters()) results.push_back(p.parameter->grad);
    moe::set_num_threads(previous);
    return results;
  };
  const auto first = run(1);
  for (const int threads : {1, 2, 2}) {
    const auto again = run(threads);
    REQUIRE(again.size() == first.size());
    for (std::size_t i = 0; i < first.size(); ++i) {
      INFO("threads " << threads << ", result " << i);
      CHECK(again[i] == first[i]);
    }
  }
}

TEST_CASE("FeedForward split in feature chunks computes what it computes whole", "[gemm][nn]") {
  auto run = [](Index chunk) {
    moe::Rng rng(6);
    moe::FeedForward<moe::GELU, double> expert(300, {.hidden = 600, .out_features = 520}, rng);
    expert.split_products(chunk);
    const MatrixX<double> x = random_matrix<double>(37, 300, 7), dy = random_matrix<double>(37, 520, 8);
    std::vector<MatrixX<double>> results{expert.forward(x), expert.backward(dy)};
    for (const auto& p : expert.named_parameters()) results.push_back(p.parameter->grad);
    return results;
  };
  const auto whole = run(0), split = run(256);
  for (std::size_t i = 0; i < whole.size(); ++i) {
    INFO("result " << i);
    CHECK(scaled_error<double>(split[i], whole[i]) < 1e-13);
  }
  moe::Rng rng(1);
  moe::FeedForward<moe::GELU> expert(8, {.hidden = 8}, rng);
  CHECK_THROWS_WITH(expert.split_products(-1), Catch::Contains("features must not be negative, got -1"));
}
