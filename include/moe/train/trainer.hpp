#pragma once
// moe::Trainer: the training loop, written once. The caller supplies the step function, which computes the
// loss of one batch and runs backward; the loop owns everything around it, in this order:
//
//   at each epoch's start   shuffle the sample order (from the trainer's generator), on_epoch_begin
//   each step               train mode, zero_grad, step(batch), the NaN/Inf check, clip_grad_norm,
//                           optimizer.step(), the LR schedule (sets the lr of the next step),
//                           model.update_balancing() (the aux-loss-free bias), on_step_end,
//                           on_epoch_end when the step ended the epoch, on_commit
//   at the end              on_fit_end
//
// Callbacks follow ensmallen's (ProgressBar, PrintLoss, EarlyStopAtMinLoss): objects with any of the
// members on_fit_begin, on_epoch_begin, on_step_end, on_epoch_end, on_commit, on_fit_end, each taking the
// trainer; on_step_end and on_epoch_end may return true to end the run. They run in the order given.
// on_commit comes last in a step, when everything the step changed is in place: it is where a checkpoint
// is saved (moe/train/checkpoint.hpp), so that a run resumed from it goes on exactly as the one saved.
//
// Everything the loop keeps from step to step is in TrainerState, including named numbers that callbacks
// and step functions keep there (log, add), so a checkpoint of the model, the optimizer, the generator and
// this state resumes bit for bit.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <limits>
#include <map>
#include <numeric>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/module.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/optim/schedule.hpp"

namespace moe {

/// How each epoch orders the samples.
enum class Shuffle {
  None,        // 0, 1, ..., n - 1 every epoch
  Fresh,       // 0, ..., n - 1 shuffled anew each epoch (PyTorch's RandomSampler)
  Cumulative,  // the previous epoch's order shuffled again
};

struct TrainerOptions {
  Index batch_size = 32;
  Index epochs = 1;
  Index max_steps = 0;      // > 0: stop after this many optimizer steps in all, even within an epoch
  bool drop_last = false;   // drop each epoch's last partial batch
  Shuffle shuffle = Shuffle::Fresh;
  double max_grad_norm = 0;  // > 0: clip_grad_norm of the optimizer's parameters before each step
  bool check_finite = true;  // a loss that is NaN or Inf stops the run with a moe::Error naming the step
};

/// What a step function returns when it has more to say than the loss (which may be returned alone).
struct StepResult {
  double loss = 0;
  Index samples = 0;  // what the progress line counts per second (samples, tokens); 0: the batch's size
};

/// Everything the loop carries from one step to the next; a checkpoint saves it beside the model's.
struct TrainerState {
  Index step = 0;         // optimizer steps taken
  Index epoch = 0;        // epochs begun: the current one, counting from 1
  Index batch = 0;        // batches taken in the current epoch
  bool stopped = false;   // a callback ended the run
  Index dataset_size = 0;
  Index batch_size = 0;
  std::vector<Index> order;  // the current epoch's order of samples
  double loss = std::numeric_limits<double>::quiet_NaN();  // of the last step
  double lr = std::numeric_limits<double>::quiet_NaN();    // the last step's learning rate
  Index samples = 0;                                        // the last step's count (StepResult::samples)
  double epoch_loss_sum = 0;
  Index epoch_steps = 0;
  std::map<std::string, double> values;      // Trainer::log: kept until overwritten
  std::map<std::string, double> epoch_sums;  // Trainer::add: set to zero at the start of each epoch
};

/// No learning-rate schedule: the optimizer keeps its lr.
struct NoSchedule {};

namespace detail {

template <class M>
void update_balancing_of(M& model) {
  if constexpr (requires { model.update_balancing(); }) model.update_balancing();
}

template <class C, class T>
concept TrainerCallback = requires(C& c, T& t) { c.on_fit_begin(t); } || requires(C& c, T& t) { c.on_epoch_begin(t); } ||
                          requires(C& c, T& t) { c.on_step_end(t); } || requires(C& c, T& t) { c.on_epoch_end(t); } ||
                          requires(C& c, T& t) { c.on_commit(t); } || requires(C& c, T& t) { c.on_fit_end(t); };

/// Calls an event that may return true to stop; returns whether it asked to.
template <class R>
bool stop_requested(R&& r) {
  if constexpr (std::is_convertible_v<R, bool>)
    return static_cast<bool>(r);
  else
    return false;
}

}  // namespace detail

/// The training loop. `Model` is what the loop switches to training mode (train(bool), if it has one) and
/// whose update_balancing() it calls after each optimizer step (if it has one: MoELayer, CausalLM); a
/// checkpoint also saves it (named_parameters, named_buffers, named_generators). The model, optimizer and
/// generator are held by reference and must outlive the trainer. The generator draws the sample order and
/// nothing else; a model's own randomness (dropout masks) lives in its modules' generators.
template <class Model, class Opt, class Schedule = NoSchedule>
class Trainer {
 public:
  using ModelType = Model;
  using OptimizerType = Opt;
  using ScheduleType = Schedule;

