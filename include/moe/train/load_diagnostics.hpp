#pragma once
// LoadDiagnosticsLog: a Trainer callback that records, per MoE layer and step, how the step's forward
// routed its tokens (moe/analysis/load_diagnostics.hpp: tokens per expert, overload, MaxVio, score and
// load entropy, dropped fraction, selection margin), and writes them as a CSV file and a PNG plot over the
// steps. Needs cairo for the plot (moe/analysis/line_plot.hpp), which is why moe/moe.hpp does not include
// it.
//
// The CSV file has a header row and one row per recorded step and layer:
//   step              the optimizer steps taken (the Trainer's step(), from 1)
//   layer             the layer's position in the list given to the log, from 1
//   tokens            the rows the layer routed in the step's last forward
//   load_min, load_median, load_max   assignments per expert (before capacity drops)
//   overload          load_max / mean load
//   max_violation     MaxVio (Wang et al. 2024), overload - 1
//   score_entropy     mean per-token entropy of the router's normalised scores, nats
//   load_entropy      entropy of the load distribution, nats
//   dropped_fraction  assignments dropped by the capacity / (tokens K)
//   margin            mean over tokens of the K-th chosen selection value (score + bias) minus the best
//                     value not chosen; nan when K = N
// Numbers are the shortest text that reads back to the same double (nan, inf, -inf for the others).

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "moe/analysis/line_plot.hpp"
#include "moe/analysis/load_diagnostics.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/io/atomic_file.hpp"
#include "moe/train/callbacks.hpp"

namespace moe {

/// The diagnostics of one layer at one step.
struct LoadDiagnosticsRow {
  Index step = 0;
  Index layer = 0;  // from 1
  LoadDiagnostics values;

  /// cereal (or any archive taking values in order): how a checkpoint keeps the log of a run.
  template <class Archive>
  void serialize(Archive& archive) {
    archive(step, layer, values.tokens, values.load_min, values.load_median, values.load_max, values.overload,
            values.max_violation, values.score_entropy, values.load_entropy, values.dropped_fraction, values.margin);
  }
};

namespace detail {

/// Each real-valued diagnostic: its CSV column, its plot panel's title, where it is in LoadDiagnostics.
struct DiagnosticColumn {
  const char* column;
  const char* title;
  double LoadDiagnostics::*member;
};

inline constexpr DiagnosticColumn diagnostic_columns[] = {
    {"load_min", "tokens per expert: min", &LoadDiagnostics::load_min},
    {"load_median", "tokens per expert: median", &LoadDiagnostics::load_median},
    {"load_max", "tokens per expert: max", &LoadDiagnostics::load_max},
    {"overload", "overload (max / mean load)", &LoadDiagnostics::overload},
    {"max_violation", "MaxVio", &LoadDiagnostics::max_violation},
    {"score_entropy", "router score entropy per token (nats)", &LoadDiagnostics::score_entropy},
    {"load_entropy", "load entropy (nats)", &LoadDiagnostics::load_entropy},
    {"dropped_fraction", "assignments dropped (fraction)", &LoadDiagnostics::dropped_fraction},
    {"margin", "selection margin, K-th minus next", &LoadDiagnostics::margin},
};

}  // namespace detail

/// The CSV file described at the top of this header, written atomically.
inline void write_load_diagnostics_csv(const std::filesystem::path& path, const std::vector<LoadDiagnosticsRow>& rows) {
  write_file_atomically(path, detail::concat("write_load_diagnostics_csv: '", path.string(), "'"),
                                [&](std::ostream& out) {
                                  out << "step,layer,tokens";
                                  for (const auto& c : detail::diagnostic_columns) out << ',' << c.column;
                                  out << '\n';
                                  for (const LoadDiagnosticsRow& row : rows) {
                                    out << row.step << ',' << row.layer << ',' << row.values.tokens;
                                    for (const auto& c : detail::diagnostic_columns)
                                      out << ',' << MetricsCsv::format(row.values.*(c.member));
                                    out << '\n';
                                  }
                                });
}

/// One panel per diagnostic over the steps, one line per layer ("layer 1", ...), `title` above; written
/// atomically. Layers are numbered 1 .. the largest in `rows`.
inline void write_load_diagnostics_png(const std::filesystem::path& path, const std::vector<LoadDiagnosticsRow>& rows,
                                       const std::string& title = "MoE load diagnostics") {
  Index layers = 0;
  for (const LoadDiagnosticsRow& row : rows) {
    detail::require(row.layer >= 1, "write_load_diagnostics_png: '", path.string(), "': a row of layer ", row.layer,
                    ", layers count from 1");
    layers = std::max(layers, row.layer);
  }
  std::vector<LinePanel> panels;
  for (const auto& c : detail::diagnostic_columns) {
    LinePanel panel{c.title, {}};
    for (Index l = 1; l <= layers; ++l) panel.series.push_back({"layer " + std::to_string(l), {}, {}});
    for (const LoadDiagnosticsRow& row : rows) {
      LineSeries& s = panel.series[static_cast<std::size_t>(row.layer - 1)];
      s.x.push_back(static_cast<double>(row.step));
      s.y.push_back(row.values.*(c.member));
    }
    panels.push_back(std::move(panel));
  }
  write_line_plots_png(path, panels, {.title = title, .x_label = "step", .columns = 3});
}

/// What LoadDiagnosticsLog records, how often it writes, and the plot's title.
struct LoadDiagnosticsOptions {
  Index every_steps = 1;        // a row per layer every n steps, and after the last step
  Index write_every_steps = 0;  // rewrite the files every n steps; 0: only when fit ends
  std::string title = "MoE load diagnostics";  // above the plot
};

/// A Trainer callback: after every `every_steps`-th step (and the run's last) it records the diagnostics of
/// each layer's last forward in that step; every `write_every_steps` steps and when fit ends it writes
/// them all to `csv` and `png` (write_load_diagnostics_csv / _png), atomically, so that a reader never
/// sees half a file. It only reads what the layers keep of their last forward (routing(), the
/// backend's dropped()), plus a copy of each layer's selection bias: results are the same bits with it
/// or without it.
///
/// The Trainer updates the aux-loss-free bias before on_step_end, so the log keeps a copy of the bias
/// that the step's forward ranked with (taken at on_fit_begin and after each step) for the margin.
/// Give it before callbacks that run other forwards in on_step_end (Evaluate), which would replace the
/// routing it reads. A resumed run needs the rows recorded before: keep the log with the checkpoint (its
/// serialize member; the examples' UnitCheckpoint::keep); on_fit_begin refuses a resume without them.
template <class Layer>
class LoadDiagnosticsLog {
 public:
  using Scalar = typename Layer::Scalar;

