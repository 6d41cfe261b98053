#include "desync/embeddings/ppmi_svd.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/embeddings/cooccurrence.h"
#include "embeddings/corpora.h"

namespace desync {
namespace {

using testing::make_corpus;
using testing::random_corpus;

// N(w, c) by the definition: every ordered pair of positions at distance 1..L.
std::vector<std::vector<double>> brute_counts(const WordCorpus& corpus, int64_t window,
                                              WindowWeight weight, int64_t vocab_size) {
  std::vector<std::vector<double>> n(vocab_size, std::vector<double>(vocab_size, 0.0));
  for (int64_t s = 0; s < corpus.sentences(); ++s) {
    for (int64_t p = corpus.offsets[s]; p < corpus.offsets[s + 1]; ++p) {
      for (int64_t q = corpus.offsets[s]; q < corpus.offsets[s + 1]; ++q) {
        const int64_t d = std::abs(p - q);
        const int64_t w = corpus.tokens[p], c = corpus.tokens[q];
        if (d < 1 || d > window || w >= vocab_size || c >= vocab_size) continue;
        n[w][c] += weight == WindowWeight::kUniform ? 1.0 : double(window - d + 1) / window;
      }
    }
  }
  return n;
}

void expect_sorted_and_positive(const CooccurrenceCounts& counts) {
  ASSERT_EQ(counts.keys.size(), counts.counts.size());
  for (size_t i = 0; i < counts.keys.size(); ++i) {
    if (i > 0) {
      EXPECT_LT(counts.keys[i - 1], counts.keys[i]);
    }
    EXPECT_GT(counts.counts[i], 0);
  }
}

TEST(Cooccurrence, CountsMatchBruteForceForBothWeights) {
  const WordCorpus corpus = random_corpus(30, 60, 12, 1, 2.0);
  const int64_t vocab_size = 22;  // the other words are skipped but keep their positions
  for (const WindowWeight weight : {WindowWeight::kUniform, WindowWeight::kWord2vec}) {
    const auto expected = brute_counts(corpus, 3, weight, vocab_size);
    const CooccurrenceCounts counts =
        count_cooccurrences(corpus, 0, corpus.sentences(), 3, weight, vocab_size);
    expect_sorted_and_positive(counts);
    std::vector<std::vector<double>> got(vocab_size, std::vector<double>(vocab_size, 0.0));
    for (int64_t i = 0; i < counts.size(); ++i) {
      got[counts.keys[i] / vocab_size][counts.keys[i] % vocab_size] = counts.counts[i];
    }
    for (int64_t w = 0; w < vocab_size; ++w) {
      for (int64_t c = 0; c < vocab_size; ++c) EXPECT_NEAR(got[w][c], expected[w][c], 1e-12);
    }
  }
}

TEST(Cooccurrence, MergedShardsEqualTheWholeCorpus) {
  const WordCorpus corpus = random_corpus(25, 50, 10, 2, 2.0);
  const int64_t v = corpus.vocab.size(), s = corpus.sentences(), ranks = 3;
  for (const WindowWeight weight : {WindowWeight::kUniform, WindowWeight::kWord2vec}) {
    std::vector<CooccurrenceCounts> parts;
    for (int64_t r = 0; r < ranks; ++r) {
      parts.push_back(
          count_cooccurrences(corpus, r * s / ranks, (r + 1) * s / ranks, 4, weight, v));
    }
    const CooccurrenceCounts merged = merge_counts(parts);
    const CooccurrenceCounts whole = count_cooccurrences(corpus, 0, s, 4, weight, v);
    expect_sorted_and_positive(merged);
    ASSERT_EQ(merged.keys, whole.keys);
    for (int64_t i = 0; i < whole.size(); ++i) {
      if (weight == WindowWeight::kUniform) {
        EXPECT_EQ(merged.counts[i], whole.counts[i]);
      } else {
        EXPECT_NEAR(merged.counts[i], whole.counts[i], 1e-12);
      }
    }
  }
  CooccurrenceCounts bad;
  bad.keys = {3, 2};
  bad.counts = {1, 1};
  EXPECT_THROW(merge_counts({bad}), DataError);
  EXPECT_THROW(count_cooccurrences(corpus, 0, s + 1, 4, WindowWeight::kUniform, v), ConfigError);
}

TEST(Ppmi, SppmiMatchesThePerEntryFormula) {
  const WordCorpus corpus = random_corpus(40, 80, 10, 3, 2.0);
  const int64_t v = corpus.vocab.size();
  const CooccurrenceCounts counts =
      count_cooccurrences(corpus, 0, corpus.sentences(), 2, WindowWeight::kUniform, v);
  const auto n = brute_counts(corpus, 2, WindowWeight::kUniform, v);
  for (const auto& [alpha, k_shift] : {std::pair{0.75, 2.0}, std::pair{0.5, 0.5}}) {
    PpmiOptions o;
    o.alpha = alpha;
    o.k_shift = k_shift;
    const torch::Tensor m = sppmi_matrix(counts, v, o);
    ASSERT_EQ(m.layout(), torch::kSparseCsr);
    const auto dense = m.to_dense();
    const auto got = dense.accessor<double, 2>();
    std::vector<double> n_w(v, 0.0), n_c(v, 0.0);
    double smoothed = 0;
    for (int64_t w = 0; w < v; ++w) {
      for (int64_t c = 0; c < v; ++c) {
        n_w[w] += n[w][c];
        n_c[c] += n[w][c];
      }
    }
    for (int64_t c = 0; c < v; ++c) smoothed += std::pow(n_c[c], alpha);
    int64_t positive = 0;
    for (int64_t w = 0; w < v; ++w) {
      for (int64_t c = 0; c < v; ++c) {
        double expected = 0;
        if (n[w][c] > 0) {
          const double p_alpha = std::pow(n_c[c], alpha) / smoothed;
          expected = std::max(std::log(n[w][c] / (n_w[w] * p_alpha)) - std::log(k_shift), 0.0);
        }
        positive += expected > 0;
        EXPECT_NEAR(got[w][c], expected, 1e-12) << w << " " << c;
      }
    }
    EXPECT_GT(positive, 100);
    EXPECT_EQ(m.values().numel(), positive);  // only the positive entries are stored
  }
}

TEST(Ppmi, RandomizedSvdMatchesTheExactTopSingularValues) {
  // 300 words in 20 topics of 15; a sentence draws its words from one topic, 1 in 20 from
  // anywhere. Topics give SPPMI a gap after σ_20 (σ_31/σ_20 < 0.3), which the spec's sketch
  // (d + 10 columns, 4 power iterations) needs to reach 1e-6; an unstructured Zipf corpus has a
  // flat spectrum, where no sketch of 30 columns comes within 1e-2.
  std::mt19937_64 rng(4);
  const int64_t v = 300, topics = 20, per_topic = v / topics;
  std::vector<std::vector<int32_t>> sentences;
  for (int64_t s = 0; s < 4000; ++s) {
    const int64_t topic = rng() % topics, length = 5 + rng() % 10;
    std::vector<int32_t> sentence;
    for (int64_t i = 0; i < length; ++i) {
      sentence.push_back(static_cast<int32_t>(
          rng() % 20 == 0 ? rng() % v : topic * per_topic + rng() % per_topic));
    }
    sentences.push_back(sentence);
  }
  for (int32_t w = 0; w < v; ++w) sentences[w].push_back(w);
  const WordCorpus corpus = make_corpus(sentences, v);
  const torch::Tensor m = sppmi_matrix(
      count_cooccurrences(corpus, 0, corpus.sentences(), 5, WindowWeight::kUniform, v), v, {});
  const torch::Tensor all = torch::linalg_svdvals(m.to_dense());
  const torch::Tensor exact = all.slice(0, 0, 20);
  ASSERT_LT((all[30] / all[19]).item<double>(), 0.3);
  for (const torch::Tensor& input : {m, m.to_dense(), m.to_sparse()}) {
    const Svd svd = randomized_svd(input, 20, 10, 4, 7);
    ASSERT_EQ(svd.s.size(0), 20);
    const double rel = ((svd.s - exact).abs() / exact).max().item<double>();
    EXPECT_LT(rel, 1e-6);
    EXPECT_TRUE(
        torch::allclose(torch::mm(svd.u.t(), svd.u), torch::eye(20, torch::kFloat64), 0, 1e-10));
    EXPECT_TRUE(
        torch::allclose(torch::mm(svd.v.t(), svd.v), torch::eye(20, torch::kFloat64), 0, 1e-10));
    // The leading triplet: m·v_1 = s_1·u_1.
    const torch::Tensor mv = torch::mm(m.to_dense(), svd.v.slice(1, 0, 1));
    EXPECT_LT((mv - svd.s[0] * svd.u.slice(1, 0, 1)).norm().item<double>(),
              1e-6 * svd.s[0].item<double>());
  }
  // The same seed gives the same factors.
  EXPECT_TRUE(torch::equal(randomized_svd(m, 20, 10, 4, 7).u, randomized_svd(m, 20, 10, 4, 7).u));
}

TEST(Ppmi, EmbeddingsAreUTimesSigmaToThePowerP) {
  const WordCorpus corpus = random_corpus(40, 200, 10, 5, 2.0);
  const int64_t v = corpus.vocab.size();
  const CooccurrenceCounts counts =
      count_cooccurrences(corpus, 0, corpus.sentences(), 3, WindowWeight::kUniform, v);
  PpmiOptions o;
  o.dim = 6;
  o.oversample = v;  // the sketch spans the whole range: the SVD is exact
  const torch::Tensor dense = sppmi_matrix(counts, v, o).to_dense();
  auto [u, s, vh] = torch::linalg_svd(dense, false);
  const torch::Tensor u_d = u.slice(1, 0, o.dim), s_d = s.slice(0, 0, o.dim);
  ASSERT_GT((s[o.dim - 1] - s[o.dim]).item<double>(), 1e-6);  // the rank-d subspace is unique
  for (const double power : {0.5, 1.0, 0.0}) {
    o.power = power;
    const torch::Tensor w = ppmi_svd_embeddings(counts, v, o);
    ASSERT_EQ(w.sizes(), (std::vector<int64_t>{v, o.dim}));
    // W·Wᵀ = U_d·Σ_d^(2p)·U_dᵀ does not depend on the signs of the singular vectors.
    const torch::Tensor expected = torch::mm(u_d * s_d.pow(2 * power), u_d.t());
    EXPECT_TRUE(torch::allclose(torch::mm(w, w.t()), expected, 1e-8, 1e-8)) << power;
  }
}

TEST(Ppmi, PlantedGroupsSeparate) {
  // 4 groups of 6 words; every sentence mixes 5 words of one group with 2 shared words.
  std::mt19937_64 rng(6);
  const int64_t groups = 4, size = 6, shared = 2;
  std::vector<std::vector<int32_t>> sentences;
  for (int64_t s = 0; s < 2000; ++s) {
    const int64_t g = s % groups;
    std::vector<int32_t> sentence;
    for (int64_t i = 0; i < 5; ++i) {
      sentence.push_back(static_cast<int32_t>(shared + g * size + rng() % size));
    }
    for (int64_t i = 0; i < shared; ++i) {
      sentence.insert(sentence.begin() + rng() % sentence.size(), static_cast<int32_t>(i));
    }
    sentences.push_back(sentence);
  }
  const int64_t v = shared + groups * size;
  const WordCorpus corpus = make_corpus(sentences, v);
  const auto group_of = [&](int64_t id) {  // planted group of a (relabelled) id, or -1
    const int64_t original = std::stoll(corpus.vocab.word(id).substr(1));
    return original < shared ? -1 : (original - shared) / size;
  };
  PpmiOptions o;
  o.dim = 4;
  const torch::Tensor w = ppmi_svd_embeddings(
      count_cooccurrences(corpus, 0, corpus.sentences(), 5, WindowWeight::kUniform, v), v, o);
  const torch::Tensor unit = w / w.norm(2, 1, true);
  const torch::Tensor gram = torch::mm(unit, unit.t());
  const auto cos = gram.accessor<double, 2>();
  double within = 1, between = -1;
  for (int64_t a = 0; a < v; ++a) {
    for (int64_t b = a + 1; b < v; ++b) {
      if (group_of(a) < 0 || group_of(b) < 0) continue;
      if (group_of(a) == group_of(b)) {
        within = std::min(within, cos[a][b]);
      } else {
        between = std::max(between, cos[a][b]);
      }
    }
  }
  EXPECT_GT(within, 0.9);
  EXPECT_LT(between, 0.3);
}

}  // namespace
}  // namespace desync
