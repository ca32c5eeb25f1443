// What the PyTorch peer checks its layer against (benchmarks/peers/pytorch_moe.py --reference): one
// forward and backward of the layer of a benchmark configuration, as moe_bench builds it, on the first
// input batch and output gradient moe_bench's layer benchmarks use, written as safetensors.
//
//   moe_reference CONFIG FILE
//
// FILE holds the layer's parameters under PyTorch's names (router.weight, experts.{e}.fc1.weight, ...),
// `input` and `grad_output`, and what the layer computed from them: `output`, `grad_input`,
// `grad.router.weight` and `routing.experts` (the experts each token was sent to, as floats).

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "common.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/io/state_dict.hpp"

namespace {

template <class Derived>
moe::Tensor<float> tensor(const Eigen::MatrixBase<Derived>& m) {
  const moe::MatrixX<float> values = m.template cast<float>();
  return {{values.rows(), values.cols()}, Eigen::Map<const moe::VectorX<float>>(values.data(), values.size())};
}

template <int K>
void write_reference(const moe_bench::Config& c, const std::string& path) {
  moe_bench::Layer<K> layer = moe_bench::make_layer<K>(c);
  const moe_bench::Matrix x = moe_bench::random_matrix(c.tokens, c.d, 1);
  const moe_bench::Matrix dy = moe_bench::random_matrix(c.tokens, c.d, 2);
  moe::StateDict<float> tensors = moe::state_dict(layer);
  tensors["input"] = tensor(x);
  tensors["grad_output"] = tensor(dy);
  tensors["output"] = tensor(layer.forward(x));
  tensors["routing.experts"] = tensor(layer.routing().experts);
  tensors["grad_input"] = tensor(layer.backward(dy));
  for (const auto& p : layer.router().named_parameters())
    tensors["grad.router." + p.name] = tensor(p.parameter->grad);
  moe::save_safetensors(path, tensors, {{"config", c.name}});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: moe_reference CONFIG FILE\n");
    return 2;
  }
  const std::string name = argv[1];
  const char* threads = std::getenv("MOE_BENCH_THREADS");
  moe::set_num_threads(threads != nullptr && std::atoi(threads) > 0 ? std::atoi(threads) : 2);
  for (const moe_bench::Config& c : moe_bench::configs()) {
    if (name != c.name) continue;
    try {
      moe_bench::with_k(c, [&]<int K>() { write_reference<K>(c, argv[2]); });
    } catch (const std::exception& error) {
      std::fprintf(stderr, "moe_reference: %s\n", error.what());
      return 1;
    }
    return 0;
  }
  std::fprintf(stderr, "moe_reference: unknown config %s\n", name.c_str());
  return 2;
}
