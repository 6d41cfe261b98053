#include "desync/algorithms/dataparallel/ddp.h"

#include <gtest/gtest.h>

#include "algorithms/fake_run.h"
#include "desync/algorithms/common.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::run_on_fake_world;
using testing::tiny_config;

// DDP on N ranks with local batch B equals one worker with batch N*B (same seed, same examples).
void expect_ddp_matches_single(int64_t n, std::vector<std::string> extra,
                               const testing::Precision& precision = testing::kFloat32) {
  const int64_t b = 8, steps = 6;
  std::vector<std::string> ddp_cfg = {
      "algorithm.name=\"ddp\"", "data.batch_size=" + std::to_string(b), "optimizer.momentum=0.9"};
  ddp_cfg.insert(ddp_cfg.end(), extra.begin(), extra.end());
  ddp_cfg.insert(ddp_cfg.end(), precision.overrides.begin(), precision.overrides.end());
  std::vector<std::string> single_cfg = {"data.batch_size=" + std::to_string(n * b),
                                         "optimizer.momentum=0.9"};
  single_cfg.insert(single_cfg.end(), precision.overrides.begin(), precision.overrides.end());
  Config ddp = tiny_config(ddp_cfg);
  Config single = tiny_config(single_cfg);
  DatasetSplits data = load_dataset(ddp.data, 0);
  auto d = run_on_fake_world(ddp, n, steps, data);
  auto s = run_on_fake_world(single, 1, steps, data);
  torch::Tensor ref = flat_params(s[0].model);
  for (int64_t r = 0; r < n; ++r) {
    torch::Tensor got = flat_params(d[r].model);
    EXPECT_LT((got - ref).abs().max().item<double>(), precision.tolerance)
        << precision.name << " N=" << n << " rank " << r;
  }
}

TEST(Ddp, DdpMatchesSingleWorkerN2) { expect_ddp_matches_single(2, {}); }
TEST(Ddp, DdpMatchesSingleWorkerN3) { expect_ddp_matches_single(3, {}); }
TEST(Ddp, DdpMatchesSingleWorkerN4) { expect_ddp_matches_single(4, {}); }
TEST(Ddp, DdpMatchesSingleWorkerInFloat64) {
  for (int64_t n : {2, 3}) expect_ddp_matches_single(n, {}, testing::kFloat64);
}

TEST(Ddp, TinyBucketsMatchOneBigBucketAndNoOverlap) {
  // 1 KiB buckets (many), one 25 MiB bucket, and all-reduce after backward: same parameters.
  expect_ddp_matches_single(2,
                            {"algorithm.bucket_cap_mb=0.001", "algorithm.first_bucket_mb=0.001"});
  expect_ddp_matches_single(2, {"algorithm.overlap=false"});
}

TEST(Ddp, AccumulationMatchesLargerBatch) {
  // 2 ranks x 2 micro-batches of 8 = one worker with batch 32 (same examples per step).
  const int64_t steps = 5;
  Config ddp =
      tiny_config({"algorithm.name=\"ddp\"", "data.batch_size=8", "algorithm.accumulation=2"});
  DatasetSplits data = load_dataset(ddp.data, 0);
  auto d = run_on_fake_world(ddp, 2, steps, data);
  // Rank r's k-th micro-batch of step t is global batch (2t+k)'s slice r: the single worker
  // sees the same examples with batch 16 and accumulation 2.
  Config single = tiny_config({"data.batch_size=16", "algorithm.accumulation=2"});
  auto s = run_on_fake_world(single, 1, steps, data);
  EXPECT_LT((flat_params(d[0].model) - flat_params(s[0].model)).abs().max().item<double>(), 1e-5);
}

TEST(Ddp, Bf16CommunicationStaysClose) {
  const int64_t steps = 6;
  Config fp32 = tiny_config({"algorithm.name=\"ddp\"", "data.batch_size=8"});
  Config bf16 = tiny_config(
      {"algorithm.name=\"ddp\"", "data.batch_size=8", "algorithm.comm_dtype=\"bfloat16\""});
  DatasetSplits data = load_dataset(fp32.data, 0);
  auto a = run_on_fake_world(fp32, 2, steps, data);
  auto b = run_on_fake_world(bf16, 2, steps, data);
  double diff = (flat_params(a[0].model) - flat_params(b[0].model)).abs().max().item<double>();
  EXPECT_GT(diff, 0.0);   // it is really sent in bf16
  EXPECT_LT(diff, 5e-3);  // and stays close
  EXPECT_LT((flat_params(b[0].model) - flat_params(b[1].model)).abs().max().item<double>(), 1e-7);
}

