// The MoE layer beside other work: its throughput at two threads while another process keeps one CPU
// busy, against one thread alone (the goal: at least as fast), and at one and two threads on an idle
// machine. The competitor is a child process spinning on the last CPU this process may use; the layer's
// threads are left where the system puts them, as a user's would be.
//
//   build/bin/under_load [--config N8] [--backward] [--seconds 1] [--repeats 5]
//
// Each figure is the median of --repeats windows of --seconds, over the configurations of moe_bench
// (benchmarks/common.hpp). Figures compare within one run on one machine only.

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

using moe_bench::Config;
using moe_bench::Matrix;

struct Settings {
  std::string config = "N8";
  bool backward = false;
  double seconds = 1.0;
  int repeats = 5;
};

[[noreturn]] void usage(int status) {
  std::printf(
      "usage: under_load [--config NAME] [--backward] [--seconds S] [--repeats R]\n"
      "The MoE layer's tokens/s at 1 and 2 threads, idle and beside a process spinning on one CPU.\n"
      "  --config NAME  a configuration of moe_bench: C1, C2, C3, C4, N8 (default), N256\n"
      "  --backward     time forward + backward instead of forward\n"
      "  --seconds S    length of one timed window (default 1)\n"
      "  --repeats R    windows per figure, whose median is reported (default 5)\n");
  std::exit(status);
}

Settings parse(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "under_load: %s needs a value\n", arg.c_str());
        usage(2);
      }
      return argv[++i];
    };
    const auto number = [&](const std::string& text, double low) {
      char* end = nullptr;
      const double x = std::strtod(text.c_str(), &end);
      if (end == text.c_str() || *end != '\0' || !(x >= low)) {
        std::fprintf(stderr, "under_load: %s '%s': expected a number of at least %g\n", arg.c_str(), text.c_str(), low);
        usage(2);
      }
      return x;
    };
    if (arg == "--help" || arg == "-h") usage(0);
    if (arg == "--config") {
      s.config = value();
    } else if (arg == "--backward") {
      s.backward = true;
    } else if (arg == "--seconds") {
      s.seconds = number(value(), 0.01);
    } else if (arg == "--repeats") {
      s.repeats = static_cast<int>(number(value(), 1));
    } else {
      std::fprintf(stderr, "under_load: unknown argument '%s'\n", arg.c_str());
      usage(2);
    }
  }
  return s;
}

/// A process that spins on `cpu` until it is killed.
class Competitor {
 public:
  explicit Competitor(int cpu) : pid_(fork()) {
    if (pid_ < 0) throw std::runtime_error("under_load: fork failed");
    if (pid_ == 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      sched_setaffinity(0, sizeof(set), &set);
      for (unsigned long spin = 0;; ++spin) asm volatile("" : "+r"(spin));  // a loop the compiler keeps
    }
  }
  ~Competitor() {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  Competitor(const Competitor&) = delete;
  Competitor& operator=(const Competitor&) = delete;

 private:
  pid_t pid_;
};

/// The last CPU this process may run on.
int last_cpu() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) throw std::runtime_error("under_load: sched_getaffinity failed");
  int last = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &set)) last = cpu;
  return last;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

template <int K>
class Timer {
 public:
  Timer(const Config& c, const Settings& s) : config_(c), settings_(s), layer_(moe_bench::make_layer<K>(c)) {
    // Three batches in turn, as moe_bench's moe_layer: the routing changes between calls.
    for (std::uint64_t b = 0; b < 3; ++b) xs_.push_back(moe_bench::random_matrix(c.tokens, c.d, 1 + 10 * b));
    dy_ = moe_bench::random_matrix(c.tokens, c.d, 2);
  }

  /// Tokens per second at `threads` threads: the median over the windows.
  double tokens_per_second(int threads) {
    moe::set_num_threads(threads);
    for (std::size_t b = 0; b < xs_.size(); ++b) call();  // untimed: buffers at their size, workers started
    std::vector<double> rates;
    for (int r = 0; r < settings_.repeats; ++r) {
      const auto start = std::chrono::steady_clock::now();
      double seconds = 0;
      long calls = 0;
      for (; seconds < settings_.seconds; ++calls) {
        call();
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      rates.push_back(static_cast<double>(calls * config_.tokens) / seconds);
    }
    std::sort(rates.begin(), rates.end());
    return rates[rates.size() / 2];
  }

 private:
  void call() {
    benchmark::DoNotOptimize(layer_.forward(xs_[next_]).data());
    if (settings_.backward) benchmark::DoNotOptimize(layer_.backward(dy_).data());
    next_ = (next_ + 1) % xs_.size();
  }

  Config config_;
  Settings settings_;
  moe_bench::Layer<K> layer_;
  std::vector<Matrix> xs_;
  Matrix dy_;
  std::size_t next_ = 0;
};

template <int K>
void run(const Config& c, const Settings& s) {
  Timer<K> timer(c, s);
  const int cpu = last_cpu();
  std::printf("under_load: %s %s (T %ld, d %ld, h %ld, N %ld, K %ld) on %s; median of %d windows of %g s\n\n",
              c.name, s.backward ? "forward+backward" : "forward", static_cast<long>(c.tokens),
              static_cast<long>(c.d), static_cast<long>(c.h), static_cast<long>(c.experts),
              static_cast<long>(c.k), cpu_model().c_str(), s.repeats, s.seconds);
  const double one_idle = timer.tokens_per_second(1);
  const double two_idle = timer.tokens_per_second(2);
  double one_loaded = 0, two_loaded = 0;
  {
    const Competitor competitor(cpu);
    two_loaded = timer.tokens_per_second(2);
    one_loaded = timer.tokens_per_second(1);
  }
  std::printf("| threads | beside | tokens/s | / 1 thread idle |\n|---:|---|---:|---:|\n");
  const auto row = [&](int threads, const std::string& beside, double rate) {
    std::printf("| %d | %s | %.0f | %.2f |\n", threads, beside.c_str(), rate, rate / one_idle);
  };
  const std::string busy = "a process spinning on CPU " + std::to_string(cpu);
  row(1, "nothing", one_idle);
  row(2, "nothing", two_idle);
  row(1, busy, one_loaded);
  row(2, busy, two_loaded);
  std::printf("\n2 threads beside the busy process / 1 thread idle: %.2f (goal: at least 1.00)\n",
              two_loaded / one_idle);
}

}  // namespace

int main(int argc, char** argv) {
  const Settings s = parse(argc, argv);
  const auto& configs = moe_bench::configs();
  const auto found = std::find_if(configs.begin(), configs.end(), [&](const Config& c) { return c.name == s.config; });
  if (found == configs.end()) {
    std::fprintf(stderr, "under_load: no configuration '%s' (C1, C2, C3, C4, N8, N256)\n", s.config.c_str());
    return 2;
  }
  try {
    moe_bench::with_k(*found, [&]<int K>() { run<K>(*found, s); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
