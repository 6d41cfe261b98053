#include "desync/data/word_corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <utility>

#include "desync/core/error.h"

namespace desync {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot read corpus file " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return std::move(s).str();
}

void append_lines(const std::string& text, std::vector<std::string>& out) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    size_t last = end;
    if (last > begin && text[last - 1] == '\r') --last;
    if (text.find_first_not_of(" \t", begin) < last) out.emplace_back(text, begin, last - begin);
    begin = end + 1;
  }
}

}  // namespace

uint64_t fnv1a64(std::string_view bytes, uint64_t h) {
  for (const unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

Vocabulary::Vocabulary(std::vector<std::string> words, std::vector<int64_t> counts)
    : words_(std::move(words)), counts_(std::move(counts)) {
  index_.reserve(words_.size());
  for (size_t i = 0; i < words_.size(); ++i) index_.emplace(words_[i], static_cast<int64_t>(i));
  total_ = std::accumulate(counts_.begin(), counts_.end(), int64_t{0});
}

int64_t Vocabulary::find(std::string_view word) const {
  const auto it = index_.find(std::string(word));
  return it == index_.end() ? -1 : it->second;
}

uint64_t Vocabulary::fingerprint() const {
  uint64_t h = kFnvOffset;
  for (size_t i = 0; i < words_.size(); ++i) {
    h = fnv1a64(words_[i], h);
    h = fnv1a64("\t" + std::to_string(counts_[i]) + "\n", h);
  }
  return h;
}

Vocabulary Vocabulary::prefix(int64_t n) const {
  n = std::clamp<int64_t>(n, 0, size());
  return Vocabulary({words_.begin(), words_.begin() + n}, {counts_.begin(), counts_.begin() + n});
}

std::vector<std::string> word_tokens(std::string_view text) {
  std::vector<std::string> out;
  std::string word;
  auto flush = [&] {
    if (word.size() > 1 || word == "a" || word == "i") out.push_back(word);
    word.clear();
  };
  for (const char ch : text) {
    const char c = (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch;
    if (c >= 'a' && c <= 'z') {
      word.push_back(c);
    } else if (!word.empty()) {
      flush();
    }
  }
  if (!word.empty()) flush();
  return out;
}

std::vector<std::string> read_sentences(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> out;
  if (fs::is_directory(path, ec)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(path, ec))
      if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw DataError("corpus folder " + path + " holds no .txt file");
    for (const auto& f : files) append_lines(read_file(f), out);
  } else if (fs::is_regular_file(path, ec)) {
    append_lines(read_file(path), out);
  } else {
    throw DataError("corpus " + path + " does not exist (give a text file or a folder of .txt)");
  }
  return out;
}

WordCorpus make_word_corpus(const std::vector<std::string>& sentences, int64_t min_count) {
  // Ids in order of first occurrence while counting, then renumbered by count.
  std::unordered_map<std::string, int32_t> first;
  std::vector<std::string> seen;
  std::vector<int64_t> counts;
  std::vector<int32_t> raw;
  std::vector<int64_t> raw_offsets{0};
  for (const std::string& s : sentences) {
    for (std::string& w : word_tokens(s)) {
      auto [it, added] = first.try_emplace(w, static_cast<int32_t>(seen.size()));
      if (added) {
        seen.push_back(std::move(w));
        counts.push_back(0);
      }
      ++counts[static_cast<size_t>(it->second)];
      raw.push_back(it->second);
    }
    if (static_cast<int64_t>(raw.size()) > raw_offsets.back()) raw_offsets.push_back(raw.size());
  }
  std::vector<int32_t> order(seen.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return counts[a] > counts[b]; });
  std::vector<int32_t> new_id(seen.size(), -1);
  std::vector<std::string> words;
  std::vector<int64_t> kept_counts;
  for (const int32_t old : order) {
    if (counts[static_cast<size_t>(old)] < min_count) break;
    new_id[static_cast<size_t>(old)] = static_cast<int32_t>(words.size());
    words.push_back(seen[static_cast<size_t>(old)]);
    kept_counts.push_back(counts[static_cast<size_t>(old)]);
  }
  WordCorpus c;
  c.vocab = Vocabulary(std::move(words), std::move(kept_counts));
  c.offsets.push_back(0);
  for (size_t s = 0; s + 1 < raw_offsets.size(); ++s) {
    int64_t in_sentence = 0;
    for (int64_t i = raw_offsets[s]; i < raw_offsets[s + 1]; ++i) {
      const int32_t id = new_id[static_cast<size_t>(raw[static_cast<size_t>(i)])];
      if (id < 0) continue;
      if (in_sentence == kMaxSentence) {
        c.offsets.push_back(c.size());
        in_sentence = 0;
      }
      c.tokens.push_back(id);
      ++in_sentence;
    }
    if (c.size() > c.offsets.back()) c.offsets.push_back(c.size());
  }
  return c;
}

WordCorpus restrict_corpus(const WordCorpus& corpus, int64_t vocab_size) {
  WordCorpus c;
  c.vocab = corpus.vocab.prefix(vocab_size);
  c.offsets.push_back(0);
  for (int64_t s = 0; s < corpus.sentences(); ++s) {
    for (int64_t i = corpus.offsets[s]; i < corpus.offsets[s + 1]; ++i)
      if (corpus.tokens[static_cast<size_t>(i)] < vocab_size)
        c.tokens.push_back(corpus.tokens[static_cast<size_t>(i)]);
    if (c.size() > c.offsets.back()) c.offsets.push_back(c.size());
  }
  return c;
}

}  // namespace desync
