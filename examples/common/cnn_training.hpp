#pragma once
// Data, training and evaluation of the CNN + MoE model (common/cnn_moe.hpp) for the three examples of
// "Do Experts Specialize?": Fashion-MNIST by default, CIFAR-10 when its binary batches are in --data-dir.
//
// Training follows the document's section 5: AdamW, OneCycleLR with max lr 1e-2 (PyTorch's defaults
// otherwise, beta1 cycled 0.95 -> 0.85 -> 0.95), weight decay 1e-4, cross-entropy + 1e-5 x Switch aux
// loss. The batch size is not in the document; 64 here (that of CS231N's assignment, which the document
// says its training loop builds on).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/check.hpp"
#include "common/checkpoints.hpp"
#include "common/cnn_moe.hpp"
#include "moe/analysis/label_table.hpp"
#include "moe/core/error.hpp"
#include "moe/data/cifar10.hpp"
#include "moe/data/idx.hpp"
#include "moe/data/image_dataset.hpp"
#include "moe/nn/loss.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/optim/schedule.hpp"
#include "moe/train/trainer.hpp"

namespace moe::examples {

/// Classes that a person would put together: the document's vehicles / animals of CIFAR-10, and on
/// Fashion-MNIST footwear / tops / the rest, which play their part.
struct ClassGroup {
  std::string name;
  std::vector<Index> classes;
};

struct VisionData {
  std::string dataset;  // "Fashion-MNIST" or "CIFAR-10"
  std::filesystem::path source;
  std::vector<std::string> classes;
  std::vector<ClassGroup> groups;
  ImageDataset<float> train, validation, test;
  Index full_train_size = 0;  // before the validation split and any subset
  Index full_test_size = 0;
};

struct DataOptions {
  Index validation_images = 1000;  // held out of the training images, as the document's 49,000 / 1,000
  Index train_images = 0;          // 0: every image left after the validation split; else a seeded subset
  Index test_images = 0;           // 0: the whole test set; else a seeded subset
  std::uint64_t seed = 1;
};

inline std::vector<ClassGroup> fashion_mnist_groups() {
  // Labels: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag,
  // 9 Ankle boot.
  return {{"footwear", {5, 7, 9}}, {"tops", {0, 2, 4, 6}}, {"other", {1, 3, 8}}};
}

inline std::vector<ClassGroup> cifar10_groups() { return {{"vehicles", {0, 1, 8, 9}}, {"animals", {2, 3, 4, 5, 6, 7}}}; }

/// Which group each class is in (-1 for none).
inline std::vector<Index> group_of_class(const std::vector<ClassGroup>& groups, Index classes) {
  std::vector<Index> group(static_cast<std::size_t>(classes), -1);
  for (std::size_t g = 0; g < groups.size(); ++g)
    for (Index c : groups[g].classes) group.at(static_cast<std::size_t>(c)) = static_cast<Index>(g);
  return group;
}

/// `count` images of `data` drawn without replacement by a seeded shuffle, kept in their original order.
template <class Scalar>
ImageDataset<Scalar> random_subset(const ImageDataset<Scalar>& data, Index count, std::uint64_t seed) {
  require(count > 0 && count <= data.size(), "random_subset: count must be in [1, ", data.size(), "], got ",
                  count);
  std::vector<Index> order(static_cast<std::size_t>(data.size()));
  std::iota(order.begin(), order.end(), Index{0});
  Rng rng(seed);
  for (Index i = 0; i < count; ++i)
    std::swap(order[static_cast<std::size_t>(i)],
              order[static_cast<std::size_t>(i + uniform_index(rng, data.size() - i))]);
  order.resize(static_cast<std::size_t>(count));
  std::sort(order.begin(), order.end());
  return select(data, order);
}

inline std::filesystem::path find_cifar10(const std::filesystem::path& data_dir) {
  for (const auto& dir : {data_dir / "cifar-10-batches-bin", data_dir})
    if (std::filesystem::exists(dir / "data_batch_1.bin")) return dir;
  return {};
}

/// CIFAR-10 from DATA_DIR/cifar-10-batches-bin/ (or DATA_DIR itself) when data_batch_1.bin is there, else
/// Fashion-MNIST from DATA_DIR/fashion-mnist/ (scripts/fetch-data.sh). Splits off the validation images,
/// takes the subsets, and normalises every split with the training split's per-channel statistics.
inline VisionData load_vision_data(const std::filesystem::path& data_dir, const DataOptions& options) {
  VisionData data;
  ImageDataset<float> full_train;
  if (const auto cifar = find_cifar10(data_dir); !cifar.empty()) {
    Cifar10<float> c = read_cifar10<float>(cifar.string());
    full_train = std::move(c.train);
    data.test = std::move(c.test);
    data.dataset = "CIFAR-10";
    data.source = cifar;
    data.classes.assign(cifar10_classes.begin(), cifar10_classes.end());
    data.groups = cifar10_groups();
  } else {
    const auto dir = data_dir / "fashion-mnist";
    const auto file = [&](const char* name) { return (dir / name).string(); };
    for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                             "t10k-labels-idx1-ubyte.gz"})
      require(std::filesystem::exists(file(name)), "no data: ", file(name),
                           " is missing; run scripts/fetch-data.sh (Fashion-MNIST from Debian's "
                           "dataset-fashion-mnist), or put CIFAR-10's binary batches in ",
                           (data_dir / "cifar-10-batches-bin").string());
    full_train = read_idx_dataset<float>(file("train-images-idx3-ubyte.gz"), file("train-labels-idx1-ubyte.gz"));
    data.test = read_idx_dataset<float>(file("t10k-images-idx3-ubyte.gz"), file("t10k-labels-idx1-ubyte.gz"));
    data.dataset = "Fashion-MNIST";
    data.source = dir;
    data.classes.assign(fashion_mnist_classes.begin(), fashion_mnist_classes.end());
    data.groups = fashion_mnist_groups();
  }
  data.full_train_size = full_train.size();
  data.full_test_size = data.test.size();
  auto split = split_train_validation(full_train, options.validation_images, options.seed);
  data.train = std::move(split.train);
  data.validation = std::move(split.validation);
  if (options.train_images > 0 && options.train_images < data.train.size())
    data.train = random_subset(data.train, options.train_images, options.seed + 1);
  if (options.test_images > 0 && options.test_images < data.test.size())
    data.test = random_subset(data.test, options.test_images, options.seed + 2);
  const ChannelStatistics stats = channel_statistics(data.train);
  normalize(data.train, stats);
  if (data.validation.size() > 0) normalize(data.validation, stats);
  normalize(data.test, stats);
  return data;
}

