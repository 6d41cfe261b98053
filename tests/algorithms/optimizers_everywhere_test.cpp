// The new optimizers under every registered algorithm: a natively low-rank MLP trained by
// Spectron, and a μP MLP trained by the learned optimizer mulo, each set up and stepped on a fake
// world. An algorithm that hands its optimizer flat shards (of a sharded or flattened buffer)
// must refuse with a ConfigError instead of training silently without μP or without factors;
// every other one must take a finite step.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "algorithms/fake_run.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::run_on_fake_world;
using testing::tiny_config;

// The algorithms expected to refuse, each for a stated reason, so that a method that starts or
// stops refusing fails here.
const std::set<std::string> kShardedOptimizer = {"zero1", "dpu", "acco"};  // flat shards
const std::set<std::string> kNeedsTorchLinear = {"sdp"};  // masks the units of nn::Linear layers
// Optimizers over auxiliary heads, which μP's table does not cover (dgl, run on one rank here,
// has one block and no auxiliary head).
const std::set<std::string> kAuxiliaryHeads = {"forward_gradient", "contrastive_local"};
// Read the head's nn::Linear, which μP replaces by a LinearLayer with its multiplier.
const std::set<std::string> kLastLinearHead = {"fedlp", "fedncm"};

std::set<std::string> join(std::initializer_list<std::set<std::string>> sets) {
  std::set<std::string> out;
  for (const auto& s : sets) out.insert(s.begin(), s.end());
  return out;
}

Config config_for(const AlgorithmInfo& info, const std::vector<std::string>& extra) {
  std::vector<std::string> o = {"algorithm.name=\"" + info.name + "\""};
  if (info.family == "federated") {
    o.push_back("algorithm.clients=40");
    o.push_back("algorithm.partition=\"iid\"");
  }
  o.insert(o.end(), extra.begin(), extra.end());
  return tiny_config(o);
}

// Runs one step of every algorithm (but the embedding trainers, whose model is sgns) with
// `extra` on two ranks (`single`: one; the local-learning family on one rank too, where only
// some ranks hold an auxiliary head and a refusal on one rank would leave the other waiting in a
// collective, as a real job's launcher then stops it); returns those that refused with a
// one-line ConfigError.
std::set<std::string> refusals(const std::vector<std::string>& extra) {
  std::set<std::string> refused;
  for (const AlgorithmInfo& info : algorithm_registry()) {
    if (info.family == "embedding") continue;
    SCOPED_TRACE(info.name);
    const Config cfg = config_for(info, extra);
    const DatasetSplits data = load_dataset(cfg.data, 0);
    const int64_t world = info.name == "single" || info.family == "local" ? 1 : 2;
    try {
      std::vector<testing::RankState> ranks = run_on_fake_world(cfg, world, 1, data);
      for (auto& r : ranks) {
        EXPECT_EQ(r.losses.size(), 1u);
        EXPECT_TRUE(!r.losses.empty() && std::isfinite(r.losses[0]));
        EXPECT_TRUE(flat_params(r.model).isfinite().all().item<bool>());
      }
    } catch (const ConfigError& e) {
      refused.insert(info.name);
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
    }
  }
  return refused;
}

TEST(OptimizersEverywhere, SpectronOnALowRankModel) {
  EXPECT_EQ(refusals({"model.low_rank=0.5", "optimizer.name=\"spectron\"", "optimizer.lr=0.01"}),
            join({kShardedOptimizer, kNeedsTorchLinear}));
}

TEST(OptimizersEverywhere, MuloOnAMupModel) {
  EXPECT_EQ(refusals({"model.parametrization=\"mup\"", "optimizer.name=\"mulo\""}),
            join({kShardedOptimizer, kNeedsTorchLinear, kAuxiliaryHeads, kLastLinearHead}));
}

}  // namespace
}  // namespace desync
