// Our SGD against torch::optim::SGD, step for step, over the option variants it supports.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/optim/optimizer.h"

namespace desync {
namespace {

struct SgdCase {
  std::string label;
  double momentum, dampening, weight_decay;
  bool nesterov;
};

void PrintTo(const SgdCase& c, std::ostream* os) { *os << c.label; }

const std::vector<std::vector<int64_t>> kShapes = {{5, 3}, {3}, {2, 2, 4}, {1}};

double max_abs_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  }
  return worst;
}

// Runs 10 steps of both optimizers on the same parameters and gradients (the gradient of a
// quadratic, so it depends on the parameters), with a learning rate that changes every step;
// returns the largest difference seen.
double run_against_torch(const SgdCase& c, torch::Dtype dtype) {
  torch::manual_seed(123);
  std::vector<torch::Tensor> ours, theirs, grads, targets;
  std::vector<ParamSlot> slots;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    torch::Tensor init = torch::randn(kShapes[i], dtype);
    targets.push_back(torch::randn(kShapes[i], dtype));
    ours.push_back(init.clone());
    theirs.push_back(init.clone().requires_grad_(true));
    grads.push_back(torch::zeros(kShapes[i], dtype));
    slots.push_back({"p" + std::to_string(i), ours.back(), grads.back(), c.weight_decay});
  }
  auto sgd = make_sgd(slots, c.momentum, c.dampening, c.nesterov);
  torch::optim::SGD reference(theirs, torch::optim::SGDOptions(0.1)
                                          .momentum(c.momentum)
                                          .dampening(c.dampening)
                                          .weight_decay(c.weight_decay)
                                          .nesterov(c.nesterov));
  double worst = 0.0;
  for (int step = 0; step < 10; ++step) {
    const double lr = 0.1 * (1.0 + 0.1 * step);
    static_cast<torch::optim::SGDOptions&>(reference.param_groups()[0].options()).lr(lr);
    for (size_t i = 0; i < ours.size(); ++i) {
      torch::Tensor g = 3.0 * (ours[i] - targets[i]) + torch::randn(kShapes[i], dtype) * 0.1;
      grads[i].copy_(g);
      theirs[i].mutable_grad() = g.clone();
    }
    sgd->step(lr);
    reference.step();
    worst = std::max(worst, max_abs_diff(ours, theirs));
  }
  // The parameters moved (a test that compares two no-ops would pass vacuously).
  torch::manual_seed(123);
  EXPECT_GT((ours[0] - torch::randn(kShapes[0], dtype)).abs().max().item<double>(), 1e-2);
  return worst;
}

class SgdMatchesTorchSgd : public ::testing::TestWithParam<SgdCase> {};

TEST_P(SgdMatchesTorchSgd, Float32) {
  EXPECT_LE(run_against_torch(GetParam(), torch::kFloat32), 1e-6);
}

TEST_P(SgdMatchesTorchSgd, Float64) {
  EXPECT_LE(run_against_torch(GetParam(), torch::kFloat64), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(Variants, SgdMatchesTorchSgd,
                         ::testing::Values(SgdCase{"Plain", 0.0, 0.0, 0.0, false},
                                           SgdCase{"WeightDecay", 0.0, 0.0, 0.05, false},
                                           SgdCase{"Momentum", 0.9, 0.0, 0.0, false},
                                           SgdCase{"MomentumWeightDecay", 0.9, 0.0, 0.01, false},
                                           SgdCase{"Dampening", 0.9, 0.3, 0.0, false},
                                           SgdCase{"DampeningWeightDecay", 0.5, 0.5, 0.02, false},
                                           SgdCase{"Nesterov", 0.9, 0.0, 0.0, true},
                                           SgdCase{"NesterovWeightDecay", 0.8, 0.0, 0.05, true}),
                         [](const ::testing::TestParamInfo<SgdCase>& info) {
                           return info.param.label;
                         });

TEST(SgdTest, StateIsCompleteBeforeTheFirstStep) {
  torch::Tensor p = torch::randn({4, 2}), g = torch::randn({4, 2});
  auto sgd = make_sgd({{"w", p, g, 0.0}}, 0.9, 0.0, false);
  const auto state = sgd->state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "w.momentum_buffer");
  EXPECT_TRUE(torch::equal(state[0].second, torch::zeros({4, 2})));
  EXPECT_EQ(state[1].first, "step");
  EXPECT_EQ(state[1].second.dim(), 0);
  EXPECT_EQ(state[1].second.scalar_type(), torch::kInt64);
  EXPECT_EQ(state[1].second.item<int64_t>(), 0);
  sgd->step(0.1);
  sgd->step(0.1);
  EXPECT_EQ(sgd->state()[1].second.item<int64_t>(), 2);
  EXPECT_EQ(sgd->state_numel(), 8 + 1);
}

TEST(SgdTest, WithoutMomentumOnlyTheStepIsState) {
  torch::Tensor p = torch::randn({4}), g = torch::ones({4});
  auto sgd = make_sgd({{"w", p, g, 0.0}}, 0.0, 0.0, false);
  ASSERT_EQ(sgd->state().size(), 1u);
  EXPECT_EQ(sgd->state()[0].first, "step");
  EXPECT_EQ(sgd->state_numel(), 1);
  const torch::Tensor before = p.clone();
  sgd->step(0.5);
  EXPECT_TRUE(torch::allclose(p, before - 0.5));
}

TEST(SgdTest, NesterovNeedsMomentumAndNoDampening) {
  torch::Tensor p = torch::randn({2}), g = torch::randn({2});
  EXPECT_THROW(make_sgd({{"w", p, g, 0.0}}, 0.0, 0.0, true), ConfigError);
  EXPECT_THROW(make_sgd({{"w", p, g, 0.0}}, 0.9, 0.1, true), ConfigError);
  EXPECT_NO_THROW(make_sgd({{"w", p, g, 0.0}}, 0.9, 0.0, true));
}

}  // namespace
}  // namespace desync
