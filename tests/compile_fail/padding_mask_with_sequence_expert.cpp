// Must not compile: a padding mask for a layer of sequence experts, which need every row of each sequence in
// order (they take the padding through set_layout). Built with MOE_CONTROL defined the layer's experts are
// feed-forward blocks and it must compile.

#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/encoder.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/softmax_top_k.hpp"

#ifdef MOE_CONTROL
using Expert = moe::FeedForward<moe::GELU>;
const Expert::Options expert{.hidden = 4};
#else
using Expert = moe::TransformerEncoder<float>;
const Expert::Options expert{.num_layers = 1, .layer = {.num_heads = 1, .dim_feedforward = 4}};
#endif

int main() {
  moe::Rng rng(1);
  moe::MoELayer<Expert, moe::SoftmaxTopK, moe::Dynamic, moe::NoBalancing> layer(
      {.d_model = 4, .num_experts = 2, .k = 2, .expert = expert}, rng);
  const moe::Matrix x = moe::Matrix::Zero(6, 4);
  const moe::PaddingMask padding = moe::PaddingMask::Constant(2, 3, false);
  return static_cast<int>(layer.forward(x, padding).rows()) - 6;
}
