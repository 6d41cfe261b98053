// The data budget across real processes: methods whose steps consume different amounts
// (DDP: one micro-batch per worker; ACCO: a varying number, at least two; DiLoCo) read the same
// number of samples when given the same run.samples.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

const char* kJob = R"(
[run]
name = "budget"
samples = 2000
log_every = 5
comm_timeout = 30
[data]
dataset = "synthetic"
synthetic_train = 1024
synthetic_test = 128
synthetic_shape = [16]
batch_size = 8
[model]
name = "mlp"
hidden = [32]
[optimizer]
name = "adamw"
lr = 0.01
[algorithm.diloco]
local_steps = 4
[checkpoint]
enabled = false
)";

nlohmann::json train(const testing::TempDir& dir, const std::string& algorithm) {
  auto r = testing::run_command(kDesync + " train " + dir.file("job.toml") +
                                " --quiet --workers 4 --set algorithm.name=" + algorithm +
                                " --out " + dir.file(algorithm));
  EXPECT_EQ(r.status, 0) << r.output;
  return nlohmann::json::parse(testing::read_file(dir.file(algorithm + "/summary.json")), nullptr,
                               false);
}

TEST(Budget, AccoDdpAndDilocoGivenTheSameSamplesConsumeTheSame) {
  testing::TempDir dir;
  testing::write_file(dir.file("job.toml"), kJob);
  const int64_t budget = 2000 / 8;  // global micro-batches
  for (const char* algorithm : {"ddp", "acco", "diloco"}) {
    nlohmann::json s = train(dir, algorithm);
    ASSERT_TRUE(s.is_object()) << algorithm;
    EXPECT_EQ(s["budget"]["micro_batches"], budget) << algorithm;
    const auto consumed = s["micro_batches"].get<int64_t>();
    EXPECT_LE(consumed, budget) << algorithm;
    EXPECT_GE(consumed, budget - 4) << algorithm;  // within one micro-batch per worker
    EXPECT_EQ(s["samples"].get<int64_t>(), consumed * 8) << algorithm;
    int64_t per_rank_sum = 0;
    for (const auto& n : s["samples_per_rank"]) per_rank_sum += n.get<int64_t>();
    EXPECT_EQ(per_rank_sum, s["samples"].get<int64_t>()) << algorithm;
  }
}

}  // namespace
}  // namespace desync
