// Cross-check of moe::MoELayer against PyTorch (tests/peers/torch_moe.py), through safetensors files.
//
//   moe_crosscheck write DIR        for each config: DIR/<config>_inputs.safetensors (state dict, x, dy, the
//                                   selected experts as float, the padding mask as float where the config
//                                   pads; the config in the metadata) and
//                                   DIR/<config>_outputs.safetensors (y, dx, grad.<parameter>, aux, and with an
//                                   aux loss aux_only.dx, aux_only.grad.router.weight)
//   moe_crosscheck check-torch DIR  loads DIR/torch_<config>_model.safetensors (PyTorch's initialisation,
//                                   written by torch_moe.py) with moe::load_module, runs x and dy from
//                                   DIR/torch_<config>_data.safetensors and compares with PyTorch's results
//
// The loss whose gradients are compared is  sum(y * dy) + aux. The aux_only tensors are the gradients of
// the aux loss alone (dy = 0): beside the task gradient in router.weight it is too small for a 1e-5
// norm-wise check to see. Errors are  max|a - b| / max(max|b|, 1e-30)  per tensor, b the reference
// (torch_moe.py says why).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "moe/io/safetensors.hpp"
#include "moe/io/state_dict.hpp"
#include "moe/moe.hpp"

namespace {

namespace fs = std::filesystem;
using moe::Index;
using moe::Matrix;
using Dict = moe::StateDict<float>;
using Metadata = moe::Metadata;
using Expert = moe::FeedForward<moe::GELU, float>;

using SoftmaxLayer1 = moe::MoELayer<Expert, moe::SoftmaxTopK, 1, moe::NoBalancing>;
using SoftmaxLayer2 = moe::MoELayer<Expert, moe::SoftmaxTopK, 2, moe::NoBalancing>;
using SigmoidLayer2 = moe::MoELayer<Expert, moe::SigmoidTopK, 2, moe::NoBalancing>;
using DenseLayer = moe::MoELayer<Expert, moe::SoftmaxTopK, moe::Dynamic, moe::NoBalancing>;
using SwitchAuxLayer1 = moe::MoELayer<Expert, moe::SoftmaxTopK, 1, moe::SwitchAuxLoss>;
using SwitchAuxLayer2 = moe::MoELayer<Expert, moe::SoftmaxTopK, 2, moe::SwitchAuxLoss>;
using SequenceAuxSigmoid2 = moe::MoELayer<Expert, moe::SigmoidTopK, 2, moe::SequenceAuxLoss>;
using SigmoidLayer3 = moe::MoELayer<Expert, moe::SigmoidTopK, 3, moe::NoBalancing>;
using SoftmaxLayer3 = moe::MoELayer<Expert, moe::SoftmaxTopK, 3, moe::NoBalancing>;
using DeepSeekV3Layer = moe::DeepSeekV3MoE<Expert>;
using ExpertChoiceLayer1 = moe::MoELayer<Expert, moe::ExpertChoice, 1, moe::NoBalancing>;
using ExpertChoiceLayer2 = moe::MoELayer<Expert, moe::ExpertChoice, 2, moe::NoBalancing>;

constexpr double tolerance = 1e-5;

enum class Mode { write, check_torch };

struct Config;
using Runner = bool (*)(Mode, const Config&, const fs::path&);

struct Config {
  std::string name;
  Index num_experts;
  Index k;
  bool renormalize;  // softmax only: sigmoid gates are always renormalised
  Index num_shared;
  std::string balancer;  // none | switch | sequence | sequence_bias (with the aux-loss-free bias)
  double alpha;
  Index sequence_length;
  Runner run;
  Index d_model = 16;
  Index hidden = 32;
  Index tokens = 64;
  // DeepSeek-V3's (sigmoid) or DeepSeek-V2's (softmax) routed scaling factor and group-limited routing
  double scaling = 1.0;
  Index n_group = 1;
  Index topk_group = 1;
  moe::LoadFraction fraction = moe::LoadFraction::of_assignments;  // switch only
  moe::LoadCount count = moe::LoadCount::dispatched;               // the aux loss's f_i
  double capacity_factor = 0.0;
  moe::DropPolicy drop_policy = moe::DropPolicy::token_order;
  // Left padding of each sequence of sequence_length rows, in turn (empty: no padding mask).
  std::vector<Index> left_padding{};
  double router_capacity_factor = 0.0;  // expert choice only: C = ceil(cf T K / N)
};

template <class Layer>
bool run_config(Mode mode, const Config& config, const fs::path& dir);

// (a) Switch: softmax top-1, gate = the probability; (b) Mixtral: top-2 renormalised; (c) DeepSeek-V3's
// sigmoid top-2 of 6, renormalised; (d) dense, K = N at run time; (e) DeepSeekMoE's shared experts beside
// routed top-2; (f) Switch aux loss on (b), and on (a) as Switch has it; (g) DeepSeek-V3's sequence-wise
// aux loss on (c); (h) group-limited sigmoid routing with a routed scaling factor; (i) DeepSeekV3MoE with a
// non-zero aux-loss-free bias and the aux loss counted over the unbiased top-K (eq. 18); (j) the Switch loss
// with f_i = c_i / T; (k) capacity drops, first choices first (GShard), and in token order; (l) a left
// padding mask with the sequence-wise aux loss; (m) DeepSeek-V2's group-limited softmax routing, gates scaled
// and not renormalised, beside two shared experts; (n) expert-choice routing (Zhou et al. 2022), each expert's
// top-C tokens, C = T K / N; (o) expert choice with capacity factor 2 at K = 1, a shared expert and left padding.
const std::vector<Config>& configs() {
  static const std::vector<Config> list{
      {"a_switch_top1", 8, 1, false, 0, "none", 0.0, 0, &run_config<SoftmaxLayer1>},
      {"b_softmax_top2_renorm", 8, 2, true, 0, "none", 0.0, 0, &run_config<SoftmaxLayer2>},
      {"c_sigmoid_top2_of6", 6, 2, true, 0, "none", 0.0, 0, &run_config<SigmoidLayer2>},
      {"d_dense_k4_of4", 4, 4, false, 0, "none", 0.0, 0, &run_config<DenseLayer>},
      {"e_shared2_top2", 8, 2, false, 2, "none", 0.0, 0, &run_config<SoftmaxLayer2>},
      {"f_switch_aux_top2", 8, 2, true, 0, "switch", 0.01, 0, &run_config<SwitchAuxLayer2>},
      {"f_switch_aux_top1", 8, 1, false, 0, "switch", 0.01, 0, &run_config<SwitchAuxLayer1>},
      {"g_sequence_aux_sigmoid", 6, 2, true, 0, "sequence", 0.01, 16, &run_config<SequenceAuxSigmoid2>},
      {"h_sigmoid_groups_scaled", 8, 3, true, 0, "none", 0.0, 0, &run_config<SigmoidLayer3>, 16, 32, 64, 2.5, 4,
       2},
      {"i_deepseek_v3", 256, 8, true, 1, "sequence_bias", 0.01, 16, &run_config<DeepSeekV3Layer>, 16, 8, 32, 2.5,
       8, 4, moe::LoadFraction::of_assignments, moe::LoadCount::score_top_k},
      {"j_switch_aux_of_tokens", 8, 2, true, 0, "switch", 0.01, 0, &run_config<SwitchAuxLayer2>, 16, 32, 64, 1.0,
       1, 1, moe::LoadFraction::of_tokens},
      {"k_capacity_choice_order", 8, 2, true, 0, "none", 0.0, 0, &run_config<SoftmaxLayer2>, 16, 32, 64, 1.0, 1, 1,
       moe::LoadFraction::of_assignments, moe::LoadCount::dispatched, 1.0, moe::DropPolicy::choice_order},
      {"k_capacity_token_order", 8, 2, true, 0, "none", 0.0, 0, &run_config<SoftmaxLayer2>, 16, 32, 64, 1.0, 1, 1,
       moe::LoadFraction::of_assignments, moe::LoadCount::dispatched, 1.0, moe::DropPolicy::token_order},
      {"l_padding_sequence_aux", 6, 2, true, 0, "sequence", 0.01, 16, &run_config<SequenceAuxSigmoid2>, 16, 32, 64,
       1.0, 1, 1, moe::LoadFraction::of_assignments, moe::LoadCount::score_top_k, 0.0,
       moe::DropPolicy::token_order, {0, 5, 16, 3}},
      {"m_softmax_groups_scaled", 8, 3, false, 2, "none", 0.0, 0, &run_config<SoftmaxLayer3>, 16, 32, 64, 16.0, 4,
       2},
      {"n_expert_choice_top2", 8, 2, false, 0, "none", 0.0, 0, &run_config<ExpertChoiceLayer2>, 16, 32, 64, 1.0, 1,
       1, moe::LoadFraction::of_assignments, moe::LoadCount::dispatched, 0.0, moe::DropPolicy::token_order, {}, 1.0},
      {"o_expert_choice_cf2_padding", 8, 1, false, 1, "none", 0.0, 16, &run_config<ExpertChoiceLayer1>, 16, 32, 64,
       1.0, 1, 1, moe::LoadFraction::of_assignments, moe::LoadCount::dispatched, 0.0, moe::DropPolicy::token_order,
       {0, 5, 16, 3}, 2.0},
  };
  return list;
}

template <class Layer>
typename Layer::Options options_for(const Config& c) {
  typename Layer::Options o;
  o.d_model = c.d_model;
  o.num_experts = c.num_experts;
  o.k = c.k;
  o.num_shared_experts = c.num_shared;
  o.capacity_factor = c.capacity_factor;
  o.drop_policy = c.drop_policy;
  o.expert.hidden = c.hidden;
  o.shared_expert.hidden = c.hidden;
  if constexpr (requires { o.router.renormalize; }) o.router.renormalize = c.renormalize;
  if constexpr (requires { o.router.capacity_factor; }) o.router.capacity_factor = c.router_capacity_factor;
  if constexpr (requires { o.router.n_group; }) {
    o.router.routed_scaling_factor = c.scaling;
    o.router.n_group = c.n_group;
    o.router.topk_group = c.topk_group;
  }
  auto set_aux = [&](auto& b) {
    b.alpha = c.alpha;
    b.count = c.count;
    if constexpr (requires { b.sequence_length; }) b.sequence_length = c.sequence_length;
    if constexpr (requires { b.fraction; }) b.fraction = c.fraction;
  };
  if constexpr (requires { o.balancer.alpha; }) set_aux(o.balancer);
  if constexpr (requires { std::get<0>(o.balancer).alpha; }) set_aux(std::get<0>(o.balancer));
  return o;
}

const char* name_of(moe::LoadFraction f) { return f == moe::LoadFraction::of_tokens ? "of_tokens" : "of_assignments"; }
const char* name_of(moe::LoadCount c) { return c == moe::LoadCount::score_top_k ? "score_top_k" : "dispatched"; }
const char* name_of(moe::DropPolicy p) { return p == moe::DropPolicy::choice_order ? "choice_order" : "token_order"; }

std::string joined(const std::vector<Index>& values) {
  std::string text;
  for (const Index v : values) {
    if (!text.empty()) text += ',';
    text += std::to_string(v);
  }
  return text;
}

/// The padding mask of the config: each sequence of sequence_length rows starts with left_padding[s] pads.
moe::PaddingMask padding_of(const Config& c) {
  moe::PaddingMask padding = moe::PaddingMask::Constant(static_cast<Index>(c.left_padding.size()), c.sequence_length,
                                                        false);
  for (std::size_t s = 0; s < c.left_padding.size(); ++s)
    padding.row(static_cast<Index>(s)).head(c.left_padding[s]).setConstant(true);
  return padding;
}

template <class Layer>
Metadata metadata_of(const Config& c, Layer& layer) {
  const bool softmax = std::is_same_v<typename Layer::RouterType, moe::SoftmaxTopK<float>>;
  const bool expert_choice = moe::ExpertChoiceRouter<typename Layer::RouterType>;
  return {{"config", c.name},
          {"router", expert_choice ? "expert_choice" : softmax ? "softmax" : "sigmoid"},
          {"router_capacity_factor", std::to_string(c.router_capacity_factor)},
          {"num_experts", std::to_string(c.num_experts)},
          {"k", std::to_string(layer.k())},
          {"renormalize", layer.router().renormalize() ? "true" : "false"},
          {"num_shared_experts", std::to_string(c.num_shared)},
          {"d_model", std::to_string(c.d_model)},
          {"hidden", std::to_string(c.hidden)},
          {"tokens", std::to_string(c.tokens)},
          {"balancer", c.balancer},
          {"alpha", std::to_string(c.alpha)},
          {"sequence_length", std::to_string(c.sequence_length)},
          {"routed_scaling_factor", std::to_string(c.scaling)},
          {"n_group", std::to_string(c.n_group)},
          {"topk_group", std::to_string(c.topk_group)},
          {"fraction", name_of(c.fraction)},
          {"count", name_of(c.count)},
          {"capacity_factor", std::to_string(c.capacity_factor)},
          {"drop_policy", name_of(c.drop_policy)},
          {"left_padding", joined(c.left_padding)}};
}

moe::Tensor<float> tensor(moe::ConstRef<float> m, moe::Shape shape) {
  return {std::move(shape), Eigen::Map<const moe::VectorX<float>>(m.data(), m.size())};
}
moe::Tensor<float> tensor(moe::ConstRef<float> m) { return tensor(m, {m.rows(), m.cols()}); }

Matrix matrix(const Dict& dict, const std::string& name, Index rows, Index cols, const fs::path& file) {
  const auto it = dict.find(name);
  if (it == dict.end()) throw std::runtime_error(file.string() + ": no tensor " + name);
  if (it->second.shape != moe::Shape{rows, cols})
    throw std::runtime_error(file.string() + ": " + name + " has shape " + moe::shape_to_string(it->second.shape) +
                             ", expected " + moe::shape_to_string({rows, cols}));
  return Eigen::Map<const Matrix>(it->second.data.data(), rows, cols);
}

/// Forward and backward of sum(y * dy) + aux; then, with an aux loss, the gradients of the aux loss alone.
/// With a padding mask the selection has a row per unpadded token.
template <class Layer>
Dict compute(Layer& layer, const Config& config, const Matrix& x, const Matrix& dy, bool has_aux, Matrix& selected) {
  const auto parameters = layer.named_parameters();
  const moe::PaddingMask padding = padding_of(config);
  auto forward = [&]() -> const Matrix& { return padding.size() > 0 ? layer.forward(x, padding) : layer.forward(x); };
  moe::zero_grad(parameters);
  Dict out;
  out["y"] = tensor(forward());
  selected = layer.routing().experts.template cast<float>();
  out["aux"] = {{}, moe::VectorX<float>::Constant(1, layer.aux_loss())};
  out["dx"] = tensor(layer.backward(dy));
  for (const auto& p : parameters) out["grad." + p.name] = tensor(p.parameter->grad, p.parameter->shape);
  if (has_aux) {
    moe::zero_grad(parameters);
    forward();
    out["aux_only.dx"] = tensor(layer.backward(Matrix::Zero(dy.rows(), dy.cols())));
    for (const auto& p : parameters)
      if (p.name == "router.weight") out["aux_only.grad.router.weight"] = tensor(p.parameter->grad, p.parameter->shape);
  }
  return out;
}

double rel_err(const moe::Tensor<float>& a, const moe::Tensor<float>& b) {
  if (a.shape != b.shape) return INFINITY;
  if (b.data.size() == 0) return 0.0;
  const Eigen::VectorXd ad = a.data.cast<double>(), bd = b.data.cast<double>();
  return (ad - bd).cwiseAbs().maxCoeff() / std::max(bd.cwiseAbs().maxCoeff(), 1e-30);
}

/// Where the selections first differ, or "".
std::string selection_difference(const Matrix& ours, const Matrix& theirs) {
  if (ours.rows() != theirs.rows() || ours.cols() != theirs.cols()) return "selection shapes differ";
  for (Index t = 0; t < ours.rows(); ++t)
    if (ours.row(t) != theirs.row(t)) {
      std::string text = "token " + std::to_string(t) + ": moe selected";
      for (Index j = 0; j < ours.cols(); ++j) text += " " + std::to_string(static_cast<int>(ours(t, j)));
      text += ", torch";
      for (Index j = 0; j < theirs.cols(); ++j) text += " " + std::to_string(static_cast<int>(theirs(t, j)));
      return text;
    }
  return "";
}

/// A seed from the config's name that is the same with every standard library (std::hash is not).
std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (const unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

template <class Layer>
bool run_config(Mode mode, const Config& config, const fs::path& dir) {
  moe::Rng rng(fnv1a(config.name));
  Layer layer(options_for<Layer>(config), rng);
  if (config.balancer == "sequence_bias")  // a bias that changes the selection, as after some training
    for (auto& buffer : layer.named_buffers())
      if (buffer.name == "balancer.expert_bias") moe::fill_normal(*buffer.value, rng, 0.0, 0.05);
  const bool has_aux = config.balancer != "none";
  const Metadata metadata = metadata_of(config, layer);
  Matrix selected;

  if (mode == Mode::write) {
    Matrix x(config.tokens, config.d_model), dy(config.tokens, config.d_model);
    moe::fill_normal(x, rng, 0.0, 1.0);
    moe::fill_normal(dy, rng, 0.0, 1.0);
    Dict inputs = moe::state_dict(layer);
    const Dict outputs = compute(layer, config, x, dy, has_aux, selected);
    inputs["x"] = tensor(x);
    inputs["dy"] = tensor(dy);
    inputs["selected"] = tensor(selected);
    moe::save_safetensors(dir / (config.name + "_inputs.safetensors"), inputs, metadata);
    moe::save_safetensors(dir / (config.name + "_outputs.safetensors"), outputs, metadata);
    std::printf("%-24s wrote %s_{inputs,outputs}.safetensors\n", config.name.c_str(), config.name.c_str());
    return true;
  }

  const fs::path model_file = dir / ("torch_" + config.name + "_model.safetensors");
  const fs::path data_file = dir / ("torch_" + config.name + "_data.safetensors");
  moe::load_module(model_file, layer);
  auto [reference, reference_metadata] = moe::load_safetensors<float>(data_file);
  for (const auto& [key, value] : metadata)
    if (!reference_metadata.contains(key) || reference_metadata.at(key) != value)
      throw std::runtime_error(data_file.string() + ": its metadata is not the config " + config.name +
                             " of this program");
  const Matrix x = matrix(reference, "x", config.tokens, config.d_model, data_file);
  const Matrix dy = matrix(reference, "dy", config.tokens, config.d_model, data_file);
  const Index routed_rows = config.tokens - std::accumulate(config.left_padding.begin(), config.left_padding.end(),
                                                             Index{0});
  // Expert choice gives each token 0..N experts: the selection is as wide as the most any token got.
  Index selected_width = layer.k();
  if constexpr (moe::ExpertChoiceRouter<typename Layer::RouterType>)
    if (const auto it = reference.find("selected"); it != reference.end() && it->second.shape.size() == 2)
      selected_width = it->second.shape[1];
  const Matrix torch_selected = matrix(reference, "selected", routed_rows, selected_width, data_file);
  for (const char* name : {"x", "dy", "selected"}) reference.erase(name);

  const Dict ours = compute(layer, config, x, dy, has_aux, selected);
  bool ok = true;
  if (const std::string difference = selection_difference(selected, torch_selected); !difference.empty()) {
    std::printf("%-24s routing difference: %s\n", config.name.c_str(), difference.c_str());
    ok = false;
  }
  double worst = 0.0;
  for (const auto& [name, theirs] : reference)
    if (!ours.contains(name)) {
      std::printf("%-24s %s: torch wrote it, moe has no such tensor\n", config.name.c_str(), name.c_str());
      ok = false;
    }
  for (const auto& [name, mine] : ours) {
    const auto it = reference.find(name);
    if (it == reference.end()) {
      std::printf("%-24s %s: missing in %s\n", config.name.c_str(), name.c_str(), data_file.c_str());
      ok = false;
      continue;
    }
    const double error = rel_err(mine, it->second);
    worst = std::max(worst, error);
    const bool pass = error <= tolerance;
    ok = ok && pass;
    std::printf("%-24s %-34s %12.3e%s\n", config.name.c_str(), name.c_str(), error, pass ? "" : "  FAIL");
  }
  std::printf("%-24s max error %.3e  %s\n\n", config.name.c_str(), worst, ok ? "ok" : "FAIL");
  return ok;
}

int usage() {
  std::fprintf(stderr,
               "usage: moe_crosscheck write DIR | check-torch DIR [CONFIG...]\n"
               "  write        writes <config>_{inputs,outputs}.safetensors for tests/peers/torch_moe.py\n"
               "  check-torch  compares with torch_<config>_{model,data}.safetensors that torch_moe.py wrote\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string command = argv[1];
  const fs::path dir = argv[2];
  const std::vector<std::string> only(argv + 3, argv + argc);
  Mode mode;
  if (command == "write")
    mode = Mode::write;
  else if (command == "check-torch")
    mode = Mode::check_torch;
  else
    return usage();
  try {
    if (mode == Mode::write) fs::create_directories(dir);
    bool ok = true;
    for (const Config& config : configs())
      if (only.empty() || std::find(only.begin(), only.end(), config.name) != only.end())
        ok = config.run(mode, config, dir) && ok;
    if (mode == Mode::check_torch) std::printf("moe_crosscheck: %s\n", ok ? "all configs agree with PyTorch" : "FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "moe_crosscheck: %s\n", error.what());
    return 1;
  }
}
