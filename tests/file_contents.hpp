#pragma once
// Whole files as bytes, for the tests that write files, patch them and compare them.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <ios>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace moe::test {

/// The bytes of the file at `path`, in a std::string or another container that takes two char iterators
/// (std::vector<unsigned char>); fails the test if the file cannot be opened.
template <class Bytes = std::string>
Bytes read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  INFO("reading " << path.string());
  REQUIRE(in.is_open());
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Writes `bytes` to `path` as they are, replacing the file; fails the test if they cannot be written.
inline void write_bytes(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  INFO("writing " << path.string());
  REQUIRE(out.good());
}

/// The same for a vector of bytes.
template <class Byte>
  requires(sizeof(Byte) == 1)
void write_bytes(const std::filesystem::path& path, const std::vector<Byte>& bytes) {
  write_bytes(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace moe::test
