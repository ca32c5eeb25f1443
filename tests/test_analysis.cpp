#include <catch2/catch.hpp>

#include <charconv>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "moe/analysis/csv.hpp"
#include "moe/analysis/label_table.hpp"
#include "file_contents.hpp"

using moe::Index;
using moe::IndexMatrix;

namespace {

using moe::test::read_bytes;

using Rows = std::vector<std::vector<std::string>>;

/// RFC 4180 reading: quoted fields may hold commas, doubled quotes and line breaks.
Rows read_csv(const std::filesystem::path& path) {
  const std::string text = read_bytes(path);
  Rows rows(1);
  std::string field;
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      rows.back().push_back(std::move(field));
      field.clear();
    } else if (c == '\n') {
      rows.back().push_back(std::move(field));
      field.clear();
      rows.emplace_back();
    } else {
      field += c;
    }
  }
  REQUIRE(rows.back().empty());  // the file ends with a line break
  rows.pop_back();
  return rows;
}

template <class T>
T parse(const std::string& text) {
  T value{};
  const auto result = std::from_chars(text.data(), text.data() + text.size(), value);
  REQUIRE(result.ec == std::errc());
  REQUIRE(result.ptr == text.data() + text.size());
  return value;
}

std::filesystem::path temp_file(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("moe_test_analysis_" + name);
}

// 4 labels, 3 experts, K = 2, -1 for dropped slots. Counts per label:
//   label 0: experts 0, 0, 1        -> (2, 1, 0), fractions (2/3, 1/3, 0)
//   label 1: experts 2, 1, 2, 0     -> (1, 1, 2), fractions (1/4, 1/4, 1/2)
//   label 2: experts 1, 0, 2        -> (1, 1, 1), uniform: zero variance
//   label 3: no tokens              -> (0, 0, 0): zero variance
moe::LabelExpertTable example_table() {
  moe::LabelExpertTable table(4, 3);
  const std::vector<Index> labels{0, 0, 1, 1, 2, 2};
  IndexMatrix experts(6, 2);
  experts << 0, 1, 0, -1, 2, 1, 2, 0, 1, 0, 2, -1;
  table.add(labels, experts);
  return table;
}

}  // namespace

TEST_CASE("LabelExpertTable counts every routed slot by label", "[analysis][label_table]") {
  auto table = example_table();
  IndexMatrix expected(4, 3);
  expected << 2, 1, 0, 1, 1, 2, 1, 1, 1, 0, 0, 0;
  CHECK(table.counts() == expected);

  const auto fractions = table.fractions();
  CHECK(fractions(0, 0) == Approx(2.0 / 3.0));
  CHECK(fractions(1, 2) == Approx(0.5));
  for (Index l = 0; l < 3; ++l) CHECK(fractions.row(l).sum() == Approx(1.0));
  CHECK(fractions.row(3).isZero());

  // Counts accumulate over batches; K = 1 works as well.
  IndexMatrix top1(2, 1);
  top1 << 2, 2;
  table.add(std::vector<Index>{3, 3}, top1);
  CHECK(table.counts()(3, 2) == 2);
  CHECK(table.fractions()(3, 2) == 1.0);
  table.reset();
  CHECK(table.counts().isZero());
  CHECK(table.counts().rows() == 4);
}

TEST_CASE("LabelExpertTable covariance and correlation follow numpy", "[analysis][label_table]") {
  // numpy 1.24: f = np.array([[2/3, 1/3, 0], [1/4, 1/4, 1/2], [1/3, 1/3, 1/3], [0, 0, 0]])
  //   np.cov(f)[:2, :2] = [[0.1111111111111111, -0.04166666666666666], [-0.04166666666666666, 0.02083333333333333]]
  //   (by hand: 1/9, -1/24, 1/48), rows 2 and 3 all 0;
  //   np.corrcoef(f[:2])[0, 1] = -0.8660254037844387 = -sqrt(3) / 2; np.corrcoef(f) gives nan for rows 2, 3.
  const auto table = example_table();
  const auto cov = table.covariance();
  REQUIRE(cov.rows() == 4);
  CHECK(cov(0, 0) == Approx(0.1111111111111111).epsilon(1e-14));
  CHECK(cov(0, 1) == Approx(-0.04166666666666666).epsilon(1e-14));
  CHECK(cov(1, 0) == Approx(-0.04166666666666666).epsilon(1e-14));
  CHECK(cov(1, 1) == Approx(0.02083333333333333).epsilon(1e-14));
  CHECK(cov.bottomRows(2).isZero(0.0));
  CHECK(cov.rightCols(2).isZero(0.0));

  const auto corr = table.correlation();
  CHECK(corr(0, 1) == Approx(-0.8660254037844387).epsilon(1e-14));
  CHECK(corr(1, 0) == corr(0, 1));
  // The zero-variance rule where numpy gives nan: 1 on the diagonal, 0 elsewhere.
  for (Index l = 0; l < 4; ++l) CHECK(corr(l, l) == 1.0);
  CHECK(corr(2, 0) == 0.0);
  CHECK(corr(1, 3) == 0.0);
  CHECK(corr(2, 3) == 0.0);
}

