// Spectron (spectron.h).
#include "desync/optim/spectron.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "desync/core/error.h"
#include "desync/core/gauges.h"

namespace desync {

torch::Tensor newton_schulz5(const torch::Tensor& x, int64_t steps) {
  constexpr double a = 3.4445, b = -4.7750, c = 2.0315;
  const bool tall = x.size(0) > x.size(1);
  torch::Tensor X = tall ? x.t() : x;  // [small, large]: the Gram matrix is small x small
  X = X / (X.norm() + 1e-7);
  for (int64_t i = 0; i < steps; ++i) {
    const torch::Tensor gram = torch::matmul(X, X.t());
    const torch::Tensor poly = b * gram + c * torch::matmul(gram, gram);
    X = a * X + torch::matmul(poly, X);
  }
  return tall ? X.t().contiguous() : X;
}

torch::Tensor polar_factor(const torch::Tensor& x) {
  auto [u, s, vh] = torch::linalg_svd(x, /*full_matrices=*/false);
  return torch::matmul(u, vh);
}

double power_iteration(const torch::Tensor& w, torch::Tensor& u, int64_t steps) {
  double sigma = 0.0;
  for (int64_t i = 0; i < steps; ++i) {
    torch::Tensor v = torch::mv(w.t(), u);
    v = v / (v.norm() + 1e-30);
    torch::Tensor wv = torch::mv(w, v);
    sigma = wv.norm().item<double>();
    u.copy_(wv / (sigma + 1e-30));
  }
  return sigma;
}

double low_rank_update_norm(const torch::Tensor& a_new, const torch::Tensor& b_new,
                            const torch::Tensor& a, const torch::Tensor& b) {
  auto [q1, r1] = torch::linalg_qr(torch::cat({a_new, -a}, 1));
  auto [q2, r2] = torch::linalg_qr(torch::cat({b_new, b}, 1));
  return torch::linalg_svdvals(torch::matmul(r1, r2.t()))[0].item<double>();
}

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// One factorised layer: its two slots and their state.
struct Pair {
  std::string layer;  // the slots' names without ".A" / ".B"
  ParamSlot a, b;
  torch::Tensor momentum_a, momentum_b;
  torch::Tensor u_a, u_b;  // power-iteration vectors, unit norm
};

class Spectron : public Optimizer {
 public:
  Spectron(std::vector<ParamSlot> slots, const SpectronOptions& options)
      : Optimizer(std::move(slots)), options_(options) {
    torch::NoGradGuard no_grad;
    std::map<std::string, const ParamSlot*> by_name;
    for (const ParamSlot& s : slots_) by_name[s.name] = &s;
    std::vector<ParamSlot> dense;
    for (const ParamSlot& s : slots_) {
      if (s.name.find(".A[") != std::string::npos || s.name.find(".B[") != std::string::npos)
        throw ConfigError(fmt::format(
            "optimizer.name = \"spectron\" needs whole factor matrices, but the algorithm hands "
            "the optimizer a shard of '{}'; use an algorithm that keeps whole tensors (ddp, "
            "diloco, the pipelines)",
            s.name.substr(0, s.name.find('['))));
      if (ends_with(s.name, ".B") && by_name.count(s.name.substr(0, s.name.size() - 1) + "A"))
        continue;  // taken with its A
      if (!ends_with(s.name, ".A")) {
        dense.push_back(s);
        continue;
      }
      const std::string layer = s.name.substr(0, s.name.size() - 2);
      const auto b = by_name.find(layer + ".B");
      if (b == by_name.end() || s.param.dim() != 2 || b->second->param.dim() != 2 ||
          s.param.size(1) != b->second->param.size(1))
        throw ConfigError(fmt::format(
            "optimizer.name = \"spectron\": '{}' needs a factor '{}.B' of the same rank (a "
            "model with model.low_rank > 0)",
            s.name, layer));
      Pair p{.layer = layer,
             .a = s,
             .b = *b->second,
             .momentum_a = {},
             .momentum_b = {},
             .u_a = {},
             .u_b = {}};
      p.momentum_a = torch::zeros_like(p.a.param, torch::MemoryFormat::Contiguous);
      p.momentum_b = torch::zeros_like(p.b.param, torch::MemoryFormat::Contiguous);
      // Warm starts drawn from a generator keyed by the layer's name: the same on every rank.
      auto gen = at::detail::createCPUGenerator(std::hash<std::string>{}(layer));
      auto opts = torch::TensorOptions().dtype(p.a.param.dtype());
      p.u_a = torch::randn({p.a.param.size(0)}, gen, opts);
      p.u_b = torch::randn({p.b.param.size(0)}, gen, opts);
      p.u_a /= p.u_a.norm();
      p.u_b /= p.u_b.norm();
      pairs_.push_back(std::move(p));
    }
    adamw_ = make_adamw(std::move(dense), options.beta1, options.beta2, options.eps);
  }

