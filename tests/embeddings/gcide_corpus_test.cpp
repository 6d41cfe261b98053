// Tests of the GCIDE + WordNet-gloss word corpus: the spec's worked example, each text rule
// alone, tokenisation against a regex reference, the dictd files, and (when Debian's dict-gcide
// and wordnet-base are installed) the size of the real corpus against the spec's figures.
#include "desync/embeddings/gcide_corpus.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <regex>
#include <string>
#include <unordered_map>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/word_corpus.h"
#include "test_util.h"

namespace desync {
namespace {

using Strings = std::vector<std::string>;
using testing::TempDir;
using testing::write_file;

// The reference tokeniser of step 5, written with a regex over the lower-cased text.
Strings reference_tokens(const std::string& text) {
  std::string low = text;
  for (char& c : low) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
  Strings out;
  static const std::regex kRun("[a-z]+");
  for (auto it = std::sregex_iterator(low.begin(), low.end(), kRun); it != std::sregex_iterator();
       ++it) {
    const std::string t = it->str();
    if (t.size() > 1 || t == "a" || t == "i") out.push_back(t);
  }
  return out;
}

Strings split_spaces(const std::string& s) {
  Strings out;
  size_t i = 0;
  while (i <= s.size()) {
    const size_t j = std::min(s.find(' ', i), s.size());
    out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

TEST(GcideCorpusTest, SpecExampleGivesTheSpecSentence) {
  const std::string entry =
      "King \\King\\ (k[i^]ng), n. [AS. cyng.] 1. A chief ruler; pre[\"e]minence of the {king}. "
      "--Shak.\n   [1913 Webster]\n   Syn: monarch\n";
  EXPECT_EQ(gcide_entry_sentences(entry), Strings{"king a chief ruler preeminence of the king"});
  // With keep_syn, the line "[1913 Webster]" leaves a blank line before the Syn: line.
  EXPECT_EQ(gcide_entry_sentences(entry, /*keep_syn=*/true),
            (Strings{"king a chief ruler preeminence of the king", "syn monarch"}));
}

TEST(GcideCorpusTest, InvalidUtf8BytesBecomeSpaces) {
  EXPECT_EQ(gcide_entry_text("ab\xff"
                             "cd \xc3\xa9t\xc3"),
            "ab cd \xc3\xa9t ");
}

TEST(GcideCorpusTest, HeadwordFieldGoesWithThePronunciationAfterIt) {
  EXPECT_EQ(gcide_entry_text("Word \\Word\\ (w[^o]rd (x)), n. text"), "Word , n. text");
  EXPECT_EQ(gcide_entry_text("Word \\Word\\, n. (kept)"), "Word , n. (kept)");
  // Only a field on one line goes; a pronunciation on the next line stays.
  EXPECT_EQ(gcide_entry_text("a \\b\nc\\ d"), "a \\b\nc\\ d");
  EXPECT_EQ(gcide_entry_text("W \\W\\\n(kept)"), "W \n(kept)");
}

TEST(GcideCorpusTest, SynBlockGoesUpToTheNextBlankLine) {
  const std::string entry =
      "Def one.\n   Syn: alpha, beta\n        gamma\n   [WordNet 1.5]\n\nNext para.\n"
      "In text Syn: stays.";
  EXPECT_EQ(gcide_entry_text(entry), "Def one.\n\nNext para.\nIn text Syn: stays.");
  EXPECT_EQ(gcide_entry_sentences(entry), (Strings{"def one", "next para in text syn stays"}));
  EXPECT_EQ(gcide_entry_sentences(entry, /*keep_syn=*/true),
            (Strings{"def one syn alpha beta gamma", "next para in text syn stays"}));
}

TEST(GcideCorpusTest, CharacterCodesBecomeTheirLetters) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[i^]", "i"},
      {"[=a]", "a"},
      {"[\"e]", "e"},
      {"['e]", "e"},
      {"[`e]", "e"},
      {"[.a]", "a"},
      {"[~n]", "n"},
      {"[^e]", "e"},
      {"[-e]", "e"},
      {"[oo^]", "oo"},
      {"[=oo]", "oo"},
      {"[ae]", "ae"},
      {"[oe]", "oe"},
      {"[imac]", "i"},
      {"[aum]", "a"},
      {"[asl]", "a"},
      {"[add]", "a"},
      {"[eth]", "th"},
      {"[thorn]", "th"},
      {"[root]", ""},
      // Not codes: deleted as bracketed spans by step 4.
      {"[th]", ""},
      {"[ng]", ""},
      {"[,c]", ""},
      {"[AE]", ""},
      {"[=abc]", ""},
      {"[e^^]", ""},
  };
  for (const auto& [code, letters] : cases) {
    EXPECT_EQ(gcide_entry_text("x" + code + "y"), "x" + letters + "y") << code;
  }
  // Codes go first, so one inside a span does not end it early; outside, it stays a letter.
  EXPECT_EQ(gcide_entry_text("k[\"o]nig [G. k[\"o]nig] end"), "konig  end");
}

TEST(GcideCorpusTest, BracketedSpansGoWholeAndNested) {
  EXPECT_EQ(gcide_entry_text("alpha [L. beta [gamma] delta] omega"), "alpha  omega");
  EXPECT_EQ(gcide_entry_text("alpha [AS. x,\n  y [root]44.] omega\n[1913 Webster]"),
            "alpha  omega\n");
  EXPECT_EQ(gcide_entry_text("alpha [beta"), "alpha beta");  // never closed: the "[" alone
  EXPECT_EQ(gcide_entry_text("alpha ] beta"), "alpha ] beta");
}

TEST(GcideCorpusTest, BracesGoAndCitationsGoToTheEndOfTheLine) {
  EXPECT_EQ(gcide_entry_text("the {king}. --Shak. x\nnext --R.\nChoate"),
            "the king. \nnext \nChoate");
  EXPECT_EQ(gcide_entry_text("a -- Bee, x--y, x--{Z}"), "a -- Bee, x--y, x--Z");
}

TEST(GcideCorpusTest, ParagraphsAreSentencesAndBlankMeansAfterTheRules) {
  // A line left blank by the rules ("[1913 Webster]") separates paragraphs too.
  EXPECT_EQ(gcide_entry_sentences("One two.\n  \t\nThree\n[1913 Webster]\nfour\n\n\n--Shak.\n"),
            (Strings{"one two", "three", "four"}));
}

TEST(GcideCorpusTest, TokensAreLowerCaseLetterRunsWithoutStrayLetters) {
  Strings out;
  append_token_sentences("A I b X don't e-mail Two CAF\xc3\x89s", out);
  EXPECT_EQ(out, Strings{"a i don mail two caf"});
  // Random text against the regex reference.
  std::mt19937 rng(7);
  const std::string alphabet = "abcdeiAIBZ  .-'\n\t\xc3\xa9";
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    const int n = std::uniform_int_distribution<int>(0, 60)(rng);
    for (int k = 0; k < n; ++k) text += alphabet[rng() % alphabet.size()];
    Strings got;
    append_token_sentences(text, got);
    const Strings want = reference_tokens(text);
    if (want.empty()) {
      EXPECT_TRUE(got.empty()) << text;
    } else {
      ASSERT_EQ(got.size(), 1u) << text;
      EXPECT_EQ(split_spaces(got[0]), want) << text;
      EXPECT_EQ(word_tokens(got[0]), want) << text;  // the header's promise
    }
  }
}

TEST(GcideCorpusTest, LongParagraphsSplitIntoPiecesOfAThousandTokens) {
  std::string text;
  Strings words;
  for (int i = 0; i < 2500; ++i) {
    std::string w = "wa";
    for (int v = i; v > 0; v /= 26) w += static_cast<char>('a' + v % 26);
    words.push_back(w);
    text += w + (i % 7 == 0 ? "\n" : " ");
  }
  Strings out;
  append_token_sentences(text, out);
  ASSERT_EQ(out.size(), 3u);
  Strings joined;
  for (size_t s = 0; s < out.size(); ++s) {
    const Strings piece = split_spaces(out[s]);
    EXPECT_EQ(piece.size(), s < 2 ? 1000u : 500u);
    joined.insert(joined.end(), piece.begin(), piece.end());
  }
  EXPECT_EQ(joined, words);
}

// dictd base 64, most significant digit first.
std::string b64(int64_t v) {
  static const char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  do {
    out.insert(out.begin(), kDigits[v % 64]);
    v /= 64;
  } while (v > 0);
  return out;
}

void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  gzclose(f);
}

