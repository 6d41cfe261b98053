// A block whose output is relu(branch(x) + shortcut(x)) (ResNet's BasicBlock) can run without
// its residual branch: its output is then relu(shortcut(x)), the identity where the shortcut is
// (x is itself the output of a ReLU), the projection otherwise. Subnetwork data parallelism
// drops blocks this way (algorithms/dataparallel/sdp.h). Find the blocks of a model with
// residual_blocks().
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
