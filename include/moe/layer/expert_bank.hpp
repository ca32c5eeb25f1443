#pragma once
// ExpertBank<Expert>: the N routed experts of one MoE layer, which a backend runs.
//
// Experts of the feed-forward kinds (FeedForward<Activation>, SwiGLUFeedForward) are stacked: each of
// their parameters lives in one tensor for all N experts (PyTorch's layout per expert, gradients likewise),
// and each expert's parameters are views into it, so names and state dicts stay `{e}.fc1.weight` while a
// device backend runs one grouped GEMM over the stack. Any other module
// (CNN-fed, Transformer, pretrained) is kept as it is, one module per expert, and runs on the CPU backend.
//
// A bank may hold a contiguous part of the layer's experts (expert parallelism: each process holds its
// block); its experts are then numbered from 0 within the bank and named by their index in the layer.

#include <string>
#include <type_traits>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/module.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"
#include "moe/nn/feed_forward.hpp"

namespace moe {

namespace detail {
template <class E>
struct IsFeedForwardExpert : std::false_type {};
template <template <class> class Activation, class S>
struct IsFeedForwardExpert<FeedForward<Activation, S>> : std::true_type {};
template <class S>
struct IsFeedForwardExpert<SwiGLUFeedForward<S>> : std::true_type {};
}  // namespace detail

/// The experts whose banks are stacked, so that a device backend can run them as grouped GEMMs.
template <class E>
concept FeedForwardExpert = detail::IsFeedForwardExpert<E>::value;

/// The experts [first, first + count) of a layer's num_experts.
struct ExpertRange {
  Index first = 0;
  Index count = 0;
};

template <class ExpertT>
class ExpertBank {
 public:
  using Scalar = typename ExpertT::Scalar;
  using ExpertType = ExpertT;
  static constexpr bool stacked = FeedForwardExpert<ExpertT>;

  /// Each expert's slice starts on a multiple of this many bytes, as Eigen's own matrices do (64 covers
  /// AVX-512): Eigen picks vectorised or scalar code by address, and a reduction (a bias gradient) on a
  /// misaligned view would round differently from the same expert's own storage.
  static constexpr Index slice_alignment = 64;

  /// One parameter of every expert: row e of value and grad holds expert e's tensor, row-major, in its first
  /// rows * cols elements. The rows are contiguous unless a tensor's size is not a multiple of 64 bytes.
  struct Stack {
    std::string name;  // the expert's own name for it ("fc1.weight")
    Shape shape;       // one expert's, PyTorch's
    Index rows = 0, cols = 0;  // one expert's matrix
    MatrixX<Scalar> value, grad;  // [N x stride]

    Index stride() const { return value.cols(); }
    Scalar* value_of(Index e) { return value.data() + e * stride(); }
    Scalar* grad_of(Index e) { return grad.data() + e * stride(); }
  };

  /// Experts are built one after the other from the same generator, so their initial weights do not
  /// depend on whether the bank is stacked, nor on which part of the layer's experts it holds: every expert
  /// is drawn, and those outside `held` are let go.
  ExpertBank(Index num_experts, Index d_model, const typename ExpertT::Options& options, Rng& rng)
      : ExpertBank(num_experts, d_model, options, rng, {0, num_experts}) {}
  ExpertBank(Index num_experts, Index d_model, const typename ExpertT::Options& options, Rng& rng,
             ExpertRange held)
      : d_model_(d_model), options_(options), first_(held.first) {
    detail::require(num_experts > 0, "ExpertBank: num_experts must be positive, got ", num_experts);
    detail::require(held.first >= 0 && held.count > 0 && held.first + held.count <= num_experts,
                    "ExpertBank: held experts [", held.first, ", ", held.first + held.count, ") are not a part of [0, ",
                    num_experts, ")");
    experts_.reserve(static_cast<std::size_t>(held.count));
    for (Index e = 0; e < num_experts; ++e) {
      if (e >= held.first && e < held.first + held.count)
        experts_.emplace_back(d_model, options, rng);
      else
        (void)ExpertT(d_model, options, rng);  // drawn, so that the next experts get the same weights
    }
    if constexpr (stacked) {
      constexpr Index per_slice = slice_alignment / static_cast<Index>(sizeof(Scalar));
      for (const auto& p : experts_.front().named_parameters()) {
        const Index rows = p.parameter->value.rows(), cols = p.parameter->value.cols();
        const Index stride = (rows * cols + per_slice - 1) / per_slice * per_slice;
        stacks_.push_back({p.name, p.parameter->shape, rows, cols, MatrixX<Scalar>::Zero(held.count, stride),
                           MatrixX<Scalar>::Zero(held.count, stride)});
      }
      bind();
    }
  }

