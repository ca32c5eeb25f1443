#pragma once
// Whole files in memory, gzip or raw, for the binary data readers. Needs zlib: link with -lz
// (ZLIB::ZLIB in CMake).

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "moe/core/error.hpp"

namespace moe {

enum class Compression { none, gzip };

namespace detail {

/// A file's contents, gunzipped if it was gzip; offsets in error messages count in `bytes`.
struct FileBytes {
  std::string path;
  std::vector<unsigned char> bytes;
  bool gzipped = false;

  /// Where an offset is: "byte 16" or, for a gzip file, "byte 16 of the gunzipped data".
  std::string at(std::size_t offset) const { return concat("byte ", offset, gzipped ? " of the gunzipped data" : ""); }
};

/// Inflates one or more concatenated gzip members (RFC 1952), as gunzip does.
inline std::vector<unsigned char> gunzip(const std::vector<unsigned char>& in, const std::string& path,
                                         const char* who) {
  std::vector<unsigned char> out(std::max<std::size_t>(in.size() * 4, 1024));
  z_stream z{};
  require(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, who, ": ", path, ": zlib cannot start inflating");
  std::size_t in_used = 0, out_used = 0;
  for (;;) {
    if (out_used == out.size()) out.resize(out.size() * 2);
    const std::size_t in_chunk = std::min<std::size_t>(in.size() - in_used, UINT_MAX);
    const std::size_t out_chunk = std::min<std::size_t>(out.size() - out_used, UINT_MAX);
    z.next_in = const_cast<Bytef*>(in.data() + in_used);
    z.avail_in = static_cast<uInt>(in_chunk);
    z.next_out = out.data() + out_used;
    z.avail_out = static_cast<uInt>(out_chunk);
    const int status = inflate(&z, Z_NO_FLUSH);
    in_used += in_chunk - z.avail_in;
    out_used += out_chunk - z.avail_out;
    if (status == Z_STREAM_END) {
      if (in_used == in.size()) break;
      inflateReset(&z);  // another gzip member follows
      continue;
    }
    if (status == Z_OK || (status == Z_BUF_ERROR && z.avail_out == 0)) continue;
    const std::string message = z.msg != nullptr ? z.msg : "";
    inflateEnd(&z);
    if (status == Z_BUF_ERROR)
      fail(who, ": ", path, ": gzip data ends at compressed byte ", in.size(),
           " before the end of its stream (truncated file?)");
    fail(who, ": ", path, ": corrupt gzip data near compressed byte ", in_used, ": ", message);
  }
  inflateEnd(&z);
  out.resize(out_used);
  return out;
}

/// Reads `path` whole; a file that starts with gzip's magic bytes 1f 8b is gunzipped.
inline FileBytes read_file_bytes(const std::string& path, const char* who) {
  std::ifstream file(path, std::ios::binary);
  require(file.is_open(), who, ": cannot open file ", path, std::filesystem::exists(path) ? "" : " (no such file)");
  FileBytes result;
  result.path = path;
  result.bytes.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  require(!file.bad(), who, ": ", path, ": read error");
  if (result.bytes.size() >= 2 && result.bytes[0] == 0x1f && result.bytes[1] == 0x8b) {
    result.bytes = gunzip(result.bytes, path, who);
    result.gzipped = true;
  }
  return result;
}

/// Writes `bytes` to `path`, gzip-compressed (level 9) or raw.
inline void write_file_bytes(const std::string& path, const std::vector<unsigned char>& bytes, Compression compression,
                             const char* who) {
  if (compression == Compression::gzip) {
    gzFile file = gzopen(path.c_str(), "wb9");
    require(file != nullptr, who, ": cannot create file ", path);
    std::size_t written = 0;
    while (written < bytes.size()) {
      const auto chunk = static_cast<unsigned>(std::min<std::size_t>(bytes.size() - written, 1u << 30));
      if (gzwrite(file, bytes.data() + written, chunk) != static_cast<int>(chunk)) break;
      written += chunk;
    }
    const bool closed = gzclose(file) == Z_OK;
    require(written == bytes.size() && closed, who, ": ", path, ": write error");
    return;
  }
  std::ofstream file(path, std::ios::binary);
  require(file.is_open(), who, ": cannot create file ", path);
  file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  file.close();
  require(!file.fail(), who, ": ", path, ": write error");
}

/// Reads a big-endian 32-bit unsigned integer at `offset`; a file too short for it is an error that says
/// what was expected there.
inline std::uint32_t read_u32_be(const FileBytes& file, std::size_t offset, const char* who, const std::string& what) {
  require(offset + 4 <= file.bytes.size(), who, ": ", file.path, ": file ends at ", file.at(file.bytes.size()),
          ", expected ", what, " at ", file.at(offset));
  const unsigned char* p = file.bytes.data() + offset;
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

inline void append_u32_be(std::vector<unsigned char>& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<unsigned char>(value >> shift));
}

}  // namespace detail
}  // namespace moe
