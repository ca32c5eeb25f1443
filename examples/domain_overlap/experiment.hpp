#pragma once
// The runs of the domain_overlap example (seeds/003, method 3): the corpus as GPT-2 tokens in a compact
// vocabulary, phase 1 (each expert, with its own embedding and head, pretrained on its domain, best epoch
// kept) and phase 2 (the dense MoE of the four pretrained experts, embedding averaged from theirs, trained on
// the mixed domains), and the evaluations both phases need: validation loss per domain and, for the MoE,
// every validation token's routing weights. Each training takes checkpoints (common/checkpoints.hpp) that keep
// what it has gathered, so that it can resume.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/check.hpp"
#include "common/checkpoints.hpp"
#include "common/encoder_lm.hpp"
#include "domain_overlap/domain_corpus.hpp"
#include "moe/analysis/sequence_routing.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/data/gpt2_tokenizer.hpp"
#include "moe/data/vocabulary_map.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/nn/attention.hpp"
#include "moe/nn/loss.hpp"
#include "moe/nn/transformer.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/train/progress.hpp"
#include "moe/train/trainer.hpp"

namespace moe::examples {

inline constexpr Index domain_count = static_cast<Index>(english_domains.size());

/// seeds/003 method 3's settings: the paper preset's, and printed beside every run's.
namespace document {
inline constexpr Index pretrain_per_domain = 300;
inline constexpr Index moe_per_domain = 600;
inline constexpr Index max_len = 128;
inline constexpr Index num_layers = 1;
inline constexpr Index d_model = 256;
inline constexpr Index num_heads = 4;
inline constexpr Index ffn_hidden = 512;
inline constexpr Index pretrain_epochs = 2;
inline constexpr Index moe_epochs = 6;
inline constexpr double lr = 1e-4;
inline constexpr Index seeds = 3;
inline constexpr Index representative_per_domain = 5;
}  // namespace document

/// Each expert's encoder and the router.
struct ModelSizes {
  Index d_model = document::d_model;
  Index num_heads = document::num_heads;
  Index num_layers = document::num_layers;
  Index ffn_hidden = document::ffn_hidden;
  Index router_hidden = 128;  // the document gives none
  bool norm_first = false;    // post-norm, nn.TransformerEncoderLayer's default (the document does not say)
};

struct ExperimentConfig {
  DomainCorpusOptions corpus{.pretrain_per_domain = document::pretrain_per_domain,
                             .moe_per_domain = document::moe_per_domain};
  Index max_len = document::max_len;  // GPT-2 tokens; longer samples are cut
  ModelSizes model;
  Index pretrain_epochs = document::pretrain_epochs;
  Index moe_epochs = document::moe_epochs;
  double lr = document::lr;
  Index batch = 8;  // the document gives none: HuggingFace Trainer's default per-device batch
  Index eval_batch = 32;
  double entropy_beta = 1e-2;  // the run trains the MoE without (0) and with this weight; the document gives none
  Index seeds = document::seeds;
  Index representative_per_domain = document::representative_per_domain;
  Index checkpoint_every = 100;  // steps between a training's checkpoints (--resume)
};

/// Samples as compact token ids (at most max_len each) with their domains.
struct TokenizedSet {
  std::vector<std::vector<Index>> ids;
  std::vector<EnglishDomain> domains;

