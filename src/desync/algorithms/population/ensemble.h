// `ensemble`: independent training, the population without any communication: each worker
// trains its own member (from its own initialisation by default) on its own data; the models
// meet only at evaluation, as an ensemble (the mean of their softmax outputs: the upper bound
// of the population methods) and as their average (which, from distinct initialisations, lands
// between basins). docs/algorithms/ensemble.md.
//
//   every step, on worker k: w_k <- Opt(w_k, grad of its own loss)       (Member::local_step)
//
// Options: the population's init ("distinct"), repair_batches (16), mixup and label_smoothing
// ([0]).
#pragma once

#include <memory>

#include "desync/algorithms/population/member.h"

namespace desync {

class Ensemble : public Population {
 public:
  explicit Ensemble(Population::Options options) : Population(options) {}
  void setup(Context& ctx) override { member_ = std::make_unique<Member>(ctx, population()); }
  StepReport step(Context& ctx) override { return member_->local_step(ctx); }
  StagedModel model_for_eval(Context& ctx) override { return member_->average(ctx); }
  void save(Archive& archive) const override { member_->save(archive); }
  void load(const Archive& archive) override { member_->load(archive); }
  AlgorithmReport report() const override {
    return {.memory = member_->memory(),
            .eval_metrics = {{"consensus_distance", member_->spread()}}};
  }

 private:
  std::unique_ptr<Member> member_;
};

}  // namespace desync
