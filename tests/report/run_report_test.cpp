#include "desync/report/run_report.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "desync/core/error.h"
#include "desync/report/compare.h"
#include "test_util.h"

namespace desync {
namespace {

// A finished two-rank run: evaluations at steps 10 and 20 with the given accuracies.
void write_run(const std::string& dir, const std::string& algorithm, double acc10, double acc20,
               double seconds_per_step) {
  std::filesystem::create_directories(dir);
  nlohmann::json summary = {
      {"algorithm", algorithm},
      {"model", "mlp"},
      {"dataset", "synthetic"},
      {"workers", 2},
      {"steps", 20},
      {"samples", 1280},
      {"test_accuracy", acc20},
      {"test_loss", 0.5},
      {"train_loss", 0.4},
      {"wall_seconds", 30.0},
      {"train_seconds", 20 * seconds_per_step},
      {"samples_per_second", 1280 / (20 * seconds_per_step)},
      {"bytes_sent", {2 * 1048576, 4 * 1048576}},
      {"bytes_received", {3 * 1048576, 3 * 1048576}},
      {"comm_wait_seconds", {1.0, 3.0}},
      {"overlapped_comm_seconds", {0.0, 0.0}},
      {"comm_in_flight_seconds", {2.0, 4.0}},
      {"peak_rss_bytes", {100 * 1048576, 300 * 1048576}},
      {"memory_bytes", {{"parameters", {4000, 4000}}, {"gradients", {4000, 4000}}}},
      {"time_breakdown_seconds",
       {{"window", {30, 30}},
        {"compute", {10, 12}},
        {"optimizer", {1, 1}},
        {"wait", {5, 3}},
        {"eval", {2, 2}},
        {"checkpoint", {1, 1}},
        {"other", {11, 11}}}}};
  testing::write_file(dir + "/summary.json", summary.dump(2));
  std::string metrics;
  for (int step = 5; step <= 20; step += 5) {
    double elapsed = step * seconds_per_step;
    metrics += nlohmann::json({{"type", "train"},
                               {"step", step},
                               {"loss", 2.0 / step},
                               {"elapsed", elapsed},
                               {"bytes_sent_per_rank", {step * 1000, step * 2000}}})
                   .dump() +
               "\n";
    if (step % 10 == 0)
      metrics += nlohmann::json({{"type", "eval"},
                                 {"step", step},
                                 {"test_loss", 1.0 / step},
                                 {"test_accuracy", step == 10 ? acc10 : acc20},
                                 {"elapsed", elapsed}})
                     .dump() +
                 "\n";
  }
  testing::write_file(dir + "/metrics.jsonl", metrics);
}

// The <figure> holding chart `id`, or "" if there is none.
std::string figure(const std::string& html, const std::string& id) {
  size_t at = html.find("<figure class=\"chart\" id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  return html.substr(at, html.find("</figure>", at) - at);
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(RunReport, HasEveryChartWithItsMarks) {
  testing::TempDir dir;
  write_run(dir.file("ddp"), "ddp", 0.5, 0.8, 0.1);
  write_run_report(dir.file("ddp"));
  std::string html = testing::read_file(dir.file("ddp/report.html"));
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);  // nothing fetched from anywhere
  // Learning curves: train and test loss; test accuracy.
  EXPECT_EQ(count(figure(html, "loss-vs-step"), "class=\"series\""), 2u);
  EXPECT_EQ(count(figure(html, "loss-vs-time"), "class=\"series\""), 2u);
  EXPECT_EQ(count(figure(html, "accuracy-vs-step"), "class=\"series\""), 1u);  // 2 evaluations
  EXPECT_EQ(count(figure(html, "accuracy-vs-time"), "class=\"series\""), 1u);
  // One line of bytes per rank; memory and utilisation bars per rank.
  std::string bytes = figure(html, "bytes-per-rank");
  EXPECT_NE(bytes.find("data-series=\"rank 0\""), std::string::npos);
  EXPECT_NE(bytes.find("data-series=\"rank 1\""), std::string::npos);
  EXPECT_EQ(count(figure(html, "memory-rss"), "class=\"segment\""), 2u);
  EXPECT_EQ(count(figure(html, "memory-buffers"), "class=\"segment\""), 4u);
  std::string util = figure(html, "utilisation");
  EXPECT_EQ(count(util, "class=\"segment\""), 12u);  // 2 ranks x 6 parts
  EXPECT_NE(util.find("rank 1 · compute: 12 s (40.0 %)"), std::string::npos);
  // The per-rank table: in-flight rate = bytes sent / in-flight time.
  EXPECT_NE(html.find("<td>8.39 Mbit/s</td>"), std::string::npos);  // 2 MiB * 8 / 2 s
  EXPECT_NE(html.find("How the figures are derived"), std::string::npos);
}

// contrastive_local logs erank_<k> per block at every evaluation: one curve per block; a run
// without them has no such chart.
TEST(RunReport, PlotsEachBlocksEffectiveRank) {
  testing::TempDir dir;
  write_run(dir.file("plain"), "ddp", 0.5, 0.8, 0.1);
  write_run(dir.file("local"), "contrastive_local", 0.5, 0.8, 0.1);
  std::string metrics;
  for (nlohmann::json r : load_run(dir.file("local")).metrics) {
    if (r["type"] == "eval")
      for (int k = 1; k <= 3; ++k)
        r["erank_" + std::to_string(k)] = 10.0 / k + r["step"].get<double>();
    metrics += r.dump() + "\n";
  }
  testing::write_file(dir.file("local/metrics.jsonl"), metrics);
  write_run_report(dir.file("local"));
  write_run_report(dir.file("plain"));
  const std::string chart =
      figure(testing::read_file(dir.file("local/report.html")), "erank-vs-step");
  EXPECT_EQ(count(chart, "class=\"series\""), 3u);
  for (const char* block : {"block 1", "block 2", "block 3"})
    EXPECT_NE(chart.find(std::string("data-series=\"") + block + "\""), std::string::npos) << block;
  EXPECT_EQ(chart.find("block 4"), std::string::npos);
  EXPECT_TRUE(figure(testing::read_file(dir.file("plain/report.html")), "erank-vs-step").empty());
}

TEST(RunReport, AccuracyEvaluatedOnlyAtTheEndShowsTheNumberNotAChart) {
  testing::TempDir dir;
  write_run(dir.file("once"), "ddp", 0.5, 0.88125, 0.1);
  // Keep the train records and only the last evaluation (eval.every = 0: only at the end).
  std::string metrics;
  for (const nlohmann::json& r : load_run(dir.file("once")).metrics)
    if (r["type"] == "train" || r["step"] == 20) metrics += r.dump() + "\n";
  testing::write_file(dir.file("once/metrics.jsonl"), metrics);
  write_run_report(dir.file("once"));
  std::string html = testing::read_file(dir.file("once/report.html"));
  for (const char* id : {"accuracy-vs-step", "accuracy-vs-time"}) {
    std::string f = figure(html, id);
    ASSERT_FALSE(f.empty()) << id;
    EXPECT_NE(f.find("data-chart=\"value\""), std::string::npos) << id;
    EXPECT_EQ(f.find("class=\"series\""), std::string::npos) << id << ": a chart of one point";
    EXPECT_EQ(f.find("<circle"), std::string::npos) << id << ": a lone dot";
    EXPECT_NE(f.find("data-series=\"test accuracy\""), std::string::npos) << id;
    EXPECT_NE(f.find(">0.8812<"), std::string::npos) << id;
  }
  EXPECT_NE(figure(html, "accuracy-vs-step").find(">at step 20<"), std::string::npos);
  EXPECT_NE(figure(html, "accuracy-vs-time").find(">at training time 2 s<"), std::string::npos);
  // The loss charts keep their curves: the train loss, and the final test loss beside it.
  EXPECT_EQ(count(figure(html, "loss-vs-step"), "class=\"series\""), 2u);
  EXPECT_NE(figure(html, "loss-vs-step").find("data-chart=\"line\""), std::string::npos);
}

TEST(RunReport, MissingFiguresShowNoDataInsteadOfFailing) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.file("old"));
  testing::write_file(dir.file("old/summary.json"), R"({"algorithm": "ddp", "workers": 2})");
  write_run_report(dir.file("old"));
  std::string html = testing::read_file(dir.file("old/report.html"));
  for (const char* id : {"loss-vs-step", "accuracy-vs-step", "loss-vs-time", "accuracy-vs-time",
                         "bytes-per-rank", "memory-rss", "memory-buffers", "utilisation"}) {
    std::string f = figure(html, id);
    ASSERT_FALSE(f.empty()) << id;
    EXPECT_NE(f.find("no data"), std::string::npos) << id;
  }
}

// Adds the summed activation memory and a reduction timeline (two buckets, two steps) to the
// summary of a run written by write_run().
void add_timelines(const std::string& dir, double summed_peak) {
  nlohmann::json summary = load_run(dir).summary;
  summary["activation_memory"] = {
      {"sample_period_ms", 1.0},
      {"rank_peak_bytes", {3 * 1048576, 3 * 1048576}},
      {"summed_peak_bytes", summed_peak},
      {"summed_mean_bytes", summed_peak / 2},
      {"summed_peak_to_mean", 2.0},
      {"curve",
       {{"t_s", {0.0, 0.001, 0.002, 0.003}},
        {"bytes", {0, summed_peak, 1048576, 0}},
        {"first_step", 5},
        {"last_step", 6}}},
      {"run_curve", {{"t_s", {0.0, 1.0, 2.0}}, {"bytes", {0, summed_peak, 0}}}}};
  summary["reductions"] = {{"groups", 2},
                           {"steps", 20},
                           {"max_in_flight", 2},
                           {"window_seconds", 0.004},
                           {"timeline",
                            {{{"group", 0}, {"step", 5}, {"start_s", 0.0005}, {"end_s", 0.001}},
                             {{"group", 1}, {"step", 5}, {"start_s", 0.0007}, {"end_s", 0.0012}},
                             {{"group", 0}, {"step", 6}, {"start_s", 0.0025}, {"end_s", 0.003}}}}};
  testing::write_file(dir + "/summary.json", summary.dump(2));
}

TEST(RunReport, ActivationMemoryAndReductionTimeline) {
  testing::TempDir dir;
  write_run(dir.file("ddp"), "ddp", 0.5, 0.8, 0.1);
  add_timelines(dir.file("ddp"), 4 * 1048576);
  write_run_report(dir.file("ddp"));
  std::string html = testing::read_file(dir.file("ddp/report.html"));
  std::string window = figure(html, "activation-memory");
  EXPECT_EQ(count(window, "class=\"series\""), 1u);
  EXPECT_NE(window.find("steps 5 to 6"), std::string::npos);
  EXPECT_EQ(count(figure(html, "activation-memory-run"), "class=\"series\""), 1u);
  std::string timeline = figure(html, "reductions");
  EXPECT_EQ(count(timeline, "class=\"interval\""), 3u);
  EXPECT_EQ(count(timeline, "data-row=\"group 0\""), 2u);
  EXPECT_EQ(count(timeline, "data-row=\"group 1\""), 1u);
  EXPECT_NE(html.find("<td>4.0 MiB</td>"), std::string::npos);          // the summed peak
  EXPECT_NE(html.find("<td>6.0 MiB</td>"), std::string::npos);          // the sum of the rank peaks
  EXPECT_NE(html.find("<b>Activation memory</b>"), std::string::npos);  // how it is derived
  EXPECT_NE(html.find("<b>Reductions</b>"), std::string::npos);
}

TEST(RunReport, RunWithoutTimelinesShowsNoData) {
  testing::TempDir dir;
  write_run(dir.file("old"), "ddp", 0.5, 0.8, 0.1);
  write_run_report(dir.file("old"));
  std::string html = testing::read_file(dir.file("old/report.html"));
  for (const char* id : {"activation-memory", "activation-memory-run", "reductions"}) {
    std::string f = figure(html, id);
    ASSERT_FALSE(f.empty()) << id;
    EXPECT_NE(f.find("no data"), std::string::npos) << id;
  }
}

TEST(RunReport, LoadRunRejectsWhatIsNotARunDirectory) {
  testing::TempDir dir;
  try {
    load_run(dir.file("nope"));
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("nope")), std::string::npos);
  }
  try {
    load_run(dir.path());
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("no summary.json"), std::string::npos);
  }
  testing::write_file(dir.file("summary.json"), "{not json");
  EXPECT_THROW(load_run(dir.path()), UsageError);
}