struct TrainingOptions {
  int epochs = 10;
  Index batch = 64;
  double max_lr = 1e-2;
  double weight_decay = 1e-4;
  Index eval_batch = 250;  // images per forward when evaluating: bounds the activations' memory
};

struct EpochSummary {
  int epoch = 0;
  double train_loss = 0, aux_loss = 0, train_accuracy = 0, validation_accuracy = 0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(epoch, train_loss, aux_loss, train_accuracy, validation_accuracy);
  }
};

/// What the model does on a data set: accuracy, the expert each image went to (K = 1) and the mean gate. With
/// expert-choice routing an image may go to 0..N experts: `experts` holds the one of highest score that took
/// it, -1 where none did (its gate counts as 0).
struct Evaluation {
  double accuracy = 0;
  std::vector<Index> experts;
  double mean_gate = 0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(accuracy, experts, mean_gate);
  }
};

/// Evaluates `model` with `layer` in place of its MoE layer (model.moe() itself, or a copy behind another
/// router), in eval mode, `batch` images at a time.
template <class Model, class Layer>
Evaluation evaluate_through(Model& model, Layer& layer, const ImageDataset<float>& data, Index batch) {
  require(data.size() > 0, "evaluate: the data set is empty");
  model.eval();
  layer.eval();
  Evaluation result;
  result.experts.reserve(static_cast<std::size_t>(data.size()));
  Index correct = 0;
  double gate_sum = 0;
  for (Index start = 0; start < data.size(); start += batch) {
    const Index rows = std::min(batch, data.size() - start);
    const Matrix& logits = model.forward_through(layer, data.images.middleRows(start, rows));
    const std::span<const Index> labels(data.labels.data() + start, static_cast<std::size_t>(rows));
    correct += count_correct<float>(logits, labels);
    const auto& routing = layer.routing();
    for (Index t = 0; t < rows; ++t) {
      result.experts.push_back(routing.experts(t, 0));
      gate_sum += static_cast<double>(routing.gates(t, 0));
    }
  }
  result.accuracy = static_cast<double>(correct) / static_cast<double>(data.size());
  result.mean_gate = gate_sum / static_cast<double>(data.size());
  return result;
}

