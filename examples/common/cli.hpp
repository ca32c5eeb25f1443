#pragma once
// The command line every example shares: --preset, --out, --data-dir, --seed, --threads; parse_args also
// sets the threads and keeps freed memory in the process (moe::retain_freed_memory).

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "moe/core/memory.hpp"
#include "moe/core/parallel.hpp"

namespace moe::examples {

struct Args {
  std::string preset;
  std::filesystem::path out;
  std::filesystem::path data_dir = "data";
  std::uint64_t seed = 1;
  int threads = 0;  // 0: every core
};

template <class Number>
Number parse_number(std::string_view flag, std::string_view text) {
  Number value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) {
    std::cerr << "error: " << flag << " expects a non-negative integer, got '" << text << "'\n";
    std::exit(2);
  }
  return value;
}

/// Parses the shared options; prints usage and exits on --help or on anything it does not know.
/// The first preset listed is the default. Sets moe's thread count.
inline Args parse_args(int argc, char** argv, std::string_view description, const std::vector<std::string>& presets,
                       const std::string& default_out) {
  Args args{.preset = presets.front(), .out = default_out};
  auto usage = [&](std::ostream& os) {
    os << description << "\n\nusage: " << argv[0] << " [options]\n"
       << "  --preset NAME    one of:";
    for (const auto& p : presets) os << ' ' << p;
    os << " (default " << presets.front() << ")\n"
       << "  --out DIR        where the report, CSV files and figures go (default " << default_out << ")\n"
       << "  --data-dir DIR   where scripts/fetch-data.sh put the data (default data)\n"
       << "  --seed N         random seed (default 1)\n"
       << "  --threads N      threads to use (default: every core)\n";
  };
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      usage(std::cout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::cerr << "error: " << flag << (flag.starts_with("--") ? " needs a value\n\n" : " is not an option\n\n");
      usage(std::cerr);
      std::exit(2);
    }
    const std::string_view value = argv[++i];
    if (flag == "--preset") {
      args.preset = value;
      if (std::find(presets.begin(), presets.end(), args.preset) == presets.end()) {
        std::cerr << "error: unknown preset '" << value << "'\n\n";
        usage(std::cerr);
        std::exit(2);
      }
    } else if (flag == "--out") {
      args.out = value;
    } else if (flag == "--data-dir") {
      args.data_dir = value;
    } else if (flag == "--seed") {
      args.seed = parse_number<std::uint64_t>(flag, value);
    } else if (flag == "--threads") {
      args.threads = parse_number<int>(flag, value);
    } else {
      std::cerr << "error: unknown option " << flag << "\n\n";
      usage(std::cerr);
      std::exit(2);
    }
  }
  if (args.threads > 0) set_num_threads(args.threads);
  retain_freed_memory();  // expert buffers change size every batch: keep their memory between batches
  std::filesystem::create_directories(args.out);
  return args;
}

}  // namespace moe::examples
