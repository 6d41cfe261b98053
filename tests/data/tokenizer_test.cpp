// Tests of the tokenizers: exact round trips of arbitrary bytes, deterministic training, the
// tokenizer file and its corruption checks.
#include "desync/data/tokenizer.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::TempDir;
using testing::write_file;

// A small corpus of made-up words: lines of words, sentences, paragraphs of lines.
std::vector<std::string> corpus(int documents, uint32_t seed) {
  const char* syllables[] = {"ka", "lo",  "mi", "ne", "ra", "to", "su",  "ve", "qui", "zor",
                             "th", "ing", "ed", "an", "or", "el", "ust", "ph", "ae",  "x"};
  std::mt19937 gen(seed);
  std::vector<std::string> docs;
  for (int d = 0; d < documents; ++d) {
    std::string doc;
    const int words = 30 + static_cast<int>(gen() % 40);
    for (int w = 0; w < words; ++w) {
      const int parts = 1 + static_cast<int>(gen() % 3);
      std::string word;
      for (int p = 0; p < parts; ++p) word += syllables[gen() % 20];
      if (gen() % 9 == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
      doc += word;
      doc += w % 11 == 10 ? ".\n" : (gen() % 7 == 0 ? ", " : " ");
    }
    docs.push_back(doc);
  }
  return docs;
}

// Hard strings: random bytes, control characters and runs of blanks, the characters the
// reversible image uses (U+2581, U+F700..U+F7FF), valid non-ASCII characters, corpus text.
std::vector<std::string> hard_strings(int count, uint32_t seed) {
  std::mt19937 gen(seed);
  const std::vector<std::string> pieces = {" ",
                                           "  ",
                                           "\n",
                                           "\t",
                                           "\r",
                                           std::string(1, '\0'),
                                           "\r\n",
                                           "ka",
                                           "zor",
                                           "\xE2\x96\x81",
                                           "\xEF\x9C\x80",
                                           "\xEF\x9C\x8A",
                                           "\xEF\x9F\xBF",
                                           "é",
                                           "ā",
                                           "\xEF\xBF\xBD",
                                           "\xF0\x9F\x98\x80",
                                           "\xFF",
                                           "\xC3",
                                           "\x80",
                                           "\xED\xA0\x80",
                                           "\xC0\xAF",
                                           "\x7F",
                                           "."};
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    std::string s;
    const int len = static_cast<int>(gen() % 48);
    if (i % 2 == 0) {
      for (int k = 0; k < len; ++k) s += static_cast<char>(gen() & 0xFF);
    } else {
      for (int k = 0; k < len; ++k) s += pieces[gen() % pieces.size()];
    }
    out.push_back(s);
  }
  out.push_back("");
  out.push_back(std::string(5, '\0'));
  out.push_back("   leading and trailing   ");
  return out;
}

void expect_round_trips(const Tokenizer& t) {
  int failures = 0;
  for (const std::string& s : hard_strings(1000, 11)) {
    const std::vector<int> ids = t.encode(s);
    for (int id : ids) ASSERT_TRUE(id >= 0 && id < t.vocab_size()) << t.kind() << " id " << id;
    const std::string back = t.decode(ids);
    if (back != s && ++failures <= 3) {
      ADD_FAILURE() << t.kind() << ": " << ::testing::PrintToString(s) << " came back as "
                    << ::testing::PrintToString(back);
    }
  }
  EXPECT_EQ(failures, 0) << t.kind();
}

TEST(TokenizerTest, BytesRoundTripExactly) {
  const auto t = make_byte_tokenizer();
  EXPECT_EQ(t->kind(), "bytes");
  EXPECT_EQ(t->vocab_size(), 257);
  EXPECT_EQ(t->eos_id(), 256);
  EXPECT_EQ(t->encode(std::string("a\0\xFF", 3)), (std::vector<int>{97, 0, 255}));
  EXPECT_EQ(t->decode({104, 105, 256}), "hi");  // the end-of-document token decodes to nothing
  EXPECT_THROW(t->decode({257}), DataError);
  expect_round_trips(*t);
}

