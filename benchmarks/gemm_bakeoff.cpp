// The GEMM bake-off of issue 14: candidate engines on the products one MoE expert runs in forward and
// backward (and the router's), on the configurations of common.hpp, the way the CPU backend calls them:
// single-threaded per expert, one expert per thread, all threads at once (two experts on two cores by
// default). Prints GFLOP/s and the share of the FMA peak measured in the same run, and checks each engine's
// products bit for bit against its own one-thread result while another thread calls it too.
//
//   gemm_bakeoff [--threads N] [--seconds S] [--runs R] [--configs C1,C2,...] [--trials T] [NAME=LIBRARY ...]
//
// NAME=LIBRARY: a BLAS with a CBLAS interface (OpenBLAS, BLIS) loaded with dlopen, so that builds whose
// symbols clash (Debian's OpenBLAS for OpenMP, pthreads or none) run in one process. Eigen (as compiled:
// EIGEN_USE_BLAS in gemm_bakeoff_eigen_blas, which then calls the libblas.so.3 the loader finds) and
// oneDNN's dnnl_sgemm (when built with it) are always measured. Each engine is told to use one thread per
// call: openblas_set_num_threads(1), bli_thread_set_num_threads(1), and for oneDNN (OpenMP runtime) the
// calling thread's OpenMP thread count.

#include <dlfcn.h>
#include <omp.h>

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common.hpp"
#include "fma_peak.hpp"

#ifdef MOE_BAKEOFF_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

