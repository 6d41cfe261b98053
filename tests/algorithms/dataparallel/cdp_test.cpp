// Cyclic data parallelism: the schedule (spec §7.3), the stage grouping, and `cdp` against DDP
// (§7.1), a serial delayed recurrence (§7.2), the versions each worker computes with (§7.4), and
// its staggered runtime against the semantic simulator, on in-process ranks.
#include "desync/algorithms/dataparallel/cdp.h"

#include <gtest/gtest.h>

#include <map>

#include "algorithms/dataparallel/sharded_job.h"
#include "algorithms/fake_run.h"
#include "desync/algorithms/common.h"
#include "desync/core/error.h"
#include "desync/optim/optimizer.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::max_diff;
using testing::run_on_fake_world;
using testing::tiny_config;
using testing::with;

// --- the schedule -------------------------------------------------------------------------

TEST(CyclicSchedule, SpecExampleAtTimeFour) {
  // N = S = 3 (delta = 2), at time 4 (tick 12): stage 3 runs worker 1's forward, stage 2 worker
  // 0's backward and stage 1 worker 2's forward (the spec numbers stages from 1).
  std::map<int64_t, CyclicOp> at_12;
  for (const CyclicOp& op : cyclic_schedule(3, 3, 2))
    if (op.tick == 12) at_12[op.stage] = op;
  ASSERT_EQ(at_12.size(), 3u);
  EXPECT_EQ(at_12[2].worker, 1);
  EXPECT_FALSE(at_12[2].backward);
  EXPECT_EQ(at_12[1].worker, 0);
  EXPECT_TRUE(at_12[1].backward);
  EXPECT_EQ(at_12[0].worker, 2);
  EXPECT_FALSE(at_12[0].backward);
}

// A checkpoint after `windows` windows finds stage l's exchange of cycle k complete exactly when
// every worker's backward of (l, k) started before the cut, read from the schedule itself.
TEST(CyclicSchedule, SentByAllOnceEveryWorkersBackwardStartedBeforeTheCut) {
  for (int64_t n : {1, 2, 3, 4}) {
    for (int64_t s : {2, 3}) {
      const std::vector<CyclicOp> ops = cyclic_schedule(n, s, 4);
      int64_t complete = 0, in_flight = 0;
      for (int64_t k = 0; k < 3; ++k)
        for (int64_t l = 0; l < s; ++l)
          for (int64_t w = 0; w <= 4; ++w) {
            bool all = true, some = false;
            for (const CyclicOp& op : ops)
              if (op.backward && op.stage == l && op.cycle == k) {
                const bool before = op.tick < 2 * s * n * w;
                all = all && before;
                some = some || before;
              }
            EXPECT_EQ(sent_by_all(n, s, l, k, w), all) << n << " " << s << " " << l << " " << k;
            complete += all ? 1 : 0;
            in_flight += some && !all ? 1 : 0;
          }
      EXPECT_GT(complete, 0);
      if (n > 1) {
        EXPECT_GT(in_flight, 0) << "N = " << n << ": some exchange crosses a cut";
      }
    }
  }
}

TEST(CyclicSchedule, SteadyStateRunsEveryStageOncePerUnitWithConstantActivations) {
  for (int64_t n : {2, 3, 4}) {
    const int64_t s = n, cycles = 5;
    const std::vector<CyclicOp> ops = cyclic_schedule(n, s, cycles);
    // Steady state: every worker has started (by (N-1)*delta < 2S) and none has stopped (worker
    // 0 stops at cycles * 2S).
    std::vector<int64_t> stored;
    for (int64_t unit = 2 * s; unit < (cycles - 1) * 2 * s; ++unit) {
      for (int64_t l = 0; l < s; ++l) {
        int64_t count = 0;
        for (const CyclicOp& op : ops)
          if (op.stage == l && op.tick >= unit * n && op.tick < (unit + 1) * n) {
            ++count;
            EXPECT_EQ(op.tick % n, 0) << "ops start on unit boundaries when N = S";
          }
        EXPECT_EQ(count, 1) << "N = S = " << n << ", stage " << l << ", unit " << unit;
      }
      // Stage activations held in the middle of the unit: a forward holds its stage's
      // activations from its start, a backward until its end.
      int64_t held = 0;
      for (const CyclicOp& op : ops) {
        if (!op.backward && op.tick <= unit * n) ++held;
        if (op.backward && op.tick + n <= unit * n) --held;
      }
      stored.push_back(held);
    }
    for (int64_t h : stored) EXPECT_EQ(h, n * (s + 1) / 2) << "N = S = " << n;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t l = 0; l < s; ++l)
        EXPECT_EQ(fresh_by_code(r, l, s), fresh_by_timing(r, l, n, s)) << r << " " << l;
  }
}