template <class Model>
Evaluation evaluate(Model& model, const ImageDataset<float>& data, Index batch) {
  return evaluate_through(model, model.moe(), data, batch);
}

inline Index steps_per_epoch(Index train_images, Index batch) { return train_images / batch; }

/// What moe::Trainer drives and a checkpoint saves: the model, in training mode for each step, and its MoE
/// layer's balancing update after each optimizer step.
template <class Model>
struct CnnTrainee {
  using Scalar = float;
  Model& model;
  void train(bool on) { model.train(on); }
  void update_balancing() { model.moe().update_balancing(); }
  ParameterList<float> named_parameters() { return model.named_parameters(); }
  BufferList<float> named_buffers() { return model.named_buffers(); }
  GeneratorList named_generators() { return model.named_generators(); }
};

/// Trains `model` on data.train with moe::Trainer; each epoch shuffles the last one's order again (from
/// `rng`) and drops the last partial batch. Calls on_step(images, loss) after each step and on_epoch after
/// each epoch (with the validation accuracy when there is a validation split). `checkpoints`
/// (common/checkpoints.hpp) may resume the training and save it as it goes; what on_epoch gathers is the
/// caller's to keep().
template <class Model, class Checkpoints = NoCheckpoints>
std::vector<EpochSummary> train_cnn_moe(Model& model, const VisionData& data, const TrainingOptions& options,
                                        Rng& rng, const std::function<void(Index, double)>& on_step = {},
                                        const std::function<void(const EpochSummary&)>& on_epoch = {},
                                        Checkpoints&& checkpoints = {}) {
  const ImageDataset<float>& train = data.train;
  const Index steps = steps_per_epoch(train.size(), options.batch);
  require(steps > 0, "train_cnn_moe: ", train.size(), " training images make no batch of ", options.batch);
  const Index total_steps = steps * options.epochs;
  // OneCycleLR needs steps in both of its phases: at least 4 steps in all with pct_start 0.3.
  require(total_steps >= 4, "train_cnn_moe: ", total_steps,
          " optimizer steps in all, OneCycleLR needs at least 4; use more images or epochs");
  AdamW<float> optimizer(model.named_parameters(), {.lr = options.max_lr, .weight_decay = options.weight_decay});
  CrossEntropyLoss<float> loss;
  CnnTrainee<Model> trainee{model};
  Trainer trainer(trainee, optimizer, rng,
                  {.batch_size = options.batch, .epochs = options.epochs, .drop_last = true,
                   .shuffle = Shuffle::Cumulative},
                  OneCycleLR(options.max_lr, total_steps));

  Matrix xb(options.batch, train.shape.size());
  std::vector<Index> yb(static_cast<std::size_t>(options.batch));
  std::vector<EpochSummary> epochs;
  checkpoints.keep(epochs);
  checkpoints.resume(trainer);
  const auto step = [&](std::span<const Index> batch) {
    for (std::size_t b = 0; b < batch.size(); ++b) {
      xb.row(static_cast<Index>(b)) = train.images.row(batch[b]);
      yb[b] = train.labels[static_cast<std::size_t>(batch[b])];
    }
    const Matrix& logits = model.forward(xb);
    const double task_loss = loss.forward(logits, yb);
    trainer.add("correct", static_cast<double>(count_correct<float>(logits, yb)));
    model.backward(loss.backward());
    return task_loss;
  };
  trainer.fit(train.size(), step,
              OnStepEnd{[&](auto& t) {
                t.add("aux_loss", static_cast<double>(model.moe().aux_loss()));
                if (on_step) on_step(t.state().samples, t.loss());
              }},
              OnEpochEnd{[&](auto& t) {
                EpochSummary summary;
                summary.epoch = static_cast<int>(t.epoch());
                summary.train_loss = t.epoch_loss();
                summary.aux_loss = t.sum("aux_loss") / static_cast<double>(steps);
                summary.train_accuracy = t.sum("correct") / static_cast<double>(steps * options.batch);
                summary.validation_accuracy = data.validation.size() > 0
                                                  ? evaluate(model, data.validation, options.eval_batch).accuracy
                                                  : std::numeric_limits<double>::quiet_NaN();
                if (on_epoch) on_epoch(summary);
                epochs.push_back(summary);
              }},
              checkpoints);
  return epochs;
}

