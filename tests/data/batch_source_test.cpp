// Tests of MicroBatchSource (sharding, determinism, resumption, augmentation, normalisation),
// take_range and mix64.
#include "desync/data/batch_source.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/dataset.h"

namespace desync {
namespace {

double population_std(const torch::Tensor& x) {
  return (x - x.mean()).pow(2).mean().sqrt().item<double>();
}

// `n` random 3x8x8 images whose target is their own index, so a batch names its examples.
Dataset image_dataset(int64_t n, int64_t seed = 0) {
  torch::manual_seed(seed);
  Dataset d;
  d.name = "images/train";
  d.kind = DataKind::kImage;
  d.inputs = torch::randint(0, 256, {n, 3, 8, 8}, torch::kLong).to(torch::kUInt8);
  d.targets = torch::arange(n, torch::kLong);
  d.num_classes = n;
  // Statistics of inputs/255, computed here independently of the readers.
  const torch::Tensor x = d.inputs.to(torch::kDouble) / 255.0;
  for (int c = 0; c < 3; ++c) {
    d.mean.push_back(x.select(1, c).mean().item<double>());
    d.stddev.push_back(population_std(x.select(1, c)));
  }
  return d;
}

std::vector<int64_t> ids(const MicroBatch& b) {
  const torch::Tensor t = b.targets.contiguous();
  return {t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()};
}

TEST(Mix64Test, MatchesSplitMix64Reference) {
  // The first two outputs of the reference SplitMix64 generator seeded with 0.
  EXPECT_EQ(mix64(0), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(mix64(0x9e3779b97f4a7c15ULL), 0x6e789e6aa1b965f4ULL);
}

TEST(BatchSourceTest, EpochVisitsEachExampleOnceAndDropsTheRemainder) {
  const Dataset d = image_dataset(103);
  MicroBatchSource source(d, 10, 0, 1, 1, {});
  EXPECT_EQ(source.batches_per_epoch(), 10);
  std::set<int64_t> seen;
  for (int i = 0; i < 10; ++i) {
    const MicroBatch b = source.next();
    EXPECT_EQ(b.epoch, 0);
    EXPECT_EQ(b.index, i);
    ASSERT_EQ(b.inputs.sizes(), (std::vector<int64_t>{10, 3, 8, 8}));
    EXPECT_EQ(b.inputs.scalar_type(), torch::kFloat);
    for (int64_t id : ids(b)) EXPECT_TRUE(seen.insert(id).second) << "repeated example " << id;
  }
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_EQ(source.position(), (StreamPosition{1, 0}));
}

TEST(BatchSourceTest, ShardsAreDisjointAndTogetherEqualOneRankWithTheGlobalBatch) {
  const Dataset d = image_dataset(97);
  for (int64_t world : {2, 3}) {
    const int64_t batch = 5;
    TransformOptions augment{true, true};
    MicroBatchSource single(d, batch * world, 0, 1, 42, augment);
    std::vector<MicroBatchSource> ranks;
    ranks.reserve(world);
    for (int64_t r = 0; r < world; ++r) ranks.emplace_back(d, batch, r, world, 42, augment);
    ASSERT_EQ(single.batches_per_epoch(), ranks[0].batches_per_epoch());
    // Run past an epoch boundary.
    const int64_t steps = single.batches_per_epoch() + 3;
    std::set<int64_t> epoch_ids;
    for (int64_t step = 0; step < steps; ++step) {
      const MicroBatch whole = single.next();
      if (whole.index == 0) epoch_ids.clear();
      std::vector<torch::Tensor> inputs, targets;
      for (auto& source : ranks) {
        const MicroBatch part = source.next();
        EXPECT_EQ(part.epoch, whole.epoch);
        EXPECT_EQ(part.index, whole.index);
        ASSERT_EQ(part.inputs.size(0), batch);
        for (int64_t id : ids(part)) {
          EXPECT_TRUE(epoch_ids.insert(id).second) << "world " << world << ": " << id;
        }
        inputs.push_back(part.inputs);
        targets.push_back(part.targets);
      }
      EXPECT_TRUE(torch::equal(torch::cat(targets), whole.targets)) << "world " << world;
      EXPECT_TRUE(torch::equal(torch::cat(inputs), whole.inputs)) << "world " << world;
    }
  }
}

TEST(BatchSourceTest, SameSeedSameStreamDifferentSeedDifferentStream) {
  const Dataset d = image_dataset(64);
  MicroBatchSource a(d, 8, 0, 1, 7, {true, true});
  MicroBatchSource b(d, 8, 0, 1, 7, {true, true});
  MicroBatchSource c(d, 8, 0, 1, 8, {true, true});
  bool any_difference = false;
  for (int i = 0; i < 12; ++i) {
    const MicroBatch x = a.next(), y = b.next(), z = c.next();
    EXPECT_TRUE(torch::equal(x.inputs, y.inputs));
    EXPECT_TRUE(torch::equal(x.targets, y.targets));
    any_difference = any_difference || !torch::equal(x.targets, z.targets);
  }
  EXPECT_TRUE(any_difference);
}

TEST(BatchSourceTest, SeekReproducesTheStreamIncludingAugmentation) {
  const Dataset d = image_dataset(50);
  const TransformOptions augment{true, true};
  MicroBatchSource first(d, 4, 1, 2, 3, augment);  // 6 batches per epoch
  for (int i = 0; i < 9; ++i) first.next();
  const StreamPosition saved = first.position();
  EXPECT_EQ(saved, (StreamPosition{1, 3}));
  std::vector<MicroBatch> expected;
  for (int i = 0; i < 8; ++i) expected.push_back(first.next());

  MicroBatchSource resumed(d, 4, 1, 2, 3, augment);
  resumed.next();  // a different position, to show seek() overrides it
  resumed.seek(saved);
  EXPECT_EQ(resumed.position(), saved);
  for (const MicroBatch& e : expected) {
    const MicroBatch b = resumed.next();
    EXPECT_EQ(b.epoch, e.epoch);
    EXPECT_EQ(b.index, e.index);
    EXPECT_TRUE(torch::equal(b.targets, e.targets));
    EXPECT_TRUE(torch::equal(b.inputs, e.inputs));
  }
  // Seeking to the end of an epoch is the start of the next one.
  resumed.seek({0, resumed.batches_per_epoch()});
  EXPECT_EQ(resumed.position(), (StreamPosition{1, 0}));
  EXPECT_THROW(resumed.seek({0, resumed.batches_per_epoch() + 1}), ConfigError);
  EXPECT_THROW(resumed.seek({-1, 0}), ConfigError);
}

TEST(BatchSourceTest, EpochRolloverReshuffles) {
  const Dataset d = image_dataset(40);
  MicroBatchSource source(d, 10, 0, 1, 5, {});
  std::vector<int64_t> epoch0, epoch1;
  for (int i = 0; i < 4; ++i) {
    for (int64_t id : ids(source.next())) epoch0.push_back(id);
  }
  EXPECT_EQ(source.position(), (StreamPosition{1, 0}));
  for (int i = 0; i < 4; ++i) {
    const MicroBatch b = source.next();
    EXPECT_EQ(b.epoch, 1);
    for (int64_t id : ids(b)) epoch1.push_back(id);
  }
  EXPECT_NE(epoch0, epoch1);
  EXPECT_EQ(std::set<int64_t>(epoch1.begin(), epoch1.end()).size(), 40u);
  // The shuffle is not the identity.
  std::vector<int64_t> identity(40);
  for (int i = 0; i < 40; ++i) identity[i] = i;
  EXPECT_NE(epoch0, identity);
}

TEST(BatchSourceTest, NormalisationGivesZeroMeanUnitStdOnTheTrainSplit) {
  const Dataset d = image_dataset(256);
  MicroBatchSource source(d, 32, 0, 1, 0, {true, false});
  std::vector<torch::Tensor> all;
  for (int i = 0; i < source.batches_per_epoch(); ++i) all.push_back(source.next().inputs);
  const torch::Tensor x = torch::cat(all).to(torch::kDouble);
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(x.select(1, c).mean().item<double>(), 0.0, 1e-5);
    EXPECT_NEAR(population_std(x.select(1, c)), 1.0, 1e-5);
  }
}

TEST(BatchSourceTest, WithoutNormalisationPixelsAreBytesOver255) {
  const Dataset d = image_dataset(20);
  MicroBatchSource source(d, 20, 0, 1, 0, {false, false});
  const MicroBatch b = source.next();
  const torch::Tensor expected = d.inputs.index_select(0, b.targets).to(torch::kFloat) / 255.0;
  EXPECT_TRUE(torch::allclose(b.inputs, expected));
}

// True when `out` is `in` zero-padded by 4, cropped at some offset, and possibly flipped.
bool is_crop_and_flip(const torch::Tensor& in, const torch::Tensor& out, bool* flipped) {
  const torch::Tensor padded = torch::constant_pad_nd(in, {4, 4, 4, 4}, 0);
  for (int flip = 0; flip < 2; ++flip) {
    for (int oy = 0; oy <= 8; ++oy) {
      for (int ox = 0; ox <= 8; ++ox) {
        torch::Tensor crop = padded.narrow(1, oy, 8).narrow(2, ox, 8);
        if (flip) crop = crop.flip({2});
        if (torch::equal(crop, out)) {
          *flipped = flip;
          return true;
        }
      }
    }
  }
  return false;
}

TEST(BatchSourceTest, AugmentationIsAPaddedRandomCropAndFlip) {
  const Dataset d = image_dataset(200);
  MicroBatchSource source(d, 200, 0, 1, 9, {false, true});
  const MicroBatch b = source.next();
  const torch::Tensor bytes = (b.inputs * 255.0).round().to(torch::kUInt8);
  int flips = 0, unchanged = 0;
  for (int64_t i = 0; i < 200; ++i) {
    const torch::Tensor original = d.inputs[b.targets[i].item<int64_t>()];
    bool flipped = false;
    ASSERT_TRUE(is_crop_and_flip(original, bytes[i], &flipped)) << "example " << i;
    flips += flipped;
    unchanged += torch::equal(original, bytes[i]);
  }
  // Flip probability 1/2; an unchanged image needs the centre crop and no flip (1/162).
  EXPECT_GT(flips, 60);
  EXPECT_LT(flips, 140);
  EXPECT_LT(unchanged, 10);
}

TEST(BatchSourceTest, FeaturesPassThroughUnchanged) {
  Dataset d;
  d.name = "features/train";
  d.kind = DataKind::kFeatures;
  d.inputs = torch::arange(30 * 4, torch::kFloat).reshape({30, 4});
  d.targets = torch::arange(30, torch::kLong);
  d.num_classes = 30;
  MicroBatchSource source(d, 6, 0, 1, 4, {true, true});
  const MicroBatch b = source.next();
  EXPECT_TRUE(torch::equal(b.inputs, d.inputs.index_select(0, b.targets)));
}

TEST(BatchSourceTest, BatchLargerThanTheDataIsAConfigError) {
  const Dataset d = image_dataset(30);
  try {
    MicroBatchSource source(d, 8, 0, 4, 0, {});
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("batch_size*workers = 32 exceeds the 30 training examples"),
              std::string::npos)
        << msg;
  }
  EXPECT_THROW(MicroBatchSource(d, 0, 0, 1, 0, {}), ConfigError);
  EXPECT_THROW(MicroBatchSource(d, 2, 2, 2, 0, {}), ConfigError);
}

TEST(BatchSourceTest, TakeRangeIsAContiguousUnshuffledSlice) {
  const Dataset d = image_dataset(30);
  const MicroBatch b = take_range(d, 10, 17, true);
  ASSERT_EQ(b.inputs.sizes(), (std::vector<int64_t>{7, 3, 8, 8}));
  EXPECT_TRUE(torch::equal(b.targets, torch::arange(10, 17, torch::kLong)));
  const torch::Tensor raw = d.inputs.narrow(0, 10, 7).to(torch::kDouble) / 255.0;
  for (int c = 0; c < 3; ++c) {
    const torch::Tensor expected = (raw.select(1, c) - d.mean[c]) / d.stddev[c];
    EXPECT_TRUE(torch::allclose(b.inputs.select(1, c).to(torch::kDouble), expected, 1e-5, 1e-5));
  }
  const MicroBatch plain = take_range(d, 0, 30, false);
  EXPECT_TRUE(torch::allclose(plain.inputs, d.inputs.to(torch::kFloat) / 255.0));
  EXPECT_EQ(take_range(d, 5, 5, true).inputs.size(0), 0);
  EXPECT_THROW(take_range(d, 20, 31, true), std::out_of_range);
}

}  // namespace
}  // namespace desync
