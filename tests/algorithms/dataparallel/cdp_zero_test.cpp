// cdp_zero (cdp_zero.h) on a fake world: the parameters of cdp's semantic simulator under every
// rule, no collective once set up, the bytes of the ring exactly, and the optimizer state on the
// last worker only.
#include "desync/algorithms/dataparallel/cdp_zero.h"

#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "algorithms/fake_run.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::max_diff;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

constexpr int64_t kWorkers = 4;
constexpr int64_t kSteps = 10;

// The tiny MLP with four stages (fc1, fc2, fc3, head: four cyclic stages), SGD with momentum and
// weight decay, float32.
Config cyclic_job(const std::vector<std::string>& algorithm) {
  std::vector<std::string> o = {"model.hidden=[32, 16, 16]", "optimizer.momentum=0.9",
                                "optimizer.weight_decay=0.01", "optimizer.lr=0.05",
                                "algorithm.unit_ms=0.2"};
  o.insert(o.end(), algorithm.begin(), algorithm.end());
  return tiny_config(o);
}

std::vector<std::string> rule_keys(const std::string& name, const std::string& rule,
                                   const std::string& predicate, const std::string& final_model) {
  return {"algorithm.name=\"" + name + "\"", "algorithm.rule=\"" + rule + "\"",
          "algorithm.fresh_predicate=\"" + predicate + "\"",
          "algorithm.final_model=\"" + final_model + "\""};
}

TEST(CdpZero, MatchesCdpSimulatorForEveryRule) {
  struct Case {
    const char* rule;
    const char* predicate;
  };
  for (int64_t world : {int64_t{2}, kWorkers}) {
    for (const Case& c :
         {Case{"dp", "code"}, Case{"cdp1", "code"}, Case{"cdp2", "code"}, Case{"cdp2", "timing"}}) {
      for (const char* final_model : {"latest", "average"}) {
        SCOPED_TRACE(std::to_string(world) + " workers, " + c.rule + " " + c.predicate + " " +
                     final_model);
        std::vector<std::string> cdp = rule_keys("cdp", c.rule, c.predicate, final_model);
        cdp.push_back("algorithm.runtime=\"simulator\"");
        Config simulator = cyclic_job(cdp);
        DatasetSplits data = load_dataset(simulator.data, 0);
        std::vector<torch::Tensor> initial(world);
        testing::FakeRunOptions keep_initial;
        keep_initial.before_setup = [&](int64_t r, StagedModel& m) { initial[r] = flat_params(m); };
        auto a = run_on_fake_world(simulator, world, kSteps, data, keep_initial);
        auto b =
            run_on_fake_world(cyclic_job(rule_keys("cdp_zero", c.rule, c.predicate, final_model)),
                              world, kSteps, data);
        for (int64_t r = 0; r < world; ++r) {
          EXPECT_LT(max_diff(flat_params(a[r].model), flat_params(b[r].model)), 1e-6)
              << "rank " << r;
          // The steps moved the model: agreeing on unchanged parameters would prove nothing.
          EXPECT_GT(max_diff(flat_params(a[r].model), initial[r]), 1e-2) << "rank " << r;
        }
      }
    }
  }
}

// Like run_on_fake_world, and also returns the collectives each rank issued after its setup()
// (steps and finish()), as "<op> rank <r>".
std::vector<RankState> run_keeping_collectives(const Config& base, int64_t world, int64_t steps,
                                               const DatasetSplits& data,
                                               std::vector<std::string>& collectives) {
  Config cfg = base;
  cfg.run.steps = steps;
  std::vector<RankState> ranks(world);
  std::vector<RunParts> parts;
  for (int64_t r = 0; r < world; ++r) {
    parts.push_back(assemble_run(cfg, data, r, world));
    ranks[r].model = parts[r].model;
  }
  std::mutex mu;
  std::vector<bool> set_up(world, false);
  auto fake = FakeWorld::create(world);
  fake->on_issue([&](const std::string& op, int64_t rank) {
    std::lock_guard<std::mutex> lock(mu);
    if (set_up[rank]) collectives.push_back(op + " rank " + std::to_string(rank));
  });
  fake->run([&](int64_t r, Communicator& comm) {
    Context ctx = make_context(cfg, comm, parts[r]);
    parts[r].algorithm->setup(ctx);
    {
      std::lock_guard<std::mutex> lock(mu);
      set_up[r] = true;
    }
    for (int64_t t = 0; t < steps; ++t) {
      ctx.step = t;
      ranks[r].losses.push_back(parts[r].algorithm->step(ctx).loss);
    }
    parts[r].algorithm->finish(ctx);
    ranks[r].stats = comm.total_stats();
  });
  for (int64_t r = 0; r < world; ++r) ranks[r].algorithm = std::move(parts[r].algorithm);
  return ranks;
}

