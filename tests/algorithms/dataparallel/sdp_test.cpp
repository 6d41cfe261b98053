// Subnetwork data parallelism on in-process ranks: the spec's tests
// (../shared/algorithms/ensembles-and-subnetworks.md §3) and the memory and bytes it is for.
#include "desync/algorithms/dataparallel/sdp.h"

#include <gtest/gtest.h>

#include <set>

#include "algorithms/fake_run.h"
#include "desync/models/residual.h"

namespace desync {
namespace {

using testing::FakeRunOptions;
using testing::flat_params;
using testing::max_diff;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

// ResNet-18 of width 2 on 1x8x8 images (8 residual blocks); SGD without momentum or decay.
std::vector<std::string> resnet(std::vector<std::string> more = {}) {
  std::vector<std::string> o = {"model.name=\"resnet18\"", "model.width=2",
                                "data.synthetic_shape=[1, 8, 8]", "optimizer.momentum=0.0",
                                "optimizer.weight_decay=0.0"};
  o.insert(o.end(), more.begin(), more.end());
  return o;
}
std::vector<std::string> mlp(std::vector<std::string> more = {}) {
  std::vector<std::string> o = {"model.hidden=[64, 64]", "optimizer.momentum=0.0",
                                "optimizer.weight_decay=0.0"};
  o.insert(o.end(), more.begin(), more.end());
  return o;
}
std::vector<std::string> sdp(const std::string& granularity, const std::string& masking,
                             double coverage, std::vector<std::string> base) {
  base.push_back("algorithm.name=\"sdp\"");
  base.push_back("algorithm.granularity=\"" + granularity + "\"");
  base.push_back("algorithm.masking=\"" + masking + "\"");
  base.push_back("algorithm.coverage=" + std::to_string(coverage));
  return base;
}
std::vector<std::string> with(std::vector<std::string> a, std::vector<std::string> b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(Sdp, FullCoverageEqualsDdpInBothRegimes) {
  for (const auto& base : {resnet(), mlp()}) {
    const std::string granularity = base == resnet() ? "block" : "neuron";
    const Config ddp =
        tiny_config(with(base, {"algorithm.name=\"ddp\"", "model.dtype=\"float64\""}));
    DatasetSplits data = load_dataset(ddp.data, 0);
    auto reference = run_on_fake_world(ddp, 4, 3, data);
    for (const char* masking : {"forward", "backward"}) {
      const Config cfg =
          tiny_config(with(sdp(granularity, masking, 1.0, base), {"model.dtype=\"float64\""}));
      auto ranks = run_on_fake_world(cfg, 4, 3, data);
      for (int64_t r = 0; r < 4; ++r)
        EXPECT_LT(max_diff(flat_params(ranks[r].model), flat_params(reference[r].model)), 1e-6)
            << granularity << " " << masking << " rank " << r;
    }
  }
}

TEST(Sdp, AssignmentCoversEveryUnitWithHolderCountsWithinOne) {
  for (auto [units, world, held] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {8, 4, 4}, {8, 3, 3}, {5, 4, 2}, {8, 4, 2}, {64, 4, 32}, {7, 4, 7}}) {
    std::vector<int64_t> holders(units, 0);
    for (int64_t w = 0; w < world; ++w) {
      std::vector<bool> mine = sdp_assignment(units, world, held, w);
      EXPECT_EQ(std::count(mine.begin(), mine.end(), true), std::min(held, units));
      for (int64_t u = 0; u < units; ++u) holders[u] += mine[u];
    }
    const auto [lo, hi] = std::minmax_element(holders.begin(), holders.end());
    EXPECT_GE(*lo, 1) << units << " units, " << world << " workers, " << held << " each";
    EXPECT_LE(*hi - *lo, 1) << units << " units, " << world << " workers, " << held << " each";
  }
}

TEST(Sdp, BalancedHoldersGiveEveryBlockTheSameCountAndEveryWorkerASimilarLoad) {
  const std::vector<int64_t> sizes = {10, 1, 1, 1, 5, 5, 3, 2};
  const std::vector<int64_t> holders = sdp_balanced_holders(sizes, 4, 2);
  std::vector<int64_t> load(4, 0);
  for (size_t b = 0; b < sizes.size(); ++b) {
    EXPECT_EQ(__builtin_popcountll(holders[b]), 2) << "block " << b;
    for (int64_t w = 0; w < 4; ++w)
      if (holders[b] >> w & 1) load[w] += sizes[b];
  }
  const auto [lo, hi] = std::minmax_element(load.begin(), load.end());
  EXPECT_LE(*hi - *lo, 10);                                  // within the largest block
  EXPECT_EQ(load[0] + load[1] + load[2] + load[3], 2 * 28);  // two holders of each parameter
}

TEST(Sdp, EveryBlockHasAHolderAtAnyCoverage) {
  for (const char* assignment : {"window", "balanced"}) {
    const Config cfg =
        tiny_config(with(sdp("block", "forward", 0.05, resnet()),
                         {std::string("algorithm.assignment=\"") + assignment + "\""}));
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, 4, 1, data);
    const auto* s = dynamic_cast<const Sdp*>(ranks[0].algorithm.get());
    for (const torch::Tensor& c : s->holder_counts())
      EXPECT_GE(c.min().item<double>(), 1.0) << assignment;
  }
}

TEST(Sdp, NeuronMasksHoldTheCoverageOfTheParameters) {
  for (double coverage : {0.5, 0.75}) {
    const Config cfg = tiny_config(sdp("neuron", "forward", coverage, mlp()));
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, 4, 1, data);
    for (int64_t r = 0; r < 4; ++r) {
      const auto* s = dynamic_cast<const Sdp*>(ranks[r].algorithm.get());
      EXPECT_NEAR(s->held_fraction(), coverage, 0.02) << coverage << " rank " << r;
      // Every element is held by someone.
      for (const torch::Tensor& c : s->holder_counts()) EXPECT_GE(c.min().item<double>(), 1.0);
    }
  }
}

