// Cyclic data parallelism on real worker processes: the staggered runtime (a clock, a reduction
// thread per worker, point-in-time version choices) ends where the semantic simulator ends.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

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

}  // namespace
}  // namespace desync
