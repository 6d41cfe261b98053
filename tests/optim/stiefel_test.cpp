// SPEL tests: polar factors, tangent projection, retraction, spec tests 1, 3, 4 (MAPL, §2).
#include "desync/optim/stiefel.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "desync/core/error.h"

namespace desync {
namespace {

double orthonormality_error(const torch::Tensor& a) {
  const torch::Tensor eye = torch::eye(a.size(1), a.options());
  return (a.t().matmul(a) - eye).abs().max().item<double>();
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

torch::Tensor gaussian(std::vector<int64_t> shape, uint64_t seed,
                       torch::ScalarType dtype = torch::kDouble) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randn(shape, generator, torch::kDouble).to(dtype);
}

TEST(StiefelHelpers, SymIsTheSymmetricPart) {
  const torch::Tensor s = gaussian({5, 5}, 1);
  const torch::Tensor part = sym(s);
  EXPECT_LT(max_abs_diff(part, part.t()), 1e-15);
  EXPECT_LT(max_abs_diff(part + (s - s.t()) / 2, s), 1e-15);
}

TEST(StiefelHelpers, RandomStiefelIsOrthonormalAndReproducible) {
  const torch::Tensor a = random_stiefel(40, 8, 7, torch::kDouble);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{40, 8}));
  EXPECT_EQ(a.scalar_type(), torch::kDouble);
  EXPECT_LT(orthonormality_error(a), 1e-13);
  EXPECT_TRUE(torch::equal(a, random_stiefel(40, 8, 7, torch::kDouble)));
  EXPECT_FALSE(torch::allclose(a, random_stiefel(40, 8, 8, torch::kDouble)));
  // float32 is the rounding of the same point.
  const torch::Tensor f = random_stiefel(40, 8, 7);
  EXPECT_EQ(f.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(f, a.to(torch::kFloat)));
  EXPECT_LT(orthonormality_error(f), 1e-6);
  // The sign fix: a^T of the Gaussian it came from is upper triangular with a positive diagonal.
  const torch::Tensor r = a.t().matmul(gaussian({40, 8}, 7));
  EXPECT_TRUE((r.diagonal() > 0).all().item<bool>());
  EXPECT_LT(r.tril(-1).abs().max().item<double>(), 1e-12);
  EXPECT_THROW(random_stiefel(4, 8, 0), ConfigError);
}

TEST(StiefelHelpers, LargestPrincipalAngle) {
  const torch::Tensor a = random_stiefel(30, 5, 1, torch::kDouble);
  // The same subspace in another basis: angle 0.
  const torch::Tensor rotation = random_stiefel(5, 5, 2, torch::kDouble);
  EXPECT_LT(largest_principal_angle(a, a.matmul(rotation)), 1e-6);
  EXPECT_LT(largest_principal_angle(a, a), 1e-6);
  // Orthogonal subspaces: pi / 2.
  const torch::Tensor q = random_stiefel(30, 10, 3, torch::kDouble);
  const torch::Tensor first = q.narrow(1, 0, 5), second = q.narrow(1, 5, 5);
  EXPECT_NEAR(largest_principal_angle(first, second), std::numbers::pi / 2, 1e-9);
  // A known angle: rotate one column by theta inside a plane orthogonal to the rest.
  const double theta = 0.3;
  torch::Tensor b = first.clone();
  b.select(1, 4).copy_(std::cos(theta) * first.select(1, 4) +
                       std::sin(theta) * second.select(1, 0));
  EXPECT_NEAR(largest_principal_angle(first, b), theta, 1e-9);
}

TEST(StiefelTangent, SymOfATransposeGIsZeroFloat64) {
  const torch::Tensor a = random_stiefel(64, 16, 11, torch::kDouble);
  const torch::Tensor g = gaussian({64, 16}, 12);
  const torch::Tensor g_r = stiefel_tangent(a, g);
  EXPECT_GT(sym(a.t().matmul(g)).abs().max().item<double>(), 0.1);  // not tangent to start with
  EXPECT_LT(sym(a.t().matmul(g_r)).abs().max().item<double>(), 1e-6);
  EXPECT_LT(sym(a.t().matmul(g_r)).abs().max().item<double>(), 1e-13);
  // A projection: idempotent, and only the normal part a sym(a^T g) was removed.
  EXPECT_LT(max_abs_diff(stiefel_tangent(a, g_r), g_r), 1e-13);
  EXPECT_LT(max_abs_diff(g - g_r, a.matmul(sym(a.t().matmul(g)))), 1e-13);
}

TEST(StiefelTangent, SymOfATransposeGIsZeroFloat32) {
  const torch::Tensor a = random_stiefel(64, 16, 11);
  const torch::Tensor g = gaussian({64, 16}, 12, torch::kFloat);
  const torch::Tensor g_r = stiefel_tangent(a, g);
  EXPECT_GT(sym(a.t().matmul(g)).abs().max().item<double>(), 0.1);
  // float32 rounding of O(1) entries summed over d = 64: a few 1e-7.
  EXPECT_LT(sym(a.t().matmul(g_r)).abs().max().item<double>(), 2e-6);
}

