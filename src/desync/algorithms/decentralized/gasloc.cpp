#include "desync/algorithms/decentralized/gasloc.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"

namespace desync {

std::unique_ptr<Algorithm> make_gasloc(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  GaslocOptions o;
  o.local_steps = r.get("local_steps", o.local_steps, 1);
  o.local_steps_per_worker = r.get("local_steps_per_worker", o.local_steps_per_worker, 1);
  o.local_steps_from_speed = r.get("local_steps_from_speed", o.local_steps_from_speed);
  o.outer_lr = r.get("outer_lr", o.outer_lr, 0.0, 1e6, /*exclusive_min=*/true);
  o.outer_momentum = r.get("outer_momentum", o.outer_momentum, 0.0, 0.999999);
  o.momentum_on_proposal =
      r.get_choice("momentum_on", "mixed", {"mixed", "proposal"}) == "proposal";
  o.topology = r.get_choice("topology", o.topology, Topology::kinds());
  o.mixing_weight = r.get("mixing_weight", o.mixing_weight, 0.0, 1.0);
  if (o.local_steps_from_speed && !o.local_steps_per_worker.empty())
    throw ConfigError(fmt::format(
        "{}: set either algorithm.local_steps_per_worker or algorithm.local_steps_from_speed, "
        "not both",
        r.where("local_steps_from_speed")));
  r.finish();
  return std::make_unique<Gasloc>(o);
}

namespace {

// H_i for `rank`: the option list, or H scaled by the worker's speed, or H.
int64_t local_steps_of(const GaslocOptions& o, const RunConfig& run, int64_t rank, int64_t world) {
  if (!o.local_steps_per_worker.empty()) {
    if (static_cast<int64_t>(o.local_steps_per_worker.size()) != world)
      throw ConfigError(
          fmt::format("algorithm.local_steps_per_worker has {} entries; the job has "
                      "{} workers",
                      o.local_steps_per_worker.size(), world));
    return o.local_steps_per_worker[rank];
  }
  if (o.local_steps_from_speed) {
    if (run.worker_speed.empty())
      throw ConfigError(
          "algorithm.local_steps_from_speed needs run.worker_speed (one speed per worker)");
    double fastest = *std::max_element(run.worker_speed.begin(), run.worker_speed.end());
    return std::max<int64_t>(
        1, std::llround(static_cast<double>(o.local_steps) * run.worker_speed[rank] / fastest));
  }
  return o.local_steps;
}

}  // namespace

void Gasloc::setup(Context& ctx) {
  const int64_t world = ctx.comm.world_size();
  accumulation_ = ctx.config.algorithm.accumulation;
  my_steps_ = local_steps_of(opts_, ctx.config.run, ctx.comm.rank(), world);
  topology_ = std::make_unique<Topology>(
      opts_.topology, world, static_cast<uint64_t>(ctx.config.run.seed), opts_.mixing_weight);
  flat_ = std::make_unique<FlatParameters>(ctx.model->parameters_of(0, ctx.model->num_stages()));
  inner_ = ctx.make_optimizer(param_slots(ctx.model->named_params(), ctx.config.optimizer));
  start_ = flat_->params_flat().clone();
  proposal_ = torch::zeros_like(start_);
  prev_ = start_.clone();
  exchange_ = std::make_unique<PeerExchange>(start_, topology_->max_degree());
  consensus_ = std::make_unique<Consensus>(ctx.model);
}

StepReport Gasloc::step(Context& ctx) {
  const int64_t h = opts_.local_steps, s = ctx.step % h;
  // Inner steps due at trainer step s of the round: H_i of them spread over H trainer steps.
  const int64_t due = (s + 1) * my_steps_ / h - s * my_steps_ / h;
  StepReport report;
  for (int64_t k = 0; k < due; ++k) {
    flat_->grads_flat().zero_();
    report += accumulate_gradients(ctx, accumulation_);
    apply_update(ctx, *flat_, *inner_);
  }
  if (s == h - 1) end_round(ctx, ctx.step / h);
  return report;
}

void Gasloc::end_round(Context& ctx, int64_t round) {
  torch::NoGradGuard no_grad;
  torch::Tensor& theta = flat_->params_flat();
  torch::sub_out(proposal_, theta, start_).mul_(opts_.outer_lr).add_(start_);  // x
  exchange_->start(ctx.comm, proposal_, topology_->peers(ctx.comm.rank(), round), round);
  theta.copy_(proposal_);
  exchange_->finish(theta);  // theta <- y
  // Outer momentum; start_ serves as the scratch for the difference.
  const torch::Tensor& now = opts_.momentum_on_proposal ? proposal_ : theta;
  torch::sub_out(start_, now, prev_);
  prev_.copy_(now);
  theta.add_(start_, opts_.outer_momentum);
  start_.copy_(theta);
}

StagedModel Gasloc::model_for_eval(Context& ctx) {
  return consensus_->average(ctx.eval_channel(), flat_->params_flat(), ctx.model);
}

void Gasloc::save(Archive& archive) const {
  save_optimizer(*inner_, archive, "inner.");
  archive.put("gasloc.start", start_);
  archive.put("gasloc.prev", prev_);
}

void Gasloc::load(const Archive& archive) {
  load_optimizer(*inner_, archive, "inner.");
  archive.copy_into("gasloc.start", start_);
  archive.copy_into("gasloc.prev", prev_);
}

AlgorithmReport Gasloc::report() const {
  MemoryReport r = model_state_memory(*flat_, *inner_);
  int64_t elem = start_.element_size();
  r.push_back({"round_start_copy", start_.numel() * elem});
  r.push_back({"outer_state", (prev_.numel() + proposal_.numel()) * elem});
  r.push_back({"receive_buffers", exchange_->buffer_bytes()});
  return {.memory = r, .eval_metrics = {{"consensus_distance", consensus_->distance()}}};
}

}  // namespace desync
