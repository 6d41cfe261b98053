#include "desync/algorithms/dataparallel/cdp.h"

#include <fmt/format.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"
#include "desync/core/reductions.h"
#include "desync/core/trace.h"

namespace desync {

std::unique_ptr<Algorithm> make_cdp(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  CyclicOptions o = read_cyclic_options(r);
  const bool staggered =
      r.get_choice("runtime", "staggered", {"staggered", "simulator"}) == "staggered";
  const bool latest = r.get_choice("final_model", "average", {"average", "latest"}) == "latest";
  r.finish();
  return std::make_unique<Cdp>(o, staggered, latest, cfg.accumulation);
}

// The reduction thread of the staggered runtime: all-reduces the stage gradients it is handed,
// in order, on a background channel of its own, and records when each one left and completed.
class StageReducer {
 public:
  StageReducer(Communicator& comm, int64_t stages)
      : channel_(comm.split("cdp", Caller::kBackgroundThread)),
        launched_(stages, 0),
        done_(stages, 0),
        thread_([this] { loop(); }) {}

  ~StageReducer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // Starts the sum of `grad` (stage l's gradient) over the workers, in place.
  void launch(int64_t l, torch::Tensor grad) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back({l, std::move(grad)});
      ++launched_[l];
    }
    cv_.notify_all();
  }

  // Blocks until every reduction of stage l launched so far has completed.
  void wait(int64_t l) {
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [&] { return done_[l] == launched_[l] || error_; };
    if (!ready()) {
      TraceSpan span("cdp_wait_reduction", "wait");
      const int64_t t0 = Tracer::now_us();
      cv_.wait(lock, ready);
      channel_->record_join_wait(static_cast<double>(Tracer::now_us() - t0) * 1e-6);
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  struct Item {
    int64_t stage;
    torch::Tensor grad;
  };

  void loop() {
    torch::NoGradGuard no_grad;
    for (;;) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        const int64_t issued = Tracer::now_us();
        channel_->all_reduce(item.grad);
        record_reduction(item.stage, issued, Tracer::now_us(),
                         item.grad.numel() * item.grad.element_size());
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = std::current_exception();
        cv_.notify_all();
        return;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++done_[item.stage];
      }
      cv_.notify_all();
    }
  }

  std::shared_ptr<Communicator> channel_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  std::vector<int64_t> launched_, done_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

Cdp::Cdp(CyclicOptions o, bool staggered, bool final_latest, int64_t accumulation)
    : opts_(std::move(o)),
      staggered_(staggered),
      accumulation_(accumulation),
      final_latest_(final_latest) {}

Cdp::~Cdp() = default;

std::unique_ptr<Optimizer> Cdp::stage_optimizer(Context& ctx, int64_t l,
                                                torch::Tensor params) const {
  // The stage's slots with their names and weight decay, pointed at `params` (a buffer laid out
  // as the stage's slice of the flat parameters) and the slice of the flat gradient.
  std::vector<ParamSlot> all = param_slots(ctx.model->named_params(), ctx.config.optimizer);
  torch::Tensor grads =
      flat_->grads_flat().narrow(0, slices_[l].begin, slices_[l].end - slices_[l].begin);
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
  return ctx.make_optimizer(std::move(mine));
}

