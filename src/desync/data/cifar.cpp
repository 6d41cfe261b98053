// CIFAR-10 binary reader: 3073-byte records (label, then 3x32x32 pixels, channel-major).
#include <filesystem>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/dataset.h"
#include "desync/data/reader_util.h"

namespace desync {
namespace {

constexpr int64_t kChannels = 3, kSide = 32;
constexpr int64_t kPixels = kChannels * kSide * kSide;  // 3072
constexpr int64_t kRecord = 1 + kPixels;                // 3073
constexpr int64_t kClasses = 10;
constexpr int kTrainBatches = 5;

struct Records {
  torch::Tensor images;  // uint8 [n, 3, 32, 32]
  torch::Tensor labels;  // int64 [n]
};

Records read_batch_file(const std::string& path) {
  std::string bytes = data_internal::read_binary_file(path);
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (size == 0 || size % kRecord != 0) {
    throw DataError(path + ": size " + std::to_string(size) +
                    " bytes is not a positive multiple of the " + std::to_string(kRecord) +
                    "-byte CIFAR-10 record");
  }
  const int64_t n = size / kRecord;
  // A view of the file's bytes; everything kept below is copied out of it.
  torch::Tensor raw = torch::from_blob(bytes.data(), {n, kRecord}, torch::kUInt8);
  Records r;
  r.labels = raw.select(1, 0).to(torch::kLong);
  const torch::Tensor bad = (r.labels >= kClasses).nonzero();
  if (bad.size(0) > 0) {
    const int64_t record = bad[0][0].item<int64_t>();
    throw DataError(path + ": record " + std::to_string(record) + " has label " +
                    std::to_string(r.labels[record].item<int64_t>()) + ", out of range [0, " +
                    std::to_string(kClasses) + ")");
  }
  r.images = raw.narrow(1, 1, kPixels)
                 .reshape({n, kChannels, kSide, kSide})
                 .clone(torch::MemoryFormat::Contiguous);
  return r;
}

// The files may sit in `dir` or in the cifar-10-batches-bin/ folder the archive unpacks to.
std::string resolve_dir(const std::string& dir) {
  const std::string nested = dir + "/cifar-10-batches-bin";
  if (!std::filesystem::exists(dir + "/data_batch_1.bin") &&
      std::filesystem::exists(nested + "/data_batch_1.bin")) {
    return nested;
  }
  return dir;
}

Dataset make_split(const std::string& name, std::vector<Records> parts) {
  std::vector<torch::Tensor> images, labels;
  for (auto& p : parts) {
    images.push_back(p.images);
    labels.push_back(p.labels);
  }
  Dataset d;
  d.name = name;
  d.kind = DataKind::kImage;
  d.inputs = images.size() == 1 ? images[0] : torch::cat(images);
  d.targets = labels.size() == 1 ? labels[0] : torch::cat(labels);
  d.num_classes = kClasses;
  return d;
}

}  // namespace

DatasetSplits load_cifar10(const std::string& dir) {
  const std::string root = resolve_dir(dir);
  std::vector<Records> train;
  for (int i = 1; i <= kTrainBatches; ++i) {
    train.push_back(read_batch_file(root + "/data_batch_" + std::to_string(i) + ".bin"));
  }
  DatasetSplits s;
  s.train = make_split("cifar10/train", std::move(train));
  s.test = make_split("cifar10/test", {read_batch_file(root + "/test_batch.bin")});
  // Normalise both splits with the training statistics.
  data_internal::set_channel_stats(s.train.inputs, s.train);
  s.test.mean = s.train.mean;
  s.test.stddev = s.train.stddev;
  return s;
}

}  // namespace desync
