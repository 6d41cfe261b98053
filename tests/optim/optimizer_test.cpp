// The optimizer factory, state save/restore, param_slots, clip_grad_norm, and optimizers over
// flat buffers.
#include "desync/optim/optimizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/models/staged_model.h"

namespace desync {
namespace {

OptimizerConfig optimizer_config(const std::string& name) {
  OptimizerConfig cfg;
  cfg.name = name;
  cfg.momentum = 0.9;
  cfg.weight_decay = 0.01;
  return cfg;
}

// A few parameters with gradient tensors, plus a deterministic gradient for step k.
struct Problem {
  std::vector<torch::Tensor> params, grads;
  std::vector<ParamSlot> slots;
  explicit Problem(double weight_decay) {
    torch::manual_seed(5);
    for (const auto& shape : std::vector<std::vector<int64_t>>{{4, 3}, {3}, {2, 5}}) {
      params.push_back(torch::randn(shape));
      grads.push_back(torch::zeros(shape));
      slots.push_back(
          {"p" + std::to_string(slots.size()), params.back(), grads.back(), weight_decay});
    }
  }
  void set_grads(int k) {
    for (size_t i = 0; i < grads.size(); ++i) {
      grads[i].copy_(torch::sin(params[i] * (k + 1)) + 0.1 * (k + 1));
    }
  }
  std::vector<torch::Tensor> snapshot() const {
    std::vector<torch::Tensor> out;
    for (const auto& p : params) out.push_back(p.clone());
    return out;
  }
  void restore(const std::vector<torch::Tensor>& saved) {
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(saved[i]);
  }
};

std::vector<torch::Tensor> copy_state(Optimizer& opt) {
  std::vector<torch::Tensor> out;
  for (const auto& entry : opt.state()) out.push_back(entry.second.clone());
  return out;
}

void load_state(Optimizer& opt, const std::vector<torch::Tensor>& saved) {
  auto live = opt.state();
  ASSERT_EQ(live.size(), saved.size());
  for (size_t i = 0; i < live.size(); ++i) live[i].second.copy_(saved[i]);
}

class OptimizerStateTest : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

// Copy the state out, step, copy it back (with the parameters), step again: bitwise the same.
// Covers restoring before the very first step (the SGD momentum initialisation) too.
TEST_P(OptimizerStateTest, RestoredStateRepeatsTheStepBitwise) {
  const auto& [name, warm_steps] = GetParam();
  Problem problem(0.01);
  auto opt = make_optimizer(optimizer_config(name), problem.slots);
  for (int k = 0; k < warm_steps; ++k) {
    problem.set_grads(k);
    opt->step(0.05);
  }
  const auto saved_state = copy_state(*opt);
  const auto saved_params = problem.snapshot();
  problem.set_grads(100);
  opt->step(0.05);
  const auto first = problem.snapshot();
  const auto state_after_first = copy_state(*opt);
  for (size_t i = 0; i < first.size(); ++i) EXPECT_FALSE(torch::equal(first[i], saved_params[i]));

  load_state(*opt, saved_state);
  problem.restore(saved_params);
  problem.set_grads(100);
  opt->step(0.05);
  for (size_t i = 0; i < first.size(); ++i) EXPECT_TRUE(torch::equal(problem.params[i], first[i]));
  const auto state_after_second = copy_state(*opt);
  for (size_t i = 0; i < state_after_first.size(); ++i) {
    EXPECT_TRUE(torch::equal(state_after_first[i], state_after_second[i]));
  }
}

INSTANTIATE_TEST_SUITE_P(Optimizers, OptimizerStateTest,
                         ::testing::Combine(::testing::Values("sgd", "adamw"),
                                            ::testing::Values(0, 3)));

TEST(OptimizerTest, StateCarriesOverToAFreshOptimizer) {
  for (const std::string name : {"sgd", "adamw"}) {
    SCOPED_TRACE(name);
    Problem a(0.01), b(0.01);
    auto opt_a = make_optimizer(optimizer_config(name), a.slots);
    for (int k = 0; k < 4; ++k) {
      a.set_grads(k);
      opt_a->step(0.05);
    }
    b.restore(a.snapshot());
    auto opt_b = make_optimizer(optimizer_config(name), b.slots);
    load_state(*opt_b, copy_state(*opt_a));
    for (int k = 4; k < 7; ++k) {
      a.set_grads(k);
      b.set_grads(k);
      opt_a->step(0.05);
      opt_b->step(0.05);
    }
    for (size_t i = 0; i < a.params.size(); ++i)
      EXPECT_TRUE(torch::equal(a.params[i], b.params[i]));
  }
}

TEST(OptimizerTest, MakeOptimizerRejectsUnknownNamesWithTheChoices) {
  Problem problem(0.0);
  try {
    make_optimizer(optimizer_config("lion"), problem.slots);
    FAIL() << "no exception";
  } catch (const ConfigError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("lion"), std::string::npos) << message;
    EXPECT_NE(message.find("sgd, adamw"), std::string::npos) << message;
  }
}

TEST(OptimizerTest, MakeOptimizerPassesTheOptions) {
  Problem problem(0.0);
  OptimizerConfig cfg = optimizer_config("sgd");
  cfg.momentum = 0.0;
  EXPECT_EQ(make_optimizer(cfg, problem.slots)->state().size(), 1u);
  cfg.momentum = 0.9;
  EXPECT_EQ(make_optimizer(cfg, problem.slots)->state().size(), 4u);
  EXPECT_EQ(make_optimizer(optimizer_config("adamw"), problem.slots)->state().size(), 7u);
  cfg.nesterov = true;
  cfg.dampening = 0.5;
  EXPECT_THROW(make_optimizer(cfg, problem.slots), ConfigError);
}

// The same optimizer over one slot for the whole flat buffer or one slot per parameter view
// gives the same parameters: the update is elementwise.
TEST(OptimizerTest, FlatBufferSlotMatchesPerParameterSlots) {
  for (const std::string name : {"sgd", "adamw"}) {
    SCOPED_TRACE(name);
    ModelConfig model_cfg;
    model_cfg.name = "mlp";
    model_cfg.hidden = {16};
    torch::manual_seed(9);
    StagedModel per_param = make_model(model_cfg, {{8}, 4});
    torch::manual_seed(9);
    StagedModel whole = make_model(model_cfg, {{8}, 4});
    FlatParameters flat_a(per_param->parameters(), 32);
    FlatParameters flat_b(whole->parameters(), 32);
    OptimizerConfig cfg = optimizer_config(name);
    auto opt_a = make_optimizer(cfg, param_slots(per_param->named_params(), cfg));
    auto opt_b = make_optimizer(
        cfg, {{"flat", flat_b.params_flat(), flat_b.grads_flat(), cfg.weight_decay}});
    const torch::Tensor initial = flat_a.params_flat().clone();
    torch::Tensor x = torch::randn({6, 8});
    torch::Tensor y = torch::randint(0, 4, {6});
    for (int k = 0; k < 3; ++k) {
      flat_a.grads_flat().zero_();
      flat_b.grads_flat().zero_();
      torch::nn::functional::cross_entropy(per_param->forward(x), y).backward();
      torch::nn::functional::cross_entropy(whole->forward(x), y).backward();
      opt_a->step(0.1);
      opt_b->step(0.1);
    }
    EXPECT_TRUE(torch::allclose(flat_a.params_flat(), flat_b.params_flat(), 0.0, 1e-7));
    EXPECT_GT((flat_a.params_flat() - initial).abs().max().item<double>(), 1e-3);
  }
}

TEST(ParamSlotsTest, NamesGradientsAndWeightDecay) {
  ModelConfig model_cfg;
  model_cfg.name = "cnn";
  model_cfg.channels = {4};
  torch::manual_seed(0);
  StagedModel model = make_model(model_cfg, {{1, 8, 8}, 3});
  FlatParameters flat(model->parameters(), 1);
  const auto named = model->named_params();
  OptimizerConfig cfg = optimizer_config("sgd");
  cfg.weight_decay = 0.1;

  const auto all = param_slots(named, cfg);
  ASSERT_EQ(all.size(), named.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].name, named[i].first);
    EXPECT_TRUE(all[i].param.is_same(named[i].second));
    EXPECT_EQ(all[i].grad.data_ptr(), named[i].second.grad().data_ptr());
    EXPECT_EQ(all[i].weight_decay, 0.1);
  }

  cfg.no_decay_norm_bias = true;
  const auto some = param_slots(named, cfg);
  int decayed = 0;
  for (const auto& s : some) {
    const bool vector = s.param.dim() <= 1;  // BatchNorm weight/bias, linear biases
    EXPECT_EQ(s.weight_decay, vector ? 0.0 : 0.1) << s.name;
    decayed += s.weight_decay > 0;
  }
  EXPECT_EQ(decayed, 3);  // conv weight and the two linear weights
}

