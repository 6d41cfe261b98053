// The `desync` command as users run it: exit codes, one-line errors, run directories,
// interruption and resume, and the accuracy of the documented example.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "desync/algorithms/registry.h"
#include "desync/core/checkpoint.h"
#include "desync/report/metrics.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::train_losses;

const std::string kDesync = testing::desync_binary();
const std::string kSource = testing::source_dir();

const char* kTinyJob = R"(
[run]
name = "tiny"
steps = 60
log_every = 1
[data]
dataset = "synthetic"
synthetic_train = 2048
synthetic_test = 512
synthetic_shape = [16]
batch_size = 32
[model]
name = "mlp"
hidden = [64]
[optimizer]
lr = 0.05
momentum = 0.9
[checkpoint]
every = 20
)";

std::string desync(const std::string& args) { return kDesync + " " + args; }

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(Cli, VersionAndList) {
  auto v = testing::run_command(desync("version"));
  EXPECT_EQ(v.status, 0);
  EXPECT_NE(v.output.find("desync "), std::string::npos);
  auto l = testing::run_command(desync("list"));
  EXPECT_EQ(l.status, 0);
  for (const char* w : {"single", "mlp", "cnn", "resnet18", "fashion-mnist", "cifar10"})
    EXPECT_NE(l.output.find(w), std::string::npos) << w;
}

TEST(Cli, ListNamesEveryRegisteredAlgorithm) {
  auto l = testing::run_command(desync("list"));
  ASSERT_EQ(l.status, 0) << l.output;
  ASSERT_FALSE(algorithm_registry().empty());
  // Each algorithm opens an indented line of its own: "  <name>  <family>  <summary>".
  for (const AlgorithmInfo& info : algorithm_registry())
    EXPECT_NE(l.output.find("\n  " + info.name + " "), std::string::npos)
        << info.name << " is not listed in:\n"
        << l.output;
}

TEST(Cli, HelpExitsZero) {
  EXPECT_EQ(testing::run_command(desync("--help")).status, 0);
  EXPECT_EQ(testing::run_command(desync("train --help")).status, 0);
}

TEST(Cli, UsageErrorExitsTwoWithOneLine) {
  auto r = testing::run_command(desync("train"));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(count_lines(r.output), 1) << r.output;
  r = testing::run_command(desync("frobnicate"));
  EXPECT_EQ(r.status, 2);
}

TEST(Cli, ConfigErrorExitsTwoWithOneLine) {
  testing::TempDir dir;
  testing::write_file(dir.file("bad.toml"), "[optimizer]\nlr = 0.1\nmomentun = 0.9\n");
  auto r = testing::run_command(desync("train " + dir.file("bad.toml")));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(count_lines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("bad.toml:3"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("optimizer.momentun"), std::string::npos) << r.output;

  r = testing::run_command(desync("train " + dir.file("missing.toml")));
  EXPECT_EQ(r.status, 2);
  r = testing::run_command(desync("train " + dir.file("bad.toml") + " --set algorithm.name=nope"));
  EXPECT_EQ(r.status, 2);
}

TEST(Cli, UnknownAlgorithmKeyExitsTwo) {
  testing::TempDir dir;
  testing::write_file(dir.file("c.toml"), std::string(kTinyJob) + "[algorithm]\nwarmup = 3\n");
  auto r = testing::run_command(desync("train " + dir.file("c.toml")));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("unknown key algorithm.warmup"), std::string::npos) << r.output;
}

TEST(Cli, MissingDataExitsOneNamingThePath) {
  testing::TempDir dir;
  testing::write_file(dir.file("c.toml"),
                      "[data]\ndataset = \"mnist\"\npath = \"" + dir.file("nowhere") + "\"\n");
  auto r = testing::run_command(desync("train " + dir.file("c.toml") + " --quiet"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find(dir.file("nowhere")), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("Exception raised"), std::string::npos) << r.output;
}

TEST(Cli, TrainsAndWritesSummary) {
  testing::TempDir dir;
  testing::write_file(dir.file("c.toml"), kTinyJob);
  auto r = testing::run_command(
      desync("train " + dir.file("c.toml") + " --out " + dir.file("run") + " --set run.steps=30"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("test accuracy"), std::string::npos) << r.output;
  auto summary = nlohmann::json::parse(testing::read_file(dir.file("run/summary.json")));
  EXPECT_EQ(summary["steps"], 30);
  EXPECT_EQ(train_losses(dir.file("run")).size(), 30u);
  // The resolved config is a valid config that reproduces the run.
  auto again = testing::run_command(
      desync("train " + dir.file("run/config.toml") + " --out " + dir.file("run2") + " --quiet"));
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_EQ(train_losses(dir.file("run")), train_losses(dir.file("run2")));
}

TEST(Cli, InterruptCheckpointsAndResumeMatchesUninterrupted) {
  testing::TempDir dir;
  testing::write_file(dir.file("c.toml"), kTinyJob);
  std::string slow = " --set run.steps=400 --set checkpoint.every=1000";
  auto ref = testing::run_command(
      desync("train " + dir.file("c.toml") + " --quiet --out " + dir.file("ref") + slow));
  ASSERT_EQ(ref.status, 0) << ref.output;

  testing::Child child({kDesync, "train", dir.file("c.toml"), "--out", dir.file("cut"), "--set",
                        "run.steps=400", "--set", "checkpoint.every=1000"},
                       dir.file("cut.log"));
  // Wait until training has made progress, then interrupt.
  for (int i = 0; i < 600 && train_losses(dir.file("cut")).size() < 20; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  child.signal(SIGINT);
  int status = child.wait(30);
  std::string log = testing::read_file(dir.file("cut.log"));
  ASSERT_EQ(status, 130) << log;
  EXPECT_NE(log.find("--resume"), std::string::npos) << log;
  CheckpointStore store(dir.file("cut/checkpoints"), 0, 1);
  ASSERT_EQ(store.steps_on_disk().size(), 1u);
  EXPECT_LT(store.steps_on_disk()[0], 400);

  auto resumed = testing::run_command(
      desync("train " + dir.file("c.toml") + " --quiet --resume --out " + dir.file("cut") + slow));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_EQ(train_losses(dir.file("ref")), train_losses(dir.file("cut")));
}

// The documented example: one epoch of the CNN on Fashion-MNIST reaches >= 0.88.
TEST(Cli, SlowFashionMnistCnnReachesTarget) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist"))
    GTEST_SKIP() << "Fashion-MNIST not installed (scripts/install-deps installs it)";
  testing::TempDir dir;
  auto r = testing::run_command(
      desync("train " + kSource + "/examples/fmnist_cnn.toml --quiet --out " + dir.file("run")));
  ASSERT_EQ(r.status, 0) << r.output;
  auto summary = nlohmann::json::parse(testing::read_file(dir.file("run/summary.json")));
  EXPECT_GE(summary["test_accuracy"].get<double>(), 0.88) << r.output;
}

}  // namespace
}  // namespace desync
