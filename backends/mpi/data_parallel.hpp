#pragma once
// What a model whose MoE layers run ExpertParallel needs around them: every process is a replica of the
// non-expert parameters (embedding, attention, router, norms, head) with its own share of the batch, and
// holds one block of each layer's experts. The shares are equal, and each process's loss is the mean over
// its share (its aux losses are its terms of the batch's, see moe/balancing/aux_loss.hpp), so the mean over
// the processes is the loss of the whole batch.
//
// - average_gradients: each gradient becomes the mean over the processes of their gradients.
// - clip_grad_norm: gradient clipping by the norm of the whole model, the same on every process.
// - mean_over_processes: a loss, averaged the same way.
// - gather_state_dict / load_held_state_dict: one state dict with one process's names, assembled from every
//   process's experts, and loaded back into any number of processes.
//
// Sums over processes are gathered and added in rank order, not left to MPI_Allreduce's reduction tree, so
// every process gets the same bits and a run's bits do not depend on MPI's choice of algorithm.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/io/tensor.hpp"

namespace moe::backends {

namespace mpi_detail {

/// Every process's `mine` (the same size on each, else an error naming `what` and both sizes), summed in
/// rank order into `mine`.
template <class Scalar, class Comm>
void sum_in_rank_order(const Comm& comm, std::vector<Scalar>& mine, const char* what) {
  std::vector<Index> sizes;
  comm.allgather(std::vector<Index>{static_cast<Index>(mine.size())}, sizes);
  for (std::size_t r = 1; r < sizes.size(); ++r)
    detail::require(sizes[r] == sizes[0], what, ": the processes disagree on the number of values: rank 0 has ",
                    sizes[0], ", rank ", r, " has ", sizes[r]);
  std::vector<Scalar> all;
  comm.allgather(mine, all);
  for (std::size_t i = 0; i < mine.size(); ++i) {
    Scalar sum = all[i];
    for (std::size_t r = 1; r < sizes.size(); ++r) sum += all[r * mine.size() + i];
    mine[i] = sum;
  }
}

template <class T>
void append_bytes(std::vector<unsigned char>& bytes, const T* values, std::size_t count) {
  const auto* begin = reinterpret_cast<const unsigned char*>(values);
  bytes.insert(bytes.end(), begin, begin + count * sizeof(T));
}

template <class T>
void read_bytes(const std::vector<unsigned char>& bytes, std::size_t& at, T* values, std::size_t count) {
  std::memcpy(values, bytes.data() + at, count * sizeof(T));
  at += count * sizeof(T);
}

/// A state dict as bytes: per tensor its name, shape and values (what the processes of one run exchange).
template <class Scalar>
std::vector<unsigned char> serialize(const StateDict<Scalar>& dict) {
  std::vector<unsigned char> bytes;
  for (const auto& [name, tensor] : dict) {
    const std::uint64_t name_size = name.size(), rank = tensor.shape.size();
    append_bytes(bytes, &name_size, 1);
    append_bytes(bytes, name.data(), name.size());
    append_bytes(bytes, &rank, 1);
    append_bytes(bytes, tensor.shape.data(), tensor.shape.size());
    append_bytes(bytes, tensor.data.data(), static_cast<std::size_t>(tensor.data.size()));
  }
  return bytes;
}

/// The tensors of serialize's bytes, from `at` to `end`, each passed to add(name, tensor).
template <class Scalar, class Add>
void deserialize(const std::vector<unsigned char>& bytes, std::size_t at, std::size_t end, Add&& add) {
  while (at < end) {
    std::uint64_t name_size = 0, rank = 0;
    read_bytes(bytes, at, &name_size, 1);
    std::string name(name_size, '\0');
    read_bytes(bytes, at, name.data(), name_size);
    read_bytes(bytes, at, &rank, 1);
    Tensor<Scalar> tensor;
    tensor.shape.resize(rank);
    read_bytes(bytes, at, tensor.shape.data(), rank);
    tensor.data.resize(numel(tensor.shape));
    read_bytes(bytes, at, tensor.data.data(), static_cast<std::size_t>(tensor.data.size()));
    add(name, std::move(tensor));
  }
}

}  // namespace mpi_detail

/// Data-parallel gradients: each becomes the mean over the processes of their gradients, the gradient of
/// the mean of their losses. Replicated parameters (all of `parameters` but `held_experts`) are summed over
/// the processes in rank order and divided by P; a held expert's gradient already sums the contributions of
/// every process's tokens (they came to it), so it is divided by P alone. Processes with different
/// parameter sizes are an error naming both.
template <class Scalar, class Comm>
void average_gradients(const Comm& comm, const ParameterList<Scalar>& parameters,
                       const ParameterList<Scalar>& held_experts) {
  std::set<const Parameter<Scalar>*> held;
  for (const auto& p : held_experts) held.insert(p.parameter);
  std::vector<Scalar> flat;
  for (const auto& p : parameters)
    if (!held.contains(p.parameter)) flat.insert(flat.end(), p.parameter->grad.data(), p.parameter->grad.data() + p.parameter->grad.size());
  mpi_detail::sum_in_rank_order(comm, flat, "average_gradients");
  const auto processes = static_cast<Scalar>(comm.size());
  std::size_t at = 0;
  for (const auto& p : parameters) {
    auto& grad = p.parameter->grad;
    if (held.contains(p.parameter)) {
      grad /= processes;
      continue;
    }
    for (Index i = 0; i < grad.size(); ++i) grad.data()[i] = flat[at++] / processes;
  }
}

/// clip_grad_norm of the whole model, after average_gradients: the norm counts the replicated gradients once
/// (every process has the same) and every process's held experts, so every process scales by the same
/// coefficient max_norm / (norm + 1e-6) when that is below 1. Returns the norm before clipping.
template <class Scalar, class Comm>
double clip_grad_norm(const Comm& comm, const ParameterList<Scalar>& parameters,
                      const ParameterList<Scalar>& held_experts, double max_norm) {
  detail::require(max_norm >= 0.0, "clip_grad_norm: max_norm must be non-negative, got ", max_norm);
  std::set<const Parameter<Scalar>*> held;
  for (const auto& p : held_experts) held.insert(p.parameter);
  double replicated = 0.0;
  std::vector<double> experts{0.0};
  for (const auto& p : parameters)
    (held.contains(p.parameter) ? experts[0] : replicated) += p.parameter->grad.template cast<double>().squaredNorm();
  mpi_detail::sum_in_rank_order(comm, experts, "clip_grad_norm");
  const double norm = std::sqrt(replicated + experts[0]);
  const double coefficient = max_norm / (norm + 1e-6);
  if (coefficient >= 1.0) return norm;
  for (const auto& p : parameters) p.parameter->grad *= static_cast<Scalar>(coefficient);
  return norm;
}

/// The mean over the processes of `value` (a loss), the same bits on every process.
template <class Comm>
double mean_over_processes(const Comm& comm, double value) {
  std::vector<double> one{value};
  mpi_detail::sum_in_rank_order(comm, one, "mean_over_processes");
  return one[0] / static_cast<double>(comm.size());
}

/// The state dict one process would have: every process's tensors, a tensor held by several (the replicated
/// ones) taken once after checking that every copy has the same bits. On rank 0; empty elsewhere.
template <class Scalar, class Comm>
StateDict<Scalar> gather_state_dict(const Comm& comm, const StateDict<Scalar>& mine) {
  const std::vector<unsigned char> bytes = mpi_detail::serialize(mine);
  std::vector<Index> sizes;
  comm.allgather(std::vector<Index>{static_cast<Index>(bytes.size())}, sizes);
  const std::vector<unsigned char> all = comm.gather_to(0, bytes);
  StateDict<Scalar> dict;
  if (comm.rank() != 0) return dict;
  std::size_t at = 0;
  for (std::size_t r = 0; r < sizes.size(); ++r) {
    const std::size_t end = at + static_cast<std::size_t>(sizes[r]);
    mpi_detail::deserialize<Scalar>(all, at, end, [&](const std::string& name, Tensor<Scalar> tensor) {
      const auto [place, added] = dict.try_emplace(name, std::move(tensor));
      detail::require(added || (place->second.shape == tensor.shape && place->second.data == tensor.data),
                      "gather_state_dict: tensor ", name, " of rank ", r, " differs from the copy of a lower rank: "
                      "the replicas have diverged");
    });
    at = end;
  }
  return dict;
}

/// Loads into `module` the tensors it holds (its replicated parameters and its block of experts) from a
/// state dict of the whole model; each must be there with its shape, others are left alone.
template <HasNamedParameters M>
LoadReport load_held_state_dict(M& module, const StateDict<typename M::Scalar>& dict) {
  std::set<std::string> names;
  for (const auto& t : detail::module_tensors(module, "load_held_state_dict")) names.insert(t.name);
  LoadOptions options;
  options.only = NameFilter([names = std::move(names)](const std::string& name) { return names.contains(name); });
  return load_state_dict(module, dict, options);
}

}  // namespace moe::backends
