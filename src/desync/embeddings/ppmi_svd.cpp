#include "desync/embeddings/ppmi_svd.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>
#include <vector>

#include "desync/core/error.h"

namespace desync {
namespace {

// `m` as a layout that torch::mm takes on the left: CSR for sparse matrices, else dense.
torch::Tensor as_operator(const torch::Tensor& m) {
  if (m.layout() == torch::kSparse) return m.coalesce().to_sparse_csr();
  return m;
}

torch::Tensor transposed_operator(const torch::Tensor& m) {
  if (m.layout() == torch::kStrided) return m.t().contiguous();
  return m.to_sparse().t().coalesce().to_sparse_csr();
}

torch::Tensor orthonormal_basis(const torch::Tensor& y) { return std::get<0>(torch::linalg_qr(y)); }

}  // namespace

torch::Tensor sppmi_matrix(const CooccurrenceCounts& counts, int64_t vocab_size,
                           const PpmiOptions& o) {
  if (!(o.alpha > 0)) throw ConfigError("ppmi alpha must be > 0");
  if (!(o.k_shift > 0)) throw ConfigError("ppmi k_shift must be > 0");
  if (vocab_size < 1) throw ConfigError("ppmi vocab_size must be >= 1");
  const int64_t n = counts.size();
  std::vector<double> n_w(static_cast<size_t>(vocab_size), 0.0), n_c(n_w);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t key = counts.keys[i];
    if (key < 0 || key / vocab_size >= vocab_size) {
      throw ConfigError("co-occurrence key " + std::to_string(key) +
                        " is outside a vocabulary of " + std::to_string(vocab_size) + " words");
    }
    n_w[key / vocab_size] += counts.counts[i];
    n_c[key % vocab_size] += counts.counts[i];
  }
  double smoothed_total = 0.0;
  for (double& c : n_c) {
    c = std::pow(c, o.alpha);  // N(c)^α; P_α(c) = N(c)^α / smoothed_total
    smoothed_total += c;
  }
  const double log_shift = std::log(o.k_shift);

  std::vector<int64_t> crow(static_cast<size_t>(vocab_size + 1), 0), col;
  std::vector<double> value;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t w = counts.keys[i] / vocab_size, c = counts.keys[i] % vocab_size;
    const double pmi = std::log(counts.counts[i] * smoothed_total / (n_w[w] * n_c[c]));
    if (pmi - log_shift > 0) {
      col.push_back(c);
      value.push_back(pmi - log_shift);
      ++crow[w + 1];
    }
  }
  for (int64_t w = 0; w < vocab_size; ++w) crow[w + 1] += crow[w];
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  return torch::sparse_csr_tensor(
      torch::tensor(crow, i64), torch::tensor(col, i64),
      torch::tensor(value, torch::TensorOptions().dtype(torch::kFloat64)), {vocab_size, vocab_size},
      torch::TensorOptions().dtype(torch::kFloat64));
}

Svd randomized_svd(const torch::Tensor& m, int64_t rank, int64_t oversample,
                   int64_t power_iterations, uint64_t seed) {
  if (m.dim() != 2 || !m.is_floating_point()) {
    throw ConfigError("randomized_svd needs a 2-D floating-point matrix");
  }
  const int64_t rows = m.size(0), cols = m.size(1);
  if (rank < 1 || rank > std::min(rows, cols)) {
    throw ConfigError("randomized_svd rank " + std::to_string(rank) + " is outside [1, " +
                      std::to_string(std::min(rows, cols)) + "]");
  }
  if (oversample < 0 || power_iterations < 0) {
    throw ConfigError("randomized_svd oversample and power_iterations must be >= 0");
  }
  const torch::NoGradGuard no_grad;
  const int64_t l = std::min(rank + oversample, std::min(rows, cols));
  const torch::Tensor a = as_operator(m), at = transposed_operator(m);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const torch::Tensor omega = torch::randn({cols, l}, generator, torch::dtype(m.scalar_type()));
  torch::Tensor q = orthonormal_basis(torch::mm(a, omega));
  for (int64_t i = 0; i < power_iterations; ++i) {
    q = orthonormal_basis(torch::mm(at, q));
    q = orthonormal_basis(torch::mm(a, q));
  }
  const torch::Tensor b = torch::mm(at, q).t();  // Qᵀ·m [l, cols]
  auto [ub, s, vh] = torch::linalg_svd(b, /*full_matrices=*/false);
  return {torch::mm(q, ub.slice(1, 0, rank)), s.slice(0, 0, rank).contiguous(),
          vh.slice(0, 0, rank).t().contiguous()};
}

torch::Tensor ppmi_svd_embeddings(const CooccurrenceCounts& counts, int64_t vocab_size,
                                  const PpmiOptions& o) {
  if (o.dim < 1 || o.dim > vocab_size) {
    throw ConfigError("ppmi dim " + std::to_string(o.dim) +
                      " is outside [1, vocab_size = " + std::to_string(vocab_size) + "]");
  }
  const Svd svd = randomized_svd(sppmi_matrix(counts, vocab_size, o), o.dim, o.oversample,
                                 o.power_iterations, o.seed);
  return svd.u * svd.s.pow(o.power).unsqueeze(0);
}

}  // namespace desync
