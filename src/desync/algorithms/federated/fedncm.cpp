// `fedncm`: FedNCM, then fine-tuning (FedNCM+FT). Round 0 sets the last layer exactly from
// federated class means of the frozen backbone's features: every training client sends its
// per-class feature sums and counts (C(d + 1) numbers), summed by one all_reduce; the head's
// rows are the normalised means (rule = cosine) or the means with bias -||mu||^2 / 2
// (euclidean). Rounds 1.. fine-tune the whole model like `fedavg`, with any server optimizer,
// FedProx or GMA. With run.steps = 1 it is FedNCM alone. ht = lp replaces the NCM round by
// lp_rounds rounds of FedLP from a fresh head. Reference: Legate et al., NeurIPS 2023 (arXiv
// 2306.03937); docs/algorithms/fedncm.md.
//
//   round 0:  S[c] <- sum over all clients' (x, y = c) of f(x);  n[c] <- their count
//             W[c] <- mu_c / ||mu_c||, bias <- 0                        (mu_c = S[c] / n[c])
//   round t >= 1: a fedavg round over the whole model
#include "desync/algorithms/federated/federated.h"
#include "desync/algorithms/registry.h"

namespace desync {

std::unique_ptr<Algorithm> make_fedncm(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  FederatedOptions o = read_federated_options(r);
  const bool lp = r.get_choice("ht", "ncm", {"ncm", "lp"}) == "lp";
  const int64_t lp_rounds = r.get("lp_rounds", int64_t{20}, 1, int64_t{1} << 30);
  o.ncm = read_ncm_options(r);
  o.cache_features = r.get("cache_features", o.cache_features);
  r.finish();
  o.head_init = lp ? "random" : "ncm";
  o.head_rounds = lp ? lp_rounds : 0;
  return std::make_unique<Federated>(std::move(o));
}

}  // namespace desync
