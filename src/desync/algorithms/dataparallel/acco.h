// `acco`: Accumulate While You Communicate.
// Reference: "ACCO: Accumulate While You Communicate for Communication-Overlapped Sharded LLM
// Training" (arXiv 2406.02613); docs/algorithms/acco.md.
//
// Sharded (ZeRO-1-style) training in which communication never stalls compute. One optimizer
// step is two rounds, each overlapping communication with gradient accumulation:
//
//   COMM thread, round r (even = estimate, odd = real):
//     if r even: back up the master shard and optimizer state
//     total <- all_reduce_sum(count)                       # global micro-batch count
//     g_i <- reduce_scatter_sum(B)[shard i] / total        # sum of micro-batch grads / count
//     S_i <- Opt(S_i, g_i)
//     B[shard i] <- S_i; all_gather(B)                     # B holds the new parameters
//     if r even: restore master and optimizer state        # the tentative step leaves no trace
//   COMPUTE thread, same round:
//     accumulate micro-batches at P into G (c += 1): at least n_acc, and on until COMM is done
//     then: P <- B; B <- G; count <- c; if r even: G <- 0, c <- 0
//
// Net effect, with g(.) the mean over all micro-batches of all workers:
//   theta~_{t+1} = Opt_tentative(theta_t, g at theta~_t)
//   theta_{t+1}  = Opt(theta_t, g over {micro-batches at theta~_t} ∪ {at theta_t})
// Faster workers accumulate more micro-batches; every micro-batch weighs the same. One call of
// step() is one real step (two rounds). The learning rate advances once per real step.
//
// Options: fixed_count (false; true = exactly `accumulation` micro-batches per round, the comm
// thread waited for: deterministic, for tests). `accumulation` is n_acc. The comm thread has its
// own channel (CommThread "acco").
//
// Budget: a step consumes a varying number of micro-batches (at least 2 n_acc per worker), so
// under a data budget (ctx.micro_batches_left) each worker stops accumulating at its share of
// what is left, and the run ends when the budget is spent.
//
// Elastic restart: the shards are cut anew (ParameterShard::load_resharded); B, G and their
// counts are per-rank sums that the round divides by the global count, so they are folded onto
// the new ranks unscaled (fold_partial_sums); the real-step count becomes the run's rescaled step.
#pragma once

#include <memory>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/dataparallel/sharded.h"
#include "desync/algorithms/elastic.h"
#include "desync/comm/comm_thread.h"

namespace desync {

class Acco : public Algorithm, public Elastic {
 public:
  Acco(int64_t accumulation, bool fixed_count);
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  void load_resharded(const std::vector<Archive>& old_ranks, int64_t step) override;
  AlgorithmReport report() const override;

  // Micro-batches this rank accumulated in each round of the last step (for tests and traces).
  const std::vector<int64_t>& last_round_counts() const { return last_counts_; }

 private:
  StepReport round(Context& ctx, bool estimate);

  bool fixed_count_;
  int64_t n_acc_ = 1;
  int64_t rank_ = 0, world_ = 1;
  int64_t quota_ = -1;  // micro-batches this rank may still take in this step; -1 = no limit
  std::unique_ptr<FlatParameters> flat_;  // P (params) and G (grads)
  std::unique_ptr<ParameterShard> shard_;
  torch::Tensor buffer_;     // B
  int64_t count_ = 0;        // micro-batches whose gradients are in B
  int64_t accumulated_ = 0;  // c: micro-batches whose gradients are in G
  int64_t real_steps_ = 0;
  bool started_ = false;
  std::vector<int64_t> last_counts_;
  std::unique_ptr<CommThread> comm_thread_;
};

}  // namespace desync