TEST(Compare, TableHasOneRowPerRunWithItsFigures) {
  testing::TempDir dir;
  write_run(dir.file("fast"), "ddp", 0.7, 0.9, 0.1);
  write_run(dir.file("slow"), "zero1", 0.6, 0.8, 1.0);
  std::vector<RunData> runs = {load_run(dir.file("fast")), load_run(dir.file("slow") + "/")};
  EXPECT_EQ(runs[1].name, "slow");
  double target = comparison_target(runs, NAN);
  EXPECT_DOUBLE_EQ(target, 0.8);  // the lowest final accuracy
  EXPECT_DOUBLE_EQ(comparison_target(runs, 0.65), 0.65);

  auto split = [](const std::string& table) {
    std::vector<std::string> lines;
    for (size_t at = 0, nl; (nl = table.find('\n', at)) != std::string::npos; at = nl + 1)
      lines.push_back(table.substr(at, nl - at));
    return lines;
  };
  std::vector<std::string> lines = split(compare_table(runs, 0.65));
  ASSERT_EQ(lines.size(), 4u);  // header, rule, two runs
  EXPECT_NE(lines[0].find("time to 0.6500 (s)"), std::string::npos);
  EXPECT_EQ(lines[1].find_first_not_of("|-: "), std::string::npos);
  auto cells = [](const std::string& line) {
    std::vector<std::string> out;
    std::regex cell("\\|\\s*([^|]*?)\\s*(?=\\|)");
    for (auto it = std::sregex_iterator(line.begin(), line.end(), cell);
         it != std::sregex_iterator(); ++it)
      out.push_back((*it)[1]);
    return out;
  };
  std::vector<std::string> fast = cells(lines[2]), slow = cells(lines[3]);
  ASSERT_EQ(fast.size(), cells(lines[0]).size());
  EXPECT_EQ(fast[0], "fast");
  EXPECT_EQ(fast[1], "ddp");
  EXPECT_EQ(fast[2], "2");
  EXPECT_EQ(fast[3], "1280");     // samples
  EXPECT_EQ(fast[4], "0.9000");   // final accuracy
  EXPECT_EQ(fast[5], "0.5000");   // final test loss
  EXPECT_EQ(fast[6], "1.0");      // 0.7 >= 0.65 at step 10: 10 x 0.1 s
  EXPECT_EQ(slow[6], "20.0");     // 0.6 < 0.65 at step 10; 0.8 at step 20: 20 x 1 s
  EXPECT_EQ(fast[7], "640.0");    // samples/s: 1280 / 2 s
  EXPECT_EQ(fast[8], "3.00");     // MiB sent per rank, mean of 2 and 4
  EXPECT_EQ(fast[9], "4.00");     //   max
  EXPECT_EQ(fast[10], "3.00");    // comm in flight, mean of 2 and 4
  EXPECT_EQ(fast[11], "2.00");    // waiting, mean of 1 and 3
  EXPECT_EQ(fast[12], "300.00");  // peak RSS max, MiB

  // A target nobody reached: "-".
  EXPECT_EQ(cells(split(compare_table(runs, 0.95))[2])[6], "-");
}

