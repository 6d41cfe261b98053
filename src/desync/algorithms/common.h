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
// and what was consumed. Each forward pass (and loss) runs in an ActivationScope, so the
// activations it keeps for backward are counted (core/activation_memory.h).
StepReport accumulate_gradients(Context& ctx, int64_t n, int64_t divisor);
inline StepReport accumulate_gradients(Context& ctx, int64_t n) {
  return accumulate_gradients(ctx, n, n);
}

// The model's parameters packed into one flat buffer padded to a multiple of `pad_to`, made
// identical on every rank (broadcast of parameters and buffers from rank 0).
std::unique_ptr<FlatParameters> make_replicated_flat(Context& ctx, int64_t pad_to = 1);

// Clips the flat gradient if [optimizer] grad_clip is set, then takes the optimizer step at the
// schedule's learning rate for ctx.step (traced as "optimizer").
void apply_update(Context& ctx, FlatParameters& flat, Optimizer& optimizer);

// Clips `grad`, this rank's part of a gradient split across the ranks of `comm` (a shard, a
// pipeline stage), to a global L2 norm of at most `max_norm` (one scalar all-reduce), as
// clip_grad_norm does for a whole gradient. No-op when max_norm <= 0.
void clip_global_norm(Communicator& comm, torch::Tensor& grad, double max_norm);

// Optimizer state in checkpoints, under `prefix`.
void save_optimizer(Optimizer& optimizer, Archive& archive,
                    const std::string& prefix = "optimizer.");
void load_optimizer(Optimizer& optimizer, const Archive& archive,
                    const std::string& prefix = "optimizer.");

// Bytes of full-model training state: parameters, gradients and optimizer state.
MemoryReport model_state_memory(FlatParameters& flat, Optimizer& optimizer);

}  // namespace desync
