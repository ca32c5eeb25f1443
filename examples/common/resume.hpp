#pragma once
// `--resume OUT`: a run of an example goes on from where an earlier invocation stopped (--max-steps N, a
// crash) and ends with the files of a run never stopped, wall-clock times aside. A run is a sequence of
// units (a trial, a model, a phase: one Trainer fit each, and what is measured after it). Until the run
// ends, OUT/checkpoints/ holds its state:
//
//   run.txt          what decides the results: the program, --preset, --seed, --data-dir and the example's
//                    own settings (RunSettings), written at the start and read back by --resume
//   <unit>.result    the result of each finished unit, from which the outputs are written
//   <unit>.ck ...    the unit in progress: moe::save_training's checkpoint (moe/train/checkpoint.hpp), and
//   <unit>.kept      what the unit's code gathered while training (UnitCheckpoint::keep)
//   progress.txt     steps taken and seconds spent so far, for the progress lines and the wall times
//
// Results and kept objects go through cereal (portable binary, exact): each type has a `serialize` member,
// Eigen matrices, LabelExpertTable and moe::Rng are handled here. Randomness needs nothing more: the
// checkpoint holds the model's generators and the trainer's, and whatever else a unit draws comes from seeds
// it sets itself, or from a generator an earlier unit left, which that unit's result then holds.
//
//   RunState run(args, "name");
//   for (int trial = 0; trial < trials; ++trial)
//     results.push_back(run.unit("trial" + std::to_string(trial + 1), 100, [&](UnitCheckpoint& checkpoint) {
//       return train_and_measure(..., checkpoint);  // keep, resume, then fit with the checkpoint as a callback
//     }));
//   write_outputs(results);
//   run.finish();

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <ios>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <cereal/archives/portable_binary.hpp>
#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/common.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/vector.hpp>

#include "common/args.hpp"
#include "common/check.hpp"
#include "moe/analysis/label_table.hpp"
#include "moe/core/error.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/io/atomic_file.hpp"
#include "moe/io/binary_archive.hpp"
#include "moe/io/checkpoint.hpp"
#include "moe/io/input_file.hpp"
#include "moe/train/checkpoint.hpp"

