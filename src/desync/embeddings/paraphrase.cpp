#include "desync/embeddings/paraphrase.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <string>
#include <unordered_set>

#include "desync/core/error.h"
#include "desync/embeddings/cooccurrence.h"

namespace desync {
namespace {

using Closeness = ParaphraseOptions::Closeness;

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

// The median of `v` (the mean of the two middle values for an even size), NaN when empty.
double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  const size_t h = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h), v.end());
  if (v.size() % 2 == 1) return v[h];
  const double upper = v[h];
  return (*std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h)) + upper) / 2;
}

Summary summarize(const std::vector<double>& v) {
  Summary s;
  if (v.empty()) return s;
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  s.median = median(v);
  return s;
}

// Pearson correlation of each row of x and y [n, m] over the entries where weight [n, m] is 1.
torch::Tensor rowwise_pearson(const torch::Tensor& x, const torch::Tensor& y,
                              const torch::Tensor& weight) {
  const torch::Tensor k = weight.sum(1, /*keepdim=*/true);
  const torch::Tensor dx = (x - (x * weight).sum(1, true) / k) * weight;
  const torch::Tensor dy = (y - (y * weight).sum(1, true) / k) * weight;
  return (dx * dy).sum(1) / torch::sqrt((dx * dx).sum(1) * (dy * dy).sum(1));
}

double r_squared(const torch::Tensor& target, const torch::Tensor& fit) {
  const double residual = (target - fit).pow(2).sum().item<double>();
  return 1 - residual / (target - target.mean(0, true)).pow(2).sum().item<double>();
}

// Histogram, median and share >= 0.9 of the finite values of r.
void describe(const torch::Tensor& r, std::vector<double>& values, std::vector<int64_t>& histogram,
              double& med, double& share_090) {
  const torch::Tensor rc = r.contiguous();
  values.assign(rc.data_ptr<double>(), rc.data_ptr<double>() + rc.numel());
  histogram.assign(LinearLinkReport::kBins, 0);
  std::vector<double> finite;
  int64_t high = 0;
  for (const double x : values) {
    if (!std::isfinite(x)) continue;
    finite.push_back(x);
    const auto bin = static_cast<int64_t>(std::floor((x + 1) * LinearLinkReport::kBins / 2));
    ++histogram[std::clamp<int64_t>(bin, 0, LinearLinkReport::kBins - 1)];
    high += x >= 0.9;
  }
  med = median(finite);
  share_090 = finite.empty() ? NAN : static_cast<double>(high) / static_cast<double>(finite.size());
}

// The sentence bounds and the positions of each word < n_words, grouped by word.
struct WordPositions {
  std::vector<int64_t> start, position, sentence;
};
WordPositions word_positions(const WordCorpus& corpus, int64_t n_words) {
  WordPositions g;
  g.start.assign(static_cast<size_t>(n_words + 1), 0);
  for (const int32_t w : corpus.tokens) {
    if (w < n_words) ++g.start[w + 1];
  }
  for (int64_t w = 0; w < n_words; ++w) g.start[w + 1] += g.start[w];
  g.position.resize(g.start.back());
  g.sentence.resize(g.start.back());
  std::vector<int64_t> cursor(g.start.begin(), g.start.end() - 1);
  for (int64_t s = 0; s < corpus.sentences(); ++s) {
    for (int64_t p = corpus.offsets[s]; p < corpus.offsets[s + 1]; ++p) {
      const int64_t w = corpus.tokens[p];
      if (w >= n_words) continue;
      g.position[cursor[w]] = p;
      g.sentence[cursor[w]++] = s;
    }
  }
  return g;
}

