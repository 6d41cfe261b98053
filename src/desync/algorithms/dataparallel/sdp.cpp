#include "desync/algorithms/dataparallel/sdp.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <unordered_map>

#include "desync/algorithms/common.h"
#include "desync/algorithms/packing.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"
#include "desync/core/trace.h"
#include "desync/models/residual.h"

namespace desync {

std::unique_ptr<Algorithm> make_sdp(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  const std::string granularity = r.get_choice("granularity", "auto", {"auto", "block", "neuron"});
  const bool forward = r.get_choice("masking", "forward", {"forward", "backward"}) == "forward";
  const double coverage = r.get("coverage", 0.5, 1e-3, 1.0);
  const bool balanced = r.get_choice("assignment", "window", {"window", "balanced"}) == "balanced";
  const int64_t repair = r.get("repair_batches", int64_t{16}, int64_t{0});
  const bool scale = r.get_choice("eval_scale", "none", {"none", "holders"}) == "holders";
  r.finish();
  const std::optional<bool> blocks =
      granularity == "auto" ? std::nullopt : std::optional<bool>(granularity == "block");
  return std::make_unique<Sdp>(blocks, forward, coverage, balanced, repair, scale);
}

std::vector<bool> sdp_assignment(int64_t units, int64_t world, int64_t held, int64_t w) {
  std::vector<bool> mine(units, false);
  const int64_t first = w * units / world;
  for (int64_t j = 0; j < std::min(held, units); ++j) mine[(first + j) % units] = true;
  return mine;
}

std::vector<int64_t> sdp_balanced_holders(const std::vector<int64_t>& sizes, int64_t world,
                                          int64_t holders) {
  std::vector<int64_t> order(sizes.size()), load(world, 0), out(sizes.size(), 0);
  for (size_t b = 0; b < sizes.size(); ++b) order[b] = static_cast<int64_t>(b);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return sizes[a] > sizes[b]; });
  for (int64_t b : order) {
    std::vector<int64_t> workers(world);
    for (int64_t w = 0; w < world; ++w) workers[w] = w;
    std::stable_sort(workers.begin(), workers.end(),
                     [&](int64_t a, int64_t c) { return load[a] < load[c]; });
    for (int64_t k = 0; k < std::min(holders, world); ++k) {
      out[b] |= int64_t{1} << workers[k];
      load[workers[k]] += sizes[b];
    }
  }
  return out;
}

