#include "desync/embeddings/gcide_corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>

#include "desync/core/error.h"
#include "desync/data/gcide.h"
#include "desync/data/utf8.h"
#include "desync/data/word_corpus.h"
#include "desync/embeddings/wordnet.h"

namespace desync {
namespace {

constexpr const char* kGcideHint = "`apt-get install dict-gcide` (or scripts/install-deps)";

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_letter(char c) { return (c >= 'a' && c <= 'z') || is_upper(c); }

// The end of the line that holds text[i] (the index of its '\n', or text.size()).
size_t line_end(std::string_view text, size_t i) {
  const size_t end = text.find('\n', i);
  return end == std::string_view::npos ? text.size() : end;
}

bool blank_line(std::string_view line) { return std::all_of(line.begin(), line.end(), is_blank); }

// ---- step 1 ---------------------------------------------------------------------------------

std::string valid_utf8(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size();) {
    uint32_t cp = 0;
    const size_t n = utf8_char(raw, i, &cp);
    if (n == 0) {
      out += ' ';
      ++i;
    } else {
      out.append(raw.data() + i, n);
      i += n;
    }
  }
  return out;
}

// ---- step 2 ---------------------------------------------------------------------------------

// Deletes each "\...\" field on one line, with the "( ... )" (nesting-aware, same line) after it.
std::string drop_headword_fields(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t eol = line_end(text, i);
    const size_t close = text[i] == '\\' ? text.find('\\', i + 1) : std::string_view::npos;
    if (close == std::string_view::npos || close > eol) {
      out += text[i++];
      continue;
    }
    i = close + 1;
    size_t j = i;
    while (j < eol && is_blank(text[j])) ++j;
    if (j < eol && text[j] == '(') {
      int depth = 0;
      for (size_t k = j; k < eol; ++k) {
        depth += text[k] == '(' ? 1 : text[k] == ')' ? -1 : 0;
        if (depth == 0) {
          i = k + 1;
          break;
        }
      }
    }
  }
  return out;
}

// Deletes every block from a line that starts with "Syn:" (after blanks) to the next blank line.
std::string drop_syn_blocks(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool in_block = false;
  for (size_t i = 0; i <= text.size();) {
    const size_t eol = line_end(text, i);
    const std::string_view line = text.substr(i, eol - i);
    const size_t first = line.find_first_not_of(" \t");
    if (blank_line(line)) {
      in_block = false;
    } else if (line.compare(first, 4, "Syn:") == 0) {
      in_block = true;
    }
    if (!in_block) {
      out.append(line);
      if (eol < text.size()) out += '\n';
    }
    if (eol == text.size()) break;
    i = eol + 1;
  }
  return out;
}

// ---- step 3 ---------------------------------------------------------------------------------

// The text of the character code that opens text[i] ('['), and its length; false if none.
bool character_code(std::string_view text, size_t i, std::string_view* letters, size_t* length) {
  static const std::pair<std::string_view, std::string_view> kNamed[] = {
      {"[imac]", "i"}, {"[aum]", "a"},    {"[asl]", "a"}, {"[add]", "a"},
      {"[eth]", "th"}, {"[thorn]", "th"}, {"[root]", ""}};
  for (const auto& [code, text_of] : kNamed) {
    if (text.compare(i, code.size(), code) == 0) {
      *letters = text_of;
      *length = code.size();
      return true;
    }
  }
  size_t j = i + 1;
  const bool lead =
      j < text.size() && std::string_view("='\"`.~^-").find(text[j]) != std::string_view::npos;
  if (lead) ++j;
  const size_t begin = j;
  while (j < text.size() && j - begin < 2 && is_letter(text[j])) ++j;
  const std::string_view found = text.substr(begin, j - begin);
  const bool caret = j < text.size() && text[j] == '^';
  if (caret) ++j;
  if (found.empty() || j >= text.size() || text[j] != ']') return false;
  if (!lead && !caret && found != "ae" && found != "oe") return false;
  *letters = found;
  *length = j + 1 - i;
  return true;
}

std::string convert_codes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    std::string_view letters;
    size_t length = 0;
    if (text[i] == '[' && character_code(text, i, &letters, &length)) {
      out.append(letters);
      i += length;
    } else {
      out += text[i++];
    }
  }
  return out;
}

// ---- step 4 ---------------------------------------------------------------------------------

// Deletes every [...] span, nesting-aware; a '[' that is never closed goes alone.
std::string drop_bracket_spans(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '[') {
      out += text[i++];
      continue;
    }
    int depth = 0;
    size_t k = i;
    for (; k < text.size(); ++k) {
      depth += text[k] == '[' ? 1 : text[k] == ']' ? -1 : 0;
      if (depth == 0) break;
    }
    i = k < text.size() ? k + 1 : i + 1;
  }
  return out;
}

