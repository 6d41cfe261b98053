// A reader of the WordNet 3.0 database files (wndb(5WN); Debian's wordnet-base installs them in
// /usr/share/wordnet): data.<pos>, index.<pos> and <pos>.exc for the four parts of speech.
//
// data.<pos> line: "offset lex_filenum ss_type w_cnt {word lex_id}*w_cnt p_cnt
// {symbol offset pos source/target}*p_cnt [frames] | gloss", w_cnt and lex_id hexadecimal,
// p_cnt decimal, source/target four hex digits: "0000" links the synsets, otherwise the first
// two give the 1-based number of the word in this synset and the last two in the target synset.
// Adjective markers "(a)", "(p)", "(ip)" are stripped from words. index.<pos> line: "lemma pos
// synset_cnt p_cnt {symbol}*p_cnt sense_cnt tagsense_cnt {offset}*synset_cnt", senses most
// frequent first. <pos>.exc line: "inflected base [base...]". Licence lines (two leading spaces)
// and blank lines are skipped; words keep their spelling (upper case, "_" for spaces).
//
// A malformed line throws DataError naming the file and the line; a missing file, DataError
// naming it and the package that provides it. A WordNet is immutable once read; safe to read
// from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace desync {

constexpr const char* kDefaultWordnetDir = "/usr/share/wordnet";

enum class WnPos { kNoun = 0, kVerb = 1, kAdj = 2, kAdv = 3 };
constexpr std::array<WnPos, 4> kWnPoses = {WnPos::kNoun, WnPos::kVerb, WnPos::kAdj, WnPos::kAdv};

// "noun", "verb", "adj", "adv": the suffix of the file names.
const char* wn_pos_name(WnPos pos);
// The part of speech of a letter of the files: n, v, a or s (satellite adjective), r.
// Returns false for another letter.
bool wn_pos_from_letter(char letter, WnPos* pos);

struct WnWord {
  std::string lemma;  // as in the file, marker stripped ("ready_to_hand", "Bird")
  int lex_id = 0;
};

struct WnPointer {
  std::string symbol;  // "!", "@", "%p", "#m", ...
  int64_t offset = 0;  // of the target synset
  WnPos pos = WnPos::kNoun;
  int source = 0;  // 1-based word number in this synset; 0 for a semantic pointer
  int target = 0;  // 1-based word number in the target synset; 0 for a semantic pointer
};

struct Synset {
  int64_t offset = 0;
  int lex_filenum = 0;
  char ss_type = 'n';  // n, v, a, s, r
  std::vector<WnWord> words;
  std::vector<WnPointer> pointers;
  std::string gloss;  // the text after "|", trimmed
};

struct WnIndexEntry {
  std::string lemma;
  std::vector<int64_t> offsets;  // synsets, most frequent sense first
  int64_t tagsense_cnt = 0;
};

struct WnException {
  std::string inflected;
  std::vector<std::string> bases;
};

class WordNet {
 public:
  // Reads the 12 files of `dir`.
  static WordNet read(const std::string& dir = kDefaultWordnetDir);

  // Synsets of data.<pos> in file order.
  const std::vector<Synset>& synsets(WnPos pos) const { return part(pos).synsets; }
  // The synset at `offset` of data.<pos> (a satellite adjective is in data.adj), or nullptr.
  const Synset* synset(WnPos pos, int64_t offset) const;
  // index.<pos> in file order, and the entry of `lemma`, or nullptr.
  const std::vector<WnIndexEntry>& index(WnPos pos) const { return part(pos).index; }
  const WnIndexEntry* lookup(WnPos pos, const std::string& lemma) const;
  // <pos>.exc in file order.
  const std::vector<WnException>& exceptions(WnPos pos) const { return part(pos).exceptions; }

 private:
  struct Part {
    std::vector<Synset> synsets;
    std::unordered_map<int64_t, size_t> by_offset;
    std::vector<WnIndexEntry> index;
    std::unordered_map<std::string, size_t> by_lemma;
    std::vector<WnException> exceptions;
  };
  const Part& part(WnPos pos) const { return parts_[static_cast<size_t>(pos)]; }

  std::array<Part, 4> parts_;
};

}  // namespace desync
