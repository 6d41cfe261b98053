// Contrastive local learning on in-process ranks: the spec's tests
// (../shared/algorithms/local-learning-and-forward-gradient.md §3), the NT-Xent loss against a
// reference written here, the subsampling placeholder, and the per-block probe.
#include "desync/algorithms/local/contrastive_local.h"

#include <gtest/gtest.h>

#include <cmath>

#include "algorithms/fake_run.h"
#include "desync/algorithms/local/contrastive.h"
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

// Four stages (fc1, fc2, fc3 | head) on 12 features: an encoder of three stages. Plain SGD in
// float64.
std::vector<std::string> mlp4(std::vector<std::string> more = {}) {
  std::vector<std::string> o = {"model.hidden=[32, 16, 16]",  "model.dtype=\"float64\"",
                                "optimizer.lr=0.5",           "optimizer.momentum=0.0",
                                "optimizer.weight_decay=0.0", "data.batch_size=8"};
  o.insert(o.end(), more.begin(), more.end());
  return o;
}
std::vector<std::string> contrastive(int64_t blocks, std::vector<std::string> base) {
  base.push_back("algorithm.name=\"contrastive_local\"");
  base.push_back("algorithm.blocks=" + std::to_string(blocks));
  base.push_back("algorithm.projection_width=16");
  base.push_back("algorithm.projection_dim=8");
  base.push_back("algorithm.temperature=0.3");
  return base;
}

const ContrastiveLocal& of(const RankState& s) {
  return dynamic_cast<const ContrastiveLocal&>(*s.algorithm);
}

// A reference NT-Xent written from the definition, one row at a time.
torch::Tensor reference_nt_xent(const torch::Tensor& z, double tau) {
  const int64_t n2 = z.size(0), n = n2 / 2;
  torch::Tensor total = torch::zeros({}, z.options());
  for (int64_t i = 0; i < n2; ++i) {
    const int64_t p = (i + n) % n2;
    torch::Tensor denominator = torch::zeros({}, z.options());
    torch::Tensor positive;
    for (int64_t j = 0; j < n2; ++j) {
      if (j == i) continue;
      const torch::Tensor s = (z[i] * z[j]).sum() / (z[i].norm() * z[j].norm()) / tau;
      denominator = denominator + s.exp();
      if (j == p) positive = s;
    }
    total = total - (positive - denominator.log());
  }
  return total / static_cast<double>(n2);
}

// The model as every rank builds it, in float64.
StagedModel fresh_model(const Config& cfg, const DatasetSplits& data) {
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
  StagedModel model =
      make_model(cfg.model, ModelInput{data.train.example_shape(), data.train.num_classes});
  model->set_dtype(torch::kFloat64);
  return model;
}

// Every block's stages and projection head, each from the rank that holds the block, and the
// model's head from the last rank.
torch::Tensor trained(std::vector<RankState>& ranks) {
  std::vector<torch::Tensor> parts;
  for (auto& s : ranks) {
    const ContrastiveLocal& c = of(s);
    const StageRange here = c.rank_blocks()[&s - ranks.data()];
    for (int64_t k = here.begin; k < here.end; ++k) {
      const StageRange st = c.block_stages()[k];
      for (const torch::Tensor& p : s.model->parameters_of(st.begin, st.end))
        parts.push_back(p.detach().reshape({-1}));
      for (const torch::Tensor& p : c.head(k)->parameters())
        parts.push_back(p.detach().reshape({-1}));
    }
  }
  StagedModel& last = ranks.back().model;
  for (const torch::Tensor& p : last->parameters_of(last->num_stages() - 1, last->num_stages()))
    parts.push_back(p.detach().reshape({-1}));
  return torch::cat(parts);
}

// Spec test 1.
TEST(ContrastiveLocal, EffectiveRankOfIsotropicGaussianIsNearItsDimensionAndOfRankOneIsOne) {
  torch::manual_seed(3);
  for (int64_t d : {8, 32}) {
    const double e = effective_rank(torch::randn({100 * d, d}, torch::kFloat64));
    EXPECT_NEAR(e, static_cast<double>(d), 0.02 * static_cast<double>(d)) << d;
  }
  const torch::Tensor a = torch::randn({400, 1}, torch::kFloat64);
  const torch::Tensor v = torch::randn({1, 24}, torch::kFloat64);
  EXPECT_NEAR(effective_rank(a * v + 5.0), 1.0, 1e-6);  // the offset is centred away
  EXPECT_NEAR(effective_rank(torch::randn({200, 16}).narrow(1, 0, 4)), 4.0, 0.08 * 4);
}

