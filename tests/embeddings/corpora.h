// Small word corpora for the embedding tests, built from id sentences.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "desync/data/word_corpus.h"

namespace desync::testing {

// A corpus of the given sentences of ids < v, relabelled by count descending (ties by id) so
// that its vocabulary is ordered as WordCorpus promises.
inline WordCorpus make_corpus(const std::vector<std::vector<int32_t>>& sentences, int64_t v) {
  std::vector<int64_t> count(static_cast<size_t>(v), 0);
  for (const auto& s : sentences) {
    for (const int32_t w : s) ++count[w];
  }
  std::vector<int32_t> order(static_cast<size_t>(v));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return count[a] > count[b]; });
  std::vector<int32_t> rank(static_cast<size_t>(v));
  std::vector<std::string> words;
  std::vector<int64_t> counts;
  for (int32_t r = 0; r < v; ++r) {
    rank[order[r]] = r;
    words.push_back("w" + std::to_string(order[r]));
    counts.push_back(count[order[r]]);
  }
  WordCorpus corpus;
  corpus.vocab = Vocabulary(words, counts);
  corpus.offsets.push_back(0);
  for (const auto& s : sentences) {
    for (const int32_t w : s) corpus.tokens.push_back(rank[w]);
    corpus.offsets.push_back(static_cast<int64_t>(corpus.tokens.size()));
  }
  return corpus;
}

// `sentences` sentences of 1..max_length words drawn with weight 1 / (id + zipf_offset), then
// every id < v appended once, so each appears at least once.
inline WordCorpus random_corpus(int64_t v, int64_t sentences, int64_t max_length, uint64_t seed,
                                double zipf_offset) {
  std::mt19937_64 rng(seed);
  std::vector<double> weight(static_cast<size_t>(v));
  for (int64_t w = 0; w < v; ++w) weight[w] = 1.0 / (static_cast<double>(w) + zipf_offset);
  std::discrete_distribution<int32_t> word(weight.begin(), weight.end());
  std::uniform_int_distribution<int64_t> length(1, max_length);
  std::vector<std::vector<int32_t>> s(static_cast<size_t>(sentences));
  for (auto& sentence : s) {
    const int64_t n = length(rng);
    for (int64_t i = 0; i < n; ++i) sentence.push_back(word(rng));
  }
  for (int32_t w = 0; w < v; ++w) s[w % sentences].push_back(w);
  return make_corpus(s, v);
}

}  // namespace desync::testing
