// `dgl`: decoupled greedy learning. The model is cut into K blocks, each with an auxiliary head
// and a loss of its own; no gradient crosses a block boundary. The blocks run as a forward-only
// pipeline over the ranks: a rank sends its output activations (and the labels) on and never
// receives anything back. References: "Decoupled Greedy Learning of CNNs" (arXiv 1901.08164),
// "Greedy Layerwise Learning Can Scale to ImageNet" (arXiv 1812.11446); spec §1 of
// ../shared/algorithms/local-learning-and-forward-gradient.md; docs/algorithms/dgl.md.
//
// Blocks: the model's stages cut into K contiguous ranges (`stages_per_block`, or balanced by
// count); the blocks placed on the ranks in order, contiguous, balanced by count (K >= ranks;
// one rank may hold all K). Block k < K carries an auxiliary head a_k (aux_head.h); the last
// block ends with the model's own head.
//
// every step, on the rank holding blocks k0..k1, for each of its M micro-batches b:
//   x <- the data (rank 0), or receive (h_{k0-1}, y) from the previous rank
//   for k = k0..k1:
//     h_k = f_k(x);  l_k = CE(a_k(h_k), y)     (the last block: CE(h_K, y))
//     accumulate grad of l_k / M into (theta_k, phi_k)      -- nothing flows to block k-1
//     x <- h_k.detach()
//   send (x, y) to the next rank
// then each block takes its own optimizer step on (theta_k, phi_k).
//
// Every block's activations are computed before its update, so the numbers do not depend on the
// timing: any placement over any number of ranks trains the same model as one rank holding all
// K blocks. `queue` bounds how far a rank may run ahead: 0 (lockstep) waits at the end of every
// step until the next rank has taken its activations; q > 0 leaves up to q steps of messages
// in flight.
//
// Options: blocks (K; 0 = one per rank), stages_per_block ([] = balanced), aux ("mlp" | "cnn" |
// "linear"), aux_hidden (0 = the kind's default), queue (0).
#pragma once

#include <memory>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/local/aux_head.h"
#include "desync/algorithms/local_heads.h"
#include "desync/algorithms/pipeline/stages.h"

namespace desync {

struct DglOptions {
  int64_t blocks = 0;
  std::vector<int64_t> stages_per_block;
  AuxHeadOptions aux;
  int64_t queue = 0;
};

class Dgl : public Algorithm, public LocalHeads {
 public:
  Dgl(DglOptions options, int64_t micro_batches);
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  std::vector<StagedModel> head_models(Context& ctx) override;
  void finish(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  // memory: this rank's blocks and heads; counts: first_block, aux_parameters (of the heads it
  // trains), blocks_here.
  AlgorithmReport report() const override;

  // Model stages of each block, and blocks of each rank (both [begin, end)).
  const std::vector<StageRange>& block_stages() const { return blocks_; }
  const std::vector<StageRange>& rank_blocks() const { return placement_; }
  // Block k's auxiliary head (k < K - 1), as built on this rank.
  torch::nn::Sequential head(int64_t k) const { return heads_.at(k); }

 private:
  struct Block {
    int64_t k;
    std::unique_ptr<FlatParameters> flat;  // the block's stages and its head
    std::unique_ptr<Optimizer> optimizer;
  };

  DglOptions opts_;
  int64_t micro_batches_;  // M
  std::vector<StageRange> blocks_, placement_;
  std::vector<StageRange> rank_stages_;       // the model stages of each rank's blocks
  std::vector<torch::nn::Sequential> heads_;  // of blocks 0..K-2, on every rank
  std::vector<Block> mine_;
  std::unique_ptr<PipeLink> link_;
  bool first_ = false, last_ = false;
};

std::unique_ptr<Algorithm> make_dgl(const AlgorithmConfig& cfg);

}  // namespace desync
