// The rendezvous refuses what does not belong to the job, with one line naming the mismatch, and
// the job does not hang: real `desync worker` processes started by hand (as a torchrun-style
// launcher would) with a wrong job token, a duplicate RANK, a WORLD_SIZE that disagrees, and a
// late worker that finds the store of a job that already started.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include "desync/comm/launcher.h"
#include "test_util.h"

namespace desync {
namespace {

// 400 steps of a small MLP: long enough for a late worker to find the job running.
const char* kJob = R"(
[run]
name = "rdzv"
steps = 400
log_every = 1
comm_timeout = 8
[data]
dataset = "synthetic"
synthetic_train = 2048
synthetic_test = 256
synthetic_shape = [16]
[model]
name = "mlp"
hidden = [32]
[algorithm]
name = "ddp"
[checkpoint]
enabled = false
)";

struct Worker {
  int64_t rank;
  int64_t world_size;
  std::string token;
};

class Rendezvous : public ::testing::Test {
 protected:
  void SetUp() override { testing::write_file(dir_.file("job.toml"), kJob); }

  // Starts `desync worker` with the torchrun variables of `w`, writing the job's run directory
  // ("job"); its output goes to log(name).
  std::unique_ptr<testing::Child> start(const std::string& name, const Worker& w) {
    return std::make_unique<testing::Child>(
        std::vector<std::string>{"/usr/bin/env", "RANK=" + std::to_string(w.rank),
                                 "WORLD_SIZE=" + std::to_string(w.world_size),
                                 "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port_),
                                 "DESYNC_JOB_TOKEN=" + w.token, testing::desync_binary(), "worker",
                                 dir_.file("job.toml"), "--quiet", "--out", dir_.file("job")},
        log(name));
  }
  std::string log(const std::string& name) const { return dir_.file(name + ".log"); }
  std::string output(const std::string& name) const { return testing::read_file(log(name)); }

  testing::TempDir dir_;
  int64_t port_ = free_loopback_port();
};

TEST_F(Rendezvous, WrongJobTokenIsRefusedAndTheJobTimesOutNamingTheRank) {
  auto rank0 = start("r0", {0, 2, "job-a"});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // rank 0 hosts the store first
  auto stray = start("stray", {1, 2, "job-b"});
  EXPECT_NE(stray->wait(20), 0);
  EXPECT_NE(output("stray").find("job token mismatch"), std::string::npos) << output("stray");
  // The stray is not the job's, so it does not stop the job: rank 0 waits for its rank 1 until
  // the time-out (comm_timeout = 8 s) and names it.
  EXPECT_NE(rank0->wait(30), 0);
  EXPECT_NE(output("r0").find("ranks that did not arrive: 1"), std::string::npos) << output("r0");
}

TEST_F(Rendezvous, DuplicateRankIsRefusedAndStopsTheJobAtOnce) {
  auto rank0 = start("r0", {0, 3, "job"});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto first = start("first", {1, 3, "job"});
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the first rank 1 claims it
  const auto t0 = std::chrono::steady_clock::now();
  auto second = start("second", {1, 3, "job"});
  EXPECT_NE(second->wait(20), 0);
  EXPECT_NE(output("second").find("RANK=1 is already taken"), std::string::npos)
      << output("second");
  // The job's waiting ranks stop with the same reason, well before the 8 s time-out.
  EXPECT_NE(rank0->wait(20), 0);
  EXPECT_NE(first->wait(20), 0);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 6.0);
  for (const char* name : {"r0", "first"}) {
    EXPECT_NE(output(name).find("rank 1: RANK=1 is already taken"), std::string::npos)
        << output(name);
  }
}

TEST_F(Rendezvous, WorldSizeThatDisagreesIsRefusedAndStopsTheJobAtOnce) {
  auto rank0 = start("r0", {0, 2, "job"});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = std::chrono::steady_clock::now();
  auto other = start("other", {1, 3, "job"});
  EXPECT_NE(other->wait(20), 0);
  EXPECT_NE(output("other").find("WORLD_SIZE=3 disagrees with the job's WORLD_SIZE=2"),
            std::string::npos)
      << output("other");
  EXPECT_NE(rank0->wait(20), 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 6.0);
  EXPECT_NE(output("r0").find("WORLD_SIZE=3 disagrees"), std::string::npos) << output("r0");
}

TEST_F(Rendezvous, LateWorkerFindingAStartedJobIsRefusedAndTheJobGoesOn) {
  auto rank0 = start("r0", {0, 2, "job"});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto rank1 = start("r1", {1, 2, "job"});
  // Wait until the job trains (its first metrics record), then send a late rank 1.
  const std::string metrics = dir_.file("job/metrics.jsonl");
  for (int i = 0; i < 300 && !std::filesystem::exists(metrics); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(std::filesystem::exists(metrics)) << output("r0");
  auto late = start("late", {1, 2, "job"});
  EXPECT_NE(late->wait(20), 0);
  EXPECT_NE(output("late").find("already started with all 2 ranks"), std::string::npos)
      << output("late");
  EXPECT_EQ(rank0->wait(120), 0) << output("r0");
  EXPECT_EQ(rank1->wait(120), 0) << output("r1");
}

}  // namespace
}  // namespace desync