namespace {

using moe_bench::Config;
using Index = std::int64_t;
using Clock = std::chrono::steady_clock;
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// C (m x n) = op(A) op(B) + beta C, all row-major; op(X) is X^T when its flag is set (A stored k x m).
struct Product {
  std::string name;
  bool trans_a, trans_b;
  Index m, n, k;
  float beta;
  double flops() const { return 2.0 * double(m) * double(n) * double(k); }
};

/// The products of one expert on its T*K/N rows (Linear's: y = x W^T, dW += dy^T x, dx = dy W), and the
/// router's scores on half of the tokens (each thread one half).
std::vector<Product> products(const Config& c) {
  const Index r = c.rows_per_expert();
  return {
      {"fwd fc1: X W1^T", false, true, r, c.h, c.d, 0.0f},
      {"fwd fc2: H W2^T", false, true, r, c.d, c.h, 0.0f},
      {"bwd dW2 += dY^T H", true, false, c.d, c.h, r, 1.0f},
      {"bwd dH = dY W2", false, false, r, c.h, c.d, 0.0f},
      {"bwd dW1 += dH^T X", true, false, c.h, c.d, r, 1.0f},
      {"bwd dX = dH W1", false, false, r, c.d, c.h, 0.0f},
      {"router: X Wr^T", false, true, c.tokens / 2, c.experts, c.d, 0.0f},
  };
}

using Gemm = std::function<void(const Product&, const float* a, const float* b, float* c)>;

struct Engine {
  std::string name;
  Gemm gemm;
  std::function<void()> one_thread;  // called on each calling thread before it calls gemm
};

template <bool TA, bool TB>
void eigen_gemm(const Product& p, const float* a, const float* b, float* c) {
  using Map = Eigen::Map<const RowMajor>;
  const Map ma(a, TA ? p.k : p.m, TA ? p.m : p.k), mb(b, TB ? p.n : p.k, TB ? p.k : p.n);
  Eigen::Map<RowMajor> mc(c, p.m, p.n);
  auto op_a = [&] {
    if constexpr (TA) return ma.transpose();
    else return ma;
  }();
  auto op_b = [&] {
    if constexpr (TB) return mb.transpose();
    else return mb;
  }();
  if (p.beta == 0.0f)
    mc.noalias() = op_a * op_b;
  else
    mc.noalias() += op_a * op_b;
}

Engine eigen_engine() {
#ifdef EIGEN_USE_BLAS
  const char* name = "eigen+blas";
#else
  const char* name = "eigen";
#endif
  return {name,
          [](const Product& p, const float* a, const float* b, float* c) {
            if (p.trans_a)
              p.trans_b ? eigen_gemm<true, true>(p, a, b, c) : eigen_gemm<true, false>(p, a, b, c);
            else
              p.trans_b ? eigen_gemm<false, true>(p, a, b, c) : eigen_gemm<false, false>(p, a, b, c);
          },
          [] {
#ifdef EIGEN_USE_BLAS
            // The BLAS behind Eigen, on one thread per call when it is an OpenBLAS.
            if (auto set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
#endif
          }};
}

#ifdef MOE_BAKEOFF_DNNL
Engine onednn_engine() {
  return {"onednn",
          [](const Product& p, const float* a, const float* b, float* c) {
            const dnnl_status_t status =
                dnnl_sgemm(p.trans_a ? 'T' : 'N', p.trans_b ? 'T' : 'N', p.m, p.n, p.k, 1.0f, a, p.trans_a ? p.m : p.k,
                           b, p.trans_b ? p.k : p.n, p.beta, c, p.n);
            if (status != dnnl_success) {
              std::fprintf(stderr, "dnnl_sgemm failed: %d\n", int(status));
              std::exit(1);
            }
          },
          [] { omp_set_num_threads(1); }};
}
#endif

using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                            int);

/// A CBLAS library by path, with its own symbols (RTLD_LOCAL).
Engine cblas_engine(const std::string& name, const std::string& path) {
  void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    std::fprintf(stderr, "gemm_bakeoff: cannot load %s: %s\n", path.c_str(), dlerror());
    std::exit(1);
  }
  auto sgemm = reinterpret_cast<CblasSgemm>(dlsym(library, "cblas_sgemm"));
  if (sgemm == nullptr) {
    std::fprintf(stderr, "gemm_bakeoff: %s has no cblas_sgemm\n", path.c_str());
    std::exit(1);
  }
  std::string label = name;
  std::function<void()> one_thread = [] {};
  if (auto set = reinterpret_cast<void (*)(int)>(dlsym(library, "openblas_set_num_threads"))) {
    one_thread = [set] { set(1); };
    if (auto core = reinterpret_cast<const char* (*)()>(dlsym(library, "openblas_get_corename")))
      label += std::string(" (") + core() + ")";
  } else if (auto set_blis = reinterpret_cast<void (*)(long)>(dlsym(library, "bli_thread_set_num_threads"))) {
    one_thread = [set_blis] { set_blis(1); };
  }
  constexpr int row_major = 101, no_trans = 111, trans = 112;
  return {label,
          [sgemm](const Product& p, const float* a, const float* b, float* c) {
            sgemm(row_major, p.trans_a ? trans : no_trans, p.trans_b ? trans : no_trans, int(p.m), int(p.n), int(p.k),
                  1.0f, a, int(p.trans_a ? p.m : p.k), b, int(p.trans_b ? p.k : p.n), p.beta, c, int(p.n));
          },
          one_thread};
}

/// One thread's operands: its own expert.
struct Operands {
  std::vector<float> a, b, c;
  Operands(const Product& p, unsigned seed) : a(std::size_t(p.m * p.k)), b(std::size_t(p.k * p.n)), c(std::size_t(p.m * p.n)) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& v : a) v = normal(rng);
    for (float& v : b) v = normal(rng);
    for (float& v : c) v = normal(rng);
  }
};

/// `threads` threads, each calling the engine on its own operands at once, the same number of times.
class Measurement {
 public:
  Measurement(const Engine& engine, const Product& p, int threads, double seconds)
      : engine_(engine), product_(p), threads_(threads) {
    for (int t = 0; t < threads; ++t) operands_.emplace_back(p, 1000u + unsigned(t));
    // Calibration: one warm call, then one timed call, on one thread.
#pragma omp parallel num_threads(1)
    {
      engine.one_thread();
      call(0);
      const auto start = Clock::now();
      call(0);
      const double once = std::chrono::duration<double>(Clock::now() - start).count();
      iterations_ = std::max(1L, long(seconds / std::max(once, 1e-7)));
    }
  }

