// CIFAR-10's binary batches, plain or gzip.
#include "fuzz_common.hpp"
#include "moe/data/cifar10.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const moe::fuzz::ScratchFile input("in.bin");
  const std::string path = input.write(moe::fuzz::as_text(data, size)).string();
  moe::fuzz::refusals_allowed([&] {
    const moe::ImageDataset<float> batch = moe::read_cifar10_batches({path});
    moe::fuzz::require(static_cast<moe::Index>(batch.labels.size()) == batch.images.rows());
  });
  return 0;
}
