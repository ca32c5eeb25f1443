#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/conv2d.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/loss.hpp"
#include "moe/nn/pool.hpp"
#include "moe/nn/transformer.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/optim/schedule.hpp"
#include "moe/routing/mlp_router.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"
#include "moe/train/callbacks.hpp"
#include "moe/train/checkpoint.hpp"
#include "moe/train/progress.hpp"
#include "moe/train/trainer.hpp"
#include "balancers.hpp"
#include "file_contents.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using moe::Index;
using moe::Matrix;

namespace {

using moe::test::read_bytes;
using moe::test::SwitchAndBias;
using moe::test::TempDir;

/// Gathers the rows of `batch` from `inputs` and `labels`.
void gather(const Matrix& inputs, const std::vector<Index>& labels, std::span<const Index> batch, Matrix& x,
            std::vector<Index>& y) {
  x.resize(static_cast<Index>(batch.size()), inputs.cols());
  y.resize(batch.size());
  for (std::size_t b = 0; b < batch.size(); ++b) {
    x.row(static_cast<Index>(b)) = inputs.row(batch[b]);
    y[b] = labels[static_cast<std::size_t>(batch[b])];
  }
}

struct Labelled {
  Matrix inputs;
  std::vector<Index> labels;
};

/// Inputs and labels from a fixed seed, the same for every run of a test.
Labelled make_data(Index samples, Index features, Index classes, std::uint64_t seed) {
  moe::Rng rng(seed);
  Labelled d{Matrix(samples, features), std::vector<Index>(static_cast<std::size_t>(samples))};
  moe::fill_normal(d.inputs, rng, 0.0, 1.0);
  for (auto& label : d.labels) label = moe::uniform_index(rng, classes);
  return d;
}

// --- Family 1: a CNN feeding an MoE layer (Switch aux loss and aux-loss-free bias, dropout experts) -------

struct TinyCnn {
  using Scalar = float;
  using Layer = moe::MoELayer<moe::FeedForward<moe::ReLU, float>, moe::SoftmaxTopK, 1, SwitchAndBias>;
  static constexpr moe::ImageShape input{1, 6, 6};
  static constexpr Index classes = 3;

  moe::Conv2d<float> conv;
  moe::ReLU<float> relu;
  moe::MaxPool2d<float> pool;
  Layer moe_layer;
  moe::Linear<float> head;

  explicit TinyCnn(moe::Rng& rng)
      : conv(input, 3, 3, rng), pool(conv.output_shape(), 2), moe_layer(layer_options(pool.output_shape().size()), rng),
        head(pool.output_shape().size(), classes, rng) {}

  static Layer::Options layer_options(Index features) {
    Layer::Options o;
    o.d_model = features;
    o.num_experts = 3;
    o.expert = {.hidden = 8, .dropout = 0.1};
    std::get<0>(o.balancer).alpha = 1e-2;
    std::get<1>(o.balancer).gamma = 1e-2;
    return o;
  }

  const Matrix& forward(moe::ConstRef<float> x) {
    return head.forward(moe_layer.forward(pool.forward(relu.forward(conv.forward(x)))));
  }
  void backward(moe::ConstRef<float> d) {
    conv.backward(relu.backward(pool.backward(moe_layer.backward(head.backward(d)))));
  }
  moe::ParameterList<float> named_parameters() {
    moe::ParameterList<float> list;
    moe::append_prefixed(list, conv.named_parameters(), "conv.");
    moe::append_prefixed(list, moe_layer.named_parameters(), "moe.");
    moe::append_prefixed(list, head.named_parameters(), "head.");
    return list;
  }
  moe::BufferList<float> named_buffers() {
    moe::BufferList<float> list;
    moe::append_prefixed(list, moe_layer.named_buffers(), "moe.");
    return list;
  }
  moe::GeneratorList named_generators() {
    moe::GeneratorList list;
    moe::append_prefixed(list, moe_layer.named_generators(), "moe.");
    return list;
  }
  void train(bool on) { moe_layer.train(on); }
  void update_balancing() { moe_layer.update_balancing(); }
};

/// AdamW under OneCycleLR, each epoch shuffling the last one's order again, the partial batch dropped.
struct CnnRun {
  static constexpr Index samples = 38, batch = 8, epochs = 3;  // 4 steps per epoch, 12 in all
  static constexpr moe::CheckpointFormat format = moe::CheckpointFormat::Binary;

