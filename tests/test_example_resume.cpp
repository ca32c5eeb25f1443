// The examples' resumable runs (examples/common/resume.hpp): a run stopped by --max-steps at any step and
// resumed ends with the results of a run never stopped; finished units are read back, not run again; a run
// directory of another program, or of a finished run, is refused by name.

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "common/resume.hpp"
#include "moe/core/random.hpp"
#include "synthetic_mixture/synthetic_training.hpp"

using moe::Index;
using moe::examples::Args;
using moe::examples::RunSettings;
using moe::examples::RunState;
using moe::examples::Stopped;
using moe::examples::SyntheticRunOptions;
using moe::examples::SyntheticRunResult;
using moe::examples::train_synthetic_mixture;
using moe::examples::UnitCheckpoint;

namespace {

/// A directory under the system's temporary one: absent at first, removed at the end of the scope.
struct TempDirectory {
  std::filesystem::path path;
  explicit TempDirectory(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("moe_test_example_resume_" + name)) {
    std::filesystem::remove_all(path);
  }
  ~TempDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

/// The options of an invocation: a fresh run into `out`, or with `resume` the one in `out` continued.
Args invocation(const std::filesystem::path& out, Index max_steps = 0, bool resume = false) {
  Args args;
  args.preset = "smoke";
  args.out = out;
  args.max_steps = max_steps;
  if (resume) args.resume = out;
  return args;
}

SyntheticRunOptions small_task(std::uint64_t seed) {
  SyntheticRunOptions options;
  options.task.samples = 256;
  options.test_samples = 64;
  options.epochs = 3;
  options.batch = 32;  // 8 steps per epoch, 24 in all
  options.seed = seed;
  return options;
}

/// Two units, each a synthetic-mixture training, checkpointed every 5 steps; counts the units computed.
std::vector<SyntheticRunResult> two_units(RunState& run, int& computed) {
  std::vector<SyntheticRunResult> results;
  for (const std::uint64_t seed : {1, 2})
    results.push_back(run.unit("train" + std::to_string(seed), 5, [&](UnitCheckpoint& checkpoint) {
      ++computed;
      return train_synthetic_mixture(small_task(seed), {}, {}, checkpoint);
    }));
  return results;
}

void check_same(const SyntheticRunResult& a, const SyntheticRunResult& b) {
  REQUIRE(a.epochs.size() == b.epochs.size());
  for (std::size_t e = 0; e < a.epochs.size(); ++e) {
    CHECK(a.epochs[e].epoch == b.epochs[e].epoch);
    CHECK(a.epochs[e].train_loss == b.epochs[e].train_loss);
    CHECK(a.epochs[e].aux_loss == b.epochs[e].aux_loss);
    CHECK(a.epochs[e].train_accuracy == b.epochs[e].train_accuracy);
    CHECK(a.epochs[e].test_accuracy == b.epochs[e].test_accuracy);
    CHECK(a.epochs[e].max_violation == b.epochs[e].max_violation);
    CHECK(a.epochs[e].relative_load == b.epochs[e].relative_load);
  }
  CHECK(a.region_by_expert.counts() == b.region_by_expert.counts());
}

}  // namespace

TEST_CASE("RunState: a run stopped by --max-steps at any step and resumed gives the results of one never stopped",
          "[examples][resume]") {
  const TempDirectory straight_out("straight");
  Args straight_args = invocation(straight_out.path);
  RunState straight(straight_args, "test_program");
  int computed = 0;
  const std::vector<SyntheticRunResult> expected = two_units(straight, computed);
  CHECK(computed == 2);
  // Without checkpoints at all, the same training gives the same results.
  check_same(expected[0], train_synthetic_mixture(small_task(1)));

  // Pieces of 1, 7 and 24 steps: stops within an epoch, on an epoch's end, right after a resume, on the
  // last step of a unit (the next one stops before its first) and across both units.
  for (const Index piece : {1, 7, 24}) {
    DYNAMIC_SECTION("pieces of " << piece << " steps") {
      const TempDirectory directory("pieces" + std::to_string(piece));
      const std::filesystem::path& out = directory.path;
      int invocations = 0, units_computed = 0;
      std::vector<SyntheticRunResult> results;
      while (results.empty()) {
        REQUIRE(++invocations <= 60);
        Args args = invocation(out, piece, invocations > 1);
        RunState run(args, "test_program");
        CHECK(run.steps_before() == (invocations - 1) * piece);
        try {
          results = two_units(run, units_computed);
          run.finish();
        } catch (const Stopped& stopped) {
          INFO(stopped.what());
          CHECK(std::filesystem::exists(out / "checkpoints" / "run.txt"));
        }
      }
      CHECK(invocations == (48 + piece - 1) / piece);  // 48 steps in all, `piece` per invocation
      CHECK(!std::filesystem::exists(out / "checkpoints"));
      for (std::size_t u = 0; u < results.size(); ++u) check_same(expected[u], results[u]);
    }
  }
}

TEST_CASE("RunState: a finished unit is read back, not run again, and keeps what it computed exactly",
          "[examples][resume]") {
  const TempDirectory directory("units");
  const std::filesystem::path& out = directory.path;
  Args args = invocation(out, 30);  // the first unit (24 steps) ends, the second stops
  int computed = 0;
  {
    RunState run(args, "test_program");
    CHECK_THROWS_AS(two_units(run, computed), Stopped);
  }
  CHECK(std::filesystem::exists(out / "checkpoints" / "train1.result"));
  CHECK(std::filesystem::exists(out / "checkpoints" / "train2.kept"));
  CHECK(computed == 2);
  Args resumed = invocation(out, 0, true);
  RunState run(resumed, "test_program");
  computed = 0;
  const std::vector<SyntheticRunResult> results = two_units(run, computed);
  CHECK(computed == 1);  // only the second unit runs (from its checkpoint)
  const TempDirectory straight_out("units_straight");
  Args straight_args = invocation(straight_out.path);
  RunState straight(straight_args, "test_program");
  int straight_computed = 0;
  const std::vector<SyntheticRunResult> expected = two_units(straight, straight_computed);
  check_same(expected[0], results[0]);
  check_same(expected[1], results[1]);
}

/// A unit's result that holds a generator, as one that a later unit goes on with.
struct GeneratorResult {
  moe::Rng rng;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(rng);
  }
};

