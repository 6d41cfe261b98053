// ZeRO-1, DPU and ACCO against DDP and against serial, single-process implementations of the
// recurrences in shared/algorithms/data-parallel-sharded.md.
#include "desync/algorithms/dataparallel/sharded.h"

#include <gtest/gtest.h>

#include "desync/algorithms/common.h"
#include "desync/algorithms/dataparallel/acco.h"
#include "fake_run.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::max_diff;
using testing::run_on_fake_world;
using testing::tiny_config;


// The tiny MLP has Ψ = 12*32+32 + 32*16+16 + 16*10+10 = 1114 parameters: not divisible by 3 or 4.
const std::vector<std::string> kAdamW = {"optimizer.name=\"adamw\"", "optimizer.lr=0.01",
                                         "optimizer.weight_decay=0.05", "data.batch_size=8"};

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(Zero1, Zero1MatchesDdpWithAdamW) {
  for (int64_t n : {2, 3, 4}) {
    for (const char* clip : {"optimizer.grad_clip=0", "optimizer.grad_clip=0.5"}) {
      Config ddp = tiny_config(with(kAdamW, {"algorithm.name=\"ddp\"", clip}));
      Config zero = tiny_config(with(kAdamW, {"algorithm.name=\"zero1\"", clip}));
      DatasetSplits data = load_dataset(ddp.data, 0);
      auto a = run_on_fake_world(ddp, n, 10, data);
      auto b = run_on_fake_world(zero, n, 10, data);
      for (int64_t r = 0; r < n; ++r)
        EXPECT_LT(max_diff(flat_params(a[r].model), flat_params(b[r].model)), 1e-5)
            << "N=" << n << " rank " << r << " " << clip;
    }
  }
}

TEST(Zero1, OptimizerStateIsShardedPerRank) {
  const int64_t n = 4, psi = 1114;
  Config zero = tiny_config(with(kAdamW, {"algorithm.name=\"zero1\""}));
  DatasetSplits data = load_dataset(zero.data, 0);
  auto ranks = run_on_fake_world(zero, n, 1, data);
  for (int64_t r = 0; r < n; ++r) {
    int64_t state_bytes = -1;
    for (auto& [name, bytes] : ranks[r].algorithm->memory())
      if (name == "optimizer_state") state_bytes = bytes;
    // exp_avg and exp_avg_sq for ceil(Ψ/N) elements (the padding belongs to the last shard's
    // range but to no parameter), plus the 8-byte step counter.
    int64_t shard = (psi + n - 1) / n;
    int64_t owned = std::max<int64_t>(0, std::min(psi - r * shard, shard));
    EXPECT_EQ(state_bytes, 2 * 4 * owned + 8) << "rank " << r;
  }
}

TEST(Dpu, LongWarmupEqualsZero1) {
  Config zero = tiny_config(with(kAdamW, {"algorithm.name=\"zero1\""}));
  Config dpu = tiny_config(with(kAdamW, {"algorithm.name=\"dpu\"", "algorithm.n_warmup=100"}));
  DatasetSplits data = load_dataset(zero.data, 0);
  auto a = run_on_fake_world(zero, 2, 8, data);
  auto b = run_on_fake_world(dpu, 2, 8, data);
  EXPECT_LT(max_diff(flat_params(a[0].model), flat_params(b[0].model)), 1e-6);
}

// One process, batch N*B, running theta_{t+1} = Opt(theta_t, g(theta_{t-1})) after w warm-up steps.
torch::Tensor serial_dpu(const Config& cfg, const DatasetSplits& data, int64_t n, int64_t steps,
                         int64_t warmup) {
  torch::manual_seed(0);
  StagedModel model = make_model(cfg.model, ModelInput{data.train.example_shape(), 10});
  MicroBatchSource batches(data.train, cfg.data.batch_size * n, 0, 1, 0, TransformOptions{});
  FlatParameters flat(model->parameters_of(0, model->num_stages()));
  torch::Tensor prev = torch::zeros_like(flat.grads_flat());
  auto opt = make_adamw({ParamSlot{"all", flat.params_flat(), prev, cfg.optimizer.weight_decay}},
                        0.9, 0.999, 1e-8);
  auto grad_at_p = [&] {
    flat.grads_flat().zero_();
    MicroBatch mb = batches.next();
    loss_of(model->forward(mb.inputs), mb.targets).backward();
    return flat.grads_flat().clone();
  };
  for (int64_t t = 0; t < steps; ++t) {
    if (t < warmup) {
      prev.copy_(grad_at_p());
      opt->step(cfg.optimizer.lr);
      continue;
    }
    if (t == warmup) prev.copy_(grad_at_p());  // bootstrap at theta_w
    torch::Tensor cur = grad_at_p();           // at theta_t
    opt->step(cfg.optimizer.lr);               // theta_{t+1} from G_prev
    prev.copy_(cur);
  }
  return flat.params_flat().clone();
}

