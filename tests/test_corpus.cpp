#include <catch2/catch.hpp>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/corpora/corpus.hpp"
#include "temp_dir.hpp"

namespace fs = std::filesystem;
using moe::examples::MathModule;
using moe::examples::Rational;

namespace {

using moe::test::TempDir;

// ---------------------------------------------------------------------------------------------------------
// An evaluator for the generated questions and answers, written apart from the generator: it parses the
// text (numbers, one-letter variables, + - * / **, brackets, Python precedence) and computes over exact
// rationals, or over truncated Taylor series for derivatives.

/// f(x0) + f'(x0) h + f''(x0)/2 h^2: evaluating at x0 + h gives the first two derivatives exactly.
struct Jet {
  std::array<Rational, 3> c{};
};

Jet operator+(const Jet& a, const Jet& b) { return {{a.c[0] + b.c[0], a.c[1] + b.c[1], a.c[2] + b.c[2]}}; }
Jet operator-(const Jet& a, const Jet& b) { return {{a.c[0] - b.c[0], a.c[1] - b.c[1], a.c[2] - b.c[2]}}; }
Jet operator-(const Jet& a) { return {{-a.c[0], -a.c[1], -a.c[2]}}; }
Jet operator*(const Jet& a, const Jet& b) {
  return {{a.c[0] * b.c[0], a.c[0] * b.c[1] + a.c[1] * b.c[0], a.c[0] * b.c[2] + a.c[1] * b.c[1] + a.c[2] * b.c[0]}};
}
Jet operator/(const Jet& a, const Jet& b) {
  const Rational q0 = a.c[0] / b.c[0];
  const Rational q1 = (a.c[1] - q0 * b.c[1]) / b.c[0];
  return {{q0, q1, (a.c[2] - q0 * b.c[2] - q1 * b.c[1]) / b.c[0]}};
}

template <class Value>
class Evaluator {
 public:
  Evaluator(std::string_view text, std::function<Value(char)> variable, std::function<Value(Rational)> constant)
      : text_(text), variable_(std::move(variable)), constant_(std::move(constant)) {}

  Value evaluate() {
    const Value v = sum();
    skip_spaces();
    if (pos_ != text_.size()) throw std::runtime_error("unexpected '" + std::string(text_.substr(pos_)) + "'");
    return v;
  }

 private:
  void skip_spaces() {
    while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
  }
  bool take(std::string_view token) {
    skip_spaces();
    if (text_.substr(pos_, token.size()) != token) return false;
    pos_ += token.size();
    return true;
  }
  Value sum() {
    Value v = product();
    for (;;) {
      if (take("+")) v = v + product();
      else if (take("-")) v = v - product();
      else return v;
    }
  }
  Value product() {
    Value v = unary();
    for (;;) {
      if (take("*")) v = v * unary();
      else if (take("/")) v = v / unary();
      else return v;
    }
  }
  Value unary() { return take("-") ? -unary() : power(); }
  Value power() {
    const Value base = atom();
    if (!take("**")) return base;
    skip_spaces();
    const std::int64_t exponent = integer();
    Value v = constant_(1);
    for (std::int64_t i = 0; i < exponent; ++i) v = v * base;
    return v;
  }
  std::int64_t integer() {
    const std::size_t start = pos_;
    std::int64_t n = 0;
    while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_])))
      n = n * 10 + (text_[pos_++] - '0');
    if (pos_ == start) throw std::runtime_error("expected a number at '" + std::string(text_.substr(start)) + "'");
    return n;
  }
  Value atom() {
    skip_spaces();
    if (take("(")) {
      const Value v = sum();
      if (!take(")")) throw std::runtime_error("expected ')'");
      return v;
    }
    if (pos_ < text_.size() && std::islower(static_cast<unsigned char>(text_[pos_]))) return variable_(text_[pos_++]);
    const std::int64_t whole = integer();
    if (pos_ >= text_.size() || text_[pos_] != '.') return constant_(whole);
    ++pos_;
    const std::size_t start = pos_;
    const std::int64_t fraction = integer();
    std::int64_t scale = 1;
    for (std::size_t i = start; i < pos_; ++i) scale *= 10;
    return constant_(Rational(whole * scale + fraction, scale));
  }

  std::string_view text_;
  std::size_t pos_ = 0;
  std::function<Value(char)> variable_;
  std::function<Value(Rational)> constant_;
};

/// The value of `text` with every variable set to `x`.
Rational evaluate(std::string_view text, Rational x = 0) {
  return Evaluator<Rational>(text, [&](char) { return x; }, [](Rational c) { return c; }).evaluate();
}

/// The Taylor series of `text` in its variable around `x`.
Jet evaluate_jet(std::string_view text, Rational x) {
  return Evaluator<Jet>(text, [&](char) { return Jet{{x, 1, 0}}; }, [](Rational c) { return Jet{{c, 0, 0}}; })
      .evaluate();
}

/// Whether `text` is a polynomial in `variable` as the dataset writes one: "12*x**3 - x + 2", descending
/// powers, no coefficient 1, no zero terms ("0" alone for the zero polynomial).
bool canonical_polynomial(const std::string& text, char variable) {
  if (text == "0") return true;
  const std::string v(1, variable);
  const std::regex term("(?:([1-9][0-9]*)\\*)?" + v + "(?:\\*\\*([2-9]))?|([1-9][0-9]*)");
  int last_power = 1000;
  std::size_t pos = text[0] == '-' ? 1 : 0;
  for (;;) {
    const std::size_t end = std::min(text.find(" + ", pos), text.find(" - ", pos));
    const std::string piece = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    std::smatch m;
    if (!std::regex_match(piece, m, term) || m.str(1) == "1") return false;
    const int power = m[3].matched ? 0 : m[2].matched ? std::stoi(m.str(2)) : 1;
    if (power >= last_power) return false;
    last_power = power;
    if (end == std::string::npos) return true;
    pos = end + 3;
  }
}

