// Optimizers over explicit (parameter, gradient) tensor pairs.
//
// desync's optimizers do not read `.grad()`: each slot names the tensor to update and the
// gradient to use, so the same optimizer serves a whole model, a flat buffer, or one rank's
// shard of a flat buffer (ZeRO-1, ACCO). The update is in place under NoGradGuard and follows
// PyTorch's torch.optim.SGD and torch.optim.AdamW to the letter (tests compare them).
//
// The state (momentum buffers, moments, step count) is exposed by name for checkpoints and for
// algorithms that back it up and restore it (ACCO's tentative step).
//
// Thread-safety: none.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "desync/core/config.h"

namespace desync {

struct ParamSlot {
  std::string name;
  torch::Tensor param;  // updated in place
  torch::Tensor grad;   // read
  double weight_decay = 0.0;
  // Multiplies the learning rate of this slot (μP's per-tensor scales, models/mup.h).
  double lr_scale = 1.0;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // One update of every slot with learning rate `lr`.
  virtual void step(double lr) = 0;

  // Named state tensors, e.g. "<slot>.exp_avg"; the step count is "step" (a 0-dim int64 tensor).
  // The tensors are the live state: copying into them restores it.
  virtual std::vector<std::pair<std::string, torch::Tensor>> state() = 0;

  // Number of state elements held (for memory accounting).
  int64_t state_numel();

  std::vector<ParamSlot>& slots() { return slots_; }

 protected:
  explicit Optimizer(std::vector<ParamSlot> slots) : slots_(std::move(slots)) {}
  std::vector<ParamSlot> slots_;
};

// SGD with momentum, dampening, Nesterov and (coupled) weight decay, as torch.optim.SGD.
std::unique_ptr<Optimizer> make_sgd(std::vector<ParamSlot> slots, double momentum, double dampening,
                                    bool nesterov);
// AdamW with decoupled weight decay, as torch.optim.AdamW (amsgrad off).
std::unique_ptr<Optimizer> make_adamw(std::vector<ParamSlot> slots, double beta1, double beta2,
                                      double eps);

// Builds the optimizer named by cfg.name over `slots`.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& cfg, std::vector<ParamSlot> slots);
// The same after giving each slot the learning-rate scale of the model's parametrisation
// (model.parametrization = "mup", models/mup.h); refuses μP over slots that are not whole
// named parameters (a flat shard).
std::unique_ptr<Optimizer> make_optimizer(const Config& cfg, std::vector<ParamSlot> slots);

// One slot per named parameter, with gradient = param.grad() (which must be defined, e.g.
// bound by FlatParameters) and weight decay cfg.weight_decay, or 0 for biases and
// normalisation weights (1-D tensors) when cfg.no_decay_norm_bias is set.
std::vector<ParamSlot> param_slots(const std::vector<std::pair<std::string, torch::Tensor>>& named,
                                   const OptimizerConfig& cfg);

// Scales the gradients in place so that their global L2 norm is at most max_norm; returns the
// norm before clipping.
double clip_grad_norm(const std::vector<torch::Tensor>& grads, double max_norm);

}  // namespace desync
