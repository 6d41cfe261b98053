// Tests of the IDX reader: raw and gzip files, header validation, split assembly, and the real
// Fashion-MNIST files when they are installed.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

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

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// An IDX file of unsigned bytes with the given dimensions and payload.
std::string idx_bytes(const std::vector<uint32_t>& dims, const std::string& payload) {
  std::string out = be32(0x00000800u | static_cast<uint32_t>(dims.size()));
  for (uint32_t d : dims) out += be32(d);
  return out + payload;
}

std::string pattern(size_t n, int mul = 7, int add = 3) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * mul + add) % 256);
  return s;
}

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

template <typename Fn>
std::string data_error_message(Fn&& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a DataError";
  return "";
}

TEST(IdxTest, ReadsRawImagesWithDeclaredShape) {
  TempDir dir;
  const std::string payload = pattern(3 * 2 * 4);
  write_file(dir.file("img"), idx_bytes({3, 2, 4}, payload));
  const torch::Tensor t = read_idx_file(dir.file("img"));
  EXPECT_EQ(t.scalar_type(), torch::kUInt8);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 2, 4}));
  for (int i = 0; i < 3; ++i)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 4; ++x)
        EXPECT_EQ(t[i][y][x].item<int>(), static_cast<uint8_t>(payload[i * 8 + y * 4 + x]));
}

TEST(IdxTest, GzipAndRawGiveTheSameTensor) {
  TempDir dir;
  const std::string bytes = idx_bytes({5}, pattern(5, 1, 0));
  write_file(dir.file("raw"), bytes);
  write_gz(dir.file("packed.gz"), bytes);
  const torch::Tensor raw = read_idx_file(dir.file("raw"));
  const torch::Tensor gz = read_idx_file(dir.file("packed.gz"));
  EXPECT_TRUE(torch::equal(raw, gz));
  EXPECT_EQ(gz[4].item<int>(), 4);
}

TEST(IdxTest, TruncatedFileNamesFileAndSizes) {
  TempDir dir;
  // Declares 3*2*2 = 12 payload bytes after a 16-byte header; holds 10.
  write_file(dir.file("short"), idx_bytes({3, 2, 2}, pattern(10)));
  const std::string msg = data_error_message([&] { read_idx_file(dir.file("short")); });
  EXPECT_NE(msg.find(dir.file("short")), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 28 bytes, found 26"), std::string::npos) << msg;
}

TEST(IdxTest, TruncatedGzipIsRejected) {
  TempDir dir;
  write_gz(dir.file("short.gz"), idx_bytes({4}, pattern(3)));
  const std::string msg = data_error_message([&] { read_idx_file(dir.file("short.gz")); });
  EXPECT_NE(msg.find("expected 12 bytes, found 11"), std::string::npos) << msg;
}

TEST(IdxTest, TrailingDataIsRejected) {
  TempDir dir;
  write_file(dir.file("long"), idx_bytes({4}, pattern(6)));
  const std::string msg = data_error_message([&] { read_idx_file(dir.file("long")); });
  EXPECT_NE(msg.find("expected 12 bytes, found 14"), std::string::npos) << msg;
}

TEST(IdxTest, WrongMagicIsRejected) {
  TempDir dir;
  write_file(dir.file("bad"), be32(0x00000903) + be32(1) + be32(1) + be32(1) + "x");
  const std::string msg = data_error_message([&] { read_idx_file(dir.file("bad")); });
  EXPECT_NE(msg.find("magic 0x00000903"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir.file("bad")), std::string::npos) << msg;
}

TEST(IdxTest, TruncatedHeaderIsRejected) {
  TempDir dir;
  write_file(dir.file("hdr"), be32(0x00000803) + be32(2));
  const std::string msg = data_error_message([&] { read_idx_file(dir.file("hdr")); });
  EXPECT_NE(msg.find("expected at least 16 bytes, found 8"), std::string::npos) << msg;
}

// Found by fuzz/idx_fuzz.cpp: a zero dimension kept the declared size at 0, so the size guard
// never saw the huge dimensions after it, and a size at the bound times one more dimension
// overflowed 64 bits; torch::empty() then failed with an internal error.
TEST(IdxTest, ZeroDimensionDoesNotHideImplausibleOnes) {
  testing::TempDir dir;
  write_file(dir.file("zero"), idx_bytes({0, 20, 0xfffffaffu, 0xffffff00u}, ""));
  EXPECT_NE(data_error_message([&] { read_idx_file(dir.file("zero")); }).find("implausible size"),
            std::string::npos);
  // 2^16 * 2^24 reaches the bound exactly; the next dimension would overflow 64 bits.
  write_file(dir.file("wrap"), idx_bytes({1u << 16, 1u << 24, 0xff000000u, 0}, ""));
  EXPECT_NE(data_error_message([&] { read_idx_file(dir.file("wrap")); }).find("implausible size"),
            std::string::npos);
  write_file(dir.file("empty"), idx_bytes({0, 28, 28}, ""));  // a plausible empty file reads
  EXPECT_EQ(read_idx_file(dir.file("empty")).sizes(), torch::IntArrayRef({0, 28, 28}));
}

TEST(IdxTest, MissingFileIsDataError) {
  TempDir dir;
  EXPECT_THROW(read_idx_file(dir.file("absent")), DataError);
}

// Writes a small IDX dataset: `train` and `test` examples of 3x4 images. Training files raw,
// test files gzip, to exercise both lookups.
struct SmallIdx {
  TempDir dir;
  std::string train_images = pattern(6 * 12, 13, 5), test_images = pattern(2 * 12, 3, 1);
  std::string train_labels = std::string("\x00\x01\x09\x02\x03\x04", 6);
  std::string test_labels = std::string("\x07\x08", 2);

  void write() {
    write_file(dir.file("train-images-idx3-ubyte"), idx_bytes({6, 3, 4}, train_images));
    write_file(dir.file("train-labels-idx1-ubyte"), idx_bytes({6}, train_labels));
    write_gz(dir.file("t10k-images-idx3-ubyte.gz"), idx_bytes({2, 3, 4}, test_images));
    write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), idx_bytes({2}, test_labels));
  }
};

