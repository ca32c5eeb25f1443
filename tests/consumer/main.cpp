// A program that uses moe the way a consumer project does: one MoE layer, forward, backward and one AdamW
// step. Exits with 0 only when the output is finite and the step changed the loss.
#include <moe/moe.hpp>

#include <cmath>
#include <iostream>

int main() {
  moe::Rng rng(7);
  using Layer = moe::MoELayer<moe::FeedForward<moe::GELU>, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss>;
  Layer layer({.d_model = 8, .num_experts = 4, .expert = {.hidden = 16}, .balancer = {.alpha = 1e-2}}, rng);
  moe::AdamW<float> optimizer(layer.named_parameters(), {.lr = 1e-2});

  moe::Matrix x(64, 8);
  moe::fill_normal(x, rng, 0.0, 1.0);
  const moe::Matrix target = x.array().sin().matrix();

  optimizer.zero_grad();
  const moe::Matrix y = layer.forward(x);
  const moe::Matrix error = y - target;
  const float before = error.squaredNorm() / float(error.size());
  layer.backward(2.0f * error / float(error.size()));
  optimizer.step();
  const float after = (layer.forward(x) - target).squaredNorm() / float(error.size());

  const bool finite = y.allFinite() && std::isfinite(before) && std::isfinite(after);
  std::cout << "moe consumer: mse " << before << " -> " << after << " after one AdamW step, aux loss "
            << layer.aux_loss() << "\n";
  return finite && after != before ? 0 : 1;
}
