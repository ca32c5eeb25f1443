// Must not compile: device::ResidentMoE of a layer routed by expert choice, whose selection is not on the
// device. Built with MOE_CONTROL defined the router is SoftmaxTopK and it must compile.

#include "backends/thrust/resident_layer.hpp"
#include "backends/thrust/thrust_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
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
  using Layer = moe::MoELayer<moe::FeedForward<moe::GELU>, Router, 1, moe::NoBalancing, moe::backends::Thrust>;
  Layer host({.d_model = 4, .num_experts = 2, .expert = {.hidden = 4}}, rng);
  moe::backends::device::ResidentMoE<Layer> resident(host);
  return 0;
}
