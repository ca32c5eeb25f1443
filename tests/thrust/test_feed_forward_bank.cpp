// The device banks of feed-forward experts (backends/thrust/feed_forward_bank.hpp) against plain loops in
// double, against finite differences, and bit for bit against themselves (run twice, any thread count).
// The same file runs on the device system of its build: OpenMP under g++, CUDA under nvcc.

#include "backends/thrust/feed_forward_bank.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numbers>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <thrust/copy.h>
#include <thrust/device_vector.h>

#include "moe/core/parallel.hpp"
#include "agreement.hpp"

namespace {

namespace device = moe::backends::device;
using moe_test::same_bits;
using moe_test::to_host;
using moe::Index;

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Each expert kind: its device bank and, for the reference, its activation and derivative in double.
struct ReLUKind {
  template <class S>
  using Bank = device::FeedForwardBank<moe::ReLU, S>;
  static constexpr bool gated = false;
  static double f(double x) { return x > 0 ? x : 0; }
  static double df(double x) { return x > 0 ? 1 : 0; }
};
struct GELUKind {
  template <class S>
  using Bank = device::FeedForwardBank<moe::GELU, S>;
  static constexpr bool gated = false;
  static double cdf(double x) { return 0.5 * (1 + std::erf(x / std::numbers::sqrt2)); }
  static double f(double x) { return x * cdf(x); }
  static double df(double x) { return cdf(x) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * std::numbers::pi); }
};
struct SiLUKind {
  template <class S>
  using Bank = device::FeedForwardBank<moe::SiLU, S>;
  static constexpr bool gated = false;
  static double f(double x) { return x * sigmoid(x); }
  static double df(double x) { return sigmoid(x) * (1 + x * (1 - sigmoid(x))); }
};
struct SwiGLUKind {
  template <class S>
  using Bank = device::SwiGLUBank<S>;
  static constexpr bool gated = true;
};

struct Shape {
  Index d = 6, hidden = 10, out_features = 5;  // out_features 0 means d
  bool bias = true;
  std::vector<Index> offsets;  // one row range per expert

  Index experts() const { return static_cast<Index>(offsets.size()) - 1; }
  Index rows() const { return offsets.back(); }
  Index out() const { return out_features > 0 ? out_features : d; }
};

struct LinearLayout {
  std::string name;
  Index in, out;
};

/// The bank's Linear stacks, in the expert's named_parameters() order.
std::vector<LinearLayout> linears(const Shape& shape, bool gated) {
  if (gated)
    return {{"gate_proj", shape.d, shape.hidden},
            {"up_proj", shape.d, shape.hidden},
            {"down_proj", shape.hidden, shape.out()}};
  return {{"fc1", shape.d, shape.hidden}, {"fc2", shape.hidden, shape.out()}};
}

/// Host inputs of one run: parameters and their starting gradients (not zero, so that accumulation shows)
/// in named_parameters() order, x [rows x d] and dy [rows x out].
template <class S>
struct Problem {
  Shape shape;
  std::vector<std::string> names;
  std::vector<std::vector<S>> values, grads;
  std::vector<S> x, dy;
};

template <class S>
Problem<S> make_problem(const Shape& shape, bool gated, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  const auto random = [&](Index size) {
    std::vector<S> v(static_cast<std::size_t>(size));
    for (auto& e : v) e = static_cast<S>(uniform(rng));
    return v;
  };
  Problem<S> p{shape, {}, {}, {}, random(shape.rows() * shape.d), random(shape.rows() * shape.out())};
  for (const auto& linear : linears(shape, gated)) {
    p.names.push_back(linear.name + ".weight");
    p.values.push_back(random(shape.experts() * linear.out * linear.in));
    if (shape.bias) {
      p.names.push_back(linear.name + ".bias");
      p.values.push_back(random(shape.experts() * linear.out));
    }
  }
  for (const auto& value : p.values) p.grads.push_back(random(static_cast<Index>(value.size())));
  return p;
}

