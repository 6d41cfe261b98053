#include "desync/algorithms/dataparallel/sharded.h"

#include <fmt/format.h>

#include "desync/algorithms/common.h"
#include "desync/core/trace.h"

namespace desync {

ParameterShard::ParameterShard(Context& ctx, FlatParameters& flat, bool master_is_view)
    : world_(ctx.comm.world_size()), master_is_view_(master_is_view) {
  size_ = flat.padded_numel() / world_;
  begin_ = ctx.comm.rank() * size_;
  torch::Tensor live = flat.params_flat().narrow(0, begin_, size_);
  master_ = master_is_view ? live : live.detach().clone();
  grad_ = torch::zeros_like(master_);
  send_ = torch::empty_like(master_);

  // One slot per piece of a parameter that falls inside [begin, begin + size).
  std::vector<ParamSlot> whole = param_slots(ctx.model->named_params(), ctx.config.optimizer);
  TORCH_CHECK(whole.size() == flat.params().size(), "shard: parameters and flat buffer disagree");
  std::vector<ParamSlot> mine;
  for (size_t k = 0; k < whole.size(); ++k) {
    int64_t lo = std::max<int64_t>(begin_, flat.offset(k));
    int64_t hi = std::min<int64_t>(begin_ + size_, flat.offset(k) + whole[k].param.numel());
    if (lo >= hi) continue;
    ParamSlot s;
    s.name = fmt::format("{}[{}:{}]", whole[k].name, lo - flat.offset(k), hi - flat.offset(k));
    s.param = master_.narrow(0, lo - begin_, hi - lo);
    s.grad = grad_.narrow(0, lo - begin_, hi - lo);
    s.weight_decay = whole[k].weight_decay;
    mine.push_back(std::move(s));
  }
  optimizer_ = ctx.make_optimizer(std::move(mine));
}

void ParameterShard::reduce_scatter(Communicator& comm, const torch::Tensor& full_grad,
                                    double divisor) {
  comm.reduce_scatter(grad_, full_grad);
  grad_.div_(divisor);
}

void ParameterShard::clip(Communicator& comm, double max_norm) {
  clip_global_norm(comm, grad_, max_norm);
}

void ParameterShard::step(double lr) {
  TraceSpan span("optimizer", "optimizer");
  optimizer_->step(lr);
}

void ParameterShard::all_gather(Communicator& comm, torch::Tensor full_params) {
  send_.copy_(master_);
  comm.all_gather(full_params.chunk(world_), send_);
}

void ParameterShard::backup() {
  if (!backup_master_.defined()) {
    backup_master_ = torch::empty_like(master_);
    for (auto& [name, t] : optimizer_->state()) backup_state_.push_back(torch::empty_like(t));
  }
  backup_master_.copy_(master_);
  auto state = optimizer_->state();
  for (size_t i = 0; i < state.size(); ++i) backup_state_[i].copy_(state[i].second);
}

void ParameterShard::restore() {
  master_.copy_(backup_master_);
  auto state = optimizer_->state();
  for (size_t i = 0; i < state.size(); ++i) state[i].second.copy_(backup_state_[i]);
}

void ParameterShard::save(Archive& archive, const std::string& prefix) {
  archive.put(prefix + "master", master_);
  for (auto& [name, t] : optimizer_->state()) archive.put(prefix + "optimizer." + name, t);
}

void ParameterShard::load(const Archive& archive, const std::string& prefix) {
  archive.copy_into(prefix + "master", master_);
  for (auto& [name, t] : optimizer_->state()) archive.copy_into(prefix + "optimizer." + name, t);
}

MemoryReport ParameterShard::memory() const {
  int64_t elem = master_.element_size();
  int64_t state = 0;
  for (auto& [name, t] : optimizer_->state()) state += t.numel() * t.element_size();
  int64_t backup = 0;
  if (backup_master_.defined()) {
    backup = size_ * elem;
    for (const auto& t : backup_state_) backup += t.numel() * t.element_size();
  }
  return {{"master_shard", master_is_view_ ? 0 : size_ * elem},
          {"grad_shard", size_ * elem},
          {"optimizer_state", state},
          {"state_backup", backup},
          {"comm_buffers", size_ * elem}};
}

}  // namespace desync
