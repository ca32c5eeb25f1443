#pragma once
// The MoE blocks of published Hugging Face checkpoints (Mixtral, OLMoE, Qwen-MoE, DeepSeek-V2/V3), loaded by
// name into a moe::MoELayer with SwiGLU experts: one table row per family says where the block's tensors are
// and which config.json fields set its routing. Needs nlohmann/json, as moe/io/safetensors.hpp.
//
// The fields each family's block uses (all read from config.json, never from the caller):
//   every family: model_type, hidden_size, hidden_act (must be "silu"), num_experts_per_tok
//   Mixtral      num_local_experts, intermediate_size; softmax over all experts, top-K renormalised
//   OLMoE        num_experts, intermediate_size, norm_topk_prob (default false); softmax top-K
//   Qwen3-MoE    num_experts, moe_intermediate_size, norm_topk_prob (default false); softmax top-K
//   Qwen2-MoE    (Qwen1.5-MoE too) as Qwen3-MoE, plus shared_expert_intermediate_size: one shared expert
//                scaled per token by sigmoid(x . shared_expert_gate.weight) (MoELayer's shared_expert_gate, as
//                transformers' Qwen2MoeSparseMoeBlock computes it)
//   DeepSeek-V2  (V2-Lite too) n_routed_experts, moe_intermediate_size, n_shared_experts, scoring_func
//                ("softmax"), topk_method ("greedy": plain top-K; "group_limited_greedy": top-K within the
//                topk_group of n_group groups with the highest best score), routed_scaling_factor (multiplies
//                the gates), norm_topk_prob (must be false, as released; DeepSeek-AI 2024, "DeepSeek-V2",
//                sec. 2.2)
//   DeepSeek-V3  n_routed_experts, moe_intermediate_size, n_shared_experts, n_group, topk_group,
//                routed_scaling_factor, norm_topk_prob (must be true), scoring_func ("sigmoid"), topk_method
//                ("noaux_tc"); sigmoid scores, selection on score + e_score_correction_bias within the best
//                groups (DeepSeek-AI 2024, "DeepSeek-V3 Technical Report", sec. 2.1.2)
// A layer without a router tensor is a dense layer (DeepSeek's first_k_dense_replace and moe_layer_freq, Qwen's
// mlp_only_layers and decoder_sparse_step): asking for it is an error naming the tensor that is missing.

#include <array>
#include <initializer_list>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/core/error.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/io/atomic_file.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/io/sharded_safetensors.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/moe.hpp"  // the CPU backend, the layers' default
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"

