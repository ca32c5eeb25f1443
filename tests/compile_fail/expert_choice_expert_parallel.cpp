// Must not compile: expert-choice routing on a backend that spreads the batch over processes, where each
// process would pick its experts' top-C tokens from its own share alone. Built with MOE_CONTROL defined the
// router is SoftmaxTopK and it must compile.

#include "backends/mpi/expert_parallel.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/routing/expert_choice.hpp"
#include "moe/routing/softmax_top_k.hpp"

#ifdef MOE_CONTROL
template <class S>
using Router = moe::SoftmaxTopK<S>;
#else
template <class S>
using Router = moe::ExpertChoice<S>;
#endif

int main() {
  using Layer =
      moe::MoELayer<moe::FeedForward<moe::GELU>, Router, 1, moe::NoBalancing, moe::backends::ExpertParallel<>>;
  return static_cast<int>(sizeof(Layer)) == 0;
}
