// Tests of the token cache: reuse of an intact entry, rebuilds of stale or damaged ones, the
// seeded document split, concurrent builders, and the memory-mapped windows.
#include "desync/data/token_cache.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "desync/data/batch_source.h"
#include "desync/data/tokenizer.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::TempDir;
using testing::write_file;

// `n` paragraphs of made-up words, separated by blank lines.
std::vector<std::string> paragraphs(int n) {
  const char* words[] = {"amber", "bolt", "cinder", "dune", "ember", "fjord", "gale", "heath",
                         "isle",  "jade", "kelp",   "loam", "mire",  "north", "ore",  "peat"};
  std::vector<std::string> docs;
  for (int d = 0; d < n; ++d) {
    std::string p = "Doc " + std::to_string(d) + ":";
    for (int w = 0; w < 25 + d % 13; ++w) {
      p += w % 9 == 8 ? "\n" : " ";
      p += words[(d * 7 + w * w) % 16];
    }
    docs.push_back(p);
  }
  return docs;
}

std::string join(const std::vector<std::string>& docs) {
  std::string s;
  for (const std::string& d : docs) s += d + "\n\n";
  return s;
}

struct Corpus {
  TempDir dir;
  std::vector<std::string> docs = paragraphs(60);
  DataConfig cfg;

  explicit Corpus(const std::string& tokenizer = "bpe") {
    write_file(dir.file("corpus.txt"), join(docs));
    cfg.dataset = "text";
    cfg.path = dir.file("corpus.txt");
    cfg.cache_dir = dir.file("cache");
    cfg.tokenizer = tokenizer;
    cfg.vocab_size = 300;
    cfg.seq_len = 8;
    cfg.text_test_fraction = 0.2;
    cfg.split_seed = 5;
  }
};

// The documents of tokens.u16 (cut at the end-of-document tokens), decoded.
std::vector<std::string> decoded_documents(const TokenCacheInfo& info) {
  const auto tok = load_tokenizer(info.tokenizer_path);
  const std::string bytes = testing::read_file(info.tokens_path);
  std::vector<std::string> docs;
  std::vector<int> ids;
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    const int id =
        static_cast<unsigned char>(bytes[i]) | (static_cast<unsigned char>(bytes[i + 1]) << 8);
    if (id == tok->eos_id()) {
      docs.push_back(tok->decode(ids));
      ids.clear();
    } else {
      ids.push_back(id);
    }
  }
  EXPECT_TRUE(ids.empty()) << "tokens after the last end-of-document token";
  return docs;
}

nlohmann::json manifest(const TokenCacheInfo& info) {
  return nlohmann::json::parse(testing::read_file(info.manifest_path));
}

// prepare_token_cache() with its progress lines collected.
TokenCacheInfo prepare(const DataConfig& cfg, std::string* said = nullptr) {
  return prepare_token_cache(cfg, [said](const std::string& line) {
    if (said != nullptr) *said += line + "\n";
  });
}

TEST(TokenCacheTest, BuildsOnceThenReusesAnIntactEntry) {
  Corpus c;
  const TokenCacheInfo first = prepare(c.cfg);
  EXPECT_TRUE(first.built);
  EXPECT_TRUE(std::filesystem::is_regular_file(first.manifest_path));
  EXPECT_EQ(first.vocab_size, 300);
  EXPECT_EQ(first.train_documents + first.test_documents, 60);
  EXPECT_EQ(first.test_documents, 12);
  const std::string tokens = testing::read_file(first.tokens_path);
  EXPECT_EQ(static_cast<int64_t>(tokens.size()), 2 * (first.train_tokens + first.test_tokens));
  const nlohmann::json m = manifest(first);
  EXPECT_EQ(m["train"]["tokens"].get<int64_t>(), first.train_tokens);
  EXPECT_EQ(m["tokenizer"]["kind"], "bpe");

  std::string said;
  const TokenCacheInfo second = prepare(c.cfg, &said);
  EXPECT_FALSE(second.built) << said;
  EXPECT_EQ(second.dir, first.dir);
  EXPECT_EQ(second.train_tokens, first.train_tokens);
  EXPECT_EQ(second.test_bytes, first.test_bytes);
  EXPECT_EQ(testing::read_file(second.tokens_path), tokens);
}

