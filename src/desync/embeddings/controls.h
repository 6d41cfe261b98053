// Control sets for OCS and PCS, arXiv 2010.03446 (`random_sets.py` of
// bootphon/measuring-regularities-in-word-embeddings): sets that look like a category but carry
// no consistent pairing, so their PCS should be near 0.5.
//
// Per draw r (R draws) and category c with pairs (s_k, t_k), k < n_c:
//   1. permutation within: (s_k, t_pi(k)), pi a derangement of 0..n_c-1; its PCS uses the true
//      category's shuffles S_p (avoid-true) as negatives.
//   2. mismatched within: (s_k of c, t_k of sigma(c)), k < min(n_c, n_sigma(c)); sigma a
//      derangement of the categories of c's group (a category alone in its group gets NaN).
//   3. mismatched across: the same with sigma a derangement of all categories.
//   4. random start: (w_k, t_k);  5. random end: (s_k, w_k), with the same n_c distinct random
//      words w_k from the first limit_word rows that are in no pair of any category.
//   6. fully random: size_random random words to size_random other random words (one set per
//      draw, shared by every category; reported in each entry).
// Pairs with source = target are dropped; zero offsets are dropped as in offsets.h. Each set's
// OCS and PCS follow offsets.h, its shuffles being derangements of positions (no avoid-true).
// A score is the mean over the R draws (NaN if any draw has fewer than min_pairs pairs);
// `pairs` is the smallest set size over the draws.
//
// Seeds: every random choice is drawn from a generator seeded by (seed, what is drawn, draw,
// category index or group name), so a category's result does not depend on the order in which
// categories are processed. Pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "desync/embeddings/offsets.h"
#include "desync/embeddings/space.h"

namespace desync {

struct ControlOptions {
  int64_t draws = 10;  // R
  int64_t size_random = 50;
  int64_t limit_word = 10000;
  int64_t shuffles = 50;  // P
  int64_t min_pairs = 5;
  DerangementKind derangement = DerangementKind::kUniform;  // for every permutation drawn
  uint64_t seed = 0;
};

struct ControlScores {
  OffsetScores category;  // the true category (its shuffles are the negatives of control 1)
  OffsetScores permutation_within, mismatched_within, mismatched_across, random_start, random_end,
      fully_random;  // each the mean over R draws
};

// The control sets of draw `draw`, before zero offsets are dropped (pairs with source = target
// already are). Per-category vectors are in category order; *_partner[c] is sigma(c), or -1.
struct ControlDraw {
  std::vector<RowPairs> permutation_within, mismatched_within, mismatched_across, random_start,
      random_end;
  RowPairs fully_random;
  std::vector<int64_t> within_partner, across_partner;
};

// Throws ConfigError when groups.size() != categories.size(), or when the first limit_word rows
// hold fewer words outside the set than a random set needs (max n_c and 2 size_random).
ControlDraw control_draw(const EmbeddingSpace& space, const std::vector<RowPairs>& categories,
                         const std::vector<std::string>& groups, const ControlOptions& options,
                         int64_t draw);

// One entry per category (same order); `groups[c]` is category c's group (folder) name. Throws
// ConfigError as control_draw, and for draws < 1 or shuffles < 1.
std::vector<ControlScores> control_scores(const EmbeddingSpace& space,
                                          const std::vector<RowPairs>& categories,
                                          const std::vector<std::string>& groups,
                                          const ControlOptions& options = {});

}  // namespace desync