TEST(ParamSlotsTest, RequiresABoundGradient) {
  torch::Tensor p = torch::randn({3}, torch::requires_grad());
  EXPECT_THROW(param_slots({{"w", p}}, OptimizerConfig{}), std::invalid_argument);
}

TEST(ClipGradNormTest, ScalesToMaxNormWhenAbove) {
  torch::Tensor a = torch::tensor({3.0f, 4.0f});
  torch::Tensor b = torch::tensor({{12.0f}});
  // |(3, 4, 12)| = 13.
  const double norm = clip_grad_norm({a, b}, 6.5);
  EXPECT_NEAR(norm, 13.0, 1e-6);
  const double coef = 6.5 / (13.0 + 1e-6);
  EXPECT_NEAR(a[0].item<double>(), 3.0 * coef, 1e-6);
  EXPECT_NEAR(a[1].item<double>(), 4.0 * coef, 1e-6);
  EXPECT_NEAR(b[0][0].item<double>(), 12.0 * coef, 1e-6);
  const double after = std::sqrt(a.pow(2).sum().item<double>() + b.pow(2).sum().item<double>());
  EXPECT_NEAR(after, 6.5, 1e-5);
}

TEST(ClipGradNormTest, LeavesSmallGradientsAlone) {
  torch::Tensor a = torch::tensor({1.0f, -2.0f, 2.0f});
  EXPECT_NEAR(clip_grad_norm({a}, 10.0), 3.0, 1e-6);
  EXPECT_TRUE(torch::equal(a, torch::tensor({1.0f, -2.0f, 2.0f})));
}

TEST(ClipGradNormTest, MatchesTorchClipGradNorm) {
  torch::manual_seed(3);
  std::vector<torch::Tensor> ours, theirs;
  for (int64_t n : {7, 30, 2}) {
    torch::Tensor g = torch::randn({n}) * 3;
    ours.push_back(g.clone());
    torch::Tensor p = torch::zeros({n}, torch::requires_grad());
    p.mutable_grad() = g.clone();
    theirs.push_back(p);
  }
  const double norm = clip_grad_norm(ours, 1.0);
  const double reference = torch::nn::utils::clip_grad_norm_(theirs, 1.0);
  EXPECT_NEAR(norm, reference, 1e-4);
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_TRUE(torch::allclose(ours[i], theirs[i].grad(), 1e-5, 1e-6));
  }
}

}  // namespace
}  // namespace desync