TEST(TokenCacheTest, TokenFileHoldsTrainingThenTestDocumentsEachEndedByEos) {
  Corpus c;
  const TokenCacheInfo info = prepare(c.cfg);
  const std::vector<std::string> decoded = decoded_documents(info);
  ASSERT_EQ(decoded.size(), 60u);
  std::vector<std::string> sorted = decoded, expected = c.docs;
  std::sort(sorted.begin(), sorted.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(sorted, expected);
  int64_t train_bytes = 0;
  for (int64_t i = 0; i < info.train_documents; ++i) train_bytes += decoded[i].size();
  EXPECT_EQ(train_bytes, info.train_bytes);
}

TEST(TokenCacheTest, ChangedCorpusIsRebuiltAndItsTokensFollow) {
  Corpus c;
  const TokenCacheInfo before = prepare(c.cfg);
  const std::string crc_before = manifest(before)["corpus_crc32"];
  std::vector<std::string> docs = c.docs;
  docs[17][4] = 'X';  // one byte of one document
  write_file(c.cfg.path, join(docs));
  std::string said;
  const TokenCacheInfo after = prepare(c.cfg, &said);
  EXPECT_TRUE(after.built);
  EXPECT_EQ(after.dir, before.dir);
  EXPECT_NE(said.find("corpus changed"), std::string::npos) << said;
  EXPECT_NE(manifest(after)["corpus_crc32"], crc_before);
  const std::vector<std::string> decoded = decoded_documents(after);
  EXPECT_NE(std::find(decoded.begin(), decoded.end(), docs[17]), decoded.end());
  EXPECT_EQ(std::find(decoded.begin(), decoded.end(), c.docs[17]), decoded.end());
}

// Damages one file of a built entry and expects the next call to rebuild it, saying `why`,
// and to end with the same token file as before.
void expect_rebuilt_after(const std::function<void(const TokenCacheInfo&)>& damage,
                          const std::string& why, const std::string& tokenizer = "bpe") {
  Corpus c(tokenizer);
  const TokenCacheInfo first = prepare(c.cfg);
  const std::string tokens = testing::read_file(first.tokens_path);
  damage(first);
  std::string said;
  const TokenCacheInfo again = prepare(c.cfg, &said);
  EXPECT_TRUE(again.built) << why;
  EXPECT_NE(said.find(why), std::string::npos) << said;
  EXPECT_EQ(testing::read_file(again.tokens_path), tokens) << why;
  EXPECT_FALSE(prepare(c.cfg).built) << why;
}

TEST(TokenCacheTest, TruncatedTokenFileIsRebuilt) {
  expect_rebuilt_after(
      [](const TokenCacheInfo& info) {
        std::filesystem::resize_file(info.tokens_path, (info.train_tokens + info.test_tokens));
      },
      "tokens.u16 has");
}

TEST(TokenCacheTest, FlippedTokenByteIsRebuilt) {
  expect_rebuilt_after(
      [](const TokenCacheInfo& info) {
        std::string bytes = testing::read_file(info.tokens_path);
        bytes[bytes.size() / 3] = static_cast<char>(bytes[bytes.size() / 3] ^ 1);
        write_file(info.tokens_path, bytes);
      },
      "tokens.u16 does not match");
}

TEST(TokenCacheTest, DamagedTokenizerIsRebuilt) {
  expect_rebuilt_after(
      [](const TokenCacheInfo& info) {
        std::string bytes = testing::read_file(info.tokenizer_path);
        bytes[bytes.size() - 5] = static_cast<char>(bytes[bytes.size() - 5] ^ 1);
        write_file(info.tokenizer_path, bytes);
      },
      "tokenizer.model does not match");
}

TEST(TokenCacheTest, GarbageManifestIsRebuilt) {
  expect_rebuilt_after(
      [](const TokenCacheInfo& info) { write_file(info.manifest_path, "{\"format\": 1, \"corp"); },
      "manifest.json is unreadable");
  expect_rebuilt_after([](const TokenCacheInfo& info) { write_file(info.manifest_path, "[]"); },
                       "manifest.json is unreadable", "bytes");
}

// Fuzzing regressions (fuzz/corpus/token_cache/regression-*): counts that sum to the file's but
// are out of range were used: a training split one token past the end of tokens.u16 (its windows
// failed in LibTorch's storage check with c10::Error, not a DataError), a negative split, or
// counts whose sum overflows int64 (undefined behaviour) and wraps to the file's.
TEST(TokenCacheTest, ManifestCountsOutOfRangeAreRebuilt) {
  const int64_t big = int64_t{1} << 62;
  for (int k = 0; k < 3; ++k) {
    Corpus c("bytes");
    const TokenCacheInfo first = prepare(c.cfg);
    const int64_t total = first.train_tokens + first.test_tokens;
    const int64_t train[] = {total + 1, -1, big};
    const int64_t test[] = {-1, total + 1, big + total};  // the last sums to 2^63 + total
    nlohmann::json m = manifest(first);
    m["train"]["tokens"] = train[k];
    m["test"]["tokens"] = test[k];
    write_file(first.manifest_path, m.dump());
    std::string said;
    const TokenCacheInfo again = prepare(c.cfg, &said);
    EXPECT_TRUE(again.built) << "case " << k;
    EXPECT_NE(said.find("the manifest's counts do not add up"), std::string::npos) << said;
    EXPECT_EQ(again.train_tokens, first.train_tokens);
    EXPECT_EQ(load_token_dataset(c.cfg).train.text_tokens, first.train_tokens);
  }
}

// A token file whose CRC-32 was made to match but which holds an id the tokenizer cannot
// produce (the model's embedding would be indexed out of range) is rebuilt.
TEST(TokenCacheTest, TokenIdOutsideTheVocabularyIsRebuilt) {
  Corpus c("bytes");
  const TokenCacheInfo first = prepare(c.cfg);
  std::string tokens = testing::read_file(first.tokens_path);
  const std::string clean = tokens;
  tokens[tokens.size() - 4] = static_cast<char>(first.vocab_size & 0xff);  // little-endian
  tokens[tokens.size() - 3] = static_cast<char>(first.vocab_size >> 8);
  write_file(first.tokens_path, tokens);
  nlohmann::json m = manifest(first);
  m["tokens"]["crc32"] = fmt::format("{:08x}", crc32_of(tokens));
  write_file(first.manifest_path, m.dump());
  std::string said;
  const TokenCacheInfo again = prepare(c.cfg, &said);
  EXPECT_TRUE(again.built);
  EXPECT_NE(said.find(fmt::format("holds token id {}, outside the vocabulary of {}",
                                  first.vocab_size, first.vocab_size)),
            std::string::npos)
      << said;
  EXPECT_EQ(testing::read_file(first.tokens_path), clean);
}

TEST(TokenCacheTest, SettingsGetTheirOwnEntries) {
  Corpus c("bytes");
  const TokenCacheInfo bytes = prepare(c.cfg);
  EXPECT_EQ(bytes.vocab_size, 257);
  EXPECT_EQ(load_tokenizer(bytes.tokenizer_path)->kind(), "bytes");
  c.cfg.split_seed = 6;
  const TokenCacheInfo seed6 = prepare(c.cfg);
  EXPECT_NE(seed6.dir, bytes.dir);
  EXPECT_TRUE(seed6.built);
  c.cfg.tokenizer = "unigram";
  const TokenCacheInfo unigram = prepare(c.cfg);
  EXPECT_NE(unigram.dir, seed6.dir);
  EXPECT_EQ(load_tokenizer(unigram.tokenizer_path)->kind(), "unigram");
  c.cfg.split_seed = 5;
  c.cfg.tokenizer = "bytes";
  EXPECT_FALSE(prepare(c.cfg).built);  // the first entry is still there and intact
}

// The documents of each split, from the token file of a bytes-tokenizer entry.
std::pair<std::vector<std::string>, std::vector<std::string>> splits_of(const DataConfig& cfg) {
  const TokenCacheInfo info = prepare(cfg);
  const std::vector<std::string> docs = decoded_documents(info);
  return {std::vector<std::string>(docs.begin(), docs.begin() + info.train_documents),
          std::vector<std::string>(docs.begin() + info.train_documents, docs.end())};
}

TEST(TokenCacheTest, SplitIsByDocumentDisjointAndSeeded) {
  Corpus c("bytes");
  const auto [train, test] = splits_of(c.cfg);
  EXPECT_EQ(test.size(), 12u);
  EXPECT_EQ(train.size(), 48u);
  std::set<std::string> all(train.begin(), train.end());
  for (const std::string& d : test) EXPECT_TRUE(all.insert(d).second) << "in both splits: " << d;
  EXPECT_EQ(all, std::set<std::string>(c.docs.begin(), c.docs.end()));
  // Each split keeps the corpus order.
  const auto position = [&](const std::string& d) {
    return std::find(c.docs.begin(), c.docs.end(), d) - c.docs.begin();
  };
  EXPECT_TRUE(std::is_sorted(test.begin(), test.end(), [&](const auto& a, const auto& b) {
    return position(a) < position(b);
  }));

  Corpus same("bytes");  // another directory and cache, the same corpus and seed
  EXPECT_EQ(splits_of(same.cfg).second, test);
  same.cfg.split_seed = 6;
  const auto other = splits_of(same.cfg).second;
  EXPECT_EQ(other.size(), 12u);
  EXPECT_NE(other, test);
}

TEST(TokenCacheTest, EachSplitNeedsADocument) {
  TempDir dir;
  write_file(dir.file("two.txt"), "first paragraph\n\nsecond paragraph\n");
  DataConfig cfg;
  cfg.dataset = "text";
  cfg.path = dir.file("two.txt");
  cfg.cache_dir = dir.file("cache");
  cfg.tokenizer = "bytes";
  cfg.text_test_fraction = 0.1;  // rounds to no test document
  try {
    prepare(cfg);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(dir.file("two.txt")), std::string::npos) << msg;
    EXPECT_NE(msg.find("2 documents"), std::string::npos) << msg;
  }
  cfg.text_test_fraction = 0.5;
  EXPECT_EQ(prepare(cfg).test_documents, 1);
}

