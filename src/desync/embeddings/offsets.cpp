#include "desync/embeddings/offsets.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <utility>

#include "desync/core/error.h"

namespace desync {
namespace {

// Shuffled sets go through one batched product while offsets and Gram matrices stay below this
// many elements (BATS-sized sets: all P at once).
constexpr int64_t kBatchElements = int64_t{1} << 24;

std::vector<double> to_doubles(const torch::Tensor& x) {
  const torch::Tensor d = x.detach().to(torch::kCPU, torch::kDouble).contiguous().reshape({-1});
  return {d.data_ptr<double>(), d.data_ptr<double>() + d.numel()};
}

torch::Tensor rows_tensor(const std::vector<int64_t>& rows) {
  return torch::tensor(rows, torch::kLong);
}

// `offsets` without its zero rows; `keep` receives the mask.
torch::Tensor drop_zero_rows(const torch::Tensor& offsets, torch::Tensor* keep = nullptr) {
  const torch::Tensor nonzero = offsets.norm(2, /*dim=*/1) > 0;
  if (keep != nullptr) *keep = nonzero;
  return nonzero.all().item<bool>() ? offsets : offsets.index({nonzero});
}

// The pair cosines of each [n, d] slice of `offsets` [B, n, d], its zero rows left out: one
// batched matrix product for all slices.
std::vector<torch::Tensor> batched_pair_cosines(const torch::Tensor& offsets) {
  const int64_t n = offsets.size(1);
  const torch::Tensor norms = offsets.norm(2, /*dim=*/2, /*keepdim=*/true);  // [B, n, 1]
  const torch::Tensor nonzero = norms.squeeze(2) > 0;                        // [B, n]
  const torch::Tensor unit = offsets / torch::where(norms > 0, norms, torch::ones_like(norms));
  const torch::Tensor upper = torch::triu_indices(n, n, /*offset=*/1, torch::kLong);
  const torch::Tensor cosines = unit.bmm(unit.transpose(1, 2))
                                    .reshape({offsets.size(0), n * n})
                                    .index_select(1, upper[0] * n + upper[1]);  // [B, pairs]
  const torch::Tensor kept =
      nonzero.index_select(1, upper[0]).logical_and(nonzero.index_select(1, upper[1]));
  const bool all_kept = kept.all().item<bool>();
  std::vector<torch::Tensor> sets;
  for (int64_t b = 0; b < offsets.size(0); ++b) {
    sets.push_back(all_kept ? cosines[b] : cosines[b].masked_select(kept[b]));
  }
  return sets;
}

int64_t uniform_below(int64_t n, std::mt19937_64& rng) {  // in [0, n)
  return std::uniform_int_distribution<int64_t>(0, n - 1)(rng);
}

bool is_identity(const std::vector<int64_t>& pi) {
  for (size_t i = 0; i < pi.size(); ++i) {
    if (pi[i] != static_cast<int64_t>(i)) return false;
  }
  return true;
}

}  // namespace

double auc(const torch::Tensor& positives, const torch::Tensor& negatives) {
  const std::vector<double> x = to_doubles(positives);
  std::vector<double> y = to_doubles(negatives);
  if (x.empty() || y.empty()) return NAN;
  std::sort(y.begin(), y.end());
  // Twice the Mann-Whitney count: 2 #(y < x) + #(y = x), summed over x.
  int64_t twice = 0;
  for (const double v : x) {
    const auto less = std::lower_bound(y.begin(), y.end(), v);
    const auto less_or_equal = std::upper_bound(less, y.end(), v);
    twice += 2 * (less - y.begin()) + (less_or_equal - less);
  }
  return static_cast<double>(twice) / (2.0 * static_cast<double>(x.size()) * y.size());
}

torch::Tensor pair_cosines(const torch::Tensor& offsets) {
  return batched_pair_cosines(offsets.unsqueeze(0))[0];
}

double offset_concentration(const torch::Tensor& offsets) {
  return pair_cosines(offsets).mean().item<double>();  // NaN when empty
}

std::optional<std::vector<int64_t>> derangement(const std::vector<int64_t>& target_ids,
                                                std::mt19937_64& rng, DerangementKind kind,
                                                int64_t max_draws) {
  const int64_t n = static_cast<int64_t>(target_ids.size());
  const auto& t = target_ids;
  if (n == 0) return std::vector<int64_t>{};
  if (std::all_of(t.begin(), t.end(), [&](int64_t id) { return id == t[0]; })) return std::nullopt;
  std::vector<int64_t> pi(n);
  for (int64_t draw = 0; draw < max_draws; ++draw) {
    std::iota(pi.begin(), pi.end(), 0);
    if (kind == DerangementKind::kUniform) {
      // Fisher-Yates from the end: pi[i] is final once drawn, so a failing draw stops there.
      bool ok = true;
      for (int64_t i = n - 1; i >= 0 && ok; --i) {
        std::swap(pi[i], pi[uniform_below(i + 1, rng)]);
        ok = t[pi[i]] != t[i];
      }
      if (ok) return pi;
      continue;
    }
    // kRepo: a uniform permutation whose fixed points are swapped away in order.
    for (int64_t i = n - 1; i > 0; --i) std::swap(pi[i], pi[uniform_below(i + 1, rng)]);
    for (int64_t i = 0; i < n; ++i) {
      if (pi[i] != i) continue;
      const bool all_fixed = is_identity(pi);  // only possible at i = 0
      int64_t j = uniform_below(n, rng);
      while (all_fixed ? j == i : pi[j] == j) j = uniform_below(n, rng);
      std::swap(pi[i], pi[j]);
    }
    bool ok = true;
    for (int64_t i = 0; i < n && ok; ++i) ok = t[pi[i]] != t[i];
    if (ok) return pi;
  }
  return std::nullopt;
}

torch::Tensor pair_offsets(const EmbeddingSpace& space, const RowPairs& pairs, RowPairs* kept) {
  const torch::Tensor offsets = space.vectors.index_select(0, rows_tensor(pairs.target)) -
                                space.vectors.index_select(0, rows_tensor(pairs.source));
  if (kept == nullptr) return drop_zero_rows(offsets);
  torch::Tensor keep;
  torch::Tensor result = drop_zero_rows(offsets, &keep);
  *kept = RowPairs{};
  kept->oov = pairs.oov;
  const auto k = keep.accessor<bool, 1>();
  for (int64_t i = 0; i < pairs.size(); ++i) {
    if (!k[i]) continue;
    kept->source.push_back(pairs.source[i]);
    kept->target.push_back(pairs.target[i]);
  }
  return result;
}

std::vector<torch::Tensor> shuffled_cosines(const EmbeddingSpace& space, const RowPairs& pairs,
                                            int64_t shuffles, bool avoid_true, DerangementKind kind,
                                            std::mt19937_64& rng) {
  const int64_t n = pairs.size();
  std::vector<int64_t> ids = pairs.target;
  if (!avoid_true) std::iota(ids.begin(), ids.end(), 0);
  std::vector<int64_t> targets;  // target[pi_p(i)], shuffle by shuffle
  targets.reserve(shuffles * n);
  for (int64_t p = 0; p < shuffles; ++p) {
    const std::optional<std::vector<int64_t>> pi = derangement(ids, rng, kind);
    if (!pi) return {};
    for (const int64_t j : *pi) targets.push_back(pairs.target[j]);
  }
  const torch::Tensor sources = space.vectors.index_select(0, rows_tensor(pairs.source));
  const torch::Tensor target_rows = rows_tensor(targets);
  // Batches of shuffles of at most kBatchElements elements in offsets or Gram matrices.
  const int64_t batch = std::max<int64_t>(
      1, kBatchElements / std::max<int64_t>(1, n * std::max(n, space.vectors.size(1))));
  std::vector<torch::Tensor> sets;
  sets.reserve(shuffles);
  for (int64_t first = 0; first < shuffles; first += batch) {
    const int64_t count = std::min(batch, shuffles - first);
    const torch::Tensor offsets =
        space.vectors.index_select(0, target_rows.slice(0, first * n, (first + count) * n))
            .view({count, n, space.vectors.size(1)}) -
        sources;
    for (torch::Tensor& set : batched_pair_cosines(offsets)) sets.push_back(std::move(set));
  }
  return sets;
}

double mean_auc(const torch::Tensor& positives, const std::vector<torch::Tensor>& negatives) {
  if (negatives.empty()) return NAN;
  double sum = 0;
  for (const torch::Tensor& n : negatives) sum += auc(positives, n);
  return sum / static_cast<double>(negatives.size());
}

OffsetScores offset_scores(const EmbeddingSpace& space, const RowPairs& pairs,
                           const OffsetOptions& options, std::vector<torch::Tensor>* shuffled) {
  if (options.shuffles < 1) {
    throw ConfigError("offset scores: shuffles must be at least 1 (got " +
                      std::to_string(options.shuffles) + ")");
  }
  RowPairs kept;
  const torch::Tensor offsets = pair_offsets(space, pairs, &kept);
  OffsetScores scores;
  scores.pairs = kept.size();
  if (shuffled != nullptr) shuffled->clear();
  if (scores.pairs < options.min_pairs) return scores;
  const torch::Tensor s_true = pair_cosines(offsets);
  scores.ocs = s_true.mean().item<double>();
  std::mt19937_64 rng(options.seed);
  std::vector<torch::Tensor> sets = shuffled_cosines(space, kept, options.shuffles,
                                                     /*avoid_true=*/true, options.derangement, rng);
  scores.pcs = mean_auc(s_true, sets);
  if (shuffled != nullptr) *shuffled = std::move(sets);
  return scores;
}

}  // namespace desync
