// The optimizer factory and the helpers around optimizers: slots from named parameters,
// gradient-norm clipping, state accounting.
#include "desync/optim/optimizer.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "desync/core/error.h"
#include "desync/models/mup.h"
#include "desync/optim/mulo.h"
#include "desync/optim/spectron.h"

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
  if (cfg.name == "spectron") {
    return make_spectron(std::move(slots), {.beta = cfg.spectron_beta,
                                            .ns_steps = cfg.spectron_ns_steps,
                                            .power_steps = cfg.spectron_power_steps,
                                            .exact = cfg.spectron_exact,
                                            .beta1 = cfg.beta1,
                                            .beta2 = cfg.beta2,
                                            .eps = cfg.eps});
  }
  if (cfg.name == "mulo") {
    MuloParams params = cfg.lopt_weights.empty()
                            ? MuloParams::init(static_cast<uint64_t>(cfg.lopt_seed))
                            : MuloParams::load(cfg.lopt_weights);
    return make_mulo(std::move(slots), std::move(params),
                     {.alpha1 = cfg.lopt_alpha1, .alpha2 = cfg.lopt_alpha2, .clip = cfg.lopt_clip});
  }
  throw ConfigError("optimizer.name: unknown optimizer '" + cfg.name +
                    "'; valid choices: sgd, adamw, spectron, mulo");
}

std::unique_ptr<Optimizer> make_optimizer(const Config& cfg, std::vector<ParamSlot> slots) {
  if (cfg.model.parametrization == "mup" && cfg.optimizer.name == "sgd")
    throw ConfigError(
        "model.parametrization = \"mup\": its per-tensor learning rates are those of adaptive "
        "updates; use optimizer.name = \"adamw\", \"spectron\" or \"mulo\"");
  if (cfg.optimizer.name == "spectron" && cfg.model.low_rank <= 0)
    throw ConfigError(
        "optimizer.name = \"spectron\" trains factorised layers; set model.low_rank (e.g. 0.25) "
        "so that the model has them");
  set_mup_lr_scales(cfg.model, slots);
  return make_optimizer(cfg.optimizer, std::move(slots));
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
