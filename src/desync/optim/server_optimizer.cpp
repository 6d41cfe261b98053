// Server optimizers of federated learning (federated.md §2): FedAvg and FedAvgM (one class, u
// held only with momentum) and the FedOpt family (FedAdam, FedYogi, FedAdagrad; one class, the
// second-moment rule chosen at construction). See server_optimizer.h for the rules.
//
// Every tensor the step needs is allocated at construction: the state (u; m, v, t) and the
// scratch buffers (`decayed_`, d = Delta_bar + wd * theta, only when wd != 0; `denom_`, FedOpt's
// denominator). The step runs in place in theta's dtype. The bias-corrected FedOpt step follows
// torch.optim.Adam's order of operations (denominator sqrt(v) / sqrt(1 - b2^t) + tau, step size
// eta / (1 - b1^t)), so with v_init = 0 it matches torch::optim::Adam to rounding.
#include "desync/optim/server_optimizer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "desync/core/error.h"

namespace desync {

namespace {

const std::vector<std::string> kServerOptimizers = {"fedavg", "fedavgm", "fedadam", "fedyogi",
                                                    "fedadagrad"};

constexpr double kMaxDouble = std::numeric_limits<double>::max();

// A key in [0, 1): SectionReader's ranges are closed above, so 1 is rejected here.
double get_below_one(SectionReader& r, const char* key, double fallback) {
  const double v = r.get(key, fallback, 0.0, 1.0);
  if (v >= 1.0) {
    std::string section = "algorithm";
    for (const SectionReader::Entry& e : r.entries()) {
      if (e.key == key) section = e.section;
    }
    throw ConfigError(fmt::format("{}: {}.{} = {} is out of range: must be >= 0 and < 1",
                                  r.where(key), section, key, v));
  }
  return v;
}

// What FedAvg, FedAvgM and FedOpt share: the argument checks and d = Delta_bar (+ wd * theta).
class ServerOptimizerBase : public ServerOptimizer {
 protected:
  ServerOptimizerBase(const ServerOptimizerOptions& options, const torch::Tensor& like)
      : options_(options), sizes_(like.sizes().vec()), dtype_(like.scalar_type()) {
    if (options_.weight_decay != 0.0) {
      decayed_ = torch::empty_like(like, torch::MemoryFormat::Contiguous);
    }
  }

  // Checks the arguments of step() and returns d: `delta` itself, or Delta_bar + wd * theta in
  // the scratch buffer. Call under NoGradGuard.
  const torch::Tensor& direction(const torch::Tensor& theta, const torch::Tensor& delta,
                                 const torch::Tensor& mask) {
    check("theta", theta);
    check("delta", delta);
    if (mask.defined()) check("mask", mask);
    if (options_.weight_decay == 0.0) return delta;
    torch::add_out(decayed_, delta, theta, options_.weight_decay);
    return decayed_;
  }

  // theta <- theta - lr * (mask (.)) step.
  static void apply(torch::Tensor& theta, const torch::Tensor& step, const torch::Tensor& mask,
                    double lr) {
    if (mask.defined()) {
      theta.addcmul_(step, mask, -lr);
    } else {
      theta.add_(step, -lr);
    }
  }

  ServerOptimizerOptions options_;

 private:
  void check(const char* what, const torch::Tensor& t) const {
    if (!t.defined() || t.sizes() != torch::IntArrayRef(sizes_) || t.scalar_type() != dtype_) {
      throw std::invalid_argument(fmt::format(
          "{} server optimizer: {} must be a {} tensor of shape [{}], like the one it was made "
          "for; got {}",
          options_.name, what, c10::toString(dtype_), fmt::join(sizes_, ", "),
          t.defined()
              ? fmt::format("{} [{}]", c10::toString(t.scalar_type()), fmt::join(t.sizes(), ", "))
              : std::string("an undefined tensor")));
    }
  }

  std::vector<int64_t> sizes_;
  torch::ScalarType dtype_;
  torch::Tensor decayed_;
};

// fedavg: theta <- theta - eta * d;  fedavgm: u <- beta * u + d, theta <- theta - eta * u.
class FedAvg : public ServerOptimizerBase {
 public:
  FedAvg(const ServerOptimizerOptions& options, const torch::Tensor& like, bool momentum)
      : ServerOptimizerBase(options, like), momentum_(momentum) {
    torch::NoGradGuard no_grad;
    if (momentum_) u_ = torch::zeros_like(like, torch::MemoryFormat::Contiguous);
  }

  void step(torch::Tensor& theta, const torch::Tensor& delta, const torch::Tensor& mask) override {
    torch::NoGradGuard no_grad;
    const torch::Tensor& d = direction(theta, delta, mask);
    if (!momentum_) {
      apply(theta, d, mask, options_.lr);
      return;
    }
    u_.mul_(options_.momentum).add_(d);
    apply(theta, u_, mask, options_.lr);
  }

  std::vector<std::pair<std::string, torch::Tensor>> state() override {
    if (!momentum_) return {};
    return {{"u", u_}};
  }

