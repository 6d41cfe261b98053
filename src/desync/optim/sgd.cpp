// SGD as torch.optim.SGD (PyTorch 1.13 / 2.x, foreach off), per slot:
//
//   d_p = grad + weight_decay * param                      (if weight_decay != 0)
//   buf = d_p                        on the first step      (if momentum != 0)
//   buf = momentum * buf + (1 - dampening) * d_p   later
//   d_p = d_p + momentum * buf  (nesterov)   or   d_p = buf
//   param -= lr * lr_scale * d_p
//
// The momentum buffers exist from construction on (zeros), so state() is complete before the
// first step; the step count tells the first step apart.
#include <stdexcept>
#include <string>
#include <utility>

#include "desync/core/error.h"
#include "desync/optim/optimizer.h"

namespace desync {

namespace {

class Sgd : public Optimizer {
 public:
  Sgd(std::vector<ParamSlot> slots, double momentum, double dampening, bool nesterov)
      : Optimizer(std::move(slots)),
        momentum_(momentum),
        dampening_(dampening),
        nesterov_(nesterov),
        step_(torch::zeros({}, torch::kInt64)) {
    torch::NoGradGuard no_grad;
    if (momentum_ != 0.0) {
      for (const ParamSlot& s : slots_) {
        buffers_.push_back(torch::zeros_like(s.param, torch::MemoryFormat::Contiguous));
      }
    }
  }

  void step(double lr) override {
    torch::NoGradGuard no_grad;
    const bool first = step_.item<int64_t>() == 0;
    for (size_t i = 0; i < slots_.size(); ++i) {
      ParamSlot& s = slots_[i];
      torch::Tensor d_p = s.grad;
      if (s.weight_decay != 0.0) d_p = d_p.add(s.param, s.weight_decay);
      if (momentum_ != 0.0) {
        torch::Tensor& buf = buffers_[i];
        if (first) {
          buf.copy_(d_p);
        } else {
          buf.mul_(momentum_).add_(d_p, 1.0 - dampening_);
        }
        d_p = nesterov_ ? d_p.add(buf, momentum_) : buf;
      }
      s.param.add_(d_p, -lr * s.lr_scale);
    }
    step_.add_(1);
  }

  std::vector<std::pair<std::string, torch::Tensor>> state() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (size_t i = 0; i < buffers_.size(); ++i) {
      out.emplace_back(slots_[i].name + ".momentum_buffer", buffers_[i]);
    }
    out.emplace_back("step", step_);
    return out;
  }

 private:
  double momentum_, dampening_;
  bool nesterov_;
  torch::Tensor step_;
  std::vector<torch::Tensor> buffers_;
};

}  // namespace

std::unique_ptr<Optimizer> make_sgd(std::vector<ParamSlot> slots, double momentum, double dampening,
                                    bool nesterov) {
  if (momentum < 0.0) throw ConfigError("optimizer.momentum: must be >= 0");
  if (nesterov && (momentum <= 0.0 || dampening != 0.0)) {
    throw ConfigError("optimizer.nesterov: needs momentum > 0 and dampening = 0");
  }
  return std::make_unique<Sgd>(std::move(slots), momentum, dampening, nesterov);
}

}  // namespace desync
