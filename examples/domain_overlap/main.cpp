// seeds/003, method 3 ("Light training on domain overlap experiment"): four experts, each a one-layer causal
// Transformer encoder lightly pretrained on one plain-English domain (psychology, history, medicine,
// business), loaded into a dense MoE with an MLP router and trained on the four domains mixed, without and
// with entropy regularization of the router, over several seeds. Do each domain's tokens go to the expert
// pretrained on it? Writes report.md, CSV tables, routing heatmaps and the generated samples into --out. Each
// training (an expert of a seed, an MoE variant of a seed) is a unit of a resumable run (common/resume.hpp).

#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "common/cli.hpp"
#include "common/format.hpp"
#include "common/resume.hpp"
#include "domain_overlap/analysis.hpp"
#include "domain_overlap/experiment.hpp"
#include "domain_overlap/outputs.hpp"
#include "moe/data/gpt2_tokenizer.hpp"

namespace {

using moe::Index;
using namespace moe::examples;

ExperimentConfig preset_config(const std::string& name) {
  ExperimentConfig c;
  if (name == "smoke") {
    c.corpus = {.pretrain_per_domain = 16, .moe_per_domain = 16, .validation_per_domain = 6};
    c.model = {.d_model = 32, .num_heads = 2, .num_layers = 1, .ffn_hidden = 64, .router_hidden = 16};
    // Two epochs of pretraining (2 steps each), so that the resume test stops it between its evaluations; a
    // checkpoint every 4 steps, for the test's kills to resume from.
    c.pretrain_epochs = 2;
    c.moe_epochs = 1;
    c.seeds = 2;
    c.checkpoint_every = 4;
  } else if (name == "quick") {
    // The document's counts, epochs and seeds; a quarter of its widths, to train in minutes on two cores.
    c.model = {.d_model = 64, .num_heads = 4, .num_layers = 1, .ffn_hidden = 128, .router_hidden = 32};
  }  // paper: the defaults, seeds/003's sizes and counts
  return c;
}

/// A CLI11 check that the value is a number > 0 (zero would train the same MoE twice).
CLI::Validator positive_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (text.empty() || error != std::errc{} || end != text.data() + text.size() || !std::isfinite(value) ||
            value <= 0)
          return "expects a positive number, got '" + text + "'";
        return {};
      },
      "");
}

/// Writes each set of the corpus, one file per domain, one sample per line, for a person to read.
void write_samples(const std::filesystem::path& dir, const DomainCorpus& corpus) {
  std::filesystem::create_directories(dir);
  const std::vector<std::pair<const char*, const std::vector<DomainSample>*>> sets{
      {"pretrain", &corpus.pretrain}, {"moe", &corpus.moe}, {"validation", &corpus.validation}};
  for (const auto& [set_name, samples] : sets)
    for (const EnglishDomain domain : english_domains) {
      const std::filesystem::path path = dir / (std::string(set_name) + "_" + domain_name(domain) + ".txt");
      std::ofstream file(path);
      for (const DomainSample& sample : *samples)
        if (sample.domain == domain) file << sample.text << '\n';
      file.close();
      require(static_cast<bool>(file), "domain_overlap: could not write ", path.string());
    }
}

/// The entropy weight of the run, as its settings hold it (on --resume, those it was started with).
double run_entropy_beta(const RunState& run) {
  const auto setting = run.settings().find("entropy_beta");
  require(setting != run.settings().end(), "--resume: the run's settings hold no entropy_beta");
  try {
    return std::stod(setting->second);
  } catch (const std::logic_error&) {
    fail("--resume: the run's entropy_beta '", setting->second, "' is not a number");
  }
}

