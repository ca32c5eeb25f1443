#pragma once
// Training one of the two models on the shared window order, and evaluating it on the validation windows:
// loss per domain, and how many of each domain's tokens every MoE layer sent to each expert.

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "common/check.hpp"
#include "common/checkpoints.hpp"
#include "expert_load_heatmaps/data.hpp"
#include "moe/analysis/load.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/nn/loss.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/optim/schedule.hpp"
#include "moe/train/load_diagnostics.hpp"
#include "moe/train/progress.hpp"
#include "moe/train/trainer.hpp"

namespace moe::examples {

struct TrainConfig {
  Index batch = 16;  // windows per step
  Index steps = 400;
  Index warmup_steps = 40;
  double lr = 3e-3;
  double min_lr = 3e-4;
  double weight_decay = 0.1;
  double max_grad_norm = 1.0;
  Index eval_every = 100;            // steps between validation rows of metrics.csv
  Index eval_windows_in_training = 48;  // validation windows those rows use, a third from each domain
                                        // (the final evaluation uses all)
  Index diagnostics_every = 1;  // steps between rows of the load diagnostics (moe::LoadDiagnosticsLog)
};

/// What one evaluation pass measured.
struct Evaluation {
  std::array<double, 3> loss{};         // mean cross entropy per predicted token, per domain
  std::array<Index, 3> tokens{};        // tokens routed per domain (each MoE layer routes them all)
  std::vector<std::array<IndexVector, 3>> counts;  // [MoE layer][domain]: assignments per expert
  std::vector<double> max_violation_global;        // per MoE layer: MaxVio of all validation tokens
  double max_violation_batch = 0.0;  // MaxVio per validation batch, mean over batches and MoE layers

  double mean_max_violation_global() const {
    double sum = 0.0;
    for (const double v : max_violation_global) sum += v;
    return max_violation_global.empty() ? 0.0 : sum / static_cast<double>(max_violation_global.size());
  }

  template <class Archive>
  void serialize(Archive& archive) {
    archive(loss, tokens, counts, max_violation_global, max_violation_batch);
  }
};

struct MetricRow {
  Index step = 0;
  double train_loss = 0.0;  // mean cross entropy over the steps since the previous row
  std::array<double, 3> validation_loss{};
  double max_violation_batch = 0.0;  // MaxVio per training batch, mean over those steps and MoE layers

  template <class Archive>
  void serialize(Archive& archive) {
    archive(step, train_loss, validation_loss, max_violation_batch);
  }
};

struct RunResult {
  std::vector<MetricRow> metrics;
  Evaluation evaluation;  // on every validation window, after training
  double seconds = 0.0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(metrics, evaluation, seconds);
  }
};

/// Inputs (the first seq_len ids of each window) and targets (the last seq_len) of a batch of windows.
inline void fill_batch(const TokenWindows& windows, std::span<const Index> picked, std::vector<Index>& inputs,
                       std::vector<Index>& targets) {
  const Index length = windows.window_length - 1;
  inputs.resize(picked.size() * static_cast<std::size_t>(length));
  targets.resize(inputs.size());
  for (std::size_t b = 0; b < picked.size(); ++b) {
    const Index* window = windows.window(picked[b]);
    std::copy(window, window + length, inputs.begin() + static_cast<std::ptrdiff_t>(b * length));
    std::copy(window + 1, window + length + 1, targets.begin() + static_cast<std::ptrdiff_t>(b * length));
  }
}

/// MaxVio of the last forward's load, averaged over the MoE layers (blocks 1, 2, ...).
template <class LM>
double mean_batch_max_violation(LM& lm) {
  double sum = 0.0;
  for (Index layer = 1; layer < lm.num_layers(); ++layer) sum += max_violation(lm.layer(layer).ffn().batch_load());
  return sum / static_cast<double>(lm.num_layers() - 1);
}