  /// A copy owns its experts and stacks: nothing is shared with the original.
  ExpertBank(const ExpertBank& other)
      : d_model_(other.d_model_),
        options_(other.options_),
        first_(other.first_),
        experts_(other.experts_),
        stacks_(other.stacks_) {
    bind();
  }
  ExpertBank& operator=(const ExpertBank& other) {
    d_model_ = other.d_model_;
    options_ = other.options_;
    first_ = other.first_;
    experts_ = other.experts_;
    stacks_ = other.stacks_;
    bind();
    return *this;
  }
  // Moving keeps every heap buffer where it is, so the views stay valid.
  ExpertBank(ExpertBank&&) noexcept = default;
  ExpertBank& operator=(ExpertBank&&) noexcept = default;

  /// The experts the bank holds, numbered 0 .. size() - 1 here.
  Index size() const { return static_cast<Index>(experts_.size()); }
  /// The layer's index of the bank's expert 0.
  Index first() const { return first_; }
  Index d_model() const { return d_model_; }
  /// The options every expert was built with.
  const typename ExpertT::Options& options() const { return options_; }
  Index out_features() const { return experts_.front().out_features(); }
  ExpertT& expert(Index e) { return experts_[static_cast<std::size_t>(e)]; }
  const ExpertT& expert(Index e) const { return experts_[static_cast<std::size_t>(e)]; }

  /// The stacked parameters, in the order of an expert's named_parameters(); empty unless `stacked`.
  std::vector<Stack>& stacks() { return stacks_; }
  const std::vector<Stack>& stacks() const { return stacks_; }

  /// Every expert's parameters, named "{e}.{name}" with e its index in the layer.
  ParameterList<Scalar> named_parameters() {
    ParameterList<Scalar> list;
    for (std::size_t e = 0; e < experts_.size(); ++e)
      append_prefixed(list, experts_[e].named_parameters(), prefix(e));
    return list;
  }
  BufferList<Scalar> named_buffers() {
    BufferList<Scalar> list;
    for (std::size_t e = 0; e < experts_.size(); ++e) append_prefixed(list, buffers_of(experts_[e]), prefix(e));
    return list;
  }
  GeneratorList named_generators() {
    GeneratorList list;
    for (std::size_t e = 0; e < experts_.size(); ++e) append_prefixed(list, generators_of(experts_[e]), prefix(e));
    return list;
  }

  void train(bool on) {
    for (auto& e : experts_) set_training(e, on);
  }

 private:
  std::string prefix(std::size_t e) const { return std::to_string(first_ + static_cast<Index>(e)) + "."; }

  /// Points every expert's parameters into the stacks, carrying their current values and gradients over.
  void bind() {
    if constexpr (stacked) {
      for (std::size_t e = 0; e < experts_.size(); ++e) {
        const auto parameters = experts_[e].named_parameters();
        for (std::size_t i = 0; i < stacks_.size(); ++i)
          parameters[i].parameter->bind(stacks_[i].value_of(static_cast<Index>(e)),
                                        stacks_[i].grad_of(static_cast<Index>(e)));
      }
    }
  }

  Index d_model_;
  typename ExpertT::Options options_;
  Index first_ = 0;
  std::vector<ExpertT> experts_;
  std::vector<Stack> stacks_;
};

}  // namespace moe
