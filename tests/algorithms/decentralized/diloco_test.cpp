#include "desync/algorithms/decentralized/diloco.h"

#include <gtest/gtest.h>

#include "algorithms/fake_run.h"

namespace desync {
namespace {

using testing::FakeRunOptions;
using testing::flat_params;
using testing::max_diff;
using testing::mean_params;
using testing::run_on_fake_world;
using testing::tiny_config;

Diloco& diloco_of(testing::RankState& s) { return dynamic_cast<Diloco&>(*s.algorithm); }

// H = 1, inner SGD(lr beta), outer SGD(lr 1, no momentum): large-batch data parallel.
void expect_diloco_h1_equals_ddp(const testing::Precision& p) {
  for (int64_t n : {2, 4}) {
    std::vector<std::string> d = {"algorithm.name=\"diloco\"", "algorithm.local_steps=1",
                                  "algorithm.outer_lr=1", "algorithm.outer_momentum=0",
                                  "data.batch_size=8"};
    std::vector<std::string> s = {"algorithm.name=\"ddp\"", "data.batch_size=8"};
    d.insert(d.end(), p.overrides.begin(), p.overrides.end());
    s.insert(s.end(), p.overrides.begin(), p.overrides.end());
    Config diloco = tiny_config(d), ddp = tiny_config(s);
    DatasetSplits data = load_dataset(ddp.data, 0);
    auto a = run_on_fake_world(diloco, n, 6, data);
    auto b = run_on_fake_world(ddp, n, 6, data);
    for (int64_t r = 0; r < n; ++r)
      EXPECT_LT(max_diff(flat_params(a[r].model), flat_params(b[r].model)), p.tolerance)
          << p.name << " N=" << n;
  }
}

TEST(Diloco, DilocoH1EqualsDdp) { expect_diloco_h1_equals_ddp(testing::kFloat32); }
TEST(Diloco, DilocoH1EqualsDdpInFloat64) { expect_diloco_h1_equals_ddp(testing::kFloat64); }

TEST(Diloco, OuterSgdLr1IsFedAvg) {
  // After a round with outer SGD(lr 1, no momentum), theta = mean_i theta_i,end. The local
  // models come from the same run with a round longer than the run (no synchronisation yet).
  const int64_t n = 4, h = 3;
  auto cfg = [&](int64_t local_steps) {
    return tiny_config({"algorithm.name=\"diloco\"",
                        "algorithm.local_steps=" + std::to_string(local_steps),
                        "algorithm.outer_lr=1", "algorithm.outer_momentum=0",
                        "optimizer.name=\"adamw\"", "optimizer.lr=0.01", "data.batch_size=8"});
  };
  DatasetSplits data = load_dataset(cfg(h).data, 0);
  auto synced = run_on_fake_world(cfg(h), n, h, data);
  auto local = run_on_fake_world(cfg(1000), n, h, data);
  torch::Tensor fedavg = mean_params(local);
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_LT(max_diff(diloco_of(synced[r]).global(), fedavg), 1e-6);
    EXPECT_LT(max_diff(flat_params(synced[r].model), fedavg), 1e-6);  // theta_i <- theta
  }
}

TEST(Diloco, IdenticalStreamsOnFourWorkersEqualOneWorker) {
  Config cfg = tiny_config({"algorithm.name=\"diloco\"", "algorithm.local_steps=2",
                            "optimizer.name=\"adamw\"", "optimizer.lr=0.01", "data.batch_size=8"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  FakeRunOptions same;
  same.identical_data = true;
  auto four = run_on_fake_world(cfg, 4, 8, data, same);
  auto one = run_on_fake_world(cfg, 1, 8, data);
  for (int64_t r = 0; r < 4; ++r)
    EXPECT_LT(max_diff(flat_params(four[r].model), flat_params(one[0].model)), 1e-6);
}

TEST(Diloco, OneAllReduceOfPsiPerRoundAndInnerStepsRunOn) {
  const int64_t n = 4, h = 3, t = 9;
  Config cfg = tiny_config({"algorithm.name=\"diloco\"", "algorithm.local_steps=3",
                            "optimizer.name=\"adamw\"", "data.batch_size=8"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto ranks = run_on_fake_world(cfg, n, t, data);
  const int64_t psi = ranks[0].model->parameter_count();
  for (auto& s : ranks) {
    EXPECT_EQ(s.stats.calls - s.setup_stats.calls, t / h);
    EXPECT_EQ(s.stats.bytes_sent - s.setup_stats.bytes_sent, (t / h) * 2 * (n - 1) * psi * 4 / n);
    for (auto& [name, value] : diloco_of(s).inner_optimizer().state())
      if (name == "step") {
        EXPECT_EQ(value.item<int64_t>(), t);  // T, not H
      }
  }
}

TEST(Diloco, HalfPrecisionPseudoGradientChangesTheOuterUpdateLittle) {
  auto cfg = [](const char* dtype) {
    return tiny_config({"algorithm.name=\"diloco\"", "algorithm.local_steps=4",
                        std::string("algorithm.outer_comm_dtype=\"") + dtype + "\"",
                        "optimizer.name=\"adamw\"", "optimizer.lr=0.01", "data.batch_size=8"});
  };
  DatasetSplits data = load_dataset(cfg("float32").data, 0);
  torch::manual_seed(0);
  torch::Tensor start =
      flat_params(run_on_fake_world(cfg("float32"), 1, 0, data)[0].model);  // theta_0
  auto fp32 = run_on_fake_world(cfg("float32"), 4, 4, data);
  auto fp16 = run_on_fake_world(cfg("float16"), 4, 4, data);
  torch::Tensor update32 = diloco_of(fp32[0]).global() - start;
  torch::Tensor update16 = diloco_of(fp16[0]).global() - start;
  double rel = ((update16 - update32).norm() / update32.norm()).item<double>();
  EXPECT_GT(rel, 0.0);  // really sent in 16 bits
  EXPECT_LT(rel, 1e-3);
}

}  // namespace
}  // namespace desync
