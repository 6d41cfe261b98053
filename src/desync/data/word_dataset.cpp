#include "desync/data/word_dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <sstream>

#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "desync/data/batch_source.h"

namespace desync {
namespace {

constexpr uint64_t kSplitStream = 0x776f7264735f7370ULL;    // "words_sp"
constexpr uint64_t kExampleStream = 0x776f7264735f6578ULL;  // "words_ex"
constexpr int64_t kTestWindow = 5;
constexpr int64_t kTestNegatives = 5;

double uniform01(uint64_t key) { return static_cast<double>(mix64(key) >> 11) * 0x1.0p-53; }

// The vocabulary file: "word<TAB>count" per line, by id, under the cache folder, named by the
// vocabulary's fingerprint (so runs over the same corpus share it).
std::string write_vocabulary(const DataConfig& cfg, const Vocabulary& v) {
  std::string text;
  for (int64_t i = 0; i < v.size(); ++i) text += fmt::format("{}\t{}\n", v.word(i), v.count(i));
  const std::string path =
      (std::filesystem::path(cfg.cache_dir) / fmt::format("words-{:016x}.vocab", v.fingerprint()))
          .string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    make_dirs(cfg.cache_dir);
    write_file_atomic(path, text);
  }
  return path;
}

// Held-out examples: (centre, context, negatives) from the test sentences.
torch::Tensor test_examples(const WordCorpus& test, const std::vector<int64_t>& counts,
                            uint64_t seed) {
  std::vector<double> cumulative(counts.size());
  double sum = 0;
  for (size_t w = 0; w < counts.size(); ++w) cumulative[w] = sum += std::pow(counts[w], 0.75);
  std::vector<int64_t> pairs;  // centre, context
  for (int64_t s = 0; s < test.sentences(); ++s) {
    const int64_t b = test.offsets[s], e = test.offsets[s + 1];
    for (int64_t p = b; p < e; ++p)
      for (int64_t q = std::max(b, p - kTestWindow); q < std::min(e, p + kTestWindow + 1); ++q)
        if (q != p) pairs.insert(pairs.end(), {test.tokens[p], test.tokens[q]});
  }
  int64_t n = static_cast<int64_t>(pairs.size()) / 2;
  std::vector<int64_t> pick(n);
  std::iota(pick.begin(), pick.end(), 0);
  if (n > kMaxTestPairs) {
    // The kMaxTestPairs pairs with the smallest keys, in corpus order.
    std::vector<uint64_t> key(n);
    for (int64_t i = 0; i < n; ++i) key[i] = mix64(seed ^ kExampleStream ^ mix64(i));
    std::nth_element(pick.begin(), pick.begin() + kMaxTestPairs, pick.end(),
                     [&](int64_t a, int64_t b) { return key[a] < key[b]; });
    pick.resize(kMaxTestPairs);
    std::sort(pick.begin(), pick.end());
    n = kMaxTestPairs;
  }
  torch::Tensor out = torch::empty({n, 2 + kTestNegatives}, torch::kLong);
  auto a = out.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    a[i][0] = pairs[2 * pick[i]];
    a[i][1] = pairs[2 * pick[i] + 1];
    for (int64_t j = 0; j < kTestNegatives; ++j) {
      const double u = uniform01(mix64(seed ^ kExampleStream) + i * kTestNegatives + j) * sum;
      a[i][2 + j] = std::min<int64_t>(
          std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin(),
          static_cast<int64_t>(counts.size()) - 1);
    }
  }
  return out;
}

}  // namespace

