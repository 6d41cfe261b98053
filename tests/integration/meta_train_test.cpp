// `desync meta-train` as users run it: PES on the spec's toy problem (SGD with learning rate
// e^theta on a 1-D quadratic, examples/meta_quadratic.toml) recovers the known optimum
// theta* = -log(a) on 1 and on 2 worker processes with the same theta to the bit; a stopped run
// resumed to the full count ends with the same theta; an MLP run writes a lopt.pt that
// MuloParams::load reads, the same on 1 and 2 workers; bad input is one line and exit status 2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "desync/core/archive.h"
#include "desync/meta/tasks.h"
#include "desync/optim/mulo.h"
#include "desync/report/metrics.h"
#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();
const std::string kQuadratic = testing::source_dir() + "/examples/meta_quadratic.toml";
constexpr double kTolerance = 0.05;  // |theta - theta*| at the end (measured: below 0.01)

struct MetaRun {
  testing::CommandResult result;
  nlohmann::json summary;
  std::vector<nlohmann::json> metrics;
};

MetaRun meta_train(const std::string& config, const std::string& dir, const std::string& args) {
  MetaRun r;
  r.result = testing::run_command(kDesync + " meta-train " + config + " --quiet --out " + dir +
                                  " " + args + " 2>&1");
  r.summary = nlohmann::json::parse(testing::read_file(dir + "/summary.json"), nullptr, false);
  r.metrics = read_metrics(dir + "/metrics.jsonl");
  return r;
}

double final_theta(const MetaRun& r) { return r.summary["theta"][0].get<double>(); }

