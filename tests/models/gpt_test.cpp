// The GPT model (models/gpt.h): stage layout and names, causality for both position schemes,
// parameter counts derived by hand, GPT-2 initialisation, rotary positions' relative-offset
// property, the tied head (gradients from both uses, copies, flat parameters), float64, the
// FLOP count against matrix shapes listed by hand, and configuration errors.
#include "desync/models/gpt.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "desync/algorithms/common.h"
#include "desync/core/config.h"
#include "desync/core/error.h"
#include "desync/models/gpt_layers.h"
#include "desync/models/staged_model.h"

namespace desync {
namespace {

constexpr int64_t kVocab = 23;
constexpr int64_t kSeq = 8;

struct Variant {
  std::string norm, position, activation;
  bool tie = false;
};

ModelConfig gpt_config(const Variant& v = {"layernorm", "learned", "gelu", false}) {
  ModelConfig cfg;
  cfg.name = "gpt";
  cfg.n_layer = 2;
  cfg.n_head = 2;
  cfg.d_model = 16;
  cfg.norm = v.norm;
  cfg.position = v.position;
  cfg.activation = v.activation;
  cfg.tie_embeddings = v.tie;
  return cfg;
}

StagedModel build(const ModelConfig& cfg, int64_t seq = kSeq, int64_t vocab = kVocab,
                  uint64_t seed = 0) {
  torch::manual_seed(seed);
  return make_model(cfg, {{seq}, vocab});
}

torch::Tensor random_ids(int64_t batch, int64_t seq, int64_t vocab = kVocab) {
  return torch::randint(vocab, {batch, seq}, torch::kLong);
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

std::map<std::string, torch::Tensor> params_by_name(const StagedModel& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, p] : model->named_params()) out[name] = p;
  return out;
}

models::GptHeadImpl& head_of(StagedModel& model) {
  return *model->stage(model->num_stages() - 1)->ptr<models::GptHeadImpl>(0);
}

models::GptEmbeddingImpl& embed_of(StagedModel& model) {
  return *model->stage(0)->ptr<models::GptEmbeddingImpl>(0);
}

TEST(GptTest, StagesNamesAndOutputShape) {
  StagedModel model = build(gpt_config());
  std::vector<std::string> stages;
  for (int64_t i = 0; i < model->num_stages(); ++i) stages.push_back(model->stage_name(i));
  EXPECT_EQ(stages, (std::vector<std::string>{"embed", "block0", "block1", "head"}));
  std::vector<std::string> names;
  for (const auto& [name, p] : model->named_params())
    if (name.rfind("block1", 0) != 0) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "embed.0.tok.weight", "embed.0.pos.weight", "block0.0.norm1.weight",
                       "block0.0.norm1.bias", "block0.0.attn.qkv.weight", "block0.0.attn.qkv.bias",
                       "block0.0.attn.proj.weight", "block0.0.attn.proj.bias",
                       "block0.0.norm2.weight", "block0.0.norm2.bias", "block0.0.mlp.fc.weight",
                       "block0.0.mlp.fc.bias", "block0.0.mlp.proj.weight", "block0.0.mlp.proj.bias",
                       "head.0.norm.weight", "head.0.norm.bias", "head.0.out.weight"}));
  EXPECT_TRUE(model->named_bufs().empty());  // the causal mask is not a buffer
  EXPECT_FALSE(model->has_tied_stages());
  EXPECT_EQ(model->forward(random_ids(3, kSeq)).sizes(), (std::vector<int64_t>{3, kSeq, kVocab}));
}

TEST(GptTest, SwigluRmsnormRopeNames) {
  StagedModel model = build(gpt_config({"rmsnorm", "rope", "swiglu", true}));
  std::vector<std::string> names;
  for (const auto& [name, p] : model->named_params())
    if (name.rfind("block1", 0) != 0) names.push_back(name);
  EXPECT_EQ(names,
            (std::vector<std::string>{
                "embed.0.tok.weight", "block0.0.norm1.weight", "block0.0.attn.qkv.weight",
                "block0.0.attn.qkv.bias", "block0.0.attn.proj.weight", "block0.0.attn.proj.bias",
                "block0.0.norm2.weight", "block0.0.mlp.gate.weight", "block0.0.mlp.up.weight",
                "block0.0.mlp.proj.weight", "head.0.norm.weight"}));
  EXPECT_TRUE(model->has_tied_stages());
}

