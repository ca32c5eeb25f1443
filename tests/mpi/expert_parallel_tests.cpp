// ExpertParallel against the single-process layer, run by ctest under mpirun with 1, 2 and 4 processes: the
// batch is split over the processes in rank order, and every process also runs the single-process layer on
// the whole batch (it is small) to compare with. `--abort` checks instead that a failure on one process ends
// all of them.
//
// A plain program rather than Catch2: a REQUIRE failing on one process would leave the others waiting in a
// collective. Every check here runs on every process; the failures are summed over processes at the end.

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/mpi/comm.hpp"
#include "backends/mpi/data_parallel.hpp"
#include "backends/mpi/expert_parallel.hpp"
#include "backends/mpi/run_or_abort.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"
#include "moe/core/random.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/linear.hpp"
#include "moe/optim/optimizer.hpp"
#include "moe/routing/softmax_top_k.hpp"

#include "../balancers.hpp"

namespace {

using moe::Index;
using S = float;
using Matrix = moe::MatrixX<S>;
using moe::backends::Cpu;
using moe::backends::MpiComm;
using ExpertParallel = moe::backends::ExpertParallel<>;
using Expert = moe::FeedForward<moe::GELU, S>;
using moe::test::SwitchAndBias;
template <template <class> class Balancer, class Backend>
using Layer = moe::MoELayer<Expert, moe::SoftmaxTopK, 2, Balancer, Backend>;

// 16 floats a row: 64 bytes, so every block of rows starts as aligned as in one process.
constexpr Index d_model = 16, hidden = 32, num_experts = 4, tokens = 32, steps = 20;

struct Checks {
  int rank = 0;
  int failed = 0;

  void expect(bool ok, const std::string& what) {
    if (ok) return;
    ++failed;
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what.c_str());
  }
  /// An error from `body` whose message holds every one of `parts`.
  template <class Body>
  void expect_error(Body&& body, const std::vector<std::string>& parts, const std::string& what) {
    try {
      body();
      expect(false, what + ": no error");
    } catch (const moe::Error& error) {
      const std::string message = error.what();
      for (const auto& part : parts)
        expect(message.find(part) != std::string::npos, what + ": \"" + message + "\" does not name " + part);
    }
  }
};

Matrix random_matrix(Index rows, Index cols, std::uint64_t seed) {
  moe::Rng rng(seed);
  Matrix m(rows, cols);
  moe::fill_uniform(m, rng, -1.0, 1.0);
  return m;
}

/// This process's share of a batch: rows [rank T / P, (rank + 1) T / P).
template <class M>
auto share(const M& m, const MpiComm& comm) {
  const Index rows = m.rows() / comm.size();
  return m.middleRows(comm.rank() * rows, rows);
}

bool same_bits(const moe::StateDict<S>& a, const moe::StateDict<S>& b) {
  return std::ranges::equal(a, b, [](const auto& x, const auto& y) {
    return x.first == y.first && x.second.shape == y.second.shape && x.second.data == y.second.data;
  });
}

double max_abs(const Eigen::Ref<const Matrix>& m) { return m.size() ? m.cwiseAbs().maxCoeff() : 0.0; }
double relative_difference(const Eigen::Ref<const Matrix>& a, const Eigen::Ref<const Matrix>& b) {
  return max_abs(a - b) / std::max(max_abs(b), 1e-30);
}

template <template <class> class Balancer, class Backend>
typename Layer<Balancer, Backend>::Options layer_options(Index d = d_model, Index experts = num_experts) {
  typename Layer<Balancer, Backend>::Options options;
  options.d_model = d;
  options.num_experts = experts;
  options.expert.hidden = hidden;
  return options;
}

/// The sequence-wise loss over sequences of 4 rows: every process holds whole sequences.
template <template <class> class Balancer, class Backend>
typename Layer<Balancer, Backend>::Options balanced_options() {
  auto options = layer_options<Balancer, Backend>();
  if constexpr (requires { options.balancer.sequence_length; }) options.balancer.sequence_length = 4;
  return options;
}

