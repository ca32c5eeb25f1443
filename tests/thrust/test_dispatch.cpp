// The Thrust dispatch (backends/thrust/dispatch.hpp) against references written here with plain loops, on
// whichever device system this file is built for: OpenMP under g++ (label thrust-omp), CUDA under nvcc
// (label cuda). Plans, gathers and top-K selections must match exactly; sums within 1e-6 (float) or 1e-12
// (double) of the sum of their terms' magnitudes, which covers the fused multiply-adds of a GPU.

#include "backends/thrust/dispatch.hpp"

#include <catch2/catch.hpp>
#include <thrust/execution_policy.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "agreement.hpp"

namespace {

using moe::Index;
using moe_test::same_bits;
using moe_test::to_host;
using moe::backends::device::DevicePlan;
namespace device = moe::backends::device;

template <class T>
thrust::device_vector<T> to_device(const std::vector<T>& values) {
  return thrust::device_vector<T>(values.begin(), values.end());
}

template <class T>
T* raw(thrust::device_vector<T>& values) {
  return thrust::raw_pointer_cast(values.data());
}

template <class To, class From>
std::vector<To> convert(const std::vector<From>& values) {
  return std::vector<To>(values.begin(), values.end());
}

struct Config {
  Index tokens, k, num_experts, capacity, width;
  bool distinct = true;  // a token's k experts are different, as a top-K router gives them
  bool empties = false;  // about a third of the slots empty (-1), as expert-choice routing leaves them

