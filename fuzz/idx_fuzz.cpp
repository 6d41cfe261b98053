// libFuzzer target for the IDX reader (src/desync/data/dataset.h, read_idx_file).
//
// The input is an IDX file (raw, or gzip when it starts with gzip's magic). A malformed one must
// throw DataError and nothing else. A raw one that parses must be exactly the header its tensor
// implies followed by its bytes: the reader neither drops nor invents data. Anything else aborts.
//
// Built and run by scripts/fuzz, which compiles the sources listed here:
// fuzz-sources: src/desync/data/idx.cpp src/desync/data/reader_util.cpp
// fuzz-torch: yes
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "desync/core/error.h"
#include "desync/data/dataset.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static FuzzFile file;
  file.set(data, size);
  torch::Tensor t;
  try {
    t = desync::read_idx_file(file.path());
  } catch (const desync::DataError&) {
    return 0;  // expected for malformed input
  }
  if (t.scalar_type() != torch::kUInt8 || t.dim() < 1 || !t.is_contiguous()) abort();
  if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) return 0;  // gzip: not byte for byte
  std::string expected = {0, 0, 0x08, static_cast<char>(t.dim())};
  for (int64_t d : t.sizes()) {
    for (int shift = 24; shift >= 0; shift -= 8) expected.push_back(static_cast<char>(d >> shift));
  }
  expected.append(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), t.numel());
  if (expected.size() != size || std::memcmp(expected.data(), data, size) != 0) abort();
  return 0;
}
