// RevNet blocks and layouts: the reversible coupling inverts to 1e-5 (basic and bottleneck F,
// training and eval mode, whole stages), the downsampling block is not reversible, the stage
// layouts and parameter counts match the PETRA table (pipelines-and-petra.md §3), and the
// models train, clone and take Fashion-MNIST-shaped input.
#include "desync/models/revnet.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "desync/core/config.h"
#include "desync/core/error.h"
#include "desync/models/reversible.h"
#include "desync/models/staged_model.h"

namespace desync {
namespace {

constexpr double kInverseTolerance = 1e-5;

ModelConfig revnet_config(const std::string& name, int64_t width,
                          std::vector<int64_t> blocks = {2, 2}) {
  ModelConfig cfg;
  cfg.name = name;
  cfg.width = width;
  cfg.blocks = std::move(blocks);
  return cfg;
}

std::vector<std::string> stage_names(StagedModel& model) {
  std::vector<std::string> names;
  for (int64_t i = 0; i < model->num_stages(); ++i) names.push_back(model->stage_name(i));
  return names;
}

std::vector<std::string> reversible_stages(StagedModel& model) {
  std::vector<std::string> names;
  for (int64_t i = 0; i < model->num_stages(); ++i)
    if (is_reversible(model->stage(i))) names.push_back(model->stage_name(i));
  return names;
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Parameters of a RevNet, derived from the architecture by hand (revnet.h): stem conv to both
// streams + BN; a reversible block has two 3x3 convs + BNs on one stream; a downsampling block
// has F's two 3x3 convs + BNs and the 1x1 shortcut conv + BN; the head is linear on 2 streams.
int64_t revnet_parameters(int64_t width, const std::vector<int64_t>& blocks, int64_t in_channels,
                          int64_t classes) {
  auto conv = [](int64_t in, int64_t out, int64_t k) { return in * out * k * k; };
  auto bn = [](int64_t c) { return 2 * c; };
  int64_t n = conv(in_channels, 2 * width, 3) + bn(2 * width);
  int64_t channels = width;
  for (size_t g = 0; g < blocks.size(); ++g) {
    const int64_t out = width << g;
    for (int64_t b = 0; b < blocks[g]; ++b) {
      if (b == 0 && g > 0) {
        n += conv(channels, out, 3) + bn(out) + conv(out, out, 3) + bn(out) +
             conv(channels, out, 1) + bn(out);
      } else {
        n += 2 * (conv(out, out, 3) + bn(out));
      }
      channels = out;
    }
  }
  return n + 2 * channels * classes + classes;
}

TEST(RevNet, ReversibleBlockInverts) {
  for (bool bottleneck : {false, true}) {
    SCOPED_TRACE(bottleneck ? "bottleneck" : "basic");
    torch::manual_seed(0);
    RevBlock block(16, bottleneck);
    block->train();
    torch::Tensor x = torch::randn({8, 32, 10, 10});
    torch::Tensor y = block->forward(x);
    ASSERT_EQ(y.sizes(), x.sizes());
    // y~ = x and y = F(x) + x~.
    EXPECT_TRUE(torch::equal(y.narrow(1, 16, 16), x.narrow(1, 0, 16)));
    torch::Tensor rebuilt = block->inverse(y);
    const double err = max_abs_diff(rebuilt, x);
    std::printf("[          ] %s RevBlock: max |inverse(forward(x)) - x| = %.3g\n",
                bottleneck ? "bottleneck" : "basic", err);
    EXPECT_LT(err, kInverseTolerance);
    // The inverse records no graph, even for an output that requires grad.
    EXPECT_FALSE(block->inverse(y.detach().requires_grad_()).requires_grad());

    // Eval mode: running statistics in both directions.
    block->eval();
    torch::Tensor y_eval = block->forward(x);
    EXPECT_LT(max_abs_diff(block->inverse(y_eval), x), kInverseTolerance);
  }
}

TEST(RevNet, BottleneckBlockHasThreeConvolutionsAroundAnInnerWidth) {
  torch::manual_seed(0);
  RevBlock block(16, /*bottleneck=*/true);
  std::vector<std::string> names;
  for (const auto& item : block->named_parameters()) names.push_back(item.key());
  EXPECT_EQ(names, (std::vector<std::string>{"conv1.weight", "bn1.weight", "bn1.bias",
                                             "conv2.weight", "bn2.weight", "bn2.bias",
                                             "conv3.weight", "bn3.weight", "bn3.bias"}));
  int64_t n = 0;
  for (const auto& p : block->parameters()) n += p.numel();
  EXPECT_EQ(n, 16 * 4 + 2 * 4 + 4 * 4 * 9 + 2 * 4 + 4 * 16 + 2 * 16);  // inner width 16 / 4
}

TEST(RevNet, InvertStageRebuildsTheInputOfEveryReversibleStage) {
  torch::manual_seed(0);
  StagedModel model = make_model(revnet_config("revnet18", 8), {{3, 16, 16}, 10});
  model->train();
  torch::Tensor x = torch::randn({4, 3, 16, 16});
  int64_t checked = 0;
  for (int64_t i = 0; i < model->num_stages(); ++i) {
    torch::Tensor in = x;
    x = model->stage(i)->forward(x);
    if (!is_reversible(model->stage(i))) continue;
    const double err = max_abs_diff(invert_stage(model->stage(i), x), in);
    EXPECT_LT(err, kInverseTolerance) << model->stage_name(i);
    ++checked;
  }
  EXPECT_EQ(checked, 5);

  // A stage of several reversible blocks inverts them last to first.
  torch::nn::Sequential stage(RevBlock(6), RevBlock(6, true), RevBlock(6));
  ASSERT_TRUE(is_reversible(stage));
  torch::Tensor in = torch::randn({5, 12, 7, 7});
  EXPECT_LT(max_abs_diff(invert_stage(stage, stage->forward(in)), in), kInverseTolerance);
}

TEST(RevNet, InverseInTrainingModeUpdatesRunningStatisticsLikeAForward) {
  torch::manual_seed(0);
  RevBlock block(4);
  block->train();
  torch::Tensor y = block->forward(torch::randn({6, 8, 5, 5}));
  std::vector<torch::Tensor> before;
  for (const auto& b : block->buffers()) before.push_back(b.clone());
  block->inverse(y);
  const auto after = block->buffers();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) EXPECT_FALSE(torch::equal(after[i], before[i]));
}

TEST(RevNet, DownsamplingStageIsNotReversible) {
  torch::manual_seed(0);
  RevDownsampleBlock block(8, 16, 2);
  torch::Tensor y = block->forward(torch::randn({3, 16, 9, 9}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 32, 5, 5}));
  torch::nn::Sequential stage(block);
  EXPECT_FALSE(is_reversible(stage));
  torch::nn::Sequential empty;
  EXPECT_FALSE(is_reversible(empty));
  StagedModel model = make_model(revnet_config("revnet18", 4), {{3, 16, 16}, 10});
  for (const std::string name : {"stem", "g2b1", "g3b1", "g4b1", "head"}) {
    for (int64_t i = 0; i < model->num_stages(); ++i)
      if (model->stage_name(i) == name) {
        EXPECT_FALSE(is_reversible(model->stage(i))) << name;
      }
  }
}

TEST(RevNet, RevNet18AndRevNet34LayoutsMatchTheTable) {
  torch::manual_seed(0);
  StagedModel r18 = make_model(revnet_config("revnet18", 4), {{3, 32, 32}, 10});
  EXPECT_EQ(r18->num_stages(), 10);
  EXPECT_EQ(stage_names(r18), (std::vector<std::string>{"stem", "g1b1", "g1b2", "g2b1", "g2b2",
                                                        "g3b1", "g3b2", "g4b1", "g4b2", "head"}));
  EXPECT_EQ(reversible_stages(r18),
            (std::vector<std::string>{"g1b1", "g1b2", "g2b2", "g3b2", "g4b2"}));
  for (int64_t i = 1; i + 1 < r18->num_stages(); ++i) EXPECT_EQ(r18->stage(i)->size(), 1u);

  StagedModel r34 = make_model(revnet_config("revnet34", 4), {{3, 32, 32}, 10});
  EXPECT_EQ(r34->num_stages(), 18);
  EXPECT_EQ(reversible_stages(r34).size(), 13u);
  EXPECT_EQ(r34->stage_name(17), "head");
}

TEST(RevNet, ParameterCountsMatchTheTable) {
  struct Case {
    const char* name;
    std::vector<int64_t> blocks;
    int64_t classes;
    int64_t expected;
  };
  // The PETRA table's 12.2M and 22.3M are for a 1000-class head; CIFAR-10 heads are smaller.
  const std::vector<Case> cases = {{"revnet18", {2, 2, 2, 2}, 10, 11180938},
                                   {"revnet18", {2, 2, 2, 2}, 1000, 12195688},
                                   {"revnet34", {3, 4, 6, 3}, 10, 21289098},
                                   {"revnet34", {3, 4, 6, 3}, 1000, 22303848}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.name) + " " + std::to_string(c.classes));
    torch::manual_seed(0);
    StagedModel model = make_model(revnet_config(c.name, 64), {{3, 32, 32}, c.classes});
    std::printf("[          ] %s, width 64, %lld classes: %lld parameters\n", c.name,
                static_cast<long long>(c.classes),
                static_cast<long long>(model->parameter_count()));
    EXPECT_EQ(revnet_parameters(64, c.blocks, 3, c.classes), c.expected);
    EXPECT_EQ(model->parameter_count(), c.expected);
  }
  EXPECT_NEAR(12195688 / 1e6, 12.2, 0.05);
  EXPECT_NEAR(22303848 / 1e6, 22.3, 0.05);
}

