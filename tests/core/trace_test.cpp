#include "desync/core/trace.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "desync/core/background.h"
#include "test_util.h"

namespace desync {
namespace {

// Spans far in the past of the trace clock, so real spans recorded meanwhile do not interfere.
TEST(Tracer, ThreadTimeGivesEachInstantToTheOutermostSpanOfThisThread) {
  Tracer& t = Tracer::instance();
  t.clear();
  t.span("phase", "phase", -1000, 0);      // a label: occupies nothing
  t.span("eval", "eval", -1000, -900);     // holds a nested wait
  t.span("wait", "wait", -980, -950);      // inside eval: counted as eval
  t.span("fb", "compute", -800, -700);     //
  t.span("ar", "comm", -750, -600);        // in flight: does not occupy the thread
  t.span("wait", "wait", -650, -600);      //
  t.span("opt", "optimizer", -600, -580);  //
  t.span("ckpt", "checkpoint", -50, 50);   // clipped to the window
  std::thread([&] { t.span("fb", "compute", -1000, 0); }).join();  // another thread's
  Tracer::ThreadTime tt = t.thread_time(-1000, 0);
  EXPECT_DOUBLE_EQ(tt.eval, 100e-6);
  EXPECT_DOUBLE_EQ(tt.compute, 100e-6);
  EXPECT_DOUBLE_EQ(tt.wait, 50e-6);
  EXPECT_DOUBLE_EQ(tt.optimizer, 20e-6);
  EXPECT_DOUBLE_EQ(tt.checkpoint, 50e-6);
  EXPECT_DOUBLE_EQ(tt.other, (1000 - 320) * 1e-6);
  t.clear();
}

TEST(Tracer, BusySecondsIsTheUnionOverThreadsOfOneCategory) {
  Tracer& t = Tracer::instance();
  t.clear();
  t.span("all_reduce", "comm", -1000, -900);
  std::thread([&] { t.span("all_gather", "comm", -950, -850); }).join();  // overlaps
  t.span("send", "comm", -500, -400);
  t.span("fb", "compute", -400, -100);  // other categories do not count
  EXPECT_DOUBLE_EQ(t.busy_seconds("comm", -1000, 0), 250e-6);
  EXPECT_DOUBLE_EQ(t.busy_seconds("comm", -1000, -450), 200e-6);  // clipped
  EXPECT_DOUBLE_EQ(t.busy_seconds("wait", -1000, 0), 0.0);
  t.clear();
}

TEST(Tracer, JoiningABackgroundTaskIsAWaitOfTheJoiningThread) {
  Tracer& t = Tracer::instance();
  t.clear();
  int64_t begin = Tracer::now_us();
  BackgroundTask task;
  task.start([] { std::this_thread::sleep_for(std::chrono::milliseconds(30)); });
  double waited = task.join();
  Tracer::ThreadTime tt = t.thread_time(begin, Tracer::now_us());
  EXPECT_GT(waited, 0.0);
  EXPECT_NEAR(tt.wait, waited, 1e-3);  // the same interval, timed by two clocks

  testing::TempDir dir;
  t.write(dir.file("trace.json"), 3);
  nlohmann::json doc = nlohmann::json::parse(testing::read_file(dir.file("trace.json")));
  bool found = false;
  for (const auto& e : doc["traceEvents"])
    if (e["name"] == "join_comm_thread") {
      found = true;
      EXPECT_EQ(e["cat"], "wait");
      EXPECT_EQ(e["ph"], "X");
      EXPECT_EQ(e["pid"], 3);
    }
  EXPECT_TRUE(found);
  t.clear();
}

TEST(Tracer, WrittenTimestampsAreOnTheMachinesMonotonicClock) {
  Tracer& t = Tracer::instance();
  t.clear();
  int64_t now = Tracer::now_us();
  t.span("fb", "compute", now, now + 10);
  testing::TempDir dir;
  t.write(dir.file("trace.json"), 0);
  int64_t clock_us = std::chrono::duration_cast<std::chrono::microseconds>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
  nlohmann::json doc = nlohmann::json::parse(testing::read_file(dir.file("trace.json")));
  const nlohmann::json& e = doc["traceEvents"].back();
  ASSERT_EQ(e["name"], "fb");
  EXPECT_EQ(e["dur"], 10);
  // Another process on this machine reading the same clock gets the same time axis.
  EXPECT_LE(e["ts"].get<int64_t>(), clock_us);
  EXPECT_GT(e["ts"].get<int64_t>(), clock_us - 5'000'000);
  t.clear();
}

// Writing reads the span list and the drop count under the lock, while other threads (a comm
// thread, AD-PSGD's servers) record and clear() resets both. It read the count after releasing
// the lock: a data race that ThreadSanitizer (`make test-tsan`) reports here.
TEST(Tracer, WritingWhileAnotherThreadRecordsAndClearsIsRaceFree) {
  Tracer& t = Tracer::instance();
  t.clear();
  testing::TempDir dir;
  std::atomic<bool> stop{false};
  std::thread other([&] {
    while (!stop.load()) {
      t.span("fb", "compute", -10, 0);
      t.clear();
    }
  });
  for (int i = 0; i < 50; ++i) t.write(dir.file("trace.json"), 0);
  stop.store(true);
  other.join();
  nlohmann::json doc = nlohmann::json::parse(testing::read_file(dir.file("trace.json")));
  EXPECT_EQ(doc["otherData"]["dropped_events"], 0);
  t.clear();
}

}  // namespace
}  // namespace desync
