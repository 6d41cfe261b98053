// AdamW as torch.optim.AdamW (PyTorch 1.13 / 2.x, amsgrad off, foreach off), per slot at step t,
// with lr the slot's learning rate (the schedule's times ParamSlot::lr_scale):
//
//   param *= 1 - lr * weight_decay                        (decoupled decay)
//   m = beta1 * m + (1 - beta1) * grad
//   v = beta2 * v + (1 - beta2) * grad^2
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   param -= lr / (1 - beta1^t) * m / denom
#include <cmath>
#include <string>
#include <utility>

#include "desync/core/error.h"
#include "desync/optim/optimizer.h"

namespace desync {

namespace {

class AdamW : public Optimizer {
 public:
  AdamW(std::vector<ParamSlot> slots, double beta1, double beta2, double eps)
      : Optimizer(std::move(slots)),
        beta1_(beta1),
        beta2_(beta2),
        eps_(eps),
        step_(torch::zeros({}, torch::kInt64)) {
    torch::NoGradGuard no_grad;
    for (const ParamSlot& s : slots_) {
      exp_avg_.push_back(torch::zeros_like(s.param, torch::MemoryFormat::Contiguous));
      exp_avg_sq_.push_back(torch::zeros_like(s.param, torch::MemoryFormat::Contiguous));
    }
  }

  void step(double lr) override {
    torch::NoGradGuard no_grad;
    const int64_t t = step_.item<int64_t>() + 1;
    const double bias_correction1 = 1.0 - std::pow(beta1_, static_cast<double>(t));
    const double bias_correction2 = 1.0 - std::pow(beta2_, static_cast<double>(t));
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    for (size_t i = 0; i < slots_.size(); ++i) {
      ParamSlot& s = slots_[i];
      const double slot_lr = lr * s.lr_scale;
      const double step_size = slot_lr / bias_correction1;
      if (s.weight_decay != 0.0) s.param.mul_(1.0 - slot_lr * s.weight_decay);
      exp_avg_[i].mul_(beta1_).add_(s.grad, 1.0 - beta1_);
      exp_avg_sq_[i].mul_(beta2_).addcmul_(s.grad, s.grad, 1.0 - beta2_);
      torch::Tensor denom = (exp_avg_sq_[i].sqrt() / bias_correction2_sqrt).add_(eps_);
      s.param.addcdiv_(exp_avg_[i], denom, -step_size);
    }
    step_.fill_(t);
  }

  std::vector<std::pair<std::string, torch::Tensor>> state() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (size_t i = 0; i < slots_.size(); ++i) {
      out.emplace_back(slots_[i].name + ".exp_avg", exp_avg_[i]);
      out.emplace_back(slots_[i].name + ".exp_avg_sq", exp_avg_sq_[i]);
    }
    out.emplace_back("step", step_);
    return out;
  }

 private:
  double beta1_, beta2_, eps_;
  torch::Tensor step_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
};

}  // namespace

std::unique_ptr<Optimizer> make_adamw(std::vector<ParamSlot> slots, double beta1, double beta2,
                                      double eps) {
  if (beta1 < 0.0 || beta1 >= 1.0) throw ConfigError("optimizer.beta1: must be in [0, 1)");
  if (beta2 < 0.0 || beta2 >= 1.0) throw ConfigError("optimizer.beta2: must be in [0, 1)");
  if (eps < 0.0) throw ConfigError("optimizer.eps: must be >= 0");
  return std::make_unique<AdamW>(std::move(slots), beta1, beta2, eps);
}

}  // namespace desync
