// Method 1 of seeds/003 ("Code expert experiment"): does a dense MoE of Transformer encoders route code to an
// expert pretrained on code? Phase 1 pretrains one causal encoder LM on synthetic Python-like code; phase 2 puts
// its encoder into expert 0 of a 4-expert dense MoE (with its token and position embeddings) and trains the MoE
// on code, math, story and science text. Writes report.md, CSV tables, a heatmap of the routing per domain, the
// generated samples and both models into --out. Each phase is a unit of a resumable run (common/resume.hpp).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "code_expert/data.hpp"
#include "code_expert/experiment.hpp"
#include "common/check.hpp"
#include "common/cli.hpp"
#include "common/encoder_lm.hpp"
#include "common/format.hpp"
#include "common/resume.hpp"
#include "moe/analysis/csv.hpp"
#include "moe/analysis/heatmap.hpp"
#include "moe/core/parallel.hpp"
#include "moe/data/gpt2_tokenizer.hpp"
#include "moe/io/safetensors.hpp"

namespace fs = std::filesystem;
using moe::Index;
using moe::MatrixX;
using namespace moe::examples;

namespace {

CodeExpertSettings preset_settings(const std::string& name) {
  CodeExpertSettings s;
  if (name == "smoke") {
    s.per_domain = 25;
    s.validation_per_domain = 5;
    s.model.d_model = 16;
    s.model.num_heads = 2;
    s.model.ffn_hidden = 32;
    s.model.router_hidden = 8;
    s.batch_size = 8;
    // Two epochs of phase 1 (3 steps each), so that the resume test stops it between its evaluations; a
    // checkpoint every 4 steps, for the test's kills to resume from.
    s.phase1_epochs = 2;
    s.phase2_epochs = 1;
    s.checkpoint_every = 4;
  } else if (name == "quick") {
    s.model.d_model = 128;
    s.model.num_heads = 4;
    s.model.ffn_hidden = 512;
    s.model.router_hidden = 64;
  } else {  // paper: the document's expert
    s.model.d_model = document::d_model;
    s.model.num_heads = document::num_heads;
    s.model.ffn_hidden = document::ffn_hidden;
    s.model.router_hidden = 256;  // the document does not say
    s.checkpoint_every = 20;      // a phase-2 step takes about 20 s on two cores
  }
  return s;
}

std::string epochs_text(Index epochs) { return std::to_string(epochs) + (epochs == 1 ? " epoch" : " epochs"); }

std::vector<std::string> domain_names() {
  std::vector<std::string> names;
  for (const TextDomain d : text_domains) names.emplace_back(text_domain_name(d));
  return names;
}

std::vector<std::string> expert_names(Index n) {
  std::vector<std::string> names;
  for (Index e = 0; e < n; ++e) names.push_back("expert " + std::to_string(e));
  return names;
}

/// A token's text for a table: spaces as a middle dot, line breaks and tabs spelled out, pipes escaped.
std::string visible_token(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == ' ')
      out += "\u00b7";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '|')
      out += "\\|";
    else if (c == '`')
      out += "'";
    else
      out += c;
  }
  return out;
}

std::string token_text(const moe::GPT2Tokenizer& tokenizer, const moe::VocabularyMap& vocabulary, Index id) {
  if (id == moe::VocabularyMap::unk) return "<unk>";
  const std::array<Index, 1> source{vocabulary.to_source(id)};
  return tokenizer.decode(source);
}

struct Outcome {
  CodeExpertData data;
  PhaseResult phase1, phase2;
  Evaluation phase1_all;  // the phase-1 model on every domain's validation samples
  RepresentativeRouting representative;
  std::vector<TokenRouting> token_views;  // the first representative code and story samples
  double wall_seconds = 0;
};

const DomainRouting& final_routing(const Outcome& o) { return o.phase2.records.back().evaluation.routing; }
const DomainRouting& initial_routing(const Outcome& o) { return o.phase2.records.front().evaluation.routing; }

// --- files ------------------------------------------------------------------------------------------------

