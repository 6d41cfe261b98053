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
  o.codec = read_codec_options(r);
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
  if (opts_.codec.kind != "none") {
    opts_.codec.seed = static_cast<uint64_t>(ctx.config.run.seed);
    // One probe micro-batch (read directly, not consumed) gives the boundaries' shapes and the
    // activation each sender's codec may initialise from.
    MicroBatch probe =
        take_range(ctx.batches.dataset(), 0, ctx.batches.batch_size(), ctx.config.data.normalize);
    codecs_ = make_boundary_codecs(opts_.codec, ctx.model, ranges_,
                                   boundary_shapes(ctx.model, probe.inputs), s, micro_batches_,
                                   ctx.config.optimizer);
    if (!first_) in_codec_ = codecs_[s - 1].get();
    if (!last_) out_codec_ = codecs_[s].get();
    if (in_codec_) in_codec_->setup(ctx.comm, {}, {});
    if (out_codec_) {
      torch::NoGradGuard no_grad;
      BufferSnapshot keep(ctx.model, {0, mine_.end});
      out_codec_->setup(ctx.comm, ctx.model->forward_range(probe.inputs, 0, mine_.end),
                        probe.inputs);
    }
  }
  link_ = make_pipe_link(ctx, mine_, /*backward_carries_x=*/false, in_codec_, out_codec_);
}

void Pipeline::forward(Context& ctx, int64_t b, StepReport& report) {
  TraceSpan span("forward", "compute");
  const int64_t id = ctx.step * micro_batches_ + b;
  torch::Tensor x, labels, tokens;
  if (first_) {
    MicroBatch mb = ctx.batches.next();
    x = mb.inputs;
    labels = mb.targets;
    tokens = mb.inputs;  // a GPT's input: the token ids the codecs may need
    report.samples += mb.inputs.size(0);
  } else {
    PipeMessage m = link_->recv_forward(id);
    x = m.x.requires_grad_();
    labels = m.labels;
    tokens = m.tokens;
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
    link_->send_forward({id, y.detach(), labels, {}, tokens});
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
  const double lr = ctx.schedule.lr(ctx.step);
  optimizer_->step(lr);
  flat_->grads_flat().zero_();
  if (out_codec_) out_codec_->after_optimizer_step();
  {
    TraceSpan codec_span("codec_sync", "comm");
    if (in_codec_) in_codec_->end_step(ctx.comm, lr);
    if (out_codec_) out_codec_->end_step(ctx.comm, lr);
  }
  return report;
}

StagedModel Pipeline::model_for_eval(Context& ctx) {
  share_stages(ctx.model, ranges_, ctx.eval_channel());
  if (codecs_.empty()) return ctx.model;
  for (auto& codec : codecs_) codec->share(ctx.eval_channel());
  return compressed_model(ctx.model, ranges_, codecs_);
}

void Pipeline::save(Archive& archive) const {
  save_optimizer(*optimizer_, archive);
  for (BoundaryCodec* codec : {in_codec_, out_codec_})
    if (codec) codec->save(archive, "codec" + std::to_string(codec->info().index) + ".");
}

void Pipeline::load(const Archive& archive) {
  load_optimizer(*optimizer_, archive);
  for (BoundaryCodec* codec : {in_codec_, out_codec_})
    if (codec) codec->load(archive, "codec" + std::to_string(codec->info().index) + ".");
}

AlgorithmReport Pipeline::report() const {
  AlgorithmReport r;
  r.memory = model_state_memory(*flat_, *optimizer_);
  r.memory.push_back({"activations", peak_activation_bytes_});
  int64_t sync_bytes = 0;
  for (const auto& codec : codecs_) {  // summed by name over the boundaries
    for (auto& [name, bytes] : codec->memory()) {
      auto same = std::find_if(r.memory.begin(), r.memory.end(),
                               [&](const auto& e) { return e.first == name; });
      if (same == r.memory.end())
        r.memory.emplace_back(name, bytes);
      else
        same->second += bytes;
    }
    sync_bytes += codec->sync_bytes_sent();
  }
  r.counts = {{"stage_begin", mine_.begin},
              {"stage_end", mine_.end},
              {"peak_in_flight_micro_batches", peak_in_flight_},
              {"boundary_forward_bytes", link_->forward_bytes_sent()},
              {"boundary_backward_bytes", link_->backward_bytes_sent()},
              {"boundary_sync_bytes", sync_bytes}};
  return r;
}

}  // namespace desync