  moe::Rng rng;
  TinyCnn model;
  moe::AdamW<float> optimizer;
  Labelled data = make_data(samples, TinyCnn::input.size(), TinyCnn::classes, 5);
  Labelled validation = make_data(10, TinyCnn::input.size(), TinyCnn::classes, 6);
  moe::CrossEntropyLoss<float> loss;
  Matrix x;
  std::vector<Index> y;
  moe::Trainer<TinyCnn, moe::AdamW<float>, moe::OneCycleLR> trainer;

  explicit CnnRun(std::uint64_t seed)
      : rng(seed), model(rng), optimizer(model.named_parameters(), {.lr = 1e-2, .weight_decay = 1e-3}),
        trainer(model, optimizer, rng,
                {.batch_size = batch, .epochs = epochs, .drop_last = true, .shuffle = moe::Shuffle::Cumulative},
                moe::OneCycleLR(2e-2, 12)) {}
  CnnRun(const CnnRun&) = delete;

  auto step_fn() {
    return [this](std::span<const Index> b) {
      gather(data.inputs, data.labels, b, x, y);
      const double value = loss.forward(model.forward(x), y) + model.moe_layer.aux_loss();
      model.backward(loss.backward());
      trainer.add("aux", model.moe_layer.aux_loss());
      return value;
    };
  }
  void evaluate() {
    model.train(false);
    trainer.log("val_loss", loss.forward(model.forward(validation.inputs), validation.labels));
  }
};

// --- Family 2: an MLP mixture (MLP router with dropout, GELU experts), SGD with momentum ---------------

struct MlpRun {
  using Mixture = moe::MoELayer<moe::FeedForward<moe::GELU, float>, moe::MLPRouter, 2, moe::SwitchAuxLoss>;
  static constexpr Index samples = 50, features = 6, classes = 4, batch = 16, epochs = 3;  // 16, 16, 16, 2
  static constexpr moe::CheckpointFormat format = moe::CheckpointFormat::Binary;

  moe::Rng rng;
  Mixture model;
  moe::SGD<float> optimizer;
  Labelled data = make_data(samples, features, classes, 7);
  Labelled validation = make_data(12, features, classes, 8);
  moe::CrossEntropyLoss<float> loss;
  Matrix x;
  std::vector<Index> y;
  moe::Trainer<Mixture, moe::SGD<float>> trainer;

  explicit MlpRun(std::uint64_t seed, bool check_finite = false)
      : rng(seed),
        model({.d_model = features, .num_experts = 4, .check_finite = check_finite,
               .expert = {.hidden = 8, .out_features = classes, .dropout = 0.1},
               .router = {.hidden = {8}, .dropout = 0.2}, .balancer = {.alpha = 1e-2}},
              rng),
        optimizer(model.named_parameters(), {.lr = 5e-2, .momentum = 0.9}),
        trainer(model, optimizer, rng, {.batch_size = batch, .epochs = epochs, .shuffle = moe::Shuffle::Fresh}) {}
  MlpRun(const MlpRun&) = delete;

  auto step_fn() {
    return [this](std::span<const Index> b) {
      gather(data.inputs, data.labels, b, x, y);
      const double value = loss.forward(model.forward(x), y) + model.aux_loss();
      model.backward(loss.backward());
      trainer.add("aux", model.aux_loss());
      return moe::StepResult{.loss = value, .samples = static_cast<Index>(b.size())};
    };
  }
  void evaluate() {
    model.train(false);
    trainer.log("val_loss", loss.forward(model.forward(validation.inputs), validation.labels));
  }
};

// --- Family 3: a small language model (dense block, then sigmoid-routed MoE blocks, aux-loss-free) -----

struct LmRun {
  using SwiGLU = moe::SwiGLUFeedForward<float>;
  using LM = moe::CausalLM<SwiGLU, moe::MoELayer<SwiGLU, moe::SigmoidTopK, 2, moe::AuxLossFree>>;
  static constexpr Index vocab = 13, length = 8, windows = 22, batch = 4;  // 6 steps per epoch (the last of 2)
  static constexpr Index steps = 15;                                       // stops within epoch 3
  static constexpr moe::CheckpointFormat format = moe::CheckpointFormat::JSON;

