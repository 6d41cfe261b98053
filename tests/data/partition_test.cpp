// Tests of the federated client partitions, the client sampler and client placement
// (spec federated.md §1, "How to test it" items 4 and 5).
#include "desync/data/partition.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/batch_source.h"

namespace desync {
namespace {

// Labels 0..classes-1 repeated (balanced), in a seeded shuffled order.
torch::Tensor balanced_labels(int64_t n, int64_t classes, uint64_t seed = 99) {
  std::vector<int64_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[static_cast<size_t>(i)] = i % classes;
  CounterRng rng(seed);
  rng.shuffle(y);
  return torch::tensor(y, torch::kLong);
}

PartitionOptions options(const std::string& kind, const std::string& mode, double alpha,
                         int64_t clients, int64_t heldout, int64_t min_size = 10) {
  PartitionOptions o;
  o.kind = kind;
  o.mode = mode;
  o.alpha = alpha;
  o.clients = clients;
  o.heldout = heldout;
  o.min_size = min_size;
  return o;
}

// An order-sensitive hash of every client's index list.
uint64_t hash_partition(const ClientPartition& p) {
  uint64_t h = 0x1234;
  for (const auto& list : p.indices) {
    h = mix64(h ^ 0xFFFF'FFFF'FFFF'FFFFULL);  // list separator
    for (int64_t i : list) h = mix64(h ^ static_cast<uint64_t>(i));
  }
  for (int64_t id : p.heldout_ids) h = mix64(h ^ static_cast<uint64_t>(id) ^ 0xABCDULL);
  return h;
}

std::vector<std::vector<int64_t>> histograms(const ClientPartition& p, const torch::Tensor& y,
                                             int64_t classes) {
  const int64_t* yl = y.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> h(p.indices.size(),
                                      std::vector<int64_t>(static_cast<size_t>(classes), 0));
  for (size_t j = 0; j < p.indices.size(); ++j) {
    for (int64_t i : p.indices[j]) ++h[j][static_cast<size_t>(yl[i])];
  }
  return h;
}

// Mean over clients of the share of a client's largest class.
double mean_largest_share(const ClientPartition& p, const torch::Tensor& y, int64_t classes) {
  double sum = 0.0;
  int64_t counted = 0;
  for (const auto& h : histograms(p, y, classes)) {
    const int64_t total = std::accumulate(h.begin(), h.end(), int64_t{0});
    if (total == 0) continue;
    sum += static_cast<double>(*std::max_element(h.begin(), h.end())) / static_cast<double>(total);
    ++counted;
  }
  return sum / static_cast<double>(counted);
}

// Every index appears at most once; returns how many appear.
int64_t check_disjoint(const ClientPartition& p, int64_t n) {
  std::vector<int> seen(static_cast<size_t>(n), 0);
  int64_t count = 0;
  for (const auto& list : p.indices) {
    for (int64_t i : list) {
      EXPECT_GE(i, 0);
      EXPECT_LT(i, n);
      if (i < 0 || i >= n) continue;
      EXPECT_EQ(seen[static_cast<size_t>(i)], 0) << "index " << i << " assigned twice";
      ++seen[static_cast<size_t>(i)];
      ++count;
    }
  }
  return count;
}

int64_t smallest_client(const ClientPartition& p) {
  int64_t s = INT64_MAX;
  for (size_t j = 0; j < p.indices.size(); ++j) s = std::min(s, p.size(static_cast<int64_t>(j)));
  return s;
}

struct Case {
  const char* kind;
  const char* mode;
};
const Case kAllCases[] = {{"iid", "per_class"},
                          {"dirichlet", "per_class"},
                          {"dirichlet", "per_client"},
                          {"quantity", ""}};

// ---------------------------------------------------------------------------------------------
// CounterRng, gamma and Dirichlet variates.

TEST(CounterRng, NextFollowsTheSplitMixCounterFormula) {
  CounterRng rng(12345);
  for (uint64_t i = 1; i <= 5; ++i) {
    EXPECT_EQ(rng.next(), mix64(12345 + i * 0x9E3779B97F4A7C15ULL));
  }
  CounterRng a(7), b(7), c(8);
  for (int i = 0; i < 100; ++i) {
    const uint64_t va = a.next();
    EXPECT_EQ(va, b.next());
    EXPECT_NE(va, c.next());
  }
}

TEST(CounterRng, UniformLiesInOpenIntervalWithMeanHalf) {
  CounterRng rng(rng_key(1, 2));
  const int n = 100000;
  double sum = 0.0, sum_sq = 0.0;
  for (int i = 0; i < n; ++i) {
    const double u = rng.uniform();
    ASSERT_GT(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    sum_sq += u * u;
  }
  // sigma of the mean is sqrt(1/12 / 1e5) ~ 0.0009.
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  EXPECT_NEAR(sum_sq / n - (sum / n) * (sum / n), 1.0 / 12.0, 0.003);
}

TEST(CounterRng, NormalHasMeanZeroAndUnitVariance) {
  CounterRng rng(rng_key(3, 4));
  const int n = 100000;
  double sum = 0.0, sum_sq = 0.0, sum_4 = 0.0;
  for (int i = 0; i < n; ++i) {
    const double x = rng.normal();
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    sum_sq += x * x;
    sum_4 += x * x * x * x;
  }
  const double mean = sum / n, var = sum_sq / n - mean * mean;
  // sigma of the mean ~ 0.003, of the variance ~ 0.0045.
  EXPECT_NEAR(mean, 0.0, 0.015);
  EXPECT_NEAR(var, 1.0, 0.025);
  // Gaussian kurtosis is 3 (a uniform or a sum of few uniforms would be below it).
  EXPECT_NEAR(sum_4 / n, 3.0, 0.15);
}

TEST(CounterRng, BelowIsUniformWithoutModuloBias) {
  CounterRng rng(rng_key(5, 6));
  EXPECT_EQ(rng.below(1), 0);
  std::vector<int64_t> counts(7, 0);
  for (int i = 0; i < 70000; ++i) {
    const int64_t v = rng.below(7);
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 7);
    ++counts[static_cast<size_t>(v)];
  }
  for (int64_t c : counts) EXPECT_NEAR(static_cast<double>(c), 10000.0, 400.0);  // 4 sigma
  // n = 3 * 2^61: plain r % n would put a value below 2^62 with probability 3/4 instead of 2/3.
  const int64_t n = int64_t{3} << 61;
  int64_t low = 0;
  const int draws = 100000;
  for (int i = 0; i < draws; ++i) {
    const int64_t v = rng.below(n);
    ASSERT_GE(v, 0);
    ASSERT_LT(v, n);
    low += v < (int64_t{1} << 62) ? 1 : 0;
  }
  EXPECT_NEAR(static_cast<double>(low) / draws, 2.0 / 3.0, 0.01);
}

TEST(CounterRng, ShuffleIsASeededUniformPermutation) {
  std::vector<int64_t> base(50);
  std::iota(base.begin(), base.end(), 0);
  std::vector<int64_t> a = base, b = base, c = base;
  CounterRng ra(11), rb(11), rc(12);
  ra.shuffle(a);
  rb.shuffle(b);
  rc.shuffle(c);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, base);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, base);
  // Each element lands in each position equally often: position 0 of a 4-element shuffle.
  std::vector<int64_t> first(4, 0);
  CounterRng rng(13);
  for (int t = 0; t < 40000; ++t) {
    std::vector<int64_t> v = {0, 1, 2, 3};
    rng.shuffle(v);
    ++first[static_cast<size_t>(v[0])];
  }
  for (int64_t f : first) EXPECT_NEAR(static_cast<double>(f), 10000.0, 350.0);  // 4 sigma
}

TEST(CounterRng, KeysSeparateSeedPurposeAndIndices) {
  const uint64_t k = rng_key(1, 2, 3, 4);
  EXPECT_EQ(k, rng_key(1, 2, 3, 4));
  EXPECT_NE(k, rng_key(0, 2, 3, 4));
  EXPECT_NE(k, rng_key(1, 0, 3, 4));
  EXPECT_NE(k, rng_key(1, 2, 0, 4));
  EXPECT_NE(k, rng_key(1, 2, 3, 0));
  EXPECT_NE(k, rng_key(1, 2, 4, 3));
  EXPECT_NE(rng_key(1, 2), rng_key(2, 1));
}

TEST(CounterRng, GammaVariatesHaveMeanAndVarianceAlpha) {
  for (double alpha : {0.3, 1.0, 2.5, 50.0}) {
    CounterRng rng(rng_key(21, static_cast<uint64_t>(alpha * 10)));
    const int n = 40000;
    double sum = 0.0, sum_sq = 0.0;
    for (int i = 0; i < n; ++i) {
      const double g = std::exp(log_gamma_variate(alpha, rng));
      sum += g;
      sum_sq += g * g;
    }
    const double mean = sum / n, var = sum_sq / n - mean * mean;
    // Gamma(alpha, 1): mean = var = alpha; sigma of the mean is sqrt(alpha / n).
    EXPECT_NEAR(mean, alpha, 5.0 * std::sqrt(alpha / n)) << "alpha " << alpha;
    EXPECT_NEAR(var, alpha, 0.06 * alpha + 0.02) << "alpha " << alpha;
  }
}

TEST(CounterRng, GammaAtTinyAlphaIsFiniteInLogSpace) {
  CounterRng rng(rng_key(22, 0));
  int below_double_range = 0;
  for (int i = 0; i < 2000; ++i) {
    const double lg = log_gamma_variate(1e-3, rng);
    ASSERT_TRUE(std::isfinite(lg)) << lg;
    // exp(lg) would underflow to 0 in linear space.
    below_double_range += lg < -745.0 ? 1 : 0;
  }
  // log G(1e-3) ~ log(U) / 1e-3: below -745 unless U > e^-0.745 ~ 0.47.
  EXPECT_GT(below_double_range, 800);
  EXPECT_THROW(log_gamma_variate(0.0, rng), Error);
}

TEST(CounterRng, DirichletSumsToOneWithoutNanEvenForTinyAlpha) {
  for (double alpha : {1e-3, 0.1, 1.0, 1e4}) {
    CounterRng rng(rng_key(23, static_cast<uint64_t>(alpha * 1000)));
    for (int t = 0; t < 50; ++t) {
      const std::vector<double> q = dirichlet(alpha, 100, rng);
      ASSERT_EQ(q.size(), 100u);
      double sum = 0.0;
      for (double v : q) {
        ASSERT_FALSE(std::isnan(v));
        ASSERT_GE(v, 0.0);
        sum += v;
      }
      EXPECT_NEAR(sum, 1.0, 1e-12) << "alpha " << alpha;
    }
  }
  // Two or three coordinates at alpha = 1e-3: every gamma variate is often below e^-745, where
  // exp() underflows to 0 (a linear-space normalisation would then divide 0 by 0).
  CounterRng few(rng_key(23, 1));
  for (int t = 0; t < 1000; ++t) {
    const std::vector<double> q = dirichlet(1e-3, 2 + t % 2, few);
    double sum = 0.0;
    for (double v : q) {
      ASSERT_FALSE(std::isnan(v)) << "draw " << t;
      sum += v;
    }
    ASSERT_NEAR(sum, 1.0, 1e-12) << "draw " << t;
  }
  // Small alpha concentrates the mass on one coordinate, large alpha spreads it evenly.
  CounterRng rng(rng_key(24, 0));
  const std::vector<double> sparse = dirichlet(1e-3, 100, rng);
  const std::vector<double> flat = dirichlet(1e4, 100, rng);
  EXPECT_GT(*std::max_element(sparse.begin(), sparse.end()), 0.99);
  EXPECT_LT(*std::max_element(flat.begin(), flat.end()), 0.011);
  EXPECT_GT(*std::min_element(flat.begin(), flat.end()), 0.009);
}

TEST(CounterRng, DirichletMarginalsHaveMeanOneOverN) {
  CounterRng rng(rng_key(25, 0));
  std::vector<double> mean(5, 0.0);
  const int draws = 20000;
  for (int t = 0; t < draws; ++t) {
    const std::vector<double> q = dirichlet(0.5, 5, rng);
    for (size_t i = 0; i < 5; ++i) mean[i] += q[i] / draws;
  }
  // Beta(0.5, 2) marginal: sd 0.28, sd of the mean 0.002.
  for (double m : mean) EXPECT_NEAR(m, 0.2, 0.01);
}

// ---------------------------------------------------------------------------------------------
// Partitions.

TEST(Partition, SameSeedSameIndexListsDifferentSeedDifferent) {
  const torch::Tensor y = balanced_labels(3000, 10);
  for (const Case& c : kAllCases) {
    const PartitionOptions o = options(c.kind, c.mode, 0.5, 20, 5);
    const ClientPartition a = make_partition(y, 10, o, 1);
    const ClientPartition b = make_partition(y, 10, o, 1);
    const ClientPartition d = make_partition(y, 10, o, 2);
    EXPECT_EQ(hash_partition(a), hash_partition(b)) << c.kind << " " << c.mode;
    EXPECT_EQ(a.indices, b.indices) << c.kind << " " << c.mode;
    EXPECT_EQ(a.heldout_ids, b.heldout_ids);
    EXPECT_NE(hash_partition(a), hash_partition(d)) << c.kind << " " << c.mode;
  }
}

TEST(Partition, NoIndexTwiceAndNoneLostButPerClientLeftovers) {
  const int64_t n = 3007;  // 3007 mod 25 = 7 leftovers for per_client
  const torch::Tensor y = balanced_labels(n, 10);
  for (const Case& c : kAllCases) {
    for (uint64_t seed : {0, 1, 2}) {
      // Skewed label draws; quantity needs milder size skew to give every client 10 examples.
      const double alpha = std::string(c.kind) == "quantity" ? 1.0 : 0.3;
      const ClientPartition p = make_partition(y, 10, options(c.kind, c.mode, alpha, 20, 5), seed);
      ASSERT_EQ(p.indices.size(), 25u);
      const int64_t assigned = check_disjoint(p, n);
      const bool per_client =
          std::string(c.kind) == "dirichlet" && std::string(c.mode) == "per_client";
      EXPECT_EQ(assigned, per_client ? n - n % 25 : n) << c.kind << " " << c.mode;
      if (per_client) {
        for (size_t j = 0; j < 25; ++j) EXPECT_EQ(p.indices[j].size(), static_cast<size_t>(n / 25));
      }
    }
  }
}

TEST(Partition, PerClassRespectsMinSizeWhereUnconstrainedDrawsFallShort) {
  const int64_t n = 3000;
  const torch::Tensor y = balanced_labels(n, 10);
  // With min_size 0 these options give a client below 40 examples nine times in ten, so
  // min_size 40 forces redraws.
  int short_without = 0;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    PartitionOptions o = options("dirichlet", "per_class", 0.3, 25, 5, 0);
    short_without += smallest_client(make_partition(y, 10, o, seed)) < 40 ? 1 : 0;
    o.min_size = 40;
    const ClientPartition p = make_partition(y, 10, o, seed);
    EXPECT_GE(smallest_client(p), 40) << "seed " << seed;
    EXPECT_EQ(check_disjoint(p, n), n);
  }
  EXPECT_GE(short_without, 3);
}