namespace cereal {

/// A dense Eigen matrix: its shape, then its elements.
template <class Archive, class S, int R, int C, int O, int MR, int MC>
void save(Archive& archive, const Eigen::Matrix<S, R, C, O, MR, MC>& m) {
  archive(static_cast<std::int64_t>(m.rows()), static_cast<std::int64_t>(m.cols()),
          binary_data(m.data(), sizeof(S) * static_cast<std::size_t>(m.size())));
}

template <class Archive, class S, int R, int C, int O, int MR, int MC>
void load(Archive& archive, Eigen::Matrix<S, R, C, O, MR, MC>& m) {
  std::int64_t rows = 0, cols = 0;
  archive(rows, cols);
  moe::examples::require(rows >= 0 && cols >= 0, "a matrix of ", rows, "x", cols);
  m.resize(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
  archive(binary_data(m.data(), sizeof(S) * static_cast<std::size_t>(m.size())));
}

/// A LabelExpertTable: its counts. The table takes counts only through add(), so loading adds each
/// (label, expert) cell's count as that many assignments.
template <class Archive>
void save(Archive& archive, const moe::LabelExpertTable& table) {
  archive(table.counts());
}

template <class Archive>
void load(Archive& archive, moe::LabelExpertTable& table) {
  moe::IndexMatrix counts;
  archive(counts);
  moe::examples::require(counts.rows() > 0 && counts.cols() > 0 && (counts.array() >= 0).all(),
                         "a label-by-expert table of ", counts.rows(), "x", counts.cols(), " counts, some negative");
  table = moe::LabelExpertTable(counts.rows(), counts.cols());
  for (moe::Index label = 0; label < counts.rows(); ++label)
    for (moe::Index expert = 0; expert < counts.cols(); ++expert) {
      const moe::Index n = counts(label, expert);
      if (n > 0)
        table.add(std::vector<moe::Index>(static_cast<std::size_t>(n), label),
                  moe::IndexMatrix::Constant(n, 1, expert));
    }
}

/// A generator as a checkpoint holds it: its state in the standard's text form, which reads back exactly.
template <class Archive>
void save(Archive& archive, const moe::Rng& rng) {
  archive(moe::generator_text(rng));
}

template <class Archive>
void load(Archive& archive, moe::Rng& rng) {
  std::string text;
  archive(text);
  rng = moe::parse_generator(text, "of a unit's result");
}

}  // namespace cereal

namespace moe::examples {

/// The settings of a run that decide its results besides --preset, --seed and --data-dir (an example's own
/// options), as text by name.
using RunSettings = std::map<std::string, std::string>;

namespace detail {

inline constexpr const char* run_state_magic = "moe example run state";

/// Writes `path` atomically with write(archive) on a cereal portable binary archive.
template <class Write>
void write_state_file(const std::filesystem::path& path, Write&& write) {
  moe::write_file_atomically(path, concat("cannot write ", path.string()), [&](std::ostream& out) {
    cereal::PortableBinaryOutputArchive archive(out);
    archive(std::string(run_state_magic));
    write(archive);
  });
}

/// Calls read(archive) on what write_state_file wrote at `path`, which must read it to the end unless
/// `to_the_end` is false (a header); any fault is a moe::Error naming the file.
template <class Read>
void read_state_file(const std::filesystem::path& path, Read&& read, bool to_the_end = true) {
  try {
    moe::InputFile input = moe::open_input_file(path, "cannot read it");
    moe::CheckedBinaryInputArchive archive(input.stream, input.size);
    std::string magic;
    archive(magic);
    require(magic == run_state_magic, "not a file of an example's run state");
    read(archive);
    require(!to_the_end || archive.bytes_left() == 0, "unexpected bytes at the end");
  } catch (const Error& e) {
    fail("--resume: ", path.string(), ": ", e.what());
  } catch (const std::exception& e) {
    fail("--resume: ", path.string(), ": truncated or corrupt (", e.what(), ")");
  }
}

/// What the units of a run share: the steps this invocation may still take (--max-steps), and the steps
/// and seconds of the run so far, earlier invocations included (progress.txt).
class RunProgress {
 public:
  RunProgress(std::filesystem::path file, Index max_steps)
      : file_(std::move(file)), steps_left_(max_steps > 0 ? std::optional<Index>(max_steps) : std::nullopt) {}

  /// Reads what an earlier invocation wrote.
  void read() {
    std::ifstream in(file_);
    std::string steps_key, seconds_key;
    require(in >> steps_key >> steps_before_ >> seconds_key >> seconds_before_ && steps_key == "steps" &&
                seconds_key == "seconds",
            "--resume: ", file_.string(), " is not 'steps N' and 'seconds S'");
  }
  void write() const {
    moe::write_file_atomically(file_, concat("cannot write ", file_.string()), [&](std::ostream& out) {
      out << "steps " << steps_done() << "\nseconds " << elapsed_seconds() << '\n';
    });
  }

  /// Counts a step; true when it was the last one this invocation may take.
  bool count_step() {
    ++steps_taken_;
    return steps_left_ && --*steps_left_ <= 0;
  }
  bool out_of_steps() const { return steps_left_ && *steps_left_ <= 0; }

