#include "desync/algorithms/dataparallel/cdp_mp.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <optional>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/activation_memory.h"
#include "desync/core/error.h"
#include "desync/core/trace.h"

namespace desync {

std::vector<CyclicOp> stage_step_ops(int64_t n, int64_t s, int64_t l, int64_t w) {
  const int64_t begin = 2 * s * n * w + n * l, end = begin + 2 * s * n;
  std::vector<CyclicOp> ops;
  // Window w holds the forwards of cycle w and backwards of cycles w-1 and w only.
  for (int64_t k = std::max<int64_t>(0, w - 1); k <= w; ++k)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j : {2 * s * k + l, 2 * s * k + 2 * s - 1 - l}) {
        const CyclicOp op = cyclic_op(n, s, r, j);
        if (op.tick >= begin && op.tick < end) ops.push_back(op);
      }
  std::sort(ops.begin(), ops.end(), [](const CyclicOp& a, const CyclicOp& b) {
    return a.tick != b.tick ? a.tick < b.tick : a.worker < b.worker;
  });
  return ops;
}

bool forward_follows_update(int64_t n, int64_t s, int64_t l, int64_t r) {
  int64_t backwards = 0;  // of cycle 0, before the forward
  for (int64_t w = 0; w <= 2; ++w)
    for (const CyclicOp& op : stage_step_ops(n, s, l, w)) {
      if (op.backward && op.cycle == 0) ++backwards;
      if (!op.backward && op.cycle == 1 && op.worker == r) return backwards == n;
    }
  throw Error("cdp_mp: the stage's schedule has no forward of cycle 1");  // unreachable
}

namespace {

// The step in which stage l runs its operation at `tick` (see stage_step_ops).
int64_t stage_step_of(int64_t n, int64_t s, int64_t l, int64_t tick) {
  return (tick - n * l) / (2 * s * n);
}

// A backward message: the gradient of micro-batch `id`'s input.
PipeMessage gradient_message(int64_t id, torch::Tensor grad) {
  PipeMessage m;
  m.id = id;
  m.grad = std::move(grad);
  return m;
}

// The [run] workers of the document: what `desync train --workers S` records for the workers.
int64_t run_workers(const AlgorithmConfig& cfg) {
  if (!cfg.doc) return 1;
  std::optional<int64_t> v = cfg.doc->at_path("run.workers").value<int64_t>();
  return v ? std::max<int64_t>(1, *v) : 1;
}

AlgorithmTraits mp_traits(int64_t streams) {
  AlgorithmTraits traits = pipeline_traits();  // rank 0 reads the stream
  traits.accumulations_per_step = streams;
  return traits;
}

// A copy of stages `range` of `model`, with empty stages elsewhere (so that stage indices
// agree); a tied model is copied whole, so that its tie holds within the copy.
StagedModel copy_of_stages(StagedModel model, StageRange range) {
  if (model->has_tied_stages()) return StagedModel(model->clone_model());
  StagedModel copy;
  for (int64_t i = 0; i < model->num_stages(); ++i) {
    torch::nn::Sequential stage;
    if (i >= range.begin && i < range.end)
      stage = torch::nn::Sequential(
          std::dynamic_pointer_cast<torch::nn::SequentialImpl>(model->stage(i)->clone()));
    copy->add_stage(model->stage_name(i), stage);
  }
  copy->set_dtype(model->dtype());
  copy->train(model->is_training());
  return copy;
}

}  // namespace

std::unique_ptr<Algorithm> make_cdp_mp(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  const int64_t streams = r.get("streams", run_workers(cfg), 1);
  std::vector<int64_t> cuts = r.get("stage_cuts", std::vector<int64_t>{}, 1);
  r.finish();
  // algorithm.accumulation is checked in setup(): a flat [algorithm] accumulation meant for
  // another method must not make the config invalid while that method is selected.
  return std::make_unique<CdpMp>(streams, std::move(cuts), cfg.accumulation);
}

CdpMp::CdpMp(int64_t streams, std::vector<int64_t> stage_cuts, int64_t accumulation)
    : Algorithm(mp_traits(streams)),
      streams_(streams),
      stage_cuts_(std::move(stage_cuts)),
      accumulation_(accumulation) {}

