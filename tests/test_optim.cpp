#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "moe/optim/optimizer.hpp"
#include "moe/optim/schedule.hpp"

using moe::Index;
using moe::MatrixX;
using moe::Parameter;

namespace {

MatrixX<double> matrix2x2(double a, double b, double c, double d) {
  MatrixX<double> m(2, 2);
  m << a, b, c, d;
  return m;
}

Parameter<double> parameter2x2(double a, double b, double c, double d) {
  Parameter<double> p(2, 2);
  p.value = matrix2x2(a, b, c, d);
  return p;
}

void check_values(moe::ConstRef<double> actual, const std::vector<double>& expected, double epsilon = 1e-12) {
  REQUIRE(actual.size() == static_cast<Index>(expected.size()));
  for (Index i = 0; i < actual.size(); ++i) {
    INFO("element " << i);
    CHECK(actual.data()[i] == Approx(expected[static_cast<std::size_t>(i)]).epsilon(epsilon).margin(epsilon));
  }
}

// The gradient of 0.5 sum h (p - b)^2, as in the PyTorch runs below.
void quadratic_gradient(Parameter<double>& p) {
  const MatrixX<double> h = matrix2x2(1.0, 2.0, 0.5, 4.0);
  const MatrixX<double> b = matrix2x2(0.2, 0.1, -0.3, 1.0);
  p.grad = h.cwiseProduct(p.value) - b;
}

}  // namespace

static_assert(moe::Optimizer<moe::SGD<float>> && moe::Optimizer<moe::Adam<double>> && moe::Optimizer<moe::AdamW<>>);
static_assert(moe::LRSchedule<moe::ConstantLR> && moe::LRSchedule<moe::OneCycleLR> &&
              moe::LRSchedule<moe::CosineWithWarmup>);

TEST_CASE("AdamW takes one step computed by hand", "[optim][adam]") {
  auto p = parameter2x2(1.0, -2.0, 0.5, 3.0);
  p.grad = matrix2x2(0.1, -0.2, 0.3, 0.0);
  moe::AdamW<double> adamw({{"w", &p}}, {.lr = 0.1, .weight_decay = 0.1});
  CHECK(adamw.options().weight_decay == 0.1);
  adamw.step();
  // t = 1: m = 0.1 g, v = 0.001 g^2, bias corrected m / (1 - 0.9) = g, sqrt(v / (1 - 0.999)) = |g|, so
  // p = p (1 - lr wd) - lr g / (|g| + eps) with 1 - lr wd = 0.99; a zero gradient leaves the decay alone.
  check_values(p.value, {0.99 * 1.0 - 0.1 * 0.1 / (0.1 + 1e-8), 0.99 * -2.0 + 0.1 * 0.2 / (0.2 + 1e-8),
                         0.99 * 0.5 - 0.1 * 0.3 / (0.3 + 1e-8), 0.99 * 3.0});
  CHECK(adamw.steps() == 1);
  check_values(adamw.state().exp_avg[0], {0.01, -0.02, 0.03, 0.0});
  check_values(adamw.state().exp_avg_sq[0], {0.001 * 0.01, 0.001 * 0.04, 0.001 * 0.09, 0.0});
}

TEST_CASE("Adam adds L2 weight decay to the gradient and eps after the bias correction", "[optim][adam]") {
  auto p = parameter2x2(1.0, -2.0, 0.5, 3.0);
  p.grad = matrix2x2(0.1, -0.2, 0.3, 0.0);
  CHECK(moe::Adam<double>::Options{}.weight_decay == 0.0);
  CHECK(moe::AdamW<double>::Options{}.weight_decay == 1e-2);
  moe::Adam<double> adam({{"w", &p}}, {.lr = 0.1, .eps = 0.1, .weight_decay = 0.5});
  adam.step();
  // g' = g + 0.5 p = (0.6, -1.2, 0.55, 1.5); t = 1 gives p -= lr g' / (|g'| + eps). Adding eps before
  // dividing by sqrt(1 - beta2) would give |g'| + 3.16 instead.
  check_values(p.value,
               {1.0 - 0.1 * 0.6 / 0.7, -2.0 + 0.1 * 1.2 / 1.3, 0.5 - 0.1 * 0.55 / 0.65, 3.0 - 0.1 * 1.5 / 1.6});
}

