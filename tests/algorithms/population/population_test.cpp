// WASH, PAPA and independent ensembles on in-process ranks: the spec's tests
// (../shared/algorithms/ensembles-and-subnetworks.md §1, §2) and what makes each method itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "algorithms/fake_run.h"
#include "desync/algorithms/population/papa.h"
#include "desync/algorithms/population/wash.h"

namespace desync {
namespace {

using testing::FakeRunOptions;
using testing::flat_params;
using testing::max_diff;
using testing::mean_params;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

// lr 1e-30: gradient steps vanish below float precision, leaving what the method itself does.
const char* kNoStep = "optimizer.lr=1e-30";
const char* kFloat64 = "model.dtype=\"float64\"";

// Every rank's parameters before setup(), by rank (a population starts from distinct weights).
struct Initial {
  std::vector<torch::Tensor> params;
  FakeRunOptions options() {
    params.resize(16);
    FakeRunOptions o;
    o.before_setup = [this](int64_t r, StagedModel& m) { params[r] = flat_params(m); };
    return o;
  }
};

std::vector<torch::Tensor> finals(std::vector<RankState>& ranks) {
  std::vector<torch::Tensor> out;
  for (auto& s : ranks) out.push_back(flat_params(s.model));
  return out;
}

// ---- WASH ----

TEST(Wash, ProbabilitiesDecayLinearlyFromPToZeroWithDepth) {
  const std::vector<double> p = wash_probabilities({0, 1, 2, 3, 4}, 0.2, true);
  ASSERT_EQ(p.size(), 5u);
  EXPECT_DOUBLE_EQ(p[0], 0.2);
  EXPECT_DOUBLE_EQ(p[2], 0.1);
  EXPECT_DOUBLE_EQ(p[4], 0.0);
  const std::vector<double> flat = wash_probabilities({0, 1, 2}, 0.2, false);
  EXPECT_EQ(flat, std::vector<double>(3, 0.2));
  // Layers: the tensors of one layer share its probability.
  const std::vector<double> layers = wash_probabilities({0, 0, 1, 1, 2}, 0.2, true);
  EXPECT_DOUBLE_EQ(layers[1], 0.2);
  EXPECT_DOUBLE_EQ(layers[3], 0.1);
}

TEST(Wash, PlansAgreeOnEveryRankFormPermutationsAndSelectAtTheTensorsRate) {
  const int64_t world = 4;
  const std::vector<int64_t> sizes = {40000, 40000, 40000, 40000, 40000};
  const std::vector<double> probs = wash_probabilities({0, 1, 2, 3, 4}, 0.1, true);
  std::vector<ShufflePlan> plans;
  for (int64_t r = 0; r < world; ++r) plans.push_back(wash_plan(7, 3, sizes, probs, world, r));
  for (size_t l = 0; l < sizes.size(); ++l) {
    for (int64_t r = 1; r < world; ++r) EXPECT_TRUE(plans[r].index[l].equal(plans[0].index[l]));
    const double n = static_cast<double>(sizes[l]), p = probs[l];
    const double got = static_cast<double>(plans[0].index[l].numel());
    EXPECT_LE(std::abs(got - n * p), 3.0 * std::sqrt(n * p * (1 - p)) + 1e-9)
        << "tensor " << l << ": " << got << " selected, p_l = " << p;
  }
  EXPECT_EQ(plans[0].index.back().numel(), 0);  // p_{L-1} = 0
  // Per coordinate: the sources form a permutation, and destination_j(c) = k iff source_k(c) = j.
  torch::Tensor sources = torch::stack({plans[0].source, plans[1].source, plans[2].source,
                                        plans[3].source});  // [rank k, c] = pi_c(k)
  torch::Tensor sorted = std::get<0>(sources.sort(0));
  EXPECT_TRUE(sorted.equal(torch::arange(world).unsqueeze(1).expand_as(sorted)));
  for (int64_t j = 0; j < world; ++j)
    EXPECT_TRUE(sources.gather(0, plans[j].destination.unsqueeze(0))
                    .squeeze(0)
                    .equal(torch::full_like(plans[j].destination, j)));
  // Another round, another selection.
  EXPECT_FALSE(wash_plan(7, 4, sizes, probs, world, 0).index[0].equal(plans[0].index[0]));
}

Config wash_config(std::vector<std::string> more) {
  std::vector<std::string> o = {"algorithm.name=\"wash\"", "algorithm.init=\"distinct\"", kNoStep};
  o.insert(o.end(), more.begin(), more.end());
  return tiny_config(o);
}

TEST(Wash, AShuffleOnlyPermutesEachCoordinatesValuesAcrossTheMembers) {
  const Config cfg = wash_config({"algorithm.p=0.5", kFloat64});
  DatasetSplits data = load_dataset(cfg.data, 0);
  Initial before;
  auto ranks = run_on_fake_world(cfg, 4, 1, data, before.options());
  torch::Tensor old =
      torch::stack({before.params[0], before.params[1], before.params[2], before.params[3]});
  torch::Tensor now = torch::stack(finals(ranks));
  // Each coordinate's values across the members: the same multiset, so the same mean.
  EXPECT_TRUE(std::get<0>(old.sort(0)).equal(std::get<0>(now.sort(0))));
  EXPECT_LT(max_diff(old.mean(0), now.mean(0)), 1e-7);
  // ... and they did move: about p/2 of the coordinates changed on each member.
  const double moved = now.ne(old).to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(moved, 0.05);
}

TEST(Wash, EachMemberTakesTheValueOfThePermutedMember) {
  const Config cfg = wash_config({"algorithm.p=0.5", kFloat64});
  DatasetSplits data = load_dataset(cfg.data, 0);
  Initial before;
  auto ranks = run_on_fake_world(cfg, 4, 1, data, before.options());
  std::vector<int64_t> sizes;
  for (auto& p : ranks[0].model->parameters()) sizes.push_back(p.numel());
  const auto* wash = dynamic_cast<const Wash*>(ranks[0].algorithm.get());
  ASSERT_NE(wash, nullptr);
  for (int64_t k = 0; k < 4; ++k) {
    const ShufflePlan plan =
        wash_plan(static_cast<uint64_t>(cfg.run.seed), 0, sizes, wash->probabilities(), 4, k);
    torch::Tensor expected = before.params[k].clone();
    int64_t offset = 0, at = 0;
    for (size_t l = 0; l < sizes.size(); ++l) {
      auto idx = plan.index[l].accessor<int64_t, 1>();
      for (int64_t i = 0; i < idx.size(0); ++i, ++at) {
        const int64_t c = offset + idx[i], from = plan.source[at].item<int64_t>();
        expected[c] = before.params[from][c];
      }
      offset += sizes[l];
    }
    EXPECT_TRUE(flat_params(ranks[k].model).equal(expected)) << "member " << k;
  }
}

TEST(Wash, WithoutShufflingEveryMemberTrainsAsASingleRunOnItsData) {
  // p = 0, every member on the whole stream from the same weights: each one is `single`.
  const Config wash = tiny_config({"algorithm.name=\"wash\"", "algorithm.p=0.0",
                                   "algorithm.init=\"shared\"", "optimizer.momentum=0.9"});
  const Config single = tiny_config({"algorithm.name=\"single\"", "optimizer.momentum=0.9"});
  DatasetSplits data = load_dataset(wash.data, 0);
  FakeRunOptions same_data;
  same_data.identical_data = true;
  auto members = run_on_fake_world(wash, 3, 6, data, same_data);
  auto alone = run_on_fake_world(single, 1, 6, data);
  for (int64_t k = 0; k < 3; ++k)
    EXPECT_TRUE(flat_params(members[k].model).equal(flat_params(alone[0].model))) << k;
  EXPECT_EQ(members[0].stats.bytes_sent, 0);
}

TEST(Wash, BytesPerShuffleAreTheSelectedShareOfTheModelThatLeaves) {
  // p̄ Ψ b (N-1)/N per shuffle and rank, p̄ the size-weighted mean of the p_l.
  const Config cfg = wash_config({"algorithm.p=0.2", "model.hidden=[256, 256]"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto ranks = run_on_fake_world(cfg, 4, 3, data);
  const auto* wash = dynamic_cast<const Wash*>(ranks[0].algorithm.get());
  double selected = 0.0, psi = 0.0;
  const auto params = ranks[0].model->parameters();
  for (size_t l = 0; l < params.size(); ++l) {
    selected += wash->probabilities()[l] * static_cast<double>(params[l].numel());
    psi += static_cast<double>(params[l].numel());
  }
  const double expected = 3 * selected * 4.0 * 3.0 / 4.0;  // 3 shuffles, float32
  for (int64_t r = 0; r < 4; ++r) {
    const double sent = static_cast<double>(ranks[r].stats.bytes_sent);
    EXPECT_NEAR(sent / expected, 1.0, 0.05) << "rank " << r << " of Ψ = " << psi;
  }
}

TEST(Wash, TheOptimizerStateMovesWithItsWeightOnlyWhenAsked) {
  // One step at lr 1e-30 from distinct weights: each member's momentum is its own gradient at
  // its own weights. Shuffled with its weight, every (weight, momentum) pair stays a pair of
  // one member; left in place, some weights meet another member's momentum.
  auto pairs = [](bool shuffle_state) {
    const Config cfg = wash_config({"algorithm.p=0.5", "optimizer.momentum=0.9", kFloat64,
                                    shuffle_state ? "algorithm.shuffle_optimizer_state=true"
                                                  : "algorithm.shuffle_optimizer_state=false"});
    const Config still = wash_config({"algorithm.p=0.0", "optimizer.momentum=0.9", kFloat64});
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto moved = run_on_fake_world(cfg, 4, 1, data);
    auto kept = run_on_fake_world(still, 4, 1, data);
    // Per member: weight -> momentum of the unshuffled run (weights are distinct per member).
    int64_t mismatched = 0, checked = 0;
    auto momentum_of = [](RankState& s) {
      std::vector<torch::Tensor> m;
      auto* wash = dynamic_cast<Wash*>(s.algorithm.get());
      Archive a;
      wash->save(a);
      for (auto& [name, p] : s.model->named_params())
        m.push_back(a.tensor("optimizer." + name + ".momentum_buffer").reshape({-1}));
      return torch::cat(m);
    };
    std::vector<torch::Tensor> kw, km;
    for (auto& s : kept) {
      kw.push_back(flat_params(s.model));
      km.push_back(momentum_of(s));
    }
    for (auto& s : moved) {
      torch::Tensor w = flat_params(s.model), m = momentum_of(s);
      for (int64_t c = 0; c < w.numel(); c += 7) {
        for (int64_t j = 0; j < 4; ++j) {
          if (kw[j][c].item<double>() != w[c].item<double>()) continue;
          ++checked;
          mismatched += km[j][c].item<double>() != m[c].item<double>();
        }
      }
    }
    EXPECT_GT(checked, 100);
    return mismatched;
  };
  EXPECT_EQ(pairs(true), 0);
  EXPECT_GT(pairs(false), 0);
}

TEST(Wash, AtTheDefaultPItSendsAtLeastTenTimesFewerBytesThanPapaGradual) {
  // The spec's defaults: WASH p = 0.01 every step; PAPA-gradual all-reduces every 10 steps.
  const Config wash = tiny_config({"algorithm.name=\"wash\"", "model.hidden=[256, 256]"});
  const Config papa = tiny_config({"algorithm.name=\"papa\"", "model.hidden=[256, 256]"});
  DatasetSplits data = load_dataset(wash.data, 0);
  auto w = run_on_fake_world(wash, 4, 20, data);
  auto p = run_on_fake_world(papa, 4, 20, data);
  for (int64_t r = 0; r < 4; ++r) {
    EXPECT_GT(w[r].stats.bytes_sent, 0) << r;
    EXPECT_GE(p[r].stats.bytes_sent, 10 * w[r].stats.bytes_sent) << r;
  }
}

// ---- PAPA ----

Config papa_config(const std::string& variant, std::vector<std::string> more = {}) {
  std::vector<std::string> o = {"algorithm.name=\"papa\"",
                                "algorithm.variant=\"" + variant + "\"",
                                "algorithm.ema_every=1",
                                "algorithm.every_steps=1",
                                "algorithm.init=\"distinct\"",
                                kNoStep,
                                kFloat64};
  o.insert(o.end(), more.begin(), more.end());
  return tiny_config(o);
}

TEST(Papa, EveryVariantKeepsThePopulationMean) {
  for (const char* variant : {"gradual", "all", "pair"}) {
    const Config cfg = papa_config(variant, {"algorithm.alpha=0.7"});
    DatasetSplits data = load_dataset(cfg.data, 0);
    Initial before;
    auto ranks = run_on_fake_world(cfg, 4, 1, data, before.options());
    torch::Tensor old_mean =
        (before.params[0] + before.params[1] + before.params[2] + before.params[3]) / 4.0;
    EXPECT_LT(max_diff(mean_params(ranks), old_mean), 1e-7) << variant;
    EXPECT_GT(max_diff(flat_params(ranks[0].model), before.params[0]), 1e-3) << variant;
  }
}

TEST(Papa, GradualShrinksEachMembersDistanceToTheMeanByAlpha) {
  const Config cfg = papa_config("gradual", {"algorithm.alpha=0.7"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  Initial before;
  auto ranks = run_on_fake_world(cfg, 4, 1, data, before.options());
  torch::Tensor mean =
      (before.params[0] + before.params[1] + before.params[2] + before.params[3]) / 4.0;
  for (int64_t k = 0; k < 4; ++k) {
    const double was = (before.params[k] - mean).norm().item<double>();
    const double now = (flat_params(ranks[k].model) - mean).norm().item<double>();
    EXPECT_NEAR(now / was, 0.7, 1e-9) << k;
  }
}

TEST(Papa, AllMakesTheMembersOneAndPairsMakeEachTheMeanOfTwoOthers) {
  {
    const Config cfg = papa_config("all");
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, 4, 1, data);
    for (int64_t k = 1; k < 4; ++k)
      EXPECT_TRUE(flat_params(ranks[k].model).equal(flat_params(ranks[0].model))) << k;
  }
  const Config cfg = papa_config("pair");
  DatasetSplits data = load_dataset(cfg.data, 0);
  Initial before;
  auto ranks = run_on_fake_world(cfg, 4, 1, data, before.options());
  std::vector<int64_t> uses(4, 0);
  for (int64_t k = 0; k < 4; ++k) {
    torch::Tensor now = flat_params(ranks[k].model);
    int64_t found = 0;
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = i + 1; j < 4; ++j)
        if (max_diff(now, (before.params[i] + before.params[j]) / 2.0) < 1e-12) {
          ++found;
          ++uses[i];
          ++uses[j];
        }
    EXPECT_EQ(found, 1) << "member " << k << " is not the mean of two distinct members";
  }
  EXPECT_EQ(uses, std::vector<int64_t>(4, 2));  // hence the mean is kept
  // The pairs of a round are what papa_pairs() says, and another round draws others.
  EXPECT_NE(papa_pairs(1, 0, 8), papa_pairs(1, 1, 8));
}

TEST(Papa, AllAndPairAverageOnlyAtTheirEpochs) {
  // synthetic_train = 1024, batch 32, 4 ranks: 8 steps an epoch; every 1 epoch.
  const Config cfg = tiny_config({"algorithm.name=\"papa\"", "algorithm.variant=\"all\"",
                                  "algorithm.every_epochs=1", "data.batch_size=32",
                                  "algorithm.init=\"distinct\""});
  DatasetSplits data = load_dataset(cfg.data, 0);
  std::vector<std::vector<double>> spread(4);
  FakeRunOptions o;
  o.after_step = [&](int64_t r, int64_t t, RankState& s) {
    spread[r].push_back(flat_params(s.model).abs().sum().item<double>());
  };
  auto ranks = run_on_fake_world(cfg, 4, 10, data, o);
  // After the 8th step (t = 7) the members are one; not before.
  for (int64_t t = 0; t < 10; ++t) {
    const bool equal = spread[0][t] == spread[1][t] && spread[1][t] == spread[2][t] &&
                       spread[2][t] == spread[3][t];
    EXPECT_EQ(equal, t == 7) << "step " << t;
  }
}

// ---- independent ensembles and the population's start ----

TEST(Ensemble, MembersStartApartUnlessSharedAndNeverCommunicate) {
  for (const char* init : {"distinct", "shared"}) {
    const Config cfg = tiny_config(
        {"algorithm.name=\"ensemble\"", std::string("algorithm.init=\"") + init + "\""});
    DatasetSplits data = load_dataset(cfg.data, 0);
    Initial before;
    auto ranks = run_on_fake_world(cfg, 3, 4, data, before.options());
    const bool same = before.params[0].equal(before.params[1]);
    EXPECT_EQ(same, std::string(init) == "shared") << init;
    for (auto& s : ranks) EXPECT_EQ(s.stats.bytes_sent, 0) << init;
  }
}

TEST(Population, MembersTakeTheirRecipesInTurn) {
  Population::Options o;
  o.mixup = {0.0, 0.5, 1.0};
  o.label_smoothing = {0.0, 0.1};
  const std::vector<std::pair<double, double>> expected = {
      {0.0, 0.0}, {0.5, 0.0}, {1.0, 0.0}, {0.0, 0.1}, {0.5, 0.1}, {1.0, 0.1}, {0.0, 0.0}};
  for (size_t r = 0; r < expected.size(); ++r) {
    const LossRecipe recipe = member_recipe(o, static_cast<int64_t>(r));
    EXPECT_EQ(recipe.mixup, expected[r].first) << r;
    EXPECT_EQ(recipe.label_smoothing, expected[r].second) << r;
  }
}

TEST(Population, AMemberStepsOnTheGradientOfItsOwnRecipe) {
  // Two members from the same weights on the same batch: member 0 plain, member 1 with label
  // smoothing 0.2. One SGD step of lr 1 moves each by its own loss's gradient, computed here.
  const Config cfg =
      tiny_config({"algorithm.name=\"ensemble\"", "algorithm.init=\"shared\"",
                   "algorithm.label_smoothing=[0.0, 0.2]", "model.dtype=\"float64\"",
                   "optimizer.lr=1.0", "optimizer.momentum=0.0", "optimizer.weight_decay=0.0"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  FakeRunOptions same_data;
  same_data.identical_data = true;
  auto ranks = run_on_fake_world(cfg, 2, 1, data, same_data);
  for (int64_t r = 0; r < 2; ++r) {
    torch::manual_seed(static_cast<uint64_t>(cfg.run.seed));
    StagedModel model =
        make_model(cfg.model, ModelInput{data.train.example_shape(), data.train.num_classes});
    const torch::Tensor x0 = flat_params(model);
    MicroBatchSource source(data.train, cfg.data.batch_size, 0, 1,
                            static_cast<uint64_t>(cfg.run.seed),
                            TransformOptions{cfg.data.normalize, cfg.data.augment});
    MicroBatch mb = source.next();
    const torch::Tensor logp = torch::log_softmax(model->forward(mb.inputs), 1);
    const double eps = r == 0 ? 0.0 : 0.2;
    const torch::Tensor loss =
        -(1 - eps) * logp.gather(1, mb.targets.unsqueeze(1)).mean() - eps * logp.mean();
    loss.backward();
    std::vector<torch::Tensor> g;
    for (auto& p : model->parameters()) g.push_back(p.grad().reshape({-1}));
    EXPECT_LT(max_diff(flat_params(ranks[r].model), x0 - torch::cat(g)), 1e-10) << r;
  }
  EXPECT_GT(max_diff(flat_params(ranks[0].model), flat_params(ranks[1].model)), 1e-6);
}

}  // namespace
}  // namespace desync
