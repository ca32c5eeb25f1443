#pragma once
// The CNN + MoE image classifier of "Do Experts Specialize?" (Poetzscher, section 5), shared by the
// router_ablation, class_routing and moe_depth examples.
//
// Base model: 4 convolutions (3x3, stride 1, padding 1, ReLU; 128, 256, 256, 512 filters; a 2x2 max pool
// after the 1st, 3rd and 4th), a final max pool to 1x1, the MoE layer (K = 1, softmax router, Switch aux
// loss) on the 512 features, a linear head. Short model (Experiment 3): the first convolution and its 2x2
// pool only, then a final max pool to 2x2, so that 128 x 2 x 2 = 512 features reach the MoE as well.
//
// The document's final pools are a 4x4 pool (base) and an 8x8 pool (short) on 32x32 CIFAR-10 images,
// where they leave 1x1 and 2x2. Here the final pool is adaptive to those output sizes: on 32x32 inputs its
// windows are exactly the document's, and on 28x28 Fashion-MNIST (3x3 after the base model's convolutions,
// 14x14 after the short model's) the MoE still sees 512 features, where a 4x4 pool would not fit.

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "moe/balancing/aux_loss.hpp"
#include "moe/core/image_shape.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "backends/cpu/cpu_backend.hpp"
#include "moe/layer/moe_layer.hpp"
#include "moe/nn/activation.hpp"
#include "moe/nn/conv2d.hpp"
#include "moe/nn/feed_forward.hpp"
#include "moe/nn/linear.hpp"
#include "moe/nn/pool.hpp"
#include "moe/routing/expert_choice.hpp"
#include "moe/routing/random_router.hpp"
#include "moe/routing/softmax_top_k.hpp"

namespace moe::examples {

/// Where the MoE layer sits: after the four convolutions (the base model) or after the first one (the
/// document's "short model" of Experiment 3).
enum class CnnDepth { base, short_model };

inline const char* depth_name(CnnDepth depth) { return depth == CnnDepth::base ? "base" : "short"; }

struct CnnMoEOptions {
  ImageShape input{1, 28, 28};
  Index classes = 10;
  Index experts = 2;
  CnnDepth depth = CnnDepth::base;
  /// Multiplies every filter count (128, 256, 256, 512), and so the MoE's 512 features: the quick presets
  /// scale the model down with it. 1 is the document's model.
  double width = 1.0;
  /// Each expert is FeedForward d -> hidden -> d with ReLU; the document does not give the expert's width.
  double expert_hidden_ratio = 2.0;
  /// Switch aux loss weight (the document's 1e-5: section 5).
  double aux_weight = 1e-5;
};

using CnnExpert = FeedForward<ReLU, float>;
using CnnMoELayer = MoELayer<CnnExpert, SoftmaxTopK, 1, SwitchAuxLoss>;
/// The same experts behind RandomRouter (Experiment 1's ablation), made by CnnMoELayer::with_router.
using RandomRoutedCnnMoELayer = MoELayer<CnnExpert, RandomRouter, 1, SwitchAuxLoss>;
/// The MoE routed by expert choice instead (Zhou et al. 2022, capacity factor 1): each expert takes its
/// batch / N best images of each batch, an image gets 0..N experts, and there is no aux loss (the load is
/// balanced by construction).
using ExpertChoiceCnnMoELayer = MoELayer<CnnExpert, ExpertChoice, 1, NoBalancing>;

/// The document's filter count scaled by the width multiplier, at least 1.
inline Index scaled_filters(Index filters, double width) {
  require(width > 0.0 && std::isfinite(width), "CnnMoEOptions: width must be positive, got ", width);
  return std::max<Index>(1, static_cast<Index>(std::lround(static_cast<double>(filters) * width)));
}

/// Conv2d (3x3, stride 1, padding 1), ReLU, and an optional 2x2 max pool.
class ConvBlock {
 public:
  ConvBlock(ImageShape input, Index filters, bool pool, Rng& rng)
      : conv_(input, filters, 3, rng, {.stride = 1, .padding = 1}) {
    if (pool) pool_.emplace(conv_.output_shape(), 2);
  }

  const ImageShape& output_shape() const { return pool_ ? pool_->output_shape() : conv_.output_shape(); }
  /// Multiply-accumulates of the convolution's forward pass for one image.
  double forward_macs() const {
    const ImageShape& out = conv_.output_shape();
    return static_cast<double>(out.size()) * static_cast<double>(conv_.in_channels() * 9);
  }

  const Matrix& forward(ConstRef<float> x) {
    const Matrix& y = relu_.forward(conv_.forward(x));
    return pool_ ? pool_->forward(y) : y;
  }
  const Matrix& backward(ConstRef<float> dy) {
    if (pool_) return conv_.backward(relu_.backward(pool_->backward(dy)));
    return conv_.backward(relu_.backward(dy));
  }
  ParameterList<float> named_parameters() { return conv_.named_parameters(); }

 private:
  Conv2d<float> conv_;
  ReLU<float> relu_;
  std::optional<MaxPool2d<float>> pool_;
};

/// The model with MoE layer `Layer`: CnnMoEModel (the document's) or ExpertChoiceCnnMoEModel.
template <class Layer>
class BasicCnnMoEModel {
 public:
  using MoELayerType = Layer;

