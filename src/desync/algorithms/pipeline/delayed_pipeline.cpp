#include "desync/algorithms/pipeline/delayed_pipeline.h"

#include <fmt/format.h>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"

namespace desync {

std::unique_ptr<Algorithm> make_delayed_pipeline(const std::string& mode,
                                                 const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  PipelineOptions o = read_pipeline_options(r, /*with_schedule=*/false);
  r.finish();
  return std::make_unique<DelayedPipeline>(mode, o);
}

void DelayedPipeline::setup(Context& ctx) {
  k_ = ctx.config.algorithm.accumulation;
  const int64_t s = ctx.comm.rank(), j = ctx.comm.world_size();
  ranges_ = place_pipeline(ctx, opts_);
  const StageRange mine = ranges_[s];
  stage_ = std::make_unique<DelayedStage>(ctx.config, ctx.model, mine, s == 0, s == j - 1, k_,
                                          make_stage_memory(mode_, ctx.model, mine));
  MicroBatch probe =
      take_range(ctx.batches.dataset(), 0, ctx.batches.batch_size(), ctx.config.data.normalize);
  auto shapes = boundary_shapes(ctx.model, probe.inputs);
  link_ = std::make_unique<PipeLink>(ctx.comm, shapes[mine.begin], shapes[mine.end],
                                     probe.targets.sizes().vec(),
                                     /*backward_carries_x=*/mode_ == "petra");
}

void DelayedPipeline::run_tick(Context& ctx, int64_t t, StepReport& report) {
  const int64_t s = ctx.comm.rank(), j = ctx.comm.world_size();
  link_->wait_older_sends();  // those of tick t-2 and earlier: their receivers are past them
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
      report += StepReport{stage_->loss(), 0, 1};
      if (s > 0) link_->send_backward(out);
    } else {
      link_->send_forward(out);
    }
  }
  const int64_t c = backward_due(t, s, j);
  if (s < j - 1 && c >= 0 && c < fed_) {
    PipeMessage out = stage_->backward(link_->recv_backward(c), t);
    if (s > 0) link_->send_backward(out);
  }
  stage_->end_tick(ctx.schedule.lr(ctx.step));
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
}

StagedModel DelayedPipeline::model_for_eval(Context& ctx) {
  share_stages(ctx.model, ranges_, ctx.eval_channel());
  return ctx.model;
}

void DelayedPipeline::save(Archive& archive) const { save_optimizer(stage_->optimizer(), archive); }

void DelayedPipeline::load(const Archive& archive) {
  throw CheckpointError(fmt::format(
      "--resume is not supported for {}: the micro-batches in flight between pipeline stages "
      "are not checkpointed; start a new run (the checkpoint's weights are complete)",
      mode_));
}

MemoryReport DelayedPipeline::memory() const {
  MemoryReport r = model_state_memory(stage_->flat(), stage_->optimizer());
  r.push_back({"input_buffers", stage_->counters().peak_input_bytes});
  r.push_back({"weight_stashes", stage_->counters().peak_stash_bytes});
  return r;
}

std::vector<std::pair<std::string, int64_t>> DelayedPipeline::stats() const {
  const StageCounters& c = stage_->counters();
  return {{"reversible", stage_->reversible() ? 1 : 0},
          {"peak_buffered_inputs", c.peak_buffered_inputs},
          {"peak_stashed_params", c.peak_stashed_params},
          {"min_delay_ticks", c.min_delay_ticks},
          {"max_delay_ticks", c.max_delay_ticks},
          {"updates", c.updates}};
}

}  // namespace desync