TEST(ContrastiveLocal, NtXentMatchesAReferenceWrittenFromTheDefinition) {
  torch::manual_seed(5);
  const torch::Tensor z = torch::randn({6, 4}, torch::kFloat64);
  for (double tau : {0.5, 0.1, 2.0})
    EXPECT_NEAR(nt_xent(z, tau).item<double>(), reference_nt_xent(z, tau).item<double>(), 1e-12)
        << tau;
  // Two examples whose views coincide and point apart: the loss is -log(e^(1/t) / (e^(1/t) +
  // 2 e^(-1/t))) for every row.
  const torch::Tensor easy =
      torch::tensor({1.0, 0.0, -1.0, 0.0, 2.0, 0.0, -3.0, 0.0}, torch::kFloat64).reshape({4, 2});
  const double t = 0.5,
               expected = -std::log(std::exp(1 / t) / (std::exp(1 / t) + 2 * std::exp(-1 / t)));
  EXPECT_NEAR(nt_xent(easy, t).item<double>(), expected, 1e-12);
}

TEST(ContrastiveLocal, SubsamplingKeepsTheLeastSimilarSamples) {
  // Rows 0, 2 and 3 nearly coincide; rows 1 and 4 point elsewhere: they are kept.
  const torch::Tensor f =
      torch::tensor({1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.1, 0.0, 0.9, 0.0, 0.1, 0.0, 0.2, 1.0},
                    torch::kFloat64)
          .reshape({5, 3});
  EXPECT_TRUE(least_similar(f, 0.4).equal(torch::tensor({1, 4}, torch::kLong)));
  EXPECT_TRUE(least_similar(f, 0.6).size(0) == 3);
  EXPECT_EQ(least_similar(f, 0.01).size(0), 2);  // never fewer than a pair
  EXPECT_TRUE(least_similar(f, 1.0).equal(torch::arange(5, torch::kLong)));
}

// Spec test 3: the hook with rho = 1 keeps every sample, and the loss over the kept rows is the
// loss over all of them, bit for bit; a run with rho = 1 is a run without the hook.
TEST(ContrastiveLocal, SubsamplingRatioOneEqualsNoSubsampling) {
  torch::manual_seed(7);
  const torch::Tensor h = torch::randn({10, 6}, torch::kFloat64);
  const torch::Tensor keep = least_similar(h.narrow(0, 0, 5), 1.0);
  EXPECT_TRUE(nt_xent(h.index_select(0, torch::cat({keep, keep + 5})), 0.5).equal(nt_xent(h, 0.5)));
  const Config off = tiny_config(contrastive(3, mlp4()));
  const Config one = tiny_config(with(contrastive(3, mlp4()), {"algorithm.subsample_ratio=1.0"}));
  const Config half = tiny_config(with(contrastive(3, mlp4()), {"algorithm.subsample_ratio=0.5"}));
  DatasetSplits data = load_dataset(off.data, 0);
  auto a = run_on_fake_world(off, 1, 3, data);
  auto b = run_on_fake_world(one, 1, 3, data);
  auto c = run_on_fake_world(half, 1, 3, data);
  EXPECT_TRUE(trained(a).equal(trained(b)));
  EXPECT_GT(max_diff(trained(a), trained(c)), 1e-6);  // and rho < 1 does change training
}