  std::string name() const {
    std::ostringstream out;
    out << "T=" << tokens << " K=" << k << " N=" << num_experts << " capacity=" << capacity << " width=" << width
        << (distinct ? "" : " repeats") << (empties ? " empties" : "");
    return out.str();
  }
};

// K = 1..6, capacities that drop (small ones, against skewed loads) and that do not, no tokens, repeated ids,
// empty slots.
const std::vector<Config> configs = {
    {1, 1, 1, 0, 1},   {7, 1, 4, 0, 3},   {16, 2, 8, 3, 5},  {12, 2, 3, 2, 1},   {33, 3, 5, 0, 16},
    {40, 4, 6, 5, 8},  {25, 5, 8, 10, 33}, {50, 6, 6, 0, 7}, {64, 6, 16, 20, 4}, {0, 2, 4, 0, 3},
    {20, 3, 4, 4, 2, false}, {30, 4, 5, 0, 6, true, true}, {30, 4, 5, 3, 6, true, true},
};

/// Expert ids [T x K] with a skewed load (expert e drawn with weight 1 / (e + 1)), so that capacities drop.
std::vector<std::int64_t> random_experts(const Config& config, std::mt19937& rng) {
  std::vector<double> weights(static_cast<std::size_t>(config.num_experts));
  for (std::size_t e = 0; e < weights.size(); ++e) weights[e] = 1.0 / static_cast<double>(e + 1);
  std::discrete_distribution<std::int64_t> draw(weights.begin(), weights.end());
  std::vector<std::int64_t> experts;
  for (Index t = 0; t < config.tokens; ++t) {
    const auto row_begin = experts.size();
    while (experts.size() - row_begin < static_cast<std::size_t>(config.k)) {
      const std::int64_t e = draw(rng);
      if (!config.distinct || std::find(experts.begin() + static_cast<std::ptrdiff_t>(row_begin), experts.end(), e) ==
                                  experts.end())
        experts.push_back(e);
    }
  }
  if (config.empties)
    for (auto& e : experts)
      if (rng() % 3 == 0) e = -1;
  return experts;
}

template <class Scalar>
std::vector<Scalar> random_values(std::size_t size, Scalar low, Scalar high, std::mt19937& rng) {
  std::uniform_real_distribution<Scalar> draw(low, high);
  std::vector<Scalar> values(size);
  for (auto& value : values) value = draw(rng);
  return values;
}

/// The plan by its definition: expert by expert, the assignments in token order, the first `capacity` kept.
struct ReferencePlan {
  std::vector<Index> routed, offsets, slot, position;
  Index dropped = 0;
};

/// Each expert keeps its first `capacity` assignments in token order, or with DropPolicy::choice_order in
/// the order of (choice, token); empty slots (-1) are no assignment.
ReferencePlan reference_plan(const std::vector<std::int64_t>& experts, const Config& config,
                             moe::DropPolicy policy = moe::DropPolicy::token_order) {
  const Index assignments = config.tokens * config.k;
  std::vector<Index> order;
  for (Index i = 0; i < assignments; ++i)
    order.push_back(policy == moe::DropPolicy::token_order ? i : i % config.tokens * config.k + i / config.tokens);
  ReferencePlan plan;
  plan.position.assign(static_cast<std::size_t>(assignments), -1);
  plan.offsets.push_back(0);
  for (Index e = 0; e < config.num_experts; ++e) {
    Index routed = 0;
    for (const Index a : order) {
      if (experts[static_cast<std::size_t>(a)] != e) continue;
      if (config.capacity == 0 || routed < config.capacity) {
        plan.position[static_cast<std::size_t>(a)] = static_cast<Index>(plan.slot.size());
        plan.slot.push_back(a);
      }
      ++routed;
    }
    plan.routed.push_back(routed);
    plan.offsets.push_back(static_cast<Index>(plan.slot.size()));
  }
  plan.dropped = std::accumulate(plan.routed.begin(), plan.routed.end(), Index{0}) - static_cast<Index>(plan.slot.size());
  return plan;
}

template <class ExpertId, class IndexT>
void check_plan(const Config& config, const std::vector<std::int64_t>& experts, moe::DropPolicy policy) {
  auto device_experts = to_device(convert<ExpertId>(experts));
  DevicePlan<IndexT> plan;
  device::plan(thrust::device, raw(device_experts), config.tokens, config.k, config.num_experts, config.capacity,
               policy, plan);
  const ReferencePlan expected = reference_plan(experts, config, policy);
  CHECK(convert<Index>(to_host(plan.routed)) == expected.routed);
  CHECK(convert<Index>(to_host(plan.offsets)) == expected.offsets);
  CHECK(convert<Index>(plan.host_offsets) == expected.offsets);
  CHECK(convert<Index>(to_host(plan.slot)) == expected.slot);
  CHECK(convert<Index>(to_host(plan.position)) == expected.position);
  CHECK(plan.dropped == expected.dropped);
  CHECK(plan.rows() == static_cast<Index>(expected.slot.size()));
}

/// Where actual and expected first differ by more than tolerance * magnitude (the sum of the expected value's
/// terms' magnitudes), or an empty string.
template <class Scalar>
std::string first_mismatch(const std::vector<Scalar>& actual, const std::vector<Scalar>& expected,
                           const std::vector<Scalar>& magnitude) {
  const double tolerance = std::is_same_v<Scalar, float> ? 1e-6 : 1e-12;
  if (actual.size() != expected.size()) return "size " + std::to_string(actual.size()) + ", expected " +
                                               std::to_string(expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i)
    if (std::abs(static_cast<double>(actual[i]) - static_cast<double>(expected[i])) >
        tolerance * static_cast<double>(magnitude[i])) {
      std::ostringstream out;
      out.precision(17);
      out << "element " << i << ": " << actual[i] << ", expected " << expected[i] << " (terms' magnitude "
          << magnitude[i] << ")";
      return out.str();
    }
  return "";
}

}  // namespace

TEST_CASE("device::plan matches the plan by its definition, for int32 and int64 ids and plans", "[thrust]") {
  std::mt19937 rng(12);
  for (const Config& config : configs) {
    const auto experts = random_experts(config, rng);
    for (const auto policy : {moe::DropPolicy::token_order, moe::DropPolicy::choice_order}) {
      INFO(config.name() << (policy == moe::DropPolicy::token_order ? " token_order" : " choice_order"));
      check_plan<std::int32_t, std::int32_t>(config, experts, policy);
      check_plan<std::int64_t, std::int32_t>(config, experts, policy);
      check_plan<std::int64_t, std::int64_t>(config, experts, policy);
    }
  }
}

