// GCIDE, the GNU Collaborative International Dictionary of English, as plain-text documents,
// read from Debian's dict-gcide: gcide.dict.dz (dictzip, which zlib reads as gzip) and
// gcide.index (dictd index lines "headword TAB offset TAB length", numbers in dictd base 64).
//
// Entries. Every distinct offset of the index is one entry and one document (headwords that
// share an offset, such as run-in terms, give one document), in the order of the dictionary.
// Offsets named by a headword starting with "00-" are skipped: dictd's 00-database-* metadata
// and its 00-gcide-*/00-web1913-* aliases, which hold the license preamble. An entry left
// empty by the rules below is skipped too.
//
// Markup to plain text, in this order:
//  1. Bytes. The file is ASCII with a handful of Windows-1252 bytes: a byte that does not
//     start a valid UTF-8 character is read as Windows-1252 and written as UTF-8.
//  2. Epigraph. The first entry opens with the dictionary's motto, an indented quotation,
//     before its headword line: indented lines before the first line that starts at column 0
//     and holds a backslash field (rule 4) are dropped when that line exists.
//  3. Source tags. A bracketed note made only of source names and numbers ("[1913 Webster]",
//     "[WordNet 1.5 +PJC]", "[Webster 1913 Suppl.]", "[PJC]", "[Century Dict. 1906]",
//     "[RHUD]", "[AS]", "[WordNet sense 2]", ...; kSourceNames lists the names) is removed
//     with the blanks before it, and a line it leaves blank is dropped. The layout marker
//     "[break]" goes the same way.
//  4. Syllabified headwords. The backslash field after a headword, \Af*fat"u*ate\ (the
//     headword again with syllable and stress marks), is removed with the blanks before it:
//     "Affatuate \Af*fat"u*ate\, v. t." reads "Affatuate, v. t.". The pronunciation in
//     parentheses that follows it is kept with its marks, its codes converted by rule 5:
//     "(ăf*făt"ū*āt)". A backslash that does not open a field of at most 80 characters on at
//     most two lines stays as it is.
//  5. Character codes become UTF-8 (kCodes lists them all): accents ['e] é, [`e] è, [^e] ê,
//     ["e] ë, [~n] ñ, [,c] ç, [*a] å; macron [=a] ā, [imac] ī, [=oo] o͞o; Webster's semi-long
//     vowels [-e], [asl] are written with the macron too (ē, ā); breve [a^] ă, [oo^] o͝o; dot
//     [.a] ȧ, [.u] u̇, and below consonants [.t] ṭ, [.n] ṇ (Sanskrit and Arabic
//     transliteration); [aum] ä, [add] a̤, [udd] ṳ; ligatures [ae] æ, [oe] œ, [AE] Æ, [OE] Œ;
//     letters [eth] ð, [thorn] þ, [yogh] ȝ, [ng] ŋ, [th] t͟h (voiced th), [schwa] ə; Greek
//     letter names [alpha] α, [Delta] Δ, [sigmat] ς; symbols [root] √, [deg] °, [min] ′,
//     [sec] ″, [sect] §, [para] ¶, [dag] †, [sharp] ♯, [flat] ♭, [hand] ☞, [crescent] ˘,
//     [times] ×, [pounds] £; fractions [frac34] 3/4, [frac1x100] 1/100. Bracketed text that
//     is not a code - etymologies "[L. ad + fatuus foolish.]", labels "[Obs.]", "[R.]",
//     "[Colloq.]" - stays.
//  6. Cross-references. Braces go: {Afeard} -> Afeard. Inside a pair that holds a syllabified
//     word ({Gre*ga"ri*ous*ly}), the syllable and stress marks * " ` go too: Gregariously.
//  7. Layout. Every line loses its leading indentation and trailing blanks, runs of blanks
//     within a line become one space, runs of blank lines become one, and blank lines at the
//     start and end go. The dictionary's line breaks stay.
#include "desync/data/gcide.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/token_cache.h"
#include "desync/data/utf8.h"

