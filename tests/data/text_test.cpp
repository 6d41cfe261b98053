// Tests of the byte-level text dataset and its micro-batches.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/batch_source.h"
#include "desync/data/dataset.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::TempDir;
using testing::write_file;

std::string text_of(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 37 + 11) % 256);
  return s;
}

TEST(TextTest, SplitsTailAndCutsOverlappingWindows) {
  TempDir dir;
  const std::string text = text_of(100);
  write_file(dir.file("corpus.txt"), text);
  // 20 bytes of test tail, 80 of training; windows of 9 bytes at stride 8.
  const DatasetSplits s = load_text(dir.file("corpus.txt"), 8, 0.2);
  EXPECT_EQ(s.train.kind, DataKind::kText);
  EXPECT_EQ(s.train.num_classes, 256);
  EXPECT_FALSE(s.train.targets.defined());
  ASSERT_EQ(s.train.inputs.sizes(), (std::vector<int64_t>{(80 - 1) / 8, 9}));
  ASSERT_EQ(s.test.inputs.sizes(), (std::vector<int64_t>{(20 - 1) / 8, 9}));
  EXPECT_EQ(s.train.example_shape(), (std::vector<int64_t>{8}));
  const auto train = s.train.inputs.accessor<uint8_t, 2>();
  for (int w = 0; w < 9; ++w)
    for (int k = 0; k < 9; ++k) EXPECT_EQ(train[w][k], static_cast<uint8_t>(text[w * 8 + k]));
  const auto test = s.test.inputs.accessor<uint8_t, 2>();
  for (int w = 0; w < 2; ++w)
    for (int k = 0; k < 9; ++k) EXPECT_EQ(test[w][k], static_cast<uint8_t>(text[80 + w * 8 + k]));
}

TEST(TextTest, TooSmallFileIsRejected) {
  TempDir dir;
  write_file(dir.file("tiny.txt"), text_of(30));
  // 30 bytes at fraction 0.2: a 6-byte test split cannot hold one 9-byte window.
  try {
    load_text(dir.file("tiny.txt"), 8, 0.2);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir.file("tiny.txt")), std::string::npos) << msg;
    EXPECT_NE(msg.find("too small"), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(load_text(dir.file("tiny.txt"), 2, 0.2));
}

TEST(TextTest, BadArgumentsAreConfigErrors) {
  TempDir dir;
  write_file(dir.file("c.txt"), text_of(100));
  EXPECT_THROW(load_text(dir.file("c.txt"), 0, 0.1), ConfigError);
  EXPECT_THROW(load_text(dir.file("c.txt"), 4, 1.0), ConfigError);
  EXPECT_THROW(load_text(dir.file("c.txt"), 4, 0.0), ConfigError);
  EXPECT_THROW(load_text(dir.file("absent.txt"), 4, 0.1), DataError);
}

TEST(TextTest, MicroBatchesAreNextBytePredictionPairs) {
  TempDir dir;
  const std::string text = text_of(1000);
  write_file(dir.file("corpus.txt"), text);
  const DatasetSplits s = load_text(dir.file("corpus.txt"), 16, 0.1);
  MicroBatchSource source(s.train, 4, 0, 1, 7, {});
  const MicroBatch b = source.next();
  EXPECT_EQ(b.inputs.scalar_type(), torch::kLong);
  EXPECT_EQ(b.targets.scalar_type(), torch::kLong);
  ASSERT_EQ(b.inputs.sizes(), (std::vector<int64_t>{4, 16}));
  ASSERT_EQ(b.targets.sizes(), (std::vector<int64_t>{4, 16}));
  EXPECT_TRUE(torch::equal(b.targets.narrow(1, 0, 15), b.inputs.narrow(1, 1, 15)));
  // Each row is a window of the file: its position is a multiple of 16.
  for (int r = 0; r < 4; ++r) {
    const int first = static_cast<int>(b.inputs[r][0].item<int64_t>());
    bool found = false;
    for (int start = 0; start + 17 <= 900 && !found; start += 16) {
      if (static_cast<uint8_t>(text[start]) != first) continue;
      found = true;
      for (int k = 0; k < 16; ++k) {
        EXPECT_EQ(b.inputs[r][k].item<int64_t>(), static_cast<uint8_t>(text[start + k]));
        EXPECT_EQ(b.targets[r][k].item<int64_t>(), static_cast<uint8_t>(text[start + k + 1]));
      }
    }
    EXPECT_TRUE(found) << "row " << r;
  }
  const MicroBatch eval = take_range(s.test, 0, s.test.size(), true);
  ASSERT_EQ(eval.inputs.sizes(), (std::vector<int64_t>{(100 - 1) / 16, 16}));
  EXPECT_EQ(eval.inputs[0][0].item<int64_t>(), static_cast<uint8_t>(text[900]));
  EXPECT_EQ(eval.targets[0][15].item<int64_t>(), static_cast<uint8_t>(text[916]));
}

}  // namespace
}  // namespace desync
