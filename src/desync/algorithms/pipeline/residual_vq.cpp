// Residual VQ with EMA k-means codebooks, index bit-packing and the receiver's codebook stream.
//
// Decisions the header leaves open:
// - update(z, indices) recomputes the residuals each codebook was applied to from z and the
//   indices (R gathers, no distance computation). It therefore does not depend on which batch was
//   encoded last.
// - EMA counts and sums are per vector of the batch (n_k / N and sum / N), so N_k is the share of
//   the vectors that codeword k serves: the counts sum to 1, start at 1 / K each (with
//   S_k = C_k / K, so an unused codeword keeps its place while its count decays), and
//   `dead_threshold` is a usage share independent of the micro-batch size. Choose it below 1 / K.
// - The codebooks are the source of truth: update() derives the EMA sums as S_k = C_k N~_k
//   (N~: the smoothed counts) rather than keeping them. Without outside writes this equals
//   keeping S_k, and codebooks written from outside (a checkpoint, a test) are learned on from
//   there; a checkpoint needs only the codebooks and the counts.
// - A dead codeword is reset to the input residual of the batch vector that its codebook serves
//   worst (largest quantisation error; the next worst for the next dead codeword, and so on), with
//   the mean count 1 / K. This is deterministic and needs no random generator.
// - Level rho of every group is drawn after levels 0..rho-1 from one generator, so codebook
//   (g, rho) does not depend on R; since encoding and learning of a level depend only on the
//   levels before it, a model with R levels equals the first R levels of one with more.
#include "desync/algorithms/pipeline/residual_vq.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "desync/core/error.h"