DatasetSplits load_word_dataset(const DataConfig& cfg) {
  if (cfg.path.empty())
    throw ConfigError(
        "data.dataset = \"words\" needs data.path: a text file with one sentence per line (e.g. "
        "the output of `desync corpus`) or a folder of .txt files");
  if (cfg.text_test_fraction < 0 || cfg.text_test_fraction >= 1)
    throw ConfigError("data.text_test_fraction must be in [0, 1)");
  std::vector<std::string> sentences = read_sentences(cfg.path);
  // Split by seeded keys, as the token cache does: the smallest keys are held out.
  const int64_t n = static_cast<int64_t>(sentences.size());
  const int64_t held = std::llround(static_cast<double>(n) * cfg.text_test_fraction);
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  const uint64_t base = mix64(static_cast<uint64_t>(cfg.split_seed) ^ kSplitStream);
  std::vector<bool> is_test(n, false);
  if (held > 0) {
    std::nth_element(order.begin(), order.begin() + held, order.end(),
                     [&](int64_t a, int64_t b) { return mix64(base + a) < mix64(base + b); });
    for (int64_t i = 0; i < held; ++i) is_test[order[i]] = true;
  }
  std::vector<std::string> train_text, test_text;
  for (int64_t i = 0; i < n; ++i)
    (is_test[i] ? test_text : train_text).push_back(std::move(sentences[i]));
  if (cfg.train_limit > 0 && static_cast<int64_t>(train_text.size()) > cfg.train_limit)
    train_text.resize(cfg.train_limit);
  WordCorpus train = make_word_corpus(train_text, 1);
  if (train.size() == 0) throw DataError("corpus " + cfg.path + " has no training words");
  // The test sentences in the training vocabulary.
  WordCorpus test;
  test.vocab = train.vocab;
  test.offsets.push_back(0);
  for (const std::string& s : test_text) {
    for (const std::string& w : word_tokens(s)) {
      const int64_t id = train.vocab.find(w);
      if (id >= 0) test.tokens.push_back(static_cast<int32_t>(id));
    }
    if (test.size() > test.offsets.back()) test.offsets.push_back(test.size());
  }

  DatasetSplits s;
  s.train.name = "words/train";
  s.train.kind = DataKind::kFeatures;
  s.train.inputs = torch::from_blob(train.tokens.data(), {train.size()}, torch::kInt).clone();
  s.train.targets = torch::from_blob(train.offsets.data(),
                                     {static_cast<int64_t>(train.offsets.size())}, torch::kLong)
                        .clone();
  s.train.num_classes = train.vocab.size();
  s.test.name = "words/test";
  s.test.kind = DataKind::kFeatures;
  s.test.inputs = test_examples(test, train.vocab.counts(), static_cast<uint64_t>(cfg.split_seed));
  if (cfg.test_limit > 0 && s.test.inputs.size(0) > cfg.test_limit)
    s.test.inputs = s.test.inputs.narrow(0, 0, cfg.test_limit).clone();
  s.test.targets = torch::zeros({s.test.inputs.size(0)}, torch::kLong);
  s.test.num_classes = train.vocab.size();
  s.tokenizer_path = write_vocabulary(cfg, train.vocab);
  return s;
}

Vocabulary read_vocabulary_file(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<std::string> words;
  std::vector<int64_t> counts;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    const size_t tab = line.find('\t');
    if (tab == std::string::npos || tab == 0)
      throw DataError(fmt::format("{}:{}: expected \"word<TAB>count\"", path, n));
    words.push_back(line.substr(0, tab));
    counts.push_back(std::stoll(line.substr(tab + 1)));
  }
  return Vocabulary(std::move(words), std::move(counts));
}

WordCorpus word_corpus_of(const Dataset& train, const Vocabulary* vocab) {
  WordCorpus c;
  const torch::Tensor ids = train.inputs.contiguous();
  const torch::Tensor offsets = train.targets.contiguous();
  c.tokens.assign(ids.data_ptr<int32_t>(), ids.data_ptr<int32_t>() + ids.numel());
  c.offsets.assign(offsets.data_ptr<int64_t>(), offsets.data_ptr<int64_t>() + offsets.numel());
  if (vocab) {
    c.vocab = *vocab;
  } else {
    std::vector<int64_t> counts(static_cast<size_t>(train.num_classes), 0);
    for (const int32_t t : c.tokens) ++counts[static_cast<size_t>(t)];
    std::vector<std::string> words(counts.size());
    for (size_t i = 0; i < words.size(); ++i) words[i] = "w" + std::to_string(i);
    c.vocab = Vocabulary(std::move(words), std::move(counts));
  }
  return c;
}

}  // namespace desync