TEST(IdxTest, LoadIdxBuildsSplitsAndUsesTrainingStatistics) {
  SmallIdx f;
  f.write();
  const DatasetSplits s = load_idx(f.dir.path(), "tiny");
  EXPECT_EQ(s.train.name, "tiny/train");
  EXPECT_EQ(s.test.name, "tiny/test");
  EXPECT_EQ(s.train.kind, DataKind::kImage);
  ASSERT_EQ(s.train.inputs.sizes(), (std::vector<int64_t>{6, 1, 3, 4}));
  ASSERT_EQ(s.test.inputs.sizes(), (std::vector<int64_t>{2, 1, 3, 4}));
  EXPECT_EQ(s.train.example_shape(), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(s.train.inputs.scalar_type(), torch::kUInt8);
  EXPECT_EQ(s.train.targets.scalar_type(), torch::kLong);
  EXPECT_EQ(s.train.num_classes, 10);
  EXPECT_EQ(s.train.targets[2].item<int64_t>(), 9);
  EXPECT_EQ(s.test.targets[1].item<int64_t>(), 8);
  EXPECT_EQ(s.test.inputs[1][0][2][3].item<int>(), static_cast<uint8_t>(f.test_images[12 + 11]));

  // Mean and population std of the training bytes / 255, computed here independently.
  double sum = 0, sum_sq = 0;
  for (unsigned char c : f.train_images) {
    sum += c / 255.0;
    sum_sq += (c / 255.0) * (c / 255.0);
  }
  const double n = static_cast<double>(f.train_images.size());
  const double mean = sum / n, stddev = std::sqrt(sum_sq / n - mean * mean);
  ASSERT_EQ(s.train.mean.size(), 1u);
  EXPECT_NEAR(s.train.mean[0], mean, 1e-12);
  EXPECT_NEAR(s.train.stddev[0], stddev, 1e-12);
  EXPECT_EQ(s.test.mean, s.train.mean);
  EXPECT_EQ(s.test.stddev, s.train.stddev);
}

TEST(IdxTest, LoadIdxRejectsLabelCountMismatch) {
  SmallIdx f;
  f.write();
  write_file(f.dir.file("train-labels-idx1-ubyte"), idx_bytes({5}, f.train_labels.substr(0, 5)));
  const std::string msg = data_error_message([&] { load_idx(f.dir.path(), "tiny"); });
  EXPECT_NE(msg.find("5 labels"), std::string::npos) << msg;
  EXPECT_NE(msg.find("6 images"), std::string::npos) << msg;
}

TEST(IdxTest, LoadIdxRejectsLabelOutOfRange) {
  SmallIdx f;
  f.write();
  write_file(f.dir.file("train-labels-idx1-ubyte"),
             idx_bytes({6}, std::string("\x00\x01\x0a\x02\x03\x04", 6)));
  const std::string msg = data_error_message([&] { load_idx(f.dir.path(), "tiny"); });
  EXPECT_NE(msg.find("label 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train-labels-idx1-ubyte"), std::string::npos) << msg;
}

TEST(IdxTest, LoadIdxRejectsLabelsFileInPlaceOfImages) {
  SmallIdx f;
  f.write();
  write_file(f.dir.file("train-images-idx3-ubyte"), idx_bytes({6}, f.train_labels));
  const std::string msg = data_error_message([&] { load_idx(f.dir.path(), "tiny"); });
  EXPECT_NE(msg.find("0x00000803"), std::string::npos) << msg;
}

TEST(IdxTest, LoadIdxNamesMissingFile) {
  SmallIdx f;
  f.write();
  std::filesystem::remove(f.dir.file("t10k-labels-idx1-ubyte.gz"));
  const std::string msg = data_error_message([&] { load_idx(f.dir.path(), "tiny"); });
  EXPECT_NE(msg.find("t10k-labels-idx1-ubyte.gz"), std::string::npos) << msg;
}

TEST(IdxTest, RealFashionMnistLoadsWithKnownStatistics) {
  const std::string dir = default_data_path("fashion-mnist");
  if (!std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz") &&
      !std::filesystem::exists(dir + "/train-images-idx3-ubyte")) {
    GTEST_SKIP() << "Fashion-MNIST is not installed in " << dir;
  }
  DataConfig cfg;
  cfg.dataset = "fashion-mnist";
  const DatasetSplits s = load_dataset(cfg, 0);
  ASSERT_EQ(s.train.inputs.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  ASSERT_EQ(s.test.inputs.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
  const torch::Tensor train_counts = torch::bincount(s.train.targets);
  const torch::Tensor test_counts = torch::bincount(s.test.targets);
  ASSERT_EQ(train_counts.size(0), 10);
  EXPECT_TRUE(torch::all(train_counts == 6000).item<bool>());
  EXPECT_TRUE(torch::all(test_counts == 1000).item<bool>());
  // The published normalisation constants of the training split.
  EXPECT_NEAR(s.train.mean[0], 0.2860, 5e-4);
  EXPECT_NEAR(s.train.stddev[0], 0.3530, 5e-4);
}

}  // namespace
}  // namespace desync
