// Subnetwork data parallelism on in-process ranks: the spec's tests
// (../shared/algorithms/ensembles-and-subnetworks.md §3) and the memory and bytes it is for.
#include "desync/algorithms/dataparallel/sdp.h"

#include <gtest/gtest.h>

#include <set>
#include <unordered_map>

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
  for (const auto& base : {mlp(), resnet({"model.width=8"})})
    for (double coverage : {0.5, 0.75}) {
      const Config cfg = tiny_config(sdp("neuron", "forward", coverage, base));
      DatasetSplits data = load_dataset(cfg.data, 0);
      auto ranks = run_on_fake_world(cfg, 4, 1, data);
      for (int64_t r = 0; r < 4; ++r) {
        const auto* s = dynamic_cast<const Sdp*>(ranks[r].algorithm.get());
        EXPECT_NEAR(s->held_fraction(), coverage, 0.02)
            << cfg.model.name << " " << coverage << " rank " << r;
        // Every element is held by someone.
        for (const torch::Tensor& c : s->holder_counts()) EXPECT_GE(c.min().item<double>(), 1.0);
      }
    }
}

// A ResNet's hidden units are the channels inside its blocks' branches: a unit held by no one
// would leave the branch's conv1 filter, bn1 scale and shift and conv2 input slice unused.
TEST(Sdp, ResNetNeuronUnitsAreTheChannelsInsideEveryBranch) {
  const Config cfg = tiny_config(sdp("neuron", "forward", 0.5, resnet({"model.width=8"})));
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto ranks = run_on_fake_world(cfg, 4, 1, data);
  const auto* s = dynamic_cast<const Sdp*>(ranks[0].algorithm.get());
  std::vector<torch::Tensor> params = ranks[0].model->parameters();
  std::unordered_map<const void*, size_t> index;
  for (size_t i = 0; i < params.size(); ++i) index[params[i].unsafeGetTensorImpl()] = i;
  int64_t partly_held = 0;
  for (ResidualBlock* b : residual_blocks(*ranks[0].model)) {
    const ResidualBlock::HiddenUnits units = b->hidden_units();
    // This worker's channels, read off bn1's scale mask.
    const torch::Tensor mine = s->masks()[index.at(units.produce[1].unsafeGetTensorImpl())];
    ASSERT_EQ(mine.dim(), 1);
    partly_held += mine.sum().item<double>() < static_cast<double>(mine.numel());
    const torch::Tensor conv1 = s->masks()[index.at(units.produce[0].unsafeGetTensorImpl())];
    const torch::Tensor conv2 = s->masks()[index.at(units.consume[0].unsafeGetTensorImpl())];
    for (int64_t c = 0; c < mine.numel(); ++c) {
      EXPECT_TRUE(conv1[c].eq(mine[c]).all().item<bool>()) << "conv1 filter " << c;
      EXPECT_TRUE(conv2.select(1, c).eq(mine[c]).all().item<bool>()) << "conv2 slice " << c;
    }
  }
  EXPECT_EQ(partly_held, 8);  // every branch is cut, none dropped whole
}

