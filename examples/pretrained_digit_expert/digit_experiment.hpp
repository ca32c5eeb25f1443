#pragma once
// The two phases of method 2 of seeds/003 and the routing analysis: pretrain one DigitExpert on "is the
// digit 0 or 7?", train the dense mixture on the ten digits (with or without the pretrained expert in
// slot 0), and measure how the gate shares each digit's images among the experts.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <vector>

#include "common/check.hpp"
#include "common/checkpoints.hpp"
#include "moe/analysis/label_table.hpp"
#include "moe/core/error.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/data/image_dataset.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/nn/loss.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/train/trainer.hpp"
#include "pretrained_digit_expert/digit_mixture.hpp"

namespace moe::examples {

/// The training choices; the defaults are the document's (10 + 15 epochs, Adam 1e-3, dropout 0.2), plus
/// the two it leaves open: the batch size and the share of the training set held out to pick the best
/// pretraining epoch ("the best weights are saved for transfer").
struct DigitExperimentSettings {
  int pretrain_epochs = 10;
  int mixture_epochs = 15;
  Index batch = 64;
  double lr = 1e-3;
  double dropout = 0.2;
  double pretrain_validation_fraction = 0.1;
};

/// Per epoch: mean training loss and accuracy over the epoch (dropout on), and accuracy on the held-out
/// images in evaluation mode (validation for pretraining, test for the mixture).
struct EpochRecord {
  int epoch = 0;
  double train_loss = 0.0;
  double train_accuracy = 0.0;
  double eval_accuracy = 0.0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(epoch, train_loss, train_accuracy, eval_accuracy);
  }
};

/// Called after each training step with the batch size and its loss: the progress line.
using StepCallback = std::function<void(Index samples, double loss)>;

inline bool is_zero_or_seven(Index digit) { return digit == 0 || digit == 7; }

/// The pretraining labels: 1 for a 0 or a 7, else 0.
inline std::vector<Index> zero_or_seven_labels(std::span<const Index> digits) {
  std::vector<Index> labels(digits.size());
  std::ranges::transform(digits, labels.begin(), [](Index d) { return Index{is_zero_or_seven(d) ? 1 : 0}; });
  return labels;
}

/// Trains `model` for `epochs` passes over `images` with moe::Trainer: each epoch in a fresh order drawn
/// from `order_rng`, in batches of `batch` (the last one smaller, as a PyTorch DataLoader without
/// drop_last), with softmax cross-entropy. After each epoch calls on_epoch(record) with the epoch's mean
/// training loss and accuracy (dropout on); on_epoch adds the evaluation. `checkpoints`
/// (common/checkpoints.hpp) may resume the training and save it as it goes; what on_epoch gathers is the
/// caller's to keep().
template <class Model, class OnEpoch, class Checkpoints>
void train_classifier(Model& model, Adam<float>& optimizer, const Matrix& images, std::span<const Index> labels,
                      Index batch, int epochs, Rng& order_rng, const StepCallback& on_step, OnEpoch&& on_epoch,
                      Checkpoints& checkpoints) {
  require(static_cast<Index>(labels.size()) == images.rows(), "train_classifier: ", images.rows(), " images but ",
          labels.size(), " labels");
  require(batch > 0, "train_classifier: batch must be positive, got ", batch);
  if (epochs <= 0) return;
  CrossEntropyLoss<float> loss;
  Trainer trainer(model, optimizer, order_rng, {.batch_size = batch, .epochs = epochs, .shuffle = Shuffle::Fresh});
  checkpoints.resume(trainer);
  Matrix batch_images;
  std::vector<Index> batch_labels;
  const auto step = [&](std::span<const Index> picked) {
    const auto rows = static_cast<Index>(picked.size());
    batch_images.resize(rows, images.cols());
    batch_labels.resize(picked.size());
    for (Index r = 0; r < rows; ++r) {
      const Index i = picked[static_cast<std::size_t>(r)];
      batch_images.row(r) = images.row(i);
      batch_labels[static_cast<std::size_t>(r)] = labels[static_cast<std::size_t>(i)];
    }
    const Matrix& logits = model.forward(batch_images);
    const double batch_loss = loss.forward(logits, batch_labels);
    trainer.add("correct", static_cast<double>(count_correct<float>(logits, batch_labels)));
    model.backward(loss.backward());
    return batch_loss;
  };
  trainer.fit(images.rows(), step, OnStepEnd{[&](auto& t) {
                if (on_step) on_step(t.state().samples, t.loss());
              }},
              OnEpochEnd{[&](auto& t) {
                EpochRecord record;
                record.epoch = static_cast<int>(t.epoch());
                record.train_loss = t.epoch_loss();
                record.train_accuracy = t.sum("correct") / static_cast<double>(images.rows());
                on_epoch(record);
              }},
              checkpoints);
}

