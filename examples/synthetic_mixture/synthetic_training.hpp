#pragma once
// Trains an MoE of linear experts on moe::examples::make_synthetic_mixture: shared by the demo program and the
// training test, so the test checks exactly what the demo shows.

#include <algorithm>
#include <functional>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/checkpoints.hpp"
#include "moe/analysis/label_table.hpp"
#include "moe/analysis/load.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "synthetic_mixture/synthetic_mixture.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/loss.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/routing/expert_choice.hpp"
#include "moe/routing/softmax_top_k.hpp"
#include "moe/train/trainer.hpp"

namespace moe::examples {

/// The layer's router: softmax top-1 with the Switch aux loss, or expert choice (Zhou et al. 2022; with capacity
/// factor 1 each of 4 experts takes a quarter of the batch, and a point gets one expert on average).
enum class SyntheticRouter { top1, expert_choice };

struct SyntheticRunOptions {
  SyntheticMixtureOptions task{.samples = 8192};
  Index test_samples = 1024;
  Index experts = 4;
  int epochs = 30;
  Index batch = 64;
  double lr = 3e-2;
  double aux_alpha = 1e-2;  // top1 only: expert choice is balanced by construction
  SyntheticRouter router = SyntheticRouter::top1;
  double capacity_factor = 1.0;  // expert_choice only: each expert takes capacity_factor T / N points
  std::uint64_t seed = 1;
};

struct EpochRecord {
  int epoch = 0;
  double train_loss = 0, aux_loss = 0, train_accuracy = 0, test_accuracy = 0;
  double max_violation = 0;        // of the training load over the epoch
  Eigen::VectorXd relative_load;   // per expert, training load over the epoch

  template <class Archive>
  void serialize(Archive& archive) {
    archive(epoch, train_loss, aux_loss, train_accuracy, test_accuracy, max_violation, relative_load);
  }
};

struct SyntheticRunResult {
  std::vector<EpochRecord> epochs;
  LabelExpertTable region_by_expert{1, 1};  // test set, after training