TEST(TokenizerTest, BpeRoundTripsArbitraryBytesExactly) {
  const auto t = train_tokenizer(corpus(200, 1), "bpe", 400);
  EXPECT_EQ(t->kind(), "bpe");
  EXPECT_EQ(t->vocab_size(), 400);
  expect_round_trips(*t);
}

TEST(TokenizerTest, UnigramRoundTripsArbitraryBytesExactly) {
  const auto t = train_tokenizer(corpus(200, 1), "unigram", 400);
  EXPECT_EQ(t->kind(), "unigram");
  EXPECT_EQ(t->vocab_size(), 400);
  expect_round_trips(*t);
}

TEST(TokenizerTest, TrainedPiecesCompressTheirCorpus) {
  const std::vector<std::string> docs = corpus(200, 1);
  for (const char* kind : {"bpe", "unigram"}) {
    const auto t = train_tokenizer(docs, kind, 400);
    size_t bytes = 0, tokens = 0;
    for (const std::string& d : corpus(20, 2)) {  // unseen text of the same kind
      bytes += d.size();
      tokens += t->encode(d).size();
      EXPECT_EQ(t->decode(t->encode(d)), d);
    }
    EXPECT_GT(static_cast<double>(bytes) / static_cast<double>(tokens), 2.0) << kind;
  }
}

TEST(TokenizerTest, TrainingIsDeterministic) {
  const std::vector<std::string> docs = corpus(200, 3);
  for (const char* kind : {"bpe", "unigram"}) {
    const std::string a = train_tokenizer(docs, kind, 350)->serialize();
    const std::string b = train_tokenizer(docs, kind, 350)->serialize();
    EXPECT_EQ(a, b) << kind;
    EXPECT_NE(a, train_tokenizer(corpus(200, 4), kind, 350)->serialize()) << kind;
  }
}

TEST(TokenizerTest, TooLargeAVocabularyIsADataError) {
  EXPECT_THROW(train_tokenizer({"ab ab ab", "ba ba"}, "bpe", 5000), DataError);
  EXPECT_THROW(train_tokenizer({"ab ab ab", "ba ba"}, "unigram", 5000), DataError);
  EXPECT_THROW(train_tokenizer(corpus(10, 1), "wordpiece", 300), ConfigError);
}

TEST(TokenizerTest, FileRoundTripKeepsKindAndModel) {
  TempDir dir;
  const auto bpe = train_tokenizer(corpus(100, 5), "bpe", 300);
  write_file(dir.file("bpe.model"), bpe->serialize());
  write_file(dir.file("bytes.model"), make_byte_tokenizer()->serialize());
  const auto loaded = load_tokenizer(dir.file("bpe.model"));
  EXPECT_EQ(loaded->kind(), "bpe");
  EXPECT_EQ(loaded->vocab_size(), 300);
  EXPECT_EQ(loaded->eos_id(), bpe->eos_id());
  EXPECT_EQ(loaded->serialize(), bpe->serialize());
  const std::string text = corpus(1, 6)[0];
  EXPECT_EQ(loaded->encode(text), bpe->encode(text));
  const auto bytes = load_tokenizer(dir.file("bytes.model"));
  EXPECT_EQ(bytes->kind(), "bytes");
  EXPECT_EQ(bytes->vocab_size(), 257);
}

TEST(TokenizerTest, LoadRejectsCorruptFiles) {
  TempDir dir;
  const std::string good = train_tokenizer(corpus(100, 5), "unigram", 300)->serialize();
  const auto expect_rejected = [&](const std::string& name, const std::string& content) {
    write_file(dir.file(name), content);
    try {
      load_tokenizer(dir.file(name));
      ADD_FAILURE() << name << " was accepted";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find(dir.file(name)), std::string::npos) << e.what();
    }
  };
  std::string flipped = good;
  flipped[good.size() / 2] = static_cast<char>(flipped[good.size() / 2] ^ 0x20);
  expect_rejected("flipped", flipped);
  expect_rejected("truncated", good.substr(0, good.size() - 10));
  expect_rejected("garbage", "not a tokenizer at all\n");
  expect_rejected("empty", "");
  std::string kind = good;
  kind.replace(kind.find("unigram"), 7, "bigramx");
  expect_rejected("kind", kind);
  EXPECT_THROW(load_tokenizer(dir.file("absent")), DataError);
}

}  // namespace
}  // namespace desync
