// moe::retain_freed_memory: a large freed block stays in the process instead of going back to the kernel.

#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>

#include "moe/core/memory.hpp"

#if defined(__GLIBC__)
TEST_CASE("retain_freed_memory serves a 24 MiB block from the heap and keeps it after free", "[memory]") {
  // glibc's default would map a block this large on its own and unmap it on free (unless this process
  // already freed a larger mapped block, which raises the threshold).
  REQUIRE(moe::retain_freed_memory());
  constexpr std::size_t size = std::size_t{24} << 20;
  const std::size_t mapped_before = mallinfo2().hblkhd;
  void* block = std::malloc(size);
  REQUIRE(block != nullptr);
  std::memset(block, 1, size);
  CHECK(mallinfo2().hblkhd == mapped_before);
  std::free(block);
  CHECK(mallinfo2().fordblks >= size);
}
#else
TEST_CASE("retain_freed_memory says it did nothing without glibc", "[memory]") {
  CHECK_FALSE(moe::retain_freed_memory());
}
#endif
