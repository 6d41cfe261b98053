// The losses population members can train on (algorithms/loss_recipe.h): label smoothing, and
// mixup's Beta draws, pairing and mixing.
#include "desync/algorithms/loss_recipe.h"

#include <gtest/gtest.h>

#include <set>

namespace desync {
namespace {

TEST(LossRecipe, LabelSmoothingMixesCrossEntropyWithTheMeanNegativeLogProbability) {
  torch::manual_seed(1);
  const torch::Tensor logits = torch::randn({16, 5}, torch::kFloat64);
  const torch::Tensor targets = torch::randint(0, 5, {16}, torch::kLong);
  const torch::Tensor logp = torch::log_softmax(logits, 1);
  const double eps = 0.1;
  const double nll = -logp.gather(1, targets.unsqueeze(1)).mean().item<double>();
  const double uniform = -logp.mean().item<double>();  // mean over examples and classes
  const MixedBatch batch{logits, targets, targets, 1.0};
  EXPECT_NEAR(recipe_loss(logits, batch, eps).item<double>(), (1 - eps) * nll + eps * uniform,
              1e-12);
  EXPECT_NEAR(recipe_loss(logits, batch, 0.0).item<double>(), nll, 1e-12);
}

TEST(LossRecipe, MixupBlendsEachExampleWithItsPartnerAndKeepsBothTargets) {
  torch::manual_seed(2);
  MicroBatch batch{torch::randn({12, 1, 4, 4}, torch::kFloat64),
                   torch::randint(0, 10, {12}, torch::kLong)};
  at::Generator gen = at::detail::createCPUGenerator(7);
  const MixedBatch mixed = mix(batch, 1.0, gen);
  ASSERT_GT(mixed.lambda, 0.0);
  ASSERT_LT(mixed.lambda, 1.0);
  const torch::Tensor x = batch.inputs.reshape({12, -1});
  std::set<int64_t> partners;
  for (int64_t i = 0; i < 12; ++i) {
    // The partner's image, recovered from the mix: (x~_i - lambda x_i) / (1 - lambda).
    const torch::Tensor partner =
        (mixed.inputs[i].reshape({-1}) - mixed.lambda * x[i]) / (1.0 - mixed.lambda);
    const torch::Tensor distance = (x - partner).abs().amax(1);
    const int64_t j = distance.argmin().item<int64_t>();
    EXPECT_LT(distance[j].item<double>(), 1e-9) << i;
    EXPECT_EQ(mixed.paired_targets[i].item<int64_t>(), batch.targets[j].item<int64_t>()) << i;
    EXPECT_EQ(mixed.targets[i].item<int64_t>(), batch.targets[i].item<int64_t>()) << i;
    partners.insert(j);
  }
  EXPECT_EQ(partners.size(), 12u);  // a permutation
  // No mixup: the batch itself.
  const MixedBatch plain = mix(batch, 0.0, gen);
  EXPECT_TRUE(plain.inputs.equal(batch.inputs));
  EXPECT_EQ(plain.lambda, 1.0);
}

TEST(LossRecipe, LambdaFollowsBetaAlphaAlpha) {
  at::Generator gen = at::detail::createCPUGenerator(3);
  for (double alpha : {0.5, 1.0, 4.0}) {
    const int n = 20000;
    double sum = 0, sum2 = 0;
    for (int k = 0; k < n; ++k) {
      const double l = sample_beta(alpha, gen);
      ASSERT_GE(l, 0.0);
      ASSERT_LE(l, 1.0);
      sum += l;
      sum2 += l * l;
    }
    const double mean = sum / n, var = sum2 / n - mean * mean;
    EXPECT_NEAR(mean, 0.5, 0.01) << alpha;
    EXPECT_NEAR(var, 1.0 / (4.0 * (2.0 * alpha + 1.0)), 0.004) << alpha;  // Beta(a, a)'s
  }
}

}  // namespace
}  // namespace desync
