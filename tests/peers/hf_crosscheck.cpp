// Cross-check of moe::load_hf_moe_block against the checkpoints tests/peers/hf_checkpoints.py writes in each
// family's published layout, and against its independent PyTorch forward of each family's MoE block.
//
//   hf_crosscheck DIR   for each family DIR/<name>/: loads the block of the layer probe.safetensors names,
//                       checks that only the shards holding it were opened, that its output on x matches y
//                       (max |moe - torch| <= 1e-5 max |torch|: both compute in float32 on the same BF16
//                       weights), that save_hf_moe_block writes what loads back to the same bits, and that
//                       dense layers are refused with an error that says so.

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
  for (const auto& [name, tensor] : moe::load_safetensors<float>(saved / "model.safetensors").tensors)
    if (!checkpoint.contains(name)) check(false, name + ": saved tensor " + name + " is not a checkpoint name");

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
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hf_crosscheck: %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
