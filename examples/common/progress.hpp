#pragma once
// One progress line every few seconds on a long run: step, loss, throughput, time left.

#include <chrono>
#include <cstdio>
#include <string>

#include "moe/core/types.hpp"

namespace moe::examples {

class Progress {
 public:
  Progress(std::string label, Index total_steps, double seconds_between_lines = 2.0)
      : label_(std::move(label)), total_(total_steps), interval_(seconds_between_lines), start_(Clock::now()),
        last_(start_) {}

  /// Call after each step with the number of samples it processed and its loss.
  void step(Index samples, double loss) {
    ++done_;
    samples_ += samples;
    const auto now = Clock::now();
    if (done_ < total_ && seconds(now - last_) < interval_) return;
    last_ = now;
    const double elapsed = seconds(now - start_);
    const double left = done_ > 0 ? elapsed * static_cast<double>(total_ - done_) / static_cast<double>(done_) : 0.0;
    std::fprintf(stderr, "[%s] step %lld/%lld  loss %.4f  %.0f samples/s  elapsed %s  left %s\n", label_.c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_), loss,
                 elapsed > 0 ? static_cast<double>(samples_) / elapsed : 0.0, clock(elapsed).c_str(),
                 clock(left).c_str());
  }

  double elapsed_seconds() const { return seconds(Clock::now() - start_); }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
  static std::string clock(double s) {
    char text[32];
    const long long total = static_cast<long long>(s + 0.5);
    std::snprintf(text, sizeof text, "%02lld:%02lld:%02lld", total / 3600, total / 60 % 60, total % 60);
    return text;
  }

  std::string label_;
  Index total_;
  double interval_;
  Clock::time_point start_, last_;
  Index done_ = 0;
  Index samples_ = 0;
};

}  // namespace moe::examples
