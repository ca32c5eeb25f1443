#pragma once
// English reference prose from GCIDE, the Collaborative International Dictionary of English (Webster's
// 1913 plus WordNet and later additions), as the Debian package dict-gcide installs it for dictd:
// /usr/share/dictd/gcide.index and gcide.dict.dz. It stands in for the Pile's Wikipedia (en).
//
// The dictd form: gcide.index has one line per headword, "headword TAB offset TAB length", the numbers in
// dictd's base 64 (A-Z a-z 0-9 + /); they locate the entry's text in gcide.dict.dz, a dictzip file (gzip
// with a random-access table, read here as plain gzip with zlib; link with -lz), or in the plain
// gcide.dict that scripts/fetch-data.sh unpacks into data/gcide/ beside links to the packaged files.
//
// One entry is one document. Rules that turn an entry into prose (gcide_to_prose):
//   1. Pronunciations go: each \...\ span (`\A*ban"don\`) and the parenthesised respelling that follows
//      it (`([.a]*b[a^]n"d[u^]n)`).
//   2. Bracketed character names become UTF-8: accents ([ae] -> æ, ['e] -> é, [=a] -> ā, [a^] -> ă,
//      ["o] -> ö, [,c] -> ç), Greek letters ([alpha] -> α) and symbols ([deg] -> °, [sect] -> §); the
//      pronunciation-key marks [.a] and [-o] keep their letter only.
//   3. Every other [...] group goes, nesting included: etymologies and inflections ("[OF. abandoner,
//      ...]"), usage labels ("[Obs.]"), source notes ("[1913 Webster]", "[PJC]") and the few editorial
//      insertions inside quotations. An unmatched bracket goes alone.
//   4. Braces of cross-references and names go, their text stays: {Ban} -> Ban.
//   5. Lines are re-flowed: blank lines (and lines the removals left blank, as under "[1913 Webster]")
//      separate paragraphs, the lines of a paragraph are joined by one space, runs of spaces collapse, a
//      space before , or ; goes; paragraphs are joined by "\n\n".
//   6. Entries shorter than GcideOptions::min_chars after cleaning are left out (bare cross-references,
//      "Apple, v. i. To grow like an apple"); so are the database's own notes (headwords starting "00-").
// Bytes that are not UTF-8 (three in version 0.48) become U+FFFD.

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/check.hpp"
#include "common/corpora/text_source.hpp"
#include "moe/core/utf8.hpp"

