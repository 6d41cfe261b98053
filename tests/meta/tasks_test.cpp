// The PES tasks of `desync meta-train` (meta/tasks.h): the quadratic's unroll against its closed
// form, LogUniform horizons, and for both kinds: antithetic members that agree for the same
// theta and differ otherwise, and checkpoints that continue bitwise. The MLP's loss is checked
// against a forward pass written out here, and its width against meta.widths.
#include "desync/meta/tasks.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <set>

#include "desync/core/archive.h"
#include "desync/core/error.h"
#include "desync/optim/mulo.h"

namespace desync {
namespace {

// Serialises and reads back, so that a round trip also covers the on-disk form.
Archive reread(const Archive& a) { return Archive::deserialize(a.serialize(), "test"); }

torch::Tensor scalar_theta(double v) { return torch::full({1}, v, torch::kFloat64); }

// mean over j = first..first+n-1 of f(x_j), x_j = x0 r^j: the quadratic's loss in closed form.
double quadratic_mean_loss(double theta, int64_t first, int64_t n) {
  const double r = 1.0 - std::exp(theta) * kQuadraticA;
  double sum = 0.0;
  for (int64_t j = first; j < first + n; ++j)
    sum += 0.5 * kQuadraticA * std::pow(kQuadraticX0 * std::pow(r, static_cast<double>(j)), 2);
  return sum / static_cast<double>(n);
}

TEST(MetaTasksQuadratic, UnrollMatchesClosedForm) {
  for (double theta : {-1.0, 0.0, 0.4, kQuadraticOptimum - 0.2, 1.2}) {
    QuadraticTask task(100, 100);
    EXPECT_EQ(task.reset(5), 100);
    const double first = task.unroll(+1, scalar_theta(theta), 7);
    EXPECT_NEAR(first, quadratic_mean_loss(theta, 1, 7), 1e-13 + 1e-12 * first) << theta;
    const double second = task.unroll(+1, scalar_theta(theta), 5);  // continues from x_7
    EXPECT_NEAR(second, quadratic_mean_loss(theta, 8, 5), 1e-13 + 1e-12 * second) << theta;
    const double r = 1.0 - std::exp(theta) * kQuadraticA;
    EXPECT_NEAR(task.x(+1), kQuadraticX0 * std::pow(r, 12.0), 1e-12) << theta;
    EXPECT_EQ(task.x(-1), kQuadraticX0);  // the other member has not moved
  }
  // The total loss is smallest at theta* = -log(a), where one step reaches the minimum.
  QuadraticTask task(100, 100);
  task.reset(0);
  const double at_optimum = task.unroll(+1, scalar_theta(kQuadraticOptimum), 100);
  EXPECT_LT(at_optimum, 1e-30);
  for (double d : {-0.05, 0.05}) {
    task.reset(0);
    EXPECT_GT(task.unroll(+1, scalar_theta(kQuadraticOptimum + d), 100), 1e-6);
  }
}

TEST(MetaTasksQuadratic, MembersAgreeForTheSameThetaAndDifferOtherwise) {
  QuadraticTask task(100, 100);
  task.reset(1);
  EXPECT_EQ(task.unroll(+1, scalar_theta(0.3), 10), task.unroll(-1, scalar_theta(0.3), 10));
  EXPECT_EQ(task.x(+1), task.x(-1));
  task.reset(2);
  EXPECT_NE(task.unroll(+1, scalar_theta(0.31), 10), task.unroll(-1, scalar_theta(0.29), 10));
  EXPECT_NE(task.x(+1), task.x(-1));
  EXPECT_THROW(task.unroll(0, scalar_theta(0.3), 1), Error);
  EXPECT_THROW(task.unroll(+1, torch::zeros({2}, torch::kFloat64), 1), Error);
}

TEST(MetaTasksQuadratic, SaveLoadContinuesBitwise) {
  QuadraticTask a(100, 100), b(100, 100);
  a.reset(3);
  a.unroll(+1, scalar_theta(0.2), 4);
  a.unroll(-1, scalar_theta(-0.1), 6);
  Archive archive;
  a.save(archive, "task3.");
  b.load(reread(archive), "task3.");
  for (int sign : {+1, -1}) {
    EXPECT_EQ(a.unroll(sign, scalar_theta(0.5), 9), b.unroll(sign, scalar_theta(0.5), 9));
    EXPECT_EQ(a.x(sign), b.x(sign));
  }
}

TEST(MetaTasksHorizon, FixedOrLogUniformFromTheSeed) {
  EXPECT_EQ(draw_horizon(17, 100, 100), 100);
  EXPECT_EQ(draw_horizon(17, 10, 1000), draw_horizon(17, 10, 1000));
  // LogUniform[10, 1000]: log10 of the draw ~ Uniform[1, 3].
  constexpr int kDraws = 4000;
  int below_100 = 0, below_31 = 0;
  std::set<int64_t> seen;
  for (uint64_t seed = 0; seed < kDraws; ++seed) {
    const int64_t h = draw_horizon(seed, 10, 1000);
    ASSERT_GE(h, 10);
    ASSERT_LE(h, 1000);
    below_100 += h <= 100;
    below_31 += h <= 31;
    seen.insert(h);
  }
  const double sd = std::sqrt(0.25 / kDraws);  // of a proportion near 1/2
  // h = round(e^U) <= k exactly when e^U < k + 0.5.
  EXPECT_NEAR(below_100 / static_cast<double>(kDraws), (std::log10(100.5) - 1.0) / 2.0, 4 * sd);
  EXPECT_NEAR(below_31 / static_cast<double>(kDraws), (std::log10(31.5) - 1.0) / 2.0, 4 * sd);
  EXPECT_GT(seen.size(), 300u);
  EXPECT_THROW(draw_horizon(0, 0, 10), ConfigError);
}

// ---------------------------------------------------------------------------------------------

constexpr int64_t kFeatures = 6, kClasses = 4;

Config mlp_config() {
  Config cfg;
  cfg.model.name = "mlp";
  cfg.model.hidden = {8, 8};
  cfg.model.parametrization = "sp";
  cfg.data.batch_size = 16;
  cfg.meta.task = "mlp";
  cfg.meta.widths = {4, 12};
  cfg.meta.horizon_min = 20;
  cfg.meta.horizon_max = 40;
  cfg.optimizer.lopt_alpha1 = 1e-2;
  return cfg;
}

// Seeded Gaussian features with labels from a fixed rule: a learnable split of `n` examples.
Dataset feature_data(int64_t n) {
  torch::manual_seed(11);
  Dataset d;
  d.name = "features/train";
  d.kind = DataKind::kFeatures;
  d.inputs = torch::randn({n, kFeatures});
  d.targets = d.inputs.narrow(1, 0, kClasses).argmax(1);
  d.num_classes = kClasses;
  return d;
}

torch::Tensor theta_of(uint64_t seed) { return MuloParams::init(seed).flatten(); }

void expect_same_params(const MlpTask& a, int sign_a, const MlpTask& b, int sign_b) {
  const auto pa = a.named_params(sign_a), pb = b.named_params(sign_b);
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].first, pb[i].first);
    EXPECT_TRUE(torch::equal(pa[i].second, pb[i].second)) << pa[i].first;
  }
}

