// Spectron: spectral renormalisation with orthogonalisation for natively low-rank layers
// (arXiv 2602.12429; spec ../shared/algorithms/optimizers-spectron-mulo.md §1).
//
// Slots come in factor pairs "<layer>.A" [m, r] and "<layer>.B" [n, r] of a LinearLayer
// (models/low_rank.h), W = A Bᵀ. Per pair, at learning rate η (the schedule's times the slot's
// lr_scale):
//
//     A *= 1 - η wd ;  B *= 1 - η wd                        (decoupled weight decay)
//     M_A <- β M_A + (1 - β) G_A ;  M_B <- β M_B + (1 - β) G_B
//     O_A = NS5(M_A) ;  O_B = NS5(M_B)                      (orthogonalised momenta)
//     σ_A = power_iteration(A, u_A) ;  σ_B = power_iteration(B, u_B)   (warm-started)
//     ρ = η / (σ_A + σ_B + 1)
//     A <- A - ρ O_A ;  B <- B - ρ O_B
//
// so that ‖ΔW‖₂ ≤ ρ (‖A‖₂ + ‖B‖₂ + 1) = η (exactly with exact = true: the SVD's polar factor and
// σ_max; approximately with NS5 and one power step). Every other slot (embeddings, the head,
// norms, biases) is updated by AdamW (beta1, beta2, eps).
//
// After each step the optimizer sets gauges (core/gauges.h) per pair: "spectron.<layer>.dW" =
// ‖ΔW‖₂ / η (from the exact spectral norm of the rank-2r update, cheap: QR of the stacked
// factors), "spectron.<layer>.A" and ".B" = σ_A, σ_B; and "spectron.dW_max" = the largest ‖ΔW‖₂ / η
// over pairs.
//
// Thread-safety: none.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "desync/optim/optimizer.h"

namespace desync {

struct SpectronOptions {
  double beta = 0.95;                             // momentum of the factor gradients
  int64_t ns_steps = 5;                           // Newton–Schulz iterations
  int64_t power_steps = 1;                        // power-iteration steps per update
  bool exact = false;                             // polar factor by SVD and exact σ_max (tests)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW for the other slots
};

// Refuses (ConfigError) a slot "<x>.A" without its "<x>.B", factors of different ranks, and
// shards of factors ("<x>.A[lo:hi]"). Slots without any factor pair (a pipeline stage of dense
// layers) are all AdamW's; make_optimizer(Config) refuses spectron for a dense model.
std::unique_ptr<Optimizer> make_spectron(std::vector<ParamSlot> slots,
                                         const SpectronOptions& options);

// Muon's quintic Newton–Schulz iteration, coefficients (3.4445, -4.7750, 2.0315), on
// X / ‖X‖_F, transposed so that the Gram matrix is the smaller side's. Singular values land
// near 1 (about [0.68, 1.13] for well-conditioned inputs), not at 1.
torch::Tensor newton_schulz5(const torch::Tensor& x, int64_t steps);
// The polar factor U Vᵀ of X = U Σ Vᵀ (singular values exactly 1).
torch::Tensor polar_factor(const torch::Tensor& x);
// `steps` power-iteration steps on W [m, k] from u [m] (updated in place, unit norm); returns
// the estimate ‖Wᵀu‖ of σ_max(W).
double power_iteration(const torch::Tensor& w, torch::Tensor& u, int64_t steps);
// ‖A' B'ᵀ - A Bᵀ‖₂ without forming an m x n matrix (QR of [A', -A] and [B', B]).
double low_rank_update_norm(const torch::Tensor& a_new, const torch::Tensor& b_new,
                            const torch::Tensor& a, const torch::Tensor& b);

}  // namespace desync