namespace {

using ImplKey = const c10::TensorImpl*;
ImplKey key_of(const torch::Tensor& t) { return t.unsafeGetTensorImpl(); }

// The sum of `t` over `members` (ranks of `comm`, ascending, this rank among them), in place: a
// ring reduce-scatter then all-gather of sends and receives, 2 (h-1)/h of t per member.
void ring_all_reduce(Communicator& comm, torch::Tensor t, const std::vector<int64_t>& members,
                     int64_t tag) {
  const int64_t h = static_cast<int64_t>(members.size());
  if (h == 1) return;
  const int64_t i = std::find(members.begin(), members.end(), comm.rank()) - members.begin();
  const int64_t next = members[(i + 1) % h], prev = members[(i + h - 1) % h];
  const int64_t n = t.numel();
  auto chunk = [&](int64_t c) {
    c = ((c % h) + h) % h;
    const int64_t begin = n * c / h, end = n * (c + 1) / h;
    return t.narrow(0, begin, end - begin);
  };
  for (int64_t s = 0; s < h - 1; ++s) {  // reduce-scatter: chunk i+1 ends summed on member i
    torch::Tensor in = torch::empty_like(chunk(i - s - 1));
    auto sent = comm.send_async(chunk(i - s), next, tag);
    comm.recv_async(in, prev, tag)->wait();
    sent->wait();
    chunk(i - s - 1).add_(in);
  }
  for (int64_t s = 0; s < h - 1; ++s) {  // all-gather of the summed chunks
    torch::Tensor in = chunk(i - s);
    auto sent = comm.send_async(chunk(i + 1 - s), next, tag + 1);
    comm.recv_async(in, prev, tag + 1)->wait();
    sent->wait();
  }
}

// The hidden units that granularity = "neuron" masks, a group per layer of units: the channels
// inside every residual block's branch, or for an MLP (a model of Linear layers only) the units
// of every other hidden layer (the 1st, 3rd, ...), each with its rows of W_in and b_in and its
// column of W_out. Every weight belongs to one unit or to none. Empty for any other model.
std::vector<ResidualBlock::HiddenUnits> unit_groups(StagedModel& model) {
  std::vector<ResidualBlock::HiddenUnits> groups;
  const std::vector<ResidualBlock*> blocks = residual_blocks(*model);
  for (ResidualBlock* b : blocks) groups.push_back(b->hidden_units());
  if (!blocks.empty()) return groups;
  std::vector<torch::nn::LinearImpl*> layers;
  size_t linear_params = 0;
  for (const auto& m : model->modules())
    if (auto* linear = m->as<torch::nn::LinearImpl>()) {
      layers.push_back(linear);
      linear_params += linear->parameters().size();
    }
  if (layers.size() < 2 || linear_params != model->parameters().size()) return {};
  for (size_t l = 0; l + 1 < layers.size(); l += 2)  // the last layer is the head
    groups.push_back({.produce = {layers[l]->weight, layers[l]->bias},
                      .consume = {layers[l + 1]->weight},
                      .statistics = {}});
  return groups;
}

// `unit` (one value per unit) shaped to broadcast along dimension `dim` of `t`.
torch::Tensor along(const torch::Tensor& unit, const torch::Tensor& t, int64_t dim) {
  std::vector<int64_t> shape(t.dim(), 1);
  shape[dim] = unit.numel();
  return unit.reshape(shape);
}

int64_t numel_of(const std::vector<torch::Tensor>& masks,
                 const std::vector<torch::Tensor>& params) {
  int64_t n = 0;
  for (size_t i = 0; i < masks.size(); ++i)
    n += masks[i].dim() == 0 ? static_cast<int64_t>(masks[i].item<double>()) * params[i].numel()
                             : static_cast<int64_t>(masks[i].sum().item<double>());
  return n;
}

}  // namespace

std::vector<torch::Tensor> Sdp::masks_of(StagedModel& model, int64_t w, int64_t world) const {
  torch::NoGradGuard no_grad;
  std::unordered_map<ImplKey, size_t> index;
  for (size_t i = 0; i < params_.size(); ++i) index[key_of(params_[i])] = i;
  std::vector<torch::Tensor> masks;
  for (const torch::Tensor& p : params_) masks.push_back(torch::ones({}, p.options()));
  if (blocks_) {
    const std::vector<ResidualBlock*> blocks = residual_blocks(*model);
    const std::vector<int64_t> holders = block_holders(model, world);
    for (size_t b = 0; b < blocks.size(); ++b)
      for (torch::nn::Module* m : blocks[b]->branch_modules())
        for (const torch::Tensor& p : m->parameters())
          masks[index.at(key_of(p))].fill_(static_cast<double>(holders[b] >> w & 1));
    return masks;
  }
  const std::vector<ResidualBlock::HiddenUnits> groups = unit_groups(model);
  const std::vector<torch::Tensor> units = unit_masks(groups, w, world);
  for (size_t g = 0; g < groups.size(); ++g) {
    auto mask = [&](const torch::Tensor& p, int64_t dim) {
      torch::Tensor& m = masks[index.at(key_of(p))];
      m = (m.dim() == 0 ? torch::ones_like(p) : m) * along(units[g], p, dim);
    };
    for (const torch::Tensor& p : groups[g].produce) mask(p, 0);
    for (const torch::Tensor& p : groups[g].consume) mask(p, 1);
  }
  return masks;
}

std::vector<torch::Tensor> Sdp::unit_masks(const std::vector<ResidualBlock::HiddenUnits>& groups,
                                           int64_t w, int64_t world) const {
  std::vector<torch::Tensor> out;
  for (const ResidualBlock::HiddenUnits& group : groups) {
    const int64_t units = group.produce.front().size(0);
    const int64_t held = std::max<int64_t>(1, std::llround(units * units_held_ / 1000.0));
    const std::vector<bool> mine = sdp_assignment(units, world, held, w);
    out.push_back(torch::tensor(std::vector<double>(mine.begin(), mine.end()))
                      .to(group.produce.front().dtype()));
  }
  return out;
}