  /// GFLOP/s of all threads in one timed run.
  double run() {
    double elapsed = 0;
#pragma omp parallel num_threads(threads_)
    {
      engine_.one_thread();
      const int t = omp_get_thread_num();
#pragma omp barrier
      const auto start = Clock::now();
      for (long i = 0; i < iterations_; ++i) call(t);
#pragma omp barrier
#pragma omp master
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    }
    return double(threads_) * double(iterations_) * product_.flops() / elapsed * 1e-9;
  }

 private:
  void call(int thread) {
    Operands& o = operands_[std::size_t(thread)];
    engine_.gemm(product_, o.a.data(), o.b.data(), o.c.data());
  }

  const Engine& engine_;
  Product product_;
  int threads_;
  long iterations_ = 1;
  std::vector<Operands> operands_;
};

/// Trials in which some thread's product differed in any bit from the engine's one-thread result on the
/// same operands, out of `trials`, with `threads` threads calling the engine at once.
int mismatches(const Engine& engine, Product p, int threads, int trials) {
  p.beta = 0.0f;
  std::vector<Operands> operands;
  std::vector<std::vector<float>> expected;
  for (int t = 0; t < threads; ++t) operands.emplace_back(p, 2000u + unsigned(t));
#pragma omp parallel num_threads(1)
  {
    engine.one_thread();
    for (auto& o : operands) {
      engine.gemm(p, o.a.data(), o.b.data(), o.c.data());
      expected.push_back(o.c);
    }
  }
  int failed = 0;
  for (int trial = 0; trial < trials; ++trial) {
    bool differs = false;
#pragma omp parallel num_threads(threads) reduction(|| : differs)
    {
      engine.one_thread();
      const auto t = std::size_t(omp_get_thread_num());
      Operands& mine = operands[t];
      std::fill(mine.c.begin(), mine.c.end(), std::nanf(""));
#pragma omp barrier
      engine.gemm(p, mine.a.data(), mine.b.data(), mine.c.data());
      differs = std::memcmp(mine.c.data(), expected[t].data(), mine.c.size() * sizeof(float)) != 0;
    }
    failed += differs ? 1 : 0;
  }
  return failed;
}

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> items;
  std::stringstream stream(list);
  for (std::string item; std::getline(stream, item, ',');) items.push_back(item);
  return items;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, trials = 50, runs = 3;
  double seconds = 0.15;
  std::vector<std::string> wanted;
  std::vector<Engine> engines{eigen_engine()};
#ifdef MOE_BAKEOFF_DNNL
  engines.push_back(onednn_engine());
