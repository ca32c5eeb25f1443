// The models of examples/pretrained_digit_expert: the MLP expert's PyTorch names, the dense mixture, and
// the partial load that puts a pretrained expert's input and hidden layers into expert 0 only.

#include <catch2/catch.hpp>

#include <filesystem>
#include <random>
#include <set>
#include <string>

#include "moe/io/safetensors.hpp"
#include "moe/io/state_dict.hpp"
#include "pretrained_digit_expert/digit_mixture.hpp"

namespace fs = std::filesystem;
using moe::examples::DigitExpert;
using moe::examples::DigitMixture;

namespace {

/// A fresh file name under the system's temporary directory, removed when the test ends.
class TemporaryFile {
 public:
  explicit TemporaryFile(const std::string& suffix) {
    std::random_device device;
    path_ = fs::temp_directory_path() / ("moe_digit_expert_" + std::to_string(device()) + suffix);
  }
  ~TemporaryFile() {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

bool is_pretrained_body(const std::string& name) {
  return name.starts_with("experts.0.net.0.") || name.starts_with("experts.0.net.3.");
}

}  // namespace

static_assert(moe::Expert<DigitExpert<float>>);

TEST_CASE("DigitExpert is the document's 784-128-128-out MLP with torch.nn.Sequential names", "[digit_expert]") {
  moe::Rng rng(1);
  DigitExpert<float> expert(784, {.out_features = 2}, rng);
  CHECK(expert.out_features() == 2);
  std::vector<std::string> names;
  std::vector<moe::Shape> shapes;
  for (const auto& p : expert.named_parameters()) {
    names.push_back(p.name);
    shapes.push_back(p.parameter->shape);
  }
  CHECK(names == std::vector<std::string>{"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias", "net.6.weight",
                                          "net.6.bias"});
  CHECK(shapes == std::vector<moe::Shape>{{128, 784}, {128}, {128, 128}, {128}, {2, 128}, {2}});

  SECTION("dropout is on in training and off in evaluation") {
    moe::Matrix x = moe::Matrix::Ones(4, 784);
    expert.train(false);
    const moe::Matrix first = expert.forward(x);
    CHECK(expert.forward(x).isApprox(first));
    expert.train(true);
    CHECK_FALSE(expert.forward(x).isApprox(first));
  }
}

TEST_CASE("DigitMixture sends every image to all four experts", "[digit_expert]") {
  moe::Rng rng(2);
  DigitMixture mixture(moe::examples::digit_mixture_options(), rng);
  mixture.eval();
  moe::Matrix x(6, 784);
  moe::fill_uniform(x, rng, -1.0, 1.0);
  const moe::Matrix& y = mixture.forward(x);
  CHECK(y.rows() == 6);
  CHECK(y.cols() == 10);
  CHECK((mixture.batch_load().array() == 6).all());
  const moe::Matrix& gates = *mixture.routing().scores;
  CHECK(gates.cols() == 4);
  CHECK(gates.rowwise().sum().isApprox(moe::Matrix::Ones(6, 1)));
}

TEST_CASE("The pretrained expert's input and hidden layers land in experts.0 and nothing else changes",
          "[digit_expert][state_dict]") {
  moe::Rng pretrain_rng(3);
  DigitExpert<float> pretrained(784, {.out_features = 2}, pretrain_rng);
  TemporaryFile file(".safetensors");
  moe::save_module(file.path(), pretrained);
  const moe::StateDict<float> source = moe::state_dict(pretrained);

  moe::Rng rng(4);
  DigitMixture mixture(moe::examples::digit_mixture_options(), rng);
  const moe::StateDict<float> before = moe::state_dict(mixture);

  const moe::LoadReport report = moe::examples::load_pretrained_body(mixture, file.path());
  CHECK(std::set<std::string>(report.loaded.begin(), report.loaded.end()) ==
        std::set<std::string>{"experts.0.net.0.weight", "experts.0.net.0.bias", "experts.0.net.3.weight",
                              "experts.0.net.3.bias"});
  CHECK(std::set<std::string>(report.skipped.begin(), report.skipped.end()) ==
        std::set<std::string>{"net.6.weight", "net.6.bias"});

  const moe::StateDict<float> after = moe::state_dict(mixture);
  REQUIRE(after.size() == before.size());
  int copied = 0, untouched = 0;
  for (const auto& [name, tensor] : after) {
    INFO(name);
    if (is_pretrained_body(name)) {
      const auto& expected = source.at(name.substr(std::string("experts.0.").size()));
      CHECK(tensor.shape == expected.shape);
      CHECK(tensor.data == expected.data);
      CHECK(tensor.data != before.at(name).data);  // the load did change something
      ++copied;
    } else {
      CHECK(tensor.shape == before.at(name).shape);
      CHECK(tensor.data == before.at(name).data);  // router, experts 1-3 and expert 0's output layer
      ++untouched;
    }
  }
  CHECK(copied == 4);
  CHECK(untouched == static_cast<int>(after.size()) - 4);
  CHECK(after.contains("router.net.0.weight"));
  CHECK(after.at("experts.0.net.6.weight").shape == moe::Shape{10, 128});
}

TEST_CASE("load_pretrained_body rejects a file that is not a matching expert and leaves the mixture alone",
          "[digit_expert][state_dict][errors]") {
  moe::Rng rng(5);
  DigitMixture mixture(moe::examples::digit_mixture_options(), rng);
  const moe::StateDict<float> before = moe::state_dict(mixture);
  TemporaryFile file(".safetensors");

  SECTION("hidden layers of another width") {
    moe::Rng other_rng(6);
    DigitExpert<float> narrow(784, {.hidden = 64, .out_features = 2}, other_rng);
    moe::save_module(file.path(), narrow);
    CHECK_THROWS_WITH(moe::examples::load_pretrained_body(mixture, file.path()),
                      Catch::Contains("load_pretrained_body: " + file.path().string()) &&
                          Catch::Contains("net.0.bias (as experts.0.net.0.bias) has shape [64], the module "
                                          "expects [128]"));
  }
  SECTION("no hidden layer in the file") {
    moe::Rng other_rng(7);
    DigitExpert<float> expert(784, {.out_features = 2}, other_rng);
    moe::StateDict<float> partial = moe::state_dict(expert);
    partial.erase("net.3.weight");
    moe::save_safetensors(file.path(), partial);
    CHECK_THROWS_WITH(moe::examples::load_pretrained_body(mixture, file.path()),
                      Catch::Contains("no tensor net.3.weight"));
  }
  const moe::StateDict<float> after = moe::state_dict(mixture);
  for (const auto& [name, tensor] : after) {
    INFO(name);
    CHECK(tensor.data == before.at(name).data);
  }
}
