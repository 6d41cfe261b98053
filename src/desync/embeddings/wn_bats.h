// WN-BATS: a BATS-like set of 19 relation categories built offline from WordNet 3.0 and the
// counts of a corpus (the GCIDE + gloss corpus of gcide_corpus.h). The spec fixes the outline;
// every detail below is our construction, not the BATS authors'.
//
// Words. A word is lower-cased (ASCII); it is usable when it matches ^[a-z]+$ and its corpus
// count is >= min_pair_count. A candidate pair (s, T) keeps the usable targets of T other than s,
// sorted by count descending (ties by spelling), and is dropped when s is not usable or no
// target is left. The POS filter: s's predominant part of speech - over the index.<pos> files
// that list it, the largest tagsense_cnt, then synset_cnt, then the order noun, verb, adj, adv -
// must be the category's; a source in no index is dropped. Of the pairs left, the
// pairs_per_category with the largest min(count(s), count(first target)) are kept (ties by the
// source's spelling), and are written in the order of their sources' spelling.
//
// Categories (group "morph" for I_* and D_*, "lex" for L_*; "base -> targets"):
//  I_noun_plural_irreg      noun: noun.exc line "inflected base..." gives base -> inflected.
//  I_verb_past_irreg        verb: verb.exc, base -> inflected, without inflected forms that end
//                           in "ing", that have a regular third-person shape of their base
//                           (b+s, b+es, b-y+ies, b+last letter+es), or that are am/are/is/has.
//  I_adj_comparative_irreg  adj: adj.exc without lines whose inflected form is the base;
//                           inflected forms ending in "er" or in {worse, less, more}, unless they
//                           end in "est" or are in {worst, least, most} (those are superlatives).
//  I_adj_superlative_irreg  adj: the same lines, inflected forms ending in "est" or in
//                           {worst, least, most}.
//  L_antonym_noun/verb/adj  that POS: every lexical "!" pointer (source/target not 0000) of
//                           data.<pos> links word `source` of its synset to word `target` of the
//                           target synset; each unordered pair {a, b} once, oriented a -> b with
//                           a < b in spelling (both_directions: also b -> a, as BATS L10).
//  L_hypernym_noun          noun: for every lemma of index.noun, its first sense's "@"
//                           pointers; targets = the lemmas of the target synsets.
//  L_meronym_part           noun: the same with "%p" (the targets are parts: bird -> feather).
//  L_meronym_substance      noun: the same with "%s" (steel -> iron).
//  L_member_of              noun: the same with "#m" (the source is a member: bird -> flock).
//  I_noun_plural_reg        noun: lemmas of index.noun with >= 3 letters that are no base in
//                           noun.exc; target n+s.
//  I_verb_3pSg              verb: lemmas of index.verb, >= 3 letters, no base in verb.exc;
//                           targets v+s, v+es.
//  I_verb_Ving              verb: the same lemmas; targets v+ing, v-e+ing (v ends in e),
//                           v+last letter+ing.
//  I_verb_Ved               verb: the same lemmas; targets v+ed, v+d (v ends in e),
//                           v+last letter+ed.
//  D_un_adj                 adj: lemmas of index.adj; target un+a.
//  D_adj_ly                 adj: lemmas of index.adj; target a+ly, or a-y+ily for a ending in y.
//  D_adj_ness               adj: lemmas of index.adj; target a+ness, or a-y+iness.
//  D_noun_less              noun: lemmas of index.noun; target n+less.
// Since targets must be usable, the regular forms are those the corpus attests. Categories are
// returned in the order above; one may have fewer pairs than pairs_per_category (or none).
//
// A pure function of its inputs; safe from any thread when corpus_count is.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "desync/embeddings/categories.h"
#include "desync/embeddings/wordnet.h"

namespace desync {

struct WnBatsOptions {
  int64_t pairs_per_category = 50;  // BATS's size
  int64_t min_pair_count = 5;       // corpus count every word of a pair needs
  bool both_directions = false;     // antonyms in both orientations
};

// The 19 categories. Throws ConfigError for pairs_per_category < 1 or min_pair_count < 0.
std::vector<Category> build_wn_bats(const WordNet& wn,
                                    const std::function<int64_t(const std::string&)>& corpus_count,
                                    const WnBatsOptions& opt = {});

}  // namespace desync
