// Reversible modules: layers whose input can be rebuilt from their output.
//
// A module that implements ReversibleModule promises inverse(forward(x)) == x up to rounding,
// for the same weights and the same batch (BatchNorm inside uses batch statistics in training
// mode, so forward and inverse see the same statistics). Pipelines use it to rebuild a stage's
// input during the backward pass instead of buffering it (PETRA).
//
// A stage of a StagedModel is reversible when every module in its Sequential is; its inverse
// applies the modules' inverses in reverse order.
//
// Thread-safety: as the module's.
#pragma once

#include <torch/torch.h>

namespace desync {

class ReversibleModule {
 public:
  virtual ~ReversibleModule() = default;
  // The input x with forward(x) == y, computed without recording a graph.
  virtual torch::Tensor inverse(const torch::Tensor& y) = 0;
};

// True when every module of `stage` is a ReversibleModule (and there is at least one).
bool is_reversible(torch::nn::Sequential& stage);
// The stage's input rebuilt from its output (inverse of each module, last to first).
torch::Tensor invert_stage(torch::nn::Sequential& stage, const torch::Tensor& y);

}  // namespace desync
