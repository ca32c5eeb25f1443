// Must not compile: a decoder block (causal attention) whose MoE is routed by expert choice, which lets a
// token's routing depend on the tokens after it. Built with MOE_CONTROL defined the router is SoftmaxTopK and
// it must compile.

#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/transformer.hpp"
#include "moe/routing/expert_choice.hpp"
#include "moe/routing/softmax_top_k.hpp"

#ifdef MOE_CONTROL
template <class S>
using Router = moe::SoftmaxTopK<S>;
#else
template <class S>
using Router = moe::ExpertChoice<S>;
#endif

int main() {
  moe::Rng rng(1);
  using Layer = moe::MoELayer<moe::FeedForward<moe::GELU>, Router, 1, moe::NoBalancing>;
  moe::DecoderBlock<Layer> block(4, {.attn = {.num_heads = 1}, .ffn = {.num_experts = 2, .expert = {.hidden = 4}}},
                                 rng);
  return static_cast<int>(block.d_model()) - 4;
}
