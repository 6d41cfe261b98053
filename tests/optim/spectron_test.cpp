// Spectron (optim/spectron.h), spec §1 tests 1, 2, 3 and 5: the bound on the composite update in
// exact mode, Newton–Schulz's singular values, the warm-started power iteration, and a factorised
// MLP whose logged ‖ΔW‖₂ stays under 1.2η while its loss falls. Norms are checked against dense
// matrices and SVDs formed here, not against the optimizer's own figures.
#include "desync/optim/spectron.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/core/gauges.h"
#include "desync/models/low_rank.h"
#include "desync/optim/optimizer.h"

namespace desync {
namespace {

double sigma_max(const torch::Tensor& m) { return torch::linalg_svdvals(m)[0].item<double>(); }

struct Factors {
  torch::Tensor a, b, ga, gb;
};

Factors draw(int64_t m, int64_t n, int64_t r, double scale) {
  return {scale * torch::randn({m, r}, torch::kFloat64),
          scale * torch::randn({n, r}, torch::kFloat64), torch::randn({m, r}, torch::kFloat64),
          torch::randn({n, r}, torch::kFloat64)};
}

std::vector<ParamSlot> pair_slots(Factors& f) {
  return {{"layer.A", f.a, f.ga, 0.0}, {"layer.B", f.b, f.gb, 0.0}};
}

TEST(Spectron, ExactModeBoundsTheCompositeUpdateByTheLearningRate) {
  torch::manual_seed(11);
  SpectronOptions options;
  options.exact = true;
  options.beta = 0.0;  // M = G: every draw is a first step
  double tightest = 0.0;
  for (int i = 0; i < 100; ++i) {
    const int64_t m = 5 + i % 7, n = 4 + i % 5, r = 1 + i % 4;
    Factors f = draw(m, n, r, 0.3 + 0.05 * (i % 9));
    const torch::Tensor w_before = torch::matmul(f.a, f.b.t());
    const double sa = sigma_max(f.a), sb = sigma_max(f.b);
    const torch::Tensor a_before = f.a.clone();
    const double eta = 0.01 + 0.05 * (i % 13);
    auto opt = make_spectron(pair_slots(f), options);
    opt->step(eta);
    const double dw = sigma_max(torch::matmul(f.a, f.b.t()) - w_before);
    EXPECT_LE(dw, eta * (1 + 1e-6)) << "draw " << i;
    // The factor step is exactly rho = eta / (sigma_A + sigma_B + 1) in spectral norm.
    EXPECT_NEAR(sigma_max(f.a - a_before), eta / (sa + sb + 1.0), 1e-9) << "draw " << i;
    tightest = std::max(tightest, dw / eta);
  }
  EXPECT_GT(tightest, 0.5) << "the bound is not vacuous";
}

TEST(Spectron, NewtonSchulzSingularValuesNearOneForWellConditionedInputs) {
  torch::manual_seed(2);
  for (auto [m, r] : std::vector<std::pair<int64_t, int64_t>>{{64, 8}, {128, 32}, {40, 20}}) {
    for (bool transpose : {false, true}) {
      torch::Tensor x = torch::randn({m, r}, torch::kFloat64);
      if (transpose) x = x.t().contiguous();
      const torch::Tensor s = torch::linalg_svdvals(newton_schulz5(x, 5));
      EXPECT_GE(s.min().item<double>(), 0.6) << m << "x" << r;
      EXPECT_LE(s.max().item<double>(), 1.25) << m << "x" << r;
      const torch::Tensor p = torch::linalg_svdvals(polar_factor(x));
      EXPECT_LT((p - 1).abs().max().item<double>(), 1e-5);
    }
  }
  // Singular values 1 and 1e-4: five steps cannot lift the small one near 1.
  torch::Tensor q = std::get<0>(torch::linalg_qr(torch::randn({32, 2}, torch::kFloat64)));
  torch::Tensor ill = torch::matmul(q, torch::diag(torch::tensor({1.0, 1e-4}, torch::kFloat64)));
  EXPECT_LT(torch::linalg_svdvals(newton_schulz5(ill, 5)).min().item<double>(), 0.6);
}

TEST(Spectron, WarmStartedPowerIterationConvergesToTheLargestSingularValue) {
  torch::manual_seed(4);
  // Singular values 3, 2.5, ... 0.5: a gap of 0.83 between the first two.
  const torch::Tensor u0 = std::get<0>(torch::linalg_qr(torch::randn({50, 12}, torch::kFloat64)));
  const torch::Tensor v0 = std::get<0>(torch::linalg_qr(torch::randn({12, 12}, torch::kFloat64)));
  const torch::Tensor spectrum = torch::cat(
      {torch::tensor({3.0}, torch::kFloat64), torch::linspace(2.5, 0.5, 11, torch::kFloat64)});
  const torch::Tensor w = torch::matmul(u0 * spectrum, v0.t());
  torch::Tensor u = torch::randn({50}, torch::kFloat64);
  u /= u.norm();
  double estimate = 0.0;
  for (int i = 0; i < 20; ++i) estimate = power_iteration(w, u, 1);
  EXPECT_NEAR(estimate / sigma_max(w), 1.0, 1e-3);
  EXPECT_NEAR(u.norm().item<double>(), 1.0, 1e-12);
}

TEST(Spectron, LowRankUpdateNormEqualsTheDenseDifferencesNorm) {
  torch::manual_seed(6);
  Factors f = draw(30, 20, 4, 1.0);
  const torch::Tensor a2 = f.a + 0.1 * torch::randn_like(f.a);
  const torch::Tensor b2 = f.b + 0.1 * torch::randn_like(f.b);
  const double dense = sigma_max(torch::matmul(a2, b2.t()) - torch::matmul(f.a, f.b.t()));
  EXPECT_NEAR(low_rank_update_norm(a2, b2, f.a, f.b), dense, 1e-10 * dense);
}

TEST(Spectron, MomentumIsAnExponentialAverageOfTheFactorGradients) {
  torch::manual_seed(8);
  Factors f = draw(9, 7, 3, 0.5);
  SpectronOptions options;
  options.exact = true;
  options.beta = 0.9;
  auto opt = make_spectron(pair_slots(f), options);
  const torch::Tensor g1 = f.ga.clone();
  opt->step(0.01);
  f.ga.copy_(torch::randn_like(f.ga));
  opt->step(0.01);
  std::map<std::string, torch::Tensor> state;
  for (auto& [name, t] : opt->state()) state[name] = t;
  const torch::Tensor expected = 0.9 * (0.1 * g1) + 0.1 * f.ga;
  EXPECT_TRUE(torch::allclose(state.at("layer.A.momentum"), expected, 1e-12, 1e-14));
}

TEST(Spectron, DenseSlotsAreUpdatedByAdamW) {
  torch::manual_seed(9);
  Factors f = draw(6, 5, 2, 0.5);
  torch::Tensor bias = torch::randn({6}, torch::kFloat64),
                gbias = torch::randn({6}, torch::kFloat64);
  torch::Tensor ref = bias.clone();
  std::vector<ParamSlot> slots = pair_slots(f);
  slots.push_back({"layer.bias", bias, gbias, 0.1});
  auto opt = make_spectron(slots, SpectronOptions{});
  auto adamw = make_adamw({{"ref", ref, gbias, 0.1}}, 0.9, 0.999, 1e-8);
  for (int i = 0; i < 3; ++i) {
    opt->step(0.05);
    adamw->step(0.05);
  }
  EXPECT_TRUE(torch::equal(bias, ref));
}

TEST(Spectron, RefusesAFactorWithoutItsPartnerAShardOfAFactorAndADenseModel) {
  torch::Tensor a = torch::randn({4, 2}), g = torch::zeros({4, 2});
  EXPECT_THROW(make_spectron({{"x.A", a, g, 0.0}}, {}), ConfigError);
  torch::Tensor flat = torch::randn({6}), gflat = torch::zeros({6});
  EXPECT_THROW(make_spectron({{"x.A[0:6]", flat, gflat, 0.0}}, {}), ConfigError);
  // A stage without factors is AdamW's alone; a model without any is refused by the config.
  torch::Tensor w = torch::randn({4, 4}), gw = torch::zeros({4, 4});
  EXPECT_NO_THROW(make_spectron({{"x.weight", w, gw, 0.0}}, {}));
  Config cfg;
  cfg.optimizer.name = "spectron";
  EXPECT_THROW(make_optimizer(cfg, {{"x.weight", w, gw, 0.0}}), ConfigError);
  cfg.model.low_rank = 0.5;
  EXPECT_NO_THROW(make_optimizer(cfg, {{"x.weight", w, gw, 0.0}}));
}

// Spec §1 test 5: a two-layer factorised MLP on a synthetic regression, NS5 and one power step.
TEST(Spectron, FactorisedMlpLearnsAndItsLoggedUpdateNormStaysUnderTheBound) {
  torch::manual_seed(12);
  models::LinearLayer l1(16, 64, true, 8), l2(64, 4, true, 2);
  const torch::Tensor x = torch::randn({256, 16});
  const torch::Tensor y =
      torch::matmul(torch::tanh(torch::matmul(x, torch::randn({16, 4}))), torch::randn({4, 4}));
  std::vector<ParamSlot> slots;
  for (auto* layer : {l1.ptr().get(), l2.ptr().get()}) {
    const std::string name = layer == l1.ptr().get() ? "l1" : "l2";
    for (auto& p : layer->named_parameters()) {
      p.value().mutable_grad() = torch::zeros_like(p.value());
      slots.push_back({name + "." + p.key(), p.value(), p.value().grad(), 0.0});
    }
  }
  auto opt = make_spectron(slots, SpectronOptions{});
  const double eta = 0.05;
  auto loss_now = [&] { return (l2(torch::relu(l1(x))) - y).pow(2).mean(); };
  const double first = loss_now().item<double>();
  double worst = 0.0;
  for (int step = 0; step < 200; ++step) {
    for (auto& s : slots) s.grad.zero_();
    torch::Tensor loss = loss_now();
    loss.backward();
    opt->step(eta);
    for (const auto& [name, value] : Gauges::instance().take())
      if (name.size() > 3 && name.substr(name.size() - 3) == ".dW") worst = std::max(worst, value);
  }
  EXPECT_LT(loss_now().item<double>(), 0.5 * first);
  EXPECT_GT(worst, 0.3) << "the gauges were set";
  EXPECT_LE(worst, 1.2);
}

}  // namespace
}  // namespace desync