  void step(double lr) override {
    torch::NoGradGuard no_grad;
    adamw_->step(lr);
    double worst = 0.0;
    for (Pair& p : pairs_) {
      const double eta = lr * p.a.lr_scale;
      torch::Tensor& A = p.a.param;
      torch::Tensor& B = p.b.param;
      if (p.a.weight_decay != 0.0) A.mul_(1.0 - eta * p.a.weight_decay);
      if (p.b.weight_decay != 0.0) B.mul_(1.0 - eta * p.b.weight_decay);
      p.momentum_a.mul_(options_.beta).add_(p.a.grad, 1.0 - options_.beta);
      p.momentum_b.mul_(options_.beta).add_(p.b.grad, 1.0 - options_.beta);
      const torch::Tensor o_a = orthogonalise(p.momentum_a);
      const torch::Tensor o_b = orthogonalise(p.momentum_b);
      const double sigma_a = spectral_norm(A, p.u_a);
      const double sigma_b = spectral_norm(B, p.u_b);
      const double rho = eta / (sigma_a + sigma_b + 1.0);
      const torch::Tensor a_old = A.clone(), b_old = B.clone();
      A.sub_(o_a, rho);
      B.sub_(o_b, rho);
      const double dw = low_rank_update_norm(A, B, a_old, b_old) / eta;
      worst = std::max(worst, dw);
      Gauges& g = Gauges::instance();
      g.set("spectron." + p.layer + ".dW", dw);
      g.set("spectron." + p.layer + ".A", sigma_a);
      g.set("spectron." + p.layer + ".B", sigma_b);
    }
    Gauges::instance().set("spectron.dW_max", worst);
  }

  std::vector<std::pair<std::string, torch::Tensor>> state() override {
    std::vector<std::pair<std::string, torch::Tensor>> out = adamw_->state();
    for (Pair& p : pairs_) {
      out.emplace_back(p.a.name + ".momentum", p.momentum_a);
      out.emplace_back(p.b.name + ".momentum", p.momentum_b);
      out.emplace_back(p.a.name + ".u", p.u_a);
      out.emplace_back(p.b.name + ".u", p.u_b);
    }
    return out;
  }

 private:
  torch::Tensor orthogonalise(const torch::Tensor& m) const {
    return options_.exact ? polar_factor(m) : newton_schulz5(m, options_.ns_steps);
  }

  double spectral_norm(const torch::Tensor& w, torch::Tensor& u) const {
    if (options_.exact) return torch::linalg_svdvals(w)[0].item<double>();
    return power_iteration(w, u, options_.power_steps);
  }

  SpectronOptions options_;
  std::vector<Pair> pairs_;
  std::unique_ptr<Optimizer> adamw_;
};

}  // namespace

std::unique_ptr<Optimizer> make_spectron(std::vector<ParamSlot> slots,
                                         const SpectronOptions& options) {
  if (options.beta < 0.0 || options.beta >= 1.0)
    throw ConfigError("optimizer.spectron_beta: must be in [0, 1)");
  return std::make_unique<Spectron>(std::move(slots), options);
}

}  // namespace desync
