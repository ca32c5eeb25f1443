#pragma once
// The two phases of seeds/003's code-expert experiment and their analysis: phase 1 pretrains one causal
// Transformer encoder (with its embeddings and LM head) on code alone and keeps the weights of the epoch with
// the lowest validation loss; phase 2 puts that encoder into expert 0 of a dense 4-expert MoE, with the
// pretrained token and position embeddings, and trains the MoE on all four domains. Evaluation gives the
// validation loss per domain and, for the MoE, the routing weights per domain over non-padding tokens. Each
// phase takes checkpoints (common/checkpoints.hpp) that keep what it has gathered, so that it can resume.

#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "code_expert/data.hpp"
#include "common/check.hpp"
#include "common/checkpoints.hpp"
#include "common/encoder_lm.hpp"
#include "moe/analysis/sequence_routing.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/nn/loss.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/train/progress.hpp"
#include "moe/train/trainer.hpp"

namespace moe::examples {

/// The settings seeds/003 gives for method 1.
namespace document {
inline constexpr Index samples_per_domain = 500;
inline constexpr Index max_len = 128;
inline constexpr Index num_layers = 2;  // of each expert
inline constexpr Index d_model = 768;
inline constexpr Index num_heads = 8;
inline constexpr Index ffn_hidden = 3072;
inline constexpr Index epochs = 5;  // each phase
inline constexpr double lr = 1e-4;  // Adam, each phase
inline constexpr Index num_experts = 4;
inline constexpr Index representative_per_domain = 5;
}  // namespace document

struct CodeExpertSettings {
  Index per_domain = document::samples_per_domain;
  Index validation_per_domain = document::samples_per_domain / 5;
  Index max_len = document::max_len;
  EncoderLMOptions model{.num_layers = document::num_layers, .num_experts = document::num_experts};
  Index batch_size = 16;  // the document does not say
  Index eval_batch_size = 32;
  Index phase1_epochs = document::epochs;
  Index phase2_epochs = document::epochs;
  double lr = document::lr;
  Index representative_per_domain = document::representative_per_domain;
  Index checkpoint_every = 100;  // steps between a phase's checkpoints (--resume)
};

constexpr double not_measured = std::numeric_limits<double>::quiet_NaN();

/// What the report reads from a GroupRouting (moe/analysis/sequence_routing.hpp), as tables a checkpoint
/// keeps exactly: per domain and expert, the mean routing weight and the top-expert share, and per domain the
/// samples and non-padding tokens.
struct DomainRouting {
  MatrixX<double> mean_weights, top_share;
  IndexVector samples, tokens;

  static DomainRouting of(const GroupRouting& routing) {
    return {routing.mean_weights(), routing.top_share(), routing.samples(), routing.tokens()};
  }

  template <class Archive>
  void serialize(Archive& archive) {
    archive(mean_weights, top_share, samples, tokens);
  }
};

/// Validation loss per domain (NaN for a domain not evaluated) and, for the MoE, its routing per domain
/// (empty tables for the single encoder LM).
struct Evaluation {
  std::array<double, 4> loss{not_measured, not_measured, not_measured, not_measured};
  DomainRouting routing;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(loss, routing);
  }
};

/// One row of a phase's metrics: after `epoch` epochs (0: before training), `step` optimizer steps.
struct EpochRecord {
  Index epoch = 0;
  Index step = 0;
  double train_loss = not_measured;  // mean over the epoch's steps
  Evaluation evaluation;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(epoch, step, train_loss, evaluation);
  }
};

/// Where a phase's time went: optimizer steps (forward, backward, Adam) and evaluations.
struct PhaseTiming {
  Index steps = 0;
  Index steps_per_epoch = 0;
  Index epochs = 0;  // planned
  Index tokens = 0;  // non-padding tokens trained on
  double train_seconds = 0;
  double eval_seconds = 0;
  Index evaluations = 0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(steps, steps_per_epoch, epochs, tokens, train_seconds, eval_seconds, evaluations);
  }

  double seconds_per_step() const { return steps > 0 ? train_seconds / static_cast<double>(steps) : not_measured; }
  /// An epoch of steps plus one evaluation, as measured.
  double projected_epoch_seconds() const {
    const double eval = evaluations > 0 ? eval_seconds / static_cast<double>(evaluations) : 0.0;
    return seconds_per_step() * static_cast<double>(steps_per_epoch) + eval;
  }
};

struct PhaseResult {
  std::vector<EpochRecord> records;
  PhaseTiming timing;
  Index best_epoch = 0;  // phase 1: the epoch whose weights were kept

