// Steepest descent on the Stiefel manifold St(d, r) = {A in R^{d x r} : A^T A = I_r} under the
// spectral norm (SPEL), for MAPL's learned boundary projectors (algorithms/pipeline/mapl.h).
//
// Reference: "Manifold constrained steepest descent" (arXiv 2601.21487): with
// msign(Y) = Y (Y^T Y)^{-1/2} (the orthogonal polar factor, the spectral norm's LMO direction),
//
//   g_R = g - A sym(A^T g)               tangent projection, sym(S) = (S + S^T) / 2
//   m   = beta m + (1 - beta) g_R        momentum (of tangent vectors)
//   dir = msign(m)                       quintic Newton-Schulz, `ns_steps` iterations
//   A   = polar(A - lr dir)              retraction: exact (thin SVD) or cubic Newton-Schulz
//
// Every function works in the tensors' own floating type (float32 or float64) on [d, r]
// matrices with d >= r. Thread-safety: pure functions; SpelState belongs to one thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace desync {

// (S + S^T) / 2 of a square matrix.
torch::Tensor sym(const torch::Tensor& s);

// The projection of `g` onto the tangent space of St(d, r) at `a`: g - a sym(a^T g).
// Afterwards sym(a^T result) = 0 (to rounding) when a^T a = I.
torch::Tensor stiefel_tangent(const torch::Tensor& a, const torch::Tensor& g);

// msign(y) approximated by `steps` quintic Newton-Schulz iterations on y / ||y||_F, with the
// coefficients (3.4445, -4.7750, 2.0315) of Muon; its singular values land near 1, not exactly
// on it (a descent direction, not a retraction). A zero matrix gives zeros.
torch::Tensor msign_newton_schulz(const torch::Tensor& y, int64_t steps = 5);

// The exact orthogonal polar factor U V^T of y = U S V^T (thin SVD).
torch::Tensor polar_exact(const torch::Tensor& y);

// The polar factor by cubic Newton-Schulz, X <- 1.5 X - 0.5 X X^T X, from y / ||y||_2 (so every
// singular value starts in (0, 1]), until max|X^T X - I| < tol or `max_iterations`.
torch::Tensor polar_newton_schulz(const torch::Tensor& y, double tol = 1e-6,
                                  int64_t max_iterations = 100);

// A random point of St(d, r): the Q of a QR factorisation of a d x r standard Gaussian matrix
// drawn from `generator` seeded with `seed` (sign-fixed so that diag(R) > 0), of type `dtype`.
torch::Tensor random_stiefel(int64_t d, int64_t r, uint64_t seed,
                             torch::ScalarType dtype = torch::kFloat);

// The largest principal angle (radians) between span(a) and span(b), both with orthonormal
// columns: acos of the smallest singular value of a^T b (clamped to [0, 1]).
double largest_principal_angle(const torch::Tensor& a, const torch::Tensor& b);

struct SpelOptions {
  double beta = 0.95;       // momentum
  int64_t ns_steps = 5;     // quintic Newton-Schulz iterations of msign
  bool exact_polar = true;  // retraction: thin SVD, else cubic Newton-Schulz to 1e-6
};

// One projector and its SPEL momentum.
class SpelState {
 public:
  // `a`: the projector [d, r] with orthonormal columns, updated in place by step().
  SpelState(torch::Tensor a, SpelOptions options);

  // One SPEL step with learning rate `lr` on the Euclidean gradient `g` [d, r] of the loss with
  // respect to a (the step above), in place, under NoGradGuard.
  void step(const torch::Tensor& g, double lr);

  torch::Tensor& projector() { return a_; }
  torch::Tensor& momentum() { return m_; }  // for checkpoints
  const torch::Tensor& momentum() const { return m_; }

 private:
  torch::Tensor a_, m_;
  SpelOptions options_;
};

}  // namespace desync