TEST(Dpu, MatchesSerialDelayedRecurrence) {
  for (int64_t warmup : {0, 3}) {
    Config dpu = tiny_config(
        with(kAdamW, {"algorithm.name=\"dpu\"", "algorithm.n_warmup=" + std::to_string(warmup)}));
    DatasetSplits data = load_dataset(dpu.data, 0);
    auto d = run_on_fake_world(dpu, 2, 8, data);
    torch::Tensor ref = serial_dpu(dpu, data, 2, 8, warmup);
    EXPECT_LT(max_diff(flat_params(d[0].model), ref), 1e-5) << "warmup " << warmup;
    EXPECT_LT(max_diff(flat_params(d[1].model), ref), 1e-5) << "warmup " << warmup;
  }
}

// One process, batch N*B, running ACCO's two rounds literally, without threads or shards.
torch::Tensor serial_acco(const Config& cfg, const DatasetSplits& data, int64_t n, int64_t steps,
                          int64_t n_acc) {
  torch::manual_seed(0);
  StagedModel model = make_model(cfg.model, ModelInput{data.train.example_shape(), 10});
  MicroBatchSource batches(data.train, cfg.data.batch_size * n, 0, 1, 0, TransformOptions{});
  FlatParameters p(model->parameters_of(0, model->num_stages()));  // P and G
  torch::Tensor theta = p.params_flat().clone();                   // the master
  torch::Tensor b_grad = torch::zeros_like(theta), step_grad = torch::zeros_like(theta);
  auto opt = make_adamw({ParamSlot{"all", theta, step_grad, cfg.optimizer.weight_decay}}, 0.9,
                        0.999, 1e-8);
  auto accumulate = [&](int64_t k) {  // G += sum of k micro-batch gradients at P
    for (int64_t i = 0; i < k; ++i) {
      MicroBatch mb = batches.next();
      loss_of(model->forward(mb.inputs), mb.targets).backward();
    }
  };
  p.grads_flat().zero_();
  accumulate(1);
  int64_t c = 1, count = 1;
  b_grad.copy_(p.grads_flat());
  for (int64_t t = 0; t < steps; ++t) {
    // Estimate round: a tentative step whose state is then restored.
    auto saved_state = opt->state();
    std::vector<torch::Tensor> backup;
    for (auto& [name, s] : saved_state) backup.push_back(s.clone());
    torch::Tensor theta_backup = theta.clone();
    step_grad.copy_(b_grad / static_cast<double>(count));
    opt->step(cfg.optimizer.lr);
    torch::Tensor tentative = theta.clone();
    theta.copy_(theta_backup);
    for (size_t i = 0; i < backup.size(); ++i) saved_state[i].second.copy_(backup[i]);
    accumulate(n_acc);
    c += n_acc;
    p.params_flat().copy_(tentative);
    b_grad.copy_(p.grads_flat());
    count = c;
    p.grads_flat().zero_();
    c = 0;
    // Real round.
    step_grad.copy_(b_grad / static_cast<double>(count));
    opt->step(cfg.optimizer.lr);
    accumulate(n_acc);
    c += n_acc;
    p.params_flat().copy_(theta);
    b_grad.copy_(p.grads_flat());
    count = c;
  }
  return p.params_flat().clone();
}

TEST(Acco, FixedCountMatchesSerialTwoRoundRecurrence) {
  for (int64_t n : {1, 2, 4}) {
    Config acco = tiny_config(with(kAdamW, {"algorithm.name=\"acco\"", "algorithm.fixed_count=true",
                                            "algorithm.accumulation=2"}));
    DatasetSplits data = load_dataset(acco.data, 0);
    auto a = run_on_fake_world(acco, n, 5, data);
    torch::Tensor ref = serial_acco(acco, data, n, 5, 2);
    for (int64_t r = 0; r < n; ++r)
      EXPECT_LT(max_diff(flat_params(a[r].model), ref), 1e-5) << "N=" << n << " rank " << r;
  }
}

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

