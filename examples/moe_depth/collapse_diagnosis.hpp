#pragma once
// moe_depth --preset diagnose: why the short model's router sends every image to one expert at a weak
// balancing weight. Trains both models (base, short) at the other CNN examples' weight and at moe_depth's
// own, a few trials each, and in the first trial of each follows the router through training on a fixed set
// of test images: the logit difference between the two experts (its mean over the images, the offset shared
// by all of them, against its spread), the softmax's slope p(1 - p), the busier expert's share, and how far
// the MoE's input is from being common to every image. Writes report.md and diagnosis_*.csv; the report
// states only what this run measured.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/cnn_analysis.hpp"
#include "common/cnn_presets.hpp"
#include "common/format.hpp"
#include "common/progress.hpp"
#include "common/resume.hpp"
#include "moe/analysis/csv.hpp"

namespace moe::examples {

/// The router of a 2-expert model on the probe images at one step of training.
struct RouterProbe {
  Index step = 0;
  double offset = 0, spread = 0;  // mean and standard deviation over the images of logit(expert 1) - logit(expert 2)
  double slope = 0;               // mean over the images of p (1 - p), p the softmax score of expert 1
  double busier_share = 0;        // share of the images whose top expert is the busier one
  double feature_mean_norm = 0;   // norm of the mean MoE input over the images
  double feature_rms_distance = 0;  // root mean squared distance of an image's MoE input from that mean

  template <class Archive>
  void serialize(Archive& archive) {
    archive(step, offset, spread, slope, busier_share, feature_mean_norm, feature_rms_distance);
  }
};

inline RouterProbe probe_router(CnnMoEModel& model, const Matrix& images, Index step) {
  RouterProbe p;
  p.step = step;
  const Matrix features = model.features(images);
  const Eigen::RowVectorXd mean_feature = features.cast<double>().colwise().mean();
  p.feature_mean_norm = mean_feature.norm();
  p.feature_rms_distance =
      std::sqrt((features.cast<double>().rowwise() - mean_feature).rowwise().squaredNorm().mean());
  const Matrix& scores = model.moe().router().forward(features);
  const Matrix& logits = model.moe().router().logits();
  const Eigen::VectorXd difference = (logits.col(0) - logits.col(1)).cast<double>();
  p.offset = difference.mean();
  p.spread = std::sqrt((difference.array() - p.offset).square().mean());
  const Eigen::ArrayXd first = scores.col(0).cast<double>().array();
  p.slope = (first * (1.0 - first)).mean();
  const double to_first = (difference.array() >= 0.0).cast<double>().mean();
  p.busier_share = std::max(to_first, 1.0 - to_first);
  return p;
}

/// One trained model of the diagnosis.
struct CollapseTrial {
  CnnDepth depth = CnnDepth::base;
  double aux_weight = 0;
  int trial = 0;
  std::uint64_t seed = 0;
  double accuracy = 0, busiest_share = 0, spread = 0, seconds = 0;
  std::vector<RouterProbe> probes;  // first trial only
  bool collapsed() const { return busiest_share >= 0.99; }

