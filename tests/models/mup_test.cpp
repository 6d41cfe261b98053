// μP (models/mup.h): roles and learning-rate scales of the mlp and gpt parameters, the μP MLP's
// initialisation and multipliers, the standard MLP left as it was, and the coordinate check of
// spec §2.4 test 3 (a fixed random learned optimizer moves each layer's pre-activations by about
// as much at every width under μP, and by more at larger widths under the standard
// parametrisation).
#include "desync/models/mup.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/models/low_rank.h"
#include "desync/models/staged_model.h"
#include "desync/optim/mulo.h"
#include "desync/optim/optimizer.h"

namespace desync {
namespace {

ModelConfig mlp_config(std::vector<int64_t> hidden, const std::string& parametrization) {
  ModelConfig cfg;
  cfg.name = "mlp";
  cfg.hidden = std::move(hidden);
  cfg.parametrization = parametrization;
  return cfg;
}

// One slot per parameter, with gradient tensors bound to .grad().
std::vector<ParamSlot> slots_of(const StagedModel& model) {
  std::vector<ParamSlot> slots;
  for (const auto& [name, p] : model->named_params()) {
    p.mutable_grad() = torch::zeros_like(p);
    slots.push_back({name, p, p.grad(), 0.0});
  }
  return slots;
}

std::map<std::string, double> scales(const ModelConfig& cfg, const StagedModel& model) {
  std::vector<ParamSlot> slots = slots_of(model);
  set_mup_lr_scales(cfg, slots);
  std::map<std::string, double> out;
  for (const ParamSlot& s : slots) out[s.name] = s.lr_scale;
  return out;
}

TEST(Mup, MlpLearningRateScalesFollowTheTable) {
  torch::manual_seed(0);
  ModelConfig cfg = mlp_config({48, 80}, "mup");
  cfg.mup_hidden_lr_mult = 4.0;
  StagedModel model = make_model(cfg, ModelInput{{1, 4, 4}, 10});
  const auto s = scales(cfg, model);
  EXPECT_EQ(s.at("fc1.1.weight"), 1.0);         // input
  EXPECT_EQ(s.at("fc1.1.bias"), 1.0);           // vector
  EXPECT_EQ(s.at("fc2.0.weight"), 4.0 / 48.0);  // hidden: mult / fan_in
  EXPECT_EQ(s.at("fc2.0.bias"), 1.0);
  EXPECT_EQ(s.at("head.0.weight"), 1.0);  // output
  cfg.parametrization = "sp";
  for (const auto& [name, scale] : scales(cfg, model)) EXPECT_EQ(scale, 1.0) << name;
}

TEST(Mup, FactorsTakeTheFanInOfTheirProduct) {
  torch::manual_seed(0);
  ModelConfig cfg = mlp_config({48, 80}, "mup");
  cfg.low_rank = 0.25;
  StagedModel model = make_model(cfg, ModelInput{{1, 4, 4}, 10});
  const auto s = scales(cfg, model);
  EXPECT_EQ(s.at("fc2.0.A"), 1.0 / 48.0);
  EXPECT_EQ(s.at("fc2.0.B"), 1.0 / 48.0);
  EXPECT_EQ(s.at("fc1.1.A"), 1.0);
}

TEST(Mup, GptRolesAndAFlatShardIsRefused) {
  ModelConfig cfg;
  cfg.name = "gpt";
  cfg.parametrization = "mup";
  const torch::Tensor m = torch::zeros({8, 4}), v = torch::zeros({8});
  EXPECT_EQ(mup_role(cfg, "embed.0.tok.weight", m), MupRole::kInput);
  EXPECT_EQ(mup_role(cfg, "block3.0.mlp.fc.weight", m), MupRole::kHidden);
  EXPECT_EQ(mup_role(cfg, "block3.0.norm1.weight", v), MupRole::kVector);
  EXPECT_EQ(mup_role(cfg, "head.0.out.weight", m), MupRole::kOutput);
  std::vector<ParamSlot> flat = {{"flat", v, v, 0.0}};
  EXPECT_THROW(set_mup_lr_scales(cfg, flat), ConfigError);
}

TEST(Mup, AdamwAndSgdScaleEachSlotsLearningRate) {
  // Adam's first step moves every element by lr * lr_scale (its update is lr * sign(g) then).
  torch::Tensor p = torch::zeros({3}, torch::kFloat64),
                g = torch::tensor({1.0, -2.0, 0.5}, torch::kFloat64);
  torch::Tensor q = torch::zeros({3}, torch::kFloat64);
  ParamSlot scaled{"w", p, g, 0.0}, plain{"v", q, g, 0.0};
  scaled.lr_scale = 0.25;
  make_adamw({scaled, plain}, 0.9, 0.999, 0.0)->step(0.1);
  EXPECT_TRUE(torch::allclose(p, -0.025 * g.sign(), 1e-12, 0));
  EXPECT_TRUE(torch::allclose(q, -0.1 * g.sign(), 1e-12, 0));
  p.zero_();
  make_sgd({scaled}, 0.0, 0.0, false)->step(0.1);
  EXPECT_TRUE(torch::allclose(p, -0.025 * g, 1e-12, 0));
}

TEST(Mup, MlpInitialisationAndMultipliers) {
  torch::manual_seed(3);
  ModelConfig cfg = mlp_config({400, 400}, "mup");
  cfg.mup_output_mult = 2.0;
  StagedModel model = make_model(cfg, ModelInput{{1, 10, 10}, 10});
  std::map<std::string, torch::Tensor> p;
  for (const auto& [name, t] : model->named_params()) p[name] = t;
  // Hidden weights ~ N(0, 1/fan_in) truncated at 2 std: std 0.88 / sqrt(400), max 2 / sqrt(400).
  EXPECT_NEAR(p.at("fc2.0.weight").std().item<double>(), 0.88 / 20.0, 0.01 / 20.0);
  EXPECT_LE(p.at("fc2.0.weight").abs().max().item<double>(), 2.0 / 20.0 + 1e-7);
  EXPECT_NEAR(p.at("fc1.1.weight").std().item<double>(), 0.88 / 10.0, 0.02 / 10.0);
  EXPECT_NEAR(p.at("fc2.0.bias").std().item<double>(), 1.0, 0.1);
  EXPECT_EQ(p.at("head.0.weight").abs().max().item<double>(), 0.0);
  // The head multiplies its product by output_mult / fan_in, not its bias.
  torch::NoGradGuard no_grad;
  p.at("head.0.weight").fill_(1.0);
  const torch::Tensor x = torch::randn({2, 1, 10, 10});
  const torch::Tensor h = model->forward_range(x, 0, 2);
  const torch::Tensor expected = h.sum(1, true) * (2.0 / 400.0) + p.at("head.0.bias");
  EXPECT_TRUE(torch::allclose(model->forward(x), expected, 1e-5, 1e-6));
}

TEST(Mup, StandardMlpIsUnchanged) {
  torch::manual_seed(5);
  StagedModel ours = make_model(mlp_config({12}, "sp"), ModelInput{{6}, 3});
  torch::manual_seed(5);
  torch::nn::Linear fc(6, 12), head(12, 3);
  std::map<std::string, torch::Tensor> p;
  for (const auto& [name, t] : ours->named_params()) p[name] = t;
  EXPECT_TRUE(torch::equal(p.at("fc1.1.weight"), fc->weight));
  EXPECT_TRUE(torch::equal(p.at("head.0.bias"), head->bias));
}

// RMS over a fixed batch of how far each linear layer's pre-activations moved in `steps` steps
// of a fixed random learned optimizer, per layer.
std::vector<double> preactivation_change(int64_t width, const std::string& parametrization,
                                         int steps) {
  torch::manual_seed(17);
  ModelConfig cfg = mlp_config({width, width}, parametrization);
  StagedModel model = make_model(cfg, ModelInput{{32}, 10});
  const torch::Tensor x = torch::randn({64, 32});
  const torch::Tensor y = torch::randint(0, 10, {64});
  // Each linear layer's output (its pre-activation; the head's are the logits).
  auto linear_outputs = [&] {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> out;
    torch::Tensor h = x;
    for (int64_t s = 0; s < model->num_stages(); ++s) {
      for (torch::nn::AnyModule& module : *model->stage(s)) {
        h = module.forward(h);
        if (!module.ptr()->as<torch::nn::ReLUImpl>() && !module.ptr()->as<torch::nn::FlattenImpl>())
          out.push_back(h);
      }
    }
    return out;
  };
  const std::vector<torch::Tensor> before = linear_outputs();
  std::vector<ParamSlot> slots = slots_of(model);
  set_mup_lr_scales(cfg, slots);
  auto opt = make_mulo(slots, MuloParams::init(99), MuloOptions{.alpha1 = 1e-2});
  for (int t = 0; t < steps; ++t) {
    for (auto& s : slots) s.grad.zero_();
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    opt->step(0.0);
  }
  const std::vector<torch::Tensor> after = linear_outputs();
  std::vector<double> change;
  for (size_t l = 0; l < before.size(); ++l)
    change.push_back((after[l] - before[l]).pow(2).mean().sqrt().item<double>());
  return change;
}

void coordinate_check(const std::vector<int64_t>& widths) {
  std::map<std::string, std::vector<std::vector<double>>> by;
  for (const std::string p : {"mup", "sp"})
    for (int64_t w : widths) by[p].push_back(preactivation_change(w, p, 5));
  for (size_t l = 0; l < 3; ++l) {
    std::vector<double> mup, sp;
    for (size_t i = 0; i < widths.size(); ++i) {
      mup.push_back(by["mup"][i][l]);
      sp.push_back(by["sp"][i][l]);
    }
    const double mup_spread =
        *std::max_element(mup.begin(), mup.end()) / *std::min_element(mup.begin(), mup.end());
    EXPECT_LT(mup_spread, 2.0) << "layer " << l << ": μP's change varies with width";
    if (l > 0) {  // the input layer's fan-in is the data's under both
      EXPECT_GT(sp.back() / sp.front(), 4.0) << "layer " << l << ": SP's change should grow";
    }
  }
}

TEST(MupCoordinateCheck, PreactivationChangeIsFlatAcrossWidthsUnderMupOnly) {
  coordinate_check({16, 64, 256});
}

TEST(MupCoordinateCheck, SlowSpecWidths) { coordinate_check({128, 512, 2048}); }

}  // namespace
}  // namespace desync
