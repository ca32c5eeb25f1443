#pragma once
// Learning-rate schedules as pure functions of the step, so a checkpoint only stores the step. Step s is
// the optimizer step about to be taken (0 for the first): call apply_schedule(schedule, optimizer, s)
// before optimizer.step().

#include <cmath>
#include <concepts>
#include <numbers>
#include <optional>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"
#include "moe/optim/optimizer.hpp"

namespace moe {

template <class S>
concept LRSchedule = requires(const S& s, Index step) {
  { s.lr(step) } -> std::convertible_to<double>;
  { s.momentum(step) } -> std::same_as<std::optional<double>>;
};

namespace detail {

/// PyTorch's _annealing_cos: from `start` at pct 0 to `end` at pct 1 along half a cosine.
inline double cos_anneal(double start, double end, double pct) {
  return end + (start - end) / 2.0 * (std::cos(std::numbers::pi * pct) + 1.0);
}

inline void check_step(Index step, Index total_steps, const char* schedule) {
  detail::require(step >= 0, schedule, ": step must be non-negative, got ", step);
  detail::require(step < total_steps, schedule, ": step ", step,
                  " is past the end, expected < total_steps = ", total_steps);
}

}  // namespace detail

/// The same learning rate at every step (not torch's ConstantLR, which scales by a factor for a while).
class ConstantLR {
 public:
  explicit ConstantLR(double lr) : lr_(lr) {
    detail::require(lr >= 0.0, "ConstantLR: lr must be non-negative, got ", lr);
  }

  double lr(Index step) const {
    detail::require(step >= 0, "ConstantLR: step must be non-negative, got ", step);
    return lr_;
  }
  std::optional<double> momentum(Index) const { return std::nullopt; }

 private:
  double lr_;
};

/// torch.optim.lr_scheduler.OneCycleLR (Smith & Topin 2019) with anneal_strategy "cos" and three_phase
/// false. The lr rises from max_lr / div_factor to max_lr until step pct_start total_steps - 1, then falls
/// to max_lr / div_factor / final_div_factor at step total_steps - 1; the momentum (beta1 for Adam) goes
/// the other way, max_momentum -> base_momentum -> max_momentum. PyTorch also computes a value for step
/// total_steps, which no optimizer step uses; here that step is an error, like every later one.
class OneCycleLR {
 public:
  struct Options {
    double pct_start = 0.3;
    double div_factor = 25;
    double final_div_factor = 1e4;
    bool cycle_momentum = true;
    double base_momentum = 0.85;
    double max_momentum = 0.95;
  };

  OneCycleLR(double max_lr, Index total_steps, const Options& options)
      : options_(options),
        total_steps_(total_steps),
        initial_lr_(max_lr / options.div_factor),
        max_lr_(max_lr),
        min_lr_(initial_lr_ / options.final_div_factor),
        warmup_end_(options.pct_start * static_cast<double>(total_steps) - 1.0) {
    detail::require(max_lr > 0.0, "OneCycleLR: max_lr must be positive, got ", max_lr);
    detail::require(total_steps > 0, "OneCycleLR: total_steps must be positive, got ", total_steps);
    detail::require(options.pct_start >= 0.0 && options.pct_start <= 1.0,
                    "OneCycleLR: pct_start must lie in [0, 1], got ", options.pct_start);
    detail::require(options.div_factor > 0.0 && options.final_div_factor > 0.0,
                    "OneCycleLR: div_factor and final_div_factor must be positive, got ", options.div_factor, " and ",
                    options.final_div_factor);
    detail::require(warmup_end_ > 0.0 && warmup_end_ < static_cast<double>(total_steps - 1),
                    "OneCycleLR: both phases need steps, expected 0 < pct_start * total_steps - 1 < total_steps - 1",
                    ", got ", warmup_end_, " with total_steps ", total_steps);
  }
  OneCycleLR(double max_lr, Index total_steps) : OneCycleLR(max_lr, total_steps, Options{}) {}

  double lr(Index step) const {
    const auto [phase, pct] = locate(step);
    return phase == 0 ? detail::cos_anneal(initial_lr_, max_lr_, pct) : detail::cos_anneal(max_lr_, min_lr_, pct);
  }

  std::optional<double> momentum(Index step) const {
    const auto [phase, pct] = locate(step);
    if (!options_.cycle_momentum) return std::nullopt;
    return phase == 0 ? detail::cos_anneal(options_.max_momentum, options_.base_momentum, pct)
                      : detail::cos_anneal(options_.base_momentum, options_.max_momentum, pct);
  }

  Index total_steps() const { return total_steps_; }

 private:
  struct Position {
    int phase;
    double pct;  // fraction of the phase done, in [0, 1]
  };

  Position locate(Index step) const {
    detail::check_step(step, total_steps_, "OneCycleLR");
    const auto s = static_cast<double>(step);
    if (s <= warmup_end_) return {0, s / warmup_end_};
    return {1, (s - warmup_end_) / (static_cast<double>(total_steps_ - 1) - warmup_end_)};
  }

  Options options_;
  Index total_steps_;
  double initial_lr_, max_lr_, min_lr_;
  double warmup_end_;  // the step where phase 1 ends and phase 2 starts
};

/// Linear warm-up, lr = base_lr (step + 1) / warmup_steps for step < warmup_steps (reaching base_lr at
/// its last step), then half a cosine (Loshchilov & Hutter 2017, SGDR without restarts) from base_lr at
/// step warmup_steps to min_lr at step total_steps - 1. No momentum.
class CosineWithWarmup {
 public:
  CosineWithWarmup(double base_lr, Index warmup_steps, Index total_steps, double min_lr = 0)
      : base_lr_(base_lr), min_lr_(min_lr), warmup_steps_(warmup_steps), total_steps_(total_steps) {
    detail::require(base_lr >= 0.0, "CosineWithWarmup: base_lr must be non-negative, got ", base_lr);
    detail::require(min_lr >= 0.0 && min_lr <= base_lr, "CosineWithWarmup: min_lr must lie in [0, base_lr = ", base_lr,
                    "], got ", min_lr);
    detail::require(warmup_steps >= 0, "CosineWithWarmup: warmup_steps must be non-negative, got ", warmup_steps);
    detail::require(total_steps - warmup_steps >= 2,
                    "CosineWithWarmup: the cosine needs two steps, expected total_steps >= warmup_steps + 2, got ",
                    total_steps, " and ", warmup_steps);
  }

  double lr(Index step) const {
    detail::check_step(step, total_steps_, "CosineWithWarmup");
    if (step < warmup_steps_) return base_lr_ * static_cast<double>(step + 1) / static_cast<double>(warmup_steps_);
    const double pct =
        static_cast<double>(step - warmup_steps_) / static_cast<double>(total_steps_ - 1 - warmup_steps_);
    return detail::cos_anneal(base_lr_, min_lr_, pct);
  }
  std::optional<double> momentum(Index) const { return std::nullopt; }

  Index total_steps() const { return total_steps_; }

 private:
  double base_lr_, min_lr_;
  Index warmup_steps_, total_steps_;
};

/// Sets the optimizer's lr for `step` and, when the schedule cycles it, its momentum (beta1 for Adam).
template <LRSchedule Schedule, Optimizer Opt>
void apply_schedule(const Schedule& schedule, Opt& optimizer, Index step) {
  optimizer.set_lr(schedule.lr(step));
  if (const auto momentum = schedule.momentum(step)) optimizer.set_momentum(*momentum);
}

}  // namespace moe
