// The delayed-gradient pipelines on real worker processes against the tick simulator
// (algorithms/pipeline/delayed_stage.h), the in-process ground truth: PETRA on a RevNet whose
// middle ranks invert, with an update after every micro-batch and a decaying learning rate.
#include <gtest/gtest.h>

#include "desync/algorithms/pipeline/delayed_stage.h"
#include "desync/algorithms/pipeline/petra.h"
#include "desync/algorithms/pipeline/stages.h"
#include "desync/core/config.h"
#include "desync/data/batch_source.h"
#include "desync/data/dataset.h"
#include "desync/optim/schedule.h"
#include "test_util.h"

namespace desync {
namespace {

// RevNet blocks [2]: stem | g1b1 | g1b2 | head on 4 ranks; ranks 1 and 2 hold a reversible
// block each and rebuild their inputs by inversion, with weights that moved since the forward.
const char* kJob = R"(
[run]
name = "petra-processes"
steps = 12
log_every = 1
threads = 1
[data]
dataset = "synthetic"
synthetic_train = 1024
synthetic_test = 128
synthetic_shape = [1, 8, 8]
batch_size = 4
[model]
name = "revnet"
blocks = [2]
width = 4
[optimizer]
lr = 0.05
momentum = 0.9
[schedule]
name = "step"
step_size = 2
gamma = 0.7
[algorithm]
name = "petra"
accumulation = 1
[eval]
every = 0
[checkpoint]
enabled = false
)";

TEST(PipelineProcesses, PetraOnFourProcessesWithUpdatesEveryMicroBatchEqualsTheSimulator) {
  const int64_t j = 4;
  testing::TempDir dir;
  testing::write_file(dir.file("job.toml"), kJob);
  auto r = testing::run_command(testing::desync_binary() + " train " + dir.file("job.toml") +
                                " --workers 4 --quiet --out " + dir.file("run"));
  ASSERT_EQ(r.status, 0) << r.output;
  std::vector<double> logged = testing::train_losses(dir.file("run"));

  // The simulator on the same data, initial weights and schedule.
  Config cfg = parse_config(kJob, "job.toml", {});
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<StagedModel> models;
  for (int64_t s = 0; s < j; ++s) {
    torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
    models.push_back(make_model(cfg.model, {data.train.example_shape(), data.train.num_classes}));
  }
  auto ranges = place_stages(models[0]->num_stages(), j, {}, std::vector<double>(j, 1.0));
  TickSimulator sim(cfg, models, ranges, *petra_policy(), 1);
  int64_t reversible = 0;
  for (int64_t s = 0; s < j; ++s) reversible += sim.stage(s).reversible() ? 1 : 0;
  ASSERT_EQ(reversible, 2);
  MicroBatchSource source(data.train, cfg.data.batch_size, 0, 1,
                          static_cast<uint64_t>(cfg.run.seed), {cfg.data.normalize, false});
  std::vector<MicroBatch> batches;
  for (int64_t i = 0; i < cfg.run.steps; ++i) batches.push_back(source.next());
  Schedule schedule(cfg.schedule, cfg.optimizer.lr, cfg.run.steps);
  std::vector<double> losses = sim.run(batches, [&](int64_t t) { return schedule.lr(t); });

  // Step t (k = 1) ends with the last stage's forward of micro-batch t - (J - 1): the first
  // J - 1 steps report no loss, and the last J - 1 micro-batches finish in the drain.
  ASSERT_EQ(static_cast<int64_t>(logged.size()), cfg.run.steps);
  for (int64_t t = j - 1; t < cfg.run.steps; ++t)
    EXPECT_NEAR(logged[t], losses[t - (j - 1)], 1e-6) << "step " << t;
  // The losses move: the check is not of a model that does not learn.
  EXPECT_NE(losses.front(), losses.back());
}

}  // namespace
}  // namespace desync
