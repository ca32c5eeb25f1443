#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "moe/moe.hpp"

using moe::Index;
using Catch::Matchers::Contains;

namespace {

/// Sets moe's thread count for one scope.
class Threads {
 public:
  explicit Threads(int threads) : previous_(moe::set_num_threads(threads)) {}
  ~Threads() { moe::set_num_threads(previous_); }
  Threads(const Threads&) = delete;
  Threads& operator=(const Threads&) = delete;

 private:
  int previous_;
};

/// The message of the moe::Error that `run` throws; fails the test when it throws anything else or nothing.
template <class Run>
std::string error_message(Run&& run) {
  try {
    run();
  } catch (const moe::Error& e) {
    return e.what();
  } catch (...) {
    FAIL("an exception that is not a moe::Error left the loop");
  }
  FAIL("nothing was thrown");
  return {};
}

/// Every thread count and schedule the tests cover, as (threads, dynamic).
template <class Check>
void for_each_setting(Check&& check) {
  for (const int threads : {1, 2})
    for (const bool dynamic : {false, true}) {
      INFO("threads " << threads << ", dynamic " << dynamic);
      Threads scope(threads);
      check(dynamic);
    }
}

/// A tiny expert (y = 2x) that throws std::runtime_error("boom") when it is given more than `max_rows` rows.
struct FragileExpert {
  using Scalar = double;
  struct Options {
    Index max_rows = 0;
  };

  FragileExpert(Index d_model, const Options& options, moe::Rng& /*rng*/) : d_model_(d_model), options_(options) {}

  const moe::MatrixX<double>& forward(moe::ConstRef<double> x) {
    if (x.rows() > options_.max_rows) throw std::runtime_error("boom");
    y_ = 2.0 * x;
    return y_;
  }
  const moe::MatrixX<double>& backward(moe::ConstRef<double> dy) {
    dx_ = 2.0 * dy;
    return dx_;
  }
  moe::ParameterList<double> named_parameters() { return {}; }
  Index out_features() const { return d_model_; }

 private:
  Index d_model_;
  Options options_;
  moe::MatrixX<double> y_, dx_;
};

}  // namespace

TEST_CASE("parallel_for passes a moe::Error from its body unchanged", "[parallel]") {
  for_each_setting([](bool dynamic) {
    const std::string message = error_message([&] {
      moe::parallel_for("test loop", 100, [](Index i) { moe::detail::require(i != 41, "item ", i, " is bad"); },
                        dynamic);
    });
    CHECK(message == "item 41 is bad");
  });
}

TEST_CASE("parallel_for turns other exceptions into a moe::Error that names the loop", "[parallel]") {
  for_each_setting([](bool dynamic) {
    CHECK(error_message([&] {
            moe::parallel_for("test loop", 100, [](Index i) {
              if (i == 63) throw std::runtime_error("disk full");
            }, dynamic);
          }) == "test loop: disk full");
    CHECK(error_message([&] {
            moe::parallel_for("test loop", 100, [](Index i) {
              if (i == 7) throw 42;
            }, dynamic);
          }) == "test loop: unknown exception");
    CHECK(error_message([&] {
            moe::parallel_for(100, [](Index i) {
              if (i == 7) throw std::out_of_range("index");
            }, dynamic);
          }) == "moe::parallel_for: index");
  });
}

TEST_CASE("parallel_for names the lowest failing item when several fail", "[parallel]") {
  for_each_setting([](bool dynamic) {
    std::vector<std::atomic<int>> ran(100);
    const std::string message = error_message([&] {
      moe::parallel_for("test loop", 100, [&](Index i) {
        ++ran[static_cast<std::size_t>(i)];
        // The lowest failing item fails last in time, so the first exception is never the one kept.
        if (i == 10) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (i == 10 || i == 37 || i == 60 || i == 99) throw std::runtime_error("item " + std::to_string(i));
      }, dynamic);
    });
    CHECK(message == "test loop: item 10");
    // Every item below the failing one ran, once; none ran twice.
    for (std::size_t i = 0; i < ran.size(); ++i) {
      INFO("item " << i);
      CHECK(ran[i].load() <= 1);
      if (i <= 10) CHECK(ran[i].load() == 1);
    }
  });
}

TEST_CASE("parallel_for_chunks passes errors like parallel_for", "[parallel]") {
  for (const int threads : {1, 2}) {
    INFO("threads " << threads);
    Threads scope(threads);
    CHECK(error_message([] {
            moe::parallel_for_chunks("chunks", 100, 8, [](Index first, Index count) {
              if (first + count > 50) throw std::runtime_error("chunk at " + std::to_string(first));
            });
          }) == "chunks: chunk at 48");
    CHECK(error_message([] {
            moe::parallel_for_chunks(100, 8, [](Index first, Index /*count*/) {
              moe::detail::require(first < 24, "chunk at ", first);
            });
          }) == "chunk at 24");
  }
}

