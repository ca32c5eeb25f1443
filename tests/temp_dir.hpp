#pragma once
// A scratch directory for tests that read and write files.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace moe::test {

/// A fresh, empty directory under the system's temporary directory, removed with everything in it when
/// the object goes. The name mixes a random number, a clock reading and a counter, and creation retries
/// until the directory did not exist before, so parallel test processes never share one.
class TempDir {
 public:
  explicit TempDir(std::string_view tag = "moe_test") {
    static std::atomic<unsigned> counter{0};
    std::random_device random;
    do {
      path_ = std::filesystem::temp_directory_path() /
              (std::string(tag) + "_" + std::to_string(random()) + "_" +
               std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + "_" +
               std::to_string(counter++));
    } while (!std::filesystem::create_directory(path_));
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  /// The path of `name` inside the directory, as a string (for APIs and messages that take strings).
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  /// The names of the entries in the directory, sorted.
  std::vector<std::string> files() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path_)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace moe::test