/// The problem in device memory, with the parameter views the banks take.
template <class S>
struct DeviceState {
  std::vector<thrust::device_vector<S>> values, grads;
  std::vector<device::DeviceParameter<S>> parameters;
  thrust::device_vector<S> x, dy;

  explicit DeviceState(const Problem<S>& p) : x(p.x.begin(), p.x.end()), dy(p.dy.begin(), p.dy.end()) {
    for (std::size_t i = 0; i < p.values.size(); ++i) {
      values.emplace_back(p.values[i].begin(), p.values[i].end());
      grads.emplace_back(p.grads[i].begin(), p.grads[i].end());
    }
    for (std::size_t i = 0; i < values.size(); ++i)
      parameters.push_back({thrust::raw_pointer_cast(values[i].data()), thrust::raw_pointer_cast(grads[i].data())});
  }
  DeviceState(const DeviceState&) = delete;
  DeviceState& operator=(const DeviceState&) = delete;

  void reset_grads(const Problem<S>& p) {
    for (std::size_t i = 0; i < grads.size(); ++i) thrust::copy(p.grads[i].begin(), p.grads[i].end(), grads[i].begin());
  }
};

template <class Kind, class S>
typename Kind::template Bank<S> make_bank(const Shape& shape) {
  return {shape.experts(), shape.d, {.hidden = shape.hidden, .out_features = shape.out_features, .bias = shape.bias}};
}

template <class S>
struct Result {
  std::vector<S> y, dx;
  std::vector<std::vector<S>> grads;
};

/// Forward over the given rows, then backward of the state's dy, from the gradients the state holds.
template <class Bank, class S, class Offsets>
Result<S> run(Bank& bank, DeviceState<S>& state, const Offsets& offsets) {
  Result<S> result;
  result.y = to_host(bank.forward(offsets, thrust::raw_pointer_cast(state.x.data()), state.parameters));
  result.dx = to_host(bank.backward(thrust::raw_pointer_cast(state.dy.data()), state.parameters));
  for (const auto& grad : state.grads) result.grads.push_back(to_host(grad));
  return result;
}

template <class Bank, class S>
Result<S> run(Bank& bank, const Problem<S>& p, DeviceState<S>& state) {
  return run(bank, state, p.shape.offsets);
}

/// One Linear stack in double, for the reference: y = W_e x + b_e for one row of expert e.
struct ReferenceLinear {
  Index in, out;
  std::vector<double> w, b, gw, gb;  // b, gb empty without bias

  void forward(Index e, const double* x, double* y) const {
    for (Index o = 0; o < out; ++o) {
      double sum = b.empty() ? 0.0 : b[e * out + o];
      for (Index k = 0; k < in; ++k) sum += w[(e * out + o) * in + k] * x[k];
      y[o] = sum;
    }
  }
  /// dx += W_e^T dy.
  void input_grad(Index e, const double* dy, double* dx) const {
    for (Index k = 0; k < in; ++k)
      for (Index o = 0; o < out; ++o) dx[k] += w[(e * out + o) * in + k] * dy[o];
  }
  void accumulate_grads(Index e, const double* dy, const double* x) {
    for (Index o = 0; o < out; ++o) {
      for (Index k = 0; k < in; ++k) gw[(e * out + o) * in + k] += dy[o] * x[k];
      if (!gb.empty()) gb[e * out + o] += dy[o];
    }
  }
};

struct Reference {
  std::vector<double> y, dx;
  std::vector<std::vector<double>> grads;
};

