// Decoupled greedy learning on in-process ranks: the spec's tests
// (../shared/algorithms/local-learning-and-forward-gradient.md §1) and its auxiliary heads.
#include "desync/algorithms/local/dgl.h"

#include <gtest/gtest.h>

#include "algorithms/fake_run.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::max_diff;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

std::vector<std::string> with(std::vector<std::string> a, std::vector<std::string> b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Four stages (fc1, fc2, fc3, head) on 12 features; SGD of lr 1 without momentum, in float64.
std::vector<std::string> mlp4(std::vector<std::string> more = {}) {
  std::vector<std::string> o = {"model.hidden=[32, 16, 16]",  "model.dtype=\"float64\"",
                                "optimizer.lr=1.0",           "optimizer.momentum=0.0",
                                "optimizer.weight_decay=0.0", "data.batch_size=8"};
  o.insert(o.end(), more.begin(), more.end());
  return o;
}
std::vector<std::string> dgl(int64_t blocks, std::vector<std::string> base,
                             const std::string& aux = "mlp") {
  base.push_back("algorithm.name=\"dgl\"");
  base.push_back("algorithm.blocks=" + std::to_string(blocks));
  base.push_back("algorithm.aux=\"" + aux + "\"");
  base.push_back("algorithm.aux_hidden=16");
  return base;
}

const Dgl& dgl_of(const RankState& s) { return dynamic_cast<const Dgl&>(*s.algorithm); }

// Every block's stages and head, each from the rank that holds the block.
torch::Tensor trained(std::vector<RankState>& ranks) {
  std::vector<torch::Tensor> parts;
  for (auto& s : ranks) {
    const Dgl& d = dgl_of(s);
    const StageRange here = d.rank_blocks()[&s - ranks.data()];
    for (int64_t k = here.begin; k < here.end; ++k) {
      const StageRange st = d.block_stages()[k];
      for (const torch::Tensor& p : s.model->parameters_of(st.begin, st.end))
        parts.push_back(p.detach().reshape({-1}));
      if (k + 1 < static_cast<int64_t>(d.block_stages().size()))
        for (const torch::Tensor& p : d.head(k)->parameters())
          parts.push_back(p.detach().reshape({-1}));
    }
  }
  return torch::cat(parts);
}

TEST(Dgl, OneBlockIsEndToEndBackprop) {
  for (const char* accumulation : {"1", "2"}) {
    const std::string acc = std::string("algorithm.accumulation=") + accumulation;
    const Config single = tiny_config(mlp4({"algorithm.name=\"single\"", acc}));
    const Config one = tiny_config(with(dgl(1, mlp4()), {acc}));
    DatasetSplits data = load_dataset(single.data, 0);
    auto reference = run_on_fake_world(single, 1, 4, data);
    auto ranks = run_on_fake_world(one, 1, 4, data);
    EXPECT_LT(max_diff(flat_params(ranks[0].model), flat_params(reference[0].model)), 1e-10)
        << accumulation;
    EXPECT_NEAR(ranks[0].losses.back(), reference[0].losses.back(), 1e-10) << accumulation;
  }
}

// One step of lr 1 from the same start, recomputed here block by block: block k moves by the
// gradient of its own head's loss on block k-1's output, detached; the last block by the
// model's loss. A gradient leaking across a boundary would move a block by more.
TEST(Dgl, EachBlockStepsOnItsOwnLossWithItsInputDetached) {
  const Config cfg = tiny_config(dgl(3, mlp4()));
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto initial = run_on_fake_world(cfg, 1, 0, data);
  auto ranks = run_on_fake_world(cfg, 1, 1, data);
  const Dgl& d = dgl_of(ranks[0]);
  ASSERT_EQ(d.block_stages().size(), 3u);

  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  StagedModel model =
      make_model(cfg.model, ModelInput{data.train.example_shape(), data.train.num_classes});
  model->set_dtype(torch::kFloat64);
  MicroBatchSource source(data.train, cfg.data.batch_size, 0, 1,
                          static_cast<uint64_t>(cfg.run.seed),
                          TransformOptions{cfg.data.normalize, cfg.data.augment});
  MicroBatch mb = source.next();
  torch::Tensor x = mb.inputs;
  for (int64_t k = 0; k < 3; ++k) {
    const StageRange st = d.block_stages()[k];
    std::vector<torch::Tensor> before = model->parameters_of(st.begin, st.end);
    std::vector<torch::Tensor> after = ranks[0].model->parameters_of(st.begin, st.end);
    torch::nn::Sequential head = nullptr, trained_head = nullptr;
    if (k < 2) {
      head =
          std::dynamic_pointer_cast<torch::nn::SequentialImpl>(dgl_of(initial[0]).head(k)->clone());
      trained_head = d.head(k);
      for (const torch::Tensor& p : head->parameters()) before.push_back(p);
      for (const torch::Tensor& p : trained_head->parameters()) after.push_back(p);
    }
    const torch::Tensor h = model->forward_range(x, st.begin, st.end);
    const torch::Tensor loss =
        torch::nn::functional::cross_entropy(k < 2 ? head->forward(h) : h, mb.targets);
    std::vector<torch::Tensor> g = torch::autograd::grad({loss}, before);
    ASSERT_EQ(before.size(), after.size());
    for (size_t i = 0; i < before.size(); ++i)
      EXPECT_LT(max_diff(after[i].detach(), before[i].detach() - g[i]), 1e-10)
          << "block " << k << " tensor " << i;
    x = h.detach();
  }
}

// Spec test 3: the blocks spread over ranks as a forward-only pipeline train what one rank
// holding every block trains, whatever the queue.
TEST(Dgl, PipelinedOverRanksEqualsOneRankHoldingEveryBlock) {
  const std::vector<std::string> base =
      dgl(4, mlp4({"optimizer.lr=0.1", "optimizer.momentum=0.9", "algorithm.accumulation=2"}));
  const Config one = tiny_config(base);
  DatasetSplits data = load_dataset(one.data, 0);
  auto reference = run_on_fake_world(one, 1, 5, data);
  const torch::Tensor expected = trained(reference);
  for (int64_t world : {2, 4})
    for (const char* queue : {"0", "2"}) {
      const Config cfg = tiny_config(with(base, {std::string("algorithm.queue=") + queue}));
      auto ranks = run_on_fake_world(cfg, world, 5, data);
      EXPECT_LT(max_diff(trained(ranks), expected), 1e-10) << world << " ranks, queue " << queue;
      // The last rank reports the model's own loss.
      EXPECT_NEAR(ranks.back().losses.back(), reference[0].losses.back(), 1e-10) << world;
    }
}

// Nothing travels backward: the last rank sends nothing, and every other rank sends exactly
// its activations, the labels and a micro-batch id per micro-batch.
TEST(Dgl, OnlyActivationsAndLabelsGoForward) {
  const Config cfg = tiny_config(dgl(3, mlp4()));
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto ranks = run_on_fake_world(cfg, 3, 4, data);
  const int64_t batch = cfg.data.batch_size;
  const std::vector<int64_t> width = {32, 16};  // fc1's and fc2's outputs (float64)
  for (int64_t r = 0; r < 3; ++r) {
    const int64_t sent = ranks[r].stats.bytes_sent - ranks[r].setup_stats.bytes_sent;
    const int64_t expected = r == 2 ? 0 : 4 * (8 + batch * width[r] * 8 + batch * 8);
    EXPECT_EQ(sent, expected) << "rank " << r;
  }
}

TEST(Dgl, AuxiliaryHeadsFitImagesAndFlatActivations) {
  at::Generator gen = at::detail::createCPUGenerator(1);
  for (const char* kind : {"mlp", "cnn", "linear"}) {
    AuxHeadOptions o{kind, 8};
    torch::nn::Sequential image = make_aux_head(o, {6, 14, 14}, 10, gen);
    EXPECT_EQ(image->forward(torch::randn({5, 6, 14, 14})).sizes(), (std::vector<int64_t>{5, 10}))
        << kind;
    if (std::string(kind) == "cnn") {
      EXPECT_THROW(make_aux_head(o, {16}, 10, gen), ConfigError);
    } else {
      torch::nn::Sequential flat = make_aux_head(o, {16}, 10, gen);
      EXPECT_EQ(flat->forward(torch::randn({5, 16})).sizes(), (std::vector<int64_t>{5, 10}))
          << kind;
    }
  }
  EXPECT_THROW(make_aux_head({"mlp", 8}, {2, 3}, 10, gen), ConfigError);
}

// A head is drawn from its own generator only: ranks that set up at once in one process (or
// anything else using the global RNG) cannot change it. Its layers follow torch's default
// bound, 1/sqrt(fan_in).
TEST(Dgl, AHeadDependsOnItsGeneratorOnly) {
  auto draw = [](uint64_t global_seed) {
    torch::manual_seed(global_seed);
    at::Generator gen = at::detail::createCPUGenerator(42);
    return make_aux_head({"mlp", 8}, {16}, 10, gen);
  };
  torch::nn::Sequential a = draw(1), b = draw(2);
  std::vector<torch::Tensor> pa = a->parameters(), pb = b->parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(pa[i].equal(pb[i])) << i;
  // The first layer: 16 inputs, so within ±1/4, and spread over most of it.
  EXPECT_LE(pa[0].abs().max().item<double>(), 0.25);
  EXPECT_GT(pa[0].abs().max().item<double>(), 0.2);
}

TEST(Dgl, RefusesFewerBlocksThanWorkersOrMoreThanStages) {
  DatasetSplits data = load_dataset(tiny_config({}).data, 0);
  EXPECT_THROW(run_on_fake_world(tiny_config(dgl(2, mlp4())), 3, 1, data), ConfigError);
  EXPECT_THROW(run_on_fake_world(tiny_config(dgl(5, mlp4())), 1, 1, data), ConfigError);
}

}  // namespace
}  // namespace desync
