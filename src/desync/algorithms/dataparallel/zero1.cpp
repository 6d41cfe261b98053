#include "desync/algorithms/dataparallel/zero1.h"

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"

namespace desync {

std::unique_ptr<Algorithm> make_zero1(const AlgorithmConfig& cfg) {
  algorithm_options(cfg).finish();
  return std::make_unique<Zero1>();
}

void Zero1::setup(Context& ctx) {
  accumulation_ = ctx.config.algorithm.accumulation;
  flat_ = make_replicated_flat(ctx, ctx.comm.world_size());
  shard_ = std::make_unique<ParameterShard>(ctx, *flat_, /*master_is_view=*/true);
}

StepReport Zero1::step(Context& ctx) {
  flat_->grads_flat().zero_();
  StepReport report = accumulate_gradients(ctx, accumulation_);
  const double n = static_cast<double>(ctx.comm.world_size());
  shard_->reduce_scatter(ctx.comm, flat_->grads_flat(), n);
  shard_->clip(ctx.comm, ctx.config.optimizer.grad_clip);
  shard_->step(ctx.schedule.lr(ctx.step));
  shard_->all_gather(ctx.comm, flat_->params_flat());
  return report;
}

void Zero1::save(Archive& archive) const { shard_->save(archive, "shard."); }
void Zero1::load(const Archive& archive) { shard_->load(archive, "shard."); }

void Zero1::load_resharded(const std::vector<Archive>& old_ranks, int64_t /*step*/) {
  shard_->load_resharded(old_ranks, "shard.");
}

AlgorithmReport Zero1::report() const {
  int64_t elem = flat_->params_flat().element_size();
  MemoryReport r = {{"parameters", flat_->padded_numel() * elem},
                    {"gradients", flat_->padded_numel() * elem}};
  for (auto& entry : shard_->memory()) r.push_back(entry);
  return {.memory = r};
}

}  // namespace desync
