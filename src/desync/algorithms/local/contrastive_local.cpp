#include "desync/algorithms/local/contrastive_local.h"

#include <fmt/format.h>

#include <algorithm>

#include "desync/algorithms/local/contrastive.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"

namespace desync {

std::unique_ptr<Algorithm> make_contrastive_local(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  ContrastiveLocalOptions o;
  o.blocks = r.get("blocks", o.blocks, int64_t{0});
  o.stages_per_block = r.get("stages_per_block", o.stages_per_block, int64_t{1});
  o.projection.kind = r.get_choice("projection", o.projection.kind, {"mlp", "linear"});
  o.projection.width = r.get("projection_width", o.projection.width, int64_t{1});
  o.projection.dim = r.get("projection_dim", o.projection.dim, int64_t{1});
  o.temperature = r.get("temperature", o.temperature, 1e-6);
  o.subsample_ratio = r.get("subsample_ratio", o.subsample_ratio, 1e-6, 1.0);
  o.view_noise = r.get("view_noise", o.view_noise, 0.0);
  o.queue = r.get("queue", o.queue, int64_t{0});
  o.probe_examples = r.get("probe_examples", o.probe_examples, int64_t{2});
  o.probe_steps = r.get("probe_steps", o.probe_steps, int64_t{0});
  o.probe_lr = r.get("probe_lr", o.probe_lr, 0.0);
  o.probe_every_eval = r.get("probe_every_eval", o.probe_every_eval);
  r.finish();
  return std::make_unique<ContrastiveLocal>(o, cfg.accumulation);
}

ContrastiveLocal::ContrastiveLocal(ContrastiveLocalOptions options, int64_t micro_batches)
    : LocalBlocks("contrastive_local", "proj",
                  {options.blocks, options.stages_per_block, options.queue}, micro_batches),
      opts_(std::move(options)) {}

int64_t ContrastiveLocal::encoder_stages(const StagedModel& model) const {
  if (model->num_stages() < 2)
    throw ConfigError(
        "contrastive_local: the model needs an encoder stage or more before its head");
  return model->num_stages() - 1;
}

torch::nn::Sequential ContrastiveLocal::make_head(Context& ctx, int64_t k,
                                                  const std::vector<int64_t>& shape,
                                                  at::Generator& gen) {
  return make_projection_head(opts_.projection, shape, gen);
}

torch::Tensor ContrastiveLocal::prepare_input(Context& ctx, const MicroBatch& mb, int64_t id) {
  return contrastive_views(mb.inputs, static_cast<uint64_t>(ctx.config.run.seed), id,
                           opts_.view_noise);
}

torch::Tensor ContrastiveLocal::block_loss(Context& ctx, int64_t k, const torch::Tensor& h,
                                           const torch::Tensor& labels) {
  const int64_t b = h.size(0) / 2;
  torch::Tensor kept = h;
  if (opts_.subsample_ratio < 1.0) {  // the subsampling hook (placeholder rule, ours)
    const torch::Tensor keep =
        least_similar(pool_features(h.detach().narrow(0, 0, b)), opts_.subsample_ratio);
    if (keep.size(0) < b) kept = h.index_select(0, torch::cat({keep, keep + b}));
  }
  return nt_xent(head(k)->forward(kept), opts_.temperature);
}

std::vector<std::pair<std::string, double>> ContrastiveLocal::probe(Context& ctx, bool last) {
  const int64_t K = num_blocks();
  const bool accuracy = last || opts_.probe_every_eval;
  std::vector<std::string> names;
  for (int64_t k = 0; k < K; ++k) names.push_back(fmt::format("erank_{}", k + 1));
  if (accuracy)
    for (int64_t k = 0; k < K; ++k) names.push_back(fmt::format("probe_accuracy_{}", k + 1));
  torch::Tensor values = torch::zeros({static_cast<int64_t>(names.size())}, torch::kFloat64);
  if (ctx.comm.rank() == 0) {
    torch::NoGradGuard no_grad;
    const Dataset& data = ctx.batches.dataset();
    const int64_t n = std::min(opts_.probe_examples, data.size() / 2);
    const MicroBatch fit = take_range(data, 0, n, ctx.config.data.normalize);
    const MicroBatch held = take_range(data, n, 2 * n, ctx.config.data.normalize);
    const bool was_training = ctx.model->is_training();
    ctx.model->eval();  // BatchNorm's running statistics, left as they are
    torch::Tensor x = fit.inputs, y = held.inputs;
    double* v = values.data_ptr<double>();
    for (int64_t k = 0; k < K; ++k) {
      const StageRange s = block_stages()[k];
      x = ctx.model->forward_range(x, s.begin, s.end);
      const torch::Tensor features = pool_features(x);
      v[k] = effective_rank(features);
      if (accuracy) {
        y = ctx.model->forward_range(y, s.begin, s.end);
        v[K + k] = linear_probe_accuracy(features, fit.targets, pool_features(y), held.targets,
                                         data.num_classes, opts_.probe_steps, opts_.probe_lr);
      }
    }
    if (was_training) ctx.model->train();
  }
  ctx.eval_channel().broadcast(values, 0);
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 0; i < names.size(); ++i)
    out.emplace_back(names[i], values[static_cast<int64_t>(i)].item<double>());
  return out;
}

}  // namespace desync
