#pragma once
// Reading class-by-expert routing tables across trials, for the examples of "Do Experts Specialize?":
// aligning each trial's expert numbering to a reference trial, how strongly and how consistently classes
// are grouped, and the markdown tables of the reports.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "moe/analysis/label_table.hpp"
#include "moe/core/types.hpp"

namespace moe::examples {

/// Permutations are tried exhaustively: 8! = 40,320 at most, each scored in N dot products.
inline constexpr Index max_aligned_experts = 8;

/// Expert numbers are arbitrary in each trial. Returns `mapping`, mapping[e] = the reference expert that
/// trial expert e is matched to: the permutation that maximises sum_e <reference column mapping[e],
/// fractions column e>, the similarity of the experts' class profiles (the share of each class they
/// receive). As every column's norm is fixed, this is also the permutation that minimises the squared
/// difference between the two tables. Ties go to the first permutation in lexicographic order.
inline std::vector<Index> align_experts(const MatrixX<double>& reference, const MatrixX<double>& fractions) {
  require(reference.rows() == fractions.rows() && reference.cols() == fractions.cols(),
          "align_experts: reference is ", reference.rows(), "x", reference.cols(), ", fractions ",
          fractions.rows(), "x", fractions.cols(), "; expected the same shape");
  const Index n = fractions.cols();
  require(n >= 1 && n <= max_aligned_experts, "align_experts: ", n,
          " experts, expected 1 to ", max_aligned_experts, " (permutations are tried exhaustively)");
  const MatrixX<double> similarity = fractions.transpose() * reference;  // [trial expert x reference expert]
  std::vector<Index> permutation(static_cast<std::size_t>(n));
  std::iota(permutation.begin(), permutation.end(), Index{0});
  std::vector<Index> best = permutation;
  double best_score = -std::numeric_limits<double>::infinity();
  do {
    double score = 0;
    for (Index e = 0; e < n; ++e) score += similarity(e, permutation[static_cast<std::size_t>(e)]);
    if (score > best_score + 1e-12) {
      best_score = score;
      best = permutation;
    }
  } while (std::next_permutation(permutation.begin(), permutation.end()));
  return best;
}

/// Each image's expert renumbered by `mapping` (from align_experts); -1 (no expert took the image: expert-choice
/// routing) stays -1.
inline std::vector<Index> renumber_experts(const std::vector<Index>& experts, const std::vector<Index>& mapping) {
  std::vector<Index> out;
  out.reserve(experts.size());
  for (Index e : experts) {
    require(e >= -1 && e < static_cast<Index>(mapping.size()), "renumber_experts: expert ", e,
            " outside [0, ", mapping.size(), ") and not -1");
    if (e == -1) {
      out.push_back(-1);
      continue;
    }
    out.push_back(mapping[static_cast<std::size_t>(e)]);
  }
  return out;
}

/// A [T x 1] routing matrix from one expert per image, for LabelExpertTable::add.
inline IndexMatrix as_routing_column(const std::vector<Index>& experts) {
  IndexMatrix m(static_cast<Index>(experts.size()), 1);
  for (std::size_t i = 0; i < experts.size(); ++i) m(static_cast<Index>(i), 0) = experts[i];
  return m;
}

/// Share of all images (counts summed over classes) that the busiest expert receives: 1 / N when the load
/// is balanced, 1 when the router has collapsed onto one expert.
inline double busiest_expert_share(const IndexMatrix& counts) {
  const auto total = static_cast<double>(counts.sum());
  return total > 0 ? static_cast<double>(counts.colwise().sum().maxCoeff()) / total : 0.0;
}

/// Experts that receive at least `min_share` of all images.
inline Index experts_in_use(const IndexMatrix& counts, double min_share = 0.01) {
  const auto total = static_cast<double>(counts.sum());
  Index used = 0;
  for (Index e = 0; e < counts.cols(); ++e)
    used += total > 0 && static_cast<double>(counts.col(e).sum()) >= min_share * total ? 1 : 0;
  return used;
}

/// How differently classes are routed, whatever the load: the root mean over experts of the variance over
/// classes of each class's share in that expert (population variance). 0 when every class is routed alike,
/// including when one expert takes everything; 0.5 with 2 experts when each class goes wholly to one of them
/// and the classes are split in halves. The covariance matrix counts a collapsed router (every class to one
/// expert) as the strongest routing; this does not.
inline double class_spread(const MatrixX<double>& fractions) {
  if (fractions.rows() == 0 || fractions.cols() == 0) return 0.0;
  double sum = 0;
  for (Index e = 0; e < fractions.cols(); ++e) {
    const double m = fractions.col(e).mean();
    sum += (fractions.col(e).array() - m).square().mean();
  }
  return std::sqrt(sum / static_cast<double>(fractions.cols()));
}

/// Share of a group's test images that go to the one expert receiving most of them.
inline double group_majority_share(const IndexMatrix& counts, const std::vector<Index>& classes) {
  Eigen::VectorXd per_expert = Eigen::VectorXd::Zero(counts.cols());
  for (Index c : classes) per_expert += counts.row(c).cast<double>().transpose();
  const double total = per_expert.sum();
  return total > 0 ? per_expert.maxCoeff() / total : 0.0;
}

/// The expert receiving most of a group's images.
inline Index group_majority_expert(const IndexMatrix& counts, const std::vector<Index>& classes) {
  Eigen::VectorXd per_expert = Eigen::VectorXd::Zero(counts.cols());
  for (Index c : classes) per_expert += counts.row(c).cast<double>().transpose();
  Index best = 0;
  per_expert.maxCoeff(&best);
  return best;
}

/// Mean correlation between pairs of distinct classes in the same group, and between classes of different
/// groups: a high-level grouping shows as within > between.
struct GroupCorrelation {
  double within = 0, between = 0;
  double gap() const { return within - between; }
};

inline GroupCorrelation group_correlation(const MatrixX<double>& correlation, const std::vector<Index>& group_of) {
  require(static_cast<Index>(group_of.size()) == correlation.rows(), "group_correlation: ",
          group_of.size(), " group entries for ", correlation.rows(), " classes");
  double within = 0, between = 0;
  Index n_within = 0, n_between = 0;
  for (Index a = 0; a < correlation.rows(); ++a)
    for (Index b = a + 1; b < correlation.cols(); ++b) {
      const Index ga = group_of[static_cast<std::size_t>(a)], gb = group_of[static_cast<std::size_t>(b)];
      if (ga < 0 || gb < 0) continue;
      if (ga == gb) {
        within += correlation(a, b);
        ++n_within;
      } else {
        between += correlation(a, b);
        ++n_between;
      }
    }
  return {n_within > 0 ? within / static_cast<double>(n_within) : 0.0,
          n_between > 0 ? between / static_cast<double>(n_between) : 0.0};
}

/// Frobenius norm of a square matrix's off-diagonal part: how strongly the classes' routing co-varies,
/// which Experiment 3 compares between the short and the base model.
inline double off_diagonal_norm(const MatrixX<double>& m) {
  double sum = 0;
  for (Index a = 0; a < m.rows(); ++a)
    for (Index b = 0; b < m.cols(); ++b)
      if (a != b) sum += m(a, b) * m(a, b);
  return std::sqrt(sum);
}

/// Pearson correlation of the strictly upper-triangular entries of two square matrices: how alike two
/// trials' class-by-class correlation matrices are, whatever their experts' numbering. NaN when either
/// has no variance.
inline double upper_triangle_correlation(const MatrixX<double>& a, const MatrixX<double>& b) {
  require(a.rows() == a.cols() && b.rows() == b.cols() && a.rows() == b.rows(),
          "upper_triangle_correlation: matrices are ", a.rows(), "x", a.cols(), " and ", b.rows(), "x",
          b.cols(), "; expected two square matrices of one size");
  std::vector<double> x, y;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = i + 1; j < a.cols(); ++j) {
      x.push_back(a(i, j));
      y.push_back(b(i, j));
    }
  const auto n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n, my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx <= 0 || syy <= 0) return std::numeric_limits<double>::quiet_NaN();
  return sxy / std::sqrt(sxx * syy);
}