TEST(MetaTrainProcesses, QuadraticFindsTheOptimumOnOneAndTwoWorkersAlike) {
  testing::TempDir dir;
  const MetaRun one = meta_train(kQuadratic, dir.file("one"), "--workers 1");
  const MetaRun two = meta_train(kQuadratic, dir.file("two"), "--workers 2");
  ASSERT_EQ(one.result.status, 0) << one.result.output;
  ASSERT_EQ(two.result.status, 0) << two.result.output;
  EXPECT_EQ(final_theta(one), final_theta(two));  // bitwise
  EXPECT_NEAR(final_theta(one), -std::log(kQuadraticA), kTolerance);
  EXPECT_EQ(one.summary["steps"], 200);
  EXPECT_EQ(two.summary["workers"], 2);
  // The same estimate every step: the logged losses agree to the bit too.
  ASSERT_EQ(one.metrics.size(), 200u);
  ASSERT_EQ(two.metrics.size(), 200u);
  for (size_t i = 0; i < one.metrics.size(); ++i)
    ASSERT_EQ(one.metrics[i]["mean_loss"].get<double>(), two.metrics[i]["mean_loss"].get<double>())
        << "step " << i + 1;
  // The schedule: lr_start at step 1, lr_peak after the 10 warm-up steps, lr_final at the last.
  EXPECT_DOUBLE_EQ(one.metrics[0]["lr"].get<double>(), 1e-3);
  EXPECT_DOUBLE_EQ(one.metrics[10]["lr"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(one.metrics[199]["lr"].get<double>(), 1e-3);
  // A fixed horizon of 100 in truncations of 10: the 4 tasks reset every 10th step.
  EXPECT_EQ(one.metrics[0]["resets"], 4);
  EXPECT_EQ(one.metrics[1]["resets"], 0);
  EXPECT_EQ(one.metrics[10]["resets"], 4);
  // lopt.pt holds the same theta.
  const Archive lopt = Archive::deserialize(testing::read_file(dir.file("one/lopt.pt")), "lopt");
  EXPECT_EQ(lopt.tensor("theta").item<double>(), final_theta(one));
}

TEST(MetaTrainProcesses, StoppedAndResumedRunEndsWithTheSameTheta) {
  // A constant learning rate after warm-up, so that the schedule of the stopped run (37 outer
  // steps) is the full run's (200).
  testing::TempDir dir;
  const std::string common = "--workers 2 --set meta.lr_final=0.1 --set meta.checkpoint_every=25";
  const MetaRun full = meta_train(kQuadratic, dir.file("full"), common);
  ASSERT_EQ(full.result.status, 0) << full.result.output;
  const MetaRun cut =
      meta_train(kQuadratic, dir.file("cut"), common + " --set meta.outer_steps=37");
  ASSERT_EQ(cut.result.status, 0) << cut.result.output;
  EXPECT_EQ(cut.summary["steps"], 37);
  EXPECT_NE(final_theta(cut), final_theta(full));
  const MetaRun resumed = meta_train(kQuadratic, dir.file("cut"), common + " --resume");
  ASSERT_EQ(resumed.result.status, 0) << resumed.result.output;
  EXPECT_EQ(resumed.summary["steps"], 200);
  EXPECT_EQ(final_theta(resumed), final_theta(full));  // bitwise
  ASSERT_EQ(resumed.metrics.size(), full.metrics.size());
  for (size_t i = 0; i < full.metrics.size(); ++i)
    ASSERT_EQ(resumed.metrics[i]["mean_loss"].get<double>(),
              full.metrics[i]["mean_loss"].get<double>())
        << "step " << i + 1;
}

TEST(MetaTrainProcesses, GradClipBoundsTheStep) {
  // Clipped to norm 1e-12, far below AdamW's eps (1e-8), the estimate barely moves theta from 0;
  // unclipped, the same run reaches the optimum (the first test).
  testing::TempDir dir;
  const MetaRun run =
      meta_train(kQuadratic, dir.file("clip"), "--workers 1 --set meta.grad_clip=1e-12");
  ASSERT_EQ(run.result.status, 0) << run.result.output;
  EXPECT_LT(std::abs(final_theta(run)), 1e-3);
  EXPECT_GT(run.metrics[0]["grad_norm"].get<double>(), 1e-6);  // logged before clipping
}

TEST(MetaTrainProcesses, MlpRunWritesALoptThatMuloReads) {
  testing::TempDir dir;
  testing::write_file(dir.file("mlp.toml"), R"(
[run]
name = "meta_mlp"
[data]
dataset = "synthetic"
synthetic_train = 512
synthetic_test = 64
synthetic_shape = [8]
batch_size = 16
[model]
name = "mlp"
hidden = [8]
parametrization = "mup"
[optimizer]
lopt_seed = 3
lopt_alpha1 = 1e-2
[meta]
task = "mlp"
outer_steps = 3
tasks = 2
unroll = 4
horizon_min = 6
horizon_max = 12
widths = [8, 16]
lr_start = 1e-3
warmup_steps = 0
checkpoint_every = 2
)");
  const MetaRun run = meta_train(dir.file("mlp.toml"), dir.file("run"), "--workers 2");
  ASSERT_EQ(run.result.status, 0) << run.result.output;
  const MetaRun solo = meta_train(dir.file("mlp.toml"), dir.file("solo"), "--workers 1");
  ASSERT_EQ(solo.result.status, 0) << solo.result.output;
  EXPECT_EQ(testing::read_file(dir.file("run/lopt.pt")),
            testing::read_file(dir.file("solo/lopt.pt")))
      << "1 and 2 workers should end with the same meta-parameters";
  EXPECT_EQ(run.summary["steps"], 3);
  ASSERT_EQ(run.metrics.size(), 3u);
  for (const nlohmann::json& m : run.metrics)
    EXPECT_TRUE(std::isfinite(m["mean_loss"].get<double>()));
  const MuloParams lopt = MuloParams::load(dir.file("run/lopt.pt"));
  const torch::Tensor theta = lopt.flatten();
  const torch::Tensor start = MuloParams::init(3).flatten();
  ASSERT_EQ(theta.numel(), MuloParams::numel());
  EXPECT_TRUE(torch::isfinite(theta).all().item<bool>());
  EXPECT_FALSE(torch::equal(theta, start));  // three AdamW steps moved it ...
  EXPECT_LT((theta - start).abs().max().item<double>(), 3 * 3e-3);  // ... by about lr per step
}

TEST(MetaTrainProcesses, BadInputIsOneLineAndExitStatusTwo) {
  testing::TempDir dir;
  for (const std::string& args :
       {dir.file("missing.toml"), kQuadratic + " --set meta.task=cubic",
        kQuadratic + " --set meta.task=mlp --set model.name=cnn", kQuadratic + " --workers 0"}) {
    const testing::CommandResult r =
        testing::run_command(kDesync + " meta-train " + args + " --out " + dir.file("x") + " 2>&1");
    EXPECT_EQ(r.status, 2) << args << ": " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << args << ": " << r.output;
  }
}

}  // namespace
}  // namespace desync