// ln(num/den) with the repo's conventions: 0/0 → 0, 0/x → ln ε, x/0 → −ln ε.
torch::Tensor log_ratio(const torch::Tensor& num, const torch::Tensor& den, double epsilon) {
  const double log_eps = std::log(epsilon);
  const torch::Tensor zero_num = num == 0, zero_den = den == 0;
  torch::Tensor out = torch::log(num / den);
  out = torch::where(zero_den, torch::full_like(out, -log_eps), out);
  out = torch::where(zero_num, torch::full_like(out, log_eps), out);
  return torch::where(zero_num & zero_den, torch::zeros_like(out), out);
}

constexpr int64_t kRankBlock = 64;  // queries scored together in closeness_ranks

// acc[b] = Σ_e value[e] · qt[context[e]][b] for b < kRankBlock: the inner loop of the ranks.
void accumulate_row(const double* value, const int32_t* context, int64_t length, const double* qt,
                    double* acc) {
  double sum[kRankBlock] = {};
  for (int64_t e = 0; e < length; ++e) {
    const double v = value[e];
    const double* column = qt + static_cast<int64_t>(context[e]) * kRankBlock;
    for (int64_t b = 0; b < kRankBlock; ++b) sum[b] += v * column[b];
  }
  for (int64_t b = 0; b < kRankBlock; ++b) acc[b] = sum[b];
}

int64_t pair_key(int64_t u, int64_t v, int64_t n) { return std::max(u, v) * n + std::min(u, v); }

void check_window(int64_t window) {
  if (window < 1) throw ConfigError("paraphrase window must be >= 1");
}

}  // namespace

// ---- Item 1 ----

PmiBlock pmi_block(const WordCorpus& corpus, int64_t n_words, int64_t window) {
  check_window(window);
  if (n_words < 1) throw ConfigError("paraphrase n_pmi must be >= 1");
  // N(w) over every context: the window positions of each occurrence of w; D = their sum.
  std::vector<double> n_w(static_cast<size_t>(n_words), 0.0);
  double total = 0.0;
  for (int64_t s = 0; s < corpus.sentences(); ++s) {
    const int64_t b = corpus.offsets[s], e = corpus.offsets[s + 1];
    for (int64_t p = b; p < e; ++p) {
      const auto seen = static_cast<double>(std::min(p - b, window) + std::min(e - 1 - p, window));
      total += seen;
      if (corpus.tokens[p] < n_words) n_w[corpus.tokens[p]] += seen;
    }
  }
  const CooccurrenceCounts counts =
      count_cooccurrences(corpus, 0, corpus.sentences(), window, WindowWeight::kUniform, n_words);
  PmiBlock out{torch::zeros({n_words, n_words}, kF64),
               torch::zeros({n_words, n_words}, torch::TensorOptions().dtype(torch::kBool))};
  auto pmi = out.pmi.accessor<double, 2>();
  auto observed = out.observed.accessor<bool, 2>();
  for (int64_t i = 0; i < counts.size(); ++i) {
    const int64_t w = counts.keys[i] / n_words, c = counts.keys[i] % n_words;
    pmi[w][c] = std::log(counts.counts[i] * total / (n_w[w] * n_w[c]));  // N(c) = N(w) at c
    observed[w][c] = true;
  }
  return out;
}

