// StagedModel and make_model: stage layout, forward over stage ranges, parameter bookkeeping,
// output shapes, deep copies and the ResNet-18 parameter count derived by hand.
#include "desync/models/staged_model.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ostream>
#include <string>
#include <vector>

#include "algorithms/fake_run.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::tiny_model;

ModelConfig model_config(const std::string& name) {
  ModelConfig cfg;
  cfg.name = name;
  if (name == "resnet18") cfg.width = 8;  // small enough for fast tests
  return cfg;
}

std::vector<std::string> stage_names(StagedModel& model) {
  std::vector<std::string> names;
  for (int64_t i = 0; i < model->num_stages(); ++i) names.push_back(model->stage_name(i));
  return names;
}

int64_t sum_numel(const std::vector<torch::Tensor>& tensors) {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

TEST(StagedModelTest, MlpHasOneStagePerHiddenLayerAndAHead) {
  torch::manual_seed(0);
  ModelConfig cfg = model_config("mlp");
  cfg.hidden = {32, 16, 8};
  StagedModel model = make_model(cfg, {{1, 28, 28}, 10});
  EXPECT_EQ(stage_names(model), (std::vector<std::string>{"fc1", "fc2", "fc3", "head"}));
  std::vector<std::string> names;
  for (const auto& [name, p] : model->named_params()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.1.weight", "fc1.1.bias", "fc2.0.weight",
                                             "fc2.0.bias", "fc3.0.weight", "fc3.0.bias",
                                             "head.0.weight", "head.0.bias"}));
  EXPECT_EQ(model->named_params()[0].second.sizes(), (std::vector<int64_t>{32, 784}));
}

TEST(StagedModelTest, MlpWithoutHiddenLayersIsLinear) {
  torch::manual_seed(0);
  ModelConfig cfg = model_config("mlp");
  cfg.hidden = {};
  StagedModel model = make_model(cfg, {{2, 3, 4}, 5});
  EXPECT_EQ(stage_names(model), (std::vector<std::string>{"head"}));
  EXPECT_EQ(model->parameter_count(), 24 * 5 + 5);
  EXPECT_EQ(model->forward(torch::randn({7, 2, 3, 4})).sizes(), (std::vector<int64_t>{7, 5}));
}

TEST(StagedModelTest, CnnStagesAndHandCountedParameters) {
  torch::manual_seed(0);
  StagedModel model = make_model(model_config("cnn"), {{1, 28, 28}, 10});
  EXPECT_EQ(stage_names(model), (std::vector<std::string>{"block1", "block2", "head"}));
  // conv 1->32 (3x3, no bias: BatchNorm follows) + BN(32), conv 32->64 + BN(64),
  // head 64*7*7 -> 128 (no bias: BatchNorm follows) + BN(128) -> 10.
  const int64_t expected =
      1 * 32 * 9 + 2 * 32 + 32 * 64 * 9 + 2 * 64 + 64 * 7 * 7 * 128 + 2 * 128 + (128 * 10 + 10);
  EXPECT_EQ(model->parameter_count(), expected);
}

TEST(StagedModelTest, CnnWithoutBatchNormHasConvBiasesAndNoBuffers) {
  torch::manual_seed(0);
  ModelConfig cfg = model_config("cnn");
  cfg.batch_norm = false;
  cfg.channels = {4};
  StagedModel model = make_model(cfg, {{3, 8, 8}, 10});
  EXPECT_TRUE(model->named_bufs().empty());
  EXPECT_EQ(model->parameter_count(), (3 * 4 * 9 + 4) + (4 * 4 * 4 * 128 + 128) + (128 * 10 + 10));
}

TEST(StagedModelTest, BatchNormStatisticsAreNamedBuffers) {
  torch::manual_seed(0);
  StagedModel model = make_model(model_config("cnn"), {{1, 28, 28}, 10});
  std::vector<std::string> names;
  for (const auto& [name, b] : model->named_bufs()) names.push_back(name);
  EXPECT_EQ(names,
            (std::vector<std::string>{
                "block1.1.running_mean", "block1.1.running_var", "block1.1.num_batches_tracked",
                "block2.1.running_mean", "block2.1.running_var", "block2.1.num_batches_tracked",
                "head.2.running_mean", "head.2.running_var", "head.2.num_batches_tracked"}));
}

TEST(StagedModelTest, ResNet18Stages) {
  torch::manual_seed(0);
  StagedModel model = make_model(model_config("resnet18"), {{3, 32, 32}, 10});
  EXPECT_EQ(stage_names(model),
            (std::vector<std::string>{"stem", "layer1", "layer2", "layer3", "layer4", "head"}));
  for (int64_t i = 1; i <= 4; ++i) EXPECT_EQ(model->stage(i)->size(), 2u);
}