TEST(RevNet, SmallRevNetFollowsBlocksAndWidth) {
  torch::manual_seed(0);
  StagedModel model = make_model(revnet_config("revnet", 16, {2, 1}), {{1, 28, 28}, 10});
  EXPECT_EQ(stage_names(model), (std::vector<std::string>{"stem", "g1b1", "g1b2", "g2b1", "head"}));
  EXPECT_EQ(reversible_stages(model), (std::vector<std::string>{"g1b1", "g1b2"}));
  EXPECT_EQ(model->parameter_count(), revnet_parameters(16, {2, 1}, 1, 10));
  for (const std::vector<int64_t>& blocks :
       std::vector<std::vector<int64_t>>{{2}, {1, 1}, {2, 2}, {1, 1, 1}}) {
    torch::manual_seed(0);
    StagedModel m = make_model(revnet_config("revnet", 16, blocks), {{1, 28, 28}, 10});
    std::string text;
    for (int64_t b : blocks) text += std::to_string(b) + " ";
    std::printf(
        "[          ] revnet width 16 blocks [ %s] on {1, 28, 28}: %lld stages, "
        "%zu reversible, %lld parameters\n",
        text.c_str(), static_cast<long long>(m->num_stages()), reversible_stages(m).size(),
        static_cast<long long>(m->parameter_count()));
    EXPECT_EQ(m->parameter_count(), revnet_parameters(16, blocks, 1, 10));
  }
}