  Index steps_before() const { return steps_before_; }
  Index steps_done() const { return steps_before_ + steps_taken_; }
  double elapsed_seconds() const {
    return seconds_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::filesystem::path file_;
  std::optional<Index> steps_left_;
  Index steps_before_ = 0, steps_taken_ = 0;
  double seconds_before_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace detail

class RunState;

/// The checkpoints of one unit of a run, in the protocol of common/checkpoints.hpp: keep() what the unit
/// gathers while training, resume() the trainer (and the kept objects) from the unit's last checkpoint,
/// and pass it to Trainer::fit, where it saves a checkpoint every `every` steps and, when this
/// invocation's --max-steps are spent, one more before it throws Stopped (common/check.hpp), which
/// run_main turns into a message and exit status 0. The unit's last step needs no checkpoint: its result
/// is saved right after.
class UnitCheckpoint {
 public:
  template <class T>
  void keep(T& object) {
    require(!resumed_, unit_, ": keep() comes before resume()");
    save_kept_.emplace_back([&object](cereal::PortableBinaryOutputArchive& archive) { archive(object); });
    load_kept_.emplace_back([&object](moe::CheckedBinaryInputArchive& archive) { archive(object); });
  }

  template <class T>
  void resume(T& trainer) {
    resumed_ = true;
    if (!std::filesystem::exists(kept_path_)) return;
    Index step = 0;
    detail::read_state_file(kept_path_, [&](auto& archive) {
      read_header(archive, step);
      for (const auto& load : load_kept_) load(archive);
    });
    resume_training(path_, trainer);
    require(trainer.step() == step, "--resume: ", kept_path_.string(), " is of step ", step, ", the checkpoint ",
            path_.string(), " of step ", trainer.step(), "; was a save interrupted?");
    std::printf("%s: resumed at step %lld from %s\n", unit_.c_str(), static_cast<long long>(step), path_.c_str());
    std::fflush(stdout);
  }

  template <class T>
  void on_fit_begin(T& trainer) {
    if (progress_->out_of_steps() && trainer.step() < trainer.total_steps()) stop(trainer);
  }

  template <class T>
  void on_commit(T& trainer) {
    const bool stopping = progress_->count_step();
    if (trainer.at_end()) return;
    if (stopping || trainer.step() % every_ == 0) save(trainer);
    if (stopping) stop(trainer);
  }

  /// Seconds spent on this unit, earlier invocations included.
  double elapsed_seconds() const {
    return seconds_before_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  /// Steps the unit took in earlier invocations (those its checkpoint holds): where its progress line starts.
  Index steps_before() const { return steps_before_; }

 private:
  friend class RunState;

  UnitCheckpoint(detail::RunProgress& progress, std::string unit, const std::filesystem::path& directory, Index every)
      : progress_(&progress), unit_(std::move(unit)), path_(directory / (unit_ + ".ck")),
        kept_path_(directory / (unit_ + ".kept")), every_(every) {
    require(every > 0, unit_, ": checkpoints every ", every, " steps; expected a positive count");
    if (std::filesystem::exists(kept_path_))
      detail::read_state_file(kept_path_, [&](auto& archive) { read_header(archive, steps_before_); }, false);
  }

  void read_header(moe::CheckedBinaryInputArchive& archive, Index& step) {
    std::string unit;
    archive(unit, step, seconds_before_);
    require(unit == unit_, "it holds the unit '", unit, "', expected '", unit_, "'");
  }

  template <class T>
  void save(T& trainer) {
    const Index step = trainer.step();
    const double seconds = elapsed_seconds();
    detail::write_state_file(kept_path_, [&](auto& archive) {
      archive(unit_, step, seconds);
      for (const auto& save : save_kept_) save(archive);
    });
    save_training(path_, trainer);
    progress_->write();
  }

  template <class T>
  [[noreturn]] void stop(T& trainer) const {
    throw Stopped(concat(unit_, ": stopped at step ", trainer.step(), " of ", trainer.total_steps(), " (--max-steps)"));
  }

  /// The unit is done: its checkpoint is of no more use.
  void remove_files() const {
    for (const auto& path : {path_, trainer_state_path(path_), kept_path_}) std::filesystem::remove(path);
  }

  detail::RunProgress* progress_;
  std::string unit_;
  std::filesystem::path path_, kept_path_;
  Index every_;
  bool resumed_ = false;
  std::vector<std::function<void(cereal::PortableBinaryOutputArchive&)>> save_kept_;
  std::vector<std::function<void(moe::CheckedBinaryInputArchive&)>> load_kept_;
  Index steps_before_ = 0;
  double seconds_before_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

/// A run of an example, resumable (see the top of this file).
class RunState {
 public:
  /// A fresh run (args.resume empty) removes the state an earlier run left in args.out, makes
  /// args.data_dir absolute and writes run.txt from `args` and `settings`; a resumed one reads --preset,
  /// --seed, --data-dir into `args` and the example's own settings (settings()) from the run.txt of
  /// args.out, which must be `program`'s.
  RunState(Args& args, std::string program, RunSettings settings = {})
      : program_(std::move(program)), directory_(args.out / "checkpoints"), settings_(std::move(settings)),
        progress_(directory_ / "progress.txt", args.max_steps) {
    const std::filesystem::path run_file = directory_ / "run.txt";
    if (!args.resume.empty()) {
      read_run_file(run_file, args);
      progress_.read();
      return;
    }
    if (std::filesystem::exists(directory_)) {
      std::printf("starting afresh: removing the state of an earlier run in %s\n", directory_.c_str());
      std::filesystem::remove_all(directory_);
    }
    std::filesystem::create_directories(directory_);
    args.data_dir = std::filesystem::absolute(args.data_dir);  // a resumed run may start in another directory
    // run.txt last, each file whole or absent: a run killed at any moment either left no run.txt (and
    // starts afresh) or can be resumed.
    progress_.write();
    write_run_file(run_file, args);
  }

  /// The example's own settings: those given to the constructor, or on --resume the run's.
  const RunSettings& settings() const { return settings_; }
  /// Training steps taken by earlier invocations of this run: where a progress line over the run starts.
  Index steps_before() const { return progress_.steps_before(); }
  /// Wall-clock seconds spent on this run, earlier invocations included.
  double elapsed_seconds() const { return progress_.elapsed_seconds(); }

  /// The result of the unit `name` (letters, digits, '_', '-'): read from its file when an earlier
  /// invocation finished it, else compute(UnitCheckpoint&), which goes on from the unit's checkpoint
  /// when there is one and saves one every `checkpoint_every` steps; the result is saved before it is
  /// returned. The result type needs a default constructor and a cereal `serialize`.
  template <class Compute>
  auto unit(const std::string& name, Index checkpoint_every, Compute&& compute) {
    using Result = std::remove_cvref_t<std::invoke_result_t<Compute&, UnitCheckpoint&>>;
    const auto file_safe = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; };
    require(!name.empty() && std::all_of(name.begin(), name.end(), file_safe), "RunState: the unit name '", name,
            "' must be letters, digits, '_' and '-'");
    const std::filesystem::path path = directory_ / (name + ".result");
    if (std::filesystem::exists(path)) {
      Result result{};
      detail::read_state_file(path, [&](auto& archive) {
        std::string unit;
        archive(unit);
        require(unit == name, "it holds the unit '", unit, "', expected '", name, "'");
        archive(result);
      });
      return result;
    }
    UnitCheckpoint checkpoint(progress_, name, directory_, checkpoint_every);
    Result result = compute(checkpoint);
    detail::write_state_file(path, [&](auto& archive) { archive(name, result); });
    checkpoint.remove_files();
    progress_.write();
    return result;
  }

  /// The run is complete: removes its state, so that it cannot be resumed.
  void finish() { std::filesystem::remove_all(directory_); }

 private:
  void write_run_file(const std::filesystem::path& path, const Args& args) const {
    moe::write_file_atomically(path, concat(program_, ": could not write ", path.string()),
                                       [&](std::ostream& file) {
                                         file << program_ << " run\npreset " << args.preset << "\nseed "
                                              << args.seed << "\ndata_dir " << args.data_dir.string() << '\n';
                                         for (const auto& [key, value] : settings_) file << key << ' ' << value << '\n';
                                       });
  }

  void read_run_file(const std::filesystem::path& path, Args& args) {
    std::ifstream file(path);
    require(file.is_open(), "--resume: ", path.string(), " is missing: ", args.out.string(),
            " holds no unfinished run of ", program_, " (a finished run removes its checkpoints)");
    std::string line;
    const std::string first = program_ + " run";
    require(std::getline(file, line) && line.ends_with(" run"), "--resume: ", path.string(),
            " is not the options of a run");
    require(line == first, "--resume: ", path.string(), " is the options of a run of ",
            line.substr(0, line.size() - 4), ", not of ", program_);
    std::vector<std::string> missing = {"preset", "seed", "data_dir"};
    settings_.clear();
    while (std::getline(file, line)) {
      const auto space = line.find(' ');
      const std::string key = line.substr(0, space), value = space == std::string::npos ? "" : line.substr(space + 1);
      std::erase(missing, key);
      try {
        if (key == "preset")
          args.preset = value;
        else if (key == "seed")
          args.seed = std::stoull(value);
        else if (key == "data_dir")
          args.data_dir = value;
        else
          settings_[key] = value;
      } catch (const std::logic_error&) {
        fail("--resume: ", path.string(), ": cannot read the line '", line, "'");
      }
    }
    require(missing.empty(), "--resume: ", path.string(), " has no line '", missing.empty() ? "" : missing.front(),
            " ...'");
  }

  std::string program_;
  std::filesystem::path directory_;
  RunSettings settings_;
  detail::RunProgress progress_;
};

}  // namespace moe::examples
