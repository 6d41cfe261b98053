#include "desync/algorithms/population/member.h"

#include "desync/algorithms/packing.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"

namespace desync {

Population::Options population_options(SectionReader& r, const std::string& default_init) {
  Population::Options o;
  o.distinct_init = r.get_choice("init", default_init, {"distinct", "shared"}) == "distinct";
  o.repair_batches = r.get("repair_batches", o.repair_batches, int64_t{0});
  o.mixup = r.get("mixup", o.mixup, 0.0, 100.0);
  o.label_smoothing = r.get("label_smoothing", o.label_smoothing, 0.0, 1.0);
  if (o.mixup.empty() || o.label_smoothing.empty())
    throw ConfigError("algorithm: mixup and label_smoothing need at least one value each");
  return o;
}

LossRecipe member_recipe(const Population::Options& options, int64_t rank) {
  const auto a = static_cast<int64_t>(options.mixup.size());
  const auto b = static_cast<int64_t>(options.label_smoothing.size());
  return {.mixup = options.mixup[rank % a],
          .label_smoothing = options.label_smoothing[rank / a % b]};
}

Member::Member(Context& ctx, const Population::Options& options)
    : accumulation_(ctx.config.algorithm.accumulation),
      recipe_(member_recipe(options, ctx.comm.rank())),
      // Member r's own mixup draws.
      generator_(at::detail::createCPUGenerator(
          mix64(static_cast<uint64_t>(ctx.config.run.seed) * 1000003u +
                static_cast<uint64_t>(ctx.comm.rank())))) {
  if (recipe_.mixup > 0 && ctx.config.model.name == "gpt")
    throw ConfigError("algorithm: mixup mixes inputs and the gpt's are token ids; set mixup = [0]");
  flat_ = std::make_unique<FlatParameters>(ctx.model->parameters_of(0, ctx.model->num_stages()));
  optimizer_ = ctx.make_optimizer(param_slots(ctx.model->named_params(), ctx.config.optimizer));
  consensus_ = std::make_unique<Consensus>(ctx.model);
}

StepReport Member::local_step(Context& ctx) {
  flat_->grads_flat().zero_();
  StepReport report =
      recipe_.plain()
          ? accumulate_gradients(ctx, accumulation_)
          : accumulate_gradients_with(ctx, accumulation_, accumulation_, [&](const MicroBatch& mb) {
              const MixedBatch mixed = mix(mb, recipe_.mixup, generator_);
              return recipe_loss(ctx.model->forward(mixed.inputs), mixed, recipe_.label_smoothing);
            });
  apply_update(ctx, *flat_, *optimizer_);
  return report;
}

void Member::save(Archive& archive) const {
  save_optimizer(*optimizer_, archive);
  archive.put("member_generator", generator_.get_state());
}

void Member::load(const Archive& archive) {
  load_optimizer(*optimizer_, archive);
  if (archive.has("member_generator")) generator_.set_state(archive.tensor("member_generator"));
}

std::vector<torch::Tensor> Member::float_buffers(const StagedModel& model) {
  std::vector<torch::Tensor> out;
  for (auto& [name, b] : model->named_bufs())
    if (b.is_floating_point()) out.push_back(b);
  return out;
}

void Member::mix_towards_average(Context& ctx, Communicator& comm, double alpha) {
  torch::NoGradGuard no_grad;
  const auto n = static_cast<double>(comm.world_size());
  auto mix = [&](torch::Tensor& w) {
    torch::Tensor mean = w.clone();
    comm.all_reduce(mean);
    mean.div_(n);
    w.mul_(alpha).add_(mean, 1.0 - alpha);
  };
  mix(params());
  // The float buffers together, in one message.
  const std::vector<torch::Tensor> buffers = float_buffers(ctx.model);
  if (buffers.empty()) return;
  torch::Tensor packed = pack(buffers);
  mix(packed);
  unpack(packed, buffers);
}

}  // namespace desync
