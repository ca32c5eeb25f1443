#include <catch2/catch.hpp>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/io/strict_json.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/softmax_top_k.hpp"
#include "file_contents.hpp"
#include "state_dict_fixtures.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using Catch::Contains;
using moe::Index;
using moe::MatrixX;
using moe::Shape;
using moe::VectorX;

namespace {

using moe::test::BiasMoE;
using moe::test::identical;
using moe::test::make_feed_forward;
using moe::test::make_moe;
using moe::test::ReluExpert;
using moe::test::ReluMoE;
using moe::test::SwitchMoE;

using moe::test::read_bytes;
using moe::test::TempDir;
using moe::test::write_bytes;

std::string little_endian(std::uint64_t value, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xFF);
  return out;
}

/// A safetensors file as the specification lays it out: length, header padded to 8 bytes, data.
std::string safetensors_bytes(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return little_endian(header.size(), 8) + header + data;
}

template <class S>
moe::Tensor<S> tensor(Shape shape, std::vector<S> values) {
  return {std::move(shape), Eigen::Map<const VectorX<S>>(values.data(), static_cast<Index>(values.size()))};
}

/// A valid file with two F32 tensors a [2] and b [3], for the tests that break one thing in it.
std::string header_with(const std::string& a, const std::string& b) {
  return R"({"a":{"dtype":"F32","shape":[2],"data_offsets":)" + a +
         R"(},"b":{"dtype":"F32","shape":[3],"data_offsets":)" + b + "}}";
}

}  // namespace

TEST_CASE("save_safetensors writes the layout of the specification", "[io][safetensors]") {
  TempDir dir;
  const fs::path path = dir / "small.safetensors";
  moe::StateDict<float> dict;
  dict["b.weight"] = tensor<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  dict["a.bias"] = tensor<float>({2}, {-1.5f, 0.25f});
  moe::save_safetensors(path, dict, {{"format", "pt"}});

  const std::string bytes = read_bytes(path);
  REQUIRE(bytes.size() >= 8);
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = header_length << 8 | static_cast<unsigned char>(bytes[i]);
  CHECK(header_length % 8 == 0);
  REQUIRE(bytes.size() == 8 + header_length + 8 * 4);
  const std::string header = bytes.substr(8, header_length);
  CHECK(header.front() == '{');
  CHECK(header.find_last_not_of(' ') < header.size());
  const nlohmann::json parsed = moe::parse_json(header);
  CHECK(parsed.at("__metadata__").at("format") == "pt");
  const nlohmann::json& a = parsed.at("a.bias");
  CHECK(a.at("dtype") == "F32");
  CHECK(a.at("shape") == nlohmann::json::array({2}));
  CHECK(a.at("data_offsets") == nlohmann::json::array({0, 8}));
  CHECK(parsed.at("b.weight").at("data_offsets") == nlohmann::json::array({8, 32}));
  // The data: a.bias first (name order), little-endian.
  const std::string data = bytes.substr(8 + header_length);
  CHECK(data.substr(0, 4) == little_endian(std::bit_cast<std::uint32_t>(-1.5f), 4));
  CHECK(data.substr(28, 4) == little_endian(std::bit_cast<std::uint32_t>(6.0f), 4));
}