#endif
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "gemm_bakeoff: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (arg == "--threads") threads = std::atoi(value().c_str());
    else if (arg == "--seconds") seconds = std::atof(value().c_str());
    else if (arg == "--runs") runs = std::atoi(value().c_str());
    else if (arg == "--trials") trials = std::atoi(value().c_str());
    else if (arg == "--configs") wanted = split(value());
    else if (const auto eq = arg.find('='); eq != std::string::npos && arg[0] != '-')
      engines.push_back(cblas_engine(arg.substr(0, eq), arg.substr(eq + 1)));
    else {
      std::fprintf(stderr, "usage: gemm_bakeoff [--threads N] [--seconds S] [--configs C1,..] [--runs R] [--trials T] [NAME=LIBRARY ...]\n");
      return 2;
    }
  }
  // Every product is measured first and printed at the end, as a share of the highest FMA peak of the run: on
  // a shared machine the load comes and goes, and the highest peak is the nearest to the machine's.
  struct Row {
    std::string config, product;
    Product shape;
    std::vector<double> rates;  // per engine, GFLOP/s
  };
  std::vector<Row> rows;
  double peak = 0;
  for (const Config& c : moe_bench::configs()) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), c.name) == wanted.end()) continue;
    for (const Product& p : products(c)) {
      std::vector<Measurement> measurements;
      for (const Engine& e : engines) measurements.emplace_back(e, p, threads, seconds);
      Row row{c.name, p.name, p, std::vector<double>(engines.size())};
      for (int run = 0; run < runs; ++run) {
        peak = std::max(peak, moe_bench::fma_peak_gflops(threads, 0.05, 1));
        for (std::size_t e = 0; e < engines.size(); ++e) row.rates[e] = std::max(row.rates[e], measurements[e].run());
      }
      rows.push_back(row);
      std::fprintf(stderr, "gemm_bakeoff: %s %s measured\n", c.name, p.name.c_str());
    }
  }
  std::printf("%d thread(s), one expert each, all at once. GFLOP/s of all threads, the best of %d runs of about "
              "%.2f s, engines taking turns within a run; in brackets the share of the run's highest FP32 FMA peak "
              "on as many threads, %.0f GFLOP/s (%zu-bit vectors, measured before each run). Expert fwd / fwd+bwd: "
              "the first two / six products in sequence.\n\n",
              threads, runs, seconds, peak, 8 * sizeof(moe_bench::detail::FmaVector));
  std::printf("| config | product | m x n x k |");
  for (const Engine& e : engines) std::printf(" %s |", e.name.c_str());
  std::printf("\n|---|---|---|");
  for (std::size_t i = 0; i < engines.size(); ++i) std::printf("---:|");
  std::printf("\n");
  const std::size_t per_config = 7;
  for (std::size_t first = 0; first < rows.size(); first += per_config) {
    std::vector<double> fwd(engines.size()), all(engines.size());  // seconds per GFLOP summed
    double fwd_flops = 0, all_flops = 0;
    for (std::size_t i = 0; i < per_config; ++i) {
      const Row& row = rows[first + i];
      const Product& p = row.shape;
      std::printf("| %s | %s | %lld x %lld x %lld |", row.config.c_str(), row.product.c_str(), (long long)p.m,
                  (long long)p.n, (long long)p.k);
      for (std::size_t e = 0; e < engines.size(); ++e) {
        std::printf(" %.0f (%.0f%%) |", row.rates[e], 100.0 * row.rates[e] / peak);
        if (i < 2) fwd[e] += p.flops() / row.rates[e];
        if (i < 6) all[e] += p.flops() / row.rates[e];
      }
      if (i < 2) fwd_flops += p.flops();
      if (i < 6) all_flops += p.flops();
      std::printf("\n");
    }
    for (int mode = 0; mode < 2; ++mode) {
      std::printf("| %s | **expert %s** | |", rows[first].config.c_str(), mode == 0 ? "fwd" : "fwd+bwd");
      for (std::size_t e = 0; e < engines.size(); ++e) {
        const double rate = mode == 0 ? fwd_flops / fwd[e] : all_flops / all[e];
        std::printf(" **%.0f (%.0f%%)** |", rate, 100.0 * rate / peak);
      }
      std::printf("\n");
    }
  }
  if (trials > 0 && threads > 1) {
    std::printf("\nThread safety: trials (of %d per product, every product of C2 and N256) in which a product "
                "computed while %d threads called the engine differed from its one-thread result\n\n",
                trials, threads);
    for (const Engine& e : engines) {
      int failed = 0, total = 0;
      for (const char* name : {"C2", "N256"})
        for (const Config& c : moe_bench::configs())
          if (std::strcmp(c.name, name) == 0)
            for (const Product& p : products(c)) {
              failed += mismatches(e, p, threads, trials);
              total += trials;
            }
      std::printf("- %s: %d of %d\n", e.name.c_str(), failed, total);
    }
  }
  return 0;
}