TEST_CASE("LabelExpertTable: proportional rows correlate fully, a uniform row has zero variance",
          "[analysis][label_table]") {
  // K = 1, 29 experts. Label 0: experts 0, 1 -> (1, 1, 0, ...); label 1: 0, 0, 1, 1 -> (2, 2, 0, ...), the
  // same fractions; label 2: one token on each expert. A variance computed from the fractions, 1/29 each,
  // is 1.4e-33 with Eigen's summation, not 0 (numpy: np.cov(np.full(7, 1 / 7)) = 9e-34), which would
  // turn label 2's correlations into noise.
  const Index n = 29;
  moe::LabelExpertTable table(3, n);
  IndexMatrix experts(6 + n, 1);
  experts.col(0).head(6) << 0, 1, 0, 0, 1, 1;
  experts.col(0).tail(n) = moe::IndexVector::LinSpaced(n, 0, n - 1);
  std::vector<Index> labels{0, 0, 1, 1, 1, 1};
  labels.resize(static_cast<std::size_t>(6 + n), 2);
  table.add(labels, experts);
  CHECK(table.counts().row(2).isConstant(1));
  CHECK(table.covariance()(2, 2) == 0.0);
  CHECK(table.covariance()(0, 2) == 0.0);
  const auto corr = table.correlation();
  CHECK(corr(0, 1) == Approx(1.0).epsilon(1e-14));
  CHECK(corr(2, 0) == 0.0);
  CHECK(corr(1, 2) == 0.0);
  CHECK(corr(2, 2) == 1.0);
}

TEST_CASE("LabelExpertTable rejects bad labels and experts without counting", "[analysis][label_table][errors]") {
  moe::LabelExpertTable table(2, 3);
  IndexMatrix experts(2, 2);
  experts << 0, 1, 2, -1;
  CHECK_THROWS_WITH(table.add(std::vector<Index>{0}, experts),
                    Catch::Contains("1 labels for 2 rows of experts, expected one label per row"));
  CHECK_THROWS_WITH(table.add(std::vector<Index>{0, 2}, experts),
                    Catch::Contains("LabelExpertTable: label 2 at row 1, expected in [0, 2)"));
  experts(1, 1) = 3;
  CHECK_THROWS_WITH(table.add(std::vector<Index>{0, 1}, experts),
                    Catch::Contains("expert 3 at row 1 slot 1, expected in [0, 3) or -1 (dropped)"));
  CHECK(table.counts().isZero());
  CHECK_THROWS_WITH(moe::LabelExpertTable(0, 3), Catch::Contains("num_labels must be positive, got 0"));
  CHECK_THROWS_WITH(moe::LabelExpertTable(2, 1).correlation(),
                    Catch::Contains("covariance needs at least 2 experts, got 1"));
}

TEST_CASE("CsvWriter quotes where needed and numbers read back exactly", "[analysis][csv]") {
  const auto path = temp_file("round_trip.csv");
  const double third = 1.0 / 3.0;
  const float tenth = 0.1f;
  const double tiny = std::numeric_limits<double>::denorm_min();
  {
    moe::CsvWriter out(path);
    out.row("name", "count", "double", "float");
    out.row("plain", Index{-42}, third, tenth);
    out.row("a,b", std::size_t{7}, tiny, -1.5e30f);
    out.field("say \"hi\"").field("line\nbreak").field(1e300).field(0.0f).end_row();
    out.close();
    out.close();  // closing twice is harmless
  }
  const Rows rows = read_csv(path);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0] == std::vector<std::string>{"name", "count", "double", "float"});
  CHECK(rows[1][0] == "plain");
  CHECK(parse<Index>(rows[1][1]) == -42);
  CHECK(parse<double>(rows[1][2]) == third);
  CHECK(parse<float>(rows[1][3]) == tenth);
  CHECK(rows[1][3] == "0.1");  // shortest for a float, not the float's double expansion
  CHECK(rows[2][0] == "a,b");
  CHECK(parse<double>(rows[2][2]) == tiny);
  CHECK(parse<float>(rows[2][3]) == -1.5e30f);
  CHECK(rows[3] == std::vector<std::string>{"say \"hi\"", "line\nbreak", "1e+300", "0"});
  CHECK(read_bytes(path).find("\"a,b\",7,") != std::string::npos);
  CHECK(read_bytes(path).find("\"say \"\"hi\"\"\"") != std::string::npos);
  std::filesystem::remove(path);
}

