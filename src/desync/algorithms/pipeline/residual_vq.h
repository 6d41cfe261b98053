// Residual vector quantisation of projected boundary activations, with codebooks learned by EMA
// k-means on the sender and streamed to the receiver (MAPL's optional VQ, mapl.h; spec
// compression-mapl.md §2 "Streaming residual VQ"; every setting is a default the paper does not
// confirm).
//
// A vector z in R^r is split into G groups of r / G coordinates. Group g has R codebooks
// C^{(g, rho)} of K codewords each. Encoding runs R rounds on the residual, starting from the
// group's coordinates: index = argmin_k ||residual - C[k]||^2, then residual -= C[index]. The
// code of one vector is G x R indices; decoding sums the chosen codewords per group.
//
// Learning (sender only, update(z, indices)): per codebook, EMA k-means with decay `decay` on
// the residuals z and its indices give (recomputed from them): counts N_k <- decay N_k +
// (1 - decay) n_k / N (a share of the batch: the counts sum to 1), sums S_k <- decay S_k +
// (1 - decay) (sum of the residuals assigned to k) / N, C[k] = S_k / N_k (Laplace-smoothed
// counts); a codeword whose EMA share falls below `dead_threshold` (keep it under 1 / K) is
// reset to the batch residual its codebook serves worst. Initialisation: the codebooks of level
// rho from `seed` ~ N(0, (init_std / 4^rho)^2) (later residuals are smaller).
//
// Streaming: the receiver holds a copy. CodebookStream hands out slices of s rows of every
// codebook (the same row range for all G * R codebooks), round-robin over the K rows; apply()
// writes a slice into the copy. With frozen codebooks the copy equals the sender's after
// ceil(K / s) slices.
//
// Wire format of indices: pack_indices() writes each index in ceil(log2 K) bits, little-endian
// bit order, into ceil(n * bits / 8) bytes.
//
// Thread-safety: none.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace desync {

struct ResidualVqOptions {
  int64_t dim = 0;      // r
  int64_t groups = 1;   // G; must divide dim
  int64_t levels = 1;   // R
  int64_t codes = 256;  // K >= 2
  double decay = 0.99;
  double dead_threshold = 1e-3;
  double init_std = 1.0;
  uint64_t seed = 0;
};

// ceil(log2 K): the bits of one index (1 for K = 2).
int64_t index_bits(int64_t codes);

class ResidualVq {
 public:
  // Throws ConfigError when groups does not divide dim or codes < 2.
  ResidualVq(ResidualVqOptions options, torch::ScalarType dtype = torch::kFloat);

  // z [N, r] -> indices [N, G, R] (int64).
  torch::Tensor encode(const torch::Tensor& z) const;
  // indices [N, G, R] -> [N, r].
  torch::Tensor decode(const torch::Tensor& indices) const;
  // One EMA k-means update from z [N, r] and its indices (from encode(z)).
  void update(const torch::Tensor& z, const torch::Tensor& indices);

  // All codebooks, [G * R, K, r / G]; codebook (g, rho) at row g * R + rho. Mutable for the
  // receiver's copy and for checkpoints.
  torch::Tensor& codebooks() { return codebooks_; }
  const torch::Tensor& codebooks() const { return codebooks_; }
  const ResidualVqOptions& options() const { return options_; }
  // The EMA k-means counts [G R, K] (checkpoints); the EMA sums are C_k N~_k, derived from the
  // codebooks and these.
  torch::Tensor& ema_counts() { return ema_counts_; }

 private:
  ResidualVqOptions options_;
  torch::Tensor codebooks_;   // [G R, K, r / G]
  torch::Tensor ema_counts_;  // [G R, K]
};

// Index packing: `indices` (any shape, values in [0, 2^bits)) -> uint8 [ceil(numel bits / 8)].
torch::Tensor pack_indices(const torch::Tensor& indices, int64_t bits);
// The inverse: `count` indices of `bits` bits from `packed` -> int64 [count].
torch::Tensor unpack_indices(const torch::Tensor& packed, int64_t count, int64_t bits);

// Round-robin slices of the K rows of a set of codebooks [C, K, w]: slice i covers rows
// [start, start + rows) with start = (i * s) mod K, wrapping (rows = s, or K when s >= K).
class CodebookStream {
 public:
  CodebookStream(int64_t codes, int64_t rows_per_slice);
  int64_t rows() const { return rows_; }
  // The row indices [rows] (int64) of the next slice; advances.
  torch::Tensor next_rows();
  // The position (slices handed out so far), for checkpoints.
  int64_t position() const { return position_; }
  void set_position(int64_t p) { position_ = p; }

 private:
  int64_t codes_, rows_, position_ = 0;
};

// Writes `slice` [C, rows, w] into `copy` [C, K, w] at the row indices `rows`.
void apply_codebook_slice(torch::Tensor& copy, const torch::Tensor& rows,
                          const torch::Tensor& slice);

}  // namespace desync