// The gradient of worker w's subnetwork at the initial weights, on its first micro-batch,
// computed on a fresh model with the blocks it does not hold switched off.
torch::Tensor subnetwork_gradient(const Config& cfg, const DatasetSplits& data, int64_t w,
                                  int64_t world, int64_t blocks_held) {
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  StagedModel model =
      make_model(cfg.model, ModelInput{data.train.example_shape(), data.train.num_classes});
  std::vector<ResidualBlock*> blocks = residual_blocks(*model);
  std::vector<bool> mine =
      sdp_assignment(static_cast<int64_t>(blocks.size()), world, blocks_held, w);
  for (size_t b = 0; b < blocks.size(); ++b) blocks[b]->set_branch_enabled(mine[b]);
  MicroBatchSource source(data.train, cfg.data.batch_size, w, world,
                          static_cast<uint64_t>(cfg.run.seed),
                          TransformOptions{cfg.data.normalize, cfg.data.augment});
  MicroBatch mb = source.next();
  torch::nn::functional::cross_entropy(model->forward(mb.inputs), mb.targets).backward();
  std::vector<torch::Tensor> g;
  for (auto& p : model->parameters())
    g.push_back(p.grad().defined() ? p.grad().reshape({-1}).clone()
                                   : torch::zeros({p.numel()}, p.options()));
  return torch::cat(g);
}

TEST(Sdp, AHeldParameterTakesTheMeanGradientOfItsHoldersOnly) {
  const Config cfg = tiny_config(
      sdp("block", "forward", 0.5, resnet({"model.dtype=\"float64\"", "optimizer.lr=1.0"})));
  DatasetSplits data = load_dataset(cfg.data, 0);
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  StagedModel initial =
      make_model(cfg.model, ModelInput{data.train.example_shape(), data.train.num_classes});
  const torch::Tensor x0 = flat_params(initial);
  auto ranks = run_on_fake_world(cfg, 4, 1, data);
  const auto* s0 = dynamic_cast<const Sdp*>(ranks[0].algorithm.get());
  int64_t blocks_held = 0;
  for (auto& [name, v] : s0->report().counts)
    if (name == "units_held") blocks_held = v;
  ASSERT_GT(blocks_held, 0);
  std::vector<torch::Tensor> grads;
  for (int64_t w = 0; w < 4; ++w)
    grads.push_back(subnetwork_gradient(cfg, data, w, 4, blocks_held));

  // Per parameter tensor: its holders (from each rank's own mask) and the expected update.
  std::vector<int64_t> sizes;
  for (auto& p : initial->parameters()) sizes.push_back(p.numel());
  int64_t offset = 0, two_holder_tensors = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<int64_t> holders;
    for (int64_t w = 0; w < 4; ++w) {
      const auto* s = dynamic_cast<const Sdp*>(ranks[w].algorithm.get());
      if (s->masks()[i].item<double>() > 0) holders.push_back(w);
    }
    ASSERT_FALSE(holders.empty()) << "tensor " << i;
    two_holder_tensors += holders.size() == 2;
    torch::Tensor mean = torch::zeros({sizes[i]}, torch::kFloat64);
    for (int64_t w : holders) mean += grads[w].narrow(0, offset, sizes[i]);
    mean /= static_cast<double>(holders.size());
    const torch::Tensor expected = x0.narrow(0, offset, sizes[i]) - mean;
    for (int64_t w = 0; w < 4; ++w) {
      const torch::Tensor p = ranks[w].model->parameters()[i];
      const bool holds = std::find(holders.begin(), holders.end(), w) != holders.end();
      if (holds)
        EXPECT_LT(max_diff(p.reshape({-1}), expected), 1e-10) << "tensor " << i << " rank " << w;
      else
        EXPECT_EQ(p.numel(), 0) << "tensor " << i << ": rank " << w << " holds no copy";
    }
    offset += sizes[i];
  }
  EXPECT_GT(two_holder_tensors, 0);  // the case the spec names: held by 2 of 4
}

