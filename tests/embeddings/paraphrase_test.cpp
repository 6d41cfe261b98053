#include "desync/embeddings/paraphrase.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "embeddings/corpora.h"

namespace desync {
namespace {

using testing::make_corpus;
using testing::random_corpus;

using Closeness = ParaphraseOptions::Closeness;
using Tensor3 = std::vector<std::vector<std::vector<double>>>;

// N(c; u, v) by its definition: centre i, ordered distinct j, k != i within L of i; all < n.
Tensor3 brute_triples(const WordCorpus& corpus, int64_t n, int64_t window) {
  Tensor3 t(n, std::vector<std::vector<double>>(n, std::vector<double>(n, 0.0)));
  for (int64_t s = 0; s < corpus.sentences(); ++s) {
    const int64_t b = corpus.offsets[s], e = corpus.offsets[s + 1];
    for (int64_t i = b; i < e; ++i) {
      for (int64_t j = b; j < e; ++j) {
        for (int64_t k = b; k < e; ++k) {
          if (i == j || i == k || j == k) continue;
          if (std::abs(j - i) > window || std::abs(k - i) > window) continue;
          const int64_t c = corpus.tokens[i], u = corpus.tokens[j], v = corpus.tokens[k];
          if (c < n && u < n && v < n) t[c][u][v] += 1;
        }
      }
    }
  }
  return t;
}

torch::Tensor to_tensor(const Tensor3& t) {
  const int64_t n = static_cast<int64_t>(t.size());
  torch::Tensor out = torch::zeros({n, n, n}, torch::kFloat64);
  auto a = out.accessor<double, 3>();
  for (int64_t c = 0; c < n; ++c) {
    for (int64_t u = 0; u < n; ++u) {
      for (int64_t v = 0; v < n; ++v) a[c][u][v] = t[c][u][v];
    }
  }
  return out;
}

bool brute_cooccur(const WordCorpus& corpus, int64_t a, int64_t b, int64_t window) {
  for (int64_t s = 0; s < corpus.sentences(); ++s) {
    for (int64_t p = corpus.offsets[s]; p < corpus.offsets[s + 1]; ++p) {
      for (int64_t q = p + 1; q < std::min(corpus.offsets[s + 1], p + window + 1); ++q) {
        const int64_t x = corpus.tokens[p], y = corpus.tokens[q];
        if ((x == a && y == b) || (x == b && y == a)) return true;
      }
    }
  }
  return false;
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    mx += x[i] / n;
    my += y[i] / n;
  }
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxy / std::sqrt(sxx * syy);
}

// A random positive tensor [C, U, U] symmetric in its last two indices.
torch::Tensor random_symmetric_counts(int64_t contexts, int64_t words, uint64_t seed) {
  torch::manual_seed(seed);
  const torch::Tensor a = torch::rand({contexts, words, words}, torch::kFloat64) * 50 + 0.5;
  return a + a.transpose(1, 2);
}

TEST(Paraphrase, ErrorTermsSumToThePmiAnalogyError) {
  const int64_t contexts = 7, words = 6;
  const torch::Tensor n = random_symmetric_counts(contexts, words, 1);
  const auto t = n.accessor<double, 3>();
  // PMI_T(c, u) = ln[N(c;u)·N/(N(c)·N(u))] by loops.
  std::vector<std::vector<double>> n_cu(contexts, std::vector<double>(words, 0.0));
  double total = 0;
  for (int64_t c = 0; c < contexts; ++c) {
    for (int64_t u = 0; u < words; ++u) {
      for (int64_t v = 0; v < words; ++v) n_cu[c][u] += t[c][u][v];
      total += n_cu[c][u];
    }
  }
  std::vector<std::vector<double>> pmi(contexts, std::vector<double>(words));
  const torch::Tensor pmi_lib = pmi_t(n);
  for (int64_t c = 0; c < contexts; ++c) {
    for (int64_t u = 0; u < words; ++u) {
      double n_c = 0, n_u = 0;
      for (int64_t x = 0; x < words; ++x) n_c += n_cu[c][x];
      for (int64_t x = 0; x < contexts; ++x) n_u += n_cu[x][u];
      pmi[c][u] = std::log(n_cu[c][u] * total / (n_c * n_u));
      EXPECT_NEAR(pmi_lib[c][u].item<double>(), pmi[c][u], 1e-12);
    }
  }
  for (const std::array<int64_t, 4> w :
       {std::array<int64_t, 4>{0, 1, 2, 3}, std::array<int64_t, 4>{5, 2, 4, 1},
        std::array<int64_t, 4>{3, 3, 0, 4}}) {
    const ErrorTerms e = error_terms(analogy_counts(n, w[0], w[1], w[2], w[3]), 1e-10);
    // The terms by their formulas, from the tensor.
    double n_w = 0, n_ws = 0, n_word[4] = {0, 0, 0, 0};
    std::vector<double> ncw(contexts), ncws(contexts);
    for (int64_t c = 0; c < contexts; ++c) {
      ncw[c] = t[c][w[0]][w[1]] + t[c][w[1]][w[0]];
      ncws[c] = t[c][w[2]][w[3]] + t[c][w[3]][w[2]];
      n_w += ncw[c];
      n_ws += ncws[c];
      for (int k = 0; k < 4; ++k) n_word[k] += n_cu[c][w[k]];
    }
    const double dtau = std::log(n_w * n_word[2] * n_word[3] / (n_ws * n_word[0] * n_word[1]));
    EXPECT_NEAR(e.dtau, dtau, 1e-12);
    for (int64_t c = 0; c < contexts; ++c) {
      const double rho = std::log(ncw[c] * n_ws / (ncws[c] * n_w));
      const double dsigma = std::log(ncw[c] / (n_cu[c][w[0]] * n_cu[c][w[1]])) -
                            std::log(ncws[c] / (n_cu[c][w[2]] * n_cu[c][w[3]]));
      EXPECT_NEAR(e.rho[c].item<double>(), rho, 1e-12);
      EXPECT_NEAR(e.dsigma[c].item<double>(), dsigma, 1e-12);
      const double pmi_error = pmi[c][w[0]] + pmi[c][w[1]] - pmi[c][w[2]] - pmi[c][w[3]];
      EXPECT_NEAR(e.rho[c].item<double>() - e.dsigma[c].item<double>() + e.dtau, pmi_error, 1e-12);
    }
  }
}

TEST(Paraphrase, ZeroRatiosFollowTheRepoConventions) {
  const double eps = 1e-10, le = std::log(eps);
  // Contexts: 0: W and W* unseen; 1: only W* seen; 2: only W seen; 3: W and W* seen.
  ParaphraseCounts a;
  a.pairs = torch::tensor({0.0, 0.0, 4.0, 2.0, 0.0, 3.0, 0.0, 1.0}, torch::kFloat64).view({2, 4});
  a.words = torch::tensor({0.0, 2.0, 5.0, 3.0,   // w1
                           1.0, 2.0, 4.0, 6.0,   // w2
                           2.0, 5.0, 0.0, 1.0,   // w3
                           2.0, 3.0, 1.0, 1.0},  // w4
                          torch::kFloat64)
                .view({4, 4});
  const ErrorTerms e = error_terms(a, eps);
  const double n_w = 6, n_ws = 4;
  EXPECT_EQ(e.rho[0].item<double>(), 0);
  EXPECT_NEAR(e.rho[1].item<double>(), le, 1e-12);
  EXPECT_NEAR(e.rho[2].item<double>(), -le, 1e-12);
  EXPECT_NEAR(e.rho[3].item<double>(), std::log(2 * n_ws / (1 * n_w)), 1e-12);
  // σ(W) − σ(W*): context 0: N(c;w1) = 0 → 0/0 for W, and N(c;w3)N(c;w4) > 0 with N(c;W*) = 0.
  EXPECT_NEAR(e.dsigma[0].item<double>(), 0 - le, 1e-12);
  EXPECT_NEAR(e.dsigma[1].item<double>(), le - std::log(3.0 / 15), 1e-12);
  EXPECT_NEAR(e.dsigma[2].item<double>(), std::log(4.0 / 20) - 0, 1e-12);
  EXPECT_NEAR(e.dsigma[3].item<double>(), std::log(2.0 / 18) - std::log(1.0 / 1), 1e-12);
  EXPECT_NEAR(e.dtau, std::log(n_w * 8 * 7 / (n_ws * 10 * 13)), 1e-12);
}

TEST(Paraphrase, TripleCountsMatchTheirDefinition) {
  // Short sentences over few words, so that repeated words ({u, u} pairs) are common.
  const WordCorpus corpus = random_corpus(12, 60, 9, 2, 3.0);
  const int64_t n = 9, window = 2;  // words 9..11 are not counted but keep their positions
  const Tensor3 t = brute_triples(corpus, n, window);
  const PairContextCounts table = count_pair_contexts(corpus, n, window);
  EXPECT_TRUE(std::is_sorted(table.keys.begin(), table.keys.end()));
  int64_t rows = 0, self_pairs = 0;
  for (int64_t u = 0; u < n; ++u) {
    for (int64_t v = u; v < n; ++v) {
      double total = 0;
      for (int64_t c = 0; c < n; ++c) total += t[c][u][v] + t[c][v][u];
      const int64_t row = table.find(u, v);
      ASSERT_EQ(row >= 0, total > 0) << u << " " << v;
      if (row < 0) continue;
      ++rows;
      self_pairs += u == v;
      EXPECT_EQ(row, table.find(v, u));
      const torch::Tensor dense = table.dense_row(row);
      for (int64_t c = 0; c < n; ++c) {
        EXPECT_EQ(dense[c].item<double>(), t[c][u][v] + t[c][v][u]) << c << " " << u << " " << v;
      }
    }
  }
  EXPECT_EQ(rows, table.rows());
  EXPECT_GT(self_pairs, 3);
  std::vector<int64_t> words(n);
  std::iota(words.begin(), words.end(), 0);
  std::reverse(words.begin(), words.end());
  const torch::Tensor n_cu = count_word_contexts(corpus, words, n, window);
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t c = 0; c < n; ++c) {
      double expected = 0;
      for (int64_t v = 0; v < n; ++v) expected += t[c][words[s]][v];
      EXPECT_EQ(n_cu[s][c].item<double>(), expected);
    }
  }
}