TEST(Partition, PerClassClientsAreNotFilledPastTheBalanceCap) {
  // A client that is already full (>= n / (K + T)) takes nothing from later classes, so no client
  // exceeds the cap by more than the size of one class.
  const int64_t n = 2000, classes = 20;
  const torch::Tensor y = balanced_labels(n, classes);
  for (uint64_t seed = 0; seed < 5; ++seed) {
    const ClientPartition p =
        make_partition(y, classes, options("dirichlet", "per_class", 0.05, 8, 2, 1), seed);
    for (size_t j = 0; j < p.indices.size(); ++j) {
      EXPECT_LT(p.indices[j].size(), static_cast<size_t>(n / 10 + n / classes)) << j;
    }
  }
}

TEST(Partition, HugeAlphaGivesEveryClientTheGlobalLabelHistogram) {
  const int64_t n = 30000, classes = 10;
  const torch::Tensor y = balanced_labels(n, classes);
  for (const char* mode : {"per_class", "per_client"}) {
    const ClientPartition p = make_partition(y, classes, options("dirichlet", mode, 1e4, 10, 0), 3);
    for (const auto& h : histograms(p, y, classes)) {
      const double total = static_cast<double>(std::accumulate(h.begin(), h.end(), int64_t{0}));
      double tv = 0.0;
      for (int64_t count : h) tv += 0.5 * std::abs(static_cast<double>(count) / total - 0.1);
      EXPECT_LT(tv, 0.1) << mode;
    }
  }
}