/// The bank's forward and backward with plain loops, row by row, in double.
template <class Kind, class S>
Reference reference(const Problem<S>& p) {
  const Shape& shape = p.shape;
  const auto as_double = [](const std::vector<S>& v) { return std::vector<double>(v.begin(), v.end()); };
  std::vector<ReferenceLinear> stacks;
  std::size_t i = 0;
  for (const auto& linear : linears(shape, Kind::gated)) {
    ReferenceLinear stack{linear.in, linear.out, as_double(p.values[i]), {}, as_double(p.grads[i]), {}};
    ++i;
    if (shape.bias) {
      stack.b = as_double(p.values[i]);
      stack.gb = as_double(p.grads[i]);
      ++i;
    }
    stacks.push_back(std::move(stack));
  }
  const Index d = shape.d, h = shape.hidden, out = shape.out();
  Reference r{std::vector<double>(static_cast<std::size_t>(shape.rows() * out)),
              std::vector<double>(static_cast<std::size_t>(shape.rows() * d), 0.0),
              {}};
  std::vector<double> x(static_cast<std::size_t>(d)), dy(static_cast<std::size_t>(out));
  std::vector<double> a(static_cast<std::size_t>(h)), b(a), c(a), da(a), db(a), dc(a);
  for (Index e = 0; e < shape.experts(); ++e) {
    for (Index row = shape.offsets[static_cast<std::size_t>(e)]; row < shape.offsets[static_cast<std::size_t>(e) + 1];
         ++row) {
      std::copy_n(p.x.begin() + row * d, d, x.begin());
      std::copy_n(p.dy.begin() + row * out, out, dy.begin());
      double* y = r.y.data() + row * out;
      double* dx = r.dx.data() + row * d;
      std::fill(da.begin(), da.end(), 0.0);
      if constexpr (Kind::gated) {
        // a = gate, b = up, c = silu(gate) * up.
        ReferenceLinear &gate = stacks[0], &up = stacks[1], &down = stacks[2];
        gate.forward(e, x.data(), a.data());
        up.forward(e, x.data(), b.data());
        for (Index j = 0; j < h; ++j) c[j] = a[j] * sigmoid(a[j]) * b[j];
        down.forward(e, c.data(), y);
        down.input_grad(e, dy.data(), da.data());  // d product
        down.accumulate_grads(e, dy.data(), c.data());
        for (Index j = 0; j < h; ++j) {
          const double s = sigmoid(a[j]);
          db[j] = da[j] * b[j] * s * (1 + a[j] * (1 - s));  // d gate
          dc[j] = da[j] * a[j] * s;                         // d up
        }
        gate.accumulate_grads(e, db.data(), x.data());
        up.accumulate_grads(e, dc.data(), x.data());
        gate.input_grad(e, db.data(), dx);
        up.input_grad(e, dc.data(), dx);
      } else {
        // a = fc1(x), b = act(a).
        ReferenceLinear &fc1 = stacks[0], &fc2 = stacks[1];
        fc1.forward(e, x.data(), a.data());
        for (Index j = 0; j < h; ++j) b[j] = Kind::f(a[j]);
        fc2.forward(e, b.data(), y);
        fc2.input_grad(e, dy.data(), da.data());
        fc2.accumulate_grads(e, dy.data(), b.data());
        for (Index j = 0; j < h; ++j) db[j] = da[j] * Kind::df(a[j]);
        fc1.accumulate_grads(e, db.data(), x.data());
        fc1.input_grad(e, db.data(), dx);
      }
    }
  }
  for (auto& stack : stacks) {
    r.grads.push_back(std::move(stack.gw));
    if (shape.bias) r.grads.push_back(std::move(stack.gb));
  }
  return r;
}

/// max |got - expected| <= tolerance * max |expected| (the tensor's scale: entries near 0 after
/// cancellation carry the rounding of the terms that cancelled).
template <class S>
void check_close(const std::string& what, const std::vector<S>& got, const std::vector<double>& expected,
                 double tolerance) {
  INFO(what);
  REQUIRE(got.size() == expected.size());
  double scale = 0.0, worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    scale = std::max(scale, std::abs(expected[i]));
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - expected[i]));
  }
  CAPTURE(worst, scale);
  CHECK(worst <= tolerance * scale);
}