/// Runs `model` in evaluation mode over `images` in chunks (bounded memory on the full test set) and calls
/// on_chunk(first_row, logits) after each.
template <class Model, class OnChunk>
void forward_in_chunks(Model& model, const Matrix& images, OnChunk&& on_chunk, Index chunk = 1000) {
  model.train(false);
  for (Index start = 0; start < images.rows(); start += chunk) {
    const Index rows = std::min(chunk, images.rows() - start);
    const Matrix& logits = model.forward(images.middleRows(start, rows));
    on_chunk(start, logits);
  }
}

template <class Model>
double accuracy(Model& model, const Matrix& images, std::span<const Index> labels) {
  require(static_cast<Index>(labels.size()) == images.rows(), "accuracy: ", images.rows(), " images but ",
                  labels.size(), " labels");
  Index correct = 0;
  forward_in_chunks(model, images, [&](Index start, const Matrix& logits) {
    correct += count_correct<float>(logits, labels.subspan(static_cast<std::size_t>(start),
                                                           static_cast<std::size_t>(logits.rows())));
  });
  return images.rows() > 0 ? static_cast<double>(correct) / static_cast<double>(images.rows()) : 0.0;
}

// --- Phase 1 ----------------------------------------------------------------------------------------------

struct PretrainResult {
  std::vector<EpochRecord> epochs;  // eval_accuracy: the held-out validation images
  int best_epoch = 0;
  Index train_images = 0, validation_images = 0;
  double test_accuracy = 0.0;           // of the best epoch's weights, on the test set
  double test_majority_accuracy = 0.0;  // answering "not 0 or 7" every time
  StateDict<float> best_weights;        // DigitExpert with a 2-unit output: net.0, net.3, net.6

  template <class Archive>
  void serialize(Archive& archive) {
    archive(epochs, best_epoch, train_images, validation_images, test_accuracy, test_majority_accuracy, best_weights);
  }
};

/// How many of `train_images` phase 1 holds out to pick its best epoch: at least one, and one fewer than all.
inline Index pretrain_validation_size(Index train_images, double fraction) {
  const auto wanted = static_cast<Index>(std::llround(fraction * static_cast<double>(train_images)));
  return std::clamp<Index>(wanted, 1, std::max<Index>(train_images - 1, 1));
}

