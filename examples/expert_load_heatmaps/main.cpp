// DeepSeek-V3, Appendix C (Figure 10): the expert load of an aux-loss-based and an aux-loss-free MoE
// language model on three domains, layer by layer. Trains both models with the same seed, data and order,
// then writes expert_load.csv, summary.csv, metrics.csv, heatmaps/layer_NN.png, figure10.png, report.md and
// the two models (safetensors, with the vocabulary map in the metadata) into --out.

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/format.hpp"
#include "common/resume.hpp"
#include "expert_load_heatmaps/data.hpp"
#include "expert_load_heatmaps/model.hpp"
#include "expert_load_heatmaps/outputs.hpp"
#include "expert_load_heatmaps/training.hpp"
#include "moe/core/error.hpp"
#include "moe/core/parallel.hpp"
#include "moe/io/safetensors.hpp"

namespace {

using moe::Index;
using namespace moe::examples;

struct Preset {
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
};

Preset preset_config(const std::string& name) {
  Preset p;
  if (name == "smoke") {
    p.model = {.d_model = 32, .num_heads = 2, .num_moe_layers = 2, .dense_hidden = 64, .expert_hidden = 16,
               .seq_len = 32, .aux_alpha = 1e-2};
    p.data = {.max_chars_per_domain = 120'000, .max_vocabulary = 512, .max_validation_windows = 16};
    p.train = {.batch = 8, .steps = 12, .warmup_steps = 2, .eval_every = 6, .eval_windows_in_training = 16};
  } else if (name == "quick") {
    // alpha 1e-2: at this training length 1e-3 leaves the aux-loss-based model far less balanced than the
    // aux-loss-free one, unlike the document's near-uniform baseline (README: what quick measured at both).
    p.model = {.d_model = 64, .num_heads = 4, .num_moe_layers = 4, .dense_hidden = 256, .expert_hidden = 32,
               .seq_len = 64, .aux_alpha = 1e-2};
    p.data = {.max_chars_per_domain = 1'500'000, .max_vocabulary = 2048, .max_validation_windows = 96};
    p.train = {.batch = 16, .steps = 600, .warmup_steps = 60, .eval_every = 100, .eval_windows_in_training = 48};
  } else {  // paper: the documents' routing (64 routed, 2 shared, K = 6) and depth (1 dense + 27 MoE)
    // alpha 1e-3: DeepSeekMoE 16B's expert-level balance factor, for a run long enough to balance with it.
    // Widths keep DeepSeekMoE 16B's ratios to d_model (expert 1408 / 2048, dense 10944 / 2048 ~ 5.5); 6M
    // tokens per run: hours per run on two cores.
    p.model = {.d_model = 64, .num_heads = 4, .num_moe_layers = 27, .dense_hidden = 352, .expert_hidden = 44,
               .seq_len = 128, .aux_alpha = 1e-3};
    p.data = {.max_chars_per_domain = 6'000'000, .max_vocabulary = 8192, .max_validation_windows = 192};
    p.train = {.batch = 16, .steps = 3000, .warmup_steps = 150, .eval_every = 250, .eval_windows_in_training = 96,
               .diagnostics_every = 10};
  }
  return p;
}

/// The example's own options, beside the shared ones (moe::examples::Args).
struct Options {
  std::optional<double> aux_alpha;
};

/// The first `per_domain` windows of each domain in `order`, in that order: the validation windows of the
/// evaluations during training, the same number from every domain.
std::vector<Index> per_domain_prefix(const std::vector<Index>& order, const TokenWindows& windows, Index per_domain) {
  std::array<Index, 3> taken{};
  std::vector<Index> subset;
  for (const Index w : order) {
    Index& count = taken[static_cast<std::size_t>(windows.domains[static_cast<std::size_t>(w)])];
    if (count < per_domain) {
      subset.push_back(w);
      ++count;
    }
  }
  return subset;
}

std::string count_of_layers(std::size_t held, std::size_t layers) {
  return std::to_string(held) + " of " + std::to_string(layers) + " MoE layers";
}

/// Mean over the three domains of one layer's specialization figures.
Specialization layer_mean(const Evaluation& e, std::size_t layer, Index k) {
  Specialization mean;
  for (const moe::examples::Domain domain : moe::examples::domains) {
    const auto d = static_cast<std::size_t>(domain);
    const Specialization s = specialization(e.counts[layer][d], e.tokens[d], k);
    mean.max_relative_load += s.max_relative_load / 3.0;
    mean.top10_share += s.top10_share / 3.0;
    mean.entropy += s.entropy / 3.0;
  }
  return mean;
}

std::string report_markdown(const moe::examples::Args& args, const Preset& preset, const PreparedData& data,
                            const std::vector<NamedRun>& runs, double wall_seconds) {
  const ModelConfig& m = preset.model;
  const TrainConfig& t = preset.train;
  constexpr Index k = routed_per_token;
  std::ostringstream r;
  r << "# Expert load of an aux-loss-based and an aux-loss-free MoE (DeepSeek-V3, Appendix C, Figure 10)\n\n"
    << "Command: `expert_load_heatmaps --preset " << args.preset << " --seed " << args.seed << " --aux-alpha "
    << m.aux_alpha << "` (" << moe::num_threads() << " threads); wall time " << minutes_seconds(wall_seconds)
    << " for both runs, data preparation and outputs included (aux-loss-based run "
    << minutes_seconds(runs[0].result->seconds) << ", aux-loss-free run " << minutes_seconds(runs[1].result->seconds)
    << ").\n\n";

  r << "## The document's experiment and ours\n\n"
    << "DeepSeek-V3 (Appendix C) compares two 16B DeepSeekMoE models, one balanced by an auxiliary loss and one "
       "by the auxiliary-loss-free bias, on the Pile test set, and finds that the aux-loss-free model shows "
       "greater expert specialization in every layer (Figure 10: relative expert load, actual / balanced, per "
       "domain and expert, colour 0 to 10).\n\n"
    << "Here both models are the same DeepSeekMoE-style decoder: 1 dense SwiGLU block, then " << m.num_moe_layers
    << " MoE blocks of " << m.num_shared_experts << " shared + " << m.num_experts << " routed SwiGLU experts, K = "
    << k << ", DeepSeek-V3's sigmoid router (top-K on score + bias, gates = chosen scores renormalised), RMSNorm, "
    << "causal attention with RoPE. d_model " << m.d_model << ", " << m.num_heads << " heads, expert width "
    << m.expert_hidden << ", dense width " << m.dense_hidden << ", vocabulary " << data.vocabulary.size()
    << ", windows of " << m.seq_len << " tokens.\n\n"
    << "- **Aux-loss-based** (`SequenceAuxLoss`): DeepSeek-V3's sequence-wise balance loss alpha N sum_i f_i P_i "
       "per training window, alpha = "
    << m.aux_alpha
    << ". DeepSeek-V3 does not state the alpha of its 16B aux-loss baseline; DeepSeekMoE 16B used 1e-3 for its "
       "expert-level balance loss, over 2T tokens. `smoke` and `quick`, far shorter runs, use 1e-2 and `paper` "
       "1e-3; `--aux-alpha` sets it. The MaxVio of this run is in the table below; the example's README gives "
       "what `quick` last measured at both weights.\n"
    << "- **Aux-loss-free** (`AuxLossFree`): a per-expert bias added to the scores for the top-K choice only, "
       "moved by gamma = "
    << m.bias_gamma << " towards the under-loaded experts after every step (DeepSeek-V3's update speed).\n\n"
    << "Same initial weights (same seed), same windows in the same order, same optimizer: AdamW (lr " << t.lr
    << ", warm-up " << t.warmup_steps << " steps, cosine to " << t.min_lr << ", weight decay " << t.weight_decay
    << ", gradient norm clipped at " << t.max_grad_norm << "), " << t.steps << " steps of " << t.batch
    << " windows (" << t.steps * t.batch * m.seq_len << " tokens).\n\n"
    << "What stands in for what, and what was scaled:\n\n"
    << "- Domains: GCIDE dictionary prose for Wikipedia (en), the Python standard library for Github, generated "
       "DM-Mathematics-style problems for DM Mathematics; split into train and validation by document. Load is "
       "measured on the validation split (the document uses the Pile test set).\n"
    << "- Tokens: GPT-2's BPE, remapped to the " << data.vocabulary.size() - 1
    << " most frequent training tokens plus <unk> (the training split uses " << data.distinct_train_tokens
    << " distinct GPT-2 tokens; " << fixed(100.0 * data.train_unk_share, 2)
    << "% of its tokens became <unk>), so that the output layer does not dominate the compute. The map is in "
       "the models' safetensors metadata (`vocabulary`).\n"
    << "- Windows: each domain's documents are joined with <|endoftext|> and cut into windows of "
    << m.seq_len + 1
    << " tokens, so every window holds one domain and is full: no padding, so the MoE layers route only real "
       "tokens.\n"
    << "- Scale: the document's models have 16B parameters, d_model 2048, 27 MoE layers + 1 dense, expert "
       "width 1408 and were trained on hundreds of billions of tokens; ours keep the routing (64 routed, 2 "
       "shared, K = 6) and scale width, depth (preset `"
    << args.preset << "`: " << m.num_moe_layers << " MoE layers) and training down to this machine.\n"
    << "- Layer numbers count MoE layers from 1, as Figure 10 does (the dense block is not drawn).\n\n";

  r << "Corpus (GPT-2 tokens per domain):\n\n" << moe::examples::format_corpus_stats(data.stats) << "\n";

  r << "## Validation loss and balance\n\n"
    << "| model | val loss prose | val loss code | val loss math | MaxVio (whole validation set) | MaxVio (mean per "
       "batch) |\n|---|---:|---:|---:|---:|---:|\n";
  for (const NamedRun& run : runs) {
    const Evaluation& e = run.result->evaluation;
    r << "| " << run.title << " | " << fixed(e.loss[0], 3) << " | " << fixed(e.loss[1], 3) << " | "
      << fixed(e.loss[2], 3) << " | " << fixed(e.mean_max_violation_global(), 3) << " | "
      << fixed(e.max_violation_batch, 3) << " |\n";
  }
  r << "\nLoss: cross entropy per token (nats) on the validation windows. MaxVio = (max load - mean load) / mean "
       "load (DeepSeek-V3), averaged over the MoE layers; per batch: over validation batches of "
    << t.batch << " windows of mixed domains.\n\n";

  r << "## Specialization per layer\n\n"
    << "Per MoE layer: the mean over the three domains of the largest relative load (max) and of the share of "
       "the domain's assignments that the busiest 10% of the experts take (top10; 0.1 when balanced, 1 when 6.4 "
       "experts take everything), as Figure 10 shows specialization by concentrated dark cells; and the mutual "
       "information between a token's domain and its experts (MI, nats; 0 when all domains load the experts "
       "alike, log 3 = 1.099 when they use disjoint experts), which counts only what differs between domains. "
       "Per-domain figures, with the entropy of the load, are in summary.csv.\n\n"
    << "| layer | based max | based top10 | based MI | free max | free top10 | free MI | document: aux-loss-free "
       "specialises more | ours, by top10 | ours, by MI |\n|---:|---:|---:|---:|---:|---:|---:|---|---|---|\n";
  const std::size_t layers = runs[0].result->evaluation.counts.size();
  std::size_t held_top10 = 0, held_information = 0;
  for (std::size_t l = 0; l < layers; ++l) {
    const Evaluation& based_eval = runs[0].result->evaluation;
    const Evaluation& free_eval = runs[1].result->evaluation;
    const Specialization based = layer_mean(based_eval, l, k);
    const Specialization loss_free = layer_mean(free_eval, l, k);
    const double based_information = domain_expert_information(based_eval.counts[l]);
    const double free_information = domain_expert_information(free_eval.counts[l]);
    const bool more_top10 = loss_free.top10_share > based.top10_share;
    const bool more_information = free_information > based_information;
    held_top10 += more_top10;
    held_information += more_information;
    r << "| " << l + 1 << " | " << fixed(based.max_relative_load, 2) << " | " << fixed(based.top10_share, 3)
      << " | " << fixed(based_information, 3) << " | " << fixed(loss_free.max_relative_load, 2) << " | "
      << fixed(loss_free.top10_share, 3) << " | " << fixed(free_information, 3) << " | yes | "
      << (more_top10 ? "yes: held" : "no: did not hold") << " | "
      << (more_information ? "yes: held" : "no: did not hold") << " |\n";
  }
  const auto verdict = [&](std::size_t held) {
    return count_of_layers(held, layers) +
           (held == layers ? " (the finding held in every layer)" : held == 0 ? " (the finding did not hold)" : "");
  };
  r << "\n## Finding\n\n"
    << "Document: the aux-loss-free model shows greater expert specialization than the aux-loss-based one in "
       "every layer.\n\n"
    << "Ours: the aux-loss-free model concentrated each domain's load on fewer experts (higher top10 share) in "
    << verdict(held_top10) << ", and its experts were more domain-specific (higher MI) in "
    << verdict(held_information) << ". Whole-set MaxVio: aux-loss-based "
    << fixed(runs[0].result->evaluation.mean_max_violation_global(), 3) << ", aux-loss-free "
    << fixed(runs[1].result->evaluation.mean_max_violation_global(), 3)
    << " (a model whose load is unbalanced in every domain alike gets a high top10 share without being "
       "specialised; MI does not count that).\n\n";

  r << "## Files\n\n"
    << "- `figure10.png`: every layer's heatmaps in one image; `heatmaps/layer_NN.png`: one per MoE layer, the "
       "aux-loss-based panel above the aux-loss-free one, rows = domains, columns = experts 1.." << m.num_experts
    << ", colour = relative load 0 (light yellow) to 10 (dark red).\n"
    << "- `expert_load.csv` (`model,layer,domain,expert,relative_load`), `summary.csv`, `metrics.csv` (training "
       "loss, validation loss per domain on "
    << t.eval_windows_in_training / 3 << " validation windows of each domain every " << t.eval_every
    << " steps, the last row on all of them, and MaxVio per training batch).\n"
    << "- `diagnostics/aux_loss_based.csv`, `diagnostics/aux_loss_free.csv` and the `.png` plots beside them: "
       "per MoE layer and training step"
    << (t.diagnostics_every > 1 ? " (every " + std::to_string(t.diagnostics_every) + "th)" : std::string())
    << ", the tokens per expert (min, median, max), overload (max / mean), MaxVio, the mean entropy of the "
       "router's normalised scores per token, the entropy of the load, the fraction of assignments dropped "
       "(0: no capacity here) and the mean margin between the K-th chosen and the best unchosen selection "
       "score (score + bias) of each training batch (`moe::LoadDiagnosticsLog`).\n"
    << "- `aux_loss_based.safetensors`, `aux_loss_free.safetensors`: the trained models (PyTorch names), with "
       "the configuration and the vocabulary map in the metadata.\n";
  return r.str();
}

/// One model, a unit of the run: trained from the seed's initial weights (going on from the unit's
/// checkpoint, if there is one), evaluated, and saved as safetensors.
template <class LM>
RunResult run_model(const std::string& label, const std::string& balancing, const moe::examples::Args& args,
                    const Preset& preset, const PreparedData& data, const std::vector<Index>& train_order,
                    const std::vector<Index>& validation_order, const std::vector<Index>& periodic_order,
                    UnitCheckpoint& checkpoint) {
  moe::Rng rng(args.seed);  // the same initial weights for both models
  LM lm(lm_options<LM>(preset.model, data.vocabulary.size()), rng);
  std::printf("\n%s: %zu parameters\n", label.c_str(), [&] {
    std::size_t n = 0;
    for (const auto& p : lm.named_parameters()) n += static_cast<std::size_t>(p.parameter->value.size());
    return n;
  }());
  std::fflush(stdout);
  RunResult result = train_and_evaluate(lm, label, data, train_order, validation_order, periodic_order, preset.train,
                                        args.out / "diagnostics", checkpoint);
  moe::Metadata metadata = config_metadata(preset.model, balancing);
  metadata["vocabulary"] = data.vocabulary.to_string();
  moe::save_module(args.out / (label + ".safetensors"), lm, metadata);
  const Evaluation& e = result.evaluation;
  std::printf("%s: validation loss prose %.3f, code %.3f, math %.3f; MaxVio %.3f (whole set), %.3f (per batch); "
              "%.0f s\n",
              label.c_str(), e.loss[0], e.loss[1], e.loss[2], e.mean_max_violation_global(), e.max_violation_batch,
              result.seconds);
  return result;
}

int run(moe::examples::Args args, Options options) {
  // --aux-alpha decides the results, so a resumed run takes it from the run's own settings.
  RunSettings settings;
  if (options.aux_alpha) settings["aux_alpha"] = fmt::format("{}", *options.aux_alpha);  // reads back exactly
  RunState run(args, "expert_load_heatmaps", settings);
  if (const auto alpha = run.settings().find("aux_alpha"); alpha != run.settings().end()) {
    try {
      options.aux_alpha = std::stod(alpha->second);
    } catch (const std::logic_error&) {
      fail("--resume: the run's aux_alpha '", alpha->second, "' is not a number");
    }
  }
  Preset preset = preset_config(args.preset);
  if (options.aux_alpha) preset.model.aux_alpha = *options.aux_alpha;
  moe::Rng data_rng(args.seed);
  std::printf("expert_load_heatmaps --preset %s: building the three-domain corpus and tokenizing it...\n",
              args.preset.c_str());
  std::fflush(stdout);
  const PreparedData data = prepare_data(args.data_dir, preset.data, preset.model.seq_len, data_rng);
  std::printf("\n%s\nvocabulary: %lld ids (the most frequent of %zu GPT-2 tokens in the training split, plus "
              "<unk>; %.2f%% of training tokens are <unk>)\nwindows of %lld tokens: %lld train, %lld validation\n",
              moe::examples::format_corpus_stats(data.stats).c_str(), static_cast<long long>(data.vocabulary.size()),
              data.distinct_train_tokens, 100.0 * data.train_unk_share,
              static_cast<long long>(preset.model.seq_len), static_cast<long long>(data.train.count()),
              static_cast<long long>(data.validation.count()));

  const std::vector<Index> train_order =
      training_order(data.train.count(), preset.train.steps, preset.train.batch, data_rng);
  std::vector<Index> validation_order(static_cast<std::size_t>(data.validation.count()));
  for (Index w = 0; w < data.validation.count(); ++w) validation_order[static_cast<std::size_t>(w)] = w;
  moe::shuffle(validation_order, data_rng);  // mixed-domain validation batches
  const std::vector<Index> periodic_order =
      per_domain_prefix(validation_order, data.validation, preset.train.eval_windows_in_training / 3);

  // One unit per model, checkpointed at each evaluation.
  const auto model_unit = [&]<class LM>(const std::string& label, const std::string& balancing) {
    return run.unit(label, preset.train.eval_every, [&](UnitCheckpoint& checkpoint) {
      return run_model<LM>(label, balancing, args, preset, data, train_order, validation_order, periodic_order,
                           checkpoint);
    });
  };
  std::filesystem::create_directories(args.out / "diagnostics");
  const RunResult based = model_unit.operator()<AuxLossBasedLM>("aux_loss_based", "SequenceAuxLoss");
  const RunResult loss_free = model_unit.operator()<AuxLossFreeLM>("aux_loss_free", "AuxLossFree");
  const std::vector<NamedRun> runs{{"aux_loss_based", "Aux-Loss-Based", &based},
                                   {"aux_loss_free", "Aux-Loss-Free", &loss_free}};
  constexpr Index k = routed_per_token;
  write_expert_load_csv(args.out / "expert_load.csv", runs, k);
  write_summary_csv(args.out / "summary.csv", runs, k);
  write_metrics_csv(args.out / "metrics.csv", runs);
  write_heatmaps(args.out, runs, k);

  const double wall = run.elapsed_seconds();
  const std::string report = report_markdown(args, preset, data, runs, wall);
  std::ofstream file(args.out / "report.md");
  file << report;
  file.close();
  if (!file) throw moe::Error("expert_load_heatmaps: could not write " + (args.out / "report.md").string());
  const auto section = report.find("## Validation loss");
  std::printf("\n%s\nwall time %.1f s\nreport: %s\nfigure: %s\n",
              report.substr(section, report.find("## Files") - section).c_str(), wall,
              (args.out / "report.md").c_str(), (args.out / "figure10.png").c_str());
  run.finish();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::examples::Args args;
  Options options;
  CLI::App app("expert_load_heatmaps: DeepSeek-V3 Appendix C, expert load of an aux-loss-based and an aux-loss-free "
               "MoE LM on three domains");
  moe::examples::add_common_options(app, args,
                                    {.name = "expert_load_heatmaps", .presets = {"quick", "smoke", "paper"},
                                     .default_out = "out/expert_load_heatmaps", .resumable = true});
  app.add_option("--aux-alpha", options.aux_alpha,
                 "the sequence-wise aux loss weight of the aux-loss-based model (default 1e-2 in smoke and quick, "
                 "1e-3 in paper; not with --resume)")
      ->type_name("A")
      ->check(moe::examples::non_negative_number())
      ->excludes("--resume");
  return moe::examples::run_main(app, args, argc, argv, [&] { return run(args, options); });
}