TEST(Paraphrase, EmbeddingLinearInPmiGivesPerfectLink) {
  torch::manual_seed(3);
  const int64_t n = 30, d = 8;
  const torch::Tensor observed = torch::rand({n, n}, torch::kFloat64) < 0.6;
  const torch::Tensor pmi = torch::randn({n, n}, torch::kFloat64) * observed;
  const torch::Tensor x = torch::randn({n, d}, torch::kFloat64);  // full column rank
  const torch::Tensor w = torch::mm(pmi, x);
  const torch::Tensor c = torch::linalg_pinv(x).t();  // so that pinv(C) = Xᵀ
  const LinearLinkReport r = linear_link(pmi, observed, w, c, false, true);
  EXPECT_NEAR(r.r_emb_median, 1, 1e-9);
  for (const double v : r.r_emb) EXPECT_NEAR(v, 1, 1e-9);
  EXPECT_EQ(r.r_emb_share_090, 1);
  EXPECT_EQ(r.r_emb_histogram.back(), n);
  EXPECT_NEAR(r.r2_fit, 1, 1e-9);
  EXPECT_NEAR(r.r2_link, 1, 1e-9);
}

TEST(Paraphrase, LinearLinkMatchesBruteForce) {
  torch::manual_seed(4);
  const int64_t n = 12, d = 3, v = 20;
  const torch::Tensor observed = torch::rand({n, n}, torch::kFloat64) < 0.5;
  const torch::Tensor pmi = torch::randn({n, n}, torch::kFloat64) * observed;
  const torch::Tensor w = torch::randn({n, d}, torch::kFloat64);
  const torch::Tensor c = torch::randn({v, d}, torch::kFloat64);
  for (const bool full_context : {false, true}) {
    for (const bool mask : {true, false}) {
      const LinearLinkReport r = linear_link(pmi, observed, w, c, full_context, mask);
      const torch::Tensor c_plus = full_context ? torch::linalg_pinv(c).slice(1, 0, n)
                                                : torch::linalg_pinv(c.slice(0, 0, n));
      std::vector<double> r_emb, r_pmi;
      std::vector<int64_t> histogram(20, 0);
      for (int64_t i = 0; i < n; ++i) {
        std::vector<double> wi, what, p, phat;
        for (int64_t k = 0; k < d; ++k) {
          double s = 0;
          for (int64_t j = 0; j < n; ++j)
            s += c_plus[k][j].item<double>() * pmi[i][j].item<double>();
          wi.push_back(w[i][k].item<double>());
          what.push_back(s);
        }
        for (int64_t j = 0; j < n; ++j) {
          if (mask && !observed[i][j].item<bool>()) continue;
          p.push_back(pmi[i][j].item<double>());
          double s = 0;
          for (int64_t k = 0; k < d; ++k) s += w[i][k].item<double>() * c[j][k].item<double>();
          phat.push_back(s);
        }
        r_emb.push_back(pearson(wi, what));
        r_pmi.push_back(pearson(p, phat));
        EXPECT_NEAR(r.r_emb[i], r_emb[i], 1e-10);
        EXPECT_NEAR(r.r_pmi[i], r_pmi[i], 1e-10);
        ++histogram[std::min<int64_t>(19, static_cast<int64_t>(std::floor((r_emb[i] + 1) * 10)))];
      }
      EXPECT_EQ(r.r_emb_histogram, histogram);
      std::vector<double> sorted = r_emb;
      std::sort(sorted.begin(), sorted.end());
      EXPECT_NEAR(r.r_emb_median, (sorted[n / 2 - 1] + sorted[n / 2]) / 2, 1e-12);
      EXPECT_NEAR(
          r.r_emb_share_090,
          std::count_if(r_emb.begin(), r_emb.end(), [](double x) { return x >= 0.9; }) / double(n),
          1e-12);
      // r2_link by its definition.
      const torch::Tensor w_hat = torch::mm(pmi, c_plus.t());
      const double ss_res = (w - w_hat).pow(2).sum().item<double>();
      const double ss_tot = (w - w.mean(0)).pow(2).sum().item<double>();
      EXPECT_NEAR(r.r2_link, 1 - ss_res / ss_tot, 1e-10);
    }
  }
}