std::string check_arithmetic(const moe::examples::MathProblem& p) {
  static const std::vector<std::pair<std::regex, std::string>> forms = [] {
    std::vector<std::pair<std::regex, std::string>> f;
    for (const auto& [pattern, expression] : std::vector<std::pair<std::string, std::string>>{
             {R"(Sum (\S+) and (\S+)\.)", "($1)+($2)"},
             {R"(Add (\S+) and (\S+)\.)", "($1)+($2)"},
             {R"(Total of (\S+) and (\S+)\.)", "($1)+($2)"},
             {R"(What is (\S+) plus (\S+)\?)", "($1)+($2)"},
             {R"(Subtract (\S+) from (\S+)\.)", "($2)-($1)"},
             {R"(What is (\S+) minus (\S+)\?)", "($1)-($2)"},
             {R"((?:Multiply|Product of|What is the product of) (\S+) and (\S+)[.?])", "($1)*($2)"},
             {R"(What is (\S+) times (\S+)\?)", "($1)*($2)"},
             {R"(Divide (\S+) by (\S+)\.)", "($1)/($2)"},
             {R"((?:What is|Calculate) (\S+) divided by (\S+)[.?])", "($1)/($2)"},
             {R"((?:Calculate|What is the value of|Evaluate|What is|Work out) (.+)[.?])", "$1"}})
      f.emplace_back(std::regex(pattern), expression);
    return f;
  }();
  for (const auto& [pattern, expression] : forms) {
    std::smatch m;
    if (!std::regex_match(p.question, m, pattern)) continue;
    const Rational expected = evaluate(m.format(expression));
    if (evaluate(p.answer) != expected) return "wrong value, expected " + expected.str();
    const bool decimal = std::regex_search(p.question, std::regex(R"(\d\.\d)"));
    if (p.answer != (decimal ? moe::examples::decimal_string(expected) : expected.str())) return "not in canonical form";
    return {};
  }
  return "unknown question form";
}

std::string check_linear_equation(const moe::examples::MathProblem& p) {
  std::smatch m;
  if (!std::regex_match(p.question, m, std::regex(R"(Solve (.+) = (.+) for ([a-z])\.)"))) return "unknown form";
  if (!std::regex_match(p.answer, std::regex("-?[0-9]+"))) return "answer is not an integer";
  const Rational x = std::stoll(p.answer);
  const std::string left = m.str(1), right = m.str(2);
  if (m.str(1).find(m.str(3)) == std::string::npos && m.str(2).find(m.str(3)) == std::string::npos)
    return "no variable";
  if (evaluate(left, x) != evaluate(right, x)) return "the answer is not a root";
  // Both sides are linear: a different left - right one step away means the root is unique.
  if (evaluate(left, x + 1) - evaluate(right, x + 1) == 0) return "the equation does not fix the variable";
  return {};
}

std::string check_differentiation(const moe::examples::MathProblem& p) {
  static const std::vector<std::pair<std::regex, int>> forms{
      {std::regex(R"(Differentiate (.+) twice with respect to ([a-z])\.)"), 2},
      {std::regex(R"((?:What is|Find) the second derivative of (.+) wrt ([a-z])[.?])"), 2},
      {std::regex(R"(Differentiate (.+) (?:with respect to|wrt) ([a-z])\.)"), 1},
      {std::regex(R"((?:What is|Find) the (?:first )?derivative of (.+) wrt ([a-z])[.?])"), 1}};
  for (const auto& [pattern, order] : forms) {
    std::smatch m;
    if (!std::regex_match(p.question, m, pattern)) continue;
    if (!canonical_polynomial(p.answer, m.str(2)[0])) return "answer not in canonical form";
    // Polynomials of degree <= 5: agreeing at 7 points makes them equal.
    for (std::int64_t x = -3; x <= 3; ++x) {
      const Jet jet = evaluate_jet(m.str(1), Rational(2 * x + 1, 3));
      const Rational expected = order == 1 ? jet.c[1] : jet.c[2] * 2;
      if (evaluate(p.answer, Rational(2 * x + 1, 3)) != expected) return "wrong derivative";
    }
    return {};
  }
  return "unknown form";
}

std::string check_gcd_lcm(const moe::examples::MathProblem& p) {
  std::smatch m;
  if (!std::regex_search(p.question, m, std::regex(R"(common (divisor|factor|multiple) of (\d+) and (\d+)[.?]$)")))
    return "unknown form";
  const std::int64_t a = std::stoll(m.str(2)), b = std::stoll(m.str(3));
  std::int64_t expected = 0;
  if (m.str(1) == "multiple") {
    for (expected = std::max(a, b); expected % a != 0 || expected % b != 0;) expected += std::max(a, b);
  } else {
    for (expected = std::min(a, b); a % expected != 0 || b % expected != 0;) --expected;
  }
  return p.answer == std::to_string(expected) ? "" : "expected " + std::to_string(expected);
}

std::string check_expansion(const moe::examples::MathProblem& p) {
  std::smatch m;
  if (!std::regex_match(p.question, m, std::regex(R"((?:Expand|Multiply out) (.+)\.)"))) return "unknown form";
  const std::string expression = m.str(1);
  const char variable =
      *std::ranges::find_if(expression, [](char c) { return std::islower(static_cast<unsigned char>(c)) != 0; });
  if (!canonical_polynomial(p.answer, variable)) return "answer not in canonical form";
  if (p.answer.find('(') != std::string::npos) return "answer not expanded";
  for (std::int64_t x = -3; x <= 3; ++x)  // degree <= 3
    if (evaluate(m.str(1), x) != evaluate(p.answer, x)) return "wrong expansion at " + std::to_string(x);
  return {};
}

