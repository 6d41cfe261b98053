// `adpsgd`: asynchronous decentralized SGD with pairwise averaging (AD-PSGD).
// Reference: "Asynchronous Decentralized Parallel Stochastic Gradient Descent" (arXiv
// 1710.06952); docs/algorithms/adpsgd.md.
//
//   active worker (even rank), every step:      passive worker (odd rank), every step:
//     x_hat <- x_i; g <- grad F_i(x_hat; xi)      x_hat <- x_i; g <- grad F_i(x_hat; xi)
//     j <- a random passive ring neighbour         x_i <- Opt(x_i, g)          (under the lock)
//     send x_i to j, receive x_j
//     x_i <- (x_i + x_j) / 2                       server thread, one per ring edge:
//     x_i <- Opt(x_i, g)                             receive a request and x_a
//                                                    under the lock: send x_i, x_i <- (x_i + x_a)/2
//
// The graph is the ring, made bipartite: even ranks are active, odd ranks passive; an edge
// joins an active and a passive neighbour (with odd N the edge between ranks N-1 and 0, both
// even, is left out). Both ends of an averaging compute (x_a + x_p)/2 from the same two
// tensors, so the pair ends bitwise equal and sum_i x_i is preserved. Nobody waits for the
// group: an active worker waits only for the passive peer it chose, a passive worker for no
// one. The gradient is taken at x_hat, which may be stale by the averagings that happened
// during its computation. Each ring edge has its own channel (two splits: edges that start at
// an even rank, and edges that start at an odd one), so a passive worker can serve both of
// its neighbours at once.
//
// finish() stops the servers: each active worker sends a stop request on each of its edges.
// Runs are not bit-reproducible (the order of averagings depends on timing). The model
// evaluated is the workers' average; eval also logs consensus_distance.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/decentralized/gossip.h"
#include "desync/core/background.h"

namespace desync {

class Adpsgd : public Algorithm {
 public:
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  void finish(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

  // A snapshot of x_i.
  torch::Tensor parameters() const;
  int64_t averagings() const { return averagings_; }  // averagings this rank took part in

 private:
  struct Edge {
    int64_t peer;
    std::shared_ptr<Communicator> channel;
  };
  void serve(Edge edge, torch::Tensor buffer);

  bool active_ = false;
  uint64_t seed_ = 0;
  std::vector<Edge> edges_;
  std::unique_ptr<FlatParameters> flat_;  // the model: x_hat and the gradient
  torch::Tensor x_;                       // x_i
  torch::Tensor buffer_;                  // the active worker's receive buffer
  std::unique_ptr<Optimizer> optimizer_;  // updates x_ with the model's gradient
  mutable std::mutex mu_;                 // guards x_ and the optimizer state
  std::vector<torch::Tensor> server_buffers_;
  std::atomic<int64_t> averagings_{0};
  bool finished_ = false;
  std::unique_ptr<Consensus> consensus_;
  // Last, so that destruction joins the servers before what they use goes away.
  std::vector<std::unique_ptr<BackgroundTask>> servers_;
};

// One averaging from the active side: sends a request and x to `peer`, receives the peer's x
// into `buffer` and sets x <- (x + x_peer) / 2.
void average_with_passive(Communicator& channel, torch::Tensor& x, torch::Tensor& buffer,
                          int64_t peer);
// The passive side of one request: returns false on a stop request; otherwise receives x_a,
// then under `mu` sends x and sets x <- (x + x_a) / 2. The time spent waiting for the request
// is recorded on `channel` as idle (Communicator::record_idle).
bool serve_one_request(Communicator& channel, torch::Tensor& x, torch::Tensor& buffer, int64_t peer,
                       std::mutex& mu);

}  // namespace desync
