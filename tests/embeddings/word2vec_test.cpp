// word2vec / GloVe files (spec §6 test 7): bitwise round trips, the layouts C word2vec, gensim
// and GloVe write, and one fixture per malformed input, each failing with a one-line message
// that names the right line or entry. Expected bytes and values are built here independently of
// the reader and writer (memcpy of float bits, snprintf, literals).
#include "desync/embeddings/word2vec.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"

namespace desync {
namespace {

using testing::TempDir;

std::string le_bytes(float v) {
  static_assert(std::endian::native == std::endian::little);
  char b[4];
  std::memcpy(b, &v, 4);
  return std::string(b, 4);
}

// V x d vectors whose values are random float32 bit patterns (every exponent, subnormals
// included, no NaN or Inf), with -0.0, +0.0, the extreme subnormals and normals and +-3e38 in
// the first rows; words are ASCII and multi-byte UTF-8.
WordVectors random_vectors(int64_t count, int64_t dim) {
  WordVectors v;
  v.dim = dim;
  std::mt19937 gen(7);
  for (int64_t i = 0; i < count; ++i) {
    std::string word = i % 10 == 3 ? "mot" : "w";  // (appends: GCC 12 warns on "a" + b + "c")
    word += std::to_string(i);
    if (i % 10 == 3) word += "\xC3\xA9\xE6\x97\xA5\xF0\x9F\x99\x82";  // é, 日, 🙂
    v.words.push_back(word);
    for (int64_t k = 0; k < dim; ++k) {
      uint32_t bits;
      do bits = gen();
      while ((bits & 0x7F800000u) == 0x7F800000u);
      v.values.push_back(std::bit_cast<float>(bits));
    }
  }
  const float special[] = {-0.0f,
                           0.0f,
                           std::numeric_limits<float>::denorm_min(),
                           -std::numeric_limits<float>::denorm_min(),
                           std::bit_cast<float>(0x007FFFFFu),  // largest subnormal
                           FLT_MIN,
                           3e38f,
                           -3e38f,
                           FLT_MAX,
                           -FLT_MAX,
                           1.0f,
                           0.1f};
  for (size_t j = 0; j < std::size(special); ++j) v.values[j * 5] = special[j];
  return v;
}

// The same vectors with values that look like trained embeddings (N(0, 1)).
WordVectors gaussian_vectors(int64_t count, int64_t dim) {
  WordVectors v = random_vectors(count, dim);
  std::mt19937 gen(11);
  std::normal_distribution<float> normal;
  for (float& x : v.values) x = normal(gen);
  v.values[0] = -0.0f;
  v.values[1] = 3e38f;
  v.values[2] = -3e38f;
  v.values[3] = std::numeric_limits<float>::denorm_min();
  return v;
}

void expect_bitwise_equal(const WordVectors& a, const WordVectors& b) {
  ASSERT_EQ(a.words, b.words);
  ASSERT_EQ(a.dim, b.dim);
  ASSERT_EQ(a.values.size(), b.values.size());
  EXPECT_EQ(std::memcmp(a.values.data(), b.values.data(), a.values.size() * 4), 0);
}

std::string gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  EXPECT_NE(f, nullptr);
  std::string out;
  char buffer[4096];
  int n;
  while ((n = gzread(f, buffer, sizeof buffer)) > 0) out.append(buffer, n);
  gzclose(f);
  return out;
}

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

// Reads `bytes` from a file `name` in `dir`; expects a one-line EmbeddingFileError that starts
// "<path>: <where>" (then ':' or ' ') and mentions `what`.
void expect_failure(const TempDir& dir, const std::string& name, const std::string& bytes,
                    const std::string& where, const std::string& what,
                    const ReadOptions& options = {}) {
  const std::string path = dir.file(name);
  testing::write_file(path, bytes);
  try {
    read_word_vectors(path, options);
    ADD_FAILURE() << name << ": no error";
  } catch (const EmbeddingFileError& e) {
    const std::string m = e.what();
    const std::string prefix = path + ": " + where;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    EXPECT_EQ(m.rfind(prefix, 0), 0u) << name << ": " << m;
    // "line 1" must not match "line 12".
    EXPECT_TRUE(where.empty() ||
                (m.size() > prefix.size() && (m[prefix.size()] == ':' || m[prefix.size()] == ' ')))
        << name << ": " << m;
    EXPECT_NE(m.find(what), std::string::npos) << name << ": " << m;
  }
}

WordVectors read_bytes_as(const TempDir& dir, const std::string& name, const std::string& bytes,
                          const ReadOptions& options = {}) {
  testing::write_file(dir.file(name), bytes);
  return read_word_vectors(dir.file(name), options);
}

TEST(Word2vecFile, BinaryRoundTripIsBitwiseInCsLayout) {
  TempDir dir;
  const WordVectors v = random_vectors(1000, 37);
  write_word_vectors(dir.file("v.bin"), v, {.format = EmbeddingFormat::kBinary});
  // C's layout, built here: "V d\n", then per entry the word, a space, d little-endian
  // float32 and '\n'.
  std::string expected = "1000 37\n";
  for (int64_t i = 0; i < v.size(); ++i) {
    expected += v.words[i] + " ";
    for (int64_t k = 0; k < v.dim; ++k) expected += le_bytes(v.row(i)[k]);
    expected += "\n";
  }
  EXPECT_TRUE(testing::read_file(dir.file("v.bin")) == expected);
  expect_bitwise_equal(read_word_vectors(dir.file("v.bin")), v);
  // kAuto writes binary for a ".bin" name.
  write_word_vectors(dir.file("auto.bin"), v, {.format = EmbeddingFormat::kAuto});
  EXPECT_TRUE(testing::read_file(dir.file("auto.bin")) == expected);
}

TEST(Word2vecFile, TextRoundTripIsBitwiseWithPercent9g) {
  TempDir dir;
  const WordVectors v = random_vectors(1000, 37);
  write_word_vectors(dir.file("v.txt"), v);
  const std::string text = testing::read_file(dir.file("v.txt"));
  // Header and first entry as snprintf("%.9g") prints them, single spaces, no trailing space.
  std::string first = "1000 37\n" + v.words[0];
  for (int64_t k = 0; k < v.dim; ++k) {
    char b[32];
    std::snprintf(b, sizeof b, " %.9g", v.values[k]);
    first += b;
  }
  EXPECT_EQ(text.substr(0, first.size() + 1), first + "\n");
  expect_bitwise_equal(read_word_vectors(dir.file("v.txt")), v);
  EXPECT_EQ(format_word_vectors({{"a"}, 3, {0.1f, -0.0f, 3e38f}}),
            "1 3\na 0.100000001 -0 3.00000001e+38\n");
}

TEST(Word2vecFile, CCompatTextIsCsLayoutWithin5e7) {
  TempDir dir;
  const WordVectors v = gaussian_vectors(1000, 37);
  write_word_vectors(dir.file("c.txt"), v, {.c_compat = true});
  // C's text: "%lf " after each value, so a trailing space.
  std::string first = "1000 37\n" + v.words[0] + " ";
  for (int64_t k = 0; k < v.dim; ++k) {
    char b[64];
    std::snprintf(b, sizeof b, "%lf ", v.values[k]);
    first += b;
  }
  const std::string text = testing::read_file(dir.file("c.txt"));
  EXPECT_EQ(text.substr(0, first.size() + 1), first + "\n");
  const WordVectors r = read_word_vectors(dir.file("c.txt"));
  ASSERT_EQ(r.words, v.words);
  ASSERT_EQ(r.values.size(), v.values.size());
  double worst = 0;
  for (size_t j = 0; j < v.values.size(); ++j) {
    // %lf rounds to 5e-7; strtof then rounds to the nearest float (half an ulp).
    const float x = v.values[j];
    const double ulp = std::nextafter(std::fabs(x), INFINITY) - std::fabs(x);
    ASSERT_LE(std::fabs(double{r.values[j]} - x), 5e-7 + ulp / 2) << j;
    worst = std::max(worst, std::fabs(double{r.values[j]} - x));
  }
  EXPECT_GT(worst, 1e-7);  // c_compat is lossy, unlike %.9g
  EXPECT_EQ(format_word_vectors({{"a"}, 2, {0.1f, -0.0f}}, {.c_compat = true}),
            "1 2\na 0.100000 -0.000000 \n");
}

TEST(Word2vecFile, CStyleAndGensimStyleBinariesLoad) {
  TempDir dir;
  const std::vector<std::string> words = {"the", "caf\xC3\xA9", "of"};
  const std::vector<float> values = {0.25f, -1.5f, 3.0f, 1e-20f, -0.0f, 7.0f};
  std::string c_style = "3 2\n", gensim_style = "3 2\n";
  for (int i = 0; i < 3; ++i) {
    const std::string entry =
        words[i] + " " + le_bytes(values[2 * i]) + le_bytes(values[2 * i + 1]);
    c_style += entry + "\n";
    gensim_style += entry;
  }
  for (const auto& [name, bytes] : {std::pair{"c.bin", c_style}, {"gensim.bin", gensim_style}}) {
    const WordVectors r = read_bytes_as(dir, name, bytes);
    EXPECT_EQ(r.words, words) << name;
    EXPECT_EQ(r.dim, 2);
    EXPECT_EQ(std::memcmp(r.values.data(), values.data(), 24), 0) << name;
  }
}

TEST(Word2vecFile, TextWithCrlfTrailingSpacesAndStrtofNumbersLoads) {
  TempDir dir;
  const WordVectors r = read_bytes_as(
      dir, "crlf.txt", "3 3\r\nthe 0.5 -1.25 2 \r\nof +4 1e-3 0x1p-2 \t\r\nand 1e-45 -0 7\r\n");
  EXPECT_EQ(r.words, (std::vector<std::string>{"the", "of", "and"}));
  const std::vector<float> expected = {0.5f, -1.25f, 2.0f, 4.0f, 1e-3f, 0.25f, 1e-45f, -0.0f, 7.0f};
  ASSERT_EQ(r.values.size(), expected.size());
  EXPECT_EQ(std::memcmp(r.values.data(), expected.data(), 36), 0);
}

TEST(Word2vecFile, GzFilesAreReadAndWrittenThroughZlib) {
  TempDir dir;
  write_gz(dir.file("v.txt.gz"), "2 2\nthe 1 2\nof 3 4\n");
  const WordVectors r = read_word_vectors(dir.file("v.txt.gz"));
  EXPECT_EQ(r.words, (std::vector<std::string>{"the", "of"}));
  EXPECT_EQ(r.values, (std::vector<float>{1, 2, 3, 4}));

  const WordVectors v = random_vectors(50, 5);
  write_word_vectors(dir.file("w.bin.gz"), v, {.format = EmbeddingFormat::kAuto});
  const std::string raw = testing::read_file(dir.file("w.bin.gz"));
  EXPECT_EQ(raw.substr(0, 2), "\x1f\x8b");  // gzip magic
  EXPECT_TRUE(gunzip(dir.file("w.bin.gz")) ==
              format_word_vectors(v, {.format = EmbeddingFormat::kBinary}));
  expect_bitwise_equal(read_word_vectors(dir.file("w.bin.gz")), v);

  testing::write_file(dir.file("cut.txt.gz"), raw.substr(0, raw.size() / 2));
  EXPECT_THROW(read_word_vectors(dir.file("cut.txt.gz")), EmbeddingFileError);
  EXPECT_THROW(read_word_vectors(dir.file("missing.txt")), EmbeddingFileError);
}

TEST(Word2vecFile, HeaderlessGloveLoads) {
  TempDir dir;
  WordVectors r = read_bytes_as(dir, "glove.txt", "the 0.1 0.2 0.3\nof 1 -2 3\r\n, 4 5 6");
  EXPECT_EQ(r.words, (std::vector<std::string>{"the", "of", ","}));
  EXPECT_EQ(r.dim, 3);
  EXPECT_EQ(r.values, (std::vector<float>{0.1f, 0.2f, 0.3f, 1, -2, 3, 4, 5, 6}));
  // Two fields, not both integers: a GloVe line with d = 1.
  r = read_bytes_as(dir, "glove1.txt", "x 5\ny 6\n");
  EXPECT_EQ(r.dim, 1);
  EXPECT_EQ(r.values, (std::vector<float>{5, 6}));
}

TEST(Word2vecFile, LimitKeepsTheFirstEntries) {
  TempDir dir;
  // Entries after the limit are not read, malformed or not.
  WordVectors r = read_bytes_as(dir, "l.txt", "4 1\na 1\nb 2\nc 3 3\n", {.limit = 2});
  EXPECT_EQ(r.words, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.values, (std::vector<float>{1, 2}));
  r = read_bytes_as(dir, "l2.txt", "a 1\nb 2\nc 3\n", {.limit = 2});
  EXPECT_EQ(r.words, (std::vector<std::string>{"a", "b"}));
  const WordVectors v = random_vectors(20, 4);
  write_word_vectors(dir.file("l.bin"), v, {.format = EmbeddingFormat::kBinary});
  r = read_word_vectors(dir.file("l.bin"), {.limit = 5});
  ASSERT_EQ(r.size(), 5);
  EXPECT_EQ(std::memcmp(r.values.data(), v.values.data(), 5 * 4 * 4), 0);
  // A limit over V reads V entries.
  EXPECT_EQ(read_word_vectors(dir.file("l.bin"), {.limit = 50}).size(), 20);
  EXPECT_THROW(read_word_vectors(dir.file("l.bin"), {.limit = -1}), ConfigError);
}

TEST(Word2vecFile, EachMalformedTextFixtureNamesItsLine) {
  TempDir dir;
  expect_failure(dir, "h0.txt", "0 2\n", "line 1", "two positive integers");
  expect_failure(dir, "hneg.txt", "3 -2\na 1 2\n", "line 1", "two positive integers");
  expect_failure(dir, "fields.txt", "3 2\na 1 2\nb 1\nc 1 2\n", "line 3", "2 fields, expected 3");
  expect_failure(dir, "fields2.txt", "3 2\na 1 2\nb 1 2\nc 1 2 3\n", "line 4",
                 "4 fields, expected 3");
  expect_failure(dir, "blank.txt", "3 2\na 1 2\n\nc 1 2\n", "line 3", "0 fields");
  expect_failure(dir, "glovefields.txt", "the 1 2\nof 1\n", "line 2", "2 fields, expected 3");
  expect_failure(dir, "number.txt", "3 2\na 1 2\nb 1 2\nc 1 2x\n", "line 4", "not a number");
  expect_failure(dir, "number2.txt", "2 2\na 1 2\nb 1,5 2\n", "line 3", "not a number");
  expect_failure(dir, "nan.txt", "2 2\na 1 nan\nb 1 2\n", "line 2", "NaN");
  expect_failure(dir, "inf.txt", "2 2\na 1 2\nb -inf 2\n", "line 3", "infinite");
  expect_failure(dir, "overflow.txt", "2 2\na 1 2\nb 1e39 2\n", "line 3", "infinite");
  expect_failure(dir, "empty.txt", "2 2\na 1 2\n 1 2\n", "line 3", "empty word");
  expect_failure(dir, "dup.txt", "3 2\na 1 2\nb 3 4\na 5 6\n", "line 4", "first at line 2");
  expect_failure(dir, "fewer.txt", "3 2\na 1 2\nb 3 4\n\n", "line 4", "2 of the 3 entries");
  expect_failure(dir, "more.txt", "2 2\na 1 2\nb 3 4\nc 5 6\n", "line 4", "more entries");
  expect_failure(dir, "long.txt", "2 1\na 1\n" + std::string(1001, 'x') + " 2\n", "line 3",
                 "over the limit of 1000");
  EXPECT_EQ(read_bytes_as(dir, "long1000.txt", "2 1\na 1\n" + std::string(1000, 'x') + " 2\n")
                .words[1]
                .size(),
            1000u);
  expect_failure(dir, "utf8.txt", "2 2\na 1 2\ncaf\xE9 1 2\n", "line 3", "invalid UTF-8");
  expect_failure(dir, "nul.txt", "", "", "empty file");
  expect_failure(dir, "binheader.bin", "a 1 2\n", "line 1", "binary file needs a header",
                 {.format = EmbeddingFormat::kBinary});
}

TEST(Word2vecFile, EachMalformedBinaryFixtureNamesItsEntry) {
  TempDir dir;
  const auto entry = [](const std::string& word, float x, float y) {
    return word + " " + le_bytes(x) + le_bytes(y) + "\n";
  };
  const std::string a = entry("a", 1, 2), b = entry("b", 3, 4);
  const std::string c = entry("c", 5, 6);
  expect_failure(dir, "eof.bin", "3 2\n" + a + b + c.substr(0, 6), "entry 3",
                 "end of file inside its vector");
  expect_failure(dir, "eofword.bin", "3 2\n" + a + b + "ccc", "entry 3",
                 "end of file inside the word");
  expect_failure(dir, "fewer.bin", "3 2\n" + a + b, "entry 3", "2 of the 3 entries");
  expect_failure(dir, "more.bin", "2 2\n" + a + b + c, "entry 3", "more entries");
  expect_failure(dir, "nan.bin", "3 2\n" + a + entry("b", 3, NAN) + c, "entry 2", "NaN");
  expect_failure(dir, "inf.bin", "3 2\n" + a + b + entry("c", -INFINITY, 1), "entry 3", "infinite");
  expect_failure(dir, "empty.bin", "3 2\n" + a + entry("", 3, 4) + c, "entry 2", "empty word");
  expect_failure(dir, "dup.bin", "3 2\n" + a + b + entry("a", 5, 6), "entry 3", "first at entry 1");
  expect_failure(dir, "long.bin", "2 2\n" + a + entry(std::string(1001, 'x'), 3, 4), "entry 2",
                 "over the limit of 1000");
  expect_failure(dir, "nospace.bin", "2 2\n" + a + std::string(2000, 'x'), "entry 2",
                 "no space within 1000 bytes");
  expect_failure(dir, "utf8.bin", "2 2\n" + a + entry("\xFF\xFE", 3, 4), "entry 2",
                 "invalid UTF-8");
}

TEST(Word2vecFile, OptionsMakeTheirFixturesLoad) {
  TempDir dir;
  WordVectors r =
      read_bytes_as(dir, "nan.txt", "2 2\na 1 nan\nb -inf 2\n", {.allow_nonfinite = true});
  EXPECT_TRUE(std::isnan(r.values[1]));
  EXPECT_TRUE(std::isinf(r.values[2]) && r.values[2] < 0);
  r = read_bytes_as(dir, "inf.bin", "1 2\nc " + le_bytes(INFINITY) + le_bytes(1) + "\n",
                    {.allow_nonfinite = true});
  EXPECT_TRUE(std::isinf(r.values[0]));

  using Duplicates = ReadOptions::Duplicates;
  r = read_bytes_as(dir, "dup.txt", "3 2\na 1 2\nb 3 4\na 5 6\n",
                    {.duplicates = Duplicates::kKeepFirst});
  EXPECT_EQ(r.words, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.values, (std::vector<float>{1, 2, 3, 4}));
  r = read_bytes_as(dir, "dup.bin",
                    "3 1\na " + le_bytes(1) + "a " + le_bytes(2) + "b " + le_bytes(3),
                    {.duplicates = Duplicates::kKeepFirst});
  EXPECT_EQ(r.words, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.values, (std::vector<float>{1, 3}));

  using UnicodeErrors = ReadOptions::UnicodeErrors;
  r = read_bytes_as(dir, "utf8.txt", "2 2\na 1 2\ncaf\xE9 1 2\n",
                    {.unicode_errors = UnicodeErrors::kReplace});
  EXPECT_EQ(r.words[1], "caf\xEF\xBF\xBD");  // U+FFFD
  r = read_bytes_as(dir, "utf8.bin", "1 1\n\xFF\xC3\xA9\xE2\x82 " + le_bytes(1),
                    {.unicode_errors = UnicodeErrors::kReplace});
  EXPECT_EQ(r.words[0], "\xEF\xBF\xBD\xC3\xA9\xEF\xBF\xBD\xEF\xBF\xBD");  // one per bad byte
}

// Found by fuzz/word2vec_fuzz.cpp: a word under 1000 bytes whose invalid bytes, replaced by
// U+FFFD (3 bytes each), made it longer than the writer (and a strict reader) accepts.
TEST(Word2vecFile, ReplacedWordsStayWithinTheWordLimit) {
  TempDir dir;
  const ReadOptions replace = {.unicode_errors = ReadOptions::UnicodeErrors::kReplace};
  expect_failure(dir, "grown.txt", "a 1\n" + std::string(334, '\xFF') + " 4\n", "line 2",
                 "over the limit of 1000", replace);
  const WordVectors r =
      read_bytes_as(dir, "fits.txt", "a 1\n" + std::string(333, '\xFF') + " 4\n", replace);
  EXPECT_EQ(r.words[1].size(), 999u);
  write_word_vectors(dir.file("back.txt"), r);  // written back, it reads strictly
  EXPECT_EQ(read_word_vectors(dir.file("back.txt")).words, r.words);
}

TEST(Word2vecFile, AutoDetectionReadsShortTextValuesAndForcedBinary) {
  TempDir dir;
  // Short values and a non-ASCII word right after them: still text.
  WordVectors r = read_bytes_as(dir, "short.txt", "2 3\nzero 0 0 0\ncaf\xC3\xA9 1 2 3\n");
  EXPECT_EQ(r.values, (std::vector<float>{0, 0, 0, 1, 2, 3}));
  // A first vector that starts with a '\n' byte: too short for a text line of d numbers, so
  // binary.
  const float newline_first = std::bit_cast<float>(0x3F80000Au);  // bytes 0A 00 80 3F
  r = read_bytes_as(
      dir, "newline.bin",
      "2 2\nw " + le_bytes(newline_first) + le_bytes(2) + "x " + le_bytes(3) + le_bytes(4));
  EXPECT_EQ(r.values, (std::vector<float>{newline_first, 2, 3, 4}));
  // A binary file whose first vector is printable ASCII ("ABCDEFGH") reads as text, and fails;
  // format = kBinary reads it.
  const std::string printable = "1 2\nw ABCDEFGH\n";
  EXPECT_THROW(read_bytes_as(dir, "printable.bin", printable), EmbeddingFileError);
  r = read_bytes_as(dir, "printable.bin", printable, {.format = EmbeddingFormat::kBinary});
  EXPECT_EQ(r.values, (std::vector<float>{std::bit_cast<float>(0x44434241u),
                                          std::bit_cast<float>(0x48474645u)}));
}

TEST(Word2vecFile, WriterRefusesWordsItCannotWrite) {
  EXPECT_THROW(format_word_vectors({{"a b"}, 1, {1}}), Error);
  EXPECT_THROW(format_word_vectors({{""}, 1, {1}}), Error);
  EXPECT_THROW(format_word_vectors({{"a\nb"}, 1, {1}}), Error);
  EXPECT_THROW(format_word_vectors({{"a"}, 2, {1}}), Error);
  EXPECT_THROW(format_word_vectors({{}, 2, {}}), Error);
}

}  // namespace
}  // namespace desync