TEST(Paraphrase, PmiBlockMatchesTheDirectFormula) {
  const WordCorpus corpus = random_corpus(15, 40, 8, 5, 3.0);
  const int64_t v = corpus.vocab.size(), n = 8, window = 2;
  std::vector<std::vector<double>> count(v, std::vector<double>(v, 0.0));
  for (int64_t s = 0; s < corpus.sentences(); ++s) {
    for (int64_t p = corpus.offsets[s]; p < corpus.offsets[s + 1]; ++p) {
      for (int64_t q = corpus.offsets[s]; q < corpus.offsets[s + 1]; ++q) {
        if (p != q && std::abs(p - q) <= window) count[corpus.tokens[p]][corpus.tokens[q]] += 1;
      }
    }
  }
  std::vector<double> n_w(v, 0.0), n_c(v, 0.0);
  double total = 0;
  for (int64_t a = 0; a < v; ++a) {
    for (int64_t b = 0; b < v; ++b) {
      n_w[a] += count[a][b];
      n_c[b] += count[a][b];
      total += count[a][b];
    }
  }
  const PmiBlock block = pmi_block(corpus, n, window);
  for (int64_t a = 0; a < n; ++a) {
    for (int64_t b = 0; b < n; ++b) {
      EXPECT_EQ(block.observed[a][b].item<bool>(), count[a][b] > 0);
      const double expected =
          count[a][b] > 0 ? std::log(count[a][b] * total / (n_w[a] * n_c[b])) : 0.0;
      EXPECT_NEAR(block.pmi[a][b].item<double>(), expected, 1e-12);
    }
  }
}