void write_metrics(const fs::path& out, const Outcome& o) {
  moe::CsvWriter phase1(out / "phase1_metrics.csv");
  phase1.row("epoch", "step", "train_loss", "val_loss_code", "kept");
  for (const EpochRecord& r : o.phase1.records)
    phase1.row(r.epoch, r.step, r.train_loss, r.evaluation.loss[0], r.epoch == o.phase1.best_epoch ? 1 : 0);
  phase1.close();

  moe::CsvWriter phase2(out / "phase2_metrics.csv");
  phase2.field("epoch").field("step").field("train_loss");
  for (const std::string& d : domain_names()) phase2.field("val_loss_" + d);
  for (const std::string& d : domain_names()) phase2.field("expert0_weight_" + d);
  phase2.end_row();
  for (const EpochRecord& r : o.phase2.records) {
    phase2.field(r.epoch).field(r.step).field(r.train_loss);
    for (const double loss : r.evaluation.loss) phase2.field(loss);
    const MatrixX<double>& weights = r.evaluation.routing.mean_weights;
    for (Index d = 0; d < num_text_domains; ++d) phase2.field(weights(d, 0));
    phase2.end_row();
  }
  phase2.close();

  moe::CsvWriter losses(out / "validation_loss.csv");
  losses.row("domain", "phase1_loss", "phase2_before_training_loss", "phase2_loss");
  for (Index d = 0; d < num_text_domains; ++d) {
    const auto i = static_cast<std::size_t>(d);
    losses.row(domain_names()[i], o.phase1_all.loss[i], o.phase2.records.front().evaluation.loss[i],
               o.phase2.records.back().evaluation.loss[i]);
  }
  losses.close();
}

void write_routing_tables(const fs::path& out, const Outcome& o, const moe::GPT2Tokenizer& tokenizer) {
  const Index n = o.representative.per_sample.cols();
  moe::CsvWriter samples(out / "representative_routing.csv");
  samples.field("domain").field("sample").field("tokens");
  for (Index e = 0; e < n; ++e) samples.field("weight_expert_" + std::to_string(e));
  samples.end_row();
  for (std::size_t i = 0; i < o.representative.samples.size(); ++i) {
    const TextSample& s = o.data.validation[static_cast<std::size_t>(o.representative.samples[i])];
    samples.field(text_domain_name(s.domain)).field(s.index).field(static_cast<Index>(s.ids.size()));
    for (Index e = 0; e < n; ++e) samples.field(o.representative.per_sample(static_cast<Index>(i), e));
    samples.end_row();
  }
  samples.close();

  moe::CsvWriter domains(out / "routing_by_domain.csv");
  domains.field("samples_set").field("domain").field("samples").field("tokens");
  for (Index e = 0; e < n; ++e) domains.field("weight_expert_" + std::to_string(e));
  for (Index e = 0; e < n; ++e) domains.field("top_share_expert_" + std::to_string(e));
  domains.end_row();
  const auto rows = [&](const char* set, const DomainRouting& routing) {
    const MatrixX<double>& weights = routing.mean_weights;
    const MatrixX<double>& top = routing.top_share;
    for (Index d = 0; d < num_text_domains; ++d) {
      domains.field(set)
          .field(domain_names()[static_cast<std::size_t>(d)])
          .field(routing.samples(d))
          .field(routing.tokens(d));
      for (Index e = 0; e < n; ++e) domains.field(weights(d, e));
      for (Index e = 0; e < n; ++e) domains.field(top(d, e));
      domains.end_row();
    }
  };
  rows("representative", o.representative.by_domain);
  rows("validation", final_routing(o));
  rows("validation_before_training", initial_routing(o));
  domains.close();

  moe::CsvWriter tokens(out / "token_routing.csv");
  tokens.field("domain").field("sample").field("position").field("token").field("top_expert");
  for (Index e = 0; e < n; ++e) tokens.field("weight_expert_" + std::to_string(e));
  tokens.end_row();
  for (const TokenRouting& view : o.token_views) {
    const TextSample& s = o.data.validation[static_cast<std::size_t>(view.sample)];
    for (Index t = 0; t < static_cast<Index>(view.ids.size()); ++t) {
      tokens.field(text_domain_name(s.domain))
          .field(s.index)
          .field(t)
          .field(token_text(tokenizer, o.data.vocabulary, view.ids[static_cast<std::size_t>(t)]));
      tokens.field(view.top(t));
      for (Index e = 0; e < n; ++e) tokens.field(view.weights(t, e));
      tokens.end_row();
    }
  }
  tokens.close();
}

