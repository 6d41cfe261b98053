#include "desync/algorithms/decentralized/dpsgd.h"

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"

namespace desync {

std::unique_ptr<Algorithm> make_dpsgd(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  std::string topology = r.get_choice("topology", "ring", Topology::kinds());
  double w = r.get("mixing_weight", 0.0, 0.0, 1.0);
  r.finish();
  return std::make_unique<Dpsgd>(topology, w);
}

void Dpsgd::setup(Context& ctx) {
  accumulation_ = ctx.config.algorithm.accumulation;
  topology_ =
      std::make_unique<Topology>(topology_kind_, ctx.comm.world_size(),
                                 static_cast<uint64_t>(ctx.config.run.seed), mixing_weight_);
  flat_ = std::make_unique<FlatParameters>(ctx.model->parameters_of(0, ctx.model->num_stages()));
  optimizer_ = ctx.make_optimizer(param_slots(ctx.model->named_params(), ctx.config.optimizer));
  exchange_ = std::make_unique<PeerExchange>(flat_->params_flat(), topology_->max_degree());
  consensus_ = std::make_unique<Consensus>(ctx.model);
}

StepReport Dpsgd::step(Context& ctx) {
  torch::Tensor& x = flat_->params_flat();
  exchange_->start(ctx.comm, x, topology_->peers(ctx.comm.rank(), ctx.step), ctx.step);
  flat_->grads_flat().zero_();
  StepReport report = accumulate_gradients(ctx, accumulation_);  // at the pre-mix iterate
  exchange_->finish(x);
  apply_update(ctx, *flat_, *optimizer_);
  return report;
}

StagedModel Dpsgd::model_for_eval(Context& ctx) {
  return consensus_->average(ctx.eval_channel(), flat_->params_flat(), ctx.model);
}

void Dpsgd::save(Archive& archive) const { save_optimizer(*optimizer_, archive); }
void Dpsgd::load(const Archive& archive) { load_optimizer(*optimizer_, archive); }

AlgorithmReport Dpsgd::report() const {
  MemoryReport r = model_state_memory(*flat_, *optimizer_);
  r.push_back({"receive_buffers", exchange_->buffer_bytes()});
  return {.memory = r, .eval_metrics = {{"consensus_distance", consensus_->distance()}}};
}

}  // namespace desync