TEST(RevNet, FashionMnistShapedInputFlowsThroughEveryStage) {
  torch::manual_seed(0);
  StagedModel model = make_model(revnet_config("revnet", 16, {2, 2}), {{1, 28, 28}, 10});
  model->train();
  torch::Tensor x = torch::randn({4, 1, 28, 28});
  // Every boundary carries one tensor: the two streams concatenated along the channels.
  const std::vector<std::vector<int64_t>> boundaries = {
      {4, 32, 28, 28}, {4, 32, 28, 28}, {4, 32, 28, 28}, {4, 64, 14, 14}, {4, 64, 14, 14}, {4, 10}};
  ASSERT_EQ(model->num_stages(), static_cast<int64_t>(boundaries.size()));
  for (int64_t i = 0; i < model->num_stages(); ++i) {
    x = model->stage(i)->forward(x);
    EXPECT_EQ(x.sizes(), boundaries[i]) << model->stage_name(i);
  }
  model->eval();
  EXPECT_EQ(model->forward(torch::randn({1, 1, 28, 28})).sizes(), (std::vector<int64_t>{1, 10}));
}

TEST(RevNet, SmallRevNetTrains) {
  torch::manual_seed(0);
  StagedModel model = make_model(revnet_config("revnet", 8, {1, 1}), {{1, 12, 12}, 4});
  model->train();
  torch::Tensor x = torch::randn({16, 1, 12, 12});
  torch::Tensor labels = torch::randint(0, 4, {16}, torch::kLong);
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  double first = 0.0, last = 0.0;
  for (int step = 0; step < 15; ++step) {
    sgd.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), labels);
    loss.backward();
    sgd.step();
    if (step == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  std::printf("[          ] small revnet: loss %.4f -> %.4f in 15 SGD steps\n", first, last);
  EXPECT_LT(last, 0.5 * first);
  for (const auto& p : model->parameters()) EXPECT_TRUE(p.grad().defined());
}