 private:
  bool momentum_;
  torch::Tensor u_;
};

enum class SecondMoment { kAdam, kYogi, kAdagrad };

// m <- b1 m + (1 - b1) d;  v by `rule`;  theta <- theta - eta * m / (sqrt(v) + tau), or the
// bias-corrected form.
class FedOpt : public ServerOptimizerBase {
 public:
  FedOpt(const ServerOptimizerOptions& options, const torch::Tensor& like, SecondMoment rule)
      : ServerOptimizerBase(options, like), rule_(rule) {
    torch::NoGradGuard no_grad;
    m_ = torch::zeros_like(like, torch::MemoryFormat::Contiguous);
    v_ = torch::full_like(like, options_.v_init, torch::MemoryFormat::Contiguous);
    t_ = torch::zeros({}, torch::kInt64);
    denom_ = torch::empty_like(like, torch::MemoryFormat::Contiguous);
  }

  void step(torch::Tensor& theta, const torch::Tensor& delta, const torch::Tensor& mask) override {
    torch::NoGradGuard no_grad;
    const torch::Tensor& d = direction(theta, delta, mask);
    const double b1 = options_.beta1, b2 = options_.beta2;
    t_.add_(1);
    m_.mul_(b1).add_(d, 1.0 - b1);
    switch (rule_) {
      case SecondMoment::kAdam:
        v_.mul_(b2).addcmul_(d, d, 1.0 - b2);
        break;
      case SecondMoment::kYogi:
        // v <- v - (1 - b2) d^2 sign(v - d^2), with sign(0) = 0; denom_ is scratch here.
        torch::mul_out(denom_, d, d);
        denom_.neg_().add_(v_).sign_().mul_(d).mul_(d);
        v_.sub_(denom_, 1.0 - b2);
        break;
      case SecondMoment::kAdagrad:
        v_.addcmul_(d, d);
        break;
    }
    double step_size = options_.lr;
    torch::sqrt_out(denom_, v_);
    if (options_.bias_correction) {
      const auto t = static_cast<double>(t_.item<int64_t>());
      denom_.div_(std::sqrt(1.0 - std::pow(b2, t)));
      step_size /= 1.0 - std::pow(b1, t);
    }
    denom_.add_(options_.tau);
    if (mask.defined()) {
      torch::div_out(denom_, m_, denom_);  // the adaptive direction m / denom
      theta.addcmul_(denom_, mask, -step_size);
    } else {
      theta.addcdiv_(m_, denom_, -step_size);
    }
  }

  std::vector<std::pair<std::string, torch::Tensor>> state() override {
    return {{"m", m_}, {"v", v_}, {"t", t_}};
  }

 private:
  SecondMoment rule_;
  torch::Tensor m_, v_, t_;
  torch::Tensor denom_;
};

}  // namespace

ServerOptimizerOptions read_server_optimizer_options(SectionReader& r) {
  ServerOptimizerOptions o;
  o.name = r.get_choice("server_optimizer", "fedavg", kServerOptimizers);
  const bool adagrad = o.name == "fedadagrad";
  const bool adaptive = adagrad || o.name == "fedadam" || o.name == "fedyogi";
  o.lr = r.get("server_lr", adagrad ? 0.1 : adaptive ? 0.01 : 1.0, 0.0, kMaxDouble, true);
  o.momentum = get_below_one(r, "server_momentum", 0.9);
  o.beta1 = get_below_one(r, "server_beta1", adagrad ? 0.0 : 0.9);
  o.beta2 = get_below_one(r, "server_beta2", 0.99);
  o.tau = r.get("server_tau", 1e-3, 0.0, kMaxDouble, true);
  o.v_init = r.get("server_v_init", o.tau * o.tau, 0.0);
  o.bias_correction = r.get("server_bias_correction", false);
  o.weight_decay = r.get("server_wd", 0.0, 0.0);
  return o;
}

int64_t ServerOptimizer::state_numel() {
  int64_t n = 0;
  for (const auto& [name, tensor] : state()) {
    if (name != "t") n += tensor.numel();
  }
  return n;
}

std::unique_ptr<ServerOptimizer> make_server_optimizer(const ServerOptimizerOptions& options,
                                                       const torch::Tensor& like) {
  const std::string& name = options.name;
  if (std::find(kServerOptimizers.begin(), kServerOptimizers.end(), name) ==
      kServerOptimizers.end()) {
    throw ConfigError(
        fmt::format("server_optimizer: unknown server optimizer '{}'; valid choices: {}", name,
                    fmt::join(kServerOptimizers, ", ")));
  }
  if (!(options.lr > 0.0)) throw ConfigError("server_lr: must be > 0");
  if (!(options.tau > 0.0)) throw ConfigError("server_tau: must be > 0");
  if (!(options.v_init >= 0.0)) throw ConfigError("server_v_init: must be >= 0");
  if (!(options.weight_decay >= 0.0)) throw ConfigError("server_wd: must be >= 0");
  if (!like.defined() || !torch::isFloatingType(like.scalar_type())) {
    throw std::invalid_argument("make_server_optimizer: `like` must be a floating-point tensor");
  }
  if (name == "fedavg") return std::make_unique<FedAvg>(options, like, false);
  if (name == "fedavgm") return std::make_unique<FedAvg>(options, like, true);
  if (name == "fedadam") return std::make_unique<FedOpt>(options, like, SecondMoment::kAdam);
  if (name == "fedyogi") return std::make_unique<FedOpt>(options, like, SecondMoment::kYogi);
  return std::make_unique<FedOpt>(options, like, SecondMoment::kAdagrad);
}

}  // namespace desync