// The header bytes are pinned: files written by moe keep the same bytes across versions of moe (they
// are those of moe's earlier hand-written JSON writer, and the order of safetensors' reference writer).
TEST_CASE("save_safetensors writes the exact header bytes", "[io][safetensors]") {
  TempDir dir;
  const fs::path path = dir / "pinned.safetensors";
  const auto header_of = [&] {
    const std::string bytes = read_bytes(path);
    REQUIRE(bytes.size() >= 8);
    std::uint64_t length = 0;
    for (int i = 7; i >= 0; --i) length = length << 8 | static_cast<unsigned char>(bytes[i]);
    REQUIRE(bytes.size() >= 8 + length);
    return bytes.substr(0, 8 + length);
  };

  // Compact, __metadata__ first, tensors in name order, each {"dtype", "shape", "data_offsets"}; spaces
  // pad the header to a multiple of 8 bytes.
  moe::StateDict<float> dict;
  dict["b.weight"] = tensor<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  dict["a.bias"] = tensor<float>({2}, {-1.5f, 0.25f});
  moe::save_safetensors(path, dict, {{"format", "pt"}});
  CHECK(header_of() == little_endian(160, 8) +
                           R"({"__metadata__":{"format":"pt"},"a.bias":{"dtype":"F32","shape":[2],"data_offsets":)"
                           R"([0,8]},"b.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]}}       )");

  // Without metadata there is no __metadata__.
  moe::save_safetensors(path, dict);
  CHECK(header_of() == little_endian(128, 8) +
                           R"({"a.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b.weight":{"dtype":"F32",)"
                           R"("shape":[2,3],"data_offsets":[8,32]}}      )");

  // __metadata__ stays first before names that sort before it ('0' and 'Z' are below '_'); metadata in
  // key order; escapes for '"', '\', tab, newline and other control characters (\u00XX), UTF-8 as it is;
  // a scalar has shape [], an empty tensor equal offsets.
  moe::StateDict<double> tricky;
  tricky["0.weight"] = tensor<double>({1, 1}, {3.0});
  tricky["Zeta"] = tensor<double>({}, {2.0});
  tricky["caf\xC3\xA9"] = tensor<double>({1}, {1.0});
  tricky["empty"] = tensor<double>({0, 4}, {});
  const moe::Metadata metadata{{"config", R"({"d_model": 8, "path": "a\\b"})"},
                               {"note", "tab\there\nline \x01 \x1f \xC3\xA9 /"},
                               {"A", ""}};
  moe::save_safetensors(path, tricky, metadata);
  CHECK(header_of() ==
        little_endian(360, 8) +
            R"({"__metadata__":{"A":"","config":"{\"d_model\": 8, \"path\": \"a\\\\b\"}","note":"tab\there\nline )"
            R"(\u0001 \u001f )" "\xC3\xA9" R"( /"},"0.weight":{"dtype":"F64","shape":[1,1],"data_offsets":[0,8]},)"
            R"("Zeta":{"dtype":"F64","shape":[],"data_offsets":[8,16]},"caf)" "\xC3\xA9"
            R"(":{"dtype":"F64","shape":[1],"data_offsets":[16,24]},"empty":{"dtype":"F64","shape":[0,4],)"
            R"("data_offsets":[24,24]}}   )");
  const auto back = moe::load_safetensors<double>(path);
  CHECK(back.metadata == metadata);
  CHECK(identical(back.tensors, tricky));
}

TEMPLATE_TEST_CASE("save_module and load_module round-trip modules bit for bit", "[io][safetensors]", float, double) {
  using S = TestType;
  TempDir dir;
  const fs::path path = dir / "model.safetensors";
  MatrixX<S> x(16, 5);
  moe::Rng rng(3);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  SECTION("FeedForward") {
    auto source = make_feed_forward<S>(1);
    auto target = make_feed_forward<S>(2);
    moe::save_module(path, source);
    const moe::LoadReport report = moe::load_module(path, target);
    CHECK(report.loaded.size() == 4);
    CHECK(identical(moe::state_dict(target), moe::state_dict(source)));
    const MatrixX<S> expected = source.forward(x);
    CHECK(target.forward(x) == expected);
  }
  SECTION("MoE with Switch aux loss and a shared expert") {
    auto source = make_moe<SwitchMoE<S>>(1);
    auto target = make_moe<SwitchMoE<S>>(2);
    moe::save_module(path, source);
    moe::load_module(path, target);
    CHECK(identical(moe::state_dict(target), moe::state_dict(source)));
    const MatrixX<S> expected = source.forward(x);
    CHECK(target.forward(x) == expected);
  }
  SECTION("MoE with aux-loss-free biases") {
    auto source = make_moe<BiasMoE<S>>(1);
    source.forward(x);
    source.update_balancing();
    REQUIRE(source.balancer().bias().cwiseAbs().maxCoeff() > 0);
    auto target = make_moe<BiasMoE<S>>(2);
    moe::save_module(path, source);
    const auto file = moe::load_safetensors<S>(path);
    CHECK(file.tensors.at("balancer.expert_bias").shape == Shape{3});
    CHECK(file.tensors.at("experts.0.fc1.weight").shape == Shape{7, 5});
    CHECK(file.tensors.at("experts.0.fc1.bias").shape == Shape{7});
    moe::load_module(path, target);
    CHECK(target.balancer().bias() == source.balancer().bias());
    CHECK(identical(moe::state_dict(target), moe::state_dict(source)));
  }
  SECTION("special values, a scalar and an empty tensor") {
    const S inf = std::numeric_limits<S>::infinity();
    moe::StateDict<S> dict;
    dict["special"] = tensor<S>({7}, {std::numeric_limits<S>::quiet_NaN(), inf, -inf, S(-0.0),
                                      std::numeric_limits<S>::denorm_min(), std::numeric_limits<S>::max(),
                                      std::numeric_limits<S>::lowest()});
    dict["scalar"] = tensor<S>({}, {S(0.1)});
    dict["empty"] = tensor<S>({0, 3}, {});
    moe::save_safetensors(path, dict);
    CHECK(identical(moe::load_safetensors<S>(path).tensors, dict));
  }
  CHECK(dir.files() == std::vector<std::string>{"model.safetensors"});  // no temporary left behind
}

