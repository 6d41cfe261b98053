// Residual VQ tests: encoding, EMA k-means, dead codes, packing, streaming (MAPL spec test 5).
#include "desync/algorithms/pipeline/residual_vq.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "desync/core/error.h"

namespace desync {
namespace {

torch::Tensor gaussian(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randn(shape, generator, torch::kFloat);
}

// Mean squared reconstruction error per vector.
double reconstruction_error(const ResidualVq& vq, const torch::Tensor& z) {
  return (z - vq.decode(vq.encode(z))).square().sum(1).mean().item<double>();
}

// Points around `clusters` centres (spread 3) with noise 0.1: [n, dim].
torch::Tensor clustered(int64_t n, int64_t dim, int64_t clusters, uint64_t seed) {
  const torch::Tensor centres = gaussian({clusters, dim}, 1000) * 3.0;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const torch::Tensor which = torch::randint(clusters, {n}, generator, torch::kLong);
  return centres.index_select(0, which) + 0.1 * gaussian({n, dim}, seed + 1);
}

TEST(ResidualVqConfig, RejectsBadOptions) {
  EXPECT_THROW(ResidualVq(ResidualVqOptions{.dim = 10, .groups = 3}), ConfigError);
  EXPECT_THROW(ResidualVq(ResidualVqOptions{.dim = 8, .groups = 0}), ConfigError);
  EXPECT_THROW(ResidualVq(ResidualVqOptions{.dim = 8, .codes = 1}), ConfigError);
  EXPECT_THROW(ResidualVq(ResidualVqOptions{.dim = 8, .levels = 0}), ConfigError);
  EXPECT_NO_THROW(ResidualVq(ResidualVqOptions{.dim = 12, .groups = 3}));
  ResidualVq vq(ResidualVqOptions{.dim = 8, .groups = 2, .levels = 2, .codes = 4});
  EXPECT_THROW(vq.encode(torch::zeros({3, 7})), ConfigError);
  EXPECT_THROW(vq.decode(torch::zeros({3, 2, 3}, torch::kLong)), ConfigError);
  EXPECT_THROW(vq.update(torch::zeros({3, 8}), torch::zeros({2, 2, 2}, torch::kLong)), ConfigError);
}

TEST(ResidualVqConfig, IndexBits) {
  EXPECT_EQ(index_bits(2), 1);
  EXPECT_EQ(index_bits(3), 2);
  EXPECT_EQ(index_bits(4), 2);
  EXPECT_EQ(index_bits(5), 3);
  EXPECT_EQ(index_bits(16), 4);
  EXPECT_EQ(index_bits(17), 5);
  EXPECT_EQ(index_bits(256), 8);
  EXPECT_EQ(index_bits(1000), 10);
  EXPECT_EQ(index_bits(1024), 10);
  EXPECT_THROW(index_bits(1), ConfigError);
}

TEST(ResidualVqInit, CodebooksFollowTheSeedAndShrinkPerLevel) {
  const ResidualVqOptions options{.dim = 8, .groups = 2, .levels = 3, .codes = 512, .seed = 5};
  ResidualVq vq(options);
  EXPECT_EQ(vq.codebooks().sizes(), (std::vector<int64_t>{6, 512, 4}));
  EXPECT_EQ(vq.codebooks().scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(vq.codebooks(), ResidualVq(options).codebooks()));
  EXPECT_EQ(ResidualVq(options, torch::kDouble).codebooks().scalar_type(), torch::kDouble);
  const torch::Tensor books = vq.codebooks().reshape({2, 3, 512, 4});
  for (int64_t rho = 0; rho < 3; ++rho) {
    const double expected = 1.0 / (1 << (2 * rho));  // init_std / 4^rho
    EXPECT_NEAR(books.select(1, rho).std().item<double>(), expected, 0.1 * expected);
  }
  // Codebook (g, rho) does not depend on R.
  ResidualVqOptions one_level = options;
  one_level.levels = 1;
  const torch::Tensor level0 = ResidualVq(one_level).codebooks();  // [2, 512, 4]
  EXPECT_TRUE(torch::equal(level0, books.select(1, 0)));
}

TEST(ResidualVqEncode, ShapesAndExactCodewords) {
  ResidualVq vq(ResidualVqOptions{.dim = 6, .groups = 3, .levels = 1, .codes = 16, .seed = 1});
  // Vectors made of codewords are encoded exactly.
  const torch::Tensor want = torch::randint(16, {20, 3, 1}, torch::kLong);
  const torch::Tensor z = vq.decode(want);
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{20, 6}));
  const torch::Tensor got = vq.encode(z);
  EXPECT_EQ(got.sizes(), (std::vector<int64_t>{20, 3, 1}));
  EXPECT_EQ(got.scalar_type(), torch::kLong);
  EXPECT_TRUE(torch::equal(got, want));
  EXPECT_TRUE(torch::equal(vq.decode(got), z));
  EXPECT_EQ(vq.encode(torch::zeros({0, 6})).sizes(), (std::vector<int64_t>{0, 3, 1}));
}

