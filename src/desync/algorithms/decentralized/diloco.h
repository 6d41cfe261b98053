// `diloco`: local inner steps, then an outer Nesterov step on the averaged pseudo-gradient.
// Reference: DiLoCo (arXiv 2311.08105), OpenDiLoCo (arXiv 2407.07852);
// docs/algorithms/diloco.md.
//
//   theta_i <- theta                                    (broadcast from rank 0 at setup)
//   every step:    theta_i <- InnerOpt(theta_i, grad f(x ~ D_i, theta_i))   ([optimizer], local)
//   every H steps: Delta <- allreduce_avg(theta - theta_i)      (optionally sent in 16 bits)
//                  theta <- SGD_nesterov(lr=outer_lr, momentum=outer_momentum).step(theta, Delta)
//                  theta_i <- theta
//
// The inner optimizer's state stays local and runs on across rounds (its step count reaches
// T, not H); the learning-rate schedule follows the inner step. One all-reduce of Ψ per round.
// The model evaluated is the global copy theta. A run whose step count is not a multiple of H
// ends with a partial round that theta does not include.
// Options: local_steps (H, 500), outer_lr (0.7), outer_momentum (0.9), outer_nesterov (true),
// outer_comm_dtype ("full" = the parameters' precision | "float32" | "bfloat16" | "float16").
//
// Elastic restart: theta and the outer optimizer's state are replicated: every new rank takes
// old rank 0's. Every worker restarts its local model from theta (theta_i <- theta, as at the
// start of a round) with the inner optimizer state of old worker (rank % old world); the inner
// steps of a round that the checkpoint interrupted are dropped (their data counts as consumed),
// and the next outer step comes at the next multiple of H of the rescaled step count.
#pragma once

#include <memory>
#include <optional>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/decentralized/gossip.h"
#include "desync/algorithms/elastic.h"

namespace desync {

struct DilocoOptions {
  int64_t local_steps = 500;
  double outer_lr = 0.7;
  double outer_momentum = 0.9;
  bool outer_nesterov = true;
  std::optional<torch::ScalarType> outer_comm_dtype;  // nullopt: the parameters' precision
};

class Diloco : public Algorithm, public Elastic {
 public:
  explicit Diloco(DilocoOptions options) : opts_(options) {}
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  void load_resharded(const std::vector<Archive>& old_ranks, int64_t step) override;
  AlgorithmReport report() const override;

  const torch::Tensor& global() const { return global_; }
  Optimizer& inner_optimizer() { return *inner_; }

 private:
  void outer_step(Context& ctx);

  DilocoOptions opts_;
  int64_t accumulation_ = 1;
  int64_t rank_ = 0;
  std::unique_ptr<FlatParameters> flat_;  // theta_i and its gradient
  std::unique_ptr<Optimizer> inner_;
  torch::Tensor global_;  // theta
  torch::Tensor delta_;   // the averaged pseudo-gradient
  std::unique_ptr<Optimizer> outer_;
  std::unique_ptr<Consensus> consensus_;
};

}  // namespace desync
