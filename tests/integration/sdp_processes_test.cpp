// Subnetwork data parallelism across four real processes (Gloo): B-SDP with forward masking on a
// ResNet-18 holds less than the whole model on every worker, sends less than DDP, and the holders
// of each tensor agree, so the whole model assembled from them for evaluation is well defined.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "desync/core/checkpoint.h"
#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

const char* kJob = R"(
[run]
name = "sdp"
steps = 30
log_every = 30
threads = 1
comm_timeout = 60
[data]
dataset = "synthetic"
synthetic_train = 2048
synthetic_test = 512
synthetic_shape = [1, 8, 8]
synthetic_classes = 4
batch_size = 16
[model]
name = "resnet18"
width = 8
[optimizer]
lr = 0.05
momentum = 0.9
[checkpoint]
every = 0
)";

nlohmann::json train(testing::TempDir& dir, const std::string& name, const std::string& args) {
  testing::write_file(dir.file("job.toml"), kJob);
  auto r =
      testing::run_command(kDesync + " train " + dir.file("job.toml") +
                           " --quiet --workers 4 --out " + dir.file(name) + " " + args + " 2>&1");
  EXPECT_EQ(r.status, 0) << r.output;
  return nlohmann::json::parse(testing::read_file(dir.file(name + "/summary.json")), nullptr,
                               false);
}

TEST(SdpProcesses, BlockSubnetworksHoldLessSendLessAndTheirHoldersAgree) {
  testing::TempDir dir;
  nlohmann::json ddp = train(dir, "ddp", "--set algorithm.name=ddp");
  nlohmann::json sdp =
      train(dir, "sdp", "--set algorithm.name=sdp --set algorithm.assignment=balanced");
  ASSERT_FALSE(ddp.is_discarded());
  ASSERT_FALSE(sdp.is_discarded());
  EXPECT_EQ(sdp["parameters"], ddp["parameters"]);  // the model's, not one worker's share
  for (int r = 0; r < 4; ++r) {
    EXPECT_LT(sdp["memory_bytes"]["parameters"][r].get<double>(),
              0.6 * ddp["memory_bytes"]["parameters"][r].get<double>())
        << "rank " << r;
    EXPECT_LT(sdp["bytes_sent"][r].get<double>(), 0.75 * ddp["bytes_sent"][r].get<double>())
        << "rank " << r;
  }
  // Every tensor is held somewhere, and its holders agree (the same averaged gradient, the same
  // update): the whole model assembled from them is well defined.
  std::map<std::string, std::vector<torch::Tensor>> copies;
  std::set<std::string> names;
  int64_t released = 0;
  for (int r = 0; r < 4; ++r) {
    auto loaded = CheckpointStore(dir.file("sdp/checkpoints"), r, 4).load_latest(nullptr);
    ASSERT_TRUE(loaded) << "rank " << r;
    for (const std::string& name : loaded->archive.names()) {
      if (name.rfind("model.param.", 0) != 0) continue;
      names.insert(name);
      torch::Tensor t = loaded->archive.tensor(name);
      if (t.numel() == 0)
        ++released;
      else
        copies[name].push_back(t);
    }
  }
  EXPECT_GT(released, 0);  // workers do not keep what they do not hold
  EXPECT_EQ(copies.size(), names.size()) << "a tensor no worker holds";
  for (const auto& [name, held] : copies)
    for (size_t k = 1; k < held.size(); ++k)
      EXPECT_TRUE(held[k].equal(held[0])) << name << ": holders disagree";
}

}  // namespace
}  // namespace desync