void CdpMp::setup(Context& ctx) {
  if (accumulation_ != 1)
    throw ConfigError(
        "cdp_mp: algorithm.accumulation must be 1 (each stream runs one micro-batch per cycle)");
  if (ctx.config.optimizer.grad_clip > 0)
    throw ConfigError(
        "cdp_mp: optimizer.grad_clip is not supported (the stages are updated at different "
        "times); set it to 0");
  rank_ = ctx.comm.rank();
  world_ = ctx.comm.world_size();
  const int64_t n = streams_, s = world_;
  if (ctx.batches.batches_per_epoch() < n)
    throw ConfigError(
        fmt::format("cdp_mp: an epoch holds {} micro-batches, fewer than the {} streams of a cycle",
                    ctx.batches.batches_per_epoch(), n));
  CyclicOptions o;
  o.n_stages = s;
  o.stage_cuts = stage_cuts_;
  ranges_ = cyclic_stages(ctx.model, probe_batch(ctx).inputs, o);
  if (static_cast<int64_t>(ranges_.size()) != s)
    throw ConfigError(fmt::format(
        "cdp_mp runs one cyclic stage per worker: {} gives {} cyclic stages for {} workers",
        stage_cuts_.empty() ? fmt::format("a model of {} stages", ctx.model->num_stages())
                            : std::string("algorithm.stage_cuts"),
        ranges_.size(), s));
  mine_ = ranges_[rank_];
  first_ = rank_ == 0;
  last_ = rank_ == s - 1;

  for (int64_t r = 0; r < n; ++r) {
    const bool fresh = fresh_by_timing(r, rank_, n, s);
    // A fresh forward must come after the update it reads; the order is the schedule's.
    if (fresh && !forward_follows_update(n, s, rank_, r))
      throw Error(fmt::format(
          "cdp_mp: with {} streams on {} stages, stream {}'s forward of stage {} comes before "
          "the update that the timing predicate says it sees",
          n, s, r, rank_));
    fresh_.push_back(fresh);
    stashes_ = stashes_ || !fresh;
  }

  // Buffer 0: the stage's parameters in ctx.model, flat, with the gradient G.
  model_ = ctx.model;
  flat_ = std::make_unique<FlatParameters>(model_->parameters_of(mine_.begin, mine_.end));
  std::vector<ParamSlot> slots = param_slots(named_params_of(model_, *flat_), ctx.config.optimizer);
  for (const ParamSlot& slot : slots) {
    params_[0].push_back(slot.param);
    for (size_t i = 0; i < flat_->params().size(); ++i)
      if (flat_->params()[i].is_same(slot.param)) flat_index_.push_back(i);
  }
  if (stashes_) {
    // Buffer 1: a copy of the stage whose parameters are views of `stash_`, whose gradients
    // are G's views, and whose buffers are buffer 0's.
    torch::NoGradGuard no_grad;
    stash_model_ = copy_of_stages(model_, mine_);
    stash_ = flat_->params_flat().clone();
    std::vector<torch::Tensor> mine = stash_model_->parameters_of(mine_.begin, mine_.end);
    for (size_t i = 0; i < mine.size(); ++i) {
      const torch::Tensor& p0 = flat_->params()[i];
      const int64_t at = flat_->offset(i);
      mine[i].set_data(stash_.narrow(0, at, p0.numel()).view(p0.sizes()));
      mine[i].mutable_grad() = flat_->grads_flat().narrow(0, at, p0.numel()).view(p0.sizes());
    }
    for (int64_t i = mine_.begin; i < mine_.end; ++i) {
      std::vector<torch::Tensor> b0 = model_->stage(i)->buffers(),
                                 b1 = stash_model_->stage(i)->buffers();
      for (size_t j = 0; j < b0.size(); ++j) b1[j].set_data(b0[j]);
    }
    for (size_t i : flat_index_) params_[1].push_back(mine[i]);
  }
  optimizer_ = ctx.make_optimizer(std::move(slots));
  link_ = make_pipe_link(ctx, mine_, /*backward_carries_x=*/false);
}

