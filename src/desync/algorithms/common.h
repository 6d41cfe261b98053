// Building blocks shared by algorithms: the loss, and a forward/backward pass over micro-batches.
#pragma once

#include <torch/torch.h>

#include "desync/algorithms/algorithm.h"

namespace desync {

// Mean cross-entropy of logits [B, C] (or [B, T, C] for sequences) against int64 targets.
torch::Tensor loss_of(const torch::Tensor& logits, const torch::Tensor& targets);

// Runs forward and backward on `n` micro-batches from ctx.batches, adding into the parameters'
// gradients the gradient of sum_k loss_k / divisor (divisor = n: the mean over the n
// micro-batches). Gradients are not zeroed first. Returns the mean loss of the n micro-batches
// and what was consumed.
StepReport accumulate_gradients(Context& ctx, int64_t n, int64_t divisor);
inline StepReport accumulate_gradients(Context& ctx, int64_t n) {
  return accumulate_gradients(ctx, n, n);
}

}  // namespace desync