  template <class Archive>
  void serialize(Archive& archive) {
    archive(depth, aux_weight, trial, seed, accuracy, busiest_share, spread, seconds, probes);
  }
};

/// Trains one model as moe_depth's run_trial does (same seed, same draws); with `probe_images`, probes the
/// router before training, every `probe_every` steps and at the end. The training goes on from the unit's
/// checkpoint, if there is one.
inline CollapseTrial run_collapse_trial(const VisionData& data, const CnnPreset& preset, CnnDepth depth,
                                        double aux_weight, int trial, std::uint64_t seed, Progress& progress,
                                        const Matrix* probe_images, Index probe_every, UnitCheckpoint& checkpoint) {
  CollapseTrial t;
  t.depth = depth;
  t.aux_weight = aux_weight;
  t.trial = trial;
  t.seed = seed;
  CnnMoEOptions options;
  options.width = preset.width;
  options.aux_weight = aux_weight;
  options.input = data.train.shape;
  options.classes = static_cast<Index>(data.classes.size());
  options.experts = 2;
  options.depth = depth;
  Rng rng(seed);
  CnnMoEModel model(options, rng);
  Index step = 0;
  if (probe_images) t.probes.push_back(probe_router(model, *probe_images, 0));
  checkpoint.keep(t.probes);
  checkpoint.keep(step);
  train_cnn_moe(
      model, data, preset.training, rng,
      [&](Index images, double loss) {
        progress.step(images, loss);
        ++step;
        if (probe_images && step % probe_every == 0) t.probes.push_back(probe_router(model, *probe_images, step));
      },
      {}, checkpoint);
  if (probe_images && t.probes.back().step != step) t.probes.push_back(probe_router(model, *probe_images, step));
  const Evaluation e = evaluate(model, data.test, preset.training.eval_batch);
  LabelExpertTable table(options.classes, options.experts);
  table.add(data.test.labels, as_routing_column(e.experts));
  t.accuracy = e.accuracy;
  t.busiest_share = busiest_expert_share(table.counts());
  t.spread = class_spread(table.fractions());
  t.seconds = checkpoint.elapsed_seconds();
  return t;
}

inline std::string offset_text(const RouterProbe& p) { return fixed(p.offset, 2) + " ± " + fixed(p.spread, 2); }

/// moe_depth --preset diagnose. `weights`: the balancing weights to compare (the other CNN examples' and
/// moe_depth's own); `trials` per model and weight, each a unit of `run`.
inline int run_collapse_diagnosis(const Args& args, RunState& run, const std::vector<double>& weights, int trials) {
  const CnnPreset preset = cnn_preset(args.preset, args.seed);
  const VisionData data = load_vision_data(args.data_dir, preset.data);
  const Index probe_count = std::min<Index>(500, data.test.size());
  const Matrix probe_images = data.test.images.topRows(probe_count);
  const Index probe_every = 50;
  const std::vector<CnnDepth> depths = {CnnDepth::short_model, CnnDepth::base};
  const Index steps = steps_per_epoch(data.train.size(), preset.training.batch) * preset.training.epochs * trials *
                      static_cast<Index>(weights.size() * depths.size());
  std::printf("moe_depth --preset diagnose: %s, %lld train / %lld test images, width %.4g, 2 experts, %d trials x "
              "{short, base} x %zu balancing weights, %d threads\n\n",
              data.dataset.c_str(), static_cast<long long>(data.train.size()),
              static_cast<long long>(data.test.size()), preset.width, trials, weights.size(), num_threads());
  Progress progress("train", steps, 5.0);
  progress.set_done(run.steps_before());
  std::vector<CollapseTrial> results;
  for (std::size_t w = 0; w < weights.size(); ++w)
    for (const CnnDepth depth : depths)
      for (int trial = 0; trial < trials; ++trial) {
        const double weight = weights[w];
        const std::uint64_t seed = args.seed * 1000 + static_cast<std::uint64_t>(trial);  // as moe_depth's trials
        results.push_back(run.unit(concat(depth_name(depth), "_weight", w + 1, "_trial", trial + 1),
                                   preset.checkpoint_every, [&](UnitCheckpoint& checkpoint) {
                                     return run_collapse_trial(data, preset, depth, weight, trial + 1, seed, progress,
                                                               trial == 0 ? &probe_images : nullptr, probe_every,
                                                               checkpoint);
                                   }));
        const CollapseTrial& t = results.back();
        std::printf("%s model, weight %g, trial %d: accuracy %.2f%%, busiest expert %.1f%%, class spread %.3f, "
                    "%.0f s\n",
                    depth_name(depth), weight, t.trial, 100 * t.accuracy, 100 * t.busiest_share, t.spread, t.seconds);
        std::fflush(stdout);
      }

  CsvWriter trials_csv(args.out / "diagnosis_trials.csv");
  trials_csv.row("model", "aux_weight", "trial", "seed", "test_accuracy", "busiest_expert_share", "class_spread",
                 "collapsed", "seconds");
  CsvWriter probes_csv(args.out / "diagnosis_router.csv");
  probes_csv.row("model", "aux_weight", "step", "logit_difference_mean", "logit_difference_sd", "mean_p_times_1_minus_p",
                 "busier_expert_share", "feature_mean_norm", "feature_rms_distance");
  for (const CollapseTrial& t : results) {
    trials_csv.row(depth_name(t.depth), t.aux_weight, t.trial, t.seed, t.accuracy, t.busiest_share, t.spread,
                   t.collapsed() ? 1 : 0, t.seconds);
    for (const RouterProbe& p : t.probes)
      probes_csv.row(depth_name(t.depth), t.aux_weight, p.step, p.offset, p.spread, p.slope, p.busier_share,
                     p.feature_mean_norm, p.feature_rms_distance);
  }
  trials_csv.close();
  probes_csv.close();

  // Per model and weight: the trials, and the probed first trial.
  struct Arm {
    CnnDepth depth;
    double weight;
    std::vector<const CollapseTrial*> trials;
  };
  std::vector<Arm> arms;
  for (const double weight : weights)
    for (const CnnDepth depth : depths) {
      Arm a{depth, weight, {}};
      for (const CollapseTrial& t : results)
        if (t.depth == depth && t.aux_weight == weight) a.trials.push_back(&t);
      arms.push_back(a);
    }
  const auto arm_name = [](const Arm& a) {
    return std::string(depth_name(a.depth)) + ", " + fmt::format("{:g}", a.weight);
  };

  MarkdownTable outcome({"model, aux weight", "collapsed trials", "busiest expert's share (mean)", "test accuracy",
                         "class spread"});
  for (const Arm& a : arms) {
    std::vector<double> accuracy, busiest, spread;
    int collapsed = 0;
    for (const CollapseTrial* t : a.trials) {
      accuracy.push_back(t->accuracy);
      busiest.push_back(t->busiest_share);
      spread.push_back(t->spread);
      collapsed += t->collapsed() ? 1 : 0;
    }
    outcome.row({arm_name(a), std::to_string(collapsed) + " / " + std::to_string(a.trials.size()),
                 percent(mean(busiest), 1), percent(mean(accuracy), 2), fixed(mean(spread), 3)});
  }

  // The probed trials side by side: every probe up to the end of the warm-up, then fewer.
  const Index total_steps = steps_per_epoch(data.train.size(), preset.training.batch) * preset.training.epochs;
  const auto warm_up_end = static_cast<Index>(0.3 * static_cast<double>(total_steps));  // OneCycleLR's pct_start
  std::vector<std::string> header{"step"};
  for (const Arm& a : arms) header.push_back(arm_name(a));
  MarkdownTable offsets(header), slopes(header), features(header);
  const std::vector<RouterProbe>& reference = arms.front().trials.front()->probes;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    const Index step = reference[i].step;
    const bool shown = step <= warm_up_end + probe_every || step % (4 * probe_every) == 0 || i + 1 == reference.size();
    if (!shown) continue;
    std::vector<std::string> offset_row{std::to_string(step)}, slope_row{std::to_string(step)},
        feature_row{std::to_string(step)};
    for (const Arm& a : arms) {
      const RouterProbe& p = a.trials.front()->probes[i];
      offset_row.push_back(offset_text(p) + " (" + percent(p.busier_share, 0) + ")");
      slope_row.push_back(fixed(p.slope, 3));
      feature_row.push_back(fixed(p.feature_mean_norm, 2) + " / " + fixed(p.feature_rms_distance, 2));
    }
    offsets.row(offset_row);
    slopes.row(slope_row);
    features.row(feature_row);
  }