namespace desync {

namespace {

constexpr double kLaplaceEpsilon = 1e-6;

// Laplace smoothing of the EMA counts [C, K]: (N_k + eps) / (sum N + K eps) * sum N.
torch::Tensor smoothed_counts(const torch::Tensor& counts) {
  const torch::Tensor total = counts.sum(1, /*keepdim=*/true);
  return (counts + kLaplaceEpsilon) / (total + counts.size(1) * kLaplaceEpsilon) * total;
}

// For each residual [G, N, w], the index [G, N] of its nearest codeword in books [G, K, w]:
// argmin_k ||c_k||^2 - 2 <x, c_k> (||x||^2 does not change the argmin).
torch::Tensor nearest_codewords(const torch::Tensor& residuals, const torch::Tensor& books) {
  const torch::Tensor book_norms = books.square().sum(-1).unsqueeze(1);  // [G, 1, K]
  const torch::Tensor scores =
      torch::baddbmm(book_norms, residuals, books.transpose(1, 2), /*beta=*/1, /*alpha=*/-2);
  return scores.argmin(-1);
}

// The codewords books[g, index[g, n]]: [G, N, w].
torch::Tensor chosen_codewords(const torch::Tensor& books, const torch::Tensor& index) {
  return books.gather(1, index.unsqueeze(-1).expand({-1, -1, books.size(2)}));
}

}  // namespace

int64_t index_bits(int64_t codes) {
  if (codes < 2) throw ConfigError("index_bits: the number of codes must be at least 2");
  int64_t bits = 1;
  while ((int64_t{1} << bits) < codes) ++bits;
  return bits;
}

ResidualVq::ResidualVq(ResidualVqOptions options, torch::ScalarType dtype) : options_(options) {
  const ResidualVqOptions& o = options_;
  if (o.dim < 1) throw ConfigError("residual VQ: dim must be at least 1");
  if (o.groups < 1 || o.dim % o.groups != 0) {
    throw ConfigError("residual VQ: groups (" + std::to_string(o.groups) + ") must divide dim (" +
                      std::to_string(o.dim) + ")");
  }
  if (o.levels < 1) throw ConfigError("residual VQ: levels must be at least 1");
  if (o.codes < 2) throw ConfigError("residual VQ: codes must be at least 2");
  if (!(o.decay >= 0.0 && o.decay < 1.0)) throw ConfigError("residual VQ: decay must be in [0, 1)");
  if (!(o.init_std >= 0.0)) throw ConfigError("residual VQ: init_std must be >= 0");

  torch::NoGradGuard no_grad;
  const int64_t width = o.dim / o.groups;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  std::vector<torch::Tensor> levels;  // level rho: [G, K, w] ~ N(0, (init_std / 4^rho)^2)
  for (int64_t rho = 0; rho < o.levels; ++rho) {
    const double spread = o.init_std / std::pow(4.0, static_cast<double>(rho));
    levels.push_back(torch::randn({o.groups, o.codes, width}, generator, torch::kDouble) * spread);
  }
  // [G, R, K, w] -> [G R, K, w]: codebook (g, rho) at row g * R + rho.
  codebooks_ = torch::stack(levels, 1).reshape({o.groups * o.levels, o.codes, width}).to(dtype);
  ema_counts_ = torch::full({o.groups * o.levels, o.codes}, 1.0 / o.codes, codebooks_.options());
}

torch::Tensor ResidualVq::encode(const torch::Tensor& z) const {
  const ResidualVqOptions& o = options_;
  if (z.dim() != 2 || z.size(1) != o.dim) {
    throw ConfigError("residual VQ: encode expects [N, " + std::to_string(o.dim) + "] vectors");
  }
  torch::NoGradGuard no_grad;
  const int64_t n = z.size(0), width = o.dim / o.groups;
  const torch::Tensor books = codebooks_.reshape({o.groups, o.levels, o.codes, width});
  // residual [G, N, w] starts as each group's coordinates.
  torch::Tensor residual = z.to(codebooks_.dtype()).reshape({n, o.groups, width}).transpose(0, 1);
  std::vector<torch::Tensor> indices;  // per level: [G, N]
  for (int64_t rho = 0; rho < o.levels; ++rho) {
    const torch::Tensor level_books = books.select(1, rho);
    indices.push_back(nearest_codewords(residual, level_books));
    residual = residual - chosen_codewords(level_books, indices.back());
  }
  return torch::stack(indices, 2).permute({1, 0, 2}).contiguous();  // [G, N, R] -> [N, G, R]
}

torch::Tensor ResidualVq::decode(const torch::Tensor& indices) const {
  const ResidualVqOptions& o = options_;
  if (indices.dim() != 3 || indices.size(1) != o.groups || indices.size(2) != o.levels) {
    throw ConfigError("residual VQ: decode expects indices [N, " + std::to_string(o.groups) + ", " +
                      std::to_string(o.levels) + "]");
  }
  const int64_t n = indices.size(0), width = o.dim / o.groups;
  // Codeword (g, rho, k) is row (g R + rho) K + k of the flattened codebooks.
  const torch::Tensor first_row =
      torch::arange(o.groups * o.levels, indices.options().dtype(torch::kInt64))
          .reshape({o.groups, o.levels}) *
      o.codes;
  const torch::Tensor rows = (indices.to(torch::kInt64) + first_row).reshape(-1);
  const torch::Tensor words = codebooks_.reshape({-1, width}).index_select(0, rows);
  return words.reshape({n, o.groups, o.levels, width}).sum(2).reshape({n, o.dim});
}

void ResidualVq::update(const torch::Tensor& z, const torch::Tensor& indices) {
  const ResidualVqOptions& o = options_;
  if (z.dim() != 2 || z.size(1) != o.dim || indices.dim() != 3 || indices.size(0) != z.size(0) ||
      indices.size(1) != o.groups || indices.size(2) != o.levels) {
    throw ConfigError("residual VQ: update expects z [N, dim] and its indices [N, G, R]");
  }
  const int64_t n = z.size(0);
  if (n == 0) return;
  torch::NoGradGuard no_grad;
  ema_counts_ = ema_counts_.to(codebooks_.options());  // follow the codebooks if they were moved

  // Recompute what each codebook was applied to, and the error it left, per level.
  const int64_t width = o.dim / o.groups, books_count = o.groups * o.levels;
  const torch::Tensor books = codebooks_.reshape({o.groups, o.levels, o.codes, width});
  const torch::Tensor level_indices = indices.to(torch::kInt64).permute({1, 2, 0});  // [G, R, N]
  torch::Tensor residual = z.to(codebooks_.dtype()).reshape({n, o.groups, width}).transpose(0, 1);
  std::vector<torch::Tensor> inputs, errors;  // per level: [G, N, w] and [G, N]
  for (int64_t rho = 0; rho < o.levels; ++rho) {
    inputs.push_back(residual);
    residual = residual - chosen_codewords(books.select(1, rho), level_indices.select(1, rho));
    errors.push_back(residual.square().sum(-1));
  }
  // Codebook c = g R + rho: its inputs [C, N, w], assignments [C, N] and errors [C, N].
  const torch::Tensor x = torch::stack(inputs, 1).reshape({books_count, n, width});
  const torch::Tensor assigned = level_indices.reshape({books_count, n});
  const torch::Tensor error = torch::stack(errors, 1).reshape({books_count, n});

  // EMA k-means: the batch's share and mean-weighted sum per codeword.
  const torch::Tensor share =
      torch::zeros_like(ema_counts_)
          .scatter_add_(1, assigned, torch::full({books_count, n}, 1.0 / n, x.options()));
  const torch::Tensor batch_sum =
      torch::zeros_like(codebooks_)
          .scatter_add_(1, assigned.unsqueeze(-1).expand({-1, -1, width}),
                        x / static_cast<double>(n));
  torch::Tensor sums = codebooks_ * smoothed_counts(ema_counts_).unsqueeze(-1);  // S_k = C_k N~_k
  sums.mul_(o.decay).add_(batch_sum, 1.0 - o.decay);
  ema_counts_.mul_(o.decay).add_(share, 1.0 - o.decay);
  codebooks_.copy_(sums / smoothed_counts(ema_counts_).unsqueeze(-1));

  // Dead codewords: the j-th dead one of a codebook takes the input of its j-th worst-served
  // vector (cycling when there are more dead codewords than vectors).
  const torch::Tensor dead = ema_counts_ < o.dead_threshold;  // [C, K]
  const int64_t candidates = std::min(o.codes, n);
  const torch::Tensor worst = std::get<1>(error.topk(candidates, 1));  // [C, candidates]
  const torch::Tensor rank = (dead.to(torch::kInt64).cumsum(1) - 1).clamp_min(0) % candidates;
  const torch::Tensor pick = worst.gather(1, rank);  // [C, K]: the vector for each codeword
  const torch::Tensor replacement = x.gather(1, pick.unsqueeze(-1).expand({-1, -1, width}));
  const torch::Tensor dead_rows = dead.unsqueeze(-1);
  const double mean_count = 1.0 / static_cast<double>(o.codes);
  codebooks_.copy_(torch::where(dead_rows, replacement, codebooks_));
  ema_counts_ = ema_counts_.masked_fill(dead, mean_count);
}

torch::Tensor pack_indices(const torch::Tensor& indices, int64_t bits) {
  if (bits < 1 || bits > 62) throw ConfigError("pack_indices: bits must be in [1, 62]");
  const torch::TensorOptions long_options = indices.options().dtype(torch::kInt64);
  const torch::Tensor flat = indices.reshape(-1).to(torch::kInt64);
  // The bit stream, least significant bit of each index first: [n bits], padded to whole bytes.
  const torch::Tensor stream =
      flat.unsqueeze(1).bitwise_right_shift(torch::arange(bits, long_options)).bitwise_and(1);
  const int64_t stream_bits = flat.numel() * bits;
  const int64_t bytes = (stream_bits + 7) / 8;
  const torch::Tensor padded =
      torch::constant_pad_nd(stream.reshape(-1), {0, bytes * 8 - stream_bits}).reshape({bytes, 8});
  return padded.bitwise_left_shift(torch::arange(8, long_options)).sum(1).to(torch::kUInt8);
}

torch::Tensor unpack_indices(const torch::Tensor& packed, int64_t count, int64_t bits) {
  if (bits < 1 || bits > 62) throw ConfigError("unpack_indices: bits must be in [1, 62]");
  if (packed.scalar_type() != torch::kUInt8 || packed.dim() != 1 ||
      packed.numel() * 8 < count * bits) {
    throw ConfigError("unpack_indices: expected uint8 [ceil(count * bits / 8)] bytes");
  }
  const torch::TensorOptions long_options = packed.options().dtype(torch::kInt64);
  const torch::Tensor stream = packed.to(torch::kInt64)
                                   .unsqueeze(1)
                                   .bitwise_right_shift(torch::arange(8, long_options))
                                   .bitwise_and(1)
                                   .reshape(-1)
                                   .narrow(0, 0, count * bits)
                                   .reshape({count, bits});
  return stream.bitwise_left_shift(torch::arange(bits, long_options)).sum(1);
}

CodebookStream::CodebookStream(int64_t codes, int64_t rows_per_slice)
    : codes_(codes), rows_(std::min(rows_per_slice, codes)) {
  if (codes < 1 || rows_per_slice < 1) {
    throw ConfigError("codebook stream: codes and rows per slice must be at least 1");
  }
}

torch::Tensor CodebookStream::next_rows() {
  // start = (position s) mod K; for s >= K every slice holds all rows, so start 0 is the same set.
  const int64_t start = ((position_ % codes_) * rows_) % codes_;
  ++position_;
  return (torch::arange(rows_, torch::kInt64) + start).remainder(codes_);
}

void apply_codebook_slice(torch::Tensor& copy, const torch::Tensor& rows,
                          const torch::Tensor& slice) {
  if (copy.dim() != 3 || slice.dim() != 3 || rows.dim() != 1 || slice.size(0) != copy.size(0) ||
      slice.size(1) != rows.size(0) || slice.size(2) != copy.size(2)) {
    throw ConfigError("codebook slice: expected copy [C, K, w], rows [s], slice [C, s, w]");
  }
  torch::NoGradGuard no_grad;
  copy.index_copy_(1, rows.to(copy.device(), torch::kInt64), slice.to(copy.options()));
}

}  // namespace desync