// Changing token t changes no logit before t and every logit from t on; a prefix gives the
// full sequence's logits (generation feeds growing prefixes).
void expect_causal(const std::string& position) {
  StagedModel model = build(gpt_config({"layernorm", position, "gelu", false}));
  torch::NoGradGuard no_grad;
  torch::Tensor ids = random_ids(2, kSeq);
  torch::Tensor logits = model->forward(ids);
  for (int64_t t : {int64_t{0}, int64_t{3}, kSeq - 1}) {
    torch::Tensor changed = ids.clone();
    changed.select(1, t).add_(1).remainder_(kVocab);
    torch::Tensor other = model->forward(changed);
    for (int64_t s = 0; s < kSeq; ++s) {
      const double diff = max_abs_diff(logits.select(1, s), other.select(1, s));
      if (s < t)
        EXPECT_LT(diff, 1e-6) << position << ": token " << t << " changed position " << s;
      else
        EXPECT_GT(diff, 1e-4) << position << ": token " << t << " left position " << s;
    }
  }
  for (int64_t t : {1, 5}) {
    torch::Tensor prefix = model->forward(ids.narrow(1, 0, t));
    EXPECT_EQ(prefix.sizes(), (std::vector<int64_t>{2, t, kVocab}));
    EXPECT_LT(max_abs_diff(prefix, logits.narrow(1, 0, t)), 1e-5) << position << " prefix " << t;
  }
}

TEST(GptTest, CausalWithLearnedPositions) { expect_causal("learned"); }
TEST(GptTest, CausalWithRope) { expect_causal("rope"); }

TEST(GptTest, FfWidthDefaults) {
  ModelConfig cfg = gpt_config();
  cfg.d_model = 128;
  EXPECT_EQ(gpt_ff_width(cfg), 512);
  cfg.activation = "swiglu";
  EXPECT_EQ(gpt_ff_width(cfg), 344);  // 8/3 * 128 = 341.3 -> 342 -> 344
  cfg.d_model = 24;
  EXPECT_EQ(gpt_ff_width(cfg), 64);  // exactly 8/3 * 24
  cfg.d_model = 16;
  EXPECT_EQ(gpt_ff_width(cfg), 48);  // 42.7 -> 43 -> 48
  cfg.d_ff = 20;
  EXPECT_EQ(gpt_ff_width(cfg), 20);
}

// d = 16, context 8, vocab 23, 2 layers; f = 64 (gelu) or 48 (swiglu).
int64_t hand_count(const Variant& v) {
  const int64_t d = 16, ctx = kSeq, vocab = kVocab, layers = 2;
  const int64_t f = v.activation == "gelu" ? 64 : 48;
  const int64_t norm = v.norm == "layernorm" ? 2 * d : d;
  const int64_t embed = vocab * d + (v.position == "learned" ? ctx * d : 0);
  const int64_t attn = (d * 3 * d + 3 * d) + (d * d + d);
  const int64_t mlp = v.activation == "gelu" ? (d * f + f) + (f * d + d) : 3 * d * f;
  const int64_t head = norm + (v.tie ? 0 : d * vocab);
  return embed + layers * (2 * norm + attn + mlp) + head;
}

TEST(GptTest, ParameterCountsMatchHandCount) {
  for (const char* norm : {"layernorm", "rmsnorm"})
    for (const char* position : {"learned", "rope"})
      for (const char* activation : {"gelu", "swiglu"})
        for (bool tie : {false, true}) {
          Variant v{norm, position, activation, tie};
          StagedModel model = build(gpt_config(v));
          std::string what =
              std::string(norm) + " " + position + " " + activation + (tie ? " tied" : " untied");
          EXPECT_EQ(model->parameter_count(), hand_count(v)) << what;
          FlatParameters flat(model->parameters_of(0, model->num_stages()));
          EXPECT_EQ(flat.numel(), hand_count(v)) << what;
        }
}

