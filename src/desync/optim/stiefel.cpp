// SPEL (steepest descent on the Stiefel manifold) with its polar, tangent and subspace helpers.
#include "desync/optim/stiefel.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "desync/core/error.h"

namespace desync {

namespace {

// X^T for the last two dimensions.
torch::Tensor tr(const torch::Tensor& x) { return x.transpose(-2, -1); }

// max |X^T X - I| as a double (one host sync).
double orthonormality_error(const torch::Tensor& x) {
  const torch::Tensor gram = tr(x).matmul(x);
  const torch::Tensor eye = torch::eye(gram.size(-1), gram.options());
  return (gram - eye).abs().max().item<double>();
}

void check_matrix(const torch::Tensor& t, const char* what) {
  if (t.dim() != 2 || !t.is_floating_point()) {
    throw ConfigError(std::string(what) + ": expected a 2-D floating-point matrix");
  }
}

}  // namespace

torch::Tensor sym(const torch::Tensor& s) { return (s + tr(s)) * 0.5; }

torch::Tensor stiefel_tangent(const torch::Tensor& a, const torch::Tensor& g) {
  return g - a.matmul(sym(tr(a).matmul(g)));
}

torch::Tensor msign_newton_schulz(const torch::Tensor& y, int64_t steps) {
  constexpr double ca = 3.4445, cb = -4.7750, cc = 2.0315;
  // Iterate on the wide orientation so the Gram matrix X X^T is the small (r x r) one.
  const bool tall = y.size(-2) > y.size(-1);
  torch::Tensor x = tall ? tr(y) : y;
  // y / ||y||_F; a zero matrix stays zero (0 / tiny) and so do all iterates.
  const double tiny = std::numeric_limits<float>::min();
  x = x / torch::linalg_norm(x, "fro", {-2, -1}, /*keepdim=*/true).clamp_min(tiny);
  for (int64_t i = 0; i < steps; ++i) {
    const torch::Tensor gram = x.matmul(tr(x));
    const torch::Tensor poly = cb * gram + cc * gram.matmul(gram);
    x = ca * x + poly.matmul(x);
  }
  return tall ? tr(x) : x;
}

torch::Tensor polar_exact(const torch::Tensor& y) {
  auto [u, s, vh] = torch::linalg_svd(y, /*full_matrices=*/false);
  return u.matmul(vh);
}

torch::Tensor polar_newton_schulz(const torch::Tensor& y, double tol, int64_t max_iterations) {
  check_matrix(y, "polar_newton_schulz");
  if (y.size(0) < y.size(1)) throw ConfigError("polar_newton_schulz: expected [d, r] with d >= r");
  // ||y||_2 = sqrt(largest eigenvalue of the small Gram matrix y^T y), cheaper than an SVD of y.
  const torch::Tensor gram = tr(y).matmul(y);
  const torch::Tensor spectral = torch::linalg_eigvalsh(gram).max().clamp_min(0).sqrt();
  const double tiny = std::numeric_limits<float>::min();
  torch::Tensor x = y / spectral.clamp_min(tiny);
  // Every singular value s in (0, 1] rises monotonically to 1 under s <- 1.5 s - 0.5 s^3, so the
  // error only shrinks in exact arithmetic: stop at `tol`, or once rounding stops the progress
  // (float32 cannot always reach 1e-6 for large d).
  double error = orthonormality_error(x);
  for (int64_t i = 0; i < max_iterations && error >= tol; ++i) {
    torch::Tensor next = 1.5 * x - 0.5 * x.matmul(tr(x).matmul(x));
    const double next_error = orthonormality_error(next);
    if (next_error >= error && error < 1e-2) break;  // stalled at rounding level
    x = std::move(next);
    error = next_error;
  }
  return x;
}

torch::Tensor random_stiefel(int64_t d, int64_t r, uint64_t seed, torch::ScalarType dtype) {
  if (r < 1 || d < r) throw ConfigError("random_stiefel: need d >= r >= 1");
  // Drawn and factorised in float64, so every dtype gives the rounding of the same matrix.
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const torch::Tensor gaussian = torch::randn({d, r}, generator, torch::kDouble);
  auto [q, rr] = torch::linalg_qr(gaussian, "reduced");
  // Sign fix: flip column j when R[j, j] < 0, which makes the factorisation unique.
  torch::Tensor signs = torch::ones({r}, torch::kDouble);
  signs.masked_fill_(rr.diagonal() < 0, -1.0);
  return (q * signs).to(dtype);
}

double largest_principal_angle(const torch::Tensor& a, const torch::Tensor& b) {
  check_matrix(a, "largest_principal_angle");
  check_matrix(b, "largest_principal_angle");
  const torch::Tensor overlap = tr(a.to(torch::kDouble)).matmul(b.to(torch::kDouble));
  const double smallest = torch::linalg_svdvals(overlap).min().item<double>();
  return std::acos(std::clamp(smallest, 0.0, 1.0));
}

SpelState::SpelState(torch::Tensor a, SpelOptions options) : a_(std::move(a)), options_(options) {
  check_matrix(a_, "SpelState");
  if (a_.size(0) < a_.size(1)) throw ConfigError("SpelState: the projector must be [d, r], d >= r");
  if (!(options_.beta >= 0.0 && options_.beta < 1.0)) {
    throw ConfigError("SpelState: beta must be in [0, 1)");
  }
  torch::NoGradGuard no_grad;
  m_ = torch::zeros_like(a_, torch::MemoryFormat::Contiguous);
}

void SpelState::step(const torch::Tensor& g, double lr) {
  torch::NoGradGuard no_grad;
  if (g.sizes() != a_.sizes()) throw ConfigError("SpelState::step: gradient shape != projector");
  const torch::Tensor g_r = stiefel_tangent(a_, g.to(a_.options()));
  m_.mul_(options_.beta).add_(g_r, 1.0 - options_.beta);
  const torch::Tensor dir = msign_newton_schulz(m_, options_.ns_steps);
  const torch::Tensor moved = a_ - lr * dir;
  a_.copy_(options_.exact_polar ? polar_exact(moved) : polar_newton_schulz(moved, 1e-6));
}

}  // namespace desync
