#include "desync/algorithms/local/local_blocks.h"

#include <fmt/format.h>

#include "desync/algorithms/common.h"
#include "desync/algorithms/local/aux_head.h"
#include "desync/core/activation_memory.h"
#include "desync/core/error.h"
#include "desync/core/trace.h"

namespace desync {

LocalBlocks::LocalBlocks(std::string name, std::string head_prefix, LocalBlocksOptions options,
                         int64_t micro_batches)
    : Algorithm(pipeline_traits()),
      name_(std::move(name)),
      head_prefix_(std::move(head_prefix)),
      opts_(std::move(options)),
      micro_batches_(micro_batches) {}

std::string LocalBlocks::head_name(int64_t k) const {
  return fmt::format("{}{}", head_prefix_, k + 1);
}

void LocalBlocks::setup(Context& ctx) {
  const int64_t rank = ctx.comm.rank(), world = ctx.comm.world_size();
  stages_ = ctx.model->num_stages();
  encoder_end_ = encoder_stages(ctx.model);
  const int64_t K = opts_.blocks > 0 ? opts_.blocks : world;
  if (K < world)
    throw ConfigError(fmt::format(
        "{}: algorithm.blocks = {} is fewer than the {} workers; every worker holds a block or "
        "more (set blocks >= {}, or 0 for one per worker)",
        name_, K, world, world));
  if (K > encoder_end_)
    throw ConfigError(fmt::format(
        "{}: algorithm.blocks = {} is more than the model's {} {}stages (model {}); a block is "
        "one stage or more",
        name_, K, encoder_end_, encoder_end_ < stages_ ? "encoder " : "", ctx.config.model.name));
  if (ctx.model->has_tied_stages() && K > 1)
    throw ConfigError(fmt::format(
        "{}: model.tie_embeddings ties the first and last stages, which would sit in different "
        "blocks with different losses: set model.tie_embeddings = false",
        name_));
  blocks_ =
      place_stages(encoder_end_, K, opts_.stages_per_block, std::vector<double>(encoder_end_, 1.0));
  placement_ = place_stages(K, world, {}, std::vector<double>(K, 1.0));
  for (const StageRange& p : placement_)
    rank_stages_.push_back({blocks_[p.begin].begin, blocks_[p.end - 1].end});
  rank_stages_.back().end = stages_;  // the tail sits on the last rank
  first_ = rank == 0;
  last_ = rank == world - 1;

  // The heads, alike on every rank: block k's drawn from a generator of its own.
  MicroBatch probe =
      take_range(ctx.batches.dataset(), 0, ctx.batches.batch_size(), ctx.config.data.normalize);
  torch::Tensor travelling = probe.inputs;
  if (views() > 1) travelling = torch::cat(std::vector<torch::Tensor>(views(), probe.inputs));
  const std::vector<std::vector<int64_t>> shapes = boundary_shapes(ctx.model, travelling);
  for (int64_t k = 0; k < K; ++k) {
    at::Generator gen = at::detail::createCPUGenerator(
        mix64(static_cast<uint64_t>(ctx.config.run.seed) * 1000003u + static_cast<uint64_t>(k)));
    const std::vector<int64_t>& out = shapes[blocks_[k].end];
    heads_.push_back(make_head(ctx, k, std::vector<int64_t>(out.begin() + 1, out.end()), gen));
    if (heads_.back()) heads_.back()->to(ctx.model->dtype());
  }

  auto make_block = [&](int64_t k, StageRange s, torch::nn::Sequential head) {
    std::vector<torch::Tensor> params = ctx.model->parameters_of(s.begin, s.end);
    if (head)
      for (const torch::Tensor& p : head->parameters()) params.push_back(p);
    Block b{k, std::make_unique<FlatParameters>(params), nullptr};
    std::vector<std::pair<std::string, torch::Tensor>> named = named_params_of(ctx.model, *b.flat);
    if (head)
      for (const auto& item : head->named_parameters())
        named.emplace_back(fmt::format("{}.{}", head_name(k), item.key()), item.value());
    b.optimizer = ctx.make_optimizer(param_slots(named, ctx.config.optimizer));
    return b;
  };
  for (int64_t k = placement_[rank].begin; k < placement_[rank].end; ++k)
    mine_.push_back(make_block(k, blocks_[k], heads_[k]));
  if (last_ && encoder_end_ < stages_)
    tail_ = std::make_unique<Block>(make_block(K, {encoder_end_, stages_}, nullptr));
  const StageRange here = rank_stages_[rank];
  link_ = std::make_unique<PipeLink>(
      ctx.comm, shapes[here.begin], shapes[std::min(here.end, encoder_end_)],
      probe.targets.sizes().vec(), /*backward_carries_x=*/false, ctx.model->dtype());
}

StepReport LocalBlocks::step(Context& ctx) {
  const int64_t K = static_cast<int64_t>(blocks_.size());
  StepReport report;
  double loss_sum = 0.0;
  for (int64_t b = 0; b < micro_batches_; ++b) {
    const int64_t id = ctx.step * micro_batches_ + b;
    torch::Tensor x, labels;
    if (first_) {
      MicroBatch mb = ctx.batches.next();
      x = prepare_input(ctx, mb, id);
      labels = mb.targets;
      report.samples += mb.inputs.size(0);
    } else {
      TraceSpan span("recv", "wait");
      PipeMessage m = link_->recv_forward(id);
      x = m.x;
      labels = m.labels;
    }
    TraceSpan span("forward_backward", "compute");
    for (Block& block : mine_) {
      const StageRange s = blocks_[block.k];
      torch::Tensor loss;
      torch::Tensor h;
      {
        ActivationScope activations;
        h = ctx.model->forward_range(x, s.begin, s.end);
        loss = block_loss(ctx, block.k, h, labels);
      }
      (loss / static_cast<double>(micro_batches_)).backward();
      if (block.k == K - 1) loss_sum += loss.item<double>();
      x = h.detach();
    }
    if (tail_) {  // the model's head, on the last block's detached output
      const torch::Tensor y =
          views() > 1 ? torch::cat(std::vector<torch::Tensor>(views(), labels)) : labels;
      torch::Tensor head_loss;
      {
        ActivationScope activations;
        head_loss = loss_of(ctx.model->forward_range(x, encoder_end_, stages_), y);
      }
      (head_loss / static_cast<double>(micro_batches_)).backward();
    }
    if (!last_) link_->send_forward({id, x, labels, {}});
  }
  if (last_) {  // the last block's loss; the other blocks' are local figures
    report.micro_batches = micro_batches_;
    report.loss = loss_sum / static_cast<double>(micro_batches_);
  }
  {
    TraceSpan span("queue", "wait");
    link_->wait_until_in_flight(opts_.queue * micro_batches_);
  }
  for (Block& block : mine_) {
    apply_update(ctx, *block.flat, *block.optimizer);
    block.flat->grads_flat().zero_();
  }
  if (tail_) {
    apply_update(ctx, *tail_->flat, *tail_->optimizer);
    tail_->flat->grads_flat().zero_();
  }
  return report;
}

void LocalBlocks::finish(Context& ctx) { link_->wait_sends(); }

StagedModel LocalBlocks::model_for_eval(Context& ctx) {
  share_stages(ctx.model, rank_stages_, ctx.eval_channel());
  return ctx.model;
}

void LocalBlocks::save(Archive& archive) const {
  for (const Block& b : mine_) save_optimizer(*b.optimizer, archive, fmt::format("block{}.", b.k));
  if (tail_) save_optimizer(*tail_->optimizer, archive, "tail.");
  // The heads are not part of the model the Trainer saves.
  for (const Block& b : mine_)
    if (heads_[b.k]) save_head(archive, head_name(b.k), *heads_[b.k]);
}

void LocalBlocks::load(const Archive& archive) {
  torch::NoGradGuard no_grad;
  if (tail_) load_optimizer(*tail_->optimizer, archive, "tail.");
  for (Block& b : mine_) {
    load_optimizer(*b.optimizer, archive, fmt::format("block{}.", b.k));
    if (heads_[b.k]) load_head(archive, head_name(b.k), *heads_[b.k]);
  }
}

AlgorithmReport LocalBlocks::report() const {
  AlgorithmReport r;
  auto add = [&](const Block& b) {  // summed over the rank's blocks, in the first block's order
    MemoryReport m = model_state_memory(*b.flat, *b.optimizer);
    if (r.memory.empty())
      r.memory = m;
    else
      for (size_t i = 0; i < m.size(); ++i) r.memory[i].second += m[i].second;
  };
  for (const Block& b : mine_) add(b);
  if (tail_) add(*tail_);
  int64_t aux = 0;  // parameters of the heads this rank trains
  for (const Block& b : mine_)
    if (heads_[b.k])
      for (const torch::Tensor& p : heads_[b.k]->parameters()) aux += p.numel();
  r.counts = {{"first_block", mine_.front().k},
              {"aux_parameters", aux},
              {"blocks_here", static_cast<int64_t>(mine_.size())}};
  return r;
}

}  // namespace desync