std::vector<int64_t> Sdp::block_holders(StagedModel& model, int64_t world) const {
  const std::vector<ResidualBlock*> blocks = residual_blocks(*model);
  const auto L = static_cast<int64_t>(blocks.size());
  if (balanced_) return sdp_balanced_holders(block_sizes_, world, units_held_);
  std::vector<int64_t> holders(L, 0);
  for (int64_t w = 0; w < world; ++w) {
    const std::vector<bool> mine = sdp_assignment(L, world, units_held_, w);
    for (int64_t b = 0; b < L; ++b)
      if (mine[b]) holders[b] |= int64_t{1} << w;
  }
  return holders;
}

void Sdp::setup(Context& ctx) {
  if (forward_ && ctx.config.optimizer.grad_clip > 0)
    throw ConfigError(
        "sdp: optimizer.grad_clip with masking = \"forward\" would clip each worker's subnetwork "
        "by its own norm and let the holders of a parameter drift apart; set it to 0");
  accumulation_ = ctx.config.algorithm.accumulation;
  const int64_t rank = ctx.comm.rank(), world = ctx.comm.world_size();
  // "auto": blocks where the model has residual blocks, hidden units otherwise.
  blocks_ = granularity_.value_or(!residual_blocks(*ctx.model).empty());
  if (blocks_ && world > 62)
    throw ConfigError(
        "sdp: granularity = \"block\" runs on at most 62 workers (holder sets are bit masks)");
  std::unique_ptr<FlatParameters> all = make_replicated_flat(ctx);  // the same start everywhere
  params_ = ctx.model->parameters_of(0, ctx.model->num_stages());
  for (const torch::Tensor& p : params_) shapes_.push_back(p.sizes().vec());
  for (ResidualBlock* b : residual_blocks(*ctx.model)) {  // before any storage is released
    int64_t n = 0;
    for (torch::nn::Module* m : b->branch_modules())
      for (const torch::Tensor& p : m->parameters()) n += p.numel();
    block_sizes_.push_back(n);
  }
  int64_t total = 0;
  for (const torch::Tensor& p : params_) total += p.numel();

  // The least share of units whose parameters reach the coverage on average over the workers.
  auto mean_fraction = [&] {
    int64_t held = 0;
    for (int64_t w = 0; w < world; ++w) held += numel_of(masks_of(ctx.model, w, world), params_);
    return static_cast<double>(held) / static_cast<double>(world * total);
  };
  if (blocks_) {
    const int64_t L = static_cast<int64_t>(residual_blocks(*ctx.model).size());
    if (L == 0)
      throw ConfigError(
          "sdp: granularity = \"block\" needs a model with residual blocks (model.name = "
          "\"resnet18\"); for the MLP use granularity = \"neuron\"");
    if (balanced_) {  // round(C N) holders for every block
      units_held_ = std::clamp<int64_t>(std::llround(coverage_ * world), 1, world);
    } else {  // every block held by someone: n_b >= L / N
      for (units_held_ = (L + world - 1) / world; units_held_ < L && mean_fraction() < coverage_;
           ++units_held_) {
      }
    }
  } else {
    if (unit_groups(ctx.model).empty())
      throw ConfigError(
          "sdp: granularity = \"neuron\" masks the hidden units of an MLP (model.name = \"mlp\" "
          "with model.hidden set) or of residual blocks (model.name = \"resnet18\")");
    double best_gap = 2.0;
    int64_t best = 1000;
    for (int64_t permille = 10; permille <= 1000; permille += 10) {
      units_held_ = permille;
      const double gap = std::abs(mean_fraction() - coverage_);
      if (gap < best_gap - 1e-12) best_gap = gap, best = permille;
    }
    units_held_ = best;
  }
  holders_.assign(params_.size(), 0);
  for (int64_t w = 0; w < world; ++w) {
    std::vector<torch::Tensor> m = masks_of(ctx.model, w, world);
    if (w == 0)
      for (const torch::Tensor& t : m) count_.push_back(torch::zeros_like(t));
    if (w == rank) mask_ = m;
    for (size_t i = 0; i < params_.size(); ++i) {
      count_[i] += m[i];
      if (blocks_ && m[i].item<double>() > 0) holders_[i] |= int64_t{1} << w;
    }
  }
  if (!blocks_) {  // per group of units: this worker's, and every unit's holders
    const std::vector<ResidualBlock::HiddenUnits> groups = unit_groups(ctx.model);
    unit_mask_ = unit_masks(groups, rank, world);
    for (int64_t w = 0; w < world; ++w) {
      const std::vector<torch::Tensor> m = unit_masks(groups, w, world);
      if (w == 0) unit_count_.assign(m.size(), torch::Tensor());
      for (size_t g = 0; g < m.size(); ++g)
        unit_count_[g] = unit_count_[g].defined() ? unit_count_[g] + m[g] : m[g];
    }
  }
  held_fraction_ = static_cast<double>(numel_of(mask_, params_)) / static_cast<double>(total);

  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, torch::Tensor>> named = ctx.model->named_params();
  released_.assign(params_.size(), false);
  if (forward_ && blocks_) {
    // Only the held tensors stay: their own flat buffer; a dropped branch's storage goes.
    std::vector<torch::Tensor> held;
    std::vector<std::pair<std::string, torch::Tensor>> held_named;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (mask_[i].item<double>() > 0) {
        held.push_back(params_[i]);
        held_named.push_back(named[i]);
      } else {
        released_[i] = true;
      }
    }
    flat_ = std::make_unique<FlatParameters>(held);
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!released_[i]) continue;
      params_[i].mutable_grad() = torch::Tensor();
      params_[i].set_data(torch::empty({0}, params_[i].options()));
    }
    all.reset();
    const std::vector<ResidualBlock*> blocks = residual_blocks(*ctx.model);
    const std::vector<int64_t> holders = block_holders(ctx.model, world);
    for (size_t b = 0; b < blocks.size(); ++b)
      blocks[b]->set_branch_enabled(holders[b] >> rank & 1);
    named = held_named;
  } else {
    flat_ = std::move(all);
    if (forward_)  // dropped units: zero weights, which their masked gradients keep at zero
      for (size_t i = 0; i < params_.size(); ++i) params_[i].mul_(mask_[i]);
  }
  optimizer_ = ctx.make_optimizer(param_slots(named, ctx.config.optimizer));
}

