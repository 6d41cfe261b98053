// Gossip building blocks shared by the decentralized methods.
//
// PeerExchange mixes a flat parameter vector with the round's peers:
//
//   send x to every peer j, receive x_j           (non-blocking; pairwise, no collective)
//   x <- x - sum_j w_ij (x - x_j)                  (= (1 - sum_j w_ij) x + sum_j w_ij x_j)
//
// start() posts the messages and returns, so computation can overlap them; x must stay
// unchanged until finish() has waited for them and mixed. Each peer sends and receives
// Ψ elements per exchange.
//
// Consensus builds the workers' average model for evaluation (parameters and buffers averaged
// over ranks with an all-reduce on the evaluation channel) and measures the spread: the mean
// over workers of ||x_i - x̄||₂. shared() loads parameters every rank already agrees on and
// averages only the buffers.
//
// Thread-safety: one thread per object.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/decentralized/topology.h"

namespace desync {

class PeerExchange {
 public:
  // Receive buffers for up to `max_degree` peers of a tensor shaped like `like`.
  PeerExchange(const torch::Tensor& like, int64_t max_degree);

  void start(Communicator& comm, const torch::Tensor& x, std::vector<Peer> peers, int64_t round);
  // Waits for the exchange and mixes x in place.
  void finish(torch::Tensor& x);

  const std::vector<Peer>& peers() const { return peers_; }
  int64_t buffer_bytes() const;

 private:
  std::vector<torch::Tensor> buffers_;
  std::vector<Peer> peers_;
  std::vector<std::shared_ptr<Work>> pending_;
};

class Consensus {
 public:
  explicit Consensus(const StagedModel& model);

  // The average over ranks of `params` (a flat vector laid out like the model's parameters)
  // and of `local`'s buffers, loaded into the evaluation model. Collective on `comm`.
  StagedModel average(Communicator& comm, const torch::Tensor& params, const StagedModel& local);
  // The same for `params` that every rank holds alike (DiLoCo's global copy): they are loaded
  // as they are, and only the buffers are averaged.
  StagedModel shared(Communicator& comm, const torch::Tensor& params, const StagedModel& local);
  // mean_i ||params_i - average||₂ at the last average().
  double distance() const { return distance_; }

 private:
  void average_buffers(Communicator& comm, const StagedModel& local);

  StagedModel model_;
  std::unique_ptr<FlatParameters> flat_;
  double distance_ = 0.0;
};

}  // namespace desync