TEST(ResidualVqEncode, MatchesAGreedyPerVectorReference) {
  ResidualVq vq(ResidualVqOptions{.dim = 4, .groups = 2, .levels = 3, .codes = 8, .seed = 2});
  const torch::Tensor z = gaussian({25, 4}, 3);
  const torch::Tensor indices = vq.encode(z);
  EXPECT_EQ(indices.sizes(), (std::vector<int64_t>{25, 2, 3}));
  const torch::Tensor books = vq.codebooks();
  torch::Tensor decoded = torch::zeros({25, 4});
  for (int64_t n = 0; n < 25; ++n) {
    for (int64_t g = 0; g < 2; ++g) {
      torch::Tensor residual = z[n].narrow(0, 2 * g, 2).clone();
      for (int64_t rho = 0; rho < 3; ++rho) {
        const torch::Tensor book = books[g * 3 + rho];  // [K, 2]
        const int64_t best = (book - residual).square().sum(1).argmin().item<int64_t>();
        EXPECT_EQ(indices[n][g][rho].item<int64_t>(), best) << n << " " << g << " " << rho;
        residual = residual - book[best];
        decoded[n].narrow(0, 2 * g, 2) += book[best];
      }
    }
  }
  EXPECT_TRUE(torch::allclose(vq.decode(indices), decoded, 1e-6, 1e-6));
}

TEST(ResidualVqLearning, EmaKMeansReducesTheQuantisationError) {
  ResidualVq vq(
      ResidualVqOptions{.dim = 8, .groups = 2, .levels = 1, .codes = 16, .decay = 0.9, .seed = 4});
  const torch::Tensor held_out = clustered(2048, 8, 6, 50);
  const double before = reconstruction_error(vq, held_out);
  for (int step = 0; step < 100; ++step) {
    const torch::Tensor z = clustered(256, 8, 6, 100 + 2 * step);
    vq.update(z, vq.encode(z));
  }
  const double after = reconstruction_error(vq, held_out);
  EXPECT_LT(after, 0.1 * before) << before << " -> " << after;
  // Six clusters of noise 0.1 in 8 dimensions: the floor is about 8 * 0.01 = 0.08 per vector.
  EXPECT_LT(after, 0.5) << before << " -> " << after;
}

TEST(ResidualVqLearning, UpdateIsAnEmaOfTheAssignedMeans) {
  // One code per cluster, decay 0.5: after one update each codeword moved half-way (in the count
  // and sum sense) to the mean of the vectors it was assigned.
  ResidualVq vq(
      ResidualVqOptions{.dim = 2, .levels = 1, .codes = 2, .decay = 0.5, .dead_threshold = 0.0});
  vq.codebooks().copy_(torch::tensor({{{-1.0f, 0.0f}, {1.0f, 0.0f}}}));
  const torch::Tensor z =
      torch::tensor({{-3.0f, 1.0f}, {-3.0f, -1.0f}, {-1.0f, 0.0f}, {2.0f, 2.0f}});
  vq.update(z, vq.encode(z));
  // Code 0: N = 0.5 * 0.5 + 0.5 * 0.75, S = 0.5 * (-0.5, 0) + 0.5 * (-7, 0) / 4.
  // Code 1: N = 0.5 * 0.5 + 0.5 * 0.25, S = 0.5 * (0.5, 0) + 0.5 * (2, 2) / 4.
  const torch::Tensor expected =
      torch::tensor({{{-1.125f / 0.625f, 0.0f}, {0.5f / 0.375f, 0.25f / 0.375f}}});
  EXPECT_TRUE(torch::allclose(vq.codebooks(), expected, 1e-4, 1e-5)) << vq.codebooks();
}

