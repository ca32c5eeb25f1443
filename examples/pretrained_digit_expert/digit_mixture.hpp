#pragma once
// The models of method 2 of seeds/003 ("MNIST 7 expert"): the MLP expert, the dense mixture of four of
// them behind a gating MLP, and the partial load that puts a pretrained expert's input and hidden layers
// into expert 0. Needs only the umbrella's headers, so the unit test also builds against the single header.

#include <filesystem>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "moe/balancing/balancer.hpp"
#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/io/safetensors.hpp"
#include "moe/io/state_dict.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/dropout.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/sequential.hpp"
#include "moe/routing/mlp_router.hpp"

namespace moe::examples {

inline constexpr Index mnist_pixels = 28 * 28;
inline constexpr Index digit_classes = 10;
inline constexpr Index digit_experts = 4;

/// The document's expert: Linear(784, 128), ReLU, Dropout, Linear(128, 128), ReLU, Dropout,
/// Linear(128, out). Parameters are named as torch.nn.Sequential under `net`: net.0, net.3, net.6.
template <class ScalarT = float>
class DigitExpert {
 public:
  using Scalar = ScalarT;

  struct Options {
    Index hidden = 128;
    Index out_features = digit_classes;  // 2 for the "0 or 7" pretraining task
    double dropout = 0.2;
  };

  DigitExpert(Index d_model, const Options& options, Rng& rng) : net_(build(d_model, options, rng)) {}

  Index out_features() const { return net_.template get<6>().out_features(); }

  const MatrixX<Scalar>& forward(ConstRef<Scalar> x) { return net_.forward(x); }
  const MatrixX<Scalar>& backward(ConstRef<Scalar> dy) { return net_.backward(dy); }

  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    append_prefixed(list, net_.named_parameters(), "net.");
    return list;
  }

  GeneratorList named_generators() {
    GeneratorList list;
    append_prefixed(list, net_.named_generators(), "net.");
    return list;
  }

  void train(bool on = true) { net_.train(on); }
  void eval() { net_.train(false); }

 private:
  using Net = Sequential<Linear<Scalar>, ReLU<Scalar>, Dropout<Scalar>, Linear<Scalar>, ReLU<Scalar>, Dropout<Scalar>,
                         Linear<Scalar>>;

  /// The three Linears draw from `rng` first, so their weights do not depend on the dropout rate.
  static Net build(Index d_model, const Options& options, Rng& rng) {
    require(options.hidden > 0, "DigitExpert: hidden must be positive, got ", options.hidden);
    require(options.out_features > 0, "DigitExpert: out_features must be positive, got ",
            options.out_features);
    Linear<Scalar> input(d_model, options.hidden, rng);
    Linear<Scalar> hidden(options.hidden, options.hidden, rng);
    Linear<Scalar> output(options.hidden, options.out_features, rng);
    Dropout<Scalar> first_dropout(options.dropout, rng);
    Dropout<Scalar> second_dropout(options.dropout, rng);
    return Net(std::move(input), ReLU<Scalar>{}, std::move(first_dropout), std::move(hidden), ReLU<Scalar>{},
               std::move(second_dropout), std::move(output));
  }

  Net net_;
};

/// Every input goes to all four experts (K = N: a dense mixture) and their outputs are summed with the
/// gating MLP's softmax weights; no balancing loss, as the document uses none.
using DigitMixture = MoELayer<DigitExpert<float>, MLPRouter, digit_experts, NoBalancing>;

/// The document's sizes: experts 784-128-128-10 with dropout 0.2, gating MLP 784-256-128-4 with dropout 0.2.
inline DigitMixture::Options digit_mixture_options(double dropout = 0.2) {
  DigitMixture::Options options;
  options.d_model = mnist_pixels;
  options.num_experts = digit_experts;
  options.expert = {.hidden = 128, .out_features = digit_classes, .dropout = dropout};
  options.router = {.hidden = {256, 128}, .dropout = dropout};
  return options;
}

/// The pretrained expert's tensors that move into the mixture: the input and hidden Linears. The output
/// Linear (net.6) is left out because its shape differs (2 classes against 10).
inline const std::vector<std::string>& pretrained_body_tensors() {
  static const std::vector<std::string> names{"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"};
  return names;
}

/// Loads the input and hidden layers of the DigitExpert saved at `path` (save_module) into expert 0 of
/// `mixture`, through the state dict's prefix map; every other tensor of the mixture is left as it was.
/// The file is checked first, so a file without those four tensors, or with other shapes, changes nothing.
inline LoadReport load_pretrained_body(DigitMixture& mixture, const std::filesystem::path& path) {
  const std::string context = "load_pretrained_body: " + path.string();
  const SafetensorsFile<float> file = load_safetensors<float>(path);
  for (const auto& name : pretrained_body_tensors())
    require(file.tensors.contains(name), context, ": no tensor ", name,
            "; expected a DigitExpert saved with save_module (net.0, net.3, net.6)");
  try {
    return load_state_dict(mixture, file.tensors,
                           {.strict = false,
                            .prefix_map = {{"", "experts.0."}},
                            .only = NameFilter(pretrained_body_tensors())});
  } catch (const Error& e) {
    fail(context, ": ", e.what());
  }
}

}  // namespace moe::examples
