#include "desync/algorithms/dataparallel/dpu.h"

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/trace.h"

namespace desync {

std::unique_ptr<Algorithm> make_dpu(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  int64_t n_warmup = r.get("n_warmup", kDpuDefaultWarmup, 0);
  r.finish();
  return std::make_unique<Dpu>(cfg.accumulation, n_warmup);
}

void Dpu::setup(Context& ctx) {
  rank_ = ctx.comm.rank();
  world_ = ctx.comm.world_size();
  comm_thread_ = std::make_unique<CommThread>(ctx.comm, "dpu");
  flat_ = make_replicated_flat(ctx, ctx.comm.world_size());
  shard_ = std::make_unique<ParameterShard>(ctx, *flat_, /*master_is_view=*/false);
  prev_ = torch::zeros_like(flat_->grads_flat());
}

// theta_{t+1} = ZeRO1_update(theta_t, grads), gathered into dst.
void Dpu::update(Context& ctx, Communicator& comm, const torch::Tensor& grads, torch::Tensor dst) {
  shard_->reduce_scatter(comm, grads, static_cast<double>(comm.world_size()));
  shard_->clip(comm, ctx.config.optimizer.grad_clip);
  shard_->step(ctx.schedule.lr(ctx.step));
  shard_->all_gather(comm, dst);
}

StepReport Dpu::step(Context& ctx) {
  torch::Tensor& grads = flat_->grads_flat();
  if (ctx.step < n_warmup_) {  // ordinary ZeRO-1 step
    TraceSpan span("dpu_warmup_step", "phase");
    grads.zero_();
    StepReport report = accumulate_gradients(ctx, accumulation_);
    update(ctx, ctx.comm, grads, flat_->params_flat());
    return report;
  }
  StepReport boot;
  if (!have_prev_) {  // bootstrap: the first delayed gradient is taken at theta_w
    TraceSpan span("dpu_bootstrap", "phase");
    grads.zero_();
    boot = accumulate_gradients(ctx, accumulation_);
    prev_.copy_(grads);
    have_prev_ = true;
  }
  grads.zero_();
  comm_thread_->start([&] {  // prev_: G_prev, then theta
    TraceSpan span("dpu_delayed_update", "phase");
    update(ctx, comm_thread_->channel(), prev_, prev_);
  });
  StepReport report;
  {
    TraceSpan span("dpu_gradients", "phase");
    report = accumulate_gradients(ctx, accumulation_);
  }
  comm_thread_->join();
  flat_->params_flat().copy_(prev_);  // P <- theta_{t+1}
  prev_.copy_(grads);                 // G_prev <- G_cur
  boot += report;
  return boot;
}

void Dpu::save(Archive& archive) const {
  shard_->save(archive, "shard.");
  archive.put("dpu.have_prev", static_cast<int64_t>(have_prev_));
  archive.put("dpu.prev", prev_);
}

void Dpu::load(const Archive& archive) {
  shard_->load(archive, "shard.");
  have_prev_ = archive.integer("dpu.have_prev") != 0;
  archive.copy_into("dpu.prev", prev_);
}

void Dpu::load_resharded(const std::vector<Archive>& old_ranks, int64_t step) {
  shard_->load_resharded(old_ranks, "shard.");
  have_prev_ = old_ranks.front().integer("dpu.have_prev") != 0 && step >= n_warmup_;
  const double scale =
      static_cast<double>(world_) / static_cast<double>(old_ranks.size());  // same average
  fold_partial_sums(old_ranks, "dpu.prev", rank_, world_, have_prev_ ? scale : 0.0, prev_);
}

AlgorithmReport Dpu::report() const {
  int64_t elem = flat_->params_flat().element_size();
  AlgorithmReport r;
  r.memory = {{"parameters", flat_->padded_numel() * elem},
              {"gradients", 2 * flat_->padded_numel() * elem}};  // G_cur and G_prev
  for (auto& entry : shard_->memory()) r.memory.push_back(entry);
  return r;
}

}  // namespace desync
