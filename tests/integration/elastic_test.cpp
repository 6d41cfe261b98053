// Elastic restart: `desync train --resume` on another number of workers. DDP and ZeRO-1 killed
// after a mid-epoch checkpoint on 4 workers and resumed on 2 (and ZeRO-1 from 2 onto 4) read
// every example of the epoch exactly once, counted from the example ids each rank records
// (DESYNC_EXAMPLE_IDS), and end on the data budget; DiLoCo resumes and finishes; a gossip method
// refuses in one line, and so does a resume whose consumed examples are not whole new batches.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

// 3000 examples: an epoch is 46 global batches of 4 x 16 (2944 examples) or 93 of 2 x 16 (2976).
const char* kJob = R"(
[run]
name = "elastic"
epochs = 1
log_every = 1
comm_timeout = 20
[data]
dataset = "synthetic"
synthetic_train = 3000
synthetic_test = 256
synthetic_shape = [16]
batch_size = 16
[model]
name = "mlp"
hidden = [32]
[optimizer]
lr = 0.05
momentum = 0.9
[checkpoint]
every = 10
keep = 10
)";

testing::CommandResult train(const testing::TempDir& dir, const std::string& args,
                             const std::string& env = "") {
  testing::write_file(dir.file("job.toml"), kJob);
  return testing::run_command("DESYNC_EXAMPLE_IDS=1 " + env + " " + kDesync + " train " +
                              dir.file("job.toml") + " --quiet --out " + dir.file("run") + " " +
                              args);
}

// How often each example id was read in epoch 0: the old world's records up to the checkpoint
// (`consumed` examples of the epoch) and every record of the new world.
std::map<int64_t, int> epoch0_reads(const std::string& run, int64_t old_world, int64_t consumed,
                                    int64_t new_world, int64_t* later_epochs) {
  std::map<int64_t, int> reads;
  for (const auto& entry : std::filesystem::directory_iterator(run)) {
    if (entry.path().filename().string().rfind("example-ids-rank", 0) != 0) continue;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      int64_t world, rank, epoch, batch;
      fields >> world >> rank >> epoch >> batch;
      EXPECT_TRUE(world == old_world || world == new_world) << line;
      if (world == old_world && batch * 16 * old_world >= consumed) continue;  // redone
      if (epoch > 0) {
        ++*later_epochs;
        continue;
      }
      for (int64_t id; fields >> id;) ++reads[id];
    }
  }
  return reads;
}

void expect_every_example_once(const std::string& algorithm, int64_t old_world, int64_t new_world,
                               int64_t every, int64_t checkpoint, const std::string& fault) {
  SCOPED_TRACE(algorithm + " " + std::to_string(old_world) + " -> " + std::to_string(new_world));
  testing::TempDir dir;
  const std::string args = "--set checkpoint.every=" + std::to_string(every) + " " + algorithm;
  testing::CommandResult cut =
      train(dir, "--workers " + std::to_string(old_world) + " " + args, "DESYNC_FAULT=" + fault);
  ASSERT_NE(cut.status, 0) << cut.output;

  testing::CommandResult resumed =
      train(dir, "--workers " + std::to_string(new_world) + " --resume " + args);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resuming a " + std::to_string(old_world) +
                                "-worker checkpoint on " + std::to_string(new_world) +
                                " workers: optimizer state re-sharded, the run is no longer "
                                "bitwise comparable to an uninterrupted one"),
            std::string::npos)
      << resumed.output;

  // Every example of the new world's epoch once, none skipped, none of a later epoch.
  const int64_t global = 16 * new_world, consumed = checkpoint * 16 * old_world;
  const int64_t covered = consumed + (3000 - consumed) / global * global;
  int64_t later = 0;
  const std::map<int64_t, int> reads =
      epoch0_reads(dir.file("run"), old_world, consumed, new_world, &later);
  EXPECT_EQ(static_cast<int64_t>(reads.size()), covered);
  for (const auto& [id, n] : reads) EXPECT_EQ(n, 1) << "example " << id;
  EXPECT_EQ(later, 0);

  // The budget, one epoch of the new world, is honoured: its micro-batches and no more.
  const nlohmann::json s = nlohmann::json::parse(testing::read_file(dir.file("run/summary.json")));
  EXPECT_EQ(s["budget"]["micro_batches"], 3000 / global * new_world);
  EXPECT_EQ(s["samples"], covered);
  EXPECT_EQ(s["steps"], 3000 / global);
  EXPECT_EQ(s["workers"], new_world);
  // Only the new world's checkpoints remain.
  for (const auto& step : std::filesystem::directory_iterator(dir.file("run/checkpoints"))) {
    for (const auto& file : std::filesystem::directory_iterator(step.path())) {
      if (file.path().string().find(".manifest.json") == std::string::npos) continue;
      EXPECT_EQ(nlohmann::json::parse(testing::read_file(file.path().string()))["world_size"],
                new_world)
          << file.path();
    }
  }
}

TEST(Elastic, DdpAndZero1From4WorkersOnto2ReadEveryExampleOfTheEpochOnce) {
  for (std::string algorithm :
       {"--set algorithm.name=ddp", "--set algorithm.name=zero1 --set optimizer.name=adamw"})
    expect_every_example_once(algorithm, 4, 2, 10, 20, "rank=1,step=25,action=kill");
}

TEST(Elastic, Zero1From2WorkersOnto4ReadsEveryExampleOfTheEpochOnce) {
  // 10 steps of 2 x 16 = 320 examples: five global batches of 4 x 16.
  expect_every_example_once("--set algorithm.name=zero1 --set optimizer.name=adamw", 2, 4, 10, 10,
                            "rank=1,step=13,action=kill");
}

TEST(Elastic, ResumeInsideANewGlobalBatchRefusesInOneLine) {
  // 5 steps of 2 x 16 = 160 examples: two and a half global batches of 4 x 16.
  testing::TempDir dir;
  const std::string args = "--set checkpoint.every=5 --set algorithm.name=ddp";
  ASSERT_NE(train(dir, "--workers 2 " + args, "DESYNC_FAULT=rank=1,step=7,action=kill").status, 0);
  testing::CommandResult r = train(dir, "--workers 4 --resume " + args);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("the 160 examples of epoch 0 that the 2-worker checkpoint consumed are "
                          "not a whole number of global batches of 4 x 16; resume on 2 workers"),
            std::string::npos)
      << r.output;
}

TEST(Elastic, DilocoFrom4WorkersOnto2RunsToTheEnd) {
  expect_every_example_once(
      "--set algorithm.name=diloco --set algorithm.local_steps=4 --set optimizer.name=adamw", 4, 2,
      10, 20, "rank=1,step=25,action=kill");
}

TEST(Elastic, GossipMethodRefusesInOneLine) {
  testing::TempDir dir;
  const std::string args = "--set algorithm.name=dpsgd --set run.steps=12";
  ASSERT_EQ(train(dir, "--workers 4 " + args).status, 0);
  testing::CommandResult r = train(dir, "--workers 2 --resume " + args);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("dpsgd cannot resume on another number of workers: each worker's model "
                          "and gossip state belong to its place in the topology (the checkpoint "
                          "is from 4 workers; resume with --workers 4)"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace desync
