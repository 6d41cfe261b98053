#include "desync/embeddings/analogy.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "desync/core/error.h"

namespace desync {
namespace {

// Adds to `counts` the standard and honest predictions of `scores` [m, candidates] for the
// questions `rows` [m, 4] = (a, a*, b, b*). Overwrites the scores of {a, a*, b} with -inf.
void tally(torch::Tensor scores, const torch::Tensor& rows, AnalogyCounts& counts,
           bool keep_predictions) {
  // argmax returns the first maximal index: ties go to the lower row.
  const torch::Tensor honest = scores.argmax(1);
  scores.scatter_(1, rows.narrow(1, 0, 3), -std::numeric_limits<double>::infinity());
  const torch::Tensor standard = scores.argmax(1);
  // With every candidate excluded there is no prediction.
  const torch::Tensor valid =
      scores.gather(1, standard.unsqueeze(1)).squeeze(1) > -std::numeric_limits<double>::infinity();
  const torch::Tensor b_star = rows.select(1, 3);
  counts.standard += ((standard == b_star) & valid).sum().item<int64_t>();
  // Honest predictions equal to a, a*, b, b*.
  const torch::Tensor honest_hits = (honest.unsqueeze(1) == rows).sum(0).cpu();
  const auto hits = honest_hits.accessor<int64_t, 1>();
  counts.honest_a += hits[0];
  counts.honest_a_star += hits[1];
  counts.honest_b += hits[2];
  counts.honest += hits[3];
  if (keep_predictions) {
    const torch::Tensor s = torch::where(valid, standard, -1).cpu().contiguous();
    const torch::Tensor h = honest.cpu().contiguous();
    counts.standard_rows.insert(counts.standard_rows.end(), s.data_ptr<int64_t>(),
                                s.data_ptr<int64_t>() + s.numel());
    counts.honest_rows.insert(counts.honest_rows.end(), h.data_ptr<int64_t>(),
                              h.data_ptr<int64_t>() + h.numel());
  }
}

}  // namespace

AnalogyResult analogy_test(const EmbeddingSpace& space, const RowPairs& pairs,
                           const AnalogyOptions& options) {
  if (options.restrict_vocab < 1 || options.chunk < 1 || !(options.cosmul_eps >= 0)) {
    throw ConfigError("analogy test: restrict_vocab and chunk must be >= 1 and cosmul_eps >= 0");
  }
  const int64_t n_candidates = std::min(options.restrict_vocab, space.size());
  AnalogyResult result;

  // Questions (a, a*, b, b*) in (i, j) order.
  std::vector<int64_t> rows;
  int64_t oov = 0;
  for (int64_t i = 0; i < pairs.size(); ++i) {
    for (int64_t j = 0; j < pairs.size(); ++j) {
      if (pairs.source[i] == pairs.source[j]) continue;
      const int64_t q[4] = {pairs.source[i], pairs.target[i], pairs.source[j], pairs.target[j]};
      if (*std::max_element(q, q + 4) >= n_candidates) {
        ++oov;
        continue;
      }
      rows.insert(rows.end(), q, q + 4);
    }
  }
  const int64_t n_questions = static_cast<int64_t>(rows.size()) / 4;
  result.add.questions = result.mul.questions = n_questions;
  result.add.oov = result.mul.oov = oov;
  if (n_questions == 0) return result;

  torch::NoGradGuard no_grad;
  const torch::Tensor questions =
      torch::from_blob(rows.data(), {n_questions, 4}, torch::kInt64).to(space.unit.device());
  const torch::Tensor candidates = space.unit.narrow(0, 0, n_candidates);
  const double eps = options.cosmul_eps;
  for (int64_t start = 0; start < n_questions; start += options.chunk) {
    const int64_t m = std::min(options.chunk, n_questions - start);
    const torch::Tensor q_rows = questions.narrow(0, start, m);
    // û(a), û(a*), û(b) for the m questions, then cos(x, ·) for every candidate x.
    const torch::Tensor u =
        space.unit.index_select(0, q_rows.narrow(1, 0, 3).t().reshape(-1)).view({3, m, -1});
    torch::Tensor cos = torch::mm(u.view({3 * m, -1}), candidates.t()).view({3, m, -1});
    const torch::Tensor cos_a = cos[0], cos_a_star = cos[1], cos_b = cos[2];

    // 3CosAdd: û(x)·q/||q|| with q = û(a*) − û(a) + û(b).
    const torch::Tensor q_norm = (u[1] - u[0] + u[2]).norm(2, /*dim=*/1, /*keepdim=*/true);
    tally((cos_a_star - cos_a + cos_b) / torch::where(q_norm > 0, q_norm, 1.0), q_rows, result.add,
          options.keep_predictions);

    // 3CosMul: ĉ(x,a*)·ĉ(x,b)/(ĉ(x,a) + ε), ĉ = (1 + cos)/2.
    const torch::Tensor c = cos.add_(1).div_(2);
    tally(c[1] * c[2] / (c[0] + eps), q_rows, result.mul, options.keep_predictions);
  }
  return result;
}

Decomposition decompose(const EmbeddingSpace& space, const RowPairs& pairs) {
  Decomposition r;
  const int64_t n = pairs.size();
  if (n < 2) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    r.cos = r.b_b = r.oa_ob = r.oa_b = nan;
    r.ref_b_analogy = r.ref_oa_b = r.ref_oa2 = nan;
    r.dsim = r.dsim_rest = r.dsim_oa_ob = r.dsim_ob_b = nan;
    return r;
  }
  torch::NoGradGuard no_grad;
  const auto rows = [&](const std::vector<int64_t>& v) {
    const torch::Tensor idx = torch::from_blob(const_cast<int64_t*>(v.data()), {n}, torch::kInt64)
                                  .to(space.vectors.device());
    return space.vectors.index_select(0, idx);
  };
  const torch::Tensor s = rows(pairs.source), t = rows(pairs.target), o = t - s;
  const auto f64 = [](const torch::Tensor& x) { return x.to(torch::kFloat64); };
  // Row i of a matrix is the question's a-pair, column j its b-pair; [1, n] rows depend on j,
  // [n, 1] columns on i.
  const auto by_j = [&](const torch::Tensor& x, const torch::Tensor& y) {
    return f64((x * y).sum(1)).unsqueeze(0);
  };
  const torch::Tensor oa_ob = f64(o.mm(o.t()));               // o_a·o_b
  const torch::Tensor oa_b = f64(o.mm(s.t()));                // o_a·b
  const torch::Tensor oa_bp = f64(o.mm(t.t()));               // o_a·b'
  const torch::Tensor oa_oa = oa_ob.diagonal().unsqueeze(1);  // o_a·o_a
  const torch::Tensor b_b = by_j(s, s), b_bp = by_j(s, t), bp_bp = by_j(t, t), b_ob = by_j(s, o);