TEST_CASE("device::plan names an invalid expert id and the number of experts", "[thrust]") {
  DevicePlan<std::int32_t> plan;
  // Ids of 3 tokens, K = 2, N = 5: the first invalid one in assignment order is named.
  auto too_large = to_device(std::vector<std::int32_t>{0, 1, 2, 3, 4, 5});
  CHECK_THROWS_AS(device::plan(thrust::device, raw(too_large), 3, 2, 5, 0, moe::DropPolicy::token_order, plan), moe::Error);
  CHECK_THROWS_WITH(device::plan(thrust::device, raw(too_large), 3, 2, 5, 0, moe::DropPolicy::token_order, plan),
                    "device::plan: expert index 5 at token 2, slot 1, expected [0, 5) or -1 (an empty slot)");
  auto negative = to_device(std::vector<std::int64_t>{0, 1, -2, 3, 7, 2});
  CHECK_THROWS_WITH(device::plan(thrust::device, raw(negative), 3, 2, 5, 0, moe::DropPolicy::token_order, plan),
                    "device::plan: expert index -2 at token 1, slot 0, expected [0, 5) or -1 (an empty slot)");
  CHECK_THROWS_WITH(device::plan(thrust::device, raw(negative), 3, 2, 5, -1, moe::DropPolicy::token_order, plan),
                    Catch::Contains("capacity must be >= 0") && Catch::Contains("got -1"));
}

TEMPLATE_TEST_CASE("device gather, combine, output grads and scatter match plain loops", "[thrust]", float, double) {
  using Scalar = TestType;
  std::mt19937 rng(7);
  for (const Config& config : configs) {
    INFO(config.name());
    const Index tokens = config.tokens, k = config.k, width = config.width;
    const auto experts = random_experts(config, rng);
    const ReferencePlan expected_plan = reference_plan(experts, config);
    const auto rows = static_cast<Index>(expected_plan.slot.size());
    auto device_experts = to_device(experts);
    DevicePlan<std::int32_t> plan;
    device::plan(thrust::device, raw(device_experts), tokens, k, config.num_experts, config.capacity,
                 moe::DropPolicy::token_order, plan);

    const auto x = random_values<Scalar>(static_cast<std::size_t>(tokens * width), -1, 1, rng);
    const auto gates = random_values<Scalar>(static_cast<std::size_t>(tokens * k), 0, 1, rng);
    const auto out = random_values<Scalar>(static_cast<std::size_t>(rows * width), -1, 1, rng);
    const auto dy = random_values<Scalar>(static_cast<std::size_t>(tokens * width), -1, 1, rng);
    const auto input_grads = random_values<Scalar>(static_cast<std::size_t>(rows * width), -1, 1, rng);
    auto device_x = to_device(x), device_gates = to_device(gates), device_out = to_device(out);
    auto device_dy = to_device(dy), device_input_grads = to_device(input_grads);

    // References, summed in the order the contract gives, with the magnitudes of their terms.
    std::vector<Scalar> gathered(static_cast<std::size_t>(rows * width));
    std::vector<Scalar> y(static_cast<std::size_t>(tokens * width), 0), y_magnitude(y.size(), 0);
    std::vector<Scalar> dx(y.size(), 0), dx_magnitude(y.size(), 0);
    std::vector<Scalar> d_rows(gathered.size()), d_rows_magnitude(gathered.size());
    std::vector<Scalar> d_gates(static_cast<std::size_t>(tokens * k), 0), d_gates_magnitude(d_gates.size(), 0);
    for (Index r = 0; r < rows; ++r) {
      const Index assignment = expected_plan.slot[static_cast<std::size_t>(r)], t = assignment / k;
      for (Index c = 0; c < width; ++c) {
        const auto element = static_cast<std::size_t>(r * width + c);
        const auto token_element = static_cast<std::size_t>(t * width + c);
        gathered[element] = x[token_element];
        d_rows[element] = gates[static_cast<std::size_t>(assignment)] * dy[token_element];
        d_rows_magnitude[element] = std::abs(d_rows[element]);
      }
    }
    for (Index t = 0; t < tokens; ++t)
      for (Index j = 0; j < k; ++j) {
        const auto assignment = static_cast<std::size_t>(t * k + j);
        const Index row = expected_plan.position[assignment];
        if (row < 0) continue;
        for (Index c = 0; c < width; ++c) {
          const auto token_element = static_cast<std::size_t>(t * width + c);
          const auto row_element = static_cast<std::size_t>(row * width + c);
          y[token_element] += gates[assignment] * out[row_element];
          y_magnitude[token_element] += std::abs(gates[assignment] * out[row_element]);
          dx[token_element] += input_grads[row_element];
          dx_magnitude[token_element] += std::abs(input_grads[row_element]);
          d_gates[assignment] += dy[token_element] * out[row_element];
          d_gates_magnitude[assignment] += std::abs(dy[token_element] * out[row_element]);
        }
      }

    thrust::device_vector<Scalar> device_gathered(gathered.size()), device_y(y.size()), device_dx(dx.size());
    thrust::device_vector<Scalar> device_d_rows(d_rows.size());
    // Dropped assignments must come out 0 whatever the buffer held.
    thrust::device_vector<Scalar> device_d_gates(d_gates.size(), Scalar(99));
    device::gather(thrust::device, raw(device_x), width, plan, raw(device_gathered));
    device::combine(thrust::device, raw(device_out), raw(device_gates), width, plan, raw(device_y));
    device::expert_output_grads(thrust::device, raw(device_dy), raw(device_out), raw(device_gates), width, plan,
                                raw(device_d_rows), raw(device_d_gates));
    device::scatter(thrust::device, raw(device_input_grads), width, plan, raw(device_dx));

    CHECK(to_host(device_gathered) == gathered);
    CHECK(first_mismatch(to_host(device_y), y, y_magnitude) == "");
    CHECK(first_mismatch(to_host(device_d_rows), d_rows, d_rows_magnitude) == "");
    CHECK(first_mismatch(to_host(device_d_gates), d_gates, d_gates_magnitude) == "");
    CHECK(first_mismatch(to_host(device_dx), dx, dx_magnitude) == "");

    // Identical run to run: a second pass gives the same bits.
    const auto first_y = to_host(device_y), first_dx = to_host(device_dx), first_d_gates = to_host(device_d_gates);
    device::combine(thrust::device, raw(device_out), raw(device_gates), width, plan, raw(device_y));
    device::scatter(thrust::device, raw(device_input_grads), width, plan, raw(device_dx));
    device::expert_output_grads(thrust::device, raw(device_dy), raw(device_out), raw(device_gates), width, plan,
                                raw(device_d_rows), raw(device_d_gates));
    CHECK(same_bits(to_host(device_y), first_y));
    CHECK(same_bits(to_host(device_dx), first_dx));
    CHECK(same_bits(to_host(device_d_gates), first_d_gates));
  }
}

