#pragma once
// ExpertParallel<Inner, Comm>: the experts of an MoE layer spread over the processes of a communicator, in
// contiguous blocks (GShard, Lepikhin et al. 2020; the layout of Megatron-Core, DeepSpeed-MoE and Tutel).
// Each process routes its own tokens; the all-to-all sits between the plan and the experts:
//
//   forward:  plan (all N experts) -> rows per expert to its owner (one message per process, plan order)
//             -> the owner's Inner backend runs its experts -> outputs back -> each token's K in slot order
//   backward: gate * dy per assignment out -> Inner backward (parameter gradients stay with the owner)
//             -> input gradients back -> d gates from dy and the returned outputs, summed per token in slot order
//
// Determinism: the tokens are split over the processes in rank order (process r holds a contiguous part of
// the batch), and an owner lays out each expert's rows source by source in rank order, each source's in its
// token order: the block an expert runs on is the block one process would give it, whatever the number of
// processes (a GEMM engine that picks its kernel by shape may still round the router's product over a
// process's share of the rows otherwise than over the whole batch). Dropless only: a capacity counts tokens per process and would drop other assignments than one
// process does.

#include <chrono>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "backends/cpu/cpu_backend.hpp"
#include "backends/cpu/dispatch.hpp"
#include "backends/mpi/comm.hpp"
#include "moe/backend.hpp"
#include "moe/core/error.hpp"
#include "moe/core/parallel.hpp"
#include "moe/core/types.hpp"
#include "moe/layer/expert_bank.hpp"
#include "moe/routing/routing.hpp"

namespace moe::backends {

/// What the user names: MoELayer<..., ExpertParallel<>> runs the experts of this process's block on `inner`
/// and exchanges rows with the other processes of `comm`.
template <class Inner = Cpu, class Comm = MpiComm>
struct ExpertParallel {
  Inner inner{};
  Comm comm{};

  /// This process's block of num_experts / P experts; N not a multiple of P is an error.
  ExpertRange held_experts(Index num_experts) const {
    const Index processes = comm.size();
    detail::require(num_experts % processes == 0, "ExpertParallel: ", num_experts, " experts cannot be split into ",
                    processes, " equal blocks (one per process): num_experts must be a multiple of the number of "
                    "processes");
    const Index per_process = num_experts / processes;
    return {comm.rank() * per_process, per_process};
  }

  template <class Bank>
  class Runner;
};

/// The processes of a communicator as the balancers see them.
template <class Comm>
class CommReplicas final : public ReplicaGroup {
 public:
  explicit CommReplicas(Comm comm) : comm_(std::move(comm)) {}
  Index size() const override { return comm_.size(); }
  void sum(IndexVector& values) const override { comm_.sum(values); }
  const Comm& comm() const { return comm_; }

 private:
  Comm comm_;
};

template <class Inner, class Comm>
template <class Bank>
class ExpertParallel<Inner, Comm>::Runner {
 public:
  using Scalar = typename Bank::Scalar;

  explicit Runner(const ExpertParallel& options) : replicas_(options.comm), inner_(options.inner) {}

  MatrixX<Scalar>& forward(Bank& bank, ConstRef<Scalar> x, const Routing<Scalar>& routing, Capacity capacity) {
    detail::require(capacity.limit == 0, "ExpertParallel: capacity ", capacity.limit,
                    " per expert; only dropless routing (capacity_factor 0) is spread over processes, since a "
                    "capacity counts the tokens of one process");
    const Comm& comm = replicas_.comm();
    const Index held = bank.size(), num_experts = held * comm.size(), k = routing.k();
    const Index d_model = x.cols(), width = bank.out_features();
    agree("forward", {{"the number of experts", num_experts}, {"d_model", d_model}, {"k", k},
                      {"the experts' output width", width}});
    cpu::plan(routing.experts, num_experts, Capacity{}, plan_);

    // The plan sorts the rows by expert, so by owner: process q's rows are one run.
    counts_.resize(static_cast<std::size_t>(num_experts));
    for (Index e = 0; e < num_experts; ++e) counts_[static_cast<std::size_t>(e)] = plan_.count(e);
    communicating([&] { comm.alltoall(counts_, received_counts_); });  // [source * held + local expert]
    const auto processes = static_cast<std::size_t>(comm.size());
    sent_rows_.assign(processes, 0);
    received_rows_.assign(processes, 0);
    for (std::size_t q = 0; q < processes; ++q)
      for (Index e = 0; e < held; ++e) {
        sent_rows_[q] += counts_[q * static_cast<std::size_t>(held) + static_cast<std::size_t>(e)];
        received_rows_[q] += received_counts_[q * static_cast<std::size_t>(held) + static_cast<std::size_t>(e)];
      }
    Index received = 0;
    for (const Index rows : received_rows_) received += rows;

    send_.resize(plan_.rows(), d_model);
    parallel_for(plan_.rows(), [&](Index r) { send_.row(r) = x.row(plan_.slot(r) / k); });
    received_input_.resize(received, d_model);
    exchange(send_, sent_rows_, received_input_, received_rows_);

    // Received rows are source-major, expert-minor; the inner plan's stable sort by expert then gives
    // each expert its rows source by source: the global token order.
    local_.experts.resize(received, 1);
    local_.gates.setOnes(received, 1);
    for (std::size_t q = 0, row = 0; q < processes; ++q)
      for (Index e = 0; e < held; ++e)
        for (Index i = 0; i < received_counts_[q * static_cast<std::size_t>(held) + static_cast<std::size_t>(e)]; ++i)
          local_.experts(static_cast<Index>(row++), 0) = e;
    const MatrixX<Scalar>& expert_output = inner_.forward(bank, received_input_, local_, Capacity{});

    returned_output_.resize(plan_.rows(), width);
    exchange(expert_output, received_rows_, returned_output_, sent_rows_);
    output_.resize(x.rows(), width);
    parallel_for(x.rows(), [&](Index t) {
      output_.row(t).setZero();
      for (Index j = 0; j < k; ++j)
        output_.row(t) += routing.gates(t, j) * returned_output_.row(plan_.position(t, j));
    });
    return output_;
  }

