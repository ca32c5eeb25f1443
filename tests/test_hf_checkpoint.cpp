#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "moe/io/hf_moe.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/io/sharded_safetensors.hpp"
#include "file_contents.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using Catch::Contains;
using moe::Index;

namespace {

using moe::test::write_bytes;

moe::Tensor<float> ramp(moe::Shape shape, float start) {
  moe::Tensor<float> t{shape, moe::VectorX<float>(moe::numel(shape))};
  for (Index i = 0; i < t.data.size(); ++i) t.data(i) = start + static_cast<float>(i);
  return t;
}

/// Two shards: a.weight in the first, b.weight and c.bias in the second, and the index naming them.
void write_two_shards(const moe::test::TempDir& dir) {
  moe::save_safetensors<float>(dir / "model-00001-of-00002.safetensors", {{"a.weight", ramp({2, 3}, 0)}});
  moe::save_safetensors<float>(dir / "model-00002-of-00002.safetensors",
                               {{"b.weight", ramp({3, 2}, 10)}, {"c.bias", ramp({4}, 20)}});
  write_bytes(dir / "model.safetensors.index.json",
             R"({"metadata": {"total_size": 64}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                 "b.weight": "model-00002-of-00002.safetensors", "c.bias": "model-00002-of-00002.safetensors"}})");
}

}  // namespace

TEST_CASE("ShardedSafetensors reads only the shards and the bytes of the tensors asked for", "[hf_checkpoint]") {
  moe::test::TempDir dir;
  write_two_shards(dir);
  moe::ShardedSafetensors checkpoint(dir.path());
  CHECK(checkpoint.weight_map().size() == 3);
  CHECK(checkpoint.opened_shards().empty());

  const moe::Tensor<double> b = checkpoint.load<double>("b.weight", {3, 2});
  CHECK(b.shape == moe::Shape{3, 2});
  CHECK(b.data(5) == 15.0);
  CHECK(checkpoint.opened_shards() == std::vector<std::string>{"model-00002-of-00002.safetensors"});
  const moe::TensorInfo c = checkpoint.info("c.bias");
  CHECK((c.dtype == moe::DType::F32 && c.shape == moe::Shape{4} && c.shard == "model-00002-of-00002.safetensors"));

  // A shard's data is not read until a tensor of it is: a truncated first shard goes unnoticed while only
  // the second is used, and is an error naming that shard when its tensor is asked for.
  fs::resize_file(dir / "model-00001-of-00002.safetensors", 20);
  CHECK(checkpoint.load<float>("c.bias").data(3) == 23.0f);
  CHECK_THROWS_WITH(checkpoint.load<float>("a.weight"),
                    Contains("model-00001-of-00002.safetensors") && Contains("truncated"));
}

TEST_CASE("ShardedSafetensors errors name the tensor, the shard and the mismatch", "[hf_checkpoint]") {
  moe::test::TempDir dir;
  write_two_shards(dir);
  moe::ShardedSafetensors checkpoint(dir.path());
  CHECK_THROWS_WITH(checkpoint.load<float>("b.weight", {2, 3}),
                    Contains("model-00002-of-00002.safetensors: tensor b.weight has shape [3, 2], expected [2, 3]"));
  CHECK_THROWS_WITH(checkpoint.load<float>("d.weight"), Contains("no tensor d.weight in the checkpoint"));

  write_bytes(dir / "model.safetensors.index.json",
             R"({"weight_map": {"a.weight": "model-00002-of-00002.safetensors"}})");
  CHECK_THROWS_WITH(moe::ShardedSafetensors(dir.path()).load<float>("a.weight"),
                    Contains("model-00002-of-00002.safetensors: tensor a.weight is not in this shard"));
  write_bytes(dir / "model.safetensors.index.json", R"({"weight_map": {"a.weight": "../elsewhere.safetensors"}})");
  CHECK_THROWS_WITH(moe::ShardedSafetensors(dir.path()), Contains("not a file name in the directory"));
  write_bytes(dir / "model.safetensors.index.json", R"({"metadata": {}})");
  CHECK_THROWS_WITH(moe::ShardedSafetensors(dir.path()), Contains("needs an object \"weight_map\""));
  write_bytes(dir / "model.safetensors.index.json", R"({"weight_map": {"a.weight": 1}})");
  CHECK_THROWS_WITH(moe::ShardedSafetensors(dir.path()), Contains("tensor a.weight maps to 1"));
  write_bytes(dir / "model.safetensors.index.json", "{\"weight_map\": ");
  CHECK_THROWS_WITH(moe::ShardedSafetensors(dir.path()), Contains("is not valid JSON"));

  moe::test::TempDir empty;
  CHECK_THROWS_WITH(moe::ShardedSafetensors(empty.path()),
                    Contains("holds neither model.safetensors.index.json nor model.safetensors"));
}

