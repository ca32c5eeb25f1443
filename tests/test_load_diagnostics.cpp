#include <catch2/catch.hpp>

#include <cairo.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/vector.hpp>

#include "backends/cpu/cpu_backend.hpp"
#include "moe/analysis/load_diagnostics.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/core/random.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/routing/sigmoid_top_k.hpp"
#include "moe/routing/softmax_top_k.hpp"
#include "moe/train/load_diagnostics.hpp"
#include "moe/train/trainer.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using moe::Index;

namespace {

/// A routing of scores [T x N] (doubles, so that hand-computed values hold to rounding) to `experts`.
struct HandRouting {
  moe::MatrixX<double> scores;
  moe::Routing<double> routing;

  HandRouting(moe::MatrixX<double> s, moe::IndexMatrix experts) : scores(std::move(s)) {
    routing.experts = std::move(experts);
    routing.scores = &scores;
  }
};

double entropy_of(std::initializer_list<double> p) {
  double h = 0;
  for (const double v : p) h -= v * std::log(v);
  return h;
}

}  // namespace

TEST_CASE("Load diagnostics of a hand-computed routing", "[load_diagnostics]") {
  moe::MatrixX<double> scores(4, 4);
  scores << 0.4, 0.3, 0.2, 0.1,  // top-2 {0, 1}: margin 0.3 - 0.2
      0.1, 0.5, 0.3, 0.1,        // {1, 2}: 0.3 - 0.1
      0.25, 0.25, 0.25, 0.25,    // ties go to the lower index: {0, 1}, margin 0
      0.7, 0.1, 0.1, 0.1;        // {0, 1}, margin 0
  moe::IndexMatrix experts(4, 2);
  experts << 0, 1, 1, 2, 0, 1, 0, 1;
  const HandRouting hand(scores, experts);
  const moe::LoadDiagnostics d = moe::routing_diagnostics(hand.routing, 2, nullptr);

  // Loads: expert 0 gets rows 0, 2, 3; expert 1 all four; expert 2 row 1; expert 3 nothing: 3, 4, 1, 0.
  CHECK(d.tokens == 4);
  CHECK(d.load_min == 0.0);
  CHECK(d.load_median == 2.0);  // (1 + 3) / 2
  CHECK(d.load_max == 4.0);
  CHECK(d.overload == 2.0);  // 4 / (8 / 4)
  CHECK(d.max_violation == 1.0);
  CHECK(d.load_entropy == Approx(entropy_of({3.0 / 8, 4.0 / 8, 1.0 / 8})).epsilon(1e-14));
  CHECK(d.dropped_fraction == 0.25);  // 2 of 8
  const double row_entropies = entropy_of({0.4, 0.3, 0.2, 0.1}) + entropy_of({0.1, 0.5, 0.3, 0.1}) + std::log(4.0) +
                               entropy_of({0.7, 0.1, 0.1, 0.1});
  CHECK(d.score_entropy == Approx(row_entropies / 4).epsilon(1e-14));
  CHECK(d.margin == Approx((0.1 + 0.2 + 0.0 + 0.0) / 4).epsilon(1e-12));
}

TEST_CASE("Load diagnostics of an expert-choice routing count what the experts took", "[load_diagnostics]") {
  // Each of 3 experts took 2 of 4 tokens: token 0 got experts {0, 1, 2}, token 1 {0}, token 2 {1, 2}, token 3
  // none; -1 marks the empty slots.
  moe::MatrixX<double> scores(4, 3);
  scores << 0.5, 0.3, 0.2, 0.6, 0.2, 0.2, 0.2, 0.4, 0.4, 0.4, 0.3, 0.3;
  moe::IndexMatrix experts(4, 3);
  experts << 0, 1, 2, 0, -1, -1, 1, 2, -1, -1, -1, -1;
  const HandRouting hand(scores, experts);
  const moe::LoadDiagnostics d = moe::routing_diagnostics(hand.routing, 0, nullptr);
  CHECK(d.load_min == 2.0);
  CHECK(d.load_max == 2.0);
  CHECK(d.overload == 1.0);  // 2 / (6 / 3), not 2 / (4 x 3 / 3)
  CHECK(d.max_violation == 0.0);
  CHECK(d.load_entropy == Approx(std::log(3.0)).epsilon(1e-14));
  CHECK(d.dropped_fraction == 0.0);
  CHECK(std::isnan(d.margin));
  CHECK_THROWS_WITH(moe::routing_diagnostics(hand.routing, 7, nullptr), Contains("7 dropped of 6 assignments"));
}

