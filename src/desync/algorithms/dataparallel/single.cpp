#include "desync/algorithms/dataparallel/single.h"

#include <fmt/format.h>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"

namespace desync {

std::unique_ptr<Algorithm> make_single(const AlgorithmConfig& cfg) {
  algorithm_options(cfg).finish();
  return std::make_unique<Single>();
}

void Single::setup(Context& ctx) {
  if (ctx.comm.world_size() > 1)
    throw ConfigError(
        fmt::format("algorithm.name = \"single\" trains one worker, this run has {}; "
                    "use a multi-worker algorithm such as \"ddp\"",
                    ctx.comm.world_size()));
  accumulation_ = ctx.config.algorithm.accumulation;
  flat_ = std::make_unique<FlatParameters>(ctx.model->parameters_of(0, ctx.model->num_stages()));
  optimizer_ = ctx.make_optimizer(param_slots(ctx.model->named_params(), ctx.config.optimizer));
}

StepReport Single::step(Context& ctx) {
  flat_->grads_flat().zero_();
  StepReport report = accumulate_gradients(ctx, accumulation_);
  apply_update(ctx, *flat_, *optimizer_);
  return report;
}

void Single::save(Archive& archive) const { save_optimizer(*optimizer_, archive); }

void Single::load(const Archive& archive) { load_optimizer(*optimizer_, archive); }

AlgorithmReport Single::report() const {
  return {.memory = model_state_memory(*flat_, *optimizer_)};
}

}  // namespace desync