namespace moe {

enum class HfScoring { softmax, sigmoid };

/// Where one family keeps its MoE block's tensors and which config.json fields describe it. Names after
/// `block` are relative to "model.layers.{layer}." + block.
struct HfFamily {
  std::string_view model_type;  // config.json's "model_type"
  std::string_view name;        // as people call it
  std::string_view block;
  std::string_view router;                      // [num_experts x hidden_size]
  std::string_view correction_bias;             // "" or the selection bias [num_experts]
  std::string_view experts;                     // expert e is experts + "{e}."
  std::array<std::string_view, 3> projections;  // an expert's gate, up and down projections
  std::string_view shared;                      // "" or the shared expert (gate_proj, up_proj, down_proj)
  std::string_view shared_gate;                 // "" or the shared expert's sigmoid gate [1 x hidden_size]
  std::string_view num_experts_key;
  std::string_view hidden_key;         // an expert's intermediate width
  std::string_view shared_hidden_key;  // "" or the shared expert's width
  std::string_view shared_count_key;   // "" or how many experts' width the shared expert has
  HfScoring scoring;                   // config.json's scoring_func must name it, where present
  bool renormalize;            // the top-K gates divided by their sum: Mixtral always, others by default
  bool renormalize_in_config;  // read from norm_topk_prob
  std::string_view renormalize_fixed;  // "" or why norm_topk_prob must be `renormalize`
  std::string_view topk_plain;         // "" or the topk_method of plain top-K
  std::string_view topk_grouped;       // "" or the topk_method of top-K within n_group/topk_group groups
  bool scaled;                         // the gates times routed_scaling_factor
};

inline constexpr std::array<HfFamily, 6> hf_families{{
    {"mixtral", "Mixtral", "block_sparse_moe.", "gate.weight", "", "experts.", {"w1", "w3", "w2"}, "", "",
     "num_local_experts", "intermediate_size", "", "", HfScoring::softmax, true, false, "", "", "", false},
    {"olmoe", "OLMoE", "mlp.", "gate.weight", "", "experts.", {"gate_proj", "up_proj", "down_proj"}, "", "",
     "num_experts", "intermediate_size", "", "", HfScoring::softmax, false, true, "", "", "", false},
    {"qwen3_moe", "Qwen3-MoE", "mlp.", "gate.weight", "", "experts.", {"gate_proj", "up_proj", "down_proj"}, "", "",
     "num_experts", "moe_intermediate_size", "", "", HfScoring::softmax, false, true, "", "", "", false},
    {"qwen2_moe", "Qwen1.5/Qwen2-MoE", "mlp.", "gate.weight", "", "experts.", {"gate_proj", "up_proj", "down_proj"},
     "shared_expert.", "shared_expert_gate.weight", "num_experts", "moe_intermediate_size",
     "shared_expert_intermediate_size", "", HfScoring::softmax, false, true, "", "", "", false},
    // DeepSeek's modeling_deepseek.py renormalises without the scaling factor when norm_topk_prob is true,
    // transformers' DeepseekV2Moe scales and never renormalises: the two agree only on false, as released.
    {"deepseek_v2", "DeepSeek-V2", "mlp.", "gate.weight", "", "experts.", {"gate_proj", "up_proj", "down_proj"},
     "shared_experts.", "", "n_routed_experts", "moe_intermediate_size", "", "n_shared_experts", HfScoring::softmax,
     false, true,
     "DeepSeek's modeling_deepseek.py would renormalise without routed_scaling_factor and transformers' "
     "DeepseekV2Moe scales without renormalising; the released DeepSeek-V2 checkpoints have false",
     "greedy", "group_limited_greedy", true},
    {"deepseek_v3", "DeepSeek-V3", "mlp.", "gate.weight", "gate.e_score_correction_bias", "experts.",
     {"gate_proj", "up_proj", "down_proj"}, "shared_experts.", "", "n_routed_experts", "moe_intermediate_size", "",
     "n_shared_experts", HfScoring::sigmoid, true, true, "moe's sigmoid router always renormalises the top-K gates",
     "", "noaux_tc", true},
}};

/// The family of a config.json's model_type, or an error listing the supported ones.
inline const HfFamily& hf_family(std::string_view model_type) {
  for (const HfFamily& family : hf_families)
    if (family.model_type == model_type) return family;
  std::string known;
  for (const HfFamily& family : hf_families) known += (known.empty() ? "" : ", ") + std::string(family.model_type);
  detail::fail("hf_family: model_type \"", model_type, "\" is not a supported MoE family (", known, ")");
}

/// One MoE block as config.json describes it.
struct HfMoeBlockConfig {
  const HfFamily* family = nullptr;
  Index layer = 0;
  std::string prefix;  // "model.layers.{layer}." + block
  Index d_model = 0, num_experts = 0, k = 0, hidden = 0;
  Index shared_hidden = 0;  // 0: no shared expert
  bool shared_gate = false;  // the shared expert scaled by sigmoid(x . family->shared_gate)
  bool renormalize = false;
  double routed_scaling_factor = 1.0;
  Index n_group = 1, topk_group = 1;
};

namespace detail {

class HfConfig {
 public:
  HfConfig(nlohmann::json json, std::string context) : json_(std::move(json)), context_(std::move(context)) {
    require(json_.is_object(), context_, ": config.json is a JSON ", json_.type_name(), ", not an object");
  }

