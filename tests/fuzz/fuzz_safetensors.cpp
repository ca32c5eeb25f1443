// safetensors files, header and data: what load_safetensors accepts, save_safetensors writes back and the
// copy reads as the same tensors, bit for bit (F16 and BF16 come back as F32).
#include <cstring>

#include "fuzz_common.hpp"
#include "moe/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const moe::fuzz::ScratchFile input("in.safetensors"), copy("copy.safetensors");
  moe::fuzz::refusals_allowed([&] {
    const moe::SafetensorsFile<float> file = moe::load_safetensors<float>(input.write(moe::fuzz::as_text(data, size)));
    moe::save_safetensors(copy.path(), file.tensors, file.metadata);
    const moe::SafetensorsFile<float> again = moe::load_safetensors<float>(copy.path());
    moe::fuzz::require(again.metadata == file.metadata && again.tensors.size() == file.tensors.size());
    for (const auto& [name, tensor] : file.tensors) {
      const moe::Tensor<float>& other = again.tensors.at(name);
      moe::fuzz::require(other.shape == tensor.shape && other.data.size() == tensor.data.size() &&
                         std::memcmp(other.data.data(), tensor.data.data(), sizeof(float) * tensor.data.size()) == 0);
    }
  });
  return 0;
}
