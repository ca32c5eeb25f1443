// Conv2d and causal self-attention, forward and forward+backward.
//
// tokens_per_s counts rows: images for Conv2d, tokens for attention. gflops counts the products:
//   Conv2d fwd: 2 * images * out_c * in_c*k*k * out_h*out_w (one GEMM per image); fwd_bwd 3x (dW and dx).
//   Attention fwd: q, k, v, o projections 4 * 2*T*d*d, plus QK^T and PV over the full S x S blocks
//   (the implementation computes them whole and masks) 2 * 2*B*S*S*d; fwd_bwd 3x.

#include <string>

#include "common.hpp"
#include "moe/core/image_shape.hpp"
#include "moe/nn/attention.hpp"
#include "moe/nn/conv2d.hpp"

namespace moe_bench {
namespace {

struct ConvConfig {
  const char* name;
  Index images, in_channels, size, out_channels, kernel, padding;
};

struct AttentionConfig {
  const char* name;
  Index batch, seq_len, d, heads;
};

void conv2d(benchmark::State& state, const ConvConfig& c, bool backward) {
  moe::Rng rng(3);
  moe::Conv2d<float> conv({c.in_channels, c.size, c.size}, c.out_channels, c.kernel, rng, {1, c.padding, true});
  const Matrix x = random_matrix(c.images, conv.input_shape().size(), 1);
  const Matrix dy = random_matrix(c.images, conv.output_shape().size(), 2);
  for (auto _ : state) {
    benchmark::DoNotOptimize(conv.forward(x).data());
    if (backward) benchmark::DoNotOptimize(conv.backward(dy).data());
  }
  const auto& out = conv.output_shape();
  const double flops = 2.0 * double(c.images * c.out_channels * c.in_channels * c.kernel * c.kernel * out.pixels());
  set_rates(state, double(c.images), backward ? 3.0 * flops : flops);
}

void attention(benchmark::State& state, const AttentionConfig& c, bool backward) {
  moe::Rng rng(3);
  moe::CausalSelfAttention<float> layer(c.d, {c.heads, false, true, 10000.0}, rng);
  const Index tokens = c.batch * c.seq_len;
  const Matrix x = random_matrix(tokens, c.d, 1);
  const Matrix dy = random_matrix(tokens, c.d, 2);
  for (auto _ : state) {
    benchmark::DoNotOptimize(layer.forward(x, c.batch, c.seq_len).data());
    if (backward) benchmark::DoNotOptimize(layer.backward(dy).data());
  }
  const double flops = 8.0 * double(tokens) * double(c.d * c.d) + 4.0 * double(c.batch * c.seq_len * c.seq_len * c.d);
  set_rates(state, double(tokens), backward ? 3.0 * flops : flops);
}

void register_all() {
  static const ConvConfig convs[] = {
      {"b128_3x32x32_o32_k3", 128, 3, 32, 32, 3, 1},
      {"b128_32x16x16_o64_k3", 128, 32, 16, 64, 3, 1},
  };
  static const AttentionConfig attentions[] = {
      {"b8_s256_d256_h4", 8, 256, 256, 4},
      {"b4_s512_d512_h8", 4, 512, 512, 8},
  };
  for (bool backward : {false, true}) {
    const std::string mode = backward ? "fwd_bwd/" : "fwd/";
    for (const ConvConfig& c : convs)
      benchmark::RegisterBenchmark(("conv2d/" + mode + c.name).c_str(),
                                   [&c, backward](benchmark::State& s) { conv2d(s, c, backward); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    for (const AttentionConfig& c : attentions)
      benchmark::RegisterBenchmark(("attention/" + mode + c.name).c_str(),
                                   [&c, backward](benchmark::State& s) { attention(s, c, backward); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace
}  // namespace moe_bench

int main(int argc, char** argv) {
  moe_bench::register_all();
  return moe_bench::run_main(argc, argv);
}