  const nlohmann::json* find(std::string_view key) const {
    const auto it = json_.find(std::string(key));
    return it == json_.end() || it->is_null() ? nullptr : &*it;
  }
  Index count(std::string_view key) const {
    const nlohmann::json* value = find(key);
    if (!value) fail(context_, ": config.json has no \"", key, "\"");
    if (!value->is_number_integer() || value->get<std::int64_t>() <= 0)
      fail(context_, ": config.json: \"", key, "\" must be a positive integer, found ", json_text(*value));
    return static_cast<Index>(value->get<std::int64_t>());
  }
  Index count(std::string_view key, Index fallback) const { return find(key) ? count(key) : fallback; }
  double number(std::string_view key, double fallback) const {
    const nlohmann::json* value = find(key);
    if (!value) return fallback;
    if (!value->is_number()) fail(context_, ": config.json: \"", key, "\" must be a number, found ", json_text(*value));
    return value->get<double>();
  }
  bool flag(std::string_view key, bool fallback) const {
    const nlohmann::json* value = find(key);
    if (!value) return fallback;
    if (!value->is_boolean()) fail(context_, ": config.json: \"", key, "\" must be true or false, found ",
                                   json_text(*value));
    return value->get<bool>();
  }
  std::string text(std::string_view key, std::string_view fallback) const {
    const nlohmann::json* value = find(key);
    if (!value) return std::string(fallback);
    if (!value->is_string()) fail(context_, ": config.json: \"", key, "\" must be a string, found ", json_text(*value));
    return value->get<std::string>();
  }
  /// Refuses a value other than `expected`, naming what moe supports.
  void require_text(std::string_view key, std::string_view fallback, std::string_view expected,
                    std::string_view family) const {
    const std::string value = text(key, fallback);
    if (value != expected)
      fail(context_, ": config.json: \"", key, "\" is \"", value, "\"; moe loads ", family, " blocks with \"",
           expected, "\" only");
  }
  /// The value of `key` if it is one of the non-empty `accepted`, else an error naming them.
  std::string one_of(std::string_view key, std::string_view fallback, std::initializer_list<std::string_view> accepted,
                     std::string_view family) const {
    const std::string value = text(key, fallback);
    std::string names;
    for (const std::string_view name : accepted) {
      if (name.empty()) continue;
      if (value == name) return value;
      names += (names.empty() ? "\"" : " or \"") + std::string(name) + "\"";
    }
    fail(context_, ": config.json: \"", key, "\" is \"", value, "\"; moe loads ", family, " blocks with ", names,
         " only");
  }

  const nlohmann::json& json() const { return json_; }
  const std::string& context() const { return context_; }

 private:
  nlohmann::json json_;
  std::string context_;
};

}  // namespace detail

/// What config.json says of the MoE block of decoder layer `layer` (checked against the family's limits).
inline HfMoeBlockConfig hf_moe_block_config(const nlohmann::json& config_json, Index layer,
                                            const std::string& context = "hf_moe_block_config") {
  const detail::HfConfig config(config_json, context);
  const HfFamily& family = hf_family(config.text("model_type", ""));
  config.require_text("hidden_act", "silu", "silu", family.name);
  HfMoeBlockConfig block;
  block.family = &family;
  block.layer = layer;
  block.prefix = "model.layers." + std::to_string(layer) + "." + std::string(family.block);
  block.d_model = config.count("hidden_size");
  block.num_experts = config.count(family.num_experts_key);
  block.k = config.count("num_experts_per_tok");
  block.hidden = config.count(family.hidden_key);
  if (!family.shared_hidden_key.empty()) block.shared_hidden = config.count(family.shared_hidden_key, 0);
  if (!family.shared_count_key.empty()) block.shared_hidden = config.count(family.shared_count_key, 0) * block.hidden;
  block.shared_gate = block.shared_hidden > 0 && !family.shared_gate.empty();
  block.renormalize =
      family.renormalize_in_config ? config.flag("norm_topk_prob", family.renormalize) : family.renormalize;
  detail::require(block.k <= block.num_experts, context, ": config.json: num_experts_per_tok = ", block.k,
                  " exceeds the ", block.num_experts, " experts");
  const std::string_view scoring = family.scoring == HfScoring::softmax ? "softmax" : "sigmoid";
  config.require_text("scoring_func", scoring, scoring, family.name);
  if (!family.renormalize_fixed.empty() && block.renormalize != family.renormalize)
    detail::fail(context, ": config.json: norm_topk_prob is ", block.renormalize ? "true" : "false", "; ",
                 family.renormalize_fixed);
  if (!family.topk_plain.empty() || !family.topk_grouped.empty()) {
    const std::string method =
        config.one_of("topk_method", family.topk_plain.empty() ? family.topk_grouped : family.topk_plain,
                      {family.topk_plain, family.topk_grouped}, family.name);
    if (method == family.topk_grouped) {
      block.n_group = config.count("n_group", 1);
      block.topk_group = config.count("topk_group", 1);
    }
  }
  if (family.scaled) block.routed_scaling_factor = config.number("routed_scaling_factor", 1.0);
  return block;
}

/// (name in moe's MoELayer, name in the checkpoint) of every tensor of the block `config` describes.
inline std::vector<std::pair<std::string, std::string>> hf_block_tensor_names(const HfMoeBlockConfig& config) {
  const HfFamily& family = *config.family;
  const std::string& prefix = config.prefix;
  std::vector<std::pair<std::string, std::string>> names{{"router.weight", prefix + std::string(family.router)}};
  if (!family.correction_bias.empty())
    names.emplace_back("balancer.expert_bias", prefix + std::string(family.correction_bias));
  constexpr std::array<const char*, 3> ours{"gate_proj", "up_proj", "down_proj"};
  for (Index e = 0; e < config.num_experts; ++e)
    for (std::size_t p = 0; p < ours.size(); ++p)
      names.emplace_back("experts." + std::to_string(e) + "." + ours[p] + ".weight",
                         prefix + std::string(family.experts) + std::to_string(e) + "." +
                             std::string(family.projections[p]) + ".weight");
  if (config.shared_hidden > 0)
    for (const char* projection : ours)
      names.emplace_back(std::string("shared_experts.0.") + projection + ".weight",
                         prefix + std::string(family.shared) + projection + ".weight");
  if (config.shared_gate) names.emplace_back("shared_expert_gate.weight", prefix + std::string(family.shared_gate));
  return names;
}

/// The MoE block of a published checkpoint: a MoELayer with SwiGLU experts behind the family's router, and
/// the names its tensors have in the checkpoint.
template <class ScalarT = float>
class HfMoeBlock {
 public:
  using Scalar = ScalarT;
  using SoftmaxLayer = MoELayer<SwiGLUFeedForward<Scalar>, SoftmaxTopK, Dynamic, NoBalancing>;
  /// DeepSeek-V3: e_score_correction_bias is the aux-loss-free balancer's bias (balancer.expert_bias).
  using SigmoidLayer = MoELayer<SwiGLUFeedForward<Scalar>, SigmoidTopK, Dynamic, AuxLossFree>;
  using Layer = std::variant<SoftmaxLayer, SigmoidLayer>;

