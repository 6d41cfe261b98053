// `dgl`: decoupled greedy learning. The model is cut into K blocks, each with an auxiliary head
// and a loss of its own; no gradient crosses a block boundary. The blocks run as a forward-only
// pipeline over the ranks: a rank sends its output activations (and the labels) on and never
// receives anything back. References: "Decoupled Greedy Learning of CNNs" (arXiv 1901.08164),
// "Greedy Layerwise Learning Can Scale to ImageNet" (arXiv 1812.11446); spec §1 of
// ../shared/algorithms/local-learning-and-forward-gradient.md; docs/algorithms/dgl.md.
//
// Blocks: the model's stages (all of them: the encoder of local_blocks.h is the whole model)
// cut into K contiguous ranges (`stages_per_block`, or balanced by count); the blocks placed on
// the ranks in order, contiguous, balanced by count (K >= ranks; one rank may hold all K). Block
// k < K carries an auxiliary head a_k (aux_head.h); the last block ends with the model's own
// head. The block, placement, pipeline and optimizer machinery is LocalBlocks
// (local_blocks.h), shared with contrastive_local; dgl adds the local loss.
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

#include "desync/algorithms/local/aux_head.h"
#include "desync/algorithms/local/local_blocks.h"
#include "desync/algorithms/local_heads.h"

namespace desync {

struct DglOptions {
  int64_t blocks = 0;
  std::vector<int64_t> stages_per_block;
  AuxHeadOptions aux;
  int64_t queue = 0;
};

class Dgl : public LocalBlocks, public LocalHeads {
 public:
  Dgl(DglOptions options, int64_t micro_batches);
  std::vector<StagedModel> head_models(Context& ctx) override;

 protected:
  int64_t encoder_stages(const StagedModel& model) const override { return model->num_stages(); }
  // Block k < K - 1: an auxiliary classifier; the last block: none (the model's own head).
  torch::nn::Sequential make_head(Context& ctx, int64_t k, const std::vector<int64_t>& shape,
                                  at::Generator& gen) override;
  // CE(a_k(h_k), y); the last block: CE(h_K, y).
  torch::Tensor block_loss(Context& ctx, int64_t k, const torch::Tensor& h,
                           const torch::Tensor& labels) override;

 private:
  DglOptions opts_;
};

std::unique_ptr<Algorithm> make_dgl(const AlgorithmConfig& cfg);

}  // namespace desync
