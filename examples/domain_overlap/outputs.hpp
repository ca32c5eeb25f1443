#pragma once
// What domain_overlap writes into --out: the CSV tables, the routing heatmaps (domain x expert, every panel
// on the colour scale 0 to 1) and report.md, from the seeds' results (analysis.hpp).

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/cli.hpp"
#include "common/format.hpp"
#include "domain_overlap/analysis.hpp"
#include "moe/analysis/csv.hpp"
#include "moe/analysis/heatmap.hpp"
#include "moe/core/parallel.hpp"

namespace moe::examples {

namespace overlap_report {

/// "1 epoch", "6 epochs".
inline std::string count_of(Index count, const std::string& noun) {
  return std::to_string(count) + " " + noun + (count == 1 ? "" : "s");
}

/// A change in percentage points with its sign, "+1.3" or "-0.4"; "0.0" when it rounds to zero.
inline std::string points(double fraction_change) {
  const double rounded = std::round(1000.0 * fraction_change) / 10.0 + 0.0;  // + 0.0: no "-0.0"
  return (rounded > 0 ? "+" : "") + fixed(rounded, 1);
}

/// The settings in which `config` departs from the document's, as a list for the report; empty if none.
inline std::string departures(const ExperimentConfig& config, std::size_t seeds) {
  const ModelSizes& m = config.model;
  std::vector<std::string> parts;
  if (config.corpus.pretrain_per_domain != document::pretrain_per_domain ||
      config.corpus.moe_per_domain != document::moe_per_domain)
    parts.push_back("samples per domain");
  if (config.max_len != document::max_len) parts.push_back("max length");
  if (m.num_layers != document::num_layers || m.d_model != document::d_model || m.num_heads != document::num_heads ||
      m.ffn_hidden != document::ffn_hidden)
    parts.push_back("expert size");
  if (config.pretrain_epochs != document::pretrain_epochs || config.moe_epochs != document::moe_epochs)
    parts.push_back("epochs");
  if (config.lr != document::lr) parts.push_back("learning rate");
  if (static_cast<Index>(seeds) != document::seeds) parts.push_back("seeds");
  std::string text;
  for (std::size_t i = 0; i < parts.size(); ++i) text += (i == 0 ? "" : ", ") + parts[i];
  return text;
}

inline std::string variant_title(double entropy_beta) {
  if (entropy_beta == 0) return "without entropy regularization";
  std::ostringstream out;
  out << "with entropy regularization (beta " << entropy_beta << ")";
  return out.str();
}

inline std::vector<std::string> domain_labels() {
  std::vector<std::string> labels;
  for (const EnglishDomain d : english_domains) labels.emplace_back(domain_name(d));
  return labels;
}

inline const char* domain_of(Index d) { return domain_name(english_domains[static_cast<std::size_t>(d)]); }

/// `text` in bold when `bold`.
inline std::string bold_if(bool bold, const std::string& text) { return bold ? "**" + text + "**" : text; }

/// The header row and alignment row of a markdown table.
inline std::string table_head(const std::vector<std::string>& columns, const std::vector<bool>& right) {
  std::string head = "|", rule = "|";
  for (std::size_t c = 0; c < columns.size(); ++c) {
    head += " " + columns[c] + " |";
    rule += right[c] ? "---:|" : "---|";
  }
  return head + "\n" + rule + "\n";
}

inline std::string name_list(const std::vector<Index>& domains) {
  if (domains.empty()) return "none";
  std::string text;
  for (std::size_t i = 0; i < domains.size(); ++i) text += (i == 0 ? "" : ", ") + std::string(domain_of(domains[i]));
  return text;
}

inline std::string seed_list(const std::vector<SeedResult>& results) {
  std::string text;
  for (std::size_t i = 0; i < results.size(); ++i) text += (i == 0 ? "" : ", ") + std::to_string(results[i].seed);
  return text;
}

inline std::string with_range(const Spread& s, int decimals) {
  return fixed(s.mean, decimals) + " (" + fixed(s.min, decimals) + "-" + fixed(s.max, decimals) + ")";
}

inline std::string share_with_spread(const Spread& s) {
  return percent(s.mean) + " (sd " + fixed(100.0 * s.sd, 1) + ", " + fixed(100.0 * s.min, 1) + "-" +
         fixed(100.0 * s.max, 1) + ")";
}

/// A domain x expert heatmap per variant, stacked, on the colour scale [0, 1].
inline void write_routing_figure(const std::filesystem::path& path, const std::string& title,
                                 const std::string& bar_label, const std::vector<double>& betas,
                                 const std::vector<MatrixX<double>>& tables) {
  std::vector<HeatmapPanel> panels;
  for (std::size_t v = 0; v < tables.size(); ++v) panels.push_back({tables[v], variant_title(betas[v])});
  HeatmapOptions options;
  options.title = title;
  options.row_labels = domain_labels();
  options.column_labels = domain_labels();  // each expert by the domain it was pretrained on
  options.cell_width = 96;                   // wide enough for the labels to stand level
  options.min = 0.0;
  options.max = 1.0;
  options.colour_bar_label = bar_label;
  options.annotate = true;
  options.annotation_decimals = 2;
  write_stacked_heatmaps_png(path, panels, options);
}

inline void write_csv_tables(const std::filesystem::path& out, const std::vector<SeedResult>& results) {
  const std::vector<std::string> domains = domain_labels();
  {
    CsvWriter csv(out / "training.csv");
    csv.row("seed", "phase", "run", "epoch", "train_loss", "router_term", "val_loss", "seconds");
    for (const SeedResult& r : results) {
      for (std::size_t e = 0; e < r.experts.size(); ++e)
        for (const EpochRecord& epoch : r.experts[e].epochs)
          csv.row(r.seed, 1, domains[e], epoch.epoch, epoch.train_loss, epoch.router_term, epoch.val_loss,
                  epoch.seconds);
      for (const VariantResult& v : r.variants)
        for (const EpochRecord& epoch : v.epochs)
          csv.row(r.seed, 2, variant_name(v.entropy_beta), epoch.epoch, epoch.train_loss, epoch.router_term,
                  epoch.val_loss, epoch.seconds);
    }
    csv.close();
  }
  {
    CsvWriter csv(out / "phase1_loss.csv");
    csv.row("seed", "expert", "best_epoch", "domain", "val_loss");
    for (const SeedResult& r : results)
      for (Index e = 0; e < domain_count; ++e)
        for (Index d = 0; d < domain_count; ++d)
          csv.row(r.seed, domains[static_cast<std::size_t>(e)], r.experts[static_cast<std::size_t>(e)].best_epoch,
                  domains[static_cast<std::size_t>(d)], r.expert_domain_loss(e, d));
    csv.close();
  }
  {
    CsvWriter csv(out / "validation.csv");
    csv.row("seed", "variant", "entropy_beta", "domain", "val_loss", "routing_entropy");
    for (const SeedResult& r : results)
      for (const VariantResult& v : r.variants)
        for (Index d = 0; d < domain_count; ++d)
          csv.row(r.seed, variant_name(v.entropy_beta), v.entropy_beta, domains[static_cast<std::size_t>(d)],
                  v.domain_loss[static_cast<std::size_t>(d)], v.mean_entropy);
    csv.close();
  }
  {
    CsvWriter csv(out / "routing.csv");
    csv.row("seed", "variant", "domain", "expert", "representative_weight", "mean_weight", "top_share");
    for (const SeedResult& r : results)
      for (const VariantResult& v : r.variants)
        for (Index d = 0; d < domain_count; ++d)
          for (Index e = 0; e < domain_count; ++e)
            csv.row(r.seed, variant_name(v.entropy_beta), domains[static_cast<std::size_t>(d)],
                    domains[static_cast<std::size_t>(e)], v.representative_weights(d, e), v.mean_weights(d, e),
                    v.top_share(d, e));
    csv.close();
  }
  {
    CsvWriter csv(out / "routing_mean.csv");
    csv.row("variant", "domain", "expert", "representative_weight", "mean_weight", "top_share", "top_share_sd",
            "top_share_min", "top_share_max");
    for (std::size_t v = 0; v < results.front().variants.size(); ++v) {
      const MatrixX<double> representative = mean_table(results, v, &VariantResult::representative_weights);
      const MatrixX<double> weights = mean_table(results, v, &VariantResult::mean_weights);
      for (Index d = 0; d < domain_count; ++d)
        for (Index e = 0; e < domain_count; ++e) {
          const Spread top = spread(over_seeds(results, v, [&](const VariantResult& r) { return r.top_share(d, e); }));
          csv.row(variant_name(results.front().variants[v].entropy_beta), domains[static_cast<std::size_t>(d)],
                  domains[static_cast<std::size_t>(e)], representative(d, e), weights(d, e), top.mean, top.sd, top.min,
                  top.max);
        }
    }
    csv.close();
  }
  {
    CsvWriter csv(out / "representative_samples.csv");
    csv.field("seed").field("variant").field("domain").field("sample").field("tokens");
    for (const std::string& d : domains) csv.field("weight_" + d);
    csv.field("text").end_row();
    for (const SeedResult& r : results)
      for (const VariantResult& v : r.variants)
        for (Index d = 0; d < domain_count; ++d) {
          const auto& samples = r.representative[static_cast<std::size_t>(d)];
          for (std::size_t j = 0; j < samples.size(); ++j) {
            csv.field(r.seed).field(variant_name(v.entropy_beta)).field(domains[static_cast<std::size_t>(d)]);
            csv.field(samples[j].index).field(samples[j].tokens);
            for (Index e = 0; e < domain_count; ++e)
              csv.field(v.sample_weights(d * static_cast<Index>(samples.size()) + static_cast<Index>(j), e));
            csv.field(samples[j].text).end_row();
          }
        }
    csv.close();
  }
}

inline void write_figures(const std::filesystem::path& out, const std::vector<SeedResult>& results, Index per_domain) {
  std::vector<double> betas;
  for (const VariantResult& v : results.front().variants) betas.push_back(v.entropy_beta);
  const std::string samples_title = "Mean routing weight to each expert (columns), " + std::to_string(per_domain) +
                                    " representative samples per domain (rows)";
  const std::string share_title = "Share of a domain's tokens (rows) whose top expert is each expert (columns)";
  const auto tables = [&](auto get) {
    std::vector<MatrixX<double>> list;
    for (std::size_t v = 0; v < betas.size(); ++v) list.push_back(get(v));
    return list;
  };
  for (const SeedResult& r : results) {
    const std::string suffix = "_seed" + std::to_string(r.seed) + ".png";
    write_routing_figure(out / ("routing_weights" + suffix), samples_title + ", seed " + std::to_string(r.seed),
                         "routing weight", betas,
                         tables([&](std::size_t v) { return r.variants[v].representative_weights; }));
    write_routing_figure(out / ("top_expert_share" + suffix), share_title + ", seed " + std::to_string(r.seed),
                         "share of tokens", betas, tables([&](std::size_t v) { return r.variants[v].top_share; }));
  }
  const std::string mean = ", mean of " + std::to_string(results.size()) + " seeds";
  const auto mean_of = [&](MatrixX<double> VariantResult::*table) {
    return tables([&](std::size_t v) { return mean_table(results, v, table); });
  };
  write_routing_figure(out / "routing_weights_mean.png", samples_title + mean, "routing weight", betas,
                       mean_of(&VariantResult::representative_weights));
  write_routing_figure(out / "top_expert_share_mean.png", share_title + mean, "share of tokens", betas,
                       mean_of(&VariantResult::top_share));
}

inline void setup_section(std::ostringstream& r, const ExperimentConfig& config,
                          const std::vector<SeedResult>& results, const std::string& preset) {
  const ModelSizes& m = config.model;
  const DataSummary& data = results.front().data;
  const Index n = domain_count;
  r << "## The document's experiment and this run\n\n"
    << "The document pretrains four Transformer-encoder experts, each lightly on one plain-English domain, "
       "loads them into a dense MoE with a token-level MLP router, trains the MoE on the four domains mixed "
       "and asks whether each domain's tokens are routed to the expert pretrained on it, over several seeds, "
       "optionally with entropy regularization of the router. It reports no numbers.\n\n"
    << table_head({"", "seeds/003", "this run"}, {false, false, false})
    << "| samples per domain: pretraining / MoE training | " << document::pretrain_per_domain << " / "
    << document::moe_per_domain << " | " << config.corpus.pretrain_per_domain << " / "
    << config.corpus.moe_per_domain << " |\n"
    << "| validation samples per domain | not stated | " << config.corpus.validation_per_domain
    << ", generated beside the training sets |\n"
    << "| max length (GPT-2 tokens) | " << document::max_len << " | " << config.max_len << " |\n"
    << "| expert: layers, d_model, heads, FFN | " << document::num_layers << ", " << document::d_model << ", "
    << document::num_heads << ", " << document::ffn_hidden << " | " << m.num_layers << ", " << m.d_model << ", "
    << m.num_heads << ", " << m.ffn_hidden << " |\n"
    << "| router hidden width | not stated | " << m.router_hidden << " |\n"
    << "| epochs: phase 1 / phase 2 | " << document::pretrain_epochs << " / " << document::moe_epochs << " | "
    << config.pretrain_epochs << " / " << config.moe_epochs << " |\n"
    << "| optimizer | Adam, lr " << document::lr << " | Adam, lr " << config.lr << ", batch " << config.batch
    << " (the document gives no batch size) |\n"
    << "| seeds | " << document::seeds << " | " << results.size() << " (" << seed_list(results) << ") |\n\n";
  const std::string reduced = departures(config, results.size());
  if (!reduced.empty())
    r << "Preset `" << preset << "` departs from the document in: " << reduced << ".\n\n";

  r << "- **Data**: four domains generated from templates with randomized variables "
       "(`examples/domain_overlap/domain_corpus.hpp`): psychology (clinical findings, therapy, cognitive biases), "
       "history (events, treaties, archaeological evidence), medicine (symptoms, treatments, clinical trials), "
       "business (revenue, market analysis, management strategies). A sample is two or three sentences of its "
       "domain's templates, sometimes with one sentence of templates all domains share; the domains also share "
       "fillers (cities, institutions, numbers, verbs of change). Every text is distinct, so the pretraining, "
       "MoE and validation sets are disjoint. Each seed generates its own corpus; the texts are in "
       "`samples/seed_N/`.\n"
    << "- **Tokens** (seed " << results.front().seed << "): GPT-2's BPE; a sample averages "
    << fixed(data.mean_length, 1) << " tokens, the longest " << data.longest << " (" << data.truncated
    << " cut to the max length). Compact vocabulary of " << data.vocabulary
    << " ids: every GPT-2 token of the training sets, <unk> (" << data.validation_unk << " of "
    << data.validation_tokens
    << " validation tokens) and GPT-2's <|endoftext|> as the pad token. Batches are padded to their longest "
       "sample; padding is masked from attention and from the loss, and left out of every routing statistic "
       "below.\n"
    << "- **Experts**: Transformer encoders (`moe::TransformerEncoder`, ReLU feed-forward) with the causal mask in "
       "every layer: the models are trained for next-token prediction, so a token never sees the token it "
       "predicts (the document does not mention the mask). Norm placement: "
    << (m.norm_first ? "pre-norm with a final LayerNorm" : "post-norm, nn.TransformerEncoderLayer's default")
    << " (the document does not say). Learned token and position embeddings, a linear LM head.\n"
    << "- **Router**: a two-layer ReLU MLP, d_model to " << m.router_hidden << " to " << n
    << ", softmax over the experts, per token. Dense mixture: every expert processes every token and the outputs "
       "are summed with the router's weights.\n"
    << "- **Phase 1**: expert e, with its own embeddings and head, trained "
    << count_of(config.pretrain_epochs, "epoch")
    << " on domain e's pretraining samples; the epoch with the lowest loss on domain e's validation samples is "
       "kept.\n"
    << "- **Phase 2**: expert e loaded from domain e's phase-1 encoder; the MoE's token and position embeddings "
       "set to the mean of the four experts' (the document's option); router and LM head new. Trained "
    << count_of(config.moe_epochs, "epoch") << " on all " << config.corpus.moe_per_domain * n
    << " MoE samples, twice from the same initialisation and batch order: without entropy regularization and "
       "with it, loss += -beta x mean routing entropy per token, beta = "
    << config.entropy_beta
    << " (the document gives no beta; `--entropy-beta` sets it). The entropy term averages over padding rows "
       "too (the balancer does not see the layout).\n"
    << "- **Measures**, on the validation samples: a token's *top expert* is the expert with the largest routing "
       "weight; the *matching share* of a domain is the share of its non-padding tokens whose top expert is the "
       "domain's own expert (chance: 1/N = "
    << fixed(1.0 / static_cast<double>(n), 2)
    << "). Spread over seeds: sample standard deviation (sd) and range.\n\n";
}

inline void phase1_section(std::ostringstream& r, const std::vector<SeedResult>& results) {
  const Index n = domain_count;
  r << "## Phase 1: light pretraining\n\n"
    << "Validation loss (mean cross-entropy per predicted token) of each expert's kept weights on each domain, "
       "mean over seeds; the kept epoch per seed in the last column.\n\n";
  std::vector<std::string> columns{"expert"};
  for (Index d = 0; d < n; ++d) columns.emplace_back(domain_of(d));
  columns.emplace_back("kept epoch per seed");
  std::vector<bool> right(columns.size(), true);
  right.front() = right.back() = false;
  r << table_head(columns, right);
  MatrixX<double> loss = MatrixX<double>::Zero(n, n);  // [expert x domain]
  for (const SeedResult& s : results) loss += s.expert_domain_loss / static_cast<double>(results.size());
  for (Index e = 0; e < n; ++e) {
    r << "| " << domain_of(e) << " expert |";
    for (Index d = 0; d < n; ++d) r << ' ' << fixed(loss(e, d), 3) << " |";
    r << ' ';
    for (std::size_t s = 0; s < results.size(); ++s)
      r << (s == 0 ? "" : ", ") << results[s].experts[static_cast<std::size_t>(e)].best_epoch;
    r << " |\n";
  }
  std::vector<Index> own_best;
  for (Index d = 0; d < n; ++d) {
    Index best = 0;
    loss.col(d).minCoeff(&best);
    if (best == d) own_best.push_back(d);
  }
  r << "\nDomains whose own expert has the lowest validation loss of the four (mean over seeds): "
    << own_best.size() << " of " << n << " (" << name_list(own_best)
    << "). This is how far the light pretraining made each expert the best model of its domain before the MoE "
       "sees them.\n\n";
}

inline void phase2_section(std::ostringstream& r, const std::vector<SeedResult>& results) {
  const Index n = domain_count;
  std::vector<std::string> columns{"MoE"};
  for (Index d = 0; d < n; ++d) columns.emplace_back(domain_of(d));
  columns.push_back("routing entropy (nats; uniform " + fixed(std::log(static_cast<double>(n)), 3) + ")");
  std::vector<bool> right(columns.size(), true);
  right.front() = false;
  r << "## Phase 2: validation loss per domain\n\nMean over seeds (range).\n\n" << table_head(columns, right);
  for (std::size_t v = 0; v < results.front().variants.size(); ++v) {
    r << "| " << variant_title(results.front().variants[v].entropy_beta) << " |";
    for (std::size_t d = 0; d < static_cast<std::size_t>(n); ++d) {
      const auto loss = [d](const VariantResult& x) { return x.domain_loss[d]; };
      r << ' ' << with_range(spread(over_seeds(results, v, loss)), 3) << " |";
    }
    const auto entropy = [](const VariantResult& x) { return x.mean_entropy; };
    r << ' ' << with_range(spread(over_seeds(results, v, entropy)), 3) << " |\n";
  }
  r << '\n';
}

inline void matching_section(std::ostringstream& r, const ExperimentConfig& config,
                             const std::vector<SeedResult>& results) {
  const Index n = domain_count;
  r << "## Matching share: a domain's tokens whose top expert is its own expert\n\n"
    << "All validation samples (" << config.corpus.validation_per_domain << " per domain); chance is "
    << fixed(1.0 / static_cast<double>(n), 2)
    << ". The last columns: the expert other than the matching one that is top for the most of the domain's "
       "tokens (mean over seeds), and the matching expert's mean routing weight on the domain's tokens "
       "(`top_expert_share_mean.png`, per seed `top_expert_share_seedN.png`).\n\n";
  std::vector<std::string> columns{"domain"};
  for (const SeedResult& s : results) columns.push_back("seed " + std::to_string(s.seed));
  columns.insert(columns.end(), {"mean (sd, range)", "largest other expert", "matching mean weight"});
  std::vector<bool> right(columns.size(), true);
  right.front() = right[columns.size() - 2] = false;
  for (std::size_t v = 0; v < results.front().variants.size(); ++v) {
    r << "**MoE " << variant_title(results.front().variants[v].entropy_beta) << "**\n\n" << table_head(columns, right);
    const MatrixX<double> top = mean_table(results, v, &VariantResult::top_share);
    const MatrixX<double> weights = mean_table(results, v, &VariantResult::mean_weights);
    for (Index d = 0; d < n; ++d) {
      r << "| " << domain_of(d) << " |";
      for (const SeedResult& s : results) r << ' ' << percent(s.variants[v].top_share(d, d)) << " |";
      const auto matching = [d](const VariantResult& x) { return x.top_share(d, d); };
      r << ' ' << share_with_spread(spread(over_seeds(results, v, matching))) << " |";
      Index other = d == 0 ? 1 : 0;
      for (Index e = 0; e < n; ++e)
        if (e != d && top(d, e) > top(d, other)) other = e;
      r << ' ' << domain_of(other) << " expert, " << percent(top(d, other)) << " | " << fixed(weights(d, d), 3)
        << " |\n";
    }
    r << '\n';
  }
}

inline void representative_section(std::ostringstream& r, const ExperimentConfig& config,
                                   const std::vector<SeedResult>& results) {
  const Index n = domain_count;
  const Index per_domain = config.representative_per_domain;
  r << "## Routing weights of representative samples\n\n"
    << "Per domain, the " << per_domain << " validation samples whose token counts lie nearest the domain's median "
       "(ties: the earlier sample), chosen without looking at any model (the document's \"five representative "
       "samples\", whose choice it does not describe). Each sample's weights are the mean over its non-padding "
       "tokens; the tables give the mean over the domain's samples and over seeds (`routing_weights_mean.png`; "
       "per seed: `routing_weights_seedN.png`, every sample: `representative_samples.csv`).\n\n";
  std::vector<std::string> columns{"domain"};
  for (Index e = 0; e < n; ++e) columns.push_back(std::string(domain_of(e)) + " expert");
  std::vector<bool> right(columns.size(), true);
  right.front() = false;
  for (std::size_t v = 0; v < results.front().variants.size(); ++v) {
    r << "**MoE " << variant_title(results.front().variants[v].entropy_beta) << "**\n\n" << table_head(columns, right);
    const MatrixX<double> weights = mean_table(results, v, &VariantResult::representative_weights);
    for (Index d = 0; d < n; ++d) {
      r << "| " << domain_of(d) << " |";
      for (Index e = 0; e < n; ++e) r << ' ' << bold_if(e == d, fixed(weights(d, e), 3)) << " |";
      r << '\n';
    }
    r << '\n';
  }

  const SeedResult& first = results.front();
  r << "Seed " << first.seed
    << ", sample by sample: each sample's mean weight per expert, in the order psychology, history, medicine, "
       "business, the domain's own expert in bold.\n\n";
  std::vector<std::string> sample_columns{"domain", "tokens", "sample"};
  for (const VariantResult& v : first.variants) sample_columns.push_back(variant_name(v.entropy_beta));
  std::vector<bool> sample_right(sample_columns.size(), false);
  sample_right[1] = true;
  r << table_head(sample_columns, sample_right);
  for (Index d = 0; d < n; ++d)
    for (std::size_t j = 0; j < first.representative[static_cast<std::size_t>(d)].size(); ++j) {
      const RepresentativeSample& sample = first.representative[static_cast<std::size_t>(d)][j];
      const std::string text = sample.text.size() > 90 ? sample.text.substr(0, 87) + "..." : sample.text;
      r << "| " << domain_of(d) << " | " << sample.tokens << " | " << text << " |";
      for (const VariantResult& v : first.variants) {
        for (Index e = 0; e < n; ++e)
          r << ' ' << bold_if(e == d, fixed(v.sample_weights(d * per_domain + static_cast<Index>(j), e), 2));
        r << " |";
      }
      r << '\n';
    }
  r << '\n';
}

inline void finding_section(std::ostringstream& r, const ExperimentConfig& config,
                            const std::vector<SeedResult>& results) {
  const Index n = domain_count;
  const auto of_n = [](const std::vector<Index>& domains) {
    return std::to_string(domains.size()) + " of " + std::to_string(n) + " (" + name_list(domains) + ")";
  };
  r << "## Finding\n\n"
    << "Two tests per domain, on the shares of top-expert tokens: (a) *plurality*: the domain's own expert is the "
       "top expert of more of its tokens than any other expert; (b) *preference*: the domain's own expert is top "
       "for a larger share of its domain's tokens than of the other domains' tokens on average. \"The matching "
       "expert attracts its domain\" holds where both do.\n\n";
  for (std::size_t v = 0; v < results.front().variants.size(); ++v) {
    r << "**MoE " << variant_title(results.front().variants[v].entropy_beta) << "**\n\n";
    for (const SeedResult& s : results) {
      const MatrixX<double>& top = s.variants[v].top_share;
      const MatchingTests t = matching_tests(top);
      Index lead = 0;
      top.colwise().mean().maxCoeff(&lead);
      r << "- Seed " << s.seed << ": (a) holds in " << of_n(t.plurality) << ", (b) in " << of_n(t.preferred)
        << "; the matching expert attracts its domain in " << of_n(t.both) << ". The most used expert, the "
        << domain_of(lead) << " expert, is top for " << percent(top.col(lead).mean())
        << " of the tokens (mean over the domains; " << percent(top.col(lead).minCoeff()) << " to "
        << percent(top.col(lead).maxCoeff()) << " by domain).\n";
    }
    const MatrixX<double> top = mean_table(results, v, &VariantResult::top_share);
    const MatchingTests t = matching_tests(top);
    r << "- Mean over seeds: (a) holds in " << of_n(t.plurality) << ", (b) in " << of_n(t.preferred)
      << "; the matching expert attracts its domain in " << of_n(t.both) << ". The matching share averages "
      << percent(top.diagonal().mean()) << " over the domains, against chance " << percent(1.0 / static_cast<double>(n))
      << ".\n\n";
  }
  if (results.front().variants.size() == 2) {
    std::vector<double> differences;
    for (const SeedResult& s : results)
      differences.push_back((s.variants[1].top_share.diagonal() - s.variants[0].top_share.diagonal()).mean());
    const Spread change = spread(differences);
    const auto entropy = [](const VariantResult& x) { return x.mean_entropy; };
    r << "Entropy regularization (beta " << config.entropy_beta << ") changes the mean matching share by "
      << points(change.mean) << " points (per seed " << points(change.min) << " to " << points(change.max)
      << "), and the mean routing entropy per token from " << fixed(spread(over_seeds(results, 0, entropy)).mean, 3)
      << " to " << fixed(spread(over_seeds(results, 1, entropy)).mean, 3) << " nats.\n\n";
  }
}

}  // namespace overlap_report

inline std::string report_markdown(const Args& args, const ExperimentConfig& config,
                                   const std::vector<SeedResult>& results, double wall_seconds) {
  using namespace overlap_report;
  std::ostringstream r;
  r << "# Domain overlap: do lightly pretrained experts attract their own domains?\n\n"
    << "seeds/003, \"Light training on domain overlap experiment\". Command: `domain_overlap --preset "
    << args.preset << " --seed " << args.seed << " --entropy-beta " << config.entropy_beta << "` ("
    << num_threads() << " threads); wall time " << minutes_seconds(wall_seconds) << ", everything included.\n\n";
  setup_section(r, config, results, args.preset);
  phase1_section(r, results);
  phase2_section(r, results);
  matching_section(r, config, results);
  representative_section(r, config, results);
  finding_section(r, config, results);
  r << "Files: `training.csv`, `phase1_loss.csv`, `validation.csv`, `routing.csv`, `routing_mean.csv`, "
       "`representative_samples.csv`, `routing_weights_{seedN,mean}.png`, `top_expert_share_{seedN,mean}.png`, "
       "`samples/` (the README describes their columns).\n";
  return r.str();
}

inline void write_outputs(const Args& args, const ExperimentConfig& config, const std::vector<SeedResult>& results,
                          double wall_seconds) {
  require(!results.empty(), "domain_overlap: no seed ran");
  overlap_report::write_csv_tables(args.out, results);
  overlap_report::write_figures(args.out, results, config.representative_per_domain);
  const std::filesystem::path path = args.out / "report.md";
  std::ofstream file(path);
  file << report_markdown(args, config, results, wall_seconds);
  file.close();
  require(static_cast<bool>(file), "domain_overlap: could not write ", path.string());
}

}  // namespace moe::examples
