// Runs an algorithm on N in-process ranks (FakeWorld) the way the Trainer would, for
// equivalence tests: every rank is assembled by assemble_run() (the same seeded model, its
// shard of the stream), set up, and takes `steps` steps.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/registry.h"
#include "desync/comm/fake_communicator.h"
#include "desync/data/dataset.h"
#include "desync/train/assemble.h"

namespace desync::testing {

struct RankState {
  StagedModel model{nullptr};
  std::unique_ptr<MicroBatchSource> batches;
  std::unique_ptr<Schedule> schedule;
  std::unique_ptr<Algorithm> algorithm;
  std::vector<double> losses;
  CommStats setup_stats;  // traffic of setup()
  CommStats stats;        // all traffic, setup included
};

struct FakeRunOptions {
  bool identical_data = false;  // every rank reads the whole stream (as pipelines do anyway)
  // Runs on each rank's model before setup() (e.g. to make the ranks' models differ).
  std::function<void(int64_t rank, StagedModel& model)> before_setup;
  // Runs on each rank after each step t.
  std::function<void(int64_t rank, int64_t t, RankState& state)> after_step;
};

// A small synthetic job; `overrides` adjust it (e.g. the algorithm).
inline Config tiny_config(std::vector<std::string> overrides) {
  std::vector<std::string> base = {"data.dataset=\"synthetic\"", "data.synthetic_train=1024",
                                   "data.synthetic_test=128",    "data.synthetic_shape=[12]",
                                   "model.name=\"mlp\"",         "model.hidden=[32, 16]",
                                   "optimizer.lr=0.1",           "run.steps=5"};
  base.insert(base.end(), overrides.begin(), overrides.end());
  return parse_config("", "test.toml", base);
}

// Precision overrides for equivalence tests: float32 holds them to 1e-5, float64 to 1e-10.
struct Precision {
  const char* name;
  std::vector<std::string> overrides;
  double tolerance;
};
inline const Precision kFloat32{"float32", {}, 1e-5};
inline const Precision kFloat64{"float64", {"model.dtype=\"float64\""}, 1e-10};

// A tiny seeded model with 4 classes: tiny_config()'s MLP on 12 features or, with
// `batch_norm`, a one-block BatchNorm CNN on 1x8x8 images.
inline StagedModel tiny_model(bool batch_norm = false) {
  Config cfg = tiny_config({});
  torch::manual_seed(0);
  if (!batch_norm) return make_model(cfg.model, {{12}, 4});
  Config cnn = tiny_config({"model.name=\"cnn\"", "model.channels=[2]"});
  return make_model(cnn.model, {{1, 8, 8}, 4});
}

// Flat copy of all parameters.
inline torch::Tensor flat_params(StagedModel& m) {
  std::vector<torch::Tensor> v;
  for (auto& p : m->parameters()) v.push_back(p.detach().reshape({-1}).clone());
  return torch::cat(v);
}

// The largest absolute elementwise difference.
inline double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// The mean over ranks of their flat parameters.
inline torch::Tensor mean_params(std::vector<RankState>& ranks) {
  torch::Tensor sum = flat_params(ranks[0].model);
  for (size_t r = 1; r < ranks.size(); ++r) sum = sum + flat_params(ranks[r].model);
  return sum / static_cast<double>(ranks.size());
}

// A before_setup hook that gives every rank different parameters (rank-seeded noise).
inline void perturb_by_rank(int64_t rank, StagedModel& model) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(100 + rank));
  for (auto& p : model->parameters()) p.add_(at::normal(0.0, 0.1, p.sizes(), gen, p.options()));
}

// Trains `steps` steps on `world` fake ranks and returns every rank's final state. Each rank is
// assembled as the Trainer assembles it (train/assemble.h), with run.steps = `steps`.
inline std::vector<RankState> run_on_fake_world(const Config& base, int64_t world, int64_t steps,
                                                const DatasetSplits& data,
                                                const FakeRunOptions& options = {}) {
  Config cfg = base;
  cfg.run.steps = steps;
  std::vector<RankState> ranks(world);
  std::vector<RunParts> parts;
  for (int64_t r = 0; r < world; ++r) {  // models built one after another: same init
    parts.push_back(assemble_run(cfg, data, r, world));
    if (options.identical_data)
      parts[r].batches = std::make_unique<MicroBatchSource>(
          data.train, cfg.data.batch_size, 0, 1, static_cast<uint64_t>(cfg.run.seed),
          TransformOptions{cfg.data.normalize, cfg.data.augment});
    ranks[r].model = parts[r].model;
    ranks[r].algorithm = std::move(parts[r].algorithm);
    parts[r].algorithm = nullptr;
  }
  auto fake = FakeWorld::create(world);
  fake->run([&](int64_t r, Communicator& comm) {
    RankState& s = ranks[r];
    Context ctx = make_context(cfg, comm, parts[r]);
    if (options.before_setup) options.before_setup(r, s.model);
    s.algorithm->setup(ctx);
    s.setup_stats = comm.total_stats();
    for (int64_t t = 0; t < steps; ++t) {
      ctx.step = t;
      s.losses.push_back(s.algorithm->step(ctx).loss);
      if (options.after_step) options.after_step(r, t, s);
    }
    s.algorithm->finish(ctx);
    s.stats = comm.total_stats();
  });
  for (int64_t r = 0; r < world; ++r) {
    ranks[r].batches = std::move(parts[r].batches);
    ranks[r].schedule = std::move(parts[r].schedule);
  }
  return ranks;
}

}  // namespace desync::testing