std::string check_probability(const moe::examples::MathProblem& p) {
  const std::string source = R"((\{[a-z: ,0-9]+\}|[a-z]+))";
  const std::vector<std::pair<std::regex, std::array<int, 3>>> forms{  // groups: count word, source, event
      {std::regex(R"((Two|Three) letters picked without replacement from )" + source +
                  R"(\. What is prob of (picking .+|sequence [a-z]+)\?)"),
       {1, 2, 3}},
      {std::regex(R"(Calculate prob of (picking .+) when (two|three) letters picked without replacement from )" +
                  source + R"(\.)"),
       {2, 3, 1}},
      {std::regex(R"(What is prob of (sequence [a-z]+) when (two|three) letters picked without replacement from )" +
                  source + R"(\?)"),
       {2, 3, 1}}};
  for (const auto& [pattern, groups] : forms) {
    std::smatch m;
    if (!std::regex_match(p.question, m, pattern)) continue;
    const std::string word = m.str(groups[0]);
    const std::size_t drawn = (word == "Two" || word == "two") ? 2 : 3;
    std::string items;  // every copy of every letter
    const std::string from = m.str(groups[1]);
    if (from[0] == '{') {
      const std::regex pair(R"(([a-z]): (\d+))");
      for (auto it = std::sregex_iterator(from.begin(), from.end(), pair); it != std::sregex_iterator(); ++it)
        items.append(std::stoul(it->str(2)), it->str(1)[0]);
    } else {
      items = from;
    }
    const std::string event = m.str(groups[2]);
    std::map<char, std::size_t> wanted;
    std::string sequence;
    if (event.starts_with("sequence ")) {
      sequence = event.substr(9);
      if (sequence.size() != drawn) return "sequence length differs from the letters drawn";
    } else {
      const std::regex part(R"((\d+) ([a-z]))");
      std::size_t total = 0;
      for (auto it = std::sregex_iterator(event.begin(), event.end(), part); it != std::sregex_iterator(); ++it) {
        wanted[it->str(2)[0]] += std::stoul(it->str(1));
        total += std::stoul(it->str(1));
      }
      if (total != drawn) return "event counts differ from the letters drawn";
    }
    // Every ordered draw of distinct copies, equally likely.
    std::int64_t favourable = 0, all = 0;
    std::vector<bool> used(items.size(), false);
    std::string drawn_letters;
    const std::function<void()> draw = [&] {
      if (drawn_letters.size() == drawn) {
        ++all;
        std::map<char, std::size_t> got;
        for (const char c : drawn_letters) ++got[c];
        if (sequence.empty() ? got == wanted : drawn_letters == sequence) ++favourable;
        return;
      }
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (used[i]) continue;
        used[i] = true;
        drawn_letters.push_back(items[i]);
        draw();
        drawn_letters.pop_back();
        used[i] = false;
      }
    };
    draw();
    const Rational expected(favourable, all);
    if (favourable == 0) return "impossible event";
    return p.answer == expected.str() ? "" : "expected " + expected.str();
  }
  return "unknown form";
}

std::string check_problem(MathModule module, const moe::examples::MathProblem& p) {
  if (p.question.find('\n') != std::string::npos || p.answer.find('\n') != std::string::npos) return "line break";
  if (p.question.find("  ") != std::string::npos) return "double space";
  try {
    switch (module) {
      case MathModule::arithmetic: return check_arithmetic(p);
      case MathModule::linear_equation: return check_linear_equation(p);
      case MathModule::differentiation: return check_differentiation(p);
      case MathModule::gcd_lcm: return check_gcd_lcm(p);
      case MathModule::polynomial_expansion: return check_expansion(p);
      case MathModule::probability: return check_probability(p);
    }
  } catch (const std::exception& e) {
    return std::string("cannot evaluate: ") + e.what();
  }
  return "unknown module";
}

// ---------------------------------------------------------------------------------------------------------
// Files for the readers.

void write_file(const fs::path& path, std::string_view text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
  REQUIRE(out.good());
}

void write_gzip(const fs::path& path, std::string_view text) {
  gzFile file = gzopen(path.string().c_str(), "wb");
  REQUIRE(file != nullptr);
  REQUIRE(gzwrite(file, text.data(), static_cast<unsigned>(text.size())) == static_cast<int>(text.size()));
  REQUIRE(gzclose(file) == Z_OK);
}

/// dictd's base 64: A-Z a-z 0-9 + /, most significant digit first.
std::string dictd_base64(std::uint64_t n) {
  static constexpr std::string_view digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  do {
    out.insert(out.begin(), digits[n % 64]);
    n /= 64;
  } while (n > 0);
  return out;
}

struct DictEntry {
  std::vector<std::string> headwords;
  std::string text;
};

/// Writes gcide.index and gcide.dict.dz for `entries` into `dir`; the index lists headwords in reverse,
/// so that the reader must restore the dictionary's order itself.
moe::examples::GcideOptions write_dictionary(const TempDir& dir, const std::vector<DictEntry>& entries, bool compress = true) {
  std::string dict, index;
  std::vector<std::string> lines;
  for (const DictEntry& e : entries) {
    for (const std::string& word : e.headwords)
      lines.push_back(word + "\t" + dictd_base64(dict.size()) + "\t" + dictd_base64(e.text.size()) + "\n");
    dict += e.text + "\n";
  }
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) index += *it;
  moe::examples::GcideOptions options;
  options.index = dir / "gcide.index";
  options.dict = dir / (compress ? "gcide.dict.dz" : "gcide.dict");
  write_file(options.index, index);
  if (compress) write_gzip(options.dict, dict);
  else write_file(options.dict, dict);
  return options;
}

