#include <catch2/catch.hpp>

#include <concepts>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#if __has_include(<sys/resource.h>)
#include <csignal>
#include <sys/resource.h>
#endif

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/io/checkpoint.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/dropout.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/loss.hpp"
#include "moe/nn/sequential.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/optim/schedule.hpp"
#include "moe/routing/mlp_router.hpp"
#include "moe/routing/random_router.hpp"
#include "moe/routing/softmax_top_k.hpp"
#include "balancers.hpp"
#include "file_contents.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using moe::CheckpointFormat;
using moe::Index;
using moe::MatrixX;

using moe::test::SwitchAndBias;

namespace {

using moe::test::read_bytes;
using moe::test::TempDir;
using moe::test::write_bytes;

// Matrices or parameter views alike.
template <class A, class B>
bool bit_identical(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.derived().data(), b.derived().data(),
                     sizeof(typename A::Scalar) * static_cast<std::size_t>(a.size())) == 0;
}

template <std::floating_point Scalar>
bool bit_identical(Scalar a, Scalar b) {
  return std::memcmp(&a, &b, sizeof(Scalar)) == 0;
}

std::string text_of(const moe::Rng& rng) {
  std::ostringstream out;
  out << rng;
  return out.str();
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  return text.replace(at, from.size(), to);
}

constexpr Index kFeatures = 6, kClasses = 3, kSamples = 48, kBatch = 12;
constexpr Index kStepsPerEpoch = kSamples / kBatch;
constexpr Index kTotalSteps = 4 * kStepsPerEpoch;

template <class Scalar>
struct Dataset {
  MatrixX<Scalar> inputs;
  std::vector<Index> labels;

  Dataset() : inputs(kSamples, kFeatures), labels(kSamples) {
    moe::Rng rng(7);
    moe::fill_normal(inputs, rng, 0.0, 1.0);
    for (auto& label : labels) label = moe::uniform_index(rng, kClasses);
  }
};

struct Config {
  std::uint64_t seed = 1;
  Index hidden = 8;
  Index shared = 1;
};

template <class Scalar>
using Layer = moe::MoELayer<moe::FeedForward<moe::ReLU, Scalar>, moe::SoftmaxTopK, 2, SwitchAndBias>;

template <class Scalar>
typename Layer<Scalar>::Options layer_options(const Config& config) {
  typename Layer<Scalar>::Options options;
  options.d_model = kFeatures;
  options.num_experts = 4;
  options.num_shared_experts = config.shared;
  options.expert = {.hidden = config.hidden, .dropout = 0.1};
  options.shared_expert = options.expert;
  std::get<1>(options.balancer).gamma = 1e-2;
  return options;
}

/// An MoE layer and a Linear head trained with AdamW under OneCycleLR, on batches of a shuffled dataset.
/// Each epoch draws a fresh order from `rng`, so a checkpoint between epochs needs no other loop state.
template <class Scalar>
struct Trainer {
  moe::Rng rng;
  Layer<Scalar> layer;
  moe::Linear<Scalar> head;
  moe::ModelRef<Scalar> model;
  moe::AdamW<Scalar> optimizer;
  moe::OneCycleLR schedule{5e-2, kTotalSteps};
  moe::CrossEntropyLoss<Scalar> loss;
  Dataset<Scalar> data;
  moe::TrainingProgress progress;
  Scalar last_loss = 0;

  explicit Trainer(const Config& config = {})
      : rng(config.seed),
        layer(layer_options<Scalar>(config), rng),
        head(kFeatures, kClasses, rng),
        model{{"moe", layer}, {"head", head}},
        optimizer(model.named_parameters(), {.lr = 1e-2, .weight_decay = 1e-2}) {}
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  void train_until(Index end_step) {
    std::vector<Index> order(kSamples);
    MatrixX<Scalar> x(kBatch, kFeatures);
    std::vector<Index> y(kBatch);
    while (progress.step < end_step) {
      std::iota(order.begin(), order.end(), Index{0});
      moe::shuffle(order, rng);
      for (Index start = 0; start < kSamples; start += kBatch) {
        for (Index b = 0; b < kBatch; ++b) {
          const Index i = order[static_cast<std::size_t>(start + b)];
          x.row(b) = data.inputs.row(i);
          y[static_cast<std::size_t>(b)] = data.labels[static_cast<std::size_t>(i)];
        }
        moe::apply_schedule(schedule, optimizer, progress.step);
        optimizer.zero_grad();
        const MatrixX<Scalar>& logits = head.forward(layer.forward(x));
        last_loss = loss.forward(logits, y) + layer.aux_loss();
        layer.backward(head.backward(loss.backward()));
        optimizer.step();
        layer.update_balancing();
        ++progress.step;
      }
      ++progress.epoch;
    }
  }