TEST_CASE("ShardedSafetensors reads a single model.safetensors without an index", "[hf_checkpoint]") {
  moe::test::TempDir dir;
  moe::save_safetensors<float>(dir / "model.safetensors", {{"w", ramp({2, 2}, 1)}});
  moe::ShardedSafetensors checkpoint(dir.path());
  CHECK(checkpoint.contains("w"));
  CHECK(checkpoint.load<float>("w").data(3) == 4.0f);
}

TEST_CASE("hf_moe_block_config reads the family's routing from config.json and refuses what it cannot load",
          "[hf_checkpoint]") {
  const nlohmann::json deepseek = nlohmann::json::parse(R"({"model_type": "deepseek_v3", "hidden_size": 16,
      "moe_intermediate_size": 8, "n_routed_experts": 16, "n_shared_experts": 2, "num_experts_per_tok": 4,
      "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5, "norm_topk_prob": true,
      "scoring_func": "sigmoid", "topk_method": "noaux_tc", "hidden_act": "silu"})");
  const moe::HfMoeBlockConfig config = moe::hf_moe_block_config(deepseek, 3);
  CHECK(config.prefix == "model.layers.3.mlp.");
  CHECK((config.num_experts == 16 && config.k == 4 && config.hidden == 8 && config.shared_hidden == 16));
  CHECK((config.n_group == 4 && config.topk_group == 2 && config.routed_scaling_factor == 2.5 && config.renormalize));

  const auto refused = [&](const char* key, nlohmann::json value) {
    nlohmann::json changed = deepseek;
    changed[key] = std::move(value);
    return [changed] { moe::hf_moe_block_config(changed, 3); };
  };
  CHECK_THROWS_WITH(refused("norm_topk_prob", false)(), Contains("always renormalises"));
  CHECK_THROWS_WITH(refused("scoring_func", "softmax")(), Contains("\"scoring_func\" is \"softmax\""));
  CHECK_THROWS_WITH(refused("hidden_act", "gelu")(), Contains("\"hidden_act\" is \"gelu\""));
  CHECK_THROWS_WITH(refused("n_routed_experts", -1)(), Contains("\"n_routed_experts\" must be a positive integer"));
  CHECK_THROWS_WITH(refused("num_experts_per_tok", 17)(), Contains("num_experts_per_tok = 17 exceeds the 16"));
  CHECK_THROWS_WITH(refused("model_type", "llama")(),
                    Contains("model_type \"llama\" is not a supported MoE family (mixtral, olmoe"));

  const nlohmann::json mixtral = nlohmann::json::parse(R"({"model_type": "mixtral", "hidden_size": 16,
      "intermediate_size": 12, "num_local_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": false})");
  const moe::HfMoeBlockConfig m = moe::hf_moe_block_config(mixtral, 0);
  CHECK(m.renormalize);  // Mixtral always renormalises, whatever the config says
  CHECK(m.prefix == "model.layers.0.block_sparse_moe.");
  nlohmann::json no_width = mixtral;
  no_width.erase("intermediate_size");
  CHECK_THROWS_WITH(moe::hf_moe_block_config(no_width, 0), Contains("config.json has no \"intermediate_size\""));
}

