// A corpus of words for training word embeddings: sentences of word ids over a vocabulary
// ordered by count.
//
// Tokens (word_tokens): the maximal runs of the letters a-z after ASCII lower-casing; one-letter
// tokens other than "a" and "i" are dropped. A sentence longer than kMaxSentence tokens is split
// into pieces of at most that many (C word2vec's MAX_SENTENCE_LENGTH).
//
// Vocabulary: every word with count >= min_count, by count descending, ties by first
// occurrence in the corpus. Tokens of other words are dropped from their sentences (as C
// word2vec drops out-of-vocabulary words). So the vocabulary of a larger min_count is a prefix
// of that of a smaller one.
//
// A text corpus file is UTF-8 with one sentence per line (blank lines are skipped); a folder is
// the concatenation of its *.txt files in sorted order.
//
// Pure functions of their inputs; a WordCorpus is immutable once built and may be read from
// any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace desync {

constexpr int64_t kMaxSentence = 1000;

// 64-bit FNV-1a of `bytes`, continuing from `h`.
constexpr uint64_t kFnvOffset = 14695981039346656037ULL;
uint64_t fnv1a64(std::string_view bytes, uint64_t h = kFnvOffset);

class Vocabulary {
 public:
  Vocabulary() = default;
  // REQUIRES: counts descending, words distinct, same sizes.
  Vocabulary(std::vector<std::string> words, std::vector<int64_t> counts);

  int64_t size() const { return static_cast<int64_t>(words_.size()); }
  const std::string& word(int64_t id) const { return words_[static_cast<size_t>(id)]; }
  int64_t count(int64_t id) const { return counts_[static_cast<size_t>(id)]; }
  const std::vector<std::string>& words() const { return words_; }
  const std::vector<int64_t>& counts() const { return counts_; }
  int64_t total() const { return total_; }  // sum of the counts
  // The id of `word`, or -1.
  int64_t find(std::string_view word) const;
  // FNV-1a over "word\tcount\n" for every id in order: equal on two ranks iff they agree.
  uint64_t fingerprint() const;
  // The first n words (n <= size()): the vocabulary of a larger min_count, or the top-n words.
  Vocabulary prefix(int64_t n) const;

 private:
  std::vector<std::string> words_;
  std::vector<int64_t> counts_;
  std::unordered_map<std::string, int64_t> index_;
  int64_t total_ = 0;
};

struct WordCorpus {
  Vocabulary vocab;
  std::vector<int32_t> tokens;   // the in-vocabulary tokens of every sentence, concatenated
  std::vector<int64_t> offsets;  // sentence s is tokens[offsets[s], offsets[s + 1]); [0] = 0

  int64_t sentences() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
};

// The tokens of `text` (see above), in order.
std::vector<std::string> word_tokens(std::string_view text);

// Sentences of `path`: a file (one per line) or a folder of *.txt files. Throws DataError for a
// missing or unreadable path.
std::vector<std::string> read_sentences(const std::string& path);

// Tokenises every sentence, counts, keeps the words with count >= min_count (min_count >= 1)
// and splits long sentences. Sentences left empty are dropped.
WordCorpus make_word_corpus(const std::vector<std::string>& sentences, int64_t min_count);

// `corpus` with its vocabulary cut to the first `vocab_size` words (those of a larger
// min_count): tokens of the other words are dropped, and sentences left empty.
WordCorpus restrict_corpus(const WordCorpus& corpus, int64_t vocab_size);

}  // namespace desync
