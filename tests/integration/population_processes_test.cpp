// Population methods across four real processes (Gloo): WASH's shuffles send the bytes the spec
// predicts, every evaluation reports the members, their
// ensemble and their average, and an independent ensemble sends nothing while it trains.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

// An MLP 16 -> 64 -> 64 -> 10 (six parameter tensors), 20 steps, evaluated every 10.
const char* kJob = R"(
[run]
name = "population"
steps = 20
log_every = 5
threads = 1
comm_timeout = 60
[data]
dataset = "synthetic"
synthetic_train = 2048
synthetic_test = 256
synthetic_shape = [16]
batch_size = 16
[model]
name = "mlp"
hidden = [64, 64]
[optimizer]
lr = 0.05
momentum = 0.9
[eval]
every = 10
[checkpoint]
enabled = false
)";

// What the Trainer itself sends while training: at each of the 4 logs (every 5 of 20 steps), an
// all-reduce of 4 + N doubles (loss, counts, each rank's bytes): 2 (N-1)/N x 64 B = 96 B.
constexpr double kTrainerLogBytes = 4 * 96;

struct JobRun {
  testing::CommandResult result;
  nlohmann::json summary;
  std::vector<nlohmann::json> evals;  // the eval records of metrics.jsonl
};

JobRun train(testing::TempDir& dir, const std::string& name, const std::string& args) {
  testing::write_file(dir.file("job.toml"), kJob);
  JobRun r;
  const std::string out = dir.file(name);
  r.result = testing::run_command(kDesync + " train " + dir.file("job.toml") +
                                  " --quiet --workers 4 --out " + out + " " + args + " 2>&1");
  r.summary = nlohmann::json::parse(testing::read_file(out + "/summary.json"), nullptr, false);
  std::istringstream lines(testing::read_file(out + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    auto rec = nlohmann::json::parse(line, nullptr, false);
    if (!rec.is_discarded() && rec.value("type", "") == "eval") r.evals.push_back(rec);
  }
  return r;
}

TEST(PopulationProcesses, WashShufflesTheirShareAndEveryEvaluationScoresMembersEnsembleAverage) {
  testing::TempDir dir;
  const double p = 0.2;
  JobRun r = train(dir, "wash", "--set algorithm.name=wash --set algorithm.p=0.2");
  ASSERT_EQ(r.result.status, 0) << r.result.output;
  ASSERT_FALSE(r.summary.is_discarded());

  // p̄ Ψ b (N-1)/N per shuffle, p_l = p (1 - l/5) over the six tensors, 20 shuffles.
  const std::vector<double> sizes = {64 * 16, 64, 64 * 64, 64, 10 * 64, 10};
  double selected = 0.0;
  for (size_t l = 0; l < sizes.size(); ++l) selected += p * (1.0 - l / 5.0) * sizes[l];
  const double expected = 20 * selected * 4.0 * 3.0 / 4.0;
  for (int rank = 0; rank < 4; ++rank) {
    const double sent = r.summary["bytes_sent"][rank].get<double>() - kTrainerLogBytes;
    EXPECT_NEAR(sent / expected, 1.0, 0.05) << "rank " << rank;
    EXPECT_EQ(sent, 4.0 * r.summary["algorithm_stats"]["shuffled_values_sent"][rank].get<double>());
  }

  // Evaluations at steps 10 and 20: four members, their ensemble, their average.
  ASSERT_EQ(r.evals.size(), 2u);
  for (const nlohmann::json& e : r.evals) {
    ASSERT_EQ(e["member_accuracy"].size(), 4u) << e.dump();
    for (const auto& a : e["member_accuracy"]) EXPECT_GT(a.get<double>(), 0.1) << e.dump();
    EXPECT_GT(e["ensemble_accuracy"].get<double>(), 0.1) << e.dump();
    EXPECT_TRUE(e.contains("consensus_distance")) << e.dump();
  }
  const nlohmann::json& pop = r.summary["population"];
  ASSERT_TRUE(pop.is_object()) << r.summary.dump();
  EXPECT_EQ(pop["member_accuracy"], r.evals.back()["member_accuracy"]);
  EXPECT_EQ(r.summary["test_accuracy"], pop["average_accuracy"]);
  EXPECT_EQ(r.summary["eval_metrics"]["ensemble_accuracy"], pop["ensemble_accuracy"]);
  EXPECT_FALSE(pop["average_repaired"].get<bool>());  // an MLP has no BatchNorm
}

// Nothing but the Trainer's own logging.
TEST(PopulationProcesses, AnIndependentEnsembleSendsNothingWhileItTrains) {
  testing::TempDir dir;
  JobRun r = train(dir, "ensemble", "--set algorithm.name=ensemble");
  ASSERT_EQ(r.result.status, 0) << r.result.output;
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(r.summary["bytes_sent"][rank].get<double>(), kTrainerLogBytes) << rank;
    EXPECT_GT(r.summary["eval_bytes_sent"][rank].get<double>(), 0.0) << rank;
  }
  // Members from distinct initialisations: they disagree, so the ensemble is not one member.
  const auto& acc = r.summary["population"]["member_accuracy"];
  ASSERT_EQ(acc.size(), 4u);
  EXPECT_FALSE(acc[0] == acc[1] && acc[1] == acc[2] && acc[2] == acc[3]) << acc.dump();
}

}  // namespace
}  // namespace desync