const std::string abandon_entry =
    "Abandon \\A*ban\"don\\ ([.a]*b[a^]n\"d[u^]n), v. t. [imp. & p. p.\n"
    "   {Abandoned} (-d[u^]nd); p. pr. & vb. n. {Abandoning}.] [OF.\n"
    "   abandoner, F. abandonner; a (L. ad) + bandon permission,\n"
    "   authority. See {Ban}.]\n"
    "   1. To cast or drive out; to banish; to expel; to reject.\n"
    "      [Obs.]\n"
    "      [1913 Webster]\n"
    "\n"
    "            That he might . . . abandon them from him. --Udall.\n"
    "      [1913 Webster]\n"
    "\n"
    "   2. To give up absolutely; to forsake entirely; to renounce\n"
    "      utterly; to relinquish all connection with or concern on;\n"
    "      to desert, as a person to whom one owes allegiance or\n"
    "      fidelity; to quit; to surrender.\n"
    "      [1913 Webster]\n";
const std::string abandon_prose =
    "Abandon, v. t. 1. To cast or drive out; to banish; to expel; to reject.\n\n"
    "That he might . . . abandon them from him. --Udall.\n\n"
    "2. To give up absolutely; to forsake entirely; to renounce utterly; to relinquish all connection with or "
    "concern on; to desert, as a person to whom one owes allegiance or fidelity; to quit; to surrender.";

const std::string whitsun_entry =
    "Whitsun Monday \\Whit\"sun Mon\"day\\, Whitmonday \\Whit*mon\"day\\, n.\n"
    "   The Monday following Whitsunday; -- in the Church of England\n"
    "   called {Monday in Whitsun week}. The Swedish word is\n"
    "   [aum]ker, the Old English [ae]ppel, the French caf['e]; the\n"
    "   angle is 10[deg] and the letter [alpha]. [R.]\n"
    "   [1913 Webster]\n";
const std::string whitsun_prose =
    "Whitsun Monday, Whitmonday, n. The Monday following Whitsunday; -- in the Church of England called Monday "
    "in Whitsun week. The Swedish word is äker, the Old English æppel, the French café; the angle is 10° and the "
    "letter α.";

const std::string apple_entry = "Apple \\Ap\"ple\\, v. i.\n   To grow like an apple. --Holland.\n   [1913 Webster]\n";

std::vector<DictEntry> fixture_entries() {
  return {{{"00-database-short"}, "00-database-short\n   A test dictionary\n"},
          {{"Abandon"}, abandon_entry},
          {{"Whitsun Monday", "Whitmonday"}, whitsun_entry},
          {{"Apple"}, apple_entry}};
}

/// `n` dictionary entries long enough to be documents, each different.
std::vector<DictEntry> many_entries(int n) {
  std::vector<DictEntry> entries;
  for (int i = 0; i < n; ++i) {
    std::string text = "Word" + std::to_string(i) + " \\Word\\, n. [OE. word.]\n";
    for (int line = 0; line < 5; ++line)
      text += "   The meaning number " + std::to_string(i) + " of this word, told at some length here.\n";
    entries.push_back({{"Word" + std::to_string(i)}, text + "   [1913 Webster]\n"});
  }
  return entries;
}

/// `n` small Python files.
moe::examples::PythonSourceOptions write_python_tree(const TempDir& dir, int n) {
  moe::examples::PythonSourceOptions options;
  options.root = dir / "lib";
  for (int i = 0; i < n; ++i)
    write_file(options.root / ("module" + std::to_string(i) + ".py"),
               "def f" + std::to_string(i) + "():\n    \"\"\"" + std::string(100, 'x') + "\"\"\"\n    return " +
                   std::to_string(i) + "\n");
  return options;
}

}  // namespace

// -------------------------------------------------------------------------------------------------------------
// Rational

TEST_CASE("Rational keeps lowest terms and a positive denominator", "[data][math]") {
  CHECK(Rational(6, -4) == Rational(-3, 2));
  CHECK(Rational(6, -4).str() == "-3/2");
  CHECK(Rational(0, -5).str() == "0");
  CHECK(Rational(12, 4).str() == "3");
  CHECK((Rational(1, 2) + Rational(1, 3)).str() == "5/6");
  CHECK((Rational(1, 2) - Rational(5, 6)).str() == "-1/3");
  CHECK((Rational(-2, 3) * Rational(9, 4)).str() == "-3/2");
  CHECK((Rational(2, 3) / Rational(-4, 9)).str() == "-3/2");
  CHECK(Rational(1, 3) < Rational(1, 2));
  CHECK(Rational(-1, 2) < Rational(-1, 3));
}

TEST_CASE("Rational rejects zero denominators and overflow", "[data][math][errors]") {
  CHECK_THROWS_WITH(Rational(1, 0), Catch::Contains("denominator is 0"));
  CHECK_THROWS_WITH(Rational(1) / Rational(0), Catch::Contains("division of 1 by 0"));
  CHECK_THROWS_WITH(Rational(INT64_MAX) * Rational(2), Catch::Contains("overflows 64 bits"));
  CHECK_THROWS_WITH(Rational(INT64_MAX) + Rational(1), Catch::Contains("overflows 64 bits"));
}

TEST_CASE("decimal_string writes finite decimals exactly", "[data][math]") {
  CHECK(moe::examples::decimal_string(Rational(281, 100)) == "2.81");
  CHECK(moe::examples::decimal_string(Rational(-1, 20)) == "-0.05");
  CHECK(moe::examples::decimal_string(Rational(1, 8)) == "0.125");
  CHECK(moe::examples::decimal_string(Rational(-12)) == "-12");
  CHECK(moe::examples::decimal_string(Rational(5, 2)) == "2.5");
  CHECK(moe::examples::decimal_string(Rational(0)) == "0");
  CHECK_THROWS_WITH(moe::examples::decimal_string(Rational(1, 3)), Catch::Contains("1/3 has no finite decimal expansion"));
}

