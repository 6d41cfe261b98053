#include "desync/algorithms/decentralized/gasloc.h"

#include <gtest/gtest.h>

#include "algorithms/fake_run.h"
#include "algorithms/reference_gradient.h"
#include "desync/algorithms/common.h"
#include "desync/algorithms/decentralized/diloco.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using testing::FakeRunOptions;
using testing::flat_params;
using testing::gradient_at;
using testing::max_diff;
using testing::mean_params;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

Gasloc& gasloc_of(RankState& s) { return dynamic_cast<Gasloc&>(*s.algorithm); }

Config gasloc_config(std::vector<std::string> extra) {
  std::vector<std::string> base = {"algorithm.name=\"gasloc\"", "optimizer.name=\"adamw\"",
                                   "optimizer.lr=0.01", "data.batch_size=8"};
  base.insert(base.end(), extra.begin(), extra.end());
  return tiny_config(base);
}

// Complete graph, w = 1/N, momentum on the mixed iterates: DiLoCo with Nesterov SGD(eta, gamma).
void expect_complete_graph_equals_diloco(const testing::Precision& p) {
  const int64_t n = 4, h = 2, rounds = 5;
  std::vector<std::string> g = {"algorithm.topology=\"complete\"", "algorithm.local_steps=2",
                                "algorithm.outer_lr=0.7", "algorithm.outer_momentum=0.9"};
  std::vector<std::string> d = {"algorithm.name=\"diloco\"", "algorithm.local_steps=2",
                                "algorithm.outer_lr=0.7",    "algorithm.outer_momentum=0.9",
                                "optimizer.name=\"adamw\"",  "optimizer.lr=0.01",
                                "data.batch_size=8"};
  g.insert(g.end(), p.overrides.begin(), p.overrides.end());
  d.insert(d.end(), p.overrides.begin(), p.overrides.end());
  Config gasloc = gasloc_config(g), diloco = tiny_config(d);
  DatasetSplits data = load_dataset(gasloc.data, 0);
  auto gr = run_on_fake_world(gasloc, n, h * rounds, data);
  auto dr = run_on_fake_world(diloco, n, h * rounds, data);
  for (int64_t r = 0; r < n; ++r)
    EXPECT_LT(max_diff(flat_params(gr[r].model), flat_params(dr[r].model)), p.tolerance)
        << p.name << " rank " << r;
}

TEST(Gasloc, GaslocCompleteGraphEqualsDiloco) {
  expect_complete_graph_equals_diloco(testing::kFloat32);
}

TEST(Gasloc, GaslocCompleteGraphEqualsDilocoInFloat64) {
  expect_complete_graph_equals_diloco(testing::kFloat64);
}