  template <class Archive>
  void serialize(Archive& archive) {
    archive(epochs, region_by_expert);
  }
};

using SyntheticMoE = MoELayer<Linear<float>, SoftmaxTopK, 1, SwitchAuxLoss>;
using SyntheticExpertChoiceMoE = MoELayer<Linear<float>, ExpertChoice, 1, NoBalancing>;

inline std::string router_description(const SyntheticRunOptions& options) {
  if (options.router == SyntheticRouter::top1) return "a softmax top-1 router and the Switch aux loss";
  std::ostringstream text;
  text << "expert-choice routing (Zhou et al. 2022, capacity factor " << options.capacity_factor << ") and no aux loss";
  return text.str();
}

namespace detail {

/// train_synthetic_mixture with the layer built.
template <class Layer, class Checkpoints>
SyntheticRunResult train_synthetic_layer(Layer& layer, Rng& rng, const SyntheticRunOptions& options,
                                         const SyntheticMixture<float>& train, const SyntheticMixture<float>& test,
                                         const std::function<void(const EpochRecord&)>& on_epoch,
                                         const std::function<void(Index, double)>& on_step,
                                         Checkpoints&& checkpoints) {
  Adam<float> optimizer(layer.named_parameters(), {.lr = options.lr});
  CrossEntropyLoss<float> loss;
  Trainer trainer(layer, optimizer, rng,
                  {.batch_size = options.batch, .epochs = options.epochs, .drop_last = true,
                   .shuffle = Shuffle::Cumulative});

  Matrix xb(options.batch, options.task.features);
  std::vector<Index> yb(static_cast<std::size_t>(options.batch));
  const auto load_key = [](Index expert) { return "load." + std::to_string(expert); };
  SyntheticRunResult result;
  result.region_by_expert = LabelExpertTable(options.task.regions, options.experts);
  checkpoints.keep(result.epochs);
  checkpoints.resume(trainer);
  const auto step = [&](std::span<const Index> batch) {
    for (std::size_t b = 0; b < batch.size(); ++b) {
      xb.row(static_cast<Index>(b)) = train.inputs.row(batch[b]);
      yb[b] = train.labels[static_cast<std::size_t>(batch[b])];
    }
    const Matrix& logits = layer.forward(xb);
    const double task_loss = loss.forward(logits, yb);
    trainer.add("correct", static_cast<double>(count_correct<float>(logits, yb)));
    for (Index e = 0; e < options.experts; ++e) trainer.add(load_key(e), static_cast<double>(layer.batch_load()(e)));
    layer.backward(loss.backward());
    return task_loss;
  };
  trainer.fit(
      options.task.samples, step,
      OnStepEnd{[&](auto& t) {
        t.add("aux_loss", layer.aux_loss());
        if (on_step) on_step(t.state().samples, t.loss());
      }},
      OnEpochEnd{[&](auto& t) {
        EpochRecord record;
        record.epoch = static_cast<int>(t.epoch());
        const auto batches = static_cast<double>(t.steps_per_epoch());
        record.train_loss = t.epoch_loss();
        record.aux_loss = t.sum("aux_loss") / batches;
        record.train_accuracy = t.sum("correct") / (batches * static_cast<double>(options.batch));
        IndexVector load(options.experts);
        for (Index e = 0; e < options.experts; ++e) load(e) = static_cast<Index>(t.sum(load_key(e)));
        record.max_violation = max_violation(load);
        record.relative_load = relative_load(load, t.steps_per_epoch() * options.batch, layer.k());

        layer.eval();
        const Matrix& logits = layer.forward(test.inputs);
        record.test_accuracy = static_cast<double>(count_correct<float>(logits, test.labels)) /
                               static_cast<double>(options.test_samples);
        if (t.at_end()) result.region_by_expert.add(test.regions, layer.routing().experts);
        if (on_epoch) on_epoch(record);
        result.epochs.push_back(std::move(record));
      }},
      checkpoints);
  return result;
}

}  // namespace detail

/// Trains with moe::Trainer: each epoch shuffles the last one's order again (from the model's generator)
/// and drops the last partial batch; the load and the test accuracy are measured at each epoch's end (the
/// test set as one batch: with expert choice, each expert picks its quarter of it). `checkpoints`
/// (common/checkpoints.hpp) may resume the training and save it as it goes: the epoch's load is summed in
/// the trainer's state, not in the layer's load tracker, so that a checkpoint holds it.
template <class Checkpoints = NoCheckpoints>
SyntheticRunResult train_synthetic_mixture(const SyntheticRunOptions& options,
                                           const std::function<void(const EpochRecord&)>& on_epoch = {},
                                           const std::function<void(Index, double)>& on_step = {},
                                           Checkpoints&& checkpoints = {}) {
  const auto train = make_synthetic_mixture<float>(options.task, options.seed, options.seed + 1);
  SyntheticMixtureOptions test_task = options.task;
  test_task.samples = options.test_samples;
  const auto test = make_synthetic_mixture<float>(test_task, options.seed, options.seed + 2);

  Rng rng(options.seed + 3);
  if (options.router == SyntheticRouter::expert_choice) {
    SyntheticExpertChoiceMoE layer({.d_model = options.task.features, .num_experts = options.experts,
                                    .expert = {.out_features = 2}, .router = {.capacity_factor = options.capacity_factor}},
                                   rng);
    return detail::train_synthetic_layer(layer, rng, options, train, test, on_epoch, on_step,
                                         std::forward<Checkpoints>(checkpoints));
  }
  SyntheticMoE layer({.d_model = options.task.features, .num_experts = options.experts,
                      .expert = {.out_features = 2}, .balancer = {.alpha = options.aux_alpha}},
                     rng);
  return detail::train_synthetic_layer(layer, rng, options, train, test, on_epoch, on_step,
                                       std::forward<Checkpoints>(checkpoints));
}

}  // namespace moe::examples
