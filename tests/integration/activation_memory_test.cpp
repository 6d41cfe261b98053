// Activation memory summed over ranks and the reduction timeline, from real 2-worker runs
// through `desync train`: what summary.json reports (report/timelines.h) and the trace's
// "reduce" spans.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

// An MLP whose forward keeps about 2 MiB of activations per rank (batch 256, two hidden layers
// of 512), and whose gradient DDP splits into two buckets.
const char* kJob = R"(
[run]
name = "activations"
steps = 30
log_every = 10
threads = 1
[data]
dataset = "synthetic"
synthetic_train = 8192
synthetic_test = 256
synthetic_shape = [256]
batch_size = 256
[model]
name = "mlp"
hidden = [512, 512]
[optimizer]
lr = 0.05
[eval]
every = 0
[checkpoint]
enabled = false
[algorithm]
name = "ddp"
[algorithm.ddp]
first_bucket_mb = 0.5
bucket_cap_mb = 0.5
)";

nlohmann::json train(const testing::TempDir& dir, const std::string& args) {
  testing::write_file(dir.file("job.toml"), kJob);
  auto r = testing::run_command(kDesync + " train " + dir.file("job.toml") +
                                " --quiet --workers 2 --out " + dir.file("run") + " " + args);
  EXPECT_EQ(r.status, 0) << r.output;
  return nlohmann::json::parse(testing::read_file(dir.file("run/summary.json")), nullptr, false);
}

TEST(RunTimelines, DdpSummarySumsTheRanksAndHasOneReductionGroupPerBucket) {
  testing::TempDir dir;
  nlohmann::json s = train(dir, "");
  ASSERT_TRUE(s.is_object());

  const nlohmann::json& a = s["activation_memory"];
  ASSERT_TRUE(a.is_object()) << s.dump(2);
  ASSERT_EQ(a["rank_peak_bytes"].size(), 2u);
  double rank_peaks = 0;
  for (const auto& p : a["rank_peak_bytes"]) {
    EXPECT_GT(p.get<double>(), 1 << 20) << "each rank keeps its hidden activations";
    rank_peaks += p.get<double>();
  }
  ASSERT_TRUE(a["summed_peak_bytes"].is_number()) << a.dump(2);
  const double summed = a["summed_peak_bytes"].get<double>();
  // A sampled sum never exceeds the ranks' exact peaks added; DDP's ranks run their forward
  // passes in step, so its peak comes close to them.
  EXPECT_LE(summed, rank_peaks);
  EXPECT_GE(summed, 0.6 * rank_peaks) << a.dump(2);
  EXPECT_GT(a["summed_mean_bytes"].get<double>(), 0);
  EXPECT_GE(a["summed_peak_to_mean"].get<double>(), 1.0);
  EXPECT_GT(a["steady_instants"].get<int64_t>(), 0);
  EXPECT_DOUBLE_EQ(a["sample_period_ms"].get<double>(), 1.0);
  const auto& curve = a["curve"];
  ASSERT_TRUE(curve.is_object());
  EXPECT_GT(curve["bytes"].size(), 0u);
  EXPECT_LE(curve["bytes"].size(), 2000u);
  EXPECT_EQ(curve["t_s"].size(), curve["bytes"].size());

  const nlohmann::json& red = s["reductions"];
  ASSERT_TRUE(red.is_object()) << s.dump(2);
  const auto buckets = s["algorithm_stats"]["buckets"];
  ASSERT_EQ(buckets.size(), 2u);
  EXPECT_GE(buckets[0].get<int64_t>(), 2);
  EXPECT_EQ(red["groups"], buckets[0]);
  EXPECT_EQ(red["steps"], 30);  // every bucket once a step
  EXPECT_GE(red["max_in_flight"].get<int64_t>(), 1);
  EXPECT_LE(red["max_in_flight"].get<int64_t>(), buckets[0].get<int64_t>());
  ASSERT_TRUE(red["timeline"].is_array());
  EXPECT_GT(red["timeline"].size(), 0u);
  for (const auto& e : red["timeline"]) {
    EXPECT_LT(e["group"].get<int64_t>(), buckets[0].get<int64_t>());
    EXPECT_LE(e["start_s"].get<double>(), e["end_s"].get<double>());
  }

  // Each rank's trace has one "reduce" span per bucket and step, named for its bucket.
  nlohmann::json trace =
      nlohmann::json::parse(testing::read_file(dir.file("run/trace-rank1.json")));
  int64_t spans = 0, bucket0 = 0;
  for (const auto& e : trace["traceEvents"]) {
    if (e.value("cat", "") != "reduce") continue;
    ++spans;
    bucket0 += e["name"] == "reduce 0";
  }
  EXPECT_EQ(spans, 30 * buckets[0].get<int64_t>());
  EXPECT_EQ(bucket0, 30);
}

TEST(RunTimelines, PipelineStagesCountTheirActivations) {
  // The synchronous pipeline's stage forwards, and a delayed pipeline's forward before each
  // backward (algorithms/pipeline/delayed_stage.cpp), run in activation scopes too.
  for (const char* algorithm : {"pipeline", "pipedream"}) {
    testing::TempDir dir;
    nlohmann::json s =
        train(dir, std::string("--set run.steps=12 --set algorithm.name=") + algorithm);
    const nlohmann::json& a = s["activation_memory"];
    ASSERT_TRUE(a.is_object()) << algorithm << s.dump(2);
    ASSERT_EQ(a["rank_peak_bytes"].size(), 2u) << algorithm;
    for (const auto& p : a["rank_peak_bytes"]) EXPECT_GT(p.get<double>(), 0) << algorithm;
    EXPECT_TRUE(s["reductions"].is_null()) << algorithm << ": records no reductions";
  }
}

TEST(RunTimelines, RunTooShortForASteadyStateSaysSo) {
  testing::TempDir dir;
  nlohmann::json s = train(dir, "--set run.steps=2");
  const nlohmann::json& a = s["activation_memory"];
  ASSERT_TRUE(a.is_object()) << s.dump(2);
  EXPECT_TRUE(a["summed_peak_bytes"].is_null());
  EXPECT_TRUE(a["summed_peak_to_mean"].is_null());
  EXPECT_TRUE(a["curve"].is_null());
  EXPECT_TRUE(a["note"].is_string());
  EXPECT_EQ(a["rank_peak_bytes"].size(), 2u);
  EXPECT_TRUE(s["reductions"]["max_in_flight"].is_null());
  EXPECT_EQ(s["reductions"]["steps"], 2);
}

}  // namespace
}  // namespace desync