TEST_CASE("parallel_for works normally after an error", "[parallel]") {
  for_each_setting([](bool dynamic) {
    CHECK_THROWS_AS(moe::parallel_for("test loop", 64, [](Index) { throw std::runtime_error("every item"); }, dynamic),
                    moe::Error);
    std::vector<int> ran(64, 0);
    moe::parallel_for("test loop", 64, [&](Index i) { ++ran[static_cast<std::size_t>(i)]; }, dynamic);
    CHECK(ran == std::vector<int>(64, 1));
  });
}

TEST_CASE("An MoE layer whose expert throws passes the error to the caller", "[parallel][moe][layer]") {
  // 64 tokens on 4 experts, one each: some expert gets at least 16 rows, and throws.
  moe::Rng rng(3);
  moe::MoELayer<FragileExpert, moe::SoftmaxTopK, 1, moe::NoBalancing> layer(
      {.d_model = 8, .num_experts = 4, .expert = {.max_rows = 15}}, rng);
  moe::MatrixX<double> x(64, 8);
  moe::fill_normal(x, rng, 0.0, 1.0);
  for (const int threads : {1, 2}) {
    INFO("threads " << threads);
    Threads scope(threads);
    CHECK_THAT(error_message([&] { layer.forward(x); }), Contains("boom"));
  }
}

TEST_CASE("A thread held up in one item does not hold up the rest of the loop", "[parallel]") {
  // As when the system deschedules one of moe's threads for another process: the other thread takes
  // every block that is left while the first is stuck in item 0.
  Threads scope(2);
  constexpr Index items = 64;
  std::vector<std::thread::id> ran_on(items);
  moe::parallel_for("held up", items, [&](Index i) {
    ran_on[static_cast<std::size_t>(i)] = std::this_thread::get_id();
    if (i == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  });
  const Index block = items / 8;  // four blocks per thread
  for (Index i = 1; i < block; ++i) CHECK(ran_on[static_cast<std::size_t>(i)] == ran_on[0]);
  for (Index i = block; i < items; ++i) {
    INFO("item " << i);
    CHECK(ran_on[static_cast<std::size_t>(i)] != ran_on[0]);
  }
}

TEST_CASE("A loop inside a loop's body runs on the thread of that body", "[parallel]") {
  Threads scope(2);
  std::vector<int> nested_elsewhere(16, 0);
  moe::parallel_for(16, [&](Index i) {
    const std::thread::id outer = std::this_thread::get_id();
    moe::parallel_for(8, [&](Index) {
      if (std::this_thread::get_id() != outer) ++nested_elsewhere[static_cast<std::size_t>(i)];
    });
  });
  CHECK(nested_elsewhere == std::vector<int>(16, 0));
}

TEST_CASE("Loops started from two threads at once both finish with every item run once", "[parallel]") {
  Threads scope(2);
  std::vector<std::vector<int>> counts(2, std::vector<int>(256, 0));
  const auto loops = [&](std::size_t which) {
    for (int round = 0; round < 200; ++round)
      moe::parallel_for(256, [&](Index i) { ++counts[which][static_cast<std::size_t>(i)]; });
  };
  std::thread other(loops, 1);
  loops(0);
  other.join();
  CHECK(counts[0] == std::vector<int>(256, 200));
  CHECK(counts[1] == std::vector<int>(256, 200));
}

TEST_CASE("moe's idle threads sleep instead of spinning", "[parallel]") {
  // Waiting workers spin and yield for at most 2 ms, then block: an idle process beside other work takes
  // no CPU from it.
  Threads scope(2);
  std::vector<float> v(4096, 1.0f);
  moe::parallel_for(4096, [&](Index i) { v[static_cast<std::size_t>(i)] *= 2.0f; });
  const auto cpu_seconds = [] {
    timespec now{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
  };
  const double before = cpu_seconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(cpu_seconds() - before < 0.03);
}

TEST_CASE("The default thread count is the first number of OMP_NUM_THREADS, else the CPUs", "[parallel]") {
  const char* saved = std::getenv("OMP_NUM_THREADS");
  const std::string previous = saved != nullptr ? saved : "";
  setenv("OMP_NUM_THREADS", "3", 1);
  CHECK(moe::detail::default_thread_count() == 3);
  setenv("OMP_NUM_THREADS", "5,2", 1);
  CHECK(moe::detail::default_thread_count() == 5);
  unsetenv("OMP_NUM_THREADS");
  const int cpus = moe::detail::default_thread_count();
  CHECK(cpus >= 1);
  for (const char* bad : {"0", "-2", "two", ""}) {
    INFO("OMP_NUM_THREADS='" << bad << "'");
    setenv("OMP_NUM_THREADS", bad, 1);
    CHECK(moe::detail::default_thread_count() == cpus);
  }
  if (saved != nullptr)
    setenv("OMP_NUM_THREADS", previous.c_str(), 1);
  else
    unsetenv("OMP_NUM_THREADS");
}