TEST_CASE("Load diagnostics: the margin ranks score + bias, entropies normalise the scores", "[load_diagnostics]") {
  moe::MatrixX<double> scores(2, 4);
  scores << 0.4, 0.3, 0.2, 0.1, 0.1, 0.5, 0.3, 0.1;
  moe::MatrixX<double> bias(1, 4);
  bias << 0.0, 0.0, 0.15, 0.0;
  // Selection values: 0.4 0.3 0.35 0.1 -> {0, 2}, margin 0.35 - 0.3; 0.1 0.5 0.45 0.1 -> {1, 2}, margin 0.45 - 0.1.
  moe::IndexMatrix experts(2, 2);
  experts << 0, 2, 1, 2;
  const HandRouting hand(scores, experts);
  const moe::LoadDiagnostics biased = moe::routing_diagnostics(hand.routing, 0, &bias);
  CHECK(biased.margin == Approx((0.05 + 0.35) / 2).epsilon(1e-12));
  CHECK(biased.dropped_fraction == 0.0);
  // The router's entropy does not see the bias.
  CHECK(biased.score_entropy ==
        Approx((entropy_of({0.4, 0.3, 0.2, 0.1}) + entropy_of({0.1, 0.5, 0.3, 0.1})) / 2).epsilon(1e-14));

  // Sigmoid scores do not sum to 1: the entropy is of the scores divided by their sum.
  moe::MatrixX<double> sigmoid(1, 4);
  sigmoid << 0.9, 0.3, 0.6, 0.6;  // / 2.4 = 0.375, 0.125, 0.25, 0.25
  moe::IndexMatrix top(1, 2);
  top << 0, 2;
  const HandRouting affinities(sigmoid, top);
  const moe::LoadDiagnostics s = moe::routing_diagnostics(affinities.routing, 0, nullptr);
  CHECK(s.score_entropy == Approx(entropy_of({0.375, 0.125, 0.25, 0.25})).epsilon(1e-14));
  CHECK(s.margin == Approx(0.0).margin(1e-15));  // the K-th, 0.6, ties the best left out

  // K = N leaves no expert to compare with; no tokens leave no ratio.
  moe::IndexMatrix all(1, 4);
  all << 0, 2, 3, 1;
  const HandRouting dense(sigmoid, all);
  const moe::LoadDiagnostics every = moe::routing_diagnostics(dense.routing, 0, nullptr);
  CHECK(std::isnan(every.margin));
  CHECK(every.overload == 1.0);
  const HandRouting empty(moe::MatrixX<double>(0, 4), moe::IndexMatrix(0, 2));
  const moe::LoadDiagnostics none = moe::routing_diagnostics(empty.routing, 0, nullptr);
  CHECK(none.tokens == 0);
  CHECK(none.load_max == 0.0);
  CHECK(std::isnan(none.overload));
  CHECK(std::isnan(none.margin));
}

TEST_CASE("Load diagnostics refuse what they cannot read", "[load_diagnostics]") {
  moe::Routing<double> no_scores;
  no_scores.experts = moe::IndexMatrix::Zero(2, 1);
  CHECK_THROWS_WITH(moe::routing_diagnostics(no_scores, 0, nullptr), Contains("the routing has no scores"));
  moe::MatrixX<double> scores = moe::MatrixX<double>::Constant(2, 3, 0.5);
  moe::IndexMatrix experts = moe::IndexMatrix::Zero(2, 1);
  const HandRouting hand(scores, experts);
  const moe::MatrixX<double> bias = moe::MatrixX<double>::Zero(1, 4);
  CHECK_THROWS_WITH(moe::routing_diagnostics(hand.routing, 0, &bias), Contains("bias has shape 1x4, expected 1x3"));
  CHECK_THROWS_WITH(moe::routing_diagnostics(hand.routing, 3, nullptr), Contains("3 dropped of 2 assignments"));
}