TEST(Sdp, BackwardMaskingWithIdenticalDataEqualsDdp) {
  for (const auto& base : {resnet(), mlp()}) {
    const std::string granularity = base == resnet() ? "block" : "neuron";
    const Config ddp =
        tiny_config(with(base, {"algorithm.name=\"ddp\"", "model.dtype=\"float64\""}));
    const Config cfg =
        tiny_config(with(sdp(granularity, "backward", 0.5, base), {"model.dtype=\"float64\""}));
    DatasetSplits data = load_dataset(ddp.data, 0);
    FakeRunOptions same;
    same.identical_data = true;
    auto reference = run_on_fake_world(ddp, 4, 3, data, same);
    auto ranks = run_on_fake_world(cfg, 4, 3, data, same);
    for (int64_t r = 0; r < 4; ++r)
      EXPECT_LT(max_diff(flat_params(ranks[r].model), flat_params(reference[r].model)), 1e-10)
          << granularity << " rank " << r;
  }
}

TEST(Sdp, ADroppedBlockIsTheFullModelWithItsBranchZeroed) {
  const Config cfg = tiny_config(resnet());
  DatasetSplits data = load_dataset(cfg.data, 0);
  torch::manual_seed(5);
  StagedModel dropped =
      make_model(cfg.model, ModelInput{data.train.example_shape(), data.train.num_classes});
  StagedModel zeroed(dropped->clone_model());
  MicroBatch mb = take_range(data.train, 0, 16, cfg.data.normalize);
  torch::NoGradGuard no_grad;
  std::vector<ResidualBlock*> a = residual_blocks(*dropped), b = residual_blocks(*zeroed);
  ASSERT_EQ(a.size(), 8u);
  for (size_t k : {1, 2, 6}) {  // an identity shortcut and two projections
    a[k]->set_branch_enabled(false);
    // The branch ends in bn2: with its scale and shift at zero, it adds nothing.
    auto* bn2 = b[k]->branch_modules().back();
    for (auto& p : bn2->parameters()) p.zero_();
  }
  EXPECT_LT(max_diff(dropped->forward(mb.inputs), zeroed->forward(mb.inputs)), 1e-6);
  a[1]->set_branch_enabled(true);  // and the switch is what differs
  EXPECT_GT(max_diff(dropped->forward(mb.inputs), zeroed->forward(mb.inputs)), 1e-4);
}

TEST(Sdp, ForwardBlockMaskingAtHalfCoverageHoldsUnderSixTenthsOfDdpsStateAndSendsLess) {
  // Width 8: the blocks hold most of the parameters, as in a real ResNet-18.
  const auto base = resnet({"model.width=8"});
  const Config ddp = tiny_config(with(base, {"algorithm.name=\"ddp\""}));
  // Blocks of unequal sizes: the balanced assignment spreads them (the window gives one worker
  // both of layer 4's blocks).
  const Config cfg =
      tiny_config(with(sdp("block", "forward", 0.5, base), {"algorithm.assignment=\"balanced\""}));
  DatasetSplits data = load_dataset(ddp.data, 0);
  auto reference = run_on_fake_world(ddp, 4, 2, data);
  auto ranks = run_on_fake_world(cfg, 4, 2, data);
  auto state = [](const AlgorithmReport& r) {
    int64_t bytes = 0;
    for (auto& [name, b] : r.memory)
      if (name == "parameters" || name == "gradients" || name == "optimizer_state") bytes += b;
    return static_cast<double>(bytes);
  };
  const double ddp_state = state(reference[0].algorithm->report());
  for (int64_t r = 0; r < 4; ++r) {
    EXPECT_LE(state(ranks[r].algorithm->report()), 0.6 * ddp_state) << "rank " << r;
    EXPECT_LT(ranks[r].stats.bytes_sent, 0.75 * reference[r].stats.bytes_sent) << "rank " << r;
  }
}

}  // namespace
}  // namespace desync