  Index size() const { return static_cast<Index>(ids.size()); }
  Index length(Index sample) const { return static_cast<Index>(ids[static_cast<std::size_t>(sample)].size()); }
  EnglishDomain domain(Index sample) const { return domains[static_cast<std::size_t>(sample)]; }
  /// The indices of the samples of `domain`, in order.
  std::vector<Index> of_domain(EnglishDomain domain) const {
    std::vector<Index> indices;
    for (Index s = 0; s < size(); ++s)
      if (this->domain(s) == domain) indices.push_back(s);
    return indices;
  }
};

struct PreparedCorpus {
  DomainCorpus text;
  VocabularyMap vocabulary{{}, 1};
  Index pad_id = 0;  // GPT-2's <|endoftext|>, which no sample holds: it stands at padding positions only
  TokenizedSet pretrain, moe, validation;
  Index truncated = 0;       // samples longer than max_len, cut to it
  Index longest = 0;         // GPT-2 tokens of the longest sample before cutting
  double mean_length = 0;    // GPT-2 tokens per sample after cutting, over all three sets
  Index validation_unk = 0;  // validation tokens outside the training vocabulary (<unk>)
  Index validation_tokens = 0;
};

/// Tokenizes the corpus with GPT-2's BPE and maps it to a compact vocabulary: every GPT-2 token of the
/// training sets (pretraining and MoE) plus <|endoftext|> as the pad token; a validation token outside it
/// becomes <unk>.
inline PreparedCorpus prepare_corpus(DomainCorpus text, GPT2Tokenizer& tokenizer, Index max_len) {
  PreparedCorpus data;
  data.text = std::move(text);
  std::array<std::vector<std::vector<Index>>, 3> gpt2_ids;
  const std::array<const std::vector<DomainSample>*, 3> sets{&data.text.pretrain, &data.text.moe,
                                                             &data.text.validation};
  std::vector<Index> training_ids{tokenizer.end_of_text()};
  std::size_t tokens = 0, samples = 0;
  for (std::size_t s = 0; s < sets.size(); ++s)
    for (const DomainSample& sample : *sets[s]) {
      std::vector<Index> ids = tokenizer.encode(sample.text);
      require(std::find(ids.begin(), ids.end(), tokenizer.end_of_text()) == ids.end(),
              "domain_overlap: a sample holds <|endoftext|>, the pad token: '", sample.text, "'");
      data.longest = std::max(data.longest, static_cast<Index>(ids.size()));
      if (static_cast<Index>(ids.size()) > max_len) {
        ids.resize(static_cast<std::size_t>(max_len));
        ++data.truncated;
      }
      require(ids.size() >= 2, "domain_overlap: a sample needs two tokens to predict one: '", sample.text,
              "'");
      tokens += ids.size();
      ++samples;
      if (s < 2) training_ids.insert(training_ids.end(), ids.begin(), ids.end());
      gpt2_ids[s].push_back(std::move(ids));
    }
  data.mean_length = static_cast<double>(tokens) / static_cast<double>(samples);
  data.vocabulary = VocabularyMap::from_corpus(training_ids, tokenizer.vocab_size());
  data.pad_id = data.vocabulary.to_compact(tokenizer.end_of_text());
  const std::array<TokenizedSet*, 3> out{&data.pretrain, &data.moe, &data.validation};
  for (std::size_t s = 0; s < sets.size(); ++s)
    for (std::size_t i = 0; i < gpt2_ids[s].size(); ++i) {
      out[s]->ids.push_back(data.vocabulary.to_compact(gpt2_ids[s][i]));
      out[s]->domains.push_back((*sets[s])[i].domain);
    }
  for (const auto& ids : data.validation.ids) {
    data.validation_tokens += static_cast<Index>(ids.size());
    data.validation_unk += std::count(ids.begin(), ids.end(), VocabularyMap::unk);
  }
  return data;
}

/// Samples of one batch, padded with the pad token to the batch's longest (padding is masked from attention
/// and from the loss, so the length padded to changes no counted number).
struct Batch {
  std::vector<Index> ids;  // sequence-major: row b * seq_len + i is position i of sequence b
  SequenceLayout layout;
  std::vector<Index> targets;  // next token, or -100 (CrossEntropyLoss's ignore index)
  Index predictions = 0;       // counted targets
};

inline Batch make_batch(const TokenizedSet& set, std::span<const Index> samples, Index pad_id) {
  Index seq_len = 0;
  std::vector<Index> lengths;
  for (const Index s : samples) {
    lengths.push_back(set.length(s));
    seq_len = std::max(seq_len, set.length(s));
  }
  Batch batch;
  batch.ids.assign(samples.size() * static_cast<std::size_t>(seq_len), pad_id);
  for (std::size_t b = 0; b < samples.size(); ++b) {
    const auto& ids = set.ids[static_cast<std::size_t>(samples[b])];
    std::copy(ids.begin(), ids.end(), batch.ids.begin() + static_cast<std::ptrdiff_t>(b) * seq_len);
  }
  const auto count = static_cast<Index>(samples.size());
  batch.layout = SequenceLayout(count, seq_len, lengths);
  batch.targets = next_token_targets(batch.ids, count, seq_len, pad_id);
  batch.predictions = std::count_if(batch.targets.begin(), batch.targets.end(), [](Index t) { return t >= 0; });
  return batch;
}

inline EncoderLMOptions lm_options(const ExperimentConfig& config, const PreparedCorpus& data, double entropy_beta) {
  const ModelSizes& m = config.model;
  return {.vocab_size = data.vocabulary.size(), .max_len = config.max_len, .d_model = m.d_model,
          .num_heads = m.num_heads, .num_layers = m.num_layers, .ffn_hidden = m.ffn_hidden,
          .norm_first = m.norm_first, .num_experts = domain_count, .router_hidden = m.router_hidden,
          .entropy_beta = entropy_beta};
}

/// Sees each evaluation batch of an MoE: its routing weights, layout and samples. The default sees nothing.
struct IgnoreRouting {
  void operator()(const MatrixX<float>&, const SequenceLayout&, std::span<const Index>) const {}
};

/// Mean next-token loss over the counted predictions of `samples`, in batches of `batch_size`, in eval mode.
/// For an MoE, observe(weights, layout, batch_samples) sees each batch's routing weights.
template <class LM, class Observe = IgnoreRouting>
double evaluate_loss(LM& lm, const TokenizedSet& set, std::span<const Index> samples, Index pad_id, Index batch_size,
                     Observe observe = {}) {
  lm.eval();
  CrossEntropyLoss<float> cross_entropy;
  double loss_sum = 0;
  Index predictions = 0;
  for (std::size_t first = 0; first < samples.size(); first += static_cast<std::size_t>(batch_size)) {
    const auto part = samples.subspan(first, std::min(samples.size() - first, static_cast<std::size_t>(batch_size)));
    const Batch batch = make_batch(set, part, pad_id);
    loss_sum += static_cast<double>(cross_entropy.forward(lm.forward(batch.ids, batch.layout), batch.targets)) *
                static_cast<double>(batch.predictions);
    predictions += batch.predictions;
    if constexpr (LM::is_moe) observe(*lm.body().routing().scores, batch.layout, part);
  }
  require(predictions > 0, "evaluate_loss: ", samples.size(), " samples hold no prediction");
  return loss_sum / static_cast<double>(predictions);
}

/// Samples of one set: what a run trains or validates on.
struct Split {
  const TokenizedSet* set = nullptr;
  std::vector<Index> samples;  // indices into *set
};

/// One epoch of a training run as the report and training.csv give it.
struct EpochRecord {
  Index epoch = 0;
  double train_loss = 0;   // mean cross-entropy of the epoch's steps (the entropy term not included)
  double router_term = 0;  // mean entropy term (aux_loss) of the epoch's steps; 0 for phase 1
  double val_loss = 0;     // mean cross-entropy over the validation split's predictions
  double seconds = 0;      // the epoch's training steps, without its validation pass