template <template <class> class Balancer>
void forward_and_backward(const MpiComm& comm, Checks& checks) {
  moe::Rng single_rng(11), parallel_rng(11);
  Layer<Balancer, Cpu> single(balanced_options<Balancer, Cpu>(), single_rng);
  Layer<Balancer, ExpertParallel> parallel(balanced_options<Balancer, ExpertParallel>(), parallel_rng);
  const Matrix x = random_matrix(tokens, d_model, 1), dy = random_matrix(tokens, d_model, 2);
  const Matrix y_single = single.forward(x);
  const Matrix dx_single = single.backward(dy);
  const Matrix y = parallel.forward(share(x, comm));
  // Each process's loss is P times its share of the batch's (data parallelism averages over processes);
  // scaling by P = 1, 2, 4 is exact. The products of a process's share of the rows (the router's) may round
  // otherwise than those of the whole batch (oneDNN picks its kernel by shape): within 1e-5 relative.
  const S processes = static_cast<S>(comm.size());
  const Matrix dx = parallel.backward(processes * share(dy, comm));

  checks.expect(relative_difference(y, share(y_single, comm)) <= 1e-5,
                "forward: the outputs differ from one process's by " +
                    std::to_string(relative_difference(y, share(y_single, comm))) + " relative");
  checks.expect(relative_difference(dx / processes, share(dx_single, comm)) <= 1e-5,
                "backward: dx differs from one process's by " +
                    std::to_string(relative_difference(dx / processes, share(dx_single, comm))) + " relative");
  checks.expect(parallel.routing().experts == share(single.routing().experts, comm), "forward: routing differs");
  const double aux = moe::backends::mean_over_processes(comm, parallel.aux_loss());
  checks.expect(std::abs(aux - single.aux_loss()) <= 1e-6 * std::abs(single.aux_loss()),
                "aux loss " + std::to_string(aux) + ", one process " + std::to_string(single.aux_loss()));

  const auto held = parallel.experts().named_parameters();
  moe::backends::average_gradients(comm, parallel.named_parameters(), held);
  const auto single_parameters = single.named_parameters();
  for (const auto& p : parallel.named_parameters()) {
    const auto& reference = *std::find_if(single_parameters.begin(), single_parameters.end(),
                                          [&](const auto& q) { return q.name == p.name; });
    const Matrix grad = p.parameter->grad, grad_single = reference.parameter->grad;
    checks.expect(relative_difference(grad, grad_single) <= 1e-5,
                  "backward: gradient of " + p.name + " differs from one process's by " +
                      std::to_string(relative_difference(grad, grad_single)) + " relative");
  }
  checks.expect(static_cast<Index>(held.size()) == 4 * num_experts / comm.size(),
                "the process holds " + std::to_string(held.size()) + " expert tensors");
}

void bias_update(const MpiComm& comm, Checks& checks) {
  auto single_options = layer_options<moe::AuxLossFree, Cpu>();
  auto parallel_options = layer_options<moe::AuxLossFree, ExpertParallel>();
  single_options.balancer.gamma = parallel_options.balancer.gamma = 0.05;
  moe::Rng single_rng(12), parallel_rng(12);
  Layer<moe::AuxLossFree, Cpu> single(single_options, single_rng);
  Layer<moe::AuxLossFree, ExpertParallel> parallel(parallel_options, parallel_rng);
  const Matrix x = random_matrix(tokens, d_model, 3);
  for (int step = 0; step < 4; ++step) {
    single.forward(x);
    single.update_balancing();
    parallel.forward(share(x, comm));
    parallel.update_balancing();
    checks.expect(parallel.routing().experts == share(single.routing().experts, comm),
                  "bias update: routing differs at step " + std::to_string(step));
  }
  checks.expect(parallel.balancer().bias() == single.balancer().bias(), "bias update: biases differ");
  checks.expect(!single.balancer().bias().isZero(), "bias update: the biases never moved");
}

/// x -> Linear -> MoE (Switch aux loss and aux-loss-free bias) -> y, loss 0.5 mean_t |y_t - target_t|^2 + aux.
template <class Backend>
struct Model {
  using Scalar = S;
  using MoE = Layer<SwitchAndBias, Backend>;

  moe::Rng rng;
  moe::Linear<S> input;
  MoE moe_layer;