TEST_CASE("safetensors converts between F32 and F64", "[io][safetensors]") {
  TempDir dir;
  moe::StateDict<double> dict;
  dict["w"] = tensor<double>({3}, {0.1, -1.0 / 3.0, 1e300});
  moe::save_safetensors(dir / "f32.safetensors", dict, {}, moe::DType::F32);
  const auto as_float = moe::load_safetensors<float>(dir / "f32.safetensors").tensors.at("w").data;
  CHECK(as_float(0) == 0.1f);
  CHECK(as_float(1) == static_cast<float>(-1.0 / 3.0));
  CHECK(std::isinf(as_float(2)));
  CHECK(moe::load_safetensors<double>(dir / "f32.safetensors").tensors.at("w").data(0) == static_cast<double>(0.1f));

  auto ff = make_feed_forward<float>(1);
  moe::save_module(dir / "f64.safetensors", ff, {}, moe::DType::F64);
  const auto file = moe::load_safetensors<double>(dir / "f64.safetensors");
  CHECK(file.tensors.at("fc1.weight").data == moe::state_dict(ff).at("fc1.weight").data.cast<double>());
  auto back = make_feed_forward<float>(2);
  moe::load_module(dir / "f64.safetensors", back);
  CHECK(identical(moe::state_dict(back), moe::state_dict(ff)));
}

TEST_CASE("safetensors metadata round-trips", "[io][safetensors]") {
  TempDir dir;
  const moe::Metadata metadata{{"config", R"({"d_model": 5, "experts": [1, 2], "name": "moe \"test\""})"},
                               {"format", "pt"},
                               {"note", "caf\xC3\xA9\n\ttab"},
                               {"empty", ""}};
  auto ff = make_feed_forward<double>(1);
  moe::save_module(dir / "m.safetensors", ff, metadata);
  CHECK(moe::load_safetensors<double>(dir / "m.safetensors").metadata == metadata);
  moe::save_module(dir / "none.safetensors", ff);
  CHECK(moe::load_safetensors<double>(dir / "none.safetensors").metadata.empty());
  CHECK(read_bytes(dir / "none.safetensors").find("__metadata__") == std::string::npos);
}

TEST_CASE("half and bfloat16 convert exactly", "[io][safetensors]") {
  // Every half, against its definition: (-1)^s * m * 2^(e - 25) with m = 1024 + mantissa for normals.
  for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
    const std::uint32_t exponent = (bits >> 10) & 0x1F, mantissa = bits & 0x3FF;
    const float value = moe::half_to_float(static_cast<std::uint16_t>(bits));
    const bool negative = bits & 0x8000;
    if (exponent == 0x1F) {
      CHECK((mantissa == 0 ? std::isinf(value) : std::isnan(value)));
    } else {
      const float magnitude = exponent == 0
                                  ? std::ldexp(static_cast<float>(mantissa), -24)
                                  : std::ldexp(static_cast<float>(1024 + mantissa), static_cast<int>(exponent) - 25);
      if (value != (negative ? -magnitude : magnitude)) FAIL("half 0x" << std::hex << bits << " gave " << value);
    }
    if (std::signbit(value) != negative) FAIL("half 0x" << std::hex << bits << " lost its sign");
  }
  CHECK(moe::bfloat16_to_float(0x3F80) == 1.0f);
  CHECK(moe::bfloat16_to_float(0xC020) == -2.5f);
  CHECK(moe::bfloat16_to_float(0x0001) == std::ldexp(1.0f, -133));
  CHECK(std::isnan(moe::bfloat16_to_float(0xFFC1)));
}

