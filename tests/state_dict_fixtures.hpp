#pragma once
// The small models the state-dict and safetensors tests save, load and compare.

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/core/random.hpp"
#include "moe/io/state_dict.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/softmax_top_k.hpp"

namespace moe::test {

template <class S>
using GeluExpert = FeedForward<GELU, S>;
template <class S>
using SwitchMoE = MoELayer<GeluExpert<S>, SoftmaxTopK, 2, SwitchAuxLoss>;
template <class S>
using BiasMoE = MoELayer<GeluExpert<S>, SoftmaxTopK, 2, AuxLossFree>;
using ReluExpert = FeedForward<ReLU, float>;
using ReluMoE = MoELayer<ReluExpert, SoftmaxTopK, 1, NoBalancing>;

/// d_model 5, 3 routed experts of hidden width 7 and one shared expert of width 4.
template <class Layer>
Layer make_moe(std::uint64_t seed) {
  Rng rng(seed);
  return Layer({.d_model = 5, .num_experts = 3, .num_shared_experts = 1, .expert = {.hidden = 7},
                .shared_expert = {.hidden = 4}},
               rng);
}

template <class S>
GeluExpert<S> make_feed_forward(std::uint64_t seed, Index hidden = 7) {
  Rng rng(seed);
  return GeluExpert<S>(5, {.hidden = hidden}, rng);
}

/// Same names, shapes and bits.
template <class S>
bool identical(const StateDict<S>& a, const StateDict<S>& b) {
  return std::ranges::equal(a, b, [](const auto& x, const auto& y) {
    return x.first == y.first && x.second.shape == y.second.shape && x.second.data.size() == y.second.data.size() &&
           (x.second.data.size() == 0 ||
            std::memcmp(x.second.data.data(), y.second.data.data(), sizeof(S) * x.second.data.size()) == 0);
  });
}

}  // namespace moe::test