TEMPLATE_TEST_CASE("device::select_top_k picks the K largest of scores + bias, ties to the lower index", "[thrust]",
                   float, double) {
  using Scalar = TestType;
  std::mt19937 rng(3);
  // Scores and biases in eighths: many ties, and scores + bias exact, so the expected order is certain.
  std::uniform_int_distribution<int> score_level(1, 8), bias_level(-2, 2);
  for (const Index num_experts : {Index(1), Index(6), Index(13)})
    for (Index k = 1; k <= std::min<Index>(6, num_experts); ++k)
      for (const bool with_bias : {false, true})
        for (const bool renormalize : {false, true}) {
          INFO("N=" << num_experts << " K=" << k << " bias=" << with_bias << " renormalize=" << renormalize);
          const Index tokens = 37;
          std::vector<Scalar> scores(static_cast<std::size_t>(tokens * num_experts)), bias;
          for (auto& score : scores) score = static_cast<Scalar>(score_level(rng)) / 8;
          if (with_bias)
            for (Index e = 0; e < num_experts; ++e) bias.push_back(static_cast<Scalar>(bias_level(rng)) / 8);

          std::vector<std::int32_t> expected_experts;
          std::vector<Scalar> expected_gates;
          for (Index t = 0; t < tokens; ++t) {
            auto value = [&](Index e) {
              const Scalar score = scores[static_cast<std::size_t>(t * num_experts + e)];
              return with_bias ? score + bias[static_cast<std::size_t>(e)] : score;
            };
            std::vector<Index> order(static_cast<std::size_t>(num_experts));
            std::iota(order.begin(), order.end(), Index(0));
            std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return value(a) > value(b); });
            Scalar sum = 0;
            for (Index j = 0; j < k; ++j) {
              const Index e = order[static_cast<std::size_t>(j)];
              expected_experts.push_back(static_cast<std::int32_t>(e));
              expected_gates.push_back(scores[static_cast<std::size_t>(t * num_experts + e)]);
              sum += expected_gates.back();
            }
            if (renormalize)
              for (Index j = 0; j < k; ++j) expected_gates[static_cast<std::size_t>(t * k + j)] /= sum;
          }

          auto device_scores = to_device(scores), device_bias = to_device(bias);
          thrust::device_vector<std::int32_t> experts32(expected_experts.size());
          thrust::device_vector<std::int64_t> experts64(expected_experts.size());
          thrust::device_vector<Scalar> gates(expected_gates.size());
          const Scalar* bias_pointer = with_bias ? raw(device_bias) : nullptr;
          device::select_top_k(thrust::device, raw(device_scores), bias_pointer, tokens, num_experts, k, renormalize,
                               raw(experts32), raw(gates));
          CHECK(to_host(experts32) == expected_experts);
          CHECK(to_host(gates) == expected_gates);
          device::select_top_k(thrust::device, raw(device_scores), bias_pointer, tokens, num_experts, k, renormalize,
                               raw(experts64), raw(gates));
          CHECK(to_host(experts64) == convert<std::int64_t>(expected_experts));
        }

  thrust::device_vector<float> scores(6, 1.0f);
  thrust::device_vector<std::int32_t> experts(6);
  thrust::device_vector<float> gates(6);
  CHECK_THROWS_WITH(device::select_top_k(thrust::device, raw(scores), static_cast<const float*>(nullptr), 2, 3, 4,
                                         false, raw(experts), raw(gates)),
                    "device::select_top_k: k must be in [1, 3] (the number of experts), got 4");
}

