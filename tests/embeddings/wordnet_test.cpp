// Tests of the WordNet 3.0 database reader on a hand-written database (licence lines, every
// pointer type the WN-BATS categories use, word numbers, adjective markers, verb frames,
// exception lists), its errors, and (when wordnet-base is installed) the real files.
#include "desync/embeddings/wordnet.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::TempDir;
using testing::write_file;

constexpr const char* kLicence =
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  By obtaining, using  \n";

// A small database; every file but the adverbs' opens with licence lines.
void write_database(const std::string& dir) {
  write_file(dir + "/data.noun",
             std::string(kLicence) +
                 "00001000 18 n 02 man 0 adult_male 0 005 @ 00002000 n 0000 %p 00003000 n 0000 "
                 "! 00001100 n 0101 #m 00004000 n 0000 %s 00005000 n 0000 | an adult person who "
                 "is male (as opposed to a woman); \"there were two men\"  \n"
                 "00001100 18 n 01 woman 0 001 ! 00001000 n 0101 | an adult female person  \n"
                 "00002000 03 n 01 person 0 000 | a human being  \n"
                 "00003000 08 n 02 Beard 0 face_hair a 000 | the hair on a man's face  \n"
                 "00004000 14 n 01 crowd 0 000 | a large number of people  \n"
                 "00005000 27 n 01 protoplasm 0 000 | living matter  \n");
  write_file(dir + "/data.verb",
             std::string(kLicence) +
                 "00010000 40 v 02 give 0 yield 2 002 ! 00011000 v 0102 + 00001000 n 0202 02 + 08 "
                 "00 + 09 01 | transfer possession of something  \n"
                 "00011000 40 v 02 have 0 take 0 001 ! 00010000 v 0201 01 + 08 00 | get into "
                 "one's hands  \n");
  write_file(dir + "/data.adj",
             std::string(kLicence) +
                 "00020000 00 a 02 galore(ip) 0 ready(p) 0 001 ! 00020100 a 0201 | in "
                 "abundance  \n"
                 "00020100 00 s 01 outback(a) 0 000 | remote  \n");
  write_file(dir + "/data.adv", "00030000 02 r 01 quickly 0 000 |with speed\n");
  write_file(dir + "/index.noun", std::string(kLicence) +
                                      "man n 2 3 @ ! %p 2 1 00001000 00003000  \n"
                                      "woman n 1 1 ! 1 4 00001100  \n");
  write_file(dir + "/index.verb", "give v 1 1 ! 1 7 00010000  \n");
  write_file(dir + "/index.adj", "galore a 1 0 1 0 00020000  \n");
  write_file(dir + "/index.adv", "quickly r 1 0 1 0 00030000  \n");
  write_file(dir + "/noun.exc", "men man\noxen ox\n");
  write_file(dir + "/verb.exc", "went go\nlay lie lay\n");
  write_file(dir + "/adj.exc", "better good well\n");
  write_file(dir + "/adv.exc", "best well\n");
}

