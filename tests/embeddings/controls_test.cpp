// Tests of the six control sets (spec §3 "Control sets"): their construction checked pair by
// pair against the rules (partners, random words, dropped pairs), and their scores on a space
// with planted offsets, where every control must sit near PCS 0.5 while the true categories
// score 1.
#include "desync/embeddings/controls.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "desync/core/error.h"

namespace desync {
namespace {

// Categories with planted offsets (t = s + o_c), their words in the first rows, then
// `distractors` Gaussian words, then 50 more words past limit_word.
struct Planted {
  EmbeddingSpace space;
  std::vector<RowPairs> categories;
  std::vector<std::string> groups;
  int64_t limit_word = 0;
  std::set<int64_t> set_words;
};

Planted planted(const std::vector<int64_t>& sizes, const std::vector<std::string>& groups,
                int64_t d, int64_t distractors) {
  Planted p;
  p.groups = groups;
  std::vector<torch::Tensor> blocks;
  int64_t row = 0;
  for (const int64_t n : sizes) {
    const torch::Tensor s = torch::randn({n, d}, torch::kFloat64);
    blocks.push_back(s);
    blocks.push_back(s + torch::randn({1, d}, torch::kFloat64));
    RowPairs pairs;
    for (int64_t k = 0; k < n; ++k) {
      pairs.source.push_back(row + k);
      pairs.target.push_back(row + n + k);
      p.set_words.insert({row + k, row + n + k});
    }
    p.categories.push_back(pairs);
    row += 2 * n;
  }
  p.limit_word = row + distractors;
  blocks.push_back(torch::randn({distractors + 50, d}, torch::kFloat64));
  std::vector<std::string> words;
  for (int64_t i = 0; i < p.limit_word + 50; ++i)
    words.push_back(std::string("w") + std::to_string(i));
  p.space = make_space(std::move(words), torch::cat(blocks));
  return p;
}

TEST(ControlDraw, FollowsTheRulesOfEachSet) {
  torch::manual_seed(1);
  const std::vector<std::string> groups = {"g0", "g1", "g0", "g1", "g0", "g1", "alone"};
  const Planted p = planted({12, 9, 12, 11, 8, 12, 10}, groups, 4, 200);
  const ControlOptions options{.size_random = 20, .limit_word = p.limit_word, .seed = 3};
  const int64_t n_categories = static_cast<int64_t>(p.categories.size());
  std::set<int64_t> within_seen_partners;
  for (int64_t r = 0; r < 20; ++r) {
    const ControlDraw d = control_draw(p.space, p.categories, groups, options, r);
    std::multiset<int64_t> within_images, across_images;
    for (int64_t c = 0; c < n_categories; ++c) {
      const RowPairs& pairs = p.categories[c];
      const int64_t n = pairs.size();
      // 1. permutation within: s_k with the target of another position, each target once.
      const RowPairs& perm = d.permutation_within[c];
      ASSERT_EQ(perm.source, pairs.source);
      std::multiset<int64_t> targets(perm.target.begin(), perm.target.end());
      EXPECT_EQ(targets, std::multiset<int64_t>(pairs.target.begin(), pairs.target.end()));
      for (int64_t k = 0; k < n; ++k) EXPECT_NE(perm.target[k], pairs.target[k]);
      // 2, 3. mismatched: the k-th source with the k-th target of sigma(c) != c.
      const int64_t w = d.within_partner[c], a = d.across_partner[c];
      if (groups[c] == "alone") {
        EXPECT_EQ(w, -1);
        EXPECT_EQ(d.mismatched_within[c].size(), 0);
      } else {
        ASSERT_GE(w, 0);
        EXPECT_NE(w, c);
        EXPECT_EQ(groups[w], groups[c]);
        within_images.insert(w);
        within_seen_partners.insert(c * n_categories + w);
      }
      ASSERT_GE(a, 0);
      EXPECT_NE(a, c);
      across_images.insert(a);
      for (const auto& [partner, set] :
           {std::pair{w, &d.mismatched_within[c]}, std::pair{a, &d.mismatched_across[c]}}) {
        if (partner < 0) continue;
        const int64_t m = std::min(n, p.categories[partner].size());
        ASSERT_EQ(set->size(), m);
        for (int64_t k = 0; k < m; ++k) {
          EXPECT_EQ(set->source[k], pairs.source[k]);
          EXPECT_EQ(set->target[k], p.categories[partner].target[k]);
        }
      }
      // 4, 5. random start / end: the same n distinct random words, outside the set, in the
      // first limit_word rows.
      const RowPairs& start = d.random_start[c];
      const RowPairs& end = d.random_end[c];
      EXPECT_EQ(start.target, pairs.target);
      EXPECT_EQ(end.source, pairs.source);
      EXPECT_EQ(end.target, start.source);
      EXPECT_EQ(
          static_cast<int64_t>(std::set<int64_t>(start.source.begin(), start.source.end()).size()),
          n);
      for (const int64_t word : start.source) {
        EXPECT_EQ(p.set_words.count(word), 0u) << word;
        EXPECT_LT(word, p.limit_word);
      }
    }
    // sigma is a bijection.
    EXPECT_EQ(static_cast<int64_t>(within_images.size()), n_categories - 1);
    EXPECT_EQ(std::set<int64_t>(within_images.begin(), within_images.end()).size(),
              within_images.size());
    EXPECT_EQ(
        static_cast<int64_t>(std::set<int64_t>(across_images.begin(), across_images.end()).size()),
        n_categories);
    // 6. fully random: size_random pairs of 2 size_random distinct words outside the set.
    ASSERT_EQ(d.fully_random.size(), 20);
    std::set<int64_t> words(d.fully_random.source.begin(), d.fully_random.source.end());
    words.insert(d.fully_random.target.begin(), d.fully_random.target.end());
    EXPECT_EQ(words.size(), 40u);
    for (const int64_t word : words) {
      EXPECT_EQ(p.set_words.count(word), 0u);
      EXPECT_LT(word, p.limit_word);
    }
  }
  // Over 20 draws each group of three shows both of its derangements (3 partners each way).
  EXPECT_EQ(within_seen_partners.size(), 12u);
}

TEST(ControlDraw, PairsWithSourceEqualToTargetAreDropped) {
  torch::manual_seed(2);
  // Category 1 opens with the reverse of category 0's first pair: in the only derangement of a
  // group of two, mismatched within pairs word 0 with itself (and word 6 with itself).
  const EmbeddingSpace space =
      make_space({"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"},
                 torch::randn({12, 3}, torch::kFloat64));
  const std::vector<RowPairs> categories = {{{0, 2, 4}, {6, 3, 5}}, {{6, 7}, {0, 8}}};
  const ControlDraw d =
      control_draw(space, categories, {"x", "x"}, {.size_random = 0, .limit_word = 12}, 0);
  EXPECT_EQ(d.mismatched_within[0].source, (std::vector<int64_t>{2}));
  EXPECT_EQ(d.mismatched_within[0].target, (std::vector<int64_t>{8}));
  EXPECT_EQ(d.mismatched_within[1].source, (std::vector<int64_t>{7}));
  EXPECT_EQ(d.mismatched_within[1].target, (std::vector<int64_t>{3}));
}

TEST(ControlDraw, RejectsBadInputs) {
  torch::manual_seed(3);
  const Planted p = planted({10, 10}, {"g", "g"}, 4, 30);
  EXPECT_THROW(control_draw(p.space, p.categories, {"g"}, {.limit_word = p.limit_word}, 0),
               ConfigError);
  // 30 words outside the set: random start/end (10) fit, fully random (2 x 20) does not.
  EXPECT_THROW(control_draw(p.space, p.categories, p.groups,
                            {.size_random = 20, .limit_word = p.limit_word}, 0),
               ConfigError);
  EXPECT_NO_THROW(control_draw(p.space, p.categories, p.groups,
                               {.size_random = 15, .limit_word = p.limit_word}, 0));
  EXPECT_THROW(control_scores(p.space, p.categories, p.groups,
                              {.draws = 0, .size_random = 15, .limit_word = p.limit_word}),
               ConfigError);
}

// The structural check: on planted offsets the true categories score PCS 1, and none of the
// controls keeps the pairing, so each sits near 0.5.
TEST(ControlScores, ControlsNearOneHalfWhileTrueCategoriesScoreOne) {
  torch::manual_seed(4);
  const std::vector<std::string> groups = {"g0", "g0", "g0", "g1", "g1", "g1"};
  const Planted p = planted({30, 30, 30, 30, 30, 30}, groups, 50, 400);
  const ControlOptions options{
      .draws = 4, .size_random = 30, .limit_word = p.limit_word, .shuffles = 20, .seed = 5};
  const std::vector<ControlScores> scores = control_scores(p.space, p.categories, groups, options);
  ASSERT_EQ(scores.size(), p.categories.size());
  double sums[6] = {};
  for (const ControlScores& s : scores) {
    EXPECT_EQ(s.category.pcs, 1.0);
    EXPECT_NEAR(s.category.ocs, 1.0, 1e-12);
    const OffsetScores* controls[6] = {&s.permutation_within, &s.mismatched_within,
                                       &s.mismatched_across,  &s.random_start,
                                       &s.random_end,         &s.fully_random};
    for (int k = 0; k < 6; ++k) {
      EXPECT_EQ(controls[k]->pairs, 30) << k;
      EXPECT_NEAR(controls[k]->pcs, 0.5, 0.04) << k;
      sums[k] += controls[k]->pcs;
    }
    EXPECT_EQ(s.fully_random.ocs, scores[0].fully_random.ocs);  // one set per draw
  }
  for (int k = 0; k < 6; ++k) EXPECT_NEAR(sums[k] / scores.size(), 0.5, 0.02) << k;
}

TEST(ControlScores, SameSeedSameScoresOtherSeedOtherScores) {
  torch::manual_seed(5);
  const Planted p = planted({12, 12, 12}, {"g", "g", "g"}, 8, 60);
  ControlOptions options{.draws = 2, .size_random = 10, .limit_word = p.limit_word, .shuffles = 5};
  const auto first = control_scores(p.space, p.categories, p.groups, options);
  const auto again = control_scores(p.space, p.categories, p.groups, options);
  options.seed = 1;
  const auto other = control_scores(p.space, p.categories, p.groups, options);
  for (size_t c = 0; c < first.size(); ++c) {
    EXPECT_EQ(first[c].random_end.ocs, again[c].random_end.ocs);
    EXPECT_EQ(first[c].mismatched_within.pcs, again[c].mismatched_within.pcs);
    EXPECT_NE(first[c].random_end.ocs, other[c].random_end.ocs);
  }
}

}  // namespace
}  // namespace desync
