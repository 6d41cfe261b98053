// Real multi-process jobs through `desync train --workers N`: DDP equivalence with one worker,
// byte accounting against the formulas (DDP, DiLoCo, D-PSGD, AD-PSGD, GASLoC), and what
// happens when a worker dies or stalls.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "desync/core/checkpoint.h"
#include "desync/report/metrics.h"
#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

const char* kJob = R"(
[run]
name = "dist"
steps = 40
log_every = 1
comm_timeout = 20
[data]
dataset = "synthetic"
synthetic_train = 3072
synthetic_test = 512
synthetic_shape = [16]
[model]
name = "mlp"
hidden = [64]
[optimizer]
lr = 0.05
momentum = 0.9
[checkpoint]
every = 10
keep = 10
)";

struct JobRun {
  testing::CommandResult result;
  nlohmann::json summary;
  std::vector<double> losses;
  double seconds = 0;
};

JobRun train(const testing::TempDir& dir, const std::string& name, const std::string& args,
             const std::string& env = "") {
  testing::write_file(dir.file("job.toml"), kJob);
  JobRun r;
  auto t0 = std::chrono::steady_clock::now();
  r.result = testing::run_command(env + " " + kDesync + " train " + dir.file("job.toml") +
                                  " --quiet --out " + dir.file(name) + " " + args);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.summary =
      nlohmann::json::parse(testing::read_file(dir.file(name + "/summary.json")), nullptr, false);
  r.losses = testing::train_losses(dir.file(name));
  return r;
}

void expect_close(const std::vector<double>& a, const std::vector<double>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tol) << "step " << i + 1;
}

TEST(Distributed, DdpOnNWorkersMatchesOneWorkerWithNTimesTheBatch) {
  for (int n : {2, 3}) {
    testing::TempDir dir;
    JobRun single = train(dir, "single", "--set data.batch_size=" + std::to_string(16 * n));
    JobRun ddp = train(
        dir, "ddp",
        "--workers " + std::to_string(n) + " --set algorithm.name=ddp --set data.batch_size=16");
    ASSERT_EQ(single.result.status, 0) << single.result.output;
    ASSERT_EQ(ddp.result.status, 0) << ddp.result.output;
    expect_close(single.losses, ddp.losses, 1e-5);
    EXPECT_NEAR(single.summary["test_loss"].get<double>(), ddp.summary["test_loss"].get<double>(),
                1e-5);
    EXPECT_EQ(ddp.summary["workers"], n);
    EXPECT_EQ(ddp.summary["samples"], single.summary["samples"]);
  }
}

TEST(Distributed, DdpBytesPerRankFollowRingAllReduce) {
  for (int n : {2, 3}) {
    testing::TempDir dir;
    JobRun ddp =
        train(dir, "ddp",
              "--workers " + std::to_string(n) + " --set algorithm.name=ddp --set run.steps=100");
    ASSERT_EQ(ddp.result.status, 0) << ddp.result.output;
    double psi = ddp.summary["parameters"].get<double>();
    double expected = 100 * 2.0 * (n - 1) / n * psi * 4;  // plus the start-up broadcast
    ASSERT_EQ(ddp.summary["bytes_sent"].size(), static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      double sent = ddp.summary["bytes_sent"][r].get<double>();
      EXPECT_NEAR(sent / expected, 1.0, 0.05) << "rank " << r << " sent " << sent;
    }
  }
}

TEST(Distributed, KilledWorkerIsNamedAndResumeMatchesUninterrupted) {
  // DDP, and the sharded methods whose checkpoints hold optimizer shards and buffers in flight.
  for (std::string algorithm :
       {"--set algorithm.name=ddp", "--set algorithm.name=zero1 --set optimizer.name=adamw",
        "--set algorithm.name=dpu --set algorithm.n_warmup=10 --set optimizer.name=adamw",
        "--set algorithm.name=acco --set algorithm.fixed_count=true --set optimizer.name=adamw",
        "--set algorithm.name=diloco --set algorithm.local_steps=8 --set optimizer.name=adamw",
        "--set algorithm.name=gasloc --set algorithm.local_steps=4 --set optimizer.name=adamw"}) {
    testing::TempDir dir;
    JobRun ref = train(dir, "ref", "--workers 2 " + algorithm);
    ASSERT_EQ(ref.result.status, 0) << ref.result.output;

    JobRun cut =
        train(dir, "cut", "--workers 2 " + algorithm, "DESYNC_FAULT=rank=1,step=25,action=kill");
    EXPECT_NE(cut.result.status, 0);
    EXPECT_NE(cut.result.output.find("worker rank 1 failed (killed by signal 9"), std::string::npos)
        << cut.result.output;
    EXPECT_LT(cut.seconds, 30.0);  // start-up + 25 steps + detection; detection itself is < 1 s
    CheckpointStore store(dir.file("cut/checkpoints"), 0, 2);
    EXPECT_EQ(store.steps_on_disk().back(), 20);

    JobRun resumed = train(dir, "cut", "--workers 2 --resume " + algorithm);
    ASSERT_EQ(resumed.result.status, 0) << resumed.result.output;
    EXPECT_EQ(ref.losses, resumed.losses) << algorithm;
    EXPECT_EQ(ref.summary["test_loss"], resumed.summary["test_loss"]) << algorithm;
  }
}