  void save(const fs::path& path, CheckpointFormat format = CheckpointFormat::Binary) {
    moe::save_checkpoint(path, progress, model, optimizer, rng, format);
  }
  void load(const fs::path& path) { progress = moe::load_checkpoint(path, model, optimizer, rng); }
};

/// Everything a load may change, to check that a failed one changed nothing.
template <class Scalar>
struct Snapshot {
  std::vector<MatrixX<Scalar>> tensors;
  std::vector<std::string> generators;
  double lr = 0, beta1 = 0;
  Index steps = 0;

  explicit Snapshot(Trainer<Scalar>& t)
      : lr(t.optimizer.lr()), beta1(t.optimizer.options().beta1), steps(t.optimizer.steps()) {
    for (const auto& p : t.model.named_parameters()) tensors.push_back(p.parameter->value);
    for (const auto& b : t.model.named_buffers()) tensors.push_back(*b.value);
    for (const auto& m : t.optimizer.state().exp_avg) tensors.push_back(m);
    for (const auto& v : t.optimizer.state().exp_avg_sq) tensors.push_back(v);
    for (const auto& g : t.model.named_generators()) generators.push_back(text_of(*g.rng));
    generators.push_back(text_of(t.rng));
  }

  bool operator==(const Snapshot& other) const {
    if (tensors.size() != other.tensors.size() || generators != other.generators || lr != other.lr ||
        beta1 != other.beta1 || steps != other.steps)
      return false;
    for (std::size_t i = 0; i < tensors.size(); ++i)
      if (!bit_identical(tensors[i], other.tensors[i])) return false;
    return true;
  }
};

/// Every parameter, buffer, generator, optimizer moment and option, and the last loss, bit for bit.
template <class Scalar>
void check_identical(Trainer<Scalar>& a, Trainer<Scalar>& b) {
  const auto pa = a.model.named_parameters(), pb = b.model.named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    INFO("parameter " << pa[i].name);
    CHECK(bit_identical(pa[i].parameter->value, pb[i].parameter->value));
  }
  const auto ba = a.model.named_buffers(), bb = b.model.named_buffers();
  REQUIRE(ba.size() == bb.size());
  for (std::size_t i = 0; i < ba.size(); ++i) {
    INFO("buffer " << ba[i].name);
    CHECK(bit_identical(*ba[i].value, *bb[i].value));
  }
  const auto ga = a.model.named_generators(), gb = b.model.named_generators();
  REQUIRE(ga.size() == gb.size());
  for (std::size_t i = 0; i < ga.size(); ++i) {
    INFO("generator " << ga[i].name);
    CHECK(*ga[i].rng == *gb[i].rng);
  }
  const auto& sa = a.optimizer.state();
  const auto& sb = b.optimizer.state();
  CHECK(sa.step == sb.step);
  for (std::size_t i = 0; i < sa.exp_avg.size(); ++i) {
    INFO("moments of " << pa[i].name);
    CHECK(bit_identical(sa.exp_avg[i], sb.exp_avg[i]));
    CHECK(bit_identical(sa.exp_avg_sq[i], sb.exp_avg_sq[i]));
  }
  CHECK(bit_identical(a.optimizer.lr(), b.optimizer.lr()));
  CHECK(bit_identical(a.optimizer.options().beta1, b.optimizer.options().beta1));
  CHECK(a.rng == b.rng);
  CHECK(a.progress.step == b.progress.step);
  CHECK(a.progress.epoch == b.progress.epoch);
  CHECK(bit_identical(a.last_loss, b.last_loss));
}

std::vector<std::string> generator_names(const moe::GeneratorList& list) {
  std::vector<std::string> names;
  for (const auto& g : list) names.push_back(g.name);
  return names;
}

}  // namespace

