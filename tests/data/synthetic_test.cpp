// Tests of the synthetic teacher-labelled dataset.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "desync/core/error.h"
#include "desync/data/dataset.h"

namespace desync {
namespace {

TEST(SyntheticTest, ShapesTypesAndLabelRange) {
  const DatasetSplits s = make_synthetic(500, 200, 7, {2, 3, 4}, 11);
  EXPECT_EQ(s.train.kind, DataKind::kFeatures);
  ASSERT_EQ(s.train.inputs.sizes(), (std::vector<int64_t>{500, 2, 3, 4}));
  ASSERT_EQ(s.test.inputs.sizes(), (std::vector<int64_t>{200, 2, 3, 4}));
  EXPECT_EQ(s.train.inputs.scalar_type(), torch::kFloat);
  EXPECT_EQ(s.train.targets.scalar_type(), torch::kLong);
  EXPECT_EQ(s.train.num_classes, 7);
  EXPECT_EQ(s.train.example_shape(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_GE(s.train.targets.min().item<int64_t>(), 0);
  EXPECT_LT(s.train.targets.max().item<int64_t>(), 7);
  // Standard Gaussian inputs.
  EXPECT_NEAR(s.train.inputs.mean().item<double>(), 0.0, 0.05);
  EXPECT_NEAR(s.train.inputs.std().item<double>(), 1.0, 0.05);
}

TEST(SyntheticTest, SameSeedSameDataDifferentSeedDifferentData) {
  const DatasetSplits a = make_synthetic(300, 100, 10, {1, 8, 8}, 5);
  const DatasetSplits b = make_synthetic(300, 100, 10, {1, 8, 8}, 5);
  const DatasetSplits c = make_synthetic(300, 100, 10, {1, 8, 8}, 6);
  EXPECT_TRUE(torch::equal(a.train.inputs, b.train.inputs));
  EXPECT_TRUE(torch::equal(a.train.targets, b.train.targets));
  EXPECT_TRUE(torch::equal(a.test.inputs, b.test.inputs));
  EXPECT_TRUE(torch::equal(a.test.targets, b.test.targets));
  EXPECT_FALSE(torch::equal(a.train.inputs, c.train.inputs));
  EXPECT_FALSE(torch::equal(a.train.targets, c.train.targets));
  // Train and test are different draws.
  EXPECT_FALSE(torch::equal(a.train.inputs.narrow(0, 0, 100), a.test.inputs));
}

TEST(SyntheticTest, TestSplitDoesNotDependOnTrainSize) {
  const DatasetSplits a = make_synthetic(100, 50, 10, {16}, 3);
  const DatasetSplits b = make_synthetic(400, 50, 10, {16}, 3);
  EXPECT_TRUE(torch::equal(a.test.inputs, b.test.inputs));
  EXPECT_TRUE(torch::equal(a.test.targets, b.test.targets));
  EXPECT_TRUE(torch::equal(a.train.inputs, b.train.inputs.narrow(0, 0, 100)));
}

TEST(SyntheticTest, ClassesAreRoughlyBalanced) {
  const DatasetSplits s = make_synthetic(8192, 10, 10, {1, 8, 8}, 0);
  const torch::Tensor counts = torch::bincount(s.train.targets, {}, 10);
  // Chance share is 10%: every class takes more than 4% and none more than 20%.
  EXPECT_GT(counts.min().item<int64_t>(), 8192 / 25) << counts;
  EXPECT_LT(counts.max().item<int64_t>(), 8192 / 5) << counts;
}

TEST(SyntheticTest, LabelsAreLearnableFromInputs) {
  torch::manual_seed(0);
  const DatasetSplits s = make_synthetic(1024, 1024, 10, {1, 8, 8}, 1);
  // A linear student (logistic regression) is enough to show the labels follow the inputs.
  torch::nn::Sequential net(torch::nn::Flatten(), torch::nn::Linear(64, 10));
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < 100; ++step) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(s.train.inputs), s.train.targets).backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  const double accuracy = (net->forward(s.test.inputs).argmax(1) == s.test.targets)
                              .to(torch::kDouble)
                              .mean()
                              .item<double>();
  // Chance is 10%; a linear student reaches about 65% on held-out data.
  EXPECT_GT(accuracy, 0.5);
}

TEST(SyntheticTest, RejectsBadArguments) {
  EXPECT_THROW(make_synthetic(0, 10, 10, {4}, 0), ConfigError);
  EXPECT_THROW(make_synthetic(10, 10, 1, {4}, 0), ConfigError);
  EXPECT_THROW(make_synthetic(10, 10, 10, {}, 0), ConfigError);
  EXPECT_THROW(make_synthetic(10, 10, 10, {4, 0}, 0), ConfigError);
}

}  // namespace
}  // namespace desync
