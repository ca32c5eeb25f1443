#pragma once
// Combinations of balancers that several tests train with.

#include "moe/balancing/aux_loss.hpp"
#include "moe/balancing/aux_loss_free.hpp"
#include "moe/balancing/combine.hpp"

namespace moe::test {

/// The Switch Transformer's auxiliary loss (Fedus et al. 2021) beside the aux-loss-free selection bias
/// (Wang et al. 2024).
template <class S>
using SwitchAndBias = Combine<S, SwitchAuxLoss, AuxLossFree>;

}  // namespace moe::test