// A dictd folder: the entries concatenated, and index lines naming them by headword.
struct DictFixture {
  TempDir dir;
  DictFixture() {
    const std::vector<std::string> entries = {
        "00-database-info\n   licence text here\n\n",
        "Apple \\Ap\"ple\\, n. A fruit. [1913 Webster]\n\n",
        "Bee \\Bee\\, n. An insect that makes honey.\n\n   2. A meeting.\n\n",
        "Cat \\Cat\\, n. A small pet.\n\n",
    };
    std::string dict;
    std::vector<std::pair<int64_t, int64_t>> at;
    for (const std::string& e : entries) {
      at.emplace_back(static_cast<int64_t>(dict.size()), static_cast<int64_t>(e.size()));
      dict += e;
    }
    const auto line = [&](const std::string& head, size_t e) {
      return head + "\t" + b64(at[e].first) + "\t" + b64(at[e].second) + "\n";
    };
    // Out of order, a range named twice (one entry), a range named by 00- and a word (kept).
    write_file(dir.file("gcide.index"), line("Cat", 3) + line("00-database-info", 0) +
                                            line("Bee", 2) + line("Apple", 1) + line("Bees", 2) +
                                            line("00-alias", 3));
    write_gzip(dir.file("gcide.dict.dz"), dict);
  }
};