  BasicCnnMoEModel(const CnnMoEOptions& options, Rng& rng)
      : options_(options), final_pool_(build_trunk(rng), final_pool_size(options.depth)),
        moe_(moe_options(final_pool_.output_shape().size(), options), rng),
        head_(final_pool_.output_shape().size(), options.classes, rng) {}

  const CnnMoEOptions& options() const { return options_; }
  /// Features per image that reach the MoE layer (512 x width).
  Index moe_features() const { return final_pool_.output_shape().size(); }
  Index expert_hidden() const { return expert_hidden(moe_features(), options_); }
  const std::vector<ConvBlock>& blocks() const { return blocks_; }
  Layer& moe() { return moe_; }

  /// Forward multiply-accumulates for one image: the convolutions, the router, one expert (K = 1) and the
  /// head. Training costs about three times this (forward, and two GEMMs per layer backward).
  double forward_macs_per_image() {
    double macs = 0;
    for (const ConvBlock& b : blocks_) macs += b.forward_macs();
    const auto d = static_cast<double>(moe_features());
    macs += d * static_cast<double>(options_.experts) + 2.0 * d * static_cast<double>(expert_hidden()) +
            d * static_cast<double>(options_.classes);
    return macs;
  }

  /// The convolutions and the final pool: the rows the MoE layer routes.
  const Matrix& features(ConstRef<float> x) {
    const Matrix* h = &blocks_.front().forward(x);
    for (std::size_t i = 1; i < blocks_.size(); ++i) h = &blocks_[i].forward(*h);
    return final_pool_.forward(*h);
  }

  /// Logits [N x classes], through the learned router.
  const Matrix& forward(ConstRef<float> x) { return head_.forward(moe_.forward(features(x))); }
  /// The same model with `layer` (e.g. the RandomRouter copy of moe()) in place of the MoE layer.
  template <class Other>
  const Matrix& forward_through(Other& layer, ConstRef<float> x) {
    return head_.forward(layer.forward(features(x)));
  }

  /// After forward(): adds every parameter's gradient (the aux loss's included, through the MoE layer).
  void backward(ConstRef<float> d_logits) {
    const Matrix* g = &final_pool_.backward(moe_.backward(head_.backward(d_logits)));
    for (std::size_t i = blocks_.size(); i-- > 0;) g = &blocks_[i].backward(*g);
  }

  ParameterList<float> named_parameters() {
    ParameterList<float> list;
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      append_prefixed(list, blocks_[i].named_parameters(), "conv" + std::to_string(i + 1) + ".");
    append_prefixed(list, moe_.named_parameters(), "moe.");
    append_prefixed(list, head_.named_parameters(), "head.");
    return list;
  }

  /// The MoE layer's buffers and generators (the convolutions and the head have none), named as its
  /// parameters.
  BufferList<float> named_buffers() {
    BufferList<float> list;
    append_prefixed(list, moe_.named_buffers(), "moe.");
    return list;
  }
  GeneratorList named_generators() {
    GeneratorList list;
    append_prefixed(list, moe_.named_generators(), "moe.");
    return list;
  }

  void train(bool on = true) { moe_.train(on); }
  void eval() { moe_.eval(); }

 private:
  /// Builds the convolutions and returns the shape the final pool receives.
  ImageShape build_trunk(Rng& rng) {
    const double w = options_.width;
    blocks_.emplace_back(options_.input, scaled_filters(128, w), true, rng);
    if (options_.depth == CnnDepth::base) {
      blocks_.emplace_back(blocks_.back().output_shape(), scaled_filters(256, w), false, rng);
      blocks_.emplace_back(blocks_.back().output_shape(), scaled_filters(256, w), true, rng);
      blocks_.emplace_back(blocks_.back().output_shape(), scaled_filters(512, w), true, rng);
    }
    return blocks_.back().output_shape();
  }

  /// 1x1 after the base model (the document's 4x4 pool on 4x4 maps), 2x2 after the short model (its 8x8
  /// pool on 16x16 maps): 512 features either way.
  static Index final_pool_size(CnnDepth depth) { return depth == CnnDepth::base ? 1 : 2; }

  static Index expert_hidden(Index features, const CnnMoEOptions& o) {
    return std::max<Index>(1, static_cast<Index>(std::lround(o.expert_hidden_ratio * static_cast<double>(features))));
  }

  static typename Layer::Options moe_options(Index features, const CnnMoEOptions& o) {
    require(o.experts >= 1, "CnnMoEOptions: experts must be at least 1, got ", o.experts);
    require(o.expert_hidden_ratio > 0.0, "CnnMoEOptions: expert_hidden_ratio must be positive, got ",
            o.expert_hidden_ratio);
    typename Layer::Options m;
    m.d_model = features;
    m.num_experts = o.experts;
    m.expert = {.hidden = expert_hidden(features, o), .out_features = features};
    if constexpr (requires { m.balancer.alpha; }) m.balancer = {.alpha = o.aux_weight};
    return m;
  }

  CnnMoEOptions options_;
  std::vector<ConvBlock> blocks_;
  AdaptiveMaxPool2d<float> final_pool_;
  Layer moe_;
  Linear<float> head_;
};

using CnnMoEModel = BasicCnnMoEModel<CnnMoELayer>;
using ExpertChoiceCnnMoEModel = BasicCnnMoEModel<ExpertChoiceCnnMoELayer>;

}  // namespace moe::examples