TEST_CASE("hf_moe_block_config reads DeepSeek-V2's topk_method, groups and scaling, and Qwen2-MoE's gate",
          "[hf_checkpoint]") {
  const nlohmann::json v2 = nlohmann::json::parse(R"({"model_type": "deepseek_v2", "hidden_size": 16,
      "moe_intermediate_size": 6, "n_routed_experts": 16, "n_shared_experts": 2, "num_experts_per_tok": 4,
      "n_group": 4, "topk_group": 2, "topk_method": "group_limited_greedy", "routed_scaling_factor": 16.0,
      "norm_topk_prob": false, "scoring_func": "softmax", "hidden_act": "silu"})");
  const moe::HfMoeBlockConfig grouped = moe::hf_moe_block_config(v2, 1);
  CHECK(grouped.family->name == "DeepSeek-V2");
  CHECK((grouped.num_experts == 16 && grouped.k == 4 && grouped.hidden == 6 && grouped.shared_hidden == 12));
  CHECK((grouped.n_group == 4 && grouped.topk_group == 2 && grouped.routed_scaling_factor == 16.0));
  CHECK((!grouped.renormalize && !grouped.shared_gate));

  nlohmann::json lite = v2;
  lite["topk_method"] = "greedy";  // V2-Lite: plain top-K, whatever n_group says
  const moe::HfMoeBlockConfig greedy = moe::hf_moe_block_config(lite, 1);
  CHECK((greedy.n_group == 1 && greedy.topk_group == 1 && greedy.routed_scaling_factor == 16.0));

  const auto refused = [&](const char* key, nlohmann::json value) {
    nlohmann::json changed = v2;
    changed[key] = std::move(value);
    return [changed] { moe::hf_moe_block_config(changed, 1); };
  };
  CHECK_THROWS_WITH(refused("norm_topk_prob", true)(),
                    Contains("norm_topk_prob is true; DeepSeek's modeling_deepseek.py would renormalise"));
  CHECK_THROWS_WITH(refused("topk_method", "noaux_tc")(),
                    Contains("\"topk_method\" is \"noaux_tc\"; moe loads DeepSeek-V2 blocks with \"greedy\" or "
                             "\"group_limited_greedy\" only"));
  CHECK_THROWS_WITH(refused("scoring_func", "sigmoid")(), Contains("\"scoring_func\" is \"sigmoid\""));
  CHECK_THROWS_WITH(refused("n_group", 0)(), Contains("\"n_group\" must be a positive integer"));

  const nlohmann::json qwen2 = nlohmann::json::parse(R"({"model_type": "qwen2_moe", "hidden_size": 4,
      "moe_intermediate_size": 3, "shared_expert_intermediate_size": 5, "num_experts": 2,
      "num_experts_per_tok": 1, "norm_topk_prob": false})");
  const moe::HfMoeBlockConfig q = moe::hf_moe_block_config(qwen2, 2);
  CHECK((q.shared_hidden == 5 && q.shared_gate && !q.renormalize));
  moe::Rng rng(3);
  moe::HfMoeBlock<double> block(q, qwen2, rng);
  const auto dict = block.hf_state_dict();
  CHECK(dict.size() == 1 + 2 * 3 + 3 + 1);
  CHECK(dict.at("model.layers.2.mlp.shared_expert_gate.weight").shape == moe::Shape{1, 4});
  CHECK(dict.at("model.layers.2.mlp.shared_expert.up_proj.weight").shape == moe::Shape{5, 4});
}

TEST_CASE("HfMoeBlock names its tensors as the family's checkpoints do", "[hf_checkpoint]") {
  const nlohmann::json mixtral = nlohmann::json::parse(R"({"model_type": "mixtral", "hidden_size": 4,
      "intermediate_size": 3, "num_local_experts": 2, "num_experts_per_tok": 2})");
  moe::Rng rng(1);
  moe::HfMoeBlock<float> block(moe::hf_moe_block_config(mixtral, 5), mixtral, rng);
  const auto dict = block.hf_state_dict();
  CHECK(dict.size() == 7);
  CHECK(dict.at("model.layers.5.block_sparse_moe.gate.weight").shape == moe::Shape{2, 4});
  CHECK(dict.at("model.layers.5.block_sparse_moe.experts.1.w1.weight").shape == moe::Shape{3, 4});
  CHECK(dict.at("model.layers.5.block_sparse_moe.experts.1.w3.weight").shape == moe::Shape{3, 4});
  CHECK(dict.at("model.layers.5.block_sparse_moe.experts.1.w2.weight").shape == moe::Shape{4, 3});

  moe::test::TempDir dir;
  moe::save_hf_moe_block(dir.path(), block, moe::DType::F64);
  auto reloaded = moe::load_hf_moe_block<double>(dir.path(), 5);
  const auto again = reloaded.hf_state_dict();
  for (const auto& [name, tensor] : dict) CHECK(again.at(name).data == tensor.data.cast<double>());
}