TEST(GptTest, Gpt2InitScalesResidualProjections) {
  ModelConfig cfg = gpt_config();
  cfg.n_layer = 8;
  cfg.d_model = 128;
  cfg.n_head = 4;
  StagedModel model = build(cfg, 64, 512);
  const double residual = 0.02 / std::sqrt(2.0 * 8);
  int residual_seen = 0, other_seen = 0;
  for (const auto& [name, p] : model->named_params()) {
    const bool is_norm = name.find("norm") != std::string::npos;
    if (name.size() > 5 && name.substr(name.size() - 5) == ".bias") {
      EXPECT_EQ(p.abs().max().item<double>(), 0.0) << name;
    } else if (is_norm) {
      EXPECT_EQ(max_abs_diff(p, torch::ones_like(p)), 0.0) << name;
    } else {
      const bool is_residual = name.find("proj.weight") != std::string::npos;
      const double expected = is_residual ? residual : 0.02;
      EXPECT_NEAR(p.std().item<double>(), expected, 0.04 * expected) << name;
      EXPECT_NEAR(p.mean().item<double>(), 0.0, 0.1 * expected) << name;
      ++(is_residual ? residual_seen : other_seen);
    }
  }
  EXPECT_EQ(residual_seen, 2 * 8);
  EXPECT_EQ(other_seen, 2 + 8 * 2 + 1);  // tok, pos; qkv and fc per block; head
  // Drawn from the global RNG: the same seed gives the same model, another seed another.
  StagedModel again = build(cfg, 64, 512);
  StagedModel other = build(cfg, 64, 512, 1);
  auto a = params_by_name(model), b = params_by_name(again), c = params_by_name(other);
  EXPECT_TRUE(torch::equal(a["block3.0.attn.qkv.weight"], b["block3.0.attn.qkv.weight"]));
  EXPECT_FALSE(torch::equal(a["block3.0.attn.qkv.weight"], c["block3.0.attn.qkv.weight"]));
}

// Rotated queries and keys: q.k depends on positions only through their difference.
void expect_relative(torch::ScalarType dtype, double tolerance) {
  const int64_t d_head = 8, t = 10;
  models::Rotary rope(d_head, 32);
  auto opts = torch::TensorOptions().dtype(dtype);
  torch::manual_seed(3);
  torch::Tensor q = torch::randn({1, 2, t, d_head}, opts);
  torch::Tensor k = torch::randn({1, 2, t, d_head}, opts);
  auto scores = [&](int64_t offset) {
    return torch::matmul(rope.apply(q, offset), rope.apply(k, offset).transpose(-2, -1));
  };
  torch::Tensor at0 = scores(0);
  EXPECT_LT(max_abs_diff(at0, scores(7)), tolerance);
  EXPECT_LT(max_abs_diff(at0, scores(22)), tolerance);
  EXPECT_GT(max_abs_diff(at0, torch::matmul(q, k.transpose(-2, -1))), 1e-2);  // it rotates
  EXPECT_GT(max_abs_diff(rope.apply(q, 0), rope.apply(q, 7)), 1e-2);          // by position
  EXPECT_LT(max_abs_diff(rope.apply(q).norm(2, -1), q.norm(2, -1)), tolerance);
  // One query and one key repeated at every position: score (i, j) depends only on i - j.
  torch::Tensor same_q = q.narrow(2, 0, 1).expand_as(q);
  torch::Tensor same_k = k.narrow(2, 0, 1).expand_as(k);
  torch::Tensor s = torch::matmul(rope.apply(same_q), rope.apply(same_k).transpose(-2, -1));
  EXPECT_LT(max_abs_diff(s.narrow(2, 1, t - 1).narrow(3, 1, t - 1),
                         s.narrow(2, 0, t - 1).narrow(3, 0, t - 1)),
            tolerance);
  EXPECT_GT(max_abs_diff(s.select(2, 0).select(2, 1), s.select(2, 0).select(2, 2)), 1e-3);
}

TEST(GptTest, RopeScoresDependOnRelativeOffsetFloat32) { expect_relative(torch::kFloat, 1e-5); }
TEST(GptTest, RopeScoresDependOnRelativeOffsetFloat64) {
  expect_relative(torch::kDouble, 1e-12);  // the tables are exact in float64
}

// The loss and its gradients on one fixed batch.
torch::Tensor loss_and_grads(StagedModel& model, const torch::Tensor& ids,
                             const torch::Tensor& targets) {
  model->zero_grad();
  torch::Tensor loss = loss_of(model->forward(ids), targets);
  loss.backward();
  return loss.detach();
}