// -------------------------------------------------------------------------------------------------------------
// Mathematics

TEST_CASE("The test's evaluator reads the dataset's notation", "[data][math]") {
  CHECK(evaluate("10 - -3") == 13);
  CHECK(evaluate("(-2)/(-6)*(-18)/12") == Rational(-1, 2));
  CHECK(evaluate("-3*x**2 + x - 1", 2) == -11);
  CHECK(evaluate("2.81 - 0.3") == Rational(251, 100));
  CHECK(evaluate("-7/3") == Rational(-7, 3));
  CHECK(evaluate("(2*t + 3)*(t - 5)", 1) == -20);
  const Jet j = evaluate_jet("x**3 - 2*x", 2);  // f' = 3x^2 - 2 = 10, f'' = 6x = 12
  CHECK(j.c[0] == 4);
  CHECK(j.c[1] == 10);
  CHECK(j.c[2] * 2 == 12);
  CHECK(canonical_polynomial("12*x**3 - x + 2", 'x'));
  CHECK(canonical_polynomial("-x**2", 'x'));
  CHECK_FALSE(canonical_polynomial("1*x", 'x'));
  CHECK_FALSE(canonical_polynomial("x + x**2", 'x'));
  CHECK_FALSE(canonical_polynomial("x + 0", 'x'));
}

TEST_CASE("Every generated answer is correct, over many seeds and every module", "[data][math]") {
  for (const MathModule module : moe::examples::math_modules) {
    std::vector<std::string> failures;
    int problems = 0;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
      moe::Rng rng(seed * 100 + static_cast<std::uint64_t>(module));
      for (int i = 0; i < 30; ++i, ++problems) {
        const moe::examples::MathProblem p = moe::examples::generate_math_problem(module, rng);
        const std::string error = check_problem(module, p);
        if (!error.empty()) failures.push_back(p.question + " -> " + p.answer + ": " + error);
      }
    }
    INFO(moe::examples::math_module_name(module) << ": " << failures.size() << " of " << problems << " failed, first: "
                                       << (failures.empty() ? "" : failures[0]));
    CHECK(failures.empty());
    CHECK(problems == 600);
  }
}

TEST_CASE("The generator covers each module's forms", "[data][math]") {
  moe::Rng rng(3);
  std::map<std::string, int> seen;
  const auto count = [&](MathModule module, const std::string& feature, bool present) {
    if (present) ++seen[std::string(moe::examples::math_module_name(module)) + ": " + feature];
  };
  for (int i = 0; i < 400; ++i) {
    const auto a = moe::examples::generate_math_problem(MathModule::arithmetic, rng);
    count(MathModule::arithmetic, "decimal", std::regex_search(a.question, std::regex(R"(\d\.\d)")));
    count(MathModule::arithmetic, "fraction", a.answer.find('/') != std::string::npos);
    count(MathModule::arithmetic, "brackets", a.question.find('(') != std::string::npos);
    count(MathModule::arithmetic, "words", std::regex_search(a.question, std::regex("plus|minus|times|divided")));
    const auto d = moe::examples::generate_math_problem(MathModule::differentiation, rng);
    count(MathModule::differentiation, "second", d.question.find("second") != std::string::npos ||
                                                     d.question.find("twice") != std::string::npos);
    const auto e = moe::examples::generate_math_problem(MathModule::polynomial_expansion, rng);
    count(MathModule::polynomial_expansion, "power", e.question.find(")**") != std::string::npos);
    count(MathModule::polynomial_expansion, "three factors",
          std::count(e.question.begin(), e.question.end(), '(') == 3);
    const auto p = moe::examples::generate_math_problem(MathModule::probability, rng);
    count(MathModule::probability, "sequence", p.question.find("sequence") != std::string::npos);
    count(MathModule::probability, "set", p.question.find('{') != std::string::npos);
    count(MathModule::probability, "three", p.question.find("hree") != std::string::npos);
    const auto g = moe::examples::generate_math_problem(MathModule::gcd_lcm, rng);
    count(MathModule::gcd_lcm, "lcm", g.question.find("multiple") != std::string::npos);
    const auto l = moe::examples::generate_math_problem(MathModule::linear_equation, rng);
    count(MathModule::linear_equation, "variable on the right",
          std::regex_search(l.question, std::regex(R"(= .*[a-z].* for)")));
  }
  CHECK(seen.size() == 12);
  for (const auto& [feature, n] : seen) {
    INFO(feature);
    CHECK(n >= 10);
  }
}

TEST_CASE("Math documents are blocks of question/answer lines of one module", "[data][math]") {
  moe::examples::MathOptions options;
  options.problems_per_document = 7;
  moe::Rng rng(11);
  for (int d = 0; d < 30; ++d) {
    const std::string doc = moe::examples::generate_math_document(options, rng);
    REQUIRE(doc.back() == '\n');
    std::vector<std::string> lines;
    std::istringstream in(doc);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    REQUIRE(lines.size() == 14);
    for (const auto& line : lines) CHECK_FALSE(line.empty());
    // One module: every pair passes the same module's check.
    int modules_fitting = 0;
    for (const MathModule module : moe::examples::math_modules) {
      bool all = true;
      for (std::size_t i = 0; i < lines.size(); i += 2)
        all = all && check_problem(module, {lines[i], lines[i + 1]}).empty();
      modules_fitting += all ? 1 : 0;
    }
    CHECK(modules_fitting >= 1);
  }
}