template <class S>
bool same_bits(const Result<S>& a, const Result<S>& b) {
  if (!same_bits(a.y, b.y) || !same_bits(a.dx, b.dx) || a.grads.size() != b.grads.size()) return false;
  for (std::size_t i = 0; i < a.grads.size(); ++i)
    if (!same_bits(a.grads[i], b.grads[i])) return false;
  return true;
}

/// Row ranges of 1, 3 and 8 experts, with empty experts and uneven counts, and a block with no rows at all.
std::vector<Shape> shapes(bool bias) {
  return {Shape{.out_features = 0, .bias = bias, .offsets = {0, 7}}, Shape{.bias = bias, .offsets = {0, 4, 4, 11}},
          Shape{.bias = bias, .offsets = {0, 3, 3, 10, 11, 11, 11, 16, 18}},
          Shape{.bias = bias, .offsets = {0, 0, 0, 0}}};
}

template <class KindT, class ScalarT>
struct Case {
  using Kind = KindT;
  using Scalar = ScalarT;
};
using AllCases =
    std::tuple<Case<ReLUKind, float>, Case<ReLUKind, double>, Case<GELUKind, float>, Case<GELUKind, double>,
               Case<SiLUKind, float>, Case<SiLUKind, double>, Case<SwiGLUKind, float>, Case<SwiGLUKind, double>>;

}  // namespace

TEMPLATE_LIST_TEST_CASE("Device feed-forward banks match plain loops in double", "[thrust][bank]", AllCases) {
  using Kind = typename TestType::Kind;
  using S = typename TestType::Scalar;
  const double tolerance = std::is_same_v<S, float> ? 1e-5 : 1e-12;
  for (const bool bias : {false, true}) {
    for (const Shape& shape : shapes(bias)) {
      CAPTURE(bias, shape.offsets);
      const Problem<S> problem = make_problem<S>(shape, Kind::gated, 7);
      DeviceState<S> state(problem);
      auto bank = make_bank<Kind, S>(shape);
      REQUIRE(bank.out_features() == shape.out());
      const Result<S> got = run(bank, problem, state);
      const Reference expected = reference<Kind>(problem);
      check_close("y", got.y, expected.y, tolerance);
      check_close("dx", got.dx, expected.dx, tolerance);
      REQUIRE(got.grads.size() == problem.names.size());
      for (std::size_t i = 0; i < got.grads.size(); ++i)
        check_close(problem.names[i] + " gradient", got.grads[i], expected.grads[i], tolerance);
    }
  }
}

TEMPLATE_TEST_CASE("Device bank gradients match finite differences", "[thrust][bank]", GELUKind, SwiGLUKind) {
  using Kind = TestType;
  const Shape shape{.d = 3, .hidden = 4, .out_features = 2, .bias = true, .offsets = {0, 2, 2, 5}};
  Problem<double> problem = make_problem<double>(shape, Kind::gated, 11);
  for (auto& grad : problem.grads) std::fill(grad.begin(), grad.end(), 0.0);
  DeviceState<double> state(problem);
  auto bank = make_bank<Kind, double>(shape);
  const Result<double> analytic = run(bank, problem, state);

  // loss = sum of y * dy, so that d loss / d y = dy.
  const auto loss = [&] {
    const std::vector<double> y =
        to_host(bank.forward(shape.offsets, thrust::raw_pointer_cast(state.x.data()), state.parameters));
    double sum = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) sum += y[i] * problem.dy[i];
    return sum;
  };
  // Each perturbation uploads the whole (small) variable: no device_reference, whose host conversion
  // sanitizers flag inside Thrust.
  const auto check_variable = [&](const std::string& name, thrust::device_vector<double>& variable,
                                  const std::vector<double>& gradient) {
    INFO(name);
    REQUIRE(variable.size() == gradient.size());
    std::vector<double> values = to_host(variable);
    const auto perturbed_loss = [&](std::size_t i, double value) {
      const double saved = values[i];
      values[i] = value;
      thrust::copy(values.begin(), values.end(), variable.begin());
      values[i] = saved;
      return loss();
    };
    const double step = 1e-6;
    for (std::size_t i = 0; i < values.size(); ++i) {
      const double numeric = (perturbed_loss(i, values[i] + step) - perturbed_loss(i, values[i] - step)) / (2 * step);
      CAPTURE(i, numeric, gradient[i]);
      CHECK(std::abs(numeric - gradient[i]) <= 1e-7 + 1e-5 * std::abs(numeric));
    }
    thrust::copy(values.begin(), values.end(), variable.begin());
  };
  for (std::size_t p = 0; p < state.values.size(); ++p)
    check_variable(problem.names[p], state.values[p], analytic.grads[p]);
  check_variable("x", state.x, analytic.dx);
}

