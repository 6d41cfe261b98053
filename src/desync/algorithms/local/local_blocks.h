// LocalBlocks: what the local-learning methods share (dgl, contrastive_local). The model's
// encoder stages are cut into K blocks, each trained by a loss of its own through a head of its
// own; no gradient crosses a block boundary. The blocks run as a forward-only pipeline over the
// ranks: a rank sends its output activations (and the labels) on and never receives anything
// back. A subclass says what a block's loss is (block_loss), what head a block carries
// (make_head), and what travels (prepare_input: the data, or two augmented views of it).
//
// Blocks: the encoder's stages (encoder_stages(): all stages, or all but the model's head) cut
// into K contiguous ranges (`stages_per_block`, or balanced by count); the blocks placed on the
// ranks in order, contiguous, balanced by count (K >= ranks; one rank may hold all K). Stages
// after the encoder (the "tail": the model's head) sit on the last rank, with an optimizer of
// their own, and are trained by cross-entropy on the last block's detached output, so that no
// label gradient reaches a block.
//
// every step, on the rank holding blocks k0..k1, for each of its M micro-batches b:
//   x <- prepare_input(data) (rank 0), or receive (h_{k0-1}, y) from the previous rank
//   for k = k0..k1:
//     h_k = f_k(x);  l_k = block_loss(k, h_k, y)
//     accumulate grad of l_k / M into (theta_k, phi_k)      -- nothing flows to block k-1
//     x <- h_k.detach()
//   last rank, with a tail: accumulate grad of CE(tail(x), y) / M into the tail's parameters
//   send (x, y) to the next rank
// then each block (and the tail) takes its own optimizer step.
//
// Every block's activations are computed before its update, so the numbers do not depend on the
// timing: any placement over any number of ranks trains the same model as one rank holding all
// K blocks. `queue` bounds how far a rank may run ahead: 0 (lockstep) waits at the end of every
// step until the next rank has taken its activations; q > 0 leaves up to q steps of messages
// in flight. The loss a step reports (last rank) is the last block's.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/pipeline/stages.h"

namespace desync {

struct LocalBlocksOptions {
  int64_t blocks = 0;                     // K; 0 = one per rank
  std::vector<int64_t> stages_per_block;  // [] = balanced by count
  int64_t queue = 0;
};

class LocalBlocks : public Algorithm {
 public:
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void finish(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  // memory: this rank's blocks, heads and tail; counts: first_block, aux_parameters (of the
  // heads it trains), blocks_here.
  AlgorithmReport report() const override;

  // Model stages of each block, and blocks of each rank (both [begin, end)).
  const std::vector<StageRange>& block_stages() const { return blocks_; }
  const std::vector<StageRange>& rank_blocks() const { return placement_; }
  // Block k's head, as built on this rank (null for a block without one).
  torch::nn::Sequential head(int64_t k) const { return heads_.at(k); }
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }

 protected:
  // `name`: the algorithm's, for messages; `head_prefix`: the heads' names in checkpoints and
  // optimizer slots ("aux" gives aux1, aux2, ...).
  LocalBlocks(std::string name, std::string head_prefix, LocalBlocksOptions options,
              int64_t micro_batches);

  // The number of leading model stages that form the encoder (the rest is the tail).
  virtual int64_t encoder_stages(const StagedModel& model) const = 0;
  // Block k's head for one example's activation `shape`, drawn from `gen` only; null for none.
  virtual torch::nn::Sequential make_head(Context& ctx, int64_t k,
                                          const std::vector<int64_t>& shape,
                                          at::Generator& gen) = 0;
  // Rows that travel per example (2 for two views stacked along the batch).
  virtual int64_t views() const { return 1; }
  // What enters block 1 for micro-batch `id` (the global micro-batch counter).
  virtual torch::Tensor prepare_input(Context& ctx, const MicroBatch& mb, int64_t id) {
    return mb.inputs;
  }
  // Block k's loss on its output h (with its graph) and the micro-batch's labels.
  virtual torch::Tensor block_loss(Context& ctx, int64_t k, const torch::Tensor& h,
                                   const torch::Tensor& labels) = 0;

  const std::string& name() const { return name_; }
  bool is_first() const { return first_; }
  bool is_last() const { return last_; }
  std::vector<torch::nn::Sequential>& heads() { return heads_; }

 private:
  struct Block {
    int64_t k;                             // K for the tail
    std::unique_ptr<FlatParameters> flat;  // the block's stages and its head
    std::unique_ptr<Optimizer> optimizer;
  };
  std::string head_name(int64_t k) const;

  std::string name_, head_prefix_;
  LocalBlocksOptions opts_;
  int64_t micro_batches_;  // M
  int64_t encoder_end_ = 0, stages_ = 0;
  std::vector<StageRange> blocks_, placement_;
  std::vector<StageRange> rank_stages_;       // the model stages of each rank's blocks
  std::vector<torch::nn::Sequential> heads_;  // of every block, on every rank (null: none)
  std::vector<Block> mine_;
  std::unique_ptr<Block> tail_;  // last rank, when the encoder is not the whole model
  std::unique_ptr<PipeLink> link_;
  bool first_ = false, last_ = false;
};

}  // namespace desync
