// Bad files found by probing the readers (issue 18), each refused with a moe::Error that names the file and
// what was wrong, before anything of the size it claims is allocated. Where the platform allows it, a
// forked child runs the read with its address space limited to 64 MiB more than it already holds: a
// reader that allocated what the file claims would die of std::bad_alloc there. AddressSanitizer reserves
// terabytes of address space, so under it the reads run without the limit.
#include <catch2/catch.hpp>

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#if __has_include(<sys/resource.h>) && __has_include(<sys/wait.h>) && __has_include(<unistd.h>)
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#define MOE_TEST_ADDRESS_LIMIT 1
#endif

#include "moe/core/error.hpp"
#include "moe/core/random.hpp"
#include "moe/data/cifar10.hpp"
#include "moe/data/idx.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/nn/linear.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/train/checkpoint.hpp"
#include "file_contents.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using moe::test::read_bytes;
using moe::test::TempDir;
using moe::test::write_bytes;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool address_sanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool address_sanitizer = true;
#else
constexpr bool address_sanitizer = false;
#endif
#else
constexpr bool address_sanitizer = false;
#endif

/// `value`'s bytes, little-endian, as the portable binary archive stores them on this machine.
template <class T>
std::string bytes_of(T value) {
  static_assert(std::endian::native == std::endian::little, "these tests patch little-endian files");
  std::string bytes(sizeof(T), '\0');
  std::memcpy(bytes.data(), &value, sizeof(T));
  return bytes;
}

/// `text` with its only occurrence of `from` replaced by `to`.
std::string patched(std::string text, const std::string& from, const std::string& to) {
  const std::size_t at = text.find(from);
  REQUIRE(at != std::string::npos);
  REQUIRE(text.find(from, at + 1) == std::string::npos);
  return text.replace(at, from.size(), to);
}

/// The message of the moe::Error that `load` throws: run in a child whose address space may grow by no
/// more than 64 MiB, where the platform allows it and no sanitizer is in the way. "" if it throws none.
std::string error_within_64_mib(const std::function<void()>& load) {
  const auto message_of = [&]() -> std::string {
    try {
      load();
    } catch (const moe::Error& e) {
      return e.what();
    }
    return "";
  };
#ifdef MOE_TEST_ADDRESS_LIMIT
  if (address_sanitizer) return message_of();
  int pipe_ends[2];
  REQUIRE(pipe(pipe_ends) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(pipe_ends[0]);
    std::uint64_t held_kib = 0;
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.starts_with("VmSize:")) held_kib = std::stoull(line.substr(7));
    if (held_kib == 0) _exit(3);
    const rlimit limit{(held_kib << 10) + (std::uint64_t{64} << 20), RLIM_INFINITY};
    if (setrlimit(RLIMIT_AS, &limit) != 0) _exit(3);
    int code = 0;
    std::string message;
    try {
      message = message_of();
    } catch (const std::bad_alloc&) {
      code = 2;
    }
    if (write(pipe_ends[1], message.data(), message.size()) != static_cast<ssize_t>(message.size())) code = 3;
    _exit(code);
  }
  close(pipe_ends[1]);
  std::string message;
  char buffer[4096];
  for (ssize_t got; (got = read(pipe_ends[0], buffer, sizeof buffer)) > 0;) message.append(buffer, got);
  close(pipe_ends[0]);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  INFO("exit code 2: std::bad_alloc within the 64 MiB limit");
  REQUIRE(WEXITSTATUS(status) == 0);
  return message;
#else
  return message_of();
#endif
}

/// A small model, an optimizer that has taken one step and a checkpoint of them in `format`.
struct CheckpointFixture {
  moe::Rng rng{7};
  moe::Linear<float> model{2, 3, rng};
  moe::SGD<float> sgd{model.named_parameters(), {.lr = 0.25, .momentum = 0.5}};
  moe::Adam<float> adam{model.named_parameters(), {.lr = 0.125}};

  CheckpointFixture() {
    sgd.step();
    adam.step();
  }

