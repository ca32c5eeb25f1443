#pragma once
// Whole files in memory, gzip or raw, for the binary data readers. Needs zlib: link with -lz
// (ZLIB::ZLIB in CMake).

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/io/input_file.hpp"

namespace moe {

enum class Compression { none, gzip };

namespace detail {

/// What a format's header promises: given the first `header_bytes` bytes of the data, its whole size.
/// Gzip data are inflated no further than one byte past that, so that a small file cannot demand gigabytes
/// (deflate reaches 1032:1). Without a header, nothing is promised.
struct PromisedSize {
  std::size_t header_bytes = 0;
  std::function<std::uint64_t(const unsigned char* header)> total;
};

/// A file's contents, gunzipped if it was gzip; offsets in error messages count in `bytes`.
struct FileBytes {
  std::string path;
  std::vector<unsigned char> bytes;
  bool gzipped = false;
  bool cut = false;  // the gzip data went on past what the header promised, and were not inflated further

  /// Where an offset is: "byte 16" or, for a gzip file, "byte 16 of the gunzipped data".
  std::string at(std::size_t offset) const { return concat("byte ", offset, gzipped ? " of the gunzipped data" : ""); }
};

/// Inflates one or more concatenated gzip members (RFC 1952), as gunzip does, but no further than one byte
/// past the size `promised`; `cut` tells whether the data went on there.
inline std::vector<unsigned char> gunzip(const std::vector<unsigned char>& in, const std::string& path,
                                         const char* who, const PromisedSize& promised, bool& cut) {
  // Bytes of output allowed: unlimited until the header is in, then one past the promised size.
  std::uint64_t limit = std::numeric_limits<std::uint64_t>::max();
  bool header_read = !promised.total;
  std::vector<unsigned char> out(std::max({in.size() * 4, promised.header_bytes, std::size_t{1024}}));
  z_stream z{};
  require(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, who, ": ", path, ": zlib cannot start inflating");
  std::size_t in_used = 0, out_used = 0;
  cut = false;
  for (;;) {
    if (!header_read && out_used >= promised.header_bytes) {
      const std::uint64_t total = promised.total(out.data());
      limit = total < limit ? total + 1 : limit;
      header_read = true;
    }
    if (out_used >= limit) {
      cut = true;
      break;
    }
    if (out_used == out.size()) out.resize(out.size() * 2);
    if (out.size() > limit) out.resize(static_cast<std::size_t>(limit));
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
  out.resize(static_cast<std::size_t>(std::min<std::uint64_t>(out_used, limit)));
  return out;
}

/// Reads `path` whole; a file that starts with gzip's magic bytes 1f 8b is gunzipped, no further than one
/// byte past the size its header promises.
inline FileBytes read_file_bytes(const std::string& path, const char* who, const PromisedSize& promised = {}) {
  InputFile file = open_input_file(path, concat(who, ": ", path));
  FileBytes result;
  result.path = path;
  result.bytes.resize(static_cast<std::size_t>(file.size));
  file.stream.read(reinterpret_cast<char*>(result.bytes.data()), static_cast<std::streamsize>(file.size));
  require(static_cast<std::uint64_t>(file.stream.gcount()) == file.size, who, ": ", path, ": read error (",
          file.stream.gcount(), " of ", file.size, " bytes read)");
  if (result.bytes.size() >= 2 && result.bytes[0] == 0x1f && result.bytes[1] == 0x8b) {
    result.bytes = gunzip(result.bytes, path, who, promised, result.cut);
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
