// Experiment 3 of "Do Experts Specialize?": does a less built-up input make experts specialize less? Trains
// the base model (MoE after four convolutions) and the short model (MoE after one convolution, 512
// features either way) with 2 experts, several trials each, and compares the covariance matrices of their
// class-based routing. Writes report.md, covariance CSVs and heatmaps (Figures 5 and 6) and trials.csv into
// --out.

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common/cli.hpp"
#include "common/cnn_analysis.hpp"
#include "common/cnn_presets.hpp"
#include "common/format.hpp"
#include "common/progress.hpp"
#include "common/resume.hpp"
#include "moe/analysis/csv.hpp"
#include "moe/analysis/heatmap.hpp"
#include "moe_depth/collapse_diagnosis.hpp"

namespace {

using namespace moe::examples;
using moe::Index;
using moe::MatrixX;

struct DepthResult {
  CnnDepth depth = CnnDepth::base;
  double forward_macs = 0;
  std::vector<double> accuracy, strength, spread, busiest_share, gap;
  MatrixX<double> covariance_sum;  // summed over trials
  std::vector<MatrixX<double>> fractions;  // per trial
  MatrixX<double> mean_covariance() const { return covariance_sum / static_cast<double>(accuracy.size()); }
};

/// moe_depth's own Switch aux weight in the quick preset (and the diagnosis), for both models.
constexpr double quick_aux_weight = 1e-1;
/// Trials per model and weight of --preset diagnose.
constexpr int diagnosis_trials = 4;

/// Why this program's balancing weight differs from the other CNN examples' (`shared`); empty when it does
/// not differ. What the weights do is measured by --preset diagnose, not stated here.
std::string balancing_note(double weight, double shared, std::uint64_t seed) {
  if (weight == shared) return "";
  return fmt::format(
      "**Balancing weight.** Both models use {:g} x the Switch aux loss, where router_ablation's and class_routing's "
      "quick presets use {:g} (and the document 1e-5): one weight for both models, as in the document, so that the "
      "balancing strength is not part of the comparison. `moe_depth --preset diagnose --seed {}` trains both "
      "models at {:g} and at {:g} and measures how often each router sends every test image to one expert, and "
      "why: how the router's logits and the MoE's input evolve during training. The example's README gives what "
      "it last measured.\n\n",
      weight, shared, seed, shared, weight);
}

int run(moe::examples::Args args) {
  RunState run(args, "moe_depth");
  CnnPreset preset = cnn_preset(args.preset, args.seed);
  const double shared_aux_weight = preset.aux_weight;
  if (args.preset == "diagnose")
    return run_collapse_diagnosis(args, run, {shared_aux_weight, quick_aux_weight}, diagnosis_trials);
  if (preset.name == "quick") {
    // The short model costs a few per cent of the base model, so the quick run affords the document's 10
    // trials (2 min 41 s for 8 on two idle cores).
    preset.trials = 10;
    // The other examples' 3e-2 lets the short model's router send every image to one expert (8 of 8 test
    // trials), which leaves no class-based routing to compare; 1e-1 keeps both experts of both models in
    // use without changing the base model's accuracy or class spread (--preset diagnose measures both
    // weights; the README gives what it last measured).
    preset.aux_weight = quick_aux_weight;
  }
  constexpr Index experts = 2;

  const VisionData data = load_vision_data(args.data_dir, preset.data);
  const auto classes = static_cast<Index>(data.classes.size());
  const std::vector<Index> group_of = group_of_class(data.groups, classes);
  TrialOptions trial_options;
  trial_options.model.width = preset.width;
  trial_options.model.aux_weight = preset.aux_weight;
  trial_options.model.input = data.train.shape;
  trial_options.model.experts = experts;
  trial_options.training = preset.training;

  std::vector<DepthResult> results(2);
  results[0].depth = CnnDepth::base;
  results[1].depth = CnnDepth::short_model;
  Index features = 0, hidden = 0;
  for (DepthResult& r : results) {
    moe::Rng probe_rng(1);
    CnnMoEOptions o = trial_options.model;
    o.depth = r.depth;
    CnnMoEModel probe(o, probe_rng);
    r.forward_macs = probe.forward_macs_per_image();
    r.covariance_sum = MatrixX<double>::Zero(classes, classes);
    features = probe.moe_features();
    hidden = probe.expert_hidden();
  }
  std::printf("moe_depth: %s, %lld train / %lld test images, width %.4g (%lld features into the MoE), %d epochs, %d "
              "trials x {base, short}, %d threads\n\n",
              data.dataset.c_str(), static_cast<long long>(data.train.size()),
              static_cast<long long>(data.test.size()), preset.width, static_cast<long long>(features),
              preset.training.epochs, preset.trials, moe::num_threads());

  const Index steps = steps_per_epoch(data.train.size(), preset.training.batch) * preset.training.epochs *
                      preset.trials * static_cast<Index>(results.size());
  Progress progress("train", steps, 5.0);
  progress.set_done(run.steps_before());
  moe::CsvWriter trials_csv(args.out / "trials.csv");
  trials_csv.row("model", "trial", "seed", "test_accuracy", "off_diagonal_covariance_norm", "class_spread",
                 "busiest_expert_share", "within_minus_between_correlation", "expert1_share_by_class");
  for (int trial = 0; trial < preset.trials; ++trial) {
    for (DepthResult& r : results) {
      trial_options.model.depth = r.depth;
      const std::uint64_t seed = args.seed * 1000 + static_cast<std::uint64_t>(trial);  // the same for both
      // One unit per model and trial: a resumed run reads the finished ones' results and goes on.
      const TrialResult t = run.unit(concat(depth_name(r.depth), "_trial", trial + 1), preset.checkpoint_every,
                                     [&](UnitCheckpoint& checkpoint) {
                                       return run_trial(
                                           data, trial_options, seed,
                                           [&](Index images, double loss) { progress.step(images, loss); },
                                           checkpoint);
                                     });
      const MatrixX<double> covariance = t.routing.covariance();
      const MatrixX<double> fractions = t.routing.fractions();
      r.covariance_sum += covariance;
      r.accuracy.push_back(t.learned.accuracy);
      r.strength.push_back(off_diagonal_norm(covariance));
      r.spread.push_back(class_spread(fractions));
      r.busiest_share.push_back(static_cast<double>(t.routing.counts().colwise().sum().maxCoeff()) /
                                static_cast<double>(t.routing.counts().sum()));
      r.gap.push_back(group_correlation(t.routing.correlation(), group_of).gap());
      r.fractions.push_back(fractions);
      std::ostringstream shares;  // a stream: g++ 12 -O3 warns (-Wrestrict) about std::string += here
      for (Index c = 0; c < classes; ++c) shares << (c ? " " : "") << fixed(fractions(c, 0), 4);
      trials_csv.row(depth_name(r.depth), trial + 1, seed, t.learned.accuracy, r.strength.back(), r.spread.back(),
                     r.busiest_share.back(), r.gap.back(), shares.str());
      std::printf("%s model, trial %d: accuracy %.2f%%, off-diagonal covariance norm %.4f, class spread %.3f, "
                  "busiest expert %.0f%%, %.0f s\n",
                  depth_name(r.depth), trial + 1, 100 * t.learned.accuracy, r.strength.back(), r.spread.back(),
                  100 * r.busiest_share.back(), t.seconds);
      std::fflush(stdout);
    }
  }
  trials_csv.close();

  // Figures 5 and 6, on one colour scale so that their strength can be compared by eye.
  double largest = 1e-12;
  for (const DepthResult& r : results) largest = std::max(largest, r.mean_covariance().cwiseAbs().maxCoeff());
  for (const DepthResult& r : results) {
    const std::string name = depth_name(r.depth);
    const MatrixX<double> covariance = r.mean_covariance();
    moe::write_matrix_csv(args.out / ("covariance_" + name + ".csv"), covariance, data.classes, data.classes, "class");
    moe::HeatmapOptions o;
    o.title = "Covariance of class-based routing, 2-expert " + name + " model";
    o.row_labels = data.classes;
    o.column_labels = data.classes;
    o.min = -largest;
    o.max = largest;
    o.colours = moe::ColourMap::blue_white_red;
    o.annotate = true;
    o.annotation_decimals = 3;
    o.colour_bar_label = "covariance (mean of " + std::to_string(r.accuracy.size()) + " trials)";
    moe::write_heatmap_png(args.out / ("covariance_" + name + ".png"), covariance, o);
  }

  const DepthResult& base = results[0];
  const DepthResult& shallow = results[1];
  const double base_strength = off_diagonal_norm(base.mean_covariance());
  const double short_strength = off_diagonal_norm(shallow.mean_covariance());
  int trials_base_stronger = 0;
  for (std::size_t t = 0; t < base.strength.size(); ++t) trials_base_stronger += base.strength[t] > shallow.strength[t];

  const auto mean_sd_of = [](const std::vector<double>& values, int decimals) {
    return mean_sd(mean(values), sample_stddev(values), decimals);
  };
  MarkdownTable table({"model", "MoE after", "M MACs / image", "test accuracy", "S (mean covariance)",
                       "S per trial (mean ± sd)", "class spread", "busiest expert's share", "collapsed trials",
                       "within - between r"});
  for (const DepthResult& r : results) {
    table.row({depth_name(r.depth), r.depth == CnnDepth::base ? "4 convolutions + pool" : "1 convolution + pool",
               fixed(r.forward_macs / 1e6, 2), mean_sd_of(r.accuracy, 4),
               fixed(off_diagonal_norm(r.mean_covariance()), 4), mean_sd_of(r.strength, 4),
               mean_sd_of(r.spread, 3), mean_sd_of(r.busiest_share, 3),
               std::to_string(std::count_if(r.busiest_share.begin(), r.busiest_share.end(),
                                            [](double share) { return share >= 0.99; })) +
               " / " + std::to_string(r.busiest_share.size()),
               mean_sd_of(r.gap, 2)});
  }
  std::vector<std::string> share_header{"class"};
  for (const DepthResult& r : results)
    for (std::size_t t = 0; t < r.fractions.size(); ++t)
      share_header.push_back(std::string(depth_name(r.depth)) + " t" + std::to_string(t + 1));
  MarkdownTable shares(share_header);
  for (Index c = 0; c < classes; ++c) {
    std::vector<std::string> row{data.classes[static_cast<std::size_t>(c)]};
    for (const DepthResult& r : results)
      for (const auto& f : r.fractions) row.push_back(percent(f(c, 0), 0));
    shares.row(row);
  }
  const bool base_stronger = base_strength > short_strength;
  const bool base_spread_larger = mean(base.spread) > mean(shallow.spread);
  const auto held = [](bool h) { return h ? "**held**" : "**did not hold**"; };

  std::ofstream report(args.out / "report.md");
  report << "# Experiment 3: the MoE after one convolution vs after four (\"Do Experts Specialize?\")\n\n"
         << "Command: `moe_depth --preset " << args.preset << " --seed " << args.seed << "` (" << moe::num_threads()
         << " threads, " << fixed(run.elapsed_seconds(), 0) << " s)\n\n"
         << describe_scaling(preset, data, base.forward_macs) << '\n'
         << describe_model(preset, data, features, hidden) << '\n'
         << balancing_note(preset.aux_weight, shared_aux_weight, args.seed)
         << "The short model keeps the base model's first convolution (128 x width filters) and its 2x2 pool, then "
            "a final max pool to 2x2: on 32x32 CIFAR-10 that is the document's 8x8 pool on 16x16 maps; on 28x28 "
            "Fashion-MNIST it is an adaptive pool with 7x7 windows on 14x14 maps (an 8x8 pool would leave 1x1). "
            "So the short model's MoE routes 128 x width x 2 x 2 = "
         << features << " features, as many as the base model's (512 x width x 1 x 1), and the filter count stays "
            "the document's. Both models have 2 experts and are trained alike; trial t of both starts from the "
            "same seed.\n\n"
         << "## Strength of class-based routing\n\n"
         << "The covariance matrix of class-based routing is numpy.cov of the class-by-expert fraction table "
            "(classes are the variables, experts the observations), as the document uses for Figures 5 and 6; it "
            "does not depend on how the experts are numbered, so trials are averaged directly. Its strength is "
            "summed up in one number, **S = the Frobenius norm of the off-diagonal covariance**, sqrt(sum over "
            "classes a != b of cov(a, b)^2): 0 when routing ignores the class, largest (sqrt(90) / 2 = 4.74 with 10 "
            "classes and 2 experts) when every class goes wholly to one expert. S also reaches that maximum when one "
            "expert takes every image, so two more columns guard against reading a collapse as specialization: "
            "*class spread*, the root mean over experts of the variance over classes of a class's share in the "
            "expert (0 for class-blind routing and for a collapse, 0.5 for a clean split into two halves), and the "
            "busiest expert's share of the test images (a trial is counted as collapsed when it is at least 99%). "
            "Within - between r is the mean correlation of routing "
            "between classes of one group minus that between classes of different groups (footwear / tops / other; "
            "see class_routing's report).\n\n"
         << table.str() << '\n'
         << "S of the averaged covariance: base " << fixed(base_strength, 4) << ", short "
         << fixed(short_strength, 4) << " (ratio base / short "
         << (short_strength > 0 ? fixed(base_strength / short_strength, 2) : std::string("infinite"))
         << "); the base model's S is larger in " << trials_base_stronger << " of " << base.strength.size()
         << " trials.\n\n"
         << "Figures: `covariance_base.png` (the document's Figure 5) and `covariance_short.png` (Figure 6), on one "
            "colour scale.\n\n"
         << "Share of each class's test images routed to expert 1, per trial (expert numbering is arbitrary per "
            "trial):\n\n"
         << shares.str() << '\n'
         << "## Findings\n\n"
         << "1. *Class-based (human-interpretable) specialization is weaker when the MoE sits earlier* (the "
            "document: the short model's covariance matrix is much weaker than the base model's): "
         << held(base_stronger) << " (S " << fixed(base_strength, 4) << " vs " << fixed(short_strength, 4)
         << ", base larger in " << trials_base_stronger << "/" << base.strength.size() << " trials); by class "
            "spread, which a collapsed router cannot inflate: "
         << held(base_spread_larger) << " (" << fixed(mean(base.spread), 3) << " vs "
         << fixed(mean(shallow.spread), 3) << ").\n"
         << "2. As the document notes, the correlation matrices of a 2-expert model are all +1 or -1, which is why "
            "covariance is compared: see `trials.csv` for the within - between correlation per trial.\n\n"
         << "The document does not compare the two models by random-router ablation, because the short model's MoE "
            "is a larger part of it; neither does this program.\n\n"
         << "## Files\n\n"
         << "- `covariance_base.csv`, `covariance_short.csv` and their PNG heatmaps: mean over trials.\n"
         << "- `trials.csv`: per model and trial, accuracy, S, class spread, the busiest expert's share, the group "
            "correlation gap and each class's share in expert 1.\n";
  report.close();
  if (!report) {
    std::cerr << "error: could not write " << (args.out / "report.md") << '\n';
    return 1;
  }
  std::cout << '\n' << table.str() << "\nwall time " << fixed(run.elapsed_seconds(), 1) << " s; report in "
            << (args.out / "report.md").string() << '\n';
  run.finish();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::examples::Args args;
  CLI::App app("moe_depth: class-based routing of an MoE after one convolution vs after four, 2 "
               "experts (Experiment 3 of \"Do Experts Specialize?\")");
  moe::examples::add_common_options(app, args,
                                    {.name = "moe_depth", .presets = {"quick", "smoke", "paper", "diagnose"},
                                     .default_out = "out/moe_depth", .resumable = true});
  return moe::examples::run_main(app, args, argc, argv, [&] { return run(args); });
}
