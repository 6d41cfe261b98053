#include "desync/embeddings/wn_bats.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <utility>

#include "desync/core/error.h"

namespace desync {
namespace {

using Candidates = std::map<std::string, std::vector<std::string>>;  // source -> targets

std::string lower(std::string_view w) {
  std::string out(w);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool ends_with(std::string_view w, std::string_view suffix) {
  return w.size() >= suffix.size() && w.substr(w.size() - suffix.size()) == suffix;
}

bool is_one_of(std::string_view w, std::initializer_list<std::string_view> set) {
  return std::find(set.begin(), set.end(), w) != set.end();
}

// A regular third-person singular shape of `base`: b+s, b+es, b-y+ies, b+last letter+es.
bool regular_3sg(const std::string& base, const std::string& form) {
  if (form == base + "s" || form == base + "es" || form == base + base.back() + "es") return true;
  return ends_with(base, "y") && form == base.substr(0, base.size() - 1) + "ies";
}

class Builder {
 public:
  Builder(const WordNet& wn, const std::function<int64_t(const std::string&)>& count,
          const WnBatsOptions& opt)
      : wn_(wn), count_(count), opt_(opt) {}

  bool usable(const std::string& w) const {
    return !w.empty() &&
           std::all_of(w.begin(), w.end(), [](char c) { return c >= 'a' && c <= 'z'; }) &&
           count_(w) >= opt_.min_pair_count;
  }

  // Largest tagsense_cnt, then synset_cnt, then n, v, a, r; false when no index lists `w`.
  bool predominant_pos(const std::string& w, WnPos* best) const {
    std::pair<int64_t, int64_t> best_key(-1, -1);
    for (WnPos pos : kWnPoses) {
      const WnIndexEntry* e = wn_.lookup(pos, w);
      if (e == nullptr) continue;
      const std::pair<int64_t, int64_t> key(e->tagsense_cnt,
                                            static_cast<int64_t>(e->offsets.size()));
      if (key > best_key) {
        best_key = key;
        *best = pos;
      }
    }
    return best_key.first >= 0;
  }

  // The category of the candidates that pass the word and POS filters, cut to the
  // pairs_per_category with the largest min(count(s), count(first target)).
  Category finish(const char* group, const char* name, WnPos pos, const Candidates& c) const {
    std::vector<std::tuple<int64_t, std::string, std::vector<std::string>>> scored;
    for (const auto& [source, targets] : c) {
      WnPos p = WnPos::kNoun;
      if (!usable(source) || !predominant_pos(source, &p) || p != pos) continue;
      std::vector<std::string> kept;
      for (const std::string& t : targets) {
        if (t != source && usable(t) && std::find(kept.begin(), kept.end(), t) == kept.end()) {
          kept.push_back(t);
        }
      }
      if (kept.empty()) continue;
      std::sort(kept.begin(), kept.end(), [&](const std::string& a, const std::string& b) {
        const int64_t ca = count_(a), cb = count_(b);
        return ca != cb ? ca > cb : a < b;
      });
      scored.emplace_back(std::min(count_(source), count_(kept[0])), source, std::move(kept));
    }
    std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
      return std::get<0>(a) != std::get<0>(b) ? std::get<0>(a) > std::get<0>(b)
                                              : std::get<1>(a) < std::get<1>(b);
    });
    if (static_cast<int64_t>(scored.size()) > opt_.pairs_per_category) {
      scored.resize(static_cast<size_t>(opt_.pairs_per_category));
    }
    std::sort(scored.begin(), scored.end(),
              [](const auto& a, const auto& b) { return std::get<1>(a) < std::get<1>(b); });
    Category out{group, name, {}};
    for (auto& [score, source, targets] : scored) out.pairs.emplace_back(source, targets);
    return out;
  }

  // base -> inflected for every line of <pos>.exc that `keep(inflected, base)` accepts.
  template <typename Keep>
  Candidates from_exceptions(WnPos pos, Keep keep) const {
    Candidates c;
    for (const WnException& e : wn_.exceptions(pos)) {
      const std::string inflected = lower(e.inflected);
      for (const std::string& b : e.bases) {
        const std::string base = lower(b);
        if (keep(inflected, base)) c[base].push_back(inflected);
      }
    }
    return c;
  }

