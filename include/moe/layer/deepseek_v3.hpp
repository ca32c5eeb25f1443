#pragma once
// DeepSeek-V3's MoE layer as released (DeepSeek-AI 2024, "DeepSeek-V3 Technical Report", sec. 2.1.2 and 4.2;
// its config.json): sigmoid router, top-8 of 256 routed experts within the best 4 of 8 groups, gates
// renormalised and scaled by 2.5, one shared expert, the aux-loss-free bias (gamma = 0.001) and the
// complementary sequence-wise aux loss (alpha = 0.0001) counted over the unbiased top-K (eq. 18).

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/core/types.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/sigmoid_top_k.hpp"

namespace moe {

/// DeepSeek-V3's balancing: the sequence-wise aux loss and the aux-loss-free bias, Options in that order.
template <class S = float>
using DeepSeekV3Balancing = Combine<S, SequenceAuxLoss, AuxLossFree>;

/// DeepSeek-V3's MoE layer; deepseek_v3_options gives it the released configuration.
template <class Expert = SwiGLUFeedForward<float>, class Backend = backends::Cpu>
using DeepSeekV3MoE = MoELayer<Expert, SigmoidTopK, 8, DeepSeekV3Balancing, Backend>;

/// DeepSeek-V3's hyper-parameters for a DeepSeekV3MoE of width d_model (7168 in DeepSeek-V3) with experts of
/// width `hidden` (2048), over sequences of `sequence_length` rows (for the sequence-wise aux loss).
template <class Expert = SwiGLUFeedForward<float>, class Backend = backends::Cpu>
typename DeepSeekV3MoE<Expert, Backend>::Options deepseek_v3_options(Index d_model, Index hidden,
                                                                     Index sequence_length) {
  typename DeepSeekV3MoE<Expert, Backend>::Options options;
  options.d_model = d_model;
  options.num_experts = 256;
  options.num_shared_experts = 1;
  options.expert.hidden = hidden;
  options.shared_expert.hidden = hidden;
  options.router = {.bias = false, .routed_scaling_factor = 2.5, .n_group = 8, .topk_group = 4};
  options.balancer = {{.alpha = 1e-4, .sequence_length = sequence_length, .count = LoadCount::score_top_k},
                      {.gamma = 1e-3, .zero_mean = false}};
  return options;
}

}  // namespace moe
