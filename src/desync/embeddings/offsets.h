// Offset concentration (OCS) and pairing consistency (PCS) of a relation category, arXiv
// 2010.03446 (`metrics.py` of bootphon/measuring-regularities-in-word-embeddings).
//
// For the pairs (s_i, t_i) with offsets o_i = v(t_i) − v(s_i) (raw vectors; zero-norm offsets,
// e.g. s_i = t_i, dropped; fewer than min_pairs pairs give NaN):
//   S_true = {cos(o_i, o_j) : i < j};  OCS = mean(S_true)
//   for p in 1..P:  pi = derangement of 0..n-1 with t[pi(i)] != t[i] for all i   # avoid-true
//                   S_p = {cos(v(t[pi(i)]) − v(s[i]), v(t[pi(j)]) − v(s[j])) : i < j}
//                   AUC_p = P(X > Y) + 0.5 P(X = Y), X in S_true, Y in S_p
//   PCS = mean_p AUC_p
// Shuffled offsets that are zero (t[pi(i)] = s[i]) are dropped from S_p as well. When no
// qualifying derangement is found (all targets equal, or the draw budget runs out) PCS is NaN.
// Cosines are computed in the space's dtype with one (batched) matrix product per set.
//
// Pure functions; safe from any thread as long as each caller owns its random generator.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "desync/embeddings/space.h"

namespace desync {

// P(X > Y) + 0.5 P(X = Y) for X drawn from `positives`, Y from `negatives` (sklearn's
// roc_auc_score with positives labelled 1), exact with ties, in O((n + m) log m). Both are 1-D;
// NaN when either is empty.
double auc(const torch::Tensor& positives, const torch::Tensor& negatives);

// {cos(o_i, o_j) : i < j} in row-major order of (i, j), as a 1-D tensor of the offsets' dtype.
// Zero rows are left out, as if dropped.
torch::Tensor pair_cosines(const torch::Tensor& offsets);

// OCS: the mean of pair_cosines(offsets); NaN below two offsets.
double offset_concentration(const torch::Tensor& offsets);

enum class DerangementKind {
  kUniform,  // uniform over the qualifying permutations (rejection sampling)
  kRepo,     // the repo's permutation_onecycle: not uniform, and not always one cycle
};

// A permutation pi of 0..n-1 with target_ids[pi(i)] != target_ids[i] for every i (n =
// target_ids.size(); pass the rows of the target words, so equal words compare equal; pass
// 0..n-1 for a plain derangement). kUniform draws uniform permutations until one qualifies (a
// Fisher-Yates draw is abandoned at the first position that fails, which keeps the result
// uniform). kRepo draws a uniform permutation, then for each position i in order that is a fixed
// point swaps its value with that of a uniformly chosen position that is not a fixed point (any
// other position when all are fixed, where the repo would loop forever), and rejects the result
// if it pairs equal targets; it favours some derangements (n = 4: each double transposition has
// probability about 0.04, each 4-cycle about 0.14). Each attempt counts as one draw; nullopt
// after max_draws failed ones, or at once when n = 1 or all targets are equal. n = 0 gives the
// empty permutation.
std::optional<std::vector<int64_t>> derangement(const std::vector<int64_t>& target_ids,
                                                std::mt19937_64& rng,
                                                DerangementKind kind = DerangementKind::kUniform,
                                                int64_t max_draws = 10000);

struct OffsetOptions {
  int64_t shuffles = 50;  // P
  int64_t min_pairs = 5;
  DerangementKind derangement = DerangementKind::kUniform;
  uint64_t seed = 0;
};

struct OffsetScores {
  int64_t pairs = 0;  // pairs with a non-zero offset
  double ocs = NAN;
  double pcs = NAN;
};

// OCS and PCS of one category; `shuffled`, when given, receives S_1..S_P (empty below
// min_pairs or without a derangement). Throws ConfigError for shuffles < 1.
OffsetScores offset_scores(const EmbeddingSpace& space, const RowPairs& pairs,
                           const OffsetOptions& options = {},
                           std::vector<torch::Tensor>* shuffled = nullptr);

// Building blocks (shared with controls.h).

// Offsets v(target_i) − v(source_i) as rows [n', d], without the zero ones; `kept`, when given,
// receives the pairs that remain (in order).
torch::Tensor pair_offsets(const EmbeddingSpace& space, const RowPairs& pairs,
                           RowPairs* kept = nullptr);

// S_1..S_P: the pair cosines of the offsets v(target[pi(i)]) − v(source[i]) (zero ones dropped)
// for P derangements pi drawn from `rng`; avoid_true compares targets, otherwise pi only has no
// fixed point. Empty when no derangement is found.
std::vector<torch::Tensor> shuffled_cosines(const EmbeddingSpace& space, const RowPairs& pairs,
                                            int64_t shuffles, bool avoid_true, DerangementKind kind,
                                            std::mt19937_64& rng);

// mean_p auc(positives, negatives[p]); NaN when `negatives` is empty.
double mean_auc(const torch::Tensor& positives, const std::vector<torch::Tensor>& negatives);

}  // namespace desync
