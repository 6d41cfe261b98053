// The unigram baseline against a count done by hand.
#include "desync/data/unigram.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "test_util.h"

namespace desync {
namespace {

TokenCacheInfo write_tokens(const testing::TempDir& dir, const std::vector<uint16_t>& ids,
                            int64_t train, int64_t vocab, int64_t test_bytes) {
  TokenCacheInfo info;
  info.tokens_path = dir.file("tokens.u16");
  testing::write_file(info.tokens_path,
                      std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * 2));
  info.train_tokens = train;
  info.test_tokens = static_cast<int64_t>(ids.size()) - train;
  info.vocab_size = vocab;
  info.test_bytes = test_bytes;
  return info;
}

TEST(Unigram, BitsPerByteOfTheTestSplitUnderSmoothedTrainingFrequencies) {
  testing::TempDir dir;
  // Training 0 0 1 over a vocabulary of 3: p(0) = 3/6, p(1) = 2/6, p(2) = 1/6. Test: 0 1 2.
  TokenCacheInfo info = write_tokens(dir, {0, 0, 1, 0, 1, 2}, 3, 3, 5);
  const double bits = -(std::log2(3.0 / 6) + std::log2(2.0 / 6) + std::log2(1.0 / 6));
  EXPECT_NEAR(unigram_bits_per_byte(info), bits / 5, 1e-12);
}

TEST(Unigram, ShortTokenFileIsADataError) {
  testing::TempDir dir;
  TokenCacheInfo info = write_tokens(dir, {0, 1}, 2, 3, 5);
  info.test_tokens = 4;
  EXPECT_THROW(unigram_bits_per_byte(info), DataError);
}

}  // namespace
}  // namespace desync