/// One trained model and what the experiments read from it on the test set.
struct TrialResult {
  std::uint64_t seed = 0;
  std::vector<EpochSummary> epochs;
  Evaluation learned;                  // through the learned router
  double random_router_accuracy = std::numeric_limits<double>::quiet_NaN();  // when asked for
  LabelExpertTable routing{1, 1};      // class x expert counts of the learned routing on the test set
  double seconds = 0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(seed, epochs, learned, random_router_accuracy, routing, seconds);
  }
};

struct TrialOptions {
  CnnMoEOptions model;
  TrainingOptions training;
  bool random_router_ablation = false;  // also evaluate with RandomRouter swapped in (Experiment 1)
  bool expert_choice = false;           // ExpertChoiceCnnMoEModel instead of the document's CnnMoEModel
};

namespace detail {

/// run_trial with the model type chosen.
template <class Model, class Checkpoints>
TrialResult run_trial_of(const VisionData& data, const TrialOptions& options, std::uint64_t seed,
                         const std::function<void(Index, double)>& on_step, Checkpoints&& checkpoints) {
  TrialResult result;
  result.seed = seed;
  Rng rng(seed);
  CnnMoEOptions model_options = options.model;
  model_options.input = data.train.shape;
  model_options.classes = static_cast<Index>(data.classes.size());
  Model model(model_options, rng);
  result.epochs = train_cnn_moe(model, data, options.training, rng, on_step, {}, checkpoints);
  result.learned = evaluate(model, data.test, options.training.eval_batch);
  result.routing = LabelExpertTable(model_options.classes, model_options.experts);
  IndexMatrix experts(static_cast<Index>(result.learned.experts.size()), 1);
  for (std::size_t i = 0; i < result.learned.experts.size(); ++i) experts(static_cast<Index>(i), 0) = result.learned.experts[i];
  result.routing.add(data.test.labels, experts);
  if (options.random_router_ablation) {
    // The trained experts, balancer and the rest of the model, with each image sent to an expert drawn
    // uniformly at random (gate 1, as K = 1).
    auto random = model.moe().template with_router<RandomRouter>({.seed = seed * 7919 + 17}, rng);
    result.random_router_accuracy = evaluate_through(model, random, data.test, options.training.eval_batch).accuracy;
  }
  result.seconds = checkpoints.elapsed_seconds();
  return result;
}

}  // namespace detail

/// Builds a model from `seed`, trains it and evaluates it on data.test; `checkpoints` as train_cnn_moe's.
template <class Checkpoints = NoCheckpoints>
TrialResult run_trial(const VisionData& data, const TrialOptions& options, std::uint64_t seed,
                      const std::function<void(Index, double)>& on_step = {}, Checkpoints&& checkpoints = {}) {
  if (options.expert_choice)
    return detail::run_trial_of<ExpertChoiceCnnMoEModel>(data, options, seed, on_step,
                                                         std::forward<Checkpoints>(checkpoints));
  return detail::run_trial_of<CnnMoEModel>(data, options, seed, on_step, std::forward<Checkpoints>(checkpoints));
}

}  // namespace moe::examples