namespace desync {
namespace {

constexpr const char* kInstallHint = "`apt-get install dict-gcide` (or scripts/install-deps)";
constexpr size_t kMaxFieldChars = 80;  // rule 4

// ---- rule 1: bytes --------------------------------------------------------------------------

// Windows-1252 0x80-0x9F (the unassigned five map to the C1 code point of the same value).
constexpr std::array<uint16_t, 32> kCp1252 = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

std::string to_utf8(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  size_t i = 0;
  while (i < raw.size()) {
    uint32_t cp = 0;
    const size_t n = utf8_char(raw, i, &cp);
    if (n > 0) {
      out.append(raw.data() + i, n);
      i += n;
      continue;
    }
    const auto b = static_cast<unsigned char>(raw[i++]);
    append_utf8(out, b < 0xA0 ? kCp1252[b - 0x80] : b);
  }
  return out;
}

// ---- lines ----------------------------------------------------------------------------------

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t begin = 0;
  while (true) {
    const size_t end = text.find('\n', begin);
    lines.push_back(text.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return lines;
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += '\n';
    out += lines[i];
  }
  return out;
}

bool is_blank(char c) { return c == ' ' || c == '\t'; }

bool blank_line(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return is_blank(c) || c == '\r'; });
}

// ---- rule 2: epigraph -----------------------------------------------------------------------

void drop_epigraph(std::vector<std::string>& lines) {
  size_t i = 0;
  bool text_before = false;
  while (i < lines.size() && (lines[i].empty() || is_blank(lines[i][0]))) {
    text_before = text_before || !blank_line(lines[i]);
    ++i;
  }
  if (text_before && i < lines.size() && lines[i].find('\\') != std::string::npos) {
    lines.erase(lines.begin(), lines.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

// ---- rule 3: source tags --------------------------------------------------------------------

const std::unordered_set<std::string>& source_names() {
  static const std::unordered_set<std::string> kSourceNames = {
      "Webster", "WordNet", "Wordnet", "PJC",        "PJC.",  "AS", "RP",
      "RDH",     "RHUD",    "MW10",    "PC",         "JC",    "JG", "CM",
      "Century", "Dict.",   "Dict.,",  "Dictionary", "Suppl."};
  return kSourceNames;
}

// A note made only of source names, numbers ("1913", "1.5", "1,") and the word "sense".
bool source_tag(std::string_view content) {
  if (content == "break") return true;
  bool named = false;
  size_t i = 0;
  while (i < content.size()) {
    if (is_blank(content[i]) || content[i] == '+') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < content.size() && !is_blank(content[j]) && content[j] != '+') ++j;
    const std::string token(content.substr(i, j - i));
    const bool number = std::all_of(token.begin(), token.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == ',' || c == '&';
    });
    if (source_names().count(token) > 0) {
      named = true;
    } else if (!number && token != "sense") {
      return false;
    }
    i = j;
  }
  return named;
}

void drop_source_tags(std::vector<std::string>& lines) {
  std::vector<std::string> kept;
  kept.reserve(lines.size());
  for (std::string& line : lines) {
    bool removed = false;
    size_t pos = 0;
    while ((pos = line.find('[', pos)) != std::string::npos) {
      const size_t close = line.find_first_of("[]", pos + 1);
      if (close == std::string::npos || line[close] != ']' ||
          !source_tag(std::string_view(line).substr(pos + 1, close - pos - 1))) {
        ++pos;
        continue;
      }
      size_t begin = pos;
      while (begin > 0 && is_blank(line[begin - 1])) --begin;
      line.erase(begin, close + 1 - begin);
      removed = true;
      pos = begin;
    }
    if (removed && blank_line(line)) continue;
    kept.push_back(std::move(line));
  }
  lines = std::move(kept);
}

// ---- rule 4: syllabified headwords ----------------------------------------------------------

std::string drop_backslash_fields(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '\\') {
      out += text[i++];
      continue;
    }
    const size_t close = text.find('\\', i + 1);
    const bool field = close != std::string::npos && close - i - 1 <= kMaxFieldChars &&
                       std::count(text.begin() + static_cast<std::ptrdiff_t>(i),
                                  text.begin() + static_cast<std::ptrdiff_t>(close), '\n') <= 1;
    if (!field) {
      out += text[i++];
      continue;
    }
    while (!out.empty() && is_blank(out.back())) out.pop_back();
    i = close + 1;
  }
  return out;
}