namespace moe::examples {

struct GcideOptions {
  std::filesystem::path index = "/usr/share/dictd/gcide.index";
  std::filesystem::path dict = "/usr/share/dictd/gcide.dict.dz";  // gzip'ed or plain
  std::size_t min_chars = 200;                                    // shorter entries are not prose
};

/// The UTF-8 text for a GCIDE character name (the inside of "[ae]", "['e]", "[alpha]"); empty if `name`
/// names no character.
inline std::string gcide_character(std::string_view name) {
  static const std::map<std::string_view, std::string_view> named{
      // letters
      {"ae", "æ"}, {"AE", "Æ"}, {"oe", "œ"}, {"OE", "Œ"}, {"=ae", "ǣ"}, {"aum", "ä"}, {"imac", "ī"},
      {"ng", "ŋ"}, {"eth", "ð"}, {"thorn", "þ"}, {"yogh", "ȝ"}, {"ccaron", "č"}, {"cacute", "ć"}, {"th", "th"},
      {"filig", "fi"}, {"fllig", "fl"}, {"ffllig", "ffl"},
      // pronunciation-key letters: the letter alone
      {"asl", "a"}, {"add", "a"}, {"udd", "u"}, {"=oo", "oo"}, {"oo^", "oo"},
      // symbols
      {"root", "√"}, {"cuberoot", "∛"}, {"deg", "°"}, {"min", "′"}, {"sec", "″"}, {"prime", "′"},
      {"bprime", "″"}, {"sect", "§"}, {"para", "¶"}, {"pounds", "£"}, {"times", "×"}, {"div", "÷"},
      {"divby", "÷"}, {"plusmn", "±"}, {"middot", "·"}, {"nbsp", " "}, {"dagger", "†"}, {"dag", "†"},
      {"ddagger", "‡"}, {"ldqo", "“"}, {"rdqo", "”"}, {"lsquo", "‘"}, {"rsquo", "’"}, {"rarr", "→"},
      {"larr", "←"}, {"nabla", "∇"}, {"flat", "♭"}, {"sharp", "♯"}, {"natural", "♮"}, {"hand", "☞"},
      {"frac12", "½"}, {"frac14", "¼"}, {"frac34", "¾"}, {"frac13", "⅓"}, {"frac23", "⅔"},
      // Greek
      {"alpha", "α"}, {"beta", "β"}, {"gamma", "γ"}, {"delta", "δ"}, {"epsilon", "ε"}, {"zeta", "ζ"},
      {"eta", "η"}, {"theta", "θ"}, {"iota", "ι"}, {"kappa", "κ"}, {"lambda", "λ"}, {"mu", "μ"},
      {"nu", "ν"}, {"xi", "ξ"}, {"omicron", "ο"}, {"pi", "π"}, {"rho", "ρ"}, {"sigma", "σ"},
      {"sigmat", "ς"}, {"tau", "τ"}, {"upsilon", "υ"}, {"phi", "φ"}, {"chi", "χ"}, {"psi", "ψ"},
      {"omega", "ω"}, {"Alpha", "Α"}, {"Beta", "Β"}, {"Gamma", "Γ"}, {"Delta", "Δ"}, {"Epsilon", "Ε"},
      {"Zeta", "Ζ"}, {"Eta", "Η"}, {"Theta", "Θ"}, {"Iota", "Ι"}, {"Kappa", "Κ"}, {"Lambda", "Λ"},
      {"Mu", "Μ"}, {"Nu", "Ν"}, {"Xi", "Ξ"}, {"Omicron", "Ο"}, {"Pi", "Π"}, {"Rho", "Ρ"},
      {"Sigma", "Σ"}, {"Tau", "Τ"}, {"Upsilon", "Υ"}, {"Phi", "Φ"}, {"Chi", "Χ"}, {"Psi", "Ψ"},
      {"Omega", "Ω"}};
  if (const auto it = named.find(name); it != named.end()) return std::string(it->second);

  // An accent: mark then letter (['e]), or letter then mark ([a^], a breve). Each lists the precomposed
  // letters of its mark ("aáeé..."), then the combining mark used for any other letter.
  struct Accent {
    char mark;
    bool after_letter;
    std::string_view precomposed;
    std::string_view combining;  // empty: a pronunciation-key mark, the letter stands alone
  };
  static constexpr std::array<Accent, 11> accents{{
      {'=', false, "aāeēiīoōuūyȳAĀEĒIĪOŌUŪ", "\u0304"},
      {'^', false, "aâeêiîoôuûAÂEÊIÎOÔUÛ", "\u0302"},
      {'^', true, "aăeĕiĭoŏuŭgğAĂEĔIĬOŎUŬ", "\u0306"},
      {'\'', false, "aáeéiíoóuúyýAÁEÉIÍOÓUÚcćnńsśzź", "\u0301"},
      {'`', false, "aàeèiìoòuùAÀEÈIÌOÒUÙ", "\u0300"},
      {'"', false, "aäeëiïoöuüyÿAÄEËIÏOÖUÜ", "\u0308"},
      {'~', false, "aãeẽnñoõAÃNÑOÕ", "\u0303"},
      {',', false, "cçCÇsş", "\u0327"},
      {'*', false, "aåAÅuů", "\u030A"},
      {'.', false, "", ""},
      {'-', false, "", ""},
  }};
  if (name.size() != 2) return {};
  for (const Accent& accent : accents) {
    const char mark = accent.after_letter ? name[1] : name[0];
    const char letter = accent.after_letter ? name[0] : name[1];
    if (mark != accent.mark || !((letter >= 'a' && letter <= 'z') || (letter >= 'A' && letter <= 'Z'))) continue;
    // precomposed alternates an ASCII letter and its accented form (2 or 3 bytes of UTF-8, as the lead
    // byte says).
    for (std::size_t i = 0; i < accent.precomposed.size();) {
      const auto lead = static_cast<unsigned char>(accent.precomposed[i + 1]);
      const std::size_t length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
      if (accent.precomposed[i] == letter) return std::string(accent.precomposed.substr(i + 1, length));
      i += 1 + length;
    }
    return std::string(1, letter) + std::string(accent.combining);
  }
  return {};
}

/// Position just past the bracket that closes the one at text[open] ('(' or '['), nesting counted;
/// npos if it is never closed.
inline std::size_t gcide_matching_close(std::string_view text, std::size_t open) {
  const char opening = text[open], closing = opening == '(' ? ')' : ']';
  int depth = 0;
  for (std::size_t i = open; i < text.size(); ++i) {
    if (text[i] == opening) ++depth;
    if (text[i] == closing && --depth == 0) return i + 1;
  }
  return std::string_view::npos;
}

/// Rule 1: pronunciations and the respellings after them removed.
inline std::string gcide_strip_pronunciations(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t close = text[i] == '\\' ? text.find('\\', i + 1) : std::string_view::npos;
    if (text[i] != '\\') {
      out += text[i++];
    } else if (close == std::string_view::npos) {
      ++i;  // an unmatched backslash goes alone
    } else {
      i = close + 1;
      const std::size_t next = text.find_first_not_of(' ', i);
      if (next != std::string_view::npos && text[next] == '(') {
        const std::size_t end = gcide_matching_close(text, next);
        if (end != std::string_view::npos) i = end;
      }
    }
  }
  return out;
}

