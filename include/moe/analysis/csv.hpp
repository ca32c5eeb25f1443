#pragma once
// CSV files for the examples' tables and figures: RFC 4180 quoting, numbers that read back exactly.

#include <cerrno>
#include <charconv>
#include <concepts>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "moe/analysis/load.hpp"
#include "moe/core/error.hpp"
#include "moe/core/types.hpp"

namespace moe {

/// Writes a CSV file row by row: row("step", "loss") then row(step, loss), or field(...)... end_row() for
/// rows built in a loop. Text holding a comma, a quote or a line break is quoted (RFC 4180); numbers are
/// written by std::to_chars, the shortest text that reads back to the same float or double. close()
/// flushes and reports write errors; the destructor closes without reporting them.
class CsvWriter {
 public:
  explicit CsvWriter(std::filesystem::path path) : path_(std::move(path)) {
    file_.reset(std::fopen(path_.string().c_str(), "wb"));
    if (!file_) fail_io("open", errno);
  }

  const std::filesystem::path& path() const { return path_; }

  CsvWriter& field(std::string_view text) {
    separate();
    if (text.find_first_of(",\"\r\n") == std::string_view::npos) {
      line_ += text;
      return *this;
    }
    line_ += '"';
    for (const char c : text) {
      if (c == '"') line_ += '"';
      line_ += c;
    }
    line_ += '"';
    return *this;
  }

  template <class T>
    requires(std::integral<T> && !std::same_as<T, bool> && !std::same_as<T, char>) || std::floating_point<T>
  CsvWriter& field(T value) {
    separate();
    char buffer[64];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
    line_.append(buffer, result.ptr);
    return *this;
  }

  void end_row() {
    detail::require(file_ != nullptr, "CsvWriter: '", path_.string(), "' is already closed");
    line_ += '\n';
    if (std::fwrite(line_.data(), 1, line_.size(), file_.get()) != line_.size()) fail_io("write to", errno);
    line_.clear();
    row_started_ = false;
  }

  template <class... Fields>
  void row(const Fields&... fields) {
    (field(fields), ...);
    end_row();
  }

  /// Flushes and closes the file; a moe::Error names the path if anything was not written, including a
  /// row begun with field() and never ended.
  void close() {
    if (!file_) return;
    std::FILE* file = file_.release();
    int error = 0;
    if (std::fflush(file) != 0) error = errno;
    if (std::fclose(file) != 0 && error == 0) error = errno;
    if (error != 0) fail_io("write to", error);
    detail::require(!row_started_, "CsvWriter: '", path_.string(), "' closed in the middle of a row");
  }

 private:
  struct FileCloser {
    void operator()(std::FILE* file) const { std::fclose(file); }
  };

  void separate() {
    if (row_started_) line_ += ',';
    row_started_ = true;
  }

  [[noreturn]] void fail_io(const char* what, int error) const {
    detail::fail("CsvWriter: cannot ", what, " '", path_.string(), "': ", std::generic_category().message(error));
  }

  std::filesystem::path path_;
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::string line_;
  bool row_started_ = false;
};

/// A header row (corner_label, then the column names) and one row per row of `matrix`, led by its name;
/// an empty list of names means the indices 0, 1, ... Suits counts, fractions and correlation tables.
template <class Derived>
void write_matrix_csv(const std::filesystem::path& path, const Eigen::DenseBase<Derived>& matrix,
                      const std::vector<std::string>& row_names = {}, const std::vector<std::string>& column_names = {},
                      std::string_view corner_label = "") {
  const auto& values = matrix.eval();
  const auto rows = static_cast<std::size_t>(values.rows());
  const auto cols = static_cast<std::size_t>(values.cols());
  detail::require(row_names.empty() || row_names.size() == rows, "write_matrix_csv: ", row_names.size(),
                  " row names for ", rows, " rows of '", path.string(), "'");
  detail::require(column_names.empty() || column_names.size() == cols, "write_matrix_csv: ", column_names.size(),
                  " column names for ", cols, " columns of '", path.string(), "'");
  CsvWriter out(path);
  out.field(corner_label);
  for (std::size_t j = 0; j < cols; ++j) {
    if (column_names.empty())
      out.field(j);
    else
      out.field(column_names[j]);
  }
  out.end_row();
  for (std::size_t i = 0; i < rows; ++i) {
    if (row_names.empty())
      out.field(i);
    else
      out.field(row_names[i]);
    for (std::size_t j = 0; j < cols; ++j) out.field(values(static_cast<Index>(i), static_cast<Index>(j)));
    out.end_row();
  }
  out.close();
}

/// Columns expert, load (assignments), relative_load (see relative_load), one row per expert. MaxVio and
/// load entropy are one number per run or step: callers log them (max_violation, load_entropy) with the
/// step, or put them in report.md.
inline void write_load_csv(const std::filesystem::path& path, const IndexVector& counts, Index tokens, Index k) {
  const Eigen::VectorXd relative = relative_load(counts, tokens, k);
  CsvWriter out(path);
  out.row("expert", "load", "relative_load");
  for (Index e = 0; e < counts.size(); ++e) out.row(e, counts(e), relative(e));
  out.close();
}

}  // namespace moe