  moe::Rng rng;
  LM model;
  moe::AdamW<float> optimizer;
  std::vector<Index> tokens;  // windows x (length + 1)
  moe::CrossEntropyLoss<float> loss;
  std::vector<Index> inputs, targets;
  moe::Trainer<LM, moe::AdamW<float>, moe::CosineWithWarmup> trainer;

  static LM::Options options() {
    LM::Options o;
    o.vocab_size = vocab;
    o.d_model = 8;
    o.num_layers = 3;
    o.num_dense_layers = 1;
    o.dense_block = {.attn = {.num_heads = 2}, .ffn = {.hidden = 12}};
    o.block.attn.num_heads = 2;
    o.block.ffn = {.num_experts = 4, .num_shared_experts = 1, .expert = {.hidden = 6}, .shared_expert = {.hidden = 6},
                   .balancer = {.gamma = 1e-2}};
    return o;
  }

  explicit LmRun(std::uint64_t seed)
      : rng(seed), model(options(), rng), optimizer(model.named_parameters(), {.lr = 3e-3, .weight_decay = 0.1}),
        trainer(model, optimizer, rng,
                {.batch_size = batch, .epochs = 3, .max_steps = steps, .max_grad_norm = 0.5},
                moe::CosineWithWarmup(3e-3, 3, steps, 3e-4)) {
    moe::Rng data_rng(9);
    tokens.resize(static_cast<std::size_t>(windows * (length + 1)));
    for (auto& t : tokens) t = moe::uniform_index(data_rng, vocab);
  }
  LmRun(const LmRun&) = delete;

  void fill(std::span<const Index> picked) {
    inputs.clear();
    targets.clear();
    for (const Index w : picked) {
      const Index* window = tokens.data() + w * (length + 1);
      inputs.insert(inputs.end(), window, window + length);
      targets.insert(targets.end(), window + 1, window + length + 1);
    }
  }
  auto step_fn() {
    return [this](std::span<const Index> b) {
      fill(b);
      const double value = loss.forward(model.forward(inputs, static_cast<Index>(b.size()), length), targets);
      model.backward(loss.backward());
      trainer.add("aux", model.aux_loss());
      return moe::StepResult{.loss = value, .samples = static_cast<Index>(b.size()) * length};
    };
  }
  void evaluate() {
    model.eval();
    const std::vector<Index> all{0, 1, 2, 3};
    fill(all);
    trainer.log("val_loss", loss.forward(model.forward(inputs, 4, length), targets));
  }
  static constexpr Index dataset_size() { return windows; }
};

template <class R>
Index dataset_size_of(R&) {
  if constexpr (requires { R::dataset_size(); })
    return R::dataset_size();
  else
    return R::samples;
}

const std::vector<std::string> csv_columns{"epoch", "loss", "epoch_loss", "lr", "val_loss", "aux"};

/// The run with evaluation every 3 steps, a metrics row every step and a checkpoint every 2 steps, in `dir`.
template <class R, class... Extra>
void fit(R& run, const fs::path& dir, Extra&&... extra) {
  run.trainer.fit(dataset_size_of(run), run.step_fn(), moe::Evaluate(3, [&](auto&) { run.evaluate(); }),
                  moe::MetricsCsv(dir / "metrics.csv", csv_columns, 1), std::forward<Extra>(extra)...,
                  moe::Checkpoint(dir / "run.ck", 2, R::format));
}

template <class R>
void check_same_bits(R& a, R& b) {
  const auto pa = a.model.named_parameters(), pb = b.model.named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    INFO("parameter " << pa[i].name);
    CHECK((pa[i].parameter->value.array() == pb[i].parameter->value.array()).all());
  }
  const auto ba = moe::buffers_of(a.model), bb = moe::buffers_of(b.model);
  REQUIRE(ba.size() == bb.size());
  for (std::size_t i = 0; i < ba.size(); ++i) {
    INFO("buffer " << ba[i].name);
    CHECK((ba[i].value->array() == bb[i].value->array()).all());
  }
  CHECK(a.rng == b.rng);
  const moe::TrainerState &sa = a.trainer.state(), &sb = b.trainer.state();
  CHECK(sa.step == sb.step);
  CHECK(sa.epoch == sb.epoch);
  CHECK(sa.order == sb.order);
  CHECK(sa.loss == sb.loss);
  CHECK(sa.values == sb.values);
  CHECK(sa.epoch_sums == sb.epoch_sums);
  // Everything else a checkpoint holds (generators, optimizer moments and options), byte for byte.
  TempDir dir;
  moe::save_training(dir / "a.ck", a.trainer);
  moe::save_training(dir / "b.ck", b.trainer);
  CHECK(read_bytes(dir / "a.ck") == read_bytes(dir / "b.ck"));
  CHECK(read_bytes(dir / "a.ck.trainer") == read_bytes(dir / "b.ck.trainer"));
}