TEST(CdpZero, IssuesNoCollectiveOnceSetUp) {
  // cdp's staggered runtime, as a control: its stage reductions are collectives.
  for (const char* name : {"cdp", "cdp_zero"}) {
    SCOPED_TRACE(name);
    Config cfg = cyclic_job(rule_keys(name, "cdp2", "code", "latest"));
    DatasetSplits data = load_dataset(cfg.data, 0);
    std::vector<std::string> collectives;
    auto ranks = run_keeping_collectives(cfg, kWorkers, kSteps, data, collectives);
    if (std::string(name) == "cdp") {
      EXPECT_GE(collectives.size(), static_cast<size_t>(kWorkers * kSteps * 4));
      continue;
    }
    EXPECT_TRUE(collectives.empty())
        << collectives.size() << " collectives, the first " << collectives.front();
    for (int64_t r = 0; r < kWorkers; ++r) EXPECT_GT(ranks[r].stats.calls, 0);
  }
}

// Per step, Psi*b for each gradient hop sent (ranks 0..N-2) and each parameter hop sent (all but
// rank N-2); received: gradients on ranks 1..N-1, parameters on ranks 0..N-2.
TEST(CdpZero, BytesPerRankAreThoseOfTheRingExactly) {
  for (int64_t world : {int64_t{2}, int64_t{3}, kWorkers}) {
    SCOPED_TRACE(std::to_string(world) + " workers");
    Config cfg = cyclic_job({"algorithm.name=\"cdp_zero\""});
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, world, kSteps, data);
    const int64_t psi_bytes = ranks[0].model->parameter_count() * 4;
    for (int64_t r = 0; r < world; ++r) {
      const int64_t sent_hops = (r < world - 1 ? 1 : 0) + (r != world - 2 ? 1 : 0);
      const int64_t received_hops = (r > 0 ? 1 : 0) + (r < world - 1 ? 1 : 0);
      CommStats training = ranks[r].stats;
      training -= ranks[r].setup_stats;
      EXPECT_EQ(training.bytes_sent, kSteps * sent_hops * psi_bytes) << "rank " << r;
      EXPECT_EQ(training.bytes_received, kSteps * received_hops * psi_bytes) << "rank " << r;
      // One message a hop and stage (four stages).
      EXPECT_EQ(training.calls, kSteps * (sent_hops + received_hops) * 4) << "rank " << r;
    }
  }
}

std::map<std::string, int64_t> memory_of(const RankState& rank) {
  AlgorithmReport report = rank.algorithm->report();
  return {report.memory.begin(), report.memory.end()};
}

TEST(CdpZero, OnlyTheLastWorkerHoldsOptimizerState) {
  Config cfg = cyclic_job({"algorithm.name=\"cdp_zero\""});
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto ranks = run_on_fake_world(cfg, kWorkers, 2, data);
  // What every cdp worker holds: the stage optimizers' state (SGD momentum: Psi floats, and more).
  auto cdp = run_on_fake_world(cyclic_job({"algorithm.name=\"cdp\""}), kWorkers, 2, data);
  const int64_t state = memory_of(cdp[0])["optimizer_state"];
  const int64_t psi_bytes = ranks[0].model->parameter_count() * 4;
  EXPECT_GE(state, psi_bytes);
  for (int64_t r = 0; r < kWorkers; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    AlgorithmReport report = ranks[r].algorithm->report();
    std::map<std::string, int64_t> memory = memory_of(ranks[r]);
    std::map<std::string, int64_t> counts(report.counts.begin(), report.counts.end());
    const bool owner = r == kWorkers - 1;
    EXPECT_EQ(memory["optimizer_state"], owner ? state : 0);
    EXPECT_EQ(counts["owned_stages"], owner ? 4 : 0);
    EXPECT_EQ(memory["ring_buffers"], 2 * psi_bytes);
    EXPECT_EQ(memory["previous_versions"], 0);  // a stale stage's copy is its ring buffer
  }
}

TEST(CdpZero, AccumulationGivesTheSameStepsAsABiggerBatch) {
  // accumulation = 2 of 4 examples: the gradient of their mean, as one batch of 8 gives it
  // (rule dp: every worker at the same version, so how the examples split across workers does
  // not matter).
  std::vector<std::string> keys = {"algorithm.name=\"cdp_zero\"", "algorithm.rule=\"dp\"",
                                   "model.dtype=\"float64\""};
  keys.push_back("data.batch_size=4");
  keys.push_back("algorithm.accumulation=2");
  Config small = cyclic_job(keys);
  keys.resize(3);
  keys.push_back("data.batch_size=8");
  Config big = cyclic_job(keys);
  DatasetSplits data = load_dataset(big.data, 0);
  auto a = run_on_fake_world(small, 2, 5, data);
  auto b = run_on_fake_world(big, 2, 5, data);
  for (int64_t r = 0; r < 2; ++r) {
    EXPECT_LT(max_diff(flat_params(a[r].model), flat_params(b[r].model)), 1e-10) << "rank " << r;
    EXPECT_EQ(a[r].batches->position().batch, 2 * b[r].batches->position().batch) << "rank " << r;
  }
}

TEST(CdpZero, RefusesWhatItCannotDo) {
  Config clip = cyclic_job({"algorithm.name=\"cdp_zero\"", "optimizer.grad_clip=1.0"});
  DatasetSplits data = load_dataset(clip.data, 0);
  EXPECT_THROW(run_on_fake_world(clip, 2, 1, data), ConfigError);
}

}  // namespace
}  // namespace desync