  // Sentences from the numbers.
  std::ostringstream collapses;
  for (const Arm& a : arms) {
    int collapsed = 0;
    for (const CollapseTrial* t : a.trials) collapsed += t->collapsed() ? 1 : 0;
    collapses << "- " << depth_name(a.depth) << " model at " << fmt::format("{:g}", a.weight) << ": " << collapsed
              << " of "
              << a.trials.size() << " trials collapsed.\n";
  }
  std::ostringstream start_state;
  for (const CnnDepth depth : depths) {
    const RouterProbe& p = arms[depth == depths.front() ? 0 : 1].trials.front()->probes.front();
    start_state << "- " << depth_name(depth) << " model: the MoE input's mean vector has norm "
                << fixed(p.feature_mean_norm, 2) << ", an image's RMS distance from it is "
                << fixed(p.feature_rms_distance, 2) << " (ratio "
                << fixed(p.feature_mean_norm / p.feature_rms_distance, 2) << "); the logit difference is "
                << offset_text(p) << " (|offset| / spread "
                << fixed(std::abs(p.offset) / std::max(p.spread, 1e-12), 2) << ").\n";
  }
  std::ostringstream end_state;
  for (const Arm& a : arms) {
    const RouterProbe& p = a.trials.front()->probes.back();
    end_state << "- " << arm_name(a) << ": logit difference " << offset_text(p) << " (|offset| / spread "
              << fixed(std::abs(p.offset) / std::max(p.spread, 1e-12), 2) << "), mean p(1 - p) "
              << fixed(p.slope, 3) << ", busier expert " << percent(p.busier_share, 0) << " of the probe images.\n";
  }

