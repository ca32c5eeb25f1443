#pragma once
// A lookup table from token ids to vectors, as PyTorch's nn.Embedding.

#include <cstddef>
#include <optional>
#include <span>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/parameter.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// y[t] = weight[ids[t]], weight [num_embeddings x dim] named "weight". Its input is ids, not a matrix,
/// so it is not a moe::Module: forward takes a span of ids and backward returns nothing.
template <class ScalarT = float>
class Embedding {
 public:
  using Scalar = ScalarT;

  /// PyTorch's initialisation: weight N(0, 1), with the row of `padding_idx` (if any) set to zero. A
  /// negative padding_idx counts from the end, as in PyTorch.
  Embedding(Index num_embeddings, Index dim, Rng& rng, std::optional<Index> padding_idx = std::nullopt)
      : weight_(checked(num_embeddings, "num_embeddings"), checked(dim, "dim")) {
    if (padding_idx) {
      detail::require(*padding_idx >= -num_embeddings && *padding_idx < num_embeddings,
                      "Embedding: padding_idx must be in [", -num_embeddings, ", ", num_embeddings, "), got ",
                      *padding_idx);
      padding_idx_ = *padding_idx < 0 ? *padding_idx + num_embeddings : *padding_idx;
    }
    fill_normal(weight_.value, rng, 0.0, 1.0);
    if (padding_idx_) weight_.value.row(*padding_idx_).setZero();
  }

  Index num_embeddings() const { return weight_.value.rows(); }
  Index dim() const { return weight_.value.cols(); }
  std::optional<Index> padding_idx() const { return padding_idx_; }

  /// The rows of `ids`, [ids.size() x dim]. Every id is checked before anything is written.
  const MatrixX<Scalar>& forward(std::span<const Index> ids) {
    for (std::size_t t = 0; t < ids.size(); ++t)
      detail::require(ids[t] >= 0 && ids[t] < num_embeddings(), "Embedding: id ", ids[t], " at position ", t,
                      " is out of range, expected an id in [0, ", num_embeddings(), ")");
    ids_.assign(ids.begin(), ids.end());
    output_.resize(static_cast<Index>(ids.size()), dim());
    for (std::size_t t = 0; t < ids.size(); ++t) output_.row(static_cast<Index>(t)) = weight_.value.row(ids[t]);
    return output_;
  }

  /// Adds dy[t] into the gradient of row ids[t], position by position in order (deterministic; a repeated
  /// id sums its rows). The padding row gets no gradient, as in PyTorch.
  void backward(ConstRef<Scalar> dy) {
    detail::require(dy.rows() == static_cast<Index>(ids_.size()) && dy.cols() == dim(),
                    "Embedding: gradient has shape ", dy.rows(), "x", dy.cols(), ", expected ", ids_.size(), "x",
                    dim());
    for (std::size_t t = 0; t < ids_.size(); ++t)
      if (ids_[t] != padding_idx_) weight_.grad.row(ids_[t]) += dy.row(static_cast<Index>(t));
  }

  ParameterList<Scalar> named_parameters() { return {{"weight", &weight_}}; }

  Parameter<Scalar>& weight() { return weight_; }

 private:
  static Index checked(Index size, const char* name) {
    detail::require(size > 0, "Embedding: ", name, " must be positive, got ", size);
    return size;
  }

  Parameter<Scalar> weight_;
  std::optional<Index> padding_idx_;
  std::vector<Index> ids_;
  MatrixX<Scalar> output_;
};

}  // namespace moe
