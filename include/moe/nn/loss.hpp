#pragma once
// Classification losses with PyTorch's definitions and mean reduction, and an accuracy count.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// Softmax cross-entropy of logits [T x C] against class indices, averaged over the rows whose target is
/// not `ignore_index` (PyTorch's nn.CrossEntropyLoss). When every row is ignored the loss is 0 with a zero
/// gradient, where PyTorch returns NaN.
template <class ScalarT = float>
class CrossEntropyLoss {
 public:
  using Scalar = ScalarT;

  explicit CrossEntropyLoss(Index ignore_index = -100) : ignore_index_(ignore_index) {}

  Index ignore_index() const { return ignore_index_; }

  /// Computes the loss, and its gradient for backward, with a log-sum-exp shifted by the row maximum.
  Scalar forward(ConstRef<Scalar> logits, std::span<const Index> targets) {
    const Index classes = logits.cols();
    detail::require(static_cast<Index>(targets.size()) == logits.rows(), "CrossEntropyLoss: got ", targets.size(),
                    " targets for ", logits.rows(), " rows of logits");
    Index counted = 0;
    for (Index t = 0; t < logits.rows(); ++t) {
      const Index target = targets[static_cast<std::size_t>(t)];
      if (target == ignore_index_) continue;
      detail::require(target >= 0 && target < classes, "CrossEntropyLoss: target of row ", t, " is ", target,
                      ", expected a class in [0, ", classes, ") or the ignore index ", ignore_index_);
      ++counted;
    }

    const Scalar scale = Scalar(1) / static_cast<Scalar>(std::max<Index>(counted, 1));
    Scalar total = 0;
    grad_.resize(logits.rows(), classes);
    for (Index t = 0; t < logits.rows(); ++t) {
      const Index target = targets[static_cast<std::size_t>(t)];
      if (target == ignore_index_) {
        grad_.row(t).setZero();
        continue;
      }
      const Scalar max = logits.row(t).maxCoeff();
      grad_.row(t) = (logits.row(t).array() - max).exp();
      const Scalar sum = grad_.row(t).sum();
      total += max + std::log(sum) - logits(t, target);
      grad_.row(t) *= scale / sum;
      grad_(t, target) -= scale;
    }
    return total * scale;
  }

  /// d loss / d logits of the last forward; ignored rows are zero.
  const MatrixX<Scalar>& backward() const { return grad_; }

 private:
  Index ignore_index_;
  MatrixX<Scalar> grad_;
};

/// Sigmoid and binary cross-entropy in one, averaged over all elements (PyTorch's nn.BCEWithLogitsLoss):
/// max(x, 0) - x y + log(1 + exp(-|x|)), which stays finite for any x.
template <class ScalarT = float>
class BCEWithLogitsLoss {
 public:
  using Scalar = ScalarT;

  Scalar forward(ConstRef<Scalar> logits, ConstRef<Scalar> targets) {
    detail::require(logits.rows() == targets.rows() && logits.cols() == targets.cols(),
                    "BCEWithLogitsLoss: logits have shape ", logits.rows(), "x", logits.cols(),
                    ", targets have shape ", targets.rows(), "x", targets.cols());
    const Scalar scale = Scalar(1) / static_cast<Scalar>(std::max<Index>(logits.size(), 1));
    Scalar total = 0;
    grad_.resize(logits.rows(), logits.cols());
    for (Index i = 0; i < logits.rows(); ++i) {
      for (Index j = 0; j < logits.cols(); ++j) {
        const Scalar x = logits(i, j);
        const Scalar y = targets(i, j);
        const Scalar e = std::exp(-std::abs(x));  // in (0, 1]: no overflow
        total += std::max(x, Scalar(0)) - x * y + std::log1p(e);
        const Scalar sigmoid = x >= Scalar(0) ? Scalar(1) / (Scalar(1) + e) : e / (Scalar(1) + e);
        grad_(i, j) = (sigmoid - y) * scale;
      }
    }
    return total * scale;
  }

  /// d loss / d logits of the last forward: (sigmoid(x) - y) / count.
  const MatrixX<Scalar>& backward() const { return grad_; }

 private:
  MatrixX<Scalar> grad_;
};

/// Rows whose argmax (ties to the lower index) equals the target; no target is ignored. Called as
/// count_correct<float>(logits, targets): the Scalar is not deduced through ConstRef.
template <class Scalar>
Index count_correct(ConstRef<Scalar> logits, std::span<const Index> targets) {
  detail::require(static_cast<Index>(targets.size()) == logits.rows(), "count_correct: got ", targets.size(),
                  " targets for ", logits.rows(), " rows of logits");
  detail::require(logits.cols() > 0, "count_correct: logits have no columns");
  Index correct = 0;
  for (Index t = 0; t < logits.rows(); ++t) {
    Index best = 0;
    for (Index c = 1; c < logits.cols(); ++c)
      if (logits(t, c) > logits(t, best)) best = c;
    if (best == targets[static_cast<std::size_t>(t)]) ++correct;
  }
  return correct;
}

}  // namespace moe
