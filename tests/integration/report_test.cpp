// What a run leaves to look at, as users open it: report.html rendered by a real browser
// (headless Chromium), `desync compare` on real runs, and the phases named in the traces.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

const char* kJob = R"(
[run]
name = "report"
steps = 30
log_every = 5
threads = 1
[data]
dataset = "synthetic"
synthetic_train = 2048
synthetic_test = 256
synthetic_shape = [16]
batch_size = 16
[model]
name = "mlp"
hidden = [32]
[optimizer]
lr = 0.05
momentum = 0.9
[eval]
every = 10
[checkpoint]
enabled = false
)";

testing::CommandResult train(const testing::TempDir& dir, const std::string& name,
                             const std::string& args) {
  testing::write_file(dir.file("job.toml"), kJob);
  return testing::run_command(kDesync + " train " + dir.file("job.toml") + " --quiet --out " +
                              dir.file(name) + " " + args);
}

// Debian's Chromium, or "" if it is not installed.
std::string chromium() {
  for (const char* name : {"chromium", "chromium-browser"}) {
    auto r = testing::run_command(std::string("command -v ") + name);
    if (r.status == 0 && !r.output.empty()) return r.output.substr(0, r.output.find('\n'));
  }
  return "";
}

// The DOM of `page` after Chromium parsed and laid it out.
std::string rendered_dom(const std::string& browser, const std::string& page,
                         const testing::TempDir& dir) {
  // A profile of our own: nothing read from or left in the user's.
  auto r = testing::run_command("(" + browser +
                                " --headless --no-sandbox --disable-gpu --no-first-run " +
                                "--user-data-dir=" + dir.file("chromium-profile") +
                                " --dump-dom file://" + page + " 2>/dev/null)");
  EXPECT_EQ(r.status, 0);
  return r.output;
}

