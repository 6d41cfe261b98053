// `ppmi_svd`: count-based word vectors (Levy, Goldberg & Dagan, TACL 2015) on a words dataset.
//
//   step 0 (the only one; run.steps = 1):
//     V <- the words with count >= min_count (a prefix of the data's vocabulary)
//     every rank counts N(w, c) over its shard of sentences (c at distance 1..window from w;
//       weight 1, or (window - delta + 1) / window with window_weight = w2v)
//     all-gather the sorted (w*V + c, count) arrays (padded to the longest), merge on rank 0
//     rank 0: SPPMI = max(PMI - ln k_shift, 0) with context smoothing alpha; W = U_d S_d^p from
//       a randomized rank-d SVD (d = model.d_model); broadcast W
//     W_in <- W, W_out <- W (so the evaluation scores contexts with W . W)
// The maths is embeddings/ppmi_svd.h; this file only distributes it.
#pragma once

#include <cstdint>

#include "desync/algorithms/algorithm.h"
#include "desync/embeddings/ppmi_svd.h"

namespace desync {

class PpmiSvd : public Algorithm {
 public:
  PpmiSvd(PpmiOptions options, int64_t min_count) : options_(options), min_count_(min_count) {}
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  void save(Archive&) const override {}
  void load(const Archive&) override {}
  AlgorithmReport report() const override;
  int64_t min_count() const { return min_count_; }

 private:
  PpmiOptions options_;
  int64_t min_count_;
  int64_t vocab_ = 0, entries_ = 0;
};

}  // namespace desync
