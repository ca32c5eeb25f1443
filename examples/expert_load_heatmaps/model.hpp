#pragma once
// The DeepSeekMoE-style decoder of DeepSeek-V3's Appendix C, as type aliases: the first block has a dense
// SwiGLU feed-forward, the others an MoE layer of shared experts plus fine-grained routed experts behind
// DeepSeek-V3's sigmoid top-K router. The two models differ only in the balancing policy.

#include <string>

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/core/types.hpp"
#include "moe/io/safetensors.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/transformer.hpp"
#include "moe/routing/sigmoid_top_k.hpp"

namespace moe::examples {

/// K of the 16B models of DeepSeek-V3's Appendix C (DeepSeekMoE 16B: 6 of 64 routed experts per token).
inline constexpr int routed_per_token = 6;

using DenseFFN = SwiGLUFeedForward<float>;
template <template <class> class Balancer>
using DeepSeekMoE = MoELayer<SwiGLUFeedForward<float>, SigmoidTopK, routed_per_token, Balancer>;
template <template <class> class Balancer>
using DeepSeekMoELM = CausalLM<DenseFFN, DeepSeekMoE<Balancer>>;

/// Run A: DeepSeek-V3's sequence-wise auxiliary balance loss.
using AuxLossBasedLM = DeepSeekMoELM<SequenceAuxLoss>;
/// Run B: DeepSeek-V3's auxiliary-loss-free balancing (a selection bias moved by gamma per step).
using AuxLossFreeLM = DeepSeekMoELM<AuxLossFree>;

/// Width and depth of the decoder; the routing (64 routed, 2 shared, K = 6) is the documents'.
struct ModelConfig {
  Index d_model = 64;
  Index num_heads = 4;
  Index num_moe_layers = 4;  // after the one dense block
  Index dense_hidden = 256;  // the dense block's SwiGLU width
  Index num_experts = 64;
  Index num_shared_experts = 2;
  Index expert_hidden = 32;  // each routed and each shared expert's SwiGLU width
  Index seq_len = 64;
  double aux_alpha = 1e-3;     // SequenceAuxLoss's alpha (run A)
  double bias_gamma = 1e-3;    // AuxLossFree's gamma (run B), DeepSeek-V3's bias update speed
};

/// The options of one of the two models for a vocabulary of `vocab_size` ids.
template <class LM>
typename LM::Options lm_options(const ModelConfig& config, Index vocab_size) {
  typename LM::Options options;
  options.vocab_size = vocab_size;
  options.d_model = config.d_model;
  options.num_layers = 1 + config.num_moe_layers;
  options.num_dense_layers = 1;
  options.dense_block.attn.num_heads = config.num_heads;
  options.dense_block.ffn.hidden = config.dense_hidden;
  options.block.attn.num_heads = config.num_heads;
  auto& layer = options.block.ffn;
  layer.num_experts = config.num_experts;
  layer.num_shared_experts = config.num_shared_experts;
  layer.expert.hidden = config.expert_hidden;
  layer.shared_expert.hidden = config.expert_hidden;
  if constexpr (requires { layer.balancer.sequence_length; }) {
    layer.balancer.alpha = config.aux_alpha;
    layer.balancer.sequence_length = config.seq_len;  // one balance loss per training window
  } else {
    layer.balancer.gamma = config.bias_gamma;
  }
  return options;
}

/// The configuration as safetensors metadata, saved with the weights.
inline Metadata config_metadata(const ModelConfig& config, const std::string& balancing) {
  return {{"architecture", "DeepSeekMoE decoder: 1 dense SwiGLU block, then MoE blocks (SigmoidTopK, K=6)"},
          {"balancing", balancing},
          {"d_model", std::to_string(config.d_model)},
          {"num_heads", std::to_string(config.num_heads)},
          {"num_layers", std::to_string(1 + config.num_moe_layers)},
          {"num_dense_layers", "1"},
          {"dense_hidden", std::to_string(config.dense_hidden)},
          {"num_experts", std::to_string(config.num_experts)},
          {"num_shared_experts", std::to_string(config.num_shared_experts)},
          {"k", std::to_string(routed_per_token)},
          {"expert_hidden", std::to_string(config.expert_hidden)},
          {"seq_len", std::to_string(config.seq_len)},
          {"aux_alpha", std::to_string(config.aux_alpha)},
          {"bias_gamma", std::to_string(config.bias_gamma)}};
}

}  // namespace moe::examples
