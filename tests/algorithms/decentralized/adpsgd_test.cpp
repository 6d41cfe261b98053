#include "desync/algorithms/decentralized/adpsgd.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <random>
#include <thread>

#include "algorithms/fake_run.h"
#include "algorithms/reference_gradient.h"

namespace desync {
namespace {

using testing::FakeRunOptions;
using testing::flat_params;
using testing::gradient_at;
using testing::max_diff;
using testing::perturb_by_rank;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

Adpsgd& adpsgd_of(RankState& s) { return dynamic_cast<Adpsgd&>(*s.algorithm); }

TEST(Adpsgd, OneAveragingLeavesBothEndsAtTheMeanAndThenTheGradientStep) {
  // The event (i, j, g): x_i = (x_i + x_j)/2 - gamma*g and x_j = (x_i + x_j)/2.
  auto fake = FakeWorld::create(2);
  torch::manual_seed(1);
  torch::Tensor x0 = torch::randn({1000}), x1 = torch::randn({1000}), g = torch::randn({1000});
  const double gamma = 0.1;
  torch::Tensor a = x0.clone(), b = x1.clone();
  std::mutex mu;
  fake->run([&](int64_t rank, Communicator& comm) {
    torch::Tensor buffer = torch::empty({1000});
    if (rank == 0) {
      average_with_passive(comm, a, buffer, 1);
      a.sub_(g, gamma);
    } else {
      EXPECT_TRUE(serve_one_request(comm, b, buffer, 0, mu));
    }
  });
  torch::Tensor mid = (x0 + x1) / 2;
  EXPECT_LT((a - mid.sub(g, gamma)).abs().max().item<double>(), 1e-7);
  EXPECT_TRUE(torch::equal(b, mid));
}

TEST(Adpsgd, AdpsgdStepTakesTheGradientBeforeAveragingByHalvesAndAppliesItAfter) {
  // The real step() on two ranks (0 active, 1 passive), its events put in a fixed order:
  //   rank 0 step 0: a1 = (x0 + x1)/2 - gamma g_0(x0)    rank 1: b1 = (x0 + x1)/2
  //   rank 1 step 0: b2 = b1 - gamma g_1(b1)
  //   rank 0 step 1: a2 = (a1 + b2)/2 - gamma g_0(a1)     rank 1: b3 = (a1 + b2)/2
  // with g_r(x) the gradient of rank r's next micro-batch at x, recomputed on a fresh model.
  const int64_t n = 2;
  const double gamma = 0.1;
  Config cfg = tiny_config({"algorithm.name=\"adpsgd\"", "data.batch_size=8", "optimizer.lr=0.1"});
  cfg.run.steps = 2;
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<RunParts> parts;
  std::vector<torch::Tensor> x0;
  for (int64_t r = 0; r < n; ++r) {
    parts.push_back(assemble_run(cfg, data, r, n));
    perturb_by_rank(r, parts[r].model);
    x0.push_back(flat_params(parts[r].model));
  }
  torch::Tensor a1, a2, b1, b2, b3;
  std::promise<void> active_stepped, passive_stepped;
  std::shared_future<void> active_done = active_stepped.get_future().share();
  std::shared_future<void> passive_done = passive_stepped.get_future().share();
  auto fake = FakeWorld::create(n);
  fake->run([&](int64_t r, Communicator& comm) {
    Context ctx = make_context(cfg, comm, parts[r]);
    Adpsgd& algorithm = dynamic_cast<Adpsgd&>(*parts[r].algorithm);
    algorithm.setup(ctx);
    if (r == 0) {
      ctx.step = 0;
      algorithm.step(ctx);
      a1 = algorithm.parameters();
      active_stepped.set_value();
      ASSERT_EQ(passive_done.wait_for(std::chrono::seconds(60)), std::future_status::ready);
      ctx.step = 1;
      algorithm.step(ctx);
      a2 = algorithm.parameters();
    } else {
      ASSERT_EQ(active_done.wait_for(std::chrono::seconds(60)), std::future_status::ready);
      b1 = algorithm.parameters();
      ctx.step = 0;
      algorithm.step(ctx);
      b2 = algorithm.parameters();
      passive_stepped.set_value();
    }
    algorithm.finish(ctx);
    if (r == 1) b3 = algorithm.parameters();
  });
  std::vector<std::unique_ptr<MicroBatchSource>> batches;  // each rank's stream, from the start
  for (int64_t r = 0; r < n; ++r) batches.push_back(assemble_run(cfg, data, r, n).batches);
  torch::Tensor mid0 = (x0[0] + x0[1]) / 2;
  torch::Tensor a1_expected = mid0 - gamma * gradient_at(cfg, data, x0[0], batches[0]->next());
  EXPECT_LT(max_diff(b1, mid0), 1e-7);
  EXPECT_LT(max_diff(a1, a1_expected), 1e-6);
  torch::Tensor b2_expected = b1 - gamma * gradient_at(cfg, data, b1, batches[1]->next());
  EXPECT_LT(max_diff(b2, b2_expected), 1e-6);
  torch::Tensor mid1 = (a1 + b2) / 2;
  EXPECT_LT(max_diff(b3, mid1), 1e-7);
  EXPECT_LT(max_diff(a2, mid1 - gamma * gradient_at(cfg, data, a1, batches[0]->next())), 1e-6);
}

TEST(Adpsgd, PairwiseAveragingPreservesTheSumAndReachesConsensus) {
  // No gradient steps: only averagings, in whatever order the threads make them.
  const int64_t n = 4, steps = 300;
  Config cfg = tiny_config({"algorithm.name=\"adpsgd\"", "optimizer.lr=1e-30"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  FakeRunOptions perturbed;
  perturbed.before_setup = perturb_by_rank;
  auto before = run_on_fake_world(cfg, n, 0, data, perturbed);
  auto after = run_on_fake_world(cfg, n, steps, data, perturbed);
  torch::Tensor sum0 = torch::zeros_like(adpsgd_of(before[0]).parameters()), sum1 = sum0.clone();
  for (int64_t r = 0; r < n; ++r) {
    sum0 += adpsgd_of(before[r]).parameters();
    sum1 += adpsgd_of(after[r]).parameters();
  }
  EXPECT_LT((sum1 - sum0).abs().max().item<double>(), 1e-5);
  torch::Tensor mean = sum1 / n;
  double spread = 0.0;
  for (auto& s : after) spread += (adpsgd_of(s).parameters() - mean).norm().item<double>() / n;
  EXPECT_LT(spread, 1e-6);
  int64_t active_averagings = adpsgd_of(after[0]).averagings() + adpsgd_of(after[2]).averagings();
  int64_t passive_averagings = adpsgd_of(after[1]).averagings() + adpsgd_of(after[3]).averagings();
  EXPECT_EQ(active_averagings, 2 * steps);  // every step of an active worker averages once
  EXPECT_EQ(passive_averagings, 2 * steps);
}

TEST(Adpsgd, FourWorkersWithRandomSleepsRunAThousandStepsWithoutDeadlock) {
  const int64_t n = 4, steps = 1000;
  Config cfg = tiny_config({"algorithm.name=\"adpsgd\"", "optimizer.lr=0.05"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  FakeRunOptions sleepy;
  sleepy.after_step = [](int64_t r, int64_t t, RankState&) {
    thread_local std::mt19937 gen(static_cast<unsigned>(r));
    std::this_thread::sleep_for(std::chrono::microseconds(gen() % 300));
  };
  auto ranks = run_on_fake_world(cfg, n, steps, data, sleepy);  // the fake times out after 60 s
  for (auto& s : ranks) {
    EXPECT_EQ(static_cast<int64_t>(s.losses.size()), steps);
    EXPECT_TRUE(torch::isfinite(adpsgd_of(s).parameters()).all().item<bool>());
  }
}

TEST(Adpsgd, OddWorldLeavesOutTheEdgeBetweenTwoActiveWorkers) {
  // N = 3: ranks 0 and 2 are active, both average only with rank 1.
  Config cfg = tiny_config({"algorithm.name=\"adpsgd\""});
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto ranks = run_on_fake_world(cfg, 3, 20, data);
  EXPECT_EQ(adpsgd_of(ranks[0]).averagings(), 20);
  EXPECT_EQ(adpsgd_of(ranks[2]).averagings(), 20);
  EXPECT_EQ(adpsgd_of(ranks[1]).averagings(), 40);
}

}  // namespace
}  // namespace desync
