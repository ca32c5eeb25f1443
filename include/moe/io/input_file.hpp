#pragma once
// Opening a file that a reader reads whole: one check, so that a missing file, a directory or an unreadable
// file is a moe::Error naming the path and why, never a std::ios_base::failure from the first read (what
// reading a directory through std::ifstream throws, without the path).

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#include "moe/core/error.hpp"

namespace moe {

struct InputFile {
  std::ifstream stream;  // binary
  std::uint64_t size = 0;
};

/// Opens the regular file `path` for binary reading. Errors read "<where>: no such file", "<where>: is a
/// directory, expected a file" or "<where>: cannot open the file (<the OS error>)", then ` (hint)` if given;
/// `where` names the reader and the path.
inline InputFile open_input_file(const std::filesystem::path& path, std::string_view where,
                                 std::string_view hint = {}) {
  namespace fs = std::filesystem;
  const auto refuse = [&](const std::string& reason) {
    detail::fail(where, ": ", reason, hint.empty() ? "" : " (", hint, hint.empty() ? "" : ")");
  };
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (status.type() == fs::file_type::not_found) refuse("no such file");
  if (status.type() == fs::file_type::none)
    refuse(detail::concat("cannot read the file's status (", error.message(), ")"));
  if (status.type() == fs::file_type::directory) refuse("is a directory, expected a file");
  if (status.type() != fs::file_type::regular) refuse("is not a regular file");  // a pipe has no size to check
  InputFile file;
  file.size = fs::file_size(path, error);
  if (error) refuse(detail::concat("cannot read the size of the file (", error.message(), ")"));
  file.stream.open(path, std::ios::binary);
  if (!file.stream.is_open()) refuse(detail::concat("cannot open the file (", std::strerror(errno), ")"));
  return file;
}

}  // namespace moe