  /// A block shaped as `config` says, with PyTorch's default initialisation drawn from `init` (an Rng), or
  /// all zero (moe::zero_init: what load_hf_moe_block fills).
  template <ParameterInit Init>
  HfMoeBlock(HfMoeBlockConfig config, nlohmann::json config_json, Init&& init)
      : config_(std::move(config)), config_json_(std::move(config_json)), layer_(build(config_, init)) {}

  const HfMoeBlockConfig& config() const { return config_; }
  /// The checkpoint's whole config.json, which save_hf_moe_block writes back.
  const nlohmann::json& config_json() const { return config_json_; }
  Layer& layer() { return layer_; }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) {
    return std::visit([&](auto& layer) -> const MatrixX<Scalar>& { return layer.forward(x); }, layer_);
  }

  /// (name in the layer, name in the checkpoint) of every tensor of the block.
  std::vector<std::pair<std::string, std::string>> tensor_names() const { return hf_block_tensor_names(config_); }

  /// The block's tensors under their checkpoint names.
  StateDict<Scalar> hf_state_dict() {
    StateDict<Scalar> dict = std::visit([](auto& layer) { return state_dict(layer); }, layer_);
    StateDict<Scalar> renamed;
    for (const auto& [name, hf] : tensor_names()) renamed.emplace(hf, std::move(dict.at(name)));
    return renamed;
  }

 private:
  template <class Init>
  static Layer build(const HfMoeBlockConfig& c, Init& init) {
    const auto fill = [&](auto& options) {
      options.d_model = c.d_model;
      options.num_experts = c.num_experts;
      options.k = c.k;
      options.num_shared_experts = c.shared_hidden > 0 ? 1 : 0;
      options.shared_expert_gate = c.shared_gate;
      options.expert.hidden = c.hidden;
      options.shared_expert.hidden = c.shared_hidden > 0 ? c.shared_hidden : c.hidden;
    };
    if (c.family->scoring == HfScoring::softmax) {
      typename SoftmaxLayer::Options options;
      fill(options);
      options.router = {.renormalize = c.renormalize, .bias = false, .routed_scaling_factor = c.routed_scaling_factor,
                        .n_group = c.n_group, .topk_group = c.topk_group};
      return Layer(std::in_place_type<SoftmaxLayer>, options, init);
    }
    typename SigmoidLayer::Options options;
    fill(options);
    options.router = {.bias = false, .routed_scaling_factor = c.routed_scaling_factor, .n_group = c.n_group,
                      .topk_group = c.topk_group};
    return Layer(std::in_place_type<SigmoidLayer>, options, init);
  }