/// Phase 1: one DigitExpert with two outputs learns "is it a 0 or a 7?" on `train` minus a held-out
/// validation share; the epoch with the best validation accuracy (the first, on a tie) gives the weights.
/// `checkpoints` as train_classifier's.
template <class Checkpoints = NoCheckpoints>
PretrainResult pretrain_zero_or_seven_expert(const ImageDataset<float>& train, const ImageDataset<float>& test,
                                             const DigitExperimentSettings& settings, std::uint64_t seed,
                                             const StepCallback& on_step = {},
                                             const std::function<void(const EpochRecord&)>& on_epoch = {},
                                             Checkpoints&& checkpoints = {}) {
  require(train.size() >= 2, "pretrain_zero_or_seven_expert: need at least 2 training images, got ",
                  train.size());
  ImageDataset<float> binary_train = train;
  binary_train.labels = zero_or_seven_labels(train.labels);
  const auto split = split_train_validation(
      binary_train, pretrain_validation_size(train.size(), settings.pretrain_validation_fraction), seed);
  const std::vector<Index> test_labels = zero_or_seven_labels(test.labels);

  Rng rng(seed);
  DigitExpert<float> expert(mnist_pixels, {.out_features = 2, .dropout = settings.dropout}, rng);
  Adam<float> optimizer(expert.named_parameters(), {.lr = settings.lr});
  Rng order_rng(seed + 1);

  PretrainResult result;
  result.train_images = split.train.size();
  result.validation_images = split.validation.size();
  double best_accuracy = -1.0;
  checkpoints.keep(result);  // the records and the best weights so far
  checkpoints.keep(best_accuracy);
  train_classifier(expert, optimizer, split.train.images, split.train.labels, settings.batch, settings.pretrain_epochs,
                   order_rng, on_step, [&](EpochRecord& record) {
                     record.eval_accuracy = accuracy(expert, split.validation.images, split.validation.labels);
                     if (record.eval_accuracy > best_accuracy) {
                       best_accuracy = record.eval_accuracy;
                       result.best_epoch = record.epoch;
                       result.best_weights = state_dict(expert);
                     }
                     if (on_epoch) on_epoch(record);
                     result.epochs.push_back(record);
                   },
                   checkpoints);
  if (!result.best_weights.empty()) load_state_dict(expert, result.best_weights);
  result.test_accuracy = accuracy(expert, test.images, test_labels);
  result.test_majority_accuracy =
      static_cast<double>(std::ranges::count(test_labels, Index{0})) / static_cast<double>(test_labels.size());
  return result;
}

// --- Phase 2 and the routing analysis ---------------------------------------------------------------------

/// Expert 0's share of the images of digits 0 and 7 against its share of the other digits' images, pooled
/// over images; ratio = zero_seven / other, difference = zero_seven - other.
struct ZeroSevenShare {
  double zero_seven = 0.0;
  double other = 0.0;
  double all = 0.0;  // over every image: how much the gate leans on the expert overall
  double ratio = 0.0;
  double difference = 0.0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(zero_seven, other, all, ratio, difference);
  }
};

/// `per_digit` is [10 x experts] (a mean over each digit's images), `images_per_digit` how many images
/// each mean is over.
inline ZeroSevenShare zero_seven_share(const Eigen::MatrixXd& per_digit, const Eigen::VectorXd& images_per_digit,
                                       Index expert) {
  double sum_07 = 0.0, count_07 = 0.0, sum_other = 0.0, count_other = 0.0;
  for (Index d = 0; d < per_digit.rows(); ++d) {
    const double weighted = per_digit(d, expert) * images_per_digit(d);
    if (is_zero_or_seven(d)) {
      sum_07 += weighted;
      count_07 += images_per_digit(d);
    } else {
      sum_other += weighted;
      count_other += images_per_digit(d);
    }
  }
  ZeroSevenShare share;
  share.zero_seven = count_07 > 0 ? sum_07 / count_07 : std::numeric_limits<double>::quiet_NaN();
  share.other = count_other > 0 ? sum_other / count_other : std::numeric_limits<double>::quiet_NaN();
  share.all = count_07 + count_other > 0 ? (sum_07 + sum_other) / (count_07 + count_other)
                                         : std::numeric_limits<double>::quiet_NaN();
  share.ratio = share.other > 0 ? share.zero_seven / share.other : std::numeric_limits<double>::infinity();
  share.difference = share.zero_seven - share.other;
  return share;
}

struct MixtureResult {
  std::vector<EpochRecord> epochs;  // eval_accuracy: the test set
  double test_accuracy = 0.0;
  Eigen::MatrixXd mean_gate;         // [digit x expert]: mean gate weight over the digit's test images
  Eigen::MatrixXd top1_share;        // [digit x expert]: share of the digit's test images whose largest gate it is
  Eigen::VectorXd images_per_digit;  // test images of each digit
  ZeroSevenShare expert0_gate;       // from mean_gate
  ZeroSevenShare expert0_top1;       // from top1_share: the document's "routing frequency"

