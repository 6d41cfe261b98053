// `fedavg`: federated training of the whole model with the FedOpt family of server optimizers
// (FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad), optionally FedProx's proximal term and
// gradient masked averaging. Reference: McMahan et al. 2017 (arXiv 1602.05629), arXiv
// 2003.00295, arXiv 1812.06127, arXiv 2201.11986; docs/algorithms/fedavg.md.
//
//   every round t: S_t sampled; each client i in S_t: theta_i <- E local epochs of [optimizer]
//                  from theta (+ mu (theta_i - theta) in the gradient)
//                  Delta_bar <- sum p_i (theta - theta_i) / sum p_i      (GMA: masked)
//                  theta <- ServerOpt(theta, Delta_bar)
//
// The round machinery is federated.h's. head_init = random starts from a seeded fresh head (FT
// from a pre-trained backbone, model.init_from); keep (default) leaves the model as built.
#include "desync/algorithms/federated/federated.h"
#include "desync/algorithms/registry.h"

namespace desync {

std::unique_ptr<Algorithm> make_fedavg(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  FederatedOptions o = read_federated_options(r);
  o.head_init = r.get_choice("head_init", "keep", {"keep", "random"});
  r.finish();
  return std::make_unique<Federated>(std::move(o));
}

}  // namespace desync
