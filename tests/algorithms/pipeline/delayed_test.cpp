#include <gtest/gtest.h>

#include "algorithms/fake_run.h"
#include "desync/algorithms/common.h"
#include "desync/algorithms/pipeline/delayed_pipeline.h"
#include "desync/algorithms/pipeline/delayed_stage.h"
#include "desync/algorithms/pipeline/dsp.h"
#include "desync/algorithms/pipeline/petra.h"
#include "desync/algorithms/pipeline/pipedream.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::max_diff;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

// The delayed methods: their registered names and their memory policies.
struct Mode {
  const char* name;
  std::unique_ptr<const MemoryPolicy> (*policy)();
};
const Mode kModes[] = {
    {"pipedream", pipedream_policy}, {"dsp", dsp_policy}, {"petra", petra_policy}};

Config delayed_config(const std::string& mode, int64_t k, std::vector<std::string> extra = {}) {
  std::vector<std::string> base = {
      "algorithm.name=\"" + mode + "\"", "algorithm.accumulation=" + std::to_string(k),
      "model.hidden=[32, 16, 16]", "data.batch_size=8", "optimizer.momentum=0.9"};
  base.insert(base.end(), extra.begin(), extra.end());
  return tiny_config(base);
}

std::vector<MicroBatch> micro_batches(const Config& cfg, const DatasetSplits& data, int64_t n) {
  MicroBatchSource source(data.train, cfg.data.batch_size, 0, 1,
                          static_cast<uint64_t>(cfg.run.seed), {cfg.data.normalize, false});
  std::vector<MicroBatch> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(source.next());
  return out;
}

StagedModel seeded_model(const Config& cfg, const DatasetSplits& data) {
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  return make_model(cfg.model, {data.train.example_shape(), data.train.num_classes});
}

// J stages, each on its own copy of the model, in the tick simulator.
std::unique_ptr<TickSimulator> simulator(const Config& cfg, const DatasetSplits& data,
                                         const MemoryPolicy& policy, int64_t j, int64_t k,
                                         std::vector<StagedModel>& models) {
  models.clear();
  for (int64_t s = 0; s < j; ++s) models.push_back(seeded_model(cfg, data));
  auto ranges = place_stages(models[0]->num_stages(), j, {}, std::vector<double>(4, 1.0));
  return std::make_unique<TickSimulator>(cfg, models, ranges, policy, k);
}

TEST(DelayedPipeline, ForwardToBackwardDelayIsTwiceTheDistanceToTheLastStage) {
  const int64_t j = 4, total = 12;
  for (const Mode& m : kModes) {
    const char* mode = m.name;
    Config cfg = delayed_config(mode, 1);
    DatasetSplits data = load_dataset(cfg.data, 0);
    std::vector<StagedModel> models;
    auto sim = simulator(cfg, data, *m.policy(), j, 1, models);
    sim->run(micro_batches(cfg, data, total), [](int64_t) { return 0.01; });
    for (int64_t s = 0; s < j; ++s) {
      const StageCounters& c = sim->stage(s).counters();
      EXPECT_EQ(c.min_delay_ticks, 2 * (j - 1 - s)) << mode << " stage " << s;
      EXPECT_EQ(c.max_delay_ticks, 2 * (j - 1 - s)) << mode << " stage " << s;
      const int64_t depth = s == j - 1 ? 0 : 2 * (j - 1 - s) + 1;
      EXPECT_EQ(c.peak_buffered_inputs, depth) << mode << " stage " << s;  // no stage reverses
      EXPECT_EQ(c.peak_stashed_params, std::string(mode) == "pipedream" ? depth : 0);
      EXPECT_EQ(c.updates, total) << mode;
    }
    for (size_t t = 0; t < sim->backwards().size(); ++t)
      for (auto [s, b] : sim->backwards()[t])
        EXPECT_EQ(static_cast<int64_t>(t), backward_tick(b, s, j));
  }
}