  const Synset& target_of(const Synset& from, const WnPointer& p) const {
    const Synset* t = wn_.synset(p.pos, p.offset);
    if (t == nullptr) {
      throw DataError("WordNet: synset " + std::to_string(from.offset) + " points to synset " +
                      std::to_string(p.offset) + " of data." + wn_pos_name(p.pos) +
                      ", which does not exist");
    }
    return *t;
  }

  // Lexical "!" pointers of data.<pos>, each unordered pair once, oriented by spelling.
  Candidates antonyms(WnPos pos) const {
    std::set<std::pair<std::string, std::string>> seen;
    Candidates c;
    for (const Synset& s : wn_.synsets(pos)) {
      for (const WnPointer& p : s.pointers) {
        if (p.symbol != "!" || p.source == 0 || p.target == 0) continue;
        const Synset& t = target_of(s, p);
        if (p.target > static_cast<int>(t.words.size())) {
          throw DataError("WordNet: a pointer of synset " + std::to_string(s.offset) +
                          " names word " + std::to_string(p.target) + " of synset " +
                          std::to_string(t.offset) + ", which has fewer");
        }
        std::string a = lower(s.words[static_cast<size_t>(p.source - 1)].lemma);
        std::string b = lower(t.words[static_cast<size_t>(p.target - 1)].lemma);
        if (a == b) continue;
        if (b < a) std::swap(a, b);
        if (!seen.emplace(a, b).second) continue;
        c[a].push_back(b);
        if (opt_.both_directions) c[b].push_back(a);
      }
    }
    return c;
  }

  // For every lemma of index.noun: the lemmas of the synsets its first sense points to with
  // `symbol`.
  Candidates first_sense_relation(const std::string& symbol) const {
    Candidates c;
    for (const WnIndexEntry& e : wn_.index(WnPos::kNoun)) {
      if (!usable(e.lemma) || e.offsets.empty()) continue;
      const Synset* s = wn_.synset(WnPos::kNoun, e.offsets[0]);
      if (s == nullptr) {
        throw DataError("WordNet: index.noun lists synset " + std::to_string(e.offsets[0]) +
                        " for '" + e.lemma + "', which data.noun does not have");
      }
      for (const WnPointer& p : s->pointers) {
        if (p.symbol != symbol) continue;
        for (const WnWord& w : target_of(*s, p).words) c[e.lemma].push_back(lower(w.lemma));
      }
    }
    return c;
  }

  // For every lemma of index.<pos> accepted by `keep`: the forms `make(lemma)` gives.
  template <typename Keep, typename Make>
  Candidates derived(WnPos pos, Keep keep, Make make) const {
    Candidates c;
    for (const WnIndexEntry& e : wn_.index(pos)) {
      if (usable(e.lemma) && keep(e.lemma)) c[e.lemma] = make(e.lemma);
    }
    return c;
  }

  // The lemmas of index.<pos> with >= 3 letters that are not a base in <pos>.exc.
  std::function<bool(const std::string&)> regular(WnPos pos) const {
    auto bases = std::make_shared<std::unordered_set<std::string>>();
    for (const WnException& e : wn_.exceptions(pos)) {
      for (const std::string& b : e.bases) bases->insert(lower(b));
    }
    return [bases](const std::string& w) { return w.size() >= 3 && bases->count(w) == 0; };
  }

 private:
  const WordNet& wn_;
  const std::function<int64_t(const std::string&)>& count_;
  const WnBatsOptions& opt_;
};

std::string drop_last(const std::string& w) { return w.substr(0, w.size() - 1); }

}  // namespace