  template <class Archive>
  void serialize(Archive& archive) {
    archive(records, timing, best_epoch);
  }
};

/// Runs `lm` in evaluation mode over the validation samples of `domains`, domain by domain in batches of
/// `batch_size`: the mean cross entropy per predicted token of each domain, and for the MoE the routing
/// weights of every validation sample of those domains, grouped by domain (GroupRouting, padding excluded).
template <class LM>
Evaluation evaluate(LM& lm, const CodeExpertData& data, std::span<const TextDomain> domains, Index batch_size) {
  lm.eval();
  Evaluation result;
  std::optional<GroupRouting> routing;
  if constexpr (LM::is_moe) routing.emplace(num_text_domains, lm.num_experts());
  CrossEntropyLoss<float> cross_entropy(ignore_index);
  for (const TextDomain domain : domains) {
    const std::vector<Index> picked = samples_of(data.validation, domain);
    double loss_sum = 0;
    Index predictions = 0;
    for (std::size_t first = 0; first < picked.size(); first += static_cast<std::size_t>(batch_size)) {
      const std::size_t count = std::min(picked.size() - first, static_cast<std::size_t>(batch_size));
      const TokenBatch batch = make_batch(data.validation, std::span(picked).subspan(first, count), data.pad_id);
      const double loss = cross_entropy.forward(lm.forward(batch.ids, batch.layout), batch.targets);
      loss_sum += loss * static_cast<double>(batch.predictions);
      predictions += batch.predictions;
      if constexpr (LM::is_moe) {
        const std::vector<Index> groups(count, static_cast<Index>(domain));
        routing->add(*lm.body().routing().scores, batch.layout, groups);
      }
    }
    result.loss[static_cast<std::size_t>(domain)] = loss_sum / static_cast<double>(predictions);
  }
  if constexpr (LM::is_moe) result.routing = DomainRouting::of(*routing);
  return result;
}

/// Trains `lm` with Adam on `samples` (indices into data.train) for `epochs` epochs, evaluating on
/// `eval_domains` after each epoch (and before the first when `evaluate_first`); `on_evaluated(record)` sees
/// each record as it is made. Returns the records and the timing. `checkpoints` (common/checkpoints.hpp) may
/// resume the phase and save it as it goes, with the records and the timing; what on_evaluated gathers is the
/// caller's to keep().
template <class LM, class OnEvaluated, class Checkpoints>
PhaseResult train_phase(LM& lm, const CodeExpertData& data, const std::vector<Index>& samples, Index epochs,
                        const CodeExpertSettings& settings, std::span<const TextDomain> eval_domains,
                        bool evaluate_first, Rng& order_rng, const std::string& label, OnEvaluated on_evaluated,
                        Checkpoints& checkpoints) {
  PhaseResult result;
  const auto record_evaluation = [&](Index epoch, Index step, double train_loss) {
    const double before = checkpoints.elapsed_seconds();
    EpochRecord record{epoch, step, train_loss, evaluate(lm, data, eval_domains, settings.eval_batch_size)};
    on_evaluated(record);
    result.records.push_back(std::move(record));
    result.timing.eval_seconds += checkpoints.elapsed_seconds() - before;
    ++result.timing.evaluations;
  };

  Adam<float> optimizer(lm.named_parameters(), {.lr = settings.lr});
  Trainer trainer(lm, optimizer, order_rng, {.batch_size = settings.batch_size, .epochs = epochs});
  checkpoints.keep(result);
  checkpoints.resume(trainer);
  if (evaluate_first && trainer.step() == 0) record_evaluation(0, 0, not_measured);
  CrossEntropyLoss<float> cross_entropy(ignore_index);
  std::vector<Index> picked;
  const auto step = [&](std::span<const Index> batch) {
    picked.clear();
    for (const Index i : batch) picked.push_back(samples[static_cast<std::size_t>(i)]);
    const TokenBatch tokens = make_batch(data.train, picked, data.pad_id);
    const float loss = cross_entropy.forward(lm.forward(tokens.ids, tokens.layout), tokens.targets) + lm.aux_loss();
    lm.backward(cross_entropy.backward());
    result.timing.tokens += tokens.tokens;
    return StepResult{loss, tokens.tokens};
  };
  trainer.fit(static_cast<Index>(samples.size()), step, ProgressBar(label, {.unit = "tokens"}),
              OnEpochEnd{[&](auto& t) { record_evaluation(t.epoch(), t.step(), t.epoch_loss()); }}, checkpoints);
  // Every second of the phase, earlier invocations' included, is a step's or an evaluation's.
  result.timing.train_seconds = checkpoints.elapsed_seconds() - result.timing.eval_seconds;
  result.timing.steps = trainer.step();
  result.timing.steps_per_epoch = trainer.steps_per_epoch();
  result.timing.epochs = epochs;
  return result;
}