  LoadDiagnosticsLog(std::vector<Layer*> layers, std::filesystem::path csv, std::filesystem::path png,
                     LoadDiagnosticsOptions options = {})
      : layers_(std::move(layers)), csv_(std::move(csv)), png_(std::move(png)), options_(std::move(options)),
        biases_(layers_.size()) {
    detail::require(!layers_.empty(), "LoadDiagnosticsLog: no layers to watch");
    for (std::size_t i = 0; i < layers_.size(); ++i)
      detail::require(layers_[i] != nullptr, "LoadDiagnosticsLog: layer ", i + 1, " is null");
    detail::require(options_.every_steps > 0, "LoadDiagnosticsLog: every_steps must be positive, got ",
                    options_.every_steps);
    detail::require(options_.write_every_steps >= 0,
                    "LoadDiagnosticsLog: write_every_steps must be non-negative (0: when fit ends), got ",
                    options_.write_every_steps);
  }

  template <class T>
  void on_fit_begin(T& trainer) {
    const Index last_recorded = trainer.step() - trainer.step() % options_.every_steps;
    const Index held = rows_.empty() ? 0 : rows_.back().step;
    detail::require(held >= last_recorded, "LoadDiagnosticsLog: the run goes on from step ", trainer.step(),
                    " but the log holds rows up to step ", held, ", not those of step ", last_recorded,
                    ": restore the log with the checkpoint (its serialize member)");
    keep_biases();
  }

  template <class T>
  void on_step_end(T& trainer) {
    if (trainer.step() % options_.every_steps == 0 || trainer.at_end()) record(trainer.step());
    keep_biases();
    if (options_.write_every_steps > 0 && trainer.step() % options_.write_every_steps == 0) write();
  }

  template <class T>
  void on_fit_end(T& /*trainer*/) {
    write();
  }

  /// Writes both files now.
  void write() const {
    write_load_diagnostics_csv(csv_, rows_);
    write_load_diagnostics_png(png_, rows_, options_.title);
  }

  const std::vector<LoadDiagnosticsRow>& rows() const { return rows_; }

  template <class Archive>
  void serialize(Archive& archive) {
    archive(rows_);
  }

 private:
  void record(Index step) {
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const MatrixX<Scalar>* bias = biases_[i].size() > 0 ? &biases_[i] : nullptr;
      rows_.push_back({step, static_cast<Index>(i + 1),
                       routing_diagnostics(layers_[i]->routing(), layers_[i]->backend().dropped(), bias)});
    }
  }

  /// Copies each layer's selection bias: the one its next forward ranks with (none: left empty).
  void keep_biases() {
    if constexpr (requires(Layer& l) { l.balancer().selection_bias(); })
      for (std::size_t i = 0; i < layers_.size(); ++i) {
        const MatrixX<Scalar>* bias = layers_[i]->balancer().selection_bias();
        if (bias)
          biases_[i] = *bias;
        else
          biases_[i].resize(0, 0);
      }
  }

  std::vector<Layer*> layers_;
  std::filesystem::path csv_, png_;
  LoadDiagnosticsOptions options_;
  std::vector<MatrixX<Scalar>> biases_;
  std::vector<LoadDiagnosticsRow> rows_;
};

}  // namespace moe