TEST_CASE("a file in PyTorch's safetensors layout with F16 and BF16 loads", "[io][safetensors]") {
  // Laid out as the reference writer does: "__metadata__" first, tensors by decreasing alignment then name.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("c64":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},)"
      R"("b32":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]},)"
      R"("bf":{"dtype":"BF16","shape":[2,4],"data_offsets":[32,48]},)"
      R"("h16":{"dtype":"F16","shape":[10],"data_offsets":[48,68]}})";
  std::string data;
  for (const double v : {0.1, -1e300}) data += little_endian(std::bit_cast<std::uint64_t>(v), 8);
  for (const float v : {1.5f, -0.0f, 3.4028235e38f, 1e-45f}) data += little_endian(std::bit_cast<std::uint32_t>(v), 4);
  // 1, -2.5, 65280, the largest bfloat16, the smallest subnormal, inf, -inf, nan
  for (const std::uint16_t v : {0x3F80, 0xC020, 0x477F, 0x7F7F, 0x0001, 0x7F80, 0xFF80, 0x7FC0})
    data += little_endian(v, 2);
  // 1, -2.5, 65504 (the largest half), 2^-24 (the smallest subnormal), the largest subnormal,
  // 2^-14 (the smallest normal), inf, -inf, nan, -0
  for (const std::uint16_t v : {0x3C00, 0xC100, 0x7BFF, 0x0001, 0x03FF, 0x0400, 0x7C00, 0xFC00, 0x7E00, 0x8000})
    data += little_endian(v, 2);
  TempDir dir;
  write_bytes(dir / "torch.safetensors", safetensors_bytes(header, data));

  const auto check = [](const auto& file) {
    using S = typename std::remove_cvref_t<decltype(file.tensors.at("h16").data)>::Scalar;
    CHECK(file.metadata == moe::Metadata{{"format", "pt"}});
    REQUIRE(file.tensors.size() == 4);
    const auto& h = file.tensors.at("h16");
    CHECK(h.shape == Shape{10});
    CHECK(h.data(0) == S(1));
    CHECK(h.data(1) == S(-2.5));
    CHECK(h.data(2) == S(65504));
    CHECK(h.data(3) == std::ldexp(S(1), -24));
    CHECK(h.data(4) == S(1023) * std::ldexp(S(1), -24));
    CHECK(h.data(5) == std::ldexp(S(1), -14));
    CHECK(h.data(6) == std::numeric_limits<S>::infinity());
    CHECK(h.data(7) == -std::numeric_limits<S>::infinity());
    CHECK(std::isnan(h.data(8)));
    CHECK((h.data(9) == 0 && std::signbit(h.data(9))));
    const auto& bf = file.tensors.at("bf");
    CHECK(bf.shape == Shape{2, 4});
    CHECK(bf.data(0) == S(1));
    CHECK(bf.data(1) == S(-2.5));
    CHECK(bf.data(2) == S(65280));
    CHECK(bf.data(3) == S(3.38953139e38f));
    CHECK(bf.data(4) == std::ldexp(S(1), -133));
    CHECK(bf.data(5) == std::numeric_limits<S>::infinity());
    CHECK(bf.data(6) == -std::numeric_limits<S>::infinity());
    CHECK(std::isnan(bf.data(7)));
    const auto& b = file.tensors.at("b32");
    CHECK(b.shape == Shape{2, 2});
    CHECK(b.data(0) == S(1.5));
    CHECK(std::signbit(b.data(1)));
    CHECK(b.data(2) == S(3.4028235e38f));
    CHECK(b.data(3) == S(1e-45f));
    CHECK(file.tensors.at("c64").data(0) == S(0.1));
  };
  check(moe::load_safetensors<float>(dir / "torch.safetensors"));
  check(moe::load_safetensors<double>(dir / "torch.safetensors"));
  CHECK(moe::load_safetensors<double>(dir / "torch.safetensors").tensors.at("c64").data(1) == -1e300);
}

