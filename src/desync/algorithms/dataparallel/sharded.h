// One rank's shard of the flat parameters: the state that ZeRO-1, DPU and ACCO share.
//
// The flat parameter buffer is padded to a multiple of N; rank i owns the slice
// [i*Ψ_pad/N, (i+1)*Ψ_pad/N). For it, and only for it, this rank keeps the master copy of the
// parameters, the gradient shard and the optimizer state (with each parameter's own weight
// decay: a slot per parameter piece that falls in the shard).
//
//   reduce_scatter(G, d):  grad <- (sum over ranks of G)[shard] / d
//   clip(c):               grad scaled so that the global norm (one scalar all-reduce) <= c
//   step(lr):              master <- Opt(master, grad)
//   all_gather(P):         P (full, padded) <- every rank's master shard
//   backup() / restore():  copy master and optimizer state aside and back, bitwise (ACCO)
//   load_resharded(old):   master and optimizer state from the shards of a run with another
//                          number of workers: the old shards laid end to end are the flat
//                          buffer; this rank takes its slice of it (elastic restart)
//
// With `master_is_view` the master is the live parameters' own slice (ZeRO-1: no extra copy);
// otherwise it is a separate tensor (DPU, ACCO: the compute thread keeps reading the old
// parameters while the shard is updated).
//
// Thread-safety: used by one thread at a time; the Communicator passed in decides the channel.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "desync/algorithms/algorithm.h"

namespace desync {

class ParameterShard {
 public:
  ParameterShard(Context& ctx, FlatParameters& flat, bool master_is_view);

  int64_t begin() const { return begin_; }
  int64_t size() const { return size_; }
  torch::Tensor& master() { return master_; }
  torch::Tensor& grad() { return grad_; }
  Optimizer& optimizer() { return *optimizer_; }

  void reduce_scatter(Communicator& comm, const torch::Tensor& full_grad, double divisor);
  void clip(Communicator& comm, double max_norm);
  void step(double lr);
  void all_gather(Communicator& comm, torch::Tensor full_params);

  void backup();
  void restore();

  void save(Archive& archive, const std::string& prefix);
  void load(const Archive& archive, const std::string& prefix);
  // Restores this rank's shard from every old rank's archive (saved under `prefix` by a run of
  // old.size() workers). Per-element optimizer state (moments, momentum buffers) is cut by flat
  // position; the rest (the step count) is replicated and read from old rank 0. Throws
  // CheckpointError for state that is not one value per parameter.
  void load_resharded(const std::vector<Archive>& old, const std::string& prefix);
  // Bytes held: master (if a copy), gradient shard, optimizer state, send buffer, backup.
  MemoryReport memory() const;

 private:
  // Where a slot of this shard's optimizer lies: parameter `param` (its name and offset in the
  // flat buffer), flat range [lo, hi).
  struct SlotRange {
    std::string param;
    int64_t offset = 0, numel = 0, lo = 0, hi = 0;
  };

  int64_t world_ = 1;
  int64_t begin_ = 0, size_ = 0;
  int64_t numel_ = 0;              // parameters in the flat buffer, without padding
  std::vector<SlotRange> ranges_;  // one per optimizer slot
  bool master_is_view_;
  torch::Tensor master_, grad_, send_;
  std::unique_ptr<Optimizer> optimizer_;
  torch::Tensor backup_master_;
  std::vector<torch::Tensor> backup_state_;
};

// Elastic restart of per-rank partial sums (gradients summed over micro-batches, counts) whose
// sum over ranks is what the method uses: rank `rank` of `world` takes the sum of the old ranks
// q with floor(q * world / old world) == rank (contiguous blocks: 4 -> 2 folds ranks 0+1 and
// 2+3, as a 2-rank run's shards of the same global batch), times `scale`, into `dst` (of the old
// tensors' elements, as many as both hold: flat buffers of two worlds differ only in padding). So
// the sum over the new ranks is `scale` times the sum over the old ones.
void fold_partial_sums(const std::vector<Archive>& old, const std::string& name, int64_t rank,
                       int64_t world, double scale, torch::Tensor dst);
// The same for an integer count; returns this rank's share.
int64_t fold_partial_counts(const std::vector<Archive>& old, const std::string& name, int64_t rank,
                            int64_t world);

}  // namespace desync
