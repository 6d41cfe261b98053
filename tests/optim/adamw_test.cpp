// Our AdamW against torch::optim::AdamW, step for step.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "desync/core/error.h"
#include "desync/optim/optimizer.h"

namespace desync {
namespace {

struct AdamWCase {
  std::string label;
  double beta1, beta2, eps, weight_decay;
};

void PrintTo(const AdamWCase& c, std::ostream* os) { *os << c.label; }

const std::vector<std::vector<int64_t>> kShapes = {{6, 3}, {3}, {2, 3, 2}};

double run_against_torch(const AdamWCase& c, torch::Dtype dtype) {
  torch::manual_seed(321);
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
  auto adamw = make_adamw(slots, c.beta1, c.beta2, c.eps);
  torch::optim::AdamW reference(theirs, torch::optim::AdamWOptions(1e-2)
                                            .betas(std::make_tuple(c.beta1, c.beta2))
                                            .eps(c.eps)
                                            .weight_decay(c.weight_decay));
  double worst = 0.0;
  for (int step = 0; step < 10; ++step) {
    const double lr = 1e-2 * (1.0 + 0.2 * step);
    static_cast<torch::optim::AdamWOptions&>(reference.param_groups()[0].options()).lr(lr);
    for (size_t i = 0; i < ours.size(); ++i) {
      torch::Tensor g = 2.0 * (ours[i] - targets[i]) + torch::randn(kShapes[i], dtype) * 0.1;
      grads[i].copy_(g);
      theirs[i].mutable_grad() = g.clone();
    }
    adamw->step(lr);
    reference.step();
    for (size_t i = 0; i < ours.size(); ++i) {
      worst = std::max(worst, (ours[i] - theirs[i]).abs().max().item<double>());
    }
  }
  torch::manual_seed(321);
  EXPECT_GT((ours[0] - torch::randn(kShapes[0], dtype)).abs().max().item<double>(), 1e-2);
  return worst;
}

class AdamWMatchesTorchAdamW : public ::testing::TestWithParam<AdamWCase> {};

TEST_P(AdamWMatchesTorchAdamW, Float32) {
  EXPECT_LE(run_against_torch(GetParam(), torch::kFloat32), 1e-6);
}

TEST_P(AdamWMatchesTorchAdamW, Float64) {
  EXPECT_LE(run_against_torch(GetParam(), torch::kFloat64), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(Variants, AdamWMatchesTorchAdamW,
                         ::testing::Values(AdamWCase{"NoDecay", 0.9, 0.999, 1e-8, 0.0},
                                           AdamWCase{"WeightDecay", 0.9, 0.999, 1e-8, 0.01},
                                           AdamWCase{"StrongDecay", 0.9, 0.95, 1e-8, 0.1},
                                           AdamWCase{"OtherBetasAndEps", 0.8, 0.99, 1e-3, 0.05}),
                         [](const ::testing::TestParamInfo<AdamWCase>& info) {
                           return info.param.label;
                         });

TEST(AdamWTest, StateIsCompleteBeforeTheFirstStep) {
  torch::Tensor a = torch::randn({3, 2}), ga = torch::randn({3, 2});
  torch::Tensor b = torch::randn({5}), gb = torch::randn({5});
  auto adamw = make_adamw({{"a", a, ga, 0.0}, {"b", b, gb, 0.0}}, 0.9, 0.999, 1e-8);
  std::vector<std::string> names;
  for (const auto& [name, t] : adamw->state()) {
    names.push_back(name);
    if (name != "step") {
      EXPECT_TRUE(torch::equal(t, torch::zeros_like(t)));
    }
  }
  EXPECT_EQ(names, (std::vector<std::string>{"a.exp_avg", "a.exp_avg_sq", "b.exp_avg",
                                             "b.exp_avg_sq", "step"}));
  EXPECT_EQ(adamw->state_numel(), 2 * (6 + 5) + 1);
  adamw->step(1e-3);
  EXPECT_EQ(adamw->state().back().second.item<int64_t>(), 1);
}

TEST(AdamWTest, RejectsBetasOutsideTheUnitInterval) {
  torch::Tensor p = torch::randn({2}), g = torch::randn({2});
  EXPECT_THROW(make_adamw({{"w", p, g, 0.0}}, 1.0, 0.999, 1e-8), ConfigError);
  EXPECT_THROW(make_adamw({{"w", p, g, 0.0}}, 0.9, -0.1, 1e-8), ConfigError);
}

}  // namespace
}  // namespace desync