void Cdp::setup(Context& ctx) {
  if (ctx.config.optimizer.grad_clip > 0)
    throw ConfigError(
        "cdp: optimizer.grad_clip is not supported (the stages are updated at different times); "
        "set it to 0");
  if (staggered_ && ctx.config.checkpoint.enabled && ctx.config.checkpoint.every > 0)
    throw ConfigError(
        "cdp: the staggered runtime holds a micro-batch in flight between steps and cannot be "
        "checkpointed mid-run: set checkpoint.every = 0 (the final checkpoint is still written), "
        "or algorithm.runtime = \"simulator\"");
  rank_ = ctx.comm.rank();
  world_ = ctx.comm.world_size();
  MicroBatch probe = probe_batch(ctx);
  stages_ = cyclic_stages(ctx.model, probe.inputs, opts_);
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
  const int64_t S = num_stages();
  for (int64_t l = 0; l < S; ++l) fresh_.push_back(is_fresh(opts_, rank_, l, world_, S));

  if (!staggered_) {  // simulator: the optimizers own theta_k
    theta_ = flat_->params_flat().clone();
    prev_ = theta_.clone();
    for (int64_t l = 0; l < S; ++l)
      optimizers_.push_back(stage_optimizer(ctx, l, slice(theta_, l)));
    return;
  }
  master_.resize(S);
  for (int64_t l = 0; l < S; ++l) {
    torch::Tensor w = slice(flat_->params_flat(), l);
    if (!fresh_[l]) master_[l] = w.clone();
    optimizers_.push_back(stage_optimizer(ctx, l, fresh_[l] ? w : master_[l]));
  }
  pending_.assign(S, false);
  pending_cycle_.assign(S, 0);
  pass_ = std::make_unique<StagedPass>(ctx.model, stages_);
  const double unit = cyclic_unit_seconds(ctx, stages_, opts_);
  reducer_ = std::make_unique<StageReducer>(ctx.comm, S);
  clock_ = CyclicClock(world_, unit);
  ctx.comm.barrier();
  clock_.anchor(0);
}

StepReport Cdp::step(Context& ctx) {
  if (!staggered_) return simulate(ctx);
  const int64_t S = num_stages();
  auto [first, end] = window_ops(world_, S, rank_, ctx.step);
  clock_.catch_up(2 * S * world_ * ctx.step);
  StepReport report;
  for (int64_t j = std::max(first, next_op_); j < end; ++j) run_op(ctx, j, report);
  // The first window of a late worker ends before its first loss: run on to it.
  while (ctx.step == 0 && next_op_ < S) run_op(ctx, next_op_, report);
  report.loss = last_loss_;
  return report;
}

void Cdp::run_op(Context& ctx, int64_t j, StepReport& report) {
  const int64_t S = num_stages();
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
    if (fresh_[l] && pending_[l]) apply(ctx, l);
    pass_->forward(l);
    if (l == S - 1) last_loss_ = pass_->loss();
  } else {
    if (!fresh_[l] && pending_[l]) apply(ctx, l);
    pass_->backward(l);
    torch::NoGradGuard no_grad;
    if (!fresh_[l]) slice(flat_->params_flat(), l).copy_(master_[l]);
    reducer_->launch(l, slice(flat_->grads_flat(), l));
    pending_[l] = true;
    pending_cycle_[l] = op.cycle;
  }
  next_op_ = j + 1;
}

void Cdp::apply(Context& ctx, int64_t l) {
  reducer_->wait(l);
  TraceSpan span("optimizer", "optimizer");
  torch::Tensor g = slice(flat_->grads_flat(), l);
  g.div_(static_cast<double>(world_));
  optimizers_[l]->step(ctx.schedule.lr(pending_cycle_[l]));
  g.zero_();
  pending_[l] = false;
}

StepReport Cdp::simulate(Context& ctx) {
  torch::NoGradGuard no_grad;
  for (int64_t l = 0; l < num_stages(); ++l)
    slice(flat_->params_flat(), l).copy_(fresh_[l] ? slice(theta_, l) : slice(prev_, l));
  flat_->grads_flat().zero_();
  StepReport report;
  {
    torch::AutoGradMode grad(true);
    report = accumulate_gradients(ctx, accumulation_);
  }
  ctx.comm.all_reduce(flat_->grads_flat());
  flat_->grads_flat().div_(static_cast<double>(world_));
  prev_.copy_(theta_);
  TraceSpan span("optimizer", "optimizer");
  for (auto& optimizer : optimizers_) optimizer->step(ctx.schedule.lr(ctx.step));
  return report;
}

