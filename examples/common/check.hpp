#pragma once
// The examples' checks: each throws a moe::Error whose message names the argument, the expected and the
// actual value, as the library's own do (`require(batch > 0, "train_epoch: batch must be positive, got ",
// batch)`). The library's own helpers of this kind are internal: the examples use only its public API.

#include <sstream>
#include <stdexcept>
#include <string>

#include "moe/core/error.hpp"

namespace moe::examples {

/// Thrown by a run that stops on purpose before its end (--max-steps), once its state is saved to go on
/// from (common/resume.hpp): run_main (common/cli.hpp) prints the message and exits 0.
struct Stopped : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The parts streamed one after the other into one string.
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

/// Throws moe::Error with the concatenated message.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(concat(parts...));
}

/// Throws moe::Error with the concatenated message when `condition` is false.
template <class... Parts>
void require(bool condition, const Parts&... parts) {
  if (!condition) fail(parts...);
}

}  // namespace moe::examples