  std::ofstream report(args.out / "report.md");
  report << "# Experiment 3, diagnosis: when and why a router collapses (\"Do Experts Specialize?\")\n\n"
         << "Command: `moe_depth --preset " << args.preset << " --seed " << args.seed << "` (" << num_threads()
         << " threads, " << fixed(run.elapsed_seconds(), 0) << " s)\n\n"
         << "Both models of moe_depth (the MoE after four convolutions, base, and after one, short), 2 experts, "
            "this preset's data and training ("
         << data.train.size() << " training images, " << preset.training.epochs << " epochs of batch "
         << preset.training.batch << ", width " << preset.width << "), at " << weights.size()
         << " Switch aux weights, " << trials << " trials each; trial t of every model and weight starts from the "
            "seed of moe_depth's trial t. A trial counts as collapsed when the router sends at least 99% of the "
         << data.test.size() << " test images to one expert.\n\n"
         << "## How often each router collapsed\n\n"
         << collapses.str() << '\n'
         << outcome.str() << '\n'
         << "## The router during training (trial 1)\n\n"
         << "Probed on the first " << probe_count << " test images before training, every " << probe_every
         << " steps and at the end (" << total_steps << " steps; the learning rate warms up over the first "
         << warm_up_end << "). The router's logit difference between the two experts, as mean ± standard deviation "
            "over the images: the mean is an offset that every image shares, the standard deviation what tells "
            "images apart; both experts are used only while the offset is within about the spread of zero. In "
            "brackets, the share of the images whose top expert is the busier one.\n\n"
         << "Before training:\n\n"
         << start_state.str() << '\n'
         << "At the end:\n\n"
         << end_state.str() << '\n'
         << offsets.str() << '\n'
         << "The softmax's slope, the mean over the images of p (1 - p) with p the first expert's score: how much "
            "either loss can still move the router (largest, 0.25, when both experts score alike).\n\n"
         << slopes.str() << '\n'
         << "The MoE's input: the norm of its mean vector over the images / the RMS distance of an image's input "
            "from that mean (a ratio far above 1 means the input is mostly common to every image).\n\n"
         << features.str() << '\n'
         << "## Files\n\n"
         << "- `diagnosis_trials.csv`: every trial (accuracy, busiest expert's share, class spread, collapsed).\n"
         << "- `diagnosis_router.csv`: every probe of the first trials.\n";
  report.close();
  if (!report) {
    std::cerr << "error: could not write " << (args.out / "report.md") << '\n';
    return 1;
  }
  std::cout << '\n' << outcome.str() << "\nwall time " << fixed(run.elapsed_seconds(), 1) << " s; report in "
            << (args.out / "report.md").string() << '\n';
  run.finish();
  return 0;
}

}  // namespace moe::examples
