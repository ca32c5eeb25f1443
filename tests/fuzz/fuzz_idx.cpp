// IDX files (MNIST's format), plain or gzip, read as images and as labels.
#include "fuzz_common.hpp"
#include "moe/data/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const moe::fuzz::ScratchFile input("in.idx");
  const std::string path = input.write(moe::fuzz::as_text(data, size)).string();
  moe::fuzz::refusals_allowed([&] {
    const moe::IdxImages<float> images = moe::read_idx_images(path);
    moe::fuzz::require(images.pixels.cols() == images.rows * images.columns);
    moe::fuzz::require(images.pixels.size() == 0 || (images.pixels.minCoeff() >= 0 && images.pixels.maxCoeff() <= 1));
  });
  moe::fuzz::refusals_allowed([&] { moe::read_idx_labels(path); });
  return 0;
}
