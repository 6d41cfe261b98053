#include "desync/report/summary.h"

#include <gtest/gtest.h>

#include "desync/comm/fake_communicator.h"
#include "desync/report/timelines.h"
#include "report/synthetic_timelines.h"

namespace desync {
namespace {

// Two in-process ranks gather the synthetic samples and reductions: every rank gets the same
// objects, equal to the pure functions' on the ranks' records summed by hand.
TEST(Summary, TimelinesAreGatheredFromEveryRank) {
  auto fake = FakeWorld::create(2);
  std::vector<nlohmann::json> got(2);
  const int64_t epoch = Tracer::epoch_us();  // records are on Tracer::now_us()
  fake->run([&](int64_t rank, Communicator& comm) {
    // Bucket 0 then bucket 1 of step 1 (in the window, 3..8 ms), then of step 2.
    std::vector<ReductionRecord> mine =
        rank == 0 ? std::vector<ReductionRecord>{{0, 3100 - epoch, 3500 - epoch, 8},
                                                 {1, 3200 - epoch, 3900 - epoch, 8},
                                                 {0, 6100 - epoch, 6200 - epoch, 8}}
                  : std::vector<ReductionRecord>{{1, 3300 - epoch, 3800 - epoch, 8},
                                                 {0, 3150 - epoch, 3400 - epoch, 8},
                                                 {0, 6150 - epoch, 6300 - epoch, 8}};
    nlohmann::json s = nlohmann::json::object();
    add_timelines(s, comm, rank == 0 ? testing::rank_a() : testing::rank_b(), rank == 0 ? 66 : 7,
                  mine);
    got[rank] = s;
  });
  EXPECT_EQ(got[0], got[1]);

  Grid g{0, 1, 12};
  GridRows sum = rank_rows(testing::rank_a(), g, true);
  sum += rank_rows(testing::rank_b(), g, false);
  EXPECT_EQ(got[0]["activation_memory"], summarize_activation(sum, g, 2, 1000, {66, 7}).json);
  EXPECT_EQ(got[0]["activation_memory"]["summed_peak_bytes"], 66);

  const nlohmann::json& r = got[0]["reductions"];
  EXPECT_EQ(r["groups"], 2);
  EXPECT_EQ(r["steps"], 2);
  EXPECT_EQ(r["max_in_flight"], 2);  // [3150, 3500) and [3300, 3900)
  ASSERT_EQ(r["timeline"].size(), 3u);
  EXPECT_EQ(r["timeline"][0]["group"], 0);
  EXPECT_NEAR(r["timeline"][0]["start_s"].get<double>(), 150e-6, 1e-12);  // window at 3 ms
  EXPECT_NEAR(r["timeline"][0]["end_s"].get<double>(), 500e-6, 1e-12);
  EXPECT_EQ(r["timeline"][1]["group"], 1);
  EXPECT_NEAR(r["timeline"][1]["start_s"].get<double>(), 300e-6, 1e-12);
  EXPECT_NEAR(r["timeline"][1]["end_s"].get<double>(), 900e-6, 1e-12);
  EXPECT_EQ(r["timeline"][2]["step"], 1);
}

TEST(Summary, NoReductionsGiveNull) {
  auto fake = FakeWorld::create(2);
  std::vector<nlohmann::json> got(2);
  fake->run([&](int64_t rank, Communicator& comm) {
    nlohmann::json s = nlohmann::json::object();
    add_timelines(s, comm, rank == 0 ? testing::rank_a() : testing::rank_b(), 1, {});
    got[rank] = s;
  });
  EXPECT_TRUE(got[0]["reductions"].is_null());
  EXPECT_TRUE(got[0]["activation_memory"]["summed_peak_bytes"].is_number());
}

TEST(Summary, TableShowsTheSummedActivationPeak) {
  nlohmann::json s = {
      {"test_accuracy", 0.9},
      {"test_loss", 0.3},
      {"train_loss", 0.2},
      {"bytes_sent", {1, 2}},
      {"bytes_received", {1, 2}},
      {"peak_rss_bytes", {1, 2}},
      {"activation_memory", {{"summed_peak_bytes", 3 * 1048576}, {"summed_peak_to_mean", 1.5}}}};
  std::string table = summary_table(s);
  EXPECT_NE(table.find("act. peak (sum)        3.0 MiB"), std::string::npos) << table;
  EXPECT_NE(table.find("act. peak/mean            1.50"), std::string::npos) << table;
  s["activation_memory"] = {{"summed_peak_bytes", nullptr}, {"summed_peak_to_mean", nullptr}};
  table = summary_table(s);
  EXPECT_NE(table.find("act. peak (sum)              -"), std::string::npos) << table;
}

}  // namespace
}  // namespace desync