  Trainer(Model& model, Opt& optimizer, Rng& rng, const TrainerOptions& options, Schedule schedule = {})
      : model_(&model), optimizer_(&optimizer), rng_(&rng), options_(options), schedule_(std::move(schedule)) {
    detail::require(options.batch_size > 0, "Trainer: batch_size must be positive, got ", options.batch_size);
    detail::require(options.epochs > 0, "Trainer: epochs must be positive, got ", options.epochs);
    detail::require(options.max_steps >= 0, "Trainer: max_steps must be non-negative (0: no limit), got ",
                    options.max_steps);
    detail::require(options.max_grad_norm >= 0, "Trainer: max_grad_norm must be non-negative (0: no clipping), got ",
                    options.max_grad_norm);
  }

  /// Trains on samples 0 .. dataset_size - 1: step(batch) gets the indices of one batch (a span valid for
  /// the call) and returns the loss (double) or a StepResult, after running backward. Goes on from where
  /// the state is (a resumed run) and returns when every step is taken or a callback stops the run.
  template <class StepFn, class... Callbacks>
  const TrainerState& fit(Index dataset_size, StepFn&& step, Callbacks&&... callbacks) {
    static_assert((detail::TrainerCallback<std::remove_cvref_t<Callbacks>, Trainer> && ...),
                  "Trainer::fit: each callback must have at least one of on_fit_begin(Trainer&), "
                  "on_epoch_begin(Trainer&), on_step_end(Trainer&), on_epoch_end(Trainer&), on_commit(Trainer&), "
                  "on_fit_end(Trainer&)");
    using Result = std::invoke_result_t<StepFn&, std::span<const Index>>;
    static_assert(std::is_convertible_v<Result, double> || std::is_same_v<std::remove_cvref_t<Result>, StepResult>,
                  "Trainer::fit: the step function must be `double step(std::span<const Index> batch)` or "
                  "`StepResult step(std::span<const Index> batch)`");
    begin(dataset_size);
    (event_on_fit_begin(callbacks), ...);
    while (!state_.stopped && state_.step < total_steps_) {
      if (state_.epoch == 0 || state_.batch == steps_per_epoch_) {
        begin_epoch();
        (event_on_epoch_begin(callbacks), ...);
      }
      take_step(step);
      bool stop = false;
      ((stop = event_on_step_end(callbacks) || stop), ...);
      if (state_.batch == steps_per_epoch_) ((stop = event_on_epoch_end(callbacks) || stop), ...);
      if (stop) state_.stopped = true;
      (event_on_commit(callbacks), ...);
    }
    (event_on_fit_end(callbacks), ...);
    return state_;
  }

  /// Ends the run after the current step's callbacks (early stopping).
  void stop() { state_.stopped = true; }

  Model& model() { return *model_; }
  Opt& optimizer() { return *optimizer_; }
  Rng& rng() { return *rng_; }
  const Schedule& schedule() const { return schedule_; }
  const TrainerOptions& options() const { return options_; }
  TrainerState& state() { return state_; }
  const TrainerState& state() const { return state_; }

  Index step() const { return state_.step; }
  Index epoch() const { return state_.epoch; }
  /// Batches per epoch and steps in all, known once fit has begun.
  Index steps_per_epoch() const { return steps_per_epoch_; }
  Index total_steps() const { return total_steps_; }
  /// Whether the step just taken is the run's last: every step is taken, or a callback stopped the run.
  bool at_end() const { return state_.stopped || state_.step >= total_steps_; }
  /// Whether the step just taken ended an epoch.
  bool at_epoch_end() const { return state_.batch == steps_per_epoch_; }

  double loss() const { return state_.loss; }
  /// Mean loss over the current epoch's steps so far.
  double epoch_loss() const {
    return state_.epoch_steps > 0 ? state_.epoch_loss_sum / static_cast<double>(state_.epoch_steps)
                                  : std::numeric_limits<double>::quiet_NaN();
  }

  /// Records a named number (a validation loss, an accuracy): kept in the state until overwritten.
  void log(const std::string& name, double value) { state_.values[name] = value; }
  /// Adds to a named sum that starts at zero each epoch (correct predictions, an aux loss).
  void add(const std::string& name, double value) { state_.epoch_sums[name] += value; }
  /// This epoch's sum of `name` (0 when nothing was added).
  double sum(const std::string& name) const {
    const auto found = state_.epoch_sums.find(name);
    return found == state_.epoch_sums.end() ? 0.0 : found->second;
  }