void write_wordnet_glosses(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const char* kLicence = "  1 This software and database is being provided to you, the LICENSEE\n";
  write_file(dir + "/data.noun",
             std::string(kLicence) +
                 "00001740 03 n 01 entity 0 000 | that which is perceived; \"an entity\"  \n");
  write_file(dir + "/data.verb", std::string(kLicence) +
                                     "00001740 29 v 01 breathe 0 000 02 + 02 00 + 08 00 | "
                                     "draw air into the lungs\n");
  write_file(dir + "/data.adj", "00001740 00 a 01 able 0 000 | having the means\n");
  write_file(dir + "/data.adv", "00001740 02 r 01 barely 0 000 | by a very little\n");
  for (const char* pos : {"noun", "verb", "adj", "adv"}) {
    write_file(dir + "/index." + std::string(pos), "");
    write_file(dir + "/" + std::string(pos) + ".exc", "");
  }
}

TEST(GcideCorpusTest, DictdFilesGiveTheEntriesInOffsetOrderThenTheGlosses) {
  DictFixture fx;
  GcideCorpusOptions opt;
  opt.glosses = false;
  EXPECT_EQ(
      gcide_sentences(fx.dir.path(), opt),
      (Strings{"apple a fruit", "bee an insect that makes honey", "a meeting", "cat a small pet"}));
  opt.glosses = true;
  opt.wordnet_dir = fx.dir.file("wn");
  write_wordnet_glosses(opt.wordnet_dir);
  const Strings glosses = {"that which is perceived an entity", "draw air into the lungs",
                           "having the means", "by a very little"};
  EXPECT_EQ(wordnet_gloss_sentences(opt.wordnet_dir), glosses);
  const Strings all = gcide_sentences(fx.dir.path(), opt);
  ASSERT_EQ(all.size(), 8u);
  EXPECT_EQ(Strings(all.begin() + 4, all.end()), glosses);
}

TEST(GcideCorpusTest, MissingOrBrokenFilesAreDataErrors) {
  try {
    gcide_sentences("/nonexistent/dictd");
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("dict-gcide"), std::string::npos) << e.what();
  }
  DictFixture fx;
  write_file(fx.dir.file("gcide.index"), "Apple\tA\tB\nbroken line\n");
  try {
    gcide_sentences(fx.dir.path(), {.glosses = false});
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("gcide.index:2"), std::string::npos) << e.what();
  }
  write_file(fx.dir.file("gcide.index"), "Apple\tA\tzzzz\n");  // past the end
  EXPECT_THROW(gcide_sentences(fx.dir.path(), {.glosses = false}), DataError);
}

// The real corpus (Debian's dict-gcide and wordnet-base) against the spec's figures: 3.77M
// GCIDE tokens, 1.46M gloss tokens, 364,640 sentences, 43.2k types with count >= 5, each
// within 2%. Measured here: 3,770,906 + 1,461,800 tokens, 364,670 sentences (247,011 +
// 117,659), 43,260 types.
TEST(GcideCorpusTest, SlowRealCorpusMatchesTheSpecFigures) {
  if (!std::filesystem::exists(std::string(kDefaultDictdDir) + "/gcide.dict.dz") ||
      !std::filesystem::exists("/usr/share/wordnet/data.noun")) {
    GTEST_SKIP() << "needs dict-gcide and wordnet-base (apt-get install dict-gcide wordnet-base)";
  }
  GcideCorpusOptions opt;
  opt.glosses = false;
  const Strings gcide = gcide_sentences(kDefaultDictdDir, opt);
  const Strings glosses = wordnet_gloss_sentences(opt.wordnet_dir);
  std::unordered_map<std::string, int64_t> counts;
  const auto count = [&](const Strings& sentences) {
    int64_t n = 0;
    for (const std::string& s : sentences) {
      size_t i = 0;
      while (i <= s.size()) {
        const size_t j = std::min(s.find(' ', i), s.size());
        ++counts[s.substr(i, j - i)];
        ++n;
        i = j + 1;
      }
    }
    return n;
  };
  const double gcide_tokens = static_cast<double>(count(gcide));
  const double gloss_tokens = static_cast<double>(count(glosses));
  int64_t types = 0;
  for (const auto& [word, c] : counts) types += c >= 5;
  const auto near = [](double got, double want) { return std::abs(got / want - 1.0) < 0.02; };
  EXPECT_TRUE(near(gcide_tokens, 3.77e6)) << gcide_tokens;
  EXPECT_TRUE(near(gloss_tokens, 1.46e6)) << gloss_tokens;
  EXPECT_TRUE(near(static_cast<double>(gcide.size() + glosses.size()), 364640))
      << gcide.size() << " + " << glosses.size();
  EXPECT_TRUE(near(static_cast<double>(types), 43.2e3)) << types;
  EXPECT_EQ(glosses.size(), 117659u);  // one per WordNet 3.0 synset
}

}  // namespace
}  // namespace desync
