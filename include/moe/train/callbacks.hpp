#pragma once
// The Trainer's callbacks besides the progress line: periodic evaluation, a CSV log of metrics, early
// stopping. Each keeps what must survive a resume in the trainer's state (Trainer::log), so that a run
// resumed from a checkpoint writes the same rows as one never interrupted.

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// Calls fn(trainer) every `every_steps` steps and after the last step (at_end): a validation pass that
/// records what it measured with trainer.log("val_loss", ...). The trainer puts the model back into
/// training mode before its next step.
template <class F>
class Evaluate {
 public:
  Evaluate(Index every_steps, F fn, bool at_end = true) : every_(every_steps), at_end_(at_end), fn_(std::move(fn)) {
    detail::require(every_steps > 0, "Evaluate: every_steps must be positive, got ", every_steps);
  }

  template <class T>
  void on_step_end(T& trainer) {
    if (trainer.step() % every_ == 0 || (at_end_ && trainer.at_end())) fn_(trainer);
  }

 private:
  Index every_;
  bool at_end_;
  F fn_;
};

/// A CSV file of metrics: a header "step,<columns>" and a row every `every_steps` steps and after the last
/// step, or with every_steps = 0 a row at the end of each epoch. Each column is trainer.metric(name): step,
/// epoch, loss, epoch_loss, lr, or a number recorded with log() or add(). Numbers are written in the
/// shortest form that reads back to the same double. Rows are flushed as they are written; a resumed run
/// first drops the rows after the step it resumes from, so the file ends as if never interrupted.
class MetricsCsv {
 public:
  MetricsCsv(std::filesystem::path path, std::vector<std::string> columns, Index every_steps = 0)
      : path_(std::move(path)), columns_(std::move(columns)), every_(every_steps) {
    detail::require(every_steps >= 0, "MetricsCsv: every_steps must be non-negative (0: each epoch), got ",
                    every_steps);
    header_ = "step";
    for (const auto& c : columns_) {
      detail::require(!c.empty() && c.find_first_of(",\"\n") == std::string::npos,
                      "MetricsCsv: a column name must be non-empty, without commas, quotes or newlines, got '", c,
                      "'");
      header_ += "," + c;
    }
  }

  template <class T>
  void on_fit_begin(T& trainer) {
    std::string kept = header_ + "\n";
    if (trainer.step() > 0) kept = rows_up_to(trainer.step());
    out_.open(path_, std::ios::binary | std::ios::trunc);
    detail::require(out_.is_open(), "MetricsCsv: cannot write '", path_.string(), "'");
    out_ << kept;
    out_.flush();
    last_row_ = trainer.step();
  }
  template <class T>
  void on_step_end(T& trainer) {
    if (every_ > 0 && (trainer.step() % every_ == 0 || trainer.at_end())) write_row(trainer);
  }
  template <class T>
  void on_epoch_end(T& trainer) {
    if (every_ == 0) write_row(trainer);
  }
  template <class T>
  void on_fit_end(T& trainer) {
    if (every_ == 0 && trainer.step() != last_row_ && trainer.step() > 0) write_row(trainer);  // stopped mid-epoch
    out_.close();
  }

  /// The shortest text that reads back to `value` (nan, inf, -inf for the others).
  static std::string format(double value) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    char text[64];
    const auto result = std::to_chars(text, text + sizeof text, value);
    return std::string(text, result.ptr);
  }

 private:
  template <class T>
  void write_row(T& trainer) {
    std::string row = std::to_string(trainer.step());
    for (const auto& c : columns_) {
      row += ',';  // (not "," + format(...): g++ 12 warns falsely about that concatenation, -Wrestrict)
      row += format(trainer.metric(c));
    }
    out_ << row << '\n';
    out_.flush();
    detail::require(!out_.fail(), "MetricsCsv: writing '", path_.string(), "' failed");
    last_row_ = trainer.step();
  }

  /// The existing file's header and its rows up to `step`: what a run resumed at `step` keeps.
  std::string rows_up_to(Index step) const {
    std::ifstream in(path_, std::ios::binary);
    detail::require(in.is_open(), "MetricsCsv: resuming at step ", step, ", but '", path_.string(),
                    "' does not exist");
    std::string line, kept;
    std::getline(in, line);
    detail::require(line == header_, "MetricsCsv: '", path_.string(), "' has the header '", line, "', expected '",
                    header_, "'");
    kept = line + "\n";
    while (std::getline(in, line)) {
      Index row_step = -1;
      const auto parsed = std::from_chars(line.data(), line.data() + line.size(), row_step);
      detail::require(parsed.ec == std::errc() && parsed.ptr != line.data(), "MetricsCsv: '", path_.string(),
                      "' has a row that does not start with a step: '", line, "'");
      if (row_step > step) break;
      kept += line + "\n";
    }
    return kept;
  }

  std::filesystem::path path_;
  std::vector<std::string> columns_;
  Index every_;
  std::string header_;
  std::ofstream out_;
  Index last_row_ = 0;
};

/// Ends the run when a metric has not improved for `patience` epochs (ensmallen's EarlyStopAtMinLoss):
/// by default the epoch's mean training loss; name a metric recorded with log() (a validation loss) to
/// watch that. The best value and the epochs since are kept in the trainer's state.
class EarlyStopAtMinLoss {
 public:
  explicit EarlyStopAtMinLoss(Index patience = 10, std::string metric = "epoch_loss")
      : patience_(patience), metric_(std::move(metric)) {
    detail::require(patience > 0, "EarlyStopAtMinLoss: patience must be positive, got ", patience);
  }

  template <class T>
  bool on_epoch_end(T& trainer) {
    const std::string best_key = "early_stop." + metric_ + ".best", wait_key = "early_stop." + metric_ + ".wait";
    const double value = trainer.metric(metric_);
    auto& values = trainer.state().values;
    const auto best = values.find(best_key);
    if (best == values.end() || value < best->second) {
      values[best_key] = value;
      values[wait_key] = 0;
      return false;
    }
    return ++values[wait_key] >= static_cast<double>(patience_);
  }

 private:
  Index patience_;
  std::string metric_;
};

}  // namespace moe