StepReport CdpMp::step(Context& ctx) {
  link_->wait_older_sends();  // those of two steps ago: their receivers are past them
  // After a resume: the messages of the step before the checkpoint that rank l-1 takes now.
  for (const PipeMessage& m : resend_) link_->send_backward(m);
  resend_.clear();
  unreceived_.clear();
  StepReport report;
  loss_sum_ = 0.0;
  for (const CyclicOp& op : stage_step_ops(streams_, world_, rank_, steps_))
    run_op(ctx, op, report);
  ++steps_;
  if (report.micro_batches > 0) report.loss = loss_sum_ / static_cast<double>(report.micro_batches);
  return report;
}

void CdpMp::run_op(Context& ctx, const CyclicOp& op, StepReport& report) {
  if (op.backward)
    backward(ctx, op);
  else
    forward(ctx, op, report);
}

void CdpMp::forward(Context& ctx, const CyclicOp& op, StepReport& report) {
  const int64_t k = op.cycle, r = op.worker, id = k * streams_ + r;
  const int64_t version = std::max<int64_t>(0, fresh_[r] ? k : k - 1);
  const bool held = version == latest_ || (stashes_ && version == latest_ - 1);
  if (!held)
    throw Error(fmt::format("cdp_mp: stage {} holds theta_{}, not theta_{} for micro-batch {}",
                            rank_, latest_, version, id));
  InFlight e;
  e.buffer = buffer_of(version);
  torch::Tensor x, labels;
  if (first_) {
    // cdp's global batches of N micro-batches leave out the end of an epoch that does not fill
    // one: skip it too, so that stream r reads what cdp worker r reads.
    if (r == 0) {
      const StreamPosition pos = ctx.batches.position();
      if (pos.batch + streams_ > ctx.batches.batches_per_epoch())
        ctx.batches.seek({pos.epoch + 1, 0});
    }
    MicroBatch mb = ctx.batches.next();
    x = mb.inputs;
    labels = mb.targets;
    report.samples += mb.inputs.size(0);
  } else {
    PipeMessage m = link_->recv_forward(id);
    x = m.x.requires_grad_();
    labels = m.labels;
  }
  e.input = x;
  if (last_) e.labels = labels;
  e.rng = at::detail::getDefaultCPUGenerator().get_state();
  run_forward(e);
  if (last_) {
    loss_sum_ += e.output.item<double>();
    report.micro_batches += 1;
  } else {
    link_->send_forward({id, e.output.detach(), labels, {}});
  }
  peak_activation_bytes_ = std::max(peak_activation_bytes_, activation_bytes_);
  in_flight_.emplace(id, std::move(e));
  peak_in_flight_ = std::max(peak_in_flight_, static_cast<int64_t>(in_flight_.size()));
}

void CdpMp::run_forward(InFlight& e) {
  TraceSpan span("forward", "compute");
  ActivationScope activations;  // what the stage's forward keeps for the backward
  torch::Tensor y = replica(e.buffer)->forward_range(e.input, mine_.begin, mine_.end);
  e.output = last_ ? loss_of(y, e.labels) : y;
  e.bytes = (first_ ? 0 : e.input.numel() * e.input.element_size()) +
            (last_ ? 0 : y.numel() * y.element_size());
  activation_bytes_ += e.bytes;
  ++in_flight_on_[e.buffer];
}

void CdpMp::backward(Context& ctx, const CyclicOp& op) {
  const int64_t k = op.cycle, id = k * streams_ + op.worker;
  if (k != latest_)
    throw Error(fmt::format("cdp_mp: stage {} got a backward of cycle {} while accumulating {}",
                            rank_, k, latest_));
  auto it = in_flight_.find(id);
  if (it == in_flight_.end())
    throw Error(fmt::format("cdp_mp: stage {} has no forward of micro-batch {}", rank_, id));
  InFlight e = std::move(it->second);
  in_flight_.erase(it);
  torch::Tensor dy;
  if (!last_) dy = link_->recv_backward(id).grad;
  {
    TraceSpan span("backward", "compute");
    if (last_)
      e.output.backward();
    else
      e.output.backward(dy);
  }
  if (!first_) {
    const PipeMessage m = gradient_message(id, e.input.grad());
    link_->send_backward(m);
    if (stage_step_of(streams_, world_, rank_ - 1, op.tick + streams_) > steps_)
      unreceived_.push_back(m);  // rank l-1 takes it in the next step
  }
  activation_bytes_ -= e.bytes;
  --in_flight_on_[e.buffer];
  if (++backwards_ == streams_) update(ctx, k);
}

