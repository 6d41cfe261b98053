// Elastic restart, the stream: elastic_stream_position() continues the epoch right after the
// examples the old world consumed, so that the old and new worlds together read every example
// of the epoch once; a prefix that is not whole new global batches is refused in one line.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "desync/core/error.h"
#include "desync/data/batch_source.h"
#include "desync/train/trainer_state.h"

namespace desync {
namespace {

// `n` examples whose target is their own index.
Dataset ids_dataset(int64_t n) {
  Dataset d;
  d.name = "ids";
  d.kind = DataKind::kFeatures;
  d.inputs = torch::zeros({n, 1});
  d.targets = torch::arange(n, torch::kLong);
  d.num_classes = n;
  return d;
}

void read_into(MicroBatchSource& s, std::vector<int>& count) {
  const torch::Tensor t = s.next().targets.contiguous();
  for (int64_t i = 0; i < t.numel(); ++i) ++count[t.data_ptr<int64_t>()[i]];
}

// `old_world` ranks read `old_batches` batches of epoch 0, then `new_world` ranks continue from
// elastic_stream_position() to the end of the epoch.
void expect_every_example_once(int64_t old_world, int64_t old_batches, int64_t new_world) {
  const int64_t n = 203, batch = 5;
  const Dataset d = ids_dataset(n);
  std::vector<int> count(n, 0);
  std::vector<StreamPosition> old;
  for (int64_t r = 0; r < old_world; ++r) {
    MicroBatchSource s(d, batch, r, old_world, 7, {});
    for (int64_t i = 0; i < old_batches; ++i) read_into(s, count);
    old.push_back(s.position());
  }
  const StreamPosition at = elastic_stream_position(old, batch, old_world, new_world);
  std::vector<MicroBatchSource> ranks;
  ranks.reserve(static_cast<size_t>(new_world));
  for (int64_t r = 0; r < new_world; ++r) {
    ranks.emplace_back(d, batch, r, new_world, 7, TransformOptions{});
    ranks.back().seek(at);
  }
  while (ranks[0].position().epoch == 0)
    for (MicroBatchSource& s : ranks) read_into(s, count);
  const int64_t global = batch * new_world;  // the new world's epoch: whole global batches
  int64_t read = 0;
  for (int64_t id = 0; id < n; ++id) {
    EXPECT_LE(count[id], 1) << "example " << id << " read twice";
    read += count[id];
  }
  EXPECT_EQ(read, n / global * global) << old_world << " -> " << new_world;
}

TEST(ElasticStream, OldAndNewWorldsReadEveryExampleOfTheEpochOnce) {
  expect_every_example_once(4, 3, 2);  // 60 examples = 6 batches of 2 x 5
  expect_every_example_once(2, 4, 4);  // 40 = 2 batches of 4 x 5
  expect_every_example_once(3, 4, 2);  // 60 = 6 batches of 2 x 5
  expect_every_example_once(4, 0, 3);  // nothing consumed yet
}

TEST(ElasticStream, TheFurthestOldRankCounts) {
  // Ranks that read unequal amounts (ACCO): none of what the furthest one read is read again.
  EXPECT_EQ(elastic_stream_position({{1, 4}, {1, 6}, {0, 9}}, 5, 3, 2), (StreamPosition{1, 9}));
  EXPECT_EQ(elastic_stream_position({{2, 0}, {2, 0}}, 8, 2, 1), (StreamPosition{2, 0}));
}

TEST(ElasticStream, APrefixThatIsNotWholeNewBatchesIsRefused) {
  try {
    elastic_stream_position({{0, 3}, {0, 3}}, 5, 2, 4);  // 30 examples; batches of 20
    FAIL() << "accepted";
  } catch (const CheckpointError& e) {
    EXPECT_STREQ(e.what(),
                 "--resume: the 30 examples of epoch 0 that the 2-worker checkpoint consumed are "
                 "not a whole number of global batches of 4 x 5; resume on 2 workers, or from a "
                 "checkpoint whose step makes them one");
  }
}

}  // namespace
}  // namespace desync