LinearLinkReport linear_link(const torch::Tensor& pmi_p, const torch::Tensor& observed,
                             const torch::Tensor& w_p, const torch::Tensor& c, bool full_context,
                             bool mask) {
  const int64_t n = pmi_p.dim() == 2 ? pmi_p.size(0) : -1;
  if (n < 1 || pmi_p.size(1) != n || !observed.sizes().equals(pmi_p.sizes()) || w_p.dim() != 2 ||
      w_p.size(0) != n || c.dim() != 2 || c.size(0) < n || c.size(1) != w_p.size(1)) {
    throw ConfigError("linear link needs PMI [n, n], W [n, d] and C [V >= n, d]");
  }
  const torch::NoGradGuard no_grad;
  const torch::Tensor pmi = pmi_p.to(torch::kFloat64), w = w_p.to(torch::kFloat64);
  const torch::Tensor c_all = c.to(torch::kFloat64), c_p = c_all.slice(0, 0, n);
  const torch::Tensor c_plus =
      full_context ? torch::linalg_pinv(c_all).slice(1, 0, n) : torch::linalg_pinv(c_p);  // [d, n]
  const torch::Tensor w_hat = torch::mm(pmi, c_plus.t());  // rows ŵ(w)
  const torch::Tensor weight_pmi = mask ? observed.to(torch::kFloat64) : torch::ones_like(pmi);

  LinearLinkReport r;
  r.words = n;
  describe(rowwise_pearson(w, w_hat, torch::ones_like(w)), r.r_emb, r.r_emb_histogram,
           r.r_emb_median, r.r_emb_share_090);
  describe(rowwise_pearson(pmi, torch::mm(w, c_p.t()), weight_pmi), r.r_pmi, r.r_pmi_histogram,
           r.r_pmi_median, r.r_pmi_share_090);
  const torch::Tensor x = std::get<0>(torch::linalg_lstsq(pmi, w, std::nullopt, "gelsy"));
  r.r2_fit = r_squared(w, torch::mm(pmi, x));
  r.r2_link = r_squared(w, w_hat);
  return r;
}

// ---- Triple counts ----

int64_t PairContextCounts::find(int64_t u, int64_t v) const {
  const int64_t key = pair_key(u, v, n_words);
  const auto it = std::lower_bound(keys.begin(), keys.end(), key);
  return it != keys.end() && *it == key ? it - keys.begin() : -1;
}

torch::Tensor PairContextCounts::dense_row(int64_t r) const {
  torch::Tensor out = torch::zeros({n_words}, kF64);
  double* o = out.data_ptr<double>();
  for (int64_t e = row_start[r]; e < row_start[r + 1]; ++e) o[contexts[e]] = counts[e];
  return out;
}

PairContextCounts count_pair_contexts(const WordCorpus& corpus, int64_t n_words, int64_t window) {
  check_window(window);
  if (n_words < 1) throw ConfigError("paraphrase n_tri must be >= 1");
  const WordPositions g = word_positions(corpus, n_words);
  const auto& tok = corpus.tokens;
  PairContextCounts t;
  t.n_words = n_words;
  t.row_start.push_back(0);
  // Rows grouped by hi = the larger word. From each position j of hi, every centre i within L
  // and every other position k within L of i holding lo <= hi emit (lo, c = tok[i]): a pair of
  // positions holding {lo, hi}, lo < hi, is emitted once, and one holding {hi, hi} twice, so
  // N(c; W) = N(c; lo, hi) + N(c; hi, lo) = 2 · emissions either way.
  std::vector<int64_t> emitted;
  for (int64_t hi = 0; hi < n_words; ++hi) {
    emitted.clear();
    for (int64_t x = g.start[hi]; x < g.start[hi + 1]; ++x) {
      const int64_t j = g.position[x];
      const int64_t b = corpus.offsets[g.sentence[x]], e = corpus.offsets[g.sentence[x] + 1];
      for (int64_t i = std::max(b, j - window); i < std::min(e, j + window + 1); ++i) {
        if (i == j || tok[i] >= n_words) continue;
        for (int64_t k = std::max(b, i - window); k < std::min(e, i + window + 1); ++k) {
          if (k == i || k == j || tok[k] > hi) continue;
          emitted.push_back(tok[k] * n_words + tok[i]);
        }
      }
    }
    std::sort(emitted.begin(), emitted.end());
    for (size_t a = 0; a < emitted.size();) {
      size_t z = a;
      while (z < emitted.size() && emitted[z] == emitted[a]) ++z;
      const int64_t lo = emitted[a] / n_words;
      if (t.keys.empty() || t.keys.back() != hi * n_words + lo) {
        if (!t.keys.empty()) t.row_start.push_back(static_cast<int64_t>(t.contexts.size()));
        t.keys.push_back(hi * n_words + lo);
      }
      t.contexts.push_back(static_cast<int32_t>(emitted[a] % n_words));
      t.counts.push_back(2.0 * static_cast<double>(z - a));
      a = z;
    }
  }
  if (!t.keys.empty()) t.row_start.push_back(static_cast<int64_t>(t.contexts.size()));
  return t;
}