// ---- rule 5: character codes ----------------------------------------------------------------

// kCodes: every code GCIDE uses for a character (surveyed from the bracketed codes of the
// dictionary), as "code text" pairs separated by blanks. A base letter with a mark is written
// precomposed where Unicode has the character, else as the letter and a combining mark. The
// no-break space of nbsp is written as its escape, \u00a0.
constexpr const char* kCodes = R"(
  'a á  'e é  'i í  'o ó  'u ú  'y ý  'A Á  'E É  'I Í  'O Ó  'U Ú  'n ń  'c ć  's ś  'z ź
  cacute ć  ccaron č
  `a à  `e è  `i ì  `o ò  `u ù  `A À  `E È
  ^a â  ^e ê  ^i î  ^o ô  ^u û  ^y ŷ  ^A Â  ^E Ê  ^O Ô
  "a ä  "e ë  "i ï  "o ö  "u ü  "y ÿ  "A Ä  "E Ë  "I Ï  "O Ö  "U Ü  aum ä
  ~a ã  ~e ẽ  ~i ĩ  ~o õ  ~u ũ  ~n ñ  ~N Ñ  ~l l̃  mtil m̃  ncir n̂
  *a å  *A Å  *u ů  ,c ç  ,C Ç  ,s ş
  =a ā  =e ē  =i ī  =o ō  =u ū  =y ȳ  =A Ā  =E Ē  =I Ī  =O Ō  =U Ū  imac ī  =ae ǣ  =AE Ǣ  =oo o͞o
  -a ā  -e ē  -i ī  -o ō  -u ū  -y ȳ  asl ā  als ā
  a^ ă  e^ ĕ  i^ ĭ  o^ ŏ  u^ ŭ  y^ y̆  A^ Ă  E^ Ĕ  I^ Ĭ  O^ Ŏ  U^ Ŭ  oo^ o͝o
  .a ȧ  .e ė  .o ȯ  .u u̇  .c ś  .d ḍ  .h ḥ  .l ḷ  .m ṃ  .n ṇ  .r ṛ  .s ṣ  .t ṭ  .z ẓ
  dsdot ḍ  lsdot ḷ  tsdo ṭ  zdot ż  mdot ṁ  add a̤  udd ṳ
  ae æ  AE Æ  oe œ  OE Œ  filig fi  fllig fl  fflig ff  ffilig ffi  ffllig ffl
  eth ð  ETH Ð  thorn þ  THORN Þ  yogh ȝ  YOGH Ȝ  ng ŋ  th t͟h  schwa ə
  asper ʽ  spasp ʽ  digamma ϝ  sigmat ς
  root √  cuberoot ∛  deg °  min ′  sec ″  prime ′  bprime ″  sect §  para ¶  dag †  dagger †
  ddag ‡  sharp ♯  flat ♭  natural ♮  times ×  divby ÷  middot ·  pounds £  nabla ∇  rarr →
  ldquo “  ldqo “  rdquo ”  rdqo ”  lsquo ‘  rsquo ’  nbsp \u00a0 hand ☞  crescent ˘
  upslur ‿  downslur ⁀  ounceap ℥
)";

// Greek letter names: lower case gives the small letter, a capital first letter the capital.
constexpr std::array<std::pair<const char*, uint32_t>, 24> kGreek = {{
    {"alpha", 0x3B1},  {"beta", 0x3B2}, {"gamma", 0x3B3}, {"delta", 0x3B4}, {"epsilon", 0x3B5},
    {"zeta", 0x3B6},   {"eta", 0x3B7},  {"theta", 0x3B8}, {"iota", 0x3B9},  {"kappa", 0x3BA},
    {"lambda", 0x3BB}, {"mu", 0x3BC},   {"nu", 0x3BD},    {"xi", 0x3BE},    {"omicron", 0x3BF},
    {"pi", 0x3C0},     {"rho", 0x3C1},  {"sigma", 0x3C3}, {"tau", 0x3C4},   {"upsilon", 0x3C5},
    {"phi", 0x3C6},    {"chi", 0x3C7},  {"psi", 0x3C8},   {"omega", 0x3C9},
}};

const std::unordered_map<std::string, std::string>& code_table() {
  static const std::unordered_map<std::string, std::string> table = [] {
    std::unordered_map<std::string, std::string> t;
    std::istringstream pairs(kCodes);
    std::string code, text;
    while (pairs >> code >> text) t.emplace(code, text == "\\u00a0" ? "\u00a0" : text);
    for (const auto& [name, small] : kGreek) {
      std::string capital(name), upper(name);
      capital[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(capital[0])));
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      std::string s, c;
      append_utf8(s, small);
      append_utf8(c, small - 0x20);  // Α..Ω sit 0x20 below α..ω
      t.emplace(name, s);
      t.emplace(capital, c);
      t.emplace(upper, c);
    }
    return t;
  }();
  return table;
}

// "frac34" -> "3/4", "frac1x100" -> "1/100"; "" if `code` is not a fraction.
std::string fraction(std::string_view code) {
  if (code.substr(0, 4) != "frac") return "";
  const std::string_view digits = code.substr(4);
  const size_t x = digits.find('x');
  const auto all_digits = [](std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c));
    });
  };
  if (x != std::string_view::npos) {
    const std::string_view num = digits.substr(0, x), den = digits.substr(x + 1);
    if (all_digits(num) && all_digits(den)) return fmt::format("{}/{}", num, den);
    return "";
  }
  if (digits.size() == 2 && all_digits(digits)) return fmt::format("{}/{}", digits[0], digits[1]);
  return "";
}

std::string convert_codes(const std::string& text) {
  const auto& table = code_table();
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '[') {
      out += text[i++];
      continue;
    }
    const size_t close = text.find_first_of("[]", i + 1);
    if (close != std::string::npos && text[close] == ']' && close - i - 1 <= 12) {
      const std::string code = text.substr(i + 1, close - i - 1);
      const auto it = table.find(code);
      const std::string frac = it == table.end() ? fraction(code) : "";
      if (it != table.end() || !frac.empty()) {
        out += it != table.end() ? it->second : frac;
        i = close + 1;
        continue;
      }
    }
    out += text[i++];
  }
  return out;
}

// ---- rule 6: cross-references ---------------------------------------------------------------

bool alpha(char c) { return std::isalpha(static_cast<unsigned char>(c)) || (c & 0x80) != 0; }

std::string drop_braces(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '}') {
      ++i;
      continue;
    }
    if (c != '{') {
      out += c;
      ++i;
      continue;
    }
    const size_t close = text.find_first_of("{}", i + 1);
    if (close == std::string::npos || text[close] != '}') {
      ++i;  // an unpaired brace
      continue;
    }
    const std::string_view inner = std::string_view(text).substr(i + 1, close - i - 1);
    bool syllabified = false;
    for (size_t k = 1; k + 1 < inner.size() && !syllabified; ++k) {
      syllabified = inner[k] == '*' && alpha(inner[k - 1]) && alpha(inner[k + 1]);
    }
    for (char ch : inner) {
      if (syllabified && (ch == '*' || ch == '"' || ch == '`')) continue;
      out += ch;
    }
    i = close + 1;
  }
  return out;
}

