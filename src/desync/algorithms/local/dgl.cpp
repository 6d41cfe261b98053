#include "desync/algorithms/local/dgl.h"

#include <fmt/format.h>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"

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
    : LocalBlocks("dgl", "aux", {options.blocks, options.stages_per_block, options.queue},
                  micro_batches),
      opts_(std::move(options)) {}

torch::nn::Sequential Dgl::make_head(Context& ctx, int64_t k, const std::vector<int64_t>& shape,
                                     at::Generator& gen) {
  if (k + 1 == num_blocks()) return nullptr;
  return make_aux_head(opts_.aux, shape, ctx.batches.dataset().num_classes, gen);
}

torch::Tensor Dgl::block_loss(Context& ctx, int64_t k, const torch::Tensor& h,
                              const torch::Tensor& labels) {
  return loss_of(k + 1 < num_blocks() ? head(k)->forward(h) : h, labels);
}

std::vector<StagedModel> Dgl::head_models(Context& ctx) {
  torch::NoGradGuard no_grad;
  Communicator& comm = ctx.eval_channel();
  const int64_t K = num_blocks();
  for (int64_t owner = 0; owner < static_cast<int64_t>(rank_blocks().size()); ++owner)
    for (int64_t k = rank_blocks()[owner].begin; k < rank_blocks()[owner].end; ++k) {
      if (k + 1 == K) continue;  // the last block: the model's head
      for (auto& p : head(k)->parameters()) comm.broadcast(p.detach(), owner);
      for (auto& b : head(k)->buffers()) comm.broadcast(b.detach(), owner);
    }
  std::vector<StagedModel> out;
  for (int64_t k = 0; k + 1 < K; ++k)
    out.push_back(
        model_with_head(ctx.model, block_stages()[k].end, fmt::format("aux{}", k + 1), head(k)));
  return out;
}

}  // namespace desync