  template <class Archive>
  void serialize(Archive& archive) {
    archive(epochs, test_accuracy, mean_gate, top1_share, images_per_digit, expert0_gate, expert0_top1);
  }
};

/// The gate's view of the test set after training: mean gate weights and top-1 shares per digit.
inline void analyse_routing(DigitMixture& mixture, const ImageDataset<float>& test, MixtureResult& result) {
  const Index experts = mixture.num_experts();
  Eigen::MatrixXd gate_sum = Eigen::MatrixXd::Zero(digit_classes, experts);
  result.images_per_digit = Eigen::VectorXd::Zero(digit_classes);
  LabelExpertTable top1(digit_classes, experts);
  Index correct = 0;
  forward_in_chunks(mixture, test.images, [&](Index start, const Matrix& logits) {
    const auto labels = std::span<const Index>(test.labels).subspan(static_cast<std::size_t>(start),
                                                                     static_cast<std::size_t>(logits.rows()));
    correct += count_correct<float>(logits, labels);
    const Matrix& gates = *mixture.routing().scores;  // K = N without renormalising: the gates are the softmax
    IndexMatrix largest(gates.rows(), 1);
    for (Index t = 0; t < gates.rows(); ++t) {
      const Index digit = labels[static_cast<std::size_t>(t)];
      require(digit >= 0 && digit < digit_classes, "analyse_routing: test label ", digit, " at image ",
                      start + t, ", expected a digit 0-9");
      gate_sum.row(digit) += gates.row(t).cast<double>();
      result.images_per_digit(digit) += 1.0;
      gates.row(t).maxCoeff(&largest(t, 0));
    }
    top1.add(labels, largest);
  });
  result.test_accuracy = static_cast<double>(correct) / static_cast<double>(std::max<Index>(test.size(), 1));
  result.mean_gate = gate_sum;
  for (Index d = 0; d < digit_classes; ++d)
    if (result.images_per_digit(d) > 0) result.mean_gate.row(d) /= result.images_per_digit(d);
  result.top1_share = top1.fractions();
  result.expert0_gate = zero_seven_share(result.mean_gate, result.images_per_digit, 0);
  result.expert0_top1 = zero_seven_share(result.top1_share, result.images_per_digit, 0);
}

/// Phase 2: the dense mixture trained on the ten digits. With `pretrained_expert` (a file save_module
/// wrote from phase 1), its input and hidden layers replace expert 0's before training; without, this is
/// the control. Both draw the same initial weights, batch order and dropout masks from `seed`.
/// `checkpoints` as train_classifier's.
template <class Checkpoints = NoCheckpoints>
MixtureResult train_digit_mixture(const ImageDataset<float>& train, const ImageDataset<float>& test,
                                  const DigitExperimentSettings& settings, std::uint64_t seed,
                                  const std::optional<std::filesystem::path>& pretrained_expert,
                                  const StepCallback& on_step = {},
                                  const std::function<void(const EpochRecord&)>& on_epoch = {},
                                  Checkpoints&& checkpoints = {}) {
  Rng rng(seed + 100);
  DigitMixture mixture(digit_mixture_options(settings.dropout), rng);
  if (pretrained_expert) load_pretrained_body(mixture, *pretrained_expert);
  Adam<float> optimizer(mixture.named_parameters(), {.lr = settings.lr});
  Rng order_rng(seed + 101);

  MixtureResult result;
  checkpoints.keep(result.epochs);
  train_classifier(mixture, optimizer, train.images, train.labels, settings.batch, settings.mixture_epochs, order_rng,
                   on_step, [&](EpochRecord& record) {
                     record.eval_accuracy = accuracy(mixture, test.images, test.labels);
                     if (on_epoch) on_epoch(record);
                     result.epochs.push_back(record);
                   },
                   checkpoints);
  analyse_routing(mixture, test, result);
  return result;
}

}  // namespace moe::examples