  /// A number by name, as the CSV logger and early stopping read them: step, epoch, loss (the last step's),
  /// epoch_loss (the mean so far this epoch), lr (the last step's), then what log() recorded, then this
  /// epoch's sums (add()). NaN for a name not known.
  double metric(const std::string& name) const {
    if (name == "step") return static_cast<double>(state_.step);
    if (name == "epoch") return static_cast<double>(state_.epoch);
    if (name == "loss") return state_.loss;
    if (name == "epoch_loss") return epoch_loss();
    if (name == "lr") return state_.lr;
    if (const auto found = state_.values.find(name); found != state_.values.end()) return found->second;
    if (const auto found = state_.epoch_sums.find(name); found != state_.epoch_sums.end()) return found->second;
    return std::numeric_limits<double>::quiet_NaN();
  }

 private:
  void begin(Index dataset_size) {
    detail::require(dataset_size > 0, "Trainer::fit: dataset_size must be positive, got ", dataset_size);
    const Index batch = options_.batch_size;
    steps_per_epoch_ = options_.drop_last ? dataset_size / batch : (dataset_size + batch - 1) / batch;
    detail::require(steps_per_epoch_ > 0, "Trainer::fit: ", dataset_size, " samples make no batch of ", batch,
                    " with drop_last");
    total_steps_ = steps_per_epoch_ * options_.epochs;
    if (options_.max_steps > 0) total_steps_ = std::min(total_steps_, options_.max_steps);
    if constexpr (requires { schedule_.total_steps(); })
      detail::require(total_steps_ <= schedule_.total_steps(), "Trainer::fit: ", total_steps_,
                      " steps to take, the schedule has ", schedule_.total_steps());
    if (state_.step > 0 || state_.epoch > 0) {  // resumed
      detail::require(state_.dataset_size == dataset_size && state_.batch_size == batch, "Trainer::fit: the state is of ",
                      state_.dataset_size, " samples in batches of ", state_.batch_size, ", this run has ",
                      dataset_size, " in batches of ", batch);
      detail::require(static_cast<Index>(state_.order.size()) == dataset_size && state_.batch <= steps_per_epoch_,
                      "Trainer::fit: the state's order has ", state_.order.size(), " samples at batch ",
                      state_.batch, ", expected ", dataset_size, " and at most ", steps_per_epoch_);
    } else {
      state_.dataset_size = dataset_size;
      state_.batch_size = batch;
      state_.order.resize(static_cast<std::size_t>(dataset_size));
      std::iota(state_.order.begin(), state_.order.end(), Index{0});
    }
    if (state_.step < total_steps_) set_schedule(state_.step);
  }

  void begin_epoch() {
    ++state_.epoch;
    state_.batch = 0;
    state_.epoch_loss_sum = 0;
    state_.epoch_steps = 0;
    state_.epoch_sums.clear();
    if (options_.shuffle == Shuffle::Fresh) std::iota(state_.order.begin(), state_.order.end(), Index{0});
    if (options_.shuffle != Shuffle::None) shuffle(state_.order, *rng_);
  }

  template <class StepFn>
  void take_step(StepFn& step) {
    const Index start = state_.batch * options_.batch_size;
    const Index size = std::min(options_.batch_size, state_.dataset_size - start);
    const std::span<const Index> batch(state_.order.data() + start, static_cast<std::size_t>(size));
    set_training(*model_, true);
    optimizer_->zero_grad();
    StepResult result;
    try {
      if constexpr (std::is_convertible_v<std::invoke_result_t<StepFn&, std::span<const Index>>, double>)
        result.loss = static_cast<double>(step(batch));
      else
        result = step(batch);
    } catch (const Error& e) {
      detail::fail("Trainer: step ", state_.step + 1, " (epoch ", state_.epoch, ", batch ", state_.batch + 1, " of ",
                   steps_per_epoch_, "): ", e.what());
    }
    if (result.samples == 0) result.samples = size;
    if (options_.check_finite && !std::isfinite(result.loss)) detail::fail(non_finite_message(result.loss));
    if (options_.max_grad_norm > 0) clip_grad_norm(optimizer_->parameters(), options_.max_grad_norm);
    state_.lr = optimizer_->lr();
    optimizer_->step();
    ++state_.step;
    ++state_.batch;
    if (state_.step < total_steps_) set_schedule(state_.step);
    detail::update_balancing_of(*model_);
    state_.loss = result.loss;
    state_.samples = result.samples;
    state_.epoch_loss_sum += result.loss;
    ++state_.epoch_steps;
  }

