// A safetensors file loaded into a fixed module (names, shapes, dtypes), strictly or not, with and without
// a prefix map: a refused load leaves the module as it was.
#include "fuzz_common.hpp"
#include "moe/core/random.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/nn/layer_norm.hpp"
#include "moe/nn/linear.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const moe::fuzz::ScratchFile input("in.safetensors");
  if (size == 0) return 0;
  moe::Rng rng(1);
  moe::Linear<float> fc(3, 2, rng);
  moe::LayerNorm<float> norm(2);
  moe::ModelRef<float> model{{"fc", fc}, {"norm", norm}};
  const moe::StateDict<float> before = moe::state_dict(model);
  // The first byte picks the options; the rest is the file.
  moe::LoadOptions options;
  options.strict = (data[0] & 1) != 0;
  if (data[0] & 2) options.prefix_map = {{"", "fc."}, {"n.", "norm."}};
  const auto& path = input.write(moe::fuzz::as_text(data + 1, size - 1));
  try {
    moe::load_module(path, model, options);
  } catch (const moe::Error&) {
    const moe::StateDict<float> after = moe::state_dict(model);
    moe::fuzz::require(after.size() == before.size());
    for (const auto& [name, tensor] : before)
      moe::fuzz::require(after.at(name).shape == tensor.shape && after.at(name).data == tensor.data);
  }
  return 0;
}