int run(Args args, double entropy_beta) {
  // --entropy-beta decides the results, so a resumed run takes it from the run's own settings.
  RunState run(args, "domain_overlap", {{"entropy_beta", fmt::format("{}", entropy_beta)}});  // reads back exactly
  const std::filesystem::path gpt2 = args.data_dir / "gpt2";
  for (const char* name : {"encoder.json", "vocab.bpe"})
    require(std::filesystem::exists(gpt2 / name), "domain_overlap: ", (gpt2 / name).string(),
            " is missing; scripts/fetch-data.sh puts GPT-2's tokenizer files there");
  ExperimentConfig config = preset_config(args.preset);
  config.entropy_beta = run_entropy_beta(run);
  moe::GPT2Tokenizer tokenizer = moe::GPT2Tokenizer::from_directory(gpt2);

  std::vector<SeedResult> results;
  for (Index s = 0; s < config.seeds; ++s) {
    const std::uint64_t seed = args.seed + static_cast<std::uint64_t>(s);
    moe::Rng rng(seed);
    DomainCorpus corpus = generate_domain_corpus(config.corpus, rng);
    write_samples(args.out / "samples" / ("seed_" + std::to_string(seed)), corpus);
    const PreparedCorpus data = prepare_corpus(std::move(corpus), tokenizer, config.max_len);

    SeedResult result;
    result.seed = seed;
    result.data = summarize(data);
    std::vector<std::unique_ptr<SingleEncoderLM>> experts;
    std::vector<const SingleEncoderLM*> expert_models;
    for (const EnglishDomain domain : english_domains) {
      const std::uint64_t init_seed = rng(), order_seed = rng();
      moe::Rng init(init_seed);
      SingleEncoderLM& expert =
          *experts.emplace_back(std::make_unique<SingleEncoderLM>(lm_options(config, data, 0.0), init));
      // A unit per seed and domain: a resumed run reads a finished expert's best weights back.
      const PretrainedExpert pretrained = run.unit(
          concat("seed", seed, "_", domain_name(domain)), config.checkpoint_every, [&](UnitCheckpoint& checkpoint) {
            return pretrain_expert(expert, domain, data, config, order_seed,
                                   "seed " + std::to_string(seed) + " phase 1 " + domain_name(domain), checkpoint);
          });
      load_state_dict(expert, pretrained.best_weights);
      result.experts.push_back({pretrained.best_epoch, pretrained.best_val_loss, pretrained.epochs});
      expert_models.push_back(&expert);
    }
    result.expert_domain_loss = expert_domain_losses(experts, data, config.eval_batch);
    result.representative = representative_samples(data, config.representative_per_domain);

    // Both variants start from the same MoE initialisation and see the batches in the same order.
    const std::uint64_t moe_init_seed = rng(), moe_order_seed = rng();
    for (const double beta : {0.0, config.entropy_beta}) {
      const std::string variant = variant_name(beta);
      // A unit per seed and variant, whose result is what the outputs need of the trained MoE.
      const auto train_and_measure = [&](UnitCheckpoint& checkpoint) {
        MoERun moe = train_moe(expert_models, data, config, beta, moe_init_seed, moe_order_seed,
                               "seed " + std::to_string(seed) + " phase 2 " + variant, checkpoint);
        return summarize_variant(beta, std::move(moe.epochs), evaluate_moe(*moe.model, data, config.eval_batch),
                                 result.representative);
      };
      result.variants.push_back(
          run.unit(concat("seed", seed, "_", variant), config.checkpoint_every, train_and_measure));
    }
    results.push_back(std::move(result));
  }

  write_outputs(args, config, results, run.elapsed_seconds());
  std::cout << "domain_overlap: wrote " << (args.out / "report.md").string() << '\n';
  run.finish();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  double entropy_beta = ExperimentConfig{}.entropy_beta;
  CLI::App app("domain_overlap: experts pretrained on four plain-English domains, mixed in a dense MoE (seeds/003: "
               "light training on domain overlap)");
  add_common_options(app, args, {.name = "domain_overlap", .presets = {"quick", "smoke", "paper"},
                                 .default_out = "out/domain_overlap", .resumable = true});
  app.add_option("--entropy-beta", entropy_beta,
                 "weight of the router's entropy regularization in the second MoE run of each seed (the first has "
                 "none; not with --resume)")
      ->type_name("BETA")
      ->check(positive_number())
      ->excludes("--resume");
  return run_main(app, args, argc, argv, [&] { return run(args, entropy_beta); });
}
