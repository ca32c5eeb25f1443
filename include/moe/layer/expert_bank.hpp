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

#include <concepts>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
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

/// A zero [rows x cols] row-major matrix (a Map of memory it owns) from calloc, 64-byte aligned: the C library
/// hands out fresh pages for large blocks without writing them, and the system gives a page memory only when
/// it is first written, so the part never written (the gradients of a bank that only runs inference) costs no
/// memory. Copies are deep; a move keeps the memory where it is.
template <class Scalar>
class ZeroedMatrix : public Eigen::Map<MatrixX<Scalar>> {
  using Base = Eigen::Map<MatrixX<Scalar>>;

 public:
  static constexpr std::size_t alignment = 64;

  ZeroedMatrix() : Base(nullptr, 0, 0) {}
  ZeroedMatrix(Index rows, Index cols) : Base(nullptr, 0, 0) {
    const auto count = static_cast<std::size_t>(rows * cols) + alignment / sizeof(Scalar);
    memory_.reset(std::calloc(count, sizeof(Scalar)));  // calloc checks count * size for overflow
    if (!memory_) throw std::bad_alloc();
    const auto address = reinterpret_cast<std::uintptr_t>(memory_.get());
    point_at(reinterpret_cast<Scalar*>((address + alignment - 1) / alignment * alignment), rows, cols);
  }
  ZeroedMatrix(const ZeroedMatrix& other) : ZeroedMatrix(other.rows(), other.cols()) { Base::operator=(other); }
  ZeroedMatrix& operator=(const ZeroedMatrix& other) { return *this = ZeroedMatrix(other); }
  ZeroedMatrix(ZeroedMatrix&& other) noexcept : Base(nullptr, 0, 0) { *this = std::move(other); }
  ZeroedMatrix& operator=(ZeroedMatrix&& other) noexcept {
    memory_ = std::move(other.memory_);
    point_at(other.data(), other.rows(), other.cols());
    other.point_at(nullptr, 0, 0);
    return *this;
  }

 private:
  struct Free {
    void operator()(void* memory) const { std::free(memory); }
  };

  /// Eigen's way to re-point a Map: construct it anew in place.
  void point_at(Scalar* data, Index rows, Index cols) { new (static_cast<Base*>(this)) Base(data, rows, cols); }

  std::unique_ptr<void, Free> memory_;
};

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
  /// Zero until written, and memory only once written (detail::ZeroedMatrix).
  struct Stack {
    std::string name;  // the expert's own name for it ("fc1.weight")
    Shape shape;       // one expert's, PyTorch's
    Index rows = 0, cols = 0;  // one expert's matrix
    detail::ZeroedMatrix<Scalar> value, grad;  // [N x stride]

    Index stride() const { return value.cols(); }
    Scalar* value_of(Index e) { return value.data() + e * stride(); }
    Scalar* grad_of(Index e) { return grad.data() + e * stride(); }
  };

  /// Experts are built one after the other from the same generator, so their initial weights do not
  /// depend on whether the bank is stacked, nor on which part of the layer's experts it holds: every expert
  /// is drawn, and those outside `held` are let go. With ZeroInit (experts that take it) every parameter is
  /// zero and nothing is drawn.
  template <ParameterInit Init>
  ExpertBank(Index num_experts, Index d_model, const typename ExpertT::Options& options, Init&& init)
      : ExpertBank(num_experts, d_model, options, init, {0, num_experts}) {}
  template <ParameterInit Init>
  ExpertBank(Index num_experts, Index d_model, const typename ExpertT::Options& options, Init&& init,
             ExpertRange held)
      : d_model_(d_model), options_(options), first_(held.first) {
    detail::require(num_experts > 0, "ExpertBank: num_experts must be positive, got ", num_experts);
    detail::require(held.first >= 0 && held.count > 0 && held.first + held.count <= num_experts,
                    "ExpertBank: held experts [", held.first, ", ", held.first + held.count, ") are not a part of [0, ",
                    num_experts, ")");
    experts_.reserve(static_cast<std::size_t>(held.count));  // never moved: each expert's views stay bound
    for (Index e = 0; e < num_experts; ++e) {
      if (e >= held.first && e < held.first + held.count) {
        experts_.emplace_back(d_model, options, init);
        // Into the stacks at once, so that all experts' own storage and the stacks never coexist. The stacks
        // are zero, as a new expert's gradients are, and its values with ZeroInit: only drawn values are
        // written, so unwritten pages stay free.
        if constexpr (stacked)
          bind_expert(static_cast<std::size_t>(e - held.first), held.count,
                      std::same_as<std::remove_cvref_t<Init>, Rng> ? Carry::values : Carry::nothing);
      } else if constexpr (std::same_as<std::remove_cvref_t<Init>, Rng>) {
        (void)ExpertT(d_model, options, init);  // drawn, so that the next experts get the same weights
      }
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

  /// What bind_expert copies into the stacks: what they do not hold already.
  enum class Carry { values_and_grads, values, nothing };

  /// Points every expert's parameters into the stacks, carrying their current values and gradients over.
  void bind() {
    if constexpr (stacked)
      for (std::size_t e = 0; e < experts_.size(); ++e) bind_expert(e, size(), Carry::values_and_grads);
  }

  /// Points expert e's parameters into row e of the stacks, carrying over what `carry` says (the rest must
  /// be there already); makes zero stacks of `count` experts, shaped as expert e's parameters, if there are
  /// none yet.
  void bind_expert(std::size_t e, Index count, Carry carry) {
    const auto parameters = experts_[e].named_parameters();
    if (stacks_.empty()) {
      constexpr Index per_slice = slice_alignment / static_cast<Index>(sizeof(Scalar));
      for (const auto& p : parameters) {
        const Index rows = p.parameter->value.rows(), cols = p.parameter->value.cols();
        const Index stride = (rows * cols + per_slice - 1) / per_slice * per_slice;
        stacks_.push_back({p.name, p.parameter->shape, rows, cols, detail::ZeroedMatrix<Scalar>(count, stride),
                           detail::ZeroedMatrix<Scalar>(count, stride)});
      }
    }
    const auto row = static_cast<Index>(e);
    for (std::size_t i = 0; i < stacks_.size(); ++i) {
      Parameter<Scalar>& p = *parameters[i].parameter;
      if (carry == Carry::values)
        Eigen::Map<MatrixX<Scalar>>(stacks_[i].value_of(row), p.value.rows(), p.value.cols()) = p.value;
      p.bind(stacks_[i].value_of(row), stacks_[i].grad_of(row), carry == Carry::values_and_grads);
    }
  }

  Index d_model_;
  typename ExpertT::Options options_;
  Index first_ = 0;
  std::vector<ExpertT> experts_;
  std::vector<Stack> stacks_;
};

}  // namespace moe