TEST_CASE("named_generators names every generator like the parameters", "[checkpoint][generators]") {
  moe::Rng rng(1);
  using MLPLayer = moe::MoELayer<moe::FeedForward<moe::ReLU, float>, moe::MLPRouter, 1, moe::NoBalancing>;
  MLPLayer mlp({.d_model = 4,
                .num_experts = 2,
                .num_shared_experts = 1,
                .expert = {.hidden = 5, .dropout = 0.1},
                .shared_expert = {.hidden = 5, .dropout = 0.1},
                .router = {.hidden = {6, 6}, .dropout = 0.2}},
               rng);
  CHECK(generator_names(mlp.named_generators()) ==
        std::vector<std::string>{"router.net.2.generator", "router.net.5.generator", "experts.0.dropout.generator",
                                 "experts.1.dropout.generator", "shared_experts.0.dropout.generator"});

  using RandomLayer = moe::MoELayer<moe::FeedForward<moe::ReLU, float>, moe::RandomRouter, 1, moe::NoBalancing>;
  RandomLayer random({.d_model = 4, .num_experts = 2, .expert = {.hidden = 5}}, rng);
  CHECK(generator_names(random.named_generators()) == std::vector<std::string>{"router.generator"});

  moe::Sequential<moe::Linear<float>, moe::ReLU<float>, moe::Dropout<float>> sequential(
      moe::Linear<float>(4, 4, rng), moe::ReLU<float>(), moe::Dropout<float>(0.5, rng));
  CHECK(generator_names(moe::generators_of(sequential)) == std::vector<std::string>{"2.generator"});

  moe::SwiGLUFeedForward<float> swiglu(4, {.hidden = 8}, rng);
  moe::Linear<float> linear(4, 4, rng);
  CHECK(moe::generators_of(swiglu).empty());
  CHECK(moe::generators_of(linear).empty());
}

TEMPLATE_TEST_CASE("A resumed run is bit-identical to the uninterrupted one", "[checkpoint][resume]", float, double) {
  const CheckpointFormat format = GENERATE(CheckpointFormat::Binary, CheckpointFormat::JSON);
  INFO((format == CheckpointFormat::JSON ? "JSON" : "binary"));
  TempDir dir;
  const fs::path path = dir / "run.ck";

  Trainer<TestType> straight({.seed = 11});
  straight.train_until(kTotalSteps);
  // The biases moved and the experts' dropouts drew masks, so both must be restored for the bits to match.
  CHECK(straight.layer.balancer().template get<1>().bias().cwiseAbs().maxCoeff() > 0);

  {
    Trainer<TestType> first({.seed = 11});
    first.train_until(kTotalSteps / 2);
    first.save(path, format);
  }
  Trainer<TestType> resumed({.seed = 99});  // other weights, masks and shuffles until the load
  resumed.load(path);
  CHECK(resumed.progress.step == kTotalSteps / 2);
  CHECK(resumed.progress.epoch == 2);
  CHECK(resumed.optimizer.steps() == kTotalSteps / 2);
  resumed.train_until(kTotalSteps);
  check_identical(straight, resumed);
}

TEST_CASE("A resumed run with a RandomRouter routes every token as the uninterrupted one",
          "[checkpoint][resume][random_router]") {
  using Layer = moe::MoELayer<moe::Linear<double>, moe::RandomRouter, 2, moe::NoBalancing>;
  using Head = moe::Sequential<moe::ReLU<double>, moe::Dropout<double>, moe::Linear<double>>;
  struct Run {
    moe::Rng rng;
    Layer layer;
    Head head;
    moe::SGD<double> optimizer;
    MatrixX<double> x;
    moe::TrainingProgress progress;

    explicit Run(std::uint64_t seed)
        : rng(seed),
          layer({.d_model = kFeatures, .num_experts = 5}, rng),
          head(moe::ReLU<double>(), moe::Dropout<double>(0.3, rng), moe::Linear<double>(kFeatures, 1, rng)),
          optimizer(moe::ModelRef<double>{{"moe", layer}, {"head", head}}.named_parameters(),
                    {.lr = 1e-2, .momentum = 0.9}),
          x(MatrixX<double>::Ones(8, kFeatures)) {}

    /// One SGD step on the mean output; returns the experts each row went to.
    moe::IndexMatrix step() {
      optimizer.zero_grad();
      const MatrixX<double>& y = head.forward(layer.forward(x));
      layer.backward(head.backward(MatrixX<double>::Constant(y.rows(), y.cols(), 1.0 / static_cast<double>(y.rows()))));
      optimizer.step();
      ++progress.step;
      return layer.routing().experts;
    }
    moe::ModelRef<double> model() { return {{"moe", layer}, {"head", head}}; }
  };

  Run straight(3);
  std::vector<moe::IndexMatrix> expected;
  for (int s = 0; s < 10; ++s) expected.push_back(straight.step());

  TempDir dir;
  {
    Run first(3);
    for (int s = 0; s < 5; ++s) first.step();
    moe::save_checkpoint(dir / "random.ck", first.progress, first.model(), first.optimizer, first.rng);
  }
  Run resumed(4);
  resumed.progress = moe::load_checkpoint(dir / "random.ck", resumed.model(), resumed.optimizer, resumed.rng);
  CHECK(resumed.optimizer.state().has_momentum_buffer);
  for (std::size_t s = 5; s < 10; ++s) {
    INFO("step " << s);
    CHECK(resumed.step() == expected[s]);
  }
  const auto a = straight.model().named_parameters(), b = resumed.model().named_parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("parameter " << a[i].name);
    CHECK(bit_identical(a[i].parameter->value, b[i].parameter->value));
  }
}