TEST(RevNet, CloneModelCopiesEveryBlock) {
  torch::manual_seed(0);
  StagedModel model = make_model(revnet_config("revnet", 8, {2, 1}), {{1, 12, 12}, 10});
  model->eval();
  std::shared_ptr<StagedModelImpl> copy = model->clone_model();
  ASSERT_EQ(copy->num_stages(), model->num_stages());
  EXPECT_FALSE(copy->is_training());
  for (int64_t i = 0; i < model->num_stages(); ++i) {
    EXPECT_EQ(copy->stage_name(i), model->stage_name(i));
    EXPECT_EQ(is_reversible(copy->stage(i)), is_reversible(model->stage(i)));
  }
  torch::Tensor x = torch::randn({3, 1, 12, 12});
  EXPECT_TRUE(torch::equal(copy->forward(x), model->forward(x)));
  // Deep copy: parameters and buffers are the clone's own.
  const auto mine = model->named_params(), theirs = copy->named_params();
  ASSERT_EQ(mine.size(), theirs.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    EXPECT_EQ(mine[i].first, theirs[i].first);
    EXPECT_FALSE(mine[i].second.is_same(theirs[i].second));
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& p : copy->parameters()) p.add_(1.0);
  }
  EXPECT_FALSE(torch::equal(copy->forward(x), model->forward(x)));
  // The cloned blocks still invert.
  copy->train();
  torch::Tensor in = torch::randn({3, 16, 12, 12});
  EXPECT_LT(max_abs_diff(invert_stage(copy->stage(1), copy->stage(1)->forward(in)), in),
            kInverseTolerance);
}

TEST(RevNet, BadLayoutsAreConfigErrors) {
  EXPECT_THROW(make_model(revnet_config("revnet", 8, {}), {{1, 12, 12}, 10}), ConfigError);
  EXPECT_THROW(make_model(revnet_config("revnet", 8, {2, 0}), {{1, 12, 12}, 10}), ConfigError);
  EXPECT_THROW(make_model(revnet_config("revnet18", 8), {{64}, 10}), ConfigError);
  EXPECT_THROW(make_model(revnet_config("revnet", 0), {{1, 12, 12}, 10}), ConfigError);
  // The presets ignore model.blocks.
  EXPECT_EQ(make_model(revnet_config("revnet18", 4, {}), {{1, 8, 8}, 10})->num_stages(), 10);
}

TEST(RevNet, ModelBlocksIsReadAndRoundTripsThroughTheResolvedConfig) {
  Config cfg = parse_config("[model]\nname = \"revnet\"\nwidth = 16\nblocks = [2, 1]\n", "test");
  EXPECT_EQ(cfg.model.name, "revnet");
  EXPECT_EQ(cfg.model.width, 16);
  EXPECT_EQ(cfg.model.blocks, (std::vector<int64_t>{2, 1}));
  Config again = parse_config(cfg.resolved_toml(), "resolved");
  EXPECT_EQ(again.model.name, "revnet");
  EXPECT_EQ(again.model.width, 16);
  EXPECT_EQ(again.model.blocks, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(parse_config("", "empty").model.blocks, (std::vector<int64_t>{2, 2}));
  EXPECT_THROW(parse_config("[model]\nname = \"revnet\"\nblocks = []\n", "test"), ConfigError);
  EXPECT_THROW(parse_config("[model]\nname = \"revnet\"\nblocks = [1, 0]\n", "test"), ConfigError);
  for (const std::string name : {"revnet18", "revnet34", "revnet"})
    EXPECT_NO_THROW(parse_config("[model]\nname = \"" + name + "\"\n", "test")) << name;
}

}  // namespace
}  // namespace desync
