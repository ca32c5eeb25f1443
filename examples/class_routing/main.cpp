// Experiment 2 of "Do Experts Specialize?": do experts specialize along lines a person would draw? Trains
// the CNN + MoE model with 2, 3 and 5 experts, several trials each, and reads which expert each test image
// of each class is routed to. Expert numbers are arbitrary in each trial, so each trial's experts are
// matched to a reference trial's (the one using the most experts) by their class profiles (align_experts)
// before the tables are averaged.
// Writes report.md (Tables 2 and 3 with the document's beside ours), CSV tables and the class-by-class
// correlation heatmaps (Figures 2-4) into --out.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "common/cli.hpp"
#include "common/cnn_analysis.hpp"
#include "common/cnn_presets.hpp"
#include "common/format.hpp"
#include "common/progress.hpp"
#include "common/resume.hpp"
#include "moe/analysis/csv.hpp"
#include "moe/analysis/heatmap.hpp"

namespace {

using namespace moe::examples;
using moe::Index;
using moe::MatrixX;

struct TrialRouting {
  MatrixX<double> aligned_fractions;  // columns in the reference trial's expert order
  std::vector<Index> mapping;         // trial expert -> reference-trial expert
  double accuracy = 0;
  double spread = 0;        // class_spread of the routing table
  double busiest_share = 0;
  Index in_use = 0;
  GroupCorrelation groups;
  std::vector<double> group_share;  // per group: share of its images in its majority expert
  bool first_group_apart = false;   // the first group's main expert is not the second group's
  double majority_agreement = 0;    // classes whose majority expert is the reference trial's, over classes
  double mean_abs_difference = 0;   // of the aligned fractions from the reference trial's
  double correlation_similarity = 0;  // of the class-by-class correlation matrix with the reference trial's
};

struct ModelRouting {
  Index experts = 0;
  std::vector<TrialRouting> trials;
  int reference = 0;  // the trial whose expert numbering the others are aligned to
  moe::LabelExpertTable pooled{1, 1};  // every trial's aligned routing together
};

std::vector<std::string> expert_labels(Index n) {
  std::vector<std::string> labels;
  for (Index e = 0; e < n; ++e) labels.push_back("Expert " + std::to_string(e + 1));
  return labels;
}

Index majority_expert(const MatrixX<double>& fractions, Index c) {
  Index best = 0;
  fractions.row(c).maxCoeff(&best);
  return best;
}

std::string fraction_table(const MatrixX<double>& fractions, const std::vector<std::string>& classes) {
  std::vector<std::string> header{"Class"};
  for (const auto& e : expert_labels(fractions.cols())) header.push_back(e);
  MarkdownTable table(header);
  for (Index c = 0; c < fractions.rows(); ++c) {
    std::vector<std::string> row{classes[static_cast<std::size_t>(c)]};
    for (Index e = 0; e < fractions.cols(); ++e) row.push_back(percent(fractions(c, e)));
    table.row(row);
  }
  return table.str();
}

std::string document_table(const std::vector<std::vector<double>>& values) {
  std::vector<std::string> header{"Class"};
  for (const auto& e : expert_labels(static_cast<Index>(values.front().size()))) header.push_back(e);
  MarkdownTable table(header);
  for (std::size_t c = 0; c < values.size(); ++c) {
    std::vector<std::string> row{document::classes[c]};
    for (double v : values[c]) row.push_back(fixed(v, 1) + "%");
    table.row(row);
  }
  return table.str();
}

int run(moe::examples::Args args, const std::string& router_option) {
  // --router decides the results, so a resumed run takes it from the run's own settings.
  RunState run(args, "class_routing", {{"router", router_option}});
  const auto router = run.settings().find("router");
  const std::string router_name = router != run.settings().end() ? router->second : "top1";
  const bool expert_choice = router_name == "expert-choice";
  const CnnPreset preset = cnn_preset(args.preset, args.seed);
  const std::vector<Index> expert_counts = {2, 3, 5};

  const VisionData data = load_vision_data(args.data_dir, preset.data);
  const auto classes = static_cast<Index>(data.classes.size());
  const std::vector<Index> group_of = group_of_class(data.groups, classes);
  TrialOptions trial_options;
  trial_options.model.width = preset.width;
  trial_options.model.aux_weight = preset.aux_weight;
  trial_options.model.input = data.train.shape;
  trial_options.training = preset.training;
  trial_options.expert_choice = expert_choice;

  moe::Rng probe_rng(1);
  CnnMoEModel probe(trial_options.model, probe_rng);
  std::printf("class_routing: %s, %lld train / %lld test images, width %.4g, %d epochs, %d trials x {2, 3, 5} "
              "experts, %s, %d threads\n\n",
              data.dataset.c_str(), static_cast<long long>(data.train.size()),
              static_cast<long long>(data.test.size()), preset.width, preset.training.epochs, preset.trials,
              expert_choice ? "expert-choice routing" : "softmax top-1 routing", moe::num_threads());

  const Index steps = steps_per_epoch(data.train.size(), preset.training.batch) * preset.training.epochs *
                      preset.trials * static_cast<Index>(expert_counts.size());
  Progress progress("train", steps, 5.0);
  progress.set_done(run.steps_before());

  moe::CsvWriter trials_csv(args.out / "trials.csv");
  {
    trials_csv.field("experts").field("trial").field("seed").field("test_accuracy").field("expert_mapping");
    trials_csv.field("class_spread").field("busiest_expert_share").field("experts_in_use");
    trials_csv.field("within_group_correlation").field("between_group_correlation");
    for (const auto& g : data.groups) trials_csv.field(g.name + "_majority_share");
    trials_csv.field("majority_agreement").field("mean_abs_difference").field("correlation_similarity");
    trials_csv.end_row();
  }

  std::vector<ModelRouting> models;
  for (const Index experts : expert_counts) {
    ModelRouting model;
    model.experts = experts;
    model.pooled = moe::LabelExpertTable(classes, experts);
    trial_options.model.experts = experts;
    std::vector<TrialResult> runs;
    std::vector<std::uint64_t> seeds;
    for (int trial = 0; trial < preset.trials; ++trial) {
      seeds.push_back(args.seed * 1000 + static_cast<std::uint64_t>(experts * 100 + trial));
      // One unit per trial: a resumed run reads the finished trials' results and goes on with the next.
      runs.push_back(run.unit(concat(experts, "experts_trial", trial + 1), preset.checkpoint_every,
                              [&](UnitCheckpoint& checkpoint) {
                                return run_trial(
                                    data, trial_options, seeds.back(),
                                    [&](Index images, double loss) { progress.step(images, loss); }, checkpoint);
                              }));
      std::printf("%lld experts, trial %d: accuracy %.2f%%, %lld experts in use, %.0f s\n",
                  static_cast<long long>(experts), trial + 1, 100 * runs.back().learned.accuracy,
                  static_cast<long long>(experts_in_use(runs.back().routing.counts())), runs.back().seconds);
      if (expert_choice) {
        const auto& chosen = runs.back().learned.experts;
        std::printf("  %.1f%% of the test images went to no expert\n",
                    100.0 * static_cast<double>(std::count(chosen.begin(), chosen.end(), Index{-1})) /
                        static_cast<double>(chosen.size()));
      }
      std::fflush(stdout);
    }
    // The reference numbering: the trial that uses the most experts, then splits the classes the most; a
    // trial whose router collapsed onto one expert would give the others nothing to be matched by.
    for (std::size_t i = 1; i < runs.size(); ++i) {
      const auto key = [&](std::size_t k) {
        return std::pair(experts_in_use(runs[k].routing.counts()), class_spread(runs[k].routing.fractions()));
      };
      if (key(i) > key(static_cast<std::size_t>(model.reference))) model.reference = static_cast<int>(i);
    }
    const MatrixX<double> reference = runs[static_cast<std::size_t>(model.reference)].routing.fractions();
    const MatrixX<double> reference_correlation = runs[static_cast<std::size_t>(model.reference)].routing.correlation();
    for (int trial = 0; trial < preset.trials; ++trial) {
      const TrialResult& r = runs[static_cast<std::size_t>(trial)];
      const std::uint64_t seed = seeds[static_cast<std::size_t>(trial)];
      const MatrixX<double> fractions = r.routing.fractions();
      TrialRouting t;
      t.accuracy = r.learned.accuracy;
      t.mapping = align_experts(reference, fractions);
      const std::vector<Index> aligned = renumber_experts(r.learned.experts, t.mapping);
      model.pooled.add(data.test.labels, as_routing_column(aligned));
      moe::LabelExpertTable aligned_table(classes, experts);
      aligned_table.add(data.test.labels, as_routing_column(aligned));
      t.aligned_fractions = aligned_table.fractions();
      t.spread = class_spread(t.aligned_fractions);
      t.busiest_share = busiest_expert_share(r.routing.counts());
      t.in_use = experts_in_use(r.routing.counts());
      const MatrixX<double> correlation = r.routing.correlation();
      t.groups = group_correlation(correlation, group_of);
      for (const auto& g : data.groups) t.group_share.push_back(group_majority_share(r.routing.counts(), g.classes));
      t.first_group_apart = group_majority_expert(r.routing.counts(), data.groups[0].classes) !=
                            group_majority_expert(r.routing.counts(), data.groups[1].classes);
      Index agree = 0;
      for (Index c = 0; c < classes; ++c)
        agree += majority_expert(t.aligned_fractions, c) == majority_expert(reference, c) ? 1 : 0;
      t.majority_agreement = static_cast<double>(agree) / static_cast<double>(classes);
      t.mean_abs_difference = (t.aligned_fractions - reference).cwiseAbs().mean();
      t.correlation_similarity = upper_triangle_correlation(correlation, reference_correlation);

      std::string mapping_text;
      for (std::size_t e = 0; e < t.mapping.size(); ++e)
        mapping_text += (e ? " " : "") + std::to_string(t.mapping[e] + 1);
      trials_csv.field(experts).field(trial + 1).field(seed).field(t.accuracy).field(mapping_text);
      trials_csv.field(t.spread).field(t.busiest_share).field(t.in_use);
      trials_csv.field(t.groups.within).field(t.groups.between);
      for (double s : t.group_share) trials_csv.field(s);
      trials_csv.field(t.majority_agreement).field(t.mean_abs_difference).field(t.correlation_similarity);
      trials_csv.end_row();
      std::printf("  trial %d: class spread %.3f, busiest expert %.0f%%, within-group r %.2f, between %.2f, "
                  "agreement with trial %d %.0f%%\n",
                  trial + 1, t.spread, 100 * t.busiest_share, t.groups.within, t.groups.between, model.reference + 1,
                  100 * t.majority_agreement);
      model.trials.push_back(std::move(t));
    }
    models.push_back(std::move(model));
  }
  trials_csv.close();

  // Tables, figures and the per-model summary.
  std::ostringstream tables;
  MarkdownTable strength({"experts", "mean accuracy", "experts in use", "busiest expert's share", "class spread",
                          "within-group r", "between-group r", "gap",
                          "majority agreement with the reference", "correlation-matrix similarity with the reference",
                          "collapsed trials"});
  MarkdownTable group_shares([&] {
    std::vector<std::string> h{"experts"};
    for (const auto& g : data.groups) h.push_back(g.name + ": mean (lowest trial)");
    return h;
  }());
  // Findings 1-4 are judged on the trials whose router uses more than one expert: a collapsed router makes
  // no grouping at all, which finding 0 reports on its own.
  std::vector<double> gap_by_model;  // mean over used trials
  int collapsed_total = 0, trials_total = 0, used_2 = 0;
  bool footwear_each_trial = true;  // 2 experts: the first group in one expert, >= 88.5%, every used trial
  bool grouped_each_trial = true;   // 2 experts: within-group r > between-group r, every used trial
  double agreement_2 = std::numeric_limits<double>::quiet_NaN();
  for (const ModelRouting& m : models) {
    const MatrixX<double> fractions = m.pooled.fractions();
    const MatrixX<double> correlation = m.pooled.correlation();
    const std::string stem = std::to_string(m.experts) + "_experts";
    moe::write_matrix_csv(args.out / ("fractions_" + stem + ".csv"), fractions, data.classes, expert_labels(m.experts),
                          "class");
    moe::write_matrix_csv(args.out / ("correlation_" + stem + ".csv"), correlation, data.classes, data.classes,
                          "class");

    moe::HeatmapOptions corr;
    corr.title = "Class-by-class correlation of routing, " + std::to_string(m.experts) + " experts";
    corr.row_labels = data.classes;
    corr.column_labels = data.classes;
    corr.min = -1;
    corr.max = 1;
    corr.colours = moe::ColourMap::blue_white_red;
    corr.annotate = true;
    corr.annotation_decimals = 2;
    corr.colour_bar_label = "Pearson r";
    moe::write_heatmap_png(args.out / ("correlation_" + stem + ".png"), correlation, corr);

    // Every trial's aligned table, one block of rows per trial: consistent grouping shows as repeated blocks.
    MatrixX<double> stacked(static_cast<Index>(m.trials.size()) * m.experts, classes);
    std::vector<std::string> rows;
    for (std::size_t t = 0; t < m.trials.size(); ++t)
      for (Index e = 0; e < m.experts; ++e) {
        stacked.row(static_cast<Index>(t) * m.experts + e) = m.trials[t].aligned_fractions.col(e).transpose();
        rows.push_back("trial " + std::to_string(t + 1) + ", expert " + std::to_string(e + 1));
      }
    moe::HeatmapOptions trials_fig;
    trials_fig.title = "Share of each class per expert, aligned to trial " + std::to_string(m.reference + 1) + ", " +
                       std::to_string(m.experts) + " experts";
    trials_fig.row_labels = rows;
    trials_fig.column_labels = data.classes;
    trials_fig.min = 0;
    trials_fig.max = 1;
    trials_fig.annotate = true;
    trials_fig.annotation_decimals = 2;
    trials_fig.colour_bar_label = "share of the class's test images";
    moe::write_heatmap_png(args.out / ("trials_" + stem + ".png"), stacked, trials_fig);

    std::vector<double> accuracy, spread, busiest, in_use, within, between, gap, agreement, similarity;
    std::vector<double> used_gap, used_agreement;
    std::vector<std::vector<double>> shares(data.groups.size());
    int collapsed = 0;  // trials whose router sends (nearly) every image to one expert
    for (std::size_t t = 0; t < m.trials.size(); ++t) {
      const TrialRouting& r = m.trials[t];
      accuracy.push_back(r.accuracy);
      spread.push_back(r.spread);
      collapsed += r.in_use == 1 ? 1 : 0;
      busiest.push_back(r.busiest_share);
      in_use.push_back(static_cast<double>(r.in_use));
      within.push_back(r.groups.within);
      between.push_back(r.groups.between);
      gap.push_back(r.groups.gap());
      for (std::size_t g = 0; g < data.groups.size(); ++g) shares[g].push_back(r.group_share[g]);
      if (static_cast<int>(t) != m.reference) {
        agreement.push_back(r.majority_agreement);
        // NaN when either trial routes every class alike (a collapsed router): nothing to compare.
        if (!std::isnan(r.correlation_similarity)) similarity.push_back(r.correlation_similarity);
      }
      ++trials_total;
      if (r.in_use == 1) {
        ++collapsed_total;
        continue;
      }
      used_gap.push_back(r.groups.gap());
      if (static_cast<int>(t) != m.reference) used_agreement.push_back(r.majority_agreement);
      if (m.experts == 2) {
        ++used_2;
        footwear_each_trial = footwear_each_trial && r.group_share[0] >= 0.885 && r.first_group_apart;
        grouped_each_trial = grouped_each_trial && r.groups.gap() > 1e-9;
      }
    }
    if (m.experts == 2 && !used_agreement.empty()) agreement_2 = mean(used_agreement);
    gap_by_model.push_back(mean(used_gap));
    strength.row({std::to_string(m.experts), percent(mean(accuracy), 2), fixed(mean(in_use), 1),
                  percent(mean(busiest), 0), fixed(mean(spread), 3),
                  fixed(mean(within), 2), fixed(mean(between), 2), fixed(mean(gap), 2),
                  agreement.empty() ? "(one trial)" : percent(mean(agreement), 0),
                  similarity.empty() ? "n/a" : fixed(mean(similarity), 2),
                  std::to_string(collapsed) + " / " + std::to_string(m.trials.size())});
    std::vector<std::string> share_row{std::to_string(m.experts)};
    for (const auto& s : shares)
      share_row.push_back(percent(mean(s)) + " (" + percent(*std::min_element(s.begin(), s.end())) + ")");
    group_shares.row(share_row);

    tables << "### " << m.experts << " experts\n\n"
           << "Class breakdown of expert routing, " << data.dataset << ", averaged over " << m.trials.size()
           << " trials after aligning experts to trial " << m.reference + 1 << " (`fractions_" << stem << ".csv`; each trial's table is in "
           << "`trials_" << stem << ".png`):\n\n"
           << fraction_table(fractions, data.classes) << '\n'
           << "Correlation matrix of the averaged table: `correlation_" << stem << ".png` (`.csv`).\n\n";
    if (m.experts == 2) tables << "The document's Table 2 (CIFAR-10, 10 trials):\n\n" << document_table(document::table2) << '\n';
    if (m.experts == 3) tables << "The document's Table 3 (CIFAR-10, 10 trials):\n\n" << document_table(document::table3) << '\n';
  }

  // The document's Table 2, read the same way: vehicles' and animals' share in their majority expert.
  const auto doc_group_share = [](const std::vector<Index>& cls) {
    double e1 = 0, e2 = 0;
    for (Index c : cls) {
      e1 += document::table2[static_cast<std::size_t>(c)][0];
      e2 += document::table2[static_cast<std::size_t>(c)][1];
    }
    return std::max(e1, e2) / (e1 + e2);
  };
  const bool weakening = gap_by_model[0] > gap_by_model[1] && gap_by_model[1] > gap_by_model[2];
  const auto held = [](bool h) { return h ? "**held**" : "**did not hold**"; };
  std::string group_names;
  for (std::size_t g = 0; g < data.groups.size(); ++g) {
    group_names += (g ? "; " : "") + data.groups[g].name + ": ";
    for (std::size_t i = 0; i < data.groups[g].classes.size(); ++i)
      group_names += (i ? ", " : "") + data.classes[static_cast<std::size_t>(data.groups[g].classes[i])];
  }

  std::ofstream report(args.out / "report.md");
  report << "# Experiment 2: which classes go to which expert (\"Do Experts Specialize?\")\n\n"
         << "Command: `class_routing --preset " << args.preset << " --seed " << args.seed << " --router " << router_name
         << "` (" << moe::num_threads() << " threads, " << fixed(run.elapsed_seconds(), 0) << " s)\n\n"
         << describe_scaling(preset, data, probe.forward_macs_per_image()) << '\n'
         << describe_model(preset, data, probe.moe_features(), probe.expert_hidden()) << '\n'
         << (expert_choice
                 ? "Router: expert choice (Zhou et al. 2022) in place of the document's softmax top-1 router, capacity "
                   "factor " + fixed(moe::ExpertChoice<float>::Options{}.capacity_factor, 1) +
                       ": in each batch (and each evaluation batch of " + std::to_string(preset.training.eval_batch) +
                       " images) every expert takes its batch / N best-scoring images, an image gets 0..N experts, "
                       "and there is no aux loss. An image counts for the expert of highest score that took it; "
                       "images no expert took count for none.\n\n"
                 : std::string())
         << "Class groups (" << group_names << ")"
         << (data.dataset == "CIFAR-10" ? " are the document's vehicles and animals."
                                        : " play the part of CIFAR-10's vehicles and animals: footwear is the small "
                                          "group of alike classes, as vehicles are.")
         << "\n\n"
         << "Expert numbers are arbitrary in each trial. Each trial's experts are matched to a reference trial's "
            "(the one that uses the most experts, then splits the classes most: a collapsed router would give "
            "nothing to match by) by "
            "the permutation that makes their class profiles (the share of each class each expert receives) most "
            "alike (all permutations tried), and the tables are averaged in that order. The correlation matrices "
            "do not depend on the numbering.\n\n"
         << "## Routing tables (Tables 2 and 3)\n\n"
         << tables.str()
         << "## How strongly and how consistently classes are grouped\n\n"
         << "Per model, means over trials: *experts in use* receive at least 1% of the test images; the *busiest "
            "expert's share* is 1/N for a balanced load and 100% for a router that sends everything to one expert; "
            "*class spread* is the root mean over experts of the variance over classes of a class's share in the "
            "expert, 0 when routing ignores the class (a collapsed router included) and 0.5 for a clean 2-way split "
            "of the classes; "
            "*within-group r* and "
            "*between-group r* are the mean class-by-class correlations of routing between two classes of the same "
            "group and of different groups; *majority agreement* is the share of classes whose main expert is the "
            "same as in the reference trial (after alignment); *correlation-matrix similarity* is the Pearson "
            "correlation of a trial's class-by-class correlations with the reference trial's; both are averaged over "
            "the other trials (where a collapsed trial makes it undefined, it is left out). A *collapsed* trial's router "
            "sends at least 99% of the test images to one expert; such trials are kept in every average and in the "
            "findings.\n\n"
         << strength.str() << '\n'
         << "Share of each group's test images in the one expert receiving most of them, mean over trials (lowest "
            "trial in brackets). From the document's Table 2 (2 experts): vehicles "
         << percent(doc_group_share({0, 1, 8, 9})) << ", animals " << percent(doc_group_share({2, 3, 4, 5, 6, 7}))
         << "; its text says over 88.5% of vehicle images go to one expert in every trial.\n\n"
         << group_shares.str() << '\n'
         << "## Findings\n\n"
         << "0. *The Switch aux loss keeps the experts in use* (the document: with it, experts are used about "
            "equally): "
         << held(collapsed_total == 0) << ": " << collapsed_total << " of " << trials_total
         << " trials ended with the router sending at least 99% of the test images to one expert. Findings 1-4 are "
            "judged on the other trials ("
         << used_2 << " with 2 experts), since a collapsed router makes no grouping to judge.\n"
         << "1. *With 2 experts, one intuitive group goes to one expert in every trial* (the document: over 88.5% "
            "of vehicle images, every trial; here at least 88.5% of the "
         << data.groups[0].name << " group's images in one expert that is not the main expert of the "
         << data.groups[1].name << "): " << (used_2 > 0 ? held(footwear_each_trial) : "not tested (every trial collapsed)")
         << ".\n"
         << "2. *The split follows high-level lines* (2 experts: classes of one group are routed alike, within-group "
            "correlation above between-group, in every trial): "
         << (used_2 > 0 ? held(grouped_each_trial) : "not tested (every trial collapsed)") << ".\n"
         << "3. *The split is consistent across trials* (2 experts; taken here as the main expert of at least 90% "
            "of classes matching the reference trial's, on average over the other trials): "
         << (std::isnan(agreement_2) ? std::string("not tested (fewer than two trials that use both experts)")
                                     : std::string(held(agreement_2 >= 0.9)) + " (" + percent(agreement_2, 0) + ")")
         << ".\n"
         << "4. *Grouping by high-level subject weakens as experts are added* (within- minus between-group "
            "correlation falls from 2 to 3 to 5 experts): "
         << held(weakening) << " (" << fixed(gap_by_model[0], 2) << ", " << fixed(gap_by_model[1], 2)
         << ", " << fixed(gap_by_model[2], 2) << ").\n\n"
         << "With 2 experts every class's routing is one number (its share in expert 1), so each correlation is "
            "+1 or -1, as the document notes for Experiment 3; the 3- and 5-expert matrices carry more detail.\n\n"
         << "## Files\n\n"
         << "- `fractions_N_experts.csv`, `correlation_N_experts.csv`: the averaged tables and their correlation "
            "matrices; `correlation_N_experts.png`: the matrices as heatmaps (the document's Figures 2-4).\n"
         << "- `trials_N_experts.png`: every trial's aligned table; `trials.csv`: per-trial accuracy, the expert "
            "mapping to the reference trial, and the figures above.\n";
  report.close();
  if (!report) {
    std::cerr << "error: could not write " << (args.out / "report.md") << '\n';
    return 1;
  }
  std::cout << '\n' << strength.str() << "\nwall time " << fixed(run.elapsed_seconds(), 1)
            << " s; report in " << (args.out / "report.md").string() << '\n';
  run.finish();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::examples::Args args;
  CLI::App app("class_routing: which classes each expert of a CNN + MoE receives, 2, 3 and 5 "
               "experts (Experiment 2 of \"Do Experts Specialize?\")");
  moe::examples::add_common_options(app, args,
                                    {.name = "class_routing", .presets = {"quick", "smoke", "paper"},
                                     .default_out = "out/class_routing", .resumable = true});
  std::string router = "top1";
  app.add_option("--router", router,
                 "top1: the document's softmax top-1 router with the Switch aux loss; expert-choice: each expert "
                 "takes its top batch / N images of each batch (Zhou et al. 2022), no aux loss (not with --resume)")
      ->check(CLI::IsMember({"top1", "expert-choice"}))
      ->capture_default_str()
      ->excludes("--resume");
  return moe::examples::run_main(app, args, argc, argv, [&] { return run(args, router); });
}