void write_heatmap(const fs::path& out, const Outcome& o, const CodeExpertSettings& settings) {
  moe::HeatmapOptions options;
  options.title = "Mean routing weight per domain and expert (non-padding tokens; expert 0 pretrained on code)";
  options.row_labels = domain_names();
  options.column_labels = expert_names(o.representative.per_sample.cols());
  options.min = 0.0;
  options.max = 1.0;
  options.annotate = true;
  options.annotation_decimals = 2;
  options.cell_width = 90;
  options.cell_height = 34;
  options.colour_bar_label = "mean routing weight";
  moe::write_stacked_heatmaps_png(
      out / "routing_heatmap.png",
      {{o.representative.by_domain.mean_weights,
        "the first " + std::to_string(settings.representative_per_domain) + " validation samples of each domain"},
       {final_routing(o).mean_weights,
        "all " + std::to_string(settings.validation_per_domain) + " validation samples of each domain"}},
      options);
}

moe::Metadata model_metadata(const CodeExpertSettings& s, const CodeExpertData& data, const std::string& what) {
  return {{"model", what},
          {"vocabulary", data.vocabulary.to_string()},
          {"pad_id", std::to_string(data.pad_id)},
          {"d_model", std::to_string(s.model.d_model)},
          {"num_heads", std::to_string(s.model.num_heads)},
          {"num_layers", std::to_string(s.model.num_layers)},
          {"ffn_hidden", std::to_string(s.model.ffn_hidden)},
          {"max_len", std::to_string(s.max_len)},
          {"norm_first", s.model.norm_first ? "true" : "false"},
          {"causal", "true"}};
}

// --- report -----------------------------------------------------------------------------------------------

std::string weight_row(const std::string& label, const MatrixX<double>& m, Index row, int decimals = 3) {
  std::string line = "| " + label;
  for (Index e = 0; e < m.cols(); ++e) line += " | " + fixed(m(row, e), decimals);
  return line + " |\n";
}

std::string table_header(const std::string& first, Index experts, const std::string& what) {
  std::string line = "| " + first;
  for (Index e = 0; e < experts; ++e) line += " | " + what + " " + std::to_string(e);
  line += " |\n|---";
  for (Index e = 0; e < experts; ++e) line += "|---:";
  return line + "|\n";
}

/// The largest of the non-code rows of column 0, and which domain it is.
std::pair<double, std::string> strongest_other(const MatrixX<double>& weights) {
  Index best = 1;
  for (Index d = 2; d < weights.rows(); ++d)
    if (weights(d, 0) > weights(best, 0)) best = d;
  return {weights(best, 0), domain_names()[static_cast<std::size_t>(best)]};
}

std::string verdict(const MatrixX<double>& weights, const std::string& where) {
  const double code = weights(0, 0);
  const auto [other, other_name] = strongest_other(weights);
  std::ostringstream r;
  r << "- " << where << ": expert 0 receives " << fixed(code, 3) << " of the routing weight of code tokens; of the "
    << "other domains the most goes to it from " << other_name << " (" << fixed(other, 3) << "). "
    << (code > other ? "**Yes**: code leans on expert 0 more than any other domain does, by " + fixed(code - other, 3) +
                           " (ratio " + fixed(code / other, 2) + ")."
                     : "**No**: code does not lean on expert 0 more than every other domain.")
    << "\n";
  return r.str();
}