/// Rules 2 to 4: character names to UTF-8, other bracket groups and braces removed.
inline std::string gcide_strip_markup(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (c == '{' || c == '}' || c == ']') {
      ++i;  // braces go; a ']' here closes no group
    } else if (c != '[') {
      out += c;
      ++i;
    } else if (const std::size_t end = gcide_matching_close(text, i); end == std::string_view::npos) {
      ++i;
    } else {
      out += gcide_character(text.substr(i + 1, end - i - 2));  // empty for a group: it goes
      i = end;
    }
  }
  return out;
}

/// Rule 5: paragraphs re-flowed.
inline std::string gcide_reflow(std::string_view text) {
  std::string out, paragraph;
  bool space = false;  // whitespace (or a line break) seen since the paragraph's last character
  const auto end_paragraph = [&] {
    if (!paragraph.empty()) out += (out.empty() ? "" : "\n\n") + paragraph;
    paragraph.clear();
    space = false;
  };
  bool blank_line = true;
  for (const char c : text) {
    if (c == '\n') {
      if (blank_line) end_paragraph();
      space = true;
      blank_line = true;
    } else if (c == ' ' || c == '\t' || c == '\r') {
      space = true;
    } else {
      if (space && !paragraph.empty() && c != ',' && c != ';') paragraph += ' ';
      paragraph += c;
      space = false;
      blank_line = false;
    }
  }
  end_paragraph();
  return out;
}

/// The value of a dictd base-64 number (alphabet A-Z a-z 0-9 + /, most significant digit first).
inline bool dictd_number(std::string_view digits, std::uint64_t& value) {
  value = 0;
  if (digits.empty() || digits.size() > 10) return false;
  for (const char c : digits) {
    std::uint64_t digit = 0;
    if (c >= 'A' && c <= 'Z') digit = static_cast<std::uint64_t>(c - 'A');
    else if (c >= 'a' && c <= 'z') digit = static_cast<std::uint64_t>(c - 'a') + 26;
    else if (c >= '0' && c <= '9') digit = static_cast<std::uint64_t>(c - '0') + 52;
    else if (c == '+') digit = 62;
    else if (c == '/') digit = 63;
    else return false;
    value = value * 64 + digit;
  }
  return true;
}

struct DictdEntry {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::size_t line = 0;  // of its first headword in the index, for messages
};

