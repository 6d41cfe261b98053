// `sdp`: subnetwork data parallelism — every worker trains a structured subnetwork (a full path
// from input to loss) on its own data, and each parameter's gradient is averaged over the
// workers that hold it. Reference: "Model Parallelism With Subnetwork Data Parallelism" (arXiv
// 2507.09029); docs/algorithms/sdp.md.
//
// Masks are static and computed alike on every rank:
//   granularity = "block" (B-SDP, models with residual blocks): parameters outside the blocks
//     (stem, shortcut projections, head) are held by all; with assignment = "window" worker w
//     holds the branches of blocks {(floor(w L / N) + j) mod L : j < n_b}, n_b the least count
//     >= L / N whose parameters reach C on average; with "balanced", every block has round(C N)
//     holders, the least loaded workers, largest blocks first (blocks of unequal size);
//   granularity = "neuron" (N-SDP): in every layer of hidden units, worker w holds units
//     {(floor(w U / N) + j) mod U : j < n_u}; n_u / U is chosen so that the held parameters
//     come nearest to C. The layers: for an MLP every other hidden layer (1st, 3rd, ...), a
//     unit being its rows of W_in, b_in and its column of W_out; for a ResNet the channels
//     inside every block's branch, a unit being its output filter of conv1, its scale and
//     shift in bn1 and its input slice of conv2 (ResidualBlock::hidden_units()).
//
// every step, on worker w:
//   masking = "forward": loss of the subnetwork (dropped blocks' branches off, dropped units'
//                        weights zero, and kept at zero); g_w <- its gradient, on held
//                        parameters only
//   masking = "backward": loss of the full model; g_w <- its gradient, masked to held parameters
//   g_p <- (sum over the holders H_p of g_{v,p}) / |H_p|     for every parameter element p
//   w <- Opt(w, g)                                             (held parameters)
//
// The holder average: for B-SDP with forward masking, one exchange per distinct holder set,
// among its holders only (a ring of sends and receives; the set of all workers: an
// all-reduce), so a worker sends about 2 C Ψ b (N-1)/N; otherwise one masked all-reduce of the
// whole gradient divided by the precomputed holder counts (DDP's bytes). Under backward masking
// every worker then applies the same update to every parameter (the spec's option (a)).
//
// Memory: B-SDP with forward masking keeps only the held parameters, their gradients and
// optimizer state (a dropped branch's tensors are released); the other combinations keep the
// whole model, like DDP. Evaluation assembles the whole model from its holders (eval channel);
// with eval_scale = "holders" each block's branch output, or each hidden unit's outgoing
// weights, is then multiplied by |H|/N, the share of workers that trained with it (the
// test-time rule of stochastic depth and dropout).
//
// Options: granularity ("auto": "block" for a model with residual blocks, else "neuron"),
// masking ("forward"), coverage (0.5), assignment ("window"), repair_batches (16: the training
// batches that re-estimate the assembled model's BatchNorm statistics at evaluation, forward
// masking only; 0 = none), eval_scale ("none" | "holders", forward masking only).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/eval_repair.h"
#include "desync/models/residual.h"

namespace desync {

// Worker w's share of `units` units (blocks, or a layer's hidden units) when each holds `held`:
// {(floor(w units / world) + j) mod units : j < held}, as a mask.
std::vector<bool> sdp_assignment(int64_t units, int64_t world, int64_t held, int64_t w);

// assignment = "balanced": every unit (of `sizes` parameters) gets `holders` holders, the least
// loaded workers so far, largest units first. Per unit: its holders, a bit per rank.
std::vector<int64_t> sdp_balanced_holders(const std::vector<int64_t>& sizes, int64_t world,
                                          int64_t holders);

class Sdp : public Algorithm, public EvalRepair {
 public:
  // granularity: true = blocks, false = hidden units, nullopt = blocks if the model has any.
  Sdp(std::optional<bool> granularity, bool forward, double coverage, bool balanced = false,
      int64_t repair_batches = 16, bool scale_by_holders = false)
      : granularity_(granularity),
        forward_(forward),
        balanced_(balanced),
        scale_by_holders_(scale_by_holders),
        coverage_(coverage),
        repair_batches_(repair_batches) {}
  // Forward masking: the assembled model's BatchNorm statistics are re-estimated before it is
  // evaluated (its blocks never ran all together while training).
  int64_t repair_batches() const override { return forward_ ? repair_batches_ : 0; }
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

  // Per parameter tensor (the model's order): this worker's mask (0-dim for a whole tensor)
  // and the number of holders of each element.
  const std::vector<torch::Tensor>& masks() const { return mask_; }
  const std::vector<torch::Tensor>& holder_counts() const { return count_; }
  double held_fraction() const { return held_fraction_; }

 private:
  // Per parameter tensor: worker w's mask (every rank computes every worker's).
  std::vector<torch::Tensor> masks_of(StagedModel& model, int64_t w, int64_t world) const;
  // Per residual block: its holders, a bit per rank.
  std::vector<int64_t> block_holders(StagedModel& model, int64_t world) const;
  // Per group of hidden units (granularity = "neuron"): worker w's units, 1 or 0 per unit.
  std::vector<torch::Tensor> unit_masks(const std::vector<ResidualBlock::HiddenUnits>& groups,
                                        int64_t w, int64_t world) const;
  void average_gradients(Context& ctx);

  std::optional<bool> granularity_;
  bool blocks_ = true, forward_, balanced_, scale_by_holders_;
  double coverage_;
  int64_t repair_batches_;
  int64_t accumulation_ = 1;
  int64_t units_held_ = 0;             // n_b, or the per-mille of each layer's units (neuron)
  std::vector<torch::Tensor> params_;  // the model's parameter tensors, in order
  std::vector<std::vector<int64_t>> shapes_;
  std::vector<int64_t> block_sizes_;  // parameters of each residual block's branch
  std::vector<torch::Tensor> mask_, count_;
  std::vector<torch::Tensor> unit_mask_, unit_count_;  // per group of units (neuron)
  std::vector<int64_t> holders_;          // per tensor: a bit per rank (block granularity)
  std::vector<bool> released_;            // per tensor: not held here, storage released
  std::unique_ptr<FlatParameters> flat_;  // the held parameters (all, under backward masking)
  std::unique_ptr<Optimizer> optimizer_;
  double held_fraction_ = 1.0;
};

}  // namespace desync