  template <class Opt>
  std::string save(const fs::path& path, Opt& optimizer, moe::CheckpointFormat format) {
    moe::save_checkpoint(path, {.epoch = 2, .step = 7}, model, optimizer, rng, format);
    return read_bytes(path);
  }

  template <class Opt>
  std::string load_error(const fs::path& path, Opt& optimizer) {
    return error_within_64_mib([&] { moe::load_checkpoint(path, model, optimizer, rng); });
  }
};

}  // namespace

TEST_CASE("A checkpoint's lengths are checked against the file before anything is allocated",
          "[bad_input][checkpoint]") {
  TempDir dir;
  CheckpointFixture f;
  const fs::path path = dir / "run.ck";
  const std::string saved = f.save(path, f.sgd, moe::CheckpointFormat::Binary);
  const float first_weight = f.model.named_parameters()[0].parameter->value(0, 0);

  SECTION("2^40 floats in a file of a few hundred bytes") {
    write_bytes(path, patched(saved, bytes_of<std::uint64_t>(6) + bytes_of(first_weight),
                              bytes_of<std::uint64_t>(std::uint64_t{1} << 40) + bytes_of(first_weight)));
    CHECK_THAT(f.load_error(path, f.sgd), Contains(path.string()) &&
                                              Contains("model.value.values: a length of 1099511627776, but only") &&
                                              Contains("bytes are left in the file"));
  }
  SECTION("a string of 5 GiB") {
    write_bytes(path, patched(saved, bytes_of<std::uint64_t>(3) + "F32",
                              bytes_of<std::uint64_t>(std::uint64_t{5} << 30) + "F32"));
    CHECK_THAT(f.load_error(path, f.sgd), Contains("header.dtype: a length of 5368709120"));
  }
  SECTION("the trainer's state: 2^40 sample indices") {
    moe::TrainerState state;
    state.dataset_size = 4;
    state.order = {3, 1, 0, 2};
    std::ostringstream out;
    {
      cereal::PortableBinaryOutputArchive archive(out);
      archive(std::string(moe::detail::trainer_state_magic), state);
    }
    const fs::path state_path = dir / "run.ck.trainer";
    write_bytes(state_path, patched(out.str(), bytes_of<std::uint64_t>(4) + bytes_of<moe::Index>(3),
                                    bytes_of<std::uint64_t>(std::uint64_t{1} << 40) + bytes_of<moe::Index>(3)));
    CHECK_THAT(error_within_64_mib([&] { moe::detail::read_trainer_state(state_path); }),
               Contains(state_path.string()) && Contains("a length of 1099511627776"));
  }
}

