// Training checkpoints, binary and JSON (cereal), loaded into a fixed model and optimizer: a refused load
// changes nothing.
#include "fuzz_common.hpp"
#include "moe/core/random.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/nn/linear.hpp"
#include "moe/optim/optimizer.hpp"

namespace {

template <class Opt>
void load(const std::filesystem::path& path, moe::Linear<float>& model, Opt& optimizer, moe::Rng& rng) {
  const moe::StateDict<float> before = moe::state_dict(model);
  const moe::Index steps = optimizer.steps();
  try {
    moe::load_checkpoint(path, model, optimizer, rng);
  } catch (const moe::Error&) {
    const moe::StateDict<float> after = moe::state_dict(model);
    for (const auto& [name, tensor] : before) moe::fuzz::require(after.at(name).data == tensor.data);
    moe::fuzz::require(optimizer.steps() == steps);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const moe::fuzz::ScratchFile input("in.ck");
  if (size == 0) return 0;
  moe::Rng rng(1);
  moe::Linear<float> model(2, 3, rng);
  // The first byte picks the optimizer (SGD's options hold a bool; Adam's state two tensors per
  // parameter); the rest is the file.
  const auto& path = input.write(moe::fuzz::as_text(data + 1, size - 1));
  if (data[0] & 1) {
    moe::SGD<float> sgd(model.named_parameters());
    load(path, model, sgd, rng);
  } else {
    moe::Adam<float> adam(model.named_parameters());
    load(path, model, adam, rng);
  }
  return 0;
}
