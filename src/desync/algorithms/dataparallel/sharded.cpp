#include "desync/algorithms/dataparallel/sharded.h"

#include <fmt/format.h>

#include "desync/algorithms/common.h"
#include "desync/core/error.h"
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
    ranges_.push_back({whole[k].name, flat.offset(k), whole[k].param.numel(), lo, hi});
  }
  for (const ParamSlot& s : whole) numel_ += s.param.numel();
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

void ParameterShard::load_resharded(const std::vector<Archive>& old, const std::string& prefix) {
  torch::NoGradGuard no_grad;
  const int64_t old_size = old.front().tensor(prefix + "master").numel();
  // The master: the parameters of [begin, begin + size), padding left as it is.
  std::vector<torch::Tensor> shards;
  for (const Archive& a : old) shards.push_back(a.tensor(prefix + "master"));
  const torch::Tensor full = torch::cat(shards);
  const int64_t n = std::min(size_, numel_ - begin_);
  if (n > 0) master_.narrow(0, 0, n).copy_(full.narrow(0, begin_, n));

  std::vector<ParamSlot>& slots = optimizer_->slots();
  for (auto& [name, t] : optimizer_->state()) {
    size_t i = 0;
    while (i < slots.size() && name.rfind(slots[i].name + ".", 0) != 0) ++i;
    if (i == slots.size()) {  // not a slot's: replicated on every rank
      old.front().copy_into(prefix + "optimizer." + name, t);
      continue;
    }
    const SlotRange& r = ranges_[i];
    const std::string kind = name.substr(slots[i].name.size() + 1);
    if (t.numel() != r.hi - r.lo)
      throw CheckpointError(fmt::format(
          "cannot re-shard optimizer state '{}': it is not one value per parameter", name));
    torch::Tensor dst = t.view({-1});
    int64_t covered = 0;
    for (size_t q = 0; q < old.size(); ++q) {
      // Old shard q held [q * old_size, (q + 1) * old_size); its piece of this parameter:
      const int64_t shard_lo = static_cast<int64_t>(q) * old_size;
      const int64_t piece_lo = std::max(shard_lo, r.offset);
      const int64_t piece_hi = std::min(shard_lo + old_size, r.offset + r.numel);
      const int64_t lo = std::max(piece_lo, r.lo), hi = std::min(piece_hi, r.hi);
      if (lo >= hi) continue;
      const torch::Tensor src =
          old[q]
              .tensor(fmt::format("{}optimizer.{}[{}:{}].{}", prefix, r.param, piece_lo - r.offset,
                                  piece_hi - r.offset, kind))
              .reshape({-1});
      dst.narrow(0, lo - r.lo, hi - lo).copy_(src.narrow(0, lo - piece_lo, hi - lo));
      covered += hi - lo;
    }
    if (covered != r.hi - r.lo)
      throw CheckpointError(
          fmt::format("cannot re-shard optimizer state '{}': the old shards "
                      "cover {} of its {} values",
                      name, covered, r.hi - r.lo));
  }
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

namespace {

// The new rank that old rank q of old_world is folded onto: contiguous blocks.
int64_t folded_onto(size_t q, size_t old_world, int64_t world) {
  return static_cast<int64_t>(q) * world / static_cast<int64_t>(old_world);
}

}  // namespace

void fold_partial_sums(const std::vector<Archive>& old, const std::string& name, int64_t rank,
                       int64_t world, double scale, torch::Tensor dst) {
  torch::NoGradGuard no_grad;
  dst.zero_();
  torch::Tensor flat = dst.view({-1});
  for (size_t q = 0; q < old.size(); ++q) {
    if (folded_onto(q, old.size(), world) != rank) continue;
    const torch::Tensor src = old[q].tensor(name).reshape({-1});
    const int64_t n = std::min(src.numel(), flat.numel());
    flat.narrow(0, 0, n).add_(src.narrow(0, 0, n));
  }
  flat.mul_(scale);
}

int64_t fold_partial_counts(const std::vector<Archive>& old, const std::string& name, int64_t rank,
                            int64_t world) {
  int64_t sum = 0;
  for (size_t q = 0; q < old.size(); ++q)
    if (folded_onto(q, old.size(), world) == rank) sum += old[q].integer(name);
  return sum;
}

}  // namespace desync
