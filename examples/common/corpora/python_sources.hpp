#pragma once
// Code: the Python standard library's sources (/usr/lib/python3.11 from the Debian packages
// libpython3.11-minimal and libpython3.11-stdlib), standing in for the Pile's Github.
//
// Rules:
//   - Every regular *.py file under the root (links to directories are not followed), in sorted path
//     order (byte order of the path relative to the root), so the same tree gives the same documents in
//     the same order.
//   - Directories named in PythonSourceOptions::excluded_directories are not entered, wherever they are:
//     by default test suites (test, tests, idle_test: Debian ships most of them in a separate package
//     anyway, and what is left holds deliberately odd code), pydoc_data (one 740 kB module of English help
//     text in string literals, prose rather than code), site-packages and dist-packages (third-party
//     code, not the standard library) and __pycache__.
//   - One file is one document; a file longer than max_chars is split into chunks (split_python_source).
//     Files holding only whitespace are left out. Bytes that are not UTF-8 become U+FFFD.

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/check.hpp"
#include "common/corpora/text_source.hpp"
#include "moe/core/utf8.hpp"

namespace moe::examples {

struct PythonSourceOptions {
  std::filesystem::path root = "/usr/lib/python3.11";
  std::size_t max_chars = 16000;  // longer files are split at top-level def/class boundaries
  std::vector<std::string> excluded_directories{"test",          "tests",         "idle_test", "pydoc_data",
                                                "site-packages", "dist-packages", "__pycache__"};
};

/// Whether a column-0 line opens a top-level definition: "def ", "async def ", "class " or a decorator "@".
inline bool python_definition_line(std::string_view line) {
  return line.starts_with("def ") || line.starts_with("async def ") || line.starts_with("class ") ||
         line.starts_with("@");
}

/// Packs `pieces` in order into chunks of at most `max_chars` (a piece longer than that is a chunk alone).
inline std::vector<std::string> pack_pieces(const std::vector<std::string_view>& pieces, std::size_t max_chars) {
  std::vector<std::string> chunks;
  std::string chunk;
  for (const std::string_view piece : pieces) {
    if (!chunk.empty() && chunk.size() + piece.size() > max_chars) chunks.push_back(std::exchange(chunk, {}));
    chunk += piece;
  }
  if (!chunk.empty()) chunks.push_back(std::move(chunk));
  return chunks;
}

/// A source file as documents of at most `max_chars` characters: the whole file when it fits; otherwise
/// its top-level blocks (a block starts at a column-0 def, async def, class or at the first of the
/// decorators before one; what precedes the first block is a block too) packed greedily in order. A block
/// longer than `max_chars` is cut between lines; only a single line longer than `max_chars` makes a
/// longer chunk. Concatenating the chunks gives the file back.
inline std::vector<std::string> split_python_source(std::string_view source, std::size_t max_chars) {
  require(max_chars > 0, "split_python_source: max_chars must be positive");
  if (source.size() <= max_chars) return {std::string(source)};
  std::vector<std::string_view> lines;
  for (std::size_t start = 0; start < source.size();) {
    const std::size_t stop = std::min(source.find('\n', start), source.size() - 1) + 1;
    lines.push_back(source.substr(start, stop - start));
    start = stop;
  }
  // Blocks as [first line, end line) ranges.
  std::vector<std::pair<std::size_t, std::size_t>> blocks{{0, 0}};
  bool after_decorator = false;  // the last column-0 code line was a decorator
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    const bool top_level = !line.empty() && line[0] != ' ' && line[0] != '\t' && line[0] != '\n' &&
                           line[0] != '\r' && line[0] != '#';
    if (top_level && python_definition_line(line) && !after_decorator && i > 0) {
      blocks.back().second = i;
      blocks.push_back({i, i});
    }
    if (top_level) after_decorator = line.starts_with("@");
  }
  blocks.back().second = lines.size();

  std::vector<std::string_view> pieces;
  for (const auto& [first, end] : blocks) {
    const std::size_t begin = static_cast<std::size_t>(lines[first].data() - source.data());
    const std::size_t stop = static_cast<std::size_t>(lines[end - 1].data() - source.data()) + lines[end - 1].size();
    if (stop - begin <= max_chars) {
      pieces.push_back(source.substr(begin, stop - begin));
    } else {
      // Too long a block: its lines become the pieces, packed into chunks below.
      for (std::size_t i = first; i < end; ++i) pieces.push_back(lines[i]);
    }
  }
  return pack_pieces(pieces, max_chars);
}

/// The documents of the Python sources under `options.root` (rules in this header's comment).
inline std::vector<std::string> read_python_sources(const PythonSourceOptions& options = {}) {
  namespace fs = std::filesystem;
  require_source(options.root, "read_python_sources",
                 "the Python 3.11 standard library, from the Debian package libpython3.11-stdlib");
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(options.root); it != fs::recursive_directory_iterator(); ++it) {
    const std::string name = it->path().filename().string();
    if (it->is_directory()) {
      if (std::ranges::find(options.excluded_directories, name) != options.excluded_directories.end())
        it.disable_recursion_pending();
    } else if (it->is_regular_file() && it->path().extension() == ".py") {
      files.push_back(it->path().lexically_relative(options.root));
    }
  }
  std::ranges::sort(files, {}, [](const fs::path& p) { return p.generic_string(); });

  std::vector<std::string> documents;
  for (const fs::path& file : files) {
    const std::string text = moe::to_valid_utf8(read_text_file(options.root / file, "read_python_sources"));
    if (text.find_first_not_of(" \t\r\n\f") == std::string::npos) continue;
    for (std::string& chunk : split_python_source(text, options.max_chars)) documents.push_back(std::move(chunk));
  }
  return documents;
}

}  // namespace moe::examples
