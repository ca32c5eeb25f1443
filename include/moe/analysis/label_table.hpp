#pragma once
// Which experts the tokens of each label (class, domain, language) are routed to, and how similar the
// labels' routing is: the label-by-expert tables of the routing-analysis figures.

#include <algorithm>
#include <cmath>
#include <span>

#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe {

class LabelExpertTable {
 public:
  LabelExpertTable(Index num_labels, Index num_experts) : counts_(IndexMatrix::Zero(num_labels, num_experts)) {
    detail::require(num_labels > 0, "LabelExpertTable: num_labels must be positive, got ", num_labels);
    detail::require(num_experts > 0, "LabelExpertTable: num_experts must be positive, got ", num_experts);
  }

  Index num_labels() const { return counts_.rows(); }
  Index num_experts() const { return counts_.cols(); }

  /// Counts each (label of token t, expert in experts(t, k)) pair. `experts` is [T x K] as in
  /// Routing::indices, -1 marking a dropped slot (skipped); `labels` has T entries. Nothing is counted
  /// when an argument is rejected.
  void add(std::span<const Index> labels, const IndexMatrix& experts) {
    detail::require(static_cast<Index>(labels.size()) == experts.rows(), "LabelExpertTable: ", labels.size(),
                    " labels for ", experts.rows(), " rows of experts, expected one label per row");
    for (Index t = 0; t < experts.rows(); ++t) {
      const Index label = labels[static_cast<std::size_t>(t)];
      detail::require(label >= 0 && label < num_labels(), "LabelExpertTable: label ", label, " at row ", t,
                      ", expected in [0, ", num_labels(), ")");
      for (Index k = 0; k < experts.cols(); ++k) {
        const Index e = experts(t, k);
        detail::require(e >= -1 && e < num_experts(), "LabelExpertTable: expert ", e, " at row ", t, " slot ", k,
                        ", expected in [0, ", num_experts(), ") or -1 (dropped)");
      }
    }
    for (Index t = 0; t < experts.rows(); ++t)
      for (Index k = 0; k < experts.cols(); ++k)
        if (experts(t, k) >= 0) ++counts_(labels[static_cast<std::size_t>(t)], experts(t, k));
  }

  /// [labels x experts] assignment counts.
  const IndexMatrix& counts() const { return counts_; }

  /// Each row divided by its sum: the share of a label's assignments each expert got. A label without
  /// tokens has a row of zeros.
  MatrixX<double> fractions() const {
    MatrixX<double> out = counts_.cast<double>();
    for (Index l = 0; l < out.rows(); ++l) {
      const double total = out.row(l).sum();
      if (total > 0.0) out.row(l) /= total;
    }
    return out;
  }

  /// numpy.cov(fractions()) (ddof 1): labels are the variables, experts the observations. A row whose
  /// counts are all equal (uniform routing, or no tokens) has variance exactly 0.
  MatrixX<double> covariance() const {
    detail::require(num_experts() >= 2, "LabelExpertTable: covariance needs at least 2 experts, got ", num_experts());
    const MatrixX<double> centred = centred_fractions();
    const auto ddof1 = static_cast<double>(num_experts() - 1);
    MatrixX<double> out(num_labels(), num_labels());
    for (Index a = 0; a < num_labels(); ++a)
      for (Index b = a; b < num_labels(); ++b) out(a, b) = out(b, a) = centred.row(a).dot(centred.row(b)) / ddof1;
    return out;
  }

  /// numpy.corrcoef(fractions()): Pearson correlation between the labels' routing, exactly symmetric.
  /// Where numpy gives nan, for a row of zero variance (see covariance), its correlation is 0 with other
  /// labels and 1 with itself.
  MatrixX<double> correlation() const {
    const MatrixX<double> cov = covariance();
    const Eigen::VectorXd stddev = cov.diagonal().cwiseSqrt();
    MatrixX<double> out = MatrixX<double>::Identity(num_labels(), num_labels());
    for (Index a = 0; a < num_labels(); ++a)
      for (Index b = a + 1; b < num_labels(); ++b)
        if (stddev(a) > 0.0 && stddev(b) > 0.0)
          out(a, b) = out(b, a) = std::clamp(cov(a, b) / stddev(a) / stddev(b), -1.0, 1.0);
    return out;
  }

  void reset() { counts_.setZero(); }

 private:
  /// Fractions minus each row's mean; rows of equal counts are set to exactly zero, which rounding in
  /// the mean would otherwise miss.
  MatrixX<double> centred_fractions() const {
    MatrixX<double> out = fractions();
    for (Index l = 0; l < out.rows(); ++l) {
      if ((counts_.row(l).array() == counts_(l, 0)).all())
        out.row(l).setZero();
      else
        out.row(l).array() -= out.row(l).mean();
    }
    return out;
  }

  IndexMatrix counts_;
};

}  // namespace moe