TEST(Partition, SmallAlphaSkewsLabelsMoreThanLargeAlpha) {
  const int64_t n = 6000, classes = 10;
  const torch::Tensor y = balanced_labels(n, classes);
  for (const char* mode : {"per_class", "per_client"}) {
    double skewed = 0.0, even = 0.0;
    for (uint64_t seed = 0; seed < 5; ++seed) {
      skewed += mean_largest_share(
          make_partition(y, classes, options("dirichlet", mode, 0.1, 20, 5, 5), seed), y, classes);
      even += mean_largest_share(
          make_partition(y, classes, options("dirichlet", mode, 10.0, 20, 5, 5), seed), y, classes);
    }
    skewed /= 5;
    even /= 5;
    EXPECT_GT(skewed, even + 0.2) << mode << ": " << skewed << " vs " << even;
  }
}

TEST(Partition, IidSizesDifferByAtMostOne) {
  const int64_t n = 1003;
  const torch::Tensor y = balanced_labels(n, 10);
  const ClientPartition p = make_partition(y, 10, options("iid", "", 0.1, 10, 3), 4);
  ASSERT_EQ(p.indices.size(), 13u);
  int64_t lo = INT64_MAX, hi = 0;
  for (const auto& list : p.indices) {
    lo = std::min(lo, static_cast<int64_t>(list.size()));
    hi = std::max(hi, static_cast<int64_t>(list.size()));
  }
  EXPECT_EQ(lo, n / 13);
  EXPECT_LE(hi - lo, 1);
  EXPECT_EQ(check_disjoint(p, n), n);
  // A permutation, not consecutive blocks of the input.
  std::vector<int64_t> first = p.indices[0];
  std::sort(first.begin(), first.end());
  EXPECT_GT(first.back() - first.front(), 2 * n / 3);
}

