// ParameterShard, the building block of ZeRO-1, DPU and ACCO: backup() and restore() around a
// tentative step (ACCO's estimate round).
#include "desync/algorithms/dataparallel/sharded.h"

#include <gtest/gtest.h>

#include "algorithms/dataparallel/sharded_job.h"
#include "algorithms/fake_run.h"

namespace desync {
namespace {

using testing::kAdamW;
using testing::tiny_config;

TEST(Acco, EstimateRoundLeavesShardAndStateBitwiseUnchanged) {
  Config cfg = tiny_config(kAdamW);
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto world = FakeWorld::create(2);
  world->run([&](int64_t r, Communicator& comm) {
    torch::manual_seed(0);
    StagedModel model = make_model(cfg.model, ModelInput{data.train.example_shape(), 10});
    MicroBatchSource batches(data.train, 8, r, 2, 0, TransformOptions{});
    Schedule schedule(cfg.schedule, cfg.optimizer.lr, 10);
    Context ctx{cfg, comm, model, batches, schedule, 0};
    FlatParameters flat(model->parameters_of(0, model->num_stages()), 2);
    ParameterShard shard(ctx, flat, false);
    // Give the optimizer some history, then take a tentative step and restore.
    for (int i = 0; i < 3; ++i) {
      shard.grad().normal_();
      shard.step(0.01);
    }
    torch::Tensor master = shard.master().clone();
    std::vector<torch::Tensor> state;
    for (auto& [name, t] : shard.optimizer().state()) state.push_back(t.clone());
    shard.backup();
    shard.grad().normal_();
    shard.step(0.01);
    EXPECT_FALSE(torch::equal(master, shard.master()));
    shard.restore();
    EXPECT_TRUE(torch::equal(master, shard.master()));
    auto now = shard.optimizer().state();
    for (size_t i = 0; i < state.size(); ++i) EXPECT_TRUE(torch::equal(state[i], now[i].second));
  });
}

}  // namespace
}  // namespace desync