TEST(Acco, EveryMicroBatchWeighsTheSame) {
  // Rank 0 accumulates 1 micro-batch per round, rank 1 three. The first real step uses the
  // initial micro-batch and round 0's: 2 + 4 = 6 micro-batch gradients at theta_0, whose plain
  // mean (not the mean of the two ranks' means) must drive the step.
  const int64_t n = 2;
  std::vector<Config> cfgs = {
      tiny_config(with(kAdamW, {"algorithm.name=\"acco\"", "algorithm.fixed_count=true",
                                "algorithm.accumulation=1"})),
      tiny_config(with(kAdamW, {"algorithm.name=\"acco\"", "algorithm.fixed_count=true",
                                "algorithm.accumulation=3"}))};
  DatasetSplits data = load_dataset(cfgs[0].data, 0);
  std::vector<testing::RankState> ranks(n);
  for (int64_t r = 0; r < n; ++r) {
    torch::manual_seed(0);
    ranks[r].model = make_model(cfgs[r].model, ModelInput{data.train.example_shape(), 10});
    ranks[r].batches =
        std::make_unique<MicroBatchSource>(data.train, 8, r, n, 0, TransformOptions{});
    ranks[r].schedule = std::make_unique<Schedule>(cfgs[r].schedule, cfgs[r].optimizer.lr, 10);
    ranks[r].algorithm = make_algorithm(cfgs[r].algorithm);
  }
  torch::Tensor theta0 = flat_params(ranks[0].model);
  auto world = FakeWorld::create(n);
  world->run([&](int64_t r, Communicator& comm) {
    Context ctx{cfgs[r], comm, ranks[r].model, *ranks[r].batches, *ranks[r].schedule, 0};
    ranks[r].algorithm->setup(ctx);
    ranks[r].algorithm->step(ctx);  // estimate round + first real round
  });
  // After step 0 the compute view P holds theta_1 on every rank.
  // Central reference: the 6 micro-batches each rank consumed before the real round's compute.
  torch::manual_seed(0);
  StagedModel ref = make_model(cfgs[0].model, ModelInput{data.train.example_shape(), 10});
  FlatParameters flat(ref->parameters_of(0, ref->num_stages()));
  std::vector<MicroBatchSource> sources;
  for (int64_t r = 0; r < n; ++r) sources.emplace_back(data.train, 8, r, n, 0, TransformOptions{});
  flat.grads_flat().zero_();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t k = 0; k < (r == 0 ? 2 : 4); ++k) {
      MicroBatch mb = sources[r].next();
      loss_of(ref->forward(mb.inputs), mb.targets).backward();
    }
  torch::Tensor mean = flat.grads_flat() / 6.0;
  torch::Tensor theta = theta0.clone();
  auto opt = make_adamw({ParamSlot{"all", theta, mean, 0.05}}, 0.9, 0.999, 1e-8);
  opt->step(0.01);
  EXPECT_LT(max_diff(flat_params(ranks[0].model), theta), 1e-6);
  EXPECT_LT(max_diff(flat_params(ranks[1].model), theta), 1e-6);
}

TEST(Acco, AccumulatesWhileCommunicating) {
  // With a slow network (every count all-reduce takes 50 ms) and sub-millisecond micro-batches,
  // a worker keeps accumulating instead of waiting: far more than n_acc micro-batches per round.
  Config cfg = tiny_config(with(kAdamW, {"algorithm.name=\"acco\"", "algorithm.accumulation=1"}));
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<testing::RankState> ranks(2);
  for (int64_t r = 0; r < 2; ++r) {
    torch::manual_seed(0);
    ranks[r].model = make_model(cfg.model, ModelInput{data.train.example_shape(), 10});
    ranks[r].batches =
        std::make_unique<MicroBatchSource>(data.train, 8, r, 2, 0, TransformOptions{});
    ranks[r].schedule = std::make_unique<Schedule>(cfg.schedule, cfg.optimizer.lr, 10);
    ranks[r].algorithm = make_algorithm(cfg.algorithm);
  }
  auto world = FakeWorld::create(2);
  world->on_issue([](const std::string& op, int64_t) {
    if (op == "all_reduce") std::this_thread::sleep_for(std::chrono::milliseconds(50));
  });
  world->run([&](int64_t r, Communicator& comm) {
    Context ctx{cfg, comm, ranks[r].model, *ranks[r].batches, *ranks[r].schedule, 0};
    ranks[r].algorithm->setup(ctx);
    for (int t = 0; t < 2; ++t) ranks[r].algorithm->step(ctx);
    const auto& counts = dynamic_cast<Acco&>(*ranks[r].algorithm).last_round_counts();
    ASSERT_EQ(counts.size(), 2u);
    for (int64_t k : counts) EXPECT_GE(k, 4);
  });
}

}  // namespace
}  // namespace desync
