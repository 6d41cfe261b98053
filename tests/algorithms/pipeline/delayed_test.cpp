#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

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

// J stages, each on its own copy of the model, in the tick simulator; `ranges` receives the
// placement (balanced by count).
std::unique_ptr<TickSimulator> simulator(const Config& cfg, const DatasetSplits& data,
                                         const MemoryPolicy& policy, int64_t j, int64_t k,
                                         std::vector<StagedModel>& models,
                                         std::vector<StageRange>* ranges_out = nullptr) {
  models.clear();
  for (int64_t s = 0; s < j; ++s) models.push_back(seeded_model(cfg, data));
  const int64_t n = models[0]->num_stages();
  auto ranges = place_stages(n, j, {}, std::vector<double>(n, 1.0));
  if (ranges_out) *ranges_out = ranges;
  return std::make_unique<TickSimulator>(cfg, models, ranges, policy, k);
}

// RevNet [2, 2, 2, 2] on 1x8x8 inputs: stem, 8 blocks (3 of them downsampling), head = 10
// stages; the blocks at stages 1, 2, 4, 6 and 8 are reversible.
Config revnet_config(const std::string& mode, int64_t k, std::vector<std::string> extra = {}) {
  std::vector<std::string> base = {"algorithm.name=\"" + mode + "\"",
                                   "algorithm.accumulation=" + std::to_string(k),
                                   "model.name=\"revnet\"",
                                   "model.blocks=[2, 2, 2, 2]",
                                   "model.width=4",
                                   "data.synthetic_shape=[1, 8, 8]",
                                   "data.batch_size=4"};
  base.insert(base.end(), extra.begin(), extra.end());
  return tiny_config(base);
}

// Before every tick's updates, each stage's parameters (those its forward used in that tick)
// and gradients (with k = 1: those of the micro-batch whose backward it ran in that tick).
struct TickRecord {
  std::vector<std::vector<torch::Tensor>> params, grads;  // [tick][stage]
};
void record_ticks(TickSimulator& sim, int64_t j, TickRecord& rec) {
  sim.set_before_updates([&sim, j, &rec](int64_t) {
    rec.params.emplace_back();
    rec.grads.emplace_back();
    for (int64_t s = 0; s < j; ++s) {
      rec.params.back().push_back(sim.stage(s).flat().params_flat().clone());
      rec.grads.back().push_back(sim.stage(s).flat().grads_flat().clone());
    }
  });
}

// Wraps another policy's memories and measures, at every backward, how far the input a memory
// gives back (buffered or rebuilt) is from the input the stage received at the forward: the
// relative error ||x_rebuilt - x|| / ||x||, by the first model stage of the memory's range.
class RebuildErrorPolicy : public MemoryPolicy {
 public:
  explicit RebuildErrorPolicy(std::unique_ptr<const MemoryPolicy> inner)
      : inner_(std::move(inner)) {}
  std::string name() const override { return inner_->name(); }
  bool rebuilds_inputs() const override { return inner_->rebuilds_inputs(); }
  std::unique_ptr<StageMemory> make_memory(StagedModel model, StageRange range) const override {
    return std::make_unique<Memory>(inner_->make_memory(std::move(model), range),
                                    &errors_[range.begin]);
  }
  // The errors of each backward, in order, by first model stage.
  const std::map<int64_t, std::vector<double>>& errors() const { return errors_; }

 private:
  class Memory : public StageMemory {
   public:
    Memory(std::unique_ptr<StageMemory> inner, std::vector<double>* errors)
        : inner_(std::move(inner)), errors_(errors) {}
    void on_forward(int64_t id, const torch::Tensor& x, const torch::Tensor& params) override {
      received_[id] = x.clone();
      inner_->on_forward(id, x, params);
    }
    torch::Tensor input_for_backward(int64_t id, const torch::Tensor& output) override {
      torch::Tensor x = inner_->input_for_backward(id, output);
      const torch::Tensor& truth = received_.at(id);
      errors_->push_back(((x - truth).norm() / truth.norm()).item<double>());
      received_.erase(id);
      return x;
    }
    torch::Tensor params_for_backward(int64_t id) override {
      return inner_->params_for_backward(id);
    }
    bool inverts() const override { return inner_->inverts(); }