/// A run interrupted at `crash_at` (after the step, before its checkpoint) and resumed by another process
/// with other seeds ends as the uninterrupted run: parameters, buffers, generators, optimizer, metrics.
template <class R>
void check_resume(Index crash_at) {
  INFO("interrupted at step " << crash_at);
  TempDir straight_dir, resumed_dir;
  R straight(1);
  fit(straight, straight_dir.path());
  CHECK(straight.trainer.step() == straight.trainer.total_steps());
  {
    R first(1);
    CHECK_THROWS_WITH(fit(first, resumed_dir.path(), moe::OnStepEnd{[&](auto& t) {
                        if (t.step() == crash_at) throw std::runtime_error("power cut");
                      }}),
                      "power cut");
  }
  R resumed(2);
  moe::resume_training(resumed_dir / "run.ck", resumed.trainer);
  CHECK(resumed.trainer.step() == (crash_at - 1) / 2 * 2);
  fit(resumed, resumed_dir.path());
  check_same_bits(straight, resumed);
  CHECK(read_bytes(resumed_dir / "metrics.csv") == read_bytes(straight_dir / "metrics.csv"));
  CHECK(read_bytes(resumed_dir / "run.ck") == read_bytes(straight_dir / "run.ck"));
}

/// Records what happens, in order, to check the loop's order of operations.
struct Journal {
  std::vector<std::string> events;
};

struct StubModel {
  using Scalar = float;
  Journal* journal;
  void train(bool on) { journal->events.push_back(on ? "train" : "eval"); }
  void update_balancing() { journal->events.push_back("update_balancing"); }
};

struct StubOptimizer {
  using Scalar = float;
  Journal* journal;
  moe::Parameter<float> weight{1, 1};
  moe::ParameterList<float> list{{"w", &weight}};
  double lr_ = 0.5;
  Index steps_ = 0;
  Index steps() const { return steps_; }
  int state() { return 0; }
  void zero_grad() { journal->events.push_back("zero_grad"); }
  void step() { journal->events.push_back("step"); }
  double lr() const { return lr_; }
  void set_lr(double lr) {
    lr_ = lr;
    journal->events.push_back("set_lr " + moe::MetricsCsv::format(lr));
  }
  void set_momentum(double) {}
  const moe::ParameterList<float>& parameters() const { return list; }
};

struct StepLr {
  double lr(Index step) const { return static_cast<double>(step); }
  std::optional<double> momentum(Index) const { return std::nullopt; }
};

struct JournalCallback {
  Journal* journal;
  template <class T>
  void on_fit_begin(T&) { journal->events.push_back("fit_begin"); }
  template <class T>
  void on_epoch_begin(T& t) { journal->events.push_back("epoch_begin " + std::to_string(t.epoch())); }
  template <class T>
  void on_step_end(T& t) { journal->events.push_back("step_end " + std::to_string(t.step())); }
  template <class T>
  void on_epoch_end(T& t) { journal->events.push_back("epoch_end " + std::to_string(t.epoch())); }
  template <class T>
  void on_commit(T&) { journal->events.push_back("commit"); }
  template <class T>
  void on_fit_end(T&) { journal->events.push_back("fit_end"); }
};

}  // namespace