// Spec test 2: K = 1 is end-to-end contrastive training, written here from scratch: the
// encoder and projection head stepped by SGD on NT-Xent of the two views, the model's head on
// cross-entropy of the detached features.
TEST(ContrastiveLocal, OneBlockIsEndToEndContrastiveTraining) {
  const Config cfg = tiny_config(contrastive(1, mlp4()));
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto initial = run_on_fake_world(cfg, 1, 0, data);
  const int64_t steps = 4;
  auto ranks = run_on_fake_world(cfg, 1, steps, data);

  StagedModel model = fresh_model(cfg, data);
  const int64_t S = model->num_stages();
  auto projection =
      std::dynamic_pointer_cast<torch::nn::SequentialImpl>(of(initial[0]).head(0)->clone());
  std::vector<torch::Tensor> encoder = model->parameters_of(0, S - 1);
  for (const torch::Tensor& p : projection->parameters()) encoder.push_back(p);
  const std::vector<torch::Tensor> classifier = model->parameters_of(S - 1, S);
  MicroBatchSource source(data.train, cfg.data.batch_size, 0, 1,
                          static_cast<uint64_t>(cfg.run.seed),
                          TransformOptions{cfg.data.normalize, cfg.data.augment});
  const double lr = cfg.optimizer.lr;
  std::vector<double> losses;
  for (int64_t t = 0; t < steps; ++t) {
    MicroBatch mb = source.next();
    const torch::Tensor x =
        contrastive_views(mb.inputs, static_cast<uint64_t>(cfg.run.seed), t, 0.1);
    const torch::Tensor h = model->forward_range(x, 0, S - 1);
    const torch::Tensor loss = reference_nt_xent(projection->forward(h), 0.3);
    const std::vector<torch::Tensor> g = torch::autograd::grad({loss}, encoder);
    const torch::Tensor ce = torch::nn::functional::cross_entropy(
        model->forward_range(h.detach(), S - 1, S), torch::cat({mb.targets, mb.targets}));
    const std::vector<torch::Tensor> gc = torch::autograd::grad({ce}, classifier);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < encoder.size(); ++i) encoder[i].sub_(lr * g[i]);
    for (size_t i = 0; i < classifier.size(); ++i) classifier[i].sub_(lr * gc[i]);
    losses.push_back(loss.item<double>());
  }
  std::vector<torch::Tensor> expected, got;
  for (const torch::Tensor& p : encoder) expected.push_back(p.detach().reshape({-1}));
  for (const torch::Tensor& p : classifier) expected.push_back(p.detach().reshape({-1}));
  EXPECT_LT(max_diff(trained(ranks), torch::cat(expected)), 1e-6);
  EXPECT_NEAR(ranks[0].losses.back(), losses.back(), 1e-6);
}

// One step of lr 0.5 from the same start, recomputed here block by block: block k moves by the
// gradient of NT-Xent (temperature 0.3) of its own projection of its output, computed on block
// k-1's output detached. A gradient leaking across a boundary would move a block by more.
TEST(ContrastiveLocal, EachBlockStepsOnItsOwnLossWithItsInputDetached) {
  const Config cfg = tiny_config(contrastive(3, mlp4()));
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto initial = run_on_fake_world(cfg, 1, 0, data);
  auto ranks = run_on_fake_world(cfg, 1, 1, data);
  const ContrastiveLocal& c = of(ranks[0]);
  ASSERT_EQ(c.block_stages().size(), 3u);
  StagedModel model = fresh_model(cfg, data);
  MicroBatchSource source(data.train, cfg.data.batch_size, 0, 1,
                          static_cast<uint64_t>(cfg.run.seed),
                          TransformOptions{cfg.data.normalize, cfg.data.augment});
  torch::Tensor x =
      contrastive_views(source.next().inputs, static_cast<uint64_t>(cfg.run.seed), 0, 0.1);
  for (int64_t k = 0; k < 3; ++k) {
    const StageRange st = c.block_stages()[k];
    std::vector<torch::Tensor> before = model->parameters_of(st.begin, st.end);
    std::vector<torch::Tensor> after = ranks[0].model->parameters_of(st.begin, st.end);
    auto head =
        std::dynamic_pointer_cast<torch::nn::SequentialImpl>(of(initial[0]).head(k)->clone());
    for (const torch::Tensor& p : head->parameters()) before.push_back(p);
    for (const torch::Tensor& p : c.head(k)->parameters()) after.push_back(p);
    const torch::Tensor h = model->forward_range(x, st.begin, st.end);
    const torch::Tensor loss = reference_nt_xent(head->forward(h), 0.3);
    std::vector<torch::Tensor> g = torch::autograd::grad({loss}, before);
    ASSERT_EQ(before.size(), after.size());
    for (size_t i = 0; i < before.size(); ++i)
      EXPECT_LT(max_diff(after[i].detach(), before[i].detach() - 0.5 * g[i]), 1e-10)
          << "block " << k << " tensor " << i;
    x = h.detach();
  }
}