TEST_CASE("load_safetensors names the file and the tensor in every error", "[io][safetensors][errors]") {
  TempDir dir;
  const fs::path path = dir / "bad.safetensors";
  const std::string name = path.string();
  const std::string five_floats(20, '\0');
  const auto load = [&] { return moe::load_safetensors<float>(path); };

  SECTION("missing file") {
    CHECK_THROWS_WITH(load(), Contains("load_safetensors: " + name + ": no such file"));
  }
  SECTION("a directory") {
    fs::create_directory(path);
    CHECK_THROWS_MATCHES(load(), moe::Error,
                         Catch::Message("load_safetensors: " + name + ": is a directory, expected a file"));
  }
  SECTION("shorter than the header length") {
    write_bytes(path, std::string("\x10\0\0\0\0", 5));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("truncated: 5 bytes, fewer than the 8 of the header length"));
  }
  SECTION("header length past the end") {
    write_bytes(path, little_endian(1000, 8) + "{}      ");
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("truncated: the header length 1000 runs past the end of "
                                                         "the file (8 bytes follow it)"));
  }
  SECTION("header length over 100 MB") {
    write_bytes(path, little_endian(200'000'000, 8) + "{}      ");
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("header length 200000000 is over the limit of 100000000"));
  }
  SECTION("data_offsets past the end") {
    write_bytes(path, safetensors_bytes(header_with("[0,8]", "[8,20]"), five_floats.substr(0, 16)));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("truncated: tensor b: data_offsets [8, 20] run past the end "
                                                         "of the file, which holds 16 bytes of tensor data"));
  }
  SECTION("a file cut short") {
    moe::StateDict<float> dict;
    dict["w"] = tensor<float>({4}, {1, 2, 3, 4});
    moe::save_safetensors(path, dict);
    const std::string bytes = read_bytes(path);
    write_bytes(path, bytes.substr(0, bytes.size() - 1));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("truncated: tensor w"));
  }
  SECTION("header that is not JSON") {
    write_bytes(path, safetensors_bytes(R"({"a": })", ""));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("the header is not valid JSON: ") &&
                                  Contains("unexpected '}'") && Contains("at byte 6 of the header"));
  }
  SECTION("header that is not an object") {
    write_bytes(path, safetensors_bytes("[]", ""));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("the header is a JSON array, not an object"));
  }
  SECTION("unknown dtype") {
    write_bytes(path, safetensors_bytes(R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", "12345678"));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("tensor ids: unsupported dtype I64"));
  }
  SECTION("shape and offsets disagree") {
    write_bytes(path, safetensors_bytes(header_with("[0,8]", "[8,16]"), five_floats.substr(0, 16)));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("tensor b: data_offsets [8, 16] hold 8 bytes, shape [3] of "
                                                         "F32 needs 12"));
  }
  SECTION("a shape too large for 64 bits") {
    write_bytes(path, safetensors_bytes(
                          R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "1234"));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("tensor t: shape [4294967296,4294967296] has more elements "
                                                         "than a 64-bit count holds"));
  }
  SECTION("overlapping tensors") {
    write_bytes(path, safetensors_bytes(header_with("[0,8]", "[4,16]"), five_floats.substr(0, 16)));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("tensors a [0, 8] and b [4, 16] overlap"));
  }
  SECTION("a gap between tensors") {
    write_bytes(path, safetensors_bytes(header_with("[0,8]", "[12,24]"), five_floats + "1234"));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("data bytes [8, 12) before tensor b belong to no tensor"));
  }
  SECTION("bytes after the last tensor") {
    write_bytes(path, safetensors_bytes(header_with("[0,8]", "[8,20]"), five_floats + "1234"));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("the last 4 bytes of the file belong to no tensor"));
  }
  SECTION("offsets that end before they begin") {
    write_bytes(path, safetensors_bytes(header_with("[8,0]", "[8,20]"), five_floats));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("tensor a: data_offsets [8, 0] end before they begin"));
  }
  SECTION("a negative dimension") {
    write_bytes(path, safetensors_bytes(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "1234"));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("tensor t: shape must hold non-negative integers, found -1"));
  }
  SECTION("a missing field") {
    write_bytes(path, safetensors_bytes(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", "1234"));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("tensor t: needs dtype, shape and data_offsets"));
  }
  SECTION("an unknown field") {
    write_bytes(path, safetensors_bytes(
                          R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"stride":[1]}})", "1234"));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("tensor t: unknown field \"stride\""));
  }
  SECTION("the same tensor twice") {
    write_bytes(path, safetensors_bytes(header_with("[0,8]", "[8,20]").replace(2, 1, "b"), five_floats));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("duplicate key \"b\""));
  }
  SECTION("metadata that is not string to string") {
    write_bytes(path, safetensors_bytes(R"({"__metadata__":{"epochs":3}})", ""));
    CHECK_THROWS_WITH(load(), Contains(name) && Contains("__metadata__ maps strings to strings; epochs is 3"));
  }
}

