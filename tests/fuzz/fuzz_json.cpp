// moe's strict JSON parser (safetensors headers), into both of nlohmann's object orders, and the text its
// error messages quote.
#include "fuzz_common.hpp"
#include "moe/io/strict_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = moe::fuzz::as_text(data, size);
  moe::fuzz::refusals_allowed([&] { moe::detail::json_text(moe::parse_json(text)); });
  moe::fuzz::refusals_allowed([&] { moe::detail::json_text(moe::parse_json<nlohmann::ordered_json>(text)); });
  return 0;
}
