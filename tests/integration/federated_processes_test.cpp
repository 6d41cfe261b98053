// Federated learning on real processes (Gloo): a backbone pre-trained by desync on some classes
// and loaded with model.init_from, FedNCM on the others, `desync partition`, the one-line error
// of a mismatched backbone, and a killed federated run resumed exactly.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

// Synthetic task, 10 classes of 16 features; an MLP whose head reads 32 features.
const char* kJob = R"(
[run]
name = "fed"
steps = 6
log_every = 1
threads = 1
comm_timeout = 30
[data]
dataset = "synthetic"
synthetic_train = 4000
synthetic_test = 1000
synthetic_shape = [16]
synthetic_classes = 10
batch_size = 32
[model]
name = "mlp"
hidden = [64, 32]
[optimizer]
lr = 0.05
[algorithm.fedavg]
clients = 20
heldout_clients = 4
clients_per_round = 6
alpha = 0.5
[algorithm.fedncm]
clients = 20
heldout_clients = 4
clients_per_round = 6
alpha = 0.5
[checkpoint]
every = 3
keep = 5
)";

struct FedRun {
  testing::CommandResult result;
  nlohmann::json summary;
  std::vector<double> losses;
};

FedRun train(testing::TempDir& dir, const std::string& name, const std::string& args,
             const std::string& env = "") {
  testing::write_file(dir.file("job.toml"), kJob);
  FedRun r;
  r.result = testing::run_command(env + " " + kDesync + " train " + dir.file("job.toml") +
                                  " --quiet --out " + dir.file(name) + " " + args + " 2>&1");
  r.summary =
      nlohmann::json::parse(testing::read_file(dir.file(name + "/summary.json")), nullptr, false);
  r.losses = testing::train_losses(dir.file(name));
  return r;
}

const std::string kSource =
    "--set data.classes=[0,1,2,3,4] --set algorithm.name=ddp "
    "--set run.steps=150 --set optimizer.momentum=0.9";
const std::string kTarget = "--set data.classes=[5,6,7,8,9] --set algorithm.name=fedncm";

TEST(FederatedProcesses, FedNcmFromADesyncBackboneClassifiesUnseenClassesInOneRound) {
  testing::TempDir dir;
  FedRun source = train(dir, "source", "--workers 2 " + kSource);
  ASSERT_EQ(source.result.status, 0) << source.result.output;
  const std::string from = " --set model.init_from=\"" + dir.file("source") + "\"";
  FedRun ncm = train(dir, "ncm", "--workers 2 --set run.steps=1 " + kTarget + from);
  ASSERT_EQ(ncm.result.status, 0) << ncm.result.output;
  FedRun scratch = train(dir, "scratch", "--workers 2 --set run.steps=1 " + kTarget);
  ASSERT_EQ(scratch.result.status, 0) << scratch.result.output;
  const double pretrained = ncm.summary["test_accuracy"].get<double>();
  const double random = scratch.summary["test_accuracy"].get<double>();
  std::printf("[ fedncm   ] round 0 test accuracy: pre-trained backbone %.3f, random %.3f\n",
              pretrained, random);
  // Five classes: chance is 0.2. (On this synthetic task the random teacher's classes share
  // little, so the pre-trained features need not beat random ones; Fashion-MNIST's do, see
  // docs/results/federated.md.)
  EXPECT_GT(pretrained, 0.3);
  EXPECT_GT(random, 0.3);
  EXPECT_GT(ncm.summary["eval_metrics"]["heldout_accuracy"].get<double>(), 0.3);
  // C(d + 1) fp64 numbers up from each of the 20 training clients; one all-reduce of them.
  EXPECT_EQ(ncm.summary["algorithm_stats"]["fl_up_bytes"][0].get<double>(), 20 * 5 * 33 * 8);
  // The clients' label histograms: in summary.json, and charted in report.html.
  ASSERT_EQ(ncm.summary["clients"]["ids"].size(), 24u);
  int64_t examples = 0;
  for (const auto& counts : ncm.summary["clients"]["label_counts"])
    for (const auto& n : counts) examples += n.get<int64_t>();
  EXPECT_GT(examples, 1000);  // classes 5-9 of the 4000 examples, all in clients (per_class)
  int64_t heldout = 0;
  for (const auto& h : ncm.summary["clients"]["heldout"]) heldout += h.get<bool>() ? 1 : 0;
  EXPECT_EQ(heldout, 4);
  EXPECT_NE(testing::read_file(dir.file("ncm/report.html")).find("id=\"client-labels\""),
            std::string::npos);
}

TEST(FederatedProcesses, AMismatchedBackboneIsOneLineNamingTheTensor) {
  testing::TempDir dir;
  FedRun source = train(dir, "source",
                        "--set data.classes=[0,1,2] --set algorithm.name=single --set run.steps=3");
  ASSERT_EQ(source.result.status, 0) << source.result.output;
  FedRun bad =
      train(dir, "bad",
            kTarget + " --set run.steps=1 --set model.init_from=\"" + dir.file("source") + "\"");
  EXPECT_EQ(bad.result.status, 2) << bad.result.output;
  EXPECT_NE(bad.result.output.find("model.init_from: 'head.0.weight' has shape [3, 32]"),
            std::string::npos)
      << bad.result.output;
  FedRun none =
      train(dir, "none", kTarget + " --set model.init_from=\"" + dir.file("nowhere") + "\"");
  EXPECT_EQ(none.result.status, 2) << none.result.output;
  EXPECT_NE(none.result.output.find("holds no checkpoint"), std::string::npos)
      << none.result.output;
}

TEST(FederatedProcesses, KilledRunResumesWithTheUninterruptedLosses) {
  testing::TempDir dir;
  const std::string args =
      "--workers 2 --set algorithm.name=fedavg "
      "--set algorithm.fedavg.server_optimizer=fedadam";
  FedRun ref = train(dir, "ref", args);
  ASSERT_EQ(ref.result.status, 0) << ref.result.output;
  FedRun cut = train(dir, "cut", args, "DESYNC_FAULT=rank=1,step=4,action=kill");
  EXPECT_NE(cut.result.status, 0);
  FedRun resumed = train(dir, "cut", args + " --resume");
  ASSERT_EQ(resumed.result.status, 0) << resumed.result.output;
  EXPECT_EQ(ref.losses, resumed.losses);
  EXPECT_EQ(ref.summary["test_loss"], resumed.summary["test_loss"]);
  EXPECT_EQ(ref.summary["algorithm_stats"]["fl_up_bytes"],
            resumed.summary["algorithm_stats"]["fl_up_bytes"]);
}

TEST(FederatedProcesses, PartitionPrintsEveryClientsLabelHistogram) {
  testing::TempDir dir;
  testing::write_file(dir.file("job.toml"), kJob);
  auto r = testing::run_command(kDesync + " partition " + dir.file("job.toml") +
                                " --set algorithm.name=fedavg 2>&1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("20 training and 4 held-out clients"), std::string::npos) << r.output;
  auto bad = testing::run_command(kDesync + " partition " + dir.file("job.toml") + " 2>&1");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("needs a federated algorithm"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace desync