/// A unit's result of the same bytes as GeneratorResult's, but a text that is no generator's state.
struct TextResult {
  std::string text;

  template <class Archive>
  void serialize(Archive& archive) {
    archive(text);
  }
};

TEST_CASE("RunState: a generator in a finished unit's result comes back in the state the unit left it",
          "[examples][resume]") {
  const TempDirectory directory("generator");
  const std::filesystem::path& out = directory.path;
  moe::Rng left(7);
  left.discard(1000);
  Args args = invocation(out);
  {
    RunState run(args, "test_program");
    run.unit("draws", 5, [&](UnitCheckpoint&) { return GeneratorResult{left}; });
  }  // not finished: the result stays for --resume
  Args resumed = invocation(out, 0, true);
  SECTION("read back") {
    RunState run(resumed, "test_program");
    bool computed = false;
    const GeneratorResult read = run.unit("draws", 5, [&](UnitCheckpoint&) {
      computed = true;
      return GeneratorResult{};
    });
    CHECK(!computed);
    CHECK(read.rng == left);
    CHECK(moe::Rng(read.rng)() == moe::Rng(left)());
  }
  SECTION("a text that is no generator's state is an error naming the file") {
    {
      Args fresh = invocation(out);
      RunState run(fresh, "test_program");
      run.unit("draws", 5, [](UnitCheckpoint&) { return TextResult{"not a generator"}; });
    }
    RunState run(resumed, "test_program");
    CHECK_THROWS_WITH(run.unit("draws", 5, [](UnitCheckpoint&) { return GeneratorResult{}; }),
                      Catch::Contains("draws.result") && Catch::Contains("generator"));
  }
}

TEST_CASE("RunState: --resume takes the run's options and refuses another program's run or a finished one",
          "[examples][resume]") {
  const TempDirectory directory("options");
  const std::filesystem::path& out = directory.path;
  Args args = invocation(out);
  args.preset = "quick";
  args.data_dir = "some/data";
  args.seed = 42;
  {
    RunState run(args, "test_program", {{"alpha", "0.001"}});
    CHECK(args.data_dir == std::filesystem::absolute("some/data"));
  }
  Args resumed = invocation(out, 0, true);
  RunState run(resumed, "test_program");
  CHECK(resumed.preset == "quick");
  CHECK(resumed.seed == 42);
  CHECK(resumed.data_dir == std::filesystem::absolute("some/data"));
  CHECK(run.settings() == RunSettings{{"alpha", "0.001"}});

  Args other = invocation(out, 0, true);
  CHECK_THROWS_WITH(RunState(other, "other_program"),
                    Catch::Contains("a run of test_program, not of other_program"));
  run.finish();
  CHECK_THROWS_WITH(RunState(other, "test_program"), Catch::Contains("holds no unfinished run of test_program"));
}
