// The computational kernel of skip-gram with negative sampling (SGNS, arXiv 1310.4546 eq. 4) as
// C word2vec (`word2vec.c`) runs it: its generator, subsampling, dynamic window, noise
// distribution, learning-rate schedule and sequential update, plus the batched gradient of the
// same loss for the data-parallel modes (spec embedding-regularities.md §3).
//
// Generating examples is separate from applying them: sentence_examples() turns a sentence into
// rows (x = context, y = centre, n_1..n_k), which either sequential_update() (C's inner loop) or
// batch_gradient() (a summed loss and its sparse gradient) consumes. For one row,
//   ℓ = −ln σ(W_in[x]·W_out[y]) − Σ_j ln σ(−W_in[x]·W_out[n_j]),
// and a negative n_j equal to y is kept in the row as kSkipped and contributes nothing (C skips
// it, it does not redraw).
//
// Generator use, step for step as `word2vec.c` (one Lcg::next() per draw): while a sentence is
// read, one draw per token when s > 0 (kept iff keep threshold >= (x & 0xFFFF) / 65536); then per
// centre position one window draw r = x mod L; then per context (left to right) k negative draws.
// A negative draw maps the generator's top 53 bits to u = (x >> 11) / 2^53 in [0, 1) and returns
// the first word whose cumulative noise probability exceeds u (C reads bits 16..63 modulo 10^8
// as a slot of its 10^8-entry table: the same draw, tabulated). Unlike C, word 0 is an ordinary
// word (C's word 0 is the sentence end </s>, which it replaces by a uniform word).
//
// Functions of their arguments only (the generator is the caller's; sequential_update writes
// the tables it is given, so concurrent calls on one pair of tables race, Hogwild-style); a
// NegativeSampler is immutable after construction and may be shared by threads. REQUIRES
// everywhere: options that pass validate(), word ids in [0, V), rows of `dim` contiguous elements.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace desync::sgns {

// C word2vec's generator: x <- x * 25214903917 + 11 (mod 2^64); next() returns the new x.
struct Lcg {
  static constexpr uint64_t kMultiplier = 25214903917ULL;
  uint64_t x = 0;
  uint64_t next() { return x = x * kMultiplier + 11; }
};

// A negative that equals the row's centre word y: kept in its column, skipped by the updates.
constexpr int32_t kSkipped = -1;

struct Options {
  int64_t window = 5;            // L: each centre draws r = rand mod L and uses width L - r
  int64_t negatives = 5;         // k
  double noise_exponent = 0.75;  // P_neg(w) ∝ c_w^noise_exponent
  double subsample = 1e-3;       // s; 0 keeps every token and draws nothing
  // kCCode: keep with min(1, sqrt(s/z) + s/z) (word2vec.c, gensim); kPaper: sqrt(s/z) (eq. 5).
  enum class Subsample { kCCode, kPaper } subsample_rule = Subsample::kCCode;
  // false: C's sigmoid table, 1000 bins on [-6, 6] read at bin floor((f + 6) * 83) (C's integer
  // division 1000 / 6 / 2), and beyond ±6 g = alpha * (label - 1) or alpha * label.
  bool exact_sigmoid = true;
};

// Throws ConfigError naming the first option out of range (window >= 1, negatives >= 0,
// subsample >= 0, noise_exponent finite).
void validate(const Options& o);

// P_neg(w) ∝ counts[w]^exponent (a zero count is never drawn), sampled by binary search in the
// cumulative distribution from one generator draw (see above). Throws ConfigError when no count
// is positive.
class NegativeSampler {
 public:
  NegativeSampler(const std::vector<int64_t>& counts, double exponent);
  int32_t draw(Lcg& rng) const;
  double probability(int64_t w) const;
  int64_t size() const { return static_cast<int64_t>(cumulative_.size()); }

 private:
  std::vector<double> cumulative_;  // cumulative_[w] = P(word <= w); the last positive one is 1
};