// ---- rule 7: layout -------------------------------------------------------------------------

std::string tidy_layout(const std::vector<std::string>& lines) {
  std::vector<std::string> out;
  for (const std::string& line : lines) {
    std::string tidy;
    bool gap = false;
    for (char c : line) {
      if (is_blank(c) || c == '\r') {
        gap = true;
        continue;
      }
      if (gap && !tidy.empty()) tidy += ' ';
      gap = false;
      tidy += c;
    }
    if (tidy.empty() && (out.empty() || out.back().empty())) continue;
    out.push_back(std::move(tidy));
  }
  while (!out.empty() && out.back().empty()) out.pop_back();
  return join_lines(out);
}

// ---- files ----------------------------------------------------------------------------------

struct IndexEntry {
  int64_t length = 0;
  bool metadata = false;  // named by a "00-" headword
};

std::map<int64_t, IndexEntry> read_index(const std::string& path) {
  std::map<int64_t, IndexEntry> entries;
  for (const DictdIndexLine& line : read_dictd_index(path)) {
    IndexEntry& e = entries[line.offset];
    e.length = std::max(e.length, line.length);
    e.metadata = e.metadata || line.metadata;
  }
  return entries;
}

}  // namespace

std::vector<DictdIndexLine> read_dictd_index(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt::format("cannot open {}; {} provides it", path, kInstallHint));
  std::vector<DictdIndexLine> lines;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t t2 = line.rfind('\t');
    const size_t t1 =
        t2 == std::string::npos || t2 == 0 ? std::string::npos : line.rfind('\t', t2 - 1);
    const int64_t offset =
        t1 == std::string::npos ? -1 : dictd_number(line.substr(t1 + 1, t2 - t1 - 1));
    const int64_t length = t1 == std::string::npos ? -1 : dictd_number(line.substr(t2 + 1));
    if (offset < 0 || length < 0) {
      throw DataError(
          fmt::format("{}:{}: not a dictd index line (headword, offset, length "
                      "separated by tabs)",
                      path, number));
    }
    lines.push_back({offset, length, line.compare(0, 3, "00-") == 0});
  }
  if (lines.empty()) throw DataError(fmt::format("{}: the index is empty", path));
  return lines;
}