TEST(ResidualVqLearning, DeadCodesGetReset) {
  // Data far from every initial codeword: only the nearest codewords are ever chosen, so the
  // others die and are moved onto the data.
  const auto far_data = [](uint64_t seed) { return 10.0 + 0.3 * gaussian({128, 4}, seed); };
  const auto train = [&](double dead_threshold) {
    ResidualVq vq(ResidualVqOptions{
        .dim = 4, .codes = 8, .decay = 0.9, .dead_threshold = dead_threshold, .seed = 6});
    for (int step = 0; step < 100; ++step) {
      const torch::Tensor z = far_data(200 + step);
      vq.update(z, vq.encode(z));
    }
    return vq;
  };
  const torch::Tensor centre = torch::full({4}, 10.0f);
  const auto distance_to_data = [&](const ResidualVq& vq) {
    return (vq.codebooks()[0] - centre).norm(2, 1);  // [K]
  };
  const torch::Tensor initial =
      distance_to_data(ResidualVq(ResidualVqOptions{.dim = 4, .codes = 8, .seed = 6}));
  EXPECT_GT(initial.min().item<double>(), 15.0);

  const ResidualVq with_reset = train(1e-3);
  EXPECT_LT(distance_to_data(with_reset).max().item<double>(), 2.0) << with_reset.codebooks();
  const torch::Tensor held_out = far_data(9);
  const torch::Tensor usage = torch::bincount(with_reset.encode(held_out).reshape(-1), {}, 8);
  EXPECT_GT((usage > 0).sum().item<int64_t>(), 4);  // several codewords serve the data, not one
  // Without the reset, most codewords stay far away.
  const ResidualVq without_reset = train(0.0);
  EXPECT_GT((distance_to_data(without_reset) > 5.0).sum().item<int64_t>(), 4);
  EXPECT_LT(reconstruction_error(with_reset, held_out),
            reconstruction_error(without_reset, held_out));
}

// Spec: the reconstruction error is non-increasing in R. What makes this true: every codeword of a
// trained level is (close to) the mean of the residuals assigned to it, and a cluster's squared
// distances to its mean are at most its squared norms, so a level never increases the error of
// the data it was trained on (re-assignment to the nearest codeword only lowers it further).
// Level rho also depends only on levels < rho, so the first R levels of the 4-level model equal
// the R-level model trained on the same data; both are checked.
TEST(ResidualVqLearning, ReconstructionErrorIsNonIncreasingInLevels) {
  const auto data = [](uint64_t seed) { return gaussian({512, 8}, seed); };
  std::vector<ResidualVq> models;
  for (int64_t levels = 1; levels <= 4; ++levels) {
    models.emplace_back(ResidualVqOptions{
        .dim = 8, .groups = 2, .levels = levels, .codes = 16, .decay = 0.9, .seed = 7});
    for (int step = 0; step < 150; ++step) {
      const torch::Tensor z = data(300 + step);
      models.back().update(z, models.back().encode(z));
    }
  }
  const torch::Tensor train_batch = data(300 + 149), held_out = gaussian({4096, 8}, 8);
  for (const torch::Tensor& z : {train_batch, held_out}) {
    double previous = z.square().sum(1).mean().item<double>();  // R = 0: decode to zero
    for (const ResidualVq& vq : models) {
      const double error = reconstruction_error(vq, z);
      EXPECT_LT(error, 0.9 * previous) << "levels " << vq.options().levels;
      previous = error;
    }
  }
  const torch::Tensor deepest = models.back().codebooks().reshape({2, 4, 16, 4});
  for (int64_t r = 1; r < 4; ++r) {
    const torch::Tensor prefix = deepest.narrow(1, 0, r).reshape({2 * r, 16, 4});
    EXPECT_TRUE(torch::allclose(models[r - 1].codebooks(), prefix, 1e-5, 1e-6)) << "levels " << r;
  }
}