  template <class Archive>
  void serialize(Archive& archive) {
    archive(epoch, train_loss, router_term, val_loss, seconds);
  }
};

/// Trains `lm` with Adam (config.lr) for `epochs` epochs over `train`, in batches of config.batch drawn in
/// a fresh order each epoch from `order_seed`, with a progress bar labelled `label`; after each epoch it
/// measures the loss on `validation` and calls on_epoch(record). `checkpoints` (common/checkpoints.hpp) may
/// resume the training and save it as it goes, with the records; what on_epoch gathers is the caller's to
/// keep().
template <class LM, class OnEpoch, class Checkpoints>
std::vector<EpochRecord> train_lm(LM& lm, const Split& train, const Split& validation, const ExperimentConfig& config,
                                  Index epochs, Index pad_id, std::uint64_t order_seed, const std::string& label,
                                  OnEpoch on_epoch, Checkpoints& checkpoints) {
  Adam<float> optimizer(lm.named_parameters(), {.lr = config.lr});
  Rng order(order_seed);
  Trainer trainer(lm, optimizer, order, {.batch_size = config.batch, .epochs = epochs});
  std::vector<EpochRecord> records;
  double epoch_start = 0;  // checkpoints.elapsed_seconds() when the epoch began: it counts earlier invocations
  checkpoints.keep(records);
  checkpoints.keep(epoch_start);
  checkpoints.resume(trainer);
  CrossEntropyLoss<float> cross_entropy;
  std::vector<Index> samples;
  const auto step = [&](std::span<const Index> positions) -> StepResult {
    samples.clear();
    for (const Index p : positions) samples.push_back(train.samples[static_cast<std::size_t>(p)]);
    const Batch batch = make_batch(*train.set, samples, pad_id);
    const float loss = cross_entropy.forward(lm.forward(batch.ids, batch.layout), batch.targets);
    const float router_term = lm.aux_loss();
    lm.backward(cross_entropy.backward());
    trainer.add("router_term", router_term);
    return {.loss = loss, .samples = batch.predictions};
  };
  const auto end_epoch = [&](auto& t) {
    EpochRecord record;
    record.epoch = t.epoch();
    record.seconds = checkpoints.elapsed_seconds() - epoch_start;
    record.train_loss = t.epoch_loss();
    record.router_term = t.sum("router_term") / static_cast<double>(t.steps_per_epoch());
    record.val_loss = evaluate_loss(lm, *validation.set, validation.samples, pad_id, config.eval_batch);
    on_epoch(record);
    records.push_back(record);
  };
  trainer.fit(static_cast<Index>(train.samples.size()), step, ProgressBar(label, {.unit = "tokens"}),
              OnEpochBegin{[&](auto&) { epoch_start = checkpoints.elapsed_seconds(); }}, OnEpochEnd{end_epoch},
              checkpoints);
  return records;
}

/// Phase 1's result for one domain: the weights of the epoch with the lowest validation loss, and every
/// epoch's record.
struct PretrainedExpert {
  StateDict<float> best_weights;
  Index best_epoch = 0;
  double best_val_loss = 0;
  std::vector<EpochRecord> epochs;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(best_weights, best_epoch, best_val_loss, epochs);
  }
};