TEST_CASE("Adam and AdamW match PyTorch over three steps, with beta1 set after the first", "[optim][adam]") {
  // /usr/bin/python3, torch 1.13, float64:
  //   p = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
  //   h = torch.tensor([[1.0, 2.0], [0.5, 4.0]]); b = torch.tensor([[0.2, 0.1], [-0.3, 1.0]])
  //   opt = torch.optim.Adam([p], lr=0.1, weight_decay=0.5)   # and AdamW(...)
  //   for k in range(3):
  //       p.grad = (h * p - b).detach(); opt.step()
  //       if k == 0: opt.param_groups[0]['betas'] = (0.5, 0.999)
  auto run = [](auto& optimizer, Parameter<double>& p) {
    for (int k = 0; k < 3; ++k) {
      quadratic_gradient(p);
      optimizer.step();
      if (k == 0) optimizer.set_momentum(0.5);
    }
    CHECK(optimizer.options().beta1 == 0.5);
    CHECK(optimizer.steps() == 3);
  };
  SECTION("Adam") {
    auto p = parameter2x2(1.0, -2.0, 0.5, 3.0);
    moe::Adam<double> adam({{"w", &p}}, {.lr = 0.1, .weight_decay = 0.5});
    run(adam, p);
    check_values(p.value, {0.7481253563590995, -1.742063493904122, 0.24907440644304646, 2.7409693787863514});
  }
  SECTION("AdamW") {
    auto p = parameter2x2(1.0, -2.0, 0.5, 3.0);
    moe::AdamW<double> adamw({{"w", &p}}, {.lr = 0.1, .weight_decay = 0.5});
    run(adamw, p);
    check_values(p.value, {0.6266664857587052, -1.4747612952574989, 0.18991637363880967, 2.3315869691178537});
  }
}

TEST_CASE("SGD momentum, dampening and nesterov match hand values over three steps", "[optim][sgd]") {
  // A constant gradient g and lr 0.1, momentum 0.9. The buffer starts as the first gradient:
  //   plain:        b = 1, 1.9, 2.71                            -> p -= 0.1 (1 + 1.9 + 2.71) g = 0.561 g
  //   dampening .5: b = 1, 0.9 + 0.5 = 1.4, 1.26 + 0.5 = 1.76   -> p -= 0.1 (1 + 1.4 + 1.76) g = 0.416 g
  //   nesterov:     d = 1 + 0.9 b = 1.9, 2.71, 3.439            -> p -= 0.1 (1.9 + 2.71 + 3.439) g = 0.8049 g
  const auto [options, factor] = GENERATE(table<moe::SGD<double>::Options, double>({
      {{.lr = 0.1, .momentum = 0.9}, 0.561},
      {{.lr = 0.1, .momentum = 0.9, .dampening = 0.5}, 0.416},
      {{.lr = 0.1, .momentum = 0.9, .nesterov = true}, 0.8049},
  }));
  auto p = parameter2x2(1.0, -2.0, 0.5, 3.0);
  moe::SGD<double> sgd({{"w", &p}}, options);
  for (int k = 0; k < 3; ++k) {
    p.grad = matrix2x2(1.0, -2.0, 0.5, 0.0);
    sgd.step();
  }
  check_values(p.value, {1.0 - factor, -2.0 + 2.0 * factor, 0.5 - 0.5 * factor, 3.0});
  CHECK(sgd.steps() == 3);
  CHECK(sgd.state().has_momentum_buffer);
}

TEST_CASE("SGD with weight decay matches PyTorch over three steps", "[optim][sgd]") {
  // As the Adam run above, with torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True,
  // weight_decay=0.1), and with SGD(..., dampening=0.3, weight_decay=0.1) whose momentum is set to 0.5
  // after the first step.
  SECTION("nesterov") {
    auto p = parameter2x2(1.0, -2.0, 0.5, 3.0);
    moe::SGD<double> sgd({{"w", &p}}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.1, .nesterov = true});
    for (int k = 0; k < 3; ++k) {
      quadratic_gradient(p);
      sgd.step();
    }
    check_values(p.value, {0.40580974899999994, 0.335244817, 0.06564725599999992, -0.9546812270000004});
  }
  SECTION("dampening, momentum changed") {
    auto p = parameter2x2(1.0, -2.0, 0.5, 3.0);
    moe::SGD<double> sgd({{"w", &p}}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.3, .weight_decay = 0.1});
    for (int k = 0; k < 3; ++k) {
      quadratic_gradient(p);
      sgd.step();
      if (k == 0) sgd.set_momentum(0.5);
    }
    CHECK(sgd.options().momentum == 0.5);
    check_values(p.value, {0.71010739, -0.71958513, 0.29921816, 0.15187002999999974});
  }
}

