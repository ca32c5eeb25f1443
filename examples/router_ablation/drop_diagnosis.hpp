#pragma once
// router_ablation --preset diagnose: what drives the random-router drop. Trains the 2-expert model of the
// quick preset (the same seed as its first 2-expert trial) and evaluates the trained experts with the expert
// and the gate of each test image set by hand; then trains it again at the document's balancing weight and
// for the document's number of epochs. Writes report.md and diagnosis_*.csv; the report states only what this
// run measured.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <functional>
#include <limits>
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

/// The trained experts with each image's expert and gate (K = 1) chosen by `choose`, in place of the MoE
/// layer: row t's output is gate(t) x expert(t)'s output. `choose(scores, first, experts, gates)` reads the
/// learned router's softmax scores of rows first, first + 1, ... of the evaluated set.
struct ChosenRoutingLayer {
  using Choose = std::function<void(const Matrix& scores, Index first, std::vector<Index>& experts,
                                    std::vector<float>& gates)>;
  CnnMoELayer& moe;
  Choose choose;
  Index first = 0;
  std::vector<Index> experts;
  std::vector<float> gates;
  Matrix output;

  void eval() { moe.eval(); }
  const Matrix& forward(ConstRef<float> features) {
    const Index rows = features.rows();
    const Matrix scores = moe.router().forward(features);
    experts.assign(static_cast<std::size_t>(rows), 0);
    gates.assign(static_cast<std::size_t>(rows), 1.0f);
    choose(scores, first, experts, gates);
    output.setZero(rows, moe.out_features());
    for (Index e = 0; e < moe.num_experts(); ++e) {
      bool used = false;
      for (Index t = 0; t < rows; ++t) used = used || experts[static_cast<std::size_t>(t)] == e;
      if (!used) continue;
      const auto& y = moe.expert(e).forward(features);
      for (Index t = 0; t < rows; ++t)
        if (experts[static_cast<std::size_t>(t)] == e) output.row(t) = gates[static_cast<std::size_t>(t)] * y.row(t);
    }
    return output;
  }
};

/// Accuracy over a data set and per class.
struct ClassAccuracy {
  double overall = 0;
  std::vector<double> per_class;
};

inline ClassAccuracy evaluate_chosen(CnnMoEModel& model, const ImageDataset<float>& data, Index classes, Index batch,
                                     ChosenRoutingLayer::Choose choose) {
  model.eval();
  ChosenRoutingLayer layer{model.moe(), std::move(choose), 0, {}, {}, {}};
  std::vector<Index> correct(static_cast<std::size_t>(classes), 0), total(static_cast<std::size_t>(classes), 0);
  for (Index start = 0; start < data.size(); start += batch) {
    const Index rows = std::min(batch, data.size() - start);
    layer.first = start;
    const Matrix& logits = model.forward_through(layer, data.images.middleRows(start, rows));
    for (Index t = 0; t < rows; ++t) {
      const auto label = static_cast<std::size_t>(data.labels[static_cast<std::size_t>(start + t)]);
      Index predicted = 0;
      logits.row(t).maxCoeff(&predicted);
      ++total[label];
      correct[label] += predicted == static_cast<Index>(label) ? 1 : 0;
    }
  }
  ClassAccuracy result;
  Index all_correct = 0, all = 0;
  for (std::size_t c = 0; c < correct.size(); ++c) {
    result.per_class.push_back(total[c] > 0 ? static_cast<double>(correct[c]) / static_cast<double>(total[c])
                                            : std::numeric_limits<double>::quiet_NaN());
    all_correct += correct[c];
    all += total[c];
  }
  result.overall = static_cast<double>(all_correct) / static_cast<double>(all);
  return result;
}

/// How the learned router splits the test set at one point of training.
struct RoutingSnapshot {
  int epoch = 0;  // 0: before training
  double busiest_share = 0, class_majority_share = 0;
  Index in_use = 0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(epoch, busiest_share, class_majority_share, in_use);
  }
};

inline RoutingSnapshot routing_snapshot(CnnMoEModel& model, const VisionData& data, Index batch, int epoch) {
  const Evaluation e = evaluate(model, data.test, batch);
  LabelExpertTable table(static_cast<Index>(data.classes.size()), model.moe().num_experts());
  table.add(data.test.labels, as_routing_column(e.experts));
  return {epoch, busiest_expert_share(table.counts()), table.fractions().rowwise().maxCoeff().mean(),
          experts_in_use(table.counts())};
}