TEST_CASE("Trainer: each step is train, zero_grad, step function, optimizer, schedule, balancing, callbacks",
          "[trainer]") {
  Journal journal;
  StubModel model{&journal};
  StubOptimizer optimizer{&journal};
  moe::Rng rng(1);
  moe::Trainer trainer(model, optimizer, rng, {.batch_size = 2, .epochs = 2, .shuffle = moe::Shuffle::None}, StepLr{});
  std::vector<std::vector<Index>> batches;
  trainer.fit(
      3,
      [&](std::span<const Index> b) {
        journal.events.push_back("forward_backward");
        batches.emplace_back(b.begin(), b.end());
        return 1.0;
      },
      JournalCallback{&journal});
  std::vector<std::string> expected{"set_lr 0", "fit_begin", "epoch_begin 1"};
  for (const char* e : {"train", "zero_grad", "forward_backward", "step", "set_lr 1", "update_balancing",
                        "step_end 1", "commit", "train", "zero_grad", "forward_backward", "step", "set_lr 2",
                        "update_balancing", "step_end 2", "epoch_end 1", "commit", "epoch_begin 2", "train",
                        "zero_grad", "forward_backward", "step", "set_lr 3", "update_balancing", "step_end 3", "commit",
                        "train", "zero_grad", "forward_backward", "step", "update_balancing", "step_end 4",
                        "epoch_end 2", "commit", "fit_end"})
    expected.emplace_back(e);
  CHECK(journal.events == expected);
  // Without drop_last the last batch of an epoch is partial.
  CHECK(batches == std::vector<std::vector<Index>>{{0, 1}, {2}, {0, 1}, {2}});
  CHECK(trainer.state().lr == 3.0);  // the last step's lr: the schedule's for step index 3
}

TEST_CASE("Trainer: the sample order of each epoch, by Shuffle mode and drop_last", "[trainer]") {
  const Index n = 10;
  for (const auto mode : {moe::Shuffle::Fresh, moe::Shuffle::Cumulative}) {
    Journal journal;
    StubModel model{&journal};
    StubOptimizer optimizer{&journal};
    moe::Rng rng(3), expected_rng(3);
    moe::Trainer trainer(model, optimizer, rng, {.batch_size = 4, .epochs = 3, .drop_last = true, .shuffle = mode});
    std::vector<Index> seen;
    trainer.fit(n, [&](std::span<const Index> b) {
      seen.insert(seen.end(), b.begin(), b.end());
      return 0.0;
    });
    CHECK(trainer.step() == 6);  // 2 full batches of 4 per epoch; 2 samples dropped each time
    std::vector<Index> order(n), expected;
    std::iota(order.begin(), order.end(), Index{0});
    for (int epoch = 0; epoch < 3; ++epoch) {
      if (mode == moe::Shuffle::Fresh) std::iota(order.begin(), order.end(), Index{0});
      moe::shuffle(order, expected_rng);
      expected.insert(expected.end(), order.begin(), order.begin() + 8);
    }
    CHECK(seen == expected);
    CHECK(rng == expected_rng);
  }
}

TEST_CASE("Trainer: a NaN loss stops the run at its step, before the optimizer step, naming the step",
          "[trainer][finite]") {
  MlpRun run(4);
  std::vector<Matrix> after_step_6;
  auto poisoned = [&, inner = run.step_fn()](std::span<const Index> b) mutable {
    if (run.trainer.step() + 1 == 7) run.data.inputs(b[0], 0) = std::numeric_limits<float>::quiet_NaN();
    return inner(b);
  };
  auto snapshot = moe::OnStepEnd{[&](auto& t) {
    if (t.step() == 6)
      for (const auto& p : run.model.named_parameters()) after_step_6.emplace_back(p.parameter->value);
  }};
  // 4 batches per epoch: step 7 is epoch 2's third batch.
  CHECK_THROWS_WITH(run.trainer.fit(MlpRun::samples, poisoned, snapshot),
                    Contains("Trainer: the loss is nan at step 7 (epoch 2, batch 3 of 4); the gradients of") &&
                        Contains("parameters are not finite, the first 'router.net.0.weight'"));
  CHECK(run.trainer.step() == 6);
  CHECK(run.optimizer.steps() == 6);
  const auto parameters = run.model.named_parameters();
  REQUIRE(after_step_6.size() == parameters.size());
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    INFO(parameters[i].name);
    CHECK((parameters[i].parameter->value.array() == after_step_6[i].array()).all());
  }
}

