#include "desync/embeddings/cooccurrence.h"

#include <algorithm>
#include <string>

#include "desync/core/error.h"

namespace desync {

CooccurrenceCounts count_cooccurrences(const WordCorpus& corpus, int64_t first_sentence,
                                       int64_t end_sentence, int64_t window, WindowWeight weight,
                                       int64_t vocab_size) {
  if (first_sentence < 0 || first_sentence > end_sentence || end_sentence > corpus.sentences()) {
    throw ConfigError("co-occurrence sentence range [" + std::to_string(first_sentence) + ", " +
                      std::to_string(end_sentence) + ") is not inside the corpus's " +
                      std::to_string(corpus.sentences()) + " sentences");
  }
  if (window < 1) throw ConfigError("co-occurrence window must be >= 1");
  if (vocab_size < 1) throw ConfigError("co-occurrence vocab_size must be >= 1");
  std::vector<double> weight_at(static_cast<size_t>(window + 1), 1.0);  // by distance δ
  if (weight == WindowWeight::kWord2vec) {
    for (int64_t d = 1; d <= window; ++d) {
      weight_at[static_cast<size_t>(d)] = static_cast<double>(window - d + 1) / window;
    }
  }

  // The positions of each counted word, grouped by word (a counting sort), with their sentence.
  std::vector<int64_t> start(static_cast<size_t>(vocab_size + 1), 0);
  for (int64_t s = first_sentence; s < end_sentence; ++s) {
    for (int64_t p = corpus.offsets[s]; p < corpus.offsets[s + 1]; ++p) {
      const int64_t w = corpus.tokens[p];
      if (w < vocab_size) ++start[w + 1];
    }
  }
  for (int64_t w = 0; w < vocab_size; ++w) start[w + 1] += start[w];
  std::vector<int64_t> position(start.back()), sentence(start.back());
  std::vector<int64_t> cursor(start.begin(), start.end() - 1);
  for (int64_t s = first_sentence; s < end_sentence; ++s) {
    for (int64_t p = corpus.offsets[s]; p < corpus.offsets[s + 1]; ++p) {
      const int64_t w = corpus.tokens[p];
      if (w >= vocab_size) continue;
      position[cursor[w]] = p;
      sentence[cursor[w]++] = s;
    }
  }

  // One row at a time: accumulate N(w, ·) densely, then emit its contexts in ascending order.
  CooccurrenceCounts out;
  std::vector<double> row(static_cast<size_t>(vocab_size), 0.0);
  std::vector<int64_t> touched;
  for (int64_t w = 0; w < vocab_size; ++w) {
    for (int64_t i = start[w]; i < start[w + 1]; ++i) {
      const int64_t p = position[i];
      const int64_t begin = std::max(corpus.offsets[sentence[i]], p - window);
      const int64_t end = std::min(corpus.offsets[sentence[i] + 1], p + window + 1);
      for (int64_t q = begin; q < end; ++q) {
        const int64_t c = corpus.tokens[q];
        if (q == p || c >= vocab_size) continue;
        if (row[c] == 0.0) touched.push_back(c);
        row[c] += weight_at[static_cast<size_t>(q > p ? q - p : p - q)];
      }
    }
    std::sort(touched.begin(), touched.end());
    for (const int64_t c : touched) {
      out.keys.push_back(w * vocab_size + c);
      out.counts.push_back(row[c]);
      row[c] = 0.0;
    }
    touched.clear();
  }
  return out;
}

CooccurrenceCounts merge_counts(const std::vector<CooccurrenceCounts>& parts) {
  size_t total = 0;
  for (const auto& part : parts) {
    if (part.keys.size() != part.counts.size()) {
      throw DataError("co-occurrence part has " + std::to_string(part.keys.size()) + " keys but " +
                      std::to_string(part.counts.size()) + " counts");
    }
    for (size_t i = 1; i < part.keys.size(); ++i) {
      if (part.keys[i] <= part.keys[i - 1]) {
        throw DataError("co-occurrence part keys are not strictly ascending at entry " +
                        std::to_string(i));
      }
    }
    total += part.keys.size();
  }
  // A k-way merge by linear scan of the heads (k = number of ranks: small).
  CooccurrenceCounts out;
  out.keys.reserve(total);
  out.counts.reserve(total);
  std::vector<size_t> head(parts.size(), 0);
  while (true) {
    int64_t key = INT64_MAX;
    for (size_t r = 0; r < parts.size(); ++r) {
      if (head[r] < parts[r].keys.size()) key = std::min(key, parts[r].keys[head[r]]);
    }
    if (key == INT64_MAX) break;
    double count = 0.0;
    for (size_t r = 0; r < parts.size(); ++r) {
      if (head[r] < parts[r].keys.size() && parts[r].keys[head[r]] == key) {
        count += parts[r].counts[head[r]++];
      }
    }
    out.keys.push_back(key);
    out.counts.push_back(count);
  }
  return out;
}

}  // namespace desync
