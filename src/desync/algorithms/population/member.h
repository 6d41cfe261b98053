// What every population method shares (WASH, PAPA, independent ensembles): each rank trains a
// model of its own, a member, with local optimizer steps on its own shard of the data; the
// Trainer evaluates every member, their ensemble and their average (train/evaluation.h).
//
//   population_options(r)  reads `init` ("distinct": member r's weights are seeded with
//                          run.seed + r; "shared": every member starts from the same weights;
//                          the default is the method's), `mixup` and `label_smoothing` (lists
//                          the members take their recipe from; [0]: plain cross-entropy) and
//                          `repair_batches` (training batches that re-estimate the averaged
//                          model's BatchNorm statistics before it is evaluated; 0 = none)
//   Member::local_step     g <- grad of the member's loss on its next `accumulation`
//                          micro-batches; w <- Opt(w, g). The loss: cross-entropy, or member
//                          r's recipe of mixup and label smoothing (member_recipe(),
//                          algorithms/loss_recipe.h)
//   Member::average        the members' average (parameters and buffers), on the evaluation
//                          channel; spread() is then mean_k ||w_k - w̄||₂
//   Member::mix_towards    w_k <- alpha w_k + (1 - alpha) w̄ over a communicator (PAPA)
#pragma once

#include <memory>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/common.h"
#include "desync/algorithms/decentralized/gossip.h"
#include "desync/algorithms/loss_recipe.h"
#include "desync/algorithms/population/population.h"

namespace desync {

Population::Options population_options(SectionReader& r, const std::string& default_init);
// Member `rank`'s loss: mixup[rank mod A], label_smoothing[floor(rank / A) mod B].
LossRecipe member_recipe(const Population::Options& options, int64_t rank);

class Member {
 public:
  Member(Context& ctx, const Population::Options& options);

  StepReport local_step(Context& ctx);
  // The member's parameters, one flat vector laid out like the model's.
  torch::Tensor& params() { return flat_->params_flat(); }
  // The member's floating-point buffers (BatchNorm running statistics), by name.
  static std::vector<torch::Tensor> float_buffers(const StagedModel& model);
  Optimizer& optimizer() { return *optimizer_; }
  StagedModel average(Context& ctx) {
    return consensus_->average(ctx.eval_channel(), params(), ctx.model);
  }
  double spread() const { return consensus_->distance(); }
  // w <- alpha w + (1 - alpha) mean over the ranks of `comm` of w, for the parameters and the
  // float buffers (one all-reduce each). alpha = 0: every member becomes the average.
  void mix_towards_average(Context& ctx, Communicator& comm, double alpha);

  const LossRecipe& recipe() const { return recipe_; }
  void save(Archive& archive) const;
  void load(const Archive& archive);
  MemoryReport memory() { return model_state_memory(*flat_, *optimizer_); }

 private:
  int64_t accumulation_;
  LossRecipe recipe_;
  at::Generator generator_;  // mixup's draws
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<Consensus> consensus_;
};

}  // namespace desync