torch::Tensor count_word_contexts(const WordCorpus& corpus, const std::vector<int64_t>& words,
                                  int64_t n_words, int64_t window) {
  check_window(window);
  std::vector<int64_t> slot(static_cast<size_t>(n_words), -1);
  for (size_t s = 0; s < words.size(); ++s) {
    if (words[s] < 0 || words[s] >= n_words || slot[words[s]] >= 0) {
      throw ConfigError("count_word_contexts needs distinct words < n_words");
    }
    slot[words[s]] = static_cast<int64_t>(s);
  }
  torch::Tensor out = torch::zeros({static_cast<int64_t>(words.size()), n_words}, kF64);
  auto acc = out.accessor<double, 2>();
  const auto& tok = corpus.tokens;
  // N(c; u) = Σ_v N(c; u, v): a centre i holding c with m window positions holding words
  // < n_words gives each of those positions m − 1 partners.
  for (int64_t s = 0; s < corpus.sentences(); ++s) {
    const int64_t b = corpus.offsets[s], e = corpus.offsets[s + 1];
    for (int64_t i = b; i < e; ++i) {
      if (tok[i] >= n_words) continue;
      const int64_t lo = std::max(b, i - window), hi = std::min(e, i + window + 1);
      int64_t m = 0;
      for (int64_t j = lo; j < hi; ++j) m += j != i && tok[j] < n_words;
      for (int64_t j = lo; j < hi; ++j) {
        if (j != i && tok[j] < n_words && slot[tok[j]] >= 0) {
          acc[slot[tok[j]]][tok[i]] += static_cast<double>(m - 1);
        }
      }
    }
  }
  return out;
}

std::vector<int64_t> cooccurring_pairs(const WordCorpus& corpus,
                                       const std::vector<std::pair<int64_t, int64_t>>& pairs,
                                       int64_t window) {
  check_window(window);
  const int64_t v = corpus.vocab.size();
  std::unordered_set<int64_t> wanted, found;
  std::vector<char> involved(static_cast<size_t>(v), 0);
  for (const auto& [a, b] : pairs) {
    wanted.insert(pair_key(a, b, v));
    involved[a] = involved[b] = 1;
  }
  const auto& tok = corpus.tokens;
  for (int64_t s = 0; s < corpus.sentences(); ++s) {
    const int64_t e = corpus.offsets[s + 1];
    for (int64_t p = corpus.offsets[s]; p < e; ++p) {
      if (!involved[tok[p]]) continue;
      for (int64_t q = p + 1; q < std::min(e, p + window + 1); ++q) {
        if (involved[tok[q]] && wanted.count(pair_key(tok[p], tok[q], v))) {
          found.insert(pair_key(tok[p], tok[q], v));
        }
      }
    }
  }
  std::vector<int64_t> out(found.begin(), found.end());
  std::sort(out.begin(), out.end());
  return out;
}

// ---- Error terms ----

ParaphraseCounts analogy_counts(const torch::Tensor& n, int64_t w1, int64_t w2, int64_t w3,
                                int64_t w4) {
  const torch::Tensor n_cu = n.sum(2);  // N(c; u) [C, U]
  const auto pair = [&](int64_t a, int64_t b) {
    return n.select(2, b).select(1, a) + n.select(2, a).select(1, b);
  };
  return {torch::stack({pair(w1, w2), pair(w3, w4)}),
          torch::stack(
              {n_cu.select(1, w1), n_cu.select(1, w2), n_cu.select(1, w3), n_cu.select(1, w4)})};
}

