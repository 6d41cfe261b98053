// LinearLayer (models/low_rank.h): the factorised gradients against ∂L/∂W from a dense copy
// (spec §1 test 4), the dense path against LibTorch's Linear, the initialisation, the rank rule,
// and the GPT and MLP built with model.low_rank (names, parameter counts, FLOPs).
#include "desync/models/low_rank.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <string>

#include "desync/core/error.h"
#include "desync/models/gpt.h"
#include "desync/models/staged_model.h"

namespace desync {
namespace {

using models::LinearLayer;

TEST(LowRankLinear, FactorGradientsAreDenseGradientTimesTheOtherFactor) {
  for (const double mult : {1.0, 1.5}) {  // both forward paths
    SCOPED_TRACE(mult);
    torch::manual_seed(1);
    const int64_t in = 12, out = 9, r = 4;
    LinearLayer layer(in, out, /*bias=*/true, r, mult);
    layer->to(torch::kFloat64);
    torch::Tensor x = torch::randn({5, in}, torch::kFloat64);
    torch::Tensor target = torch::randn({5, out}, torch::kFloat64);
    (layer->forward(x) - target).pow(2).sum().backward();

    // The same map with W = A Bᵀ as a leaf: its gradient is ∂L/∂W.
    torch::Tensor W = torch::matmul(layer->A, layer->B.t()).detach().requires_grad_(true);
    torch::Tensor bias = layer->bias.detach();
    (mult * torch::matmul(x, W.t()) + bias - target).pow(2).sum().backward();
    const torch::Tensor gw = W.grad();
    EXPECT_TRUE(torch::allclose(layer->A.grad(), torch::matmul(gw, layer->B.detach()), 1e-6, 1e-9));
    EXPECT_TRUE(
        torch::allclose(layer->B.grad(), torch::matmul(gw.t(), layer->A.detach()), 1e-6, 1e-9));
  }
}

TEST(LowRankLinear, DenseLayerIsLibTorchsLinearBitwise) {
  torch::manual_seed(7);
  torch::nn::Linear reference(10, 6);
  const torch::Tensor after_reference = torch::rand({3});
  torch::manual_seed(7);
  LinearLayer ours(10, 6, /*bias=*/true);
  // The same draws in the same order, and nothing more.
  EXPECT_TRUE(torch::equal(torch::rand({3}), after_reference));
  EXPECT_TRUE(torch::equal(ours->weight, reference->weight));
  EXPECT_TRUE(torch::equal(ours->bias, reference->bias));
  torch::Tensor x = torch::randn({4, 10});
  EXPECT_TRUE(torch::equal(ours->forward(x), reference->forward(x)));
  std::vector<std::string> names;
  for (const auto& p : ours->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias"}));
}

TEST(LowRankLinear, ForwardIsTheDenseProductOfTheFactors) {
  torch::manual_seed(3);
  LinearLayer layer(16, 8, /*bias=*/false, 3, /*mult=*/0.25);
  torch::Tensor x = torch::randn({2, 5, 16});
  const torch::Tensor W = torch::matmul(layer->A, layer->B.t());
  EXPECT_TRUE(torch::allclose(layer->forward(x), 0.25 * torch::matmul(x, W.t()), 1e-5, 1e-6));
  EXPECT_FALSE(layer->bias.defined());
  EXPECT_EQ(layer->macs(), (16 + 8) * 3);
}

TEST(LowRankLinear, InitialisationGivesTheProductTheDenseStandardDeviation) {
  torch::manual_seed(5);
  LinearLayer layer(256, 256, /*bias=*/true, 64);
  layer->init_normal(0.02);
  const double std = torch::matmul(layer->A, layer->B.t()).std().item<double>();
  EXPECT_NEAR(std, 0.02, 0.02 * 0.05);
  EXPECT_EQ(layer->bias.abs().sum().item<double>(), 0.0);
  layer->init_truncated_normal(0.1, 0.0);
  const double s = std::sqrt(0.1 / std::sqrt(64.0));
  EXPECT_LE(layer->A.abs().max().item<double>(), 2.0 * s + 1e-6);
  // A normal truncated at ±2 std keeps 0.774 of its variance; W's variance is r times the
  // product of the factors' variances.
  EXPECT_NEAR(torch::matmul(layer->A, layer->B.t()).std().item<double>(), 0.1 * 0.774, 0.1 * 0.05);
}

TEST(LowRankLinear, RankFromModelLowRank) {
  EXPECT_EQ(models::resolve_rank(0.0, 64, 32), 0);
  EXPECT_EQ(models::resolve_rank(0.25, 64, 32), 8);
  EXPECT_EQ(models::resolve_rank(0.01, 64, 32), 1);
  EXPECT_EQ(models::resolve_rank(5, 64, 32), 5);
  EXPECT_EQ(models::resolve_rank(32, 64, 32), 32);
  EXPECT_THROW(models::resolve_rank(33, 64, 32), ConfigError);
}

ModelConfig gpt_config(double low_rank) {
  ModelConfig cfg;
  cfg.name = "gpt";
  cfg.n_layer = 2;
  cfg.n_head = 2;
  cfg.d_model = 32;
  cfg.low_rank = low_rank;
  return cfg;
}

TEST(LowRankGpt, EveryBlockMatrixIsFactorisedAndTheEmbeddingsAndHeadAreNot) {
  torch::manual_seed(0);
  const ModelInput input{{16}, 50};
  StagedModel model = make_model(gpt_config(0.25), input);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, p] : model->named_params()) shapes[name] = p.sizes().vec();
  // d = 32, f = 128, r = round(0.25 min(in, out)) = 8.
  EXPECT_EQ(shapes.at("block0.0.attn.qkv.A"), (std::vector<int64_t>{96, 8}));
  EXPECT_EQ(shapes.at("block0.0.attn.qkv.B"), (std::vector<int64_t>{32, 8}));
  EXPECT_EQ(shapes.at("block1.0.mlp.fc.A"), (std::vector<int64_t>{128, 8}));
  EXPECT_EQ(shapes.at("block1.0.mlp.proj.B"), (std::vector<int64_t>{128, 8}));
  EXPECT_EQ(shapes.count("block0.0.attn.qkv.weight"), 0u);
  EXPECT_EQ(shapes.at("embed.0.tok.weight"), (std::vector<int64_t>{50, 32}));
  EXPECT_EQ(shapes.at("head.0.out.weight"), (std::vector<int64_t>{50, 32}));
  // Per block: qkv (96 + 32) 8 + 96, proj (32 + 32) 8 + 32, fc (32 + 128) 8 + 128,
  // proj (128 + 32) 8 + 32, two layer norms 4 * 32.
  const int64_t block = 128 * 8 + 96 + 64 * 8 + 32 + 160 * 8 + 128 + 160 * 8 + 32 + 4 * 32;
  const int64_t embed = 50 * 32 + 16 * 32, head = 2 * 32 + 50 * 32;
  EXPECT_EQ(model->parameter_count(), embed + 2 * block + head);
  torch::Tensor logits = model->forward(torch::randint(0, 50, {3, 16}));
  EXPECT_EQ(logits.sizes(), (torch::IntArrayRef{3, 16, 50}));
}

TEST(LowRankGpt, FlopsPerTokenCountTheFactors) {
  const ModelConfig dense = gpt_config(0.0), low = gpt_config(8);
  const double d = 32, f = 128, t = 16, v = 50;
  auto per_token = [&](double qkv, double proj, double fc, double fproj) {
    const double block = 2 * qkv + 4 * t * d + 2 * proj + 2 * (fc + fproj);
    return 3.0 * (2 * block + 2 * d * v);
  };
  EXPECT_DOUBLE_EQ(gpt_train_flops_per_token(dense, 50, 16),
                   per_token(d * 3 * d, d * d, d * f, f * d));
  EXPECT_DOUBLE_EQ(gpt_train_flops_per_token(low, 50, 16),
                   per_token((d + 3 * d) * 8, 2 * d * 8, (d + f) * 8, (f + d) * 8));
}

TEST(LowRankMlp, HiddenLayersAreFactorisedAndTheHeadIsDense) {
  torch::manual_seed(0);
  ModelConfig cfg;
  cfg.name = "mlp";
  cfg.hidden = {40, 40};
  cfg.low_rank = 0.5;
  StagedModel model = make_model(cfg, ModelInput{{1, 4, 4}, 10});
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, p] : model->named_params()) shapes[name] = p.sizes().vec();
  EXPECT_EQ(shapes.at("fc1.1.A"), (std::vector<int64_t>{40, 8}));
  EXPECT_EQ(shapes.at("fc1.1.B"), (std::vector<int64_t>{16, 8}));
  EXPECT_EQ(shapes.at("fc2.0.A"), (std::vector<int64_t>{40, 20}));
  EXPECT_EQ(shapes.at("head.0.weight"), (std::vector<int64_t>{10, 40}));
  EXPECT_EQ(model->forward(torch::randn({2, 1, 4, 4})).sizes(), (torch::IntArrayRef{2, 10}));
}

}  // namespace
}  // namespace desync
