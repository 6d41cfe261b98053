#include "desync/algorithms/dataparallel/single.h"

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/trace.h"
#include "desync/core/error.h"

#include <fmt/core.h>

namespace desync {

std::unique_ptr<Algorithm> make_single(const AlgorithmConfig& cfg) {
  algorithm_options(cfg).finish();
  return std::make_unique<Single>();
}

void Single::setup(Context& ctx) {
  if (ctx.comm.world_size() > 1)
    throw ConfigError(fmt::format("algorithm.name = \"single\" trains one worker, this run has {}; "
                                  "use a multi-worker algorithm such as \"ddp\"",
                                  ctx.comm.world_size()));
  accumulation_ = ctx.config.algorithm.accumulation;
  flat_ = std::make_unique<FlatParameters>(ctx.model->parameters_of(0, ctx.model->num_stages()));
  optimizer_ = ctx.make_optimizer(param_slots(ctx.model->named_params(), ctx.config.optimizer));
}

StepReport Single::step(Context& ctx) {
  flat_->grads_flat().zero_();
  StepReport report = accumulate_gradients(ctx, accumulation_);
  if (ctx.config.optimizer.grad_clip > 0)
    clip_grad_norm({flat_->grads_flat()}, ctx.config.optimizer.grad_clip);
  {
    TraceSpan span("optimizer", "optimizer");
    optimizer_->step(ctx.schedule.lr(ctx.step));
  }
  return report;
}

void Single::save(Archive& archive) const {
  for (auto& [name, t] : optimizer_->state()) archive.put("optimizer." + name, t);
}

void Single::load(const Archive& archive) {
  for (auto& [name, t] : optimizer_->state()) archive.copy_into("optimizer." + name, t);
}

MemoryReport Single::memory() const {
  int64_t elem = flat_->params_flat().element_size();
  return {{"parameters", flat_->padded_numel() * elem},
          {"gradients", flat_->padded_numel() * elem},
          {"optimizer_state", optimizer_->state_numel() * elem}};
}

}  // namespace desync