TEST_CASE("save_safetensors refuses what it cannot write", "[io][safetensors][errors]") {
  TempDir dir;
  const fs::path path = dir / "out.safetensors";
  moe::StateDict<float> dict;
  dict["w"] = tensor<float>({2, 2}, {1, 2, 3, 4});
  CHECK_THROWS_WITH(moe::save_safetensors(path, dict, {}, moe::DType::F16),
                    "save_safetensors: " + path.string() + ": writes F32, F64 or BF16, not F16");
  CHECK_THROWS_WITH(moe::save_safetensors(dir / "no" / "such" / "dir.safetensors", dict),
                    Contains("dir.safetensors: cannot create the temporary file"));
  moe::StateDict<float> reserved;
  reserved["__metadata__"] = tensor<float>({1}, {1});
  CHECK_THROWS_WITH(moe::save_safetensors(path, reserved), Contains("a tensor cannot be named __metadata__"));

  // A failed save leaves the previous file as it was.
  moe::save_safetensors(path, dict);
  const std::string before = read_bytes(path);
  dict["v"] = tensor<float>({3}, {1, 2});
  CHECK_THROWS_WITH(moe::save_safetensors(path, dict),
                    "save_safetensors: " + path.string() + ": tensor v has shape [3] but holds 2 values");
  CHECK(read_bytes(path) == before);
  CHECK(dir.files() == std::vector<std::string>{"out.safetensors"});
}

TEST_CASE("load_module names the file and the tensor and leaves the module unchanged", "[io][safetensors][errors]") {
  TempDir dir;
  const fs::path path = dir / "wide.safetensors";
  auto wide = make_feed_forward<float>(1, 7);
  moe::save_module(path, wide);
  auto narrow = make_feed_forward<float>(2, 6);
  const auto before = moe::state_dict(narrow);
  CHECK_THROWS_WITH(moe::load_module(path, narrow),
                    "load_module: " + path.string() + ": tensor fc1.bias has shape [7], the module expects [6]");
  CHECK(identical(moe::state_dict(narrow), before));
}

TEST_CASE("load_module loads a pretrained network's first layer into one expert", "[io][safetensors][partial]") {
  TempDir dir;
  moe::Rng rng(5);
  ReluExpert pretrained(12, {.hidden = 6, .out_features = 4}, rng);
  moe::save_module(dir / "mlp.safetensors", pretrained, {{"task", "mnist"}});
  ReluMoE layer({.d_model = 12, .num_experts = 3, .expert = {.hidden = 6, .out_features = 4}}, rng);
  const auto before = moe::state_dict(layer);
  const auto report = moe::load_module(dir / "mlp.safetensors", layer,
                                       {.strict = false, .prefix_map = {{"", "experts.0."}}, .only = {"fc1.*"}});
  CHECK(report.loaded == std::vector<std::string>{"experts.0.fc1.weight", "experts.0.fc1.bias"});
  CHECK(report.skipped == std::vector<std::string>{"fc2.bias", "fc2.weight"});
  const auto after = moe::state_dict(layer);
  CHECK(after.at("experts.0.fc1.weight").data == moe::state_dict(pretrained).at("fc1.weight").data);
  for (const auto& [name, t] : after)
    if (!name.starts_with("experts.0.fc1.")) CHECK(t.data == before.at(name).data);
}

