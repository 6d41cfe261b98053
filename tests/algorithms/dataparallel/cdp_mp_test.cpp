// cdp_mp: each stage's share of the cyclic schedule (stage_step_ops, forward_follows_update),
// and the runtime on in-process ranks against cdp's simulator with the timing predicate, the
// semantic ground truth (algorithms/dataparallel/cdp.h).
#include "desync/algorithms/dataparallel/cdp_mp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "algorithms/fake_run.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::max_diff;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

const std::vector<std::pair<int64_t, int64_t>> kShapes = {  // (streams N, stages S)
    {1, 1}, {2, 2}, {3, 3}, {4, 4}, {3, 2}, {2, 3}, {8, 4}, {5, 3}, {2, 4}};

bool same_op(const CyclicOp& a, const CyclicOp& b) {
  return a.tick == b.tick && a.worker == b.worker && a.cycle == b.cycle && a.stage == b.stage &&
         a.backward == b.backward;
}

// The step of stage l in which `op` (an operation of stage l) runs.
int64_t step_of(int64_t n, int64_t s, int64_t l, const CyclicOp& op) {
  for (int64_t w = 0; w <= op.cycle + 1; ++w)
    for (const CyclicOp& o : stage_step_ops(n, s, l, w))
      if (same_op(o, op)) return w;
  ADD_FAILURE() << "no step of stage " << l << " runs cycle " << op.cycle << " stream "
                << op.worker;
  return -1;
}

TEST(CdpMp, StageStepsRunEachStagesOperationsOnceInScheduleOrder) {
  const int64_t cycles = 4;
  for (auto [n, s] : kShapes) {
    SCOPED_TRACE(::testing::Message() << "N = " << n << ", S = " << s);
    const std::vector<CyclicOp> all = cyclic_schedule(n, s, cycles);
    for (int64_t l = 0; l < s; ++l) {
      std::vector<CyclicOp> expected, got;
      for (const CyclicOp& op : all)
        if (op.stage == l) expected.push_back(op);
      for (int64_t w = 0; w <= cycles; ++w) {
        int64_t forwards = 0;
        for (const CyclicOp& op : stage_step_ops(n, s, l, w)) {
          ASSERT_EQ(op.stage, l);
          if (op.cycle < cycles) got.push_back(op);
          if (op.backward) continue;
          // Step w's forwards are the n forwards of cycle w, stream by stream.
          EXPECT_EQ(op.cycle, w);
          EXPECT_EQ(op.worker, forwards++);
        }
        EXPECT_EQ(forwards, n) << "stage " << l << " step " << w;
      }
      ASSERT_EQ(got.size(), expected.size()) << "stage " << l;
      for (size_t i = 0; i < got.size(); ++i)
        EXPECT_TRUE(same_op(got[i], expected[i])) << "stage " << l << " operation " << i;
    }
  }
}

// No rank waits in step w for a message its neighbour sends in a later step: the forward
// message is received in the sender's step, the backward one in that step or the next.
TEST(CdpMp, MessagesArriveInTheSendersStepOrTheNext) {
  const int64_t cycles = 3;
  for (auto [n, s] : kShapes) {
    SCOPED_TRACE(::testing::Message() << "N = " << n << ", S = " << s);
    for (const CyclicOp& op : cyclic_schedule(n, s, cycles)) {
      const int64_t from = op.backward ? op.stage + 1 : op.stage - 1;
      if (from < 0 || from >= s) continue;
      CyclicOp sent = op;
      sent.stage = from;
      sent.tick = op.backward ? backward_tick(n, s, op.worker, op.cycle, from)
                              : forward_tick(n, s, op.worker, op.cycle, from);
      const int64_t received_in = step_of(n, s, op.stage, op);
      const int64_t sent_in = step_of(n, s, from, sent);
      EXPECT_GE(received_in, sent_in);
      EXPECT_LE(received_in, sent_in + (op.backward ? 1 : 0));
    }
  }
}

TEST(CdpMp, ScheduleOrderAgreesWithTheTimingPredicateWhenStreamsEqualStages) {
  for (int64_t n : {1, 2, 3, 4, 6})
    for (int64_t l = 0; l < n; ++l)
      for (int64_t r = 0; r < n; ++r)
        EXPECT_EQ(forward_follows_update(n, n, l, r), fresh_by_timing(r, l, n, n))
            << "N = S = " << n << ", stage " << l << ", stream " << r;
}