/// What phase 1 keeps while it trains: the weights of the epoch with the lowest validation loss so far.
struct BestEpoch {
  StateDict<float> weights;
  double loss = std::numeric_limits<double>::infinity();
  Index epoch = 0;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(weights, loss, epoch);
  }
};

/// Phase 1: the single encoder LM on the code training samples; after each epoch its validation loss on code
/// decides whether its weights are the best so far, and the best are put back at the end.
template <class Checkpoints>
PhaseResult pretrain_code_expert(SingleEncoderLM& expert, const CodeExpertData& data,
                                 const CodeExpertSettings& settings, Rng& order_rng, Checkpoints& checkpoints) {
  BestEpoch best;
  checkpoints.keep(best);
  const std::array<TextDomain, 1> code{TextDomain::code};
  PhaseResult result = train_phase(
      expert, data, samples_of(data.train, TextDomain::code), settings.phase1_epochs, settings, code, false,
      order_rng, "phase 1: code expert",
      [&](const EpochRecord& record) {
        const double loss = record.evaluation.loss[static_cast<std::size_t>(TextDomain::code)];
        if (loss < best.loss) best = {state_dict(expert), loss, record.epoch};
      },
      checkpoints);
  require(best.epoch > 0, "code_expert: phase 1 made no evaluation with a finite validation loss");
  load_state_dict(expert, best.weights);
  result.best_epoch = best.epoch;
  return result;
}

/// Phase 2: the MoE LM on every domain's training samples, evaluated on every domain before training and
/// after each epoch.
template <class Checkpoints>
PhaseResult train_moe(DenseEncoderMoELM& moe, const CodeExpertData& data, const CodeExpertSettings& settings,
                      Rng& order_rng, Checkpoints& checkpoints) {
  std::vector<Index> all(data.train.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<Index>(i);
  return train_phase(moe, data, all, settings.phase2_epochs, settings, text_domains, true, order_rng, "phase 2: MoE",
                     [](const EpochRecord&) {}, checkpoints);
}

/// The routing of the representative samples: the first `per_domain` validation samples of each domain.
struct RepresentativeRouting {
  std::vector<Index> samples;  // indices into data.validation, domain by domain
  MatrixX<double> per_sample;  // [samples x N]: mean routing weight over the sample's tokens
  DomainRouting by_domain;
};

inline RepresentativeRouting representative_routing(DenseEncoderMoELM& moe, const CodeExpertData& data,
                                                    Index per_domain) {
  moe.eval();
  RepresentativeRouting result{{}, MatrixX<double>(num_text_domains * per_domain, moe.num_experts()), {}};
  GroupRouting by_domain(num_text_domains, moe.num_experts());
  for (const TextDomain domain : text_domains) {
    std::vector<Index> picked = samples_of(data.validation, domain);
    require(static_cast<Index>(picked.size()) >= per_domain, "code_expert: the ", text_domain_name(domain),
            " domain has ", picked.size(), " validation samples, fewer than the ", per_domain, " representative ones");
    picked.resize(static_cast<std::size_t>(per_domain));
    const TokenBatch batch = make_batch(data.validation, picked, data.pad_id);
    moe.forward(batch.ids, batch.layout);
    const MatrixX<float>& weights = *moe.body().routing().scores;
    result.per_sample.middleRows(static_cast<Index>(result.samples.size()), per_domain) =
        sample_routing_weights(weights, batch.layout);
    by_domain.add(weights, batch.layout, std::vector<Index>(picked.size(), static_cast<Index>(domain)));
    result.samples.insert(result.samples.end(), picked.begin(), picked.end());
  }
  result.by_domain = DomainRouting::of(by_domain);
  return result;
}

/// Each token of one sample with its routing weights and top expert.
struct TokenRouting {
  Index sample = 0;  // index into data.validation
  std::vector<Index> ids;
  MatrixX<double> weights;  // [tokens x N]
  IndexVector top;
};

inline TokenRouting token_routing(DenseEncoderMoELM& moe, const CodeExpertData& data, Index sample) {
  moe.eval();
  const std::array<Index, 1> picked{sample};
  const TokenBatch batch = make_batch(data.validation, picked, data.pad_id);
  moe.forward(batch.ids, batch.layout);
  const MatrixX<float>& weights = *moe.body().routing().scores;
  return {sample, batch.ids, weights.cast<double>(), token_top_experts(weights, batch.layout)};
}

}  // namespace moe::examples
