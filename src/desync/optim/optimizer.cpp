// The optimizer factory and the helpers around optimizers: slots from named parameters,
// gradient-norm clipping, state accounting.
#include "desync/optim/optimizer.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "desync/core/error.h"

namespace desync {

int64_t Optimizer::state_numel() {
  int64_t n = 0;
  for (const auto& entry : state()) n += entry.second.numel();
  return n;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& cfg,
                                          std::vector<ParamSlot> slots) {
  if (cfg.name == "sgd") {
    return make_sgd(std::move(slots), cfg.momentum, cfg.dampening, cfg.nesterov);
  }
  if (cfg.name == "adamw") {
    return make_adamw(std::move(slots), cfg.beta1, cfg.beta2, cfg.eps);
  }
  throw ConfigError("optimizer.name: unknown optimizer '" + cfg.name +
                    "'; valid choices: sgd, adamw");
}

std::vector<ParamSlot> param_slots(const std::vector<std::pair<std::string, torch::Tensor>>& named,
                                   const OptimizerConfig& cfg) {
  std::vector<ParamSlot> slots;
  slots.reserve(named.size());
  for (const auto& [name, param] : named) {
    torch::Tensor grad = param.grad();
    if (!grad.defined()) {
      throw std::invalid_argument("param_slots: parameter '" + name +
                                  "' has no gradient tensor; bind one (e.g. FlatParameters) first");
    }
    const bool no_decay = cfg.no_decay_norm_bias && param.dim() <= 1;
    slots.push_back(ParamSlot{name, param, grad, no_decay ? 0.0 : cfg.weight_decay});
  }
  return slots;
}

double clip_grad_norm(const std::vector<torch::Tensor>& grads, double max_norm) {
  torch::NoGradGuard no_grad;
  double sum_sq = 0.0;
  for (const auto& g : grads) {
    if (!g.defined()) continue;
    const double n = g.norm().item<double>();
    sum_sq += n * n;
  }
  const double total = std::sqrt(sum_sq);
  // As torch.nn.utils.clip_grad_norm_: scale when max_norm / (total + 1e-6) < 1.
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1.0) {
    for (const auto& g : grads) {
      if (g.defined()) g.mul_(coef);
    }
  }
  return total;
}

}  // namespace desync
