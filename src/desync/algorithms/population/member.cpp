#include "desync/algorithms/population/member.h"

#include "desync/algorithms/packing.h"
#include "desync/algorithms/registry.h"

namespace desync {

Population::Options population_options(SectionReader& r, const std::string& default_init) {
  Population::Options o;
  o.distinct_init = r.get_choice("init", default_init, {"distinct", "shared"}) == "distinct";
  o.repair_batches = r.get("repair_batches", o.repair_batches, int64_t{0});
  return o;
}

Member::Member(Context& ctx) : accumulation_(ctx.config.algorithm.accumulation) {
  flat_ = std::make_unique<FlatParameters>(ctx.model->parameters_of(0, ctx.model->num_stages()));
  optimizer_ = ctx.make_optimizer(param_slots(ctx.model->named_params(), ctx.config.optimizer));
  consensus_ = std::make_unique<Consensus>(ctx.model);
}

StepReport Member::local_step(Context& ctx) {
  flat_->grads_flat().zero_();
  StepReport report = accumulate_gradients(ctx, accumulation_);
  apply_update(ctx, *flat_, *optimizer_);
  return report;
}

std::vector<torch::Tensor> Member::float_buffers(const StagedModel& model) {
  std::vector<torch::Tensor> out;
  for (auto& [name, b] : model->named_bufs())
    if (b.is_floating_point()) out.push_back(b);
  return out;
}

void Member::mix_towards_average(Context& ctx, Communicator& comm, double alpha) {
  torch::NoGradGuard no_grad;
  const auto n = static_cast<double>(comm.world_size());
  auto mix = [&](torch::Tensor& w) {
    torch::Tensor mean = w.clone();
    comm.all_reduce(mean);
    mean.div_(n);
    w.mul_(alpha).add_(mean, 1.0 - alpha);
  };
  mix(params());
  // The float buffers together, in one message.
  const std::vector<torch::Tensor> buffers = float_buffers(ctx.model);
  if (buffers.empty()) return;
  torch::Tensor packed = pack(buffers);
  mix(packed);
  unpack(packed, buffers);
}

}  // namespace desync
