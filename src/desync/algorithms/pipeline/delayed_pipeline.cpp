#include "desync/algorithms/pipeline/delayed_pipeline.h"

#include <utility>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"

namespace desync {

std::unique_ptr<Algorithm> make_delayed_pipeline(std::unique_ptr<const MemoryPolicy> policy,
                                                 const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  PlacementOptions o = read_placement_options(r);
  r.finish();
  return std::make_unique<DelayedPipeline>(std::move(policy), o, cfg.accumulation);
}

DelayedPipeline::DelayedPipeline(std::unique_ptr<const MemoryPolicy> policy,
                                 PlacementOptions placement, int64_t k)
    : Algorithm(pipeline_traits()),
      policy_(std::move(policy)),
      placement_(std::move(placement)),
      k_(k) {}

void DelayedPipeline::setup(Context& ctx) {
  const int64_t s = ctx.comm.rank(), j = ctx.comm.world_size();
  ranges_ = place_pipeline(ctx, placement_);
  const StageRange mine = ranges_[s];
  stage_ =
      std::make_unique<DelayedStage>(ctx.config, ctx.model, mine, s == 0, s == j - 1, k_, *policy_);
  link_ = make_pipe_link(ctx, mine, /*backward_carries_x=*/policy_->rebuilds_inputs());
}

void DelayedPipeline::run_tick(Context& ctx, int64_t t, StepReport& report) {
  const int64_t s = ctx.comm.rank(), j = ctx.comm.world_size();
  link_->wait_older_sends();  // those of tick t-2 and earlier: their receivers are past them
  if (resend_forward_) link_->send_forward(*resend_forward_);  // tick t-1's, after a resume
  if (resend_backward_) link_->send_backward(*resend_backward_);
  resend_forward_.reset();
  resend_backward_.reset();
  sent_forward_.reset();
  sent_backward_.reset();
  const int64_t b = forward_due(t, s);
  if (b >= 0 && b < fed_) {
    PipeMessage in;
    if (s == 0) {
      MicroBatch mb = ctx.batches.next();
      in = {b, mb.inputs, mb.targets, {}};
      report.samples += mb.inputs.size(0);
    } else {
      in = link_->recv_forward(b);
    }
    PipeMessage out = stage_->forward(in, t);
    if (s == j - 1) {
      StepReport head;
      head.loss = stage_->loss();
      head.micro_batches = 1;
      report += head;
      if (s > 0) send_backward(out);
    } else {
      link_->send_forward(out);
      sent_forward_ = std::move(out);
    }
  }
  const int64_t c = backward_due(t, s, j);
  if (s < j - 1 && c >= 0 && c < fed_) {
    PipeMessage out = stage_->backward(link_->recv_backward(c), t);
    if (s > 0) send_backward(out);
  }
  stage_->end_tick(ctx.schedule.lr(t / k_));  // tick t belongs to step t / k, as in the simulator
}

void DelayedPipeline::send_backward(PipeMessage m) {
  link_->send_backward(m);
  sent_backward_ = std::move(m);
}

StepReport DelayedPipeline::step(Context& ctx) {
  StepReport report;
  fed_ += k_;
  for (int64_t end = tick_ + k_; tick_ < end; ++tick_) run_tick(ctx, tick_, report);
  return report;
}

void DelayedPipeline::finish(Context& ctx) {
  if (finished_) return;
  finished_ = true;
  StepReport ignored;
  if (fed_ > 0)
    for (const int64_t last = backward_tick(fed_ - 1, 0, ctx.comm.world_size()); tick_ <= last;
         ++tick_)
      run_tick(ctx, tick_, ignored);
  link_->wait_sends();
  sent_forward_.reset();  // the drain's last messages have all been received
  sent_backward_.reset();
}

StagedModel DelayedPipeline::model_for_eval(Context& ctx) {
  share_stages(ctx.model, ranges_, ctx.eval_channel());
  return ctx.model;
}

void DelayedPipeline::save(Archive& archive) const {
  stage_->save(archive);
  archive.put("pipeline.fed", fed_);
  archive.put("pipeline.tick", tick_);
  if (sent_forward_) save_message(archive, "pipeline.sent_forward.", *sent_forward_);
  if (sent_backward_) save_message(archive, "pipeline.sent_backward.", *sent_backward_);
}

void DelayedPipeline::load(const Archive& archive) {
  stage_->load(archive);
  fed_ = archive.integer("pipeline.fed");
  tick_ = archive.integer("pipeline.tick");
  if (archive.has("pipeline.sent_forward.id"))
    resend_forward_ = load_message(archive, "pipeline.sent_forward.");
  if (archive.has("pipeline.sent_backward.id"))
    resend_backward_ = load_message(archive, "pipeline.sent_backward.");
}

AlgorithmReport DelayedPipeline::report() const {
  const StageCounters& c = stage_->counters();
  AlgorithmReport r;
  r.memory = model_state_memory(stage_->flat(), stage_->optimizer());
  r.memory.push_back({"input_buffers", c.peak_input_bytes});
  r.memory.push_back({"weight_stashes", c.peak_stash_bytes});
  r.counts = {{"reversible", stage_->reversible() ? 1 : 0},
              {"peak_buffered_inputs", c.peak_buffered_inputs},
              {"peak_stashed_params", c.peak_stashed_params},
              {"min_delay_ticks", c.min_delay_ticks},
              {"max_delay_ticks", c.max_delay_ticks},
              {"updates", c.updates}};
  return r;
}

}  // namespace desync