/// Phase 1: `expert`, one causal encoder with its own embedding and head, trained on `domain`'s pretraining
/// samples; the weights of the epoch with the lowest loss on the domain's validation samples are kept and put
/// back at the end. `checkpoints` as train_lm's.
template <class Checkpoints>
PretrainedExpert pretrain_expert(SingleEncoderLM& expert, EnglishDomain domain, const PreparedCorpus& data,
                                 const ExperimentConfig& config, std::uint64_t order_seed, const std::string& label,
                                 Checkpoints& checkpoints) {
  PretrainedExpert result;
  checkpoints.keep(result);  // the best epoch so far
  result.epochs = train_lm(expert, {&data.pretrain, data.pretrain.of_domain(domain)},
                           {&data.validation, data.validation.of_domain(domain)}, config, config.pretrain_epochs,
                           data.pad_id, order_seed, label,
                           [&](const EpochRecord& record) {
                             if (result.best_epoch == 0 || record.val_loss < result.best_val_loss) {
                               result.best_epoch = record.epoch;
                               result.best_val_loss = record.val_loss;
                               result.best_weights = state_dict(expert);
                             }
                           },
                           checkpoints);
  load_state_dict(expert, result.best_weights);
  return result;
}

/// Phase 2's result for one entropy weight.
struct MoERun {
  std::unique_ptr<DenseEncoderMoELM> model;
  std::vector<EpochRecord> epochs;
};

inline std::vector<Index> all_samples(const TokenizedSet& set) {
  std::vector<Index> samples(static_cast<std::size_t>(set.size()));
  for (std::size_t i = 0; i < samples.size(); ++i) samples[i] = static_cast<Index>(i);
  return samples;
}

