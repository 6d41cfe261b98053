// Federated learning simulated on real worker processes: many clients, few processes (spec
// federated.md §1-§4; docs/federated.md). One step of the Trainer is one round.
//
//   partition the training split into K training and T held-out clients   (data/partition.h)
//   round t:  S_t <- first k of a seeded shuffle of the K training ids     (no communication)
//             S_t[j] runs on rank place(j); A <- 0, W <- 0 (G <- 0 for GMA)
//             for each client i placed here, in S_t order:
//               theta_w <- theta; opt <- ClientOpt(theta_w)              ([optimizer], fresh)
//               E epochs (or H steps) of batch B over P_i, order from RNG(seed, t, i);
//                 FedProx adds mu * (theta_w - theta) to the gradient
//               Delta_i <- theta - theta_w;  A += p_i Delta_i;  W += p_i  (G += q_i sign Delta_i)
//             aggregate A, W (G): one all_reduce of [A, G, W] (transport = allreduce), or every
//               (p_i Delta_i, p_i) sent to rank 0, which steps and broadcasts theta (server)
//             Delta_bar <- A / W  (GMA: masked, algorithms/federated/gma.h)
//             theta <- ServerOpt(theta, Delta_bar) (optim/server_optimizer.h)
//   float buffers (BatchNorm statistics) take the weighted mean of the clients' ones.
//
// The last-layer methods split the model at its last Linear (last_layer.h):
//   head_init = keep | random (a seeded fresh head) | ncm (round 0 is FedNCM: every training
//   client's per-class feature sums and counts, one all_reduce of C(d+1) elements, then the
//   class-mean head); then `head_rounds` rounds train only the head on the frozen features f
//   (FedLP; -1 = every round), the rest train the whole model (FT).
// Results do not depend on the number of processes or on the placement: every random draw is
// keyed by (seed, purpose, round, client) and every client starts from theta.
//
// The model evaluated is theta (the working model holds it between rounds); every evaluation
// also scores the held-out clients (probe()).
// Accounting: the Communicator counts the wire; `fl_down_bytes` and `fl_up_bytes` count what
// the sampled clients of a real deployment would move (down Psi b and up (Psi + 1) b per client
// and round; the last-layer rounds move C(d+1) b, plus the backbone once per client).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/client_data.h"
#include "desync/algorithms/eval_probe.h"
#include "desync/algorithms/federated/gma.h"
#include "desync/algorithms/federated/last_layer.h"
#include "desync/data/partition.h"
#include "desync/optim/server_optimizer.h"

namespace desync {

struct FederatedOptions {
  PartitionOptions partition;
  int64_t clients_per_round = 10;  // k
  double client_fraction = 0.0;    // > 0: k = max(min_clients_per_round, floor(frac * K))
  int64_t min_clients_per_round = 1;
  std::string placement = "deal";     // deal | lpt | static
  int64_t local_epochs = 1;           // E
  int64_t local_steps = 0;            // H > 0: exactly H steps instead of E epochs
  std::string weighting = "samples";  // p_i: samples (n_i) | uniform (1) | steps
  double prox_mu = 0.0;               // FedProx mu
  ServerOptimizerOptions server;
  bool gma = false;  // aggregation = gma
  GmaOptions gma_options;
  bool server_transport = false;  // transport = server
  int64_t checksum_every = 50;    // rounds between checks that theta agrees on every rank
  bool heldout_eval = true;       // evaluate on the held-out clients too
  // Last layer.
  std::string head_init = "keep";  // keep | random | ncm
  int64_t head_rounds = 0;         // rounds training only the head after head_init; -1 = all
  NcmOptions ncm;
  bool cache_features = true;  // head-only rounds: compute f once per example
};

// Reads the keys common to every federated algorithm (docs/federated.md lists them).
FederatedOptions read_federated_options(SectionReader& r);
// Reads ncm_rule (cosine | euclidean) and ncm_bias (zero | keep).
NcmOptions read_ncm_options(SectionReader& r);

class Federated : public Algorithm, public EvalProbe, public ClientData {
 public:
  explicit Federated(FederatedOptions options) : opts_(std::move(options)) {}
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  // The held-out clients' accuracy (all their examples), their worst client's, their loss, and
  // the FL traffic so far.
  std::vector<std::pair<std::string, double>> probe(Context& ctx, bool last) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

  ClientHistogram client_histogram() const override;

  const FederatedOptions& options() const { return opts_; }
  const ClientPartition& partition() const { return partition_; }
  // The global model theta (trained parameters, flat) and the clients sampled in the last round.
  const torch::Tensor& global() const { return global_; }
  const std::vector<int64_t>& last_sample() const { return sampled_; }

 private:
  struct Segment {  // the flat range a round trains: the whole model or the head
    int64_t begin = 0, size = 0;
  };
  StepReport ncm_round(Context& ctx);
  StepReport train_round(Context& ctx, bool head_only);
  // Trains client i from theta on this rank; leaves theta_w in the model. Returns what it read.
  // theta_w <- theta over `seg` (and the float buffers).
  void load_global(const Segment& seg, bool with_buffers);
  // The server optimizers this rank holds, with their checkpoint prefixes.
  std::vector<std::pair<std::string, ServerOptimizer*>> server_optimizers() const;
  StepReport train_client(Context& ctx, int64_t client, bool head_only, int64_t* steps);
  void accumulate(const Segment& seg, int64_t client, double p, torch::Tensor& pack);
  void server_update(const Segment& seg, torch::Tensor& pack, int64_t clients);
  torch::Tensor client_features(Context& ctx, int64_t client);
  void check_replicas(Context& ctx);
  void count_traffic(const std::vector<int64_t>& clients, bool head_only);

  FederatedOptions opts_;
  uint64_t seed_ = 0;
  int64_t k_ = 0;
  ClientPartition partition_;
  std::vector<int64_t> sizes_;
  torch::Tensor labels_;  // of the training split
  int64_t classes_ = 0;
  std::unique_ptr<LastLayer> last_;
  std::unique_ptr<FlatParameters> flat_;  // theta_w and its gradient (the model's parameters)
  torch::Tensor global_;                  // theta
  std::vector<torch::Tensor> buffers_;    // the model's float buffers (theta_w's)
  torch::Tensor global_buffers_;          // theta's, flat
  Segment head_;                          // the head's range in the flat buffer
  std::unique_ptr<ServerOptimizer> server_all_, server_head_;
  torch::Tensor feature_cache_, feature_ready_;  // head-only rounds
  std::vector<int64_t> sampled_;
  std::vector<uint8_t> has_backbone_;  // FL traffic: clients that received f already
  int64_t fl_down_ = 0, fl_up_ = 0;
  int64_t pack_numel_ = 0;
  int64_t missing_classes_ = 0;  // FedNCM: classes without an example
};

}  // namespace desync