TEST(DelayedPipeline, WithoutUpdatesEveryModeAccumulatesBackpropsGradients) {
  // k larger than the run: no update happens, so each stage's gradient buffer holds the sum of
  // its per-micro-batch gradients, which must be backprop's.
  const int64_t j = 4, total = 6;
  for (const Mode& m : kModes) {
    const char* mode = m.name;
    Config cfg = delayed_config(mode, 1000);
    DatasetSplits data = load_dataset(cfg.data, 0);
    std::vector<MicroBatch> batches = micro_batches(cfg, data, total);
    std::vector<StagedModel> models;
    auto sim = simulator(cfg, data, *m.policy(), j, 1000, models);
    sim->run(batches, [](int64_t) { return 0.1; });
    std::vector<torch::Tensor> grads;
    for (int64_t s = 0; s < j; ++s) grads.push_back(sim->stage(s).flat().grads_flat());

    StagedModel ref = seeded_model(cfg, data);
    FlatParameters flat(ref->parameters_of(0, ref->num_stages()));
    for (const MicroBatch& mb : batches) loss_of(ref->forward(mb.inputs), mb.targets).backward();
    EXPECT_LT(max_diff(torch::cat(grads), flat.grads_flat()), 1e-5) << mode;
  }
}

TEST(DelayedPipeline, PetraOnTenRevNetStagesRebuildsInputsAndMatchesBackpropsGradients) {
  // RevNet [2,2,2,2]: stem, 8 blocks (3 of them downsampling), head = 10 stages, one per rank.
  // Without updates the reversible stages invert exactly (up to rounding), so the gradients
  // equal backprop's; they buffer nothing, the others at most 2(J-1-s)+1 inputs.
  const int64_t j = 10, total = 4;
  Config cfg = tiny_config({"algorithm.name=\"petra\"", "algorithm.accumulation=1000",
                            "model.name=\"revnet\"", "model.blocks=[2, 2, 2, 2]", "model.width=4",
                            "data.synthetic_shape=[1, 8, 8]", "data.batch_size=4"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<MicroBatch> batches = micro_batches(cfg, data, total);
  std::vector<StagedModel> models;
  for (int64_t s = 0; s < j; ++s) models.push_back(seeded_model(cfg, data));
  ASSERT_EQ(models[0]->num_stages(), j);
  auto ranges = place_stages(j, j, {}, std::vector<double>(j, 1.0));
  TickSimulator sim(cfg, models, ranges, *petra_policy(), 1000);
  sim.run(batches, [](int64_t) { return 0.1; });

  StagedModel ref = seeded_model(cfg, data);
  FlatParameters flat(ref->parameters_of(0, ref->num_stages()));
  for (const MicroBatch& mb : batches) loss_of(ref->forward(mb.inputs), mb.targets).backward();
  std::vector<torch::Tensor> grads;
  int64_t reversible = 0;
  for (int64_t s = 0; s < j; ++s) {
    grads.push_back(sim.stage(s).flat().grads_flat());
    const StageCounters& c = sim.stage(s).counters();
    if (sim.stage(s).reversible()) {
      ++reversible;
      EXPECT_EQ(c.peak_buffered_inputs, 0) << "stage " << s;
    } else if (s < j - 1) {
      EXPECT_EQ(c.peak_buffered_inputs, std::min<int64_t>(total, 2 * (j - 1 - s) + 1));
    }
  }
  EXPECT_EQ(reversible, 5);
  EXPECT_LT(max_diff(torch::cat(grads), flat.grads_flat()), 1e-5);
}

TEST(DelayedPipeline, MultiProcessRuntimeEqualsTheTickSimulator) {
  const int64_t j = 4, k = 2, steps = 5;
  for (const Mode& m : kModes) {
    const char* mode = m.name;
    Config cfg = delayed_config(mode, k);
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, j, steps, data);  // then finish() drains
    std::vector<StagedModel> models;
    auto sim = simulator(cfg, data, *m.policy(), j, k, models);
    sim->run(micro_batches(cfg, data, steps * k), [&](int64_t) { return cfg.optimizer.lr; });
    for (int64_t s = 0; s < j; ++s) {
      auto& runtime = dynamic_cast<DelayedPipeline&>(*ranks[s].algorithm);
      EXPECT_LT(max_diff(runtime.stage().flat().params_flat(), sim->stage(s).flat().params_flat()),
                1e-6)
          << mode << " stage " << s;
      EXPECT_EQ(runtime.stage().counters().updates, steps) << mode;
    }
  }
}

TEST(DelayedPipeline, PetraOneStageEqualsBackprop) {
  for (const char* mode : {"petra", "pipedream", "dsp"}) {
    Config petra = delayed_config(mode, 2);
    Config single = tiny_config({"algorithm.accumulation=2", "model.hidden=[32, 16, 16]",
                                 "data.batch_size=8", "optimizer.momentum=0.9"});
    DatasetSplits data = load_dataset(petra.data, 0);
    auto a = run_on_fake_world(petra, 1, 6, data);
    auto b = run_on_fake_world(single, 1, 6, data);
    EXPECT_LT(max_diff(flat_params(a[0].model), flat_params(b[0].model)), 1e-6) << mode;
    for (size_t t = 0; t < a[0].losses.size(); ++t)
      EXPECT_NEAR(a[0].losses[t], b[0].losses[t], 1e-6);
  }
}

TEST(DelayedPipeline, PipeDreamBackwardUsesBitwiseTheForwardsWeights) {
  Config cfg = delayed_config("pipedream", 1);
  DatasetSplits data = load_dataset(cfg.data, 0);
  StagedModel model = seeded_model(cfg, data);
  auto memory = pipedream_policy()->make_memory(model, {0, 1});
  torch::Tensor theta = torch::randn({100}), x = torch::randn({8, 12});
  torch::Tensor at_forward = theta.clone();
  memory->on_forward(7, x, theta);
  theta.add_(1.0);  // the stage updates its weights meanwhile
  EXPECT_TRUE(torch::equal(memory->params_for_backward(7), at_forward));
  EXPECT_TRUE(torch::equal(memory->input_for_backward(7, {}), x));
  EXPECT_EQ(memory->stashed_params(), 0);
}

// The gradient a stage's backward accumulates when its weights moved by +0.5 since the forward:
// at the forward's weights (a weight stash) or at the current ones.
void expect_backward_uses_weights(const MemoryPolicy& policy, bool forwards_weights) {
  Config cfg = delayed_config(policy.name(), 1000);  // no update inside the test
  DatasetSplits data = load_dataset(cfg.data, 0);
  MicroBatch mb = micro_batches(cfg, data, 1)[0];
  DelayedStage stage(cfg, seeded_model(cfg, data), {0, 1}, /*first=*/true, /*last=*/false, 1000,
                     policy);
  PipeMessage y = stage.forward({0, mb.inputs, mb.targets, {}}, 0);
  torch::Tensor dy = torch::randn(y.x.sizes());
  torch::Tensor moved;
  {
    torch::NoGradGuard no_grad;
    stage.flat().params_flat().add_(0.5);  // as if the stage had updated meanwhile
    moved = stage.flat().params_flat().clone();
  }
  stage.backward({0, {}, {}, dy}, 2);
  EXPECT_TRUE(torch::equal(stage.flat().params_flat(), moved)) << policy.name();  // restored

  StagedModel ref = seeded_model(cfg, data);
  FlatParameters flat(ref->parameters_of(0, 1));
  if (!forwards_weights) {
    torch::NoGradGuard no_grad;
    flat.params_flat().add_(0.5);
  }
  ref->forward_range(mb.inputs, 0, 1).backward(dy);
  EXPECT_LT(max_diff(stage.flat().grads_flat(), flat.grads_flat()), 1e-6) << policy.name();
}

TEST(DelayedPipeline, PipeDreamRecomputesWithTheStashedWeightsDspWithTheCurrentOnes) {
  expect_backward_uses_weights(*pipedream_policy(), /*forwards_weights=*/true);
  expect_backward_uses_weights(*dsp_policy(), /*forwards_weights=*/false);
}

TEST(DelayedPipeline, EachMethodBuildsTheRuntimeWithItsPolicy) {
  // Only the policy that rebuilds inputs makes backward messages carry them.
  for (const Mode& m : kModes) {
    auto algorithm = make_algorithm(delayed_config(m.name, 1).algorithm);
    auto& runtime = dynamic_cast<DelayedPipeline&>(*algorithm);
    EXPECT_EQ(runtime.policy().name(), m.name);
    EXPECT_EQ(runtime.policy().rebuilds_inputs(), std::string(m.name) == "petra") << m.name;
    EXPECT_EQ(runtime.traits().data, AlgorithmTraits::Data::kFirstRank);
    EXPECT_EQ(runtime.traits().accumulations_per_step, 1);  // k = accumulation per step
  }
}

TEST(DelayedPipeline, ResumeIsRefusedWithAClearError) {
  Config cfg = delayed_config("petra", 1);
  auto algorithm = make_algorithm(cfg.algorithm);
  Archive archive;
  EXPECT_THROW(algorithm->load(archive), CheckpointError);
}

}  // namespace
}  // namespace desync
