#pragma once
// Trainable parameters and the named lists modules expose, with PyTorch's dotted names.

#include <string>
#include <vector>

#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// The shape a tensor has in PyTorch. Tensors are stored as row-major matrices whose elements are in
/// PyTorch's order: a 1-D bias of n is one row, shape {n}; a conv weight [out x in*kh*kw] has shape
/// {out, in, kh, kw}.
using Shape = std::vector<Index>;

/// A trained tensor and its accumulated gradient.
template <class Scalar>
struct Parameter {
  MatrixX<Scalar> value;
  MatrixX<Scalar> grad;
  Shape shape;

  Parameter() = default;
  Parameter(Index rows, Index cols)
      : value(MatrixX<Scalar>::Zero(rows, cols)), grad(MatrixX<Scalar>::Zero(rows, cols)), shape{rows, cols} {}
  static Parameter vector(Index size) {
    Parameter p(1, size);
    p.shape = {size};
    return p;
  }
  void zero_grad() { grad.setZero(); }
};

template <class Scalar>
struct NamedParameter {
  std::string name;
  Parameter<Scalar>* parameter;
};

template <class Scalar>
using ParameterList = std::vector<NamedParameter<Scalar>>;

/// State that is saved with a model but not trained (the aux-loss-free selection biases).
template <class Scalar>
struct NamedBuffer {
  std::string name;
  MatrixX<Scalar>* value;
  Shape shape;  // PyTorch's shape
};

template <class Scalar>
using BufferList = std::vector<NamedBuffer<Scalar>>;

/// A generator a module owns (a dropout's masks, a random router's choices): a checkpoint saves it so that
/// a resumed run draws what the uninterrupted one would have.
struct NamedGenerator {
  std::string name;
  Rng* rng;
};

using GeneratorList = std::vector<NamedGenerator>;

/// Appends `child`'s list to `out`, each name prefixed by `prefix` (as "experts.3.").
template <class List>
void append_prefixed(List& out, List child, const std::string& prefix) {
  for (auto& entry : child) {
    entry.name = prefix + entry.name;
    out.push_back(std::move(entry));
  }
}

template <class Scalar>
void zero_grad(const ParameterList<Scalar>& parameters) {
  for (const auto& p : parameters) p.parameter->zero_grad();
}

}  // namespace moe
