#pragma once
// Questions and answers in the style of the DeepMind Mathematics dataset (Saxton et al. 2019, "Analysing
// Mathematical Reasoning Abilities of Neural Models"), the "DM Mathematics" domain of the Pile: each
// problem is a question line and an answer line, and every answer is computed exactly (Rational).
//
// Modules and the forms they produce:
//   arithmetic            "What is 23 + -45?", "Divide 2.4 by -0.6.", "Evaluate (-2)/(-6)*(-18)/12."
//   linear_equation       "Solve 4*k - 3 = 13 for k."
//   differentiation       "Differentiate 3*x**4 - 2*x + 7 with respect to x.", second derivatives too
//   gcd_lcm               "Calculate the greatest common divisor of 1200 and 45."
//   polynomial_expansion  "Expand (2*t + 3)*(t - 5)."
//   probability           "Two letters picked without replacement from {a: 3, b: 2}. What is prob of
//                         picking 2 a?", level sets and sequences, answers as fractions in lowest terms
// Integer answers are written "7", fractions "-7/3", decimals (when the question has decimals) "2.81",
// polynomials in descending powers with the dataset's spelling "12*x**3 - 2".

#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/check.hpp"
#include "common/corpora/rational.hpp"
#include "moe/core/random.hpp"

namespace moe::examples {

enum class MathModule { arithmetic, linear_equation, differentiation, gcd_lcm, polynomial_expansion, probability };

inline constexpr std::array<MathModule, 6> math_modules{MathModule::arithmetic,      MathModule::linear_equation,
                                                        MathModule::differentiation, MathModule::gcd_lcm,
                                                        MathModule::polynomial_expansion, MathModule::probability};

/// The module's name after the DeepMind dataset's ("algebra__linear_1d"); where one module here merges
/// several of the dataset's (arithmetic: add_or_sub, mul, div, mixed, add_sub_multiple), the common part.
inline const char* math_module_name(MathModule module) {
  switch (module) {
    case MathModule::arithmetic: return "arithmetic";
    case MathModule::linear_equation: return "algebra__linear_1d";
    case MathModule::differentiation: return "calculus__differentiate";
    case MathModule::gcd_lcm: return "numbers__gcd_lcm";
    case MathModule::polynomial_expansion: return "polynomials__expand";
    case MathModule::probability: return "probability__swr_p";
  }
  fail("math_module_name: unknown module ", static_cast<int>(module));
}

struct MathProblem {
  std::string question;  // one line, no line break
  std::string answer;    // one line, no line break
};

/// The generator's helpers, in a namespace of their own because their names are common words.
namespace math {

/// Uniform integer in [low, high].
inline std::int64_t draw_int(Rng& rng, std::int64_t low, std::int64_t high) {
  return low + static_cast<std::int64_t>(uniform_index(rng, static_cast<Index>(high - low + 1)));
}

/// Uniform in [-high, -1] or [1, high], each sign with probability 1/2.
inline std::int64_t draw_nonzero(Rng& rng, std::int64_t high) {
  const std::int64_t magnitude = draw_int(rng, 1, high);
  return uniform_index(rng, 2) == 0 ? magnitude : -magnitude;
}

inline bool coin(Rng& rng) { return uniform_index(rng, 2) == 0; }

template <class T, std::size_t N>
const T& pick(Rng& rng, const std::array<T, N>& items) {
  return items[static_cast<std::size_t>(uniform_index(rng, static_cast<Index>(N)))];
}

/// `pattern` with {0}, {1}, ... replaced by args[0], args[1], ...
inline std::string fill(std::string_view pattern, const std::vector<std::string>& args) {
  std::string out;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '{' && i + 2 < pattern.size() && pattern[i + 2] == '}') {
      out += args.at(static_cast<std::size_t>(pattern[i + 1] - '0'));
      i += 2;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

/// Letters for variables; e, i and o are left out (they read as Euler's number, the imaginary unit, zero).
inline constexpr std::string_view math_variables = "abcdfghjklmnpqrstuvwxyz";

inline char draw_variable(Rng& rng) {
  return math_variables[static_cast<std::size_t>(uniform_index(rng, static_cast<Index>(math_variables.size())))];
}

/// One term of a sum: its sign and the text of its magnitude ("3*x**2").
struct SumTerm {
  bool negative;
  std::string magnitude;
};

/// "3*x - 4 + y"; "0" for no terms.
inline std::string format_sum(const std::vector<SumTerm>& terms) {
  if (terms.empty()) return "0";
  std::string out = terms[0].negative ? "-" + terms[0].magnitude : terms[0].magnitude;
  for (std::size_t i = 1; i < terms.size(); ++i) out += (terms[i].negative ? " - " : " + ") + terms[i].magnitude;
  return out;
}

/// coefficient * variable**power as a signed term: "3*x**2", "x", "7" (a coefficient of 1 is not written).
inline SumTerm monomial(std::int64_t coefficient, int power, char variable) {
  const std::int64_t magnitude = coefficient < 0 ? -coefficient : coefficient;
  std::string text;
  if (power == 0) {
    text = std::to_string(magnitude);
  } else {
    if (magnitude != 1) text = std::to_string(magnitude) + "*";
    text += variable;
    if (power > 1) text += concat("**", power);
  }
  return {coefficient < 0, text};
}

/// Coefficients in ascending powers; the text in descending powers, zero terms left out.
using Polynomial = std::vector<std::int64_t>;

inline std::string format_polynomial(const Polynomial& coefficients, char variable) {
  std::vector<SumTerm> terms;
  for (std::size_t p = coefficients.size(); p-- > 0;)
    if (coefficients[p] != 0) terms.push_back(monomial(coefficients[p], static_cast<int>(p), variable));
  return format_sum(terms);
}

inline Polynomial multiply(const Polynomial& a, const Polynomial& b) {
  Polynomial product(a.size() + b.size() - 1, 0);
  for (std::size_t i = 0; i < a.size(); ++i)
    for (std::size_t j = 0; j < b.size(); ++j) product[i + j] += a[i] * b[j];
  return product;
}

inline Polynomial derivative(const Polynomial& p) {
  Polynomial d(p.size() > 1 ? p.size() - 1 : 1, 0);
  for (std::size_t i = 1; i < p.size(); ++i) d[i - 1] = static_cast<std::int64_t>(i) * p[i];
  return d;
}

/// A number as the question writes it: decimal form ("-0.25") or integer/fraction form ("-1/4").
inline std::string number_text(const Rational& value, bool decimal) {
  return decimal ? decimal_string(value) : value.str();
}

/// An integer, or (when `decimal`) a number with up to `places` decimals, of magnitude below `bound`.
inline Rational draw_number(Rng& rng, std::int64_t bound, bool decimal, int places) {
  if (!decimal) return draw_int(rng, -bound + 1, bound - 1);
  std::int64_t scale = 1;
  for (auto i = draw_int(rng, 1, places); i > 0; --i) scale *= 10;
  return {draw_int(rng, -bound * scale + 1, bound * scale - 1), scale};
}

/// A negative number in parentheses, as the dataset writes a factor: "(-2)".
inline std::string factor_text(const std::string& number) { return number[0] == '-' ? "(" + number + ")" : number; }

/// An arithmetic expression built bottom-up: its text, exact value and the precedence of its top operator.
struct Expression {
  std::string text;
  Rational value;
  int precedence;  // 1: + -, 2: * /, 3: a number
};

inline Expression combine(char op, const Expression& left, const Expression& right) {
  const int precedence = (op == '+' || op == '-') ? 1 : 2;
  // A negative number keeps its sign bare in a sum ("10 - -3") and gets parentheses in a product ("(-2)/(-6)").
  const auto operand = [&](const Expression& e, bool is_right) {
    if (e.precedence == 3) return precedence == 2 ? factor_text(e.text) : e.text;
    const bool parenthesise = e.precedence < precedence || (is_right && e.precedence == precedence);
    return parenthesise ? "(" + e.text + ")" : e.text;
  };
  Rational value;
  switch (op) {
    case '+': value = left.value + right.value; break;
    case '-': value = left.value - right.value; break;
    case '*': value = left.value * right.value; break;
    default: value = left.value / right.value; break;
  }
  const std::string spaced = precedence == 1 ? std::string(" ") + op + " " : std::string(1, op);
  return {operand(left, false) + spaced + operand(right, true), value, precedence};
}

/// A random expression with `leaves` integers in [-bound, bound] and operators from `ops`; a divisor that
/// comes out 0 is replaced by a nonzero number.
inline Expression draw_expression(Rng& rng, int leaves, std::string_view ops, std::int64_t bound) {
  if (leaves == 1) {
    const Rational n = draw_int(rng, -bound, bound);
    return {n.str(), n, 3};
  }
  const int left_leaves = static_cast<int>(draw_int(rng, 1, leaves - 1));
  const char op = ops[static_cast<std::size_t>(uniform_index(rng, static_cast<Index>(ops.size())))];
  const Expression left = draw_expression(rng, left_leaves, ops, bound);
  Expression right = draw_expression(rng, leaves - left_leaves, ops, bound);
  if (op == '/' && right.value == 0) {
    const Rational n = draw_nonzero(rng, bound);
    right = {n.str(), n, 3};
  }
  return combine(op, left, right);
}

inline MathProblem arithmetic_problem(Rng& rng) {
  static constexpr std::array<std::string_view, 6> add_forms{
      "What is {0} + {1}?", "Calculate {0} + {1}.", "Sum {0} and {1}.", "Add {0} and {1}.",
      "What is {0} plus {1}?", "Total of {0} and {1}."};
  static constexpr std::array<std::string_view, 5> subtract_forms{
      "What is {0} - {1}?", "Calculate {0} - {1}.", "Subtract {1} from {0}.", "What is {0} minus {1}?",
      "Work out {0} - {1}."};
  static constexpr std::array<std::string_view, 6> multiply_forms{
      "Multiply {0} and {1}.", "What is {0} times {1}?", "Calculate {0}*{2}.", "Product of {0} and {1}.",
      "What is the product of {0} and {1}?", "Work out {0} * {2}."};
  static constexpr std::array<std::string_view, 5> divide_forms{
      "Divide {0} by {1}.", "What is {0} divided by {1}?", "Calculate {0} divided by {1}.", "Calculate {0}/{2}.",
      "What is {0}/{2}?"};
  static constexpr std::array<std::string_view, 5> expression_forms{
      "Calculate {0}.", "What is the value of {0}?", "Evaluate {0}.", "What is {0}?", "Work out {0}."};

  // Decimal operands (which may still come out whole); the answer is written as a decimal when the
  // question shows one, as an integer or a fraction otherwise.
  const bool decimal = coin(rng);
  const auto problem = [&](std::string_view form, const Rational& a, const Rational& b, const Rational& result) {
    const std::string a_text = number_text(a, decimal), b_text = number_text(b, decimal);
    const bool shows_decimal = (a_text + b_text).find('.') != std::string::npos;
    return MathProblem{fill(form, {a_text, b_text, factor_text(b_text)}), number_text(result, shows_decimal)};
  };
  switch (uniform_index(rng, 5)) {
    case 0: {
      const Rational a = draw_number(rng, 1000, decimal, 2), b = draw_number(rng, 1000, decimal, 2);
      return problem(pick(rng, add_forms), a, b, a + b);
    }
    case 1: {
      const Rational a = draw_number(rng, 1000, decimal, 2), b = draw_number(rng, 1000, decimal, 2);
      return problem(pick(rng, subtract_forms), a, b, a - b);
    }
    case 2: {
      const Rational a = draw_number(rng, 100, decimal, 2), b = draw_number(rng, 100, decimal, 1);
      return problem(pick(rng, multiply_forms), a, b, a * b);
    }
    case 3: {
      // The dividend is divisor * quotient, so the quotient is an integer or a finite decimal.
      Rational divisor = draw_number(rng, 50, decimal, 1);
      while (divisor == 0) divisor = draw_number(rng, 50, decimal, 1);
      const Rational quotient = draw_number(rng, 100, decimal, 1);
      return problem(pick(rng, divide_forms), divisor * quotient, divisor, quotient);
    }
    default: {
      // Whole-number expressions with brackets; + and - only, or all four operations.
      const bool sums_only = coin(rng);
      const Expression e = sums_only ? draw_expression(rng, static_cast<int>(draw_int(rng, 3, 5)), "+-", 30)
                                     : draw_expression(rng, static_cast<int>(draw_int(rng, 3, 4)), "+-*/", 20);
      return {fill(pick(rng, expression_forms), {e.text}), e.value.str()};
    }
  }
}

inline MathProblem linear_equation_problem(Rng& rng) {
  const char variable = draw_variable(rng);
  const std::int64_t solution = draw_int(rng, -12, 12);
  // One or two variable terms on the left and sometimes one on the right, up to two constants on the
  // left, and the constant on the right that makes `solution` the root; then the sides may swap.
  std::vector<std::int64_t> left_variable(static_cast<std::size_t>(draw_int(rng, 1, 2)));
  std::vector<std::int64_t> right_variable(uniform_index(rng, 3) == 0 ? 1 : 0);
  std::int64_t slope = 0;
  do {
    for (auto& c : left_variable) c = draw_nonzero(rng, 12);
    for (auto& c : right_variable) c = draw_nonzero(rng, 12);
    slope = std::reduce(left_variable.begin(), left_variable.end(), std::int64_t{0}) -
            std::reduce(right_variable.begin(), right_variable.end(), std::int64_t{0});
  } while (slope == 0);
  std::vector<std::int64_t> left_constants(static_cast<std::size_t>(draw_int(rng, 0, 2)));
  for (auto& c : left_constants) c = draw_nonzero(rng, 60);
  const std::int64_t right_constant =
      slope * solution + std::reduce(left_constants.begin(), left_constants.end(), std::int64_t{0});

  std::vector<SumTerm> left, right;
  for (const auto c : left_variable) left.push_back(monomial(c, 1, variable));
  for (const auto c : left_constants) left.push_back(monomial(c, 0, variable));
  for (const auto c : right_variable) right.push_back(monomial(c, 1, variable));
  if (right_constant != 0 || right.empty()) right.push_back(monomial(right_constant, 0, variable));
  shuffle(left, rng);
  shuffle(right, rng);
  if (coin(rng)) std::swap(left, right);
  return {concat("Solve ", format_sum(left), " = ", format_sum(right), " for ", variable, "."),
          std::to_string(solution)};
}

inline MathProblem differentiation_problem(Rng& rng) {
  static constexpr std::array<std::string_view, 5> first_forms{
      "Differentiate {0} with respect to {1}.", "What is the derivative of {0} wrt {1}?",
      "Find the first derivative of {0} wrt {1}.", "What is the first derivative of {0} wrt {1}?",
      "Differentiate {0} wrt {1}."};
  static constexpr std::array<std::string_view, 3> second_forms{
      "What is the second derivative of {0} wrt {1}?", "Find the second derivative of {0} wrt {1}.",
      "Differentiate {0} twice with respect to {1}."};
  const char variable = draw_variable(rng);
  const auto degree = static_cast<int>(draw_int(rng, 2, 5));
  // The leading power and 1 to 3 lower ones, written in a random order as the dataset does.
  std::vector<int> powers(static_cast<std::size_t>(degree));
  std::iota(powers.begin(), powers.end(), 0);
  shuffle(powers, rng);
  powers.resize(static_cast<std::size_t>(draw_int(rng, 1, std::min(3, degree))));
  powers.push_back(degree);
  shuffle(powers, rng);
  Polynomial p(static_cast<std::size_t>(degree) + 1, 0);
  std::vector<SumTerm> terms;
  for (const int power : powers) {
    const std::int64_t c = draw_nonzero(rng, 12);
    p[static_cast<std::size_t>(power)] = c;
    terms.push_back(monomial(c, power, variable));
  }
  const bool second = uniform_index(rng, 4) == 0;
  const Polynomial d = second ? derivative(derivative(p)) : derivative(p);
  const std::string_view form = second ? pick(rng, second_forms) : pick(rng, first_forms);
  return {fill(form, {format_sum(terms), std::string(1, variable)}), format_polynomial(d, variable)};
}

inline MathProblem gcd_lcm_problem(Rng& rng) {
  static constexpr std::array<std::string_view, 4> gcd_forms{
      "Calculate the greatest common divisor of {0} and {1}.", "What is the greatest common factor of {0} and {1}?",
      "What is the highest common factor of {0} and {1}?", "Calculate the highest common divisor of {0} and {1}."};
  static constexpr std::array<std::string_view, 4> lcm_forms{
      "What is the least common multiple of {0} and {1}?", "Calculate the lowest common multiple of {0} and {1}.",
      "What is the smallest common multiple of {0} and {1}?", "Find the lowest common multiple of {0} and {1}."};
  // Both numbers are multiples of a drawn common factor, so the answer is rarely 1.
  const bool gcd = coin(rng);
  const std::int64_t factor = gcd ? draw_int(rng, 1, 60) : draw_int(rng, 1, 12);
  const std::int64_t bound = gcd ? 40 : 20;
  const std::int64_t m = draw_int(rng, 1, bound);
  std::int64_t n = draw_int(rng, 1, bound);
  while (n == m) n = draw_int(rng, 1, bound);
  const std::int64_t a = factor * m, b = factor * n;
  const std::vector<std::string> args{std::to_string(a), std::to_string(b)};
  return gcd ? MathProblem{fill(pick(rng, gcd_forms), args), std::to_string(std::gcd(a, b))}
             : MathProblem{fill(pick(rng, lcm_forms), args), std::to_string(std::lcm(a, b))};
}

inline MathProblem polynomial_expansion_problem(Rng& rng) {
  static constexpr std::array<std::string_view, 2> forms{"Expand {0}.", "Multiply out {0}."};
  const char variable = draw_variable(rng);
  // A linear factor a*v + b, its two terms in a random order: "(2*t + 3)", "(-5 + t)".
  const auto draw_factor = [&](Polynomial& p) {
    p = {draw_nonzero(rng, 9), draw_nonzero(rng, 5)};
    std::vector<SumTerm> terms{monomial(p[1], 1, variable), monomial(p[0], 0, variable)};
    shuffle(terms, rng);
    return concat("(", format_sum(terms), ")");
  };
  Polynomial product{1}, factor;
  std::string text;
  if (uniform_index(rng, 3) == 0) {  // a square or a cube: (2*t + 3)**2
    const std::string f = draw_factor(factor);
    const auto power = draw_int(rng, 2, 3);
    for (std::int64_t i = 0; i < power; ++i) product = multiply(product, factor);
    text = f + "**" + std::to_string(power);
  } else {  // two or three factors: (2*t + 3)*(t - 5)
    const auto count = draw_int(rng, 2, 3);
    for (std::int64_t i = 0; i < count; ++i) {
      if (i > 0) text += '*';
      text += draw_factor(factor);
      product = multiply(product, factor);
    }
  }
  return {fill(pick(rng, forms), {text}), format_polynomial(product, variable)};
}

inline MathProblem probability_problem(Rng& rng) {
  static constexpr std::array<std::string_view, 2> count_words{"Two", "Three"};  // the same in lower case: {3}
  static constexpr std::array<std::string_view, 2> level_set_forms{
      "{0} letters picked without replacement from {1}. What is prob of picking {2}?",
      "Calculate prob of picking {2} when {3} letters picked without replacement from {1}."};
  static constexpr std::array<std::string_view, 2> sequence_forms{
      "{0} letters picked without replacement from {1}. What is prob of sequence {2}?",
      "What is prob of sequence {2} when {3} letters picked without replacement from {1}?"};

  // 2 or 3 distinct letters with 1 to 7 copies each; 2 or 3 copies drawn.
  std::string alphabet(math_variables);
  shuffle(alphabet, rng);
  const auto kinds = static_cast<std::size_t>(draw_int(rng, 2, 3));
  std::vector<std::int64_t> counts(kinds);
  for (auto& c : counts) c = draw_int(rng, 1, 7);
  const std::int64_t total = std::reduce(counts.begin(), counts.end(), std::int64_t{0});
  const std::int64_t drawn = std::min<std::int64_t>(draw_int(rng, 2, 3), total);  // total >= 2

  // The letters as the dataset writes them: "{a: 3, b: 2}", or all copies in a random order: "abaab".
  std::string bag;
  for (std::size_t k = 0; k < kinds; ++k) bag.append(static_cast<std::size_t>(counts[k]), alphabet[k]);
  std::string source;
  if (coin(rng)) {
    for (std::size_t k = 0; k < kinds; ++k)
      source += concat(k == 0 ? "{" : ", ", alphabet[k], ": ", counts[k]);
    source += "}";
  } else {
    source = bag;
    shuffle(source, rng);
  }

  // The event is what one random draw gave, so its probability is never 0.
  shuffle(bag, rng);
  const std::string sequence = bag.substr(0, static_cast<std::size_t>(drawn));
  const std::string count_word(count_words[static_cast<std::size_t>(drawn - 2)]);
  const auto args = [&](std::string what) {
    std::string lower = count_word;
    lower[0] = static_cast<char>(lower[0] - 'A' + 'a');
    return std::vector<std::string>{count_word, source, std::move(what), lower};
  };
  Rational probability = 1;
  if (coin(rng)) {  // a sequence: product of the chances of each letter among those left
    std::vector<std::int64_t> left = counts;
    std::int64_t remaining = total;
    for (const char letter : sequence) {
      auto& c = left[alphabet.find(letter)];
      probability *= Rational(c, remaining);
      --c;
      --remaining;
    }
    return {fill(pick(rng, sequence_forms), args(sequence)), probability.str()};
  }
  // A level set: prod_k C(counts[k], picked[k]) / C(total, drawn); written as "1 x, 1 v and 1 w".
  const auto choose = [](std::int64_t n, std::int64_t k) {
    Rational r = 1;
    for (std::int64_t i = 0; i < k; ++i) r = r * Rational(n - i, i + 1);
    return r;
  };
  std::string event;
  std::vector<std::string> parts;
  for (std::size_t k = 0; k < kinds; ++k) {
    const auto picked = static_cast<std::int64_t>(std::count(sequence.begin(), sequence.end(), alphabet[k]));
    probability *= choose(counts[k], picked);
    if (picked > 0) parts.push_back(std::to_string(picked) + " " + alphabet[k]);
  }
  probability /= choose(total, drawn);
  for (std::size_t i = 0; i < parts.size(); ++i)
    event += (i == 0 ? "" : i + 1 == parts.size() ? " and " : ", ") + parts[i];
  return {fill(pick(rng, level_set_forms), args(event)), probability.str()};
}

}  // namespace math

/// One problem of `module`; the same generator state gives the same problem.
inline MathProblem generate_math_problem(MathModule module, Rng& rng) {
  switch (module) {
    case MathModule::arithmetic: return math::arithmetic_problem(rng);
    case MathModule::linear_equation: return math::linear_equation_problem(rng);
    case MathModule::differentiation: return math::differentiation_problem(rng);
    case MathModule::gcd_lcm: return math::gcd_lcm_problem(rng);
    case MathModule::polynomial_expansion: return math::polynomial_expansion_problem(rng);
    case MathModule::probability: return math::probability_problem(rng);
  }
  fail("generate_math_problem: unknown module ", static_cast<int>(module));
}

struct MathOptions {
  std::size_t problems_per_document = 10;
};

/// A document: `problems_per_document` problems of one module (drawn uniformly), each written
/// "question\nanswer\n" as in the dataset's files.
inline std::string generate_math_document(const MathOptions& options, Rng& rng) {
  require(options.problems_per_document > 0, "generate_math_document: problems_per_document must be positive");
  const MathModule module = math::pick(rng, math_modules);
  std::string document;
  for (std::size_t i = 0; i < options.problems_per_document; ++i) {
    const MathProblem problem = generate_math_problem(module, rng);
    document += problem.question + "\n" + problem.answer + "\n";
  }
  return document;
}

}  // namespace moe::examples
