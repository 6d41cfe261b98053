// libFuzzer target for the CIFAR-10 binary reader (src/desync/data/dataset.h, load_cifar10).
//
// The input is one batch file, read as each of the five training batches and the test batch (a
// folder of links to one memory file). A malformed one must throw DataError and nothing else;
// one that parses must give 5 training and 1 test copies of its records, every label the
// record's first byte (below 10) and every image the record's 3072 pixel bytes. Anything else
// aborts.
//
// Built and run by scripts/fuzz, which compiles the sources listed here:
// fuzz-sources: src/desync/data/cifar.cpp src/desync/data/reader_util.cpp
// fuzz-torch: yes
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "desync/core/error.h"
#include "desync/data/dataset.h"
#include "fuzz_file.h"

namespace {

// A folder whose six CIFAR-10 batch files all link to `file`.
std::string batch_folder(const FuzzFile& file) {
  char pattern[] = "/tmp/cifar-fuzz-XXXXXX";
  if (!mkdtemp(pattern)) abort();
  const std::string dir = pattern;
  for (const char* name : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                           "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"}) {
    std::filesystem::create_symlink(file.path(), dir + "/" + name);
  }
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static FuzzFile file;
  static const std::string dir = batch_folder(file);
  file.set(data, size);
  desync::DatasetSplits s;
  try {
    s = desync::load_cifar10(dir);
  } catch (const desync::DataError&) {
    return 0;  // expected for malformed input
  }
  constexpr size_t kRecord = 3073;
  const int64_t n = static_cast<int64_t>(size / kRecord);
  if (size % kRecord != 0 || n == 0) abort();
  if (s.train.inputs.size(0) != 5 * n || s.test.inputs.size(0) != n) abort();
  const torch::Tensor images = s.test.inputs.contiguous(), labels = s.test.targets;
  if (images.scalar_type() != torch::kUInt8 || images.numel() != n * 3072) abort();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* record = data + i * kRecord;
    if (record[0] >= 10 || labels[i].item<int64_t>() != record[0]) abort();
    if (std::memcmp(images.data_ptr<uint8_t>() + i * 3072, record + 1, 3072) != 0) abort();
    if (!torch::equal(s.train.inputs[4 * n + i], s.test.inputs[i])) abort();
  }
  return 0;
}