ErrorTerms error_terms(const ParaphraseCounts& a, double epsilon) {
  const torch::Tensor n_c_w = a.pairs[0], n_c_ws = a.pairs[1];
  const torch::Tensor n_pair = a.pairs.sum(1), n_word = a.words.sum(1);
  const torch::Tensor n_w = n_pair[0], n_ws = n_pair[1];
  ErrorTerms t;
  t.rho = log_ratio(n_c_w * n_ws, n_c_ws * n_w, epsilon);
  t.dsigma = log_ratio(n_c_w, a.words[0] * a.words[1], epsilon) -
             log_ratio(n_c_ws, a.words[2] * a.words[3], epsilon);
  t.dtau =
      log_ratio(n_w * n_word[2] * n_word[3], n_ws * n_word[0] * n_word[1], epsilon).item<double>();
  return t;
}

torch::Tensor pmi_t(const torch::Tensor& n) {
  const torch::Tensor n_cu = n.sum(2);
  return torch::log(n_cu * n_cu.sum() / (n_cu.sum(1, true) * n_cu.sum(0, true)));
}

// ---- Item 4 ----

std::vector<int64_t> closeness_ranks(const PairContextCounts& t,
                                     const std::vector<std::pair<int64_t, int64_t>>& queries,
                                     Closeness closeness) {
  const int64_t rows = t.rows(), n = t.n_words, nq = static_cast<int64_t>(queries.size());
  for (const auto& [a, b] : queries) {
    if (a < 0 || a >= rows || b < 0 || b >= rows) {
      throw ConfigError("closeness rank query outside the pair rows");
    }
  }
  // N(W') and ‖r(W')‖², r(W')_c = ln[N(c; W')/N(W')].
  std::vector<double> total(static_cast<size_t>(rows), 0.0), norm2(total);
  for (int64_t w = 0; w < rows; ++w) {
    for (int64_t e = t.row_start[w]; e < t.row_start[w + 1]; ++e) total[w] += t.counts[e];
    for (int64_t e = t.row_start[w]; e < t.row_start[w + 1]; ++e) {
      const double x = std::log(t.counts[e] / total[w]);
      norm2[w] += x * x;
    }
  }
  // Entries of r are <= 0, so r'·r >= 0 and |‖r'‖ − ‖r‖| <= ‖r' − r‖ <= √(‖r'‖² + ‖r‖²). With
  // the rows sorted by ‖r'‖, the rows these bounds decide for a query are a prefix and a
  // suffix; only the rows between need the dot product. The rows are copied in that order
  // (contiguous scans).
  std::vector<int64_t> order(static_cast<size_t>(rows));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return norm2[x] < norm2[y]; });
  std::vector<double> sorted(static_cast<size_t>(rows)), r(t.counts.size());
  std::vector<int64_t> position(static_cast<size_t>(rows)), start(static_cast<size_t>(rows + 1));
  std::vector<int32_t> context(t.contexts.size());
  start[0] = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t w = order[i];
    sorted[i] = norm2[w];
    position[w] = i;
    start[i + 1] = start[i] + t.row_start[w + 1] - t.row_start[w];
    for (int64_t e = t.row_start[w], f = start[i]; e < t.row_start[w + 1]; ++e, ++f) {
      context[f] = t.contexts[e];
      r[f] = std::log(t.counts[e] / total[w]);
    }
  }
  // ‖r(a) − r(b)‖² of sorted rows a, b, merging their contexts.
  const auto distance2 = [&](int64_t a, int64_t b) {
    int64_t x = start[a], y = start[b];
    const int64_t xe = start[a + 1], ye = start[b + 1];
    double d2 = 0.0;
    while (x < xe || y < ye) {
      double diff;
      if (y == ye || (x < xe && context[x] < context[y])) {
        diff = r[x++];
      } else if (x == xe || context[y] < context[x]) {
        diff = -r[y++];
      } else {
        diff = r[x++] - r[y++];
      }
      d2 += diff * diff;
    }
    return d2;
  };
  const auto first_false = [&](int64_t from, int64_t to, const auto& pred) {
    return std::partition_point(sorted.begin() + from, sorted.begin() + to, pred) - sorted.begin();
  };
  const bool increasing = closeness == Closeness::kIncreasing;
  struct Query {
    double a2, t2;
    int64_t begin, end;    // sorted rows that need the dot product
    int64_t own_w, own_s;  // sorted rows of W and W*
  };
  std::vector<Query> qs(static_cast<size_t>(nq));
  std::vector<int64_t> ranked_before(static_cast<size_t>(nq), 0);
  for (int64_t q = 0; q < nq; ++q) {
    Query& x = qs[q];
    x.own_w = position[queries[q].first];
    x.own_s = position[queries[q].second];
    x.a2 = sorted[x.own_w];
    x.t2 = distance2(x.own_w, x.own_s);
    const double a = std::sqrt(x.a2), t2 = x.t2, a2 = x.a2;
    const auto lower = [&](double n2) { return (std::sqrt(n2) - a) * (std::sqrt(n2) - a); };
    const int64_t mid = first_false(0, rows, [&](double n2) { return n2 < a2; });
    const auto own_counted = [&](const auto& is_counted) {
      return int64_t{is_counted(x.own_w)} + int64_t{is_counted(x.own_s)};
    };
    if (increasing) {  // counted when ‖r'‖² + ‖r‖² < t², excluded when (‖r'‖ − ‖r‖)² >= t²
      const int64_t counted = first_false(0, rows, [&](double n2) { return n2 + a2 < t2; });
      const int64_t low = first_false(0, mid, [&](double n2) { return lower(n2) >= t2; });
      const int64_t high = first_false(mid, rows, [&](double n2) { return lower(n2) < t2; });
      x.begin = std::max(counted, low);
      x.end = std::max(x.begin, high);
      ranked_before[q] = counted - own_counted([&](int64_t i) { return i < counted; });
    } else {  // counted when (‖r'‖ − ‖r‖)² > t², not when ‖r'‖² + ‖r‖² <= t²
      const int64_t low = first_false(0, mid, [&](double n2) { return lower(n2) > t2; });
      const int64_t high = first_false(mid, rows, [&](double n2) { return lower(n2) <= t2; });
      const int64_t none = first_false(0, rows, [&](double n2) { return n2 + a2 <= t2; });
      x.begin = std::max(low, none);
      x.end = std::max(x.begin, high);
      ranked_before[q] =
          low + (rows - high) - own_counted([&](int64_t i) { return i < low || i >= high; });
    }
  }

  // Blocks of queries with neighbouring ranges; each block scans the union of its ranges once.
  std::vector<int64_t> by_range(static_cast<size_t>(nq));
  std::iota(by_range.begin(), by_range.end(), 0);
  std::sort(by_range.begin(), by_range.end(), [&](int64_t x, int64_t y) {
    return std::pair(qs[x].begin, qs[x].end) < std::pair(qs[y].begin, qs[y].end);
  });
  constexpr int64_t kBlock = kRankBlock;
  const int64_t blocks = (nq + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t first_block, int64_t end_block) {
    std::vector<double> qt(static_cast<size_t>(n * kBlock));  // r(W) of the block, [c][query]
    std::array<double, kBlock> acc{};
    std::array<int64_t, kBlock> begin{}, end{};
    for (int64_t block = first_block; block < end_block; ++block) {
      const int64_t q0 = block * kBlock, nb = std::min(kBlock, nq - q0);
      std::fill(qt.begin(), qt.end(), 0.0);
      begin.fill(0);
      end.fill(0);
      int64_t scan_begin = rows, scan_end = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const Query& x = qs[by_range[q0 + b]];
        for (int64_t e = start[x.own_w]; e < start[x.own_w + 1]; ++e) {
          qt[context[e] * kBlock + b] = r[e];
        }
        begin[b] = x.begin;
        end[b] = x.end;
        if (x.begin < x.end) {
          scan_begin = std::min(scan_begin, x.begin);
          scan_end = std::max(scan_end, x.end);
        }
      }
      for (int64_t i = scan_begin; i < scan_end; ++i) {
        bool any = false;
        for (int64_t b = 0; b < kBlock; ++b) any |= begin[b] <= i && i < end[b];
        if (!any) continue;
        accumulate_row(r.data() + start[i], context.data() + start[i], start[i + 1] - start[i],
                       qt.data(), acc.data());
        for (int64_t b = 0; b < nb; ++b) {
          const Query& x = qs[by_range[q0 + b]];
          if (i < x.begin || i >= x.end || i == x.own_w || i == x.own_s) continue;
          const double d2 = sorted[i] + x.a2 - 2 * acc[b];
          ranked_before[by_range[q0 + b]] += increasing ? d2 < x.t2 : d2 > x.t2;
        }
      }
    }
  });
  std::vector<int64_t> ranks(static_cast<size_t>(nq));
  const int64_t empty_pairs = n * (n + 1) / 2 - rows;
  for (int64_t q = 0; q < nq; ++q) {
    ranks[q] = 1 + ranked_before[q];
    if (!increasing && qs[q].a2 > qs[q].t2) ranks[q] += empty_pairs;  // at r = 0: distance ‖r(W)‖
  }
  return ranks;
}

