// The paraphrase test (arXiv 2102.11749, Fournier & Dunbar) of the explanation of analogies by
// paraphrases (arXiv 1901.09813, Allen & Hospedales): spec §3 "Paraphrase test", items 1–4.
// W = W_in and C = W_out of an SGNS model trained on `corpus` (rows = its vocabulary).
//
// Item 1, linear link. V_p = the first n_pmi words. PMI_p[w, c] = ln[N(w,c)·D / (N(w)·N(c))]
// for w, c in V_p, from window-L weight-1 counts; N(w) = Σ_c N(w, c) over every context of the
// vocabulary and D = Σ_w N(w), so PMI_p is the V_p×V_p block of the full PMI matrix (α = 1: the
// optimum W·Cᵀ of SGNS with unigram noise and k = 1); 0 where N(w, c) = 0. (The notebook builds
// the same block but from counts restricted to V_p.) C⁺ = pinv(C[V_p]) [d, n_pmi]
// (full_context: pinv(C) [d, V] restricted to the columns of V_p, as the notebook);
// ŵ(w) = C⁺·PMI_p[w, :]ᵀ; r_emb(w) = Pearson(W[w], ŵ(w)) over the d coordinates;
// r_pmi(w) = Pearson(PMI_p[w, c], W[w]·C[c]) over the observed c of V_p (mask = false: over all
// of V_p, unobserved PMI counted as 0, as the notebook). r2_fit is the R² of the least-squares
// fit W_p ≈ PMI_p·X (the spec's); since X has one row per context of V_p it is 1 whenever PMI_p
// is invertible, so r2_link, the R² of W_p ≈ PMI_p·C⁺ᵀ (the map C itself gives), is the
// informative one. R² = 1 − Σ residual² / Σ (W_p − column means)².
//
// Items 2–4 use the triple counts N(c; u, v): centre positions holding c with an ordered pair of
// distinct other positions within L of the centre holding u, v. Everything is restricted to the
// n_tri most frequent words (c, u, v < n_tri; the other words keep their positions), as the
// notebook restricts all three to its vocabulary. N(c; W) = N(c; w1, w2) + N(c; w2, w1),
// N(c; u) = Σ_{v < n_tri} N(c; u, v), N(W) = Σ_c N(c; W), N(u) = Σ_c N(c; u), c < n_tri; the
// error terms are vectors over those n_tri contexts. For unordered {i, j} of a category:
// W = {s_i, t_j} = {w1, w2}, W* = {t_i, s_j} = {w3, w4}.
//   ρ_c  = ln[N(c;W)·N(W*) / (N(c;W*)·N(W))]
//   Δσ_c = ln[N(c;W) / (N(c;w1)·N(c;w2))] − ln[N(c;W*) / (N(c;w3)·N(c;w4))]
//   Δτ   = ln[N(W)·N(w3)·N(w4) / (N(W*)·N(w1)·N(w2))]
// A ratio 0/0 counts 0, a zero numerator ln ε, a zero denominator −ln ε (the repo). With
// PMI_T(c, u) = ln[N(c;u)·N / (N(c)·N(u))] (N(c) = Σ_u N(c;u), N = Σ_c N(c)):
//   PMI_T(c,w1) + PMI_T(c,w2) − PMI_T(c,w3) − PMI_T(c,w4) = ρ_c − Δσ_c + Δτ      ("total")
// The repo's "dependence errors" are Δσ − Δτ and its "all errors" ρ + (Δσ − Δτ) ("repo_total";
// its sign is not confirmed, both are reported).
// Item 3, over ordered (i, j), i ≠ j (so both W and W* of each analogy, as the notebook): W
// co-occurs (its words at distance 1..L in some sentence), never, or has an absent word (id < 0).
// Items 2 and 4 keep an analogy when its four words are < n_tri, W and W* both co-occur, both
// have N > 0 (a centre sees both words) and W ≠ W*.
// Item 4: each W' = {u ≤ v} of words < n_tri with N(W') > 0 maps to r(W') = [ln N(c;W')/N(W')]_c
// (0 where N(c;W') = 0); rank(W*) = 1 + #{W' ∉ {W, W*} : ‖r(W') − r(W)‖ < ‖r(W*) − r(W)‖}
// (kIncreasing; ties go to W*). kNotebook: by decreasing distance (1 = farthest), and the
// n_tri(n_tri+1)/2 − #W' empty pairs rank too, at r = 0.
//
// Cost (T tokens, E distinct (c, W') with N(c; W') > 0, R such W', Q kept analogies). Counting
// the triples: O(T·(2L)²) time plus sorting, 12·E + 16·R bytes. Ranks: the rows are copied in
// order of ‖r(W')‖ (12·E + 48·R bytes more); the bounds |‖r'‖ − ‖r‖| <= d <= √(‖r'‖² + ‖r‖²)
// (entries of r are <= 0) settle a prefix and a suffix of that order for each analogy, and the
// rows between get a dot product with r(W), 64 analogies at a time against a dense
// 8·64·n_tri-byte block, over the intra-op threads: at worst O(E·Q) multiply-adds. Measured
// (GCIDE paragraphs, 4.8M tokens, n_tri = 10,000, L = 5, 2 cores): E = 50M, R = 3.5M, counting
// 10 s, 2,000 analogies ranked in 36 s, 2 GB peak. Item 1: a pinv of C, O(n_pmi²·d) and a
// least-squares solve of n_pmi×n_pmi (seconds at n_pmi = 2,000).
// Pure functions; safe to call from any thread.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "desync/data/word_corpus.h"

