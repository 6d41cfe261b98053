// ACCO against a serial, single-process implementation of its two-round recurrence in
// docs/algorithms/acco.md, its weighting of micro-batches, and its
// accumulation while communicating.
#include "desync/algorithms/dataparallel/acco.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <thread>

#include "algorithms/dataparallel/sharded_job.h"
#include "algorithms/fake_run.h"
#include "desync/algorithms/common.h"
#include "desync/optim/optimizer.h"

namespace desync {
namespace {

using testing::FakeRunOptions;
using testing::flat_params;
using testing::kAdamW;
using testing::max_diff;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;
using testing::with;

// One process, batch N*B, running ACCO's two rounds literally, without threads or shards.
// `after_real_step(t, theta, optimizer)`, if given, sees the master and the optimizer after real
// step t.
using RealStepHook = std::function<void(int64_t t, const torch::Tensor& theta, Optimizer& opt)>;
torch::Tensor serial_acco(const Config& cfg, const DatasetSplits& data, int64_t n, int64_t steps,
                          int64_t n_acc, const RealStepHook& after_real_step = nullptr) {
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
    if (after_real_step) after_real_step(t, theta, *opt);
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

// The tensors of `archive` whose names start with `prefix` and end with `suffix`, concatenated in
// the archive's (insertion) order.
torch::Tensor concat_named(const Archive& archive, const std::string& prefix,
                           const std::string& suffix) {
  std::vector<torch::Tensor> parts;
  for (const std::string& name : archive.names())
    if (name.rfind(prefix, 0) == 0 && name.size() >= prefix.size() + suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      parts.push_back(archive.tensor(name).reshape({-1}));
  return parts.empty() ? torch::Tensor() : torch::cat(parts);
}

TEST(Acco, AccoEstimateRoundLeavesNoTraceOnTheMasterOrAdamWStateInRealRounds) {
  // Threaded ACCO's real rounds, N = 2: after every step t, each rank's master shard and its
  // AdamW state (step count, exp_avg, exp_avg_sq) are those of a serial run that restores the
  // master and the state after each tentative step: the count is t + 1 real steps, not 2(t + 1)
  // steps, and the real step starts from theta_t, not from the estimate theta~_{t+1}.
  const int64_t n = 2, steps = 3;
  Config cfg = tiny_config(with(kAdamW, {"algorithm.name=\"acco\"", "algorithm.fixed_count=true",
                                         "algorithm.accumulation=1"}));
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<std::vector<Archive>> saved(steps, std::vector<Archive>(n));
  FakeRunOptions opts;
  opts.after_step = [&](int64_t r, int64_t t, RankState& s) {
    Archive archive;  // a fresh one: copies of an Archive share their contents
    s.algorithm->save(archive);
    saved[t][r] = archive;
  };
  run_on_fake_world(cfg, n, steps, data, opts);

  std::vector<torch::Tensor> theta(steps), exp_avg(steps), exp_avg_sq(steps);
  std::vector<int64_t> count(steps);
  serial_acco(cfg, data, n, steps, 1, [&](int64_t t, const torch::Tensor& th, Optimizer& opt) {
    theta[t] = th.clone();
    for (auto& [name, state] : opt.state()) {
      if (name == "step") count[t] = state.item<int64_t>();
      if (name == "all.exp_avg") exp_avg[t] = state.clone();
      if (name == "all.exp_avg_sq") exp_avg_sq[t] = state.clone();
    }
  });
  for (int64_t t = 0; t < steps; ++t) {
    ASSERT_EQ(count[t], t + 1);
    for (int64_t r = 0; r < n; ++r) {
      const Archive& a = saved[t][r];
      torch::Tensor master = a.tensor("shard.master");
      const int64_t size = master.numel(), begin = r * size;
      const int64_t len = std::min<int64_t>(size, theta[t].numel() - begin);  // less the padding
      EXPECT_EQ(a.tensor("shard.optimizer.step").item<int64_t>(), t + 1) << "step " << t;
      EXPECT_LT(max_diff(master.narrow(0, 0, len), theta[t].narrow(0, begin, len)), 1e-5)
          << "step " << t << " rank " << r;
      torch::Tensor m = concat_named(a, "shard.optimizer.", ".exp_avg");
      torch::Tensor v = concat_named(a, "shard.optimizer.", ".exp_avg_sq");
      ASSERT_EQ(m.numel(), len);
      ASSERT_EQ(v.numel(), len);
      // Moments to 1e-5 of their largest value (the serial run sums the gradients differently).
      torch::Tensor m_ref = exp_avg[t].narrow(0, begin, len);
      torch::Tensor v_ref = exp_avg_sq[t].narrow(0, begin, len);
      EXPECT_LT(max_diff(m, m_ref), 1e-5 * m_ref.abs().max().item<double>()) << "step " << t;
      EXPECT_LT(max_diff(v, v_ref), 1e-5 * v_ref.abs().max().item<double>()) << "step " << t;
    }
  }
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