// The nominal keep probability of a word with `count` among `total` tokens, z = count / total:
// min(1, sqrt(s/z) + s/z) or min(1, sqrt(s/z)); 1 when s = 0. (C compares with a 16-bit uniform,
// so the realised probability is this rounded up to a multiple of 1/65536.)
double keep_probability(int64_t count, int64_t total, const Options& o);

// Appends the training rows of one sentence of in-vocabulary word ids, in word2vec.c's order
// (centres left to right, contexts q = p-L+r .. p+L-r left to right, q != p, inside the kept
// sentence), each row k + 2 ids: x = S'[q], y = S'[p], n_1..n_k (kSkipped where n_j == y).
// `counts` and `total` are the vocabulary's (z_w = counts[w] / total). Returns the rows appended.
int64_t sentence_examples(const int32_t* words, int64_t n, const std::vector<int64_t>& counts,
                          int64_t total, Lcg& rng, const NegativeSampler& neg, const Options& o,
                          std::vector<int32_t>& out);

// C's sequential update of `count` rows (k + 2 ids each, as above) in order, in place:
//   e = 0; for (u, label) in [(y, 1), (n_1, 0) .. (n_k, 0)], n_j != kSkipped:
//     g = alpha * (label - σ(W_in[x]·W_out[u]));  e += g W_out[u];  W_out[u] += g W_in[x]
//   W_in[x] += e
// Returns Σ ℓ over the rows, each pair's term from its score before its update (for logging).
// T is float or double; w_in and w_out are distinct [V, dim] tables; no allocation per row.
template <class T>
double sequential_update(T* w_in, T* w_out, int64_t dim, const int32_t* examples, int64_t count,
                         int64_t k, double alpha, const Options& o);

// The summed loss of a batch and its gradient as sparse rows: row ids (int64, ascending, each
// once) and the gradient summed over their repeats, in the tables' dtype.
struct SparseGradient {
  double loss = 0;
  torch::Tensor in_rows, in_grad;    // [U_in], [U_in, d]
  torch::Tensor out_rows, out_grad;  // [U_out], [U_out, d]: skipped negatives are not rows
};

// loss = Σ ℓ over the rows of `examples` ([P, k + 2] int64, kSkipped negatives, y >= 0) and its
// closed-form gradient (σ₀, σ_j the sigmoids of the positive and j-th scores):
//   ∂ℓ/∂W_in[x] = −(1−σ₀) W_out[y] + Σ_j σ_j W_out[n_j]; ∂ℓ/∂W_out[y] = −(1−σ₀) W_in[x];
//   ∂ℓ/∂W_out[n_j] = σ_j W_in[x]. Exact sigmoid. The tables ([V, d], same floating dtype) are
// only read.
SparseGradient batch_gradient(const torch::Tensor& w_in, const torch::Tensor& w_out,
                              const torch::Tensor& examples);

// C's learning rate: alpha0 * max(1e-4, 1 - progress / (total_tokens + 1)), with progress (tokens
// read, before subsampling, over all epochs; total_tokens = E * T_rank) brought up to date only
// when more than 10,000 tokens were read since it last was, checked before each sentence.
// (word2vec.c checks at each centre position, so a sentence's tokens count from its second centre
// on, and it restarts the 10,000-token count at each epoch.) `progress` resumes a schedule.
class AlphaSchedule {
 public:
  static constexpr int64_t kStep = 10000;
  AlphaSchedule(double alpha0, int64_t total_tokens, int64_t progress = 0);
  // The learning rate for the next sentence, after `tokens_read` tokens in all.
  double before_sentence(int64_t tokens_read);
  double alpha() const { return alpha_; }
  int64_t progress() const { return progress_; }

 private:
  double alpha0_;
  int64_t total_;
  int64_t progress_;
  double alpha_;
};

}  // namespace desync::sgns