/// Phase 2: the dense MoE (init drawn from `init_seed`) with expert e loaded from experts[e] (domain e), its
/// token and position embeddings the mean of the experts', its router and LM head new, trained on every MoE
/// training sample with the router's entropy weighted by `entropy_beta` (0: none). `checkpoints` as
/// train_lm's.
template <class Checkpoints>
MoERun train_moe(const std::vector<const SingleEncoderLM*>& experts, const PreparedCorpus& data,
                 const ExperimentConfig& config, double entropy_beta, std::uint64_t init_seed, std::uint64_t order_seed,
                 const std::string& label, Checkpoints& checkpoints) {
  require(static_cast<Index>(experts.size()) == domain_count, "train_moe: ", experts.size(), " experts, expected ",
          domain_count);
  Rng init(init_seed);
  MoERun run;
  run.model = std::make_unique<DenseEncoderMoELM>(lm_options(config, data, entropy_beta), init);
  for (Index e = 0; e < domain_count; ++e)
    load_pretrained_expert(*run.model, *experts[static_cast<std::size_t>(e)], e, false, false);
  average_embeddings(*run.model, std::span<const SingleEncoderLM* const>(experts));
  run.epochs = train_lm(*run.model, {&data.moe, all_samples(data.moe)},
                        {&data.validation, all_samples(data.validation)}, config, config.moe_epochs, data.pad_id,
                        order_seed, label, [](const EpochRecord&) {}, checkpoints);
  return run;
}

/// The trained MoE on the validation samples: loss and expert usage per domain, each sample's mean routing
/// weights, and the mean entropy of a token's routing weights (padding excluded throughout).
struct MoEEvaluation {
  std::array<double, english_domains.size()> domain_loss{};
  GroupRouting routing{domain_count, domain_count};  // groups: the validation samples' domains
  MatrixX<double> sample_weights;                     // [validation samples x experts]
  double mean_entropy = 0;                            // nats
};

inline MoEEvaluation evaluate_moe(DenseEncoderMoELM& lm, const PreparedCorpus& data, Index batch_size) {
  MoEEvaluation result;
  result.sample_weights.resize(data.validation.size(), domain_count);
  double entropy_sum = 0;
  Index tokens = 0;
  const auto observe = [&](const MatrixX<float>& weights, const SequenceLayout& layout, std::span<const Index> part) {
    std::vector<Index> groups;
    for (const Index s : part) groups.push_back(static_cast<Index>(data.validation.domain(s)));
    result.routing.add(weights, layout, groups);
    const MatrixX<double> means = sample_routing_weights(weights, layout);
    for (std::size_t b = 0; b < part.size(); ++b) result.sample_weights.row(part[b]) = means.row(static_cast<Index>(b));
    for (Index b = 0; b < layout.batch(); ++b)
      for (Index i = 0; i < layout.seq_len(); ++i) {
        if (layout.is_padding(b, i)) continue;
        for (Index e = 0; e < weights.cols(); ++e) {
          const double p = weights(b * layout.seq_len() + i, e);
          if (p > 0) entropy_sum -= p * std::log(p);
        }
        ++tokens;
      }
  };
  for (const EnglishDomain domain : english_domains)
    result.domain_loss[static_cast<std::size_t>(domain)] =
        evaluate_loss(lm, data.validation, data.validation.of_domain(domain), data.pad_id, batch_size, observe);
  result.mean_entropy = entropy_sum / static_cast<double>(tokens);
  return result;
}

/// Phase 1's experts on every domain's validation samples: row expert, column domain.
inline MatrixX<double> expert_domain_losses(const std::vector<std::unique_ptr<SingleEncoderLM>>& experts,
                                            const PreparedCorpus& data, Index batch_size) {
  MatrixX<double> losses(static_cast<Index>(experts.size()), domain_count);
  for (std::size_t e = 0; e < experts.size(); ++e)
    for (const EnglishDomain domain : english_domains)
      losses(static_cast<Index>(e), static_cast<Index>(domain)) = evaluate_loss(
          *experts[e], data.validation, data.validation.of_domain(domain), data.pad_id, batch_size);
  return losses;
}

}  // namespace moe::examples