  void set_schedule(Index step) {
    if constexpr (!std::is_same_v<Schedule, NoSchedule>) apply_schedule(schedule_, *optimizer_, step);
  }

  /// Names the step and, where they tell, the parameters that are not finite: a value (the step before
  /// broke it) or else the gradients (this step's forward or backward).
  std::string non_finite_message(double loss) const {
    std::string where;
    Index bad_gradients = 0;
    std::string first_gradient;
    const auto& parameters = optimizer_->parameters();
    for (const auto& p : parameters) {
      if (where.empty() && !p.parameter->value.allFinite()) where = detail::concat("parameter '", p.name, "' is not finite");
      if (!p.parameter->grad.allFinite() && bad_gradients++ == 0) first_gradient = p.name;
    }
    if (where.empty() && bad_gradients > 0)
      where = detail::concat("the gradients of ", bad_gradients, " of ", parameters.size(),
                             " parameters are not finite, the first '", first_gradient, "'");
    if (where.empty()) where = "every parameter and gradient is finite";
    return detail::concat("Trainer: the loss is ", loss, " at step ", state_.step + 1, " (epoch ", state_.epoch,
                          ", batch ", state_.batch + 1, " of ", steps_per_epoch_, "); ", where);
  }

  template <class C>
  void event_on_fit_begin(C& c) {
    if constexpr (requires { c.on_fit_begin(*this); }) c.on_fit_begin(*this);
  }
  template <class C>
  void event_on_epoch_begin(C& c) {
    if constexpr (requires { c.on_epoch_begin(*this); }) c.on_epoch_begin(*this);
  }
  template <class C>
  bool event_on_step_end(C& c) {
    if constexpr (requires { c.on_step_end(*this); }) {
      if constexpr (std::is_void_v<decltype(c.on_step_end(*this))>)
        c.on_step_end(*this);
      else
        return detail::stop_requested(c.on_step_end(*this));
    }
    return false;
  }
  template <class C>
  bool event_on_epoch_end(C& c) {
    if constexpr (requires { c.on_epoch_end(*this); }) {
      if constexpr (std::is_void_v<decltype(c.on_epoch_end(*this))>)
        c.on_epoch_end(*this);
      else
        return detail::stop_requested(c.on_epoch_end(*this));
    }
    return false;
  }
  template <class C>
  void event_on_commit(C& c) {
    if constexpr (requires { c.on_commit(*this); }) c.on_commit(*this);
  }
  template <class C>
  void event_on_fit_end(C& c) {
    if constexpr (requires { c.on_fit_end(*this); }) c.on_fit_end(*this);
  }

  Model* model_;
  Opt* optimizer_;
  Rng* rng_;
  TrainerOptions options_;
  Schedule schedule_;
  TrainerState state_;
  Index steps_per_epoch_ = 0;
  Index total_steps_ = 0;
};

template <class Model, class Opt>
Trainer(Model&, Opt&, Rng&, const TrainerOptions&) -> Trainer<Model, Opt, NoSchedule>;
template <class Model, class Opt, class Schedule>
Trainer(Model&, Opt&, Rng&, const TrainerOptions&, Schedule) -> Trainer<Model, Opt, Schedule>;

namespace detail {

/// Calls fn(trainer); true when fn returns something that converts to true (a request to end the run).
template <class F, class T>
bool call_may_stop(F& fn, T& trainer) {
  if constexpr (std::is_void_v<std::invoke_result_t<F&, T&>>) {
    fn(trainer);
    return false;
  } else {
    return static_cast<bool>(fn(trainer));
  }
}

}  // namespace detail

/// A callback made of a function: OnEpochBegin{[&](auto& trainer) { ... }}, and so on. The function of
/// OnStepEnd and OnEpochEnd may return true to end the run.
template <class F>
struct OnEpochBegin {
  F fn;
  template <class T>
  void on_epoch_begin(T& trainer) {
    fn(trainer);
  }
};
template <class F>
struct OnStepEnd {
  F fn;
  template <class T>
  bool on_step_end(T& trainer) {
    return detail::call_may_stop(fn, trainer);
  }
};
template <class F>
struct OnEpochEnd {
  F fn;
  template <class T>
  bool on_epoch_end(T& trainer) {
    return detail::call_may_stop(fn, trainer);
  }
};
template <class F>
OnEpochBegin(F) -> OnEpochBegin<F>;
template <class F>
OnStepEnd(F) -> OnStepEnd<F>;
template <class F>
OnEpochEnd(F) -> OnEpochEnd<F>;

}  // namespace moe
