// Cross-check of moe::load_hf_moe_block against the checkpoints tests/peers/hf_checkpoints.py writes in each
// family's published layout, and against its independent PyTorch forward of each family's MoE block.
//
//   hf_crosscheck DIR   for each family DIR/<name>/: loads the block of the layer probe.safetensors names,
//                       checks that only the shards holding it were opened, that its output on x matches y
//                       (max |moe - torch| <= 1e-5 max |torch|: both compute in float32 on the same BF16
//                       weights), that save_hf_moe_block writes what loads back to the same bits (F32, one
//                       file) and to the BF16 rounding of them (BF16 shards of at most 4 KiB with an index),
//                       and that dense layers are refused with an error that says so. Then that
//                       moe::float_to_bfloat16 rounds as PyTorch does (DIR/bf16_rounding.safetensors).

#include <cstdio>
#include <exception>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "moe/io/hf_moe.hpp"
#include "moe/io/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
using moe::Index;
using Matrix = moe::MatrixX<float>;

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

Matrix matrix(const moe::Tensor<float>& t) {
  return Eigen::Map<const Matrix>(t.data.data(), t.shape.at(0), t.shape.at(1));
}

/// The message of the moe::Error `load` throws, or "" when it throws none.
template <class Load>
std::string error_of(Load&& load) {
  try {
    load();
  } catch (const moe::Error& e) {
    return e.what();
  }
  return "";
}

/// PyTorch's bfloat16 rounding of each float in `path` against moe::float_to_bfloat16.
void check_bf16_rounding(const fs::path& path) {
  const auto file = moe::load_safetensors<float>(path);
  const auto& source = file.tensors.at("source").data;
  const auto& rounded = file.tensors.at("rounded").data;  // bfloat16, exact as float
  Index differ = 0;
  for (Index i = 0; i < source.size(); ++i)
    differ += moe::float_to_bfloat16(source(i)) != moe::float_to_bfloat16(rounded(i));
  check(source.size() > 5000 && differ == 0, "float_to_bfloat16 vs PyTorch's bfloat16 on " +
                                                 std::to_string(source.size()) + " floats (ties, infinities, "
                                                 "subnormals): " + std::to_string(differ) + " differ");
}

/// The checkpoint of family `name` (the directory hf_checkpoints.py wrote it to), whose config.json names
/// `model_type`.
void check_family(const fs::path& dir, const std::string& name, const std::string& model_type) {
  const auto probe = moe::load_safetensors<float>(dir / "probe.safetensors");
  const Index layer = std::stoll(probe.metadata.at("layer"));
  const Matrix x = matrix(probe.tensors.at("x")), expected = matrix(probe.tensors.at("y"));

  moe::ShardedSafetensors checkpoint(dir);
  const auto config = moe::read_hf_config(dir, "hf_crosscheck");
  auto block = moe::load_hf_moe_block<float>(checkpoint, config, layer);
  check(block.config().family->model_type == model_type, name + ": family " + model_type + " from config.json");
  std::string opened;
  for (const auto& shard : checkpoint.opened_shards()) opened += (opened.empty() ? "" : ",") + shard;
  check(opened == probe.metadata.at("shards"),
        name + ": opened shards " + opened + ", the block is in " + probe.metadata.at("shards"));

  const Matrix y = block.forward(x);
  const double error = (y - expected).cwiseAbs().maxCoeff() / expected.cwiseAbs().maxCoeff();
  std::ostringstream what;
  what << name << ": layer " << layer << " output vs PyTorch, max relative error " << error;
  check(error <= 1e-5, what.str());

  const fs::path saved = dir.parent_path() / (name + ".saved");
  moe::save_hf_moe_block(saved, block);
  auto reloaded = moe::load_hf_moe_block<float>(saved, layer);
  const Matrix y_again = reloaded.forward(x);
  check(reloaded.hf_state_dict().size() == block.hf_state_dict().size() && y_again == y,
        name + ": save_hf_moe_block round trip, same names, same bits");
  for (const auto& [tensor_name, tensor] : moe::load_safetensors<float>(saved / "model.safetensors").tensors)
    if (!checkpoint.contains(tensor_name))
      check(false, name + ": saved tensor " + tensor_name + " is not a checkpoint name");

  const fs::path sharded = dir.parent_path() / (name + ".bf16");
  moe::save_hf_moe_block(sharded, block, moe::DType::BF16, 4096);
  moe::ShardedSafetensors bf16(sharded);
  auto bf16_block = moe::load_hf_moe_block<float>(bf16, moe::read_hf_config(sharded, "hf_crosscheck"), layer);
  const auto bf16_dict = bf16_block.hf_state_dict();
  bool rounded = bf16_dict.size() == block.hf_state_dict().size();
  for (const auto& [tensor_name, tensor] : block.hf_state_dict()) {
    rounded = rounded && bf16.info(tensor_name).dtype == moe::DType::BF16;
    for (Index i = 0; i < tensor.data.size(); ++i)
      rounded = rounded && bf16_dict.at(tensor_name).data(i) ==
                               moe::bfloat16_to_float(moe::float_to_bfloat16(tensor.data(i)));
  }
  check(rounded && bf16.opened_shards().size() > 1,
        name + ": BF16 in " + std::to_string(bf16.opened_shards().size()) +
            " shards of at most 4 KiB: loads back to the BF16 rounding of every value");

  const auto& moe_layers = moe::hf_moe_layers(checkpoint, *block.config().family);
  if (moe_layers.front() != 0) {
    const std::string refused = error_of([&] { moe::load_hf_moe_block<float>(checkpoint, config, 0); });
    check(refused.find("layer 0 has no") != std::string::npos, name + ": dense layer 0 refused: " + refused);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: hf_crosscheck DIR (written by tests/peers/hf_checkpoints.py)\n");
    return 2;
  }
  try {
    for (const std::string family : {"mixtral", "olmoe", "qwen3_moe", "qwen2_moe", "deepseek_v2", "deepseek_v3"})
      check_family(fs::path(argv[1]) / family, family, family);
    check_family(fs::path(argv[1]) / "deepseek_v2_lite", "deepseek_v2_lite", "deepseek_v2");
    check_bf16_rounding(fs::path(argv[1]) / "bf16_rounding.safetensors");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hf_crosscheck: %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