TEST_CASE("save_safetensors refuses names and metadata that are not UTF-8", "[io][safetensors][errors]") {
  TempDir dir;
  const fs::path path = dir / "out.safetensors";
  moe::StateDict<float> dict;
  dict["w"] = tensor<float>({1}, {1});
  CHECK_THROWS_WITH(moe::save_safetensors(path, dict, {{"note", "caf\xE9"}}),
                    Contains("save_safetensors: " + path.string() + ": incomplete UTF-8 string") &&
                        Contains("(names and metadata must be UTF-8)"));
  dict["\xFF"] = tensor<float>({1}, {2});
  CHECK_THROWS_AS(moe::save_safetensors(path, dict), moe::Error);
  CHECK_FALSE(fs::exists(path));
}

// moe::parse_json (moe/io/strict_json.hpp), which reads the safetensors header: nlohmann/json's strict
// parser, with keys given twice refused and errors as moe::JsonError.
TEST_CASE("parse_json refuses a key given twice in one object", "[io][json][errors]") {
  CHECK_THROWS_WITH(moe::parse_json(R"({"a": 1, "a": 2})"), "duplicate key \"a\"");
  CHECK_THROWS_WITH(moe::parse_json(R"({"x": {"a": 1, "b": [], "a": 2}})"), "duplicate key \"a\"");
  CHECK_THROWS_AS(moe::parse_json(R"({"\u0061": 1, "a": 2})"), moe::JsonError);  // the same key, escaped
  CHECK(moe::parse_json(R"({"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]})").at("b").size() == 2);
  // ordered_json keeps the document's order; nlohmann::json sorts the keys.
  CHECK(moe::parse_json<nlohmann::ordered_json>(R"({"b": 1, "a": 2})").begin().key() == "b");
  CHECK(moe::parse_json(R"({"b": 1, "a": 2})").begin().key() == "a");
}

TEST_CASE("parse_json gives a moe::Error with the byte offset for invalid documents", "[io][json][errors]") {
  const auto offset = [](const std::string& text) -> std::optional<std::size_t> {
    try {
      (void)moe::parse_json(text);
    } catch (const moe::JsonError& e) {
      return e.offset();
    }
    FAIL("parse_json accepted " << text);
    return std::nullopt;
  };
  CHECK(offset("[1, 2,]") == 6);
  CHECK(offset(R"({"a": 1,})") == 8);
  CHECK(offset(R"({"a" 1})") == 5);
  CHECK(offset("{} x") == 3);
  CHECK(offset("") == 0);
  CHECK(offset("\"abc") == 4);                // unterminated: the end of the input
  CHECK(offset("[\"a\nb\"]") == 3);           // a raw control character in a string
  CHECK(offset("\"\xC0\xAF\"") == 1);          // overlong UTF-8
  CHECK(offset("\"\xED\xA0\x80\"").has_value());  // a UTF-8 surrogate
  CHECK(offset(R"("\ude00")").has_value());      // a lone low surrogate
  CHECK(offset("01").has_value());               // leading zero
  CHECK(offset("NaN").has_value());
  CHECK(offset("[tru]").has_value());
  CHECK(offset("// c\n1").has_value());          // no comments
  CHECK_THROWS_AS(moe::parse_json("[1, 2,]"), moe::Error);
  CHECK_THROWS_WITH(moe::parse_json("[1, 2,]"), "syntax error while parsing value - unexpected ']'; expected '[', "
                                                "'{', or a literal at byte 6");
  // What parses: every escape, surrogate pairs, raw UTF-8, integers of 64 bits.
  CHECK(moe::parse_json(R"("\"\\\/\b\f\n\r\t\u0041\u00e9\ud83d\ude00")") == "\"\\/\b\f\n\r\tA\xC3\xA9\xF0\x9F\x98\x80");
  CHECK(moe::parse_json("[18446744073709551615, -9223372036854775808]") ==
        nlohmann::json::array({std::numeric_limits<std::uint64_t>::max(), std::numeric_limits<std::int64_t>::min()}));
  // Text for messages never throws, even for bytes that are not UTF-8.
  CHECK(moe::detail::json_quote("a\"b\xFF") == "\"a\\\"b\xEF\xBF\xBD\"");
}
