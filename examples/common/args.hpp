#pragma once
// What every example's command line sets (common/cli.hpp declares the options; common/resume.hpp reads
// and writes the ones that decide a run's results), without the command-line library.

#include <cstdint>
#include <filesystem>
#include <string>

#include "moe/core/types.hpp"

namespace moe::examples {

struct Args {
  std::string preset;
  std::filesystem::path out;
  std::filesystem::path data_dir = "data";
  std::uint64_t seed = 1;
  int threads = 0;               // 0: every core
  std::filesystem::path resume;  // empty: a fresh run; else the --out of the run to continue (then out == resume)
  Index max_steps = 0;           // > 0: this invocation stops after that many training steps (common/resume.hpp)
};

}  // namespace moe::examples
