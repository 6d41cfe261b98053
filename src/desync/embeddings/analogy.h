// The analogy test (3CosAdd and 3CosMul, standard and honest) and the decompositions of the
// 3CosAdd similarity (arXiv 2010.03446, analogy_test.py and analogy_decomposition.py).
//
// Questions of a category: ordered pairs (i, j) of its pairs with s_i != s_j (compared as rows):
// a = s_i, a* = t_i, b = s_j, expected answer b* = t_j. Candidates are the rows
// [0, restrict_vocab); a question with any of a, a*, b, b* outside them is OOV and skipped, as
// in the reference code (an answer that could never be predicted is not scored).
//   3CosAdd: q = û(a*) − û(a) + û(b), score(x) = û(x)·q / ||q||
//   3CosMul: ĉ(x, y) = (1 + û(x)·û(y)) / 2, score(x) = ĉ(x, a*)·ĉ(x, b) / (ĉ(x, a) + ε)
// Standard: argmax over the candidates minus {a, a*, b}. Honest: argmax over all candidates,
// also counting the predictions equal to a, a*, b. Ties go to the lower row. Scores are
// computed in the space's dtype, `chunk` questions at a time with one matrix product against
// the candidate unit rows (3·chunk·restrict_vocab scores in memory).
//
// Decompositions (raw vectors v): for ordered (i, j), i != j, with a, a', b, b' = v(s_i),
// v(t_i), v(s_j), v(t_j), o_a = a' − a, o_b = b' − b, y = b + o_a, Z = ||y||·||b'||:
//   cos(y, b')          = b·b'/Z + o_a·o_b/Z + o_a·b/Z
//   1                   = y·b/||y||² + o_a·b/||y||² + o_a·o_a/||y||²
//   cos(y,b') − cos(y,b) = (y·b)(1/||b'|| − 1/||b||)/||y|| + o_a·o_b/Z + b·o_b/Z
// Each field is the mean of its term over the questions; the left-hand sides are computed
// on their own (not as the sums), so the identities are a check. Dot products come from Gram
// matrices of the pairs in the space's dtype; the terms are formed in float64. REQUIRES: b, b'
// and y nonzero (a zero gives Inf/NaN in that question's terms). Fewer than 2 pairs give
// questions = 0 and NaN means.
//
// Pure functions of their inputs; safe to call from any thread on a shared space.
#pragma once

#include <cstdint>
#include <vector>

#include "desync/embeddings/space.h"

namespace desync {

struct AnalogyOptions {
  int64_t restrict_vocab = 300000;  // candidates: the first restrict_vocab rows
  double cosmul_eps = 1e-3;
  int64_t chunk = 256;            // questions scored per matrix product (memory bound)
  bool keep_predictions = false;  // fill AnalogyCounts::standard_rows and honest_rows
};

// Counts over the ordered questions (i, j), i != j, s_i != s_j, of one category.
struct AnalogyCounts {
  int64_t questions = 0;  // scored
  int64_t oov = 0;        // skipped: a word outside the candidates
  int64_t standard = 0;   // correct, argmax over candidates minus {a, a*, b}
  int64_t honest = 0;     // correct, argmax over all candidates
  int64_t honest_a = 0, honest_a_star = 0, honest_b = 0;  // honest predictions equal to a, a*, b
  // With keep_predictions: the predicted row of each scored question, in (i, j) order
  // (-1 when every candidate is excluded).
  std::vector<int64_t> standard_rows, honest_rows;
};

struct AnalogyResult {
  AnalogyCounts add, mul;  // 3CosAdd and 3CosMul
};

// Throws ConfigError if restrict_vocab < 1, chunk < 1 or cosmul_eps < 0.
AnalogyResult analogy_test(const EmbeddingSpace& space, const RowPairs& pairs,
                           const AnalogyOptions& options = {});

// Means over ordered (i, j), i != j, of the terms above (raw vectors).
struct Decomposition {
  int64_t questions = 0;
  double cos = 0;                                       // cos(y, b')
  double b_b = 0, oa_ob = 0, oa_b = 0;                  // columns b*b', o_a*o_b, o_a*b (sum = cos)
  double ref_b_analogy = 0, ref_oa_b = 0, ref_oa2 = 0;  // reference terms (sum = 1)
  double dsim = 0, dsim_rest = 0, dsim_oa_ob = 0, dsim_ob_b = 0;  // Δsim and its terms
};

Decomposition decompose(const EmbeddingSpace& space, const RowPairs& pairs);

}  // namespace desync