inline double mean(const std::vector<double>& v) {
  return v.empty() ? std::numeric_limits<double>::quiet_NaN()
                   : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

/// Sample standard deviation (n - 1); 0 for fewer than two values.
inline double sample_stddev(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

/// A GitHub-flavoured markdown table, built row by row.
class MarkdownTable {
 public:
  explicit MarkdownTable(std::vector<std::string> header) : header_(std::move(header)) {}
  void row(std::vector<std::string> cells) {
    require(cells.size() == header_.size(), "MarkdownTable: row of ", cells.size(), " cells, header has ",
            header_.size());
    rows_.push_back(std::move(cells));
  }
  std::string str() const {
    std::ostringstream out;
    const auto line = [&](const std::vector<std::string>& cells) {
      out << '|';
      for (const auto& c : cells) out << ' ' << c << " |";
      out << '\n';
    };
    line(header_);
    out << '|';
    for (std::size_t i = 0; i < header_.size(); ++i) out << "---|";
    out << '\n';
    for (const auto& r : rows_) line(r);
    return out.str();
  }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

/// The figures "Do Experts Specialize?" reports, for the tables that set ours beside them.
namespace document {

/// Table 1 (test accuracy, CIFAR-10, averaged over 10 trials), for 2, 3 and 5 experts.
inline constexpr double table1_learned[3] = {0.8677, 0.8678, 0.8603};
inline constexpr double table1_random[3] = {0.8377, 0.8543, 0.8557};
inline constexpr double table1_decrease_percent[3] = {3.46, 1.56, 0.535};

/// CIFAR-10's classes as the document's tables name them.
inline const std::vector<std::string> classes = {"Plane", "Car", "Bird",  "Cat",  "Deer",
                                                 "Dog",   "Frog", "Horse", "Ship", "Truck"};

/// Table 2: class breakdown of expert routing, 2 experts, averaged over 10 trials (percent).
inline const std::vector<std::vector<double>> table2 = {{96.3, 3.7},  {95.7, 4.3},  {31.7, 68.3}, {17.6, 82.4},
                                                        {11.3, 88.7}, {24.2, 75.8}, {3.2, 96.8},  {32.8, 67.2},
                                                        {96.5, 3.5},  {93.7, 6.3}};

/// Table 3: the same for 3 experts.
inline const std::vector<std::vector<double>> table3 = {
    {80.7, 17.8, 1.5}, {60.5, 8.9, 30.6},  {28.5, 44.6, 26.9}, {10.0, 36.6, 53.4}, {6.1, 62.3, 31.6},
    {12.8, 10.6, 76.6}, {2.4, 92.1, 5.5}, {12.7, 25.6, 61.7}, {70.6, 21.9, 7.9},  {58.6, 3.7, 37.2}};

}  // namespace document

}  // namespace moe::examples