TEMPLATE_TEST_CASE("Device banks give the same bits twice and for any thread count", "[thrust][bank]", GELUKind,
                   SwiGLUKind) {
  using Kind = TestType;
  const Shape shape{
      .d = 16, .hidden = 24, .out_features = 12, .bias = true, .offsets = {0, 40, 40, 130, 131, 131, 200, 260, 300}};
  const Problem<float> problem = make_problem<float>(shape, Kind::gated, 3);
  DeviceState<float> state(problem);
  auto bank = make_bank<Kind, float>(shape);
  const auto run_from_start = [&](const auto& offsets) {
    state.reset_grads(problem);
    return run(bank, state, offsets);
  };
  const int threads = moe::set_num_threads(1);
  const Result<float> first = run_from_start(shape.offsets);
  moe::set_num_threads(4);
  const Result<float> second = run_from_start(shape.offsets);
  // A smaller block in between: the buffers shrink, then grow again within their capacity.
  const std::vector<Index> fewer_rows{0, 5, 5, 9, 9, 9, 20, 21, 30};
  bank.forward(fewer_rows, thrust::raw_pointer_cast(state.x.data()), state.parameters);
  bank.backward(thrust::raw_pointer_cast(state.dy.data()), state.parameters);
  const Result<float> third = run_from_start(shape.offsets);
  // The dispatch plan keeps its host offsets in 32 bits.
  const Result<float> fourth = run_from_start(std::vector<std::int32_t>(shape.offsets.begin(), shape.offsets.end()));
  moe::set_num_threads(threads);
  CHECK(same_bits(first, second));
  CHECK(same_bits(first, third));
  CHECK(same_bits(first, fourth));
}

TEST_CASE("Device banks reject dropout, malformed offsets and parameter lists", "[thrust][bank]") {
  using Bank = device::FeedForwardBank<moe::ReLU, float>;
  REQUIRE_THROWS_WITH(Bank(2, 4, {.hidden = 8, .dropout = 0.1}), Catch::Contains("Options::dropout"));

  const Shape shape{.d = 4, .hidden = 8, .out_features = 0, .bias = true, .offsets = {0, 2, 3}};
  const Problem<float> problem = make_problem<float>(shape, false, 5);
  DeviceState<float> state(problem);
  Bank bank(2, 4, {.hidden = 8});
  const float* x = thrust::raw_pointer_cast(state.x.data());
  REQUIRE_THROWS_WITH(bank.backward(thrust::raw_pointer_cast(state.dy.data()), state.parameters),
                      Catch::Contains("backward before forward"));
  REQUIRE_THROWS_WITH(bank.forward(std::vector<Index>{0, 3}, x, state.parameters),
                      Catch::Contains("offsets has 2 values, expected num_experts + 1 = 3"));
  REQUIRE_THROWS_WITH(bank.forward(std::vector<Index>{0, 3, 2}, x, state.parameters),
                      Catch::Contains("offsets must not decrease"));
  const std::vector<device::DeviceParameter<float>> without_biases{state.parameters[0], state.parameters[2]};
  REQUIRE_THROWS_WITH(bank.forward(shape.offsets, x, without_biases), Catch::Contains("expected 4 parameters"));
}