TEST_CASE("CsvWriter names the path it cannot open and an unfinished row", "[analysis][csv][errors]") {
  const auto missing = std::filesystem::temp_directory_path() / "moe_no_such_directory" / "out.csv";
  CHECK_THROWS_WITH(moe::CsvWriter(missing), Catch::Contains("CsvWriter: cannot open '" + missing.string() + "'") &&
                                                 Catch::Contains("No such file or directory"));
  CHECK_THROWS_WITH(moe::write_matrix_csv(missing, moe::MatrixX<double>::Zero(1, 1)),
                    Catch::Contains(missing.string()));

  const auto path = temp_file("unfinished.csv");
  moe::CsvWriter out(path);
  out.field("half a row");
  CHECK_THROWS_WITH(out.close(), Catch::Contains("closed in the middle of a row"));
  CHECK_THROWS_WITH(out.row("late"), Catch::Contains("is already closed"));
  std::filesystem::remove(path);
}

TEST_CASE("write_matrix_csv writes names, or indices, around any matrix", "[analysis][csv]") {
  const auto table = example_table();
  const auto path = temp_file("matrix.csv");

  moe::write_matrix_csv(path, table.counts(), {"cat", "dog", "bird", "fish"}, {}, "label");
  Rows rows = read_csv(path);
  REQUIRE(rows.size() == 5);
  CHECK(rows[0] == std::vector<std::string>{"label", "0", "1", "2"});
  CHECK(rows[2] == std::vector<std::string>{"dog", "1", "1", "2"});

  const auto corr = table.correlation();
  moe::write_matrix_csv(path, corr);
  rows = read_csv(path);
  REQUIRE(rows.size() == 5);
  CHECK(rows[0][0].empty());
  for (Index i = 0; i < 4; ++i) {
    CHECK(parse<Index>(rows[static_cast<std::size_t>(i + 1)][0]) == i);
    for (Index j = 0; j < 4; ++j)
      CHECK(parse<double>(rows[static_cast<std::size_t>(i + 1)][static_cast<std::size_t>(j + 1)]) == corr(i, j));
  }

  // An expression is evaluated once; column names are used as given.
  moe::write_matrix_csv(path, table.fractions().transpose(), {"e0", "e1", "e2"}, {"cat", "dog", "bird", "fish"},
                        "expert");
  rows = read_csv(path);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0] == std::vector<std::string>{"expert", "cat", "dog", "bird", "fish"});
  CHECK(parse<double>(rows[3][2]) == 0.5);

  CHECK_THROWS_WITH(moe::write_matrix_csv(path, corr, {"a"}), Catch::Contains("1 row names for 4 rows"));
  CHECK_THROWS_WITH(moe::write_matrix_csv(path, corr, {}, {"a", "b"}), Catch::Contains("2 column names for 4 columns"));
  std::filesystem::remove(path);
}

TEST_CASE("write_load_csv writes one row per expert", "[analysis][csv]") {
  const auto path = temp_file("load.csv");
  moe::IndexVector counts(4);
  counts << 2, 6, 0, 4;  // T = 6 tokens, K = 2: 3 per expert when balanced
  moe::write_load_csv(path, counts, 6, 2);
  const Rows rows = read_csv(path);
  REQUIRE(rows.size() == 5);
  CHECK(rows[0] == std::vector<std::string>{"expert", "load", "relative_load"});
  CHECK(rows[2] == std::vector<std::string>{"1", "6", "2"});
  CHECK(parse<double>(rows[1][2]) == 2.0 / 3.0);
  CHECK(rows[3] == std::vector<std::string>{"2", "0", "0"});
  std::filesystem::remove(path);
}
