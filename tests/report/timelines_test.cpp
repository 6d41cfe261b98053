#include "desync/report/timelines.h"

#include <gtest/gtest.h>

#include "report/synthetic_timelines.h"

namespace desync {
namespace {

using testing::rank_a;
using testing::rank_b;
using testing::record_of;

GridRows summed(const Grid& g) {
  GridRows sum = rank_rows(rank_a(), g, /*lead=*/true);
  sum += rank_rows(rank_b(), g, false);
  return sum;
}

TEST(Timelines, CommonGridIsTheOverlapAtTheCoarsestStride) {
  Grid g = common_grid({10, 13}, {100, 90}, {1, 2});
  EXPECT_EQ(g.stride, 2);
  EXPECT_EQ(g.first, 14);  // the first multiple of 2 from the latest first sample
  EXPECT_EQ(g.size, 39);   // 14, 16, ..., 90
  EXPECT_EQ(g.instant(38), 90);
  EXPECT_EQ(common_grid({0, 50}, {40, 90}, {1, 1}).size, 0);  // no overlap
}

TEST(Timelines, RankRowsPlaceSamplesAndFlagTheSteadyState) {
  Grid g{0, 1, 12};
  GridRows a = rank_rows(rank_a(), g, true), b = rank_rows(rank_b(), g, false);
  EXPECT_EQ(a.bytes, (std::vector<double>{10, 20, 0, 30, 40, 0, 50, 60, 0, 10, 10, 0}));
  EXPECT_EQ(b.sampled, (std::vector<double>{1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1}));
  // Steady: inside a step past the first (0) and before the last (3).
  EXPECT_EQ(a.steady, (std::vector<double>{0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0}));
  EXPECT_EQ(b.steady, (std::vector<double>{0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0}));
  EXPECT_EQ(a.lead_step, (std::vector<double>{1, 1, 0, 2, 2, 0, 3, 3, 0, 4, 4, 0}));
  EXPECT_EQ(b.lead_step, std::vector<double>(12, 0.0));
  // On a coarser grid only the multiples of its stride count.
  GridRows coarse = rank_rows(rank_a(), Grid{2, 2, 5}, false);
  EXPECT_EQ(coarse.bytes, (std::vector<double>{0, 40, 50, 0, 10}));  // instants 2, 4, ..., 10
}

TEST(Timelines, SummedRowsAndSteadyInstants) {
  Grid g{0, 1, 12};
  GridRows sum = summed(g);
  EXPECT_EQ(sum.bytes, (std::vector<double>{11, 22, 0, 33, 40, 0, 55, 66, 0, 11, 11, 0}));
  EXPECT_EQ(sum.sampled[4], 1.0);  // rank B missed it
  // Every rank steady: instants 3, 6, 7 (4 is not: rank B has no sample there).
  EXPECT_EQ(steady_instants(sum, 2), (std::vector<int64_t>{3, 6, 7}));
}

TEST(Timelines, SummaryOverTheSteadyState) {
  Grid g{0, 1, 12};
  ActivationSummary s = summarize_activation(summed(g), g, 2, 1000, {66, 7});
  const nlohmann::json& j = s.json;
  EXPECT_EQ(j["summed_peak_bytes"], 66);
  EXPECT_DOUBLE_EQ(j["summed_mean_bytes"].get<double>(), (33.0 + 55 + 66) / 3);
  EXPECT_DOUBLE_EQ(j["summed_peak_to_mean"].get<double>(), 66.0 / ((33.0 + 55 + 66) / 3));
  EXPECT_EQ(j["rank_peak_bytes"], nlohmann::json({66, 7}));
  EXPECT_EQ(j["steady_instants"], 3);
  EXPECT_EQ(j["common_instants"], 11);
  EXPECT_EQ(j["grid_instants"], 12);
  EXPECT_DOUBLE_EQ(j["sample_period_ms"].get<double>(), 1.0);
  EXPECT_FALSE(j.contains("note"));
  // The window: rank 0's steady steps 1 and 2, instants 3..7; instant 4 is not common.
  EXPECT_EQ(j["curve"]["first_step"], 1);
  EXPECT_EQ(j["curve"]["last_step"], 2);
  EXPECT_EQ(j["curve"]["bytes"], nlohmann::json({33, 0, 55, 66}));
  const auto t = j["curve"]["t_s"].get<std::vector<double>>();
  ASSERT_EQ(t.size(), 4u);
  EXPECT_DOUBLE_EQ(t[0], 0.0);
  EXPECT_DOUBLE_EQ(t[1], 0.002);
  EXPECT_DOUBLE_EQ(t[3], 0.004);
  EXPECT_TRUE(s.steady);
  EXPECT_EQ(s.steady_begin_us, 3000);
  EXPECT_EQ(s.steady_end_us, 8000);  // past the last steady instant (7 ms)
  EXPECT_TRUE(s.window);
  EXPECT_EQ(s.window_begin_us, 3000);
  EXPECT_EQ(s.window_end_us, 8000);
  // The whole run: one bin per instant here, the common ones.
  EXPECT_EQ(j["run_curve"]["bytes"].size(), 11u);
  EXPECT_EQ(j["run_curve"]["bytes"][3], 33);
}

TEST(Timelines, WindowShrinksToFitTheCap) {
  Grid g{0, 1, 12};
  GridRows sum = summed(g);
  std::vector<int64_t> steady = steady_instants(sum, 2);
  Window two = choose_window(sum, steady, 5);
  EXPECT_TRUE(two.found);
  EXPECT_EQ(two.begin, 3);
  EXPECT_EQ(two.end, 7);
  Window one = choose_window(sum, steady, 3);  // steps 1..2 take 5 instants: only step 1
  EXPECT_EQ(one.first_step, 1);
  EXPECT_EQ(one.last_step, 1);
  EXPECT_EQ(one.begin, 3);
  EXPECT_EQ(one.end, 4);
  Window cut = choose_window(sum, steady, 1);  // one step is longer than the cap: cut it
  EXPECT_EQ(cut.begin, 3);
  EXPECT_EQ(cut.end, 3);
  EXPECT_FALSE(choose_window(sum, {}, 5).found);
}

TEST(Timelines, NoSteadyStateGivesNullsNotNumbers) {
  // Two steps only: none is past the first and before the last.
  ActivationSampler::Record a = record_of({{0, 0, 5}, {1, 0, 5}, {2, 1, 5}, {3, 1, 5}}, 0, 1);
  Grid g{0, 1, 4};
  GridRows sum = rank_rows(a, g, true);
  ActivationSummary s = summarize_activation(sum, g, 1, 1000, {5});
  EXPECT_TRUE(s.json["summed_peak_bytes"].is_null());
  EXPECT_TRUE(s.json["summed_mean_bytes"].is_null());
  EXPECT_TRUE(s.json["summed_peak_to_mean"].is_null());
  EXPECT_TRUE(s.json["curve"].is_null());
  EXPECT_TRUE(s.json["note"].is_string());
  EXPECT_FALSE(s.steady);
  EXPECT_FALSE(s.window);
}

TEST(Timelines, ReductionsPairByGroupAndStepLatestIssueToLatestCompletion) {
  std::vector<std::vector<ReductionRecord>> ranks = {
      {{0, 10, 20, 0}, {1, 12, 30, 0}, {0, 100, 120, 0}},
      {{1, 15, 25, 0}, {0, 11, 22, 0}, {0, 105, 110, 0}}};
  std::vector<JobReduction> j = job_reductions(ranks);
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0].group, 0);  // sorted by start
  EXPECT_EQ(j[0].step, 0);
  EXPECT_EQ(j[0].start_us, 11);
  EXPECT_EQ(j[0].end_us, 22);
  EXPECT_EQ(j[0].ranks, 2);
  EXPECT_EQ(j[1].group, 1);
  EXPECT_EQ(j[1].start_us, 15);
  EXPECT_EQ(j[1].end_us, 30);
  EXPECT_EQ(j[2].group, 0);
  EXPECT_EQ(j[2].step, 1);
  EXPECT_EQ(j[2].start_us, 105);
  EXPECT_EQ(j[2].end_us, 120);
}