TEST(GptTest, TiedWeightGetsGradientsFromEmbeddingAndHead) {
  Variant v{"layernorm", "learned", "gelu", true};
  StagedModel tied = build(gpt_config(v));
  v.tie = false;
  StagedModel untied = build(gpt_config(v), kSeq, kVocab, 5);
  {
    torch::NoGradGuard no_grad;
    auto mine = params_by_name(tied);
    for (auto& [name, p] : untied->named_params())
      p.copy_(name == "head.0.out.weight" ? mine.at("embed.0.tok.weight") : mine.at(name));
  }
  torch::manual_seed(9);
  torch::Tensor ids = random_ids(4, kSeq), targets = random_ids(4, kSeq);
  torch::Tensor a = loss_and_grads(tied, ids, targets);
  torch::Tensor b = loss_and_grads(untied, ids, targets);
  EXPECT_NEAR(a.item<double>(), b.item<double>(), 1e-6);
  auto u = params_by_name(untied);
  torch::Tensor shared = params_by_name(tied).at("embed.0.tok.weight").grad();
  torch::Tensor embed_grad = u.at("embed.0.tok.weight").grad();
  torch::Tensor head_grad = u.at("head.0.out.weight").grad();
  EXPECT_GT(head_grad.abs().max().item<double>(), 1e-3);
  EXPECT_GT(embed_grad.abs().max().item<double>(), 1e-3);
  EXPECT_LT(max_abs_diff(shared, embed_grad + head_grad), 1e-6);
}

TEST(GptTest, CloneKeepsTheTieOnTheCopy) {
  StagedModel model = build(gpt_config({"rmsnorm", "rope", "swiglu", true}));
  StagedModel copy(model->clone_model());
  EXPECT_TRUE(copy->has_tied_stages());
  EXPECT_EQ(copy->parameter_count(), model->parameter_count());
  EXPECT_TRUE(head_of(copy).tied_weight().is_same(embed_of(copy).token_weight()));
  EXPECT_FALSE(head_of(copy).tied_weight().is_same(embed_of(model).token_weight()));
  EXPECT_TRUE(head_of(model).tied_weight().is_same(embed_of(model).token_weight()));
  torch::NoGradGuard no_grad;
  torch::Tensor ids = random_ids(2, kSeq);
  torch::Tensor before = copy->forward(ids);
  EXPECT_LT(max_abs_diff(before, model->forward(ids)), 1e-6);
  embed_of(model).token_weight().mul_(3.0);  // the original changes; the copy must not
  EXPECT_EQ(max_abs_diff(copy->forward(ids), before), 0.0);
  EXPECT_GT(max_abs_diff(model->forward(ids), before), 1e-3);
}

TEST(GptTest, Float64MatchesFloat32ToItsPrecision) {
  for (const char* position : {"learned", "rope"}) {
    ModelConfig cfg = gpt_config({"rmsnorm", position, "swiglu", true});
    StagedModel single = build(cfg);
    cfg.dtype = "float64";
    StagedModel twice = build(cfg);
    torch::manual_seed(4);
    torch::Tensor ids = random_ids(2, kSeq), targets = random_ids(2, kSeq);
    torch::Tensor out = twice->forward(ids);
    EXPECT_EQ(out.scalar_type(), torch::kDouble);
    EXPECT_LT(max_abs_diff(out.to(torch::kFloat), single->forward(ids)), 1e-5) << position;
    loss_and_grads(twice, ids, targets);
    loss_and_grads(single, ids, targets);
    auto s = params_by_name(single);
    for (const auto& [name, p] : twice->named_params()) {
      ASSERT_TRUE(p.grad().defined()) << name;
      EXPECT_EQ(p.grad().scalar_type(), torch::kDouble) << name;
      EXPECT_LT(max_abs_diff(p.grad().to(torch::kFloat), s.at(name).grad()), 1e-5) << name;
    }
  }
}

