// The unigram baseline of a token cache: what a model that ignores context scores.
//
// The probability of token t is its frequency in the training split with add-one smoothing,
// (count(t) + 1) / (N + V); the baseline is the cross-entropy of the test split's tokens under
// it, in bits per byte of the test split's text (the same units as a run's test_bits_per_byte).
#pragma once

#include "desync/data/token_cache.h"

namespace desync {

// Reads info.tokens_path. Throws DataError when the file does not hold the counted tokens.
double unigram_bits_per_byte(const TokenCacheInfo& info);

}  // namespace desync
