#include "desync/data/unigram.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <vector>

#include "desync/core/error.h"

namespace desync {

double unigram_bits_per_byte(const TokenCacheInfo& info) {
  std::ifstream in(info.tokens_path, std::ios::binary);
  const int64_t total = info.train_tokens + info.test_tokens;
  std::vector<uint16_t> ids(static_cast<size_t>(total));
  in.read(reinterpret_cast<char*>(ids.data()), static_cast<std::streamsize>(total * 2));
  if (!in || info.test_bytes <= 0 || info.vocab_size <= 0)
    throw DataError(info.tokens_path + ": does not hold the " + std::to_string(total) +
                    " tokens its manifest counts; run `desync tokenize` to rebuild it");
  std::vector<double> count(static_cast<size_t>(info.vocab_size), 1.0);  // add-one smoothing
  for (int64_t i = 0; i < info.train_tokens; ++i) count.at(ids[i]) += 1.0;
  const double norm = static_cast<double>(info.train_tokens + info.vocab_size);
  double bits = 0.0;
  for (int64_t i = info.train_tokens; i < total; ++i) bits -= std::log2(count.at(ids[i]) / norm);
  return bits / static_cast<double>(info.test_bytes);
}

}  // namespace desync
