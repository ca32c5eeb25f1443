#pragma once
// An exact rational number on 64-bit integers, for the generated mathematics problems whose answers must
// be exact (fractions of probabilities, quotients of decimals). Every operation checks for overflow.

#include <algorithm>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>

#include "common/check.hpp"

namespace moe::examples {

/// num/den in lowest terms with den > 0; integers convert implicitly. An overflowing operation throws
/// moe::Error instead of wrapping round.
class Rational {
 public:
  Rational() = default;
  Rational(std::int64_t value) : num_(value) {}  // implicit: an integer is a rational
  Rational(std::int64_t num, std::int64_t den) : num_(num), den_(den) {
    require(den != 0, "Rational: denominator is 0 in ", num, "/", den);
    normalise();
  }

  std::int64_t num() const { return num_; }
  std::int64_t den() const { return den_; }
  bool is_integer() const { return den_ == 1; }

  friend Rational operator+(const Rational& a, const Rational& b) {
    return {add(mul(a.num_, b.den_), mul(b.num_, a.den_)), mul(a.den_, b.den_)};
  }
  friend Rational operator-(const Rational& a, const Rational& b) { return a + (-b); }
  friend Rational operator*(const Rational& a, const Rational& b) {
    return {mul(a.num_, b.num_), mul(a.den_, b.den_)};
  }
  friend Rational operator/(const Rational& a, const Rational& b) {
    require(b.num_ != 0, "Rational: division of ", a.str(), " by 0");
    return {mul(a.num_, b.den_), mul(a.den_, b.num_)};
  }
  Rational operator-() const { return {mul(num_, -1), den_}; }
  Rational& operator+=(const Rational& b) { return *this = *this + b; }
  Rational& operator-=(const Rational& b) { return *this = *this - b; }
  Rational& operator*=(const Rational& b) { return *this = *this * b; }
  Rational& operator/=(const Rational& b) { return *this = *this / b; }

  friend bool operator==(const Rational&, const Rational&) = default;
  friend std::strong_ordering operator<=>(const Rational& a, const Rational& b) {
    return mul(a.num_, b.den_) <=> mul(b.num_, a.den_);
  }

  /// "7", "-7/3": the form of the answers of the DeepMind Mathematics dataset.
  std::string str() const { return is_integer() ? std::to_string(num_) : concat(num_, "/", den_); }

 private:
  static std::int64_t mul(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    require(!__builtin_mul_overflow(a, b, &r), "Rational: ", a, " * ", b, " overflows 64 bits");
    return r;
  }
  static std::int64_t add(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    require(!__builtin_add_overflow(a, b, &r), "Rational: ", a, " + ", b, " overflows 64 bits");
    return r;
  }

  void normalise() {
    if (den_ < 0) {
      num_ = mul(num_, -1);
      den_ = mul(den_, -1);
    }
    const std::int64_t g = std::gcd(num_, den_);  // den_ > 0, so g > 0
    num_ /= g;
    den_ /= g;
  }

  std::int64_t num_ = 0;
  std::int64_t den_ = 1;
};

/// The exact decimal form ("2.81", "-0.05", "12") of a rational whose denominator divides a power of 10.
inline std::string decimal_string(const Rational& value) {
  std::int64_t rest = value.den();
  int twos = 0, fives = 0;
  for (; rest % 2 == 0; rest /= 2) ++twos;
  for (; rest % 5 == 0; rest /= 5) ++fives;
  require(rest == 1, "decimal_string: ", value.str(), " has no finite decimal expansion");
  const auto places = static_cast<std::size_t>(std::max(twos, fives));
  Rational scaled = value;  // becomes value * 10^places, an integer
  for (std::size_t i = 0; i < places; ++i) scaled *= 10;
  const auto n = static_cast<std::uint64_t>(scaled.num());
  std::string digits = std::to_string(scaled.num() < 0 ? 0 - n : n);
  if (places > 0) {
    if (digits.size() <= places) digits = std::string(places + 1 - digits.size(), '0') + digits;
    const std::size_t point = digits.size() - places;
    digits = digits.substr(0, point) + "." + digits.substr(point);
  }
  return scaled.num() < 0 ? "-" + digits : digits;
}

}  // namespace moe::examples
