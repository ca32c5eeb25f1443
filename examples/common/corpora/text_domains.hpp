#pragma once
// The four synthetic text domains of seeds/003's code-expert experiment (method 1): "code samples mimic Python
// syntax, math samples include equations and calculations, story samples follow narrative structures, and
// science samples describe scientific facts", each "generated using domain-specific templates with randomized
// variables". Here every domain has many templates, and each template draws its names, numbers, objects and
// the number of its parts, so that a model cannot learn a handful of strings by heart:
//
//   code     Python functions, classes, loops, comprehensions, dictionaries, exceptions, file handling
//   math     linear and quadratic equations solved step by step, arithmetic, percentages, fractions, areas,
//            averages, derivatives, and problems of the DeepMind-Mathematics generator (math_generator.hpp)
//   story    narratives built from an opening, a few events and an ending, over pools of characters,
//            places, objects and feelings
//   science  statements of fact (elements, planets, organs, cell parts, states of matter, forces) and worked
//            measurements (speed, density, force, energy) with the numbers computed
//
// Every number a sample states is computed from the ones it drew, so calculations and facts are right.

#include <array>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/check.hpp"
#include "common/corpora/math_generator.hpp"
#include "moe/core/random.hpp"
#include "moe/core/types.hpp"

namespace moe::examples {

enum class TextDomain { code, math, story, science };

inline constexpr std::array<TextDomain, 4> text_domains{TextDomain::code, TextDomain::math, TextDomain::story,
                                                        TextDomain::science};

inline const char* text_domain_name(TextDomain domain) {
  switch (domain) {
    case TextDomain::code: return "code";
    case TextDomain::math: return "math";
    case TextDomain::story: return "story";
    case TextDomain::science: return "science";
  }
  fail("text_domain_name: unknown domain ", static_cast<int>(domain));
}

namespace text {

using math::coin;
using math::draw_int;
using math::fill;
using math::pick;

inline std::string str(std::int64_t value) { return std::to_string(value); }

/// A number with `places` decimals (value / 10^places), as a person writes it: "3.5", "12", "0.25".
inline std::string decimal(std::int64_t scaled, int places) {
  std::int64_t power = 1;
  for (int i = 0; i < places; ++i) power *= 10;
  const bool negative = scaled < 0;
  const std::int64_t magnitude = negative ? -scaled : scaled;
  std::string digits = std::to_string(magnitude % power);
  while (static_cast<int>(digits.size()) < places) digits = "0" + digits;
  while (!digits.empty() && digits.back() == '0') digits.pop_back();
  return (negative ? "-" : "") + std::to_string(magnitude / power) + (digits.empty() ? "" : "." + digits);
}

inline std::int64_t gcd(std::int64_t a, std::int64_t b) {
  a = a < 0 ? -a : a;
  b = b < 0 ? -b : b;
  while (b != 0) {
    const std::int64_t r = a % b;
    a = b;
    b = r;
  }
  return a;
}

/// "a/b" in lowest terms, or the integer when b divides a.
inline std::string fraction(std::int64_t a, std::int64_t b) {
  const std::int64_t g = gcd(a, b);
  a /= g;
  b /= g;
  if (b < 0) {
    a = -a;
    b = -b;
  }
  return b == 1 ? str(a) : str(a) + "/" + str(b);
}

inline std::string capitalised(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

/// "+ 7" or "- 7": a term after the first.
inline std::string signed_term(std::int64_t value) { return value < 0 ? "- " + str(-value) : "+ " + str(value); }

// --- code -------------------------------------------------------------------------------------------------

inline constexpr std::array<std::string_view, 24> code_nouns{
    "items",   "users",   "orders",   "records", "scores",  "values",   "names",  "files",
    "lines",   "tokens",  "prices",   "events",  "rows",    "tasks",    "words",  "numbers",
    "results", "entries", "messages", "points",  "samples", "accounts", "cities", "products"};
inline constexpr std::array<std::string_view, 16> code_verbs{
    "compute",   "count", "filter", "parse", "load",  "merge", "update",    "collect",
    "normalize", "group", "sort",   "find",  "build", "check", "summarize", "clean"};
inline constexpr std::array<std::string_view, 14> code_fields{"name",  "price",  "count",  "score",  "age",
                                                              "total", "status", "size",   "weight", "level",
                                                              "id",    "rank",   "length", "value"};
inline constexpr std::array<std::string_view, 12> code_classes{"Inventory", "Account", "Matrix",  "Queue",
                                                               "Parser",    "Counter", "Graph",   "Cache",
                                                               "Logger",    "Vector",  "Student", "Library"};
inline constexpr std::array<std::string_view, 8> code_operators{">", "<", ">=", "<=", "==", "!=", ">", "<"};
inline constexpr std::array<std::string_view, 6> code_exceptions{"ValueError", "KeyError",          "TypeError",
                                                                 "IndexError", "ZeroDivisionError", "OSError"};
inline constexpr std::array<std::string_view, 8> code_files{"data.csv",  "config.json", "log.txt",  "input.txt",
                                                            "users.csv", "report.txt",  "notes.md", "scores.txt"};

/// A singular loop variable for a plural noun: "items" -> "item", "entries" -> "entry", "cities" -> "city".
inline std::string singular(std::string_view noun) {
  std::string s(noun);
  if (s.size() > 3 && s.ends_with("ies")) return s.substr(0, s.size() - 3) + "y";
  if (s.ends_with("s")) s.pop_back();
  return s;
}

inline std::string code_sample(Rng& rng) {
  const std::string noun(pick(rng, code_nouns)), item = singular(noun), verb(pick(rng, code_verbs));
  const std::string field(pick(rng, code_fields)), other_field(pick(rng, code_fields));
  const std::string op(pick(rng, code_operators));
  const std::string a = str(draw_int(rng, 0, 100)), b = str(draw_int(rng, 2, 12)), c = str(draw_int(rng, 1, 9));
  switch (uniform_index(rng, 14)) {
    case 0:
      return fill(
          "def {0}_{1}({1}):\n    total = 0\n    for {2} in {1}:\n        if {2} {3} {4}:\n"
          "            total += {2}\n    return total\n",
          {verb, noun, item, op, a});
    case 1:
      return fill(
          "def {0}_{1}({1}, limit={2}):\n    result = []\n    for index, {3} in enumerate({1}):\n"
          "        if index >= limit:\n            break\n        result.append({3}.{4})\n    return result\n",
          {verb, noun, b, item, field});
    case 2:
      return fill(
          "class {0}:\n    def __init__(self, {1}={2}):\n        self.{1} = {1}\n        self.{3} = []\n\n"
          "    def add(self, {4}):\n        self.{3}.append({4})\n        return len(self.{3})\n",
          {std::string(pick(rng, code_classes)), field, a, noun, item});
    case 3:
      return fill(
          "{0} = [{1} * {2} for {1} in range({3}) if {1} % {4} == 0]\ntotal = sum({0})\nif total > {3}:\n"
          "    print(\"large\", total)\nelse:\n    print(\"small\", total)\n",
          {noun, item.substr(0, 1), c, a, b});
    case 4:
      return fill(
          "def {0}_by_{1}({2}):\n    groups = {}\n    for {3} in {2}:\n        key = {3}[\"{1}\"]\n"
          "        groups.setdefault(key, []).append({3})\n    return groups\n",
          {verb, field, noun, item});
    case 5:
      return fill(
          "try:\n    with open(\"{0}\") as handle:\n        {1} = [line.strip() for line in handle]\n"
          "except {2} as error:\n    print(\"could not read {0}:\", error)\n    {1} = []\n",
          {std::string(pick(rng, code_files)), noun, std::string(pick(rng, code_exceptions))});
    case 6:
      return fill(
          "def factorial(n):\n    if n <= 1:\n        return 1\n    return n * factorial(n - 1)\n\n"
          "for k in range({0}):\n    print(k, factorial(k))\n",
          {b});
    case 7:
      return fill(
          "{0} = {\"{1}\": {2}, \"{3}\": {4}}\nfor key, value in {0}.items():\n"
          "    if value {5} {6}:\n        print(key, value)\n",
          {item + "_" + field, field, a, other_field, str(draw_int(rng, 0, 100)), op, c});
    case 8:
      return fill(
          "def {0}_{1}({1}):\n    if not {1}:\n        raise {2}(\"empty {1}\")\n"
          "    return sum({1}) / len({1})\n\naverage = {0}_{1}([{3}, {4}, {5}])\n",
          {verb, noun, std::string(pick(rng, code_exceptions)), a, c, b});
    case 9:
      return fill(
          "{0} = {1}\nsteps = 0\nwhile {0} < {2}:\n    {0} = {0} * {3} + 1\n    steps += 1\n"
          "print(\"steps:\", steps)\n",
          {item, c, a, b});
    case 10:
      return fill(
          "import math\n\ndef distance(p, q):\n    return math.sqrt((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2)\n\n"
          "{0} = [({1}, {2}), ({3}, {4})]\nprint(distance({0}[0], {0}[1]))\n",
          {noun, a, c, b, str(draw_int(rng, 0, 50))});
    case 11:
      return fill(
          "sorted_{0} = sorted({0}, key=lambda {1}: {1}.{2}, reverse={3})\n"
          "top = sorted_{0}[:{4}]\nfor rank, {1} in enumerate(top, start=1):\n    print(rank, {1}.{5})\n",
          {noun, item, field, coin(rng) ? "True" : "False", b, other_field});
    case 12:
      return fill(
          "def {0}_{1}(text):\n    counts = {}\n    for word in text.split():\n"
          "        word = word.lower()\n        counts[word] = counts.get(word, 0) + 1\n"
          "    return counts\n",
          {verb, noun});
    default:
      return fill(
          "class {0}({1}):\n    def {2}(self, {3}):\n        if {3} is None:\n            return self.{4}\n"
          "        self.{4} = {3} * {5}\n        return self.{4}\n",
          {std::string(pick(rng, code_classes)), std::string(pick(rng, code_classes)), verb, item, field, c});
  }
}

// --- math -------------------------------------------------------------------------------------------------

inline constexpr std::array<std::string_view, 10> math_people{"Ana",    "Ben",   "Chen", "Dara", "Emil",
                                                              "Fatima", "Goran", "Hana", "Ivo",  "Julia"};
inline constexpr std::array<std::string_view, 8> math_things{"apples", "pencils", "books",  "marbles",
                                                             "cards",  "tickets", "stamps", "coins"};

inline std::string math_sample(Rng& rng) {
  switch (uniform_index(rng, 11)) {
    case 0: {  // a x + b = c, solved step by step
      const char v = math::draw_variable(rng);
      const std::int64_t a = draw_int(rng, 2, 12), x = draw_int(rng, -15, 15), b = math::draw_nonzero(rng, 30);
      const std::int64_t c = a * x + b;
      return fill(
          "Solve for {0}: {1}{0} {2} = {3}.\n{4} both sides: {1}{0} = {5}.\n"
          "Divide both sides by {1}: {0} = {6}.\nCheck: {1} * {6} {2} = {3}.",
          {std::string(1, v), str(a), signed_term(b), str(c),
           b > 0 ? "Subtract " + str(b) + " from" : "Add " + str(-b) + " to", str(c - b), str(x)});
    }
    case 1: {  // (x - r)(x - s) = 0
      const std::int64_t r = math::draw_nonzero(rng, 9);
      std::int64_t s = math::draw_nonzero(rng, 9);
      while (s == -r) s = math::draw_nonzero(rng, 9);  // no zero middle term
      return fill(
          "Solve x^2 {0}x {1} = 0.\nFactor the left side: (x {2})(x {3}) = 0.\n"
          "So x = {4} or x = {5}. The sum of the roots is {6} and their product is {7}.",
          {signed_term(-(r + s)), signed_term(r * s), signed_term(-r), signed_term(-s), str(r), str(s), str(r + s),
           str(r * s)});
    }
    case 2: {  // percentage
      const std::int64_t price = draw_int(rng, 20, 400), percent = 5 * draw_int(rng, 1, 12);
      const std::int64_t cents = price * percent;  // the discount in hundredths
      return fill(
          "A jacket costs {0} dollars and is on sale for {1}% off.\nThe discount is {1}/100 * {0} = {2} "
          "dollars.\nThe sale price is {0} - {2} = {3} dollars.",
          {str(price), str(percent), decimal(cents, 2), decimal(price * 100 - cents, 2)});
    }
    case 3: {  // fractions
      const std::int64_t a = draw_int(rng, 1, 9), b = draw_int(rng, 2, 12), c = draw_int(rng, 1, 9),
                         d = draw_int(rng, 2, 12);
      return fill(
          "Compute {0}/{1} + {2}/{3}.\nThe common denominator is {4}: {5}/{4} + {6}/{4} = {7}/{4}.\n"
          "In lowest terms the sum is {8}.",
          {str(a), str(b), str(c), str(d), str(b * d), str(a * d), str(c * b), str(a * d + c * b),
           fraction(a * d + c * b, b * d)});
    }
    case 4: {  // rectangle area and perimeter
      const std::int64_t w = draw_int(rng, 2, 40), h = draw_int(rng, 2, 40);
      return fill(
          "A rectangle is {0} cm wide and {1} cm tall.\nIts area is {0} * {1} = {2} square cm.\n"
          "Its perimeter is 2 * ({0} + {1}) = {3} cm.",
          {str(w), str(h), str(w * h), str(2 * (w + h))});
    }
    case 5: {  // mean of a list
      const Index n = 3 + uniform_index(rng, 4);
      std::vector<std::int64_t> values;
      std::int64_t sum = 0;
      std::string list, plus;
      for (Index i = 0; i < n; ++i) {
        values.push_back(draw_int(rng, 1, 99));
        sum += values.back();
        list += (i == 0 ? "" : ", ") + str(values.back());
        plus += (i == 0 ? "" : " + ") + str(values.back());
      }
      return fill(
          "Find the mean of {0}.\nThe sum is {1} = {2}.\nThere are {3} numbers, so the mean is {2} / {3} = "
          "{4}.",
          {list, plus, str(sum), str(n), fraction(sum, n)});
    }
    case 6: {  // multiplication worked out
      const std::int64_t a = draw_int(rng, 12, 99), b = draw_int(rng, 12, 99);
      return fill(
          "Calculate {0} * {1}.\n{0} * {2} = {3} and {0} * {4} = {5}.\nAdding them: {3} + {5} = {6}.",
          {str(a), str(b), str(b / 10 * 10), str(a * (b / 10 * 10)), str(b % 10), str(a * (b % 10)), str(a * b)});
    }
    case 7: {  // word problem
      const std::string person(pick(rng, math_people)), things(pick(rng, math_things));
      const std::int64_t start = draw_int(rng, 10, 80), given = draw_int(rng, 1, 9), boxes = draw_int(rng, 2, 6),
                         per_box = draw_int(rng, 2, 12);
      const std::int64_t end = start - given + boxes * per_box;
      return fill(
          "{0} has {1} {2}. {0} gives away {3} and then buys {4} boxes of {5} {2} each.\n"
          "{0} now has {1} - {3} + {4} * {5} = {6} {2}.",
          {person, str(start), things, str(given), str(boxes), str(per_box), str(end)});
    }
    case 8: {  // derivative of a polynomial
      const std::int64_t a = draw_int(rng, 1, 9), b = math::draw_nonzero(rng, 9), c = math::draw_nonzero(rng, 20);
      const std::int64_t p = draw_int(rng, 2, 5), x = draw_int(rng, -3, 3);
      std::int64_t power = 1;
      for (std::int64_t i = 0; i < p - 1; ++i) power *= x;
      return fill(
          "Let f(x) = {0}x^{1} {2}x {3}.\nThen f'(x) = {4}x^{5} {2}.\nAt x = {6}, the slope is f'({6}) = {7}.",
          {str(a), str(p), signed_term(b), signed_term(c), str(a * p), str(p - 1), str(x), str(a * p * power + b)});
    }
    case 9: {  // a system of two equations
      const std::int64_t x = draw_int(rng, -9, 9), y = draw_int(rng, -9, 9), a = draw_int(rng, 1, 5),
                         b = draw_int(rng, 1, 5);
      return fill(
          "Solve the system x + y = {0} and {1}x - {2}y = {3}.\nFrom the first equation, x = {0} - y.\n"
          "Substituting gives {1}({0} - y) - {2}y = {3}, so y = {4} and x = {5}.",
          {str(x + y), str(a), str(b), str(a * x - b * y), str(y), str(x)});
    }
    default: {  // the DeepMind-Mathematics-style generator's problems
      const MathProblem problem = generate_math_problem(pick(rng, math_modules), rng);
      return problem.question + "\nAnswer: " + problem.answer;
    }
  }
}

// --- story ------------------------------------------------------------------------------------------------

inline constexpr std::array<std::string_view, 16> story_names{"Clara", "Tomas", "Mira",  "Oskar",  "Lena", "Felix",
                                                              "Amara", "Jonah", "Ines",  "Rafael", "Yuki", "Elsa",
                                                              "Nadia", "Hugo",  "Selma", "Arlo"};
inline constexpr std::array<std::string_view, 12> story_roles{
    "baker",      "fisherman", "young painter",       "old sailor", "shepherd",          "librarian",
    "blacksmith", "gardener",  "travelling musician", "clockmaker", "farmer's daughter", "lighthouse keeper"};
inline constexpr std::array<std::string_view, 12> story_places{"a small village by the river",
                                                               "a town at the edge of the forest",
                                                               "a quiet harbour",
                                                               "the foot of a mountain",
                                                               "a crowded city",
                                                               "a fishing village far to the north",
                                                               "a valley full of orchards",
                                                               "a castle on a hill",
                                                               "a desert oasis",
                                                               "a snowy hamlet",
                                                               "a busy market town",
                                                               "a farm among the hills"};
inline constexpr std::array<std::string_view, 12> story_objects{
    "an old map",       "a silver key",      "a wooden box", "a strange letter",  "a broken compass", "a lantern",
    "a golden feather", "a torn photograph", "a music box",  "a tiny dragon egg", "a red umbrella",   "a locked diary"};
inline constexpr std::array<std::string_view, 10> story_companions{
    "a talking cat",   "a younger brother",   "a loyal dog",  "an old friend",      "a curious fox",
    "a kind stranger", "the village teacher", "a lost child", "a wandering knight", "a clever raven"};
inline constexpr std::array<std::string_view, 10> story_feelings{
    "curious", "afraid", "hopeful", "lonely", "brave", "restless", "delighted", "worried", "determined", "tired"};
inline constexpr std::array<std::string_view, 10> story_events{"a storm broke over the hills",
                                                               "the bridge collapsed",
                                                               "a stranger knocked on the door at midnight",
                                                               "the river began to rise",
                                                               "the lights in the tower went out",
                                                               "a wolf howled in the woods",
                                                               "the old clock stopped",
                                                               "a ship appeared on the horizon",
                                                               "the well ran dry",
                                                               "snow fell in the middle of summer"};
inline constexpr std::array<std::string_view, 8> story_times{
    "Once upon a time",       "Long ago",           "One autumn morning",         "Many years ago",
    "On a cold winter night", "One summer evening", "In the spring of that year", "Early one morning"};

inline std::string story_sample(Rng& rng) {
  const std::string name(pick(rng, story_names)), role(pick(rng, story_roles)), place(pick(rng, story_places));
  const std::string object(pick(rng, story_objects)), companion(pick(rng, story_companions));
  const std::string feeling(pick(rng, story_feelings)), event(pick(rng, story_events));
  const std::int64_t days = draw_int(rng, 2, 9);
  std::string story;
  switch (uniform_index(rng, 4)) {
    case 0:
      story =
          fill("{0}, in {1}, there lived a {2} named {3}. ", {std::string(pick(rng, story_times)), place, role, name});
      break;
    case 1: story = fill("{0} had always lived in {1}, where nothing unusual ever happened. ", {name, place}); break;
    case 2:
      story = fill("{0}, {1} the {2} set out from {3}. ", {std::string(pick(rng, story_times)), name, role, place});
      break;
    default:
      story = fill("Everyone in {0} knew {1}, the {2}, who was always {3}. ", {place, name, role, feeling});
      break;
  }
  std::vector<Index> episodes{0, 1, 2, 3, 4, 5, 6, 7};
  shuffle(episodes, rng);
  episodes.resize(static_cast<std::size_t>(2 + uniform_index(rng, 3)));  // two to four different episodes
  for (const Index episode : episodes) {
    switch (episode) {
      case 0: story += fill("One day {0} found {1} hidden under the floor. ", {name, object}); break;
      case 1: story += fill("Then {0}, and {1} felt {2}. ", {event, name, feeling}); break;
      case 2:
        story += fill("{0} asked {1} for help, and together they walked for {2} days. ", {name, companion, str(days)});
        break;
      case 3: story += fill("At the old inn, {0} heard a rumour about {1}. ", {name, object}); break;
      case 4: story += fill("\"We cannot turn back now,\" said {0}, holding {1} tightly. ", {name, object}); break;
      case 5:
        story += fill("That night {0} dreamed of {1} and woke up {2}. ",
                      {name, place, std::string(pick(rng, story_feelings))});
        break;
      case 6:
        story += fill("On the way they met {0}, who warned them that {1}. ",
                      {std::string(pick(rng, story_companions)), std::string(pick(rng, story_events))});
        break;
      default: story += fill("For {0} days {1} searched the hills, but found nothing. ", {str(days), name}); break;
    }
  }
  switch (uniform_index(rng, 4)) {
    case 0: story += fill("In the end, {0} returned home and never forgot the journey.", {name}); break;
    case 1: story += fill("At last {0} understood why {1} had been hidden, and smiled.", {name, object}); break;
    case 2: story += fill("From that day on, {0} and {1} were the best of friends.", {name, companion}); break;
    default:
      story += fill("When spring came, the people of {0} told the story of {1} for years.", {place, name});
      break;
  }
  return story;
}

// --- science ----------------------------------------------------------------------------------------------

struct Element {
  std::string_view name, symbol;
  int number;
  std::string_view kind;  // "metal", "nonmetal", "noble gas", "metalloid"
};
inline constexpr std::array<Element, 16> elements{{{"hydrogen", "H", 1, "nonmetal"},
                                                   {"helium", "He", 2, "noble gas"},
                                                   {"carbon", "C", 6, "nonmetal"},
                                                   {"nitrogen", "N", 7, "nonmetal"},
                                                   {"oxygen", "O", 8, "nonmetal"},
                                                   {"neon", "Ne", 10, "noble gas"},
                                                   {"sodium", "Na", 11, "metal"},
                                                   {"magnesium", "Mg", 12, "metal"},
                                                   {"aluminium", "Al", 13, "metal"},
                                                   {"silicon", "Si", 14, "metalloid"},
                                                   {"sulfur", "S", 16, "nonmetal"},
                                                   {"chlorine", "Cl", 17, "nonmetal"},
                                                   {"argon", "Ar", 18, "noble gas"},
                                                   {"calcium", "Ca", 20, "metal"},
                                                   {"iron", "Fe", 26, "metal"},
                                                   {"copper", "Cu", 29, "metal"}}};

struct Planet {
  std::string_view name;
  int order;
  std::string_view kind;  // "rocky" or "gas giant" / "ice giant"
};
inline constexpr std::array<Planet, 8> planets{{{"Mercury", 1, "rocky"},
                                                {"Venus", 2, "rocky"},
                                                {"Earth", 3, "rocky"},
                                                {"Mars", 4, "rocky"},
                                                {"Jupiter", 5, "gas giant"},
                                                {"Saturn", 6, "gas giant"},
                                                {"Uranus", 7, "ice giant"},
                                                {"Neptune", 8, "ice giant"}}};

struct Function {
  std::string_view part, does;
};
inline constexpr std::array<Function, 10> organs{
    {{"heart", "pumps blood through the body"},
     {"lungs", "exchange oxygen and carbon dioxide with the air"},
     {"liver", "filters toxins from the blood and produces bile"},
     {"kidneys", "remove waste from the blood and produce urine"},
     {"stomach", "breaks down food with acid and enzymes"},
     {"small intestine", "absorbs most of the nutrients from food"},
     {"brain", "processes signals from the senses and controls movement"},
     {"skin", "protects the body and helps regulate its temperature"},
     {"pancreas", "releases insulin to control blood sugar"},
     {"spinal cord", "carries nerve signals between the brain and the body"}}};
inline constexpr std::array<Function, 8> cell_parts{{{"nucleus", "holds the cell's genetic material"},
                                                     {"mitochondria", "release energy from glucose"},
                                                     {"ribosomes", "build proteins"},
                                                     {"cell membrane", "controls what enters and leaves the cell"},
                                                     {"chloroplasts", "capture light energy for photosynthesis"},
                                                     {"cell wall", "gives plant cells a rigid shape"},
                                                     {"vacuole", "stores water and nutrients"},
                                                     {"Golgi apparatus", "packages proteins for transport"}}};
struct Substance {
  std::string_view name, formula;
  int melting, boiling;  // degrees Celsius at sea-level pressure, rounded
};
inline constexpr std::array<Substance, 8> substances{{{"water", "H2O", 0, 100},
                                                      {"ethanol", "C2H5OH", -114, 78},
                                                      {"ammonia", "NH3", -78, -33},
                                                      {"methane", "CH4", -182, -162},
                                                      {"benzene", "C6H6", 6, 80},
                                                      {"acetone", "C3H6O", -95, 56},
                                                      {"sodium chloride", "NaCl", 801, 1465},
                                                      {"carbon dioxide", "CO2", -57, -78}}};
inline constexpr std::array<std::string_view, 8> science_observers{
    "Researchers", "Astronomers", "Biologists",           "Chemists",
    "Physicists",  "Geologists",  "A team of scientists", "Students in the laboratory"};
inline constexpr std::array<std::string_view, 8> science_materials{"water", "ice",       "copper", "glass",
                                                                   "wood",  "aluminium", "sand",   "oil"};

inline std::string science_sample(Rng& rng) {
  const std::string observer(pick(rng, science_observers));
  switch (uniform_index(rng, 14)) {
    case 0: {
      const Element& e = pick(rng, elements);
      return fill(
          "The element {0} has the chemical symbol {1} and atomic number {2}. Each atom of {0} contains {2} "
          "protons in its nucleus. {0} is classified as a {3}.",
          {capitalised(std::string(e.name)), std::string(e.symbol), str(e.number), std::string(e.kind)});
    }
    case 1: {
      const Planet& p = pick(rng, planets);
      const char* ordinal[] = {"", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"};
      return fill(
          "{0} is the {1} planet from the Sun. It is a {2} planet. Like every planet in the solar system, {0} "
          "orbits the Sun because of gravity.",
          {std::string(p.name), ordinal[p.order], std::string(p.kind)});
    }
    case 2: {
      const Function& o = pick(rng, organs);
      return fill("In the human body, the {0} {1}. {2} study how the {0} responds to exercise, illness and age.",
                  {std::string(o.part), std::string(o.does), observer});
    }
    case 3: {
      const Function& c = pick(rng, cell_parts);
      return fill("Inside a cell, the {0} {1}. Under a microscope, {2} can see the {0} after staining the sample.",
                  {std::string(c.part), std::string(c.does),
                   observer == "Students in the laboratory" ? "students" : "scientists"});
    }
    case 4: {  // speed
      const std::int64_t speed = draw_int(rng, 2, 40), time = draw_int(rng, 3, 60);
      return fill(
          "A cart moves at a constant speed of {0} metres per second for {1} seconds. Distance equals speed "
          "times time, so it travels {0} * {1} = {2} metres.",
          {str(speed), str(time), str(speed * time)});
    }
    case 5: {  // density
      const std::int64_t volume = draw_int(rng, 2, 50), density_tenths = draw_int(rng, 5, 120);
      return fill(
          "A block of material has a volume of {0} cubic centimetres and a mass of {1} grams. Its density is "
          "mass divided by volume: {1} / {0} = {2} grams per cubic centimetre.",
          {str(volume), decimal(volume * density_tenths, 1), decimal(density_tenths, 1)});
    }
    case 6: {  // Newton's second law
      const std::int64_t mass = draw_int(rng, 1, 30), acceleration = draw_int(rng, 1, 12);
      return fill(
          "According to Newton's second law, force equals mass times acceleration. A {0} kilogram object "
          "accelerating at {1} metres per second squared needs a force of {2} newtons.",
          {str(mass), str(acceleration), str(mass * acceleration)});
    }
    case 7: {  // kinetic energy, with an even mass so that half of it is whole
      const std::int64_t mass = 2 * draw_int(rng, 1, 20), speed = draw_int(rng, 1, 15);
      return fill(
          "Kinetic energy is one half of mass times speed squared. A {0} kilogram ball moving at {1} metres "
          "per second carries {2} joules of kinetic energy.",
          {str(mass), str(speed), str(mass / 2 * speed * speed)});
    }
    case 8: {  // states of matter
      const std::string material(pick(rng, science_materials));
      const bool heated = coin(rng);
      return fill(
          "When {0} is {1}, its particles move {2} and the spacing between them {3}. {4} measure these changes "
          "with thermometers and pressure sensors.",
          {material, heated ? "heated" : "cooled", heated ? "faster" : "more slowly", heated ? "grows" : "shrinks",
           observer});
    }
    case 9: {  // photosynthesis and respiration
      return coin(rng) ? fill(
                             "During photosynthesis, plants use light energy to turn carbon dioxide and water into "
                             "glucose and oxygen. {0} found that the rate rises with light intensity until another "
                             "factor limits it.",
                             {observer})
                       : fill(
                             "In cellular respiration, cells break down glucose with oxygen to release energy, "
                             "producing carbon dioxide and water. {0} measured the oxygen used by seeds as they grew.",
                             {observer});
    }
    case 10: {  // half-life
      const std::int64_t half_life = draw_int(rng, 2, 30), halvings = draw_int(rng, 1, 4);
      const std::int64_t start = 100 * (std::int64_t{1} << halvings) * draw_int(rng, 1, 5);
      return fill(
          "A radioactive isotope has a half-life of {0} years. A sample of {1} grams decays to {2} grams after "
          "{3} years, because it halves {4} times.",
          {str(half_life), str(start), str(start >> halvings), str(half_life * halvings), str(halvings)});
    }
    case 12: {  // melting and boiling points; carbon dioxide sublimes at normal pressure
      const Substance& m = pick(rng, substances);
      if (m.boiling < m.melting)
        return fill(
            "The compound {0}, with the formula {1}, does not melt at normal pressure: solid {0} turns "
            "directly into gas at about {2} degrees Celsius. {3} call this sublimation.",
            {std::string(m.name), std::string(m.formula), str(m.boiling), observer});
      return fill(
          "The compound {0} has the formula {1}. At sea level it melts at about {2} degrees Celsius and boils "
          "at about {3} degrees Celsius, so it is a liquid over a range of {4} degrees.",
          {std::string(m.name), std::string(m.formula), str(m.melting), str(m.boiling), str(m.boiling - m.melting)});
    }
    case 13: {  // temperature scales
      const std::int64_t celsius = 5 * draw_int(rng, -8, 30);
      return fill(
          "To convert a temperature from Celsius to Fahrenheit, multiply by 9/5 and add 32. {0} recorded "
          "{1} degrees Celsius, which is {2} degrees Fahrenheit or {3} kelvin.",
          {observer, str(celsius), str(celsius * 9 / 5 + 32), decimal(celsius * 100 + 27315, 2)});
    }
    default: {  // waves
      const std::int64_t frequency = draw_int(rng, 2, 50), wavelength = draw_int(rng, 1, 20);
      return fill(
          "The speed of a wave equals its frequency times its wavelength. {0} recorded a wave with a frequency "
          "of {1} hertz and a wavelength of {2} metres, so it travels at {3} metres per second.",
          {observer, str(frequency), str(wavelength), str(frequency * wavelength)});
    }
  }
}

}  // namespace text

/// One sample of `domain`.
inline std::string generate_text_sample(TextDomain domain, Rng& rng) {
  switch (domain) {
    case TextDomain::code: return text::code_sample(rng);
    case TextDomain::math: return text::math_sample(rng);
    case TextDomain::story: return text::story_sample(rng);
    case TextDomain::science: return text::science_sample(rng);
  }
  fail("generate_text_sample: unknown domain ", static_cast<int>(domain));
}

/// `per_domain` distinct samples of each domain, in text_domains order, drawn from `rng` (same seed, same
/// samples). A draw that repeats an earlier sample of its domain is drawn again.
inline std::array<std::vector<std::string>, 4> generate_text_domains(Index per_domain, Rng& rng) {
  require(per_domain > 0, "generate_text_domains: per_domain must be positive, got ", per_domain);
  std::array<std::vector<std::string>, 4> samples;
  for (const TextDomain domain : text_domains) {
    std::set<std::string> seen;
    auto& texts = samples[static_cast<std::size_t>(domain)];
    const Index max_draws = 100 * per_domain;
    for (Index draws = 0; static_cast<Index>(texts.size()) < per_domain; ++draws) {
      require(draws < max_draws, "generate_text_domains: the ", text_domain_name(domain), " templates gave only ",
              texts.size(), " distinct samples in ", max_draws, " draws; asked for ", per_domain);
      std::string sample = generate_text_sample(domain, rng);
      if (seen.insert(sample).second) texts.push_back(std::move(sample));
    }
  }
  return samples;
}

}  // namespace moe::examples