TEMPLATE_TEST_CASE("device load statistics count assignments and sum scores per expert and sequence", "[thrust]",
                   float, double) {
  using Scalar = TestType;
  std::mt19937 rng(5);
  for (const Config& config : configs) {
    if (config.tokens == 0) continue;
    const Index tokens = config.tokens, k = config.k, n = config.num_experts;
    const auto experts = random_experts(config, rng);
    const auto scores = random_values<Scalar>(static_cast<std::size_t>(tokens * n), 0, 1, rng);
    auto device_experts = to_device(experts);
    auto device_scores = to_device(scores);
    // The whole batch (the Switch loss) and, where the tokens split, sequences (the sequence-wise loss).
    for (const Index length : {tokens, tokens % 2 == 0 ? tokens / 2 : tokens}) {
      INFO(config.name() << " sequence_length=" << length);
      const Index sequences = tokens / length;
      std::vector<std::int64_t> expected_counts(static_cast<std::size_t>(sequences * n), 0);
      std::vector<Scalar> expected_sums(expected_counts.size(), 0), magnitude(expected_counts.size(), 0);
      for (Index t = 0; t < tokens; ++t) {
        for (Index j = 0; j < k; ++j)
          if (const auto e = experts[static_cast<std::size_t>(t * k + j)]; e >= 0)  // not an empty slot
            ++expected_counts[static_cast<std::size_t>(t / length * n + e)];
        for (Index e = 0; e < n; ++e) {
          expected_sums[static_cast<std::size_t>(t / length * n + e)] += scores[static_cast<std::size_t>(t * n + e)];
          magnitude[static_cast<std::size_t>(t / length * n + e)] += scores[static_cast<std::size_t>(t * n + e)];
        }
      }
      thrust::device_vector<std::int64_t> counts(expected_counts.size());
      thrust::device_vector<Scalar> sums(expected_sums.size());
      device::expert_counts(thrust::device, raw(device_experts), tokens, k, n, length, raw(counts));
      device::expert_score_sums(thrust::device, raw(device_scores), tokens, n, length, raw(sums));
      CHECK(to_host(counts) == expected_counts);
      CHECK(first_mismatch(to_host(sums), expected_sums, magnitude) == "");
      if (length == tokens) {
        DevicePlan<std::int64_t> plan;
        device::plan(thrust::device, raw(device_experts), tokens, k, n, config.capacity, moe::DropPolicy::token_order,
                     plan);
        CHECK(to_host(plan.routed) == expected_counts);
      }
    }
  }
  thrust::device_vector<Scalar> scores(12);
  thrust::device_vector<Scalar> sums(6);
  CHECK_THROWS_WITH(device::expert_score_sums(thrust::device, raw(scores), 4, 3, 3, raw(sums)),
                    "device::expert_score_sums: sequence_length must be positive and divide the 4 tokens, got 3");
}