TEST_CASE("SGD without momentum starts its buffer when momentum is turned on", "[optim][sgd]") {
  auto p = parameter2x2(0.0, 0.0, 0.0, 0.0);
  moe::SGD<double> sgd({{"w", &p}}, {.lr = 1.0});
  p.grad.setConstant(1.0);
  sgd.step();  // p = -1, no buffer
  CHECK_FALSE(sgd.state().has_momentum_buffer);
  sgd.set_momentum(0.5);
  sgd.step();  // buffer = g = 1, p = -2
  sgd.step();  // buffer = 0.5 + 1 = 1.5, p = -3.5
  check_values(p.value, {-3.5, -3.5, -3.5, -3.5});
}

TEST_CASE("clip_grad_norm returns the total norm and scales only above max_norm", "[optim][clip]") {
  Parameter<double> a(1, 2), b(2, 1);
  a.grad << 3.0, 0.0;
  b.grad << 0.0, 4.0;  // total norm 5
  const moe::ParameterList<double> list{{"a", &a}, {"b", &b}};
  CHECK(moe::clip_grad_norm(list, 10.0) == Approx(5.0));
  CHECK(a.grad(0, 0) == 3.0);
  CHECK(b.grad(1, 0) == 4.0);
  CHECK(moe::clip_grad_norm(list, 1.0) == Approx(5.0));
  const double scale = 1.0 / (5.0 + 1e-6);
  CHECK(a.grad(0, 0) == Approx(3.0 * scale).epsilon(1e-15));
  CHECK(b.grad(1, 0) == Approx(4.0 * scale).epsilon(1e-15));
  CHECK(moe::clip_grad_norm(list, 1.0) == Approx(1.0).epsilon(1e-6));
  CHECK_THROWS_WITH(moe::clip_grad_norm(list, -1.0), Catch::Contains("max_norm must be non-negative, got -1"));
}

TEMPLATE_TEST_CASE("Optimizers minimise a quadratic", "[optim]", float, double) {
  using Scalar = TestType;
  MatrixX<Scalar> h(2, 3), target(2, 3);
  h << 1, 2, 0.5, 4, 0.25, 1;
  target << 0.5, -1, 2, 0.1, -0.7, 1.5;
  Parameter<Scalar> p(2, 3);
  auto loss = [&] { return 0.5 * (h.array() * (p.value - target).array().square()).template cast<double>().sum(); };
  const double initial = loss();
  auto minimise = [&](auto& optimizer, const auto& schedule, Index steps) {
    for (Index s = 0; s < steps; ++s) {
      moe::apply_schedule(schedule, optimizer, s);
      optimizer.zero_grad();
      p.grad = h.cwiseProduct(p.value - target);
      optimizer.step();
    }
  };
  SECTION("SGD with nesterov momentum") {
    moe::SGD<Scalar> sgd({{"p", &p}}, {.momentum = 0.9, .nesterov = true});
    minimise(sgd, moe::ConstantLR(0.1), 300);
  }
  SECTION("Adam with a cosine schedule") {
    moe::Adam<Scalar> adam({{"p", &p}});
    minimise(adam, moe::CosineWithWarmup(0.1, 10, 500), 500);
  }
  SECTION("AdamW without decay, one cycle") {
    moe::AdamW<Scalar> adamw({{"p", &p}}, {.weight_decay = 0.0});
    minimise(adamw, moe::OneCycleLR(0.1, 500), 500);
  }
  CHECK(initial > 1.0);
  CHECK(loss() < 1e-6);
}

