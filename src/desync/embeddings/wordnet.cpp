#include "desync/embeddings/wordnet.h"

#include <charconv>
#include <filesystem>
#include <fstream>

#include "desync/core/error.h"

namespace desync {
namespace {

constexpr const char* kInstallHint = "`apt-get install wordnet-base` (or scripts/install-deps)";

// The whitespace-separated fields of `line`.
std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (true) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    if (i == line.size()) return out;
    const size_t begin = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    out.push_back(line.substr(begin, i - begin));
  }
}

// Reads field `s` as a number in `base`, all of it; throws with `where` and `what` otherwise.
int64_t number(std::string_view s, int base, const std::string& where, const char* what) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty() || v < 0) {
    throw DataError(where + ": " + what + " '" + std::string(s) + "' is not a " +
                    (base == 16 ? "hexadecimal" : "decimal") + " number");
  }
  return v;
}

// Fields [i, i + n) must exist.
void need(const std::vector<std::string_view>& f, size_t i, size_t n, const std::string& where,
          const char* what) {
  if (i + n > f.size()) throw DataError(where + ": the line ends before its " + what);
}

std::string strip_marker(std::string_view word) {
  for (std::string_view marker : {"(a)", "(p)", "(ip)"}) {
    if (word.size() > marker.size() && word.substr(word.size() - marker.size()) == marker) {
      return std::string(word.substr(0, word.size() - marker.size()));
    }
  }
  return std::string(word);
}

Synset parse_data_line(std::string_view line, const std::string& where) {
  const size_t bar = line.find('|');
  if (bar == std::string_view::npos) throw DataError(where + ": no '|' before the gloss");
  const std::vector<std::string_view> f = fields(line.substr(0, bar));
  Synset s;
  need(f, 0, 4, where, "word count");
  s.offset = number(f[0], 10, where, "offset");
  s.lex_filenum = static_cast<int>(number(f[1], 10, where, "lex_filenum"));
  if (f[2].size() != 1 || std::string_view("nvasr").find(f[2][0]) == std::string_view::npos) {
    throw DataError(where + ": ss_type '" + std::string(f[2]) + "' is not one of n v a s r");
  }
  s.ss_type = f[2][0];
  const int64_t w_cnt = number(f[3], 16, where, "w_cnt");
  size_t i = 4;
  need(f, i, 2 * static_cast<size_t>(w_cnt) + 1, where, "pointer count");
  for (int64_t w = 0; w < w_cnt; ++w, i += 2) {
    s.words.push_back(
        {strip_marker(f[i]), static_cast<int>(number(f[i + 1], 16, where, "lex_id"))});
  }
  const int64_t p_cnt = number(f[i++], 10, where, "p_cnt");
  need(f, i, 4 * static_cast<size_t>(p_cnt), where, "pointers");
  for (int64_t p = 0; p < p_cnt; ++p, i += 4) {
    WnPointer ptr;
    ptr.symbol = std::string(f[i]);
    ptr.offset = number(f[i + 1], 10, where, "pointer offset");
    if (f[i + 2].size() != 1 || !wn_pos_from_letter(f[i + 2][0], &ptr.pos)) {
      throw DataError(where + ": pointer pos '" + std::string(f[i + 2]) + "' is not n v a r");
    }
    const int64_t st = f[i + 3].size() == 4 ? number(f[i + 3], 16, where, "source/target") : -1;
    if (st < 0) throw DataError(where + ": source/target '" + std::string(f[i + 3]) + "'");
    ptr.source = static_cast<int>(st >> 8);
    ptr.target = static_cast<int>(st & 0xFF);
    if (ptr.source > static_cast<int>(w_cnt)) {
      throw DataError(where + ": pointer source word " + std::to_string(ptr.source) +
                      " but the synset has " + std::to_string(w_cnt) + " words");
    }
    s.pointers.push_back(std::move(ptr));
  }
  // What is left before "|" are verb frames, which nothing here uses.
  std::string_view gloss = line.substr(bar + 1);
  while (!gloss.empty() && (gloss.front() == ' ' || gloss.front() == '\t')) gloss.remove_prefix(1);
  while (!gloss.empty() && (gloss.back() == ' ' || gloss.back() == '\r' || gloss.back() == '\t')) {
    gloss.remove_suffix(1);
  }
  s.gloss = std::string(gloss);
  return s;
}

