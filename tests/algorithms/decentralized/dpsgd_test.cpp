#include <gtest/gtest.h>

#include <cmath>
#include <mutex>

#include "algorithms/fake_run.h"
#include "algorithms/reference_gradient.h"

namespace desync {
namespace {

using testing::FakeRunOptions;
using testing::flat_params;
using testing::gradient_at;
using testing::max_diff;
using testing::mean_params;
using testing::perturb_by_rank;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

// lr 1e-30: gradient steps vanish below float precision, leaving pure mixing.
const char* kNoStep = "optimizer.lr=1e-30";

// sqrt(sum_i ||x_i - mean||^2)
double consensus_distance(const std::vector<torch::Tensor>& xs) {
  torch::Tensor mean = torch::stack(xs).mean(0);
  double d = 0.0;
  for (const auto& x : xs) d += (x - mean).pow(2).sum().item<double>();
  return std::sqrt(d);
}

std::vector<torch::Tensor> initial_params(const Config& cfg, int64_t n) {
  DatasetSplits data = load_dataset(cfg.data, 0);
  FakeRunOptions perturbed;
  perturbed.before_setup = perturb_by_rank;
  auto ranks = run_on_fake_world(cfg, n, 0, data, perturbed);
  std::vector<torch::Tensor> xs;
  for (auto& s : ranks) xs.push_back(flat_params(s.model));
  return xs;
}

TEST(Dpsgd, MixingPreservesTheMeanAndTheCompleteGraphAgreesInOneStep) {
  const int64_t n = 4;
  for (const char* topology : {"ring", "torus", "matching", "random_ring", "complete"}) {
    Config cfg = tiny_config({"algorithm.name=\"dpsgd\"", kNoStep,
                              std::string("algorithm.topology=\"") + topology + "\""});
    DatasetSplits data = load_dataset(cfg.data, 0);
    torch::Tensor mean0 = torch::stack(initial_params(cfg, n)).mean(0);
    FakeRunOptions perturbed;
    perturbed.before_setup = perturb_by_rank;
    auto ranks =
        run_on_fake_world(cfg, n, std::string(topology) == "complete" ? 1 : 3, data, perturbed);
    EXPECT_LT(max_diff(mean_params(ranks), mean0), 1e-7) << topology;
    if (std::string(topology) == "complete") {
      for (auto& s : ranks) EXPECT_LT(max_diff(flat_params(s.model), mean0), 1e-7);
    }
  }
}

TEST(Dpsgd, AverageIterateFollowsTheMeanGradient) {
  // x̄_{k+1} = x̄_k - gamma * mean_i grad F_i(x_{k,i}), with the gradients at the pre-mix iterates.
  const int64_t n = 4, steps = 4;
  const double gamma = 0.1;
  Config cfg = tiny_config({"algorithm.name=\"dpsgd\"", "data.batch_size=8"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<std::vector<torch::Tensor>> after(steps, std::vector<torch::Tensor>(n)),
      grads(steps, std::vector<torch::Tensor>(n));
  FakeRunOptions opts;
  opts.before_setup = perturb_by_rank;
  opts.after_step = [&](int64_t r, int64_t t, RankState& s) {
    std::vector<torch::Tensor> g;
    for (auto& p : s.model->parameters()) g.push_back(p.grad().reshape({-1}).clone());
    after[t][r] = flat_params(s.model);
    grads[t][r] = torch::cat(g);
  };
  run_on_fake_world(cfg, n, steps, data, opts);
  torch::Tensor mean = torch::stack(initial_params(cfg, n)).mean(0);
  for (int64_t t = 0; t < steps; ++t) {
    torch::Tensor expected = mean - gamma * torch::stack(grads[t]).mean(0);
    torch::Tensor got = torch::stack(after[t]).mean(0);
    EXPECT_LT(max_diff(got, expected), 1e-6) << "step " << t;
    mean = got;
  }
}

TEST(Dpsgd, DpsgdGradientIsTakenAtThePreMixIterate) {
  // x_{k+1,i} = sum_j W_ij x_{k,j} - gamma * grad f_i(x_{k,i}): the gradient is recomputed on a
  // fresh model at rank i's recorded pre-mix iterate and rank i's micro-batch. Ring of 4, W = 1/3
  // on i-1, i, i+1. Ranks start apart, so the post-mix iterate gives a different gradient.
  const int64_t n = 4, steps = 3;
  const double gamma = 0.1;
  Config cfg = tiny_config({"algorithm.name=\"dpsgd\"", "data.batch_size=8"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<std::vector<torch::Tensor>> x(steps + 1, std::vector<torch::Tensor>(n));
  FakeRunOptions opts;
  opts.before_setup = [&](int64_t r, StagedModel& model) {
    perturb_by_rank(r, model);
    x[0][r] = flat_params(model);
  };
  opts.after_step = [&](int64_t r, int64_t t, RankState& s) { x[t + 1][r] = flat_params(s.model); };
  run_on_fake_world(cfg, n, steps, data, opts);
  Config with_steps = cfg;
  with_steps.run.steps = steps;
  for (int64_t i = 0; i < n; ++i) {
    // Rank i's micro-batches, in the order it reads them.
    std::unique_ptr<MicroBatchSource> batches = assemble_run(with_steps, data, i, n).batches;
    for (int64_t k = 0; k < steps; ++k) {
      torch::Tensor g = gradient_at(cfg, data, x[k][i], batches->next());
      torch::Tensor mixed = (x[k][(i + n - 1) % n] + x[k][i] + x[k][(i + 1) % n]) / 3.0;
      EXPECT_LT(max_diff(x[k + 1][i], mixed - gamma * g), 1e-6) << "rank " << i << " step " << k;
    }
  }
}

TEST(Dpsgd, IdenticalDataAndInitialisationEqualSingleWorkerSgd) {
  Config cfg =
      tiny_config({"algorithm.name=\"dpsgd\"", "data.batch_size=8", "optimizer.momentum=0.9"});
  Config single = tiny_config({"data.batch_size=8", "optimizer.momentum=0.9"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  FakeRunOptions same;
  same.identical_data = true;
  auto ranks = run_on_fake_world(cfg, 4, 6, data, same);
  auto one = run_on_fake_world(single, 1, 6, data);
  for (auto& s : ranks) EXPECT_LT(max_diff(flat_params(s.model), flat_params(one[0].model)), 1e-6);
}

TEST(Dpsgd, RingConsensusShrinksAtLeastLikeTheSecondEigenvalue) {
  // Ring of 4 with weights 1/3: eigenvalues 1, 1/3, 1/3, -1/3, so |lambda_2| = 1/3.
  const int64_t n = 4, steps = 5;
  Config cfg = tiny_config({"algorithm.name=\"dpsgd\"", kNoStep});
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<std::vector<torch::Tensor>> after(steps, std::vector<torch::Tensor>(n));
  FakeRunOptions opts;
  opts.before_setup = perturb_by_rank;
  opts.after_step = [&](int64_t r, int64_t t, RankState& s) { after[t][r] = flat_params(s.model); };
  run_on_fake_world(cfg, n, steps, data, opts);
  double d0 = consensus_distance(initial_params(cfg, n));
  ASSERT_GT(d0, 0.1);
  for (int64_t t = 0; t < steps; ++t)
    EXPECT_LE(consensus_distance(after[t]), std::pow(1.0 / 3, t + 1) * d0 * (1 + 1e-5) + 1e-6);
}

TEST(Dpsgd, SendsDegreeTimesPsiPerStep) {
  const int64_t n = 4, steps = 3;
  for (auto [topology, degree] :
       {std::pair<const char*, int64_t>{"ring", 2}, {"matching", 1}, {"complete", 3}}) {
    Config cfg = tiny_config(
        {"algorithm.name=\"dpsgd\"", std::string("algorithm.topology=\"") + topology + "\""});
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, n, steps, data);
    const int64_t psi = ranks[0].model->parameter_count();
    for (auto& s : ranks) {
      EXPECT_EQ(s.stats.bytes_sent, steps * degree * psi * 4) << topology;
      EXPECT_EQ(s.stats.bytes_received, steps * degree * psi * 4) << topology;
    }
  }
}

}  // namespace
}  // namespace desync