TEST_CASE("A JSON checkpoint nested a million levels deep is refused, not a stack overflow",
          "[bad_input][checkpoint]") {
  TempDir dir;
  CheckpointFixture f;
  const fs::path path = dir / "deep.json";
  write_bytes(path, "{" + std::string(1'000'000, '['));
  CHECK_THAT(f.load_error(path, f.sgd), Contains(path.string()) && Contains("JSON nested deeper than 64 levels"));
  // Brackets and digits inside strings do not count.
  CHECK_NOTHROW(moe::detail::check_checkpoint_json(R"({"a": "[[[[\"[[[[", "b": "0.)" + std::string(100, '0') + "\"}"));
}

TEST_CASE("A JSON checkpoint's numbers unlike the writer's are refused before RapidJSON parses them",
          "[bad_input][checkpoint]") {
  TempDir dir;
  CheckpointFixture f;
  const fs::path path = dir / "run.json";
  const std::string saved = f.save(path, f.sgd, moe::CheckpointFormat::JSON);
  const std::size_t key = saved.find("\"lr\": 0.25");
  REQUIRE(key != std::string::npos);
  const std::size_t lr = key + 6;
  // Each passes zero to clz or overflows an int in RapidJSON's full-precision conversion (found by fuzz_checkpoint).
  for (const std::string& number : {"0." + std::string(23, '0'), std::string("0e-300"), std::string("0.0e5"),
                                   "1" + std::string(1000, '0')}) {
    INFO(number.substr(0, 30));
    write_bytes(path, saved.substr(0, lr) + number + saved.substr(lr + 4));
    CHECK_THAT(f.load_error(path, f.sgd), Contains(path.string()) && Contains(" at byte " + std::to_string(lr)) &&
                                              Contains("is not one a checkpoint holds"));
  }
}

TEST_CASE("The longest numbers the JSON writer produces load back bit for bit", "[checkpoint]") {
  TempDir dir;
  moe::Rng rng(3);
  moe::Linear<double> model(2, 3, rng);
  moe::SGD<double> sgd(model.named_parameters());
  auto& weight = model.named_parameters()[0].parameter->value;
  weight << -1.2345678901234567e-308, -0.0000012345678901234567, -std::numeric_limits<double>::max(),
      -std::numeric_limits<double>::denorm_min(), -0.0, -1.0 / 3.0;
  const moe::MatrixX<double> saved = weight;
  const fs::path path = dir / "extremes.json";
  moe::save_checkpoint(path, {}, model, sgd, rng, moe::CheckpointFormat::JSON);
  weight.setZero();
  moe::load_checkpoint(path, model, sgd, rng);
  CHECK(weight == saved);
}

TEST_CASE("A checkpoint's values are checked: bools, counts, options and unique names", "[bad_input][checkpoint]") {
  TempDir dir;
  CheckpointFixture f;
  const fs::path path = dir / "run.ck";

  SECTION("a bool stored as byte 2") {
    // SGD's options: lr, momentum, dampening, weight_decay, then the bool nesterov.
    const std::string options = bytes_of(0.25) + bytes_of(0.5) + bytes_of(0.0) + bytes_of(0.0);
    write_bytes(path, patched(f.save(path, f.sgd, moe::CheckpointFormat::Binary), options + '\0', options + '\2'));
    CHECK_THAT(f.load_error(path, f.sgd),
               Contains(path.string()) && Contains("optimizer.nesterov: a bool stored as byte 2, expected 0 or 1"));
  }
  SECTION("an infinite learning rate") {
    write_bytes(path, patched(f.save(path, f.adam, moe::CheckpointFormat::Binary), bytes_of(0.125),
                              bytes_of(std::numeric_limits<double>::infinity())));
    CHECK_THAT(f.load_error(path, f.adam), Contains("Adam: lr must be finite and non-negative, got inf"));
  }
  SECTION("a negative Adam step, epoch or step") {
    const std::string json = f.save(path, f.adam, moe::CheckpointFormat::JSON);
    const std::size_t optimizer = json.find("\"optimizer\"");
    REQUIRE(optimizer != std::string::npos);
    std::string negative_step = json;
    negative_step.replace(json.find("\"step\": 1", optimizer), 9, "\"step\": -1");
    write_bytes(path, negative_step);
    CHECK_THAT(f.load_error(path, f.adam), Contains("optimizer.step is -1, expected a count >= 0"));
    write_bytes(path, patched(json, "\"epoch\": 2", "\"epoch\": -2"));
    CHECK_THAT(f.load_error(path, f.adam), Contains("header.progress.epoch is -2, expected a count >= 0"));
    write_bytes(path, patched(json, "\"step\": 7", "\"step\": -7"));
    CHECK_THAT(f.load_error(path, f.adam), Contains("header.progress.step is -7, expected a count >= 0"));
  }
  SECTION("two tensors of one name") {
    const std::string json = f.save(path, f.sgd, moe::CheckpointFormat::JSON);
    const std::size_t weight = json.find("\"key\": \"weight\"");
    REQUIRE(weight != std::string::npos);
    std::string twice = json;
    twice.replace(weight, 15, "\"key\": \"bias\"");
    write_bytes(path, twice);
    CHECK_THAT(f.load_error(path, f.sgd), Contains(path.string()) && Contains("model holds two entries named 'bias'"));
  }
}

TEST_CASE("IDX: rows x columns that overflow and gzip data past what the header promises are refused",
          "[bad_input][idx]") {
  TempDir dir;
  const auto header = [](std::vector<std::uint32_t> words) {
    std::vector<unsigned char> bytes;
    for (const std::uint32_t word : words) moe::detail::append_u32_be(bytes, word);
    return std::string(bytes.begin(), bytes.end());
  };
  const std::string images = dir.file("images.idx");

  SECTION("zero images of 0xFFFFFFFF x 0xFFFFFFFF") {
    write_bytes(images, header({0x803, 0, 0xFFFFFFFF, 0xFFFFFFFF}));
    CHECK_THROWS_WITH(moe::read_idx_images(images),
                      Contains(images) && Contains("images of 4294967295x4294967295 pixels are more than a 64-bit "
                                                   "count holds"));
  }
  SECTION("a gzip file that promises one pixel and inflates to 128 MiB") {
    gzFile file = gzopen(images.c_str(), "wb9");
    REQUIRE(file != nullptr);
    const std::string start = header({0x803, 1, 1, 1}) + '\x7f';
    gzwrite(file, start.data(), static_cast<unsigned>(start.size()));
    const std::vector<char> zeros(1 << 20, 0);
    for (int i = 0; i < 128; ++i) gzwrite(file, zeros.data(), static_cast<unsigned>(zeros.size()));
    REQUIRE(gzclose(file) == Z_OK);
    CHECK(fs::file_size(images) < (std::uintmax_t{1} << 20));
    CHECK_THAT(error_within_64_mib([&] { moe::read_idx_images(images); }),
               Contains(images) && Contains("the gzip data go on after 1 images of 1x1 pixels at byte 17 of the "
                                            "gunzipped data, expected the end of the file (not inflated further)"));
  }
  SECTION("a gzip file that promises what it holds still reads") {
    const moe::MatrixX<float> pixels = moe::MatrixX<float>::Constant(3, 4, 1.0f);
    moe::write_idx_images(images, pixels, 2, 2, moe::Compression::gzip);
    CHECK(moe::read_idx_images(images).pixels == pixels);
  }
}

TEST_CASE("safetensors: a shape with a 0 whose other dimensions overflow is refused", "[bad_input][safetensors]") {
  TempDir dir;
  const fs::path path = dir / "zero.safetensors";
  std::string header = R"({"t":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  write_bytes(path, bytes_of<std::uint64_t>(header.size()) + header);
  CHECK_THROWS_WITH(moe::load_safetensors<float>(path),
                    Contains(path.string()) && Contains("tensor t: shape [0,4294967296,4294967296] has more elements "
                                                        "than a 64-bit count holds"));
  const moe::Index big = moe::Index{1} << 32;
  // Writing such a shape back multiplied it out in a signed integer.
  moe::StateDict<float> tensors{{"t", {{0, big, big}, {}}}};
  CHECK_THROWS_WITH(moe::save_safetensors(dir / "out.safetensors", tensors),
                    Contains("out.safetensors: tensor t: shape [0, 4294967296, 4294967296] has more elements than a "
                             "64-bit count holds"));
  CHECK_THROWS_WITH(moe::numel({0, big, big}), Contains("has more elements than a 64-bit count holds"));
  CHECK_THROWS_WITH(moe::numel({2, -1}), Contains("shape [2, -1] has a negative dimension"));
  CHECK(moe::numel({0, big}) == 0);
  CHECK(moe::numel({}) == 1);
}

TEST_CASE("A safetensors header nested a million levels deep is refused, not a stack overflow",
          "[bad_input][safetensors]") {
  // nlohmann/json parses without recursion but writes recursively: the error message quoting the tensor's
  // entry overflowed the stack.
  TempDir dir;
  const fs::path path = dir / "deep.safetensors";
  std::string header = R"({"t":)" + std::string(1'000'000, '[') + std::string(1'000'000, ']') + "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  write_bytes(path, bytes_of<std::uint64_t>(header.size()) + header);
  CHECK_THROWS_WITH(moe::load_safetensors<float>(path),
                    Contains(path.string()) && Contains("the header is not valid JSON: arrays and objects nested "
                                                        "deeper than 64 levels"));
  CHECK_NOTHROW(moe::parse_json(std::string(64, '[') + std::string(64, ']')));
  CHECK_THROWS_AS(moe::parse_json(std::string(65, '[') + std::string(65, ']')), moe::JsonError);
}

TEST_CASE("A directory passed as a file is a moe::Error naming it", "[bad_input][errors]") {
  TempDir dir;
  const std::string folder = dir.file("folder");
  fs::create_directory(folder);
  const auto is_directory = [&](const std::string& who) {
    return Catch::Message(who + ": " + folder + ": is a directory, expected a file");
  };
  CHECK_THROWS_MATCHES(moe::read_idx_images(folder), moe::Error, is_directory("read_idx_images"));
  CHECK_THROWS_MATCHES(moe::read_idx_labels(folder), moe::Error, is_directory("read_idx_labels"));
  CHECK_THROWS_MATCHES(moe::read_cifar10_batches({folder}), moe::Error, is_directory("read_cifar10"));
  CheckpointFixture f;
  CHECK_THROWS_MATCHES(moe::load_checkpoint(folder, f.model, f.sgd, f.rng), moe::Error,
                       Catch::Message("load_checkpoint: '" + folder + "': is a directory, expected a file"));
}

#ifdef MOE_TEST_ADDRESS_LIMIT
TEST_CASE("A writer killed at any point leaves the old file or the new one, whole", "[bad_input][atomic]") {
  // A child saves two versions in turn over one path, a checkpoint and a safetensors file, until SIGKILL
  // stops it at a random moment; the file under the final name is then always one of the two versions,
  // byte for byte, and loads.
  TempDir dir;
  CheckpointFixture f;
  const fs::path checkpoint = dir / "run.ck", tensors = dir / "model.safetensors";
  const auto save_version = [&](int version) {
    f.model.named_parameters()[0].parameter->value(0, 0) = static_cast<float>(version);
    moe::save_checkpoint(checkpoint, {.epoch = version, .step = version}, f.model, f.adam, f.rng);
    moe::save_module(tensors, f.model, {{"version", std::to_string(version)}});
  };
  std::vector<std::string> versions_of_checkpoint, versions_of_tensors;
  for (int version = 0; version < 2; ++version) {
    save_version(version);
    versions_of_checkpoint.push_back(read_bytes(checkpoint));
    versions_of_tensors.push_back(read_bytes(tensors));
  }
  std::mt19937 random(18);
  for (int trial = 0; trial < 24; ++trial) {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      for (int version = 0;; version = 1 - version) save_version(version);
    }
    usleep(static_cast<useconds_t>(random() % 20'000));
    kill(child, SIGKILL);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    const std::string saved = read_bytes(checkpoint), saved_tensors = read_bytes(tensors);
    CHECK((saved == versions_of_checkpoint[0] || saved == versions_of_checkpoint[1]));
    CHECK((saved_tensors == versions_of_tensors[0] || saved_tensors == versions_of_tensors[1]));
    CHECK_NOTHROW(moe::load_checkpoint(checkpoint, f.model, f.adam, f.rng));
    CHECK_NOTHROW(moe::load_safetensors<float>(tensors));
  }
  // A killed writer leaves at most its temporary files (named .<name>.tmp<random>), never a second file
  // under a name a reader would take; the next finished write of a file removes them.
  const auto names = [&] {
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(dir.path())) found.push_back(entry.path().filename().string());
    std::sort(found.begin(), found.end());
    return found;
  };
  for (const std::string& name : names())
    CHECK((name == "run.ck" || name == "model.safetensors" || name.starts_with(".run.ck.tmp") ||
           name.starts_with(".model.safetensors.tmp")));
  save_version(0);
  CHECK(names() == std::vector<std::string>{"model.safetensors", "run.ck"});
}
#endif
