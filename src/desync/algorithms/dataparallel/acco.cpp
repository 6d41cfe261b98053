#include "desync/algorithms/dataparallel/acco.h"

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/trace.h"

namespace desync {

std::unique_ptr<Algorithm> make_acco(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  bool fixed_count = r.get("fixed_count", false);
  r.finish();
  return std::make_unique<Acco>(cfg.accumulation, fixed_count);
}

Acco::Acco(int64_t accumulation, bool fixed_count)
    : Algorithm({.accumulations_per_step = 2, .consumption_varies = true}),
      fixed_count_(fixed_count),
      n_acc_(accumulation) {}

namespace {

// This rank's share of the global micro-batches left: an equal split, the remainder to the
// lowest ranks.
int64_t share_of(int64_t left, int64_t rank, int64_t world) {
  return left / world + (rank < left % world ? 1 : 0);
}

}  // namespace

void Acco::setup(Context& ctx) {
  rank_ = ctx.comm.rank();
  world_ = ctx.comm.world_size();
  comm_thread_ = std::make_unique<CommThread>(ctx.comm, "acco");
  flat_ = make_replicated_flat(ctx, ctx.comm.world_size());
  shard_ = std::make_unique<ParameterShard>(ctx, *flat_, /*master_is_view=*/false);
  buffer_ = torch::zeros_like(flat_->params_flat());
}

StepReport Acco::round(Context& ctx, bool estimate) {
  // COMM thread: a (tentative) sharded step from B's gradients, gathered back into B.
  const double lr = ctx.schedule.lr(real_steps_);
  comm_thread_->start([this, &ctx, estimate, lr] {
    TraceSpan span(estimate ? "acco_estimate_round_comm" : "acco_real_round_comm", "phase");
    Communicator& comm = comm_thread_->channel();
    if (estimate) shard_->backup();
    torch::Tensor total = torch::tensor({static_cast<double>(count_)}, torch::kFloat64);
    comm.all_reduce(total);
    shard_->reduce_scatter(comm, buffer_, total.item<double>());
    shard_->clip(comm, ctx.config.optimizer.grad_clip);
    shard_->step(lr);
    shard_->all_gather(comm, buffer_);
    if (estimate) shard_->restore();
  });
  // COMPUTE thread: accumulate at P while the comm thread works (each micro-batch's gradient is
  // its mean-loss gradient; they are summed).
  StepReport report;
  double loss_sum = 0.0;
  int64_t k = 0;
  {
    TraceSpan span(estimate ? "acco_estimate_round_compute" : "acco_real_round_compute", "phase");
    while ((k < n_acc_ || (!fixed_count_ && !comm_thread_->done())) && quota_ != 0) {
      StepReport mb = accumulate_gradients(ctx, 1, 1);
      loss_sum += mb.loss;
      report.samples += mb.samples;
      ++k;
      if (quota_ > 0) --quota_;
    }
  }
  comm_thread_->join();
  accumulated_ += k;
  last_counts_.push_back(k);
  // Swap: P <- B; B <- G; count <- c; after an estimate round, G and c restart from zero.
  torch::NoGradGuard no_grad;
  flat_->params_flat().copy_(buffer_);
  buffer_.copy_(flat_->grads_flat());
  count_ = accumulated_;
  if (estimate) {
    flat_->grads_flat().zero_();
    accumulated_ = 0;
  }
  report.micro_batches = k;
  report.loss = k > 0 ? loss_sum / static_cast<double>(k) : 0.0;
  return report;
}

StepReport Acco::step(Context& ctx) {
  last_counts_.clear();
  quota_ = ctx.micro_batches_left < 0
               ? -1
               : share_of(ctx.micro_batches_left, ctx.comm.rank(), ctx.comm.world_size());
  StepReport first;
  if (!started_ && quota_ != 0) {  // init: G <- grad at theta_0 (1 micro-batch); B <- G; count <- 1
    TraceSpan span("acco_init", "phase");
    flat_->grads_flat().zero_();
    first = accumulate_gradients(ctx, 1, 1);
    if (quota_ > 0) --quota_;
    buffer_.copy_(flat_->grads_flat());
    count_ = accumulated_ = 1;
    started_ = true;
  }
  StepReport estimate = round(ctx, /*estimate=*/true);
  StepReport real = round(ctx, /*estimate=*/false);
  ++real_steps_;
  StepReport report = first;
  report += estimate;
  report += real;
  return report;
}

void Acco::save(Archive& archive) const {
  shard_->save(archive, "shard.");
  archive.put("acco.buffer", buffer_);
  archive.put("acco.grads", flat_->grads_flat());
  archive.put("acco.count", count_);
  archive.put("acco.accumulated", accumulated_);
  archive.put("acco.real_steps", real_steps_);
  archive.put("acco.started", static_cast<int64_t>(started_));
}

void Acco::load(const Archive& archive) {
  shard_->load(archive, "shard.");
  archive.copy_into("acco.buffer", buffer_);
  archive.copy_into("acco.grads", flat_->grads_flat());
  count_ = archive.integer("acco.count");
  accumulated_ = archive.integer("acco.accumulated");
  real_steps_ = archive.integer("acco.real_steps");
  started_ = archive.integer("acco.started") != 0;
}

void Acco::load_resharded(const std::vector<Archive>& old_ranks, int64_t step) {
  shard_->load_resharded(old_ranks, "shard.");
  fold_partial_sums(old_ranks, "acco.buffer", rank_, world_, 1.0, buffer_);
  fold_partial_sums(old_ranks, "acco.grads", rank_, world_, 1.0, flat_->grads_flat());
  count_ = fold_partial_counts(old_ranks, "acco.count", rank_, world_);
  accumulated_ = fold_partial_counts(old_ranks, "acco.accumulated", rank_, world_);
  real_steps_ = step;
  started_ = old_ranks.front().integer("acco.started") != 0;
}

AlgorithmReport Acco::report() const {
  int64_t elem = flat_->params_flat().element_size();
  AlgorithmReport r;
  r.memory = {{"parameters", flat_->padded_numel() * elem},
              {"gradients", flat_->padded_numel() * elem},
              {"comm_buffer_B", flat_->padded_numel() * elem}};
  for (auto& entry : shard_->memory()) r.memory.push_back(entry);
  return r;
}

}  // namespace desync
