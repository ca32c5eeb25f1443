// Cross-check of moe::TransformerEncoder against PyTorch's nn.TransformerEncoder (tests/peers/torch_encoder.py),
// through safetensors files.
//
//   encoder_crosscheck write DIR   for each config: DIR/encoder_<config>_inputs.safetensors (state dict, x, dy,
//                                  the sequence lengths as float; the config in the metadata) and
//                                  DIR/encoder_<config>_outputs.safetensors (y, dx, grad.<parameter>)
//
// The loss is sum(y * dy); x is [batch * seq_len x d_model], sequence-major, right-padded to the lengths.

#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "moe/io/safetensors.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/moe.hpp"

namespace {

namespace fs = std::filesystem;
using moe::Index;
using moe::Matrix;
using Dict = moe::StateDict<float>;
using Encoder = moe::TransformerEncoder<float>;

struct Config {
  std::string name;
  bool causal;
  bool norm_first;  // pre-norm, with a final LayerNorm
  moe::EncoderActivation activation;
};

const std::vector<Config> configs{
    {"post_norm_padding", false, false, moe::EncoderActivation::relu},
    {"post_norm_causal_padding", true, false, moe::EncoderActivation::relu},
    {"pre_norm_padding", false, true, moe::EncoderActivation::gelu},
    {"pre_norm_causal_padding", true, true, moe::EncoderActivation::gelu},
};

constexpr Index d_model = 16, num_heads = 4, dim_feedforward = 32, num_layers = 2, batch = 3, seq_len = 6;
const std::vector<Index> lengths{6, 4, 1};

moe::Tensor<float> tensor(moe::ConstRef<float> m, moe::Shape shape) {
  return {std::move(shape), Eigen::Map<const moe::VectorX<float>>(m.data(), m.size())};
}

void write(const Config& config, std::uint64_t seed, const fs::path& dir) {
  moe::Rng rng(seed);
  Encoder::Options options;
  options.num_layers = num_layers;
  options.layer.num_heads = num_heads;
  options.layer.dim_feedforward = dim_feedforward;
  options.layer.activation = config.activation;
  options.layer.norm_first = config.norm_first;
  options.layer.causal = config.causal;
  options.final_norm = config.norm_first;
  Encoder encoder(d_model, options, rng);
  // LayerNorm starts at weight 1, bias 0: other values check that the norms' parameters are used as PyTorch does.
  for (auto& p : encoder.named_parameters())
    if (p.name.find("norm") != std::string::npos) moe::fill_uniform(p.parameter->value, rng, 0.5, 1.5);

  Matrix x(batch * seq_len, d_model), dy(batch * seq_len, d_model);
  moe::fill_normal(x, rng, 0.0, 1.0);
  moe::fill_normal(dy, rng, 0.0, 1.0);
  const moe::SequenceLayout layout(batch, seq_len, lengths);

  Dict inputs = moe::state_dict(encoder);
  const auto parameters = encoder.named_parameters();
  moe::zero_grad(parameters);
  Dict outputs;
  outputs["y"] = tensor(encoder.forward(x, layout), {batch, seq_len, d_model});
  outputs["dx"] = tensor(encoder.backward(dy), {batch, seq_len, d_model});
  for (const auto& p : parameters) outputs["grad." + p.name] = tensor(p.parameter->grad, p.parameter->shape);

  inputs["x"] = tensor(x, {batch, seq_len, d_model});
  inputs["dy"] = tensor(dy, {batch, seq_len, d_model});
  moe::VectorX<float> length_values(batch);
  for (Index b = 0; b < batch; ++b) length_values(b) = static_cast<float>(lengths[static_cast<std::size_t>(b)]);
  inputs["lengths"] = {{batch}, length_values};
  const moe::Metadata metadata{{"config", config.name},
                               {"d_model", std::to_string(d_model)},
                               {"num_heads", std::to_string(num_heads)},
                               {"dim_feedforward", std::to_string(dim_feedforward)},
                               {"num_layers", std::to_string(num_layers)},
                               {"activation", config.activation == moe::EncoderActivation::relu ? "relu" : "gelu"},
                               {"norm_first", config.norm_first ? "true" : "false"},
                               {"final_norm", config.norm_first ? "true" : "false"},
                               {"causal", config.causal ? "true" : "false"}};
  moe::save_safetensors(dir / ("encoder_" + config.name + "_inputs.safetensors"), inputs, metadata);
  moe::save_safetensors(dir / ("encoder_" + config.name + "_outputs.safetensors"), outputs, metadata);
  std::printf("%-26s wrote encoder_%s_{inputs,outputs}.safetensors\n", config.name.c_str(), config.name.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::string(argv[1]) != "write") {
    std::fprintf(stderr, "usage: encoder_crosscheck write DIR   (then tests/peers/torch_encoder.py DIR)\n");
    return 2;
  }
  try {
    const fs::path dir = argv[2];
    fs::create_directories(dir);
    std::uint64_t seed = 2024;
    for (const Config& config : configs) write(config, seed++, dir);
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "encoder_crosscheck: %s\n", error.what());
    return 1;
  }
}