WnIndexEntry parse_index_line(std::string_view line, const std::string& where) {
  const std::vector<std::string_view> f = fields(line);
  need(f, 0, 4, where, "pointer count");
  WnIndexEntry e;
  e.lemma = std::string(f[0]);
  const int64_t synset_cnt = number(f[2], 10, where, "synset_cnt");
  const int64_t p_cnt = number(f[3], 10, where, "p_cnt");
  size_t i = 4 + static_cast<size_t>(p_cnt);
  need(f, i, 2 + static_cast<size_t>(synset_cnt), where, "synset offsets");
  e.tagsense_cnt = number(f[i + 1], 10, where, "tagsense_cnt");
  for (i += 2; i < f.size(); ++i) e.offsets.push_back(number(f[i], 10, where, "synset offset"));
  if (static_cast<int64_t>(e.offsets.size()) != synset_cnt) {
    throw DataError(where + ": " + std::to_string(e.offsets.size()) +
                    " synset offsets, but synset_cnt says " + std::to_string(synset_cnt));
  }
  return e;
}

WnException parse_exc_line(std::string_view line, const std::string& where) {
  const std::vector<std::string_view> f = fields(line);
  if (f.size() < 2) throw DataError(where + ": expected 'inflected base [base...]'");
  WnException e{std::string(f[0]), {}};
  for (size_t i = 1; i < f.size(); ++i) e.bases.emplace_back(f[i]);
  return e;
}

// Calls parse(line, "file:line") for every line that is neither blank nor a licence line.
template <typename Parse>
void for_each_line(const std::string& path, Parse parse) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot open " + path + "; " + kInstallHint + " provides it");
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.rfind("  ", 0) == 0 || fields(line).empty()) continue;
    parse(line, path + ":" + std::to_string(number));
  }
  if (in.bad()) throw DataError("cannot read " + path);
}

}  // namespace

const char* wn_pos_name(WnPos pos) {
  static constexpr const char* kNames[] = {"noun", "verb", "adj", "adv"};
  return kNames[static_cast<int>(pos)];
}

bool wn_pos_from_letter(char letter, WnPos* pos) {
  switch (letter) {
    case 'n':
      *pos = WnPos::kNoun;
      return true;
    case 'v':
      *pos = WnPos::kVerb;
      return true;
    case 'a':
    case 's':
      *pos = WnPos::kAdj;
      return true;
    case 'r':
      *pos = WnPos::kAdv;
      return true;
    default:
      return false;
  }
}

WordNet WordNet::read(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) {
    throw DataError("WordNet directory " + dir + " does not exist; " + kInstallHint +
                    " provides it");
  }
  WordNet wn;
  for (WnPos pos : kWnPoses) {
    Part& p = wn.parts_[static_cast<size_t>(pos)];
    const std::string name = wn_pos_name(pos);
    for_each_line(dir + "/data." + name, [&](std::string_view line, const std::string& where) {
      p.synsets.push_back(parse_data_line(line, where));
      p.by_offset.emplace(p.synsets.back().offset, p.synsets.size() - 1);
    });
    for_each_line(dir + "/index." + name, [&](std::string_view line, const std::string& where) {
      p.index.push_back(parse_index_line(line, where));
      p.by_lemma.emplace(p.index.back().lemma, p.index.size() - 1);
    });
    for_each_line(dir + "/" + name + ".exc", [&](std::string_view line, const std::string& where) {
      p.exceptions.push_back(parse_exc_line(line, where));
    });
  }
  return wn;
}

const Synset* WordNet::synset(WnPos pos, int64_t offset) const {
  const Part& p = part(pos);
  const auto it = p.by_offset.find(offset);
  return it == p.by_offset.end() ? nullptr : &p.synsets[it->second];
}

const WnIndexEntry* WordNet::lookup(WnPos pos, const std::string& lemma) const {
  const Part& p = part(pos);
  const auto it = p.by_lemma.find(lemma);
  return it == p.by_lemma.end() ? nullptr : &p.index[it->second];
}

}  // namespace desync
