#include "desync/algorithms/pipeline/delayed_stage.h"

#include <fmt/format.h>

#include <algorithm>

#include "desync/algorithms/common.h"
#include "desync/core/activation_memory.h"
#include "desync/core/error.h"
#include "desync/core/trace.h"

namespace desync {

void StageMemory::push_input(int64_t id, const torch::Tensor& x) {
  inputs_[id] = x;
  input_bytes_ += x.numel() * x.element_size();
}

torch::Tensor StageMemory::pop_input(int64_t id) {
  auto it = inputs_.find(id);
  if (it == inputs_.end() || it != inputs_.begin())
    throw Error(fmt::format("pipeline: the input buffer does not start with micro-batch {}", id));
  torch::Tensor x = it->second;
  inputs_.erase(it);
  input_bytes_ -= x.numel() * x.element_size();
  return x;
}

void StageMemory::push_params(int64_t id, const torch::Tensor& params) {
  stash_[id] = params.clone();
  stash_bytes_ += params.numel() * params.element_size();
}

torch::Tensor StageMemory::pop_params(int64_t id) {
  torch::Tensor p = stash_.at(id);
  stash_.erase(id);
  stash_bytes_ -= p.numel() * p.element_size();
  return p;
}

namespace {

// An id -> tensor map under `name`: "<name>.ids" and one "<name>.<id>" per entry.
void save_map(Archive& archive, const std::string& name,
              const std::map<int64_t, torch::Tensor>& map) {
  std::vector<int64_t> ids;
  for (const auto& [id, t] : map) {
    ids.push_back(id);
    archive.put(fmt::format("{}.{}", name, id), t);
  }
  archive.put(name + ".ids", torch::tensor(ids, torch::kInt64));
}

std::vector<int64_t> ids_of(const Archive& archive, const std::string& name) {
  torch::Tensor t = archive.tensor(name + ".ids");
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

}  // namespace

void StageMemory::save(Archive& archive, const std::string& prefix) const {
  save_map(archive, prefix + "inputs", inputs_);
  save_map(archive, prefix + "stash", stash_);
}

void StageMemory::load(const Archive& archive, const std::string& prefix) {
  for (int64_t id : ids_of(archive, prefix + "inputs"))
    push_input(id, archive.tensor(fmt::format("{}inputs.{}", prefix, id)));
  for (int64_t id : ids_of(archive, prefix + "stash"))
    push_params(id, archive.tensor(fmt::format("{}stash.{}", prefix, id)));
}

DelayedStage::DelayedStage(const Config& config, StagedModel model, StageRange range, bool first,
                           bool last, int64_t k, const MemoryPolicy& policy)
    : config_(config),
      model_(std::move(model)),
      range_(range),
      first_(first),
      last_(last),
      k_(k),
      memory_(policy.make_memory(model_, range_)) {
  flat_ = std::make_unique<FlatParameters>(model_->parameters_of(range_.begin, range_.end));
  optimizer_ =
      make_optimizer(config_, param_slots(named_params_of(model_, *flat_), config_.optimizer));
}

PipeMessage DelayedStage::forward(PipeMessage in, int64_t tick) {
  forward_tick_[in.id] = tick;
  if (last_) {  // the loss head: forward and backward at once
    TraceSpan span("forward_backward", "compute");
    return backprop(in.id, in.x, {}, /*loss_head=*/true, in.labels);
  }
  TraceSpan span("forward", "compute");
  memory_->on_forward(in.id, in.x, flat_->params_flat());
  counters_.peak_buffered_inputs =
      std::max(counters_.peak_buffered_inputs, memory_->buffered_inputs());
  counters_.peak_stashed_params =
      std::max(counters_.peak_stashed_params, memory_->stashed_params());
  counters_.peak_input_bytes = std::max(counters_.peak_input_bytes, memory_->input_bytes());
  counters_.peak_stash_bytes = std::max(counters_.peak_stash_bytes, memory_->stash_bytes());
  BufferSnapshot keep(model_, range_);  // this pass does not count for BatchNorm statistics
  torch::NoGradGuard no_grad;
  return {in.id, model_->forward_range(in.x, range_.begin, range_.end), in.labels, {}};
}

PipeMessage DelayedStage::backward(PipeMessage in, int64_t tick) {
  TraceSpan span("backward", "compute");
  torch::Tensor x = memory_->input_for_backward(in.id, in.x);
  torch::Tensor stashed = memory_->params_for_backward(in.id);
  torch::Tensor current;
  if (stashed.defined()) {  // recompute with the weights the forward used
    torch::NoGradGuard no_grad;
    current = flat_->params_flat().clone();
    flat_->params_flat().copy_(stashed);
  }
  PipeMessage out = backprop(in.id, x, in.grad, /*loss_head=*/false, {});
  if (stashed.defined()) {
    torch::NoGradGuard no_grad;
    flat_->params_flat().copy_(current);
  }
  note_backward(in.id, tick);
  return out;
}

PipeMessage DelayedStage::backprop(int64_t id, torch::Tensor x, const torch::Tensor& dy,
                                   bool loss_head, const torch::Tensor& labels) {
  if (!first_) x = x.detach().requires_grad_();
  torch::Tensor y, loss;
  {
    ActivationScope activations;  // what the forward keeps for the backward just below
    y = model_->forward_range(x, range_.begin, range_.end);
    if (loss_head) loss = loss_of(y, labels);
  }
  if (loss_head) {
    loss_ = loss.item<double>();
    loss.backward();
    note_backward(id, forward_tick_.at(id));
  } else {
    y.backward(dy);
  }
  return {id, x.detach(), {}, first_ ? torch::Tensor() : x.grad()};
}

void DelayedStage::note_backward(int64_t id, int64_t tick) {
  int64_t delay = tick - forward_tick_.at(id);
  forward_tick_.erase(id);
  counters_.min_delay_ticks =
      counters_.min_delay_ticks < 0 ? delay : std::min(counters_.min_delay_ticks, delay);
  counters_.max_delay_ticks = std::max(counters_.max_delay_ticks, delay);
  ++backwards_;
}

void DelayedStage::end_tick(double lr) {
  if (backwards_ < k_) return;
  TraceSpan span("optimizer", "optimizer");
  torch::Tensor& grads = flat_->grads_flat();
  grads.div_(static_cast<double>(backwards_));
  if (config_.optimizer.grad_clip > 0) clip_grad_norm({grads}, config_.optimizer.grad_clip);
  optimizer_->step(lr);
  grads.zero_();
  backwards_ = 0;
  ++counters_.updates;
}

void DelayedStage::save(Archive& archive) const {
  save_optimizer(*optimizer_, archive);
  memory_->save(archive, "stage.memory.");
  std::vector<int64_t> ids, ticks;
  for (const auto& [id, tick] : forward_tick_) {
    ids.push_back(id);
    ticks.push_back(tick);
  }
  archive.put("stage.forward_ids", torch::tensor(ids, torch::kInt64));
  archive.put("stage.forward_ticks", torch::tensor(ticks, torch::kInt64));
  archive.put("stage.backwards", backwards_);
  archive.put("stage.grads", flat_->grads_flat());
  const StageCounters& c = counters_;
  archive.put("stage.counters", torch::tensor({c.peak_buffered_inputs, c.peak_stashed_params,
                                               c.peak_input_bytes, c.peak_stash_bytes,
                                               c.min_delay_ticks, c.max_delay_ticks, c.updates},
                                              torch::kInt64));
}

void DelayedStage::load(const Archive& archive) {
  load_optimizer(*optimizer_, archive);
  memory_->load(archive, "stage.memory.");
  const torch::Tensor ids = archive.tensor("stage.forward_ids");
  const torch::Tensor ticks = archive.tensor("stage.forward_ticks");
  if (ids.numel() != ticks.numel())
    throw CheckpointError("pipeline: stage.forward_ids and stage.forward_ticks differ in length");
  forward_tick_.clear();
  for (int64_t i = 0; i < ids.numel(); ++i)
    forward_tick_[ids[i].item<int64_t>()] = ticks[i].item<int64_t>();
  backwards_ = archive.integer("stage.backwards");
  archive.copy_into("stage.grads", flat_->grads_flat());
  const torch::Tensor c = archive.tensor("stage.counters");
  if (c.numel() != 7) throw CheckpointError("pipeline: stage.counters holds 7 counts");
  const auto at = [&](int64_t i) { return c[i].item<int64_t>(); };
  counters_ = {at(0), at(1), at(2), at(3), at(4), at(5), at(6)};
}

TickSimulator::TickSimulator(const Config& config, const std::vector<StagedModel>& models,
                             const std::vector<StageRange>& ranges, const MemoryPolicy& policy,
                             int64_t k)
    : k_(k) {
  const auto j = static_cast<int64_t>(ranges.size());
  for (int64_t s = 0; s < j; ++s)
    stages_.push_back(std::make_unique<DelayedStage>(config, models[s], ranges[s], s == 0,
                                                     s == j - 1, k, policy));
}

std::vector<double> TickSimulator::run(const std::vector<MicroBatch>& batches,
                                       const std::function<double(int64_t)>& lr) {
  const auto j = static_cast<int64_t>(stages_.size());
  const auto total = static_cast<int64_t>(batches.size());
  std::vector<double> losses(total, 0.0);
  std::map<int64_t, PipeMessage> fwd_mail, bwd_mail;  // by receiving stage
  const int64_t last_tick = backward_tick(total - 1, 0, j);
  for (int64_t t = 0; t <= last_tick; ++t) {
    std::map<int64_t, PipeMessage> next_fwd, next_bwd;
    fwd_.emplace_back();
    bwd_.emplace_back();
    for (int64_t s = 0; s < j; ++s) {
      const int64_t b = forward_due(t, s);
      if (b < 0 || b >= total) continue;
      PipeMessage in =
          s == 0 ? PipeMessage{b, batches[b].inputs, batches[b].targets, {}} : fwd_mail.at(s);
      if (in.id != b) throw Error("tick simulator: a forward message is out of order");
      PipeMessage out = stages_[s]->forward(in, t);
      fwd_.back().emplace_back(s, b);
      if (s == j - 1) {
        losses[b] = stages_[s]->loss();
        bwd_.back().emplace_back(s, b);
        if (s > 0) next_bwd[s - 1] = out;
      } else {
        next_fwd[s + 1] = out;
      }
    }
    for (int64_t s = 0; s < j - 1; ++s) {
      const int64_t b = backward_due(t, s, j);
      if (b < 0 || b >= total) continue;
      PipeMessage out = stages_[s]->backward(bwd_mail.at(s), t);
      bwd_.back().emplace_back(s, b);
      if (s > 0) next_bwd[s - 1] = out;
    }
    if (before_updates_) before_updates_(t);
    for (auto& stage : stages_) stage->end_tick(lr(t / k_));
    fwd_mail = std::move(next_fwd);
    bwd_mail = std::move(next_bwd);
  }
  return losses;
}

}  // namespace desync