TEST(ResidualVqPacking, PayloadIsGTimesRTimesBitsPerVector) {
  const int64_t groups = 3, levels = 2, vectors = 37;
  for (const int64_t codes : {2, 3, 16, 256, 1000}) {
    const int64_t bits = index_bits(codes);
    const torch::Tensor indices = torch::randint(codes, {vectors, groups, levels}, torch::kLong);
    const torch::Tensor packed = pack_indices(indices, bits);
    EXPECT_EQ(packed.scalar_type(), torch::kUInt8);
    EXPECT_EQ(packed.dim(), 1);
    EXPECT_EQ(packed.numel(), (vectors * groups * levels * bits + 7) / 8) << "K " << codes;
    // A multiple of 8 vectors fills whole bytes: exactly G R bits per vector.
    EXPECT_EQ(pack_indices(indices.narrow(0, 0, 32), bits).numel() * 8,
              32 * groups * levels * bits);
    const torch::Tensor back = unpack_indices(packed, indices.numel(), bits);
    EXPECT_EQ(back.scalar_type(), torch::kLong);
    EXPECT_TRUE(torch::equal(back, indices.reshape(-1))) << "K " << codes;
    // The largest index survives too.
    const torch::Tensor top = torch::full({5}, codes - 1, torch::kLong);
    EXPECT_TRUE(torch::equal(unpack_indices(pack_indices(top, bits), 5, bits), top));
  }
}

TEST(ResidualVqPacking, LittleEndianBitOrder) {
  // Index i occupies stream bits [i b, (i + 1) b), least significant first; stream bit p is bit
  // p % 8 of byte p / 8.
  EXPECT_TRUE(torch::equal(pack_indices(torch::tensor({1, 0, 1, 1}, torch::kLong), 1),
                           torch::tensor({0b1101}, torch::kUInt8)));
  EXPECT_TRUE(torch::equal(pack_indices(torch::tensor({0x3FF, 0, 1}, torch::kLong), 10),
                           torch::tensor({0xFF, 0x03, 0x10, 0x00}, torch::kUInt8)));
  EXPECT_TRUE(torch::equal(pack_indices(torch::tensor({2, 1, 3}, torch::kLong), 2),
                           torch::tensor({0b00110110}, torch::kUInt8)));
  EXPECT_THROW(unpack_indices(torch::zeros({1}, torch::kUInt8), 3, 4), ConfigError);
}

TEST(ResidualVqStream, SlicesAreRoundRobin) {
  CodebookStream stream(10, 3);
  EXPECT_EQ(stream.rows(), 3);
  EXPECT_TRUE(torch::equal(stream.next_rows(), torch::tensor({0, 1, 2}, torch::kLong)));
  EXPECT_TRUE(torch::equal(stream.next_rows(), torch::tensor({3, 4, 5}, torch::kLong)));
  EXPECT_TRUE(torch::equal(stream.next_rows(), torch::tensor({6, 7, 8}, torch::kLong)));
  EXPECT_TRUE(torch::equal(stream.next_rows(), torch::tensor({9, 0, 1}, torch::kLong)));
  EXPECT_EQ(stream.position(), 4);
  stream.set_position(1);
  EXPECT_TRUE(torch::equal(stream.next_rows(), torch::tensor({3, 4, 5}, torch::kLong)));
  CodebookStream whole(4, 9);
  EXPECT_EQ(whole.rows(), 4);
  EXPECT_TRUE(torch::equal(std::get<0>(whole.next_rows().sort()), torch::arange(4, torch::kLong)));
}

// Spec: with frozen codebooks the receiver's copy equals the sender's after ceil(K / s) slices.
TEST(ResidualVqStream, ReceiverCopyConvergesAfterCeilKOverSSlices) {
  for (const int64_t rows_per_slice : {3, 5, 1, 10, 16}) {
    const int64_t codes = 10;
    const ResidualVqOptions options{.dim = 6, .groups = 3, .levels = 2, .codes = codes, .seed = 1};
    ResidualVq sender(options);
    ResidualVqOptions other = options;
    other.seed = 2;
    ResidualVq receiver(other);
    ASSERT_FALSE(torch::equal(receiver.codebooks(), sender.codebooks()));
    CodebookStream stream(codes, rows_per_slice);
    const int64_t needed = (codes + rows_per_slice - 1) / rows_per_slice;
    for (int64_t slice = 1; slice <= needed; ++slice) {
      const torch::Tensor rows = stream.next_rows();
      apply_codebook_slice(receiver.codebooks(), rows, sender.codebooks().index_select(1, rows));
      EXPECT_EQ(torch::equal(receiver.codebooks(), sender.codebooks()), slice == needed)
          << "s " << rows_per_slice << ", slice " << slice;
    }
    // The receiver now decodes the sender's indices exactly.
    const torch::Tensor z = gaussian({16, 6}, 3);
    EXPECT_TRUE(torch::equal(receiver.decode(sender.encode(z)), sender.decode(sender.encode(z))));
  }
}

}  // namespace
}  // namespace desync