TEST(WordNetTest, ReadsSynsetsWithWordsPointersAndGlosses) {
  TempDir dir;
  write_database(dir.path());
  const WordNet wn = WordNet::read(dir.path());
  ASSERT_EQ(wn.synsets(WnPos::kNoun).size(), 6u);
  const Synset* man = wn.synset(WnPos::kNoun, 1000);
  ASSERT_NE(man, nullptr);
  EXPECT_EQ(man->offset, 1000);
  EXPECT_EQ(man->lex_filenum, 18);
  EXPECT_EQ(man->ss_type, 'n');
  ASSERT_EQ(man->words.size(), 2u);
  EXPECT_EQ(man->words[1].lemma, "adult_male");
  EXPECT_EQ(man->gloss,
            "an adult person who is male (as opposed to a woman); \"there were two men\"");
  const std::vector<std::string> symbols = {"@", "%p", "!", "#m", "%s"};
  const std::vector<int64_t> offsets = {2000, 3000, 1100, 4000, 5000};
  ASSERT_EQ(man->pointers.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(man->pointers[i].symbol, symbols[i]);
    EXPECT_EQ(man->pointers[i].offset, offsets[i]);
    EXPECT_EQ(man->pointers[i].pos, WnPos::kNoun);
  }
  EXPECT_EQ(man->pointers[0].source, 0);  // semantic
  EXPECT_EQ(man->pointers[0].target, 0);
  EXPECT_EQ(man->pointers[2].source, 1);  // lexical: man -> woman
  EXPECT_EQ(man->pointers[2].target, 1);

  const Synset* beard = wn.synset(WnPos::kNoun, 3000);
  ASSERT_NE(beard, nullptr);
  EXPECT_EQ(beard->words[0].lemma, "Beard");  // spelling kept
  EXPECT_EQ(beard->words[1].lex_id, 10);      // hexadecimal
  EXPECT_EQ(wn.synset(WnPos::kNoun, 1234), nullptr);
  EXPECT_EQ(wn.synset(WnPos::kVerb, 1000), nullptr);

  // Verb frames are skipped; word numbers in hexadecimal pairs; pointers to other POS.
  const Synset* give = wn.synset(WnPos::kVerb, 10000);
  ASSERT_NE(give, nullptr);
  EXPECT_EQ(give->words[1].lemma, "yield");
  EXPECT_EQ(give->words[1].lex_id, 2);
  ASSERT_EQ(give->pointers.size(), 2u);
  EXPECT_EQ(give->pointers[0].source, 1);
  EXPECT_EQ(give->pointers[0].target, 2);
  EXPECT_EQ(give->pointers[1].symbol, "+");
  EXPECT_EQ(give->pointers[1].pos, WnPos::kNoun);
  EXPECT_EQ(give->pointers[1].source, 2);
  EXPECT_EQ(give->gloss, "transfer possession of something");

  // Adjective markers go; satellites live in data.adj.
  const Synset* galore = wn.synset(WnPos::kAdj, 20000);
  ASSERT_NE(galore, nullptr);
  EXPECT_EQ(galore->words[0].lemma, "galore");
  EXPECT_EQ(galore->words[1].lemma, "ready");
  const Synset* outback = wn.synset(WnPos::kAdj, 20100);
  ASSERT_NE(outback, nullptr);
  EXPECT_EQ(outback->ss_type, 's');
  EXPECT_EQ(outback->words[0].lemma, "outback");
  EXPECT_EQ(wn.synset(WnPos::kAdv, 30000)->gloss, "with speed");
}

TEST(WordNetTest, ReadsIndexAndExceptionLists) {
  TempDir dir;
  write_database(dir.path());
  const WordNet wn = WordNet::read(dir.path());
  const WnIndexEntry* man = wn.lookup(WnPos::kNoun, "man");
  ASSERT_NE(man, nullptr);
  EXPECT_EQ(man->offsets, (std::vector<int64_t>{1000, 3000}));
  EXPECT_EQ(man->tagsense_cnt, 1);
  EXPECT_EQ(wn.lookup(WnPos::kNoun, "woman")->tagsense_cnt, 4);
  EXPECT_EQ(wn.lookup(WnPos::kVerb, "give")->tagsense_cnt, 7);
  EXPECT_EQ(wn.lookup(WnPos::kVerb, "man"), nullptr);
  ASSERT_EQ(wn.index(WnPos::kNoun).size(), 2u);
  EXPECT_EQ(wn.index(WnPos::kNoun)[1].lemma, "woman");

  ASSERT_EQ(wn.exceptions(WnPos::kNoun).size(), 2u);
  EXPECT_EQ(wn.exceptions(WnPos::kNoun)[1].inflected, "oxen");
  EXPECT_EQ(wn.exceptions(WnPos::kNoun)[1].bases, (std::vector<std::string>{"ox"}));
  EXPECT_EQ(wn.exceptions(WnPos::kVerb)[1].bases, (std::vector<std::string>{"lie", "lay"}));
  EXPECT_EQ(wn.exceptions(WnPos::kAdj)[0].bases, (std::vector<std::string>{"good", "well"}));
  EXPECT_EQ(wn.exceptions(WnPos::kAdv)[0].inflected, "best");
}

TEST(WordNetTest, PosLettersAndNames) {
  WnPos p = WnPos::kNoun;
  EXPECT_TRUE(wn_pos_from_letter('s', &p));
  EXPECT_EQ(p, WnPos::kAdj);
  EXPECT_TRUE(wn_pos_from_letter('r', &p));
  EXPECT_EQ(p, WnPos::kAdv);
  EXPECT_FALSE(wn_pos_from_letter('x', &p));
  EXPECT_STREQ(wn_pos_name(WnPos::kVerb), "verb");
}

// Replaces `file` of a good database by `text` and returns the message read() throws.
std::string error_with(const std::string& file, const std::string& text) {
  TempDir dir;
  write_database(dir.path());
  write_file(dir.file(file), text);
  try {
    WordNet::read(dir.path());
  } catch (const DataError& e) {
    return e.what();
  }
  return "no error";
}