TEST(CyclicSchedule, PredicatesDifferWhenWorkersOutnumberStages) {
  // N = 8, S = 4: the code rule makes ranks >= 3 fully fresh; the timing rule does not.
  for (int64_t r = 3; r < 8; ++r)
    for (int64_t l = 0; l < 4; ++l) EXPECT_TRUE(fresh_by_code(r, l, 4));
  EXPECT_FALSE(fresh_by_timing(3, 0, 8, 4));
  EXPECT_TRUE(fresh_by_timing(7, 0, 8, 4));
  EXPECT_FALSE(fresh_by_timing(0, 3, 8, 4));
  EXPECT_TRUE(fresh_by_timing(0, 3, 4, 4));
}

TEST(CyclicSchedule, WindowsSplitEachWorkersStreamByTheCommonClock) {
  for (int64_t n = 1; n <= 5; ++n)
    for (int64_t s = 1; s <= 4; ++s)
      for (int64_t r = 0; r < n; ++r) {
        int64_t next = 0;
        for (int64_t k = 0; k < 6; ++k) {
          auto [first, end] = window_ops(n, s, r, k);
          EXPECT_EQ(first, next) << n << " " << s << " " << r << " " << k;
          if (k > 0) {
            EXPECT_EQ(end - first, 2 * s);
          }
          EXPECT_TRUE(first <= 2 * s * k && 2 * s * k < end) << "cycle k starts in window k";
          for (int64_t j = first; j < end; ++j) {
            const int64_t tick = cyclic_op(n, s, r, j).tick;
            EXPECT_GE(tick, 2 * s * n * k);
            EXPECT_LT(tick, 2 * s * n * (k + 1));
          }
          next = end;
        }
      }
}

// --- stages -------------------------------------------------------------------------------

TEST(CyclicStages, CountsTwoFlopsPerWeightAndOutputPosition) {
  // One 3x3 conv block (1 -> 2 channels on 8x8, padded: 8x8 outputs) and the head (2*4*4 = 32
  // -> 128 -> 4 classes).
  StagedModel model = testing::tiny_model(/*batch_norm=*/true);
  const std::vector<double> flops = stage_flops(model, torch::zeros({2, 1, 8, 8}));
  ASSERT_EQ(flops.size(), 2u);
  EXPECT_DOUBLE_EQ(flops[0], 2.0 * (2 * 1 * 3 * 3) * 64);
  EXPECT_DOUBLE_EQ(flops[1], 2.0 * 32 * 128 + 2.0 * 128 * 4);
}

TEST(CyclicStages, BalancedByFlopsOrCutWhereAsked) {
  // The tiny MLP: fc1 2*12*32 = 768, fc2 2*32*16 = 1024, head 2*16*4 = 128 FLOPs per example.
  StagedModel model = testing::tiny_model();
  const torch::Tensor x = torch::zeros({2, 12});
  CyclicOptions o;
  o.n_stages = 2;
  std::vector<StageRange> two = cyclic_stages(model, x, o);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].end, 1);  // {fc1} {fc2, head}: 1152 at most, where {fc1, fc2} {head} has 1792
  o.n_stages = 8;
  EXPECT_EQ(cyclic_stages(model, x, o).size(), 3u);  // capped at the model's stages
  o.stage_cuts = {2};
  std::vector<StageRange> cut = cyclic_stages(model, x, o);
  ASSERT_EQ(cut.size(), 2u);
  EXPECT_EQ(cut[0].end, 2);
  for (std::vector<int64_t> bad : {std::vector<int64_t>{2, 1}, {0}, {3}}) {
    o.stage_cuts = bad;
    EXPECT_THROW(cyclic_stages(model, x, o), ConfigError);
  }
}

// --- the update rules ---------------------------------------------------------------------