std::vector<Category> build_wn_bats(const WordNet& wn,
                                    const std::function<int64_t(const std::string&)>& corpus_count,
                                    const WnBatsOptions& opt) {
  if (opt.pairs_per_category < 1) {
    throw ConfigError("wn_bats: pairs_per_category must be >= 1, not " +
                      std::to_string(opt.pairs_per_category));
  }
  if (opt.min_pair_count < 0) {
    throw ConfigError("wn_bats: min_pair_count must be >= 0, not " +
                      std::to_string(opt.min_pair_count));
  }
  const Builder b(wn, corpus_count, opt);
  constexpr WnPos n = WnPos::kNoun, v = WnPos::kVerb, a = WnPos::kAdj;
  const auto all = [](const std::string&) { return true; };
  const auto superlative = [](const std::string& w) {
    return ends_with(w, "est") || is_one_of(w, {"worst", "least", "most"});
  };
  const auto comparative = [&](const std::string& w) {
    return !superlative(w) && (ends_with(w, "er") || is_one_of(w, {"worse", "less", "more"}));
  };
  const auto ends_in_e = [](const std::string& w) { return ends_with(w, "e"); };
  std::vector<Category> out;
  out.push_back(b.finish("morph", "I_noun_plural_irreg", n,
                         b.from_exceptions(n, [](auto&, auto&) { return true; })));
  out.push_back(b.finish("morph", "I_verb_past_irreg", v,
                         b.from_exceptions(v, [](const std::string& form, const std::string& base) {
                           return !ends_with(form, "ing") && !regular_3sg(base, form) &&
                                  !is_one_of(form, {"am", "are", "is", "has"});
                         })));
  out.push_back(
      b.finish("morph", "I_adj_comparative_irreg", a,
               b.from_exceptions(a, [&](const std::string& form, const std::string& base) {
                 return form != base && comparative(form);
               })));
  out.push_back(
      b.finish("morph", "I_adj_superlative_irreg", a,
               b.from_exceptions(a, [&](const std::string& form, const std::string& base) {
                 return form != base && superlative(form);
               })));
  out.push_back(b.finish("lex", "L_antonym_noun", n, b.antonyms(n)));
  out.push_back(b.finish("lex", "L_antonym_verb", v, b.antonyms(v)));
  out.push_back(b.finish("lex", "L_antonym_adj", a, b.antonyms(a)));
  out.push_back(b.finish("lex", "L_hypernym_noun", n, b.first_sense_relation("@")));
  out.push_back(b.finish("lex", "L_meronym_part", n, b.first_sense_relation("%p")));
  out.push_back(b.finish("lex", "L_meronym_substance", n, b.first_sense_relation("%s")));
  out.push_back(b.finish("lex", "L_member_of", n, b.first_sense_relation("#m")));
  using Forms = std::vector<std::string>;
  out.push_back(b.finish("morph", "I_noun_plural_reg", n,
                         b.derived(n, b.regular(n), [](auto& w) { return Forms{w + "s"}; })));
  out.push_back(b.finish("morph", "I_verb_3pSg", v, b.derived(v, b.regular(v), [](auto& w) {
    return Forms{w + "s", w + "es"};
  })));
  out.push_back(b.finish("morph", "I_verb_Ving", v, b.derived(v, b.regular(v), [&](auto& w) {
    Forms f{w + "ing", w + w.back() + "ing"};
    if (ends_in_e(w)) f.push_back(drop_last(w) + "ing");
    return f;
  })));
  out.push_back(b.finish("morph", "I_verb_Ved", v, b.derived(v, b.regular(v), [&](auto& w) {
    Forms f{w + "ed", w + w.back() + "ed"};
    if (ends_in_e(w)) f.push_back(w + "d");
    return f;
  })));
  const auto y_to_i = [](const std::string& w, const char* suffix) {
    return ends_with(w, "y") ? drop_last(w) + "i" + suffix : w + suffix;
  };
  out.push_back(
      b.finish("morph", "D_un_adj", a, b.derived(a, all, [](auto& w) { return Forms{"un" + w}; })));
  out.push_back(b.finish("morph", "D_adj_ly", a,
                         b.derived(a, all, [&](auto& w) { return Forms{y_to_i(w, "ly")}; })));
  out.push_back(b.finish("morph", "D_adj_ness", a,
                         b.derived(a, all, [&](auto& w) { return Forms{y_to_i(w, "ness")}; })));
  out.push_back(b.finish("morph", "D_noun_less", n,
                         b.derived(n, all, [](auto& w) { return Forms{w + "less"}; })));
  return out;
}

}  // namespace desync