std::string token_table(const TokenRouting& view, const Outcome& o, const moe::GPT2Tokenizer& tokenizer) {
  const Index n = view.weights.cols();
  std::ostringstream r;
  r << "| position | token | top expert";
  for (Index e = 0; e < n; ++e) r << " | w" << e;
  r << " |\n|---:|---|---:";
  for (Index e = 0; e < n; ++e) r << "|---:";
  r << "|\n";
  Index to_expert0 = 0;
  for (Index t = 0; t < static_cast<Index>(view.ids.size()); ++t) {
    r << "| " << t << " | `"
      << visible_token(token_text(tokenizer, o.data.vocabulary, view.ids[static_cast<std::size_t>(t)])) << "` | "
      << view.top(t);
    for (Index e = 0; e < n; ++e) r << " | " << fixed(view.weights(t, e), 2);
    r << " |\n";
    to_expert0 += view.top(t) == 0;
  }
  r << "\n" << to_expert0 << " of " << view.ids.size() << " tokens have expert 0 as their top expert.\n\n";
  return r.str();
}

std::string report_markdown(const moe::examples::Args& args, const CodeExpertSettings& s, const Outcome& o,
                            const moe::GPT2Tokenizer& tokenizer) {
  const CodeExpertData& data = o.data;
  const Index n = s.model.num_experts;
  const Index train_per_domain = s.per_domain - s.validation_per_domain;
  std::ostringstream r;
  r << "# Code expert in a dense MoE of Transformer encoders (seeds/003, the code-expert experiment)\n\n"
    << "Command: `code_expert --preset " << args.preset << " --seed " << args.seed << "` (" << moe::num_threads()
    << " threads); wall time " << minutes_seconds(o.wall_seconds) << ".\n\n";

  r << "## The document's experiment and ours\n\n"
    << "The document generates " << document::samples_per_domain
    << " code, math, story and science samples per domain from templates with randomized variables, tokenizes "
       "them with GPT-2's tokenizer (maximum length "
    << document::max_len << ", padding), pretrains one expert (a Transformer encoder of " << document::num_layers
    << " layers, hidden size " << document::d_model << ", " << document::num_heads << " heads, feed-forward "
    << document::ffn_hidden << ") with its embedding and LM head on code for " << document::epochs
    << " epochs (Adam, learning rate " << document::lr
    << ", next-token prediction), keeps the best weights, then trains an MoE of " << document::num_experts
    << " experts whose expert 0 and embedding come from that model on all four domains for " << document::epochs
    << " epochs, with a token-level router (a two-layer ReLU network over each token's hidden state, softmax over "
       "the experts) whose weights mix all experts' outputs. It then reports the average routing weight per "
       "expert, excluding padding, for "
    << document::representative_per_domain << " representative samples per domain, and the share going to expert 0.\n\n"
    << "This run:\n\n"
    << "- Data: " << s.per_domain << " samples per domain from the templates of "
    << "`examples/common/corpora/text_domains.hpp` (seed " << args.seed << "; all of them are in `samples/`). "
    << "The last " << s.validation_per_domain << " of each domain are the validation split, the first "
    << train_per_domain << " the training split (" << data.train.size() << " training and " << data.validation.size()
    << " validation samples in all).\n"
    << "- Tokens: GPT-2's BPE; samples longer than " << s.max_len << " tokens are cut to " << s.max_len << " ("
    << data.truncated << " were). The LM head and the embedding cover a compact vocabulary of "
    << data.vocabulary.size() << " ids (the " << data.distinct_train_tokens
    << " GPT-2 tokens the training split uses, <unk>, and <|endoftext|> as the padding id) instead of GPT-2's "
    << tokenizer.vocab_size() << ", so that the head does not dominate the compute; "
    << percent(data.validation_unk_share, 2) << " of the validation tokens are <unk>. "
    << "GPT-2 tokens per domain: ";
  for (const TextDomain d : text_domains)
    r << text_domain_name(d) << " " << data.tokens[static_cast<std::size_t>(d)]
      << (d == TextDomain::science ? ".\n" : ", ");
  r << "- Padding: each batch is padded to its longest sample with the padding id; padded positions are masked "
       "out of attention (as keys), get no loss, and are left out of every routing statistic.\n"
    << "- Expert: a Transformer encoder of " << s.model.num_layers << " layers, d_model " << s.model.d_model << ", "
    << s.model.num_heads << " heads, feed-forward " << s.model.ffn_hidden
    << " (ReLU), post-norm as PyTorch's nn.TransformerEncoderLayer by default (the document does not say). It is "
       "**causal**: trained for next-token prediction, each token attends to itself and the tokens before it only, "
       "so no expert sees the token it predicts (an encoder without the mask would). Learned position embeddings "
       "of "
    << s.max_len << " positions are added to the token embeddings, as in GPT-2.\n"
    << "- Router: Linear(d_model, " << s.model.router_hidden << "), ReLU, Linear(" << s.model.router_hidden << ", " << n
    << "), softmax over the experts (the document does not give the hidden width); dense routing: every "
       "expert processes every token and the outputs are summed with the router's weights. No balancing loss (the "
       "document names none).\n"
    << "- Training: Adam, learning rate " << s.lr << ", batches of " << s.batch_size
    << " samples (the document does not give the batch size), cross entropy of the next token. Phase 1: "
    << epochs_text(s.phase1_epochs)
    << " on the code training samples; after each epoch the validation loss on code "
       "decides whether the weights are the best so far; epoch "
    << o.phase1.best_epoch
    << " was kept. Phase 2: expert 0 and the token and position embeddings are copied from "
       "phase 1 by state-dict name (`encoder.*` to `moe.experts.0.*`); the other experts, the router and the LM "
       "head start fresh (the document transfers only the expert and the embedding); "
    << epochs_text(s.phase2_epochs) << " on the training samples of all four domains.\n";
  std::vector<std::string> scaled;  // where this preset departs from the document's settings
  if (s.per_domain != document::samples_per_domain)
    scaled.push_back(std::to_string(s.per_domain) +
                     " samples per domain (document: " + std::to_string(document::samples_per_domain) + ")");
  if (s.phase1_epochs != document::epochs || s.phase2_epochs != document::epochs)
    scaled.push_back(std::to_string(s.phase1_epochs) + " and " + std::to_string(s.phase2_epochs) +
                     " epochs (document: " + std::to_string(document::epochs) + " each)");
  if (s.model.d_model != document::d_model || s.model.num_heads != document::num_heads ||
      s.model.ffn_hidden != document::ffn_hidden)
    scaled.push_back("d_model " + std::to_string(s.model.d_model) + ", " + std::to_string(s.model.num_heads) +
                     " heads, feed-forward " + std::to_string(s.model.ffn_hidden) +
                     " (document: " + std::to_string(document::d_model) + ", " + std::to_string(document::num_heads) +
                     ", " + std::to_string(document::ffn_hidden) + ")");
  if (!scaled.empty()) {
    r << "- Scale: preset `" << args.preset << "` departs from the document's settings in ";
    for (std::size_t i = 0; i < scaled.size(); ++i)
      r << (i == 0 ? "" : i + 1 == scaled.size() ? " and " : "; ") << scaled[i];
    r << ", so that it runs on two CPU cores; everything else is as above. `--preset paper` uses the document's "
         "sizes.\n";
  }
  r << "\n";

  r << "## Validation loss per domain\n\n"
    << "Cross entropy per predicted token (nats) on each domain's validation samples.\n\n"
    << "| domain | phase 1 (code expert alone) | phase 2, before training | phase 2 (MoE) |\n|---|---:|---:|---:|\n";
  for (const TextDomain d : text_domains) {
    const auto i = static_cast<std::size_t>(d);
    r << "| " << text_domain_name(d) << " | " << fixed(o.phase1_all.loss[i], 3) << " | "
      << fixed(o.phase2.records.front().evaluation.loss[i], 3) << " | "
      << fixed(o.phase2.records.back().evaluation.loss[i], 3) << " |\n";
  }

  const MatrixX<double>& representative = o.representative.by_domain.mean_weights;
  const MatrixX<double>& validation = final_routing(o).mean_weights;
  const MatrixX<double>& validation_top = final_routing(o).top_share;
  const MatrixX<double>& before = initial_routing(o).mean_weights;
  r << "\n## Routing per domain\n\n"
    << "Representative samples: the first " << s.representative_per_domain
    << " validation samples of each domain (the samples are drawn at random, so the first are as typical as any). "
       "For each sample the routing weights of its non-padding tokens are averaged; the table gives the mean of "
       "those per-sample averages over the domain's samples (`routing_heatmap.png`, top panel; "
       "`representative_routing.csv` per sample).\n\n"
    << table_header("domain", n, "expert");
  for (Index d = 0; d < num_text_domains; ++d)
    r << weight_row(domain_names()[static_cast<std::size_t>(d)], representative, d);
  r << "\nAll " << s.validation_per_domain << " validation samples of each domain, the same average (bottom panel):\n\n"
    << table_header("domain", n, "expert");
  for (Index d = 0; d < num_text_domains; ++d)
    r << weight_row(domain_names()[static_cast<std::size_t>(d)], validation, d);
  r << "\nShare of each domain's validation tokens whose largest routing weight is each expert:\n\n"
    << table_header("domain", n, "top expert");
  for (Index d = 0; d < num_text_domains; ++d)
    r << weight_row(domain_names()[static_cast<std::size_t>(d)], validation_top, d);
  r << "\nThe same weights before phase 2's training (the pretrained expert 0 in place, the router untrained):\n\n"
    << table_header("domain", n, "expert");
  for (Index d = 0; d < num_text_domains; ++d) r << weight_row(domain_names()[static_cast<std::size_t>(d)], before, d);

  r << "\n## Does the code expert attract code?\n\n"
    << "The document's question: what share of the routing goes to the pretrained code expert (expert 0) in each "
       "domain, and does code go to it more than the other domains do?\n\n"
    << verdict(representative, "Representative samples") << verdict(validation, "All validation samples")
    << "- Tokens: " << percent(validation_top(0, 0)) << " of the code validation tokens have expert 0 as "
    << "their top expert, against ";
  for (Index d = 1; d < num_text_domains; ++d)
    r << percent(validation_top(d, 0)) << " (" << domain_names()[static_cast<std::size_t>(d)] << ")"
      << (d + 1 < num_text_domains ? ", " : ".\n");
  Index led_by_expert0 = 0;  // domains whose largest mean weight is expert 0's
  for (Index d = 0; d < num_text_domains; ++d) {
    Index top = 0;
    validation.row(d).maxCoeff(&top);
    led_by_expert0 += top == 0;
  }
  r << "- Expert 0 has the largest mean weight in " << led_by_expert0 << " of " << num_text_domains
    << " domains (all validation samples): "
    << (led_by_expert0 < num_text_domains ? "the domains are split between the experts.\n"
        : validation(0, 0) > strongest_other(validation).first
            ? "the pretrained expert draws every domain, code the most.\n"
            : "the pretrained expert draws every domain.\n");
  r << "- Before phase 2's training, expert 0 received " << fixed(before(0, 0), 3) << " of the code tokens' weight and "
    << fixed(strongest_other(before).first, 3) << " at most of another domain's; training moved these to "
    << fixed(validation(0, 0), 3) << " and " << fixed(strongest_other(validation).first, 3) << ".\n\n";

  r << "## Token-level routing\n\n"
    << "Each token of the first representative code sample and of the first representative story sample, with its "
       "top expert and all routing weights (`token_routing.csv`). In the token column a middle dot stands for a "
       "space and \\n for a line break.\n\n";
  for (const TokenRouting& view : o.token_views) {
    const TextSample& sample = data.validation[static_cast<std::size_t>(view.sample)];
    r << "### " << text_domain_name(sample.domain) << " sample " << sample.index << "\n\n"
      << token_table(view, o, tokenizer);
  }

  r << "## Training\n\n"
    << "Phase 1 (`phase1_metrics.csv`):\n\n| epoch | step | train loss | validation loss (code) "
       "|\n|---:|---:|---:|---:|\n";
  for (const EpochRecord& e : o.phase1.records)
    r << "| " << e.epoch << (e.epoch == o.phase1.best_epoch ? " (kept)" : "") << " | " << e.step << " | "
      << fixed(e.train_loss, 3) << " | " << fixed(e.evaluation.loss[0], 3) << " |\n";
  r << "\nPhase 2 (`phase2_metrics.csv`): validation loss and the mean routing weight of expert 0 per domain.\n\n"
    << "| epoch | step | train loss";
  for (const auto& d : domain_names()) r << " | loss " << d;
  for (const auto& d : domain_names()) r << " | expert 0 " << d;
  r << " |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const EpochRecord& e : o.phase2.records) {
    const MatrixX<double>& w = e.evaluation.routing.mean_weights;
    r << "| " << e.epoch << " | " << e.step << " | " << (std::isnan(e.train_loss) ? "" : fixed(e.train_loss, 3));
    for (const double loss : e.evaluation.loss) r << " | " << fixed(loss, 3);
    for (Index d = 0; d < num_text_domains; ++d) r << " | " << fixed(w(d, 0), 3);
    r << " |\n";
  }

  r << "\n## Timing\n\n"
    << "Measured in this run (" << moe::num_threads()
    << " threads): training steps (forward, backward, Adam) and "
       "one evaluation per epoch.\n\n"
    << "| phase | steps taken | tokens trained on | s per step | steps per epoch | projected s per epoch | projected "
       "total for the preset's epochs |\n|---|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& [name, phase] : {std::pair{"phase 1", &o.phase1}, std::pair{"phase 2", &o.phase2}}) {
    const PhaseTiming& t = phase->timing;
    r << "| " << name << " | " << t.steps << " | " << t.tokens << " | " << fixed(t.seconds_per_step(), 3) << " | "
      << t.steps_per_epoch << " | " << fixed(t.projected_epoch_seconds(), 1) << " | "
      << minutes_seconds(t.projected_epoch_seconds() * static_cast<double>(t.epochs)) << " |\n";
  }

  r << "\n## Files\n\n"
    << "- `samples/{code,math,story,science}.txt`: every generated sample, with its index and split.\n"
    << "- `validation_loss.csv`, `phase1_metrics.csv`, `phase2_metrics.csv`: the losses above.\n"
    << "- `representative_routing.csv`, `routing_by_domain.csv`, `token_routing.csv`, `routing_heatmap.png`: the "
       "routing above.\n"
    << "- `code_expert.safetensors` (phase 1's kept weights), `moe.safetensors` (phase 2's model); their metadata "
       "holds the vocabulary map.\n";
  return r.str();
}

