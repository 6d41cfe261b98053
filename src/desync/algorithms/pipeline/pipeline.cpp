#include "desync/algorithms/pipeline/pipeline.h"

#include <algorithm>
#include <utility>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/activation_memory.h"
#include "desync/core/trace.h"

namespace desync {

std::unique_ptr<Algorithm> make_pipeline(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  PipelineOptions o;
  o.gpipe = r.get_choice("schedule", "1f1b", {"1f1b", "gpipe"}) == "gpipe";
  o.placement = read_placement_options(r);
  r.finish();
  return std::make_unique<Pipeline>(o, cfg.accumulation);
}

Pipeline::Pipeline(PipelineOptions options, int64_t micro_batches)
    : Algorithm(pipeline_traits()), opts_(std::move(options)), micro_batches_(micro_batches) {}

std::vector<PipeOp> Pipeline::schedule(bool gpipe, int64_t s, int64_t j, int64_t m) {
  using Kind = PipeOp::Kind;
  std::vector<PipeOp> ops;
  if (gpipe) {
    for (int64_t b = 0; b < m; ++b) ops.push_back({Kind::kForward, b});
    for (int64_t b = m - 1; b >= 0; --b) ops.push_back({Kind::kBackward, b});
    return ops;
  }
  const int64_t warmup = std::min(j - 1 - s, m);
  int64_t next_f = 0, next_b = 0;
  for (; next_f < warmup; ++next_f) ops.push_back({Kind::kForward, next_f});
  while (next_f < m) {  // steady state: one forward, one backward
    ops.push_back({Kind::kForward, next_f++});
    ops.push_back({Kind::kBackward, next_b++});
  }
  while (next_b < m) ops.push_back({Kind::kBackward, next_b++});
  return ops;
}

void Pipeline::setup(Context& ctx) {
  const int64_t s = ctx.comm.rank(), j = ctx.comm.world_size();
  ranges_ = place_pipeline(ctx, opts_.placement);
  mine_ = ranges_[s];
  first_ = s == 0;
  last_ = s == j - 1;
  flat_ = std::make_unique<FlatParameters>(ctx.model->parameters_of(mine_.begin, mine_.end));
  optimizer_ =
      ctx.make_optimizer(param_slots(named_params_of(ctx.model, *flat_), ctx.config.optimizer));
  link_ = make_pipe_link(ctx, mine_, /*backward_carries_x=*/false);
}

void Pipeline::forward(Context& ctx, int64_t b, StepReport& report) {
  TraceSpan span("forward", "compute");
  const int64_t id = ctx.step * micro_batches_ + b;
  torch::Tensor x, labels;
  if (first_) {
    MicroBatch mb = ctx.batches.next();
    x = mb.inputs;
    labels = mb.targets;
    report.samples += mb.inputs.size(0);
  } else {
    PipeMessage m = link_->recv_forward(id);
    x = m.x.requires_grad_();
    labels = m.labels;
  }
  torch::Tensor y, loss;
  {
    ActivationScope activations;  // what the stage's forward keeps for its backward
    y = ctx.model->forward_range(x, mine_.begin, mine_.end);
    if (last_) loss = loss_of(y, labels);
  }
  InFlight& e = in_flight_[b];
  e.input = x;
  if (last_) {
    report.loss += loss.item<double>();
    report.micro_batches += 1;
    e.output = loss / static_cast<double>(micro_batches_);
  } else {
    e.output = y;
    link_->send_forward({id, y.detach(), labels, {}});
  }
  e.bytes =
      (first_ ? 0 : x.numel() * x.element_size()) + (last_ ? 0 : y.numel() * y.element_size());
  activation_bytes_ += e.bytes;
  peak_activation_bytes_ = std::max(peak_activation_bytes_, activation_bytes_);
  peak_in_flight_ = std::max(peak_in_flight_, static_cast<int64_t>(in_flight_.size()));
}

void Pipeline::backward(int64_t step, int64_t b) {
  TraceSpan span("backward", "compute");
  InFlight e = std::move(in_flight_.at(b));
  in_flight_.erase(b);
  const int64_t id = step * micro_batches_ + b;
  if (last_) {
    e.output.backward();
  } else {
    PipeMessage m = link_->recv_backward(id);
    e.output.backward(m.grad);
  }
  if (!first_) link_->send_backward({id, {}, {}, e.input.grad()});
  activation_bytes_ -= e.bytes;
}

StepReport Pipeline::step(Context& ctx) {
  const int64_t s = ctx.comm.rank(), j = ctx.comm.world_size();
  StepReport report;
  for (const PipeOp& op : schedule(opts_.gpipe, s, j, micro_batches_)) {
    if (op.kind == PipeOp::Kind::kForward)
      forward(ctx, op.micro_batch, report);
    else
      backward(ctx.step, op.micro_batch);
  }
  if (report.micro_batches > 0) report.loss /= static_cast<double>(report.micro_batches);
  {
    TraceSpan span("flush", "wait");
    link_->wait_sends();
  }
  TraceSpan span("optimizer", "optimizer");
  clip_global_norm(ctx.comm, flat_->grads_flat(), ctx.config.optimizer.grad_clip);
  optimizer_->step(ctx.schedule.lr(ctx.step));
  flat_->grads_flat().zero_();
  return report;
}

StagedModel Pipeline::model_for_eval(Context& ctx) {
  share_stages(ctx.model, ranges_, ctx.eval_channel());
  return ctx.model;
}

void Pipeline::save(Archive& archive) const { save_optimizer(*optimizer_, archive); }
void Pipeline::load(const Archive& archive) { load_optimizer(*optimizer_, archive); }

AlgorithmReport Pipeline::report() const {
  AlgorithmReport r;
  r.memory = model_state_memory(*flat_, *optimizer_);
  r.memory.push_back({"activations", peak_activation_bytes_});
  r.counts = {{"stage_begin", mine_.begin},
              {"stage_end", mine_.end},
              {"peak_in_flight_micro_batches", peak_in_flight_}};
  return r;
}

}  // namespace desync
