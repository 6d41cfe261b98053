// Word-context co-occurrence counts of a corpus: the input of PPMI-SVD (spec §3 "PPMI-SVD").
//
// N(w, c) counts, for every position p of w in a sentence, the positions of c at distance
// δ = 1..L on either side of p, each weighted 1 (kUniform) or (L − δ + 1)/L (kWord2vec: the
// chance that word2vec's dynamic window of width L reaches distance δ). No subsampling. Only
// words with id < vocab_size are counted; other words keep their positions, so distances are
// those of the sentence. Both directions are counted, so N is symmetric.
//
// Counts are sparse: key = w·vocab_size + c, ascending, without duplicates; zero counts are
// absent. A rank counts its shard (a range of sentences) and merge_counts sums the shards: the
// result equals counting the whole corpus, exactly for kUniform (integers in float64) and up to
// the order of floating-point additions for kWord2vec.
//
// Cost: O(T·L) time for T tokens in the range, plus sorting each word's distinct contexts;
// memory 16 bytes per distinct (w, c) plus 16 bytes per token and 8·vocab_size bytes.
// Pure functions; safe to call from any thread.
#pragma once

#include <cstdint>
#include <vector>

#include "desync/data/word_corpus.h"

namespace desync {

enum class WindowWeight { kUniform, kWord2vec };

struct CooccurrenceCounts {
  std::vector<int64_t> keys;   // w·vocab_size + c, ascending, no duplicates
  std::vector<double> counts;  // N(w, c) > 0, parallel to keys
  int64_t size() const { return static_cast<int64_t>(keys.size()); }
};

// N(w, c) over the sentences [first_sentence, end_sentence) of `corpus`, window L = `window`.
// Throws ConfigError for a bad range, window < 1 or vocab_size < 1.
CooccurrenceCounts count_cooccurrences(const WordCorpus& corpus, int64_t first_sentence,
                                       int64_t end_sentence, int64_t window, WindowWeight weight,
                                       int64_t vocab_size);

// The sum of `parts` (each sorted, as count_cooccurrences returns): equal keys add, in the order
// of `parts`. Throws DataError for a part whose keys are not strictly ascending.
CooccurrenceCounts merge_counts(const std::vector<CooccurrenceCounts>& parts);

}  // namespace desync
