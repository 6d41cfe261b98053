// Tests of the WN-BATS construction: hand-made WordNet databases and corpus counts whose
// expected categories are worked out by hand from the rules in wn_bats.h (word filter, POS
// choice, exception-list filters, lexical and first-sense pointers, regular forms, ranking),
// and (when dict-gcide and wordnet-base are installed) the spec's example pairs in the real set.
#include "desync/embeddings/wn_bats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "desync/core/error.h"
#include "desync/embeddings/gcide_corpus.h"
#include "test_util.h"

namespace desync {
namespace {

using Pairs = std::vector<std::pair<std::string, std::vector<std::string>>>;
using Counts = std::unordered_map<std::string, int64_t>;
using testing::TempDir;
using testing::write_file;

// A WordNet database in a temporary folder: the 12 files, empty unless given.
WordNet database(const std::map<std::string, std::string>& files) {
  TempDir dir;
  for (const char* pos : {"noun", "verb", "adj", "adv"}) {
    for (const std::string& name :
         {std::string("data.") + pos, std::string("index.") + pos, std::string(pos) + ".exc"}) {
      const auto it = files.find(name);
      write_file(dir.file(name), it == files.end() ? "" : it->second);
    }
  }
  return WordNet::read(dir.path());
}

std::vector<Category> build(const WordNet& wn, const Counts& counts, WnBatsOptions opt = {}) {
  return build_wn_bats(
      wn,
      [&](const std::string& w) {
        const auto it = counts.find(w);
        return it == counts.end() ? int64_t{0} : it->second;
      },
      opt);
}

const Category& find(const std::vector<Category>& cats, const std::string& name) {
  for (const Category& c : cats) {
    if (c.name == name) return c;
  }
  throw std::runtime_error("no category " + name);
}

TEST(WnBatsTest, NineteenCategoriesInTwoFolders) {
  const std::vector<Category> cats = build(database({}), {});
  const std::vector<std::string> names = {"I_noun_plural_irreg",
                                          "I_verb_past_irreg",
                                          "I_adj_comparative_irreg",
                                          "I_adj_superlative_irreg",
                                          "L_antonym_noun",
                                          "L_antonym_verb",
                                          "L_antonym_adj",
                                          "L_hypernym_noun",
                                          "L_meronym_part",
                                          "L_meronym_substance",
                                          "L_member_of",
                                          "I_noun_plural_reg",
                                          "I_verb_3pSg",
                                          "I_verb_Ving",
                                          "I_verb_Ved",
                                          "D_un_adj",
                                          "D_adj_ly",
                                          "D_adj_ness",
                                          "D_noun_less"};
  ASSERT_EQ(cats.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(cats[i].name, names[i]);
    EXPECT_EQ(cats[i].group, names[i][0] == 'L' ? "lex" : "morph");
    EXPECT_TRUE(cats[i].pairs.empty());
  }
  EXPECT_THROW(build(database({}), {}, {.pairs_per_category = 0}), ConfigError);
  EXPECT_THROW(build(database({}), {}, {.min_pair_count = -1}), ConfigError);
}

// The synset every noun of the morphology fixtures names (the first-sense relations read it).
constexpr const char* kThing = "00000001 03 n 01 thing 0 000 | an entity\n";

// Exception lists. Counts below 5 fail the word filter (mice).
const std::map<std::string, std::string> kIrregular = {
    {"data.noun", kThing},
    {"index.noun",
     "man n 1 0 1 9 00000001\nox n 1 0 1 2 00000001\nmouse n 1 0 1 3 00000001\n"
     "foot n 1 0 1 4 00000001\ngoose n 1 0 1 1 00000001\n"},
    {"noun.exc", "men man\noxen ox\nmice mouse\nfeet foot\ngeese goose\n"},
    {"index.verb",
     "go v 1 0 1 9 00000001\nbe v 1 0 1 9 00000002\nhave v 1 0 1 9 00000003\n"
     "try v 1 0 1 9 00000004\nquiz v 1 0 1 9 00000005\ndo v 1 0 1 9 00000006\n"},
    {"verb.exc",
     "went go\ngone go\ngoing go\ngoes go\nam be\nare be\nis be\nwas be\nwere be\nhas have\n"
     "had have\ntries try\ntried try\nquizzes quiz\nquizzed quiz\ndoes do\ndid do\ndone do\n"},
    {"index.adj",
     "good a 1 0 1 9 00000001\nbad a 1 0 1 9 00000002\nlittle a 1 0 1 9 00000003\n"
     "old a 1 0 1 9 00000004\nmuch a 1 0 1 9 00000005\nout a 1 0 1 9 00000006\n"},
    {"adj.exc",
     "better good\nbest good\ngood good\nworse bad\nworst bad\nless little\nlesser little\n"
     "least little\nelder old\neldest old\nmore much\nmost much\nutmost out\n"},
};
const Counts kIrregularCounts = {
    {"man", 100},   {"men", 50},   {"ox", 30},    {"oxen", 8},   {"mouse", 20},  {"mice", 3},
    {"foot", 40},   {"feet", 45},  {"goose", 40}, {"geese", 40}, {"go", 80},     {"went", 30},
    {"gone", 20},   {"going", 25}, {"goes", 10},  {"be", 500},   {"am", 10},     {"are", 200},
    {"is", 400},    {"was", 300},  {"were", 100}, {"has", 150},  {"have", 300},  {"had", 120},
    {"try", 12},    {"tries", 6},  {"tried", 9},  {"quiz", 7},   {"quizzes", 5}, {"quizzed", 5},
    {"do", 100},    {"does", 50},  {"did", 40},   {"done", 30},  {"good", 100},  {"better", 60},
    {"best", 50},   {"bad", 40},   {"worse", 20}, {"worst", 10}, {"little", 70}, {"less", 60},
    {"lesser", 10}, {"least", 30}, {"old", 50},   {"elder", 15}, {"eldest", 5},  {"much", 80},
    {"more", 90},   {"most", 70},  {"utmost", 8}, {"out", 100},
};

TEST(WnBatsTest, IrregularFormsFromTheExceptionLists) {
  const std::vector<Category> cats = build(database(kIrregular), kIrregularCounts);
  EXPECT_EQ(find(cats, "I_noun_plural_irreg").pairs,
            (Pairs{{"foot", {"feet"}}, {"goose", {"geese"}}, {"man", {"men"}}, {"ox", {"oxen"}}}));
  // No -ing forms, no regular 3sg shapes (goes, tries, quizzes, does), no am/are/is/has;
  // alternatives by count.
  EXPECT_EQ(find(cats, "I_verb_past_irreg").pairs, (Pairs{{"be", {"was", "were"}},
                                                          {"do", {"did", "done"}},
                                                          {"go", {"went", "gone"}},
                                                          {"have", {"had"}},
                                                          {"quiz", {"quizzed"}},
                                                          {"try", {"tried"}}}));
  // "utmost" is neither; "good good" is an identity line.
  EXPECT_EQ(find(cats, "I_adj_comparative_irreg").pairs, (Pairs{{"bad", {"worse"}},
                                                                {"good", {"better"}},
                                                                {"little", {"less", "lesser"}},
                                                                {"much", {"more"}},
                                                                {"old", {"elder"}}}));
  EXPECT_EQ(find(cats, "I_adj_superlative_irreg").pairs, (Pairs{{"bad", {"worst"}},
                                                                {"good", {"best"}},
                                                                {"little", {"least"}},
                                                                {"much", {"most"}},
                                                                {"old", {"eldest"}}}));
}

TEST(WnBatsTest, KeepsTheSourcesWithTheLargestMinimumCount) {
  // min(count(s), count(first target)): man 50, foot 40, goose 40, ox 8; ties by spelling.
  const std::vector<Category> cats =
      build(database(kIrregular), kIrregularCounts, {.pairs_per_category = 2});
  EXPECT_EQ(find(cats, "I_noun_plural_irreg").pairs, (Pairs{{"foot", {"feet"}}, {"man", {"men"}}}));
  // A higher min_pair_count drops oxen (8) and eldest (5).
  const std::vector<Category> strict =
      build(database(kIrregular), kIrregularCounts, {.min_pair_count = 9});
  EXPECT_EQ(find(strict, "I_noun_plural_irreg").pairs,
            (Pairs{{"foot", {"feet"}}, {"goose", {"geese"}}, {"man", {"men"}}}));
  EXPECT_EQ(find(strict, "I_adj_superlative_irreg").pairs.size(), 4u);
}

// Regular forms and the POS choice: walk (verb 5 > noun 2), fish (tagsense tie, verb has more
// synsets), cook (full tie: noun first), clean (adj/verb tie: verb first), slow (adj 5 > verb 4).
const std::map<std::string, std::string> kRegular = {
    {"data.noun", kThing},
    {"index.noun",
     "cook n 2 0 2 3 00000001 00000001\nwalk n 1 0 1 2 00000001\nfish n 1 0 1 3 00000001\n"
     "ox n 1 0 1 5 00000001\nman n 1 0 1 10 00000001\ncat n 1 0 1 4 00000001\n"
     "hope n 1 0 1 3 00000001\nice_cream n 1 0 1 1 00000001\n"},
    {"noun.exc", "men man\n"},
    {"index.verb",
     "walk v 1 0 1 5 00000001\nfish v 2 0 2 3 00000002 00000003\ncook v 2 0 2 3 00000004 "
     "00000005\nbake v 1 0 1 2 00000006\nstop v 1 0 1 3 00000007\ngo v 1 0 1 20 00000008\n"
     "clean v 1 0 1 4 00000009\nslow v 3 0 3 4 00000010 00000011 00000012\n"},
    {"verb.exc", "went go\n"},
    {"index.adj",
     "clean a 1 0 1 4 00000001\nslow a 1 0 1 5 00000002\nhappy a 1 0 1 6 00000003\n"
     "kind a 1 0 1 3 00000004\n"},
};
const Counts kRegularCounts = {
    {"cook", 30},    {"cooks", 10},   {"walk", 40},   {"walks", 12},   {"walking", 15},
    {"walked", 14},  {"fish", 50},    {"fishes", 8},  {"ox", 20},      {"oxs", 5},
    {"man", 100},    {"mans", 5},     {"cat", 30},    {"cats", 20},    {"hope", 25},
    {"hopes", 10},   {"hopeless", 7}, {"bake", 10},   {"bakes", 5},    {"baking", 6},
    {"baked", 7},    {"stop", 40},    {"stops", 10},  {"stopping", 9}, {"stopped", 20},
    {"go", 80},      {"goes", 10},    {"going", 25},  {"clean", 30},   {"cleans", 6},
    {"cleanly", 8},  {"cleaning", 7}, {"cleaned", 9}, {"slow", 40},    {"slows", 5},
    {"slowly", 30},  {"slowness", 6}, {"happy", 60},  {"happily", 20}, {"happiness", 25},
    {"unhappy", 30}, {"happyly", 9},  {"kind", 70},   {"kindly", 30},  {"kindness", 25},
    {"unkind", 10},  {"stopd", 9},    {"waling", 9},
};

TEST(WnBatsTest, RegularFormsFollowThePredominantPos) {
  const std::vector<Category> cats = build(database(kRegular), kRegularCounts);
  EXPECT_EQ(find(cats, "I_noun_plural_reg").pairs,
            (Pairs{{"cat", {"cats"}}, {"cook", {"cooks"}}, {"hope", {"hopes"}}}));
  EXPECT_EQ(find(cats, "I_verb_3pSg").pairs, (Pairs{{"bake", {"bakes"}},
                                                    {"clean", {"cleans"}},
                                                    {"fish", {"fishes"}},
                                                    {"stop", {"stops"}},
                                                    {"walk", {"walks"}}}));
  // v-e+ing and v+d only for verbs ending in e: "waling" and "stopd" are no forms of theirs.
  EXPECT_EQ(find(cats, "I_verb_Ving").pairs, (Pairs{{"bake", {"baking"}},
                                                    {"clean", {"cleaning"}},
                                                    {"stop", {"stopping"}},
                                                    {"walk", {"walking"}}}));
  EXPECT_EQ(find(cats, "I_verb_Ved").pairs, (Pairs{{"bake", {"baked"}},
                                                   {"clean", {"cleaned"}},
                                                   {"stop", {"stopped"}},
                                                   {"walk", {"walked"}}}));
  EXPECT_EQ(find(cats, "D_un_adj").pairs, (Pairs{{"happy", {"unhappy"}}, {"kind", {"unkind"}}}));
  EXPECT_EQ(find(cats, "D_adj_ly").pairs,
            (Pairs{{"happy", {"happily"}}, {"kind", {"kindly"}}, {"slow", {"slowly"}}}));
  EXPECT_EQ(find(cats, "D_adj_ness").pairs,
            (Pairs{{"happy", {"happiness"}}, {"kind", {"kindness"}}, {"slow", {"slowness"}}}));
  EXPECT_EQ(find(cats, "D_noun_less").pairs, (Pairs{{"hope", {"hopeless"}}}));
}

// Lexical antonyms with word numbers (daytime is word 2 of its synset), a semantic "!" that
// is ignored, first-sense relations (man's second sense is made of iron), upper-case lemmas.
const std::map<std::string, std::string> kLexical = {
    {"data.noun",
     "00000001 04 n 01 good 0 000 | benefit\n"
     "00001000 18 n 02 man 0 adult_male 0 005 ! 00001100 n 0101 @ 00002000 n 0000 %p 00003000 n "
     "0000 #m 00004000 n 0000 ! 00008000 n 0000 | an adult male\n"
     "00001100 18 n 01 woman 0 002 ! 00001000 n 0101 @ 00002000 n 0000 | an adult female\n"
     "00002000 03 n 02 person 0 individual 0 000 | a human being\n"
     "00003000 08 n 02 beard 0 Whiskers 0 000 | facial hair\n"
     "00004000 14 n 01 crowd 0 000 | many people\n"
     "00005000 27 n 01 steel 0 001 %s 00006000 n 0000 | an alloy\n"
     "00006000 27 n 02 Iron 0 fe 0 000 | a metal\n"
     "00007000 18 n 01 man 1 001 %s 00006000 n 0000 | a soldier\n"
     "00008000 15 n 02 day 0 daytime 0 001 ! 00008100 n 0201 | the time of light\n"
     "00008100 15 n 01 night 0 001 ! 00008000 n 0102 | the time of dark\n"},
    {"index.noun",
     "man n 2 0 2 10 00001000 00007000\nwoman n 1 0 1 5 00001100\n"
     "person n 1 0 1 8 00002000\nindividual n 1 0 1 2 00002000\nbeard n 1 0 1 3 00003000\n"
     "whiskers n 1 0 1 1 00003000\ncrowd n 1 0 1 3 00004000\nsteel n 1 0 1 4 00005000\n"
     "iron n 1 0 1 5 00006000\nfe n 1 0 1 0 00006000\nday n 1 0 1 9 00008000\n"
     "daytime n 1 0 1 1 00008000\nnight n 1 0 1 7 00008100\ngood n 1 0 1 2 00000001\n"},
    {"data.verb",
     "00010000 40 v 01 give 0 001 ! 00011000 v 0101 | transfer\n"
     "00011000 40 v 01 take 0 001 ! 00010000 v 0101 | get\n"},
    {"index.verb", "give v 1 0 1 7 00010000\ntake v 1 0 1 9 00011000\n"},
    {"data.adj",
     "00020000 00 a 01 good 0 001 ! 00020100 a 0101 | having desirable qualities\n"
     "00020100 00 a 01 bad 0 001 ! 00020000 a 0101 | having undesirable qualities\n"
     "00020200 00 s 01 nice(a) 0 000 | pleasant\n"},
    {"index.adj", "good a 1 0 1 20 00020000\nbad a 1 0 1 10 00020100\nnice a 1 0 1 1 00020200\n"},
};
const Counts kLexicalCounts = {
    {"man", 100},     {"woman", 60},  {"person", 50}, {"individual", 20}, {"beard", 30},
    {"whiskers", 10}, {"crowd", 20},  {"steel", 25},  {"iron", 35},       {"fe", 6},
    {"day", 90},      {"daytime", 5}, {"night", 80},  {"give", 70},       {"take", 90},
    {"good", 100},    {"bad", 40},    {"nice", 30},
};

TEST(WnBatsTest, LexicalRelations) {
  const std::vector<Category> cats = build(database(kLexical), kLexicalCounts);
  EXPECT_EQ(find(cats, "L_antonym_noun").pairs,
            (Pairs{{"daytime", {"night"}}, {"man", {"woman"}}}));
  EXPECT_EQ(find(cats, "L_antonym_verb").pairs, (Pairs{{"give", {"take"}}}));
  EXPECT_EQ(find(cats, "L_antonym_adj").pairs, (Pairs{{"bad", {"good"}}}));
  EXPECT_EQ(find(cats, "L_hypernym_noun").pairs,
            (Pairs{{"man", {"person", "individual"}}, {"woman", {"person", "individual"}}}));
  EXPECT_EQ(find(cats, "L_meronym_part").pairs, (Pairs{{"man", {"beard", "whiskers"}}}));
  EXPECT_EQ(find(cats, "L_meronym_substance").pairs, (Pairs{{"steel", {"iron", "fe"}}}));
  EXPECT_EQ(find(cats, "L_member_of").pairs, (Pairs{{"man", {"crowd"}}}));

  const std::vector<Category> both =
      build(database(kLexical), kLexicalCounts, {.both_directions = true});
  EXPECT_EQ(
      find(both, "L_antonym_noun").pairs,
      (Pairs{
          {"daytime", {"night"}}, {"man", {"woman"}}, {"night", {"daytime"}}, {"woman", {"man"}}}));
  EXPECT_EQ(find(both, "L_antonym_adj").pairs, (Pairs{{"bad", {"good"}}, {"good", {"bad"}}}));
  // The other categories do not change.
  EXPECT_EQ(find(both, "L_hypernym_noun").pairs, find(cats, "L_hypernym_noun").pairs);
}

// The real set (dict-gcide, wordnet-base): the spec's example pairs, through the files.
TEST(WnBatsTest, SlowRealSetHoldsTheSpecExamples) {
  if (!std::filesystem::exists(std::string(kDefaultDictdDir) + "/gcide.dict.dz") ||
      !std::filesystem::exists(std::string(kDefaultWordnetDir) + "/data.noun")) {
    GTEST_SKIP() << "needs dict-gcide and wordnet-base (apt-get install dict-gcide wordnet-base)";
  }
  Counts counts;
  for (const std::string& s : gcide_sentences(kDefaultDictdDir)) {
    size_t i = 0;
    while (i <= s.size()) {
      const size_t j = std::min(s.find(' ', i), s.size());
      ++counts[s.substr(i, j - i)];
      i = j + 1;
    }
  }
  const std::vector<Category> built = build(WordNet::read(), counts);
  TempDir dir;
  write_categories(dir.path(), built);
  const std::vector<Category> cats = read_categories(dir.path(), {.all_targets = true});
  ASSERT_EQ(cats.size(), 19u);
  for (const Category& c : cats) {
    EXPECT_LE(c.pairs.size(), 50u) << c.name;
    for (const auto& [s, targets] : c.pairs) {
      ASSERT_FALSE(targets.empty());
      EXPECT_GE(std::min(counts[s], counts[targets[0]]), 5) << c.name << " " << s;
      for (size_t k = 1; k < targets.size(); ++k) {
        EXPECT_GE(counts[targets[k - 1]], counts[targets[k]]) << c.name << " " << s;
      }
    }
  }
  const auto targets_of = [&](const std::string& name, const std::string& source) {
    for (const auto& [s, targets] : find(cats, name).pairs) {
      if (s == source) return targets;
    }
    return std::vector<std::string>{};
  };
  const auto has = [](const std::vector<std::string>& v, const std::string& w) {
    return std::find(v.begin(), v.end(), w) != v.end();
  };
  EXPECT_EQ(targets_of("I_noun_plural_irreg", "man"), std::vector<std::string>{"men"});
  const std::vector<std::string> go = targets_of("I_verb_past_irreg", "go");
  EXPECT_EQ(go.size(), 2u);
  EXPECT_TRUE(has(go, "went") && has(go, "gone"));
  EXPECT_EQ(targets_of("I_adj_comparative_irreg", "good"), std::vector<std::string>{"better"});
  EXPECT_TRUE(has(targets_of("L_antonym_verb", "give"), "take"));
  EXPECT_TRUE(has(targets_of("L_antonym_noun", "man"), "woman"));
  EXPECT_EQ(targets_of("L_meronym_substance", "steel")[0], "iron");
  EXPECT_TRUE(has(targets_of("L_meronym_part", "bird"), "feather"));
}

}  // namespace
}  // namespace desync
