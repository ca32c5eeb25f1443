#pragma once
// What the example writes from the two runs' evaluations: expert_load.csv, summary.csv, metrics.csv and
// the heatmaps of DeepSeek-V3's Figure 10 (one PNG per MoE layer and a montage of them all).

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/corpora/corpus.hpp"
#include "expert_load_heatmaps/training.hpp"
#include "moe/analysis/csv.hpp"
#include "moe/analysis/heatmap.hpp"
#include "moe/analysis/load.hpp"

namespace moe::examples {

/// The two runs, in the order of Figure 10's panels (aux-loss-based above aux-loss-free).
struct NamedRun {
  std::string id;     // in the CSV files: aux_loss_based, aux_loss_free
  std::string title;  // in the figures: Aux-Loss-Based, Aux-Loss-Free
  const RunResult* result = nullptr;
};

/// One (model, MoE layer, domain) row of summary.csv.
struct Specialization {
  double max_relative_load = 0.0;
  double top10_share = 0.0;  // share of the assignments taken by the busiest 10% of the experts
  double entropy = 0.0;      // of the experts' shares of the assignments, in nats (log N when balanced)
};

/// Share of the assignments taken by the busiest tenth of the N experts. N / 10 need not be whole, so the
/// last expert counted counts with the fractional part (6.4 experts of 64): balanced load gives exactly 0.1.
inline double top_tenth_share(const IndexVector& counts) {
  std::vector<double> sorted(counts.data(), counts.data() + counts.size());
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  double total = 0.0;
  for (const double c : sorted) total += c;
  if (total == 0.0) return 0.0;
  const double experts = static_cast<double>(sorted.size()) / 10.0;
  const auto whole = static_cast<std::size_t>(experts);
  double top = 0.0;
  for (std::size_t i = 0; i < whole; ++i) top += sorted[i];
  if (whole < sorted.size()) top += (experts - static_cast<double>(whole)) * sorted[whole];
  return top / total;
}

inline Specialization specialization(const IndexVector& counts, Index tokens, Index k) {
  return {relative_load(counts, tokens, k).maxCoeff(), top_tenth_share(counts), load_entropy(counts)};
}

/// Mutual information in nats between a token's domain and the experts it is routed to, from the
/// assignments per expert of each domain: I(D; E) = sum p(d, e) log(p(d, e) / (p(d) p(e))). 0 when every
/// domain loads the experts alike, however unbalanced that load is; log 3 when the domains use disjoint
/// experts. It separates domain specialization from plain imbalance, which max load and top10 share mix.
inline double domain_expert_information(const std::array<IndexVector, 3>& counts) {
  const Index experts = counts[0].size();
  double total = 0.0;
  std::array<double, 3> domain_total{};
  Eigen::VectorXd expert_total = Eigen::VectorXd::Zero(experts);
  for (std::size_t d = 0; d < 3; ++d) {
    domain_total[d] = static_cast<double>(counts[d].sum());
    expert_total += counts[d].cast<double>();
    total += domain_total[d];
  }
  if (total == 0.0) return 0.0;
  double information = 0.0;
  for (std::size_t d = 0; d < 3; ++d)
    for (Index e = 0; e < experts; ++e) {
      const double joint = static_cast<double>(counts[d](e));
      if (joint == 0.0) continue;
      information += joint / total * std::log(joint * total / (domain_total[d] * expert_total(e)));
    }
  return information;
}

/// relative load = assignments / (domain tokens * K / N): each (model, layer, domain) averages 1.
inline void write_expert_load_csv(const std::filesystem::path& path, const std::vector<NamedRun>& runs, Index k) {
  CsvWriter out(path);
  out.row("model", "layer", "domain", "expert", "relative_load");
  for (const NamedRun& run : runs) {
    const Evaluation& e = run.result->evaluation;
    for (std::size_t m = 0; m < e.counts.size(); ++m)
      for (const Domain domain : domains) {
        const auto d = static_cast<std::size_t>(domain);
        const Eigen::VectorXd relative = relative_load(e.counts[m][d], e.tokens[d], k);
        for (Index expert = 0; expert < relative.size(); ++expert)
          out.row(run.id, m + 1, domain_name(domain), expert + 1, relative(expert));
      }
  }
  out.close();
}

inline void write_summary_csv(const std::filesystem::path& path, const std::vector<NamedRun>& runs, Index k) {
  CsvWriter out(path);
  out.row("model", "layer", "domain", "max_relative_load", "top10_share", "entropy");
  for (const NamedRun& run : runs) {
    const Evaluation& e = run.result->evaluation;
    for (std::size_t m = 0; m < e.counts.size(); ++m)
      for (const Domain domain : domains) {
        const auto d = static_cast<std::size_t>(domain);
        const Specialization s = specialization(e.counts[m][d], e.tokens[d], k);
        out.row(run.id, m + 1, domain_name(domain), s.max_relative_load, s.top10_share, s.entropy);
      }
  }
  out.close();
}

inline void write_metrics_csv(const std::filesystem::path& path, const std::vector<NamedRun>& runs) {
  CsvWriter out(path);
  out.field("model").field("step").field("train_loss");
  for (const Domain domain : domains) out.field(std::string("val_loss_") + domain_name(domain));
  out.field("maxvio_batch").end_row();
  for (const NamedRun& run : runs)
    for (const MetricRow& row : run.result->metrics) {
      out.field(run.id).field(row.step).field(row.train_loss);
      for (const double loss : row.validation_loss) out.field(loss);
      out.field(row.max_violation_batch).end_row();
    }
  out.close();
}

/// Figure 10's row labels: our domain, and the Pile domain it stands in for.
inline std::vector<std::string> heatmap_row_labels() {
  std::vector<std::string> labels;
  for (const Domain domain : domains)
    labels.push_back(std::string(domain_name(domain)) + " (for " + domain_stands_for(domain) + ")");
  return labels;
}

/// One layer's panels: the aux-loss-based one above the aux-loss-free one, rows = domains, columns =
/// experts 1..N.
inline std::vector<HeatmapPanel> layer_panels(const std::vector<NamedRun>& runs, std::size_t moe_layer, Index k) {
  std::vector<HeatmapPanel> panels;
  for (const NamedRun& run : runs) {
    const Evaluation& e = run.result->evaluation;
    const Index num_experts = e.counts[moe_layer][0].size();
    MatrixX<double> values(3, num_experts);
    for (const Domain domain : domains) {
      const auto d = static_cast<std::size_t>(domain);
      values.row(static_cast<Index>(d)) = relative_load(e.counts[moe_layer][d], e.tokens[d], k).transpose();
    }
    panels.push_back({values, run.title + " Layer " + std::to_string(moe_layer + 1)});
  }
  return panels;
}

/// Figure 10's colour scale: relative load 0 (light yellow) to 10 (dark red), with a labelled bar.
inline HeatmapOptions figure10_options() {
  HeatmapOptions options;
  options.row_labels = heatmap_row_labels();
  options.min = 0.0;
  options.max = 10.0;
  options.colours = ColourMap::yellow_red;
  options.colour_bar_label = "Relative Expert Load";
  return options;
}

/// heatmaps/layer_NN.png for every MoE layer and figure10.png with all of them; returns the paths written.
inline std::vector<std::filesystem::path> write_heatmaps(const std::filesystem::path& out,
                                                         const std::vector<NamedRun>& runs, Index k) {
  std::filesystem::create_directories(out / "heatmaps");
  std::vector<std::filesystem::path> written;
  std::vector<HeatmapFigure> figures;
  const std::size_t layers = runs.front().result->evaluation.counts.size();
  for (std::size_t m = 0; m < layers; ++m) {
    const std::vector<HeatmapPanel> panels = layer_panels(runs, m, k);
    const std::string name = fmt::format("layer_{:02}.png", m + 1);
    write_stacked_heatmaps_png(out / "heatmaps" / name, panels, figure10_options());
    written.push_back(out / "heatmaps" / name);
    figures.emplace_back(panels, figure10_options());
  }
  write_montage_png(out / "figure10.png", figures, layers <= 4 ? 2 : 3,
                    "Expert load of the aux-loss-based and aux-loss-free models on three domains "
                    "(validation split; relative load = load / balanced load)");
  written.push_back(out / "figure10.png");
  return written;
}

}  // namespace moe::examples