// The members' whole state (parameters and optimizer accumulators) as saved.
std::vector<std::pair<std::string, torch::Tensor>> member_state(const MlpTask& task,
                                                                const std::string& member) {
  Archive a;
  task.save(a, "");
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const std::string& name : a.names())
    if (name.rfind(member, 0) == 0 && name != member + "step")
      out.emplace_back(name.substr(member.size()), a.tensor(name));
  return out;
}

TEST(MetaTasksMlp, MembersAgreeForTheSameTheta) {
  const Config cfg = mlp_config();
  const Dataset data = feature_data(256);
  MlpTask task(cfg, data);
  const int64_t horizon = task.reset(7);
  EXPECT_GE(horizon, 20);
  EXPECT_LE(horizon, 40);
  const auto initial = task.named_params(+1);
  std::vector<torch::Tensor> before;
  for (const auto& [name, t] : initial) before.push_back(t.clone());
  expect_same_params(task, +1, task, -1);  // the same initial weights

  const torch::Tensor theta = theta_of(1).to(torch::kFloat64);
  torch::NoGradGuard no_grad;  // as PesEstimator::gradient() calls it
  const double plus = task.unroll(+1, theta, 4);
  const double minus = task.unroll(-1, theta, 4);
  EXPECT_EQ(plus, minus);
  EXPECT_TRUE(std::isfinite(plus));
  expect_same_params(task, +1, task, -1);
  const auto sp = member_state(task, "plus."), sm = member_state(task, "minus.");
  ASSERT_EQ(sp.size(), sm.size());
  ASSERT_GT(sp.size(), initial.size());  // optimizer state is there too
  for (size_t i = 0; i < sp.size(); ++i) {
    EXPECT_EQ(sp[i].first, sm[i].first);
    EXPECT_TRUE(torch::equal(sp[i].second, sm[i].second)) << sp[i].first;
  }
  // ... and they did train.
  bool moved = false;
  const auto after = task.named_params(+1);
  for (size_t i = 0; i < after.size(); ++i) moved |= !torch::equal(after[i].second, before[i]);
  EXPECT_TRUE(moved);
}