StepReport Sdp::step(Context& ctx) {
  flat_->grads_flat().zero_();
  StepReport report = accumulate_gradients(ctx, accumulation_);
  average_gradients(ctx);
  apply_update(ctx, *flat_, *optimizer_);
  return report;
}

void Sdp::average_gradients(Context& ctx) {
  torch::NoGradGuard no_grad;
  if (!(forward_ && blocks_)) {
    // One masked all-reduce of the whole gradient, divided by the holders of each element.
    for (size_t i = 0; i < params_.size(); ++i) params_[i].mutable_grad().mul_(mask_[i]);
    ctx.comm.all_reduce(flat_->grads_flat());
    for (size_t i = 0; i < params_.size(); ++i) {
      params_[i].mutable_grad().div_(count_[i].clamp_min(1.0));
      // Forward masking: a dropped unit's weights stay zero, out of this worker's subnetwork.
      if (forward_) params_[i].mutable_grad().mul_(mask_[i]);
    }
    return;
  }
  // One exchange per holder set, among its holders, in the same order on every rank.
  const int64_t world = ctx.comm.world_size();
  std::map<int64_t, std::vector<size_t>> groups;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!released_[i]) groups[holders_[i]].push_back(i);
  for (auto& [set, tensors] : groups) {
    std::vector<int64_t> members;
    for (int64_t w = 0; w < world; ++w)
      if (set >> w & 1) members.push_back(w);
    std::vector<torch::Tensor> grads;
    for (size_t i : tensors) grads.push_back(params_[i].grad());
    torch::Tensor packed = pack(grads);
    if (static_cast<int64_t>(members.size()) == world)
      ctx.comm.all_reduce(packed);
    else
      ring_all_reduce(ctx.comm, packed, members, 2 * set);
    unpack(packed.div_(static_cast<double>(members.size())), grads);
  }
}