// Parameters of a CIFAR ResNet-18, derived from the architecture by hand.
int64_t resnet18_parameters(int64_t width, int64_t in_channels, int64_t classes) {
  auto conv = [](int64_t in, int64_t out, int64_t k) { return in * out * k * k; };
  auto bn = [](int64_t c) { return 2 * c; };
  auto block = [&](int64_t in, int64_t out, bool project) {
    int64_t n = conv(in, out, 3) + bn(out) + conv(out, out, 3) + bn(out);
    if (project) n += conv(in, out, 1) + bn(out);
    return n;
  };
  int64_t n = conv(in_channels, width, 3) + bn(width);
  int64_t channels = width;
  for (int64_t layer = 0; layer < 4; ++layer) {
    const int64_t out = width << layer;
    n += block(channels, out, channels != out) + block(out, out, false);
    channels = out;
  }
  return n + channels * classes + classes;
}

TEST(StagedModelTest, ResNet18Width64HasAbout11_17MParameters) {
  torch::manual_seed(0);
  ModelConfig cfg = model_config("resnet18");
  cfg.width = 64;
  StagedModel model = make_model(cfg, {{3, 32, 32}, 10});
  EXPECT_EQ(resnet18_parameters(64, 3, 10), 11173962);  // the published CIFAR ResNet-18 size
  EXPECT_EQ(model->parameter_count(), resnet18_parameters(64, 3, 10));
}

TEST(StagedModelTest, ResNet18ParameterCountFollowsWidthAndClasses) {
  torch::manual_seed(0);
  ModelConfig cfg = model_config("resnet18");
  cfg.width = 4;
  StagedModel model = make_model(cfg, {{1, 12, 12}, 7});
  EXPECT_EQ(model->parameter_count(), resnet18_parameters(4, 1, 7));
}

TEST(StagedModelTest, ParameterCountIsSumOfNumels) {
  for (const std::string name : {"mlp", "cnn", "resnet18"}) {
    SCOPED_TRACE(name);
    torch::manual_seed(0);
    StagedModel model = make_model(model_config(name), {{3, 16, 16}, 10});
    int64_t named = 0;
    for (const auto& [n, p] : model->named_params()) named += p.numel();
    EXPECT_GT(named, 0);
    EXPECT_EQ(model->parameter_count(), named);
    EXPECT_EQ(model->parameter_count(), sum_numel(model->parameters()));
    EXPECT_EQ(model->parameter_count(), sum_numel(model->parameters_of(0, model->num_stages())));
  }
}

TEST(StagedModelTest, ParametersOfConcatenatesStagesInRegistrationOrder) {
  torch::manual_seed(0);
  StagedModel model = make_model(model_config("resnet18"), {{3, 16, 16}, 10});
  std::vector<torch::Tensor> by_stage;
  for (int64_t i = 0; i < model->num_stages(); ++i) {
    for (const auto& p : model->parameters_of(i, i + 1)) by_stage.push_back(p);
  }
  const auto named = model->named_params();
  ASSERT_EQ(by_stage.size(), named.size());
  for (size_t i = 0; i < named.size(); ++i) EXPECT_TRUE(by_stage[i].is_same(named[i].second));
  const auto middle = model->parameters_of(1, 3);
  EXPECT_EQ(sum_numel(middle),
            sum_numel(model->parameters_of(1, 2)) + sum_numel(model->parameters_of(2, 3)));
  EXPECT_TRUE(model->parameters_of(2, 2).empty());
}

TEST(StagedModelTest, ForwardRangeSplitAtEveryStageEqualsForward) {
  for (const std::string name : {"mlp", "cnn", "resnet18"}) {
    SCOPED_TRACE(name);
    torch::manual_seed(1);
    StagedModel model = make_model(model_config(name), {{3, 16, 16}, 10});
    model->eval();
    torch::Tensor x = torch::randn({4, 3, 16, 16});
    torch::Tensor full = model->forward(x);
    for (int64_t k = 0; k <= model->num_stages(); ++k) {
      torch::Tensor mid = model->forward_range(x, 0, k);
      torch::Tensor out = model->forward_range(mid, k, model->num_stages());
      EXPECT_TRUE(torch::equal(out, full)) << "split at " << k;
    }
  }
}

TEST(StagedModelTest, ForwardRangeRejectsRangesOutsideTheModel) {
  torch::manual_seed(0);
  StagedModel model = make_model(model_config("mlp"), {{4}, 3});
  torch::Tensor x = torch::randn({2, 4});
  EXPECT_THROW(model->forward_range(x, 0, model->num_stages() + 1), c10::Error);
  EXPECT_THROW(model->forward_range(x, 2, 1), c10::Error);
}

struct ShapeCase {
  std::string model;
  std::vector<int64_t> example;
  int64_t classes;
};

void PrintTo(const ShapeCase& c, std::ostream* os) {
  *os << c.model << " [";
  for (int64_t d : c.example) *os << ' ' << d;
  *os << " ] -> " << c.classes;
}

class ModelOutputShapeTest : public ::testing::TestWithParam<ShapeCase> {};

