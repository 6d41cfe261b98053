// cdp_mp on real worker processes against cdp's simulator (rule = "cdp2", fresh_predicate =
// "timing", final_model = "latest"): S = 4 processes, one cyclic stage each, serving N = 4
// streams, against 4 data-parallel workers. The training losses of every step and the final
// parameters (from each run's final checkpoint) agree to 1e-6 in float32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cyclic_resume.h"
#include "desync/core/checkpoint.h"
#include "test_util.h"

namespace desync {
namespace {

// A CNN of three conv blocks and a head: four model stages, one per process. No BatchNorm, so
// that the parameters are all the state there is (cdp's workers would each keep statistics).
const char* kJob = R"(
[run]
name = "cdp-mp-processes"
steps = 10
log_every = 1
threads = 1
[data]
dataset = "synthetic"
synthetic_train = 2048
synthetic_test = 256
synthetic_shape = [1, 16, 16]
batch_size = 16
[model]
name = "cnn"
channels = [8, 16, 16]
batch_norm = false
[optimizer]
lr = 0.05
momentum = 0.9
weight_decay = 5e-4
[schedule]
name = "step"
step_size = 3
gamma = 0.7
[eval]
every = 0
[checkpoint]
every = 0
)";

struct JobResult {
  testing::CommandResult result;
  nlohmann::json summary;
  std::vector<double> losses;
  std::vector<std::pair<std::string, torch::Tensor>> params;  // rank 0's final checkpoint
};

JobResult train(const testing::TempDir& dir, const std::string& name, const std::string& args) {
  testing::write_file(dir.file("job.toml"), kJob);
  JobResult r;
  r.result = testing::run_command(testing::desync_binary() + " train " + dir.file("job.toml") +
                                  " --quiet --workers 4 --out " + dir.file(name) + " " + args);
  if (r.result.status != 0) return r;
  r.summary = nlohmann::json::parse(testing::read_file(dir.file(name + "/summary.json")));
  r.losses = testing::train_losses(dir.file(name));
  auto loaded = CheckpointStore(dir.file(name + "/checkpoints"), 0, 4).load_latest(nullptr);
  if (!loaded) return r;
  for (const std::string& key : loaded->archive.names())
    if (key.rfind("model.param.", 0) == 0) r.params.emplace_back(key, loaded->archive.tensor(key));
  return r;
}

TEST(CdpMpProcesses, FourStagesEqualCdpTimingSimulatorOnFourWorkers) {
  testing::TempDir dir;
  JobResult mp = train(dir, "mp", "--set algorithm.name=cdp_mp");
  ASSERT_EQ(mp.result.status, 0) << mp.result.output;
  JobResult cdp = train(dir, "cdp",
                        "--set algorithm.name=cdp --set algorithm.rule=cdp2 "
                        "--set algorithm.fresh_predicate=timing --set algorithm.runtime=simulator "
                        "--set algorithm.final_model=latest --set algorithm.n_stages=4");
  ASSERT_EQ(cdp.result.status, 0) << cdp.result.output;

  ASSERT_EQ(mp.losses.size(), 10u);
  ASSERT_EQ(cdp.losses.size(), 10u);
  for (size_t t = 0; t < mp.losses.size(); ++t)
    EXPECT_NEAR(mp.losses[t], cdp.losses[t], 1e-6) << "step " << t + 1;
  EXPECT_GT(std::abs(mp.losses.front() - mp.losses.back()), 1e-3);  // it learns

  ASSERT_FALSE(mp.params.empty());
  ASSERT_EQ(mp.params.size(), cdp.params.size());
  double largest = 0.0;
  for (size_t i = 0; i < mp.params.size(); ++i) {
    ASSERT_EQ(mp.params[i].first, cdp.params[i].first);
    largest =
        std::max(largest, (mp.params[i].second - cdp.params[i].second).abs().max().item<double>());
  }
  EXPECT_LT(largest, 1e-6);
  EXPECT_NEAR(mp.summary["test_loss"].get<double>(), cdp.summary["test_loss"].get<double>(), 1e-5);

  // The same data: 4 micro-batches a step, all read by rank 0.
  EXPECT_EQ(mp.summary["samples"], cdp.summary["samples"]);
  EXPECT_EQ(mp.summary["samples"], 10 * 4 * 16);
  for (int r = 1; r < 4; ++r) EXPECT_EQ(mp.summary["samples_per_rank"][r], 0);
  // Stage l keeps a second version where a stream is stale: every stage but the last.
  auto stale = mp.summary["algorithm_stats"]["stale_streams"];
  auto stash = mp.summary["memory_bytes"]["weight_stash"];
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(stale[l], 3 - l) << "stage " << l;
    EXPECT_EQ(stash[l].get<int64_t>() > 0, l < 3) << "stage " << l;
  }
}

// Resumed from a checkpoint between two steps, with micro-batches between their forward and
// backward on every stage (their forwards run again) and backward messages that the previous
// stage takes only in the next step (sent again), the run is the uninterrupted one, bit for bit:
// 2 stages serving 2 streams, 3 stages serving 3, and 2 stages serving 4 (stale streams: both
// version buffers hold graphs).
TEST(CdpMpResume, ResumeInsideACycleMatchesTheUninterruptedRun) {
  testing::TempDir dir;
  testing::write_file(dir.file("job.toml"), testing::kCyclicResumeJob);
  const std::string job = dir.file("job.toml");
  testing::expect_resume_matches(dir, job, "s2", 2, 3, "--set algorithm.name=cdp_mp");
  testing::expect_resume_matches(dir, job, "s3", 3, 2, "--set algorithm.name=cdp_mp");
  testing::expect_resume_matches(dir, job, "s2n4", 2, 4,
                                 "--set algorithm.name=cdp_mp --set algorithm.streams=4");
}

}  // namespace
}  // namespace desync
