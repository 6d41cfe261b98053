// Byte-level text: one file split into a training head and a test tail, cut into windows.
#include <cmath>
#include <string>

#include "desync/core/error.h"
#include "desync/data/dataset.h"
#include "desync/data/reader_util.h"

namespace desync {
namespace {

constexpr int64_t kVocabulary = 256;

// Windows of seq_len + 1 bytes at stride seq_len over bytes [begin, begin + len).
torch::Tensor windows(const torch::Tensor& bytes, int64_t begin, int64_t len, int64_t seq_len) {
  const int64_t count = (len - 1) / seq_len;
  return bytes.as_strided({count, seq_len + 1}, {seq_len, 1}, begin)
      .clone(torch::MemoryFormat::Contiguous);
}

Dataset make_split(const std::string& name, torch::Tensor windows) {
  Dataset d;
  d.name = name;
  d.kind = DataKind::kText;
  d.inputs = std::move(windows);
  d.num_classes = kVocabulary;
  return d;
}

}  // namespace

DatasetSplits load_text(const std::string& path, int64_t seq_len, double test_fraction) {
  if (seq_len < 1) {
    throw ConfigError("data.seq_len must be at least 1, got " + std::to_string(seq_len));
  }
  if (!(test_fraction > 0.0 && test_fraction < 1.0)) {
    throw ConfigError("data.text_test_fraction must lie strictly between 0 and 1, got " +
                      std::to_string(test_fraction));
  }
  std::string text = data_internal::read_binary_file(path);
  const int64_t size = static_cast<int64_t>(text.size());
  const int64_t test_len =
      static_cast<int64_t>(std::floor(static_cast<double>(size) * test_fraction));
  const int64_t train_len = size - test_len;
  if (train_len < seq_len + 1 || test_len < seq_len + 1) {
    throw DataError(path + ": too small: " + std::to_string(size) +
                    " bytes give a training split of " + std::to_string(train_len) +
                    " and a test split of " + std::to_string(test_len) +
                    " bytes, but each needs at least seq_len + 1 = " + std::to_string(seq_len + 1));
  }
  // A view of the file's bytes; the windows are copied out of it.
  const torch::Tensor bytes = torch::from_blob(text.data(), {size}, torch::kUInt8);
  DatasetSplits s;
  s.train = make_split("text/train", windows(bytes, 0, train_len, seq_len));
  s.test = make_split("text/test", windows(bytes, train_len, test_len, seq_len));
  return s;
}

}  // namespace desync
