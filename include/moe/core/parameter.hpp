#pragma once
// Trainable parameters and the named lists modules expose, with PyTorch's dotted names.

#include <new>
#include <string>
#include <utility>
#include <vector>

#include "moe/core/error.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// The shape a tensor has in PyTorch. Tensors are stored as row-major matrices whose elements are in
/// PyTorch's order: a 1-D bias of n is one row, shape {n}; a conv weight [out x in*kh*kw] has shape
/// {out, in, kh, kw}.
using Shape = std::vector<Index>;

/// A trained tensor and its accumulated gradient. `value` and `grad` are row-major maps of storage the
/// Parameter owns (the default) or, after bind(), of memory someone else owns: an expert bank stacks all
/// its experts' weights in one tensor, so that a backend can run one grouped GEMM, while each expert's
/// modules keep their Parameters as views into it. Either way they read and write as matrices of a fixed
/// shape, giving the same numbers; only the way to the memory differs.
///
/// A copy always owns its data (a copied module never aliases the original); a move keeps a view a view
/// of the same memory.
template <class Scalar>
class Parameter {
 public:
  using View = Eigen::Map<MatrixX<Scalar>>;

  View value{nullptr, 0, 0};
  View grad{nullptr, 0, 0};
  Shape shape;

  Parameter() = default;
  Parameter(Index rows, Index cols)
      : shape{rows, cols},
        owned_value_(MatrixX<Scalar>::Zero(rows, cols)),
        owned_grad_(MatrixX<Scalar>::Zero(rows, cols)) {
    point_at_owned();
  }
  static Parameter vector(Index size) {
    Parameter p(1, size);
    p.shape = {size};
    return p;
  }

  Parameter(const Parameter& other) : shape(other.shape), owned_value_(other.value), owned_grad_(other.grad) {
    point_at_owned();
  }
  Parameter(Parameter&& other) noexcept { *this = std::move(other); }
  /// Copies into a temporary first, so that a failed allocation leaves this Parameter as it was.
  Parameter& operator=(const Parameter& other) { return *this = Parameter(other); }
  Parameter& operator=(Parameter&& other) noexcept {
    if (this == &other) return *this;
    shape = std::move(other.shape);
    owned_value_ = std::move(other.owned_value_);
    owned_grad_ = std::move(other.owned_grad_);
    is_view_ = other.is_view_;
    if (is_view_)
      point_at(other.value.data(), other.grad.data(), other.value.rows(), other.value.cols());
    else
      point_at_owned();
    other.clear();
    return *this;
  }

  /// Copies value and grad into `value_data` and `grad_data` (rows*cols elements each, row-major), makes
  /// value and grad views of them and frees the Parameter's own storage. The memory must outlive the
  /// Parameter's use of it. Align it as Eigen aligns its own storage (ExpertBank starts every slice on 64
  /// bytes): Eigen picks vectorised or scalar code by address, and a reduction (a bias gradient) rounds
  /// differently in each, so only then are the bits those of the Parameter's own storage. With `copy`
  /// false the memory already holds them, and is not written (ExpertBank: pages never written take no memory).
  void bind(Scalar* value_data, Scalar* grad_data, bool copy = true) {
    const Index rows = value.rows(), cols = value.cols();
    detail::require(value.size() == 0 || (value_data != nullptr && grad_data != nullptr),
                    "Parameter::bind: null memory for a parameter of shape ", rows, "x", cols);
    if (copy) {
      View(value_data, rows, cols) = value;
      View(grad_data, rows, cols) = grad;
    }
    point_at(value_data, grad_data, rows, cols);
    owned_value_ = MatrixX<Scalar>();
    owned_grad_ = MatrixX<Scalar>();
    is_view_ = true;
  }
  bool is_view() const { return is_view_; }

  void zero_grad() { grad.setZero(); }

 private:
  /// Eigen's way to re-point a Map: construct it anew in place.
  void point_at(Scalar* value_data, Scalar* grad_data, Index rows, Index cols) {
    new (&value) View(value_data, rows, cols);
    new (&grad) View(grad_data, rows, cols);
  }
  void point_at_owned() {
    point_at(owned_value_.data(), owned_grad_.data(), owned_value_.rows(), owned_value_.cols());
    is_view_ = false;
  }
  /// What a moved-from Parameter is: empty, owning.
  void clear() {
    shape.clear();
    owned_value_ = MatrixX<Scalar>();
    owned_grad_ = MatrixX<Scalar>();
    point_at_owned();
  }

  // Eigen-aligned storage while the Parameter owns its data, empty while it is a view.
  MatrixX<Scalar> owned_value_, owned_grad_;
  bool is_view_ = false;
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