void CdpMp::update(Context& ctx, int64_t cycle) {
  TraceSpan span("optimizer", "optimizer");
  torch::NoGradGuard no_grad;
  const int64_t from = buffer_of(cycle), to = buffer_of(cycle + 1);
  // theta_{cycle+1} replaces theta_{cycle-1}, which no graph may hold any more.
  if (in_flight_on_[to] > 0)
    throw Error(fmt::format("cdp_mp: stage {} would overwrite weights that {} graphs still hold",
                            rank_, in_flight_on_[to]));
  if (to != from)
    for (size_t i = 0; i < params_[to].size(); ++i) params_[to][i].copy_(params_[from][i]);
  std::vector<ParamSlot>& slots = optimizer_->slots();
  for (size_t i = 0; i < slots.size(); ++i) slots[i].param = params_[to][i];
  flat_->grads_flat().div_(static_cast<double>(streams_));
  optimizer_->step(ctx.schedule.lr(cycle));
  flat_->grads_flat().zero_();
  latest_ = cycle + 1;
  backwards_ = 0;
  ++updates_;
}

StagedModel CdpMp::model_for_eval(Context& ctx) {
  if (finished_) return ctx.model;
  torch::NoGradGuard no_grad;
  if (!eval_model_) eval_model_ = StagedModel(ctx.model->clone_model());
  std::vector<torch::Tensor> dst = eval_model_->parameters_of(mine_.begin, mine_.end);
  const std::vector<torch::Tensor>& src = params_[buffer_of(latest_)];
  for (size_t i = 0; i < src.size(); ++i) dst[flat_index_[i]].copy_(src[i]);
  for (int64_t i = mine_.begin; i < mine_.end; ++i) {
    std::vector<torch::Tensor> from = model_->stage(i)->buffers(),
                               to = eval_model_->stage(i)->buffers();
    for (size_t j = 0; j < from.size(); ++j) to[j].copy_(from[j]);
  }
  share_stages(eval_model_, ranges_, ctx.eval_channel());
  return eval_model_;
}

void CdpMp::finish(Context& ctx) {
  if (finished_) return;
  finished_ = true;
  if (steps_ > 0) {  // the backwards still owed by the last cycle
    StepReport ignored;
    for (const CyclicOp& op : stage_step_ops(streams_, world_, rank_, steps_))
      if (op.cycle < steps_) run_op(ctx, op, ignored);
  }
  link_->wait_sends();
  if (!in_flight_.empty() || latest_ != steps_)
    throw Error(fmt::format("cdp_mp: stage {} ended with {} micro-batches in flight at theta_{}",
                            rank_, in_flight_.size(), latest_));
  torch::NoGradGuard no_grad;
  if (buffer_of(latest_) != 0)
    for (size_t i = 0; i < params_[0].size(); ++i) params_[0][i].copy_(params_[1][i]);
  for (size_t i = 0; i < params_[0].size(); ++i) optimizer_->slots()[i].param = params_[0][i];
  share_stages(ctx.model, ranges_, ctx.comm);
}