TEST(Partition, QuantitySizesSumToNAndRespectMinSize) {
  const int64_t n = 2000;
  const torch::Tensor y = balanced_labels(n, 10);
  int short_without = 0;
  std::set<size_t> sizes;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    PartitionOptions o = options("quantity", "", 2.0, 15, 5, 0);
    short_without += smallest_client(make_partition(y, 10, o, seed)) < 25 ? 1 : 0;
    o.min_size = 25;
    const ClientPartition p = make_partition(y, 10, o, seed);
    int64_t total = 0;
    for (const auto& list : p.indices) {
      EXPECT_GE(list.size(), 25u);
      total += static_cast<int64_t>(list.size());
      sizes.insert(list.size());
    }
    EXPECT_EQ(total, n);
    EXPECT_EQ(check_disjoint(p, n), n);
  }
  EXPECT_GE(short_without, 3);   // the min_size constraint was binding
  EXPECT_GT(sizes.size(), 20u);  // sizes vary
}

TEST(Partition, QuantityLabelsAreNotSkewed) {
  const int64_t n = 20000, classes = 4;
  const torch::Tensor y = balanced_labels(n, classes);
  const ClientPartition p = make_partition(y, classes, options("quantity", "", 2.0, 5, 0), 6);
  for (const auto& h : histograms(p, y, classes)) {
    const double total = static_cast<double>(std::accumulate(h.begin(), h.end(), int64_t{0}));
    if (total < 1000) continue;
    for (int64_t count : h) EXPECT_NEAR(static_cast<double>(count) / total, 0.25, 0.05);
  }
}

