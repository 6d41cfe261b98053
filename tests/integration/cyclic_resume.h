// Resume checks for the cyclic data-parallel methods on real processes: a run that checkpoints
// every `at` steps, copied, its checkpoints after step `at` deleted and resumed, must log the same
// train losses, reach the same test loss and end with the same parameters on every rank as the
// uninterrupted run, bit for bit.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "desync/core/checkpoint.h"
#include "test_util.h"

namespace desync::testing {

// A small job for the resume checks: three model stages (fc1, fc2, head), seven steps, cdp.
inline const char* kCyclicResumeJob = R"(
[run]
name = "cdp-resume"
steps = 7
log_every = 1
comm_timeout = 30
[data]
dataset = "synthetic"
synthetic_train = 1024
synthetic_test = 128
synthetic_shape = [12]
batch_size = 16
[model]
name = "mlp"
hidden = [32, 16]
[optimizer]
lr = 0.05
momentum = 0.9
weight_decay = 1e-4
[eval]
every = 0
[algorithm]
name = "cdp"
)";

// Rank `rank`'s parameters in the newest checkpoint of `run_dir`, by name.
inline std::vector<std::pair<std::string, torch::Tensor>> checkpoint_params(
    const std::string& run_dir, int64_t rank, int64_t world) {
  std::vector<std::pair<std::string, torch::Tensor>> params;
  auto loaded = CheckpointStore(run_dir + "/checkpoints", rank, world).load_latest(nullptr);
  EXPECT_TRUE(loaded.has_value()) << run_dir << " rank " << rank;
  if (!loaded) return params;
  for (const std::string& name : loaded->archive.names())
    if (name.rfind("model.param.", 0) == 0) params.emplace_back(name, loaded->archive.tensor(name));
  return params;
}

// Runs `job` (a TOML file) on `workers` processes with `args`, checkpointing every `at` steps,
// into dir/name-ref; resumes a copy, dir/name-cut, from step `at`; and compares the two.
inline void expect_resume_matches(const TempDir& dir, const std::string& job,
                                  const std::string& name, int64_t workers, int64_t at,
                                  const std::string& args) {
  const std::string ref = dir.file(name + "-ref"), cut = dir.file(name + "-cut");
  const std::string train = desync_binary() + " train " + job + " --quiet --workers " +
                            std::to_string(workers) + " " + args +
                            " --set checkpoint.every=" + std::to_string(at) +
                            " --set checkpoint.keep=1000";
  CommandResult r = run_command(train + " --out " + ref);
  ASSERT_EQ(r.status, 0) << name << "\n" << r.output;
  std::filesystem::copy(ref, cut, std::filesystem::copy_options::recursive);
  std::vector<int64_t> later;
  for (int64_t step : CheckpointStore(cut + "/checkpoints", 0, workers).steps_on_disk())
    if (step > at) later.push_back(step);
  ASSERT_FALSE(later.empty()) << name;
  for (int64_t step : later)
    std::filesystem::remove_all(CheckpointStore(cut + "/checkpoints", 0, workers).step_dir(step));
  r = run_command(train + " --out " + cut + " --resume");
  ASSERT_EQ(r.status, 0) << name << "\n" << r.output;

  const std::vector<double> expected = train_losses(ref), resumed = train_losses(cut);
  EXPECT_GT(expected.size(), static_cast<size_t>(at)) << name;
  EXPECT_EQ(expected, resumed) << name;
  auto test_loss = [](const std::string& run) {
    return nlohmann::json::parse(read_file(run + "/summary.json"), nullptr, false)["test_loss"];
  };
  EXPECT_EQ(test_loss(ref), test_loss(cut)) << name;
  for (int64_t rank = 0; rank < workers; ++rank) {
    auto a = checkpoint_params(ref, rank, workers), b = checkpoint_params(cut, rank, workers);
    ASSERT_EQ(a.size(), b.size()) << name << " rank " << rank;
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_TRUE(torch::equal(a[i].second, b[i].second))
          << name << " rank " << rank << " " << a[i].first;
  }
}

}  // namespace desync::testing