TEST(TokenCacheTest, ConcurrentCallersBuildOnce) {
  Corpus c;
  std::vector<TokenCacheInfo> infos(3);
  std::vector<std::thread> threads;
  for (auto& info : infos) {
    threads.emplace_back([&] {
      try {
        info = prepare(c.cfg);
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::count_if(infos.begin(), infos.end(), [](const auto& i) { return i.built; }), 1);
  for (const auto& info : infos) EXPECT_EQ(info.train_tokens, infos[0].train_tokens);
}

TEST(TokenCacheTest, DatasetIsWindowsOfTheMappedTokenFile) {
  Corpus c;
  const TokenCacheInfo info = prepare(c.cfg);
  const std::string bytes = testing::read_file(info.tokens_path);
  const auto token = [&](int64_t i) {
    return static_cast<int64_t>(static_cast<unsigned char>(bytes[2 * i]) |
                                (static_cast<unsigned char>(bytes[2 * i + 1]) << 8));
  };
  torch::Tensor kept;
  {
    const DatasetSplits s = load_token_dataset(c.cfg);
    EXPECT_EQ(s.tokenizer_path, info.tokenizer_path);
    for (const Dataset* d : {&s.train, &s.test}) {
      EXPECT_EQ(d->kind, DataKind::kText);
      EXPECT_EQ(d->num_classes, 300);
      EXPECT_EQ(d->inputs.scalar_type(), torch::kInt16);
      EXPECT_EQ(d->inputs.strides(), (std::vector<int64_t>{8, 1}));  // views, no copy
      EXPECT_EQ(d->example_shape(), (std::vector<int64_t>{8}));
    }
    EXPECT_EQ(s.train.size(), (info.train_tokens - 1) / 8);
    EXPECT_EQ(s.test.size(), (info.test_tokens - 1) / 8);
    EXPECT_EQ(s.train.text_tokens, info.train_tokens);
    EXPECT_EQ(s.test.text_bytes, info.test_bytes);
    EXPECT_EQ(s.train.inputs.data_ptr<int16_t>() + 8, s.train.inputs[1].data_ptr<int16_t>());
    EXPECT_EQ(s.test.inputs.storage().data(), s.train.inputs.storage().data());
    for (int64_t k = 0; k < 9; ++k) {
      EXPECT_EQ(s.train.inputs[2][k].item<int64_t>(), token(16 + k));
      EXPECT_EQ(s.test.inputs[1][k].item<int64_t>(), token(info.train_tokens + 8 + k));
    }
    const MicroBatch b = take_range(s.test, 0, 2, false);
    EXPECT_EQ(b.inputs[1][0].item<int64_t>(), token(info.train_tokens + 8));
    EXPECT_EQ(b.targets[1][7].item<int64_t>(), token(info.train_tokens + 16));
    kept = s.test.inputs.narrow(0, 1, 1);
  }
  // A view keeps the mapping alive after the splits are gone.
  EXPECT_EQ(kept[0][0].item<int64_t>(), token(info.train_tokens + 8));
}

TEST(TokenCacheTest, TextBatchesReadIdsAsUnsigned) {
  // Token ids above 32767 are stored as negative int16 values.
  Dataset d;
  d.kind = DataKind::kText;
  d.name = "ids";
  d.inputs = torch::tensor({-1, 0, -32768, 32767, 5}, torch::kInt16).as_strided({2, 3}, {2, 1});
  const MicroBatch all = take_range(d, 0, 2, false);
  EXPECT_TRUE(torch::equal(all.inputs, torch::tensor({{65535, 0}, {32768, 32767}}, torch::kLong)));
  EXPECT_TRUE(torch::equal(all.targets, torch::tensor({{0, 32768}, {32767, 5}}, torch::kLong)));
  MicroBatchSource source(d, 2, 0, 1, 3, {});
  const MicroBatch b = source.next();
  EXPECT_EQ(b.inputs.min().item<int64_t>(), 0);
  EXPECT_EQ(b.inputs.max().item<int64_t>(), 65535);
}

TEST(TokenCacheTest, NotATextDatasetIsAConfigError) {
  DataConfig cfg;
  cfg.dataset = "mnist";
  EXPECT_THROW(prepare_token_cache(cfg), ConfigError);
  EXPECT_THROW(read_documents(cfg), ConfigError);
}

}  // namespace
}  // namespace desync