  MatrixX<Scalar>& backward(Bank& bank, ConstRef<Scalar> dy, const Routing<Scalar>& routing) {
    const Index k = routing.k(), d_model = received_input_.cols();
    d_gates_.resize(dy.rows(), k);
    send_.resize(plan_.rows(), dy.cols());
    parallel_for(plan_.rows(), [&](Index r) {
      const Index s = plan_.slot(r), t = s / k, j = s % k;
      d_gates_(t, j) = dy.row(t).dot(returned_output_.row(r));
      send_.row(r) = routing.gates(t, j) * dy.row(t);
    });
    received_grad_.resize(received_input_.rows(), dy.cols());
    exchange(send_, sent_rows_, received_grad_, received_rows_);
    const MatrixX<Scalar>& expert_input_grad = inner_.backward(bank, received_grad_, local_);

    returned_grad_.resize(plan_.rows(), d_model);
    exchange(expert_input_grad, received_rows_, returned_grad_, sent_rows_);
    grad_input_.resize(dy.rows(), d_model);
    parallel_for(dy.rows(), [&](Index t) {
      grad_input_.row(t).setZero();
      for (Index j = 0; j < k; ++j) grad_input_.row(t) += returned_grad_.row(plan_.position(t, j));
    });
    return grad_input_;
  }

  const MatrixX<Scalar>& d_gates() const { return d_gates_; }
  /// Assignments per expert (all N) of this process's tokens in the last forward.
  const IndexVector& routed() const { return plan_.routed; }
  Index dropped() const { return 0; }
  const ReplicaGroup* replicas() const { return &replicas_; }
  /// Wall-clock seconds spent in this runner's collectives (waiting for the other processes included)
  /// since it was built: what the all-to-all costs beside the experts' compute.
  double communication_seconds() const { return communication_seconds_; }

 private:
  template <class Body>
  void communicating(Body&& body) {
    const auto start = std::chrono::steady_clock::now();
    body();
    communication_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  /// Rows of `from` to each process (row counts per process, rank order), into `to` from each.
  void exchange(const MatrixX<Scalar>& from, const std::vector<Index>& rows_to, MatrixX<Scalar>& to,
                const std::vector<Index>& rows_from) {
    send_elements_.resize(rows_to.size());
    receive_elements_.resize(rows_from.size());
    for (std::size_t q = 0; q < rows_to.size(); ++q) {
      send_elements_[q] = rows_to[q] * from.cols();
      receive_elements_[q] = rows_from[q] * to.cols();
    }
    communicating([&] { replicas_.comm().alltoallv(from.data(), send_elements_, to.data(), receive_elements_); });
  }

  /// Every process must run the same layer: a disagreement is an error on every process that names it.
  void agree(const char* pass, std::initializer_list<std::pair<const char*, Index>> facts) {
    std::vector<Index> mine;
    for (const auto& fact : facts) mine.push_back(fact.second);
    std::vector<Index> all;
    communicating([&] { replicas_.comm().allgather(mine, all); });
    std::size_t i = 0;
    for (const auto& fact : facts) {
      for (std::size_t r = 1; r * mine.size() < all.size(); ++r)
        detail::require(all[r * mine.size() + i] == all[i], "ExpertParallel ", pass, ": the processes disagree on ",
                        fact.first, ": rank 0 has ", all[i], ", rank ", r, " has ", all[r * mine.size() + i]);
      ++i;
    }
  }

  CommReplicas<Comm> replicas_;
  typename Inner::template Runner<Bank> inner_;
  cpu::DispatchPlan plan_;
  std::vector<Index> counts_, received_counts_, sent_rows_, received_rows_, send_elements_, receive_elements_;
  Routing<Scalar> local_;  // the received rows: each to its local expert, gate 1
  MatrixX<Scalar> send_, received_input_, received_grad_, returned_output_, returned_grad_;
  MatrixX<Scalar> output_, d_gates_, grad_input_;
  double communication_seconds_ = 0.0;
};

}  // namespace moe::backends