TEST(Distributed, StalledWorkerTimesOutNamingIt) {
  testing::TempDir dir;
  JobRun stall =
      train(dir, "stall", "--workers 3 --set algorithm.name=ddp --set run.comm_timeout=2",
            "DESYNC_FAULT=rank=2,step=5,action=stall");
  EXPECT_NE(stall.result.status, 0);
  EXPECT_NE(stall.result.output.find("ranks that did not arrive: 2"), std::string::npos)
      << stall.result.output;
  EXPECT_LT(stall.seconds, 30.0);
}

// The pid of the worker process of rank `rank` that launcher `launcher` started, or -1.
int worker_pid(int launcher, int rank) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = testing::read_file(entry.path() / "stat");
    const size_t close = stat.rfind(')');  // "pid (comm) state ppid ..."
    if (close == std::string::npos || std::stoi(stat.substr(close + 4)) != launcher) continue;
    std::string environ = testing::read_file(entry.path() / "environ");
    if (("\0" + environ).find(std::string("\0RANK=", 6) + std::to_string(rank) + '\0') !=
        std::string::npos)
      return std::stoi(pid);
  }
  return -1;
}

// Rank 0 hosts the rendezvous store. Stopped (SIGSTOP), not dead, it leaves the store's
// connections open without an answer: the others' collective times out, and their failure
// report, which asks the store how far each rank got, must not wait for it forever.
TEST(Distributed, StoppedRankZeroEndsTheJob) {
  testing::TempDir dir;
  testing::write_file(dir.file("job.toml"), kJob);
  testing::Child child({kDesync, "train", dir.file("job.toml"), "--quiet", "--workers", "3",
                        "--out", dir.file("stop"), "--set", "algorithm.name=\"ddp\"", "--set",
                        "run.steps=100000", "--set", "checkpoint.every=0", "--set",
                        "run.comm_timeout=3"},
                       dir.file("stop.log"));
  for (int i = 0; i < 600 && read_metrics(dir.file("stop/metrics.jsonl")).size() < 5; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const int rank0 = worker_pid(child.pid(), 0);
  ASSERT_GT(rank0, 0);
  ASSERT_EQ(::kill(rank0, SIGSTOP), 0);
  // The collective's 3 s, the store's 10 s at most, then the launcher stops every worker.
  const int status = child.wait(40);
  ::kill(rank0, SIGCONT);  // if it is still there (it is killed with the job)
  const std::string log = testing::read_file(dir.file("stop.log"));
  EXPECT_NE(status, -1) << "the job hangs with rank 0 stopped\n" << log;
  EXPECT_NE(status, 0) << log;
  EXPECT_NE(log.find("rank 0, which hosts the rendezvous store, did not answer"),
            std::string::npos)
      << log;
}

TEST(Distributed, InterruptStopsAllWorkersWithACommonCheckpoint) {
  testing::TempDir dir;
  testing::write_file(dir.file("job.toml"), kJob);
  testing::Child child({kDesync, "train", dir.file("job.toml"), "--quiet", "--workers", "2",
                        "--out", dir.file("int"), "--set", "algorithm.name=\"ddp\"", "--set",
                        "run.steps=100000", "--set", "checkpoint.every=0"},
                       dir.file("int.log"));
  for (int i = 0; i < 600 && read_metrics(dir.file("int/metrics.jsonl")).size() < 20; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  child.signal(SIGINT);
  EXPECT_EQ(child.wait(30), 130) << testing::read_file(dir.file("int.log"));
  auto s0 = CheckpointStore(dir.file("int/checkpoints"), 0, 2).load_latest(nullptr);
  auto s1 = CheckpointStore(dir.file("int/checkpoints"), 1, 2).load_latest(nullptr);
  ASSERT_TRUE(s0 && s1);
  EXPECT_EQ(s0->step, s1->step);
}

TEST(Distributed, WorkerWithoutRendezvousVariablesIsAUsageError) {
  testing::TempDir dir;
  testing::write_file(dir.file("job.toml"), kJob);
  auto r = testing::run_command("env -u RANK " + kDesync + " worker " + dir.file("job.toml"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("RANK"), std::string::npos) << r.output;
}

TEST(Distributed, SingleAlgorithmRefusesSeveralWorkers) {
  testing::TempDir dir;
  JobRun r = train(dir, "bad", "--workers 2");
  EXPECT_NE(r.result.status, 0);
  EXPECT_NE(r.result.output.find("use a multi-worker algorithm"), std::string::npos)
      << r.result.output;
}

// Decentralized methods over Gloo, 4 workers, 40 steps, one log record at the end (its
// all-reduce of a few doubles is the only other training traffic).
TEST(Distributed, DecentralizedBytesPerRankFollowTheirFormulas) {
  const int n = 4, steps = 40;
  testing::TempDir dir;
  auto run = [&](const std::string& name, const std::string& args) {
    JobRun r = train(dir, name, "--workers 4 --set run.log_every=40 " + args);
    EXPECT_EQ(r.result.status, 0) << r.result.output;
    return r;
  };
  auto sent = [](const JobRun& r, int rank) { return r.summary["bytes_sent"][rank].get<double>(); };
  JobRun diloco = run("diloco", "--set algorithm.name=diloco --set algorithm.local_steps=10");
  JobRun dpsgd = run("dpsgd", "--set algorithm.name=dpsgd --set algorithm.topology=ring");
  JobRun gasloc = run("gasloc", "--set algorithm.name=gasloc --set algorithm.local_steps=10");
  JobRun adpsgd = run("adpsgd", "--set algorithm.name=adpsgd");
  const double psi_bytes = diloco.summary["parameters"].get<double>() * 4;
  // DiLoCo: a ring all-reduce of Ψ every H steps, plus the start-up broadcast from rank 0
  // (binomial tree over 4 ranks: rank 0 sends to 1 and 2, rank 1 to 3).
  const double broadcast_sent[] = {2, 1, 0, 0};
  for (int r = 0; r < n; ++r) {
    double rounds = steps / 10.0;
    EXPECT_NEAR(sent(diloco, r) / ((rounds * 2.0 * (n - 1) / n + broadcast_sent[r]) * psi_bytes),
                1.0, 0.01)
        << "rank " << r;
    EXPECT_NEAR(sent(dpsgd, r) / (steps * 2 * psi_bytes), 1.0, 0.01) << "rank " << r;  // ring
    EXPECT_NEAR(sent(gasloc, r) / (rounds * psi_bytes), 1.0, 0.01) << "rank " << r;    // k = 1
  }
  // AD-PSGD: every step of an active (even) rank averages once with a passive neighbour: Ψ
  // each way. The passive ranks together answer all 2 * steps requests.
  EXPECT_NEAR(sent(adpsgd, 0) / (steps * psi_bytes), 1.0, 0.01);
  EXPECT_NEAR(sent(adpsgd, 2) / (steps * psi_bytes), 1.0, 0.01);
  EXPECT_NEAR((sent(adpsgd, 1) + sent(adpsgd, 3)) / (2 * steps * psi_bytes), 1.0, 0.01);
}

TEST(Distributed, DecentralizedEvaluationLogsTheConsensusDistance) {
  testing::TempDir dir;
  JobRun r = train(dir, "gossip",
                   "--workers 3 --set algorithm.name=dpsgd --set eval.every=10 "
                   "--set run.worker_speed=[1.0,1.0,0.5]");
  ASSERT_EQ(r.result.status, 0) << r.result.output;
  int evals = 0;
  for (const auto& rec : read_metrics(dir.file("gossip/metrics.jsonl"))) {
    if (rec["type"] != "eval") continue;
    ++evals;
    ASSERT_TRUE(rec.contains("consensus_distance")) << rec.dump();
    EXPECT_GT(rec["consensus_distance"].get<double>(), 0.0);
    EXPECT_LT(rec["consensus_distance"].get<double>(), 1.0);
  }
  EXPECT_EQ(evals, 4);  // steps 10, 20, 30 and the final one
  EXPECT_TRUE(r.summary["eval_metrics"].contains("consensus_distance"));
}

TEST(Distributed, AdpsgdWithASlowWorkerFinishesOnFourProcesses) {
  testing::TempDir dir;
  JobRun r = train(dir, "adpsgd",
                   "--workers 4 --set algorithm.name=adpsgd --set run.steps=60 "
                   "--set run.worker_speed=[1.0,0.25,1.0,1.0]");
  ASSERT_EQ(r.result.status, 0) << r.result.output;
  EXPECT_LT(r.summary["test_loss"].get<double>(), r.losses.front());
}

// Pipelines over Gloo: 4 processes, one model stage each (fc1, fc2, fc3, head).
TEST(Distributed, PipelineOnFourProcessesMatchesOneWorker) {
  testing::TempDir dir;
  const std::string model = "--set model.hidden=[64,32,32] --set run.steps=20 ";
  JobRun single = train(dir, "single", model + "--set algorithm.accumulation=4");
  ASSERT_EQ(single.result.status, 0) << single.result.output;
  for (const char* schedule : {"gpipe", "1f1b"}) {
    JobRun pipe = train(dir, schedule,
                        "--workers 4 " + model +
                            "--set algorithm.name=pipeline --set algorithm.accumulation=4 "
                            "--set algorithm.schedule=" +
                            schedule);
    ASSERT_EQ(pipe.result.status, 0) << pipe.result.output;
    expect_close(single.losses, pipe.losses, 1e-5);
    EXPECT_NEAR(single.summary["test_loss"].get<double>(), pipe.summary["test_loss"].get<double>(),
                1e-5);
    EXPECT_EQ(pipe.summary["samples"], single.summary["samples"]);
    EXPECT_EQ(pipe.summary["samples_per_rank"][1], 0);  // only the first stage reads data
    auto in_flight = pipe.summary["algorithm_stats"]["peak_in_flight_micro_batches"];
    for (int s = 0; s < 4; ++s)
      EXPECT_EQ(in_flight[s], std::string(schedule) == "gpipe" ? 4 : std::min(4 - s, 4));
  }
}

// PETRA on a small RevNet, 4 processes: rank 1 holds two reversible blocks and buffers nothing;
// the others (stem, downsampling + reversible block, head) buffer 2(J-1-s)+1 inputs at most.
// PipeDream stashes weights, DSP does not.
TEST(Distributed, DelayedPipelinesReportTheirBuffersPerStage) {
  testing::TempDir dir;
  const std::string job =
      "--workers 4 --set model.name=revnet --set model.blocks=[2,2] --set model.width=4 "
      "--set data.synthetic_shape=[1,8,8] --set algorithm.stages_per_rank=[1,2,2,1] "
      "--set run.steps=12 --set algorithm.accumulation=2 --set checkpoint.enabled=false ";
  for (const char* mode : {"petra", "pipedream", "dsp"}) {
    JobRun r = train(dir, mode, job + "--set algorithm.name=" + mode);
    ASSERT_EQ(r.result.status, 0) << r.result.output;
    auto stats = r.summary["algorithm_stats"];
    auto memory = r.summary["memory_bytes"];
    for (int s = 0; s < 4; ++s) {
      bool inverts = std::string(mode) == "petra" && s == 1;
      EXPECT_EQ(stats["reversible"][s], inverts ? 1 : 0) << mode << " rank " << s;
      EXPECT_EQ(stats["max_delay_ticks"][s], 2 * (3 - s)) << mode << " rank " << s;
      int depth = s == 3 || inverts ? 0 : 2 * (3 - s) + 1;
      EXPECT_EQ(stats["peak_buffered_inputs"][s], depth) << mode << " rank " << s;
      EXPECT_EQ(memory["input_buffers"][s].get<int64_t>() > 0, depth > 0) << mode << " rank " << s;
      bool stashes = std::string(mode) == "pipedream" && depth > 0;
      EXPECT_EQ(stats["peak_stashed_params"][s], stashes ? depth : 0) << mode << " rank " << s;
      EXPECT_EQ(memory["weight_stashes"][s].get<int64_t>() > 0, stashes) << mode << " rank " << s;
    }
    EXPECT_LT(r.summary["test_loss"].get<double>(), 10.0);
  }
}

// The documented DDP example: one epoch on 2 workers reaches >= 0.88.
TEST(Distributed, SlowFashionMnistDdpReachesTarget) {
  testing::TempDir dir;
  auto r = testing::run_command(kDesync + " train " + testing::source_dir() +
                                "/examples/fmnist_ddp.toml --quiet --workers 2 --out " +
                                dir.file("run"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto s = nlohmann::json::parse(testing::read_file(dir.file("run/summary.json")));
  EXPECT_GE(s["test_accuracy"].get<double>(), 0.88) << r.output;
}

}  // namespace
}  // namespace desync
