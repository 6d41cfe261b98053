// The word corpus of the embedding-regularity experiments: the text of GCIDE (Debian's
// dict-gcide, read from its dictd files gcide.index and gcide.dict.dz) and, by default, the
// glosses of WordNet 3.0, as sentences of lower-case word tokens.
//
// GCIDE entries are the distinct (offset, length) ranges of gcide.index in offset order; a range
// whose headwords all start with "00-" (the database header and licence) is skipped. Each entry
// becomes text by these steps, in this order (gcide_entry_text):
//  1. Bytes that do not form valid UTF-8 become spaces.
//  2. A one-line headword field "\...\" is deleted with the "( ... )" pronunciation that follows
//     it on its line; a "Syn:" block (a line starting with "Syn:") is deleted up to the next
//     blank line, unless keep_syn: it would copy WordNet's synonym sets into the corpus.
//  3. Character codes: "[" + an optional mark (= ' " ` . ~ ^ -) + 1-2 letters + an optional "^"
//     + "]" with a mark (leading or trailing) becomes its letters ("[i^]" -> "i", "[\"e]" -> "e");
//     "[ae]" and "[oe]" become their letters; "[imac]" -> "i", "[aum]" "[asl]" "[add]" -> "a",
//     "[eth]" "[thorn]" -> "th", "[root]" -> "".
//  4. Every other bracketed span is deleted, nesting-aware (etymologies, "[1913 Webster]",
//     "[Obs.]", "[Ant: ...]"); a "[" never closed in the entry is deleted alone. "{" and "}" are
//     dropped (their text kept), and everything from "--" directly followed by an upper-case
//     letter to the end of its line ("--Shak."; not "--{Bane\"ful*ness}", a run-in word).
// Sentences (step 5) are the blank-line-separated paragraphs of that text (a line is blank when
// it holds only spaces, tabs and CRs after steps 1-4); tokens are the maximal runs of a-z after
// ASCII lower-casing, one-letter tokens other than "a" and "i" dropped; a paragraph without tokens
// gives no sentence, and one over kMaxSentence (1000) tokens is split into pieces of at most
// that many. A sentence is returned as its tokens joined by single spaces, so word_tokens() of
// it gives the tokens back.
//
// WordNet glosses (wordnet_gloss_sentences): the gloss of every synset of data.noun, data.verb,
// data.adj and data.adv, in that order, one sentence each, tokenised the same way.
//
// Pure functions of their inputs (they read the files); safe from any thread. Errors are
// DataError naming the file, with the Debian package that provides it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "desync/embeddings/wordnet.h"

namespace desync {

constexpr const char* kDefaultDictdDir = "/usr/share/dictd";

struct GcideCorpusOptions {
  bool keep_syn = false;                         // keep the "Syn:" blocks (step 2)
  bool glosses = true;                           // append the WordNet glosses
  std::string wordnet_dir = kDefaultWordnetDir;  // where data.<pos> are, for glosses
};

// The corpus: GCIDE's sentences in dictionary order, then (opt.glosses) the WordNet glosses.
std::vector<std::string> gcide_sentences(const std::string& dictd_dir,
                                         const GcideCorpusOptions& opt = {});

// One sentence per WordNet synset gloss (data.noun, data.verb, data.adj, data.adv).
std::vector<std::string> wordnet_gloss_sentences(const std::string& wordnet_dir);

// Steps 1-4 on the raw bytes of one GCIDE entry: the text whose paragraphs are sentences.
std::string gcide_entry_text(std::string_view entry, bool keep_syn = false);

// Steps 1-5 on one entry: its sentences, tokens joined by single spaces.
std::vector<std::string> gcide_entry_sentences(std::string_view entry, bool keep_syn = false);

// Step 5 on one paragraph: its tokens (word_tokens()) joined by single spaces, in pieces of at
// most kMaxSentence tokens, appended to `out` (nothing when it has no token).
void append_token_sentences(std::string_view paragraph, std::vector<std::string>& out);

}  // namespace desync