TEST(GptTest, FlatParametersHoldTheTiedWeightOnce) {
  StagedModel model = build(gpt_config({"layernorm", "rope", "gelu", true}));
  StagedModel reference(model->clone_model());
  torch::manual_seed(2);
  torch::Tensor ids = random_ids(3, kSeq), targets = random_ids(3, kSeq);
  torch::Tensor expected_loss = loss_and_grads(reference, ids, targets);

  std::vector<torch::Tensor> params = model->parameters_of(0, model->num_stages());
  FlatParameters flat(params);
  EXPECT_EQ(flat.numel(), model->parameter_count());
  // The head reads the tied weight from the flat buffer.
  const auto* begin = flat.params_flat().data_ptr<float>();
  const auto* tied = head_of(model).tied_weight().data_ptr<float>();
  EXPECT_TRUE(tied >= begin && tied < begin + flat.numel());

  torch::Tensor loss = loss_of(model->forward(ids), targets);
  loss.backward();
  EXPECT_NEAR(loss.item<double>(), expected_loss.item<double>(), 1e-6);
  auto ref = params_by_name(reference);
  size_t i = 0;
  for (const auto& [name, p] : model->named_params()) {
    ASSERT_TRUE(p.is_same(flat.params()[i])) << name;
    torch::Tensor in_flat = flat.grads_flat().narrow(0, flat.offset(i), p.numel()).view(p.sizes());
    EXPECT_LT(max_abs_diff(in_flat, ref.at(name).grad()), 1e-6) << name;
    ++i;
  }
}

// Forward matrix products of one sequence of T tokens as {rows, inner, columns}, listed from
// the architecture; 2 FLOPs per multiply-add, training 3x the forward.
double listed_flops_per_token(int64_t layers, int64_t heads, int64_t d, int64_t f, bool swiglu,
                              int64_t vocab, int64_t t) {
  std::vector<std::array<int64_t, 3>> products;
  for (int64_t l = 0; l < layers; ++l) {
    products.push_back({t, d, 3 * d});  // qkv
    for (int64_t h = 0; h < heads; ++h) {
      products.push_back({t, d / heads, t});  // q k^T
      products.push_back({t, t, d / heads});  // softmax(.) v
    }
    products.push_back({t, d, d});              // attention output
    products.push_back({t, d, f});              // fc or gate
    if (swiglu) products.push_back({t, d, f});  // up
    products.push_back({t, f, d});              // mlp output
  }
  products.push_back({t, d, vocab});  // head
  double forward = 0.0;
  for (const auto& p : products) forward += 2.0 * p[0] * p[1] * p[2];
  return 3.0 * forward / static_cast<double>(t);
}

TEST(GptTest, TrainFlopsMatchListedMatrixProducts) {
  ModelConfig cfg = gpt_config();
  cfg.n_layer = 3;
  cfg.n_head = 4;
  cfg.d_model = 32;
  EXPECT_DOUBLE_EQ(gpt_train_flops_per_token(cfg, 100, 24),
                   listed_flops_per_token(3, 4, 32, 128, false, 100, 24));
  cfg.activation = "swiglu";
  EXPECT_DOUBLE_EQ(gpt_train_flops_per_token(cfg, 100, 24),
                   listed_flops_per_token(3, 4, 32, 88, true, 100, 24));
}

TEST(GptTest, ContextAndConfigurationErrors) {
  ModelConfig cfg = gpt_config();
  EXPECT_EQ(gpt_context(cfg, 12), 12);
  cfg.seq_len = 16;
  EXPECT_EQ(gpt_context(cfg, 12), 16);
  EXPECT_THROW(gpt_context(cfg, 20), ConfigError);
  EXPECT_THROW(build(cfg, 20), ConfigError);

  // A context longer than the data: shorter sequences and the full context both run.
  StagedModel longer = build(cfg, 12);
  EXPECT_EQ(longer->forward(random_ids(1, 16)).size(1), 16);
  EXPECT_EQ(longer->forward(random_ids(1, 3)).size(1), 3);
  EXPECT_THROW(longer->forward(random_ids(1, 17)), c10::Error);

  torch::manual_seed(0);
  EXPECT_THROW(make_model(gpt_config(), {{1, 28, 28}, 10}), ConfigError);
  ModelConfig odd = gpt_config();
  odd.n_head = 3;
  EXPECT_THROW(build(odd), ConfigError);
  ModelConfig rope_odd = gpt_config({"layernorm", "rope", "gelu", false});
  rope_odd.d_model = 6;  // head width 3
  EXPECT_THROW(build(rope_odd), ConfigError);
  ModelConfig bad_norm = gpt_config();
  bad_norm.norm = "batchnorm";
  EXPECT_THROW(build(bad_norm), ConfigError);
}

}  // namespace
}  // namespace desync
