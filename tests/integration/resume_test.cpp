// Every registered algorithm resumes exactly: one test per entry of algorithm_registry(), so an
// algorithm is held to it the moment it is registered. A real job (2 workers by default, 1 for
// `single`) runs 8 steps with a checkpoint at step 5; a copy of its run directory without the
// later checkpoints is resumed with --resume; the per-step losses, the test loss and every rank's
// final checkpoint (model, optimizer, the algorithm's own state) must be bitwise those of the
// uninterrupted run. An algorithm whose load() refuses, or whose checkpoint misses state that the
// next steps read (a buffer in flight, a counter), fails here.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "desync/algorithms/registry.h"
#include "resume_check.h"
#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();
constexpr int64_t kSteps = 8, kCheckpoint = 5;

const char* kJob = R"(
[run]
log_every = 1
comm_timeout = 20
[data]
dataset = "synthetic"
synthetic_train = 1024
synthetic_test = 128
synthetic_shape = [12]
[model]
name = "mlp"
hidden = [32, 16]
[optimizer]
lr = 0.1
momentum = 0.9
[checkpoint]
every = 5
keep = 10
)";

// Options that put the checkpoint inside the algorithm's own period (a round, an update of k
// micro-batches), make a method deterministic where it has a switch for it, or give it the
// workers that exercise its state (PETRA's middle ranks invert a RevNet block each). Every other
// algorithm runs with its defaults on 2 workers.
struct Sharpen {
  std::string args;
  int64_t workers = 2;
};
const std::map<std::string, Sharpen> kSharpen = {
    {"acco", {"--set algorithm.fixed_count=true"}},
    {"diloco", {"--set algorithm.local_steps=2"}},
    {"gasloc", {"--set algorithm.local_steps=2"}},
    {"pipedream", {"--set algorithm.accumulation=3", 3}},
    {"dsp", {"--set algorithm.accumulation=2", 3}},
    {"ppmi_svd", {"--set run.steps=1 --set checkpoint.every=1"}},  // one step: the final one
    {"petra",
     {"--set model.name=revnet --set 'model.blocks=[2]' --set model.width=4 "
      "--set 'data.synthetic_shape=[1, 8, 8]' --set data.batch_size=4 "
      "--set algorithm.accumulation=2",
      4}},
};

int64_t workers_for(const AlgorithmInfo& info) {
  if (info.name == "single") return 1;
  auto it = kSharpen.find(info.name);
  return it == kSharpen.end() ? 2 : it->second.workers;
}

// Methods whose runs are not bit-reproducible (the order of events depends on timing): they must
// resume and finish the budget, and are not compared bitwise.
const std::set<std::string> kNotReproducible = {"adpsgd"};

// The job's options for `info`: the text family reads a small words corpus; the federated
// methods need clients that fit the 1024 examples.
std::string options_for(const AlgorithmInfo& info, const testing::TempDir& dir) {
  std::string args = "--set algorithm.name=" + info.name + " --workers " +
                     std::to_string(workers_for(info)) + " --set run.steps=" +
                     std::to_string(kSteps);
  if (info.family == "embedding") {
    std::string text;
    for (int s = 0; s < 200; ++s)
      text += "the cat sat on the mat and word" + std::string(1, static_cast<char>('a' + s % 26)) +
              " ran to the " + (s % 3 ? "dog" : "bird") + "\n";
    testing::write_file(dir.file("corpus.txt"), text);
    args += " --set data.dataset=words --set 'data.path=\"" + dir.file("corpus.txt") +
            "\"' --set 'data.cache_dir=\"" + dir.file("cache") + "\"'" +
            " --set model.name=sgns --set model.d_model=8 --set algorithm.sgns.sync_words=500" +
            " --set algorithm.sgns.min_count=1 --set algorithm.ppmi_svd.min_count=1" +
            " --set optimizer.momentum=0";  // word2vec's plain SGD
  }
  if (info.family == "federated") args += " --set algorithm.clients=40 --set algorithm.partition=iid";
  if (auto it = kSharpen.find(info.name); it != kSharpen.end()) args += " " + it->second.args;
  return args;
}

nlohmann::json summary_of(const std::string& run) {
  return nlohmann::json::parse(testing::read_file(run + "/summary.json"), nullptr, false);
}

class EveryAlgorithm : public ::testing::TestWithParam<AlgorithmInfo> {};

TEST_P(EveryAlgorithm, ResumesExactly) {
  const AlgorithmInfo& info = GetParam();
  testing::TempDir dir;
  const std::string args = options_for(info, dir);
  const int64_t world = workers_for(info);

  // The run, and a copy cut back to its checkpoint at step 5 and resumed from there.
  testing::write_file(dir.file("job.toml"), kJob);
  const std::string ref = dir.file("ref"), cut = dir.file("cut");
  int64_t deleted = 0;
  ASSERT_NO_FATAL_FAILURE(testing::run_and_resume(
      kDesync + " train " + dir.file("job.toml") + " --quiet " + args, ref, cut, world,
      kCheckpoint, &deleted));

  const nlohmann::json a = summary_of(ref), b = summary_of(cut);
  ASSERT_FALSE(a.is_discarded() || b.is_discarded());
  EXPECT_EQ(a["steps"], b["steps"]);
  EXPECT_EQ(a["samples"], b["samples"]);
  if (kNotReproducible.count(info.name)) return;

  EXPECT_EQ(testing::train_losses(ref), testing::train_losses(cut));
  EXPECT_EQ(a["test_loss"], b["test_loss"]);
  testing::expect_same_checkpoints(ref, cut, world, "");
}

INSTANTIATE_TEST_SUITE_P(Registry, EveryAlgorithm, ::testing::ValuesIn(algorithm_registry()),
                         [](const ::testing::TestParamInfo<AlgorithmInfo>& p) {
                           return p.param.name;
                         });

}  // namespace
}  // namespace desync
