#pragma once
// What the fuzz targets share. A reader of outside bytes may refuse them only with moe::Error: any other
// exception escapes LLVMFuzzerTestOneInput and libFuzzer reports it as a crash, as it does a sanitizer's
// finding, a run over -timeout seconds or a reader that allocates past -rss_limit_mb. Readers that take a
// path read the input from a scratch file (in /dev/shm where there is one: no disk I/O).

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "moe/core/error.hpp"

namespace moe::fuzz {

/// A file of this process, removed at exit.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& name) {
    const std::filesystem::path shm = "/dev/shm";
    path_ = (std::filesystem::is_directory(shm) ? shm : std::filesystem::temp_directory_path()) /
            ("moe_fuzz_" + std::to_string(getpid()) + "_" + name);
  }
  ~ScratchFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  const std::filesystem::path& path() const { return path_; }

  /// Replaces the file's contents with `bytes`.
  const std::filesystem::path& write(std::string_view bytes) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) std::abort();  // the machine's fault, not the reader's
    return path_;
  }

 private:
  std::filesystem::path path_;
};

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Runs `read`; a moe::Error is the reader refusing the input, which is fine.
template <class Read>
void refusals_allowed(Read&& read) {
  try {
    read();
  } catch (const moe::Error&) {
  }
}

/// A property of what a reader accepted that does not hold: a finding, as a crash is.
inline void require(bool property) {
  if (!property) std::abort();
}

}  // namespace moe::fuzz
