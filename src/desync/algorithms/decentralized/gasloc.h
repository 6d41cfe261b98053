// `gasloc`: gossip with local updates and outer momentum — DiLoCo without the all-reduce.
// Reference: "Unifying Local Communications and Local Updates for LLM Pretraining" (arXiv
// 2606.11081); docs/algorithms/gasloc.md.
//
//   round t (H trainer steps; worker i takes H_i inner steps spread evenly over them):
//     theta_start <- theta_i
//     H_i inner steps of [optimizer]                      -> theta_end
//     x_i <- theta_start + eta * (theta_end - theta_start)   (the proposal)
//     P_i(t) <- topology.peers(i, t)                     (shared seed: no messages to agree)
//     exchange x with P_i(t)                               (pairwise send/recv, no collective)
//     y_i <- x_i - sum_{j in P_i} w_ij (x_i - x_j)
//     momentum_on = mixed:    theta_i <- y_i + gamma * (y_i - y_prev);  y_prev <- y_i
//     momentum_on = proposal: theta_i <- y_i + gamma * (x_i - x_prev);  x_prev <- x_i
//     (y_prev, x_prev start at theta_0)
//
// On the complete graph with w = 1/N and momentum on the mixed iterates this is exactly DiLoCo
// with outer Nesterov SGD(eta, gamma). A worker left out of a matching (odd N) keeps y = x.
// Workers start from the same model (same seed on every rank). The model evaluated is the
// workers' average; eval also logs consensus_distance.
// Options: local_steps (H, 500), local_steps_per_worker ([H_0, ...]), local_steps_from_speed
// (H_i = H * run.worker_speed[i] / max speed), outer_lr (eta, 0.7), outer_momentum (gamma,
// 0.9), momentum_on ("mixed" | "proposal"), topology ("matching"; see topology.h),
// mixing_weight (0 = 1/(k+1)).
#pragma once

#include <memory>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/decentralized/gossip.h"

namespace desync {

struct GaslocOptions {
  int64_t local_steps = 500;
  std::vector<int64_t> local_steps_per_worker;
  bool local_steps_from_speed = false;
  double outer_lr = 0.7;
  double outer_momentum = 0.9;
  bool momentum_on_proposal = false;
  std::string topology = "matching";
  double mixing_weight = 0.0;
};

class Gasloc : public Algorithm {
 public:
  // Workers with fewer inner steps than H consume less in some steps: the Trainer then counts
  // the ranks' consumption (at most `accumulation` each per step) against the budget.
  explicit Gasloc(GaslocOptions options)
      : Algorithm({.consumption_varies =
                       !options.local_steps_per_worker.empty() || options.local_steps_from_speed}),
        opts_(std::move(options)) {}
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

  int64_t my_local_steps() const { return my_steps_; }
  const torch::Tensor& proposal() const { return proposal_; }  // x_i of the last round
  const std::vector<Peer>& last_peers() const { return exchange_->peers(); }

 private:
  void end_round(Context& ctx, int64_t round);

  GaslocOptions opts_;
  int64_t accumulation_ = 1;
  int64_t my_steps_ = 0;  // H_i
  std::unique_ptr<Topology> topology_;
  std::unique_ptr<FlatParameters> flat_;  // theta_i and its gradient
  std::unique_ptr<Optimizer> inner_;
  torch::Tensor start_;     // theta_start
  torch::Tensor proposal_;  // x_i
  torch::Tensor prev_;      // y_prev (or x_prev)
  std::unique_ptr<PeerExchange> exchange_;
  std::unique_ptr<Consensus> consensus_;
};

}  // namespace desync
