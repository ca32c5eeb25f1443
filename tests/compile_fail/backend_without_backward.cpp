// Must not compile: a backend whose runner has no backward. Built with MOE_CONTROL defined it gains one
// and must compile, which shows the failure comes from the missing backward alone.

#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/linear.hpp"
#include "moe/routing/softmax_top_k.hpp"

/// The CPU backend's runner behind a runner of its own, with backward only in the control build.
struct ForwardOnlyBackend {
  template <class Bank>
  class Runner {
   public:
    using Scalar = typename Bank::Scalar;
    explicit Runner(const ForwardOnlyBackend&) : cpu_(moe::backends::Cpu{}) {}
    moe::MatrixX<Scalar>& forward(Bank& bank, moe::ConstRef<Scalar> x, const moe::Routing<Scalar>& routing,
                                  moe::Capacity capacity) {
      return cpu_.forward(bank, x, routing, capacity);
    }
#ifdef MOE_CONTROL
    moe::MatrixX<Scalar>& backward(Bank& bank, moe::ConstRef<Scalar> dy, const moe::Routing<Scalar>& routing) {
      return cpu_.backward(bank, dy, routing);
    }
#endif
    const moe::MatrixX<Scalar>& d_gates() const { return cpu_.d_gates(); }
    const moe::IndexVector& routed() const { return cpu_.routed(); }
    moe::Index dropped() const { return cpu_.dropped(); }

   private:
    moe::backends::Cpu::Runner<Bank> cpu_;
  };
};

int main() {
  moe::Rng rng(1);
  moe::MoELayer<moe::Linear<float>, moe::SoftmaxTopK, 1, moe::NoBalancing, ForwardOnlyBackend> layer(
      {.d_model = 4, .num_experts = 2}, rng);
  return static_cast<int>(layer.num_experts()) - 2;
}
