// Training losses other than plain cross-entropy, for the members of a population that differ in
// their regularisation (population/member.h; PAPA's recipe, which WASH's spec takes too):
//
//   label smoothing eps:  CE_eps(z, y) = (1 - eps) CE(z, y) + eps mean_c(-log softmax(z)_c)
//   mixup alpha > 0 (Zhang et al., 2018, "mixup: Beyond Empirical Risk Minimization"), per batch:
//     lambda ~ Beta(alpha, alpha); pi a random permutation of the batch
//     x~ = lambda x + (1 - lambda) x[pi]
//     loss = lambda CE_eps(f(x~), y) + (1 - lambda) CE_eps(f(x~), y[pi])
//
// Mixup mixes inputs, so it needs real-valued ones (images, features), not token ids.
#pragma once

#include <functional>

#include "desync/algorithms/algorithm.h"
#include "desync/data/batch_source.h"

namespace desync {

struct LossRecipe {
  double mixup = 0.0;  // Beta's alpha; 0 = no mixup
  double label_smoothing = 0.0;
  bool plain() const { return mixup == 0.0 && label_smoothing == 0.0; }
};

// A micro-batch after mixup: inputs mixed with weight `lambda`, the targets of both sources.
struct MixedBatch {
  torch::Tensor inputs, targets, paired_targets;
  double lambda = 1.0;
};

// A draw of Beta(alpha, alpha), as X / (X + Y) for X, Y ~ Gamma(alpha).
double sample_beta(double alpha, at::Generator& gen);
// Mixup of `batch` with Beta(alpha, alpha); alpha = 0 returns it unmixed (lambda = 1).
MixedBatch mix(const MicroBatch& batch, double alpha, at::Generator& gen);
// The recipe's loss of `logits` (computed on batch.inputs).
torch::Tensor recipe_loss(const torch::Tensor& logits, const MixedBatch& batch,
                          double label_smoothing);

// accumulate_gradients() (common.h) with another loss: `loss` runs the forward of a micro-batch
// and returns its loss. Defined in common.cpp, with the loop it shares.
StepReport accumulate_gradients_with(Context& ctx, int64_t n, int64_t divisor,
                                     const std::function<torch::Tensor(const MicroBatch&)>& loss);

}  // namespace desync