TEST_CASE("Trainer: a parameter broken by a step is named when the next loss is not finite", "[trainer][finite]") {
  MlpRun run(4);
  auto breaker = moe::OnStepEnd{[&](auto& t) {
    if (t.step() != 2) return;
    for (const auto& p : run.model.named_parameters())
      if (p.name == "router.net.3.weight") p.parameter->value(0, 0) = std::numeric_limits<float>::infinity();
  }};
  CHECK_THROWS_WITH(run.trainer.fit(MlpRun::samples, run.step_fn(), breaker),
                    Contains("at step 3 (epoch 1, batch 3 of 4); parameter 'router.net.3.weight' is not finite"));
}

TEST_CASE("Trainer: an MoE layer's check_finite error names the step", "[trainer][finite]") {
  MlpRun run(4, /*check_finite=*/true);
  auto poisoned = [&, inner = run.step_fn()](std::span<const Index> b) mutable {
    if (run.trainer.step() + 1 == 5) run.data.inputs(b[0], 0) = std::numeric_limits<float>::infinity();
    return inner(b);
  };
  CHECK_THROWS_WITH(run.trainer.fit(MlpRun::samples, poisoned),
                    Contains("Trainer: step 5 (epoch 2, batch 1 of 4): MoELayer: ") && Contains("not finite"));
  CHECK(run.trainer.step() == 4);
}

TEST_CASE("Trainer: a resumed CNN + MoE run ends with the bits of the uninterrupted one",
          "[trainer][resume][cnn]") {
  check_resume<CnnRun>(GENERATE(Index{3}, Index{5}, Index{8}, Index{12}));
}

TEST_CASE("Trainer: a resumed MLP mixture run ends with the bits of the uninterrupted one",
          "[trainer][resume][mlp]") {
  check_resume<MlpRun>(GENERATE(Index{4}, Index{7}, Index{11}));
}

TEST_CASE("Trainer: a resumed language model run ends with the bits of the uninterrupted one",
          "[trainer][resume][lm]") {
  check_resume<LmRun>(GENERATE(Index{5}, Index{8}, Index{15}));
}

TEST_CASE("Trainer: checkpoints, CSV rows and evaluations fall on the steps asked for", "[trainer][callbacks]") {
  TempDir dir;
  LmRun run(1);
  std::vector<Index> evaluated;
  std::vector<double> lrs;
  run.trainer.fit(LmRun::dataset_size(), run.step_fn(), moe::Evaluate(4, [&](auto& t) { evaluated.push_back(t.step()); }),
                  moe::OnStepEnd{[&](auto& t) { lrs.push_back(t.state().lr); }},
                  moe::MetricsCsv(dir / "epochs.csv", {"epoch_loss"}), moe::Checkpoint(dir / "run.ck", 4));
  CHECK(run.trainer.step() == LmRun::steps);
  CHECK(evaluated == std::vector<Index>{4, 8, 12, 15});
  const moe::CosineWithWarmup schedule(3e-3, 3, LmRun::steps, 3e-4);
  REQUIRE(lrs.size() == static_cast<std::size_t>(LmRun::steps));
  for (Index s = 0; s < LmRun::steps; ++s) CHECK(lrs[static_cast<std::size_t>(s)] == schedule.lr(s));
  // A row at each epoch's end (steps 6 and 12) and one at the run's end within epoch 3.
  const std::string csv = read_bytes(dir / "epochs.csv");
  CHECK(csv.rfind("step,epoch_loss\n6,", 0) == 0);
  CHECK(csv.find("\n12,") != std::string::npos);
  CHECK(csv.find("\n15,") != std::string::npos);
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 4);
  // The last checkpoint is of the last step.
  LmRun resumed(2);
  moe::resume_training(dir / "run.ck", resumed.trainer);
  CHECK(resumed.trainer.step() == LmRun::steps);
  CHECK(resumed.trainer.state().batch == 3);
}

