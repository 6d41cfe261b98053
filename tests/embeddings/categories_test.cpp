// Tests of the BATS-format category reader and writer: the reading rules of BATS's read_bats.py
// (lower-case, two fields, first alternative, no target = source, no duplicates), the layout,
// the errors, and clean_pairs.
#include "desync/embeddings/categories.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "test_util.h"

namespace desync {
namespace {

using Pairs = std::vector<std::pair<std::string, std::vector<std::string>>>;
using testing::TempDir;
using testing::write_file;

std::string error_of(const std::string& dir) {
  try {
    read_categories(dir);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

TEST(CategoriesTest, ReadsGroupsAndFilesInSortedOrderWithBatsRules) {
  TempDir dir;
  std::filesystem::create_directories(dir.file("lex"));
  std::filesystem::create_directories(dir.file("morph"));
  write_file(dir.file("morph/I02 [noun - plural_irreg].txt"),
             "Man\tMEN/mans\n"
             "\n"
             "ox  oxen\r\n"           // any whitespace, CRLF
             "sheep\tsheep/sheeps\n"  // first alternative is the source: dropped
             "man\tmen\n"             // a repeat of the first line: dropped
             "ice_cream\tice_creams\n");
  write_file(dir.file("lex/b.txt"), "hot\tcold\n");
  write_file(dir.file("lex/a.txt"), "big\tsmall/little\n");
  write_file(dir.file("morph/notes.json"), "{}");  // not a category
  write_file(dir.file("top.txt"), "a\tb\n");       // directly in DIR: group ""

  const std::vector<Category> cats = read_categories(dir.path());
  ASSERT_EQ(cats.size(), 4u);
  EXPECT_EQ(cats[0].group, "");
  EXPECT_EQ(cats[0].name, "top");
  EXPECT_EQ(cats[1].group, "lex");
  EXPECT_EQ(cats[1].name, "a");
  EXPECT_EQ(cats[2].name, "b");
  EXPECT_EQ(cats[3].group, "morph");
  EXPECT_EQ(cats[3].name, "I02 [noun - plural_irreg]");
  EXPECT_EQ(cats[1].pairs, (Pairs{{"big", {"small"}}}));
  EXPECT_EQ(cats[3].pairs,
            (Pairs{{"man", {"men"}}, {"ox", {"oxen"}}, {"ice_cream", {"ice_creams"}}}));
}

TEST(CategoriesTest, AllTargetsKeepsEveryAlternativeButTheSource) {
  TempDir dir;
  write_file(dir.file("c.txt"),
             "sheep\tsheep/sheeps\n"
             "man\tmen/Mans\n"
             "man\tmen/mans\n"  // the same pair after lower-casing
             "man\tmen\n");     // another target list: kept
  const std::vector<Category> cats = read_categories(dir.path(), {.all_targets = true});
  ASSERT_EQ(cats.size(), 1u);
  EXPECT_EQ(cats[0].pairs,
            (Pairs{{"sheep", {"sheeps"}}, {"man", {"men", "mans"}}, {"man", {"men"}}}));
}

TEST(CategoriesTest, ErrorsNameTheFileAndLine) {
  TempDir dir;
  write_file(dir.file("bad.txt"), "a\tb\n\nc d e\n");
  const std::string message = error_of(dir.path());
  EXPECT_NE(message.find("bad.txt:3"), std::string::npos) << message;
  EXPECT_NE(message.find("3 fields"), std::string::npos) << message;

  TempDir one;
  write_file(one.file("one.txt"), "lonely\n");
  EXPECT_NE(error_of(one.path()).find("one.txt:1"), std::string::npos);

  TempDir utf;
  write_file(utf.file("u.txt"), "ok\tfine\nbad\t\xff\n");
  EXPECT_NE(error_of(utf.path()).find("u.txt:2: invalid UTF-8"), std::string::npos);

  TempDir empty;
  EXPECT_NE(error_of(empty.path()).find("no category"), std::string::npos);
  EXPECT_NE(error_of(empty.file("missing")).find("does not exist"), std::string::npos);
}

TEST(CategoriesTest, LowerCasesLatinOneLetters) {
  TempDir dir;
  write_file(dir.file("c.txt"), "CAF\xc3\x89\tCAF\xc3\x89S\n");  // CAFÉ CAFÉS
  EXPECT_EQ(read_categories(dir.path())[0].pairs, (Pairs{{"caf\xc3\xa9", {"caf\xc3\xa9s"}}}));
}

TEST(CategoriesTest, WriteThenReadGivesTheCategoriesBack) {
  TempDir dir;
  const std::vector<Category> cats = {
      {"lex", "L_antonym_noun", {{"man", {"woman"}}, {"day", {"night"}}}},
      {"morph", "I_verb_past_irreg", {{"go", {"went", "gone"}}, {"be", {"was", "were", "been"}}}},
  };
  write_categories(dir.path(), cats);
  EXPECT_EQ(testing::read_file(dir.file("morph/I_verb_past_irreg.txt")),
            "go\twent/gone\nbe\twas/were/been\n");
  EXPECT_FALSE(std::filesystem::exists(dir.file("morph/I_verb_past_irreg.txt.tmp")));
  const std::vector<Category> back = read_categories(dir.path(), {.all_targets = true});
  ASSERT_EQ(back.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back[i].group, cats[i].group);
    EXPECT_EQ(back[i].name, cats[i].name);
    EXPECT_EQ(back[i].pairs, cats[i].pairs);
  }
}

TEST(CategoriesTest, CleanPairsDropsUnknownWordsAndCountsPairs) {
  Category c{"g", "n", {{"a", {"b", "x"}}, {"x", {"b"}}, {"c", {"x", "y"}}, {"d", {"e"}}}};
  const auto known = [](const std::string& w) { return w != "x" && w != "y"; };
  EXPECT_EQ(clean_pairs(c, known), 2);
  EXPECT_EQ(c.pairs, (Pairs{{"a", {"b"}}, {"d", {"e"}}}));
}

}  // namespace
}  // namespace desync
