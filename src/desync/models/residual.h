// A block whose output is relu(branch(x) + shortcut(x)) (ResNet's BasicBlock) can run without
// its residual branch: its output is then relu(shortcut(x)), the identity where the shortcut is
// (x is itself the output of a ReLU), the projection otherwise. Subnetwork data parallelism
// drops blocks this way (algorithms/dataparallel/sdp.h), or the hidden units of their branches
// (hidden_units()). Find the blocks of a model with residual_blocks().
#pragma once

#include <torch/torch.h>

#include <vector>

namespace desync {

class ResidualBlock {
 public:
  virtual ~ResidualBlock() = default;
  // Off: the branch is neither computed nor differentiated.
  void set_branch_enabled(bool on) { branch_enabled_ = on; }
  bool branch_enabled() const { return branch_enabled_; }
  // The branch's modules (not the shortcut's): their parameters and buffers are the branch's.
  virtual std::vector<torch::nn::Module*> branch_modules() = 0;

  // The branch's hidden units (the channels between its two layers) and the tensors that have a
  // slice per unit: along dim 0 in the layers that produce them (`produce`: the first layer's
  // weight, its norm's scale and shift; `statistics`: the norm's running statistics), along
  // dim 1 in the layer that consumes them (`consume`). With a unit's slices at zero the branch
  // computes what it would without that unit.
  struct HiddenUnits {
    std::vector<torch::Tensor> produce, consume, statistics;
  };
  virtual HiddenUnits hidden_units() = 0;
  // Multiplies the branch's output by s from now on (a stochastic-depth model's test-time rule).
  virtual void scale_branch(double s) = 0;

 protected:
  bool branch_enabled_ = true;
};

// The residual blocks of `module`, in the order modules() lists them (depth order).
inline std::vector<ResidualBlock*> residual_blocks(torch::nn::Module& module) {
  std::vector<ResidualBlock*> out;
  for (const auto& m : module.modules())
    if (auto* block = dynamic_cast<ResidualBlock*>(m.get())) out.push_back(block);
  return out;
}

}  // namespace desync