StagedModel Sdp::model_for_eval(Context& ctx) {
  if (!forward_) return ctx.model;  // every worker holds and updates the whole model
  // The whole model from its holders: sum of the holders' values over their count.
  torch::NoGradGuard no_grad;
  Communicator& comm = ctx.eval_channel();
  StagedModel model(ctx.model->clone_model());
  std::vector<torch::Tensor> params = model->parameters_of(0, model->num_stages());
  for (size_t i = 0; i < params.size(); ++i) {
    if (released_[i]) params[i].set_data(torch::zeros(shapes_[i], params[i].options()));
    params[i].mul_(mask_[i]);
  }
  torch::Tensor sum = pack(params);
  comm.all_reduce(sum);
  unpack(sum, params);
  for (size_t i = 0; i < params.size(); ++i) params[i].div_(count_[i].clamp_min(1.0));
  // Buffers (BatchNorm statistics): over the workers that ran them, a dropped block's branch
  // or a dropped unit's statistics on their holders only, everything else on every worker.
  const int64_t rank = ctx.comm.rank(), world = ctx.comm.world_size();
  std::unordered_map<ImplKey, std::pair<torch::Tensor, torch::Tensor>> ran;  // mask, count
  if (blocks_) {
    const std::vector<ResidualBlock*> blocks = residual_blocks(*model);
    const std::vector<int64_t> holders = block_holders(model, world);
    for (size_t b = 0; b < blocks.size(); ++b) {
      const torch::Tensor mine = torch::tensor(static_cast<double>(holders[b] >> rank & 1));
      const torch::Tensor count =
          torch::tensor(static_cast<double>(__builtin_popcountll(holders[b])));
      for (torch::nn::Module* m : blocks[b]->branch_modules())
        for (const torch::Tensor& buf : m->buffers()) ran[key_of(buf)] = {mine, count};
      blocks[b]->set_branch_enabled(true);
      if (scale_by_holders_)
        blocks[b]->scale_branch(static_cast<double>(__builtin_popcountll(holders[b])) /
                                static_cast<double>(world));
    }
  } else {
    const std::vector<ResidualBlock::HiddenUnits> groups = unit_groups(model);
    for (size_t g = 0; g < groups.size(); ++g) {
      for (const torch::Tensor& buf : groups[g].statistics)
        ran[key_of(buf)] = {unit_mask_[g], unit_count_[g]};
      if (scale_by_holders_)
        for (const torch::Tensor& p : groups[g].consume)
          p.mul_(along(unit_count_[g] / static_cast<double>(world), p, 1));
    }
  }
  std::vector<torch::Tensor> buffers, counts;
  for (auto& [name, buf] : model->named_bufs()) {
    if (!buf.is_floating_point()) continue;
    auto it = ran.find(key_of(buf));
    if (it != ran.end()) buf.mul_(it->second.first.to(buf.dtype()));
    counts.push_back(it == ran.end() ? torch::tensor(static_cast<double>(world))
                                     : it->second.second);
    buffers.push_back(buf);
  }
  if (buffers.empty()) return model;
  sum = pack(buffers);
  comm.all_reduce(sum);
  unpack(sum, buffers);
  for (size_t k = 0; k < buffers.size(); ++k)
    buffers[k].div_(counts[k].clamp_min(1.0).to(buffers[k].dtype()));
  return model;
}

void Sdp::save(Archive& archive) const { save_optimizer(*optimizer_, archive); }
void Sdp::load(const Archive& archive) { load_optimizer(*optimizer_, archive); }

AlgorithmReport Sdp::report() const {
  MemoryReport memory = model_state_memory(*flat_, *optimizer_);
  int64_t mask_bytes = 0;
  for (size_t i = 0; i < mask_.size(); ++i)
    mask_bytes += (mask_[i].numel() + count_[i].numel()) * mask_[i].element_size();
  memory.push_back({"masks", mask_bytes});
  return {.memory = memory,
          .counts = {{"held_parameters_per_mille", std::llround(held_fraction_ * 1000.0)},
                     {"units_held", units_held_}}};
}

}  // namespace desync