TEST(WordNetTest, MalformedLinesNameTheFileAndLine) {
  const std::string good = "00002000 03 n 01 person 0 000 | a human being\n";
  const std::vector<std::pair<std::string, std::string>> bad_data = {
      {"00002000 03 n 01 person 0 000 a human being\n", "no '|'"},
      {"00002000 03 n 0g person 0 000 | x\n", "w_cnt"},
      {"00002000 03 q 01 person 0 000 | x\n", "ss_type"},
      {"00002000 03 n 02 person 0 000 | x\n", "pointer count"},
      {"00002000 03 n 01 person 0 002 @ 00001000 n 0000 | x\n", "pointers"},
      {"00002000 03 n 01 person 0 001 @ 00001000 x 0000 | x\n", "pointer pos"},
      {"00002000 03 n 01 person 0 001 @ 00001000 n 00 | x\n", "source/target"},
      {"00002000 03 n 01 person 0 001 @ 00001000 n 0201 | x\n", "source word 2"},
  };
  for (const auto& [line, what] : bad_data) {
    const std::string message = error_with("data.noun", std::string(kLicence) + good + line);
    EXPECT_NE(message.find("data.noun:4: "), std::string::npos) << message;
    EXPECT_NE(message.find(what), std::string::npos) << message;
  }
  const std::string index = error_with("index.verb", "give v 2 1 ! 2 7 00010000\n");
  EXPECT_NE(index.find("index.verb:1: the line ends before its synset offsets"), std::string::npos)
      << index;
  const std::string extra = error_with("index.verb", "give v 1 1 ! 1 7 00010000 00011000\n");
  EXPECT_NE(extra.find("index.verb:1: 2 synset offsets, but synset_cnt says 1"), std::string::npos)
      << extra;
  const std::string exc = error_with("verb.exc", "went go\nalone\n");
  EXPECT_NE(exc.find("verb.exc:2: expected"), std::string::npos) << exc;
}

TEST(WordNetTest, MissingFilesSayWhichPackage) {
  TempDir dir;
  write_database(dir.path());
  std::filesystem::remove(dir.file("adv.exc"));
  try {
    WordNet::read(dir.path());
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("adv.exc"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("wordnet-base"), std::string::npos) << e.what();
  }
  EXPECT_THROW(WordNet::read(dir.file("nowhere")), DataError);
}

// The real database: the sizes of WordNet 3.0 and the spec's exception list lengths; each
// synset's offset is its line's byte offset (checked by seeking in the file, for a sample);
// the spec's pointer examples bird %p furcula and bird #m flock.
TEST(WordNetTest, RealDatabase) {
  if (!std::filesystem::exists(std::string(kDefaultWordnetDir) + "/data.noun")) {
    GTEST_SKIP() << "needs wordnet-base (apt-get install wordnet-base)";
  }
  const WordNet wn = WordNet::read();
  const std::vector<size_t> synsets = {82115, 13767, 18156, 3621};
  const std::vector<size_t> exceptions = {2054, 2401, 1490, 7};
  for (WnPos pos : kWnPoses) {
    const size_t p = static_cast<size_t>(pos);
    EXPECT_EQ(wn.synsets(pos).size(), synsets[p]) << wn_pos_name(pos);
    EXPECT_EQ(wn.exceptions(pos).size(), exceptions[p]) << wn_pos_name(pos);
    std::ifstream in(std::string(kDefaultWordnetDir) + "/data." + wn_pos_name(pos),
                     std::ios::binary);
    for (size_t i = 0; i < wn.synsets(pos).size(); i += 997) {
      const Synset& s = wn.synsets(pos)[i];
      in.seekg(s.offset);
      std::string line;
      std::getline(in, line);
      EXPECT_EQ(std::stoll(line.substr(0, 8)), s.offset);
      EXPECT_NE(line.find(s.gloss), std::string::npos);
    }
  }
  const WnIndexEntry* bird = wn.lookup(WnPos::kNoun, "bird");
  ASSERT_NE(bird, nullptr);
  const Synset* first = wn.synset(WnPos::kNoun, bird->offsets[0]);
  ASSERT_NE(first, nullptr);
  const auto related = [&](const std::string& symbol, const std::string& word) {
    for (const WnPointer& p : first->pointers) {
      if (p.symbol != symbol) continue;
      for (const WnWord& w : wn.synset(p.pos, p.offset)->words) {
        if (w.lemma == word) return true;
      }
    }
    return false;
  };
  EXPECT_TRUE(related("%p", "furcula"));
  EXPECT_TRUE(related("#m", "flock"));
}

}  // namespace
}  // namespace desync