// Ranks of W* by brute force over dense r vectors of every {u <= v}; returns the range of ranks
// that distances within 1e-9 of the W*'s allow.
std::pair<int64_t, int64_t> brute_rank(const Tensor3& t, int64_t n, std::array<int64_t, 2> w,
                                       std::array<int64_t, 2> ws, Closeness closeness) {
  const auto r = [&](int64_t u, int64_t v) {
    std::vector<double> out(n, 0.0);
    double total = 0;
    for (int64_t c = 0; c < n; ++c) total += t[c][u][v] + t[c][v][u];
    for (int64_t c = 0; c < n; ++c) {
      const double x = t[c][u][v] + t[c][v][u];
      if (x > 0) out[c] = std::log(x / total);
    }
    return std::pair{out, total};
  };
  const auto dist = [&](const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (int64_t c = 0; c < n; ++c) s += (a[c] - b[c]) * (a[c] - b[c]);
    return std::sqrt(s);
  };
  const auto rw = r(w[0], w[1]).first;
  const double target = dist(r(ws[0], ws[1]).first, rw);
  int64_t sure = 0, maybe = 0;
  for (int64_t u = 0; u < n; ++u) {
    for (int64_t v = u; v < n; ++v) {
      const auto [ru, total] = r(u, v);
      const bool is_w = std::minmax(w[0], w[1]) == std::minmax(u, v);
      const bool is_ws = std::minmax(ws[0], ws[1]) == std::minmax(u, v);
      if (is_w || is_ws) continue;
      if (total == 0 && closeness == Closeness::kIncreasing) continue;
      const double d = dist(ru, rw);
      const double ahead = closeness == Closeness::kIncreasing ? target - d : d - target;
      sure += ahead > 1e-9;
      maybe += ahead > -1e-9;
    }
  }
  return {1 + sure, 1 + maybe};
}

