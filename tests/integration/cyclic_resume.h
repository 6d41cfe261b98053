// Resume checks for the cyclic data-parallel methods on real processes: a run that checkpoints
// every `at` steps, copied, its checkpoints after step `at` deleted and resumed, must log the same
// train losses, reach the same test loss and end with the same parameters on every rank as the
// uninterrupted run, bit for bit.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "resume_check.h"
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

// Runs `job` (a TOML file) on `workers` processes with `args`, checkpointing every `at` steps,
// into dir/name-ref; resumes a copy, dir/name-cut, from step `at`; and compares the two.
inline void expect_resume_matches(const TempDir& dir, const std::string& job,
                                  const std::string& name, int64_t workers, int64_t at,
                                  const std::string& args) {
  SCOPED_TRACE(name);
  const std::string ref = dir.file(name + "-ref"), cut = dir.file(name + "-cut");
  const std::string train = desync_binary() + " train " + job + " --quiet --workers " +
                            std::to_string(workers) + " " + args +
                            " --set checkpoint.every=" + std::to_string(at) +
                            " --set checkpoint.keep=1000";
  int64_t deleted = 0;
  ASSERT_NO_FATAL_FAILURE(run_and_resume(train, ref, cut, workers, at, &deleted));
  ASSERT_GT(deleted, 0);

  const std::vector<double> expected = train_losses(ref), resumed = train_losses(cut);
  EXPECT_GT(expected.size(), static_cast<size_t>(at));
  EXPECT_EQ(expected, resumed);
  auto test_loss = [](const std::string& run) {
    return nlohmann::json::parse(read_file(run + "/summary.json"), nullptr, false)["test_loss"];
  };
  EXPECT_EQ(test_loss(ref), test_loss(cut));
  expect_same_checkpoints(ref, cut, workers, "model.param.");
}

}  // namespace desync::testing