  HfMoeBlockConfig config_;
  nlohmann::json config_json_;
  Layer layer_;
};

/// The decoder layers of `checkpoint` that hold a MoE block of `family` (those with its router tensor).
inline std::vector<Index> hf_moe_layers(const ShardedSafetensors& checkpoint, const HfFamily& family) {
  std::vector<Index> layers;
  const std::string suffix = "." + std::string(family.block) + std::string(family.router);
  for (const auto& entry : checkpoint.weight_map()) {
    const std::string& name = entry.first;
    if (!name.starts_with("model.layers.") || !name.ends_with(suffix)) continue;
    const std::string number = name.substr(13, name.size() - 13 - suffix.size());
    if (number.empty() || number.find_first_not_of("0123456789") != std::string::npos) continue;
    layers.push_back(static_cast<Index>(std::stoll(number)));
  }
  std::ranges::sort(layers);
  return layers;
}

/// The MoE block of decoder layer `layer` of an open checkpoint whose config.json is `config_json`; reads
/// only that block's tensors (so only the shards that hold them), converted to Scalar.
template <class Scalar = float>
HfMoeBlock<Scalar> load_hf_moe_block(ShardedSafetensors& checkpoint, const nlohmann::json& config_json,
                                     Index layer) {
  const std::string context = "load_hf_moe_block: " + checkpoint.directory().string();
  HfMoeBlockConfig config = hf_moe_block_config(config_json, layer, context);
  const HfFamily& family = *config.family;
  const std::string router = config.prefix + std::string(family.router);
  if (!checkpoint.contains(router))
    detail::fail(context, ": layer ", layer, " has no ", family.name, " MoE block (no tensor ", router,
                 "); it has ", hf_moe_layers(checkpoint, family).size(), " MoE layers");
  HfMoeBlock<Scalar> block(std::move(config), config_json, zero_init);  // every value is read below
  const auto names = block.tensor_names();
  const std::map<std::string, std::string> checkpoint_name(names.begin(), names.end());
  // Tensor by tensor straight into the layer's memory: the block and one tensor at a time, never a second copy.
  std::visit(
      [&](auto& layer) {
        const auto slots = detail::module_tensors(layer, context);
        detail::require(slots.size() == checkpoint_name.size(), context, ": the layer has ", slots.size(),
                        " tensors, the family's table names ", checkpoint_name.size());
        for (const auto& slot : slots) {
          const auto name = checkpoint_name.find(slot.name);
          if (name == checkpoint_name.end())
            detail::fail(context, ": the layer's tensor ", slot.name, " has no name in ", family.name, " checkpoints");
          const Tensor<Scalar> tensor = checkpoint.load<Scalar>(name->second, slot.shape);
          Eigen::Map<VectorX<Scalar>>(slot.data, tensor.data.size()) = tensor.data;
        }
      },
      block.layer());
  return block;
}

/// The config.json of checkpoint directory `dir`; errors open with `who`.
inline nlohmann::json read_hf_config(const std::filesystem::path& dir, const std::string& who) {
  return detail::read_json_file(dir / "config.json", who + ": " + dir.string());
}

/// load_hf_moe_block from checkpoint directory `dir` (config.json and the safetensors index or file).
template <class Scalar = float>
HfMoeBlock<Scalar> load_hf_moe_block(const std::filesystem::path& dir, Index layer) {
  ShardedSafetensors checkpoint(dir);
  return load_hf_moe_block<Scalar>(checkpoint, read_hf_config(dir, "load_hf_moe_block"), layer);
}

/// Writes `block` into directory `dir` as a checkpoint that load_hf_moe_block reads back: its tensors under
/// their checkpoint names in `dtype` (F32, F64, or BF16 as published), in one model.safetensors or, with
/// max_shard_bytes > 0, in shards of at most that much tensor data with model.safetensors.index.json
/// (save_sharded_safetensors), and the checkpoint's config.json.
template <class Scalar>
void save_hf_moe_block(const std::filesystem::path& dir, HfMoeBlock<Scalar>& block, DType dtype = dtype_of<Scalar>(),
                       std::uint64_t max_shard_bytes = 0) {
  save_sharded_safetensors(dir, block.hf_state_dict(), dtype, max_shard_bytes);
  write_file_atomically(dir / "config.json", "save_hf_moe_block: " + dir.string(),
                                [&](std::ostream& out) { out << block.config_json().dump(2) << '\n'; });
}

}  // namespace moe