TEST_CASE("Math generation is deterministic by seed", "[data][math]") {
  moe::Rng a(42), b(42), c(43);
  const std::string first = moe::examples::generate_math_document({}, a);
  CHECK(first == moe::examples::generate_math_document({}, b));
  CHECK(first != moe::examples::generate_math_document({}, c));
  for (const MathModule module : moe::examples::math_modules) {
    moe::Rng x(7), y(7);
    const auto p = moe::examples::generate_math_problem(module, x), q = moe::examples::generate_math_problem(module, y);
    CHECK(p.question == q.question);
    CHECK(p.answer == q.answer);
  }
}

// -------------------------------------------------------------------------------------------------------------
// GCIDE

TEST_CASE("GCIDE markup becomes plain prose", "[data][gcide]") {
  CHECK(moe::examples::gcide_to_prose(abandon_entry) == abandon_prose);
  CHECK(moe::examples::gcide_to_prose(whitsun_entry) == whitsun_prose);
  CHECK(moe::examples::gcide_to_prose("caf['e] [=a] [a^] [^o] [\"u] [~n] [,c] [*a] [`e] [AE] [oe] [=b] [.a] [-o]") ==
        "café ā ă ô ü ñ ç å è Æ œ b\u0304 a o");
  CHECK(moe::examples::gcide_to_prose("[beta] [Delta] [sect]5 [pounds]3 46[deg] 56[min]") == "β Δ §5 £3 46° 56′");
  CHECK(moe::examples::gcide_to_prose("x [OF. [ae]ppel, [root]98. See {Apple}.] y") == "x y");
  CHECK(moe::examples::gcide_to_prose("an [unmatched bracket") == "an unmatched bracket");
  CHECK(moe::examples::gcide_to_prose("a stray ] bracket and \\ backslash") == "a stray bracket and backslash");
  CHECK(moe::examples::gcide_to_prose("a {cross} {reference}") == "a cross reference");
  CHECK(moe::examples::gcide_to_prose("  one\n   two ,\tthree ;\n\n\n   four\n") == "one two, three;\n\nfour");
  CHECK(moe::examples::gcide_to_prose("Aa \\Aa\\ (Geog.)") == "Aa");  // the parenthesis after a pronunciation goes
}

TEST_CASE("read_gcide reads the dictd index and dictzip dictionary", "[data][gcide]") {
  TempDir dir;
  moe::examples::GcideOptions options = write_dictionary(dir, fixture_entries());
  // Default min_chars: the short Apple entry and the database note are left out; Whitsun once, not twice.
  CHECK(moe::examples::read_gcide(options) == std::vector<std::string>{abandon_prose, whitsun_prose});
  options.min_chars = 10;
  const std::vector<std::string> all{abandon_prose, whitsun_prose, "Apple, v. i. To grow like an apple. --Holland."};
  CHECK(moe::examples::read_gcide(options) == all);

  TempDir plain_dir;
  moe::examples::GcideOptions plain = write_dictionary(plain_dir, fixture_entries(), false);
  plain.min_chars = 10;
  CHECK(moe::examples::read_gcide(plain) == all);
}

TEST_CASE("read_gcide replaces bytes that are not UTF-8", "[data][gcide]") {
  TempDir dir;
  moe::examples::GcideOptions options =
      write_dictionary(dir, {{{"Market"}, "Market \\Mar\"ket\\, n.\n   The market\x92s drop.\n"}});
  options.min_chars = 1;
  CHECK(moe::examples::read_gcide(options) == std::vector<std::string>{"Market, n. The market\uFFFDs drop."});
}