// ---- The test ----

ParaphraseReport paraphrase_test(
    const WordCorpus& corpus, const torch::Tensor& w, const torch::Tensor& c,
    const std::vector<std::pair<std::string, std::vector<std::pair<int64_t, int64_t>>>>& categories,
    const ParaphraseOptions& o) {
  const int64_t v = corpus.vocab.size();
  if (o.n_pmi < 1 || o.n_tri < 1) throw ConfigError("paraphrase n_pmi and n_tri must be >= 1");
  check_window(o.window);
  if (!(o.epsilon > 0 && o.epsilon < 1)) throw ConfigError("paraphrase epsilon must be in (0, 1)");
  if (v < 1 || w.dim() != 2 || c.dim() != 2 || w.size(0) != v || c.size(0) != v ||
      w.size(1) != c.size(1)) {
    throw ConfigError("paraphrase test needs W and C of [" + std::to_string(v) +
                      " (the corpus vocabulary), d] each");
  }
  for (const auto& [name, pairs] : categories) {
    for (const auto& [s, tgt] : pairs) {
      if (s >= v || tgt >= v) {
        throw ConfigError("category " + name + " has a word id outside the corpus vocabulary");
      }
    }
  }
  ParaphraseReport report;
  report.n_pmi = std::min(o.n_pmi, v);
  report.n_tri = std::min(o.n_tri, v);
  const int64_t n_tri = report.n_tri;

  // Item 1.
  const PmiBlock block = pmi_block(corpus, report.n_pmi, o.window);
  report.link = linear_link(block.pmi, block.observed, w.slice(0, 0, report.n_pmi), c,
                            o.full_context, o.mask);

  // Item 3, and which W co-occur.
  std::vector<std::pair<int64_t, int64_t>> candidates;
  for (const auto& [name, pairs] : categories) {
    for (size_t i = 0; i < pairs.size(); ++i) {
      for (size_t j = 0; j < pairs.size(); ++j) {
        if (i != j && pairs[i].first >= 0 && pairs[j].second >= 0) {
          candidates.emplace_back(pairs[i].first, pairs[j].second);
        }
      }
    }
  }
  const std::vector<int64_t> cooccurring = cooccurring_pairs(corpus, candidates, o.window);
  const auto cooccur = [&](int64_t a, int64_t b) {
    return std::binary_search(cooccurring.begin(), cooccurring.end(), pair_key(a, b, v));
  };

  // Items 2 and 4: the kept analogies.
  const PairContextCounts table = count_pair_contexts(corpus, n_tri, o.window);
  report.pair_rows = table.rows();
  struct Kept {
    size_t category;
    std::array<int64_t, 4> word;  // w1, w2 (W) and w3, w4 (W*)
  };
  std::vector<Kept> kept;
  std::vector<std::pair<int64_t, int64_t>> queries;  // (row of W, row of W*)
  for (size_t k = 0; k < categories.size(); ++k) {
    const auto& [name, pairs] = categories[k];
    CategoryParaphrase cat;
    cat.name = name;
    for (size_t i = 0; i < pairs.size(); ++i) {
      for (size_t j = 0; j < pairs.size(); ++j) {
        if (i == j) continue;
        ++cat.paraphrases;
        const int64_t a = pairs[i].first, b = pairs[j].second;
        if (a < 0 || b < 0) {
          ++cat.absent;
        } else {
          ++(cooccur(a, b) ? cat.cooccur : cat.never);
        }
        if (j < i) continue;
        ++cat.analogies;
        const std::array<int64_t, 4> word{pairs[i].first, pairs[j].second, pairs[i].second,
                                          pairs[j].first};
        if (!std::all_of(word.begin(), word.end(), [&](int64_t x) { return x >= 0 && x < n_tri; }))
          continue;
        if (!cooccur(word[0], word[1]) || !cooccur(word[2], word[3])) continue;
        const int64_t row_w = table.find(word[0], word[1]), row_s = table.find(word[2], word[3]);
        if (row_w < 0 || row_s < 0 || row_w == row_s) continue;
        ++cat.kept;
        kept.push_back({k, word});
        queries.emplace_back(row_w, row_s);
      }
    }
    report.categories.push_back(std::move(cat));
  }

  std::vector<int64_t> words;
  for (const Kept& x : kept) words.insert(words.end(), x.word.begin(), x.word.end());
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  const torch::Tensor n_cu = count_word_contexts(corpus, words, n_tri, o.window);
  const auto word_row = [&](int64_t x) {
    return n_cu[std::lower_bound(words.begin(), words.end(), x) - words.begin()];
  };

  const std::vector<int64_t> ranks = closeness_ranks(table, queries, o.closeness);
  std::vector<std::array<std::vector<double>, 9>> values(categories.size());
  for (size_t q = 0; q < kept.size(); ++q) {
    const auto& word = kept[q].word;
    ParaphraseCounts a{
        torch::stack({table.dense_row(queries[q].first), table.dense_row(queries[q].second)}),
        torch::stack({word_row(word[0]), word_row(word[1]), word_row(word[2]), word_row(word[3])})};
    const ErrorTerms e = error_terms(a, o.epsilon);
    const torch::Tensor dependence = e.dsigma - e.dtau;
    const std::array<torch::Tensor, 4> vectors{e.rho, dependence, e.rho - dependence,
                                               e.rho + dependence};
    auto& v9 = values[kept[q].category];
    for (size_t m = 0; m < 4; ++m) {
      v9[2 * m].push_back(vectors[m].abs().sum().item<double>());
      v9[2 * m + 1].push_back(vectors[m].norm().item<double>());
    }
    v9[8].push_back(static_cast<double>(ranks[q]));
    report.categories[kept[q].category].ranks.push_back(ranks[q]);
  }
  for (size_t k = 0; k < categories.size(); ++k) {
    CategoryParaphrase& cat = report.categories[k];
    const auto& v9 = values[k];
    cat.rho_l1 = summarize(v9[0]);
    cat.rho_l2 = summarize(v9[1]);
    cat.dependence_l1 = summarize(v9[2]);
    cat.dependence_l2 = summarize(v9[3]);
    cat.total_l1 = summarize(v9[4]);
    cat.total_l2 = summarize(v9[5]);
    cat.repo_total_l1 = summarize(v9[6]);
    cat.repo_total_l2 = summarize(v9[7]);
    cat.rank = summarize(v9[8]);
  }
  return report;
}

}  // namespace desync
