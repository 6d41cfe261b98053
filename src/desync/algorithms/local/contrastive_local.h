// `contrastive_local`: contrastive local learning. The model's encoder (every stage but its
// head) is cut into K blocks; each block is trained by a self-supervised contrastive loss
// (NT-Xent) on two augmented views, through a projection head of its own, and no gradient
// crosses a block boundary. Labels never train the encoder: the model's head is trained as an
// online linear classifier on the last block's detached output. The blocks run as dgl's do, a
// forward-only pipeline over the ranks (LocalBlocks, local_blocks.h), with the two views
// travelling stacked along the batch. Reference: "Preventing Dimensional Collapse in
// Contrastive Local Learning with Subsampling" (ICML 2023 workshop); spec §3 of
// ../shared/algorithms/local-learning-and-forward-gradient.md;
// docs/algorithms/contrastive_local.md.
//
// What is ours, not the paper's (which states neither): the projection heads, tau = 0.5, the
// augmentations, and the subsampling rule, a placeholder for the paper's unknown "sampling
// strategy based on blockwise feature-similarity": keep the ratio rho of the batch's samples
// whose block-k features (pooled, first view) have the lowest mean cosine to the rest.
//
// every step, on the rank holding blocks k0..k1, for each of its M micro-batches b:
//   x <- [v1(data); v2(data)] (rank 0: two views, seeded by (seed, micro-batch id)),
//        or receive (h_{k0-1}, y) from the previous rank
//   for k = k0..k1:
//     h_k = f_k(x)
//     S = least_similar(pool(h_k[first view]).detach(), rho)    (all when rho = 1)
//     l_k = NT-Xent(g_k(h_k[S, S + B]), tau)
//     accumulate grad of l_k / M into (theta_k, phi_k)       -- nothing flows to block k-1
//     x <- h_k.detach()
//   last rank: accumulate grad of CE(head(x), [y; y]) / M into the head
//   send (x, y) to the next rank
// then each block (and the head) takes its own optimizer step.
//
// At every evaluation (EvalProbe): erank_<k>, the effective rank of block k's pooled features
// on a fixed probe batch (the first probe_examples training examples, not augmented, BatchNorm
// in eval mode); at the last evaluation (or every one, with probe_every_eval): probe_accuracy_<k>,
// a linear probe fitted on those features and scored on the next probe_examples training
// examples.
//
// Options: blocks (K; 0 = one per rank), stages_per_block ([] = balanced), projection ("mlp" |
// "linear"), projection_width (256), projection_dim (128), temperature (0.5), subsample_ratio
// (1 = off), view_noise (0.1; non-image inputs), queue (0), probe_examples (512), probe_steps
// (300), probe_lr (0.01), probe_every_eval (false).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "desync/algorithms/eval_probe.h"
#include "desync/algorithms/local/aux_head.h"
#include "desync/algorithms/local/local_blocks.h"

namespace desync {

struct ContrastiveLocalOptions {
  int64_t blocks = 0;
  std::vector<int64_t> stages_per_block;
  ProjectionHeadOptions projection;
  double temperature = 0.5;
  double subsample_ratio = 1.0;
  double view_noise = 0.1;
  int64_t queue = 0;
  int64_t probe_examples = 512;
  int64_t probe_steps = 300;
  double probe_lr = 0.01;
  bool probe_every_eval = false;
};

class ContrastiveLocal : public LocalBlocks, public EvalProbe {
 public:
  ContrastiveLocal(ContrastiveLocalOptions options, int64_t micro_batches);
  // erank_1..erank_K, then (at the last evaluation) probe_accuracy_1..probe_accuracy_K.
  // Computed on rank 0 and broadcast on ctx.eval_channel().
  std::vector<std::pair<std::string, double>> probe(Context& ctx, bool last) override;

  const ContrastiveLocalOptions& options() const { return opts_; }

 protected:
  int64_t encoder_stages(const StagedModel& model) const override;
  torch::nn::Sequential make_head(Context& ctx, int64_t k, const std::vector<int64_t>& shape,
                                  at::Generator& gen) override;
  int64_t views() const override { return 2; }
  torch::Tensor prepare_input(Context& ctx, const MicroBatch& mb, int64_t id) override;
  torch::Tensor block_loss(Context& ctx, int64_t k, const torch::Tensor& h,
                           const torch::Tensor& labels) override;

 private:
  ContrastiveLocalOptions opts_;
};

std::unique_ptr<Algorithm> make_contrastive_local(const AlgorithmConfig& cfg);

}  // namespace desync
