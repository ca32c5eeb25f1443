// Must not compile: expert-choice routing with an aux loss, which has no imbalance to penalise (every expert
// takes exactly C tokens). Built with MOE_CONTROL defined the balancer is NoBalancing and it must compile.

#include "backends/cpu/cpu_backend.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/expert_choice.hpp"

#ifdef MOE_CONTROL
template <class S>
using Balancer = moe::NoBalancing<S>;
#else
template <class S>
using Balancer = moe::SwitchAuxLoss<S>;
#endif

int main() {
  moe::Rng rng(1);
  moe::MoELayer<moe::FeedForward<moe::GELU>, moe::ExpertChoice, 1, Balancer> layer(
      {.d_model = 4, .num_experts = 2, .expert = {.hidden = 4}}, rng);
  return static_cast<int>(layer.num_experts()) - 2;
}
