#include "desync/algorithms/dataparallel/cyclic_runtime.h"

#include <fmt/format.h>

#include <algorithm>

#include "desync/algorithms/common.h"

namespace desync {

CyclicModel::CyclicModel(Context& ctx, const CyclicOptions& o) {
  MicroBatch probe = probe_batch(ctx);
  stages_ = cyclic_stages(ctx.model, probe.inputs, o);
  flat_ = make_replicated_flat(ctx);
  // Each cyclic stage's parameters are a contiguous slice of the flat buffers (stage order is
  // registration order).
  for (const StageRange& range : stages_) {
    Slice s{flat_->numel(), 0};
    for (const torch::Tensor& p : ctx.model->parameters_of(range.begin, range.end))
      for (size_t i = 0; i < flat_->params().size(); ++i)
        if (flat_->params()[i].is_same(p)) {
          s.begin = std::min(s.begin, flat_->offset(i));
          s.end = std::max(s.end, flat_->offset(i) + p.numel());
        }
    if (s.end == 0) s.begin = s.end = slices_.empty() ? 0 : slices_.back().end;
    slices_.push_back(s);
  }
  const int64_t rank = ctx.comm.rank(), world = ctx.comm.world_size();
  for (int64_t l = 0; l < num_stages(); ++l)
    fresh_.push_back(is_fresh(o, rank, l, world, num_stages()));
}

int64_t CyclicModel::stale_stages() const {
  return static_cast<int64_t>(std::count(fresh_.begin(), fresh_.end(), false));
}

std::vector<ParamSlot> CyclicModel::stage_slots(Context& ctx, int64_t l, torch::Tensor params,
                                                torch::Tensor grads) const {
  std::vector<ParamSlot> all = param_slots(ctx.model->named_params(), ctx.config.optimizer);
  std::vector<ParamSlot> mine;
  for (size_t i = 0; i < flat_->params().size(); ++i) {
    const int64_t offset = flat_->offset(i);
    if (offset < slices_[l].begin || offset >= slices_[l].end) continue;
    const torch::Tensor& p = flat_->params()[i];
    for (ParamSlot& slot : all) {
      if (!slot.param.is_same(p)) continue;
      const int64_t at = offset - slices_[l].begin;
      slot.param = params.narrow(0, at, p.numel()).view(p.sizes());
      slot.grad = grads.narrow(0, at, p.numel()).view(p.sizes());
      mine.push_back(slot);
    }
  }
  return mine;
}

void average_copies(StagedModel& model, Communicator& comm, bool with_params) {
  const int64_t world = comm.world_size();
  if (world == 1) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors;
  if (with_params) tensors = model->parameters_of(0, model->num_stages());
  for (auto& [name, buf] : model->named_bufs())
    if (buf.is_floating_point()) tensors.push_back(buf);
  for (torch::Tensor& t : tensors) {
    comm.all_reduce(t);
    t.div_(static_cast<double>(world));
  }
}

CyclicRuntime::CyclicRuntime(Context& ctx, CyclicModel& model, const CyclicOptions& o,
                             int64_t accumulation, std::vector<torch::Tensor> retained)
    : model_(model),
      opts_(o),
      accumulation_(accumulation),
      rank_(ctx.comm.rank()),
      world_(ctx.comm.world_size()) {
  const int64_t S = model_.num_stages();
  retained.resize(S);
  master_.resize(S);
  own_master_.assign(S, false);
  torch::NoGradGuard no_grad;
  for (int64_t l = 0; l < S; ++l) {
    if (model_.fresh(l)) continue;
    own_master_[l] = !retained[l].defined();
    master_[l] = own_master_[l] ? model_.params(l).clone() : retained[l];
  }
  pending_.assign(S, false);
  pending_cycle_.assign(S, 0);
}

torch::Tensor CyclicRuntime::version_buffer(int64_t l) {
  return model_.fresh(l) ? model_.params(l) : master_[l];
}

void CyclicRuntime::start(Context& ctx, CyclicExchange& exchange) {
  exchange_ = &exchange;
  pass_ = std::make_unique<StagedPass>(ctx.model, model_.stages());
  const double unit = cyclic_unit_seconds(ctx, model_.stages(), opts_);
  clock_ = CyclicClock(world_, unit);
  ctx.comm.barrier();
  clock_.anchor(0);
}

StepReport CyclicRuntime::step(Context& ctx) {
  const int64_t S = model_.num_stages();
  if (resumed_) {  // what was in flight goes again, then the clock restarts at this window
    resend_in_flight(ctx);
    ctx.comm.barrier();
    clock_.anchor(2 * S * world_ * ctx.step);
  }
  auto [first, end] = window_ops(world_, S, rank_, ctx.step);
  clock_.catch_up(2 * S * world_ * ctx.step);
  StepReport report;
  for (int64_t j = std::max(first, next_op_); j < end; ++j) run_op(ctx, j, report);
  // The first window of a late worker ends before its first loss: run on to it.
  while (ctx.step == 0 && next_op_ < S) run_op(ctx, next_op_, report);
  windows_ = ctx.step + 1;
  report.loss = last_loss_;
  return report;
}

void CyclicRuntime::run_op(Context& ctx, int64_t j, StepReport& report) {
  const int64_t S = model_.num_stages();
  const CyclicOp op = cyclic_op(world_, S, rank_, j);
  clock_.wait_for(op.tick);
  const int64_t l = op.stage;
  if (!op.backward) {
    if (l == 0) {  // the cycle's batch: `accumulation` micro-batches together
      std::vector<torch::Tensor> inputs, targets;
      for (int64_t i = 0; i < accumulation_; ++i) {
        MicroBatch mb = ctx.batches.next();
        inputs.push_back(mb.inputs);
        targets.push_back(mb.targets);
      }
      MicroBatch cycle;
      cycle.inputs = accumulation_ == 1 ? inputs[0] : torch::cat(inputs);
      cycle.targets = accumulation_ == 1 ? targets[0] : torch::cat(targets);
      pass_->begin(std::move(cycle));
      report.samples += pass_->samples();
      report.micro_batches += accumulation_;
    }
    if (model_.fresh(l) && pending_[l]) apply(ctx, l);
    pass_->forward(l);
    if (l == S - 1) last_loss_ = pass_->loss();
  } else {
    if (!model_.fresh(l) && pending_[l]) apply(ctx, l);
    pass_->backward(l);
    torch::NoGradGuard no_grad;
    if (!model_.fresh(l)) model_.params(l).copy_(master_[l]);
    const int64_t window = op.tick / (2 * S * world_);
    exchange_->send_gradient(ctx, l, op.cycle, model_.grads(l),
                             !sent_by_all(world_, S, l, op.cycle, window + 1));
    pending_[l] = true;
    pending_cycle_[l] = op.cycle;
  }
  next_op_ = j + 1;
}

void CyclicRuntime::apply(Context& ctx, int64_t l) {
  torch::NoGradGuard no_grad;
  exchange_->next_version(ctx, l, pending_cycle_[l], version_buffer(l));
  pending_[l] = false;
}

void CyclicRuntime::resend_in_flight(Context& ctx) {
  resumed_ = false;
  std::vector<int64_t> again;
  for (int64_t l = 0; l < model_.num_stages(); ++l)
    if (in_flight(l)) again.push_back(l);
  std::sort(again.begin(), again.end(), [&](int64_t a, int64_t b) {  // schedule order
    return pending_cycle_[a] != pending_cycle_[b] ? pending_cycle_[a] < pending_cycle_[b] : a > b;
  });
  for (int64_t l : again) exchange_->resend(ctx, l, pending_cycle_[l]);
}

bool CyclicRuntime::in_flight(int64_t l) const {
  return pending_[l] && !sent_by_all(world_, model_.num_stages(), l, pending_cycle_[l], windows_);
}

void CyclicRuntime::save(Archive& archive) const {
  archive.put("cyclic.windows", windows_);
  archive.put("cyclic.next_op", next_op_);
  for (int64_t l = 0; l < model_.num_stages(); ++l) {
    const std::string prefix = fmt::format("cyclic.stage{}.", l);
    archive.put(prefix + "pending", static_cast<int64_t>(pending_[l]));
    archive.put(prefix + "cycle", pending_cycle_[l]);
    if (own_master_[l]) archive.put(prefix + "master", master_[l]);
    if (pending_[l]) exchange_->save_pending(archive, prefix, l, pending_cycle_[l], !in_flight(l));
  }
  pass_->save(archive, "cyclic.pass.");
}

void CyclicRuntime::load(const Archive& archive) {
  torch::NoGradGuard no_grad;
  windows_ = archive.integer("cyclic.windows");
  next_op_ = archive.integer("cyclic.next_op");
  for (int64_t l = 0; l < model_.num_stages(); ++l) {
    const std::string prefix = fmt::format("cyclic.stage{}.", l);
    pending_[l] = archive.integer(prefix + "pending") != 0;
    pending_cycle_[l] = archive.integer(prefix + "cycle");
    if (own_master_[l]) archive.copy_into(prefix + "master", master_[l]);
    model_.grads(l).zero_();
    if (pending_[l]) exchange_->load_pending(archive, prefix, l, pending_cycle_[l], !in_flight(l));
  }
  pass_->load(archive, "cyclic.pass.");
  resumed_ = true;
}

void CyclicRuntime::drain(Context& ctx, bool latest) {
  const int64_t S = model_.num_stages();
  if (resumed_) resend_in_flight(ctx);  // resumed with no step left
  {  // the backwards still owed by the last cycle, without the clock
    torch::AutoGradMode grad(true);
    StepReport ignored;
    while (next_op_ % (2 * S) != 0) run_op(ctx, next_op_, ignored);
  }
  torch::NoGradGuard no_grad;
  for (int64_t l = 0; l < S; ++l) {
    if (pending_[l]) apply(ctx, l);  // fresh: W = theta_K; stale: M = theta_K, W = theta_{K-1}
    if (latest && !model_.fresh(l)) model_.params(l).copy_(master_[l]);
  }
}

int64_t CyclicRuntime::retained_bytes() const {
  int64_t bytes = 0;
  for (size_t l = 0; l < master_.size(); ++l)
    if (own_master_[l]) bytes += master_[l].numel() * master_[l].element_size();
  return bytes;
}

}  // namespace desync