/// Runs `lm` in eval mode over the first `count` windows of `order` (indices into `windows`), `batch`
/// windows at a time, and counts each domain's assignments per expert in every MoE layer.
template <class LM>
Evaluation evaluate(LM& lm, const TokenWindows& windows, const std::vector<Index>& order, Index count, Index batch) {
  const Index length = windows.window_length - 1;
  const Index moe_layers = lm.num_layers() - 1;
  const Index num_experts = lm.layer(1).ffn().num_experts();
  Evaluation result;
  result.counts.resize(static_cast<std::size_t>(moe_layers));
  for (auto& per_domain : result.counts)
    for (auto& counts : per_domain) counts.setZero(num_experts);
  std::array<double, 3> loss_sum{};
  Index batches = 0;
  std::vector<Index> inputs, targets;
  lm.eval();
  for (Index start = 0; start < count; start += batch) {
    const Index size = std::min(batch, count - start);
    const std::span<const Index> picked(order.data() + start, static_cast<std::size_t>(size));
    fill_batch(windows, picked, inputs, targets);
    const MatrixX<float>& logits = lm.forward(inputs, size, length);
    for (Index t = 0; t < logits.rows(); ++t) {
      const auto domain = static_cast<std::size_t>(windows.domains[static_cast<std::size_t>(picked[t / length])]);
      const auto row = logits.row(t).template cast<double>();
      const double max = row.maxCoeff();
      const double log_sum = max + std::log((row.array() - max).exp().sum());
      loss_sum[domain] += log_sum - row(targets[static_cast<std::size_t>(t)]);
      ++result.tokens[domain];
    }
    for (Index m = 0; m < moe_layers; ++m) {
      auto& per_domain = result.counts[static_cast<std::size_t>(m)];
      const IndexMatrix& experts = lm.layer(1 + m).ffn().routing().experts;
      for (Index t = 0; t < experts.rows(); ++t) {
        const auto domain = static_cast<std::size_t>(windows.domains[static_cast<std::size_t>(picked[t / length])]);
        for (Index j = 0; j < experts.cols(); ++j) ++per_domain[domain](experts(t, j));
      }
    }
    result.max_violation_batch += mean_batch_max_violation(lm);
    ++batches;
  }
  lm.train();
  for (std::size_t d = 0; d < 3; ++d)
    result.loss[d] = result.tokens[d] > 0 ? loss_sum[d] / static_cast<double>(result.tokens[d]) : 0.0;
  result.max_violation_batch /= static_cast<double>(std::max<Index>(batches, 1));
  for (const auto& per_domain : result.counts)
    result.max_violation_global.push_back(max_violation(per_domain[0] + per_domain[1] + per_domain[2]));
  return result;
}

/// The windows of every training step: epochs of shuffled window indices, the same for both runs.
inline std::vector<Index> training_order(Index windows, Index steps, Index batch, Rng& rng) {
  std::vector<Index> order;
  order.reserve(static_cast<std::size_t>(steps * batch));
  std::vector<Index> epoch(static_cast<std::size_t>(windows));
  while (static_cast<Index>(order.size()) < steps * batch) {
    for (Index w = 0; w < windows; ++w) epoch[static_cast<std::size_t>(w)] = w;
    shuffle(epoch, rng);
    order.insert(order.end(), epoch.begin(), epoch.end());
  }
  order.resize(static_cast<std::size_t>(steps * batch));
  return order;
}

