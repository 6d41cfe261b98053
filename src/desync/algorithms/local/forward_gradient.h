// `forward_gradient`: training without backprop across blocks. The model is cut into K blocks;
// block k < K estimates the gradient of a target at its output by projecting the target onto a
// guessed direction u_k, and the projected estimate is pulled back through block k alone:
//
//     g^_k = ( <t_k, u_k> / (|u_k|^2 + eps) ) u_k            (per example, or per batch)
//
// The inner product <t_k, u_k> is one directional derivative (a JVP) of the target's map from
// h_k, taken in forward mode (jvp = "forward_ad", the default), by the double-VJP identity
// ("double_vjp"), or read off the exact target that backprop gives ("simulated", as the
// reference code does). References: "Can Forward Gradient Match Backpropagation?" (arXiv
// 2306.06968); "Gradients without Backpropagation" (arXiv 2202.08587); "Scaling Forward
// Gradient With Local Losses" (arXiv 2210.03310); spec §2 of
// ../shared/algorithms/local-learning-and-forward-gradient.md; docs/algorithms/forward_gradient.md.
//
// Targets t_k: global (dL/dh_k of the model's loss), local (block k's auxiliary loss), above
// (block k+1's auxiliary loss; the model's loss for the block below the last).
// Guesses u_k: random (gaussian | rademacher noise), local, ntk (an auxiliary head drawn afresh
// every micro-batch), fixed-ntk (a frozen random head), global, above.
// Spaces: activation (u_k has h_k's shape) or weight (a tangent on block k's parameters; a
// non-random guess is the activation guess pulled back through block k: U = J_k^T u_k).
//
// every step, on every rank (data parallel), for each of its M micro-batches (x, y):
//   h_0 = x;  h_k = f_k(h_{k-1}.detach())                      -- no gradient crosses a block
//   last block: its true gradient of L = CE(h_K, y)
//   block k < K: head k's gradient of l_k = CE(a_k(h_k.detach()), y)
//                sigma = <t_k, u_k> (a JVP of the target's map along u_k)
//                activation: grad(theta_k) += J_k^T (sigma / (|u|^2 + eps) u)
//                weight:     grad(theta_k) += sigma / (|U|^2 + eps) U
//   then the gradients are averaged over the ranks and every parameter takes one step.
//
// A random guess is not normalised by default (`random_projection`): g^ = <t, v> v is the
// classic unbiased forward gradient.
//
// Per-example scalars (`scalars`): the JVP of the per-example losses gives <dl_i/dh_i, u_i>
// exactly when nothing downstream couples the examples; a train-mode BatchNorm does, and then
// `auto` uses the batch-level scalar. `simulated` is per example, as the reference. Weight
// space is per batch (per block), the estimator one JVP computes.
//
// Every evaluation also measures, on a fixed probe batch, the cosine between the estimate and
// the true gradient of blocks 1..K-1 (grad_cosine, grad_cosine_<k>) and the seconds of the
// estimate, of its JVP passes and of backprop (EvalProbe).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/eval_probe.h"
#include "desync/algorithms/local/aux_head.h"
#include "desync/algorithms/local_heads.h"
#include "desync/algorithms/pipeline/stages.h"

namespace desync {

struct ForwardGradientOptions {
  int64_t blocks = 0;  // K; 0: one block per model stage
  std::vector<int64_t> stages_per_block;
  AuxHeadOptions aux;
  std::string target = "global";     // global | local | above
  std::string guess = "local";       // random | local | ntk | fixed-ntk | global | above
  std::string noise = "gaussian";    // gaussian | rademacher (guess = random)
  std::string space = "activation";  // activation | weight
  std::string jvp = "forward_ad";    // forward_ad | double_vjp | simulated
  std::string scalars = "auto";      // auto | sample | batch
  // guess = random: "classic" <t, v> v (unbiased, spec §2), or "normalized" as the other guesses
  // (<t, v> / |v|^2) v, as the reference code computes it (its mean is t / dim)
  std::string random_projection = "classic";
  double eps = 1e-14;
  int64_t probe_examples = 0;  // 0: data.batch_size
};

class ForwardGradient : public Algorithm, public LocalHeads, public EvalProbe {
 public:
  ForwardGradient(ForwardGradientOptions options, int64_t micro_batches);
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  std::vector<StagedModel> head_models(Context& ctx) override;
  std::vector<std::pair<std::string, double>> probe(Context& ctx, bool last) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

  // Adds into every parameter's gradient, for one micro-batch, `scale` times: the estimate of
  // block k < K pulled back through block k, the true gradient of the last block, and head k's
  // local-loss gradient. Random guesses and ntk heads are drawn from `draw`. Returns L.
  double accumulate(const torch::Tensor& x, const torch::Tensor& y, double scale, uint64_t draw);

  const std::vector<StageRange>& block_stages() const { return blocks_; }
  // Block k's parameters (model stages only).
  const std::vector<torch::Tensor>& block_parameters(int64_t k) const { return params_.at(k); }
  torch::nn::Sequential head(int64_t k) const { return heads_.at(k); }

 private:
  // The map from block k's output to its target's loss: model stages, then a head (none: the
  // model's own loss). global: the stages above; local: head k; above: block k+1 and its head
  // (the stages above, for the block below the last).
  struct TargetMap {
    StageRange stages;
    torch::nn::Sequential head;
  };
  TargetMap target_map(int64_t k) const;
  // Per-example losses of the target of block k, from an activation at block k's output.
  torch::Tensor target_losses(int64_t k, const torch::Tensor& a, const torch::Tensor& y);
  bool per_example(int64_t k) const;

  ForwardGradientOptions opts_;
  int64_t micro_batches_;
  StagedModel model_;
  int64_t seed_ = 0;
  std::vector<StageRange> blocks_;
  std::vector<std::vector<torch::Tensor>> params_;         // of each block
  std::vector<torch::nn::Sequential> heads_, fixed_;       // trained heads; fixed-ntk heads
  std::vector<std::vector<torch::nn::Module*>> coupling_;  // BatchNorms in block k's target
  std::vector<std::vector<int64_t>> shapes_;               // example shapes at block outputs
  int64_t classes_ = 0;
  std::vector<torch::Tensor> buffers_;  // the model's and the heads'
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<Optimizer> optimizer_;
  torch::Tensor probe_x_, probe_y_;
  double jvp_seconds_ = 0.0;        // spent in JVP passes since the last reset
  int64_t jvp_block_forwards_ = 0;  // block forwards the JVP passes take per micro-batch
};

std::unique_ptr<Algorithm> make_forward_gradient(const AlgorithmConfig& cfg);

}  // namespace desync
