// moe-inspect DIR: the MoE layers of a Hugging Face checkpoint directory (config.json, the safetensors index and
// shards) as moe::load_hf_moe_block sees them; with --probe N, one layer loaded (timed, with the process's peak
// memory) and the load of each of its experts on N random inputs of its width.

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <ranges>
#include <set>
#include <string>
#include <variant>

#include <CLI/CLI.hpp>

#include "common/check.hpp"
#include "common/cli.hpp"
#include "moe/io/hf_moe.hpp"

namespace {

using moe::Index;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

/// The most memory this process has held at once, in MiB (Linux reports ru_maxrss in KiB).
double peak_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

std::string routing_text(const moe::HfMoeBlockConfig& c) {
  std::string text = c.family->scoring == moe::HfScoring::softmax ? "softmax" : "sigmoid + e_score_correction_bias";
  text += ", top-" + std::to_string(c.k) + (c.renormalize ? " renormalised" : " not renormalised");
  if (c.routed_scaling_factor != 1.0) {
    char factor[32];
    std::snprintf(factor, sizeof factor, "%g", c.routed_scaling_factor);
    text += ", scaled by " + std::string(factor);
  }
  if (c.n_group > 1) text += ", best " + std::to_string(c.topk_group) + " of " + std::to_string(c.n_group) + " groups";
  return text;
}

void list_layers(moe::ShardedSafetensors& checkpoint, const nlohmann::json& config_json) {
  const moe::HfFamily& family = moe::hf_family(config_json.value("model_type", std::string()));
  const std::vector<Index> layers = moe::hf_moe_layers(checkpoint, family);
  std::printf("%s (model_type %s): %zu tensors in %zu shards, %zu MoE layers\n", std::string(family.name).c_str(),
              std::string(family.model_type).c_str(), checkpoint.weight_map().size(),
              std::set<std::string>(std::views::values(checkpoint.weight_map()).begin(),
                                    std::views::values(checkpoint.weight_map()).end())
                  .size(),
              layers.size());
  for (const Index layer : layers) {
    const moe::HfMoeBlockConfig c = moe::hf_moe_block_config(config_json, layer, "moe-inspect");
    Index parameters = 0;
    std::map<std::string, Index> dtypes;  // dtype -> tensors
    for (const auto& [ours, name] : moe::hf_block_tensor_names(c)) {
      const moe::TensorInfo info = checkpoint.info(name);
      parameters += moe::numel(info.shape);
      ++dtypes[std::string(moe::dtype_name(info.dtype))];
    }
    std::string shared = c.shared_hidden > 0 ? "of width " + std::to_string(c.shared_hidden) : "none";
    if (c.shared_gate) shared += " scaled by sigmoid(x . " + std::string(family.shared_gate) + ")";
    std::string dtype_text;
    for (const auto& [dtype, count] : dtypes)
      dtype_text += (dtype_text.empty() ? "" : ", ") + dtype + " x" + std::to_string(count);
    std::printf("layer %lld  %s: %lld experts of width %lld, %s, shared expert %s, %lld parameters (%s)\n",
                static_cast<long long>(layer), c.prefix.c_str(), static_cast<long long>(c.num_experts),
                static_cast<long long>(c.hidden), routing_text(c).c_str(),
                shared.c_str(),
                static_cast<long long>(parameters), dtype_text.c_str());
  }
}

void probe(moe::ShardedSafetensors& checkpoint, const nlohmann::json& config_json, Index layer, Index tokens,
           std::uint64_t seed) {
  const Clock::time_point start = Clock::now();
  moe::HfMoeBlock<float> block = moe::load_hf_moe_block<float>(checkpoint, config_json, layer);
  const double load_seconds = seconds_since(start);
  std::printf("layer %lld loaded in %.3f s from %zu of the shards, peak memory %.1f MiB\n",
              static_cast<long long>(layer), load_seconds, checkpoint.opened_shards().size(), peak_mib());

  moe::Rng rng(seed);
  moe::MatrixX<float> x(tokens, block.config().d_model);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(moe::normal(rng));
  const Clock::time_point forward_start = Clock::now();
  std::visit([](auto& layer) { layer.eval(); }, block.layer());
  block.forward(x);
  const double forward_seconds = seconds_since(forward_start);
  const moe::IndexVector load = std::visit([](auto& l) { return moe::IndexVector(l.batch_load()); }, block.layer());
  std::printf("%lld standard normal random inputs through the block in %.3f s; assignments per expert (mean %.2f):\n",
              static_cast<long long>(tokens), forward_seconds,
              static_cast<double>(tokens * block.config().k) / static_cast<double>(load.size()));
  for (Index e = 0; e < load.size(); ++e)
    std::printf("%s%4lld: %lld", e % 8 == 0 ? (e ? "\n  " : "  ") : "   ", static_cast<long long>(e),
                static_cast<long long>(load(e)));
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moe-inspect: the MoE layers of a Hugging Face checkpoint directory (Mixtral, OLMoE, Qwen1.5/2/3-MoE, "
               "DeepSeek-V2/V3): family, experts, K, shared experts, routing, parameters and dtypes per layer",
               "moe-inspect"};
  app.formatter(std::make_shared<moe::examples::detail::HelpFormatter>());
  std::filesystem::path dir;
  Index probe_tokens = 0, layer = -1;
  std::uint64_t seed = 0;
  app.add_option("dir", dir, "checkpoint directory: config.json and model.safetensors.index.json or "
                             "model.safetensors")->required()->check(CLI::ExistingDirectory);
  app.add_option("--probe", probe_tokens, "load one layer (timed) and print each expert's load on this many "
                                          "random inputs")->check(CLI::PositiveNumber);
  app.add_option("--layer", layer, "the layer --probe loads (default: the first MoE layer)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", seed, "seed of --probe's inputs")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "error: " << e.what() << "\nrun with --help for the options\n";
    return 1;
  }
  try {
    moe::ShardedSafetensors checkpoint(dir);
    const nlohmann::json config = moe::read_hf_config(dir, "moe-inspect");
    list_layers(checkpoint, config);
    if (probe_tokens > 0) {
      if (layer < 0) {
        const auto layers = moe::hf_moe_layers(checkpoint, moe::hf_family(config.value("model_type", "")));
        moe::examples::require(!layers.empty(), "moe-inspect: ", dir.string(), " has no MoE layer to probe");
        layer = layers.front();
      }
      moe::ShardedSafetensors fresh(dir);  // the probe's shard count: only what loading the layer opens
      probe(fresh, config, layer, probe_tokens, seed);
    }
    return 0;
  } catch (const std::exception& e) {
    std::cout.flush();
    std::cerr << "error: " << e.what() << '\n';
    return 1;
  }
}