/// Trains with moe::Trainer: AdamW with linear warm-up and a cosine decay, gradient clipping, the balancer's
/// update after each step (AuxLossFree's bias; nothing for SequenceAuxLoss, whose gradient is in backward).
/// The batches follow `train_order` (windows, config.batch per step), which both runs share, so the trainer
/// itself does not shuffle. Evaluates on the validation windows of `periodic_order` every eval_every steps,
/// and on all of `validation_order` at the end. Logs the load diagnostics of every MoE layer on the
/// training batches (moe::LoadDiagnosticsLog) into `diagnostics_dir`/<label>.csv and .png, rewritten at
/// each evaluation and at the end. `checkpoints` (common/checkpoints.hpp) may resume the training and save
/// it as it goes; the metrics rows and the diagnostics are kept with it.
template <class LM, class Checkpoints = NoCheckpoints>
RunResult train_and_evaluate(LM& lm, const std::string& label, const PreparedData& data,
                             const std::vector<Index>& train_order, const std::vector<Index>& validation_order,
                             const std::vector<Index>& periodic_order, const TrainConfig& config,
                             const std::filesystem::path& diagnostics_dir, Checkpoints&& checkpoints = {}) {
  const Index length = data.train.window_length - 1;
  AdamW<float> optimizer(lm.named_parameters(), {.lr = config.lr, .weight_decay = config.weight_decay});
  Rng unused;  // the order is train_order: the trainer draws nothing
  Trainer trainer(lm, optimizer, unused,
                  {.batch_size = config.batch, .shuffle = Shuffle::None, .max_grad_norm = config.max_grad_norm},
                  CosineWithWarmup(config.lr, config.warmup_steps, config.steps, config.min_lr));
  CrossEntropyLoss<float> cross_entropy;
  ProgressBar progress(label, {.unit = "tokens", .seconds_between_lines = 5.0});
  using MoE = std::remove_reference_t<decltype(lm.layer(1).ffn())>;
  std::vector<MoE*> moe_layers;
  for (Index layer = 1; layer < lm.num_layers(); ++layer) moe_layers.push_back(&lm.layer(layer).ffn());
  LoadDiagnosticsLog diagnostics(moe_layers, diagnostics_dir / (label + ".csv"), diagnostics_dir / (label + ".png"),
                                 {.every_steps = config.diagnostics_every, .write_every_steps = config.eval_every,
                                  .title = "Load diagnostics of " + label + "'s MoE layers on its training batches"});
  RunResult result;
  checkpoints.keep(result.metrics);
  checkpoints.keep(diagnostics);
  checkpoints.resume(trainer);
  std::vector<Index> picked, inputs, targets;
  const auto step = [&](std::span<const Index> positions) {
    picked.resize(positions.size());
    for (std::size_t b = 0; b < positions.size(); ++b) picked[b] = train_order[static_cast<std::size_t>(positions[b])];
    fill_batch(data.train, picked, inputs, targets);
    const float loss = cross_entropy.forward(lm.forward(inputs, config.batch, length), targets);
    lm.backward(cross_entropy.backward());
    return StepResult{.loss = loss, .samples = config.batch * length};
  };
  // The sums since the last metrics row are in the trainer's state, which a checkpoint keeps.
  const auto after_step = [&](auto& t) {
    std::map<std::string, double>& values = t.state().values;
    double& loss_sum = values["loss_sum"];
    double& violation_sum = values["violation_sum"];
    double& since_row = values["since_row"];
    loss_sum += t.loss();
    violation_sum += mean_batch_max_violation(lm);
    since_row += 1.0;
    if (t.step() % config.eval_every != 0 && !t.at_end()) return;
    const std::vector<Index>& windows = t.at_end() ? validation_order : periodic_order;
    const Evaluation check = evaluate(lm, data.validation, windows, static_cast<Index>(windows.size()), config.batch);
    result.metrics.push_back({t.step(), loss_sum / since_row, check.loss, violation_sum / since_row});
    loss_sum = violation_sum = since_row = 0.0;
    if (t.at_end()) result.evaluation = check;
  };
  try {
    // The diagnostics first: after_step's evaluations run other forwards.
    trainer.fit(config.steps * config.batch, step, diagnostics, OnStepEnd{after_step}, progress, checkpoints);
  } catch (const Error& e) {
    throw Error(label + ": " + e.what());
  }
  result.seconds = checkpoints.elapsed_seconds();
  return result;
}

}  // namespace moe::examples