/// What the diagnosis measured on the main arm's trained model beside the arm itself.
struct DropDetail {
  std::vector<Index> main_expert;            // per class
  std::vector<double> main_share;            // per class
  std::vector<double> learned_by_class;      // through the learned router
  std::vector<double> main_by_class;         // forced through the class's main expert, gate 1
  std::vector<double> other_by_class;        // forced through the other experts, gate 1 (mean over them)
  std::vector<std::pair<std::string, double>> gate_variants;  // name, test accuracy

  template <class Archive>
  void serialize(Archive& archive) {
    archive(main_expert, main_share, learned_by_class, main_by_class, other_by_class, gate_variants);
  }
};

/// One arm of the diagnosis: a 2-expert model trained at one balancing weight for some epochs.
struct DropArm {
  std::string name;
  double aux_weight = 0;
  int epochs = 0;
  double learned = 0, random = 0;  // test accuracy through the learned router and through RandomRouter
  double not_picked = 0;           // through an expert the learned router did not pick (gate 1)
  std::vector<RoutingSnapshot> snapshots;  // before training and after each epoch
  MatrixX<double> fractions;               // class x expert, learned routing of the test set, at the end
  DropDetail detail;                       // the main arm's; empty in the others
  double seconds = 0;
  double drop_percent() const { return 100.0 * (learned - random) / learned; }

  template <class Archive>
  void serialize(Archive& archive) {
    archive(name, aux_weight, epochs, learned, random, not_picked, snapshots, fractions, detail, seconds);
  }
};

/// Trains one arm as run_trial trains a trial (same seed, same draws), recording the routing before training
/// and after each epoch; with `with_detail`, also evaluates the forced-routing and gate variants. The
/// training goes on from the unit's checkpoint, if there is one.
inline DropArm run_drop_arm(const VisionData& data, const CnnPreset& preset, std::string name, double aux_weight,
                            int epochs, std::uint64_t seed, Progress& progress, bool with_detail,
                            UnitCheckpoint& checkpoint) {
  DropArm arm;
  arm.name = std::move(name);
  arm.aux_weight = aux_weight;
  arm.epochs = epochs;
  const auto classes = static_cast<Index>(data.classes.size());
  const Index batch = preset.training.eval_batch;
  CnnMoEOptions options;
  options.width = preset.width;
  options.aux_weight = aux_weight;
  options.input = data.train.shape;
  options.classes = classes;
  options.experts = 2;
  TrainingOptions training = preset.training;
  training.epochs = epochs;

  Rng rng(seed);
  CnnMoEModel model(options, rng);
  arm.snapshots.push_back(routing_snapshot(model, data, batch, 0));
  checkpoint.keep(arm.snapshots);
  train_cnn_moe(
      model, data, training, rng, [&](Index images, double loss) { progress.step(images, loss); },
      [&](const EpochSummary& s) { arm.snapshots.push_back(routing_snapshot(model, data, batch, s.epoch)); },
      checkpoint);
  const Evaluation learned = evaluate(model, data.test, batch);
  arm.learned = learned.accuracy;
  LabelExpertTable table(classes, options.experts);
  table.add(data.test.labels, as_routing_column(learned.experts));
  arm.fractions = table.fractions();
  {
    auto random = model.moe().with_router<RandomRouter>({.seed = seed * 7919 + 17}, rng);
    arm.random = evaluate_through(model, random, data.test, batch).accuracy;
  }
  // Each image's learned expert, and a draw of another expert (uniform over the other N - 1).
  const std::vector<Index>& picked = learned.experts;
  const Index n = options.experts;
  std::vector<Index> other(picked.size()), drawn(picked.size());
  Rng draws(seed * 7919 + 29);
  for (std::size_t i = 0; i < picked.size(); ++i) {
    other[i] = (picked[i] + 1 + uniform_index(draws, n - 1)) % n;
    drawn[i] = uniform_index(draws, n);
  }
  const auto fixed_experts = [](const std::vector<Index>& chosen) {
    return [&chosen](const Matrix&, Index first, std::vector<Index>& experts, std::vector<float>&) {
      for (std::size_t t = 0; t < experts.size(); ++t) experts[t] = chosen[static_cast<std::size_t>(first) + t];
    };
  };
  arm.not_picked = evaluate_chosen(model, data.test, classes, batch, fixed_experts(other)).overall;

  if (with_detail) {
    DropDetail& detail = arm.detail;
    const auto top_score = [](const Matrix& scores, Index t) { return scores.row(t).maxCoeff(); };
    const auto learned_gate = [&](const Matrix& scores, Index first, std::vector<Index>& experts,
                                  std::vector<float>& gates) {
      for (std::size_t t = 0; t < experts.size(); ++t) {
        experts[t] = picked[static_cast<std::size_t>(first) + t];
        gates[t] = top_score(scores, static_cast<Index>(t));
      }
    };
    const ClassAccuracy through_learned = evaluate_chosen(model, data.test, classes, batch, learned_gate);
    detail.gate_variants = {
        {"learned expert, learned gate (the top softmax score: the model as trained)", through_learned.overall},
        {"learned expert, gate 1", evaluate_chosen(model, data.test, classes, batch, fixed_experts(picked)).overall},
        {"random expert, gate 1 (as RandomRouter)",
         evaluate_chosen(model, data.test, classes, batch, fixed_experts(drawn)).overall},
        {"random expert, gate = the learned router's top score",
         evaluate_chosen(model, data.test, classes, batch,
                         [&](const Matrix& scores, Index first, std::vector<Index>& experts, std::vector<float>& gates) {
                           for (std::size_t t = 0; t < experts.size(); ++t) {
                             experts[t] = drawn[static_cast<std::size_t>(first) + t];
                             gates[t] = top_score(scores, static_cast<Index>(t));
                           }
                         })
             .overall},
        {"random expert, gate = its own softmax score",
         evaluate_chosen(model, data.test, classes, batch,
                         [&](const Matrix& scores, Index first, std::vector<Index>& experts, std::vector<float>& gates) {
                           for (std::size_t t = 0; t < experts.size(); ++t) {
                             experts[t] = drawn[static_cast<std::size_t>(first) + t];
                             gates[t] = scores(static_cast<Index>(t), experts[t]);
                           }
                         })
             .overall},
    };
    // Every class forced through each expert, gate 1.
    std::vector<ClassAccuracy> forced;
    for (Index e = 0; e < n; ++e) {
      const std::vector<Index> all_e(picked.size(), e);
      forced.push_back(evaluate_chosen(model, data.test, classes, batch, fixed_experts(all_e)));
    }
    detail.learned_by_class = through_learned.per_class;
    for (Index c = 0; c < classes; ++c) {
      Index main = 0;
      detail.main_share.push_back(arm.fractions.row(c).maxCoeff(&main));
      detail.main_expert.push_back(main);
      detail.main_by_class.push_back(forced[static_cast<std::size_t>(main)].per_class[static_cast<std::size_t>(c)]);
      double others = 0;
      for (Index e = 0; e < n; ++e)
        if (e != main) others += forced[static_cast<std::size_t>(e)].per_class[static_cast<std::size_t>(c)];
      detail.other_by_class.push_back(others / static_cast<double>(n - 1));
    }
  }
  arm.seconds = checkpoint.elapsed_seconds();
  return arm;
}

