// Tests of the CIFAR-10 binary reader on small generated batch files.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/dataset.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::TempDir;
using testing::write_file;

constexpr int kRecord = 3073;

// Byte `k` (0..3071) of the image of global record `r`: a pattern that differs per record.
uint8_t pixel(int r, int k) { return static_cast<uint8_t>((k * 7 + r * 31 + k / 1024 * 50) % 251); }

// `count` records starting at global record `first`; label = record % 10.
std::string records(int first, int count) {
  std::string out;
  for (int r = first; r < first + count; ++r) {
    out.push_back(static_cast<char>(r % 10));
    for (int k = 0; k < 3072; ++k) out.push_back(static_cast<char>(pixel(r, k)));
  }
  return out;
}

// Five training batches of 2 records each (records 0..9) and a test batch of 3 (100..102).
void write_cifar(const TempDir& dir) {
  for (int b = 1; b <= 5; ++b) {
    write_file(dir.file("data_batch_" + std::to_string(b) + ".bin"), records((b - 1) * 2, 2));
  }
  write_file(dir.file("test_batch.bin"), records(100, 3));
}

std::string error_of(const std::string& dir) {
  try {
    load_cifar10(dir);
  } catch (const DataError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a DataError";
  return "";
}

TEST(CifarTest, LoadsRecordsInFileOrderWithChannelMajorPixels) {
  TempDir dir;
  write_cifar(dir);
  const DatasetSplits s = load_cifar10(dir.path());
  ASSERT_EQ(s.train.inputs.sizes(), (std::vector<int64_t>{10, 3, 32, 32}));
  ASSERT_EQ(s.test.inputs.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_EQ(s.train.inputs.scalar_type(), torch::kUInt8);
  EXPECT_EQ(s.train.targets.scalar_type(), torch::kLong);
  EXPECT_EQ(s.train.kind, DataKind::kImage);
  EXPECT_EQ(s.train.num_classes, 10);
  EXPECT_EQ(s.train.example_shape(), (std::vector<int64_t>{3, 32, 32}));
  for (int r = 0; r < 10; ++r) EXPECT_EQ(s.train.targets[r].item<int64_t>(), r % 10);
  EXPECT_EQ(s.test.targets[2].item<int64_t>(), 102 % 10);
  const auto acc = s.train.inputs.accessor<uint8_t, 4>();
  for (int r : {0, 3, 9}) {
    for (int c = 0; c < 3; ++c) {
      for (int y : {0, 17, 31}) {
        for (int x : {0, 5, 31}) {
          EXPECT_EQ(acc[r][c][y][x], pixel(r, c * 1024 + y * 32 + x)) << r << c << y << x;
        }
      }
    }
  }
  EXPECT_EQ(s.test.inputs[1][2][3][4].item<int>(), pixel(101, 2 * 1024 + 3 * 32 + 4));
}

TEST(CifarTest, StatisticsArePerChannelOverTheTrainingSplit) {
  TempDir dir;
  write_cifar(dir);
  const DatasetSplits s = load_cifar10(dir.path());
  ASSERT_EQ(s.train.mean.size(), 3u);
  for (int c = 0; c < 3; ++c) {
    double sum = 0, sum_sq = 0;
    for (int r = 0; r < 10; ++r) {
      for (int k = c * 1024; k < (c + 1) * 1024; ++k) {
        const double v = pixel(r, k) / 255.0;
        sum += v;
        sum_sq += v * v;
      }
    }
    const double mean = sum / 10240, stddev = std::sqrt(sum_sq / 10240 - mean * mean);
    EXPECT_NEAR(s.train.mean[c], mean, 1e-12);
    EXPECT_NEAR(s.train.stddev[c], stddev, 1e-12);
  }
  EXPECT_EQ(s.test.mean, s.train.mean);
  EXPECT_EQ(s.test.stddev, s.train.stddev);
}

TEST(CifarTest, FindsTheArchiveFolder) {
  TempDir dir;
  std::filesystem::create_directory(dir.file("cifar-10-batches-bin"));
  for (int b = 1; b <= 5; ++b) {
    write_file(dir.file("cifar-10-batches-bin/data_batch_" + std::to_string(b) + ".bin"),
               records(0, 1));
  }
  write_file(dir.file("cifar-10-batches-bin/test_batch.bin"), records(0, 1));
  EXPECT_EQ(load_cifar10(dir.path()).train.size(), 5);
}

TEST(CifarTest, RejectsSizeThatIsNotWholeRecords) {
  TempDir dir;
  write_cifar(dir);
  write_file(dir.file("data_batch_3.bin"), records(0, 2) + "xyz");
  const std::string msg = error_of(dir.path());
  EXPECT_NE(msg.find("data_batch_3.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(2 * kRecord + 3)), std::string::npos) << msg;
  EXPECT_NE(msg.find("3073"), std::string::npos) << msg;
}

TEST(CifarTest, RejectsEmptyFile) {
  TempDir dir;
  write_cifar(dir);
  write_file(dir.file("test_batch.bin"), "");
  EXPECT_NE(error_of(dir.path()).find("test_batch.bin"), std::string::npos);
}

TEST(CifarTest, RejectsLabelOutOfRange) {
  TempDir dir;
  write_cifar(dir);
  std::string bad = records(0, 2);
  bad[kRecord] = 12;  // label of the second record
  write_file(dir.file("data_batch_5.bin"), bad);
  const std::string msg = error_of(dir.path());
  EXPECT_NE(msg.find("data_batch_5.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("record 1 has label 12"), std::string::npos) << msg;
}

TEST(CifarTest, MissingBatchIsNamed) {
  TempDir dir;
  write_cifar(dir);
  std::filesystem::remove(dir.file("data_batch_4.bin"));
  EXPECT_NE(error_of(dir.path()).find("data_batch_4.bin"), std::string::npos);
}

}  // namespace
}  // namespace desync