/// A phase as a unit of the run: its result, the weights its model ends with (phase 1: the kept epoch's), and
/// the batch-order generator as the phase leaves it, which phase 2 goes on with.
struct PhaseUnit {
  PhaseResult result;
  moe::StateDict<float> weights;
  moe::Rng order_rng;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(result, weights, order_rng);
  }
};

/// Runs train(checkpoint), which trains `lm` with `order_rng`, as the unit `name` of `run`; then `lm` and
/// `order_rng` are as that training left them, whether it ran now or in an earlier invocation.
template <class LM, class Train>
PhaseResult run_phase(RunState& run, const std::string& name, const CodeExpertSettings& settings, LM& lm,
                      moe::Rng& order_rng, Train&& train) {
  const PhaseUnit unit = run.unit(name, settings.checkpoint_every, [&](UnitCheckpoint& checkpoint) {
    PhaseResult result = train(checkpoint);
    return PhaseUnit{std::move(result), moe::state_dict(lm), order_rng};
  });
  moe::load_state_dict(lm, unit.weights);
  order_rng = unit.order_rng;
  return unit.result;
}

int run(moe::examples::Args args) {
  RunState run(args, "code_expert");
  CodeExpertSettings settings = preset_settings(args.preset);
  const fs::path gpt2 = args.data_dir / "gpt2";
  for (const char* name : {"encoder.json", "vocab.bpe"})
    require(fs::exists(gpt2 / name), "code_expert: ", (gpt2 / name).string(),
            " is missing; scripts/fetch-data.sh puts GPT-2's tokenizer files there");
  moe::GPT2Tokenizer tokenizer = moe::GPT2Tokenizer::from_directory(gpt2);

  moe::Rng data_rng(args.seed), init_rng(args.seed + 1), order_rng(args.seed + 2);
  CodeExpertData data = prepare_code_expert_data(tokenizer, settings.per_domain, settings.validation_per_domain,
                                                 settings.max_len, data_rng);
  write_samples(args.out / "samples", data, settings.validation_per_domain);
  settings.model.vocab_size = data.vocabulary.size();
  settings.model.max_len = settings.max_len;
  std::printf(
      "code_expert --preset %s: %zu training and %zu validation samples, vocabulary of %lld ids, d_model "
      "%lld, %lld experts\n",
      args.preset.c_str(), data.train.size(), data.validation.size(), static_cast<long long>(settings.model.vocab_size),
      static_cast<long long>(settings.model.d_model), static_cast<long long>(settings.model.num_experts));
  std::fflush(stdout);

  SingleEncoderLM expert(settings.model, init_rng);
  PhaseResult phase1 = run_phase(run, "phase1", settings, expert, order_rng, [&](UnitCheckpoint& checkpoint) {
    return pretrain_code_expert(expert, data, settings, order_rng, checkpoint);
  });
  Evaluation phase1_all = evaluate(expert, data, text_domains, settings.eval_batch_size);
  moe::save_module(args.out / "code_expert.safetensors", expert,
                   model_metadata(settings, data, "phase 1: one causal Transformer encoder LM, trained on code"));

  DenseEncoderMoELM moe_lm(settings.model, init_rng);
  load_pretrained_expert(moe_lm, expert, 0, true, false);
  PhaseResult phase2 = run_phase(run, "phase2", settings, moe_lm, order_rng, [&](UnitCheckpoint& checkpoint) {
    return train_moe(moe_lm, data, settings, order_rng, checkpoint);
  });
  moe::save_module(args.out / "moe.safetensors", moe_lm,
                   model_metadata(settings, data, "phase 2: dense MoE of causal Transformer encoders, MLP router"));

  RepresentativeRouting representative = representative_routing(moe_lm, data, settings.representative_per_domain);
  std::vector<TokenRouting> token_views;
  for (const TextDomain d : {TextDomain::code, TextDomain::story})
    token_views.push_back(token_routing(moe_lm, data, samples_of(data.validation, d).front()));
  Outcome o{std::move(data),
            std::move(phase1),
            std::move(phase2),
            std::move(phase1_all),
            std::move(representative),
            std::move(token_views),
            0.0};

  write_metrics(args.out, o);
  write_routing_tables(args.out, o, tokenizer);
  write_heatmap(args.out, o, settings);
  o.wall_seconds = run.elapsed_seconds();
  const std::string report = report_markdown(args, settings, o, tokenizer);
  std::ofstream file(args.out / "report.md", std::ios::binary);
  file << report;
  file.close();
  require(static_cast<bool>(file), "code_expert: could not write ", (args.out / "report.md").string());
  const auto begin = report.find("## Does the code expert");
  std::printf("\n%s\nwall time %s\nreport: %s\n", report.substr(begin, report.find("## Token-level") - begin).c_str(),
              minutes_seconds(o.wall_seconds).c_str(), (args.out / "report.md").c_str());
  run.finish();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  moe::examples::Args args;
  CLI::App app(
      "code_expert: the code-expert experiment of seeds/003, a code-pretrained expert in a dense MoE of Transformer "
      "encoders on code, math, story and science text");
  moe::examples::add_common_options(app, args,
                                    {.name = "code_expert", .presets = {"quick", "smoke", "paper"},
                                     .default_out = "out/code_expert", .resumable = true});
  return moe::examples::run_main(app, args, argc, argv, [&] { return run(args); });
}