TEST(Ddp, BytesPerStepFollowRingFormula) {
  const int64_t n = 4, steps = 3;
  Config cfg = tiny_config({"algorithm.name=\"ddp\"", "data.batch_size=8",
                            "algorithm.bucket_cap_mb=0.001", "algorithm.first_bucket_mb=0.001"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  // Count bytes of the steps only: run 0 steps and `steps` steps, take the difference.
  auto fake_bytes = [&](int64_t s) {
    int64_t sent = 0;
    std::vector<testing::RankState> ranks(n);
    auto fake = FakeWorld::create(n);
    for (int64_t r = 0; r < n; ++r) {
      torch::manual_seed(0);
      ranks[r].model = make_model(cfg.model, ModelInput{data.train.example_shape(), 10});
      ranks[r].batches =
          std::make_unique<MicroBatchSource>(data.train, 8, r, n, 0, TransformOptions{});
      ranks[r].schedule = std::make_unique<Schedule>(cfg.schedule, 0.1, 10);
      ranks[r].algorithm = make_algorithm(cfg.algorithm);
    }
    fake->run([&](int64_t r, Communicator& comm) {
      Context ctx{cfg, comm, ranks[r].model, *ranks[r].batches, *ranks[r].schedule, 0};
      ranks[r].algorithm->setup(ctx);
      for (int64_t t = 0; t < s; ++t) ranks[r].algorithm->step(ctx);
      if (r == 0) sent = comm.stats().bytes_sent;
    });
    return sent;
  };
  int64_t psi =
      make_model(cfg.model, ModelInput{data.train.example_shape(), 10})->parameter_count();
  int64_t per_step = (fake_bytes(steps) - fake_bytes(0)) / steps;
  // Each bucket is all-reduced once: sum over buckets of 2(N-1)/N * bucket bytes (integer
  // division per bucket), so within one byte per bucket of 2(N-1)/N * 4 * psi.
  EXPECT_NEAR(static_cast<double>(per_step), 2.0 * (n - 1) / n * 4.0 * psi, 64.0);
}

TEST(Ddp, OverlapLaunchesBucketsDuringBackward) {
  Config cfg = tiny_config({"model.hidden=[64, 64, 64]"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto fake = FakeWorld::create(2);
  fake->run([&](int64_t r, Communicator& comm) {
    torch::manual_seed(0);
    StagedModel model = make_model(cfg.model, ModelInput{data.train.example_shape(), 10});
    FlatParameters flat(model->parameters_of(0, model->num_stages()));
    DdpOptions opts;
    opts.bucket_cap_mb = opts.first_bucket_mb = 4.0 / 1024;  // 4 KiB buckets
    GradReducer reducer(flat, comm, opts);
    ASSERT_GE(reducer.num_buckets(), 2);
    MicroBatch mb = take_range(data.train, 0, 16, true);
    reducer.prepare();
    size_t before = fake->issued().size();
    loss_of(model->forward(mb.inputs), mb.targets).backward();
    size_t during = fake->issued().size() - before;  // issued while backward ran
    reducer.finish();
    EXPECT_GE(during, 1u);
    EXPECT_EQ(reducer.launched_during_backward(), reducer.num_buckets());
  });
}

// A stage whose second linear layer is never used.
struct BranchyImpl : torch::nn::Cloneable<BranchyImpl> {
  BranchyImpl() { reset(); }
  void reset() override {
    used = register_module("used", torch::nn::Linear(12, 10));
    unused = register_module("unused", torch::nn::Linear(12, 10));
  }
  torch::Tensor forward(torch::Tensor x) { return used(x); }
  torch::nn::Linear used{nullptr}, unused{nullptr};
};
TORCH_MODULE(Branchy);

TEST(Ddp, UnusedParametersNeedTheOption) {
  DatasetSplits data = load_dataset(tiny_config({}).data, 0);
  for (bool find_unused : {false, true}) {
    auto fake = FakeWorld::create(2);
    fake->run([&](int64_t r, Communicator& comm) {
      StagedModel model;
      model->add_stage("only", torch::nn::Sequential(Branchy()));
      FlatParameters flat(model->parameters_of(0, 1));
      DdpOptions opts;
      opts.find_unused_parameters = find_unused;
      GradReducer reducer(flat, comm, opts);
      MicroBatch mb = take_range(data.train, 8 * r, 8 * r + 8, true);
      reducer.prepare();
      loss_of(model->forward(mb.inputs), mb.targets).backward();
      if (!find_unused) {
        EXPECT_THROW(reducer.finish(), Error);
        return;
      }
      reducer.finish();
      for (auto& [name, p] : model->named_params()) {
        if (name.find("unused") != std::string::npos) {
          EXPECT_EQ(p.grad().abs().sum().item<double>(), 0.0) << name;
        }
      }
    });
  }
}

}  // namespace
}  // namespace desync