  explicit Model(std::uint64_t seed)
      : rng(seed), input(d_model, d_model, rng), moe_layer(options(), rng) {}

  static typename MoE::Options options() {
    auto o = layer_options<SwitchAndBias, Backend>();
    std::get<1>(o.balancer).gamma = 1e-2;
    return o;
  }

  moe::ParameterList<S> named_parameters() {
    moe::ParameterList<S> list;
    moe::append_prefixed(list, input.named_parameters(), "input.");
    moe::append_prefixed(list, moe_layer.named_parameters(), "moe.");
    return list;
  }
  moe::BufferList<S> named_buffers() {
    moe::BufferList<S> list;
    moe::append_prefixed(list, moe_layer.named_buffers(), "moe.");
    return list;
  }

  const Matrix& forward(const Eigen::Ref<const Matrix>& x) { return moe_layer.forward(input.forward(x)); }

  /// The loss of this process's rows; leaves the gradients.
  double loss_and_backward(const Eigen::Ref<const Matrix>& x, const Eigen::Ref<const Matrix>& target) {
    const Matrix y = forward(x);
    const Matrix error = y - target;
    const S scale = S(1) / static_cast<S>(x.rows());
    input.backward(moe_layer.backward(scale * error));
    return 0.5 * static_cast<double>(scale) * static_cast<double>(error.squaredNorm()) + moe_layer.aux_loss();
  }
};

void training_run(const MpiComm& comm, Checks& checks) {
  const Matrix x = random_matrix(tokens, d_model, 4), target = random_matrix(tokens, d_model, 5);
  Model<Cpu> single(21);
  Model<ExpertParallel> parallel(21);
  moe::Adam<S> single_optimizer(single.named_parameters(), {.lr = 1e-2});
  moe::Adam<S> parallel_optimizer(parallel.named_parameters(), {.lr = 1e-2});
  const auto held = parallel.moe_layer.experts().named_parameters();
  double worst = 0.0;
  for (int step = 0; step < steps; ++step) {
    single_optimizer.zero_grad();
    const double single_loss = single.loss_and_backward(x, target);
    single_optimizer.step();
    single.moe_layer.update_balancing();

    parallel_optimizer.zero_grad();
    const double loss =
        moe::backends::mean_over_processes(comm, parallel.loss_and_backward(share(x, comm), share(target, comm)));
    moe::backends::average_gradients(comm, parallel.named_parameters(), held);
    parallel_optimizer.step();
    parallel.moe_layer.update_balancing();
    worst = std::max(worst, std::abs(loss - single_loss) / std::abs(single_loss));
  }
  checks.expect(worst <= 1e-5, "training: losses differ by up to " + std::to_string(worst) + " relative");
  checks.expect(parallel.moe_layer.routing().experts == share(single.moe_layer.routing().experts, comm),
                "training: routing differs after " + std::to_string(steps) + " steps");
  if (comm.rank() == 0)
    std::printf("P = %d: max relative loss difference from one process over %d steps: %.3g\n", comm.size(),
                static_cast<int>(steps), worst);

  // Checkpoint: one state dict with one process's names, loaded back into any number of processes.
  const moe::StateDict<S> mine = moe::state_dict(parallel);
  const moe::StateDict<S> whole = moe::backends::gather_state_dict(comm, mine);
  std::vector<Index> pids;
  comm.allgather(std::vector<Index>{static_cast<Index>(getpid())}, pids);
  const auto path = std::filesystem::temp_directory_path() /
                    ("moe_expert_parallel_" + std::to_string(pids[0]) + "_" + std::to_string(comm.size()) +
                     ".safetensors");
  if (comm.rank() == 0) {
    const moe::StateDict<S> reference = moe::state_dict(single);
    checks.expect(whole.size() == reference.size(), "checkpoint: " + std::to_string(whole.size()) +
                                                        " tensors, one process has " + std::to_string(reference.size()));
    for (const auto& [name, tensor] : reference) {
      const auto found = whole.find(name);
      if (found == whole.end()) {
        checks.expect(false, "checkpoint: no tensor " + name);
        continue;
      }
      const double difference = (found->second.data - tensor.data).cwiseAbs().maxCoeff();
      checks.expect(found->second.shape == tensor.shape && difference <= 1e-4,
                    "checkpoint: " + name + " differs from one process's by " + std::to_string(difference));
    }
    moe::save_safetensors(path, whole);
  }
  MPI_Barrier(comm.handle());
  const auto file = moe::load_safetensors<S>(path);
  Model<ExpertParallel> restored(99);
  moe::backends::load_held_state_dict(restored, file.tensors);
  checks.expect(same_bits(moe::state_dict(restored), mine), "checkpoint: the restored process's tensors differ");
  Model<Cpu> one_process(99);
  moe::load_state_dict(one_process, file.tensors);
  checks.expect(relative_difference(restored.forward(share(x, comm)), share(one_process.forward(x), comm)) <= 1e-5,
                "checkpoint: the restored layer's output differs from one process's with the same file");
  MPI_Barrier(comm.handle());
  if (comm.rank() == 0) std::filesystem::remove(path);
}