TEST(CdpMp, FreshForwardsAlwaysFollowTheUpdate) {
  int64_t late = 0;  // forwards after the update that the predicate calls stale
  for (int64_t n = 1; n <= 8; ++n)
    for (int64_t s = 1; s <= 6; ++s)
      for (int64_t l = 0; l < s; ++l)
        for (int64_t r = 0; r < n; ++r) {
          const bool follows = forward_follows_update(n, s, l, r);
          if (fresh_by_timing(r, l, n, s))
            EXPECT_TRUE(follows) << "N " << n << " S " << s << " stage " << l << " stream " << r;
          else if (follows)
            ++late;
        }
  // N = 3, S = 2: stream 0's forward of stage 1 starts (tick 2S*N + N = 15) while stream 2's
  // backward of cycle 0 runs (ticks 12..15): it runs after the update, on the previous version.
  EXPECT_TRUE(forward_follows_update(3, 2, 1, 0));
  EXPECT_FALSE(fresh_by_timing(0, 1, 3, 2));
  EXPECT_GT(late, 0);
}

// The tiny MLP with `hidden` layers (one stage each, plus the head), a decaying learning rate,
// momentum and weight decay, on a training set of 200 examples: 25 micro-batches of 8 per
// epoch, which cycles of N = 2, 3 or 4 do not divide, so every run below crosses an epoch
// boundary where cdp drops the rest of the epoch.
Config job(std::vector<std::string> extra) {
  std::vector<std::string> base = {"model.hidden=[32, 16, 16]",   "data.synthetic_train=200",
                                   "data.batch_size=8",           "optimizer.momentum=0.9",
                                   "optimizer.weight_decay=1e-3", "schedule.name=\"step\"",
                                   "schedule.step_size=3",        "schedule.gamma=0.7"};
  base.insert(base.end(), extra.begin(), extra.end());
  return tiny_config(base);
}

Config mp_job(int64_t n, std::vector<std::string> extra = {}) {
  extra.push_back("algorithm.name=\"cdp_mp\"");
  extra.push_back("algorithm.streams=" + std::to_string(n));
  return job(extra);
}

Config cdp_job(int64_t s, const std::string& rule, std::vector<std::string> extra = {}) {
  for (std::string o : {"algorithm.name=\"cdp\"", "algorithm.fresh_predicate=\"timing\"",
                        "algorithm.runtime=\"simulator\"", "algorithm.final_model=\"latest\""})
    extra.push_back(o);
  extra.push_back("algorithm.rule=\"" + rule + "\"");
  extra.push_back("algorithm.n_stages=" + std::to_string(s));
  return job(extra);
}

struct Compared {
  std::vector<double> mp_losses, cdp_losses;  // per step
  torch::Tensor mp_params, cdp_params;        // final, rank 0
};

// cdp_mp on S ranks with N streams against cdp (`rule`, timing, simulator, latest) on N ranks.
Compared compare(int64_t n, int64_t s, int64_t steps, const std::string& rule,
                 const std::vector<std::string>& extra = {}) {
  Compared c;
  Config mp = mp_job(n, extra);
  DatasetSplits data = load_dataset(mp.data, 0);
  std::vector<RankState> mp_ranks = run_on_fake_world(mp, s, steps, data);
  std::vector<RankState> cdp_ranks = run_on_fake_world(cdp_job(s, rule, extra), n, steps, data);
  c.mp_losses = mp_ranks[s - 1].losses;  // the last stage computes the losses
  for (int64_t t = 0; t < steps; ++t) {
    double sum = 0.0;
    for (const RankState& r : cdp_ranks) sum += r.losses[t];
    c.cdp_losses.push_back(sum / static_cast<double>(n));
  }
  c.mp_params = flat_params(mp_ranks[0].model);
  c.cdp_params = flat_params(cdp_ranks[0].model);
  // finish() gives every rank the whole final model.
  for (int64_t r = 1; r < s; ++r)
    EXPECT_TRUE(flat_params(mp_ranks[r].model).equal(c.mp_params)) << "rank " << r;
  return c;
}

void expect_equal(const Compared& c, double tolerance) {
  ASSERT_EQ(c.mp_losses.size(), c.cdp_losses.size());
  for (size_t t = 0; t < c.mp_losses.size(); ++t)
    EXPECT_NEAR(c.mp_losses[t], c.cdp_losses[t], tolerance) << "step " << t;
  EXPECT_LT(max_diff(c.mp_params, c.cdp_params), tolerance);
  // The losses move: the comparison is not of a model that does not learn.
  EXPECT_GT(std::abs(c.mp_losses.front() - c.mp_losses.back()), 1e-3);
}

TEST(CdpMp, EqualsTheCdpTimingSimulatorWithAsManyStreamsAsStages) {
  for (int64_t s : {2, 3, 4}) {
    SCOPED_TRACE(::testing::Message() << "N = S = " << s);
    expect_equal(compare(s, s, 12, "cdp2"), 1e-6);
    expect_equal(compare(s, s, 12, "cdp2", {"model.dtype=\"float64\""}), 1e-10);
  }
}

