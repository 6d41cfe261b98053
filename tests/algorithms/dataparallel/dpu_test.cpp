// DPU against ZeRO-1 and against a serial, single-process implementation of the delayed
// recurrence in docs/algorithms/dpu.md.
#include "desync/algorithms/dataparallel/dpu.h"

#include <gtest/gtest.h>

#include "algorithms/dataparallel/sharded_job.h"
#include "algorithms/fake_run.h"
#include "desync/algorithms/common.h"
#include "desync/optim/optimizer.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::kAdamW;
using testing::max_diff;
using testing::run_on_fake_world;
using testing::tiny_config;
using testing::with;

TEST(Dpu, LongWarmupEqualsZero1) {
  Config zero = tiny_config(with(kAdamW, {"algorithm.name=\"zero1\""}));
  Config dpu = tiny_config(with(kAdamW, {"algorithm.name=\"dpu\"", "algorithm.n_warmup=100"}));
  DatasetSplits data = load_dataset(zero.data, 0);
  auto a = run_on_fake_world(zero, 2, 8, data);
  auto b = run_on_fake_world(dpu, 2, 8, data);
  EXPECT_LT(max_diff(flat_params(a[0].model), flat_params(b[0].model)), 1e-6);
}

TEST(Dpu, DefaultsToTheSpecsFiftyWarmUpSteps) {
  // Without n_warmup, steps 0..49 are ordinary ZeRO-1 steps and step 50 bootstraps with the
  // gradient at theta_50 (still ZeRO-1's update): 51 steps equal ZeRO-1 (49 warm-up steps would
  // delay step 50), and step 51, the first delayed one, differs.
  Config zero = tiny_config(with(kAdamW, {"algorithm.name=\"zero1\""}));
  Config dpu = tiny_config(with(kAdamW, {"algorithm.name=\"dpu\""}));
  DatasetSplits data = load_dataset(zero.data, 0);
  for (int64_t steps : {kDpuDefaultWarmup + 1, kDpuDefaultWarmup + 2}) {
    auto a = run_on_fake_world(zero, 2, steps, data);
    auto b = run_on_fake_world(dpu, 2, steps, data);
    const double d = max_diff(flat_params(a[0].model), flat_params(b[0].model));
    if (steps == kDpuDefaultWarmup + 1)
      EXPECT_LT(d, 1e-6) << steps << " steps";
    else
      EXPECT_GT(d, 1e-6) << steps << " steps";
  }
  EXPECT_EQ(kDpuDefaultWarmup, 50);
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

}  // namespace
}  // namespace desync