void errors(const MpiComm& comm, Checks& checks) {
  if (comm.size() == 1) return;  // what follows needs several processes
  const std::string processes = std::to_string(comm.size());
  checks.expect_error(
      [&] {
        moe::Rng rng(1);
        Layer<moe::SwitchAuxLoss, ExpertParallel> layer(layer_options<moe::SwitchAuxLoss, ExpertParallel>(d_model, 3),
                                                        rng);
      },
      {"3 experts", processes + " equal blocks"}, "3 experts over " + processes + " processes");

  const Index d = comm.rank() == 0 ? d_model : d_model + 1;
  moe::Rng rng(1);
  Layer<moe::NoBalancing, ExpertParallel> layer(layer_options<moe::NoBalancing, ExpertParallel>(d), rng);
  checks.expect_error([&] { layer.forward(random_matrix(4, d, 1)); },
                      {"d_model", "rank 0 has 16", "rank 1 has 17"}, "d_model differing between processes");
  checks.expect_error([&] { layer.expert((comm.rank() + 1) % comm.size() * (num_experts / comm.size())); },
                      {"not held by this process"}, "another process's expert");
  checks.expect_error(
      [&] {
        moe::ParameterList<S> list = layer.router().named_parameters();
        moe::backends::average_gradients(comm, list, {});
      },
      {"average_gradients", "rank 0 has 64", "rank 1 has 68"}, "parameters differing between processes");

  auto capped = layer_options<moe::NoBalancing, ExpertParallel>();
  capped.capacity_factor = 1.0;
  Layer<moe::NoBalancing, ExpertParallel> capped_layer(capped, rng);
  checks.expect_error([&] { capped_layer.forward(random_matrix(4, d_model, 1)); }, {"dropless"},
                      "a capacity spread over processes");
}

/// The last process fails after forward (its input is not finite) while the others go on into backward:
/// every process must end, with the failing rank and the cause on stderr.
int failing_run(const MpiComm& comm) {
  auto options = layer_options<moe::NoBalancing, ExpertParallel>();
  options.check_finite = true;
  moe::Rng rng(1);
  Layer<moe::NoBalancing, ExpertParallel> layer(options, rng);
  Matrix x = random_matrix(4, d_model, 1);
  if (comm.rank() == comm.size() - 1) x(0, 0) = std::nan("");
  layer.forward(x);
  layer.backward(random_matrix(4, d_model, 2));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const bool abort_check = argc > 1 && std::string(argv[1]) == "--abort";
  const int code = moe::backends::run_or_abort(MPI_COMM_WORLD, [&] {
    const MpiComm comm;
    if (abort_check) return failing_run(comm);
    Checks checks{comm.rank()};
    forward_and_backward<moe::SwitchAuxLoss>(comm, checks);
    forward_and_backward<moe::SequenceAuxLoss>(comm, checks);
    bias_update(comm, checks);
    training_run(comm, checks);
    errors(comm, checks);
    int failed = checks.failed;
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_SUM, comm.handle());
    if (comm.rank() == 0)
      std::printf("%s: %d failed checks over %d processes\n", failed ? "FAILED" : "passed", failed, comm.size());
    return failed ? 1 : 0;
  });
  MPI_Finalize();
  return code;
}