TEST_CASE("A failed load names the file and the entry and changes nothing", "[checkpoint][errors]") {
  TempDir dir;
  const fs::path path = dir / "saved.ck";
  const fs::path json = dir / "saved.json";
  {
    Trainer<float> source({.seed = 5});
    source.train_until(kStepsPerEpoch);
    source.save(path);
    source.save(json, CheckpointFormat::JSON);
  }
  Trainer<float> target({.seed = 6});
  target.train_until(kStepsPerEpoch);
  const Snapshot<float> before(target);

  const auto check_fails = [&](auto&& load, const fs::path& file, const std::string& what) {
    INFO("expecting: " << what);
    CHECK_THROWS_WITH(load(file), Contains(file.string()) && Contains(what));
    CHECK(Snapshot<float>(target) == before);
  };
  const auto load_into_target = [&](const fs::path& file) { target.load(file); };

  SECTION("missing file") { check_fails(load_into_target, dir / "absent.ck", "no such file"); }

  SECTION("truncated file") {
    for (const fs::path& file : {path, json}) {
      fs::resize_file(file, fs::file_size(file) / 2);
      check_fails(load_into_target, file, "truncated or corrupt");
    }
  }

  SECTION("a file that is not a checkpoint") {
    write_bytes(dir / "notes.txt", "not a checkpoint at all");
    check_fails(load_into_target, dir / "notes.txt", "not a moe checkpoint");
    write_bytes(dir / "other.json", replaced(read_bytes(json), "moe checkpoint", "something else"));
    check_fails(load_into_target, dir / "other.json", "not a moe checkpoint");
  }

  SECTION("a newer version") {
    write_bytes(dir / "v99.json",
               replaced(read_bytes(json), "\"cereal_class_version\": 1", "\"cereal_class_version\": 99"));
    check_fails(load_into_target, dir / "v99.json", "checkpoint version 99, this build reads versions up to 1");
  }

  SECTION("a parameter missing from the checkpoint, or one the model lacks") {
    Trainer<float> unshared({.seed = 5, .shared = 0});
    unshared.save(dir / "unshared.ck");
    check_fails(load_into_target, dir / "unshared.ck",
                "module tensor moe.shared_experts.0.fc1.weight [8, 6] is missing from the checkpoint");

    Trainer<float> smaller({.seed = 6, .shared = 0});
    const Snapshot<float> smaller_before(smaller);
    CHECK_THROWS_WITH(
        smaller.load(path),
        Contains(path.string()) &&
            Contains("tensor moe.shared_experts.0.fc1.bias is not in the module"));
    CHECK(Snapshot<float>(smaller) == smaller_before);
  }

  SECTION("a parameter of another shape") {
    Trainer<float> wider({.seed = 5, .hidden = 16});
    wider.save(dir / "wider.ck");
    check_fails(load_into_target, dir / "wider.ck",
                "tensor moe.experts.0.fc1.bias has shape [16], the module expects [8]");
  }

  SECTION("another optimizer kind") {
    moe::Adam<float> adam(target.model.named_parameters());
    CHECK_THROWS_WITH(moe::load_checkpoint(path, target.model, adam, target.rng),
                      Contains(path.string()) && Contains("the optimizer is AdamW in the checkpoint, Adam here"));
    CHECK(Snapshot<float>(target) == before);
    CHECK(adam.steps() == 0);
  }

  SECTION("another scalar type") {
    Trainer<double> twin({.seed = 6});
    CHECK_THROWS_WITH(twin.load(path),
                      Contains(path.string()) && Contains("the checkpoint holds F32 tensors, this model F64"));
  }

  SECTION("an optimizer over other parameters, found after the model was checked") {
    Trainer<float> source({.seed = 5});
    moe::AdamW<float> head_only(source.head.named_parameters());
    moe::save_checkpoint(dir / "head_only.ck", source.progress, source.model, head_only, source.rng);
    check_fails(load_into_target, dir / "head_only.ck", "the optimizer has 23 parameters, the checkpoint's exp_avg has 2");
  }

  SECTION("a damaged generator, the last entry checked") {
    write_bytes(dir / "rng.json", replaced(read_bytes(json), "\"rng\": \"", "\"rng\": \"x"));
    check_fails(load_into_target, dir / "rng.json", "generator 'rng' does not hold the state of a moe::Rng");
  }

  SECTION("the same file loads once intact") {
    target.load(path);
    CHECK(target.progress.step == kStepsPerEpoch);
    CHECK_FALSE(Snapshot<float>(target) == before);
  }
}