// With subsampling, block k's loss is the reference NT-Xent over the two views of the kept
// samples only: those whose block-k features (first view) are least similar to the rest.
TEST(ContrastiveLocal, SubsampledLossUsesTheKeptSamplesOnly) {
  const Config cfg = tiny_config(with(contrastive(1, mlp4()), {"algorithm.subsample_ratio=0.5"}));
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto initial = run_on_fake_world(cfg, 1, 0, data);
  auto ranks = run_on_fake_world(cfg, 1, 1, data);
  StagedModel model = fresh_model(cfg, data);
  const int64_t S = model->num_stages(), B = cfg.data.batch_size;
  auto head = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(of(initial[0]).head(0)->clone());
  std::vector<torch::Tensor> before = model->parameters_of(0, S - 1);
  for (const torch::Tensor& p : head->parameters()) before.push_back(p);
  MicroBatchSource source(data.train, B, 0, 1, static_cast<uint64_t>(cfg.run.seed),
                          TransformOptions{cfg.data.normalize, cfg.data.augment});
  const torch::Tensor x =
      contrastive_views(source.next().inputs, static_cast<uint64_t>(cfg.run.seed), 0, 0.1);
  const torch::Tensor h = model->forward_range(x, 0, S - 1);
  // The least similar half, by mean cosine to the others, found here by brute force.
  const torch::Tensor u = torch::nn::functional::normalize(
      h.detach().narrow(0, 0, B), torch::nn::functional::NormalizeFuncOptions().dim(1));
  const torch::Tensor score = (u.matmul(u.t()).sum(1) - 1.0) / static_cast<double>(B - 1);
  const torch::Tensor keep = std::get<0>(std::get<1>(score.sort()).narrow(0, 0, B / 2).sort());
  const torch::Tensor loss =
      reference_nt_xent(head->forward(h.index_select(0, torch::cat({keep, keep + B}))), 0.3);
  std::vector<torch::Tensor> g = torch::autograd::grad({loss}, before);
  std::vector<torch::Tensor> after = ranks[0].model->parameters_of(0, S - 1);
  for (const torch::Tensor& p : of(ranks[0]).head(0)->parameters()) after.push_back(p);
  for (size_t i = 0; i < before.size(); ++i)
    EXPECT_LT(max_diff(after[i].detach(), before[i].detach() - 0.5 * g[i]), 1e-10) << i;
}

// The blocks spread over ranks as a forward-only pipeline train what one rank holding every
// block trains, with or without subsampling, whatever the queue.
TEST(ContrastiveLocal, PipelinedOverRanksEqualsOneRankHoldingEveryBlock) {
  for (const char* ratio : {"1.0", "0.5"}) {
    const std::vector<std::string> base = with(
        contrastive(
            3, mlp4({"optimizer.lr=0.1", "optimizer.momentum=0.9", "algorithm.accumulation=2"})),
        {std::string("algorithm.subsample_ratio=") + ratio});
    const Config one = tiny_config(base);
    DatasetSplits data = load_dataset(one.data, 0);
    auto reference = run_on_fake_world(one, 1, 4, data);
    const torch::Tensor expected = trained(reference);
    for (int64_t world : {2, 3})
      for (const char* queue : {"0", "1"}) {
        const Config cfg = tiny_config(with(base, {std::string("algorithm.queue=") + queue}));
        auto ranks = run_on_fake_world(cfg, world, 4, data);
        EXPECT_LT(max_diff(trained(ranks), expected), 1e-10)
            << world << " ranks, queue " << queue << ", ratio " << ratio;
        EXPECT_NEAR(ranks.back().losses.back(), reference[0].losses.back(), 1e-10) << world;
      }
  }
}

