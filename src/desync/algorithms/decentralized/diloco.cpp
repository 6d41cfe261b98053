#include "desync/algorithms/decentralized/diloco.h"

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/trace.h"

namespace desync {

std::unique_ptr<Algorithm> make_diloco(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  DilocoOptions o;
  o.local_steps = r.get("local_steps", o.local_steps, 1);
  o.outer_lr = r.get("outer_lr", o.outer_lr, 0.0, 1e6, /*exclusive_min=*/true);
  o.outer_momentum = r.get("outer_momentum", o.outer_momentum, 0.0, 0.999999);
  o.outer_nesterov = r.get("outer_nesterov", o.outer_nesterov);
  o.outer_comm_dtype = comm_dtype_option(r, "outer_comm_dtype");
  r.finish();
  return std::make_unique<Diloco>(o);
}

void Diloco::setup(Context& ctx) {
  accumulation_ = ctx.config.algorithm.accumulation;
  rank_ = ctx.comm.rank();
  flat_ = make_replicated_flat(ctx);
  inner_ = ctx.make_optimizer(param_slots(ctx.model->named_params(), ctx.config.optimizer));
  global_ = flat_->params_flat().clone();
  delta_ = torch::zeros_like(global_);
  outer_ = make_sgd({{"global", global_, delta_, 0.0}}, opts_.outer_momentum, 0.0,
                    opts_.outer_nesterov && opts_.outer_momentum > 0);
  consensus_ = std::make_unique<Consensus>(ctx.model);
}

StepReport Diloco::step(Context& ctx) {
  flat_->grads_flat().zero_();
  StepReport report = accumulate_gradients(ctx, accumulation_);
  apply_update(ctx, *flat_, *inner_);
  if ((ctx.step + 1) % opts_.local_steps == 0) outer_step(ctx);
  return report;
}

void Diloco::outer_step(Context& ctx) {
  torch::NoGradGuard no_grad;
  torch::Tensor& local = flat_->params_flat();
  torch::sub_out(delta_, global_, local);  // Delta_i = theta - theta_i
  {
    TraceSpan span("pseudo_gradient_all_reduce", "comm");
    ctx.comm.all_reduce_async(delta_, opts_.outer_comm_dtype.value_or(delta_.scalar_type()))
        ->wait();
  }
  delta_.div_(static_cast<double>(ctx.comm.world_size()));
  {
    TraceSpan span("outer_step", "optimizer");
    outer_->step(opts_.outer_lr);
  }
  local.copy_(global_);
}

StagedModel Diloco::model_for_eval(Context& ctx) {
  return consensus_->shared(ctx.eval_channel(), global_, ctx.model);
}

void Diloco::save(Archive& archive) const {
  save_optimizer(*inner_, archive, "inner.");
  save_optimizer(*outer_, archive, "outer.");
  archive.put("diloco.global", global_);
}

void Diloco::load(const Archive& archive) {
  load_optimizer(*inner_, archive, "inner.");
  load_optimizer(*outer_, archive, "outer.");
  archive.copy_into("diloco.global", global_);
}

void Diloco::load_resharded(const std::vector<Archive>& old_ranks, int64_t /*step*/) {
  const Archive& first = old_ranks.front();
  load_optimizer(*inner_, old_ranks[static_cast<size_t>(rank_) % old_ranks.size()], "inner.");
  load_optimizer(*outer_, first, "outer.");
  first.copy_into("diloco.global", global_);
  torch::NoGradGuard no_grad;
  flat_->params_flat().copy_(global_);  // theta_i <- theta
}

AlgorithmReport Diloco::report() const {
  MemoryReport r = model_state_memory(*flat_, *inner_);
  int64_t elem = global_.element_size();
  r.push_back({"global_copy", global_.numel() * elem});
  r.push_back({"outer_state", (outer_->state_numel() + delta_.numel()) * elem});
  return {.memory = r};
}

}  // namespace desync