TEST_CASE("Load diagnostics of a layer's forward: its batch load and the capacity's drops", "[load_diagnostics]") {
  using Layer = moe::MoELayer<moe::FeedForward<moe::ReLU, double>, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss>;
  moe::Rng rng(3);
  Layer layer({.d_model = 5, .num_experts = 4, .capacity_factor = 0.5, .expert = {.hidden = 6}}, rng);
  moe::MatrixX<double> x(16, 5);
  moe::fill_normal(x, rng, 0.0, 1.0);
  layer.forward(x);
  const moe::LoadDiagnostics d = moe::load_diagnostics(layer);
  REQUIRE(layer.backend().dropped() > 0);
  CHECK(d.dropped_fraction == static_cast<double>(layer.backend().dropped()) / 32.0);
  CHECK(d.load_max == static_cast<double>(layer.batch_load().maxCoeff()));
  CHECK(d.load_min == static_cast<double>(layer.batch_load().minCoeff()));
  CHECK(d.max_violation == moe::max_violation(layer.batch_load()));
  CHECK(d.margin >= 0.0);  // plain top-K: the K-th is never below the (K+1)-th
}

namespace {

// Two MoE layers in a row with the aux-loss-free bias (moved far each step, so that the bias the forward
// ranked with and the updated one give different margins), trained on y = sin(x) by the Trainer.
using DiagnosedLayer = moe::MoELayer<moe::FeedForward<moe::GELU>, moe::SigmoidTopK, 2, moe::AuxLossFree>;

struct DiagnosedStack {
  using Scalar = float;
  DiagnosedLayer first, second;

  explicit DiagnosedStack(moe::Rng& rng)
      : first(options(), rng), second(options(), rng) {}
  static DiagnosedLayer::Options options() {
    return {.d_model = 4, .num_experts = 5, .capacity_factor = 1.0, .expert = {.hidden = 6},
            .balancer = {.gamma = 0.05}};
  }
  moe::ParameterList<float> named_parameters() {
    moe::ParameterList<float> list = first.named_parameters();
    for (auto& p : second.named_parameters()) list.push_back(p);
    return list;
  }
  void train(bool on) {
    first.train(on);
    second.train(on);
  }
  void update_balancing() {
    first.update_balancing();
    second.update_balancing();
  }
  std::vector<DiagnosedLayer*> layers() { return {&first, &second}; }
};

/// A run of `steps` steps of 6 rows from seed 11; the step function may watch the layers after backward.
struct DiagnosedRun {
  static constexpr Index samples = 24, batch = 6;
  moe::Rng rng{11};
  DiagnosedStack model{rng};
  moe::AdamW<float> optimizer{model.named_parameters(), {.lr = 1e-2}};
  moe::Matrix data;
  moe::Trainer<DiagnosedStack, moe::AdamW<float>> trainer;
  moe::Matrix x, error;

  explicit DiagnosedRun(Index steps)
      : trainer(model, optimizer, rng, {.batch_size = batch, .max_steps = steps, .shuffle = moe::Shuffle::None}) {
    data.resize(samples, 4);
    moe::fill_normal(data, rng, 0.0, 1.0);
  }