std::string read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw DataError(fmt::format("cannot open {}", path));
  gzbuffer(f, 1u << 18);
  std::string out;
  std::vector<char> buf(1u << 20);
  while (true) {
    const int got = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (got < 0) {
      int code = 0;
      const std::string msg = gzerror(f, &code);
      gzclose(f);
      throw DataError(fmt::format("{}: corrupt or truncated ({})", path, msg));
    }
    if (got == 0) break;
    out.append(buf.data(), static_cast<size_t>(got));
  }
  gzclose(f);
  return out;
}

int64_t dictd_number(std::string_view digits) {
  if (digits.empty() || digits.size() > 10) return -1;
  int64_t v = 0;
  for (char c : digits) {
    int d;
    if (c >= 'A' && c <= 'Z') {
      d = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      d = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      d = c - '0' + 52;
    } else if (c == '+') {
      d = 62;
    } else if (c == '/') {
      d = 63;
    } else {
      return -1;
    }
    v = v * 64 + d;
  }
  return v;
}

std::string gcide_plain_text(std::string_view entry) {
  std::vector<std::string> lines = split_lines(to_utf8(entry));
  drop_epigraph(lines);
  drop_source_tags(lines);
  std::string text = drop_backslash_fields(join_lines(lines));
  text = drop_braces(convert_codes(text));
  return tidy_layout(split_lines(text));
}

std::vector<std::string> read_gcide(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) {
    throw DataError(
        fmt::format("GCIDE directory {} does not exist; {} provides it", dir, kInstallHint));
  }
  const std::string dict_path = dir + "/gcide.dict.dz";
  const std::string index_path = dir + "/gcide.index";
  if (!std::filesystem::is_regular_file(dict_path)) {
    throw DataError(fmt::format("{} does not exist; {} provides it", dict_path, kInstallHint));
  }
  const std::map<int64_t, IndexEntry> index = read_index(index_path);
  const std::string dict = read_gzip(dict_path);
  std::vector<std::string> documents;
  documents.reserve(index.size());
  for (const auto& [offset, e] : index) {
    if (e.metadata) continue;
    if (offset + e.length > static_cast<int64_t>(dict.size())) {
      throw DataError(
          fmt::format("{}: an entry at offset {} of length {} runs past the end of {} "
                      "({} bytes); the two files do not belong together",
                      index_path, offset, e.length, dict_path, dict.size()));
    }
    std::string text = gcide_plain_text(
        std::string_view(dict).substr(static_cast<size_t>(offset), static_cast<size_t>(e.length)));
    if (!text.empty()) documents.push_back(std::move(text));
  }
  if (documents.empty()) throw DataError(fmt::format("{}: no entries", index_path));
  return documents;
}

}  // namespace desync
