// `sgns`: skip-gram with negative sampling (Mikolov et al., arXiv 1310.4546; word2vec.c's update
// order) on a words dataset, over ranks in one of three modes (`sgns_mode`).
//
//   setup:  counts <- the training corpus's word counts (vocab_mode full_scan: every rank counts
//           every sentence; merge: each rank counts its shard, then one all-reduce); V <- the
//           words with count >= min_count (a prefix of the data's vocabulary); the ranks compare
//           the vocabulary's FNV-1a fingerprint (one all-gather) and stop on a mismatch.
//           Rank r reads sentences [floor(rS/N), floor((r+1)S/N)) with C's generator seeded
//           run.seed + r (run.seed alone when rank_seed_offset = false).
//   local_avg (default; FedAvg, i.e. DiLoCo with outer lr 1 and no momentum):
//     per step: read sync_words tokens of whole sentences; for each, C word2vec's sequential
//               loop (sgns_kernel.h) at alpha; then W_in, W_out <- allreduce_avg (rows of V; with
//               sync_rows = touched, first one all-reduce of a V-byte mask of changed rows, then
//               only those rows).
//   dense_ddp (the baseline): per step, the next batch_pairs examples of this rank's stream;
//               loss_r = sum of their l; dense gradients [2, V, d] all-reduced;
//               W <- W - alpha/N * sum_r grad loss_r.
//   sparse_rows: the same update, sending only touched rows: all-gather the row counts, then
//               (padded to the largest) int64 row ids and summed gradient rows per table,
//               index_add_ of the N contributions / N. Equal to dense_ddp.
//   alpha = optimizer.lr * max(1e-4, 1 - progress): progress = tokens read / (run.steps *
//   sync_words), updated every 10,000 tokens as word2vec.c does (local_avg); step / run.steps
//   (batched modes). The run's length is run.steps (one step = one synchronisation).
//
// The tables are the sgns model's W_in and W_out (models/sgns.h), updated in place; rows past
// V (words under min_count) are never touched nor sent. Options and defaults: spec §4
// (docs/algorithms/sgns.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/embedding/sgns_kernel.h"

namespace desync {

struct SgnsConfig {
  enum class Mode { kLocalAvg, kDenseDdp, kSparseRows } mode = Mode::kLocalAvg;
  sgns::Options kernel;
  int64_t min_count = 5;
  int64_t sync_words = 100000;  // local_avg: tokens per rank between averages
  int64_t batch_pairs = 4096;   // dense_ddp, sparse_rows: examples per rank per step
  bool touched_rows = false;    // local_avg: average only rows changed since the last sync
  bool merge_counts = false;    // vocab_mode = merge
  bool rank_seed_offset = true;
};

SgnsConfig read_sgns_config(SectionReader& r);

class Sgns : public Algorithm {
 public:
  explicit Sgns(SgnsConfig cfg);
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

  int64_t vocabulary() const { return vocab_; }
  const SgnsConfig& config() const { return cfg_; }

 private:
  // Appends the examples of this rank's next sentence (wrapping to a new epoch) to `out`;
  // returns its token count.
  int64_t next_sentence(std::vector<int32_t>& out);
  StepReport local_step(Context& ctx);
  StepReport batched_step(Context& ctx);
  void average(Context& ctx);
  void apply_dense(Context& ctx, const sgns::SparseGradient& g, double alpha);
  void apply_sparse(Context& ctx, const sgns::SparseGradient& g, double alpha);

  SgnsConfig cfg_;
  int64_t vocab_ = 0, dim_ = 0, k_ = 0;
  std::vector<int64_t> counts_;
  int64_t total_ = 0;
  std::unique_ptr<sgns::NegativeSampler> negatives_;
  torch::Tensor w_in_, w_out_;  // the model's tables
  // This rank's shard of the training sentences.
  const int32_t* tokens_ = nullptr;
  std::vector<int64_t> offsets_;  // shard sentence boundaries (absolute token indices)
  // Stream state (checkpointed).
  sgns::Lcg rng_{0};
  int64_t epoch_ = 0, sentence_ = 0;            // next sentence of the shard
  int64_t tokens_read_ = 0;                     // since the start of the run
  std::unique_ptr<sgns::AlphaSchedule> alpha_;  // local_avg
  double alpha0_ = 0;
  int64_t alpha_tokens_ = 0;      // local_avg: tokens per rank the run reads (steps * sync_words)
  std::vector<int32_t> pending_;  // batched modes: examples read but not yet used
  std::vector<uint8_t> touched_;  // local_avg, touched rows: rows changed since the last sync
  std::vector<int32_t> words_;    // scratch: the sentence being read
};

}  // namespace desync
