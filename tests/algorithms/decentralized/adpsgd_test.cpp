#include "desync/algorithms/decentralized/adpsgd.h"

#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "algorithms/fake_run.h"

namespace desync {
namespace {

using testing::FakeRunOptions;
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
