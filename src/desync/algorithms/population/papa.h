// `papa`: population parameter averaging, the baselines WASH is measured against.
// Reference: "PopulAtion Parameter Averaging (PAPA)" (arXiv 2304.03094); docs/algorithms/papa.md.
//
//   every step, on worker k: w_k <- Opt(w_k, grad of its own loss)       (Member::local_step)
//   variant = "gradual" (PAPA, the EMA): every ema_every steps
//       w_k <- alpha w_k + (1 - alpha) w̄                               one all-reduce of Ψ
//   variant = "all" (PAPA-all): every every_epochs epochs
//       w_k <- w̄                                                        one all-reduce of Ψ
//   variant = "pair" (PAPA-2): every every_epochs epochs, sigma = a random permutation of the
//       workers, the same on all (RNG(run.seed, round)):
//       w_k <- (w_{sigma(k)} + w_{sigma(k+1 mod N)}) / 2                 two sends, two receives
// w̄ is the members' mean; the float buffers (BatchNorm statistics) are mixed like the weights.
// Each rule keeps the members' mean: in PAPA-2 every member enters exactly two pairs, with
// weight 1/2 each. The final model is the members' average (the Trainer's evaluation).
//
// An epoch is the data stream's (every rank reads its shard of every global batch); every_steps
// > 0 counts in steps instead (short runs, tests).
// Options: variant ("gradual"), ema_every (10), alpha (0.99), every_epochs (5), every_steps (0),
// and the population's init ("shared"), repair_batches (16), mixup and label_smoothing ([0]).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "desync/algorithms/population/member.h"

namespace desync {

// The pairs of PAPA-2's round `round`: member k becomes the mean of members pair[k].first and
// pair[k].second, two distinct members (N >= 2); every member appears in exactly two pairs.
std::vector<std::pair<int64_t, int64_t>> papa_pairs(uint64_t seed, int64_t round, int64_t world);

class Papa : public Population {
 public:
  enum class Variant { kGradual, kAll, kPair };
  Papa(Population::Options options, Variant variant, int64_t ema_every, double alpha,
       int64_t every_epochs, int64_t every_steps)
      : Population(options),
        variant_(variant),
        ema_every_(ema_every),
        alpha_(alpha),
        every_epochs_(every_epochs),
        every_steps_(every_steps) {}
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override { return member_->average(ctx); }
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

 private:
  bool due(Context& ctx);
  void average_pair(Context& ctx);

  Variant variant_;
  int64_t ema_every_;
  double alpha_;
  int64_t every_epochs_, every_steps_;
  std::unique_ptr<Member> member_;
  int64_t next_epoch_ = 0;  // all, pair: the epoch of the next averaging
  int64_t rounds_ = 0;      // averagings done
};

}  // namespace desync
