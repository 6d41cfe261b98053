#include "desync/embeddings/controls.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <utility>

#include "desync/core/error.h"

namespace desync {
namespace {

// What a generator draws; with (seed, draw, item) it names the generator.
enum Stream : uint64_t {
  kTrueShuffles = 1,
  kPermutation,
  kWithin,
  kAcross,
  kRandomWords,
  kFullRandom,
  kSetShuffles,  // + the control's number (1..6)
};

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t derive(uint64_t seed, uint64_t stream, int64_t draw, uint64_t item) {
  return splitmix(splitmix(splitmix(seed ^ splitmix(stream)) ^ static_cast<uint64_t>(draw)) ^ item);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 14695981039346656037ULL;
  for (const unsigned char ch : s) h = (h ^ ch) * 1099511628211ULL;
  return h;
}

void add_pair(RowPairs& pairs, int64_t source, int64_t target) {
  if (source == target) return;
  pairs.source.push_back(source);
  pairs.target.push_back(target);
}

// partner[members[i]] = members[pi(i)] for a derangement pi of the members (none for one member).
void derange(const std::vector<int64_t>& members, std::mt19937_64 rng, DerangementKind kind,
             std::vector<int64_t>& partner) {
  std::vector<int64_t> ids(members.size());
  std::iota(ids.begin(), ids.end(), 0);
  const std::optional<std::vector<int64_t>> pi = derangement(ids, rng, kind);
  if (!pi) return;
  for (size_t i = 0; i < members.size(); ++i) partner[members[i]] = members[(*pi)[i]];
}

// `count` distinct words of `pool` (partial Fisher-Yates on a copy).
std::vector<int64_t> sample(std::vector<int64_t> pool, int64_t count, std::mt19937_64 rng) {
  for (int64_t i = 0; i < count; ++i) {
    const int64_t last = static_cast<int64_t>(pool.size()) - 1;
    std::swap(pool[i], pool[std::uniform_int_distribution<int64_t>(i, last)(rng)]);
  }
  pool.resize(count);
  return pool;
}

// OCS and PCS of one control set: against `negatives` when given, else its own shuffles.
OffsetScores set_scores(const EmbeddingSpace& space, const RowPairs& pairs,
                        const ControlOptions& options, uint64_t shuffle_seed,
                        const std::vector<torch::Tensor>* negatives) {
  RowPairs kept;
  const torch::Tensor offsets = pair_offsets(space, pairs, &kept);
  OffsetScores scores;
  scores.pairs = kept.size();
  if (scores.pairs < options.min_pairs) return scores;
  const torch::Tensor cosines = pair_cosines(offsets);
  scores.ocs = cosines.mean().item<double>();
  if (negatives != nullptr) {
    scores.pcs = mean_auc(cosines, *negatives);
  } else {
    std::mt19937_64 rng(shuffle_seed);
    scores.pcs =
        mean_auc(cosines, shuffled_cosines(space, kept, options.shuffles,
                                           /*avoid_true=*/false, options.derangement, rng));
  }
  return scores;
}

void accumulate(OffsetScores& sum, const OffsetScores& draw, bool first) {
  sum.ocs = first ? draw.ocs : sum.ocs + draw.ocs;
  sum.pcs = first ? draw.pcs : sum.pcs + draw.pcs;
  sum.pairs = first ? draw.pairs : std::min(sum.pairs, draw.pairs);
}

void divide(OffsetScores& sum, int64_t draws) {
  sum.ocs /= static_cast<double>(draws);
  sum.pcs /= static_cast<double>(draws);
}

}  // namespace

ControlDraw control_draw(const EmbeddingSpace& space, const std::vector<RowPairs>& categories,
                         const std::vector<std::string>& groups, const ControlOptions& options,
                         int64_t draw) {
  const int64_t n_categories = static_cast<int64_t>(categories.size());
  if (static_cast<int64_t>(groups.size()) != n_categories) {
    throw ConfigError("controls: " + std::to_string(groups.size()) + " group names for " +
                      std::to_string(n_categories) + " categories; give one per category");
  }
  // Random words: the first limit_word rows that are in no pair of the set.
  std::vector<bool> used(space.size(), false);
  int64_t largest = 0;
  for (const RowPairs& c : categories) {
    for (const int64_t row : c.source) used[row] = true;
    for (const int64_t row : c.target) used[row] = true;
    largest = std::max(largest, c.size());
  }
  std::vector<int64_t> pool;
  for (int64_t row = 0; row < std::min(options.limit_word, space.size()); ++row) {
    if (!used[row]) pool.push_back(row);
  }
  const int64_t needed = std::max(largest, 2 * options.size_random);
  if (static_cast<int64_t>(pool.size()) < needed) {
    throw ConfigError("controls: only " + std::to_string(pool.size()) + " of the first " +
                      std::to_string(options.limit_word) +
                      " words are in no pair, the random sets need " + std::to_string(needed) +
                      "; raise limit_word or lower size_random");
  }

  ControlDraw d;
  d.permutation_within.resize(n_categories);
  d.mismatched_within.resize(n_categories);
  d.mismatched_across.resize(n_categories);
  d.random_start.resize(n_categories);
  d.random_end.resize(n_categories);
  d.within_partner.assign(n_categories, -1);
  d.across_partner.assign(n_categories, -1);

  std::map<std::string, std::vector<int64_t>> members;
  for (int64_t c = 0; c < n_categories; ++c) members[groups[c]].push_back(c);
  for (const auto& [name, group] : members) {
    derange(group, std::mt19937_64(derive(options.seed, kWithin, draw, fnv1a(name))),
            options.derangement, d.within_partner);
  }
  std::vector<int64_t> all(n_categories);
  std::iota(all.begin(), all.end(), 0);
  derange(all, std::mt19937_64(derive(options.seed, kAcross, draw, 0)), options.derangement,
          d.across_partner);

  for (int64_t c = 0; c < n_categories; ++c) {
    const RowPairs& pairs = categories[c];
    const int64_t n = pairs.size();
    std::vector<int64_t> ids(n);
    std::iota(ids.begin(), ids.end(), 0);
    std::mt19937_64 permutation_rng(derive(options.seed, kPermutation, draw, c));
    if (const auto pi = derangement(ids, permutation_rng, options.derangement)) {
      for (int64_t k = 0; k < n; ++k) {
        add_pair(d.permutation_within[c], pairs.source[k], pairs.target[(*pi)[k]]);
      }
    }
    for (const auto& [partner, set] : {std::pair{d.within_partner[c], &d.mismatched_within[c]},
                                       std::pair{d.across_partner[c], &d.mismatched_across[c]}}) {
      if (partner < 0) continue;
      const RowPairs& other = categories[partner];
      for (int64_t k = 0; k < std::min(n, other.size()); ++k) {
        add_pair(*set, pairs.source[k], other.target[k]);
      }
    }
    const std::vector<int64_t> words =
        sample(pool, n, std::mt19937_64(derive(options.seed, kRandomWords, draw, c)));
    for (int64_t k = 0; k < n; ++k) {
      add_pair(d.random_start[c], words[k], pairs.target[k]);
      add_pair(d.random_end[c], pairs.source[k], words[k]);
    }
  }

  const int64_t m = options.size_random;
  const std::vector<int64_t> words =
      sample(pool, 2 * m, std::mt19937_64(derive(options.seed, kFullRandom, draw, 0)));
  for (int64_t k = 0; k < m; ++k) add_pair(d.fully_random, words[k], words[m + k]);
  return d;
}

std::vector<ControlScores> control_scores(const EmbeddingSpace& space,
                                          const std::vector<RowPairs>& categories,
                                          const std::vector<std::string>& groups,
                                          const ControlOptions& options) {
  if (options.draws < 1 || options.shuffles < 1) {
    throw ConfigError("controls: draws and shuffles must be at least 1 (got " +
                      std::to_string(options.draws) + " and " + std::to_string(options.shuffles) +
                      ")");
  }
  const int64_t n_categories = static_cast<int64_t>(categories.size());
  std::vector<ControlScores> out(n_categories);
  std::vector<std::vector<torch::Tensor>> true_shuffles(n_categories);
  for (int64_t c = 0; c < n_categories; ++c) {
    const OffsetOptions true_options{options.shuffles, options.min_pairs, options.derangement,
                                     derive(options.seed, kTrueShuffles, 0, c)};
    out[c].category = offset_scores(space, categories[c], true_options, &true_shuffles[c]);
  }
  const auto seed = [&](int control, int64_t draw, int64_t c) {
    return derive(options.seed, kSetShuffles + control, draw, c);
  };
  for (int64_t r = 0; r < options.draws; ++r) {
    const ControlDraw d = control_draw(space, categories, groups, options, r);
    const OffsetScores fully_random =
        set_scores(space, d.fully_random, options, seed(6, r, 0), nullptr);
    for (int64_t c = 0; c < n_categories; ++c) {
      ControlScores& s = out[c];
      const bool first = r == 0;
      accumulate(s.permutation_within,
                 set_scores(space, d.permutation_within[c], options, 0, &true_shuffles[c]), first);
      accumulate(s.mismatched_within,
                 set_scores(space, d.mismatched_within[c], options, seed(2, r, c), nullptr), first);
      accumulate(s.mismatched_across,
                 set_scores(space, d.mismatched_across[c], options, seed(3, r, c), nullptr), first);
      accumulate(s.random_start,
                 set_scores(space, d.random_start[c], options, seed(4, r, c), nullptr), first);
      accumulate(s.random_end, set_scores(space, d.random_end[c], options, seed(5, r, c), nullptr),
                 first);
      accumulate(s.fully_random, fully_random, first);
    }
  }
  for (ControlScores& s : out) {
    for (OffsetScores* control : {&s.permutation_within, &s.mismatched_within, &s.mismatched_across,
                                  &s.random_start, &s.random_end, &s.fully_random}) {
      divide(*control, options.draws);
    }
  }
  return out;
}

}  // namespace desync
