// The all-to-all MoE layer (ExpertParallel over MPI) against the same layer in one process, in one run:
//
//   mpirun -np P build/bin/expert_parallel_bench [--tokens T] [--steps S]
//
// Each step is forward + backward of one MoE layer on a batch of T tokens split over the P processes.
// Prints one markdown table row: tokens/s of the sharded layer (slowest process), seconds per step in its
// collectives (mean and max over processes: the all-to-all and the processes waiting for each other), and
// the one-process layer (the CPU backend on the whole batch, run by every process at once, mean) for the
// ratio. A plain timed loop, not Google Benchmark: its adaptive iteration count would differ between
// processes, whose collectives must match.

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/mpi/comm.hpp"
#include "backends/mpi/expert_parallel.hpp"
#include "backends/mpi/run_or_abort.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/core/error.hpp"
#include "moe/core/random.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/softmax_top_k.hpp"

namespace {

using moe::Index;
using Matrix = moe::MatrixX<float>;
template <class Backend>
using Layer = moe::MoELayer<moe::FeedForward<moe::GELU, float>, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss, Backend>;

constexpr Index d_model = 128, hidden = 256, num_experts = 16;

template <class Backend>
typename Layer<Backend>::Options options() {
  typename Layer<Backend>::Options o;
  o.d_model = d_model;
  o.num_experts = num_experts;
  o.expert.hidden = hidden;
  return o;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

/// Seconds for `steps` forward + backward steps of `layer`, after one step to warm its buffers.
template <class L>
double time_steps(L& layer, const Matrix& x, const Matrix& dy, Index steps) {
  layer.forward(x);
  layer.backward(dy);
  const double start = now();
  for (Index s = 0; s < steps; ++s) {
    layer.forward(x);
    layer.backward(dy);
  }
  return now() - start;
}

Index option(int argc, char** argv, const std::string& name, Index fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) {
      const long long value = std::atoll(argv[i + 1]);
      moe::detail::require(value > 0, "expert_parallel_bench: ", name, " must be a positive integer, got ", argv[i + 1]);
      return static_cast<Index>(value);
    }
  return fallback;
}

int run(int argc, char** argv) {
  const moe::backends::MpiComm comm;
  const Index tokens = option(argc, argv, "--tokens", 2048), steps = option(argc, argv, "--steps", 10);
  moe::detail::require(tokens % comm.size() == 0, "expert_parallel_bench: --tokens ", tokens,
                       " cannot be split evenly over ", comm.size(), " processes");
  moe::Rng data_rng(1);
  Matrix x(tokens, d_model), dy(tokens, d_model);
  moe::fill_uniform(x, data_rng, -1.0, 1.0);
  moe::fill_uniform(dy, data_rng, -1.0, 1.0);
  const Index share = tokens / comm.size();
  const Matrix local_x = x.middleRows(comm.rank() * share, share), local_dy = dy.middleRows(comm.rank() * share, share);

  moe::Rng rng(2);
  Layer<moe::backends::ExpertParallel<>> sharded(options<moe::backends::ExpertParallel<>>(), rng);
  MPI_Barrier(comm.handle());
  const double communication_before = sharded.backend().communication_seconds();
  const double seconds = time_steps(sharded, local_x, local_dy, steps);
  const double communication = sharded.backend().communication_seconds() - communication_before;
  // The one-process layer on the whole batch, on every process at once: the machine as busy as in the
  // sharded run, and no process spinning in MPI while another is timed.
  moe::Rng one_rng(2);
  Layer<moe::backends::Cpu> one(options<moe::backends::Cpu>(), one_rng);
  MPI_Barrier(comm.handle());
  const double own_seconds = time_steps(one, x, dy, steps);
  std::vector<double> all_seconds, all_communication, all_one_seconds;
  comm.allgather(std::vector<double>{seconds}, all_seconds);
  comm.allgather(std::vector<double>{communication}, all_communication);
  comm.allgather(std::vector<double>{own_seconds}, all_one_seconds);

  if (comm.rank() != 0) return 0;
  double one_seconds = 0.0;
  for (const double s : all_one_seconds) one_seconds += s / static_cast<double>(all_one_seconds.size());
  const double slowest = *std::max_element(all_seconds.begin(), all_seconds.end());
  double mean_communication = 0.0;
  for (const double c : all_communication) mean_communication += c / static_cast<double>(all_communication.size());
  const double max_communication = *std::max_element(all_communication.begin(), all_communication.end());
  const double per_step = static_cast<double>(steps);
  const double rate = static_cast<double>(tokens * steps) / slowest, one_rate = static_cast<double>(tokens * steps) / one_seconds;
  std::printf("| P | tokens/step | sharded tokens/s | s/step | in collectives s/step (mean, max) | share of step | "
              "one-process tokens/s | sharded / one process |\n|---|---|---|---|---|---|---|---|\n");
  std::printf("| %d | %lld | %.0f | %.4f | %.4f, %.4f | %.1f%% | %.0f | %.2f |\n", comm.size(),
              static_cast<long long>(tokens), rate, slowest / per_step, mean_communication / per_step,
              max_communication / per_step, 100.0 * mean_communication / slowest, one_rate, rate / one_rate);
  std::printf("(layer: %lld GELU experts, d_model %lld, hidden %lld, K = 2, %lld timed steps of forward + backward)\n",
              static_cast<long long>(num_experts), static_cast<long long>(d_model), static_cast<long long>(hidden),
              static_cast<long long>(steps));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int code = moe::backends::run_or_abort(MPI_COMM_WORLD, [&] { return run(argc, argv); });
  MPI_Finalize();
  return code;
}
