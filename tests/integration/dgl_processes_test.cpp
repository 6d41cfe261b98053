// Decoupled greedy learning across real processes (Gloo): four blocks on two worker processes
// train what one process holding all four trains (spec §1 test 3), the last process sends
// nothing while training, and every evaluation scores each auxiliary head.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

// An MLP of four stages (fc1, fc2, fc3, head), one per block.
const char* kJob = R"(
[run]
name = "dgl"
steps = 120
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
name = "dgl"
accumulation = 2
[algorithm.dgl]
blocks = 4
aux = "mlp"
aux_hidden = 32
[eval]
every = 60
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

TEST(DglProcesses, TwoProcessesTrainWhatOneTrainsAndEveryHeadIsScored) {
  testing::TempDir dir;
  nlohmann::json one = train(dir, "one", 1);
  nlohmann::json two = train(dir, "two", 2);
  ASSERT_FALSE(one.is_discarded());
  ASSERT_FALSE(two.is_discarded());
  EXPECT_NEAR(two["test_loss"].get<double>(), one["test_loss"].get<double>(), 1e-6);
  EXPECT_EQ(two["test_accuracy"], one["test_accuracy"]);
  // The training loss logged is the model's (the last block's), not a mix of the heads'.
  EXPECT_NEAR(two["train_loss"].get<double>(), one["train_loss"].get<double>(), 1e-6);
  for (int k = 1; k <= 3; ++k) {  // blocks 1..3 have auxiliary heads; block 4 the model's
    const std::string acc = "aux_accuracy_" + std::to_string(k);
    ASSERT_TRUE(two["eval_metrics"].contains(acc)) << acc;
    EXPECT_NEAR(two["eval_metrics"][acc].get<double>(), one["eval_metrics"][acc].get<double>(),
                1e-9)
        << acc;
  }
  // The first head, on the first block alone, has learned (chance is 0.25).
  EXPECT_GT(two["eval_metrics"]["aux_accuracy_1"].get<double>(), 0.4);
  EXPECT_FALSE(two["eval_metrics"].contains("aux_accuracy_4"));
  // Forward only: the second process holds the last blocks and sends no activations back, only
  // the Trainer's logged figures (48 bytes a log).
  EXPECT_GT(two["bytes_sent"][0].get<double>(), 1e6);
  EXPECT_LT(two["bytes_sent"][1].get<double>(), 1000.0);
  // The eval records of metrics.jsonl carry the heads too.
  const std::string metrics = testing::read_file(dir.file("two/metrics.jsonl"));
  EXPECT_NE(metrics.find("\"aux_accuracy_3\""), std::string::npos);
}

}  // namespace
}  // namespace desync
