#include "desync/train/budget.h"

#include <gtest/gtest.h>

namespace desync {
namespace {

Config config(std::vector<std::string> overrides) {
  std::vector<std::string> base = {"data.dataset=\"synthetic\"", "data.batch_size=16",
                                   "algorithm.accumulation=2"};
  base.insert(base.end(), overrides.begin(), overrides.end());
  return parse_config("", "test.toml", base);
}

const AlgorithmTraits kSharded{};
const AlgorithmTraits kVarying{.accumulations_per_step = 2, .consumption_varies = true};

TEST(Budget, StepsCountStepsAndNoData) {
  Budget b = make_budget(config({"run.steps=7"}), kSharded, 4, 100);
  EXPECT_EQ(b.steps, 7);
  EXPECT_FALSE(b.counts_data());
  EXPECT_EQ(b.left(0), -1);
  EXPECT_FALSE(b.spent(6, 1000000));
  EXPECT_TRUE(b.spent(7, 0));
}

TEST(Budget, AnEpochIsEveryReadersPassOverItsShard) {
  // 4 readers with 16 micro-batches each per epoch; a step takes 2 per reader.
  Budget b = make_budget(config({"run.epochs=1.5"}), kSharded, 4, 16);
  EXPECT_EQ(b.micro_batches, 96);
  EXPECT_EQ(b.per_step, 8);
  EXPECT_EQ(b.steps, 12);
  // The first rank reading the whole stream: one reader, 64 micro-batches an epoch.
  Budget p =
      make_budget(config({"run.epochs=1"}), {.data = AlgorithmTraits::Data::kFirstRank}, 1, 64);
  EXPECT_EQ(p.micro_batches, 64);
  EXPECT_EQ(p.steps, 32);
}

TEST(Budget, SamplesBecomeWholeStepsThatFitInTheBudget) {
  Budget b = make_budget(config({"run.samples=1000"}), kSharded, 4, 16);
  EXPECT_EQ(b.micro_batches, 62);  // 1000 / 16
  EXPECT_EQ(b.steps, 7);           // 7 steps of 8 = 56 <= 62 < 64
  EXPECT_TRUE(b.spent(7, 0));
}

TEST(Budget, TokensCountSeqLenPerExample) {
  Config c = config({"data.dataset=\"text\"", "data.seq_len=32", "run.tokens=51200"});
  Budget b = make_budget(c, kSharded, 2, 10);
  EXPECT_EQ(b.micro_batches, 100);  // 51200 / 32 tokens per example / 16 per micro-batch
  EXPECT_EQ(b.steps, 25);           // 4 a step (2 per reader)
}

TEST(Budget, VaryingConsumptionStopsOnDataNotSteps) {
  Budget b = make_budget(config({"run.samples=1600"}), kVarying, 4, 16);
  EXPECT_EQ(b.micro_batches, 100);
  EXPECT_EQ(b.per_step, 16);  // at least 2 x accumulation per reader
  EXPECT_EQ(b.steps, 6);      // the schedule's estimate
  EXPECT_FALSE(b.spent(50, 99));
  EXPECT_TRUE(b.spent(3, 100));
  EXPECT_EQ(b.left(90), 10);
  EXPECT_EQ(b.left(120), 0);
  EXPECT_DOUBLE_EQ(b.fraction(3, 25), 0.25);
}

}  // namespace
}  // namespace desync