TEST_CASE("A model with two entries of one name cannot be saved", "[checkpoint][errors]") {
  TempDir dir;
  moe::Rng rng(1);
  moe::Linear<float> a(2, 2, rng), b(2, 2, rng);
  moe::SGD<float> sgd(a.named_parameters());
  CHECK_THROWS_WITH(moe::save_checkpoint(dir / "twice.ck", {}, moe::ModelRef<float>{{"x", a}, {"x", b}}, sgd, rng),
                    Contains("twice.ck") && Contains("the module has two tensors named x.bias"));
  CHECK_FALSE(fs::exists(dir / "twice.ck"));
}

TEST_CASE("A save goes through a temporary file and never breaks the old checkpoint", "[checkpoint][atomic]") {
  TempDir dir;
  const fs::path path = dir / "run.ck";
  Trainer<float> t({.seed = 2});
  t.save(path);
  t.train_until(kStepsPerEpoch);
  t.save(path);  // replaces the first
  const auto leftovers = [&] {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir.path())) names.push_back(entry.path().filename().string());
    return names;
  };
  CHECK(leftovers() == std::vector<std::string>{"run.ck"});

  const auto check_old_checkpoint_loads = [&] {
    Trainer<float> fresh({.seed = 3});
    fresh.load(path);
    CHECK(fresh.progress.step == kStepsPerEpoch);
  };

  SECTION("a directory that is a regular file") {
    write_bytes(dir / "plain", "a file");
    const fs::path inside = dir / "plain" / "run.ck";
    CHECK_THROWS_WITH(t.save(inside), Contains(inside.string()) && Contains("cannot create the temporary file") &&
                                          Contains(": Not a directory"));
  }

#if __has_include(<sys/resource.h>)
  SECTION("the disk fills up halfway through the write") {
    // RLIMIT_FSIZE makes writes past 1 KiB fail (even for root), as a full disk would.
    struct FileSizeLimit {
      rlimit saved{};
      void (*handler)(int) = nullptr;
      FileSizeLimit() {
        getrlimit(RLIMIT_FSIZE, &saved);
        handler = std::signal(SIGXFSZ, SIG_IGN);
        rlimit limited = saved;
        limited.rlim_cur = 1024;
        setrlimit(RLIMIT_FSIZE, &limited);
      }
      ~FileSizeLimit() {
        setrlimit(RLIMIT_FSIZE, &saved);
        std::signal(SIGXFSZ, handler);
      }
    };
    REQUIRE(fs::file_size(path) > 4096);
    t.train_until(2 * kStepsPerEpoch);
    for (const CheckpointFormat format : {CheckpointFormat::Binary, CheckpointFormat::JSON}) {
      {
        FileSizeLimit limit;
        // The path and the operating system's reason: writes past RLIMIT_FSIZE fail with EFBIG.
        CHECK_THROWS_WITH(t.save(path, format), Contains(path.string()) && Contains("File too large"));
      }
      CHECK(leftovers() == std::vector<std::string>{"run.ck"});
      check_old_checkpoint_loads();
    }
  }
#endif
}