const std::vector<std::string> kSgd = {"optimizer.momentum=0.9", "optimizer.weight_decay=1e-3",
                                       "data.batch_size=8"};

Config cdp_config(const std::string& rule, std::vector<std::string> more = {}) {
  return tiny_config(with(with(kSgd, {"algorithm.name=\"cdp\"", "algorithm.rule=\"" + rule + "\"",
                                      "algorithm.unit_ms=0.5"}),
                          more));
}

TEST(Cdp, SimulatorWithRuleDpMatchesDdp) {
  for (const testing::Precision& p : {testing::kFloat32, testing::kFloat64}) {
    Config ddp = tiny_config(with(with(kSgd, {"algorithm.name=\"ddp\""}), p.overrides));
    Config cdp = cdp_config("dp", with({"algorithm.runtime=\"simulator\""}, p.overrides));
    DatasetSplits data = load_dataset(ddp.data, 0);
    auto a = run_on_fake_world(ddp, 3, 8, data);
    auto b = run_on_fake_world(cdp, 3, 8, data);
    EXPECT_LT(max_diff(flat_params(a[0].model), flat_params(b[0].model)), p.tolerance * 0.1)
        << p.name;
  }
}

// One process, batch N*B: each step's gradient at the worker copy c_k, applied one step later
// (c_1 = c_0: no update at k = 0).
torch::Tensor serial_delayed(const Config& cfg, const DatasetSplits& data, int64_t n,
                             int64_t steps) {
  torch::manual_seed(0);
  StagedModel model = make_model(cfg.model, ModelInput{data.train.example_shape(), 10});
  MicroBatchSource batches(data.train, cfg.data.batch_size * n, 0, 1, 0, TransformOptions{});
  FlatParameters flat(model->parameters_of(0, model->num_stages()));
  torch::Tensor prev = torch::zeros_like(flat.grads_flat());
  auto opt = make_sgd({ParamSlot{"all", flat.params_flat(), prev, 0.0}}, 0.9, 0.0, false);
  for (int64_t k = 0; k < steps; ++k) {
    flat.grads_flat().zero_();
    MicroBatch mb = batches.next();
    loss_of(model->forward(mb.inputs), mb.targets).backward();
    if (k > 0) opt->step(cfg.optimizer.lr);
    prev.copy_(flat.grads_flat());
  }
  return flat.params_flat().clone();
}

TEST(Cdp, Cdp1MatchesSerialDelayedRecurrence) {
  for (const char* runtime : {"simulator", "staggered"}) {
    Config cfg =
        tiny_config({"algorithm.name=\"cdp\"", "algorithm.rule=\"cdp1\"", "optimizer.momentum=0.9",
                     "data.batch_size=8", "algorithm.unit_ms=0.5",
                     std::string("algorithm.runtime=\"") + runtime + "\""});
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, 2, 7, data);
    torch::Tensor want = serial_delayed(cfg, data, 2, 7);
    EXPECT_LT(max_diff(flat_params(ranks[0].model), want), 1e-6) << runtime;
    // The delay matters: undelayed data parallelism ends elsewhere.
    auto undelayed = run_on_fake_world(
        tiny_config({"algorithm.name=\"ddp\"", "optimizer.momentum=0.9", "data.batch_size=8"}), 2,
        7, data);
    EXPECT_GT(max_diff(flat_params(undelayed[0].model), want), 1e-4);
  }
}

TEST(Cdp, StaggeredRuntimeMatchesSimulator) {
  struct Case {
    const char* rule;
    const char* predicate;
  };
  for (Case c :
       {Case{"dp", "code"}, Case{"cdp1", "code"}, Case{"cdp2", "code"}, Case{"cdp2", "timing"}}) {
    // 4 workers over 3 stages: the predicates differ and delta = 1.5 units is fractional.
    std::vector<std::string> more = {
        std::string("algorithm.fresh_predicate=\"") + c.predicate + "\"",
        "model.dtype=\"float64\""};
    Config sim = cdp_config(c.rule, with(more, {"algorithm.runtime=\"simulator\""}));
    Config run = cdp_config(c.rule, more);
    DatasetSplits data = load_dataset(sim.data, 0);
    auto a = run_on_fake_world(sim, 4, 9, data);
    auto b = run_on_fake_world(run, 4, 9, data);
    for (int64_t r = 0; r < 4; ++r)
      EXPECT_LT(max_diff(flat_params(a[r].model), flat_params(b[r].model)), 1e-10)
          << c.rule << " " << c.predicate << " rank " << r;
  }
}

