// Cyclic data parallelism on real worker processes: the staggered runtime (a clock, a reduction
// thread per worker, point-in-time version choices) ends where the semantic simulator ends.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cyclic_resume.h"
#include "desync/core/checkpoint.h"
#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

const char* kJob = R"(
[run]
name = "cdp"
steps = 10
log_every = 1
comm_timeout = 30
[data]
dataset = "synthetic"
synthetic_train = 2048
synthetic_test = 256
synthetic_shape = [16]
batch_size = 16
[model]
name = "mlp"
hidden = [64, 32, 32]
[optimizer]
lr = 0.05
momentum = 0.9
weight_decay = 1e-4
[algorithm]
name = "cdp"
n_stages = 4
[checkpoint]
every = 0
)";

// The final parameters of rank `rank`, from the run's last checkpoint, flattened.
torch::Tensor final_params(const std::string& run_dir, int64_t rank, int64_t world) {
  auto loaded = CheckpointStore(run_dir + "/checkpoints", rank, world).load_latest(nullptr);
  EXPECT_TRUE(loaded.has_value()) << run_dir;
  if (!loaded) return torch::zeros({1});
  std::vector<torch::Tensor> parts;
  for (const std::string& name : loaded->archive.names())
    if (name.rfind("model.param.", 0) == 0)
      parts.push_back(loaded->archive.tensor(name).reshape({-1}));
  return torch::cat(parts);
}

TEST(CdpProcesses, StaggeredRuntimeMatchesSimulatorOnFourProcesses) {
  testing::TempDir dir;
  testing::write_file(dir.file("job.toml"), kJob);
  for (std::string rule : {"cdp1", "cdp2"}) {
    for (std::string runtime : {"simulator", "staggered"}) {
      auto r = testing::run_command(kDesync + " train " + dir.file("job.toml") +
                                    " --quiet --workers 4 --out " + dir.file(rule + runtime) +
                                    " --set algorithm.rule=" + rule +
                                    " --set algorithm.runtime=" + runtime);
      ASSERT_EQ(r.status, 0) << r.output;
    }
    for (int64_t rank = 0; rank < 4; ++rank) {
      torch::Tensor sim = final_params(dir.file(rule + "simulator"), rank, 4);
      torch::Tensor run = final_params(dir.file(rule + "staggered"), rank, 4);
      ASSERT_EQ(sim.numel(), run.numel());
      EXPECT_LT((sim - run).abs().max().item<double>(), 1e-6) << rule << " rank " << rank;
    }
    auto summary = nlohmann::json::parse(
        testing::read_file(dir.file(rule + "staggered/summary.json")), nullptr, false);
    EXPECT_EQ(summary["algorithm_stats"]["cyclic_stages"][0], 4);
  }
}

// A checkpoint between two steps finds every worker but worker 0 inside a cycle, its pass half
// run, and reductions both complete and in flight (some worker launches them after the cut).
// Resumed from it, the run is the uninterrupted one, bit for bit: on 2 and 3 workers, and under
// rule dp (every stage fresh) with a cycle's batch of two micro-batches.
TEST(CdpProcesses, ResumeInsideACycleMatchesTheUninterruptedRun) {
  testing::TempDir dir;
  testing::write_file(dir.file("job.toml"), testing::kCyclicResumeJob);
  const std::string job = dir.file("job.toml");
  testing::expect_resume_matches(dir, job, "n2-at3", 2, 3, "");
  testing::expect_resume_matches(dir, job, "n3-at2", 3, 2, "");
  testing::expect_resume_matches(dir, job, "n2-dp", 2, 4,
                                 "--set algorithm.rule=dp --set algorithm.accumulation=2");
}

// BatchNorm: the rebuilt forwards must leave the running statistics as the checkpoint holds them.
TEST(CdpProcesses, ResumeWithBatchNormMatchesTheUninterruptedRun) {
  testing::TempDir dir;
  testing::write_file(dir.file("job.toml"), testing::kCyclicResumeJob);
  testing::expect_resume_matches(dir, dir.file("job.toml"), "cnn", 2, 3,
                                 "--set model.name=cnn --set model.channels=[4,8] "
                                 "--set data.synthetic_shape=[1,8,8]");
}

// The issue's acceptance on this machine: 4 workers, 4 stages, the same micro-batch and model.
// Timing-dependent (the stagger is kept by a clock, on shared cores), hence slow and out of the
// default run; scripts/experiment-cdp measures the same figures on the throttled bed.
TEST(CdpProcesses, SlowSummedActivationsStayFlatAndBelowDdpsAndReductionsSpread) {
  testing::TempDir dir;
  const std::string job =
      kDesync + " train examples/fmnist_cdp.toml --quiet --set model.width=8 --set run.steps=80" +
      " --set eval.every=0 --set eval.limit=500 --set eval.final_full=false" +
      " --set checkpoint.enabled=false --set run.threads=1";
  auto summary_of = [&](const std::string& name, const std::string& args) {
    auto r = testing::run_command("(cd " + testing::source_dir() + " && " + job + " --out " +
                                  dir.file(name) + " " + args + ")");
    EXPECT_EQ(r.status, 0) << r.output;
    return nlohmann::json::parse(testing::read_file(dir.file(name + "/summary.json")), nullptr,
                                 false);
  };
  nlohmann::json ddp = summary_of("ddp", "--set algorithm.name=ddp");
  nlohmann::json cdp = summary_of("cdp", "");
  const auto& a = ddp["activation_memory"];
  const auto& c = cdp["activation_memory"];
  ASSERT_TRUE(a["summed_peak_bytes"].is_number()) << a.dump();
  ASSERT_TRUE(c["summed_peak_bytes"].is_number()) << c.dump();
  EXPECT_LE(c["summed_peak_bytes"].get<double>(), 0.6 * a["summed_peak_bytes"].get<double>())
      << "cdp " << c.dump() << "\nddp " << a.dump();
  EXPECT_LE(c["summed_peak_to_mean"].get<double>(), 1.25) << c.dump();
  EXPECT_EQ(cdp["reductions"]["groups"], 4);
  EXPECT_LE(cdp["reductions"]["max_in_flight"].get<int64_t>(), 2) << cdp["reductions"].dump();
}

}  // namespace
}  // namespace desync