void Cdp::average_copies(StagedModel& model, Communicator& comm) const {
  if (world_ == 1) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors = model->parameters_of(0, model->num_stages());
  for (auto& [name, buf] : model->named_bufs())
    if (buf.is_floating_point()) tensors.push_back(buf);
  for (torch::Tensor& t : tensors) {
    comm.all_reduce(t);
    t.div_(static_cast<double>(world_));
  }
}

StagedModel Cdp::model_for_eval(Context& ctx) {
  if (world_ == 1 || finished_) return ctx.model;
  StagedModel copy(ctx.model->clone_model());
  average_copies(copy, ctx.eval_channel());
  return copy;
}

void Cdp::finish(Context& ctx) {
  if (finished_) return;
  finished_ = true;
  torch::NoGradGuard no_grad;
  if (staggered_) {
    {  // the backwards still owed by the last cycle, without the clock
      torch::AutoGradMode grad(true);
      StepReport ignored;
      while (next_op_ % (2 * num_stages()) != 0) run_op(ctx, next_op_, ignored);
    }
    for (int64_t l = 0; l < num_stages(); ++l) {
      if (pending_[l]) apply(ctx, l);  // fresh: W = theta_K; stale: M = theta_K, W = theta_{K-1}
      if (final_latest_ && !fresh_[l]) slice(flat_->params_flat(), l).copy_(master_[l]);
    }
    reducer_.reset();
  } else {
    for (int64_t l = 0; l < num_stages(); ++l)
      slice(flat_->params_flat(), l)
          .copy_(fresh_[l] || final_latest_ ? slice(theta_, l) : slice(prev_, l));
  }
  average_copies(ctx.model, ctx.comm);
}

void Cdp::save(Archive& archive) const {
  if (staggered_) {
    // Only once finish() has drained the schedule (the run's final checkpoint): setup() refuses
    // checkpoints between steps, when a micro-batch is in flight. The model is all there is.
    if (!finished_)
      throw CheckpointError("cdp: the staggered runtime checkpoints only at the end of the run");
    return;
  }
  archive.put("cdp.theta", theta_);
  archive.put("cdp.prev", prev_);
  for (size_t l = 0; l < optimizers_.size(); ++l)
    save_optimizer(*optimizers_[l], archive, fmt::format("optimizer{}.", l));
}

void Cdp::load(const Archive& archive) {
  if (staggered_)
    throw CheckpointError(
        "cdp: the staggered runtime cannot resume from a checkpoint; use algorithm.runtime = "
        "\"simulator\"");
  archive.copy_into("cdp.theta", theta_);
  archive.copy_into("cdp.prev", prev_);
  for (size_t l = 0; l < optimizers_.size(); ++l)
    load_optimizer(*optimizers_[l], archive, fmt::format("optimizer{}.", l));
}

AlgorithmReport Cdp::report() const {
  const int64_t elem = flat_->params_flat().element_size();
  int64_t state = 0, previous = 0;
  for (const auto& optimizer : optimizers_) state += optimizer->state_numel() * elem;
  for (const torch::Tensor& m : master_)
    if (m.defined()) previous += m.numel() * elem;
  if (!staggered_) previous = 2 * theta_.numel() * elem;  // theta_k and theta_{k-1}
  AlgorithmReport r;
  r.memory = {{"parameters", flat_->padded_numel() * elem},
              {"gradients", flat_->padded_numel() * elem},
              {"optimizer_state", state},
              {"previous_versions", previous}};
  int64_t stale = 0;
  for (bool f : fresh_) stale += f ? 0 : 1;
  r.counts = {{"cyclic_stages", num_stages()},
              {"stale_stages", stale},
              {"unit_us", static_cast<int64_t>(clock_.unit_seconds() * 1e6)}};
  return r;
}

}  // namespace desync