TEST(StiefelPolar, MsignNewtonSchulzLandsInTheMuonBand) {
  for (const torch::ScalarType dtype : {torch::kDouble, torch::kFloat}) {
    const torch::Tensor y = gaussian({64, 16}, 21, dtype) * 3.0;
    const torch::Tensor x = msign_newton_schulz(y, 5);
    EXPECT_EQ(x.scalar_type(), dtype);
    EXPECT_EQ(x.sizes(), y.sizes());
    const torch::Tensor s = torch::linalg_svdvals(x.to(torch::kDouble));
    EXPECT_GT(s.min().item<double>(), 0.6);
    EXPECT_LT(s.max().item<double>(), 1.3);
    // Same singular vectors as the exact polar factor: x is close to U V^T.
    EXPECT_LT(max_abs_diff(x.to(torch::kDouble), polar_exact(y.to(torch::kDouble))), 0.35);
    // Wide input works too (its transpose's result, transposed).
    EXPECT_LT(max_abs_diff(msign_newton_schulz(y.t(), 5), x.t()), 1e-5);
  }
  // Without iterations it is only y / ||y||_F: far outside the band.
  const torch::Tensor y = gaussian({64, 16}, 21);
  EXPECT_LT(torch::linalg_svdvals(msign_newton_schulz(y, 0)).max().item<double>(), 0.6);
  EXPECT_TRUE(torch::equal(msign_newton_schulz(torch::zeros({8, 4}), 5), torch::zeros({8, 4})));
}

TEST(StiefelPolar, ExactPolarIsUVTransposeWithOrthonormalColumns) {
  const torch::Tensor y = gaussian({50, 12}, 31);
  const torch::Tensor p = polar_exact(y);
  EXPECT_LT(orthonormality_error(p), 1e-13);
  auto [u, s, vh] = torch::linalg_svd(y, false);
  EXPECT_LT(max_abs_diff(p, u.matmul(vh)), 1e-12);
  // y = p (y^T y)^{1/2}: p^T y is symmetric positive definite.
  const torch::Tensor h = p.t().matmul(y);
  EXPECT_LT(max_abs_diff(h, h.t()), 1e-12);
  EXPECT_GT(torch::linalg_eigvalsh(h).min().item<double>(), 0.0);
  // A point of the manifold is its own polar factor.
  const torch::Tensor a = random_stiefel(50, 12, 32, torch::kDouble);
  EXPECT_LT(max_abs_diff(polar_exact(a), a), 1e-13);
}

TEST(StiefelPolar, NewtonSchulzPolarMatchesExact) {
  const torch::Tensor y = gaussian({50, 12}, 41) * 5.0;
  const torch::Tensor ns = polar_newton_schulz(y, 1e-12);
  EXPECT_LT(orthonormality_error(ns), 1e-12);
  EXPECT_LT(max_abs_diff(ns, polar_exact(y)), 1e-5);
  // Near the manifold (as in a retraction), with the default tolerance, and in float32.
  const torch::Tensor near =
      random_stiefel(50, 12, 42, torch::kDouble) + 0.05 * gaussian({50, 12}, 43);
  EXPECT_LT(max_abs_diff(polar_newton_schulz(near), polar_exact(near)), 1e-5);
  const torch::Tensor near32 = near.to(torch::kFloat);
  const torch::Tensor ns32 = polar_newton_schulz(near32);
  EXPECT_EQ(ns32.scalar_type(), torch::kFloat);
  EXPECT_LT(orthonormality_error(ns32), 1e-5);
  EXPECT_LT(max_abs_diff(ns32.to(torch::kDouble), polar_exact(near)), 1e-5);
  // One iteration is not enough: the tolerance is what stops it.
  EXPECT_GT(max_abs_diff(polar_newton_schulz(y, 1e-12, 1), polar_exact(y)), 1e-2);
}

// Spec test 1: A stays on the manifold over 100 SPEL steps on random gradients.
void expect_stays_orthonormal(torch::ScalarType dtype, bool exact_polar, double tolerance) {
  SpelState state(random_stiefel(64, 16, 51, dtype), SpelOptions{.exact_polar = exact_polar});
  const torch::Tensor start = state.projector().clone();
  const torch::Tensor target = gaussian({64, 16}, 52, dtype);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(53);
  double worst = 0.0;
  for (int step = 0; step < 100; ++step) {
    // Loss 0.5 ||A - target||^2 plus gradient noise.
    const torch::Tensor noise = torch::randn({64, 16}, generator, torch::kDouble).to(dtype);
    state.step(state.projector() - target + noise, 0.05);
    worst = std::max(worst, orthonormality_error(state.projector()));
  }
  EXPECT_LT(worst, tolerance);
  EXPECT_EQ(state.projector().scalar_type(), dtype);
  EXPECT_GT(max_abs_diff(state.projector(), start), 0.1);  // it did move
}