TEST(Paraphrase, ClosenessRanksMatchBruteForce) {
  const WordCorpus corpus = random_corpus(14, 50, 8, 6, 3.0);
  const int64_t n = 12, window = 2;
  const Tensor3 t = brute_triples(corpus, n, window);
  const PairContextCounts table = count_pair_contexts(corpus, n, window);
  ASSERT_GT(table.rows(), 40);
  // 150 queries: more than one block of 64.
  std::mt19937_64 rng(7);
  std::vector<std::pair<int64_t, int64_t>> queries;
  while (queries.size() < 150) {
    const int64_t a = rng() % table.rows(), b = rng() % table.rows();
    if (a != b) queries.emplace_back(a, b);
  }
  const auto words = [&](int64_t row) {
    return std::array<int64_t, 2>{table.keys[row] % n, table.keys[row] / n};
  };
  for (const Closeness closeness : {Closeness::kIncreasing, Closeness::kNotebook}) {
    const std::vector<int64_t> ranks = closeness_ranks(table, queries, closeness);
    ASSERT_EQ(ranks.size(), queries.size());
    int64_t far = 0;
    for (size_t q = 0; q < queries.size(); ++q) {
      const auto [lo, hi] =
          brute_rank(t, n, words(queries[q].first), words(queries[q].second), closeness);
      EXPECT_GE(ranks[q], lo) << q;
      EXPECT_LE(ranks[q], hi) << q;
      far += ranks[q] > 10;
    }
    EXPECT_GT(far, 10);  // not all trivially near the top
  }
}