// The views are a pure function of (seed, micro-batch id): the same on a re-run (and so on
// resume), different from one id to the next, and each image view a shifted, maybe flipped
// copy.
TEST(ContrastiveLocal, ViewsAreSeededByMicroBatch) {
  torch::manual_seed(1);
  const torch::Tensor images = torch::rand({4, 1, 8, 8});
  const torch::Tensor a = contrastive_views(images, 3, 7, 0.1);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{8, 1, 8, 8}));
  EXPECT_TRUE(a.equal(contrastive_views(images, 3, 7, 0.1)));
  EXPECT_FALSE(a.equal(contrastive_views(images, 3, 8, 0.1)));
  EXPECT_FALSE(a.narrow(0, 0, 4).equal(a.narrow(0, 4, 4)));
  const torch::Tensor flat = torch::zeros({5, 12});
  const torch::Tensor f = contrastive_views(flat, 3, 7, 0.1);
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{10, 12}));
  EXPECT_NEAR(f.std().item<double>(), 0.1, 0.03);
}

// The probe at an evaluation: an effective rank per block (within [1, width]) and, at the last,
// a linear-probe accuracy per block; the training state is left as it was.
TEST(ContrastiveLocal, ProbeReportsEffectiveRankAndAccuracyPerBlockAndChangesNothing) {
  Config cfg = tiny_config(
      with(contrastive(3, mlp4()), {"algorithm.probe_examples=64", "algorithm.probe_steps=50"}));
  cfg.run.steps = 2;
  DatasetSplits data = load_dataset(cfg.data, 0);
  RunParts parts = assemble_run(cfg, data, 0, 1);
  auto fake = FakeWorld::create(1);
  fake->run([&](int64_t, Communicator& comm) {
    Context ctx = make_context(cfg, comm, parts);
    auto& algorithm = dynamic_cast<ContrastiveLocal&>(*parts.algorithm);
    algorithm.setup(ctx);
    for (int64_t t = 0; t < 2; ++t) {
      ctx.step = t;
      algorithm.step(ctx);
    }
    const torch::Tensor before = flat_params(parts.model);
    std::vector<std::pair<std::string, double>> some = algorithm.probe(ctx, false);
    ASSERT_EQ(some.size(), 3u);
    const std::vector<std::pair<std::string, double>> all = algorithm.probe(ctx, true);
    ASSERT_EQ(all.size(), 6u);
    const std::vector<int64_t> width = {32, 16, 16};
    for (int64_t k = 0; k < 3; ++k) {
      EXPECT_EQ(all[k].first, "erank_" + std::to_string(k + 1));
      EXPECT_EQ(all[k].second, some[k].second);
      EXPECT_GE(all[k].second, 1.0);
      EXPECT_LE(all[k].second, static_cast<double>(width[k]));
      EXPECT_EQ(all[3 + k].first, "probe_accuracy_" + std::to_string(k + 1));
      EXPECT_GT(all[3 + k].second, 0.0);
      EXPECT_LE(all[3 + k].second, 1.0);
    }
    EXPECT_TRUE(flat_params(parts.model).equal(before));
    EXPECT_TRUE(parts.model->is_training());
  });
}

TEST(ContrastiveLocal, LinearProbeSeparatesSeparableFeatures) {
  torch::manual_seed(2);
  const torch::Tensor labels = torch::randint(0, 3, {300}, torch::kLong);
  const torch::Tensor centres = 4.0 * torch::randn({3, 5}, torch::kFloat64);
  const torch::Tensor f = centres.index_select(0, labels) + torch::randn({300, 5}, torch::kFloat64);
  const double acc =
      linear_probe_accuracy(f.narrow(0, 0, 200), labels.narrow(0, 0, 200), f.narrow(0, 200, 100),
                            labels.narrow(0, 200, 100), 3, 200, 0.05);
  EXPECT_GT(acc, 0.9);
}

TEST(ContrastiveLocal, RefusesMoreBlocksThanEncoderStagesOrFewerThanWorkers) {
  DatasetSplits data = load_dataset(tiny_config({}).data, 0);
  EXPECT_THROW(run_on_fake_world(tiny_config(contrastive(4, mlp4())), 1, 1, data), ConfigError);
  EXPECT_THROW(run_on_fake_world(tiny_config(contrastive(2, mlp4())), 3, 1, data), ConfigError);
}

}  // namespace
}  // namespace desync