// The <figure> holding chart `id` in `dom`, or "" if there is none.
std::string figure(const std::string& dom, const std::string& id) {
  size_t at = dom.find("id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  at = dom.rfind("<figure", at);
  return dom.substr(at, dom.find("</figure>", at) - at);
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(Report, DdpReportRendersInChromiumWithAllCharts) {
  const std::string browser = chromium();
  if (browser.empty())
    GTEST_SKIP() << "chromium is not installed (scripts/install-deps installs Debian's chromium)";
  testing::TempDir dir;
  auto r = train(dir, "ddp", "--workers 2 --set algorithm.name=ddp");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string page = dir.file("ddp/report.html");
  ASSERT_TRUE(std::filesystem::exists(page));
  std::string dom = rendered_dom(browser, page, dir);
  ASSERT_NE(dom.find("</html>"), std::string::npos) << dom.substr(0, 500);

  struct Expect {
    const char* id;
    const char* mark;
    size_t at_least;
  };
  for (const Expect& e : {Expect{"loss-vs-step", "class=\"series\"", 2},
                          Expect{"accuracy-vs-step", "class=\"series\"", 1},
                          Expect{"loss-vs-time", "class=\"series\"", 2},
                          Expect{"accuracy-vs-time", "class=\"series\"", 1},
                          Expect{"bytes-per-rank", "class=\"series\"", 2},
                          Expect{"memory-rss", "class=\"segment\"", 2},
                          Expect{"memory-buffers", "class=\"segment\"", 2},
                          Expect{"utilisation", "class=\"segment\"", 4}}) {
    std::string f = figure(dom, e.id);
    ASSERT_FALSE(f.empty()) << "chart " << e.id << " missing from the rendered page";
    EXPECT_EQ(count(f, "<svg"), 1u) << e.id;
    EXPECT_GE(count(f, e.mark), e.at_least) << e.id;
    EXPECT_EQ(f.find("no data"), std::string::npos) << e.id;
  }
}

TEST(Report, CompareTabulatesRunsAndOverlaysTheirCurves) {
  testing::TempDir dir;
  ASSERT_EQ(train(dir, "ddp", "--workers 2 --set algorithm.name=ddp").status, 0);
  ASSERT_EQ(train(dir, "zero1",
                  "--workers 2 --set algorithm.name=zero1 --set optimizer.name=adamw "
                  "--set optimizer.lr=0.003")
                .status,
            0);
  auto r =
      testing::run_command("(" + kDesync + " compare " + dir.file("ddp") + " " + dir.file("zero1") +
                           " --out " + dir.file("pages/compare.html") + " 2>/dev/null)");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(count(r.output, "\n"), 4u) << r.output;  // header, rule, two runs
  EXPECT_NE(r.output.find("| ddp "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| zero1 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("final accuracy"), std::string::npos);

  std::string html = testing::read_file(dir.file("pages/compare.html"));
  for (const char* id : {"compare-loss-vs-step", "compare-accuracy-vs-time", "compare-bytes"}) {
    std::string f = figure(html, id);
    EXPECT_EQ(count(f, "class=\"series\""), 2u) << id;
  }
  const std::string browser = chromium();
  if (!browser.empty()) {
    std::string dom = rendered_dom(browser, dir.file("pages/compare.html"), dir);
    EXPECT_EQ(count(figure(dom, "compare-loss-vs-step"), "class=\"series\""), 2u);
  }
}

TEST(Report, CompareRejectsWhatIsNotARunWithOneLineAndStatusTwo) {
  testing::TempDir dir;
  auto missing = testing::run_command(kDesync + " compare " + dir.file("nope") + " --out " +
                                      dir.file("c.html"));
  EXPECT_EQ(missing.status, 2);
  EXPECT_EQ(count(missing.output, "\n"), 1u) << missing.output;
  EXPECT_NE(missing.output.find(dir.file("nope")), std::string::npos) << missing.output;

  std::filesystem::create_directories(dir.file("empty"));
  auto empty = testing::run_command(kDesync + " compare " + dir.file("empty") + " --out " +
                                    dir.file("c.html"));
  EXPECT_EQ(empty.status, 2);
  EXPECT_NE(empty.output.find("no summary.json"), std::string::npos) << empty.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("c.html")));

  auto none = testing::run_command(kDesync + " compare");
  EXPECT_EQ(none.status, 2);
}

// The names of the spans in a trace, per category.
std::map<std::string, std::set<std::string>> span_names(const std::string& trace_path) {
  nlohmann::json doc = nlohmann::json::parse(testing::read_file(trace_path));
  std::map<std::string, std::set<std::string>> out;
  for (const auto& e : doc["traceEvents"])
    if (e["ph"] == "X") out[e["cat"].get<std::string>()].insert(e["name"].get<std::string>());
  return out;
}

TEST(Report, TracesNameAlgorithmPhasesOnEveryRank) {
  testing::TempDir dir;
  auto acco = train(dir, "acco",
                    "--workers 2 --set algorithm.name=acco --set optimizer.name=adamw "
                    "--set optimizer.lr=0.003");
  ASSERT_EQ(acco.status, 0) << acco.output;
  auto dpu = train(dir, "dpu",
                   "--workers 2 --set algorithm.name=dpu --set algorithm.n_warmup=3 "
                   "--set optimizer.name=adamw --set optimizer.lr=0.003");
  ASSERT_EQ(dpu.status, 0) << dpu.output;
  for (int rank : {0, 1}) {
    auto a = span_names(dir.file("acco/trace-rank" + std::to_string(rank) + ".json"));
    for (const char* phase : {"acco_init", "acco_estimate_round_compute", "acco_real_round_compute",
                              "acco_estimate_round_comm", "acco_real_round_comm"})
      EXPECT_TRUE(a["phase"].count(phase)) << "rank " << rank << ": " << phase;
    EXPECT_TRUE(a["compute"].count("forward_backward"));
    EXPECT_TRUE(a["optimizer"].count("optimizer"));
    EXPECT_TRUE(a["wait"].count("join_comm_thread"));
    EXPECT_TRUE(a["comm"].count("all_gather"));

    auto d = span_names(dir.file("dpu/trace-rank" + std::to_string(rank) + ".json"));
    for (const char* phase :
         {"dpu_warmup_step", "dpu_bootstrap", "dpu_gradients", "dpu_delayed_update"})
      EXPECT_TRUE(d["phase"].count(phase)) << "rank " << rank << ": " << phase;
  }
  // The summary's time breakdown adds up to each rank's run time.
  nlohmann::json s = nlohmann::json::parse(testing::read_file(dir.file("acco/summary.json")));
  const nlohmann::json& tb = s["time_breakdown_seconds"];
  for (int rank : {0, 1}) {
    double parts = 0;
    for (const char* p : {"compute", "optimizer", "wait", "eval", "checkpoint", "other"})
      parts += tb[p][rank].get<double>();
    EXPECT_NEAR(parts, tb["window"][rank].get<double>(), 1e-3) << "rank " << rank;
    EXPECT_GT(tb["compute"][rank].get<double>(), 0);
    EXPECT_GT(s["comm_in_flight_seconds"][rank].get<double>(), 0);
  }
}

TEST(Report, InFlightEqualsWaitingPlusOverlappedInEveryFamily) {
  // docs/observability.md defines the time figures once for every algorithm: communication in
  // flight (the trace's comm spans, all threads), waiting (the Communicator's timers on the
  // training thread) and overlapped (in flight while the training thread did not wait). In
  // flight + waiting without communication in flight (DPU's join while its background thread
  // updates the shard) = waiting + overlapped, up to evaluation's communication and the skew
  // between the Communicator's timers and the trace's spans.
  const std::vector<std::pair<std::string, std::string>> runs = {
      {"ddp", "--set algorithm.name=ddp --set algorithm.bucket_cap_mb=0.001"},
      {"zero1", "--set algorithm.name=zero1"},
      {"dpu", "--set algorithm.name=dpu --set algorithm.n_warmup=3"},
      {"acco", "--set algorithm.name=acco"},
      {"diloco", "--set algorithm.name=diloco --set algorithm.local_steps=5"},
      {"dpsgd", "--set algorithm.name=dpsgd"},
      {"adpsgd", "--set algorithm.name=adpsgd"},
      {"gasloc", "--set algorithm.name=gasloc --set algorithm.local_steps=5"},
      {"1f1b", "--set algorithm.name=pipeline --set algorithm.accumulation=4"},
      {"pipedream", "--set algorithm.name=pipedream --set algorithm.accumulation=4"}};
  testing::TempDir dir;
  for (const auto& [name, args] : runs) {
    auto r = train(dir, name, "--workers 2 --set eval.every=0 " + args);
    ASSERT_EQ(r.status, 0) << name << ": " << r.output;
    nlohmann::json s = nlohmann::json::parse(testing::read_file(dir.file(name + "/summary.json")));
    for (int rank : {0, 1}) {
      const double in_flight = s["comm_in_flight_seconds"][rank].get<double>();
      const double waiting = s["comm_wait_seconds"][rank].get<double>();
      const double overlapped = s["overlapped_comm_seconds"][rank].get<double>();
      const double without = s["wait_without_comm_seconds"][rank].get<double>();
      EXPECT_GT(in_flight, 0.0) << name << " rank " << rank;
      EXPECT_GE(overlapped, 0.0) << name << " rank " << rank;
      EXPECT_NEAR(in_flight + without, waiting + overlapped, 0.02 + 0.05 * in_flight)
          << name << " rank " << rank << ": in flight " << in_flight << " s, waiting " << waiting
          << " s, overlapped " << overlapped << " s, waiting without communication " << without
          << " s";
    }
  }
}

}  // namespace
}  // namespace desync
