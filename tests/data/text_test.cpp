// Tests of the text dataset: paragraphs as documents, files and directories, and byte-level
// windows and micro-batches through the token cache (tokenizer = "bytes").
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/batch_source.h"
#include "desync/data/dataset.h"
#include "desync/data/token_cache.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::TempDir;
using testing::write_file;

DataConfig text_config(const TempDir& dir, const std::string& path) {
  DataConfig cfg;
  cfg.dataset = "text";
  cfg.path = path;
  cfg.cache_dir = dir.file("cache");
  cfg.tokenizer = "bytes";
  cfg.seq_len = 16;
  cfg.text_test_fraction = 0.25;
  return cfg;
}

TEST(TextTest, DocumentsAreBlankLineSeparatedParagraphs) {
  TempDir dir;
  write_file(dir.file("a.txt"),
             "\n\nfirst line\nsecond line\n\n  \t\nnext\r\n\r\n\n\nlast  one \n  indented\n");
  const std::vector<std::string> docs = read_documents(text_config(dir, dir.file("a.txt")));
  EXPECT_EQ(docs, (std::vector<std::string>{"first line\nsecond line", "next\r",
                                            "last  one \n  indented"}));
}

TEST(TextTest, DirectoryIsReadFileByFileInNameOrder) {
  TempDir dir;
  std::filesystem::create_directory(dir.file("corpus"));
  write_file(dir.file("corpus/b.txt"), "bee\n\nbuzz");
  write_file(dir.file("corpus/a.txt"), "ant");
  write_file(dir.file("corpus/.hidden"), "skipped");
  std::filesystem::create_directory(dir.file("corpus/sub"));
  EXPECT_EQ(read_documents(text_config(dir, dir.file("corpus"))),
            (std::vector<std::string>{"ant", "bee", "buzz"}));
}

TEST(TextTest, MissingOrEmptyCorpusIsADataError) {
  TempDir dir;
  EXPECT_THROW(read_documents(text_config(dir, dir.file("absent.txt"))), DataError);
  write_file(dir.file("blank.txt"), "\n \n\t\n");
  EXPECT_THROW(read_documents(text_config(dir, dir.file("blank.txt"))), DataError);
  std::filesystem::create_directory(dir.file("empty"));
  EXPECT_THROW(read_documents(text_config(dir, dir.file("empty"))), DataError);
  EXPECT_THROW(read_documents(text_config(dir, "")), ConfigError);
}

TEST(TextTest, BytesTokenizerGivesNextBytePredictionPairs) {
  TempDir dir;
  std::string text;
  for (int d = 0; d < 40; ++d) {
    for (int k = 0; k < 30 + d; ++k) text += static_cast<char>('a' + (d * 7 + k * 3) % 26);
    text += "\n\n";
  }
  write_file(dir.file("corpus.txt"), text);
  const DataConfig cfg = text_config(dir, dir.file("corpus.txt"));
  const DatasetSplits s = load_dataset(cfg, 0);
  EXPECT_EQ(s.train.num_classes, 257);
  EXPECT_FALSE(s.train.targets.defined());
  // 40 documents of 30..69 bytes, each followed by the end-of-document token 256.
  EXPECT_EQ(s.train.text_tokens + s.test.text_tokens, 40 * 30 + 39 * 40 / 2 + 40);
  EXPECT_EQ(s.train.text_bytes + s.test.text_bytes, 40 * 30 + 39 * 40 / 2);
  EXPECT_EQ(s.train.size(), (s.train.text_tokens - 1) / 16);

  MicroBatchSource source(s.train, 4, 0, 1, 7, {});
  const MicroBatch b = source.next();
  EXPECT_EQ(b.inputs.scalar_type(), torch::kLong);
  ASSERT_EQ(b.inputs.sizes(), (std::vector<int64_t>{4, 16}));
  ASSERT_EQ(b.targets.sizes(), (std::vector<int64_t>{4, 16}));
  EXPECT_TRUE(torch::equal(b.targets.narrow(1, 0, 15), b.inputs.narrow(1, 1, 15)));
  // Every id is a byte of a document or the end-of-document token, and every row is a window
  // of the token stream.
  const torch::Tensor flat = s.train.inputs.as_strided({s.train.text_tokens}, {1}, 0);
  for (int r = 0; r < 4; ++r) {
    bool found = false;
    for (int64_t w = 0; w < s.train.size() && !found; ++w) {
      found = torch::equal(s.train.inputs[w].narrow(0, 0, 16).to(torch::kLong), b.inputs[r]);
    }
    EXPECT_TRUE(found) << "row " << r;
  }
  EXPECT_LE(flat.max().item<int64_t>(), 256);
  EXPECT_EQ((flat == 256).sum().item<int64_t>(), s.train.text_tokens - s.train.text_bytes);
}

}  // namespace
}  // namespace desync
