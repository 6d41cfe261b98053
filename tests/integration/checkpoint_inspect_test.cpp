// `desync checkpoint inspect` on the checkpoints of a real 2-worker run: it prints what the
// archives hold and verifies every rank; a damaged, truncated or unfinished rank fails it with
// one line naming the rank and the reason.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"

namespace desync {
namespace {

const char* kJob = R"(
[run]
name = "inspect"
steps = 20
log_every = 10
[data]
dataset = "synthetic"
synthetic_train = 512
synthetic_test = 64
synthetic_shape = [8]
[model]
name = "mlp"
hidden = [16]
[optimizer]
name = "adamw"
lr = 1e-3
[algorithm]
name = "ddp"
[checkpoint]
every = 10
keep = 5
)";

class CheckpointInspect : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    testing::write_file(dir_->file("job.toml"), kJob);
    auto r = testing::run_command(testing::desync_binary() + " train " + dir_->file("job.toml") +
                                  " --quiet --workers 2 --out " + dir_->file("run"));
    ASSERT_EQ(r.status, 0) << r.output;
  }
  static void TearDownTestSuite() { delete dir_; }

  static testing::CommandResult inspect(const std::string& args) {
    return testing::run_command(testing::desync_binary() + " checkpoint inspect " + args);
  }
  // A copy of the run's checkpoints to damage.
  static std::string copy_of_checkpoints(const std::string& name) {
    const std::string copy = dir_->file(name);
    std::filesystem::copy(dir_->file("run/checkpoints"), copy,
                          std::filesystem::copy_options::recursive);
    return copy;
  }

  static testing::TempDir* dir_;
};
testing::TempDir* CheckpointInspect::dir_ = nullptr;

TEST_F(CheckpointInspect, PrintsTheNewestStepAndVerifiesEveryRank) {
  auto r = inspect(dir_->file("run"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* expected :
       {"steps on disk: 10, 20", "step 20 · world 2 · algorithm ddp", "rank 0 ", "rank 1 ",
        "crc32 ", "model.param.", "float32 [16, 8]", "optimizer.", "sampler.epoch",
        "meta.algorithm", "str \"ddp\"", "meta.step", "int 20",
        "verified: step 20 is complete and intact on all 2 ranks"}) {
    EXPECT_NE(r.output.find(expected), std::string::npos) << expected << "\n" << r.output;
  }
  auto older = inspect(dir_->file("run/checkpoints") + " --step 10 --rank 1");
  ASSERT_EQ(older.status, 0) << older.output;
  EXPECT_NE(older.output.find("step 10 · world 2"), std::string::npos) << older.output;
  EXPECT_NE(older.output.find("rank 1: "), std::string::npos) << older.output;
  EXPECT_NE(older.output.find("int 10"), std::string::npos) << older.output;
}

TEST_F(CheckpointInspect, DamagedTruncatedOrUnfinishedRankFailsNamingIt) {
  const std::string flipped = copy_of_checkpoints("flipped");
  {
    std::fstream f(flipped + "/step-00000020/rank1.pt", std::ios::in | std::ios::out);
    f.seekp(100);
    f.put('\x5a');
  }
  auto r = inspect(flipped);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("rank 0   "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("fails verification: rank 1: archive checksum does not match"),
            std::string::npos)
      << r.output;

  const std::string truncated = copy_of_checkpoints("truncated");
  std::filesystem::resize_file(truncated + "/step-00000020/rank0.pt", 1000);
  r = inspect(truncated);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("rank 0: archive is truncated (1000 of"), std::string::npos)
      << r.output;

  const std::string unfinished = copy_of_checkpoints("unfinished");
  std::filesystem::remove(unfinished + "/step-00000020/rank1.manifest.json");
  r = inspect(unfinished);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("rank 1: no manifest"), std::string::npos) << r.output;
  // The older step is still intact.
  EXPECT_EQ(inspect(unfinished + " --step 10").status, 0);
}

TEST_F(CheckpointInspect, BadPathOrStepIsAOneLineUsageError) {
  auto r = inspect(dir_->file("nowhere"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("no such directory"), std::string::npos) << r.output;
  r = inspect(dir_->path());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("has no checkpoints"), std::string::npos) << r.output;
  r = inspect(dir_->file("run") + " --step 15");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("has no step 15 (steps on disk: 10, 20)"), std::string::npos)
      << r.output;
  r = inspect(dir_->file("run") + " --rank 2");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--rank 2 is not a rank"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace desync