TEST(Cdp, V2WorkersComputeWithTheCurrentOrPreviousVersion) {
  // N = 4 over the MLP's S = 3 stages, code predicate: worker r uses theta_k on the stages
  // l >= 2 - r and theta_{k-1} below. Worker 3 is fresh everywhere: its copies are theta_k.
  Config cfg = cdp_config("cdp2", {"algorithm.runtime=\"simulator\""});
  DatasetSplits data = load_dataset(cfg.data, 0);
  const int64_t steps = 6;
  std::vector<std::vector<torch::Tensor>> seen(4);  // [rank][step]: the copy the step used
  testing::FakeRunOptions opts;
  opts.after_step = [&](int64_t r, int64_t, testing::RankState& s) {
    seen[r].push_back(flat_params(s.model));
  };
  auto ranks = run_on_fake_world(cfg, 4, steps, data, opts);
  auto* cdp = dynamic_cast<Cdp*>(ranks[0].algorithm.get());
  ASSERT_NE(cdp, nullptr);
  ASSERT_EQ(cdp->stages().size(), 3u);
  // Flat ranges of the stages: fc1 12*32+32, fc2 32*16+16, head 16*10+10.
  const std::vector<std::pair<int64_t, int64_t>> range = {{0, 416}, {416, 944}, {944, 1114}};
  ASSERT_EQ(seen[3][0].numel(), 1114);
  for (int64_t k = 0; k < steps; ++k)
    for (int64_t r = 0; r < 4; ++r)
      for (int64_t l = 0; l < 3; ++l) {
        auto part = [&](const torch::Tensor& t) {
          return t.narrow(0, range[l].first, range[l].second - range[l].first);
        };
        const bool fresh = l >= 2 - r;
        const torch::Tensor want = part(seen[3][fresh ? k : std::max<int64_t>(0, k - 1)]);
        EXPECT_TRUE(torch::equal(part(seen[r][k]), want))
            << "step " << k << " rank " << r << " stage " << l;
        if (k >= 2) {
          EXPECT_FALSE(torch::equal(part(seen[3][k]), part(seen[3][k - 1])));
        }
      }
}

TEST(Cdp, FinalAveragingLeavesOneModel) {
  for (const char* runtime : {"simulator", "staggered"}) {
    Config cfg = cdp_config("cdp2", {std::string("algorithm.runtime=\"") + runtime + "\""});
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, 4, 5, data);
    for (int64_t r = 1; r < 4; ++r)
      EXPECT_LT(max_diff(flat_params(ranks[0].model), flat_params(ranks[r].model)), 1e-7)
          << runtime << " rank " << r;
  }
}

TEST(Cdp, AccumulationGivesTheSameStepsAsABiggerBatch) {
  // accumulation = 2 of 4 examples: the gradient of their mean, as one batch of 8 gives it
  // (rule dp: every worker at the same version, so how the examples split across workers does
  // not matter).
  for (const char* runtime : {"simulator", "staggered"}) {
    std::vector<std::string> more = {std::string("algorithm.runtime=\"") + runtime + "\"",
                                     "model.dtype=\"float64\""};
    Config small = cdp_config("dp", with(more, {"data.batch_size=4", "algorithm.accumulation=2"}));
    Config big = cdp_config("dp", more);
    DatasetSplits data = load_dataset(big.data, 0);
    auto a = run_on_fake_world(small, 2, 5, data);
    auto b = run_on_fake_world(big, 2, 5, data);
    EXPECT_LT(max_diff(flat_params(a[0].model), flat_params(b[0].model)), 1e-10) << runtime;
  }
}

TEST(Cdp, RefusesWhatItCannotDo) {
  DatasetSplits data = load_dataset(cdp_config("cdp2").data, 0);
  EXPECT_THROW(run_on_fake_world(cdp_config("cdp2", {"optimizer.grad_clip=1.0"}), 2, 1, data),
               ConfigError);
  EXPECT_THROW(run_on_fake_world(cdp_config("cdp3"), 2, 1, data), ConfigError);
}

}  // namespace
}  // namespace desync
