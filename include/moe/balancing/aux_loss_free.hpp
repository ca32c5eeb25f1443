#pragma once
// Auxiliary-loss-free load balancing (Wang et al. 2024; DeepSeek-V3): a per-expert bias added to the
// scores for the top-K selection only, nudged after each step towards the experts that got less than the
// mean load. No loss, no gradient.

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/types.hpp"
#include "moe/routing/routing.hpp"

namespace moe {

template <class ScalarT = float>
class AuxLossFree {
 public:
  using Scalar = ScalarT;

  struct Options {
    double gamma = 1e-3;     // bias update speed
    bool zero_mean = false;  // re-centre the biases after each update
  };

  AuxLossFree(Index num_experts, const Options& options)
      : bias_(MatrixX<Scalar>::Zero(1, num_experts)), gamma_(options.gamma), zero_mean_(options.zero_mean) {
    detail::require(num_experts > 0, "AuxLossFree: num_experts must be positive, got ", num_experts);
  }

  Scalar forward(const Routing<Scalar>& /*routing*/) { return Scalar(0); }
  void backward(MatrixX<Scalar>& /*d_scores*/, MatrixX<Scalar>& /*d_logits*/) {}

  const MatrixX<Scalar>* selection_bias() const { return &bias_; }

  /// b_i += gamma sign(mean load - load_i), with `load` the assignments per expert since the last update.
  void update(const IndexVector& load) {
    detail::require(load.size() == bias_.cols(), "AuxLossFree: load has ", load.size(), " entries, expected ",
                    bias_.cols(), " (the number of experts)");
    const double mean = load.cast<double>().mean();
    for (Index i = 0; i < bias_.cols(); ++i) {
      const double error = mean - static_cast<double>(load(i));
      bias_(0, i) += static_cast<Scalar>(gamma_ * static_cast<double>((error > 0) - (error < 0)));
    }
    if (zero_mean_) bias_.array() -= bias_.mean();
  }

  BufferList<Scalar> named_buffers() { return {{"expert_bias", &bias_, {bias_.cols()}}}; }

  const MatrixX<Scalar>& bias() const { return bias_; }

 private:
  MatrixX<Scalar> bias_;  // 1 x N
  double gamma_;
  bool zero_mean_;
};

}  // namespace moe