TEST_CASE("Trainer: a checkpoint and a trainer state of different steps are refused, changing nothing",
          "[trainer][resume][errors]") {
  TempDir dir;
  {
    MlpRun stopped(1);  // a callback ends this run at step 5, and the checkpoint saves it there
    stopped.trainer.fit(MlpRun::samples, stopped.step_fn(), moe::OnStepEnd{[](auto& t) { return t.step() == 5; }},
                        moe::Checkpoint(dir / "a.ck", 100));
    CHECK(stopped.trainer.step() == 5);
    MlpRun full(1);
    full.trainer.fit(MlpRun::samples, full.step_fn(), moe::Checkpoint(dir / "b.ck", 100));
  }
  fs::copy_file(dir / "a.ck.trainer", dir / "b.ck.trainer", fs::copy_options::overwrite_existing);
  MlpRun run(2);
  const Matrix before = run.model.named_parameters()[0].parameter->value;
  CHECK_THROWS_WITH(moe::resume_training(dir / "b.ck", run.trainer),
                    Contains("the checkpoint is of step 12 (epoch 3), its trainer state of step 5 (epoch 2)"));
  CHECK_THROWS_WITH(moe::resume_training(dir / "none.ck", run.trainer),
                    Contains("none.ck.trainer': no such file"));
  CHECK(run.trainer.step() == 0);
  CHECK((run.model.named_parameters()[0].parameter->value.array() == before.array()).all());
  moe::resume_training(dir / "a.ck", run.trainer);
  CHECK(run.trainer.step() == 5);
  CHECK(run.trainer.state().stopped);
  run.trainer.fit(MlpRun::samples, run.step_fn());  // a stopped run stays stopped
  CHECK(run.trainer.step() == 5);
}

TEST_CASE("Trainer: EarlyStopAtMinLoss ends the run after `patience` epochs without a better loss",
          "[trainer][callbacks]") {
  Journal journal;
  StubModel model{&journal};
  StubOptimizer optimizer{&journal};
  moe::Rng rng(1);
  moe::Trainer trainer(model, optimizer, rng, {.batch_size = 1, .epochs = 20, .shuffle = moe::Shuffle::None});
  const std::vector<double> epoch_losses{5, 4, 3, 3.5, 3.2, 2.9, 3, 3, 3};
  trainer.fit(1, [&](std::span<const Index>) { return epoch_losses.at(static_cast<std::size_t>(trainer.step())); },
              moe::EarlyStopAtMinLoss(3));
  CHECK(trainer.step() == 9);  // best 2.9 at epoch 6, then 3 epochs without better
  CHECK(trainer.state().stopped);
}

TEST_CASE("ProgressMeter: plain lines off a terminal, one line redrawn with \\r on one", "[trainer][progress]") {
  TempDir dir;
  for (const bool terminal : {false, true}) {
    const fs::path path = dir / (terminal ? "tty.txt" : "plain.txt");
    std::FILE* file = std::fopen(path.c_str(), "w");
    REQUIRE(file != nullptr);
    {
      moe::ProgressMeter meter("run", 3,
                               {.unit = "tokens", .seconds_between_lines = 0, .stream = file, .terminal = terminal});
      meter.set_epoch(1, 2);
      for (int s = 0; s < 3; ++s) meter.step(64, 1.5);
    }
    std::fclose(file);
    const std::string text = read_bytes(path);
    CHECK(text.find("[run] step 3/3  epoch 1/2  loss 1.5000") != std::string::npos);
    CHECK(text.find("tokens/s") != std::string::npos);
    CHECK(text.find("left 00:00:00") != std::string::npos);
    if (terminal) {
      CHECK(text.front() == '\r');
      CHECK(std::count(text.begin(), text.end(), '\n') == 1);  // the line ends once, at the end
    } else {
      CHECK(text.find('\r') == std::string::npos);
      CHECK(std::count(text.begin(), text.end(), '\n') == 3);
    }
  }
  CHECK_FALSE(moe::is_terminal(nullptr));
}
