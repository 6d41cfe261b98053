#include "desync/algorithms/embedding/sgns_kernel.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "desync/core/error.h"

namespace desync::sgns {

void validate(const Options& o) {
  auto fail = [](const std::string& what) { throw ConfigError("sgns: " + what); };
  if (o.window < 1) fail("window must be >= 1, got " + std::to_string(o.window));
  if (o.negatives < 0) fail("negatives must be >= 0, got " + std::to_string(o.negatives));
  if (!(o.subsample >= 0) || !std::isfinite(o.subsample))
    fail("subsample must be a finite number >= 0, got " + std::to_string(o.subsample));
  if (!std::isfinite(o.noise_exponent))
    fail("noise_exponent must be finite, got " + std::to_string(o.noise_exponent));
}

NegativeSampler::NegativeSampler(const std::vector<int64_t>& counts, double exponent) {
  cumulative_.resize(counts.size());
  double sum = 0;
  for (size_t w = 0; w < counts.size(); ++w) {
    sum += counts[w] > 0 ? std::pow(static_cast<double>(counts[w]), exponent) : 0.0;
    cumulative_[w] = sum;
  }
  if (!(sum > 0) || !std::isfinite(sum))
    throw ConfigError("sgns: the noise distribution needs a word with a positive count");
  // Every entry from the last positive word on is sum / sum = 1 exactly, above any u < 1.
  for (double& c : cumulative_) c /= sum;
}

int32_t NegativeSampler::draw(Lcg& rng) const {
  const double u = static_cast<double>(rng.next() >> 11) * 0x1p-53;
  return static_cast<int32_t>(std::upper_bound(cumulative_.begin(), cumulative_.end(), u) -
                              cumulative_.begin());
}

double NegativeSampler::probability(int64_t w) const {
  const size_t i = static_cast<size_t>(w);
  return cumulative_[i] - (i == 0 ? 0.0 : cumulative_[i - 1]);
}

namespace {

// The subsampling threshold of a word: it is kept when threshold >= (x & 0xFFFF) / 65536.
double keep_threshold(int64_t count, int64_t total, const Options& o) {
  const double ratio = o.subsample * static_cast<double>(total) / static_cast<double>(count);
  return o.subsample_rule == Options::Subsample::kCCode ? std::sqrt(ratio) + ratio
                                                        : std::sqrt(ratio);
}

}  // namespace

double keep_probability(int64_t count, int64_t total, const Options& o) {
  return o.subsample > 0 ? std::min(1.0, keep_threshold(count, total, o)) : 1.0;
}

int64_t sentence_examples(const int32_t* words, int64_t n, const std::vector<int64_t>& counts,
                          int64_t total, Lcg& rng, const NegativeSampler& neg, const Options& o,
                          std::vector<int32_t>& out) {
  thread_local std::vector<int32_t> kept;  // S', reused across sentences
  kept.clear();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t w = words[i];
    if (o.subsample > 0) {
      const double u = static_cast<double>(rng.next() & 0xFFFF) / 65536.0;
      if (keep_threshold(counts[static_cast<size_t>(w)], total, o) < u) continue;
    }
    kept.push_back(w);
  }
  const int64_t m = static_cast<int64_t>(kept.size()), window = o.window;
  const size_t rows_before = out.size();
  for (int64_t p = 0; p < m; ++p) {
    const int64_t width = window - static_cast<int64_t>(rng.next() % static_cast<uint64_t>(window));
    const int32_t y = kept[static_cast<size_t>(p)];
    for (int64_t q = std::max<int64_t>(0, p - width); q <= std::min(m - 1, p + width); ++q) {
      if (q == p) continue;
      out.push_back(kept[static_cast<size_t>(q)]);
      out.push_back(y);
      for (int64_t j = 0; j < o.negatives; ++j) {
        const int32_t n_j = neg.draw(rng);
        out.push_back(n_j == y ? kSkipped : n_j);
      }
    }
  }
  return static_cast<int64_t>(out.size() - rows_before) / (o.negatives + 2);
}

namespace {

// C's table: entry i is σ((2i / 1000 - 1) * 6), i < 1000.
const std::array<double, 1000>& sigmoid_table() {
  static const std::array<double, 1000> table = [] {
    std::array<double, 1000> t{};
    for (size_t i = 0; i < t.size(); ++i) {
      const double e = std::exp((static_cast<double>(i) / 1000.0 * 2 - 1) * 6);
      t[i] = e / (e + 1);
    }
    return t;
  }();
  return table;
}

// Eight partial sums, so the compiler can keep them in vector registers without reassociating.
template <class T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T s[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) s[l] += a[i + l] * b[i + l];
  for (; i < n; ++i) s[0] += a[i] * b[i];
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

// Asks the cache for the rows of `row` (x in w_in, y and the negatives in w_out): issued one row
// ahead, their loads overlap the current row's arithmetic (rows are scattered over the tables).
template <class T>
inline void prefetch_rows(const T* w_in, const T* w_out, int64_t dim, const int32_t* row,
                          int64_t k) {
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
  for (int64_t j = 0; j <= k + 1; ++j) {
    if (row[j] == kSkipped) continue;
    const T* r = (j == 0 ? w_in : w_out) + static_cast<int64_t>(row[j]) * dim;
    for (int64_t c = 0; c < dim; c += kLine) __builtin_prefetch(r + c);
  }
}

}  // namespace