TEST(Compare, PeakSummedActivationsColumnWhenARunHasIt) {
  testing::TempDir dir;
  write_run(dir.file("a"), "ddp", 0.7, 0.9, 0.1);
  write_run(dir.file("b"), "cdp", 0.7, 0.9, 0.1);
  write_run(dir.file("c"), "zero1", 0.7, 0.9, 0.1);
  add_timelines(dir.file("a"), 8 * 1048576);
  add_timelines(dir.file("b"), 3 * 1048576);
  std::vector<RunData> runs = {load_run(dir.file("a")), load_run(dir.file("b")),
                               load_run(dir.file("c"))};
  std::string table = compare_table(runs, 0.8);
  std::string head = table.substr(0, table.find('\n'));
  EXPECT_NE(head.find("peak summed activations (MiB)"), std::string::npos);
  EXPECT_NE(head.find("peak RSS (MiB, max)"), std::string::npos);  // the columns before stay
  auto last_cell = [&](const std::string& run) {
    size_t at = table.find("| " + run + " ");
    std::string line = table.substr(at, table.find('\n', at) - at);
    line = line.substr(0, line.rfind('|'));
    std::string cell = line.substr(line.rfind('|') + 1);
    return cell.substr(cell.find_first_not_of(' '),
                       cell.find_last_not_of(' ') - cell.find_first_not_of(' ') + 1);
  };
  EXPECT_EQ(last_cell("a"), "8.00");
  EXPECT_EQ(last_cell("b"), "3.00");
  EXPECT_EQ(last_cell("c"), "-");  // a run without the figure
  EXPECT_NE(compare_html(runs, 0.8).find("peak summed activations (MiB)"), std::string::npos);
  // Runs without it: no such column.
  std::vector<RunData> old = {load_run(dir.file("c"))};
  EXPECT_EQ(compare_table(old, 0.8).find("activations"), std::string::npos);
}

TEST(Compare, PageOverlaysOneCurvePerRun) {
  testing::TempDir dir;
  write_run(dir.file("a"), "ddp", 0.7, 0.9, 0.1);
  write_run(dir.file("b"), "acco", 0.6, 0.8, 1.0);
  std::vector<RunData> runs = {load_run(dir.file("a")), load_run(dir.file("b"))};
  std::string html = compare_html(runs, 0.8);
  for (const char* id : {"compare-loss-vs-step", "compare-accuracy-vs-step", "compare-loss-vs-time",
                         "compare-accuracy-vs-time", "compare-bytes"}) {
    std::string f = figure(html, id);
    EXPECT_EQ(count(f, "class=\"series\""), 2u) << id;
    EXPECT_NE(f.find("data-series=\"a\""), std::string::npos) << id;
    EXPECT_NE(f.find("data-series=\"b\""), std::string::npos) << id;
  }
  EXPECT_EQ(html.find("<script"), std::string::npos);
}

}  // namespace
}  // namespace desync
