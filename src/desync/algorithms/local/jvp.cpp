#include "desync/algorithms/local/jvp.h"

#include <torch/csrc/autograd/forward_grad.h>

#include <mutex>

namespace desync {

namespace {

// A forward-mode AD level, open for the guard's life; closing it drops every tangent set at it.
// Levels belong to the process and torch opens one at a time, so threads that hold ranks of
// one process (in-process worlds) take turns.
class DualLevel {
 public:
  DualLevel() : lock_(mutex()), level_(torch::autograd::ForwardADLevel::get_next_idx()) {}
  ~DualLevel() { torch::autograd::ForwardADLevel::release_idx(level_); }
  DualLevel(const DualLevel&) = delete;
  DualLevel& operator=(const DualLevel&) = delete;
  uint64_t level() const { return level_; }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  std::lock_guard<std::mutex> lock_;
  uint64_t level_;
};

torch::Tensor tangent_of(const torch::Tensor& y, uint64_t level) {
  torch::Tensor t = std::get<1>(at::_unpack_dual(y, static_cast<int64_t>(level)));
  // An output that does not depend on the input has no tangent: its derivative is zero.
  return t.defined() ? t.clone() : torch::zeros_like(y);
}

// d/dv <J^T v, u> summed over the pairs, with J^T v = grad(y, inputs, v).
torch::Tensor double_vjp(const torch::Tensor& y, const std::vector<torch::Tensor>& inputs,
                         const std::vector<torch::Tensor>& u) {
  torch::Tensor v = torch::zeros_like(y, torch::requires_grad());
  std::vector<torch::Tensor> jtv = torch::autograd::grad({y}, inputs, {v}, /*retain_graph=*/true,
                                                         /*create_graph=*/true,
                                                         /*allow_unused=*/true);
  torch::Tensor dot = torch::zeros({}, y.options());
  for (size_t i = 0; i < jtv.size(); ++i)
    if (jtv[i].defined()) dot = dot + (jtv[i] * u[i]).sum();
  if (!dot.requires_grad()) return torch::zeros_like(y);
  return torch::autograd::grad({dot}, {v}, {}, /*retain_graph=*/false, /*create_graph=*/false,
                               /*allow_unused=*/true)[0];
}

}  // namespace

torch::Tensor jvp_forward_ad(const std::function<torch::Tensor(const torch::Tensor&)>& f,
                             const torch::Tensor& a, const torch::Tensor& u) {
  torch::NoGradGuard no_grad;  // the tangent pass builds no graph
  DualLevel level;
  torch::Tensor dual = at::_make_dual(a.detach(), u.detach(), static_cast<int64_t>(level.level()));
  return tangent_of(f(dual), level.level());
}

torch::Tensor jvp_double_vjp(const std::function<torch::Tensor(const torch::Tensor&)>& f,
                             const torch::Tensor& a, const torch::Tensor& u) {
  torch::Tensor leaf = a.detach().requires_grad_(true);
  return double_vjp(f(leaf), {leaf}, {u});
}

torch::Tensor jvp_forward_ad(const std::function<torch::Tensor()>& f,
                             const std::vector<torch::Tensor>& params,
                             const std::vector<torch::Tensor>& tangents) {
  torch::NoGradGuard no_grad;
  DualLevel level;
  for (size_t i = 0; i < params.size(); ++i)
    params[i]._set_fw_grad(tangents[i].detach(), level.level(), /*is_inplace_op=*/false);
  return tangent_of(f(), level.level());  // releasing the level clears the parameters' tangents
}

torch::Tensor jvp_double_vjp(const std::function<torch::Tensor()>& f,
                             const std::vector<torch::Tensor>& params,
                             const std::vector<torch::Tensor>& tangents) {
  return double_vjp(f(), params, tangents);
}

}  // namespace desync
