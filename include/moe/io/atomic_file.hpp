#pragma once
// Writing a file so that a crash or a failed write leaves the old file or the new one, never a part.

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#if __has_include(<fcntl.h>) && __has_include(<unistd.h>)
#include <fcntl.h>
#include <unistd.h>
#endif

#include "moe/core/error.hpp"

namespace moe::detail {

/// Pushes a file's blocks, or a directory's entries, to the disk where the system offers a way.
inline bool sync_to_disk([[maybe_unused]] const std::filesystem::path& path, [[maybe_unused]] bool directory) {
#if __has_include(<fcntl.h>) && __has_include(<unistd.h>)
  const int fd = ::open(path.c_str(), directory ? O_RDONLY : O_WRONLY);
  if (fd < 0) return false;
  const bool synced = ::fsync(fd) == 0;
  return ::close(fd) == 0 && synced;
#else
  return true;
#endif
}

/// The reason errno gives for the last failed system call ("unknown error" when it gives none).
inline std::string os_error() { return errno != 0 ? std::strerror(errno) : "unknown error"; }

/// The name of a temporary file of `path`: ".<file name>.tmp<number>" in the same directory.
inline std::string temporary_file_prefix(const std::filesystem::path& path) {
  // Appended piece by piece: `"." + std::string&&` trips GCC 12's -Wrestrict false positive (GCC bug 105329).
  std::string prefix = ".";
  prefix += path.filename().string();
  prefix += ".tmp";
  return prefix;
}

/// Removes the temporary files of `path` that writers killed before their rename left behind (a SIGKILL
/// cannot be cleaned up after), so that a finished write leaves `path` alone in its directory.
inline void remove_stale_temporary_files(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  const std::string prefix = temporary_file_prefix(path);
  const fs::path directory = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code error;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(directory, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (name.size() > prefix.size() && name.starts_with(prefix) &&
        std::all_of(name.begin() + static_cast<std::ptrdiff_t>(prefix.size()), name.end(),
                    [](char c) { return c >= '0' && c <= '9'; }))
      stale.push_back(it->path());
  }
  for (const fs::path& file : stale) fs::remove(file, error);
}

}  // namespace moe::detail

namespace moe {

/// Calls write(std::ostream&) on a uniquely named temporary file beside `path`, syncs it and renames it
/// over `path`. On failure the temporary file is removed, `path` is left as it was, and the moe::Error
/// starts with `context`. On success the temporary files of `path` that killed writers left are removed
/// too; so two processes must not write one path at the same time (the rename of one would fail).
template <class Write>
void write_file_atomically(const std::filesystem::path& path, const std::string& context, Write&& write) {
  namespace fs = std::filesystem;
  std::random_device random;
  std::string name = detail::temporary_file_prefix(path);
  name += std::to_string(random());
  const fs::path temporary = path.parent_path() / name;
  bool created = false;
  const auto remove_temporary = [&] {
    std::error_code ignored;
    if (created) fs::remove(temporary, ignored);
  };
  try {
    {
      errno = 0;  // what the failing call sets names the reason: "No space left on device"
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      detail::require(out.is_open(), context, ": cannot create the temporary file ", temporary.string(), ": ", detail::os_error());
      created = true;
      write(static_cast<std::ostream&>(out));
      out.close();
      detail::require(!out.fail(), context, ": writing ", temporary.string(), " failed: ", detail::os_error());
    }
    detail::require(detail::sync_to_disk(temporary, false), context, ": cannot sync ", temporary.string(), " to the disk");
    std::error_code error;
    fs::rename(temporary, path, error);
    detail::require(!error, context, ": cannot rename ", temporary.string(), " to ", path.string(), ": ", error.message());
  } catch (const Error&) {
    remove_temporary();
    throw;
  } catch (const std::exception& e) {  // a serialiser's own exception, such as cereal's on a failed write
    const std::string reason = detail::os_error();
    remove_temporary();
    detail::fail(context, ": writing ", temporary.string(), " failed: ", e.what(), " (", reason, ")");
  }
  detail::remove_stale_temporary_files(path);
  // Not every file system syncs directories; the rename is done either way.
  detail::sync_to_disk(path.has_parent_path() ? path.parent_path() : fs::path("."), true);
}

}  // namespace moe