TEST(Gasloc, GaslocMomentumOnProposalAppliesGammaToTheProposalsNotTheMixedIterates) {
  // momentum_on = proposal: theta_i <- y_i + gamma * (x_i - x_i,prev), x_i,prev <- x_i
  // (x_prev starts at theta_0). Complete graph with w = 1/N, so y_i = mean_j x_j; inner plain
  // SGD(lr) for H steps on rank i's micro-batches, recomputed here on a fresh model. With the
  // default placement (mixed) all workers would hold the same theta; here they differ.
  const int64_t n = 4, h = 2, rounds = 3;
  const double lr = 0.1, eta = 0.7, gamma = 0.9;
  Config cfg = tiny_config({"algorithm.name=\"gasloc\"", "algorithm.topology=\"complete\"",
                            "algorithm.local_steps=2", "algorithm.outer_lr=0.7",
                            "algorithm.outer_momentum=0.9", "algorithm.momentum_on=\"proposal\"",
                            "optimizer.name=\"sgd\"", "optimizer.lr=0.1", "data.batch_size=8"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<std::vector<torch::Tensor>> got(rounds, std::vector<torch::Tensor>(n));
  FakeRunOptions opts;
  opts.after_step = [&](int64_t r, int64_t t, RankState& s) {
    if (t % h == h - 1) got[t / h][r] = flat_params(s.model);
  };
  auto ranks = run_on_fake_world(cfg, n, h * rounds, data, opts);

  Config with_steps = cfg;
  with_steps.run.steps = h * rounds;
  std::vector<std::unique_ptr<MicroBatchSource>> batches;
  std::vector<torch::Tensor> theta, x_prev;
  for (int64_t i = 0; i < n; ++i) {
    RunParts parts = assemble_run(with_steps, data, i, n);  // the seeded initial model
    theta.push_back(flat_params(parts.model));
    x_prev.push_back(theta.back().clone());
    batches.push_back(std::move(parts.batches));
  }
  for (int64_t t = 0; t < rounds; ++t) {
    std::vector<torch::Tensor> x(n);
    for (int64_t i = 0; i < n; ++i) {
      torch::Tensor end = theta[i].clone();
      for (int64_t k = 0; k < h; ++k) end -= lr * gradient_at(cfg, data, end, batches[i]->next());
      x[i] = theta[i] + eta * (end - theta[i]);
    }
    torch::Tensor y = torch::stack(x).mean(0);
    for (int64_t i = 0; i < n; ++i) {
      theta[i] = y + gamma * (x[i] - x_prev[i]);
      x_prev[i] = x[i];
      EXPECT_LT(max_diff(got[t][i], theta[i]), 1e-6) << "round " << t << " rank " << i;
    }
    // The placements disagree here: mixed momentum would give every worker the same theta.
    EXPECT_GT(max_diff(theta[0], theta[1]), 1e-4) << "round " << t;
  }
}

TEST(Gasloc, MatchedPairsAgreeAndMixingPreservesTheSum) {
  // 1-peer matching, w = 1/2, gamma = 0, eta = 1: after the round, partners hold the same
  // parameters, and the mean over workers is FedAvg's (DiLoCo with outer SGD lr 1).
  const int64_t n = 4;
  Config gasloc = gasloc_config(
      {"algorithm.local_steps=2", "algorithm.outer_lr=1", "algorithm.outer_momentum=0"});
  Config fedavg =
      tiny_config({"algorithm.name=\"diloco\"", "algorithm.local_steps=2", "algorithm.outer_lr=1",
                   "algorithm.outer_momentum=0", "optimizer.name=\"adamw\"", "optimizer.lr=0.01",
                   "data.batch_size=8"});
  DatasetSplits data = load_dataset(gasloc.data, 0);
  auto g = run_on_fake_world(gasloc, n, 2, data);
  auto f = run_on_fake_world(fedavg, n, 2, data);
  for (int64_t r = 0; r < n; ++r) {
    ASSERT_EQ(gasloc_of(g[r]).last_peers().size(), 1u);
    int64_t mate = gasloc_of(g[r]).last_peers()[0].rank;
    EXPECT_LT(max_diff(flat_params(g[r].model), flat_params(g[mate].model)), 1e-6);
  }
  EXPECT_LT(max_diff(mean_params(g), flat_params(f[0].model)), 1e-6);
}

TEST(Gasloc, HeterogeneousLocalStepsWithEtaOneAreFedAvg) {
  // eta = 1, gamma = 0, complete graph, H_i = (1, 2, 3, 4): every worker ends the round with
  // the mean of the locally trained models.
  const int64_t n = 4;
  Config cfg = gasloc_config({"algorithm.topology=\"complete\"", "algorithm.local_steps=4",
                              "algorithm.local_steps_per_worker=[1, 2, 3, 4]",
                              "algorithm.outer_lr=1", "algorithm.outer_momentum=0"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto ranks = run_on_fake_world(cfg, n, 4, data);

  std::vector<torch::Tensor> local;  // rank i alone: H_i steps on its shard of the stream
  SoloCommunicator solo;
  for (int64_t i = 0; i < n; ++i) {
    torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
    StagedModel model = make_model(cfg.model, {data.train.example_shape(), data.train.num_classes});
    MicroBatchSource batches(data.train, cfg.data.batch_size, i, n,
                             static_cast<uint64_t>(cfg.run.seed), {});
    Schedule schedule(cfg.schedule, cfg.optimizer.lr, 4);
    Context ctx{cfg, solo, model, batches, schedule, 0};
    FlatParameters flat(model->parameters_of(0, model->num_stages()));
    auto opt = ctx.make_optimizer(param_slots(model->named_params(), cfg.optimizer));
    for (int64_t k = 0; k <= i; ++k) {
      flat.grads_flat().zero_();
      accumulate_gradients(ctx, 1);
      apply_update(ctx, flat, *opt);
    }
    local.push_back(flat_params(model));
  }
  torch::Tensor expected = torch::stack(local).mean(0);
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_EQ(gasloc_of(ranks[r]).my_local_steps(), r + 1);
    EXPECT_LT(max_diff(flat_params(ranks[r].model), expected), 1e-6) << "rank " << r;
  }
}

TEST(Gasloc, OddWorldRestsOneWorkerWhoKeepsItsProposal) {
  const int64_t n = 5, rounds = 20;
  Config cfg = gasloc_config({"algorithm.local_steps=1", "algorithm.outer_momentum=0"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<int64_t> resting(rounds, 0);
  std::mutex mu;
  FakeRunOptions opts;
  opts.after_step = [&](int64_t r, int64_t t, RankState& s) {
    if (!gasloc_of(s).last_peers().empty()) return;
    std::lock_guard<std::mutex> lock(mu);
    ++resting[t];
    EXPECT_TRUE(torch::equal(flat_params(s.model), gasloc_of(s).proposal())) << "round " << t;
  };
  run_on_fake_world(cfg, n, rounds, data, opts);
  for (int64_t t = 0; t < rounds; ++t) EXPECT_EQ(resting[t], 1) << "round " << t;
}

TEST(Gasloc, OneWorkerEqualsDiloco) {
  Config gasloc = gasloc_config({"algorithm.local_steps=2"});
  Config diloco =
      tiny_config({"algorithm.name=\"diloco\"", "algorithm.local_steps=2",
                   "optimizer.name=\"adamw\"", "optimizer.lr=0.01", "data.batch_size=8"});
  DatasetSplits data = load_dataset(gasloc.data, 0);
  auto g = run_on_fake_world(gasloc, 1, 6, data);
  auto d = run_on_fake_world(diloco, 1, 6, data);
  EXPECT_LT(max_diff(flat_params(g[0].model), flat_params(d[0].model)), 1e-6);
}

TEST(Gasloc, SendsKPsiPerRound) {
  const int64_t n = 4, h = 2, rounds = 3;
  for (auto [topology, k] : {std::pair<const char*, int64_t>{"matching", 1}, {"random_ring", 2}}) {
    Config cfg = gasloc_config(
        {"algorithm.local_steps=2", std::string("algorithm.topology=\"") + topology + "\""});
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, n, h * rounds, data);
    const int64_t psi = ranks[0].model->parameter_count();
    for (auto& s : ranks) EXPECT_EQ(s.stats.bytes_sent, rounds * k * psi * 4) << topology;
  }
}

TEST(Gasloc, LocalStepsPerWorkerMustNameEveryWorker) {
  Config cfg = gasloc_config({"algorithm.local_steps_per_worker=[1, 2, 3]"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  EXPECT_THROW(run_on_fake_world(cfg, 4, 1, data), ConfigError);
  Config both = tiny_config({"algorithm.name=\"gasloc\"", "algorithm.local_steps_from_speed=true",
                             "algorithm.local_steps_per_worker=[1]"});
  EXPECT_THROW(make_algorithm(both.algorithm), ConfigError);
  Config no_speeds = gasloc_config({"algorithm.local_steps_from_speed=true"});
  EXPECT_THROW(run_on_fake_world(no_speeds, 2, 1, data), ConfigError);
}

TEST(Gasloc, LocalStepsFromSpeedScaleWithTheFastestWorker) {
  Config cfg = gasloc_config({"algorithm.local_steps=4", "algorithm.local_steps_from_speed=true",
                              "run.worker_speed=[1.0, 0.5, 0.1]"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto ranks = run_on_fake_world(cfg, 3, 4, data);
  EXPECT_EQ(gasloc_of(ranks[0]).my_local_steps(), 4);
  EXPECT_EQ(gasloc_of(ranks[1]).my_local_steps(), 2);
  EXPECT_EQ(gasloc_of(ranks[2]).my_local_steps(), 1);  // at least one
  EXPECT_EQ(ranks[2].losses.size(), 4u);  // a trainer step per step; only one consumed data
}

}  // namespace
}  // namespace desync
