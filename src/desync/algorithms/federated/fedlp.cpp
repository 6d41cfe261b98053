// `fedlp`: federated linear probing. The backbone f stays frozen (and is sent to each client
// once); only the last linear layer is trained by federated rounds, on f's features (cached per
// example: exact, since f does not change). Reference: Legate et al., NeurIPS 2023 (arXiv
// 2306.03937); docs/algorithms/fedlp.md.
//
//   head <- a seeded fresh Linear (head_init = random) or FedNCM's class means (ncm: round 0)
//   every round t: S_t sampled; each client trains the head from the global head on f(x)
//                  head <- ServerOpt(head, weighted mean of the clients' head updates)
#include "desync/algorithms/federated/federated.h"
#include "desync/algorithms/registry.h"

namespace desync {

std::unique_ptr<Algorithm> make_fedlp(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  FederatedOptions o = read_federated_options(r);
  o.head_init = r.get_choice("head_init", "random", {"random", "ncm"});
  o.head_rounds = -1;
  o.ncm = read_ncm_options(r);
  o.cache_features = r.get("cache_features", o.cache_features);
  r.finish();
  return std::make_unique<Federated>(std::move(o));
}

}  // namespace desync