// Other shapes, N = 3 over S = 2 among them: a stage is oversubscribed there, and stream 0's
// forward of stage 1 runs after the update it started before (FreshForwardsAlwaysFollowTheUpdate).
TEST(CdpMp, EqualsTheCdpTimingSimulatorWhenStreamsAndStagesDiffer) {
  for (auto [n, s] : std::vector<std::pair<int64_t, int64_t>>{{3, 2}, {2, 3}, {4, 2}, {1, 3}}) {
    SCOPED_TRACE(::testing::Message() << "N = " << n << ", S = " << s);
    expect_equal(compare(n, s, 10, "cdp2", {"model.dtype=\"float64\""}), 1e-10);
  }
}

// The comparisons above can fail: synchronous data parallelism (every stream fresh) on the same
// data ends elsewhere.
TEST(CdpMp, DiffersFromDataParallelOnTheSameData) {
  Compared c = compare(4, 4, 12, "dp");
  EXPECT_GT(max_diff(c.mp_params, c.cdp_params), 1e-4);
}

TEST(CdpMp, OnlyStagesWithAStaleStreamKeepASecondVersion) {
  const int64_t n = 4, s = 4;
  Config cfg = mp_job(n);
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<RankState> ranks = run_on_fake_world(cfg, s, 3, data);
  for (int64_t l = 0; l < s; ++l) {
    SCOPED_TRACE(::testing::Message() << "stage " << l);
    auto* mp = dynamic_cast<CdpMp*>(ranks[l].algorithm.get());
    ASSERT_NE(mp, nullptr);
    int64_t stale = 0;
    for (int64_t r = 0; r < n; ++r) {
      EXPECT_EQ(mp->fresh(r), fresh_by_timing(r, l, n, s));
      stale += mp->fresh(r) ? 0 : 1;
    }
    EXPECT_EQ(stale, n - 1 - l);  // N = S: stream r is stale on stage l < N - 1 - r
    AlgorithmReport report = mp->report();
    std::map<std::string, int64_t> memory(report.memory.begin(), report.memory.end());
    std::map<std::string, int64_t> counts(report.counts.begin(), report.counts.end());
    EXPECT_EQ(memory["weight_stash"], stale > 0 ? memory["parameters"] : 0);
    EXPECT_GT(memory["parameters"], 0);
    EXPECT_EQ(counts["stale_streams"], stale);
    EXPECT_EQ(counts["streams"], n);
    EXPECT_EQ(counts["updates"], 3);  // finish() applied the last cycle's
    EXPECT_EQ(counts["stage_begin"], l);
    EXPECT_EQ(counts["stage_end"], l + 1);
    // Forwards reach stage l every 2S ticks and leave it N(2S - 1 - 2l) ticks later.
    EXPECT_EQ(counts["peak_in_flight_micro_batches"],
              (n * (2 * s - 1 - 2 * l) + 2 * s - 1) / (2 * s));
    EXPECT_GT(memory["activations"], 0);
  }
  // Only rank 0 reads: N micro-batches a step.
  EXPECT_EQ(ranks[0].batches->position().batch, 3 * n);
  EXPECT_EQ(ranks[1].batches->position().batch, 0);
}

TEST(CdpMp, DeclaresNMicroBatchesPerStepReadByTheFirstRank) {
  auto algorithm = make_algorithm(mp_job(3).algorithm);
  EXPECT_EQ(algorithm->traits().data, AlgorithmTraits::Data::kFirstRank);
  EXPECT_EQ(algorithm->traits().accumulations_per_step, 3);
  // streams defaults to run.workers, which `desync train --workers S` records.
  auto by_workers = make_algorithm(job({"algorithm.name=\"cdp_mp\"", "run.workers=5"}).algorithm);
  EXPECT_EQ(by_workers->traits().accumulations_per_step, 5);
}

TEST(CdpMp, RefusesWhatItCannotRun) {
  DatasetSplits data = load_dataset(mp_job(2).data, 0);
  EXPECT_THROW(run_on_fake_world(mp_job(2, {"algorithm.accumulation=2"}), 2, 1, data), ConfigError);
  // Five workers for a model of four stages.
  EXPECT_THROW(run_on_fake_world(mp_job(2), 5, 1, data), ConfigError);
  EXPECT_THROW(run_on_fake_world(mp_job(2, {"optimizer.grad_clip=1.0"}), 2, 1, data), ConfigError);
  // Cuts for three cyclic stages on two workers.
  EXPECT_THROW(run_on_fake_world(mp_job(2, {"algorithm.stage_cuts=[1, 2]"}), 2, 1, data),
               ConfigError);
}

}  // namespace
}  // namespace desync