void CdpMp::save(Archive& archive) const {
  save_optimizer(*optimizer_, archive);
  archive.put("cdp_mp.finished", static_cast<int64_t>(finished_));
  if (finished_) return;  // the model is all there is
  archive.put("cdp_mp.steps", steps_);
  archive.put("cdp_mp.latest", latest_);
  archive.put("cdp_mp.backwards", backwards_);
  archive.put("cdp_mp.updates", updates_);
  archive.put("cdp_mp.peak_in_flight", peak_in_flight_);
  archive.put("cdp_mp.peak_activation_bytes", peak_activation_bytes_);
  archive.put("cdp_mp.grads", flat_->grads_flat());  // the backwards of cycle latest_ so far
  if (stashes_) archive.put("cdp_mp.stash", stash_);
  // The micro-batches between their forward and their backward, by what runs the forward again.
  std::vector<int64_t> ids;
  for (const auto& [id, e] : in_flight_) {
    const std::string prefix = fmt::format("cdp_mp.in_flight{}.", ids.size());
    archive.put(prefix + "buffer", e.buffer);
    archive.put(prefix + "input", e.input);
    if (e.labels.defined()) archive.put(prefix + "labels", e.labels);
    archive.put(prefix + "rng", e.rng);
    ids.push_back(id);
  }
  archive.put("cdp_mp.in_flight", torch::tensor(ids, torch::kInt64));
  // What this rank sent backward in the last step that rank l-1 takes only in the next.
  std::vector<int64_t> sent;
  for (const PipeMessage& m : unreceived_) {
    archive.put(fmt::format("cdp_mp.unreceived{}.grad", sent.size()), m.grad);
    sent.push_back(m.id);
  }
  archive.put("cdp_mp.unreceived", torch::tensor(sent, torch::kInt64));
}

void CdpMp::load(const Archive& archive) {
  load_optimizer(*optimizer_, archive);
  finished_ = archive.integer("cdp_mp.finished") != 0;
  if (finished_) return;
  torch::NoGradGuard no_grad;
  steps_ = archive.integer("cdp_mp.steps");
  latest_ = archive.integer("cdp_mp.latest");
  backwards_ = archive.integer("cdp_mp.backwards");
  updates_ = archive.integer("cdp_mp.updates");
  peak_in_flight_ = archive.integer("cdp_mp.peak_in_flight");
  archive.copy_into("cdp_mp.grads", flat_->grads_flat());
  if (stashes_) archive.copy_into("cdp_mp.stash", stash_);
  std::vector<ParamSlot>& slots = optimizer_->slots();
  for (size_t i = 0; i < slots.size(); ++i) slots[i].param = params_[buffer_of(latest_)][i];
  // The forwards again, in their order, with their RNG draws; the buffers (BatchNorm
  // statistics) and the RNG as they were.
  auto generator = at::detail::getDefaultCPUGenerator();
  const torch::Tensor now = generator.get_state();
  {
    RerunBuffers keep(model_, mine_);
    torch::AutoGradMode grad(true);
    const torch::Tensor ids = archive.tensor("cdp_mp.in_flight");
    for (int64_t i = 0; i < ids.numel(); ++i) {
      const std::string prefix = fmt::format("cdp_mp.in_flight{}.", i);
      InFlight e;
      e.buffer = archive.integer(prefix + "buffer");
      e.input = archive.tensor(prefix + "input");
      if (!first_) e.input.requires_grad_();
      if (archive.has(prefix + "labels")) e.labels = archive.tensor(prefix + "labels");
      e.rng = archive.tensor(prefix + "rng");
      {
        std::lock_guard<std::mutex> lock(generator.mutex());
        generator.set_state(e.rng);
      }
      run_forward(e);
      in_flight_.emplace(ids[i].item<int64_t>(), std::move(e));
    }
  }
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(now);
  }
  peak_activation_bytes_ =
      std::max(archive.integer("cdp_mp.peak_activation_bytes"), activation_bytes_);
  const torch::Tensor sent = archive.tensor("cdp_mp.unreceived");
  for (int64_t i = 0; i < sent.numel(); ++i)
    resend_.push_back(gradient_message(sent[i].item<int64_t>(),
                                       archive.tensor(fmt::format("cdp_mp.unreceived{}.grad", i))));
}

AlgorithmReport CdpMp::report() const {
  AlgorithmReport r;
  r.memory = model_state_memory(*flat_, *optimizer_);
  r.memory.push_back(
      {"weight_stash", stash_.defined() ? stash_.numel() * stash_.element_size() : 0});
  r.memory.push_back({"activations", peak_activation_bytes_});
  int64_t stale = 0;
  for (bool f : fresh_) stale += f ? 0 : 1;
  r.counts = {{"stage_begin", mine_.begin}, {"stage_end", mine_.end},
              {"streams", streams_},        {"stale_streams", stale},
              {"updates", updates_},        {"peak_in_flight_micro_batches", peak_in_flight_}};
  return r;
}

}  // namespace desync