  template <class Watch>
  auto step_fn(Watch watch) {
    return [this, watch](std::span<const Index> b) mutable {
      x.resize(static_cast<Index>(b.size()), 4);
      for (std::size_t i = 0; i < b.size(); ++i) x.row(static_cast<Index>(i)) = data.row(b[i]);
      const moe::Matrix& y = model.second.forward(model.first.forward(x));
      error = y - x.array().sin().matrix();
      const double loss = error.squaredNorm() / static_cast<double>(error.size());
      model.first.backward(model.second.backward(2.0f * error / static_cast<float>(error.size())));
      watch();
      return loss;
    };
  }
  auto step_fn() {
    return step_fn([] {});
  }
};

std::string diagnostics_file_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.is_open());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("LoadDiagnosticsLog writes a row per layer and step: the diagnostics of the step's forward",
          "[load_diagnostics][trainer]") {
  const moe::test::TempDir dir("moe_load_diagnostics");
  DiagnosedRun run(2);
  // What each step's forward gave, read in the step function, before the trainer moves the bias.
  std::vector<moe::LoadDiagnostics> expected;
  const auto watch = [&] {
    expected.push_back(moe::load_diagnostics(run.model.first));
    expected.push_back(moe::load_diagnostics(run.model.second));
  };
  moe::LoadDiagnosticsLog log(run.model.layers(), dir / "diagnostics.csv", dir / "diagnostics.png");
  run.trainer.fit(DiagnosedRun::samples, run.step_fn(watch), log);

  REQUIRE(expected.size() == 4);
  REQUIRE(log.rows().size() == 4);
  std::ostringstream text;
  text << "step,layer,tokens,load_min,load_median,load_max,overload,max_violation,score_entropy,load_entropy,"
          "dropped_fraction,margin\n";
  for (std::size_t i = 0; i < 4; ++i) {
    const moe::LoadDiagnostics& e = expected[i];
    text << i / 2 + 1 << ',' << i % 2 + 1 << ",6";
    for (const double v : {e.load_min, e.load_median, e.load_max, e.overload, e.max_violation, e.score_entropy,
                           e.load_entropy, e.dropped_fraction, e.margin})
      text << ',' << moe::MetricsCsv::format(v);
    text << '\n';
    CHECK(e.tokens == 6);
  }
  CHECK(diagnostics_file_text(dir / "diagnostics.csv") == text.str());
  // Capacity 1.0 on 6 tokens: ceil(6 x 2 / 5) = 3 rows per expert; some step dropped assignments.
  CHECK((expected[0].dropped_fraction + expected[1].dropped_fraction + expected[2].dropped_fraction +
         expected[3].dropped_fraction) > 0.0);
  // After the run the layers hold the bias updated after step 2: it ranks otherwise than the forward did,
  // which is why the log keeps the forward's bias.
  const auto& last = run.model.second;
  const moe::LoadDiagnostics updated =
      moe::routing_diagnostics(last.routing(), last.backend().dropped(), run.model.second.balancer().selection_bias());
  CHECK(updated.margin != log.rows()[3].values.margin);
  CHECK(log.rows()[3].values.margin == expected[3].margin);
}

