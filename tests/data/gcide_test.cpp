// Tests of the GCIDE reader: dictd numbers, the markup rules, a hand-made dictionary, and the
// real dictionary when dict-gcide is installed.
#include "desync/data/gcide.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/token_cache.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::TempDir;
using testing::write_file;

// dictd's base 64, most significant digit first.
std::string dictd_digits(int64_t v) {
  const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string s;
  do {
    s.insert(s.begin(), alphabet[v % 64]);
    v /= 64;
  } while (v > 0);
  return s;
}

void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  gzclose(f);
}

TEST(GcideTest, DictdNumbers) {
  EXPECT_EQ(dictd_number("A"), 0);
  EXPECT_EQ(dictd_number("/"), 63);
  EXPECT_EQ(dictd_number("BA"), 64);
  EXPECT_EQ(dictd_number("5I"), 57 * 64 + 8);
  EXPECT_EQ(dictd_number("Fz"), 5 * 64 + 51);
  EXPECT_EQ(dictd_number(dictd_digits(13315596)), 13315596);
  EXPECT_EQ(dictd_number(""), -1);
  EXPECT_EQ(dictd_number("A-B"), -1);
}

TEST(GcideTest, CharacterCodesBecomeUtf8AndBracketedTextStays) {
  EXPECT_EQ(gcide_plain_text("na[imac]ve [=a] [\"u] [ae] [oe] [,c] [^e] ['e] [a^] [-e] [aum]"),
            "naīve ā ü æ œ ç ê é ă ē ä");
  EXPECT_EQ(gcide_plain_text("Gr. [alpha] [Delta] [sigmat]; 45[deg] [sect] [frac34] [frac1x100]"),
            "Gr. α Δ ς; 45° § 3/4 1/100");
  EXPECT_EQ(gcide_plain_text("B[aum]th[nbsp]X, Ph[oe]nix [th]e [OE]"), "Bäth\u00a0X, Phœnix t͟he Œ");
  EXPECT_EQ(gcide_plain_text("x [L. ad + fatuus foolish.] [Obs.] [R.] [2] [He] [xyz]"),
            "x [L. ad + fatuus foolish.] [Obs.] [R.] [2] [He] [xyz]");
}

TEST(GcideTest, SourceTagsGoAndTheirBlankLinesWithThem) {
  EXPECT_EQ(gcide_plain_text("   1. To infatuate. [Obs.] --Milton.\n"
                             "      [1913 Webster]\n"
                             "\n"
                             "   2. More. [WordNet 1.5 +PJC] [PJC]\n"
                             "      [Webster 1913 Suppl.]\n"
                             "   Done.\n"),
            "1. To infatuate. [Obs.] --Milton.\n\n2. More.\nDone.");
  EXPECT_EQ(gcide_plain_text("a [1913 Webster] This letter [Century Dict. 1906]"), "a This letter");
}

TEST(GcideTest, HeadwordFieldsBracesAndLayout) {
  EXPECT_EQ(gcide_plain_text("Affatuate \\Af*fat\"u*ate\\, v. t. [L. ad + fatuus foolish.]\n"
                             "   To infatuate. See {Afeard}, {Fool}.\n"
                             "   [1913 Webster]\n"
                             "\n"
                             "\n"
                             "   -- {Gre*ga\"ri*ous*ly}, adv.    --Shak.   \n"),
            "Affatuate, v. t. [L. ad + fatuus foolish.]\n"
            "To infatuate. See Afeard, Fool.\n"
            "\n"
            "-- Gregariously, adv. --Shak.");
  // The pronunciation in parentheses stays, with its codes converted.
  EXPECT_EQ(gcide_plain_text("Abalone \\Ab`a*lo\"ne\\ ([a^]b`[.a]*l[=o]\"n[-e]), n."),
            "Abalone (ăb`ȧ*lō\"nē), n.");
  // A headword broken over two lines.
  EXPECT_EQ(gcide_plain_text("Band Aid \\Band\"\n   Aid\\, n.\n   A bandage."),
            "Band Aid, n.\nA bandage.");
  // A backslash that opens no field stays.
  EXPECT_EQ(gcide_plain_text("a \\ b"), "a \\ b");
}

TEST(GcideTest, EpigraphBeforeTheFirstHeadwordGoes) {
  EXPECT_EQ(gcide_plain_text("\n\n      A dictionary containing a natural history\n"
                             "      for.              --Locke.\n"
                             "0 \\0\\ adj.\n   1. indicating the absence\n"),
            "0 adj.\n1. indicating the absence");
}

TEST(GcideTest, NonUtf8BytesAreReadAsWindows1252) {
  EXPECT_EQ(gcide_plain_text("market\x92s fa\xE7"
                             "ade caf\xC3\xA9"),
            "market’s façade café");
}