TEST(Sdp, ForwardNeuronMaskingKeepsEveryDroppedUnitAtZeroAndTheHoldersAgree) {
  // Momentum and weight decay: a dropped unit's zero must survive the optimizer too.
  const std::vector<std::string> optimizer = {"optimizer.momentum=0.9",
                                              "optimizer.weight_decay=0.01"};
  for (const auto& base : {mlp(optimizer), resnet(with({"model.width=4"}, optimizer))}) {
    const Config cfg = tiny_config(sdp("neuron", "forward", 0.5, base));
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, 4, 3, data);
    std::vector<std::vector<torch::Tensor>> params(4), masks(4);
    for (int64_t r = 0; r < 4; ++r) {
      params[r] = ranks[r].model->parameters();
      masks[r] = dynamic_cast<const Sdp*>(ranks[r].algorithm.get())->masks();
    }
    for (size_t i = 0; i < params[0].size(); ++i)
      for (int64_t r = 0; r < 4; ++r) {
        const torch::Tensor dropped = (1.0 - masks[r][i]) * params[r][i].detach();
        EXPECT_EQ(dropped.abs().max().item<double>(), 0.0)
            << cfg.model.name << " tensor " << i << " rank " << r;
        for (int64_t v = r + 1; v < 4; ++v) {  // what both hold, both hold alike
          const torch::Tensor both = masks[r][i] * masks[v][i];
          EXPECT_LT(max_diff(both * params[r][i].detach(), both * params[v][i].detach()), 1e-6)
              << cfg.model.name << " tensor " << i << " ranks " << r << ", " << v;
        }
      }
    // The ranks did train different subnetworks.
    EXPECT_GT(max_diff(flat_params(ranks[0].model), flat_params(ranks[2].model)), 1e-3);
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

// Trains `steps` steps on `world` fake ranks as run_on_fake_world() does, then has every rank
// assemble model_for_eval(); `ranks` receives the trained ranks.
std::vector<StagedModel> trained_then_assembled(const Config& base, int64_t world, int64_t steps,
                                                const DatasetSplits& data,
                                                std::vector<RankState>& ranks) {
  Config cfg = base;
  cfg.run.steps = steps;
  std::vector<RunParts> parts;
  for (int64_t r = 0; r < world; ++r) parts.push_back(assemble_run(cfg, data, r, world));
  std::vector<StagedModel> assembled(world, StagedModel{nullptr});
  FakeWorld::create(world)->run([&](int64_t r, Communicator& comm) {
    Context ctx = make_context(cfg, comm, parts[r]);
    parts[r].algorithm->setup(ctx);
    for (int64_t t = 0; t < steps; ++t) {
      ctx.step = t;
      parts[r].algorithm->step(ctx);
    }
    assembled[r] = parts[r].algorithm->model_for_eval(ctx);
  });
  ranks.resize(world);
  for (int64_t r = 0; r < world; ++r) {
    ranks[r].model = parts[r].model;
    ranks[r].algorithm = std::move(parts[r].algorithm);
  }
  return assembled;
}

// The evaluated model, element by element, is what its holders hold; bn1's running statistics
// are their holders' mean (a non-holder's never ran on data).
TEST(Sdp, TheEvaluatedModelIsAssembledFromTheHoldersOfEveryElement) {
  for (const char* granularity : {"block", "neuron"}) {
    const Config cfg = tiny_config(with(sdp(granularity, "forward", 0.5, resnet({"model.width=4"})),
                                        {"algorithm.assignment=\"balanced\""}));
    DatasetSplits data = load_dataset(cfg.data, 0);
    std::vector<RankState> ranks;
    std::vector<StagedModel> assembled = trained_then_assembled(cfg, 4, 3, data, ranks);
    std::vector<std::vector<torch::Tensor>> masks(4);
    for (int64_t r = 0; r < 4; ++r)
      masks[r] = dynamic_cast<const Sdp*>(ranks[r].algorithm.get())->masks();
    for (int64_t r = 0; r < 4; ++r) {
      std::vector<torch::Tensor> whole = assembled[r]->parameters();
      for (size_t i = 0; i < whole.size(); ++i) {
        torch::Tensor covered = torch::zeros_like(whole[i]);
        for (int64_t w = 0; w < 4; ++w) {
          const torch::Tensor held = masks[w][i].expand_as(whole[i]);
          if (held.sum().item<double>() == 0) continue;
          const torch::Tensor own = ranks[w].model->parameters()[i].detach();
          EXPECT_LT(max_diff(held * whole[i], held * own), 1e-6)
              << granularity << " tensor " << i << " rank " << r << " holder " << w;
          covered += held;
        }
        EXPECT_GE(covered.min().item<double>(), 1.0) << granularity << " tensor " << i;
      }
      // bn1's statistics: per channel, the mean over the workers that ran it.
      std::vector<ResidualBlock*> blocks = residual_blocks(*assembled[r]);
      std::vector<std::unordered_map<const void*, size_t>> index(4);
      for (int64_t w = 0; w < 4; ++w) {
        std::vector<torch::Tensor> p = ranks[w].model->parameters();
        for (size_t i = 0; i < p.size(); ++i) index[w][p[i].unsafeGetTensorImpl()] = i;
      }
      for (size_t b = 0; b < blocks.size(); ++b)
        for (size_t k = 0; k < 2; ++k) {  // running mean, running variance
          torch::Tensor sum = torch::zeros_like(blocks[b]->hidden_units().statistics[k]);
          torch::Tensor count = torch::zeros_like(sum);
          for (int64_t w = 0; w < 4; ++w) {
            const ResidualBlock::HiddenUnits own =
                residual_blocks(*ranks[w].model)[b]->hidden_units();
            const torch::Tensor ran =
                masks[w][index[w].at(own.produce[1].unsafeGetTensorImpl())].expand_as(sum);
            sum += ran * own.statistics[k];
            count += ran;
          }
          EXPECT_LT(max_diff(blocks[b]->hidden_units().statistics[k], sum / count), 1e-6)
              << granularity << " block " << b << " statistic " << k << " rank " << r;
        }
    }
  }
}

// eval_scale = "holders": the assembled model weighs each block's branch, and each hidden unit's
// outgoing weights, by the share of workers that trained with it; nothing else changes.
TEST(Sdp, ScalingByHoldersWeighsEachBranchAndUnitByItsShareOfWorkers) {
  for (const char* granularity : {"block", "neuron"}) {
    const bool blocks = std::string(granularity) == "block";
    const auto base = with(sdp(granularity, "forward", 0.5, blocks ? resnet() : mlp()),
                           {"algorithm.assignment=\"balanced\"", "algorithm.repair_batches=0"});
    const Config plain = tiny_config(base);
    const Config scaled = tiny_config(with(base, {"algorithm.eval_scale=\"holders\""}));
    DatasetSplits data = load_dataset(plain.data, 0);
    std::vector<RankState> ranks, scaled_ranks;
    std::vector<StagedModel> a = trained_then_assembled(plain, 4, 2, data, ranks);
    std::vector<StagedModel> b = trained_then_assembled(scaled, 4, 2, data, scaled_ranks);
    std::vector<torch::Tensor> pa = a[0]->parameters(), pb = b[0]->parameters();
    // The expected factor of every tensor: the holders' share where it applies, else 1.
    std::vector<torch::Tensor> factor;
    for (const torch::Tensor& p : pa) factor.push_back(torch::ones_like(p));
    std::unordered_map<const void*, size_t> index;
    for (size_t i = 0; i < pa.size(); ++i) index[pa[i].unsafeGetTensorImpl()] = i;
    auto holders = [&](size_t i) {  // per element of tensor i: how many ranks hold it
      torch::Tensor n = torch::zeros_like(pa[i]);
      for (int64_t w = 0; w < 4; ++w)
        n += dynamic_cast<const Sdp*>(ranks[w].algorithm.get())->masks()[i].expand_as(pa[i]);
      return n;
    };
    if (blocks) {
      for (ResidualBlock* block : residual_blocks(*a[0])) {
        auto* bn2 = block->branch_modules().back();
        for (const torch::Tensor& p : bn2->parameters()) {
          const size_t i = index.at(p.unsafeGetTensorImpl());
          factor[i] = holders(i) / 4.0;
        }
      }
    } else {  // the MLP's first hidden layer: its units' columns of the next layer's weight
      const torch::Tensor share = holders(1) / 4.0;  // the first layer's bias: one per unit
      factor[2] = share.unsqueeze(0).expand_as(pa[2]);
    }
    int64_t scaled_tensors = 0;
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_LT(max_diff(pb[i], pa[i] * factor[i]), 1e-6) << granularity << " tensor " << i;
      scaled_tensors += factor[i].lt(1.0).any().item<bool>();
    }
    EXPECT_GT(scaled_tensors, 0) << granularity;
  }
  // A branch scaled by 0 adds nothing: the block computes what it does without its branch.
  const Config cfg = tiny_config(resnet());
  DatasetSplits data = load_dataset(cfg.data, 0);
  torch::manual_seed(5);
  StagedModel dropped =
      make_model(cfg.model, ModelInput{data.train.example_shape(), data.train.num_classes});
  StagedModel zeroed(dropped->clone_model());
  residual_blocks(*dropped)[3]->set_branch_enabled(false);
  residual_blocks(*zeroed)[3]->scale_branch(0.0);
  MicroBatch mb = take_range(data.train, 0, 16, cfg.data.normalize);
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_diff(dropped->forward(mb.inputs), zeroed->forward(mb.inputs)), 1e-6);
}

}  // namespace
}  // namespace desync
