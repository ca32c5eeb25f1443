// Must not compile: the Thrust backend with an expert that is not of the feed-forward kinds (a Linear). Built
// with MOE_CONTROL defined the expert is a FeedForward and it must compile.

#include "backends/thrust/thrust_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/linear.hpp"
#include "moe/routing/softmax_top_k.hpp"

#ifdef MOE_CONTROL
using Expert = moe::FeedForward<moe::GELU>;
#else
using Expert = moe::Linear<float>;
#endif

int main() {
  moe::Rng rng(1);
  moe::MoELayer<Expert, moe::SoftmaxTopK, 1, moe::NoBalancing, moe::backends::Thrust> layer(
      {.d_model = 4, .num_experts = 2}, rng);
  return static_cast<int>(layer.num_experts()) - 2;
}