TEST_CASE("LoadDiagnosticsLog draws a PNG plot", "[load_diagnostics][trainer]") {
  const moe::test::TempDir dir("moe_load_diagnostics");
  DiagnosedRun run(3);
  moe::LoadDiagnosticsLog log(run.model.layers(), dir / "d.csv", dir / "d.png", {.title = "two layers"});
  run.trainer.fit(DiagnosedRun::samples, run.step_fn(), log);
  const std::string png = diagnostics_file_text(dir / "d.png");
  REQUIRE(png.size() > 20'000);  // 9 panels of axes, labels and lines
  CHECK(png.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
  cairo_surface_t* surface = cairo_image_surface_create_from_png((dir / "d.png").c_str());
  CHECK(cairo_surface_status(surface) == CAIRO_STATUS_SUCCESS);
  CHECK(cairo_image_surface_get_width(surface) > 900);   // 3 panels across
  CHECK(cairo_image_surface_get_height(surface) > 600);  // 3 panels down
  cairo_surface_destroy(surface);
  CHECK(dir.files() == std::vector<std::string>{"d.csv", "d.png"});  // no temporary file left
}

TEST_CASE("Attaching LoadDiagnosticsLog changes no bit of training", "[load_diagnostics][trainer]") {
  const moe::test::TempDir dir("moe_load_diagnostics");
  DiagnosedRun plain(4), watched(4);
  plain.trainer.fit(DiagnosedRun::samples, plain.step_fn());
  moe::LoadDiagnosticsLog log(watched.model.layers(), dir / "d.csv", dir / "d.png", {.write_every_steps = 2});
  watched.trainer.fit(DiagnosedRun::samples, watched.step_fn(), log);
  CHECK(plain.trainer.loss() == watched.trainer.loss());
  const auto a = plain.model.named_parameters(), b = watched.model.named_parameters();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    CHECK(a[i].parameter->value == b[i].parameter->value);
  }
  CHECK(plain.model.first.balancer().bias() == watched.model.first.balancer().bias());
  CHECK(plain.model.second.balancer().bias() == watched.model.second.balancer().bias());
  CHECK(log.rows().size() == 8);
}

TEST_CASE("LoadDiagnosticsLog resumes with its rows kept, and refuses to resume without them",
          "[load_diagnostics][trainer]") {
  const moe::test::TempDir dir("moe_load_diagnostics");
  DiagnosedRun straight(4);
  moe::LoadDiagnosticsLog whole(straight.model.layers(), dir / "whole.csv", dir / "whole.png", {.every_steps = 1});
  straight.trainer.fit(DiagnosedRun::samples, straight.step_fn(), whole);

  // The same run stopped after 2 steps; its log kept through cereal, as a checkpoint keeps it.
  DiagnosedRun first(2);
  moe::LoadDiagnosticsLog part(first.model.layers(), dir / "part.csv", dir / "part.png");
  first.trainer.fit(DiagnosedRun::samples, first.step_fn(), part);
  std::stringstream kept;
  {
    cereal::PortableBinaryOutputArchive archive(kept);
    archive(part);
  }
  moe::Trainer<DiagnosedStack, moe::AdamW<float>> rest(first.model, first.optimizer, first.rng,
                                                       {.batch_size = DiagnosedRun::batch, .max_steps = 4,
                                                        .shuffle = moe::Shuffle::None});
  rest.state() = first.trainer.state();

  moe::LoadDiagnosticsLog fresh(first.model.layers(), dir / "part.csv", dir / "part.png");
  CHECK_THROWS_WITH(rest.fit(DiagnosedRun::samples, first.step_fn(), fresh),
                    Contains("goes on from step 2 but the log holds rows up to step 0"));

  moe::LoadDiagnosticsLog resumed(first.model.layers(), dir / "part.csv", dir / "part.png");
  {
    cereal::PortableBinaryInputArchive archive(kept);
    archive(resumed);
  }
  rest.fit(DiagnosedRun::samples, first.step_fn(), resumed);
  CHECK(diagnostics_file_text(dir / "part.csv") == diagnostics_file_text(dir / "whole.csv"));
  CHECK(diagnostics_file_text(dir / "part.png") == diagnostics_file_text(dir / "whole.png"));
}

TEST_CASE("LoadDiagnosticsLog and the line plot refuse bad arguments", "[load_diagnostics]") {
  const moe::test::TempDir dir("moe_load_diagnostics");
  moe::Rng rng(1);
  DiagnosedStack model(rng);
  using Log = moe::LoadDiagnosticsLog<DiagnosedLayer>;
  CHECK_THROWS_WITH(Log({}, dir / "a.csv", dir / "a.png"), Contains("no layers to watch"));
  CHECK_THROWS_WITH(Log({&model.first, nullptr}, dir / "a.csv", dir / "a.png"), Contains("layer 2 is null"));
  CHECK_THROWS_WITH(Log(model.layers(), dir / "a.csv", dir / "a.png", {.every_steps = 0}),
                    Contains("every_steps must be positive, got 0"));
  CHECK_THROWS_WITH(moe::write_line_plots_png(dir / "p.png", {}), Contains("no panels to draw"));
  const std::vector<moe::LinePanel> mismatched{{"a", {{"layer 1", {1, 2}, {0.5, 0.7}}}},
                                               {"b", {{"layer 2", {1, 2}, {0.5, 0.7}}}}};
  CHECK_THROWS_WITH(moe::write_line_plots_png(dir / "p.png", mismatched), Contains("series 0 of panel 1 is 'layer 2'"));
  const std::vector<moe::LinePanel> uneven{{"a", {{"layer 1", {1, 2, 3}, {0.5, 0.7}}}}};
  CHECK_THROWS_WITH(moe::write_line_plots_png(dir / "p.png", uneven), Contains("has 3 x and 2 y values"));
  CHECK_THROWS_WITH(moe::write_load_diagnostics_csv(dir / "missing" / "d.csv", {}),
                    Contains("write_load_diagnostics_csv: '") && Contains("cannot create the temporary file"));
}