inline std::string min_max_text(const std::vector<double>& v, const std::vector<std::string>& names) {
  const auto low = std::min_element(v.begin(), v.end()), high = std::max_element(v.begin(), v.end());
  return percent(*low, 1) + " (" + names[static_cast<std::size_t>(low - v.begin())] + ") to " + percent(*high, 1) +
         " (" + names[static_cast<std::size_t>(high - v.begin())] + ")";
}

/// router_ablation --preset diagnose: one unit of `run` per arm.
inline int run_drop_diagnosis(const Args& args, RunState& run) {
  const CnnPreset preset = cnn_preset(args.preset, args.seed);
  const CnnPreset document = cnn_preset("paper", args.seed);
  const VisionData data = load_vision_data(args.data_dir, preset.data);
  // The quick preset's first 2-expert trial, so that the main arm is that trial.
  const std::uint64_t seed = args.seed * 1000 + 2 * 100;
  struct Plan {
    std::string name;
    double aux_weight;
    int epochs;
  };
  const std::vector<Plan> plans = {
      {"this preset", preset.aux_weight, preset.training.epochs},
      {"the document's balancing weight", document.aux_weight, preset.training.epochs},
      {"the document's epochs", preset.aux_weight, document.training.epochs},
  };
  Index steps = 0;
  for (const Plan& p : plans) steps += steps_per_epoch(data.train.size(), preset.training.batch) * p.epochs;
  std::printf("router_ablation --preset diagnose: %s, %lld train / %lld test images, width %.4g, 2 experts, seed "
              "%llu; %zu trainings, %d threads\n\n",
              data.dataset.c_str(), static_cast<long long>(data.train.size()),
              static_cast<long long>(data.test.size()), preset.width, static_cast<unsigned long long>(seed),
              plans.size(), num_threads());
  Progress progress("train", steps, 5.0);
  progress.set_done(run.steps_before());
  std::vector<DropArm> arms;
  for (std::size_t i = 0; i < plans.size(); ++i) {
    arms.push_back(run.unit(concat("arm", i + 1), preset.checkpoint_every, [&](UnitCheckpoint& checkpoint) {
      return run_drop_arm(data, preset, plans[i].name, plans[i].aux_weight, plans[i].epochs, seed, progress, i == 0,
                          checkpoint);
    }));
    const DropArm& a = arms.back();
    std::printf("%s (aux weight %g, %d epochs): learned %.2f%%, random %.2f%% (%.2f%% decrease), through the expert "
                "not picked %.2f%%, %.0f s\n",
                a.name.c_str(), a.aux_weight, a.epochs, 100 * a.learned, 100 * a.random, a.drop_percent(),
                100 * a.not_picked, a.seconds);
    std::fflush(stdout);
  }
  const DropArm& main = arms.front();
  const DropDetail& detail = main.detail;
  const auto classes = data.classes.size();
  double forward_macs = 0;
  {
    CnnMoEOptions o;
    o.width = preset.width;
    o.input = data.train.shape;
    Rng probe_rng(1);
    forward_macs = CnnMoEModel(o, probe_rng).forward_macs_per_image();
  }

  // CSV files.
  {
    CsvWriter csv(args.out / "diagnosis_classes.csv");
    csv.row("class", "main_expert", "share_in_main_expert", "accuracy_learned_router", "accuracy_main_expert_gate1",
            "accuracy_other_experts_gate1");
    for (std::size_t c = 0; c < classes; ++c)
      csv.row(data.classes[c], detail.main_expert[c] + 1, detail.main_share[c], detail.learned_by_class[c],
              detail.main_by_class[c], detail.other_by_class[c]);
    csv.close();
    CsvWriter gates(args.out / "diagnosis_gates.csv");
    gates.row("routing", "test_accuracy");
    for (const auto& [name, accuracy] : detail.gate_variants) gates.row(name, accuracy);
    gates.close();
    CsvWriter arms_csv(args.out / "diagnosis_arms.csv");
    arms_csv.row("arm", "aux_weight", "epochs", "learned_accuracy", "random_accuracy", "decrease_percent",
                 "accuracy_expert_not_picked", "busiest_expert_share", "experts_in_use", "class_majority_share",
                 "seconds");
    CsvWriter epochs_csv(args.out / "diagnosis_epochs.csv");
    epochs_csv.row("arm", "epoch", "busiest_expert_share", "experts_in_use", "class_majority_share");
    for (const DropArm& a : arms) {
      const RoutingSnapshot& end = a.snapshots.back();
      arms_csv.row(a.name, a.aux_weight, a.epochs, a.learned, a.random, a.drop_percent(), a.not_picked,
                   end.busiest_share, end.in_use, end.class_majority_share, a.seconds);
      for (const RoutingSnapshot& s : a.snapshots)
        epochs_csv.row(a.name, s.epoch, s.busiest_share, s.in_use, s.class_majority_share);
    }
    arms_csv.close();
    epochs_csv.close();
  }

  // The report: what this run measured, and nothing else.
  MarkdownTable class_table({"class", "main expert", "share in its main expert", "accuracy, learned router",
                             "through its main expert (gate 1)", "through the other expert (gate 1)"});
  for (std::size_t c = 0; c < classes; ++c)
    class_table.row({data.classes[c], std::to_string(detail.main_expert[c] + 1), percent(detail.main_share[c], 1),
                     percent(detail.learned_by_class[c], 1), percent(detail.main_by_class[c], 1),
                     percent(detail.other_by_class[c], 1)});
  MarkdownTable gate_table({"routing of each test image", "test accuracy"});
  double random_low = 1, random_high = 0, learned_low = 1, learned_high = 0;
  for (const auto& [name, accuracy] : detail.gate_variants) {
    gate_table.row({name, percent(accuracy, 2)});
    const bool random = name.starts_with("random");
    (random ? random_low : learned_low) = std::min(random ? random_low : learned_low, accuracy);
    (random ? random_high : learned_high) = std::max(random ? random_high : learned_high, accuracy);
  }
  MarkdownTable arm_table({"arm", "aux weight", "epochs", "learned", "random", "% decrease",
                           "through the expert not picked", "busiest expert's share", "experts in use",
                           "class's share in its main expert", "time"});
  for (const DropArm& a : arms) {
    const RoutingSnapshot& end = a.snapshots.back();
    arm_table.row({a.name, fmt::format("{:g}", a.aux_weight), std::to_string(a.epochs), percent(a.learned, 2),
                   percent(a.random, 2), fixed(a.drop_percent(), 2) + "%", percent(a.not_picked, 2),
                   percent(end.busiest_share, 1), std::to_string(end.in_use), percent(end.class_majority_share, 1),
                   fixed(a.seconds, 0) + " s"});
  }
  std::vector<std::string> epoch_header{"arm"};
  std::size_t most_epochs = 0;
  for (const DropArm& a : arms) most_epochs = std::max(most_epochs, a.snapshots.size());
  for (std::size_t e = 0; e < most_epochs; ++e) epoch_header.push_back(e == 0 ? "untrained" : "epoch " + std::to_string(e));
  MarkdownTable epoch_table(epoch_header);
  for (const DropArm& a : arms) {
    std::vector<std::string> row{a.name};
    for (std::size_t e = 0; e < most_epochs; ++e)
      row.push_back(e < a.snapshots.size() ? percent(a.snapshots[e].busiest_share, 0) + " / " +
                                                 percent(a.snapshots[e].class_majority_share, 0)
                                           : "");
    epoch_table.row(row);
  }

  const double mean_share = mean(detail.main_share);
  std::ofstream report(args.out / "report.md");
  report << "# Experiment 1, diagnosis: what drives the random-router drop (\"Do Experts Specialize?\")\n\n"
         << "Command: `router_ablation --preset " << args.preset << " --seed " << args.seed << "` (" << num_threads()
         << " threads, " << fixed(run.elapsed_seconds(), 0) << " s)\n\n"
         << "Preset `" << preset.name << "`: the `quick` preset's data and model (" << data.dataset << ", "
         << data.train.size() << " training images, " << data.test.size() << " test images; filters scaled by "
         << preset.width << ", so the MoE routes " << scaled_filters(512, preset.width) << " features; "
         << fixed(forward_macs / 1e6, 2) << " M multiply-accumulates per image forward), "
         << preset.training.epochs << " epochs of batch " << preset.training.batch << ", max lr "
         << preset.training.max_lr << ", K = 1. "
         << "This diagnosis trains " << plans.size() << " models with 2 experts, all from seed " << seed
         << " (the seed of the `quick` preset's first 2-expert trial): one with "
            "these settings, "
            "one with the document's balancing weight (" << fmt::format("{:g}", document.aux_weight)
         << ") and one trained for the document's " << document.training.epochs << " epochs. Everything below is "
            "measured on the " << data.test.size() << " test images by this run.\n\n"
         << "## The drop\n\n"
         << "With these settings the learned router scores " << percent(main.learned, 2) << " and a random "
            "router in the same trained model " << percent(main.random, 2) << ": a decrease of "
         << fixed(main.drop_percent(), 2) << "%" << ". Through the expert the learned router did not pick (gate 1), "
            "accuracy is " << percent(main.not_picked, 2) << "; chance is " << percent(1.0 / static_cast<double>(classes), 0)
         << ".\n\n"
         << "## Does each class go to one expert, and can the other expert classify it?\n\n"
         << "Each class's share in its main expert: mean " << percent(mean_share, 1) << ", from "
         << min_max_text(detail.main_share, data.classes) << ". Forced through its main expert (gate 1), a class "
            "scores from " << min_max_text(detail.main_by_class, data.classes)
         << "; forced through the other expert, from " << min_max_text(detail.other_by_class, data.classes) << ".\n\n"
         << class_table.str() << '\n'
         << "## Does the gate matter?\n\n"
         << "The same trained model, with each test image's expert and gate set by hand (the random draws are the "
            "same in the three random rows). Learned routing spans " << fixed(100 * (learned_high - learned_low), 2)
         << " points over its gate variants, random routing " << fixed(100 * (random_high - random_low), 2)
         << " points.\n\n"
         << gate_table.str() << '\n'
         << "## The balancing weight and the training length\n\n"
         << arm_table.str() << '\n'
         << "Routing of the test set before training (untrained) and after each epoch, as the busiest expert's "
            "share / the mean class's share in its main expert:\n\n"
         << epoch_table.str() << '\n'
         << "## Files\n\n"
         << "- `diagnosis_classes.csv`: the per-class table; `diagnosis_gates.csv`: the gate variants.\n"
         << "- `diagnosis_arms.csv`, `diagnosis_epochs.csv`: each arm at the end and after each epoch.\n";
  report.close();
  if (!report) {
    std::cerr << "error: could not write " << (args.out / "report.md") << '\n';
    return 1;
  }
  std::cout << '\n' << arm_table.str() << "\nwall time " << fixed(run.elapsed_seconds(), 1)
            << " s; report in " << (args.out / "report.md").string() << '\n';
  run.finish();
  return 0;
}

}  // namespace moe::examples
