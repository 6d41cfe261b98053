// `zero1`: data parallelism with optimizer-state sharding (ZeRO stage 1).
// Reference: "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models"
// (arXiv 1910.02054); docs/algorithms/zero1.md.
//
//   per step:
//     G <- sum over accumulation micro-batches of grad(loss_k / accumulation)   (no comm)
//     g_i <- reduce_scatter(G)[shard i] / N
//     if grad_clip: n2 <- all_reduce(||g_i||^2); g_i *= min(1, clip / sqrt(n2))
//     theta_i <- Opt(theta_i, g_i)                   (state for shard i only)
//     theta <- all_gather(theta_i)
//
// Same mathematics as DDP; each rank keeps optimizer state for Ψ/N parameters. Bytes per step:
// RS + AG = 2(N-1)/N·Ψ·4, as DDP's all-reduce.
// Elastic restart: the old ranks' shards are laid end to end and cut anew
// (ParameterShard::load_resharded).
#pragma once

#include <memory>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/dataparallel/sharded.h"
#include "desync/algorithms/elastic.h"

namespace desync {

class Zero1 : public Algorithm, public Elastic {
 public:
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  void load_resharded(const std::vector<Archive>& old_ranks, int64_t step) override;
  AlgorithmReport report() const override;

 private:
  int64_t accumulation_ = 1;
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<ParameterShard> shard_;
};

}  // namespace desync