// A dictionary of five entries: the preamble (00-database-info and an alias at its offset), a
// short metadata entry, two headwords of one entry, and two plain entries.
struct HandMade {
  TempDir dir;
  std::vector<std::string> expected;

  HandMade() {
    const std::vector<std::pair<std::vector<std::string>, std::string>> entries = {
        {{"00-database-info", "00-web1913-info"},
         "00-database-info\n   This file was converted from the original database\n\n"
         "GCIDE is free software; you can redistribute it\n"},
        {{"00-database-short"}, "00-database-short\n   The Collaborative Dictionary\n"},
        {{"Affatuate", "Affatuated"},
         "Affatuate \\Af*fat\"u*ate\\, v. t. [L. ad + fatuus foolish.]\n"
         "   To infatuate. [Obs.] --Milton.\n   [1913 Webster]\n"},
        {{"Ae"}, "Ae \\Ae\\ ([=a]), a. One; as, ae man. [Scot.]\n   [1913 Webster]\n"},
        {{"Alpha"},
         "Alpha \\Al\"pha\\, n. [L., fr. Gr. [alpha]]\n"
         "   The first letter of the Greek alphabet, {A}, [alpha].\n   [WordNet 1.5 +PJC]\n"},
    };
    std::string dict, index;
    for (const auto& [headwords, text] : entries) {
      for (const std::string& h : headwords) {
        index += h + "\t" + dictd_digits(static_cast<int64_t>(dict.size())) + "\t" +
                 dictd_digits(static_cast<int64_t>(text.size())) + "\n";
      }
      dict += text + "\n";
    }
    write_gzip(dir.file("gcide.dict.dz"), dict);
    write_file(dir.file("gcide.index"), index);
    expected = {"Affatuate, v. t. [L. ad + fatuus foolish.]\nTo infatuate. [Obs.] --Milton.",
                "Ae (ā), a. One; as, ae man. [Scot.]",
                "Alpha, n. [L., fr. Gr. α]\nThe first letter of the Greek alphabet, A, α."};
  }
};

TEST(GcideTest, HandMadeDictionaryGivesOneDocumentPerEntry) {
  HandMade d;
  EXPECT_EQ(read_gcide(d.dir.path()), d.expected);
}

TEST(GcideTest, ReadDocumentsUsesTheGcideReader) {
  HandMade d;
  DataConfig cfg;
  cfg.dataset = "gcide";
  cfg.path = d.dir.path();
  EXPECT_EQ(read_documents(cfg), d.expected);
}

TEST(GcideTest, MissingFilesSayHowToInstall) {
  TempDir dir;
  for (const std::string& path : {dir.file("nowhere"), dir.path()}) {
    try {
      read_gcide(path);
      ADD_FAILURE() << "expected a DataError for " << path;
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find("apt-get install dict-gcide"), std::string::npos)
          << e.what();
    }
  }
}

TEST(GcideTest, IndexPastTheEndOfTheDictionaryIsRejected) {
  TempDir dir;
  write_gzip(dir.file("gcide.dict.dz"), "Ae \\Ae\\ a.\n");
  write_file(dir.file("gcide.index"), "Ae\tA\tBA\n");  // 64 bytes from offset 0
  EXPECT_THROW(read_gcide(dir.path()), DataError);
  write_file(dir.file("gcide.index"), "Ae A 5\n");  // no tabs
  EXPECT_THROW(read_gcide(dir.path()), DataError);
}

TEST(GcideTest, RealDictionaryReadsAsPlainText) {
  const std::string dir = "/usr/share/dictd";
  if (!std::filesystem::exists(dir + "/gcide.dict.dz") ||
      !std::filesystem::exists(dir + "/gcide.index")) {
    GTEST_SKIP() << "dict-gcide is not installed (apt-get install dict-gcide)";
  }
  const std::vector<std::string> docs = read_gcide(dir);
  EXPECT_GT(docs.size(), 50000u);
  EXPECT_EQ(docs[0].rfind("0 adj.\n", 0), 0u) << docs[0];  // the epigraph before it is gone
  EXPECT_LT(docs.size(), 300000u);
  size_t bytes = 0;
  bool affatuate = false;
  for (const std::string& d : docs) {
    bytes += d.size();
    ASSERT_EQ(d.find("[1913 Webster]"), std::string::npos) << d.substr(0, 200);
    ASSERT_EQ(d.find("[WordNet 1.5]"), std::string::npos) << d.substr(0, 200);
    ASSERT_EQ(d.find("This file was converted from the original database"), std::string::npos);
    ASSERT_EQ(d.find("\n\n\n"), std::string::npos);
    affatuate =
        affatuate || d.rfind("Affatuate, v. t. [L. ad + fatuus foolish.]\nTo infatuate.", 0) == 0;
  }
  EXPECT_TRUE(affatuate);
  EXPECT_GT(bytes, 20u << 20);
}

}  // namespace
}  // namespace desync
