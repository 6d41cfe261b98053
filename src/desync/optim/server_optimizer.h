// Server optimizers of federated learning: ServerOpt(theta, Delta_bar), where Delta_bar, the
// weighted mean of the clients' Delta_i = theta - theta_i,end, is treated as a gradient
// (spec federated.md §2; "Adaptive Federated Optimization", arXiv 2003.00295; FedAvgM,
// arXiv 1909.06335).
//
//   fedavg:     theta <- theta - eta * d
//   fedavgm:    u <- beta * u + d;  theta <- theta - eta * u            (u_0 = 0)
//   fedadam:    m <- b1 m + (1 - b1) d;  v <- b2 v + (1 - b2) d^2
//   fedyogi:    m as Adam;  v <- v - (1 - b2) d^2 sign(v - d^2)
//   fedadagrad: m as Adam (b1 = 0 by default);  v <- v + d^2
//               theta <- theta - eta * m / (sqrt(v) + tau)              (m_0 = 0, v_0 = v_init)
//   with d = Delta_bar + weight_decay * theta (coupled, as FLSim's torch Adam with wd).
// bias_correction: theta <- theta - eta * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + tau); with
// v_init = 0 this is torch::optim::Adam(lr eta, betas, eps tau) fed Delta_bar.
// A mask (GMA's post_opt placement) scales the final step elementwise:
// theta <- theta - eta * M (.) (Delta_bar | u | the adaptive direction).
//
// Thread-safety: none. The state is live: copying into state() restores it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "desync/core/config.h"

namespace desync {

struct ServerOptimizerOptions {
  std::string name = "fedavg";  // fedavg | fedavgm | fedadam | fedyogi | fedadagrad
  double lr = 1.0;              // eta
  double momentum = 0.9;        // fedavgm: beta
  double beta1 = 0.9;           // fedadam, fedyogi, fedadagrad (default 0 for fedadagrad)
  double beta2 = 0.99;          // fedadam, fedyogi
  double tau = 1e-3;            // tau_a, the adaptivity
  double v_init = 1e-6;         // v_0 (default tau^2)
  bool bias_correction = false;
  double weight_decay = 0.0;
};

// Reads the server optimizer's keys from an algorithm's options, with each name's defaults:
//   server_optimizer   fedavg | fedavgm | fedadam | fedyogi | fedadagrad   ("fedavg")
//   server_lr          eta: 1 (fedavg, fedavgm), 0.01 (fedadam, fedyogi), 0.1 (fedadagrad)
//   server_momentum    fedavgm beta (0.9)
//   server_beta1       0.9 (0 for fedadagrad);  server_beta2  0.99
//   server_tau         1e-3;  server_v_init  tau^2;  server_bias_correction  false
//   server_wd          0
// Every key is read whatever the name (the registry validates tables that way).
ServerOptimizerOptions read_server_optimizer_options(SectionReader& r);

class ServerOptimizer {
 public:
  virtual ~ServerOptimizer() = default;
  // One server step: updates `theta` in place from `delta` (Delta_bar), both flat, same shape
  // and dtype. `mask`, if defined, scales the final step elementwise (GMA post_opt).
  virtual void step(torch::Tensor& theta, const torch::Tensor& delta,
                    const torch::Tensor& mask = {}) = 0;
  // Named live state ("u"; "m", "v", "t"), for checkpoints.
  virtual std::vector<std::pair<std::string, torch::Tensor>> state() = 0;
  // Elements of state held (memory accounting), step count excluded.
  int64_t state_numel();
};

// A server optimizer over a flat parameter vector shaped like `like` (same dtype).
// Throws ConfigError for an unknown name.
std::unique_ptr<ServerOptimizer> make_server_optimizer(const ServerOptimizerOptions& options,
                                                       const torch::Tensor& like);

}  // namespace desync