TEST_CASE("read_gcide names the file and what is wrong", "[data][gcide][errors]") {
  TempDir dir;
  moe::examples::GcideOptions options = write_dictionary(dir, fixture_entries());

  moe::examples::GcideOptions missing = options;
  missing.index = dir / "nowhere" / "gcide.index";
  CHECK_THROWS_WITH(moe::examples::read_gcide(missing), Catch::Contains((dir / "nowhere" / "gcide.index").string()) &&
                                                  Catch::Contains("dict-gcide") &&
                                                  Catch::Contains("run scripts/fetch-data.sh"));
  missing = options;
  missing.dict = dir / "gcide.dict.missing";
  CHECK_THROWS_WITH(moe::examples::read_gcide(missing), Catch::Contains((dir / "gcide.dict.missing").string()) &&
                                                  Catch::Contains("run scripts/fetch-data.sh"));

  write_file(dir / "bad.index", "Abandon\tBA\tCC\nApple\tB!\tC\n");
  moe::examples::GcideOptions bad = options;
  bad.index = dir / "bad.index";
  CHECK_THROWS_WITH(moe::examples::read_gcide(bad), Catch::Contains((dir / "bad.index").string() + " line 2") &&
                                              Catch::Contains("headword<TAB>offset<TAB>length"));

  write_file(dir / "long.index", "Abandon\tB\tZZZZ\n");
  bad.index = dir / "long.index";
  CHECK_THROWS_WITH(moe::examples::read_gcide(bad), Catch::Contains("line 1") && Catch::Contains("runs past the end of " +
                                                                                       options.dict.string()));

  // A dictzip file cut short.
  std::ifstream in(options.dict, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  write_file(dir / "cut.dict.dz", bytes.substr(0, bytes.size() / 2));
  bad = options;
  bad.dict = dir / "cut.dict.dz";
  CHECK_THROWS_WITH(moe::examples::read_gcide(bad), Catch::Contains((dir / "cut.dict.dz").string()) &&
                                              Catch::Contains("not a valid gzip"));
}

// -------------------------------------------------------------------------------------------------------------
// Python sources

namespace {

const std::string python_module =
    "\"\"\"Module doc.\"\"\"\n"
    "import os\n"
    "\n"
    "X = 1\n"
    "\n"
    "\n"
    "def first(a):\n"
    "    return a + 1\n"
    "\n"
    "\n"
    "@decorator\n"
    "@other(1)\n"
    "def second():\n"
    "    pass\n"
    "\n"
    "# a comment\n"
    "class Third:\n"
    "    def method(self):\n"
    "        return 3\n"
    "\n"
    "async def fourth():\n"
    "    await x\n";

}  // namespace

TEST_CASE("split_python_source cuts at top-level def and class", "[data][python]") {
  CHECK(moe::examples::split_python_source(python_module, 10000) == std::vector<std::string>{python_module});
  // Each block alone: no two fit together in 60 characters.
  const std::vector<std::string> blocks{
      "\"\"\"Module doc.\"\"\"\nimport os\n\nX = 1\n\n\n",
      "def first(a):\n    return a + 1\n\n\n",
      "@decorator\n@other(1)\ndef second():\n    pass\n\n# a comment\n",
      "class Third:\n    def method(self):\n        return 3\n\n",
      "async def fourth():\n    await x\n"};
  CHECK(moe::examples::split_python_source(python_module, 60) == blocks);
  // Blocks are packed greedily up to the cap.
  CHECK(moe::examples::split_python_source(python_module, 90) ==
        std::vector<std::string>{blocks[0] + blocks[1], blocks[2], blocks[3] + blocks[4]});
}

TEST_CASE("split_python_source cuts a block too long between lines", "[data][python]") {
  std::string source = "class Big:\n";
  for (int i = 0; i < 40; ++i) source += "    def m" + std::to_string(i) + "(self):\n        return " +
                                         std::to_string(i) + "\n";
  source += "x = '" + std::string(300, 'y') + "'\n";  // one line longer than the cap
  source += "def tail():\n    pass\n";
  const auto chunks = moe::examples::split_python_source(source, 200);
  CHECK(std::accumulate(chunks.begin(), chunks.end(), std::string()) == source);
  int over = 0;
  for (const auto& chunk : chunks) {
    CHECK(chunk.back() == '\n');
    if (chunk.size() > 200) {
      ++over;
      CHECK(chunk == "x = '" + std::string(300, 'y') + "'\n");
    }
  }
  CHECK(over == 1);
  CHECK(chunks.back() == "def tail():\n    pass\n");
  CHECK(chunks.size() > 8);
}

TEST_CASE("read_python_sources reads .py files in sorted order, skipping excluded directories", "[data][python]") {
  TempDir dir;
  const fs::path root = dir / "lib";
  write_file(root / "b.py", "B = 2\n");
  write_file(root / "a.py", "A = 1\n");
  write_file(root / "big.py", python_module);
  write_file(root / "pkg" / "z.py", "Z = 26  # caf\xE9\n");  // Latin-1: not UTF-8
  write_file(root / "pkg" / "__init__.py", "\n  \n");       // whitespace only
  write_file(root / "pkg" / "tests" / "t.py", "T = 0\n");
  write_file(root / "test" / "test_a.py", "T = 0\n");
  write_file(root / "pydoc_data" / "topics.py", "topics = {}\n");
  write_file(root / "notes.txt", "not python\n");
  write_file(root / "__pycache__" / "a.cpython-311.pyc", "binary");

  moe::examples::PythonSourceOptions options;
  options.root = root;
  options.max_chars = 80;
  const auto chunks = moe::examples::split_python_source(python_module, 80);
  std::vector<std::string> expected{"A = 1\n", "B = 2\n"};
  expected.insert(expected.end(), chunks.begin(), chunks.end());
  expected.push_back("Z = 26  # caf\uFFFD\n");
  CHECK(moe::examples::read_python_sources(options) == expected);

  options.excluded_directories = {"pkg"};
  const auto with_tests = moe::examples::read_python_sources(options);
  CHECK(std::ranges::count(with_tests, std::string("T = 0\n")) == 1);  // test/ read, pkg/tests/ not
  CHECK(std::ranges::count(with_tests, std::string("topics = {}\n")) == 1);
}

TEST_CASE("read_python_sources names a missing root and fetch-data.sh", "[data][python][errors]") {
  moe::examples::PythonSourceOptions options;
  options.root = fs::temp_directory_path() / "moe_no_such_python";
  CHECK_THROWS_WITH(moe::examples::read_python_sources(options),
                    Catch::Contains(options.root.string()) && Catch::Contains("libpython3.11-stdlib") &&
                        Catch::Contains("run scripts/fetch-data.sh"));
}

// -------------------------------------------------------------------------------------------------------------
// The corpus

namespace {

struct CorpusFixture {
  TempDir dir;
  moe::examples::CorpusOptions options;
  CorpusFixture() {
    options.gcide = write_dictionary(dir, many_entries(60));
    options.python = write_python_tree(dir, 40);
    options.max_documents_per_domain = 30;
    options.max_chars_per_domain = std::numeric_limits<std::size_t>::max();
  }
};

std::vector<std::pair<moe::examples::Domain, std::string>> contents(const std::vector<moe::examples::Document>& split) {
  std::vector<std::pair<moe::examples::Domain, std::string>> out;
  for (const auto& d : split) out.emplace_back(d.domain, d.text);
  return out;
}

}  // namespace

TEST_CASE("build_corpus caps each domain and splits it by document", "[data][corpus]") {
  CorpusFixture f;
  moe::Rng rng(5);
  const moe::examples::Corpus corpus = moe::examples::build_corpus(f.options, rng);
  const moe::examples::CorpusStats stats = moe::examples::corpus_stats(corpus);
  for (const moe::examples::Domain d : moe::examples::domains) {
    INFO(moe::examples::domain_name(d));
    CHECK(stats.train[static_cast<std::size_t>(d)].documents == 27);
    CHECK(stats.validation[static_cast<std::size_t>(d)].documents == 3);  // round(0.1 * 30)
  }
  // Disjoint: no document in both splits, none twice.
  std::set<std::pair<moe::examples::Domain, std::string>> seen;
  for (const auto& doc : contents(corpus.train)) CHECK(seen.insert(doc).second);
  for (const auto& doc : contents(corpus.validation)) CHECK(seen.insert(doc).second);
  // The domains are mixed, not one after the other.
  int changes = 0;
  for (std::size_t i = 1; i < corpus.train.size(); ++i) changes += corpus.train[i].domain != corpus.train[i - 1].domain;
  CHECK(changes > 10);
  // Documents come from their sources.
  for (const auto& doc : corpus.train) {
    if (doc.domain == moe::examples::Domain::prose) CHECK(doc.text.starts_with("Word"));
    if (doc.domain == moe::examples::Domain::code) CHECK(doc.text.starts_with("def f"));
    if (doc.domain == moe::examples::Domain::math) CHECK(doc.text.back() == '\n');
  }
}

TEST_CASE("build_corpus is deterministic by seed", "[data][corpus]") {
  CorpusFixture f;
  moe::Rng a(9), b(9), c(10);
  const moe::examples::Corpus first = moe::examples::build_corpus(f.options, a), second = moe::examples::build_corpus(f.options, b);
  CHECK(contents(first.train) == contents(second.train));
  CHECK(contents(first.validation) == contents(second.validation));
  const moe::examples::Corpus other = moe::examples::build_corpus(f.options, c);
  CHECK(contents(first.validation) != contents(other.validation));
}

TEST_CASE("build_corpus caps characters per domain", "[data][corpus]") {
  CorpusFixture f;
  f.options.max_documents_per_domain = std::numeric_limits<std::size_t>::max();
  f.options.max_chars_per_domain = 2000;
  f.options.validation_fraction = 0.0;
  moe::Rng rng(1);
  const moe::examples::Corpus corpus = moe::examples::build_corpus(f.options, rng);
  CHECK(corpus.validation.empty());
  const moe::examples::CorpusStats stats = moe::examples::corpus_stats(corpus);
  std::array<std::size_t, 3> largest{};
  for (const auto& doc : corpus.train) {
    std::size_t& l = largest[static_cast<std::size_t>(doc.domain)];
    l = std::max(l, doc.text.size());
  }
  for (const moe::examples::Domain d : moe::examples::domains) {
    INFO(moe::examples::domain_name(d));
    const std::size_t chars = stats.train[static_cast<std::size_t>(d)].chars;
    CHECK(chars >= 2000);                                        // every source has more than 2000
    CHECK(chars - largest[static_cast<std::size_t>(d)] < 2000);  // only the last document crosses
  }
}

TEST_CASE("corpus_stats counts tokens with the caller's tokenizer", "[data][corpus]") {
  CorpusFixture f;
  moe::Rng rng(2);
  const moe::examples::Corpus corpus = moe::examples::build_corpus(f.options, rng);
  const auto words = [](const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string w; in >> w;) out.push_back(w);
    return out;
  };
  const moe::examples::CorpusStats stats = moe::examples::corpus_stats(corpus, words);
  const moe::examples::CorpusStats counted = moe::examples::corpus_stats(corpus, [&](const std::string& t) { return words(t).size(); });
  CHECK(stats.has_tokens);
  std::array<std::size_t, 3> expected{};
  for (const auto& doc : corpus.validation) expected[static_cast<std::size_t>(doc.domain)] += words(doc.text).size();
  for (const moe::examples::Domain d : moe::examples::domains) {
    const auto i = static_cast<std::size_t>(d);
    CHECK(stats.validation[i].tokens == expected[i]);
    CHECK(counted.validation[i].tokens == expected[i]);
    CHECK(counted.train[i].tokens == stats.train[i].tokens);
    CHECK(stats.train[i].tokens > 0);
  }
  const std::string table = moe::examples::format_corpus_stats(stats);
  CHECK_THAT(table, Catch::Contains("| prose | Wikipedia (en) |") && Catch::Contains("| code | Github |") &&
                        Catch::Contains("| math | DM Mathematics |") && Catch::Contains("validation tokens"));
  CHECK_THAT(moe::examples::format_corpus_stats(moe::examples::corpus_stats(corpus)), !Catch::Contains("tokens"));
}