template <class T>
double sequential_update(T* w_in, T* w_out, int64_t dim, const int32_t* examples, int64_t count,
                         int64_t k, double alpha, const Options& o) {
  const auto& table = sigmoid_table();
  const T a = static_cast<T>(alpha);
  std::vector<T> e_buffer(static_cast<size_t>(dim));
  T* __restrict e = e_buffer.data();
  double loss = 0;
  for (int64_t r = 0; r < count; ++r) {
    const int32_t* row = examples + r * (k + 2);
    T* __restrict in = w_in + row[0] * dim;
    if (r + 1 < count) prefetch_rows(w_in, w_out, dim, row + (k + 2), k);
    std::fill(e, e + dim, T(0));
    for (int64_t j = 0; j <= k; ++j) {
      const int32_t u = row[1 + j];
      if (u == kSkipped) continue;
      const T label = j == 0 ? T(1) : T(0);
      T* __restrict out = w_out + static_cast<int64_t>(u) * dim;
      const T f = dot(in, out, dim);
      const T t = std::exp(-std::abs(f));  // -ln σ(±f) = max(∓f, 0) + log1p(e^-|f|)
      loss += static_cast<double>(std::log1p(t) + std::max(j == 0 ? -f : f, T(0)));
      T g;
      if (o.exact_sigmoid) {
        g = a * (label - (f >= 0 ? T(1) / (T(1) + t) : t / (T(1) + t)));
      } else if (f > T(6)) {
        g = a * (label - T(1));
      } else if (f < T(-6)) {
        g = a * label;
      } else {
        g = a * (label - static_cast<T>(table[static_cast<size_t>((f + T(6)) * T(83))]));
      }
      for (int64_t c = 0; c < dim; ++c) e[c] += g * out[c];
      for (int64_t c = 0; c < dim; ++c) out[c] += g * in[c];
    }
    for (int64_t c = 0; c < dim; ++c) in[c] += e[c];
  }
  return loss;
}

template double sequential_update<float>(float*, float*, int64_t, const int32_t*, int64_t, int64_t,
                                         double, const Options&);
template double sequential_update<double>(double*, double*, int64_t, const int32_t*, int64_t,
                                          int64_t, double, const Options&);

namespace {

// Sums `grads` rows by id: the ascending unique ids and their summed rows.
std::pair<torch::Tensor, torch::Tensor> sum_rows(const torch::Tensor& ids,
                                                 const torch::Tensor& grads) {
  auto [rows, inverse] = torch::_unique(ids, /*sorted=*/true, /*return_inverse=*/true);
  torch::Tensor summed = torch::zeros({rows.size(0), grads.size(1)}, grads.options());
  summed.index_add_(0, inverse, grads);
  return {rows, summed};
}

}  // namespace

SparseGradient batch_gradient(const torch::Tensor& w_in, const torch::Tensor& w_out,
                              const torch::Tensor& examples) {
  TORCH_CHECK(
      examples.dim() == 2 && examples.size(1) >= 2 && examples.scalar_type() == torch::kLong,
      "batch_gradient: examples must be a [P, k + 2] int64 tensor");
  TORCH_CHECK(w_in.dim() == 2 && w_out.sizes() == w_in.sizes() &&
                  w_in.scalar_type() == w_out.scalar_type() && w_in.is_floating_point(),
              "batch_gradient: tables must be [V, d] of one floating dtype");
  torch::NoGradGuard no_grad;
  const int64_t p = examples.size(0), m = examples.size(1) - 1, d = w_in.size(1);
  const torch::Tensor x = examples.select(1, 0);
  const torch::Tensor u = examples.narrow(1, 1, m);  // [P, k + 1]: y, n_1..n_k
  const torch::Tensor used = u.ne(kSkipped);
  const torch::Tensor v_in = w_in.index_select(0, x);  // [P, d]
  const torch::Tensor v_out = w_out.index_select(0, u.clamp_min(0).reshape(-1)).view({p, m, d});
  const torch::Tensor score = torch::bmm(v_out, v_in.unsqueeze(2)).squeeze(2);  // [P, k + 1]
  torch::Tensor label = torch::zeros_like(score);
  label.select(1, 0).fill_(1);
  const torch::Tensor mask = used.to(score.scalar_type());

  SparseGradient grad;
  // ℓ terms: −ln σ(s_0) and −ln σ(−s_j).
  grad.loss =
      (-torch::log_sigmoid(score * (2 * label - 1)) * mask).sum(torch::kDouble).item<double>();
  const torch::Tensor dscore = (torch::sigmoid(score) - label) * mask;           // ∂ℓ/∂s
  const torch::Tensor g_in = torch::bmm(dscore.unsqueeze(1), v_out).squeeze(1);  // [P, d]
  const torch::Tensor g_out = (dscore.unsqueeze(2) * v_in.unsqueeze(1)).view({p * m, d});
  std::tie(grad.in_rows, grad.in_grad) = sum_rows(x, g_in);
  const torch::Tensor keep = used.reshape(-1).nonzero().squeeze(1);
  std::tie(grad.out_rows, grad.out_grad) =
      sum_rows(u.reshape(-1).index_select(0, keep), g_out.index_select(0, keep));
  return grad;
}

AlphaSchedule::AlphaSchedule(double alpha0, int64_t total_tokens, int64_t progress)
    : alpha0_(alpha0), total_(total_tokens), progress_(progress) {
  alpha_ = alpha0_ *
           std::max(1e-4, 1.0 - static_cast<double>(progress_) / static_cast<double>(total_ + 1));
}

double AlphaSchedule::before_sentence(int64_t tokens_read) {
  if (tokens_read - progress_ > kStep) *this = AlphaSchedule(alpha0_, total_, tokens_read);
  return alpha_;
}

}  // namespace desync::sgns