TEST(Partition, GivesUpAfterMaxTriesWithAdvice) {
  const torch::Tensor y = balanced_labels(500, 10);
  for (const char* kind : {"dirichlet", "quantity"}) {
    PartitionOptions o = options(kind, "per_class", 1e-3, 40, 10, 10);
    o.max_tries = 20;
    try {
      make_partition(y, 10, o, 0);
      FAIL() << kind << " did not throw";
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      const std::string tail = "raise alpha, lower K or min_size";
      ASSERT_GE(msg.size(), tail.size());
      EXPECT_EQ(msg.substr(msg.size() - tail.size()), tail) << msg;
      EXPECT_NE(msg.find("20 draws"), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

TEST(Partition, TinyAlphaPerClassStillPartitions) {
  // alpha = 1e-3: each class goes (almost) whole to one client; log-space draws keep it NaN-free.
  const int64_t n = 2000;
  const torch::Tensor y = balanced_labels(n, 10);
  const ClientPartition p =
      make_partition(y, 10, options("dirichlet", "per_class", 1e-3, 8, 2, 0), 5);
  EXPECT_EQ(check_disjoint(p, n), n);
  EXPECT_GT(mean_largest_share(p, y, 10), 0.9);
}

TEST(Partition, PerClassSharesThatAllUnderflowFallBackToEvenSplit) {
  // At alpha = 1e-3 a class's Dir draw puts all its mass on one client; when that client is
  // already full and every other share underflowed to 0, the class is split evenly over the
  // clients that are not full. Otherwise a class is (almost) never split near 50/50.
  const int64_t n = 3000, classes = 30;
  const torch::Tensor y = balanced_labels(n, classes);
  int even_splits = 0;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    const ClientPartition p =
        make_partition(y, classes, options("dirichlet", "per_class", 1e-3, 3, 0, 0), seed);
    EXPECT_EQ(check_disjoint(p, n), n);
    const auto hist = histograms(p, y, classes);
    for (size_t c = 0; c < static_cast<size_t>(classes); ++c) {
      int halves = 0;  // clients holding 40..60 of the class's 100 examples
      for (size_t j = 0; j < 3; ++j) halves += hist[j][c] >= 40 && hist[j][c] <= 60;
      even_splits += halves == 2;
    }
  }
  EXPECT_GE(even_splits, 3);
}

TEST(Partition, HeldoutIdsAreASeededSubsetAndTrainIdsTheRest) {
  const torch::Tensor y = balanced_labels(1000, 10);
  std::set<std::vector<int64_t>> heldout_sets;
  for (uint64_t seed = 0; seed < 6; ++seed) {
    const ClientPartition p = make_partition(y, 10, options("iid", "", 0.1, 20, 5), seed);
    ASSERT_EQ(p.train_ids.size(), 20u);
    ASSERT_EQ(p.heldout_ids.size(), 5u);
    EXPECT_TRUE(std::is_sorted(p.train_ids.begin(), p.train_ids.end()));
    EXPECT_TRUE(std::is_sorted(p.heldout_ids.begin(), p.heldout_ids.end()));
    std::vector<int64_t> all = p.train_ids;
    all.insert(all.end(), p.heldout_ids.begin(), p.heldout_ids.end());
    std::sort(all.begin(), all.end());
    std::vector<int64_t> expected(25);
    std::iota(expected.begin(), expected.end(), 0);
    EXPECT_EQ(all, expected);
    heldout_sets.insert(p.heldout_ids);
  }
  EXPECT_GE(heldout_sets.size(), 5u);  // not a fixed block of ids
  // The held-out ids do not depend on the partition kind, only on the seed and K + T.
  const ClientPartition q = make_partition(y, 10, options("quantity", "", 1.0, 20, 5, 1), 3);
  const ClientPartition r = make_partition(y, 10, options("iid", "", 1.0, 20, 5), 3);
  EXPECT_EQ(q.heldout_ids, r.heldout_ids);
  // T = 0: every client trains.
  const ClientPartition none = make_partition(y, 10, options("iid", "", 0.1, 7, 0), 0);
  EXPECT_TRUE(none.heldout_ids.empty());
  EXPECT_EQ(none.train_ids, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
}

TEST(Partition, RejectsImpossibleOptionsWithOneLineMessages) {
  const torch::Tensor y = balanced_labels(300, 10);
  auto message = [&](const torch::Tensor& labels, int64_t classes, const PartitionOptions& o) {
    try {
      make_partition(labels, classes, o, 0);
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      return msg;
    }
    ADD_FAILURE() << "no ConfigError";
    return std::string();
  };
  EXPECT_EQ(message(y, 10, options("iid", "", 0.1, 500, 20)),
            "algorithm.clients = 500 with heldout_clients = 20: more clients than the 300 "
            "training examples");
  EXPECT_NE(message(y, 10, options("iid", "", 0.1, 0, 2)).find("algorithm.clients"),
            std::string::npos);
  EXPECT_NE(message(y, 10, options("iid", "", 0.1, 5, -1)).find("heldout_clients"),
            std::string::npos);
  EXPECT_NE(message(y, 10, options("dirichlet", "per_class", 0.0, 5, 1)).find("alpha"),
            std::string::npos);
  EXPECT_NE(message(y, 10, options("quantity", "", -1.0, 5, 1)).find("alpha"), std::string::npos);
  EXPECT_NE(message(y, 10, options("dirichlet", "per_class", NAN, 5, 1)).find("alpha"),
            std::string::npos);
  EXPECT_NE(message(y, 10, options("shards", "", 0.1, 5, 1)).find("algorithm.partition"),
            std::string::npos);
  EXPECT_NE(message(y, 10, options("dirichlet", "per_row", 0.1, 5, 1)).find("dirichlet_mode"),
            std::string::npos);
  EXPECT_NE(
      message(y, 10, options("dirichlet", "per_class", 0.1, 20, 5, 13)).find("min_client_size"),
      std::string::npos);
  EXPECT_NE(message(y, 10, options("quantity", "", 0.1, 5, 1, -1)).find("min_client_size"),
            std::string::npos);
  EXPECT_NE(message(y.to(torch::kInt), 10, options("iid", "", 0.1, 5, 1)).find("int64"),
            std::string::npos);
  EXPECT_NE(message(y.view({30, 10}), 10, options("iid", "", 0.1, 5, 1)).find("1-D"),
            std::string::npos);
  EXPECT_NE(message(y, 5, options("iid", "", 0.1, 5, 1)).find("[0, 5)"), std::string::npos);
  EXPECT_NE(message(y - 1, 10, options("iid", "", 0.1, 5, 1)).find("-1"), std::string::npos);
  // Possible edge cases pass: K + T = n; min_size close to n / (K + T) with near-equal shares.
  EXPECT_NO_THROW(make_partition(y, 10, options("iid", "", 0.1, 290, 10), 0));
  EXPECT_NO_THROW(make_partition(y, 10, options("quantity", "", 1e4, 25, 5, 9), 0));
}

TEST(Partition, FormatPartitionShowsEveryClientAndTotals) {
  const int64_t n = 600, classes = 3;
  const torch::Tensor y = balanced_labels(n, classes);
  const ClientPartition p =
      make_partition(y, classes, options("dirichlet", "per_class", 0.5, 4, 2, 1), 8);
  const std::string table = format_partition(p, y, classes);
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t end; (end = table.find('\n', start)) != std::string::npos; start = end + 1) {
    lines.push_back(table.substr(start, end - start));
  }
  ASSERT_EQ(lines.size(), 1u + 6u + 1u) << table;
  EXPECT_EQ(lines.front().rfind("client", 0), 0u) << table;
  EXPECT_EQ(lines.back().rfind("total", 0), 0u) << table;
  for (const std::string& line : lines) EXPECT_EQ(line.size(), lines.front().size()) << table;
  int heldout_rows = 0;
  for (const std::string& line : lines) heldout_rows += line.find("heldout") != std::string::npos;
  EXPECT_EQ(heldout_rows, 2);
  // The totals row: all 600 examples, 200 of each class.
  std::istringstream totals(lines.back());
  std::vector<std::string> cells;
  for (std::string cell; totals >> cell;) cells.push_back(cell);
  EXPECT_EQ(cells, (std::vector<std::string>{"total", "600", "200", "200", "200"})) << table;
  // Client 0's row holds its size.
  EXPECT_NE(lines[1].find(std::to_string(p.size(0))), std::string::npos) << table;
}

// ---------------------------------------------------------------------------------------------
// Client sampling.

TEST(ClientSampler, NoRepeatsInARoundAndHeldoutNeverSampled) {
  const torch::Tensor y = balanced_labels(1000, 10);
  const ClientPartition p = make_partition(y, 10, options("iid", "", 0.1, 20, 5), 1);
  const std::set<int64_t> heldout(p.heldout_ids.begin(), p.heldout_ids.end());
  const std::set<int64_t> train(p.train_ids.begin(), p.train_ids.end());
  for (int64_t round = 0; round < 500; ++round) {
    const std::vector<int64_t> s = sample_clients(p.train_ids, 5, 42, round);
    ASSERT_EQ(s.size(), 5u);
    EXPECT_EQ(std::set<int64_t>(s.begin(), s.end()).size(), 5u) << "round " << round;
    for (int64_t id : s) {
      EXPECT_EQ(heldout.count(id), 0u) << "held-out client " << id << " sampled";
      EXPECT_EQ(train.count(id), 1u);
    }
  }
}

TEST(ClientSampler, EachClientIsSampledAsOftenAsChanceAllows) {
  std::vector<int64_t> ids(20);
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<int64_t> counts(20, 0);
  for (int64_t round = 0; round < 2000; ++round) {
    for (int64_t id : sample_clients(ids, 5, 7, round)) ++counts[static_cast<size_t>(id)];
  }
  const double p = 5.0 / 20.0, sigma = std::sqrt(2000 * p * (1 - p));
  for (size_t i = 0; i < counts.size(); ++i) {
    EXPECT_NEAR(static_cast<double>(counts[i]), 500.0, 4 * sigma) << "client " << i;
  }
}

TEST(ClientSampler, RoundSampleDependsOnlyOnSeedAndRound) {
  std::vector<int64_t> ids = {1, 3, 4, 6, 9, 10, 12, 15, 17, 18};
  // An uninterrupted run, rounds 0..9.
  std::vector<std::vector<int64_t>> straight;
  for (int64_t t = 0; t < 10; ++t) straight.push_back(sample_clients(ids, 4, 5, t));
  // A run resumed after round 3 and one that asks for the rounds backwards.
  for (int64_t t = 4; t < 10; ++t) EXPECT_EQ(sample_clients(ids, 4, 5, t), straight[t]);
  for (int64_t t = 9; t >= 0; --t) EXPECT_EQ(sample_clients(ids, 4, 5, t), straight[t]);
  // Rounds differ from each other, and another seed gives other samples.
  EXPECT_GT(std::set<std::vector<int64_t>>(straight.begin(), straight.end()).size(), 7u);
  int same = 0;
  for (int64_t t = 0; t < 10; ++t) same += sample_clients(ids, 4, 6, t) == straight[t];
  EXPECT_LT(same, 3);
  // k is a prefix of the same shuffle: fewer clients, the same first ones.
  const std::vector<int64_t> three = sample_clients(ids, 3, 5, 2);
  EXPECT_EQ(three, std::vector<int64_t>(straight[2].begin(), straight[2].begin() + 3));
}

TEST(ClientSampler, AllClientsOrTooMany) {
  const std::vector<int64_t> ids = {0, 2, 5, 7};
  std::vector<int64_t> all = sample_clients(ids, 4, 1, 0);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, ids);
  EXPECT_TRUE(sample_clients(ids, 0, 1, 0).empty());
  EXPECT_THROW(sample_clients(ids, 5, 1, 0), ConfigError);
  EXPECT_THROW(sample_clients(ids, -1, 1, 0), ConfigError);
}

// ---------------------------------------------------------------------------------------------
// Placement.

TEST(ClientPlacement, HandWorkedDealStaticAndLpt) {
  // sizes[id]; sampled in round order.
  std::vector<int64_t> sizes(10, 0);
  sizes[7] = 10;
  sizes[2] = 50;
  sizes[9] = 30;
  sizes[4] = 30;
  sizes[5] = 20;
  const std::vector<int64_t> sampled = {7, 2, 9, 4, 5};
  EXPECT_EQ(place_clients(sampled, sizes, 2, "deal"), (std::vector<int64_t>{0, 1, 0, 1, 0}));
  EXPECT_EQ(place_clients(sampled, sizes, 2, "static"), (std::vector<int64_t>{1, 0, 1, 0, 1}));
  EXPECT_EQ(place_clients(sampled, sizes, 3, "static"), (std::vector<int64_t>{1, 2, 0, 1, 2}));
  // LPT, by size: 2 (50) -> r0; 9 (30, before 4) -> r1; 4 (30) -> r1 (30 < 50); 5 (20) -> r0
  // (50 < 60); 7 (10) -> r1 (60 < 70). Loads 70 / 70.
  EXPECT_EQ(place_clients(sampled, sizes, 2, "lpt"), (std::vector<int64_t>{1, 0, 1, 1, 0}));
  // Three ranks: 2 -> r0, 9 -> r1, 4 -> r2, 5 -> r1 (30 = 30, lower rank), 7 -> r2 (30 < 50).
  EXPECT_EQ(place_clients(sampled, sizes, 3, "lpt"), (std::vector<int64_t>{2, 0, 1, 2, 1}));
  // Equal sizes: positions in order, ties to the lower rank.
  const std::vector<int64_t> equal(10, 5);
  EXPECT_EQ(place_clients({3, 8, 1, 0, 6}, equal, 3, "lpt"), (std::vector<int64_t>{0, 1, 2, 0, 1}));
  // One rank runs everything.
  EXPECT_EQ(place_clients(sampled, sizes, 1, "lpt"), (std::vector<int64_t>(5, 0)));
}

TEST(ClientPlacement, LptBalancesSkewedSizesBetterThanDeal) {
  const torch::Tensor y = balanced_labels(20000, 10);
  const ClientPartition p = make_partition(y, 10, options("quantity", "", 0.5, 100, 0, 0), 2);
  std::vector<int64_t> sizes;
  for (size_t j = 0; j < p.indices.size(); ++j) sizes.push_back(p.size(static_cast<int64_t>(j)));
  auto max_load = [&](const std::vector<int64_t>& sampled, const std::vector<int64_t>& rank) {
    std::vector<int64_t> load(4, 0);
    for (size_t j = 0; j < sampled.size(); ++j) {
      load[static_cast<size_t>(rank[j])] += sizes[static_cast<size_t>(sampled[j])];
    }
    return *std::max_element(load.begin(), load.end());
  };
  double lpt_total = 0.0, deal_total = 0.0;
  int lpt_not_worse = 0;
  const int rounds = 100;
  for (int64_t t = 0; t < rounds; ++t) {
    const std::vector<int64_t> s = sample_clients(p.train_ids, 12, 3, t);
    const int64_t lpt = max_load(s, place_clients(s, sizes, 4, "lpt"));
    const int64_t deal = max_load(s, place_clients(s, sizes, 4, "deal"));
    lpt_total += static_cast<double>(lpt);
    deal_total += static_cast<double>(deal);
    lpt_not_worse += lpt <= deal;
  }
  EXPECT_LT(lpt_total, 0.85 * deal_total);
  EXPECT_GE(lpt_not_worse, 90);
}

TEST(ClientPlacement, RejectsUnknownPlacementAndEmptyWorld) {
  const std::vector<int64_t> sizes = {1, 2, 3};
  EXPECT_THROW(place_clients({0, 1}, sizes, 2, "random"), ConfigError);
  EXPECT_THROW(place_clients({0, 1}, sizes, 0, "deal"), ConfigError);
  try {
    place_clients({0, 1}, sizes, 2, "greedy");
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("greedy"), std::string::npos);
  }
}

}  // namespace
}  // namespace desync
