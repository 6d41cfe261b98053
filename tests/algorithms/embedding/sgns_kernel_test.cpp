// The SGNS kernel (algorithms/embedding/sgns_kernel.h) against independent computations: the
// generator in 128-bit arithmetic, the sampling laws of spec §6 test 8 within 4σ (fixed seeds),
// hand-enumerated examples, C's sigmoid table, and autograd for the gradient and the update
// (test 9).
#include "desync/algorithms/embedding/sgns_kernel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "desync/core/error.h"

namespace desync::sgns {
namespace {

// x <- x * 25214903917 + 11 mod 2^64, in 128-bit arithmetic.
uint64_t lcg_step(uint64_t x) {
  const unsigned __int128 next = static_cast<unsigned __int128>(x) * 25214903917u + 11u;
  return static_cast<uint64_t>(next % (static_cast<unsigned __int128>(1) << 64));
}

std::vector<int64_t> zipf_counts(int64_t v, double top) {
  std::vector<int64_t> counts;
  for (int64_t w = 0; w < v; ++w) counts.push_back(std::llround(top / static_cast<double>(w + 1)));
  return counts;
}

TEST(SgnsKernel, GeneratorMatchesOneHundredTwentyEightBitArithmetic) {
  for (uint64_t seed : {0ULL, 1ULL, 7ULL, 0xFFFFFFFFFFFFFFFFULL}) {
    Lcg rng{seed};
    uint64_t x = seed;
    for (int i = 0; i < 1000; ++i) {
      x = lcg_step(x);
      ASSERT_EQ(rng.next(), x) << "seed " << seed << " step " << i;
    }
  }
  Lcg one{1};
  EXPECT_EQ(one.next(), 25214903928ULL);  // 1 * 25214903917 + 11
}

TEST(SgnsKernel, NegativesFollowCountsToTheThreeQuarters) {
  const std::vector<int64_t> counts = zipf_counts(1000, 1e6);
  double norm = 0;
  for (int64_t c : counts) norm += std::pow(static_cast<double>(c), 0.75);
  const NegativeSampler neg(counts, 0.75);
  for (int64_t w = 0; w < 1000; ++w)
    ASSERT_NEAR(neg.probability(w), std::pow(static_cast<double>(counts[w]), 0.75) / norm, 1e-12);

  const int64_t draws = 1000000;
  std::vector<int64_t> seen(1000, 0);
  Lcg rng{12345};
  for (int64_t i = 0; i < draws; ++i) ++seen[static_cast<size_t>(neg.draw(rng))];
  double chi2 = 0;
  for (int64_t w = 0; w < 1000; ++w) {
    const double p = std::pow(static_cast<double>(counts[w]), 0.75) / norm;
    const double mean = draws * p, sd = std::sqrt(draws * p * (1 - p));
    EXPECT_LE(std::abs(seen[w] - mean), 4 * sd) << "word " << w;
    chi2 += (seen[w] - mean) * (seen[w] - mean) / mean;
  }
  // 999 degrees of freedom: mean 999, sd sqrt(2 * 999) ≈ 44.7; bound at 4 sd.
  EXPECT_LE(chi2, 999 + 4 * std::sqrt(2.0 * 999));
}

TEST(SgnsKernel, NegativesNeverDrawAZeroCountWordAndExponentZeroIsUniform) {
  const NegativeSampler neg({5, 0, 3, 0}, 0.0);
  Lcg rng{3};
  int64_t zeros = 0;
  for (int i = 0; i < 100000; ++i) {
    const int32_t w = neg.draw(rng);
    ASSERT_TRUE(w == 0 || w == 2) << w;
    zeros += w == 0;
  }
  EXPECT_NEAR(zeros / 1e5, 0.5, 4 * std::sqrt(0.25 / 1e5));
  EXPECT_DOUBLE_EQ(neg.probability(1), 0.0);
  EXPECT_DOUBLE_EQ(neg.probability(2), 0.5);
}

// Sentences [a, w]: `a` (count 1) is always kept and w has a context at distance 1 whatever the
// window draw, so the rows centred on w count its kept tokens.
std::vector<double> measured_keep_rates(const std::vector<int64_t>& counts, int64_t total,
                                        const Options& o, int64_t sentences_per_word) {
  const int32_t a = static_cast<int32_t>(counts.size()) - 1;
  const NegativeSampler neg(counts, 0.75);
  Lcg rng{2024};
  std::vector<int64_t> kept(counts.size(), 0);
  std::vector<int32_t> rows;
  for (int64_t i = 0; i < sentences_per_word; ++i)
    for (int32_t w = 0; w < a; ++w) {
      const int32_t sentence[2] = {a, w};
      rows.clear();
      sentence_examples(sentence, 2, counts, total, rng, neg, o, rows);
      for (size_t r = 0; r < rows.size(); r += 2) kept[static_cast<size_t>(rows[r + 1])] += 1;
    }
  int64_t kept_w = 0;  // a has one row, with context w, per kept w
  for (int32_t w = 0; w < a; ++w) kept_w += kept[static_cast<size_t>(w)];
  EXPECT_EQ(kept[static_cast<size_t>(a)], kept_w);
  std::vector<double> rates;
  for (int32_t w = 0; w < a; ++w)
    rates.push_back(static_cast<double>(kept[w]) / sentences_per_word);
  return rates;
}

TEST(SgnsKernel, KeepRateIsTheCRuleOrThePaperRule) {
  const int64_t total = 1000000;
  // z = 0.5, 0.1, 0.01, 0.001, 1e-4 at s = 1e-3; the last word (count 1) is the anchor `a`.
  const std::vector<int64_t> counts = {500000, 100000, 10000, 1000, 100, 1};
  const int64_t n = 20000;
  for (auto rule : {Options::Subsample::kCCode, Options::Subsample::kPaper}) {
    Options o;
    o.negatives = 0;
    o.subsample = 1e-3;
    o.subsample_rule = rule;
    const std::vector<double> rates = measured_keep_rates(counts, total, o, n);
    for (size_t w = 0; w + 1 < counts.size(); ++w) {
      const double ratio = 1e-3 / (static_cast<double>(counts[w]) / total);  // s / z
      const double expected = std::min(
          1.0, rule == Options::Subsample::kCCode ? std::sqrt(ratio) + ratio : std::sqrt(ratio));
      EXPECT_NEAR(keep_probability(counts[w], total, o), expected, 1e-15);
      const double sd = std::sqrt(std::max(expected * (1 - expected), 1.0 / n) / n);
      EXPECT_NEAR(rates[w], expected, 4 * sd) << "word " << w << " rule " << static_cast<int>(rule);
    }
  }
}

TEST(SgnsKernel, ContextAtDistanceDeltaIsUsedWithFrequencyLMinusDeltaPlusOneOverL) {
  Options o;
  o.window = 5;
  o.negatives = 0;
  o.subsample = 0;
  const int64_t n = 1000, sentences = 20;
  std::vector<int32_t> sentence(n);
  for (int64_t i = 0; i < n; ++i) sentence[i] = static_cast<int32_t>(i);  // id = position
  const std::vector<int64_t> counts(n, 1);
  const NegativeSampler neg(counts, 0.75);
  Lcg rng{99};
  std::vector<int64_t> at_distance(o.window + 2, 0);
  std::vector<int32_t> rows;
  for (int64_t s = 0; s < sentences; ++s) {
    rows.clear();
    sentence_examples(sentence.data(), n, counts, n, rng, neg, o, rows);
    for (size_t r = 0; r < rows.size(); r += 2) {
      const int64_t delta = std::abs(rows[r] - rows[r + 1]);
      ASSERT_GE(delta, 1);
      ASSERT_LE(delta, o.window);
      ++at_distance[delta];
    }
  }
  for (int64_t delta = 1; delta <= o.window; ++delta) {
    const double p = static_cast<double>(o.window - delta + 1) / o.window;
    const double pairs = 2.0 * (n - delta) * sentences;  // ordered pairs at distance delta
    // Both sides of a centre share its draw: count centres, not pairs, for the spread.
    const double sd = std::sqrt(std::max(p * (1 - p), 1e-4) / (sentences * (n - delta)));
    EXPECT_NEAR(at_distance[delta] / pairs, p, 4 * sd) << "delta " << delta;
  }
}

TEST(SgnsKernel, ExamplesOfASmallSentenceInCOrder) {
  // Vocabulary of 10 words; the noise distribution puts all its mass on word 3.
  std::vector<int64_t> counts(10, 0);
  counts[3] = 1;
  const NegativeSampler neg(counts, 0.75);
  Options o;
  o.subsample = 0;
  o.negatives = 2;

  // L = 1: every draw gives r = 0 and width 1.
  o.window = 1;
  const int32_t sentence[4] = {7, 3, 5, 8};
  std::vector<int32_t> rows;
  Lcg rng{42};
  EXPECT_EQ(sentence_examples(sentence, 4, counts, 10, rng, neg, o, rows), 6);
  const std::vector<int32_t> expected = {
      3, 7, 3,  3,                 // centre 7: context 3
      7, 3, -1, -1, 5, 3, -1, -1,  // centre 3: contexts 7, 5; the negatives equal y: skipped
      3, 5, 3,  3,  8, 5, 3,  3,   // centre 5: contexts 3, 8
      5, 8, 3,  3};                // centre 8: context 5
  EXPECT_EQ(rows, expected);
  // One draw per centre and k per row, none redrawn for a skipped negative.
  uint64_t x = 42;
  for (int i = 0; i < 4 + 6 * 2; ++i) x = lcg_step(x);
  EXPECT_EQ(rng.x, x);

  // L = 2, k = 0, seed 5: the five centres' draws x mod 2, computed here independently.
  o.window = 2;
  o.negatives = 0;
  const int32_t five[5] = {0, 1, 2, 4, 6};
  rows.clear();
  Lcg rng2{5};
  sentence_examples(five, 5, counts, 10, rng2, neg, o, rows);
  uint64_t y = 5;
  std::vector<int64_t> r;
  for (int i = 0; i < 5; ++i) r.push_back(static_cast<int64_t>((y = lcg_step(y)) % 2));
  ASSERT_EQ(r, (std::vector<int64_t>{0, 1, 0, 1, 0}));             // widths 2, 1, 2, 1, 2
  const std::vector<int32_t> expected2 = {1, 0, 2, 0,              // p 0, width 2: q = 1, 2
                                          0, 1, 2, 1,              // p 1, width 1: q = 0, 2
                                          0, 2, 1, 2, 4, 2, 6, 2,  // p 2, width 2: q = 0, 1, 3, 4
                                          2, 4, 6, 4,              // p 3, width 1: q = 2, 4
                                          2, 6, 4, 6};             // p 4, width 2: q = 2, 3
  EXPECT_EQ(rows, expected2);
}

TEST(SgnsKernel, SubsamplingDrawsOncePerTokenBeforeTheWindowDraws) {
  const std::vector<int64_t> counts = {100, 10, 1};
  const NegativeSampler neg(counts, 0.75);
  Options o;
  o.negatives = 0;
  const int32_t sentence[3] = {0, 1, 2};
  // s = 0: the three window draws only.
  o.subsample = 0;
  std::vector<int32_t> plain;
  Lcg rng{8};
  sentence_examples(sentence, 3, counts, 111, rng, neg, o, plain);
  uint64_t x = 8;
  for (int i = 0; i < 3; ++i) x = lcg_step(x);
  EXPECT_EQ(rng.x, x);
  // s = 1 (every threshold s T / c + sqrt(s T / c) > 1: all kept): three token draws first, then
  // the same rows as without subsampling from the generator three steps on.
  o.subsample = 1;
  std::vector<int32_t> sampled;
  Lcg rng2{8};
  sentence_examples(sentence, 3, counts, 111, rng2, neg, o, sampled);
  for (int i = 0; i < 3; ++i) x = lcg_step(x);
  EXPECT_EQ(rng2.x, x);
  o.subsample = 0;
  std::vector<int32_t> shifted;
  Lcg rng3{lcg_step(lcg_step(lcg_step(8)))};
  sentence_examples(sentence, 3, counts, 111, rng3, neg, o, shifted);
  EXPECT_EQ(sampled, shifted);
}

TEST(SgnsKernel, LearningRateIsAlpha0TimesOneMinusProgressInTenThousandTokenSteps) {
  const double alpha0 = 0.025;
  const int64_t total = 200000;
  AlphaSchedule schedule(alpha0, total);
  EXPECT_EQ(schedule.before_sentence(0), alpha0);
  EXPECT_EQ(schedule.before_sentence(10000), alpha0);  // not more than 10,000 yet
  EXPECT_NEAR(schedule.before_sentence(10001), alpha0 * (1 - 10001.0 / 200001), 1e-15);
  EXPECT_NEAR(schedule.before_sentence(20001), alpha0 * (1 - 10001.0 / 200001), 1e-15);
  EXPECT_NEAR(schedule.before_sentence(20002), alpha0 * (1 - 20002.0 / 200001), 1e-15);

  // Random sentence lengths: alpha is the formula at the last step point, and the step points
  // are the first counts more than 10,000 past the previous one.
  AlphaSchedule s2(alpha0, total);
  std::mt19937 gen(1);
  std::uniform_int_distribution<int64_t> length(1, 60);
  int64_t read = 0, step_point = 0, steps = 0;
  double previous = alpha0;
  while (read < total + 30000) {
    const double alpha = s2.before_sentence(read);
    if (read - step_point > 10000) {
      step_point = read;
      ++steps;
      const double f = static_cast<double>(read) / (total + 1);
      ASSERT_NEAR(alpha, alpha0 * std::max(1e-4, 1 - f), 1e-15) << read;
    } else {
      ASSERT_EQ(alpha, previous) << read;
    }
    previous = alpha;
    read += length(gen);
  }
  EXPECT_GE(steps, (total + 30000) / 10060 - 1);
  EXPECT_LE(steps, (total + 30000) / 10001);
  EXPECT_DOUBLE_EQ(previous, alpha0 * 1e-4);  // past the end: the floor

  AlphaSchedule resumed(alpha0, total, 50000);
  EXPECT_NEAR(resumed.alpha(), alpha0 * (1 - 50000.0 / 200001), 1e-15);
  EXPECT_EQ(resumed.before_sentence(60000), resumed.alpha());
}

// ℓ summed over rows, written directly from its definition on autograd tensors.
torch::Tensor reference_loss(const torch::Tensor& w_in, const torch::Tensor& w_out,
                             const std::vector<std::vector<int64_t>>& rows) {
  torch::Tensor loss = torch::zeros({}, w_in.options());
  for (const auto& row : rows) {
    const torch::Tensor v = w_in[row[0]];
    loss = loss - torch::log(torch::sigmoid(torch::dot(v, w_out[row[1]])));
    for (size_t j = 2; j < row.size(); ++j)
      if (row[j] != kSkipped)
        loss = loss - torch::log(torch::sigmoid(-torch::dot(v, w_out[row[j]])));
  }
  return loss;
}

torch::Tensor rows_tensor(const std::vector<std::vector<int64_t>>& rows) {
  std::vector<int64_t> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  return torch::tensor(flat, torch::kLong).view({static_cast<int64_t>(rows.size()), -1});
}

TEST(SgnsKernel, BatchGradientEqualsAutogradWithRepeatedRowsAndASkippedNegative) {
  torch::manual_seed(3);
  const int64_t v = 9, d = 6;
  const torch::Tensor w_in = torch::randn({v, d}, torch::kFloat64) * 0.7;
  const torch::Tensor w_out = torch::randn({v, d}, torch::kFloat64) * 0.7;
  const std::vector<std::vector<int64_t>> rows = {
      {1, 2, 5, 5, 0},         // a negative repeated within the row
      {1, 4, 2, kSkipped, 6},  // x repeated; y of row 0 as a negative; a skipped negative
      {3, 2, 1, 7, 5},         // y repeated
      {0, 0, 2, 1, 3},         // x = y (separate tables)
      {1, 2, 5, 6, 6}};
  const SparseGradient sparse = batch_gradient(w_in, w_out, rows_tensor(rows));

  const torch::Tensor a_in = w_in.clone().requires_grad_(true);
  const torch::Tensor a_out = w_out.clone().requires_grad_(true);
  const torch::Tensor loss = reference_loss(a_in, a_out, rows);
  loss.backward();
  EXPECT_NEAR(sparse.loss, loss.item<double>(), 1e-10);

  auto dense = [&](const torch::Tensor& ids, const torch::Tensor& g) {
    return torch::zeros({v, d}, torch::kFloat64).index_add_(0, ids, g);
  };
  EXPECT_TRUE(torch::equal(sparse.in_rows, torch::tensor({0, 1, 3}, torch::kLong)));
  EXPECT_TRUE(torch::equal(sparse.out_rows, torch::arange(8, torch::kLong)));
  EXPECT_EQ(sparse.in_grad.scalar_type(), torch::kFloat64);
  EXPECT_LT((dense(sparse.in_rows, sparse.in_grad) - a_in.grad()).abs().max().item<double>(),
            1e-10);
  EXPECT_LT((dense(sparse.out_rows, sparse.out_grad) - a_out.grad()).abs().max().item<double>(),
            1e-10);

  // float32 tables give float32 rows, near the fp64 values.
  const SparseGradient f32 =
      batch_gradient(w_in.to(torch::kFloat32), w_out.to(torch::kFloat32), rows_tensor(rows));
  EXPECT_EQ(f32.out_grad.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose(f32.out_grad.to(torch::kFloat64), sparse.out_grad, 1e-5, 1e-5));
}

TEST(SgnsKernel, BatchGradientOfAWordOnlySkippedIsNoRow) {
  const torch::Tensor w = torch::ones({4, 2}, torch::kFloat64);
  const SparseGradient g = batch_gradient(w, w, rows_tensor({{0, 1, kSkipped}}));
  EXPECT_TRUE(torch::equal(g.out_rows, torch::tensor({1}, torch::kLong)));
  EXPECT_NEAR(g.loss, std::log1p(std::exp(-2.0)), 1e-15);
}

// W - alpha * ∇ℓ(row) by autograd, for both tables.
std::pair<torch::Tensor, torch::Tensor> sgd_step(const torch::Tensor& w_in,
                                                 const torch::Tensor& w_out,
                                                 const std::vector<int64_t>& row, double alpha) {
  const torch::Tensor a_in = w_in.clone().requires_grad_(true);
  const torch::Tensor a_out = w_out.clone().requires_grad_(true);
  reference_loss(a_in, a_out, {row}).backward();
  return {w_in - alpha * a_in.grad(), w_out - alpha * a_out.grad()};
}

TEST(SgnsKernel, OneCInnerLoopIsOneSgdStepOnTheLoss) {
  torch::manual_seed(4);
  const int64_t v = 8, d = 10;
  const double alpha = 0.1;
  for (const std::vector<int64_t>& row :
       {std::vector<int64_t>{2, 5, 1, 3, 7}, std::vector<int64_t>{2, 5, 1, kSkipped, 7}}) {
    const torch::Tensor w_in = torch::randn({v, d}, torch::kFloat64);
    const torch::Tensor w_out = torch::randn({v, d}, torch::kFloat64);
    const auto [in_next, out_next] = sgd_step(w_in, w_out, row, alpha);
    const double loss0 = reference_loss(w_in, w_out, {row}).item<double>();

    torch::Tensor in = w_in.clone(), out = w_out.clone();
    const std::vector<int32_t> ids(row.begin(), row.end());
    const double loss = sequential_update(in.data_ptr<double>(), out.data_ptr<double>(), d,
                                          ids.data(), 1, 3, alpha, Options{});
    EXPECT_NEAR(loss, loss0, 1e-12);
    EXPECT_LT((in - in_next).abs().max().item<double>(), 1e-12);
    EXPECT_LT((out - out_next).abs().max().item<double>(), 1e-12);
  }
}

TEST(SgnsKernel, SequentialRowsAreSuccessiveSgdStepsInDoubleAndCloseInFloat) {
  torch::manual_seed(5);
  const int64_t v = 30, d = 37, k = 4, count = 40;  // d not a multiple of 8: the dot's tail
  const double alpha = 0.05;
  const torch::Tensor w_in = torch::randn({v, d}, torch::kFloat64) * 0.3;
  const torch::Tensor w_out = torch::randn({v, d}, torch::kFloat64) * 0.3;
  // Rows of distinct words (so each row is one SGD step), every fifth with a skipped negative.
  std::vector<int32_t> ids;
  std::vector<std::vector<int64_t>> rows;
  std::mt19937 gen(6);
  for (int r = 0; r < count; ++r) {
    std::vector<int64_t> words(v);
    std::iota(words.begin(), words.end(), 0);
    std::shuffle(words.begin(), words.end(), gen);
    std::vector<int64_t> row(words.begin(), words.begin() + k + 2);
    if (r % 5 == 0) row[3] = kSkipped;
    rows.push_back(row);
    ids.insert(ids.end(), row.begin(), row.end());
  }
  torch::Tensor ref_in = w_in.clone(), ref_out = w_out.clone();
  double ref_loss = 0;
  for (const auto& row : rows) {
    ref_loss += reference_loss(ref_in, ref_out, {row}).item<double>();
    std::tie(ref_in, ref_out) = sgd_step(ref_in, ref_out, row, alpha);
  }
  torch::Tensor in64 = w_in.clone(), out64 = w_out.clone();
  const double l64 = sequential_update(in64.data_ptr<double>(), out64.data_ptr<double>(), d,
                                       ids.data(), count, k, alpha, Options{});
  EXPECT_NEAR(l64, ref_loss, 1e-10);
  EXPECT_LT((in64 - ref_in).abs().max().item<double>(), 1e-12);
  EXPECT_LT((out64 - ref_out).abs().max().item<double>(), 1e-12);

  torch::Tensor in32 = w_in.to(torch::kFloat32), out32 = w_out.to(torch::kFloat32);
  const double l32 = sequential_update(in32.data_ptr<float>(), out32.data_ptr<float>(), d,
                                       ids.data(), count, k, alpha, Options{});
  EXPECT_NEAR(l32, l64, 1e-5 * std::abs(l64));
  EXPECT_LT((in32.to(torch::kFloat64) - in64).abs().max().item<double>(), 1e-5);
  EXPECT_LT((out32.to(torch::kFloat64) - out64).abs().max().item<double>(), 1e-5);
}

TEST(SgnsKernel, TableSigmoidReadsCsBinsAndSaturatesBeyondSix) {
  // One pair (k = 0): W_in[0] = (f, 0), W_out[1] = (1, 0), so the score is f and
  // W_out[1][0] moves by g * f.
  Options o;
  o.exact_sigmoid = false;
  const double alpha = 0.5;
  const int32_t row[2] = {0, 1};
  for (double f : {-7.0, -5.99, -2.5, -0.01, 0.0, 0.3, 3.14, 5.999, 6.5}) {
    double in[4] = {f, 0, 0, 0}, out[4] = {0, 0, 1, 0};
    sequential_update(in, out, 2, row, 1, 0, alpha, o);
    double expected;
    if (f > 6) {
      expected = 0;
    } else if (f < -6) {
      expected = alpha;
    } else {
      const int bin = static_cast<int>((f + 6) * 83);  // C: (f + 6) * (1000 / 6 / 2)
      const double e = std::exp((bin / 1000.0 * 2 - 1) * 6);
      expected = alpha * (1 - e / (e + 1));
    }
    // W_in[0] moved by g * W_out[1] = (g, 0); W_out[1] by g * W_in[0] = (g f, 0).
    EXPECT_NEAR(in[0] - f, expected, 1e-14) << f;
    EXPECT_NEAR(out[2] - 1, expected * f, 1e-14) << f;
  }
}

TEST(SgnsKernel, OptionsOutOfRangeAndAnEmptyNoiseDistributionAreConfigErrors) {
  EXPECT_NO_THROW(validate(Options{}));
  Options o;
  o.window = 0;
  EXPECT_THROW(validate(o), ConfigError);
  o = Options{};
  o.negatives = -1;
  EXPECT_THROW(validate(o), ConfigError);
  o = Options{};
  o.subsample = -1e-3;
  EXPECT_THROW(validate(o), ConfigError);
  EXPECT_THROW(NegativeSampler({0, 0}, 0.75), ConfigError);
}

}  // namespace
}  // namespace desync::sgns
