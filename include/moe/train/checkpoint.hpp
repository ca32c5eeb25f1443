#pragma once
// Checkpoints of a Trainer's run, and resuming from them. Needs cereal (as moe/io/checkpoint.hpp, which
// saves the model, its generators, the optimizer, the trainer's generator and the step). The loop's own
// state (TrainerState: the epoch's sample order, the position in it, the named numbers of callbacks) goes
// into a second file beside it, "<path>.trainer", written first, both atomically; a resume checks that
// the two are of the same step. A run resumed from them ends with the same bits as one never stopped.

#include <cstdint>
#include <exception>
#include <filesystem>
#include <istream>
#include <string>
#include <type_traits>
#include <utility>

#include <cereal/archives/portable_binary.hpp>
#include <cereal/cereal.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include "moe/core/error.hpp"
#include "moe/io/atomic_file.hpp"
#include "moe/io/binary_archive.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/io/input_file.hpp"
#include "moe/train/trainer.hpp"

namespace moe {

template <class Archive>
void serialize(Archive& archive, TrainerState& s, std::uint32_t /*version*/) {
  archive(s.step, s.epoch, s.batch, s.stopped, s.dataset_size, s.batch_size, s.order, s.loss, s.lr, s.samples,
          s.epoch_loss_sum, s.epoch_steps, detail::unique_keys(s.values, "values"),
          detail::unique_keys(s.epoch_sums, "epoch_sums"));
}

namespace detail {

inline constexpr const char* trainer_state_magic = "moe trainer state";

/// What the types allow but no run writes: negative counts, a sample order outside the data set.
inline void check_trainer_state(const TrainerState& s) {
  for (const auto& [field, count] :
       {std::pair{"step", s.step}, std::pair{"epoch", s.epoch}, std::pair{"batch", s.batch},
        std::pair{"dataset_size", s.dataset_size}, std::pair{"batch_size", s.batch_size},
        std::pair{"samples", s.samples}, std::pair{"epoch_steps", s.epoch_steps}})
    require(count >= 0, field, " is ", count, ", expected a count >= 0");
  for (std::size_t i = 0; i < s.order.size(); ++i)
    require(s.order[i] >= 0 && s.order[i] < s.dataset_size, "order[", i, "] is ", s.order[i],
            ", expected a sample in [0, dataset_size = ", s.dataset_size, ")");
}

/// Reads a trainer state from `in`, which holds `size` bytes.
inline TrainerState read_trainer_state(std::istream& in, std::uint64_t size) {
  TrainerState state;
  CheckedBinaryInputArchive archive(in, size);
  std::string magic;
  archive(magic);
  require(magic == trainer_state_magic, "not a moe trainer state");
  archive(state);
  require(archive.bytes_left() == 0, archive.bytes_left(), " unexpected bytes after the state");
  check_trainer_state(state);
  return state;
}

inline TrainerState read_trainer_state(const std::filesystem::path& path) {
  const std::string where = concat("resume_training: '", path.string(), "'");
  InputFile input = open_input_file(path, where);
  TrainerState state;
  try {
    state = read_trainer_state(input.stream, input.size);
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  } catch (const std::exception& e) {
    fail(where, ": truncated or corrupt (", e.what(), ")");
  }
  return state;
}

}  // namespace detail

/// Where the trainer's own state of the checkpoint at `path` is.
inline std::filesystem::path trainer_state_path(const std::filesystem::path& checkpoint) {
  std::filesystem::path state = checkpoint;
  state += ".trainer";
  return state;
}

/// Saves the run as it is now: the checkpoint (moe/io/checkpoint.hpp) at `path` and the trainer's state at
/// trainer_state_path(path). The trainer's model must be what save_checkpoint takes (named_parameters, a
/// Scalar type; ModelRef puts several modules together).
template <class T>
void save_training(const std::filesystem::path& path, T& trainer, CheckpointFormat format = CheckpointFormat::Binary) {
  const std::filesystem::path state_path = trainer_state_path(path);
  write_file_atomically(state_path, detail::concat("save_training: '", state_path.string(), "'"),
                                [&](std::ostream& out) {
                                  cereal::PortableBinaryOutputArchive archive(out);
                                  archive(std::string(detail::trainer_state_magic), trainer.state());
                                });
  const TrainerState& s = trainer.state();
  save_checkpoint(path, TrainingProgress{s.epoch, s.step}, trainer.model(), trainer.optimizer(), trainer.rng(),
                  format);
}

/// Restores what save_training saved into a trainer built as the saved one was (any seeds): the model,
/// optimizer and generator through load_checkpoint, then the trainer's state; fit() then goes on from
/// there. Both files are read and checked first: on error nothing has changed.
template <class T>
void resume_training(const std::filesystem::path& path, T& trainer) {
  TrainerState state = detail::read_trainer_state(trainer_state_path(path));
  // load_checkpoint checks everything before it changes anything, and the state is checked against its
  // header first, so a mismatch leaves the trainer as it was.
  {
    const std::string where = detail::concat("resume_training: '", path.string(), "'");
    using Scalar = typename std::remove_cvref_t<decltype(trainer.model())>::Scalar;
    using Opt = std::remove_cvref_t<decltype(trainer.optimizer())>;
    const auto header = detail::read_checkpoint_file<Scalar, Opt>(path, where).header.progress;
    detail::require(header.step == state.step && header.epoch == state.epoch, where, ": the checkpoint is of step ",
                    header.step, " (epoch ", header.epoch, "), its trainer state of step ", state.step, " (epoch ",
                    state.epoch, "); was a save interrupted?");
  }
  load_checkpoint(path, trainer.model(), trainer.optimizer(), trainer.rng());
  trainer.state() = std::move(state);
}

/// Saves the run every `every_steps` steps and after the last step (on_commit: after every other callback
/// of the step), to the same path each time.
class Checkpoint {
 public:
  Checkpoint(std::filesystem::path path, Index every_steps, CheckpointFormat format = CheckpointFormat::Binary)
      : path_(std::move(path)), every_(every_steps), format_(format) {
    detail::require(every_steps > 0, "Checkpoint: every_steps must be positive, got ", every_steps);
  }

  template <class T>
  void on_commit(T& trainer) {
    if (trainer.step() % every_ == 0 || trainer.at_end()) save_training(path_, trainer, format_);
  }

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  Index every_;
  CheckpointFormat format_;
};

}  // namespace moe

CEREAL_CLASS_VERSION(moe::TrainerState, 1)
