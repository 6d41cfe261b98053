// What the Trainer records for reports: per-rank bytes at each logged step, the time breakdown
// in summary.json, and report.html in the run directory.
#include <gtest/gtest.h>

#include <filesystem>

#include "desync/report/metrics.h"
#include "desync/train/trainer.h"
#include "test_util.h"

namespace desync {
namespace {

TEST(TrainerReport, RunDirectoryHasReportAndTimeBreakdown) {
  testing::TempDir dir;
  Config cfg = parse_config(
      "", "test.toml",
      {"data.dataset=\"synthetic\"", "data.synthetic_train=512", "data.synthetic_test=128",
       "data.synthetic_shape=[8]", "model.name=\"mlp\"", "model.hidden=[16]", "run.steps=12",
       "run.log_every=4", "eval.every=6", "run.out=\"" + dir.path() + "\""});
  SoloCommunicator comm;
  TrainOptions opts;
  opts.show_progress = false;
  nlohmann::json s = Trainer(cfg, comm, opts).run();

  std::string html = testing::read_file(dir.file("report.html"));
  EXPECT_NE(html.find("id=\"loss-vs-step\""), std::string::npos);
  EXPECT_NE(html.find("id=\"utilisation\""), std::string::npos);

  const nlohmann::json& tb = s["time_breakdown_seconds"];
  double parts = 0;
  for (const char* p : {"compute", "optimizer", "wait", "eval", "checkpoint", "other"}) {
    ASSERT_EQ(tb[p].size(), 1u) << p;
    parts += tb[p][0].get<double>();
  }
  EXPECT_NEAR(parts, tb["window"][0].get<double>(), 1e-6);
  EXPECT_GT(tb["compute"][0].get<double>(), 0);
  EXPECT_GT(tb["optimizer"][0].get<double>(), 0);
  EXPECT_GT(tb["eval"][0].get<double>(), 0);
  EXPECT_LE(tb["window"][0].get<double>(), s["wall_seconds"].get<double>() + 1e-3);
  EXPECT_EQ(s["comm_in_flight_seconds"].size(), 1u);

  int train_records = 0;
  for (const nlohmann::json& r : read_metrics(dir.file("metrics.jsonl")))
    if (r["type"] == "train") {
      ++train_records;
      ASSERT_EQ(r["bytes_sent_per_rank"].size(), 1u);
      EXPECT_EQ(r["bytes_sent_per_rank"][0], 0);  // one worker sends nothing
    }
  EXPECT_EQ(train_records, 3);
}

}  // namespace
}  // namespace desync
