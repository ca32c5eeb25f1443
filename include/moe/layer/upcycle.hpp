#pragma once
// Sparse upcycling (Komatsuzaki et al. 2022, "Sparse Upcycling: Training Mixture-of-Experts from Dense
// Checkpoints"): an MoE layer's N experts start as copies of a trained dense feed-forward block, so that the
// layer computes what the dense block did; the router keeps its own initialisation.

#include <map>
#include <string>

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/io/tensor.hpp"

namespace moe {

struct UpcycleOptions {
  double noise_std = 0.0;  // Gaussian noise of this standard deviation added to each copy (0: exact copies)
};

/// Copies every parameter `name` of `dense` into `experts.{e}.name` of `layer`, for every expert e, by state
/// dict name; a parameter of either side without its counterpart, or with another shape, is a moe::Error that
/// names it. Noise, if any, is drawn from `rng` expert by expert, parameter by parameter.
template <class Dense, class Layer>
void upcycle(Dense& dense, Layer& layer, Rng& rng, const UpcycleOptions& options = {}) {
  detail::require(options.noise_std >= 0.0, "upcycle: noise_std must be >= 0, got ", options.noise_std);
  using Scalar = typename Layer::Scalar;
  std::map<std::string, Parameter<Scalar>*> targets;
  for (const auto& p : layer.named_parameters())
    if (p.name.rfind("experts.", 0) == 0) targets.emplace(p.name, p.parameter);
  const auto sources = dense.named_parameters();
  for (Index e = 0; e < layer.num_experts(); ++e) {
    const std::string prefix = "experts." + std::to_string(e) + ".";
    for (const auto& source : sources) {
      const auto it = targets.find(prefix + source.name);
      detail::require(it != targets.end(), "upcycle: the dense block's ", source.name, " has no ", prefix,
                      source.name, " in the MoE layer");
      Parameter<Scalar>& target = *it->second;
      detail::require(target.shape == source.parameter->shape, "upcycle: ", it->first, " has shape ",
                      shape_to_string(target.shape), ", the dense block's ", source.name, " ",
                      shape_to_string(source.parameter->shape));
      target.value = source.parameter->value;
      if (options.noise_std > 0.0) {
        MatrixX<Scalar> noise(target.value.rows(), target.value.cols());
        fill_normal(noise, rng, 0.0, options.noise_std);
        target.value += noise;
      }
      targets.erase(it);
    }
  }
  detail::require(targets.empty(), "upcycle: ", targets.empty() ? std::string() : targets.begin()->first,
                  " of the MoE layer has no counterpart in the dense block");
}

}  // namespace moe