TEST_P(ModelOutputShapeTest, LogitsAreBatchByClasses) {
  const ShapeCase& c = GetParam();
  torch::manual_seed(0);
  StagedModel model = make_model(model_config(c.model), {c.example, c.classes});
  std::vector<int64_t> batch_shape = {3};
  batch_shape.insert(batch_shape.end(), c.example.begin(), c.example.end());
  torch::Tensor y = model->forward(torch::randn(batch_shape));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, c.classes}));
  EXPECT_EQ(y.scalar_type(), torch::kFloat32);
}

INSTANTIATE_TEST_SUITE_P(
    Models, ModelOutputShapeTest,
    ::testing::Values(ShapeCase{"mlp", {1, 28, 28}, 10}, ShapeCase{"mlp", {16}, 4},
                      ShapeCase{"cnn", {1, 28, 28}, 10}, ShapeCase{"cnn", {3, 32, 32}, 10},
                      ShapeCase{"cnn", {2, 13, 9}, 5}, ShapeCase{"resnet18", {3, 32, 32}, 10},
                      ShapeCase{"resnet18", {1, 28, 28}, 100},
                      ShapeCase{"resnet18", {3, 9, 7}, 2}));

TEST(StagedModelTest, SameSeedGivesSameInitialisation) {
  torch::manual_seed(42);
  StagedModel a = make_model(model_config("cnn"), {{1, 28, 28}, 10});
  torch::manual_seed(42);
  StagedModel b = make_model(model_config("cnn"), {{1, 28, 28}, 10});
  torch::manual_seed(43);
  StagedModel c = make_model(model_config("cnn"), {{1, 28, 28}, 10});
  const auto pa = a->parameters(), pb = b->parameters(), pc = c->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i]));
  EXPECT_FALSE(torch::equal(pa[0], pc[0]));
}

TEST(StagedModelTest, ResNetStageCanBeCloned) {
  torch::manual_seed(0);
  StagedModel model = make_model(model_config("resnet18"), {{3, 16, 16}, 10});
  model->eval();
  auto copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(model->stage(2)->clone());
  ASSERT_TRUE(copy);
  copy->eval();
  torch::Tensor x = torch::randn({2, 8, 16, 16});
  EXPECT_TRUE(torch::equal(copy->forward(x), model->stage(2)->forward(x)));
  // Deep copy: changing the clone leaves the original alone.
  torch::NoGradGuard no_grad;
  copy->parameters()[0].add_(1.0);
  EXPECT_FALSE(torch::equal(copy->parameters()[0], model->stage(2)->parameters()[0]));
}

TEST(StagedModel, CloneIsADeepCopy) {
  StagedModel model = tiny_model(/*batch_norm=*/true);
  StagedModel copy = model->clone_model();
  ASSERT_EQ(copy->num_stages(), model->num_stages());
  EXPECT_TRUE(torch::equal(flat_params(copy), flat_params(model)));
  torch::Tensor x = torch::randn({3, 1, 8, 8});
  model->eval();
  copy->eval();
  EXPECT_TRUE(torch::allclose(copy->forward(x), model->forward(x)));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : copy->parameters()) p.add_(1.0);
  }
  EXPECT_FALSE(torch::equal(flat_params(copy), flat_params(model)));
  ASSERT_EQ(copy->named_bufs().size(), model->named_bufs().size());
  EXPECT_NE(copy->named_bufs()[0].second.data_ptr(), model->named_bufs()[0].second.data_ptr());
}

TEST(StagedModelTest, UnknownModelNameIsAConfigErrorListingChoices) {
  ModelConfig cfg;
  cfg.name = "transformer";
  try {
    make_model(cfg, {{1, 28, 28}, 10});
    FAIL() << "no exception";
  } catch (const ConfigError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("transformer"), std::string::npos) << message;
    EXPECT_NE(message.find("mlp, cnn, resnet18"), std::string::npos) << message;
  }
}

TEST(StagedModelTest, ModelsThatDoNotFitTheInputAreConfigErrors) {
  ModelConfig cnn = model_config("cnn");
  cnn.channels = {8, 8, 8};
  EXPECT_THROW(make_model(cnn, {{1, 4, 4}, 10}), ConfigError);  // 4 -> 2 -> 1 -> 0
  EXPECT_NO_THROW(make_model(cnn, {{1, 8, 8}, 10}));
  EXPECT_THROW(make_model(model_config("cnn"), {{784}, 10}), ConfigError);
  EXPECT_THROW(make_model(model_config("resnet18"), {{64}, 10}), ConfigError);
  ModelConfig mlp = model_config("mlp");
  mlp.hidden = {16, 0};
  EXPECT_THROW(make_model(mlp, {{4}, 10}), ConfigError);
  EXPECT_THROW(make_model(model_config("mlp"), {{4}, 0}), ConfigError);
}

}  // namespace
}  // namespace desync
