#include "desync/train/trainer.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "desync/core/checkpoint.h"
#include "desync/core/error.h"
#include "desync/report/metrics.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::train_losses;

// A small, fast, learnable job: synthetic 10-class data, a two-layer MLP.
Config tiny_job(const std::string& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> overrides = {"data.dataset=\"synthetic\"",
                                        "data.synthetic_train=2048",
                                        "data.synthetic_test=512",
                                        "data.synthetic_shape=[16]",
                                        "data.batch_size=32",
                                        "model.name=\"mlp\"",
                                        "model.hidden=[64]",
                                        "optimizer.lr=0.05",
                                        "optimizer.momentum=0.9",
                                        "run.steps=40",
                                        "run.log_every=1",
                                        "run.out=\"" + out + "\""};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return parse_config("", "test.toml", overrides);
}

nlohmann::json train(const Config& cfg, bool resume = false) {
  SoloCommunicator comm;
  TrainOptions opts;
  opts.resume = resume;
  opts.show_progress = false;
  return Trainer(cfg, comm, opts).run();
}

TEST(Trainer, LearnsTheSyntheticTask) {
  testing::TempDir dir;
  nlohmann::json s = train(tiny_job(dir.path(), {"run.steps=150"}));
  EXPECT_GT(s["test_accuracy"].get<double>(), 0.6);  // chance is 0.1
  std::vector<double> losses = train_losses(dir.path());
  ASSERT_EQ(losses.size(), 150u);
  EXPECT_LT(losses.back(), 0.6 * losses.front());
}

TEST(Trainer, WritesRunDirectory) {
  testing::TempDir dir;
  nlohmann::json s = train(tiny_job(dir.path()));
  for (const char* f : {"config.toml", "metrics.jsonl", "summary.json"})
    EXPECT_TRUE(std::filesystem::exists(dir.file(f))) << f;
  for (const char* k :
       {"algorithm", "model", "dataset", "workers", "steps", "samples", "test_accuracy",
        "test_loss", "train_loss", "wall_seconds", "samples_per_second", "peak_rss_bytes",
        "bytes_sent", "bytes_received", "seed", "parameters"})
    EXPECT_TRUE(s.contains(k)) << k;
  EXPECT_EQ(s["steps"], 40);
  EXPECT_EQ(s["samples"], 40 * 32);
  EXPECT_EQ(s["bytes_sent"], nlohmann::json::array({0}));
  EXPECT_EQ(s["parameters"], 16 * 64 + 64 + 64 * 10 + 10);
  EXPECT_GT(s["peak_rss_bytes"][0].get<int64_t>(), 0);
}

TEST(Trainer, EvalLimitAppliesToPeriodicEvaluationsAndFinalFullToTheLast) {
  for (bool final_full : {false, true}) {
    testing::TempDir dir;
    nlohmann::json s = train(
        tiny_job(dir.path(), {"eval.every=10", "eval.limit=100",
                              std::string("eval.final_full=") + (final_full ? "true" : "false")}));
    std::vector<int64_t> examples;
    for (const auto& r : read_metrics(dir.file("metrics.jsonl")))
      if (r["type"] == "eval") examples.push_back(r["test_examples"].get<int64_t>());
    const int64_t last = final_full ? 512 : 100;
    EXPECT_EQ(examples, (std::vector<int64_t>{100, 100, 100, last})) << final_full;
    EXPECT_EQ(s["test_examples"], last) << final_full;
  }
}

TEST(Trainer, SameSeedSameLosses) {
  testing::TempDir a, b;
  train(tiny_job(a.path()));
  train(tiny_job(b.path()));
  EXPECT_EQ(train_losses(a.path()), train_losses(b.path()));
}

TEST(Trainer, DifferentSeedDifferentLosses) {
  testing::TempDir a, b;
  train(tiny_job(a.path()));
  train(tiny_job(b.path(), {"run.seed=1"}));
  EXPECT_NE(train_losses(a.path()), train_losses(b.path()));
}

TEST(Trainer, ResumeIsBitExact) {
  testing::TempDir full, part;
  nlohmann::json ref = train(tiny_job(full.path(), {"checkpoint.enabled=false"}));

  // Run to the end with a checkpoint at step 16, then forget everything after it.
  train(tiny_job(part.path(), {"checkpoint.every=16", "checkpoint.keep=5"}));
  CheckpointStore store(part.path() + "/checkpoints", 0, 1);
  for (int64_t s : store.steps_on_disk())
    if (s > 16) std::filesystem::remove_all(store.step_dir(s));
  nlohmann::json resumed = train(tiny_job(part.path(), {"checkpoint.every=16"}), true);

  EXPECT_EQ(train_losses(full.path()), train_losses(part.path()));
  EXPECT_EQ(ref["test_loss"], resumed["test_loss"]);
  EXPECT_EQ(ref["samples"], resumed["samples"]);
}

TEST(Trainer, ResumeSkipsCorruptCheckpoint) {
  testing::TempDir full, part;
  train(tiny_job(full.path(), {"checkpoint.enabled=false"}));
  train(tiny_job(part.path(), {"checkpoint.every=8", "checkpoint.keep=10"}));
  CheckpointStore store(part.path() + "/checkpoints", 0, 1);
  for (int64_t s : store.steps_on_disk())
    if (s > 24) std::filesystem::remove_all(store.step_dir(s));
  // Damage the newest (step 24): the run must continue from step 16 and still match.
  testing::write_file(store.archive_path(24), "garbage");
  train(tiny_job(part.path(), {"checkpoint.every=8"}), true);
  EXPECT_EQ(train_losses(full.path()), train_losses(part.path()));
}

TEST(Trainer, ResumeWithoutCheckpointFails) {
  testing::TempDir dir;
  EXPECT_THROW(train(tiny_job(dir.path()), true), CheckpointError);
}

TEST(Trainer, AccumulationEqualsLargerBatch) {
  // 4 micro-batches of 8 accumulated = one batch of 32 (same examples, same order).
  testing::TempDir a, b;
  nlohmann::json sa =
      train(tiny_job(a.path(), {"data.batch_size=8", "algorithm.accumulation=4", "run.steps=20"}));
  nlohmann::json sb = train(tiny_job(b.path(), {"data.batch_size=32", "run.steps=20"}));
  std::vector<double> la = train_losses(a.path()), lb = train_losses(b.path());
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 1e-5) << "step " << i + 1;
  EXPECT_NEAR(sa["test_loss"].get<double>(), sb["test_loss"].get<double>(), 1e-5);
}

TEST(Trainer, EpochsDetermineSteps) {
  testing::TempDir dir;
  // 2048 examples / 32 per batch = 64 steps per epoch.
  nlohmann::json s = train(tiny_job(dir.path(), {"run.steps=0", "run.epochs=0.5"}));
  EXPECT_EQ(s["steps"], 32);
}

}  // namespace
}  // namespace desync