TEST_CASE("build_corpus rejects bad options and names missing sources", "[data][corpus][errors]") {
  CorpusFixture f;
  moe::Rng rng(1);
  moe::examples::CorpusOptions options = f.options;
  options.validation_fraction = 1.0;
  CHECK_THROWS_WITH(moe::examples::build_corpus(options, rng), Catch::Contains("validation_fraction must be in [0, 1)"));
  options = f.options;
  options.max_documents_per_domain = std::numeric_limits<std::size_t>::max();
  CHECK_THROWS_WITH(moe::examples::build_corpus(options, rng), Catch::Contains("must be finite"));

  options = f.options;
  options.gcide.index = fs::temp_directory_path() / "moe_no_such_dictd" / "gcide.index";
  CHECK_THROWS_WITH(moe::examples::build_corpus(options, rng),
                    Catch::Contains(options.gcide.index.string()) && Catch::Contains("scripts/fetch-data.sh"));
  options = f.options;
  options.python.root = fs::temp_directory_path() / "moe_no_such_python3.11";
  CHECK_THROWS_WITH(moe::examples::build_corpus(options, rng),
                    Catch::Contains(options.python.root.string()) && Catch::Contains("scripts/fetch-data.sh"));
  options = f.options;
  options.gcide.min_chars = 100000;
  CHECK_THROWS_WITH(moe::examples::build_corpus(options, rng), Catch::Contains("the prose domain") &&
                                                         Catch::Contains("has no documents"));
}
