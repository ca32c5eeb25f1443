// Must not compile: an expert without backward. Built with MOE_CONTROL defined it gains one and must
// compile, which shows the failure comes from the missing backward alone.

#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/linear.hpp"
#include "moe/routing/softmax_top_k.hpp"

struct ForwardOnlyExpert {
  using Scalar = float;
  struct Options {};
  ForwardOnlyExpert(moe::Index d_model, const Options&, moe::Rng& rng) : linear(d_model, d_model, rng) {}
  const moe::Matrix& forward(moe::ConstRef<float> x) { return linear.forward(x); }
#ifdef MOE_CONTROL
  const moe::Matrix& backward(moe::ConstRef<float> dy) { return linear.backward(dy); }
#endif
  moe::ParameterList<float> named_parameters() { return linear.named_parameters(); }
  moe::Index out_features() const { return linear.out_features(); }
  moe::Linear<float> linear;
};

int main() {
  moe::Rng rng(1);
  moe::MoELayer<ForwardOnlyExpert, moe::SoftmaxTopK, 1, moe::NoBalancing> layer({.d_model = 4, .num_experts = 2}, rng);
  return static_cast<int>(layer.num_experts()) - 2;
}
