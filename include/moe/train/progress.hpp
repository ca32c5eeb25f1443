#pragma once
// The progress line of a training run: step, epoch, loss, samples (or tokens) per second, elapsed time and
// time left. On a terminal it is one line redrawn in place (\r); otherwise (a log file, a pipe, ctest) a
// plain line every few seconds and at the end.

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// Whether `stream` is a terminal (false where the system cannot tell).
inline bool is_terminal(std::FILE* stream) {
#if __has_include(<unistd.h>)
  return stream != nullptr && ::isatty(::fileno(stream)) == 1;
#else
  (void)stream;
  return false;
#endif
}

struct ProgressOptions {
  std::string unit = "samples";  // what StepResult::samples counts, for "<rate> <unit>/s"
  double seconds_between_lines = 2.0;  // not on a terminal: a plain line this often (and at the end)
  std::FILE* stream = stderr;
  std::optional<bool> terminal{};  // redraw one line with \r; default: whether `stream` is a terminal
};

/// Counts steps towards `total` and prints the progress line. Usable without a Trainer (several runs
/// under one line); ProgressBar is the Trainer's callback around it.
class ProgressMeter {
 public:
  ProgressMeter(std::string label, Index total_steps, ProgressOptions options)
      : label_(std::move(label)), total_(total_steps), options_(std::move(options)),
        terminal_(options_.terminal.value_or(is_terminal(options_.stream))), start_(Clock::now()), last_(start_) {
    detail::require(total_steps >= 0, "ProgressMeter: total_steps must be non-negative, got ", total_steps);
  }
  ProgressMeter(std::string label, Index total_steps, double seconds_between_lines = 2.0)
      : ProgressMeter(std::move(label), total_steps, ProgressOptions{.seconds_between_lines = seconds_between_lines}) {}
  ProgressMeter(const ProgressMeter&) = delete;
  ProgressMeter& operator=(const ProgressMeter&) = delete;
  ~ProgressMeter() { end_line(); }

  /// Steps already taken before this meter started (a resumed run): they count towards the total, not
  /// towards the rate.
  void set_done(Index steps) { done_ = start_done_ = steps; }
  /// Shown as "epoch e/E" when set.
  void set_epoch(Index epoch, Index epochs) {
    epoch_ = epoch;
    epochs_ = epochs;
  }

  /// Call after each step with what it processed (samples, tokens) and its loss.
  void step(Index samples, double loss) {
    ++done_;
    samples_ += samples;
    loss_ = loss;
    const auto now = Clock::now();
    const double since = seconds(now - last_);
    if (done_ < total_ && since < (terminal_ ? 0.1 : options_.seconds_between_lines)) return;
    last_ = now;
    print(now);
    if (done_ >= total_) end_line();
  }

  /// Ends a line redrawn in place, so that what is printed next starts on a line of its own.
  void end_line() {
    if (!terminal_ || !drawn_) return;
    std::fputc('\n', options_.stream);
    std::fflush(options_.stream);
    drawn_ = false;
  }

  double elapsed_seconds() const { return seconds(Clock::now() - start_); }
  Index done() const { return done_; }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
  static std::string clock(double s) {
    char text[32];
    const long long total = static_cast<long long>(s + 0.5);
    std::snprintf(text, sizeof text, "%02lld:%02lld:%02lld", total / 3600, total / 60 % 60, total % 60);
    return text;
  }

  void print(Clock::time_point now) {
    const double elapsed = seconds(now - start_);
    const Index here = done_ - start_done_;
    const double left = here > 0 ? elapsed * static_cast<double>(total_ - done_) / static_cast<double>(here) : 0.0;
    std::string epoch;
    if (epochs_ > 0) epoch = "  epoch " + std::to_string(epoch_) + "/" + std::to_string(epochs_);
    char line[512];
    std::snprintf(line, sizeof line, "[%s] step %lld/%lld%s  loss %.4f  %.0f %s/s  elapsed %s  left %s",
                  label_.c_str(), static_cast<long long>(done_), static_cast<long long>(total_), epoch.c_str(), loss_,
                  elapsed > 0 ? static_cast<double>(samples_) / elapsed : 0.0, options_.unit.c_str(),
                  clock(elapsed).c_str(), clock(left).c_str());
    if (terminal_) {
      std::fprintf(options_.stream, "\r%s\033[K", line);  // \033[K: clear what a longer line left
      drawn_ = true;
    } else {
      std::fprintf(options_.stream, "%s\n", line);
    }
    std::fflush(options_.stream);
  }

  std::string label_;
  Index total_;
  ProgressOptions options_;
  bool terminal_;
  Clock::time_point start_, last_;
  Index done_ = 0, start_done_ = 0;
  Index samples_ = 0;
  Index epoch_ = 0, epochs_ = 0;
  double loss_ = 0;
  bool drawn_ = false;
};

/// The Trainer's progress line (ensmallen's ProgressBar): step/total, epoch, loss, rate, elapsed, left.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label = "train", ProgressOptions options = {})
      : label_(std::move(label)), options_(std::move(options)) {}

  template <class T>
  void on_fit_begin(T& trainer) {
    meter_.emplace(label_, trainer.total_steps(), options_);
    meter_->set_done(trainer.step());
  }
  template <class T>
  void on_step_end(T& trainer) {
    meter_->set_epoch(trainer.epoch(), epochs(trainer));
    meter_->step(trainer.state().samples, trainer.loss());
  }
  template <class T>
  void on_fit_end(T&) {
    if (meter_) meter_->end_line();
  }

  double elapsed_seconds() const { return meter_ ? meter_->elapsed_seconds() : 0.0; }

 private:
  template <class T>
  static Index epochs(const T& trainer) {
    return (trainer.total_steps() + trainer.steps_per_epoch() - 1) / trainer.steps_per_epoch();
  }

  std::string label_;
  ProgressOptions options_;
  std::optional<ProgressMeter> meter_;
};

/// Prints the mean loss of each epoch (ensmallen's PrintLoss), one line per epoch.
class PrintLoss {
 public:
  explicit PrintLoss(std::FILE* stream = stdout) : stream_(stream) {}

  template <class T>
  void on_epoch_end(T& trainer) {
    std::fprintf(stream_, "epoch %lld: loss %.6g\n", static_cast<long long>(trainer.epoch()), trainer.epoch_loss());
    std::fflush(stream_);
  }

 private:
  std::FILE* stream_;
};

}  // namespace moe
