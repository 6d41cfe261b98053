// `dpsgd`: synchronous gossip SGD (D-PSGD), the decentralized baseline with no collective.
// Reference: "Can Decentralized Algorithms Outperform Centralized Algorithms?" (arXiv
// 1705.09056); docs/algorithms/dpsgd.md.
//
//   every step (round = step):
//     send x_i to the round's peers, receive x_j         (posted first: overlaps the gradient)
//     g_i <- grad F_i(x_i; xi_i)                          (at the pre-mix iterate)
//     x_i <- sum_j W_ij x_j                               (PeerExchange)
//     x_i <- Opt(x_i, g_i)                                ([optimizer]: SGD, local momentum
//     optional)
//
// Workers start from the same model (built from the same seed on every rank). The model
// evaluated is the workers' average; eval also logs consensus_distance = mean_i ||x_i - x̄||₂.
// Options: topology ("ring" | "torus" | "complete" | "matching" | "random_ring"),
// mixing_weight (0 = 1/(degree+1)).
#pragma once

#include <memory>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/decentralized/gossip.h"

namespace desync {

class Dpsgd : public Algorithm {
 public:
  Dpsgd(std::string topology, double mixing_weight)
      : topology_kind_(std::move(topology)), mixing_weight_(mixing_weight) {}
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

 private:
  std::string topology_kind_;
  double mixing_weight_;
  int64_t accumulation_ = 1;
  std::unique_ptr<Topology> topology_;
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<PeerExchange> exchange_;
  std::unique_ptr<Consensus> consensus_;
};

}  // namespace desync
