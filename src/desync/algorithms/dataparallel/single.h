// `single`: plain backpropagation on one worker — the reference every method is compared with.
//
//   per step t:
//     G <- 0
//     for k in 1..accumulation:  G += grad of (loss(micro-batch k) / accumulation)
//     if grad_clip > 0: clip G to global norm grad_clip
//     theta <- Opt(theta, G, lr_t)
//
// Parameters and gradients live in one flat buffer (FlatParameters), so the optimizer and any
// later communication see contiguous memory. With accumulation k and micro-batch B it equals one
// step on a batch of k*B examples.
#pragma once

#include <memory>

#include "desync/algorithms/algorithm.h"

namespace desync {

class Single : public Algorithm {
 public:
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

 private:
  int64_t accumulation_ = 1;
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<Optimizer> optimizer_;
};

}  // namespace desync