TEST(StiefelSpel, StaysOrthonormalWithExactPolarFloat64) {
  expect_stays_orthonormal(torch::kDouble, true, 1e-12);
}
TEST(StiefelSpel, StaysOrthonormalWithExactPolarFloat32) {
  expect_stays_orthonormal(torch::kFloat, true, 1e-5);
}
TEST(StiefelSpel, StaysOrthonormalWithNewtonSchulzPolarFloat64) {
  expect_stays_orthonormal(torch::kDouble, false, 1e-5);
}
TEST(StiefelSpel, StaysOrthonormalWithNewtonSchulzPolarFloat32) {
  expect_stays_orthonormal(torch::kFloat, false, 1e-5);
}

// One step by the formula, with and without the tangent projection.
torch::Tensor reference_step(const torch::Tensor& a, const torch::Tensor& m, const torch::Tensor& g,
                             double lr, double beta, bool project) {
  const torch::Tensor g_r = project ? g - a.matmul((a.t().matmul(g) + g.t().matmul(a)) / 2) : g;
  const torch::Tensor m_next = beta * m + (1 - beta) * g_r;
  return polar_exact(a - lr * msign_newton_schulz(m_next, 5));
}

TEST(StiefelSpel, StepFollowsTheFormulaInPlace) {
  const torch::Tensor a0 = random_stiefel(32, 6, 61, torch::kDouble);
  torch::Tensor a = a0.clone();
  SpelState state(a, SpelOptions{.beta = 0.9});
  const torch::Tensor g1 = gaussian({32, 6}, 62), g2 = gaussian({32, 6}, 63);
  state.step(g1, 0.1);
  const torch::Tensor expected1 = reference_step(a0, torch::zeros_like(a0), g1, 0.1, 0.9, true);
  EXPECT_LT(max_abs_diff(state.projector(), expected1), 1e-12);
  EXPECT_LT(max_abs_diff(a, expected1), 1e-12);  // the caller's tensor was updated in place
  // The projection matters: without it the step differs.
  EXPECT_GT(max_abs_diff(expected1, reference_step(a0, torch::zeros_like(a0), g1, 0.1, 0.9, false)),
            1e-3);
  const torch::Tensor m1 = 0.1 * stiefel_tangent(a0, g1);
  EXPECT_LT(max_abs_diff(state.momentum(), m1), 1e-12);
  state.step(g2, 0.1);
  EXPECT_LT(max_abs_diff(state.projector(), reference_step(expected1, m1, g2, 0.1, 0.9, true)),
            1e-12);
}

// Spec test 4: min_A ||X - X A A^T||_F^2 / N on rank-r data plus noise finds the subspace.
double subspace_recovery_angle(torch::ScalarType dtype, bool exact_polar) {
  const int64_t d = 32, r = 4, n = 512, steps = 500;
  const torch::Tensor truth = random_stiefel(d, r, 71, dtype);
  const torch::Tensor x =
      (gaussian({n, r}, 72).matmul(truth.to(torch::kDouble).t()) + 1e-3 * gaussian({n, d}, 73))
          .to(dtype);
  SpelState state(random_stiefel(d, r, 74, dtype), SpelOptions{.exact_polar = exact_polar});
  EXPECT_GT(largest_principal_angle(state.projector(), truth), 0.5);
  const double lr0 = 0.1;
  for (int64_t t = 0; t < steps; ++t) {
    const torch::Tensor a = state.projector();
    const torch::Tensor xa = x.matmul(a);
    const torch::Tensor e = x - xa.matmul(a.t());
    const torch::Tensor grad = -2.0 / n * (x.t().matmul(e.matmul(a)) + e.t().matmul(xa));
    state.step(grad, lr0 * (1.0 - static_cast<double>(t) / steps));  // linear decay
  }
  return largest_principal_angle(state.projector(), truth);
}

TEST(StiefelSpel, RecoversTheSubspaceFloat64) {
  EXPECT_LT(subspace_recovery_angle(torch::kDouble, true), 1e-2);
}
TEST(StiefelSpel, RecoversTheSubspaceFloat32) {
  EXPECT_LT(subspace_recovery_angle(torch::kFloat, true), 1e-2);
}
TEST(StiefelSpel, RecoversTheSubspaceWithNewtonSchulzRetraction) {
  EXPECT_LT(subspace_recovery_angle(torch::kFloat, false), 1e-2);
}

TEST(StiefelSpel, RejectsBadShapes) {
  EXPECT_THROW(SpelState(torch::zeros({4, 8}), SpelOptions{}), ConfigError);
  SpelState state(random_stiefel(8, 4, 0), SpelOptions{});
  EXPECT_THROW(state.step(torch::zeros({8, 5}), 0.1), ConfigError);
}

}  // namespace
}  // namespace desync