  const torch::Tensor y2 = b_b + 2 * oa_b + oa_oa;  // ||y||², y = b + o_a
  const torch::Tensor y_norm = y2.sqrt(), b_norm = b_b.sqrt(), bp_norm = bp_bp.sqrt();
  const torch::Tensor z = y_norm * bp_norm;
  const torch::Tensor y_b = b_b + oa_b;  // y·b
  const torch::Tensor cos_y_bp = (b_bp + oa_bp) / z;
  const torch::Tensor cos_y_b = y_b / (y_norm * b_norm);

  const torch::Tensor off_diagonal =
      ~torch::eye(n, torch::TensorOptions().dtype(torch::kBool).device(oa_ob.device()));
  const auto mean = [&](const torch::Tensor& x) {
    return x.expand({n, n}).masked_select(off_diagonal).mean().item<double>();
  };
  r.questions = n * (n - 1);
  r.cos = mean(cos_y_bp);
  r.b_b = mean(b_bp / z);
  r.oa_ob = mean(oa_ob / z);
  r.oa_b = mean(oa_b / z);
  r.ref_b_analogy = mean(y_b / y2);
  r.ref_oa_b = mean(oa_b / y2);
  r.ref_oa2 = mean(oa_oa / y2);
  r.dsim = mean(cos_y_bp - cos_y_b);
  r.dsim_rest = mean(y_b * (1 / bp_norm - 1 / b_norm) / y_norm);
  r.dsim_oa_ob = r.oa_ob;  // the same term, o_a·o_b/Z
  r.dsim_ob_b = mean(b_ob / z);
  return r;
}

}  // namespace desync
