// The trainer's own state beside a checkpoint ("<checkpoint>.trainer", cereal portable binary).
#include <sstream>

#include "fuzz_common.hpp"
#include "moe/train/checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  moe::fuzz::refusals_allowed([&] {
    std::istringstream in(std::string(moe::fuzz::as_text(data, size)));
    moe::detail::read_trainer_state(in, size);
  });
  return 0;
}