namespace desync {

struct ParaphraseOptions {
  int64_t n_pmi = 2000;       // V_p
  int64_t n_tri = 10000;      // words of the triple counts
  int64_t window = 5;         // L
  bool mask = true;           // r_pmi over the observed contexts only
  bool full_context = false;  // C⁺ from all of C, as the notebook
  double epsilon = 1e-10;
  enum class Closeness { kIncreasing, kNotebook } closeness = Closeness::kIncreasing;
};

// Mean and median over a category's kept analogies (NaN when none).
struct Summary {
  double mean = NAN, median = NAN;
};

struct LinearLinkReport {
  static constexpr int kBins = 20;   // histograms on [-1, 1]; bin b = [-1 + b/10, -0.9 + b/10)
  int64_t words = 0;                 // |V_p|
  std::vector<double> r_emb, r_pmi;  // per word of V_p; NaN where a side is constant
  std::vector<int64_t> r_emb_histogram, r_pmi_histogram;  // of the finite values; 1 in the last
  double r_emb_median = NAN, r_pmi_median = NAN;          // of the finite values
  double r_emb_share_090 = NAN, r_pmi_share_090 = NAN;    // share of the finite values >= 0.9
  double r2_fit = NAN, r2_link = NAN;
};

struct CategoryParaphrase {
  std::string name;
  // Item 3: ordered (i, j), i != j.
  int64_t paraphrases = 0, cooccur = 0, never = 0, absent = 0;
  // Items 2 and 4: unordered {i, j}, and those kept.
  int64_t analogies = 0, kept = 0;
  // Item 2: norms of the vectors over the n_tri contexts.
  Summary rho_l1, rho_l2;                // ρ
  Summary dependence_l1, dependence_l2;  // Δσ − Δτ
  Summary total_l1, total_l2;            // ρ − Δσ + Δτ, the PMI analogy error
  Summary repo_total_l1, repo_total_l2;  // ρ + Δσ − Δτ
  // Item 4.
  Summary rank;
  std::vector<int64_t> ranks;  // per kept analogy
};

struct ParaphraseReport {
  LinearLinkReport link;                       // item 1
  std::vector<CategoryParaphrase> categories;  // items 2–4, in input order
  int64_t n_pmi = 0, n_tri = 0;                // after capping at the vocabulary size
  int64_t pair_rows = 0;                       // W' with N(W') > 0: the candidates of item 4
};

// Items 1–4. `w`, `c`: [V, d] with V = corpus.vocab.size(); `categories`: name and (source id,
// target id) pairs, id −1 for a word absent from the corpus. Throws ConfigError for bad options,
// shapes or ids >= V.
ParaphraseReport paraphrase_test(
    const WordCorpus& corpus, const torch::Tensor& w, const torch::Tensor& c,
    const std::vector<std::pair<std::string, std::vector<std::pair<int64_t, int64_t>>>>& categories,
    const ParaphraseOptions& o);

// ---- The pieces, exposed for the tests. ----

// Item 1 on matrices: pmi_p [n, n] (0 where unobserved) and observed [n, n] bool over V_p;
// w_p [n, d]; c [V, d] with V >= n (its first n rows are V_p; full_context uses all of them).
LinearLinkReport linear_link(const torch::Tensor& pmi_p, const torch::Tensor& observed,
                             const torch::Tensor& w_p, const torch::Tensor& c, bool full_context,
                             bool mask);

// PMI_p and its observed entries for the first n_words words (see item 1): float64, bool.
struct PmiBlock {
  torch::Tensor pmi, observed;
};
PmiBlock pmi_block(const WordCorpus& corpus, int64_t n_words, int64_t window);

// N(c; W) for every W = {lo <= hi} of words < n_words with N(W) > 0, for c < n_words; rows in
// ascending key hi·n_words + lo, contexts ascending within a row.
struct PairContextCounts {
  int64_t n_words = 0;
  std::vector<int64_t> keys;       // per row
  std::vector<int64_t> row_start;  // row r: entries [row_start[r], row_start[r + 1])
  std::vector<int32_t> contexts;
  std::vector<double> counts;  // N(c; W) > 0
  int64_t rows() const { return static_cast<int64_t>(keys.size()); }
  // The row of {u, v}, or -1.
  int64_t find(int64_t u, int64_t v) const;
  // N(c; W) of row r as a dense float64 [n_words] tensor.
  torch::Tensor dense_row(int64_t r) const;
};
PairContextCounts count_pair_contexts(const WordCorpus& corpus, int64_t n_words, int64_t window);

// N(c; u) for each u of `words` (each < n_words) and c < n_words: float64 [words, n_words].
torch::Tensor count_word_contexts(const WordCorpus& corpus, const std::vector<int64_t>& words,
                                  int64_t n_words, int64_t window);

// The unordered pairs {u, v} of `pairs` (any order) whose words are at distance 1..L in some
// sentence, as keys max·V + min (V = corpus.vocab.size()), ascending.
std::vector<int64_t> cooccurring_pairs(const WordCorpus& corpus,
                                       const std::vector<std::pair<int64_t, int64_t>>& pairs,
                                       int64_t window);

// The counts that the error terms of one analogy need: pairs [2, C] = N(c; W), N(c; W*);
// words [4, C] = N(c; w1) .. N(c; w4).
struct ParaphraseCounts {
  torch::Tensor pairs, words;
};
// From a dense n = N(c; u, v) [C, U, U] (symmetric in u, v), W = {w1, w2}, W* = {w3, w4}.
ParaphraseCounts analogy_counts(const torch::Tensor& n, int64_t w1, int64_t w2, int64_t w3,
                                int64_t w4);

struct ErrorTerms {
  torch::Tensor rho, dsigma;  // [C]
  double dtau = 0;
};
ErrorTerms error_terms(const ParaphraseCounts& a, double epsilon);

// PMI_T(c, u) [C, U] of a dense n = N(c; u, v) [C, U, U].
torch::Tensor pmi_t(const torch::Tensor& n);

// Item 4: the rank of W* for each (row of W, row of W*) of `t`.
std::vector<int64_t> closeness_ranks(const PairContextCounts& t,
                                     const std::vector<std::pair<int64_t, int64_t>>& queries,
                                     ParaphraseOptions::Closeness closeness);

}  // namespace desync
