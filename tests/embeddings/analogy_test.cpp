// Tests of the analogy test (3CosAdd, 3CosMul) and the 3CosAdd decompositions, against
// plain-loop computations of the spec's formulas on synthetic vectors.
#include "desync/embeddings/analogy.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "desync/core/error.h"

namespace desync {
namespace {

using Vec = std::vector<double>;

EmbeddingSpace space_of(const torch::Tensor& vectors) {
  std::vector<std::string> words;
  for (int64_t i = 0; i < vectors.size(0); ++i) words.push_back(std::to_string(i));
  return make_space(std::move(words), vectors);
}

// The rows of `v` as float64 vectors.
std::vector<Vec> rows_of(const torch::Tensor& v) {
  const torch::Tensor d = v.to(torch::kFloat64).contiguous();
  std::vector<Vec> rows(d.size(0));
  for (int64_t i = 0; i < d.size(0); ++i) {
    rows[i].assign(d[i].data_ptr<double>(), d[i].data_ptr<double>() + d.size(1));
  }
  return rows;
}

double dot(const Vec& x, const Vec& y) {
  double s = 0;
  for (size_t k = 0; k < x.size(); ++k) s += x[k] * y[k];
  return s;
}
double norm(const Vec& x) { return std::sqrt(dot(x, x)); }
Vec axpy(double alpha, const Vec& x, const Vec& y) {  // alpha·x + y
  Vec r(y);
  for (size_t k = 0; k < x.size(); ++k) r[k] += alpha * x[k];
  return r;
}
Vec unit(const Vec& x) { return axpy(1 / norm(x) - 1, x, x); }

RowPairs pairs_of(std::vector<int64_t> source, std::vector<int64_t> target) {
  RowPairs p;
  p.source = std::move(source);
  p.target = std::move(target);
  return p;
}

// One question's predictions by a loop over every candidate (a strict > keeps the lower row).
struct Predictions {
  int64_t standard = -1, honest = -1;
  bool tie = false;  // several candidates share the honest or the standard maximum
};
Predictions brute_force(const std::vector<Vec>& unit_rows, int64_t n_candidates, int64_t a,
                        int64_t a_star, int64_t b, bool cosmul, double eps) {
  const Vec& ua = unit_rows[a];
  const Vec& ua_star = unit_rows[a_star];
  const Vec& ub = unit_rows[b];
  const Vec q = axpy(1, ub, axpy(-1, ua, ua_star));
  const double q_norm = norm(q);
  const auto c = [](const Vec& x, const Vec& y) { return (1 + dot(x, y)) / 2; };
  Predictions p;
  double best_honest = -std::numeric_limits<double>::infinity(), best_standard = best_honest;
  for (int64_t x = 0; x < n_candidates; ++x) {
    const Vec& ux = unit_rows[x];
    const double score =
        cosmul ? c(ux, ua_star) * c(ux, ub) / (c(ux, ua) + eps) : dot(ux, q) / q_norm;
    if (score == best_honest) p.tie = true;
    if (score > best_honest) best_honest = score, p.honest = x;
    if (x == a || x == a_star || x == b) continue;
    if (score == best_standard) p.tie = true;
    if (score > best_standard) best_standard = score, p.standard = x;
  }
  return p;
}

// Runs analogy_test with predictions kept and checks each question's predictions and the
// counts against brute_force. Returns the number of questions that had a tie.
int64_t expect_matches_brute_force(const EmbeddingSpace& space, const RowPairs& pairs,
                                   const AnalogyOptions& options) {
  const AnalogyResult r = analogy_test(space, pairs, options);
  const std::vector<Vec> unit_rows = rows_of(space.vectors);
  std::vector<Vec> u;
  for (const Vec& v : unit_rows) u.push_back(unit(v));
  const int64_t n_candidates = std::min<int64_t>(options.restrict_vocab, space.size());
  int64_t ties = 0;
  for (const bool cosmul : {false, true}) {
    const AnalogyCounts& got = cosmul ? r.mul : r.add;
    AnalogyCounts want;
    int64_t k = 0;
    for (int64_t i = 0; i < pairs.size(); ++i) {
      for (int64_t j = 0; j < pairs.size(); ++j) {
        const int64_t a = pairs.source[i], a_star = pairs.target[i];
        const int64_t b = pairs.source[j], b_star = pairs.target[j];
        if (a == b) continue;
        if (std::max({a, a_star, b, b_star}) >= n_candidates) {
          ++want.oov;
          continue;
        }
        const Predictions p =
            brute_force(u, n_candidates, a, a_star, b, cosmul, options.cosmul_eps);
        ties += p.tie;
        ++want.questions;
        want.standard += p.standard == b_star;
        want.honest += p.honest == b_star;
        want.honest_a += p.honest == a;
        want.honest_a_star += p.honest == a_star;
        want.honest_b += p.honest == b;
        if (k < static_cast<int64_t>(got.honest_rows.size())) {
          EXPECT_EQ(got.honest_rows[k], p.honest) << "cosmul " << cosmul << " question " << k;
          EXPECT_EQ(got.standard_rows[k], p.standard) << "cosmul " << cosmul << " question " << k;
        }
        ++k;
      }
    }
    EXPECT_EQ(static_cast<int64_t>(got.honest_rows.size()), want.questions);
    EXPECT_EQ(static_cast<int64_t>(got.standard_rows.size()), want.questions);
    EXPECT_EQ(got.questions, want.questions) << "cosmul " << cosmul;
    EXPECT_EQ(got.oov, want.oov) << "cosmul " << cosmul;
    EXPECT_EQ(got.standard, want.standard) << "cosmul " << cosmul;
    EXPECT_EQ(got.honest, want.honest) << "cosmul " << cosmul;
    EXPECT_EQ(got.honest_a, want.honest_a) << "cosmul " << cosmul;
    EXPECT_EQ(got.honest_a_star, want.honest_a_star) << "cosmul " << cosmul;
    EXPECT_EQ(got.honest_b, want.honest_b) << "cosmul " << cosmul;
  }
  return ties;
}

// Random pairs (s != t) over rows [0, rows), with repeated words across pairs.
RowPairs random_pairs(int64_t n, int64_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, rows - 1);
  RowPairs p;
  while (p.size() < n) {
    const int64_t s = pick(rng), t = pick(rng);
    if (s == t) continue;
    p.source.push_back(s);
    p.target.push_back(t);
  }
  return p;
}

// Rows: 1000 Gaussian distractors, then the sources, then the targets; pairs (s_i, t_i).
constexpr int64_t kDistractors = 1000;
RowPairs planted_pairs(int64_t n) {
  RowPairs pairs;
  for (int64_t i = 0; i < n; ++i) {
    pairs.source.push_back(kDistractors + i);
    pairs.target.push_back(kDistractors + n + i);
  }
  return pairs;
}
torch::Tensor planted_vectors(const torch::Tensor& s, const torch::Tensor& t) {
  return torch::cat({torch::randn({kDistractors, s.size(1)}, s.options()), s, t});
}

// Spec §6 test 1: t_i = s_i + o (float32, as real files).
TEST(AnalogyTest, PlantedOffsetGivesPerfectStandardAndHonest3CosAdd) {
  torch::manual_seed(1);
  const int64_t n = 50, d = 300;
  const torch::Tensor s = torch::randn({n, d});
  const torch::Tensor v = planted_vectors(s, s + torch::randn({1, d}));
  const AnalogyCounts add = analogy_test(space_of(v), planted_pairs(n)).add;
  EXPECT_EQ(add.questions, n * (n - 1));
  EXPECT_EQ(add.oov, 0);
  EXPECT_EQ(add.standard, add.questions);
  EXPECT_EQ(add.honest, add.questions);
  EXPECT_EQ(add.honest_b, 0);
}

// Spec §6 test 6: t_i = s_i + 0.01·noise: the honest prediction is always b, while the
// standard test, which excludes b, finds b* (nearness alone).
TEST(AnalogyTest, NearIdentityPairsHonestPicksBStandardPerfect) {
  torch::manual_seed(2);
  const int64_t n = 50, d = 300;
  const torch::Tensor s = torch::randn({n, d});
  const torch::Tensor v = planted_vectors(s, s + 0.01 * torch::randn({n, d}));
  const AnalogyCounts add = analogy_test(space_of(v), planted_pairs(n)).add;
  EXPECT_EQ(add.questions, n * (n - 1));
  EXPECT_EQ(add.honest, 0);
  EXPECT_EQ(add.honest_b, add.questions);
  EXPECT_EQ(add.honest_a, 0);
  EXPECT_EQ(add.honest_a_star, 0);
  EXPECT_EQ(add.standard, add.questions);
}

// Gaussian vectors, pairs sharing words (so a* = b, b* = a and the like occur), candidates
// restricted below V, several chunk sizes, and an ε large enough to change 3CosMul's ranking;
// the last rows are near-antipodes of pair words (ĉ(x, a) ≈ 0, where ε matters most).
TEST(AnalogyTest, BothMethodsMatchBruteForceOnGaussianVectors) {
  torch::manual_seed(3);
  const int64_t v_size = 48, d = 6;
  torch::Tensor v = torch::randn({v_size, d}, torch::kFloat64);
  const RowPairs pairs = random_pairs(14, 40, 7);
  for (int64_t k = 0; k < 4; ++k) {
    v[40 + k] = -v[pairs.source[k]] + 1e-3 * torch::randn({d}, torch::kFloat64);
  }
  const EmbeddingSpace space = space_of(v);
  for (const double eps : {1e-3, 0.3}) {
    for (const int64_t chunk : {1, 7, 256}) {
      for (const int64_t restrict_vocab : {int64_t{48}, int64_t{35}}) {
        AnalogyOptions options;
        options.cosmul_eps = eps;
        options.chunk = chunk;
        options.restrict_vocab = restrict_vocab;
        options.keep_predictions = true;
        SCOPED_TRACE("eps " + std::to_string(eps) + " chunk " + std::to_string(chunk) +
                     " restrict_vocab " + std::to_string(restrict_vocab));
        expect_matches_brute_force(space, pairs, options);
      }
    }
  }
}

// Unit vectors whose dot products are exact (±e_k, or ±1/2 on four coordinates), with every
// word present twice: scores tie exactly, and the lower row must win, as in the brute force.
TEST(AnalogyTest, BothMethodsMatchBruteForceWithExactTies) {
  std::mt19937 rng(11);
  const int64_t d = 8, distinct = 30;
  torch::Tensor base = torch::zeros({distinct, d}, torch::kFloat64);
  for (int64_t w = 0; w < distinct; ++w) {
    std::vector<int64_t> coords(d);
    for (int64_t k = 0; k < d; ++k) coords[k] = k;
    std::shuffle(coords.begin(), coords.end(), rng);
    const bool axis = rng() % 3 == 0;
    for (int64_t k = 0; k < (axis ? 1 : 4); ++k) {
      base[w][coords[k]] = (rng() % 2 ? 1.0 : -1.0) * (axis ? 1.0 : 0.5);
    }
  }
  // Rows 0..29 and 30..59 hold the same words, in different orders.
  std::vector<int64_t> perm(distinct);
  for (int64_t k = 0; k < distinct; ++k) perm[k] = k;
  std::shuffle(perm.begin(), perm.end(), rng);
  const torch::Tensor v = torch::cat({base, base.index_select(0, torch::tensor(perm))});
  const EmbeddingSpace space = space_of(v);
  ASSERT_TRUE(torch::equal(space.unit, v));  // exact unit rows
  const RowPairs pairs = random_pairs(16, 2 * distinct, 5);
  AnalogyOptions options;
  options.keep_predictions = true;
  options.chunk = 9;
  const int64_t ties = expect_matches_brute_force(space, pairs, options);
  EXPECT_GT(ties, 100);  // the tie-breaking is exercised
}

// A hand-made tie: rows 4 and 6 hold the same best answer; the lower row is predicted.
TEST(AnalogyTest, TiesGoToTheLowerRow) {
  const torch::Tensor v = torch::tensor({{0.0, 0.0, 0.0, 1.0},    // 0
                                         {1.0, 0.0, 0.0, 0.0},    // 1: a
                                         {0.0, 1.0, 0.0, 0.0},    // 2: a*
                                         {0.0, 0.0, 1.0, 0.0},    // 3: b
                                         {-0.5, 0.5, 0.5, 0.5},   // 4: the best answer
                                         {0.0, 0.0, 0.0, -1.0},   // 5
                                         {-0.5, 0.5, 0.5, 0.5}},  // 6: the same
                                        torch::kFloat64);
  const EmbeddingSpace space = space_of(v);
  AnalogyOptions options;
  options.keep_predictions = true;
  for (const int64_t b_star : {int64_t{4}, int64_t{6}}) {
    const AnalogyResult r = analogy_test(space, pairs_of({1, 3}, {2, b_star}), options);
    for (const AnalogyCounts* c : {&r.add, &r.mul}) {
      ASSERT_EQ(c->questions, 2);
      EXPECT_EQ(c->honest_rows[0], 4);  // question (a, a*, b) = (1, 2, 3)
      EXPECT_EQ(c->standard_rows[0], 4);
    }
  }
}

TEST(AnalogyTest, OovAndSameSourceQuestions) {
  torch::manual_seed(4);
  const EmbeddingSpace space = space_of(torch::randn({20, 5}, torch::kFloat64));
  // Pairs (k, 10 + k): with restrict_vocab 15 the pairs k < 5 are inside, the others have a
  // target outside; a question is scored only if both of its pairs are inside.
  RowPairs pairs;
  for (int64_t k = 0; k < 10; ++k) {
    pairs.source.push_back(k);
    pairs.target.push_back(10 + k);
  }
  AnalogyOptions options;
  options.restrict_vocab = 15;
  AnalogyResult r = analogy_test(space, pairs, options);
  EXPECT_EQ(r.add.questions, 5 * 4);
  EXPECT_EQ(r.add.oov, 10 * 9 - 5 * 4);
  EXPECT_EQ(r.mul.questions, r.add.questions);
  EXPECT_EQ(r.mul.oov, r.add.oov);
  // Pair 0's target (19) is the only word outside: the questions answering 19 (b*) are OOV,
  // like those asked from pair 0 (a* = 19).
  pairs = pairs_of({0, 1, 2}, {19, 11, 12});
  r = analogy_test(space, pairs, options);
  EXPECT_EQ(r.add.questions, 2);  // (1, 2) and (2, 1)
  EXPECT_EQ(r.add.oov, 4);
  // restrict_vocab beyond V means every row.
  options.restrict_vocab = 1000;
  EXPECT_EQ(analogy_test(space, pairs, options).add.questions, 6);
  // Pairs sharing a source give no question together, and are not OOV.
  r = analogy_test(space, pairs_of({0, 0, 1}, {10, 11, 12}));
  EXPECT_EQ(r.add.questions, 4);  // (0, 2), (2, 0), (1, 2), (2, 1)
  EXPECT_EQ(r.add.oov, 0);
  // Fewer than two pairs: no question.
  EXPECT_EQ(analogy_test(space, pairs_of({0}, {10})).add.questions, 0);
}

TEST(AnalogyTest, RejectsBadOptions) {
  const EmbeddingSpace space = space_of(torch::eye(3, torch::kFloat64));
  const RowPairs pairs = pairs_of({0, 1}, {1, 2});
  AnalogyOptions o;
  o.restrict_vocab = 0;
  EXPECT_THROW(analogy_test(space, pairs, o), ConfigError);
  o = {};
  o.chunk = 0;
  EXPECT_THROW(analogy_test(space, pairs, o), ConfigError);
  o = {};
  o.cosmul_eps = -1;
  EXPECT_THROW(analogy_test(space, pairs, o), ConfigError);
}

// Each term of each question by the spec's formulas, with y = b + o_a formed explicitly.
struct Terms {
  double cos, b_b, oa_ob, oa_b;
  double ref_b_analogy, ref_oa_b, ref_oa2;
  double dsim, dsim_rest, dsim_oa_ob, dsim_ob_b;
};
Terms terms_of(const Vec& a, const Vec& ap, const Vec& b, const Vec& bp) {
  const Vec oa = axpy(-1, a, ap), ob = axpy(-1, b, bp), y = axpy(1, oa, b);
  const double ny = norm(y), nb = norm(b), nbp = norm(bp), z = ny * nbp;
  Terms t;
  t.cos = dot(y, bp) / z;
  t.b_b = dot(b, bp) / z;
  t.oa_ob = dot(oa, ob) / z;
  t.oa_b = dot(oa, b) / z;
  t.ref_b_analogy = dot(y, b) / (ny * ny);
  t.ref_oa_b = dot(oa, b) / (ny * ny);
  t.ref_oa2 = dot(oa, oa) / (ny * ny);
  t.dsim = t.cos - dot(y, b) / (ny * nb);
  t.dsim_rest = dot(y, b) * (1 / nbp - 1 / nb) / ny;
  t.dsim_oa_ob = dot(oa, ob) / z;
  t.dsim_ob_b = dot(b, ob) / z;
  return t;
}

TEST(AnalogyTest, DecompositionMatchesPerQuestionFormulasAndIdentities) {
  for (const auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 1e-6;
    SCOPED_TRACE(dtype == torch::kFloat64 ? "float64" : "float32");
    torch::manual_seed(5);
    const int64_t n = 20, d = 50;
    const torch::Tensor s = torch::randn({n, d}, torch::kFloat64);
    const torch::Tensor t =
        s + torch::randn({1, d}, torch::kFloat64) + 0.7 * torch::randn({n, d}, torch::kFloat64);
    const torch::Tensor v = torch::cat({torch::randn({5, d}, torch::kFloat64), t, s}).to(dtype);
    RowPairs pairs;
    for (int64_t i = 0; i < n; ++i) {
      pairs.source.push_back(5 + n + i);
      pairs.target.push_back(5 + i);
    }
    const Decomposition got = decompose(space_of(v), pairs);

    const std::vector<Vec> rows = rows_of(v);
    Terms mean{};
    int64_t questions = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        if (i == j) continue;
        const Terms q = terms_of(rows[pairs.source[i]], rows[pairs.target[i]],
                                 rows[pairs.source[j]], rows[pairs.target[j]]);
        // The spec's identities, question by question.
        EXPECT_NEAR(q.b_b + q.oa_ob + q.oa_b, q.cos, 1e-12);
        EXPECT_NEAR(q.ref_b_analogy + q.ref_oa_b + q.ref_oa2, 1.0, 1e-12);
        EXPECT_NEAR(q.dsim_rest + q.dsim_oa_ob + q.dsim_ob_b, q.dsim, 1e-12);
        mean.cos += q.cos, mean.b_b += q.b_b, mean.oa_ob += q.oa_ob, mean.oa_b += q.oa_b;
        mean.ref_b_analogy += q.ref_b_analogy, mean.ref_oa_b += q.ref_oa_b;
        mean.ref_oa2 += q.ref_oa2, mean.dsim += q.dsim, mean.dsim_rest += q.dsim_rest;
        mean.dsim_oa_ob += q.dsim_oa_ob, mean.dsim_ob_b += q.dsim_ob_b;
        ++questions;
      }
    }
    ASSERT_EQ(got.questions, questions);
    const double m = static_cast<double>(questions);
    EXPECT_NEAR(got.cos, mean.cos / m, tol);
    EXPECT_NEAR(got.b_b, mean.b_b / m, tol);
    EXPECT_NEAR(got.oa_ob, mean.oa_ob / m, tol);
    EXPECT_NEAR(got.oa_b, mean.oa_b / m, tol);
    EXPECT_NEAR(got.ref_b_analogy, mean.ref_b_analogy / m, tol);
    EXPECT_NEAR(got.ref_oa_b, mean.ref_oa_b / m, tol);
    EXPECT_NEAR(got.ref_oa2, mean.ref_oa2 / m, tol);
    EXPECT_NEAR(got.dsim, mean.dsim / m, tol);
    EXPECT_NEAR(got.dsim_rest, mean.dsim_rest / m, tol);
    EXPECT_NEAR(got.dsim_oa_ob, mean.dsim_oa_ob / m, tol);
    EXPECT_NEAR(got.dsim_ob_b, mean.dsim_ob_b / m, tol);
    // The same identities on the returned means.
    EXPECT_NEAR(got.b_b + got.oa_ob + got.oa_b, got.cos, tol);
    EXPECT_NEAR(got.ref_b_analogy + got.ref_oa_b + got.ref_oa2, 1.0, tol);
    EXPECT_NEAR(got.dsim_rest + got.dsim_oa_ob + got.dsim_ob_b, got.dsim, tol);
    // The terms are not degenerate.
    EXPECT_GT(std::abs(got.oa_ob), 0.05);
    EXPECT_GT(std::abs(got.dsim_rest), 1e-3);
  }
}

TEST(AnalogyTest, DecompositionOfFewerThanTwoPairsIsNan) {
  const EmbeddingSpace space = space_of(torch::eye(3, torch::kFloat64));
  const Decomposition r = decompose(space, pairs_of({0}, {1}));
  EXPECT_EQ(r.questions, 0);
  EXPECT_TRUE(std::isnan(r.cos));
  EXPECT_TRUE(std::isnan(r.dsim_ob_b));
}

}  // namespace
}  // namespace desync