TEST(MetaTasksMlp, DifferentThetasGiveDifferentLossesAndStates) {
  const Config cfg = mlp_config();
  const Dataset data = feature_data(256);
  MlpTask task(cfg, data);
  task.reset(8);
  const torch::Tensor theta = theta_of(2);
  const torch::Tensor eps = 0.05 * torch::randn(theta.sizes());
  const double plus = task.unroll(+1, theta + eps, 4);
  const double minus = task.unroll(-1, theta - eps, 4);
  EXPECT_NE(plus, minus);
  const auto pp = task.named_params(+1), pm = task.named_params(-1);
  bool differ = false;
  for (size_t i = 0; i < pp.size(); ++i) differ |= !torch::equal(pp[i].second, pm[i].second);
  EXPECT_TRUE(differ);
}

TEST(MetaTasksMlp, LossIsTheCrossEntropyOfTheBatch) {
  // One training example: every batch is B copies of it. With alpha1 = 0 mulo does not move the
  // weights, so every inner step's loss is the cross-entropy of the initial MLP on it, computed
  // here from the parameters by hand: fc1 (Linear + ReLU), fc2 (Linear + ReLU), head (Linear).
  Config cfg = mlp_config();
  cfg.optimizer.lopt_alpha1 = 0.0;
  const Dataset data = feature_data(1);
  MlpTask task(cfg, data);
  task.reset(9);
  const double loss = task.unroll(+1, theta_of(3), 3);
  std::map<std::string, torch::Tensor> p;
  for (const auto& [name, t] : task.named_params(+1)) p[name] = t.detach();
  ASSERT_EQ(p.size(), 6u);
  torch::Tensor h = data.inputs;
  for (const char* layer : {"fc1.1", "fc2.0"})
    h = torch::relu(h.matmul(p.at(std::string(layer) + ".weight").t()) +
                    p.at(std::string(layer) + ".bias"));
  const torch::Tensor logits = h.matmul(p.at("head.0.weight").t()) + p.at("head.0.bias");
  const double expected =
      (logits.logsumexp(1) - logits.gather(1, data.targets.view({-1, 1})).squeeze(1))
          .item<double>();
  EXPECT_NEAR(loss, expected, 1e-6);
}

TEST(MetaTasksMlp, WidthIsDrawnFromMetaWidths) {
  const Config cfg = mlp_config();
  const Dataset data = feature_data(64);
  MlpTask task(cfg, data);
  EXPECT_EQ(task.width(), 0);
  std::set<int64_t> widths;
  for (uint64_t seed = 0; seed < 24; ++seed) {
    task.reset(seed);
    const int64_t w = task.width();
    widths.insert(w);
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& [name, t] : task.named_params(-1)) shapes[name] = t.sizes().vec();
    EXPECT_EQ(shapes.at("fc1.1.weight"), (std::vector<int64_t>{w, kFeatures}));
    EXPECT_EQ(shapes.at("fc2.0.weight"), (std::vector<int64_t>{w, w}));
    EXPECT_EQ(shapes.at("head.0.weight"), (std::vector<int64_t>{kClasses, w}));
  }
  EXPECT_EQ(widths, (std::set<int64_t>{4, 12}));
}

TEST(MetaTasksMlp, ResetLeavesTheGlobalRngAlone) {
  const Config cfg = mlp_config();
  const Dataset data = feature_data(64);
  MlpTask task(cfg, data);
  torch::manual_seed(123);
  const torch::Tensor expected = torch::rand({4});
  torch::manual_seed(123);
  task.reset(5);
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected));
}

TEST(MetaTasksMlp, SaveLoadContinuesBitwise) {
  const Config cfg = mlp_config();
  const Dataset data = feature_data(256);
  MlpTask a(cfg, data), b(cfg, data);
  a.reset(21);
  a.unroll(+1, theta_of(4), 3);
  a.unroll(-1, theta_of(5), 2);
  Archive archive;
  a.save(archive, "task.");
  b.load(reread(archive), "task.");
  EXPECT_EQ(b.width(), a.width());
  for (int sign : {+1, -1}) {
    expect_same_params(a, sign, b, sign);
    EXPECT_EQ(a.unroll(sign, theta_of(6), 3), b.unroll(sign, theta_of(6), 3));
    expect_same_params(a, sign, b, sign);
  }
}

TEST(MetaTasksMlp, DivergingMemberReportsTheCap) {
  Config cfg = mlp_config();
  cfg.optimizer.lopt_alpha1 = 1e30;  // the first update throws the weights to float's limits
  const Dataset data = feature_data(256);
  MlpTask task(cfg, data);
  task.reset(1);
  const double first = task.unroll(+1, theta_of(7), 1);  // the initial weights' loss
  EXPECT_LT(first, 10.0);
  EXPECT_EQ(task.unroll(+1, theta_of(7), 3), kMetaLossCap);
}

}  // namespace
}  // namespace desync