TEST(Paraphrase, ReportMatchesBruteForceOnASmallCorpus) {
  const WordCorpus corpus = random_corpus(16, 40, 10, 8, 3.0);
  const int64_t v = corpus.vocab.size();
  ParaphraseOptions o;
  o.n_pmi = 6;
  o.n_tri = 12;
  o.window = 2;
  const int64_t n = o.n_tri;
  // Two categories of (source, target) ids; -1 is a word absent from the corpus, 13..15 are
  // outside the n_tri words.
  const std::vector<std::pair<std::string, std::vector<std::pair<int64_t, int64_t>>>> categories{
      {"first", {{0, 3}, {1, 4}, {2, 5}, {6, 7}, {8, 9}, {10, -1}}},
      {"second", {{3, 1}, {5, 0}, {7, 2}, {9, 13}, {11, 4}}}};
  torch::manual_seed(9);
  const torch::Tensor w = torch::randn({v, 4}, torch::kFloat64);
  const torch::Tensor c = torch::randn({v, 4}, torch::kFloat64);
  const Tensor3 t = brute_triples(corpus, n, o.window);
  const torch::Tensor dense = to_tensor(t);
  for (const Closeness closeness : {Closeness::kIncreasing, Closeness::kNotebook}) {
    o.closeness = closeness;
    const ParaphraseReport report = paraphrase_test(corpus, w, c, categories, o);
    ASSERT_EQ(report.categories.size(), 2u);
    EXPECT_EQ(report.link.words, 6);
    int64_t kept_total = 0;
    for (size_t k = 0; k < categories.size(); ++k) {
      const auto& pairs = categories[k].second;
      const CategoryParaphrase& cat = report.categories[k];
      EXPECT_EQ(cat.name, categories[k].first);
      int64_t cooccur = 0, never = 0, absent = 0, analogies = 0;
      std::vector<double> rho_l1, dep_l2, total_l2, repo_l1, rank_lo, rank_hi;
      for (size_t i = 0; i < pairs.size(); ++i) {
        for (size_t j = 0; j < pairs.size(); ++j) {
          if (i == j) continue;
          const int64_t a = pairs[i].first, b = pairs[j].second;
          if (a < 0 || b < 0) {
            ++absent;
          } else {
            ++(brute_cooccur(corpus, a, b, o.window) ? cooccur : never);
          }
          if (j < i) continue;
          ++analogies;
          const std::array<int64_t, 4> x{pairs[i].first, pairs[j].second, pairs[i].second,
                                         pairs[j].first};
          if (!std::all_of(x.begin(), x.end(), [&](int64_t y) { return y >= 0 && y < n; })) {
            continue;
          }
          if (!brute_cooccur(corpus, x[0], x[1], o.window) ||
              !brute_cooccur(corpus, x[2], x[3], o.window)) {
            continue;
          }
          const ParaphraseCounts counts = analogy_counts(dense, x[0], x[1], x[2], x[3]);
          if (counts.pairs[0].sum().item<double>() == 0 ||
              counts.pairs[1].sum().item<double>() == 0 ||
              std::minmax(x[0], x[1]) == std::minmax(x[2], x[3])) {
            continue;
          }
          const ErrorTerms e = error_terms(counts, o.epsilon);
          const torch::Tensor dep = e.dsigma - e.dtau;
          rho_l1.push_back(e.rho.abs().sum().item<double>());
          dep_l2.push_back(dep.norm().item<double>());
          total_l2.push_back((e.rho - dep).norm().item<double>());
          repo_l1.push_back((e.rho + dep).abs().sum().item<double>());
          const auto [lo, hi] = brute_rank(t, n, {x[0], x[1]}, {x[2], x[3]}, closeness);
          rank_lo.push_back(lo);
          rank_hi.push_back(hi);
        }
      }
      EXPECT_EQ(cat.paraphrases, int64_t(pairs.size() * (pairs.size() - 1)));
      EXPECT_EQ(cat.cooccur, cooccur);
      EXPECT_EQ(cat.never, never);
      EXPECT_EQ(cat.absent, absent);
      EXPECT_EQ(cat.analogies, analogies);
      ASSERT_EQ(cat.kept, int64_t(rho_l1.size()));
      ASSERT_EQ(cat.ranks.size(), rho_l1.size());
      kept_total += cat.kept;
      const auto mean = [](const std::vector<double>& x) {
        return std::accumulate(x.begin(), x.end(), 0.0) / double(x.size());
      };
      if (cat.kept == 0) continue;
      EXPECT_NEAR(cat.rho_l1.mean, mean(rho_l1), 1e-9);
      EXPECT_NEAR(cat.dependence_l2.mean, mean(dep_l2), 1e-9);
      EXPECT_NEAR(cat.total_l2.mean, mean(total_l2), 1e-9);
      EXPECT_NEAR(cat.repo_total_l1.mean, mean(repo_l1), 1e-9);
      for (size_t q = 0; q < rank_lo.size(); ++q) {
        EXPECT_GE(cat.ranks[q], rank_lo[q]);
        EXPECT_LE(cat.ranks[q], rank_hi[q]);
      }
    }
    EXPECT_GE(kept_total, 5);
    EXPECT_GT(report.categories[0].never + report.categories[1].never, 0);
  }
}

TEST(Paraphrase, RejectsBadInputs) {
  const WordCorpus corpus = random_corpus(10, 10, 5, 10, 3.0);
  const torch::Tensor w = torch::zeros({10, 2}, torch::kFloat64);
  ParaphraseOptions o;
  EXPECT_THROW(paraphrase_test(corpus, w, torch::zeros({9, 2}, torch::kFloat64), {}, o),
               ConfigError);
  EXPECT_THROW(paraphrase_test(corpus, w, w, {{"x", {{0, 10}}}}, o), ConfigError);
  o.window = 0;
  EXPECT_THROW(paraphrase_test(corpus, w, w, {}, o), ConfigError);
}

}  // namespace
}  // namespace desync
