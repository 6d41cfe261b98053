// Contrastive local learning across real processes (Gloo): three blocks on two worker processes
// train what one process holding all three trains, the last process sends nothing while
// training, and every evaluation logs each block's effective rank (and the last one its
// linear-probe accuracy).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

// An MLP of four stages (fc1, fc2, fc3 | head): an encoder of three stages, one per block.
const char* kJob = R"(
[run]
name = "contrastive_local"
steps = 60
log_every = 20
threads = 1
comm_timeout = 60
[data]
dataset = "synthetic"
synthetic_train = 2048
synthetic_test = 512
synthetic_shape = [32]
synthetic_classes = 4
batch_size = 16
[model]
name = "mlp"
hidden = [64, 64, 32]
dtype = "float64"
[optimizer]
lr = 0.05
momentum = 0.9
[algorithm]
name = "contrastive_local"
accumulation = 2
[algorithm.contrastive_local]
blocks = 3
projection_width = 32
projection_dim = 16
subsample_ratio = 0.75
probe_examples = 256
probe_steps = 100
[eval]
every = 30
[checkpoint]
every = 0
)";

nlohmann::json train(testing::TempDir& dir, const std::string& name, int workers) {
  testing::write_file(dir.file("job.toml"), kJob);
  auto r = testing::run_command(kDesync + " train " + dir.file("job.toml") + " --quiet --workers " +
                                std::to_string(workers) + " --out " + dir.file(name) + " 2>&1");
  EXPECT_EQ(r.status, 0) << r.output;
  return nlohmann::json::parse(testing::read_file(dir.file(name + "/summary.json")), nullptr,
                               false);
}

TEST(ContrastiveLocalProcesses, TwoProcessesTrainWhatOneTrainsAndEveryBlockIsProbed) {
  testing::TempDir dir;
  nlohmann::json one = train(dir, "one", 1);
  nlohmann::json two = train(dir, "two", 2);
  ASSERT_FALSE(one.is_discarded());
  ASSERT_FALSE(two.is_discarded());
  EXPECT_NEAR(two["test_loss"].get<double>(), one["test_loss"].get<double>(), 1e-6);
  EXPECT_EQ(two["test_accuracy"], one["test_accuracy"]);
  EXPECT_NEAR(two["train_loss"].get<double>(), one["train_loss"].get<double>(), 1e-6);
  for (int k = 1; k <= 3; ++k)
    for (const std::string name : {"erank_", "probe_accuracy_"}) {
      const std::string key = name + std::to_string(k);
      ASSERT_TRUE(two["eval_metrics"].contains(key)) << key;
      EXPECT_NEAR(two["eval_metrics"][key].get<double>(), one["eval_metrics"][key].get<double>(),
                  1e-6)
          << key;
    }
  EXPECT_GE(two["eval_metrics"]["erank_1"].get<double>(), 1.0);
  EXPECT_FALSE(two["eval_metrics"].contains("erank_4"));
  // Forward only: the second process holds the last blocks and sends only the Trainer's figures.
  EXPECT_GT(two["bytes_sent"][0].get<double>(), 1e5);
  EXPECT_LT(two["bytes_sent"][1].get<double>(), 1000.0);
  // Every evaluation's record carries the effective ranks; the first has no probe accuracy.
  const std::string metrics = testing::read_file(dir.file("two/metrics.jsonl"));
  const size_t first = metrics.find("\"erank_3\"");
  ASSERT_NE(first, std::string::npos);
  EXPECT_NE(metrics.find("\"erank_3\"", first + 1), std::string::npos);
}

}  // namespace
}  // namespace desync