/// The entries a dictd index locates, each once (several headwords may share one), in the order of the
/// dictionary file; headwords starting "00-" (the database's own notes) are left out.
inline std::vector<DictdEntry> read_dictd_index(const std::filesystem::path& path) {
  const std::string text = read_text_file(path, "read_gcide");
  std::vector<DictdEntry> entries;
  std::size_t line_number = 0;
  for (std::size_t start = 0; start < text.size();) {
    std::size_t stop = text.find('\n', start);
    if (stop == std::string::npos) stop = text.size();
    const std::string_view line(text.data() + start, stop - start);
    start = stop + 1;
    ++line_number;
    const std::size_t tab1 = line.find('\t');
    const std::size_t tab2 = tab1 == std::string_view::npos ? tab1 : line.find('\t', tab1 + 1);
    const std::size_t tab3 = tab2 == std::string_view::npos ? tab2 : line.find('\t', tab2 + 1);
    DictdEntry entry{0, 0, line_number};
    require(tab2 != std::string_view::npos &&
                dictd_number(line.substr(tab1 + 1, tab2 - tab1 - 1), entry.offset) &&
                dictd_number(line.substr(tab2 + 1, tab3 == std::string_view::npos ? tab3 : tab3 - tab2 - 1),
                             entry.length),
            "read_gcide: ", path.string(), " line ", line_number,
            ": expected 'headword<TAB>offset<TAB>length' with dictd base-64 numbers, got '", line, "'");
    if (!line.starts_with("00-")) entries.push_back(entry);
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const DictdEntry& a, const DictdEntry& b) { return a.offset < b.offset; });
  entries.erase(std::unique(entries.begin(), entries.end(),
                            [](const DictdEntry& a, const DictdEntry& b) { return a.offset == b.offset; }),
                entries.end());
  return entries;
}

/// A whole gzip (or dictzip, or uncompressed) file.
inline std::string read_gzip_file(const std::filesystem::path& path) {
  const std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(path.string().c_str(), "rb"), gzclose);
  require(file != nullptr, "read_gcide: cannot open ", path.string());
  std::string text;
  std::array<char, 1 << 16> buffer;
  for (;;) {
    const int got = gzread(file.get(), buffer.data(), static_cast<unsigned>(buffer.size()));
    // A file cut short reads to its end and leaves Z_BUF_ERROR ("unexpected end of file") behind.
    int code = Z_OK;
    const char* message = got <= 0 ? gzerror(file.get(), &code) : "";
    require(got >= 0 && code == Z_OK, "read_gcide: ", path.string(), " is not a valid gzip (dictzip) file: ",
            message);
    if (got == 0) return text;
    text.append(buffer.data(), static_cast<std::size_t>(got));
  }
}

/// Rules 1 to 5 of this header's comment: one GCIDE entry in its dictd text form as plain prose.
inline std::string gcide_to_prose(std::string_view entry) {
  return gcide_reflow(gcide_strip_markup(gcide_strip_pronunciations(entry)));
}

/// The GCIDE entries of at least `options.min_chars` characters of prose, in dictionary order.
inline std::vector<std::string> read_gcide(const GcideOptions& options = {}) {
  require_source(options.index, "read_gcide", "the GCIDE index, from the Debian package dict-gcide");
  require_source(options.dict, "read_gcide", "the GCIDE dictionary, from the Debian package dict-gcide");
  const std::vector<DictdEntry> entries = read_dictd_index(options.index);
  const std::string dict = read_gzip_file(options.dict);
  std::vector<std::string> documents;
  for (const DictdEntry& entry : entries) {
    require(entry.offset + entry.length <= dict.size(), "read_gcide: ", options.index.string(), " line ",
            entry.line, ": the entry at offset ", entry.offset, " with length ", entry.length,
            " runs past the end of ", options.dict.string(), " (", dict.size(), " bytes)");
    const std::string_view text = std::string_view(dict).substr(entry.offset, entry.length);
    std::string prose = gcide_to_prose(moe::to_valid_utf8(text));
    if (prose.size() >= options.min_chars) documents.push_back(std::move(prose));
  }
  return documents;
}

}  // namespace moe::examples