// Drops '{' and '}', and everything from "--" + an upper-case letter to the end of the line.
std::string drop_braces_and_citations(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '{' || text[i] == '}') {
      ++i;
    } else if (text.compare(i, 2, "--") == 0 && i + 2 < text.size() && is_upper(text[i + 2])) {
      i = line_end(text, i);
    } else {
      out += text[i++];
    }
  }
  return out;
}

// ---- files ----------------------------------------------------------------------------------

// data/gcide.h's reader, with the package that provides a missing file named.
std::string read_dictzip(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw DataError("cannot open " + path + "; " + kGcideHint + " provides it");
  return read_gzip(path);
}

// The (offset, length) ranges of a dictd index in offset order, each with whether every
// headword naming it starts with "00-".
std::map<std::pair<int64_t, int64_t>, bool> read_ranges(const std::string& path) {
  std::map<std::pair<int64_t, int64_t>, bool> ranges;
  for (const DictdIndexLine& line : read_dictd_index(path)) {
    const auto [it, inserted] =
        ranges.emplace(std::make_pair(line.offset, line.length), line.metadata);
    if (!inserted) it->second = it->second && line.metadata;
  }
  return ranges;
}

}  // namespace

std::string gcide_entry_text(std::string_view entry, bool keep_syn) {
  std::string text = drop_headword_fields(valid_utf8(entry));
  if (!keep_syn) text = drop_syn_blocks(text);
  return drop_braces_and_citations(drop_bracket_spans(convert_codes(text)));
}

void append_token_sentences(std::string_view paragraph, std::vector<std::string>& out) {
  const std::vector<std::string> tokens = word_tokens(paragraph);
  for (size_t begin = 0; begin < tokens.size(); begin += kMaxSentence) {
    const size_t end = std::min(tokens.size(), begin + static_cast<size_t>(kMaxSentence));
    std::string sentence = tokens[begin];
    for (size_t k = begin + 1; k < end; ++k) (sentence += ' ') += tokens[k];
    out.push_back(std::move(sentence));
  }
}

std::vector<std::string> gcide_entry_sentences(std::string_view entry, bool keep_syn) {
  const std::string text = gcide_entry_text(entry, keep_syn);
  const std::string_view view(text);
  std::vector<std::string> out;
  size_t paragraph = 0;  // where the current paragraph starts
  for (size_t i = 0; i < view.size();) {
    const size_t eol = line_end(view, i);
    if (blank_line(view.substr(i, eol - i))) {
      append_token_sentences(view.substr(paragraph, i - paragraph), out);
      paragraph = eol;
    }
    i = eol + 1;
  }
  if (paragraph < view.size()) append_token_sentences(view.substr(paragraph), out);
  return out;
}

std::vector<std::string> wordnet_gloss_sentences(const std::string& wordnet_dir) {
  const WordNet wn = WordNet::read(wordnet_dir);
  std::vector<std::string> out;
  for (WnPos pos : kWnPoses) {
    for (const Synset& s : wn.synsets(pos)) append_token_sentences(s.gloss, out);
  }
  return out;
}

std::vector<std::string> gcide_sentences(const std::string& dictd_dir,
                                         const GcideCorpusOptions& opt) {
  if (!std::filesystem::is_directory(dictd_dir)) {
    throw DataError("GCIDE directory " + dictd_dir + " does not exist; " + kGcideHint +
                    " provides it");
  }
  const std::string index_path = dictd_dir + "/gcide.index";
  const std::string dict_path = dictd_dir + "/gcide.dict.dz";
  const auto ranges = read_ranges(index_path);
  const std::string dict = read_dictzip(dict_path);
  std::vector<std::string> out;
  for (const auto& [range, metadata] : ranges) {
    if (metadata) continue;
    const auto [offset, length] = range;
    if (offset + length > static_cast<int64_t>(dict.size())) {
      throw DataError(index_path + ": the range at offset " + std::to_string(offset) +
                      " of length " + std::to_string(length) + " runs past the end of " +
                      dict_path + "; the two files do not belong together");
    }
    for (std::string& s :
         gcide_entry_sentences(std::string_view(dict).substr(static_cast<size_t>(offset),
                                                             static_cast<size_t>(length)),
                               opt.keep_syn)) {
      out.push_back(std::move(s));
    }
  }
  if (opt.glosses) {
    for (std::string& s : wordnet_gloss_sentences(opt.wordnet_dir)) out.push_back(std::move(s));
  }
  return out;
}

}  // namespace desync