   private:
    std::unique_ptr<StageMemory> inner_;
    std::vector<double>* errors_;
    std::map<int64_t, torch::Tensor> received_;
  };

  std::unique_ptr<const MemoryPolicy> inner_;
  mutable std::map<int64_t, std::vector<double>> errors_;
};

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
  }
}

TEST(DelayedPipeline, FourStagesRunTheHandWrittenScheduleOfForwardsAndBackwards) {
  // J = 4, three micro-batches. Each entry is a (stage, micro-batch) pair that runs in the tick;
  // the last stage's backward happens with its forward.
  using Tick = std::set<std::pair<int64_t, int64_t>>;
  const std::vector<Tick> forwards = {{{0, 0}},                  // tick 0
                                      {{0, 1}, {1, 0}},          // tick 1
                                      {{0, 2}, {1, 1}, {2, 0}},  // tick 2
                                      {{1, 2}, {2, 1}, {3, 0}},  // tick 3
                                      {{2, 2}, {3, 1}},          // tick 4
                                      {{3, 2}},                  // tick 5
                                      {},
                                      {},
                                      {}};
  const std::vector<Tick> backwards = {{},
                                       {},
                                       {},
                                       {{3, 0}},                  // tick 3
                                       {{3, 1}, {2, 0}},          // tick 4
                                       {{3, 2}, {2, 1}, {1, 0}},  // tick 5
                                       {{2, 2}, {1, 1}, {0, 0}},  // tick 6
                                       {{1, 2}, {0, 1}},          // tick 7
                                       {{0, 2}}};                 // tick 8
  for (const Mode& m : kModes) {
    Config cfg = delayed_config(m.name, 1);
    DatasetSplits data = load_dataset(cfg.data, 0);
    std::vector<StagedModel> models;
    auto sim = simulator(cfg, data, *m.policy(), 4, 1, models);
    sim->run(micro_batches(cfg, data, 3), [](int64_t) { return 0.01; });
    ASSERT_EQ(sim->forwards().size(), forwards.size()) << m.name;
    for (size_t t = 0; t < forwards.size(); ++t) {
      const auto& f = sim->forwards()[t];
      const auto& b = sim->backwards()[t];
      EXPECT_EQ(Tick(f.begin(), f.end()), forwards[t]) << m.name << " forwards, tick " << t;
      EXPECT_EQ(Tick(b.begin(), b.end()), backwards[t]) << m.name << " backwards, tick " << t;
    }
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

TEST(DelayedPipeline, PetraRuntimeOnTenRevNetStagesWithUpdatesEveryMicroBatchEqualsTheSimulator) {
  // Reversible stages invert with weights that moved since the forward; the learning rate halves
  // every step, so the runtime and the simulator must also agree on the schedule (including the
  // drain after the last step).
  const int64_t j = 10, k = 1, steps = 6;
  Config cfg = revnet_config("petra", k,
                             {"optimizer.momentum=0.9", "schedule.name=\"step\"",
                              "schedule.step_size=1", "schedule.gamma=0.5"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto ranks = run_on_fake_world(cfg, j, steps, data);
  std::vector<StagedModel> models;
  auto sim = simulator(cfg, data, *petra_policy(), j, k, models);
  const Schedule& schedule = *ranks[0].schedule;
  sim->run(micro_batches(cfg, data, steps * k), [&](int64_t step) { return schedule.lr(step); });
  int64_t reversible = 0;
  for (int64_t s = 0; s < j; ++s) {
    auto& runtime = dynamic_cast<DelayedPipeline&>(*ranks[s].algorithm);
    reversible += runtime.stage().reversible() ? 1 : 0;
    EXPECT_LT(max_diff(runtime.stage().flat().params_flat(), sim->stage(s).flat().params_flat()),
              1e-6)
        << "stage " << s;
    EXPECT_EQ(runtime.stage().counters().updates, sim->stage(s).counters().updates);
  }
  EXPECT_EQ(reversible, 5);
}

// Trains the 10-stage RevNet under PETRA with an update after every `k` micro-batches, and
// returns the relative errors of the rebuilt inputs by stage.
std::map<int64_t, std::vector<double>> petra_rebuild_errors(int64_t k, int64_t total) {
  const int64_t j = 10;
  Config cfg = revnet_config("petra", k, {"optimizer.lr=0.05"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  RebuildErrorPolicy policy(petra_policy());
  std::vector<StagedModel> models;
  auto sim = simulator(cfg, data, policy, j, k, models);
  sim->run(micro_batches(cfg, data, total), [&](int64_t) { return 0.05; });
  return policy.errors();
}

double mean_of(const std::vector<double>& v) {
  double sum = 0.0;
  for (double x : v) sum += x;
  return v.empty() ? 0.0 : sum / static_cast<double>(v.size());
}

TEST(DelayedPipeline, PetraRebuiltInputsAreExactWithoutUpdatesAndDriftWithTheStagesDelay) {
  // Reversible stages 1, 2, 4, 6, 8 wait 2(J-1-s) = 16, 14, 10, 6, 2 ticks between a
  // micro-batch's forward and its backward. Without updates inversion rebuilds the input up to
  // rounding; with an update after every micro-batch the weights the stage inverts with are not
  // those of the forward, and the error accumulates down the pipeline: the longer the delay, the
  // larger the error.
  const int64_t total = 24;
  const std::vector<int64_t> reversible = {1, 2, 4, 6, 8};
  auto exact = petra_rebuild_errors(/*k=*/1000, total);  // no update during the run
  auto moving = petra_rebuild_errors(/*k=*/1, total);
  std::vector<double> drift;
  for (int64_t s : reversible) {
    ASSERT_EQ(moving.at(s).size(), total);
    for (double e : exact.at(s)) EXPECT_LT(e, 1e-6) << "stage " << s;
    // The micro-batches whose backward came after at least one update of the stage.
    std::vector<double> late(moving.at(s).begin() + 1, moving.at(s).end());
    drift.push_back(mean_of(late));
    EXPECT_GT(drift.back(), 1e-4) << "stage " << s;
  }
  for (size_t i = 0; i + 1 < drift.size(); ++i)
    EXPECT_GT(drift[i], drift[i + 1])
        << "stage " << reversible[i] << " (delay " << 2 * (9 - reversible[i]) << ") against stage "
        << reversible[i + 1];
  // Stages that buffer their input give back exactly what they received.
  for (int64_t s : {0, 3, 5, 7})
    for (double e : moving.at(s)) EXPECT_EQ(e, 0.0) << "stage " << s;
}

TEST(DelayedPipeline, PipeDreamGradientIsBackpropThroughTheWeightVersionsOfItsForwards) {
  // With an update after every micro-batch, micro-batch b's gradient at stage s must be exact
  // backprop through the model whose stage r has the weights stage r used for b's forward (at
  // tick b + r): PipeDream's weight stash. DSP recomputes with the current weights and differs.
  const int64_t j = 4, total = 8;
  for (const Mode& m : kModes) {
    if (std::string(m.name) == "petra") continue;  // no reversible stage here: PETRA is DSP
    const bool stash = std::string(m.name) == "pipedream";
    Config cfg = delayed_config(m.name, 1);
    DatasetSplits data = load_dataset(cfg.data, 0);
    std::vector<MicroBatch> batches = micro_batches(cfg, data, total);
    std::vector<StagedModel> models;
    std::vector<StageRange> ranges;
    auto sim = simulator(cfg, data, *m.policy(), j, 1, models, &ranges);
    TickRecord rec;
    record_ticks(*sim, j, rec);
    sim->run(batches, [](int64_t) { return 0.1; });

    double worst = 0.0;
    for (int64_t b = 0; b < total; ++b) {
      StagedModel ref = seeded_model(cfg, data);
      std::vector<std::unique_ptr<FlatParameters>> flats;
      for (int64_t r = 0; r < j; ++r) {
        flats.push_back(
            std::make_unique<FlatParameters>(ref->parameters_of(ranges[r].begin, ranges[r].end)));
        torch::NoGradGuard no_grad;
        flats[r]->params_flat().copy_(rec.params.at(b + r)[r]);  // the weights of b's forward
      }
      loss_of(ref->forward(batches[b].inputs), batches[b].targets).backward();
      for (int64_t s = 0; s < j; ++s) {
        const int64_t backward = s == j - 1 ? b + s : b + 2 * j - s - 2;
        const double d = max_diff(rec.grads.at(backward)[s], flats[s]->grads_flat());
        if (stash) EXPECT_LT(d, 1e-6) << "micro-batch " << b << " stage " << s;
        worst = std::max(worst, d);
      }
    }
    if (!stash) EXPECT_GT(worst, 1e-3) << m.name << " used the forward's weights";
  }
}

void expect_one_stage_equals_backprop(const testing::Precision& p) {
  const double tolerance = std::min(1e-6, p.tolerance);
  for (const char* mode : {"petra", "pipedream", "dsp"}) {
    Config petra = delayed_config(mode, 2, p.overrides);
    std::vector<std::string> s = {"algorithm.accumulation=2", "model.hidden=[32, 16, 16]",
                                  "data.batch_size=8", "optimizer.momentum=0.9"};
    s.insert(s.end(), p.overrides.begin(), p.overrides.end());
    Config single = tiny_config(s);
    DatasetSplits data = load_dataset(petra.data, 0);
    auto a = run_on_fake_world(petra, 1, 6, data);
    auto b = run_on_fake_world(single, 1, 6, data);
    EXPECT_LT(max_diff(flat_params(a[0].model), flat_params(b[0].model)), tolerance)
        << p.name << " " << mode;
    for (size_t t = 0; t < a[0].losses.size(); ++t)
      EXPECT_NEAR(a[0].losses[t], b[0].losses[t], tolerance);
  }
}

TEST(DelayedPipeline, PetraOneStageEqualsBackprop) {
  expect_one_stage_equals_backprop(testing::kFloat32);
}

TEST(DelayedPipeline, PetraOneStageEqualsBackpropInFloat64) {
  expect_one_stage_equals_backprop(testing::kFloat64);
}

TEST(DelayedPipeline, PetraOnReversibleStagesWithoutUpdatesEqualsBackpropInFloat64) {
  // Five reversible RevNet stages invert exactly up to float64 rounding.
  const int64_t j = 10, total = 4;
  Config cfg = revnet_config("petra", 1000, testing::kFloat64.overrides);
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<MicroBatch> batches = micro_batches(cfg, data, total);
  std::vector<StagedModel> models;
  auto sim = simulator(cfg, data, *petra_policy(), j, 1000, models);
  sim->run(batches, [](int64_t) { return 0.1; });
  StagedModel ref = seeded_model(cfg, data);
  FlatParameters flat(ref->parameters_of(0, ref->num_stages()));
  for (const MicroBatch& mb : batches) loss_of(ref->forward(mb.inputs), mb.targets).backward();
  std::vector<torch::Tensor> grads;
  for (int64_t s = 0; s < j; ++s) grads.push_back(sim->stage(s).flat().grads_flat());
  EXPECT_EQ(grads[0].scalar_type(), torch::kDouble);
  EXPECT_LT(max_diff(torch::cat(grads), flat.grads_flat()), 1e-10);
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

}  // namespace
}  // namespace desync
