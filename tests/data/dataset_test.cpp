// Tests of load_dataset(): dispatch by name, limits, default paths and the error messages.
#include "desync/data/dataset.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "desync/core/error.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::TempDir;
using testing::write_file;

DataConfig synthetic_config() {
  DataConfig cfg;
  cfg.dataset = "synthetic";
  cfg.synthetic_train = 200;
  cfg.synthetic_test = 60;
  cfg.synthetic_classes = 4;
  cfg.synthetic_shape = {3, 5};
  return cfg;
}

TEST(DatasetTest, LoadsSyntheticFromConfigWithSeed) {
  const DatasetSplits s = load_dataset(synthetic_config(), 9);
  const DatasetSplits direct = make_synthetic(200, 60, 4, {3, 5}, 9);
  EXPECT_TRUE(torch::equal(s.train.inputs, direct.train.inputs));
  EXPECT_TRUE(torch::equal(s.test.targets, direct.test.targets));
  EXPECT_FALSE(torch::equal(load_dataset(synthetic_config(), 10).train.inputs, s.train.inputs));
}

TEST(DatasetTest, LimitsKeepTheFirstExamples) {
  DataConfig cfg = synthetic_config();
  cfg.train_limit = 50;
  cfg.test_limit = 7;
  const DatasetSplits full = load_dataset(synthetic_config(), 1);
  const DatasetSplits s = load_dataset(cfg, 1);
  EXPECT_EQ(s.train.size(), 50);
  EXPECT_EQ(s.test.size(), 7);
  EXPECT_EQ(s.train.targets.size(0), 50);
  EXPECT_TRUE(torch::equal(s.train.inputs, full.train.inputs.narrow(0, 0, 50)));
  EXPECT_TRUE(torch::equal(s.test.targets, full.test.targets.narrow(0, 0, 7)));
  // A limit at or above the size keeps everything.
  cfg.train_limit = 1000;
  EXPECT_EQ(load_dataset(cfg, 1).train.size(), 200);
}

TEST(DatasetTest, LimitsApplyToText) {
  TempDir dir;
  std::string text;
  for (int d = 0; d < 10; ++d) text += std::string(99, static_cast<char>('a' + d)) + "\n\n";
  write_file(dir.file("t.txt"), text);
  DataConfig cfg;
  cfg.dataset = "text";
  cfg.path = dir.file("t.txt");
  cfg.cache_dir = dir.file("cache");
  cfg.tokenizer = "bytes";
  cfg.seq_len = 8;
  cfg.train_limit = 5;
  const DatasetSplits s = load_dataset(cfg, 0);
  EXPECT_EQ(s.train.size(), 5);
  EXPECT_EQ(s.train.example_shape(), (std::vector<int64_t>{8}));
  EXPECT_EQ(s.test.size(), (100 - 1) / 8);  // one document of 99 bytes and its end token
}

TEST(DatasetTest, UnknownNameListsTheChoices) {
  DataConfig cfg;
  cfg.dataset = "imagenet";
  try {
    load_dataset(cfg, 0);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("imagenet"), std::string::npos) << msg;
    for (const char* choice : {"fashion-mnist", "mnist", "cifar10", "text", "gcide", "synthetic"}) {
      EXPECT_NE(msg.find(choice), std::string::npos) << msg;
    }
  }
}

TEST(DatasetTest, MissingDirectorySaysHowToInstallFashionMnist) {
  TempDir dir;
  DataConfig cfg;
  cfg.dataset = "fashion-mnist";
  cfg.path = dir.file("nowhere");
  try {
    load_dataset(cfg, 0);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir.file("nowhere")), std::string::npos) << msg;
    EXPECT_NE(msg.find("apt-get install dataset-fashion-mnist"), std::string::npos) << msg;
    EXPECT_NE(msg.find("scripts/install-deps"), std::string::npos) << msg;
  }
  cfg.dataset = "cifar10";
  try {
    load_dataset(cfg, 0);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("nowhere")), std::string::npos) << e.what();
  }
  cfg.dataset = "gcide";
  try {
    load_dataset(cfg, 0);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir.file("nowhere")), std::string::npos) << msg;
    EXPECT_NE(msg.find("apt-get install dict-gcide"), std::string::npos) << msg;
    EXPECT_NE(msg.find("scripts/install-deps"), std::string::npos) << msg;
  }
}

TEST(DatasetTest, TextNeedsAPath) {
  DataConfig cfg;
  cfg.dataset = "text";
  EXPECT_THROW(load_dataset(cfg, 0), ConfigError);
}

TEST(DatasetTest, DefaultPaths) {
  EXPECT_EQ(default_data_path("fashion-mnist"), "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(default_data_path("mnist"), "/usr/share/datasets/mnist");
  EXPECT_EQ(default_data_path("cifar10"), "/usr/share/datasets/cifar10");
  EXPECT_EQ(default_data_path("gcide"), "/usr/share/dictd");
  EXPECT_EQ(default_data_path("text"), "");
  EXPECT_EQ(default_data_path("synthetic"), "");
}

TEST(DatasetTest, ExampleShapeAndSize) {
  Dataset d;
  EXPECT_EQ(d.size(), 0);
  EXPECT_TRUE(d.example_shape().empty());
  d.inputs = torch::zeros({5, 3, 4, 4}, torch::kUInt8);
  EXPECT_EQ(d.size(), 5);
  EXPECT_EQ(d.example_shape(), (std::vector<int64_t>{3, 4, 4}));
  d.kind = DataKind::kText;
  d.inputs = torch::zeros({6, 33}, torch::kInt16);
  EXPECT_EQ(d.example_shape(), (std::vector<int64_t>{32}));
}

}  // namespace
}  // namespace desync