TEST_CASE("Optimizers reject bad parameters and options", "[optim][errors]") {
  Parameter<float> p(2, 2), empty;
  CHECK_THROWS_WITH(moe::SGD<float>({{"fc.weight", &p}, {"fc.bias", &empty}}),
                    Catch::Contains("SGD: parameter 'fc.bias' is empty"));
  CHECK_THROWS_WITH(moe::AdamW<float>({{"a", &p}, {"b", &p}}),
                    Catch::Contains("AdamW: parameter 'b' appears more than once"));
  CHECK_THROWS_WITH(moe::SGD<float>({{"w", &p}}, {.nesterov = true}),
                    Catch::Contains("nesterov requires momentum > 0 and dampening 0, got momentum 0"));
  CHECK_THROWS_WITH(moe::SGD<float>({{"w", &p}}, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                    Catch::Contains("dampening 0.1"));
  CHECK_THROWS_WITH(moe::Adam<float>({{"w", &p}}, {.beta2 = 1.0}),
                    Catch::Contains("Adam: beta2 must lie in [0, 1), got 1"));
  CHECK_THROWS_WITH(moe::Adam<float>({{"w", &p}}, {.lr = -1.0}),
                    Catch::Contains("Adam: lr must be finite and non-negative, got -1"));
  // Infinite options pass a test of >= 0; one step later every weight would be NaN.
  const double inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(moe::Adam<float>({{"w", &p}}, {.lr = inf}), Catch::Contains("Adam: lr must be finite"));
  CHECK_THROWS_WITH(moe::AdamW<float>({{"w", &p}}, {.eps = inf}), Catch::Contains("AdamW: eps must be finite"));
  CHECK_THROWS_WITH(moe::SGD<float>({{"w", &p}}, {.momentum = inf}), Catch::Contains("SGD: momentum must be finite"));
  CHECK_THROWS_WITH(moe::SGD<float>({{"w", &p}}, {.dampening = -0.5}),
                    Catch::Contains("SGD: dampening must be finite and non-negative, got -0.5"));
  CHECK_THROWS_WITH(moe::SGD<float>({{"w", &p}}).set_lr(std::nan("")), Catch::Contains("SGD: lr must be finite"));

  moe::SGD<float> nesterov({{"w", &p}}, {.momentum = 0.9, .nesterov = true});
  CHECK_THROWS_WITH(nesterov.set_momentum(0.0), Catch::Contains("nesterov requires momentum > 0"));
  moe::Adam<float> adam({{"w", &p}});
  CHECK_THROWS_WITH(adam.set_momentum(1.5), Catch::Contains("Adam: beta1 must lie in [0, 1), got 1.5"));
  CHECK(adam.options().beta1 == 0.9);
  CHECK_THROWS_WITH(moe::SGD<float>(moe::ParameterList<float>{}), Catch::Contains("SGD: empty parameter list"));

  // A wrong shape is reported before anything changes.
  Parameter<float> q(1, 2);
  moe::Adam<float> two({{"q", &q}, {"w", &p}});
  q.grad.setOnes();
  p = Parameter<float>(3, 2);
  CHECK_THROWS_WITH(two.step(), Catch::Contains("Adam: parameter 'w' has shape 3x2, expected 2x2 as at construction"));
  CHECK(two.steps() == 0);
  CHECK(q.value.isZero());
  CHECK(two.state().exp_avg[0].isZero());
}

TEST_CASE("Optimizer state is allocated at construction", "[optim]") {
  Parameter<float> w(3, 2), b = Parameter<float>::vector(3);
  moe::SGD<float> sgd({{"w", &w}, {"b", &b}});
  REQUIRE(sgd.state().momentum_buffer.size() == 2);
  CHECK(sgd.state().momentum_buffer[0].rows() == 3);
  CHECK(sgd.state().momentum_buffer[1].cols() == 3);
  moe::AdamW<float> adamw({{"w", &w}, {"b", &b}});
  REQUIRE(adamw.state().exp_avg_sq.size() == 2);
  CHECK(adamw.state().exp_avg[1].cols() == 3);
  CHECK(adamw.steps() == 0);
  CHECK(adamw.parameters()[1].name == "b");
  w.grad.setOnes();
  adamw.zero_grad();
  CHECK(w.grad.isZero());
}

TEST_CASE("OneCycleLR follows PyTorch", "[optim][schedule]") {
  // /usr/bin/python3, torch 1.13: the lr and momentum each optimizer step uses,
  //   opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
  //   s = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=100)
  //   for step in range(100):
  //       print(step, opt.param_groups[0]['lr'], opt.param_groups[0]['momentum']); opt.step(); s.step()
  // By hand: phase 1 ends at step 0.3 * 100 - 1 = 29 with lr max_lr; step 64 is half-way through phase 2
  // (pct (64 - 29) / (99 - 29) = 0.5), so lr = (1e-2 + 4e-8) / 2 and momentum (0.85 + 0.95) / 2; the last
  // step has lr 1e-2 / 25 / 1e4 = 4e-8 and momentum 0.95; step 0 has 1e-2 / 25 = 4e-4 and 0.95.
  const moe::OneCycleLR schedule(1e-2, 100);
  const auto [step, lr, momentum] = GENERATE(table<Index, double, double>({
      {0, 0.0003999999999999993, 0.95},
      {10, 0.002951639484641007, 0.9234204220349895},
      {29, 0.01, 0.85},
      {30, 0.009994965352845242, 0.8500503466729342},
      {64, 0.00500002, 0.8999999999999999},
      {99, 4e-08, 0.95},
  }));
  INFO("step " << step);
  CHECK(schedule.lr(step) == Approx(lr).epsilon(1e-12).margin(1e-18));
  REQUIRE(schedule.momentum(step).has_value());
  CHECK(*schedule.momentum(step) == Approx(momentum).epsilon(1e-12));
}

TEST_CASE("OneCycleLR rejects steps past the end and bad options", "[optim][schedule][errors]") {
  const moe::OneCycleLR schedule(1e-2, 100);
  CHECK_THROWS_WITH(schedule.lr(100),
                    Catch::Contains("OneCycleLR: step 100 is past the end, expected < total_steps = 100"));
  CHECK_THROWS_WITH(schedule.momentum(-1), Catch::Contains("step must be non-negative, got -1"));
  CHECK_THROWS_WITH(moe::OneCycleLR(1e-2, 100, {.pct_start = 1.5}),
                    Catch::Contains("pct_start must lie in [0, 1], got 1.5"));
  CHECK_THROWS_WITH(moe::OneCycleLR(1e-2, 2), Catch::Contains("both phases need steps"));
  CHECK_FALSE(moe::OneCycleLR(1e-2, 100, {.cycle_momentum = false}).momentum(5).has_value());
}

TEST_CASE("CosineWithWarmup warms up linearly, then anneals to min_lr", "[optim][schedule]") {
  const moe::CosineWithWarmup schedule(0.1, 10, 110, 0.001);
  CHECK(schedule.lr(0) == Approx(0.01));
  CHECK(schedule.lr(4) == Approx(0.05));
  CHECK(schedule.lr(9) == Approx(0.1));
  CHECK(schedule.lr(10) == Approx(0.1));
  CHECK(schedule.lr(60) == Approx(0.001 + (0.1 - 0.001) / 2 * (1 + std::cos(std::numbers::pi * 50.0 / 99.0))));
  CHECK(schedule.lr(109) == Approx(0.001));
  CHECK_FALSE(schedule.momentum(5).has_value());
  CHECK_THROWS_WITH(schedule.lr(110), Catch::Contains("CosineWithWarmup: step 110 is past the end"));
  CHECK_THROWS_WITH(moe::CosineWithWarmup(0.1, 10, 11), Catch::Contains("expected total_steps >= warmup_steps + 2"));
  CHECK(moe::CosineWithWarmup(0.1, 0, 2).lr(0) == Approx(0.1));
}

TEST_CASE("apply_schedule sets lr and, when cycled, momentum", "[optim][schedule]") {
  Parameter<double> p(1, 1);
  moe::Adam<double> adam({{"p", &p}});
  moe::apply_schedule(moe::OneCycleLR(1e-2, 100), adam, 29);
  CHECK(adam.lr() == Approx(1e-2));
  CHECK(adam.options().beta1 == Approx(0.85));
  moe::SGD<double> sgd({{"p", &p}}, {.momentum = 0.9});
  moe::apply_schedule(moe::ConstantLR(0.5), sgd, 3);
  CHECK(sgd.lr() == 0.5);
  CHECK(sgd.options().momentum == 0.9);
}