TEST(Timelines, MaxInFlightSweepsTheIntervals) {
  auto r = [](int64_t s, int64_t e) { return JobReduction{0, 0, s, e, 1}; };
  // A burst of three overlapping, then one alone.
  std::vector<JobReduction> burst = {r(0, 10), r(2, 12), r(4, 14), r(20, 30)};
  EXPECT_EQ(max_in_flight(burst, 0, 100), 3);
  EXPECT_EQ(max_in_flight(burst, 13, 100), 1);  // clipped to the range: only [4, 14) and [20, 30)
  EXPECT_EQ(max_in_flight(burst, 50, 100), 0);
  // Spread out: back to back does not overlap.
  std::vector<JobReduction> spread = {r(0, 10), r(10, 20), r(20, 30)};
  EXPECT_EQ(max_in_flight(spread, 0, 100), 1);
  std::vector<JobReduction> pairs = {r(0, 10), r(5, 15), r(10, 20), r(15, 25)};
  EXPECT_EQ(max_in_flight(pairs, 0, 100), 2);
}

TEST(Timelines, ReductionSummaryHasTheWindowsTimeline) {
  std::vector<JobReduction> reductions = {
      {0, 0, 1000, 1500, 2}, {1, 0, 1200, 1600, 2}, {0, 1, 5000, 5500, 2}, {1, 1, 9000, 9100, 2}};
  ActivationSummary a;
  a.steady = true;
  a.steady_begin_us = 0;
  a.steady_end_us = 10000;
  a.window = true;
  a.window_begin_us = 1000;
  a.window_end_us = 6000;
  nlohmann::json j = summarize_reductions(reductions, a);
  EXPECT_EQ(j["groups"], 2);
  EXPECT_EQ(j["steps"], 2);
  EXPECT_EQ(j["max_in_flight"], 2);
  EXPECT_DOUBLE_EQ(j["window_seconds"].get<double>(), 0.005);
  ASSERT_EQ(j["timeline"].size(), 3u);  // the last one lies past the window
  EXPECT_EQ(j["timeline"][1]["group"], 1);
  EXPECT_EQ(j["timeline"][1]["step"], 0);
  EXPECT_DOUBLE_EQ(j["timeline"][1]["start_s"].get<double>(), 0.0002);
  EXPECT_DOUBLE_EQ(j["timeline"][1]["end_s"].get<double>(), 0.0006);
  EXPECT_DOUBLE_EQ(j["timeline"][2]["start_s"].get<double>(), 0.004);

  ActivationSummary none;  // no steady state: no numbers
  nlohmann::json k = summarize_reductions(reductions, none);
  EXPECT_EQ(k["groups"], 2);
  EXPECT_TRUE(k["max_in_flight"].is_null());
  EXPECT_TRUE(k["timeline"].is_null());
  EXPECT_TRUE(summarize_reductions({}, a).is_null());
}

}  // namespace
}  // namespace desync
