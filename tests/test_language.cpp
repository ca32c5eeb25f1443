// The language stack: Embedding, RMSNorm, causal self-attention with RoPE and padding, decoder blocks
// with a dense or MoE feed-forward part, and the small causal LM built from them.

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gradient_check.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/core/parallel.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/attention.hpp"
#include "moe/nn/embedding.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/loss.hpp"
#include "moe/nn/rms_norm.hpp"
#include "moe/nn/transformer.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"
#include "random_matrix.hpp"

using moe::Index;
using moe::MatrixX;
using moe::SequenceLayout;

namespace {

using moe::test::random_matrix;

template <class S>
using DenseBlock = moe::DecoderBlock<moe::FeedForward<moe::GELU, S>>;
template <class S>
using MoEFFN = moe::MoELayer<moe::FeedForward<moe::GELU, S>, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss>;
template <class S>
using MoEBlock = moe::DecoderBlock<MoEFFN<S>>;

static_assert(moe::Module<moe::RMSNorm<double>>);
static_assert(moe::Module<moe::CausalSelfAttention<float>>);
static_assert(moe::Module<DenseBlock<double>>);
static_assert(moe::Module<MoEBlock<float>>);
static_assert(moe::Module<moe::DecoderBlock<moe::SwiGLUFeedForward<float>>>);
static_assert(MoEBlock<double>::has_aux_loss && !DenseBlock<double>::has_aux_loss);

std::vector<Index> random_ids(std::size_t count, Index vocab, std::uint64_t seed) {
  moe::Rng rng(seed);
  std::vector<Index> ids(count);
  for (auto& id : ids) id = moe::uniform_index(rng, vocab);
  return ids;
}

std::vector<std::string> names_of(const auto& parameters) {
  std::vector<std::string> names;
  for (const auto& p : parameters) names.push_back(p.name);
  return names;
}

/// A batched module seen through the one-argument Module contract, for check_module_gradients.
template <class M>
struct WithLayout {
  using Scalar = typename M::Scalar;
  M& module;
  SequenceLayout layout;
  const MatrixX<Scalar>& forward(moe::ConstRef<Scalar> x) { return module.forward(x, layout); }
  const MatrixX<Scalar>& backward(moe::ConstRef<Scalar> dy) { return module.backward(dy); }
  moe::ParameterList<Scalar> named_parameters() { return module.named_parameters(); }
};

/// Attention computed element by element from the projections' weights: q, k, v, RoPE on interleaved
/// pairs, masked softmax over the keys j <= i that are not padding, per head, then o_proj.
MatrixX<double> reference_attention(moe::CausalSelfAttention<double>& attn, const MatrixX<double>& x,
                                    const SequenceLayout& layout) {
  const Index d = attn.d_model(), heads = attn.num_heads(), dh = d / heads, length = layout.seq_len();
  auto project = [&](moe::Linear<double>& linear, const MatrixX<double>& in) {
    const bool bias = linear.named_parameters().size() == 2;
    MatrixX<double> out(in.rows(), d);
    for (Index t = 0; t < in.rows(); ++t)
      for (Index c = 0; c < d; ++c) {
        double sum = bias ? linear.bias().value(0, c) : 0.0;
        for (Index j = 0; j < d; ++j) sum += in(t, j) * linear.weight().value(c, j);
        out(t, c) = sum;
      }
    return out;
  };
  MatrixX<double> q = project(attn.q_proj(), x), k = project(attn.k_proj(), x), v = project(attn.v_proj(), x);
  if (attn.options().rotary) {
    for (Index t = 0; t < x.rows(); ++t)
      for (Index h = 0; h < heads; ++h)
        for (Index i = 0; i < dh / 2; ++i) {
          const double angle = static_cast<double>(t % length) *
                               std::pow(attn.options().rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(dh));
          for (MatrixX<double>* m : {&q, &k}) {
            const double a = (*m)(t, h * dh + 2 * i), b = (*m)(t, h * dh + 2 * i + 1);
            (*m)(t, h * dh + 2 * i) = a * std::cos(angle) - b * std::sin(angle);
            (*m)(t, h * dh + 2 * i + 1) = a * std::sin(angle) + b * std::cos(angle);
          }
        }
  }
  MatrixX<double> context = MatrixX<double>::Zero(x.rows(), d);
  for (Index b = 0; b < layout.batch(); ++b)
    for (Index h = 0; h < heads; ++h)
      for (Index i = 0; i < length; ++i) {
        std::vector<double> weight(static_cast<std::size_t>(length), 0.0);
        double max = -INFINITY, sum = 0.0;
        for (Index j = 0; j <= i; ++j) {
          if (layout.is_padding(b, j)) continue;
          double score = 0.0;
          for (Index c = 0; c < dh; ++c) score += q(b * length + i, h * dh + c) * k(b * length + j, h * dh + c);
          weight[static_cast<std::size_t>(j)] = score / std::sqrt(static_cast<double>(dh));
          max = std::max(max, weight[static_cast<std::size_t>(j)]);
        }
        for (Index j = 0; j <= i; ++j) {
          auto& w = weight[static_cast<std::size_t>(j)];
          w = layout.is_padding(b, j) ? 0.0 : std::exp(w - max);
          sum += w;
        }
        for (Index j = 0; j <= i; ++j)
          for (Index c = 0; c < dh; ++c)
            context(b * length + i, h * dh + c) += weight[static_cast<std::size_t>(j)] / sum * v(b * length + j, h * dh + c);
      }
  return project(attn.o_proj(), context);
}

/// 2 sequences of 5, the second padded after 3 tokens; and left padding with a fully masked first query.
SequenceLayout right_padded() { return SequenceLayout(2, 5, std::vector<Index>{5, 3}); }
SequenceLayout left_padded() {
  moe::PaddingMask mask(2, 5);
  mask << false, false, false, false, false,  //
      true, true, false, false, false;
  return SequenceLayout(mask);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Embedding

TEST_CASE("Embedding looks up rows and is initialised N(0, 1) as PyTorch", "[nn][embedding]") {
  moe::Rng rng(1);
  moe::Embedding<double> big(200, 50, rng, 3);
  const auto& w = big.weight().value;
  CHECK(big.weight().shape == moe::Shape{200, 50});
  CHECK(w.row(3).isZero(0.0));
  const double mean = w.mean();
  const double std = std::sqrt((w.array() - mean).square().sum() / static_cast<double>(w.size() - 1));
  CHECK(std::abs(mean) < 0.03);
  CHECK(std::abs(std - 1.0) < 0.03);

  const std::vector<Index> ids{4, 0, 4, 199};
  const MatrixX<double>& y = big.forward(ids);
  REQUIRE(y.rows() == 4);
  for (std::size_t t = 0; t < ids.size(); ++t) CHECK(y.row(static_cast<Index>(t)) == w.row(ids[t]));
  CHECK(big.named_parameters().size() == 1);
  CHECK(big.named_parameters()[0].name == "weight");
}

TEST_CASE("Embedding gradient matches finite differences and sums repeated ids", "[nn][embedding][gradient]") {
  moe::Rng rng(2);
  moe::Embedding<double> embedding(7, 4, rng);
  const std::vector<Index> ids{1, 3, 1, 6, 0, 1};
  const MatrixX<double> weights = random_matrix(6, 4, 3);
  auto loss = [&] { return (embedding.forward(ids).array() * weights.array()).sum(); };
  embedding.weight().zero_grad();
  embedding.forward(ids);
  embedding.backward(weights);
  const MatrixX<double> analytic = embedding.weight().grad;
  CHECK(analytic.row(1) == weights.row(0) + weights.row(2) + weights.row(5));
  CHECK(analytic.row(2).isZero(0.0));
  const auto error = moe::test::compare_gradient(loss, embedding.weight().value, analytic, "weight");
  INFO(error.where);
  CHECK(error.worst <= 1.0);
}

TEST_CASE("Embedding padding row gets no gradient, and a negative padding_idx counts from the end",
          "[nn][embedding]") {
  moe::Rng rng(4);
  moe::Embedding<float> embedding(6, 3, rng, -1);
  REQUIRE(embedding.padding_idx() == Index{5});
  CHECK(embedding.weight().value.row(5).isZero(0.0f));
  const std::vector<Index> ids{5, 2, 5};
  embedding.weight().zero_grad();
  embedding.forward(ids);
  embedding.backward(moe::Matrix::Ones(3, 3));
  CHECK(embedding.weight().grad.row(5).isZero(0.0f));
  CHECK(embedding.weight().grad.row(2).isOnes(0.0f));
}

TEST_CASE("Embedding rejects bad ids and sizes with a named reason", "[nn][embedding][errors]") {
  moe::Rng rng(1);
  moe::Embedding<float> embedding(10, 4, rng);
  const std::vector<Index> bad{1, 2, 12};
  CHECK_THROWS_WITH(embedding.forward(bad), Catch::Contains("id 12 at position 2 is out of range") &&
                                                Catch::Contains("[0, 10)"));
  const std::vector<Index> negative{-1};
  CHECK_THROWS_WITH(embedding.forward(negative), Catch::Contains("id -1 at position 0"));
  CHECK_THROWS_WITH(moe::Embedding<float>(0, 4, rng), Catch::Contains("num_embeddings must be positive, got 0"));
  CHECK_THROWS_WITH(moe::Embedding<float>(10, 4, rng, 10), Catch::Contains("padding_idx must be in [-10, 10), got 10"));
  embedding.forward(std::vector<Index>{1, 2});
  CHECK_THROWS_WITH(embedding.backward(moe::Matrix::Zero(3, 4)), Catch::Contains("gradient has shape 3x4, expected 2x4"));
}

// ---------------------------------------------------------------------------------------------------------
// RMSNorm

TEST_CASE("RMSNorm divides by the root mean square and its gradients match finite differences",
          "[nn][rms_norm][gradient]") {
  moe::RMSNorm<double> norm(6, 1e-6);
  CHECK(norm.weight().value.isOnes(0.0));
  CHECK(norm.weight().shape == moe::Shape{6});
  const MatrixX<double> x = random_matrix(4, 6, 5);
  const MatrixX<double> y = norm.forward(x);
  for (Index t = 0; t < 4; ++t) {
    const double rms = std::sqrt(x.row(t).squaredNorm() / 6.0 + 1e-6);
    CHECK((y.row(t) - x.row(t) / rms).cwiseAbs().maxCoeff() < 1e-14);
  }
  norm.weight().value = random_matrix(1, 6, 6);
  moe::test::check_module_gradients(norm, x, 7);
  CHECK_THROWS_WITH(norm.forward(MatrixX<double>::Zero(2, 5)), Catch::Contains("input has 5 columns, dim is 6"));
  CHECK_THROWS_WITH(moe::RMSNorm<float>(0), Catch::Contains("dim must be positive, got 0"));
}

// ---------------------------------------------------------------------------------------------------------
// Attention

TEST_CASE("SequenceLayout marks padding from lengths, masks and pad ids", "[nn][attention]") {
  const SequenceLayout layout = right_padded();
  CHECK(layout.batch() == 2);
  CHECK(layout.seq_len() == 5);
  CHECK(layout.tokens() == 10);
  CHECK(!layout.is_padding(1, 2));
  CHECK(layout.is_padding(1, 3));
  CHECK(!layout.is_padding(0, 4));
  const std::vector<Index> ids{7, 7, 7, 7, 7, 7, 7, 7, 0, 0};
  CHECK((SequenceLayout::from_pad_id(ids, 2, 5, 0).padding() == layout.padding()).all());
  CHECK_THROWS_WITH(SequenceLayout(2, 5, std::vector<Index>{5, 6}),
                    Catch::Contains("length of sequence 1 is 6, expected a length in [0, seq_len = 5]"));
  CHECK_THROWS_WITH(SequenceLayout(2, 5, std::vector<Index>{5}), Catch::Contains("got 1 lengths, expected none or batch = 2"));
  CHECK_THROWS_WITH(SequenceLayout(0, 5), Catch::Contains("batch must be positive, got 0"));
}

TEST_CASE("Attention equals a per-head reference computed with plain loops", "[nn][attention]") {
  moe::Rng rng(8);
  SECTION("RoPE, right padding") {
    moe::CausalSelfAttention<double> attn(8, {.num_heads = 2}, rng);
    const MatrixX<double> x = random_matrix(10, 8, 9);
    const MatrixX<double> y = attn.forward(x, right_padded());
    CHECK((y - reference_attention(attn, x, right_padded())).cwiseAbs().maxCoeff() < 1e-12);
    // The weights of each query sum to 1 over the allowed keys and are 0 elsewhere.
    const MatrixX<double>& p = attn.attention_weights();
    REQUIRE(p.rows() == 2 * 2 * 5);
    for (Index r = 0; r < p.rows(); ++r) {
      const Index b = r / 10, i = r % 5;
      CHECK(std::abs(p.row(r).sum() - 1.0) < 1e-12);
      for (Index j = 0; j < 5; ++j)
        if (j > i || (b == 1 && j >= 3)) CHECK(p(r, j) == 0.0);
    }
  }
  SECTION("RoPE, left padding with a fully masked query, biases, theta 500") {
    moe::CausalSelfAttention<double> attn(12, {.num_heads = 3, .bias = true, .rope_theta = 500.0}, rng);
    const MatrixX<double> x = random_matrix(10, 12, 10);
    const MatrixX<double> y = attn.forward(x, left_padded());
    CHECK((y - reference_attention(attn, x, left_padded())).cwiseAbs().maxCoeff() < 1e-12);
  }
  SECTION("no positional encoding, one sequence through the Module overload") {
    moe::CausalSelfAttention<double> attn(6, {.num_heads = 3, .rotary = false}, rng);
    const MatrixX<double> x = random_matrix(7, 6, 11);
    const MatrixX<double> y = attn.forward(x);
    CHECK((y - reference_attention(attn, x, SequenceLayout(1, 7))).cwiseAbs().maxCoeff() < 1e-12);
  }
}

TEST_CASE("RoPE makes scores depend on relative positions only: left padding leaves the tokens' outputs",
          "[nn][attention]") {
  moe::Rng rng(12);
  moe::CausalSelfAttention<double> attn(8, {.num_heads = 2}, rng);
  const MatrixX<double> tokens = random_matrix(3, 8, 13);
  MatrixX<double> right = random_matrix(5, 8, 14), left = random_matrix(5, 8, 15);
  right.topRows(3) = tokens;
  left.bottomRows(3) = tokens;
  const MatrixX<double> y_right = attn.forward(right, 1, 5, std::vector<Index>{3});
  moe::PaddingMask mask(1, 5);
  mask << true, true, false, false, false;
  const MatrixX<double> y_left = attn.forward(left, SequenceLayout(mask));
  CHECK((y_right.topRows(3) - y_left.bottomRows(3)).cwiseAbs().maxCoeff() < 1e-12);
  // The same weights without RoPE give other outputs: the rotation is applied.
  moe::Rng same(12);
  moe::CausalSelfAttention<double> plain(8, {.num_heads = 2, .rotary = false}, same);
  CHECK(plain.q_proj().weight().value == attn.q_proj().weight().value);
  CHECK((plain.forward(right, 1, 5, std::vector<Index>{3}) - y_right).cwiseAbs().maxCoeff() > 1e-3);
}

TEST_CASE("Attention gradients match finite differences", "[nn][attention][gradient]") {
  moe::Rng rng(16);
  SECTION("RoPE, causal, 2 sequences of 5, one padded to 3") {
    moe::CausalSelfAttention<double> attn(8, {.num_heads = 2}, rng);
    WithLayout<moe::CausalSelfAttention<double>> bound{attn, right_padded()};
    moe::test::check_module_gradients(bound, random_matrix(10, 8, 17), 18);
  }
  SECTION("RoPE, left padding with fully masked queries, biases") {
    moe::CausalSelfAttention<double> attn(6, {.num_heads = 3, .bias = true}, rng);
    WithLayout<moe::CausalSelfAttention<double>> bound{attn, left_padded()};
    moe::test::check_module_gradients(bound, random_matrix(10, 6, 19), 20);
  }
  SECTION("no positional encoding, one sequence") {
    moe::CausalSelfAttention<double> attn(6, {.num_heads = 2, .rotary = false}, rng);
    moe::test::check_module_gradients(attn, random_matrix(6, 6, 21), 22);
  }
}

TEST_CASE("Attention names its projections like PyTorch", "[nn][attention]") {
  moe::Rng rng(1);
  moe::CausalSelfAttention<float> attn(8, {.num_heads = 2}, rng);
  CHECK(names_of(attn.named_parameters()) ==
        std::vector<std::string>{"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"});
  moe::CausalSelfAttention<float> biased(8, {.num_heads = 2, .bias = true}, rng);
  CHECK(biased.named_parameters().size() == 8);
  CHECK(biased.named_parameters()[1].name == "q_proj.bias");
}

TEST_CASE("Attention is causal and ignores padded keys, bit for bit", "[nn][attention]") {
  moe::Rng rng(23);
  moe::CausalSelfAttention<float> attn(16, {.num_heads = 4}, rng);
  moe::Matrix x(14, 16);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  const SequenceLayout layout(2, 7, std::vector<Index>{7, 4});
  const moe::Matrix base = attn.forward(x, layout);
  for (Index t = 0; t + 1 < 7; ++t) {
    moe::Matrix changed = x;
    changed.row(t + 1).setConstant(3.0f);  // sequence 0, position t + 1
    const moe::Matrix y = attn.forward(changed, layout);
    INFO("t = " << t);
    CHECK(y.topRows(t + 1) == base.topRows(t + 1));
    CHECK(y.bottomRows(7) == base.bottomRows(7));
  }
  // Padded tokens of sequence 1 (positions 4-6) are invisible to its real ones.
  moe::Matrix padded = x;
  padded.bottomRows(3).setConstant(-5.0f);
  CHECK(attn.forward(padded, layout).middleRows(7, 4) == base.middleRows(7, 4));
  // Left padding: the padded keys come first, causality does not hide them; the mask does.
  moe::PaddingMask mask = moe::PaddingMask::Constant(2, 7, false);
  mask.row(1).head(3).setConstant(true);
  const SequenceLayout left(mask);
  const moe::Matrix left_base = attn.forward(x, left);
  padded = x;
  padded.middleRows(7, 3).setConstant(7.0f);
  const moe::Matrix y = attn.forward(padded, left);
  CHECK(y.bottomRows(4) == left_base.bottomRows(4));
  CHECK(y.topRows(7) == left_base.topRows(7));
}

TEST_CASE("Attention of a fully padded sequence is finite, with finite gradients", "[nn][attention]") {
  moe::Rng rng(24);
  moe::CausalSelfAttention<float> attn(8, {.num_heads = 2}, rng);
  moe::Matrix x(10, 8);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  const moe::Matrix y = attn.forward(x, 2, 5, std::vector<Index>{5, 0});
  CHECK(y.allFinite());
  CHECK(y.bottomRows(5).isZero(0.0f));  // no key: zero context, and o_proj has no bias
  const moe::Matrix dx = attn.backward(moe::Matrix::Ones(10, 8));
  CHECK(dx.allFinite());
  for (const auto& p : attn.named_parameters()) CHECK(p.parameter->grad.allFinite());
}

TEST_CASE("Attention gives the same bits for 1 and 2 threads", "[nn][attention][determinism]") {
  auto run = [](int threads) {
    const int previous = moe::set_num_threads(threads);
    moe::Rng rng(25);
    moe::CausalSelfAttention<float> attn(32, {.num_heads = 4, .bias = true}, rng);
    moe::Matrix x(3 * 9, 32), dy(3 * 9, 32);
    moe::fill_uniform(x, rng, -1.0, 1.0);
    moe::fill_uniform(dy, rng, -1.0, 1.0);
    std::vector<moe::Matrix> results{attn.forward(x, 3, 9, std::vector<Index>{9, 5, 0}), attn.backward(dy)};
    for (const auto& p : attn.named_parameters()) results.push_back(p.parameter->grad);
    moe::set_num_threads(previous);
    return results;
  };
  const auto one = run(1), two = run(2);
  REQUIRE(one.size() == two.size());
  for (std::size_t i = 0; i < one.size(); ++i) {
    INFO("result " << i);
    CHECK(one[i] == two[i]);
  }
}

TEST_CASE("Attention rejects bad configurations and inputs with a named reason", "[nn][attention][errors]") {
  moe::Rng rng(1);
  using Attention = moe::CausalSelfAttention<float>;
  CHECK_THROWS_WITH(Attention(10, {.num_heads = 3}, rng), Catch::Contains("d_model 10 must be a multiple of num_heads 3"));
  CHECK_THROWS_WITH(Attention(9, {.num_heads = 3}, rng), Catch::Contains("rotary embeddings need an even head_dim, got 3"));
  CHECK_NOTHROW(Attention(9, {.num_heads = 3, .rotary = false}, rng));
  CHECK_THROWS_WITH(Attention(8, {.num_heads = 0}, rng), Catch::Contains("num_heads must be positive, got 0"));
  Attention attn(8, {.num_heads = 2}, rng);
  CHECK_THROWS_WITH(attn.forward(moe::Matrix::Zero(9, 8), 2, 5), Catch::Contains("input has 9 rows, the layout has batch * seq_len = 2 * 5 = 10"));
  CHECK_THROWS_WITH(attn.forward(moe::Matrix::Zero(10, 6), 2, 5), Catch::Contains("input has 6 columns, d_model is 8"));
  attn.forward(moe::Matrix::Zero(10, 8), 2, 5);
  CHECK_THROWS_WITH(attn.backward(moe::Matrix::Zero(5, 8)), Catch::Contains("gradient has shape 5x8, expected 10x8"));
}

// ---------------------------------------------------------------------------------------------------------
// Decoder blocks

TEST_CASE("DecoderBlock with a dense FeedForward: gradients match finite differences", "[nn][transformer][gradient]") {
  moe::Rng rng(30);
  DenseBlock<double> block(8, {.attn = {.num_heads = 2}, .ffn = {.hidden = 12}}, rng);
  CHECK(names_of(block.named_parameters()) ==
        std::vector<std::string>{"attn_norm.weight", "attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight",
                                 "attn.o_proj.weight", "ffn_norm.weight", "ffn.fc1.weight", "ffn.fc1.bias",
                                 "ffn.fc2.weight", "ffn.fc2.bias"});
  // Non-trivial norm weights, so their gradients are checked away from 1.
  block.attn_norm().weight().value = random_matrix(1, 8, 31).array() + 1.0;
  block.ffn_norm().weight().value = random_matrix(1, 8, 32).array() + 1.0;
  WithLayout<DenseBlock<double>> bound{block, right_padded()};
  moe::test::check_module_gradients(bound, random_matrix(10, 8, 33), 34);
  CHECK(block.aux_loss() == 0.0);
}

TEST_CASE("DecoderBlock with an MoE FFN and shared experts: gradients with the aux loss match finite differences",
          "[nn][transformer][moe][gradient]") {
  moe::Rng rng(35);
  MoEBlock<double> block(8,
                         {.attn = {.num_heads = 2},
                          .ffn = {.num_experts = 4, .num_shared_experts = 1, .expert = {.hidden = 6},
                                  .shared_expert = {.hidden = 4}, .router = {.renormalize = true},
                                  .balancer = {.alpha = 0.1}}},
                         rng);
  CHECK(block.ffn().d_model() == 8);
  const auto names = names_of(block.named_parameters());
  CHECK(names[5] == "ffn_norm.weight");
  CHECK(names[6] == "ffn.router.weight");
  CHECK(names.back() == "ffn.shared_experts.0.fc2.bias");
  WithLayout<MoEBlock<double>> bound{block, right_padded()};
  bound.forward(random_matrix(10, 8, 36));
  CHECK(block.aux_loss() > 0.0);
  moe::test::check_module_gradients<WithLayout<MoEBlock<double>>>(
      bound, random_matrix(10, 8, 36), 37, [](auto& b) { return double(b.module.aux_loss()); });
}

TEST_CASE("DecoderBlock forwards train and eval, and checks the FFN's width", "[nn][transformer]") {
  moe::Rng rng(38);
  DenseBlock<float> block(8, {.attn = {.num_heads = 2}, .ffn = {.hidden = 16, .dropout = 0.5}}, rng);
  moe::Matrix x(6, 8);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  CHECK(block.training());
  const moe::Matrix a = block.forward(x);
  CHECK(block.forward(x) != a);  // dropout draws new masks
  block.eval();
  CHECK(!block.training());
  const moe::Matrix b = block.forward(x);
  CHECK(block.forward(x) == b);
  CHECK(names_of(block.named_generators()) == std::vector<std::string>{"ffn.dropout.generator"});

  MoEBlock<float> moe_block(8, {.attn = {.num_heads = 2}, .ffn = {.num_experts = 3, .expert = {.hidden = 4}}}, rng);
  moe_block.eval();
  CHECK(!moe_block.ffn().training());
  moe_block.train();
  CHECK(moe_block.ffn().training());

  CHECK_THROWS_WITH(DenseBlock<float>(8, {.attn = {.num_heads = 2}, .ffn = {.hidden = 4, .out_features = 6}}, rng),
                    Catch::Contains("the FFN outputs 6 features, expected d_model = 8"));
  CHECK_THROWS_WITH(MoEBlock<float>(8, {.attn = {.num_heads = 2}, .ffn = {.d_model = 6, .num_experts = 2}}, rng),
                    Catch::Contains("Options::ffn.d_model is 6, expected 0 or the block's d_model = 8"));
}

// ---------------------------------------------------------------------------------------------------------
// The language model

TEST_CASE("next_token_targets shifts left and ignores the last position and padding", "[nn][transformer]") {
  const std::vector<Index> ids{5, 6, 7, 0, 0,  //
                               0, 0, 3, 4, 9};
  const std::vector<Index> expected{6, 7, -100, -100, -100,  //
                                    -100, -100, 4, 9, -100};
  CHECK(moe::next_token_targets(ids, 2, 5, 0) == expected);
  CHECK(moe::next_token_targets(ids, 1, 10, -1, -1) == std::vector<Index>{6, 7, 0, 0, 0, 0, 3, 4, 9, -1});
  CHECK_THROWS_WITH(moe::next_token_targets(ids, 2, 4, 0), Catch::Contains("got 10 ids, expected batch * seq_len = 2 * 4 = 8"));
}

TEST_CASE("CausalLM names its parameters like a PyTorch decoder", "[nn][transformer]") {
  moe::Rng rng(40);
  moe::CausalLM<MoEFFN<float>> lm({.vocab_size = 11, .d_model = 8, .num_layers = 2,
                                   .block = {.attn = {.num_heads = 2}, .ffn = {.num_experts = 3, .expert = {.hidden = 4}}}},
                                  rng);
  const auto names = names_of(lm.named_parameters());
  CHECK(names.front() == "embed_tokens.weight");
  CHECK(names[1] == "layers.0.attn_norm.weight");
  CHECK(std::find(names.begin(), names.end(), "layers.1.ffn.experts.2.fc2.bias") != names.end());
  CHECK(names[names.size() - 2] == "norm.weight");
  CHECK(names.back() == "lm_head.weight");
  CHECK(lm.lm_head().weight().shape == moe::Shape{11, 8});
  CHECK(lm.num_layers() == 2);
  CHECK_THROWS_WITH(lm.forward(std::vector<Index>(9, 1), 2, 5), Catch::Contains("got 9 ids, the layout has batch * seq_len = 2 * 5 = 10"));
}

TEST_CASE("CausalLM with MoE blocks: gradients of cross entropy plus aux loss match finite differences",
          "[nn][transformer][moe][gradient]") {
  moe::Rng rng(41);
  constexpr Index vocab = 9, pad = 0;
  moe::CausalLM<MoEFFN<double>> lm({.vocab_size = vocab, .d_model = 8, .num_layers = 2,
                                    .block = {.attn = {.num_heads = 2},
                                              .ffn = {.num_experts = 3, .num_shared_experts = 1, .expert = {.hidden = 4},
                                                      .shared_expert = {.hidden = 4}, .router = {.renormalize = true},
                                                      .balancer = {.alpha = 0.1}}}},
                                   rng);
  for (const auto& p : lm.named_parameters())
    if (p.name.ends_with("norm.weight")) p.parameter->value = random_matrix(1, 8, 42).array() + 1.0;
  const std::vector<Index> ids{3, 1, 4, 1, 5,  //
                               2, 6, 5, pad, pad};
  const auto targets = moe::next_token_targets(ids, 2, 5, pad);
  const SequenceLayout layout = SequenceLayout::from_pad_id(ids, 2, 5, pad);
  moe::CrossEntropyLoss<double> cross_entropy;
  auto loss = [&] { return cross_entropy.forward(lm.forward(ids, layout), targets) + lm.aux_loss(); };

  const auto parameters = lm.named_parameters();
  moe::zero_grad(parameters);
  loss();
  CHECK(lm.aux_loss() > 0.0);
  lm.backward(cross_entropy.backward());
  for (const auto& p : parameters) {
    const MatrixX<double> analytic = p.parameter->grad;
    const auto error = moe::test::compare_gradient(loss, p.parameter->value, analytic, p.name);
    INFO(error.where);
    CHECK(error.worst <= 1.0);
  }
}

TEST_CASE("CausalLM with a dense first block and MoE blocks after it: names, shapes and gradients",
          "[nn][transformer][moe][gradient]") {
  // DeepSeekMoE's layout: a dense SwiGLU block, then MoE blocks with a sigmoid router and the sequence-wise
  // aux loss, on fixed-length windows (no padding).
  using SwiGLU = moe::SwiGLUFeedForward<double>;
  using SigmoidMoE = moe::MoELayer<SwiGLU, moe::SigmoidTopK, 2, moe::SequenceAuxLoss>;
  constexpr Index vocab = 9, batch = 2, length = 5;
  moe::Rng rng(48);
  moe::CausalLM<SwiGLU, SigmoidMoE> lm(
      {.vocab_size = vocab, .d_model = 8, .num_layers = 3,
       .block = {.attn = {.num_heads = 2},
                 .ffn = {.num_experts = 4, .num_shared_experts = 1, .expert = {.hidden = 4},
                         .shared_expert = {.hidden = 4}, .balancer = {.alpha = 0.1, .sequence_length = length}}},
       .num_dense_layers = 1,
       .dense_block = {.attn = {.num_heads = 2}, .ffn = {.hidden = 12}}},
      rng);
  CHECK(lm.num_layers() == 3);
  CHECK(lm.num_dense_layers() == 1);
  const auto names = names_of(lm.named_parameters());
  CHECK(names[1] == "layers.0.attn_norm.weight");
  CHECK(std::find(names.begin(), names.end(), "layers.0.ffn.gate_proj.weight") != names.end());
  CHECK(std::find(names.begin(), names.end(), "layers.1.ffn.router.weight") != names.end());
  CHECK(std::find(names.begin(), names.end(), "layers.2.ffn.shared_experts.0.down_proj.weight") != names.end());
  CHECK(names.back() == "lm_head.weight");
  CHECK(lm.dense_layer(0).ffn().named_parameters().size() == 3);
  CHECK(lm.layer(2).ffn().num_experts() == 4);
  CHECK_THROWS_WITH(lm.layer(0), Catch::Contains("layer 0 is not a DecoderBlock<FFN>; those are layers 1 to 2"));
  CHECK_THROWS_WITH(lm.dense_layer(1), Catch::Contains("dense layer 1 does not exist; there are 1"));

  for (const auto& p : lm.named_parameters())
    if (p.name.ends_with("norm.weight")) p.parameter->value = random_matrix(1, 8, 49).array() + 1.0;
  const std::vector<Index> ids = random_ids(batch * length, vocab, 52);
  const auto targets = moe::next_token_targets(ids, batch, length, -1);
  moe::CrossEntropyLoss<double> cross_entropy;
  auto loss = [&] { return cross_entropy.forward(lm.forward(ids, batch, length), targets) + lm.aux_loss(); };
  const auto parameters = lm.named_parameters();
  moe::zero_grad(parameters);
  const double value = loss();
  CHECK(lm.forward(ids, batch, length).rows() == batch * length);
  CHECK(lm.forward(ids, batch, length).cols() == vocab);
  CHECK(loss() == value);
  CHECK(lm.aux_loss() > 0.0);
  lm.backward(cross_entropy.backward());
  for (const auto& p : parameters) {
    const MatrixX<double> analytic = p.parameter->grad;
    const auto error = moe::test::compare_gradient(loss, p.parameter->value, analytic, p.name);
    INFO(error.where);
    CHECK(error.worst <= 1.0);
  }

  CHECK_THROWS_WITH((moe::CausalLM<SwiGLU, SigmoidMoE>({.vocab_size = vocab, .d_model = 8, .num_layers = 1,
                                                          .num_dense_layers = 2},
                                                         rng)),
                    Catch::Contains("num_dense_layers must lie in [0, num_layers = 1], got 2"));
}

TEST_CASE("CausalLM is causal and ignores padded tokens", "[nn][transformer]") {
  constexpr Index vocab = 13, length = 6;
  // Dense blocks give the same bits. In MoE blocks a later token can change how many rows an expert gets, and
  // oneDNN's GEMM may round a row differently for another row count (it picks its blocking by shape), so there
  // the earlier rows must agree to float rounding: a leak of a later token would move them by far more.
  auto check = [&](auto& lm, float tolerance) {
    auto same = [&](const moe::Matrix& a, const moe::Matrix& b) {
      return tolerance == 0.0f ? a == b : (a - b).cwiseAbs().maxCoeff() <= tolerance * b.cwiseAbs().maxCoeff();
    };
    std::vector<Index> ids = random_ids(2 * length, vocab, 43);
    const std::vector<Index> lengths{length, 4};
    const moe::Matrix base = lm.forward(ids, 2, length, lengths);
    for (Index t = 0; t + 1 < length; ++t) {
      std::vector<Index> changed = ids;
      changed[static_cast<std::size_t>(t + 1)] = (changed[static_cast<std::size_t>(t + 1)] + 1) % vocab;
      const moe::Matrix y = lm.forward(changed, 2, length, lengths);
      INFO("t = " << t);
      CHECK(same(y.topRows(t + 1), base.topRows(t + 1)));
      CHECK(same(y.bottomRows(length), base.bottomRows(length)));
      CHECK_FALSE(same(y.row(t + 1), base.row(t + 1)));
    }
    std::vector<Index> padded = ids;
    padded[2 * length - 1] = (padded[2 * length - 1] + 5) % vocab;
    padded[2 * length - 2] = (padded[2 * length - 2] + 3) % vocab;
    const moe::Matrix y = lm.forward(padded, 2, length, lengths);
    CHECK(same(y.topRows(length + 4), base.topRows(length + 4)));
  };
  moe::Rng rng(44);
  SECTION("dense blocks") {
    moe::CausalLM<moe::FeedForward<moe::GELU, float>> lm(
        {.vocab_size = vocab, .d_model = 16, .num_layers = 2, .block = {.attn = {.num_heads = 2}, .ffn = {.hidden = 32}}},
        rng);
    check(lm, 0.0f);
  }
  SECTION("MoE blocks") {
    moe::CausalLM<MoEFFN<float>> lm({.vocab_size = vocab, .d_model = 16, .num_layers = 2,
                                     .block = {.attn = {.num_heads = 2},
                                               .ffn = {.num_experts = 4, .num_shared_experts = 1, .expert = {.hidden = 8},
                                                       .shared_expert = {.hidden = 8}}}},
                                    rng);
    check(lm, 1e-5f);
  }
}

TEST_CASE("CausalLM with a fully padded sequence gives finite logits, loss and gradients", "[nn][transformer]") {
  moe::Rng rng(45);
  moe::CausalLM<MoEFFN<float>> lm({.vocab_size = 7, .d_model = 8, .num_layers = 2, .padding_idx = 0,
                                   .block = {.attn = {.num_heads = 2}, .ffn = {.num_experts = 3, .expert = {.hidden = 4}}}},
                                  rng);
  const std::vector<Index> ids{1, 2, 3, 4, 0, 0, 0, 0, 0, 0};
  const SequenceLayout layout = SequenceLayout::from_pad_id(ids, 2, 5, 0);
  moe::CrossEntropyLoss<float> cross_entropy;
  const float loss = cross_entropy.forward(lm.forward(ids, layout), moe::next_token_targets(ids, 2, 5, 0));
  CHECK(std::isfinite(loss));
  CHECK(std::isfinite(lm.aux_loss()));
  lm.backward(cross_entropy.backward());
  for (const auto& p : lm.named_parameters()) {
    INFO(p.name);
    CHECK(p.parameter->grad.allFinite());
  }
  CHECK(lm.embed_tokens().weight().grad.row(0).isZero(0.0f));
}

TEST_CASE("CausalLM gives the same bits for 1 and 2 threads", "[nn][transformer][determinism]") {
  auto run = [](int threads) {
    const int previous = moe::set_num_threads(threads);
    moe::Rng rng(46);
    moe::CausalLM<MoEFFN<float>> lm({.vocab_size = 17, .d_model = 16, .num_layers = 2,
                                     .block = {.attn = {.num_heads = 4},
                                               .ffn = {.num_experts = 4, .num_shared_experts = 1, .expert = {.hidden = 16},
                                                       .shared_expert = {.hidden = 8}, .router = {.renormalize = true}}}},
                                    rng);
    const std::vector<Index> ids = random_ids(3 * 8, 17, 47);
    const std::vector<Index> lengths{8, 6, 1};
    moe::CrossEntropyLoss<float> cross_entropy;
    const moe::Matrix logits = lm.forward(ids, 3, 8, lengths);
    cross_entropy.forward(logits, moe::next_token_targets(ids, 3, 8, -1));
    lm.backward(cross_entropy.backward());
    std::vector<moe::Matrix> results{logits};
    for (const auto& p : lm.named_parameters()) results.push_back(p.parameter->grad);
    moe::set_num_threads(previous);
    return results;
  };
  const auto one = run(1), two = run(2);
  REQUIRE(one.size() == two.size());
  for (std::size_t i = 0; i < one.size(); ++i) {
    INFO("result " << i);
    CHECK(one[i] == two[i]);
  }
}

TEST_CASE("A tiny MoE language model overfits a few fixed sequences with AdamW", "[nn][transformer][training]") {
  // Four sequences of 8 tokens over a vocabulary of 16, the last one padded after 6. Their first tokens
  // differ, so every target is a function of its prefix: the best achievable loss is 0, while a model
  // that knows nothing pays ln 16 = 2.77 per token. A mean loss below 0.05 means a geometric-mean
  // probability above 0.95 on every next token, that is, the sequences are memorised.
  constexpr Index vocab = 16, length = 8, batch = 4, pad = 0;
  std::vector<Index> ids = random_ids(batch * length, vocab - 1, 50);
  for (auto& id : ids) id += 1;  // 0 is the pad id
  for (Index b = 0; b < batch; ++b) ids[static_cast<std::size_t>(b * length)] = b + 1;
  ids[batch * length - 1] = ids[batch * length - 2] = pad;
  const auto targets = moe::next_token_targets(ids, batch, length, pad);
  const SequenceLayout layout = SequenceLayout::from_pad_id(ids, batch, length, pad);

  moe::Rng rng(51);
  moe::CausalLM<MoEFFN<float>> lm({.vocab_size = vocab, .d_model = 32, .num_layers = 2, .padding_idx = pad,
                                   .block = {.attn = {.num_heads = 4},
                                             .ffn = {.num_experts = 4, .num_shared_experts = 1, .expert = {.hidden = 32},
                                                     .shared_expert = {.hidden = 32}, .router = {.renormalize = true}}}},
                                  rng);
  moe::AdamW<float> optimizer(lm.named_parameters(), {.lr = 1e-2, .weight_decay = 0.0});
  moe::CrossEntropyLoss<float> cross_entropy;
  float first = 0, loss = 0;
  for (int step = 0; step < 150; ++step) {
    optimizer.zero_grad();
    loss = cross_entropy.forward(lm.forward(ids, layout), targets);
    if (step == 0) first = loss;
    lm.backward(cross_entropy.backward());
    optimizer.step();
  }
  INFO("loss " << first << " -> " << loss);
  CHECK(first > 2.0f);
  CHECK(loss < 0.05f);
}
