// PPMI-SVD word embeddings (spec §3 "PPMI-SVD"; Levy, Goldberg & Dagan, TACL 2015): the
// computation on merged co-occurrence counts; the distributed wrapper lives with the algorithms.
//
//   N(w) = Σ_c N(w, c),  N(c) = Σ_w N(w, c),  P_α(c) = N(c)^α / Σ_c' N(c')^α
//   PMI(w, c) = ln[N(w, c) / (N(w)·P_α(c))]          on the observed entries (N(w, c) > 0)
//   SPPMI(w, c) = max(PMI(w, c) − ln k_shift, 0),      0 elsewhere
//   randomized rank-d SVD of SPPMI (Halko, Martinsson & Tropp 2011, alg. 4.4): Ω ~ N(0, 1)
//   [V, d + oversample] from `seed`; Q = qr(SPPMI·Ω); `power_iterations` times
//   Q = qr(SPPMIᵀ·Q), Q = qr(SPPMI·Q); then the exact SVD of Qᵀ·SPPMI
//   W = U_d·Σ_d^p
//
// SPPMI is a sparse CSR float64 matrix (only its positive entries are stored), so memory is
// O(nnz + V·(d + oversample)); the SVD costs 2·(power_iterations + 1) sparse products of
// nnz·(d + oversample) multiply-adds plus QRs of V×(d + oversample) matrices. The same counts,
// options and seed give the same W on the same machine and thread count. Measured: V = 46.6k
// words, 8.8M counts (4.8M tokens, L = 5), d = 100: 21 s on 2 cores.
// Pure functions; safe to call from any thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "desync/embeddings/cooccurrence.h"

namespace desync {

struct PpmiOptions {
  int64_t window = 5;                            // L (used by the caller that counts)
  WindowWeight weight = WindowWeight::kUniform;  // (used by the caller that counts)
  double alpha = 0.75;                           // context distribution smoothing
  double k_shift = 1;                            // SPPMI shift: PMI − ln k_shift
  int64_t dim = 100;                             // d
  double power = 0.5;                            // p: W = U_d·Σ_d^p
  int64_t oversample = 10;
  int64_t power_iterations = 4;
  uint64_t seed = 0;
};

// SPPMI as a sparse CSR float64 tensor [vocab_size, vocab_size]. Throws ConfigError for
// alpha <= 0, k_shift <= 0 or a key outside [0, vocab_size²).
torch::Tensor sppmi_matrix(const CooccurrenceCounts& counts, int64_t vocab_size,
                           const PpmiOptions& o);

// The top `rank` singular triplets of `m` (2-D, dense or sparse COO/CSR, floating point), in
// descending order: m ≈ u·diag(s)·vᵀ with u [n1, rank], s [rank], v [n2, rank], in m's dtype.
// rank + oversample is capped at min(n1, n2) (then the result is exact up to rounding).
// Throws ConfigError for rank outside [1, min(n1, n2)], oversample < 0, power_iterations < 0.
struct Svd {
  torch::Tensor u, s, v;
};
Svd randomized_svd(const torch::Tensor& m, int64_t rank, int64_t oversample,
                   int64_t power_iterations, uint64_t seed);

// W = U_d·Σ_d^p [vocab_size, d] float64 of SPPMI(counts). Throws ConfigError for a bad option.
torch::Tensor ppmi_svd_embeddings(const CooccurrenceCounts& counts, int64_t vocab_size,
                                  const PpmiOptions& o);

}  // namespace desync
