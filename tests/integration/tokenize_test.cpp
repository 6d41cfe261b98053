// `desync tokenize` as users run it: a build, a reuse, a SentencePiece build, and the refusal of
// a dataset that is not a text corpus.
#include <gtest/gtest.h>

#include <string>

#include "test_util.h"

namespace desync {
namespace {

using testing::TempDir;

std::string tokenize(const std::string& args) {
  return testing::desync_binary() + " tokenize " + args + " 2>&1";
}

TEST(Tokenize, BuildsReusesAndRefusesNonTextDatasets) {
  TempDir dir;
  std::string corpus;
  for (int d = 0; d < 50; ++d) {
    corpus += "Paragraph " + std::to_string(d) + " of a small corpus,\nwith a second line.\n\n";
  }
  testing::write_file(dir.file("corpus.txt"), corpus);
  testing::write_file(dir.file("cfg.toml"), "[data]\ndataset = \"text\"\npath = \"" +
                                                dir.file("corpus.txt") + "\"\ncache_dir = \"" +
                                                dir.file("cache") + "\"\ntokenizer = \"bytes\"\n");
  const std::string cfg = dir.file("cfg.toml");

  const auto first = testing::run_command(tokenize(cfg));
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_NE(first.output.find(": built, bytes tokenizer, 257 pieces"), std::string::npos)
      << first.output;
  EXPECT_NE(first.output.find("train        45 documents"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("test          5 documents"), std::string::npos) << first.output;
  EXPECT_NE(first.output.find("bytes/token"), std::string::npos) << first.output;

  const auto again = testing::run_command(tokenize(cfg));
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_NE(again.output.find(": reused,"), std::string::npos) << again.output;

  const auto bpe =
      testing::run_command(tokenize(cfg + " --set data.tokenizer=bpe --set data.vocab_size=300"));
  ASSERT_EQ(bpe.status, 0) << bpe.output;
  EXPECT_NE(bpe.output.find(": built, bpe tokenizer, 300 pieces"), std::string::npos) << bpe.output;

  const auto mnist = testing::run_command(tokenize(cfg + " --set data.dataset=mnist"));
  EXPECT_EQ(mnist.status, 2) << mnist.output;
  EXPECT_EQ(mnist.output,
            "desync: desync tokenize needs a text corpus (data.dataset = \"text\" or \"gcide\"), "
            "not \"mnist\"\n");
}

}  // namespace
}  // namespace desync