TEST_CASE("float_to_bfloat16 rounds to nearest, ties to even, as PyTorch does", "[hf_checkpoint][bf16]") {
  const auto bits = [](std::uint32_t b) { return moe::float_to_bfloat16(std::bit_cast<float>(b)); };
  CHECK(bits(0x3F800000u) == 0x3F80u);  // 1.0, exact
  CHECK(bits(0x3F808000u) == 0x3F80u);  // halfway between 0x3F80 and 0x3F81: to the even one
  CHECK(bits(0x3F818000u) == 0x3F82u);  // halfway between 0x3F81 and 0x3F82: to the even one
  CHECK(bits(0x3F808001u) == 0x3F81u);  // just past halfway: up
  CHECK(bits(0x3F807FFFu) == 0x3F80u);  // just below halfway: down
  CHECK(bits(0xBF818000u) == 0xBF82u);  // the sign is kept
  CHECK(bits(0x7F7FFFFFu) == 0x7F80u);  // the largest float rounds to infinity
  CHECK(bits(0xFF800000u) == 0xFF80u);  // -infinity
  CHECK(bits(0x00000001u) == 0x0000u);  // the smallest subnormal rounds to zero
  CHECK(std::isnan(moe::bfloat16_to_float(bits(0x7F800001u))));  // a NaN whose payload is in the low half
  CHECK(std::isnan(moe::bfloat16_to_float(bits(0xFFC00000u))));
}

TEST_CASE("save_hf_moe_block writes BF16 shards and an index as transformers does, and one file again",
          "[hf_checkpoint][bf16]") {
  const nlohmann::json qwen2 = nlohmann::json::parse(R"({"model_type": "qwen2_moe", "hidden_size": 8,
      "moe_intermediate_size": 4, "shared_expert_intermediate_size": 6, "num_experts": 4,
      "num_experts_per_tok": 2, "norm_topk_prob": true})");
  moe::Rng rng(12);
  moe::HfMoeBlock<float> block(moe::hf_moe_block_config(qwen2, 3), qwen2, rng);
  moe::test::TempDir dir;
  write_bytes(dir / "model-00007-of-00009.safetensors", "stale");  // left by an earlier save: removed
  constexpr std::uint64_t limit = 200;  // bytes of tensor data per shard: 3 BF16 expert projections of 64 bytes
  moe::save_hf_moe_block(dir.path(), block, moe::DType::BF16, limit);

  CHECK(!fs::exists(dir / "model.safetensors"));
  CHECK(!fs::exists(dir / "model-00007-of-00009.safetensors"));
  const nlohmann::json index = moe::detail::read_json_file(dir / "model.safetensors.index.json", "test");
  const auto dict = block.hf_state_dict();
  CHECK(index["metadata"]["total_size"] == 2 * (4 * 8 + 4 * 3 * 32 + 3 * 48 + 8));
  CHECK(index["weight_map"].size() == dict.size());
  std::map<std::string, std::uint64_t> shard_bytes;
  for (const auto& [name, shard] : index["weight_map"].items())
    shard_bytes[shard.get<std::string>()] += 2 * static_cast<std::uint64_t>(dict.at(name).data.size());
  // In name order: each expert's three projections (192 bytes), the router with the first shared projection,
  // the two others, the shared expert's gate.
  CHECK(shard_bytes.size() == 7);
  CHECK(shard_bytes.begin()->first == "model-00001-of-00007.safetensors");
  for (const auto& [shard, bytes] : shard_bytes) {
    INFO(shard);
    CHECK(bytes <= limit);
    CHECK(moe::load_safetensors<float>(dir / shard).metadata == moe::Metadata{{"format", "pt"}});
  }
  auto reloaded = moe::load_hf_moe_block<float>(dir.path(), 3);
  for (const auto& [name, tensor] : reloaded.hf_state_dict()) {
    INFO(name);
    for (Index i = 0; i < tensor.data.size(); ++i)
      CHECK(tensor.data(i) == moe::bfloat16_to_float(moe::float_to_bfloat16(dict.at(name).data(i))));
  }

  // Saved again unsharded: the index and the shards go, one model.safetensors holds the same values.
  moe::save_hf_moe_block(dir.path(), reloaded, moe::DType::F32);
  CHECK(fs::exists(dir / "model.safetensors"));
  CHECK(!fs::exists(dir / "model.safetensors.index.json"));
  CHECK(!fs::exists(dir / "model-00001-of-00007.safetensors"));
  auto single = moe::load_hf_moe_block<float>(dir.path(), 3);
  const auto bf16_values = reloaded.hf_state_dict();
  for (const auto& [name, tensor] : single.hf_state_dict()) CHECK(tensor.data == bf16_values.at(name).data);
}
