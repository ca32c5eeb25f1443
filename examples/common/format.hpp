#pragma once
// Numbers in the examples' reports, on {fmt} (fmt::format("{:.3f}", x) and the like, written in place):
// here only what a format string alone does not say.

#include <cmath>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace moe::examples {

/// `value` with `decimals` decimals ("nan", "inf" as printf writes them).
inline std::string fixed(double value, int decimals) { return fmt::format("{:.{}f}", value, decimals); }

/// A fraction as a percentage: percent(0.8677, 2) is "86.77%".
inline std::string percent(double fraction, int decimals = 1) { return fixed(100.0 * fraction, decimals) + "%"; }

/// fixed(), with "∞" and "−∞" for infinities (a ratio over nothing) and "n/a" for NaN: for tables of ratios.
inline std::string fixed_or_symbol(double value, int decimals) {
  if (std::isnan(value)) return "n/a";
  if (std::isinf(value)) return value > 0 ? "∞" : "−∞";
  return fixed(value, decimals);
}

/// A mean and a standard deviation with `decimals` decimals, the mean followed by `unit`:
/// mean_sd(86.77, 1.234, 2, "%") is "86.77% ± 1.23".
inline std::string mean_sd(double mean, double sd, int decimals, std::string_view unit = "") {
  return fixed(mean, decimals) + std::string(unit) + " ± " + fixed(sd, decimals);
}

/// A duration rounded to the second, in minutes and seconds: "9 min 08 s".
inline std::string minutes_seconds(double seconds) {
  const auto whole = static_cast<long long>(seconds + 0.5);
  return fmt::format("{} min {:02} s", whole / 60, whole % 60);
}

}  // namespace moe::examples
