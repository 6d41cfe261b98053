#include "desync/algorithms/local/dgl.h"

#include <fmt/format.h>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/activation_memory.h"
#include "desync/core/error.h"
#include "desync/core/trace.h"

namespace desync {

std::unique_ptr<Algorithm> make_dgl(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  DglOptions o;
  o.blocks = r.get("blocks", o.blocks, int64_t{0});
  o.stages_per_block = r.get("stages_per_block", o.stages_per_block, int64_t{1});
  o.aux.kind = r.get_choice("aux", o.aux.kind, {"mlp", "cnn", "linear"});
  o.aux.hidden = r.get("aux_hidden", o.aux.hidden, int64_t{0});
  o.queue = r.get("queue", o.queue, int64_t{0});
  r.finish();
  return std::make_unique<Dgl>(o, cfg.accumulation);
}

Dgl::Dgl(DglOptions options, int64_t micro_batches)
    : Algorithm(pipeline_traits()), opts_(std::move(options)), micro_batches_(micro_batches) {}

void Dgl::setup(Context& ctx) {
  const int64_t rank = ctx.comm.rank(), world = ctx.comm.world_size();
  const int64_t stages = ctx.model->num_stages();
  const int64_t K = opts_.blocks > 0 ? opts_.blocks : world;
  if (K < world)
    throw ConfigError(fmt::format(
        "dgl: algorithm.blocks = {} is fewer than the {} workers; every worker holds a block or "
        "more (set blocks >= {}, or 0 for one per worker)",
        K, world, world));
  if (K > stages)
    throw ConfigError(fmt::format(
        "dgl: algorithm.blocks = {} is more than the model's {} stages (model {}); a block is "
        "one stage or more",
        K, stages, ctx.config.model.name));
  if (ctx.model->has_tied_stages() && K > 1)
    throw ConfigError(
        "dgl: model.tie_embeddings ties the first and last stages, which would sit in different "
        "blocks with different losses: set model.tie_embeddings = false");
  blocks_ = place_stages(stages, K, opts_.stages_per_block, std::vector<double>(stages, 1.0));
  placement_ = place_stages(K, world, {}, std::vector<double>(K, 1.0));
  for (const StageRange& p : placement_)
    rank_stages_.push_back({blocks_[p.begin].begin, blocks_[p.end - 1].end});
  first_ = rank == 0;
  last_ = rank == world - 1;

  // The heads, alike on every rank: block k's drawn from a generator of its own.
  MicroBatch probe =
      take_range(ctx.batches.dataset(), 0, ctx.batches.batch_size(), ctx.config.data.normalize);
  const std::vector<std::vector<int64_t>> shapes = boundary_shapes(ctx.model, probe.inputs);
  for (int64_t k = 0; k + 1 < K; ++k) {
    at::Generator gen = at::detail::createCPUGenerator(
        mix64(static_cast<uint64_t>(ctx.config.run.seed) * 1000003u + static_cast<uint64_t>(k)));
    const std::vector<int64_t>& out = shapes[blocks_[k].end];
    heads_.push_back(make_aux_head(opts_.aux, std::vector<int64_t>(out.begin() + 1, out.end()),
                                   ctx.batches.dataset().num_classes, gen));
    heads_.back()->to(ctx.model->dtype());
  }

  for (int64_t k = placement_[rank].begin; k < placement_[rank].end; ++k) {
    std::vector<torch::Tensor> params = ctx.model->parameters_of(blocks_[k].begin, blocks_[k].end);
    if (k + 1 < K)
      for (const torch::Tensor& p : heads_[k]->parameters()) params.push_back(p);
    Block b{k, std::make_unique<FlatParameters>(params), nullptr};
    std::vector<std::pair<std::string, torch::Tensor>> named = named_params_of(ctx.model, *b.flat);
    if (k + 1 < K)
      for (const auto& item : heads_[k]->named_parameters())
        named.emplace_back(fmt::format("aux{}.{}", k + 1, item.key()), item.value());
    b.optimizer = ctx.make_optimizer(param_slots(named, ctx.config.optimizer));
    mine_.push_back(std::move(b));
  }
  link_ = make_pipe_link(ctx, rank_stages_[rank], /*backward_carries_x=*/false);
}

StepReport Dgl::step(Context& ctx) {
  const int64_t K = static_cast<int64_t>(blocks_.size());
  StepReport report;
  double loss_sum = 0.0;
  for (int64_t b = 0; b < micro_batches_; ++b) {
    const int64_t id = ctx.step * micro_batches_ + b;
    torch::Tensor x, labels;
    if (first_) {
      MicroBatch mb = ctx.batches.next();
      x = mb.inputs;
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
        loss = loss_of(block.k + 1 < K ? heads_[block.k]->forward(h) : h, labels);
      }
      (loss / static_cast<double>(micro_batches_)).backward();
      if (last_ && &block == &mine_.back()) loss_sum += loss.item<double>();
      x = h.detach();
    }
    if (!last_) link_->send_forward({id, x, labels, {}});
  }
  if (last_) {  // the model's loss, as a pipeline reports it; the heads' are local figures
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
  return report;
}

void Dgl::finish(Context& ctx) { link_->wait_sends(); }

StagedModel Dgl::model_for_eval(Context& ctx) {
  share_stages(ctx.model, rank_stages_, ctx.eval_channel());
  return ctx.model;
}

std::vector<StagedModel> Dgl::head_models(Context& ctx) {
  torch::NoGradGuard no_grad;
  Communicator& comm = ctx.eval_channel();
  std::vector<StagedModel> out;
  for (int64_t owner = 0; owner < static_cast<int64_t>(placement_.size()); ++owner)
    for (int64_t k = placement_[owner].begin; k < placement_[owner].end; ++k) {
      if (k >= static_cast<int64_t>(heads_.size())) continue;  // the last block: the model's head
      for (auto& p : heads_[k]->parameters()) comm.broadcast(p.detach(), owner);
      for (auto& b : heads_[k]->buffers()) comm.broadcast(b.detach(), owner);
    }
  for (size_t k = 0; k < heads_.size(); ++k) {
    StagedModel m;
    for (int64_t i = 0; i < blocks_[k].end; ++i)
      m->add_stage(ctx.model->stage_name(i), ctx.model->stage(i));
    m->add_stage(fmt::format("aux{}", k + 1), heads_[k]);
    if (ctx.model->dtype() != torch::kFloat) m->set_dtype(ctx.model->dtype());
    out.push_back(m);
  }
  return out;
}

void Dgl::save(Archive& archive) const {
  for (const Block& b : mine_) save_optimizer(*b.optimizer, archive, fmt::format("block{}.", b.k));
  // The heads are not part of the model the Trainer saves.
  for (const Block& b : mine_)
    if (b.k < static_cast<int64_t>(heads_.size())) {
      for (const auto& item : heads_[b.k]->named_parameters())
        archive.put(fmt::format("aux{}.{}", b.k + 1, item.key()), item.value().detach());
      for (const auto& item : heads_[b.k]->named_buffers())
        archive.put(fmt::format("aux{}.{}", b.k + 1, item.key()), item.value().detach());
    }
}

void Dgl::load(const Archive& archive) {
  torch::NoGradGuard no_grad;
  for (Block& b : mine_) {
    load_optimizer(*b.optimizer, archive, fmt::format("block{}.", b.k));
    if (b.k < static_cast<int64_t>(heads_.size())) {
      for (const auto& item : heads_[b.k]->named_parameters())
        archive.copy_into(fmt::format("aux{}.{}", b.k + 1, item.key()), item.value().detach());
      for (const auto& item : heads_[b.k]->named_buffers())
        archive.copy_into(fmt::format("aux{}.{}", b.k + 1, item.key()), item.value().detach());
    }
  }
}

AlgorithmReport Dgl::report() const {
  AlgorithmReport r;
  for (const Block& b : mine_) {  // summed over the rank's blocks, in the first block's order
    MemoryReport m = model_state_memory(*b.flat, *b.optimizer);
    if (r.memory.empty())
      r.memory = m;
    else
      for (size_t i = 0; i < m.size(); ++i) r.memory[i].second += m[i].second;
  }
  int64_t aux = 0;  // parameters of the heads this rank trains
  for (const Block& b : mine_)
    if (b.k < static_cast<int64_t>(heads_.size()))
      for (const torch::Tensor& p : heads_[b.k]->parameters()) aux += p.numel();
  r.counts = {{"first_block", mine_.front().k},
              {"aux_parameters", aux},
              {"blocks_here", static_cast<int64_t>(mine_.size())}};
  return r;
}

}  // namespace desync
